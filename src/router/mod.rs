//! Where a request may run: pure, table-tested. `request::inspect` folds
//! the request waiting in the client's buffer into a `Request`;
//! `route::decide` takes its class and hint, the session's override and
//! its read-your-writes floor, and answers Primary or Replica at an LSN;
//! `plan` adds what the relay may do with it (serve one batch, move it to
//! the primary if the replica refuses or dies). The topology then picks
//! the host (in `session`, which waits for a replica to catch up).

pub mod request;
pub mod route;
pub mod state;

use std::time::Instant;

pub use request::{inspect, Request};
pub use route::{decide, Inputs, Route};
pub use state::RouteState;

use crate::config::{ReadYourWrites, Routing};
use crate::protocol::Lsn;
use crate::sql::Class;

/// The router's answer for one request of a database with replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// A replica that has replayed at least this LSN (`None`: the primary).
    pub replica: Option<Lsn>,
    /// The request only reads (no floor to learn after it).
    pub read: bool,
    /// A single autocommit batch of reads: a lease serves no more than it.
    pub one_batch: bool,
    /// If a replica refuses it or dies before anything reached the client,
    /// it may run on the primary instead (it can be sent again as it is).
    pub retry: bool,
    /// The 25006/40001 safety net applies: a simple Query, or a single
    /// autocommit extended batch up to its Sync.
    pub refusable: bool,
    /// Time-based read-your-writes sent it to the primary (a metric).
    pub time_pinned: bool,
}

/// Pure: the decision for `req`, from the session's routing state and the
/// database's routing settings, at `now`.
pub fn plan(req: &Request, state: &RouteState, r: &Routing, now: Instant) -> Decision {
    let time_pinned = r.read_your_writes == ReadYourWrites::Time
        && state
            .last_write
            .is_some_and(|t| now.saturating_duration_since(t) < r.pin_after_write);
    let floor = if r.read_your_writes == ReadYourWrites::Off {
        Lsn::ZERO
    } else {
        state.floor
    };
    let route = decide(&Inputs {
        class: req.class,
        hint: req.hint,
        session: state.session,
        floor,
        pinned: time_pinned,
    });
    let read = req.class != Class::Write;
    let one_batch = req.class == Class::Read && req.batch_len.is_some();
    let replica = match (route, req.batch_len) {
        (Route::Replica { min_lsn }, Some(_)) => Some(min_lsn),
        _ => None,
    };
    Decision {
        replica,
        read,
        one_batch,
        retry: replica.is_some() && req.replayable,
        refusable: replica.is_some() && (req.simple || one_batch),
        time_pinned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::Hint;
    use std::time::Duration;

    /// (request, state, settings) -> (replica floor, one_batch, refusable, time_pinned)
    type Row<'a> = (
        &'a Request,
        &'a RouteState,
        &'a Routing,
        Option<Lsn>,
        bool,
        bool,
        bool,
    );

    fn req(class: Class, hint: Option<Hint>, batch: bool, simple: bool) -> Request {
        Request {
            class,
            hint,
            batch_len: batch.then_some(10),
            simple,
            replayable: true,
        }
    }

    #[test]
    fn decisions_as_a_table() {
        let now = Instant::now();
        let lsn = Lsn(0x100);
        let fresh = RouteState::default();
        let wrote = RouteState {
            floor: lsn,
            last_write: Some(now),
            ..RouteState::default()
        };
        let lsn_mode = Routing::default();
        let time_mode = Routing {
            read_your_writes: ReadYourWrites::Time,
            ..Routing::default()
        };
        let off = Routing {
            read_your_writes: ReadYourWrites::Off,
            ..Routing::default()
        };
        let read = req(Class::Read, None, true, true);
        let write = req(Class::Write, None, true, true);
        let open = req(Class::Read, None, false, false);
        let hinted = req(Class::Write, Some(Hint::Replica), true, false);
        let table: &[Row] = &[
            (&read, &fresh, &lsn_mode, Some(Lsn::ZERO), true, true, false),
            (&read, &wrote, &lsn_mode, Some(lsn), true, true, false),
            (&read, &wrote, &off, Some(Lsn::ZERO), true, true, false),
            (&read, &wrote, &time_mode, None, true, false, true),
            (&write, &fresh, &lsn_mode, None, false, false, false),
            // No Sync yet: it cannot be judged whole, so the primary.
            (&open, &fresh, &lsn_mode, None, false, false, false),
            // A hint beats the class; an extended batch of one is refusable
            // only when it is a batch of reads.
            (&hinted, &wrote, &lsn_mode, Some(lsn), false, false, false),
        ];
        for (i, &(rq, st, r, replica, one_batch, refusable, pinned)) in table.iter().enumerate() {
            let d = plan(rq, st, r, now);
            assert_eq!(d.replica, replica, "row {i}");
            assert_eq!(d.one_batch, one_batch, "row {i}");
            assert_eq!(d.refusable, refusable, "row {i}");
            assert_eq!(d.time_pinned, pinned, "row {i}");
            assert_eq!(d.retry, replica.is_some(), "row {i}");
        }
        // Time mode: the pin lasts pin_after_write.
        let later = now + time_mode.pin_after_write + Duration::from_millis(1);
        assert_eq!(plan(&read, &wrote, &time_mode, later).replica, Some(lsn));
        let unreplayable = Request {
            replayable: false,
            ..read
        };
        assert!(!plan(&unreplayable, &fresh, &lsn_mode, now).retry);
    }
}
