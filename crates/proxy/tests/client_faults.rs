//! A client's own faults are the client's: a malformed request body, a client that stops
//! sending or goes away mid-request is answered by the load balancer (400, 408) and counted as a
//! client error of the listener (`elb_4xx`, ALB's `HTTPCode_ELB_4XX_Count`), never as a 5xx of
//! the target group it was routed to — an ELB-5xx alarm on green must not be something any
//! client can trip. Invalid framing never reaches the target as if it were a body.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use routes::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A target that records every byte it receives and never answers.
struct Recorder {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<u8>>>,
}

impl Recorder {
    async fn start() -> Recorder {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let sink = sink.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while let Ok(n @ 1..) = s.read(&mut buf).await {
                        sink.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                });
            }
        });
        Recorder { addr, received }
    }

    fn received(&self) -> String {
        String::from_utf8_lossy(&self.received.lock().unwrap()).into_owned()
    }
}

/// A production listener at blue 100 / green 0 whose preview header `X-Deploy-Version: green`
/// pins a request to green, as during a deployment; green is `target`, blue a plain backend.
async fn production(target: SocketAddr, blue: SocketAddr) -> (Lb, SocketAddr) {
    production_with(target, blue, None).await
}

/// [`production`], over TLS when `tls` is given.
async fn production_with(
    target: SocketAddr,
    blue: SocketAddr,
    tls: Option<TlsConfig>,
) -> (Lb, SocketAddr) {
    let lb = Lb::start(None).await;
    let port = free_addr();
    let checks = HealthCheck { enabled: false, ..hc(1000) };
    let mut l = listener(port, forward(&[("blue", 100), ("green", 0)]));
    l.idle_timeout_ms = Some(1000);
    l.tls = tls;
    let Action::Forward(f) = &mut l.action else { unreachable!() };
    f.preview = Some(Preview {
        from: PreviewFrom::Header,
        name: "X-Deploy-Version".into(),
        target_groups: [("green".into(), "green".into())].into(),
    });
    lb.apply(&table(
        1,
        vec![("web", l)],
        vec![("blue", group(&[blue], checks.clone(), 0)), ("green", group(&[target], checks, 0))],
    ))
    .await;
    (lb, port)
}

const GREEN_CHUNKED_HEAD: &str = "POST / HTTP/1.1\r\nHost: shop\r\nX-Deploy-Version: green\r\n\
Transfer-Encoding: chunked\r\n\r\n";

/// The load balancer's own 5xx counted on `group`.
fn elb_5xx(m: &MetricsSnapshot, group: &str) -> u64 {
    let c = &m.target_groups[group].counters;
    c.elb_502 + c.elb_503 + c.elb_504
}

