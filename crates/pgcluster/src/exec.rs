//! Finding the PostgreSQL binaries and running them, as the `postgres` user
//! when we are root (the server refuses to run as root, and CI runs as root).

use std::ffi::OsStr;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};

use super::error::ClusterError;

/// Names every bin directory must contain for us to use it; `psql` and
/// `pg_basebackup` ship in the same directory on every packaging we know.
const REQUIRED_TOOLS: [&str; 3] = ["initdb", "pg_ctl", "postgres"];

/// Watches a pipe that only the owning process holds. When that process
/// exits for any reason the pipe closes, `read` returns and the servers are
/// stopped and the directory removed. Arguments: `$1` base dir, `$2` pg_ctl,
/// then the (possibly empty) command prefix that switches to `postgres`.
/// Signals from the terminal are ignored so that Ctrl-C on a test run does
/// not kill the watchdog before the test process itself.
const REAPER_SCRIPT: &str = r#"trap '' INT HUP QUIT
read _ignored
base=$1
pgctl=$2
shift 2
for d in replica primary; do
  if [ -f "$base/$d/postmaster.pid" ]; then
    "$@" "$pgctl" -D "$base/$d" -m immediate -w -t 30 stop >/dev/null 2>&1
  fi
done
rm -rf "$base"
"#;

/// Runs PostgreSQL programs for one cluster: knows where they live, whether
/// to switch to the `postgres` user, and which directory they work in.
#[derive(Debug)]
pub(super) struct Runner {
    pub(super) bindir: PathBuf,
    /// True when we are root and server-side tools must run as `postgres`.
    as_postgres: bool,
    /// The cluster's base directory, used as working and home directory so
    /// the tools never touch (or fail to read) the caller's.
    pub(super) base: PathBuf,
}

impl Runner {
    pub(super) fn new(bindir: PathBuf, as_postgres: bool, base: PathBuf) -> Self {
        Runner {
            bindir,
            as_postgres,
            base,
        }
    }

    /// The prefix that runs a program as `postgres`, empty when not root.
    fn user_prefix(&self) -> Vec<&'static str> {
        if self.as_postgres {
            vec![
                "setpriv",
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--",
            ]
        } else {
            Vec::new()
        }
    }

    /// A command for a tool that creates or runs a data directory
    /// (`initdb`, `pg_ctl`, `pg_basebackup`): runs as `postgres` when root.
    pub(super) fn server_tool(&self, tool: &str) -> Command {
        let program = self.bindir.join(tool);
        let prefix = self.user_prefix();
        let mut cmd = match prefix.split_first() {
            Some((first, rest)) => {
                let mut cmd = Command::new(first);
                cmd.args(rest).arg(program);
                cmd
            }
            None => Command::new(program),
        };
        self.prepare(&mut cmd);
        cmd
    }

    /// A command for a pure client (`psql`), which may run as anyone.
    pub(super) fn client_tool(&self, tool: &str) -> Command {
        let mut cmd = Command::new(self.bindir.join(tool));
        self.prepare(&mut cmd);
        cmd
    }

    /// Isolates a command from the caller's environment: libpq reads many
    /// `PG*` variables (PGHOST, PGSSLMODE, PGOPTIONS, ...) that could point it
    /// at another server or change its behaviour.
    fn prepare(&self, cmd: &mut Command) {
        for (key, _) in std::env::vars_os() {
            let key_text = key.to_string_lossy();
            if key_text.starts_with("PG") && !key_text.starts_with("PGLITTLE_") {
                cmd.env_remove(&key);
            }
        }
        cmd.env("HOME", &self.base)
            .env("PGCONNECT_TIMEOUT", "10")
            .current_dir(&self.base)
            .stdin(Stdio::null());
    }

    /// Makes `path` (recursively) owned by `postgres` when the servers run
    /// as that user; a no-op otherwise.
    pub(super) fn chown_to_postgres(&self, path: &Path) -> Result<(), ClusterError> {
        if self.as_postgres {
            let mut cmd = Command::new("chown");
            cmd.arg("-R").arg("postgres:").arg(path);
            run(cmd)?;
        }
        Ok(())
    }

    /// Starts the watchdog that cleans up if this process dies without
    /// calling `Cluster::stop`. Returns the child and the only write end of
    /// its stdin; dropping that end triggers the cleanup.
    pub(super) fn spawn_reaper(&self) -> Result<(Child, ChildStdin), ClusterError> {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(REAPER_SCRIPT)
            .arg("pglittle-reaper")
            .arg(&self.base)
            .arg(self.bindir.join("pg_ctl"))
            .args(self.user_prefix())
            .current_dir("/")
            .stdin(Stdio::piped())
            // Null rather than inherited: a reaper holding the caller's
            // stdout pipe would keep e.g. `cargo test | tee` waiting.
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Own process group, so a terminal's Ctrl-C is not delivered.
            .process_group(0);
        let mut child = cmd.spawn().map_err(|source| ClusterError::Io {
            what: "could not start the cleanup watchdog (`sh`)".to_string(),
            source,
        })?;
        match child.stdin.take() {
            Some(stdin) => Ok((child, stdin)),
            None => {
                // Cannot happen with Stdio::piped(); don't leave the child.
                let _ = child.kill();
                let _ = child.wait();
                Err(ClusterError::Io {
                    what: "cleanup watchdog has no stdin pipe".to_string(),
                    source: std::io::Error::other("missing stdin"),
                })
            }
        }
    }
}

