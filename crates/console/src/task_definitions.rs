//! `/task-definitions/{family}`: every revision of a task-definition family, and what changed
//! between any two (`?from=R&to=R`, by default the newest and the one before), like the ECS
//! console's revisions with the JSON of each compared field by field (`task_definition_diff`).

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use control::ApiError;
use control::access::CallerBindings;
use control::api::TaskDefinitionView;
use control::http::AppState;
use maud::{Markup, html};
use serde::Deserialize;

use crate::layout::{self, Viewer};
use crate::task_definition_diff::{Change, diff};
use crate::{decide, error_page, html_page, viewer};

#[derive(Deserialize)]
pub struct Compare {
    from: Option<String>,
    to: Option<String>,
}

/// The two revisions to compare: those asked for, else the newest and the one before it.
/// `revisions` is oldest first. A revision that is not a number or not of this family is an
/// error that says which exist.
fn chosen(
    family: &str,
    revisions: &[TaskDefinitionView],
    compare: &Compare,
) -> Result<Option<(u32, u32)>, ApiError> {
    let pick = |asked: &Option<String>, default: Option<u32>, which: &str| {
        let Some(text) = asked.as_deref().filter(|t| !t.is_empty()) else { return Ok(default) };
        let known = || {
            let list: Vec<String> = revisions.iter().map(|r| r.revision.to_string()).collect();
            format!("{family} has revisions {}", list.join(", "))
        };
        let revision: u32 = text.parse().map_err(|_| {
            ApiError::bad_request(format!("`{which}={text}` is not a revision number; {}", known()))
        })?;
        if !revisions.iter().any(|r| r.revision == revision) {
            return Err(ApiError::bad_request(format!(
                "`{which}={text}`: there is no revision {family}:{revision}; {}",
                known()
            )));
        }
        Ok(Some(revision))
    };
    let newest = revisions.last().map(|r| r.revision);
    let before = revisions.len().checked_sub(2).map(|i| revisions[i].revision);
    let to = pick(&compare.to, newest, "to")?;
    let from = pick(&compare.from, before.or(newest), "from")?;
    Ok(from.zip(to))
}

pub async fn page(
    State(state): State<AppState>,
    Path(family): Path<String>,
    Query(compare): Query<Compare>,
    Extension(CallerBindings(bindings)): Extension<CallerBindings>,
    headers: HeaderMap,
) -> Response {
    let viewer = viewer(&state, &headers, &bindings);
    let read = || {
        let revisions = control::http::task_definition_views(&state, &family)?;
        if revisions.is_empty() {
            return Err(ApiError::not_found(format!(
                "no task definition family `{family}`; `cutover task-definitions list` shows them"
            )));
        }
        let pair = chosen(&family, &revisions, &compare)?;
        Ok((revisions, pair))
    };
    match read() {
        Ok((revisions, pair)) => {
            html_page(StatusCode::OK, render(&family, &revisions, pair, &viewer))
        }
        Err(err) => error_page(err, Some(&viewer)),
    }
}

fn render(
    family: &str,
    revisions: &[TaskDefinitionView],
    pair: Option<(u32, u32)>,
    viewer: &Viewer,
) -> Markup {
    let body_of =
        |revision: u32| revisions.iter().find(|r| r.revision == revision).map(|r| &r.body);
    let changes = pair.and_then(|(from, to)| Some(diff(body_of(from)?, body_of(to)?)));
    let main = html! {
        h1 { "Task definition " code { (family) } }
        section aria-labelledby="revisions-h" {
            h2 #revisions-h { "Revisions" }
            table.grid {
                thead { tr { th { "Revision" } th { "Status" } th { "Registered" } th { "Images" } } }
                tbody {
                    @for r in revisions.iter().rev() {
                        tr {
                            td { code { (family) ":" (r.revision) } }
                            td { span class=(if r.status == "ACTIVE" { "ok" } else { "muted" }) { (r.status) } }
                            td { time datetime=(r.registered_at) title=(control::access::utc_text(r.registered_at)) { (decide::clock_time(r.registered_at)) } }
                            td { (images(&r.body)) }
                        }
                    }
                }
            }
        }
        section aria-labelledby="diff-h" {
            h2 #diff-h { "Compare" }
            form.compare method="get" {
                label { "From " (select("from", revisions, pair.map(|p| p.0))) }
                label { " to " (select("to", revisions, pair.map(|p| p.1))) }
                " " button type="submit" { "Compare" }
            }
            @if let (Some((from, to)), Some(changes)) = (pair, &changes) {
                (diff_table(family, from, to, changes))
            }
        }
    };
    layout::page(&format!("Task definition {family}"), Some(viewer), main)
}

fn select(name: &str, revisions: &[TaskDefinitionView], selected: Option<u32>) -> Markup {
    html! {
        select name=(name) {
            @for r in revisions.iter().rev() {
                option value=(r.revision) selected[selected == Some(r.revision)] { (r.revision) }
            }
        }
    }
}

fn diff_table(family: &str, from: u32, to: u32, changes: &[Change]) -> Markup {
    html! {
        @if changes.is_empty() {
            p.muted #diff { (family) ":" (from) " and " (family) ":" (to) " are the same." }
        } @else {
            table.grid #diff {
                thead { tr { th { "Field" } th { (family) ":" (from) } th { (family) ":" (to) } } }
                tbody {
                    @for c in changes {
                        tr data-field=(c.field) {
                            td { code { (c.field) } }
                            td { @if let Some(v) = &c.before { del { code { (v) } } } @else { span.muted { "—" } } }
                            td { @if let Some(v) = &c.after { ins { code { (v) } } } @else { span.muted { "removed" } } }
                        }
                    }
                }
            }
        }
    }
}

/// Each container's image, as the revisions table lists them.
fn images(body: &serde_json::Value) -> Markup {
    let containers = body["containerDefinitions"].as_array().cloned().unwrap_or_default();
    html! {
        @for c in &containers {
            code { (c["name"].as_str().unwrap_or("?")) ": " (c["image"].as_str().unwrap_or("?")) } " "
        }
    }
}
