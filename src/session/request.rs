//! One request, in named steps: answer it without a server if it needs
//! none, find a server (the planned host, a local answer, or a refusal),
//! arm the transaction record, relay, follow the plan (a move to the
//! primary, the read-your-writes floor), and settle the outcome (check-in,
//! keep, abandon or close).

use std::sync::atomic::Ordering::Relaxed;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use super::client_io::Incoming;
use super::placement::{Busy, Retry};
use super::routing::Plan;
use super::{Next, Session};
use crate::config::{PoolMode, ReadYourWrites};
use crate::error::SessionError;
use crate::pool::Lease;
use crate::protocol::{backend, TxStatus};
use crate::relay::{self, Outcome, Replay, TxRecord};

/// A step either finished the request or hands on what the next needs.
enum Step<T> {
    Done(Next),
    Go(T),
}

impl Session {
    /// Serves one request (a transaction, in transaction mode).
    pub(super) async fn handle(&mut self, first: Incoming) -> Result<Next, SessionError> {
        if let Some(next) = self.answer_without_server(first).await? {
            return Ok(next);
        }
        // Filled by routing for this request only.
        self.known.clear();
        let held = self.lease.is_some();
        let mut plan = None;
        let mut lease = match self.find_server(first, &mut plan).await? {
            Step::Done(next) => return Ok(next),
            Step::Go(lease) => lease,
        };
        let mut record = self.arm(plan.as_ref(), held, first);
        let _busy = plan.as_ref().and_then(|p| p.replica.clone()).map(Busy::new);
        let pool = lease.pool().clone();
        let meter = relay::meter::Meter::new(&pool.metrics);
        let outcome = Box::pin(relay::transaction(
            &mut self.client,
            relay::ClientSide {
                buf: &mut self.buf,
                params: &mut self.overrides,
                statements: &mut self.statements,
                defaults: &self.defaults,
            },
            lease.conn(),
            &mut record,
            &self.limits,
            &meter,
        ))
        .await;
        self.count_statements(&mut lease, &record);
        self.known = std::mem::take(&mut record.known);
        let replay = record.replay(&outcome);
        let (lease, replay) = match self
            .follow_plan(plan, &outcome, replay, &mut record, lease)
            .await
        {
            Step::Done(next) => return Ok(next),
            Step::Go(go) => go,
        };
        self.settle(lease, outcome, replay, &mut record).await
    }

    /// A stray CopyData/CopyDone/CopyFail/Flush, or a Sync with nothing
    /// before it, while no server is held: nothing is in a transaction, so
    /// pglittle answers (a held server answers itself).
    async fn answer_without_server(
        &mut self,
        first: Incoming,
    ) -> Result<Option<Next>, SessionError> {
        if self.lease.is_some() || !matches!(first, Incoming::Stray | Incoming::LoneSync) {
            return Ok(None);
        }
        self.skip_message().await?;
        if first == Incoming::LoneSync {
            let mut out = BytesMut::new();
            backend::ready_for_query(&mut out, TxStatus::Idle);
            self.client.write_all(&out).await?;
        }
        Ok(Some(Next::Continue))
    }

    /// The server for this request: the one held, none (pglittle answers
    /// its own commands), or one lent from the planned host. A pool's
    /// refusal is answered to the client, which may try again.
    async fn find_server(
        &mut self,
        first: Incoming,
        plan: &mut Option<Plan>,
    ) -> Result<Step<Lease>, SessionError> {
        if let Some(lease) = self.lease.take() {
            return Ok(Step::Go(lease));
        }
        if first == Incoming::Simple && self.answer_locally().await? {
            return Ok(Step::Done(Next::Continue));
        }
        match self.acquire_planned(plan).await {
            Ok(lease) => Ok(Step::Go(lease)),
            Err(SessionError::Pool(e)) => {
                let closed = matches!(e, crate::pool::PoolError::Closed(_));
                self.refuse_request(first, &SessionError::Pool(e)).await?;
                if closed {
                    return Err(SessionError::ShuttingDown);
                }
                Ok(Step::Done(Next::Continue))
            }
            Err(e) => Err(e),
        }
    }

    /// The record the relay fills in, with what may happen to the request:
    /// a replica's refusal or death moves it to the primary; a primary
    /// server lent just now may have been told to shut down.
    fn arm(&mut self, plan: Option<&Plan>, held: bool, first: Incoming) -> TxRecord {
        let mut record = TxRecord::new();
        record.known = std::mem::take(&mut self.known);
        record.lex_unsafe = self.lex_unsafe();
        if let Some(p) = plan {
            record.one_batch = p.one_batch;
            record.retry_armed = p.replica.is_some() && p.refusable && p.retry;
            record.may_retry = p.replica.is_some() && p.retry;
            record.lsn_probe = p.replica.is_none() && !p.read && p.floor == ReadYourWrites::Lsn;
        }
        if !held && !record.may_retry && matches!(first, Incoming::Simple | Incoming::Extended) {
            record.dead_on_arrival = !std::mem::take(&mut self.moved_off_dead);
            record.may_retry = record.dead_on_arrival;
        }
        record
    }

