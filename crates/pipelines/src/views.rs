//! The pipelines' read models for readers outside the loop (the web console, the control plane's
//! streams): what the API answers, read from the store alone. None of these asks the loop, so a
//! reader woken by a write can read as often as it is woken without waking anything itself.

use pipeline::definition::SourceLocation;

use crate::api::{Build, Execution, ExecutionSummary, PipelineSummary};
use crate::routes::{definition_of, execution_view, record_of, summary};
use crate::{Error, stored};

/// Every declared pipeline as `GET /v1/pipelines` lists it, by name.
pub fn pipelines(store: &store::Store) -> Result<Vec<PipelineSummary>, Error> {
    let slots =
        store.read(|tx| Ok(stored::load(tx)))?.map_err(|err| Error::Internal(err.to_string()))?;
    slots
        .into_iter()
        .map(|(name, slot)| {
            let latest = executions(store, &name, 1)?.into_iter().next();
            let def = &slot.def;
            Ok(PipelineSummary {
                version: slot.version,
                source: match &def.source.location {
                    SourceLocation::Repository(r) => format!("repository:{r}"),
                    SourceLocation::Url { url, .. } => url.clone(),
                },
                branch: def.source.branch.clone(),
                execution_mode: def.execution_mode.as_str().into(),
                stages: def.machine_spec().stages.into_iter().map(|s| s.name).collect(),
                latest_execution: latest,
                update_pending: slot.pending.is_some(),
                name,
            })
        })
        .collect()
}

/// The newest `limit` executions of `pipeline`, newest first.
pub fn executions(
    store: &store::Store,
    pipeline: &str,
    limit: u32,
) -> Result<Vec<ExecutionSummary>, Error> {
    let rows = store.read(|tx| tx.ci_execution_list(pipeline, limit))?;
    Ok(rows.iter().filter_map(record_of).map(|rec| summary(pipeline, &rec)).collect())
}

/// The newest `limit` executions of `pipeline` in full, newest first.
pub fn executions_in_full(
    store: &store::Store,
    pipeline: &str,
    limit: u32,
) -> Result<Vec<Execution>, Error> {
    let rows = store.read(|tx| tx.ci_execution_list(pipeline, limit))?;
    let definition = definition_of(store, pipeline);
    Ok(rows
        .iter()
        .filter_map(record_of)
        .map(|rec| execution_view(pipeline, &rec, definition.as_ref()))
        .collect())
}

/// One execution as `GET /v1/pipelines/{name}/executions/{id}` answers it.
pub fn execution(store: &store::Store, id: &str) -> Result<Option<Execution>, Error> {
    let Some(row) = store.read(|tx| tx.ci_execution_get(id))? else { return Ok(None) };
    let rec = record_of(&row)
        .ok_or_else(|| Error::Internal(format!("execution `{id}` as stored cannot be read")))?;
    let definition = definition_of(store, &row.pipeline);
    Ok(Some(execution_view(&row.pipeline, &rec, definition.as_ref())))
}

/// One build as `GET /v1/builds/{id}` answers it.
pub fn build(store: &store::Store, id: &str) -> Result<Option<Build>, Error> {
    let Some(row) = store.read(|tx| tx.ci_build_get(id))? else { return Ok(None) };
    serde_json::from_str(&row.body)
        .map(Some)
        .map_err(|err| Error::Internal(format!("build `{id}` as stored cannot be read: {err}")))
}
