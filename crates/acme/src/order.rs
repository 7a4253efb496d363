//! One certificate from an ACME server (RFC 8555 §7.4): an order for one name, its challenge
//! answered through the data plane's files, a fresh key and CSR, the certificate downloaded.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, HttpClient, Identifier,
    NewAccount, NewOrder, Order, OrderStatus,
};
use routes::acme::{Acme, Challenge};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use sha2::Digest;

use crate::files;

/// How long one order may take, challenge validation included, before it counts as failed.
const ORDER_DEADLINE: Duration = Duration::from_secs(90);

/// Why a certificate was not obtained. Never carries a key.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("ca_bundle `{file}`: {detail}")]
    CaBundle { file: String, detail: String },
    #[error("TLS setup for the ACME server: {0}")]
    Tls(#[from] rustls::Error),
    #[error("ACME server {directory}: {source}")]
    Acme { directory: String, source: instant_acme::Error },
    #[error("the ACME server offers no {challenge} challenge for {name}")]
    NoChallenge { name: String, challenge: &'static str },
    #[error("the ACME server refused {name}'s authorization: {detail}")]
    Invalid { name: String, detail: String },
    #[error("the order for {name} did not finish within {seconds} s (status {status})")]
    TimedOut { name: String, seconds: u64, status: String },
    #[error("making a key or CSR: {0}")]
    Key(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OrderError + '_ {
    move |source| OrderError::Io { path: path.display().to_string(), source }
}

/// A certificate chain (PEM) and its key (PEM), just obtained.
pub struct Obtained {
    pub chain_pem: String,
    pub key_pem: String,
}

/// HTTPS to the ACME server: the roots of `ca_bundle` when set (a private ACME CA), else the
/// system's.
fn http_client(ca_bundle: Option<&str>) -> Result<Box<dyn HttpClient>, OrderError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = match ca_bundle {
        Some(file) => {
            let bad = |detail: String| OrderError::CaBundle { file: file.to_string(), detail };
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(file).map_err(|e| bad(e.to_string()))? {
                roots.add(cert.map_err(|e| bad(e.to_string()))?).map_err(|e| bad(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(bad("holds no PEM certificate".into()));
            }
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth();
            builder.with_tls_config(config)
        }
        None => builder.with_provider_and_native_roots(provider).map_err(|e| {
            OrderError::CaBundle { file: "(system roots)".into(), detail: e.to_string() }
        })?,
    };
    let https = builder.https_only().enable_http1().enable_http2().build();
    Ok(Box::new(Client::builder(TokioExecutor::new()).build(https)))
}

/// The account of `settings.directory`: the one stored under `dir`, or a new one (stored 0600).
pub async fn account(dir: &Path, settings: &Acme) -> Result<Account, OrderError> {
    let acme = |source| OrderError::Acme { directory: settings.directory.clone(), source };
    let file = dir.join("accounts").join(format!("{}.json", account_key(&settings.directory)));
    let http = http_client(settings.ca_bundle.as_deref())?;
    if let Ok(text) = std::fs::read_to_string(&file)
        && let Ok(credentials) = serde_json::from_str::<AccountCredentials>(&text)
    {
        return Account::from_credentials_and_http(credentials, http).await.map_err(acme);
    }
    let contact = settings.email.as_ref().map(|e| format!("mailto:{e}"));
    let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
    let new = NewAccount {
        contact: &contact,
        terms_of_service_agreed: true,
        only_return_existing: false,
    };
    let (account, credentials) =
        Account::create_with_http(&new, &settings.directory, None, http).await.map_err(acme)?;
    let json = serde_json::to_vec(&credentials).map_err(|e| acme(e.into()))?;
    files::write_private(&file, &json).map_err(io(&file))?;
    Ok(account)
}

/// A file name for a directory URL's account: accounts of different CAs never mix.
fn account_key(directory: &str) -> String {
    let digest = sha2::Sha256::digest(directory.as_bytes());
    digest[..12].iter().map(|b| format!("{b:02x}")).collect()
}

/// Orders a certificate for `name`, answering its challenge with files under `dir` that the data
/// plane serves; they are removed again whatever happens.
pub async fn obtain(
    account: &Account,
    dir: &Path,
    settings: &Acme,
    name: &str,
) -> Result<Obtained, OrderError> {
    let mut answers = Vec::new();
    let result =
        tokio::time::timeout(ORDER_DEADLINE, run(account, dir, settings, name, &mut answers)).await;
    for file in &answers {
        files::remove(Path::new(file));
    }
    result.unwrap_or_else(|_| {
        Err(OrderError::TimedOut {
            name: name.to_string(),
            seconds: ORDER_DEADLINE.as_secs(),
            status: "no answer".into(),
        })
    })
}

async fn run(
    account: &Account,
    dir: &Path,
    settings: &Acme,
    name: &str,
    answers: &mut Vec<String>,
) -> Result<Obtained, OrderError> {
    let acme = |source| OrderError::Acme { directory: settings.directory.clone(), source };
    let identifiers = [Identifier::Dns(name.to_string())];
    let mut order =
        account.new_order(&NewOrder { identifiers: &identifiers }).await.map_err(acme)?;
    for authorization in order.authorizations().await.map_err(acme)? {
        if authorization.status != AuthorizationStatus::Pending {
            continue;
        }
        let (wanted, challenge_name) = match settings.challenge {
            Challenge::Http01 => (ChallengeType::Http01, "http-01"),
            Challenge::TlsAlpn01 => (ChallengeType::TlsAlpn01, "tls-alpn-01"),
        };
        let challenge =
            authorization.challenges.iter().find(|c| c.r#type == wanted).ok_or(
                OrderError::NoChallenge { name: name.to_string(), challenge: challenge_name },
            )?;
        let key_authorization = order.key_authorization(challenge);
        let dir_text = dir.display().to_string();
        let (file, contents) = match settings.challenge {
            Challenge::Http01 => (
                routes::acme::http_01_file(&dir_text, &challenge.token),
                key_authorization.as_str().as_bytes().to_vec(),
            ),
            Challenge::TlsAlpn01 => (
                routes::acme::tls_alpn_01_file(&dir_text, name),
                tls_alpn_01_certificate(name, key_authorization.digest().as_ref())?.into_bytes(),
            ),
        };
        let file = file
            .ok_or(OrderError::NoChallenge { name: name.to_string(), challenge: challenge_name })?;
        files::write_private(Path::new(&file), &contents).map_err(io(Path::new(&file)))?;
        answers.push(file);
        order.set_challenge_ready(&challenge.url).await.map_err(acme)?;
    }
    wait_until_ready(&mut order, name, acme).await?;
    let key = rcgen::KeyPair::generate()?;
    let csr = rcgen::CertificateParams::new(vec![name.to_string()])?.serialize_request(&key)?;
    order.finalize(csr.der()).await.map_err(acme)?;
    let mut pause = Duration::from_millis(250);
    let chain_pem = loop {
        if let Some(chain) = order.certificate().await.map_err(acme)? {
            break chain;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    };
    Ok(Obtained { chain_pem, key_pem: key.serialize_pem() })
}

/// Polls the order until the server has validated every challenge (RFC 8555 §7.5.1).
async fn wait_until_ready(
    order: &mut Order,
    name: &str,
    acme: impl Fn(instant_acme::Error) -> OrderError,
) -> Result<(), OrderError> {
    let mut pause = Duration::from_millis(250);
    loop {
        let state = order.refresh().await.map_err(&acme)?;
        match state.status {
            OrderStatus::Ready | OrderStatus::Valid => return Ok(()),
            OrderStatus::Invalid => {
                let detail = match order.authorizations().await {
                    Ok(authorizations) => authorizations
                        .iter()
                        .flat_map(|a| &a.challenges)
                        .filter_map(|c| c.error.as_ref())
                        .map(|p| p.detail.clone().unwrap_or_else(|| format!("{p:?}")))
                        .next()
                        .unwrap_or_else(|| "the order became invalid".into()),
                    Err(e) => e.to_string(),
                };
                return Err(OrderError::Invalid { name: name.to_string(), detail });
            }
            OrderStatus::Pending | OrderStatus::Processing => {}
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(3));
    }
}

/// RFC 8737 §3: a self-signed certificate for `name` carrying the critical acmeIdentifier
/// extension with the SHA-256 of the key authorization; with its key, as one PEM.
fn tls_alpn_01_certificate(name: &str, digest: &[u8]) -> Result<String, OrderError> {
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()])?;
    params.custom_extensions.push(rcgen::CustomExtension::new_acme_identifier(digest));
    let key = rcgen::KeyPair::generate()?;
    let certificate = params.self_signed(&key)?;
    Ok(format!("{}{}", certificate.pem(), key.serialize_pem()))
}
