//! A cutover installation for one test: data directory, ports, the example app, the `cutover up`
//! process, a load client, and helpers that wait for conditions with deadlines.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const CUTOVER: &str = env!("CARGO_BIN_EXE_cutover");

/// The demo app, built once per test run (it lives in another package of the workspace).
pub fn demo_app() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let exe_dir = Path::new(CUTOVER).parent().expect("binary has a directory").to_path_buf();
        let path = exe_dir.join("cutover-demo-app");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let profile_release = exe_dir.ends_with("release");
        let mut command = Command::new(cargo);
        command.args(["build", "--quiet", "-p", "demo-app"]);
        if profile_release {
            command.arg("--release");
        }
        let status = command.status().expect("running cargo build -p demo-app");
        assert!(status.success(), "building demo-app failed");
        assert!(path.exists(), "{} missing after build", path.display());
        path
    })
    .clone()
}

/// A `FROM scratch` image holding a statically linked demo app, built once per test run with
/// the real engine (`docker build`); no registry is involved.
pub fn docker_image() -> String {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("demo-app-static");
            let status = Command::new(cargo)
                .args(["build", "--quiet", "--release", "-p", "demo-app", "--target", "x86_64-unknown-linux-gnu"])
                .arg("--target-dir")
                .arg(&target_dir)
                .env("RUSTFLAGS", "-C target-feature=+crt-static")
                .status()
                .expect("building the static demo app");
            assert!(status.success(), "building the static demo app failed");
            let context = target_dir.join("image");
            std::fs::create_dir_all(&context).unwrap();
            std::fs::copy(target_dir.join("x86_64-unknown-linux-gnu/release/cutover-demo-app"), context.join("cutover-demo-app"))
                .unwrap();
            std::fs::write(
                context.join("Dockerfile"),
                "FROM scratch\nCOPY cutover-demo-app /cutover-demo-app\nENTRYPOINT [\"/cutover-demo-app\"]\n",
            )
            .unwrap();
            let tag = "cutover-e2e/demo-app:latest";
            let output = Command::new("docker")
                .args(["build", "-q", "-t", tag])
                .arg(&context)
                .env("DOCKER_BUILDKIT", "0")
                .output()
                .expect("docker build");
            assert!(output.status.success(), "docker build failed: {}", String::from_utf8_lossy(&output.stderr));
            tag.to_string()
        })
        .clone()
}

pub use testkit::free_port;
pub use testkit::http::{Load, Sample, failures, get, get_with};

/// Waits for `condition` with a deadline, polling every 50 ms; panics with `what` on timeout.
#[track_caller]
pub fn wait_for<T>(what: &str, timeout: Duration, condition: impl FnMut() -> Option<T>) -> T {
    wait_for_or(what, timeout, condition, String::new)
}

