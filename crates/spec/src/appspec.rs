//! CodeDeploy AppSpec files for ECS (`appspec.yaml` or `appspec.json`): which task definition to
//! deploy, which container and port take the traffic, and the lifecycle hooks. Keys are matched
//! ignoring case, as aws-cli and the GitHub deploy action do.

use std::collections::BTreeMap;
use std::fmt;

use model::LifecycleEvent;

use crate::decode::{Cx, Field, quote};
use crate::diag::{Diagnostic, Errors, Parsed, Pos, suggest};
use crate::taskdef::{TaskDefinition, optional};
use crate::tree::{self, Node, Syntax, Value, child_index, child_key};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppSpec {
    pub task_definition: TaskDefinitionRef,
    pub container_name: String,
    /// The port traffic goes to. 0 when the file still holds a placeholder such as
    /// `"<CONTAINER_PORT>"` (a template that CI fills in); the parse reports that with a note and
    /// [`check_appspec_against`] refuses it.
    pub container_port: u16,
    pub platform_version: Option<String>,
    pub hooks: BTreeMap<LifecycleEvent, String>,
}

/// The `TaskDefinition` of an AppSpec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskDefinitionRef {
    /// `family:3`, or an ECS or cutover ARN with a revision.
    Revision { family: String, revision: u32 },
    /// `family` alone: the latest active revision.
    Latest { family: String },
    /// `<TASK_DEFINITION>` (any `<UPPER_SNAKE>`): filled in by a pipeline with the revision it
    /// registers.
    Placeholder(String),
}

/// Why a text does not name a task definition; each message says how to write one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TaskDefinitionRefError {
    #[error(
        "{} is not a task-definition ARN; it should look like arn:aws:ecs:<region>:<account>:task-definition/<family>:<revision>",
        quote(.0)
    )]
    NotAnArn(String),
    #[error(
        "{} is not a task definition: write `family:revision` (web:3), `family` for the latest revision, an ARN, or a placeholder like <TASK_DEFINITION>; a family is 1 to 255 letters, digits, `-` and `_`",
        quote(.0)
    )]
    NotATaskDefinition(String),
    #[error(
        "the ARN {} has no revision; add `:<revision>`, or write just `{family}` for the latest revision",
        quote(.text)
    )]
    ArnWithoutRevision { text: String, family: String },
    #[error("{} names no revision; write just `{family}` for the latest revision", quote(.text))]
    LatestRevision { text: String, family: String },
    #[error(
        "revision {} in {} is not a whole number from 1 (revisions count from 1)",
        quote(.revision),
        quote(.text)
    )]
    BadRevision { revision: String, text: String },
}

impl TaskDefinitionRef {
    /// cutover's ARN for a revision: `arn:cutover:ecs:task-definition/{family}:{revision}`.
    pub fn arn(family: &str, revision: u32) -> String {
        format!("arn:cutover:ecs:task-definition/{family}:{revision}")
    }

    /// Reads `family:3`, `family`, `arn:aws:ecs:<region>:<account>:task-definition/family:3`,
    /// `arn:cutover:ecs:task-definition/family:3` or `<TASK_DEFINITION>`.
    pub fn parse(text: &str) -> Result<TaskDefinitionRef, TaskDefinitionRefError> {
        let text = text.trim();
        if is_placeholder(text) {
            return Ok(TaskDefinitionRef::Placeholder(text.to_string()));
        }
        let arn_resource = if let Some(rest) = text.strip_prefix("arn:cutover:ecs:") {
            Some(rest)
        } else if let Some(rest) = text.strip_prefix("arn:") {
            // arn:<partition>:ecs:<region>:<account>:task-definition/<family>:<revision>
            match rest.splitn(5, ':').collect::<Vec<_>>().as_slice() {
                [_partition, "ecs", _region, _account, resource] => Some(*resource),
                _ => Some(""),
            }
        } else {
            None
        };
        let is_arn = arn_resource.is_some();
        let reference = match arn_resource.map(|r| r.strip_prefix("task-definition/")) {
            None => text,
            Some(Some(reference)) => reference,
            Some(None) => return Err(TaskDefinitionRefError::NotAnArn(text.to_string())),
        };
        let (family, revision) = match reference.split_once(':') {
            Some((family, revision)) => (family, Some(revision)),
            None => (reference, None),
        };
        if !is_family(family) {
            return Err(TaskDefinitionRefError::NotATaskDefinition(text.to_string()));
        }
        let (text, family) = (text.to_string(), family.to_string());
        match revision {
            None if is_arn => Err(TaskDefinitionRefError::ArnWithoutRevision { text, family }),
            None => Ok(TaskDefinitionRef::Latest { family }),
            Some(r) if r.eq_ignore_ascii_case("latest") => {
                Err(TaskDefinitionRefError::LatestRevision { text, family })
            }
            Some(r) => match r.parse::<u32>() {
                Ok(revision) if revision >= 1 && r.bytes().all(|b| b.is_ascii_digit()) => {
                    Ok(TaskDefinitionRef::Revision { family, revision })
                }
                _ => Err(TaskDefinitionRefError::BadRevision { revision: r.to_string(), text }),
            },
        }
    }

