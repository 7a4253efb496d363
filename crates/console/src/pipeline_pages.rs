//! The pipeline pages: every pipeline (`/pipelines`), one pipeline with its newest execution and
//! its history (`/pipelines/{name}`), one execution (`/pipelines/{name}/executions/{id}`) and one
//! build with its log (`/builds/{id}`) — the CodePipeline and CodeBuild consoles' pages, live:
//! each follows `GET /v1/pipelines/{name}/stream` and replaces its `live` part when it says
//! something changed.

use maud::{Markup, html};
use pipelines::api::{ApprovalRequest, Build, Execution, ExecutionSummary, PipelineSummary, Stage};

use crate::decide;
use crate::layout::{self, Button, Viewer};

/// `/pipelines/{name}`, read before rendering.
pub struct PipelinePage {
    pub pipeline: PipelineSummary,
    /// The newest execution, in full.
    pub latest: Option<Execution>,
    /// Newest first.
    pub history: Vec<ExecutionSummary>,
    /// Release change, when the viewer may.
    pub release: Vec<Button>,
    /// What the newest execution offers the viewer.
    pub actions: Vec<Button>,
}

/// `/pipelines/{name}/executions/{id}`, read before rendering.
pub struct ExecutionPage {
    pub execution: Execution,
    pub actions: Vec<Button>,
}

/// `/builds/{id}`, read before rendering.
pub struct BuildPage {
    pub build: Build,
    /// Whether the viewer may read logs (a viewer may not: programs print what they should not).
    pub logs: bool,
}

fn live_frame(stream: &str, part: &str, inner: Markup) -> Markup {
    html! {
        div #notice role="status" aria-live="polite" {}
        div #live data-stream=(stream) data-part=(part) { (inner) }
    }
}

fn stream_of(pipeline: &str) -> String {
    format!("/v1/pipelines/{pipeline}/stream")
}

pub fn list(pipelines: &[PipelineSummary], viewer: &Viewer) -> Markup {
    let main = html! {
        h1 { "Pipelines" }
        @if pipelines.is_empty() {
            p.muted { "No pipeline is declared; `pipelines:` in cutover.yaml declares them (docs/cutover-yaml.md)." }
        } @else {
            (pipelines_table(pipelines))
        }
    };
    layout::page("Pipelines", Some(viewer), main)
}

/// Every pipeline with its newest execution; the overview shows it too.
pub fn pipelines_table(pipelines: &[PipelineSummary]) -> Markup {
    html! {
        table.grid {
            thead { tr { th { "Pipeline" } th { "Source" } th { "Latest execution" } th { "Commit" } th { "Started" } } }
            tbody {
                @for p in pipelines {
                    tr {
                        td { a href=(format!("/pipelines/{}", p.name)) { strong { (p.name) } } }
                        td { (p.source) " · " code { (p.branch) } }
                        @if let Some(e) = &p.latest_execution {
                            td { a href=(execution_link(e)) { (e.id) } " " (status(&e.status)) }
                            td { code { (short(&e.commit)) } " " span.muted { (e.message) } }
                            td { (time(e.started_at)) }
                        } @else {
                            td colspan="3" { span.muted { "not run yet" } }
                        }
                    }
                }
            }
        }
    }
}

pub fn pipeline_whole(page: &PipelinePage, viewer: &Viewer) -> Markup {
    let p = &page.pipeline;
    let main = html! {
        div.title {
            h1 { "Pipeline " code { (p.name) } }
            p.sub {
                "Source " strong { (p.source) } " · branch " code { (p.branch) }
                " · " (p.execution_mode) " · version " (p.version)
                @if p.update_pending { " · a changed definition waits for the running executions" }
            }
        }
        (live_frame(&stream_of(&p.name), &format!("/pipelines/{}?part=live", p.name), pipeline_live(page)))
    };
    layout::page(&format!("Pipeline {}", p.name), Some(viewer), main)
}

pub fn pipeline_live(page: &PipelinePage) -> Markup {
    html! {
        section.status aria-label="Latest execution" {
            @if let Some(e) = &page.latest {
                span { "Latest execution " a href=(execution_link(&e.summary)) { (e.summary.id) } }
                (badge(&e.summary.status))
            } @else {
                span.muted { "Not run yet: push to the branch, or release a change." }
            }
            (layout::buttons(&[page.release.as_slice(), page.actions.as_slice()].concat()))
        }
        @if let Some(e) = &page.latest {
            (revision(&e.summary))
            (stages(&e.stages))
        }
        section aria-labelledby="history-h" {
            h2 #history-h { "Execution history" }
            (history(&page.history))
        }
    }
}

