//! `/history`: every deployment, newest first, filtered by deployment group, status and how
//! recent, a page of [`PAGE`] at a time — the CodeDeploy console's deployment history. It reads
//! what `GET /v1/deployments` answers for the same query (`control::http::deployment_views`),
//! so a filter the API refuses is refused here with the same message. Pipeline executions have
//! their history on each pipeline's page.

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use control::access::CallerBindings;
use control::api::DeploymentView;
use control::http::{AppState, DeploymentsQuery};
use maud::{Markup, html};
use serde::Deserialize;

use crate::deployment::status_class;
use crate::layout::{self, Viewer};
use crate::{error_page, html_page, viewer};

/// Deployments on one page.
const PAGE: u32 = 50;

/// How far back the page looks, as the form offers it: `(value, label, milliseconds)`.
const WITHIN: [(&str, &str, u64); 4] = [
    ("1h", "the last hour", 3_600_000),
    ("24h", "the last 24 hours", 86_400_000),
    ("7d", "the last 7 days", 7 * 86_400_000),
    ("30d", "the last 30 days", 30 * 86_400_000),
];

/// The page's own query: the form's fields, and the cursor of the next page.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct HistoryQuery {
    #[serde(default)]
    group: String,
    #[serde(default)]
    status: String,
    /// One of [`WITHIN`]'s values; empty for all time.
    #[serde(default)]
    within: String,
    before: Option<String>,
}

impl HistoryQuery {
    /// The API's query for this page, or what is wrong with a field the form would not send.
    fn api_query(&self) -> Result<DeploymentsQuery, String> {
        let within_ms = match self.within.as_str() {
            "" => None,
            value => match WITHIN.iter().find(|(v, _, _)| *v == value) {
                Some((_, _, ms)) => Some(*ms),
                None => {
                    let offered: Vec<&str> = WITHIN.iter().map(|(v, _, _)| *v).collect();
                    return Err(format!(
                        "`within` is one of {} (or empty for all time), not `{value}`",
                        offered.join(", ")
                    ));
                }
            },
        };
        let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Ok(DeploymentsQuery {
            group: nonempty(&self.group),
            status: nonempty(&self.status),
            within_ms,
            before: self.before.clone(),
            limit: Some(PAGE),
            ..DeploymentsQuery::default()
        })
    }

    /// This page's filters with `before` as the cursor: the link to the page of the deployments
    /// older than `before`, or to the newest with `None`.
    fn page_after(&self, before: Option<&str>) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (key, value) in
            [("group", &self.group), ("status", &self.status), ("within", &self.within)]
        {
            if !value.is_empty() {
                query.append_pair(key, value);
            }
        }
        if let Some(before) = before {
            query.append_pair("before", before);
        }
        format!("/history?{}", query.finish())
    }
}

pub async fn page(
    State(state): State<AppState>,
    Query(query): Query<HistoryQuery>,
    Extension(CallerBindings(bindings)): Extension<CallerBindings>,
    headers: HeaderMap,
) -> Response {
    let viewer = viewer(&state, &headers, &bindings);
    let api_query = match query.api_query() {
        Ok(api_query) => api_query,
        Err(message) => return error_page(control::ApiError::bad_request(message), Some(&viewer)),
    };
    let groups = match control::http::deployment_group_keys(&state) {
        Ok(groups) => groups,
        Err(err) => return error_page(err, Some(&viewer)),
    };
    match control::http::deployment_views(&state, &api_query) {
        Ok(deployments) => {
            html_page(StatusCode::OK, render(&query, &groups, &deployments, &viewer))
        }
        Err(err) => error_page(err, Some(&viewer)),
    }
}

fn render(
    query: &HistoryQuery,
    groups: &[String],
    deployments: &[DeploymentView],
    viewer: &Viewer,
) -> Markup {
    let full = deployments.len() == PAGE as usize;
    let main = html! {
        h1 { "Deployment history" }
        form.filters method="get" action="/history" {
            label { "Group "
                select name="group" {
                    option value="" selected[query.group.is_empty()] { "every group" }
                    @for g in groups { option value=(g) selected[*g == query.group] { (g) } }
                }
            }
            label { " Status "
                select name="status" {
                    option value="" selected[query.status.is_empty()] { "any" }
                    @for s in model::DeploymentStatus::ALL {
                        option value=(s.as_str()) selected[s.as_str() == query.status] { (s.as_str()) }
                    }
                }
            }
            label { " Created within "
                select name="within" {
                    option value="" selected[query.within.is_empty()] { "all time" }
                    @for (value, label, _) in WITHIN {
                        option value=(value) selected[value == query.within] { (label) }
                    }
                }
            }
            " " button type="submit" { "Show" }
        }
        @if deployments.is_empty() {
            p.muted { "No deployment matches." }
        } @else {
            table.grid {
                thead { tr { th { "Deployment" } th { "Group" } th { "Task definition" } th { "Status" } th { "Error" } th { "Created (UTC)" } } }
                tbody {
                    @for d in deployments {
                        tr {
                            td { a href=(format!("/deployments/{}", d.id)) { (d.id) } }
                            td { (d.application) "/" (d.deployment_group) }
                            td { (d.task_definition) }
                            td { span class=(status_class(&d.status)) { (d.status) } }
                            td { @if let Some(code) = &d.error_code { code { (code) } } }
                            td { time datetime=(d.created_at) title=(control::access::utc_text(d.created_at)) { (control::access::utc_text(d.created_at)) } }
                        }
                    }
                }
            }
        }
        nav.pages aria-label="Pages" {
            @if query.before.is_some() { a href=(query.page_after(None)) { "Newest" } " " }
            @if full && let Some(last) = deployments.last() {
                a href=(query.page_after(Some(&last.id))) rel="next" { "Older →" }
            }
        }
    };
    layout::page("Deployment history", Some(viewer), main)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(group: &str, status: &str, within: &str, before: Option<&str>) -> HistoryQuery {
        HistoryQuery {
            group: group.into(),
            status: status.into(),
            within: within.into(),
            before: before.map(String::from),
        }
    }

    #[test]
    fn the_form_s_fields_become_the_api_s_query_and_empty_ones_filter_nothing() {
        let api = query("web/web-prod", "Stopped", "24h", Some("d-7")).api_query().unwrap();
        assert_eq!(api.group.as_deref(), Some("web/web-prod"));
        assert_eq!(api.status.as_deref(), Some("Stopped"));
        assert_eq!(api.within_ms, Some(86_400_000));
        assert_eq!(api.before.as_deref(), Some("d-7"));
        assert_eq!(api.limit, Some(PAGE));
        let api = query("", "", "", None).api_query().unwrap();
        assert_eq!((api.group, api.status, api.within_ms, api.before), (None, None, None, None));
        let err = query("", "", "2w", None).api_query().unwrap_err();
        assert_eq!(err, "`within` is one of 1h, 24h, 7d, 30d (or empty for all time), not `2w`");
    }

    #[test]
    fn page_links_keep_the_filters_and_carry_the_cursor() {
        let q = query("web/web-prod", "Failed", "", Some("d-9"));
        assert_eq!(
            q.page_after(Some("d-3")),
            "/history?group=web%2Fweb-prod&status=Failed&before=d-3"
        );
        assert_eq!(q.page_after(None), "/history?group=web%2Fweb-prod&status=Failed");
    }
}
