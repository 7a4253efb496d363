//! cutover.yaml's `connections:` on a load balancer, end to end: `apply` hands the limits to the
//! running data plane, which refuses a client over its per-address cap at once and answers a head
//! that trickles past the header timeout with 408.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::harness::*;

/// A keep-alive connection to production that has been answered `200` once (its whole
/// `Content-Length` body read), or `None` if it was closed unanswered.
fn answered_connection(cluster: &Cluster) -> Option<TcpStream> {
    let mut s = TcpStream::connect(cluster.prod).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n").ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            assert!(head.starts_with("HTTP/1.1 200 "), "{text:?}");
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase().strip_prefix("content-length:")?.trim().parse().ok()
                })
                .expect("a Content-Length");
            if body.len() >= length {
                return Some(s);
            }
        }
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn a_load_balancers_connection_limits_apply_to_its_listeners() {
    let cluster = Cluster::start(Options::default());
    cluster.apply_and_wait_for_v1();
    let yaml = std::fs::read_to_string(cluster.path("cutover.yaml")).unwrap();
    let limited = yaml.replacen(
        "  - name: web\n    listeners:\n",
        "  - name: web\n    connections: { max_per_client: 2, header_timeout: 500ms }\n    listeners:\n",
        1,
    );
    assert_ne!(limited, yaml);
    std::fs::write(cluster.path("cutover.yaml"), limited).unwrap();
    cluster.cli_ok(&["apply", "-f", "cutover.yaml"]);

    // A head still incomplete after 500 ms is answered 408 and closed.
    let mut slow = TcpStream::connect(cluster.prod).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: web\r\n").unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let _ = slow.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer:?}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(3),
        "answered after {waited:?}"
    );

    // Two connections from 127.0.0.1 are served (once the closed ones are gone); the third is
    // closed unanswered, at once.
    let _first =
        wait_for("a first connection", Duration::from_secs(10), || answered_connection(&cluster));
    let _second =
        wait_for("a second connection", Duration::from_secs(10), || answered_connection(&cluster));
    let started = Instant::now();
    assert!(answered_connection(&cluster).is_none(), "a third connection was served");
    assert!(started.elapsed() < Duration::from_secs(2), "closed after {:?}", started.elapsed());
}
