//! A pipeline as it is stored: one versioned document (`store::documents`, kind `pipeline`)
//! holding its definition, its machine and a definition waiting to replace it, written with every
//! step. The cutover before documents kept a pipeline as a `ci_pipelines` row without a version
//! (its version 0); such a row is read as the document it stands for, until the pipeline's first
//! step writes the document, which from then on is what is read.

use std::collections::BTreeMap;

use pipeline::Pipeline;
use pipeline::definition::PipelineDecl;
use serde::{Deserialize, Serialize};
use store::{Document, DocumentStore};

use crate::core::Slot;

/// A pipeline's stored state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PipelineDoc {
    pub definition: PipelineDecl,
    pub machine: Pipeline,
    /// A changed definition waiting for the running executions to finish.
    pub pending: Option<PipelineDecl>,
    /// +1 on every change of the definition (the API's `version`).
    pub revision: u64,
}

impl Document for PipelineDoc {
    const KIND: &'static str = "pipeline";
    const VERSION: u32 = 1;
}

impl PipelineDoc {
    pub fn of(slot: &Slot) -> PipelineDoc {
        PipelineDoc {
            definition: slot.def.clone(),
            machine: slot.machine.clone(),
            pending: slot.pending.clone(),
            revision: slot.version,
        }
    }

    fn into_slot(self) -> Slot {
        Slot {
            def: self.definition,
            machine: self.machine,
            version: self.revision,
            pending: self.pending,
        }
    }
}

/// Why a stored pipeline cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Store(#[from] store::Error),
    /// A `ci_pipelines` row of the cutover before documents that does not read.
    #[error(
        "pipeline {name} (as stored before versioned documents): its {part} cannot be read: {source}"
    )]
    Legacy { name: String, part: &'static str, source: serde_json::Error },
}

/// Every stored pipeline by name: its document, else its `ci_pipelines` row (version 0).
pub fn load(tx: &store::Tx<'_>) -> Result<BTreeMap<String, Slot>, LoadError> {
    let mut slots: BTreeMap<String, Slot> = tx
        .doc_list::<PipelineDoc>()?
        .into_iter()
        .map(|(name, doc)| (name, doc.into_slot()))
        .collect();
    for row in tx.ci_pipeline_list()? {
        if slots.contains_key(&row.name) {
            continue; // written as a document since: the row is what it was before
        }
        let legacy = |part, source| LoadError::Legacy { name: row.name.clone(), part, source };
        let def =
            crate::legacy::read_definition(&row.definition).map_err(|e| legacy("definition", e))?;
        let machine = serde_json::from_str(&row.machine).map_err(|e| legacy("machine", e))?;
        let pending = row
            .pending_definition
            .as_deref()
            .map(crate::legacy::read_definition)
            .transpose()
            .map_err(|e| legacy("pending definition", e))?;
        slots.insert(row.name.clone(), Slot { def, machine, version: row.version, pending });
    }
    Ok(slots)
}

/// The definition of pipeline `name` that its running executions run (a changed one waits in
/// `pending` until they finish), or `None` once it is deleted.
pub fn definition(tx: &store::Tx<'_>, name: &str) -> Result<Option<PipelineDecl>, LoadError> {
    if let Some(doc) = tx.doc_get::<PipelineDoc>(name)? {
        return Ok(Some(doc.definition));
    }
    Ok(load(tx)?.remove(name).map(|slot| slot.def))
}

/// Writes the pipeline's document.
pub fn put(tx: &store::Tx<'_>, name: &str, doc: &PipelineDoc, now: u64) -> store::Result<()> {
    tx.doc_put(name, doc, now)
}

/// Forgets a pipeline: its document, the row an older cutover wrote, and the last commit seen on
/// its watched source (one created again under the same name starts afresh). Its executions and
/// builds stay: they are history.
pub fn delete(tx: &store::Tx<'_>, name: &str) -> store::Result<()> {
    tx.doc_delete::<PipelineDoc>(name)?;
    tx.ci_pipeline_delete(name)?;
    Ok(())
}
