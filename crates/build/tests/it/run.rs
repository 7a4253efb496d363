//! Real builds: bash runs the phases in a temporary source directory, with CodeBuild's rules for
//! what runs after a failure.

use std::time::{Duration, Instant};

use build::{BuildStatus, BuildVariable, Limits, LogStream, PhaseStatus, PhaseType};
use tokio::sync::watch;

use crate::{parse, run_build};

#[tokio::test]
async fn exports_variables_and_cd_carry_over_between_commands_and_phases() {
    let ran = run_build(
        r#"version: 0.2
phases:
  pre_build:
    commands:
      - export FOO=1
      - BAR=two
      - mkdir -p sub
      - cd sub
  build:
    commands:
      - echo "FOO=$FOO BAR=$BAR in $(basename "$PWD")"
      - sh -c 'echo "child sees FOO=$FOO BAR=$BAR"'
      - touch made-here
"#,
        |_, _| {},
    )
    .await;
    assert_eq!(ran.result.status, BuildStatus::Succeeded, "{}", ran.log.text());
    let out = ran.log.output();
    assert!(out.contains("FOO=1 BAR=two in sub\n"), "{out}");
    // Exported variables reach child processes; plain ones stay in the shell, as in bash.
    assert!(out.contains("child sees FOO=1 BAR=\n"), "{out}");
    assert!(ran.fx.src.join("sub/made-here").is_file());
}

#[tokio::test]
async fn the_callers_own_cutover_variables_are_set_without_a_warning() {
    let ran = run_build(
        r#"version: 0.2
phases:
  build:
    commands:
      - echo "pipeline=$CUTOVER_PIPELINE commit=$CUTOVER_COMMIT other=$CODEBUILD_SRC_DIR_other"
      - echo "build_id=$CODEBUILD_BUILD_ID"
"#,
        |_, ctx| {
            // What a pipeline's build action gives every build, and one built-in name that only
            // the runner may set.
            for (name, value) in [
                ("CUTOVER_PIPELINE", "web"),
                ("CUTOVER_COMMIT", "4e1f0c9a7b2d"),
                ("CODEBUILD_SRC_DIR_other", "/src/other"),
                ("CODEBUILD_BUILD_ID", "forged"),
            ] {
                ctx.variables.push(BuildVariable {
                    name: name.into(),
                    value: value.into(),
                    secret: false,
                });
            }
        },
    )
    .await;
    assert_eq!(ran.result.status, BuildStatus::Succeeded, "{}", ran.log.text());
    let out = ran.log.output();
    assert!(out.contains("pipeline=web commit=4e1f0c9a7b2d other=/src/other\n"), "{out}");
    assert!(out.contains("build_id=demo:0f4c6b2e\n"), "a caller cannot forge a built-in: {out}");
    let log = ran.log.text();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("reserved")).collect();
    assert_eq!(warnings.len(), 1, "only the forged built-in is refused: {warnings:?}");
    assert!(
        warnings[0].ends_with("warning: variable CODEBUILD_BUILD_ID is reserved and was not set")
    );
}

