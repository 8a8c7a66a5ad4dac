//! The `pglittle` command: run (from a file or sidecar flags), check-config, demo.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pglittle::config::{Config, LogFormat, PoolMode, SidecarArgs};
use pglittle::{Phase, Shutdown};

#[cfg(feature = "demo")]
mod demo;
mod restart;

/// Built with `--no-default-features`: `demo` is still listed, and says why
/// it cannot run.
#[cfg(not(feature = "demo"))]
mod demo {
    pub async fn run(_listen: std::net::SocketAddr) -> Result<(), String> {
        Err("this pglittle was built without the `demo` feature \
             (rebuild with default features)"
            .to_string())
    }
}

#[derive(Parser)]
#[command(name = "pglittle", version, about = "PostgreSQL connection pooler")]
struct Cli {
    /// TOML configuration file (see pooler.example.toml).
    #[arg(long, short = 'c', env = "PGLITTLE_CONFIG", conflicts_with = "primary")]
    config: Option<PathBuf>,
    /// Sidecar mode: address to listen on.
    #[arg(long, env = "PGLITTLE_LISTEN")]
    listen: Option<SocketAddr>,
    /// Sidecar mode: the primary, as postgres://USER:PASS@HOST:PORT/DB;
    /// `?sslmode=...&sslrootcert=FILE` sets TLS to the servers (libpq's
    /// meanings).
    #[arg(long, env = "PGLITTLE_PRIMARY")]
    primary: Option<String>,
    /// Sidecar mode: a streaming replica (repeatable; env is comma-separated).
    #[arg(long = "replica", env = "PGLITTLE_REPLICAS", value_delimiter = ',')]
    replicas: Vec<String>,
    /// Sidecar mode: how reads see the client's own writes: lsn (default), time or off.
    #[arg(long = "read-your-writes", env = "PGLITTLE_READ_YOUR_WRITES")]
    read_your_writes: Option<pglittle::config::ReadYourWrites>,
    /// Sidecar mode: transaction (default) or session.
    #[arg(long, env = "PGLITTLE_POOL_MODE")]
    pool_mode: Option<PoolMode>,
    /// Sidecar mode: server connections per pool, or "auto" (sized live by
    /// Little's Law within the database's connection budget).
    #[arg(long, env = "PGLITTLE_POOL_SIZE")]
    pool_size: Option<pglittle::config::PoolSize>,
    /// Sidecar mode: most server connections the auto-sized pools may hold
    /// (default: the server's max_connections less its reserved ones).
    #[arg(long, env = "PGLITTLE_MAX_DB_CONNECTIONS")]
    max_db_connections: Option<usize>,
    /// Sidecar mode: share --max-db-connections with the other instances of
    /// this fleet (1-10 of a-z 0-9 _ -; see `fleet` in pooler.example.toml).
    #[arg(long, env = "PGLITTLE_FLEET")]
    fleet: Option<String>,
    /// Sidecar mode: this instance's id in its fleet (default: from the pid).
    #[arg(long, env = "PGLITTLE_FLEET_INSTANCE")]
    fleet_instance: Option<String>,
    /// Sidecar mode: serve Prometheus /metrics and /health on this address.
    #[arg(long, env = "PGLITTLE_METRICS")]
    metrics: Option<SocketAddr>,
    /// Sidecar mode: admin console users (default: the --primary URL's user).
    #[arg(long, env = "PGLITTLE_ADMIN_USERS", value_delimiter = ',')]
    admin_users: Vec<String>,
    /// Sidecar mode: offer clients TLS with this PEM certificate chain
    /// (with --client-tls-key).
    #[arg(long, env = "PGLITTLE_CLIENT_TLS_CERT")]
    client_tls_cert: Option<PathBuf>,
    /// Sidecar mode: the PEM private key of --client-tls-cert.
    #[arg(long, env = "PGLITTLE_CLIENT_TLS_KEY")]
    client_tls_key: Option<PathBuf>,
    /// Log format: text or json (overrides the file's log_format).
    #[arg(long, env = "PGLITTLE_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    /// Worker threads (default: one per CPU). A sidecar next to a busy app
    /// may want 1 or 2.
    #[arg(long, env = "PGLITTLE_THREADS")]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a config file and print the effective configuration.
    CheckConfig { file: PathBuf },
    /// Print the pglittle TOML equivalent of a PgBouncer pgbouncer.ini
    /// (on stdout; what could not be carried over, on stderr).
    ImportPgbouncer { file: PathBuf },
    /// Rolling restart of the pglittle running as PID: the same as
    /// `kill -USR2 PID` (a new process takes over its listener and idle
    /// clients; see README, "Rolling restarts").
    Upgrade { pid: i32 },
    /// Start a throwaway local primary and replica with pglittle in front.
    Demo {
        /// Where pglittle listens (falls back to a free port if taken).
        #[arg(long, default_value = "127.0.0.1:6432")]
        listen: SocketAddr,
    },
}

