//! Several certificates on one HTTPS listener: each handshake gets the certificate that names the
//! host the client asks for (SNI), wildcards included, and the default one otherwise, as an ALB
//! listener's certificate list.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use routes::*;
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

/// Accepts any certificate: the test looks at which one the listener sent, not whether a client
/// would trust it.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Writes a self-signed certificate for `names` and its key as `stem.pem` and `stem.key`.
fn certificate(
    dir: &Path,
    stem: &str,
    names: &[&str],
) -> (CertificateDer<'static>, CertificateFiles) {
    let cert =
        rcgen::generate_simple_self_signed(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    let files = CertificateFiles {
        certificate_file: dir.join(format!("{stem}.pem")).display().to_string(),
        key_file: dir.join(format!("{stem}.key")).display().to_string(),
    };
    std::fs::write(&files.certificate_file, cert.cert.pem()).unwrap();
    std::fs::write(&files.key_file, cert.key_pair.serialize_pem()).unwrap();
    (cert.cert.der().clone(), files)
}

/// The certificate the listener at `addr` presents to a client asking for `sni`.
async fn presented(addr: std::net::SocketAddr, sni: &str) -> CertificateDer<'static> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(sni.to_string()).unwrap(), tcp)
        .await
        .expect("TLS handshake");
    tls.get_ref().1.peer_certificates().expect("a certificate")[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_certificate_that_names_the_host_and_the_default_otherwise() {
    let dir = std::env::temp_dir().join(format!("cutover-proxy-sni-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (default_der, default) = certificate(&dir, "default", &["www.example.com"]);
    let (api_der, api) = certificate(&dir, "api", &["api.example.com"]);
    let (shop_der, shop) = certificate(&dir, "shop", &["*.shop.example.com", "shop.example.com"]);

    let lb = Lb::start(None).await;
    let backend = Backend::start("b").await;
    let bind = free_addr();
    let mut l = listener(bind, forward(&[("g", 1)]));
    l.tls = Some(TlsConfig {
        certificate_file: default.certificate_file.clone(),
        key_file: default.key_file.clone(),
        certificates: vec![api, shop],
        acme: None,
    });
    let checks = HealthCheck { enabled: false, ..hc(1000) };
    lb.apply(&table(1, vec![("https", l)], vec![("g", group(&[backend.addr], checks, 0))])).await;

    for (sni, expected, which) in [
        ("api.example.com", &api_der, "api's"),
        ("API.Example.com", &api_der, "api's, whatever the case"),
        ("eu.shop.example.com", &shop_der, "shop's, by its wildcard"),
        ("shop.example.com", &shop_der, "shop's"),
        ("www.example.com", &default_der, "the default, which names it"),
        ("other.example.com", &default_der, "the default, as no certificate names it"),
        ("a.b.shop.example.com", &default_der, "the default: a wildcard covers one label"),
    ] {
        assert!(presented(bind, sni).await == *expected, "{sni} should get {which} certificate");
    }
    lb.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_renewed_on_disk_is_served_to_new_handshakes_and_open_connections_stay() {
    let dir = std::env::temp_dir().join(format!("cutover-proxy-renew-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (first_der, files) = certificate(&dir, "site", &["localhost"]);
    let lb = Lb::start(None).await;
    let backend = Backend::start("b").await;
    let bind = free_addr();
    let mut l = listener(bind, forward(&[("g", 1)]));
    l.tls = Some(TlsConfig {
        certificate_file: files.certificate_file.clone(),
        key_file: files.key_file.clone(),
        certificates: Vec::new(),
        acme: None,
    });
    let checks = HealthCheck { enabled: false, ..hc(1000) };
    lb.apply(&table(1, vec![("https", l)], vec![("g", group(&[backend.addr], checks, 0))])).await;
    assert!(presented(bind, "localhost").await == first_der);

    // A connection opened before the renewal.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(bind).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (mut open, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let get = || {
        http::Request::get("/")
            .header("host", "localhost")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    assert_eq!(open.send_request(get()).await.unwrap().status(), 200);

    // The renewal: new files moved over the old ones, as certbot and ACME clients write them.
    let (renewed_der, renewed) = certificate(&dir, "renewed", &["localhost"]);
    std::fs::rename(&renewed.key_file, &files.key_file).unwrap();
    std::fs::rename(&renewed.certificate_file, &files.certificate_file).unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while presented(bind, "localhost").await != renewed_der {
        assert!(tokio::time::Instant::now() < deadline, "the renewed certificate is never served");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        open.send_request(get()).await.expect("the open connection still serves").status(),
        200
    );
    lb.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
