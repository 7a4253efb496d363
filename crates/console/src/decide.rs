//! What the pages show, decided without IO: which actions a deployment offers to whom, where it
//! stands in its config's schedule, and times and durations as people read them.

use control::access::decision::{Binding, Decision, decide};
use control::access::permissions::{Permission, Resource};
use control::api::DeploymentView;
use model::TrafficRouting;

use crate::layout::Button;

/// A button of the deployment page: one of the API's actions on the deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Action {
    /// What the button says (the AWS console's words).
    pub label: &'static str,
    /// The endpoint under `/v1/deployments/{id}/`.
    pub endpoint: &'static str,
    /// The JSON body it sends.
    pub body: &'static str,
    /// What the confirmation says will happen.
    pub confirm: &'static str,
    /// Whether it takes traffic away from green (drawn as a dangerous action).
    pub danger: bool,
}

impl Action {
    /// Its button on the page of deployment `id`.
    pub fn button(&self, id: &str) -> Button {
        Button {
            label: self.label.into(),
            endpoint: format!("/v1/deployments/{id}/{}", self.endpoint),
            body: self.body.into(),
            confirm: self.confirm.into(),
            danger: self.danger,
            comment: false,
        }
    }
}

const CONTINUE: Action = Action {
    label: "Reroute traffic",
    endpoint: "continue",
    body: r#"{"wait":"READY_WAIT"}"#,
    confirm: "End the ready wait: production traffic starts moving to green by the deployment \
              config's schedule.",
    danger: false,
};
const TERMINATE: Action = Action {
    label: "Terminate original task set",
    endpoint: "continue",
    body: r#"{"wait":"TERMINATION_WAIT"}"#,
    confirm: "End the termination wait now: blue drains and stops, and a rollback is no longer \
              instant.",
    danger: false,
};
const STOP: Action = Action {
    label: "Stop deployment",
    endpoint: "stop",
    body: r#"{"rollback":false}"#,
    confirm: "Stop the deployment where it is: traffic stays as it is now, on blue and green.",
    danger: true,
};
const STOP_AND_ROLL_BACK: Action = Action {
    label: "Stop and roll back",
    endpoint: "rollback",
    body: "{}",
    confirm: "Stop the deployment and put production and test traffic back on blue in one \
              routing change; green is stopped.",
    danger: true,
};
const ROLL_BACK: Action = Action {
    label: "Roll back",
    endpoint: "rollback",
    body: "{}",
    confirm: "Put production and test traffic back on blue, which is still running, in one \
              routing change; green is stopped.",
    danger: true,
};

/// The actions valid for `view` now that `bindings` may take, in the order the page shows them.
pub fn actions(view: &DeploymentView, bindings: &[Binding]) -> Vec<Action> {
    let valid: &[(Permission, Action)] = match view.status.as_str() {
        "Created" | "InProgress" => {
            &[(Permission::Stop, STOP), (Permission::Rollback, STOP_AND_ROLL_BACK)]
        }
        "Ready" => &[
            (Permission::Continue, CONTINUE),
            (Permission::Stop, STOP),
            (Permission::Rollback, STOP_AND_ROLL_BACK),
        ],
        "Baking" => &[(Permission::Continue, TERMINATE), (Permission::Rollback, ROLL_BACK)],
        _ => &[],
    };
    let group =
        Resource::DeploymentGroup(format!("{}/{}", view.application, view.deployment_group));
    valid
        .iter()
        .filter(|(permission, _)| decide(bindings, *permission, &group) == Decision::Allow)
        .map(|(_, action)| action.clone())
        .collect()
}

/// One step of the shift schedule as the page shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// After the start of the shift (AllowTraffic), in milliseconds.
    pub after_ms: u64,
    pub green_percent: u8,
    /// When it happened or is due, once the shift has started.
    pub at: Option<u64>,
    pub state: StepState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepState {
    Done,
    /// The step production traffic is at now.
    Current,
    Pending,
}

/// The config's schedule with the step production is at now marked. The shift starts when the
/// AllowTraffic event does; a deployment rolled back ends with no step current.
pub fn schedule(routing: &TrafficRouting, view: &DeploymentView) -> Vec<Step> {
    let started =
        view.lifecycle_events.iter().find(|e| e.event == "AllowTraffic").and_then(|e| e.start_time);
    let percent = view.traffic.production_green_percent;
    let steps = routing.schedule();
    let current = steps.iter().rposition(|s| percent > 0 && s.green_percent <= percent);
    steps
        .iter()
        .enumerate()
        .map(|(i, shift)| {
            let after_ms = shift.after.as_millis() as u64;
            Step {
                after_ms,
                green_percent: shift.green_percent,
                at: started.map(|start| start + after_ms),
                state: match current {
                    Some(c) if i < c => StepState::Done,
                    Some(c) if i == c => StepState::Current,
                    _ => StepState::Pending,
                },
            }
        })
        .collect()
}

