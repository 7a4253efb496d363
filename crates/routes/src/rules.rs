//! ALB listener rules: which requests a rule takes, decided by a pure function.
//!
//! A listener evaluates its rules from the lowest priority up and performs the action of the first
//! whose conditions all hold; when none does, its default action. Within a condition, its values
//! are alternatives (OR); the conditions of a rule must all hold (AND). The limits and character
//! sets are ALB's ("Condition types for listener rules", "Quotas for your Application Load
//! Balancers"), so a rule that ALB refuses is refused here too, with the reason.
//!
//! [`Matcher::new`] checks and compiles a rule's conditions once per routing-table version;
//! [`Matcher::matches`] is what a request pays. Wildcards are ALB's flat ones — `*` any run of
//! characters, `/` included, and `?` exactly one — which is why this is not `model::glob`, whose
//! `*` stays within one path part.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::Action;

/// ALB's rule priorities.
pub const PRIORITY_RANGE: std::ops::RangeInclusive<u32> = 1..=50_000;
/// Rules per load balancer, over all its listeners, not counting default actions (ALB's quota,
/// "Rules per Application Load Balancer"); so at most this many on one listener too.
pub const MAX_RULES_PER_LOAD_BALANCER: usize = 100;
/// Values of one condition (ALB's "match evaluations per condition").
pub const MAX_VALUES_PER_CONDITION: usize = 3;
/// Values over all conditions of one rule (ALB's "match evaluations per rule").
pub const MAX_VALUES_PER_RULE: usize = 5;
/// `*` and `?` over all conditions of one rule.
pub const MAX_WILDCARDS_PER_RULE: usize = 5;
/// Longest host, path, header value, query key or value.
pub const MAX_VALUE_LEN: usize = 128;
/// Longest header name or method.
pub const MAX_NAME_LEN: usize = 40;

/// A listener rule: when all `conditions` hold, `action`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// 1–50,000, unique per listener; the lowest matching one wins.
    pub priority: u32,
    pub conditions: Vec<Condition>,
    pub action: Action,
}

/// One condition, named as ALB's `Field`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "field", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Condition {
    /// The request's host (without a port), case-insensitive, with wildcards.
    HostHeader { values: Vec<String> },
    /// The request's path (not its query), case-sensitive, with wildcards.
    PathPattern { values: Vec<String> },
    /// A header's value, case-insensitive, with wildcards; any of the header's fields may match.
    HttpHeader { name: String, values: Vec<String> },
    /// The method, exactly (case-sensitive, no wildcards).
    HttpRequestMethod { values: Vec<String> },
    /// A query parameter, case-insensitive, with wildcards.
    QueryString { values: Vec<QueryValue> },
    /// The client's address (the connection's peer), in CIDR blocks.
    SourceIp { values: Vec<String> },
}

/// A query-string match: `key=value`, or any parameter's value when `key` is absent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryValue {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub value: String,
}

impl Condition {
    /// ALB's name for it, as `cutover.yaml` writes it.
    pub fn field(&self) -> &'static str {
        match self {
            Condition::HostHeader { .. } => "host-header",
            Condition::PathPattern { .. } => "path-pattern",
            Condition::HttpHeader { .. } => "http-header",
            Condition::HttpRequestMethod { .. } => "http-request-method",
            Condition::QueryString { .. } => "query-string",
            Condition::SourceIp { .. } => "source-ip",
        }
    }

    fn value_count(&self) -> usize {
        match self {
            Condition::HostHeader { values }
            | Condition::PathPattern { values }
            | Condition::HttpHeader { values, .. }
            | Condition::HttpRequestMethod { values }
            | Condition::SourceIp { values } => values.len(),
            Condition::QueryString { values } => values.len(),
        }
    }
}

/// Why ALB would refuse a rule's conditions.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("priority {0} is not 1-50000")]
    Priority(u32),
    #[error(
        "a rule needs at least one condition; the listener's default action is the rule without any"
    )]
    NoCondition,
    #[error(
        "{field} appears twice; a rule may have one {field} condition (list its values together)"
    )]
    Repeated { field: &'static str },
    #[error("{field} has no values; give 1-{MAX_VALUES_PER_CONDITION}")]
    NoValues { field: &'static str },
    #[error(
        "{field} has {count} values; at most {MAX_VALUES_PER_CONDITION} per condition (add another rule)"
    )]
    TooManyValues { field: &'static str, count: usize },
    #[error(
        "the rule's conditions have {count} values together; at most {MAX_VALUES_PER_RULE} per rule"
    )]
    TooManyValuesPerRule { count: usize },
    #[error(
        "the rule's values hold {count} wildcards (* and ?) together; at most {MAX_WILDCARDS_PER_RULE} per rule"
    )]
    TooManyWildcards { count: usize },
    #[error("{field} value {value:?} {problem}")]
    Value { field: &'static str, value: String, problem: &'static str },
}

