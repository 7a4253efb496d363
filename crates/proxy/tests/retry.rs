//! Retry on another target group (`routes::Retry`), over real sockets: a request green fails
//! before any byte of its answer reached the client is answered by blue, when that is safe, and
//! green's metrics still count the failure.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use routes::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Targets answered at once: no health check to wait for.
fn unchecked() -> HealthCheck {
    HealthCheck { enabled: false, ..hc(100) }
}

/// Every request goes to green first (weight 1, blue 0), and green's failures go to blue.
fn canary(bind: SocketAddr, green: SocketAddr, blue: SocketAddr, retry: Retry) -> RouteTable {
    let mut forward = ForwardAction::weighted(vec![
        WeightedTargetGroup { name: "green".into(), weight: 1 },
        WeightedTargetGroup { name: "blue".into(), weight: 0 },
    ]);
    forward.retry = Some(retry);
    table(
        1,
        vec![("prod", listener(bind, Action::Forward(forward)))],
        vec![("green", group(&[green], unchecked(), 0)), ("blue", group(&[blue], unchecked(), 0))],
    )
}

/// A green that answers every request with `status` (reading its body first), counting them.
struct Failing {
    addr: SocketAddr,
    hits: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Failing {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Failing {
    async fn start(status: u16) -> Failing {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicU64::new(0));
        let counted = hits.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let hits = counted.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let hits = hits.clone();
                        async move {
                            let _ = req.into_body().collect().await;
                            hits.fetch_add(1, Ordering::SeqCst);
                            let mut resp =
                                http::Response::new(Full::new(Bytes::from("green failed")));
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
        Failing { addr, hits, task }
    }
}

/// A green that reads each request head, sends `answer` (perhaps nothing), then resets the
/// connection.
async fn resetting(answer: &'static [u8]) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut byte).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&byte[..n]),
                    }
                }
                let _ = stream.write_all(answer).await;
                // A zero linger turns the close into a reset.
                let _ = stream.set_zero_linger();
            });
        }
    });
    (addr, task)
}

/// An address nothing listens on: connections are refused.
async fn refusing() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

