//! A deployment group's `retry_on_blue`: on by default, off with `false`, tuned with a map;
//! every bad setting is an error at its place.

use config::{RetryOnBlue, parse_cutover_file};
use expect_test::expect;

use crate::check;

const QUICKSTART: &str = include_str!("../../../../examples/quickstart/cutover.yaml");
const PREVIEW: &str = "    preview: { header: X-Deploy-Version }";

/// The quickstart's deployment group with `retry_on_blue: {setting}` (on line 40).
fn with_retry(setting: &str) -> String {
    assert!(QUICKSTART.contains(PREVIEW));
    QUICKSTART.replacen(PREVIEW, &format!("{PREVIEW}\n    retry_on_blue: {setting}"), 1)
}

fn parsed(text: &str) -> Option<RetryOnBlue> {
    let file = parse_cutover_file("cutover.yaml", text).unwrap().value;
    file.deployment_groups[0].retry_on_blue.clone()
}

#[test]
fn retry_on_blue_is_on_by_default_off_with_false_and_tuned_with_a_map() {
    let defaults = RetryOnBlue {
        methods: ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"].map(String::from).to_vec(),
        max_body_bytes: 65536,
        budget_percent: 20,
        min_retry_concurrency: 10,
    };
    assert_eq!(parsed(QUICKSTART), Some(defaults.clone()), "unset: on, with the defaults");
    assert_eq!(parsed(&with_retry("true")), Some(defaults.clone()));
    assert_eq!(parsed(&with_retry("false")), None);
    let tuned = with_retry("{ methods: [GET, QUERY], max_body_bytes: 0, budget_percent: 50 }");
    assert_eq!(
        parsed(&tuned),
        Some(RetryOnBlue {
            methods: vec!["GET".into(), "QUERY".into()],
            max_body_bytes: 0,
            budget_percent: 50,
            ..defaults
        })
    );
}

#[test]
fn a_bad_retry_on_blue_setting_is_an_error_at_its_place() {
    check(
        "cutover.yaml",
        &with_retry("yes"),
        expect![[r#"
            cutover.yaml:40:20: deployment_groups[0].retry_on_blue: expected true, false or a map of settings (methods, max_body_bytes, budget_percent, min_retry_concurrency), found string "yes"
        "#]],
    );
    check(
        "cutover.yaml",
        &with_retry("{ methods: [get, GET, \"NOT A METHOD\", GET], budget_percent: 120 }"),
        expect![[r#"
            cutover.yaml:40:32: deployment_groups[0].retry_on_blue.methods[0]: write methods in uppercase, as HTTP sends them: GET
            cutover.yaml:40:42: deployment_groups[0].retry_on_blue.methods[2]: "NOT A METHOD" is not an HTTP method name, like GET
            cutover.yaml:40:58: deployment_groups[0].retry_on_blue.methods[3]: GET is listed twice
            cutover.yaml:40:80: deployment_groups[0].retry_on_blue.budget_percent: 120 is out of range: a percentage must be 0 to 100
        "#]],
    );
    check(
        "cutover.yaml",
        &with_retry("{ methods: [], max_body_bytes: 2000000, min_retry_concurency: 3 }"),
        expect![[r#"
            cutover.yaml:40:31: deployment_groups[0].retry_on_blue.methods: name at least one method, like [GET, HEAD]; to retry nothing, write `retry_on_blue: false`
            cutover.yaml:40:51: deployment_groups[0].retry_on_blue.max_body_bytes: 2000000 is out of range: the largest body kept for a retry, in bytes, must be 0 to 1048576
            cutover.yaml:40:60: deployment_groups[0].retry_on_blue.min_retry_concurency: unknown field `min_retry_concurency`; did you mean `min_retry_concurrency`?
        "#]],
    );
}