/// A rule's conditions, checked and compiled for the request path.
#[derive(Clone, Debug)]
pub struct Matcher {
    conditions: Vec<Compiled>,
}

#[derive(Clone, Debug)]
enum Compiled {
    Host(Vec<Pattern>),
    Path(Vec<Pattern>),
    Header { name: Box<[u8]>, values: Vec<Pattern> },
    Method(Vec<Box<[u8]>>),
    Query(Vec<(Option<Pattern>, Pattern)>),
    SourceIp(Vec<Cidr>),
}

/// What a rule may look at in a request. `host` is the Host header (or HTTP/2 authority) as
/// sent, port included; `path` excludes the query.
pub trait RequestView {
    fn host(&self) -> &[u8];
    fn path(&self) -> &[u8];
    fn query(&self) -> Option<&[u8]>;
    fn method(&self) -> &[u8];
    fn source_ip(&self) -> IpAddr;
    /// Whether a field named `name` (lowercase) has a value for which `matches` holds.
    fn any_header(&self, name: &[u8], matches: &mut dyn FnMut(&[u8]) -> bool) -> bool;
}

impl Matcher {
    /// Checks `rule`'s priority and conditions against ALB's rules and compiles them.
    pub fn new(rule: &Rule) -> Result<Matcher, RuleError> {
        if !PRIORITY_RANGE.contains(&rule.priority) {
            return Err(RuleError::Priority(rule.priority));
        }
        Matcher::of_conditions(&rule.conditions)
    }

    /// Checks and compiles conditions, whatever the priority.
    pub fn of_conditions(conditions: &[Condition]) -> Result<Matcher, RuleError> {
        if conditions.is_empty() {
            return Err(RuleError::NoCondition);
        }
        let mut seen: Vec<&'static str> = Vec::new();
        let (mut values, mut wildcards) = (0, 0);
        let mut compiled = Vec::with_capacity(conditions.len());
        for c in conditions {
            let field = c.field();
            let repeatable =
                matches!(c, Condition::HttpHeader { .. } | Condition::QueryString { .. });
            if !repeatable && seen.contains(&field) {
                return Err(RuleError::Repeated { field });
            }
            seen.push(field);
            let count = c.value_count();
            if count == 0 {
                return Err(RuleError::NoValues { field });
            }
            if count > MAX_VALUES_PER_CONDITION {
                return Err(RuleError::TooManyValues { field, count });
            }
            values += count;
            let (condition, stars) = compile(c)?;
            wildcards += stars;
            compiled.push(condition);
        }
        if values > MAX_VALUES_PER_RULE {
            return Err(RuleError::TooManyValuesPerRule { count: values });
        }
        if wildcards > MAX_WILDCARDS_PER_RULE {
            return Err(RuleError::TooManyWildcards { count: wildcards });
        }
        // The cheapest conditions first: a request most rules refuse is refused sooner.
        compiled.sort_by_key(Compiled::cost);
        Ok(Matcher { conditions: compiled })
    }

    /// Whether every condition holds for `req`.
    #[inline]
    pub fn matches<R: RequestView + ?Sized>(&self, req: &R) -> bool {
        self.conditions.iter().all(|c| c.matches(req))
    }
}

/// The first of `rules` (already in priority order) whose matcher takes `req`.
#[inline]
pub fn first_match<'a, A, R: RequestView + ?Sized>(
    rules: &'a [(Matcher, A)],
    req: &R,
) -> Option<&'a A> {
    rules.iter().find(|(m, _)| m.matches(req)).map(|(_, a)| a)
}

fn value_error(field: &'static str, value: &str, problem: &'static str) -> RuleError {
    RuleError::Value { field, value: value.to_string(), problem }
}

