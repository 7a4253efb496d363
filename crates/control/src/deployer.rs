//! The bridge between pipelines (`pipelines`) and the deployment engine: the deploy actions of a
//! pipeline create deployments exactly as `cutover deploy` does, through the engine's loop.

use std::sync::Arc;

use async_trait::async_trait;
use axum::http::StatusCode;
use pipelines::{DeployError, DeploymentState, FileText};
use store::Store;
use tokio::sync::{mpsc, oneshot};

use crate::api::{CreateDeploymentRequest, FileUpload};
use crate::engine::{Command, Msg, PipelineDeployment};
use crate::error::ApiError;

pub struct EngineDeployer {
    pub tx: mpsc::Sender<Msg>,
    pub store: Arc<Store>,
}

impl EngineDeployer {
    async fn send(&self, command: Command) -> Result<serde_json::Value, DeployError> {
        let (reply, answer) = oneshot::channel();
        let shutting_down =
            || DeployError::Unavailable("the control plane is shutting down".into());
        self.tx.send(Msg::Command(command, reply)).await.map_err(|_| shutting_down())?;
        answer.await.map_err(|_| shutting_down())?.map_err(deploy_error)
    }
}

/// The engine's answer as the deployer's error: its message with every diagnostic; what cannot be
/// done now (503) is `Unavailable`, the rest the engine refused.
fn deploy_error(err: ApiError) -> DeployError {
    let mut message = err.body.error;
    for diagnostic in err.body.diagnostics {
        message.push_str("; ");
        message.push_str(&diagnostic);
    }
    if err.status == StatusCode::SERVICE_UNAVAILABLE {
        DeployError::Unavailable(message)
    } else {
        DeployError::Refused(message)
    }
}

/// The id in the engine's answer to a new deployment.
fn deployment_id(view: &serde_json::Value) -> Result<String, DeployError> {
    view["id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| DeployError::Refused(format!("unexpected answer: {view}")))
}

fn upload(file: FileText) -> FileUpload {
    FileUpload { name: file.name, text: file.text, base_dir: file.base_dir }
}

#[async_trait]
impl pipelines::Deployer for EngineDeployer {
    async fn deploy(
        &self,
        group: &str,
        task_definition: FileText,
        appspec: FileText,
        description: String,
        job: &str,
    ) -> Result<String, DeployError> {
        let request = CreateDeploymentRequest {
            group: group.to_string(),
            task_definition: Some(upload(task_definition)),
            appspec: upload(appspec),
            description: Some(description),
            deployment_config: None,
            ignore_alarms: false,
        };
        let deployment = PipelineDeployment::Files(request);
        deployment_id(
            &self.send(Command::PipelineDeploy { job: job.to_string(), deployment }).await?,
        )
    }

    async fn deployment_state(&self, id: &str) -> Result<DeploymentState, DeployError> {
        let row = self
            .store
            .read(|tx| tx.deployment_get(id))?
            .ok_or_else(|| DeployError::UnknownDeployment(id.to_string()))?;
        let body: serde_json::Value = serde_json::from_str(&row.body).map_err(|err| {
            DeployError::Unreadable { id: id.to_string(), reason: err.to_string() }
        })?;
        let message = || {
            let code = body["error_code"].as_str().unwrap_or("");
            let text = body["error_message"].as_str().unwrap_or("no reason recorded");
            let rolled_back = if body["rolled_back"] == true { " (rolled back)" } else { "" };
            format!("deployment {id}: {code} {text}{rolled_back}")
        };
        Ok(match (row.status.as_str(), row.completed_at) {
            (_, None) => DeploymentState::InProgress,
            ("Succeeded", Some(_)) => DeploymentState::Succeeded,
            ("Stopped", Some(_)) => DeploymentState::Stopped { message: message() },
            (_, Some(_)) => DeploymentState::Failed { message: message() },
        })
    }

    async fn stop(&self, id: &str) -> Result<(), DeployError> {
        // A pipeline that is stopped takes its release back: roll back to blue.
        match self.send(Command::Stop { id: id.to_string(), rollback: Some(true) }).await {
            Ok(_) => Ok(()),
            // The engine says so in words only (a 409 of its API).
            Err(DeployError::Refused(message)) if message.contains("already completed") => Ok(()),
            Err(err) => Err(err),
        }
    }

    async fn deploy_image_definitions(
        &self,
        service: &str,
        images: Vec<(String, String)>,
        job: &str,
    ) -> Result<String, DeployError> {
        let deployment = PipelineDeployment::Images { service: service.to_string(), images };
        deployment_id(
            &self.send(Command::PipelineDeploy { job: job.to_string(), deployment }).await?,
        )
    }
}
