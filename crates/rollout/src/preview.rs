//! The timeline of a deployment in which everything succeeds at once, for
//! `cutover deployment-configs preview` and the docs.

use std::collections::VecDeque;
use std::time::Duration;

use model::{DeploymentStatus, Timestamp};

use crate::{Effect, Input, Rollout, RolloutSpec};

/// Every effect of `spec`'s deployment with its offset from the start, assuming green is healthy
/// at once, the load balancer serves each routing at once, every hook succeeds at once and a ready
/// wait is continued at once. The traffic shift
/// and the termination wait take their full time: they are the schedule being previewed.
pub fn preview(spec: &RolloutSpec) -> Vec<(Duration, Effect)> {
    let start = Timestamp::ZERO;
    let mut rollout = Rollout::new(spec.clone(), start);
    let mut now = start;
    let mut timeline = Vec::new();
    let mut replies = VecDeque::new();
    // The sequence has 11 steps and a shift at most 100; a limit on everything.
    for _ in 0..1_000 {
        while let Some(effect) = rollout.poll_effect() {
            match &effect {
                Effect::StartGreen => replies.push_back(Input::GreenHealthy),
                Effect::Route { .. } => replies.push_back(Input::RoutesServed),
                Effect::RunHook { execution_id, .. } => replies.push_back(Input::HookResult {
                    execution_id: execution_id.clone(),
                    succeeded: true,
                    message: String::new(),
                }),
                Effect::Status(DeploymentStatus::Ready) => {
                    replies.push_back(Input::ContinueReadyWait)
                }
                _ => {}
            }
            timeline.push((now.since(start), effect));
        }
        if let Some(input) = replies.pop_front() {
            // Only a zero ready wait rejects the continue (it expires at the same instant); the
            // timeline then shows the stop, which is the truth.
            let _ = rollout.handle_input(input, now);
            continue;
        }
        match rollout.poll_timeout() {
            Some(deadline) => {
                now = deadline;
                rollout.handle_timeout(now);
            }
            None => break,
        }
    }
    timeline
}
