//! Artifact collection through real builds: globs, base-directory, discard-paths, exclude-paths,
//! secondary artifacts, names expanded in the shell, and the errors CodeBuild calls CLIENT_ERROR.

use std::path::PathBuf;

use builder::{BuildStatus, PhaseStatus, PhaseType};

use crate::run_build;

const MAKE_TREE: &str = r#"version: 0.2
phases:
  build:
    commands:
      - mkdir -p dist/sub dist/.cache other
      - echo a > dist/a.js
      - echo b > dist/sub/b.js
      - echo map > dist/sub/b.js.map
      - echo hidden > dist/.env
      - echo cache > dist/.cache/x
      - echo c > other/c.js
      - printf '{"ImageURI":"%s"}' "registry.local/app:$CODEBUILD_BUILD_NUMBER" > imageDetail.json
      - SUFFIX=nightly
"#;

fn names(files: &[PathBuf]) -> Vec<String> {
    files.iter().map(|f| f.display().to_string()).collect()
}

#[tokio::test]
async fn globs_base_directory_exclude_paths_and_secondary_artifacts() {
    let yaml = format!(
        "{MAKE_TREE}artifacts:
  files: ['**/*']
  base-directory: dist
  exclude-paths: ['**/*.map', .cache]
  name: app-$CODEBUILD_BUILD_NUMBER-$SUFFIX
  secondary-artifacts:
    image:
      files: imageDetail.json
    scripts:
      files: ['**/*.js']
      discard-paths: yes
"
    );
    let ran = run_build(&yaml, |_, ctx| ctx.build_number = 42).await;
    assert_eq!(ran.result.status, BuildStatus::Succeeded, "{}", ran.log.text());
    let primary = ran.result.primary_artifact().expect("primary");
    assert_eq!(names(&primary.files), [".env", "a.js", "sub/b.js"]);
    assert_eq!(primary.dir, ran.fx.out.join("primary"));
    assert_eq!(primary.name.as_deref(), Some("app-42-nightly"));
    assert_eq!(std::fs::read_to_string(primary.dir.join("sub/b.js")).expect("copied"), "b\n");
    assert_eq!(primary.bytes, 2 + 2 + 7);

    let image = &ran.result.artifacts[1];
    assert_eq!(image.identifier.as_deref(), Some("image"));
    assert_eq!(image.dir, ran.fx.out.join("secondary/image"));
    assert_eq!(names(&image.files), ["imageDetail.json"]);
    let detail = std::fs::read_to_string(image.dir.join("imageDetail.json")).expect("copied");
    assert_eq!(
        builder::parse_image_detail("imageDetail.json", &detail).expect("valid").value.image_uri,
        "registry.local/app:42"
    );

    // Flattened, from the whole source directory.
    let scripts = &ran.result.artifacts[2];
    assert_eq!(names(&scripts.files), ["a.js", "b.js", "c.js"]);
}

#[tokio::test]
async fn a_directory_named_outright_and_a_glob_base_directory() {
    let yaml = format!(
        "{MAKE_TREE}artifacts:
  files: [sub, a.js]
  base-directory: 'd*'
"
    );
    let ran = run_build(&yaml, |_, _| {}).await;
    assert_eq!(ran.result.status, BuildStatus::Succeeded, "{}", ran.log.text());
    let primary = ran.result.primary_artifact().expect("primary");
    assert_eq!(names(&primary.files), ["a.js", "sub/b.js", "sub/b.js.map"]);
}

#[tokio::test]
async fn nothing_matching_is_a_client_error_that_fails_the_build() {
    let ran = run_build(
        "version: 0.2\nphases:\n  build:\n    commands: [touch present]\nartifacts:\n  files: [missing.txt, 'nope/**/*']\n",
        |_, _| {},
    )
    .await;
    assert_eq!(ran.result.status, BuildStatus::Failed);
    let upload = ran.result.phase(PhaseType::UploadArtifacts).expect("upload phase");
    assert_eq!(upload.status, PhaseStatus::ClientError);
    assert_eq!(upload.contexts[0].status_code, "CLIENT_ERROR");
    assert_eq!(upload.contexts[0].message, "artifact: no matching artifact paths found");
    let text = ran.log.text();
    assert!(text.contains("Skipping invalid file path missing.txt"), "{text}");
    assert!(text.contains("Phase complete: UPLOAD_ARTIFACTS State: CLIENT_ERROR"), "{text}");
}

