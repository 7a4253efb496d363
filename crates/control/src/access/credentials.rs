//! Named credentials: a secret shown once, stored only as its SHA-256, with bindings, an expiry
//! and its last use; and who presented what (the [`Caller`]).

use model::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::decision::Binding;
use crate::hooks::HookGrant;

/// Every secret starts with this, so that secret scanners and people recognize one.
pub const SECRET_PREFIX: &str = "cutover_";

/// A new secret: 160 random bits.
pub fn generate_secret() -> String {
    let bytes: [u8; 20] = rand::random();
    format!("{SECRET_PREFIX}{}", hex(&bytes))
}

/// A single sign-on session's name in `tokens list` (what `tokens revoke` takes): `sso-` and
/// 48 random bits, unrelated to its secret.
pub fn session_name() -> String {
    let bytes: [u8; 6] = rand::random();
    format!("sso-{}", hex(&bytes))
}

/// What is stored of a secret. A secret has 160 random bits, so a fast hash is enough: there
/// is nothing to guess a password from.
pub fn hash_secret(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A credential name that cannot be one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("credential name `{0}`: use 1 to 64 letters, digits, `-`, `_` or `.` (e.g. ci-web)")]
pub struct NameError(pub String);

/// A credential's name: what the audit trail and `tokens list` show, and what `revoke` takes.
pub fn check_name(name: &str) -> Result<(), NameError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok { Ok(()) } else { Err(NameError(name.to_string())) }
}

/// The bindings of a stored credential (`store::CredentialRow::bindings`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredBindings {
    pub bindings: Vec<Binding>,
    /// Set for a single sign-on session: who signed in, and through which provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionOf>,
    /// Set for a console session: the hash of the credential it was opened with, which it
    /// never outlives (`console_session`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

/// The user a single sign-on session is of.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionOf {
    pub user: String,
    /// The provider's issuer URL.
    pub via: String,
}

/// Who made a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// No credential, on an API that needs none (it listens on loopback only and was given no
    /// token): the operator of this machine, an admin.
    Local,
    /// The token `cutover up` was started with, or generated: an admin.
    Bootstrap,
    Named {
        name: String,
        bindings: Vec<Binding>,
    },
    /// A person signed in through an OpenID provider (`cutover login`).
    User {
        user: String,
        via: String,
        bindings: Vec<Binding>,
    },
    /// A single sign-on session past its expiry.
    SessionExpired {
        user: String,
        at: Timestamp,
    },
    /// A pending hook execution's own token.
    Hook(HookGrant),
    /// No credential where one is needed.
    Anonymous,
    /// A named credential past its expiry.
    Expired {
        name: String,
        at: Timestamp,
    },
    /// A token nobody issued, or one that was revoked.
    Unknown,
}

impl Caller {
    /// How the audit trail names it.
    pub fn actor(&self) -> String {
        match self {
            Caller::Local => "local".into(),
            Caller::Bootstrap => "bootstrap".into(),
            Caller::Named { name, .. } | Caller::Expired { name, .. } => format!("token:{name}"),
            Caller::User { user, .. } | Caller::SessionExpired { user, .. } => {
                format!("user:{user}")
            }
            Caller::Hook(grant) => {
                format!("hook:{}/{}", grant.deployment_id, grant.execution_id)
            }
            Caller::Anonymous => "anonymous".into(),
            Caller::Unknown => "unknown-token".into(),
        }
    }

    /// The bindings it holds; `None` when it is not authenticated (or only as a hook).
    pub fn bindings(&self) -> Option<Vec<Binding>> {
        match self {
            Caller::Local | Caller::Bootstrap => Some(vec![Binding::admin()]),
            Caller::Named { bindings, .. } | Caller::User { bindings, .. } => {
                Some(bindings.clone())
            }
            _ => None,
        }
    }
}

/// A hook's token opens one request: `PUT` of its own execution's report.
pub fn hook_may(grant: &HookGrant, method: &axum::http::Method, path: &str) -> bool {
    method == axum::http::Method::PUT && path == grant.report_path()
}

