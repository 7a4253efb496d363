//! `load_balancers` and `target_groups` in cutover.yaml: listeners with their default actions, and
//! target groups with ALB's health-check rules and limits. What they reference across sections
//! (target groups a listener forwards to, listeners a deployment group names) is checked in
//! [`super::checks`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use model::format_duration;
use routes::{
    Algorithm, CertificateFiles, ConnectionLimits, DEFAULT_IDLE_TIMEOUT_MS, FixedResponse,
    HealthCheck, Redirect, TlsConfig, WeightedTargetGroup, rules,
};

use super::{
    ActionMeta, ListenerAction, ListenerMeta, ListenerSpec, LoadBalancerMeta, LoadBalancerSpec,
    Loc, Named, TargetGroupMeta, TargetGroupSpec, name, required_string,
};
use crate::taskdef::optional;
use syntax::decode::{BareNumber, Cx, Field, Fields, quote};
use syntax::diag::Pos;
use syntax::tree::{Node, Value, child_index, child_key};

// Limits and defaults (ALB's, and cutover's where it allows more, such as 1-second intervals).
const DEREGISTRATION_DELAY_DEFAULT: Duration = Duration::from_secs(300);
const DEREGISTRATION_DELAY_MAX: Duration = Duration::from_secs(3600);
const INTERVAL_MIN: Duration = Duration::from_secs(1);
const INTERVAL_MAX: Duration = Duration::from_secs(300);
const INTERVAL_ALB_MIN: Duration = Duration::from_secs(5);
const TIMEOUT_MIN: Duration = Duration::from_millis(100);
const TIMEOUT_MAX: Duration = Duration::from_secs(120);
const TIMEOUT_ALB_MIN: Duration = Duration::from_secs(2);
const FORWARD_TARGET_GROUPS_MAX: usize = 5;
/// ALB's quotas per load balancer ("Quotas for your Application Load Balancers"); each load
/// balancer of an installation has its own.
const LISTENERS_PER_LOAD_BALANCER_MAX: usize = 50;
const CERTIFICATES_PER_LOAD_BALANCER_MAX: usize = 25;
pub(super) const TARGET_GROUPS_PER_LOAD_BALANCER_MAX: usize = 100;
const TARGET_GROUP_NAME_LENGTH_MAX: usize = 32;
pub(super) fn load_balancer(
    cx: &mut Cx<'_>,
    node: &Node,
    path: &str,
) -> (Option<LoadBalancerSpec>, LoadBalancerMeta) {
    let mut meta = LoadBalancerMeta { name: None, listeners: Vec::new() };
    let Some(mut f) = cx.map(node, path) else { return (None, meta) };
    meta.name = name(cx, &mut f, "load balancer");
    let listeners = f
        .require(cx, "listeners", "add `listeners: [{ name: prod, port: 8080 }]`")
        .and_then(|field| {
            let items = cx.list(field.node, &field.path)?;
            if items.is_empty() {
                cx.error(
                    field.node.pos,
                    &field.path,
                    "a load balancer needs at least one listener",
                );
                return None;
            }
            let lb_name = meta.name.as_ref().map_or("", |(n, _)| n.as_str());
            let mut ok = check_quotas(cx, &field, items, lb_name);
            let mut out = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let (spec, m) = listener(cx, item, &child_index(&field.path, i));
                meta.listeners.push(m);
                match spec {
                    Some(s) => out.push(s),
                    None => ok = false,
                }
            }
            // As written, so that a mistake elsewhere in an HTTP listener reports only itself.
            let has_http = items
                .iter()
                .any(|item| item.get("protocol", false).and_then(Node::as_str) != Some("HTTPS"));
            for challenge in meta.listeners.iter().filter_map(|m| m.acme_http_01.as_ref()) {
                super::acme::check_http_01_listener(cx, challenge, lb_name, has_http);
                ok &= has_http;
            }
            ok.then_some(out)
        });
    let connections =
        optional(cx, &mut f, "connections", connection_limits).map(Option::unwrap_or_default);
    f.finish(cx, &["name", "listeners", "connections"], &[]);
    let spec = match (&meta.name, listeners, connections) {
        (Some((name, _)), Some(listeners), Some(connections)) => {
            Some(LoadBalancerSpec { name: name.clone(), listeners, connections })
        }
        _ => None,
    };
    (spec, meta)
}

