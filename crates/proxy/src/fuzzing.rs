//! Properties of the load balancer's parsers, for the fuzz targets in `fuzz/` and for the test
//! that replays their corpora (`tests/fuzz_corpus.rs`). Each function panics when the parser
//! breaks its property on `data`.
//!
//! The properties compare the parser with a *reference reading*: a plain, unoptimised
//! transcription of the RFC's grammar, written apart from the parser and without its limits.
//! The parser may refuse more than the reference (ALB's size limits), never less, and where
//! both accept they agree on what the bytes mean.

use std::mem::MaybeUninit;

use bytes::BytesMut;

use crate::fields::MAX_HEADERS;
use crate::h1::{self, RequestBody};
use crate::upstream::{self, BadFraming, Chunked, Delimit, Step};

/// What a request head means for the target, as both readings tell it.
#[derive(Debug, PartialEq, Eq)]
struct RequestMeaning {
    head_len: usize,
    body: RequestBody,
    /// The Host the target gets.
    host: Option<Vec<u8>>,
    /// The origin-form target the target gets.
    path: String,
}

/// The HTTP/1 request-head parser ([`h1::parse_head`] and [`h1::check_head`]) accepts only
/// what the reference accepts (httparse, then RFC 9112's framing, Host and request-target
/// rules), and reads it the same way.
pub fn h1_request_head(data: &[u8]) {
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let ours = match h1::parse_head(data, &mut headers) {
        Ok(Some((req, len))) => h1::check_head(&req, len).map(|head| {
            let path = match head.path.strip_prefix('?') {
                Some(_) => format!("/{}", head.path),
                None => head.path.to_string(),
            };
            let host = head.target_host().map(<[u8]>::to_vec);
            Some(RequestMeaning { head_len: head.head_len, body: head.body, host, path })
        }),
        Ok(None) => Ok(None),
        Err(status) => Err(status),
    };
    let reference = reference::request_head(data);
    let shown = || String::from_utf8_lossy(data).into_owned();
    match ours {
        Ok(Some(ours)) => match reference {
            Ok(Some(reference)) => assert_eq!(ours, reference, "{:?}", shown()),
            other => {
                panic!("accepted {ours:?}, which the reference reads as {other:?}: {:?}", shown())
            }
        },
        Err(status) => assert!(
            [400, 414, 431].contains(&status.as_u16()),
            "refused with {status}: {:?}",
            shown()
        ),
        Ok(None) => {}
    }
}

/// The chunked decoder ([`upstream::decode_chunked`]), fed `data` in pieces, gives the same
/// body, trailers and length as the reference decoder where that accepts, never accepts what it
/// refuses, and refuses beyond it only for its line and trailer limits.
pub fn chunked(data: &[u8]) {
    // The first byte chooses where the input is cut, so that every state meets a boundary.
    let Some((&cut, data)) = data.split_first() else { return };
    let ours = decode_in_pieces(data, (cut as usize % 16) + 1);
    let reference = reference::chunked(data);
    let shown = || String::from_utf8_lossy(data).into_owned();
    match (ours, reference) {
        (Ok(Some(mut ours)), Ok(Some(mut reference))) => {
            // A header map groups fields by name; the order within a name is kept.
            ours.1.sort_by(|a, b| a.0.cmp(&b.0));
            reference.1.sort_by(|a, b| a.0.cmp(&b.0));
            assert_eq!(ours, reference, "{:?}", shown())
        }
        // Still waiting is never accepting: the decoder may judge a line only once it is
        // whole (it then refuses, or the client's close does).
        (Ok(None), Ok(None) | Err(reference::Invalid)) => {}
        (Err(BadFraming::LineTooLong | BadFraming::TrailersTooLarge), Ok(_)) => {}
        (Err(_), Err(reference::Invalid)) => {}
        (ours, reference) => {
            panic!("decoder: {ours:?}, reference: {reference:?}, input: {:?}", shown())
        }
    }
}

/// A decoded chunked body: its data, its trailer fields and how many bytes it took.
type Decoded = (Vec<u8>, Vec<(String, Vec<u8>)>, usize);

