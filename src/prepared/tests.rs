//! The prepared-statement books driven by message sequences, without
//! sockets: what is sent to the server, and the fate of every reply.

use bytes::BytesMut;

use super::client::ClientStatements;
use super::server::ServerStatements;
use super::{ReplyAction, Rewriter};
use crate::protocol::frontend::{self, peek_message};
use crate::protocol::scan::{BackendKind as K, Segment, PARSE_COMPLETE};
use crate::protocol::test_wire::{self, execute, msg, parse, sync, NO_PARAMS};
use crate::sql::inspect;

fn bind(statement: &str) -> Vec<u8> {
    test_wire::bind(statement, NO_PARAMS)
}

fn query(sql: &str) -> Vec<u8> {
    frontend::query(sql)
}

/// Feeds client messages; returns the bytes for the server.
fn send(b: &mut Rewriter<'_>, msgs: &[Vec<u8>]) -> BytesMut {
    let mut out = BytesMut::new();
    for raw in msgs {
        let (m, _) = peek_message(raw, 1 << 20).unwrap().unwrap();
        let fx = match m {
            frontend::FrontendMessage::Query { sql }
            | frontend::FrontendMessage::Parse { sql, .. } => inspect(sql),
            _ => Default::default(),
        };
        b.client_message(&m, raw, fx, false, &mut out);
    }
    out
}

/// What the client gets for each server reply: `F` forwarded, `-` dropped,
/// `R` dropped for a replay, each preceded by `+` for a reply pglittle
/// made up that became due.
fn replies(b: &mut Rewriter<'_>, kinds: &[(K, Option<&[u8; 5]>)]) -> String {
    let mut s = String::new();
    for (kind, err) in kinds {
        let mut segs = Vec::new();
        let fate = b.server_message(*kind, *err, false, &mut segs);
        for seg in &segs {
            if let Segment::Static(bytes) = seg {
                assert_eq!(*bytes, PARSE_COMPLETE);
                s.push('+');
            }
        }
        s.push(match fate {
            ReplyAction::Forward => 'F',
            ReplyAction::Drop => '-',
            ReplyAction::Retry => 'R',
        });
    }
    s
}

/// The tags of the messages in `out`.
fn tags(out: &[u8]) -> String {
    String::from_utf8(test_wire::tags(out)).unwrap_or_default()
}

#[test]
fn a_pipeline_prepares_once_and_forwards_every_reply() {
    let (mut c, mut s) = (ClientStatements::new(), ServerStatements::new(10));
    let mut b = Rewriter::new(&mut c, &mut s, true);
    let out = send(
        &mut b,
        &[
            parse("s1", "select 1"),
            bind("s1"),
            execute(),
            sync(),
            bind("s1"),
            execute(),
            sync(),
        ],
    );
    assert_eq!(tags(&out), "PBESBES");
    let r = replies(
        &mut b,
        &[
            (K::ParseComplete, None),
            (K::BindComplete, None),
            (K::CommandComplete, None),
            (K::ReadyForQuery, None),
            (K::BindComplete, None),
            (K::CommandComplete, None),
            (K::ReadyForQuery, None),
        ],
    );
    assert_eq!(r, "FFFFFFF");
}

#[test]
fn a_parse_the_server_already_has_is_answered_in_its_turn() {
    let (mut c, mut s) = (ClientStatements::new(), ServerStatements::new(10));
    {
        let mut b = Rewriter::new(&mut c, &mut s, true);
        send(&mut b, &[parse("s1", "select 1"), sync()]);
        replies(
            &mut b,
            &[(K::ParseComplete, None), (K::ReadyForQuery, None)],
        );
    }
    // Another client, same text: nothing is sent for its Parse, and its
    // ParseComplete comes before the BindComplete, as PostgreSQL's would.
    let mut other = ClientStatements::new();
    let mut b = Rewriter::new(&mut other, &mut s, true);
    let out = send(
        &mut b,
        &[parse("mine", "select 1"), bind("mine"), execute(), sync()],
    );
    assert_eq!(tags(&out), "BES");
    let r = replies(
        &mut b,
        &[
            (K::BindComplete, None),
            (K::CommandComplete, None),
            (K::ReadyForQuery, None),
        ],
    );
    assert_eq!(r, "+FFF");
}