/// ALB's quotas per load balancer that its `listeners` decide: listeners, rules over all of them
/// (default actions aside) and certificates besides each listener's default one. Each is
/// reported where it is exceeded: at `listeners`, or at the `rules` or `certificates` of the
/// listener that goes over. False when one is.
fn check_quotas(cx: &mut Cx<'_>, field: &Field<'_>, items: &[Node], lb: &str) -> bool {
    let mut ok = true;
    if items.len() > LISTENERS_PER_LOAD_BALANCER_MAX {
        cx.error(
            field.node.pos,
            &field.path,
            format!(
                "{} listeners; a load balancer has at most {LISTENERS_PER_LOAD_BALANCER_MAX} \
                 (ALB's quota): put the others on another load balancer",
                items.len()
            ),
        );
        ok = false;
    }
    let quotas = [
        ("rules", "rules", rules::MAX_RULES_PER_LOAD_BALANCER, "besides the default actions"),
        (
            "certificates",
            "certificates",
            CERTIFICATES_PER_LOAD_BALANCER_MAX,
            "besides each listener's default certificate_file",
        ),
    ];
    for (key, what, max, besides) in quotas {
        let mut total = 0;
        for (i, item) in items.iter().enumerate() {
            let Some(node) = item.get(key, false) else { continue };
            let Value::Seq(list) = &node.value else { continue };
            total += list.len();
            if total > max {
                let path = child_key(&child_index(&field.path, i), key);
                cx.error(
                    node.pos,
                    &path,
                    format!(
                        "load balancer `{lb}` has {total} {what} on its listeners up to this one; \
                         at most {max} per load balancer {besides} (ALB's quota): put this \
                         listener on another load balancer"
                    ),
                );
                ok = false;
                break;
            }
        }
    }
    ok
}

/// `connections: { max_per_client: 100, header_timeout: 10s }`: what one client may hold of
/// each listener (see [`ConnectionLimits`]).
fn connection_limits(cx: &mut Cx<'_>, field: &Field<'_>) -> Option<ConnectionLimits> {
    let mut f = cx.map(field.node, &field.path)?;
    let max_per_client = optional(cx, &mut f, "max_per_client", |cx, m| {
        let range = ConnectionLimits::MAX_PER_CLIENT_RANGE;
        cx.u32(m.node, &m.path, *range.start(), *range.end(), "max_per_client")
    });
    let header_timeout = optional(cx, &mut f, "header_timeout", |cx, t| {
        let d = cx.duration(t.node, &t.path, BareNumber::Rejected)?;
        let idle = Duration::from_millis(DEFAULT_IDLE_TIMEOUT_MS);
        if d.is_zero() || d >= idle {
            cx.error(
                t.node.pos,
                &t.path,
                format!(
                    "header_timeout {} must be above 0 and shorter than the idle timeout ({}), so \
                     that a client that stops sending its request head is cut off before an \
                     idle one; nginx and HAProxy users often pick 10s",
                    format_duration(d),
                    format_duration(idle)
                ),
            );
            return None;
        }
        Some(millis(d))
    });
    f.finish(cx, &["max_per_client", "header_timeout"], &[]);
    Some(ConnectionLimits { max_per_client: max_per_client?, header_timeout_ms: header_timeout? })
}

const LISTENER_FIELDS: &[&str] = &[
    "name",
    "port",
    "address",
    "protocol",
    "certificate_file",
    "key_file",
    "default_action",
    "rules",
    "certificates",
    "acme",
];

fn listener(cx: &mut Cx<'_>, node: &Node, path: &str) -> (Option<ListenerSpec>, ListenerMeta) {
    let mut meta = ListenerMeta::default();
    let Some(mut f) = cx.map(node, path) else { return (None, meta) };
    meta.name = name(cx, &mut f, "listener");
    let port = f
        .require(cx, "port", "add the port to listen on, like `port: 8080`")
        .and_then(|p| cx.port(p.node, &p.path).map(|port| (port, Loc::of(&p))));
    let address = optional(cx, &mut f, "address", |cx, a| {
        let s = cx.str(a.node, &a.path)?;
        match s.trim().parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                cx.error(
                    a.node.pos,
                    &a.path,
                    format!(
                        "{} is not an IP address; write one like 127.0.0.1, 0.0.0.0 or ::1",
                        quote(s)
                    ),
                );
                None
            }
        }
    });
    let (tls, acme) = tls_settings(cx, &mut f, path, &mut meta);
    let action = optional(cx, &mut f, "default_action", |cx, a| {
        let (action, action_meta) = action(cx, a, "a default_action");
        meta.action = Some(action_meta);
        action
    });
    let rules = optional(cx, &mut f, "rules", |cx, r| {
        super::listener_rules::listener_rules(cx, r, &mut meta.rules)
    });
    f.finish(cx, LISTENER_FIELDS, &[]);
    let tls = with_acme_names(cx, tls, acme.flatten(), (node, path), &mut meta);
    if let (Some((port, loc)), Some(address)) = (&port, &address) {
        let ip = address.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        meta.bind = Some((SocketAddr::new(ip, *port), loc.clone()));
    }
    let spec = (|| {
        Some(ListenerSpec {
            name: meta.name.as_ref()?.0.clone(),
            bind: meta.bind.as_ref()?.0,
            tls: tls?,
            default_action: action?.unwrap_or(ListenerAction::Forward(Vec::new())),
            rules: rules?.unwrap_or_default(),
        })
    })();
    (spec, meta)
}

