//! What the engine hears, as the reconciler's observations: runtime answers, the data plane's
//! reports and the API's deployment commands. Pure translations, so that what each message means
//! to the reconciler is read in one place.

use reconciler::{Command, ContainerHealth, Observation, TaskProbe, Wait};
use routes::HealthReport;
use runtime::{TaskHandle, TaskState};

use crate::error::ApiError;

/// The runtime's answer to a start.
pub fn task_started(task_id: String, result: Result<TaskHandle, String>) -> Observation {
    match result {
        // The handle is opaque to the reconciler: it keeps the runtime's JSON.
        Ok(handle) => match serde_json::to_string(&handle) {
            Ok(json) => Observation::TaskStarted { task_id, handle: json, addr: handle.addr },
            Err(err) => Observation::TaskFailedToStart { task_id, reason: err.to_string() },
        },
        Err(reason) => Observation::TaskFailedToStart { task_id, reason },
    }
}

/// What a runtime said about a task it was asked about.
pub fn task_inspected(task_id: String, state: TaskState) -> Observation {
    let state = match state {
        TaskState::Running { health } => TaskProbe::Running { container: container_health(health) },
        TaskState::Exited { code, reason } => TaskProbe::Exited { code, reason },
        TaskState::Gone => TaskProbe::Gone,
    };
    Observation::TaskInspected { task_id, state }
}

pub fn container_health(health: runtime::Health) -> ContainerHealth {
    match health {
        runtime::Health::Healthy => ContainerHealth::Healthy,
        runtime::Health::Unhealthy => ContainerHealth::Unhealthy,
        runtime::Health::Unknown => ContainerHealth::Unknown,
    }
}

/// The data plane's health report, as far as decisions go: each target's state, not its
/// requests in flight, so a report that differs only in traffic changes nothing worth writing.
pub fn target_health(mut report: HealthReport) -> Observation {
    for target in report.target_groups.values_mut().flatten() {
        target.in_flight = 0;
    }
    Observation::TargetHealth(report)
}

/// The data plane's answer to the push of table `version`.
pub fn routes_pushed(version: u64, result: Result<(), String>) -> Observation {
    match result {
        Ok(()) => Observation::RoutesApplied { version },
        Err(error) => Observation::RoutesFailed { version, error },
    }
}

/// `deployments continue --wait …`: the wait to end, by its API name.
pub fn wait(name: &str) -> Result<Wait, ApiError> {
    match name {
        "READY_WAIT" => Ok(Wait::Ready),
        "TERMINATION_WAIT" => Ok(Wait::Termination),
        other => Err(ApiError::bad_request(format!(
            "unknown wait `{other}`; use READY_WAIT or TERMINATION_WAIT"
        ))),
    }
}

pub fn stop(deployment_id: String, rollback: Option<bool>) -> Observation {
    Observation::Command(Command::Stop { deployment_id, rollback })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_started_task_keeps_the_runtime_s_handle_and_its_address() {
        let handle = TaskHandle {
            task_id: "t-1".into(),
            runtime_id: "4242".into(),
            addr: Some("127.0.0.9:8080".parse().unwrap()),
            started_at_ms: 1,
        };
        let Observation::TaskStarted { task_id, handle: json, addr } =
            task_started("t-1".into(), Ok(handle.clone()))
        else {
            panic!("not a start")
        };
        assert_eq!((task_id.as_str(), addr), ("t-1", handle.addr));
        assert_eq!(serde_json::from_str::<TaskHandle>(&json).unwrap(), handle);
        assert_eq!(
            task_started("t-2".into(), Err("no such image".into())),
            Observation::TaskFailedToStart {
                task_id: "t-2".into(),
                reason: "no such image".into()
            }
        );
    }

    #[test]
    fn a_health_report_is_observed_without_its_requests_in_flight() {
        let target = |in_flight| routes::TargetHealth {
            addr: "127.0.0.9:8080".parse().unwrap(),
            state: routes::TargetState::Healthy,
            reason: None,
            description: None,
            in_flight,
        };
        let report = |in_flight| HealthReport {
            version: 3,
            target_groups: [("web-blue".to_string(), vec![target(in_flight)])].into(),
        };
        assert_eq!(target_health(report(17)), target_health(report(0)));
        assert_eq!(target_health(report(17)), Observation::TargetHealth(report(0)));
    }

    #[test]
    fn an_unknown_wait_is_refused_naming_the_two_there_are() {
        assert_eq!(wait("READY_WAIT").unwrap(), Wait::Ready);
        assert_eq!(wait("TERMINATION_WAIT").unwrap(), Wait::Termination);
        let err = wait("COFFEE").unwrap_err();
        assert_eq!(err.body.error, "unknown wait `COFFEE`; use READY_WAIT or TERMINATION_WAIT");
    }
}