async fn send(lb: &Lb, method: &str, url: &str, body: Vec<u8>) -> (u16, String) {
    let req =
        Request::builder().method(method).uri(url).body(Full::new(Bytes::from(body))).unwrap();
    let resp = lb.http.request(req).await.expect("the load balancer answers");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn group_metrics(snapshot: &MetricsSnapshot, name: &str) -> TargetGroupMetrics {
    snapshot.target_groups[name].clone()
}

#[tokio::test]
async fn a_5xx_from_green_is_answered_by_blue_and_still_counted_on_green() {
    let green = Failing::start(503).await;
    let blue = Backend::start("blue").await;
    let lb = Lb::start(None).await;
    let bind = free_addr();
    lb.apply(&canary(bind, green.addr, blue.addr, Retry::to("blue"))).await;

    for _ in 0..20 {
        assert_eq!(
            send(&lb, "GET", &format!("http://{bind}/"), Vec::new()).await,
            (200, "blue".into())
        );
    }
    assert_eq!(green.hits.load(Ordering::SeqCst), 20, "every request went to green first");
    let snapshot = lb.metrics().await;
    let (g, b) = (group_metrics(&snapshot, "green"), group_metrics(&snapshot, "blue"));
    assert_eq!(g.counters.requests, 20);
    assert_eq!(g.counters.target_5xx, 20, "green's failures are counted on green");
    assert_eq!(g.retries, 20);
    assert_eq!(g.retry_budget_exhausted, 0);
    assert_eq!((b.counters.requests, b.counters.target_2xx, b.retries), (20, 20, 0));
    lb.shutdown().await;
}

#[tokio::test]
async fn a_refused_connection_to_green_is_answered_by_blue() {
    let green = refusing().await;
    let blue = Backend::start("blue").await;
    let lb = Lb::start(None).await;
    let bind = free_addr();
    lb.apply(&canary(bind, green, blue.addr, Retry::to("blue"))).await;

    assert_eq!(
        send(&lb, "GET", &format!("http://{bind}/"), Vec::new()).await,
        (200, "blue".into())
    );
    let g = group_metrics(&lb.metrics().await, "green");
    assert_eq!(g.counters.elb_502, 1, "the refused connection is green's 502");
    assert_eq!(g.counters.target_connection_errors, 1);
    assert_eq!(g.retries, 1);
    lb.shutdown().await;
}

#[tokio::test]
async fn a_connection_reset_before_the_answer_is_answered_by_blue() {
    let (green, _task) = resetting(b"").await;
    let blue = Backend::start("blue").await;
    let lb = Lb::start(None).await;
    let bind = free_addr();
    lb.apply(&canary(bind, green, blue.addr, Retry::to("blue"))).await;

    for _ in 0..3 {
        assert_eq!(send(&lb, "HEAD", &format!("http://{bind}/"), Vec::new()).await.0, 200);
        assert_eq!(
            send(&lb, "GET", &format!("http://{bind}/"), Vec::new()).await,
            (200, "blue".into())
        );
    }
    let g = group_metrics(&lb.metrics().await, "green");
    assert_eq!(g.counters.elb_502, 6, "each reset is green's 502");
    assert_eq!(g.retries, 6);
    assert_eq!(blue.hits.load(Ordering::SeqCst), 6);
    lb.shutdown().await;
}

#[tokio::test]
async fn a_put_with_a_body_within_the_bound_reaches_blue_whole() {
    let green = Failing::start(500).await;
    let blue = Backend::start("blue").await;
    let lb = Lb::start(None).await;
    let bind = free_addr();
    lb.apply(&canary(
        bind,
        green.addr,
        blue.addr,
        Retry { max_body_bytes: 4096, ..Retry::to("blue") },
    ))
    .await;

    let body = "b".repeat(4096);
    let (status, echoed) =
        send(&lb, "PUT", &format!("http://{bind}/echo"), body.clone().into_bytes()).await;
    assert_eq!(status, 200, "{echoed}");
    assert!(echoed.contains(&format!("body: {body}\n")), "blue got the body whole: {echoed}");
    assert_eq!(green.hits.load(Ordering::SeqCst), 1);
    lb.shutdown().await;
}

#[tokio::test]
async fn a_body_that_arrives_after_100_continue_is_kept_and_reaches_blue() {
    let green = Failing::start(500).await;
    let blue = Backend::start("blue").await;
    let lb = Lb::start(None).await;
    let bind = free_addr();
    lb.apply(&canary(bind, green.addr, blue.addr, Retry::to("blue"))).await;

    let mut client = tokio::net::TcpStream::connect(bind).await.unwrap();
    let head = "PUT /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\nexpect: 100-continue\r\n\
                connection: close\r\n\r\n";
    client.write_all(head.as_bytes()).await.unwrap();
    let mut got = [0u8; 25];
    client.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"HTTP/1.1 100 Continue\r\n\r\n");
    client.write_all(b"hello").await.unwrap();
    let mut answer = String::new();
    client.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("body: hello\n"), "{answer}");
    assert_eq!(green.hits.load(Ordering::SeqCst), 1);
    lb.shutdown().await;
}

#[tokio::test]
async fn a_post_is_never_retried() {
    let green = Failing::start(500).await;
    let blue = Backend::start("blue").await;
    let lb = Lb::start(None).await;
    let bind = free_addr();
    lb.apply(&canary(bind, green.addr, blue.addr, Retry::to("blue"))).await;

    let (status, body) = send(&lb, "POST", &format!("http://{bind}/"), b"order".to_vec()).await;
    assert_eq!((status, body.as_str()), (500, "green failed"));
    assert_eq!(blue.hits.load(Ordering::SeqCst), 0);
    let g = group_metrics(&lb.metrics().await, "green");
    assert_eq!((g.counters.target_5xx, g.retries, g.retry_budget_exhausted), (1, 0, 0));
    lb.shutdown().await;
}

