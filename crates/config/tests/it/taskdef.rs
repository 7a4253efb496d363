//! Task definition errors, as `cutover validate taskdef.json` prints them.

use expect_test::expect;

use crate::check;

#[test]
fn wrong_type_names_the_field_and_the_fix() {
    check(
        "taskdef.json",
        r#"{
  "family": "web",
  "containerDefinitions": [
    {
      "name": "web",
      "image": "nginx:1.27",
      "portMappings": [{ "containerPort": "3000" }],
      "essential": "yes"
    }
  ]
}"#,
        expect![[r#"
            taskdef.json:7:43: containerDefinitions[0].portMappings[0].containerPort: expected integer, found string "3000"; write the number without quotes: 3000
            taskdef.json:8:20: containerDefinitions[0].essential: expected boolean, found string "yes"; write true or false
        "#]],
    );
}

#[test]
fn missing_required_fields_point_at_their_object() {
    check(
        "taskdef.json",
        r#"{
  "containerDefinitions": [
    { "name": "web", "portMappings": [{ "hostPort": 80 }] }
  ]
}"#,
        expect![[r#"
            taskdef.json:1:1: family: missing required field `family`; add "family": "<name>"; the revisions of one family share it
            taskdef.json:3:5: containerDefinitions[0].image: missing required field `image`; add "image": "<repository>:<tag>" (or a placeholder like "<IMAGE1_NAME>")
            taskdef.json:3:39: containerDefinitions[0].portMappings[0].containerPort: missing required field `containerPort`; add "containerPort": <the port the container listens on>
        "#]],
    );
}

#[test]
fn unknown_fields_get_a_suggestion() {
    check(
        "taskdef.json",
        r#"{
  "family": "web",
  "ContainerDefinitions": [],
  "containerDefinitions": [
    {
      "name": "web",
      "image": "nginx:1.27",
      "portMappings": [{ "contianerPort": 80 }],
      "memoryReservaton": 128,
      "frobnicate": true
    }
  ]
}"#,
        expect![[r#"
            taskdef.json:3:3: ContainerDefinitions: unknown field `ContainerDefinitions`; did you mean `containerDefinitions`? (field names are case-sensitive)
            taskdef.json:8:26: containerDefinitions[0].portMappings[0].contianerPort: unknown field `contianerPort`; did you mean `containerPort`?
            taskdef.json:9:7: containerDefinitions[0].memoryReservaton: unknown field `memoryReservaton`; did you mean `memoryReservation`?
            taskdef.json:10:7: containerDefinitions[0].frobnicate: unknown field `frobnicate`; expected one of: name, image, essential, command, entryPoint, environment, workingDirectory, portMappings, healthCheck, stopTimeout, cpu, memory, memoryReservation, dependsOn, dockerLabels
        "#]],
    );
}

#[test]
fn ports_must_be_1_to_65535() {
    check(
        "taskdef.json",
        r#"{
  "family": "web",
  "containerDefinitions": [
    {
      "name": "web",
      "image": "nginx:1.27",
      "portMappings": [{ "containerPort": 0 }, { "containerPort": 70000 }, { "containerPort": 8080, "hostPort": 9090 }]
    }
  ]
}"#,
        expect![[r#"
            taskdef.json:7:43: containerDefinitions[0].portMappings[0].containerPort: 0 is out of range: a port must be 1 to 65535
            taskdef.json:7:67: containerDefinitions[0].portMappings[1].containerPort: 70000 is out of range: a port must be 1 to 65535
            taskdef.json:7:113: containerDefinitions[0].portMappings[2].hostPort: hostPort 9090 differs from containerPort 8080; cutover gives each task its own address (as awsvpc does), so leave hostPort out or set it to 8080
        "#]],
    );
}

#[test]
fn container_rules_across_the_task() {
    check(
        "taskdef.json",
        r#"{
  "family": "web app",
  "containerDefinitions": [
    { "name": "web", "image": "nginx", "essential": false, "memory": 256, "memoryReservation": 512,
      "dependsOn": [{ "containerName": "migrate", "condition": "SUCCESS" }, { "containerName": "sidecr", "condition": "START" }] },
    { "name": "migrate", "image": "app:1", "essential": false,
      "dependsOn": [{ "containerName": "web", "condition": "HEALTHY" }] },
    { "name": "web", "image": "nginx", "essential": false }
  ]
}"#,
        expect![[r#"
            taskdef.json:2:13: family: "web app" is not a valid family name: use 1 to 255 letters, digits, `-` and `_`
            taskdef.json:3:27: containerDefinitions: no container is essential; mark at least one with "essential": true (the default)
            taskdef.json:4:96: containerDefinitions[0].memoryReservation: memoryReservation 512 MiB is above memory 256 MiB; the soft limit must not exceed the hard limit
            taskdef.json:5:96: containerDefinitions[0].dependsOn[1].containerName: no container named `sidecr` in this task definition; the containers are: migrate, web
            taskdef.json:7:60: containerDefinitions[1].dependsOn[0].condition: HEALTHY needs a healthCheck on `web`, and it has none; add one or use START
            taskdef.json:8:15: containerDefinitions[2].name: container name `web` is used twice (first on line 4); container names must be unique
        "#]],
    );
}

#[test]
fn dependencies_on_essential_containers_must_not_wait_for_exit() {
    check(
        "taskdef.json",
        r#"{
  "family": "web",
  "containerDefinitions": [
    { "name": "web", "image": "nginx", "dependsOn": [{ "containerName": "db", "condition": "COMPLETE" }] },
    { "name": "db", "image": "postgres:16" }
  ]
}"#,
        expect![[r#"
            taskdef.json:4:92: containerDefinitions[0].dependsOn[0].condition: COMPLETE waits for `db` to exit, but it is essential (a task stops when an essential container exits); set "essential": false on `db` or use START
        "#]],
    );
}

#[test]
fn dependency_cycles_are_refused() {
    check(
        "taskdef.json",
        r#"{
  "family": "web",
  "containerDefinitions": [
    { "name": "web", "image": "nginx", "dependsOn": [{ "containerName": "proxy", "condition": "START" }] },
    { "name": "proxy", "image": "envoy", "dependsOn": [{ "containerName": "web", "condition": "START" }] },
    { "name": "init", "image": "busybox", "essential": false, "dependsOn": [{ "containerName": "init", "condition": "START" }] }
  ]
}"#,
        expect![[r#"
            taskdef.json:4:73: containerDefinitions[0].dependsOn[0].containerName: `web` waits for `proxy`, which waits (directly or not) for `web`: a dependsOn cycle, so neither would start
            taskdef.json:5:75: containerDefinitions[1].dependsOn[0].containerName: `proxy` waits for `web`, which waits (directly or not) for `proxy`: a dependsOn cycle, so neither would start
            taskdef.json:6:96: containerDefinitions[2].dependsOn[0].containerName: a container cannot depend on itself
        "#]],
    );
}

#[test]
fn health_checks_follow_ecs_ranges() {
    check(
        "taskdef.json",
        r#"{
  "family": "web",
  "containerDefinitions": [
    { "name": "web", "image": "nginx",
      "healthCheck": { "command": ["curl", "-f", "http://localhost/"], "interval": 1, "timeout": 61, "retries": 0, "startPeriod": 301 } },
    { "name": "api", "image": "api",
      "healthCheck": { "command": ["CMD-SHELL", "curl -f http://localhost/", "|| exit 1"] } }
  ]
}"#,
        expect![[r#"
            taskdef.json:5:35: containerDefinitions[0].healthCheck.command: the first element is "curl"; it must be "CMD" (run a program) or "CMD-SHELL" (run a shell command)
            taskdef.json:5:84: containerDefinitions[0].healthCheck.interval: 1 is out of range: interval (seconds) must be 5 to 300
            taskdef.json:5:98: containerDefinitions[0].healthCheck.timeout: 61 is out of range: timeout (seconds) must be 2 to 60
            taskdef.json:5:113: containerDefinitions[0].healthCheck.retries: 0 is out of range: retries must be 1 to 10
            taskdef.json:5:131: containerDefinitions[0].healthCheck.startPeriod: 301 is out of range: startPeriod (seconds) must be 0 to 300
            taskdef.json:7:35: containerDefinitions[1].healthCheck.command: "CMD-SHELL" must be followed by exactly one shell command string
        "#]],
    );
}

#[test]
fn task_level_sizes_are_strings_as_in_ecs() {
    check(
        "taskdef.json",
        r#"{ "family": "web", "cpu": 256, "memory": "lots",
  "containerDefinitions": [{ "name": "web", "image": "nginx" }] }"#,
        expect![[r#"
            taskdef.json:1:27: cpu: expected string, found integer 256; put it in quotes to make it a string
            taskdef.json:1:42: memory: "lots" is not a size ECS understands: write a whole number like "512" or "2 GB"
        "#]],
    );
}

#[test]
fn a_task_has_one_to_ten_containers() {
    let containers: Vec<String> =
        (0..11).map(|i| format!(r#"{{ "name": "c{i}", "image": "nginx" }}"#)).collect();
    let text =
        format!(r#"{{ "family": "web", "containerDefinitions": [{}] }}"#, containers.join(", "));
    check(
        "taskdef.json",
        &text,
        expect![[r#"
            taskdef.json:1:44: containerDefinitions: a task definition has 1 to 10 containers; this one has 11
        "#]],
    );
    check(
        "taskdef.json",
        r#"{ "family": "web", "containerDefinitions": [] }"#,
        expect![[r#"
            taskdef.json:1:44: containerDefinitions: a task definition has 1 to 10 containers; this one has 0
        "#]],
    );
}

#[test]
fn json_syntax_errors_name_the_path_and_the_mistake() {
    check(
        "taskdef.json",
        r#"{
  "family": "web",
  "containerDefinitions": [
    { "name": "web", "image": "nginx", },
  ]
}"#,
        expect![[r#"
            taskdef.json:4:40: containerDefinitions[0]: trailing comma before `}`; JSON does not allow it, remove the comma
        "#]],
    );
    check(
        "taskdef.json",
        "family: web\ncontainerDefinitions: []\n",
        expect![[r#"
            taskdef.json:1:1: expected a JSON object starting with `{`; a task definition is written in JSON, as ECS reads it
        "#]],
    );
}

#[test]
fn console_exports_load_with_notes() {
    // What "copy the JSON from the console" (seed 002) gives: describe-only fields and defaults.
    check(
        "taskdef.json",
        r#"{
    "taskDefinitionArn": "arn:aws:ecs:eu-west-1:123456789012:task-definition/web:7",
    "containerDefinitions": [
        {
            "name": "web",
            "image": "<IMAGE>",
            "cpu": 0,
            "portMappings": [{ "name": "web-80-tcp", "containerPort": 80, "hostPort": 80, "protocol": "tcp", "appProtocol": "http" }],
            "essential": true,
            "environment": [],
            "mountPoints": [],
            "volumesFrom": [],
            "secrets": [{ "name": "DB_PASSWORD", "valueFrom": "arn:aws:ssm:eu-west-1:123456789012:parameter/db" }],
            "logConfiguration": { "logDriver": "awslogs", "options": { "awslogs-group": "/ecs/web" } },
            "dockerLabels": { "com.example.team": "web" }
        }
    ],
    "family": "web",
    "revision": 7,
    "status": "ACTIVE",
    "registeredAt": "2024-01-01T00:00:00Z"
}"#,
        expect![[r#"
            note: taskdef.json:2:5: taskDefinitionArn: ignored: describe-only field written by ECS; cutover numbers revisions itself
            note: taskdef.json:8:32: containerDefinitions[0].portMappings[0].name: ignored: port names are for ECS Service Connect, which cutover does not have
            note: taskdef.json:8:110: containerDefinitions[0].portMappings[0].appProtocol: ignored: cutover's load balancer speaks HTTP/1.1 and HTTP/2 without being told
            note: taskdef.json:11:13: containerDefinitions[0].mountPoints: ignored: cutover does not mount volumes into tasks yet
            note: taskdef.json:12:13: containerDefinitions[0].volumesFrom: ignored: cutover does not mount volumes into tasks yet
            note: taskdef.json:13:13: containerDefinitions[0].secrets: ignored: cutover has no secrets store yet, so these variables are not set; use `environment`
            note: taskdef.json:14:13: containerDefinitions[0].logConfiguration: ignored: cutover keeps task output in its own log files
            note: taskdef.json:19:5: revision: ignored: describe-only field written by ECS; cutover numbers revisions itself
            note: taskdef.json:20:5: status: ignored: describe-only field written by ECS; cutover numbers revisions itself
            note: taskdef.json:21:5: registeredAt: ignored: describe-only field written by ECS; cutover numbers revisions itself
        "#]],
    );
}

#[test]
fn member_of_constraints_on_one_node_attribute_become_swarm_node_label_constraints() {
    let text = r#"{"family": "web", "containerDefinitions": [{"name": "web", "image": "w"}],
  "placementConstraints": [
    {"type": "memberOf", "expression": "attribute:zone == b"},
    {"type": "memberOf", "expression": "attribute:disk != hdd"}]}"#;
    let td = config::parse_task_definition("taskdef.json", text).unwrap().value;
    let swarm: Vec<String> =
        td.placement_constraints.iter().filter_map(|c| c.swarm_constraint()).collect();
    assert_eq!(swarm, ["node.labels.zone==b", "node.labels.disk!=hdd"]);
    check(
        "taskdef.json",
        text,
        expect![[r#"
            note: taskdef.json:2:27: placementConstraints: used by the swarm runtime (node labels); the process and docker runtimes run tasks on one machine and ignore it
        "#]],
    );
    check(
        "taskdef.json",
        r#"{"family": "web", "containerDefinitions": [{"name": "web", "image": "w"}],
  "placementConstraints": [
    {"type": "distinctInstance"},
    {"type": "memberOf", "expression": "attribute:ecs.availability-zone in [a, b]"},
    {"type": "memberOf", "expresion": "attribute:zone == b"}]}"#,
        expect![[r#"
            taskdef.json:3:14: placementConstraints[0].type: "distinctInstance" is not supported: cutover reads `memberOf` constraints (`distinctInstance` is not supported yet)
            taskdef.json:4:40: placementConstraints[1].expression: "attribute:ecs.availability-zone in [a, b]": cutover reads `attribute:NAME == VALUE` or `attribute:NAME != VALUE` (one node attribute; ECS's `in`, `=~`, `and`, `or` and `task:group` are not supported)
            taskdef.json:5:26: placementConstraints[2].expresion: unknown field `expresion`; did you mean `expression`?
        "#]],
    );
}
