//! Requests that carry no credential, on an API that needs none.
//!
//! `cutover up` without a token trusts whoever reaches its loopback address: the operator's own
//! CLI. A web page open in the operator's browser reaches that address too. It cannot read the
//! answers of another origin, but it can send them requests — a form posted to
//! `/v1/deployments/ID/rollback` needs no body — and a page whose own name an attacker resolves
//! to 127.0.0.1 (DNS rebinding) is even same-origin with the API. So such a request is refused
//! when it is addressed to anything but a loopback address, or when the browser says it comes
//! from another origin (`Origin`, `Sec-Fetch-Site`). The CLI and scripts send neither header;
//! the console's own pages are same-origin. With a token, none of this applies: a page cannot
//! send the token, and the console's session cookie has its own CSRF check.

use axum::http::{HeaderMap, header};

/// Why a request without a credential is refused, or `None` when it may be the operator's own.
/// `authority` is where the request was addressed: its `Host` header, or for HTTP/2 its URI's.
pub fn refusal(authority: Option<&str>, headers: &HeaderMap) -> Option<String> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let authority = text(header::HOST.as_str()).or(authority).unwrap_or("");
    if !is_loopback_authority(authority) {
        return Some(format!(
            "this API needs no token because it listens on loopback only, so it answers only \
             requests addressed to a loopback address; this one was addressed to `{authority}` (a \
             web page's name resolved to this machine would be): use 127.0.0.1, or start `cutover \
             up` with --token to reach it by another name"
        ));
    }
    let cross_site = text("sec-fetch-site").is_some_and(|s| !matches!(s, "same-origin" | "none"));
    let origin = text(header::ORIGIN.as_str());
    let foreign = origin.is_some_and(|o| {
        o.split_once("://").is_none_or(|(_, rest)| !rest.eq_ignore_ascii_case(authority))
    });
    (cross_site || foreign).then(|| {
        format!(
            "a request from the web page at {} to this API, which needs no token, is refused: any \
             page open in a browser on this machine could otherwise act as its operator; start \
             `cutover up` with --token (or CUTOVER_TOKEN) and send the token from elsewhere",
            origin.unwrap_or("another site")
        )
    })
}

/// Whether `authority` (`host[:port]`) names this machine's loopback: `localhost` or a loopback
/// address.
fn is_loopback_authority(authority: &str) -> bool {
    let host = match authority.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map_or("", |(host, _)| host),
        None => authority.rsplit_once(':').map_or(authority, |(host, _)| host),
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn the_cli_and_the_console_s_own_pages_are_let_through() {
        assert_eq!(refusal(None, &headers(&[("host", "127.0.0.1:7400")])), None);
        assert_eq!(refusal(Some("localhost:7400"), &HeaderMap::new()), None);
        assert_eq!(refusal(None, &headers(&[("host", "[::1]:7400")])), None);
        let own = headers(&[
            ("host", "127.0.0.1:7400"),
            ("origin", "http://127.0.0.1:7400"),
            ("sec-fetch-site", "same-origin"),
        ]);
        assert_eq!(refusal(None, &own), None);
        // Typed into the address bar.
        let typed = headers(&[("host", "127.0.0.1:7400"), ("sec-fetch-site", "none")]);
        assert_eq!(refusal(None, &typed), None);
    }

    #[test]
    fn another_origin_or_a_name_that_is_not_loopback_is_refused() {
        let posted = headers(&[("host", "127.0.0.1:7400"), ("origin", "http://evil.example")]);
        assert!(refusal(None, &posted).unwrap().contains("http://evil.example"));
        let sandboxed = headers(&[("host", "127.0.0.1:7400"), ("origin", "null")]);
        assert!(refusal(None, &sandboxed).is_some());
        let fetched = headers(&[("host", "127.0.0.1:7400"), ("sec-fetch-site", "same-site")]);
        assert!(refusal(None, &fetched).is_some());
        let other_port = headers(&[("host", "127.0.0.1:7400"), ("origin", "http://127.0.0.1:80")]);
        assert!(refusal(None, &other_port).is_some());
        let rebound = headers(&[("host", "evil.example:7400")]);
        assert!(refusal(None, &rebound).unwrap().contains("`evil.example:7400`"));
        assert!(refusal(None, &headers(&[("host", "127.evil.example")])).is_some());
        assert!(refusal(None, &HeaderMap::new()).is_some());
    }
}
