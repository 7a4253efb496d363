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
