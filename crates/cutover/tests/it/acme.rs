//! Certificates obtained over ACME from a real ACME server on this machine: Let's Encrypt's test
//! server `pebble` (Debian's package), resolving the test's host names to loopback through
//! `pebble-challtestsrv`'s DNS, validating against the real `cutover up`'s listeners.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};

use crate::harness::{Cluster, Options, free_port, wait_for_or};

/// A running pebble and its DNS, stopped when dropped.
struct Pebble {
    children: Vec<Child>,
    dir: PathBuf,
    directory: String,
    management: SocketAddr,
    /// The roots pebble's own HTTPS (directory, management) is checked against, as PEM.
    ca_bundle: PathBuf,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Pebble {
    /// Starts pebble validating HTTP-01 on `http_port` and TLS-ALPN-01 on `tls_port`, issuing
    /// certificates valid for `validity`.
    fn start(dir: &Path, http_port: u16, tls_port: u16, validity: Duration) -> Pebble {
        let dir = dir.join("pebble");
        std::fs::create_dir_all(&dir).unwrap();
        // Pebble's HTTPS: a CA of the test's, and a certificate for 127.0.0.1 signed by it.
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "pebble test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        let ca_bundle = dir.join("ca.pem");
        std::fs::write(&ca_bundle, ca.pem()).unwrap();
        std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let management: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = serde_json::json!({ "pebble": {
            "listenAddress": listen.to_string(),
            "managementListenAddress": management.to_string(),
            "certificate": dir.join("cert.pem"),
            "privateKey": dir.join("key.pem"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "certificateValidityPeriod": validity.as_secs(),
        }});
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        let dns = format!("127.0.0.1:{}", free_port());
        let log = |name: &str| std::fs::File::create(dir.join(name)).unwrap();
        let mut pebble = Pebble {
            children: Vec::new(),
            directory: format!("https://{listen}/dir"),
            management,
            ca_bundle,
            dir: dir.clone(),
        };
        pebble.children.push(
            Command::new("pebble-challtestsrv")
                .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", "", "-dns01", &dns])
                .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
                .args(["-management", &format!("127.0.0.1:{}", free_port())])
                .stdout(log("challtestsrv.log"))
                .stderr(log("challtestsrv.err"))
                .spawn()
                .expect("pebble-challtestsrv (Debian's pebble package) is installed"),
        );
        pebble.children.push(
            Command::new("pebble")
                .arg("-config")
                .arg(dir.join("config.json"))
                .args(["-dnsserver", &dns])
                // No random pause before validating, and no nonce refused on purpose.
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env("PEBBLE_WFE_NONCEREJECT", "0")
                .stdin(Stdio::null())
                .stdout(log("pebble.log"))
                .stderr(log("pebble.err"))
                .spawn()
                .expect("pebble (Debian's pebble package) is installed"),
        );
        wait_for_or(
            "pebble to listen",
            Duration::from_secs(30),
            || TcpStream::connect(listen).ok(),
            || pebble.logs(),
        );
        pebble
    }

    fn stop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.children.clear();
    }

    fn logs(&self) -> String {
        ["pebble.log", "pebble.err"]
            .iter()
            .map(|f| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The root pebble issues certificates under (its management interface, `/roots/0`).
    fn issuing_roots(&self) -> rustls::RootCertStore {
        let pebble_https = roots_from_pem(&std::fs::read(&self.ca_bundle).unwrap());
        let (_, body, _) =
            https_get(self.management, "localhost", "/roots/0", &pebble_https).unwrap();
        roots_from_pem(&body)
    }
}

fn roots_from_pem(pem: &[u8]) -> rustls::RootCertStore {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    assert!(!roots.is_empty(), "no PEM certificate in {}", String::from_utf8_lossy(pem));
    roots
}

/// One HTTPS request to `addr` naming `host` (SNI and Host), checked against `roots`: the
/// status line, the body and the server's certificate.
fn https_get(
    addr: SocketAddr,
    host: &str,
    path: &str,
    roots: &rustls::RootCertStore,
) -> Result<(String, Vec<u8>, CertificateDer<'static>), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    let name = ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let sock = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).map_err(|e| format!("handshake or write: {e}"))?;
    let mut answer = Vec::new();
    match tls.read_to_end(&mut answer) {
        Ok(_) => {}
        // A server that closes without close_notify has still answered.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !answer.is_empty() => {}
        Err(e) => return Err(format!("read: {e}")),
    }
    let certificate = tls.conn.peer_certificates().ok_or("no certificate")?[0].clone();
    let text = String::from_utf8_lossy(&answer);
    let (head, _) = text.split_once("\r\n\r\n").ok_or("no head")?;
    let status = head.lines().next().unwrap_or_default().to_string();
    let body_at = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    Ok((status, answer[body_at..].to_vec(), certificate))
}

/// A cutover whose load balancer has an HTTP listener and an HTTPS listener with `acme` that
/// answers `host` by a rule, and the pebble it obtains certificates from.
struct Setup {
    cluster: Cluster,
    pebble: Pebble,
    host: String,
    https: SocketAddr,
}

fn setup(challenge: &str, validity: Duration) -> Setup {
    let cluster = Cluster::start(Options::default());
    let (http_port, https_port) = (free_port(), free_port());
    let pebble = Pebble::start(cluster.dir.path(), http_port, https_port, validity);
    let host = format!("app-{}.cutover.test", https_port);
    std::fs::copy(&pebble.ca_bundle, cluster.path("acme-ca.pem")).unwrap();
    let yaml = format!(
        r#"load_balancers:
  - name: edge
    listeners:
      - {{ name: http, port: {http_port}, default_action: {{ fixed_response: {{ status_code: 404 }} }} }}
      - name: https
        port: {https_port}
        protocol: HTTPS
        acme:
          directory: {directory}
          email: ops@example.com
          challenge: {challenge}
          ca_bundle: acme-ca.pem
        rules:
          - priority: 1
            conditions: [{{ host_header: [{host}] }}]
            action: {{ fixed_response: {{ status_code: 200, body: hello }} }}
        default_action: {{ fixed_response: {{ status_code: 404 }} }}
"#,
        directory = pebble.directory,
    );
    std::fs::write(cluster.path("acme.yaml"), yaml).unwrap();
    cluster.cli_ok(&["apply", "-f", cluster.path("acme.yaml").to_str().unwrap()]);
    let https = format!("127.0.0.1:{https_port}").parse().unwrap();
    Setup { cluster, pebble, host, https }
}

impl Setup {
    /// `cutover certificates --json`'s entry for the host.
    fn status(&self) -> serde_json::Value {
        let list = self.cluster.json(&["certificates"]);
        list.as_array()
            .and_then(|l| l.iter().find(|c| c["name"] == self.host.as_str()))
            .cloned()
            .unwrap_or(serde_json::Value::Null)
    }

    /// Waits until the listener serves the host a certificate issued under pebble's root, and
    /// returns it.
    fn wait_for_certificate(&self, roots: &rustls::RootCertStore) -> CertificateDer<'static> {
        let last = std::cell::RefCell::new(String::new());
        wait_for_or(
            "the listener to serve a certificate from pebble",
            Duration::from_secs(60),
            || match https_get(self.https, &self.host, "/", roots) {
                Ok((status, body, cert)) if status.contains(" 200 ") && body == b"hello" => {
                    Some(cert)
                }
                Ok((status, ..)) => {
                    *last.borrow_mut() = status;
                    None
                }
                Err(e) => {
                    *last.borrow_mut() = e;
                    None
                }
            },
            || format!("{}\nstatus: {}\n{}", last.borrow(), self.status(), self.pebble.logs()),
        )
    }
}

fn obtains_a_certificate_end_to_end(challenge: &str) {
    let s = setup(challenge, Duration::from_secs(3600));
    let roots = s.pebble.issuing_roots();
    // Verified against pebble's root for the host name, by rustls: issued by pebble's chain.
    let cert = s.wait_for_certificate(&roots);
    let validity = acme::der::validity(&cert).unwrap();
    let status = s.status();
    assert_eq!(status["state"], "valid", "{status}");
    assert_eq!(status["challenge"], challenge, "{status}");
    assert_eq!(status["not_after"], validity.not_after.as_millis(), "{status}");
    assert_eq!(status["failures"], 0, "{status}");
    assert_eq!(status["listeners"], serde_json::json!(["edge/https"]), "{status}");
}

#[test]
fn a_certificate_is_obtained_from_pebble_over_http_01_through_cutover_up() {
    obtains_a_certificate_end_to_end("http-01");
}

#[test]
fn a_certificate_is_obtained_from_pebble_over_tls_alpn_01_through_cutover_up() {
    obtains_a_certificate_end_to_end("tls-alpn-01");
}

/// Clients that keep connecting (a fresh handshake each time) and what they saw.
struct Handshakes {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<std::sync::Mutex<Vec<String>>>,
    serials: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Handshakes {
    fn start(addr: SocketAddr, host: String, roots: rustls::RootCertStore) -> Handshakes {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let serials = Arc::new(std::sync::Mutex::new(Vec::<Vec<u8>>::new()));
        let thread = {
            let (stop, ok, failed, serials) =
                (stop.clone(), ok.clone(), failed.clone(), serials.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match https_get(addr, &host, "/", &roots) {
                        Ok((status, _, cert)) if status.contains(" 200 ") => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            let der = cert.to_vec();
                            let mut seen = serials.lock().unwrap();
                            if seen.last() != Some(&der) {
                                seen.push(der);
                            }
                        }
                        Ok((status, ..)) => failed.lock().unwrap().push(status),
                        Err(e) => failed.lock().unwrap().push(e),
                    }
                }
            })
        };
        Handshakes { stop, ok, failed, serials, thread: Some(thread) }
    }