    /// The family named, unless this is a placeholder.
    pub fn family(&self) -> Option<&str> {
        match self {
            TaskDefinitionRef::Revision { family, .. } | TaskDefinitionRef::Latest { family } => {
                Some(family)
            }
            TaskDefinitionRef::Placeholder(_) => None,
        }
    }
}

impl fmt::Display for TaskDefinitionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskDefinitionRef::Revision { family, revision } => write!(f, "{family}:{revision}"),
            TaskDefinitionRef::Latest { family } => f.write_str(family),
            TaskDefinitionRef::Placeholder(p) => f.write_str(p),
        }
    }
}

/// `<UPPER_SNAKE>`, the placeholder convention of CodePipeline templates.
pub(crate) fn is_placeholder(s: &str) -> bool {
    s.strip_prefix('<').and_then(|s| s.strip_suffix('>')).is_some_and(|inner| {
        inner.starts_with(|c: char| c.is_ascii_uppercase())
            && inner.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    })
}

fn is_family(s: &str) -> bool {
    (1..=255).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

const TOP_FIELDS: &[&str] = &["version", "Resources", "Hooks"];
const RESOURCE_FIELDS: &[&str] = &["Type", "Properties"];
const PROPERTY_FIELDS: &[&str] = &["TaskDefinition", "LoadBalancerInfo", "PlatformVersion"];
const PROPERTY_IGNORED: &[(&str, &str)] = &[
    (
        "NetworkConfiguration",
        "cutover gives every task its own address; there are no subnets or security groups",
    ),
    (
        "CapacityProviderStrategy",
        "cutover runs tasks on this machine; there are no capacity providers",
    ),
];
const LB_FIELDS: &[&str] = &["ContainerName", "ContainerPort"];

/// Parses and checks an AppSpec for ECS, YAML or JSON.
pub fn parse_appspec(file: &str, text: &str) -> Result<Parsed<AppSpec>, Errors> {
    let doc = tree::parse(file, text, Syntax::JsonOrYaml)?;
    let mut cx = Cx::new(file, doc.format);
    cx.ignore_case = true;
    let spec = appspec(&mut cx, &doc.root);
    cx.finish(spec)
}

fn appspec(cx: &mut Cx<'_>, root: &Node) -> Option<AppSpec> {
    let mut f = cx.map(root, "")?;
    match f.get(cx, "version") {
        None => cx.note(
            root.pos,
            "version",
            "no `version`; read as AppSpec version 0.0, the only one (add `version: 0.0`)",
        ),
        Some(v) => {
            let ok = match &v.node.value {
                Value::Float(x) => *x == 0.0,
                Value::Int(0) => true,
                Value::Str(s) => s.trim() == "0.0",
                _ => false,
            };
            if !ok {
                cx.error(
                    v.node.pos,
                    &v.path,
                    format!(
                        "found {}; the AppSpec version must be 0.0, the only one",
                        cx.describe(v.node)
                    ),
                );
            }
        }
    }
    let resource = f
        .require(
            cx,
            "Resources",
            "add `Resources:` with one `TargetService:` of Type AWS::ECS::Service",
        )
        .and_then(|fl| resources(cx, &fl));
    let hooks = optional(cx, &mut f, "Hooks", hooks);
    f.finish(cx, TOP_FIELDS, &[]);
    let (task_definition, container_name, container_port, platform_version) = resource?;
    Some(AppSpec {
        task_definition,
        container_name,
        container_port,
        platform_version,
        hooks: hooks?.unwrap_or_default(),
    })
}

type Resource = (TaskDefinitionRef, String, u16, Option<String>);

fn resources(cx: &mut Cx<'_>, fl: &Field<'_>) -> Option<Resource> {
    let items = cx.list(fl.node, &fl.path)?;
    let Some(first) = items.first() else {
        cx.error(
            fl.node.pos,
            &fl.path,
            "no resources; add one `TargetService:` of Type AWS::ECS::Service",
        );
        return None;
    };
    if let Some(second) = items.get(1) {
        cx.error(
            second.pos,
            &child_index(&fl.path, 1),
            "a second resource; an ECS AppSpec deploys exactly one AWS::ECS::Service, remove the \
             others",
        );
    }
    let path = child_index(&fl.path, 0);
    let entries = match &first.value {
        Value::Map(entries) if entries.len() == 1 => entries,
        _ => {
            cx.error(
                first.pos,
                &path,
                "each resource is a map with one key, its name (like `TargetService:`), holding \
                 Type and Properties",
            );
            return None;
        }
    };
    let entry = &entries[0];
    let body_path = child_key(&path, &entry.key);
    let mut body = cx.map(&entry.value, &body_path)?;
    if let Some(t) = body.require(cx, "Type", "add `Type: AWS::ECS::Service`") {
        let ty = cx.str(t.node, &t.path);
        if let Some(ty) = ty
            && ty != "AWS::ECS::Service"
        {
            cx.error(
                t.node.pos,
                &t.path,
                format!(
                    "Type {} is not supported; cutover deploys ECS services: write \
                     AWS::ECS::Service",
                    quote(ty)
                ),
            );
        }
    }
    let properties = body
        .require(cx, "Properties", "add `Properties:` with TaskDefinition and LoadBalancerInfo")
        .and_then(|p| properties(cx, &p));
    body.finish(cx, RESOURCE_FIELDS, &[]);
    properties
}

fn properties(cx: &mut Cx<'_>, fl: &Field<'_>) -> Option<Resource> {
    let mut f = cx.map(fl.node, &fl.path)?;
    let task_definition = f
        .require(
            cx,
            "TaskDefinition",
            "add `TaskDefinition: family:revision` (or <TASK_DEFINITION>)",
        )
        .and_then(|t| task_definition(cx, &t));
    let lb = f
        .require(
            cx,
            "LoadBalancerInfo",
            "add `LoadBalancerInfo:` with ContainerName and ContainerPort",
        )
        .and_then(|l| load_balancer_info(cx, &l));
    let platform_version = optional(cx, &mut f, "PlatformVersion", |cx, p| {
        let s = cx.string(p.node, &p.path)?;
        if s != "LATEST" {
            cx.note(p.node.pos, &p.path, "kept, but cutover has no Fargate platform versions");
        }
        Some(s)
    });
    f.finish(cx, PROPERTY_FIELDS, PROPERTY_IGNORED);
    let (container_name, container_port) = lb?;
    Some((task_definition?, container_name, container_port, platform_version?))
}

fn task_definition(cx: &mut Cx<'_>, fl: &Field<'_>) -> Option<TaskDefinitionRef> {
    let s = cx.str(fl.node, &fl.path)?;
    match TaskDefinitionRef::parse(s) {
        Ok(r) => {
            if s.starts_with("arn:aws") {
                cx.note(
                    fl.node.pos,
                    &fl.path,
                    "the region and account of this AWS ARN are ignored; cutover looks up \
                     `family:revision` in its own registry",
                );
            } else if let TaskDefinitionRef::Latest { family } = &r
                && family.len() > 1
                && family.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
            {
                cx.note(
                    fl.node.pos,
                    &fl.path,
                    format!(
                        "`{family}` is read as a task-definition family; if it is meant as a \
                         placeholder, write it as <{family}>"
                    ),
                );
            }
            Some(r)
        }
        Err(err) => {
            cx.error(fl.node.pos, &fl.path, err.to_string());
            None
        }
    }
}

fn load_balancer_info(cx: &mut Cx<'_>, fl: &Field<'_>) -> Option<(String, u16)> {
    let mut f = cx.map(fl.node, &fl.path)?;
    let name = f
        .require(
            cx,
            "ContainerName",
            "name the container of the task definition that takes the traffic",
        )
        .and_then(|n| {
            let s = cx.nonempty(n.node, &n.path)?;
            if is_placeholder(&s) {
                cx.note(
                    n.node.pos,
                    &n.path,
                    format!(
                        "{s} is a placeholder; replace it with the container name before deploying"
                    ),
                );
            }
            Some(s)
        });
    let port = f
        .require(cx, "ContainerPort", "add the port the container listens on, as a number")
        .and_then(|p| container_port(cx, &p));
    f.finish(cx, LB_FIELDS, &[]);
    Some((name?, port?))
}

fn container_port(cx: &mut Cx<'_>, fl: &Field<'_>) -> Option<u16> {
    if let Value::Str(s) = &fl.node.value {
        if is_placeholder(s) {
            cx.note(
                fl.node.pos,
                &fl.path,
                format!("{s} is a placeholder; replace it with the port number before deploying"),
            );
            return Some(0);
        }
        // Templates filled in with `sed` leave the port quoted; AWS takes it.
        if let Ok(port) = s.trim().parse::<u16>()
            && port >= 1
        {
            cx.note(
                fl.node.pos,
                &fl.path,
                format!(
                    "ContainerPort is the string {}; accepted, but write it as a number: {port}",
                    quote(s)
                ),
            );
            return Some(port);
        }
    }
    cx.port(fl.node, &fl.path)
}

fn hooks(cx: &mut Cx<'_>, fl: &Field<'_>) -> Option<BTreeMap<LifecycleEvent, String>> {
    if let Value::Map(_) = fl.node.value {
        cx.error(
            fl.node.pos,
            &fl.path,
            format!(
                "expected {}, found {}; Hooks is a list of one-entry maps, like `- BeforeInstall: \
                 my-hook`",
                cx.list_word(),
                cx.map_word()
            ),
        );
        return None;
    }
    let items = cx.list(fl.node, &fl.path)?;
    let mut out: BTreeMap<LifecycleEvent, String> = BTreeMap::new();
    let mut first_line: BTreeMap<LifecycleEvent, u32> = BTreeMap::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let path = child_index(&fl.path, i);
        let entry = match &item.value {
            Value::Map(entries) if entries.len() == 1 => &entries[0],
            _ => {
                cx.error(
                    item.pos,
                    &path,
                    "each hook is a one-entry map from an event to a hook name, like `- \
                     AfterAllowTestTraffic: smoke-test`",
                );
                ok = false;
                continue;
            }
        };
        let key_path = child_key(&path, &entry.key);
        let Some(event) = hook_event(cx, &entry.key, entry.key_pos, &key_path) else {
            ok = false;
            continue;
        };
        let Some(name) = cx.nonempty(&entry.value, &key_path) else {
            ok = false;
            continue;
        };
        if let Some(line) = first_line.get(&event) {
            cx.error(
                entry.key_pos,
                &key_path,
                format!(
                    "a second hook for {event} (the first is on line {line}); one hook per event"
                ),
            );
            ok = false;
            continue;
        }
        first_line.insert(event, entry.key_pos.line());
        out.insert(event, name);
    }
    ok.then_some(out)
}

