//! `rules` of a listener in cutover.yaml: ALB's listener rules, with their priorities, conditions
//! and actions. What ALB would refuse is decided by [`routes::rules::Matcher`], the same code the
//! load balancer compiles the rules with; this file only places each refusal at its line and
//! column. Target groups a rule forwards to are checked with the listener's in [`super::checks`].
//!
//! ```yaml
//! rules:
//!   - priority: 10
//!     conditions:
//!       - host_header: [api.example.com, "*.api.example.com"]
//!       - path_pattern: ["/v1/*"]
//!       - http_header: { name: X-Canary, values: ["yes"] }
//!       - query_string: [{ key: version, value: v1 }, { value: "*beta*" }]
//!       - http_request_method: [GET, HEAD]
//!       - source_ip: [10.0.0.0/8]
//!     action: { forward: api-blue }
//! ```

use routes::rules::{self, Matcher, RuleError};
use routes::{Condition, QueryValue};
use syntax::decode::{Cx, Field};
use syntax::tree::{Node, Value, child_index};

use super::load_balancing::action;
use super::{ActionMeta, ListenerRule, Loc};

/// The condition keys, as `cutover.yaml` writes ALB's fields.
const CONDITION_KEYS: [&str; 6] = [
    "host_header",
    "path_pattern",
    "http_header",
    "http_request_method",
    "query_string",
    "source_ip",
];

/// Where a rule was written, for the checks across sections.
pub(super) struct RuleMeta {
    pub action: Option<ActionMeta>,
}

