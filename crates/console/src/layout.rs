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
