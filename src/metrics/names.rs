//! Every metric name pglittle exports, in one place, with its help text.
//! Pool metrics carry `database`, `user`, `host` and `role` labels.

pub const CLIENTS: &str = "pglittle_clients";
pub const SERVERS: &str = "pglittle_servers";
pub const WAIT_SECONDS: &str = "pglittle_wait_seconds";
pub const HOLD_SECONDS: &str = "pglittle_transaction_hold_seconds";
pub const QUERY_SECONDS: &str = "pglittle_query_seconds";
pub const TRANSACTIONS_TOTAL: &str = "pglittle_transactions_total";
pub const QUERIES_TOTAL: &str = "pglittle_queries_total";
pub const RECEIVED_BYTES_TOTAL: &str = "pglittle_received_bytes_total";
pub const SENT_BYTES_TOTAL: &str = "pglittle_sent_bytes_total";
pub const ERRORS_TOTAL: &str = "pglittle_errors_total";
pub const QUERIES_ROUTED_TOTAL: &str = "pglittle_queries_routed_total";
pub const HOST_UP: &str = "pglittle_host_up";
pub const PREPARED_HITS_TOTAL: &str = "pglittle_prepared_cache_hits_total";
pub const PREPARED_MISSES_TOTAL: &str = "pglittle_prepared_cache_misses_total";
pub const PREPARED_EVICTIONS_TOTAL: &str = "pglittle_prepared_cache_evictions_total";
pub const PLAN_RETRIES_TOTAL: &str = "pglittle_prepared_plan_retries_total";
pub const CLIENTS_REFUSED_TOTAL: &str = "pglittle_clients_refused_total";
pub const CLIENTS_SHED_TOTAL: &str = "pglittle_clients_shed_total";
pub const WAIT_TIMEOUTS_TOTAL: &str = "pglittle_wait_timeouts_total";
pub const SERVER_CONNECTS_TOTAL: &str = "pglittle_server_connects_total";
pub const SERVER_CONNECT_ERRORS_TOTAL: &str = "pglittle_server_connect_errors_total";
pub const POOL_SIZE: &str = "pglittle_pool_size";
pub const POOL_PAUSED: &str = "pglittle_pool_paused";
pub const CLIENTS_PINNED: &str = "pglittle_clients_pinned";
pub const ARRIVAL_RATE: &str = "pglittle_pool_arrival_rate";
pub const HOLD_MEAN_SECONDS: &str = "pglittle_pool_hold_mean_seconds";
pub const HOLD_P99_SECONDS: &str = "pglittle_pool_hold_p99_seconds";
pub const WAIT_P99_WINDOW_SECONDS: &str = "pglittle_pool_wait_p99_seconds";
pub const OFFERED_LOAD: &str = "pglittle_pool_offered_load";
pub const BUSY_MEAN: &str = "pglittle_pool_busy_mean";
pub const WAITING_MEAN: &str = "pglittle_pool_waiting_mean";
pub const UTILISATION: &str = "pglittle_pool_utilisation";
pub const LOAD_FACTOR: &str = "pglittle_pool_load_factor";
pub const RECOMMENDED_SIZE: &str = "pglittle_pool_recommended_size";
pub const PREDICTED_WAIT_P99_SECONDS: &str = "pglittle_pool_predicted_wait_p99_seconds";
pub const CONNECTION_BUDGET: &str = "pglittle_pool_connection_budget";
/// Reserved for replica routing (not exported until replicas are routed).
pub const REPLICA_LAG_SECONDS: &str = "pglittle_replica_lag_seconds";
pub const REPLICA_LAG_BYTES: &str = "pglittle_replica_lag_bytes";
pub const RYW_DECISIONS_TOTAL: &str = "pglittle_read_your_writes_decisions_total";
pub const RYW_POSITIONS_TOTAL: &str = "pglittle_read_your_writes_positions_total";
pub const FLEET_CAP: &str = "pglittle_fleet_cap";
pub const FLEET_DEMAND: &str = "pglittle_fleet_demand";
pub const FLEET_HELD: &str = "pglittle_fleet_held";
pub const FLEET_SUM: &str = "pglittle_fleet_sum";
pub const FLEET_BUDGET: &str = "pglittle_fleet_budget";

