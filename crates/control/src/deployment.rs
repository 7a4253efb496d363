//! Deployments as the control plane keeps them: the body stored beside the state machine's
//! snapshot, creation (every input validated before anything is written), and the API view.

use std::collections::BTreeMap;
use std::time::Duration;

use model::{LifecycleEvent, Timestamp};
use serde::{Deserialize, Serialize};

use crate::api::{self, DeploymentView, LifecycleEventView, TrafficView};
use crate::error::ApiError;
use crate::hooks::HookTarget;
use crate::state::Snapshot;

/// Everything about a deployment except the state machine itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeploymentBody {
    pub application: String,
    pub deployment_group: String,
    pub service: String,
    /// `family:revision`.
    pub task_definition: String,
    pub container_name: String,
    pub container_port: u16,
    pub deployment_config: String,
    pub routing: String,
    pub description: Option<String>,
    pub blue_task_set: String,
    pub green_task_set: Option<String>,
    pub blue_target_group: String,
    pub green_target_group: String,
    /// Hook targets resolved at creation, by lifecycle event name.
    pub hooks: BTreeMap<String, HookTargetDoc>,
    /// The routing state last ordered by the state machine.
    pub route_production_green_percent: u8,
    pub route_test_to_green: bool,
    /// The share of production copied to green (a shadow phase), as last ordered; stored only
    /// during one, so that rows read back as older versions wrote them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub route_mirror_percent: u8,
    /// Green had all its targets healthy at least once.
    pub green_was_healthy: bool,
    /// GreenUnhealthy was reported to the state machine (reported once).
    pub green_failure_reported: bool,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub rolled_back: bool,
    /// The deployment ignores its group's alarms (`--ignore-alarms`).
    #[serde(default)]
    pub ignore_alarms: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookTargetDoc {
    pub name: String,
    pub command: Option<Vec<String>>,
    pub url: Option<String>,
    pub timeout_ms: u64,
}

impl HookTargetDoc {
    pub fn target(&self) -> HookTarget {
        match (&self.command, &self.url) {
            (Some(argv), _) => HookTarget::Command(argv.clone()),
            (None, Some(url)) => HookTarget::Http(url.clone()),
            (None, None) => HookTarget::Command(Vec::new()),
        }
    }
}

/// Resolves the hook a deployment runs for `event`: a name declared under `hooks:` in
/// cutover.yaml, or an http(s) URL.
pub fn resolve_hook(
    snapshot: &Snapshot,
    name: &str,
    default_timeout: Duration,
    event: LifecycleEvent,
    source: &str,
) -> Result<HookTargetDoc, ApiError> {
    if let Some(hook) = snapshot.hooks.iter().find(|h| h.name == name) {
        return Ok(HookTargetDoc {
            name: name.to_string(),
            command: hook.command.clone(),
            url: hook.url.clone(),
            timeout_ms: hook.timeout_ms.unwrap_or(default_timeout.as_millis() as u64),
        });
    }
    if name.starts_with("http://") || name.starts_with("https://") {
        return Ok(HookTargetDoc {
            name: name.to_string(),
            command: None,
            url: Some(name.to_string()),
            timeout_ms: default_timeout.as_millis() as u64,
        });
    }
    let declared: Vec<&str> = snapshot.hooks.iter().map(|h| h.name.as_str()).collect();
    Err(ApiError::bad_request(format!(
        "{source}: the {event} hook `{name}` is neither a hook declared under `hooks:` in \
         cutover.yaml ({}) nor an http(s) URL; declare it (e.g. `- {{ name: {name}, run: \"./test.sh\" }}`) \
         and apply again",
        if declared.is_empty() {
            "none declared".to_string()
        } else {
            format!("declared: {}", declared.join(", "))
        }
    )))
}

pub fn new_deployment_id() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::rng();
    let suffix: String =
        (0..9).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
    format!("d-{suffix}")
}

pub fn lifecycle_views(machine: &rollout::Rollout) -> Vec<LifecycleEventView> {
    machine
        .events()
        .iter()
        .map(|record| LifecycleEventView {
            event: record.event.as_str().to_string(),
            status: record.status.as_str().to_string(),
            start_time: record.start.map(Timestamp::as_millis),
            end_time: record.end.map(Timestamp::as_millis),
            message: record.message.clone(),
        })
        .collect()
}

pub fn view(
    row: &store::DeploymentRow,
    body: &DeploymentBody,
    machine: &rollout::Rollout,
    blue: Option<api::TaskSetView>,
    green: Option<api::TaskSetView>,
) -> DeploymentView {
    // The body, not the machine, is the truth for routing: a finished deployment rolled back
    // by request afterwards changes routing without its machine.
    let (green_percent, test_to_green) =
        (body.route_production_green_percent, body.route_test_to_green);
    let outcome = machine.outcome();
    DeploymentView {
        id: row.id.clone(),
        application: body.application.clone(),
        deployment_group: body.deployment_group.clone(),
        status: machine.status().as_str().to_string(),
        deployment_config: body.deployment_config.clone(),
        routing: body.routing.clone(),
        task_definition: body.task_definition.clone(),
        description: body.description.clone(),
        created_at: row.created_at,
        updated_at: row.updated_at,
        completed_at: row.completed_at,
        current_event: machine.current_event().map(|e| e.as_str().to_string()),
        lifecycle_events: lifecycle_views(machine),
        traffic: TrafficView {
            blue_target_group: body.blue_target_group.clone(),
            green_target_group: body.green_target_group.clone(),
            production_green_percent: green_percent,
            test_to_green,
            mirror_percent: body.route_mirror_percent,
        },
        blue,
        green,
        error_code: outcome
            .and_then(|o| o.error.as_ref().map(|(code, _)| code.as_str().to_string()))
            .or_else(|| body.error_code.clone()),
        error_message: outcome
            .and_then(|o| o.error.as_ref().map(|(_, m)| m.clone()))
            .or_else(|| body.error_message.clone()),
        rolled_back: outcome.is_some_and(|o| o.rolled_back) || body.rolled_back,
        next_step_at: machine.poll_timeout().map(Timestamp::as_millis),
        judges: Vec::new(),
        mirrored: None,
    }
}

fn is_zero(percent: &u8) -> bool {
    *percent == 0
}
