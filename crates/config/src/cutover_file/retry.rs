//! A deployment group's `retry_on_blue`: while production traffic goes to green, a request green
//! fails before any byte of its answer reached the client is sent again to blue, when that is
//! safe (see `routes::Retry`, which carries it to the data plane).

use routes::Retry;
use syntax::decode::{Cx, Field, quote};
use syntax::tree::Value;

use crate::taskdef::optional;

/// Retry on blue, as a deployment group sets it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryOnBlue {
    /// Methods whose requests may be sent twice.
    pub methods: Vec<String>,
    /// The largest request body kept to be sent again.
    pub max_body_bytes: u32,
    /// Envoy's `retry_budget`: retries in flight may be this share of the requests in flight…
    pub budget_percent: u8,
    /// …and never fewer than this many.
    pub min_retry_concurrency: u32,
}

impl Default for RetryOnBlue {
    fn default() -> Self {
        RetryOnBlue::from_retry(Retry::to(""))
    }
}

impl RetryOnBlue {
    fn from_retry(r: Retry) -> RetryOnBlue {
        RetryOnBlue {
            methods: r.methods,
            max_body_bytes: r.max_body_bytes,
            budget_percent: r.budget_percent,
            min_retry_concurrency: r.min_retry_concurrency,
        }
    }

    /// The data plane's retry of a forward whose blue is `blue_target_group`.
    pub fn to(&self, blue_target_group: &str) -> Retry {
        Retry {
            target_group: blue_target_group.to_string(),
            methods: self.methods.clone(),
            max_body_bytes: self.max_body_bytes,
            budget_percent: self.budget_percent,
            min_retry_concurrency: self.min_retry_concurrency,
        }
    }
}

const FIELDS: &[&str] = &["methods", "max_body_bytes", "budget_percent", "min_retry_concurrency"];

/// The most retries in flight a floor may promise.
const MIN_RETRY_CONCURRENCY_MAX: u32 = 100_000;

/// `retry_on_blue: true` (the defaults), `false` (off), or a map of settings (on, with them).
/// `Some(None)`: off.
pub(super) fn retry_on_blue(cx: &mut Cx<'_>, field: &Field<'_>) -> Option<Option<RetryOnBlue>> {
    match field.node.value {
        Value::Bool(on) => return Some(on.then(RetryOnBlue::default)),
        Value::Map(_) => {}
        _ => {
            let expected = format!("true, false or a map of settings ({})", FIELDS.join(", "));
            cx.type_error(field.node, &field.path, &expected);
            return None;
        }
    }
    let mut f = cx.map(field.node, &field.path)?;
    let defaults = RetryOnBlue::default();
    let methods = optional(cx, &mut f, "methods", methods);
    let max_body_bytes = optional(cx, &mut f, "max_body_bytes", |cx, b| {
        cx.u32(
            b.node,
            &b.path,
            0,
            Retry::MAX_BODY_BYTES_LIMIT,
            "the largest body kept for a retry, in bytes,",
        )
    });
    let budget_percent = optional(cx, &mut f, "budget_percent", |cx, p| {
        cx.u32(p.node, &p.path, 0, 100, "a percentage").map(|p| p as u8)
    });
    let min_retry_concurrency = optional(cx, &mut f, "min_retry_concurrency", |cx, m| {
        cx.u32(m.node, &m.path, 0, MIN_RETRY_CONCURRENCY_MAX, "retries in flight")
    });
    f.finish(cx, FIELDS, &[]);
    Some(Some(RetryOnBlue {
        methods: methods?.unwrap_or(defaults.methods),
        max_body_bytes: max_body_bytes?.unwrap_or(defaults.max_body_bytes),
        budget_percent: budget_percent?.unwrap_or(defaults.budget_percent),
        min_retry_concurrency: min_retry_concurrency?.unwrap_or(defaults.min_retry_concurrency),
    }))
}

/// `methods`: uppercase method names, at least one, each once.
fn methods(cx: &mut Cx<'_>, field: &Field<'_>) -> Option<Vec<String>> {
    method_list(cx, field, "to retry nothing, write `retry_on_blue: false`")
}

/// A list of uppercase method names, at least one (`if_empty` says what to write instead),
/// each once.
pub(super) fn method_list(
    cx: &mut Cx<'_>,
    field: &Field<'_>,
    if_empty: &str,
) -> Option<Vec<String>> {
    let items = cx.list(field.node, &field.path)?;
    if items.is_empty() {
        cx.error(
            field.node.pos,
            &field.path,
            format!("name at least one method, like [GET, HEAD]; {if_empty}"),
        );
        return None;
    }
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let path = syntax::tree::child_index(&field.path, i);
        let Some(method) = cx.string(item, &path) else {
            ok = false;
            continue;
        };
        let problem = if !Retry::is_valid_method(&method) {
            let upper = method.to_ascii_uppercase();
            Some(if Retry::is_valid_method(&upper) {
                format!("write methods in uppercase, as HTTP sends them: {upper}")
            } else {
                format!("{} is not an HTTP method name, like GET", quote(&method))
            })
        } else if out.contains(&method) {
            Some(format!("{method} is listed twice"))
        } else {
            None
        };
        match problem {
            Some(problem) => {
                cx.error(item.pos, &path, problem);
                ok = false;
            }
            None => out.push(method),
        }
    }
    ok.then_some(out)
}