pub fn execution_whole(page: &ExecutionPage, viewer: &Viewer) -> Markup {
    let s = &page.execution.summary;
    let main = html! {
        div.title {
            h1 { "Execution " code { (s.id) } }
            p.sub { "Pipeline " a href=(format!("/pipelines/{}", s.pipeline)) { strong { (s.pipeline) } } " · started " (time(s.started_at)) }
        }
        (live_frame(&stream_of(&s.pipeline), &format!("{}?part=live", execution_link(s)), execution_live(page)))
    };
    layout::page(&format!("Execution {}", s.id), Some(viewer), main)
}

pub fn execution_live(page: &ExecutionPage) -> Markup {
    let e = &page.execution;
    html! {
        section.status aria-label="Status" {
            (badge(&e.summary.status))
            @if let Some(ended) = e.summary.ended_at {
                span.muted { "took " (decide::duration(ended.saturating_sub(e.summary.started_at))) }
            }
            (layout::buttons(&page.actions))
        }
        @if let Some(message) = &e.summary.status_message {
            @if e.summary.status == "Failed" || e.summary.status == "Stopped" {
                div.why role="note" { (message) }
            } @else { p.muted { (message) } }
        }
        (revision(&e.summary))
        (stages(&e.stages))
        @if !e.artifacts.is_empty() {
            h2 { "Artifacts" }
            p { @for (name, id) in &e.artifacts { code { (name) } " " span.muted { (short(id)) } " · " } }
        }
    }
}

pub fn build_whole(page: &BuildPage, viewer: &Viewer) -> Markup {
    let b = &page.build;
    let main = html! {
        div.title {
            h1 { "Build " code { (b.id) } }
            p.sub {
                "Pipeline " a href=(format!("/pipelines/{}", b.pipeline)) { strong { (b.pipeline) } }
                " · execution " a href=(format!("/pipelines/{}/executions/{}", b.pipeline, b.execution_id)) { (b.execution_id) }
                " · " (b.stage) " / " (b.action) " · build #" (b.build_number) " · commit " code { (short(&b.commit)) }
            }
        }
        (live_frame(&stream_of(&b.pipeline), &format!("/builds/{}?part=live", b.id), build_live(b)))
        section aria-labelledby="log-h" {
            h2 #log-h { "Build log" }
            @if page.logs {
                pre.buildlog #build-log tabindex="0" data-follow=(format!("/v1/builds/{}/logs?follow=true", b.id)) {}
            } @else {
                p.muted { "Your credential may not read logs (the `logs` permission: docs/access.md)." }
            }
        }
    };
    layout::page(&format!("Build {}", b.id), Some(viewer), main)
}

pub fn build_live(b: &Build) -> Markup {
    html! {
        section.status aria-label="Status" {
            span.badge #status data-status=(b.status) class=(build_class(&b.status)) { (b.status) }
            @if let Some(ended) = b.ended_at {
                span.muted { "took " (decide::duration(ended.saturating_sub(b.started_at))) }
            } @else {
                span.muted { "started " (time(b.started_at)) }
            }
        }
        @if let Some(message) = &b.message { div.why role="note" { (message) } }
        table.grid {
            thead { tr { th { "Phase" } th { "Status" } th { "Start" } th { "Duration" } th { "Context" } } }
            tbody {
                @for phase in &b.phases {
                    tr {
                        td { (phase.phase) }
                        td { span class=(build_class(&phase.status)) { (phase.status) } }
                        td { @if let Some(at) = phase.started_at { (time(at)) } }
                        td { @if phase.ended_at.is_some() { (decide::duration(phase.duration_ms)) } }
                        td.msg { (phase.contexts.join("; ")) }
                    }
                }
            }
        }
        @if !b.exported_variables.is_empty() {
            h2 { "Exported variables" }
            p { @for (name, value) in &b.exported_variables { code { (name) "=" (value) } " " } }
        }
    }
}

