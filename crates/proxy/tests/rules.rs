//! Listener rules over real sockets: each request gets the action of the lowest-priority rule
//! that takes it (HTTP/1 and HTTP/2 alike), the default action otherwise; a table with a rule ALB
//! would refuse is refused whole.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use routes::*;

fn no_checks() -> HealthCheck {
    HealthCheck { enabled: false, ..hc(1000) }
}

fn rule(priority: u32, conditions: Vec<Condition>, action: Action) -> Rule {
    Rule { priority, conditions, action }
}

fn hosts(v: &[&str]) -> Condition {
    Condition::HostHeader { values: v.iter().map(|s| s.to_string()).collect() }
}

fn paths(v: &[&str]) -> Condition {
    Condition::PathPattern { values: v.iter().map(|s| s.to_string()).collect() }
}

fn fixed(status_code: u16, body: &str) -> Action {
    Action::FixedResponse(FixedResponse {
        status_code,
        content_type: Some("text/plain".into()),
        body: body.into(),
    })
}

/// `api.example.com` and `*.shop.example.com` go to their own groups, `/admin/*` is refused
/// before either, `/old/*` redirects with placeholders, and anything else reaches `web`.
fn rules_table(
    version: u64,
    bind: std::net::SocketAddr,
    backends: [&Backend; 3],
    tls: Option<TlsConfig>,
) -> RouteTable {
    let mut l = listener(bind, forward(&[("web", 1)]));
    l.tls = tls;
    l.rules = vec![
        rule(20, vec![hosts(&["api.example.com"])], forward(&[("api", 1)])),
        rule(30, vec![hosts(&["*.shop.example.com"])], forward(&[("shop", 1)])),
        rule(5, vec![paths(&["/admin/*"])], fixed(403, "no admin here")),
        rule(
            6,
            vec![
                paths(&["/old/*"]),
                Condition::HttpRequestMethod { values: vec!["GET".into(), "HEAD".into()] },
            ],
            Action::Redirect(Redirect {
                protocol: None,
                host: Some("new.#{host}".into()),
                port: None,
                path: Some("/v2/#{path}".into()),
                query: Some("#{query}&moved=1".into()),
                status_code: 301,
            }),
        ),
        rule(
            7,
            vec![Condition::HttpHeader { name: "X-Canary".into(), values: vec!["y*".into()] }],
            forward(&[("shop", 1)]),
        ),
    ];
    let [web, api, shop] = backends;
    table(
        version,
        vec![("web", l)],
        vec![
            ("web", group(&[web.addr], no_checks(), 0)),
            ("api", group(&[api.addr], no_checks(), 0)),
            ("shop", group(&[shop.addr], no_checks(), 0)),
        ],
    )
}

