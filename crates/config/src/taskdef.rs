//! ECS task definitions (`taskdef.json`): the subset of the ECS JSON that runs a container,
//! checked with ECS's rules. Fields ECS has but cutover does not use are accepted with a note,
//! so files written for AWS load unchanged; anything else is a typo and an error.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use syntax::decode::{Cx, Field, quote};
use syntax::diag::{Errors, Parsed, Pos, suggest};
use syntax::tree::{self, Node, Syntax, Value, child_index, child_key};

/// A task definition. Its serde form is ECS's JSON form, so it can be stored and shown as is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskDefinition {
    pub family: String,
    pub container_definitions: Vec<ContainerDefinition>,
    /// Task-level CPU units as ECS writes them: `"256"` or `"1 vCPU"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// Task-level memory as ECS writes it: `"512"` (MiB) or `"2 GB"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// ECS `memberOf` constraints on node attributes; the swarm runtime places by them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement_constraints: Vec<PlacementConstraint>,
}

/// An ECS placement constraint, as ECS writes it: `{"type": "memberOf", "expression":
/// "attribute:zone == b"}`. cutover reads the cluster-query form that names one node attribute
/// (`attribute:NAME == VALUE` or `!=`), which is a node label on a swarm.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementConstraint {
    #[serde(rename = "type")]
    pub kind: String,
    pub expression: String,
}

impl PlacementConstraint {
    /// The Swarm constraint: `node.labels.NAME==VALUE` (or `!=`). Parsing accepted the form.
    pub fn swarm_constraint(&self) -> Option<String> {
        let (name, equal, value) = member_of(&self.expression).ok()?;
        Some(format!("node.labels.{name}{}{value}", if equal { "==" } else { "!=" }))
    }
}

