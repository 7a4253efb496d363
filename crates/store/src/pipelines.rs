//! Queries for pipelines (`pipelines`): hosted repositories, each pipeline's definition and machine
//! snapshot, the long-term execution history, builds, the external jobs (deployments) an action
//! started, and the last commit seen on each watched source.

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::{Result, Tx};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CiPipelineRow {
    pub name: String,
    /// The pipeline's definition (JSON owned by `pipelines`).
    pub definition: String,
    /// The `pipeline::Pipeline` snapshot (JSON).
    pub machine: String,
    /// A changed definition waiting for the running executions to finish.
    pub pending_definition: Option<String>,
    /// +1 on every change of the definition.
    pub version: u64,
    pub updated_at: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CiExecutionRow {
    pub pipeline: String,
    pub id: String,
    pub seq: u64,
    pub status: String,
    /// The execution's record (JSON owned by `pipelines`).
    pub record: String,
    pub started_at: u64,
    pub ended_at: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CiBuildRow {
    pub id: String,
    pub pipeline: String,
    pub execution_id: String,
    pub status: String,
    /// The build's details (JSON owned by `pipelines`).
    pub body: String,
    pub started_at: u64,
    pub ended_at: Option<u64>,
}

fn opt_u64(v: Option<i64>) -> Option<u64> {
    v.map(|v| v as u64)
}

impl Tx<'_> {
    // -- hosted repositories

    /// `false` when it already existed.
    pub fn ci_repository_create(&self, name: &str, now: u64) -> Result<bool> {
        let n = self.tx.execute(
            "INSERT INTO ci_repositories (name, created_at) VALUES (?1, ?2)
             ON CONFLICT (name) DO NOTHING",
            params![name, now as i64],
        )?;
        Ok(n > 0)
    }

    /// Name and creation time, by name.
    pub fn ci_repository_list(&self) -> Result<Vec<(String, u64)>> {
        let mut stmt =
            self.tx.prepare("SELECT name, created_at FROM ci_repositories ORDER BY name")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// `false` when there was no such repository.
    pub fn ci_repository_delete(&self, name: &str) -> Result<bool> {
        let n = self.tx.execute("DELETE FROM ci_repositories WHERE name = ?1", [name])?;
        Ok(n > 0)
    }

    // -- pipelines

    pub fn ci_pipeline_put(&self, row: &CiPipelineRow) -> Result<()> {
        self.tx.execute(
            "INSERT INTO ci_pipelines (name, definition, machine, pending_definition, version,
                 updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (name) DO UPDATE SET definition = excluded.definition,
                 machine = excluded.machine, pending_definition = excluded.pending_definition,
                 version = excluded.version, updated_at = excluded.updated_at",
            params![
                row.name,
                row.definition,
                row.machine,
                row.pending_definition,
                row.version as i64,
                row.updated_at as i64
            ],
        )?;
        Ok(())
    }

    /// Only the machine snapshot: the hot path, after every step.
    pub fn ci_pipeline_set_machine(&self, name: &str, machine: &str, now: u64) -> Result<()> {
        self.tx.execute(
            "UPDATE ci_pipelines SET machine = ?2, updated_at = ?3 WHERE name = ?1",
            params![name, machine, now as i64],
        )?;
        Ok(())
    }

    /// Forgets a pipeline's definition and machine, and the last commit seen on its watched
    /// source (a pipeline created again under the same name starts afresh). Its executions and
    /// builds stay: they are history.
    pub fn ci_pipeline_delete(&self, name: &str) -> Result<bool> {
        let n = self.tx.execute("DELETE FROM ci_pipelines WHERE name = ?1", [name])?;
        self.tx.execute("DELETE FROM ci_sources WHERE pipeline = ?1", [name])?;
        Ok(n > 0)
    }

    pub fn ci_pipeline_list(&self) -> Result<Vec<CiPipelineRow>> {
        let mut stmt = self.tx.prepare(
            "SELECT name, definition, machine, pending_definition, version, updated_at
             FROM ci_pipelines ORDER BY name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(CiPipelineRow {
                name: r.get(0)?,
                definition: r.get(1)?,
                machine: r.get(2)?,
                pending_definition: r.get(3)?,
                version: r.get::<_, i64>(4)? as u64,
                updated_at: r.get::<_, i64>(5)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    // -- executions

    pub fn ci_execution_put(&self, row: &CiExecutionRow) -> Result<()> {
        self.tx.execute(
            "INSERT INTO ci_executions (pipeline, id, seq, status, record, started_at, ended_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (pipeline, id) DO UPDATE SET status = excluded.status,
                 record = excluded.record, ended_at = excluded.ended_at",
            params![
                row.pipeline,
                row.id,
                row.seq as i64,
                row.status,
                row.record,
                row.started_at as i64,
                row.ended_at.map(|v| v as i64)
            ],
        )?;
        Ok(())
    }

    fn ci_execution_rows(
        &self,
        sql: &str,
        p: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<CiExecutionRow>> {
        let mut stmt = self.tx.prepare(sql)?;
        let rows = stmt.query_map(p, |r| {
            Ok(CiExecutionRow {
                pipeline: r.get(0)?,
                id: r.get(1)?,
                seq: r.get::<_, i64>(2)? as u64,
                status: r.get(3)?,
                record: r.get(4)?,
                started_at: r.get::<_, i64>(5)? as u64,
                ended_at: opt_u64(r.get(6)?),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Newest first.
    pub fn ci_execution_list(&self, pipeline: &str, limit: u32) -> Result<Vec<CiExecutionRow>> {
        self.ci_execution_rows(
            "SELECT pipeline, id, seq, status, record, started_at, ended_at FROM ci_executions
             WHERE pipeline = ?1 ORDER BY seq DESC LIMIT ?2",
            &[&pipeline, &(limit as i64)],
        )
    }

    /// Execution ids are unique across pipelines.
    pub fn ci_execution_get(&self, id: &str) -> Result<Option<CiExecutionRow>> {
        Ok(self
            .ci_execution_rows(
                "SELECT pipeline, id, seq, status, record, started_at, ended_at
                 FROM ci_executions WHERE id = ?1",
                &[&id],
            )?
            .into_iter()
            .next())
    }

    /// Every kept execution of every pipeline whose seq is within the newest `keep`, or that has
    /// not ended: what artifact retention keeps.
    pub fn ci_execution_retained(&self, keep: u32) -> Result<Vec<CiExecutionRow>> {
        self.ci_execution_rows(
            "SELECT e.pipeline, e.id, e.seq, e.status, e.record, e.started_at, e.ended_at
             FROM ci_executions e
             WHERE e.ended_at IS NULL OR (SELECT COUNT(*) FROM ci_executions n
                 WHERE n.pipeline = e.pipeline AND n.seq > e.seq) < ?1",
            &[&(keep as i64)],
        )
    }

    // -- builds

    pub fn ci_build_put(&self, row: &CiBuildRow) -> Result<()> {
        self.tx.execute(
            "INSERT INTO ci_builds (id, pipeline, execution_id, status, body, started_at, ended_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (id) DO UPDATE SET status = excluded.status, body = excluded.body,
                 ended_at = excluded.ended_at",
            params![
                row.id,
                row.pipeline,
                row.execution_id,
                row.status,
                row.body,
                row.started_at as i64,
                row.ended_at.map(|v| v as i64)
            ],
        )?;
        Ok(())
    }

    pub fn ci_build_get(&self, id: &str) -> Result<Option<CiBuildRow>> {
        Ok(self
            .tx
            .query_row(
                "SELECT id, pipeline, execution_id, status, body, started_at, ended_at
                 FROM ci_builds WHERE id = ?1",
                [id],
                |r| {
                    Ok(CiBuildRow {
                        id: r.get(0)?,
                        pipeline: r.get(1)?,
                        execution_id: r.get(2)?,
                        status: r.get(3)?,
                        body: r.get(4)?,
                        started_at: r.get::<_, i64>(5)? as u64,
                        ended_at: opt_u64(r.get(6)?),
                    })
                },
            )
            .optional()?)
    }

    // -- external jobs: what a run of an action started (a deployment id), so a restart adopts it

    pub fn ci_job_put(&self, key: &str, external_ref: &str, now: u64) -> Result<()> {
        self.tx.execute(
            "INSERT INTO ci_jobs (key, external_ref, created_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (key) DO UPDATE SET external_ref = excluded.external_ref",
            params![key, external_ref, now as i64],
        )?;
        Ok(())
    }

    pub fn ci_job_get(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .tx
            .query_row("SELECT external_ref FROM ci_jobs WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    // -- watched sources

    pub fn ci_source_get(&self, pipeline: &str) -> Result<Option<String>> {
        Ok(self
            .tx
            .query_row("SELECT last_commit FROM ci_sources WHERE pipeline = ?1", [pipeline], |r| {
                r.get(0)
            })
            .optional()?)
    }

    pub fn ci_source_set(&self, pipeline: &str, commit: &str, now: u64) -> Result<()> {
        self.tx.execute(
            "INSERT INTO ci_sources (pipeline, last_commit, checked_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (pipeline) DO UPDATE SET last_commit = excluded.last_commit,
                 checked_at = excluded.checked_at",
            params![pipeline, commit, now as i64],
        )?;
        Ok(())
    }
}