fn revision(s: &ExecutionSummary) -> Markup {
    html! {
        p.revision {
            "Commit " code title=(s.commit) { (short(&s.commit)) } " on " code { (s.branch) }
            " · " (s.pushed_by) " · " span.muted { (s.message) }
        }
    }
}

/// The stages and their actions, one row per action, like the CodePipeline console's diagram
/// laid out as a table.
fn stages(stages: &[Stage]) -> Markup {
    html! {
        table.grid.stages {
            thead { tr { th { "Stage" } th { "Action" } th { "Status" } th { "Started" } th { "Duration" } th { "Details" } } }
            tbody {
                @for stage in stages {
                    @for (i, action) in stage.actions.iter().enumerate() {
                        tr class=(if i == 0 { "stage-first" } else { "" }) data-stage=(stage.name) data-action-name=(action.name) data-status=[action.status.as_deref()] {
                            td {
                                @if i == 0 {
                                    strong { (stage.name) } " " (maybe_status(stage.status.as_deref()))
                                    @if stage.attempt > 1 { span.muted { " attempt " (stage.attempt) } }
                                }
                            }
                            td { (action.name) " " span.muted { (action.kind) } }
                            td { (maybe_status(action.status.as_deref())) }
                            td { @if let Some(at) = action.started_at { (time(at)) } }
                            td { @if let Some(ms) = action.duration_ms { (decide::duration(ms)) } }
                            td.msg {
                                @if let Some(r) = &action.external_ref {
                                    @match action.kind.as_str() {
                                        "Build" | "Test" => { a href=(format!("/builds/{r}")) { "build " (r) } " " }
                                        "Deploy" => { a href=(format!("/deployments/{r}")) { "deployment " (r) } " " }
                                        _ => { code { (r) } " " }
                                    }
                                }
                                @if let Some(request) = &action.request { (approval_request(request)) " " }
                                @if let Some(d) = &action.decision {
                                    (if d.approved { "approved" } else { "rejected" }) " by " (d.by)
                                    @if !d.comment.is_empty() { ": “" (d.comment) "”" }
                                    " "
                                }
                                (action.message.as_deref().unwrap_or(""))
                            }
                        }
                    }
                }
            }
        }
    }
}

fn history(executions: &[ExecutionSummary]) -> Markup {
    html! {
        @if executions.is_empty() {
            p.muted { "No execution yet." }
        } @else {
            table.grid {
                thead { tr { th { "Execution" } th { "Status" } th { "Commit" } th { "Branch" } th { "Pushed by" } th { "Started" } th { "Duration" } } }
                tbody {
                    @for e in executions {
                        tr {
                            td { a href=(execution_link(e)) { (e.id) } }
                            td { (status(&e.status)) }
                            td { code title=(e.commit) { (short(&e.commit)) } " " span.muted { (e.message) } }
                            td { code { (e.branch) } }
                            td { (e.pushed_by) }
                            td { (time(e.started_at)) }
                            td { @if let Some(end) = e.ended_at { (decide::duration(end.saturating_sub(e.started_at))) } }
                        }
                    }
                }
            }
        }
    }
}

pub fn execution_link(e: &ExecutionSummary) -> String {
    format!("/pipelines/{}/executions/{}", e.pipeline, e.id)
}

/// A commit as people quote it: its first 7 characters.
fn short(commit: &str) -> &str {
    commit.get(..7).unwrap_or(commit)
}

fn badge(s: &str) -> Markup {
    html! { span.badge #status data-status=(s) class=(status_class(s)) { (s) } }
}

fn status(s: &str) -> Markup {
    html! { span class=(status_class(s)) { (s) } }
}

fn maybe_status(s: Option<&str>) -> Markup {
    match s {
        Some(s) => status(s),
        None => html! { span.muted { "—" } },
    }
}

/// An execution's, stage's or action's status as a colour.
pub fn status_class(status: &str) -> &'static str {
    match status {
        "Succeeded" => "ok",
        "Failed" | "Stopped" | "Abandoned" | "Cancelled" => "bad",
        "InProgress" | "Stopping" => "busy",
        _ => "muted",
    }
}

/// A build's or phase's status (CodeBuild's words) as a colour.
fn build_class(status: &str) -> &'static str {
    match status {
        "SUCCEEDED" => "ok",
        "FAILED" | "FAULT" | "TIMED_OUT" | "STOPPED" => "bad",
        "IN_PROGRESS" => "busy",
        _ => "muted",
    }
}

