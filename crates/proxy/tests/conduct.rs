//! What the load balancer does to requests on the way through: malformed and smuggling-shaped
//! requests refused before any target sees them, forwarded headers, hop-by-hop headers, invalid
//! header names, header size limits, and well-formed 502/504 answers for target failures.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use routes::*;

async fn setup() -> (Lb, Backend, std::net::SocketAddr) {
    let b = Backend::start("b").await;
    let (lb, port) = lb_in_front_of(b.addr).await;
    (lb, b, port)
}

/// A load balancer with one listener forwarding to `target`, unchecked; the listener's address.
async fn lb_in_front_of(target: std::net::SocketAddr) -> (Lb, std::net::SocketAddr) {
    let lb = Lb::start(None).await;
    let port = free_addr();
    let check = HealthCheck { enabled: false, ..hc(1000) };
    lb.apply(&table(
        1,
        vec![("web", listener(port, forward(&[("g", 1)])))],
        vec![("g", group(&[target], check, 0))],
    ))
    .await;
    (lb, port)
}

fn status_line(response: &str) -> &str {
    response.lines().next().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_request_gets_400_and_never_reaches_a_target() {
    let (lb, b, port) = setup().await;
    for raw in [
        &b"GET / HTTP/1.1\r\nHost: a\r\nNo colon here\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n",
        b"GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5x\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nhello",
    ] {
        let answer = raw_exchange(port, raw).await;
        assert!(
            status_line(&answer).starts_with("HTTP/1.1 400"),
            "{:?} got {answer:?}",
            String::from_utf8_lossy(raw)
        );
    }
    assert_eq!(b.hits.load(Ordering::SeqCst), 0, "no malformed request reached the target");
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_attempts_are_refused_and_never_reach_a_target() {
    let (lb, b, port) = setup().await;
    let attempts: [(&str, &[u8]); 8] = [
        ("CL.TE", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 13\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nSMUGGLED"),
        ("TE.CL", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n"),
        ("duplicate Content-Length", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"),
        ("conflicting Content-Length", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
        ("Content-Length list", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello"),
        ("TE.TE obfuscated", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-encoding: x\r\n\r\n0\r\n\r\n"),
        // Only `chunked` is framing the load balancer checks; another coding is not passed on.
        ("another coding", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
        ("chunked twice", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ];
    for (name, raw) in attempts {
        let answer = raw_exchange(port, raw).await;
        assert!(status_line(&answer).starts_with("HTTP/1.1 400"), "{name}: got {answer:?}");
        assert!(
            !answer.contains("HTTP/1.1 200"),
            "{name}: a smuggled request was answered: {answer:?}"
        );
    }
    // A clean request first, the smuggling one second on the same connection: the first is
    // served, the second refused, and nothing after it is read.
    let pipelined = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /after HTTP/1.1\r\nHost: a\r\n\r\n";
    let answer = raw_exchange(port, pipelined).await;
    assert_eq!(answer.matches("HTTP/1.1 200").count(), 1, "{answer:?}");
    assert_eq!(answer.matches("HTTP/1.1 400").count(), 1, "{answer:?}");
    assert_eq!(b.hits.load(Ordering::SeqCst), 1, "only the clean request reached the target");
    assert!(lb.metrics().await.listeners["web"].elb_4xx >= 1);
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_and_chunked_requests_pass_intact() {
    let (lb, b, port) = setup().await;
    let raw = b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\nPOST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let answer = raw_exchange(port, raw).await;
    assert_eq!(answer.matches("HTTP/1.1 200").count(), 3, "{answer}");
    assert!(answer.contains("body: hello world"), "{answer}");
    assert!(answer.contains("body: abc"), "{answer}");
    assert_eq!(b.hits.load(Ordering::SeqCst), 3);
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_are_set_and_hop_by_hop_and_invalid_headers_dropped() {
    let (lb, _b, port) = setup().await;
    let raw = "GET /echo HTTP/1.1\r\nHost: shop\r\nX-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: ftp\r\n\
Connection: keep-alive, X-Secret\r\nX-Secret: s\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n\
TE: trailers\r\nUpgrade: h2c\r\nX_Under: 1\r\nX-Fine: 1\r\n\r\n";
    let answer = raw_exchange(port, raw.as_bytes()).await;
    let body = answer.to_ascii_lowercase();
    assert!(body.contains("x-forwarded-for: 203.0.113.9, 127.0.0.1\n"), "{answer}");
    assert!(body.contains("x-forwarded-proto: http\n"), "{answer}");
    assert!(body.contains(&format!("x-forwarded-port: {}\n", port.port())), "{answer}");
    assert!(body.contains("host: shop\n"), "{answer}");
    assert!(body.contains("x-fine: 1\n"), "{answer}");
    for gone in ["x-secret", "keep-alive:", "proxy-connection", "\nte:", "upgrade", "x_under"] {
        assert!(
            !body.split("\r\n\r\n").nth(1).unwrap_or("").contains(gone),
            "`{gone}` reached the target: {answer}"
        );
    }
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_get_431() {
    let (lb, b, port) = setup().await;
    let raw = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n", "a".repeat(80 * 1024));
    let answer = raw_exchange(port, raw.as_bytes()).await;
    assert!(status_line(&answer).starts_with("HTTP/1.1 431"), "got {:?}", status_line(&answer));
    assert_eq!(b.hits.load(Ordering::SeqCst), 0);
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_failures_become_well_formed_502_and_504() {
    let lb = Lb::start(None).await;
    let b = Backend::start("slow").await;
    let dead = free_addr();
    let (refused, timeout) = (free_addr(), free_addr());
    let check = HealthCheck { enabled: false, ..hc(1000) };
    let mut slow_listener = listener(timeout, forward(&[("slow", 1)]));
    slow_listener.idle_timeout_ms = Some(300);
    lb.apply(&table(
        1,
        vec![("refused", listener(refused, forward(&[("dead", 1)]))), ("timeout", slow_listener)],
        vec![("dead", group(&[dead], check.clone(), 0)), ("slow", group(&[b.addr], check, 0))],
    ))
    .await;
    let (status, body) = get(&lb.http, &format!("http://{refused}/")).await;
    assert_eq!((status, body.as_str()), (502, "502 Bad Gateway\n"));
    let (status, _) = get(&lb.http, &format!("http://{timeout}/slow?ms=2000")).await;
    assert_eq!(status, 504);
    let (status, _) = get(&lb.http, &format!("http://{timeout}/slow?ms=10")).await;
    assert_eq!(status, 200, "the listener still serves after a 504");
    let m = lb.metrics().await;
    assert_eq!(m.target_groups["dead"].counters.elb_502, 1);
    assert_eq!(m.target_groups["dead"].counters.target_connection_errors, 1);
    assert_eq!(m.target_groups["slow"].counters.elb_504, 1);
    let text = get(&lb.http, &format!("http://{}/metrics", lb.admin)).await.1;
    assert!(
        text.contains("cutover_lb_elb_responses_total{target_group=\"dead\",code=\"502\"} 1"),
        "{text}"
    );
    assert!(text.contains("cutover_lb_routes_version 1"), "{text}");
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_client_connection_is_closed_after_the_idle_timeout() {
    let lb = Lb::start(None).await;
    let b = Backend::start("b").await;
    let port = free_addr();
    let mut l = listener(port, forward(&[("g", 1)]));
    l.idle_timeout_ms = Some(200);
    lb.apply(&table(
        1,
        vec![("web", l)],
        vec![("g", group(&[b.addr], HealthCheck { enabled: false, ..hc(1000) }, 0))],
    ))
    .await;
    let started = std::time::Instant::now();
    let answer = raw_exchange(port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(status_line(&answer).starts_with("HTTP/1.1 200"), "{answer}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(200) && waited < Duration::from_secs(2),
        "closed after {waited:?}"
    );
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_refuses_a_non_loopback_address() {
    let err = proxy::start(proxy::ProxyConfig {
        admin_addr: "0.0.0.0:0".parse().unwrap(),
        state_file: None,
        worker_threads: 1,
        admin_token: None,
    })
    .await
    .err()
    .expect("refused");
    assert!(err.to_string().contains("loopback"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_api_with_a_token_listens_beyond_loopback_and_answers_only_requests_carrying_it() {
    let token = "0123456789abcdef0123456789abcdef";
    let lb = proxy::start(proxy::ProxyConfig {
        admin_addr: "0.0.0.0:0".parse().unwrap(),
        state_file: None,
        worker_threads: 1,
        admin_token: Some(token.into()),
    })
    .await
    .expect("a token lets the admin API listen beyond loopback");
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], lb.admin_addr().port()));
    let answers = tokio::task::spawn_blocking(move || {
        let bearer = format!("Bearer {token}");
        let wrong = format!("Bearer {}", token.replace('0', "1"));
        [
            testkit::http::get(admin, "/v1/routes").unwrap(),
            testkit::http::get_with(admin, "/v1/routes", &[("authorization", &wrong)]).unwrap(),
            testkit::http::get_with(admin, "/v1/routes", &[("authorization", token)]).unwrap(),
            testkit::http::get_with(admin, "/v1/routes", &[("authorization", &bearer)]).unwrap(),
        ]
    })
    .await
    .unwrap();
    let statuses: Vec<u16> = answers.iter().map(|(status, _)| *status).collect();
    assert_eq!(statuses, [401, 401, 401, 200], "{answers:?}");
    lb.shutdown().await;

    let err = proxy::start(proxy::ProxyConfig {
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        state_file: None,
        worker_threads: 1,
        admin_token: Some("short".into()),
    })
    .await
    .err()
    .expect("a short token is refused");
    assert!(err.to_string().contains("shorter than 16 characters"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_sent_too_slowly_is_cut_off_at_the_idle_timeout() {
    let lb = Lb::start(None).await;
    let b = Backend::start("b").await;
    let port = free_addr();
    let mut l = listener(port, forward(&[("g", 1)]));
    l.idle_timeout_ms = Some(300);
    let check = HealthCheck { enabled: false, ..hc(1000) };
    lb.apply(&table(1, vec![("web", l)], vec![("g", group(&[b.addr], check, 0))])).await;
    let mut s = tokio::net::TcpStream::connect(port).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let started = std::time::Instant::now();
    // One header byte every 50 ms keeps the connection busy but never finishes the head.
    let closed = loop {
        if s.write_all(b"X").await.is_err() {
            break true;
        }
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(50), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            _ => {}
        }
        if started.elapsed() > Duration::from_secs(5) {
            break false;
        }
    };
    assert!(closed, "a trickled head kept the connection open for 5 s");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "closed too early: {:?}",
        started.elapsed()
    );
    assert_eq!(b.hits.load(Ordering::SeqCst), 0);
    lb.shutdown().await;
}

/// Reads from `s` until `needle` has arrived (or the peer closes); returns all of it.
async fn read_until(s: &mut tokio::net::TcpStream, needle: &str) -> String {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(needle) {
        match tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_is_answered_before_the_body_is_sent() {
    use tokio::io::AsyncWriteExt;
    let (lb, _b, port) = setup().await;
    let mut s = tokio::net::TcpStream::connect(port).await.unwrap();
    s.write_all(
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    // The client holds the body back until it is told to continue.
    let interim = read_until(&mut s, "\r\n\r\n").await;
    assert!(interim.starts_with("HTTP/1.1 100 Continue\r\n"), "{interim:?}");
    s.write_all(b"hello").await.unwrap();
    let answer = read_until(&mut s, "body: hello").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(!answer.to_ascii_lowercase().contains("expect:"), "the target got Expect: {answer}");
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_are_framed_for_each_client_version_and_method() {
    let (lb, _b, port) = setup().await;

    // An HTTP/1.1 client gets a body of unknown length chunked, and keeps its connection.
    let answer = raw_exchange(
        port,
        b"GET /chunks HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    let lower = answer.to_ascii_lowercase();
    assert!(lower.contains("transfer-encoding: chunked\r\n"), "{answer}");
    assert!(answer.contains("one\n") && answer.contains("three\n"), "{answer}");
    assert!(answer.contains("0\r\n\r\n"), "the chunked body ends: {answer}");
    assert_eq!(answer.matches("HTTP/1.1 200").count(), 2, "{answer}");

    // An HTTP/1.0 client cannot read chunks: it gets the raw body, ended by the close.
    let answer = raw_exchange(port, b"GET /chunks HTTP/1.0\r\nHost: a\r\n\r\n").await;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or_default();
    assert!(!head.to_ascii_lowercase().contains("transfer-encoding"), "{answer}");
    assert!(head.to_ascii_lowercase().contains("connection: close"), "{answer}");
    assert_eq!(body, "one\ntwo\nthree\n");

    // HTTP/1.0 with keep-alive keeps the connection for a second request.
    let answer = raw_exchange(
        port,
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.0\r\n\r\n",
    )
    .await;
    assert_eq!(answer.matches("HTTP/1.1 200").count(), 2, "{answer}");
    assert!(answer.to_ascii_lowercase().contains("connection: keep-alive"), "{answer}");

    // HEAD: the length of the body a GET would get, and no body.
    let answer =
        raw_exchange(port, b"HEAD / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or_default();
    assert!(head.to_ascii_lowercase().contains("content-length: 1\r\n"), "{answer}");
    assert_eq!(body, "");

    // Absolute form, as a client configured for a proxy sends it: origin form, and its
    // authority as Host.
    let answer = raw_exchange(
        port,
        b"GET http://shop.example/echo?x=1 HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.to_ascii_lowercase().contains("host: shop.example\n"), "{answer}");
    lb.shutdown().await;
}

/// A target that answers one request per connection with keep-alive, then closes the
/// connection shortly after, as servers with a short keep-alive timeout do. Counts the
/// connections it closed.
async fn short_keep_alive_target() -> (std::net::SocketAddr, Arc<AtomicU64>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let closed = Arc::new(AtomicU64::new(0));
    let counter = closed.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                }
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
                tokio::time::sleep(Duration::from_millis(20)).await;
                drop(s);
                counter.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_the_target_closed_is_replaced_without_an_error() {
    let (target, closed) = short_keep_alive_target().await;
    let (lb, port) = lb_in_front_of(target).await;
    for round in 1..=3u64 {
        let (status, body) = get(&lb.http, &format!("http://{port}/")).await;
        assert_eq!((status, body.as_str()), (200, "ok"), "round {round}");
        // The target closes the keep-alive connection the load balancer pooled.
        wait_until("the target closed its connection", Duration::from_secs(3), || {
            let closed = closed.clone();
            async move { closed.load(Ordering::SeqCst) >= round }
        })
        .await;
    }
    let m = lb.metrics().await;
    assert_eq!(m.target_groups["g"].counters.elb_502, 0);
    lb.shutdown().await;
}

/// A keep-alive target that answers every request with `response`; counts its connections.
async fn fixed_answer_target(response: &'static [u8]) -> (std::net::SocketAddr, Arc<AtomicU64>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let conns = Arc::new(AtomicU64::new(0));
    let counter = conns.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut got = Vec::new();
                loop {
                    while let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        got.drain(..end + 4);
                        if s.write_all(response).await.is_err() {
                            return;
                        }
                    }
                    match s.read(&mut buf).await {
                        Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                }
            });
        }
    });
    (addr, conns)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_answer_with_trailers_ends_cleanly_and_its_connections_are_reused() {
    let (target, conns) = fixed_answer_target(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Checksum: 7\r\n\r\n",
    )
    .await;
    let (lb, port) = lb_in_front_of(target).await;
    let answer = raw_exchange(
        port,
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    // Both answers whole, each body ended by its last chunk; the trailers, which an HTTP/1
    // client did not say it accepts (TE: trailers), are dropped.
    assert_eq!(answer.matches("HTTP/1.1 200").count(), 2, "{answer}");
    assert_eq!(answer.matches("5\r\nhello\r\n0\r\n\r\n").count(), 2, "{answer}");
    assert!(!answer.to_ascii_lowercase().contains("x-checksum"), "{answer}");
    // The body's end was seen, so the target connection went back to the pool and served both.
    assert_eq!(conns.load(Ordering::SeqCst), 1);
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_both_ways_with_either_framing() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (lb, _b, port) = setup().await;
    // 3 MiB with a declared length, from hyper's client; /echo sends it back with its length.
    let sent: String = (0..3 * 1024 * 1024).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    let req = http::Request::post(format!("http://{port}/echo"))
        .body(http_body_util::Full::new(bytes::Bytes::from(sent.clone())))
        .unwrap();
    let resp = lb.http.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(body.ends_with(&format!("body: {sent}\n")), "the body came back changed");

    // The same bytes chunked, 64 KiB a chunk, over a raw connection.
    let mut s = tokio::net::TcpStream::connect(port).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    for chunk in sent.as_bytes().chunks(64 * 1024) {
        s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).await.unwrap();
        s.write_all(chunk).await.unwrap();
        s.write_all(b"\r\n").await.unwrap();
    }
    s.write_all(b"0\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer))
        .await
        .expect("answered in time")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{}", &answer[..answer.len().min(200)]);
    assert!(answer.ends_with(&format!("body: {sent}\n")), "the chunked body came back changed");
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_is_answered_cleanly_while_its_body_still_arrives() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (lb, b, port) = setup().await;
    let (mut rd, mut wr) = tokio::net::TcpStream::connect(port).await.unwrap().into_split();
    // A malformed head followed by a 4 MB body the load balancer will never read as a body.
    let writer = tokio::spawn(async move {
        let head = b"POST / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\nContent-Length: 4000000\r\n\r\n";
        let _ = wr.write_all(head).await;
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..60 {
            if wr.write_all(&chunk).await.is_err() {
                break;
            }
        }
        wr
    });
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), rd.read_to_end(&mut got)).await;
    let answer = String::from_utf8_lossy(&got);
    assert!(status_line(&answer).starts_with("HTTP/1.1 400"), "{answer:?}");
    // A FIN after the answer, not a reset that could have destroyed it.
    assert!(matches!(read, Ok(Ok(_))), "the connection ended with {read:?}");
    drop(writer.await);
    assert_eq!(b.hits.load(Ordering::SeqCst), 0);
    lb.shutdown().await;
}

/// The fields of the target's request head, in lower case, from the `/echo` backend's answer.
fn echoed(answer: &str) -> String {
    answer.split_once("\r\n\r\n").map_or("", |(_, body)| body).to_ascii_lowercase()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_is_required_once_and_valid_and_an_absolute_form_authority_replaces_it() {
    let (lb, b, port) = setup().await;
    // RFC 9112 §3.2: 400 for an HTTP/1.1 request without Host, for any request with two, or
    // with an invalid one; §3.2: `*` is for OPTIONS only, the authority form for CONNECT.
    let refused: [(&str, &[u8]); 10] = [
        ("no Host on HTTP/1.1", b"GET / HTTP/1.1\r\n\r\n"),
        ("two Hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
        ("two Hosts on HTTP/1.0", b"GET / HTTP/1.0\r\nHost: a\r\nhost: a\r\n\r\n"),
        ("an empty Host", b"GET / HTTP/1.1\r\nHost: \r\n\r\n"),
        ("user info in Host", b"GET / HTTP/1.1\r\nHost: user@shop\r\n\r\n"),
        ("a path in Host", b"GET / HTTP/1.1\r\nHost: shop/x\r\n\r\n"),
        ("a port over 65535", b"GET / HTTP/1.1\r\nHost: shop:65536\r\n\r\n"),
        ("user info in the authority", b"GET http://user@other/ HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("no Host with an absolute form", b"GET http://other/ HTTP/1.1\r\n\r\n"),
        ("an asterisk form for GET", b"GET * HTTP/1.1\r\nHost: a\r\n\r\n"),
    ];
    for (what, raw) in refused {
        let answer = raw_exchange(port, raw).await;
        assert!(answer.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{what}: {answer:?}");
    }
    assert_eq!(b.hits.load(Ordering::SeqCst), 0, "a refused request reached the target");
    assert_eq!(lb.metrics().await.listeners["web"].elb_4xx, refused.len() as u64);

    // The absolute form's authority is the target's Host, whatever the Host field says, and
    // its path the request's (`/` when it has none); the scheme in any case.
    let answer = raw_exchange(
        port,
        b"GET http://other:9999/echo HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    let fields = echoed(&answer);
    assert!(fields.contains("host: other:9999\n") && !fields.contains("shop"), "{answer}");
    let answer = raw_exchange(
        port,
        b"GET HTTP://Other/echo?q=1 HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(echoed(&answer).contains("host: other\n"), "{answer}");
    // HTTP/1.0 may omit Host; OPTIONS may ask about the server as a whole.
    let answer = raw_exchange(port, b"GET /echo HTTP/1.0\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(!echoed(&answer).contains("host:"), "{answer}");
    let answer =
        raw_exchange(port, b"OPTIONS * HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_request_names_one_authority_which_the_target_gets_as_host() {
    use bytes::Bytes;
    use http::Request;
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let dir = std::env::temp_dir().join(format!("cutover-proxy-h2host-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), cert.key_pair.serialize_pem()).unwrap();
    let lb = Lb::start(None).await;
    let b = Backend::start("b").await;
    let port = free_addr();
    let mut l = listener(port, forward(&[("g", 1)]));
    l.tls = Some(TlsConfig {
        certificate_file: dir.join("cert.pem").display().to_string(),
        key_file: dir.join("key.pem").display().to_string(),
        certificates: Vec::new(),
        acme: None,
    });
    let check = HealthCheck { enabled: false, ..hc(1000) };
    lb.apply(&table(1, vec![("web", l)], vec![("g", group(&[b.addr], check, 0))])).await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(port).await.unwrap();
    let tls = connector.connect("localhost".try_into().unwrap(), tcp).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let authority = format!("localhost:{}", port.port());
    let mut send = async |uri: &str, hosts: &[&str]| {
        let mut req = Request::get(uri);
        for h in hosts {
            req = req.header("host", *h);
        }
        let resp = sender.send_request(req.body(Empty::<Bytes>::new()).unwrap()).await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).to_ascii_lowercase())
    };

    // `:authority` alone, or with a `host` that names the same: the target's Host is it.
    let url = format!("https://{authority}/echo");
    let (status, body) = send(&url, &[]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&format!("host: {authority}\n")), "{body}");
    let (status, body) = send(&url, &[&authority.to_uppercase()]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.lines().filter(|l| l.starts_with("host:")).count(), 1, "{body}");
    // RFC 9113 §8.3.1: a `host` that disagrees with `:authority`, or two of them, is malformed.
    for (what, hosts) in [("another host", vec!["evil"]), ("two", vec![&authority[..]; 2])] {
        let (status, body) = send(&url, &hosts).await;
        assert_eq!(status, 400, "{what}: {body}");
    }
    // Without `:authority`, the one `host` field is the Host.
    let (status, body) = send("/echo", &["shop"]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("host: shop\n"), "{body}");
    let m = lb.metrics().await;
    assert_eq!(m.listeners["web"].elb_4xx, 2);
    assert_eq!(b.hits.load(Ordering::SeqCst), 3);
    lb.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
