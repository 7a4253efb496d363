//! `cutover-demo-app`: a tiny HTTP/1.1 service for the quickstart and the tests.
//!
//! It depends on std and `libc` only, so it links statically
//! (`RUSTFLAGS="-C target-feature=+crt-static"`) and runs in a `FROM scratch` image.
//!
//! ```text
//! cutover-demo-app               serve on $HOST:$PORT (default 0.0.0.0:8080)
//! cutover-demo-app probe [PATH]  GET PATH (default /health) on $HOST:$PORT; exit 0 on 2xx
//!                                (a health-check command for images without curl)
//! ```
//!
//! Endpoints (every response carries `X-Version: $APP_VERSION`):
//!
//! - `/` (any method): 200 `{"version":"$APP_VERSION","task":"$CUTOVER_TASK_ID"}`; with
//!   `$ERROR_RATE` (0.0–1.0) that fraction of these requests, evenly spread, answers 500 and
//!   logs a line containing `Error`; with `$LATENCY_MS`, every one of them answers that many
//!   milliseconds later (a version that got slower, still answering 200).
//! - `GET /health`: 200 `ok`; 503 when `$FAIL_HEALTH` is set (non-empty) or when the file named
//!   by `$HEALTH_FILE` exists (so a test can flip health while it runs).
//! - `GET /slow?ms=N`: answers after N milliseconds (at most 10 minutes).
//! - `/echo` (any method): answers the request body.
//! - `/fail` (any method): 500, and logs a line containing `Error`.
//!
//! Other behaviour: keep-alive, one thread per connection, one log line per request on stdout
//! (`shadow` in it for a copy of shadow traffic, which carries `X-Cutover-Shadow`);
//! `$EXIT_AFTER_MS` makes it exit with code 1 after that long (crash tests); SIGTERM or SIGINT
//! stops accepting, lets in-flight requests finish (at most 25 s), and exits 0, unless
//! `$IGNORE_SIGTERM` is set (stop-timeout tests: only SIGKILL ends it then).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

static SHUTDOWN: AtomicBool = AtomicBool::new(false);
static ACTIVE: AtomicUsize = AtomicUsize::new(0);
static ROOT_REQUESTS: AtomicU64 = AtomicU64::new(0);

const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 1024 * 1024;
const READ_TICK: Duration = Duration::from_millis(100);
const IDLE_LIMIT: Duration = Duration::from_secs(120);
const PARTIAL_LIMIT: Duration = Duration::from_secs(30);
const DRAIN_LIMIT: Duration = Duration::from_secs(25);
const MAX_SLOW_MS: u64 = 600_000;