/// An HTTPS listener's `protocol`, certificates and `acme`, checked together (`None`: an error
/// was reported; `Some(None)`: plain HTTP), and its `acme` field for the names it certifies.
fn tls_settings(
    cx: &mut Cx<'_>,
    f: &mut syntax::decode::Fields<'_>,
    path: &str,
    meta: &mut ListenerMeta,
) -> (Option<Option<TlsConfig>>, Option<Option<super::acme::AcmeField>>) {
    let https = optional(cx, f, "protocol", |cx, p| {
        let https = protocol(cx, p)? == "HTTPS";
        meta.https = https.then(|| Loc::of(p));
        Some(https)
    });
    let certificate = optional(cx, f, "certificate_file", |cx, c| {
        cx.nonempty(c.node, &c.path).map(|s| (s, Loc::of(c)))
    });
    let key =
        optional(cx, f, "key_file", |cx, k| cx.nonempty(k.node, &k.path).map(|s| (s, Loc::of(k))));
    let certificates = optional(cx, f, "certificates", |cx, c| {
        sni_certificates(cx, c).map(|list| (list, Loc::of(c)))
    });
    let acme = optional(cx, f, "acme", super::acme::acme);
    let tls = match (https, certificate, key, certificates, &acme) {
        (Some(https), Some(certificate), Some(key), Some(certificates), Some(acme)) => {
            let https = https.unwrap_or(false);
            if let (false, Some((_, loc))) = (https, &certificates) {
                cx.error(
                    loc.pos,
                    &loc.path,
                    "`certificates` is only used with `protocol: HTTPS`; add `protocol: HTTPS` \
                     with a default certificate_file and key_file, or remove them",
                );
                None
            } else {
                let certificates = certificates.map(|(list, _)| list).unwrap_or_default();
                let acme_settings = acme.as_ref().map(|a| a.acme.clone());
                match (https, certificate, key) {
                    (true, Some((certificate_file, _)), Some((key_file, _))) => {
                        Some(Some(TlsConfig {
                            certificate_file,
                            key_file,
                            certificates,
                            acme: acme_settings,
                        }))
                    }
                    // The default certificate is the first name's from ACME (set by `apply`,
                    // which knows where the data directory keeps it).
                    (true, None, None) if acme.is_some() => Some(Some(TlsConfig {
                        certificate_file: String::new(),
                        key_file: String::new(),
                        certificates,
                        acme: acme_settings,
                    })),
                    (true, certificate, key) => {
                        missing_certificate(cx, f.pos, path, certificate.is_some(), key.is_some());
                        None
                    }
                    (false, certificate, key) => {
                        let given = certificate
                            .as_ref()
                            .map(|c| ("certificate_file", &c.1))
                            .or(key.as_ref().map(|k| ("key_file", &k.1)))
                            .or(acme.as_ref().map(|a| ("acme", &a.loc)));
                        if let Some((field, loc)) = given {
                            let remove =
                                if field == "acme" { "`acme`" } else { "the certificate and key" };
                            let message = format!(
                                "`{field}` is only used with `protocol: HTTPS`; add `protocol: HTTPS` \
                             or remove {remove}"
                            );
                            cx.error(loc.pos, &loc.path, message);
                            None
                        } else {
                            Some(None)
                        }
                    }
                }
            }
        }
        _ => None,
    };
    (tls, acme)
}

/// An HTTPS listener without `acme` needs both of its certificate and key files.
fn missing_certificate(cx: &mut Cx<'_>, pos: Pos, path: &str, certificate: bool, key: bool) {
    for (missing, present) in [("certificate_file", certificate), ("key_file", key)] {
        if !present {
            cx.error(
                pos,
                &child_key(path, missing),
                format!(
                    "missing required field `{missing}`; an HTTPS listener needs a PEM \
                     certificate_file and key_file"
                ),
            );
        }
    }
}

