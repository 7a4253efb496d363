//! The Docker runtime against a real engine: container addresses, shared task namespaces,
//! health checks, stop timeouts, exits, adoption, missing images. CI starts the engine; these
//! tests fail (they do not skip) when it is not running.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, InspectContainerOptions, KillContainerOptions,
    ListContainersOptions, RemoveContainerOptions,
};
use common::{eventually, http_get, read};
use futures_util::StreamExt;
use runtime::{
    ContainerSpec, DockerRuntime, Health, HealthCheckSpec, Runtime, RuntimeError, TaskHandle,
    TaskSpec, TaskState,
};

const LIMIT: Duration = Duration::from_secs(30);
const IMAGE: &str = "cutover-test/demo-app:test";

static IMAGE_READY: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

fn engine() -> Docker {
    Docker::connect_with_defaults().expect("a Docker client for the test")
}

/// Imports a `FROM scratch`-style image holding only the statically linked demo app.
async fn demo_image() -> &'static str {
    IMAGE_READY
        .get_or_init(|| async {
            let bin = tokio::task::spawn_blocking(|| common::demo_app(true)).await.expect("build");
            let data = std::fs::read(&bin).expect("read demo app");
            let tar = common::tar(&[("cutover-demo-app", 0o755, &data)]);
            let options = CreateImageOptions {
                from_src: Some("-".into()),
                repo: Some("cutover-test/demo-app".into()),
                tag: Some("test".into()),
                changes: vec![r#"ENTRYPOINT ["/cutover-demo-app"]"#.into(), "EXPOSE 8080".into()],
                ..Default::default()
            };
            let mut progress =
                engine().create_image(Some(options), Some(bollard::body_full(tar.into())), None);
            while let Some(step) = progress.next().await {
                step.expect("docker import of the demo app image");
            }
        })
        .await;
    IMAGE
}

async fn connect(state: &Path) -> DockerRuntime {
    DockerRuntime::connect(state.to_path_buf())
        .await
        .expect("the Docker Engine must be running for these tests (CI starts it)")
}

/// A task id unique across test runs, so leftovers of an aborted run never collide.
fn uid(name: &str) -> String {
    #[allow(clippy::disallowed_methods)] // A nonce, not a time.
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    format!("{name}-{:x}", n % (1 << 40))
}

fn web() -> ContainerSpec {
    let mut c = ContainerSpec::new("web", IMAGE);
    c.ports = vec![8080];
    c.stop_timeout = Duration::from_secs(10);
    c
}

fn task(id: &str, containers: Vec<ContainerSpec>) -> TaskSpec {
    let mut t = TaskSpec::new(id, "svc", "svc:1");
    t.containers = containers;
    t
}

async fn answers(h: &TaskHandle, path: &str) -> common::HttpResponse {
    let addr = h.addr.expect("task has an address");
    eventually(LIMIT, &format!("{addr}{path} to answer"), async || http_get(addr, path).ok()).await
}

async fn exited(rt: &dyn Runtime, h: &TaskHandle) -> (Option<i32>, String) {
    eventually(LIMIT, "the task to exit", async || match rt.inspect(h).await {
        TaskState::Exited { code, reason } => Some((code, reason)),
        _ => None,
    })
    .await
}

async fn ids_of(task_id: &str) -> Vec<String> {
    let options = ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([(
            "label".to_string(),
            vec![format!("cutover.task-id={task_id}")],
        )])),
        ..Default::default()
    };
    engine()
        .list_containers(Some(options))
        .await
        .expect("list")
        .into_iter()
        .filter_map(|c| c.id)
        .collect()
}

