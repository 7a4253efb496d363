//! An HTTP/2 client connection's byte stream, as hyper sees it: stamps activity for the idle
//! timeout. (HTTP/1 connections are served by [`crate::h1`], which keeps its own time.)

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::clock;

/// State shared between a connection's byte stream and its idle watchdog.
pub struct ConnShared {
    /// `clock::now_ms()` of the last byte read or written.
    pub activity_ms: AtomicU64,
}

impl ConnShared {
    pub fn new() -> Self {
        ConnShared { activity_ms: AtomicU64::new(clock::now_ms()) }
    }

    pub fn idle_ms(&self) -> u64 {
        clock::now_ms().saturating_sub(self.activity_ms.load(Ordering::Relaxed))
    }
}

pub struct ConnIo<I> {
    inner: I,
    shared: Arc<ConnShared>,
}

impl<I> ConnIo<I> {
    pub fn new(inner: I, shared: Arc<ConnShared>) -> Self {
        ConnIo { inner, shared }
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
        if let Poll::Ready(Ok(())) = result
            && buf.filled().len() > before
        {
            this.shared.activity_ms.store(clock::now_ms(), Ordering::Relaxed);
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
