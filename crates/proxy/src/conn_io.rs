//! The client connection's byte stream, as hyper sees it: stamps activity for the idle timeout and
//! checks the raw HTTP/1 request heads for what hyper quietly normalises.
//!
//! hyper accepts a request with both `Content-Length` and `Transfer-Encoding` (it drops the length)
//! and merges repeated identical `Content-Length` lines, so by the time the request reaches us the
//! evidence is gone. A front end that tolerates such requests is the classic smuggling setup, and
//! ALB refuses them; so the scanner here reads the heads as they stream past, follows the body
//! framing to find the next head, and records the index of the first offending request. The
//! request handler compares that index with its own count and answers 400 without forwarding.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::clock;

/// ALB's limits: the whole head, one header line, the request line.
pub const MAX_HEAD: usize = 64 * 1024;
const MAX_LINE: usize = 16 * 1024;

/// State shared between a connection's byte stream, its request handler and its idle watchdog.
pub struct ConnShared {
    /// `clock::now_ms()` of the last byte read or written.
    pub activity_ms: AtomicU64,
    /// Index (0-based, in arrival order) of the first request whose head must be refused.
    pub bad_head: AtomicU64,
    /// The status to refuse it with (400, 414 or 431).
    pub bad_status: AtomicU16,
    /// Requests the handler has seen on this connection.
    pub next_request: AtomicU64,
    /// Set when the connection stops being HTTP (after a 101 upgrade).
    pub stop_scan: AtomicBool,
    /// `clock::now_ms()` when a request head began arriving in pieces, 0 when none is: the idle
    /// watchdog closes a connection whose head takes longer than the idle timeout (slowloris),
    /// which hyper's own header timer would do at the cost of a timer allocation per request.
    pub partial_head_since_ms: AtomicU64,
}

impl ConnShared {
    pub fn new() -> Self {
        ConnShared {
            activity_ms: AtomicU64::new(clock::now_ms()),
            bad_head: AtomicU64::new(u64::MAX),
            bad_status: AtomicU16::new(400),
            next_request: AtomicU64::new(0),
            stop_scan: AtomicBool::new(false),
            partial_head_since_ms: AtomicU64::new(0),
        }
    }

    pub fn idle_ms(&self) -> u64 {
        clock::now_ms().saturating_sub(self.activity_ms.load(Ordering::Relaxed))
    }

    /// How long the current request head has been arriving, if it came in pieces.
    pub fn partial_head_ms(&self) -> u64 {
        match self.partial_head_since_ms.load(Ordering::Relaxed) {
            0 => 0,
            since => clock::now_ms().saturating_sub(since),
        }
    }
}

pub struct ConnIo<I> {
    inner: I,
    shared: Arc<ConnShared>,
    scanner: Option<Box<HeadScanner>>,
}