    fn certificates_seen(&self) -> usize {
        self.serials.lock().unwrap().len()
    }
}

impl Drop for Handshakes {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn short_lived_certificates_are_renewed_while_clients_keep_connecting_without_a_failed_handshake() {
    // Pebble issues 30-second certificates: each is due for renewal 20 s after it starts.
    let s = setup("tls-alpn-01", Duration::from_secs(30));
    let roots = s.pebble.issuing_roots();
    let first = s.wait_for_certificate(&roots);
    let clients = Handshakes::start(s.https, s.host.clone(), roots);
    wait_for_or(
        "two renewals served to clients",
        Duration::from_secs(90),
        || (clients.certificates_seen() >= 3).then_some(()),
        || format!("{} certificates seen; status {}", clients.certificates_seen(), s.status()),
    );
    let seen = clients.serials.lock().unwrap().clone();
    assert_eq!(seen[0], first.to_vec(), "clients started on the first certificate");
    let failed = clients.failed.lock().unwrap().clone();
    let ok = clients.ok.load(Ordering::Relaxed);
    assert!(failed.is_empty(), "{} of {} handshakes failed: {failed:?}", failed.len(), ok);
    assert!(ok > 20, "only {ok} handshakes");
}

#[test]
fn an_acme_server_that_is_down_is_retried_with_backoff_while_the_valid_certificate_is_served() {
    let s = setup("http-01", Duration::from_secs(30));
    let roots = s.pebble.issuing_roots();
    let served = s.wait_for_certificate(&roots);
    let validity = acme::der::validity(&served).unwrap();
    let mut s = s;
    s.pebble.stop();
    // Due 20 s after the certificate starts: the attempts then fail, and back off.
    let failing = wait_for_or(
        "the renewal to fail twice",
        Duration::from_secs(60),
        || {
            let status = s.status();
            (status["failures"].as_u64() >= Some(2)).then_some(status)
        },
        || s.status().to_string(),
    );
    let error = failing["last_error"].as_str().unwrap_or_default();
    assert!(error.contains(&s.pebble.directory), "the error names the server: {failing}");
    assert!(
        failing["next_attempt"].as_u64() > Some(now_ms() + 1000),
        "the next attempt waits out a backoff: {failing}"
    );
    assert!(now_ms() < validity.not_after.as_millis(), "the test ran past the certificate's end");
    let (_, _, still) = https_get(s.https, &s.host, "/", &roots).unwrap();
    assert_eq!(still, served, "the still-valid certificate is served");
    assert_eq!(failing["state"], "valid", "{failing}");
    let log = std::fs::read_to_string(s.cluster.path("up.log")).unwrap();
    assert!(log.contains("could not obtain a certificate over ACME"), "{log}");
}

/// The OS's wall clock: pebble dates its certificates by it, and so does this comparison.
#[allow(clippy::disallowed_methods)]
fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

#[test]
fn keys_are_private_files_and_never_appear_in_logs_or_answers() {
    let s = setup("http-01", Duration::from_secs(3600));
    let roots = s.pebble.issuing_roots();
    s.wait_for_certificate(&roots);
    let acme = s.cluster.data_dir().join("acme");
    let certificate = acme.join("certificates").join(format!("{}.pem", s.host));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&certificate), 0o600);
    assert_eq!(mode(&acme), 0o700);
    assert_eq!(mode(&acme.join("certificates")), 0o700);
    let accounts: Vec<PathBuf> =
        std::fs::read_dir(acme.join("accounts")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(accounts.len(), 1, "{accounts:?}");
    assert_eq!(mode(&accounts[0]), 0o600);
    // The key's base64 lines (long enough never to appear by chance), and the account's key.
    let pem = std::fs::read_to_string(&certificate).unwrap();
    let key = pem.split("PRIVATE KEY-----").nth(1).expect("the file holds the key");
    let account = std::fs::read_to_string(&accounts[0]).unwrap();
    let account: serde_json::Value = serde_json::from_str(&account).unwrap();
    let account_key = account["key_pkcs8"].as_str().expect("credentials hold a key").to_string();
    let secrets: Vec<&str> =
        key.lines().filter(|l| l.len() >= 40).chain([&account_key[..40]]).collect();
    assert!(!secrets.is_empty());
    let mut logs = vec![s.cluster.path("up.log")];
    logs.extend(log_files(&s.cluster.data_dir().join("lb")));
    let answers = [
        s.cluster.cli_ok(&["certificates"]),
        s.cluster.json(&["certificates"]).to_string(),
        s.cluster.json(&["status"]).to_string(),
    ];
    for text in logs.iter().map(|p| std::fs::read_to_string(p).unwrap_or_default()).chain(answers) {
        for secret in &secrets {
            assert!(!text.contains(secret), "a key appears in: {text}");
        }
    }
    let table = s.cluster.cli_ok(&["certificates"]);
    assert!(table.contains(&s.host) && table.contains("valid"), "{table}");
}

fn log_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| Some(e.ok()?.path())).filter(|p| p.is_file()).collect())
        .unwrap_or_default()
}
