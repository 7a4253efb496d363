//! Queries for team access (`control::access`): named API credentials, kept only as a hash of
//! their secret, and the audit trail, which is append-only (triggers refuse an update or a
//! delete of a recorded entry).

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::{Result, Tx};

/// A named credential. The secret itself is never stored: `secret_hash` is its SHA-256.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialRow {
    pub name: String,
    pub secret_hash: String,
    /// The credential's role bindings (JSON owned by `control::access`).
    pub bindings: String,
    pub created_at: u64,
    pub expires_at: Option<u64>,
    pub last_used_at: Option<u64>,
}

/// One entry of the audit trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRow {
    pub seq: u64,
    pub at: u64,
    pub actor: String,
    pub action: String,
    pub resource: String,
    pub source: String,
    pub outcome: String,
    /// What the change carried out, when it says more than its action (`apply`'s plan), as JSON.
    pub detail: Option<String>,
}

/// Which audit entries to read; every field that is set must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub resource: Option<String>,
    pub since: Option<u64>,
    /// After this sequence number (for paging and following).
    pub after: Option<u64>,
    pub limit: u32,
}

fn credential_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<CredentialRow> {
    Ok(CredentialRow {
        name: row.get(0)?,
        secret_hash: row.get(1)?,
        bindings: row.get(2)?,
        created_at: row.get::<_, i64>(3)? as u64,
        expires_at: row.get::<_, Option<i64>>(4)?.map(|v| v as u64),
        last_used_at: row.get::<_, Option<i64>>(5)?.map(|v| v as u64),
    })
}

const CREDENTIAL_COLUMNS: &str =
    "name, secret_hash, bindings, created_at, expires_at, last_used_at";

impl Tx<'_> {
    /// Stores a new credential; `false` when one of that name exists (it is left unchanged).
    pub fn credential_create(&self, row: &CredentialRow) -> Result<bool> {
        let n = self.tx.execute(
            "INSERT INTO credentials (name, secret_hash, bindings, created_at, expires_at,
                                      last_used_at)
             VALUES (?1, ?2, ?3, ?4, ?5, NULL) ON CONFLICT (name) DO NOTHING",
            params![
                row.name,
                row.secret_hash,
                row.bindings,
                row.created_at as i64,
                row.expires_at.map(|v| v as i64)
            ],
        )?;
        Ok(n == 1)
    }

    pub fn credential_list(&self) -> Result<Vec<CredentialRow>> {
        let mut stmt = self
            .tx
            .prepare(&format!("SELECT {CREDENTIAL_COLUMNS} FROM credentials ORDER BY name"))?;
        let rows = stmt.query_map([], credential_row)?.collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    pub fn credential_by_hash(&self, secret_hash: &str) -> Result<Option<CredentialRow>> {
        Ok(self
            .tx
            .query_row(
                &format!("SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE secret_hash = ?1"),
                params![secret_hash],
                credential_row,
            )
            .optional()?)
    }

    /// Records a use of the credential.
    pub fn credential_touch(&self, name: &str, at: u64) -> Result<()> {
        self.tx.execute(
            "UPDATE credentials SET last_used_at = ?2 WHERE name = ?1",
            params![name, at as i64],
        )?;
        Ok(())
    }

    /// `false` when there was no such credential.
    pub fn credential_delete(&self, name: &str) -> Result<bool> {
        Ok(self.tx.execute("DELETE FROM credentials WHERE name = ?1", params![name])? == 1)
    }

    /// Appends an entry (its `seq` is assigned here) and returns its sequence number.
    pub fn audit_append(&self, entry: &AuditRow) -> Result<u64> {
        self.tx.execute(
            "INSERT INTO audit_log (at, actor, action, resource, source, outcome, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                entry.at as i64,
                entry.actor,
                entry.action,
                entry.resource,
                entry.source,
                entry.outcome,
                entry.detail
            ],
        )?;
        Ok(self.tx.last_insert_rowid() as u64)
    }

    /// The entries `filter` selects, oldest first (the newest `limit` of them).
    pub fn audit_list(&self, filter: &AuditFilter) -> Result<Vec<AuditRow>> {
        let mut stmt = self.tx.prepare(
            "SELECT seq, at, actor, action, resource, source, outcome, detail FROM audit_log
             WHERE (?1 IS NULL OR actor = ?1) AND (?2 IS NULL OR action = ?2)
               AND (?3 IS NULL OR resource = ?3) AND (?4 IS NULL OR at >= ?4)
               AND (?5 IS NULL OR seq > ?5)
             ORDER BY seq DESC LIMIT ?6",
        )?;
        let mut rows = stmt
            .query_map(
                params![
                    filter.actor,
                    filter.action,
                    filter.resource,
                    filter.since.map(|v| v as i64),
                    filter.after.map(|v| v as i64),
                    filter.limit
                ],
                |row| {
                    Ok(AuditRow {
                        seq: row.get::<_, i64>(0)? as u64,
                        at: row.get::<_, i64>(1)? as u64,
                        actor: row.get(2)?,
                        action: row.get(3)?,
                        resource: row.get(4)?,
                        source: row.get(5)?,
                        outcome: row.get(6)?,
                        detail: row.get(7)?,
                    })
                },
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.reverse();
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;

    fn entry(actor: &str, action: &str) -> AuditRow {
        AuditRow {
            seq: 0,
            at: 1_000,
            actor: actor.into(),
            action: action.into(),
            resource: "web/web-prod".into(),
            source: "127.0.0.1".into(),
            outcome: "allowed".into(),
            detail: None,
        }
    }

    #[test]
    fn the_audit_log_refuses_an_update_or_a_delete_of_a_recorded_entry() {
        let store = Store::open_in_memory().unwrap();
        store.transaction(|tx| tx.audit_append(&entry("ci-web", "deploy"))).unwrap();
        for sql in ["UPDATE audit_log SET actor = 'someone-else'", "DELETE FROM audit_log"] {
            let err = store.transaction(|tx| Ok(tx.tx.execute(sql, [])?)).unwrap_err();
            assert!(err.to_string().contains("the audit log is append-only"), "{sql}: {err}");
        }
        let all = store.read(|tx| tx.audit_list(&AuditFilter { limit: 10, ..Default::default() }));
        assert_eq!(all.unwrap().iter().map(|e| e.actor.as_str()).collect::<Vec<_>>(), ["ci-web"]);
    }
}
