//! The Swarm runtime on a real multi-node swarm: `scripts/cluster up` (which `.ci/run` runs)
//! starts three worker engines in network namespaces, a registry and an overlay. These tests fail,
//! they do not skip, when the cluster is not up.

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, KillContainerOptions, ListTasksOptions,
    RemoveContainerOptions, StartContainerOptions, WaitContainerOptions,
};
use cluster::{OVERLAY, REPO, demo_image, manager, node_engine, require_cluster};
use common::eventually;
use futures_util::StreamExt;
use runtime::{ContainerSpec, Runtime, SwarmRuntime, TaskHandle, TaskSpec, TaskState};

const LIMIT: Duration = Duration::from_secs(60);

fn uid(name: &str) -> String {
    #[allow(clippy::disallowed_methods)] // A nonce, not a time.
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    format!("{name}-{:x}", n % (1 << 40))
}

async fn web_task(id: &str) -> TaskSpec {
    let mut c = ContainerSpec::new("web", demo_image().await);
    c.ports = vec![8080];
    c.stop_timeout = Duration::from_secs(5);
    let mut t = TaskSpec::new(id, "svc", "svc:1");
    t.containers.push(c);
    t
}

/// The node (`nodeN`) and container id of a task's Swarm task.
async fn placement(task_id: &str) -> (String, String) {
    let docker = manager();
    let name = runtime::swarm::service_name(task_id);
    let options = ListTasksOptions {
        filters: Some(HashMap::from([
            ("service".to_string(), vec![name]),
            ("desired-state".to_string(), vec!["running".to_string()]),
        ])),
    };
    let tasks = docker.list_tasks(Some(options)).await.expect("list tasks");
    let t = tasks.first().expect("a running swarm task");
    let node_id = t.node_id.clone().expect("placed on a node");
    let node = docker.inspect_node(&node_id).await.expect("inspect node");
    let hostname = node.description.and_then(|d| d.hostname).expect("node hostname");
    let container = t.status.as_ref().and_then(|s| s.container_status.as_ref());
    let container = container.and_then(|c| c.container_id.clone()).expect("container id");
    (hostname, container)
}

/// Runs the demo app's probe against `addr` in a container on the overlay on `node`: a task's
/// overlay address is reachable only from the overlay, as the load balancer will reach it.
async fn probe_from(node: &str, addr: SocketAddr) -> i64 {
    let docker = node_engine(node);
    let image = demo_image().await;
    let digest = manager()
        .inspect_registry_image(&image, None)
        .await
        .expect("the registry knows the image")
        .descriptor
        .digest
        .expect("digest");
    let by_digest = format!("{REPO}@{digest}");
    let pull = CreateImageOptions { from_image: Some(by_digest.clone()), ..Default::default() };
    let mut progress = docker.create_image(Some(pull), None, None);
    while let Some(step) = progress.next().await {
        step.expect("node pulls the image from the cluster registry");
    }
    let body = ContainerCreateBody {
        image: Some(by_digest),
        cmd: Some(vec!["probe".into(), format!("http://{addr}/health")]),
        host_config: Some(HostConfig { network_mode: Some(OVERLAY.into()), ..Default::default() }),
        ..Default::default()
    };
    let name = uid("probe");
    let options = CreateContainerOptions { name: Some(name.clone()), platform: String::new() };
    docker.create_container(Some(options), body).await.expect("create probe");
    docker.start_container(&name, None::<StartContainerOptions>).await.expect("start probe");
    let mut wait = docker.wait_container(&name, None::<WaitContainerOptions>);
    let code = match wait.next().await {
        Some(Ok(r)) => r.status_code,
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
        other => panic!("waiting for the probe: {other:?}"),
    };
    let rm = RemoveContainerOptions { force: true, ..Default::default() };
    docker.remove_container(&name, Some(rm)).await.expect("remove probe");
    code
}

async fn cleanup(rt: &SwarmRuntime, handles: &[TaskHandle]) {
    for h in handles {
        rt.stop(h).await.expect("stop");
        rt.remove(h).await.expect("remove");
        assert_eq!(rt.inspect(h).await, TaskState::Gone);
    }
}

