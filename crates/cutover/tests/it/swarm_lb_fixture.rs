//! What the tests of the load balancer on every node of the swarm share (`it/swarm_lb.rs`, and
//! `tests/swarm_lb_node_loss.rs`, a binary of its own): the test cluster, the images in its
//! registry, and an installation whose swarm service is served by every node's load balancer.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::harness::*;

pub const REGISTRY: &str = "10.99.0.1:5000";

/// Fails, naming the script, unless this machine's engine manages the test cluster's swarm.
pub fn require_cluster() {
    let output = Command::new("docker")
        .args([
            "info",
            "--format",
            "{{.Swarm.ControlAvailable}} {{.Swarm.NodeAddr}} {{.Swarm.Nodes}}",
        ])
        .output()
        .expect("docker info");
    let info = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let nodes: usize = info.rsplit(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(
        info.starts_with("true 10.99.0.1 ") && nodes >= 4,
        "these tests need the test cluster: run `scripts/cluster up` (as root) first; `.ci/run` \
         does it (docker info says: {info:?})"
    );
}

/// The demo app's image in the cluster's registry, where every node can pull it.
pub fn registry_image() -> String {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let local = docker_image();
            let remote = format!("{REGISTRY}/{local}");
            for args in
                [vec!["tag", local.as_str(), remote.as_str()], vec!["push", remote.as_str()]]
            {
                let output = Command::new("docker").args(&args).output().expect("docker");
                assert!(
                    output.status.success(),
                    "docker {args:?}: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            remote
        })
        .clone()
}

pub const LIMIT: Duration = Duration::from_secs(120);
pub const NODES: [&str; 3] = ["10.99.0.11", "10.99.0.12", "10.99.0.13"];

/// The data plane's image, built from the binary under test and pushed to the cluster's
/// registry, by digest.
pub fn lb_image() -> String {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/swarm-lb-image");
            let output = Command::new(script).args([CUTOVER, REGISTRY]).output().unwrap();
            assert!(
                output.status.success(),
                "scripts/swarm-lb-image: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            String::from_utf8_lossy(&output.stdout).trim().to_string()
        })
        .clone()
}

/// An installation whose service `api` (four swarm tasks) is served by the load balancers of
/// the nodes, on port `prod` of every node; deployments are canaries of 20% for `interval`.
pub struct SwarmLb {
    pub cluster: Cluster,
    pub prod: u16,
    pub admin: u16,
}

impl SwarmLb {
    pub fn start(interval: &str) -> SwarmLb {
        SwarmLb::start_with(interval, vec![("CUTOVER_SWARM_LB_IMAGE", lb_image())])
    }