/// `attribute:NAME == VALUE` or `attribute:NAME != VALUE`, as (name, equal, value); `Err` says
/// what cannot be read.
fn member_of(expression: &str) -> Result<(&str, bool, &str), String> {
    let (left, equal, right) = match (expression.split_once("=="), expression.split_once("!=")) {
        (Some((l, r)), None) => (l, true, r),
        (None, Some((l, r))) => (l, false, r),
        _ => {
            return Err("cutover reads `attribute:NAME == VALUE` or `attribute:NAME != VALUE` \
                        (one node attribute; ECS's `in`, `=~`, `and`, `or` and `task:group` are \
                        not supported)"
                .into());
        }
    };
    let name = left.trim().strip_prefix("attribute:").map(str::trim).unwrap_or("");
    let value = right.trim();
    let valid = |s: &str| {
        !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    if !valid(name) || !valid(value) {
        return Err("write `attribute:NAME == VALUE` with a node attribute name and value of \
                    letters, digits, `-`, `_` and `.`"
            .into());
    }
    Ok((name, equal, value))
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerDefinition {
    pub name: String,
    pub image: String,
    #[serde(default = "default_true")]
    pub essential: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entry_point: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment: Vec<KeyValuePair>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_directory: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_mappings: Vec<PortMapping>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<ContainerHealthCheck>,
    /// Seconds between SIGTERM and SIGKILL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<u32>,
    /// Hard limit, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u32>,
    /// Soft limit, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_reservation: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<ContainerDependency>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub docker_labels: BTreeMap<String, String>,
}

fn default_true() -> bool {
    true
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValuePair {
    pub name: String,
    #[serde(default)]
    pub value: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub container_port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    #[serde(default = "default_protocol")]
    pub protocol: String,
}

fn default_protocol() -> String {
    "tcp".to_string()
}

/// A container health check (ECS's `healthCheck`), times in seconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerHealthCheck {
    /// `["CMD", "prog", "arg"…]` or `["CMD-SHELL", "shell command"]`.
    pub command: Vec<String>,
    #[serde(default = "default_interval")]
    pub interval: u32,
    #[serde(default = "default_timeout")]
    pub timeout: u32,
    #[serde(default = "default_retries")]
    pub retries: u32,
    #[serde(default)]
    pub start_period: u32,
}

fn default_interval() -> u32 {
    30
}
fn default_timeout() -> u32 {
    5
}
fn default_retries() -> u32 {
    3
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerDependency {
    pub container_name: String,
    pub condition: DependencyCondition,
}

/// When a container may start relative to the one it depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DependencyCondition {
    /// The dependency has started.
    Start,
    /// The dependency has exited (any code). Not allowed on an essential container.
    Complete,
    /// The dependency has exited with code 0. Not allowed on an essential container.
    Success,
    /// The dependency's health check passed; it must have one.
    Healthy,
}

impl DependencyCondition {
    pub fn as_str(self) -> &'static str {
        match self {
            DependencyCondition::Start => "START",
            DependencyCondition::Complete => "COMPLETE",
            DependencyCondition::Success => "SUCCESS",
            DependencyCondition::Healthy => "HEALTHY",
        }
    }
}

impl TaskDefinition {
    pub fn container(&self, name: &str) -> Option<&ContainerDefinition> {
        self.container_definitions.iter().find(|c| c.name == name)
    }

    /// The ECS JSON form, indented, as stored and shown.
    pub fn to_json_pretty(&self) -> String {
        // Plain structs and string-keyed maps: serialization cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// Replaces `<IMAGE1_NAME>`-style placeholders in `image` fields, as CodePipeline's
/// `CodeDeployToECS` action does with an `imageDetail.json`'s `ImageURI`. `placeholder` may be
/// given with or without the angle brackets (`IMAGE1_NAME` or `<IMAGE1_NAME>`). Returns how many
/// image fields changed.
pub fn substitute_image_placeholder(
    td: &mut TaskDefinition,
    placeholder: &str,
    image_uri: &str,
) -> usize {
    let bare = placeholder.trim_start_matches('<').trim_end_matches('>');
    if bare.is_empty() {
        return 0;
    }
    let token = format!("<{bare}>");
    let mut changed = 0;
    for container in &mut td.container_definitions {
        if container.image.contains(&token) {
            container.image = container.image.replace(&token, image_uri);
            changed += 1;
        }
    }
    changed
}

// ---------------------------------------------------------------------------------------------
// Parsing.

const MAX_CONTAINERS: usize = 10;

const TASK_FIELDS: &[&str] =
    &["family", "containerDefinitions", "cpu", "memory", "placementConstraints"];

const DESCRIBE_ONLY: &str = "describe-only field written by ECS; cutover numbers revisions itself";
const NO_IAM: &str = "cutover does not use IAM roles";
const NO_VOLUMES: &str = "cutover does not mount volumes into tasks yet";
const NOT_SUPPORTED: &str = "not supported by cutover's runtimes yet";

const TASK_IGNORED: &[(&str, &str)] = &[
    ("taskRoleArn", NO_IAM),
    ("executionRoleArn", NO_IAM),
    ("networkMode", "cutover gives every task its own address, as awsvpc does"),
    (
        "requiresCompatibilities",
        "cutover runs tasks with its own runtime (process or docker), not EC2 or Fargate",
    ),
    ("runtimePlatform", "tasks run on this machine's own OS and CPU"),
    ("volumes", NO_VOLUMES),
    ("tags", "cutover does not tag task definitions"),
    ("pidMode", NOT_SUPPORTED),
    ("ipcMode", NOT_SUPPORTED),
    ("proxyConfiguration", "cutover has no service-mesh proxy"),
    ("inferenceAccelerators", "cutover has no accelerators to attach"),
    ("ephemeralStorage", "tasks use this machine's disk"),
    ("enableFaultInjection", "cutover has no fault injection"),
    ("compatibilities", DESCRIBE_ONLY),
    ("taskDefinitionArn", DESCRIBE_ONLY),
    ("revision", DESCRIBE_ONLY),
    ("status", DESCRIBE_ONLY),
    ("requiresAttributes", DESCRIBE_ONLY),
    ("registeredAt", DESCRIBE_ONLY),
    ("registeredBy", DESCRIBE_ONLY),
    ("deregisteredAt", DESCRIBE_ONLY),
];

const CONTAINER_FIELDS: &[&str] = &[
    "name",
    "image",
    "essential",
    "command",
    "entryPoint",
    "environment",
    "workingDirectory",
    "portMappings",
    "healthCheck",
    "stopTimeout",
    "cpu",
    "memory",
    "memoryReservation",
    "dependsOn",
    "dockerLabels",
];

const CONTAINER_IGNORED: &[(&str, &str)] = &[
    ("logConfiguration", "cutover keeps task output in its own log files"),
    (
        "secrets",
        "cutover has no secrets store yet, so these variables are not set; use `environment`",
    ),
    ("repositoryCredentials", "images are pulled with the local Docker credentials"),
    ("environmentFiles", "cutover does not read environment files from S3; use `environment`"),
    ("mountPoints", NO_VOLUMES),
    ("volumesFrom", NO_VOLUMES),
    ("links", "legacy Docker links; tasks reach each other by address"),
    ("startTimeout", "cutover does not time out `dependsOn` waits yet"),
    ("versionConsistency", "cutover runs the image reference as written"),
    ("restartPolicy", "cutover replaces a failed task rather than restarting its containers"),
    ("resourceRequirements", "cutover has no GPUs or accelerators to assign"),
    ("firelensConfiguration", "cutover keeps task output in its own log files"),
    ("credentialSpecs", NOT_SUPPORTED),
    ("linuxParameters", NOT_SUPPORTED),
    ("ulimits", NOT_SUPPORTED),
    ("systemControls", NOT_SUPPORTED),
    ("dockerSecurityOptions", NOT_SUPPORTED),
    ("privileged", NOT_SUPPORTED),
    ("readonlyRootFilesystem", NOT_SUPPORTED),
    ("user", NOT_SUPPORTED),
    ("hostname", NOT_SUPPORTED),
    ("interactive", NOT_SUPPORTED),
    ("pseudoTerminal", NOT_SUPPORTED),
    ("disableNetworking", NOT_SUPPORTED),
    ("dnsServers", NOT_SUPPORTED),
    ("dnsSearchDomains", NOT_SUPPORTED),
    ("extraHosts", NOT_SUPPORTED),
];

const PORT_FIELDS: &[&str] = &["containerPort", "hostPort", "protocol"];
const PORT_IGNORED: &[(&str, &str)] = &[
    ("name", "port names are for ECS Service Connect, which cutover does not have"),
    ("appProtocol", "cutover's load balancer speaks HTTP/1.1 and HTTP/2 without being told"),
    ("containerPortRange", "port ranges are not supported; map each port with containerPort"),
];

const HEALTH_FIELDS: &[&str] = &["command", "interval", "timeout", "retries", "startPeriod"];

/// Parses and checks a task definition written as ECS JSON.
pub fn parse_task_definition(file: &str, text: &str) -> Result<Parsed<TaskDefinition>, Errors> {
    tree::check_size(file, text.len())?;
    let body = text.trim_start_matches('\u{feff}').trim_start();
    if !body.is_empty() && !body.starts_with('{') {
        let skipped = &text[..text.len() - body.len()];
        let line = skipped.matches('\n').count() + 1;
        let column = skipped.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        return Err(Errors(vec![syntax::diag::Diagnostic::error(
            file,
            Pos::new(line, column),
            "",
            "expected a JSON object starting with `{`; a task definition is written in JSON, as \
             ECS reads it",
        )]));
    }
    let doc = tree::parse(file, text, Syntax::Json)?;
    let mut cx = Cx::new(file, doc.format);
    let td = task(&mut cx, &doc.root);
    cx.finish(td)
}

/// Where the parts of a container were written, for checks across containers.
struct ContainerMeta {
    name: Option<(String, Pos, String)>,
    essential: bool,
    has_health_check: bool,
    depends_on: Vec<DependencyMeta>,
}

struct DependencyMeta {
    target: String,
    condition: DependencyCondition,
    name_pos: Pos,
    name_path: String,
    condition_pos: Pos,
    condition_path: String,
}

fn task(cx: &mut Cx<'_>, root: &Node) -> Option<TaskDefinition> {
    let mut f = cx.map(root, "")?;
    let family = f
        .require(cx, "family", "add \"family\": \"<name>\"; the revisions of one family share it")
        .and_then(|fl| {
            let s = cx.string(fl.node, &fl.path)?;
            check_ecs_name(cx, &fl, &s, "family name")?;
            Some(s)
        });
    let containers = f
        .require(
            cx,
            "containerDefinitions",
            "add \"containerDefinitions\": [{ \"name\": …, \"image\": … }]",
        )
        .and_then(|fl| containers(cx, &fl));
    let cpu = optional(cx, &mut f, "cpu", |cx, fl| task_size(cx, fl, "vCPU"));
    let memory = optional(cx, &mut f, "memory", |cx, fl| task_size(cx, fl, "GB"));
    let placement = optional(cx, &mut f, "placementConstraints", placement_constraints);
    f.finish(cx, TASK_FIELDS, TASK_IGNORED);
    Some(TaskDefinition {
        family: family?,
        container_definitions: containers?,
        cpu: cpu?,
        memory: memory?,
        placement_constraints: placement?.unwrap_or_default(),
    })
}

fn placement_constraints(cx: &mut Cx<'_>, fl: &Field<'_>) -> Option<Vec<PlacementConstraint>> {
    let items = cx.list(fl.node, &fl.path)?;
    if !items.is_empty() {
        cx.note(
            fl.node.pos,
            &fl.path,
            "used by the swarm runtime (node labels); the process and docker runtimes run tasks \
             on one machine and ignore it",
        );
    }
    let mut out = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let path = child_index(&fl.path, i);
        let Some(mut f) = cx.map(item, &path) else {
            ok = false;
            continue;
        };
        let kind = f
            .require(cx, "type", "each constraint is { \"type\": \"memberOf\", \"expression\": … }")
            .and_then(|t| {
                let s = cx.string(t.node, &t.path)?;
                if s != "memberOf" {
                    cx.error(
                        t.node.pos,
                        &t.path,
                        format!(
                            "{} is not supported: cutover reads `memberOf` constraints \
                             (`distinctInstance` is not supported yet)",
                            quote(&s)
                        ),
                    );
                    return None;
                }
                Some(s)
            });
        // A constraint of another type has no expression to ask for.
        let expression = kind
            .is_some()
            .then(|| f.require(cx, "expression", "add \"expression\": \"attribute:NAME == VALUE\""))
            .flatten()
            .and_then(|e| {
                let s = cx.string(e.node, &e.path)?;
                if let Err(why) = member_of(&s) {
                    cx.error(e.node.pos, &e.path, format!("{}: {why}", quote(&s)));
                    return None;
                }
                Some(s)
            });
        f.finish(cx, &["type", "expression"], &[]);
        match (kind, expression) {
            (Some(kind), Some(expression)) => out.push(PlacementConstraint { kind, expression }),
            _ => ok = false,
        }
    }
    ok.then_some(out)
}

/// An optional field: `Some(None)` when absent, `None` when present and wrong.
pub(crate) fn optional<'n, T>(
    cx: &mut Cx<'_>,
    fields: &mut syntax::decode::Fields<'n>,
    key: &str,
    read: impl FnOnce(&mut Cx<'_>, &Field<'n>) -> Option<T>,
) -> Option<Option<T>> {
    match fields.get(cx, key) {
        None => Some(None),
        Some(field) => read(cx, &field).map(Some),
    }
}

/// ECS names (family, container): 1–255 letters, digits, `-` and `_`.
fn check_ecs_name(cx: &mut Cx<'_>, fl: &Field<'_>, name: &str, what: &str) -> Option<()> {
    let ok = (1..=255).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok {
        cx.error(
            fl.node.pos,
            &fl.path,
            format!(
                "{} is not a valid {what}: use 1 to 255 letters, digits, `-` and `_`",
                quote(name)
            ),
        );
        return None;
    }
    Some(())
}

/// Task-level cpu (`"256"`, `"1 vCPU"`) or memory (`"512"`, `"2 GB"`): strings in ECS.
fn task_size(cx: &mut Cx<'_>, fl: &Field<'_>, unit: &str) -> Option<String> {
    let s = cx.string(fl.node, &fl.path)?;
    let number =
        s.trim().strip_suffix(unit).or_else(|| s.trim().strip_suffix(&unit.to_lowercase()));
    let ok = match number {
        Some(n) => {
            let n = n.trim();
            !n.is_empty() && n.parse::<f64>().is_ok_and(|v| v > 0.0)
        }
        None => s.parse::<u32>().is_ok_and(|v| v > 0),
    };
    if !ok {
        cx.error(
            fl.node.pos,
            &fl.path,
            format!(
                "{} is not a size ECS understands: write a whole number like \"512\" or \"2 \
                 {unit}\"",
                quote(&s)
            ),
        );
        return None;
    }
    Some(s)
}

fn containers(cx: &mut Cx<'_>, fl: &Field<'_>) -> Option<Vec<ContainerDefinition>> {
    let items = cx.list(fl.node, &fl.path)?;
    if items.is_empty() || items.len() > MAX_CONTAINERS {
        cx.error(
            fl.node.pos,
            &fl.path,
            format!(
                "a task definition has 1 to {MAX_CONTAINERS} containers; this one has {}",
                items.len()
            ),
        );
        return None;
    }
    let mut out = Vec::new();
    let mut metas = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let (container, meta) = container(cx, item, &child_index(&fl.path, i));
        match container {
            Some(c) => out.push(c),
            None => ok = false,
        }
        metas.push(meta);
    }
    let errors_before = cx.error_count();
    check_containers(cx, fl, &metas);
    (ok && cx.error_count() == errors_before).then_some(out)
}