#[tokio::test]
async fn codebuild_and_cutover_variables_are_set() {
    // The build reads the time where the whole process does.
    let before = store::clock::now_ms();
    let ran = run_build(
        r#"version: 0.2
env:
  variables:
    GREETING: from-buildspec
    OVERRIDDEN: from-buildspec
    LITERAL: $PATH:/x
phases:
  build:
    commands:
      - for v in CODEBUILD_BUILD_ID CODEBUILD_BUILD_NUMBER CODEBUILD_SRC_DIR CODEBUILD_SOURCE_VERSION CODEBUILD_RESOLVED_SOURCE_VERSION CODEBUILD_SOURCE_REPO_URL CODEBUILD_BUILD_SUCCEEDING CODEBUILD_INITIATOR CUTOVER_BUILD_ID CUTOVER_RESOLVED_SOURCE_VERSION CUTOVER_BUILD_SUCCEEDING GREETING OVERRIDDEN LITERAL; do eval "echo $v=\${$v}"; done
      - echo "START=$CODEBUILD_START_TIME CUTOVER_START=$CUTOVER_START_TIME"
      - echo "IMAGE_TAG=$(echo $CODEBUILD_RESOLVED_SOURCE_VERSION | cut -c 1-7)"
      - echo "LEAKED=${CUTOVER_TEST_LEAK-unset}"
"#,
        |_, ctx| {
            ctx.build_number = 7;
            ctx.source_version = Some("refs/heads/main".into());
            ctx.resolved_source_version = Some("4e1f0c9a7b2d".into());
            ctx.source_repo_url = Some("http://127.0.0.1:1/git/demo.git".into());
            ctx.initiator = "codepipeline/demo".into();
            ctx.variables.push(BuildVariable {
                name: "OVERRIDDEN".into(),
                value: "from-project".into(),
                secret: false,
            });
            ctx.base_env.push(("CUTOVER_TEST_LEAK_NOT".into(), "x".into()));
        },
    )
    .await;
    assert_eq!(ran.result.status, BuildStatus::Succeeded, "{}", ran.log.text());
    let out = ran.log.output();
    let src = ran.fx.src.display().to_string();
    for expected in [
        "CODEBUILD_BUILD_ID=demo:0f4c6b2e".to_string(),
        "CODEBUILD_BUILD_NUMBER=7".into(),
        format!("CODEBUILD_SRC_DIR={src}"),
        "CODEBUILD_SOURCE_VERSION=refs/heads/main".into(),
        "CODEBUILD_RESOLVED_SOURCE_VERSION=4e1f0c9a7b2d".into(),
        "CODEBUILD_SOURCE_REPO_URL=http://127.0.0.1:1/git/demo.git".into(),
        "CODEBUILD_BUILD_SUCCEEDING=1".into(),
        "CODEBUILD_INITIATOR=codepipeline/demo".into(),
        "CUTOVER_BUILD_ID=demo:0f4c6b2e".into(),
        "CUTOVER_RESOLVED_SOURCE_VERSION=4e1f0c9a7b2d".into(),
        "CUTOVER_BUILD_SUCCEEDING=1".into(),
        "GREETING=from-buildspec".into(),
        // Project variables win over the buildspec's (§6.1 precedence).
        "OVERRIDDEN=from-project".into(),
        // Values are set literally, not expanded.
        "LITERAL=$PATH:/x".into(),
        "IMAGE_TAG=4e1f0c9".into(),
        "LEAKED=unset".into(),
    ] {
        assert!(out.lines().any(|l| l == expected), "missing `{expected}` in:\n{out}");
    }
    let start_line = out.lines().find(|l| l.starts_with("START=")).expect("start line");
    let (start, cutover_start) = start_line
        .trim_start_matches("START=")
        .split_once(" CUTOVER_START=")
        .expect("both start times");
    assert_eq!(start, cutover_start);
    let start: u64 = start.parse().expect("milliseconds since the epoch");
    assert!(start >= before && start <= ran.result.ended_at.as_millis(), "{start} vs {before}");
}

#[tokio::test]
async fn a_failed_build_phase_still_runs_post_build_with_succeeding_0_and_uploads() {
    let ran = run_build(
        r#"version: 0.2
phases:
  build:
    commands:
      - echo partial > out.txt
      - false
      - echo never
  post_build:
    commands:
      - echo "post_build sees CODEBUILD_BUILD_SUCCEEDING=$CODEBUILD_BUILD_SUCCEEDING CUTOVER_BUILD_SUCCEEDING=$CUTOVER_BUILD_SUCCEEDING"
artifacts:
  files: [out.txt]
"#,
        |_, _| {},
    )
    .await;
    assert_eq!(ran.result.status, BuildStatus::Failed);
    assert_eq!(
        ran.statuses(),
        [
            ("INSTALL", "SUCCEEDED"),
            ("PRE_BUILD", "SUCCEEDED"),
            ("BUILD", "FAILED"),
            ("POST_BUILD", "SUCCEEDED"),
            ("UPLOAD_ARTIFACTS", "SUCCEEDED"),
        ]
    );
    let build = ran.result.phase(PhaseType::Build).expect("build phase");
    assert_eq!(build.contexts.len(), 1);
    assert_eq!(build.contexts[0].status_code, "COMMAND_EXECUTION_ERROR");
    assert_eq!(
        build.contexts[0].message,
        "Error while executing command: false. Reason: exit status 1"
    );
    let out = ran.log.output();
    assert!(!out.contains("never"), "{out}");
    assert!(
        out.contains("post_build sees CODEBUILD_BUILD_SUCCEEDING=0 CUTOVER_BUILD_SUCCEEDING=0"),
        "{out}"
    );
    let text = ran.log.text();
    assert!(
        text.contains("[Container] Command did not exit successfully false exit status 1"),
        "{text}"
    );
    assert!(text.contains("[Container] Phase complete: BUILD State: FAILED"), "{text}");
    let artifact = ran.result.primary_artifact().expect("upload attempted after a failed build");
    assert_eq!(artifact.files, [std::path::PathBuf::from("out.txt")]);
}