/// Logs go to stderr as text or JSON lines; RUST_LOG filters (default info).
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The file's log_format applies from the start when it can be read;
    // errors reading it are reported by `run` itself.
    let format = cli
        .log_format
        .unwrap_or_else(|| match (&cli.command, load(&cli)) {
            (None, Ok(c)) => c.pooler.log_format,
            _ => LogFormat::Text,
        });
    init_logging(format);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = cli.threads.filter(|n| *n > 0) {
        builder.worker_threads(n);
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pglittle: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Some(Command::CheckConfig { ref file }) => check_config(file),
        Some(Command::ImportPgbouncer { ref file }) => import_pgbouncer(file),
        Some(Command::Upgrade { pid }) => pglittle::upgrade::request(pid)
            .map_err(|e| format!("cannot signal pglittle (pid {pid}): {e}")),
        Some(Command::Demo { listen }) => runtime.block_on(demo::run(listen)),
        None => runtime.block_on(run(cli)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pglittle: {e}");
            ExitCode::FAILURE
        }
    }
}

fn import_pgbouncer(file: &std::path::Path) -> Result<(), String> {
    let ini = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let imported = pglittle::config::pgbouncer::import(&ini)
        .map_err(|e| format!("{}: {e}", file.display()))?;
    print!("{}", imported.toml);
    for note in &imported.notes {
        eprintln!("note: {note}");
    }
    Ok(())
}

fn check_config(file: &std::path::Path) -> Result<(), String> {
    let config = Config::load(file).map_err(|e| e.to_string())?;
    print!("{}", config.render_effective());
    eprintln!("{}: OK", file.display());
    Ok(())
}

fn load(cli: &Cli) -> Result<Config, String> {
    if let Some(path) = &cli.config {
        return Config::load(path).map_err(|e| e.to_string());
    }
    let Some(primary) = cli.primary.clone() else {
        return Err("give --config FILE, or --primary postgres://USER:PASS@HOST:PORT/DB for sidecar mode (see --help)".into());
    };
    Config::from_sidecar(&SidecarArgs {
        listen: cli.listen,
        primary,
        replicas: cli.replicas.clone(),
        pool_mode: cli.pool_mode,
        pool_size: cli.pool_size,
        max_db_connections: cli.max_db_connections,
        fleet: cli.fleet.clone(),
        fleet_instance: cli.fleet_instance.clone(),
        metrics: cli.metrics,
        admin_users: cli.admin_users.clone(),
        read_your_writes: cli.read_your_writes,
        client_tls_cert: cli.client_tls_cert.clone(),
        client_tls_key: cli.client_tls_key.clone(),
    })
    .map_err(|e| e.to_string())
}

async fn run(cli: Cli) -> Result<(), String> {
    let config = load(&cli)?;
    let shutdown = Shutdown::new();
    // Started by a rolling restart: the old process hands over its
    // listening sockets, then its idle clients.
    let predecessor = match pglittle::upgrade::Channel::inherited() {
        Some(chan) => Some(chan.map_err(|e| format!("rolling restart: {e}"))?),
        None => None,
    };
    let inherited = match &predecessor {
        Some(chan) => restart::receive_listeners(chan)?,
        None => Default::default(),
    };
    let running = pglittle::app::start_with(config, shutdown.clone(), inherited)
        .await
        .map_err(|e| format!("cannot listen: {e}"))?;
    if let Some(chan) = predecessor {
        restart::adopt_clients(chan, &running)?;
    }
    let cli = std::sync::Arc::new(cli);
    let source = cli.clone();
    running
        .shared
        .set_reloader(std::sync::Arc::new(move || load(&source)));
    spawn_signal_handlers(&running, shutdown)?;
    running.wait().await;
    Ok(())
}

/// SIGTERM drains, SIGINT stops at once, SIGHUP reloads the config file,
/// SIGUSR2 restarts without dropping clients (`upgrade`).
fn spawn_signal_handlers(running: &pglittle::Running, shutdown: Shutdown) -> Result<(), String> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let mut hup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
    let mut usr2 = signal(SignalKind::user_defined2()).map_err(|e| e.to_string())?;
    let shared = running.shared.clone();
    let sockets = (running.listen_fd, running.metrics_fd);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = usr2.recv() => {
                    tracing::info!("SIGUSR2: rolling restart");
                    if let Err(e) = restart::hand_over(&shared, sockets, &shutdown).await {
                        tracing::error!(error = %e, "rolling restart failed; this process goes on serving");
                    }
                }
                _ = term.recv() => {
                    tracing::info!("SIGTERM: draining");
                    shutdown.advance(Phase::Draining);
                }
                _ = int.recv() => {
                    tracing::info!("SIGINT: stopping now");
                    shutdown.advance(Phase::Stopping);
                }
                _ = hup.recv() => match shared.reload() {
                    Ok(()) => tracing::info!("SIGHUP: configuration reloaded"),
                    Err(e) => tracing::error!(error = %e, "SIGHUP: reload failed; keeping the running configuration"),
                },
            }
        }
    });
    Ok(())
}