fn check_containers(cx: &mut Cx<'_>, fl: &Field<'_>, metas: &[ContainerMeta]) {
    let mut first_seen: HashMap<&str, u32> = HashMap::new();
    for meta in metas {
        if let Some((name, pos, path)) = &meta.name {
            if let Some(line) = first_seen.get(name.as_str()) {
                cx.error(
                    *pos,
                    path,
                    format!(
                        "container name `{name}` is used twice (first on line {line}); container \
                         names must be unique"
                    ),
                );
            } else {
                first_seen.insert(name, pos.line());
            }
        }
    }
    if metas.iter().all(|m| m.name.is_some()) && !metas.iter().any(|m| m.essential) {
        cx.error(
            fl.node.pos,
            &fl.path,
            "no container is essential; mark at least one with \"essential\": true (the default)",
        );
    }
    let by_name: HashMap<&str, &ContainerMeta> =
        metas.iter().filter_map(|m| m.name.as_ref().map(|(n, _, _)| (n.as_str(), m))).collect();
    let names: Vec<&str> = by_name.keys().copied().collect();
    for meta in metas {
        let own = meta.name.as_ref().map(|(n, _, _)| n.as_str());
        for dep in &meta.depends_on {
            let Some(target) = by_name.get(dep.target.as_str()) else {
                let mut message =
                    format!("no container named `{}` in this task definition", dep.target);
                match suggest(&dep.target, names.iter().copied()) {
                    Some(s) => message.push_str(&format!("; did you mean `{s}`?")),
                    None => message.push_str(&format!("; the containers are: {}", sorted(&names))),
                }
                cx.error(dep.name_pos, &dep.name_path, message);
                continue;
            };
            if own == Some(dep.target.as_str()) {
                cx.error(dep.name_pos, &dep.name_path, "a container cannot depend on itself");
                continue;
            }
            match dep.condition {
                DependencyCondition::Complete | DependencyCondition::Success
                    if target.essential =>
                {
                    cx.error(
                        dep.condition_pos,
                        &dep.condition_path,
                        format!(
                            "{} waits for `{}` to exit, but it is essential (a task stops when an \
                             essential container exits); set \"essential\": false on `{}` or use \
                             START",
                            dep.condition.as_str(),
                            dep.target,
                            dep.target
                        ),
                    );
                }
                DependencyCondition::Healthy if !target.has_health_check => {
                    cx.error(
                        dep.condition_pos,
                        &dep.condition_path,
                        format!(
                            "HEALTHY needs a healthCheck on `{}`, and it has none; add one or use \
                             START",
                            dep.target
                        ),
                    );
                }
                _ => {}
            }
        }
    }
    check_dependency_cycles(cx, metas);
}

