//! `POST /v1/routes/validate`: the checks of a `PUT /v1/routes` (the table is valid, its
//! certificates load, its new listeners' ports can be bound) without applying or persisting
//! anything. The control plane asks it before it stores a table, and pushes the table only once
//! stored.

mod common;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::{BodyExt, Full};
use routes::*;

async fn validate(lb: &Lb, table: &RouteTable) -> (u16, serde_json::Value) {
    let req = Request::post(format!("http://{}/v1/routes/validate", lb.admin))
        .body(Full::new(Bytes::from(serde_json::to_vec(table).unwrap())))
        .unwrap();
    let resp = lb.http.request(req).await.expect("admin answers");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
}

fn no_checks() -> HealthCheck {
    HealthCheck { enabled: false, ..hc(1000) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validating_a_table_refuses_what_a_put_refuses_and_applies_nothing() {
    let dir = std::env::temp_dir().join(format!("cutover-proxy-validate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let state_file = dir.join("routes.json");
    let not_a_certificate = dir.join("cert.pem");
    std::fs::write(&not_a_certificate, "not a certificate\n").unwrap();
    let lb = Lb::start(Some(state_file.clone())).await;
    let b = Backend::start("b").await;
    let web = free_addr();
    let served = table(
        1,
        vec![("web", listener(web, forward(&[("g", 1)])))],
        vec![("g", group(&[b.addr], no_checks(), 0))],
    );
    lb.apply(&served).await;
    let persisted = std::fs::read(&state_file).unwrap();

    // A valid table with a new listener: accepted, yet neither served nor persisted, and its
    // port is free again at once.
    let extra = free_addr();
    let mut valid = served.clone();
    valid.version = 2;
    valid.listeners.insert("extra".into(), listener(extra, forward(&[("g", 1)])));
    let (status, body) = validate(&lb, &valid).await;
    assert_eq!((status, body), (200, serde_json::json!({ "valid": true })));
    assert!(tokio::net::TcpStream::connect(extra).await.is_err(), "validation left {extra} open");
    drop(std::net::TcpListener::bind(extra).expect("the validated port is free again"));

    let mut bad_certificate = valid.clone();
    bad_certificate.listeners.get_mut("extra").unwrap().tls = Some(TlsConfig {
        certificate_file: not_a_certificate.display().to_string(),
        key_file: not_a_certificate.display().to_string(),
        certificates: Vec::new(),
        acme: None,
    });
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut port_in_use = valid.clone();
    port_in_use.listeners.get_mut("extra").unwrap().bind = taken.local_addr().unwrap();
    let mut unknown_group = valid.clone();
    unknown_group.listeners.get_mut("extra").unwrap().action = forward(&[("nope", 1)]);
    for (refused, status, needle) in [
        (bad_certificate, 400, "holds no PEM certificate"),
        (port_in_use, 409, "listener `extra`: cannot listen on"),
        (unknown_group, 400, "nope"),
    ] {
        let (got, body) = validate(&lb, &refused).await;
        assert_eq!(got, status, "{body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains(needle), "`{needle}` not in {error}");
    }
    assert!(
        validate(&lb, &valid).await.0 == 200,
        "a refused table left something behind that fails the next validation"
    );

    let now: ServedRoutes = lb.get_json("/v1/routes").await;
    assert_eq!((now.version, now.table), (1, served));
    assert_eq!(std::fs::read(&state_file).unwrap(), persisted, "validation persisted a table");
    let (status, body) = get(&lb.http, &format!("http://{web}/")).await;
    assert_eq!((status, body.as_str()), (200, "b"), "the served table keeps serving");
    lb.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// One table holds every load balancer of an installation, each with ALB's quotas of its own
/// (checked in cutover.yaml): so the data plane serves what many load balancers hold together,
/// 1,000 target groups of 10 targets here, up to what an AWS region holds, and refuses beyond.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_of_many_load_balancers_is_served_up_to_a_region_s_quotas() {
    let lb = Lb::start(None).await;
    let b = Backend::start("last").await;
    let web = free_addr();
    let unused: Vec<std::net::SocketAddr> =
        (0..10).map(|i| format!("127.0.0.1:{}", 20_000 + i).parse().unwrap()).collect();
    let names: Vec<String> = (0..1000).map(|i| format!("g{i}")).collect();
    let mut groups: Vec<(&str, TargetGroup)> =
        names.iter().map(|n| (n.as_str(), group(&unused, no_checks(), 0))).collect();
    groups.push(("served", group(&[b.addr], no_checks(), 0)));
    let many = table(1, vec![("web", listener(web, forward(&[("served", 1)])))], groups);
    lb.apply(&many).await;
    assert_eq!(get(&client(), &format!("http://{web}/")).await, (200, "last".to_string()));

    let mut beyond = many.clone();
    beyond.version = 2;
    for i in 1000..3000 {
        beyond.target_groups.insert(format!("g{i}"), group(&unused, no_checks(), 0));
    }
    let (status, body) = validate(&lb, &beyond).await;
    assert_eq!(
        (status, &body["error"]),
        (400, &serde_json::json!("3001 target groups; at most 3000"))
    );
}
