//! Every answer the load balancer gives by itself feeds exactly the metric the table in
//! `proxy::metrics` names, and nothing else: a client's faults are the listener's `elb_4xx`,
//! only a target group's own failures are its ELB 5xx.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use routes::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Every counter of the snapshot that says how a request was answered, by a flat name.
fn answer_counters(m: &MetricsSnapshot) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (name, l) in &m.listeners {
        out.insert(format!("{name}.fixed_responses"), l.fixed_responses);
        out.insert(format!("{name}.redirects"), l.redirects);
        out.insert(format!("{name}.elb_4xx"), l.elb_4xx);
        out.insert(format!("{name}.elb_503_no_group"), l.elb_503_no_group);
    }
    for (name, g) in &m.target_groups {
        let c = &g.counters;
        for (what, v) in [
            ("target_1xx", c.target_1xx),
            ("target_2xx", c.target_2xx),
            ("target_3xx", c.target_3xx),
            ("target_4xx", c.target_4xx),
            ("target_5xx", c.target_5xx),
            ("elb_502", c.elb_502),
            ("elb_503", c.elb_503),
            ("elb_504", c.elb_504),
            ("target_connection_errors", c.target_connection_errors),
        ] {
            out.insert(format!("{name}.{what}"), v);
        }
    }
    out
}

/// A target that answers every request head with a response head whose length is not a
/// number.
async fn garbage_target() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_of_the_load_balancer_feeds_the_metric_its_table_names() {
    let lb = Lb::start(None).await;
    let b = Backend::start("b").await;
    let garbage = garbage_target().await;
    let addrs: BTreeMap<&str, SocketAddr> =
        ["web", "fixed", "redirect", "zero", "empty", "dead", "garbage"]
            .into_iter()
            .map(|name| (name, free_addr()))
            .collect();
    let checks = HealthCheck { enabled: false, ..hc(1000) };
    let mut web = listener(addrs["web"], forward(&[("g", 1)]));
    web.idle_timeout_ms = Some(500);
    let fixed = Action::FixedResponse(FixedResponse {
        status_code: 200,
        content_type: None,
        body: "fixed".into(),
    });
    let redirect = Action::Redirect(Redirect {
        protocol: None,
        host: None,
        port: None,
        path: Some("/elsewhere".into()),
        query: None,
        status_code: 302,
    });
    lb.apply(&table(
        1,
        vec![
            ("web", web),
            ("fixed", listener(addrs["fixed"], fixed)),
            ("redirect", listener(addrs["redirect"], redirect)),
            ("zero", listener(addrs["zero"], forward(&[("g", 0)]))),
            ("empty", listener(addrs["empty"], forward(&[("nobody", 1)]))),
            ("dead", listener(addrs["dead"], forward(&[("refusing", 1)]))),
            ("garbage", listener(addrs["garbage"], forward(&[("broken", 1)]))),
        ],
        vec![
            ("g", group(&[b.addr], checks.clone(), 0)),
            ("nobody", group(&[], checks.clone(), 0)),
            ("refusing", group(&[free_addr()], checks.clone(), 0)),
            ("broken", group(&[garbage], checks, 0)),
        ],
    ))
    .await;

    let long_line = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "x".repeat(17 * 1024));
    let big_head = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n", "x".repeat(70_000));
    let get = "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let cases: [(&str, &str, &str, &[&str]); 14] = [
        ("web", "GET / HTTP/1.1\r\n\r\n", "400", &["web.elb_4xx"]),
        ("web", "CONNECT a:1 HTTP/1.1\r\nHost: a:1\r\n\r\n", "405", &["web.elb_4xx"]),
        ("web", &long_line, "414", &["web.elb_4xx"]),
        ("web", &big_head, "431", &["web.elb_4xx"]),
        (
            "web",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            "400",
            &["web.elb_4xx"],
        ),
        (
            "web",
            "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc",
            "408",
            &["web.elb_4xx"],
        ),
        ("web", "GET /slow?ms=2000 HTTP/1.1\r\nHost: a\r\n\r\n", "504", &["g.elb_504"]),
        ("web", get, "200", &["g.target_2xx"]),
        ("fixed", get, "200", &["fixed.fixed_responses"]),
        ("redirect", get, "302", &["redirect.redirects"]),
        ("zero", get, "503", &["zero.elb_503_no_group"]),
        ("empty", get, "503", &["nobody.elb_503"]),
        ("dead", get, "502", &["refusing.elb_502", "refusing.target_connection_errors"]),
        ("garbage", get, "502", &["broken.elb_502"]),
    ];
    for (at, raw, status, fed) in cases {
        let before = answer_counters(&lb.metrics().await);
        let answer = raw_exchange(addrs[at], raw.as_bytes()).await;
        let what = format!("{at}: {:?}", &raw[..raw.len().min(40)]);
        assert!(answer.starts_with(&format!("HTTP/1.1 {status} ")), "{what}: {answer:?}");
        // Counters move when the request ends, which may be just after the answer went out.
        wait_until(&format!("{what} is counted"), Duration::from_secs(3), || {
            let (lb, before) = (&lb, &before);
            async move { answer_counters(&lb.metrics().await) != *before }
        })
        .await;
        let after = answer_counters(&lb.metrics().await);
        let changed: Vec<(String, u64)> = after
            .iter()
            .filter(|(k, v)| before.get(*k) != Some(v))
            .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
            .collect();
        let expected: Vec<(String, u64)> = fed.iter().map(|k| (k.to_string(), 1)).collect();
        assert_eq!(changed, expected, "{what}");
    }
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_resets_mid_body_is_a_client_error_with_no_answer() {
    let lb = Lb::start(None).await;
    let b = Backend::start("b").await;
    let port = free_addr();
    let check = HealthCheck { enabled: false, ..hc(1000) };
    lb.apply(&table(
        1,
        vec![("web", listener(port, forward(&[("g", 1)])))],
        vec![("g", group(&[b.addr], check, 0))],
    ))
    .await;
    let mut s = TcpStream::connect(port).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc").await.unwrap();
    s.set_zero_linger().unwrap();
    drop(s);
    wait_until("the reset is counted", Duration::from_secs(3), || {
        let lb = &lb;
        async move { lb.metrics().await.listeners["web"].elb_4xx == 1 }
    })
    .await;
    let m = lb.metrics().await;
    let c = &m.target_groups["g"].counters;
    assert_eq!((c.elb_502, c.elb_503, c.elb_504, c.target_5xx), (0, 0, 0, 0), "{c:?}");
    lb.shutdown().await;
}