#[test]
fn an_error_mid_pipeline_skips_to_sync_and_undoes_the_failed_parse() {
    let (mut c, mut s) = (ClientStatements::new(), ServerStatements::new(10));
    let mut b = Rewriter::new(&mut c, &mut s, true);
    send(
        &mut b,
        &[
            parse("bad", "selec"),
            bind("bad"),
            execute(),
            sync(),
            parse("ok", "select 2"),
            sync(),
        ],
    );
    let r = replies(
        &mut b,
        &[
            (K::Error, Some(b"42601")),
            (K::ReadyForQuery, None),
            (K::ParseComplete, None),
            (K::ReadyForQuery, None),
        ],
    );
    assert_eq!(r, "FFFF");
    drop(b);
    assert!(c.get(b"bad").is_none());
    assert!(c.get(b"ok").is_some());
    // The server does not have the failed statement either: a new Parse of
    // the same text is sent again.
    let mut b = Rewriter::new(&mut c, &mut s, true);
    assert_eq!(tags(&send(&mut b, &[parse("bad2", "selec"), sync()])), "PS");
}

#[test]
fn syncs_sent_during_copy_in_are_not_waited_for() {
    let (mut c, mut s) = (ClientStatements::new(), ServerStatements::new(10));
    let mut b = Rewriter::new(&mut c, &mut s, true);
    send(
        &mut b,
        &[parse("", "copy t from stdin"), bind(""), execute(), sync()],
    );
    let r = replies(
        &mut b,
        &[
            (K::ParseComplete, None),
            (K::BindComplete, None),
            (K::CopyIn, None),
        ],
    );
    assert_eq!(r, "FFF");
    // The Sync before CopyDone reached the server during COPY: ignored there.
    assert_eq!(std::mem::take(&mut b.ignored_cycles), 1);
    send(&mut b, &[msg(b'd', b"1\n"), sync(), msg(b'c', b""), sync()]);
    assert_eq!(b.ignored_cycles, 0);
    let r = replies(
        &mut b,
        &[(K::CommandComplete, None), (K::ReadyForQuery, None)],
    );
    assert_eq!(r, "FF");
}

#[test]
fn a_stale_plan_is_prepared_again_and_the_batch_replayed_once() {
    let (mut c, mut s) = (ClientStatements::new(), ServerStatements::new(10));
    {
        let mut b = Rewriter::new(&mut c, &mut s, true);
        send(&mut b, &[parse("s", "select * from t"), sync()]);
        replies(
            &mut b,
            &[(K::ParseComplete, None), (K::ReadyForQuery, None)],
        );
    }
    let mut b = Rewriter::new(&mut c, &mut s, true);
    send(&mut b, &[bind("s"), execute(), sync()]);
    // "cached plan must not change result type": replayed, unseen.
    assert_eq!(replies(&mut b, &[(K::Error, Some(b"0A000"))]), "R");
    let resend = b.resend.take().expect("a replay to send");
    assert_eq!(tags(&resend), "CPBES");
    let r = replies(
        &mut b,
        &[
            (K::ReadyForQuery, None), // the failed batch's
            (K::CloseComplete, None),
            (K::ParseComplete, None),
            (K::BindComplete, None),
            (K::CommandComplete, None),
            (K::ReadyForQuery, None),
        ],
    );
    assert_eq!(r, "---FFF");
    // A later batch may be replayed again.
    send(&mut b, &[bind("s"), execute(), sync()]);
    assert_eq!(replies(&mut b, &[(K::Error, Some(b"0A000"))]), "R");
}

#[test]
fn the_unnamed_statement_is_re_established_or_closed() {
    let (mut c, mut s) = (ClientStatements::new(), ServerStatements::new(10));
    {
        let mut b = Rewriter::new(&mut c, &mut s, true);
        send(&mut b, &[parse("", "select 1"), sync()]);
    }
    // Another server: the client's own unnamed statement goes first.
    let mut elsewhere = ServerStatements::new(10);
    let mut b = Rewriter::new(&mut c, &mut elsewhere, true);
    assert_eq!(tags(&send(&mut b, &[bind(""), execute(), sync()])), "PBES");
    assert_eq!(
        replies(
            &mut b,
            &[
                (K::ParseComplete, None),
                (K::BindComplete, None),
                (K::CommandComplete, None),
                (K::ReadyForQuery, None)
            ]
        ),
        "-FFF"
    );
    drop(b);
    // A simple query destroys it: the next Bind gets the server's closed.
    let mut b = Rewriter::new(&mut c, &mut elsewhere, true);
    send(&mut b, &[query("select 1")]);
    assert_eq!(tags(&send(&mut b, &[bind(""), sync()])), "CBS");
}

#[test]
fn sql_prepare_replays_and_refuses_strangers() {
    let (mut a, mut s) = (ClientStatements::new(), ServerStatements::new(10));
    {
        let mut b = Rewriter::new(&mut a, &mut s, true);
        send(&mut b, &[query("PREPARE p AS SELECT 'a'")]);
    }
    // A stranger's EXECUTE of the name: the server's copy goes first.
    let mut stranger = ClientStatements::new();
    let mut b = Rewriter::new(&mut stranger, &mut s, true);
    let out = send(&mut b, &[query("EXECUTE p")]);
    assert_eq!(tags(&out), "QQ");
    assert!(out.windows(12).any(|w| w == b"DEALLOCATE \""));
    drop(b);
    // The owner on a server without it: its PREPARE is replayed first.
    let mut fresh = ServerStatements::new(10);
    let mut b = Rewriter::new(&mut a, &mut fresh, true);
    let out = send(&mut b, &[query("EXECUTE p")]);
    assert_eq!(tags(&out), "QQ");
    assert!(out.windows(23).any(|w| w == b"PREPARE p AS SELECT 'a'"));
}

