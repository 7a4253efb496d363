//! Helpers shared by the runtime's integration tests: building the demo app, image
//! directories, a raw HTTP client, and condition polling with deadlines.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Builds `cutover-demo-app` (once per test binary) and returns its path. With
/// `static_glibc`, a release build linked statically for `FROM scratch` images.
pub fn demo_app(static_glibc: bool) -> PathBuf {
    static DYNAMIC: OnceLock<PathBuf> = OnceLock::new();
    static STATIC: OnceLock<PathBuf> = OnceLock::new();
    let cell = if static_glibc { &STATIC } else { &DYNAMIC };
    cell.get_or_init(|| build_demo_app(static_glibc)).clone()
}

fn build_demo_app(static_glibc: bool) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // The workspace manifest, two directories up (taken lexically, not through `..`).
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the crate lives in <workspace>/crates/runtime")
        .join("Cargo.toml");
    // A target directory of its own, so this build never waits for the one running the tests.
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(if static_glibc {
        "demo-app-static"
    } else {
        "demo-app"
    });
    let mut cmd = std::process::Command::new(cargo);
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(&manifest)
        .args(["-p", "demo-app", "--message-format=json", "--quiet"])
        .arg("--target-dir")
        .arg(&target_dir);
    if static_glibc {
        cmd.args(["--release", "--target", "x86_64-unknown-linux-gnu"])
            .env("RUSTFLAGS", "-C target-feature=+crt-static");
    } else {
        cmd.env_remove("RUSTFLAGS");
    }
    let out = cmd.output().expect("run cargo build -p demo-app");
    assert!(
        out.status.success(),
        "cargo build -p demo-app failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["reason"] == "compiler-artifact" && v["target"]["name"] == "cutover-demo-app")
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .expect("cargo reported no cutover-demo-app executable")
}

/// An image directory under `parent` holding the demo app (as a symlink) and optional
/// scripts `(name, body)`, made executable.
pub fn image_dir(parent: &Path, scripts: &[(&str, &str)]) -> PathBuf {
    let dir = parent.join("image");
    std::fs::create_dir_all(&dir).expect("create image dir");
    std::os::unix::fs::symlink(demo_app(false), dir.join("cutover-demo-app"))
        .expect("link demo app");
    for (name, body) in scripts {
        let p = dir.join(name);
        std::fs::write(&p, body).expect("write script");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    dir
}

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// One GET with `Connection: close`.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<HttpResponse> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    s.take(1 << 20).read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no HTTP response: {text:?}")))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line: {head:?}")))?;
    Ok(HttpResponse { status, head: head.to_string(), body: body.to_string() })
}

/// Polls `check` every 50 ms until it returns `Some`, panicking with `what` after `limit`.
pub async fn eventually<T>(
    limit: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether a process exists and is not a zombie.
pub fn pid_running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(s) => {
            let state = s[s.rfind(')').map_or(0, |i| i + 1)..].split_whitespace().next();
            !matches!(state, Some("Z" | "X"))
        }
    }
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A tar archive (ustar) holding regular files `(path, mode, contents)`, for `docker import`.
pub fn tar(files: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (path, mode, data) in files {
        let mut h = [0u8; 512];
        h[..path.len()].copy_from_slice(path.as_bytes());
        let octal = |field: &mut [u8], v: u64| {
            let s = format!("{:0width$o}\0", v, width = field.len() - 1);
            field.copy_from_slice(s.as_bytes());
        };
        octal(&mut h[100..108], u64::from(*mode));
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(&mut h[124..136], data.len() as u64);
        octal(&mut h[136..148], 0);
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}
