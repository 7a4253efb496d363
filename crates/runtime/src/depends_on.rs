//! `dependsOn`, once for both runtimes: which conditions a task may declare, the order its
//! containers start in and the levels they stop in, and whether a condition holds given what a
//! runtime observed of the container waited for. Pure: the runtimes observe and wait, this
//! decides.

use std::collections::HashMap;
use std::fmt;

use crate::{ContainerSpec, Health};

/// ECS's `dependsOn.condition`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    /// The dependency has been started.
    Start,
    /// The dependency ran to completion (any exit code).
    Complete,
    /// The dependency exited with code 0.
    Success,
    /// The dependency's health check passed.
    Healthy,
}

impl Condition {
    pub fn parse(text: &str) -> Option<Condition> {
        Some(match text {
            "START" => Condition::Start,
            "COMPLETE" => Condition::Complete,
            "SUCCESS" => Condition::Success,
            "HEALTHY" => Condition::Healthy,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Start => "START",
            Condition::Complete => "COMPLETE",
            Condition::Success => "SUCCESS",
            Condition::Healthy => "HEALTHY",
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a task's `dependsOn` is invalid; each message says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DependsOnError {
    #[error("container {container} depends on {dependency}, which is not in the task")]
    UnknownContainer { container: String, dependency: String },
    #[error("container {container} depends on itself")]
    OnItself { container: String },
    #[error(
        "container {container} waits for {dependency} to be HEALTHY, but {dependency} has no healthCheck"
    )]
    HealthyWithoutHealthCheck { container: String, dependency: String },
    #[error(
        "container {container} waits for {dependency} to {condition}, which an essential container may not be used for"
    )]
    ExitOfEssential { container: String, dependency: String, condition: Condition },
    #[error(
        "container {container} has dependsOn condition `{condition}`; use START, COMPLETE, SUCCESS or HEALTHY"
    )]
    UnknownCondition { container: String, condition: String },
    #[error("the containers' dependsOn form a cycle")]
    Cycle,
}

/// The order containers start in, and the levels they stop in (reversed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartPlan {
    /// Container indices, each after every container it depends on; declaration order among
    /// containers that are ready together.
    pub order: Vec<usize>,
    /// Container indices grouped by `dependsOn` depth: level 0 depends on nothing.
    pub levels: Vec<Vec<usize>>,
}

/// Checks every `dependsOn` of `containers` (whose names are unique) and orders them.
pub fn plan(containers: &[ContainerSpec]) -> Result<StartPlan, DependsOnError> {
    let index: HashMap<&str, usize> =
        containers.iter().enumerate().map(|(i, c)| (c.name.as_str(), i)).collect();
    let mut deps: Vec<Vec<usize>> = vec![Vec::new(); containers.len()];
    for (i, c) in containers.iter().enumerate() {
        for (name, condition) in &c.depends_on {
            let Some(&j) = index.get(name.as_str()) else {
                return Err(DependsOnError::UnknownContainer {
                    container: c.name.clone(),
                    dependency: name.clone(),
                });
            };
            if i == j {
                return Err(DependsOnError::OnItself { container: c.name.clone() });
            }
            check_condition(c, &containers[j], condition)?;
            deps[i].push(j);
        }
    }
    order(&deps)
}

/// Whether `container` may wait for `dependency` to reach `condition`.
fn check_condition(
    container: &ContainerSpec,
    dependency: &ContainerSpec,
    condition: &str,
) -> Result<Condition, DependsOnError> {
    let names = || (container.name.clone(), dependency.name.clone());
    match Condition::parse(condition) {
        None => Err(DependsOnError::UnknownCondition {
            container: container.name.clone(),
            condition: condition.to_string(),
        }),
        Some(Condition::Healthy) if dependency.health_check.is_none() => {
            let (container, dependency) = names();
            Err(DependsOnError::HealthyWithoutHealthCheck { container, dependency })
        }
        Some(condition @ (Condition::Complete | Condition::Success)) if dependency.essential => {
            let (container, dependency) = names();
            Err(DependsOnError::ExitOfEssential { container, dependency, condition })
        }
        Some(condition) => Ok(condition),
    }
}

