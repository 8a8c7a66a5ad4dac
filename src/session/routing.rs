//! Read/write splitting for one session: the router's decision for the
//! request waiting in the buffer, then the topology's pick of a host.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;

use super::Shared;
use crate::config::{Config, ReadYourWrites, Switch};
use crate::pool::Pool;
use crate::prepared::client::ClientStatements;
use crate::protocol::Lsn;
use crate::router::{self, RouteState};
use crate::sql::Known;
use crate::topology::{Choice, Eligibility, HostState};

/// Where one request runs.
pub struct Plan {
    pub pool: Arc<Pool>,
    /// The replica, when the request goes to one.
    pub replica: Option<Arc<HostState>>,
    /// The request was classified as a read (no floor to learn after it).
    pub read: bool,
    /// A replica's refusal or death may move the request to the primary
    /// (the relay keeps what it sends): it can be sent again as it is (it
    /// closes no prepared statement and redefines none).
    pub retry: bool,
    /// A single autocommit batch: the lease serves no more than it.
    pub one_batch: bool,
    /// The 25006/40001 safety net applies: a simple Query, or a single
    /// autocommit extended batch up to its Sync.
    pub refusable: bool,
    /// How a write learns the client's floor: the database's
    /// `read_your_writes`, or `Off` when its reads are not split.
    pub floor: ReadYourWrites,
}

/// Reads the primary served, for SHOW REPLICAS.
fn count_primary_read(shared: &Shared, db: &str, read: bool) {
    if let Some(h) = shared.topology.get(db).filter(|_| read) {
        h.primary.served.fetch_add(1, Relaxed);
    }
}

/// Decides where the request at the front of `buf` runs: the router's
/// pure decision (`router::plan`), then the topology's pick of a host, and
/// the counters behind SHOW REPLICAS and the read-your-writes metrics.
pub async fn plan(
    route: &RouteState,
    shared: &Shared,
    config: &Config,
    primary: &Arc<Pool>,
    request: (&BytesMut, usize, &ClientStatements, &mut Known),
) -> Plan {
    let Some(dbc) = config.databases.get(&primary.database) else {
        return Plan::primary(primary, ReadYourWrites::Off);
    };
    let r = &dbc.routing;
    if r.split == Switch::Off || dbc.replicas.is_empty() {
        return Plan::primary(primary, ReadYourWrites::Off);
    }
    let on_primary = |read: bool, one_batch: bool| Plan {
        read,
        one_batch,
        ..Plan::primary(primary, r.read_your_writes)
    };
    let (buf, max, stmts, known) = request;
    let req = router::inspect(buf, max, stmts, &r.writer_functions, known);
    let d = router::plan(&req, route, r, Instant::now());
    let Some(min_lsn) = d.replica else {
        if d.time_pinned && d.read {
            shared.ryw.primary_time.fetch_add(1, Relaxed);
        }
        count_primary_read(shared, &primary.database, d.read);
        return on_primary(d.read, d.one_batch);
    };
    let Some(hosts) = shared.topology.get(&primary.database) else {
        return on_primary(d.read, d.one_batch);
    };
    let want = Eligibility {
        min_lsn,
        max_lag_bytes: r.max_replica_lag_bytes.map(|b| b as u64),
        max_lag: r.max_replica_lag,
    };
    let (choice, waited) = hosts
        .pick_waiting(&want, r.primary_reads, r.causal_wait)
        .await;
    if min_lsn > Lsn::ZERO {
        let c = match (&choice, waited) {
            (Choice::Replica(_), true) => &shared.ryw.waited,
            (Choice::Replica(_), false) => &shared.ryw.replica,
            (Choice::Primary, _) => &shared.ryw.primary_floor,
        };
        c.fetch_add(1, Relaxed);
    }
    let Choice::Replica(host) = choice else {
        hosts.primary.served.fetch_add(1, Relaxed);
        return on_primary(d.read, d.one_batch);
    };
    let Some(pool) = shared.replica_pool_for(config, &primary.database, &primary.user, &host)
    else {
        return on_primary(d.read, d.one_batch);
    };
    Plan {
        pool,
        replica: Some(host),
        read: d.read,
        retry: d.retry,
        one_batch: d.one_batch,
        refusable: d.refusable,
        floor: r.read_your_writes,
    }
}

impl Plan {
    /// A write on the primary (nothing known to move it elsewhere).
    pub fn primary(pool: &Arc<Pool>, floor: ReadYourWrites) -> Plan {
        Plan {
            pool: pool.clone(),
            replica: None,
            read: false,
            retry: false,
            one_batch: false,
            refusable: false,
            floor,
        }
    }
}
