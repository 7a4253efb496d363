//! `cutover.yaml`: the declarative file that replaces the CDK, Terraform and console steps of the
//! AWS setup — load balancers and listeners, target groups, services, deployment configs,
//! deployment groups and hooks — checked item by item and then across items, every error at
//! the line that has to change. The user-facing reference is `docs/cutover-yaml.md`.
//!
//! Load balancers and target groups are read in [`load_balancing`], alarms and metric filters in
//! [`monitoring`], repositories and pipelines in [`pipelines`]; [`checks`] checks what the
//! items say about each other.

mod access;
mod acme;
mod checks;
mod listener_rules;
mod load_balancing;
mod monitoring;
mod pipelines;
mod retry;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use model::{
    ConfigError, DeploymentConfig, LifecycleEvent, MirrorPhase, TrafficRouting, format_duration,
};
use routes::{
    Algorithm, FixedResponse, HealthCheck, PreviewFrom, Redirect, TlsConfig, WeightedTargetGroup,
};

use crate::appspec::{TaskDefinitionRef, hook_event};
use crate::taskdef::optional;
use syntax::decode::{BareNumber, Cx, Field, Fields, quote};
use syntax::diag::{Errors, Parsed, Pos, suggest};
use syntax::tree::{self, Node, Syntax, Value, child_index, child_key};

use checks::{check_unique, cross_check, unknown};
use load_balancing::{load_balancer, target_group};

pub use access::AccessDecl;
pub use checks::check_service_against;
pub use monitoring::{
    AlarmDecl, AlarmDimension, GREEN, LOAD_BALANCER_METRICS, MetricFilterDecl, SERVICE_DIMENSION,
    TARGET_GROUP_DIMENSION,
};
pub use pipelines::{
    ActionDecl, ActionKind, ApprovalAction, BranchFilter, BuildAction, DeployAction,
    DeployEcsAction, DeploymentGroupRef, ExecutionMode, ImagePlaceholder, PipelineDecl,
    PipelineSource, RepositoryDecl, SourceLocation, StageDecl, WebhookTrigger,
};
pub use retry::RetryOnBlue;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct CutoverFile {
    pub load_balancers: Vec<LoadBalancerSpec>,
    pub target_groups: Vec<TargetGroupSpec>,
    pub services: Vec<ServiceSpec>,
    pub deployment_configs: Vec<DeploymentConfig>,
    pub deployment_groups: Vec<DeploymentGroupSpec>,
    pub hooks: Vec<HookSpec>,
    pub alarms: Vec<AlarmDecl>,
    pub metric_filters: Vec<MetricFilterDecl>,
    pub repositories: Vec<RepositoryDecl>,
    pub pipelines: Vec<PipelineDecl>,
    /// `access:`: the roles the team declares.
    pub access: AccessDecl,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadBalancerSpec {
    pub name: String,
    pub listeners: Vec<ListenerSpec>,
    /// `connections:`, the limits on each of its listeners' client connections.
    pub connections: routes::ConnectionLimits,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerSpec {
    pub name: String,
    /// From `port` and `address` (default 127.0.0.1).
    pub bind: SocketAddr,
    /// Set by `protocol: HTTPS` with `certificate_file` and `key_file`.
    pub tls: Option<TlsConfig>,
    pub default_action: ListenerAction,
    /// ALB's listener rules, evaluated from the lowest priority up before the default action.
    pub rules: Vec<ListenerRule>,
}

/// One of a listener's rules: when all its conditions hold, its action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerRule {
    /// 1-50000, unique per listener.
    pub priority: u32,
    /// Checked as ALB checks them (see [`routes::rules::Matcher`]).
    pub conditions: Vec<routes::Condition>,
    /// Never an empty forward: a rule names its target groups.
    pub action: ListenerAction,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenerAction {
    /// A (weighted) forward. Empty when `default_action` is omitted: the listener is managed by a
    /// deployment group, which sets its target groups and weights.
    Forward(Vec<WeightedTargetGroup>),
    FixedResponse(FixedResponse),
    Redirect(Redirect),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetGroupSpec {
    pub name: String,
    pub health_check: HealthCheck,
    /// Default 300 s, as on ALB.
    pub deregistration_delay: Duration,
    pub algorithm: Algorithm,
    /// Static targets, for target groups no service manages.
    pub targets: Vec<SocketAddr>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RuntimeKind {
    /// Each task is a local process on its own loopback address.
    #[default]
    Process,
    /// Each task is a container with its own address on a cutover network.
    Docker,
    /// Each task is a Docker Swarm service of one replica, with its own address on an overlay
    /// network, placed by Swarm on any node of the cluster.
    Swarm,
}

impl RuntimeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeKind::Process => "process",
            RuntimeKind::Docker => "docker",
            RuntimeKind::Swarm => "swarm",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    pub name: String,
    pub runtime: RuntimeKind,
    /// A path to a `taskdef.json`, relative to the cutover.yaml file (ends in `.json` or contains
    /// `/`), or `family` / `family:revision` of a registered task definition.
    pub task_definition: String,
    /// Default 1, at most 100.
    pub desired_count: u32,
    pub load_balancer: Option<ServiceLoadBalancer>,
    /// Docker network for the docker runtime (a bridge, default `cutover`) or the swarm runtime
    /// (an attachable overlay, default `cutover-overlay`); the process runtime ignores it.
    pub network: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceLoadBalancer {
    pub target_group: String,
    pub container_name: String,
    pub container_port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeploymentGroupSpec {
    pub application: String,
    pub name: String,
    pub service: String,
    /// A predefined (`CodeDeployDefault.ECS…`) or declared config name; default
    /// `CodeDeployDefault.ECSAllAtOnce`.
    pub deployment_config: String,
    pub target_groups: [String; 2],
    pub production_listener: ListenerRef,
    pub test_listener: Option<ListenerRef>,
    /// `Some(w)`: STOP_DEPLOYMENT, wait up to `w` for a continue. `None`: CONTINUE_DEPLOYMENT.
    pub ready_wait: Option<Duration>,
    /// How long blue stays up after production is fully on green. Default 0.
    pub termination_wait: Duration,
    pub auto_rollback: AutoRollback,
    /// Longest a hook may run, unless the hook sets its own timeout. Default 10 minutes, max 1 h.
    pub hook_timeout: Duration,
    /// How long green's tasks have to become healthy (the Install event) before the deployment
    /// fails; `None`: the deployment engine's default (1 h, CodeDeploy's limit for one event).
    pub install_timeout: Option<Duration>,
    /// Hooks run when the AppSpec names none; values are declared hook names or URLs.
    pub hooks: BTreeMap<LifecycleEvent, String>,
    /// Names of declared alarms (at most 10) watched from the moment green receives test traffic
    /// until blue is gone.
    pub alarms: Vec<String>,
    /// CodeDeploy's `ignorePollAlarmFailure`: when the state of an alarm cannot be read, go on
    /// (`true`) or stop the deployment (`false`, the default).
    pub ignore_poll_alarm_failure: bool,
    /// Preview routing on the production listener while green serves the test listener.
    pub preview: Option<PreviewSpec>,
    /// Retry on blue while production traffic goes to green; `None`: off. On by default.
    pub retry_on_blue: Option<RetryOnBlue>,
    /// Methods whose requests a deployment config's shadow phase copies to green
    /// (`routes::Mirror::DEFAULT_METHODS`, the safe ones, unless the group says otherwise).
    pub mirror_methods: Vec<String>,
}

/// A request header or cookie whose value `green` or `blue` pins a request on the production
/// listener to that target group during a deployment (cutover's own; CodeDeploy has none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreviewSpec {
    pub from: PreviewFrom,
    pub name: String,
}

impl PreviewSpec {
    /// The values that pin a request to green and to blue.
    pub const GREEN: &str = "green";
    pub const BLUE: &str = "blue";
}

/// A text that is not `load-balancer/listener`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{} is not a listener reference; write `<load balancer>/<listener>`, like web/prod",
    quote(.0)
)]
pub struct BadListenerRef(pub String);

/// A listener of a load balancer, written `web/prod`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerRef {
    pub load_balancer: String,
    pub listener: String,
}

impl ListenerRef {
    /// Reads `load-balancer/listener`.
    pub fn parse(text: &str) -> Result<ListenerRef, BadListenerRef> {
        match text.split_once('/') {
            Some((lb, listener))
                if !lb.is_empty() && !listener.is_empty() && !listener.contains('/') =>
            {
                Ok(ListenerRef { load_balancer: lb.to_string(), listener: listener.to_string() })
            }
            _ => Err(BadListenerRef(text.to_string())),
        }
    }
}

impl fmt::Display for ListenerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.load_balancer, self.listener)
    }
}