/// A hookable lifecycle event by name (ignoring case), or an error that lists them.
pub(crate) fn hook_event(
    cx: &mut Cx<'_>,
    key: &str,
    pos: Pos,
    path: &str,
) -> Option<LifecycleEvent> {
    let hookable: Vec<&str> = LifecycleEvent::HOOKABLE.iter().map(|e| e.as_str()).collect();
    let event = LifecycleEvent::ALL.into_iter().find(|e| e.as_str().eq_ignore_ascii_case(key));
    match event {
        Some(e) if e.is_hookable() => Some(e),
        Some(e) => {
            cx.error(
                pos,
                path,
                format!(
                    "{e} is run by cutover itself and takes no hook; hooks run at {}",
                    hookable.join(", ")
                ),
            );
            None
        }
        None => {
            let mut message = format!("`{key}` is not a lifecycle event");
            match suggest(key, hookable.iter().copied()) {
                Some(s) => message.push_str(&format!("; did you mean `{s}`?")),
                None => message.push_str(&format!("; hooks run at {}", hookable.join(", "))),
            }
            cx.error(pos, path, message);
            None
        }
    }
}

/// Checks an AppSpec against the task definition it will deploy: the container exists and
/// `ContainerPort` is one of its `containerPort` mappings. Errors point at the AppSpec's
/// `LoadBalancerInfo` fields.
///
/// The AppSpec's `TaskDefinition` is deliberately not compared with `td`: like aws-cli and the
/// GitHub deploy action, a deploy that is given a task definition replaces that value with the
/// revision it registers.
pub fn check_appspec_against(
    appspec_file: &str,
    appspec_text: &str,
    appspec: &AppSpec,
    td: &TaskDefinition,
) -> Result<(), Errors> {
    let at = |field: &str| locate_lb_field(appspec_text, field);
    let mut errors = Vec::new();
    let names: Vec<&str> = td.container_definitions.iter().map(|c| c.name.as_str()).collect();
    match td.container(&appspec.container_name) {
        None => {
            let (pos, path) = at("ContainerName");
            let mut message = format!(
                "task definition `{}` has no container named `{}`",
                td.family, appspec.container_name
            );
            if is_placeholder(&appspec.container_name) {
                message.push_str(" (the placeholder was not replaced)");
            }
            match suggest(&appspec.container_name, names.iter().copied()) {
                Some(s) => message.push_str(&format!("; did you mean `{s}`?")),
                None => message.push_str(&format!("; its containers are: {}", names.join(", "))),
            }
            errors.push(Diagnostic::error(appspec_file, pos, &path, message));
        }
        Some(container) => {
            let ports: Vec<String> =
                container.port_mappings.iter().map(|m| m.container_port.to_string()).collect();
            let mapped =
                container.port_mappings.iter().any(|m| m.container_port == appspec.container_port);
            if !mapped {
                let (pos, path) = at("ContainerPort");
                let what = if appspec.container_port == 0 {
                    "ContainerPort is still a placeholder".to_string()
                } else {
                    format!(
                        "container `{}` does not map port {}",
                        container.name, appspec.container_port
                    )
                };
                let advice = if ports.is_empty() {
                    format!(
                        "; it has no portMappings: add {{ \"containerPort\": {} }} to it in the \
                         task definition",
                        if appspec.container_port == 0 {
                            "<port>".to_string()
                        } else {
                            appspec.container_port.to_string()
                        }
                    )
                } else {
                    format!("; use one of its containerPorts: {}", ports.join(", "))
                };
                errors.push(Diagnostic::error(appspec_file, pos, &path, what + &advice));
            }
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(Errors(errors)) }
}

/// The position and path of `Properties.LoadBalancerInfo.<field>` in an AppSpec's text; unknown
/// when the text does not parse (the caller passed text that does not match the parsed value),
/// the start of the file.
fn locate_lb_field(text: &str, field: &str) -> (Pos, String) {
    locate(text, &["Properties", "LoadBalancerInfo", field])
}

fn locate(text: &str, keys: &[&str]) -> (Pos, String) {
    let fallback = || {
        let mut path = "Resources[0].TargetService".to_string();
        for k in keys {
            path = child_key(&path, k);
        }
        (Pos::START, path)
    };
    let Ok(doc) = tree::parse("", text, Syntax::JsonOrYaml) else { return fallback() };
    let Some(resources) = doc
        .root
        .entries()
        .and_then(|entries| entries.iter().find(|e| e.key.eq_ignore_ascii_case("Resources")))
    else {
        return fallback();
    };
    let Value::Seq(items) = &resources.value.value else { return fallback() };
    let Some(resource) = items.first().and_then(Node::entries).and_then(|e| e.first()) else {
        return fallback();
    };
    let mut path = child_key(&child_index(&resources.key, 0), &resource.key);
    let mut node = &resource.value;
    let mut pos = node.pos;
    for key in keys {
        let Some(entry) = node
            .entries()
            .and_then(|entries| entries.iter().find(|e| e.key.eq_ignore_ascii_case(key)))
        else {
            return (pos, child_key(&path, key));
        };
        path = child_key(&path, &entry.key);
        node = &entry.value;
        pos = node.pos;
    }
    (pos, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_definition_references() {
        let parse = |s| TaskDefinitionRef::parse(s);
        let rev =
            |f: &str, r| Ok(TaskDefinitionRef::Revision { family: f.to_string(), revision: r });
        assert_eq!(parse("web:3"), rev("web", 3));
        assert_eq!(parse("web"), Ok(TaskDefinitionRef::Latest { family: "web".into() }));
        assert_eq!(parse("arn:aws:ecs:us-east-1:123:task-definition/web:3"), rev("web", 3));
        assert_eq!(parse("arn:cutover:ecs:task-definition/web:3"), rev("web", 3));
        assert_eq!(
            parse("<TASK_DEFINITION>"),
            Ok(TaskDefinitionRef::Placeholder("<TASK_DEFINITION>".into()))
        );
        assert!(
            parse("arn:aws:ecs:us-east-1:123:task-definition/web")
                .unwrap_err()
                .to_string()
                .contains("no revision")
        );
        assert!(parse("web:0").unwrap_err().to_string().contains("from 1"));
        assert!(parse("web:*").is_err());
        assert!(parse("my web").is_err());
        let arn = TaskDefinitionRef::arn("web", 3);
        assert_eq!(parse(&arn), rev("web", 3));
    }
}
