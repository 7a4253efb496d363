//! `acme:` on an HTTPS listener: certificates for its host names obtained and renewed over ACME
//! (RFC 8555). The names are the listener's rules' `host_header` values (or `acme.names`); each
//! must be a name the CA can validate by HTTP-01 or TLS-ALPN-01, which rules out wildcards.

use routes::acme::{Acme, Challenge};
use syntax::decode::{Cx, Field, quote};
use syntax::tree::{Node, Value, child_index, child_key};

use super::{Loc, required_string};
use crate::taskdef::optional;

const ACME_FIELDS: &[&str] = &["directory", "email", "challenge", "ca_bundle", "names"];

/// What `acme:` says, before the names are known.
pub(super) struct AcmeField {
    pub acme: Acme,
    /// `acme.names`, when given: they replace the rules' host names.
    pub names: Option<Vec<(String, Loc)>>,
    pub loc: Loc,
    /// Where `challenge` is (or `acme:` itself when it is left at its default).
    pub challenge_loc: Loc,
}

/// `acme: { directory: URL, email: …, challenge: http-01|tls-alpn-01, ca_bundle: path, names: […] }`.
pub(super) fn acme(cx: &mut Cx<'_>, field: &Field<'_>) -> Option<AcmeField> {
    let mut f = cx.map(field.node, &field.path)?;
    let directory = required_string(
        cx,
        &mut f,
        "directory",
        "add the ACME server's directory URL, like \
         `directory: https://acme-v02.api.letsencrypt.org/directory`",
    )
    .and_then(|(url, loc)| {
        if url.starts_with("https://") && url.len() > "https://".len() {
            return Some(url);
        }
        cx.error(
            loc.pos,
            &loc.path,
            format!(
                "{} is not an ACME directory URL; ACME servers are reached over HTTPS: write \
                 the CA's https:// directory URL, like \
                 https://acme-v02.api.letsencrypt.org/directory",
                quote(&url)
            ),
        );
        None
    });
    let email = optional(cx, &mut f, "email", |cx, e| {
        let s = cx.nonempty(e.node, &e.path)?;
        let plausible = s.split('@').count() == 2
            && !s.starts_with('@')
            && !s.ends_with('@')
            && !s.contains(char::is_whitespace);
        if !plausible {
            cx.error(
                e.node.pos,
                &e.path,
                format!(
                    "{} is not an email address; write one like ops@example.com (the CA writes \
                     to it about expiring certificates), or remove `email`",
                    quote(&s)
                ),
            );
            return None;
        }
        Some(s)
    });
    let mut challenge_loc = Loc::of(field);
    let challenge = optional(cx, &mut f, "challenge", |cx, c| {
        challenge_loc = Loc::of(c);
        let s = cx.str(c.node, &c.path)?;
        let parsed = Challenge::parse(s);
        if parsed.is_none() {
            cx.error(
                c.node.pos,
                &c.path,
                format!(
                    "{} is not a challenge cutover answers; use http-01 (served by an HTTP \
                     listener of this load balancer on port 80) or tls-alpn-01 (served by this \
                     listener on port 443)",
                    quote(s)
                ),
            );
        }
        parsed
    });
    let ca_bundle = optional(cx, &mut f, "ca_bundle", |cx, b| cx.nonempty(b.node, &b.path));
    let names = optional(cx, &mut f, "names", |cx, n| {
        let items = cx.list(n.node, &n.path)?;
        if items.is_empty() {
            cx.error(
                n.node.pos,
                &n.path,
                "`names` is empty; list the host names to certify, or remove `names` to certify \
                 the host names of the listener's rules",
            );
            return None;
        }
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let path = child_index(&n.path, i);
            out.push((cx.nonempty(item, &path)?, Loc::node(item, &path)));
        }
        Some(out)
    });
    f.finish(cx, ACME_FIELDS, &[]);
    Some(AcmeField {
        acme: Acme {
            directory: directory?,
            email: email?,
            challenge: challenge?.unwrap_or(Challenge::Http01),
            ca_bundle: ca_bundle?,
            names: Vec::new(),
            dir: String::new(),
        },
        names: names?,
        loc: Loc::of(field),
        challenge_loc,
    })
}

