//! `GET /v1/pipelines/{name}/stream`: a pipeline's executions, live, as server-sent events — each
//! of its newest executions as `GET /v1/pipelines/{name}/executions/{id}` answers it, and each
//! build of an execution still running as `GET /v1/builds/{id}` does, sent first and again as
//! soon as it changes. The engine wakes the stream on every write of the pipelines
//! (`Shared::changed`); the stream reads the store only, never the pipelines' loop. The console's
//! pipeline, execution and build pages follow it; any client that reads `text/event-stream` can.
//!
//! Events: `execution` (a `pipelines::api::Execution`) and `build` (a `pipelines::api::Build`).
//! A comment every 15 s keeps idle proxies from closing the stream.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::{Stream, StreamExt};
use tokio::sync::watch;

use crate::error::ApiError;
use crate::http::AppState;

/// How many of the newest executions the stream follows (the console's history shows as many).
pub const EXECUTIONS_FOLLOWED: u32 = 20;

/// What the client was sent, by kind and id, as JSON: only what differs is sent again.
#[derive(Default)]
pub(crate) struct Sent(BTreeMap<(&'static str, String), String>);

impl Sent {
    pub(crate) fn update(&mut self, observed: Vec<(&'static str, String, String)>) -> Vec<Event> {
        let mut out = Vec::new();
        for (kind, id, json) in observed {
            if self.0.get(&(kind, id.clone())) != Some(&json) {
                out.push(Event::default().event(kind).data(&json));
                self.0.insert((kind, id), json);
            }
        }
        out
    }
}

fn pipeline_error(err: pipelines::Error) -> ApiError {
    match err {
        pipelines::Error::Store(err) => err.into(),
        other => ApiError::internal(other.to_string()),
    }
}

/// The newest executions, oldest first (so a client applying them in order ends on the newest),
/// then the builds of those still running.
fn observe(state: &AppState, name: &str) -> Result<Vec<(&'static str, String, String)>, ApiError> {
    let mut executions =
        pipelines::views::executions_in_full(&state.store, name, EXECUTIONS_FOLLOWED)
            .map_err(pipeline_error)?;
    executions.reverse();
    let mut observed = Vec::new();
    for execution in &executions {
        let id = execution.summary.id.clone();
        observed.push(("execution", id, serde_json::to_string(execution)?));
    }
    for execution in executions.iter().filter(|e| e.summary.ended_at.is_none()) {
        for id in &execution.builds {
            if let Some(build) =
                pipelines::views::build(&state.store, id).map_err(pipeline_error)?
            {
                observed.push(("build", id.clone(), serde_json::to_string(&build)?));
            }
        }
    }
    Ok(observed)
}

pub async fn pipeline_stream(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let declared = pipelines::views::pipelines(&state.store).map_err(pipeline_error)?;
    if !declared.iter().any(|p| p.name == name) {
        return Err(ApiError::not_found(format!(
            "no pipeline `{name}`; `cutover pipelines list` shows those declared"
        )));
    }
    follow(state, name, observe)
}

/// What a stream observes of `name`: `(event kind, id, JSON)` for each thing it follows.
pub(crate) type Observe =
    fn(&AppState, &str) -> Result<Vec<(&'static str, String, String)>, ApiError>;

/// A stream of what `observe` sees of `name`: everything first, then, each time the engine says
/// something changed, what differs from what was sent; it ends when the engine shuts down or
/// `name` can no longer be observed.
pub(crate) fn follow(
    state: AppState,
    name: String,
    observe: Observe,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    // Subscribed before the first look, so no change between the two is missed.
    let changed = state.shared.changed.subscribe();
    let mut sent = Sent::default();
    let first = sent.update(observe(&state, &name)?);
    let rest = futures_util::stream::unfold(
        (state, name, sent, changed),
        move |(state, name, mut sent, mut changed): (
            AppState,
            String,
            Sent,
            watch::Receiver<u64>,
        )| async move {
            loop {
                // The engine is gone (shutdown): the stream ends.
                changed.changed().await.ok()?;
                let Ok(observed) = observe(&state, &name) else { return None };
                let events = sent.update(observed);
                if !events.is_empty() {
                    return Some((events, (state, name, sent, changed)));
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