/// The names an `acme` listener certifies come from its rules, read where they are written.
fn with_acme_names(
    cx: &mut Cx<'_>,
    tls: Option<Option<TlsConfig>>,
    acme: Option<super::acme::AcmeField>,
    (node, path): (&Node, &str),
    meta: &mut ListenerMeta,
) -> Option<Option<TlsConfig>> {
    let (Some(Some(mut tls)), Some(given)) = (tls.clone(), acme) else { return tls };
    let names = super::acme::host_names(cx, &given, node, path);
    if given.acme.challenge == routes::acme::Challenge::Http01 {
        meta.acme_http_01 = Some(given.challenge_loc.clone());
    }
    let names = names?;
    if let Some(acme) = &mut tls.acme {
        acme.names = names;
    }
    Some(Some(tls))
}

/// A listener's `default_action` or a rule's `action` (`what` names which, for the error).
pub(super) fn action(
    cx: &mut Cx<'_>,
    field: &Field<'_>,
    what: &str,
) -> (Option<ListenerAction>, ActionMeta) {
    let mut meta = ActionMeta { loc: Loc::of(field), forward: Vec::new(), is_forward: false };
    let Some(mut f) = cx.map(field.node, &field.path) else { return (None, meta) };
    let forward = f.get(cx, "forward");
    let fixed = f.get(cx, "fixed_response");
    let redirect = f.get(cx, "redirect");
    f.finish(cx, &["forward", "fixed_response", "redirect"], &[]);
    let given =
        [forward.is_some(), fixed.is_some(), redirect.is_some()].iter().filter(|b| **b).count();
    if given != 1 {
        cx.error(
            field.node.pos,
            &field.path,
            format!("{what} has exactly one of `forward`, `fixed_response` or `redirect`"),
        );
        return (None, meta);
    }
    let action = if let Some(fw) = forward {
        meta.is_forward = true;
        forward_action(cx, &fw, &mut meta.forward).map(ListenerAction::Forward)
    } else if let Some(fixed) = fixed {
        fixed_response(cx, &fixed).map(ListenerAction::FixedResponse)
    } else if let Some(redirect) = redirect {
        redirect_action(cx, &redirect).map(ListenerAction::Redirect)
    } else {
        None
    };
    (action, meta)
}

/// `forward: web-blue` or `forward: [{ target_group: web-blue, weight: 90 }, …]`.
fn forward_action(
    cx: &mut Cx<'_>,
    field: &Field<'_>,
    refs: &mut Vec<Named>,
) -> Option<Vec<WeightedTargetGroup>> {
    if let Value::Str(name) = &field.node.value {
        refs.push((name.clone(), Loc::of(field)));
        return Some(vec![WeightedTargetGroup { name: name.clone(), weight: 1 }]);
    }
    let items = cx.list(field.node, &field.path)?;
    if items.is_empty() || items.len() > FORWARD_TARGET_GROUPS_MAX {
        cx.error(
            field.node.pos,
            &field.path,
            format!(
                "a forward names 1 to {FORWARD_TARGET_GROUPS_MAX} target groups; this one names {}",
                items.len()
            ),
        );
        return None;
    }
    let mut out: Vec<WeightedTargetGroup> = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let path = child_index(&field.path, i);
        let entry = if let Value::Str(name) = &item.value {
            Some((name.clone(), Loc::node(item, &path), 1))
        } else {
            let Some(mut f) = cx.map(item, &path) else {
                ok = false;
                continue;
            };
            let tg =
                required_string(cx, &mut f, "target_group", "name the target group to forward to");
            let weight = optional(cx, &mut f, "weight", |cx, w| {
                cx.int(w.node, &w.path, 0, i128::from(routes::WEIGHT_MAX), "a weight")
                    .and_then(|w| u16::try_from(w).ok())
            });
            f.finish(cx, &["target_group", "weight"], &[]);
            match (tg, weight) {
                (Some((name, loc)), Some(weight)) => Some((name, loc, weight.unwrap_or(1))),
                _ => None,
            }
        };
        let Some((name, loc, weight)) = entry else {
            ok = false;
            continue;
        };
        if out.iter().any(|w| w.name == name) {
            cx.error(
                loc.pos,
                &loc.path,
                format!("target group `{name}` is named twice in this forward"),
            );
            ok = false;
        }
        refs.push((name.clone(), loc));
        out.push(WeightedTargetGroup { name, weight });
    }
    if ok && out.iter().all(|w| w.weight == 0) {
        cx.error(
            field.node.pos,
            &field.path,
            "every weight is 0, so nothing would be served; give one target group a weight above 0",
        );
        return None;
    }
    ok.then_some(out)
}

