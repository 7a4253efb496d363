//! cutover's state, kept in one SQLite database under the data directory.
//!
//! The control plane writes every decision here before acting on it, so a `kill -9` at any point
//! loses nothing. The database runs in WAL mode: a committed transaction survives the death of the
//! process (only a power loss could take the last ones, which `synchronous=NORMAL` accepts).
//!
//! Declared resources (load balancers, target groups, services, deployment configs, deployment
//! groups, hooks) are stored as JSON documents keyed by kind and name: `apply` compares documents to
//! build its plan, and their shape belongs to the control plane's API types, not to this crate.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use model::{DesiredStatus, RuntimeKind, TaskHealth, TaskSetStatus, TaskStatus};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};

mod access;
pub mod clock;
mod documents;
mod pipelines;
pub use access::*;
pub use documents::*;
pub use pipelines::*;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored document is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Conflict(String),
    #[error(
        "the database at {path} was written by a newer cutover (schema {found}, this build knows {known}); upgrade cutover"
    )]
    SchemaTooNew { path: String, found: i64, known: i64 },
    #[error(transparent)]
    Document(#[from] DocumentError),
}

impl Error {
    /// Whether the database could not be written for a reason outside cutover that can pass: a
    /// full disk, an I/O error, a file made read-only or held locked by another process. Such a
    /// write is worth retrying as it is; every other error would fail again.
    pub fn is_write_failure(&self) -> bool {
        use rusqlite::ErrorCode::*;
        matches!(
            self,
            Error::Sqlite(rusqlite::Error::SqliteFailure(failure, _))
                if matches!(
                    failure.code,
                    DiskFull | SystemIoFailure | ReadOnly | CannotOpen | DatabaseBusy | DatabaseLocked
                )
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Migrations, applied in order; the index + 1 is the schema version. Never edit one that has
/// shipped: add a new one.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE resources (
    kind TEXT NOT NULL, name TEXT NOT NULL, body TEXT NOT NULL, updated_at INTEGER NOT NULL,
    PRIMARY KEY (kind, name));
CREATE TABLE task_definitions (
    family TEXT NOT NULL, revision INTEGER NOT NULL, status TEXT NOT NULL, body TEXT NOT NULL,
    registered_at INTEGER NOT NULL, PRIMARY KEY (family, revision));
CREATE TABLE task_sets (
    id TEXT PRIMARY KEY, service TEXT NOT NULL, task_definition TEXT NOT NULL,
    target_group TEXT, status TEXT NOT NULL, deployment_id TEXT, desired_count INTEGER NOT NULL,
    created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
CREATE TABLE tasks (
    id TEXT PRIMARY KEY, task_set_id TEXT NOT NULL, service TEXT NOT NULL, runtime TEXT NOT NULL,
    last_status TEXT NOT NULL, desired_status TEXT NOT NULL, health TEXT NOT NULL,
    handle TEXT, addr TEXT, stop_at INTEGER, stopped_reason TEXT,
    created_at INTEGER NOT NULL, started_at INTEGER, stopped_at INTEGER);
CREATE INDEX tasks_by_set ON tasks (task_set_id);
CREATE TABLE deployments (
    id TEXT PRIMARY KEY, application TEXT NOT NULL, deployment_group TEXT NOT NULL,
    status TEXT NOT NULL, body TEXT NOT NULL, machine TEXT NOT NULL,
    created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, completed_at INTEGER);
CREATE INDEX deployments_by_group ON deployments (application, deployment_group, created_at);
CREATE TABLE deployment_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, deployment_id TEXT NOT NULL, at INTEGER NOT NULL,
    kind TEXT NOT NULL, message TEXT NOT NULL);
CREATE INDEX events_by_deployment ON deployment_events (deployment_id, seq);
"#,
    r#"
CREATE TABLE ci_repositories (name TEXT PRIMARY KEY, created_at INTEGER NOT NULL);
CREATE TABLE ci_pipelines (
    name TEXT PRIMARY KEY, definition TEXT NOT NULL, machine TEXT NOT NULL,
    pending_definition TEXT, version INTEGER NOT NULL, updated_at INTEGER NOT NULL);
CREATE TABLE ci_executions (
    pipeline TEXT NOT NULL, id TEXT NOT NULL, seq INTEGER NOT NULL, status TEXT NOT NULL,
    record TEXT NOT NULL, started_at INTEGER NOT NULL, ended_at INTEGER,
    PRIMARY KEY (pipeline, id));
CREATE UNIQUE INDEX ci_executions_by_id ON ci_executions (id);
CREATE INDEX ci_executions_by_seq ON ci_executions (pipeline, seq);
CREATE TABLE ci_builds (
    id TEXT PRIMARY KEY, pipeline TEXT NOT NULL, execution_id TEXT NOT NULL, status TEXT NOT NULL,
    body TEXT NOT NULL, started_at INTEGER NOT NULL, ended_at INTEGER);
CREATE TABLE ci_jobs (key TEXT PRIMARY KEY, external_ref TEXT NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE ci_sources (
    pipeline TEXT PRIMARY KEY, last_commit TEXT NOT NULL, checked_at INTEGER NOT NULL);
"#,
    // Documents record the version of the type that wrote them (`documents`); rows from before
    // read as version 0.
    "ALTER TABLE resources ADD COLUMN version INTEGER NOT NULL DEFAULT 0;",
    // Named API credentials (only a hash of each secret) and the audit trail, which the
    // database itself keeps append-only (`access`).
    r#"
CREATE TABLE credentials (
    name TEXT PRIMARY KEY, secret_hash TEXT NOT NULL UNIQUE, bindings TEXT NOT NULL,
    created_at INTEGER NOT NULL, expires_at INTEGER, last_used_at INTEGER);
CREATE TABLE audit_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, actor TEXT NOT NULL,
    action TEXT NOT NULL, resource TEXT NOT NULL, source TEXT NOT NULL, outcome TEXT NOT NULL,
    detail TEXT);
CREATE INDEX audit_log_by_time ON audit_log (at);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"#,
    // Each group's newest deployment is the last entry of its range in this index, so the
    // overview finds every group's last one without reading the history (`deployment_last_of_each_group`).
    r#"
DROP INDEX deployments_by_group;
CREATE INDEX deployments_by_group_newest ON deployments (application, deployment_group, created_at, id);
"#,
    // The newest deployments (the overview's, the history's pages) and those not completed are
    // read in order from these indexes, not by sorting the whole history: with 10,000 past
    // deployments that sort was most of the overview's time.
    r#"
CREATE INDEX deployments_newest ON deployments (created_at, id);
CREATE INDEX deployments_active ON deployments (created_at, id) WHERE completed_at IS NULL;
"#,
];

/// The database. Cheap to share behind an `Arc`; every call holds the connection for the length
/// of one statement or transaction, which for this workload is microseconds.
pub struct Store {
    conn: Mutex<Connection>,
    /// The last write failure ([`Error::is_write_failure`]), until a write succeeds again.
    write_failure: Mutex<Option<String>>,
}

impl Store {
    pub fn open(path: &Path) -> Result<Store> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let store = Store { conn: Mutex::new(conn), write_failure: Mutex::new(None) };
        store.migrate(&path.display().to_string())?;
        // Time read from a wall clock set back since the last run must not run behind what that
        // run stored: deadlines would come late and histories would go backwards.
        clock::not_before(store.read(|tx| tx.newest_timestamp())?);
        Ok(store)
    }