#[tokio::test]
async fn a_body_over_the_bound_is_never_retried() {
    let green = Failing::start(500).await;
    let blue = Backend::start("blue").await;
    let lb = Lb::start(None).await;
    let bind = free_addr();
    lb.apply(&canary(
        bind,
        green.addr,
        blue.addr,
        Retry { max_body_bytes: 1024, ..Retry::to("blue") },
    ))
    .await;

    let (status, _) = send(&lb, "PUT", &format!("http://{bind}/echo"), vec![b'x'; 1025]).await;
    assert_eq!(status, 500, "a body over max_body_bytes streams to green and is not kept");
    assert_eq!(blue.hits.load(Ordering::SeqCst), 0);
    assert_eq!(group_metrics(&lb.metrics().await, "green").retries, 0);
    lb.shutdown().await;
}

#[tokio::test]
async fn an_answer_already_forwarded_is_never_retried() {
    // Green starts a 200 and dies inside its body: the client has the head and ten bytes.
    let (green, _task) =
        resetting(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789").await;
    let blue = Backend::start("blue").await;
    let lb = Lb::start(None).await;
    let bind = free_addr();
    lb.apply(&canary(bind, green, blue.addr, Retry::to("blue"))).await;

    let answer = raw_exchange(bind, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.ends_with("\r\n\r\n0123456789"), "cut inside green's body: {answer}");
    assert_eq!(blue.hits.load(Ordering::SeqCst), 0);
    assert_eq!(group_metrics(&lb.metrics().await, "green").retries, 0);
    lb.shutdown().await;
}

#[tokio::test]
async fn a_spent_budget_leaves_green_s_failure_to_the_client_until_a_retry_ends() {
    let green = Failing::start(500).await;
    let blue = Backend::start("blue").await;
    let lb = Lb::start(None).await;
    let bind = free_addr();
    // One retry in flight at most, whatever the load.
    let retry = Retry { budget_percent: 0, min_retry_concurrency: 1, ..Retry::to("blue") };
    lb.apply(&canary(bind, green.addr, blue.addr, retry)).await;

    // The first request's retry holds the budget while blue takes 3 s to answer it.
    let slow = {
        let http = lb.http.clone();
        tokio::spawn(async move { get(&http, &format!("http://{bind}/slow?ms=3000")).await })
    };
    wait_until("blue to hold the first retry", Duration::from_secs(10), || async {
        blue.hits.load(Ordering::SeqCst) == 1
    })
    .await;
    let (status, body) = send(&lb, "GET", &format!("http://{bind}/"), Vec::new()).await;
    assert_eq!((status, body.as_str()), (500, "green failed"), "the budget is spent");
    let g = group_metrics(&lb.metrics().await, "green");
    assert_eq!((g.retries, g.retry_budget_exhausted), (1, 1));

    assert_eq!(slow.await.unwrap(), (200, "blue".into()));
    // The retry ended, and with it its place in the budget.
    assert_eq!(
        send(&lb, "GET", &format!("http://{bind}/"), Vec::new()).await,
        (200, "blue".into())
    );
    let g = group_metrics(&lb.metrics().await, "green");
    assert_eq!((g.counters.target_5xx, g.retries, g.retry_budget_exhausted), (3, 2, 1));
    lb.shutdown().await;
}

#[tokio::test]
async fn a_request_pinned_to_green_by_preview_gets_green_s_answer() {
    let green = Failing::start(500).await;
    let blue = Backend::start("blue").await;
    let lb = Lb::start(None).await;
    let bind = free_addr();
    let mut table = canary(bind, green.addr, blue.addr, Retry::to("blue"));
    let Action::Forward(forward) = &mut table.listeners.get_mut("prod").unwrap().action else {
        unreachable!("canary forwards")
    };
    forward.preview = Some(Preview {
        from: PreviewFrom::Header,
        name: "x-deploy-version".into(),
        target_groups: [("green".to_string(), "green".to_string())].into(),
    });
    lb.apply(&table).await;

    let req = Request::get(format!("http://{bind}/"))
        .header("x-deploy-version", "green")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = lb.http.request(req).await.unwrap();
    assert_eq!(resp.status(), 500, "a tester pinned to green sees green's failure");
    assert_eq!(blue.hits.load(Ordering::SeqCst), 0);
    lb.shutdown().await;
}

#[tokio::test]
async fn a_retry_the_data_plane_cannot_serve_is_refused_with_its_reason() {
    let lb = Lb::start(None).await;
    let bind = free_addr();
    let blue = free_addr();
    let mut bad = canary(bind, blue, blue, Retry::to("elsewhere"));
    let (status, body) = lb.put(&bad).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"],
        "listener `prod`: retry names target group `elsewhere`, which this forward does not"
    );
    bad = canary(bind, blue, blue, Retry { methods: vec!["get".into()], ..Retry::to("blue") });
    let (status, body) = lb.put(&bad).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"],
        "listener `prod`: retry method \"get\" is not an uppercase method name such as GET"
    );
    lb.shutdown().await;
}

