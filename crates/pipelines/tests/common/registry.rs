//! A real registry for the tests: Debian's `docker-registry` (the CNCF distribution registry) on
//! a loopback port, serving from a temporary directory; images are pushed through its HTTP API.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// A registry serving from a temporary directory, killed when dropped.
pub struct Registry {
    pub addr: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let addr = format!("127.0.0.1:{}", testkit::free_port());
        let config = dir.path().join("config.yml");
        let storage = dir.path().join("storage");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{ level: warn }}\nstorage:\n  filesystem: {{ rootdirectory: {} }}\nhttp:\n  addr: {addr}\n",
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
        let registry = Registry { addr, child, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        let http = reqwest::blocking::Client::new();
        loop {
            let answer = http.get(format!("http://{}/v2/", registry.addr)).send();
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
        let http = reqwest::blocking::Client::new();
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"Labels":{{"build":"{label}"}}}},"rootfs":{{"type":"layers","diff_ids":[]}}}}"#
        );
        let config_digest = format!("sha256:{}", hex::encode(Sha256::digest(config.as_bytes())));
        let upload = http
            .post(format!("http://{}/v2/{repository}/blobs/uploads/", self.addr))
            .send()
            .unwrap();
        assert_eq!(upload.status(), 202, "{upload:?}");
        let location = upload.headers()["location"].to_str().unwrap().to_string();
        let location = if location.starts_with("http") {
            location
        } else {
            format!("http://{}{location}", self.addr)
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
            .put(format!("http://{}/v2/{repository}/manifests/{tag}", self.addr))
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
        let http = reqwest::blocking::Client::new();
        let answer = http
            .get(format!("http://{}/v2/{repository}/manifests/{digest}", self.addr))
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
