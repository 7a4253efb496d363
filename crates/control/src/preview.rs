//! `deployment-configs preview`: a config's whole timeline before anyone runs it. The same
//! function answers the API and the CLI offline (a predefined config, or one declared in a
//! cutover.yaml), so both always print the same schedule.

use std::time::Duration;

use crate::api::{PreviewStep, PreviewView};
use crate::declared::{DeploymentGroupDoc, deployment_group_doc};

#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error("{0}")]
    InvalidFile(config::Errors),
    #[error(
        "no deployment config `{name}`: it is neither predefined (CodeDeployDefault.*) nor \
         declared in {file}"
    )]
    UnknownConfig { name: String, file: String },
    #[error("no deployment group `{key}` in {file}; name it as application/group")]
    UnknownGroup { key: String, file: String },
}

/// The timeline of `config`, with `group`'s test listener, waits and hooks when given.
pub fn preview_view(
    config: &model::DeploymentConfig,
    group: Option<&DeploymentGroupDoc>,
) -> PreviewView {
    let hooks = group
        .map(|g| {
            g.hooks
                .iter()
                .filter_map(|(event, name)| {
                    Some((
                        model::LifecycleEvent::parse(event)?,
                        rollout::Hook {
                            name: name.clone(),
                            timeout: Duration::from_millis(g.hook_timeout_ms),
                        },
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let spec = rollout::RolloutSpec {
        deployment_id: "preview".into(),
        routing: config.routing,
        has_test_listener: group.is_none_or(|g| g.test_listener.is_some()),
        hooks,
        ready_wait: group.and_then(|g| g.ready_wait_ms).map(Duration::from_millis),
        termination_wait: group
            .map_or(Duration::ZERO, |g| Duration::from_millis(g.termination_wait_ms)),
        auto_rollback: rollout::AutoRollback {
            on_failure: true,
            on_alarm: true,
            on_stop_request: false,
        },
        install_timeout: rollout::INSTALL_TIMEOUT_DEFAULT,
        mirror: config.mirror,
    };
    let steps: Vec<PreviewStep> = rollout::preview(&spec)
        .into_iter()
        .map(|(at, effect)| PreviewStep { at_ms: at.as_millis() as u64, what: effect.to_string() })
        .collect();
    PreviewView {
        name: config.name.clone(),
        routing: config.routing.to_string(),
        total_ms: steps.last().map_or(0, |s| s.at_ms),
        steps,
    }
}

/// The preview of a predefined config (`CodeDeployDefault.*`), which needs no server.
pub fn preview_predefined(name: &str) -> Option<PreviewView> {
    model::DeploymentConfig::predefined(name).map(|config| preview_view(&config, None))
}

/// The preview of config `name` as cutover.yaml `text` declares it (or a predefined one), with
/// the file's deployment group `group` (`application/group`) when given.
pub fn preview_file(
    name: &str,
    group: Option<&str>,
    file: &str,
    text: &str,
) -> Result<PreviewView, PreviewError> {
    let parsed = config::parse_cutover_file(file, text).map_err(PreviewError::InvalidFile)?;
    let declared = parsed.value;
    let config = config::resolve_deployment_config(name, &declared.deployment_configs)
        .ok_or_else(|| PreviewError::UnknownConfig { name: name.into(), file: file.into() })?;
    let group = match group {
        Some(key) => Some(
            declared
                .deployment_groups
                .iter()
                .find(|g| format!("{}/{}", g.application, g.name) == key)
                .map(deployment_group_doc)
                .ok_or_else(|| PreviewError::UnknownGroup { key: key.into(), file: file.into() })?,
        ),
        None => None,
    };
    Ok(preview_view(&config, group.as_ref()))
}
