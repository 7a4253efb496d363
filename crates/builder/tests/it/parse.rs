//! Buildspec mistakes, each with the exact diagnostic a user sees.

use builder::{OnFailure, PhaseType, Shell};
use expect_test::expect;

use crate::{check_errors, check_notes};

#[test]
fn unknown_keys_get_suggestions() {
    check_errors(
        "buildspec.yml",
        "version: 0.2\nphases:\n  prebuild:\n    commands: [echo]\n  build:\n    comands:\n      - make\n    finaly: [echo]\nartifact:\n  files: ['**/*']\n",
        expect![[r#"
            buildspec.yml:3:3: phases.prebuild: unknown field `prebuild`; did you mean `pre_build`?
            buildspec.yml:6:5: phases.build.comands: unknown field `comands`; did you mean `commands`?
            buildspec.yml:8:5: phases.build.finaly: unknown field `finaly`; did you mean `finally`?
            buildspec.yml:9:1: artifact: unknown field `artifact`; did you mean `artifacts`?
        "#]],
    );
}

#[test]
fn version_and_phases_are_required() {
    check_errors(
        "buildspec.yml",
        "env:\n  variables:\n    A: b\n",
        expect![[r#"
            buildspec.yml:1:1: version: missing required field `version`; add `version: 0.2` at the top
            buildspec.yml:1:1: phases: missing required field `phases`; add `phases:` with at least a `build:` phase
        "#]],
    );
    check_errors(
        "buildspec.yml",
        "version: 0.1\nphases:\n  build:\n    commands: [make]\n",
        expect![[r#"
            buildspec.yml:1:10: version: version 0.1 runs every command in its own shell and is not supported; write `version: 0.2` (variables and `cd` then carry over between commands)
        "#]],
    );
}

#[test]
fn commands_must_be_a_list_of_strings() {
    check_errors(
        "buildspec.yml",
        "version: 0.2\nphases:\n  pre_build:\n    commands: make\n  build:\n    commands:\n      - echo \"a\": b\n      -\n  post_build: {}\n",
        expect![[r#"
            buildspec.yml:4:15: phases.pre_build.commands: expected a list of commands, found string "make"; write each command on its own line starting with `- `
            buildspec.yml:7:9: phases.build.commands[0]: this command was read as a map because it contains `: ` (after "echo \"a\""); put the whole command in quotes
            buildspec.yml:8:8: phases.build.commands[1]: an empty command; write the command after `- ` or remove the line
            buildspec.yml:9:3: phases.post_build.commands: missing required field `commands`; add `commands:` with a list of commands
        "#]],
    );
}

#[test]
fn on_failure_accepts_abort_continue_and_retry_forms() {
    let text = |v: &str| {
        format!("version: 0.2\nphases:\n  build:\n    on-failure: {v}\n    commands: [make]\n")
    };
    let parse = |v: &str| {
        builder::parse_buildspec("b.yml", &text(v))
            .map(|p| p.value.phases.build.and_then(|b| b.on_failure))
    };
    assert_eq!(parse("ABORT"), Ok(Some(OnFailure::Abort)));
    assert_eq!(parse("CONTINUE"), Ok(Some(OnFailure::Continue)));
    assert_eq!(parse("RETRY"), Ok(Some(OnFailure::Retry { count: 3, pattern: ".*".into() })));
    assert_eq!(parse("RETRY-5"), Ok(Some(OnFailure::Retry { count: 5, pattern: ".*".into() })));
    assert_eq!(
        parse("RETRY-timeout"),
        Ok(Some(OnFailure::Retry { count: 3, pattern: "timeout".into() }))
    );
    assert_eq!(
        parse("RETRY-2-rate limit.*"),
        Ok(Some(OnFailure::Retry { count: 2, pattern: "rate limit.*".into() }))
    );
    check_errors(
        "b.yml",
        &text("abort"),
        expect![[r#"
            b.yml:4:17: phases.build.on-failure: "abort" must be written in capitals: `ABORT`
        "#]],
    );
    check_errors(
        "b.yml",
        &text("RETRY-101"),
        expect![[r#"
            b.yml:4:17: phases.build.on-failure: RETRY-101 asks for 101 retries; the most is 100
        "#]],
    );
    check_errors(
        "b.yml",
        &text("STOP"),
        expect![[r#"
            b.yml:4:17: phases.build.on-failure: expected ABORT, CONTINUE, RETRY, RETRY-<count>, RETRY-<regex> or RETRY-<count>-<regex>, found "STOP"
        "#]],
    );
    check_errors(
        "b.yml",
        &text("RETRY-2-(unclosed"),
        expect![[r#"
            b.yml:4:17: phases.build.on-failure: the retry pattern "(unclosed" is not a valid regular expression: error: unclosed group
        "#]],
    );
}

#[test]
fn env_section_is_checked_and_aws_only_parts_are_noted() {
    let spec = check_notes(
        "buildspec.yml",
        r#"version: 0.2
run-as: builder
env:
  shell: /bin/sh
  variables:
    JAVA_HOME: "/usr/lib/jvm/java-8-openjdk-amd64"
    VERSION: 1.10
    DB_PASSWORD: hunter2
  parameter-store:
    LOGIN_PASSWORD: /CodeBuild/dockerLoginPassword
  secrets-manager:
    TOKEN: "prod/token:api"
  exported-variables:
    - IMAGE_TAG
  git-credential-helper: yes
phases:
  build:
    commands:
      - make
cache:
  paths:
    - '/root/.m2/**/*'
reports:
  unit:
    files: ['**/*.xml']
    file-format: JUNITXML
"#,
        expect![[r#"
            note: buildspec.yml:2:1: run-as: accepted, ignored: commands run as the user that runs cutover
            note: buildspec.yml:8:5: env.variables.DB_PASSWORD: `DB_PASSWORD` looks like a secret, but env.variables is plain text in the repository; give it to cutover as a secret build variable instead (its value is masked in the log either way)
            note: buildspec.yml:9:3: env.parameter-store: accepted, but AWS Systems Manager Parameter Store is not available in cutover: give `LOGIN_PASSWORD` to cutover as secret build variables (same names); they are masked in the log
            note: buildspec.yml:11:3: env.secrets-manager: accepted, but AWS Secrets Manager is not available in cutover: give `TOKEN` to cutover as secret build variables (same names); they are masked in the log
            note: buildspec.yml:15:3: env.git-credential-helper: accepted, ignored: git runs with the credentials of the user that runs cutover
            note: buildspec.yml:20:1: cache: accepted, ignored: every build starts from a fresh workspace and cutover does not cache paths between builds yet
            note: buildspec.yml:23:1: reports: accepted, ignored: test reports are not collected; list the report files under `artifacts` to keep them
        "#]],
    );
    assert_eq!(spec.env.shell, Shell::Sh);
    assert_eq!(spec.run_as.as_deref(), Some("builder"));
    // Written as a number, read as CodeBuild reads it: the text.
    assert_eq!(spec.env.variables[1], ("VERSION".to_string(), "1.10".to_string()));
    assert_eq!(spec.env.exported_variables, ["IMAGE_TAG"]);
    assert_eq!(spec.env.secret_names().collect::<Vec<_>>(), ["LOGIN_PASSWORD", "TOKEN"]);
}

#[test]
fn env_mistakes_are_errors() {
    check_errors(
        "buildspec.yml",
        r#"version: 0.2
env:
  shell: powershell.exe
  variables:
    CODEBUILD_BUILD_ID: mine
    my-var: x
    EMPTY:
  secrets-manager:
    TOKEN: "prod/token"
  exported-variables:
    - AWS_REGION
    - TOKEN
    - TAG
    - TAG
phases:
  build:
    commands: [make]
"#,
        expect![[r#"
            buildspec.yml:3:10: env.shell: `powershell.exe` is a Windows shell; cutover runs builds on Linux: write `shell: bash` or `shell: /bin/sh`
            buildspec.yml:5:5: env.variables.CODEBUILD_BUILD_ID: names starting with `CODEBUILD_` are reserved for the variables the build runner sets; rename `CODEBUILD_BUILD_ID`
            buildspec.yml:6:5: env.variables.my-var: "my-var" is not a shell variable name; use letters, digits and `_`, not starting with a digit
            buildspec.yml:7:5: env.variables.EMPTY: `EMPTY` has no value; write `EMPTY: ""` for an empty one
            buildspec.yml:11:7: env.exported-variables[0]: variables starting with `AWS_` cannot be exported; rename `AWS_REGION`
            buildspec.yml:12:7: env.exported-variables[1]: `TOKEN` comes from a secret store and secrets cannot be exported; export a value derived from it under another name if a later stage needs one
            buildspec.yml:14:7: env.exported-variables[3]: `TAG` is listed twice; keep one
        "#]],
    );
}

#[test]
fn artifacts_are_parsed_with_secondary_artifacts() {
    let spec = check_notes(
        "buildspec.yml",
        r#"version: 0.2
phases:
  build:
    commands: [make]
artifacts:
  files:
    - '**/*'
  name: app-$(date +%Y-%m-%d)
  base-directory: dist
  discard-paths: yes
  exclude-paths: ['**/*.map', tmp/**/*]
  secondary-artifacts:
    docs:
      files: [site/**/*]
      discard-paths: no
    image:
      files: imageDetail.json
"#,
        expect![[""]],
    );
    let a = spec.artifacts.expect("artifacts");
    assert_eq!(a.name.as_deref(), Some("app-$(date +%Y-%m-%d)"));
    assert_eq!(a.base_directory.as_ref().map(|g| g.as_str()), Some("dist"));
    assert!(a.discard_paths);
    assert_eq!(a.exclude_paths.len(), 2);
    let ids: Vec<&str> = a.secondary.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["docs", "image"]);
    assert!(!a.secondary[0].1.discard_paths);
    assert_eq!(a.secondary[1].1.files[0].as_str(), "imageDetail.json");
}

#[test]
fn artifact_mistakes_are_errors() {
    check_errors(
        "buildspec.yml",
        r#"version: 0.2
phases:
  build:
    commands: [make]
artifacts:
  base-directory: ../out
  discard-paths: maybe
  exclude-paths: ['/abs']
  secondary-artifacts:
    "bad id":
      files: [x]
    docs:
      name: d
"#,
        expect![[r#"
            buildspec.yml:5:1: artifacts.files: missing required field `files`; add `files:` with the paths to keep (CodeBuild requires it even when only secondary-artifacts are used)
            buildspec.yml:6:19: artifacts.base-directory: `../out` goes up with `..`; artifacts must come from inside the source directory
            buildspec.yml:7:18: artifacts.discard-paths: expected yes or no, found "maybe"
            buildspec.yml:8:19: artifacts.exclude-paths[0]: `/abs` is absolute; paths are relative to the source directory (CODEBUILD_SRC_DIR) or to base-directory: remove the leading `/`
            buildspec.yml:10:5: artifacts.secondary-artifacts["bad id"]: "bad id" is not an artifact identifier; use up to 100 letters, digits, `_` and `-`
            buildspec.yml:12:5: artifacts.secondary-artifacts.docs.files: missing required field `files`; add `files:` with the paths to keep
        "#]],
    );
}

#[test]
fn runtime_versions_belong_to_install_only() {
    check_errors(
        "buildspec.yml",
        "version: 0.2\nphases:\n  build:\n    runtime-versions:\n      java: 17\n    commands: [make]\n",
        expect![[r#"
            buildspec.yml:4:5: phases.build.runtime-versions: unknown field `runtime-versions` here; only the `install` phase has `runtime-versions`
        "#]],
    );
}

#[test]
fn yaml_syntax_errors_point_at_the_spot() {
    check_errors(
        "buildspec.yml",
        "version: 0.2\nphases:\n  build:\n    commands:\n      - echo a: b: c\n",
        expect![[r#"
            buildspec.yml:5:18: phases.build.commands[0]: invalid YAML: mapping values are not allowed in this context; a command containing `: ` must be quoted (wrap the whole command in '…'), or the indentation is off
        "#]],
    );
    check_errors(
        "buildspec.yml",
        "version: 0.2\nphases:\n  build:\n    commands: [a]\n  build:\n    commands: [b]\n",
        expect![[r#"
            buildspec.yml:5:3: phases.build: duplicate key `build` (first written on line 3); keep one
        "#]],
    );
    check_errors(
        "buildspec.yml",
        "",
        expect![[r#"
            buildspec.yml:1:1: the file is empty; a buildspec starts with `version: 0.2` and has `phases:`
        "#]],
    );
}

#[test]
fn phases_run_in_fixed_order_whatever_the_file_order() {
    let spec = check_notes(
        "b.yml",
        "version: 0.2\nphases:\n  post_build:\n    commands: [c]\n  build:\n    commands: [b]\n  install:\n    commands: [a]\n",
        expect![[""]],
    );
    let order: Vec<&str> = PhaseType::COMMAND_PHASES
        .iter()
        .filter_map(|p| spec.phases.get(*p))
        .map(|p| p.commands[0].text.as_str())
        .collect();
    assert_eq!(order, ["a", "b", "c"]);
}
