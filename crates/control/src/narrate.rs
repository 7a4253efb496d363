//! A deployment's events in words for someone who has never read cutover's code: what is being
//! done, to which target group, and why it matters. The state machine's effects keep their terse
//! names for logs and traces; the events a user reads (`deployments watch`, `deploy --wait`) say
//! what happens instead.
//!
//! Pure: the words depend only on the effect and the deployment's target groups.

use model::format_duration;
use model::{DeploymentStatus, LifecycleEventStatus};
use rollout::Effect;

/// The deployment's two target groups, for naming where traffic goes.
#[derive(Clone, Copy, Debug)]
pub struct Sides<'a> {
    pub blue_target_group: &'a str,
    pub green_target_group: &'a str,
}

/// One event line for `effect`.
pub fn effect_sentence(effect: &Effect, sides: Sides<'_>) -> String {
    let Sides { blue_target_group: blue, green_target_group: green } = sides;
    match effect {
        Effect::Status(status) => status_sentence(*status),
        Effect::Event { event, status, message } => {
            let what = match status {
                LifecycleEventStatus::Pending => "is pending",
                LifecycleEventStatus::InProgress => "started",
                LifecycleEventStatus::Succeeded => "succeeded",
                LifecycleEventStatus::Failed => "failed",
                LifecycleEventStatus::Skipped => "skipped",
            };
            match message {
                Some(message) => format!("{event} {what}: {message}"),
                None => format!("{event} {what}"),
            }
        }
        Effect::StartGreen => format!(
            "Starting the new version's tasks (green) in target group {green}; they get traffic \
             only once they pass its health check"
        ),
        Effect::RunHook { event, hook, timeout, .. } => format!(
            "Running hook {hook} for {event} (it fails if it has not finished after {})",
            format_duration(*timeout)
        ),
        Effect::CancelHook { execution_id } => {
            format!("Cancelling hook execution {execution_id}: its result is no longer needed")
        }
        Effect::Route { production_green_percent, test_to_green, mirror_percent } => {
            let green_percent = (*production_green_percent).min(100);
            let test =
                if *test_to_green { format!("green ({green})") } else { format!("blue ({blue})") };
            let mut sentence = format!(
                "Routing production traffic: {green_percent}% to green ({green}), {}% to blue \
                 ({blue}); the test listener serves {test}",
                100 - green_percent
            );
            if *mirror_percent > 0 {
                sentence.push_str(&format!(
                    "; a copy of {mirror_percent}% of production's requests goes to green too, \
                     whose answers are measured and discarded (shadow traffic)"
                ));
            }
            sentence
        }
        Effect::StopGreen => format!(
            "Stopping green's tasks ({green}) once their connections drain: blue keeps serving"
        ),
        Effect::TerminateBlue => format!(
            "Stopping the old version's tasks (blue, {blue}) once their connections drain: green \
             is now the service's primary task set"
        ),
        Effect::Finished(outcome) => {
            let mut sentence = format!("The deployment {}", outcome.status.as_str().to_lowercase());
            if outcome.rolled_back {
                sentence.push_str(" and rolled back: all traffic is on blue");
            }
            if let Some((code, message)) = &outcome.error {
                sentence.push_str(&format!(" ({code}: {message})"));
            }
            sentence
        }
    }
}

fn status_sentence(status: DeploymentStatus) -> String {
    match status {
        DeploymentStatus::Created => "Deployment created".into(),
        DeploymentStatus::InProgress => "Deployment in progress".into(),
        DeploymentStatus::Ready => "Ready: green serves the test listener and waits for \
                                    `cutover deployments continue` before production traffic moves"
            .into(),
        DeploymentStatus::Baking => "Baking: green serves all production traffic while blue stays \
                                     warm for an instant rollback until the termination wait ends"
            .into(),
        other => format!("Deployment {}", other.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use expect_test::expect;
    use model::{ErrorCode, LifecycleEvent};
    use rollout::Outcome;

    use super::*;

    #[test]
    fn every_effect_reads_as_a_sentence_that_names_the_target_groups() {
        let sides = Sides { blue_target_group: "web-blue", green_target_group: "web-green" };
        let effects = [
            Effect::Status(DeploymentStatus::InProgress),
            Effect::Event {
                event: LifecycleEvent::Install,
                status: LifecycleEventStatus::InProgress,
                message: None,
            },
            Effect::StartGreen,
            Effect::RunHook {
                event: LifecycleEvent::AfterAllowTestTraffic,
                execution_id: "h-1".into(),
                hook: "smoke-test".into(),
                timeout: Duration::from_secs(90),
            },
            Effect::Route { production_green_percent: 0, test_to_green: true, mirror_percent: 0 },
            Effect::Status(DeploymentStatus::Ready),
            Effect::Route { production_green_percent: 0, test_to_green: true, mirror_percent: 50 },
            Effect::Route { production_green_percent: 20, test_to_green: true, mirror_percent: 0 },
            Effect::Status(DeploymentStatus::Baking),
            Effect::TerminateBlue,
            Effect::Event {
                event: LifecycleEvent::AfterAllowTestTraffic,
                status: LifecycleEventStatus::Failed,
                message: Some("hook smoke-test exited 3".into()),
            },
            Effect::CancelHook { execution_id: "h-2".into() },
            Effect::StopGreen,
            Effect::Finished(Outcome {
                status: DeploymentStatus::Stopped,
                error: Some((ErrorCode::AlarmActive, "alarm green-5xx".into())),
                rolled_back: true,
            }),
            Effect::Finished(Outcome {
                status: DeploymentStatus::Succeeded,
                error: None,
                rolled_back: false,
            }),
        ];
        let text: String =
            effects.iter().map(|e| format!("{}\n", effect_sentence(e, sides))).collect();
        expect![[r#"
            Deployment in progress
            Install started
            Starting the new version's tasks (green) in target group web-green; they get traffic only once they pass its health check
            Running hook smoke-test for AfterAllowTestTraffic (it fails if it has not finished after 1m30s)
            Routing production traffic: 0% to green (web-green), 100% to blue (web-blue); the test listener serves green (web-green)
            Ready: green serves the test listener and waits for `cutover deployments continue` before production traffic moves
            Routing production traffic: 0% to green (web-green), 100% to blue (web-blue); the test listener serves green (web-green); a copy of 50% of production's requests goes to green too, whose answers are measured and discarded (shadow traffic)
            Routing production traffic: 20% to green (web-green), 80% to blue (web-blue); the test listener serves green (web-green)
            Baking: green serves all production traffic while blue stays warm for an instant rollback until the termination wait ends
            Stopping the old version's tasks (blue, web-blue) once their connections drain: green is now the service's primary task set
            AfterAllowTestTraffic failed: hook smoke-test exited 3
            Cancelling hook execution h-2: its result is no longer needed
            Stopping green's tasks (web-green) once their connections drain: blue keeps serving
            The deployment stopped and rolled back: all traffic is on blue (ALARM_ACTIVE: alarm green-5xx)
            The deployment succeeded
        "#]].assert_eq(&text);
    }
}
