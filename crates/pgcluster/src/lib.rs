//! A throwaway local PostgreSQL primary with an optional streaming replica.
//!
//! `pglittle demo` and the integration tests need real servers to pool, with
//! a replica for read/write splitting and known users for each
//! authentication method. [`Cluster::start`] builds one under the system
//! temp directory from the installed PostgreSQL binaries; [`Cluster::stop`]
//! (or dropping the [`Cluster`]) removes it.
//!
//! Tests keep a cluster in a `static`, whose destructor never runs, so each
//! cluster also has a watchdog process (the "reaper") that stops the servers
//! and deletes the directory as soon as the owning process exits, however it
//! exits.
//!
//! Calls block (they run `initdb`, `pg_ctl`, `psql`, ...); async callers
//! should use `spawn_blocking`.

mod error;
mod exec;
mod server;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin};
use std::time::Duration;

pub use error::ClusterError;
use exec::{free_ports, run, run_with_input, Runner};
use server::{
    append_conf, pg_ctl_stop, poll, remove_file, start_new_server, start_server, write_file,
};

/// Superuser created by `initdb`; reachable over TCP with its password and
/// used for replication (trusted from 127.0.0.1).
pub const SUPERUSER: &str = "postgres";
/// Password of [`SUPERUSER`].
pub const SUPERUSER_PASSWORD: &str = "postgres";
/// Ordinary application user, stored as a SCRAM-SHA-256 verifier.
pub const APP_USER: &str = "app";
/// Password of [`APP_USER`].
pub const APP_PASSWORD: &str = "app-secret";
/// Application user stored as an md5 hash and authenticated with `md5` in
/// `pg_hba.conf`, so the pooler's legacy md5 path can be exercised.
pub const MD5_USER: &str = "app_md5";
/// Password of [`MD5_USER`].
pub const MD5_PASSWORD: &str = "md5-secret";
/// Database owned by [`APP_USER`]; [`MD5_USER`] may connect, create objects
/// in `public` and use tables that [`APP_USER`] creates there.
pub const APP_DB: &str = "app";

/// How long `pg_ctl` may wait for a server to start, stop or promote, and
/// how long we poll for the replica to stream.
const SERVER_TIMEOUT_SECS: u32 = 60;
/// Pause between polls of a condition; short because each poll is cheap.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How many times a server is moved to a fresh port when the one picked
/// was taken between choosing it and the server binding it.
const PORT_RETRIES: u32 = 3;
const PRIMARY_DIR: &str = "primary";
const REPLICA_DIR: &str = "replica";

/// What to build.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Also create a streaming replica of the primary.
    pub with_replica: bool,
    /// `max_connections` of both servers.
    pub max_connections: u32,
    /// Extra `postgresql.conf` lines for both servers, applied last.
    pub extra_conf: Vec<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            with_replica: true,
            max_connections: 200,
            extra_conf: Vec::new(),
        }
    }
}

/// One running server of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgInstance {
    /// Always "127.0.0.1": servers listen on loopback TCP only.
    pub host: String,
    pub port: u16,
    pub data_dir: PathBuf,
}

impl PgInstance {
    /// A libpq key/value connection string for this server.
    pub fn conninfo(&self, user: &str, password: &str, dbname: &str) -> String {
        format!(
            "host={} port={} user={} password={} dbname={}",
            self.host,
            self.port,
            conninfo_quote(user),
            conninfo_quote(password),
            conninfo_quote(dbname)
        )
    }

    /// The server log, beside the data directory (not inside it, so a base
    /// backup of the primary does not copy it).
    pub fn log_path(&self) -> PathBuf {
        self.data_dir.with_extension("log")
    }
}

/// A running throwaway cluster. See the module documentation.
#[derive(Debug)]
pub struct Cluster {
    pub primary: PgInstance,
    pub replica: Option<PgInstance>,
    pub bindir: PathBuf,
    runner: Runner,
    /// The watchdog; waited for in `stop` so it does not linger as a zombie.
    reaper: Option<Child>,
    /// The only write end of the watchdog's stdin; closing it (explicitly
    /// or by our process exiting) makes the watchdog clean up.
    reaper_pipe: Option<ChildStdin>,
    stopped: bool,
}

