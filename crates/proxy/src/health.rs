//! Active health checks with ALB's semantics: one task per target, first check at once, then one
//! per interval; each result moves the target's state by the group's thresholds.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use routes::HealthCheck;
use tokio::net::TcpStream;

use crate::target::{GroupRt, Outcome, TargetRt};

/// Starts the checks of one target; the task runs until the target is released.
pub fn spawn(group: Arc<GroupRt>, target: Arc<TargetRt>) -> tokio::task::AbortHandle {
    let t = target.clone();
    let task = tokio::spawn(async move {
        loop {
            let cfg = group.cfg.load_full();
            let hc = &cfg.health_check;
            if !hc.enabled {
                if t.disable_checks() {
                    group.recompute();
                }
                tokio::time::sleep(Duration::from_millis(hc.interval_ms.clamp(10, 1000))).await;
                continue;
            }
            let outcome = probe(t.addr, hc).await;
            if t.record(outcome, hc) {
                group.recompute();
            }
            tokio::time::sleep(Duration::from_millis(hc.interval_ms)).await;
        }
    });
    let handle = task.abort_handle();
    target.set_health_task(handle.clone());
    handle
}

/// One HTTP GET to the target's health-check port and path.
pub async fn probe(addr: SocketAddr, hc: &HealthCheck) -> Outcome {
    let addr = SocketAddr::new(addr.ip(), hc.port.unwrap_or(addr.port()));
    let check = async {
        let stream =
            TcpStream::connect(addr).await.map_err(|e| format!("connect to {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
                .await
                .map_err(|e| format!("{addr}: {e}"))?;
        let conn = tokio::spawn(conn);
        let request = Request::get(hc.path.as_str())
            .header(header::HOST, addr.to_string())
            .header(header::USER_AGENT, "cutover-health-checker/1.0")
            .body(Empty::new())
            .map_err(|e| format!("health-check path `{}`: {e}", hc.path))?;
        let response = sender.send_request(request).await;
        conn.abort();
        response.map(|r| r.status().as_u16()).map_err(|e| format!("{addr}: {e}"))
    };
    match tokio::time::timeout(Duration::from_millis(hc.timeout_ms), check).await {
        Err(_) => Outcome::Timeout,
        Ok(Err(why)) => Outcome::Failed(why),
        Ok(Ok(code)) if hc.matches(code) => Outcome::Pass,
        Ok(Ok(code)) => Outcome::Mismatch(code),
    }
}
