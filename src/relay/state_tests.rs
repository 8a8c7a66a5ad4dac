//! The relay's shared state driven by whole conversations, with no socket:
//! client messages in, server replies in, and at every step what the
//! client is shown and whether the transaction is over.

use bytes::BytesMut;

use super::state::{State, MAX_QUEUED_REPLIES};
use super::tx_record::{Replay, TxRecord, LSN_PROBE};
use super::Outcome;
use crate::prepared::client::ClientStatements;
use crate::prepared::server::ServerStatements;
use crate::prepared::Rewriter;
use crate::protocol::frontend::{self, peek_message};
use crate::protocol::scan::{BackendEvent, BackendKind as K, Segment};
use crate::protocol::test_wire::{execute, msg, parse, sync, tags, NO_PARAMS};
use crate::protocol::TxStatus;

fn bind(statement: &str) -> Vec<u8> {
    crate::protocol::test_wire::bind(statement, NO_PARAMS)
}

/// Client messages in; the bytes the server is sent out.
fn client(st: &mut State<'_>, msgs: &[Vec<u8>]) -> BytesMut {
    let mut out = BytesMut::new();
    for raw in msgs {
        let (m, len) = peek_message(raw, 1 << 20).unwrap().unwrap();
        assert_eq!(len, raw.len());
        st.client_message(&m, raw, &mut out).unwrap();
    }
    out
}

/// Server replies in, written as `1 2 C D T n G N` (by tag), `Z:I` (a
/// ReadyForQuery with its status), `E:42601` (an error), `F:57P01`
/// (a FATAL one) or `L:0/3000060` (a DataRow of one WAL position). Out: per reply, `F` forwarded, `-` dropped, `R` dropped
/// for a replay, each after a `+` for every made-up reply that became due.
fn server(st: &mut State<'_>, replies: &str) -> String {
    let mut seen = String::new();
    for r in replies.split_whitespace() {
        let (kind, event) = match r.split_once(':') {
            Some(("L", lsn)) => (K::DataRow, Some(BackendEvent::LsnRow(lsn.parse().unwrap()))),
            Some(("Z", s)) => (
                K::ReadyForQuery,
                Some(BackendEvent::ReadyForQuery(
                    TxStatus::from_byte(s.as_bytes()[0]).unwrap(),
                )),
            ),
            Some((e, code)) => {
                let code: [u8; 5] = code.as_bytes().try_into().unwrap();
                let fatal = e == "F";
                (K::Error, Some(BackendEvent::Error { code, fatal }))
            }
            None => (
                match r {
                    "1" => K::ParseComplete,
                    "2" => K::BindComplete,
                    "3" => K::CloseComplete,
                    "C" => K::CommandComplete,
                    "D" => K::DataRow,
                    "T" => K::RowDescription,
                    "n" => K::NoData,
                    "G" => K::CopyIn,
                    "N" => K::Async,
                    other => panic!("no such reply {other:?}"),
                },
                None,
            ),
        };
        let mut segs = Vec::new();
        let step = st.server_message(kind, event.as_ref(), &mut segs);
        for seg in &segs {
            assert!(matches!(seg, Segment::Static(_)));
            seen.push('+');
        }
        seen.push(match (step.forward, step.resend) {
            (true, _) => 'F',
            (false, true) => 'R',
            (false, false) => '-',
        });
    }
    seen
}

/// One client's statements, one server's, and a fresh record.
struct Rig {
    client: ClientStatements,
    server: ServerStatements,
    record: TxRecord,
}

impl Rig {
    fn new() -> Rig {
        Rig {
            client: ClientStatements::new(),
            server: ServerStatements::new(10),
            record: TxRecord::new(),
        }
    }

    fn state(&mut self) -> State<'_> {
        let rewriter = Rewriter::new(&mut self.client, &mut self.server, true);
        State::new(&mut self.record, rewriter)
    }
}

