//! `/tasks/{id}`: one task — its status, health, address, task definition, when it started and
//! when and why it stopped — and its log, which follows what the task writes while it runs
//! (`GET /v1/tasks/{id}/logs?follow=true`). The status is live: the page follows its service's
//! stream (`GET /v1/services/{name}/stream`).

use axum::extract::{Path, Query, State};
use axum::response::Response;
use control::ApiError;
use control::api::TaskView;
use control::http::AppState;
use maud::{Markup, html};

use crate::layout::{self, Viewer};
use crate::{PartQuery, Visitor, decide as when, respond};

pub async fn page(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<PartQuery>,
    visitor: Visitor,
) -> Response {
    let task = control::http::task_view_list(&state, None, true).and_then(|tasks| {
        tasks.into_iter().find(|t| t.id == id).ok_or_else(|| {
            ApiError::not_found(format!(
                "no task `{id}` (a stopped task is kept a while); `cutover tasks list --all` shows them"
            ))
        })
    });
    let logs = visitor.may_read_logs();
    respond(task, &query, &visitor, live, |task, viewer| whole(task, logs, viewer))
}

fn whole(task: &TaskView, logs: bool, viewer: &Viewer) -> Markup {
    let main = html! {
        div.title {
            h1 { "Task " code { (task.id) } }
            p.sub {
                "Service " a href=(format!("/services/{}", task.service)) { strong { (task.service) } }
                " · task set " code { (task.task_set_id) } " · " (task.runtime) " runtime"
            }
        }
        div #notice role="status" aria-live="polite" {}
        div #live data-stream=(format!("/v1/services/{}/stream", task.service)) data-part=(format!("/tasks/{}?part=live", task.id)) {
            (live(task))
        }
        section aria-labelledby="log-h" {
            h2 #log-h { "Log" }
            @if logs {
                pre.buildlog #task-log tabindex="0" data-follow=(format!("/v1/tasks/{}/logs?follow=true", task.id)) {}
            } @else {
                p.muted { "Your credential may not read logs (the `logs` permission: docs/access.md)." }
            }
        }
    };
    layout::page(&format!("Task {}", task.id), Some(viewer), main)
}

pub fn live(task: &TaskView) -> Markup {
    html! {
        section.status aria-label="Status" {
            span.badge #status data-status=(task.last_status) { (task.last_status) }
            span { "health " span class=(format!("health {}", task.health.to_lowercase())) { (task.health) } }
            span { "desired " (task.desired_status) }
        }
        table.grid {
            tbody {
                tr { th { "Address" } td { @if let Some(addr) = &task.addr { code { (addr) } } @else { span.muted { "none yet" } } } }
                tr { th { "Task definition" } td { (task.task_definition) } }
                tr { th { "Target group" } td { (task.target_group.as_deref().unwrap_or("—")) } }
                tr { th { "Started" } td { @if let Some(at) = task.started_at { (time(at)) } } }
                tr { th { "Stopped" } td { @if let Some(at) = task.stopped_at { (time(at)) } } }
                tr { th { "Stopped reason" } td.msg { (task.stopped_reason.as_deref().unwrap_or("")) } }
            }
        }
    }
}

fn time(ms: u64) -> Markup {
    html! { time datetime=(ms) title=(control::access::utc_text(ms)) { (when::clock_time(ms)) } }
}
