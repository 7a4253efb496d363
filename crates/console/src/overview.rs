//! The overview (`/`): what waits for a human, every deployment group with what serves its
//! production and its last deployment, every service's counts, and the newest deployments.

use std::collections::BTreeMap;

use control::ApiError;
use control::api::{DeploymentView, ServiceView};
use control::http::AppState;
use maud::{Markup, html};

use crate::decide;
use crate::deployment::status_class;
use crate::layout::{self, Viewer};

/// How many of the newest deployments the overview lists.
const RECENT: u32 = 15;

pub struct Overview {
    /// Deployments in their ready wait: each waits for someone to reroute traffic.
    pub waiting: Vec<DeploymentView>,
    /// Every group, with its service and its last deployment.
    pub groups: Vec<(String, Option<ServiceView>, Option<DeploymentView>)>,
    pub services: Vec<ServiceView>,
    pub recent: Vec<DeploymentView>,
    /// Every pipeline with its newest execution.
    pub pipelines: Vec<pipelines::api::PipelineSummary>,
    /// Pipeline executions at a manual approval: each waits for someone to approve or reject.
    pub approvals: Vec<crate::pipeline_pages::Approval>,
    /// Every target group, each linking to its metrics.
    pub target_groups: Vec<String>,
}

/// Every deployment the page shows is read with the others (`deployment_views`), and the
/// declared services and groups once: a few queries however many groups there are.
pub fn read(state: &AppState) -> Result<Overview, ApiError> {
    let (active, last_rows, recent_rows) = state.store.read(|tx| {
        Ok((
            tx.deployment_list_active()?,
            tx.deployment_last_of_each_group()?,
            tx.deployment_list(RECENT)?,
        ))
    })?;
    let waiting_rows: Vec<_> = active.into_iter().filter(|row| row.status == "Ready").collect();
    let (waiting_count, last_count) = (waiting_rows.len(), last_rows.len());
    let mut views = control::engine::deployment_views(
        &state.store,
        &[waiting_rows, last_rows, recent_rows].concat(),
    )?
    .into_iter();
    let waiting: Vec<DeploymentView> = views.by_ref().take(waiting_count).collect();
    let mut last_of_group: BTreeMap<String, DeploymentView> = views
        .by_ref()
        .take(last_count)
        .map(|view| (format!("{}/{}", view.application, view.deployment_group), view))
        .collect();
    let recent: Vec<DeploymentView> = views.collect();
    let (services, group_keys) = control::http::service_views_and_group_keys(state)?;
    let service_of_group: BTreeMap<&str, &ServiceView> =
        services.iter().filter_map(|s| Some((s.deployment_group.as_deref()?, s))).collect();
    let groups = group_keys
        .into_iter()
        .map(|key| {
            let service = service_of_group.get(key.as_str()).map(|s| (*s).clone());
            let last = last_of_group.remove(&key);
            (key, service, last)
        })
        .collect();
    let (pipelines, approvals) = crate::pipeline_pages::read_for_overview(state)?;
    let target_groups = control::http::target_group_names(state)?;
    Ok(Overview { waiting, groups, services, recent, pipelines, approvals, target_groups })
}