/// Compiles one condition; also says how many wildcards it holds.
fn compile(c: &Condition) -> Result<(Compiled, usize), RuleError> {
    let field = c.field();
    let mut stars = 0;
    let mut pattern = |value: &str, fold: bool, allowed: Charset| {
        check_text(field, value, MAX_VALUE_LEN, allowed)?;
        let p = Pattern::new(value, fold);
        stars += p.wildcards();
        Ok::<_, RuleError>(p)
    };
    let compiled = match c {
        Condition::HostHeader { values } => Compiled::Host(
            values
                .iter()
                .map(|v| {
                    check_host(v)?;
                    pattern(v, true, HOST)
                })
                .collect::<Result<_, _>>()?,
        ),
        Condition::PathPattern { values } => Compiled::Path(
            values
                .iter()
                .map(|v| {
                    if !v.starts_with('/') && !v.starts_with('*') {
                        return Err(value_error(field, v, "must start with / (or a wildcard)"));
                    }
                    pattern(v, false, PATH)
                })
                .collect::<Result<_, _>>()?,
        ),
        Condition::HttpHeader { name, values } => {
            check_text(field, name, MAX_NAME_LEN, HEADER_NAME)?;
            if name.eq_ignore_ascii_case("host") {
                return Err(value_error(field, name, "is the host: use a host-header condition"));
            }
            let values =
                values.iter().map(|v| pattern(v, true, HEADER_VALUE)).collect::<Result<_, _>>()?;
            Compiled::Header { name: name.to_ascii_lowercase().into_bytes().into(), values }
        }
        Condition::HttpRequestMethod { values } => Compiled::Method(
            values
                .iter()
                .map(|v| {
                    check_text(field, v, MAX_NAME_LEN, METHOD)?;
                    Ok(v.as_bytes().into())
                })
                .collect::<Result<_, RuleError>>()?,
        ),
        Condition::QueryString { values } => Compiled::Query(
            values
                .iter()
                .map(|q| {
                    let key = match &q.key {
                        Some(k) => Some(pattern(k, true, QUERY)?),
                        None => None,
                    };
                    Ok((key, pattern(&q.value, true, QUERY)?))
                })
                .collect::<Result<_, RuleError>>()?,
        ),
        Condition::SourceIp { values } => Compiled::SourceIp(
            values
                .iter()
                .map(|v| {
                    Cidr::parse(v).ok_or_else(|| {
                        value_error(
                            field,
                            v,
                            "is not a CIDR block like 10.0.0.0/8 or 2001:db8::/32",
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
        ),
    };
    Ok((compiled, stars))
}

/// The characters ALB allows in a kind of value, and how to say so.
type Charset = (fn(u8) -> bool, &'static str);

const HOST: Charset =
    (is_host_char, "may hold only letters, digits, -, _, . and the wildcards * and ?");
const PATH: Charset =
    (is_path_char, "may hold only letters, digits, _-.$/~\"'@:+& and the wildcards * and ?");
const HEADER_NAME: Charset = (is_token_char, "is not a header name");
const HEADER_VALUE: Charset = (is_visible, "may hold only visible ASCII characters and spaces");
const METHOD: Charset =
    (is_method_char, "may hold only uppercase letters, - and _ (methods are compared exactly)");
const QUERY: Charset = (is_query_char, "may hold only visible ASCII characters other than & and =");

fn check_text(
    field: &'static str,
    value: &str,
    max: usize,
    (allowed, charset): Charset,
) -> Result<(), RuleError> {
    if value.is_empty() || value.len() > max {
        return Err(value_error(
            field,
            value,
            if max == MAX_NAME_LEN {
                "must be 1-40 characters"
            } else {
                "must be 1-128 characters"
            },
        ));
    }
    if value.bytes().any(|b| !allowed(b)) {
        return Err(value_error(field, value, charset));
    }
    Ok(())
}

/// ALB: at least one `.`, and only letters (or wildcards) after the last one.
fn check_host(value: &str) -> Result<(), RuleError> {
    let Some((_, tld)) = value.rsplit_once('.') else {
        return Err(value_error(
            "host-header",
            value,
            "needs a `.`, like example.com or *.example.com",
        ));
    };
    if tld.is_empty() || !tld.bytes().all(|b| b.is_ascii_alphabetic() || b == b'*' || b == b'?') {
        return Err(value_error(
            "host-header",
            value,
            "must end in letters after its last `.` (ports are ignored: leave them out)",
        ));
    }
    Ok(())
}

fn is_host_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.*?".contains(&b)
}

fn is_path_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"_-.$/~\"'@:+&*?".contains(&b)
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_method_char(b: u8) -> bool {
    b.is_ascii_uppercase() || b == b'-' || b == b'_'
}

fn is_visible(b: u8) -> bool {
    (0x20..0x7f).contains(&b)
}

fn is_query_char(b: u8) -> bool {
    b.is_ascii_graphic() && b != b'&' && b != b'='
}

impl Compiled {
    /// Roughly what evaluating it costs, to evaluate cheap ones first.
    fn cost(&self) -> u8 {
        match self {
            Compiled::Method(_) | Compiled::SourceIp(_) => 0,
            Compiled::Host(_) | Compiled::Path(_) => 1,
            Compiled::Header { .. } => 2,
            Compiled::Query(_) => 3,
        }
    }

    #[inline]
    fn matches<R: RequestView + ?Sized>(&self, req: &R) -> bool {
        match self {
            Compiled::Host(patterns) => {
                let host = strip_port(req.host());
                patterns.iter().any(|p| p.matches(host))
            }
            Compiled::Path(patterns) => {
                let path = req.path();
                patterns.iter().any(|p| p.matches(path))
            }
            Compiled::Header { name, values } => {
                req.any_header(name, &mut |v| values.iter().any(|p| p.matches(v.trim_ascii())))
            }
            Compiled::Method(methods) => {
                let method = req.method();
                methods.iter().any(|m| **m == *method)
            }
            Compiled::Query(pairs) => {
                let Some(query) = req.query() else { return false };
                query.split(|&b| b == b'&').any(|param| {
                    let (key, value) = match param.iter().position(|&b| b == b'=') {
                        Some(i) => (&param[..i], &param[i + 1..]),
                        None => (param, &param[param.len()..]),
                    };
                    pairs
                        .iter()
                        .any(|(k, v)| k.as_ref().is_none_or(|k| k.matches(key)) && v.matches(value))
                })
            }
            Compiled::SourceIp(blocks) => {
                let ip = req.source_ip();
                blocks.iter().any(|b| b.contains(ip))
            }
        }
    }
}

/// `host` without a `:port` (an IPv6 literal keeps its brackets).
fn strip_port(host: &[u8]) -> &[u8] {
    if host.first() == Some(&b'[') {
        return match host.iter().position(|&b| b == b']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.iter().rposition(|&b| b == b':') {
        Some(i) if host[i + 1..].iter().all(u8::is_ascii_digit) => &host[..i],
        _ => host,
    }
}

/// An ALB wildcard pattern: `*` any run of bytes, `?` exactly one.
#[derive(Clone, Debug)]
struct Pattern {
    /// Lowercased when `fold`.
    bytes: Box<[u8]>,
    fold: bool,
    /// No wildcard: compared whole.
    literal: bool,
    /// The literal bytes before the first wildcard and after the last: a text must start and
    /// end with them, which most texts a rule is not for fail at once.
    prefix: usize,
    suffix: usize,
}

impl Pattern {
    fn new(text: &str, fold: bool) -> Pattern {
        let bytes: Box<[u8]> = if fold {
            text.to_ascii_lowercase().into_bytes().into()
        } else {
            text.as_bytes().into()
        };
        let wild = |b: &u8| *b == b'*' || *b == b'?';
        let literal = !bytes.iter().any(wild);
        let prefix = bytes.iter().position(wild).unwrap_or(bytes.len());
        let suffix = bytes.iter().rev().position(wild).unwrap_or(0);
        Pattern { bytes, fold, literal, prefix, suffix }
    }

    fn wildcards(&self) -> usize {
        self.bytes.iter().filter(|&&b| b == b'*' || b == b'?').count()
    }

    #[inline]
    fn matches(&self, text: &[u8]) -> bool {
        if self.literal {
            return if self.fold {
                self.bytes.eq_ignore_ascii_case(text)
            } else {
                *self.bytes == *text
            };
        }
        let (p, s) = (self.prefix, self.suffix);
        if text.len() < p + s {
            return false;
        }
        let eq = |pattern: &[u8], text: &[u8]| {
            if self.fold { pattern.eq_ignore_ascii_case(text) } else { pattern == text }
        };
        let (pattern_end, text_end) = (self.bytes.len() - s, text.len() - s);
        eq(&self.bytes[..p], &text[..p])
            && eq(&self.bytes[pattern_end..], &text[text_end..])
            && wildcard_match(&self.bytes[p..pattern_end], &text[p..text_end], self.fold)
    }
}

/// Iterative wildcard matching with one backtrack point (linear in practice, never exponential).
fn wildcard_match(pattern: &[u8], text: &[u8], fold: bool) -> bool {
    let eq = |p: u8, t: u8| if fold { p == t.to_ascii_lowercase() } else { p == t };
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || eq(c, text[t]) => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// An address block: the first `bits` bits of `addr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cidr {
    addr: IpAddr,
    bits: u8,
}

impl Cidr {
    fn parse(text: &str) -> Option<Cidr> {
        let (addr, bits) = text.split_once('/')?;
        let addr: IpAddr = addr.parse().ok()?;
        let bits: u8 = bits.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (bits <= max).then_some(Cidr { addr, bits })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 client on a dual-stack socket arrives as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(
                u128::from(net.to_bits()) << 96,
                u128::from(ip.to_bits()) << 96,
                self.bits,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => prefix_eq(net.to_bits(), ip.to_bits(), self.bits),
            _ => false,
        }
    }
}

fn prefix_eq(a: u128, b: u128, bits: u8) -> bool {
    bits == 0 || (a ^ b) >> (128 - u32::from(bits)) == 0
}

#[cfg(test)]
mod tests;
