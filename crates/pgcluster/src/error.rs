//! Errors raised while starting or driving a throwaway cluster.
//!
//! Every variant that comes from a failed program keeps the command line,
//! its exit status and what it printed, because the usual causes (a missing
//! binary, a permission problem under `/tmp`, a port already taken) are only
//! visible there or in the server log.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

/// How many lines of a server log an error quotes: enough to show the FATAL
/// line and what led to it without burying the message.
const LOG_TAIL_LINES: usize = 20;

/// Why a throwaway cluster could not be started or driven.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No directory with `initdb`, `pg_ctl` and `postgres` was found.
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found ({searched}): \
         install them with `apt-get install postgresql` or set PGLITTLE_PG_BINDIR \
         to the directory that holds them"
    )]
    BinariesNotFound {
        /// Where we looked, for the message.
        searched: String,
    },

    /// PostgreSQL refuses to run as root, and there is no user to run it as.
    #[error(
        "running as root, but there is no `postgres` user to run the servers as \
         (PostgreSQL refuses to run as root): create one with \
         `useradd --system --user-group postgres`, or install the `postgresql` package"
    )]
    NoPostgresUser,

    /// A file-system or process-spawning operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What we were doing.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A program ran but exited unsuccessfully.
    #[error("`{command}` failed ({status}){}", output_text(.stdout, .stderr))]
    Command {
        /// The command line, for copy-pasting into a shell.
        command: String,
        /// How it exited.
        status: ExitStatus,
        /// What it printed on stdout.
        stdout: String,
        /// What it printed on stderr.
        stderr: String,
    },

    /// `pg_ctl start` failed; the server log usually says why.
    #[error(
        "`{command}` failed to start the server ({status}){}\nlast lines of {}:\n{log_tail}",
        output_text(.stdout, .stderr),
        .log.display()
    )]
    ServerStart {
        /// The command line.
        command: String,
        /// How `pg_ctl` exited.
        status: ExitStatus,
        /// What `pg_ctl` printed on stdout.
        stdout: String,
        /// What `pg_ctl` printed on stderr.
        stderr: String,
        /// The server log file.
        log: PathBuf,
        /// The last lines of the server log.
        log_tail: String,
    },

    /// A condition polled for (replica streaming, ...) never became true.
    #[error(
        "timed out after {waited:?} waiting for {what} (last result: {last}); last lines of {}:\n{log_tail}",
        .log.display()
    )]
    Timeout {
        /// What we waited for.
        what: String,
        /// How long we waited.
        waited: Duration,
        /// The last answer or error seen while polling.
        last: String,
        /// The most relevant server log.
        log: PathBuf,
        /// Its last lines.
        log_tail: String,
    },

    /// `stop_instance` was given a mode `pg_ctl` does not know.
    #[error("unknown shutdown mode {0:?}: use \"fast\", \"immediate\" or \"smart\"")]
    InvalidStopMode(String),

    /// The cluster was already stopped and its files removed.
    #[error("the cluster has been stopped")]
    Stopped,
}

/// Formats a program's output for an error message, leaving out empty parts
/// so the common one-line messages stay one line.
fn output_text(stdout: &str, stderr: &str) -> String {
    let mut text = String::new();
    for (name, part) in [("stderr", stderr), ("stdout", stdout)] {
        let part = part.trim_end();
        if !part.is_empty() {
            text.push_str(&format!("\n{name}:\n{part}"));
        }
    }
    text
}

/// The last lines of a server log, or a note saying why there are none: an
/// error message must never fail because the log is missing.
pub(super) fn log_tail(log: &Path) -> String {
    match std::fs::read(log) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(LOG_TAIL_LINES);
            let tail = lines[start..].join("\n");
            if tail.is_empty() {
                "(log is empty)".to_string()
            } else {
                tail
            }
        }
        Err(e) => format!("(could not read log: {e})"),
    }
}
