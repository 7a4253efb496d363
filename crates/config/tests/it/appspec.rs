//! AppSpec errors (YAML and JSON), and the check of an AppSpec against its task definition.

use std::collections::BTreeMap;

use config::{check_appspec_against, parse_appspec, parse_task_definition};
use expect_test::{Expect, expect};
use model::LifecycleEvent;

use crate::check;

const TASKDEF: &str = r#"{
  "family": "web",
  "containerDefinitions": [
    { "name": "web", "image": "<IMAGE1_NAME>", "portMappings": [{ "containerPort": 8080 }, { "containerPort": 9090 }] },
    { "name": "log-router", "image": "fluent-bit", "essential": false }
  ]
}"#;

/// Parses the AppSpec, then checks it against [`TASKDEF`].
#[track_caller]
fn check_against(appspec: &str, expect: Expect) {
    let td = parse_task_definition("taskdef.json", TASKDEF).unwrap().value;
    let spec = parse_appspec("appspec.yaml", appspec).unwrap().value;
    let rendered = match check_appspec_against("appspec.yaml", appspec, &spec, &td) {
        Ok(()) => "ok\n".to_string(),
        Err(errors) => errors.to_string() + "\n",
    };
    expect.assert_eq(&rendered);
}

const GOOD: &str = "version: 0.0
Resources:
  - TargetService:
      Type: AWS::ECS::Service
      Properties:
        TaskDefinition: web:3
        LoadBalancerInfo:
          ContainerName: web
          ContainerPort: 8080
Hooks:
  - BeforeInstall: prepare
  - AfterAllowTestTraffic: smoke-test
";

#[test]
fn a_complete_appspec_parses_with_its_hooks() {
    let spec = parse_appspec("appspec.yaml", GOOD).unwrap();
    assert_eq!(spec.notes, vec![]);
    assert_eq!(
        spec.value.hooks,
        BTreeMap::from([
            (LifecycleEvent::BeforeInstall, "prepare".to_string()),
            (LifecycleEvent::AfterAllowTestTraffic, "smoke-test".to_string()),
        ])
    );
    check_against(GOOD, expect!["ok\n"]);
}