struct Config {
    version: String,
    task: String,
    fail_health: bool,
    health_file: Option<PathBuf>,
    error_rate: f64,
    /// Added to every `/` answer (`$LATENCY_MS`).
    latency: Duration,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None => serve(),
        Some("probe") => std::process::exit(probe(args.get(1).map_or("/health", String::as_str))),
        Some("-h" | "--help" | "help") => {
            println!("usage: cutover-demo-app [probe [PATH|http://HOST:PORT/PATH]]");
        }
        Some(other) => {
            eprintln!("cutover-demo-app: unknown argument `{other}`; run with --help");
            std::process::exit(2);
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn serve() -> ! {
    // Before any thread starts, so every thread inherits the blocked mask and only the signal
    // thread receives SIGTERM.
    let signals = signals::block_termination();
    let host = env("HOST").unwrap_or_else(|| "0.0.0.0".into());
    let port: u16 = match env("PORT").map(|p| p.parse()) {
        None => 8080,
        Some(Ok(p)) => p,
        Some(Err(_)) => fail(2, "PORT must be a number from 0 to 65535"),
    };
    let error_rate = match env("ERROR_RATE").map(|r| r.parse::<f64>()) {
        None => 0.0,
        Some(Ok(r)) if (0.0..=1.0).contains(&r) => r,
        Some(_) => fail(2, "ERROR_RATE must be a number from 0.0 to 1.0"),
    };
    let latency = match env("LATENCY_MS").map(|ms| ms.parse::<u64>()) {
        None => Duration::ZERO,
        Some(Ok(ms)) if ms <= MAX_SLOW_MS => Duration::from_millis(ms),
        Some(_) => fail(2, "LATENCY_MS must be a number of milliseconds, at most 600000"),
    };
    let config = Arc::new(Config {
        version: env("APP_VERSION").unwrap_or_else(|| "dev".into()),
        task: env("CUTOVER_TASK_ID").unwrap_or_default(),
        fail_health: env("FAIL_HEALTH").is_some(),
        health_file: env("HEALTH_FILE").map(PathBuf::from),
        error_rate,
        latency,
    });
    let listener = match TcpListener::bind((host.as_str(), port)) {
        Ok(l) => l,
        Err(e) => fail(1, &format!("cannot listen on {host}:{port}: {e}")),
    };
    let local = listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], port)));
    log(&format!("cutover-demo-app version {} listening on {local}", config.version));

    if let Some(ms) = env("EXIT_AFTER_MS") {
        let Ok(ms) = ms.parse::<u64>() else {
            fail(2, "EXIT_AFTER_MS must be a number of milliseconds")
        };
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(ms));
            log(&format!("exiting with code 1 after {ms} ms (EXIT_AFTER_MS)"));
            std::process::exit(1);
        });
    }

    let ignore_sigterm = env("IGNORE_SIGTERM").is_some();
    std::thread::spawn(move || {
        let sig = loop {
            let sig = signals::wait(&signals);
            if !ignore_sigterm {
                break sig;
            }
            log(&format!("ignoring signal {sig} (IGNORE_SIGTERM)"));
        };
        log(&format!("received signal {sig}; finishing in-flight requests"));
        SHUTDOWN.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&wake_addr(local), Duration::from_secs(1));
    });

    for stream in listener.incoming() {
        if SHUTDOWN.load(Ordering::SeqCst) {
            break;
        }
        match stream {
            Ok(stream) => {
                ACTIVE.fetch_add(1, Ordering::SeqCst);
                let config = Arc::clone(&config);
                let spawned = std::thread::Builder::new().spawn(move || {
                    let _guard = Active;
                    serve_connection(stream, &config);
                });
                if spawned.is_err() {
                    ACTIVE.fetch_sub(1, Ordering::SeqCst);
                }
            }
            // Out of file descriptors or similar: do not spin.
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    drop(listener);
    let deadline = Instant::now() + DRAIN_LIMIT;
    while ACTIVE.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    log("stopped");
    std::process::exit(0);
}

fn fail(code: i32, msg: &str) -> ! {
    eprintln!("cutover-demo-app: {msg}");
    std::process::exit(code);
}

/// Where to connect to reach a listener bound to `local` (an unspecified address is local).
fn wake_addr(local: SocketAddr) -> SocketAddr {
    let mut a = local;
    if a.ip().is_unspecified() {
        a.set_ip(if a.is_ipv4() {
            [127, 0, 0, 1].into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    a
}

struct Active;

impl Drop for Active {
    fn drop(&mut self) {
        ACTIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A connection with its read buffer.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

struct Request {
    method: String,
    target: String,
    keep_alive: bool,
    body: Vec<u8>,
    /// A copy sent by the load balancer's shadow traffic (`X-Cutover-Shadow`), not a client's.
    shadow: bool,
}

enum ReadError {
    /// The peer closed, or the connection idled out, between requests.
    Closed,
    /// A broken request: answer this status and close.
    Bad(u16, &'static str),
    Io,
}

impl Conn {
    fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Reads more bytes, waiting in short ticks so a shutdown is noticed between requests.
    fn fill(&mut self, between_requests: bool) -> Result<(), ReadError> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            let grown = (self.buf.len() * 2).min(MAX_HEAD + MAX_BODY + 16);
            if grown == self.buf.len() {
                return Err(ReadError::Bad(413, "request too large"));
            }
            self.buf.resize(grown, 0);
        }
        let waited = Instant::now();
        loop {
            match self.stream.read(&mut self.buf[self.end..]) {
                Ok(0) if between_requests && self.end == 0 => return Err(ReadError::Closed),
                Ok(0) => return Err(ReadError::Io),
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e)
                    if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) =>
                {
                    let idle = between_requests && self.end == 0;
                    if idle && SHUTDOWN.load(Ordering::SeqCst) {
                        return Err(ReadError::Closed);
                    }
                    let limit = if idle { IDLE_LIMIT } else { PARTIAL_LIMIT };
                    if waited.elapsed() > limit {
                        return Err(if idle { ReadError::Closed } else { ReadError::Io });
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(ReadError::Io),
            }
        }
    }

    fn read_request(&mut self) -> Result<Request, ReadError> {
        let head_len = loop {
            if let Some(pos) = find(self.buffered(), b"\r\n\r\n") {
                break pos + 4;
            }
            if self.buffered().len() > MAX_HEAD {
                return Err(ReadError::Bad(431, "request head too large"));
            }
            let first = self.buffered().is_empty();
            self.fill(first)?;
        };
        let head = String::from_utf8_lossy(&self.buffered()[..head_len]).into_owned();
        self.start += head_len;
        let mut lines = head.split("\r\n");
        let mut parts = lines.next().unwrap_or("").split(' ');
        let (Some(method), Some(target), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(ReadError::Bad(400, "malformed request line"));
        };
        if !version.starts_with("HTTP/1.") || method.is_empty() || !target.starts_with('/') {
            return Err(ReadError::Bad(400, "malformed request line"));
        }
        let mut keep_alive = version == "HTTP/1.1";
        let mut content_length: Option<usize> = None;
        let mut chunked = false;
        let mut shadow = false;
        for line in lines.filter(|l| !l.is_empty()) {
            let Some((name, value)) = line.split_once(':') else {
                return Err(ReadError::Bad(400, "malformed header"));
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                match value.parse() {
                    Ok(n) if n <= MAX_BODY => content_length = Some(n),
                    Ok(_) => return Err(ReadError::Bad(413, "request body too large")),
                    Err(_) => return Err(ReadError::Bad(400, "bad Content-Length")),
                }
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
                if !chunked {
                    return Err(ReadError::Bad(501, "unsupported Transfer-Encoding"));
                }
            } else if name.eq_ignore_ascii_case("x-cutover-shadow") {
                shadow = true;
            } else if name.eq_ignore_ascii_case("connection") {
                let v = value.to_ascii_lowercase();
                if v.contains("close") {
                    keep_alive = false;
                } else if v.contains("keep-alive") {
                    keep_alive = true;
                }
            }
        }
        let body = if chunked {
            self.read_chunked()?
        } else {
            self.read_exact_body(content_length.unwrap_or(0))?
        };
        Ok(Request {
            method: method.to_string(),
            target: target.to_string(),
            keep_alive,
            body,
            shadow,
        })
    }

    fn read_exact_body(&mut self, len: usize) -> Result<Vec<u8>, ReadError> {
        while self.buffered().len() < len {
            self.fill(false)?;
        }
        let body = self.buffered()[..len].to_vec();
        self.start += len;
        Ok(body)
    }

    fn read_line(&mut self) -> Result<String, ReadError> {
        loop {
            if let Some(pos) = find(self.buffered(), b"\r\n") {
                let line = String::from_utf8_lossy(&self.buffered()[..pos]).into_owned();
                self.start += pos + 2;
                return Ok(line);
            }
            if self.buffered().len() > 4096 {
                return Err(ReadError::Bad(400, "malformed chunk"));
            }
            self.fill(false)?;
        }
    }

    fn read_chunked(&mut self) -> Result<Vec<u8>, ReadError> {
        let mut body = Vec::new();
        loop {
            let line = self.read_line()?;
            let size_text = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| ReadError::Bad(400, "malformed chunk size"))?;
            if size == 0 {
                // Trailers, up to the empty line.
                while !self.read_line()?.is_empty() {}
                return Ok(body);
            }
            if body.len() + size > MAX_BODY {
                return Err(ReadError::Bad(413, "request body too large"));
            }
            body.extend(self.read_exact_body(size)?);
            if !self.read_line()?.is_empty() {
                return Err(ReadError::Bad(400, "malformed chunk"));
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

struct Response {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    note: Option<&'static str>,
}

impl Response {
    fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.as_bytes().to_vec(),
            note: None,
        }
    }
}

fn serve_connection(stream: TcpStream, config: &Config) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(READ_TICK));
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "-".into());
    let mut conn = Conn { stream, buf: vec![0; 8192], start: 0, end: 0 };
    loop {
        let mut started = Instant::now();
        let (req, resp) = match conn.read_request() {
            Ok(req) => {
                started = Instant::now();
                let resp = route(&req, config);
                (Some(req), resp)
            }
            Err(ReadError::Bad(status, why)) => (None, Response::text(status, why)),
            Err(ReadError::Closed | ReadError::Io) => break,
        };
        let keep_alive =
            req.as_ref().is_some_and(|r| r.keep_alive) && !SHUTDOWN.load(Ordering::SeqCst);
        let head_only = req.as_ref().is_some_and(|r| r.method == "HEAD");
        let written = write_response(&mut conn.stream, &resp, keep_alive, head_only, config);
        let (method, target) =
            req.as_ref().map_or(("-", "-"), |r| (r.method.as_str(), r.target.as_str()));
        let shadow = if req.as_ref().is_some_and(|r| r.shadow) { " shadow" } else { "" };
        log(&format!(
            "{peer} \"{method} {target}\" {} {} {}us{shadow}{}",
            resp.status,
            resp.body.len(),
            started.elapsed().as_micros(),
            resp.note.map(|n| format!(" {n}")).unwrap_or_default()
        ));
        if written.is_err() || !keep_alive {
            break;
        }
    }
    let _ = conn.stream.shutdown(Shutdown::Both);
}

fn route(req: &Request, config: &Config) -> Response {
    let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
    match path {
        "/" => {
            if !config.latency.is_zero() {
                std::thread::sleep(config.latency);
            }
            let n = ROOT_REQUESTS.fetch_add(1, Ordering::Relaxed);
            // Request n fails when the running count of failures steps up: exactly the given
            // fraction, evenly spread, and reproducible.
            let rate = config.error_rate;
            let failing = ((n + 1) as f64 * rate).floor() > (n as f64 * rate).floor();
            if failing {
                Response {
                    status: 500,
                    content_type: "application/json",
                    body: format!(
                        "{{\"error\":\"injected failure\",\"version\":{}}}",
                        json_string(&config.version)
                    )
                    .into_bytes(),
                    note: Some("Error: injected failure (ERROR_RATE)"),
                }
            } else {
                Response {
                    status: 200,
                    content_type: "application/json",
                    body: format!(
                        "{{\"version\":{},\"task\":{}}}",
                        json_string(&config.version),
                        json_string(&config.task)
                    )
                    .into_bytes(),
                    note: None,
                }
            }
        }
        // A failure on demand: lets a test (or an operator) make one version misbehave at a
        // chosen moment, e.g. through the test listener while the deployment bakes.
        "/fail" => Response {
            status: 500,
            content_type: "application/json",
            body: format!(
                "{{\"error\":\"failure on request\",\"version\":{}}}",
                json_string(&config.version)
            )
            .into_bytes(),
            note: Some("Error: failure on request (/fail)"),
        },
        "/health" if req.method == "GET" || req.method == "HEAD" => {
            let flipped = config.health_file.as_ref().is_some_and(|f| f.exists());
            if config.fail_health || flipped {
                Response::text(503, "unhealthy")
            } else {
                Response::text(200, "ok")
            }
        }
        "/slow" if req.method == "GET" || req.method == "HEAD" => {
            let ms = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("ms="))
                .and_then(|v| v.parse::<u64>().ok());
            match ms {
                Some(ms) if ms <= MAX_SLOW_MS => {
                    std::thread::sleep(Duration::from_millis(ms));
                    Response {
                        status: 200,
                        content_type: "application/json",
                        body: format!("{{\"slept_ms\":{ms}}}").into_bytes(),
                        note: None,
                    }
                }
                _ => Response::text(400, "use /slow?ms=N with N at most 600000"),
            }
        }
        "/echo" => Response {
            status: 200,
            content_type: "application/octet-stream",
            body: req.body.clone(),
            note: None,
        },
        "/health" | "/slow" => Response::text(405, "method not allowed"),
        _ => Response::text(404, "not found"),
    }
}

fn write_response(
    stream: &mut TcpStream,
    resp: &Response,
    keep_alive: bool,
    head_only: bool,
    config: &Config,
) -> io::Result<()> {
    let reason = match resp.status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    };
    let mut out = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nX-Version: {}\r\nConnection: {}\r\n\r\n",
        resp.status,
        resp.content_type,
        resp.body.len(),
        header_value(&config.version),
        if keep_alive { "keep-alive" } else { "close" },
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(&resp.body);
    }
    stream.write_all(&out)
}

