//! Versioned JSON documents: the control plane's declared resources and bookkeeping, stored by
//! kind and name with the version of the type that wrote them.
//!
//! A type that is stored implements [`Document`]: its kind, its current [`Document::VERSION`],
//! and the [`Document::upgrade`] steps that turn what an older cutover wrote into what this one
//! reads. Reading runs the steps from the stored version up to the current one; a document written
//! by a *newer* cutover is refused with [`DocumentError::TooNew`], never misread. Rows written
//! before documents carried a version read as version 0, whose shape is version 1's.
//!
//! # A second implementation
//!
//! The typed operations ([`DocumentStore::doc_get`], [`DocumentStore::doc_list`],
//! [`DocumentStore::doc_put`]) are provided methods over four row operations, so that another
//! database (PostgreSQL, for several control-plane hosts sharing one state) is a contained piece
//! of work. Such an implementation provides, for its transaction type:
//!
//! - [`DocumentStore::document_row`], [`DocumentStore::document_rows`],
//!   [`DocumentStore::put_document_row`] and [`DocumentStore::delete_document_row`] over a table
//!   keyed by `(kind, name)` holding the body as text, its version and when it was written;
//! - transactions that are serializable (two hosts deciding at once must not both commit, as one
//!   SQLite writer guarantees here), all or nothing;
//! - its own [`crate::Error`] mapping, with [`crate::Error::is_write_failure`] true exactly for
//!   failures worth retrying unchanged (connection lost, disk full), so `control::outage` keeps
//!   working;
//! - the newest stored timestamp ([`crate::Tx::newest_timestamp`]), so the clock of a host that
//!   starts never runs behind what another host stored.
//!
//! Upgrades, version checks and serde stay here, shared by both. The other tables (task
//! definitions, task sets, tasks, deployments and their events, pipelines) are plain rows queried
//! by key; the same split applies to them: a trait of row operations per table that `Tx`
//! implements for SQLite, the typed conversions provided on top.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{Result, Tx};

/// A type stored as a versioned JSON document.
///
/// Changing the serde shape of a stored type means: bump `VERSION`, and teach `upgrade` the step
/// from the previous version (with a fixture of the old JSON in the type's tests). Every write of
/// the kind must then go through [`DocumentStore::doc_put`], which records the version.
pub trait Document: Serialize + DeserializeOwned {
    /// The kind the documents are stored under (`service`, `target_group`).
    const KIND: &'static str;
    /// The version this build writes; starts at 1.
    const VERSION: u32;

    /// Turns a document of version `from` into one of version `from + 1`. Version 0 (written
    /// before documents carried a version) has version 1's shape, so the step from 0 is none.
    fn upgrade(from: u32, doc: Value) -> Result<Value, UpgradeError> {
        match from {
            0 => Ok(doc),
            _ => Err(UpgradeError::NoStep { from }),
        }
    }
}

/// Why an upgrade step could not turn an old document into a newer one.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("this build has no upgrade from version {from}")]
    NoStep { from: u32 },
    #[error("{0}")]
    Invalid(String),
}

/// Why a stored document could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error(
        "{kind} {name} was written by a newer cutover (document version {found}, this build reads up to {known}); upgrade cutover, or run the version that wrote it"
    )]
    TooNew { kind: &'static str, name: String, found: u32, known: u32 },
    #[error(
        "{kind} {name} (document version {found}) cannot be upgraded to version {known}: {source}"
    )]
    Upgrade {
        kind: &'static str,
        name: String,
        found: u32,
        known: u32,
        #[source]
        source: UpgradeError,
    },
    #[error(
        "{kind} {name} (document version {version}) does not match this build's type: {source}; it was written by another cutover, so run the version that wrote it"
    )]
    Shape {
        kind: &'static str,
        name: String,
        version: u32,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{kind} {name} has a negative document version {found}; the database was edited by hand"
    )]
    BadVersion { kind: &'static str, name: String, found: i64 },
}

/// One stored document as the database holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocumentRow {
    pub name: String,
    pub version: i64,
    pub body: String,
}

/// Typed documents over a store's rows: see the module's documentation for what an
/// implementation provides.
pub trait DocumentStore {
    /// The row of `kind`/`name`, if any.
    fn document_row(&self, kind: &str, name: &str) -> Result<Option<DocumentRow>>;
    /// Every row of `kind`, by name.
    fn document_rows(&self, kind: &str) -> Result<Vec<DocumentRow>>;
    /// Creates or replaces a row; `now` is when, in milliseconds.
    fn put_document_row(&self, kind: &str, row: &DocumentRow, now: u64) -> Result<()>;
    /// Removes a row; whether there was one.
    fn delete_document_row(&self, kind: &str, name: &str) -> Result<bool>;

    fn doc_get<T: Document>(&self, name: &str) -> Result<Option<T>> {
        self.document_row(T::KIND, name)?.map(|row| decode::<T>(&row)).transpose()
    }