#[test]
fn container_named_by_the_appspec_must_exist_in_the_task_definition() {
    check_against(
        &GOOD.replace("ContainerName: web", "ContainerName: wbe"),
        expect![[r#"
            appspec.yaml:8:26: Resources[0].TargetService.Properties.LoadBalancerInfo.ContainerName: task definition `web` has no container named `wbe`; did you mean `web`?
        "#]],
    );
    check_against(
        &GOOD.replace("ContainerName: web", "ContainerName: api"),
        expect![[r#"
            appspec.yaml:8:26: Resources[0].TargetService.Properties.LoadBalancerInfo.ContainerName: task definition `web` has no container named `api`; its containers are: web, log-router
        "#]],
    );
}

#[test]
fn container_port_must_be_mapped_by_that_container() {
    check_against(
        &GOOD.replace("ContainerPort: 8080", "ContainerPort: 80"),
        expect![[r#"
            appspec.yaml:9:26: Resources[0].TargetService.Properties.LoadBalancerInfo.ContainerPort: container `web` does not map port 80; use one of its containerPorts: 8080, 9090
        "#]],
    );
    check_against(
        &GOOD.replace("ContainerName: web", "ContainerName: log-router"),
        expect![[r#"
            appspec.yaml:9:26: Resources[0].TargetService.Properties.LoadBalancerInfo.ContainerPort: container `log-router` does not map port 8080; it has no portMappings: add { "containerPort": 8080 } to it in the task definition
        "#]],
    );
}

#[test]
fn container_port_must_be_1_to_65535() {
    check(
        "appspec.yaml",
        &GOOD.replace("ContainerPort: 8080", "ContainerPort: 0"),
        expect![[r#"
            appspec.yaml:9:26: Resources[0].TargetService.Properties.LoadBalancerInfo.ContainerPort: 0 is out of range: a port must be 1 to 65535
        "#]],
    );
    check(
        "appspec.yaml",
        &GOOD.replace("ContainerPort: 8080", "ContainerPort: 70000"),
        expect![[r#"
            appspec.yaml:9:26: Resources[0].TargetService.Properties.LoadBalancerInfo.ContainerPort: 70000 is out of range: a port must be 1 to 65535
        "#]],
    );
    check(
        "appspec.yaml",
        &GOOD.replace("ContainerPort: 8080", "ContainerPort: eighty"),
        expect![[r#"
            appspec.yaml:9:26: Resources[0].TargetService.Properties.LoadBalancerInfo.ContainerPort: expected integer, found string "eighty"
        "#]],
    );
}

#[test]
fn json_appspec_errors_have_positions_and_paths() {
    check(
        "appspec.json",
        r#"{
  "version": 0.0,
  "Resources": [
    {
      "TargetService": {
        "Type": "AWS::ECS::Service",
        "Properties": {
          "TaskDefinition": "arn:aws:ecs:us-east-1:111122223333:task-definition/web",
          "LoadBalancerInfo": { "ContainerName": "web", "ContainerPort": 70000 },
          "NetworkConfiguration": { "AwsvpcConfiguration": { "Subnets": ["subnet-1"], "SecurityGroups": ["sg-1"], "AssignPublicIp": "DISABLED" } }
        }
      }
    }
  ],
  "Hooks": [
    { "BeforeInstall": "prepare" },
    { "AfterAllowTestTrafic": "smoke" },
    { "Install": "x" },
    { "beforeinstall": "again" },
    { "AfterAllowTraffic": "" }
  ]
}"#,
        expect![[r#"
            appspec.json:8:29: Resources[0].TargetService.Properties.TaskDefinition: the ARN "arn:aws:ecs:us-east-1:111122223333:task-definition/web" has no revision; add `:<revision>`, or write just `web` for the latest revision
            appspec.json:9:74: Resources[0].TargetService.Properties.LoadBalancerInfo.ContainerPort: 70000 is out of range: a port must be 1 to 65535
            appspec.json:17:7: Hooks[1].AfterAllowTestTrafic: `AfterAllowTestTrafic` is not a lifecycle event; did you mean `AfterAllowTestTraffic`?
            appspec.json:18:7: Hooks[2].Install: Install is run by cutover itself and takes no hook; hooks run at BeforeInstall, AfterInstall, AfterAllowTestTraffic, BeforeAllowTraffic, AfterAllowTraffic
            appspec.json:19:7: Hooks[3].beforeinstall: a second hook for BeforeInstall (the first is on line 16); one hook per event
            appspec.json:20:28: Hooks[4].AfterAllowTraffic: must not be empty
        "#]],
    );
}

#[test]
fn json_appspec_parses_like_yaml() {
    let json = r#"{"version": "0.0", "Resources": [{"TargetService": {"Type": "AWS::ECS::Service",
      "Properties": {"TaskDefinition": "arn:cutover:ecs:task-definition/web:3",
      "LoadBalancerInfo": {"ContainerName": "web", "ContainerPort": 8080}}}}],
      "Hooks": [{"BeforeInstall": "prepare"}, {"AfterAllowTestTraffic": "smoke-test"}]}"#;
    let from_json = parse_appspec("appspec.json", json).unwrap().value;
    assert_eq!(from_json, parse_appspec("appspec.yaml", GOOD).unwrap().value);
}

#[test]
fn keys_are_matched_ignoring_case_but_not_twice() {
    let lower = GOOD
        .replace("Resources:", "resources:")
        .replace("TaskDefinition:", "taskDefinition:")
        .replace("Hooks:", "hooks:");
    assert_eq!(
        parse_appspec("appspec.yaml", &lower).unwrap().value,
        parse_appspec("appspec.yaml", GOOD).unwrap().value
    );
    check(
        "appspec.yaml",
        &format!("{GOOD}Version: 0.0\n"),
        expect![[r#"
            appspec.yaml:13:1: Version: `Version` repeats `version` from line 1 (keys are matched ignoring case); keep one
        "#]],
    );
}

#[test]
fn structure_errors() {
    check(
        "appspec.yaml",
        "version: 1.0
Resources:
  - TargetService:
      Type: AWS::Lambda::Function
      Properties:
        TaskDefinition: web:latest
        LoadBalancerInfo:
          ContainerName: web
  - Other:
      Type: AWS::ECS::Service
Hooks:
  BeforeInstall: prepare
Extra: 1
",
        expect![[r#"
            appspec.yaml:1:10: version: found number 1.0; the AppSpec version must be 0.0, the only one
            appspec.yaml:4:13: Resources[0].TargetService.Type: Type "AWS::Lambda::Function" is not supported; cutover deploys ECS services: write AWS::ECS::Service
            appspec.yaml:6:25: Resources[0].TargetService.Properties.TaskDefinition: "web:latest" names no revision; write just `web` for the latest revision
            appspec.yaml:8:11: Resources[0].TargetService.Properties.LoadBalancerInfo.ContainerPort: missing required field `ContainerPort`; add the port the container listens on, as a number
            appspec.yaml:9:5: Resources[1]: a second resource; an ECS AppSpec deploys exactly one AWS::ECS::Service, remove the others
            appspec.yaml:12:3: Hooks: expected list, found map; Hooks is a list of one-entry maps, like `- BeforeInstall: my-hook`
            appspec.yaml:13:1: Extra: unknown field `Extra`; expected one of: version, Resources, Hooks
        "#]],
    );
    check(
        "appspec.yaml",
        "version: 0.0\nResources:\n  - TargetService:\n      Type: AWS::ECS::Service\n",
        expect![[r#"
            appspec.yaml:4:7: Resources[0].TargetService.Properties: missing required field `Properties`; add `Properties:` with TaskDefinition and LoadBalancerInfo
        "#]],
    );
}
