//! Test harness: a real `Pipelines` behind a real HTTP server on 127.0.0.1:0, real git, and a fake
//! host's deployments that record what they are asked.

#![allow(dead_code)]

pub mod registry;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pipelines::{
    DeployRequest, Deployment, DeploymentState, Deployments, FileText, Pipelines, PipelinesConfig,
};
use tokio::sync::{mpsc, watch};

#[derive(Clone, Debug)]
pub struct DeployCall {
    pub group: String,
    pub task_definition: FileText,
    pub appspec: FileText,
    pub description: String,
}

/// An ECS action's deployment: the service and its (container, image) pairs.
pub type EcsCall = (String, Vec<(String, String)>);

/// The standalone loop's deployments, as a host would run them: each started deployment ends
/// with `outcome` (InProgress keeps it running until the outcome changes); a stop ends every
/// running one `Stopped`.
pub struct FakeDeployer {
    pub calls: Mutex<Vec<DeployCall>>,
    pub ecs_calls: Mutex<Vec<EcsCall>>,
    pub stops: Mutex<Vec<String>>,
    pub outcome: watch::Sender<DeploymentState>,
    /// While `true`, a start is recorded and then waits before it is answered.
    pub held: watch::Sender<bool>,
}

impl FakeDeployer {
    pub fn new(outcome: DeploymentState) -> Arc<FakeDeployer> {
        Arc::new(FakeDeployer {
            calls: Mutex::new(Vec::new()),
            ecs_calls: Mutex::new(Vec::new()),
            stops: Mutex::new(Vec::new()),
            outcome: watch::channel(outcome).0,
            held: watch::channel(false).0,
        })
    }
    /// Starts are answered only after [`FakeDeployer::release_deploys`].
    pub fn hold_deploys(&self) {
        self.held.send_replace(true);
    }
    pub fn release_deploys(&self) {
        self.held.send_replace(false);
    }
    pub fn calls(&self) -> Vec<DeployCall> {
        self.calls.lock().unwrap().clone()
    }
    pub fn set_outcome(&self, s: DeploymentState) {
        self.outcome.send_replace(s);
    }

    /// Answers what the pipelines' deploy actions ask, until their loop ends.
    pub async fn serve(
        self: Arc<Self>,
        mut requests: mpsc::UnboundedReceiver<DeployRequest>,
        answers: Deployments,
    ) {
        let mut outcome = self.outcome.subscribe();
        let mut running: Vec<String> = Vec::new();
        loop {
            tokio::select! {
                request = requests.recv() => match request {
                    None => return,
                    Some(DeployRequest::Start { job, deployment }) => {
                        let id = self.record(deployment);
                        let _ = self.held.subscribe().wait_for(|held| !held).await;
                        answers.started(&job, Ok(id.clone())).await;
                        running.push(id);
                    }
                    Some(DeployRequest::Stop { id }) => {
                        self.stops.lock().unwrap().push(id);
                        self.set_outcome(DeploymentState::Stopped { message: "stopped".into() });
                    }
                    Some(DeployRequest::Follow { id }) => running.push(id),
                },
                changed = outcome.changed() => if changed.is_err() { return },
            }
            let state = self.outcome.borrow().clone();
            if state != DeploymentState::InProgress {
                for id in running.drain(..) {
                    answers.ended(&id, state.clone()).await;
                }
            }
        }
    }

    /// Records a started deployment; its id.
    fn record(&self, deployment: Deployment) -> String {
        match deployment {
            Deployment::Files { group, task_definition, appspec, description } => {
                let mut calls = self.calls.lock().unwrap();
                calls.push(DeployCall { group, task_definition, appspec, description });
                format!("d-{}", calls.len())
            }
            Deployment::Images { service, images } => {
                let mut calls = self.ecs_calls.lock().unwrap();
                calls.push((service, images));
                format!("ecs-{}", calls.len())
            }
        }
    }
}

pub struct Server {
    pub ci: Option<Pipelines>,
    pub url: String,
    pub token: Option<String>,
    pub data_dir: PathBuf,
    pub store: Arc<store::Store>,
    server: tokio::task::JoinHandle<()>,
}

impl Server {
    pub async fn start(
        data_dir: &Path,
        token: Option<&str>,
        deployer: Arc<FakeDeployer>,
    ) -> Server {
        std::fs::create_dir_all(data_dir).expect("create the data dir");
        let store = Arc::new(store::Store::open(&data_dir.join("state.db")).expect("open store"));
        Server::start_with(data_dir, token, deployer, store).await
    }