/// Which events roll a deployment back (CodeDeploy's auto-rollback events).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AutoRollback {
    /// `DEPLOYMENT_FAILURE`
    pub on_failure: bool,
    /// `DEPLOYMENT_STOP_ON_ALARM`
    pub on_alarm: bool,
    /// `DEPLOYMENT_STOP_ON_REQUEST` (also covers an expired ready wait)
    pub on_stop_request: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookSpec {
    pub name: String,
    pub action: HookAction,
    /// Overrides the deployment group's `hook_timeout`.
    pub timeout: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HookAction {
    /// From `command: [prog, args…]`, or `run: "shell string"` as `["sh", "-c", string]`.
    Command { argv: Vec<String> },
    /// `url:` called with the hook protocol.
    Http { url: String },
}

impl CutoverFile {
    pub fn load_balancer(&self, name: &str) -> Option<&LoadBalancerSpec> {
        self.load_balancers.iter().find(|lb| lb.name == name)
    }

    pub fn listener(&self, r: &ListenerRef) -> Option<&ListenerSpec> {
        self.load_balancer(&r.load_balancer)?.listeners.iter().find(|l| l.name == r.listener)
    }

    pub fn target_group(&self, name: &str) -> Option<&TargetGroupSpec> {
        self.target_groups.iter().find(|tg| tg.name == name)
    }

    pub fn service(&self, name: &str) -> Option<&ServiceSpec> {
        self.services.iter().find(|s| s.name == name)
    }

    pub fn hook(&self, name: &str) -> Option<&HookSpec> {
        self.hooks.iter().find(|h| h.name == name)
    }

    pub fn alarm(&self, name: &str) -> Option<&AlarmDecl> {
        self.alarms.iter().find(|a| a.spec.name == name)
    }

    pub fn metric_filter(&self, name: &str) -> Option<&MetricFilterDecl> {
        self.metric_filters.iter().find(|f| f.spec.name == name)
    }

    pub fn repository(&self, name: &str) -> Option<&RepositoryDecl> {
        self.repositories.iter().find(|r| r.name == name)
    }

    pub fn pipeline(&self, name: &str) -> Option<&PipelineDecl> {
        self.pipelines.iter().find(|p| p.name == name)
    }

    /// A predefined or declared deployment config.
    pub fn deployment_config(&self, name: &str) -> Option<DeploymentConfig> {
        resolve_deployment_config(name, &self.deployment_configs)
    }
}

/// A predefined config by its exact AWS name, else a custom one by name.
pub fn resolve_deployment_config(
    name: &str,
    custom: &[DeploymentConfig],
) -> Option<DeploymentConfig> {
    DeploymentConfig::predefined(name).or_else(|| custom.iter().find(|c| c.name == name).cloned())
}

// ---------------------------------------------------------------------------------------------
// Limits and defaults.

const DESIRED_COUNT_MAX: u32 = 100;
const HOOK_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10 * 60);
const HOOK_TIMEOUT_MAX: Duration = Duration::from_secs(3600);
/// CodeDeploy's limit for one lifecycle event, Install's wait for a healthy green included.
const INSTALL_TIMEOUT_MAX: Duration = Duration::from_secs(3600);
const READY_WAIT_MAX: Duration = Duration::from_secs(120 * 3600);
const TERMINATION_WAIT_MAX: Duration = Duration::from_secs(2880 * 60);
const ALARMS_MAX: usize = 10;
const NAME_LENGTH_MAX: usize = 100;