impl Cluster {
    /// Creates and starts the cluster: `initdb`, configuration, the primary,
    /// the well-known users and database, then (if asked) a replica made with
    /// `pg_basebackup`, returning once the replica is streaming. On error
    /// everything created so far is removed.
    pub fn start(opts: ClusterOptions) -> Result<Cluster, ClusterError> {
        let bindir = exec::find_bindir()?;
        let as_postgres = exec::running_as_root();
        if as_postgres && !exec::postgres_user_exists() {
            return Err(ClusterError::NoPostgresUser);
        }
        let ports = free_ports(2)?;
        let base = exec::create_base_dir()?;
        // From here on, returning an error drops `cluster`, which cleans up.
        let mut cluster = Cluster {
            primary: instance(ports[0], base.join(PRIMARY_DIR)),
            replica: None,
            bindir: bindir.clone(),
            runner: Runner::new(bindir, as_postgres, base.clone()),
            reaper: None,
            reaper_pipe: None,
            stopped: false,
        };
        let pwfile = base.join("pwfile");
        write_file(&pwfile, &format!("{SUPERUSER_PASSWORD}\n"))?;
        cluster.runner.chown_to_postgres(&base)?;
        let (reaper, pipe) = cluster.runner.spawn_reaper()?;
        cluster.reaper = Some(reaper);
        cluster.reaper_pipe = Some(pipe);

        cluster.initdb(&pwfile)?;
        remove_file(&pwfile)?;
        cluster.configure_primary(&opts)?;
        start_new_server(&cluster.runner, &mut cluster.primary)?;
        cluster.create_users()?;
        if opts.with_replica {
            let mut replica = instance(ports[1], base.join(REPLICA_DIR));
            cluster.create_replica(&mut replica)?;
            cluster.replica = Some(replica);
        }
        Ok(cluster)
    }

    /// Runs SQL as [`SUPERUSER`] through `psql` and returns its unaligned,
    /// tuples-only output without the final newline. Statements run one by
    /// one (so `CREATE DATABASE` works); the first error stops and fails.
    pub fn psql(&self, inst: &PgInstance, dbname: &str, sql: &str) -> Result<String, ClusterError> {
        self.psql_as(inst, SUPERUSER, SUPERUSER_PASSWORD, dbname, sql)
    }

    /// Like [`Cluster::psql`] as any user, logging in over TCP with
    /// `password`, e.g. to check that a user's authentication works.
    pub fn psql_as(
        &self,
        inst: &PgInstance,
        user: &str,
        password: &str,
        dbname: &str,
        sql: &str,
    ) -> Result<String, ClusterError> {
        self.ensure_running()?;
        let mut cmd = self.runner.client_tool("psql");
        cmd.args(["-X", "-v", "ON_ERROR_STOP=1", "-q", "-At", "-h"])
            .arg(&inst.host)
            .arg("-p")
            .arg(inst.port.to_string())
            .arg("-U")
            .arg(user)
            .arg("-d")
            .arg(dbname)
            .args(["-f", "-"])
            .env("PGPASSWORD", password);
        let out = run_with_input(cmd, Some(sql))?;
        Ok(out.strip_suffix('\n').unwrap_or(&out).to_string())
    }

    /// Stops one server with `pg_ctl stop -m <mode>` ("fast", "immediate" or
    /// "smart"), waiting until it is down.
    pub fn stop_instance(&self, inst: &PgInstance, mode: &str) -> Result<(), ClusterError> {
        if !matches!(mode, "fast" | "immediate" | "smart") {
            return Err(ClusterError::InvalidStopMode(mode.to_string()));
        }
        self.ensure_running()?;
        pg_ctl_stop(&self.runner, &inst.data_dir, mode)
    }

    /// Starts a server stopped with [`Cluster::stop_instance`], waiting until
    /// it accepts connections (read-only ones, for a replica).
    pub fn start_instance(&self, inst: &PgInstance) -> Result<(), ClusterError> {
        self.ensure_running()?;
        start_server(&self.runner, inst)
    }