/// Reads what the server sends until it closes (or 3 s pass).
async fn read_answer(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_chunk_size_is_the_clients_400_and_no_5xx_of_green() {
    let (green, blue) = (Recorder::start().await, Backend::start("blue").await);
    let (lb, port) = production(green.addr, blue.addr).await;

    let answer =
        raw_exchange(port, format!("{GREEN_CHUNKED_HEAD}zz\r\nhello\r\n0\r\n\r\n").as_bytes())
            .await;
    assert!(answer.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{answer:?}");

    let m = lb.metrics().await;
    assert_eq!(m.listeners["web"].elb_4xx, 1, "{:?}", m.listeners["web"]);
    assert_eq!(elb_5xx(&m, "green"), 0, "{:?}", m.target_groups["green"].counters);
    assert_eq!(m.target_groups["green"].counters.target_5xx, 0);
    // Framing that arrived broken with the head is refused before any target hears of it.
    assert_eq!(green.received(), "");
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_framing_after_the_head_went_out_is_a_400_and_never_reaches_the_target() {
    let (green, blue) = (Recorder::start().await, Backend::start("blue").await);
    let (lb, port) = production(green.addr, blue.addr).await;
    // Each body arrives after the target got the head: the load balancer is streaming by then.
    // A valid chunk first (forwarded), then a fault of each kind: nothing from the fault on
    // reaches the target. (A chunk's data streams within its announced size; the CRLF that
    // must follow it is checked before anything after it goes out.)
    let faults = [
        ("chunk size", "zz\r\n"),
        ("chunk extension", "5;\x01\r\nEVIL!\r\n"),
        ("chunk extension syntax", "5;a b\r\nEVIL!\r\n"),
        ("chunk data end", "5\r\ndata!XXEVIL\r\n"),
        ("trailer", "0\r\nEVIL trailer\r\n\r\n"),
        ("trailer section", "0\r\n\nEVIL: x\r\n\r\n"),
        ("oversized chunk size", "10000000000000000\r\nEVIL"),
    ];
    for (i, (what, fault)) in faults.iter().enumerate() {
        let mut s = TcpStream::connect(port).await.unwrap();
        s.write_all(format!("{GREEN_CHUNKED_HEAD}4\r\nok{i}!\r\n").as_bytes()).await.unwrap();
        let marker = format!("ok{i}!");
        wait_until(
            &format!("{what}: the target got the first chunk"),
            Duration::from_secs(3),
            || {
                let got = green.received().contains(&marker);
                async move { got }
            },
        )
        .await;
        s.write_all(fault.as_bytes()).await.unwrap();
        let answer = read_answer(&mut s).await;
        assert!(answer.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{what}: {answer:?}");
    }
    let m = lb.metrics().await;
    assert_eq!(m.listeners["web"].elb_4xx, faults.len() as u64, "{:?}", m.listeners["web"]);
    assert_eq!(elb_5xx(&m, "green"), 0, "{:?}", m.target_groups["green"].counters);
    let received = green.received();
    assert!(!received.contains("EVIL") && !received.contains("XX"), "{received:?}");
    assert_eq!(received.matches("transfer-encoding: chunked").count(), faults.len());
    // The target never saw a body end: a connection cut mid-body is not a complete request.
    assert!(!received.contains("0\r\n\r\n"), "{received:?}");
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_shorter_than_its_length_or_stalled_is_the_clients_400_or_408() {
    let (green, blue) = (Recorder::start().await, Backend::start("blue").await);
    let (lb, port) = production(green.addr, blue.addr).await;
    let head =
        "POST / HTTP/1.1\r\nHost: shop\r\nX-Deploy-Version: green\r\nContent-Length: 10\r\n\r\n";

    // The client closes its side three bytes into a ten-byte body.
    let mut s = TcpStream::connect(port).await.unwrap();
    s.write_all(format!("{head}abc").as_bytes()).await.unwrap();
    s.shutdown().await.unwrap();
    let answer = read_answer(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{answer:?}");

    // The client stops sending three bytes in: after the idle timeout (1 s) it gets a 408.
    let mut s = TcpStream::connect(port).await.unwrap();
    s.write_all(format!("{head}abc").as_bytes()).await.unwrap();
    let answer = read_answer(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{answer:?}");

    // The client goes away (a reset) mid-body: ALB's 460, no answer to give.
    let mut s = TcpStream::connect(port).await.unwrap();
    s.write_all(format!("{head}abc").as_bytes()).await.unwrap();
    s.set_zero_linger().unwrap();
    drop(s);

    wait_until("three client errors are counted", Duration::from_secs(3), || {
        let lb = &lb;
        async move { lb.metrics().await.listeners["web"].elb_4xx == 3 }
    })
    .await;
    let m = lb.metrics().await;
    assert_eq!(elb_5xx(&m, "green"), 0, "{:?}", m.target_groups["green"].counters);
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_body_that_stalls_is_the_clients_408_and_no_5xx_of_green() {
    use bytes::Bytes;
    use futures_util::StreamExt;
    use http::Request;
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let dir = std::env::temp_dir().join(format!("cutover-proxy-faults-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), cert.key_pair.serialize_pem()).unwrap();
    let tls = TlsConfig {
        certificate_file: dir.join("cert.pem").display().to_string(),
        key_file: dir.join("key.pem").display().to_string(),
        certificates: Vec::new(),
        acme: None,
    };
    let (green, blue) = (Recorder::start().await, Backend::start("blue").await);
    let (lb, port) = production_with(green.addr, blue.addr, Some(tls)).await;

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
    let tcp = TcpStream::connect(port).await.unwrap();
    let tls = connector.connect("localhost".try_into().unwrap(), tcp).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);

    // Three bytes of a declared ten, then nothing: the client's 408 at the idle timeout (1 s).
    let first = futures_util::stream::iter([Ok::<_, std::io::Error>(Frame::data(
        Bytes::from_static(b"abc"),
    ))]);
    let body = StreamBody::new(first.chain(futures_util::stream::pending()));
    let req = Request::post(format!("https://localhost:{}/", port.port()))
        .header("x-deploy-version", "green")
        .header("content-length", "10")
        .body(body)
        .unwrap();
    assert_eq!(sender.send_request(req).await.unwrap().status(), 408);
    let m = lb.metrics().await;
    assert_eq!(m.listeners["web"].elb_4xx, 1, "{:?}", m.listeners["web"]);
    assert_eq!(elb_5xx(&m, "green"), 0, "{:?}", m.target_groups["green"].counters);
    lb.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
