//! Every diagnostic has a real position: missing fields at the map that lacks them, oversized
//! files at 1:1, control characters named as such at their own line and column, and columns
//! counted in characters as editors count them whatever comes before (tabs, CRLF line ends,
//! multi-byte UTF-8).

use expect_test::expect;

use crate::{check, render};

const TARGET_GROUPS: &str = "target_groups:\n  - name: web-blue\n  - name: web-green\n";

#[test]
fn an_appspec_port_without_its_container_name_is_reported_at_the_map_that_lacks_it() {
    check(
        "appspec.yaml",
        "version: 0.0
Resources:
  - TargetService:
      Type: AWS::ECS::Service
      Properties:
        TaskDefinition: web:3
        LoadBalancerInfo:
          ContainerPort: 8080
",
        expect![[r#"
            appspec.yaml:8:11: Resources[0].TargetService.Properties.LoadBalancerInfo.ContainerName: missing required field `ContainerName`; name the container of the task definition that takes the traffic
        "#]],
    );
    check(
        "appspec.json",
        r#"{"version": 0.0, "Resources": [{"TargetService": {"Type": "AWS::ECS::Service",
  "Properties": {"TaskDefinition": "web:3", "LoadBalancerInfo": {"ContainerName": "web"}}}}]}"#,
        expect![[r#"
            appspec.json:2:65: Resources[0].TargetService.Properties.LoadBalancerInfo.ContainerPort: missing required field `ContainerPort`; add the port the container listens on, as a number
        "#]],
    );
}

#[test]
fn a_service_load_balancer_without_its_container_name_is_reported_at_the_map_that_lacks_it() {
    check(
        "cutover.yaml",
        &format!(
            "{TARGET_GROUPS}services:
  - name: web
    task_definition: web:1
    load_balancer:
      target_group: web-blue
      container_port: 8080
"
        ),
        expect![[r#"
            cutover.yaml:8:7: services[0].load_balancer.container_name: missing required field `container_name`; name the container of the task definition that takes the traffic
        "#]],
    );
}

#[test]
fn a_misspelt_field_is_still_reported_once_as_a_misspelling() {
    check(
        "cutover.yaml",
        &format!(
            "{TARGET_GROUPS}services:
  - name: web
    task_definition: web:1
    load_balancer: {{ target_group: web-blue, container_nme: web, container_port: 8080 }}
"
        ),
        expect![[r#"
            cutover.yaml:7:46: services[0].load_balancer.container_nme: unknown field `container_nme`; did you mean `container_name`?
        "#]],
    );
}

#[test]
fn an_oversized_file_is_reported_at_1_1_with_its_size_and_the_limit() {
    let rendered = [
        render(config::check_file_size("big.yaml", 50 * 1024 * 1024).map(|()| vec![])),
        render(config::validate("cutover.yaml", &" ".repeat(config::FILE_SIZE_MAX + 1))),
    ]
    .concat();
    expect![[r#"
        big.yaml:1:1: the file is 50.0 MiB (52428800 bytes), more than the 1 MiB (1048576-byte) limit; is this the right file?
        cutover.yaml:1:1: the file is 1.0 MiB (1048577 bytes), more than the 1 MiB (1048576-byte) limit; is this the right file?
    "#]].assert_eq(&rendered);
}

#[test]
fn a_nul_byte_is_named_at_its_own_line_and_column() {
    check(
        "cutover.yaml",
        "services:\n  - name: w\0eb\n",
        expect![[r#"
        cutover.yaml:2:12: a NUL character (U+0000), which YAML does not allow; remove it (is this a binary file, or one saved as UTF-16?)
    "#]],
    );
    check(
        "cutover.yaml",
        "services:\n  - name: web\n\0  - name: x\n",
        expect![[r#"
        cutover.yaml:3:1: a NUL character (U+0000), which YAML does not allow; remove it (is this a binary file, or one saved as UTF-16?)
    "#]],
    );
    check(
        "appspec.yaml",
        "version: 0.0\nResources: []\n# \u{7}\n",
        expect![[r#"
        appspec.yaml:3:3: control character U+0007, which YAML does not allow; remove it (inside double quotes it can be written as an escape, like "\x07")
    "#]],
    );
    check(
        "taskdef.json",
        "{\n  \"family\":\0 \"ab\"}\n",
        expect![[r#"
        taskdef.json:2:12: family: expected a value, found a NUL character (U+0000)
    "#]],
    );
}

#[test]
fn a_tab_at_the_start_of_a_line_is_reported_there() {
    let file = format!(
        "{TARGET_GROUPS}services:
  - name: web
    task_definition: web:1
    load_balancer:
      target_group: web-blue
\tcontainer_name: web
"
    );
    assert_eq!(file.lines().nth(8), Some("\tcontainer_name: web"));
    check(
        "cutover.yaml",
        &file,
        expect![[r#"
        cutover.yaml:9:1: services[0].load_balancer.target_group: invalid YAML: while scanning a plain scalar, found a tab; indent with spaces, YAML does not allow tabs there
    "#]],
    );
    check(
        "cutover.yaml",
        &file.replace('\n', "\r\n"),
        expect![[r#"
        cutover.yaml:9:1: services[0].load_balancer.target_group: invalid YAML: while scanning a plain scalar, found a tab; indent with spaces, YAML does not allow tabs there
    "#]],
    );
}

#[test]
fn columns_count_characters_after_tabs_crlf_and_multibyte_text() {
    check(
        "cutover.yaml",
        "services:\r\n  - name: 日本語\r\n    desired_count: 日本\r\n",
        expect![[r#"
        cutover.yaml:2:5: services[0].task_definition: missing required field `task_definition`; add `task_definition: taskdef.json` (a path relative to this file) or a registered family like `web:3`
        cutover.yaml:2:11: services[0].name: "日本語" is not a valid service name: use 1 to 100 letters, digits, `.`, `_` and `-`
        cutover.yaml:3:20: services[0].desired_count: expected integer, found string "日本"
    "#]],
    );
    check(
        "taskdef.json",
        "{\r\n\t\"family\": \"日本\",\t\"x\" 1}\r\n",
        expect![[r#"
        taskdef.json:2:22: expected `:` after the key "x", found `1`
    "#]],
    );
}

/// Found by the `appspec_yaml` fuzz target: saphyr's error marker for a directive at the end of
/// the file is past the last character.
#[test]
fn an_error_past_the_end_of_the_file_is_reported_at_its_end() {
    check(
        "appspec.yaml",
        "%\u{325}",
        expect![[r#"
        appspec.yaml:1:3: invalid YAML: did not find expected <document start>
    "#]],
    );
}