#[test]
fn a_pipeline_is_over_only_at_its_last_ready_for_query() {
    let mut rig = Rig::new();
    let mut st = rig.state();
    let out = client(
        &mut st,
        &[
            parse("", "select 1"),
            bind(""),
            execute(),
            sync(),
            parse("", "select 2"),
            bind(""),
            execute(),
            sync(),
        ],
    );
    assert_eq!(tags(&out), b"PBESPBES");
    assert_eq!(server(&mut st, "1 2 C Z:I"), "FFFF");
    assert!(!st.done(true), "one Sync is still unanswered");
    assert_eq!(server(&mut st, "1 2 C Z:I"), "FFFF");
    assert!(st.done(true));
    assert!(!st.done(false), "the scanner is inside a message");
}

#[test]
fn an_error_mid_batch_holds_the_server_until_the_client_syncs() {
    let mut rig = Rig::new();
    let mut st = rig.state();
    client(&mut st, &[parse("", "selec 1"), bind(""), execute()]);
    assert_eq!(server(&mut st, "E:42601"), "F");
    // The server now discards everything up to the Sync: no reply is due,
    // yet the batch is open, so the server may not go back to the pool.
    assert!(!st.done(true));
    assert!(!st.idle_in_transaction());
    client(&mut st, &[bind(""), execute()]);
    assert!(!st.done(true));
    client(&mut st, &[sync()]);
    assert_eq!(server(&mut st, "Z:I"), "F");
    assert!(st.done(true));
}

#[test]
fn a_parse_in_a_failed_block_reaches_the_server_which_refuses_it() {
    let mut rig = Rig::new();
    {
        let mut st = rig.state();
        client(&mut st, &[parse("s", "select 1"), sync()]);
        assert_eq!(server(&mut st, "1 Z:I"), "FF");
    }
    rig.record = TxRecord::new();
    let mut st = rig.state();
    client(
        &mut st,
        &[frontend::query("begin"), frontend::query("selec")],
    );
    assert_eq!(server(&mut st, "C Z:T E:42601 Z:E"), "FFFF");
    // The server has "s" already; on its own connection the client would
    // get 25P02 for this Parse, so it is not answered here.
    let out = client(&mut st, &[parse("s", "select 1"), sync()]);
    assert_eq!(tags(&out), b"PS");
    assert_eq!(server(&mut st, "E:25P02 Z:E"), "FF");
    // Outside a failed block the same Parse is answered here.
    client(&mut st, &[frontend::query("rollback")]);
    assert_eq!(server(&mut st, "C Z:I"), "FF");
    let out = client(&mut st, &[parse("s", "select 1"), sync()]);
    assert_eq!(tags(&out), b"S");
    assert_eq!(server(&mut st, "Z:I"), "+F");
}

#[test]
fn copy_in_keeps_the_server_until_the_copy_ends() {
    let mut rig = Rig::new();
    let mut st = rig.state();
    // Extended-protocol COPY: the server ignores the Sync sent before the
    // data, so only one ReadyForQuery comes, after CopyDone and its Sync.
    client(
        &mut st,
        &[parse("", "copy t from stdin"), bind(""), execute(), sync()],
    );
    assert_eq!(server(&mut st, "1 2 G"), "FFF");
    assert!(!st.done(true));
    client(&mut st, &[msg(b'd', b"1\n"), msg(b'c', b""), sync()]);
    assert!(!st.done(true));
    assert_eq!(server(&mut st, "C Z:I"), "FF");
    assert!(st.done(true), "the ignored Sync must not be waited for");
}