/// Renders a command line for error messages.
pub(super) fn describe(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

/// Runs a command to completion and returns its stdout, or an error carrying
/// the command line, exit status and output.
pub(super) fn run(cmd: Command) -> Result<String, ClusterError> {
    run_with_input(cmd, None)
}

/// Like [`run`], feeding `input` on stdin. The input is written from a
/// separate thread so a program that prints a lot before reading all of its
/// input cannot deadlock against us.
pub(super) fn run_with_input(
    mut cmd: Command,
    input: Option<&str>,
) -> Result<String, ClusterError> {
    let command = describe(&cmd);
    let io_err = |source| ClusterError::Io {
        what: format!("could not run `{command}`"),
        source,
    };
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    if input.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().map_err(io_err)?;
    let writer = match (input, child.stdin.take()) {
        (Some(text), Some(mut stdin)) => {
            let text = text.to_owned();
            // A write error means the program exited early; its exit
            // status and stderr then tell the real story.
            Some(std::thread::spawn(move || {
                let _ = stdin.write_all(text.as_bytes());
            }))
        }
        _ => None,
    };
    let output = child.wait_with_output().map_err(io_err)?;
    if let Some(handle) = writer {
        let _ = handle.join();
    }
    check(command, output)
}

fn check(command: String, output: Output) -> Result<String, ClusterError> {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(ClusterError::Command {
            command,
            status: output.status,
            stdout,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}

/// Locates the PostgreSQL server binaries, in the documented order:
/// `PGLITTLE_PG_BINDIR`, `pg_config --bindir`, the newest
/// `/usr/lib/postgresql/*/bin`, then `initdb` on `PATH`.
pub(super) fn find_bindir() -> Result<PathBuf, ClusterError> {
    if let Some(dir) = std::env::var_os("PGLITTLE_PG_BINDIR").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        return if has_tools(&dir) {
            Ok(dir)
        } else {
            Err(ClusterError::BinariesNotFound {
                searched: format!("PGLITTLE_PG_BINDIR={} lacks them", dir.display()),
            })
        };
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_tools(&dir) {
            return Ok(dir);
        }
    }
    if let Some(dir) = newest_debian_bindir(Path::new("/usr/lib/postgresql")) {
        return Ok(dir);
    }
    if let Some(dir) = bindir_from_path(std::env::var_os("PATH").as_deref()) {
        return Ok(dir);
    }
    Err(ClusterError::BinariesNotFound {
        searched: "looked at PGLITTLE_PG_BINDIR, `pg_config --bindir`, \
                   /usr/lib/postgresql/*/bin and PATH"
            .to_string(),
    })
}

fn has_tools(dir: &Path) -> bool {
    REQUIRED_TOOLS.iter().all(|t| dir.join(t).is_file())
}

/// Debian installs each major version side by side; pick the highest.
fn newest_debian_bindir(root: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(root).ok()?;
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            // "15" or old-style "9.6": compare numerically, part by part.
            let version: Option<Vec<u32>> = name.split('.').map(|p| p.parse().ok()).collect();
            let dir = e.path().join("bin");
            Some((version?, dir)).filter(|(_, d)| has_tools(d))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, dir)| dir)
}

/// `initdb` on PATH is often a symlink (or Debian wrapper) next to which
/// `postgres` does not live, so follow it to the real directory.
fn bindir_from_path(path: Option<&OsStr>) -> Option<PathBuf> {
    for dir in std::env::split_paths(path?) {
        let initdb = dir.join("initdb");
        if !initdb.is_file() {
            continue;
        }
        if let Some(real) = initdb
            .canonicalize()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
        {
            if has_tools(&real) {
                return Some(real);
            }
        }
        if has_tools(&dir) {
            return Some(dir);
        }
    }
    None
}

/// Whether the effective user is root, from `/proc/self/status` (second
/// field of `Uid:`), falling back to `id -u` where there is no procfs.
pub(super) fn running_as_root() -> bool {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        if let Some(line) = status.lines().find(|l| l.starts_with("Uid:")) {
            if let Some(euid) = line.split_whitespace().nth(2) {
                return euid == "0";
            }
        }
    }
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Whether a `postgres` user exists (through NSS, so not only /etc/passwd).
pub(super) fn postgres_user_exists() -> bool {
    Command::new("id")
        .args(["-u", "postgres"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Creates `<tmp>/pglittle-cluster-<pid>-<random>` with mode 0700. The pid
/// tells a human whose cluster it is; the random part avoids collisions
/// between clusters of one process and with stale directories.
pub(super) fn create_base_dir() -> Result<PathBuf, ClusterError> {
    let tmp = std::env::temp_dir();
    let mut last_error = None;
    for _ in 0..16 {
        let name = format!(
            "pglittle-cluster-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        );
        let path = tmp.join(name);
        match std::fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last_error = Some(e),
            Err(source) => {
                return Err(ClusterError::Io {
                    what: format!("could not create {}", path.display()),
                    source,
                })
            }
        }
    }
    Err(ClusterError::Io {
        what: format!("could not find a free directory name in {}", tmp.display()),
        source: last_error.unwrap_or_else(|| std::io::Error::other("name collisions")),
    })
}

/// Asks the kernel for `n` distinct free ports on 127.0.0.1. All listeners
/// are held until every port is known, so the ports differ; another process
/// may still grab one before the server binds it, which callers handle by
/// retrying on a bind failure.
pub(super) fn free_ports(n: usize) -> Result<Vec<u16>, ClusterError> {
    let mut listeners = Vec::with_capacity(n);
    let mut ports = Vec::with_capacity(n);
    for _ in 0..n {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|source| ClusterError::Io {
            what: "could not bind 127.0.0.1:0 to find a free port".to_string(),
            source,
        })?;
        let port = listener
            .local_addr()
            .map_err(|source| ClusterError::Io {
                what: "could not read a listener's port".to_string(),
                source,
            })?
            .port();
        ports.push(port);
        listeners.push(listener);
    }
    Ok(ports)
}
