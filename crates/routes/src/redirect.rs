//! ALB's redirect action: the URL it answers with, built from the request's parts and the
//! action's, whose host, path and query may reuse the request's with `#{protocol}`, `#{host}`,
//! `#{port}`, `#{path}` (without its leading `/`) and `#{query}`.

use crate::Redirect;

/// The placeholders ALB knows.
pub const PLACEHOLDERS: [&str; 5] = ["#{protocol}", "#{host}", "#{port}", "#{path}", "#{query}"];

/// The parts of a request a redirect may reuse.
#[derive(Clone, Copy, Debug)]
pub struct RequestParts<'a> {
    /// `http` or `https`.
    pub protocol: &'a str,
    /// Without a port.
    pub host: &'a str,
    /// The listener's port.
    pub port: u16,
    /// With its leading `/`.
    pub path: &'a str,
    pub query: Option<&'a str>,
}

impl Redirect {
    /// The `Location` of this redirect for a request with `parts`. Parts the action leaves out
    /// are the request's (ALB's defaults: `#{protocol}`, `#{host}`, `#{port}`, `/#{path}`,
    /// `#{query}`); the port is left out when it is the protocol's default.
    pub fn location(&self, parts: &RequestParts<'_>) -> String {
        let protocol =
            self.protocol.as_deref().map_or(parts.protocol.to_string(), str::to_ascii_lowercase);
        let host = expand(self.host.as_deref().unwrap_or("#{host}"), parts);
        let port = self.port.unwrap_or(parts.port);
        let path = expand(self.path.as_deref().unwrap_or("/#{path}"), parts);
        let query = expand(self.query.as_deref().unwrap_or("#{query}"), parts);
        let mut url = format!("{protocol}://{host}");
        let default_port = if protocol == "https" { 443 } else { 80 };
        if port != default_port {
            url.push_str(&format!(":{port}"));
        }
        url.push_str(&path);
        if !query.is_empty() {
            url.push('?');
            url.push_str(&query);
        }
        url
    }
}

/// `template` with every placeholder replaced by the request's part.
fn expand(template: &str, parts: &RequestParts<'_>) -> String {
    if !template.contains("#{") {
        return template.to_string();
    }
    let port = parts.port.to_string();
    let path = parts.path.strip_prefix('/').unwrap_or(parts.path);
    let mut out = template.to_string();
    for (placeholder, value) in [
        ("#{protocol}", parts.protocol),
        ("#{host}", parts.host),
        ("#{port}", &port),
        ("#{path}", path),
        ("#{query}", parts.query.unwrap_or("")),
    ] {
        out = out.replace(placeholder, value);
    }
    out
}

/// A `#{…}` in a redirect that is none of ALB's placeholders; it displays as written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UnknownPlaceholder(pub String);

/// `text` without its placeholders, or the first `#{…}` ALB does not know.
pub fn strip_placeholders(text: &str) -> Result<String, UnknownPlaceholder> {
    let mut out = text.to_string();
    for p in PLACEHOLDERS {
        out = out.replace(p, "");
    }
    match out.find("#{") {
        Some(at) => {
            let end = out[at..].find('}').map_or(out.len(), |e| at + e + 1);
            Err(UnknownPlaceholder(out[at..end].to_string()))
        }
        None => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redirect(host: Option<&str>, path: Option<&str>, query: Option<&str>) -> Redirect {
        Redirect {
            protocol: None,
            host: host.map(Into::into),
            port: None,
            path: path.map(Into::into),
            query: query.map(Into::into),
            status_code: 301,
        }
    }

    #[test]
    fn placeholders_reuse_the_request_s_parts_as_alb_s_do() {
        let parts = RequestParts {
            protocol: "http",
            host: "example.com",
            port: 8080,
            path: "/a/b",
            query: Some("x=1"),
        };
        let cases = [
            (redirect(None, None, None), "http://example.com:8080/a/b?x=1"),
            (redirect(Some("www.#{host}"), None, None), "http://www.example.com:8080/a/b?x=1"),
            (redirect(None, Some("/new/#{path}"), None), "http://example.com:8080/new/a/b?x=1"),
            (
                redirect(None, None, Some("#{query}&from=#{host}")),
                "http://example.com:8080/a/b?x=1&from=example.com",
            ),
            (redirect(None, None, Some("")), "http://example.com:8080/a/b"),
            (
                redirect(Some("#{host}"), Some("/#{protocol}/#{port}"), None),
                "http://example.com:8080/http/8080?x=1",
            ),
        ];
        for (r, expected) in cases {
            assert_eq!(r.location(&parts), expected, "{r:?}");
        }
        let https = Redirect {
            protocol: Some("HTTPS".into()),
            port: Some(443),
            ..redirect(None, None, None)
        };
        assert_eq!(
            https.location(&RequestParts { query: None, ..parts }),
            "https://example.com/a/b"
        );
    }

    #[test]
    fn an_unknown_placeholder_is_named() {
        assert_eq!(strip_placeholders("/x/#{path}").as_deref(), Ok("/x/"));
        assert_eq!(
            strip_placeholders("/#{paths}/y"),
            Err(UnknownPlaceholder("#{paths}".to_string()))
        );
    }
}
