//! HTTP-01 answers (RFC 8555 §8.3): a request for `/.well-known/acme-challenge/TOKEN` gets the
//! key authorization the control plane wrote for that token under one of the table's ACME
//! directories, before any rule sees the request, as Caddy and kamal-proxy answer them on their
//! own port 80. Requests for other paths never get here, so routing pays one prefix comparison.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use routes::acme::{HTTP_01_PREFIX, http_01_file};

use crate::forward::{ConnCtx, ProxyBody};

/// The answer to an HTTP-01 validation request for `path`, or `None` when the path is not one,
/// or no listener of the table obtains certificates over ACME, or none of them is waiting on that
/// token (the request is routed as usual: an application behind cutover may run its own ACME
/// client).
pub fn http_01_answer(ctx: &ConnCtx, method: &str, path: &str) -> Option<Response<ProxyBody>> {
    let token = path.strip_prefix(HTTP_01_PREFIX)?;
    if method != "GET" && method != "HEAD" {
        return None;
    }
    let table = ctx.shared.table.load();
    let key_authorization = table
        .table
        .listeners
        .values()
        .filter_map(|l| l.tls.as_ref()?.acme.as_ref())
        .filter_map(|acme| http_01_file(&acme.dir, token))
        .find_map(|file| std::fs::read(file).ok())?;
    let mut r = Response::new(ProxyBody::Full(Some(Bytes::from(key_authorization))));
    *r.status_mut() = StatusCode::OK;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r.headers_mut().insert(header::SERVER, HeaderValue::from_static("cutover"));
    Some(r)
}