/// A time of day in UTC, as the tables show it (`14:02:07`); the date is in its title.
pub fn clock_time(ms: u64) -> String {
    let secs = ms / 1000;
    format!("{:02}:{:02}:{:02}", (secs / 3600) % 24, (secs / 60) % 60, secs % 60)
}

/// A duration as people read it: `850ms`, `12.4s`, `3m07s`, `2h05m`.
pub fn duration(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60),
        _ => format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60),
    }
}

/// Whether a deployment's status is final.
pub fn is_final(status: &str) -> bool {
    matches!(status, "Succeeded" | "Failed" | "Stopped")
}

#[cfg(test)]
mod tests {
    use super::*;
    use control::api::{LifecycleEventView, TrafficView};
    use std::time::Duration;

    fn view(status: &str, percent: u8) -> DeploymentView {
        DeploymentView {
            id: "d-1".into(),
            application: "web".into(),
            deployment_group: "web-prod".into(),
            status: status.into(),
            deployment_config: "canary".into(),
            routing: String::new(),
            task_definition: "web:2".into(),
            description: None,
            created_at: 0,
            updated_at: 0,
            completed_at: None,
            current_event: None,
            lifecycle_events: vec![LifecycleEventView {
                event: "AllowTraffic".into(),
                status: "InProgress".into(),
                start_time: Some(10_000),
                end_time: None,
                message: None,
            }],
            traffic: TrafficView { production_green_percent: percent, ..Default::default() },
            blue: None,
            green: None,
            error_code: None,
            error_message: None,
            rolled_back: false,
            next_step_at: None,
            judges: Vec::new(),
            mirrored: None,
        }
    }

    fn labels(status: &str, binding: Binding) -> Vec<&'static str> {
        actions(&view(status, 0), &[binding]).iter().map(|a| a.label).collect()
    }

    fn role(name: &str, scope: &str) -> Binding {
        Binding::new(Some(name), &[], &[scope.to_string()]).unwrap()
    }

    #[test]
    fn each_action_is_offered_only_while_valid_and_only_to_whom_may_take_it() {
        let deployer = || role("deployer", "web/*");
        assert_eq!(labels("InProgress", deployer()), ["Stop deployment", "Stop and roll back"]);
        assert_eq!(
            labels("Ready", deployer()),
            ["Reroute traffic", "Stop deployment", "Stop and roll back"]
        );
        assert_eq!(labels("Baking", deployer()), ["Terminate original task set", "Roll back"]);
        for done in ["Succeeded", "Failed", "Stopped"] {
            assert!(labels(done, deployer()).is_empty(), "{done}");
        }
        assert!(labels("Ready", role("viewer", "*")).is_empty(), "a viewer gets no button");
        assert!(labels("Ready", role("deployer", "api/*")).is_empty(), "another team's group");
        let only_continue = Binding::new(None, &["continue".into()], &["*".into()]).unwrap();
        assert_eq!(labels("Ready", only_continue), ["Reroute traffic"]);
    }

    #[test]
    fn the_schedule_marks_the_step_production_is_at() {
        let canary = TrafficRouting::Canary { percent: 20, interval: Duration::from_secs(300) };
        let states = |percent| {
            schedule(&canary, &view("InProgress", percent))
                .iter()
                .map(|s| (s.green_percent, s.state, s.at))
                .collect::<Vec<_>>()
        };
        use StepState::*;
        assert_eq!(states(0), [(20, Pending, Some(10_000)), (100, Pending, Some(310_000))]);
        assert_eq!(states(20), [(20, Current, Some(10_000)), (100, Pending, Some(310_000))]);
        assert_eq!(states(100), [(20, Done, Some(10_000)), (100, Current, Some(310_000))]);
    }

    #[test]
    fn times_and_durations_read_as_people_write_them() {
        assert_eq!(clock_time(1_796_553_877_999), "10:44:37");
        assert_eq!(duration(850), "850ms");
        assert_eq!(duration(12_400), "12.4s");
        assert_eq!(duration(187_000), "3m07s");
        assert_eq!(duration(7_500_000), "2h05m");
    }
}
