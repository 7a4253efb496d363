//! Header field names as they arrive on the wire, for the raw HTTP/1 paths ([`crate::h1`],
//! [`crate::upstream`]) and, through `HeaderName::as_str`, for hyper's.

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
    name_is(name, "connection")
        || name_is(name, "keep-alive")
        || name_is(name, "proxy-connection")
        || name_is(name, "te")
        || name_is(name, "trailer")
        || name_is(name, "transfer-encoding")
        || name_is(name, "upgrade")
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
    }
}