    /// Every document of `T`'s kind with its name, by name.
    fn doc_list<T: Document>(&self) -> Result<Vec<(String, T)>> {
        self.document_rows(T::KIND)?
            .into_iter()
            .map(|row| Ok((row.name.clone(), decode::<T>(&row)?)))
            .collect()
    }

    /// Writes `doc` under `name` with this build's version.
    fn doc_put<T: Document>(&self, name: &str, doc: &T, now: u64) -> Result<()> {
        let row = DocumentRow {
            name: name.to_string(),
            version: i64::from(T::VERSION),
            body: serde_json::to_string(doc)?,
        };
        self.put_document_row(T::KIND, &row, now)
    }

    fn doc_delete<T: Document>(&self, name: &str) -> Result<bool> {
        self.delete_document_row(T::KIND, name)
    }
}

/// Reads a stored row as `T`: refuses a version newer than `T`'s, upgrades an older one.
pub fn decode<T: Document>(row: &DocumentRow) -> Result<T> {
    let name = || row.name.clone();
    let found = u32::try_from(row.version).map_err(|_| DocumentError::BadVersion {
        kind: T::KIND,
        name: name(),
        found: row.version,
    })?;
    if found > T::VERSION {
        return Err(DocumentError::TooNew {
            kind: T::KIND,
            name: name(),
            found,
            known: T::VERSION,
        }
        .into());
    }
    let shape =
        |source| DocumentError::Shape { kind: T::KIND, name: name(), version: found, source };
    if found == T::VERSION {
        // Nearly every row is current: reading it straight into `T` skips building a
        // `serde_json::Value` of the whole body first, which cost as much as the read itself.
        return serde_json::from_str(&row.body).map_err(|source| shape(source).into());
    }
    let mut value: Value = serde_json::from_str(&row.body).map_err(shape)?;
    for from in found..T::VERSION {
        value = T::upgrade(from, value).map_err(|source| DocumentError::Upgrade {
            kind: T::KIND,
            name: name(),
            found,
            known: T::VERSION,
            source,
        })?;
    }
    serde_json::from_value(value).map_err(|source| shape(source).into())
}

