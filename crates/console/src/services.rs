//! `/services/{name}`: one service as the ECS console shows it — its counts, its task sets, every
//! task with its address, health, and when and why it started and stopped, and every target of
//! its target groups with its ALB health state and reason — live: it follows
//! `GET /v1/services/{name}/stream` and replaces its `live` part when it says something changed.

use axum::extract::{Path, Query, State};
use axum::response::Response;
use control::http::AppState;
use control::service_stream::{ServiceState, service_state};
use maud::{Markup, html};

use crate::layout::{self, Viewer};
use crate::{PartQuery, Visitor, decide, respond};

pub async fn page(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<PartQuery>,
    visitor: Visitor,
) -> Response {
    respond(service_state(&state, &name), &query, &visitor, live, whole)
}

fn whole(seen: &ServiceState, viewer: &Viewer) -> Markup {
    let s = &seen.service;
    let main = html! {
        div.title {
            h1 { "Service " code { (s.name) } }
            p.sub {
                (s.runtime) " runtime"
                @if let Some(group) = &s.deployment_group { " · deployment group " strong { (group) } }
                @if let (Some(c), Some(p)) = (&s.container_name, s.container_port) { " · load-balanced container " code { (c) ":" (p) } }
            }
        }
        div #notice role="status" aria-live="polite" {}
        div #live data-stream=(format!("/v1/services/{}/stream", s.name)) data-part=(format!("/services/{}?part=live", s.name)) {
            (live(seen))
        }
    };
    layout::page(&format!("Service {}", s.name), Some(viewer), main)
}

pub fn live(seen: &ServiceState) -> Markup {
    let s = &seen.service;
    html! {
        section.status aria-label="Counts" {
            span { "desired " strong #desired { (s.desired_count) } }
            span { "running " strong #running { (s.running_count) } }
            span { "task definition " (task_definition(s.task_definition.as_deref())) }
        }
        h2 { "Task sets" }
        table.grid {
            thead { tr { th { "Task set" } th { "Status" } th { "Task definition" } th { "Target group" } th.num { "Desired" } th.num { "Running" } th.num { "Healthy" } th { "Deployment" } } }
            tbody {
                @for set in &s.task_sets {
                    tr {
                        td { code { (set.id) } }
                        td { (set.status) }
                        td { (task_definition(Some(&set.task_definition))) }
                        td { @if let Some(tg) = &set.target_group { a href=(format!("/target-groups/{tg}")) { code { (tg) } } } }
                        td.num { (set.desired_count) } td.num { (set.running_count) } td.num { (set.healthy_count) }
                        td { @if let Some(d) = &set.deployment_id { a href=(format!("/deployments/{d}")) { (d) } } }
                    }
                }
            }
        }
        h2 { "Tasks" }
        table.grid #tasks {
            thead { tr { th { "Task" } th { "Last status" } th { "Health" } th { "Address" } th { "Task definition" } th { "Started" } th { "Stopped" } th { "Stopped reason" } } }
            tbody {
                @for t in &seen.tasks {
                    tr data-task=(t.id) data-status=(t.last_status) data-health=(t.health) {
                        td { a href=(format!("/tasks/{}", t.id)) { code { (t.id) } } }
                        td { span class=(task_class(&t.last_status)) { (t.last_status) } }
                        td { span class=(format!("health {}", t.health.to_lowercase())) { (t.health) } }
                        td { @if let Some(addr) = &t.addr { code { (addr) } } }
                        td { (t.task_definition) }
                        td { @if let Some(at) = t.started_at { (time(at)) } }
                        td { @if let Some(at) = t.stopped_at { (time(at)) } }
                        td.msg { (t.stopped_reason.as_deref().unwrap_or("")) }
                    }
                }
            }
        }
        h2 { "Targets" }
        @for (tg, targets) in &seen.targets {
            h3 { "Target group " a href=(format!("/target-groups/{tg}")) { code { (tg) } } }
            @if targets.is_empty() {
                p.muted { "No targets registered." }
            } @else {
                table.grid {
                    thead { tr { th { "Target" } th { "Health" } th { "Reason" } } }
                    tbody {
                        @for target in targets {
                            @let state = format!("{:?}", target.state).to_lowercase();
                            tr data-target=(target.addr) data-state=(state) {
                                td { code { (target.addr) } }
                                td { span class=(format!("health {state}")) { (state) } }
                                td.msg { (target.reason.as_deref().unwrap_or("")) " " span.muted { (target.description.as_deref().unwrap_or("")) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn task_definition(td: Option<&str>) -> Markup {
    match td {
        Some(td) => {
            let family = td.rsplit_once(':').map_or(td, |(family, _)| family);
            html! { a href=(format!("/task-definitions/{family}")) { (td) } }
        }
        None => html! { span.muted { "—" } },
    }
}

fn task_class(status: &str) -> &'static str {
    match status {
        "RUNNING" => "ok",
        "STOPPED" => "muted",
        _ => "busy",
    }
}

fn time(ms: u64) -> Markup {
    html! { time datetime=(ms) title=(control::access::utc_text(ms)) { (decide::clock_time(ms)) } }
}
