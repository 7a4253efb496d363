//! Secrets in `cutover up`'s environment reach nothing a user or another local user can read:
//! hooks start from a clean environment, and the data directory is private.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::harness::*;

/// A value that appears nowhere unless something copied it.
fn unique(prefix: &str) -> String {
    #[allow(clippy::disallowed_methods)] // A nonce, not a time.
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// Every file and directory under `dir`, not following symbolic links.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let is_dir = entry.file_type().unwrap().is_dir();
        out.push(path.clone());
        if is_dir {
            out.extend(tree(&path));
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn secrets_of_the_control_planes_environment_appear_nowhere_and_the_data_dir_is_private() {
    let secret = unique("s3cr3t");
    let token = unique("t0ken");
    let cluster = Cluster::start(Options {
        // The hook prints the part of its environment that matters here (a deployment keeps
        // only the first kilobyte of a hook's message), found with `env` and `grep` on its PATH,
        // and fails.
        hooks: r#"  - { name: print-env, run: "env | grep -e SECRET -e TOKEN -e ^CUTOVER_; exit 3", timeout: 10s }"#,
        env: vec![("WEB_HOOK_SECRET", secret.clone()), ("CUTOVER_TOKEN", token.clone())],
        ..Options::default()
    });
    cluster.apply_and_wait_for_v1();
    std::fs::write(cluster.path("appspec-env.yaml"), appspec("print-env")).unwrap();

    let deploy = cluster.cli(&deploy_args("taskdef-v2.json", "appspec-env.yaml", &["--wait"]));
    assert_eq!(deploy.status.code(), Some(1), "the hook fails the deployment");
    let id = cluster.json(&["deployments", "list"])[0]["id"].as_str().unwrap().to_string();
    let view = cluster.deployment(&id);
    let message = view["error_message"].as_str().unwrap().to_string();
    let text_view = cluster.cli_ok(&["deployments", "get", &id]);
    let watched = cluster.cli(&["deployments", "watch", &id]);
    let outputs = [
        ("deploy --wait", [deploy.stdout, deploy.stderr].concat()),
        ("deployments get", text_view.into_bytes()),
        ("deployments get -o json", view.to_string().into_bytes()),
        ("deployments watch", [watched.stdout, watched.stderr].concat()),
    ];
    for (what, output) in &outputs {
        for value in [&secret, &token] {
            assert!(!contains(output, value), "{what} shows {value}");
        }
    }

    // The hook ran, with the hook protocol's variables.
    for expected in [
        format!("CUTOVER_DEPLOYMENT_ID={id}"),
        "CUTOVER_LIFECYCLE_EVENT=AfterAllowTestTraffic".to_string(),
        format!("CUTOVER_TEST_URL=http://{}", cluster.test),
    ] {
        assert!(
            message.contains(&expected),
            "{expected} missing from the hook's output: {message}"
        );
    }

    // Every file cutover wrote, byte by byte: up.log, the load balancer's log, task logs, the
    // SQLite database and its WAL.
    let files: Vec<PathBuf> =
        tree(cluster.dir.path()).into_iter().filter(|p| p.is_file()).collect();
    assert!(files.iter().any(|p| p.ends_with("data/state.db")), "{files:?}");
    for file in &files {
        let bytes = match std::fs::read(file) {
            Ok(bytes) => bytes,
            // A temporary file renamed into place (an atomic write) since the listing.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => panic!("reading {}: {err}", file.display()),
        };
        for value in [&secret, &token] {
            assert!(!contains(&bytes, value), "{} holds {value}", file.display());
        }
    }

    // Nothing under the data directory is open to the group or to others.
    let data_dir = cluster.data_dir();
    let mut open: Vec<String> = std::iter::once(data_dir.clone())
        .chain(tree(&data_dir))
        .filter_map(|path| {
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let mode = meta.permissions().mode() & 0o777;
            (!meta.file_type().is_symlink() && mode & 0o077 != 0)
                .then(|| format!("{:o} {}", mode, path.display()))
        })
        .collect();
    open.sort();
    assert_eq!(open, Vec::<String>::new(), "readable by other users");
}
