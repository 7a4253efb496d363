//! `cutover.yaml`: the declarative file that replaces the CDK, Terraform and console steps of the
//! AWS setup — load balancers and listeners, target groups, services, deployment configs,
//! deployment groups and hooks — checked item by item and then across items, every error at
//! the line that has to change. The user-facing reference is `docs/cutover-yaml.md`.
//!
//! Alarms and metric filters are in [`monitoring`], repositories and pipelines in [`pipelines`].

mod monitoring;
mod pipelines;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use model::{ConfigError, DeploymentConfig, LifecycleEvent, TrafficRouting, format_duration};
use routes::{Algorithm, FixedResponse, HealthCheck, Redirect, TlsConfig, WeightedTargetGroup};

use crate::appspec::{TaskDefinitionRef, hook_event};
use crate::decode::{BareNumber, Cx, Field, Fields, quote};
use crate::diag::{Diagnostic, Errors, Parsed, Pos, suggest};
use crate::taskdef::{TaskDefinition, optional};
use crate::tree::{self, Node, Syntax, Value, child_index, child_key};

pub use monitoring::{
    AlarmDecl, AlarmDimension, GREEN, LOAD_BALANCER_METRICS, MetricFilterDecl, SERVICE_DIMENSION,
    TARGET_GROUP_DIMENSION,
};
pub use pipelines::{
    ActionDecl, ActionKind, ApprovalAction, BranchFilter, BuildAction, DeployAction,
    DeployEcsAction, DeploymentGroupRef, ExecutionMode, ImagePlaceholder, PipelineDecl,
    PipelineSource, RepositoryDecl, SourceLocation, StageDecl, WebhookTrigger,
};

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
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadBalancerSpec {
    pub name: String,
    pub listeners: Vec<ListenerSpec>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerSpec {
    pub name: String,
    /// From `port` and `address` (default 127.0.0.1).
    pub bind: SocketAddr,
    /// Set by `protocol: HTTPS` with `certificate_file` and `key_file`.
    pub tls: Option<TlsConfig>,
    pub default_action: ListenerAction,
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
}

impl RuntimeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeKind::Process => "process",
            RuntimeKind::Docker => "docker",
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
    /// Docker network for the docker runtime; the process runtime ignores it.
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
    /// Hooks run when the AppSpec names none; values are declared hook names or URLs.
    pub hooks: BTreeMap<LifecycleEvent, String>,
    /// Names of declared alarms (at most 10) watched from the moment green receives test traffic
    /// until blue is gone.
    pub alarms: Vec<String>,
    /// CodeDeploy's `ignorePollAlarmFailure`: when the state of an alarm cannot be read, go on
    /// (`true`) or stop the deployment (`false`, the default).
    pub ignore_poll_alarm_failure: bool,
}

/// A listener of a load balancer, written `web/prod`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerRef {
    pub load_balancer: String,
    pub listener: String,
}

