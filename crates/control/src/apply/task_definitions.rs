//! Task definitions as `apply` and deployments meet them: loaded from a file sent with the
//! request, or found registered; registered only when they differ from the latest revision; and
//! turned into what a runtime starts.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use model::Timestamp;
use store::Store;

use crate::api;
use crate::declared::ServiceDoc;
use crate::error::ApiError;

/// Each service's task definition, by service name, with its registered revision when the file
/// names a registered one (`None` when it comes from a file, to be registered by the commit).
pub(super) type ServiceTaskDefinitions = BTreeMap<String, (config::TaskDefinition, Option<u32>)>;

/// `family:revision` → (family, revision).
pub fn split_revision(id: &str) -> Option<(String, u32)> {
    let (family, revision) = id.rsplit_once(':')?;
    Some((family.to_string(), revision.parse().ok()?))
}

/// Parses and validates a task definition file, and makes the process runtime's relative
/// `image` directories absolute (relative to the file's own directory), so that the stored
/// revision means the same thing whoever starts its tasks.
pub fn load_task_definition(file: &api::FileUpload) -> Result<config::TaskDefinition, ApiError> {
    let parsed = config::parse_task_definition(&file.name, &file.text)
        .map_err(|errors| ApiError::invalid_file(&file.name, &errors))?;
    let mut td = parsed.value;
    if let Some(base) = &file.base_dir {
        for container in &mut td.container_definitions {
            let candidate = Path::new(base).join(&container.image);
            if !Path::new(&container.image).is_absolute()
                && candidate.is_dir()
                && let Ok(absolute) = candidate.canonicalize()
            {
                container.image = absolute.display().to_string();
            }
        }
    }
    Ok(td)
}

/// Registers a revision unless the family's latest active revision is identical; returns it.
pub(super) fn register_if_changed(
    tx: &store::Tx<'_>,
    td: &config::TaskDefinition,
    now: Timestamp,
) -> store::Result<(u32, bool)> {
    let body = serde_json::to_string(td)?;
    if let Some(latest) = tx.task_definition_latest(&td.family)? {
        let same =
            serde_json::from_str::<config::TaskDefinition>(&latest.body).is_ok_and(|l| l == *td);
        if same {
            return Ok((latest.revision, false));
        }
    }
    Ok((tx.task_definition_register(&td.family, &body, now.as_millis())?, true))
}

pub fn register_task_definition(
    store: &Store,
    file: &api::FileUpload,
    now: Timestamp,
) -> Result<(String, u32), ApiError> {
    let td = load_task_definition(file)?;
    let body = serde_json::to_string(&td)?;
    let revision =
        store.transaction(|tx| tx.task_definition_register(&td.family, &body, now.as_millis()))?;
    Ok((td.family, revision))
}

/// Looks a task definition up by `family:revision` or `family` (latest active).
pub(super) fn find_registered(
    tx: &store::Tx<'_>,
    reference: &str,
) -> store::Result<Option<store::TaskDefinitionRow>> {
    match split_revision(reference) {
        Some((family, revision)) => tx.task_definition_get(&family, revision),
        None => tx.task_definition_latest(reference),
    }
}

/// Resolves every service's task definition, from the files sent along or the registered
/// revisions, and checks its load-balanced container: all before anything else happens.
pub(super) fn resolve_for_services(
    store: &Store,
    request: &api::ApplyRequest,
    file: &config::CutoverFile,
) -> Result<ServiceTaskDefinitions, ApiError> {
    let mut resolved = ServiceTaskDefinitions::new();
    for (index, service) in file.services.iter().enumerate() {
        let td = match request.referenced.get(&service.task_definition) {
            Some(upload) => (load_task_definition(upload)?, None),
            // The client sends every referenced file it finds: this one is not there.
            None if config::names_a_file(&service.task_definition) => {
                return Err(missing_file(request, index, service));
            }
            None => {
                let registered = store.read(|tx| find_registered(tx, &service.task_definition))?;
                let Some(row) = registered else {
                    return Err(not_registered(request, index, service));
                };
                (serde_json::from_str(&row.body)?, Some(row.revision))
            }
        };
        check_lb_container(service, &td.0, &request.file.name)?;
        resolved.insert(service.name.clone(), td);
    }
    Ok(resolved)
}

