//! Shadow traffic (`routes::Mirror`), over real sockets: a copy of a share of the requests goes
//! to green beside the request, green's answers are measured and thrown away, and the client
//! gets blue's answer whatever green does — failing, slow, or down.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use routes::*;
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// Targets answered at once: no health check to wait for.
fn unchecked() -> HealthCheck {
    HealthCheck { enabled: false, ..hc(100) }
}

/// Every request goes to blue (green at weight 0), and `mirror` copies some of them to green.
fn shadowed(bind: SocketAddr, blue: SocketAddr, green: SocketAddr, mirror: Mirror) -> RouteTable {
    let mut forward = ForwardAction::weighted(vec![
        WeightedTargetGroup { name: "blue".into(), weight: 1 },
        WeightedTargetGroup { name: "green".into(), weight: 0 },
    ]);
    forward.mirror = Some(mirror);
    table(
        1,
        vec![("prod", listener(bind, Action::Forward(forward)))],
        vec![("blue", group(&[blue], unchecked(), 0)), ("green", group(&[green], unchecked(), 0))],
    )
}

/// What green saw of one copy.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    shadow_header: Option<String>,
    body: Bytes,
}

/// A green that answers every request with `status`, after waiting for `gate` when it has one,
/// and keeps what it saw.
struct Green {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Green {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Green {
    async fn start(status: u16, gate: Option<Arc<Notify>>) -> Green {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let kept = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (kept, gate) = (kept.clone(), gate.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (kept, gate) = (kept.clone(), gate.clone());
                        async move {
                            let method = req.method().to_string();
                            let shadow_header = req
                                .headers()
                                .get("x-cutover-shadow")
                                .map(|v| v.to_str().unwrap_or("?").to_string());
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            kept.lock().unwrap().push(Seen { method, shadow_header, body });
                            if let Some(gate) = gate {
                                gate.notified().await;
                            }
                            let mut resp = http::Response::new(Full::new(Bytes::from("green")));
                            *resp.status_mut() = StatusCode::from_u16(status).unwrap();
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Green { addr, seen, task }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn send(lb: &Lb, method: &str, url: &str, body: &[u8]) -> (u16, String) {
    let req = Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(Bytes::copy_from_slice(body)))
        .unwrap();
    let resp = lb.http.request(req).await.expect("the load balancer answers");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Green's metrics once `done` holds of them (within 10 s).
async fn green_metrics_once(
    lb: &Lb,
    what: &str,
    done: impl Fn(&TargetGroupMetrics) -> bool,
) -> TargetGroupMetrics {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let green = lb.metrics().await.target_groups["green"].clone();
        if done(&green) {
            return green;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}; green: {green:#?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An address nothing listens on: connections are refused.
async fn refusing() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

#[tokio::test]
async fn a_green_answering_500_to_every_copy_changes_nothing_for_the_client_and_is_counted() {
    let blue = Backend::start("blue").await;
    let green = Green::start(500, None).await;
    let lb = Lb::start(None).await;
    let bind = free_addr();
    lb.apply(&shadowed(bind, blue.addr, green.addr, Mirror::to("green", 100))).await;

    for i in 0..20 {
        let answer = send(&lb, "GET", &format!("http://{bind}/page/{i}"), b"").await;
        assert_eq!(answer, (200, "blue".to_string()), "request {i} got blue's answer");
    }
    let mirrored = green_metrics_once(&lb, "green answered 20 copies", |g| {
        g.mirrored.counters.requests == 20 && g.mirrored.mismatches == 20
    })
    .await;
    assert_eq!(mirrored.mirrored.counters.target_5xx, 20, "{mirrored:#?}");
    assert_eq!(mirrored.mirrored.server_errors(), 20);
    assert_eq!(mirrored.mirrored.counters.response_time.count, 20, "each copy timed");
    assert_eq!(mirrored.mirrored.dropped, 0);
    // Green's own counters are what clients got of green: nothing.
    assert_eq!((mirrored.counters.requests, mirrored.counters.target_5xx), (0, 0));
    let snapshot = lb.metrics().await;
    let blue_metrics = &snapshot.target_groups["blue"];
    assert_eq!((blue_metrics.counters.requests, blue_metrics.counters.target_2xx), (20, 20));
    assert!(blue_metrics.mirrored.is_empty(), "blue got no copies: {blue_metrics:#?}");
    let seen = green.seen();
    assert_eq!(seen.len(), 20);
    assert!(seen.iter().all(|s| s.shadow_header.as_deref() == Some("1")), "{seen:?}");
    let text = get(&lb.http, &format!("http://{}/metrics", lb.admin)).await.1;
    assert!(text.contains("cutover_lb_mirrored_5xx_total{target_group=\"green\"} 20"), "{text}");
    assert!(text.contains("cutover_lb_mirrored_mismatches_total{target_group=\"green\"} 20"));
    lb.shutdown().await;
}

#[tokio::test]
async fn a_green_that_never_answers_costs_the_client_nothing_and_holds_at_most_max_in_flight() {
    let blue = Backend::start("blue").await;
    let gate = Arc::new(Notify::new());
    let green = Green::start(200, Some(gate.clone())).await;
    let lb = Lb::start(None).await;
    let bind = free_addr();
    let mirror = Mirror { max_in_flight: 4, ..Mirror::to("green", 100) };
    lb.apply(&shadowed(bind, blue.addr, green.addr, mirror)).await;

    // Green holds every copy until the gate opens: were the client waiting for a copy, the
    // first request would never be answered.
    for i in 0..10 {
        let answered = tokio::time::timeout(
            Duration::from_secs(10),
            send(&lb, "GET", &format!("http://{bind}/"), b""),
        )
        .await;
        assert_eq!(answered.ok(), Some((200, "blue".to_string())), "request {i}");
    }
    let held = green_metrics_once(&lb, "6 copies dropped", |g| g.mirrored.dropped == 6).await;
    assert_eq!(held.mirrored.counters.requests, 4, "only max_in_flight copies sent: {held:#?}");
    wait_until("green holds the 4 copies", Duration::from_secs(10), || async {
        green.seen().len() == 4
    })
    .await;
    gate.notify_waiters();
    let answered =
        green_metrics_once(&lb, "the 4 copies answered", |g| g.mirrored.counters.target_2xx == 4)
            .await;
    assert_eq!(answered.mirrored.mismatches, 0, "200 and 200 are the same class");
    lb.shutdown().await;
}

#[tokio::test]
async fn a_green_that_is_down_costs_the_client_nothing_and_its_copies_count_as_502() {
    let blue = Backend::start("blue").await;
    let green = refusing().await;
    let lb = Lb::start(None).await;
    let bind = free_addr();
    lb.apply(&shadowed(bind, blue.addr, green, Mirror::to("green", 100))).await;

    for i in 0..10 {
        let answer = send(&lb, "GET", &format!("http://{bind}/"), b"").await;
        assert_eq!(answer, (200, "blue".to_string()), "request {i}");
    }
    let mirrored = green_metrics_once(&lb, "10 copies failed, each compared", |g| {
        g.mirrored.counters.elb_502 == 10 && g.mirrored.mismatches == 10
    })
    .await;
    assert_eq!(mirrored.mirrored.counters.target_connection_errors, 10, "{mirrored:#?}");
    assert_eq!((mirrored.mirrored.server_errors(), mirrored.mirrored.mismatches), (10, 10));
    assert_eq!(mirrored.counters.elb_502, 0, "not a failure any client saw");
    lb.shutdown().await;
}

#[tokio::test]
async fn a_post_is_never_copied_unless_the_mirror_takes_posts() {
    let blue = Backend::start("blue").await;
    let green = Green::start(200, None).await;
    let lb = Lb::start(None).await;
    let bind = free_addr();
    lb.apply(&shadowed(bind, blue.addr, green.addr, Mirror::to("green", 100))).await;

    for method in ["POST", "PATCH", "PUT", "DELETE"] {
        let answer = send(&lb, method, &format!("http://{bind}/order"), b"{\"n\":1}").await;
        assert_eq!(answer, (200, "blue".to_string()), "{method}");
    }
    // A GET after them, copied: once green saw it, green has seen all it ever will.
    send(&lb, "GET", &format!("http://{bind}/"), b"").await;
    wait_until("green saw the GET", Duration::from_secs(10), || async { !green.seen().is_empty() })
        .await;
    let methods: Vec<String> = green.seen().into_iter().map(|s| s.method).collect();
    assert_eq!(methods, ["GET"], "only the safe method was copied");

    let mut opted_in = shadowed(bind, blue.addr, green.addr, Mirror::to("green", 100));
    opted_in.version = 2;
    if let Action::Forward(f) = &mut opted_in.listeners.get_mut("prod").unwrap().action {
        f.mirror.as_mut().unwrap().methods = vec!["POST".into()];
    }
    lb.apply(&opted_in).await;
    let answer = send(&lb, "POST", &format!("http://{bind}/order"), b"{\"n\":2}").await;
    assert_eq!(answer, (200, "blue".to_string()));
    wait_until("green saw the POST", Duration::from_secs(10), || async { green.seen().len() == 2 })
        .await;
    let post = &green.seen()[1];
    assert_eq!((post.method.as_str(), &post.body[..]), ("POST", &b"{\"n\":2}"[..]));
    lb.shutdown().await;
}

#[tokio::test]
async fn a_body_over_the_bound_is_not_copied_and_reaches_blue_whole() {
    let blue = Backend::start("blue").await;
    let green = Green::start(200, None).await;
    let lb = Lb::start(None).await;
    let bind = free_addr();
    let mirror =
        Mirror { max_body_bytes: 16, methods: vec!["POST".into()], ..Mirror::to("green", 100) };
    lb.apply(&shadowed(bind, blue.addr, green.addr, mirror)).await;

    let long = vec![b'x'; 17];
    let (status, echoed) = send(&lb, "POST", &format!("http://{bind}/echo"), &long).await;
    assert_eq!(status, 200);
    assert!(echoed.contains(&format!("body: {}\n", "x".repeat(17))), "{echoed}");
    let (status, _) = send(&lb, "POST", &format!("http://{bind}/echo"), &long[..16]).await;
    assert_eq!(status, 200);
    wait_until("green saw the short body", Duration::from_secs(10), || async {
        !green.seen().is_empty()
    })
    .await;
    let bodies: Vec<usize> = green.seen().iter().map(|s| s.body.len()).collect();
    assert_eq!(bodies, [16], "only the body within the bound was copied");
    lb.shutdown().await;
}

#[tokio::test]
async fn a_mirror_copies_exactly_its_share_of_the_gets_on_a_connection() {
    let blue = Backend::start("blue").await;
    let green = Green::start(200, None).await;
    let lb = Lb::start(None).await;
    let bind = free_addr();
    lb.apply(&shadowed(bind, blue.addr, green.addr, Mirror::to("green", 25))).await;

    // One keep-alive connection, so one worker thread, whose share is exact.
    for _ in 0..40 {
        assert_eq!(send(&lb, "GET", &format!("http://{bind}/"), b"").await.0, 200);
    }
    let mirrored =
        green_metrics_once(&lb, "10 copies answered", |g| g.mirrored.counters.target_2xx >= 10)
            .await;
    assert_eq!(mirrored.mirrored.counters.requests, 10, "25% of 40: {mirrored:#?}");
    assert_eq!(green.seen().len(), 10);
    let blue_metrics = lb.metrics().await.target_groups["blue"].clone();
    assert_eq!(blue_metrics.counters.requests, 40, "every request still went to blue");
    lb.shutdown().await;
}

#[tokio::test]
async fn a_mirror_to_a_group_the_forward_does_not_name_is_refused() {
    let lb = Lb::start(None).await;
    let bind = free_addr();
    let blue = free_addr();
    let mut bad = shadowed(bind, blue, blue, Mirror::to("canary", 10));
    let (status, body) = lb.put(&bad).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("mirror names target group `canary`, which this forward does not"),
        "{body}"
    );
    bad = shadowed(bind, blue, free_addr(), Mirror::to("green", 0));
    let (status, body) = lb.put(&bad).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("mirror percent 0 is not 1-100"), "{body}");
    lb.shutdown().await;
}

/// An HTTP/2 client of `bind`, an HTTPS listener serving `web.example.com` with `cert` (ALPN
/// `h2`).
async fn h2_client(
    bind: SocketAddr,
    cert: &rcgen::CertifiedKey,
) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
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
    let tcp = tokio::net::TcpStream::connect(bind).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("web.example.com".try_into().unwrap(), tcp)
        .await
        .expect("TLS handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "HTTP/2 was negotiated");
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    sender
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http2_safe_requests_and_bodies_within_the_bound_are_copied_and_blue_answers() {
    let dir = std::env::temp_dir().join(format!("cutover-proxy-mirror-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["web.example.com".into()]).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), cert.key_pair.serialize_pem()).unwrap();
    let blue = Backend::start("blue").await;
    let green = Green::start(404, None).await;
    let lb = Lb::start(None).await;
    let bind = free_addr();
    let mirror = Mirror {
        max_body_bytes: 16,
        methods: vec!["GET".into(), "POST".into()],
        ..Mirror::to("green", 100)
    };
    let mut table = shadowed(bind, blue.addr, green.addr, mirror);
    table.listeners.get_mut("prod").unwrap().tls = Some(TlsConfig {
        certificate_file: dir.join("cert.pem").display().to_string(),
        key_file: dir.join("key.pem").display().to_string(),
        certificates: Vec::new(),
        acme: None,
    });
    lb.apply(&table).await;

    let mut h2 = h2_client(bind, &cert).await;
    let url = format!("https://web.example.com:{}", bind.port());
    let long = "x".repeat(17);
    for (method, path, body) in [
        ("GET", "/page", ""),
        ("DELETE", "/order", ""),
        ("POST", "/echo", "{\"n\":1}"),
        ("POST", "/echo", long.as_str()),
    ] {
        let req = Request::builder()
            .method(method)
            .uri(format!("{url}{path}"))
            .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(10), h2.send_request(req))
            .await
            .expect("answered in time")
            .expect("answered");
        assert_eq!(resp.status(), 200, "{method} {path} got blue's answer");
        let answer = resp.into_body().collect().await.unwrap().to_bytes();
        let answer = String::from_utf8_lossy(&answer);
        if path == "/echo" {
            assert!(answer.contains(&format!("body: {body}\n")), "blue got it whole: {answer}");
        } else {
            assert_eq!(answer, "blue");
        }
    }
    // A GET and the POST within the bound: not the DELETE (not a mirror method), not the POST
    // over the bound.
    let mirrored = green_metrics_once(&lb, "green answered 2 copies", |g| {
        g.mirrored.counters.target_4xx == 2 && g.mirrored.mismatches == 2
    })
    .await;
    assert_eq!(mirrored.mirrored.counters.requests, 2, "{mirrored:#?}");
    assert_eq!(mirrored.mirrored.response_time_fine.iter().map(|b| b.1).sum::<u64>(), 2);
    let seen = green.seen();
    let mut copies: Vec<(&str, &[u8])> =
        seen.iter().map(|s| (s.method.as_str(), &s.body[..])).collect();
    copies.sort();
    assert_eq!(copies, [("GET", &b""[..]), ("POST", &b"{\"n\":1}"[..])]);
    assert!(seen.iter().all(|s| s.shadow_header.as_deref() == Some("1")), "{seen:?}");
    let blue_metrics = lb.metrics().await.target_groups["blue"].clone();
    assert_eq!(blue_metrics.counters.target_2xx, 4, "every request went to blue");
    lb.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