impl ListenerRef {
    /// Reads `load-balancer/listener`.
    pub fn parse(text: &str) -> Result<ListenerRef, String> {
        match text.split_once('/') {
            Some((lb, listener))
                if !lb.is_empty() && !listener.is_empty() && !listener.contains('/') =>
            {
                Ok(ListenerRef { load_balancer: lb.to_string(), listener: listener.to_string() })
            }
            _ => Err(format!(
                "{} is not a listener reference; write `<load balancer>/<listener>`, like web/prod",
                quote(text)
            )),
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
const READY_WAIT_MAX: Duration = Duration::from_secs(120 * 3600);
const TERMINATION_WAIT_MAX: Duration = Duration::from_secs(2880 * 60);
const DEREGISTRATION_DELAY_DEFAULT: Duration = Duration::from_secs(300);
const DEREGISTRATION_DELAY_MAX: Duration = Duration::from_secs(3600);
const INTERVAL_MIN: Duration = Duration::from_secs(1);
const INTERVAL_MAX: Duration = Duration::from_secs(300);
const INTERVAL_ALB_MIN: Duration = Duration::from_secs(5);
const TIMEOUT_MIN: Duration = Duration::from_millis(100);
const TIMEOUT_MAX: Duration = Duration::from_secs(120);
const TIMEOUT_ALB_MIN: Duration = Duration::from_secs(2);
const ALARMS_MAX: usize = 10;
const FORWARD_TARGET_GROUPS_MAX: usize = 5;
const NAME_LENGTH_MAX: usize = 100;
const TARGET_GROUP_NAME_LENGTH_MAX: usize = 32;

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
];

/// Parses and checks a cutover.yaml.
pub fn parse_cutover_file(file: &str, text: &str) -> Result<Parsed<CutoverFile>, Errors> {
    let doc = tree::parse(file, text, Syntax::JsonOrYaml)?;
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
// Load balancers and listeners.

fn load_balancer(
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
            let mut out = Vec::new();
            let mut ok = true;
            for (i, item) in items.iter().enumerate() {
                let (spec, m) = listener(cx, item, &child_index(&field.path, i));
                meta.listeners.push(m);
                match spec {
                    Some(s) => out.push(s),
                    None => ok = false,
                }
            }
            ok.then_some(out)
        });
    f.finish(cx, &["name", "listeners"], &[]);
    let spec = match (&meta.name, listeners) {
        (Some((name, _)), Some(listeners)) => {
            Some(LoadBalancerSpec { name: name.clone(), listeners })
        }
        _ => None,
    };
    (spec, meta)
}

const LISTENER_FIELDS: &[&str] =
    &["name", "port", "address", "protocol", "certificate_file", "key_file", "default_action"];

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
    let https = optional(cx, &mut f, "protocol", |cx, p| {
        let s = cx.str(p.node, &p.path)?;
        match s.to_ascii_uppercase().as_str() {
            "HTTP" => Some(false),
            "HTTPS" => Some(true),
            _ => {
                cx.error(
                    p.node.pos,
                    &p.path,
                    format!("protocol {} is not HTTP or HTTPS", quote(s)),
                );
                None
            }
        }
    });
    let certificate = optional(cx, &mut f, "certificate_file", |cx, c| {
        cx.nonempty(c.node, &c.path).map(|s| (s, Loc::of(c)))
    });
    let key = optional(cx, &mut f, "key_file", |cx, k| {
        cx.nonempty(k.node, &k.path).map(|s| (s, Loc::of(k)))
    });
    let tls = match (https, certificate, key) {
        (Some(https), Some(certificate), Some(key)) => {
            let https = https.unwrap_or(false);
            match (https, certificate, key) {
                (true, Some((certificate_file, _)), Some((key_file, _))) => {
                    Some(Some(TlsConfig { certificate_file, key_file }))
                }
                (true, certificate, key) => {
                    for (missing, present) in
                        [("certificate_file", certificate.is_some()), ("key_file", key.is_some())]
                    {
                        if !present {
                            cx.error(
                                f.pos,
                                &child_key(path, missing),
                                format!(
                                    "missing required field `{missing}`; an HTTPS listener needs a \
                                     PEM certificate_file and key_file"
                                ),
                            );
                        }
                    }
                    None
                }
                (false, certificate, key) => {
                    let given = certificate
                        .as_ref()
                        .map(|c| ("certificate_file", c))
                        .or(key.as_ref().map(|k| ("key_file", k)));
                    if let Some((field, (_, loc))) = given {
                        let message = format!(
                            "`{field}` is only used with `protocol: HTTPS`; add `protocol: HTTPS` \
                             or remove the certificate and key"
                        );
                        cx.error(loc.pos, &loc.path, message);
                        None
                    } else {
                        Some(None)
                    }
                }
            }
        }
        _ => None,
    };
    let action = optional(cx, &mut f, "default_action", |cx, a| {
        let (action, action_meta) = default_action(cx, a);
        meta.action = Some(action_meta);
        action
    });
    f.finish(cx, LISTENER_FIELDS, &[]);
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
        })
    })();
    (spec, meta)
}