/// The sections of a `cutover.yaml`; one of them at the top marks a file as one.
pub(crate) const TOP_FIELDS: &[&str] = &[
    "load_balancers",
    "target_groups",
    "services",
    "deployment_configs",
    "deployment_groups",
    "hooks",
    "alarms",
    "metric_filters",
    "repositories",
    "pipelines",
    "access",
];

/// Parses and checks a cutover.yaml.
pub fn parse_cutover_file(file: &str, text: &str) -> Result<Parsed<CutoverFile>, Errors> {
    let doc = tree::parse(file, text, Syntax::JsonOrYaml)?;
    cutover_file_of(file, &doc, text)
}

/// Checks a cutover.yaml already parsed into `doc` from `text`.
pub(crate) fn cutover_file_of(
    file: &str,
    doc: &tree::Document,
    text: &str,
) -> Result<Parsed<CutoverFile>, Errors> {
    let mut cx = Cx::new(file, doc.format);
    let parsed = cutover_file(&mut cx, &doc.root, text);
    cx.finish(parsed)
}

/// Where something was written.
#[derive(Clone, Debug)]
struct Loc {
    pos: Pos,
    path: String,
}

impl Loc {
    fn of(field: &Field<'_>) -> Loc {
        Loc { pos: field.node.pos, path: field.path.clone() }
    }

    fn node(node: &Node, path: &str) -> Loc {
        Loc { pos: node.pos, path: path.to_string() }
    }
}

type Named = (String, Loc);

/// Positions of the parts of the file the cross-checks refer to. Names are kept even when the
/// rest of their item is wrong, so that one mistake does not cascade into "unknown name" errors.
#[derive(Default)]
struct Meta {
    load_balancers: Vec<LoadBalancerMeta>,
    target_groups: Vec<TargetGroupMeta>,
    services: Vec<ServiceMeta>,
    configs: Vec<Named>,
    groups: Vec<GroupMeta>,
    hooks: Vec<Named>,
    alarms: Vec<monitoring::AlarmMeta>,
    filters: Vec<monitoring::FilterMeta>,
    repositories: Vec<Named>,
    pipelines: Vec<pipelines::PipelineMeta>,
}

struct LoadBalancerMeta {
    name: Option<Named>,
    listeners: Vec<ListenerMeta>,
}

#[derive(Default)]
struct ListenerMeta {
    name: Option<Named>,
    bind: Option<(SocketAddr, Loc)>,
    /// `None` when `default_action` is omitted.
    action: Option<ActionMeta>,
    rules: Vec<listener_rules::RuleMeta>,
    /// Where an `acme.challenge: http-01` is, which needs a plain HTTP listener beside it.
    acme_http_01: Option<Loc>,
    /// Where `protocol: HTTPS` is, for an HTTPS listener.
    https: Option<Loc>,
}

struct ActionMeta {
    loc: Loc,
    forward: Vec<Named>,
    is_forward: bool,
}

struct TargetGroupMeta {
    name: Option<Named>,
    targets: Option<Loc>,
}

struct ServiceMeta {
    name: Option<Named>,
    target_group: Option<Named>,
    lb_loc: Option<Loc>,
    /// `runtime: swarm`: its load balancer runs on the swarm's nodes.
    swarm: bool,
}

#[derive(Default)]
struct GroupMeta {
    application: Option<String>,
    name: Option<Named>,
    service: Option<Named>,
    config: Option<Named>,
    target_groups: Option<(Vec<Named>, Loc)>,
    production: Option<(ListenerRef, Loc)>,
    test: Option<(ListenerRef, Loc)>,
    hooks: Vec<Named>,
    /// False when a listener reference is missing or not written `lb/listener`.
    listeners_valid: bool,
    alarms: Vec<Named>,
    alarms_empty: bool,
    on_alarm: Option<Loc>,
}

/// `text` is the whole file, for positions inside values (filter patterns).
fn cutover_file(cx: &mut Cx<'_>, root: &Node, text: &str) -> Option<CutoverFile> {
    let mut f = cx.map(root, "")?;
    let mut meta = Meta::default();
    let load_balancers = section(cx, &mut f, "load_balancers", |cx, n, p| {
        let (spec, m) = load_balancer(cx, n, p);
        meta.load_balancers.push(m);
        spec
    });
    let target_groups = section(cx, &mut f, "target_groups", |cx, n, p| {
        let (spec, m) = target_group(cx, n, p);
        meta.target_groups.push(m);
        spec
    });
    let services = section(cx, &mut f, "services", |cx, n, p| {
        let (spec, m) = service(cx, n, p);
        meta.services.push(m);
        spec
    });
    let deployment_configs = section(cx, &mut f, "deployment_configs", |cx, n, p| {
        let (spec, m) = deployment_config(cx, n, p);
        meta.configs.extend(m);
        spec
    });
    let deployment_groups = section(cx, &mut f, "deployment_groups", |cx, n, p| {
        let (spec, m) = deployment_group(cx, n, p);
        meta.groups.push(m);
        spec
    });
    let hooks = section(cx, &mut f, "hooks", |cx, n, p| {
        let (spec, m) = hook(cx, n, p);
        meta.hooks.extend(m);
        spec
    });
    let alarms = section(cx, &mut f, "alarms", |cx, n, p| {
        let (spec, m) = monitoring::alarm(cx, n, p);
        meta.alarms.push(m);
        spec
    });
    let metric_filters = section(cx, &mut f, "metric_filters", |cx, n, p| {
        let (spec, m) = monitoring::metric_filter(cx, n, p, text);
        meta.filters.push(m);
        spec
    });
    let repositories = section(cx, &mut f, "repositories", |cx, n, p| {
        let (spec, m) = pipelines::repository(cx, n, p);
        meta.repositories.extend(m);
        spec
    });
    let pipelines = section(cx, &mut f, "pipelines", |cx, n, p| {
        let (spec, m) = pipelines::pipeline(cx, n, p);
        meta.pipelines.push(m);
        spec
    });
    let access = match f.get(cx, "access") {
        Some(field) => access::access(cx, field.node, &field.path),
        None => Some(AccessDecl::default()),
    };
    f.finish(cx, TOP_FIELDS, &[]);
    cross_check(cx, &meta);
    Some(CutoverFile {
        load_balancers: load_balancers?,
        target_groups: target_groups?,
        services: services?,
        deployment_configs: deployment_configs?,
        deployment_groups: deployment_groups?,
        hooks: hooks?,
        alarms: alarms?,
        metric_filters: metric_filters?,
        repositories: repositories?,
        pipelines: pipelines?,
        access: access?,
    })
}

