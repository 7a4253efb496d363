//! Performing what the reconciler decided, once it is written: each effect that leaves the
//! process runs in a task of its own and reports back as a message, so the loop awaits nothing.

use std::sync::Arc;
use std::time::Duration;

use reconciler::{Effect, TaskLaunch};
use runtime::{Runtime, TaskHandle};
use tracing::{info, warn};

use super::{Engine, Msg};
use crate::declared::ServiceDoc;
use crate::deployment::DeploymentBody;
use crate::error::ApiError;
use crate::hooks::{self, HookContext, HookRun};
use crate::state::Snapshot;

impl Engine {
    /// Performs written effects, in order. An effect that cannot even be started reports its
    /// failure as the runtime would have.
    pub(super) fn perform(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::StartTask(launch) => self.start_task(launch),
                Effect::StopTask { task_id } => self.stop_task(task_id),
                Effect::RemoveTask { task_id } => {
                    if let Some((rt, handle)) = self.runtime_of(&task_id) {
                        tokio::spawn(async move {
                            let _ = rt.remove(&handle).await;
                        });
                    }
                }
                Effect::RunHook { deployment_id, event, execution_id, hook, timeout } => {
                    if let Err(err) =
                        self.spawn_hook(&deployment_id, event, execution_id, &hook, timeout)
                    {
                        // The machine's own timeout for the hook settles it.
                        warn!(deployment = %deployment_id, "starting hook {hook}: {}", err.body.error);
                    }
                }
                Effect::CancelHook { deployment_id, execution_id } => {
                    if let Some(handle) = self.forget_hook(&deployment_id, &execution_id) {
                        handle.abort();
                    }
                }
                Effect::PushRoutes { version, .. } => self.push_routes(version),
                Effect::Rollout { deployment_id, effect } => {
                    info!(deployment = %deployment_id, "{effect}")
                }
                Effect::DeploymentClosed(deployment) => {
                    self.shared.hook_tokens.revoke_deployment(&deployment.id);
                    self.tell_pipelines_if_ended(&deployment.id);
                }
                Effect::ShutDown => self.shut_down = true,
                Effect::Event { .. } | Effect::TaskSetRetired { .. } => {}
            }
        }
    }

    /// The runtime of a task the state knows, with its handle.
    fn runtime_of(&self, task_id: &str) -> Option<(Arc<dyn Runtime>, TaskHandle)> {
        let task = self.state.task(task_id)?;
        let ts = self.state.task_set(&task.task_set_id)?;
        let rt = self.runtimes.get(ts.runtime.as_str())?.clone();
        let handle = serde_json::from_str(task.handle.as_deref()?).ok()?;
        Some((rt, handle))
    }

    fn start_task(&mut self, launch: TaskLaunch) {
        let task_id = launch.task_id.clone();
        let tx = self.tx.clone();
        let prepared = self.task_start(&launch);
        tokio::spawn(async move {
            let result = match prepared {
                Ok((rt, spec)) => rt.start(spec).await.map_err(|err| err.to_string()),
                Err(err) => Err(err.body.error),
            };
            let _ = tx.send(Msg::TaskStarted { task_id, result }).await;
        });
    }

    /// The runtime and everything it needs to start a task: its service, its task definition's
    /// containers, and the container the load balancer sends traffic to.
    fn task_start(
        &self,
        launch: &TaskLaunch,
    ) -> Result<(Arc<dyn Runtime>, runtime::TaskSpec), ApiError> {
        let rt = self.runtimes.get(launch.runtime.as_str()).cloned().ok_or_else(|| {
            ApiError::conflict(format!(
                "service {} uses the {} runtime, which is not available: see `cutover up`'s output",
                launch.service, launch.runtime
            ))
        })?;
        let (family, revision) =
            crate::apply::split_revision(&launch.task_definition).ok_or_else(|| {
                ApiError::internal(format!("bad task definition id {}", launch.task_definition))
            })?;
        let (service, td_row, body) = self.store.read(|tx| {
            let service = crate::state::doc::<ServiceDoc>(
                tx,
                crate::declared::KIND_SERVICE,
                &launch.service,
            )?;
            let body = match &launch.deployment_id {
                Some(id) => tx.deployment_get(id)?.map(|row| row.body),
                None => None,
            };
            Ok((service, tx.task_definition_get(&family, revision)?, body))
        })?;
        let service =
            service.ok_or_else(|| ApiError::internal(format!("no service {}", launch.service)))?;
        let td_row = td_row.ok_or_else(|| {
            ApiError::internal(format!("task definition {} is missing", launch.task_definition))
        })?;
        let td: config::TaskDefinition = serde_json::from_str(&td_row.body)?;
        let lb_container = match body {
            Some(body) => serde_json::from_str::<DeploymentBody>(&body)
                .ok()
                .map(|body| (body.container_name, body.container_port)),
            None => service
                .load_balancer
                .as_ref()
                .map(|lb| (lb.container_name.clone(), lb.container_port)),
        };
        let spec = crate::apply::task_spec(
            &launch.task_id,
            &service,
            &launch.task_definition,
            launch.deployment_id.clone(),
            &td,
            lb_container,
        );
        Ok((rt, spec))
    }

    /// Stops a task gracefully and removes it, in the background.
    fn stop_task(&mut self, task_id: String) {
        let runtime = self.runtime_of(&task_id);
        let tx = self.tx.clone();
        tokio::spawn(async move {
            if let Some((rt, handle)) = runtime {
                if let Err(err) = rt.stop(&handle).await {
                    warn!(task = %task_id, "stopping task: {err}");
                }
                let _ = rt.remove(&handle).await;
            }
            let _ = tx.send(Msg::TaskStopped { task_id }).await;
        });
    }

    /// Hands the data plane the table the stored rows imply, as `version`: the rows were written
    /// with the state that ordered it, so they are its routing view.
    fn push_routes(&mut self, version: u64) {
        let snapshot = match self.store.read(Snapshot::load) {
            Ok(snapshot) => snapshot,
            Err(err) => {
                warn!("reading the routing table to push: {err}");
                return self.push_failed(version, err.to_string());
            }
        };
        let mut table = snapshot.route_table(version);
        let cluster =
            crate::fleet::decide::cluster_load_balancers(&snapshot.services, &snapshot.groups);
        if !self.pusher.push(table.clone(), cluster) {
            let error = "the data plane has not taken a table for long; pushing again later";
            return self.push_failed(version, error.to_string());
        }
        *self.shared.routes_version.write().unwrap_or_else(|p| p.into_inner()) = version;
        table.version = 0;
        self.last_pushed = Some(table);
    }

    fn push_failed(&self, version: u64, error: String) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(Msg::RoutesPushed { version, result: Err(error) }).await;
        });
    }

    /// A hook execution is no longer pending: its token stops working at once.
    pub(super) fn forget_hook(
        &mut self,
        deployment_id: &str,
        execution_id: &str,
    ) -> Option<tokio::task::JoinHandle<()>> {
        self.shared.hook_tokens.revoke(deployment_id, execution_id);
        self.running_hooks.remove(&(deployment_id.to_string(), execution_id.to_string()))
    }

    fn spawn_hook(
        &mut self,
        id: &str,
        event: model::LifecycleEvent,
        execution_id: String,
        hook_name: &str,
        timeout: Duration,
    ) -> Result<(), ApiError> {
        let (body, snapshot) = self.store.read(|tx| {
            let row = tx
                .deployment_get(id)?
                .ok_or_else(|| store::Error::Conflict(format!("no deployment {id}")))?;
            let body: DeploymentBody = serde_json::from_str(&row.body)?;
            Ok((body, Snapshot::load(tx)?))
        })?;
        let group =
            snapshot.group(&format!("{}/{}", body.application, body.deployment_group)).cloned();
        let target =
            body.hooks.get(event.as_str()).filter(|h| h.name == hook_name).map(|h| h.target());
        let ctx = HookContext {
            deployment_id: id.to_string(),
            execution_id: execution_id.clone(),
            event: event.as_str().to_string(),
            listeners: group
                .as_ref()
                .map(|g| hooks::GroupListeners::of(&snapshot, g))
                .unwrap_or_default(),
            api_url: self.api_url.clone(),
            callback_url: format!(
                "{}/v1/deployments/{id}/lifecycle-hooks/{execution_id}",
                self.api_url
            ),
            token: self.shared.hook_tokens.grant(id, &execution_id),
        };
        let tx = self.tx.clone();
        let deployment_id = id.to_string();
        let exec = execution_id.clone();
        let hook_name = hook_name.to_string();
        let handle = tokio::spawn(async move {
            let run = match target {
                Some(target) => hooks::run(target, ctx, timeout).await,
                None => HookRun::Done {
                    succeeded: false,
                    message: format!("hook `{hook_name}` is not resolved for this deployment"),
                },
            };
            if let HookRun::Done { succeeded, message } = run {
                let _ = tx
                    .send(Msg::HookDone { deployment_id, execution_id: exec, succeeded, message })
                    .await;
            }
        });
        self.running_hooks.insert((id.to_string(), execution_id), handle);
        Ok(())
    }
}