#[test]
fn a_stale_plan_is_replayed_unseen_and_counted() {
    let mut rig = Rig::new();
    {
        let mut st = rig.state();
        client(&mut st, &[parse("s", "select * from t"), sync()]);
        server(&mut st, "1 Z:I");
    }
    rig.record = TxRecord::new();
    let mut st = rig.state();
    client(&mut st, &[bind("s"), execute(), sync()]);
    assert_eq!(server(&mut st, "E:0A000"), "R");
    let resend = st.take_resend().expect("the batch to send again");
    assert_eq!(tags(&resend), b"CPBES");
    assert_eq!(server(&mut st, "Z:I"), "-");
    assert!(!st.done(true), "the replay is still to be answered");
    assert_eq!(server(&mut st, "3 1 2 D C Z:I"), "--FFFF");
    assert!(st.done(true));
    drop(st);
    assert_eq!(rig.record.retries, 1);
}

#[test]
fn a_replica_refusal_before_any_row_is_swallowed_for_the_primary() {
    let mut rig = Rig::new();
    rig.record.may_retry = true;
    rig.record.retry_armed = true;
    rig.record.one_batch = true;
    let mut st = rig.state();
    let q = frontend::query("select f()");
    let mut out = BytesMut::new();
    let (m, _) = peek_message(&q, 1 << 20).unwrap().unwrap();
    st.client_message(&m, &q, &mut out).unwrap();
    st.client_bytes(&q);
    assert!(st.batch_full(), "a replica lease takes one batch");
    assert!(st.hold_back());
    assert_eq!(server(&mut st, "N T"), "FF");
    assert!(
        st.hold_back(),
        "a notice and a RowDescription may still be replaced"
    );
    server(&mut st, "E:25006 Z:I");
    assert!(st.retry_primary());
    assert!(st.done(true));
    drop(st);
    assert!(rig.record.untouched());
    assert_eq!(
        rig.record.replay(&Outcome::Idle),
        Replay::Refused(BytesMut::from(&q[..]))
    );
}

#[test]
fn a_replica_that_dies_after_some_rows_costs_the_client_nothing() {
    let mut rig = Rig::new();
    rig.record.may_retry = true;
    rig.record.one_batch = true;
    let mut st = rig.state();
    client(&mut st, &[frontend::query("select * from t")]);
    assert_eq!(server(&mut st, "T D D"), "FFF");
    assert!(st.hold_back(), "rows are held until the reply is whole");
    // "terminating connection due to immediate shutdown command"
    server(&mut st, "F:57P01");
    assert!(st.retry_primary());
    assert!(!st.told());
}

/// A primary server lent for one Query, armed for a dead-on-arrival move.
fn dead_on_arrival_rig() -> Rig {
    let mut rig = Rig::new();
    rig.record.may_retry = true;
    rig.record.dead_on_arrival = true;
    rig
}

#[test]
fn a_primary_server_whose_first_reply_is_fatal_gives_the_request_back() {
    let mut rig = dead_on_arrival_rig();
    let mut st = rig.state();
    let q = frontend::query("begin");
    client(&mut st, std::slice::from_ref(&q));
    st.client_bytes(&q);
    assert!(
        !st.hold_back(),
        "nothing is held back for a primary request"
    );
    // "terminating connection due to administrator command"
    assert_eq!(server(&mut st, "F:57P01"), "-");
    assert!(st.retry_primary());
    assert!(!st.told());
    drop(st);
    assert!(rig.record.untouched());
    let gone = Outcome::ServerGone { told: false };
    assert_eq!(
        rig.record.replay(&gone),
        Replay::ServerDied {
            sent: BytesMut::from(&q[..]),
            fatal_first: true
        }
    );
}