/// The host names to certify: `acme.names` when given, else every `host_header` value of the
/// listener's rules (`listener` is the listener's node), each once, in order, lowercase. A name
/// ACME cannot validate here is reported where it is written.
pub(super) fn host_names(
    cx: &mut Cx<'_>,
    given: &AcmeField,
    listener: &Node,
    listener_path: &str,
) -> Option<Vec<String>> {
    let written = match &given.names {
        Some(names) => names.clone(),
        None => rules_host_names(listener, listener_path),
    };
    if written.is_empty() {
        cx.error(
            given.loc.pos,
            &given.loc.path,
            "this listener has no host names to obtain certificates for; add rules with \
             `conditions: [{ host_header: [www.example.com] }]` or list them in `acme.names`",
        );
        return None;
    }
    let mut names: Vec<String> = Vec::new();
    let mut ok = true;
    for (name, loc) in written {
        if let Err(why) = certifiable(&name) {
            let message = format!("{}: {why}", quote(&name));
            cx.error(loc.pos, &loc.path, message);
            ok = false;
            continue;
        }
        let name = name.to_ascii_lowercase();
        if !names.contains(&name) {
            names.push(name);
        }
    }
    ok.then_some(names)
}

/// Whether ACME's HTTP-01 and TLS-ALPN-01 can validate `name`, and if not why, with what to do.
pub fn certifiable(name: &str) -> Result<(), String> {
    if name.contains('*') || name.contains('?') {
        return Err("a wildcard host cannot get a certificate by http-01 or tls-alpn-01 (only \
                    dns-01 can validate one, which cutover does not answer); list the host \
                    names in `acme.names`, or serve this host with a certificate of your own in \
                    `certificates`"
            .to_string());
    }
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Err(
            "an IP address, not a host name; ACME certificates here are for DNS names".to_string()
        );
    }
    let labels_ok = name.len() <= 253
        && name.contains('.')
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !labels_ok {
        return Err("not a DNS name a CA can issue for; write a fully qualified name like \
                    www.example.com"
            .to_string());
    }
    Ok(())
}

/// Every `rules[].conditions[].host_header[]` text under a listener's node, with its place.
fn rules_host_names(listener: &Node, listener_path: &str) -> Vec<(String, Loc)> {
    let mut out = Vec::new();
    let Some(Value::Seq(rules)) = listener.get("rules", false).map(|n| &n.value) else {
        return out;
    };
    let rules_path = child_key(listener_path, "rules");
    for (i, rule) in rules.iter().enumerate() {
        let Some(Value::Seq(conditions)) = rule.get("conditions", false).map(|n| &n.value) else {
            continue;
        };
        let conditions_path = child_key(&child_index(&rules_path, i), "conditions");
        for (j, condition) in conditions.iter().enumerate() {
            let Some(hosts) = condition.get("host_header", false) else { continue };
            let path = child_key(&child_index(&conditions_path, j), "host_header");
            let values: Vec<(&Node, String)> = match &hosts.value {
                Value::Seq(items) => {
                    items.iter().enumerate().map(|(k, n)| (n, child_index(&path, k))).collect()
                }
                _ => vec![(hosts, path.clone())],
            };
            for (node, path) in values {
                if let Some(s) = node.as_str() {
                    out.push((s.to_string(), Loc::node(node, &path)));
                }
            }
        }
    }
    out
}

/// HTTP-01 is answered on plain HTTP (port 80 for a public CA): a load balancer whose listener
/// asks for it needs a plain HTTP listener. Reported at that listener's `challenge`.
pub(super) fn check_http_01_listener(cx: &mut Cx<'_>, challenge: &Loc, lb: &str, has_http: bool) {
    if has_http {
        return;
    }
    cx.error(
        challenge.pos,
        &challenge.path,
        format!(
            "http-01 is answered on an HTTP listener (port 80 for a public CA) and load \
             balancer `{lb}` has none; add `{{ name: http, port: 80 }}` to its listeners, or \
             use `challenge: tls-alpn-01`"
        ),
    );
}