/// A service's task definition file that the client did not send: it does not exist.
fn missing_file(
    request: &api::ApplyRequest,
    index: usize,
    service: &config::ServiceSpec,
) -> ApiError {
    let file_name = &request.file.name;
    let field = format!("services[{index}].task_definition");
    let references = config::file_references(&request.file.text);
    let reference = references.iter().find(|r| r.field == field);
    match (reference, &request.file.base_dir) {
        (Some(reference), Some(base)) => {
            let looked_at = Path::new(base).join(&reference.path);
            let missing = reference.missing(file_name, &looked_at.display().to_string());
            ApiError::invalid_file(file_name, &config::Errors::one(missing))
        }
        _ => ApiError::bad_request(format!(
            "{file_name}: {field}: task definition file `{}` was not sent with the \
             file; apply with `cutover apply -f`, which sends the files it names",
            service.task_definition
        )),
    }
}

/// A service's task definition named as registered, which is not.
fn not_registered(
    request: &api::ApplyRequest,
    index: usize,
    service: &config::ServiceSpec,
) -> ApiError {
    let file_name = &request.file.name;
    let pos = config::task_definition_pos(&request.file.text, index);
    let unknown = config::Diagnostic::error(
        file_name,
        pos.unwrap_or_default(),
        &format!("services[{index}].task_definition"),
        format!(
            "no registered task definition `{}` (`cutover task-definitions \
             list`); register it, or name a taskdef.json file next to this file",
            service.task_definition
        ),
    );
    ApiError::invalid_file(file_name, &config::Errors::one(unknown))
}

fn check_lb_container(
    service: &config::ServiceSpec,
    td: &config::TaskDefinition,
    file: &str,
) -> Result<(), ApiError> {
    let Some(lb) = &service.load_balancer else { return Ok(()) };
    let Some(container) = td.container(&lb.container_name) else {
        return Err(ApiError::bad_request(format!(
            "{file}: service {}: load_balancer.container_name `{}` is not a container of task \
             definition {} (containers: {}); fix one of the two",
            service.name,
            lb.container_name,
            td.family,
            td.container_definitions.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
        )));
    };
    if !container.port_mappings.iter().any(|p| p.container_port == lb.container_port) {
        return Err(ApiError::bad_request(format!(
            "{file}: service {}: load_balancer.container_port {} is not a containerPort of container \
             `{}` (mapped: {:?}); add a portMappings entry or fix the port",
            service.name,
            lb.container_port,
            container.name,
            container.port_mappings.iter().map(|p| p.container_port).collect::<Vec<_>>()
        )));
    }
    Ok(())
}

/// Converts a stored task definition into what a runtime starts.
pub fn task_spec(
    task_id: &str,
    service: &ServiceDoc,
    revision: &str,
    deployment_id: Option<String>,
    td: &config::TaskDefinition,
    lb_container: Option<(String, u16)>,
) -> runtime::TaskSpec {
    runtime::TaskSpec {
        task_id: task_id.to_string(),
        service: service.name.clone(),
        revision: revision.to_string(),
        deployment_id,
        containers: td
            .container_definitions
            .iter()
            .map(|c| runtime::ContainerSpec {
                name: c.name.clone(),
                image: c.image.clone(),
                essential: c.essential,
                entry_point: c.entry_point.clone(),
                command: c.command.clone(),
                environment: c
                    .environment
                    .iter()
                    .map(|kv| (kv.name.clone(), kv.value.clone()))
                    .collect(),
                working_directory: c.working_directory.clone(),
                ports: c.port_mappings.iter().map(|p| p.container_port).collect(),
                health_check: c.health_check.as_ref().map(|h| runtime::HealthCheckSpec {
                    command: h.command.clone(),
                    interval: Duration::from_secs(h.interval.into()),
                    timeout: Duration::from_secs(h.timeout.into()),
                    retries: h.retries,
                    start_period: Duration::from_secs(h.start_period.into()),
                }),
                stop_timeout: Duration::from_secs(c.stop_timeout.unwrap_or(30).into()),
                cpu: c.cpu,
                memory_mib: c.memory,
                memory_reservation_mib: c.memory_reservation,
                depends_on: c
                    .depends_on
                    .iter()
                    .map(|d| (d.container_name.clone(), d.condition.as_str().to_string()))
                    .collect(),
                labels: c.docker_labels.clone(),
            })
            .collect(),
        lb_container,
        cpu: td.cpu.clone(),
        memory: td.memory.clone(),
        network: service.network.clone(),
        placement_constraints: td
            .placement_constraints
            .iter()
            .filter_map(config::PlacementConstraint::swarm_constraint)
            .collect(),
    }
}
