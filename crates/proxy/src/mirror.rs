//! Shadow traffic: a copy of a request goes to a forward's mirror group beside the request
//! itself (see [`routes::Mirror`]), and what the mirror group answers is measured and thrown
//! away.
//!
//! The copy never stands in the client's way: it is sent from a task of its own on the same
//! worker, after the request was kept whole for it (as for a retry), and the client's answer
//! waits for nothing of it. At most `max_in_flight` copies are in flight to a group; one more is
//! not sent (counted as dropped), so a mirror group that hangs holds a bounded number of
//! connections and buffers, and one that is down costs a failed connect per copy, on the side.
//! Each copy ends within the listener's idle timeout.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use tokio::sync::oneshot;

use crate::metrics as m;
use crate::state::CompiledMirror;
use crate::target::{GroupRt, InFlight};
use crate::upstream::{self, Outgoing, UpstreamBody};

/// The header a copy carries, so that the mirror group's application can tell a copy from a
/// customer's request (Istio marks copies by a `-shadow` suffix on the Host, which breaks
/// virtual hosts; a header breaks nothing).
const SHADOW_HEADER: &[u8] = b"x-cutover-shadow: 1\r\n";

/// The most of a copy's answer body read to keep its connection; a longer one closes it.
const DRAIN_MAX: usize = 1024 * 1024;

/// A request its forward's mirror takes: whether its body can be kept is the caller's to tell.
pub struct Mirrorable {
    to: Arc<GroupRt>,
    /// The largest body copied.
    pub max_body_bytes: u64,
    max_in_flight: u64,
}

impl Mirrorable {
    pub fn of(mirror: &CompiledMirror) -> Mirrorable {
        Mirrorable {
            to: mirror.to.clone(),
            max_body_bytes: mirror.max_body_bytes,
            max_in_flight: mirror.max_in_flight,
        }
    }
}

/// Where the request path tells a copy in flight the status the client got, for the mismatch
/// count; dropping it (the client went away) counts no mismatch.
pub struct ClientStatus(oneshot::Sender<StatusCode>);

impl ClientStatus {
    pub fn tell(self, status: StatusCode) {
        // The copy may have timed out already: nothing left to compare.
        let _ = self.0.send(status);
    }
}

/// A copy in flight, counted against its group's `max_in_flight` until dropped.
struct Slot(Arc<GroupRt>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.mirrors_in_flight.fetch_sub(1, Relaxed);
    }
}

/// Sends a copy of `request` (a target's encoded head, ending in its blank line at `head_len`,
/// then the whole body) to the mirror group, unless `max_in_flight` copies are in flight there
/// already (then counted as dropped, and `None`). The copy gives up after `timeout`.
pub fn send(
    mirror: Mirrorable,
    request: &[u8],
    head_len: usize,
    head_method: bool,
    timeout: Duration,
    worker: usize,
) -> Option<ClientStatus> {
    let group = mirror.to;
    let before = group.mirrors_in_flight.fetch_add(1, Relaxed);
    let slot = Slot(group.clone());
    if before >= mirror.max_in_flight {
        group.mirrored.inc(m::MIRROR_DROPPED);
        return None;
    }
    let copy = with_shadow_header(request, head_len);
    let (tell, told) = oneshot::channel();
    tokio::spawn(async move {
        let _slot = slot;
        let counters = &group.mirrored;
        counters.inc(m::REQUESTS);
        let started = Instant::now();
        let exchanged = tokio::time::timeout(timeout, exchange(&group, copy, head_method, worker));
        let status = match exchanged.await {
            Ok(Ok((guard, mut answer))) => {
                let status = answer.head.status();
                counters.observe_us(started.elapsed().as_micros() as u64);
                counters.status(status.as_u16());
                if let Ok(true) = tokio::time::timeout(timeout, drain(&mut answer.body)).await
                    && let Some(conn) = answer.body.take_reusable()
                {
                    guard.target.give_back(worker, conn);
                }
                status
            }
            Ok(Err(lb_status)) => {
                counters.inc(elb_field(lb_status));
                lb_status
            }
            Err(_elapsed) => {
                counters.inc(m::ELB504);
                StatusCode::GATEWAY_TIMEOUT
            }
        };
        if let Ok(client) = told.await
            && status_class(client) != status_class(status)
        {
            counters.inc(m::MIRROR_MISMATCHES);
        }
    });
    Some(ClientStatus(tell))
}

/// The copy: the request with [`SHADOW_HEADER`] as its head's last field.
fn with_shadow_header(request: &[u8], head_len: usize) -> Vec<u8> {
    debug_assert!(request[..head_len].ends_with(b"\r\n\r\n"), "a head ends in a blank line");
    let fields_end = head_len - 2;
    let mut copy = Vec::with_capacity(request.len() + SHADOW_HEADER.len());
    copy.extend_from_slice(&request[..fields_end]);
    copy.extend_from_slice(SHADOW_HEADER);
    copy.extend_from_slice(&request[fields_end..]);
    copy
}

/// Sends the copy to a target of `group` and reads its answer's head; `Err` with the status the
/// load balancer would have answered for it: 503 without a target, 502 when the connection
/// failed or the target broke the protocol.
async fn exchange(
    group: &GroupRt,
    copy: Vec<u8>,
    head_method: bool,
    worker: usize,
) -> Result<(InFlight, upstream::Answer), StatusCode> {
    let Some((target, _fail_open)) = group.pick() else {
        return Err(StatusCode::SERVICE_UNAVAILABLE);
    };
    let guard = InFlight::new(target);
    let t = &guard.target;
    let (mut conn, reused) = upstream::checkout_or_connect(t, worker).await.map_err(|e| {
        tracing::debug!(target = %t.addr, "mirror: {e}");
        group.mirrored.inc(m::CONN_ERRORS);
        StatusCode::BAD_GATEWAY
    })?;
    conn.head_buf().extend_from_slice(&copy);
    let none = Outgoing::<http_body_util::Empty<Bytes>>::Empty;
    match upstream::send_encoded(t, conn, reused, head_method, none).await {
        Ok(answer) => Ok((guard, answer)),
        Err(e) => {
            tracing::debug!(target = %t.addr, "mirror: {e}");
            Err(StatusCode::BAD_GATEWAY)
        }
    }
}

/// Reads an answer's body to its end, up to [`DRAIN_MAX`]; whether it ended.
async fn drain(body: &mut UpstreamBody) -> bool {
    let mut read = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                read += frame.data_ref().map_or(0, Bytes::len);
                if read > DRAIN_MAX {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
    true
}

/// The counter of a status the load balancer would have answered.
fn elb_field(status: StatusCode) -> usize {
    match status {
        StatusCode::SERVICE_UNAVAILABLE => m::ELB503,
        StatusCode::GATEWAY_TIMEOUT => m::ELB504,
        _ => m::ELB502,
    }
}

/// 1 for 1xx … 5 for 5xx.
fn status_class(status: StatusCode) -> u16 {
    status.as_u16() / 100
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_carries_the_shadow_header_as_its_last_field_and_the_same_body() {
        let request = b"GET / HTTP/1.1\r\nhost: a\r\n\r\nbody";
        let copy = with_shadow_header(request, request.len() - 4);
        assert_eq!(copy, b"GET / HTTP/1.1\r\nhost: a\r\nx-cutover-shadow: 1\r\n\r\nbody");
    }
}
