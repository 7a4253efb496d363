//! Declared resources as the control plane stores them (JSON documents in `store`), and their
//! conversion from the parsed `cutover.yaml`.
//!
//! `apply` compares these documents to decide between create, update and no change, so they hold
//! exactly what the user declared, already resolved (durations in milliseconds, a service's task
//! definition as `family:revision`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub const KIND_LOAD_BALANCER: &str = "load_balancer";
pub const KIND_TARGET_GROUP: &str = "target_group";
pub const KIND_SERVICE: &str = "service";
pub const KIND_DEPLOYMENT_CONFIG: &str = "deployment_config";
pub const KIND_DEPLOYMENT_GROUP: &str = "deployment_group";
pub const KIND_HOOK: &str = "hook";
pub const KIND_ALARM: &str = "alarm";
pub const KIND_METRIC_FILTER: &str = "metric_filter";
pub const KIND_ROLE: &str = "role";
pub const KIND_OIDC_GROUP: &str = "oidc_group";
/// Not declared by users: an alarm instance's state and history (`alarms::Alarm`), by instance
/// key (`name`, or `name@deployment` for alarms on the green target group).
pub const KIND_ALARM_STATE: &str = "alarm_state";
/// Not declared by users: the engine's bookkeeping per deployment group.
pub const KIND_GROUP_STATE: &str = "group_state";
/// Not declared by users: the task definition (JSON string) of a drained task set that is gone,
/// by task-set id, so its stopped tasks still say what they ran.
pub const KIND_RETIRED_TASK_SET: &str = "retired_task_set";

/// A role `access.roles` declares, as the file says it (`model::access::DeclaredRole` is
/// another crate's type, so it is stored through this wrapper, which reads and writes the same
/// JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RoleDoc(pub model::access::DeclaredRole);

/// An OpenID provider's group and the roles its members get, as `access.oidc.groups` declares
/// it (stored through this wrapper for the same reason as [`RoleDoc`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GroupDoc(pub model::access::DeclaredGroup);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadBalancerDoc {
    pub name: String,
    pub listeners: Vec<ListenerDoc>,
    /// Limits on each listener's client connections; absent in documents written before them.
    #[serde(default, skip_serializing_if = "routes::ConnectionLimits::is_default")]
    pub connections: routes::ConnectionLimits,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerDoc {
    pub name: String,
    pub bind: SocketAddr,
    pub tls: Option<routes::TlsConfig>,
    /// A forward with no target groups means "managed by a deployment group".
    pub action: routes::Action,
    /// ALB's listener rules. Absent in what an older cutover stored: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<routes::Rule>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetGroupDoc {
    pub name: String,
    pub health_check: routes::HealthCheck,
    pub deregistration_delay_ms: u64,
    pub algorithm: routes::Algorithm,
    /// Static targets declared in cutover.yaml (`targets:`).
    pub targets: Vec<SocketAddr>,
    /// IP targets registered by hand (`cutover target-groups register`). They belong to the
    /// target group, not to the file: `apply` keeps them as long as the target group stays.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub registered: Vec<SocketAddr>,
}

