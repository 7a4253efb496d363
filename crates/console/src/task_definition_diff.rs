//! What changed between two revisions of a task definition, field by field, as people compare
//! them: a container by its name, an environment variable or secret by its name, a port mapping
//! by its container port and protocol, a command as one line — so moving an entry within a list
//! is no change, and a changed image reads `containerDefinitions[web].image`. Pure.

use std::collections::BTreeMap;

use serde_json::Value;

/// One field that differs: absent before (added), absent after (removed), or changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub field: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

/// What ECS writes with every registration (or status change) and never differs by choice.
const BOOKKEEPING: &[&str] = &[
    "revision",
    "taskDefinitionArn",
    "registeredAt",
    "registeredBy",
    "deregisteredAt",
    "status",
    "requiresAttributes",
    "compatibilities",
];

/// Every field of `before` and `after` whose value differs, in field order.
pub fn diff(before: &Value, after: &Value) -> Vec<Change> {
    let (before, after) = (flatten(before), flatten(after));
    let fields: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    fields
        .into_iter()
        .filter(|f| before.get(*f) != after.get(*f))
        .map(|f| Change {
            field: f.clone(),
            before: before.get(f).cloned(),
            after: after.get(f).cloned(),
        })
        .collect()
}

/// The task definition as `field → value` lines.
fn flatten(body: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Value::Object(fields) = body {
        for (key, value) in fields.iter().filter(|(k, _)| !BOOKKEEPING.contains(&k.as_str())) {
            walk(key, value, &mut out);
        }
    }
    out
}

fn walk(path: &str, value: &Value, out: &mut BTreeMap<String, String>) {
    match value {
        Value::Object(fields) => {
            for (key, value) in fields {
                walk(&format!("{path}.{key}"), value, out);
            }
        }
        Value::Array(items) if items.iter().all(|i| !i.is_object() && !i.is_array()) => {
            // A command, an entry point, DNS servers: one value, in order.
            out.insert(path.to_string(), Value::Array(items.clone()).to_string());
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let (key, value) = keyed(item);
                let key = key.unwrap_or_else(|| i.to_string());
                match value {
                    Some(value) => {
                        out.insert(format!("{path}[{key}]"), value);
                    }
                    None => walk(&format!("{path}[{key}]"), item, out),
                }
            }
        }
        Value::String(text) => {
            out.insert(path.to_string(), text.clone());
        }
        other => {
            out.insert(path.to_string(), other.to_string());
        }
    }
}

/// The key an entry of a list is known by, and its whole value when it is one line: a
/// `{name, value}` pair (environment) or `{name, valueFrom}` (secret) is its value; a port mapping
/// is keyed by `containerPort/protocol` and reads `host hostPort`; anything else with a `name`
/// (a container, a volume) is keyed by it and walked.
fn keyed(item: &Value) -> (Option<String>, Option<String>) {
    let text =
        |key: &str| item.get(key).map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string));
    let Value::Object(fields) = item else { return (None, None) };
    if let Some(port) = text("containerPort") {
        let protocol = text("protocol").unwrap_or_else(|| "tcp".into());
        let rest: serde_json::Map<String, Value> = fields
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "containerPort" | "protocol"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        return (Some(format!("{port}/{protocol}")), Some(Value::Object(rest).to_string()));
    }
    let name = text("name");
    if name.is_some()
        && fields.len() == 2
        && let Some(value) = text("value").or_else(|| text("valueFrom"))
    {
        return (name, Some(value));
    }
    (name, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn revision(image: &str, env: Value, ports: Value, command: Value) -> Value {
        json!({
            "family": "web", "revision": 3, "status": "ACTIVE", "cpu": "256",
            "taskDefinitionArn": "arn:aws:ecs:local:000000000000:task-definition/web:3",
            "containerDefinitions": [
                { "name": "sidecar", "image": "envoy:1" },
                { "name": "web", "image": image, "environment": env, "portMappings": ports,
                  "command": command, "essential": true }
            ]
        })
    }

    fn change(field: &str, before: Option<&str>, after: Option<&str>) -> Change {
        Change { field: field.into(), before: before.map(Into::into), after: after.map(Into::into) }
    }

    #[test]
    fn the_diff_names_the_image_environment_ports_and_command_that_changed() {
        let before = revision(
            "web:v1",
            json!([{"name": "APP_VERSION", "value": "v1"}, {"name": "MODE", "value": "prod"}]),
            json!([{"containerPort": 8080, "hostPort": 8080, "protocol": "tcp"}]),
            json!(["cutover-demo-app"]),
        );
        let mut after = revision(
            "web:v2",
            json!([{"name": "MODE", "value": "prod"}, {"name": "APP_VERSION", "value": "v2"},
                   {"name": "DEBUG", "value": "1"}]),
            json!([{"containerPort": 8080, "hostPort": 9090, "protocol": "tcp"},
                   {"containerPort": 9901, "protocol": "tcp"}]),
            json!(["cutover-demo-app", "--verbose"]),
        );
        after["revision"] = json!(4);
        after["taskDefinitionArn"] = json!("arn:aws:ecs:local:000000000000:task-definition/web:4");
        let c = "containerDefinitions[web]";
        assert_eq!(
            diff(&before, &after),
            [
                change(
                    &format!("{c}.command"),
                    Some(r#"["cutover-demo-app"]"#),
                    Some(r#"["cutover-demo-app","--verbose"]"#)
                ),
                change(&format!("{c}.environment[APP_VERSION]"), Some("v1"), Some("v2")),
                change(&format!("{c}.environment[DEBUG]"), None, Some("1")),
                change(&format!("{c}.image"), Some("web:v1"), Some("web:v2")),
                change(
                    &format!("{c}.portMappings[8080/tcp]"),
                    Some(r#"{"hostPort":8080}"#),
                    Some(r#"{"hostPort":9090}"#)
                ),
                change(&format!("{c}.portMappings[9901/tcp]"), None, Some("{}")),
            ],
            "the environment's order, the revision and the ARN are no change"
        );
    }

    #[test]
    fn a_container_added_or_removed_shows_each_of_its_fields_and_equal_revisions_show_none() {
        let one = json!({"family": "web", "containerDefinitions": [{"name": "web", "image": "a"}]});
        let two = json!({"family": "web", "containerDefinitions": [
            {"name": "web", "image": "a"}, {"name": "log", "image": "fluentbit", "secrets": [
                {"name": "TOKEN", "valueFrom": "/ssm/token"}]}]});
        assert_eq!(
            diff(&one, &two),
            [
                change("containerDefinitions[log].image", None, Some("fluentbit")),
                change("containerDefinitions[log].name", None, Some("log")),
                change("containerDefinitions[log].secrets[TOKEN]", None, Some("/ssm/token")),
            ]
        );
        assert_eq!(diff(&two, &two), []);
    }
}