fn time(ms: u64) -> Markup {
    html! { time datetime=(ms) title=(control::access::utc_text(ms)) { (decide::clock_time(ms)) } }
}

/// A manual approval in progress: what the overview lists among what waits for a human.
pub struct Approval {
    pub execution: ExecutionSummary,
    pub stage: String,
    pub action: String,
    /// What the approval asks and where to review, as declared.
    pub request: Option<ApprovalRequest>,
}

/// Every pipeline, and every approval in progress among their running executions.
pub fn read_for_overview(
    state: &control::http::AppState,
) -> Result<(Vec<PipelineSummary>, Vec<Approval>), control::ApiError> {
    let api_error = |err: pipelines::Error| control::ApiError::internal(err.to_string());
    let store = &state.store;
    let list = pipelines::views::pipelines(store).map_err(api_error)?;
    let mut approvals = Vec::new();
    // Every pipeline's: in parallel mode an older execution may wait while a newer one ended.
    for p in &list {
        let running = pipelines::views::executions_in_full(
            store,
            &p.name,
            control::pipeline_stream::EXECUTIONS_FOLLOWED,
        )
        .map_err(api_error)?;
        for e in running.into_iter().filter(|e| e.summary.ended_at.is_none()) {
            for stage in &e.stages {
                for action in stage
                    .actions
                    .iter()
                    .filter(|a| a.kind == "Approval" && a.status.as_deref() == Some("InProgress"))
                {
                    approvals.push(Approval {
                        execution: e.summary.clone(),
                        stage: stage.name.clone(),
                        action: action.name.clone(),
                        request: action.request.clone(),
                    });
                }
            }
        }
    }
    Ok((list, approvals))
}

pub fn approval_item(a: &Approval) -> Markup {
    html! {
        a href=(execution_link(&a.execution)) { (a.execution.id) } " · " strong { (a.execution.pipeline) }
        " · approval " (a.stage) " / " (a.action) " on " code { (short(&a.execution.commit)) }
        @if let Some(request) = &a.request { " " (approval_request(request)) }
    }
}

/// What an approval asks, and a link to the page it names for review. The link is drawn only
/// for an http(s) URL (cutover.yaml allows nothing else; this holds for any stored value too),
/// and opens apart from the console, which it tells nothing (`noopener noreferrer`).
pub fn approval_request(request: &ApprovalRequest) -> Markup {
    html! {
        span.asks data-asks {
            @if let Some(question) = &request.comment { q { (question) } }
            @if let Some(url) = request.review_url.as_deref().filter(|u| is_web_url(u)) {
                " " a.review href=(url) target="_blank" rel="noopener noreferrer" { "Review" }
            }
        }
    }
}

/// Whether `url` is an absolute http or https URL, the only links a page draws from declared text.
fn is_web_url(url: &str) -> bool {
    let scheme = url.split_once("://").map(|(scheme, _)| scheme.to_ascii_lowercase());
    matches!(scheme.as_deref(), Some("http" | "https"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(comment: &str, url: &str) -> ApprovalRequest {
        ApprovalRequest { comment: Some(comment.into()), review_url: Some(url.into()) }
    }

    #[test]
    fn an_approval_shows_its_question_escaped_and_links_only_an_http_review_page() {
        let shown = approval_request(&request(
            "Ship <b>v3</b>?",
            "https://review.example.com/c/42?a=1&b=\"2\"",
        ))
        .into_string();
        assert_eq!(
            shown,
            "<span class=\"asks\" data-asks><q>Ship &lt;b&gt;v3&lt;/b&gt;?</q> <a class=\"review\" \
             href=\"https://review.example.com/c/42?a=1&amp;b=&quot;2&quot;\" target=\"_blank\" \
             rel=\"noopener noreferrer\">Review</a></span>"
        );
        for not_a_page in ["javascript:alert(1)", "JAVASCRIPT://x", "/pipelines/web", "data:x"] {
            let shown = approval_request(&request("Ship?", not_a_page)).into_string();
            assert!(!shown.contains("<a"), "{not_a_page}: {shown}");
            assert!(shown.contains("<q>Ship?</q>"), "{shown}");
        }
    }
}