#[tokio::test]
async fn a_failed_pre_build_skips_the_rest_and_the_upload() {
    let ran = run_build(
        r#"version: 0.2
phases:
  install:
    commands: [echo installing]
  pre_build:
    commands:
      - 'exit_code_7() { return 7; }'
      - exit_code_7
  build:
    commands: [touch built]
  post_build:
    commands: [touch posted]
artifacts:
  files: ['**/*']
"#,
        |_, _| {},
    )
    .await;
    assert_eq!(ran.result.status, BuildStatus::Failed);
    assert_eq!(
        ran.statuses(),
        [
            ("INSTALL", "SUCCEEDED"),
            ("PRE_BUILD", "FAILED"),
            ("BUILD", "SKIPPED"),
            ("POST_BUILD", "SKIPPED"),
            ("UPLOAD_ARTIFACTS", "SKIPPED"),
        ]
    );
    assert_eq!(
        ran.result.phase(PhaseType::PreBuild).map(|p| p.contexts[0].message.clone()),
        Some("Error while executing command: exit_code_7. Reason: exit status 7".to_string())
    );
    assert!(!ran.fx.src.join("built").exists());
    assert!(!ran.fx.src.join("posted").exists());
    assert!(ran.result.artifacts.is_empty());
}

#[tokio::test]
async fn on_failure_abort_on_build_skips_post_build_and_upload() {
    let ran = run_build(
        r#"version: 0.2
phases:
  build:
    on-failure: ABORT
    commands: [false]
  post_build:
    commands: [touch posted]
artifacts:
  files: ['**/*']
"#,
        |_, _| {},
    )
    .await;
    assert_eq!(ran.result.status, BuildStatus::Failed);
    assert_eq!(ran.status(PhaseType::PostBuild), PhaseStatus::Skipped);
    assert_eq!(ran.status(PhaseType::UploadArtifacts), PhaseStatus::Skipped);
    assert!(!ran.fx.src.join("posted").exists());
}

#[tokio::test]
async fn on_failure_continue_goes_on_but_the_build_fails() {
    let ran = run_build(
        r#"version: 0.2
phases:
  pre_build:
    on-failure: CONTINUE
    commands: [false]
  build:
    commands:
      - echo "build sees $CODEBUILD_BUILD_SUCCEEDING" > seen.txt
artifacts:
  files: [seen.txt]
"#,
        |_, _| {},
    )
    .await;
    assert_eq!(ran.result.status, BuildStatus::Failed);
    assert_eq!(ran.status(PhaseType::PreBuild), PhaseStatus::Failed);
    assert_eq!(ran.status(PhaseType::Build), PhaseStatus::Succeeded);
    assert_eq!(ran.status(PhaseType::UploadArtifacts), PhaseStatus::Succeeded);
    let seen = std::fs::read_to_string(ran.fx.out.join("primary/seen.txt")).expect("artifact");
    assert_eq!(seen, "build sees 0\n");
}

#[tokio::test]
async fn finally_runs_after_a_failed_command_and_a_failed_finally_fails_the_phase() {
    let ran = run_build(
        r#"version: 0.2
phases:
  install:
    commands: [echo ok]
    finally:
      - echo "install finally" >> trail
  pre_build:
    commands: [false, echo skipped >> trail]
    finally:
      - echo "pre_build finally sees $CODEBUILD_BUILD_SUCCEEDING" >> trail
"#,
        |_, _| {},
    )
    .await;
    let trail = std::fs::read_to_string(ran.fx.src.join("trail")).expect("trail");
    assert_eq!(trail, "install finally\npre_build finally sees 0\n");
    assert_eq!(ran.status(PhaseType::PreBuild), PhaseStatus::Failed);
    assert_eq!(ran.result.status, BuildStatus::Failed);

    let ran = run_build(
        "version: 0.2\nphases:\n  install:\n    commands: [true]\n    finally: [false]\n  build:\n    commands: [touch built]\n",
        |_, _| {},
    )
    .await;
    assert_eq!(ran.status(PhaseType::Install), PhaseStatus::Failed);
    assert_eq!(ran.status(PhaseType::Build), PhaseStatus::Skipped);
    assert!(!ran.fx.src.join("built").exists());
}

