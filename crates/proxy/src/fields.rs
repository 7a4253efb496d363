//! Header field names as they arrive on the wire, for the raw HTTP/1 paths ([`crate::h1`],
//! [`crate::upstream`]) and, through `HeaderName::as_str`, for hyper's.

/// ALB's limits on a head, applied to requests and to targets' responses alike: the whole head
/// (larger is 431 for a request), and its number of fields.
pub const MAX_HEAD: usize = 64 * 1024;
pub const MAX_HEADERS: usize = 100;
/// ALB's limit on one line of a request head (the request line: 414; a field: 431).
pub const MAX_LINE: usize = 16 * 1024;

/// `name` is `lower` (given in lower case), in any case.
#[inline]
pub fn name_is(name: &str, lower: &str) -> bool {
    name.len() == lower.len() && name.eq_ignore_ascii_case(lower)
}

/// ALB's `drop_invalid_header_fields`: only letters, digits and hyphens.
#[inline]
pub fn is_valid_name(name: &str) -> bool {
    name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// A `Host` value or an absolute form's authority (RFC 9110 §7.2, §4.2.1): `uri-host [ ":"
/// port ]`, where the host is a non-empty reg-name or IPv4 address (unreserved characters
/// and sub-delims) or a bracketed IPv6 address, and the port is a number up to 65535. No user info: RFC
/// 9110 §4.2.4 forbids it in an `http` URI, and a `@` there is how hosts are spoofed.
pub fn is_valid_host(value: &[u8]) -> bool {
    let (host, port) = match value.strip_prefix(b"[") {
        Some(literal) => {
            let Some(end) = memchr::memchr(b']', literal) else { return false };
            // An IPv6 address (RFC 3986's IPvFuture is not used by anyone).
            let inside = std::str::from_utf8(&literal[..end]);
            if !inside.is_ok_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok()) {
                return false;
            }
            (&value[..end + 2], &literal[end + 1..])
        }
        None => {
            let colon = memchr::memchr(b':', value).unwrap_or(value.len());
            (&value[..colon], &value[colon..])
        }
    };
    let port_ok = match port.split_first() {
        None => true,
        Some((b':', digits)) => {
            digits.is_empty()
                || (digits.iter().all(u8::is_ascii_digit)
                    && std::str::from_utf8(digits).is_ok_and(|d| d.parse::<u16>().is_ok()))
        }
        Some(_) => false,
    };
    port_ok && !host.is_empty() && (host[0] == b'[' || is_reg_name(host))
}

/// RFC 3986's reg-name (which includes IPv4 addresses) without percent-encoding, which the
/// `http` crate's authorities (HTTP/2's side) refuse too: unreserved characters and sub-delims.
fn is_reg_name(host: &[u8]) -> bool {
    host.iter().all(|&b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b))
}

/// Hop-by-hop fields (RFC 9110 §7.6.1), and the `Keep-Alive` and `Proxy-Connection` of old
/// clients: they describe one connection and never cross the load balancer.
#[inline]
pub fn is_hop_by_hop(name: &str) -> bool {
    framing_or_hop(name).is_some_and(|k| k != Known::ContentLength)
}

/// The framing and hop-by-hop fields, told apart by length first: every field of every head
/// passes through here, and most match no candidate of their length, so they cost one byte
/// comparison at most.
#[inline]
fn framing_or_hop(name: &str) -> Option<Known> {
    let is = |lower: &str| name.eq_ignore_ascii_case(lower);
    Some(match name.len() {
        2 if is("te") => Known::HopByHop,
        7 if is("upgrade") => Known::Upgrade,
        7 if is("trailer") => Known::HopByHop,
        10 if is("connection") => Known::Connection,
        10 if is("keep-alive") => Known::HopByHop,
        14 if is("content-length") => Known::ContentLength,
        16 if is("proxy-connection") => Known::HopByHop,
        17 if is("transfer-encoding") => Known::TransferEncoding,
        _ => return None,
    })
}

/// The fields the framing and hop-by-hop rules look at, recognised once per head so that
/// later lookups compare a byte, not names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Known {
    ContentLength,
    TransferEncoding,
    Connection,
    Upgrade,
    /// Another hop-by-hop field.
    HopByHop,
    /// A name ALB drops (see [`is_valid_name`]).
    Invalid,
    Other,
}

pub fn classify(name: &str) -> Known {
    match framing_or_hop(name) {
        Some(known) => known,
        None if !is_valid_name(name) => Known::Invalid,
        None => Known::Other,
    }
}

/// The field names a `Connection` value lists (besides `close`, `keep-alive` and `upgrade`,
/// which say something about the connection itself); `Host` is never one.
pub fn connection_listed(value: &[u8]) -> impl Iterator<Item = &str> {
    value.split(|&b| b == b',').filter_map(|token| {
        let token = std::str::from_utf8(token.trim_ascii()).ok()?;
        let special = ["close", "keep-alive", "upgrade", "host"];
        (!token.is_empty() && !special.iter().any(|s| name_is(token, s))).then_some(token)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_a_host_and_an_optional_port_and_nothing_else() {
        for good in [
            "shop",
            "shop.example:8080",
            "127.0.0.1",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:443",
            "xn--bcher-kva.example",
            "shop:",
        ] {
            assert!(is_valid_host(good.as_bytes()), "{good}");
        }
        for bad in [
            "",
            ":80",
            "user@shop",
            "shop:80x",
            "shop:123456",
            "shop:65536",
            "shop/x",
            "sh op",
            "[::1",
            "[]",
            "[::1]x",
            "[15.08:0:::::::::0]",
            "[1.2.3.4]",
            "a%20b",
            "a%zz",
            "shop\t",
            "[::1]:8a",
        ] {
            assert!(!is_valid_host(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn names_compare_without_case_and_connection_lists_skip_its_own_tokens() {
        assert!(name_is("Content-Length", "content-length"));
        assert!(!name_is("Content-Lengths", "content-length"));
        assert!(is_hop_by_hop("TE") && is_hop_by_hop("Proxy-Connection"));
        assert!(!is_hop_by_hop("x-forwarded-for"));
        assert!(is_valid_name("X-Fine-1") && !is_valid_name("X_Under"));
        let listed: Vec<_> =
            connection_listed(b"keep-alive, X-Secret ,Upgrade, host,close").collect();
        assert_eq!(listed, ["X-Secret"]);
        assert_eq!(classify("Content-Length"), Known::ContentLength);
        assert_eq!(classify("keep-alive"), Known::HopByHop);
        assert_eq!(classify("X_Under"), Known::Invalid);
        assert_eq!(classify("Server"), Known::Other);
        // Classification agrees with the rules each kind stands for, in any case.
        for name in [
            "Connection",
            "KEEP-ALIVE",
            "proxy-connection",
            "te",
            "Trailer",
            "Transfer-Encoding",
            "upgrade",
            "Content-Length",
            "tE",
            "ted",
            "x-upgrade",
            "Keep_Alive",
            "Host",
        ] {
            let known = classify(name);
            assert_eq!(
                is_hop_by_hop(name),
                matches!(
                    known,
                    Known::Connection | Known::Upgrade | Known::TransferEncoding | Known::HopByHop
                ),
                "{name}"
            );
            assert_eq!(known == Known::ContentLength, name_is(name, "content-length"), "{name}");
            assert_eq!(known == Known::Invalid, !is_valid_name(name), "{name}");
        }
    }
}