/// A top-level list; absent or empty is fine.
fn section<'n, T>(
    cx: &mut Cx<'_>,
    f: &mut Fields<'n>,
    key: &str,
    mut item: impl FnMut(&mut Cx<'_>, &'n Node, &str) -> Option<T>,
) -> Option<Vec<T>> {
    let Some(field) = f.get(cx, key) else { return Some(Vec::new()) };
    let items = cx.list(field.node, &field.path)?;
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, node) in items.iter().enumerate() {
        match item(cx, node, &child_index(&field.path, i)) {
            Some(v) => out.push(v),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// A name of `[A-Za-z0-9._-]`, 1 to 100 characters.
fn name(cx: &mut Cx<'_>, f: &mut Fields<'_>, what: &str) -> Option<Named> {
    let field = f.require(cx, "name", &format!("every {what} needs a name"))?;
    let s = cx.string(field.node, &field.path)?;
    let ok = (1..=NAME_LENGTH_MAX).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !ok {
        cx.error(
            field.node.pos,
            &field.path,
            format!(
                "{} is not a valid {what} name: use 1 to {NAME_LENGTH_MAX} letters, digits, `.`, \
                 `_` and `-`",
                quote(&s)
            ),
        );
        return None;
    }
    Some((s, Loc::of(&field)))
}

fn required_string(cx: &mut Cx<'_>, f: &mut Fields<'_>, key: &str, advice: &str) -> Option<Named> {
    let field = f.require(cx, key, advice)?;
    let s = cx.nonempty(field.node, &field.path)?;
    Some((s, Loc::of(&field)))
}

// ---------------------------------------------------------------------------------------------
// Services.

const SERVICE_FIELDS: &[&str] =
    &["name", "runtime", "task_definition", "desired_count", "load_balancer", "network"];

fn service(cx: &mut Cx<'_>, node: &Node, path: &str) -> (Option<ServiceSpec>, ServiceMeta) {
    let mut meta = ServiceMeta { name: None, target_group: None, lb_loc: None, swarm: false };
    let Some(mut f) = cx.map(node, path) else { return (None, meta) };
    meta.name = name(cx, &mut f, "service");
    let runtime = optional(cx, &mut f, "runtime", |cx, r| {
        let s = cx.str(r.node, &r.path)?;
        match s {
            "process" => Some((RuntimeKind::Process, Loc::of(r))),
            "docker" => Some((RuntimeKind::Docker, Loc::of(r))),
            "swarm" => Some((RuntimeKind::Swarm, Loc::of(r))),
            _ => {
                cx.error(
                    r.node.pos,
                    &r.path,
                    format!("runtime {} is not `process`, `docker` or `swarm`", quote(s)),
                );
                None
            }
        }
    });
    meta.swarm = matches!(runtime, Some(Some((RuntimeKind::Swarm, _))));
    let task_definition = f
        .require(
            cx,
            "task_definition",
            "add `task_definition: taskdef.json` (a path relative to this file) or a registered \
             family like `web:3`",
        )
        .and_then(|t| {
            let s = cx.nonempty(t.node, &t.path)?;
            let is_path = crate::names_a_file(&s);
            let is_registered = matches!(
                TaskDefinitionRef::parse(&s),
                Ok(TaskDefinitionRef::Latest { .. } | TaskDefinitionRef::Revision { .. })
            ) && !s.starts_with("arn:");
            if !is_path && !is_registered {
                cx.error(
                    t.node.pos,
                    &t.path,
                    format!(
                        "{} is neither a path to a .json file nor a registered task definition; \
                         write `taskdef.json` or `family:revision`",
                        quote(&s)
                    ),
                );
                return None;
            }
            Some(s)
        });
    let desired_count = optional(cx, &mut f, "desired_count", |cx, d| {
        cx.u32(d.node, &d.path, 0, DESIRED_COUNT_MAX, "desired_count")
    })
    .map(|d| d.unwrap_or(1));
    let load_balancer = optional(cx, &mut f, "load_balancer", |cx, l| {
        meta.lb_loc = Some(Loc::of(l));
        let mut lf = cx.map(l.node, &l.path)?;
        let target_group = required_string(
            cx,
            &mut lf,
            "target_group",
            "name the target group the service's tasks start in",
        );
        let container_name = required_string(
            cx,
            &mut lf,
            "container_name",
            "name the container of the task definition that takes the traffic",
        );
        let container_port = lf
            .require(cx, "container_port", "add the container port traffic goes to")
            .and_then(|p| cx.port(p.node, &p.path));
        lf.finish(cx, &["target_group", "container_name", "container_port"], &[]);
        meta.target_group = target_group.clone();
        Some(ServiceLoadBalancer {
            target_group: target_group?.0,
            container_name: container_name?.0,
            container_port: container_port?,
        })
    });
    let network = optional(cx, &mut f, "network", |cx, n| {
        cx.nonempty(n.node, &n.path).map(|s| (s, Loc::of(n)))
    });
    f.finish(cx, SERVICE_FIELDS, &[]);
    if let (Some(runtime), Some(Some((_, loc)))) = (&runtime, &network)
        && runtime.as_ref().is_none_or(|(r, _)| *r == RuntimeKind::Process)
    {
        cx.note(
            loc.pos,
            &loc.path,
            "ignored by the process runtime (each task gets its own loopback address); used with \
             `runtime: docker` or `runtime: swarm`",
        );
    }
    let spec = (|| {
        Some(ServiceSpec {
            name: meta.name.as_ref()?.0.clone(),
            runtime: runtime?.map(|(r, _)| r).unwrap_or_default(),
            task_definition: task_definition?,
            desired_count: desired_count?,
            load_balancer: load_balancer?,
            network: network?.map(|(s, _)| s),
        })
    })();
    (spec, meta)
}

// ---------------------------------------------------------------------------------------------
// Deployment configs.

fn deployment_config(
    cx: &mut Cx<'_>,
    node: &Node,
    path: &str,
) -> (Option<DeploymentConfig>, Option<Named>) {
    let Some(mut f) = cx.map(node, path) else { return (None, None) };
    let name = name(cx, &mut f, "deployment config").and_then(|(n, loc)| {
        if DeploymentConfig::is_reserved_name(&n) {
            cx.error(
                loc.pos,
                &loc.path,
                format!(
                    "`{n}`: names starting with `CodeDeployDefault.` belong to the built-in \
                     configs; pick another name"
                ),
            );
            return None;
        }
        Some((n, loc))
    });
    let kind = f
        .require(cx, "type", "add `type: TimeBasedCanary` (or TimeBasedLinear, AllAtOnce)")
        .and_then(|t| config_type(cx, &t));
    let percentage = optional(cx, &mut f, "percentage", |cx, p| {
        let value = cx.int(p.node, &p.path, i128::MIN, i128::MAX, "percentage")?;
        Some((value, Loc::of(p)))
    });
    let interval = optional(cx, &mut f, "interval", |cx, i| {
        let d = cx.duration(i.node, &i.path, BareNumber::Minutes)?;
        Some((d, Loc::of(i)))
    });
    let mirror = optional(cx, &mut f, "mirror", mirror_phase);
    f.finish(cx, &["name", "type", "percentage", "interval", "mirror"], &[]);
    let meta = name.clone();
    let (Some((name, _)), Some((kind, kind_loc)), Some(percentage), Some(interval), Some(mirror)) =
        (name, kind, percentage, interval, mirror)
    else {
        return (None, meta);
    };
    let routing = if kind == "AllAtOnce" {
        all_at_once(cx, percentage.as_ref(), interval.as_ref())
    } else {
        timed_routing(cx, path, (&kind, &kind_loc), percentage, interval)
    };
    let Some(routing) = routing else { return (None, meta) };
    match DeploymentConfig::custom(&name, routing) {
        Ok(config) => (Some(DeploymentConfig { mirror, ..config }), meta),
        Err(e) => {
            cx.error(kind_loc.pos, &kind_loc.path, e.to_string());
            (None, meta)
        }
    }
}

/// A deployment config's `mirror: { percentage: 50, duration: 2m }`: its shadow phase.
fn mirror_phase(cx: &mut Cx<'_>, field: &Field<'_>) -> Option<MirrorPhase> {
    let mut f = cx.map(field.node, &field.path)?;
    let percent = f
        .require(
            cx,
            "percentage",
            "add `percentage: 50`, the share of production's requests copied to green",
        )
        .and_then(|p| cx.int(p.node, &p.path, 1, 100, "a mirror percentage"));
    let duration = f
        .require(cx, "duration", "add `duration: 2m`, how long green gets copies before the shift")
        .and_then(|d| {
            let duration = cx.duration(d.node, &d.path, BareNumber::Minutes)?;
            if duration.is_zero() || duration > MirrorPhase::DURATION_MAX {
                cx.error(
                    d.node.pos,
                    &d.path,
                    format!(
                        "a mirror phase of {} is out of range; give it from 1s to 2880m, like \
                         `duration: 2m`",
                        format_duration(duration)
                    ),
                );
                return None;
            }
            Some(duration)
        });
    f.finish(cx, &["percentage", "duration"], &[]);
    Some(MirrorPhase { percent: u8::try_from(percent?).ok()?, duration: duration? })
}

/// `type` of a deployment config.
fn config_type(cx: &mut Cx<'_>, t: &Field<'_>) -> Option<(String, Loc)> {
    let s = cx.str(t.node, &t.path)?;
    const TYPES: [&str; 3] = ["AllAtOnce", "TimeBasedCanary", "TimeBasedLinear"];
    if TYPES.contains(&s) {
        return Some((s.to_string(), Loc::of(t)));
    }
    let mut message =
        format!("type {} is not AllAtOnce, TimeBasedCanary or TimeBasedLinear", quote(s));
    if let Some(sug) = suggest(s, TYPES) {
        message.push_str(&format!("; did you mean `{sug}`?"));
    }
    cx.error(t.node.pos, &t.path, message);
    None
}

/// AllAtOnce, which takes neither a percentage nor an interval.
fn all_at_once(
    cx: &mut Cx<'_>,
    percentage: Option<&(i128, Loc)>,
    interval: Option<&(Duration, Loc)>,
) -> Option<TrafficRouting> {
    let extra =
        percentage.map(|(_, l)| ("percentage", l)).or(interval.map(|(_, l)| ("interval", l)));
    if let Some((key, loc)) = extra {
        cx.error(
            loc.pos,
            &loc.path,
            format!(
                "AllAtOnce shifts all traffic at once and takes no {key}; remove it, or use \
                 TimeBasedCanary or TimeBasedLinear"
            ),
        );
        return None;
    }
    Some(TrafficRouting::AllAtOnce)
}

/// TimeBasedCanary or TimeBasedLinear: both need a percentage (1 to 99) and an interval, and
/// the schedule must fit CodeDeploy's limits.
fn timed_routing(
    cx: &mut Cx<'_>,
    path: &str,
    (kind, kind_loc): (&str, &Loc),
    percentage: Option<(i128, Loc)>,
    interval: Option<(Duration, Loc)>,
) -> Option<TrafficRouting> {
    let mut missing = false;
    for (key, present, example) in
        [("percentage", percentage.is_some(), "20"), ("interval", interval.is_some(), "5m")]
    {
        if !present {
            cx.error(
                kind_loc.pos,
                &child_key(path, key),
                format!(
                    "missing required field `{key}`; {kind} needs a percentage and an \
                     interval, like `{key}: {example}`"
                ),
            );
            missing = true;
        }
    }
    let (Some((percent, percent_loc)), Some((interval, interval_loc))) = (percentage, interval)
    else {
        return None;
    };
    if missing {
        return None;
    }
    let Ok(percent_u8) = u8::try_from(percent)
        .map_err(|_| ())
        .and_then(|p| if (1..=99).contains(&p) { Ok(p) } else { Err(()) })
    else {
        let shown = u32::try_from(percent).unwrap_or(if percent < 0 { 0 } else { u32::MAX });
        cx.error(
            percent_loc.pos,
            &percent_loc.path,
            ConfigError::PercentOutOfRange { percent: shown }.to_string(),
        );
        return None;
    };
    let routing = if kind == "TimeBasedCanary" {
        TrafficRouting::Canary { percent: percent_u8, interval }
    } else {
        TrafficRouting::Linear { percent: percent_u8, interval }
    };
    if let Err(e) = routing.validate() {
        let loc = match e {
            ConfigError::PercentOutOfRange { .. } => &percent_loc,
            ConfigError::IntervalZero | ConfigError::ScheduleTooLong { .. } => &interval_loc,
        };
        cx.error(loc.pos, &loc.path, e.to_string());
        return None;
    }
    Some(routing)
}

// ---------------------------------------------------------------------------------------------
// Deployment groups.

const GROUP_FIELDS: &[&str] = &[
    "application",
    "name",
    "service",
    "deployment_config",
    "target_groups",
    "production_listener",
    "test_listener",
    "ready_wait",
    "termination_wait",
    "auto_rollback",
    "hook_timeout",
    "install_timeout",
    "hooks",
    "alarms",
    "ignore_poll_alarm_failure",
    "preview",
    "retry_on_blue",
    "mirror_methods",
];

fn deployment_group(
    cx: &mut Cx<'_>,
    node: &Node,
    path: &str,
) -> (Option<DeploymentGroupSpec>, GroupMeta) {
    let mut meta = GroupMeta::default();
    let Some(mut f) = cx.map(node, path) else { return (None, meta) };
    let application = f
        .require(
            cx,
            "application",
            "name the application the group belongs to, like `application: web`",
        )
        .and_then(|a| application_name(cx, &a));
    meta.application = application.clone();
    meta.name = name(cx, &mut f, "deployment group");
    meta.service = required_string(cx, &mut f, "service", "name the service this group deploys");
    let config = optional(cx, &mut f, "deployment_config", |cx, c| {
        cx.nonempty(c.node, &c.path).map(|s| (s, Loc::of(c)))
    });
    if let Some(Some(c)) = &config {
        meta.config = Some(c.clone());
    }
    let target_groups = f
        .require(
            cx,
            "target_groups",
            "add the pair of target groups blue and green alternate between, like `target_groups: \
             [web-blue, web-green]`",
        )
        .and_then(|t| group_target_groups(cx, &t, &mut meta));
    let production = f
        .require(
            cx,
            "production_listener",
            "name the listener that serves production, like `production_listener: web/prod`",
        )
        .and_then(|l| listener_ref(cx, &l));
    meta.production = production.clone();
    let test = optional(cx, &mut f, "test_listener", listener_ref);
    meta.listeners_valid = production.is_some() && test.is_some();
    if let Some(Some(t)) = &test {
        meta.test = Some(t.clone());
    }
    let ready_wait = optional(cx, &mut f, "ready_wait", ready_wait);
    let termination_wait = optional(cx, &mut f, "termination_wait", termination_wait);
    let auto_rollback =
        optional(cx, &mut f, "auto_rollback", |cx, a| auto_rollback(cx, a, &mut meta));
    let hook_timeout = optional(cx, &mut f, "hook_timeout", |cx, h| hook_timeout(cx, h));
    let install_timeout = optional(cx, &mut f, "install_timeout", install_timeout);
    let hooks = optional(cx, &mut f, "hooks", |cx, h| group_hooks(cx, h, &mut meta));
    let alarms = optional(cx, &mut f, "alarms", |cx, a| group_alarms(cx, a, &mut meta));
    let ignore_poll_alarm_failure =
        optional(cx, &mut f, "ignore_poll_alarm_failure", |cx, i| cx.bool(i.node, &i.path));
    let preview = optional(cx, &mut f, "preview", preview);
    let retry_on_blue = optional(cx, &mut f, "retry_on_blue", retry::retry_on_blue);
    let mirror_methods = optional(cx, &mut f, "mirror_methods", |cx, m| {
        retry::method_list(cx, m, "to copy nothing, give the deployment config no `mirror`")
    });
    f.finish(cx, GROUP_FIELDS, &[]);
    meta.alarms_empty =
        matches!(alarms, Some(None)) || matches!(&alarms, Some(Some(a)) if a.is_empty());
    let spec = (|| {
        let alarms = alarms?.unwrap_or_default();
        let auto_rollback = auto_rollback?.unwrap_or(AutoRollback {
            on_failure: true,
            on_alarm: !alarms.is_empty(),
            on_stop_request: false,
        });
        Some(DeploymentGroupSpec {
            application: application?,
            name: meta.name.as_ref()?.0.clone(),
            service: meta.service.as_ref()?.0.clone(),
            deployment_config: config?
                .map_or_else(|| DeploymentConfig::DEFAULT_NAME.to_string(), |(c, _)| c),
            target_groups: target_groups?,
            production_listener: production?.0,
            test_listener: test?.map(|(r, _)| r),
            ready_wait: ready_wait?,
            termination_wait: termination_wait?.unwrap_or(Duration::ZERO),
            auto_rollback,
            hook_timeout: hook_timeout?.unwrap_or(HOOK_TIMEOUT_DEFAULT),
            install_timeout: install_timeout?,
            hooks: hooks?.unwrap_or_default(),
            alarms,
            ignore_poll_alarm_failure: ignore_poll_alarm_failure?.unwrap_or(false),
            preview: preview?,
            retry_on_blue: retry_on_blue?.unwrap_or_else(|| Some(RetryOnBlue::default())),
            mirror_methods: mirror_methods?.unwrap_or_else(|| {
                routes::Mirror::DEFAULT_METHODS.iter().map(|m| m.to_string()).collect()
            }),
        })
    })();
    (spec, meta)
}

/// `application`: CodeDeploy's application name.
fn application_name(cx: &mut Cx<'_>, a: &Field<'_>) -> Option<String> {
    let s = cx.string(a.node, &a.path)?;
    let ok = (1..=NAME_LENGTH_MAX).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !ok {
        cx.error(
            a.node.pos,
            &a.path,
            format!(
                "{} is not a valid application name: use 1 to {NAME_LENGTH_MAX} letters, \
                 digits, `.`, `_` and `-`",
                quote(&s)
            ),
        );
        return None;
    }
    Some(s)
}

/// `target_groups`: the pair blue and green take turns in.
fn group_target_groups(
    cx: &mut Cx<'_>,
    t: &Field<'_>,
    meta: &mut GroupMeta,
) -> Option<[String; 2]> {
    let items = cx.list(t.node, &t.path)?;
    if items.len() != 2 {
        cx.error(
            t.node.pos,
            &t.path,
            format!(
                "a deployment group needs exactly two target groups (blue and green take \
                 turns); found {}",
                items.len()
            ),
        );
        return None;
    }
    let mut names = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = child_index(&t.path, i);
        let s = cx.nonempty(item, &path)?;
        names.push((s, Loc::node(item, &path)));
    }
    meta.target_groups = Some((names.clone(), Loc::of(t)));
    Some([names[0].0.clone(), names[1].0.clone()])
}

/// `production_listener` / `test_listener`: `load-balancer/listener`.
fn listener_ref(cx: &mut Cx<'_>, l: &Field<'_>) -> Option<(ListenerRef, Loc)> {
    let s = cx.str(l.node, &l.path)?;
    match ListenerRef::parse(s) {
        Ok(r) => Some((r, Loc::of(l))),
        Err(err) => {
            cx.error(l.node.pos, &l.path, err.to_string());
            None
        }
    }
}

/// `ready_wait`: how long green waits for `continue` before traffic moves (CodeDeploy's
/// `actionOnTimeout: STOP_DEPLOYMENT`).
fn ready_wait(cx: &mut Cx<'_>, r: &Field<'_>) -> Option<Duration> {
    let d = cx.duration(r.node, &r.path, BareNumber::Minutes)?;
    if d.is_zero() {
        cx.error(
            r.node.pos,
            &r.path,
            "ready_wait must be longer than zero; leave it out to shift traffic as soon as \
             green is ready",
        );
        return None;
    }
    if d > READY_WAIT_MAX {
        cx.error(
            r.node.pos,
            &r.path,
            format!(
                "ready_wait {} is longer than 120h, CodeDeploy's limit between install and \
                 traffic shift",
                format_duration(d)
            ),
        );
        return None;
    }
    Some(d)
}

/// `install_timeout`: how long green's tasks have to become healthy.
fn install_timeout(cx: &mut Cx<'_>, field: &Field<'_>) -> Option<Duration> {
    let d = cx.duration(field.node, &field.path, BareNumber::Rejected)?;
    if d.is_zero() || d > INSTALL_TIMEOUT_MAX {
        cx.error(
            field.node.pos,
            &field.path,
            format!(
                "{} is out of range: green may take more than 0s and at most 1h (CodeDeploy's \
                 limit for one lifecycle event) to become healthy",
                format_duration(d)
            ),
        );
        return None;
    }
    Some(d)
}

/// `termination_wait`: how long blue stays warm after the shift.
fn termination_wait(cx: &mut Cx<'_>, t: &Field<'_>) -> Option<Duration> {
    let d = cx.duration(t.node, &t.path, BareNumber::Minutes)?;
    if d > TERMINATION_WAIT_MAX {
        cx.error(
            t.node.pos,
            &t.path,
            format!(
                "termination_wait {} is longer than 2880 minutes (2 days), CodeDeploy's limit",
                format_duration(d)
            ),
        );
        return None;
    }
    Some(d)
}

/// `auto_rollback`: the events that roll a deployment back, each at most once.
fn auto_rollback(cx: &mut Cx<'_>, a: &Field<'_>, meta: &mut GroupMeta) -> Option<AutoRollback> {
    let items = cx.list(a.node, &a.path)?;
    let mut out = AutoRollback::default();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let path = child_index(&a.path, i);
        let Some(s) = cx.str(item, &path) else {
            ok = false;
            continue;
        };
        const EVENTS: [&str; 3] =
            ["DEPLOYMENT_FAILURE", "DEPLOYMENT_STOP_ON_ALARM", "DEPLOYMENT_STOP_ON_REQUEST"];
        let slot = match s {
            "DEPLOYMENT_FAILURE" => &mut out.on_failure,
            "DEPLOYMENT_STOP_ON_ALARM" => {
                meta.on_alarm = Some(Loc::node(item, &path));
                &mut out.on_alarm
            }
            "DEPLOYMENT_STOP_ON_REQUEST" => &mut out.on_stop_request,
            _ => {
                let mut message =
                    format!("{} is not a rollback event; use {}", quote(s), EVENTS.join(", "));
                if let Some(sug) = suggest(s, EVENTS) {
                    message =
                        format!("{} is not a rollback event; did you mean `{sug}`?", quote(s));
                }
                cx.error(item.pos, &path, message);
                ok = false;
                continue;
            }
        };
        if *slot {
            cx.error(item.pos, &path, format!("{s} is listed twice"));
            ok = false;
        }
        *slot = true;
    }
    ok.then_some(out)
}

