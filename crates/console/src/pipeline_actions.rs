//! Which buttons the pipeline pages offer, decided without IO: the CodePipeline console's
//! **Release change**, **Stop execution** (and wait, or abandon), **Retry** of a failed stage and
//! **Approve** / **Reject** of an approval in progress — each only while the API would take it
//! and only to whom the access rules let take it, like the deployment page's (`decide::actions`).

use control::access::decision::{Binding, Decision, decide};
use control::access::permissions::{Permission, Resource};
use pipelines::api::Execution;

use crate::layout::Button;

fn allowed(bindings: &[Binding], permission: Permission, pipeline: &str) -> bool {
    decide(bindings, permission, &Resource::Pipeline(pipeline.to_string())) == Decision::Allow
}

fn json(value: serde_json::Value) -> String {
    value.to_string()
}

/// **Release change**: runs the pipeline again on its branch's newest commit.
pub fn release(pipeline: &str, branch: &str, bindings: &[Binding]) -> Vec<Button> {
    if !allowed(bindings, Permission::StartPipeline, pipeline) {
        return Vec::new();
    }
    vec![Button {
        label: "Release change".into(),
        endpoint: format!("/v1/pipelines/{pipeline}/start"),
        body: "{}".into(),
        confirm: format!("Run {pipeline} again on the newest commit of `{branch}`."),
        danger: false,
        comment: false,
    }]
}

