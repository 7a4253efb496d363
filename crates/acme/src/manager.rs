//! The thin shell around [`crate::decide`]: reads each name's certificate and attempts from
//! disk, asks what to do, obtains what is due and writes the result where the data plane
//! reloads it from (one model for certificates: the SNI list and its reload from disk).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use model::Timestamp;
use routes::acme::{Acme, attempts_file, certificate_files};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};

use crate::decide::{self, Attempts, Next, Validity};
use crate::files;
use crate::order;

/// One certificate cutover manages, as `cutover certificates` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateStatus {
    pub name: String,
    /// The listeners (`load-balancer/listener`) that serve it.
    pub listeners: Vec<String>,
    pub directory: String,
    pub challenge: String,
    /// The certificate on disk, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<Timestamp>,
    /// When it is (or was) due for renewal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_due: Option<Timestamp>,
    /// When the manager tries next: the renewal, the end of a backoff, or now.
    pub next_attempt: Timestamp,
    pub failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// `valid`, `expired` or `pending` (none yet).
    pub state: String,
}

/// Every name the listeners in `wanted` (by listener) certify, each once with the settings of
/// the first listener that names it.
pub fn by_name(wanted: &[(String, Acme)]) -> BTreeMap<String, (Acme, Vec<String>)> {
    let mut out: BTreeMap<String, (Acme, Vec<String>)> = BTreeMap::new();
    for (listener, acme) in wanted {
        for name in &acme.names {
            out.entry(name.clone())
                .or_insert_with(|| (acme.clone(), Vec::new()))
                .1
                .push(listener.clone());
        }
    }
    out
}

/// The validity of the certificate on disk for `name`, if there is a readable one.
fn current(dir: &str, name: &str) -> Option<Validity> {
    let file = certificate_files(dir, name).certificate_file;
    let first = CertificateDer::pem_file_iter(&file).ok()?.next()?.ok()?;
    crate::der::validity(&first)
}

fn attempts(dir: &str, name: &str) -> Attempts {
    std::fs::read(attempts_file(dir, name))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// What the manager knows of every name in `wanted` at `now`.
pub fn status(wanted: &[(String, Acme)], now: Timestamp) -> Vec<CertificateStatus> {
    by_name(wanted)
        .into_iter()
        .map(|(name, (acme, listeners))| {
            let validity = current(&acme.dir, &name);
            let attempts = attempts(&acme.dir, &name);
            let next_attempt = match decide::next(now, validity, &attempts) {
                Next::Obtain => now,
                Next::WaitUntil(at) => at,
            };
            let state = match validity {
                None => "pending",
                Some(v) if v.covers(now) => "valid",
                Some(_) => "expired",
            };
            CertificateStatus {
                name,
                listeners,
                directory: acme.directory.clone(),
                challenge: acme.challenge.name().to_string(),
                not_after: validity.map(|v| v.not_after),
                renewal_due: validity.map(|v| v.renewal_due()),
                next_attempt,
                failures: attempts.failures,
                last_error: attempts.last_error,
                state: state.to_string(),
            }
        })
        .collect()
}

/// Obtains and renews the certificates of the listeners it is shown, one pass at a time.
#[derive(Default)]
pub struct Manager {
    /// Accounts by directory URL, created or loaded once.
    accounts: BTreeMap<String, instant_acme::Account>,
}

impl Manager {
    /// Obtains every certificate of `wanted` that is missing or due (and not backing off), one
    /// after the other; returns the earliest time something is due next. `now` is read again
    /// after each order, which takes seconds.
    pub async fn pass(
        &mut self,
        wanted: &[(String, Acme)],
        now: impl Fn() -> Timestamp,
    ) -> Option<Timestamp> {
        let mut earliest: Option<Timestamp> = None;
        for (name, (acme, _)) in by_name(wanted) {
            let at = now();
            let before = attempts(&acme.dir, &name);
            let next = match decide::next(at, current(&acme.dir, &name), &before) {
                Next::WaitUntil(t) => t,
                Next::Obtain => {
                    let after = match self.obtain(&acme, &name).await {
                        Ok(()) => {
                            tracing::info!(%name, directory = %acme.directory, "certificate obtained over ACME");
                            decide::succeeded(now())
                        }
                        Err(e) => {
                            let after = decide::failed(&before, now(), e.to_string());
                            tracing::warn!(
                                %name,
                                failures = after.failures,
                                "could not obtain a certificate over ACME ({e}); the certificate \
                                 on disk, if any, is still served; next attempt in {}",
                                model::format_duration(decide::backoff(after.failures))
                            );
                            after
                        }
                    };
                    record(&acme.dir, &name, &after);
                    match decide::next(now(), current(&acme.dir, &name), &after) {
                        Next::WaitUntil(t) => t,
                        Next::Obtain => now(),
                    }
                }
            };
            earliest = Some(earliest.map_or(next, |e| e.min(next)));
        }
        earliest
    }

    async fn obtain(&mut self, acme: &Acme, name: &str) -> Result<(), order::OrderError> {
        let dir = PathBuf::from(&acme.dir);
        if !self.accounts.contains_key(&acme.directory) {
            let account = order::account(&dir, acme).await?;
            self.accounts.insert(acme.directory.clone(), account);
        }
        let account = &self.accounts[&acme.directory];
        let obtained = match order::obtain(account, &dir, acme, name).await {
            Ok(obtained) => obtained,
            Err(e) => {
                // A server that restarted may have forgotten the account: make it again next time.
                if matches!(e, order::OrderError::Acme { .. }) {
                    self.accounts.remove(&acme.directory);
                }
                return Err(e);
            }
        };
        let file = certificate_files(&acme.dir, name).certificate_file;
        let mut pem = obtained.chain_pem;
        if !pem.ends_with('\n') {
            pem.push('\n');
        }
        pem.push_str(&obtained.key_pem);
        files::write_private(Path::new(&file), pem.as_bytes())
            .map_err(|source| order::OrderError::Io { path: file.clone(), source })
    }
}

/// Writes a name's attempts; a failure to is logged (the next pass decides from what is there).
fn record(dir: &str, name: &str, attempts: &Attempts) {
    let file = attempts_file(dir, name);
    let written = serde_json::to_vec_pretty(attempts)
        .map_err(std::io::Error::other)
        .and_then(|json| files::write_private(Path::new(&file), &json));
    if let Err(e) = written {
        tracing::warn!(%file, "cannot record the ACME attempts: {e}");
    }
}
