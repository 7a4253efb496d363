//! `GET /v1/deployments/{id}/stream`: one deployment, live, as server-sent events — the view
//! `GET /v1/deployments/{id}` answers, the health of its two target groups and its events, each
//! sent again as soon as the engine changes it (it wakes on `Shared::changed`, never polls). The
//! console's deployment page follows it; any client that reads `text/event-stream` can.
//!
//! Events: `event` (an `EventView`, with its sequence number as the SSE id), `deployment` (a
//! `DeploymentView`), `targets` (target group → its targets' ALB health); after a reconnect with
//! `Last-Event-ID`, only the events after that one. A comment every 15 s keeps
//! idle proxies from closing the stream.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::{Stream, StreamExt};
use tokio::sync::watch;

use crate::api::{DeploymentView, EventView};
use crate::engine;
use crate::error::ApiError;
use crate::http::AppState;

/// The health of a deployment's target groups as the stream sends it: without the requests in
/// flight, which move with every request and would make every health report a change.
pub type TargetsView = BTreeMap<String, Vec<routes::TargetHealth>>;

/// What one look at the deployment found.
struct Observed {
    deployment: DeploymentView,
    targets: TargetsView,
    events: Vec<EventView>,
}

/// What the client has been sent so far.
#[derive(Default)]
struct Sent {
    deployment: Option<String>,
    targets: Option<String>,
    last_event: i64,
}

impl Sent {
    /// The events that tell the client what changed since the last look, and the new state.
    fn update(&mut self, observed: Observed) -> Vec<Event> {
        let mut out = Vec::new();
        // The events first: a client that prints them (`cutover deployments watch`) tells what
        // happened before the state it led to, and has every event before a final state.
        let after = self.last_event;
        for event in observed.events.into_iter().filter(|e| e.seq > after) {
            self.last_event = event.seq;
            let data = serde_json::to_string(&event).unwrap_or_default();
            out.push(Event::default().event("event").id(event.seq.to_string()).data(data));
        }
        let deployment = serde_json::to_string(&observed.deployment).unwrap_or_default();
        if self.deployment.as_ref() != Some(&deployment) {
            out.push(Event::default().event("deployment").data(&deployment));
            self.deployment = Some(deployment);
        }
        let targets = serde_json::to_string(&observed.targets).unwrap_or_default();
        if self.targets.as_ref() != Some(&targets) {
            out.push(Event::default().event("targets").data(&targets));
            self.targets = Some(targets);
        }
        out
    }
}

/// The health of `view`'s two target groups, without requests in flight.
pub fn targets_of(state: &AppState, view: &DeploymentView) -> TargetsView {
    let health = state.shared.health.read().unwrap_or_else(|p| p.into_inner());
    [&view.traffic.blue_target_group, &view.traffic.green_target_group]
        .into_iter()
        .map(|tg| {
            let targets = health.target_groups.get(tg).cloned().unwrap_or_default();
            let targets =
                targets.into_iter().map(|t| routes::TargetHealth { in_flight: 0, ..t }).collect();
            (tg.clone(), targets)
        })
        .collect()
}

fn observe(state: &AppState, id: &str, after: i64) -> Result<Observed, ApiError> {
    let deployment = engine::deployment_view(&state.store, &state.shared, id)?;
    let targets = targets_of(state, &deployment);
    let events = state
        .store
        .read(|tx| tx.event_list(id, after))?
        .into_iter()
        .map(|e| EventView { seq: e.seq, at: e.at, kind: e.kind, message: e.message })
        .collect();
    Ok(Observed { deployment, targets, events })
}

/// The event a reconnecting client saw last (`Last-Event-ID`, which `EventSource` sends): the
/// stream resumes after it instead of sending every event again.
fn resume_after(headers: &HeaderMap) -> i64 {
    let last = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    last.and_then(|v| v.trim().parse().ok()).unwrap_or(0).max(0)
}

pub async fn deployment_stream(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    // Subscribed before the first look, so no change between the two is missed.
    let changed = state.shared.changed.subscribe();
    let after = resume_after(&headers);
    let mut sent = Sent { last_event: after, ..Sent::default() };
    let first = sent.update(observe(&state, &id, after)?);
    let rest = futures_util::stream::unfold(
        (state, id, sent, changed),
        |(state, id, mut sent, mut changed): (AppState, String, Sent, watch::Receiver<u64>)| async move {
            loop {
                // The engine is gone (shutdown): the stream ends.
                changed.changed().await.ok()?;
                let Ok(observed) = observe(&state, &id, sent.last_event) else { return None };
                let events = sent.update(observed);
                if !events.is_empty() {
                    return Some((events, (state, id, sent, changed)));
                }
            }
        },
    );
    let stream = futures_util::stream::iter([first])
        .chain(rest)
        .flat_map(futures_util::stream::iter)
        .map(Ok);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