pub fn render(overview: &Overview, viewer: &Viewer) -> Markup {
    let main = html! {
        h1 { "Overview" }
        section aria-labelledby="waiting-h" {
            h2 #waiting-h { "Waits for a human" }
            @if overview.waiting.is_empty() && overview.approvals.is_empty() {
                p.muted { "Nothing waits for you." }
            } @else {
                ul.waiting {
                    @for d in &overview.waiting {
                        li {
                            a href=(link(d)) { (d.id) } " · " strong { (d.application) "/" (d.deployment_group) }
                            " · ready wait: green (" (d.task_definition) ") is installed; reroute traffic when it is right"
                        }
                    }
                    @for a in &overview.approvals { li { (crate::pipeline_pages::approval_item(a)) } }
                }
            }
        }
        section aria-labelledby="groups-h" {
            h2 #groups-h { "Deployment groups" }
            table.grid {
                thead { tr { th { "Group" } th { "Production" } th { "Split (original / replacement)" } th { "Last deployment" } } }
                tbody {
                    @for (key, service, last) in &overview.groups {
                        tr {
                            td { strong { (key) } }
                            td { @if let Some(s) = service { (s.task_definition.as_deref().unwrap_or("—")) } }
                            td { (split(last.as_ref())) }
                            td { @if let Some(d) = last { (deployment_cell(d)) } @else { span.muted { "none yet" } } }
                        }
                    }
                }
            }
        }
        section aria-labelledby="services-h" {
            h2 #services-h { "Services" }
            table.grid {
                thead { tr { th { "Service" } th { "Runtime" } th.num { "Desired" } th.num { "Running" } th.num { "Healthy" } th { "Task definition" } } }
                tbody {
                    @for s in &overview.services {
                        tr {
                            td { a href=(format!("/services/{}", s.name)) { strong { (s.name) } } }
                            td { (s.runtime) }
                            td.num { (s.desired_count) }
                            td.num { (s.running_count) }
                            td.num { (s.task_sets.iter().filter(|t| t.status != "DRAINING").map(|t| t.healthy_count).sum::<u32>()) }
                            td { (task_definition_link(s.task_definition.as_deref())) }
                        }
                    }
                }
            }
        }
        @if !overview.pipelines.is_empty() {
            section aria-labelledby="pipelines-h" {
                h2 #pipelines-h { "Pipelines" }
                (crate::pipeline_pages::pipelines_table(&overview.pipelines))
            }
        }
        section aria-labelledby="metrics-h" {
            h2 #metrics-h { "Metrics" }
            p {
                "Target groups (their targets' health · their metrics): "
                @for (i, name) in overview.target_groups.iter().enumerate() {
                    @if i > 0 { " · " }
                    a href=(format!("/target-groups/{name}")) { (name) }
                    " (" a href=(format!("/target-groups/{name}/metrics")) { "metrics" } ")"
                }
                " · " a href="/alarms" { "all alarms" }
            }
        }
        section aria-labelledby="recent-h" {
            h2 #recent-h { "Recent deployments" }
            table.grid {
                thead { tr { th { "Deployment" } th { "Group" } th { "Task definition" } th { "Status" } th { "Created" } } }
                tbody {
                    @for d in &overview.recent {
                        tr {
                            td { a href=(link(d)) { (d.id) } }
                            td { (d.application) "/" (d.deployment_group) }
                            td { (d.task_definition) }
                            td { span class=(status_class(&d.status)) { (d.status) } }
                            td { time datetime=(d.created_at) title=(control::access::utc_text(d.created_at)) { (decide::clock_time(d.created_at)) } }
                        }
                    }
                }
            }
        }
    };
    layout::page("Overview", Some(viewer), main)
}

fn link(d: &DeploymentView) -> String {
    format!("/deployments/{}", d.id)
}

/// The production split while a deployment moves traffic; all on the original otherwise.
fn split(last: Option<&DeploymentView>) -> Markup {
    match last {
        Some(d) if !decide::is_final(&d.status) => {
            let green = d.traffic.production_green_percent;
            html! { (100 - green) "% / " (green) "%" }
        }
        _ => html! { span.muted { "100% on the primary task set" } },
    }
}

fn deployment_cell(d: &DeploymentView) -> Markup {
    html! {
        a href=(link(d)) { (d.id) } " "
        span class=(status_class(&d.status)) { (d.status) }
        " " span.muted { (d.task_definition) }
    }
}

/// `family:revision`, linked to the family's revisions and their diff.
fn task_definition_link(task_definition: Option<&str>) -> Markup {
    match task_definition {
        Some(td) => {
            let family = td.rsplit_once(':').map_or(td, |(family, _)| family);
            html! { a href=(format!("/task-definitions/{family}")) { (td) } }
        }
        None => html! { "—" },
    }
}
