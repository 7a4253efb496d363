//! The sign-in page: paste a credential (a named token from `cutover tokens create`, or the
//! bootstrap token); the server opens a session and keeps it in an HttpOnly cookie.

use axum::http::HeaderMap;
use maud::{Markup, html};

use control::access::console_session::percent_encode;

use crate::layout;

/// The sign-in page; `provider` is the single sign-on's issuer host, when there is one.
pub fn render(next: &str, refused: Option<&str>, provider: Option<&str>) -> Markup {
    let main = html! {
        div.signin {
            h1 { "Sign in to cutover" }
            p.muted {
                "Paste a credential: a named token (an admin creates one with "
                code { "cutover tokens create NAME --role viewer" } ") or the bootstrap token. "
                "It is sent once; the console keeps a session of its own, which ends when you sign out."
            }
            @if let Some(refused) = refused {
                p.why role="alert" { (refused) }
            }
            @if let Some(provider) = provider {
                p {
                    a.button.primary href={ "/login/sso?next=" (percent_encode(next)) } {
                        "Sign in with " (provider)
                    }
                }
                p.muted { "or paste a credential:" }
            }
            form method="post" action="/login" {
                input type="hidden" name="next" value=(next);
                label for="token" { "Token" }
                input #token type="password" name="token" required autocomplete="current-password"
                    autofocus spellcheck="false" placeholder="cutover_…";
                button.primary type="submit" { "Sign in" }
            }
        }
    };
    layout::page("Sign in", None, main)
}

/// Where to go after signing in: a path of this server only (`/…`, never `//host` or a URL),
/// so the sign-in page cannot be made to send anyone to another site.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path.contains('\\')
                && !path.chars().any(char::is_control) =>
        {
            path.to_string()
        }
        _ => "/".to_string(),
    }
}

/// Whether the browser says the form was posted from another site (login CSRF: signing someone
/// in as someone else). Browsers send `Sec-Fetch-Site`; older ones `Origin`.
pub fn cross_site(headers: &HeaderMap) -> bool {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = header("sec-fetch-site") {
        return !matches!(site, "same-origin" | "none");
    }
    match (header("origin"), header("host")) {
        (Some(origin), Some(host)) => {
            origin.split_once("://").map(|(_, authority)| authority) != Some(host)
        }
        _ => false,
    }
}

/// The page a single sign-on that opened no session ends on: why (the provider's refusal, an
/// ID token that did not verify, a user of no mapped group), and the way back to sign in.
pub fn refused(why: &str) -> Markup {
    let main = html! {
        div.signin {
            h1 { "Not signed in" }
            p.why role="alert" { (why) }
            p { a href="/login" { "Back to sign in" } }
        }
    };
    layout::page("Not signed in", None, main)
}

/// The page a single sign-on that opened a session ends on, which goes on to `next` at once.
/// A page rather than a redirect: the browser came here from the provider's site, and a
/// redirect would keep the navigation cross-site, with which browsers do not send the
/// `SameSite=Strict` session cookie just set; the page's own navigation (its `Refresh` header,
/// or the link) is same-site.
pub fn signed_in(next: &str) -> Markup {
    let main = html! {
        div.signin {
            h1 { "Signed in" }
            p { a href=(next) { "Continue to the console" } }
        }
    };
    layout::page("Signed in", None, main)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_signing_in_only_a_path_of_this_server_is_followed() {
        assert_eq!(safe_next(Some("/deployments/d-1?x=1")), "/deployments/d-1?x=1");
        for elsewhere in ["//evil.test/", "https://evil.test/", "/\\evil.test", "evil", "/a\nb"] {
            assert_eq!(safe_next(Some(elsewhere)), "/", "{elsewhere:?}");
        }
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn a_sign_in_posted_from_another_site_is_told_apart() {
        let headers = |pairs: &[(&'static str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, v.parse().unwrap());
            }
            h
        };
        assert!(!cross_site(&headers(&[("sec-fetch-site", "same-origin")])));
        assert!(cross_site(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(!cross_site(&headers(&[
            ("origin", "http://127.0.0.1:7400"),
            ("host", "127.0.0.1:7400")
        ])));
        assert!(cross_site(&headers(&[
            ("origin", "https://evil.test"),
            ("host", "127.0.0.1:7400")
        ])));
        assert!(!cross_site(&headers(&[])), "curl sends neither");
    }
}