    pub async fn start_with(
        data_dir: &Path,
        token: Option<&str>,
        deployer: Arc<FakeDeployer>,
        store: Arc<store::Store>,
    ) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let config = PipelinesConfig {
            data_dir: data_dir.to_path_buf(),
            api_url: url.clone(),
            token: token.map(str::to_string),
        };
        let (ci, requests) = Pipelines::start(config, store.clone()).expect("start ci");
        tokio::spawn(deployer.serve(requests, ci.deployments().expect("a standalone loop")));
        let app = pipelines::router(&ci);
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        Server {
            ci: Some(ci),
            url,
            token: token.map(str::to_string),
            data_dir: data_dir.to_path_buf(),
            store,
            server,
        }
    }

    pub fn ci(&self) -> &Pipelines {
        self.ci.as_ref().expect("running")
    }

    pub fn stop(mut self) {
        self.server.abort();
        self.ci.take();
    }

    pub fn remote(&self, repo: &str) -> String {
        match &self.token {
            Some(t) => {
                self.url.replace("http://", &format!("http://tester:{t}@"))
                    + &format!("/git/{repo}.git")
            }
            None => format!("{}/git/{repo}.git", self.url),
        }
    }

    fn req(&self, m: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = reqwest::Client::new().request(m, format!("{}{path}", self.url));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let resp = self.req(reqwest::Method::GET, path).send().await.expect("GET");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(serde_json::Value::Null))
    }

    pub async fn get_text(&self, path: &str) -> String {
        self.req(reqwest::Method::GET, path).send().await.expect("GET").text().await.expect("text")
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let resp = self.req(reqwest::Method::POST, path).json(&body).send().await.expect("POST");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(serde_json::Value::Null))
    }

    pub async fn delete(&self, path: &str) -> (u16, serde_json::Value) {
        let resp = self.req(reqwest::Method::DELETE, path).send().await.expect("DELETE");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(serde_json::Value::Null))
    }

    pub async fn executions(&self, pipeline: &str) -> Vec<serde_json::Value> {
        let (s, v) = self.get(&format!("/v1/pipelines/{pipeline}/executions")).await;
        assert_eq!(s, 200, "{v}");
        v.as_array().cloned().unwrap_or_default()
    }

    pub async fn execution(&self, pipeline: &str, id: &str) -> serde_json::Value {
        let (s, v) = self.get(&format!("/v1/pipelines/{pipeline}/executions/{id}")).await;
        assert_eq!(s, 200, "{v}");
        v
    }

    /// Waits until execution `id` has `status`.
    pub async fn wait_status(&self, pipeline: &str, id: &str, status: &str) -> serde_json::Value {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let (s, v) = self.get(&format!("/v1/pipelines/{pipeline}/executions/{id}")).await;
            if s == 200 && v["status"] == status {
                return v;
            }
            assert!(Instant::now() < end, "execution {id} did not reach {status}; last: {v:#}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for the pipeline to have `n` executions; returns them newest first.
    pub async fn wait_executions(&self, pipeline: &str, n: usize) -> Vec<serde_json::Value> {
        let ok = wait_until(Duration::from_secs(60), || async {
            self.executions(pipeline).await.len() >= n
        })
        .await;
        assert!(
            ok,
            "pipeline {pipeline} did not get {n} executions: {:#?}",
            self.executions(pipeline).await
        );
        self.executions(pipeline).await
    }
}

/// Polls `f` every 50 ms until it is true or the deadline passes.
pub async fn wait_until<F, Fut>(deadline: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

pub fn git(dir: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "Ada")
        .env("GIT_AUTHOR_EMAIL", "ada@example.com")
        .env("GIT_COMMITTER_NAME", "Ada")
        .env("GIT_COMMITTER_EMAIL", "ada@example.com")
        .output()
        .expect("run git")
}

pub fn git_ok(dir: &Path, args: &[&str]) -> String {
    let out = git(dir, args);
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A work tree with `files`, committed on `main`.
pub fn work_repo(dir: &Path, files: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).unwrap();
    git_ok(dir, &["init", "-q", "-b", "main"]);
    commit(dir, files, "first");
}

pub fn commit(dir: &Path, files: &[(&str, &str)], message: &str) -> String {
    for (path, text) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    git_ok(dir, &["add", "-A"]);
    git_ok(dir, &["commit", "-q", "--allow-empty", "-m", message]);
    git_ok(dir, &["rev-parse", "HEAD"])
}

/// `git push` in a blocking thread (the server runs on this runtime).
pub async fn push(dir: &Path, remote: &str) -> std::process::Output {
    let (dir, remote) = (dir.to_path_buf(), remote.to_string());
    tokio::task::spawn_blocking(move || git(&dir, &["push", "-q", &remote, "HEAD:refs/heads/main"]))
        .await
        .unwrap()
}

// -- declarations

pub fn source_repo(repo: &str) -> config::PipelineSource {
    config::PipelineSource {
        location: config::SourceLocation::Repository(repo.into()),
        branch: "main".into(),
        branches: None,
        output_artifact: "source".into(),
    }
}

pub fn build_action(name: &str, output: Option<&str>) -> config::ActionDecl {
    config::ActionDecl {
        name: name.into(),
        run_order: 1,
        input_artifacts: vec!["source".into()],
        output_artifacts: output.map(|o| vec![o.to_string()]).unwrap_or_default(),
        kind: config::ActionKind::Build(config::BuildAction {
            buildspec: "buildspec.yml".into(),
            timeout: Duration::from_secs(600),
            env: Default::default(),
        }),
    }
}

pub fn deploy_action(image_artifact: Option<&str>) -> config::ActionDecl {
    let mut inputs = vec!["source".to_string()];
    inputs.extend(image_artifact.map(str::to_string));
    config::ActionDecl {
        name: "release".into(),
        run_order: 1,
        input_artifacts: inputs,
        output_artifacts: vec![],
        kind: config::ActionKind::Deploy(config::DeployAction {
            deployment_group: config::DeploymentGroupRef::parse("web/web-prod").unwrap(),
            task_definition_template_artifact: "source".into(),
            task_definition_template_path: "taskdef.json".into(),
            appspec_template_artifact: "source".into(),
            appspec_template_path: "appspec.yaml".into(),
            image_placeholders: image_artifact
                .map(|a| {
                    vec![config::ImagePlaceholder {
                        artifact: a.into(),
                        placeholder: "IMAGE1_NAME".into(),
                    }]
                })
                .unwrap_or_default(),
        }),
    }
}

pub fn approval_action() -> config::ActionDecl {
    config::ActionDecl {
        name: "ok".into(),
        run_order: 1,
        input_artifacts: vec![],
        output_artifacts: vec![],
        kind: config::ActionKind::Approval(config::ApprovalAction {
            timeout: Duration::from_secs(3600),
            comment: None,
            review_url: None,
        }),
    }
}

pub fn stage(name: &str, actions: Vec<config::ActionDecl>) -> config::StageDecl {
    config::StageDecl { name: name.into(), actions }
}

pub fn pipeline(
    name: &str,
    source: config::PipelineSource,
    stages: Vec<config::StageDecl>,
) -> config::PipelineDecl {
    config::PipelineDecl {
        name: name.into(),
        execution_mode: config::ExecutionMode::Superseded,
        source,
        stages,
    }
}

pub const TASKDEF: &str = r#"{
  "family": "web",
  "containerDefinitions": [
    { "name": "web", "image": "<IMAGE1_NAME>", "essential": true,
      "portMappings": [ { "containerPort": 8080 } ] }
  ]
}
"#;

pub const APPSPEC: &str = r#"version: 0.0
Resources:
  - TargetService:
      Type: AWS::ECS::Service
      Properties:
        TaskDefinition: <TASK_DEFINITION>
        LoadBalancerInfo:
          ContainerName: web
          ContainerPort: 8080
"#;

/// A buildspec that writes imageDetail.json with the commit in the image tag, a local image (no
/// registry host, so the deploy action has nothing to pin; `BUILDSPEC_OK.replace("web:%s",
/// "HOST:PORT/web:%s")` names a registry).
pub const BUILDSPEC_OK: &str = r#"version: 0.2
phases:
  build:
    commands:
      - echo "building $CODEBUILD_RESOLVED_SOURCE_VERSION"
      - printf '{"ImageURI":"web:%s"}' "$CODEBUILD_RESOLVED_SOURCE_VERSION" > imageDetail.json
artifacts:
  files:
    - imageDetail.json
"#;
