//! Hedged connects and passive ejection, over real loopback sockets: a target whose connections
//! hang (a listener whose accept queue is full drops further SYNs, as a dead machine loses them)
//! or are refused costs one request a 250 ms hedge, or nothing, and is then left out of this
//! load balancer's picks until a health check passes or the ejection times out.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use routes::*;
use tokio::net::{TcpSocket, TcpStream};

/// Targets answered at once: no health check to wait for.
fn unchecked() -> HealthCheck {
    HealthCheck { enabled: false, ..hc(100) }
}

/// A listener that never accepts, its accept queue filled: connections to it hang unanswered
/// (Linux drops a SYN to a full queue, and the client resends it after 1 s, 3 s…).
struct Hanging {
    addr: SocketAddr,
    _listener: tokio::net::TcpListener,
    _queued: Vec<TcpStream>,
}

impl Hanging {
    async fn start() -> Hanging {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(0).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut queued = Vec::new();
        // Connect until one hangs: the queue holds a connection or two.
        for _ in 0..16 {
            match tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => queued.push(stream),
                Ok(Err(e)) => panic!("connecting to fill {addr}'s accept queue: {e}"),
                Err(_hung) => return Hanging { addr, _listener: listener, _queued: queued },
            }
        }
        panic!("{addr}'s accept queue never filled: {} connections queued", queued.len());
    }
}

fn one_group_table(
    bind: SocketAddr,
    targets: &[SocketAddr],
    health_check: HealthCheck,
) -> RouteTable {
    table(
        1,
        vec![("web", listener(bind, forward(&[("tg", 1)])))],
        vec![("tg", group(targets, health_check, 0))],
    )
}

fn group_metrics(snapshot: &MetricsSnapshot) -> TargetGroupMetrics {
    snapshot.target_groups["tg"].clone()
}

fn target_metrics(group: &TargetGroupMetrics, addr: SocketAddr) -> TargetMetrics {
    group.targets.iter().find(|t| t.addr == addr).cloned().expect("the target's metrics")
}

#[tokio::test]
async fn a_target_whose_connects_hang_is_hedged_once_then_ejected() {
    let hanging = Hanging::start().await;
    let healthy = Backend::start("healthy").await;
    let lb = Lb::start(None).await;
    let bind = free_addr();
    lb.apply(&one_group_table(bind, &[hanging.addr, healthy.addr], unchecked())).await;

    let started = Instant::now();
    for i in 0..20 {
        let (status, body) = get(&lb.http, &format!("http://{bind}/req{i}")).await;
        assert_eq!((status, body.as_str()), (200, "healthy"), "request {i}");
    }
    let took = started.elapsed();

    let g = group_metrics(&lb.metrics().await);
    let h = target_metrics(&g, hanging.addr);
    assert_eq!(
        g.hedged_connects, h.counters.requests,
        "every try at the hanging target was hedged"
    );
    assert_eq!(g.hedges_won, g.hedged_connects, "and the healthy target won each hedge");
    assert_eq!(g.passive_ejections, h.counters.requests, "each try ejected it");
    assert_eq!(h.counters.target_connection_errors, h.counters.requests);
    assert_eq!(
        h.counters.elb_502 + h.counters.elb_504 + g.counters.elb_502 + g.counters.elb_504,
        0
    );
    if took < Duration::from_secs(10) {
        // Within one ejection, the requests after the first try never went to it again.
        assert_eq!(h.counters.requests, 1, "tried once in {took:?}: {g:?}");
    }
    assert_eq!(healthy.hits.load(std::sync::atomic::Ordering::SeqCst), 20);
    // Local to this load balancer: the health it reports is the health checks' alone.
    let state = lb.target_state("tg", hanging.addr).await.expect("still registered").state;
    assert_eq!(state, TargetState::Unavailable);
    lb.shutdown().await;
}

#[tokio::test]
async fn a_target_that_refuses_connections_is_ejected_after_one_refusal() {
    let refusing = free_addr();
    let healthy = Backend::start("healthy").await;
    let lb = Lb::start(None).await;
    let bind = free_addr();
    lb.apply(&one_group_table(bind, &[refusing, healthy.addr], unchecked())).await;

    let started = Instant::now();
    for i in 0..20 {
        let (status, body) = get(&lb.http, &format!("http://{bind}/req{i}")).await;
        assert_eq!((status, body.as_str()), (200, "healthy"), "request {i}");
    }
    let took = started.elapsed();

    let g = group_metrics(&lb.metrics().await);
    let r = target_metrics(&g, refusing);
    assert_eq!(g.passive_ejections, r.counters.requests, "each refusal ejected it");
    assert_eq!(r.counters.target_connection_errors, r.counters.requests);
    assert_eq!(g.hedged_connects, 0, "a refusal is immediate: nothing to hedge");
    if took < Duration::from_secs(10) {
        assert_eq!(r.counters.requests, 1, "tried once in {took:?}: {g:?}");
    }
    assert_eq!(healthy.hits.load(std::sync::atomic::Ordering::SeqCst), 20);
    lb.shutdown().await;
}

#[tokio::test]
async fn an_ejection_ends_when_the_target_passes_a_health_check() {
    // The target's traffic port refuses, but its health checks (on another port) pass every
    // 100 ms: each passing check ends its ejection, so it is tried (and ejected) again long
    // before an ejection would time out (10 s).
    let checked = Backend::start("checks").await;
    let refusing = free_addr();
    let healthy = Backend::start("healthy").await;
    let lb = Lb::start(None).await;
    let bind = free_addr();
    let mut tg = group(&[refusing, healthy.addr], hc(100), 0);
    tg.health_check.port = Some(checked.addr.port());
    tg.health_check.healthy_threshold = 2;
    let t = table(1, vec![("web", listener(bind, forward(&[("tg", 1)])))], vec![("tg", tg)]);
    lb.apply(&t).await;
    lb.wait_state("tg", refusing, TargetState::Healthy, Duration::from_secs(30)).await;
    lb.wait_state("tg", healthy.addr, TargetState::Healthy, Duration::from_secs(30)).await;

    let started = Instant::now();
    let mut answered = 0;
    let mut last = None;
    while started.elapsed() < Duration::from_secs(8) {
        let (status, body) = get(&lb.http, &format!("http://{bind}/req{answered}")).await;
        assert_eq!((status, body.as_str()), (200, "healthy"), "request {answered}");
        answered += 1;
        let g = group_metrics(&lb.metrics().await);
        if g.passive_ejections >= 3 {
            return lb.shutdown().await;
        }
        last = Some(g);
    }
    panic!(
        "the refusing target was not ejected 3 times within 8 s of {answered} requests: {last:?}"
    );
}
