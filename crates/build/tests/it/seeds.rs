//! The seeds' buildspecs load as they are published; the one a web page mangled fails with
//! diagnostics that say how to repair it.

use build::{OnFailure, PhaseType, Shell};
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
            buildspec.yml:17:11: artifacts: `artifacts` is empty; add `files:` below it (indented), or remove it
            buildspec.yml:18:1: files: unknown field `files` here; it belongs under `artifacts:`; indent it below `artifacts:` (two spaces)
        "#]],
    );
}
