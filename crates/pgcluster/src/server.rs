//! Starting, stopping and watching servers, and editing their files.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use super::error::{log_tail, ClusterError};
use super::exec::{free_ports, run, Runner};
use super::{PgInstance, POLL_INTERVAL, PORT_RETRIES, SERVER_TIMEOUT_SECS};

/// `pg_ctl start -w`; on failure the error quotes the server log.
pub(super) fn start_server(runner: &Runner, inst: &PgInstance) -> Result<(), ClusterError> {
    let log = inst.log_path();
    let mut cmd = runner.server_tool("pg_ctl");
    cmd.arg("-D").arg(&inst.data_dir).arg("-l").arg(&log).args([
        "-w",
        "-t",
        &SERVER_TIMEOUT_SECS.to_string(),
        "start",
    ]);
    match run(cmd) {
        Err(ClusterError::Command {
            command,
            status,
            stdout,
            stderr,
        }) => Err(ClusterError::ServerStart {
            command,
            status,
            stdout,
            stderr,
            log_tail: log_tail(&log),
            log,
        }),
        other => other.map(drop),
    }
}

/// Starts a server for the first time, moving it to a fresh port if the
/// one chosen earlier was taken by someone else in the meantime.
pub(super) fn start_new_server(runner: &Runner, inst: &mut PgInstance) -> Result<(), ClusterError> {
    let mut attempt = 0;
    loop {
        let log = inst.log_path();
        let log_len = fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        match start_server(runner, inst) {
            Err(_) if attempt < PORT_RETRIES && port_was_taken(&log, log_len) => {
                attempt += 1;
                inst.port = free_ports(1)?[0];
                append_conf(&inst.data_dir, &[format!("port = {}", inst.port)])?;
            }
            other => return other,
        }
    }
}

/// Whether the server log, past `from`, says the port could not be bound.
fn port_was_taken(log: &Path, from: u64) -> bool {
    let Ok(bytes) = fs::read(log) else {
        return false;
    };
    let start = usize::try_from(from).unwrap_or(usize::MAX).min(bytes.len());
    String::from_utf8_lossy(&bytes[start..]).contains("Address already in use")
}

pub(super) fn pg_ctl_stop(
    runner: &Runner,
    data_dir: &Path,
    mode: &str,
) -> Result<(), ClusterError> {
    let mut cmd = runner.server_tool("pg_ctl");
    cmd.arg("-D").arg(data_dir).args([
        "-m",
        mode,
        "-w",
        "-t",
        &SERVER_TIMEOUT_SECS.to_string(),
        "stop",
    ]);
    run(cmd).map(drop)
}

/// Polls `check` until it returns true or `timeout` passes. Errors count as
/// "not yet" (a server that is starting refuses connections), and the last
/// one is reported on timeout.
pub(super) fn poll(
    what: &str,
    log: &Path,
    timeout: Duration,
    mut check: impl FnMut() -> Result<bool, ClusterError>,
) -> Result<(), ClusterError> {
    let started = Instant::now();
    loop {
        let last = match check() {
            Ok(true) => return Ok(()),
            Ok(false) => "condition false".to_string(),
            Err(e) => e.to_string(),
        };
        if started.elapsed() >= timeout {
            return Err(ClusterError::Timeout {
                what: what.to_string(),
                waited: started.elapsed(),
                last,
                log: log.to_path_buf(),
                log_tail: log_tail(log),
            });
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Appends lines to `postgresql.conf`. Appending (rather than recreating)
/// keeps the file's owner, which matters when we are root and the server
/// runs as `postgres`.
pub(super) fn append_conf(data_dir: &Path, lines: &[String]) -> Result<(), ClusterError> {
    let path = data_dir.join("postgresql.conf");
    let io_err = |source| ClusterError::Io {
        what: format!("could not append to {}", path.display()),
        source,
    };
    let mut file = OpenOptions::new()
        .append(true)
        .open(&path)
        .map_err(io_err)?;
    let mut text = String::from("\n");
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    file.write_all(text.as_bytes()).map_err(io_err)
}

/// Writes a file. An existing file is truncated, so it keeps its owner.
pub(super) fn write_file(path: &Path, contents: &str) -> Result<(), ClusterError> {
    fs::write(path, contents).map_err(|source| ClusterError::Io {
        what: format!("could not write {}", path.display()),
        source,
    })
}

pub(super) fn remove_file(path: &Path) -> Result<(), ClusterError> {
    fs::remove_file(path).map_err(|source| ClusterError::Io {
        what: format!("could not remove {}", path.display()),
        source,
    })
}
