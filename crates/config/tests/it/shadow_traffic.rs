//! A deployment config's `mirror` (its shadow phase) and a deployment group's `mirror_methods`:
//! read into the model, and every bad setting is an error at its place.

use std::time::Duration;

use config::parse_cutover_file;
use expect_test::expect;
use model::MirrorPhase;

use crate::check;

const QUICKSTART: &str = include_str!("../../../../examples/quickstart/cutover.yaml");
const CONFIG: &str =
    "  - { name: quick-canary, type: TimeBasedCanary, percentage: 20, interval: 5s }";
const PREVIEW: &str = "    preview: { header: X-Deploy-Version }";

/// The quickstart's deployment config with `, mirror: {setting}` (on line 27).
fn with_mirror(setting: &str) -> String {
    assert!(QUICKSTART.contains(CONFIG));
    let config = CONFIG.replacen(" }", &format!(", mirror: {setting} }}"), 1);
    QUICKSTART.replacen(CONFIG, &config, 1)
}

/// The quickstart's deployment group with `mirror_methods: {setting}` (on line 40).
fn with_methods(setting: &str) -> String {
    assert!(QUICKSTART.contains(PREVIEW));
    QUICKSTART.replacen(PREVIEW, &format!("{PREVIEW}\n    mirror_methods: {setting}"), 1)
}

#[test]
fn a_mirror_phase_is_read_into_the_config_and_the_group_copies_safe_methods_unless_told() {
    let file = parse_cutover_file("cutover.yaml", &with_mirror("{ percentage: 50, duration: 2m }"))
        .unwrap()
        .value;
    let config = file.deployment_config("quick-canary").unwrap();
    assert_eq!(
        config.mirror,
        Some(MirrorPhase { percent: 50, duration: Duration::from_secs(120) })
    );
    assert_eq!(file.deployment_groups[0].mirror_methods, ["GET", "HEAD", "OPTIONS"]);
    let quickstart = parse_cutover_file("cutover.yaml", QUICKSTART).unwrap().value;
    assert_eq!(quickstart.deployment_config("quick-canary").unwrap().mirror, None);
    assert_eq!(
        parse_cutover_file("cutover.yaml", &with_methods("[GET, POST]"))
            .unwrap()
            .value
            .deployment_groups[0]
            .mirror_methods,
        ["GET", "POST"]
    );
}

#[test]
fn a_bad_mirror_phase_is_an_error_at_its_place() {
    check(
        "cutover.yaml",
        &with_mirror("{ percentage: 0, duration: 0s }"),
        expect![[r#"
        cutover.yaml:27:102: deployment_configs[0].mirror.percentage: 0 is out of range: a mirror percentage must be 1 to 100
        cutover.yaml:27:115: deployment_configs[0].mirror.duration: a mirror phase of 0s is out of range; give it from 1s to 2880m, like `duration: 2m`
    "#]],
    );
    check(
        "cutover.yaml",
        &with_mirror("{ percent: 50 }"),
        expect![[r#"
        cutover.yaml:27:88: deployment_configs[0].mirror.percentage: missing required field `percentage`; add `percentage: 50`, the share of production's requests copied to green
        cutover.yaml:27:88: deployment_configs[0].mirror.duration: missing required field `duration`; add `duration: 2m`, how long green gets copies before the shift
        cutover.yaml:27:90: deployment_configs[0].mirror.percent: unknown field `percent`; expected one of: percentage, duration
    "#]],
    );
    check(
        "cutover.yaml",
        &with_mirror("50"),
        expect![[r#"
        cutover.yaml:27:88: deployment_configs[0].mirror: expected map, found integer 50
    "#]],
    );
}

#[test]
fn bad_mirror_methods_are_an_error_at_their_place() {
    check(
        "cutover.yaml",
        &with_methods("[]"),
        expect![[r#"
        cutover.yaml:40:21: deployment_groups[0].mirror_methods: name at least one method, like [GET, HEAD]; to copy nothing, give the deployment config no `mirror`
    "#]],
    );
    check(
        "cutover.yaml",
        &with_methods("[get, POST, POST]"),
        expect![[r#"
        cutover.yaml:40:22: deployment_groups[0].mirror_methods[0]: write methods in uppercase, as HTTP sends them: GET
        cutover.yaml:40:33: deployment_groups[0].mirror_methods[2]: POST is listed twice
    "#]],
    );
}