fn sorted(names: &[&str]) -> String {
    let mut names = names.to_vec();
    names.sort_unstable();
    names.join(", ")
}

/// Containers that wait on each other in a circle never start. Reported on each container's
/// dependency that leads back to it.
fn check_dependency_cycles(cx: &mut Cx<'_>, metas: &[ContainerMeta]) {
    let index: HashMap<&str, usize> = metas
        .iter()
        .enumerate()
        .filter_map(|(i, m)| m.name.as_ref().map(|(n, _, _)| (n.as_str(), i)))
        .collect();
    // Whether `to` can be reached from `from` by following dependsOn; at most ten containers.
    let reaches = |from: usize, to: usize| {
        let mut seen = vec![false; metas.len()];
        let mut stack = vec![from];
        while let Some(i) = stack.pop() {
            if i == to {
                return true;
            }
            if std::mem::replace(&mut seen[i], true) {
                continue;
            }
            stack.extend(metas[i].depends_on.iter().filter_map(|d| index.get(d.target.as_str())));
        }
        false
    };
    for (start, meta) in metas.iter().enumerate() {
        let Some((name, _, _)) = &meta.name else { continue };
        let closing = meta.depends_on.iter().find(|dep| {
            index.get(dep.target.as_str()).is_some_and(|&j| j != start && reaches(j, start))
        });
        if let Some(dep) = closing {
            cx.error(
                dep.name_pos,
                &dep.name_path,
                format!(
                    "`{name}` waits for `{}`, which waits (directly or not) for `{name}`: a \
                     dependsOn cycle, so neither would start",
                    dep.target
                ),
            );
        }
    }
}