#[tokio::test]
async fn some_patterns_matching_is_enough() {
    let ran = run_build(
        "version: 0.2\nphases:\n  build:\n    commands: [touch present]\nartifacts:\n  files: [present, missing.txt]\n",
        |_, _| {},
    )
    .await;
    assert_eq!(ran.result.status, BuildStatus::Succeeded, "{}", ran.log.text());
    assert!(ran.log.text().contains("Skipping invalid file path missing.txt"));
}

#[tokio::test]
async fn a_missing_base_directory_and_flattening_collisions_are_client_errors() {
    let ran = run_build(
        "version: 0.2\nphases:\n  build:\n    commands: [true]\nartifacts:\n  files: ['**/*']\n  base-directory: build/out\n",
        |_, _| {},
    )
    .await;
    let upload = ran.result.phase(PhaseType::UploadArtifacts).expect("upload phase");
    assert_eq!(upload.status, PhaseStatus::ClientError);
    assert_eq!(
        upload.contexts[0].message,
        "artifact: base-directory `build/out` does not exist in the source directory after the \
         build; check the path (it is relative to CODEBUILD_SRC_DIR)"
    );

    let yaml = format!(
        "{MAKE_TREE}artifacts:\n  files: ['**/*.js', '**/c.js']\n  discard-paths: yes\n  exclude-paths: [other]\n  secondary-artifacts:\n    clash:\n      files: ['dist/a.js', 'other/c.js', 'dist/sub/b.js']\n      discard-paths: yes\n"
    );
    let ran = run_build(&yaml, |fx, _| fx.write("other/a.js", "another a")).await;
    let upload = ran.result.phase(PhaseType::UploadArtifacts).expect("upload phase");
    assert_eq!(upload.status, PhaseStatus::Succeeded, "{}", ran.log.text());

    let yaml = format!("{MAKE_TREE}artifacts:\n  files: ['**/*.js']\n  discard-paths: yes\n");
    let ran = run_build(&yaml, |fx, _| fx.write("other/a.js", "another a")).await;
    let upload = ran.result.phase(PhaseType::UploadArtifacts).expect("upload phase");
    assert_eq!(upload.status, PhaseStatus::ClientError);
    assert_eq!(
        upload.contexts[0].message,
        "artifact: `dist/a.js` and `other/a.js` would both be written as `a.js` \
         (discard-paths: yes); rename one or exclude it with exclude-paths"
    );
}

#[tokio::test]
async fn symlinks_out_of_the_source_directory_are_not_followed() {
    let ran = run_build(
        "version: 0.2\nphases:\n  build:\n    commands:\n      - echo inside > real.txt\n      - ln -s real.txt link.txt\n      - ln -s /etc/hostname escape.txt\nartifacts:\n  files: ['*.txt']\n",
        |_, _| {},
    )
    .await;
    assert_eq!(ran.result.status, BuildStatus::Succeeded, "{}", ran.log.text());
    let primary = ran.result.primary_artifact().expect("primary");
    assert_eq!(names(&primary.files), ["link.txt", "real.txt"]);
    assert_eq!(std::fs::read_to_string(primary.dir.join("link.txt")).expect("copied"), "inside\n");
    assert!(
        ran.log
            .text()
            .contains("skipped escape.txt: it is a symlink to a file outside the source directory")
    );
}

#[tokio::test]
async fn an_artifacts_directory_inside_the_source_is_not_collected_into_itself() {
    let ran = run_build(
        "version: 0.2\nphases:\n  build:\n    commands: [echo x > file.txt]\nartifacts:\n  files: ['**/*']\n",
        |fx, ctx| ctx.artifacts_dir = fx.src.join(".artifacts"),
    )
    .await;
    assert_eq!(ran.result.status, BuildStatus::Succeeded, "{}", ran.log.text());
    let primary = ran.result.primary_artifact().expect("primary");
    assert_eq!(names(&primary.files), ["file.txt"]);
}