impl<I> ConnIo<I> {
    /// `scan` is for HTTP/1 connections; HTTP/2 has its own framing rules, enforced by h2.
    pub fn new(inner: I, shared: Arc<ConnShared>, scan: bool) -> Self {
        let scanner = scan.then(|| Box::new(HeadScanner::default()));
        ConnIo { inner, shared, scanner }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for ConnIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            let new = &buf.filled()[before..];
            if !new.is_empty() {
                this.shared.activity_ms.store(clock::now_ms(), Ordering::Relaxed);
                if let Some(scanner) = this.scanner.as_mut() {
                    if this.shared.stop_scan.load(Ordering::Relaxed) {
                        this.scanner = None;
                        this.shared.partial_head_since_ms.store(0, Ordering::Relaxed);
                    } else {
                        let was_partial = scanner.in_partial_head();
                        if let Some((index, status)) = scanner.feed(new) {
                            this.shared.bad_status.store(status, Ordering::Relaxed);
                            this.shared.bad_head.store(index, Ordering::Release);
                        }
                        let partial = scanner.in_partial_head();
                        if partial != was_partial {
                            let since = if partial { clock::now_ms().max(1) } else { 0 };
                            this.shared.partial_head_since_ms.store(since, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
        result
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for ConnIo<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = result
            && n > 0
        {
            this.shared.activity_ms.store(clock::now_ms(), Ordering::Relaxed);
        }
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = result
            && n > 0
        {
            this.shared.activity_ms.store(clock::now_ms(), Ordering::Relaxed);
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    Size { any: bool, value: u64 },
    SizeLf(u64),
    Ext(u64),
    Data(u64),
    DataCr,
    DataLf,
    TrailerLineStart,
    TrailerLine,
    TrailerLf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Head,
    Body(u64),
    Chunked(Chunk),
    Stopped,
}

/// What a head says about itself.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Smuggling-shaped or too large: refuse with this status.
    Bad(u16),
    /// Something hyper will refuse on its own; stop following the stream.
    Unknown,
    NoBody,
    Length(u64),
    Chunked,
}

/// Follows an HTTP/1 request stream head by head; see the module docs.
pub struct HeadScanner {
    state: State,
    carry: Vec<u8>,
    heads: u64,
}

impl Default for HeadScanner {
    fn default() -> Self {
        HeadScanner { state: State::Head, carry: Vec::new(), heads: 0 }
    }
}

impl HeadScanner {
    /// Consumes the next bytes of the stream; returns the index of a request to refuse and the
    /// status to refuse it with.
    pub fn feed(&mut self, mut data: &[u8]) -> Option<(u64, u16)> {
        while !data.is_empty() {
            match self.state {
                State::Stopped => return None,
                State::Body(n) => {
                    let k = (n as usize).min(data.len());
                    data = &data[k..];
                    let left = n - k as u64;
                    self.state = if left == 0 { State::Head } else { State::Body(left) };
                }
                State::Chunked(chunk) => {
                    let used = self.feed_chunked(chunk, data);
                    data = &data[used..];
                }
                State::Head => {
                    if self.carry.is_empty() {
                        // Empty lines before a request line are allowed (RFC 9112 §2.2).
                        let skip = data.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
                        data = &data[skip..];
                        if data.is_empty() {
                            break;
                        }
                        match find_head_end(data, 0) {
                            Some(end) => {
                                let verdict = analyze(&data[..end]);
                                data = &data[end..];
                                if let Some(bad) = self.after_head(verdict) {
                                    return Some(bad);
                                }
                            }
                            None => {
                                if data.len() > MAX_HEAD {
                                    return self.after_head(Verdict::Bad(431));
                                }
                                self.carry.extend_from_slice(data);
                                break;
                            }
                        }
                    } else {
                        let old = self.carry.len();
                        self.carry.extend_from_slice(data);
                        match find_head_end(&self.carry, old.saturating_sub(3)) {
                            Some(end) => {
                                let verdict = analyze(&self.carry[..end]);
                                data = &data[end - old..];
                                self.carry.clear();
                                if let Some(bad) = self.after_head(verdict) {
                                    return Some(bad);
                                }
                            }
                            None => {
                                if self.carry.len() > MAX_HEAD {
                                    self.carry = Vec::new();
                                    return self.after_head(Verdict::Bad(431));
                                }
                                break;
                            }
                        }
                    }
                }
            }
        }
        None
    }

    /// A head has started but not ended.
    pub fn in_partial_head(&self) -> bool {
        !self.carry.is_empty()
    }

    fn after_head(&mut self, verdict: Verdict) -> Option<(u64, u16)> {
        let index = self.heads;
        self.heads += 1;
        self.state = match verdict {
            Verdict::Bad(status) => {
                self.state = State::Stopped;
                return Some((index, status));
            }
            Verdict::Unknown => State::Stopped,
            Verdict::NoBody | Verdict::Length(0) => State::Head,
            Verdict::Length(n) => State::Body(n),
            Verdict::Chunked => State::Chunked(Chunk::Size { any: false, value: 0 }),
        };
        None
    }

    /// Follows chunked framing; returns how many bytes it used.
    fn feed_chunked(&mut self, mut chunk: Chunk, data: &[u8]) -> usize {
        let mut i = 0;
        while i < data.len() {
            if let Chunk::Data(n) = chunk {
                let k = (n as usize).min(data.len() - i);
                i += k;
                let left = n - k as u64;
                chunk = if left == 0 { Chunk::DataCr } else { Chunk::Data(left) };
                continue;
            }
            let b = data[i];
            i += 1;
            let end_of_size =
                |value: u64| if value == 0 { Chunk::TrailerLineStart } else { Chunk::Data(value) };
            chunk = match chunk {
                Chunk::Size { any, value } => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        let digit = (b as char).to_digit(16).unwrap_or(0) as u64;
                        match value.checked_mul(16).and_then(|v| v.checked_add(digit)) {
                            Some(v) => Chunk::Size { any: true, value: v },
                            None => return self.stop(i),
                        }
                    }
                    b';' | b' ' | b'\t' if any => Chunk::Ext(value),
                    b'\r' if any => Chunk::SizeLf(value),
                    b'\n' if any => end_of_size(value),
                    _ => return self.stop(i),
                },
                Chunk::Ext(value) => match b {
                    b'\n' => end_of_size(value),
                    _ => Chunk::Ext(value),
                },
                Chunk::SizeLf(value) => match b {
                    b'\n' => end_of_size(value),
                    _ => return self.stop(i),
                },
                Chunk::DataCr => match b {
                    b'\r' => Chunk::DataLf,
                    b'\n' => Chunk::Size { any: false, value: 0 },
                    _ => return self.stop(i),
                },
                Chunk::DataLf => match b {
                    b'\n' => Chunk::Size { any: false, value: 0 },
                    _ => return self.stop(i),
                },
                Chunk::TrailerLineStart => match b {
                    b'\r' => Chunk::TrailerLf,
                    b'\n' => {
                        self.state = State::Head;
                        return i;
                    }
                    _ => Chunk::TrailerLine,
                },
                Chunk::TrailerLine => match b {
                    b'\n' => Chunk::TrailerLineStart,
                    _ => Chunk::TrailerLine,
                },
                Chunk::TrailerLf => match b {
                    b'\n' => {
                        self.state = State::Head;
                        return i;
                    }
                    _ => return self.stop(i),
                },
                Chunk::Data(_) => chunk,
            };
        }
        self.state = State::Chunked(chunk);
        i
    }

    fn stop(&mut self, used: usize) -> usize {
        self.state = State::Stopped;
        used
    }
}

/// The end (exclusive) of a head: just after the first empty line. Lines may end in CRLF or LF.
fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    for nl in memchr::memchr_iter(b'\n', &buf[from..]) {
        let p = from + nl;
        match buf.get(p + 1) {
            Some(b'\n') => return Some(p + 2),
            Some(b'\r') if buf.get(p + 2) == Some(&b'\n') => return Some(p + 3),
            _ => {}
        }
    }
    None
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t' | b'\r', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t' | b'\r'] = s {
        s = rest;
    }
    s
}

fn analyze(head: &[u8]) -> Verdict {
    if head.len() > MAX_HEAD {
        return Verdict::Bad(431);
    }
    let mut lines = head.split(|&b| b == b'\n');
    if lines.next().is_some_and(|request_line| request_line.len() > MAX_LINE) {
        return Verdict::Bad(414);
    }
    let mut content_lengths = 0;
    let mut length = None;
    let mut transfer_encoding = false;
    let mut chunked_last = false;
    for line in lines {
        let line = match line {
            [rest @ .., b'\r'] => rest,
            l => l,
        };
        if line.is_empty() {
            continue;
        }
        if line.len() > MAX_LINE {
            return Verdict::Bad(431);
        }
        let Some(colon) = memchr::memchr(b':', line) else { return Verdict::Unknown };
        let name = &line[..colon];
        if name.len() == 14 && name.eq_ignore_ascii_case(b"content-length") {
            content_lengths += 1;
            let value = trim(&line[colon + 1..]);
            if value.is_empty() || !value.iter().all(u8::is_ascii_digit) || value.len() > 19 {
                return Verdict::Bad(400);
            }
            length = std::str::from_utf8(value).ok().and_then(|v| v.parse::<u64>().ok());
        } else if name.len() == 17 && name.eq_ignore_ascii_case(b"transfer-encoding") {
            transfer_encoding = true;
            let value = &line[colon + 1..];
            let last = value.rsplit(|&b| b == b',').next().map(trim).unwrap_or_default();
            chunked_last = last.eq_ignore_ascii_case(b"chunked");
        }
    }
    if content_lengths > 1 || (transfer_encoding && content_lengths > 0) {
        return Verdict::Bad(400);
    }
    if transfer_encoding {
        return if chunked_last { Verdict::Chunked } else { Verdict::Unknown };
    }
    match length {
        Some(n) => Verdict::Length(n),
        None if content_lengths > 0 => Verdict::Bad(400),
        None => Verdict::NoBody,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(chunks: &[&[u8]]) -> (Option<(u64, u16)>, u64) {
        let mut s = HeadScanner::default();
        let mut bad = None;
        for c in chunks {
            if let Some(b) = s.feed(c) {
                bad.get_or_insert(b);
            }
        }
        (bad, s.heads)
    }

    #[test]
    fn follows_pipelined_requests_with_bodies() {
        let stream = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\
POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
POST /y HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n\
GET /z HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(scan_all(&[stream]), (None, 4));
        // The same stream, a byte at a time.
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(scan_all(&bytes), (None, 4));
    }

    #[test]
    fn flags_the_request_with_both_framings_or_two_lengths() {
        let cl_te = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(scan_all(&[cl_te]).0, Some((1, 400)));
        let te_cl =
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-length: 4\r\n\r\n5c\r\n";
        assert_eq!(scan_all(&[te_cl]).0, Some((0, 400)));
        let dup = b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc";
        assert_eq!(scan_all(&[dup]).0, Some((0, 400)));
        let list = b"POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\nabc";
        assert_eq!(scan_all(&[list]).0, Some((0, 400)));
    }

    #[test]
    fn flags_heads_over_alb_limits() {
        let long_line = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(MAX_LINE));
        assert_eq!(scan_all(&[long_line.as_bytes()]).0, Some((0, 414)));
        let big_header = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_LINE));
        assert_eq!(scan_all(&[big_header.as_bytes()]).0, Some((0, 431)));
        let many: String = (0..8).map(|i| format!("X-{i}: {}\r\n", "a".repeat(10_000))).collect();
        let big_head = format!("GET / HTTP/1.1\r\n{many}\r\n");
        let pieces: Vec<&[u8]> = big_head.as_bytes().chunks(4096).collect();
        assert_eq!(scan_all(&pieces).0, Some((0, 431)));
    }
}