/// `hooks`: one hook name per lifecycle event.
fn group_hooks(
    cx: &mut Cx<'_>,
    h: &Field<'_>,
    meta: &mut GroupMeta,
) -> Option<BTreeMap<LifecycleEvent, String>> {
    let Value::Map(entries) = &h.node.value else {
        let word = cx.map_word();
        cx.type_error(h.node, &h.path, word);
        return None;
    };
    let mut out = BTreeMap::new();
    let mut ok = true;
    for entry in entries {
        let path = child_key(&h.path, &entry.key);
        let event = hook_event(cx, &entry.key, entry.key_pos, &path);
        let value = cx.nonempty(&entry.value, &path);
        match (event, value) {
            (Some(event), Some(value)) => {
                if out.contains_key(&event) {
                    cx.error(
                        entry.key_pos,
                        &path,
                        format!("a second hook for {event}; one hook per event"),
                    );
                    ok = false;
                    continue;
                }
                meta.hooks.push((value.clone(), Loc::node(&entry.value, &path)));
                out.insert(event, value);
            }
            _ => ok = false,
        }
    }
    ok.then_some(out)
}

/// `alarms`: the names of the alarms a deployment watches, each once.
fn group_alarms(cx: &mut Cx<'_>, a: &Field<'_>, meta: &mut GroupMeta) -> Option<Vec<String>> {
    let items = cx.list(a.node, &a.path)?;
    if items.len() > ALARMS_MAX {
        cx.error(
            a.node.pos,
            &a.path,
            format!("{} alarms; a deployment group watches at most {ALARMS_MAX}", items.len()),
        );
        return None;
    }
    let mut out: Vec<String> = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let path = child_index(&a.path, i);
        let Some(s) = cx.nonempty(item, &path) else {
            ok = false;
            continue;
        };
        if s.len() > 255 {
            cx.error(item.pos, &path, "an alarm name is at most 255 characters");
            ok = false;
        } else if out.contains(&s) {
            cx.error(item.pos, &path, format!("alarm `{s}` is listed twice"));
            ok = false;
        } else {
            meta.alarms.push((s.clone(), Loc::node(item, &path)));
        }
        out.push(s);
    }
    ok.then_some(out)
}

