//! TLS for HTTPS listeners: loads PEM certificate chains and keys into a rustls acceptor that
//! offers HTTP/2 and HTTP/1.1 by ALPN.

use std::sync::Arc;

use routes::TlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
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

/// Builds an acceptor, or says which file is wrong and how.
pub fn acceptor(cfg: &TlsConfig) -> Result<TlsAcceptor, TlsError> {
    let certificate = |e: rustls::pki_types::pem::Error| TlsError::Certificate {
        file: cfg.certificate_file.clone(),
        detail: e.to_string(),
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cfg.certificate_file)
        .map_err(certificate)?
        .collect::<Result<_, _>>()
        .map_err(certificate)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { file: cfg.certificate_file.clone() });
    }
    let key = PrivateKeyDer::from_pem_file(&cfg.key_file)
        .map_err(|e| TlsError::Key { file: cfg.key_file.clone(), detail: e.to_string() })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|source| TlsError::Pair {
            certificate_file: cfg.certificate_file.clone(),
            key_file: cfg.key_file.clone(),
            source,
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
