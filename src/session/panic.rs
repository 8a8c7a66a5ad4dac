//! A bug must end only the session it happens in. A panic while serving a
//! request is caught at the session's own boundary, so the client gets an
//! ErrorResponse (XX000) and every other session goes on; the server that
//! was lent is closed by its lease's `Drop` as the panic unwinds.

use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

/// Runs a future, turning a panic in it into `Err(message)`.
pub struct CatchPanic<F>(Pin<Box<F>>);

impl<F: Future> CatchPanic<F> {
    pub fn new(fut: F) -> Self {
        CatchPanic(Box::pin(fut))
    }
}

impl<F: Future> Future for CatchPanic<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        // Unwind safety: the future is dropped after a panic and never
        // polled again; the session only reports the panic and closes.
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(describe(payload))),
        }
    }
}

fn describe(payload: Box<dyn Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_becomes_an_error_and_values_pass() {
        assert_eq!(CatchPanic::new(async { 7 }).await, Ok(7));
        let slice = [1u8, 2, 3];
        let at = slice.len();
        let r = CatchPanic::new(async move {
            tokio::task::yield_now().await;
            slice[at..at - 1].len()
        })
        .await;
        let e = r.unwrap_err();
        assert!(e.contains("slice index starts at 3 but ends at 2"), "{e}");
    }
}
