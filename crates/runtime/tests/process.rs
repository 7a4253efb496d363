//! The process runtime with real processes and sockets: addresses, environment, logs, stop,
//! essential exits, health checks, dependsOn, adoption after a control-plane restart.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{eventually, http_get, image_dir, pid_running, read};
use runtime::{
    ContainerSpec, Health, HealthCheckSpec, ProcessRuntime, Runtime, RuntimeError, TaskHandle,
    TaskSpec, TaskState,
};

const LIMIT: Duration = Duration::from_secs(20);

fn web(image: &Path) -> ContainerSpec {
    let mut c = ContainerSpec::new("web", image.to_str().expect("utf-8 path"));
    c.command = vec!["cutover-demo-app".into()];
    c.ports = vec![8080];
    c
}

fn task(id: &str, containers: Vec<ContainerSpec>) -> TaskSpec {
    let mut t = TaskSpec::new(id, "svc", "svc:1");
    t.containers = containers;
    t
}

fn sh(image: &Path, name: &str, script: &str) -> ContainerSpec {
    let mut c = ContainerSpec::new(name, image.to_str().expect("utf-8 path"));
    c.command = vec!["sh".into(), "-c".into(), script.into()];
    c
}

fn pids(h: &TaskHandle) -> Vec<i32> {
    h.runtime_id.split(',').map(|p| p.parse().expect("pid")).collect()
}

async fn answers(h: &TaskHandle) -> common::HttpResponse {
    let addr = h.addr.expect("task has an address");
    eventually(LIMIT, "the task to answer HTTP", async || http_get(addr, "/").ok()).await
}

async fn exited(rt: &dyn Runtime, h: &TaskHandle) -> (Option<i32>, String) {
    eventually(LIMIT, "the task to exit", async || match rt.inspect(h).await {
        TaskState::Exited { code, reason } => Some((code, reason)),
        _ => None,
    })
    .await
}

async fn health_is(rt: &dyn Runtime, h: &TaskHandle, want: Health) {
    eventually(LIMIT, &format!("health {want:?}"), async || {
        (rt.inspect(h).await == TaskState::Running { health: want }).then_some(())
    })
    .await
}

/// Starts a task in a control plane that then dies as with `kill -9`: its tokio runtime (with
/// the reapers and health checks) vanishes without any cleanup.
fn start_in_a_control_plane_that_dies(state: &Path, spec: TaskSpec) -> TaskHandle {
    let state = state.to_path_buf();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let handle = rt.block_on(async move {
            let runtime = ProcessRuntime::new(state).expect("runtime");
            let handle = runtime.start(spec).await.expect("start");
            std::mem::forget(runtime);
            handle
        });
        rt.shutdown_background();
        handle
    })
    .join()
    .expect("control plane thread")
}

fn state_dir(tmp: &tempfile::TempDir) -> PathBuf {
    tmp.path().join("state")
}

