//! The bridge between pipelines (`ci`) and the deployment engine: the deploy actions of a
//! pipeline create deployments exactly as `cutover deploy` does, through the engine's loop.

use std::sync::Arc;

use async_trait::async_trait;
use ci::{DeploymentState, FileText};
use store::Store;
use tokio::sync::{mpsc, oneshot};

use crate::api::{CreateDeploymentRequest, FileUpload};
use crate::engine::{Command, Msg};

pub struct EngineDeployer {
    pub tx: mpsc::Sender<Msg>,
    pub store: Arc<Store>,
}

impl EngineDeployer {
    async fn send(&self, command: Command) -> Result<serde_json::Value, String> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Msg::Command(command, reply))
            .await
            .map_err(|_| "the control plane is shutting down".to_string())?;
        answer.await.map_err(|_| "the control plane dropped the request".to_string())?.map_err(
            |err| {
                let mut message = err.body.error;
                for diagnostic in err.body.diagnostics {
                    message.push_str("; ");
                    message.push_str(&diagnostic);
                }
                message
            },
        )
    }
}

fn upload(file: FileText) -> FileUpload {
    FileUpload { name: file.name, text: file.text, base_dir: file.base_dir }
}

#[async_trait]
impl ci::Deployer for EngineDeployer {
    async fn deploy(
        &self,
        group: &str,
        task_definition: FileText,
        appspec: FileText,
        description: String,
    ) -> Result<String, String> {
        let request = CreateDeploymentRequest {
            group: group.to_string(),
            task_definition: Some(upload(task_definition)),
            appspec: upload(appspec),
            description: Some(description),
            deployment_config: None,
            ignore_alarms: false,
        };
        let view = self.send(Command::CreateDeployment(request)).await?;
        view["id"].as_str().map(str::to_string).ok_or_else(|| format!("unexpected answer: {view}"))
    }

    async fn deployment_state(&self, id: &str) -> Result<DeploymentState, String> {
        let row = self
            .store
            .read(|tx| tx.deployment_get(id))
            .map_err(|err| err.to_string())?
            .ok_or_else(|| format!("no deployment {id}"))?;
        let body: serde_json::Value =
            serde_json::from_str(&row.body).map_err(|err| err.to_string())?;
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

    async fn stop(&self, id: &str) -> Result<(), String> {
        // A pipeline that is stopped takes its release back: roll back to blue.
        match self.send(Command::Stop { id: id.to_string(), rollback: Some(true) }).await {
            Ok(_) => Ok(()),
            Err(message) if message.contains("already completed") => Ok(()),
            Err(message) => Err(message),
        }
    }

    async fn deploy_image_definitions(
        &self,
        service: &str,
        images: Vec<(String, String)>,
    ) -> Result<String, String> {
        let view =
            self.send(Command::DeployImages { service: service.to_string(), images }).await?;
        view["id"].as_str().map(str::to_string).ok_or_else(|| format!("unexpected answer: {view}"))
    }
}
