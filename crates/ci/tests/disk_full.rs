//! A data directory that fills up while a pipeline deploys: the deployment's result is kept until
//! it can be written, and the execution finishes by itself once space is freed.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ci::DeploymentState;
use common::*;

/// A tmpfs mounted at a directory for the length of a test (needs root; fails rather than skip).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("running mount");
        assert!(
            output.status.success(),
            "this test needs a tmpfs data directory (run it as root): mount said {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes zeros into `path` until the filesystem refuses another byte.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).expect("creating the filler file");
    for chunk in [1 << 20, 4096, 1] {
        let zeros = vec![0u8; chunk];
        while file.write_all(&zeros).is_ok() {}
    }
    let _ = file.sync_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_result_that_arrives_while_the_disk_is_full_is_kept_until_it_can_be_written() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let _tmpfs = Tmpfs::mount(&data, "64m");
    let deployer = FakeDeployer::new(DeploymentState::InProgress);
    let server = Server::start(&data, None, deployer.clone()).await;
    let p = pipeline("plain", source_repo("app"), vec![stage("Deploy", vec![deploy_action(None)])]);
    server.ci().apply(&[spec::RepositoryDecl { name: "app".into() }], &[p]).unwrap();
    let work = tmp.path().join("work");
    work_repo(
        &work,
        &[
            ("taskdef.json", TASKDEF.replace("<IMAGE1_NAME>", "img:1").as_str()),
            ("appspec.yaml", APPSPEC),
        ],
    );
    assert!(push(&work, &server.remote("app")).await.status.success());
    let id = server.wait_executions("plain", 1).await[0]["id"].as_str().unwrap().to_string();
    let ok = wait_until(Duration::from_secs(30), || async { !deployer.calls().is_empty() }).await;
    assert!(ok, "deployment never started");

    let filler = data.join("filler");
    fill(&filler);
    deployer.set_outcome(DeploymentState::Succeeded);
    // The deploy action polls the deployment, sees it succeed and reports: a write the full disk
    // refuses.
    let refused = wait_until(Duration::from_secs(30), || async {
        server.store.write_failure().is_some_and(|e| e.contains("database or disk is full"))
    })
    .await;
    assert!(refused, "the full disk never refused a write");
    assert_eq!(server.execution("plain", &id).await["status"], "InProgress");

    std::fs::remove_file(&filler).unwrap();
    let execution = server.wait_status("plain", &id, "Succeeded").await;
    assert_eq!(execution["deployments"], serde_json::json!(["d-1"]));
}

/// A pipeline `plain` whose deploy action is about to start its deployment, on a data directory
/// that is a tmpfs. Returns the server, the deployer (holding its answer), the execution's id.
async fn a_deploy_action_starting(
    data: &Path,
    work: &Path,
) -> (Server, std::sync::Arc<FakeDeployer>, String) {
    let deployer = FakeDeployer::new(DeploymentState::InProgress);
    deployer.hold_deploys();
    let server = Server::start(data, None, deployer.clone()).await;
    let p = pipeline("plain", source_repo("app"), vec![stage("Deploy", vec![deploy_action(None)])]);
    server.ci().apply(&[spec::RepositoryDecl { name: "app".into() }], &[p]).unwrap();
    work_repo(
        work,
        &[
            ("taskdef.json", TASKDEF.replace("<IMAGE1_NAME>", "img:1").as_str()),
            ("appspec.yaml", APPSPEC),
        ],
    );
    assert!(push(work, &server.remote("app")).await.status.success());
    let id = server.wait_executions("plain", 1).await[0]["id"].as_str().unwrap().to_string();
    let ok = wait_until(Duration::from_secs(30), || async { !deployer.calls().is_empty() }).await;
    assert!(ok, "deployment never started");
    (server, deployer, id)
}

/// The id of a started deployment is what lets a restart adopt it instead of starting another:
/// when the disk refuses it, it is written once the disk has room, before anything else of the
/// action.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_started_deployment_the_full_disk_would_not_record_is_recorded_and_adopted_after_a_restart()
 {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let _tmpfs = Tmpfs::mount(&data, "64m");
    let (server, deployer, id) = a_deploy_action_starting(&data, &tmp.path().join("work")).await;

    let filler = data.join("filler");
    fill(&filler);
    deployer.release_deploys();
    let refused = wait_until(Duration::from_secs(30), || async {
        server.store.write_failure().is_some_and(|e| e.contains("database or disk is full"))
    })
    .await;
    assert!(refused, "the full disk never refused a write");
    std::fs::remove_file(&filler).unwrap();
    let shown = wait_until(Duration::from_secs(30), || async {
        server.execution("plain", &id).await["deployments"] == serde_json::json!(["d-1"])
    })
    .await;
    assert!(shown, "the execution never showed its deployment");

    let store = server.store.clone();
    server.stop();
    let server = Server::start_with(&data, None, deployer.clone(), store).await;
    deployer.set_outcome(DeploymentState::Succeeded);
    server.wait_status("plain", &id, "Succeeded").await;
    assert_eq!(deployer.calls().len(), 1, "the running deployment was adopted, not started again");
}

