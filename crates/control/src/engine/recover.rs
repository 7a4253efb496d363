//! After a (re)start: the reconciler's state loaded (or built from an older cutover's rows), what
//! the runtimes still run read before anything new starts, every deployment resumed, and then
//! what the world said reported, as the simulation's restart does (`simulation::recovery`).

use std::collections::HashMap;
use std::sync::Arc;

use model::{TaskStatus, Timestamp};
use reconciler::{Observation, Reconciler, TaskProbe};
use runtime::{Runtime, TaskHandle};
use tracing::{info, warn};

use super::{Engine, project::Projection, write};
use crate::clock;
use crate::declared::KIND_ALARM_STATE;

impl Engine {
    /// Brings the world in line with the stored state after a (re)start: adopts tasks that are
    /// still running, reports the ones that died meanwhile, removes ones it does not own,
    /// resumes deployments, and has the data plane serve the table it should.
    pub async fn recover(&mut self) -> anyhow::Result<()> {
        let now = clock::now();
        let served = self.lb.served_version().await.unwrap_or(0);
        let stored: u64 = self
            .store
            .read(|tx| tx.meta_get("routes_version"))?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        self.state = self.load_state(served.max(stored), now)?;
        let owned = self.list_owned().await;
        let adoptions = self.adoptions(owned, served);

        // Everything is written once: the rows of an older cutover become projections.
        let effects = self.state.resume(now);
        let projection = self.store.transaction(|tx| {
            write::write(tx, &self.state, &Projection::default(), &effects, now)
        })?;
        self.projection = projection;
        self.perform(effects);

        let saved: Vec<(String, alarms::Alarm)> = self
            .store
            .read(|tx| tx.resource_list(KIND_ALARM_STATE))?
            .into_iter()
            .filter_map(|(key, body)| Some((key, serde_json::from_str(&body).ok()?)))
            .collect();
        self.shared.monitor().restore(saved);
        for observation in adoptions {
            self.feed(observation);
        }
        // What is declared may be newer than the state (an apply whose decision the store
        // could not take before the restart).
        self.declare()?;
        Ok(())
    }

    fn load_state(&self, routes_version: u64, now: Timestamp) -> anyhow::Result<Reconciler> {
        if let Some(state) = self.store.read(crate::persisted::load)? {
            return Ok(state);
        }
        use rand::Rng;
        let salt: u64 = rand::rng().random();
        let state = self
            .store
            .read(|tx| Ok(crate::persisted::from_rows(tx, salt, routes_version, now)))??;
        info!("the reconciler's state was built from this data directory's rows");
        Ok(state)
    }

    async fn list_owned(&self) -> HashMap<String, (Arc<dyn Runtime>, TaskHandle)> {
        let mut owned = HashMap::new();
        for (kind, rt) in &self.runtimes {
            match rt.list_owned().await {
                Ok(handles) => {
                    for handle in handles {
                        owned.insert(handle.task_id.clone(), (rt.clone(), handle));
                    }
                }
                Err(err) => warn!("listing {kind} tasks: {err}"),
            }
        }
        owned
    }

    /// What the runtimes' listing says about the state's tasks; a task nobody knows is stopped
    /// and removed, one being stopped is stopped again.
    fn adoptions(
        &mut self,
        mut owned: HashMap<String, (Arc<dyn Runtime>, TaskHandle)>,
        served: u64,
    ) -> Vec<Observation> {
        let mut observations = Vec::new();
        let mut adopted = 0;
        for task in self.state.tasks().filter(|t| t.last_status != TaskStatus::Stopped) {
            let listed = owned.remove(&task.id);
            let task_id = task.id.clone();
            match (task.last_status, listed) {
                (TaskStatus::Provisioning, Some((_, handle))) => {
                    adopted += 1;
                    observations.push(super::observe::task_started(task_id, Ok(handle)));
                }
                (TaskStatus::Provisioning, None) => {
                    observations.push(Observation::TaskFailedToStart {
                        task_id,
                        reason: "its start was lost when the control plane stopped".into(),
                    })
                }
                (TaskStatus::Stopping, Some((rt, handle))) => {
                    let tx = self.tx.clone();
                    tokio::spawn(async move {
                        let _ = rt.stop(&handle).await;
                        let _ = rt.remove(&handle).await;
                        let _ = tx.send(super::Msg::TaskStopped { task_id }).await;
                    });
                }
                (TaskStatus::Stopping, None) => {
                    observations.push(Observation::TaskStopped { task_id })
                }
                (_, Some(_)) => adopted += 1,
                (_, None) => observations
                    .push(Observation::TaskInspected { task_id, state: TaskProbe::Gone }),
            }
        }
        for (task_id, (rt, handle)) in owned {
            warn!(task = %task_id, "removing a task this control plane no longer owns");
            tokio::spawn(async move {
                let _ = rt.stop(&handle).await;
                let _ = rt.remove(&handle).await;
            });
        }
        info!(adopted, "tasks adopted after start");
        let version = self.state.routes_version();
        observations.push(if served >= version {
            Observation::RoutesApplied { version }
        } else {
            Observation::RoutesFailed { version, error: "not served after a restart".into() }
        });
        observations
    }
}
