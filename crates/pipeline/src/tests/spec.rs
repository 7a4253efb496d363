//! Spec validation: what a pipeline definition must look like, and the errors that say what to
//! fix.

use std::fmt::Write as _;
use std::time::Duration;

use expect_test::expect;
use model::Timestamp;

use super::parse_spec;
use crate::{ActionKind, Pipeline};

#[test]
fn the_standard_pipeline_and_same_stage_inputs_by_run_order_are_valid() {
    parse_spec(&["standard"]).validate().unwrap();
    // A later run order may consume what a lower one produced, wherever it is written.
    parse_spec(&[
        "stage Source src Source out=src",
        "stage Build package Build in=img order=2; compile Build in=src out=img",
    ])
    .validate()
    .unwrap();
}

#[test]
fn invalid_definitions_are_refused_with_the_field_to_fix() {
    let cases: &[(&str, &[&str])] = &[
        ("one stage", &["stage Source src Source out=src"]),
        (
            "first stage not a source",
            &["stage Build compile Build out=img", "stage Deploy deploy Deploy in=img"],
        ),
        (
            "two source actions",
            &["stage Source src Source out=src; other Source out=o", "stage Build b Build in=src"],
        ),
        ("source without output", &["stage Source src Source", "stage Build b Build"]),
        (
            "source in a later stage",
            &["stage Source src Source out=src", "stage More more Source out=m"],
        ),
        (
            "duplicate stage",
            &["stage Source src Source out=src", "stage Build a Build", "stage Build b Build"],
        ),
        ("duplicate action", &["stage Source src Source out=src", "stage Build a Build; a Test"]),
        (
            "input never produced",
            &["stage Source src Source out=src", "stage Build a Build in=img"],
        ),
        (
            "input from a later stage",
            &[
                "stage Source src Source out=src",
                "stage A a Build in=img",
                "stage B b Build out=img",
            ],
        ),
        (
            "input from the same run order",
            &["stage Source src Source out=src", "stage Build a Build out=img; b Test in=img"],
        ),
        (
            "input of its own output",
            &["stage Source src Source out=src", "stage Build a Build in=img out=img"],
        ),
        (
            "input listed twice",
            &["stage Source src Source out=src", "stage Build a Build in=src,src"],
        ),
        (
            "output produced twice",
            &["stage Source src Source out=src", "stage Build a Build out=img; b Build out=img"],
        ),
        ("bad stage name", &["stage Source src Source out=src", "stage Build! a Build"]),
        (
            "bad artifact name",
            &["stage Source src Source out=src", "stage Build a Build out=my.img"],
        ),
        ("run order 0", &["stage Source src Source out=src", "stage Build a Build order=0"]),
        ("run order 1000", &["stage Source src Source out=src", "stage Build a Build order=1000"]),
        (
            "approval with artifacts",
            &["stage Source src Source out=src", "stage Prod ok Approval in=src"],
        ),
        (
            "approval timeout too short",
            &["stage Source src Source out=src", "stage Prod ok Approval timeout=1m"],
        ),
        (
            "action timeout zero",
            &["stage Source src Source out=src", "stage Build a Build timeout=0s"],
        ),
    ];
    let mut out = String::new();
    for (what, lines) in cases {
        let err = parse_spec(lines).validate().expect_err(what);
        writeln!(out, "{what}: {err}").unwrap();
    }
    expect![[r#"
        one stage: stages: a pipeline has 2 to 50 stages (a source stage and at least one more), not 1
        first stage not a source: stages[0].actions[0].kind: the first stage's action must be of kind Source, not Build
        two source actions: stages[0].actions: the first stage holds exactly one action, of kind Source
        source without output: stages[0].actions[0]: a source action has no input artifacts and exactly one output artifact (the pushed revision)
        source in a later stage: stages[1].actions[0].kind: Source actions belong in the first stage only
        duplicate stage: stages[2].name: stage name `Build` is used twice; stage names are unique
        duplicate action: stages[1].actions[1].name: action name `a` is used twice in stage `Build`; action names are unique within a stage
        input never produced: stages[1].actions[0].input_artifacts[0]: input artifact `img` is not produced by any action that runs before this one
        input from a later stage: stages[1].actions[0].input_artifacts[0]: input artifact `img` is not produced by any action that runs before this one
        input from the same run order: stages[1].actions[1].input_artifacts[0]: input artifact `img` is produced by action `Build/a` (run_order 1), which does not run before this action (run_order 1); an input comes from an earlier stage or a lower run_order in the same stage
        input of its own output: stages[1].actions[0].input_artifacts[0]: input artifact `img` is produced by action `Build/a` (run_order 1), which does not run before this action (run_order 1); an input comes from an earlier stage or a lower run_order in the same stage
        input listed twice: stages[1].actions[0].input_artifacts[1]: input artifact `src` is listed twice
        output produced twice: stages[1].actions[1].output_artifacts[0]: output artifact `img` is also produced by action `Build/a`; output artifact names are unique in a pipeline
        bad stage name: stages[1].name: `Build!` is not a valid name: use 1 to 100 of A-Z a-z 0-9 . @ _ -
        bad artifact name: stages[1].actions[0].output_artifacts[0]: `my.img` is not a valid name: use 1 to 100 of A-Z a-z 0-9 _ -
        run order 0: stages[1].actions[0].run_order: run_order is 1 to 999, not 0
        run order 1000: stages[1].actions[0].run_order: run_order is 1 to 999, not 1000
        approval with artifacts: stages[1].actions[0]: an approval action has no input or output artifacts
        approval timeout too short: stages[1].actions[0].timeout: Approval actions time out after 5m to 1440h, not 1m
        action timeout zero: stages[1].actions[0].timeout: Build actions time out after 1s to 1440h, not 0s
    "#]].assert_eq(&out);
}

#[test]
fn limits_on_counts_are_enforced() {
    let mut spec = parse_spec(&["standard"]);
    let stage = spec.stages[1].clone();
    for i in 0..60 {
        let mut stage = stage.clone();
        stage.name = format!("S{i}");
        stage.actions[0].output_artifacts.clear();
        spec.stages.push(stage);
    }
    let too_many_stages = spec.validate().unwrap_err().to_string();
    let mut spec = parse_spec(&["standard"]);
    let action = spec.stages[2].actions[0].clone();
    for i in 0..50 {
        let mut action = action.clone();
        action.name = format!("a{i}");
        spec.stages[2].actions.push(action);
    }
    let too_many_actions = spec.validate().unwrap_err().to_string();
    expect![[r#"
        stages: a pipeline has 2 to 50 stages (a source stage and at least one more), not 63
        stages[2].actions: a stage has 1 to 50 actions, not 51
    "#]]
    .assert_eq(&format!("{too_many_stages}\n{too_many_actions}\n"));
}

#[test]
fn new_refuses_an_invalid_spec_and_defaults_timeouts_by_kind() {
    assert!(
        Pipeline::new(parse_spec(&["stage Source src Source out=src"]), Timestamp::ZERO).is_err()
    );
    let defaults: Vec<String> = ActionKind::ALL
        .iter()
        .map(|kind| format!("{kind}={}", model::format_duration(kind.default_timeout())))
        .collect();
    expect!["Source=1h Build=8h Test=8h Deploy=120h DeployEcs=1h Approval=168h Invoke=1h"]
        .assert_eq(&defaults.join(" "));
    assert_eq!(
        parse_spec(&["standard"]).stages[1].actions[0].effective_timeout(),
        Duration::from_secs(3600)
    );
}