fn container(
    cx: &mut Cx<'_>,
    node: &Node,
    path: &str,
) -> (Option<ContainerDefinition>, ContainerMeta) {
    let mut meta =
        ContainerMeta { name: None, essential: true, has_health_check: false, depends_on: vec![] };
    let Some(mut f) = cx.map(node, path) else { return (None, meta) };
    let name = f.require(cx, "name", "add \"name\": \"<container name>\"").and_then(|fl| {
        let s = cx.string(fl.node, &fl.path)?;
        check_ecs_name(cx, &fl, &s, "container name")?;
        meta.name = Some((s.clone(), fl.node.pos, fl.path.clone()));
        Some(s)
    });
    let image = f
        .require(
            cx,
            "image",
            "add \"image\": \"<repository>:<tag>\" (or a placeholder like \"<IMAGE1_NAME>\")",
        )
        .and_then(|fl| {
            let s = cx.nonempty(fl.node, &fl.path)?;
            if s.chars().any(char::is_whitespace) {
                cx.error(fl.node.pos, &fl.path, format!("image {} contains whitespace", quote(&s)));
                return None;
            }
            Some(s)
        });
    let essential = optional(cx, &mut f, "essential", |cx, fl| cx.bool(fl.node, &fl.path));
    if let Some(Some(false)) = essential {
        meta.essential = false;
    }
    let command = optional(cx, &mut f, "command", |cx, fl| cx.strings(fl.node, &fl.path));
    let entry_point = optional(cx, &mut f, "entryPoint", |cx, fl| cx.strings(fl.node, &fl.path));
    let environment = optional(cx, &mut f, "environment", environment);
    let working_directory =
        optional(cx, &mut f, "workingDirectory", |cx, fl| cx.string(fl.node, &fl.path));
    let port_mappings = optional(cx, &mut f, "portMappings", port_mappings);
    let health_check = optional(cx, &mut f, "healthCheck", health_check);
    meta.has_health_check = matches!(health_check, Some(Some(_)));
    let stop_timeout = optional(cx, &mut f, "stopTimeout", |cx, fl| {
        cx.u32(fl.node, &fl.path, 0, 3600, "stopTimeout (seconds)")
    });
    let cpu =
        optional(cx, &mut f, "cpu", |cx, fl| cx.u32(fl.node, &fl.path, 0, 196_608, "cpu (units)"));
    let memory = optional(cx, &mut f, "memory", |cx, fl| {
        cx.u32(fl.node, &fl.path, 6, u32::MAX, "memory (MiB)")
    });
    let reservation_field = f.get(cx, "memoryReservation");
    let memory_reservation = match &reservation_field {
        None => Some(None),
        Some(fl) => cx.u32(fl.node, &fl.path, 6, u32::MAX, "memoryReservation (MiB)").map(Some),
    };
    if let (Some(Some(hard)), Some(Some(soft)), Some(fl)) =
        (memory, memory_reservation, &reservation_field)
        && soft > hard
    {
        // ECS documents "greater than"; it and CDK accept equal values, which the seeds use.
        cx.error(
            fl.node.pos,
            &fl.path,
            format!(
                "memoryReservation {soft} MiB is above memory {hard} MiB; the soft limit must not \
                 exceed the hard limit"
            ),
        );
    }
    let depends_on = optional(cx, &mut f, "dependsOn", |cx, fl| depends_on(cx, fl, &mut meta));
    let docker_labels = optional(cx, &mut f, "dockerLabels", docker_labels);
    f.finish(cx, CONTAINER_FIELDS, CONTAINER_IGNORED);
    let build = || -> Option<ContainerDefinition> {
        Some(ContainerDefinition {
            name: name?,
            image: image?,
            essential: essential?.unwrap_or(true),
            command: command?.unwrap_or_default(),
            entry_point: entry_point?.unwrap_or_default(),
            environment: environment?.unwrap_or_default(),
            working_directory: working_directory?,
            port_mappings: port_mappings?.unwrap_or_default(),
            health_check: health_check?,
            stop_timeout: stop_timeout?,
            cpu: cpu?,
            memory: memory?,
            memory_reservation: memory_reservation?,
            depends_on: depends_on?.unwrap_or_default(),
            docker_labels: docker_labels?.unwrap_or_default(),
        })
    };
    let container = build();
    (container, meta)
}