async fn send(
    client: &HttpClient,
    bind: std::net::SocketAddr,
    method: &str,
    host: &str,
    target: &str,
    header: Option<(&str, &str)>,
) -> (u16, String, Option<String>) {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{bind}{target}"))
        .header("host", host);
    if let Some((n, v)) = header {
        req = req.header(n, v);
    }
    let resp = client.request(req.body(Full::new(Bytes::new())).unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    let location = resp.headers().get("location").map(|l| l.to_str().unwrap().to_string());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned(), location)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_gets_the_action_of_the_first_rule_that_takes_it_over_http1() {
    let lb = Lb::start(None).await;
    let (web, api, shop) =
        (Backend::start("web").await, Backend::start("api").await, Backend::start("shop").await);
    let bind = free_addr();
    lb.apply(&rules_table(1, bind, [&web, &api, &shop], None)).await;

    // method, host, target, an extra header; the status and body expected.
    type Case<'a> = (&'a str, &'a str, &'a str, Option<(&'a str, &'a str)>, u16, &'a str);
    let cases: &[Case] = &[
        ("GET", "api.example.com", "/users", None, 200, "api"),
        ("GET", "API.Example.COM:8443", "/users", None, 200, "api"),
        ("GET", "eu.shop.example.com", "/cart", None, 200, "shop"),
        ("GET", "shop.example.com", "/cart", None, 200, "web"),
        ("GET", "www.example.com", "/", None, 200, "web"),
        // Priority 5 comes before the host rules.
        ("GET", "api.example.com", "/admin/users", None, 403, "no admin here"),
        ("GET", "www.example.com", "/Admin/users", None, 200, "web"),
        ("GET", "www.example.com", "/", Some(("x-canary", "YES")), 200, "shop"),
        ("GET", "www.example.com", "/", Some(("x-canary", "no")), 200, "web"),
        // The method condition ANDs with the path.
        ("POST", "www.example.com", "/old/page", None, 200, "web"),
    ];
    for (method, host, target, header, status, body) in cases {
        let got = send(&lb.http, bind, method, host, target, *header).await;
        assert_eq!((got.0, got.1.as_str()), (*status, *body), "{method} {host}{target} {header:?}");
    }
    let (status, _, location) =
        send(&lb.http, bind, "GET", "example.com:9", "/old/a/b?x=1", None).await;
    assert_eq!(status, 301);
    assert_eq!(
        location.as_deref(),
        Some(format!("http://new.example.com:{}/v2/old/a/b?x=1&moved=1", bind.port()).as_str())
    );
    let m = lb.metrics().await;
    assert_eq!(m.target_groups["api"].counters.requests, 2);
    assert_eq!(m.listeners["web"].fixed_responses, 1);
    assert_eq!(m.listeners["web"].redirects, 1);
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_requests_are_routed_by_their_authority() {
    let dir = std::env::temp_dir().join(format!("cutover-proxy-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["api.example.com".into()]).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), cert.key_pair.serialize_pem()).unwrap();
    let lb = Lb::start(None).await;
    let (web, api, shop) =
        (Backend::start("web").await, Backend::start("api").await, Backend::start("shop").await);
    let bind = free_addr();
    let tls = TlsConfig {
        certificate_file: dir.join("cert.pem").display().to_string(),
        key_file: dir.join("key.pem").display().to_string(),
        certificates: Vec::new(),
        acme: None,
    };
    lb.apply(&rules_table(1, bind, [&web, &api, &shop], Some(tls))).await;

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
        .connect("api.example.com".try_into().unwrap(), tcp)
        .await
        .expect("TLS handshake");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    for (authority, path, expected) in [
        ("api.example.com", "/users", "api"),
        ("www.example.com", "/users", "web"),
        ("api.example.com", "/admin/x", "no admin here"),
    ] {
        let req = Request::get(format!("https://{authority}:{}{path}", bind.port()))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
            .await
            .unwrap()
            .unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(String::from_utf8_lossy(&body), expected, "{authority}{path} over h2");
    }
    lb.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_with_a_rule_alb_would_refuse_is_refused_whole() {
    let lb = Lb::start(None).await;
    let (web, api, shop) =
        (Backend::start("web").await, Backend::start("api").await, Backend::start("shop").await);
    let bind = free_addr();
    lb.apply(&rules_table(1, bind, [&web, &api, &shop], None)).await;

    let mut twice = rules_table(2, bind, [&web, &api, &shop], None);
    let l = twice.listeners.get_mut("web").unwrap();
    l.rules[1].priority = 20;
    let (status, body) = lb.put(&twice).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"],
        "listener `web`: two rules have priority 20; priorities are unique per listener"
    );

    let mut unknown = rules_table(2, bind, [&web, &api, &shop], None);
    unknown.listeners.get_mut("web").unwrap().rules[0].action = forward(&[("nope", 1)]);
    let (status, body) = lb.put(&unknown).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"],
        "listener `web` rule 20: forward references target group `nope`, which is not in target_groups"
    );

    let mut wide = rules_table(2, bind, [&web, &api, &shop], None);
    wide.listeners.get_mut("web").unwrap().rules[0].conditions =
        vec![hosts(&["*.example.com", "example.c0m"])];
    let (status, body) = lb.put(&wide).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"],
        "listener `web` rule 20: host-header value \"example.c0m\" must end in letters after its last `.` (ports are ignored: leave them out)"
    );
    // Nothing of the refused tables is served.
    assert_eq!(send(&lb.http, bind, "GET", "api.example.com", "/", None).await.1, "api");
    lb.shutdown().await;
}
