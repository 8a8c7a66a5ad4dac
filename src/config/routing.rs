//! Per-database read/write splitting settings (`[databases.NAME]` keys).

use std::time::Duration;

use super::{PrimaryReads, ReadYourWrites, RoleMode, Switch};

/// The default list of functions that write (or fail on a standby). A
/// trailing `*` matches any suffix.
pub const DEFAULT_WRITERS: &[&str] = &[
    "nextval",
    "setval",
    "currval",
    "lastval",
    "pg_advisory*",
    "pg_try_advisory*",
    "pg_notify",
    "set_config",
    "txid_current",
    "pg_current_xact_id",
    "pg_current_wal*",
    "pg_switch_wal",
    "pg_create_restore_point",
    "lo_*",
];

/// How reads are spread over a database's replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing {
    /// `read_write_split`: route reads to replicas (when there are any).
    pub split: Switch,
    pub read_your_writes: ReadYourWrites,
    /// A replica further behind than this (WAL bytes) gets no reads.
    pub max_replica_lag_bytes: Option<usize>,
    /// A replica further behind than this (time) gets no reads.
    pub max_replica_lag: Option<Duration>,
    /// How long a read may wait for a replica to replay the client's floor
    /// before going to the primary; zero goes to the primary at once.
    pub causal_wait: Duration,
    /// `read_your_writes = "time"`: reads go to the primary for this long after a write.
    pub pin_after_write: Duration,
    pub primary_reads: PrimaryReads,
    /// Functions that write; a trailing `*` matches any suffix.
    pub writer_functions: Vec<String>,
    /// `auto`: follow a failover: writes go to the host that is not in
    /// recovery (`pg_is_in_recovery()`), whichever it is.
    pub role: RoleMode,
}

impl Default for Routing {
    fn default() -> Self {
        Routing {
            split: Switch::On,
            read_your_writes: ReadYourWrites::Lsn,
            max_replica_lag_bytes: None,
            max_replica_lag: None,
            causal_wait: Duration::ZERO,
            pin_after_write: Duration::from_secs(1),
            primary_reads: PrimaryReads::Fallback,
            writer_functions: DEFAULT_WRITERS.iter().map(|s| s.to_string()).collect(),
            role: RoleMode::Fixed,
        }
    }
}