fn fixed_response(cx: &mut Cx<'_>, field: &Field<'_>) -> Option<FixedResponse> {
    let mut f = cx.map(field.node, &field.path)?;
    let status_code = f
        .require(cx, "status_code", "add `status_code: 404` (or another 2XX, 4XX or 5XX)")
        .and_then(|s| {
            let code = cx.int(s.node, &s.path, 200, 599, "a status code")?;
            if (300..400).contains(&code) {
                cx.error(
                    s.node.pos,
                    &s.path,
                    format!(
                        "{code} is a redirect status; use a `redirect` action, or a 2XX, 4XX or \
                         5XX code"
                    ),
                );
                return None;
            }
            u16::try_from(code).ok()
        });
    const CONTENT_TYPES: [&str; 5] =
        ["text/plain", "text/css", "text/html", "application/javascript", "application/json"];
    let content_type = optional(cx, &mut f, "content_type", |cx, c| {
        let s = cx.string(c.node, &c.path)?;
        if !CONTENT_TYPES.contains(&s.as_str()) {
            cx.error(
                c.node.pos,
                &c.path,
                format!("content_type {} is not one of {}", quote(&s), CONTENT_TYPES.join(", ")),
            );
            return None;
        }
        Some(s)
    });
    let body = optional(cx, &mut f, "body", |cx, b| {
        let s = cx.string(b.node, &b.path)?;
        if s.chars().count() > 1024 {
            cx.error(b.node.pos, &b.path, "the body is longer than 1024 characters, ALB's limit");
            return None;
        }
        Some(s)
    });
    f.finish(cx, &["status_code", "content_type", "body"], &[]);
    Some(FixedResponse {
        status_code: status_code?,
        content_type: content_type?,
        body: body?.unwrap_or_default(),
    })
}

fn redirect_action(cx: &mut Cx<'_>, field: &Field<'_>) -> Option<Redirect> {
    let mut f = cx.map(field.node, &field.path)?;
    let status_code = f
        .require(cx, "status_code", "add `status_code: 301` (permanent) or 302 (temporary)")
        .and_then(|s| {
            let code = cx.int(s.node, &s.path, 301, 302, "a redirect status code")?;
            u16::try_from(code).ok()
        });
    let protocol = optional(cx, &mut f, "protocol", |cx, p| protocol(cx, p).map(str::to_string));
    let host = optional(cx, &mut f, "host", |cx, h| {
        cx.nonempty(h.node, &h.path).filter(|s| placeholders_known(cx, h, s))
    });
    let port = optional(cx, &mut f, "port", |cx, p| cx.port(p.node, &p.path));
    let path = optional(cx, &mut f, "path", |cx, p| {
        let s = cx.string(p.node, &p.path)?;
        if !s.starts_with('/') {
            cx.error(p.node.pos, &p.path, format!("path {} must start with `/`", quote(&s)));
            return None;
        }
        placeholders_known(cx, p, &s).then_some(s)
    });
    let query = optional(cx, &mut f, "query", |cx, q| {
        let s = cx.string(q.node, &q.path)?;
        if s.starts_with('?') {
            cx.error(
                q.node.pos,
                &q.path,
                format!("query {} is written without its leading `?`", quote(&s)),
            );
            return None;
        }
        placeholders_known(cx, q, &s).then_some(s)
    });
    f.finish(cx, &["status_code", "protocol", "host", "port", "path", "query"], &[]);
    let redirect = Redirect {
        protocol: protocol?,
        host: host?,
        port: port?,
        path: path?,
        query: query?,
        status_code: status_code?,
    };
    if redirect.protocol.is_none()
        && redirect.host.is_none()
        && redirect.port.is_none()
        && redirect.path.is_none()
        && redirect.query.is_none()
    {
        cx.error(
            field.node.pos,
            &field.path,
            "this redirect changes nothing and would loop; set protocol, host, port, path or query",
        );
        return None;
    }
    Some(redirect)
}

/// Whether every `#{…}` in `text` is one of ALB's placeholders; reports the first that is not.
fn placeholders_known(cx: &mut Cx<'_>, field: &Field<'_>, text: &str) -> bool {
    match routes::redirect::strip_placeholders(text) {
        Ok(_) => true,
        Err(unknown) => {
            cx.error(
                field.node.pos,
                &field.path,
                format!(
                    "{unknown} is not a placeholder; use {}",
                    routes::redirect::PLACEHOLDERS.join(", ")
                ),
            );
            false
        }
    }
}