async fn connect(state: &Path) -> SwarmRuntime {
    SwarmRuntime::connect(state.to_path_buf()).await.expect("the manager answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarm_four_tasks_spread_over_the_three_workers_each_at_its_reachable_overlay_address() {
    require_cluster().await;
    let state = tempfile::tempdir().unwrap();
    let rt = connect(state.path()).await;
    let mut handles = Vec::new();
    for i in 0..4 {
        let spec = web_task(&uid(&format!("spread{i}"))).await;
        handles.push(rt.start(spec).await.expect("start a swarm task"));
    }
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for h in &handles {
        let addr = h.addr.expect("every task reports an address");
        assert!(
            matches!(addr.ip(), std::net::IpAddr::V4(ip) if ip.octets()[..3] == [10, 98, 0]),
            "{addr} is not on the overlay 10.98.0.0/24"
        );
        assert_eq!(addr.port(), 8080);
        let (node, _) = placement(&h.task_id).await;
        *per_node.entry(node).or_default() += 1;
    }
    assert_eq!(per_node.keys().cloned().collect::<Vec<_>>(), ["node1", "node2", "node3"]);
    assert_eq!(per_node.values().sum::<usize>(), 4);
    // Each address answers, from a container on the overlay on another node than its own.
    for h in &handles {
        let (node, _) = placement(&h.task_id).await;
        let other = if node == "node1" { "node2" } else { "node1" };
        assert_eq!(probe_from(other, h.addr.unwrap()).await, 0, "{} from {other}", h.task_id);
    }
    cleanup(&rt, &handles).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarm_a_task_killed_on_its_node_is_reported_exited_with_swarm_s_reason_and_not_restarted()
{
    require_cluster().await;
    let state = tempfile::tempdir().unwrap();
    let rt = connect(state.path()).await;
    let h = rt.start(web_task(&uid("killed")).await).await.expect("start");
    let (node, container) = placement(&h.task_id).await;
    let kill = KillContainerOptions { signal: "SIGKILL".into() };
    node_engine(&node).kill_container(&container, Some(kill)).await.expect("kill on the node");
    let state =
        eventually(LIMIT, "the runtime to see the kill", async || match rt.inspect(&h).await {
            s @ TaskState::Exited { .. } => Some(s),
            _ => None,
        })
        .await;
    assert_eq!(
        state,
        TaskState::Exited {
            code: Some(137),
            reason: format!("Swarm task failed on {node}: task: non-zero exit (137)"),
        }
    );
    // Swarm does not start a second copy behind cutover's back: cutover replaces tasks.
    let options = ListTasksOptions {
        filters: Some(HashMap::from([(
            "service".to_string(),
            vec![runtime::swarm::service_name(&h.task_id)],
        )])),
    };
    assert_eq!(manager().list_tasks(Some(options)).await.unwrap().len(), 1);
    cleanup(&rt, &[h]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarm_a_new_runtime_adopts_its_services_and_another_installation_sees_none_of_them() {
    require_cluster().await;
    let state = tempfile::tempdir().unwrap();
    let first = connect(state.path()).await;
    let h = first.start(web_task(&uid("adopt")).await).await.expect("start");
    drop(first);
    let again = connect(state.path()).await;
    let owned = again.list_owned().await.expect("list");
    let adopted = owned.iter().find(|o| o.task_id == h.task_id).expect("adopted");
    assert_eq!((adopted.addr, adopted.started_at_ms), (h.addr, h.started_at_ms));
    assert_eq!(again.inspect(&h).await, TaskState::Running { health: runtime::Health::Unknown });
    let other_state = tempfile::tempdir().unwrap();
    let other = connect(other_state.path()).await;
    assert!(other.list_owned().await.unwrap().iter().all(|o| o.task_id != h.task_id));
    assert_eq!(other.inspect(&h).await, TaskState::Gone);
    again.stop(&h).await.expect("stop");
    assert_eq!(
        again.inspect(&h).await,
        TaskState::Exited { code: None, reason: "stopped by cutover".into() }
    );
    cleanup(&again, &[h]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarm_an_image_no_registry_has_is_refused_naming_it_and_what_to_do() {
    require_cluster().await;
    let state = tempfile::tempdir().unwrap();
    let rt = connect(state.path()).await;
    let mut spec = web_task(&uid("noimage")).await;
    spec.containers[0].image = format!("{REPO}:never-pushed");
    let err = rt.start(spec.clone()).await.expect_err("no such image").to_string();
    assert!(
        err.starts_with(&format!(
            "image {REPO}:never-pushed of container web cannot be resolved to a registry digest"
        )) && err.contains("push it to a registry the nodes reach"),
        "{err}"
    );
    assert_eq!(
        rt.inspect(&TaskHandle {
            task_id: spec.task_id.clone(),
            runtime_id: String::new(),
            addr: None,
            started_at_ms: 0
        })
        .await,
        TaskState::Gone
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarm_placement_constraints_on_node_labels_hold_every_task_of_a_task_set_on_the_matching_node()
 {
    require_cluster().await;
    let state = tempfile::tempdir().unwrap();
    let rt = connect(state.path()).await;
    let mut handles = Vec::new();
    for i in 0..2 {
        let mut spec = web_task(&uid(&format!("pinned{i}"))).await;
        // `scripts/cluster` labels each worker `cutover.node=nodeN`.
        spec.placement_constraints = vec!["node.labels.cutover.node==node2".into()];
        handles.push(rt.start(spec).await.expect("start a constrained task"));
    }
    for h in &handles {
        assert_eq!(placement(&h.task_id).await.0, "node2", "{}", h.task_id);
    }
    cleanup(&rt, &handles).await;
}

/// Removing services right after scaling them to zero raced Swarm's task reaper, which crashes
/// the manager of Docker 20.10 (Debian's engine): every service and every test after it was lost.
/// Tasks stopped and removed together, round after round, leave the manager up and no service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarm_tasks_stopped_and_removed_at_once_leave_the_manager_up_and_no_service_behind() {
    require_cluster().await;
    let state = tempfile::tempdir().unwrap();
    let rt = std::sync::Arc::new(connect(state.path()).await);
    for round in 0..3 {
        let mut handles = Vec::new();
        for i in 0..4 {
            let spec = web_task(&uid(&format!("reap{round}-{i}"))).await;
            handles.push(rt.start(spec).await.expect("start a swarm task"));
        }
        let removals: Vec<_> = handles
            .iter()
            .cloned()
            .map(|h| {
                let rt = rt.clone();
                tokio::spawn(async move {
                    rt.stop(&h).await.expect("stop");
                    rt.remove(&h).await.expect("remove");
                    rt.inspect(&h).await
                })
            })
            .collect();
        for removal in removals {
            assert_eq!(removal.await.unwrap(), TaskState::Gone, "round {round}");
        }
        let info = manager().info().await.expect("the manager still answers");
        let swarm = info.swarm.expect("swarm info");
        assert_eq!(swarm.control_available, Some(true), "round {round}: {swarm:?}");
    }
}