/// The task's own copy of its (first container's) image directory, which it runs in.
fn task_image(tmp: &tempfile::TempDir, task_id: &str) -> PathBuf {
    state_dir(tmp).join("tasks").join(task_id).join("images/0")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_started_task_answers_on_its_own_loopback_address() {
    let tmp = tempfile::tempdir().expect("tmp");
    let image = image_dir(tmp.path(), &[]);
    let rt = ProcessRuntime::new(state_dir(&tmp)).expect("runtime");
    assert_eq!(rt.kind(), "process");
    let h = rt.start(task("t-answer", vec![web(&image)])).await.expect("start");
    let addr = h.addr.expect("address");
    assert_eq!(addr.port(), 8080, "the container port stays as declared");
    let ip = match addr.ip() {
        std::net::IpAddr::V4(ip) => ip,
        other => panic!("not IPv4: {other}"),
    };
    assert_eq!(&ip.octets()[..2], &[127, 77], "{ip} is in 127.77.0.0/16");
    let resp = answers(&h).await;
    assert_eq!(resp.status, 200);
    assert!(resp.body.contains("\"task\":\"t-answer\""), "{}", resp.body);
    assert_eq!(
        rt.inspect(&h).await,
        TaskState::Running { health: Health::Unknown },
        "no health check: health is unknown"
    );
    rt.stop(&h).await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tasks_get_different_addresses_with_the_same_container_port() {
    let tmp = tempfile::tempdir().expect("tmp");
    let image = image_dir(tmp.path(), &[]);
    let rt = ProcessRuntime::new(state_dir(&tmp)).expect("runtime");
    let a = rt.start(task("t-a", vec![web(&image)])).await.expect("start a");
    let b = rt.start(task("t-b", vec![web(&image)])).await.expect("start b");
    let (aa, ba) = (a.addr.expect("a addr"), b.addr.expect("b addr"));
    assert_ne!(aa.ip(), ba.ip());
    assert_eq!((aa.port(), ba.port()), (8080, 8080));
    assert!(answers(&a).await.body.contains("\"task\":\"t-a\""));
    assert!(answers(&b).await.body.contains("\"task\":\"t-b\""));
    rt.stop(&a).await.expect("stop a");
    rt.stop(&b).await.expect("stop b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_and_working_directory_are_applied() {
    let tmp = tempfile::tempdir().expect("tmp");
    let script = "#!/bin/sh\n\
        echo \"HOST=$HOST PORT=$PORT TASK=$CUTOVER_TASK_ID SERVICE=$CUTOVER_SERVICE REVISION=$CUTOVER_REVISION ADDR=$CUTOVER_TASK_ADDR CONTAINER=$CUTOVER_CONTAINER_NAME GREETING=$GREETING\"\n\
        echo \"PWD=$(pwd)\"\n\
        echo \"to stderr\" >&2\n\
        exec sleep 300\n";
    let image = image_dir(tmp.path(), &[("show-env.sh", script)]);
    std::fs::create_dir(image.join("data")).expect("data dir");
    let mut c = ContainerSpec::new("env", image.to_str().expect("utf-8"));
    c.entry_point = vec!["show-env.sh".into()];
    c.working_directory = Some("/data".into());
    c.ports = vec![9000];
    c.environment = vec![("GREETING".into(), "hello world".into())];
    let mut spec = task("t-env", vec![c]);
    spec.revision = "svc:7".into();
    let rt = ProcessRuntime::new(state_dir(&tmp)).expect("runtime");
    let h = rt.start(spec).await.expect("start");
    let addr = h.addr.expect("addr");
    let logs = rt.log_files("t-env");
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert_eq!(logs[0].0, "env");
    let log = eventually(LIMIT, "the script's output", async || {
        let text = read(&logs[0].1);
        text.contains("to stderr").then_some(text)
    })
    .await;
    let want = format!(
        "HOST={} PORT=9000 TASK=t-env SERVICE=svc REVISION=svc:7 ADDR={addr} CONTAINER=env GREETING=hello world",
        addr.ip()
    );
    assert!(log.contains(&want), "want {want:?} in {log:?}");
    let pwd = format!("PWD={}", task_image(&tmp, "t-env").join("data").display());
    assert!(log.contains(&pwd), "want {pwd:?} in {log:?}");
    rt.stop(&h).await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_of_a_container_goes_to_its_log_file() {
    let tmp = tempfile::tempdir().expect("tmp");
    let image = image_dir(tmp.path(), &[]);
    let rt = ProcessRuntime::new(state_dir(&tmp)).expect("runtime");
    let mut c = web(&image);
    c.environment = vec![("APP_VERSION".into(), "v42".into())];
    let h = rt.start(task("t-log", vec![c])).await.expect("start");
    let resp = answers(&h).await;
    assert_eq!(resp.header("X-Version").as_deref(), Some("v42"));
    let log = rt.log_files("t-log")[0].1.clone();
    assert_eq!(log, state_dir(&tmp).join("tasks/t-log/web.log"));
    eventually(LIMIT, "the request line in the log", async || {
        read(&log).contains("\"GET /\" 200").then_some(())
    })
    .await;
    rt.stop(&h).await.expect("stop");
    assert!(read(&log).contains("stopped"), "the app's shutdown line is logged too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_sigkills_a_program_that_ignores_sigterm_after_its_stop_timeout() {
    let tmp = tempfile::tempdir().expect("tmp");
    let image = image_dir(tmp.path(), &[]);
    let mut c = sh(&image, "stubborn", "trap '' TERM; echo ready; while :; do sleep 0.1; done");
    c.stop_timeout = Duration::from_millis(1500);
    let rt = ProcessRuntime::new(state_dir(&tmp)).expect("runtime");
    let h = rt.start(task("t-stubborn", vec![c])).await.expect("start");
    let log = rt.log_files("t-stubborn")[0].1.clone();
    eventually(LIMIT, "the program to trap SIGTERM", async || {
        read(&log).contains("ready").then_some(())
    })
    .await;
    let began = Instant::now();
    rt.stop(&h).await.expect("stop");
    let took = began.elapsed();
    assert!(took >= Duration::from_millis(1500), "SIGKILL came early: {took:?}");
    assert!(took < Duration::from_secs(8), "stop took {took:?}");
    assert!(!pid_running(pids(&h)[0]));
    assert_eq!(
        rt.inspect(&h).await,
        TaskState::Exited { code: Some(137), reason: "stopped on request".into() }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_of_a_graceful_program_is_quick_and_keeps_its_exit_code() {
    let tmp = tempfile::tempdir().expect("tmp");
    let image = image_dir(tmp.path(), &[]);
    let rt = ProcessRuntime::new(state_dir(&tmp)).expect("runtime");
    let h = rt.start(task("t-graceful", vec![web(&image)])).await.expect("start");
    answers(&h).await;
    let began = Instant::now();
    rt.stop(&h).await.expect("stop");
    assert!(began.elapsed() < Duration::from_secs(5), "took {:?}", began.elapsed());
    assert_eq!(
        rt.inspect(&h).await,
        TaskState::Exited { code: Some(0), reason: "stopped on request".into() }
    );
    rt.stop(&h).await.expect("a second stop succeeds too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_leaves_no_process_of_the_container_behind() {
    let tmp = tempfile::tempdir().expect("tmp");
    // The helper ignores SIGTERM and outlives the app, unless the whole session is killed.
    let script = "#!/bin/sh\n\
        sh -c 'trap \"\" TERM; echo $$ > helper.pid; exec sleep 1000' &\n\
        exec ./cutover-demo-app\n";
    let image = image_dir(tmp.path(), &[("spawner.sh", script)]);
    let mut c = web(&image);
    c.command = vec!["spawner.sh".into()];
    c.stop_timeout = Duration::from_secs(1);
    let rt = ProcessRuntime::new(state_dir(&tmp)).expect("runtime");
    let h = rt.start(task("t-orphan", vec![c])).await.expect("start");
    answers(&h).await;
    let helper: i32 = eventually(LIMIT, "the helper's pid", async || {
        read(&task_image(&tmp, "t-orphan").join("helper.pid")).trim().parse().ok()
    })
    .await;
    assert!(pid_running(helper));
    rt.stop(&h).await.expect("stop");
    assert!(!pid_running(helper), "helper {helper} survived the stop");
    assert!(!pid_running(pids(&h)[0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_essential_container_exiting_stops_the_task_with_the_reason() {
    let tmp = tempfile::tempdir().expect("tmp");
    let image = image_dir(tmp.path(), &[]);
    let app = sh(&image, "app", "sleep 0.5; exit 3");
    let mut side = sh(&image, "side", "exec sleep 300");
    side.essential = false;
    let rt = ProcessRuntime::new(state_dir(&tmp)).expect("runtime");
    let h = rt.start(task("t-crash", vec![app, side])).await.expect("start");
    let (code, reason) = exited(&rt, &h).await;
    assert_eq!(code, Some(3));
    assert_eq!(reason, "essential container app exited with code 3");
    let side_pid = pids(&h)[1];
    eventually(LIMIT, "the non-essential container to be stopped", async || {
        (!pid_running(side_pid)).then_some(())
    })
    .await;
    assert!(rt.list_owned().await.expect("list").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_app_reports_its_exit_code() {
    let tmp = tempfile::tempdir().expect("tmp");
    let image = image_dir(tmp.path(), &[]);
    let mut c = web(&image);
    c.environment = vec![("EXIT_AFTER_MS".into(), "300".into())];
    let rt = ProcessRuntime::new(state_dir(&tmp)).expect("runtime");
    let h = rt.start(task("t-exit-after", vec![c])).await.expect("start");
    let (code, reason) = exited(&rt, &h).await;
    assert_eq!(code, Some(1));
    assert_eq!(reason, "essential container web exited with code 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_essential_container_exiting_leaves_the_task_running() {
    let tmp = tempfile::tempdir().expect("tmp");
    let image = image_dir(tmp.path(), &[]);
    let mut init = sh(&image, "init", "exit 0");
    init.essential = false;
    let rt = ProcessRuntime::new(state_dir(&tmp)).expect("runtime");
    let h = rt.start(task("t-init", vec![web(&image), init])).await.expect("start");
    let init_pid = pids(&h)[1];
    eventually(LIMIT, "the init container to exit", async || {
        (!pid_running(init_pid)).then_some(())
    })
    .await;
    assert!(matches!(rt.inspect(&h).await, TaskState::Running { .. }));
    assert_eq!(answers(&h).await.status, 200);
    rt.stop(&h).await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_flips_from_healthy_to_unhealthy() {
    let tmp = tempfile::tempdir().expect("tmp");
    let image = image_dir(tmp.path(), &[]);
    let flag = tmp.path().join("make-unhealthy");
    let mut c = web(&image);
    c.environment = vec![("HEALTH_FILE".into(), flag.display().to_string())];
    c.health_check = Some(HealthCheckSpec {
        command: vec!["CMD".into(), "cutover-demo-app".into(), "probe".into(), "/health".into()],
        interval: Duration::from_millis(300),
        timeout: Duration::from_secs(3),
        retries: 2,
        start_period: Duration::ZERO,
    });
    let rt = ProcessRuntime::new(state_dir(&tmp)).expect("runtime");
    let h = rt.start(task("t-health", vec![c])).await.expect("start");
    health_is(&rt, &h, Health::Healthy).await;
    std::fs::write(&flag, "").expect("flip");
    health_is(&rt, &h, Health::Unhealthy).await;
    std::fs::remove_file(&flag).expect("flip back");
    health_is(&rt, &h, Health::Healthy).await;
    rt.stop(&h).await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_health_check_failures_in_the_start_period_do_not_count() {
    let tmp = tempfile::tempdir().expect("tmp");
    let image = image_dir(tmp.path(), &[]);
    let mut c = sh(&image, "app", "sleep 2; touch ready; exec sleep 300");
    c.health_check = Some(HealthCheckSpec {
        command: vec!["CMD-SHELL".into(), "test -e ready".into()],
        interval: Duration::from_millis(200),
        timeout: Duration::from_secs(2),
        retries: 1,
        start_period: Duration::from_secs(10),
    });
    let rt = ProcessRuntime::new(state_dir(&tmp)).expect("runtime");
    let h = rt.start(task("t-start-period", vec![c])).await.expect("start");
    // With retries 1, a counted failure would make it unhealthy at once; it must stay
    // unknown until the file appears, then turn healthy.
    let deadline = Instant::now() + LIMIT;
    loop {
        match rt.inspect(&h).await {
            TaskState::Running { health: Health::Healthy } => break,
            TaskState::Running { health: Health::Unknown } => {}
            other => panic!("unexpected state in the start period: {other:?}"),
        }
        assert!(Instant::now() < deadline, "never became healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(task_image(&tmp, "t-start-period").join("ready").exists());
    rt.stop(&h).await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn depends_on_healthy_starts_the_dependent_after_the_dependency_is_healthy() {
    let tmp = tempfile::tempdir().expect("tmp");
    let image = image_dir(tmp.path(), &[]);
    let mut db = sh(&image, "db", "sleep 1; touch ready; exec sleep 300");
    db.health_check = Some(HealthCheckSpec {
        command: vec!["CMD-SHELL".into(), "test -e ready".into()],
        interval: Duration::from_millis(200),
        timeout: Duration::from_secs(2),
        retries: 3,
        start_period: Duration::from_secs(30),
    });
    let mut app = sh(
        &image,
        "app",
        "if test -e ready; then echo dep-was-ready; else echo dep-not-ready; fi; exec sleep 300",
    );
    app.depends_on = vec![("db".into(), "HEALTHY".into())];
    // Declared first, started second.
    let rt = ProcessRuntime::new(state_dir(&tmp)).expect("runtime");
    let h = rt.start(task("t-deps", vec![app, db])).await.expect("start");
    let log = state_dir(&tmp).join("tasks/t-deps/app.log");
    let text = eventually(LIMIT, "the app's output", async || {
        let t = read(&log);
        (!t.is_empty()).then_some(t)
    })
    .await;
    assert!(text.contains("dep-was-ready"), "{text}");
    assert_eq!(rt.inspect(&h).await, TaskState::Running { health: Health::Healthy });
    rt.stop(&h).await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn depends_on_success_fails_the_task_with_the_dependencys_exit_code() {
    let tmp = tempfile::tempdir().expect("tmp");
    let image = image_dir(tmp.path(), &[]);
    let mut migrate = sh(&image, "migrate", "exit 3");
    migrate.essential = false;
    let mut app = sh(&image, "app", "exec sleep 300");
    app.depends_on = vec![("migrate".into(), "SUCCESS".into())];
    let rt = ProcessRuntime::new(state_dir(&tmp)).expect("runtime");
    let err = rt.start(task("t-deps-fail", vec![app, migrate])).await.expect_err("no start");
    assert_eq!(
        err.to_string(),
        "task t-deps-fail did not start: container app waits for migrate to exit successfully, but it exited (code 3)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_runtime_adopts_a_running_task_and_can_stop_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let image = image_dir(tmp.path(), &[]);
    let state = state_dir(&tmp);
    let mut c = web(&image);
    c.health_check = Some(HealthCheckSpec {
        command: vec!["CMD".into(), "cutover-demo-app".into(), "probe".into()],
        interval: Duration::from_millis(300),
        timeout: Duration::from_secs(3),
        retries: 2,
        start_period: Duration::ZERO,
    });
    let h = start_in_a_control_plane_that_dies(&state, task("t-adopt", vec![c]));
    assert!(answers(&h).await.body.contains("t-adopt"));

    let rt = ProcessRuntime::new(state.clone()).expect("new runtime");
    let owned = rt.list_owned().await.expect("list");
    assert_eq!(owned, vec![h.clone()], "the handle is rebuilt as it was");
    health_is(&rt, &h, Health::Healthy).await;

    // The adopted task's address stays taken.
    let other = rt.start(task("t-other", vec![web(&image)])).await.expect("start other");
    assert_ne!(other.addr.expect("addr").ip(), h.addr.expect("addr").ip());

    rt.stop(&h).await.expect("stop adopted");
    assert!(!pid_running(pids(&h)[0]));
    assert!(matches!(rt.inspect(&h).await, TaskState::Exited { .. }));
    assert_eq!(rt.list_owned().await.expect("list"), vec![other.clone()]);
    rt.stop(&other).await.expect("stop other");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_died_while_the_control_plane_was_down_is_reported_exited() {
    let tmp = tempfile::tempdir().expect("tmp");
    let image = image_dir(tmp.path(), &[]);
    let state = state_dir(&tmp);
    let h = start_in_a_control_plane_that_dies(&state, task("t-died", vec![web(&image)]));
    answers(&h).await;
    let pid = pids(&h)[0];
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL)
        .expect("kill");
    eventually(LIMIT, "the process to die", async || (!pid_running(pid)).then_some(())).await;

    let rt = ProcessRuntime::new(state).expect("new runtime");
    assert!(rt.list_owned().await.expect("list").is_empty());
    let (code, reason) = exited(&rt, &h).await;
    assert_eq!(code, None);
    assert!(reason.contains("essential container web exited"), "{reason}");
    rt.remove(&h).await.expect("remove");
    assert_eq!(rt.inspect(&h).await, TaskState::Gone);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_forgets_a_stopped_task_but_keeps_its_logs() {
    let tmp = tempfile::tempdir().expect("tmp");
    let image = image_dir(tmp.path(), &[]);
    let rt = ProcessRuntime::new(state_dir(&tmp)).expect("runtime");
    let h = rt.start(task("t-remove", vec![web(&image)])).await.expect("start");
    answers(&h).await;
    let err = rt.remove(&h).await.expect_err("removing a running task fails");
    assert!(matches!(err, RuntimeError::StillRunning { .. }), "{err}");
    assert!(err.to_string().contains("stop it before removing it"));
    rt.stop(&h).await.expect("stop");
    rt.remove(&h).await.expect("remove");
    assert_eq!(rt.inspect(&h).await, TaskState::Gone);
    let logs = rt.log_files("t-remove");
    assert_eq!(logs.len(), 1);
    assert!(read(&logs[0].1).contains("\"GET /\""));
    rt.stop(&h).await.expect("stopping a removed task succeeds");
    rt.remove(&h).await.expect("removing twice succeeds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_directory_fails_with_a_clear_error() {
    let tmp = tempfile::tempdir().expect("tmp");
    let rt = ProcessRuntime::new(state_dir(&tmp)).expect("runtime");
    let missing = tmp.path().join("no-such-image");
    let err = rt.start(task("t-missing", vec![web(&missing)])).await.expect_err("start fails");
    assert_eq!(
        err.to_string(),
        format!(
            "image directory {} of container web does not exist; build it or fix `image` in the task definition",
            missing.display()
        )
    );
    assert_eq!(
        rt.inspect(&TaskHandle {
            task_id: "t-missing".into(),
            runtime_id: String::new(),
            addr: None,
            started_at_ms: 0,
        })
        .await,
        TaskState::Gone
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_program_fails_with_a_clear_error_and_stops_what_started() {
    let tmp = tempfile::tempdir().expect("tmp");
    let image = image_dir(tmp.path(), &[]);
    let rt = ProcessRuntime::new(state_dir(&tmp)).expect("runtime");
    let mut bad = web(&image);
    bad.name = "bad".into();
    bad.command = vec!["no-such-program".into()];
    bad.ports = vec![];
    let err = rt.start(task("t-noprog", vec![web(&image), bad])).await.expect_err("start fails");
    let msg = err.to_string();
    assert!(
        msg.contains("program `no-such-program` is neither an executable file in image directory")
            && msg.contains("fix `entryPoint`/`command`"),
        "{msg}"
    );
    assert!(rt.list_owned().await.expect("list").is_empty());
}

/// The quickstart's buildspec rebuilding a commit that is already deployed: `cp` of the new
/// program into the image directory a running task was started from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_can_overwrite_the_image_of_a_running_task_which_keeps_running_its_own_copy() {
    let tmp = tempfile::tempdir().expect("tmp");
    let image = tmp.path().join("images/web-abc1234");
    std::fs::create_dir_all(&image).expect("image dir");
    std::fs::copy(common::demo_app(false), image.join("cutover-demo-app")).expect("copy app");
    let rt = ProcessRuntime::new(state_dir(&tmp)).expect("runtime");
    let h = rt.start(task("t-rebuilt", vec![web(&image)])).await.expect("start");
    assert_eq!(answers(&h).await.status, 200);

    let rebuilt = tmp.path().join("rebuilt-app");
    std::fs::write(&rebuilt, "#!/bin/sh\necho rebuilt\n").expect("write");
    let cp = std::process::Command::new("cp")
        .arg(&rebuilt)
        .arg(image.join("cutover-demo-app"))
        .output()
        .expect("cp");
    assert!(cp.status.success(), "the build's cp failed: {}", String::from_utf8_lossy(&cp.stderr));
    assert_eq!(read(&image.join("cutover-demo-app")), "#!/bin/sh\necho rebuilt\n");

    // The running task is untouched: same process, still answering.
    assert_eq!(rt.inspect(&h).await, TaskState::Running { health: Health::Unknown });
    assert!(pids(&h).into_iter().all(pid_running));
    assert_eq!(answers(&h).await.status, 200);
    rt.stop(&h).await.expect("stop");
}