    /// Promotes a replica to primary (`pg_ctl promote -w`), waiting until it
    /// accepts writes.
    pub fn promote(&self, inst: &PgInstance) -> Result<(), ClusterError> {
        self.ensure_running()?;
        let mut cmd = self.runner.server_tool("pg_ctl");
        cmd.arg("-D").arg(&inst.data_dir).args([
            "-w",
            "-t",
            &SERVER_TIMEOUT_SECS.to_string(),
            "promote",
        ]);
        run(cmd).map(drop)
    }

    /// The temporary directory holding data directories and logs.
    pub fn base_dir(&self) -> &Path {
        &self.runner.base
    }

    /// Stops both servers and removes the temporary directory. Idempotent
    /// and infallible: failures are reported on stderr, and the watchdog
    /// retries with an immediate shutdown when its pipe closes here.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        // Replica first, so it does not spend the primary's shutdown
        // trying to reconnect.
        for name in [REPLICA_DIR, PRIMARY_DIR] {
            let data_dir = self.runner.base.join(name);
            if !data_dir.join("postmaster.pid").exists() {
                continue;
            }
            if let Err(fast) = pg_ctl_stop(&self.runner, &data_dir, "fast") {
                if let Err(immediate) = pg_ctl_stop(&self.runner, &data_dir, "immediate") {
                    eprintln!("pglittle cluster: could not stop {name}: {fast}; {immediate}");
                }
            }
        }
        if let Err(e) = fs::remove_dir_all(&self.runner.base) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!(
                    "pglittle cluster: could not remove {}: {e}",
                    self.runner.base.display()
                );
            }
        }
        drop(self.reaper_pipe.take());
        if let Some(mut reaper) = self.reaper.take() {
            let _ = reaper.wait();
        }
    }

    fn ensure_running(&self) -> Result<(), ClusterError> {
        if self.stopped {
            Err(ClusterError::Stopped)
        } else {
            Ok(())
        }
    }

    /// `initdb` with a UTF-8 C locale, falling back to `--no-locale` on
    /// systems without `C.UTF-8`. `--no-sync` because nothing here needs to
    /// survive a power cut and syncing costs seconds.
    fn initdb(&self, pwfile: &Path) -> Result<(), ClusterError> {
        let data_dir = &self.primary.data_dir;
        let initdb = |locale: &str| {
            let mut cmd = self.runner.server_tool("initdb");
            cmd.arg("-D")
                .arg(data_dir)
                .args([
                    "-U",
                    SUPERUSER,
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                ])
                .arg(format!("--pwfile={}", pwfile.display()))
                .args(["-E", "UTF8", locale, "--no-sync"]);
            run(cmd).map(drop)
        };
        initdb("--locale=C.UTF-8").or_else(|_| {
            // initdb removes a data dir it created on failure, but be sure.
            let _ = fs::remove_dir_all(data_dir);
            initdb("--no-locale")
        })
    }

    fn configure_primary(&self, opts: &ClusterOptions) -> Result<(), ClusterError> {
        let data_dir = &self.primary.data_dir;
        write_file(
            &data_dir.join("pg_hba.conf"),
            "# Written by pglittle for a throwaway test cluster.\n\
             local all         all                  trust\n\
             local replication all                  trust\n\
             host  replication all     127.0.0.1/32 trust\n\
             host  all         app_md5 127.0.0.1/32 md5\n\
             host  all         all     127.0.0.1/32 scram-sha-256\n",
        )?;
        let mut lines = vec![
            "# Added by pglittle for a throwaway test cluster.".to_string(),
            "listen_addresses = '127.0.0.1'".to_string(),
            format!("port = {}", self.primary.port),
            // No Unix socket: /var/run/postgresql may not exist or be
            // writable; everything connects over TCP.
            "unix_socket_directories = ''".to_string(),
            format!("max_connections = {}", opts.max_connections),
            "wal_level = replica".to_string(),
            "max_wal_senders = 10".to_string(),
            // Lets a replica stopped for a while by a test catch up.
            "wal_keep_size = '128MB'".to_string(),
            "hot_standby = on".to_string(),
            "hot_standby_feedback = on".to_string(),
            "fsync = off".to_string(),
            "full_page_writes = off".to_string(),
            "synchronous_commit = on".to_string(),
            "shared_buffers = '128MB'".to_string(),
            "log_min_messages = warning".to_string(),
            "password_encryption = 'scram-sha-256'".to_string(),
            // Names processes in `ps`; the replica's name also becomes its
            // application_name in pg_stat_replication.
            "cluster_name = 'pglittle_primary'".to_string(),
        ];
        lines.extend(opts.extra_conf.iter().cloned());
        append_conf(data_dir, &lines)
    }

    fn create_users(&self) -> Result<(), ClusterError> {
        let sql = format!(
            "SET password_encryption = 'scram-sha-256';\n\
             CREATE ROLE {APP_USER} LOGIN PASSWORD {app_pw};\n\
             SET password_encryption = 'md5';\n\
             CREATE ROLE {MD5_USER} LOGIN PASSWORD {md5_pw};\n\
             CREATE DATABASE {APP_DB} OWNER {APP_USER};\n\
             GRANT CONNECT, CREATE, TEMPORARY ON DATABASE {APP_DB} TO {MD5_USER};\n",
            app_pw = sql_literal(APP_PASSWORD),
            md5_pw = sql_literal(MD5_PASSWORD),
        );
        self.psql(&self.primary, "postgres", &sql)?;
        let sql = format!(
            "GRANT ALL ON SCHEMA public TO {MD5_USER};\n\
             ALTER DEFAULT PRIVILEGES FOR ROLE {APP_USER} IN SCHEMA public \
             GRANT ALL ON TABLES TO {MD5_USER};\n\
             ALTER DEFAULT PRIVILEGES FOR ROLE {APP_USER} IN SCHEMA public \
             GRANT ALL ON SEQUENCES TO {MD5_USER};\n"
        );
        self.psql(&self.primary, APP_DB, &sql).map(drop)
    }

    /// Clones the primary with `pg_basebackup -R`, starts the clone as a hot
    /// standby and waits until it answers and the primary reports it
    /// streaming.
    fn create_replica(&self, replica: &mut PgInstance) -> Result<(), ClusterError> {
        let mut cmd = self.runner.server_tool("pg_basebackup");
        cmd.args([
            "-h",
            &self.primary.host,
            "-p",
            &self.primary.port.to_string(),
        ])
        .args(["-U", SUPERUSER, "-D"])
        .arg(&replica.data_dir)
        .args(["-R", "-X", "stream", "-c", "fast", "--no-sync"]);
        run(cmd)?;
        // Later lines win over the primary's copied settings.
        append_conf(
            &replica.data_dir,
            &[
                "# Replica overrides added by pglittle.".to_string(),
                format!("port = {}", replica.port),
                "cluster_name = 'pglittle_replica'".to_string(),
            ],
        )?;
        start_new_server(&self.runner, replica)?;

        let timeout = Duration::from_secs(SERVER_TIMEOUT_SECS.into());
        poll(
            "the replica to be in recovery",
            &replica.log_path(),
            timeout,
            || {
                self.psql(replica, "postgres", "SELECT pg_is_in_recovery()")
                    .map(|out| out == "t")
            },
        )?;
        poll(
            "the primary to report the replica streaming",
            &self.primary.log_path(),
            timeout,
            || {
                self.psql(
                    &self.primary,
                    "postgres",
                    "SELECT count(*) FROM pg_stat_replication \
                     WHERE application_name = 'pglittle_replica' AND state = 'streaming'",
                )
                .map(|out| out == "1")
            },
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop()
    }
}