fn environment(cx: &mut Cx<'_>, fl: &Field<'_>) -> Option<Vec<KeyValuePair>> {
    let items = cx.list(fl.node, &fl.path)?;
    let mut out = Vec::new();
    let mut ok = true;
    let mut first_seen: HashMap<String, u32> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        let path = child_index(&fl.path, i);
        let Some(mut f) = cx.map(item, &path) else {
            ok = false;
            continue;
        };
        let name = f
            .require(cx, "name", "each variable is { \"name\": \"KEY\", \"value\": \"…\" }")
            .and_then(|n| cx.nonempty(n.node, &n.path).map(|s| (s, n)));
        let value = optional(cx, &mut f, "value", |cx, v| cx.string(v.node, &v.path));
        f.finish(cx, &["name", "value"], &[]);
        match (name, value) {
            (Some((name, n)), Some(value)) => {
                if let Some(line) = first_seen.get(&name) {
                    cx.note(
                        n.node.pos,
                        &n.path,
                        format!("`{name}` is also set on line {line}; the last value wins"),
                    );
                }
                first_seen.insert(name.clone(), n.node.pos.line());
                out.push(KeyValuePair { name, value: value.unwrap_or_default() });
            }
            _ => ok = false,
        }
    }
    ok.then_some(out)
}

