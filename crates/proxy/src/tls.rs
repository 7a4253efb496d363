//! TLS for HTTPS listeners: loads PEM certificate chains and keys into a rustls acceptor that
//! offers HTTP/2 and HTTP/1.1 by ALPN, and picks a listener's certificate by the host the client
//! names (SNI), as ALB does with a listener's certificate list: the first certificate valid for
//! that host, else the default one.

use std::sync::Arc;
use std::time::SystemTime;

use routes::TlsConfig;
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
        let files = [&cfg.certificate_file, &cfg.key_file]
            .into_iter()
            .chain(cfg.certificates.iter().flat_map(|c| [&c.certificate_file, &c.key_file]));
        FilesStamp(
            files
                .map(|f| {
                    std::fs::metadata(f).ok().and_then(|m| Some((m.modified().ok()?, m.len())))
                })
                .collect(),
        )
    }
}

/// Builds an acceptor, or says which file is wrong and how.
pub fn acceptor(cfg: &TlsConfig) -> Result<TlsAcceptor, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let default = certified_key(&cfg.certificate_file, &cfg.key_file, &provider)?;
    let by_sni = cfg
        .certificates
        .iter()
        .map(|c| certified_key(&c.certificate_file, &c.key_file, &provider).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { default: Arc::new(default), by_sni }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
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
/// none does or the client names no host.
#[derive(Debug)]
struct SniResolver {
    default: Arc<CertifiedKey>,
    by_sni: Vec<Arc<CertifiedKey>>,
}

impl SniResolver {
    fn choose(&self, host: Option<&str>) -> &Arc<CertifiedKey> {
        let Some(name) = host.and_then(|h| ServerName::try_from(h).ok()) else {
            return &self.default;
        };
        self.by_sni
            .iter()
            .find(|key| {
                key.end_entity_cert().ok().is_some_and(|der| {
                    webpki::EndEntityCert::try_from(der)
                        .is_ok_and(|cert| cert.verify_is_valid_for_subject_name(&name).is_ok())
                })
            })
            .unwrap_or(&self.default)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.choose(client_hello.server_name()).clone())
    }
}