fn default_action(cx: &mut Cx<'_>, field: &Field<'_>) -> (Option<ListenerAction>, ActionMeta) {
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
            "a default_action has exactly one of `forward`, `fixed_response` or `redirect`",
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
    let protocol = optional(cx, &mut f, "protocol", |cx, p| {
        let s = cx.str(p.node, &p.path)?;
        match s.to_ascii_uppercase().as_str() {
            "HTTP" | "HTTPS" => Some(s.to_ascii_uppercase()),
            _ => {
                cx.error(
                    p.node.pos,
                    &p.path,
                    format!("protocol {} is not HTTP or HTTPS", quote(s)),
                );
                None
            }
        }
    });
    let host = optional(cx, &mut f, "host", |cx, h| cx.nonempty(h.node, &h.path));
    let port = optional(cx, &mut f, "port", |cx, p| cx.port(p.node, &p.path));
    let path = optional(cx, &mut f, "path", |cx, p| {
        let s = cx.string(p.node, &p.path)?;
        if !s.starts_with('/') {
            cx.error(p.node.pos, &p.path, format!("path {} must start with `/`", quote(&s)));
            return None;
        }
        Some(s)
    });
    f.finish(cx, &["status_code", "protocol", "host", "port", "path"], &[]);
    let redirect = Redirect {
        protocol: protocol?,
        host: host?,
        port: port?,
        path: path?,
        status_code: status_code?,
    };
    if redirect.protocol.is_none()
        && redirect.host.is_none()
        && redirect.port.is_none()
        && redirect.path.is_none()
    {
        cx.error(
            field.node.pos,
            &field.path,
            "this redirect changes nothing and would loop; set protocol, host, port or path",
        );
        return None;
    }
    Some(redirect)
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

fn target_group(
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
            let path = child_index(&t.path, i);
            let Some(s) = cx.str(item, &path) else {
                ok = false;
                continue;
            };
            match s.trim().parse::<SocketAddr>() {
                Ok(addr) if out.contains(&addr) => {
                    cx.error(item.pos, &path, format!("target {addr} is listed twice"));
                    ok = false;
                }
                Ok(addr) => out.push(addr),
                Err(_) => {
                    cx.error(
                        item.pos,
                        &path,
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

fn health_check(cx: &mut Cx<'_>, field: &Field<'_>) -> Option<HealthCheck> {
    let defaults = HealthCheck::default();
    let mut f = cx.map(field.node, &field.path)?;
    let enabled = optional(cx, &mut f, "enabled", |cx, e| cx.bool(e.node, &e.path));
    let path = optional(cx, &mut f, "path", |cx, p| {
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
    });
    let port = optional(cx, &mut f, "port", |cx, p| {
        if p.node.as_str() == Some("traffic-port") {
            return Some(None);
        }
        cx.port(p.node, &p.path).map(Some)
    });
    let interval = optional(cx, &mut f, "interval", |cx, i| {
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
    });
    let timeout = optional(cx, &mut f, "timeout", |cx, t| {
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
    });
    let threshold = |cx: &mut Cx<'_>, f: &mut Fields<'_>, key: &str, default: u32| {
        optional(cx, f, key, |cx, t| cx.u32(t.node, &t.path, 2, 10, key))
            .map(|v| v.unwrap_or(default))
    };
    let healthy_threshold = threshold(cx, &mut f, "healthy_threshold", defaults.healthy_threshold);
    let unhealthy_threshold =
        threshold(cx, &mut f, "unhealthy_threshold", defaults.unhealthy_threshold);
    let matcher = optional(cx, &mut f, "matcher", |cx, m| {
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
            Err(message) => {
                cx.error(m.node.pos, &m.path, message);
                None
            }
        }
    });
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

// ---------------------------------------------------------------------------------------------
// Services.

const SERVICE_FIELDS: &[&str] =
    &["name", "runtime", "task_definition", "desired_count", "load_balancer", "network"];

fn service(cx: &mut Cx<'_>, node: &Node, path: &str) -> (Option<ServiceSpec>, ServiceMeta) {
    let mut meta = ServiceMeta { name: None, target_group: None, lb_loc: None };
    let Some(mut f) = cx.map(node, path) else { return (None, meta) };
    meta.name = name(cx, &mut f, "service");
    let runtime = optional(cx, &mut f, "runtime", |cx, r| {
        let s = cx.str(r.node, &r.path)?;
        match s {
            "process" => Some((RuntimeKind::Process, Loc::of(r))),
            "docker" => Some((RuntimeKind::Docker, Loc::of(r))),
            _ => {
                cx.error(
                    r.node.pos,
                    &r.path,
                    format!("runtime {} is not `process` or `docker`", quote(s)),
                );
                None
            }
        }
    });
    let task_definition = f
        .require(
            cx,
            "task_definition",
            "add `task_definition: taskdef.json` (a path relative to this file) or a registered \
             family like `web:3`",
        )
        .and_then(|t| {
            let s = cx.nonempty(t.node, &t.path)?;
            let is_path = s.to_ascii_lowercase().ends_with(".json") || s.contains('/');
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
             `runtime: docker`",
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
        .and_then(|t| {
            let s = cx.str(t.node, &t.path)?;
            const TYPES: [&str; 3] = ["AllAtOnce", "TimeBasedCanary", "TimeBasedLinear"];
            if TYPES.contains(&s) {
                return Some((s.to_string(), Loc::of(&t)));
            }
            let mut message =
                format!("type {} is not AllAtOnce, TimeBasedCanary or TimeBasedLinear", quote(s));
            if let Some(sug) = suggest(s, TYPES) {
                message.push_str(&format!("; did you mean `{sug}`?"));
            }
            cx.error(t.node.pos, &t.path, message);
            None
        });
    let percentage = optional(cx, &mut f, "percentage", |cx, p| {
        let value = cx.int(p.node, &p.path, i128::MIN, i128::MAX, "percentage")?;
        Some((value, Loc::of(p)))
    });
    let interval = optional(cx, &mut f, "interval", |cx, i| {
        let d = cx.duration(i.node, &i.path, BareNumber::Minutes)?;
        Some((d, Loc::of(i)))
    });
    f.finish(cx, &["name", "type", "percentage", "interval"], &[]);
    let meta = name.clone();
    let (Some((name, _)), Some((kind, kind_loc)), Some(percentage), Some(interval)) =
        (name, kind, percentage, interval)
    else {
        return (None, meta);
    };
    let routing = if kind == "AllAtOnce" {
        let extra = percentage
            .as_ref()
            .map(|(_, l)| ("percentage", l))
            .or(interval.as_ref().map(|(_, l)| ("interval", l)));
        if let Some((key, loc)) = extra {
            cx.error(
                loc.pos,
                &loc.path,
                format!(
                    "AllAtOnce shifts all traffic at once and takes no {key}; remove it, or use \
                     TimeBasedCanary or TimeBasedLinear"
                ),
            );
            return (None, meta);
        }
        TrafficRouting::AllAtOnce
    } else {
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
            return (None, meta);
        };
        if missing {
            return (None, meta);
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
            return (None, meta);
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
            return (None, meta);
        }
        routing
    };
    match DeploymentConfig::custom(&name, routing) {
        Ok(config) => (Some(config), meta),
        Err(e) => {
            cx.error(kind_loc.pos, &kind_loc.path, e.to_string());
            (None, meta)
        }
    }
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
    "hooks",
    "alarms",
    "ignore_poll_alarm_failure",
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
        .and_then(|a| {
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
        });
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
        .and_then(|t| {
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
            meta.target_groups = Some((names.clone(), Loc::of(&t)));
            Some([names[0].0.clone(), names[1].0.clone()])
        });
    let listener_ref = |cx: &mut Cx<'_>, l: &Field<'_>| {
        let s = cx.str(l.node, &l.path)?;
        match ListenerRef::parse(s) {
            Ok(r) => Some((r, Loc::of(l))),
            Err(message) => {
                cx.error(l.node.pos, &l.path, message);
                None
            }
        }
    };
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
    let ready_wait = optional(cx, &mut f, "ready_wait", |cx, r| {
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
    });
    let termination_wait = optional(cx, &mut f, "termination_wait", |cx, t| {
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
    });
    let auto_rollback = optional(cx, &mut f, "auto_rollback", |cx, a| {
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
    });
    let hook_timeout = optional(cx, &mut f, "hook_timeout", |cx, h| hook_timeout(cx, h));
    let hooks = optional(cx, &mut f, "hooks", |cx, h| {
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
    });
    let alarms = optional(cx, &mut f, "alarms", |cx, a| {
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
    });
    let ignore_poll_alarm_failure =
        optional(cx, &mut f, "ignore_poll_alarm_failure", |cx, i| cx.bool(i.node, &i.path));
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
            hooks: hooks?.unwrap_or_default(),
            alarms,
            ignore_poll_alarm_failure: ignore_poll_alarm_failure?.unwrap_or(false),
        })
    })();
    (spec, meta)
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

// ---------------------------------------------------------------------------------------------
// Checks across items.

/// Reports the second and later uses of a name, pointing at each.
fn check_unique<'m>(cx: &mut Cx<'_>, what: &str, names: impl IntoIterator<Item = &'m Named>) {
    let mut first: HashMap<&str, u32> = HashMap::new();
    for (name, loc) in names {
        if let Some(line) = first.get(name.as_str()) {
            cx.error(
                loc.pos,
                &loc.path,
                format!(
                    "duplicate {what} name `{name}` (first on line {line}); names must be unique"
                ),
            );
        } else {
            first.insert(name, loc.pos.line);
        }
    }
}

/// "unknown {what} `x`; did you mean `y`?" or "…; declared: a, b".
fn unknown(cx: &mut Cx<'_>, loc: &Loc, what: &str, name: &str, known: &[&str], section: &str) {
    let mut known = known.to_vec();
    known.sort_unstable();
    known.dedup();
    let mut message = format!("no {what} named `{name}`");
    match suggest(name, known.iter().copied()) {
        Some(s) => message.push_str(&format!("; did you mean `{s}`?")),
        None if known.is_empty() => message.push_str(&format!("; declare it under `{section}`")),
        None => message.push_str(&format!("; declared {what}s: {}", known.join(", "))),
    }
    cx.error(loc.pos, &loc.path, message);
}

fn cross_check(cx: &mut Cx<'_>, meta: &Meta) {
    let lb_names: Vec<&Named> =
        meta.load_balancers.iter().filter_map(|lb| lb.name.as_ref()).collect();
    check_unique(cx, "load balancer", lb_names.iter().copied());
    for lb in &meta.load_balancers {
        check_unique(cx, "listener", lb.listeners.iter().filter_map(|l| l.name.as_ref()));
    }
    check_unique(cx, "target group", meta.target_groups.iter().filter_map(|t| t.name.as_ref()));
    check_unique(cx, "service", meta.services.iter().filter_map(|s| s.name.as_ref()));
    check_unique(cx, "deployment config", &meta.configs);
    check_unique(cx, "hook", &meta.hooks);
    let mut first_group: HashMap<(String, String), u32> = HashMap::new();
    for g in &meta.groups {
        if let (Some(app), Some((name, loc))) = (&g.application, &g.name) {
            let key = (app.clone(), name.clone());
            if let Some(line) = first_group.get(&key) {
                cx.error(
                    loc.pos,
                    &loc.path,
                    format!(
                        "duplicate deployment group `{name}` in application `{app}` (first on line \
                         {line})"
                    ),
                );
            } else {
                first_group.insert(key, loc.pos.line);
            }
        }
    }
    check_binds(cx, meta);

    let target_groups: Vec<&str> = meta
        .target_groups
        .iter()
        .filter_map(|t| t.name.as_ref().map(|(n, _)| n.as_str()))
        .collect();
    let services: Vec<&str> =
        meta.services.iter().filter_map(|s| s.name.as_ref().map(|(n, _)| n.as_str())).collect();
    let hooks: Vec<&str> = meta.hooks.iter().map(|(n, _)| n.as_str()).collect();
    let mut configs: Vec<&str> = model::PREDEFINED_CONFIGS.iter().map(|(n, _)| *n).collect();
    configs.extend(meta.configs.iter().map(|(n, _)| n.as_str()));

    for lb in &meta.load_balancers {
        for l in &lb.listeners {
            for (tg, loc) in l.action.iter().flat_map(|a| &a.forward) {
                if !target_groups.contains(&tg.as_str()) {
                    unknown(cx, loc, "target group", tg, &target_groups, "target_groups");
                }
            }
        }
    }
    for s in &meta.services {
        if let Some((tg, loc)) = &s.target_group
            && !target_groups.contains(&tg.as_str())
        {
            unknown(cx, loc, "target group", tg, &target_groups, "target_groups");
        }
    }

    // Which group (by index) manages each listener, target group and service, for the
    // one-owner rules.
    let mut listener_owner: HashMap<ListenerRef, Owner> = HashMap::new();
    let mut tg_owner: HashMap<String, Owner> = HashMap::new();
    let mut service_owner: HashMap<String, Owner> = HashMap::new();
    for (index, g) in meta.groups.iter().enumerate() {
        let group = g.name.as_ref().map_or_else(|| "?".to_string(), |(n, _)| n.clone());
        let owner = |loc: &Loc| Owner { index, group: group.clone(), line: loc.pos.line };
        check_group_refs(cx, meta, g, &target_groups, &services, &hooks, &configs);
        if let Some((service, loc)) = &g.service {
            match service_owner.get(service) {
                Some(o) if o.index != index => cx.error(
                    loc.pos,
                    &loc.path,
                    format!(
                        "service `{service}` is already deployed by deployment group `{}` (line \
                         {}); a service belongs to at most one group",
                        o.group, o.line
                    ),
                ),
                Some(_) => {}
                None => {
                    service_owner.insert(service.clone(), owner(loc));
                }
            }
        }
        for (tg, loc) in g.target_groups.iter().flat_map(|(names, _)| names) {
            match tg_owner.get(tg) {
                Some(o) if o.index != index => cx.error(
                    loc.pos,
                    &loc.path,
                    format!(
                        "target group `{tg}` is already used by deployment group `{}` (line {}); \
                         each group needs its own pair",
                        o.group, o.line
                    ),
                ),
                Some(_) => {}
                None => {
                    tg_owner.insert(tg.clone(), owner(loc));
                }
            }
        }
        for (r, loc) in g.production.iter().chain(g.test.iter()) {
            match listener_owner.get(r) {
                Some(o) if o.index != index => cx.error(
                    loc.pos,
                    &loc.path,
                    format!(
                        "listener {r} is already managed by deployment group `{}` (line {}); a \
                         listener belongs to at most one group",
                        o.group, o.line
                    ),
                ),
                Some(_) => {}
                None => {
                    listener_owner.insert(r.clone(), owner(loc));
                }
            }
        }
    }
    // A group whose listener reference is wrong most likely meant one of the unmanaged
    // listeners; reporting those as serving nothing would be the same mistake twice.
    let listeners = declared_listeners(meta);
    let refs_resolve = meta.groups.iter().all(|g| {
        g.listeners_valid
            && g.production
                .iter()
                .chain(g.test.iter())
                .all(|(r, _)| listeners.contains(&r.to_string()))
    });
    if refs_resolve {
        check_listener_actions(cx, meta, &listener_owner);
    }
    monitoring::cross_check(
        cx,
        &meta.alarms,
        &meta.filters,
        &target_groups,
        &services,
        &meta.groups,
    );
    pipelines::cross_check(cx, &meta.repositories, &meta.pipelines, &meta.groups, &services);
    for t in &meta.target_groups {
        if let (Some((name, _)), Some(loc)) = (&t.name, &t.targets) {
            let used_by_service = meta
                .services
                .iter()
                .any(|s| s.target_group.as_ref().is_some_and(|(n, _)| n == name));
            if used_by_service || tg_owner.contains_key(name) {
                cx.error(
                    loc.pos,
                    &loc.path,
                    format!(
                        "target group `{name}` gets its targets from a service; remove `targets` \
                         (static targets are for groups no service uses)"
                    ),
                );
            }
        }
    }
}

/// The deployment group that claimed a listener, target group or service first.
struct Owner {
    index: usize,
    group: String,
    line: u32,
}

fn check_binds(cx: &mut Cx<'_>, meta: &Meta) {
    let mut seen: Vec<(SocketAddr, String, u32)> = Vec::new();
    for lb in &meta.load_balancers {
        let lb_name = lb.name.as_ref().map_or("?", |(n, _)| n.as_str());
        for l in &lb.listeners {
            let Some((addr, loc)) = &l.bind else { continue };
            let listener_name = l.name.as_ref().map_or("?", |(n, _)| n.as_str());
            let clash = seen.iter().find(|(other, _, _)| {
                other.port() == addr.port()
                    && (other.ip() == addr.ip()
                        || other.ip().is_unspecified()
                        || addr.ip().is_unspecified())
            });
            if let Some((other, name, line)) = clash {
                cx.error(
                    loc.pos,
                    &loc.path,
                    format!(
                        "{addr} clashes with listener {name} on {other} (line {line}); each \
                         listener needs its own port"
                    ),
                );
            } else {
                seen.push((*addr, format!("{lb_name}/{listener_name}"), loc.pos.line));
            }
        }
    }
}

/// `lb/listener` for every declared listener.
fn declared_listeners(meta: &Meta) -> Vec<String> {
    meta.load_balancers
        .iter()
        .flat_map(|lb| {
            let lb_name = lb.name.as_ref().map(|(n, _)| n.clone());
            lb.listeners
                .iter()
                .filter_map(move |l| Some(format!("{}/{}", lb_name.clone()?, l.name.as_ref()?.0)))
        })
        .collect()
}

fn check_group_refs(
    cx: &mut Cx<'_>,
    meta: &Meta,
    g: &GroupMeta,
    target_groups: &[&str],
    services: &[&str],
    hooks: &[&str],
    configs: &[&str],
) {
    let pair: Vec<&str> = g
        .target_groups
        .iter()
        .flat_map(|(names, _)| names.iter().map(|(n, _)| n.as_str()))
        .collect();
    if let Some((names, _)) = &g.target_groups {
        for (tg, loc) in names {
            if !target_groups.contains(&tg.as_str()) {
                unknown(cx, loc, "target group", tg, target_groups, "target_groups");
            }
        }
        if names.len() == 2 && names[0].0 == names[1].0 {
            let loc = &names[1].1;
            cx.error(
                loc.pos,
                &loc.path,
                format!(
                    "`{}` is named twice; a deployment group needs two different target groups \
                     (blue and green take turns)",
                    names[1].0
                ),
            );
        }
    }
    if let Some((service, loc)) = &g.service {
        if !services.contains(&service.as_str()) {
            unknown(cx, loc, "service", service, services, "services");
        } else if let Some(s) =
            meta.services.iter().find(|s| s.name.as_ref().is_some_and(|(n, _)| n == service))
        {
            match (&s.target_group, &s.lb_loc) {
                (None, None) => cx.error(
                    loc.pos,
                    &loc.path,
                    format!(
                        "service `{service}` has no \
                                                                      load_balancer; a deployment \
                                                                      group moves traffic between \
                                                                      target groups, so give the \
                                                                      service `load_balancer: {{ \
                                                                      target_group: …, \
                                                                      container_name: …, \
                                                                      container_port: … }}`"
                    ),
                ),
                (Some((tg, _)), _) if pair.len() == 2 && !pair.contains(&tg.as_str()) => {
                    if let Some((_, pair_loc)) = &g.target_groups {
                        cx.error(
                            pair_loc.pos,
                            &pair_loc.path,
                            format!(
                                "service `{service}` starts \
                                                                        its tasks in target group \
                                                                        `{tg}`, which is not one \
                                                                        of this pair; put `{tg}` \
                                                                        in target_groups"
                            ),
                        );
                    }
                }
                _ => {}
            }
        }
    }
    let listeners = declared_listeners(meta);
    let listener_names: Vec<&str> = listeners.iter().map(String::as_str).collect();
    for (r, loc) in g.production.iter().chain(g.test.iter()) {
        if !listener_names.contains(&r.to_string().as_str()) {
            unknown(
                cx,
                loc,
                "listener",
                &r.to_string(),
                &listener_names,
                "load_balancers[].listeners",
            );
        }
    }
    if let (Some((prod, _)), Some((test, test_loc))) = (&g.production, &g.test) {
        if prod == test {
            cx.error(
                test_loc.pos,
                &test_loc.path,
                format!(
                    "the test listener is the production listener {prod}; use a second listener \
                     for test traffic"
                ),
            );
        } else if prod.load_balancer != test.load_balancer {
            cx.error(
                test_loc.pos,
                &test_loc.path,
                format!(
                    "the test listener is on load balancer `{}` but production is on `{}`; both \
                     must be on the same load balancer",
                    test.load_balancer, prod.load_balancer
                ),
            );
        }
    }
    if let Some((config, loc)) = &g.config
        && !configs.contains(&config.as_str())
    {
        let mut message = format!("no deployment config named `{config}`");
        match suggest(config, configs.iter().copied()) {
            Some(s) => message.push_str(&format!("; did you mean `{s}`?")),
            None => message.push_str(&format!(
                "; use a built-in one ({}) or declare it under `deployment_configs`",
                model::PREDEFINED_CONFIGS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            )),
        }
        cx.error(loc.pos, &loc.path, message);
    }
    for (hook, loc) in &g.hooks {
        if !is_url(hook) && !hooks.contains(&hook.as_str()) {
            let mut message = format!("no hook named `{hook}`");
            match suggest(hook, hooks.iter().copied()) {
                Some(s) => message.push_str(&format!("; did you mean `{s}`?")),
                None => message
                    .push_str("; declare it under `hooks`, or give an http:// or https:// URL"),
            }
            cx.error(loc.pos, &loc.path, message);
        }
    }
    if let Some(loc) = &g.on_alarm
        && g.alarms_empty
    {
        cx.note(
            loc.pos,
            &loc.path,
            "this group watches no alarms, so DEPLOYMENT_STOP_ON_ALARM never fires; add `alarms`",
        );
    }
}

/// A listener either has a default action or is managed by a deployment group; a managed one may
/// start forwarding to its group's target groups, nothing else.
fn check_listener_actions(cx: &mut Cx<'_>, meta: &Meta, owners: &HashMap<ListenerRef, Owner>) {
    for lb in &meta.load_balancers {
        let Some((lb_name, _)) = &lb.name else { continue };
        for l in &lb.listeners {
            let Some((listener, name_loc)) = &l.name else { continue };
            let r = ListenerRef { load_balancer: lb_name.clone(), listener: listener.clone() };
            match (&l.action, owners.get(&r)) {
                (None, None) => cx.error(
                    name_loc.pos,
                    &name_loc.path,
                    format!(
                        "listener {r} has no default_action and no deployment group uses it, \
                             so it would serve nothing; add a default_action or name it in a \
                             deployment group"
                    ),
                ),
                (Some(action), Some(owner)) if !action.is_forward => cx.error(
                    action.loc.pos,
                    &action.loc.path,
                    format!(
                        "listener {r} is managed by deployment group `{}`, which sets its \
                             forward; remove this default_action",
                        owner.group
                    ),
                ),
                (Some(action), Some(owner)) => {
                    let pair: Vec<&str> = meta.groups[owner.index]
                        .target_groups
                        .iter()
                        .flat_map(|(names, _)| names.iter().map(|(n, _)| n.as_str()))
                        .collect();
                    for (tg, loc) in &action.forward {
                        if !pair.is_empty() && !pair.contains(&tg.as_str()) {
                            cx.error(
                                loc.pos,
                                &loc.path,
                                format!(
                                    "listener {r} is managed by \
                                                                  deployment group `{}`, which \
                                                                  only forwards to its own target \
                                                                  groups ({}); remove \
                                                                  `{tg}`",
                                    owner.group,
                                    pair.join(", ")
                                ),
                            );
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// Checks a service's `load_balancer` against the task definition it runs: the container exists
/// and maps `container_port`. Errors point at the service's fields in the cutover.yaml text.
pub fn check_service_against(
    cutover_file: &str,
    cutover_text: &str,
    service: &ServiceSpec,
    td: &TaskDefinition,
) -> Result<(), Errors> {
    let Some(lb) = &service.load_balancer else { return Ok(()) };
    let at = |key: &str| locate_service_field(cutover_text, &service.name, key);
    let names: Vec<&str> = td.container_definitions.iter().map(|c| c.name.as_str()).collect();
    let error = match td.container(&lb.container_name) {
        None => {
            let (pos, path) = at("container_name");
            let mut message = format!(
                "task definition `{}` has no container named `{}`",
                td.family, lb.container_name
            );
            match suggest(&lb.container_name, names.iter().copied()) {
                Some(s) => message.push_str(&format!("; did you mean `{s}`?")),
                None => message.push_str(&format!("; its containers are: {}", names.join(", "))),
            }
            Diagnostic::error(cutover_file, pos, &path, message)
        }
        Some(c) if !c.port_mappings.iter().any(|m| m.container_port == lb.container_port) => {
            let (pos, path) = at("container_port");
            let ports: Vec<String> =
                c.port_mappings.iter().map(|m| m.container_port.to_string()).collect();
            let advice = if ports.is_empty() {
                format!(
                    "it has no portMappings; add {{ \"containerPort\": {} }} to it in the task \
                     definition",
                    lb.container_port
                )
            } else {
                format!("use one of its containerPorts: {}", ports.join(", "))
            };
            Diagnostic::error(
                cutover_file,
                pos,
                &path,
                format!("container `{}` does not map port {}; {advice}", c.name, lb.container_port),
            )
        }
        Some(_) => return Ok(()),
    };
    Err(Errors(vec![error]))
}

fn locate_service_field(text: &str, service: &str, key: &str) -> (Pos, String) {
    let fallback = (Pos::UNKNOWN, format!("services[?].load_balancer.{key}"));
    let Ok(doc) = tree::parse("", text, Syntax::JsonOrYaml) else { return fallback };
    let Some(Value::Seq(items)) = doc.root.get("services", false).map(|n| &n.value) else {
        return fallback;
    };
    for (i, item) in items.iter().enumerate() {
        if item.get("name", false).and_then(Node::as_str) != Some(service) {
            continue;
        }
        let path = child_key(&child_index("services", i), "load_balancer");
        let Some(lb) = item.get("load_balancer", false) else { return (item.pos, path) };
        return match lb.get(key, false) {
            Some(n) => (n.pos, child_key(&path, key)),
            None => (lb.pos, child_key(&path, key)),
        };
    }
    fallback
}