const PREVIEW_FIELDS: &[&str] = &["header", "cookie"];

/// `preview: { header: X-Deploy-Version }` or `preview: { cookie: deploy_version }`.
fn preview(cx: &mut Cx<'_>, field: &Field<'_>) -> Option<PreviewSpec> {
    let mut f = cx.map(field.node, &field.path)?;
    let name = |cx: &mut Cx<'_>, n: &Field<'_>| {
        let s = cx.nonempty(n.node, &n.path)?;
        if !routes::Preview::is_valid_name(&s) {
            cx.error(
                n.node.pos,
                &n.path,
                format!(
                    "{} is not a valid name: use letters, digits and `-` (such as X-Deploy-Version)",
                    quote(&s)
                ),
            );
            return None;
        }
        Some(s)
    };
    let header = optional(cx, &mut f, "header", name);
    let cookie = optional(cx, &mut f, "cookie", name);
    f.finish(cx, PREVIEW_FIELDS, &[]);
    match (header?, cookie?) {
        (Some(name), None) => Some(PreviewSpec { from: PreviewFrom::Header, name }),
        (None, Some(name)) => Some(PreviewSpec { from: PreviewFrom::Cookie, name }),
        (Some(_), Some(_)) => {
            cx.error(field.node.pos, &field.path, "preview takes `header` or `cookie`, not both");
            None
        }
        (None, None) => {
            cx.error(
                field.node.pos,
                &field.path,
                format!(
                    "preview needs a request header (`header: X-Deploy-Version`) or a cookie \
                     (`cookie: deploy_version`) whose value `{}` or `{}` picks a target group",
                    PreviewSpec::GREEN,
                    PreviewSpec::BLUE
                ),
            );
            None
        }
    }
}

