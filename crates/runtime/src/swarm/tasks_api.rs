//! The tasks API read as JSON.
//!
//! A Swarm task's overlay address is in the tasks API's `NetworksAttachments`, which the
//! Engine's OpenAPI document (and so bollard's generated `Task`) leaves out. This module reads
//! `GET /tasks` itself, over the same socket or TCP address the bollard client uses, and nothing
//! else: every other call goes through bollard.

use std::net::Ipv4Addr;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::Deserialize;

use super::decide::Observed;
use crate::RuntimeError;

/// A Swarm task: when it was created, on which node, and what `decide` reads.
pub struct RawTask {
    /// RFC 3339, as the engine writes it; orders tasks of one service.
    pub created_at: String,
    pub node_id: Option<String>,
    /// With `node` still unset: the caller knows the nodes.
    pub observed: Observed,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Task {
    #[serde(default)]
    created_at: String,
    #[serde(rename = "NodeID", default)]
    node_id: Option<String>,
    #[serde(default)]
    desired_state: String,
    #[serde(default)]
    status: Status,
    #[serde(default)]
    networks_attachments: Vec<Attachment>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct Status {
    #[serde(default)]
    state: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    err: Option<String>,
    #[serde(default)]
    container_status: Option<ContainerStatus>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ContainerStatus {
    #[serde(default)]
    exit_code: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Attachment {
    network: AttachedNetwork,
    #[serde(default)]
    addresses: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AttachedNetwork {
    #[serde(rename = "ID", default)]
    id: String,
    #[serde(default)]
    spec: NetworkSpec,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct NetworkSpec {
    #[serde(default)]
    name: String,
}

/// Every task of service `service_id`, with its address on `network` (a name or an id: a
/// service's spec names its networks by id once Swarm stored it).
pub async fn service_tasks(
    host: &str,
    service_id: &str,
    network: &str,
) -> Result<Vec<RawTask>, RuntimeError> {
    let filters = format!(r#"{{"service":["{service_id}"]}}"#);
    let body = get(host, &format!("/tasks?filters={}", percent_encode(&filters))).await?;
    let tasks: Vec<Task> = serde_json::from_slice(&body).map_err(|e| RuntimeError::Engine {
        what: format!("tasks of service {service_id}"),
        message: format!("unreadable answer: {e}"),
    })?;
    Ok(tasks.into_iter().map(|t| raw_task(t, network)).collect())
}

fn raw_task(t: Task, network: &str) -> RawTask {
    let ip = t
        .networks_attachments
        .iter()
        .filter(|a| a.network.spec.name == network || a.network.id == network)
        .flat_map(|a| &a.addresses)
        .find_map(|cidr| cidr.split('/').next()?.parse::<Ipv4Addr>().ok());
    let err = t.status.err.filter(|e| !e.is_empty());
    RawTask {
        created_at: t.created_at,
        node_id: t.node_id.filter(|n| !n.is_empty()),
        observed: Observed {
            state: t.status.state,
            desired: t.desired_state,
            error: err,
            message: t.status.message,
            exit_code: t.status.container_status.and_then(|c| c.exit_code),
            node: None,
            ip,
        },
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One GET to the engine at `host` (`unix:///path` or `tcp://host:port`), its body on 200.
async fn get(host: &str, path: &str) -> Result<Bytes, RuntimeError> {
    let unreachable =
        |detail: String| RuntimeError::EngineUnreachable { host: host.to_string(), detail };
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, "docker")
        .body(Empty::<Bytes>::new())
        .map_err(|e| unreachable(e.to_string()))?;
    let unix_socket =
        host.strip_prefix("unix://").or_else(|| host.starts_with('/').then_some(host));
    let response = if let Some(path) = unix_socket {
        let stream =
            tokio::net::UnixStream::connect(path).await.map_err(|e| unreachable(e.to_string()))?;
        send(stream, request).await
    } else {
        let addr = host.trim_start_matches("tcp://").trim_start_matches("http://");
        let stream =
            tokio::net::TcpStream::connect(addr).await.map_err(|e| unreachable(e.to_string()))?;
        send(stream, request).await
    }
    .map_err(|e| unreachable(e.to_string()))?;
    let status = response.status();
    let body =
        response.into_body().collect().await.map_err(|e| unreachable(e.to_string()))?.to_bytes();
    if !status.is_success() {
        return Err(RuntimeError::Engine {
            what: format!("GET {path}"),
            message: String::from_utf8_lossy(&body).trim().to_string(),
        });
    }
    Ok(body)
}

async fn send<S>(
    stream: S,
    request: hyper::Request<Empty<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, hyper::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(%e, "engine connection ended");
        }
    });
    sender.send_request(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_s_overlay_address_is_read_from_its_network_attachments() {
        let json = r#"[{"ID":"t1","CreatedAt":"2026-12-06T10:57:15Z","NodeID":"n1",
            "DesiredState":"running",
            "Status":{"State":"running","Message":"started","ContainerStatus":{"ExitCode":0}},
            "NetworksAttachments":[
              {"Network":{"Spec":{"Name":"ingress"}},"Addresses":["10.0.0.5/24"]},
              {"Network":{"Spec":{"Name":"cutover-overlay"}},"Addresses":["10.98.0.2/24"]}]}]"#;
        let tasks: Vec<Task> = serde_json::from_str(json).unwrap();
        let t = raw_task(tasks.into_iter().next().unwrap(), "cutover-overlay");
        assert_eq!(t.observed.ip, Some(Ipv4Addr::new(10, 98, 0, 2)));
        assert_eq!((t.node_id.as_deref(), t.observed.state.as_str()), (Some("n1"), "running"));
        assert_eq!(t.observed.error, None);
    }

    #[test]
    fn filters_are_percent_encoded() {
        assert_eq!(percent_encode(r#"{"service":["a1"]}"#), "%7B%22service%22%3A%5B%22a1%22%5D%7D");
    }
}
