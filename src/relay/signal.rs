//! A wake-up from one pump to the other: one waiter, one flag.
//!
//! Each pump waits on exactly one signal, and both pumps run in the same
//! task, so a waiter list is more than this needs: tokio's `Notify` takes
//! its lock twice per wait (to join its list, and to leave it when the
//! future is dropped). A `Signal` keeps the flag and the last waker under
//! one short lock, and a wait that is dropped leaves nothing to undo.

use std::future::poll_fn;
use std::sync::Mutex;
use std::task::{Poll, Waker};

#[derive(Default)]
pub(super) struct Signal {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Raised and not yet seen: the next wait returns at once.
    raised: bool,
    waker: Option<Waker>,
}

impl Signal {
    /// Raises the signal and wakes the waiter, if one waits. Raised with
    /// nobody waiting, the next wait returns at once (as `notify_one`).
    pub(super) fn raise(&self) {
        let waker = {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            inner.raised = true;
            inner.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Waits until the signal is raised, and lowers it.
    pub(super) async fn wait(&self) {
        poll_fn(|cx| {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            if inner.raised {
                inner.raised = false;
                return Poll::Ready(());
            }
            match &inner.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => inner.waker = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::Signal;
    use std::future::Future;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_raise_before_the_wait_is_kept_once() {
        let s = Signal::default();
        s.raise();
        s.raise();
        s.wait().await;
        let mut second = std::pin::pin!(s.wait());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(
            second.as_mut().poll(&mut cx).is_pending(),
            "two raises before a wait count once"
        );
    }

    #[tokio::test]
    async fn a_raise_wakes_a_waiter_in_another_task() {
        let s = Arc::new(Signal::default());
        let waiter = tokio::spawn({
            let s = s.clone();
            async move { s.wait().await }
        });
        s.raise();
        waiter.await.expect("the waiter finishes");
    }
}