fn port_mappings(cx: &mut Cx<'_>, fl: &Field<'_>) -> Option<Vec<PortMapping>> {
    let items = cx.list(fl.node, &fl.path)?;
    let mut out: Vec<PortMapping> = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let path = child_index(&fl.path, i);
        let Some(mut f) = cx.map(item, &path) else {
            ok = false;
            continue;
        };
        let container_port = f
            .require(
                cx,
                "containerPort",
                "add \"containerPort\": <the port the container listens on>",
            )
            .and_then(|p| cx.port(p.node, &p.path).map(|port| (port, p.node.pos, p.path.clone())));
        let host_port = optional(cx, &mut f, "hostPort", |cx, p| {
            let port =
                cx.int(p.node, &p.path, 0, 65535, "a port").and_then(|i| u16::try_from(i).ok())?;
            if let Some((cp, _, _)) = &container_port
                && port != 0
                && port != *cp
            {
                cx.error(
                    p.node.pos,
                    &p.path,
                    format!(
                        "hostPort {port} differs from containerPort {cp}; cutover gives each \
                             task its own address (as awsvpc does), so leave hostPort out or set \
                             it to {cp}"
                    ),
                );
                return None;
            }
            Some(port)
        });
        let protocol = optional(cx, &mut f, "protocol", |cx, p| {
            let s = cx.string(p.node, &p.path)?;
            if s != "tcp" && s != "udp" {
                cx.error(
                    p.node.pos,
                    &p.path,
                    format!("protocol {} is not `tcp` or `udp`", quote(&s)),
                );
                return None;
            }
            Some(s)
        });
        f.finish(cx, PORT_FIELDS, PORT_IGNORED);
        match (container_port, host_port, protocol) {
            (Some((container_port, pos, path)), Some(host_port), Some(protocol)) => {
                let protocol = protocol.unwrap_or_else(default_protocol);
                if out.iter().any(|m| m.container_port == container_port && m.protocol == protocol)
                {
                    cx.error(
                        pos,
                        &path,
                        format!("containerPort {container_port}/{protocol} is mapped twice"),
                    );
                    ok = false;
                }
                out.push(PortMapping { container_port, host_port, protocol });
            }
            _ => ok = false,
        }
    }
    ok.then_some(out)
}

