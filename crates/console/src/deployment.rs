//! The deployment page (`/deployments/{id}`): the AWS console's deployment page for an ECS
//! blue/green deployment, live. `live` is the part the page replaces whenever the deployment's
//! stream says something changed; the rest never changes.

use control::api::{DeploymentView, EventView, LifecycleEventView, TaskSetView};
use control::stream::TargetsView;
use maud::{Markup, html};

use crate::decide::{self, Action, Step, StepState};
use crate::layout::{self, Viewer};

/// Everything the page shows, read before rendering.
pub struct DeploymentPage {
    pub view: DeploymentView,
    /// The config's shift schedule; empty when the config is gone.
    pub schedule: Vec<Step>,
    pub targets: TargetsView,
    /// Newest first.
    pub events: Vec<EventView>,
    pub actions: Vec<Action>,
}

/// The whole page.
pub fn whole(page: &DeploymentPage, viewer: &Viewer) -> Markup {
    let view = &page.view;
    let main = html! {
        div.title {
            h1 { "Deployment " code { (view.id) } }
            p.sub {
                "Group " strong { (view.application) "/" (view.deployment_group) }
                " · task definition " strong { (view.task_definition) }
                " · " (view.deployment_config)
                " · created " (time(view.created_at))
            }
            @if let Some(description) = &view.description {
                p.sub { (description) }
            }
        }
        div #notice role="status" aria-live="polite" {}
        div #live data-stream=(format!("/v1/deployments/{}/stream", view.id))
            data-part=(format!("/deployments/{}?part=live", view.id)) {
            (live(page))
        }
    };
    layout::page(&format!("Deployment {}", view.id), Some(viewer), main)
}

/// The part that follows the deployment.
pub fn live(page: &DeploymentPage) -> Markup {
    let view = &page.view;
    html! {
        section.status aria-label="Status" {
            span.badge #status data-status=(view.status) class=(status_class(&view.status)) { (view.status) }
            @if let Some(event) = &view.current_event {
                @if !decide::is_final(&view.status) { span.muted { " at " (event) } }
            }
            @if let Some(at) = view.next_step_at {
                @if !decide::is_final(&view.status) { span.muted { " · next step at " (time(at)) } }
            }
            @if view.rolled_back { span.muted { " · rolled back: production and test traffic are on blue" } }
            (layout::buttons(&page.actions.iter().map(|a| a.button(&view.id)).collect::<Vec<_>>()))
        }
        @if let Some(code) = &view.error_code {
            div.why role="note" {
                strong { (code) } ": " (view.error_message.as_deref().unwrap_or(""))
            }
        }
        (traffic(view))
        @if !view.judges.is_empty() || view.mirrored.is_some() { (judges(view)) }
        div.columns {
            section aria-labelledby="schedule-h" {
                h2 #schedule-h { "Traffic shifting schedule" }
                p.muted { (view.routing) }
                (schedule(&page.schedule))
            }
            section aria-labelledby="events-h" {
                h2 #events-h { "Lifecycle events" }
                (lifecycle(&view.lifecycle_events))
            }
        }
        h2 { "Task sets" }
        div.columns {
            (task_set("Original (blue)", view.blue.as_ref(), &view.traffic.blue_target_group, &page.targets))
            (task_set("Replacement (green)", view.green.as_ref(), &view.traffic.green_target_group, &page.targets))
        }
        section aria-labelledby="log-h" {
            h2 #log-h { "Events" }
            ol.log {
                @for event in &page.events {
                    li { time datetime=(event.at) title=(control::access::utc_text(event.at)) { (decide::clock_time(event.at)) } " " (event.message) }
                }
            }
        }
    }
}