/// Who presented `secret` (already checked to be neither the bootstrap token nor a hook's): the
/// stored credential with its hash, unless it has expired.
pub fn named_caller(row: Option<store::CredentialRow>, now: Timestamp) -> Caller {
    let Some(row) = row else { return Caller::Unknown };
    // A binding this version cannot read grants nothing.
    let stored = serde_json::from_str::<StoredBindings>(&row.bindings).unwrap_or(StoredBindings {
        bindings: Vec::new(),
        session: None,
        parent: None,
    });
    let expired = row.expires_at.filter(|expires| now.as_millis() >= *expires).map(Timestamp);
    match (stored.session, expired) {
        (Some(session), Some(at)) => Caller::SessionExpired { user: session.user, at },
        (None, Some(at)) => Caller::Expired { name: row.name, at },
        (Some(session), None) => {
            Caller::User { user: session.user, via: session.via, bindings: stored.bindings }
        }
        (None, None) => Caller::Named { name: row.name, bindings: stored.bindings },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(expires_at: Option<u64>) -> store::CredentialRow {
        store::CredentialRow {
            name: "ci-web".into(),
            secret_hash: hash_secret("s"),
            bindings: serde_json::to_string(&StoredBindings {
                bindings: vec![Binding::admin()],
                session: None,
                parent: None,
            })
            .unwrap(),
            created_at: 1,
            expires_at,
            last_used_at: None,
        }
    }

    #[test]
    fn a_hook_token_opens_only_its_own_report() {
        use axum::http::Method;
        let grant =
            HookGrant { deployment_id: "d-1".into(), execution_id: "AfterInstall-1".into() };
        let report = "/v1/deployments/d-1/lifecycle-hooks/AfterInstall-1";
        assert!(hook_may(&grant, &Method::PUT, report));
        for (method, path) in [
            (Method::GET, report),
            (Method::PUT, "/v1/deployments/d-1/lifecycle-hooks/AfterInstall-2"),
            (Method::PUT, "/v1/deployments/d-2/lifecycle-hooks/AfterInstall-1"),
            (Method::PUT, "/v1/deployments/d-1/lifecycle-hooks/AfterInstall-1/"),
            (Method::GET, "/v1/deployments"),
        ] {
            assert!(!hook_may(&grant, &method, path), "{method} {path}");
        }
    }

    #[test]
    fn a_credential_expires_at_the_millisecond_it_was_given() {
        let at = |ms| named_caller(Some(row(Some(5_000))), Timestamp(ms));
        assert!(matches!(at(4_999), Caller::Named { .. }));
        assert_eq!(at(5_000), Caller::Expired { name: "ci-web".into(), at: Timestamp(5_000) });
        assert!(matches!(named_caller(Some(row(None)), Timestamp(u64::MAX)), Caller::Named { .. }));
        assert_eq!(named_caller(None, Timestamp(1)), Caller::Unknown);
    }

    #[test]
    fn a_session_is_its_users_until_it_expires_then_it_says_whose_expired() {
        let session = |expires_at| store::CredentialRow {
            name: session_name(),
            bindings: serde_json::to_string(&StoredBindings {
                bindings: vec![Binding::admin()],
                session: Some(SessionOf { user: "alice".into(), via: "https://id.test".into() }),
                parent: None,
            })
            .unwrap(),
            ..row(Some(expires_at))
        };
        let caller = named_caller(Some(session(5_000)), Timestamp(4_999));
        assert_eq!(
            caller,
            Caller::User {
                user: "alice".into(),
                via: "https://id.test".into(),
                bindings: vec![Binding::admin()],
            }
        );
        assert_eq!(caller.actor(), "user:alice");
        let expired = named_caller(Some(session(5_000)), Timestamp(5_000));
        assert_eq!(expired, Caller::SessionExpired { user: "alice".into(), at: Timestamp(5_000) });
        assert_eq!(expired.bindings(), None);
        assert!(session_name().starts_with("sso-") && session_name() != session_name());
    }

    #[test]
    fn secrets_are_random_prefixed_and_stored_as_their_sha256() {
        let (a, b) = (generate_secret(), generate_secret());
        assert_ne!(a, b);
        assert!(a.starts_with(SECRET_PREFIX) && a.len() == SECRET_PREFIX.len() + 40, "{a}");
        assert_eq!(
            hash_secret("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(check_name("ci-web").is_ok());
        assert!(check_name("ci web").is_err() && check_name("").is_err());
    }
}