fn instance(port: u16, data_dir: PathBuf) -> PgInstance {
    PgInstance {
        host: "127.0.0.1".to_string(),
        port,
        data_dir,
    }
}

fn sql_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn conninfo_quote(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    use std::time::Instant;

    /// Set in the environment of the child process of the reaper test.
    const REAPER_CHILD_ENV: &str = "PGLITTLE_TEST_REAPER_CHILD";

    /// Polls `check` for up to 30 s; for conditions the tests wait on.
    fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Command lines of live processes that mention `base` (servers are
    /// started as `postgres -D <base>/primary`).
    fn processes_mentioning(base: &Path) -> Vec<String> {
        let needle = base.to_string_lossy().into_owned();
        let mut found = Vec::new();
        for entry in fs::read_dir("/proc").expect("read /proc").flatten() {
            if let Ok(raw) = fs::read(entry.path().join("cmdline")) {
                let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
                // The reaper mentions the base dir too; it exits on its own
                // right after the servers are gone.
                if cmdline.contains(&needle) && !cmdline.contains("pglittle-reaper") {
                    found.push(cmdline);
                }
            }
        }
        found
    }

    #[test]
    fn cluster_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Cluster>();
        assert_send_sync::<ClusterError>();
    }

    #[test]
    fn primary_replica_users_failover_and_cleanup() {
        let started = Instant::now();
        let mut cluster = Cluster::start(ClusterOptions::default()).expect("cluster starts");
        eprintln!("Cluster::start with replica took {:?}", started.elapsed());
        let base = cluster.base_dir().to_path_buf();
        let primary = cluster.primary.clone();
        let replica = cluster.replica.clone().expect("a replica by default");
        assert_ne!(primary.port, replica.port);
        assert!(primary.log_path().exists());

        // The app user logs in with SCRAM and owns APP_DB.
        let out = cluster
            .psql_as(
                &primary,
                APP_USER,
                APP_PASSWORD,
                APP_DB,
                "CREATE TABLE t (v text);\nINSERT INTO t VALUES ('hello');\nSELECT current_user;",
            )
            .expect("app user writes");
        assert_eq!(out, APP_USER);
        let wrong = cluster.psql_as(&primary, APP_USER, "wrong", APP_DB, "SELECT 1");
        assert!(
            matches!(&wrong, Err(ClusterError::Command { stderr, .. }) if stderr.contains("password authentication failed")),
            "{wrong:?}"
        );

        // The md5 user can read the app user's tables.
        let out = cluster
            .psql_as(
                &primary,
                MD5_USER,
                MD5_PASSWORD,
                APP_DB,
                "SELECT count(*) FROM t",
            )
            .expect("md5 user reads");
        assert_eq!(out, "1");
        let hashes = cluster
            .psql(
                &primary,
                "postgres",
                "SELECT rolname || ' ' || CASE \
                 WHEN rolpassword LIKE 'SCRAM-SHA-256$%' THEN 'scram' \
                 WHEN rolpassword LIKE 'md5%' THEN 'md5' ELSE rolpassword END \
                 FROM pg_authid WHERE rolname IN ('app', 'app_md5') ORDER BY rolname",
            )
            .expect("read pg_authid");
        assert_eq!(hashes, "app scram\napp_md5 md5");

        // The write reaches the replica, which stays read-only.
        wait_until("the row on the replica", || {
            cluster
                .psql(&replica, APP_DB, "SELECT v FROM t")
                .ok()
                .as_deref()
                == Some("hello")
        });
        let in_recovery = cluster.psql(&replica, "postgres", "SELECT pg_is_in_recovery()");
        assert_eq!(in_recovery.expect("query replica"), "t");
        assert!(cluster
            .psql(&replica, APP_DB, "INSERT INTO t VALUES ('no')")
            .is_err());

        // Restart and failover.
        cluster
            .stop_instance(&replica, "fast")
            .expect("stop replica");
        cluster.start_instance(&replica).expect("restart replica");
        cluster
            .stop_instance(&primary, "immediate")
            .expect("kill primary");
        assert!(cluster.psql(&primary, "postgres", "SELECT 1").is_err());
        cluster.promote(&replica).expect("promote");
        let out = cluster
            .psql(
                &replica,
                APP_DB,
                "INSERT INTO t VALUES ('after'); SELECT pg_is_in_recovery()",
            )
            .expect("write to promoted replica");
        assert_eq!(out, "f");
        assert!(matches!(
            cluster.stop_instance(&replica, "sideways"),
            Err(ClusterError::InvalidStopMode(_))
        ));

        cluster.stop();
        assert!(!base.exists(), "{} left behind", base.display());
        assert_eq!(processes_mentioning(&base), Vec::<String>::new());
        cluster.stop();
        assert!(matches!(
            cluster.psql(&primary, "postgres", "SELECT 1"),
            Err(ClusterError::Stopped)
        ));
    }

    #[test]
    fn primary_only() {
        let opts = ClusterOptions {
            with_replica: false,
            max_connections: 50,
            extra_conf: vec!["work_mem = '7MB'".to_string()],
        };
        let cluster = Cluster::start(opts).expect("cluster starts");
        assert!(cluster.replica.is_none());
        let base = cluster.base_dir().to_path_buf();
        let out = cluster
            .psql(
                &cluster.primary,
                "postgres",
                "SHOW work_mem;\nSHOW max_connections;",
            )
            .expect("query");
        assert_eq!(out, "7MB\n50");
        drop(cluster);
        assert!(!base.exists());
    }

    #[test]
    fn bad_setting_reports_server_log_and_cleans_up() {
        let opts = ClusterOptions {
            with_replica: false,
            extra_conf: vec!["no_such_setting = 1".to_string()],
            ..ClusterOptions::default()
        };
        let err = Cluster::start(opts).expect_err("server must refuse the setting");
        let ClusterError::ServerStart { log, log_tail, .. } = &err else {
            panic!("unexpected error: {err}");
        };
        assert!(log_tail.contains("no_such_setting"), "{err}");
        assert!(err.to_string().contains("no_such_setting"), "{err}");
        let base = log.parent().expect("log is in the base dir");
        assert!(!base.exists(), "{} left behind", base.display());
    }

    #[test]
    fn new_server_moves_off_a_taken_port() {
        let opts = ClusterOptions {
            with_replica: false,
            ..ClusterOptions::default()
        };
        let mut cluster = Cluster::start(opts).expect("cluster starts");
        let primary = cluster.primary.clone();
        cluster.stop_instance(&primary, "fast").expect("stop");
        let squatter =
            std::net::TcpListener::bind(("127.0.0.1", primary.port)).expect("take the port");
        start_new_server(&cluster.runner, &mut cluster.primary).expect("restart elsewhere");
        drop(squatter);
        assert_ne!(cluster.primary.port, primary.port);
        let moved = cluster.primary.clone();
        assert_eq!(
            cluster.psql(&moved, "postgres", "SELECT 1").expect("query"),
            "1"
        );
    }

    /// Run only as the child of `reaper_cleans_up_when_owner_is_killed`:
    /// starts a cluster, reports where, and waits to be killed.
    #[test]
    #[ignore = "helper process for reaper_cleans_up_when_owner_is_killed"]
    fn reaper_child_process() {
        if std::env::var_os(REAPER_CHILD_ENV).is_none() {
            return;
        }
        let cluster = Cluster::start(ClusterOptions::default()).expect("cluster starts");
        println!("PGLITTLE_BASE={}", cluster.base_dir().display());
        std::io::stdout().flush().expect("flush");
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        // Like a cluster in a `static`: never dropped, so only the reaper
        // can clean up.
        std::mem::forget(cluster);
    }

    #[test]
    fn reaper_cleans_up_when_owner_is_killed() {
        let module = module_path!();
        let test_name = match module.split_once("::") {
            Some((_crate, rest)) => format!("{rest}::reaper_child_process"),
            None => "reaper_child_process".to_string(),
        };
        let mut child = Command::new(std::env::current_exe().expect("current exe"))
            .args([test_name.as_str(), "--exact", "--ignored", "--nocapture"])
            .env(REAPER_CHILD_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn child test process");
        let stdout = child.stdout.take().expect("child stdout");
        let base = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|line| line.strip_prefix("PGLITTLE_BASE=").map(PathBuf::from))
            .expect("child reports its cluster");
        assert!(base.join("primary/postmaster.pid").exists());
        assert!(base.join("replica/postmaster.pid").exists());

        child.kill().expect("SIGKILL child");
        child.wait().expect("reap child");
        wait_until("the reaper to remove the cluster", || {
            !base.exists() && processes_mentioning(&base).is_empty()
        });
    }
}