/// `certificates: [{ certificate_file: api.pem, key_file: api.key }, …]`: an HTTPS listener's
/// certificates besides its default one, chosen by the host a client names (SNI).
fn sni_certificates(cx: &mut Cx<'_>, field: &Field<'_>) -> Option<Vec<CertificateFiles>> {
    let items = cx.list(field.node, &field.path)?;
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let path = child_index(&field.path, i);
        let Some(mut c) = cx.map(item, &path) else {
            ok = false;
            continue;
        };
        let certificate_file =
            required_string(cx, &mut c, "certificate_file", "the PEM certificate chain's path");
        let key_file = required_string(cx, &mut c, "key_file", "the PEM private key's path");
        c.finish(cx, &["certificate_file", "key_file"], &[]);
        match (certificate_file, key_file) {
            (Some((certificate_file, _)), Some((key_file, _))) => {
                out.push(CertificateFiles { certificate_file, key_file })
            }
            _ => ok = false,
        }
    }
    ok.then_some(out)
}

// ---------------------------------------------------------------------------------------------
// Target groups.

const TARGET_GROUP_FIELDS: &[&str] =
    &["name", "health_check", "deregistration_delay", "algorithm", "targets"];
const HEALTH_CHECK_FIELDS: &[&str] = &[
    "enabled",
    "path",
    "port",
    "interval",
    "timeout",
    "healthy_threshold",
    "unhealthy_threshold",
    "matcher",
];

