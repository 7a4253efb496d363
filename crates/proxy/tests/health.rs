//! Health checks with ALB semantics, fail-open, and 503 when a group has no targets.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use routes::{HealthCheck, TargetState};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_move_targets_through_alb_states_by_thresholds_and_matcher() {
    let lb = Lb::start(None).await;
    let b = Backend::start("b").await;
    let mut check = hc(50);
    check.healthy_threshold = 3;
    check.unhealthy_threshold = 2;
    check.matcher = vec![(200, 204), (302, 302)];
    let port = free_addr();
    lb.apply(&table(
        1,
        vec![("web", listener(port, forward(&[("g", 1)])))],
        vec![("g", group(&[b.addr], check.clone(), 0))],
    ))
    .await;

    // One passing check is enough from `initial`.
    lb.wait_state("g", b.addr, TargetState::Healthy, WAIT).await;

    // A code outside the matcher: unhealthy only after `unhealthy_threshold` failures.
    let before = b.health_checks.load(Ordering::SeqCst);
    b.health_status.store(503, Ordering::SeqCst);
    lb.wait_state("g", b.addr, TargetState::Unhealthy, WAIT).await;
    let failures = b.health_checks.load(Ordering::SeqCst) - before;
    assert!(failures >= 2, "unhealthy after {failures} failing checks; threshold is 2");
    let t = lb.target_state("g", b.addr).await.unwrap();
    assert_eq!(t.reason.as_deref(), Some("Target.ResponseCodeMismatch"));
    assert!(t.description.unwrap().contains("503"));

    // A code inside the matcher list (302): healthy again only after `healthy_threshold` passes.
    let before = b.health_checks.load(Ordering::SeqCst);
    b.health_status.store(302, Ordering::SeqCst);
    lb.wait_state("g", b.addr, TargetState::Healthy, WAIT).await;
    let passes = b.health_checks.load(Ordering::SeqCst) - before;
    assert!(passes >= 3, "healthy after {passes} passing checks; threshold is 3");

    // Slower than the timeout: Target.Timeout.
    b.health_delay_ms.store(400, Ordering::SeqCst);
    lb.wait_state("g", b.addr, TargetState::Unhealthy, WAIT).await;
    assert_eq!(
        lb.target_state("g", b.addr).await.unwrap().reason.as_deref(),
        Some("Target.Timeout")
    );
    b.health_delay_ms.store(0, Ordering::SeqCst);
    b.health_status.store(200, Ordering::SeqCst);
    lb.wait_state("g", b.addr, TargetState::Healthy, WAIT).await;

    // Nothing listening: Target.FailedHealthChecks.
    let dead = free_addr();
    lb.apply(&table(
        2,
        vec![("web", listener(port, forward(&[("g", 1)])))],
        vec![("g", group(&[b.addr, dead], check, 0))],
    ))
    .await;
    lb.wait_state("g", dead, TargetState::Unhealthy, WAIT).await;
    assert_eq!(
        lb.target_state("g", dead).await.unwrap().reason.as_deref(),
        Some("Target.FailedHealthChecks")
    );
    let m = lb.metrics().await;
    assert_eq!(m.target_groups["g"].healthy_host_count, 1);
    assert_eq!(m.target_groups["g"].unhealthy_host_count, 1);
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_target_is_checked_at_once_and_shows_initial_until_then() {
    let lb = Lb::start(None).await;
    let b = Backend::start("b").await;
    b.health_delay_ms.store(300, Ordering::SeqCst);
    // A 60 s interval: only the immediate first check can make it healthy within the deadline.
    let mut check = hc(60_000);
    check.timeout_ms = 5_000;
    lb.apply(&table(1, vec![], vec![("g", group(&[b.addr], check, 0))])).await;
    let t = lb.target_state("g", b.addr).await.unwrap();
    assert_eq!(t.state, TargetState::Initial);
    assert_eq!(t.reason.as_deref(), Some("Elb.InitialHealthChecking"));
    lb.wait_state("g", b.addr, TargetState::Healthy, Duration::from_secs(5)).await;
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reapplying_a_table_keeps_health_state_and_counters() {
    let lb = Lb::start(None).await;
    let b = Backend::start("b").await;
    let port = free_addr();
    let mut check = hc(60_000);
    check.timeout_ms = 1_000;
    let make = |v| {
        table(
            v,
            vec![("web", listener(port, forward(&[("g", 1)])))],
            vec![("g", group(&[b.addr], check.clone(), 1000))],
        )
    };
    lb.apply(&make(1)).await;
    lb.wait_state("g", b.addr, TargetState::Healthy, WAIT).await;
    for _ in 0..5 {
        let (status, _) = get(&lb.http, &format!("http://{port}/")).await;
        assert_eq!(status, 200);
    }
    let checks = b.health_checks.load(Ordering::SeqCst);
    // Same content again (a restarted control plane), then a new version with the same targets.
    lb.apply(&make(1)).await;
    lb.apply(&make(2)).await;
    let t = lb.target_state("g", b.addr).await.unwrap();
    assert_eq!(t.state, TargetState::Healthy, "re-applying must not reset health");
    assert_eq!(b.health_checks.load(Ordering::SeqCst), checks, "no new check, no new target");
    let m = lb.metrics().await;
    assert_eq!(m.version, 2);
    assert_eq!(m.target_groups["g"].targets[0].counters.requests, 5);
    assert_eq!(m.target_groups["g"].counters.target_2xx, 5);
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_unhealthy_fails_open_and_no_targets_is_503() {
    let lb = Lb::start(None).await;
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    a.health_status.store(500, Ordering::SeqCst);
    b.health_status.store(500, Ordering::SeqCst);
    let port = free_addr();
    lb.apply(&table(
        1,
        vec![("web", listener(port, forward(&[("g", 1)])))],
        vec![("g", group(&[a.addr, b.addr], hc(50), 0)), ("empty", group(&[], hc(50), 0))],
    ))
    .await;
    lb.wait_state("g", a.addr, TargetState::Unhealthy, WAIT).await;
    lb.wait_state("g", b.addr, TargetState::Unhealthy, WAIT).await;
    // Fail open: every registered target still gets traffic.
    for _ in 0..20 {
        let (status, _) = get(&lb.http, &format!("http://{port}/")).await;
        assert_eq!(status, 200);
    }
    assert!(a.hits.load(Ordering::SeqCst) > 0 && b.hits.load(Ordering::SeqCst) > 0);
    assert_eq!(lb.metrics().await.target_groups["g"].unhealthy_routing_requests, 20);

    // One healthy target: only it gets traffic.
    b.health_status.store(200, Ordering::SeqCst);
    lb.wait_state("g", b.addr, TargetState::Healthy, WAIT).await;
    let a_hits = a.hits.load(Ordering::SeqCst);
    for _ in 0..20 {
        let (status, body) = get(&lb.http, &format!("http://{port}/")).await;
        assert_eq!((status, body.as_str()), (200, "b"));
    }
    assert_eq!(a.hits.load(Ordering::SeqCst), a_hits);

    // A group without targets, and a forward whose weights are all zero: 503.
    lb.apply(&table(
        2,
        vec![("web", listener(port, forward(&[("empty", 1)])))],
        vec![("g", group(&[a.addr, b.addr], hc(50), 0)), ("empty", group(&[], hc(50), 0))],
    ))
    .await;
    let (status, _) = get(&lb.http, &format!("http://{port}/")).await;
    assert_eq!(status, 503);
    lb.apply(&table(
        3,
        vec![("web", listener(port, forward(&[("g", 0), ("empty", 0)])))],
        vec![("g", group(&[a.addr, b.addr], hc(50), 0)), ("empty", group(&[], hc(50), 0))],
    ))
    .await;
    let (status, _) = get(&lb.http, &format!("http://{port}/")).await;
    assert_eq!(status, 503);
    let m = lb.metrics().await;
    assert_eq!(m.target_groups["empty"].counters.elb_503, 1);
    assert_eq!(m.listeners["web"].elb_503_no_group, 1);
    lb.shutdown().await;
}

/// `GET /v1/health` with `If-None-Match`: the status, the ETag and the body.
async fn health_since(lb: &Lb, seen: Option<&str>) -> (u16, String, String) {
    let mut req = http::Request::get(format!("http://{}/v1/health", lb.admin));
    if let Some(seen) = seen {
        req = req.header(http::header::IF_NONE_MATCH, seen);
    }
    let resp = lb.http.request(req.body(Default::default()).unwrap()).await.expect("answers");
    let status = resp.status().as_u16();
    let etag = resp.headers()[http::header::ETAG].to_str().unwrap().to_string();
    let body = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
    (status, etag, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_report_is_not_modified_while_its_etag_holds_and_sent_whole_once_a_target_moves()
{
    let lb = Lb::start(None).await;
    let b = Backend::start("b").await;
    let make = |v| table(v, vec![], vec![("g", group(&[b.addr], hc(50), 0))]);
    lb.apply(&make(1)).await;
    lb.wait_state("g", b.addr, TargetState::Healthy, WAIT).await;

    let (status, first, body) = health_since(&lb, None).await;
    assert_eq!(status, 200);
    let report: routes::HealthReport = serde_json::from_str(&body).unwrap();
    assert_eq!(report.target_groups["g"][0].state, TargetState::Healthy);
    // Checks keep passing: the report, and so its tag, stays; the answer has no body.
    let checks = b.health_checks.load(Ordering::SeqCst);
    wait_until("two more checks", WAIT, || async {
        b.health_checks.load(Ordering::SeqCst) >= checks + 2
    })
    .await;
    assert_eq!(health_since(&lb, Some(&first)).await, (304, first.clone(), String::new()));
    assert_eq!(health_since(&lb, Some(&format!("\"other\", {first}"))).await.0, 304);

    // The target turns unhealthy: the next conditional GET sends the whole report, with the
    // tag of what it says, which holds again from then on.
    b.health_status.store(503, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + WAIT;
    let (second, body) = loop {
        let (status, etag, body) = health_since(&lb, Some(&first)).await;
        if status == 200 {
            break (etag, body);
        }
        assert!(tokio::time::Instant::now() < deadline, "still {status} {etag} after {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_ne!(second, first);
    let report: routes::HealthReport = serde_json::from_str(&body).unwrap();
    assert_eq!(report.target_groups["g"][0].state, TargetState::Unhealthy);
    assert_eq!(health_since(&lb, Some(&second)).await.0, 304);

    // A new table version is a new report too, even with the same targets.
    lb.apply(&make(2)).await;
    let (status, third, body) = health_since(&lb, Some(&second)).await;
    assert_eq!(
        (status, serde_json::from_str::<routes::HealthReport>(&body).unwrap().version),
        (200, 2)
    );
    assert_ne!(third, second);
    lb.shutdown().await;
}

/// Conditional GETs with `seen` until the report is sent whole: its tag and what it says.
async fn next_report(lb: &Lb, seen: &str, what: &str) -> (String, routes::HealthReport) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, etag, body) = health_since(lb, Some(seen)).await;
        if status == 200 {
            return (etag, serde_json::from_str(&body).unwrap());
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: still {status} after {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Conditional GETs until one is answered 304, while every report sent meanwhile says what
/// `report` says (a change finishing as a report is built moves the tag once more); the tag
/// that holds.
async fn settled(lb: &Lb, mut seen: String, report: &routes::HealthReport) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, etag, body) = health_since(lb, Some(&seen)).await;
        if status == 304 {
            assert_eq!(etag, seen);
            return seen;
        }
        assert_eq!(serde_json::from_str::<routes::HealthReport>(&body).unwrap(), *report);
        assert!(tokio::time::Instant::now() < deadline, "still {status} {etag} after {WAIT:?}");
        seen = etag;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_etag_holds_while_targets_keep_failing_alike_and_checks_stay_off() {
    let lb = Lb::start(None).await;
    let (failing, healthy) = (Backend::start("failing").await, Backend::start("healthy").await);
    failing.health_status.store(503, Ordering::SeqCst);
    let off = HealthCheck { enabled: false, ..hc(50) };
    lb.apply(&table(
        1,
        vec![],
        vec![
            ("checked", group(&[failing.addr, healthy.addr], hc(50), 0)),
            ("unchecked", group(&[healthy.addr], off, 0)),
        ],
    ))
    .await;
    lb.wait_state("checked", failing.addr, TargetState::Unhealthy, WAIT).await;
    lb.wait_state("checked", healthy.addr, TargetState::Healthy, WAIT).await;
    lb.wait_state("unchecked", healthy.addr, TargetState::Unavailable, WAIT).await;

    let (status, tag, _) = health_since(&lb, None).await;
    assert_eq!(status, 200);
    // Every check fails with the same code, passes, or (checks off) is skipped at the same
    // interval: nothing the report says moves, so neither does its tag.
    let checks = failing.health_checks.load(Ordering::SeqCst);
    wait_until("four more failing checks", WAIT, || async {
        failing.health_checks.load(Ordering::SeqCst) >= checks + 4
    })
    .await;
    assert_eq!(health_since(&lb, Some(&tag)).await, (304, tag.clone(), String::new()));
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_added_draining_or_released_changes_the_health_etag() {
    let lb = Lb::start(None).await;
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let port = free_addr();
    let make = |version, targets: &[std::net::SocketAddr]| {
        let off = HealthCheck { enabled: false, ..hc(50) };
        table(
            version,
            vec![("web", listener(port, forward(&[("g", 1)])))],
            vec![("g", group(targets, off, 2_000))],
        )
    };
    let in_group = |report: &routes::HealthReport| -> Vec<_> {
        report.target_groups["g"].iter().map(|t| (t.addr, t.state, t.in_flight)).collect()
    };
    lb.apply(&make(1, &[a.addr])).await;
    let (_, first, _) = health_since(&lb, None).await;

    lb.apply(&make(2, &[a.addr, b.addr])).await;
    let (second, report) = next_report(&lb, &first, "a target added").await;
    let unavailable = TargetState::Unavailable;
    assert_eq!(in_group(&report), [(a.addr, unavailable, 0), (b.addr, unavailable, 0)]);

    // `a` deregistered while idle is released at once; `b` carries a WebSocket, which keeps it
    // draining (without a request in flight) until the deregistration delay ends.
    lb.apply(&make(3, &[b.addr])).await;
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{port}/ws")).await.unwrap();
    let mut third = second;
    loop {
        // The upgrade's request leaves the count a moment after the handshake is answered.
        let (tag, report) = next_report(&lb, &third, "a released").await;
        third = tag;
        if in_group(&report) == [(b.addr, unavailable, 0)] {
            break;
        }
    }

    // `b` deregistered drains, then is released: the report changes twice under one table
    // version, and no request starts or ends meanwhile.
    lb.apply(&make(4, &[a.addr])).await;
    let (draining, report) = next_report(&lb, &third, "b draining").await;
    let draining_b = (b.addr, TargetState::Draining, 0);
    assert_eq!(in_group(&report), [(a.addr, unavailable, 0), draining_b]);
    let (released, report) = next_report(&lb, &draining, "b released").await;
    assert_eq!((report.version, in_group(&report)), (4, vec![(a.addr, unavailable, 0)]));
    drop(ws);
    settled(&lb, released, &report).await;
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_changes_the_health_etag_when_it_starts_and_when_it_ends() {
    let lb = Lb::start(None).await;
    let b = Backend::start("b").await;
    let port = free_addr();
    let off = HealthCheck { enabled: false, ..hc(50) };
    lb.apply(&table(
        1,
        vec![("web", listener(port, forward(&[("g", 1)])))],
        vec![("g", group(&[b.addr], off, 0))],
    ))
    .await;
    let (status, idle, _) = health_since(&lb, None).await;
    assert_eq!(status, 200);

    let slow = tokio::spawn({
        let http = lb.http.clone();
        async move { get(&http, &format!("http://{port}/slow?ms=1500")).await }
    });
    let (busy, report) = next_report(&lb, &idle, "a request started").await;
    assert_eq!(report.target_groups["g"][0].in_flight, 1);
    assert_eq!(health_since(&lb, Some(&busy)).await.0, 304, "still the one request");

    assert_eq!(slow.await.unwrap().0, 200);
    let (done, report) = next_report(&lb, &busy, "the request ended").await;
    assert_eq!(report.target_groups["g"][0].in_flight, 0);
    // A request that came and went leaves the same report, and so the same tag: the one seen
    // before it is not modified again once the request has ended (its count drops a moment
    // after its answer arrives).
    assert_eq!(get(&lb.http, &format!("http://{port}/")).await.0, 200);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, etag, body) = health_since(&lb, Some(&done)).await;
        if status == 304 {
            assert_eq!(etag, done);
            break;
        }
        let report: routes::HealthReport = serde_json::from_str(&body).unwrap();
        assert!(report.target_groups["g"][0].in_flight <= 1, "{report:?}");
        assert!(tokio::time::Instant::now() < deadline, "still {status} {etag} after {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_data_plane_does_not_take_its_predecessor_s_health_etag() {
    let b = Backend::start("b").await;
    let off = HealthCheck { enabled: false, ..hc(50) };
    let same = table(1, vec![], vec![("g", group(&[b.addr], off, 0))]);
    let (before, after) = (Lb::start(None).await, Lb::start(None).await);
    before.apply(&same).await;
    after.apply(&same).await;
    let (_, tag, _) = health_since(&before, None).await;
    assert_eq!(health_since(&before, Some(&tag)).await.0, 304);
    // The same table and states, yet another process, whose counts started over: it cannot
    // know the report it is asked about, so it sends its own.
    let (status, other, _) = health_since(&after, Some(&tag)).await;
    assert_eq!(status, 200);
    assert_ne!(other, tag);
    before.shutdown().await;
    after.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_without_per_target_figures_keep_every_group_s_and_a_bad_query_is_refused() {
    let lb = Lb::start(None).await;
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    lb.apply(&table(1, vec![], vec![("g", group(&[a.addr, b.addr], hc(50), 0))])).await;
    lb.wait_state("g", a.addr, TargetState::Healthy, WAIT).await;
    lb.wait_state("g", b.addr, TargetState::Healthy, WAIT).await;

    let whole = lb.metrics().await;
    assert_eq!(whole.target_groups["g"].targets.len(), 2);
    let groups_only: routes::MetricsSnapshot = lb.get_json("/v1/metrics?per_target=false").await;
    assert!(groups_only.target_groups["g"].targets.is_empty());
    assert_eq!(groups_only.target_groups["g"].healthy_host_count, 2);
    let again: routes::MetricsSnapshot = lb.get_json("/v1/metrics?per_target=true").await;
    assert_eq!(again.target_groups["g"].targets.len(), 2);

    let (status, body) = get(&lb.http, &format!("http://{}/v1/metrics?targets=0", lb.admin)).await;
    assert_eq!(status, 400);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["error"],
        "unknown query `targets=0`; use per_target=false or per_target=true"
    );
    lb.shutdown().await;
}
