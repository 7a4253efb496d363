//! The machine's queries, bounds and snapshot checks, outside scripts.

use expect_test::expect;
use model::Timestamp;

use super::{parse_spec, push};
use crate::{
    ACTIVE_EXECUTIONS_MAX, ArtifactId, HISTORY_MAX, Input, InputError, Pipeline, RetryMode,
    TEXT_BYTES_MAX,
};

fn at(secs: u64) -> Timestamp {
    Timestamp::from_millis(secs * 1000)
}

fn result(execution_id: &str, stage: &str, action: &str, succeeded: bool, message: &str) -> Input {
    let outputs = match (succeeded, action) {
        (true, "compile") => {
            vec![("img".to_string(), ArtifactId::new(format!("img-{execution_id}")).unwrap())]
        }
        _ => vec![],
    };
    Input::ActionResult {
        execution_id: execution_id.to_string(),
        stage: stage.to_string(),
        action: action.to_string(),
        run: 1,
        succeeded,
        message: message.to_string(),
        outputs,
        external_ref: None,
    }
}

fn drain(pipeline: &mut Pipeline) -> Vec<String> {
    std::iter::from_fn(|| pipeline.poll_effect()).map(|it| it.to_string()).collect()
}

#[test]
fn history_keeps_the_last_finished_executions() {
    let mut pipeline = Pipeline::new(parse_spec(&["standard"]), Timestamp::ZERO).unwrap();
    let mut t = 0;
    for i in 1..=HISTORY_MAX + 5 {
        let id = format!("e{i}");
        t += 1;
        pipeline.handle_input(push(&id), at(t)).unwrap();
        t += 1;
        pipeline.handle_input(result(&id, "Build", "compile", false, "boom"), at(t)).unwrap();
    }
    drain(&mut pipeline);
    let kept: Vec<&str> = pipeline.history().map(|it| it.id.as_str()).collect();
    assert_eq!(kept.len(), HISTORY_MAX);
    assert_eq!(kept.first(), Some(&"e6"));
    assert!(pipeline.execution("e5").is_none());
    let err = pipeline
        .handle_input(
            Input::Retry {
                execution_id: "e5".into(),
                stage: "Build".into(),
                mode: RetryMode::AllActions,
            },
            at(t),
        )
        .unwrap_err();
    assert_eq!(err, InputError::UnknownExecution("e5".to_string()));
    assert_eq!(pipeline.retryable("Build"), Some(format!("e{}", HISTORY_MAX + 5).as_str()));
}

#[test]
fn queued_mode_refuses_a_push_beyond_the_limit_of_unfinished_executions() {
    let mut spec = parse_spec(&["standard"]);
    spec.execution_mode = crate::ExecutionMode::Queued;
    let mut pipeline = Pipeline::new(spec, Timestamp::ZERO).unwrap();
    for i in 1..=ACTIVE_EXECUTIONS_MAX {
        pipeline.handle_input(push(&format!("e{i}")), at(1)).unwrap();
    }
    assert_eq!(pipeline.waiting("Build").len(), ACTIVE_EXECUTIONS_MAX - 1);
    let err = pipeline.handle_input(push("one-too-many"), at(2)).unwrap_err();
    expect!["the pipeline already has 100 unfinished executions; stop some, or wait for them, before starting another"].assert_eq(&err.to_string());
    // Superseded mode never gets there: one execution per stage and one waiting.
    let mut pipeline = Pipeline::new(parse_spec(&["standard"]), Timestamp::ZERO).unwrap();
    for i in 1..=ACTIVE_EXECUTIONS_MAX + 10 {
        pipeline.handle_input(push(&format!("e{i}")), at(1)).unwrap();
    }
    assert_eq!(pipeline.active().len(), 2);
}

