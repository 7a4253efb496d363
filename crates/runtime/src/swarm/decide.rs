//! The Swarm runtime's decisions, pure: what service spec a task becomes, and what a service's
//! Swarm tasks and their nodes say about the cutover task.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use bollard::models::{
    EndpointSpec, EndpointSpecModeEnum, HealthConfig, Limit, NetworkAttachmentConfig,
    ResourceObject, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated,
    TaskSpec as SwarmTaskSpec, TaskSpecContainerSpec, TaskSpecPlacement, TaskSpecResources,
    TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum,
};

use crate::docker::{
    LABEL_DEPLOYMENT, LABEL_INSTANCE, LABEL_REVISION, LABEL_SERVICE, LABEL_SPEC, LABEL_STARTED,
    LABEL_TASK, parse_task_cpu, parse_task_memory,
};
use crate::{Health, RuntimeError, TaskSpec, TaskState};

/// The overlay network tasks join when their spec names none (`scripts/cluster` creates it).
pub const DEFAULT_OVERLAY: &str = "cutover-overlay";

/// Swarm service names are DNS labels: at most 63 characters.
const SERVICE_NAME_MAX: usize = 63;

/// The Swarm service that runs task `task_id`: `cutover-<task id>`, or, for a task id too long
/// for a DNS label, its start and a hash of the whole (the label `cutover.task-id` is what
/// identifies the task; the name only has to be unique and readable in `docker service ls`).
pub fn service_name(task_id: &str) -> String {
    let name = format!("cutover-{task_id}").to_ascii_lowercase().replace(['_', '.'], "-");
    if name.len() <= SERVICE_NAME_MAX && name == format!("cutover-{task_id}") {
        return name;
    }
    // FNV-1a: stable across processes and versions, unlike std's hasher.
    let hash = task_id
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    let keep = SERVICE_NAME_MAX - 17;
    let head: String = name.chars().take(keep).collect();
    format!("{}-{hash:016x}", head.trim_end_matches('-'))
}

/// What the service of a task is built from, besides the task itself.
pub struct Placement<'a> {
    /// The image reference every node pulls: a registry digest (`host/name@sha256:…`).
    pub image: &'a str,
    pub network: &'a str,
    pub instance: &'a str,
    pub started_at_ms: u64,
    /// The worker chosen by [`spread`], if any.
    pub node_id: Option<&'a str>,
}

/// A worker that can take a task, and how many running tasks it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLoad {
    pub id: String,
    pub hostname: String,
    /// Tasks of the task set the new task belongs to.
    pub of_task_set: usize,
    pub all: usize,
}

/// Whether a node with these labels meets every `node.labels.NAME==VALUE` (or `!=`) constraint,
/// as Swarm decides it: a missing label is not equal to any value.
pub fn meets(labels: &HashMap<String, String>, constraints: &[String]) -> bool {
    constraints.iter().all(|c| {
        let (key, equal, value) = match (c.split_once("!="), c.split_once("==")) {
            (Some((k, v)), _) => (k, false, v),
            (None, Some((k, v))) => (k, true, v),
            (None, None) => return false,
        };
        let Some(name) = key.trim().strip_prefix("node.labels.") else { return true };
        (labels.get(name).map(String::as_str) == Some(value.trim())) == equal
    })
}

/// ECS's `spread` placement for a task set: the worker with the fewest of the task set's tasks,
/// then the fewest tasks of any kind, then the first by name, so that a task set survives the
/// loss of one node with as many tasks as it can. Swarm's own scheduler spreads only the
/// replicas of one service, and each cutover task is a service of its own.
pub fn spread(nodes: &[NodeLoad]) -> Option<&NodeLoad> {
    nodes.iter().min_by(|a, b| {
        (a.of_task_set, a.all, &a.hostname).cmp(&(b.of_task_set, b.all, &b.hostname))
    })
}