    /// After the relay, what the plan asks: a replica's refusal or death
    /// moves the request to the primary; a write on the primary teaches
    /// the client its read-your-writes floor.
    async fn follow_plan(
        &mut self,
        plan: Option<Plan>,
        outcome: &Outcome,
        replay: Replay,
        record: &mut TxRecord,
        mut lease: Lease,
    ) -> Step<(Lease, Replay)> {
        let Some(p) = plan else {
            return Step::Go((lease, replay));
        };
        if p.replica.is_none() {
            let wrote = !p.read && record.ran();
            if wrote && matches!(outcome, Outcome::Idle | Outcome::IdleThenGone) {
                self.learn_floor(&mut lease, p.floor, record.commit_lsn())
                    .await;
            }
            return Step::Go((lease, replay));
        }
        match self.retry_on_primary(p, replay) {
            Some(Retry::AfterIdle) => {
                self.lease = self.after_transaction(lease, record).await;
                Step::Done(Next::Continue)
            }
            Some(Retry::Discard) => {
                self.release(lease, false);
                Step::Done(Next::Continue)
            }
            None => Step::Go((lease, Replay::No)),
        }
    }

    /// What the relay's outcome means for the server and the session.
    async fn settle(
        &mut self,
        lease: Lease,
        outcome: Outcome,
        replay: Replay,
        record: &mut TxRecord,
    ) -> Result<Next, SessionError> {
        let session_mode = self.mode == PoolMode::Session;
        match outcome {
            Outcome::Idle if session_mode => {
                self.lease = Some(lease);
                Ok(Next::Continue)
            }
            Outcome::Idle => {
                self.lease = self.after_transaction(lease, record).await;
                Ok(Next::Continue)
            }
            Outcome::IdleThenGone if session_mode => {
                self.finish_lease(lease, true).await;
                Ok(Next::Close)
            }
            Outcome::IdleThenGone => {
                if let Some(kept) = self.after_transaction(lease, record).await {
                    self.finish_lease(kept, true).await;
                }
                Ok(Next::Close)
            }
            Outcome::ClientGone => {
                self.abandon(lease, record).await;
                Ok(Next::Close)
            }
            // The client has its answers; only the read-your-writes
            // position is lost (as when asking for it fails).
            Outcome::AnsweredThenServerGone => {
                self.release(lease, false);
                Ok(Next::Continue)
            }
            Outcome::ServerGone { told } => {
                self.release(lease, false);
                if self.retry_dead_on_arrival(replay) {
                    return Ok(Next::Continue);
                }
                if told {
                    return Ok(Next::Close);
                }
                Err(SessionError::ServerLost)
            }
            // The client broke the protocol, went over a limit, or sat too
            // long: the server is cleaned, or closed if something was in
            // flight (which rolls back what an open batch began).
            Outcome::ClientProtocol(e) => self.abandon_with(lease, record, e.into()).await,
            Outcome::ClientOverLimit(e) => self.abandon_with(lease, record, e.into()).await,
            Outcome::IdleInTransaction => {
                let e = SessionError::IdleInTransaction;
                self.abandon_with(lease, record, e).await
            }
            Outcome::BatchLeftOpen => {
                let e = SessionError::BatchLeftOpen(self.limits.batch_timeout);
                self.abandon_with(lease, record, e).await
            }
        }
    }

    /// Moves the relay's prepared-statement counts into the pool's counters.
    fn count_statements(&self, lease: &mut Lease, record: &TxRecord) {
        let pool = lease.pool().clone();
        let c = &pool.counters;
        // Shared counters: touch them only when there is something to add.
        let (hits, misses, evictions) = lease.conn().statements.take_counts();
        let retries = record.retries;
        for (counter, n) in [
            (&c.stmt_hits, hits),
            (&c.stmt_misses, misses),
            (&c.stmt_evictions, evictions),
            (&c.plan_retries, retries),
        ] {
            if n > 0 {
                counter.fetch_add(n, Relaxed);
            }
        }
    }

    /// Transaction over and the server idle: the settings the client
    /// changed follow it, and the server is cleaned or kept (`checkin`).
    /// Returns the lease when the client keeps it.
    pub(super) async fn after_transaction(
        &mut self,
        lease: Lease,
        record: &mut TxRecord,
    ) -> Option<Lease> {
        self.check_in(lease, record.effects(), record.take_settings())
            .await
    }

    /// `abandon`, then the session ends with `e`.
    async fn abandon_with(
        &mut self,
        lease: Lease,
        record: &TxRecord,
        e: SessionError,
    ) -> Result<Next, SessionError> {
        self.abandon(lease, record).await;
        Err(e)
    }

    /// The client left (or broke the protocol) while holding a server: roll
    /// back and reuse it if nothing is in flight, otherwise close it.
    async fn abandon(&mut self, lease: Lease, record: &TxRecord) {
        if !record.quiet() {
            return self.release(lease, false);
        }
        let idle = record.status() == TxStatus::Idle;
        self.finish_lease(lease, idle).await;
    }

    /// The client's session makes the SQL lexer unreliable: backslashes
    /// escape quotes (standard_conforming_strings off), or the encoding
    /// lets a multibyte character end in a quote-like byte.
    fn lex_unsafe(&self) -> bool {
        const UNSAFE_ENCODINGS: &[&str] = &[
            "sjis",
            "shift_jis_2004",
            "big5",
            "gbk",
            "gb18030",
            "uhc",
            "johab",
        ];
        // Runs once per transaction: compares without allocating.
        let get = |k: &str| self.overrides.get(k).or_else(|| self.defaults.get(k));
        get("standard_conforming_strings").is_some_and(|v| v.eq_ignore_ascii_case("off"))
            || get("client_encoding")
                .is_some_and(|e| UNSAFE_ENCODINGS.iter().any(|u| e.eq_ignore_ascii_case(u)))
    }
}
