//! TLS for HTTPS listeners: loads PEM certificate chains and keys into a rustls acceptor that
//! offers HTTP/2 and HTTP/1.1 by ALPN, and picks a listener's certificate by the host the client
//! names (SNI), as ALB does with a listener's certificate list: the first certificate valid for
//! that host, else the default one. A listener with `acme` also serves the certificates cutover
//! obtained for its names, once they are on disk, and answers a TLS-ALPN-01 validator
//! (`acme-tls/1`, RFC 8737) with the challenge certificate the control plane wrote for it.

use std::sync::Arc;
use std::time::SystemTime;

use routes::acme::ACME_TLS_ALPN;
use routes::{CertificateFiles, TlsConfig};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// Why a listener's certificate and key do not make a TLS acceptor: which file, and how.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate_file `{file}`: {detail}")]
    Certificate { file: String, detail: String },
    #[error("certificate_file `{file}` holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    NoCertificate { file: String },
    #[error("key_file `{file}`: no usable PEM private key ({detail})")]
    Key { file: String, detail: String },
    #[error("TLS setup: {0}")]
    Setup(rustls::Error),
    #[error(
        "certificate_file `{certificate_file}` and key_file `{key_file}` do not make a usable pair: {source}"
    )]
    Pair { certificate_file: String, key_file: String, source: rustls::Error },
}

/// What a listener's certificate and key files are on disk (modification time and size of each,
/// or nothing for one that cannot be looked at): a renewal written over them changes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilesStamp(Vec<Option<(SystemTime, u64)>>);

impl FilesStamp {
    pub fn of(cfg: &TlsConfig) -> FilesStamp {
        let managed = managed_files(cfg);
        let files = [&cfg.certificate_file, &cfg.key_file].into_iter().chain(
            cfg.certificates
                .iter()
                .chain(&managed)
                .flat_map(|c| [&c.certificate_file, &c.key_file]),
        );
        FilesStamp(
            files
                .map(|f| {
                    std::fs::metadata(f).ok().and_then(|m| Some((m.modified().ok()?, m.len())))
                })
                .collect(),
        )
    }
}

/// The certificates obtained over ACME for `cfg`'s names, where they are or will be.
fn managed_files(cfg: &TlsConfig) -> Vec<CertificateFiles> {
    cfg.acme.as_ref().map(routes::acme::Acme::certificate_files).unwrap_or_default()
}

/// Builds an acceptor, or says which file is wrong and how. Certificates obtained over ACME
/// that are not on disk yet (or not usable) are left out rather than refused: the listener
/// must serve, and answer its TLS-ALPN-01 validation, before it has them.
pub fn acceptor(cfg: &TlsConfig) -> Result<TlsAcceptor, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let managed = managed_files(cfg);
    let default = match certified_key(&cfg.certificate_file, &cfg.key_file, &provider) {
        Ok(key) => Some(Arc::new(key)),
        Err(_) if managed.iter().any(|m| m.certificate_file == cfg.certificate_file) => None,
        Err(e) => return Err(e),
    };
    let mut by_sni = cfg
        .certificates
        .iter()
        .map(|c| certified_key(&c.certificate_file, &c.key_file, &provider).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    by_sni.extend(managed.iter().filter_map(|c| {
        certified_key(&c.certificate_file, &c.key_file, &provider).ok().map(Arc::new)
    }));
    let challenges = cfg
        .acme
        .as_ref()
        .filter(|a| a.challenge == routes::acme::Challenge::TlsAlpn01)
        .map(|a| a.dir.clone());
    let mut alpn = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    if challenges.is_some() {
        alpn.push(ACME_TLS_ALPN.to_vec());
    }
    let resolver = SniResolver { default, by_sni, challenges, provider: provider.clone() };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = alpn;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A certificate chain and its key, checked to belong together.
fn certified_key(
    certificate_file: &str,
    key_file: &str,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let certificate = |e: rustls::pki_types::pem::Error| TlsError::Certificate {
        file: certificate_file.to_string(),
        detail: e.to_string(),
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certificate_file)
        .map_err(certificate)?
        .collect::<Result<_, _>>()
        .map_err(certificate)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { file: certificate_file.to_string() });
    }
    if let Err(e) = webpki::EndEntityCert::try_from(&certs[0]) {
        return Err(TlsError::Certificate {
            file: certificate_file.to_string(),
            detail: format!("its first certificate cannot be read: {e}"),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| TlsError::Key { file: key_file.to_string(), detail: e.to_string() })?;
    CertifiedKey::from_der(certs, key, provider).map_err(|source| TlsError::Pair {
        certificate_file: certificate_file.to_string(),
        key_file: key_file.to_string(),
        source,
    })
}

/// ALB's choice of certificate: the first of the listener's certificates whose names (subject
/// alternative names, wildcards included) cover the host the client asks for; the default when
/// none does or the client names no host (with no default yet, the first certificate).
#[derive(Debug)]
struct SniResolver {
    default: Option<Arc<CertifiedKey>>,
    by_sni: Vec<Arc<CertifiedKey>>,
    /// The ACME directory whose TLS-ALPN-01 challenge certificates this listener answers with.
    challenges: Option<String>,
    provider: Arc<CryptoProvider>,
}

impl SniResolver {
    fn choose(&self, host: Option<&str>) -> Option<&Arc<CertifiedKey>> {
        let fallback = self.default.as_ref().or(self.by_sni.first());
        let Some(name) = host.and_then(|h| ServerName::try_from(h).ok()) else {
            return fallback;
        };
        self.by_sni
            .iter()
            .find(|key| {
                key.end_entity_cert().ok().is_some_and(|der| {
                    webpki::EndEntityCert::try_from(der)
                        .is_ok_and(|cert| cert.verify_is_valid_for_subject_name(&name).is_ok())
                })
            })
            .or(fallback)
    }

    /// The TLS-ALPN-01 challenge certificate for `host`, read from disk: a validation is a
    /// handful of handshakes, and the file is what the control plane wrote for it just before.
    fn challenge(&self, host: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let dir = self.challenges.as_deref()?;
        let path = routes::acme::tls_alpn_01_file(dir, host?)?;
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(&path).ok()?.collect::<Result<_, _>>().ok()?;
        let key = PrivateKeyDer::from_pem_file(&path).ok()?;
        // Not `from_der`: its check that key and certificate match parses the certificate with
        // webpki, which refuses the critical acmeIdentifier extension this one must carry.
        let key = self.provider.key_provider.load_private_key(key).ok()?;
        Some(Arc::new(CertifiedKey::new(certs, key)))
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // RFC 8737 §3: a validator offers `acme-tls/1` alone and gets the challenge certificate;
        // nobody else ever does.
        let validator = client_hello.alpn().is_some_and(|mut p| p.any(|p| p == ACME_TLS_ALPN));
        if validator {
            return self.challenge(client_hello.server_name());
        }
        self.choose(client_hello.server_name()).cloned()
    }
}