/// Kahn's algorithm over `deps[i]` (the containers `i` depends on), keeping declaration order
/// among ready containers.
fn order(deps: &[Vec<usize>]) -> Result<StartPlan, DependsOnError> {
    let n = deps.len();
    let mut level = vec![0usize; n];
    let mut done = vec![false; n];
    let mut order = Vec::with_capacity(n);
    while order.len() < n {
        let next = (0..n).find(|&i| !done[i] && deps[i].iter().all(|&j| done[j]));
        let Some(i) = next else {
            return Err(DependsOnError::Cycle);
        };
        level[i] = deps[i].iter().map(|&j| level[j] + 1).max().unwrap_or(0);
        done[i] = true;
        order.push(i);
    }
    let depth = level.iter().copied().max().unwrap_or(0);
    let levels = (0..=depth).map(|l| (0..n).filter(|&i| level[i] == l).collect()).collect();
    Ok(StartPlan { order, levels })
}

/// What a runtime observed of the container waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    Running(Health),
    /// Exited, with its code when it has one (a signal death reads as 128 + signal).
    Exited(Option<i32>),
}

/// Why a container will not start because of what it waits for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    #[error(
        "container {container} waits for {dependency} to be HEALTHY, but {dependency} exited ({})",
        exit_text(*.code)
    )]
    ExitedBeforeHealthy { container: String, dependency: String, code: Option<i32> },
    #[error(
        "container {container} waits for {dependency} to be HEALTHY, but {dependency} became UNHEALTHY"
    )]
    Unhealthy { container: String, dependency: String },
    #[error(
        "container {container} waits for {dependency} to exit successfully, but it exited ({})",
        exit_text(*.code)
    )]
    Failed { container: String, dependency: String, code: Option<i32> },
    #[error("the task stopped while container {container} waited for {dependency}")]
    TaskStopped { container: String, dependency: String },
    #[error("container {container} waited {secs}s for {dependency} to reach {condition}, in vain")]
    TimedOut { container: String, dependency: String, condition: Condition, secs: u64 },
}

fn exit_text(code: Option<i32>) -> String {
    match code {
        Some(code) => format!("code {code}"),
        None => "without an exit code".to_string(),
    }
}

