//! The JSON wire types of the pipeline API (`/v1/repos`, `/v1/pipelines`, `/v1/approvals`,
//! `/v1/builds`, `/v1/webhooks`), shared with the CLI.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateRepository {
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repository {
    pub name: String,
    /// `git remote add cutover <clone_url>`.
    pub clone_url: String,
    /// Milliseconds since the epoch.
    pub created_at: u64,
    /// Branch name → commit.
    pub branches: Vec<(String, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineSummary {
    pub name: String,
    pub version: u64,
    /// `repository:NAME` or the URL.
    pub source: String,
    pub branch: String,
    pub execution_mode: String,
    pub stages: Vec<String>,
    /// The newest execution, if any.
    pub latest_execution: Option<ExecutionSummary>,
    /// A changed definition waits for the running executions to finish.
    pub update_pending: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionSummary {
    pub id: String,
    pub pipeline: String,
    pub status: String,
    pub commit: String,
    pub branch: String,
    pub pushed_by: String,
    pub message: String,
    pub started_at: u64,
    pub ended_at: Option<u64>,
    pub status_message: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Execution {
    #[serde(flatten)]
    pub summary: ExecutionSummary,
    pub stages: Vec<Stage>,
    /// The deployments the execution started (ids), in order.
    pub deployments: Vec<String>,
    /// The builds the execution ran (ids), in order.
    pub builds: Vec<String>,
    /// Artifact name → content-addressed id.
    pub artifacts: Vec<(String, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stage {
    pub name: String,
    /// `None` while not reached.
    pub status: Option<String>,
    pub attempt: u32,
    pub started_at: Option<u64>,
    pub ended_at: Option<u64>,
    pub duration_ms: Option<u64>,
    pub message: Option<String>,
    pub actions: Vec<Action>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    pub name: String,
    pub kind: String,
    pub status: Option<String>,
    pub run: u32,
    pub started_at: Option<u64>,
    pub ended_at: Option<u64>,
    pub duration_ms: Option<u64>,
    pub message: Option<String>,
    /// The build id or deployment id.
    pub external_ref: Option<String>,
    /// An approval's decision.
    pub decision: Option<Decision>,
    /// What an approval in progress asks of whoever decides, as its declaration says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<ApprovalRequest>,
}

/// What a manual approval asks: CodePipeline's approval configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRequest {
    /// The question (`comment:`, CodePipeline's `CustomData`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// The page to review before deciding (`review_url:`, CodePipeline's `ExternalEntityLink`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review_url: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub approved: bool,
    pub by: String,
    pub comment: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartPipeline {
    /// A commit to run instead of the branch's head.
    #[serde(default)]
    pub commit: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopExecution {
    /// `true`: stop and abandon; `false`: stop and wait.
    #[serde(default)]
    pub abandon: bool,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryExecution {
    pub stage: String,
    /// `FAILED_ACTIONS` (default) or `ALL_ACTIONS`.
    #[serde(default)]
    pub mode: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalDecision {
    #[serde(default)]
    pub comment: String,
    /// Who decides, only where nothing authenticates the caller (default `api`): behind
    /// `cutover up`'s access layer the decision is recorded as the caller's identity, whatever
    /// this says.
    #[serde(default)]
    pub by: Option<String>,
    /// Which approval, when the execution waits for several.
    #[serde(default)]
    pub stage: Option<String>,
    #[serde(default)]
    pub action: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Build {
    pub id: String,
    pub pipeline: String,
    pub execution_id: String,
    pub stage: String,
    pub action: String,
    pub build_number: u64,
    pub commit: String,
    /// IN_PROGRESS, SUCCEEDED, FAILED, FAULT, TIMED_OUT, STOPPED.
    pub status: String,
    pub started_at: u64,
    pub ended_at: Option<u64>,
    pub phases: Vec<BuildPhase>,
    pub message: Option<String>,
    pub exported_variables: Vec<(String, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildPhase {
    pub phase: String,
    pub status: String,
    pub started_at: Option<u64>,
    pub ended_at: Option<u64>,
    pub duration_ms: u64,
    pub contexts: Vec<String>,
}

/// What `POST /v1/webhooks/{pipeline}` answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookResult {
    /// The execution started, or `None` with the reason it was ignored.
    pub execution_id: Option<String>,
    pub ignored: Option<String>,
}

/// What `apply` did, one line per change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanItem {
    /// `repository` or `pipeline`.
    pub kind: String,
    pub name: String,
    /// `create`, `update`, `update-pending`, `unchanged`, `delete` (a pipeline no longer
    /// declared) or `keep` (a repository no longer declared: its git data is never deleted by
    /// apply).
    pub action: String,
    pub detail: Option<String>,
}
