//! `git http-backend`, and every git a push runs under it, starts from the same clean environment
//! as tasks, builds and hooks (`runtime::host_env`): nothing else of `cutover up`'s.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::harness::*;

#[test]
fn git_over_http_gets_the_clean_environment_of_every_child_and_no_secret() {
    let secret = format!("s3cr3t-git-{}", std::process::id());
    let cluster = Cluster::start(Options {
        top_extra: "repositories:\n  - name: web\n".to_string(),
        // TZ is one of the variables every child gets; the secret is not.
        env: vec![("WEB_HOOK_SECRET", secret.clone()), ("TZ", "UTC0".to_string())],
        ..Options::default()
    });
    cluster.cli_ok(&["apply", "-f", "cutover.yaml"]);
    let remote = cluster.json(&["repos", "get", "web"])["clone_url"].as_str().unwrap().to_string();

    // A pre-receive hook in the hosted repository records the environment git runs it with.
    let seen = cluster.path("git-env.txt");
    let hook = cluster.data_dir().join("pipelines/repos/web.git/hooks/pre-receive");
    std::fs::write(&hook, format!("#!/bin/sh\nenv > '{}'\n", seen.display())).unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o700)).unwrap();

    let repo = cluster.path("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    git(&repo, &["remote", "add", "cutover", &remote]);
    std::fs::write(repo.join("README"), "hello\n").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "first"]);
    git(&repo, &["push", "-q", "cutover", "main"]);

    let env = wait_for("the pre-receive hook to run", Duration::from_secs(30), || {
        std::fs::read_to_string(&seen).ok().filter(|text| text.ends_with('\n'))
    });
    assert!(!env.contains(&secret), "the secret reached git: {env}");
    assert!(env.lines().any(|line| line == "TZ=UTC0"), "not the clean environment: {env}");
}