#[tokio::test]
async fn a_request_for_a_group_without_a_target_goes_to_the_retry_group_whatever_its_method() {
    // As between a rollback's new target sets and its new weights: green is chosen, and empty.
    let blue = Backend::start("blue").await;
    let lb = Lb::start(None).await;
    let bind = free_addr();
    let mut table = canary(bind, blue.addr, blue.addr, Retry::to("blue"));
    table.target_groups.get_mut("green").unwrap().targets.clear();
    lb.apply(&table).await;

    let (status, body) = send(&lb, "POST", &format!("http://{bind}/"), b"order".to_vec()).await;
    assert_eq!((status, body.as_str()), (200, "blue"), "nothing was sent to green: any method");
    let snapshot = lb.metrics().await;
    let (g, b) = (group_metrics(&snapshot, "green"), group_metrics(&snapshot, "blue"));
    assert_eq!((g.counters.requests, g.counters.elb_503, g.retries), (0, 0, 0));
    assert_eq!((b.counters.requests, b.counters.target_2xx), (1, 1));
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http2_a_request_without_a_body_is_retried_and_one_with_a_body_is_not() {
    let dir = std::env::temp_dir().join(format!("cutover-proxy-retry-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["web.example.com".into()]).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), cert.key_pair.serialize_pem()).unwrap();
    let green = Failing::start(500).await;
    let blue = Backend::start("blue").await;
    let lb = Lb::start(None).await;
    let bind = free_addr();
    let mut table = canary(bind, green.addr, blue.addr, Retry::to("blue"));
    table.listeners.get_mut("prod").unwrap().tls = Some(TlsConfig {
        certificate_file: dir.join("cert.pem").display().to_string(),
        key_file: dir.join("key.pem").display().to_string(),
        certificates: Vec::new(),
        acme: None,
    });
    lb.apply(&table).await;

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
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    for (method, body, expected) in [
        ("GET", "", (200, "blue")),
        ("DELETE", "", (200, "blue")),
        ("PUT", "x", (500, "green failed")),
    ] {
        let req = Request::builder()
            .method(method)
            .uri(format!("https://web.example.com:{}/", bind.port()))
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
            .await
            .unwrap()
            .unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!((status, String::from_utf8_lossy(&body).as_ref()), expected, "{method} over h2");
    }
    let g = group_metrics(&lb.metrics().await, "green");
    assert_eq!((g.counters.target_5xx, g.retries), (3, 2), "each failure counted on green");
    lb.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
