//! cutover.yaml: the quickstart example, each field's rules, and the checks across items.

use std::collections::BTreeMap;
use std::time::Duration;

use config::{
    AutoRollback, HookAction, ListenerAction, ListenerRef, PreviewSpec, RuntimeKind,
    parse_cutover_file, parse_task_definition,
};
use expect_test::expect;
use model::{DeploymentConfig, LifecycleEvent, TrafficRouting};

use crate::check;

const QUICKSTART: &str = include_str!("../../../../examples/quickstart/cutover.yaml");
const DOCS: &str = include_str!("../../../../docs/cutover-yaml.md");

#[test]
fn quickstart_example_parses_to_what_it_says() {
    let parsed = parse_cutover_file("cutover.yaml", QUICKSTART).unwrap();
    let file = parsed.value;
    let prod = &file.load_balancers[0].listeners[0];
    assert_eq!(prod.bind, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(prod.default_action, ListenerAction::Forward(vec![]));
    let blue = file.target_group("web-blue").unwrap();
    assert_eq!(blue.health_check.interval_ms, 1000);
    assert_eq!(blue.health_check.timeout_ms, 500);
    assert_eq!(blue.health_check.matcher, vec![(200, 299)]);
    assert_eq!(blue.deregistration_delay, Duration::from_secs(2));
    let web = file.service("web").unwrap();
    assert_eq!((web.runtime, web.desired_count), (RuntimeKind::Process, 2));
    assert_eq!(
        file.deployment_config("quick-canary"),
        Some(DeploymentConfig {
            name: "quick-canary".to_string(),
            routing: TrafficRouting::Canary { percent: 20, interval: Duration::from_secs(5) },
            mirror: None,
        })
    );
    let group = &file.deployment_groups[0];
    assert_eq!(group.target_groups, ["web-blue".to_string(), "web-green".to_string()]);
    assert_eq!(
        group.test_listener,
        Some(ListenerRef { load_balancer: "web".to_string(), listener: "test".to_string() })
    );
    assert_eq!((group.ready_wait, group.termination_wait), (None, Duration::from_secs(5)));
    assert_eq!(
        group.auto_rollback,
        AutoRollback { on_failure: true, on_alarm: false, on_stop_request: true }
    );
    assert_eq!(group.hook_timeout, Duration::from_secs(600));
    assert_eq!(
        group.preview,
        Some(PreviewSpec { from: routes::PreviewFrom::Header, name: "X-Deploy-Version".into() })
    );
    assert_eq!(
        group.hooks,
        BTreeMap::from([(LifecycleEvent::AfterAllowTestTraffic, "smoke-test".to_string())])
    );
    assert_eq!(
        file.hook("smoke-test").unwrap().action,
        HookAction::Command {
            argv: vec!["sh".into(), "-c".into(), "curl -fsS $CUTOVER_TEST_URL/health".into()]
        }
    );
    check(
        "cutover.yaml",
        QUICKSTART,
        expect![[r#"
            note: cutover.yaml:13:19: target_groups[0].health_check: interval 1s and timeout 500ms are below ALB's minimums (5s and 2s); cutover allows them for local use
            note: cutover.yaml:16:19: target_groups[1].health_check: interval 1s and timeout 500ms are below ALB's minimums (5s and 2s); cutover allows them for local use
        "#]],
    );
}

#[test]
fn quickstart_files_validate_together() {
    let taskdef = include_str!("../../../../examples/quickstart/taskdef.json");
    let taskdef_v2 = include_str!("../../../../examples/quickstart/taskdef-v2.json");
    let appspec = include_str!("../../../../examples/quickstart/appspec.yaml");
    let file = parse_cutover_file("cutover.yaml", QUICKSTART).unwrap().value;
    let spec = config::parse_appspec("appspec.yaml", appspec).unwrap();
    assert_eq!(spec.notes, vec![]);
    for (name, text) in [("taskdef.json", taskdef), ("taskdef-v2.json", taskdef_v2)] {
        let td = parse_task_definition(name, text).unwrap().value;
        let service = file.service("web").unwrap();
        assert_eq!(config::check_service_against("cutover.yaml", QUICKSTART, service, &td), Ok(()));
        assert_eq!(
            config::check_appspec_against("appspec.yaml", appspec, &spec.value, &td),
            Ok(())
        );
    }
    for hook in spec.value.hooks.values() {
        assert!(file.hook(hook).is_some(), "the AppSpec's hook {hook} is declared in cutover.yaml");
    }
    check(
        "taskdef.json",
        taskdef,
        expect![[r#"
            note: taskdef.json:14:3: networkMode: ignored: cutover gives every task its own address, as awsvpc does
            note: taskdef.json:15:3: requiresCompatibilities: ignored: cutover runs tasks with its own runtime (process or docker), not EC2 or Fargate
        "#]],
    );
}

#[test]
fn the_docs_show_the_quickstart_example_verbatim() {
    let body: String =
        QUICKSTART.lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>().join("\n");
    assert!(
        DOCS.contains(body.trim()),
        "docs/cutover-yaml.md must embed examples/quickstart/cutover.yaml"
    );
}

const DEFAULTS: &str = "
load_balancers:
  - name: web
    listeners:
      - name: prod
        port: 8443
        address: 0.0.0.0
        protocol: HTTPS
        certificate_file: certs/web.pem
        key_file: certs/web.key
        default_action: { forward: [{ target_group: static, weight: 3 }, { target_group: other }] }
      - name: old
        port: 8000
        default_action: { redirect: { protocol: HTTPS, port: 8443, status_code: 301 } }
      - name: gone
        port: 8001
        default_action: { fixed_response: { status_code: 410, content_type: text/plain, body: gone } }
  - name: api-lb
    listeners: [{ name: prod, port: 80 }]
target_groups:
  - name: static
    targets: [127.0.0.1:9000, '[::1]:9001']
    deregistration_delay: 30
    health_check: { interval: 10, timeout: 3, matcher: 200 }
    algorithm: least_outstanding_requests
  - name: other
    targets: [127.0.0.1:9002]
  - name: blue
  - name: green
services:
  - name: api
    task_definition: api:4
    load_balancer: { target_group: blue, container_name: api, container_port: 80 }
deployment_configs:
  - { name: slow-linear, type: TimeBasedLinear, percentage: 25, interval: 2 }
  - { name: all, type: AllAtOnce }
deployment_groups:
  - application: api
    name: api-prod
    service: api
    target_groups: [blue, green]
    production_listener: api-lb/prod
    ready_wait: 30
    termination_wait: 5
    hook_timeout: 2m
    alarms: [api-5xx]
    hooks: { BeforeAllowTraffic: 'https://hooks.example.test/ready' }
alarms:
  - { name: api-5xx, metric: HTTPCode_Target_5XX_Count, target_group: green, statistic: Sum, period: 60, evaluation_periods: 1, threshold: 5, comparison: '>=' }
";

#[test]
fn defaults_and_bare_numbers() {
    check(
        "cutover.yaml",
        DEFAULTS,
        expect![[r#"
            note: cutover.yaml:49:71: alarms[0].target_group: `green` means the green target group of the deployment being watched, not the target group named `green`
        "#]],
    );
    let file = parse_cutover_file("cutover.yaml", DEFAULTS).unwrap().value;
    let prod = file.listener(&ListenerRef::parse("web/prod").unwrap()).unwrap();
    assert_eq!(prod.bind, "0.0.0.0:8443".parse().unwrap());
    assert!(prod.tls.is_some());
    let static_tg = file.target_group("static").unwrap();
    assert_eq!(static_tg.deregistration_delay, Duration::from_secs(30), "ALB fields count seconds");
    assert_eq!(static_tg.health_check.interval_ms, 10_000);
    assert_eq!(static_tg.health_check.healthy_threshold, 5, "ALB's default");
    assert_eq!(static_tg.targets.len(), 2);
    let blue = file.target_group("blue").unwrap();
    assert_eq!(blue.deregistration_delay, Duration::from_secs(300), "ALB's default");
    assert_eq!(blue.health_check, routes::HealthCheck::default());
    assert_eq!(file.service("api").unwrap().desired_count, 1);
    assert_eq!(
        file.deployment_config("slow-linear").unwrap().routing,
        TrafficRouting::Linear { percent: 25, interval: Duration::from_secs(120) },
        "CodeDeploy fields count minutes"
    );
    assert_eq!(file.deployment_config("all").unwrap().routing, TrafficRouting::AllAtOnce);
    let group = &file.deployment_groups[0];
    assert_eq!(group.deployment_config, "CodeDeployDefault.ECSAllAtOnce");
    assert_eq!(group.ready_wait, Some(Duration::from_secs(30 * 60)));
    assert_eq!(group.termination_wait, Duration::from_secs(5 * 60));
    assert_eq!(group.hook_timeout, Duration::from_secs(120));
    assert_eq!(
        group.auto_rollback,
        AutoRollback { on_failure: true, on_alarm: true, on_stop_request: false },
        "the default rolls back on failure, and on alarm when there are alarms"
    );
    assert!(!group.ignore_poll_alarm_failure, "CodeDeploy's default");
    let alarm = file.alarm("api-5xx").unwrap();
    assert_eq!(alarm.spec.period.secs(), 60, "CloudWatch's Period counts seconds");
    assert_eq!(alarm.spec.datapoints_to_alarm(), 1, "M defaults to N");
    assert_eq!(alarm.spec.treat_missing_data, alarms::TreatMissingData::Missing);
}

/// The quickstart with one edit.
fn quickstart_with(from: &str, to: &str) -> String {
    assert!(QUICKSTART.contains(from), "{from:?} is not in the quickstart");
    QUICKSTART.replacen(from, to, 1)
}

#[test]
fn preview_takes_one_header_or_cookie_name() {
    let preview = "preview: { header: X-Deploy-Version }";
    let cookie = parse_cutover_file(
        "cutover.yaml",
        &quickstart_with(preview, "preview: { cookie: deploy_version }"),
    )
    .unwrap();
    assert_eq!(
        cookie.value.deployment_groups[0].preview,
        Some(PreviewSpec { from: routes::PreviewFrom::Cookie, name: "deploy_version".into() })
    );
    check(
        "cutover.yaml",
        &quickstart_with(preview, "preview: { header: X-Deploy-Version, cookie: v }"),
        expect![[r#"
            cutover.yaml:39:14: deployment_groups[0].preview: preview takes `header` or `cookie`, not both
        "#]],
    );
    check(
        "cutover.yaml",
        &quickstart_with(preview, "preview: {}"),
        expect![[r#"
            cutover.yaml:39:14: deployment_groups[0].preview: preview needs a request header (`header: X-Deploy-Version`) or a cookie (`cookie: deploy_version`) whose value `green` or `blue` picks a target group
        "#]],
    );
    check(
        "cutover.yaml",
        &quickstart_with(preview, "preview: { header: \"X Deploy\", cokie: v }"),
        expect![[r#"
            cutover.yaml:39:24: deployment_groups[0].preview.header: "X Deploy" is not a valid name: use letters, digits and `-` (such as X-Deploy-Version)
            cutover.yaml:39:36: deployment_groups[0].preview.cokie: unknown field `cokie`; did you mean `cookie`?
        "#]],
    );
}

#[test]
fn custom_config_percentage_is_1_to_99() {
    check(
        "cutover.yaml",
        &quickstart_with("percentage: 20", "percentage: 0"),
        expect![[r#"
            cutover.yaml:27:62: deployment_configs[0].percentage: percentage 0 is out of range; a canary or linear step must be 1 to 99 percent (use AllAtOnce for 100)
        "#]],
    );
    check(
        "cutover.yaml",
        &quickstart_with("percentage: 20", "percentage: 150"),
        expect![[r#"
            cutover.yaml:27:62: deployment_configs[0].percentage: percentage 150 is out of range; a canary or linear step must be 1 to 99 percent (use AllAtOnce for 100)
        "#]],
    );
}

#[test]
fn custom_config_interval_must_be_above_zero_and_short_enough() {
    check(
        "cutover.yaml",
        &quickstart_with("interval: 5s }", "interval: 0s }"),
        expect![[r#"
            cutover.yaml:27:76: deployment_configs[0].interval: interval must be longer than zero; write it like `10s` or `5m`
        "#]],
    );
    check(
        "cutover.yaml",
        &quickstart_with("interval: 5s }", "interval: 0 }"),
        expect![[r#"
            cutover.yaml:27:76: deployment_configs[0].interval: interval must be longer than zero; write it like `10s` or `5m`
        "#]],
    );
    check(
        "cutover.yaml",
        &quickstart_with(
            "type: TimeBasedCanary, percentage: 20, interval: 5s",
            "type: TimeBasedLinear, percentage: 1, interval: 1h",
        ),
        expect![[r#"
            cutover.yaml:27:75: deployment_configs[0].interval: the shift would take 99h, longer than the 2880-minute limit; use a larger percentage or a shorter interval
        "#]],
    );
}

#[test]
fn deployment_config_shapes() {
    let text = quickstart_with(
        "  - { name: quick-canary, type: TimeBasedCanary, percentage: 20, interval: 5s }",
        "  - { name: quick-canary, type: TimeBasedCanary, percentage: 20, interval: 5s }
  - { name: CodeDeployDefault.Mine, type: AllAtOnce }
  - { name: all, type: AllAtOnce, percentage: 10 }
  - { name: half, type: TimeBasedCanary }
  - { name: typo, type: TimeBasedCanery, percentage: 10, interval: 1m }
  - { name: quick-canary, type: AllAtOnce }",
    );
    check(
        "cutover.yaml",
        &text,
        expect![[r#"
            cutover.yaml:28:13: deployment_configs[1].name: `CodeDeployDefault.Mine`: names starting with `CodeDeployDefault.` belong to the built-in configs; pick another name
            cutover.yaml:29:47: deployment_configs[2].percentage: AllAtOnce shifts all traffic at once and takes no percentage; remove it, or use TimeBasedCanary or TimeBasedLinear
            cutover.yaml:30:25: deployment_configs[3].percentage: missing required field `percentage`; TimeBasedCanary needs a percentage and an interval, like `percentage: 20`
            cutover.yaml:30:25: deployment_configs[3].interval: missing required field `interval`; TimeBasedCanary needs a percentage and an interval, like `interval: 5m`
            cutover.yaml:31:25: deployment_configs[4].type: type "TimeBasedCanery" is not AllAtOnce, TimeBasedCanary or TimeBasedLinear; did you mean `TimeBasedCanary`?
            cutover.yaml:32:13: deployment_configs[5].name: duplicate deployment config name `quick-canary` (first on line 27); names must be unique
        "#]],
    );
}

#[test]
fn same_target_group_twice_in_a_group() {
    check(
        "cutover.yaml",
        &quickstart_with(
            "target_groups: [web-blue, web-green]",
            "target_groups: [web-blue, web-blue]",
        ),
        expect![[r#"
            cutover.yaml:34:31: deployment_groups[0].target_groups[1]: `web-blue` is named twice; a deployment group needs two different target groups (blue and green take turns)
        "#]],
    );
    check(
        "cutover.yaml",
        &quickstart_with("target_groups: [web-blue, web-green]", "target_groups: [web-blue]"),
        expect![[r#"
            cutover.yaml:34:20: deployment_groups[0].target_groups: a deployment group needs exactly two target groups (blue and green take turns); found 1
        "#]],
    );
}

#[test]
fn unknown_listener_and_other_unknown_names() {
    check(
        "cutover.yaml",
        &quickstart_with("test_listener: web/test", "test_listener: web/tset")
            .replace(
                "deployment_config: quick-canary",
                "deployment_config: CodeDeployDefault.ECSLinear10PercentEvery1Minute",
            )
            .replace("AfterAllowTestTraffic: smoke-test", "AfterAllowTestTraffic: smoke-tset")
            .replace("service: web\n", "service: wbe\n"),
        expect![[r#"
            cutover.yaml:32:14: deployment_groups[0].service: no service named `wbe`; did you mean `web`?
            cutover.yaml:33:24: deployment_groups[0].deployment_config: no deployment config named `CodeDeployDefault.ECSLinear10PercentEvery1Minute`; did you mean `CodeDeployDefault.ECSLinear10PercentEvery1Minutes`?
            cutover.yaml:36:20: deployment_groups[0].test_listener: no listener named `web/tset`; did you mean `web/test`?
            cutover.yaml:41:30: deployment_groups[0].hooks.AfterAllowTestTraffic: no hook named `smoke-tset`; did you mean `smoke-test`?
        "#]],
    );
    check(
        "cutover.yaml",
        &quickstart_with("production_listener: web/prod", "production_listener: prod"),
        expect![[r#"
            cutover.yaml:35:26: deployment_groups[0].production_listener: "prod" is not a listener reference; write `<load balancer>/<listener>`, like web/prod
        "#]],
    );
}

#[test]
fn duplicate_names() {
    let text = QUICKSTART
        .replace("  - name: web-green\n", "  - name: web-blue\n")
        .replace("{ name: test, port: 8081 }", "{ name: prod, port: 8081 }")
        .replace("test_listener: web/test", "test_listener: web/prod")
        + "  - { name: smoke-test, url: 'http://127.0.0.1:9999/hook' }\n";
    check(
        "cutover.yaml",
        &text,
        expect![[r#"
            cutover.yaml:9:17: load_balancers[0].listeners[1].name: duplicate listener name `prod` (first on line 8); names must be unique
            cutover.yaml:15:11: target_groups[1].name: duplicate target group name `web-blue` (first on line 12); names must be unique
            cutover.yaml:34:31: deployment_groups[0].target_groups[1]: no target group named `web-green`; declared target groups: web-blue
            cutover.yaml:36:20: deployment_groups[0].test_listener: the test listener is the production listener web/prod; use a second listener for test traffic
            cutover.yaml:45:13: hooks[1].name: duplicate hook name `smoke-test` (first on line 44); names must be unique
        "#]],
    );
}

#[test]
fn unknown_keys_get_a_suggestion() {
    let text = quickstart_with("desired_count: 2", "desired_cont: 2").replace(
        "deregistration_delay: 2s\n  - name: web-green",
        "deregistration_delay: 2s\n    healthcheck: {}\n  - name: web-green",
    ) + "pipeline: []\n";
    check(
        "cutover.yaml",
        &text,
        expect![[r#"
            cutover.yaml:15:5: target_groups[0].healthcheck: unknown field `healthcheck`; did you mean `health_check`?
            cutover.yaml:24:5: services[0].desired_cont: unknown field `desired_cont`; did you mean `desired_count`?
            cutover.yaml:46:1: pipeline: unknown field `pipeline`; did you mean `pipelines`?
        "#]],
    );
}

#[test]
fn ports_listener_binds_and_tls() {
    check(
        "cutover.yaml",
        "
load_balancers:
  - name: web
    listeners:
      - { name: zero, port: 0 }
      - { name: big, port: 70000 }
      - { name: a, port: 9000, address: 0.0.0.0, default_action: { fixed_response: { status_code: 404 } } }
      - { name: b, port: 9000, default_action: { fixed_response: { status_code: 404 } } }
      - { name: c, port: 9443, protocol: HTTPS, certificate_file: c.pem, default_action: { fixed_response: { status_code: 200 } } }
      - { name: d, port: 9444, key_file: d.key, address: localhost, default_action: { redirect: { status_code: 301 } } }
      - { name: e, port: 9445, default_action: { forward: nowhere, fixed_response: { status_code: 302 } } }
      - { name: f, port: 9446 }
",
        expect![[r#"
            cutover.yaml:5:17: load_balancers[0].listeners[0].name: listener web/zero has no default_action and no deployment group uses it, so it would serve nothing; add a default_action or name it in a deployment group
            cutover.yaml:5:29: load_balancers[0].listeners[0].port: 0 is out of range: a port must be 1 to 65535
            cutover.yaml:6:17: load_balancers[0].listeners[1].name: listener web/big has no default_action and no deployment group uses it, so it would serve nothing; add a default_action or name it in a deployment group
            cutover.yaml:6:28: load_balancers[0].listeners[1].port: 70000 is out of range: a port must be 1 to 65535
            cutover.yaml:8:26: load_balancers[0].listeners[3].port: 127.0.0.1:9000 clashes with listener web/a on 0.0.0.0:9000 (line 7); each listener needs its own port
            cutover.yaml:9:9: load_balancers[0].listeners[4].key_file: missing required field `key_file`; an HTTPS listener needs a PEM certificate_file and key_file
            cutover.yaml:10:42: load_balancers[0].listeners[5].key_file: `key_file` is only used with `protocol: HTTPS`; add `protocol: HTTPS` or remove the certificate and key
            cutover.yaml:10:58: load_balancers[0].listeners[5].address: "localhost" is not an IP address; write one like 127.0.0.1, 0.0.0.0 or ::1
            cutover.yaml:10:97: load_balancers[0].listeners[5].default_action.redirect: this redirect changes nothing and would loop; set protocol, host, port, path or query
            cutover.yaml:11:48: load_balancers[0].listeners[6].default_action: a default_action has exactly one of `forward`, `fixed_response` or `redirect`
            cutover.yaml:12:17: load_balancers[0].listeners[7].name: listener web/f has no default_action and no deployment group uses it, so it would serve nothing; add a default_action or name it in a deployment group
        "#]],
    );
}

#[test]
fn health_check_ranges() {
    check(
        "cutover.yaml",
        &quickstart_with(
            "health_check: { path: /health, interval: 1s, timeout: 500ms, healthy_threshold: 2, unhealthy_threshold: 2, matcher: \"200-299\" }",
            "health_check: { path: health, interval: 400ms, timeout: 500ms, healthy_threshold: 1, unhealthy_threshold: 11, matcher: \"200-ok\" }",
        )
        .replacen(
            "health_check: { path: /health, interval: 1s, timeout: 500ms",
            "health_check: { path: /health, interval: 1s, timeout: 1s",
            1,
        ),
        expect![[r#"
            cutover.yaml:13:27: target_groups[0].health_check.path: path "health" must start with `/` (and be at most 1024 characters)
            cutover.yaml:13:45: target_groups[0].health_check.interval: interval 400ms is out of range: 1s to 300s (cutover allows below ALB's 5s minimum for local use)
            cutover.yaml:13:87: target_groups[0].health_check.healthy_threshold: 1 is out of range: healthy_threshold must be 2 to 10
            cutover.yaml:13:111: target_groups[0].health_check.unhealthy_threshold: 11 is out of range: unhealthy_threshold must be 2 to 10
            cutover.yaml:13:124: target_groups[0].health_check.matcher: `ok` is not an HTTP status code in matcher `200-ok`
            cutover.yaml:16:59: target_groups[1].health_check.timeout: timeout 1s must be shorter than interval 1s
        "#]],
    );
    check(
        "cutover.yaml",
        &quickstart_with(
            "health_check: { path: /health, interval: 1s, timeout: 500ms, healthy_threshold: 2, unhealthy_threshold: 2, matcher: \"200-299\" }",
            "health_check: { interval: 2s }",
        ),
        expect![[r#"
            cutover.yaml:13:31: target_groups[0].health_check.interval: timeout 5s (the default) must be shorter than interval 2s
        "#]],
    );
}

#[test]
fn group_waits_alarms_and_rollback() {
    let text = quickstart_with(
        "    termination_wait: 5s\n",
        "    termination_wait: 2881\n    ready_wait: 121h\n    hook_timeout: 30\n    alarms: [a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11]\n",
    )
    .replace("[DEPLOYMENT_FAILURE, DEPLOYMENT_STOP_ON_REQUEST]", "[DEPLOYMENT_FAILURE, DEPLOYMENT_STOP_ON_ALARMS, DEPLOYMENT_FAILURE]");
    check(
        "cutover.yaml",
        &text,
        expect![[r#"
            cutover.yaml:37:23: deployment_groups[0].termination_wait: termination_wait 48h1m is longer than 2880 minutes (2 days), CodeDeploy's limit
            cutover.yaml:38:17: deployment_groups[0].ready_wait: ready_wait 121h is longer than 120h, CodeDeploy's limit between install and traffic shift
            cutover.yaml:39:19: deployment_groups[0].hook_timeout: `30` has no unit; write `30s` for seconds or `30m` for minutes
            cutover.yaml:40:13: deployment_groups[0].alarms: 11 alarms; a deployment group watches at most 10
            cutover.yaml:41:41: deployment_groups[0].auto_rollback[1]: "DEPLOYMENT_STOP_ON_ALARMS" is not a rollback event; did you mean `DEPLOYMENT_STOP_ON_ALARM`?
            cutover.yaml:41:68: deployment_groups[0].auto_rollback[2]: DEPLOYMENT_FAILURE is listed twice
        "#]],
    );
}

/// `install_timeout` is how long green has to become healthy: a duration with a unit, more than
/// zero and at most CodeDeploy's 1h for one lifecycle event; left out, the engine's default.
#[test]
fn install_timeout_is_read_and_a_bad_one_is_refused_at_its_value() {
    let text = quickstart_with(
        "    termination_wait: 5s\n",
        "    termination_wait: 5s\n    install_timeout: 90s\n",
    );
    let file = parse_cutover_file("cutover.yaml", &text).unwrap().value;
    assert_eq!(file.deployment_groups[0].install_timeout, Some(Duration::from_secs(90)));
    let plain = quickstart_with("    termination_wait: 5s\n", "    termination_wait: 5s\n");
    let file = parse_cutover_file("cutover.yaml", &plain).unwrap().value;
    assert_eq!(file.deployment_groups[0].install_timeout, None);

    for (value, expected) in [
        (
            "2h",
            expect![[r#"
            cutover.yaml:38:22: deployment_groups[0].install_timeout: 2h is out of range: green may take more than 0s and at most 1h (CodeDeploy's limit for one lifecycle event) to become healthy
        "#]],
        ),
        (
            "0s",
            expect![[r#"
            cutover.yaml:38:22: deployment_groups[0].install_timeout: 0s is out of range: green may take more than 0s and at most 1h (CodeDeploy's limit for one lifecycle event) to become healthy
        "#]],
        ),
        (
            "10",
            expect![[r#"
            cutover.yaml:38:22: deployment_groups[0].install_timeout: `10` has no unit; write `10s` for seconds or `10m` for minutes
        "#]],
        ),
    ] {
        let text = quickstart_with(
            "    termination_wait: 5s\n",
            &format!("    termination_wait: 5s\n    install_timeout: {value}\n"),
        );
        check("cutover.yaml", &text, expected);
    }
}

#[test]
fn services_and_groups_belong_together() {
    check(
        "cutover.yaml",
        "
load_balancers:
  - name: web
    listeners: [{ name: prod, port: 8080 }, { name: test, port: 8081 }]
  - name: other
    listeners:
      - { name: prod, port: 9080, default_action: { fixed_response: { status_code: 503 } } }
target_groups:
  - { name: web-blue }
  - { name: web-green }
  - { name: spare, targets: [127.0.0.1:7000] }
services:
  - name: web
    task_definition: taskdef.json
    load_balancer: { target_group: spare, container_name: web, container_port: 8080 }
  - name: worker
    task_definition: worker.json
    network: backend
  - name: bad
    task_definition: 'my task'
deployment_groups:
  - application: web
    name: web-prod
    service: web
    target_groups: [web-blue, web-green]
    production_listener: web/prod
    test_listener: web/prod
  - application: web
    name: web-prod-2
    service: web
    target_groups: [web-green, spare]
    production_listener: web/test
    test_listener: other/prod
  - application: web
    name: worker
    service: worker
    target_groups: [web-blue, spare]
    production_listener: web/test
",
        expect![[r#"
            cutover.yaml:7:51: load_balancers[1].listeners[0].default_action: listener other/prod is managed by deployment group `web-prod-2`, which sets its forward; remove this default_action
            cutover.yaml:11:29: target_groups[2].targets: target group `spare` gets its targets from a service; remove `targets` (static targets are for groups no service uses)
            cutover.yaml:20:22: services[2].task_definition: "my task" is neither a path to a .json file nor a registered task definition; write `taskdef.json` or `family:revision`
            cutover.yaml:25:20: deployment_groups[0].target_groups: service `web` starts its tasks in target group `spare`, which is not one of this pair; put `spare` in target_groups
            cutover.yaml:27:20: deployment_groups[0].test_listener: the test listener is the production listener web/prod; use a second listener for test traffic
            cutover.yaml:30:14: deployment_groups[1].service: service `web` is already deployed by deployment group `web-prod` (line 24); a service belongs to at most one group
            cutover.yaml:31:21: deployment_groups[1].target_groups[0]: target group `web-green` is already used by deployment group `web-prod` (line 25); each group needs its own pair
            cutover.yaml:33:20: deployment_groups[1].test_listener: the test listener is on load balancer `other` but production is on `web`; both must be on the same load balancer
            cutover.yaml:36:14: deployment_groups[2].service: service `worker` has no load_balancer; a deployment group moves traffic between target groups, so give the service `load_balancer: { target_group: …, container_name: …, container_port: … }`
            cutover.yaml:37:21: deployment_groups[2].target_groups[0]: target group `web-blue` is already used by deployment group `web-prod` (line 25); each group needs its own pair
            cutover.yaml:37:31: deployment_groups[2].target_groups[1]: target group `spare` is already used by deployment group `web-prod-2` (line 31); each group needs its own pair
            cutover.yaml:38:26: deployment_groups[2].production_listener: listener web/test is already managed by deployment group `web-prod-2` (line 32); a listener belongs to at most one group
        "#]],
    );
}

#[test]
fn hooks_have_exactly_one_action() {
    let text = quickstart_with(
        "  - { name: smoke-test, run: \"curl -fsS $CUTOVER_TEST_URL/health\", timeout: 30s }",
        "  - { name: smoke-test, run: \"curl -fsS $CUTOVER_TEST_URL/health\", timeout: 30s }
  - { name: both, run: 'true', command: ['true'] }
  - { name: none }
  - { name: empty, command: [] }
  - { name: web, url: 'ftp://example.test/hook' }
  - { name: long, url: 'http://127.0.0.1:9000/hook', timeout: 2h }",
    );
    check(
        "cutover.yaml",
        &text,
        expect![[r#"
            cutover.yaml:45:5: hooks[1]: a hook has exactly one of `command: [prog, args…]`, `run: "shell command"` or `url: http://…`
            cutover.yaml:46:5: hooks[2]: a hook has exactly one of `command: [prog, args…]`, `run: "shell command"` or `url: http://…`
            cutover.yaml:47:29: hooks[3].command: the command is empty; name the program to run first
            cutover.yaml:48:23: hooks[4].url: "ftp://example.test/hook" is not an http:// or https:// URL
            cutover.yaml:49:63: hooks[5].timeout: 2h is out of range: a hook may run for more than 0s and at most 1h
        "#]],
    );
}

#[test]
fn service_is_checked_against_its_task_definition() {
    let file = parse_cutover_file("cutover.yaml", QUICKSTART).unwrap().value;
    let service = file.service("web").unwrap();
    let td = |port: u16, name: &str| {
        let text = format!(
            r#"{{ "family": "web", "containerDefinitions": [{{ "name": "{name}", "image": "app", "portMappings": [{{ "containerPort": {port} }}] }}] }}"#
        );
        parse_task_definition("taskdef.json", &text).unwrap().value
    };
    assert_eq!(
        config::check_service_against("cutover.yaml", QUICKSTART, service, &td(8080, "web")),
        Ok(())
    );
    let errors = [td(3000, "web"), td(8080, "app")]
        .iter()
        .map(|td| {
            config::check_service_against("cutover.yaml", QUICKSTART, service, td)
                .unwrap_err()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n");
    expect![[r#"
        cutover.yaml:24:83: services[0].load_balancer.container_port: container `web` does not map port 8080; use one of its containerPorts: 3000
        cutover.yaml:24:62: services[0].load_balancer.container_name: task definition `web` has no container named `web`; its containers are: app"#]]
    .assert_eq(&errors);
}

#[test]
fn a_swarm_service_is_accepted_without_a_load_balancer_and_with_one() {
    let taskdef = "taskdef.json";
    let without = format!(
        "services:\n  - {{ name: api, runtime: swarm, task_definition: {taskdef}, desired_count: 4, network: shop }}\n"
    );
    let parsed = parse_cutover_file("cutover.yaml", &without).unwrap().value;
    let api = parsed.service("api").unwrap();
    assert_eq!((api.runtime, api.network.as_deref()), (RuntimeKind::Swarm, Some("shop")));
    // The load balancer on every node of the swarm serves it (docs/swarm.md).
    let with = quickstart_with("    runtime: process", "    runtime: swarm");
    let parsed = parse_cutover_file("cutover.yaml", &with).unwrap().value;
    let service = &parsed.services[0];
    assert_eq!(service.runtime, RuntimeKind::Swarm);
    assert!(service.load_balancer.is_some());
}

#[test]
fn an_https_listener_on_a_swarm_load_balancer_is_refused_at_its_protocol() {
    const FILE: &str = "
load_balancers:
  - name: edge
    listeners:
      - { name: tls, port: 8443, protocol: HTTPS, certificate_file: c.pem, key_file: k.pem }
target_groups:
  - { name: api-blue }
  - { name: api-green }
services:
  - name: api
    runtime: swarm
    task_definition: api.json
    load_balancer: { target_group: api-blue, container_name: web, container_port: 8080 }
deployment_groups:
  - application: api
    name: api-prod
    service: api
    target_groups: [api-blue, api-green]
    production_listener: edge/tls
";
    check(
        "cutover.yaml",
        FILE,
        expect![[r#"
            cutover.yaml:5:44: load_balancers[0].listeners[0].protocol: listener `edge/tls` is HTTPS, but load balancer `edge` serves service `api` (`runtime: swarm`) and so runs on every node of the swarm, where its certificate and key files cannot be read: serve `edge` over HTTP and terminate TLS in front of the nodes, or give the HTTPS listener a load balancer of its own for services not on the swarm
        "#]],
    );
    // The same listener without the swarm: valid.
    let local = FILE.replace("    runtime: swarm\n", "");
    assert!(parse_cutover_file("cutover.yaml", &local).is_ok());
}

#[test]
fn a_load_balancer_serves_swarm_services_or_others_never_both() {
    const FILE: &str = "
load_balancers:
  - name: edge
    listeners: [{ name: prod, port: 8080 }, { name: shop, port: 8082 }]
target_groups:
  - { name: api-blue }
  - { name: api-green }
  - { name: shop-blue }
  - { name: shop-green }
services:
  - name: api
    runtime: swarm
    task_definition: api.json
    load_balancer: { target_group: api-blue, container_name: web, container_port: 8080 }
  - name: shop
    task_definition: shop.json
    load_balancer: { target_group: shop-blue, container_name: web, container_port: 8080 }
deployment_groups:
  - application: api
    name: api-prod
    service: api
    target_groups: [api-blue, api-green]
    production_listener: edge/prod
  - application: shop
    name: shop-prod
    service: shop
    target_groups: [shop-blue, shop-green]
    production_listener: edge/shop
";
    check(
        "cutover.yaml",
        FILE,
        expect![[r#"
            cutover.yaml:28:26: deployment_groups[1].production_listener: load balancer `edge` also serves service `api` (line 23); service `api` runs on the swarm, so `edge` runs on the swarm's nodes, where the tasks of service `shop` (not `runtime: swarm`) cannot be reached: give `shop`'s deployment group a load balancer of its own, or run `shop` with `runtime: swarm` too
        "#]],
    );
    // Each on a load balancer of its own, or both on the swarm: valid.
    let apart = FILE
        .replace(
            ", { name: shop, port: 8082 }]",
            "]\n  - name: own\n    listeners: [{ name: shop, port: 8082 }]",
        )
        .replace("edge/shop", "own/shop");
    assert!(parse_cutover_file("cutover.yaml", &apart).is_ok());
    let both_swarm = FILE.replace("  - name: shop\n", "  - name: shop\n    runtime: swarm\n");
    assert!(parse_cutover_file("cutover.yaml", &both_swarm).is_ok());
}

#[test]
fn apply_sends_the_task_definition_files_of_a_valid_file_only() {
    let is_taskdef = |path: &str| path == "taskdef.json";
    let sent = |text: &str| config::task_definition_files("cutover.yaml", text, is_taskdef);
    assert_eq!(sent(QUICKSTART), vec!["taskdef.json".to_string()]);
    // Not a file where apply runs: the server reports it at its field.
    assert!(config::task_definition_files("cutover.yaml", QUICKSTART, |_| false).is_empty());
    // A file with an error elsewhere sends none, as before: the server reports the error.
    assert!(sent(&quickstart_with("port: 8081", "port: 80810")).is_empty());
    assert!(sent(&quickstart_with("services:", "services: [\n")).is_empty());
    // A family name that happens to be a file is sent too, as `apply` always did.
    let by_family = quickstart_with("task_definition: taskdef.json", "task_definition: web");
    assert_eq!(
        config::task_definition_files("cutover.yaml", &by_family, |p| p == "web"),
        vec!["web".to_string()]
    );
}
