//! Upgraded connections (WebSocket): after a 101, bytes are copied both ways until either side
//! closes, the connection idles past the listener's idle timeout, the listener goes away, or the
//! target is released at the end of its deregistration delay.
//!
//! Closing is graceful: for a WebSocket the client gets a Close frame (1001, going away) if the
//! target→client stream sits at a frame boundary, and both sides then get a FIN, never a reset.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::clock;
use crate::forward::ConnCtx;
use crate::target::TargetRt;
use crate::upstream::Upgraded;

/// Close frame, status 1001 (going away), unmasked as a server sends it.
const CLOSE_GOING_AWAY: [u8; 4] = [0x88, 0x02, 0x03, 0xE9];

/// Tracks WebSocket frame boundaries in one direction, so a Close frame can be slipped in
/// between two frames and never into the middle of one.
#[derive(Default)]
struct Frames {
    header: [u8; 14],
    have: usize,
    payload_left: u64,
}

impl Frames {
    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.payload_left > 0 {
                let k = (self.payload_left as usize).min(data.len());
                self.payload_left -= k as u64;
                data = &data[k..];
                continue;
            }
            self.header[self.have] = data[0];
            self.have += 1;
            data = &data[1..];
            if self.have >= 2 {
                let len7 = self.header[1] & 0x7f;
                let masked = self.header[1] & 0x80 != 0;
                let ext = match len7 {
                    126 => 2,
                    127 => 8,
                    _ => 0,
                };
                let need = 2 + ext + if masked { 4 } else { 0 };
                if self.have == need {
                    self.payload_left = match ext {
                        0 => len7 as u64,
                        2 => u16::from_be_bytes([self.header[2], self.header[3]]) as u64,
                        _ => u64::from_be_bytes(self.header[2..10].try_into().unwrap_or([0; 8])),
                    };
                    self.have = 0;
                }
            }
        }
    }

    fn at_boundary(&self) -> bool {
        self.have == 0 && self.payload_left == 0
    }
}

/// A tunnel about to open: counted against its target from before the 101 goes out, so a
/// draining target never looks idle in between.
pub struct Tunnel(Arc<TargetRt>);

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.0.end_long_lived();
    }
}

impl Tunnel {
    pub fn open(target: Arc<TargetRt>) -> Tunnel {
        target.long_lived.fetch_add(1, Ordering::SeqCst);
        Tunnel(target)
    }

    /// Copies bytes between the client and the target's socket until one side closes, the
    /// tunnel idles, the listener stops or the target is released. `early` is what the client
    /// sent after its request head.
    pub async fn run<C>(
        self,
        ctx: &ConnCtx,
        client: &mut C,
        early: Bytes,
        upstream: Upgraded,
        websocket: bool,
        idle: Duration,
    ) where
        C: AsyncRead + AsyncWrite + Unpin,
    {
        let (mut client_rd, mut client_wr) = tokio::io::split(client);
        let Upgraded { stream: mut upstream, leftover, release } = upstream;
        let (mut up_rd, mut up_wr) = upstream.split();
        let mut stop = ctx.listener.stop.subscribe();
        let check = idle.min(Duration::from_secs(1));
        let activity = AtomicU64::new(clock::now_ms());
        let mut frames = Frames::default();
        let mut mid_write = false;
        let close = {
            let to_target = async {
                if up_wr.write_all(&early).await.is_ok() {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match client_rd.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        activity.store(clock::now_ms(), Ordering::Relaxed);
                        if up_wr.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
                let _ = up_wr.shutdown().await;
            };
            let to_client = async {
                if !leftover.is_empty() {
                    mid_write = true;
                    if client_wr.write_all(&leftover).await.is_ok() {
                        mid_write = false;
                        if websocket {
                            frames.feed(&leftover);
                        }
                    }
                }
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let n = match up_rd.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    activity.store(clock::now_ms(), Ordering::Relaxed);
                    mid_write = true;
                    // Flushed: a TLS stream may hold the last record back otherwise.
                    if client_wr.write_all(&buf[..n]).await.is_err()
                        || client_wr.flush().await.is_err()
                    {
                        break;
                    }
                    mid_write = false;
                    if websocket {
                        frames.feed(&buf[..n]);
                    }
                }
                let _ = client_wr.shutdown().await;
            };
            let both = async { tokio::join!(to_target, to_client) };
            tokio::pin!(both);
            loop {
                tokio::select! {
                    _ = both.as_mut() => break false,
                    _ = release.released() => break true,
                    _ = crate::flag_set(&mut stop) => break true,
                    _ = tokio::time::sleep(check) => {
                        if clock::now_ms().saturating_sub(activity.load(Ordering::Relaxed)) >= idle.as_millis() as u64 {
                            break true;
                        }
                    }
                }
            }
        };
        if close {
            let limit = Duration::from_secs(1);
            if websocket && !mid_write && frames.at_boundary() {
                let _ = tokio::time::timeout(limit, client_wr.write_all(&CLOSE_GOING_AWAY)).await;
            }
            let _ = tokio::time::timeout(limit, client_wr.shutdown()).await;
            let _ = tokio::time::timeout(limit, up_wr.shutdown()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Frames;

    #[test]
    fn frame_boundaries_are_tracked_across_reads() {
        let mut f = Frames::default();
        // Text frame "hi", then a 300-byte binary frame split over reads.
        f.feed(&[0x81, 0x02, b'h', b'i']);
        assert!(f.at_boundary());
        let mut big = vec![0x82, 126, 0x01, 0x2c];
        big.extend(std::iter::repeat_n(0u8, 300));
        f.feed(&big[..3]);
        assert!(!f.at_boundary());
        f.feed(&big[3..100]);
        assert!(!f.at_boundary());
        f.feed(&big[100..]);
        assert!(f.at_boundary());
    }
}
