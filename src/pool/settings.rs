//! What a pool is told by the configuration: its settings (a reload may
//! change them) and, when auto-sized, the bounds its controller works in.

use std::time::Duration;

use super::controller;
use crate::config::PoolMode;

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

/// The range an auto-sized pool moves in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AutoBounds {
    pub min: usize,
    /// 0: only the database's connection budget bounds the pool.
    pub max: usize,
}

impl AutoBounds {
    /// The size an auto pool starts at, before any load is measured.
    pub fn start(self) -> usize {
        let start = self.min.max(controller::START_SIZE);
        match self.max {
            0 => start,
            max => start.min(max),
        }
    }

    /// `size` moved into the bounds.
    pub fn clamp(self, size: usize) -> usize {
        let size = size.max(self.min).max(1);
        match self.max {
            0 => size,
            max => size.min(max),
        }
    }
}