async fn cleanup(rt: &dyn Runtime, h: &TaskHandle) {
    rt.stop(h).await.expect("stop");
    rt.remove(h).await.expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_task_answers_on_its_container_ip_with_labels_and_logs() {
    let image = demo_image().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let rt = connect(tmp.path()).await;
    assert_eq!(rt.kind(), "docker");
    let id = uid("d-answer");
    let mut c = web();
    c.image = image.into();
    c.environment = vec![("APP_VERSION".into(), "v1".into())];
    c.labels.insert("team".into(), "payments".into());
    let mut spec = task(&id, vec![c]);
    spec.deployment_id = Some("d-123".into());
    let h = rt.start(spec).await.expect("start");
    let addr = h.addr.expect("addr");
    assert!(!addr.ip().is_loopback(), "{addr} is the container's own IP");
    assert_eq!(addr.port(), 8080);
    let resp = answers(&h, "/").await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("X-Version").as_deref(), Some("v1"));
    assert!(resp.body.contains(&id), "{}", resp.body);

    let cid = ids_of(&id).await;
    assert_eq!(cid.len(), 1);
    let labels = engine()
        .inspect_container(&cid[0], None::<InspectContainerOptions>)
        .await
        .expect("inspect")
        .config
        .and_then(|c| c.labels)
        .expect("labels");
    assert_eq!(labels.get("cutover.service").map(String::as_str), Some("svc"));
    assert_eq!(labels.get("cutover.revision").map(String::as_str), Some("svc:1"));
    assert_eq!(labels.get("cutover.deployment").map(String::as_str), Some("d-123"));
    assert_eq!(labels.get("team").map(String::as_str), Some("payments"));

    let logs = rt.log_files(&id);
    assert_eq!(logs.len(), 1, "{logs:?}");
    eventually(LIMIT, "the request line in the task log", async || {
        read(&logs[0].1).contains("\"GET /\" 200").then_some(())
    })
    .await;

    rt.stop(&h).await.expect("stop");
    assert_eq!(
        rt.inspect(&h).await,
        TaskState::Exited { code: Some(0), reason: "stopped on request".into() }
    );
    rt.remove(&h).await.expect("remove");
    assert_eq!(rt.inspect(&h).await, TaskState::Gone);
    assert!(ids_of(&id).await.is_empty(), "containers are removed");
    assert!(read(&logs[0].1).contains("stopped"), "logs stay, to the last line");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_tasks_get_their_own_ips_and_containers_of_a_task_share_one() {
    demo_image().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let rt = connect(tmp.path()).await;
    let a = rt.start(task(&uid("d-a"), vec![web()])).await.expect("start a");
    let mut side = ContainerSpec::new("side", IMAGE);
    side.essential = false;
    side.ports = vec![9090];
    side.depends_on = vec![("web".into(), "START".into())];
    let b_id = uid("d-b");
    let b = rt.start(task(&b_id, vec![side, web()])).await.expect("start b");
    assert_ne!(a.addr.expect("a").ip(), b.addr.expect("b").ip());
    assert_eq!(answers(&b, "/").await.status, 200);
    // The sidecar listens on the task's address too: one network namespace per task.
    let side_addr = std::net::SocketAddr::new(b.addr.expect("b").ip(), 9090);
    let resp = eventually(LIMIT, "the sidecar on the task's address", async || {
        http_get(side_addr, "/health").ok()
    })
    .await;
    assert_eq!(resp.status, 200);
    assert_eq!(ids_of(&b_id).await.len(), 2);
    cleanup(&rt, &a).await;
    cleanup(&rt, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_health_checks_report_healthy_and_unhealthy() {
    demo_image().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let rt = connect(tmp.path()).await;
    let check = HealthCheckSpec {
        command: vec!["CMD".into(), "/cutover-demo-app".into(), "probe".into()],
        interval: Duration::from_millis(500),
        timeout: Duration::from_secs(3),
        retries: 2,
        start_period: Duration::ZERO,
    };
    let mut good = web();
    good.health_check = Some(check.clone());
    let mut bad = web();
    bad.health_check = Some(check);
    bad.environment = vec![("FAIL_HEALTH".into(), "1".into())];
    let g = rt.start(task(&uid("d-healthy"), vec![good])).await.expect("start good");
    let b = rt.start(task(&uid("d-unhealthy"), vec![bad])).await.expect("start bad");
    for (h, want) in [(&g, Health::Healthy), (&b, Health::Unhealthy)] {
        eventually(LIMIT, &format!("{} to be {want:?}", h.task_id), async || {
            (rt.inspect(h).await == TaskState::Running { health: want }).then_some(())
        })
        .await;
    }
    cleanup(&rt, &g).await;
    cleanup(&rt, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_stop_sigkills_after_the_stop_timeout() {
    demo_image().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let rt = connect(tmp.path()).await;
    let mut c = web();
    c.environment = vec![("IGNORE_SIGTERM".into(), "1".into())];
    c.stop_timeout = Duration::from_secs(2);
    let h = rt.start(task(&uid("d-stubborn"), vec![c])).await.expect("start");
    answers(&h, "/").await;
    let began = Instant::now();
    rt.stop(&h).await.expect("stop");
    let took = began.elapsed();
    assert!(took >= Duration::from_secs(2), "SIGKILL came early: {took:?}");
    assert!(took < Duration::from_secs(15), "stop took {took:?}");
    assert_eq!(
        rt.inspect(&h).await,
        TaskState::Exited { code: Some(137), reason: "stopped on request".into() }
    );
    rt.remove(&h).await.expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_container_killed_by_hand_is_reported_exited() {
    demo_image().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let rt = connect(tmp.path()).await;
    let id = uid("d-killed");
    let h = rt.start(task(&id, vec![web()])).await.expect("start");
    answers(&h, "/").await;
    let cid = ids_of(&id).await.remove(0);
    engine()
        .kill_container(&cid, Some(KillContainerOptions { signal: "SIGKILL".into() }))
        .await
        .expect("docker kill");
    let (code, reason) = exited(&rt, &h).await;
    assert_eq!(code, Some(137));
    assert_eq!(reason, "essential container web exited with code 137");
    rt.remove(&h).await.expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_essential_exit_stops_the_other_containers() {
    demo_image().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let rt = connect(tmp.path()).await;
    let id = uid("d-crash");
    let mut app = web();
    // Long enough for the sidecar to join the app's namespace even on a loaded machine.
    app.environment = vec![("EXIT_AFTER_MS".into(), "4000".into())];
    let mut side = ContainerSpec::new("side", IMAGE);
    side.essential = false;
    side.ports = vec![9090];
    let h = rt.start(task(&id, vec![app, side])).await.expect("start");
    let (code, reason) = exited(&rt, &h).await;
    assert_eq!(code, Some(1));
    assert_eq!(reason, "essential container web exited with code 1");
    let docker = engine();
    for cid in ids_of(&id).await {
        eventually(LIMIT, "every container of the task to stop", async || {
            let state =
                docker.inspect_container(&cid, None::<InspectContainerOptions>).await.ok()?.state?;
            (!state.running.unwrap_or(true)).then_some(())
        })
        .await;
    }
    rt.remove(&h).await.expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_depends_on_success_fails_the_task_with_the_dependencys_exit_code() {
    demo_image().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let rt = connect(tmp.path()).await;
    let id = uid("d-deps-fail");
    let mut migrate = ContainerSpec::new("migrate", IMAGE);
    migrate.essential = false;
    migrate.environment = vec![("EXIT_AFTER_MS".into(), "100".into())];
    let mut app = web();
    app.depends_on = vec![("migrate".into(), "SUCCESS".into())];
    let err = rt.start(task(&id, vec![app, migrate])).await.expect_err("no start");
    assert_eq!(
        err.to_string(),
        format!(
            "task {id} did not start: container web waits for migrate to exit successfully, but it exited (code 1)"
        )
    );
    assert!(ids_of(&id).await.is_empty(), "the dependency's container is removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_a_new_runtime_adopts_the_tasks_and_leaves_foreign_containers_alone() {
    let image = demo_image().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let state = tmp.path().to_path_buf();
    let id = uid("d-adopt");
    let spec = task(&id, vec![web()]);
    // A control plane starts the task, then dies as with kill -9.
    let h = {
        let state = state.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("tokio runtime");
            let h = rt.block_on(async move {
                let runtime = DockerRuntime::connect(state).await.expect("connect");
                let h = runtime.start(spec).await.expect("start");
                std::mem::forget(runtime);
                h
            });
            rt.shutdown_background();
            h
        })
        .join()
        .expect("control plane thread")
    };
    let docker = engine();
    let foreign_name = uid("not-cutover");
    let foreign = docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(foreign_name.clone()),
                platform: String::new(),
            }),
            bollard::models::ContainerCreateBody {
                image: Some(image.into()),
                ..Default::default()
            },
        )
        .await
        .expect("create a container cutover does not own");

    let rt = connect(&state).await;
    let owned = rt.list_owned().await.expect("list");
    let mine: Vec<&TaskHandle> = owned.iter().filter(|o| o.task_id == id).collect();
    assert_eq!(mine, vec![&h], "the handle is rebuilt as it was");
    assert!(owned.iter().all(|o| o.task_id != foreign_name));
    assert_eq!(rt.inspect(&h).await, TaskState::Running { health: Health::Unknown });
    // Logs keep flowing into the task log under the new control plane.
    http_get(h.addr.expect("addr"), "/after-adoption").expect("request");
    let log = rt.log_files(&id)[0].1.clone();
    eventually(LIMIT, "the request after adoption in the log", async || {
        read(&log).contains("/after-adoption").then_some(())
    })
    .await;
    cleanup(&rt, &h).await;
    assert!(ids_of(&id).await.is_empty());
    docker
        .inspect_container(&foreign.id, None::<InspectContainerOptions>)
        .await
        .expect("the foreign container is untouched");
    docker
        .remove_container(&foreign.id, None::<RemoveContainerOptions>)
        .await
        .expect("remove foreign container");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_missing_image_fails_with_the_engines_message() {
    let tmp = tempfile::tempdir().expect("tmp");
    let rt = connect(tmp.path()).await;
    let mut c = web();
    c.image = "cutover-test/no-such-image:1".into();
    let id = uid("d-missing");
    let err = rt.start(task(&id, vec![c])).await.expect_err("start fails");
    let RuntimeError::ImagePull { image, message, .. } = &err else {
        panic!("expected an image pull error, got {err}");
    };
    assert_eq!(image, "cutover-test/no-such-image:1");
    assert!(!message.is_empty());
    let text = err.to_string();
    assert!(text.contains(message.as_str()), "{text}");
    assert!(text.contains("fix `image` in the task definition"), "{text}");
    assert!(ids_of(&id).await.is_empty(), "nothing was created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_connect_names_docker_host_when_the_engine_is_unreachable() {
    let tmp = tempfile::tempdir().expect("tmp");
    let host = format!("unix://{}/no-docker.sock", tmp.path().display());
    let Err(err) = DockerRuntime::connect_to(&host, tmp.path().to_path_buf()).await else {
        panic!("connecting to a missing socket succeeded");
    };
    assert!(matches!(err, RuntimeError::EngineUnreachable { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains(&host) && text.contains("DOCKER_HOST"), "{text}");
}

/// Two processes that start tasks at the same moment on an engine before API 1.44 can each
/// create the network, and then every use of its name fails as ambiguous (seen in CI: "network
/// cutover is ambiguous"). The runtime keeps one and removes the duplicates it created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_duplicate_networks_of_one_name_are_reduced_to_one_and_the_task_starts() {
    use bollard::models::NetworkCreateRequest;
    use bollard::query_parameters::ListNetworksOptions;

    let image = demo_image().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let rt = connect(tmp.path()).await;
    let network = uid("dup-net");
    for _ in 0..2 {
        let request = NetworkCreateRequest {
            name: network.clone(),
            driver: Some("bridge".into()),
            labels: Some(HashMap::from([("cutover.managed".to_string(), "true".to_string())])),
            ..Default::default()
        };
        engine().create_network(request).await.expect("create a network");
    }
    let named = async || {
        let options = ListNetworksOptions {
            filters: Some(HashMap::from([("name".to_string(), vec![network.clone()])])),
        };
        let all = engine().list_networks(Some(options)).await.expect("list networks");
        all.into_iter().filter(|n| n.name.as_deref() == Some(network.as_str())).count()
    };
    assert_eq!(named().await, 2, "the engine accepted two networks of one name");

    let mut c = web();
    c.image = image.into();
    let mut spec = task(&uid("d-dup-net"), vec![c]);
    spec.network = Some(network.clone());
    let handle = rt.start(spec).await.expect("the task starts despite the duplicate network");
    assert_eq!(answers(&handle, "/").await.status, 200);
    assert_eq!(named().await, 1, "one network of the name is left");

    cleanup(&rt, &handle).await;
    engine().remove_network(&network).await.expect("remove the test network");
}
