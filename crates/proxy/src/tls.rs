//! TLS for HTTPS listeners: loads PEM certificate chains and keys into a rustls acceptor that
//! offers HTTP/2 and HTTP/1.1 by ALPN.

use std::sync::Arc;

use routes::TlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// Builds an acceptor, or says which file is wrong and how.
pub fn acceptor(cfg: &TlsConfig) -> Result<TlsAcceptor, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cfg.certificate_file)
        .map_err(|e| format!("certificate_file `{}`: {e}", cfg.certificate_file))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("certificate_file `{}`: {e}", cfg.certificate_file))?;
    if certs.is_empty() {
        return Err(format!(
            "certificate_file `{}` holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            cfg.certificate_file
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&cfg.key_file)
        .map_err(|e| format!("key_file `{}`: no usable PEM private key ({e})", cfg.key_file))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            format!(
                "certificate_file `{}` and key_file `{}` do not make a usable pair: {e}",
                cfg.certificate_file, cfg.key_file
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
