//! Two small concurrency tools the request path shares: a cache line of its own for state each
//! worker writes, and a waker that lets a connection's task tell its own wake-ups from those of
//! its watchdog and its listener's stop signal.

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Wake, Waker};

use atomic_waker::AtomicWaker;

/// A value alone on its cache lines (128 bytes: x86's adjacent-line prefetch pulls lines in
/// pairs), so that two workers writing neighbouring values never bounce a line between cores.
#[repr(align(128))]
#[derive(Default)]
pub struct CachePadded<T>(pub T);

impl<T> Deref for CachePadded<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Wakes a connection's task on behalf of its secondary futures (the watchdog's timer, the
/// listener's stop signal) and remembers that it did, so the task polls them only after one of
/// them fired rather than on each of the two or three wake-ups every request causes. Polling a
/// stop signal that has not fired is not free: a `tokio::sync::Notify` waiter takes the
/// notifier's lock to check its waker, and a watch channel has eight such notifiers for all its
/// receivers, so connections on different workers take the same locks.
///
/// Use: poll the main future with the task's context; then, if [`SideWaker::fired`] says so,
/// poll the secondary futures with [`SideWaker::context`].
pub struct SideWaker {
    inner: Arc<Inner>,
    waker: Waker,
    /// The task waker `inner.task` holds, as last registered: a task's waker rarely changes, so
    /// comparing with it saves re-registering (two atomic exchanges) on every turn.
    registered: Option<Waker>,
}

struct Inner {
    fired: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Inner {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl SideWaker {
    /// A side waker that has "fired", so the secondary futures get their first poll (which
    /// registers them) on the task's first turn.
    pub fn new() -> Self {
        let inner = Arc::new(Inner { fired: AtomicBool::new(true), task: AtomicWaker::new() });
        SideWaker { waker: Waker::from(inner.clone()), inner, registered: None }
    }

    /// Whether a secondary future was woken since the last call (which resets it); also
    /// remembers `cx`'s waker as the task to wake.
    #[inline]
    pub fn fired(&mut self, cx: &Context<'_>) -> bool {
        let fired = self.inner.fired.load(Ordering::Acquire)
            && self.inner.fired.swap(false, Ordering::AcqRel);
        // A wake takes the registered waker, so after one the task's is registered again.
        if fired || !self.registered.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            self.inner.task.register(cx.waker());
            self.registered = Some(cx.waker().clone());
        }
        fired
    }

    /// The context to poll the secondary futures with.
    pub fn context(&self) -> Context<'_> {
        Context::from_waker(&self.waker)
    }

    /// Polls the secondary futures again on the next turn: after one was reset, say, and must
    /// register its waker anew.
    pub fn again(&self) {
        self.inner.fired.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::Poll;

    use super::*;

    /// Counts how often it was woken.
    struct Count(std::sync::atomic::AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn side_wakes_reach_the_task_and_are_told_apart_from_its_own() {
        let count = Arc::new(Count(0.into()));
        let task = Waker::from(count.clone());
        let cx = Context::from_waker(&task);
        let mut side = SideWaker::new();
        assert!(side.fired(&cx), "the first turn polls the secondary futures");
        assert!(!side.fired(&cx), "and the next does not, unless one was woken");

        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut rx = pin!(rx);
        assert!(rx.as_mut().poll(&mut side.context()).is_pending());
        tx.send(()).unwrap();
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "the side wake woke the task");
        assert!(side.fired(&cx));
        assert!(matches!(rx.as_mut().poll(&mut side.context()), Poll::Ready(Ok(()))));
        assert!(!side.fired(&cx));

        side.again();
        assert!(side.fired(&cx), "again() asks for one more poll");

        // A task that moved to another waker is woken through the new one.
        let other = Arc::new(Count(0.into()));
        let other_task = Waker::from(other.clone());
        assert!(!side.fired(&Context::from_waker(&other_task)));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut rx = pin!(rx);
        assert!(rx.as_mut().poll(&mut side.context()).is_pending());
        tx.send(()).unwrap();
        assert_eq!(other.0.load(Ordering::SeqCst), 1);
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "the old waker is not woken again");
    }
}