fn traffic(view: &DeploymentView) -> Markup {
    let green = view.traffic.production_green_percent;
    let blue = 100 - green;
    html! {
        section.traffic #traffic aria-label="Production traffic" data-blue-percent=(blue) data-green-percent=(green) {
            div.bar role="img" aria-label=(format!("Production: {blue}% original, {green}% replacement")) {
                @if blue > 0 { span.blue style=(format!("width:{blue}%")) {} }
                @if green > 0 { span.green style=(format!("width:{green}%")) {} }
            }
            div.legend {
                span { i.sw.blue {} "Original " code { (view.traffic.blue_target_group) } " " strong.pct #blue-percent { (blue) "%" } }
                span { i.sw.green {} "Replacement " code { (view.traffic.green_target_group) } " " strong.pct #green-percent { (green) "%" } }
                span.muted {
                    "Test listener: "
                    @if view.traffic.test_to_green { "replacement (" (view.traffic.green_target_group) ")" }
                    @else { "original (" (view.traffic.blue_target_group) ")" }
                }
            }
        }
    }
}

fn schedule(steps: &[Step]) -> Markup {
    html! {
        @if steps.is_empty() {
            p.muted { "The deployment config is no longer declared." }
        } @else {
            table.grid {
                thead { tr { th { "Step" } th { "After" } th { "Replacement" } th { "At" } } }
                tbody {
                    @for (i, step) in steps.iter().enumerate() {
                        tr class=(step_class(step.state)) aria-current=[(step.state == StepState::Current).then_some("step")] {
                            td { (i + 1) @if step.state == StepState::Current { " ◀ now" } }
                            td { "+" (decide::duration(step.after_ms)) }
                            td { (step.green_percent) "%" }
                            td { @if let Some(at) = step.at { (time(at)) } @else { span.muted { "—" } } }
                        }
                    }
                }
            }
        }
    }
}

fn lifecycle(events: &[LifecycleEventView]) -> Markup {
    html! {
        table.grid {
            thead { tr { th { "Event" } th { "Status" } th { "Start" } th { "Duration" } th { "Result" } } }
            tbody {
                @for event in events {
                    tr {
                        td { (event.event) }
                        td { span class=(status_class(&event.status)) { (event.status) } }
                        td { @if let Some(start) = event.start_time { (time(start)) } }
                        td {
                            @if let (Some(start), Some(end)) = (event.start_time, event.end_time) {
                                (decide::duration(end.saturating_sub(start)))
                            }
                        }
                        td.msg { (event.message.as_deref().unwrap_or("")) }
                    }
                }
            }
        }
    }
}

fn task_set(
    title: &str,
    set: Option<&TaskSetView>,
    target_group: &str,
    targets: &TargetsView,
) -> Markup {
    let targets = targets.get(target_group).map(Vec::as_slice).unwrap_or_default();
    html! {
        section.card aria-label=(title) {
            h3 { (title) " " a href=(format!("/target-groups/{target_group}")) { code { (target_group) } } " " a.small href=(format!("/target-groups/{target_group}/metrics")) { "metrics" } }
            @if let Some(set) = set {
                p {
                    code { (set.id) } " · " (set.status) " · " (set.task_definition) br;
                    "desired " strong { (set.desired_count) } " · running " strong { (set.running_count) }
                    " · healthy " strong { (set.healthy_count) }
                }
            } @else {
                p.muted { "No task set." }
            }
            @if targets.is_empty() {
                p.muted { "No targets registered." }
            } @else {
                table.grid {
                    thead { tr { th { "Target" } th { "Health" } th { "Reason" } } }
                    tbody {
                        @for target in targets {
                            tr {
                                td { code { (target.addr) } }
                                td { span class=(format!("health {:?}", target.state).to_lowercase()) { (format!("{:?}", target.state).to_lowercase()) } }
                                td.msg { (target.reason.as_deref().unwrap_or("")) " " span.muted { (target.description.as_deref().unwrap_or("")) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// What each canary judge saw in its newest judged period: both versions side by side, the
/// verdict, the test's result against the confidence asked for, and what retry on blue spent —
/// the same [`JudgeView`] `deployments get` prints; and what a shadow phase's copies got from
/// green, next to blue's answers to its clients.
fn judges(view: &DeploymentView) -> Markup {
    let heading = if view.judges.is_empty() {
        "Shadow traffic: green against blue"
    } else {
        "Canary judge: green against blue"
    };
    html! {
        section.judges aria-labelledby="judges-h" {
            h2 #judges-h { (heading) }
            div.columns {
                @if let Some(mirrored) = &view.mirrored { (shadow_traffic(view, mirrored)) }
                @for j in &view.judges {
                    section.card.judge data-judge=(j.alarm) data-verdict=(j.verdict()) aria-label=(format!("Canary judge {}", j.alarm)) {
                        h3 {
                            a href=(format!("/alarms/{}@{}", j.alarm, view.id)) { (j.alarm) }
                            " " span.muted { "(" (j.judgement.criteria.metric) @if j.judgement.criteria.source == control::api::judge::JudgedSource::Mirrored { ", on mirrored copies" } ")" }
                            " " span class=(format!("badge {}", verdict_class(j))) { (j.verdict()) }
                        }
                        p.muted { "Period " (time(j.period_start)) " + " (j.period_secs) " s · tolerance "
                            (judge_tolerance(j)) " · " (format!("{}", j.judgement.criteria.confidence * 100.0)) "% confidence · at least "
                            (j.judgement.criteria.min_samples) " samples each" }
                        table.grid.side {
                            thead { tr { th {} th.num { "Green " code { (j.green_target_group) } } th.num { "Blue " code { (j.blue_target_group) } } } }
                            tbody {
                                @for (what, green, blue) in j.side_by_side() {
                                    tr data-row=(what) { th scope="row" { (what) } td.num { (green) } td.num { (blue) } }
                                }
                            }
                        }
                        p { "Test: " code { (j.test_result()) } }
                        p { "Retry on blue: " span data-retries=(j.retries.retries) { (j.retries_text()) } }
                        @if let Some(m) = &j.mirrored {
                            p { "Shadow traffic: " span data-copies=(m.copies) { (m.text()) } }
                        }
                        p.msg.muted { (j.reason) }
                    }
                }
            }
        }
    }
}

/// A shadow phase's copies to green, over the whole phase: green's answers by class, how many
/// differed from blue's, and both versions' response times side by side.
fn shadow_traffic(view: &DeploymentView, m: &control::api::MirroredView) -> Markup {
    html! {
        section.card.shadow data-copies=(m.copies) data-mismatches=(m.mismatches) aria-label="Shadow traffic" {
            h3 { "Shadow traffic" " " span.muted { "(copies of production's requests)" } }
            p.muted { "Green's answers to the copies, measured and discarded; blue's answers to its clients in the same seconds." }
            table.grid.side {
                thead { tr { th {} th.num { "Green " code { (view.traffic.green_target_group) } " (copies)" } th.num { "Blue " code { (view.traffic.blue_target_group) } " (clients)" } } }
                tbody {
                    @for (what, green, blue) in m.side_by_side() {
                        tr data-row=(what) { th scope="row" { (what) } td.num { (green) } td.num { (blue) } }
                    }
                }
            }
        }
    }
}

fn verdict_class(j: &control::api::JudgeView) -> &'static str {
    match j.judgement.verdict {
        control::api::judge::Verdict::Worse => "bad",
        control::api::judge::Verdict::NotWorse => "ok",
        control::api::judge::Verdict::TooFewSamples => "muted",
    }
}

/// The tolerance as the criteria state it: points of error rate, or percent slower.
fn judge_tolerance(j: &control::api::JudgeView) -> String {
    let tolerance = j.judgement.criteria.tolerance * 100.0;
    match j.judgement.criteria.metric {
        control::api::judge::JudgedMetric::ErrorRate => format!("{tolerance} points"),
        control::api::judge::JudgedMetric::Latency => format!("{tolerance}% slower"),
    }
}

/// A time in a table: the time of day, with the full date in its title.
fn time(ms: u64) -> Markup {
    html! { time datetime=(ms) title=(control::access::utc_text(ms)) { (decide::clock_time(ms)) } }
}

pub fn status_class(status: &str) -> &'static str {
    match status {
        "Succeeded" => "ok",
        "Failed" | "Stopped" | "TimedOut" => "bad",
        "Ready" | "Baking" => "wait",
        "InProgress" | "Created" => "busy",
        _ => "muted",
    }
}

fn step_class(state: StepState) -> &'static str {
    match state {
        StepState::Done => "done",
        StepState::Current => "current",
        StepState::Pending => "pending",
    }
}
