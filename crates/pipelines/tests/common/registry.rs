//! A real registry for the tests: Debian's `docker-registry` (the CNCF distribution registry) on
//! a loopback port, serving from a temporary directory, over plain HTTP or over TLS with a
//! certificate of a CA made for it (`openssl`); images are pushed through its HTTP API.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// A registry serving from a temporary directory, killed when dropped.
pub struct Registry {
    pub addr: String,
    /// `http://ADDR` or `https://ADDR`.
    base: String,
    /// Trusts the registry's CA when it serves TLS.
    http: reqwest::blocking::Client,
    /// The CA's certificate (PEM) when it serves TLS.
    pub ca_pem: Option<Vec<u8>>,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// A registry over plain HTTP.
    pub fn start() -> Registry {
        Registry::start_with(false)
    }

    /// A registry over TLS, its certificate for 127.0.0.1 signed by a CA of its own.
    pub fn start_tls() -> Registry {
        Registry::start_with(true)
    }

    fn start_with(tls: bool) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let addr = format!("127.0.0.1:{}", testkit::free_port());
        let config = dir.path().join("config.yml");
        let storage = dir.path().join("storage");
        let mut http_section = format!("http:\n  addr: {addr}\n");
        let mut http = reqwest::blocking::Client::builder();
        let mut ca_pem = None;
        if tls {
            let (cert, key, ca) = certificate_for_loopback(dir.path());
            http_section.push_str(&format!(
                "  tls: {{ certificate: {}, key: {} }}\n",
                cert.display(),
                key.display()
            ));
            let pem = std::fs::read(ca).unwrap();
            http = http.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
            ca_pem = Some(pem);
        }
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{ level: warn }}\nstorage:\n  filesystem: {{ rootdirectory: {} }}\n{http_section}",
                storage.display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry runs (apt-get install docker-registry)");
        let scheme = if tls { "https" } else { "http" };
        let base = format!("{scheme}://{addr}");
        let http = http.build().unwrap();
        let registry = Registry { addr, base, http, ca_pem, child, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let answer = registry.http.get(format!("{}/v2/", registry.base)).send();
            match answer {
                Ok(answer) if answer.status().is_success() => return registry,
                _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                last => panic!("the registry on {} never answered /v2/: {last:?}", registry.addr),
            }
        }
    }

    /// Pushes an image of no layers whose config says `label`, as `repository:tag`, and returns
    /// the manifest's digest as the registry named it.
    pub fn push(&self, repository: &str, tag: &str, label: &str) -> String {
        let http = &self.http;
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"Labels":{{"build":"{label}"}}}},"rootfs":{{"type":"layers","diff_ids":[]}}}}"#
        );
        let config_digest = format!("sha256:{}", hex::encode(Sha256::digest(config.as_bytes())));
        let upload =
            http.post(format!("{}/v2/{repository}/blobs/uploads/", self.base)).send().unwrap();
        assert_eq!(upload.status(), 202, "{upload:?}");
        let location = upload.headers()["location"].to_str().unwrap().to_string();
        let location = if location.starts_with("http") {
            location
        } else {
            format!("{}{location}", self.base)
        };
        let separator = if location.contains('?') { '&' } else { '?' };
        let put = http
            .put(format!("{location}{separator}digest={config_digest}"))
            .header("content-type", "application/octet-stream")
            .body(config.clone())
            .send()
            .unwrap();
        assert_eq!(put.status(), 201, "{put:?}");
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[]}}"#,
            config.len()
        );
        let put = http
            .put(format!("{}/v2/{repository}/manifests/{tag}", self.base))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(manifest.clone())
            .send()
            .unwrap();
        assert_eq!(put.status(), 201, "{:?}", put.text());
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(manifest.as_bytes())));
        assert_eq!(put.headers()["docker-content-digest"].to_str().unwrap(), digest);
        digest
    }

    /// Whether the registry still serves the manifest with `digest`.
    pub fn has_manifest(&self, repository: &str, digest: &str) -> bool {
        let answer = self
            .http
            .get(format!("{}/v2/{repository}/manifests/{digest}", self.base))
            .header("accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .unwrap();
        answer.status().is_success()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA and a certificate for IP 127.0.0.1 it signed, made with `openssl` in `dir`: (certificate,
/// key, CA certificate).
fn certificate_for_loopback(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let path = |name: &str| dir.join(name);
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test registry CA",
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "key.pem",
        "-out",
        "req.pem",
    ]);
    std::fs::write(path("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "req.pem",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca-key.pem",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "cert.pem",
    ]);
    (path("cert.pem"), path("key.pem"), path("ca.pem"))
}