#[test]
fn a_primary_server_that_answered_keeps_its_request() {
    let mut rig = dead_on_arrival_rig();
    // The bytes are kept in the connection's spare buffer, not a new one.
    let mut room = BytesMut::with_capacity(256);
    rig.record.lend_replay_room(&mut room);
    assert_eq!(room.capacity(), 0, "the record holds the room");
    let mut st = rig.state();
    let q = frontend::query("select 1");
    client(&mut st, std::slice::from_ref(&q));
    st.client_bytes(&q);
    assert_eq!(server(&mut st, "T"), "F");
    assert!(!st.hold_back());
    // A FATAL after a reply reaches the client: the query may have run.
    assert_eq!(server(&mut st, "F:57P01"), "F");
    assert!(!st.retry_primary());
    assert!(st.told());
    drop(st);
    assert!(!rig.record.may_retry);
    // The answered request needs its bytes no more: the room goes back
    // to the connection, empty, for the next transaction.
    rig.record.return_replay_room(&mut room);
    assert!(room.is_empty() && room.capacity() >= 256);
    let gone = Outcome::ServerGone { told: true };
    assert_eq!(rig.record.replay(&gone), Replay::No);
}

#[test]
fn a_replica_error_that_answers_the_query_reaches_the_client() {
    let mut rig = Rig::new();
    rig.record.may_retry = true;
    rig.record.retry_armed = true;
    let mut st = rig.state();
    client(&mut st, &[frontend::query("select 1/0")]);
    assert_eq!(server(&mut st, "T E:22012"), "FF");
    assert!(
        !st.hold_back(),
        "an error that answers the query is sent on"
    );
    assert_eq!(server(&mut st, "Z:I"), "F");
    assert!(!st.retry_primary());
    assert!(st.done(true));
}

#[test]
fn effects_of_a_statement_count_when_it_runs() {
    let mut rig = Rig::new();
    {
        let mut st = rig.state();
        client(&mut st, &[parse("s", "set work_mem = '1MB'"), sync()]);
        server(&mut st, "1 Z:I");
    }
    assert!(rig.record.effects().settings, "parsing counts as well");
    rig.record = TxRecord::new();
    let mut st = rig.state();
    client(&mut st, &[bind("s"), execute(), sync()]);
    drop(st);
    assert!(rig.record.effects().settings, "running it counts");
    assert_eq!(rig.record.take_settings().len(), 1);
}

#[test]
fn an_open_transaction_with_nothing_in_flight_is_idle_in_transaction() {
    let mut rig = Rig::new();
    let mut st = rig.state();
    client(&mut st, &[frontend::query("begin")]);
    assert!(!st.idle_in_transaction(), "the BEGIN is unanswered");
    server(&mut st, "C Z:T");
    assert!(st.idle_in_transaction());
    assert!(!st.done(true));
    client(&mut st, &[parse("", "select 1")]);
    assert!(!st.idle_in_transaction(), "a Parse waits for its Sync");
}

#[test]
fn a_batch_left_open_is_the_clients_move_only_when_nothing_is_due() {
    let mut rig = Rig::new();
    let mut st = rig.state();
    client(&mut st, &[parse("", "select 1"), bind("")]);
    assert!(
        st.batch_left_open(),
        "with no Flush the server answers nothing"
    );
    client(&mut st, &[msg(b'H', b"")]);
    assert!(!st.batch_left_open(), "the Flush makes two replies due");
    assert_eq!(server(&mut st, "1"), "F");
    assert!(!st.batch_left_open());
    assert_eq!(server(&mut st, "2"), "F");
    assert!(st.batch_left_open(), "both came: the client must move");
    client(&mut st, &[execute(), sync()]);
    assert!(!st.batch_left_open());
    assert_eq!(server(&mut st, "C Z:I"), "FF");
    assert!(!st.batch_left_open());
    assert!(st.done(true));
}

#[test]
fn a_client_that_never_reads_what_is_answered_here_is_held_up() {
    let mut rig = Rig::new();
    {
        let mut st = rig.state();
        client(&mut st, &[parse("s", "select 1"), sync()]);
        server(&mut st, "1 Z:I");
    }
    let mut st = rig.state();
    // Close messages are answered here, queued until the server pump
    // sends them; past the cap the client pump must stop reading.
    let close = msg(b'C', b"Ss\0");
    let mut n = 0;
    while !st.backlogged() {
        client(&mut st, std::slice::from_ref(&close));
        n += 1;
        assert!(n <= MAX_QUEUED_REPLIES, "the queue grew past its cap");
    }
    assert_eq!(n, MAX_QUEUED_REPLIES);
    // The server pump sends what is due: the client may read again, once.
    let mut segs = Vec::new();
    assert!(st.emit_due(&mut segs), "the client pump is woken");
    assert_eq!(segs.len(), MAX_QUEUED_REPLIES);
    assert!(!st.backlogged());
}