/// Whether a process is gone (a zombie waiting for a reaper counts as gone).
fn gone(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        }
    }
}

#[tokio::test]
async fn the_timeout_kills_the_whole_process_group() {
    let started = Instant::now();
    let ran = run_build(
        r#"version: 0.2
phases:
  build:
    commands:
      - sleep 100 & echo $! > background.pid
      - sleep 100
  post_build:
    commands: [touch posted]
artifacts:
  files: ['**/*']
"#,
        |_, ctx| ctx.timeout = Duration::from_secs(1),
    )
    .await;
    assert_eq!(ran.result.status, BuildStatus::TimedOut);
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
    assert_eq!(
        ran.statuses(),
        [
            ("INSTALL", "SUCCEEDED"),
            ("PRE_BUILD", "SUCCEEDED"),
            ("BUILD", "TIMED_OUT"),
            ("POST_BUILD", "SKIPPED"),
            ("UPLOAD_ARTIFACTS", "SKIPPED"),
        ]
    );
    let build = ran.result.phase(PhaseType::Build).expect("build");
    assert_eq!(build.contexts[0].status_code, "BUILD_TIMED_OUT");
    let pid = std::fs::read_to_string(ran.fx.src.join("background.pid")).expect("pid file");
    let pid = pid.trim();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gone(pid) {
        assert!(Instant::now() < deadline, "background process {pid} survived the timeout");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_stop_request_stops_the_build() {
    let spec = parse("version: 0.2\nphases:\n  build:\n    commands: [sleep 100]\n");
    let fx = crate::fixture();
    let mut ctx = fx.context();
    let (stop, rx) = watch::channel(false);
    ctx.stop = Some(rx);
    let log = build::MemorySink::new();
    let task = tokio::spawn({
        let log = log.clone();
        async move { build::run(&spec, ctx, log).await }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while !log.text().contains("Running command sleep 100") {
        assert!(Instant::now() < deadline, "the build never started its command:\n{}", log.text());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.send_replace(true);
    let result = tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("the build ends soon after a stop")
        .expect("the build task does not panic");
    assert_eq!(result.status, BuildStatus::Stopped);
    assert_eq!(result.phase(PhaseType::Build).map(|p| p.status), Some(PhaseStatus::Stopped));
}

#[tokio::test]
async fn exported_variables_are_captured_at_the_end_of_the_build() {
    let ran = run_build(
        r#"version: 0.2
env:
  exported-variables: [IMAGE_TAG, IMAGE_URI, NEVER_SET, DEPLOY_COPY]
phases:
  pre_build:
    commands:
      - IMAGE_TAG=abc1234
  post_build:
    commands:
      - export IMAGE_URI="registry.local/app:$IMAGE_TAG"
      - DEPLOY_COPY="$DEPLOY_KEY"
"#,
        |_, ctx| {
            ctx.variables.push(BuildVariable {
                name: "DEPLOY_KEY".into(),
                value: "very-secret-key".into(),
                secret: true,
            })
        },
    )
    .await;
    assert_eq!(ran.result.status, BuildStatus::Succeeded, "{}", ran.log.text());
    let exported: Vec<(&str, &str)> =
        ran.result.exported_variables.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(exported, [("IMAGE_TAG", "abc1234"), ("IMAGE_URI", "registry.local/app:abc1234")]);
    let text = ran.log.text();
    assert!(text.contains("exported variable NEVER_SET is not set"), "{text}");
    assert!(text.contains("exported variable DEPLOY_COPY holds a secret value"), "{text}");
}

#[tokio::test]
async fn secrets_are_masked_in_the_log() {
    let ran = run_build(
        r#"version: 0.2
env:
  variables:
    DB_PASSWORD: pa55word-in-buildspec
    PLAIN: visible-value
phases:
  build:
    commands:
      - echo "db=$DB_PASSWORD token=$API_TOKEN marked=$MARKED plain=$PLAIN"
      - echo the literal marked-secret-value in a command
      - echo "$MARKED" | rev | rev
  post_build:
    commands:
      - test "$MARKED" = marked-secret-value-and-more
"#,
        |_, ctx| {
            ctx.variables.push(BuildVariable {
                name: "API_TOKEN".into(),
                value: "tok-1234567".into(),
                secret: false,
            });
            ctx.variables.push(BuildVariable {
                name: "MARKED".into(),
                value: "marked-secret-value".into(),
                secret: true,
            });
        },
    )
    .await;
    assert_eq!(ran.result.status, BuildStatus::Failed, "{}", ran.log.text());
    // The failure context is kept with the build record: the command in it is masked too.
    let post = ran.result.phase(PhaseType::PostBuild).expect("post_build");
    assert_eq!(
        post.contexts[0].message,
        "Error while executing command: test \"$MARKED\" = ***-and-more. Reason: exit status 1"
    );
    let text = ran.log.text();
    for secret in ["pa55word-in-buildspec", "tok-1234567", "marked-secret-value"] {
        assert!(!text.contains(secret), "`{secret}` leaked into the log:\n{text}");
    }
    assert!(text.contains("db=*** token=*** marked=*** plain=visible-value"), "{text}");
    assert!(
        text.contains("[Container] Running command echo the literal *** in a command"),
        "{text}"
    );
    assert!(text.contains("the literal *** in a command\n"), "{text}");
}

#[tokio::test]
async fn the_log_is_capped_with_one_marker_and_the_build_goes_on() {
    let ran = run_build(
        "version: 0.2\nphases:\n  build:\n    commands:\n      - seq 1 200000\n      - touch after-the-flood\n",
        |_, ctx| {
            ctx.limits = Limits { log_bytes_max: 4096, ..Limits::default() };
        },
    )
    .await;
    assert_eq!(ran.result.status, BuildStatus::Succeeded);
    assert!(ran.fx.src.join("after-the-flood").exists());
    let lines = ran.log.lines();
    let markers = lines.iter().filter(|l| l.text.starts_with("log truncated")).count();
    assert_eq!(markers, 1);
    let output_bytes: usize =
        lines.iter().filter(|l| l.stream == LogStream::Output).map(|l| l.text.len() + 1).sum();
    assert!(output_bytes <= 4096, "{output_bytes} bytes of output kept");
    assert!(ran.result.log.truncated);
    assert!(ran.result.log.dropped_bytes > 1_000_000, "{:?}", ran.result.log);
    // How the build ended is still in the log.
    assert!(ran.log.text().contains("Phase complete: BUILD State: SUCCEEDED"));
    assert!(lines.last().is_some_and(|l| l.text.starts_with("Build SUCCEEDED in ")));
}

#[tokio::test]
async fn overlong_lines_are_cut_and_counted() {
    let ran = run_build(
        "version: 0.2\nphases:\n  build:\n    commands:\n      - head -c 5000 /dev/zero | tr '\\0' x; echo\n      - printf 'no newline at the end'\n      - echo next\n",
        |_, ctx| ctx.limits = Limits { log_line_bytes_max: 100, ..Limits::default() },
    )
    .await;
    assert_eq!(ran.result.status, BuildStatus::Succeeded, "{}", ran.log.text());
    let out = ran.log.output();
    let expected = format!("{} … [line truncated: 4900 more bytes not shown]\n", "x".repeat(100));
    assert!(out.starts_with(&expected), "{out}");
    assert!(out.ends_with("no newline at the end\nnext\n"), "{out}");
}

#[tokio::test]
async fn shell_quirks_stay_contained() {
    let ran = run_build(
        r#"version: 0.2
phases:
  build:
    commands:
      - cat
      - echo "unclosed
      - |
        false
        echo "a multi-line command reports its last status"
      - echo "quotes ' and \" survive"
"#,
        |_, _| {},
    )
    .await;
    // `cat` reads /dev/null instead of the script; the syntax error fails its own command only.
    assert_eq!(ran.result.status, BuildStatus::Failed);
    let build = ran.result.phase(PhaseType::Build).expect("build");
    assert!(build.contexts[0].message.contains("Reason: exit status 2"), "{:?}", build.contexts);

    let ran = run_build(
        r#"version: 0.2
phases:
  build:
    commands:
      - cat
      - |
        false
        echo "a multi-line command reports its last status"
      - echo "quotes ' and \" survive"
"#,
        |_, _| {},
    )
    .await;
    assert_eq!(ran.result.status, BuildStatus::Succeeded, "{}", ran.log.text());
    let out = ran.log.output();
    assert!(out.contains("a multi-line command reports its last status\n"), "{out}");
    assert!(out.contains("quotes ' and \" survive\n"), "{out}");
}

#[tokio::test]
async fn a_command_that_exits_the_shell_fails_and_later_phases_get_a_new_shell() {
    let ran = run_build(
        r#"version: 0.2
phases:
  build:
    commands:
      - export LOST=yes
      - exit 3
  post_build:
    commands:
      - echo "post_build LOST=${LOST-unset} SUCCEEDING=$CODEBUILD_BUILD_SUCCEEDING"
"#,
        |_, _| {},
    )
    .await;
    assert_eq!(ran.result.status, BuildStatus::Failed);
    assert_eq!(ran.status(PhaseType::Build), PhaseStatus::Failed);
    assert_eq!(ran.status(PhaseType::PostBuild), PhaseStatus::Succeeded);
    let out = ran.log.output();
    assert!(out.contains("post_build LOST=unset SUCCEEDING=0\n"), "{out}");
    assert!(ran.log.text().contains("The build's shell exited (status 3)"));
}

#[tokio::test]
async fn retry_reruns_a_phase_while_its_output_matches() {
    let flaky = r#"version: 0.2
phases:
  build:
    on-failure: RETRY-3-flaky
    commands:
      - n=$(cat attempts 2>/dev/null || echo 0); n=$((n+1)); echo $n > attempts; echo "flaky attempt $n"; [ "$n" -ge 3 ]
"#;
    let ran = run_build(flaky, |_, _| {}).await;
    assert_eq!(ran.result.status, BuildStatus::Succeeded, "{}", ran.log.text());
    assert_eq!(ran.result.phase(PhaseType::Build).map(|p| p.attempts), Some(3));

    let ran = run_build(&flaky.replace("RETRY-3-flaky", "RETRY-3-unrelated"), |_, _| {}).await;
    assert_eq!(ran.result.status, BuildStatus::Failed);
    assert_eq!(ran.result.phase(PhaseType::Build).map(|p| p.attempts), Some(1));
}

#[tokio::test]
async fn env_shell_sh_keeps_state_too() {
    let ran = run_build(
        "version: 0.2\nenv:\n  shell: /bin/sh\nphases:\n  build:\n    commands:\n      - export A=1\n      - cd /\n      - echo \"A=$A in $PWD\"\n",
        |_, _| {},
    )
    .await;
    assert_eq!(ran.result.status, BuildStatus::Succeeded, "{}", ran.log.text());
    assert!(ran.log.output().contains("A=1 in /\n"));
}

#[tokio::test]
async fn a_missing_source_directory_is_a_fault() {
    let ran = run_build("version: 0.2\nphases:\n  build:\n    commands: [true]\n", |fx, ctx| {
        ctx.source_dir = fx.src.join("does-not-exist");
    })
    .await;
    assert_eq!(ran.result.status, BuildStatus::Fault);
    assert_eq!(ran.status(PhaseType::Install), PhaseStatus::Fault);
    assert!(ran.log.text().contains("Could not start the build's shell"), "{}", ran.log.text());
}

#[tokio::test]
async fn dropping_a_running_build_kills_its_processes() {
    let spec = parse(
        "version: 0.2\nphases:\n  build:\n    commands:\n      - sleep 100 & echo $! > sleeper.pid; wait\n",
    );
    let fx = crate::fixture();
    let ctx = fx.context();
    let log = build::MemorySink::new();
    let task = tokio::spawn({
        let log = log.clone();
        async move { build::run(&spec, ctx, log).await }
    });
    let pid_file = fx.src.join("sleeper.pid");
    let deadline = Instant::now() + Duration::from_secs(20);
    let pid = loop {
        if let Ok(pid) = std::fs::read_to_string(&pid_file)
            && pid.ends_with('\n')
        {
            break pid.trim().to_string();
        }
        assert!(Instant::now() < deadline, "the build never started:\n{}", log.text());
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    task.abort();
    let _ = task.await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gone(&pid) {
        assert!(Instant::now() < deadline, "process {pid} outlived its dropped build");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