    /// [`SwarmLb::start`] with `cutover up`'s environment `up_env` (beside the admin port)
    /// instead of the image built here.
    pub fn start_with(interval: &str, mut up_env: Vec<(&'static str, String)>) -> SwarmLb {
        require_cluster();
        let image = registry_image();
        let (prod, admin) = (free_port(), free_port());
        up_env.push(("CUTOVER_SWARM_LB_ADMIN_PORT", admin.to_string()));
        let cluster = Cluster::start(Options { up_env, ..Options::default() });
        for version in ["v1", "v2", "v3"] {
            std::fs::write(
                cluster.path(&format!("api-{version}.json")),
                format!(
                    r#"{{"family": "api", "containerDefinitions": [{{"name": "web", "image": "{image}",
                        "essential": true, "stopTimeout": 2, "portMappings": [{{"containerPort": 8080}}],
                        "environment": [{{"name": "APP_VERSION", "value": "{version}"}}]}}]}}"#
                ),
            )
            .unwrap();
        }
        let health = "{ path: /health, interval: 1s, timeout: 500ms, healthy_threshold: 2, unhealthy_threshold: 2, matcher: \"200\" }";
        std::fs::write(
            cluster.path("swarm-lb.yaml"),
            format!(
                r#"load_balancers:
  - name: edge
    listeners:
      - {{ name: prod, port: {prod} }}
target_groups:
  - {{ name: api-blue, health_check: {health}, deregistration_delay: 1s }}
  - {{ name: api-green, health_check: {health}, deregistration_delay: 1s }}
services:
  - name: api
    runtime: swarm
    task_definition: api-v1.json
    desired_count: 4
    load_balancer: {{ target_group: api-blue, container_name: web, container_port: 8080 }}
deployment_configs:
  - {{ name: swarm-canary, type: TimeBasedCanary, percentage: 20, interval: {interval} }}
deployment_groups:
  - application: api
    name: api-prod
    service: api
    deployment_config: swarm-canary
    target_groups: [api-blue, api-green]
    production_listener: edge/prod
    termination_wait: 1s
    auto_rollback: [DEPLOYMENT_FAILURE, DEPLOYMENT_STOP_ON_REQUEST]
"#
            ),
        )
        .unwrap();
        SwarmLb { cluster, prod, admin }
    }

    /// Production on node `n` (0-based).
    pub fn prod_on(&self, n: usize) -> SocketAddr {
        format!("{}:{}", NODES[n], self.prod).parse().unwrap()
    }

    pub fn token(&self) -> String {
        let path = self.cluster.data_dir().join("lb/cluster-token.json");
        let file: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        file["token"].as_str().unwrap().to_string()
    }

    /// The routing table node `n`'s load balancer serves, read from its admin API.
    pub fn served_on(&self, n: usize, token: &str) -> Option<serde_json::Value> {
        let response = reqwest::blocking::Client::new()
            .get(format!("http://{}:{}/v1/routes", NODES[n], self.admin))
            .bearer_auth(token)
            .timeout(Duration::from_secs(2))
            .send()
            .ok()?;
        response.status().is_success().then(|| response.json().ok())?
    }

    pub fn deploy(&self, taskdef: &str) -> String {
        let created = self.cluster.json(&[
            "deploy",
            "--group",
            "api/api-prod",
            "--task-definition",
            taskdef,
            "--appspec",
            "appspec.yaml",
        ]);
        created["id"].as_str().unwrap().to_string()
    }

    /// What the nodes' load balancers and Swarm show, for a timeout's message.
    pub fn seen(&self) -> String {
        let status = self.cluster.cli(&["status"]);
        let answers: Vec<String> =
            (0..3).map(|n| format!("{:?}", get(self.prod_on(n), "/"))).collect();
        let services = Command::new("docker")
            .args(["service", "ls", "--format", "{{.Name}} {{.Mode}} {{.Replicas}}"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        format!(
            "cutover status:\n{}\nproduction on each node: {answers:?}\ndocker service ls:\n{services}",
            String::from_utf8_lossy(&status.stdout)
        )
    }
}

/// The weight of target group `green` in production's forward of a served table.
pub fn green_weight(served: &serde_json::Value, green: &str) -> Option<u64> {
    let groups = served["table"]["listeners"]["edge/prod"]["action"]["target_groups"].as_array()?;
    Some(
        groups.iter().find(|g| g["name"] == green).map_or(0, |g| g["weight"].as_u64().unwrap_or(0)),
    )
}

/// Which versions answered in `samples`, and how many times each.
pub fn versions(samples: &[Sample]) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for s in samples {
        *seen.entry(s.version.clone()).or_default() += 1;
    }
    seen
}

/// This installation's Swarm services by name (the data plane's and every task's).
pub fn services_of(lb: &SwarmLb) -> Vec<String> {
    let instance = std::fs::read_to_string(lb.cluster.data_dir().join("docker/instance-id"))
        .unwrap_or_default();
    let output = Command::new("docker")
        .args(["service", "ls", "--format", "{{.Name}}", "--filter"])
        .arg(format!("label=cutover.instance={}", instance.trim()))
        .output()
        .expect("docker service ls");
    let mut names: Vec<String> =
        String::from_utf8_lossy(&output.stdout).lines().map(str::to_string).collect();
    names.sort();
    names
}

/// A running task of service `api`, where Swarm runs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacedTask {
    pub id: String,
    /// `overlay-ip:port`, as registered in its target group.
    pub addr: String,
    /// The worker's hostname (`node1`…), from Swarm's tasks of the task's service.
    pub node: String,
}

/// Every RUNNING task of service `api` that Swarm places on a node, sorted by id.
pub fn placed_tasks(lb: &SwarmLb) -> Vec<PlacedTask> {
    let listed = lb.cluster.json(&["tasks", "list", "--service", "api"]);
    let mut placed: Vec<PlacedTask> = listed
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["last_status"] == "RUNNING")
        .filter_map(|t| {
            let id = t["id"].as_str()?.to_string();
            let output = Command::new("docker")
                .args(["service", "ps", &format!("cutover-{id}"), "--filter"])
                .args(["desired-state=running", "--format", "{{.Node}}"])
                .output()
                .ok()?;
            let node = String::from_utf8_lossy(&output.stdout).lines().next()?.trim().to_string();
            Some(PlacedTask { id, addr: t["addr"].as_str()?.to_string(), node })
        })
        .collect();
    placed.sort_by(|a, b| a.id.cmp(&b.id));
    placed
}

/// The targets of target group `name` as the control plane merges the nodes' health checks:
/// (address, state), sorted.
pub fn targets_of(lb: &SwarmLb, name: &str) -> Vec<(String, String)> {
    let group = lb.cluster.json(&["target-groups", "get", name]);
    let mut targets: Vec<(String, String)> = group["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            (
                t["addr"].as_str().unwrap_or_default().to_string(),
                t["state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    targets.sort();
    targets
}
