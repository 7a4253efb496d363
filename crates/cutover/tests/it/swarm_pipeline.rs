//! A release built by a pipeline and pulled by every node, end to end on the real three-worker
//! swarm of `scripts/cluster up`: a `git push` to cutover's own repository runs the build stage,
//! whose `buildspec.yml` builds a `FROM scratch` image with the real engine, pushes it to the
//! cluster's registry and writes `imageDetail.json`; the deploy stage pins the tag to its digest
//! and releases it as a canary over the load balancers of the three nodes, while clients call
//! production on two of them. Fails, does not skip, when the cluster is not up.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::harness::*;
use crate::swarm_lb_fixture::*;

/// The seeds' buildspec, with `docker push` to the cluster's registry (the tasks run on other
/// hosts) and the registry reference in `imageDetail.json`.
const BUILDSPEC: &str = r#"version: 0.2
env:
  variables:
    DOCKER_BUILDKIT: "0"
phases:
  pre_build:
    commands:
      - IMAGE_TAG=$(echo $CODEBUILD_RESOLVED_SOURCE_VERSION | cut -c 1-7)
      - cp "$DEMO_APP" cutover-demo-app
  build:
    commands:
      - docker build -q -t "$IMAGE_REPO:$IMAGE_TAG" .
      - docker push "$IMAGE_REPO:$IMAGE_TAG"
  post_build:
    commands:
      - printf '{"ImageURI":"%s"}' "$IMAGE_REPO:$IMAGE_TAG" > imageDetail.json
artifacts:
  files:
    - imageDetail.json
"#;

/// The app's repository at `version`: its Dockerfile (the static demo app and a file naming the
/// version, so that each version's image has a digest of its own), buildspec, task definition
/// with `<IMAGE1_NAME>` and AppSpec.
fn write_app(repo: &Path, version: &str) {
    std::fs::write(
        repo.join("Dockerfile"),
        "FROM scratch\nCOPY cutover-demo-app /cutover-demo-app\nCOPY VERSION /VERSION\n\
         ENTRYPOINT [\"/cutover-demo-app\"]\n",
    )
    .unwrap();
    std::fs::write(repo.join("VERSION"), format!("{version}\n")).unwrap();
    std::fs::write(repo.join(".gitignore"), "cutover-demo-app\n").unwrap();
    std::fs::write(repo.join("buildspec.yml"), BUILDSPEC).unwrap();
    std::fs::write(
        repo.join("taskdef.json"),
        format!(
            r#"{{"family": "api", "containerDefinitions": [{{"name": "web", "image": "<IMAGE1_NAME>",
                "essential": true, "stopTimeout": 2, "portMappings": [{{"containerPort": 8080}}],
                "environment": [{{"name": "APP_VERSION", "value": "{version}"}}]}}]}}"#
        ),
    )
    .unwrap();
    std::fs::write(repo.join("appspec.yaml"), appspec("")).unwrap();
}

/// The stage called `name` of a pipeline execution's view (`Null` when it has none).
fn stage(execution: &serde_json::Value, name: &str) -> serde_json::Value {
    let stages = execution["stages"].as_array().cloned().unwrap_or_default();
    stages.into_iter().find(|s| s["name"] == name).unwrap_or_default()
}

/// The OS's wall clock in ms: the control plane dates a stage's start by it on this same
/// machine, and the time to green healthy is measured from there.
#[allow(clippy::disallowed_methods)]
fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// The digest the cluster's registry holds for `reference` (`host/repo:tag`), as the manager's
/// engine recorded it when the build pushed it.
fn pushed_digest(reference: &str) -> String {
    let repository = reference.rsplit_once(':').unwrap().0;
    let output = Command::new("docker")
        .args(["image", "inspect", "--format", "{{range .RepoDigests}}{{println .}}{{end}}"])
        .arg(reference)
        .output()
        .expect("docker image inspect");
    let digests = String::from_utf8_lossy(&output.stdout).into_owned();
    digests
        .lines()
        .find_map(|d| d.strip_prefix(&format!("{repository}@")).map(str::to_string))
        .unwrap_or_else(|| panic!("{reference} was not pushed: {digests:?}"))
}

/// `docker ARGS` on worker `n`'s own engine (1-based): its stdout lines, or why it failed.
fn on_node(n: usize, args: &[&str]) -> Result<Vec<String>, String> {
    let output = Command::new("docker")
        .args(["-H", &format!("unix:///run/cutover-cluster/node{n}.sock")])
        .args(args)
        .output()
        .expect("docker on a node");
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&output.stdout).lines().map(str::to_string).collect())
}

/// Whether worker `n` pulled `pinned` (`name@sha256:…`) and runs a container of that image.
fn node_runs(n: usize, pinned: &str) -> Result<(), String> {
    let image = on_node(n, &["image", "inspect", "--format", "{{.Id}}", pinned])?;
    let containers = on_node(n, &["ps", "-q"])?;
    let mut args = vec!["inspect", "--format", "{{.Image}}"];
    args.extend(containers.iter().map(String::as_str));
    let running = on_node(n, &args)?;
    if running.iter().any(|id| image.contains(id)) {
        Ok(())
    } else {
        Err(format!("image {image:?} pulled, but the containers run {running:?}"))
    }
}

