//! The ACME manager beside the engine: it looks at the stored load balancers for HTTPS listeners
//! with `acme` and lets [`acme::Manager`] obtain and renew their certificates. It writes no row
//! and sends the engine nothing: what it obtains lands in `<data dir>/acme`, which the data plane
//! reloads certificates from, and what it tried is recorded beside each certificate, where
//! `GET /v1/certificates` reads it. An order waits on the network for seconds, so it runs in a
//! task of its own and never in the engine's loop.

use std::sync::Arc;
use std::time::Duration;

pub use ::acme::CertificateStatus;
use routes::acme::Acme;

use crate::declared::{KIND_LOAD_BALANCER, LoadBalancerDoc};
use crate::engine::Shared;

/// How often the stored listeners are looked at again: an apply that adds a name is served
/// within this.
const LOOK_AGAIN: Duration = Duration::from_secs(1);

/// Every HTTPS listener with `acme` in the store, as `load-balancer/listener` and its settings.
pub fn wanted(store: &store::Store) -> store::Result<Vec<(String, Acme)>> {
    let lbs: Vec<LoadBalancerDoc> = store.read(|tx| crate::state::docs(tx, KIND_LOAD_BALANCER))?;
    Ok(lbs
        .iter()
        .flat_map(|lb| {
            lb.listeners.iter().filter_map(move |l| {
                let acme = l.tls.as_ref()?.acme.clone()?;
                Some((format!("{}/{}", lb.name, l.name), acme))
            })
        })
        .collect())
}

/// Runs the manager until the control plane shuts down.
pub fn spawn(store: Arc<store::Store>, shared: Arc<Shared>) {
    tokio::spawn(async move {
        let mut manager = ::acme::Manager::default();
        loop {
            let next = match wanted(&store) {
                Ok(wanted) => manager.pass(&wanted, crate::clock::now).await,
                Err(e) => {
                    tracing::warn!("ACME: cannot read the load balancers: {e}");
                    None
                }
            };
            let until_due = next.map_or(LOOK_AGAIN, |at| at.since(crate::clock::now()));
            tokio::select! {
                _ = tokio::time::sleep(until_due.min(LOOK_AGAIN)) => {}
                _ = shared.shutdown.notified() => return,
            }
        }
    });
}