    pub fn open_in_memory() -> Result<Store> {
        let store = Store {
            conn: Mutex::new(Connection::open_in_memory()?),
            write_failure: Mutex::new(None),
        };
        store.migrate(":memory:")?;
        Ok(store)
    }

    fn migrate(&self, path: &str) -> Result<()> {
        let mut conn = self.lock();
        let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(Error::SchemaTooNew { path: path.to_string(), found: version, known });
        }
        let tx = conn.transaction()?;
        for (idx, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", idx as i64 + 1)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (the transaction rolls
        // back on drop), so a poisoned lock is safe to reuse.
        self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` in one transaction: all of it is committed, or none of it. A write that fails
    /// for a reason outside cutover is remembered ([`Store::write_failure`]) until one succeeds.
    pub fn transaction<T>(&self, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.lock();
        let changes_before = conn.total_changes();
        let result = (|| -> Result<T> {
            let tx = Tx { tx: conn.transaction()? };
            let value = f(&tx)?;
            tx.tx.commit()?;
            Ok(value)
        })();
        match &result {
            Err(err) if err.is_write_failure() => {
                *self.write_failure_slot() = Some(err.to_string());
            }
            Ok(_) if conn.total_changes() != changes_before => *self.write_failure_slot() = None,
            _ => {}
        }
        result
    }

    /// Why the last write failed, while no write has succeeded since: the database cannot be
    /// written (see [`Error::is_write_failure`]).
    pub fn write_failure(&self) -> Option<String> {
        self.write_failure_slot().clone()
    }

    fn write_failure_slot(&self) -> MutexGuard<'_, Option<String>> {
        self.write_failure.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` with read access (itself a transaction, so reads are consistent).
    pub fn read<T>(&self, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
        self.transaction(f)
    }
}

/// A transaction; every query lives here so that callers compose them atomically.
pub struct Tx<'a> {
    tx: Transaction<'a>,
}

