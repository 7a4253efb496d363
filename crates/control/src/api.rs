//! The control plane's HTTP API wire types (`/v1/...`), shared by the server and the CLI.
//!
//! These are the only control-plane types that are serialised; domain types convert into them by
//! hand. Field names are snake_case; AWS names appear in values (`InProgress`,
//! `CodeDeployDefault.ECSAllAtOnce`), not in keys. See `docs/api.md`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The canary judge's vocabulary, which [`JudgeView`] carries.
pub use alarms::judge;

/// Every error answer: a message that says what to do, and the diagnostics of a bad file.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diagnostics: Vec<String>,
}

/// A file sent by the CLI: its name (for error messages), its text, and the directory it was
/// read from (relative `image` directories of the process runtime resolve against it).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FileUpload {
    pub name: String,
    pub text: String,
    #[serde(default)]
    pub base_dir: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApplyRequest {
    pub file: FileUpload,
    /// Files the cutover.yaml refers to (task definitions of services), by the path written in it.
    #[serde(default)]
    pub referenced: BTreeMap<String, FileUpload>,
    /// Only compute the plan.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApplyResponse {
    pub plan: Vec<PlanItem>,
    pub applied: bool,
    #[serde(default)]
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanItem {
    /// `load_balancer`, `target_group`, `service`, `deployment_config`, `deployment_group`,
    /// `hook`, `alarm`, `metric_filter`, `task_definition`, `repository`, `pipeline`.
    pub kind: String,
    pub name: String,
    /// `create`, `update`, `update-pending` (a pipeline busy with executions switches when they
    /// end), `no change`, `delete` (in the store, no longer in the file), or `keep` (a hosted
    /// repository no longer in the file: apply never deletes git data).
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusView {
    pub version: String,
    pub data_dir: String,
    pub api: String,
    pub lb_admin: String,
    pub routes_version: u64,
    pub runtimes: Vec<String>,
    #[serde(default)]
    pub warnings: Vec<String>,
    /// The load balancer on every node of the swarm, when `cutover up` runs one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_load_balancers: Vec<NodeLoadBalancerView>,
}

/// One node's load balancer: where its admin API answers and which routing table it serves.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeLoadBalancerView {
    pub node: String,
    pub admin: String,
    /// The routing-table version it acknowledged last.
    pub acknowledged_version: Option<u64>,
    pub answering: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServiceView {
    pub name: String,
    pub runtime: String,
    pub desired_count: u32,
    pub running_count: u32,
    /// The PRIMARY task set's task definition (`family:revision`).
    pub task_definition: Option<String>,
    pub container_name: Option<String>,
    pub container_port: Option<u16>,
    pub deployment_group: Option<String>,
    pub task_sets: Vec<TaskSetView>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskSetView {
    pub id: String,
    pub status: String,
    pub task_definition: String,
    pub target_group: Option<String>,
    pub deployment_id: Option<String>,
    pub desired_count: u32,
    pub running_count: u32,
    pub healthy_count: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskView {
    pub id: String,
    pub service: String,
    pub task_set_id: String,
    pub task_definition: String,
    pub runtime: String,
    pub last_status: String,
    pub desired_status: String,
    pub health: String,
    pub addr: Option<String>,
    pub target_group: Option<String>,
    pub started_at: Option<u64>,
    pub stopped_at: Option<u64>,
    pub stopped_reason: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TargetGroupView {
    pub name: String,
    pub health_check: routes::HealthCheck,
    pub deregistration_delay_ms: u64,
    pub algorithm: routes::Algorithm,
    /// Targets registered by hand (`targets:` in cutover.yaml, `target-groups register`).
    pub manual_targets: Vec<String>,
    /// Every target the load balancer knows for this group, with ALB health.
    pub targets: Vec<routes::TargetHealth>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegisterTargetRequest {
    pub addr: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskDefinitionView {
    pub family: String,
    pub revision: u32,
    pub arn: String,
    pub status: String,
    pub registered_at: u64,
    pub body: serde_json::Value,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegisterTaskDefinitionRequest {
    pub file: FileUpload,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeploymentConfigView {
    pub name: String,
    pub routing: String,
    pub predefined: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PreviewView {
    pub name: String,
    pub routing: String,
    /// One line per step: offset from the start of the deployment, and what happens.
    pub steps: Vec<PreviewStep>,
    pub total_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PreviewStep {
    pub at_ms: u64,
    pub what: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreateDeploymentRequest {
    /// `application/group`.
    pub group: String,
    /// A task definition to register first; its revision replaces the AppSpec's TaskDefinition.
    #[serde(default)]
    pub task_definition: Option<FileUpload>,
    pub appspec: FileUpload,
    #[serde(default)]
    pub description: Option<String>,
    /// Override the group's deployment config for this deployment.
    #[serde(default)]
    pub deployment_config: Option<String>,
    /// Deploy even though one of the group's alarms is in ALARM, and do not watch the group's
    /// alarms during this deployment (CodeDeploy's `overrideAlarmConfiguration`).
    #[serde(default)]
    pub ignore_alarms: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StopRequest {
    /// None: roll back iff the group's auto-rollback includes DEPLOYMENT_STOP_ON_REQUEST.
    #[serde(default)]
    pub rollback: Option<bool>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContinueRequest {
    /// `READY_WAIT` or `TERMINATION_WAIT`.
    pub wait: String,
}

/// `PutLifecycleEventHookExecutionStatus`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HookStatusRequest {
    /// `Succeeded` or `Failed`.
    pub status: String,
    #[serde(default)]
    pub message: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeploymentView {
    pub id: String,
    pub application: String,
    pub deployment_group: String,
    pub status: String,
    pub deployment_config: String,
    pub routing: String,
    pub task_definition: String,
    pub description: Option<String>,
    pub created_at: u64,
    pub updated_at: u64,
    pub completed_at: Option<u64>,
    pub current_event: Option<String>,
    pub lifecycle_events: Vec<LifecycleEventView>,
    pub traffic: TrafficView,
    pub blue: Option<TaskSetView>,
    pub green: Option<TaskSetView>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub rolled_back: bool,
    /// The next scheduled step, when one is pending (e.g. the next traffic shift).
    pub next_step_at: Option<u64>,
    /// What each canary judge the deployment watches saw in its newest judged period.
    #[serde(default)]
    pub judges: Vec<JudgeView>,
    /// What green answered to its shadow phase's copies, over the whole phase (None: green got
    /// no copy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirrored: Option<MirroredView>,
}

/// A shadow phase's copies to green and what green answered them, next to what blue served its
/// clients in the same seconds (from `crate::judging::MirroredTally`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MirroredView {
    /// Copies sent to green.
    pub copies: u64,
    /// Green's answers by status class.
    pub green_2xx: u64,
    pub green_3xx: u64,
    pub green_4xx: u64,
    pub green_5xx: u64,
    /// Copies green never answered: the 502, 503 or 504 the load balancer would have answered.
    pub green_lb_5xx: u64,
    /// Copies whose status class differed from blue's answer to the client.
    pub mismatches: u64,
    /// Copies not sent: `max_in_flight` were in flight already.
    pub dropped: u64,
    /// Green's response times to the copies, in seconds (None: no answer timed).
    pub green_p50: Option<f64>,
    pub green_p99: Option<f64>,
    /// Requests blue served its clients in the same seconds, and their response times.
    pub blue_requests: u64,
    pub blue_p50: Option<f64>,
    pub blue_p99: Option<f64>,
}

impl MirroredView {
    pub fn of(tally: &crate::judging::MirroredTally) -> MirroredView {
        let (green, blue) = (tally.green_summary(), tally.blue_summary());
        MirroredView {
            copies: tally.copies,
            green_2xx: tally.green_2xx,
            green_3xx: tally.green_3xx,
            green_4xx: tally.green_4xx,
            green_5xx: tally.green_5xx,
            green_lb_5xx: tally.green_lb_5xx,
            mismatches: tally.mismatches,
            dropped: tally.dropped,
            green_p50: green.p50,
            green_p99: green.p99,
            blue_requests: tally.blue_requests,
            blue_p50: blue.p50,
            blue_p99: blue.p99,
        }
    }

    /// Green's copies and blue's clients side by side, `(what, green, blue)`, as `deployments
    /// get` and the console's deployment page show them.
    pub fn side_by_side(&self) -> Vec<(&'static str, String, String)> {
        let dash = || "-".to_string();
        vec![
            ("requests", self.copies.to_string(), self.blue_requests.to_string()),
            ("answered 2xx", self.green_2xx.to_string(), dash()),
            ("answered 3xx", self.green_3xx.to_string(), dash()),
            ("answered 4xx", self.green_4xx.to_string(), dash()),
            ("answered 5xx", self.green_5xx.to_string(), dash()),
            ("load balancer 5xx", self.green_lb_5xx.to_string(), dash()),
            ("class mismatches", self.mismatches.to_string(), dash()),
            ("dropped", self.dropped.to_string(), dash()),
            ("p50", latency(self.green_p50), latency(self.blue_p50)),
            ("p99", latency(self.green_p99), latency(self.blue_p99)),
        ]
    }

    /// In one line, for `watch`: `1200 copies: 0 2xx, 0 3xx, 0 4xx, 1180 5xx, 20 load balancer
    /// 5xx; 1200 differed from blue's status class; 0 dropped; green p50 26.0ms p99 30.0ms vs blue
    /// p50 20.0ms p99 24.0ms`.
    pub fn text(&self) -> String {
        format!(
            "{} copies: {} 2xx, {} 3xx, {} 4xx, {} 5xx, {} load balancer 5xx; {} differed from \
             blue's status class; {} dropped; green p50 {} p99 {} vs blue p50 {} p99 {}",
            self.copies,
            self.green_2xx,
            self.green_3xx,
            self.green_4xx,
            self.green_5xx,
            self.green_lb_5xx,
            self.mismatches,
            self.dropped,
            latency(self.green_p50),
            latency(self.green_p99),
            latency(self.blue_p50),
            latency(self.blue_p99)
        )
    }
}

/// A canary judge's newest judged period: both versions' numbers side by side and the test.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JudgeView {
    pub alarm: String,
    /// The period judged: from `period_start` (Unix ms), `period_secs` long.
    pub period_start: u64,
    pub period_secs: u32,
    pub blue_target_group: String,
    pub green_target_group: String,
    pub judgement: judge::Judgement,
    /// The judgement in words.
    pub reason: String,
    /// What retry on blue spent on green in the same period.
    #[serde(default)]
    pub retries: crate::judging::RetriesSpent,
    /// The shadow phase's copies to green in the same period, when there were any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirrored: Option<MirroredView>,
}

impl JudgeView {
    /// Both versions' numbers side by side, `(what, green, blue)`, as `deployments get`, `watch`
    /// and the console's deployment page show them.
    pub fn side_by_side(&self) -> Vec<(&'static str, String, String)> {
        let (g, b) = (&self.judgement.green, &self.judgement.blue);
        vec![
            ("requests", g.requests.to_string(), b.requests.to_string()),
            ("error rate", percent(g.error_rate), percent(b.error_rate)),
            ("p50", latency(g.p50), latency(b.p50)),
            ("p90", latency(g.p90), latency(b.p90)),
            ("p99", latency(g.p99), latency(b.p99)),
        ]
    }

    /// The verdict in a word or three.
    pub fn verdict(&self) -> &'static str {
        match self.judgement.verdict {
            judge::Verdict::Worse => "WORSE",
            judge::Verdict::NotWorse => "not worse",
            judge::Verdict::TooFewSamples => "too few samples",
        }
    }

    /// The test's result (`Mann–Whitney U z=15.56 p=6.43e-55`), `-` when none was run.
    pub fn test_result(&self) -> String {
        self.judgement
            .test
            .as_ref()
            .map_or("-".to_string(), |t| format!("{} z={:.2} p={:.2e}", t.test, t.z, t.p_value))
    }

    /// Retry on blue in the period: `12 retried on blue, 0 refused by the budget`.
    pub fn retries_text(&self) -> String {
        format!(
            "{} retried on blue, {} refused by the budget",
            self.retries.retries, self.retries.budget_exhausted
        )
    }
}

fn percent(fraction: f64) -> String {
    format!("{:.2}%", fraction * 100.0)
}

fn latency(seconds: Option<f64>) -> String {
    match seconds {
        None => "-".to_string(),
        Some(s) if s < 1.0 => format!("{:.1}ms", s * 1000.0),
        Some(s) => format!("{s:.3}s"),
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LifecycleEventView {
    pub event: String,
    pub status: String,
    pub start_time: Option<u64>,
    pub end_time: Option<u64>,
    pub message: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TrafficView {
    pub blue_target_group: String,
    pub green_target_group: String,
    pub production_green_percent: u8,
    pub test_to_green: bool,
    /// The share of production's requests copied to green (a shadow phase); 0 outside one.
    #[serde(default)]
    pub mirror_percent: u8,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EventView {
    pub seq: i64,
    pub at: u64,
    pub kind: String,
    pub message: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AlarmView {
    /// The alarm's name, or `name@deployment` for an alarm on a deployment's green target group.
    pub key: String,
    pub name: String,
    pub metric: String,
    pub statistic: String,
    pub period_secs: u64,
    pub evaluation_periods: u32,
    pub datapoints_to_alarm: u32,
    pub comparison: String,
    pub threshold: f64,
    pub treat_missing_data: String,
    pub state: String,
    pub reason: String,
    pub state_since: u64,
    /// The datapoints and decision behind the current state.
    pub reason_data: Option<serde_json::Value>,
    pub history: Vec<AlarmTransitionView>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AlarmTransitionView {
    pub at: u64,
    pub from: String,
    pub to: String,
    pub reason: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MetricQueryView {
    pub metric: String,
    pub statistic: String,
    pub period_secs: u64,
    pub datapoints: Vec<MetricPointView>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MetricPointView {
    pub start: u64,
    pub value: f64,
    pub sample_count: u64,
}