/// Every write the API takes while the disk is full is refused the way the control plane
/// refuses one: 503, nothing changed, free space and retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_while_the_disk_is_full_is_refused_with_503_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let _tmpfs = Tmpfs::mount(&data, "64m");
    let deployer = FakeDeployer::new(DeploymentState::Succeeded);
    let server = Server::start(&data, None, deployer.clone()).await;
    let p = pipeline("gated", source_repo("app"), vec![stage("Approve", vec![approval_action()])]);
    server.ci().apply(&[spec::RepositoryDecl { name: "app".into() }], &[p]).unwrap();
    let work = tmp.path().join("work");
    work_repo(&work, &[("README", "gated")]);
    assert!(push(&work, &server.remote("app")).await.status.success());
    let id = server.wait_executions("gated", 1).await[0]["id"].as_str().unwrap().to_string();
    let waiting = wait_until(Duration::from_secs(30), || async {
        server.execution("gated", &id).await["stages"][1]["status"] == "InProgress"
    })
    .await;
    assert!(waiting, "approval stage not reached");

    let filler = data.join("filler");
    fill(&filler);
    let (status, body) =
        server.post(&format!("/v1/approvals/{id}/approve"), serde_json::json!({})).await;
    assert_eq!(status, 503, "{body}");
    let message = body["error"].as_str().unwrap_or_default();
    assert!(message.contains("nothing was changed"), "{message}");
    assert!(message.contains("free space"), "{message}");
    assert_eq!(server.execution("gated", &id).await["status"], "InProgress");

    std::fs::remove_file(&filler).unwrap();
    let (status, body) =
        server.post(&format!("/v1/approvals/{id}/approve"), serde_json::json!({})).await;
    assert_eq!(status, 200, "{body}");
    server.wait_status("gated", &id, "Succeeded").await;
}

/// A push git accepted is not lost when the store cannot record its execution: the push stays
/// recorded in the repository and starts its execution once the store can be written. The store
/// is on a tmpfs of its own here, so git (on another disk) accepts the push while the store
/// refuses every write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_the_full_store_could_not_start_starts_once_it_can_be_written() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let store_dir = tmp.path().join("store");
    let _tmpfs = Tmpfs::mount(&store_dir, "64m");
    std::fs::create_dir_all(&data).unwrap();
    let store = std::sync::Arc::new(store::Store::open(&store_dir.join("state.db")).unwrap());
    let deployer = FakeDeployer::new(DeploymentState::Succeeded);
    let server = Server::start_with(&data, None, deployer.clone(), store).await;
    let p = pipeline("plain", source_repo("app"), vec![stage("Deploy", vec![deploy_action(None)])]);
    server.ci().apply(&[spec::RepositoryDecl { name: "app".into() }], &[p]).unwrap();
    let work = tmp.path().join("work");
    work_repo(
        &work,
        &[
            ("taskdef.json", TASKDEF.replace("<IMAGE1_NAME>", "img:1").as_str()),
            ("appspec.yaml", APPSPEC),
        ],
    );

    let filler = store_dir.join("filler");
    fill(&filler);
    assert!(push(&work, &server.remote("app")).await.status.success());
    let refused = wait_until(Duration::from_secs(30), || async {
        server.store.write_failure().is_some_and(|e| e.contains("database or disk is full"))
    })
    .await;
    assert!(refused, "the full store never refused a write");

    std::fs::remove_file(&filler).unwrap();
    let started = wait_until(Duration::from_secs(30), || async {
        !server.executions("plain").await.is_empty()
    })
    .await;
    assert!(started, "the push was lost: no execution started once the store had room");
    let id = server.executions("plain").await[0]["id"].as_str().unwrap().to_string();
    server.wait_status("plain", &id, "Succeeded").await;
    assert_eq!(server.executions("plain").await.len(), 1, "the push started one execution");
}