/// The service spec of a task: one replica, `dnsrr` on the overlay, never restarted by Swarm.
///
/// cutover, not Swarm, replaces a task that ended: its engine counts a task set's failures in a
/// row (three fail a green), backs off restarts and registers the replacement's new address in
/// the target group; a Swarm restart would hide a crash loop from all three and leave the target
/// group pointing at the old address. Swarm places the task (spreading over nodes, honouring
/// constraints) and moves nothing once it is placed.
pub fn service_spec(spec: &TaskSpec, at: &Placement<'_>) -> Result<ServiceSpec, RuntimeError> {
    let [c] = spec.containers.as_slice() else {
        return Err(RuntimeError::InvalidSpec {
            task_id: spec.task_id.clone(),
            detail: format!(
                "the swarm runtime runs one container per task (a Swarm service has no pods, so \
                 containers cannot share a task's network namespace), found {}; run sidecars \
                 as services of their own, or use `runtime: docker`",
                spec.containers.len()
            ),
        });
    };
    // The container has its own network namespace: it listens on every address of it.
    let variables = crate::task_variables(spec, c, "0.0.0.0");
    let env: Vec<String> =
        c.environment.iter().chain(&variables).map(|(k, v)| format!("{k}={v}")).collect();

    let mut labels = HashMap::from([
        (LABEL_TASK.to_string(), spec.task_id.clone()),
        (LABEL_INSTANCE.to_string(), at.instance.to_string()),
        (LABEL_SERVICE.to_string(), spec.service.clone()),
        (LABEL_REVISION.to_string(), spec.revision.clone()),
        (LABEL_STARTED.to_string(), at.started_at_ms.to_string()),
    ]);
    if let Some(d) = &spec.deployment_id {
        labels.insert(LABEL_DEPLOYMENT.to_string(), d.clone());
    }
    let mut container_labels: HashMap<String, String> =
        c.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    container_labels.extend(labels.clone());
    labels.insert(LABEL_SPEC.to_string(), serde_json::to_string(spec).unwrap_or_default());

    let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
    let health_check = c.health_check.as_ref().map(|h| HealthConfig {
        test: Some(h.command.clone()),
        interval: Some(nanos(h.interval)),
        timeout: Some(nanos(h.timeout)),
        retries: Some(i64::from(h.retries)),
        start_period: Some(nanos(h.start_period)),
        start_interval: None,
    });
    let container_spec = TaskSpecContainerSpec {
        image: Some(at.image.to_string()),
        labels: Some(container_labels),
        command: (!c.entry_point.is_empty()).then(|| c.entry_point.clone()),
        args: (!c.command.is_empty()).then(|| c.command.clone()),
        env: Some(env),
        dir: c.working_directory.clone(),
        stop_grace_period: Some(nanos(c.stop_timeout)),
        health_check,
        ..Default::default()
    };
    let network = vec![NetworkAttachmentConfig {
        target: Some(at.network.to_string()),
        ..Default::default()
    }];
    Ok(ServiceSpec {
        name: Some(service_name(&spec.task_id)),
        labels: Some(labels),
        task_template: Some(SwarmTaskSpec {
            container_spec: Some(container_spec),
            resources: Some(resources(spec)),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
                ..Default::default()
            }),
            // Workers only: the manager runs cutover's control plane.
            placement: Some(TaskSpecPlacement {
                constraints: Some(
                    std::iter::once("node.role==worker".to_string())
                        .chain(spec.placement_constraints.iter().cloned())
                        .chain(at.node_id.map(|id| format!("node.id=={id}")))
                        .collect(),
                ),
                ..Default::default()
            }),
            networks: Some(network),
            ..Default::default()
        }),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
            ..Default::default()
        }),
        endpoint_spec: Some(EndpointSpec {
            mode: Some(EndpointSpecModeEnum::DNSRR),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// ECS sizes as Swarm resources: the hard `memory` (the container's, else the task's) and the
/// task's `cpu` are limits; `memoryReservation` and the container's `cpu` units are
/// reservations, which Swarm's scheduler places by, as ECS places by them.
fn resources(spec: &TaskSpec) -> TaskSpecResources {
    const MIB: i64 = 1024 * 1024;
    let c = &spec.containers[0];
    let task_memory = spec.memory.as_deref().and_then(parse_task_memory);
    let memory =
        c.memory_mib.map(|m| i64::from(m) * MIB).or(task_memory.map(|m| (m * MIB as f64) as i64));
    let cpu_nanos = |units: f64| ((units / 1024.0) * 1e9) as i64;
    TaskSpecResources {
        limits: Some(Limit {
            nano_cpus: spec.cpu.as_deref().and_then(parse_task_cpu).map(cpu_nanos),
            memory_bytes: memory,
            pids: None,
        }),
        reservations: Some(ResourceObject {
            nano_cpus: c.cpu.map(|units| cpu_nanos(f64::from(units))),
            memory_bytes: c.memory_reservation_mib.map(|m| i64::from(m) * MIB),
            generic_resources: None,
        }),
    }
}

/// One Swarm task of a service, as far as the decisions need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// Swarm's state: `new`, `pending`, `assigned`, …, `starting`, `running`, `complete`,
    /// `failed`, `shutdown`, `rejected`, `orphaned`, `remove`.
    pub state: String,
    /// `running` or `shutdown`.
    pub desired: String,
    /// Swarm's error (`task: non-zero exit (137)`, `no suitable node (…)`), else its message.
    pub error: Option<String>,
    pub message: String,
    pub exit_code: Option<i64>,
    /// The node's hostname, and whether Swarm still hears from it.
    pub node: Option<(String, bool)>,
    pub ip: Option<Ipv4Addr>,
}

/// Whether Swarm's task reaper has yet to delete a task of a service scaled to zero: one meant
/// to be removed (`desired: remove`) on a node that still reports. Deleting the service before
/// the reaper is done crashes the Swarm manager of Docker 20.10 (Debian's `docker.io`): the
/// engine lists the service's tasks, the reaper deletes one, and the engine then updates the
/// task it can no longer find (`SetServiceTasksRemove`, a nil dereference). A task on a lost
/// node is never reaped, so it is not waited for.
pub fn reaper_pending(tasks: &[Observed]) -> bool {
    tasks.iter().any(|t| t.desired == "remove" && t.node.as_ref().is_none_or(|(_, up)| *up))
}

/// Whether a task's service may be deleted: cutover scaled it to zero, or none of its Swarm
/// tasks can still run. A task on a node Swarm lost reads `running` until the node returns,
/// which may be never: it is over (as [`task_state`] reports it), and the returning node stops
/// the container of a service that is gone.
pub fn may_remove(replicas: u64, tasks: &[Observed]) -> bool {
    let may_run = |t: &Observed| !is_over(&t.state) && t.node.as_ref().is_none_or(|(_, up)| *up);
    replicas == 0 || !tasks.iter().any(may_run)
}

/// What a task's service says: its newest Swarm task decides.
///
/// A task on a node Swarm lost contact with is over as far as cutover is concerned (it cannot be
/// reached, and Swarm will not report it again until the node returns): it is `Exited` naming
/// the node, so that the engine starts a replacement on a live node. `replicas` is the service's
/// replica count: 0 means cutover stopped it.
pub fn task_state(tasks: &[Observed], replicas: u64, has_health_check: bool) -> TaskState {
    let Some(t) = tasks.first() else {
        if replicas == 0 {
            return stopped_by_cutover();
        }
        return TaskState::Running { health: Health::Unknown };
    };
    let on = t.node.as_ref().map(|(n, _)| format!(" on {n}")).unwrap_or_default();
    // Swarm marks a lost node's tasks for shutdown at once but cannot tell the node: their state
    // stays what the node last reported (`running`), so the node's liveness decides.
    if let Some((node, false)) = &t.node
        && !is_over(&t.state)
    {
        if replicas == 0 {
            return stopped_by_cutover();
        }
        return TaskState::Exited {
            code: None,
            reason: format!(
                "node {node} is down: Swarm lost contact with it, so its task cannot be reached"
            ),
        };
    }
    match t.state.as_str() {
        "running" => TaskState::Running {
            // Swarm holds a task with a health check in `starting` until it is healthy, and
            // ends it when it turns unhealthy: running with a check is healthy.
            health: if has_health_check { Health::Healthy } else { Health::Unknown },
        },
        "new" | "allocated" | "pending" | "assigned" | "accepted" | "preparing" | "ready"
        | "starting" => TaskState::Running { health: Health::Unknown },
        // Scaled to zero by `stop`: Swarm marks the task `shutdown` or `remove`; one that had
        // failed before keeps its own reason.
        _ if replicas == 0 && t.error.is_none() => stopped_by_cutover(),
        state => {
            let why = t.error.clone().unwrap_or_else(|| t.message.clone());
            TaskState::Exited {
                code: t.exit_code.and_then(|c| i32::try_from(c).ok()),
                reason: format!("Swarm task {state}{on}: {why}"),
            }
        }
    }
}

/// Whether Swarm's task state is an end state (the node reported the task gone).
pub fn is_over(state: &str) -> bool {
    matches!(state, "complete" | "failed" | "shutdown" | "rejected" | "orphaned" | "remove")
}

fn stopped_by_cutover() -> TaskState {
    TaskState::Exited { code: None, reason: "stopped by cutover".into() }
}

/// Why a task that is not running yet never will, if Swarm says so: it was rejected or failed
/// while starting, or no node can take it (Swarm would keep it pending forever).
pub fn start_failure(t: &Observed) -> Option<String> {
    let on = t.node.as_ref().map(|(n, _)| format!(" on {n}")).unwrap_or_default();
    match t.state.as_str() {
        "failed" | "rejected" | "complete" | "shutdown" | "orphaned" | "remove" => Some(format!(
            "Swarm task {}{on}: {}",
            t.state,
            t.error.clone().unwrap_or_else(|| t.message.clone())
        )),
        "pending" => t
            .error
            .as_ref()
            .filter(|e| e.contains("no suitable node"))
            .map(|e| format!("Swarm cannot place the task: {e}")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ContainerSpec, HealthCheckSpec};

    fn observed(state: &str, desired: &str) -> Observed {
        Observed {
            state: state.into(),
            desired: desired.into(),
            error: None,
            message: "started".into(),
            exit_code: None,
            node: Some(("node2".into(), true)),
            ip: Some(Ipv4Addr::new(10, 98, 0, 7)),
        }
    }

    /// See issue 17: `cutover down` after a node loss left the lost node's task services at
    /// 0/1, since their tasks still read `running` and removing them was refused forever.
    #[test]
    fn a_service_whose_task_is_on_a_lost_node_may_be_removed_and_one_running_on_a_live_node_not() {
        let on_lost_node =
            Observed { node: Some(("node3".into(), false)), ..observed("running", "shutdown") };
        assert!(may_remove(1, &[on_lost_node]), "its node will never report it over");
        assert!(!may_remove(1, &[observed("running", "running")]));
        assert!(may_remove(0, &[observed("running", "shutdown")]), "scaled to zero by cutover");
        assert!(may_remove(1, &[observed("failed", "shutdown")]));
        assert!(may_remove(1, &[]));
    }

    #[test]
    fn a_task_becomes_one_replica_on_the_overlay_in_dnsrr_mode_that_swarm_never_restarts() {
        let mut spec = TaskSpec::new("web-7", "web", "web:3");
        let mut c = ContainerSpec::new("web", "ignored");
        c.entry_point = vec!["/app".into()];
        c.command = vec!["--port".into(), "8080".into()];
        c.ports = vec![8080];
        c.memory_mib = Some(256);
        c.memory_reservation_mib = Some(128);
        c.cpu = Some(512);
        c.health_check = Some(HealthCheckSpec::new(vec!["CMD".into(), "/app".into()]));
        c.labels.insert("team".into(), "shop".into());
        spec.containers.push(c);
        spec.cpu = Some("1 vCPU".into());
        spec.placement_constraints = vec!["node.labels.zone==b".into()];
        let at = Placement {
            image: "10.99.0.1:5000/web@sha256:ab",
            network: DEFAULT_OVERLAY,
            instance: "i1",
            started_at_ms: 5,
            node_id: Some("n2"),
        };
        let s = service_spec(&spec, &at).unwrap();
        assert_eq!(s.name.as_deref(), Some("cutover-web-7"));
        assert_eq!(s.mode.unwrap().replicated.unwrap().replicas, Some(1));
        assert_eq!(s.endpoint_spec.unwrap().mode, Some(EndpointSpecModeEnum::DNSRR));
        let t = s.task_template.unwrap();
        assert_eq!(
            t.restart_policy.unwrap().condition,
            Some(TaskSpecRestartPolicyConditionEnum::NONE)
        );
        assert_eq!(t.networks.unwrap()[0].target.as_deref(), Some(DEFAULT_OVERLAY));
        assert_eq!(
            t.placement.unwrap().constraints.unwrap(),
            ["node.role==worker", "node.labels.zone==b", "node.id==n2"]
        );
        let r = t.resources.unwrap();
        assert_eq!(
            r.limits.unwrap(),
            Limit { nano_cpus: Some(1_000_000_000), memory_bytes: Some(256 << 20), pids: None }
        );
        let reserved = r.reservations.unwrap();
        assert_eq!(
            (reserved.nano_cpus, reserved.memory_bytes),
            (Some(500_000_000), Some(128 << 20))
        );
        let c = t.container_spec.unwrap();
        assert_eq!(c.command, Some(vec!["/app".to_string()]));
        assert_eq!(c.args, Some(vec!["--port".to_string(), "8080".to_string()]));
        assert!(c.env.unwrap().contains(&"PORT=8080".to_string()));
        let labels = c.labels.unwrap();
        assert_eq!((labels["team"].as_str(), labels[LABEL_TASK].as_str()), ("shop", "web-7"));
        assert_eq!(c.stop_grace_period, Some(30_000_000_000));
        assert!(c.health_check.is_some());
    }

    #[test]
    fn a_task_of_two_containers_is_refused_saying_why_and_what_to_do() {
        let mut spec = TaskSpec::new("web-7", "web", "web:3");
        spec.containers.push(ContainerSpec::new("web", "a"));
        spec.containers.push(ContainerSpec::new("envoy", "b"));
        let at =
            Placement { image: "a", network: "n", instance: "i", started_at_ms: 0, node_id: None };
        let err = service_spec(&spec, &at).unwrap_err().to_string();
        assert!(err.contains("one container per task") && err.contains("found 2"), "{err}");
    }

    #[test]
    fn a_task_goes_to_the_worker_with_fewest_of_its_task_set_then_fewest_tasks_then_by_name() {
        let node = |name: &str, of_task_set, all| NodeLoad {
            id: format!("id-{name}"),
            hostname: name.into(),
            of_task_set,
            all,
        };
        let nodes = [node("node1", 1, 1), node("node2", 0, 9), node("node3", 0, 2)];
        assert_eq!(spread(&nodes).unwrap().hostname, "node3");
        let even = [node("node2", 1, 3), node("node1", 1, 3), node("node3", 2, 2)];
        assert_eq!(spread(&even).unwrap().hostname, "node1");
        assert_eq!(spread(&[]), None);
    }

    #[test]
    fn node_label_constraints_are_met_as_swarm_meets_them() {
        let labels = HashMap::from([("zone".to_string(), "b".to_string())]);
        let c = |s: &str| vec![s.to_string()];
        assert!(meets(&labels, &c("node.labels.zone==b")));
        assert!(!meets(&labels, &c("node.labels.zone==a")));
        assert!(meets(&labels, &c("node.labels.zone!=a")));
        assert!(!meets(&labels, &c("node.labels.disk==ssd")));
        assert!(meets(&labels, &c("node.labels.disk!=ssd")));
        assert!(meets(&labels, &[]));
    }

    #[test]
    fn service_names_are_dns_labels_and_stay_unique_for_long_task_ids() {
        assert_eq!(service_name("web-3-a1b2"), "cutover-web-3-a1b2");
        let long = "w".repeat(100);
        let other = format!("{}x", "w".repeat(99));
        assert!(service_name(&long).len() <= SERVICE_NAME_MAX);
        assert_ne!(service_name(&long), service_name(&other));
        assert_ne!(service_name("a_b"), service_name("a.b"));
    }

    #[test]
    fn swarm_task_states_become_cutover_task_states() {
        assert_eq!(
            task_state(&[observed("running", "running")], 1, true),
            TaskState::Running { health: Health::Healthy }
        );
        assert_eq!(
            task_state(&[observed("starting", "running")], 1, true),
            TaskState::Running { health: Health::Unknown }
        );
        let mut failed = observed("failed", "shutdown");
        failed.error = Some("task: non-zero exit (137)".into());
        failed.exit_code = Some(137);
        assert_eq!(
            task_state(&[failed], 1, false),
            TaskState::Exited {
                code: Some(137),
                reason: "Swarm task failed on node2: task: non-zero exit (137)".into()
            }
        );
        let mut lost = observed("running", "running");
        lost.node = Some(("node3".into(), false));
        let TaskState::Exited { reason, .. } = task_state(&[lost.clone()], 1, false) else {
            panic!()
        };
        assert!(reason.starts_with("node node3 is down"), "{reason}");
        // Swarm marks the lost node's task for shutdown; its state stays `running`.
        lost.desired = "shutdown".into();
        assert_eq!(
            task_state(&[lost.clone()], 1, false),
            TaskState::Exited { code: None, reason: reason.clone() }
        );
        assert_eq!(task_state(&[lost], 0, false), stopped_by_cutover());
        assert_eq!(task_state(&[observed("shutdown", "shutdown")], 0, false), stopped_by_cutover());
        assert_eq!(task_state(&[observed("shutdown", "remove")], 0, false), stopped_by_cutover());
        assert_eq!(task_state(&[], 0, false), stopped_by_cutover());
    }

    #[test]
    fn a_start_fails_at_once_when_swarm_rejects_the_task_or_no_node_can_take_it() {
        assert_eq!(start_failure(&observed("preparing", "running")), None);
        let mut pending = observed("pending", "running");
        pending.node = None;
        assert_eq!(start_failure(&pending), None);
        pending.error = Some("no suitable node (insufficient resources on 3 nodes)".into());
        assert_eq!(
            start_failure(&pending).as_deref(),
            Some(
                "Swarm cannot place the task: no suitable node (insufficient resources on 3 nodes)"
            )
        );
        let mut rejected = observed("rejected", "shutdown");
        rejected.error = Some("No such image: x".into());
        assert_eq!(
            start_failure(&rejected).as_deref(),
            Some("Swarm task rejected on node2: No such image: x")
        );
    }

    #[test]
    fn a_service_waits_for_the_reaper_only_while_a_task_marked_for_removal_is_on_a_live_node() {
        assert!(reaper_pending(&[observed("shutdown", "remove")]));
        assert!(reaper_pending(&[observed("running", "remove"), observed("failed", "shutdown")]));
        // Swarm keeps these: nothing deletes them behind the service's back.
        assert!(!reaper_pending(&[
            observed("failed", "shutdown"),
            observed("complete", "shutdown")
        ]));
        assert!(!reaper_pending(&[]));
        let mut lost = observed("running", "remove");
        lost.node = Some(("node3".into(), false));
        assert!(!reaper_pending(&[lost]));
    }
}