// ---------------------------------------------------------------------------------------------
// Rows.

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskDefinitionRow {
    pub family: String,
    pub revision: u32,
    /// ACTIVE or INACTIVE.
    pub status: String,
    /// The task definition as ECS JSON.
    pub body: String,
    pub registered_at: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskSetRow {
    pub id: String,
    pub service: String,
    /// `family:revision`.
    pub task_definition: String,
    pub target_group: Option<String>,
    /// Stored by its ECS name (PRIMARY, ACTIVE, DRAINING).
    pub status: TaskSetStatus,
    pub deployment_id: Option<String>,
    pub desired_count: u32,
    pub created_at: u64,
    pub updated_at: u64,
}

/// A task; its statuses are stored by their ECS names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskRow {
    pub id: String,
    pub task_set_id: String,
    pub service: String,
    pub runtime: RuntimeKind,
    pub last_status: TaskStatus,
    pub desired_status: DesiredStatus,
    pub health: TaskHealth,
    /// The runtime's handle, as JSON.
    pub handle: Option<String>,
    pub addr: Option<String>,
    /// When a deactivating task is to be stopped (its drain ends).
    pub stop_at: Option<u64>,
    pub stopped_reason: Option<String>,
    pub created_at: u64,
    pub started_at: Option<u64>,
    pub stopped_at: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentRow {
    pub id: String,
    pub application: String,
    pub deployment_group: String,
    pub status: String,
    /// The deployment's inputs and bookkeeping, as the control plane's JSON.
    pub body: String,
    /// The `rollout` state machine's snapshot, as JSON.
    pub machine: String,
    pub created_at: u64,
    pub updated_at: u64,
    pub completed_at: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRow {
    pub seq: i64,
    pub deployment_id: String,
    pub at: u64,
    pub kind: String,
    pub message: String,
}

// ---------------------------------------------------------------------------------------------
// Queries.

impl Tx<'_> {
    pub fn meta_get(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .tx
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    pub fn meta_set(&self, key: &str, value: &str) -> Result<()> {
        self.tx.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    /// Adds one to a counter in `meta` and returns the new value.
    pub fn next_sequence(&self, key: &str) -> Result<u64> {
        let current: u64 = self.meta_get(key)?.and_then(|v| v.parse().ok()).unwrap_or(0);
        self.meta_set(key, &(current + 1).to_string())?;
        Ok(current + 1)
    }

    // -- declared resources

    pub fn resource_get(&self, kind: &str, name: &str) -> Result<Option<String>> {
        Ok(self
            .tx
            .query_row(
                "SELECT body FROM resources WHERE kind = ?1 AND name = ?2",
                params![kind, name],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn resource_list(&self, kind: &str) -> Result<Vec<(String, String)>> {
        let mut stmt =
            self.tx.prepare("SELECT name, body FROM resources WHERE kind = ?1 ORDER BY name")?;
        let rows = stmt.query_map([kind], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Writes a body as an unversioned document (version 0, version 1's shape): for kinds not
    /// yet written through [`DocumentStore::doc_put`].
    pub fn resource_put(&self, kind: &str, name: &str, body: &str, now: u64) -> Result<()> {
        let row = DocumentRow { name: name.to_string(), version: 0, body: body.to_string() };
        self.put_document_row(kind, &row, now)
    }

    pub fn resource_delete(&self, kind: &str, name: &str) -> Result<bool> {
        let n = self
            .tx
            .execute("DELETE FROM resources WHERE kind = ?1 AND name = ?2", params![kind, name])?;
        Ok(n > 0)
    }

    // -- task definitions

    /// Registers a new revision of `family`; revisions start at 1 and are never reused, even
    /// after deregistration (as on ECS).
    pub fn task_definition_register(&self, family: &str, body: &str, now: u64) -> Result<u32> {
        let key = format!("task_definition_revision:{family}");
        let revision = self.next_sequence(&key)? as u32;
        self.tx.execute(
            "INSERT INTO task_definitions (family, revision, status, body, registered_at)
             VALUES (?1, ?2, 'ACTIVE', ?3, ?4)",
            params![family, revision, body, now as i64],
        )?;
        Ok(revision)
    }

    pub fn task_definition_get(
        &self,
        family: &str,
        revision: u32,
    ) -> Result<Option<TaskDefinitionRow>> {
        Ok(self
            .tx
            .query_row(
                "SELECT family, revision, status, body, registered_at FROM task_definitions
                 WHERE family = ?1 AND revision = ?2",
                params![family, revision],
                task_definition_row,
            )
            .optional()?)
    }

    /// The latest ACTIVE revision of a family.
    pub fn task_definition_latest(&self, family: &str) -> Result<Option<TaskDefinitionRow>> {
        Ok(self
            .tx
            .query_row(
                "SELECT family, revision, status, body, registered_at FROM task_definitions
                 WHERE family = ?1 AND status = 'ACTIVE' ORDER BY revision DESC LIMIT 1",
                [family],
                task_definition_row,
            )
            .optional()?)
    }

    pub fn task_definition_list(&self) -> Result<Vec<TaskDefinitionRow>> {
        let mut stmt = self.tx.prepare(
            "SELECT family, revision, status, body, registered_at FROM task_definitions
             ORDER BY family, revision",
        )?;
        let rows = stmt.query_map([], task_definition_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn task_definition_set_status(
        &self,
        family: &str,
        revision: u32,
        status: &str,
    ) -> Result<bool> {
        let n = self.tx.execute(
            "UPDATE task_definitions SET status = ?3 WHERE family = ?1 AND revision = ?2",
            params![family, revision, status],
        )?;
        Ok(n > 0)
    }

    // -- task sets

    pub fn task_set_put(&self, row: &TaskSetRow) -> Result<()> {
        self.tx.execute(
            "INSERT INTO task_sets (id, service, task_definition, target_group, status,
                 deployment_id, desired_count, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (id) DO UPDATE SET task_definition = excluded.task_definition,
                 target_group = excluded.target_group, status = excluded.status,
                 deployment_id = excluded.deployment_id, desired_count = excluded.desired_count,
                 updated_at = excluded.updated_at",
            params![
                row.id,
                row.service,
                row.task_definition,
                row.target_group,
                row.status.as_str(),
                row.deployment_id,
                row.desired_count,
                row.created_at as i64,
                row.updated_at as i64
            ],
        )?;
        Ok(())
    }

    pub fn task_set_get(&self, id: &str) -> Result<Option<TaskSetRow>> {
        Ok(self
            .tx
            .query_row(
                "SELECT id, service, task_definition, target_group, status, deployment_id,
                     desired_count, created_at, updated_at FROM task_sets WHERE id = ?1",
                [id],
                task_set_row,
            )
            .optional()?)
    }

    pub fn task_set_list(&self) -> Result<Vec<TaskSetRow>> {
        let mut stmt = self.tx.prepare(
            "SELECT id, service, task_definition, target_group, status, deployment_id,
                 desired_count, created_at, updated_at FROM task_sets ORDER BY created_at, id",
        )?;
        let rows = stmt.query_map([], task_set_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn task_set_delete(&self, id: &str) -> Result<()> {
        self.tx.execute("DELETE FROM task_sets WHERE id = ?1", [id])?;
        Ok(())
    }

    // -- tasks

    pub fn task_put(&self, row: &TaskRow) -> Result<()> {
        self.tx.execute(
            "INSERT INTO tasks (id, task_set_id, service, runtime, last_status, desired_status,
                 health, handle, addr, stop_at, stopped_reason, created_at, started_at, stopped_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
             ON CONFLICT (id) DO UPDATE SET last_status = excluded.last_status,
                 desired_status = excluded.desired_status, health = excluded.health,
                 handle = excluded.handle, addr = excluded.addr, stop_at = excluded.stop_at,
                 stopped_reason = excluded.stopped_reason, started_at = excluded.started_at,
                 stopped_at = excluded.stopped_at",
            params![
                row.id,
                row.task_set_id,
                row.service,
                row.runtime.as_str(),
                row.last_status.as_str(),
                row.desired_status.as_str(),
                row.health.as_str(),
                row.handle,
                row.addr,
                row.stop_at.map(|v| v as i64),
                row.stopped_reason,
                row.created_at as i64,
                row.started_at.map(|v| v as i64),
                row.stopped_at.map(|v| v as i64)
            ],
        )?;
        Ok(())
    }

    pub fn task_get(&self, id: &str) -> Result<Option<TaskRow>> {
        Ok(self
            .tx
            .query_row(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1"), [id], task_row)
            .optional()?)
    }

    /// Tasks that are not STOPPED, plus the `stopped_limit` most recently stopped ones (history).
    pub fn task_list(&self, stopped_limit: u32) -> Result<Vec<TaskRow>> {
        let mut stmt = self.tx.prepare(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE last_status != 'STOPPED'
             UNION ALL
             SELECT * FROM (SELECT {TASK_COLUMNS} FROM tasks WHERE last_status = 'STOPPED'
                            ORDER BY stopped_at DESC LIMIT ?1)
             ORDER BY created_at, id"
        ))?;
        let rows = stmt.query_map([stopped_limit], task_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Forgets stopped tasks beyond the newest `keep`.
    pub fn task_prune_stopped(&self, keep: u32) -> Result<usize> {
        Ok(self.tx.execute(
            "DELETE FROM tasks WHERE last_status = 'STOPPED' AND id NOT IN
                (SELECT id FROM tasks WHERE last_status = 'STOPPED'
                 ORDER BY stopped_at DESC LIMIT ?1)",
            [keep],
        )?)
    }

    // -- deployments

    pub fn deployment_put(&self, row: &DeploymentRow) -> Result<()> {
        self.tx.execute(
            "INSERT INTO deployments (id, application, deployment_group, status, body, machine,
                 created_at, updated_at, completed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (id) DO UPDATE SET status = excluded.status, body = excluded.body,
                 machine = excluded.machine, updated_at = excluded.updated_at,
                 completed_at = excluded.completed_at",
            params![
                row.id,
                row.application,
                row.deployment_group,
                row.status,
                row.body,
                row.machine,
                row.created_at as i64,
                row.updated_at as i64,
                row.completed_at.map(|v| v as i64)
            ],
        )?;
        Ok(())
    }

    pub fn deployment_get(&self, id: &str) -> Result<Option<DeploymentRow>> {
        Ok(self
            .tx
            .query_row(
                &format!("SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE id = ?1"),
                [id],
                deployment_row,
            )
            .optional()?)
    }

    /// Newest first, at most `limit`.
    pub fn deployment_list(&self, limit: u32) -> Result<Vec<DeploymentRow>> {
        self.deployment_list_of(None, limit)
    }

    /// The newest `limit` deployments, newest first; of one `(application, deployment group)`
    /// when given, so the limit counts only that group's.
    pub fn deployment_list_of(
        &self,
        group: Option<(&str, &str)>,
        limit: u32,
    ) -> Result<Vec<DeploymentRow>> {
        self.deployment_history(&DeploymentHistory { group, limit, ..DeploymentHistory::default() })
    }

    /// The deployments `query` selects, newest first (a page of the history).
    pub fn deployment_history(&self, query: &DeploymentHistory<'_>) -> Result<Vec<DeploymentRow>> {
        let mut stmt = self.tx.prepare(&deployment_history_sql())?;
        let (application, deployment_group) = query.group.unzip();
        let millis = |at: Option<u64>| at.map(|ms| ms.min(i64::MAX as u64) as i64);
        let rows = stmt.query_map(
            params![
                application,
                deployment_group,
                query.status,
                millis(query.since),
                millis(query.until),
                query.before,
                query.limit
            ],
            deployment_row,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The newest deployment of each `(application, deployment group)` that has one, by
    /// application and group: one index lookup per group, however long the history.
    pub fn deployment_last_of_each_group(&self) -> Result<Vec<DeploymentRow>> {
        let mut stmt = self.tx.prepare(&format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE id IN (
                 SELECT (SELECT newest.id FROM deployments AS newest
                         WHERE newest.application = g.application
                           AND newest.deployment_group = g.deployment_group
                         ORDER BY newest.created_at DESC, newest.id DESC LIMIT 1)
                 FROM (SELECT DISTINCT application, deployment_group FROM deployments) AS g)
             ORDER BY application, deployment_group"
        ))?;
        let rows = stmt.query_map([], deployment_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deployments that have not completed, oldest first.
    pub fn deployment_list_active(&self) -> Result<Vec<DeploymentRow>> {
        let mut stmt = self.tx.prepare(&deployment_active_sql())?;
        let rows = stmt.query_map([], deployment_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn event_append(
        &self,
        deployment_id: &str,
        at: u64,
        kind: &str,
        message: &str,
    ) -> Result<i64> {
        self.tx.execute(
            "INSERT INTO deployment_events (deployment_id, at, kind, message) VALUES (?1, ?2, ?3, ?4)",
            params![deployment_id, at as i64, kind, message],
        )?;
        Ok(self.tx.last_insert_rowid())
    }

    /// The sequence number the next event will get, less one: events held in memory while the
    /// database cannot be written are shown with the numbers they will be written with.
    pub fn event_last_seq(&self) -> Result<i64> {
        Ok(self
            .tx
            .query_row(
                "SELECT seq FROM sqlite_sequence WHERE name = 'deployment_events'",
                [],
                |row| row.get(0),
            )
            .optional()?
            .unwrap_or(0))
    }

    /// The newest time anything was stored at, in milliseconds (0 for an empty store).
    pub fn newest_timestamp(&self) -> Result<u64> {
        let newest: i64 = self.tx.query_row(
            "SELECT MAX(
                 (SELECT COALESCE(MAX(updated_at), 0) FROM resources),
                 (SELECT COALESCE(MAX(updated_at), 0) FROM deployments),
                 (SELECT COALESCE(MAX(at), 0) FROM deployment_events),
                 (SELECT COALESCE(MAX(created_at), 0) FROM tasks),
                 (SELECT COALESCE(MAX(updated_at), 0) FROM task_sets),
                 (SELECT COALESCE(MAX(updated_at), 0) FROM ci_pipelines))",
            [],
            |row| row.get(0),
        )?;
        Ok(newest.max(0) as u64)
    }

    /// Events of a deployment after `after_seq`, oldest first.
    pub fn event_list(&self, deployment_id: &str, after_seq: i64) -> Result<Vec<EventRow>> {
        let mut stmt = self.tx.prepare(
            "SELECT seq, deployment_id, at, kind, message FROM deployment_events
             WHERE deployment_id = ?1 AND seq > ?2 ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![deployment_id, after_seq], |r| {
            Ok(EventRow {
                seq: r.get(0)?,
                deployment_id: r.get(1)?,
                at: r.get::<_, i64>(2)? as u64,
                kind: r.get(3)?,
                message: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

const TASK_COLUMNS: &str = "id, task_set_id, service, runtime, last_status, desired_status, health, \
     handle, addr, stop_at, stopped_reason, created_at, started_at, stopped_at";
/// [`Tx::deployment_history`]'s query: `?1`–`?7` are its group, status, since, until, before and
/// limit.
fn deployment_history_sql() -> String {
    format!(
        "SELECT {DEPLOYMENT_COLUMNS} FROM deployments
         WHERE (?1 IS NULL OR (application = ?1 AND deployment_group = ?2))
           AND (?3 IS NULL OR status = ?3)
           AND (?4 IS NULL OR created_at >= ?4)
           AND (?5 IS NULL OR created_at < ?5)
           AND (?6 IS NULL OR (created_at, id) < (SELECT created_at, id FROM deployments WHERE id = ?6))
         ORDER BY created_at DESC, id DESC LIMIT ?7"
    )
}

/// [`Tx::deployment_list_active`]'s query.
fn deployment_active_sql() -> String {
    format!(
        "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE completed_at IS NULL
         ORDER BY created_at, id"
    )
}

const DEPLOYMENT_COLUMNS: &str = "id, application, deployment_group, status, body, machine, created_at, updated_at, completed_at";

/// A status column, by its name; a name this build does not know is an error, not a default.
fn named<T>(
    r: &rusqlite::Row<'_>,
    idx: usize,
    parse: fn(&str) -> Option<T>,
) -> rusqlite::Result<T> {
    let text: String = r.get(idx)?;
    parse(&text).ok_or_else(|| {
        let error = format!("unknown status `{text}`");
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, error.into())
    })
}

fn opt_u64(v: Option<i64>) -> Option<u64> {
    v.map(|v| v as u64)
}

fn task_definition_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TaskDefinitionRow> {
    Ok(TaskDefinitionRow {
        family: r.get(0)?,
        revision: r.get(1)?,
        status: r.get(2)?,
        body: r.get(3)?,
        registered_at: r.get::<_, i64>(4)? as u64,
    })
}

fn task_set_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TaskSetRow> {
    Ok(TaskSetRow {
        id: r.get(0)?,
        service: r.get(1)?,
        task_definition: r.get(2)?,
        target_group: r.get(3)?,
        status: named(r, 4, TaskSetStatus::parse)?,
        deployment_id: r.get(5)?,
        desired_count: r.get(6)?,
        created_at: r.get::<_, i64>(7)? as u64,
        updated_at: r.get::<_, i64>(8)? as u64,
    })
}

fn task_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TaskRow> {
    Ok(TaskRow {
        id: r.get(0)?,
        task_set_id: r.get(1)?,
        service: r.get(2)?,
        runtime: named(r, 3, RuntimeKind::parse)?,
        last_status: named(r, 4, TaskStatus::parse)?,
        desired_status: named(r, 5, DesiredStatus::parse)?,
        health: named(r, 6, TaskHealth::parse)?,
        handle: r.get(7)?,
        addr: r.get(8)?,
        stop_at: opt_u64(r.get(9)?),
        stopped_reason: r.get(10)?,
        created_at: r.get::<_, i64>(11)? as u64,
        started_at: opt_u64(r.get(12)?),
        stopped_at: opt_u64(r.get(13)?),
    })
}

/// Which deployments a page of the history holds: every filter given holds, newest first.
#[derive(Clone, Copy, Debug, Default)]
pub struct DeploymentHistory<'a> {
    /// `(application, deployment group)`.
    pub group: Option<(&'a str, &'a str)>,
    /// A status as stored (`Succeeded`, `Stopped`…).
    pub status: Option<&'a str>,
    /// Created at or after (milliseconds since the epoch).
    pub since: Option<u64>,
    /// Created before.
    pub until: Option<u64>,
    /// Older than this deployment: the next page after one that ended with it.
    pub before: Option<&'a str>,
    pub limit: u32,
}

fn deployment_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeploymentRow> {
    Ok(DeploymentRow {
        id: r.get(0)?,
        application: r.get(1)?,
        deployment_group: r.get(2)?,
        status: r.get(3)?,
        body: r.get(4)?,
        machine: r.get(5)?,
        created_at: r.get::<_, i64>(6)? as u64,
        updated_at: r.get::<_, i64>(7)? as u64,
        completed_at: opt_u64(r.get(8)?),
    })
}

#[cfg(test)]
mod tests;