#[test]
fn a_client_past_its_statement_cap_is_refused_and_nothing_is_sent() {
    let mut rig = Rig::new();
    rig.client = ClientStatements::capped(2);
    let mut st = rig.state();
    client(&mut st, &[parse("a", "select 1"), parse("b", "select 2")]);
    // Preparing an existing name again replaces it: still within the cap.
    client(&mut st, &[parse("a", "select 3")]);
    let third = parse("c", "select 4");
    let (m, _) = peek_message(&third, 1 << 20).unwrap().unwrap();
    let mut out = BytesMut::new();
    let refused = st.client_message(&m, &third, &mut out);
    assert!(refused.is_err(), "{refused:?}");
    assert!(out.is_empty(), "the refused Parse reached the server");
    let sql = frontend::query("prepare d as select 5");
    let (m, _) = peek_message(&sql, 1 << 20).unwrap().unwrap();
    assert!(st.client_message(&m, &sql, &mut out).is_err());
}

// ---- read-your-writes: the WAL position read behind the commit --------------

fn query(sql: &str) -> Vec<u8> {
    frontend::query(sql)
}

fn probing() -> Rig {
    let mut rig = Rig::new();
    rig.record.lsn_probe = true;
    rig
}

#[test]
fn the_probe_query_is_a_well_formed_simple_query() {
    assert_eq!(
        LSN_PROBE,
        frontend::query("SELECT pg_current_wal_insert_lsn()::text").as_slice()
    );
}

#[test]
fn an_autocommit_write_is_followed_by_the_probe_in_the_same_write() {
    let mut rig = probing();
    let mut st = rig.state();
    let out = client(&mut st, &[query("update t set v = 1 where id = 2")]);
    assert_eq!(tags(&out), b"QQ");
    assert!(out.ends_with(LSN_PROBE), "the probe follows the write");
    assert!(st.batch_full(), "the next request waits for the probe");
    // The client's answer goes on at once; the probe's never reaches it.
    assert!(!st.only_probe_left(), "the client's answer is due");
    assert_eq!(server(&mut st, "C Z:I"), "FF");
    assert!(!st.done(true), "the probe is still to answer");
    assert!(st.only_probe_left());
    assert_eq!(server(&mut st, "T L:0/3000060 C Z:I"), "----");
    assert!(st.done(true) && !st.batch_full());
    drop(st);
    assert_eq!(rig.record.commit_lsn(), Some("0/3000060".parse().unwrap()));
}

#[test]
fn a_commit_ending_a_block_is_probed_and_a_begin_is_not() {
    let mut rig = probing();
    let mut st = rig.state();
    let out = client(&mut st, &[query("begin")]);
    assert_eq!(tags(&out), b"Q", "no probe inside the client's block");
    assert_eq!(server(&mut st, "C Z:T"), "FF");
    let out = client(&mut st, &[query("insert into t values (1)")]);
    assert_eq!(tags(&out), b"Q");
    assert_eq!(server(&mut st, "C Z:T"), "FF");
    let out = client(&mut st, &[query("commit")]);
    assert_eq!(tags(&out), b"QQ");
    assert_eq!(server(&mut st, "C Z:I T L:0/5 C Z:I"), "FF----");
    assert!(st.done(true));
    drop(st);
    assert_eq!(rig.record.commit_lsn(), Some("0/5".parse().unwrap()));
}