fn health_check(cx: &mut Cx<'_>, fl: &Field<'_>) -> Option<ContainerHealthCheck> {
    let mut f = cx.map(fl.node, &fl.path)?;
    let command = f
        .require(
            cx,
            "command",
            "add \"command\": [\"CMD-SHELL\", \"curl -f http://localhost/ || exit 1\"]",
        )
        .and_then(|c| {
            let argv = cx.strings(c.node, &c.path)?;
            let message = match argv.first().map(String::as_str) {
                None => {
                    Some("the command is empty; start it with \"CMD\" or \"CMD-SHELL\"".to_string())
                }
                Some("CMD") if argv.len() < 2 => {
                    Some("\"CMD\" must be followed by the program to run".to_string())
                }
                Some("CMD-SHELL") if argv.len() != 2 => Some(
                    "\"CMD-SHELL\" must be followed by exactly one shell command string"
                        .to_string(),
                ),
                Some("CMD" | "CMD-SHELL") => None,
                Some(other) => Some(format!(
                    "the first element is {}; it must be \"CMD\" (run a program) or \"CMD-SHELL\" \
                     (run a shell command)",
                    quote(other)
                )),
            };
            if let Some(message) = message {
                cx.error(c.node.pos, &c.path, message);
                return None;
            }
            Some(argv)
        });
    let mut seconds = |cx: &mut Cx<'_>, key: &str, min: u32, max: u32, default: u32| {
        optional(cx, &mut f, key, |cx, v| {
            cx.u32(v.node, &v.path, min, max, &format!("{key} (seconds)"))
        })
        .map(|v| v.unwrap_or(default))
    };
    let interval = seconds(cx, "interval", 5, 300, default_interval());
    let timeout = seconds(cx, "timeout", 2, 60, default_timeout());
    let retries =
        optional(cx, &mut f, "retries", |cx, v| cx.u32(v.node, &v.path, 1, 10, "retries"))
            .map(|v| v.unwrap_or(default_retries()));
    let start_period = optional(cx, &mut f, "startPeriod", |cx, v| {
        cx.u32(v.node, &v.path, 0, 300, "startPeriod (seconds)")
    })
    .map(Option::unwrap_or_default);
    f.finish(cx, HEALTH_FIELDS, &[]);
    Some(ContainerHealthCheck {
        command: command?,
        interval: interval?,
        timeout: timeout?,
        retries: retries?,
        start_period: start_period?,
    })
}

fn depends_on(
    cx: &mut Cx<'_>,
    fl: &Field<'_>,
    meta: &mut ContainerMeta,
) -> Option<Vec<ContainerDependency>> {
    let items = cx.list(fl.node, &fl.path)?;
    let mut out = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let path = child_index(&fl.path, i);
        let Some(mut f) = cx.map(item, &path) else {
            ok = false;
            continue;
        };
        let name = f
            .require(cx, "containerName", "name the container to wait for")
            .and_then(|n| cx.string(n.node, &n.path).map(|s| (s, n)));
        let condition = f
            .require(
                cx,
                "condition",
                "add \"condition\": \"START\" (or COMPLETE, SUCCESS, HEALTHY)",
            )
            .and_then(|c| {
                let s = cx.str(c.node, &c.path)?;
                let condition = match s {
                    "START" => DependencyCondition::Start,
                    "COMPLETE" => DependencyCondition::Complete,
                    "SUCCESS" => DependencyCondition::Success,
                    "HEALTHY" => DependencyCondition::Healthy,
                    _ => {
                        cx.error(
                            c.node.pos,
                            &c.path,
                            format!(
                                "condition {} is not one of START, COMPLETE, SUCCESS, HEALTHY",
                                quote(s)
                            ),
                        );
                        return None;
                    }
                };
                Some((condition, c))
            });
        f.finish(cx, &["containerName", "condition"], &[]);
        match (name, condition) {
            (Some((name, n)), Some((condition, c))) => {
                meta.depends_on.push(DependencyMeta {
                    target: name.clone(),
                    condition,
                    name_pos: n.node.pos,
                    name_path: n.path.clone(),
                    condition_pos: c.node.pos,
                    condition_path: c.path.clone(),
                });
                out.push(ContainerDependency { container_name: name, condition });
            }
            _ => ok = false,
        }
    }
    ok.then_some(out)
}

fn docker_labels(cx: &mut Cx<'_>, fl: &Field<'_>) -> Option<BTreeMap<String, String>> {
    let Value::Map(entries) = &fl.node.value else {
        let word = cx.map_word();
        cx.type_error(fl.node, &fl.path, word);
        return None;
    };
    let mut out = BTreeMap::new();
    let mut ok = true;
    for entry in entries {
        match cx.string(&entry.value, &child_key(&fl.path, &entry.key)) {
            Some(v) => {
                out.insert(entry.key.clone(), v);
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}
