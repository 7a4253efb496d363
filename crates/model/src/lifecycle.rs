//! Lifecycle events and statuses, with CodeDeploy's names.

use std::fmt;

/// The lifecycle events of an ECS blue/green deployment, in execution order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LifecycleEvent {
    BeforeInstall,
    Install,
    AfterInstall,
    AllowTestTraffic,
    AfterAllowTestTraffic,
    BeforeAllowTraffic,
    AllowTraffic,
    AfterAllowTraffic,
    End,
}

impl LifecycleEvent {
    pub const ALL: [LifecycleEvent; 9] = [
        LifecycleEvent::BeforeInstall,
        LifecycleEvent::Install,
        LifecycleEvent::AfterInstall,
        LifecycleEvent::AllowTestTraffic,
        LifecycleEvent::AfterAllowTestTraffic,
        LifecycleEvent::BeforeAllowTraffic,
        LifecycleEvent::AllowTraffic,
        LifecycleEvent::AfterAllowTraffic,
        LifecycleEvent::End,
    ];

    /// The five events a user may attach a hook to.
    pub const HOOKABLE: [LifecycleEvent; 5] = [
        LifecycleEvent::BeforeInstall,
        LifecycleEvent::AfterInstall,
        LifecycleEvent::AfterAllowTestTraffic,
        LifecycleEvent::BeforeAllowTraffic,
        LifecycleEvent::AfterAllowTraffic,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleEvent::BeforeInstall => "BeforeInstall",
            LifecycleEvent::Install => "Install",
            LifecycleEvent::AfterInstall => "AfterInstall",
            LifecycleEvent::AllowTestTraffic => "AllowTestTraffic",
            LifecycleEvent::AfterAllowTestTraffic => "AfterAllowTestTraffic",
            LifecycleEvent::BeforeAllowTraffic => "BeforeAllowTraffic",
            LifecycleEvent::AllowTraffic => "AllowTraffic",
            LifecycleEvent::AfterAllowTraffic => "AfterAllowTraffic",
            LifecycleEvent::End => "End",
        }
    }

    pub fn parse(name: &str) -> Option<LifecycleEvent> {
        LifecycleEvent::ALL.into_iter().find(|e| e.as_str() == name)
    }

    pub fn is_hookable(self) -> bool {
        LifecycleEvent::HOOKABLE.contains(&self)
    }
}

impl fmt::Display for LifecycleEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Status of one lifecycle event within a deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LifecycleEventStatus {
    Pending,
    InProgress,
    Succeeded,
    Failed,
    Skipped,
}

impl LifecycleEventStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleEventStatus::Pending => "Pending",
            LifecycleEventStatus::InProgress => "InProgress",
            LifecycleEventStatus::Succeeded => "Succeeded",
            LifecycleEventStatus::Failed => "Failed",
            LifecycleEventStatus::Skipped => "Skipped",
        }
    }

    pub fn parse(name: &str) -> Option<LifecycleEventStatus> {
        [
            LifecycleEventStatus::Pending,
            LifecycleEventStatus::InProgress,
            LifecycleEventStatus::Succeeded,
            LifecycleEventStatus::Failed,
            LifecycleEventStatus::Skipped,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }
}

impl fmt::Display for LifecycleEventStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// CodeDeploy's deployment statuses. `Ready` is the STOP_DEPLOYMENT ready wait; `Baking` is the
/// termination wait (production is 100% green, blue is still warm and a rollback is still possible).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeploymentStatus {
    Created,
    InProgress,
    Ready,
    Baking,
    Succeeded,
    Failed,
    Stopped,
}

impl DeploymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentStatus::Created => "Created",
            DeploymentStatus::InProgress => "InProgress",
            DeploymentStatus::Ready => "Ready",
            DeploymentStatus::Baking => "Baking",
            DeploymentStatus::Succeeded => "Succeeded",
            DeploymentStatus::Failed => "Failed",
            DeploymentStatus::Stopped => "Stopped",
        }
    }

    /// Every status, in the order a deployment can go through them.
    pub const ALL: [DeploymentStatus; 7] = [
        DeploymentStatus::Created,
        DeploymentStatus::InProgress,
        DeploymentStatus::Ready,
        DeploymentStatus::Baking,
        DeploymentStatus::Succeeded,
        DeploymentStatus::Failed,
        DeploymentStatus::Stopped,
    ];

    pub fn parse(name: &str) -> Option<DeploymentStatus> {
        DeploymentStatus::ALL.into_iter().find(|s| s.as_str() == name)
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            DeploymentStatus::Succeeded | DeploymentStatus::Failed | DeploymentStatus::Stopped
        )
    }
}

impl fmt::Display for DeploymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `errorInformation.code` values cutover produces, with CodeDeploy's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    AlarmActive,
    ManualStop,
    Timeout,
    HookExecutionFailure,
    EcsUpdateError,
    CustomerApplicationUnhealthy,
    InvalidRevision,
    InternalError,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::AlarmActive => "ALARM_ACTIVE",
            ErrorCode::ManualStop => "MANUAL_STOP",
            ErrorCode::Timeout => "TIMEOUT",
            ErrorCode::HookExecutionFailure => "HOOK_EXECUTION_FAILURE",
            ErrorCode::EcsUpdateError => "ECS_UPDATE_ERROR",
            ErrorCode::CustomerApplicationUnhealthy => "CUSTOMER_APPLICATION_UNHEALTHY",
            ErrorCode::InvalidRevision => "INVALID_REVISION",
            ErrorCode::InternalError => "INTERNAL_ERROR",
        }
    }

    pub fn parse(name: &str) -> Option<ErrorCode> {
        [
            ErrorCode::AlarmActive,
            ErrorCode::ManualStop,
            ErrorCode::Timeout,
            ErrorCode::HookExecutionFailure,
            ErrorCode::EcsUpdateError,
            ErrorCode::CustomerApplicationUnhealthy,
            ErrorCode::InvalidRevision,
            ErrorCode::InternalError,
        ]
        .into_iter()
        .find(|c| c.as_str() == name)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