impl TargetGroupDoc {
    /// Every target registered by hand or declared, each once.
    pub fn manual_targets(&self) -> impl Iterator<Item = &SocketAddr> {
        self.targets.iter().chain(self.registered.iter().filter(|a| !self.targets.contains(a)))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceDoc {
    pub name: String,
    /// `process` or `docker`.
    pub runtime: String,
    /// `family:revision` of the task definition the service was created with.
    pub task_definition: String,
    pub desired_count: u32,
    pub load_balancer: Option<ServiceLbDoc>,
    pub network: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceLbDoc {
    pub target_group: String,
    pub container_name: String,
    pub container_port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentConfigDoc {
    pub name: String,
    /// `AllAtOnce`, `TimeBasedCanary` or `TimeBasedLinear`.
    pub kind: String,
    pub percentage: u8,
    pub interval_ms: u64,
    /// The shadow phase's share of production copied to green, if the config has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_percentage: Option<u8>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mirror_duration_ms: u64,
}

fn is_zero(ms: &u64) -> bool {
    *ms == 0
}

impl DeploymentConfigDoc {
    pub fn from_model(config: &model::DeploymentConfig) -> DeploymentConfigDoc {
        let (kind, percentage, interval) = match config.routing {
            model::TrafficRouting::AllAtOnce => ("AllAtOnce", 100, Duration::ZERO),
            model::TrafficRouting::Canary { percent, interval } => {
                ("TimeBasedCanary", percent, interval)
            }
            model::TrafficRouting::Linear { percent, interval } => {
                ("TimeBasedLinear", percent, interval)
            }
        };
        DeploymentConfigDoc {
            name: config.name.clone(),
            kind: kind.to_string(),
            percentage,
            interval_ms: interval.as_millis() as u64,
            mirror_percentage: config.mirror.map(|m| m.percent),
            mirror_duration_ms: config.mirror.map_or(0, |m| m.duration.as_millis() as u64),
        }
    }

    pub fn to_model(&self) -> model::DeploymentConfig {
        let interval = Duration::from_millis(self.interval_ms);
        let routing = match self.kind.as_str() {
            "TimeBasedCanary" => {
                model::TrafficRouting::Canary { percent: self.percentage, interval }
            }
            "TimeBasedLinear" => {
                model::TrafficRouting::Linear { percent: self.percentage, interval }
            }
            _ => model::TrafficRouting::AllAtOnce,
        };
        let mirror = self.mirror_percentage.map(|percent| model::MirrorPhase {
            percent,
            duration: Duration::from_millis(self.mirror_duration_ms),
        });
        model::DeploymentConfig { name: self.name.clone(), routing, mirror }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentGroupDoc {
    pub application: String,
    pub name: String,
    pub service: String,
    pub deployment_config: String,
    pub target_groups: [String; 2],
    pub production_listener: ListenerRefDoc,
    pub test_listener: Option<ListenerRefDoc>,
    /// STOP_DEPLOYMENT with this wait; `None` is CONTINUE_DEPLOYMENT.
    pub ready_wait_ms: Option<u64>,
    pub termination_wait_ms: u64,
    pub auto_rollback: AutoRollbackDoc,
    pub hook_timeout_ms: u64,
    /// Default hooks by lifecycle event name, used when the AppSpec names none for that event.
    pub hooks: BTreeMap<String, String>,
    pub alarms: Vec<String>,
    /// Preview routing on the production listener; absent in groups stored before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<PreviewDoc>,
    /// How long green has to become healthy; absent: `rollout::INSTALL_TIMEOUT_DEFAULT` (and in
    /// groups stored before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_timeout_ms: Option<u64>,
    /// Retry on blue while production traffic goes to green; `None`: off. Stored only when it is
    /// not the default (on, with the default settings), so that groups stored before it existed
    /// take the default, as their `cutover.yaml` would now, and read back unchanged.
    #[serde(
        default = "RetryOnBlueDoc::default_on",
        skip_serializing_if = "RetryOnBlueDoc::is_default_on"
    )]
    pub retry_on_blue: Option<RetryOnBlueDoc>,
    /// Methods a shadow phase copies to green; stored only when not the default, so that
    /// groups stored before it existed take the default and read back unchanged.
    #[serde(default = "default_mirror_methods", skip_serializing_if = "is_default_mirror_methods")]
    pub mirror_methods: Vec<String>,
}

pub(crate) fn default_mirror_methods() -> Vec<String> {
    routes::Mirror::DEFAULT_METHODS.iter().map(|m| m.to_string()).collect()
}

fn is_default_mirror_methods(methods: &[String]) -> bool {
    methods.iter().map(String::as_str).eq(routes::Mirror::DEFAULT_METHODS)
}

/// A deployment group's retry on blue (`config::RetryOnBlue`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryOnBlueDoc {
    pub methods: Vec<String>,
    pub max_body_bytes: u32,
    pub budget_percent: u8,
    pub min_retry_concurrency: u32,
}

impl RetryOnBlueDoc {
    fn of(r: &config::RetryOnBlue) -> RetryOnBlueDoc {
        RetryOnBlueDoc {
            methods: r.methods.clone(),
            max_body_bytes: r.max_body_bytes,
            budget_percent: r.budget_percent,
            min_retry_concurrency: r.min_retry_concurrency,
        }
    }

    pub(crate) fn default_on() -> Option<RetryOnBlueDoc> {
        Some(RetryOnBlueDoc::of(&config::RetryOnBlue::default()))
    }

    fn is_default_on(retry: &Option<RetryOnBlueDoc>) -> bool {
        *retry == RetryOnBlueDoc::default_on()
    }

    /// The data plane's retry of the production forward whose blue is `blue_target_group`.
    pub fn to(&self, blue_target_group: &str) -> routes::Retry {
        routes::Retry {
            target_group: blue_target_group.to_string(),
            methods: self.methods.clone(),
            max_body_bytes: self.max_body_bytes,
            budget_percent: self.budget_percent,
            min_retry_concurrency: self.min_retry_concurrency,
        }
    }
}

/// The header or cookie whose value `green` or `blue` pins a production request during a
/// deployment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviewDoc {
    pub from: routes::PreviewFrom,
    pub name: String,
}

impl DeploymentGroupDoc {
    /// `application/name`, the key used everywhere.
    pub fn key(&self) -> String {
        format!("{}/{}", self.application, self.name)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerRefDoc {
    pub load_balancer: String,
    pub listener: String,
}

impl std::fmt::Display for ListenerRefDoc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.load_balancer, self.listener)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoRollbackDoc {
    pub on_failure: bool,
    pub on_alarm: bool,
    pub on_stop_request: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookDoc {
    pub name: String,
    /// argv of a command hook.
    pub command: Option<Vec<String>>,
    /// URL of an HTTP hook.
    pub url: Option<String>,
    pub timeout_ms: Option<u64>,
}

/// The engine's bookkeeping for one deployment group.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupState {
    /// The task set serving production when no deployment is active (ECS's PRIMARY).
    pub primary_task_set: Option<String>,
    /// The deployment in progress, if any (one per group).
    pub active_deployment: Option<String>,
    /// A deployment that ended without rollback and left green running (stop without rollback,
    /// failure without auto-rollback); its routing stays in force until it is rolled back.
    pub leftover_deployment: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// From the parsed file.

pub fn load_balancer_doc(lb: &config::LoadBalancerSpec) -> LoadBalancerDoc {
    LoadBalancerDoc {
        name: lb.name.clone(),
        listeners: lb
            .listeners
            .iter()
            .map(|l| ListenerDoc {
                name: l.name.clone(),
                bind: l.bind,
                tls: l.tls.clone(),
                action: route_action(&l.default_action),
                rules: l
                    .rules
                    .iter()
                    .map(|r| routes::Rule {
                        priority: r.priority,
                        conditions: r.conditions.clone(),
                        action: route_action(&r.action),
                    })
                    .collect(),
            })
            .collect(),
        connections: lb.connections,
    }
}

fn route_action(action: &config::ListenerAction) -> routes::Action {
    match action {
        config::ListenerAction::Forward(groups) => {
            routes::Action::Forward(routes::ForwardAction::weighted(groups.clone()))
        }
        config::ListenerAction::FixedResponse(r) => routes::Action::FixedResponse(r.clone()),
        config::ListenerAction::Redirect(r) => routes::Action::Redirect(r.clone()),
    }
}

pub fn target_group_doc(tg: &config::TargetGroupSpec) -> TargetGroupDoc {
    TargetGroupDoc {
        name: tg.name.clone(),
        health_check: tg.health_check.clone(),
        deregistration_delay_ms: tg.deregistration_delay.as_millis() as u64,
        algorithm: tg.algorithm,
        targets: tg.targets.clone(),
        registered: Vec::new(),
    }
}

pub fn deployment_group_doc(g: &config::DeploymentGroupSpec) -> DeploymentGroupDoc {
    let listener_ref = |r: &config::ListenerRef| ListenerRefDoc {
        load_balancer: r.load_balancer.clone(),
        listener: r.listener.clone(),
    };
    DeploymentGroupDoc {
        application: g.application.clone(),
        name: g.name.clone(),
        service: g.service.clone(),
        deployment_config: g.deployment_config.clone(),
        target_groups: g.target_groups.clone(),
        production_listener: listener_ref(&g.production_listener),
        test_listener: g.test_listener.as_ref().map(listener_ref),
        ready_wait_ms: g.ready_wait.map(|d| d.as_millis() as u64),
        termination_wait_ms: g.termination_wait.as_millis() as u64,
        auto_rollback: AutoRollbackDoc {
            on_failure: g.auto_rollback.on_failure,
            on_alarm: g.auto_rollback.on_alarm,
            on_stop_request: g.auto_rollback.on_stop_request,
        },
        hook_timeout_ms: g.hook_timeout.as_millis() as u64,
        hooks: g
            .hooks
            .iter()
            .map(|(event, hook)| (event.as_str().to_string(), hook.clone()))
            .collect(),
        alarms: g.alarms.clone(),
        preview: g.preview.as_ref().map(|p| PreviewDoc { from: p.from, name: p.name.clone() }),
        install_timeout_ms: g.install_timeout.map(|d| d.as_millis() as u64),
        retry_on_blue: g.retry_on_blue.as_ref().map(RetryOnBlueDoc::of),
        mirror_methods: g.mirror_methods.clone(),
    }
}

pub fn hook_doc(h: &config::HookSpec) -> HookDoc {
    let (command, url) = match &h.action {
        config::HookAction::Command { argv } => (Some(argv.clone()), None),
        config::HookAction::Http { url } => (None, Some(url.clone())),
    };
    HookDoc {
        name: h.name.clone(),
        command,
        url,
        timeout_ms: h.timeout.map(|d| d.as_millis() as u64),
    }
}