/// Runs the decoder over `data` handed to it `piece` bytes at a time; `None` if it has not
/// ended when the data runs out.
fn decode_in_pieces(data: &[u8], piece: usize) -> Result<Option<Decoded>, BadFraming> {
    let mut state = Chunked::Size;
    let mut buf = BytesMut::new();
    let mut body = Vec::new();
    let mut fed = 0;
    loop {
        match upstream::decode_chunked(&mut state, &mut buf)? {
            Step::Data(n) => body.extend_from_slice(&buf.split_to(n)),
            Step::More => {
                if fed == data.len() {
                    return Ok(None);
                }
                let end = (fed + piece).min(data.len());
                buf.extend_from_slice(&data[fed..end]);
                fed = end;
            }
            Step::End => return Ok(Some((body, Vec::new(), fed - buf.len()))),
            Step::Trailers(map) => {
                let trailers = map
                    .iter()
                    .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
                    .collect();
                return Ok(Some((body, trailers, fed - buf.len())));
            }
        }
    }
}

/// What a response head means for the client, as both readings tell it.
#[derive(Debug, PartialEq, Eq)]
struct ResponseMeaning {
    status: u16,
    delimit: Delimit,
    /// Bytes of the input the head took, interim (1xx) heads included.
    head_len: usize,
}

/// The upstream response-head parser ([`upstream::parse_head`] and its framing rules) accepts
/// only what the reference accepts (httparse, interim 1xx heads skipped, then RFC 9112 §6.3),
/// and frames the body the same way. The first byte says whether the request was a HEAD.
pub fn upstream_response(data: &[u8]) {
    let Some((&flags, data)) = data.split_first() else { return };
    let head_request = flags & 1 == 1;
    let mut buf = BytesMut::from(data);
    let ours = match upstream::parse_head(&mut buf) {
        Ok(Some(head)) => upstream::response_framing(&head, head_request).map(|(delimit, _)| {
            Some(ResponseMeaning {
                status: head.status().as_u16(),
                delimit,
                head_len: data.len() - buf.len(),
            })
        }),
        Ok(None) => Ok(None),
        Err(e) => Err(e),
    };
    let reference = reference::response_head(data, head_request);
    if let Ok(Some(ours)) = ours {
        match reference {
            Ok(Some(reference)) => {
                assert_eq!(ours, reference, "{:?}", String::from_utf8_lossy(data))
            }
            other => panic!(
                "accepted {ours:?}, which the reference reads as {other:?}: {:?}",
                String::from_utf8_lossy(data)
            ),
        }
    }
}

/// The reference readings: the RFC's grammar transcribed as plainly as possible. `Ok(None)`
/// is "incomplete", `Err` "invalid".
mod reference {
    use super::*;

    /// The reference refuses the input.
    #[derive(Debug)]
    pub struct Invalid;

    fn is_tchar(b: u8) -> bool {
        b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
    }

    fn is_token(s: &[u8]) -> bool {
        !s.is_empty() && s.iter().all(|&b| is_tchar(b))
    }

    /// RFC 9110 §7.2 `Host = uri-host [ ":" port ]`, read with the `http` crate's URI
    /// authority parser; no user info, a non-empty host, a port that is a 16-bit number.
    fn is_host(value: &[u8]) -> bool {
        let Ok(text) = std::str::from_utf8(value) else { return false };
        let Ok(authority) = text.parse::<http::uri::Authority>() else { return false };
        if text.contains('@') || authority.host().is_empty() {
            return false;
        }
        let host = authority.host();
        if let Some(inner) = host.strip_prefix('[') {
            // An IP literal: hex digits, colons and dots, and something of them.
            let Some(inner) = inner.strip_suffix(']') else { return false };
            if inner.is_empty()
                || !inner.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
            {
                return false;
            }
        }
        // What follows the host is a port: digits that make a 16-bit number, or nothing.
        let after = &text[text.len() - authority.port().map_or(0, |p| p.as_str().len())..];
        after.is_empty() || after.parse::<u16>().is_ok()
    }

