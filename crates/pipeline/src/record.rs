//! What the machine remembers about each execution, stage and action: the statuses with AWS's
//! names, the timings for "stage by stage" views, and the artifacts each execution produced.

use std::fmt;

use model::Timestamp;
use serde::{Deserialize, Serialize};

use crate::spec::ActionKind;

/// Longest artifact id, in bytes.
pub const ARTIFACT_ID_BYTES_MAX: usize = 128;

/// A pipeline execution's status (AWS `PipelineExecutionStatus`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ExecutionStatus {
    InProgress,
    /// A stop was requested and actions are still finishing.
    Stopping,
    Stopped,
    Succeeded,
    Failed,
    /// Replaced, while waiting between stages, by a newer execution (SUPERSEDED mode).
    Superseded,
    /// Not produced by this machine; kept so the control plane can use AWS's full vocabulary
    /// (e.g. for executions it drops when a pipeline's structure changes).
    Cancelled,
}

/// A stage execution's status (AWS `StageExecutionStatus`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum StageStatus {
    InProgress,
    Stopping,
    Stopped,
    Succeeded,
    Failed,
    /// Not produced by this machine (no stage conditions); AWS's vocabulary.
    Skipped,
    /// Not produced by this machine; AWS's vocabulary.
    Cancelled,
}

/// An action execution's status (AWS `ActionExecutionStatus`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ActionStatus {
    InProgress,
    Succeeded,
    Failed,
    /// Given up by a stop (any action with "stop and abandon", an approval with either stop).
    Abandoned,
}

impl ExecutionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionStatus::InProgress => "InProgress",
            ExecutionStatus::Stopping => "Stopping",
            ExecutionStatus::Stopped => "Stopped",
            ExecutionStatus::Succeeded => "Succeeded",
            ExecutionStatus::Failed => "Failed",
            ExecutionStatus::Superseded => "Superseded",
            ExecutionStatus::Cancelled => "Cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        !matches!(self, ExecutionStatus::InProgress | ExecutionStatus::Stopping)
    }
}

impl StageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StageStatus::InProgress => "InProgress",
            StageStatus::Stopping => "Stopping",
            StageStatus::Stopped => "Stopped",
            StageStatus::Succeeded => "Succeeded",
            StageStatus::Failed => "Failed",
            StageStatus::Skipped => "Skipped",
            StageStatus::Cancelled => "Cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        !matches!(self, StageStatus::InProgress | StageStatus::Stopping)
    }
}

impl ActionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionStatus::InProgress => "InProgress",
            ActionStatus::Succeeded => "Succeeded",
            ActionStatus::Failed => "Failed",
            ActionStatus::Abandoned => "Abandoned",
        }
    }
}

macro_rules! display_as_str {
    ($($ty:ty),*) => {$(
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )*};
}

display_as_str!(ExecutionStatus, StageStatus, ActionStatus);

/// The id under which the control plane stores an artifact's content (content-addressed, e.g.
/// `sha256-…`): 1 to [`ARTIFACT_ID_BYTES_MAX`] bytes of `A-Z a-z 0-9 : . _ -`, so that it prints
/// on one line and can name a file.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ArtifactId(String);

/// An artifact id [`ArtifactId::new`] refuses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{shown}` is not a valid artifact id: use 1 to {ARTIFACT_ID_BYTES_MAX} bytes of A-Z a-z 0-9 \
     : . _ -"
)]
pub struct InvalidArtifactId {
    /// The id, cut and escaped to print on one line.
    pub shown: String,
}

impl ArtifactId {
    pub fn new(id: impl Into<String>) -> Result<ArtifactId, InvalidArtifactId> {
        let id = id.into();
        let valid = !id.is_empty()
            && id.len() <= ARTIFACT_ID_BYTES_MAX
            && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '.' | '_' | '-'));
        if valid {
            Ok(ArtifactId(id))
        } else {
            let cut: String = id.chars().take(ARTIFACT_ID_BYTES_MAX).collect();
            Err(InvalidArtifactId { shown: cut.escape_debug().to_string() })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ArtifactId {
    type Error = InvalidArtifactId;
    fn try_from(id: String) -> Result<ArtifactId, InvalidArtifactId> {
        ArtifactId::new(id)
    }
}

impl From<ArtifactId> for String {
    fn from(id: ArtifactId) -> String {
        id.0
    }
}

impl fmt::Display for ArtifactId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The source revision an execution builds: what `executions` lists next to each execution.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revision {
    pub commit: String,
    pub branch: String,
    pub pushed_by: String,
    pub message: String,
}

/// Where an active execution is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Position {
    /// Inside the stage with this index (it holds the stage's lock).
    InStage(usize),
    /// Between stages, waiting in front of the stage with this index.
    Waiting(usize),
    /// Finished.
    Done,
}

/// A stop that was asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopRequest {
    pub abandon: bool,
    pub reason: String,
}

/// One execution: the revision, where it is, and every stage's and action's record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionRecord {
    /// Allocated by the control plane.
    pub id: String,
    /// Arrival order in this pipeline, from 1: "newer" means a higher `seq`.
    pub seq: u64,
    pub revision: Revision,
    pub status: ExecutionStatus,
    /// Why it waits, stopped, failed or was superseded.
    pub message: Option<String>,
    pub started: Timestamp,
    pub ended: Option<Timestamp>,
    pub position: Position,
    pub stop: Option<StopRequest>,
    /// One per stage of the spec, in order.
    pub stages: Vec<StageRecord>,
    /// Every artifact this execution has produced so far, the source artifact first, by name.
    pub artifacts: Vec<(String, ArtifactId)>,
}

/// One stage of one execution. `status: None` means the execution has not reached it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageRecord {
    pub name: String,
    pub status: Option<StageStatus>,
    /// 1 on the first entry, plus one per retry.
    pub attempt: u32,
    pub started: Option<Timestamp>,
    pub ended: Option<Timestamp>,
    pub message: Option<String>,
    /// One per action of the stage's spec, in order.
    pub actions: Vec<ActionRecord>,
}

/// One action of one stage of one execution. `status: None` means it has not run in the stage's
/// current attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionRecord {
    pub name: String,
    pub kind: ActionKind,
    pub status: Option<ActionStatus>,
    /// How many times it was started (its latest run's number), from 1.
    pub run: u32,
    pub started: Option<Timestamp>,
    pub ended: Option<Timestamp>,
    /// While in progress: when it times out.
    pub deadline: Option<Timestamp>,
    pub message: Option<String>,
    /// The build id, deployment id, ... the control plane reported.
    pub external_ref: Option<String>,
    pub inputs: Vec<(String, ArtifactId)>,
    pub outputs: Vec<(String, ArtifactId)>,
    /// `Effect::CancelAction` was emitted for the latest run.
    pub cancel_requested: bool,
    /// An approval's decision.
    pub decision: Option<Decision>,
}

/// Who approved or rejected, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub approved: bool,
    pub by: String,
    pub comment: String,
}

impl ExecutionRecord {
    /// The stage the execution is in or waiting for.
    pub fn current_stage(&self) -> Option<usize> {
        match self.position {
            Position::InStage(s) | Position::Waiting(s) => Some(s),
            Position::Done => None,
        }
    }

    /// The id of the artifact called `name`, if this execution produced it.
    pub fn artifact(&self, name: &str) -> Option<&ArtifactId> {
        self.artifacts.iter().find(|(it, _)| it == name).map(|(_, id)| id)
    }
}