/// Whether `container`'s wait for `dependency` to reach `condition` is over: `None` while it
/// must go on, `Some(Ok)` when the condition holds, `Some(Err)` when it never will.
pub fn verdict(
    container: &str,
    dependency: &str,
    condition: Condition,
    observed: Observed,
) -> Option<Result<(), WaitError>> {
    let names = || (container.to_string(), dependency.to_string());
    match (condition, observed) {
        (Condition::Start, _) => Some(Ok(())),
        (Condition::Healthy, Observed::Exited(code)) => {
            let (container, dependency) = names();
            Some(Err(WaitError::ExitedBeforeHealthy { container, dependency, code }))
        }
        (Condition::Healthy, Observed::Running(Health::Healthy)) => Some(Ok(())),
        (Condition::Healthy, Observed::Running(Health::Unhealthy)) => {
            let (container, dependency) = names();
            Some(Err(WaitError::Unhealthy { container, dependency }))
        }
        (Condition::Complete, Observed::Exited(_)) => Some(Ok(())),
        (Condition::Success, Observed::Exited(Some(0))) => Some(Ok(())),
        (Condition::Success, Observed::Exited(code)) => {
            let (container, dependency) = names();
            Some(Err(WaitError::Failed { container, dependency, code }))
        }
        (_, Observed::Running(_)) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HealthCheckSpec;

    fn container(name: &str, depends_on: &[(&str, &str)]) -> ContainerSpec {
        let mut c = ContainerSpec::new(name, "/img");
        c.depends_on = depends_on.iter().map(|(n, c)| (n.to_string(), c.to_string())).collect();
        c
    }

    #[test]
    fn start_order_follows_depends_on_and_stop_levels_reverse_it() {
        let containers = [
            container("proxy", &[("app", "START")]),
            container("app", &[("db", "START")]),
            container("db", &[]),
        ];
        let plan = plan(&containers).expect("valid");
        assert_eq!(plan.order, vec![2, 1, 0]);
        assert_eq!(plan.levels, vec![vec![2], vec![1], vec![0]]);
    }

    #[test]
    fn cycles_unknown_names_and_bad_conditions_are_rejected() {
        let cycle = [container("a", &[("b", "START")]), container("b", &[("a", "START")])];
        assert_eq!(plan(&cycle), Err(DependsOnError::Cycle));
        let unknown = [container("a", &[("nope", "START")])];
        assert_eq!(
            plan(&unknown).unwrap_err().to_string(),
            "container a depends on nope, which is not in the task"
        );
        let itself = [container("a", &[("a", "START")])];
        assert_eq!(plan(&itself).unwrap_err().to_string(), "container a depends on itself");
        let mut side = container("side", &[]);
        side.essential = false;
        let healthy = [container("a", &[("side", "HEALTHY")]), side.clone()];
        assert_eq!(
            plan(&healthy).unwrap_err().to_string(),
            "container a waits for side to be HEALTHY, but side has no healthCheck"
        );
        let essential = [container("a", &[("b", "SUCCESS")]), container("b", &[])];
        assert_eq!(
            plan(&essential).unwrap_err().to_string(),
            "container a waits for b to SUCCESS, which an essential container may not be used for"
        );
        let unknown_condition = [container("a", &[("side", "READY")]), side];
        assert_eq!(
            plan(&unknown_condition).unwrap_err().to_string(),
            "container a has dependsOn condition `READY`; use START, COMPLETE, SUCCESS or HEALTHY"
        );
    }

    #[test]
    fn conditions_on_a_checked_dependency_are_accepted() {
        let mut db = container("db", &[]);
        db.health_check = Some(HealthCheckSpec {
            command: vec!["CMD".into(), "true".into()],
            interval: std::time::Duration::from_secs(5),
            timeout: std::time::Duration::from_secs(2),
            retries: 3,
            start_period: std::time::Duration::ZERO,
        });
        let mut init = container("init", &[]);
        init.essential = false;
        let app = container("app", &[("db", "HEALTHY"), ("init", "SUCCESS")]);
        assert_eq!(plan(&[app, db, init]).unwrap().order, vec![1, 2, 0]);
    }

    #[test]
    fn a_wait_ends_when_its_condition_holds_or_never_can() {
        use Condition::*;
        use Observed::*;
        let v = |condition, observed| verdict("app", "db", condition, observed);
        assert_eq!(v(Start, Running(Health::Unknown)), Some(Ok(())));
        assert_eq!(v(Healthy, Running(Health::Unknown)), None);
        assert_eq!(v(Healthy, Running(Health::Healthy)), Some(Ok(())));
        assert_eq!(
            v(Healthy, Running(Health::Unhealthy)).unwrap().unwrap_err().to_string(),
            "container app waits for db to be HEALTHY, but db became UNHEALTHY"
        );
        assert_eq!(
            v(Healthy, Exited(Some(3))).unwrap().unwrap_err().to_string(),
            "container app waits for db to be HEALTHY, but db exited (code 3)"
        );
        assert_eq!(v(Complete, Running(Health::Healthy)), None);
        assert_eq!(v(Complete, Exited(Some(1))), Some(Ok(())));
        assert_eq!(v(Success, Exited(Some(0))), Some(Ok(())));
        assert_eq!(
            v(Success, Exited(Some(1))).unwrap().unwrap_err().to_string(),
            "container app waits for db to exit successfully, but it exited (code 1)"
        );
        assert_eq!(
            v(Success, Exited(None)).unwrap().unwrap_err().to_string(),
            "container app waits for db to exit successfully, but it exited (without an exit code)"
        );
    }
}