/// What `execution` offers `bindings` now: Approve and Reject for each approval in progress,
/// Stop while it runs, Retry of the stage where it failed.
pub fn for_execution(execution: &Execution, bindings: &[Binding]) -> Vec<Button> {
    let pipeline = &execution.summary.pipeline;
    let id = &execution.summary.id;
    let mut buttons = Vec::new();
    let running = matches!(execution.summary.status.as_str(), "InProgress");
    if running && allowed(bindings, Permission::Approve, pipeline) {
        for stage in &execution.stages {
            let waiting = stage
                .actions
                .iter()
                .filter(|a| a.kind == "Approval" && a.status.as_deref() == Some("InProgress"));
            for action in waiting {
                // Who decides is the session's identity, which the API records itself.
                let body = json(serde_json::json!({ "stage": stage.name, "action": action.name }));
                let what = format!("{} / {}", stage.name, action.name);
                buttons.push(Button {
                    label: "Approve".into(),
                    endpoint: format!("/v1/approvals/{id}/approve"),
                    body: body.clone(),
                    confirm: format!("Approve {what}: execution {id} goes on to its next action."),
                    danger: false,
                    comment: true,
                });
                buttons.push(Button {
                    label: "Reject".into(),
                    endpoint: format!("/v1/approvals/{id}/reject"),
                    body,
                    confirm: format!("Reject {what}: the stage fails and execution {id} stops."),
                    danger: true,
                    comment: true,
                });
            }
        }
    }
    if running && allowed(bindings, Permission::StopPipeline, pipeline) {
        let endpoint = format!("/v1/pipelines/{pipeline}/executions/{id}/stop");
        buttons.push(Button {
            label: "Stop and wait".into(),
            endpoint: endpoint.clone(),
            body: json(serde_json::json!({ "abandon": false, "reason": "stopped in the console" })),
            confirm: format!(
                "Stop execution {id} once the actions in progress have finished; nothing after \
                 them starts."
            ),
            danger: true,
            comment: false,
        });
        buttons.push(Button {
            label: "Stop and abandon".into(),
            endpoint,
            body: json(
                serde_json::json!({ "abandon": true, "reason": "abandoned in the console" }),
            ),
            confirm: format!("Stop execution {id} now: the actions in progress are abandoned."),
            danger: true,
            comment: false,
        });
    }
    if execution.summary.status == "Failed"
        && allowed(bindings, Permission::StartPipeline, pipeline)
    {
        for stage in execution.stages.iter().filter(|s| s.status.as_deref() == Some("Failed")) {
            buttons.push(Button {
                label: format!("Retry {}", stage.name),
                endpoint: format!("/v1/pipelines/{pipeline}/executions/{id}/retry"),
                body: json(serde_json::json!({ "stage": stage.name, "mode": "FAILED_ACTIONS" })),
                confirm: format!(
                    "Run the failed actions of stage {} of execution {id} again, on the same \
                     artifacts.",
                    stage.name
                ),
                danger: false,
                comment: false,
            });
        }
    }
    buttons
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipelines::api::{Action, ExecutionSummary, Stage};

    fn action(name: &str, kind: &str, status: Option<&str>) -> Action {
        Action {
            name: name.into(),
            kind: kind.into(),
            status: status.map(Into::into),
            run: 1,
            started_at: None,
            ended_at: None,
            duration_ms: None,
            message: None,
            external_ref: None,
            decision: None,
            request: None,
        }
    }

    fn stage(name: &str, status: Option<&str>, actions: Vec<Action>) -> Stage {
        Stage {
            name: name.into(),
            status: status.map(Into::into),
            attempt: 1,
            started_at: None,
            ended_at: None,
            duration_ms: None,
            message: None,
            actions,
        }
    }

    /// `web-3` of pipeline `web`: built, then waiting at an approval (or failed at its build).
    fn execution(status: &str) -> Execution {
        let (build, approval) = match status {
            "Failed" => (Some("Failed"), None),
            _ => (Some("Succeeded"), Some("InProgress")),
        };
        Execution {
            summary: ExecutionSummary {
                id: "web-3".into(),
                pipeline: "web".into(),
                status: status.into(),
                commit: "abc".into(),
                branch: "main".into(),
                pushed_by: "alice".into(),
                message: "v3".into(),
                started_at: 0,
                ended_at: None,
                status_message: None,
            },
            stages: vec![
                stage(
                    "Source",
                    Some("Succeeded"),
                    vec![action("source", "Source", Some("Succeeded"))],
                ),
                stage("Build", build, vec![action("build", "Build", build)]),
                stage("Release", approval, vec![action("approve", "Approval", approval)]),
            ],
            deployments: Vec::new(),
            builds: Vec::new(),
            artifacts: Vec::new(),
        }
    }

    fn role(name: &str, scope: &str) -> Binding {
        Binding::new(Some(name), &[], &[scope.to_string()]).unwrap()
    }

    fn labels(status: &str, binding: Binding) -> Vec<String> {
        for_execution(&execution(status), &[binding]).into_iter().map(|b| b.label).collect()
    }

    #[test]
    fn each_pipeline_action_is_offered_only_while_valid_and_only_to_whom_may_take_it() {
        let deployer = || role("deployer", "web");
        assert_eq!(
            labels("InProgress", deployer()),
            ["Approve", "Reject", "Stop and wait", "Stop and abandon"]
        );
        assert_eq!(labels("Failed", deployer()), ["Retry Build"]);
        for done in ["Succeeded", "Stopped", "Superseded", "Cancelled"] {
            assert!(labels(done, deployer()).is_empty(), "{done}");
        }
        assert!(labels("InProgress", role("viewer", "*")).is_empty(), "a viewer gets no button");
        assert!(
            labels("InProgress", role("deployer", "api")).is_empty(),
            "another team's pipeline"
        );
        let only_approve = Binding::new(None, &["approve".into()], &["*".into()]).unwrap();
        assert_eq!(labels("InProgress", only_approve), ["Approve", "Reject"]);
        assert_eq!(release("web", "main", &[deployer()]).len(), 1);
        assert!(release("web", "main", &[role("viewer", "*")]).is_empty());
    }

    #[test]
    fn an_approval_names_the_stage_and_action_it_decides_and_asks_for_a_comment() {
        let buttons = for_execution(&execution("InProgress"), &[role("deployer", "*")]);
        let approve = &buttons[0];
        assert_eq!(approve.endpoint, "/v1/approvals/web-3/approve");
        assert!(approve.comment && !approve.danger);
        let body: serde_json::Value = serde_json::from_str(&approve.body).unwrap();
        assert_eq!(body, serde_json::json!({"stage": "Release", "action": "approve"}));
        assert_eq!(buttons[1].endpoint, "/v1/approvals/web-3/reject");
        assert!(buttons[1].danger);
    }
}
