//! The API's commands: those that change what the reconciler decides by become its observations
//! (written with what only the shell knows, such as a new deployment's row, in one transaction);
//! the others (task definitions, targets registered by hand) are the store's alone.

use model::Timestamp;
use reconciler::{Command as Decide, Observation};

use super::{Command, Engine, StepError, observe};
use crate::clock;
use crate::declared::*;
use crate::error::ApiError;
use crate::state;

impl Engine {
    pub(super) async fn command(
        &mut self,
        command: Command,
    ) -> Result<serde_json::Value, ApiError> {
        let now = clock::now();
        match command {
            Command::Apply { request, validated } => {
                let step = crate::apply::apply(self, request, validated.as_ref(), now)?;
                Ok(serde_json::to_value(step)?)
            }
            Command::CreateDeployment(request) => {
                let id = crate::apply::create_deployment(self, request, now)?;
                Ok(serde_json::to_value(self.deployment_view(&id)?)?)
            }
            Command::Stop { id, rollback } => {
                self.decide(observe::stop(id.clone(), rollback))?;
                Ok(serde_json::to_value(self.deployment_view(&id)?)?)
            }
            Command::Continue { id, wait } => {
                let wait = observe::wait(&wait)?;
                self.decide(Observation::Command(Decide::Continue {
                    deployment_id: id.clone(),
                    wait,
                }))?;
                Ok(serde_json::to_value(self.deployment_view(&id)?)?)
            }
            Command::HookStatus { id, execution_id, succeeded, message } => {
                if let Some(handle) = self.forget_hook(&id, &execution_id) {
                    handle.abort();
                }
                let result =
                    Observation::HookResult { deployment_id: id, execution_id, succeeded, message };
                self.decide(result)?;
                Ok(serde_json::json!({ "status": "accepted" }))
            }
            Command::RegisterTaskDefinition(file) => {
                let (family, revision) =
                    crate::apply::register_task_definition(&self.store, &file, now)?;
                Ok(serde_json::json!({
                    "family": family,
                    "revision": revision,
                    "arn": config::TaskDefinitionRef::arn(&family, revision),
                }))
            }
            Command::DeregisterTaskDefinition { family, revision } => {
                let found = self.store.transaction(|tx| {
                    tx.task_definition_set_status(&family, revision, "INACTIVE")
                })?;
                if !found {
                    return Err(ApiError::not_found(format!(
                        "no task definition {family}:{revision}"
                    )));
                }
                Ok(
                    serde_json::json!({ "family": family, "revision": revision, "status": "INACTIVE" }),
                )
            }
            Command::RegisterTarget { target_group, addr, register } => {
                self.register_target(&target_group, &addr, register, now)
            }
            Command::Shutdown => {
                self.decide(Observation::Command(Decide::Shutdown))?;
                Ok(serde_json::json!({ "status": "stopping" }))
            }
        }
    }

    /// A command's decision; refused while the store cannot be written (the caller is told, and
    /// may try again), as a write the store refuses changes nothing.
    pub(crate) fn decide(&mut self, observation: Observation) -> Result<(), StepError> {
        self.decide_with(observation, |_| Ok(()))
    }

    /// [`Engine::decide`], writing `also` in the decision's transaction.
    pub(crate) fn decide_with(
        &mut self,
        observation: Observation,
        also: impl FnOnce(&store::Tx<'_>) -> store::Result<()>,
    ) -> Result<(), StepError> {
        let result = self.step(observation, also);
        if let Err(StepError::Store(_)) = &result {
            self.note_store_failure(clock::now());
        }
        result
    }

    /// What `apply` stored, handed to the reconciler: services, groups, deregistration delays.
    /// Kept to feed again when the store cannot take the decision now (the apply itself is
    /// stored, and a restart declares what is stored too).
    pub(crate) fn declare(&mut self) -> Result<(), ApiError> {
        let stored = self.store.read(state::Snapshot::load)?;
        self.declare_stored(&stored)
    }

    /// [`Engine::declare`] of `stored`, the state the store holds now: `apply` built it in its
    /// plan, and reading it again would cost as much as the plan's own read.
    pub(crate) fn declare_stored(&mut self, stored: &state::Snapshot) -> Result<(), ApiError> {
        let declared = self
            .store
            .read(|tx| Ok(crate::persisted::declared_of(tx, stored)))?
            .map_err(|err| ApiError::internal(err.to_string()))?;
        self.feed(Observation::Command(Decide::Declare(declared)));
        // Listeners and rules are routed beside the reconciler's view: a table the data plane
        // does not serve yet is a new version.
        let table = stored.route_table(0);
        if !self.serves_routes(&table) {
            self.feed(Observation::RoutesChanged);
        }
        Ok(())
    }

    /// Registers or deregisters an IP target by hand (`cutover target-groups register`).
    fn register_target(
        &mut self,
        target_group: &str,
        addr: &str,
        register: bool,
        now: Timestamp,
    ) -> Result<serde_json::Value, ApiError> {
        let addr: std::net::SocketAddr = addr.parse().map_err(|_| {
            ApiError::bad_request(format!("`{addr}` is not an address:port such as 127.0.0.1:9000"))
        })?;
        let mut doc: TargetGroupDoc = self
            .store
            .read(|tx| state::doc(tx, KIND_TARGET_GROUP, target_group))?
            .ok_or_else(|| ApiError::not_found(format!("no target group `{target_group}`")))?;
        if register {
            if !doc.manual_targets().any(|t| *t == addr) {
                doc.registered.push(addr);
            }
        } else {
            // A declared target deregistered by hand comes back with the next apply,
            // as the file still says so.
            doc.targets.retain(|t| *t != addr);
            doc.registered.retain(|t| *t != addr);
        }
        let body = serde_json::to_string(&doc)?;
        self.store.transaction(|tx| {
            tx.resource_put(KIND_TARGET_GROUP, target_group, &body, now.as_millis())
        })?;
        // The table the rows imply changed beside the reconciler's view: a new version.
        self.feed(Observation::RoutesChanged);
        Ok(serde_json::to_value(doc)?)
    }
}