#[test]
fn after_an_unsynced_error_the_server_discards_until_sync() {
    // psycopg's pipeline when its first query fails before the rest is sent.
    let (mut c, mut s) = (ClientStatements::new(), ServerStatements::new(10));
    let mut b = Rewriter::new(&mut c, &mut s, true);
    let describe = msg(b'D', b"P\0");
    send(
        &mut b,
        &[
            parse("", "select 1/0"),
            bind(""),
            describe.clone(),
            execute(),
        ],
    );
    let r = replies(
        &mut b,
        &[
            (K::ParseComplete, None),
            (K::BindComplete, None),
            (K::RowDescription, None),
            (K::Error, Some(b"22012")),
        ],
    );
    assert_eq!(r, "FFFF");
    assert!(b.skipping());
    // What follows up to the Sync is discarded by the server: no replies
    // are expected for it, only the Sync's ReadyForQuery.
    let out = send(
        &mut b,
        &[
            parse("", "select 2"),
            bind(""),
            describe,
            execute(),
            sync(),
            msg(b'H', b""),
        ],
    );
    assert_eq!(tags(&out), "PBDESH");
    assert!(!b.skipping());
    assert_eq!(replies(&mut b, &[(K::ReadyForQuery, None)]), "F");
    // A COPY after it lines up: no stale expectation swallows its Syncs.
    send(&mut b, &[query("copy t from stdin")]);
    assert_eq!(replies(&mut b, &[(K::CopyIn, None)]), "F");
    assert_eq!(b.ignored_cycles, 0);
    send(&mut b, &[msg(b'd', b"1\n"), msg(b'c', b"")]);
    let r = replies(
        &mut b,
        &[(K::CommandComplete, None), (K::ReadyForQuery, None)],
    );
    assert_eq!(r, "FF");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
    /// The fuzz target's property on stable: any script of client messages
    /// and server replies leaves the books sending whole frames, and
    /// nothing panics.
    #[test]
    fn any_message_sequence_keeps_the_books_whole(
        data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)
    ) {
        super::script::run_script(&data);
    }
}

#[test]
fn a_statement_that_runs_sql_execute_is_parsed_afresh_every_time() {
    // Its row description is fixed when it is parsed (PostgreSQL never
    // revalidates a utility statement): reused after the client PREPAREd
    // the statement it runs, it described no rows and then sent one.
    let (mut c, mut s) = (ClientStatements::new(), ServerStatements::new(10));
    let mut b = Rewriter::new(&mut c, &mut s, true);
    let first = send(&mut b, &[parse("s0", "EXECUTE a('y')"), sync()]);
    assert_eq!(tags(&first), "PS");
    assert_eq!(
        replies(
            &mut b,
            &[(K::ParseComplete, None), (K::ReadyForQuery, None)]
        ),
        "FF"
    );
    let again = send(&mut b, &[parse("s1", "EXECUTE a('y')"), sync()]);
    assert_eq!(tags(&again), "CPS", "closed, then parsed again");
    let got = replies(
        &mut b,
        &[
            (K::CloseComplete, None),
            (K::ParseComplete, None),
            (K::ReadyForQuery, None),
        ],
    );
    assert_eq!(got, "-FF");
    // An ordinary statement is still answered from the server's cache.
    send(&mut b, &[parse("s2", "select 1"), sync()]);
    replies(
        &mut b,
        &[(K::ParseComplete, None), (K::ReadyForQuery, None)],
    );
    let cached = send(&mut b, &[parse("s3", "select 1"), sync()]);
    assert_eq!(tags(&cached), "S");
}

#[test]
fn the_reply_queue_keeps_its_storage_with_the_server_between_transactions() {
    let mut client = ClientStatements::default();
    let mut server = ServerStatements::new(8);
    {
        let mut b = Rewriter::new(&mut client, &mut server, true);
        send(&mut b, &[query("select 1")]);
        assert_eq!(b.pending(), 1);
    }
    assert!(server.spare_queue.is_empty(), "nothing is left queued");
    let room = server.spare_queue.capacity();
    assert!(room > 0, "the storage came back");
    // The next transaction's queue is that storage.
    let b = Rewriter::new(&mut client, &mut server, true);
    assert_eq!(b.actions.capacity(), room);
}