/// `rules: [...]` of one listener; every mistake is reported, each at its place.
pub(super) fn listener_rules(
    cx: &mut Cx<'_>,
    field: &Field<'_>,
    metas: &mut Vec<RuleMeta>,
) -> Option<Vec<ListenerRule>> {
    let items = cx.list(field.node, &field.path)?;
    // Over the load balancer's quota on its own: reported with the load balancer's quotas.
    if items.len() > rules::MAX_RULES_PER_LOAD_BALANCER {
        return None;
    }
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    let mut priorities: Vec<(u32, usize)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = child_index(&field.path, i);
        let mut meta = RuleMeta { action: None };
        let rule = listener_rule(cx, item, &path, &mut meta, &mut priorities, i);
        metas.push(meta);
        match rule {
            Some(r) => out.push(r),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn listener_rule(
    cx: &mut Cx<'_>,
    node: &Node,
    path: &str,
    meta: &mut RuleMeta,
    priorities: &mut Vec<(u32, usize)>,
    index: usize,
) -> Option<ListenerRule> {
    let mut f = cx.map(node, path)?;
    let priority = f
        .require(cx, "priority", "add `priority: 10` (1-50000, unique per listener; the lowest matching rule wins)")
        .and_then(|p| {
            let range = rules::PRIORITY_RANGE;
            let priority = cx.u32(p.node, &p.path, *range.start(), *range.end(), "a priority")?;
            if let Some((_, first)) = priorities.iter().find(|(q, _)| *q == priority) {
                cx.error(
                    p.node.pos,
                    &p.path,
                    format!(
                        "priority {priority} is also the priority of rules[{first}]; priorities are \
                         unique per listener, give this rule another one"
                    ),
                );
                return None;
            }
            priorities.push((priority, index));
            Some(priority)
        });
    let conditions = f
        .require(
            cx,
            "conditions",
            "add `conditions: [{ host_header: [api.example.com] }]`; a request no rule takes gets the default_action",
        )
        .and_then(|c| conditions(cx, &c));
    let action = f
        .require(
            cx,
            "action",
            "add `action: { forward: my-target-group }` (or fixed_response, redirect)",
        )
        .and_then(|a| {
            let (action, action_meta) = action(cx, &a, "an action");
            meta.action = Some(action_meta);
            action
        });
    f.finish(cx, &["priority", "conditions", "action"], &[]);
    Some(ListenerRule { priority: priority?, conditions: conditions?, action: action? })
}

/// A condition as written: the condition, where it is, and where each of its values is.
struct Written {
    condition: Condition,
    loc: Loc,
    values: Vec<(String, Loc)>,
}

fn conditions(cx: &mut Cx<'_>, field: &Field<'_>) -> Option<Vec<Condition>> {
    let items = cx.list(field.node, &field.path)?;
    let mut written = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        match condition(cx, item, &child_index(&field.path, i)) {
            Some(w) => written.push(w),
            None => ok = false,
        }
    }
    // One condition at a time first, so that a value ALB refuses is named where it is written.
    for w in &written {
        if let Err(e) = Matcher::of_conditions(std::slice::from_ref(&w.condition)) {
            place(cx, &e, w, &w.loc);
            ok = false;
        }
    }
    if !ok {
        return None;
    }
    let all: Vec<Condition> = written.iter().map(|w| w.condition.clone()).collect();
    if let Err(e) = Matcher::of_conditions(&all) {
        match &e {
            RuleError::Repeated { field: repeated } => {
                let second = written.iter().filter(|w| w.condition.field() == *repeated).nth(1);
                let loc = second.map_or_else(|| Loc::of(field), |w| w.loc.clone());
                cx.error(loc.pos, &loc.path, e.to_string());
            }
            _ => cx.error(field.node.pos, &field.path, e.to_string()),
        }
        return None;
    }
    Some(all)
}

/// Reports `e` of one condition at the value it names, else at the condition.
fn place(cx: &mut Cx<'_>, e: &RuleError, w: &Written, at: &Loc) {
    let loc = match e {
        RuleError::Value { value, .. } => {
            w.values.iter().find(|(v, _)| v == value).map_or(at, |(_, loc)| loc)
        }
        _ => at,
    };
    cx.error(loc.pos, &loc.path, e.to_string());
}

fn condition(cx: &mut Cx<'_>, node: &Node, path: &str) -> Option<Written> {
    let mut f = cx.map(node, path)?;
    let given: Vec<(&str, Field<'_>)> =
        CONDITION_KEYS.iter().filter_map(|&k| Some((k, f.get(cx, k)?))).collect();
    f.finish(cx, &CONDITION_KEYS, &[]);
    let only_unknown_keys =
        given.is_empty() && matches!(&node.value, Value::Map(e) if !e.is_empty());
    let [(key, field)] = <[_; 1]>::try_from(given).ok().or_else(|| {
        // A map of unknown keys only has been reported as such, with a suggestion.
        if !only_unknown_keys {
            cx.error(
                node.pos,
                path,
                format!("a condition has exactly one of {}", CONDITION_KEYS.join(", ")),
            );
        }
        None
    })?;
    let loc = Loc::of(&field);
    let mut values = Vec::new();
    let condition = match key {
        "host_header" => Condition::HostHeader { values: texts(cx, &field, &mut values)? },
        "path_pattern" => Condition::PathPattern { values: texts(cx, &field, &mut values)? },
        "http_request_method" => {
            Condition::HttpRequestMethod { values: texts(cx, &field, &mut values)? }
        }
        "source_ip" => Condition::SourceIp { values: texts(cx, &field, &mut values)? },
        "http_header" => {
            let mut h = cx.map(field.node, &field.path)?;
            let name =
                h.require(cx, "name", "name the header, like `name: X-Canary`").and_then(|n| {
                    let s = cx.nonempty(n.node, &n.path)?;
                    values.push((s.clone(), Loc::of(&n)));
                    Some(s)
                });
            let list = h
                .require(cx, "values", "add `values: [\"yes\"]` (1-3, wildcards * and ?)")
                .and_then(|v| texts(cx, &v, &mut values));
            h.finish(cx, &["name", "values"], &[]);
            Condition::HttpHeader { name: name?, values: list? }
        }
        _ => Condition::QueryString { values: query_values(cx, &field, &mut values)? },
    };
    Some(Written { condition, loc, values })
}

/// A list of strings (or one string), each remembered with where it is.
fn texts(cx: &mut Cx<'_>, field: &Field<'_>, at: &mut Vec<(String, Loc)>) -> Option<Vec<String>> {
    if let Value::Str(s) = &field.node.value {
        at.push((s.clone(), Loc::of(field)));
        return Some(vec![s.clone()]);
    }
    let items = cx.list(field.node, &field.path)?;
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let path = child_index(&field.path, i);
        match cx.string(item, &path) {
            Some(s) => {
                at.push((s.clone(), Loc::node(item, &path)));
                out.push(s);
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// `query_string: [{ key: version, value: v1 }, { value: "*beta*" }]`.
fn query_values(
    cx: &mut Cx<'_>,
    field: &Field<'_>,
    at: &mut Vec<(String, Loc)>,
) -> Option<Vec<QueryValue>> {
    let items = cx.list(field.node, &field.path)?;
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let path = child_index(&field.path, i);
        let Some(mut q) = cx.map(item, &path) else {
            ok = false;
            continue;
        };
        let key = match q.get(cx, "key") {
            None => Some(None),
            Some(k) => cx.string(k.node, &k.path).map(|s| {
                at.push((s.clone(), Loc::of(&k)));
                Some(s)
            }),
        };
        let value = q
            .require(cx, "value", "add `value: v1` (and optionally `key: version`)")
            .and_then(|v| {
                let s = cx.string(v.node, &v.path)?;
                at.push((s.clone(), Loc::of(&v)));
                Some(s)
            });
        q.finish(cx, &["key", "value"], &[]);
        match (key, value) {
            (Some(key), Some(value)) => out.push(QueryValue { key, value }),
            _ => ok = false,
        }
    }
    ok.then_some(out)
}