/// A header value cannot hold control characters; drop them rather than break the response.
fn header_value(v: &str) -> String {
    v.chars().filter(|c| !c.is_control()).collect()
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn log(msg: &str) {
    let line = format!("{} {msg}\n", timestamp());
    let _ = io::stdout().lock().write_all(line.as_bytes());
}

/// Now as RFC 3339 UTC with milliseconds, e.g. `2026-01-02T03:04:05.678Z`.
#[allow(clippy::disallowed_methods)] // A stand-alone demo program: it has no store::clock.
fn timestamp() -> String {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// `probe [PATH|http://HOST:PORT/PATH]`: exit status 0 when the GET answers 2xx, else 1.
fn probe(arg: &str) -> i32 {
    let (authority, path) = match arg.strip_prefix("http://") {
        Some(rest) => match rest.find('/') {
            Some(i) => (rest[..i].to_string(), rest[i..].to_string()),
            None => (rest.to_string(), "/".to_string()),
        },
        None => {
            let host = match env("HOST").as_deref() {
                None | Some("0.0.0.0") => "127.0.0.1".to_string(),
                Some("::") | Some("[::]") => "[::1]".to_string(),
                Some(h) if h.contains(':') && !h.starts_with('[') => format!("[{h}]"),
                Some(h) => h.to_string(),
            };
            let port = env("PORT").unwrap_or_else(|| "8080".into());
            (format!("{host}:{port}"), arg.to_string())
        }
    };
    match probe_once(&authority, &path) {
        Ok(status) => {
            println!("{authority}{path}: {status}");
            i32::from(!(200..300).contains(&status))
        }
        Err(e) => {
            println!("{authority}{path}: {e}");
            1
        }
    }
}

fn probe_once(authority: &str, path: &str) -> io::Result<u16> {
    let addr = authority.to_socket_addrs()?.next().ok_or_else(|| io::Error::other("no address"))?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n")?;
    let mut head = [0u8; 64];
    let mut got = 0;
    while got < 12 {
        let n = s.read(&mut head[got..])?;
        if n == 0 {
            break;
        }
        got += n;
    }
    let line = String::from_utf8_lossy(&head[..got]);
    line.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::other(format!("not an HTTP response: {line:?}")))
}

/// SIGTERM and SIGINT are blocked in every thread and received synchronously by one thread
/// with `sigwait`, which needs no async-signal-safe handler.
#[allow(unsafe_code)]
mod signals {
    pub struct Set(libc::sigset_t);

    /// Blocks SIGTERM and SIGINT in the calling thread (and the threads it starts later).
    pub fn block_termination() -> Set {
        // SAFETY: `set` is plain data initialised by sigemptyset before use; the calls only
        // read or write that set and this thread's signal mask.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            Set(set)
        }
    }

    /// Waits for one of the blocked signals and returns its number.
    pub fn wait(set: &Set) -> i32 {
        let mut sig: libc::c_int = 0;
        loop {
            // SAFETY: `set.0` is an initialised sigset_t and `sig` a valid out-pointer.
            let rc = unsafe { libc::sigwait(&set.0, &mut sig) };
            if rc == 0 {
                return sig;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_rate_schedule_hits_the_exact_fraction() {
        let rate: f64 = 0.25;
        let failing = (0u64..100)
            .filter(|&n| ((n + 1) as f64 * rate).floor() > (n as f64 * rate).floor())
            .count();
        assert_eq!(failing, 25);
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");
    }

    #[test]
    fn timestamp_is_rfc3339() {
        let t = timestamp();
        assert_eq!(t.len(), 24, "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T', "{t}");
    }
}