/// (name, unit, help) for the HELP lines.
pub const DESCRIPTIONS: &[(&str, &str, &str)] = &[
    (CLIENTS, "", "Client connections by state (active, waiting, idle)."),
    (SERVERS, "", "Server connections by state (active, idle, used, login, testing)."),
    (WAIT_SECONDS, "seconds", "Time a transaction waited for a server connection."),
    (HOLD_SECONDS, "seconds", "Time a transaction held its server connection (W in Little's Law)."),
    (QUERY_SECONDS, "seconds", "Time from a query (or Sync) reaching the server to its ReadyForQuery."),
    (TRANSACTIONS_TOTAL, "", "Transactions (server leases) completed."),
    (QUERIES_TOTAL, "", "Queries (Query, Sync or FunctionCall cycles) completed."),
    (RECEIVED_BYTES_TOTAL, "bytes", "Bytes received from clients and relayed to servers."),
    (SENT_BYTES_TOTAL, "bytes", "Bytes received from servers and relayed to clients."),
    (ERRORS_TOTAL, "", "Errors returned by servers, by SQLSTATE class."),
    (QUERIES_ROUTED_TOTAL, "", "Queries by route (primary or replica)."),
    (HOST_UP, "", "1 when the host is not banned by the health probe."),
    (PREPARED_HITS_TOTAL, "", "Named statements found already prepared on the lent server."),
    (PREPARED_MISSES_TOTAL, "", "Named statements prepared on the lent server on demand."),
    (PREPARED_EVICTIONS_TOTAL, "", "Server-side statements closed by the LRU (max_prepared_statements)."),
    (PLAN_RETRIES_TOTAL, "", "Batches replayed after 'cached plan must not change result type'."),
    (CLIENTS_REFUSED_TOTAL, "", "Clients refused at login, by reason."),
    (CLIENTS_SHED_TOTAL, "", "Requests shed early because the predicted wait exceeded the deadline."),
    (WAIT_TIMEOUTS_TOTAL, "", "Requests that waited query_wait_timeout for a server and failed."),
    (SERVER_CONNECTS_TOTAL, "", "Server connections opened."),
    (SERVER_CONNECT_ERRORS_TOTAL, "", "Server connections that failed to open."),
    (POOL_SIZE, "", "Configured pool size."),
    (POOL_PAUSED, "", "1 while the pool is paused (PAUSE or KILL)."),
    (
        CLIENTS_PINNED,
        "",
        "Transaction-mode clients keeping their server between transactions (LISTEN, or session state with pin_on_session_state).",
    ),
    (ARRIVAL_RATE, "", "Little's Law lambda: server requests per second over the window."),
    (HOLD_MEAN_SECONDS, "seconds", "Little's Law W: mean hold time over the window."),
    (HOLD_P99_SECONDS, "seconds", "p99 hold time over the window."),
    (WAIT_P99_WINDOW_SECONDS, "seconds", "Measured p99 wait for a server over the window."),
    (OFFERED_LOAD, "", "Little's Law L = lambda * W: busy servers needed on average."),
    (BUSY_MEAN, "", "Measured mean number of lent servers over the window (cross-check of L)."),
    (WAITING_MEAN, "", "Measured mean number of clients waiting for a server over the window."),
    (UTILISATION, "", "L / pool_size over the window."),
    (LOAD_FACTOR, "", "(mean busy + mean waiting) / pool_size: above 1 means a queue."),
    (RECOMMENDED_SIZE, "", "Pool size keeping the predicted p99 wait under target (Erlang C, floor L*(1+headroom), capped by the max_connections budget)."),
    (PREDICTED_WAIT_P99_SECONDS, "seconds", "Erlang C predicted p99 wait at the current or recommended size (+Inf when unstable)."),
    (CONNECTION_BUDGET, "", "This pool's share of the server's max_connections (0 = unknown)."),
    (REPLICA_LAG_SECONDS, "seconds", "Replay lag of a replica: how long ago the primary first wrote past its replay position."),
    (REPLICA_LAG_BYTES, "bytes", "Replay lag of a replica in WAL bytes."),
    (RYW_DECISIONS_TOTAL, "", "Read-your-writes decisions: replica, primary_floor, waited, primary_time, retried_on_primary."),
    (RYW_POSITIONS_TOTAL, "", "WAL positions learned after writes (lsn mode), by how: pipelined behind the commit, or a query of its own."),
    (FLEET_CAP, "", "Each fleet member's published cap on its connections to the database (this instance's view; me=yes for this one)."),
    (FLEET_DEMAND, "", "Each fleet member's published demand (bid) for connections."),
    (FLEET_HELD, "", "Server connections each fleet member held when it last published."),
    (FLEET_SUM, "", "The fleet's sums as this instance sees them: what=caps, held or demand."),
    (FLEET_BUDGET, "", "The database budget the fleet shares (max_db_connections)."),
];

#[cfg(test)]
mod tests {
    use super::DESCRIPTIONS;

    /// The dashboard must not chart a metric that pglittle does not define.
    #[test]
    fn dashboard_uses_only_known_metrics() {
        let dash = include_str!("../../docker/grafana/pglittle-dashboard.json");
        let known: Vec<&str> = DESCRIPTIONS.iter().map(|(n, _, _)| *n).collect();
        let mut used = 0;
        for (i, _) in dash.match_indices("pglittle_") {
            let name: String = dash[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name);
            assert!(
                known.contains(&base),
                "the dashboard uses unknown metric {name}"
            );
            used += 1;
        }
        assert!(used > 20, "only {used} metric references found");
    }
}
