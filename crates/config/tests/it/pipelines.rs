//! cutover.yaml's `repositories` and `pipelines`: seed 001's flow, the defaults, CodePipeline's
//! structural rules (stages, actions, run orders, artifacts) and the references to repositories,
//! deployment groups and services.

use std::collections::BTreeMap;
use std::time::Duration;

use config::{
    ActionDecl, ActionKind, ApprovalAction, BranchFilter, BuildAction, DeployAction,
    DeployEcsAction, DeploymentGroupRef, ExecutionMode, ImagePlaceholder, PipelineDecl,
    PipelineSource, RepositoryDecl, SourceLocation, StageDecl, WebhookTrigger, parse_cutover_file,
};
use expect_test::expect;

use crate::check;

const SEED_001: &str = include_str!("../data/examples/001-push-build-deploy.yaml");
const DOCS: &str = include_str!("../../../../docs/cutover-yaml.md");

fn web_prod() -> DeploymentGroupRef {
    DeploymentGroupRef { application: "web".into(), deployment_group: "web-prod".into() }
}

#[test]
fn seed_001_example_parses_to_what_it_says() {
    check(
        "cutover.yaml",
        SEED_001,
        expect![[r#"
        ok
    "#]],
    );
    let file = parse_cutover_file("cutover.yaml", SEED_001).unwrap().value;
    assert_eq!(file.repositories, [RepositoryDecl { name: "go-blue-green-app".into() }]);
    let expected = PipelineDecl {
        name: "CodePipelineChatbot".into(),
        execution_mode: ExecutionMode::Superseded,
        source: PipelineSource {
            location: SourceLocation::Repository("go-blue-green-app".into()),
            branch: "main".into(),
            branches: None,
            output_artifact: "SourceOutput".into(),
        },
        stages: vec![
            StageDecl {
                name: "BuildChatbotEcrImageStage".into(),
                actions: vec![ActionDecl {
                    name: "BuildChatbotEcrImage".into(),
                    run_order: 1,
                    input_artifacts: vec!["SourceOutput".into()],
                    output_artifacts: vec!["CodeBuildOutput".into()],
                    kind: ActionKind::Build(BuildAction {
                        buildspec: "buildspec.yml".into(),
                        timeout: Duration::from_secs(3600),
                        env: BTreeMap::from([
                            ("APP_DIR".into(), "go-web-app".into()),
                            ("REPO_NAME".into(), "go-blue-green-app".into()),
                            ("TAG".into(), "demo".into()),
                        ]),
                    }),
                }],
            },
            StageDecl {
                name: "ApproveProduction".into(),
                actions: vec![ActionDecl {
                    name: "Approve".into(),
                    run_order: 1,
                    input_artifacts: vec![],
                    output_artifacts: vec![],
                    kind: ActionKind::Approval(ApprovalAction {
                        timeout: Duration::from_secs(24 * 3600),
                        comment: Some("Release this commit to production?".into()),
                        review_url: None,
                    }),
                }],
            },
            StageDecl {
                name: "EcsCodeDeployBlueGreen".into(),
                actions: vec![ActionDecl {
                    name: "EcsDeployBlueGreen".into(),
                    run_order: 1,
                    input_artifacts: vec!["SourceOutput".into(), "CodeBuildOutput".into()],
                    output_artifacts: vec![],
                    kind: ActionKind::Deploy(DeployAction {
                        deployment_group: web_prod(),
                        task_definition_template_artifact: "SourceOutput".into(),
                        task_definition_template_path: "taskdef.json".into(),
                        appspec_template_artifact: "SourceOutput".into(),
                        appspec_template_path: "appspec.yaml".into(),
                        image_placeholders: vec![ImagePlaceholder {
                            artifact: "CodeBuildOutput".into(),
                            placeholder: "IMAGE1_NAME".into(),
                        }],
                    }),
                }],
            },
        ],
    };
    assert_eq!(file.pipeline("CodePipelineChatbot"), Some(&expected));
    assert!(expected.source.triggers_on("main"));
    assert!(!expected.source.triggers_on("feature/x"));
}

#[test]
fn seed_001_s_deploy_settings_spell_out_the_defaults() {
    let short: String = SEED_001
        .lines()
        .filter(|l| {
            ![
                "task_definition_template_artifact",
                "appspec_template_artifact",
                "image_placeholders",
            ]
            .iter()
            .any(|key| l.trim_start().starts_with(key))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(short.lines().count() + 3, SEED_001.lines().count());
    let short = parse_cutover_file("cutover.yaml", &short).unwrap().value;
    let full = parse_cutover_file("cutover.yaml", SEED_001).unwrap().value;
    assert_eq!(short.pipelines, full.pipelines);
}

#[test]
fn the_docs_show_the_seed_001_example_verbatim() {
    let body: String =
        SEED_001.lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>().join("\n");
    assert!(
        DOCS.contains(body.trim()),
        "docs/cutover-yaml.md must embed crates/config/tests/data/examples/001-push-build-deploy.yaml"
    );
}

/// Seed 001 with its `pipelines:` section replaced by `pipelines`, and a second service,
/// `worker`, that no deployment group deploys.
fn with_pipelines(pipelines: &str) -> String {
    let start = SEED_001.find("pipelines:\n").unwrap();
    format!("{}pipelines:\n{pipelines}\n", &SEED_001[..start]).replace(
        "\ndeployment_groups:",
        "  - { name: worker, task_definition: worker.json }\n\ndeployment_groups:",
    )
}

#[test]
fn the_shortest_pipeline_gets_seed_001_s_defaults() {
    let text = with_pipelines(
        "  - name: web
    source: { repository: go-blue-green-app }
    stages:
      - { name: build, actions: [{ name: build, type: build }] }
      - { name: deploy, actions: [{ name: deploy, type: deploy, deployment_group: web/web-prod }] }",
    );
    check(
        "cutover.yaml",
        &text,
        expect![[r#"
        ok
    "#]],
    );
    let file = parse_cutover_file("cutover.yaml", &text).unwrap().value;
    let p = &file.pipelines[0];
    assert_eq!(p.source.output_artifact, "source");
    assert_eq!(p.source.branch, "main");
    let build = &p.stages[0].actions[0];
    assert_eq!(build.input_artifacts, ["source"]);
    assert_eq!(build.output_artifacts, ["build"], "a build's output is named after it");
    let deploy = &p.stages[1].actions[0];
    assert_eq!(deploy.input_artifacts, ["source", "build"]);
    assert_eq!(
        deploy.kind,
        ActionKind::Deploy(DeployAction {
            deployment_group: web_prod(),
            task_definition_template_artifact: "source".into(),
            task_definition_template_path: "taskdef.json".into(),
            appspec_template_artifact: "source".into(),
            appspec_template_path: "appspec.yaml".into(),
            image_placeholders: vec![ImagePlaceholder {
                artifact: "build".into(),
                placeholder: "IMAGE1_NAME".into()
            }],
        })
    );
}

#[test]
fn url_sources_poll_or_take_webhooks() {
    let text = with_pipelines(
        "  - name: polled
    source: { url: 'file:///srv/git/app' }
    stages: [{ name: build, actions: [{ name: build, type: build, timeout: 20 }] }]
  - name: hooked
    execution_mode: QUEUED
    source:
      url: https://github.com/me/app.git
      webhook: { secret_env: GITHUB_WEBHOOK_SECRET }
      branch: release
      branches: { includes: ['release/**', main], excludes: ['release/old-*'] }
    stages: [{ name: build, actions: [{ name: build, type: build }] }]
  - name: both
    source: { url: ../app, poll_interval: 5m, webhook: { secret_env: HOOK } }
    stages:
      - name: build
        actions:
          - { name: image, type: build, buildspec: ci/buildspec.yml, output_artifacts: [image, reports] }
          - { name: ship, type: deploy_ecs, service: worker, run_order: 2, image_definitions: out/images.json, timeout: 10m, input_artifacts: [image] }",
    );
    check(
        "cutover.yaml",
        &text,
        expect![[r#"
        ok
    "#]],
    );
    let file = parse_cutover_file("cutover.yaml", &text).unwrap().value;
    let [polled, hooked, both] = &file.pipelines[..] else { panic!("three pipelines") };
    assert_eq!(
        polled.source.location,
        SourceLocation::Url {
            url: "file:///srv/git/app".into(),
            poll_interval: Some(Duration::from_secs(60)),
            webhook: None
        },
        "a url alone is polled every minute"
    );
    let ActionKind::Build(build) = &polled.stages[0].actions[0].kind else { panic!("a build") };
    assert_eq!(build.timeout, Duration::from_secs(20 * 60), "timeoutInMinutes: bare minutes");
    assert_eq!(hooked.execution_mode, ExecutionMode::Queued);
    assert_eq!(hooked.source.branch, "release");
    assert!(hooked.source.triggers_on("release/2.0/rc1"));
    assert!(hooked.source.triggers_on("main"));
    assert!(!hooked.source.triggers_on("release/old-1"));
    assert!(!hooked.source.triggers_on("feature/x"));
    assert_eq!(
        both.source.location,
        SourceLocation::Url {
            url: "../app".into(),
            poll_interval: Some(Duration::from_secs(300)),
            webhook: Some(WebhookTrigger { secret_env: "HOOK".into() }),
        }
    );
    let ship = &both.stages[0].actions[1];
    assert_eq!((ship.run_order, &ship.input_artifacts), (2, &vec!["image".to_string()]));
    assert_eq!(
        ship.kind,
        ActionKind::DeployEcs(DeployEcsAction {
            service: "worker".into(),
            image_definitions: "out/images.json".into(),
            timeout: Duration::from_secs(600),
        })
    );
    assert_eq!(both.stages[0].actions[0].output_artifacts, ["image", "reports"]);
}

#[test]
fn sources_say_where_from_and_keep_secrets_out() {
    let text = with_pipelines(
        "  - name: a
    source: { repository: go-blue-green-app, url: https://github.com/me/app.git }
    stages: [{ name: build, actions: [{ name: build, type: build }] }]
  - name: b
    source: { webhook: { secret_env: HOOK } }
    stages: [{ name: build, actions: [{ name: build, type: build }] }]
  - name: c
    source: { url: 'https://me:hunter2@github.com/me/app.git', webhook: { secret: hunter2 } }
    stages: [{ name: build, actions: [{ name: build, type: build }] }]
  - name: d
    source: { url: 'ext::sh -c touch% /tmp/pwned', poll_interval: 30, branch: 'release/*' }
    stages: [{ name: build, actions: [{ name: build, type: build }] }]
  - name: e
    source: { repository: go-blue-green-app, poll_interval: 1m, branch: refs/heads/main, branches: {} }
    stages: [{ name: build, actions: [{ name: build, type: build }] }]
  - name: f
    source: { url: 'ext::ssh', webhook: { secret_env: 1SECRET }, branches: { includes: ['feature/[ab]', 'a..b'] } }
    stages: [{ name: build, actions: [{ name: build, type: build }] }]",
    );
    check(
        "cutover.yaml",
        &text,
        expect![[r#"
        cutover.yaml:35:13: pipelines[0].source: a source has exactly one of `repository: NAME` (a repository cutover hosts) or `url: …` (a repository cutover fetches from)
        cutover.yaml:38:13: pipelines[1].source.url: missing required field `url`; a webhook says when to fetch, `url` says where from: add the repository's clone URL
        cutover.yaml:41:20: pipelines[2].source.url: "https://me:hunter2@github.com/me/app.git" carries credentials, which would then be in cutover.yaml; remove them and let git supply them (a credential helper, or an SSH key with an ssh:// URL)
        cutover.yaml:41:75: pipelines[2].source.webhook.secret: the secret must not be written in cutover.yaml: the file lives in git next to the code, and whoever reads it could sign pushes; put the secret in an environment variable of `cutover up` and name the variable: `secret_env: WEBHOOK_SECRET`
        cutover.yaml:44:20: pipelines[3].source.url: "ext::sh -c touch% /tmp/pwned" contains spaces or control characters
        cutover.yaml:44:67: pipelines[3].source.poll_interval: `30` has no unit; write `30s` for seconds or `30m` for minutes
        cutover.yaml:44:79: pipelines[3].source.branch: "release/*" is a pattern; `branch` is one branch (the one a manual start builds): put patterns in `branches: { includes: [...] }`
        cutover.yaml:47:61: pipelines[4].source.poll_interval: `poll_interval` is for `url` sources; a push to a repository cutover hosts starts the pipeline at once
        cutover.yaml:47:73: pipelines[4].source.branch: write the branch name without `refs/heads/`: `main`
        cutover.yaml:47:100: pipelines[4].source.branches: a branch filter needs `includes`, `excludes` or both, like `branches: { includes: [main, "release/*"] }`
        cutover.yaml:50:20: pipelines[5].source.url: "ext::ssh" uses a remote helper (`transport::address`), which cutover does not accept (`ext::` runs commands); use https://, ssh://, file:// or a path
        cutover.yaml:50:55: pipelines[5].source.webhook.secret_env: "1SECRET" is not an environment variable name: use letters, digits and `_`, not starting with a digit
        cutover.yaml:50:89: pipelines[5].source.branches.includes[0]: "feature/[ab]" contains '[', which git does not allow in branch names
        cutover.yaml:50:105: pipelines[5].source.branches.includes[1]: "a..b" is not a valid branch name (see `git check-ref-format`)
    "#]],
    );
}

#[test]
fn stages_actions_and_run_orders() {
    let text = with_pipelines(
        "  - name: no-stages
    source: { repository: go-blue-green-app }
    stages: []
  - name: shapes
    execution_mode: PARALLEL
    source: { repository: go-blue-green-app }
    stages:
      - { name: empty, actions: [] }
      - name: build
        actions:
          - { name: build, type: bulid }
          - { name: test, type: build, run_order: 0 }
          - { name: lint, type: build, run_order: 1000, deployment_group: web/web-prod }
          - { name: build, type: approval, buildspec: x.yml, timeot: 5m }
      - { name: build, actions: [{ name: ok, type: approval }] }",
    );
    check(
        "cutover.yaml",
        &text,
        expect![[r#"
        cutover.yaml:36:13: pipelines[0].stages: a pipeline has 1 to 49 stages after its source (CodePipeline's 2 to 50, counting the source stage); found 0
        cutover.yaml:38:21: pipelines[1].execution_mode: PARALLEL is not supported: executions of one pipeline deploy to the same deployment group, one at a time; use SUPERSEDED or QUEUED
        cutover.yaml:41:33: pipelines[1].stages[0].actions: a stage has 1 to 50 actions; found 0
        cutover.yaml:44:34: pipelines[1].stages[1].actions[0].type: "bulid" is not an action type; did you mean `build`?
        cutover.yaml:45:51: pipelines[1].stages[1].actions[1].run_order: 0 is out of range: run_order must be 1 to 999
        cutover.yaml:46:51: pipelines[1].stages[1].actions[2].run_order: 1000 is out of range: run_order must be 1 to 999
        cutover.yaml:46:57: pipelines[1].stages[1].actions[2].deployment_group: `deployment_group` is a setting of deploy actions; a build action takes: buildspec, timeout, env
        cutover.yaml:47:21: pipelines[1].stages[1].actions[3].name: duplicate action name `build` (first on line 44); names must be unique
        cutover.yaml:47:44: pipelines[1].stages[1].actions[3].buildspec: `buildspec` is a setting of build actions; an approval action takes: timeout, comment, review_url
        cutover.yaml:47:62: pipelines[1].stages[1].actions[3].timeot: unknown field `timeot`; did you mean `timeout`?
        cutover.yaml:48:17: pipelines[1].stages[2].name: duplicate stage name `build` (first on line 42); names must be unique
    "#]],
    );
    let many_stages: String = (0..50)
        .map(|i| format!("      - {{ name: s{i}, actions: [{{ name: a, type: approval }}] }}\n"))
        .collect();
    let text = with_pipelines(&format!(
        "  - name: long
    source: {{ repository: go-blue-green-app }}
    stages:
{many_stages}"
    ));
    check(
        "cutover.yaml",
        &text,
        expect![[r#"
        cutover.yaml:37:7: pipelines[0].stages: a pipeline has 1 to 49 stages after its source (CodePipeline's 2 to 50, counting the source stage); found 50
    "#]],
    );
}

#[test]
fn artifacts_come_from_earlier_actions() {
    let text = with_pipelines(
        "  - name: p
    source: { repository: go-blue-green-app }
    stages:
      - name: build
        actions:
          - { name: api, type: build, input_artifacts: [sorce] }
          - { name: web, type: build, run_order: 2, input_artifacts: [source, test] }
          - { name: test, type: build, run_order: 2 }
          - { name: source, type: build, run_order: 3 }
      - name: deploy
        actions:
          - { name: deploy, type: deploy, deployment_group: web/web-prod }
          - { name: ecs, type: deploy_ecs, service: worker }
          - { name: ok, type: approval, input_artifacts: [api], output_artifacts: [x] }
          - { name: later, type: build, input_artifacts: [final] }
          - { name: explicit, type: deploy, deployment_group: web/web-prod, input_artifacts: [source], image_placeholders: [{ artifact: api }], output_artifacts: [y] }
      - name: last
        actions:
          - { name: final, type: build, output_artifacts: [final, web] }",
    );
    check(
        "cutover.yaml",
        &text,
        expect![[r#"
        cutover.yaml:39:57: pipelines[0].stages[0].actions[0].input_artifacts[0]: no artifact named `sorce`; did you mean `source`?
        cutover.yaml:40:79: pipelines[0].stages[0].actions[1].input_artifacts[1]: artifact `test` is produced by action `test` in stage `build` (line 41), which does not run before this action; an input comes from the source, an earlier stage, or a lower run_order in the same stage
        cutover.yaml:42:21: pipelines[0].stages[0].actions[3].name: artifact `source` (this build action's default output, named after it) is already produced by the source (line 35); output artifact names are unique in a pipeline; name it with `output_artifacts`
        cutover.yaml:45:13: pipelines[0].stages[1].actions[0]: several build artifacts come before this action (api, web, test); name the one whose imageDetail.json gives the image: `image_placeholders: [{ artifact: api, placeholder: IMAGE1_NAME }]`
        cutover.yaml:46:13: pipelines[0].stages[1].actions[1]: several build artifacts come before this action (api, web, test); name the one that holds imagedefinitions.json with `input_artifacts: [api]`
        cutover.yaml:47:58: pipelines[0].stages[1].actions[2].input_artifacts: an approval action reads no artifacts; remove input_artifacts
        cutover.yaml:47:83: pipelines[0].stages[1].actions[2].output_artifacts: an approval action produces no artifacts; remove output_artifacts
        cutover.yaml:48:59: pipelines[0].stages[1].actions[3].input_artifacts[0]: artifact `final` is produced by action `final` in stage `last` (line 52), which does not run before this action; an input comes from the source, an earlier stage, or a lower run_order in the same stage
        cutover.yaml:49:137: pipelines[0].stages[1].actions[4].image_placeholders[0].artifact: artifact `api` is used by this action but is not in its input_artifacts; add it
        cutover.yaml:49:163: pipelines[0].stages[1].actions[4].output_artifacts: a deploy action produces no artifacts; remove output_artifacts
        cutover.yaml:52:67: pipelines[0].stages[2].actions[0].output_artifacts[1]: artifact `web` is already produced by action `web` in stage `build` (line 40); output artifact names are unique in a pipeline
    "#]],
    );
    let text = with_pipelines(
        "  - name: p
    source: { repository: go-blue-green-app }
    stages:
      - name: ship
        actions:
          - { name: ecs, type: deploy_ecs, service: worker }
          - { name: two, type: deploy_ecs, service: worker, input_artifacts: [source, source] }",
    );
    check(
        "cutover.yaml",
        &text,
        expect![[r#"
        cutover.yaml:39:13: pipelines[0].stages[0].actions[0]: no build action runs before this one to produce imagedefinitions.json; name the artifact that holds it with `input_artifacts: [NAME]`
        cutover.yaml:40:87: pipelines[0].stages[0].actions[1].input_artifacts[1]: artifact `source` is listed twice
    "#]],
    );
}

#[test]
fn action_settings() {
    let text = with_pipelines(
        "  - name: p
    source: { repository: go-blue-green-app }
    stages:
      - name: build
        actions:
          - name: build
            type: build
            buildspec: /etc/buildspec.yml
            timeout: 37h
            env: { CODEBUILD_X: a, 'BAD-NAME': b, PORT: 8080, RATIO: 1.5 }
      - name: deploy
        actions:
          - name: deploy
            type: deploy
            deployment_group: web-prod
            task_definition_template_path: ../taskdef.json
            image_placeholders:
              - { artifact: build, placeholder: <IMAGE1_NAME> }
              - { artifact: build, placeholder: IMAGE2_NAME }
              - { artifact: build }
              - { artifact: build, placeholder: IMAGE2_NAME }
          - name: five
            type: deploy
            deployment_group: web/web-prod
            image_placeholders: [{ artifact: build }, { artifact: build }, { artifact: build }, { artifact: build }, { artifact: build }]
          - { name: approve, type: approval, timeout: 61d, comment: 12 }
          - { name: approve2, type: approval, timeout: 0s, review_url: 'javascript:alert(1)' }
          - { name: ecs, type: deploy_ecs, service: api, timeout: 2h, input_artifacts: [build] }
          - { name: ecs2, type: deploy_ecs, service: worker, input_artifacts: [source, build] }
          - { name: spaced, type: deploy, deployment_group: 'web / web-prod' }",
    );
    check(
        "cutover.yaml",
        &text,
        expect![[r#"
            cutover.yaml:41:24: pipelines[0].stages[0].actions[0].buildspec: path "/etc/buildspec.yml" is absolute; give a path inside the artifact, like `taskdef.json`
            cutover.yaml:42:22: pipelines[0].stages[0].actions[0].timeout: 37h is out of range: 1s to 36h, CodeBuild's limit
            cutover.yaml:43:20: pipelines[0].stages[0].actions[0].env.CODEBUILD_X: `CODEBUILD_X`: names starting with CODEBUILD_ are set by the build itself; pick another name
            cutover.yaml:43:36: pipelines[0].stages[0].actions[0].env.BAD-NAME: "BAD-NAME" is not an environment variable name: use letters, digits and `_`, not starting with a digit
            cutover.yaml:43:70: pipelines[0].stages[0].actions[0].env.RATIO: expected string, found number 1.5; put it in quotes to make it a string
            cutover.yaml:48:31: pipelines[0].stages[1].actions[0].deployment_group: "web-prod" is not a deployment group reference; write `<application>/<deployment group>`, like web/web-prod
            cutover.yaml:49:44: pipelines[0].stages[1].actions[0].task_definition_template_path: path "../taskdef.json" leaves the artifact with `..`; give a path inside it
            cutover.yaml:51:49: pipelines[0].stages[1].actions[0].image_placeholders[0].placeholder: write the placeholder without angle brackets: `IMAGE1_NAME` (the task definition has `<IMAGE1_NAME>`)
            cutover.yaml:54:49: pipelines[0].stages[1].actions[0].image_placeholders[3].placeholder: placeholder `IMAGE2_NAME` is filled in twice; one image each
            cutover.yaml:58:33: pipelines[0].stages[1].actions[1].image_placeholders: 5 images; a deploy action fills in at most 4 (CodeDeployToECS's Image1 to Image4)
            cutover.yaml:59:55: pipelines[0].stages[1].actions[2].timeout: 1464h is out of range: 1s to 60 days, CodePipeline's limit
            cutover.yaml:59:69: pipelines[0].stages[1].actions[2].comment: expected string, found integer 12; put it in quotes to make it a string
            cutover.yaml:60:56: pipelines[0].stages[1].actions[3].timeout: 0s is out of range: 1s to 60 days, CodePipeline's limit
            cutover.yaml:60:72: pipelines[0].stages[1].actions[3].review_url: "javascript:alert(1)" is not an absolute URL; give the page to review as https://host/…
            cutover.yaml:61:67: pipelines[0].stages[1].actions[4].timeout: 2h is out of range: 1s to 60m, ECS's deployment timeout limit
            cutover.yaml:62:79: pipelines[0].stages[1].actions[5].input_artifacts: a deploy_ecs action takes exactly one input artifact; found 2
            cutover.yaml:63:61: pipelines[0].stages[1].actions[6].deployment_group: "web / web-prod" is not a deployment group reference; write `<application>/<deployment group>`, like web/web-prod
        "#]],
    );
}

#[test]
fn references_to_repositories_groups_and_services() {
    let text = with_pipelines(
        "  - name: p
    source: { repository: go-blue-green-ap }
    stages:
      - name: deploy
        actions:
          - { name: deploy, type: deploy, deployment_group: web/web-prd }
          - { name: other, type: deploy, deployment_group: shop/checkout }
          - { name: ecs, type: deploy_ecs, service: web, input_artifacts: [source] }
          - { name: ecs2, type: deploy_ecs, service: wrker, input_artifacts: [source] }",
    );
    check(
        "cutover.yaml",
        &text,
        expect![[r#"
        cutover.yaml:41:53: pipelines[0].stages[0].actions[2].service: service `web` is released blue/green by deployment group web/web-prod; use a `deploy` action with `deployment_group: web/web-prod` (deploy_ecs, like ECS's own deploy action, is for services without a deployment group)
    "#]],
    );
    let fixed = text.replace("service: web, input", "service: worker, input");
    check(
        "cutover.yaml",
        &fixed,
        expect![[r#"
        note: cutover.yaml:35:27: pipelines[0].source.repository: repository `go-blue-green-ap` is not declared in this file; it must exist (`cutover repos create go-blue-green-ap`) before a push can start the pipeline; did you mean `go-blue-green-app`?
        note: cutover.yaml:39:61: pipelines[0].stages[0].actions[0].deployment_group: deployment group web/web-prd is not declared in this file; it must exist when the pipeline deploys; did you mean `web/web-prod`?
        note: cutover.yaml:40:60: pipelines[0].stages[0].actions[1].deployment_group: deployment group shop/checkout is not declared in this file; it must exist when the pipeline deploys
        note: cutover.yaml:42:54: pipelines[0].stages[0].actions[3].service: service `wrker` is not declared in this file; it must exist when the pipeline deploys; did you mean `worker`?
    "#]],
    );
    let file = parse_cutover_file("cutover.yaml", &fixed).unwrap().value;
    assert_eq!(
        file.pipelines[0].stages[0].actions[2].kind,
        ActionKind::DeployEcs(DeployEcsAction {
            service: "worker".into(),
            image_definitions: "imagedefinitions.json".into(),
            timeout: Duration::from_secs(3600),
        })
    );
}

#[test]
fn repository_and_pipeline_names() {
    let text = SEED_001.replace(
        "  - name: go-blue-green-app       # `git push`",
        "  - name: app.git\n  - name: .hidden\n  - name: go-blue-green-app\n  - name: go-blue-green-app       # `git push`",
    ) + "  - name: CodePipelineChatbot
    source: { repository: go-blue-green-app }
    stages: [{ name: build, actions: [{ name: build, type: build }] }]
";
    check(
        "cutover.yaml",
        &text,
        expect![[r#"
        cutover.yaml:30:11: repositories[0].name: repository name `app.git` must not end with `.git` (the remote URL adds it)
        cutover.yaml:31:11: repositories[1].name: repository name `.hidden` must not start with `.`
        cutover.yaml:33:11: repositories[3].name: duplicate repository name `go-blue-green-app` (first on line 32); names must be unique
        cutover.yaml:59:11: pipelines[1].name: duplicate pipeline name `CodePipelineChatbot` (first on line 36); names must be unique
    "#]],
    );
}

#[test]
fn webhook_and_branch_filter_values() {
    let text = with_pipelines(
        "  - name: hooked
    source:
      url: https://github.com/me/app.git
      webhook: { secret_env: GITHUB_WEBHOOK_SECRET }
      branches: { excludes: ['wip/**'] }
    stages: [{ name: build, actions: [{ name: build, type: build }] }]",
    );
    let file = parse_cutover_file("cutover.yaml", &text).unwrap().value;
    let source = &file.pipelines[0].source;
    assert_eq!(
        source.location,
        SourceLocation::Url {
            url: "https://github.com/me/app.git".into(),
            poll_interval: None,
            webhook: Some(WebhookTrigger { secret_env: "GITHUB_WEBHOOK_SECRET".into() }),
        },
        "a webhook source does not poll unless asked"
    );
    assert_eq!(
        source.branches,
        Some(BranchFilter { includes: vec![], excludes: vec!["wip/**".into()] })
    );
    assert!(source.triggers_on("feature/x"), "no includes: every branch but the excluded");
    assert!(!source.triggers_on("wip/a/b"));
}

/// Branch filters and buildspec artifacts share one glob matcher, in which `**` spans parts only
/// as a part of its own; inside a part it would silently mean `*`, so it is refused there.
#[test]
fn a_double_star_inside_a_branch_part_is_refused_with_where_to_put_it() {
    let text = with_pipelines(
        "  - name: a
    source: { repository: go-blue-green-app, branches: { includes: ['release-**', 'release/**'], excludes: ['a/**b'] } }
    stages: [{ name: build, actions: [{ name: build, type: build }] }]",
    );
    check(
        "cutover.yaml",
        &text,
        expect![[r#"
            cutover.yaml:35:69: pipelines[0].source.branches.includes[0]: "release-**" has `**` inside `release-**`; `**` matches across `/` only as a part of its own (`release/**`), and `*` matches within a part (`release-*`)
            cutover.yaml:35:109: pipelines[0].source.branches.excludes[0]: "a/**b" has `**` inside `**b`; `**` matches across `/` only as a part of its own (`release/**`), and `*` matches within a part (`release-*`)
        "#]],
    );
}
