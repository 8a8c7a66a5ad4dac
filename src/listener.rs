//! Accept loop: one session task per socket, with the client cap enforced.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::session::{self, Shared};
use crate::shutdown::{reached, Phase};

/// Decrements the live-client count when a session ends, however it ends.
struct ClientSlot(Arc<Shared>);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Accepts until the shutdown phase reaches Draining. Each session holds a
/// clone of `alive`; the app knows every session has ended when the
/// receiving side sees all senders gone.
pub async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<Phase>,
    alive: mpsc::Sender<()>,
) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = reached(&mut shutdown, Phase::Draining) => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Usually EMFILE: back off briefly instead of spinning.
                tracing::error!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let max = shared.config().pooler.max_client_conn;
        let live = shared.clients.fetch_add(1, Ordering::Relaxed) + 1;
        let slot = ClientSlot(shared.clone());
        let client = shared.client_list.register(peer, stream.local_addr().ok());
        let entry = client.entry.clone();
        let shared = shared.clone();
        let alive = alive.clone();
        let task = tokio::spawn(async move {
            let _slot = slot;
            let _alive = alive;
            let admission = session::Admission::of(live, max);
            session::serve(shared, stream, peer, admission, client).await;
        });
        entry.set_abort(task.abort_handle());
    }
}