    pub fn request_head(data: &[u8]) -> Result<Option<RequestMeaning>, Invalid> {
        let mut fields = [httparse::EMPTY_HEADER; 256];
        let mut req = httparse::Request::new(&mut fields);
        let head_len = match req.parse(data) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(Invalid),
        };
        let (method, target, http11) =
            (req.method.ok_or(Invalid)?, req.path.ok_or(Invalid)?, req.version == Some(1));
        let field = |name: &'static str| {
            req.headers.iter().filter(move |h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value)
        };

        // RFC 9112 §6.1–6.3: one Content-Length of digits, or Transfer-Encoding (HTTP/1.1
        // only, never with a Content-Length) whose codings are `chunked` alone.
        let lengths: Vec<&[u8]> = field("content-length").collect();
        let codings: Vec<&[u8]> =
            field("transfer-encoding").flat_map(|v| v.split(|&b| b == b',')).collect();
        let body = match (lengths.as_slice(), codings.is_empty()) {
            ([], true) => RequestBody::None,
            ([], false) => {
                let chunked =
                    codings.len() == 1 && codings[0].trim_ascii().eq_ignore_ascii_case(b"chunked");
                if !chunked || !http11 {
                    return Err(Invalid);
                }
                RequestBody::Chunked
            }
            ([length], true) => {
                if length.is_empty() || !length.iter().all(u8::is_ascii_digit) {
                    return Err(Invalid);
                }
                let n: u64 = std::str::from_utf8(length).unwrap().parse().map_err(|_| Invalid)?;
                if n == 0 { RequestBody::None } else { RequestBody::Length(n) }
            }
            _ => return Err(Invalid),
        };

        // RFC 9112 §3.2: exactly one valid Host on HTTP/1.1, at most one on HTTP/1.0.
        let hosts: Vec<&[u8]> = field("host").collect();
        let host = match hosts.as_slice() {
            [] if !http11 => None,
            [host] if is_host(host) => Some(host.to_vec()),
            _ => return Err(Invalid),
        };

        // RFC 9112 §3.2.1–3.2.4: the four forms of the request target.
        let origin_or_asterisk = target.starts_with('/') || (target == "*" && method == "OPTIONS");
        let (path, host) = if origin_or_asterisk {
            (target.to_string(), host)
        } else if method == "CONNECT" {
            if !is_host(target.as_bytes()) {
                return Err(Invalid);
            }
            (target.to_string(), host)
        } else {
            let lower = target.to_ascii_lowercase();
            let rest = match lower.find("://") {
                Some(i) if &lower[..i] == "http" || &lower[..i] == "https" => &target[i + 3..],
                _ => return Err(Invalid),
            };
            let end = rest.find(['/', '?']).unwrap_or(rest.len());
            let authority = &rest[..end];
            if !is_host(authority.as_bytes()) {
                return Err(Invalid);
            }
            let path = match &rest[end..] {
                "" => "/".to_string(),
                p if p.starts_with('?') => format!("/{p}"),
                p => p.to_string(),
            };
            (path, Some(authority.as_bytes().to_vec()))
        };
        Ok(Some(RequestMeaning { head_len, body, host, path }))
    }

    /// RFC 9112 §7.1's chunked body, one line at a time.
    pub fn chunked(data: &[u8]) -> Result<Option<Decoded>, Invalid> {
        let mut at = 0;
        let mut body = Vec::new();
        // The next CRLF-ended line from `at`, without its CRLF; a bare LF is invalid.
        let line = |at: usize| -> Result<Option<&[u8]>, Invalid> {
            let Some(lf) = data[at..].iter().position(|&b| b == b'\n') else { return Ok(None) };
            let line = &data[at..at + lf];
            line.strip_suffix(b"\r").map(Some).ok_or(Invalid)
        };
        loop {
            let Some(size_line) = line(at)? else { return Ok(None) };
            at += size_line.len() + 2;
            let hex = size_line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
            let size = u64::from_str_radix(std::str::from_utf8(&size_line[..hex]).unwrap(), 16)
                .map_err(|_| Invalid)?;
            if !chunk_ext(&size_line[hex..]) {
                return Err(Invalid);
            }
            if size == 0 {
                break;
            }
            let size = usize::try_from(size).map_err(|_| Invalid)?;
            if data.len() < at.saturating_add(size) {
                // The chunk has not all arrived; its data so far is not judged.
                return Ok(None);
            }
            body.extend_from_slice(&data[at..at + size]);
            at += size;
            match data.get(at..at + 2) {
                None if data.len() - at < 2 && b"\r".starts_with(&data[at..]) => return Ok(None),
                Some(b"\r\n") => at += 2,
                _ => return Err(Invalid),
            }
        }
        // trailer-section CRLF: field lines until an empty one.
        let mut trailers = Vec::new();
        loop {
            let Some(field) = line(at)? else { return Ok(None) };
            at += field.len() + 2;
            if field.is_empty() {
                return Ok(Some((body, trailers, at)));
            }
            let colon = field.iter().position(|&b| b == b':').ok_or(Invalid)?;
            let (name, value) = (&field[..colon], &field[colon + 1..]);
            // OWS around the value: spaces and tabs only.
            let ows = |b: &u8| *b == b' ' || *b == b'\t';
            let start = value.iter().position(|b| !ows(b)).unwrap_or(value.len());
            let end = value.iter().rposition(|b| !ows(b)).map_or(start, |i| i + 1);
            let value = &value[start..end];
            let value_ok = value
                .iter()
                .all(|&b| b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80);
            if !is_token(name) || !value_ok {
                return Err(Invalid);
            }
            trailers.push((String::from_utf8(name.to_ascii_lowercase()).unwrap(), value.to_vec()));
        }
    }

    /// `*( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )`, consumed left to right.
    fn chunk_ext(mut s: &[u8]) -> bool {
        let bws = |s: &mut &[u8]| {
            while let [b' ' | b'\t', rest @ ..] = *s {
                *s = rest;
            }
        };
        let token = |s: &mut &[u8]| {
            let n = s.iter().take_while(|&&b| is_tchar(b)).count();
            *s = &s[n..];
            n > 0
        };
        while !s.is_empty() {
            bws(&mut s);
            let [b';', rest @ ..] = s else { return false };
            s = rest;
            bws(&mut s);
            if !token(&mut s) {
                return false;
            }
            let mut after = s;
            bws(&mut after);
            if let [b'=', rest @ ..] = after {
                s = rest;
                bws(&mut s);
                if let [b'"', rest @ ..] = s {
                    s = rest;
                    loop {
                        match s {
                            [b'"', rest @ ..] => {
                                s = rest;
                                break;
                            }
                            [b'\\', q, rest @ ..] if *q == b'\t' || *q >= 0x20 && *q != 0x7f => {
                                s = rest
                            }
                            [b, rest @ ..]
                                if *b == b'\t' || (*b >= 0x20 && *b != 0x7f && *b != b'\\') =>
                            {
                                s = rest
                            }
                            _ => return false,
                        }
                    }
                } else if !token(&mut s) {
                    return false;
                }
            }
        }
        true
    }

    pub fn response_head(
        data: &[u8],
        head_request: bool,
    ) -> Result<Option<ResponseMeaning>, Invalid> {
        let mut at = 0;
        loop {
            let mut fields = [httparse::EMPTY_HEADER; 256];
            let mut res = httparse::Response::new(&mut fields);
            let len = match res.parse(&data[at..]) {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(_) => return Err(Invalid),
            };
            at += len;
            let status = res.code.ok_or(Invalid)?;
            if !(100..=999).contains(&status) {
                return Err(Invalid);
            }
            if (100..200).contains(&status) && status != 101 {
                continue;
            }
            let field = |name: &'static str| {
                res.headers
                    .iter()
                    .filter(move |h| h.name.eq_ignore_ascii_case(name))
                    .map(|h| h.value)
            };
            // RFC 9112 §6.3, in its order.
            let delimit =
                if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
                    Delimit::None
                } else if let Some(last) = field("transfer-encoding").next_back() {
                    let final_coding = last.split(|&b| b == b',').next_back().unwrap_or_default();
                    if final_coding.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                        Delimit::Chunked
                    } else {
                        Delimit::UntilClose
                    }
                } else {
                    let lengths: Vec<&[u8]> = field("content-length").collect();
                    match lengths.as_slice() {
                        [] => Delimit::UntilClose,
                        [v] if !v.is_empty() && v.iter().all(u8::is_ascii_digit) => {
                            Delimit::Length(
                                std::str::from_utf8(v).unwrap().parse().map_err(|_| Invalid)?,
                            )
                        }
                        _ => return Err(Invalid),
                    }
                };
            return Ok(Some(ResponseMeaning { status, delimit, head_len: at }));
        }
    }
}
