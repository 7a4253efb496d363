//! The frame every page shares: head, navigation, who is signed in, and the confirmation dialog.

use maud::{DOCTYPE, Markup, html};

/// Who is looking, for the header.
pub struct Viewer {
    /// Their bindings in words (`role viewer on *`).
    pub holds: String,
    /// Whether a console session (a cookie) authenticates them, so they can sign out.
    pub signed_in: bool,
    /// The session's CSRF token, which every action sends; `None` without a session.
    pub csrf: Option<String>,
}

/// An action button: one call of the API's own endpoint, which the page's script (`console.js`)
/// makes with the session's CSRF token once the dialog has been confirmed, and whose refusal it
/// shows. A deployment's actions and a pipeline's are both these.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Button {
    /// What the button says (the AWS console's words).
    pub label: String,
    /// The API path it posts to.
    pub endpoint: String,
    /// The JSON body it sends; with `comment`, the dialog's comment goes into its `comment`.
    pub body: String,
    /// What the confirmation says will happen.
    pub confirm: String,
    /// Whether it stops, turns down or takes traffic away (drawn as a dangerous action).
    pub danger: bool,
    /// Whether the dialog asks for a comment (an approval's decision).
    pub comment: bool,
}

/// A page's action buttons, as one group; nothing when there is none.
pub fn buttons(buttons: &[Button]) -> Markup {
    html! {
        @if !buttons.is_empty() {
            div.actions role="group" aria-label="Actions" {
                @for b in buttons {
                    button type="button" class=(if b.danger { "danger" } else { "primary" })
                        data-action=(b.endpoint) data-body=(b.body) data-confirm=(b.confirm)
                        data-comment=[b.comment.then_some("yes")] { (b.label) }
                }
            }
        }
    }
}

/// A whole page: `title`, and `main` under the navigation.
pub fn page(title: &str, viewer: Option<&Viewer>, main: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(csrf) = viewer.and_then(|v| v.csrf.as_deref()) {
                    meta name="csrf-token" content=(csrf);
                }
                title { (title) " · cutover" }
                link rel="stylesheet" href="/console/console.css";
                script src="/console/console.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    nav aria-label="cutover" {
                        a.brand href="/" { "cutover" }
                        a href="/" { "Overview" }
                        a href="/pipelines" { "Pipelines" }
                        a href="/history" { "History" }
                        a href="/alarms" { "Alarms" }
                    }
                    @if let Some(viewer) = viewer {
                        div.who {
                            span.holds title="What this credential may do (docs/access.md)" { (viewer.holds) }
                            @if viewer.signed_in {
                                button.link type="button" data-logout { "Sign out" }
                            }
                        }
                    }
                }
                main #main { (main) }
                dialog #confirm aria-labelledby="confirm-title" {
                    form method="dialog" {
                        h2 #confirm-title {}
                        p #confirm-text {}
                        label.comment #confirm-comment-label hidden {
                            "Comment (recorded with the decision)"
                            textarea #confirm-comment rows="3" maxlength="1000" {}
                        }
                        div.buttons {
                            button type="submit" value="cancel" autofocus { "Cancel" }
                            button.primary #confirm-ok type="submit" value="ok" { "Confirm" }
                        }
                    }
                }
            }
        }
    }
}
