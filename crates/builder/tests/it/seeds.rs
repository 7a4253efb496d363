//! The seeds' buildspecs load as they are published; the one a web page mangled fails with
//! diagnostics that say how to repair it.

use builder::{OnFailure, PhaseType, Shell};
use expect_test::expect;

use crate::{check_errors, check_notes};

const SEED_000: &str = include_str!("../data/seeds/000-buildspec.yml");
const SEED_002: &str = include_str!("../data/seeds/002-buildspec.yml");
const SEED_002_AS_PUBLISHED: &str = include_str!("../data/seeds/002-buildspec-as-published.yml");

#[test]
fn seed_000_buildspec_loads_unchanged() {
    let spec = check_notes("buildspec.yml", SEED_000, expect![[""]]);
    assert_eq!(spec.env.shell, Shell::Bash);
    assert!(spec.phases.install.is_none());
    let pre = spec.phases.get(PhaseType::PreBuild).expect("pre_build");
    assert_eq!(pre.commands.len(), 8);
    assert_eq!(pre.commands[0].text, "export AWS_DEFAULT_REGION=us-east-1");
    assert_eq!(pre.commands[0].line, 5);
    assert_eq!(
        pre.commands[4].text,
        "IMAGE_TAG=$(echo $CODEBUILD_RESOLVED_SOURCE_VERSION | cut -c 1-7)"
    );
    assert_eq!(pre.on_failure, None::<OnFailure>);
    let build = spec.phases.get(PhaseType::Build).expect("build");
    assert_eq!(build.commands[1].text, "docker build -t $ECR_REPOSITORY_URI:latest .");
    let post = spec.phases.get(PhaseType::PostBuild).expect("post_build");
    assert_eq!(
        post.commands[3].text,
        r#"printf '{"Version":"1.0","ImageURI":"%s"}' "${ECR_REPOSITORY_URI}:${IMAGE_TAG}" > imageDetail.json"#
    );
    let artifacts = spec.artifacts.expect("artifacts");
    let files: Vec<&str> = artifacts.files.iter().map(|g| g.as_str()).collect();
    assert_eq!(files, ["imageDetail.json", "appspec.yml"]);
    assert!(!artifacts.discard_paths);
    assert!(artifacts.base_directory.is_none());
}

#[test]
fn seed_002_buildspec_loads_with_a_note_for_runtime_versions() {
    let spec = check_notes(
        "buildspec.yml",
        SEED_002,
        expect![[r#"
            note: buildspec.yml:11:4: phases.install.runtime-versions: accepted, ignored: cutover builds with the tools installed on the host (java corretto11); install what the build needs in install.commands
        "#]],
    );
    let install = spec.phases.get(PhaseType::Install).expect("install");
    assert!(install.commands.is_empty());
    assert_eq!(install.runtime_versions, [("java".to_string(), "corretto11".to_string())]);
    assert_eq!(spec.phases.get(PhaseType::PreBuild).map(|p| p.commands.len()), Some(5));
    let files: Vec<String> =
        spec.artifacts.expect("artifacts").files.iter().map(|g| g.to_string()).collect();
    assert_eq!(files, ["imageDetail.json"]);
}

#[test]
fn seed_002_as_published_says_to_indent_files_under_artifacts() {
    check_errors(
        "buildspec.yml",
        SEED_002_AS_PUBLISHED,
        expect![[r#"
            buildspec.yml:17:1: artifacts: `artifacts` is empty; add `files:` below it (indented), or remove it
            buildspec.yml:18:1: files: unknown field `files` here; it belongs under `artifacts:`; indent it below `artifacts:` (two spaces)
        "#]],
    );
}

/// Seed 000's buildspec, run for real with stand-ins for the `aws` and `docker` commands on PATH:
/// the variables, the pipe into `docker login`, and the `imageDetail.json` it writes for the
/// deploy stage.
#[tokio::test]
async fn seed_000_buildspec_runs_and_writes_image_detail() {
    use std::os::unix::fs::PermissionsExt;

    let ran = crate::run_build(SEED_000, |fx, ctx| {
        let bin = fx.src.parent().expect("fixture root").join("bin");
        std::fs::create_dir_all(&bin).expect("bin directory");
        let calls = bin.join("calls");
        let stubs = [
            (
                "aws",
                "#!/bin/sh\ncase \"$1 $2\" in\n  'sts get-caller-identity') echo 123456789012 ;;\n  'ecr get-login-password') echo ecr-password ;;\n  *) echo \"aws: unexpected $*\" >&2; exit 1 ;;\nesac\n".to_string(),
            ),
            (
                "docker",
                format!(
                    "#!/bin/sh\nif [ \"$1\" = login ]; then read -r pw; echo \"docker $* (password $pw)\" >> '{0}'; else echo \"docker $*\" >> '{0}'; fi\n",
                    calls.display()
                ),
            ),
        ];
        for (name, script) in stubs {
            let path = bin.join(name);
            std::fs::write(&path, script).expect("stub");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        let path = ctx.base_env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.clone());
        ctx.base_env.retain(|(k, _)| k != "PATH");
        ctx.base_env.push(("PATH".into(), format!("{}:{}", bin.display(), path.unwrap_or_default())));
        ctx.resolved_source_version = Some("4e1f0c9a7b2d5e8f".into());
        fx.write("appspec.yml", "version: 0.0\nResources: []\n");
    })
    .await;
    assert_eq!(ran.result.status, builder::BuildStatus::Succeeded, "{}", ran.log.text());
    let out = ran.log.output();
    assert!(out.contains("IMAGE_TAG is 4e1f0c9\n"), "{out}");
    assert!(out.contains("AWS_ACCOUNT_ID is 123456789012\n"), "{out}");
    let repo = "123456789012.dkr.ecr.us-east-1.amazonaws.com/d-ecr-blue-green-app";
    let calls = std::fs::read_to_string(ran.fx.src.parent().expect("root").join("bin/calls"))
        .expect("docker was called");
    assert_eq!(
        calls,
        format!(
            "docker login --username AWS --password-stdin 123456789012.dkr.ecr.us-east-1.amazonaws.com (password ecr-password)\n\
             docker build -t {repo}:latest .\n\
             docker tag {repo}:latest {repo}:4e1f0c9\n\
             docker push {repo}:latest\n\
             docker push {repo}:4e1f0c9\n"
        )
    );
    let artifact = ran.result.primary_artifact().expect("primary artifact");
    let files: Vec<String> = artifact.files.iter().map(|f| f.display().to_string()).collect();
    assert_eq!(files, ["appspec.yml", "imageDetail.json"]);
    let text =
        std::fs::read_to_string(artifact.dir.join("imageDetail.json")).expect("imageDetail.json");
    let detail =
        builder::parse_image_detail("imageDetail.json", &text).expect("valid imageDetail.json");
    assert_eq!(detail.value.image_uri, format!("{repo}:4e1f0c9"));
    assert_eq!(detail.value.version.as_deref(), Some("1.0"));
}
