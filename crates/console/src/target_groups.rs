//! `/target-groups/{name}`: one target group as the EC2 console's target group page shows it —
//! its load balancer's listeners and rules that forward to it and at what weight, its health
//! check, and every registered target with its ALB health state, reason code and description
//! and the task it is — live: it follows `GET /v1/target-groups/{name}/stream` and replaces its
//! `live` part when it says something changed.

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use control::access::CallerBindings;
use control::http::AppState;
use control::target_group_stream::{ForwardView, TargetGroupState, target_group_state};
use maud::{Markup, html};
use routes::HealthCheck;

use crate::layout::{self, Viewer};
use crate::{PartQuery, error_page, html_page, viewer};

pub async fn page(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<PartQuery>,
    Extension(CallerBindings(bindings)): Extension<CallerBindings>,
    headers: HeaderMap,
) -> Response {
    let viewer = viewer(&state, &headers, &bindings);
    match target_group_state(&state, &name) {
        Ok(seen) if query.part.as_deref() == Some("live") => html_page(StatusCode::OK, live(&seen)),
        Ok(seen) => html_page(StatusCode::OK, whole(&seen, &viewer)),
        Err(err) => error_page(err, Some(&viewer)),
    }
}

fn whole(seen: &TargetGroupState, viewer: &Viewer) -> Markup {
    let name = &seen.target_group.name;
    let main = html! {
        div.title {
            h1 { "Target group " code { (name) } }
            p.sub {
                (load_balancers(&seen.forwards))
                " · " a href=(format!("/target-groups/{name}/metrics")) { "metrics" }
            }
        }
        div #notice role="status" aria-live="polite" {}
        div #live data-stream=(format!("/v1/target-groups/{name}/stream")) data-part=(format!("/target-groups/{name}?part=live")) {
            (live(seen))
        }
    };
    layout::page(&format!("Target group {name}"), Some(viewer), main)
}

/// The load balancers whose listeners forward to the group, in words.
fn load_balancers(forwards: &[ForwardView]) -> Markup {
    let mut names: Vec<&str> = forwards.iter().map(|f| f.load_balancer.as_str()).collect();
    names.dedup();
    html! {
        @if names.is_empty() {
            "no listener forwards to it: its targets are "
            span.health.unused { "unused" }
        } @else {
            "load balancer "
            @for (i, lb) in names.iter().enumerate() { @if i > 0 { ", " } strong { (lb) } }
        }
    }
}

pub fn live(seen: &TargetGroupState) -> Markup {
    let tg = &seen.target_group;
    html! {
        h2 { "Targets" }
        @if seen.targets.is_empty() {
            p.muted { "No targets registered." }
        } @else {
            table.grid #targets {
                thead { tr { th { "Target" } th { "Health" } th { "Reason" } th { "Description" } th { "Task" } th { "Service" } } }
                tbody {
                    @for target in &seen.targets {
                        @let state = format!("{:?}", target.health.state).to_lowercase();
                        tr data-target=(target.health.addr) data-state=(state) data-task=[target.task.as_ref().map(|t| &t.id)] {
                            td { code { (target.health.addr) } }
                            td { span class=(format!("health {state}")) { (state) } }
                            td { @if let Some(reason) = &target.health.reason { code { (reason) } } }
                            td.msg { (target.health.description.as_deref().unwrap_or("")) }
                            @if let Some(task) = &target.task {
                                td { a href=(format!("/tasks/{}", task.id)) { code { (task.id) } } " " span.muted { (task.last_status) } }
                                td { a href=(format!("/services/{}", task.service)) { (task.service) } }
                            } @else {
                                td.muted { "registered by hand" } td {}
                            }
                        }
                    }
                }
            }
        }
        h2 { "Listeners and rules" }
        @if seen.forwards.is_empty() {
            p.muted { "No listener forwards to " code { (tg.name) } "." }
        } @else {
            table.grid #forwards {
                thead { tr { th { "Listener" } th.num { "Port" } th { "Rule" } th.num { "Weight" } th.num { "Share" } } }
                tbody {
                    @for f in &seen.forwards {
                        tr {
                            td { (f.load_balancer) "/" (f.listener) }
                            td.num { (f.port) }
                            td { @match f.rule_priority { Some(p) => { "priority " (p) }, None => { "default action" } } }
                            td.num { (f.weight) " of " (f.total_weight) }
                            td.num { (f.percent()) "%" }
                        }
                    }
                }
            }
            p.muted { "As routed by table v" (seen.routes_version) "." }
        }
        h2 { "Health check and attributes" }
        table.grid.side {
            tbody {
                (health_check(&tg.health_check))
                tr { th scope="row" { "Deregistration delay" } td { (model::format_duration(std::time::Duration::from_millis(tg.deregistration_delay_ms))) } }
                tr { th scope="row" { "Load balancing algorithm" } td { (algorithm(tg.algorithm)) } }
            }
        }
    }
}

fn health_check(check: &HealthCheck) -> Markup {
    let duration = |ms: u64| model::format_duration(std::time::Duration::from_millis(ms));
    html! {
        @if !check.enabled {
            tr { th scope="row" { "Health checks" } td { "off: every target counts as healthy" } }
        } @else {
            tr { th scope="row" { "Path" } td { code { "GET " (check.path) } } }
            tr { th scope="row" { "Port" } td { @match check.port { Some(port) => { (port) }, None => { "traffic port" } } } }
            tr { th scope="row" { "Interval" } td { (duration(check.interval_ms)) } }
            tr { th scope="row" { "Timeout" } td { (duration(check.timeout_ms)) } }
            tr { th scope="row" { "Healthy threshold" } td { (check.healthy_threshold) " checks in a row" } }
            tr { th scope="row" { "Unhealthy threshold" } td { (check.unhealthy_threshold) " checks in a row" } }
            tr { th scope="row" { "Success codes" } td { code { (success_codes(&check.matcher)) } } }
        }
    }
}

/// ALB's `Matcher.HttpCode` form: `200`, `200-299`, `200,302`.
fn success_codes(matcher: &[(u16, u16)]) -> String {
    let one = |(from, to): &(u16, u16)| {
        if from == to { from.to_string() } else { format!("{from}-{to}") }
    };
    matcher.iter().map(one).collect::<Vec<_>>().join(",")
}

fn algorithm(algorithm: routes::Algorithm) -> &'static str {
    match algorithm {
        routes::Algorithm::RoundRobin => "round robin",
        routes::Algorithm::LeastOutstandingRequests => "least outstanding requests",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_codes_read_as_alb_writes_them() {
        assert_eq!(success_codes(&[(200, 200)]), "200");
        assert_eq!(success_codes(&[(200, 299), (302, 302)]), "200-299,302");
    }
}
