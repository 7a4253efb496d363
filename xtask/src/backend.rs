//! A minimal, fast HTTP/1.1 backend: answers every request with a fixed 13-byte body, and
//! `GET /__hits` with how many requests it served (so a benchmark can see where traffic went).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut addr: Option<SocketAddr> = None;
    let mut threads = 1;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--addr" => addr = Some(value()?.parse().context("--addr")?),
            "--threads" => threads = value()?.parse().context("--threads")?,
            "--name" => {
                value()?;
            }
            other => anyhow::bail!("unknown backend option {other}"),
        }
    }
    let addr = addr.context("--addr ADDR is required")?;
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?;
    runtime.block_on(serve(addr))
}

async fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    let listener =
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("bind {addr}"))?;
    let hits = Arc::new(AtomicU64::new(0));
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let hits = hits.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let body = if req.uri().path() == "/__hits" {
                    Bytes::from(hits.load(Ordering::Relaxed).to_string())
                } else {
                    hits.fetch_add(1, Ordering::Relaxed);
                    Bytes::from_static(b"hello, world\n")
                };
                async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
