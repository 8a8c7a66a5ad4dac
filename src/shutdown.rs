//! One signal fans out to every task: SIGTERM drains (stop accepting, let
//! open transactions finish, up to shutdown_timeout), SIGINT stops at once.

use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Running,
    /// No new clients; sessions close at their next transaction boundary.
    Draining,
    /// Everything closes now.
    Stopping,
}

#[derive(Clone)]
pub struct Shutdown {
    tx: watch::Sender<Phase>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        Shutdown {
            tx: watch::channel(Phase::Running).0,
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<Phase> {
        self.tx.subscribe()
    }

    pub fn phase(&self) -> Phase {
        *self.tx.borrow()
    }

    /// Moves forward only: a drain never undoes a stop.
    pub fn advance(&self, to: Phase) {
        self.tx.send_if_modified(|p| {
            if to > *p {
                *p = to;
                true
            } else {
                false
            }
        });
    }
}

/// Waits until the phase is at least `at_least`.
pub async fn reached(rx: &mut watch::Receiver<Phase>, at_least: Phase) {
    let _ = rx.wait_for(|p| *p >= at_least).await;
}