pub(super) fn target_group(
    cx: &mut Cx<'_>,
    node: &Node,
    path: &str,
) -> (Option<TargetGroupSpec>, TargetGroupMeta) {
    let mut meta = TargetGroupMeta { name: None, targets: None };
    let Some(mut f) = cx.map(node, path) else { return (None, meta) };
    meta.name = f.require(cx, "name", "every target group needs a name").and_then(|n| {
        let s = cx.string(n.node, &n.path)?;
        let ok = (1..=TARGET_GROUP_NAME_LENGTH_MAX).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-');
        if !ok {
            cx.error(
                n.node.pos,
                &n.path,
                format!(
                    "{} is not a valid target group name: use 1 to {TARGET_GROUP_NAME_LENGTH_MAX} \
                     letters, digits and `-`, not starting or ending with `-` (ALB's rule)",
                    quote(&s)
                ),
            );
            return None;
        }
        Some((s, Loc::of(&n)))
    });
    let health_check =
        optional(cx, &mut f, "health_check", health_check).map(Option::unwrap_or_default);
    let deregistration_delay = optional(cx, &mut f, "deregistration_delay", |cx, d| {
        let delay = cx.duration(d.node, &d.path, BareNumber::Seconds)?;
        if delay > DEREGISTRATION_DELAY_MAX {
            cx.error(
                d.node.pos,
                &d.path,
                format!(
                    "{} is longer than 1h, ALB's maximum deregistration delay",
                    format_duration(delay)
                ),
            );
            return None;
        }
        Some(delay)
    })
    .map(|d| d.unwrap_or(DEREGISTRATION_DELAY_DEFAULT));
    let algorithm = optional(cx, &mut f, "algorithm", |cx, a| {
        let s = cx.str(a.node, &a.path)?;
        match s {
            "round_robin" => Some(Algorithm::RoundRobin),
            "least_outstanding_requests" => Some(Algorithm::LeastOutstandingRequests),
            _ => {
                cx.error(
                    a.node.pos,
                    &a.path,
                    format!(
                        "algorithm {} is not `round_robin` or `least_outstanding_requests`",
                        quote(s)
                    ),
                );
                None
            }
        }
    })
    .map(Option::unwrap_or_default);
    let targets = optional(cx, &mut f, "targets", |cx, t| {
        meta.targets = Some(Loc::of(t));
        let items = cx.list(t.node, &t.path)?;
        let mut out: Vec<SocketAddr> = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            // The path is for messages only: built when there is one, as a target group may
            // list thousands of good targets.
            let path = || child_index(&t.path, i);
            let Some(s) = item.as_str().or_else(|| cx.str(item, &path())) else {
                ok = false;
                continue;
            };
            match s.trim().parse::<SocketAddr>() {
                Ok(addr) if out.contains(&addr) => {
                    cx.error(item.pos, &path(), format!("target {addr} is listed twice"));
                    ok = false;
                }
                Ok(addr) => out.push(addr),
                Err(_) => {
                    cx.error(
                        item.pos,
                        &path(),
                        format!(
                            "{} is not an address with a port; write it like 127.0.0.1:9000",
                            quote(s)
                        ),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    })
    .map(Option::unwrap_or_default);
    f.finish(cx, TARGET_GROUP_FIELDS, &[]);
    let spec = (|| {
        Some(TargetGroupSpec {
            name: meta.name.as_ref()?.0.clone(),
            health_check: health_check?,
            deregistration_delay: deregistration_delay?,
            algorithm: algorithm?,
            targets: targets?,
        })
    })();
    (spec, meta)
}

/// `health_check.path`: where the check requests, like ALB's.
fn health_check_path(cx: &mut Cx<'_>, p: &Field<'_>) -> Option<String> {
    let s = cx.string(p.node, &p.path)?;
    if !s.starts_with('/') || s.len() > 1024 {
        cx.error(
            p.node.pos,
            &p.path,
            format!("path {} must start with `/` (and be at most 1024 characters)", quote(&s)),
        );
        return None;
    }
    Some(s)
}

fn health_check_interval(cx: &mut Cx<'_>, i: &Field<'_>) -> Option<(Duration, Loc)> {
    let d = cx.duration(i.node, &i.path, BareNumber::Seconds)?;
    if d < INTERVAL_MIN || d > INTERVAL_MAX {
        cx.error(
            i.node.pos,
            &i.path,
            format!(
                "interval {} is out of range: 1s to 300s (cutover allows below ALB's 5s \
                 minimum for local use)",
                format_duration(d)
            ),
        );
        return None;
    }
    Some((d, Loc::of(i)))
}

fn health_check_timeout(cx: &mut Cx<'_>, t: &Field<'_>) -> Option<(Duration, Loc)> {
    let d = cx.duration(t.node, &t.path, BareNumber::Seconds)?;
    if d < TIMEOUT_MIN || d > TIMEOUT_MAX {
        cx.error(
            t.node.pos,
            &t.path,
            format!("timeout {} is out of range: 100ms to 120s", format_duration(d)),
        );
        return None;
    }
    Some((d, Loc::of(t)))
}

/// `health_check.matcher`: the status codes that pass, `"200"` or `"200-299,302"`.
fn health_check_matcher(cx: &mut Cx<'_>, m: &Field<'_>) -> Option<Vec<(u16, u16)>> {
    let text = match &m.node.value {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        _ => {
            cx.type_error(m.node, &m.path, "string like \"200\" or \"200-299\"");
            return None;
        }
    };
    match routes::parse_matcher(&text) {
        Ok(ranges) => Some(ranges),
        Err(err) => {
            cx.error(m.node.pos, &m.path, err.to_string());
            None
        }
    }
}

fn health_check(cx: &mut Cx<'_>, field: &Field<'_>) -> Option<HealthCheck> {
    let defaults = HealthCheck::default();
    let mut f = cx.map(field.node, &field.path)?;
    let enabled = optional(cx, &mut f, "enabled", |cx, e| cx.bool(e.node, &e.path));
    let path = optional(cx, &mut f, "path", health_check_path);
    let port = optional(cx, &mut f, "port", |cx, p| {
        if p.node.as_str() == Some("traffic-port") {
            return Some(None);
        }
        cx.port(p.node, &p.path).map(Some)
    });
    let interval = optional(cx, &mut f, "interval", health_check_interval);
    let timeout = optional(cx, &mut f, "timeout", health_check_timeout);
    let threshold = |cx: &mut Cx<'_>, f: &mut Fields<'_>, key: &str, default: u32| {
        optional(cx, f, key, |cx, t| cx.u32(t.node, &t.path, 2, 10, key))
            .map(|v| v.unwrap_or(default))
    };
    let healthy_threshold = threshold(cx, &mut f, "healthy_threshold", defaults.healthy_threshold);
    let unhealthy_threshold =
        threshold(cx, &mut f, "unhealthy_threshold", defaults.unhealthy_threshold);
    let matcher = optional(cx, &mut f, "matcher", health_check_matcher);
    f.finish(cx, HEALTH_CHECK_FIELDS, &[]);
    let interval = interval?;
    let timeout = timeout?;
    let interval_value =
        interval.as_ref().map_or(Duration::from_millis(defaults.interval_ms), |(d, _)| *d);
    let timeout_value =
        timeout.as_ref().map_or(Duration::from_millis(defaults.timeout_ms), |(d, _)| *d);
    if timeout_value >= interval_value {
        let (pos, path) = match (&timeout, &interval) {
            (Some((_, loc)), _) | (None, Some((_, loc))) => (loc.pos, loc.path.clone()),
            (None, None) => (field.node.pos, field.path.clone()),
        };
        let defaulted = |given: bool| if given { "" } else { " (the default)" };
        cx.error(
            pos,
            &path,
            format!(
                "timeout {}{} must be shorter than interval {}{}",
                format_duration(timeout_value),
                defaulted(timeout.is_some()),
                format_duration(interval_value),
                defaulted(interval.is_some()),
            ),
        );
        return None;
    }
    if interval_value < INTERVAL_ALB_MIN || timeout_value < TIMEOUT_ALB_MIN {
        cx.note(
            field.node.pos,
            &field.path,
            format!(
                "interval {} and timeout {} are below ALB's minimums (5s and 2s); cutover allows \
                 them for local use",
                format_duration(interval_value),
                format_duration(timeout_value)
            ),
        );
    }
    Some(HealthCheck {
        enabled: enabled?.unwrap_or(defaults.enabled),
        path: path?.unwrap_or(defaults.path),
        port: port?.unwrap_or(defaults.port),
        interval_ms: millis(interval_value),
        timeout_ms: millis(timeout_value),
        healthy_threshold: healthy_threshold?,
        unhealthy_threshold: unhealthy_threshold?,
        matcher: matcher?.unwrap_or(defaults.matcher),
    })
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `protocol: HTTP` or `HTTPS`, in any case, as `"HTTP"` or `"HTTPS"`.
fn protocol(cx: &mut Cx<'_>, field: &Field<'_>) -> Option<&'static str> {
    let s = cx.str(field.node, &field.path)?;
    match s.to_ascii_uppercase().as_str() {
        "HTTP" => Some("HTTP"),
        "HTTPS" => Some("HTTPS"),
        _ => {
            cx.error(
                field.node.pos,
                &field.path,
                format!("protocol {} is not HTTP or HTTPS", quote(s)),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::parse_cutover_file;

    const FILE: &str = "
target_groups:
  - name: static
    targets: [127.0.0.1:9000]
load_balancers:
  - name: web
    connections: CONNECTIONS
    listeners:
      - { name: prod, port: 8080, default_action: { forward: static } }
";

    fn parse(connections: &str) -> Result<routes::ConnectionLimits, String> {
        let text = FILE.replace("CONNECTIONS", connections);
        match parse_cutover_file("cutover.yaml", &text) {
            Ok(parsed) => Ok(parsed.value.load_balancers[0].connections),
            Err(errors) => Err(errors.0.iter().map(|e| format!("{e}\n")).collect()),
        }
    }

    #[test]
    fn connection_limits_are_read_with_their_units() {
        let limits = parse("{ max_per_client: 50, header_timeout: 5s }").unwrap();
        assert_eq!(limits.max_per_client, Some(50));
        assert_eq!(limits.header_timeout_ms, Some(5_000));
        assert_eq!(parse("{}").unwrap(), routes::ConnectionLimits::default());
        let omitted = FILE.replace("    connections: CONNECTIONS\n", "");
        let parsed = parse_cutover_file("cutover.yaml", &omitted).unwrap();
        assert_eq!(parsed.value.load_balancers[0].connections, routes::ConnectionLimits::default());
    }

    #[test]
    fn the_docs_example_of_connection_limits_is_valid() {
        let docs = include_str!("../../../../docs/cutover-yaml.md");
        let section = &docs[docs.find("### Connection limits").expect("the section")..];
        let start = section.find("```yaml\n").expect("an example") + "```yaml\n".len();
        let example = &section[start..start + section[start..].find("```").expect("its end")];
        let parsed = parse_cutover_file("docs.yaml", example).unwrap();
        let limits = parsed.value.load_balancers[0].connections;
        assert_eq!(limits.max_per_client, Some(1000));
        assert_eq!(limits.header_timeout_ms, Some(10_000));
    }

    #[test]
    fn connection_limits_out_of_range_are_errors_at_their_value() {
        assert_eq!(
            parse("{ max_per_client: 0, header_timeout: 60s }").unwrap_err(),
            "cutover.yaml:7:36: load_balancers[0].connections.max_per_client: 0 is out of range: \
             max_per_client must be 1 to 1000000\n\
             cutover.yaml:7:55: load_balancers[0].connections.header_timeout: header_timeout 1m \
             must be above 0 and shorter than the idle timeout (1m), so that a client that stops \
             sending its request head is cut off before an idle one; nginx and HAProxy users \
             often pick 10s\n"
        );
        assert_eq!(
            parse("{ header_timeout: 10 }").unwrap_err(),
            "cutover.yaml:7:36: load_balancers[0].connections.header_timeout: `10` has no unit; \
             write `10s` for seconds or `10m` for minutes\n"
        );
        assert_eq!(
            parse("{ max_per_clients: 5 }").unwrap_err(),
            "cutover.yaml:7:20: load_balancers[0].connections.max_per_clients: unknown field \
             `max_per_clients`; did you mean `max_per_client`?\n"
        );
    }
}
