//! The swarm nodes' load balancer without a hand-built image, end to end on the real cluster of
//! `scripts/cluster up`: `cutover up --swarm-registry` makes the image from its own executable,
//! pushes it to the cluster's registry and has every node run it by digest; without a registry
//! or an image, a swarm service's load balancer is refused saying what to name. These tests fail,
//! they do not skip, when the cluster is not up.

use std::process::Command;
use std::time::Instant;

use crate::harness::*;
use crate::swarm_lb_fixture::*;

/// `docker` against node `n`'s engine (1-based), as `scripts/cluster` starts them.
fn node_docker(n: usize, args: &[&str]) -> String {
    let output = Command::new("docker")
        .arg("-H")
        .arg(format!("unix:///run/cutover-cluster/node{n}.sock"))
        .args(args)
        .output()
        .expect("docker");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn docker(args: &[&str]) -> String {
    let output = Command::new("docker").args(args).output().expect("docker");
    assert!(
        output.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

#[test]
fn swarm_image_up_with_a_registry_builds_pushes_and_runs_the_nodes_load_balancer_by_digest() {
    let lb = SwarmLb::start_with("8s", vec![("CUTOVER_SWARM_REGISTRY", REGISTRY.to_string())]);
    let applied = Instant::now();
    lb.cluster.cli_ok(&["apply", "-f", "swarm-lb.yaml"]);
    wait_for_or(
        "production to answer v1 on every node's address",
        LIMIT,
        || {
            (0..3)
                .all(|n| get(lb.prod_on(n), "/").is_ok_and(|a| a == (200, "v1".into())))
                .then_some(())
        },
        || lb.seen(),
    );
    println!(
        "apply to production answering on all three nodes, the image made and pushed (or found \
         pushed) by cutover up: {:.1}s",
        applied.elapsed().as_secs_f64()
    );

    // The data plane's service runs the image by its registry digest.
    let service = services_of(&lb)
        .into_iter()
        .find(|name| name.starts_with("cutover-lb-"))
        .unwrap_or_else(|| panic!("no data plane service: {:?}", services_of(&lb)));
    let image = docker(&[
        "service",
        "inspect",
        &service,
        "--format",
        "{{.Spec.TaskTemplate.ContainerSpec.Image}}",
    ]);
    let digest = image
        .strip_prefix(&format!("{REGISTRY}/cutover-lb@sha256:"))
        .unwrap_or_else(|| panic!("the service runs {image:?}, not a digest in {REGISTRY}"));
    assert!(digest.len() == 64 && digest.chars().all(|c| c.is_ascii_hexdigit()), "{image}");

    // The registry has it under the fingerprint of the `cutover` under test.
    let binary_sha = Command::new("sha256sum").arg(CUTOVER).output().expect("sha256sum");
    let fingerprint: String =
        String::from_utf8_lossy(&binary_sha.stdout).chars().take(16).collect();
    let manifest = docker(&[
        "manifest",
        "inspect",
        "--verbose",
        &format!("{REGISTRY}/cutover-lb:{fingerprint}"),
    ]);
    let manifest: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    assert_eq!(manifest["Descriptor"]["digest"], format!("sha256:{digest}"), "{manifest}");

    // Every node pulled it and runs it: the container of the node's instance is of that image.
    for n in 1..=3 {
        let instance =
            std::fs::read_to_string(lb.cluster.data_dir().join("docker/instance-id")).unwrap();
        let containers = node_docker(
            n,
            &[
                "ps",
                "--quiet",
                "--filter",
                "label=cutover.data-plane=true",
                "--filter",
                &format!("label=cutover.instance={}", instance.trim()),
            ],
        );
        let container = containers.lines().next().unwrap_or_else(|| panic!("node{n} runs none"));
        let runs = node_docker(n, &["inspect", container, "--format", "{{.Config.Image}}"]);
        assert_eq!(runs, image, "node{n}");
    }
}

#[test]
fn swarm_image_without_a_registry_a_swarm_load_balancer_is_refused_saying_what_to_name() {
    let lb = SwarmLb::start_with("8s", Vec::new());
    let before = std::fs::read_to_string(lb.cluster.path("swarm-lb.yaml")).unwrap();
    let output = lb.cluster.cli(&["apply", "-f", "swarm-lb.yaml"]);
    assert!(!output.status.success(), "apply succeeded");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "the load balancer refused the new configuration, nothing was changed: a `runtime: \
             swarm` service has a load balancer, which runs on every node of the swarm from an \
             image of cutover that every node pulls, and no registry is named: restart `cutover \
             up` with `--swarm-registry HOST:PORT`"
        ),
        "{stderr}"
    );
    // Nothing was changed: no service, no task, no data plane.
    let services = lb.cluster.json(&["services", "list"]);
    assert_eq!(services, serde_json::json!([]), "{before}");
    assert_eq!(services_of(&lb), Vec::<String>::new());
}
