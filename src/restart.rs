//! The process side of a rolling restart (SIGUSR2), over
//! `pglittle::upgrade`'s channel: the old process's steps (start the new
//! one, hand it the listeners, wait for it to be ready, then drain while
//! handing it the idle clients) and the new process's (take the
//! listeners, then adopt clients until the old process is gone).

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use pglittle::app::Inherited;
use pglittle::shared::Shared;
use pglittle::upgrade::{self, Channel, CLIENT, LISTENER, METRICS, READY};
use pglittle::{Phase, Running, Shutdown};

/// Ends the list of listening sockets.
const GO: u8 = b'G';
/// How long the new process has to start serving.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// New process: the listening sockets the old one sends, up to its GO.
pub fn receive_listeners(chan: &Channel) -> Result<Inherited, String> {
    let mut inherited = Inherited::default();
    let mut buf = Vec::new();
    loop {
        let msg = chan
            .recv(&mut buf)
            .map_err(|e| format!("rolling restart: {e}"))?;
        match msg {
            Some((LISTENER, Some(fd))) => inherited.listener = Some(fd.into()),
            Some((METRICS, Some(fd))) => inherited.metrics = Some(fd.into()),
            Some((GO, _)) => return Ok(inherited),
            Some((kind, _)) => return Err(format!("rolling restart: unexpected message {kind:?}")),
            None => return Err("rolling restart: the old process went away".into()),
        }
    }
}

/// New process: says it is serving, then serves every client the old
/// process hands over, until the old process is gone (its end closes).
pub fn adopt_clients(chan: Channel, running: &Running) -> Result<(), String> {
    chan.send(READY, b"", None)
        .map_err(|e| format!("rolling restart: {e}"))?;
    let Some(adopter) = running.adopter() else {
        return Ok(());
    };
    let runtime = tokio::runtime::Handle::current();
    std::thread::spawn(move || {
        let _runtime = runtime.enter();
        let mut buf = Vec::new();
        let mut adopted = 0u64;
        loop {
            match chan.recv(&mut buf) {
                Ok(Some((CLIENT, Some(fd)))) => {
                    adopter.adopt(std::net::TcpStream::from(fd), std::mem::take(&mut buf));
                    adopted += 1;
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "rolling restart: the hand-over channel failed");
                    break;
                }
            }
        }
        tracing::info!(
            clients = adopted,
            "rolling restart: the old process is gone"
        );
    });
    Ok(())
}

/// Old process: starts the new one and hands it the listeners; once it
/// serves, drains this one, handing over each idle client.
pub async fn hand_over(
    shared: &Arc<Shared>,
    (listen_fd, metrics_fd): (RawFd, Option<RawFd>),
    shutdown: &Shutdown,
) -> Result<(), String> {
    // The signal loop awaits this before taking the next signal, so a
    // second SIGUSR2 finds the first one's hand-over installed.
    if shared.handing_over() {
        return Err("a rolling restart is already under way".into());
    }
    let chan =
        upgrade::spawn_successor().map_err(|e| format!("cannot start the new process: {e}"))?;
    let send = |kind, fd| chan.send(kind, b"", fd).map_err(|e| e.to_string());
    send(LISTENER, Some(listen_fd))?;
    if let Some(fd) = metrics_fd {
        send(METRICS, Some(fd))?;
    }
    send(GO, None)?;
    let chan = tokio::task::spawn_blocking(move || {
        let mut buf = Vec::new();
        match chan.recv(&mut buf) {
            Ok(Some((READY, _))) => Ok(chan),
            Ok(_) => Err("the new process exited before serving (see its log)".to_string()),
            Err(e) => Err(e.to_string()),
        }
    });
    let chan = tokio::time::timeout(READY_WITHIN, chan)
        .await
        .map_err(|_| "the new process did not start serving in 30 s".to_string())?
        .map_err(|e| e.to_string())??;
    let (tx, rx) = std::sync::mpsc::channel::<pglittle::shared::HandedOver>();
    std::thread::spawn(move || {
        for (tcp, state) in rx {
            if let Err(e) = chan.send(CLIENT, &state, Some(tcp.as_raw_fd())) {
                tracing::warn!(error = %e, "rolling restart: a client could not be handed over; closed");
            }
        }
    });
    shared.hand_over_to(tx);
    tracing::info!("rolling restart: the new process serves; draining this one");
    shutdown.advance(Phase::Draining);
    Ok(())
}
