//! The task definitions and AppSpecs of the seed documents load unchanged, to the values they
//! mean, with a note for every AWS-only field.

use std::collections::BTreeMap;

use config::{
    AppSpec, ContainerDefinition, KeyValuePair, PortMapping, TaskDefinition, TaskDefinitionRef,
    check_appspec_against, parse_appspec, parse_task_definition,
};
use expect_test::expect;

use crate::check;

const TASKDEF_000: &str = include_str!("../data/seeds/000-task-definition.json");
const APPSPEC_000: &str = include_str!("../data/seeds/000-appspec.yml");
const TASKDEF_001: &str = include_str!("../data/seeds/001-taskdef.json");
const APPSPEC_001: &str = include_str!("../data/seeds/001-appspec.yaml");
const APPSPEC_001_AS_PUBLISHED: &str = include_str!("../data/seeds/001-appspec-as-published.txt");
const APPSPEC_002: &str = include_str!("../data/seeds/002-appspec.yml");
const APPSPEC_003: &str = include_str!("../data/seeds/003-appspec.json");

fn container(name: &str, image: &str, port: u16) -> ContainerDefinition {
    ContainerDefinition {
        name: name.to_string(),
        image: image.to_string(),
        essential: true,
        command: vec![],
        entry_point: vec![],
        environment: vec![],
        working_directory: None,
        port_mappings: vec![PortMapping {
            container_port: port,
            host_port: Some(port),
            protocol: "tcp".to_string(),
        }],
        health_check: None,
        stop_timeout: None,
        cpu: None,
        memory: None,
        memory_reservation: None,
        depends_on: vec![],
        docker_labels: BTreeMap::new(),
    }
}