#[test]
fn a_write_the_probe_could_not_follow_leaves_no_position() {
    // Pipelined behind the first, the second write is sent while the
    // server's state after the first is unknown: no probe follows it, so
    // the first one's position is not the last word.
    let mut rig = probing();
    let mut st = rig.state();
    let out = client(
        &mut st,
        &[query("update t set v = 2"), query("update t set v = 1")],
    );
    assert_eq!(tags(&out), b"QQQ", "the probe follows the first write");
    assert_eq!(server(&mut st, "C Z:I T L:0/7 C Z:I C Z:I"), "FF----FF");
    assert!(st.done(true));
    drop(st);
    assert_eq!(rig.record.commit_lsn(), None);
    // A client whose next request is already buffered is not made to
    // wait for a probe between the two.
    let mut rig = probing();
    let mut st = rig.state();
    st.more_buffered = true;
    let out = client(&mut st, &[query("update t set v = 1")]);
    assert_eq!(tags(&out), b"Q");
    // COPY is not followed either.
    let mut rig = probing();
    let mut st = rig.state();
    let out = client(&mut st, &[query("copy t from stdin")]);
    assert_eq!(tags(&out), b"Q");
}

#[test]
fn an_extended_autocommit_batch_is_probed_behind_its_sync() {
    let mut rig = probing();
    let mut st = rig.state();
    let batch = |sql: &str| [parse("", sql), bind(""), execute(), sync()];
    let out = client(&mut st, &batch("update t set v = 1"));
    assert_eq!(tags(&out), b"PBESQ");
    assert_eq!(server(&mut st, "1 2 C Z:I T L:0/8 C Z:I"), "FFFF----");
    assert!(st.done(true));
    drop(st);
    assert_eq!(rig.record.commit_lsn(), Some("0/8".parse().unwrap()));
    // A batch that binds a BEGIN (or a COPY) is not followed: the probe
    // would run inside the block it opens.
    for sql in ["begin", "copy t from stdin"] {
        let mut rig = probing();
        let mut st = rig.state();
        assert_eq!(tags(&client(&mut st, &batch(sql))), b"PBES", "{sql}");
    }
    // Nor is a batch that binds nothing: it runs nothing, and needs no
    // floor at all.
    let mut rig = probing();
    let mut st = rig.state();
    let out = client(&mut st, &[parse("", "select 1"), sync()]);
    assert_eq!(tags(&out), b"PS");
    assert_eq!(server(&mut st, "1 Z:I"), "FF");
    drop(st);
    assert!(!rig.record.ran());
    let mut st = rig.state();
    // A named statement parsed earlier: what it runs is known.
    let out = client(&mut st, &[parse("b", "BEGIN"), sync()]);
    assert_eq!(tags(&out), b"PS");
    assert_eq!(server(&mut st, "1 Z:I"), "FF");
    let out = client(&mut st, &[bind("b"), execute(), sync()]);
    assert_eq!(tags(&out), b"BES", "a bound BEGIN is not followed");
}

#[test]
fn a_probe_that_fails_leaves_no_position_and_the_client_sees_nothing() {
    let mut rig = probing();
    let mut st = rig.state();
    client(&mut st, &[query("delete from t")]);
    assert_eq!(server(&mut st, "C Z:I E:57014 Z:I"), "FF--");
    assert!(st.done(true));
    drop(st);
    assert_eq!(rig.record.commit_lsn(), None);
    // A DataRow of the client's own is not taken for the probe's.
    let mut rig = probing();
    let mut st = rig.state();
    client(&mut st, &[query("insert into t values (1) returning 0/1")]);
    assert_eq!(server(&mut st, "T L:0/1 C Z:I"), "FFFF");
    assert_eq!(server(&mut st, "T L:0/9 C Z:I"), "----");
    drop(st);
    assert_eq!(rig.record.commit_lsn(), Some("0/9".parse().unwrap()));
}
