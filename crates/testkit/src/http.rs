//! A plain HTTP/1.1 client over std sockets, for tests and benchmarks that watch which version of
//! a service a listener serves. The demo app names its version in an `X-Version` header.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// One GET on a fresh connection: the status and the `X-Version` header (empty when absent).
pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    get_with(addr, path, &[])
}

/// [`get`] with more request headers.
pub fn get_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    read_response(&mut BufReader::new(stream))
}

/// Reads one response with a `Content-Length` body (what the demo app and the load balancer's
/// own answers send), leaving the connection at the next response.
fn read_response(reader: &mut impl BufRead) -> std::io::Result<(u16, String)> {
    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid(format!("bad status line {line:?}")))?;
    let (mut version, mut length) = (String::new(), 0usize);
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        if let Some((name, value)) = trimmed.split_once(':') {
            match name.to_ascii_lowercase().as_str() {
                "x-version" => version = value.trim().to_string(),
                "content-length" => {
                    length = value
                        .trim()
                        .parse()
                        .map_err(|_| invalid(format!("bad Content-Length {value:?}")))?
                }
                _ => {}
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok((status, version))
}

/// One request the load client made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// When the request was sent, from the start of the load.
    pub at: Duration,
    /// The answer's status; 0 when there was no answer.
    pub status: u16,
    /// The answer's `X-Version` header.
    pub version: String,
    /// Why there was no answer.
    pub error: Option<String>,
}

/// Clients that call one address as fast as they can on keep-alive connections, recording every
/// answer, until [`Load::finish`].
pub struct Load {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    pub fn start(addr: SocketAddr, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let started = Instant::now();
        let threads = (0..clients)
            .map(|_| {
                let (stop, samples) = (stop.clone(), samples.clone());
                std::thread::spawn(move || client(addr, started, &stop, &samples))
            })
            .collect();
        Load { stop, samples, threads }
    }

    /// What was recorded so far, in the order the requests ended.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Stops the clients and returns every sample.
    pub fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().expect("a load client panicked");
        }
        std::mem::take(&mut *self.samples.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

fn client(addr: SocketAddr, started: Instant, stop: &AtomicBool, samples: &Mutex<Vec<Sample>>) {
    let mut conn: Option<BufReader<TcpStream>> = None;
    while !stop.load(Ordering::Relaxed) {
        let at = started.elapsed();
        let reused = conn.is_some();
        let result = (|| -> std::io::Result<(u16, String)> {
            let reader = match &mut conn {
                Some(reader) => reader,
                None => {
                    let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
                    stream.set_read_timeout(Some(READ_TIMEOUT))?;
                    stream.set_nodelay(true)?;
                    conn.insert(BufReader::new(stream))
                }
            };
            reader.get_mut().write_all(b"GET / HTTP/1.1\r\nHost: load\r\n\r\n")?;
            read_response(reader)
        })();
        let sample = match result {
            Ok((status, version)) => Sample { at, status, version, error: None },
            Err(err) => {
                conn = None;
                // A keep-alive connection the server closed between requests is not a failed
                // request (HTTP lets a server close an idle connection): retry on a fresh one.
                let closed_while_idle = matches!(
                    err.kind(),
                    std::io::ErrorKind::UnexpectedEof
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::BrokenPipe
                );
                if reused && closed_while_idle {
                    continue;
                }
                Sample { at, status: 0, version: String::new(), error: Some(err.to_string()) }
            }
        };
        samples.lock().unwrap_or_else(|p| p.into_inner()).push(sample);
    }
}

/// The requests that did not get a 200.
pub fn failures(samples: &[Sample]) -> Vec<&Sample> {
    samples.iter().filter(|s| s.status != 200).collect()
}