#[test]
fn seed_000_task_definition_loads_with_notes_for_aws_fields() {
    let parsed = parse_task_definition("task-definition.json", TASKDEF_000).unwrap();
    assert_eq!(
        parsed.value,
        TaskDefinition {
            family: "d-ecr-blue-green-app".to_string(),
            container_definitions: vec![container(
                "d-ecr-blue-green-app",
                "ACCOUNT-NUMBER.dkr.ecr.us-east-1.amazonaws.com/d-ecr-blue-green-app:latest",
                80,
            )],
            cpu: Some("256".to_string()),
            memory: Some("512".to_string()),
            placement_constraints: vec![],
        }
    );
    check(
        "task-definition.json",
        TASKDEF_000,
        expect![[r#"
            note: task-definition.json:2:5: executionRoleArn: ignored: cutover does not use IAM roles
            note: task-definition.json:17:5: requiresCompatibilities: ignored: cutover runs tasks with its own runtime (process or docker), not EC2 or Fargate
            note: task-definition.json:20:5: networkMode: ignored: cutover gives every task its own address, as awsvpc does
            note: task-definition.json:23:5: runtimePlatform: ignored: tasks run on this machine's own OS and CPU
        "#]],
    );
}

#[test]
fn seed_000_appspec_loads() {
    let parsed = parse_appspec("appspec.yml", APPSPEC_000).unwrap();
    assert_eq!(
        parsed.value,
        AppSpec {
            task_definition: TaskDefinitionRef::Revision {
                family: "d-ecr-blue-green-app".to_string(),
                revision: 1
            },
            container_name: "d-ecr-blue-green-app".to_string(),
            container_port: 80,
            platform_version: Some("LATEST".to_string()),
            hooks: BTreeMap::new(),
        }
    );
    check(
        "appspec.yml",
        APPSPEC_000,
        expect![[r#"
            note: appspec.yml:6:25: Resources[0].TargetService.Properties.TaskDefinition: the region and account of this AWS ARN are ignored; cutover looks up `family:revision` in its own registry
        "#]],
    );
    let td = parse_task_definition("task-definition.json", TASKDEF_000).unwrap().value;
    assert_eq!(check_appspec_against("appspec.yml", APPSPEC_000, &parsed.value, &td), Ok(()));
}

#[test]
fn seed_001_task_definition_loads_and_takes_the_image() {
    let parsed = parse_task_definition("taskdef.json", TASKDEF_001).unwrap();
    let mut web = container("go-blue-green-app", "<IMAGE1_NAME>", 3000);
    web.environment = vec![KeyValuePair { name: "ENV".to_string(), value: "DEPLOY".to_string() }];
    assert_eq!(
        parsed.value,
        TaskDefinition {
            family: "latest".to_string(),
            container_definitions: vec![web],
            cpu: Some("2048".to_string()),
            memory: Some("4096".to_string()),
            placement_constraints: vec![],
        }
    );
    check(
        "taskdef.json",
        TASKDEF_001,
        expect![[r#"
            note: taskdef.json:1:248: taskRoleArn: ignored: cutover does not use IAM roles
            note: taskdef.json:1:313: executionRoleArn: ignored: cutover does not use IAM roles
            note: taskdef.json:1:388: networkMode: ignored: cutover gives every task its own address, as awsvpc does
            note: taskdef.json:1:439: compatibilities: ignored: describe-only field written by ECS; cutover numbers revisions itself
            note: taskdef.json:1:477: requiresCompatibilities: ignored: cutover runs tasks with its own runtime (process or docker), not EC2 or Fargate
            note: taskdef.json:1:547: runtimePlatform: ignored: tasks run on this machine's own OS and CPU
        "#]],
    );
    let mut td = parsed.value;
    let uri = "registry.local/go-blue-green-app:abc1234";
    assert_eq!(config::substitute_image_placeholder(&mut td, "IMAGE1_NAME", uri), 1);
    assert_eq!(td.container("go-blue-green-app").unwrap().image, uri);
    assert_eq!(config::substitute_image_placeholder(&mut td, "<IMAGE1_NAME>", uri), 0);
}

#[test]
fn seed_001_appspec_loads_and_matches_its_task_definition() {
    let parsed = parse_appspec("appspec.yaml", APPSPEC_001).unwrap();
    assert_eq!(
        parsed.value,
        AppSpec {
            task_definition: TaskDefinitionRef::Placeholder("<TASK_DEFINITION>".to_string()),
            container_name: "go-blue-green-app".to_string(),
            container_port: 3000,
            platform_version: Some("LATEST".to_string()),
            hooks: BTreeMap::new(),
        }
    );
    check(
        "appspec.yaml",
        APPSPEC_001,
        expect![[r#"
            ok
        "#]],
    );
    let td = parse_task_definition("taskdef.json", TASKDEF_001).unwrap().value;
    assert_eq!(check_appspec_against("appspec.yaml", APPSPEC_001, &parsed.value, &td), Ok(()));
}

#[test]
fn seed_001_appspec_as_flattened_by_the_web_page_is_refused_with_a_position() {
    check(
        "appspec.yaml",
        APPSPEC_001_AS_PUBLISHED,
        expect![[r#"
            appspec.yaml:1:43: invalid YAML: mapping values are not allowed in this context; is a `: ` inside an unquoted value (quote it), or is the indentation off?
        "#]],
    );
}

#[test]
fn seed_002_appspec_loads_with_a_note_on_the_bare_placeholder() {
    let parsed = parse_appspec("appspec.yml", APPSPEC_002).unwrap();
    assert_eq!(
        parsed.value.task_definition,
        TaskDefinitionRef::Latest { family: "TASK_DEFINITION".to_string() }
    );
    check(
        "appspec.yml",
        APPSPEC_002,
        expect![[r#"
            note: appspec.yml:6:24: Resources[0].TargetService.Properties.TaskDefinition: `TASK_DEFINITION` is read as a task-definition family; if it is meant as a placeholder, write it as <TASK_DEFINITION>
        "#]],
    );
}

#[test]
fn seed_003_appspec_template_loads_and_is_refused_until_filled_in() {
    let parsed = parse_appspec("appspec.json", APPSPEC_003).unwrap();
    assert_eq!(
        parsed.value,
        AppSpec {
            task_definition: TaskDefinitionRef::Placeholder("<TASK_ARN>".to_string()),
            container_name: "<CONTAINER_NAME>".to_string(),
            container_port: 0,
            platform_version: None,
            hooks: BTreeMap::new(),
        }
    );
    check(
        "appspec.json",
        APPSPEC_003,
        expect![[r#"
            note: appspec.json:1:1: version: no `version`; read as AppSpec version 0.0, the only one (add `version: 0.0`)
            note: appspec.json:9:18: Resources[0].TargetService.Properties.LoadBalancerInfo.ContainerName: <CONTAINER_NAME> is a placeholder; replace it with the container name before deploying
            note: appspec.json:10:18: Resources[0].TargetService.Properties.LoadBalancerInfo.ContainerPort: <CONTAINER_PORT> is a placeholder; replace it with the port number before deploying
        "#]],
    );
    // What the seed's workflow does next: sed fills in the name and the port (quoted).
    let filled = APPSPEC_003
        .replace("<CONTAINER_NAME>", "go-blue-green-app")
        .replace("<CONTAINER_PORT>", "3000");
    let filled_spec = parse_appspec("appspec.json", &filled).unwrap();
    assert_eq!(filled_spec.value.container_port, 3000);
    let td = parse_task_definition("taskdef.json", TASKDEF_001).unwrap().value;
    assert_eq!(check_appspec_against("appspec.json", &filled, &filled_spec.value, &td), Ok(()));
    let unfilled = check_appspec_against("appspec.json", APPSPEC_003, &parsed.value, &td);
    expect!["appspec.json:9:18: Resources[0].TargetService.Properties.LoadBalancerInfo.ContainerName: task definition `latest` has no container named `<CONTAINER_NAME>` (the placeholder was not replaced); its containers are: go-blue-green-app"]
    .assert_eq(&unfilled.unwrap_err().to_string());
}

#[test]
fn task_definitions_round_trip_through_their_ecs_json_form() {
    for text in [TASKDEF_000, TASKDEF_001] {
        let td = parse_task_definition("taskdef.json", text).unwrap().value;
        let json = td.to_json_pretty();
        assert_eq!(parse_task_definition("stored.json", &json).unwrap().value, td);
        assert_eq!(serde_json::from_str::<TaskDefinition>(&json).unwrap(), td);
    }
}
