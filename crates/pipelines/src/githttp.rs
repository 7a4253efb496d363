//! Git's smart HTTP protocol for the hosted repositories: `git http-backend` run as a CGI per
//! request, the request body streamed to its stdin, its stdout parsed (CGI headers, `Status:`)
//! and streamed back. After a receive-pack the pushes its hook recorded start the pipelines.

use std::process::Stdio;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::Shared;
use crate::driver::valid_name;

/// Longest CGI header block read from `git http-backend`.
const CGI_HEADERS_MAX: usize = 64 * 1024;

fn plain(status: StatusCode, msg: &str) -> Response {
    (status, format!("{msg}\n")).into_response()
}

/// Why a `/git/NAME.git/…` path names no hosted repository (answered 404), if it does not.
fn not_a_repository(inner: &Shared, rest: &str) -> Option<String> {
    let Some((repo, _)) = rest.split_once('/') else {
        return Some("use /git/NAME.git/…".into());
    };
    let Some(name) = repo.strip_suffix(".git") else {
        return Some("repository URLs end in .git: /git/NAME.git".into());
    };
    if !valid_name(name) || rest.contains("..") || !inner.repo_dir(name).join("HEAD").exists() {
        return Some(format!(
            "no repository `{name}`; create it with `cutover repos create {name}`"
        ));
    }
    None
}

pub async fn handle(
    State(inner): State<Shared>,
    Path(rest): Path<String>,
    req: Request,
) -> Response {
    let rest = rest.trim_start_matches('/').to_string();
    if let Some(why) = not_a_repository(&inner, &rest) {
        return plain(StatusCode::NOT_FOUND, &why);
    }
    let is_push = rest.ends_with("/git-receive-pack");
    let (parts, body) = req.into_parts();
    let mut child = match backend_command(&inner, &rest, &parts).spawn() {
        Ok(c) => c,
        Err(err) => {
            tracing::error!("cannot run git http-backend: {err}");
            return plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot run git http-backend; is git installed?",
            );
        }
    };
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "git http-backend has no pipes");
    };
    tokio::spawn(async move {
        let mut body = body;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            if let Ok(data) = frame.into_data()
                && stdin.write_all(&data).await.is_err()
            {
                break;
            }
        }
        let _ = stdin.shutdown().await;
    });
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        let mut n = 0;
        while let Ok(Some(line)) = lines.next_line().await {
            n += 1;
            if n <= 20 {
                tracing::info!("git http-backend: {line}");
            }
        }
    });
    let waiter = inner.clone();
    tokio::spawn(async move {
        let _ = child.wait().await;
        if is_push {
            // The push scanner starts the executions the push's hook recorded.
            waiter.pushed.notify_one();
        }
    });
    let mut out = BufReader::new(stdout);
    let (status, headers) = match read_cgi_head(&mut out).await {
        Ok(head) => head,
        Err(answer) => return answer,
    };
    let stream = tokio_util::io::ReaderStream::new(out);
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

/// `git http-backend` for one request, as CGI describes it.
fn backend_command(
    inner: &Shared,
    rest: &str,
    parts: &axum::http::request::Parts,
) -> tokio::process::Command {
    let header = |n: &str| parts.headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("http-backend")
        // git and the repository's hooks run under it: the environment every child of cutover
        // starts from, never `cutover up`'s secrets.
        .env_clear()
        .envs(runtime::host_env(&[]))
        .env("GIT_PROJECT_ROOT", inner.data_dir().join("repos"))
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("PATH_INFO", format!("/{rest}"))
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("QUERY_STRING", parts.uri.query().unwrap_or(""))
        .env("REMOTE_USER", crate::routes::user_of(&parts.headers))
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("CONTENT_TYPE", header("content-type").unwrap_or_default())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(v) = header("content-length") {
        cmd.env("CONTENT_LENGTH", v);
    }
    if let Some(v) = header("content-encoding") {
        cmd.env("HTTP_CONTENT_ENCODING", v);
    }
    if let Some(v) = header("git-protocol") {
        cmd.env("GIT_PROTOCOL", v);
    }
    cmd
}

/// The CGI head of `git http-backend`'s answer: its `Status:` and the other headers.
async fn read_cgi_head(
    out: &mut BufReader<tokio::process::ChildStdout>,
) -> Result<(StatusCode, HeaderMap), Response> {
    let mut status = StatusCode::OK;
    let mut headers = HeaderMap::new();
    let mut read = 0;
    loop {
        let mut line = String::new();
        match out.read_line(&mut line).await {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(err) => {
                return Err(plain(StatusCode::BAD_GATEWAY, &format!("git http-backend: {err}")));
            }
        }
        if read > CGI_HEADERS_MAX {
            return Err(plain(StatusCode::BAD_GATEWAY, "git http-backend sent too many headers"));
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        let Some((k, v)) = line.split_once(':') else { continue };
        let v = v.trim();
        if k.eq_ignore_ascii_case("status") {
            let code = v.split_whitespace().next().and_then(|c| c.parse::<u16>().ok());
            status =
                code.and_then(|c| StatusCode::from_u16(c).ok()).unwrap_or(StatusCode::BAD_GATEWAY);
        } else if let (Ok(k), Ok(v)) = (HeaderName::try_from(k.trim()), HeaderValue::from_str(v)) {
            headers.append(k, v);
        }
    }
    Ok((status, headers))
}