/// [`wait_for`] whose timeout message ends with `last_seen()`: what the condition last observed,
/// so that a failure on a loaded CI machine can be diagnosed from its log alone.
#[track_caller]
pub fn wait_for_or<T>(
    what: &str,
    timeout: Duration,
    mut condition: impl FnMut() -> Option<T>,
    last_seen: impl FnOnce() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = condition() {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}; last seen:\n{}", last_seen());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub struct Options {
    /// Run the service's tasks as Docker containers of [`docker_image`] instead of processes.
    pub docker: bool,
    pub config: &'static str,
    pub hooks: &'static str,
    pub termination_wait: &'static str,
    pub auto_rollback: &'static str,
    /// More keys of the deployment group (e.g. `alarms: [...]`), one per line, indented 4.
    pub group_extra: &'static str,
    /// More top-level sections (alarms, metric filters).
    pub top_extra: String,
    /// Environment of `cutover up` and of every CLI call (e.g. `CUTOVER_TOKEN`).
    pub env: Vec<(&'static str, String)>,
    /// Put the data directory on a tmpfs of this size (`mount -t tmpfs -o size=…`), so a test
    /// can fill it; needs root, and panics rather than skip when mounting fails.
    pub data_dir_tmpfs: Option<&'static str>,
    /// More environment variables for `cutover up` (e.g. libfaketime's).
    pub up_env: Vec<(&'static str, String)>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            docker: false,
            config: "{ name: quick-canary, type: TimeBasedCanary, percentage: 20, interval: 3s }",
            hooks: "",
            termination_wait: "1s",
            auto_rollback: "[DEPLOYMENT_FAILURE, DEPLOYMENT_STOP_ON_REQUEST]",
            group_extra: "",
            top_extra: String::new(),
            env: Vec::new(),
            data_dir_tmpfs: None,
            up_env: Vec::new(),
        }
    }
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub prod: SocketAddr,
    pub test: SocketAddr,
    api_port: u16,
    up: Option<Child>,
    env: Vec<(&'static str, String)>,
    up_env: Vec<(&'static str, String)>,
    tmpfs: bool,
}

impl Cluster {
    pub fn start(options: Options) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("app");
        std::fs::create_dir_all(&app).unwrap();
        std::fs::copy(demo_app(), app.join("cutover-demo-app")).unwrap();
        let prod: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let test: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let (image, command) = if options.docker {
            (docker_image(), String::new())
        } else {
            ("app".to_string(), r#""command": ["cutover-demo-app"],"#.to_string())
        };
        let taskdef = |version: &str, extra: &str| {
            format!(
                r#"{{"family": "web", "containerDefinitions": [{{"name": "web", "image": "{image}",
                    {command} "essential": true, "stopTimeout": 2, {extra}
                    "portMappings": [{{"containerPort": 8080}}],
                    "environment": [{{"name": "APP_VERSION", "value": "{version}"}}]}}]}}"#
            )
        };
        std::fs::write(dir.path().join("taskdef.json"), taskdef("v1", "")).unwrap();
        std::fs::write(dir.path().join("taskdef-v2.json"), taskdef("v2", "")).unwrap();
        // v2 whose `/` answers 500 (and logs an `Error` line) on 30% of requests.
        let erroring = taskdef("v2", "").replace(
            r#"{"name": "APP_VERSION", "value": "v2"}"#,
            r#"{"name": "APP_VERSION", "value": "v2"}, {"name": "ERROR_RATE", "value": "0.3"}"#,
        );
        std::fs::write(dir.path().join("taskdef-v2-errors.json"), erroring).unwrap();
        // v3's container health check probes a path that does not exist: it never turns healthy.
        let failing_check = r#""healthCheck": {"command": ["CMD", "/cutover-demo-app", "probe", "/missing"], "interval": 5, "timeout": 2, "retries": 1},"#;
        std::fs::write(dir.path().join("taskdef-v3.json"), taskdef("v3", failing_check)).unwrap();
        let missing = taskdef("v4", "").replace(&image, "cutover-e2e/does-not-exist:v4");
        std::fs::write(dir.path().join("taskdef-missing-image.json"), missing).unwrap();
        std::fs::write(dir.path().join("appspec.yaml"), appspec("")).unwrap();
        let health = "{ path: /health, interval: 1s, timeout: 500ms, healthy_threshold: 2, unhealthy_threshold: 2, matcher: \"200\" }";
        let yaml = format!(
            r#"load_balancers:
  - name: web
    listeners:
      - {{ name: prod, port: {prod_port} }}
      - {{ name: test, port: {test_port} }}
target_groups:
  - {{ name: web-blue, health_check: {health}, deregistration_delay: 1s }}
  - {{ name: web-green, health_check: {health}, deregistration_delay: 1s }}
services:
  - name: web
    runtime: {runtime}
    task_definition: taskdef.json
    desired_count: 2
    load_balancer: {{ target_group: web-blue, container_name: web, container_port: 8080 }}
deployment_configs:
  - {config}
deployment_groups:
  - application: web
    name: web-prod
    service: web
    deployment_config: quick-canary
    target_groups: [web-blue, web-green]
    production_listener: web/prod
    test_listener: web/test
    termination_wait: {termination_wait}
    auto_rollback: {auto_rollback}
{group_extra}
hooks:
  - {{ name: pass, run: "curl -fsS $CUTOVER_TEST_URL/ >/dev/null", timeout: 10s }}
  - {{ name: fail, run: "echo validation failed >&2; exit 3", timeout: 10s }}
{extra_hooks}
{top_extra}"#,
            prod_port = prod.port(),
            test_port = test.port(),
            config = options.config,
            termination_wait = options.termination_wait,
            auto_rollback = options.auto_rollback,
            extra_hooks = options.hooks,
            runtime = if options.docker { "docker" } else { "process" },
            group_extra = options.group_extra,
            top_extra = options.top_extra,
        );
        std::fs::write(dir.path().join("cutover.yaml"), yaml).unwrap();
        let tmpfs = options.data_dir_tmpfs.is_some();
        if let Some(size) = options.data_dir_tmpfs {
            let data = dir.path().join("data");
            std::fs::create_dir_all(&data).unwrap();
            let output = Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
                .arg(&data)
                .output()
                .expect("running mount");
            assert!(
                output.status.success(),
                "this test needs a tmpfs data directory (run it as root): mount said {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let env = options.env;
        let mut cluster = Cluster {
            dir,
            prod,
            test,
            api_port: free_port(),
            up: None,
            up_env: options.up_env,
            env,
            tmpfs,
        };
        cluster.up();
        cluster
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts `cutover up` and waits until its API answers.
    pub fn up(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("up.log"))
            .unwrap();
        let child = Command::new(CUTOVER)
            .args([
                "up",
                "--listen",
                &format!("127.0.0.1:{}", self.api_port),
                "--lb-admin",
                "127.0.0.1:0",
                "--lb-threads",
                "1",
            ])
            .env("CUTOVER_DATA_DIR", self.data_dir())
            .env("CUTOVER_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .envs(self.up_env.iter().map(|(k, v)| (k, v)))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.up = Some(child);
        wait_for("cutover up to answer", Duration::from_secs(30), || {
            self.cli(&["status"]).status.success().then_some(())
        });
    }

    /// `kill -9` of the control plane.
    pub fn kill_control_plane(&mut self) {
        let mut child = self.up.take().expect("cutover up is running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_with_env(&[], args)
    }

    /// [`Cluster::cli`] with more (or other) environment variables, e.g. a wrong token.
    pub fn cli_with_env(&self, env: &[(&str, &str)], args: &[&str]) -> Output {
        Command::new(CUTOVER)
            .args(args)
            .env("CUTOVER_DATA_DIR", self.data_dir())
            .env("CUTOVER_API", self.api_url())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .envs(env.iter().copied())
            .current_dir(self.dir.path())
            .output()
            .unwrap()
    }

    /// The control plane's API, as the CLI is told to reach it (over HTTPS when `cutover up`
    /// is given a certificate through `CUTOVER_TLS_CERT`).
    pub fn api_url(&self) -> String {
        let https = self.env.iter().any(|(k, _)| *k == "CUTOVER_TLS_CERT");
        format!("{}://127.0.0.1:{}", if https { "https" } else { "http" }, self.api_port)
    }

    #[track_caller]
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let output = self.cli(args);
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        assert!(
            output.status.success(),
            "cutover {args:?} failed: {}\nstdout: {stdout}\nstderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }

    /// One request to the control plane's API without the CLI, for what the CLI does not show
    /// (the status code): (status, JSON answer or `Null`).
    pub fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let response = reqwest::blocking::Client::new()
            .request(method, format!("http://127.0.0.1:{}{path}", self.api_port))
            .json(body)
            .timeout(Duration::from_secs(60))
            .send()
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().unwrap_or(serde_json::Value::Null))
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        serde_json::from_str(&self.cli_ok(&all)).unwrap()
    }

    /// Applies the cluster's cutover.yaml and waits until production serves v1 from two tasks.
    pub fn apply_and_wait_for_v1(&self) {
        self.cli_ok(&["apply", "-f", "cutover.yaml"]);
        wait_for("production to serve v1 from 2 healthy tasks", Duration::from_secs(30), || {
            let tg = self.json(&["target-groups", "get", "web-blue"]);
            let healthy =
                tg["targets"].as_array()?.iter().filter(|t| t["state"] == "healthy").count();
            (healthy == 2 && get(self.prod, "/").ok()?.1 == "v1").then_some(())
        });
    }

    pub fn deployment(&self, id: &str) -> serde_json::Value {
        self.json(&["deployments", "get", id])
    }

    /// Running containers of this installation (Docker runtime).
    pub fn containers(&self) -> Vec<String> {
        let instance =
            std::fs::read_to_string(self.data_dir().join("docker/instance-id")).unwrap_or_default();
        let output = Command::new("docker")
            .args(["ps", "-q", "--filter", &format!("label=cutover.instance={}", instance.trim())])
            .output()
            .expect("docker ps");
        String::from_utf8_lossy(&output.stdout).lines().map(str::to_string).collect()
    }

    /// Live demo-app processes of this cluster (each task runs its own copy of the app
    /// directory, under the data directory).
    pub fn app_processes(&self) -> usize {
        let root = self.dir.path().canonicalize().unwrap();
        let is_app = |p: &Path| p.starts_with(&root) && p.ends_with("cutover-demo-app");
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().chars().all(|c| c.is_ascii_digit()))
            .filter(|e| std::fs::read_link(e.path().join("exe")).is_ok_and(|p| is_app(&p)))
            .filter(|e| {
                // Zombies keep their exe link on some kernels; count only live processes.
                std::fs::read_to_string(e.path().join("stat")).is_ok_and(|s| {
                    s.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z'))
                })
            })
            .count()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // With or without a control plane (a test may fail while it is killed), `down` stops
        // the tasks and the load balancer this cluster started.
        let _ = self.cli(&["down"]);
        if let Some(mut child) = self.up.take() {
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if self.tmpfs {
            // Lazily: the data plane, started detached, may still hold a file there a moment.
            let _ = Command::new("umount").arg("-l").arg(self.data_dir()).status();
        }
    }
}

/// `deploy --group web/web-prod --task-definition TASKDEF --appspec APPSPEC`, then `extra`.
pub fn deploy_args<'a>(taskdef: &'a str, appspec: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "deploy",
        "--group",
        "web/web-prod",
        "--task-definition",
        taskdef,
        "--appspec",
        appspec,
    ];
    args.extend_from_slice(extra);
    args
}

pub fn appspec(hook: &str) -> String {
    let hooks = if hook.is_empty() {
        String::new()
    } else {
        format!("Hooks:\n  - AfterAllowTestTraffic: \"{hook}\"\n")
    };
    format!(
        "version: 0.0\nResources:\n  - TargetService:\n      Type: AWS::ECS::Service\n      Properties:\n        \
         TaskDefinition: <TASK_DEFINITION>\n        LoadBalancerInfo:\n          ContainerName: \"web\"\n          \
         ContainerPort: 8080\n{hooks}"
    )
}

/// Runs git in `dir` as a fixed test identity, on `main`; panics with git's stderr on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args([
            "-c",
            "user.name=Tester",
            "-c",
            "user.email=tester@example.com",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git");
    assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}
