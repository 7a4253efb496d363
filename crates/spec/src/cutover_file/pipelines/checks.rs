//! What pipelines name elsewhere in the file: repositories, deployment groups, services.

use super::PipelineMeta;
use crate::cutover_file::{GroupMeta, Named, check_unique};
use crate::decode::Cx;
use crate::diag::suggest;

// ---------------------------------------------------------------------------------------------
// Checks across items.

pub(in crate::cutover_file) fn cross_check(
    cx: &mut Cx<'_>,
    repositories: &[Named],
    pipelines: &[PipelineMeta],
    groups: &[GroupMeta],
    services: &[&str],
) {
    check_unique(cx, "repository", repositories);
    check_unique(cx, "pipeline", pipelines.iter().filter_map(|p| p.name.as_ref()));
    let repository_names: Vec<&str> = repositories.iter().map(|(n, _)| n.as_str()).collect();
    let declared_groups: Vec<String> = groups
        .iter()
        .filter_map(|g| Some(format!("{}/{}", g.application.as_ref()?, g.name.as_ref()?.0)))
        .collect();
    for p in pipelines {
        if let Some((repository, loc)) = &p.repository
            && !repository_names.contains(&repository.as_str())
        {
            let mut message = format!(
                "repository `{repository}` is not declared in this file; it must exist (`cutover \
                 repos create {repository}`) before a push can start the pipeline"
            );
            if let Some(s) = suggest(repository, repository_names.iter().copied()) {
                message.push_str(&format!("; did you mean `{s}`?"));
            }
            cx.note(loc.pos, &loc.path, message);
        }
        for (group, loc) in &p.deployment_groups {
            let text = group.to_string();
            if declared_groups.contains(&text) {
                continue;
            }
            let mut message = format!(
                "deployment group {text} is not declared in this file; it must exist when the \
                 pipeline deploys"
            );
            if let Some(s) = suggest(&text, declared_groups.iter().map(String::as_str)) {
                message.push_str(&format!("; did you mean `{s}`?"));
            }
            cx.note(loc.pos, &loc.path, message);
        }
        for (service, loc) in &p.ecs_services {
            let owner =
                groups.iter().find(|g| g.service.as_ref().is_some_and(|(s, _)| s == service));
            if let Some(g) = owner {
                let group = format!(
                    "{}/{}",
                    g.application.as_deref().unwrap_or("?"),
                    g.name.as_ref().map_or("?", |(n, _)| n.as_str())
                );
                cx.error(
                    loc.pos,
                    &loc.path,
                    format!(
                        "service `{service}` is released blue/green by deployment group {group}; \
                         use a `deploy` action with `deployment_group: {group}` (deploy_ecs, like \
                         ECS's own deploy action, is for services without a deployment group)"
                    ),
                );
            } else if !services.contains(&service.as_str()) {
                let mut message = format!(
                    "service `{service}` is not declared in this file; it must exist when the \
                     pipeline deploys"
                );
                if let Some(s) = suggest(service, services.iter().copied()) {
                    message.push_str(&format!("; did you mean `{s}`?"));
                }
                cx.note(loc.pos, &loc.path, message);
            }
        }
    }
}
