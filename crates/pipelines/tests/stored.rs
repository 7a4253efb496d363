//! What an older cutover stored still loads: a pipeline kept as a `ci_pipelines` row without a
//! version (the cutover before versioned documents) reads as the same pipeline and is written back
//! as a `pipeline` document of this build's version; a document from a newer cutover is refused.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use pipelines::{DeploymentState, Pipelines, PipelinesConfig};
use store::{DocumentRow, DocumentStore};

/// The rows a `cutover up` of the version before documents wrote for pipeline `gated` (a manual
/// approval) after one execution that succeeded: its `ci_pipelines` row and its executions.
const BEFORE_DOCUMENTS: &str = include_str!("fixtures/v0/ci_pipelines.gated.json");

#[derive(serde::Deserialize)]
struct Fixture {
    pipelines: Vec<store::CiPipelineRow>,
    executions: Vec<store::CiExecutionRow>,
}

fn store_as_written_before_documents(data: &std::path::Path) -> Arc<store::Store> {
    std::fs::create_dir_all(data).unwrap();
    let store = store::Store::open(&data.join("state.db")).unwrap();
    let fixture: Fixture = serde_json::from_str(BEFORE_DOCUMENTS).unwrap();
    store
        .transaction(|tx| {
            for row in &fixture.pipelines {
                tx.ci_pipeline_put(row)?;
            }
            for row in &fixture.executions {
                tx.ci_execution_put(row)?;
            }
            Ok(())
        })
        .unwrap();
    Arc::new(store)
}

async fn gated_view(server: &Server) -> serde_json::Value {
    let (status, view) = server.get("/v1/pipelines/gated").await;
    assert_eq!(status, 200, "{view}");
    view
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_stored_before_documents_loads_and_is_written_back_as_a_versioned_document() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let store = store_as_written_before_documents(&data);
    let deployer = FakeDeployer::new(DeploymentState::Succeeded);
    let server = Server::start_with(&data, None, deployer.clone(), store.clone()).await;

    let view = gated_view(&server).await;
    assert_eq!(view["version"], 1, "{view}");
    assert_eq!(view["source"], "repository:app", "{view}");
    assert_eq!(view["stages"], serde_json::json!(["Source", "Approve"]), "{view}");
    assert_eq!(view["latest_execution"]["id"], "gated-1", "{view}");
    assert_eq!(view["latest_execution"]["status"], "Succeeded", "{view}");
    assert_eq!(view["update_pending"], false, "{view}");

    // The loop's first turn writes every resumed pipeline: as a document, with its version.
    let written = wait_until(Duration::from_secs(10), || async {
        store.read(|tx| tx.document_row("pipeline", "gated")).unwrap().is_some()
    })
    .await;
    assert!(written, "the pipeline was never written as a document");
    let row = store.read(|tx| tx.document_row("pipeline", "gated")).unwrap().unwrap();
    assert_eq!(row.version, 1);

    // From now on the document is what is read, the same pipeline.
    server.stop();
    let server = Server::start_with(&data, None, deployer, store).await;
    assert_eq!(gated_view(&server).await, view);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_document_from_a_newer_cutover_is_refused_naming_kind_name_and_versions() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let store = store_as_written_before_documents(&data);
    store
        .transaction(|tx| {
            let row = DocumentRow { name: "gated".into(), version: 2, body: "{}".into() };
            tx.put_document_row("pipeline", &row, 1)
        })
        .unwrap();
    let config = PipelinesConfig {
        data_dir: data.clone(),
        api_url: "http://127.0.0.1:1".into(),
        token: None,
    };
    let Err(err) = Pipelines::start(config, store) else {
        panic!("a newer cutover's pipeline was read");
    };
    assert_eq!(
        err.to_string(),
        "pipeline gated was written by a newer cutover (document version 2, this build reads up \
         to 1); upgrade cutover, or run the version that wrote it"
    );
}
