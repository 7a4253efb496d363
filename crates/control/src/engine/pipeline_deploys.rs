//! The deployments of the pipelines this loop hosts: a deploy action's deployment is created here,
//! in the loop, as `cutover deploy`'s is (`apply::create_deployment`), with the action run's
//! record of its id (`ci_jobs`) in the deployment's own transaction, so a restart adopts it and
//! never starts a second one; and the pipelines are told when it has ended, in the loop that
//! ended it.

use pipelines::{DeployRequest, Deployment, DeploymentState, FileText};
use store::DeploymentRow;
use tracing::{error, info};

use super::{Engine, observe};
use crate::api::{CreateDeploymentRequest, FileUpload};
use crate::clock;
use crate::deployment::DeploymentBody;
use crate::error::ApiError;

impl Engine {
    /// Performs what the pipelines' deploy actions asked, and what answering them made them ask.
    pub(super) fn pipeline_deploys(&mut self) {
        loop {
            let Some(shell) = &mut self.pipelines else { return };
            let requests = shell.deploys();
            if requests.is_empty() {
                return;
            }
            for request in requests {
                self.pipeline_deploy(request);
            }
        }
    }

    fn pipeline_deploy(&mut self, request: DeployRequest) {
        match request {
            DeployRequest::Start { job, deployment } => {
                let started =
                    self.start_pipeline_deployment(&job, deployment).map_err(refusal_message);
                if let Some(shell) = &mut self.pipelines {
                    shell.deployment_started(&job, started);
                }
            }
            DeployRequest::Stop { id } => {
                // A pipeline that is stopped takes its release back: roll back to blue. One that
                // has ended already is left as it is.
                if let Err(err) = self.decide(observe::stop(id.clone(), Some(true))) {
                    info!(deployment = %id, "not stopped for its pipeline: {err}");
                }
            }
            DeployRequest::Follow { id } => self.tell_pipelines_if_ended(&id),
        }
    }

    fn start_pipeline_deployment(
        &mut self,
        job: &str,
        deployment: Deployment,
    ) -> Result<String, ApiError> {
        let now = clock::now();
        let request = match deployment {
            Deployment::Files { group, task_definition, appspec, description } => {
                CreateDeploymentRequest {
                    group,
                    task_definition: Some(upload(task_definition)),
                    appspec: upload(appspec),
                    description: Some(description),
                    deployment_config: None,
                    ignore_alarms: false,
                }
            }
            Deployment::Images { service, images } => {
                crate::apply::image_definitions_deployment(self, &service, &images)?
            }
        };
        let record = |tx: &store::Tx<'_>, id: &str| tx.ci_job_put(job, id, now.as_millis());
        crate::apply::create_deployment_with(self, request, now, record)
    }

    /// Tells the pipelines how deployment `id` ended, once it has (a run that follows it ends
    /// with it); nothing while it runs.
    pub(super) fn tell_pipelines_if_ended(&mut self, id: &str) {
        if self.pipelines.is_none() {
            return;
        }
        let state = match self.store.read(|tx| tx.deployment_get(id)) {
            Ok(Some(row)) => outcome(&row),
            Ok(None) => Some(DeploymentState::Failed { message: format!("no deployment {id}") }),
            Err(err) => {
                error!(deployment = %id, "cannot read how the deployment stands for its pipeline: {err}");
                return;
            }
        };
        if let (Some(state), Some(shell)) = (state, &mut self.pipelines) {
            shell.deployment_ended(id, &state);
        }
    }
}

/// How a stored deployment ended, in the words its pipeline's action reports; `None` while it
/// runs.
fn outcome(row: &DeploymentRow) -> Option<DeploymentState> {
    row.completed_at?;
    let message = || match serde_json::from_str::<DeploymentBody>(&row.body) {
        Ok(body) => format!(
            "deployment {}: {} {}{}",
            row.id,
            body.error_code.as_deref().unwrap_or(""),
            body.error_message.as_deref().unwrap_or("no reason recorded"),
            if body.rolled_back { " (rolled back)" } else { "" }
        ),
        Err(err) => format!("deployment {}: its record cannot be read: {err}", row.id),
    };
    Some(match row.status.as_str() {
        "Succeeded" => DeploymentState::Succeeded,
        "Stopped" => DeploymentState::Stopped { message: message() },
        _ => DeploymentState::Failed { message: message() },
    })
}

/// Why the engine refused a deploy action's deployment: its message with every diagnostic.
fn refusal_message(err: ApiError) -> String {
    let mut message = err.body.error;
    for diagnostic in err.body.diagnostics {
        message.push_str("; ");
        message.push_str(&diagnostic);
    }
    message
}

fn upload(file: FileText) -> FileUpload {
    FileUpload { name: file.name, text: file.text, base_dir: file.base_dir }
}