#[test]
fn queries_show_holders_waiting_executions_approvals_and_what_can_be_retried() {
    let spec = parse_spec(&[
        "stage Source src Source out=src",
        "stage Build compile Build in=src out=img",
        "stage Prod approval Approval; deploy Deploy in=img order=2",
    ]);
    let mut pipeline = Pipeline::new(spec, Timestamp::ZERO).unwrap();
    pipeline.handle_input(push("e1"), at(0)).unwrap();
    pipeline.handle_input(result("e1", "Build", "compile", true, ""), at(60)).unwrap();
    pipeline.handle_input(push("e2"), at(61)).unwrap();
    pipeline.handle_input(result("e2", "Build", "compile", true, ""), at(62)).unwrap();
    pipeline.handle_input(push("e3"), at(63)).unwrap();
    let approvals = pipeline.pending_approvals();
    let shown = format!(
        "Prod held by {:?}, waiting {:?}; Build held by {:?}; approvals {:?}",
        pipeline.stage_holder("Prod"),
        pipeline.waiting("Prod"),
        pipeline.stage_holder("Build"),
        approvals
            .iter()
            .map(|it| format!(
                "{}/{}/{} until {}",
                it.execution_id, it.stage, it.action, it.deadline
            ))
            .collect::<Vec<_>>(),
    );
    expect![[r#"Prod held by Some("e1"), waiting ["e2"]; Build held by Some("e3"); approvals ["e1/Prod/approval until 168h1m"]"#]].assert_eq(&shown);
    pipeline.handle_input(result("e3", "Build", "compile", false, "boom"), at(64)).unwrap();
    assert_eq!(pipeline.retryable("Build"), Some("e3"));
    assert_eq!(pipeline.retryable("Prod"), None);
    assert!(!pipeline.is_idle());
}

#[test]
fn text_from_outside_is_cleaned_and_bounded() {
    let mut pipeline = Pipeline::new(parse_spec(&["standard"]), Timestamp::ZERO).unwrap();
    pipeline.handle_input(push("e1"), at(0)).unwrap();
    let long = format!("line one\nline two\t{}", "x".repeat(3 * TEXT_BYTES_MAX));
    pipeline.handle_input(result("e1", "Build", "compile", false, &long), at(1)).unwrap();
    let effects = drain(&mut pipeline);
    assert!(effects.iter().all(|it| !it.contains('\n') && !it.contains('\t')));
    let message = pipeline.execution("e1").unwrap().stages[1].actions[0].message.clone().unwrap();
    assert!(message.starts_with("line one line two x"), "{message}");
    assert!(message.len() <= TEXT_BYTES_MAX && message.ends_with('…'), "{}", message.len());
}

#[test]
fn a_snapshot_that_does_not_match_its_spec_is_refused() {
    let mut pipeline = Pipeline::new(parse_spec(&["standard"]), Timestamp::ZERO).unwrap();
    pipeline.handle_input(push("e1"), at(0)).unwrap();
    let mut json = serde_json::to_value(&pipeline).unwrap();
    json["spec"]["stages"][2]["name"] = "Renamed".into();
    let err = serde_json::from_value::<Pipeline>(json).unwrap_err().to_string();
    expect!["execution `e1` in the snapshot does not match the pipeline's stages and actions"]
        .assert_eq(&err);
    let mut json = serde_json::to_value(&pipeline).unwrap();
    json["spec"]["stages"][1]["actions"][0]["input_artifacts"][0] = "nothing".into();
    let err = serde_json::from_value::<Pipeline>(json).unwrap_err().to_string();
    expect!["the snapshot's pipeline spec is invalid: stages[1].actions[0].input_artifacts[0]: input artifact `nothing` is not produced by any action that runs before this one"].assert_eq(&err);
}

#[test]
fn an_approval_asked_of_an_execution_that_waits_for_none_says_where_the_execution_is() {
    let mut pipeline = Pipeline::new(parse_spec(&["standard"]), Timestamp::ZERO).unwrap();
    pipeline.handle_input(push("e1"), at(1)).unwrap();
    let err = pipeline.pending_approval("e1", None, None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "execution `e1` is not waiting for an approval (it is InProgress, in stage Build); \
         approve or reject it while its approval action is InProgress"
    );
    let err = pipeline.pending_approval("e1", Some("Build"), Some("compile")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "approval `Build/compile` of execution `e1` is not waiting for a decision (its latest \
         run is #1, InProgress)"
    );
    let err = pipeline.pending_approval("e9", None, None).unwrap_err();
    assert!(matches!(err, InputError::UnknownExecution(ref id) if id == "e9"), "{err}");
}