#[test]
fn swarm_pipeline_a_pushed_v2_is_built_pushed_to_the_registry_pulled_by_digest_on_every_node_and_released_with_no_failed_request()
 {
    let lb = SwarmLb::start("8s");
    // The build copies the static demo app the other cluster tests' image holds.
    registry_image();
    let demo =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("demo-app-static/image/cutover-demo-app");
    let image_repo = format!("{REGISTRY}/cutover-e2e/pipeline-{}", lb.prod);
    let pipeline = format!(
        r#"repositories:
  - name: api
pipelines:
  - name: api
    source: {{ repository: api, branch: main }}
    stages:
      - name: Build
        actions:
          - name: build
            type: build
            env: {{ DEMO_APP: "{demo}", IMAGE_REPO: "{image_repo}" }}
      - name: Deploy
        actions:
          - {{ name: deploy, type: deploy, deployment_group: api/api-prod }}
"#,
        demo = demo.display(),
    );
    let yaml = std::fs::read_to_string(lb.cluster.path("swarm-lb.yaml")).unwrap();
    std::fs::write(lb.cluster.path("swarm-lb.yaml"), yaml + &pipeline).unwrap();
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

    let remote =
        lb.cluster.json(&["repos", "get", "api"])["clone_url"].as_str().unwrap().to_string();
    let repo = lb.cluster.path("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    git(&repo, &["remote", "add", "cutover", &remote]);
    write_app(&repo, "v2");
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "v2"]);
    let commit = git(&repo, &["rev-parse", "HEAD"]);

    let (load1, load2) = (Load::start(lb.prod_on(0), 2), Load::start(lb.prod_on(1), 2));
    git(&repo, &["push", "-q", "cutover", "main"]);
    let execution_id = wait_for("an execution of the push", LIMIT, || {
        let executions = lb.cluster.json(&["pipelines", "executions", "api"]);
        executions.as_array()?.iter().find(|e| e["commit"] == commit.as_str())?["id"]
            .as_str()
            .map(str::to_string)
    });
    let execution = |id: &str| lb.cluster.json(&["pipelines", "execution", "api", id]);
    let deploy_started = wait_for_or(
        "the deploy stage to start",
        LIMIT,
        || stage(&execution(&execution_id), "Deploy")["started_at"].as_u64(),
        || format!("{}\n{}", execution(&execution_id), lb.seen()),
    );
    // Green is healthy on three nodes when its four targets are: the control plane counts a
    // target healthy only when every answering node's load balancer finds it so.
    let healthy_at = wait_for_or(
        "green's four targets healthy on every node's load balancer",
        LIMIT,
        || {
            let targets = targets_of(&lb, "api-green");
            (targets.len() == 4 && targets.iter().all(|(_, state)| state == "healthy")).then(now_ms)
        },
        || format!("{:?}\n{}", targets_of(&lb, "api-green"), lb.seen()),
    );
    println!(
        "deploy stage start to green healthy on the three nodes' load balancers: {:.1}s",
        healthy_at.saturating_sub(deploy_started) as f64 / 1000.0
    );
    let green = placed_tasks(&lb);
    let finished = wait_for_or(
        "the execution to finish",
        LIMIT,
        || Some(execution(&execution_id)).filter(|e| e["ended_at"].is_u64()),
        || lb.seen(),
    );
    let (on1, on2) = (load1.finish(), load2.finish());
    assert_eq!(finished["status"], "Succeeded", "{finished}");
    let seconds =
        |name: &str| stage(&finished, name)["duration_ms"].as_f64().unwrap_or(0.0) / 1000.0;
    println!(
        "build stage (docker build and push to the registry): {:.1}s; deploy stage, the canary \
         included: {:.1}s",
        seconds("Build"),
        seconds("Deploy")
    );
    let deployment = lb.cluster.deployment(finished["deployments"][0].as_str().unwrap());
    assert_eq!(deployment["status"], "Succeeded", "{deployment}");

    // Zero failed requests on both nodes, and the split moved on each: v1 only, a window with
    // both, then v2 only.
    for (node, samples) in [("node1", &on1), ("node2", &on2)] {
        assert!(samples.len() > 100, "{node}: only {} requests", samples.len());
        assert_eq!(failures(samples), Vec::<&Sample>::new(), "{node}: requests failed");
        let first_v2 = samples.iter().position(|s| s.version == "v2");
        let last_v1 = samples.iter().rposition(|s| s.version == "v1");
        assert!(
            matches!((first_v2, last_v1), (Some(f), Some(l)) if f < l),
            "{node}: no canary window with both versions: {:?}",
            versions(samples)
        );
        assert_eq!(samples.last().unwrap().version, "v2", "{node}");
    }

    // The build pushed the image to the registry; the deploy stage pinned the tag to that
    // digest, every green task's Swarm service runs the pinned reference, and the green tasks
    // are on all three workers, each of which runs a container of it: every node pulled it.
    let tag = &commit[..7];
    let reference = format!("{image_repo}:{tag}");
    let pinned = format!("{reference}@{}", pushed_digest(&reference));
    let green_addrs: BTreeSet<String> =
        targets_of(&lb, "api-green").into_iter().map(|(addr, _)| addr).collect();
    let green: Vec<&PlacedTask> = green.iter().filter(|t| green_addrs.contains(&t.addr)).collect();
    assert_eq!(green.len(), 4, "{green:?}");
    for task in &green {
        let output = Command::new("docker")
            .args(["service", "inspect", &format!("cutover-{}", task.id), "--format"])
            .arg("{{.Spec.TaskTemplate.ContainerSpec.Image}}")
            .output()
            .expect("docker service inspect");
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), pinned, "{task:?}");
    }
    let nodes: BTreeSet<&str> = green.iter().map(|t| t.node.as_str()).collect();
    assert_eq!(nodes, BTreeSet::from(["node1", "node2", "node3"]), "{green:?}");
    for n in 1..=3 {
        if let Err(why) = node_runs(n, &pinned) {
            panic!("node{n} does not run {pinned}: {why}");
        }
    }
}