impl DocumentStore for Tx<'_> {
    fn document_row(&self, kind: &str, name: &str) -> Result<Option<DocumentRow>> {
        use rusqlite::OptionalExtension;
        Ok(self
            .tx
            .query_row(
                "SELECT name, version, body FROM resources WHERE kind = ?1 AND name = ?2",
                rusqlite::params![kind, name],
                document_row,
            )
            .optional()?)
    }

    fn document_rows(&self, kind: &str) -> Result<Vec<DocumentRow>> {
        let mut stmt = self
            .tx
            .prepare("SELECT name, version, body FROM resources WHERE kind = ?1 ORDER BY name")?;
        let rows = stmt.query_map([kind], document_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn put_document_row(&self, kind: &str, row: &DocumentRow, now: u64) -> Result<()> {
        self.tx.execute(
            "INSERT INTO resources (kind, name, body, version, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (kind, name) DO UPDATE SET body = excluded.body,
                 version = excluded.version, updated_at = excluded.updated_at",
            rusqlite::params![kind, row.name, row.body, row.version, now as i64],
        )?;
        Ok(())
    }

    fn delete_document_row(&self, kind: &str, name: &str) -> Result<bool> {
        self.resource_delete(kind, name)
    }
}

fn document_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DocumentRow> {
    Ok(DocumentRow { name: r.get(0)?, version: r.get(1)?, body: r.get(2)? })
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;
    use crate::{Error, Store};

    /// A document whose version 1 named the field `count`, and version 2 `replicas`.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Scaled {
        replicas: u32,
    }

    impl Document for Scaled {
        const KIND: &'static str = "scaled";
        const VERSION: u32 = 2;
        fn upgrade(from: u32, mut doc: Value) -> Result<Value, UpgradeError> {
            match from {
                0 => Ok(doc),
                1 => {
                    let count = doc
                        .as_object_mut()
                        .and_then(|o| o.remove("count"))
                        .ok_or_else(|| UpgradeError::Invalid("no `count`".into()))?;
                    Ok(serde_json::json!({ "replicas": count }))
                }
                _ => Err(UpgradeError::NoStep { from }),
            }
        }
    }

    fn put_raw(store: &Store, name: &str, version: i64, body: &str) {
        let row = DocumentRow { name: name.into(), version, body: body.into() };
        store.transaction(|tx| tx.put_document_row("scaled", &row, 1)).unwrap();
    }

    #[test]
    fn older_versions_are_upgraded_step_by_step_when_read() {
        let store = Store::open_in_memory().unwrap();
        put_raw(&store, "unversioned", 0, r#"{"count":3}"#);
        put_raw(&store, "v1", 1, r#"{"count":4}"#);
        put_raw(&store, "v2", 2, r#"{"replicas":5}"#);
        let listed = store.read(|tx| tx.doc_list::<Scaled>()).unwrap();
        assert_eq!(
            listed,
            [
                ("unversioned".to_string(), Scaled { replicas: 3 }),
                ("v1".to_string(), Scaled { replicas: 4 }),
                ("v2".to_string(), Scaled { replicas: 5 }),
            ]
        );
    }

    #[test]
    fn a_current_row_and_an_upgraded_older_row_decode_alike() {
        let current =
            DocumentRow { name: "web".into(), version: 2, body: r#"{"replicas":5}"#.into() };
        let older = DocumentRow { name: "web".into(), version: 1, body: r#"{"count":5}"#.into() };
        assert_eq!(decode::<Scaled>(&current).unwrap(), Scaled { replicas: 5 });
        assert_eq!(decode::<Scaled>(&older).unwrap(), Scaled { replicas: 5 });
    }

    #[test]
    fn a_row_of_the_wrong_shape_is_refused_naming_kind_name_and_version() {
        for (version, body, reason) in [
            (2, r#"{"count":5}"#, "missing field `replicas` at line 1 column 11"),
            (2, r#"{"replicas":5"#, "EOF while parsing an object at line 1 column 13"),
            (1, r#"{"count":"five"}"#, "invalid type: string \"five\", expected u32"),
        ] {
            let row = DocumentRow { name: "web".into(), version, body: body.into() };
            let err = decode::<Scaled>(&row).unwrap_err();
            assert!(
                matches!(&err, Error::Document(DocumentError::Shape { kind: "scaled", version: v, .. }) if *v == version as u32),
                "{err:?}"
            );
            assert_eq!(
                err.to_string(),
                format!(
                    "scaled web (document version {version}) does not match this build's type: {reason}; it was written by another cutover, so run the version that wrote it"
                )
            );
        }
    }

    #[test]
    fn a_document_is_written_with_the_current_version() {
        let store = Store::open_in_memory().unwrap();
        store.transaction(|tx| tx.doc_put("web", &Scaled { replicas: 2 }, 7)).unwrap();
        let row = store.read(|tx| tx.document_row("scaled", "web")).unwrap().unwrap();
        assert_eq!(
            row,
            DocumentRow { name: "web".into(), version: 2, body: r#"{"replicas":2}"#.into() }
        );
        assert_eq!(
            store.read(|tx| tx.doc_get::<Scaled>("web")).unwrap(),
            Some(Scaled { replicas: 2 })
        );
        assert_eq!(store.read(|tx| tx.newest_timestamp()).unwrap(), 7);
    }

    #[test]
    fn a_document_from_a_newer_cutover_is_refused_naming_kind_name_and_versions() {
        let store = Store::open_in_memory().unwrap();
        put_raw(&store, "web", 3, r#"{"replicas":2,"zones":["a"]}"#);
        let err = store.read(|tx| tx.doc_get::<Scaled>("web")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "scaled web was written by a newer cutover (document version 3, this build reads up to 2); upgrade cutover, or run the version that wrote it"
        );
        let err = store.read(|tx| tx.doc_list::<Scaled>()).unwrap_err();
        assert!(
            matches!(err, Error::Document(DocumentError::TooNew { found: 3, known: 2, .. })),
            "{err}"
        );
    }

    #[test]
    fn a_document_that_cannot_be_upgraded_names_the_step_that_failed() {
        let store = Store::open_in_memory().unwrap();
        put_raw(&store, "web", 1, r#"{"size":3}"#);
        let err = store.read(|tx| tx.doc_get::<Scaled>("web")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "scaled web (document version 1) cannot be upgraded to version 2: no `count`"
        );
    }

    #[test]
    fn a_raw_write_is_unversioned_and_reads_as_version_one() {
        let store = Store::open_in_memory().unwrap();
        store.transaction(|tx| tx.doc_put("web", &Scaled { replicas: 2 }, 1)).unwrap();
        store.transaction(|tx| tx.resource_put("scaled", "web", r#"{"count":6}"#, 2)).unwrap();
        assert_eq!(
            store.read(|tx| tx.doc_get::<Scaled>("web")).unwrap(),
            Some(Scaled { replicas: 6 })
        );
    }

    #[test]
    fn a_database_from_before_versions_reads_its_documents_as_version_0() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            // The schema and a row as the cutover before versioned documents left them.
            let conn = rusqlite::Connection::open(&path).unwrap();
            for sql in &crate::MIGRATIONS[..2] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 2).unwrap();
            conn.execute(
                "INSERT INTO resources (kind, name, body, updated_at) VALUES ('scaled', 'web', '{\"count\":3}', 5)",
                [],
            )
            .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let row = store.read(|tx| tx.document_row("scaled", "web")).unwrap().unwrap();
        assert_eq!(row.version, 0);
        assert_eq!(
            store.read(|tx| tx.doc_get::<Scaled>("web")).unwrap(),
            Some(Scaled { replicas: 3 })
        );
    }
}