fn hook_timeout(cx: &mut Cx<'_>, field: &Field<'_>) -> Option<Duration> {
    let d = cx.duration(field.node, &field.path, BareNumber::Rejected)?;
    if d.is_zero() || d > HOOK_TIMEOUT_MAX {
        cx.error(
            field.node.pos,
            &field.path,
            format!(
                "{} is out of range: a hook may run for more than 0s and at most 1h",
                format_duration(d)
            ),
        );
        return None;
    }
    Some(d)
}

// ---------------------------------------------------------------------------------------------
// Hooks.

fn is_url(s: &str) -> bool {
    let rest = s.strip_prefix("http://").or_else(|| s.strip_prefix("https://"));
    rest.is_some_and(|r| {
        !r.is_empty() && !r.starts_with('/') && !s.chars().any(char::is_whitespace)
    })
}

fn hook(cx: &mut Cx<'_>, node: &Node, path: &str) -> (Option<HookSpec>, Option<Named>) {
    let Some(mut f) = cx.map(node, path) else { return (None, None) };
    let name = name(cx, &mut f, "hook");
    let command = f.get(cx, "command");
    let run = f.get(cx, "run");
    let url = f.get(cx, "url");
    let timeout = optional(cx, &mut f, "timeout", |cx, t| hook_timeout(cx, t));
    f.finish(cx, &["name", "command", "run", "url", "timeout"], &[]);
    let given = [command.is_some(), run.is_some(), url.is_some()].iter().filter(|b| **b).count();
    if given != 1 {
        cx.error(
            node.pos,
            path,
            "a hook has exactly one of `command: [prog, args…]`, `run: \"shell command\"` or \
             `url: http://…`",
        );
        return (None, name);
    }
    let action = if let Some(c) = command {
        cx.strings(c.node, &c.path).and_then(|argv| {
            if argv.is_empty() || argv[0].trim().is_empty() {
                cx.error(
                    c.node.pos,
                    &c.path,
                    "the command is empty; name the program to run first",
                );
                return None;
            }
            Some(HookAction::Command { argv })
        })
    } else if let Some(r) = run {
        cx.nonempty(r.node, &r.path)
            .map(|s| HookAction::Command { argv: vec!["sh".to_string(), "-c".to_string(), s] })
    } else if let Some(u) = url {
        cx.string(u.node, &u.path).and_then(|s| {
            if !is_url(&s) {
                cx.error(
                    u.node.pos,
                    &u.path,
                    format!("{} is not an http:// or https:// URL", quote(&s)),
                );
                return None;
            }
            Some(HookAction::Http { url: s })
        })
    } else {
        None
    };
    let spec = match (&name, action, timeout) {
        (Some((n, _)), Some(action), Some(timeout)) => {
            Some(HookSpec { name: n.clone(), action, timeout })
        }
        _ => None,
    };
    (spec, name)
}
