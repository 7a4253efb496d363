//! The data plane's worker threads, nginx's worker processes inside one process: each worker runs
//! its own single-threaded tokio runtime, serves whole client connections and keeps its own
//! keep-alive connections to targets. A request never leaves the thread that serves its
//! connection, so proxying it wakes no other thread — the cost a shared multi-thread scheduler
//! pays on every hand-off between its workers and its I/O driver.
//!
//! Accepting, the admin API, health checks and draining run on the caller's runtime; an accepted
//! socket is handed to the worker with the fewest open connections, once per connection.

use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use anyhow::Context as _;
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::target::lock;

thread_local! {
    /// Which worker this thread is; threads that are not workers count as worker 0, which only
    /// matters to in-process tests calling into the request path directly.
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// The worker serving the current thread's connections; indexes per-worker state such as the
/// targets' connection pools.
#[inline]
pub fn current() -> usize {
    INDEX.with(Cell::get)
}

struct Worker {
    runtime: Handle,
    /// Client connections this worker serves now.
    conns: Arc<AtomicUsize>,
}

pub struct Workers {
    workers: Box<[Worker]>,
    stop: std::sync::Mutex<Vec<oneshot::Sender<()>>>,
    threads: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl Workers {
    /// Starts `count` worker threads (at least one), each with its own runtime.
    pub fn start(count: usize) -> anyhow::Result<Workers> {
        let count = count.max(1);
        let mut workers = Vec::with_capacity(count);
        let mut stop = Vec::with_capacity(count);
        let mut threads = Vec::with_capacity(count);
        for index in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot build a worker's tokio runtime")?;
            let handle = runtime.handle().clone();
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("cutover-lb-{index}"))
                .spawn(move || {
                    INDEX.with(|i| i.set(index));
                    crate::metrics::set_shard(index);
                    // Serves until told to stop (or until the pool is dropped); dropping the
                    // runtime then cancels whatever connections are left.
                    runtime.block_on(async {
                        let _ = stop_rx.await;
                    });
                })
                .context("cannot start a worker thread")?;
            workers.push(Worker { runtime: handle, conns: Arc::new(AtomicUsize::new(0)) });
            stop.push(stop_tx);
            threads.push(thread);
        }
        Ok(Workers {
            workers: workers.into_boxed_slice(),
            stop: std::sync::Mutex::new(stop),
            threads: std::sync::Mutex::new(threads),
        })
    }

    pub fn count(&self) -> usize {
        self.workers.len()
    }

    /// Serves an accepted connection on the worker with the fewest open connections, so
    /// long-lived connections (WebSockets, idle keep-alives) spread as evenly as short ones.
    pub fn dispatch<F, Fut>(&self, stream: std::net::TcpStream, serve: F)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let worker = self
            .workers
            .iter()
            .min_by_key(|w| w.conns.load(Ordering::Relaxed))
            .expect("there is always at least one worker");
        let conns = worker.conns.clone();
        conns.fetch_add(1, Ordering::Relaxed);
        worker.runtime.spawn(async move {
            let _counted = Counted(conns);
            // Registers the socket with this worker's own I/O driver.
            match TcpStream::from_std(stream) {
                Ok(stream) => serve(stream).await,
                Err(e) => tracing::warn!("cannot serve an accepted connection: {e}"),
            }
        });
    }

    /// Tells every worker to stop; their remaining connections are cancelled.
    pub fn stop(&self) {
        for tx in lock(&self.stop).drain(..) {
            let _ = tx.send(());
        }
    }

    /// Stops the workers and waits for their threads to end.
    pub fn stop_and_join(&self) {
        self.stop();
        for thread in lock(&self.threads).drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
