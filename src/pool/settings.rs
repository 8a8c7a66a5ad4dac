//! What a pool is told by the configuration: its settings (a reload may
//! change them) and, when auto-sized, the bounds its controller works in
//! (`sizing::AutoBounds`, re-exported here because the settings carry them).

use std::time::Duration;

use crate::config::PoolMode;
pub use crate::sizing::AutoBounds;

/// Per-pool settings that a reload may change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolSettings {
    pub mode: PoolMode,
    /// Server connections the pool may hold now: fixed, or the controller's
    /// latest decision when `auto` is set.
    pub size: usize,
    /// Set when `pool_size = "auto"`: the bounds the controller sizes within.
    pub auto: Option<AutoBounds>,
    /// Extra connections for clients that have waited `reserve_timeout`.
    pub reserve_size: usize,
    pub reserve_timeout: Duration,
    pub min_size: usize,
    pub query_wait_timeout: Duration,
    pub server_idle_timeout: Duration,
    pub server_lifetime: Duration,
    /// Idle servers unused for this long are checked before being lent.
    pub server_check_delay: Duration,
    /// Most clients waiting for a server; more are refused at once (0: no cap).
    pub max_queue: usize,
    /// Refuse at once a request whose predicted wait exceeds query_wait_timeout.
    pub shed_on_predicted_wait: bool,
}
