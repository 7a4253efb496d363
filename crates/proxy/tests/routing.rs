//! Routing and reconfiguration: weights, draining, WebSocket pass-through, atomic swaps under
//! load, fixed responses and redirects, table versioning, the state file and TLS listeners.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use routes::*;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const WAIT: Duration = Duration::from_secs(10);

fn no_checks() -> HealthCheck {
    HealthCheck { enabled: false, ..hc(1000) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_forward_splits_traffic_in_proportion_to_weights() {
    let lb = Lb::start(None).await;
    let blue = [Backend::start("blue").await, Backend::start("blue").await];
    let green = Backend::start("green").await;
    let port = free_addr();
    let groups = || {
        vec![
            ("blue", group(&[blue[0].addr, blue[1].addr], no_checks(), 0)),
            ("green", group(&[green.addr], no_checks(), 0)),
        ]
    };
    for (version, (wb, wg)) in [(1, (10u16, 20u16)), (2, (900, 100))] {
        lb.apply(&table(
            version,
            vec![("web", listener(port, forward(&[("blue", wb), ("green", wg)])))],
            groups(),
        ))
        .await;
        let n = 3000;
        let mut counts: HashMap<String, u32> = HashMap::new();
        for _ in 0..n {
            let (status, body) = get(&lb.http, &format!("http://{port}/")).await;
            assert_eq!(status, 200);
            *counts.entry(body).or_default() += 1;
        }
        let expected = wg as f64 / (wb + wg) as f64;
        let got = counts.get("green").copied().unwrap_or(0) as f64 / n as f64;
        assert!(
            (got - expected).abs() < 0.02,
            "weights {wb}/{wg}: green got {got:.3} of requests, expected {expected:.3} ± 0.02 ({counts:?})"
        );
    }
    // Round robin inside blue: both targets get about half of blue's share.
    let (a, b) =
        (blue[0].hits.load(Ordering::SeqCst) as f64, blue[1].hits.load(Ordering::SeqCst) as f64);
    assert!((a / (a + b) - 0.5).abs() < 0.05, "round robin split {a}/{b}");
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_lets_an_in_flight_request_finish_while_new_requests_go_elsewhere() {
    let lb = Lb::start(None).await;
    let old = Backend::start("old").await;
    let new = Backend::start("new").await;
    let port = free_addr();
    let web = || vec![("web", listener(port, forward(&[("g", 1)])))];
    lb.apply(&table(1, web(), vec![("g", group(&[old.addr], hc(50), 30_000))])).await;
    lb.wait_state("g", old.addr, TargetState::Healthy, WAIT).await;

    let slow = {
        let http = lb.http.clone();
        tokio::spawn(async move { get(&http, &format!("http://{port}/slow?ms=1500")).await })
    };
    wait_until("the slow request reaches the old target", WAIT, || async {
        old.hits.load(Ordering::SeqCst) == 1
    })
    .await;

    // Deregister `old` (30 s delay) and register `new`.
    lb.apply(&table(2, web(), vec![("g", group(&[new.addr], hc(50), 30_000))])).await;
    let t = lb.target_state("g", old.addr).await.expect("old target still reported");
    assert_eq!(t.state, TargetState::Draining);
    assert_eq!(t.reason.as_deref(), Some("Target.DeregistrationInProgress"));
    assert_eq!(t.in_flight, 1);
    for _ in 0..20 {
        let (status, body) = get(&lb.http, &format!("http://{port}/")).await;
        assert_eq!((status, body.as_str()), (200, "new"), "a draining target gets no new requests");
    }
    assert_eq!(old.hits.load(Ordering::SeqCst), 1);

    let (status, body) = slow.await.unwrap();
    assert_eq!((status, body.as_str()), (200, "old"), "the in-flight request finishes");
    // Idle now: released long before the 30 s delay.
    wait_until("the idle draining target is released", Duration::from_secs(5), || async {
        lb.target_state("g", old.addr).await.is_none()
    })
    .await;
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_survives_a_weight_change_and_is_closed_cleanly_when_its_target_drains() {
    let lb = Lb::start(None).await;
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let port = free_addr();
    let tables = |version, wb, wg, blue_targets: &[std::net::SocketAddr]| {
        table(
            version,
            vec![("web", listener(port, forward(&[("blue", wb), ("green", wg)])))],
            vec![
                ("blue", group(blue_targets, no_checks(), 400)),
                ("green", group(&[green.addr], no_checks(), 400)),
            ],
        )
    };
    lb.apply(&tables(1, 100, 0, &[blue.addr])).await;
    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{port}/ws"))
        .await
        .expect("websocket through the LB");
    assert_eq!(resp.status(), 101);
    ws.send(Message::text("one")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap().into_text().unwrap(), "blue: one");
    wait_until("the tunnel is counted", WAIT, || async {
        lb.metrics().await.target_groups["blue"].targets[0].long_lived_connections == 1
    })
    .await;

    // All new traffic to green; the open WebSocket stays on blue.
    lb.apply(&tables(2, 0, 100, &[blue.addr])).await;
    let (_, body) = get(&lb.http, &format!("http://{port}/")).await;
    assert_eq!(body, "green");
    ws.send(Message::text("two")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap().into_text().unwrap(), "blue: two");

    // Deregister blue's target: the tunnel keeps it draining for the 400 ms delay, then closes.
    lb.apply(&tables(3, 0, 100, &[])).await;
    assert_eq!(lb.target_state("blue", blue.addr).await.unwrap().state, TargetState::Draining);
    ws.send(Message::text("three")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap().into_text().unwrap(), "blue: three");
    let closing = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("closed within the delay");
    match closing {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("expected a Close frame (1001), got {other:?}"),
    }
    wait_until("the drained target is released", WAIT, || async {
        lb.target_state("blue", blue.addr).await.is_none()
    })
    .await;
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconfiguration_racing_heavy_concurrent_requests_drops_none() {
    let lb = Lb::start(None).await;
    let b1 = Backend::start("b1").await;
    let b2 = Backend::start("b2").await;
    let g1 = Backend::start("g1").await;
    let port = free_addr();
    let make = |version: u64| {
        let w = (version * 97 % 1000) as u16;
        let blue_targets =
            if version.is_multiple_of(3) { vec![b1.addr] } else { vec![b1.addr, b2.addr] };
        table(
            version,
            vec![(
                "web",
                listener(port, forward(&[("blue", w.min(999)), ("green", 999 - w.min(999))])),
            )],
            vec![
                ("blue", group(&blue_targets, no_checks(), 5_000)),
                ("green", group(&[g1.addr], no_checks(), 5_000)),
            ],
        )
    };
    lb.apply(&make(1)).await;
    let ok = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..16 {
        let http = client();
        let ok = ok.clone();
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let resp = http
                    .request(
                        Request::get(format!("http://{port}/"))
                            .body(http_body_util::Full::new(Bytes::new()))
                            .unwrap(),
                    )
                    .await;
                match resp {
                    Ok(r) if r.status() == 200 => {
                        r.into_body().collect().await.expect("body completes");
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => failures.push(format!("status {}", r.status())),
                    Err(e) => failures.push(format!("{e:?}")),
                }
            }
            failures
        }));
    }
    for version in 2..=40 {
        lb.apply(&make(version)).await;
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for w in workers {
        failures.extend(w.await.unwrap());
    }
    let ok = ok.load(Ordering::Relaxed);
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}",
        failures.len(),
        ok + failures.len() as u64,
        &failures[..failures.len().min(5)]
    );
    assert!(ok > 1000, "only {ok} requests ran during the reconfigurations");
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_response_and_redirect_actions() {
    let lb = Lb::start(None).await;
    let (fixed_at, redirect_at) = (free_addr(), free_addr());
    lb.apply(&table(
        1,
        vec![
            (
                "fixed",
                listener(
                    fixed_at,
                    Action::FixedResponse(FixedResponse {
                        status_code: 418,
                        content_type: Some("application/json".into()),
                        body: "{\"teapot\":true}".into(),
                    }),
                ),
            ),
            (
                "http",
                listener(
                    redirect_at,
                    Action::Redirect(Redirect {
                        protocol: Some("HTTPS".into()),
                        host: None,
                        port: Some(443),
                        path: None,
                        query: None,
                        status_code: 301,
                    }),
                ),
            ),
        ],
        vec![],
    ))
    .await;
    let resp = lb
        .http
        .request(Request::get(format!("http://{fixed_at}/x")).body(Default::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 418);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "{\"teapot\":true}");

    let resp = lb
        .http
        .request(
            Request::get(format!("http://{redirect_at}/a/b?c=d"))
                .header("host", "shop.example:8080")
                .body(Default::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 301);
    assert_eq!(resp.headers()["location"], "https://shop.example/a/b?c=d");
    let m = lb.metrics().await;
    assert_eq!((m.listeners["fixed"].fixed_responses, m.listeners["http"].redirects), (1, 1));
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_version_is_refused_and_a_bad_table_leaves_the_old_one_serving() {
    let lb = Lb::start(None).await;
    let b = Backend::start("b").await;
    let port = free_addr();
    let good = |v| {
        table(
            v,
            vec![("web", listener(port, forward(&[("g", 1)])))],
            vec![("g", group(&[b.addr], no_checks(), 0))],
        )
    };
    lb.apply(&good(5)).await;

    let (status, body) = lb.put(&good(4)).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("older"), "{body}");

    // Same version, same content: a no-op. Same version, other content: refused.
    lb.apply(&good(5)).await;
    let mut changed = good(5);
    changed.target_groups.get_mut("g").unwrap().deregistration_delay_ms = 1;
    assert_eq!(lb.put(&changed).await.0, 409);

    // Unknown group, too many groups, weight above 999, missing TLS file, port already taken.
    let mut unknown = good(6);
    unknown.listeners.get_mut("web").unwrap().action = forward(&[("nope", 1)]);
    let mut heavy = good(6);
    heavy.listeners.get_mut("web").unwrap().action = forward(&[("g", 1000)]);
    let mut six = good(6);
    for i in 0..6 {
        six.target_groups.insert(format!("g{i}"), group(&[], no_checks(), 0));
    }
    six.listeners.get_mut("web").unwrap().action = forward(
        &(0..6)
            .map(|i| (Box::leak(format!("g{i}").into_boxed_str()) as &str, 1))
            .collect::<Vec<_>>(),
    );
    let mut tls = good(6);
    tls.listeners.get_mut("web").unwrap().tls = Some(TlsConfig {
        certificate_file: "/nonexistent/cert.pem".into(),
        key_file: "/nonexistent/key.pem".into(),
        certificates: Vec::new(),
        acme: None,
    });
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut busy = good(6);
    busy.listeners
        .insert("second".into(), listener(taken.local_addr().unwrap(), forward(&[("g", 1)])));
    for (bad, status, needle) in [
        (unknown, 400, "nope"),
        (heavy, 400, "999"),
        (six, 400, "at most 5"),
        (tls, 400, "/nonexistent/cert.pem"),
        (busy, 409, "cannot listen"),
    ] {
        let (got, body) = lb.put(&bad).await;
        assert_eq!(got, status, "{body}");
        assert!(body["error"].as_str().unwrap().contains(needle), "`{needle}` not in {body}");
        let served: ServedRoutes = lb.get_json("/v1/routes").await;
        assert_eq!(served.version, 5);
        assert_eq!(served.table, good(5));
        let (status, body) = get(&lb.http, &format!("http://{port}/")).await;
        assert_eq!((status, body.as_str()), (200, "b"), "the old table keeps serving");
    }
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_are_added_changed_and_removed_without_a_restart() {
    let lb = Lb::start(None).await;
    let b = Backend::start("b").await;
    let (one, two) = (free_addr(), free_addr());
    let g = || vec![("g", group(&[b.addr], no_checks(), 0))];
    lb.apply(&table(1, vec![("one", listener(one, forward(&[("g", 1)])))], g())).await;
    // A keep-alive connection opened on v1 sees v2's action on its next request: same socket.
    let (status, _) = get(&lb.http, &format!("http://{one}/")).await;
    assert_eq!(status, 200);
    let fixed = Action::FixedResponse(FixedResponse {
        status_code: 503,
        content_type: None,
        body: "maintenance".into(),
    });
    lb.apply(&table(
        2,
        vec![("one", listener(one, fixed)), ("two", listener(two, forward(&[("g", 1)])))],
        g(),
    ))
    .await;
    assert_eq!(get(&lb.http, &format!("http://{one}/")).await, (503, "maintenance".to_string()));
    assert_eq!(get(&lb.http, &format!("http://{two}/")).await, (200, "b".to_string()));
    lb.apply(&table(3, vec![("two", listener(two, forward(&[("g", 1)])))], g())).await;
    wait_until("the removed listener stops accepting", WAIT, || async {
        tokio::net::TcpStream::connect(one).await.is_err()
    })
    .await;
    assert_eq!(get(&lb.http, &format!("http://{two}/")).await.0, 200);
    lb.shutdown().await;
}

/// Reads until the peer closes; what it sent.
async fn read_to_close(s: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut got))
        .await
        .expect("the load balancer closed the connection")
        .expect("a clean close, not a reset");
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_listener_closes_idle_connections_and_finishes_the_request_in_flight() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let lb = Lb::start(None).await;
    let b = Backend::start("b").await;
    let (one, two) = (free_addr(), free_addr());
    let g = || vec![("g", group(&[b.addr], no_checks(), 0))];
    lb.apply(&table(
        1,
        vec![
            ("one", listener(one, forward(&[("g", 1)]))),
            ("two", listener(two, forward(&[("g", 1)]))),
        ],
        g(),
    ))
    .await;

    // A keep-alive connection that served one request and now idles.
    let mut idle = tokio::net::TcpStream::connect(one).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let mut first = vec![0; 1024];
    let mut got = String::new();
    while !got.ends_with("\r\n\r\nb") {
        let n = idle.read(&mut first).await.unwrap();
        assert!(n > 0, "the first response arrives whole: {got:?}");
        got.push_str(&String::from_utf8_lossy(&first[..n]));
    }
    // And one whose request is still at the target.
    let mut busy = tokio::net::TcpStream::connect(one).await.unwrap();
    busy.write_all(b"GET /slow?ms=1000 HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    wait_until("the slow request reaches the target", WAIT, || async {
        b.hits.load(Ordering::SeqCst) == 2
    })
    .await;

    lb.apply(&table(2, vec![("two", listener(two, forward(&[("g", 1)])))], g())).await;
    assert_eq!(read_to_close(&mut idle).await, "", "the idle connection is closed at once");
    let answer = read_to_close(&mut busy).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "the request in flight finishes: {answer:?}");
    assert!(answer.to_ascii_lowercase().contains("connection: close\r\n"), "{answer:?}");
    assert!(answer.ends_with("\r\n\r\nb"), "{answer:?}");
    // The listener kept serves on.
    assert_eq!(get(&lb.http, &format!("http://{two}/")).await.0, 200);
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_file_restores_the_table_after_a_restart() {
    let dir = std::env::temp_dir().join(format!("cutover-proxy-state-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("routes.json");
    let _ = std::fs::remove_file(&state);
    let b = Backend::start("b").await;
    let port = free_addr();
    let t = table(
        7,
        vec![("web", listener(port, forward(&[("g", 1)])))],
        vec![("g", group(&[b.addr], hc(50), 0))],
    );

    let lb = Lb::start(Some(state.clone())).await;
    lb.apply(&t).await;
    assert_eq!(get(&lb.http, &format!("http://{port}/")).await.0, 200);
    lb.shutdown().await;
    assert!(!dir.join("routes.json.tmp").exists(), "no temporary file left behind");

    let lb = Lb::start(Some(state.clone())).await;
    let served: ServedRoutes = lb.get_json("/v1/routes").await;
    assert_eq!(served.version, 7);
    assert_eq!(served.table, t);
    assert_eq!(get(&lb.http, &format!("http://{port}/")).await, (200, "b".to_string()));
    assert_eq!(lb.put(&RouteTable { version: 6, ..t.clone() }).await.0, 409);
    lb.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_listener_serves_http1_and_http2_by_alpn() {
    let dir = std::env::temp_dir().join(format!("cutover-proxy-tls-{}", std::process::id()));
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
    lb.apply(&table(1, vec![("https", l)], vec![("g", group(&[b.addr], no_checks(), 0))])).await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    for alpn in ["h2", "http/1.1"] {
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
        config.alpn_protocols = vec![alpn.as_bytes().to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(port).await.unwrap();
        let tls =
            connector.connect("localhost".try_into().unwrap(), tcp).await.expect("TLS handshake");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn.as_bytes()));
        let req = Request::get(format!("https://localhost:{}/echo", port.port()))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = if alpn == "h2" {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            sender.send_request(req).await.unwrap()
        } else {
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
            tokio::spawn(conn);
            let (mut parts, body) = req.into_parts();
            parts.uri = "/echo".parse().unwrap();
            parts.headers.insert("host", "localhost".parse().unwrap());
            sender.send_request(Request::from_parts(parts, body)).await.unwrap()
        };
        assert_eq!(resp.status(), 200, "over {alpn}");
        let body = String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec())
            .unwrap();
        assert!(body.contains("x-forwarded-proto: https"), "over {alpn}: {body}");
        assert!(body.contains("host: localhost"), "over {alpn}: {body}");
    }
    lb.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_response_is_counted_while_draining_and_cut_when_the_delay_ends() {
    let lb = Lb::start(None).await;
    let old = Backend::start("old").await;
    let port = free_addr();
    let web = || vec![("web", listener(port, forward(&[("g", 1)])))];
    lb.apply(&table(1, web(), vec![("g", group(&[old.addr], no_checks(), 500))])).await;
    let resp = lb
        .http
        .request(Request::get(format!("http://{port}/stream")).body(Default::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "tick 0\n");

    lb.apply(&table(2, web(), vec![("g", group(&[], no_checks(), 500))])).await;
    let drained_at = std::time::Instant::now();
    let t = lb.target_state("g", old.addr).await.unwrap();
    assert_eq!(
        (t.state, t.in_flight),
        (TargetState::Draining, 1),
        "the open stream keeps the target draining"
    );
    let mut ticks = 1;
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(5), body.frame()).await {
            Ok(Some(Ok(_))) => ticks += 1,
            Ok(Some(Err(_))) | Ok(None) => break drained_at.elapsed(),
            Err(_) => panic!("the stream was not cut within 5 s of deregistration"),
        }
    };
    assert!(ticks > 3, "the stream kept flowing during the delay ({ticks} ticks)");
    assert!(
        ended >= Duration::from_millis(400) && ended < Duration::from_secs(3),
        "cut {ended:?} after deregistration; the delay is 500 ms"
    );
    wait_until("the target is released", WAIT, || async {
        lb.target_state("g", old.addr).await.is_none()
    })
    .await;
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_moves_the_request_to_another_target() {
    let lb = Lb::start(None).await;
    let live = Backend::start("live").await;
    // A target whose process is gone: nothing listens there, so connecting is refused at once —
    // a task killed a moment ago, before any health check noticed.
    let dead = free_addr();
    let port = free_addr();
    lb.apply(&table(
        1,
        vec![("web", listener(port, forward(&[("web", 1)])))],
        vec![("web", group(&[dead, live.addr], no_checks(), 0))],
    ))
    .await;
    let n = 200;
    for _ in 0..n {
        let (status, body) = get(&lb.http, &format!("http://{port}/")).await;
        assert_eq!((status, body.as_str()), (200, "live"));
    }
    let metrics = lb.metrics().await;
    let web = &metrics.target_groups["web"];
    let dead_target = web.targets.iter().find(|t| t.addr == dead).expect("dead target listed");
    // Each refusal ejects the dead target for a while (see tests/hedge.rs): tried, not halved.
    let refusals = dead_target.counters.target_connection_errors;
    assert!(
        refusals >= 1 && refusals == web.passive_ejections,
        "the dead target was tried and each refusal ejected it: {:?}, {} ejections",
        dead_target.counters,
        web.passive_ejections
    );
    assert_eq!(web.counters.elb_502, 0, "no request was answered 502: {:?}", web.counters);
    assert_eq!(live.hits.load(Ordering::SeqCst), n as u64);

    // With no other target to go to, a refused connection is a 502, as before.
    lb.apply(&table(
        2,
        vec![("web", listener(port, forward(&[("web", 1)])))],
        vec![("web", group(&[dead], no_checks(), 0))],
    ))
    .await;
    let (status, _) = get(&lb.http, &format!("http://{port}/")).await;
    assert_eq!(status, 502);
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_routing_pins_a_request_to_the_group_its_header_or_cookie_names() {
    let lb = Lb::start(None).await;
    let (blue, green) = (Backend::start("blue").await, Backend::start("green").await);
    let port = free_addr();
    let with_preview = |version, from, name: &str| {
        let mut t = table(
            version,
            vec![("web", listener(port, forward(&[("blue", 100), ("green", 0)])))],
            vec![
                ("blue", group(&[blue.addr], no_checks(), 0)),
                ("green", group(&[green.addr], no_checks(), 0)),
            ],
        );
        let Action::Forward(f) = &mut t.listeners.get_mut("web").unwrap().action else {
            unreachable!()
        };
        f.preview = Some(Preview {
            from,
            name: name.into(),
            target_groups: [("green".into(), "green".into()), ("blue".into(), "blue".into())]
                .into(),
        });
        t
    };
    let get_with = |header: Option<(&'static str, &'static str)>| {
        let http = lb.http.clone();
        async move {
            let mut req = Request::get(format!("http://{port}/"));
            if let Some((name, value)) = header {
                req = req.header(name, value);
            }
            let resp = http.request(req.body(Default::default()).unwrap()).await.unwrap();
            assert_eq!(resp.status(), 200);
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            String::from_utf8_lossy(&body).into_owned()
        }
    };

    // Green is at weight 0: only a request that names it gets there, every time.
    lb.apply(&with_preview(1, PreviewFrom::Header, "X-Deploy-Version")).await;
    for _ in 0..20 {
        assert_eq!(get_with(Some(("x-deploy-version", "green"))).await, "green");
        assert_eq!(get_with(Some(("X-Deploy-Version", " blue "))).await, "blue");
        assert_eq!(get_with(None).await, "blue");
        assert_eq!(get_with(Some(("x-deploy-version", "purple"))).await, "blue");
        assert_eq!(get_with(Some(("cookie", "X-Deploy-Version=green"))).await, "blue");
    }
    let m = lb.metrics().await;
    assert_eq!(m.target_groups["green"].counters.requests, 20, "{:?}", m.target_groups["green"]);

    // By cookie: among other cookies, by exact name.
    lb.apply(&with_preview(2, PreviewFrom::Cookie, "deploy_version")).await;
    assert_eq!(
        get_with(Some(("cookie", "session=abc; deploy_version=green; theme=dark"))).await,
        "green"
    );
    assert_eq!(get_with(Some(("cookie", "deploy_version=blue"))).await, "blue");
    assert_eq!(get_with(Some(("cookie", "Deploy_Version=green"))).await, "blue");
    assert_eq!(get_with(Some(("deploy_version", "green"))).await, "blue");

    // A preview may only name groups of its own forward, and only as a valid name.
    let mut stray = with_preview(3, PreviewFrom::Header, "X-Deploy-Version");
    stray.target_groups.insert("other".into(), group(&[], no_checks(), 0));
    let Action::Forward(f) = &mut stray.listeners.get_mut("web").unwrap().action else {
        unreachable!()
    };
    f.preview.as_mut().unwrap().target_groups.insert("other".into(), "other".into());
    let (status, body) = lb.put(&stray).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("`other`"), "{body}");
    let (status, body) = lb.put(&with_preview(3, PreviewFrom::Header, "X Deploy")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        get_with(Some(("cookie", "deploy_version=green"))).await,
        "green",
        "version 2 still serves"
    );
    lb.shutdown().await;
}
