//! The test cluster of `scripts/cluster up`, shared by the Swarm runtime's test binaries.

#![allow(dead_code)]

use bollard::Docker;
use bollard::query_parameters::{CreateImageOptions, PushImageOptions};
use futures_util::StreamExt;

use super::common;

pub const REGISTRY: &str = "10.99.0.1:5000";
pub const REPO: &str = "10.99.0.1:5000/cutover-test/demo-app";
pub const OVERLAY: &str = "cutover-overlay";

static IMAGE_PUSHED: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();

pub fn manager() -> Docker {
    Docker::connect_with_defaults().expect("a Docker client for the test")
}

/// Node `nodeN`'s own engine, which only the test talks to (cutover talks to the manager).
pub fn node_engine(node: &str) -> Docker {
    let sock = format!("/run/cutover-cluster/{node}.sock");
    Docker::connect_with_unix(&sock, 60, bollard::API_DEFAULT_VERSION).expect("node client")
}

/// Fails, naming the script, unless `scripts/cluster up` made this machine's engine the manager
/// of a swarm with three ready workers.
pub async fn require_cluster() {
    let info = manager().info().await.expect("this machine's Docker Engine must be running");
    let swarm = info.swarm.unwrap_or_default();
    assert!(
        swarm.control_available == Some(true)
            && swarm.node_addr.as_deref() == Some("10.99.0.1")
            && swarm.nodes.unwrap_or(0) >= 4,
        "these tests need the test cluster: run `scripts/cluster up` (as root) first; \
         `.ci/run` does it (swarm seen: {:?} at {:?}, {:?} nodes)",
        swarm.local_node_state,
        swarm.node_addr,
        swarm.nodes
    );
}

/// The demo app as a `FROM scratch` image in the cluster's registry, by tag (the runtime
/// resolves it to the digest).
pub async fn demo_image() -> String {
    IMAGE_PUSHED
        .get_or_init(|| async {
            let bin = tokio::task::spawn_blocking(|| common::demo_app(true)).await.expect("build");
            let data = std::fs::read(&bin).expect("read demo app");
            let tar = common::tar(&[("cutover-demo-app", 0o755, &data)]);
            let options = CreateImageOptions {
                from_src: Some("-".into()),
                repo: Some(REPO.into()),
                tag: Some("swarm".into()),
                changes: vec![r#"ENTRYPOINT ["/cutover-demo-app"]"#.into(), "EXPOSE 8080".into()],
                ..Default::default()
            };
            let docker = manager();
            let mut progress =
                docker.create_image(Some(options), Some(bollard::body_full(tar.into())), None);
            while let Some(step) = progress.next().await {
                step.expect("docker import of the demo app image");
            }
            let push = PushImageOptions { tag: Some("swarm".into()), platform: None };
            let mut progress = docker.push_image(REPO, Some(push), None);
            while let Some(step) = progress.next().await {
                let step = step.unwrap_or_else(|e| panic!("push to {REGISTRY}: {e}"));
                assert!(step.error.is_none(), "push to {REGISTRY}: {:?}", step.error);
            }
            format!("{REPO}:swarm")
        })
        .await
        .clone()
}
