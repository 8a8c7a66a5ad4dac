use super::*;

const R: Class = Class::Read;
const T: Class = Class::ReadOnlyTx;
const W: Class = Class::Write;

#[test]
fn classifies_statements() {
    let table: &[(&str, Class)] = &[
        // Plain reads.
        ("SELECT 1", R),
        ("select * from t where id = $1", R),
        ("  \n\tSELECT 1;", R),
        ("(SELECT 1) UNION (SELECT 2)", R),
        ("VALUES (1), (2)", R),
        ("TABLE t", R),
        ("SHOW search_path", R),
        ("WITH x AS (SELECT 1) SELECT * FROM x", R),
        ("WITH RECURSIVE r(n) AS (VALUES (1) UNION ALL SELECT n+1 FROM r WHERE n < 5) SELECT * FROM r", R),
        ("SELECT count(*) FROM orders o JOIN users u ON u.id = o.user_id", R),
        ("SELECT now(), lower('X'), coalesce(a, 0) FROM t", R),
        ("SELECT pg_is_in_recovery()", R),
        ("SELECT * FROM t FOR READ ONLY", R),
        ("SELECT a FROM t ORDER BY a LIMIT 10 OFFSET 5", R),
        // Keywords hidden in literals, identifiers and comments.
        ("SELECT 'insert into t values (1)'", R),
        ("SELECT 'for update'", R),
        ("SELECT $$ delete from t $$", R),
        ("SELECT $body$ update t set a = 1 $body$ AS s", R),
        ("SELECT E'it\\'s an update'", R),
        ("SELECT 1 -- for update\n", R),
        ("SELECT 1 /* delete from t */", R),
        ("SELECT \"nextval_count\" FROM stats", R),
        ("SELECT nextval_like FROM t", R),
        ("SELECT 'nextval(1)'", R),
        ("/* leading comment */ SELECT 1", R),
        ("-- note\nSELECT 1", R),
        // Row locks.
        ("SELECT * FROM t FOR UPDATE", W),
        ("select * from t for no key update", W),
        ("SELECT * FROM t FOR SHARE", W),
        ("SELECT * FROM t FOR KEY SHARE SKIP LOCKED", W),
        ("SELECT * FROM t WHERE id = 1 FOR UPDATE OF t NOWAIT", W),
        // Data-modifying CTEs and SELECT INTO.
        ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", W),
        ("WITH i AS (INSERT INTO t VALUES (1) RETURNING id) SELECT id FROM i", W),
        ("WITH u AS (UPDATE t SET a = 1 RETURNING a) SELECT * FROM u", W),
        ("WITH m AS (MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE RETURNING *) SELECT 1", W),
        ("SELECT * INTO new_t FROM t", W),
        // Writer functions, including qualified and quoted names.
        ("SELECT nextval('s')", W),
        ("SELECT NEXTVAL ('s')", W),
        ("SELECT pg_catalog.nextval('s')", W),
        ("SELECT \"nextval\"('s')", W),
        ("SELECT setval('s', 10)", W),
        ("SELECT currval('s')", W),
        ("SELECT pg_advisory_lock(1)", W),
        ("SELECT pg_advisory_xact_lock_shared(1)", W),
        ("SELECT pg_try_advisory_lock(1)", W),
        ("SELECT pg_notify('ch', 'x')", W),
        ("SELECT set_config('a.b', 'c', false)", W),
        ("SELECT txid_current()", W),
        ("SELECT lo_create(0)", W),
        ("SELECT a, (SELECT nextval('s')) FROM t", W),
        // A user-defined function is not known to write: hints and the 25006 retry cover it.
        ("SELECT my_function(1)", R),
        ("SELECT \"NextVal\"('s')", R),
        // Writes and everything else.
        ("INSERT INTO t VALUES (1)", W),
        ("UPDATE t SET a = 1", W),
        ("DELETE FROM t", W),
        ("MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE", W),
        ("CREATE TABLE t (a int)", W),
        ("DROP TABLE t", W),
        ("TRUNCATE t", W),
        ("COPY t FROM STDIN", W),
        ("COPY t TO STDOUT", W),
        ("CALL proc()", W),
        ("DO $$ BEGIN PERFORM 1; END $$", W),
        ("EXPLAIN ANALYZE DELETE FROM t", W),
        ("LOCK TABLE t", W),
        ("VACUUM t", W),
        ("SET work_mem = '1MB'", W),
        ("PREPARE p AS SELECT 1", W),
        ("EXECUTE p", W),
        ("LISTEN ch", W),
        ("", W),
        (";", W),
        // Transactions.
        ("BEGIN", W),
        ("BEGIN READ WRITE", W),
        ("START TRANSACTION", W),
        ("BEGIN ISOLATION LEVEL SERIALIZABLE", W),
        ("BEGIN READ ONLY", T),
        ("begin transaction read only", T),
        ("START TRANSACTION READ ONLY", T),
        ("START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", T),
        ("BEGIN ISOLATION LEVEL READ COMMITTED", W),
        ("BEGIN READ ONLY; SELECT 1; COMMIT", T),
        ("BEGIN READ ONLY; UPDATE t SET a = 1; COMMIT", W),
        ("COMMIT", W),
        ("ROLLBACK", W),
        // Several statements in one Query.
        ("SELECT 1; SELECT 2", R),
        ("SELECT 1; INSERT INTO t VALUES (1)", W),
        ("INSERT INTO t VALUES (1); SELECT 1", W),
        ("SELECT 1; SET a = 1", W),
        ("SELECT ';'; DELETE FROM t", W),
        ("SELECT 1;;SELECT 2;", R),
    ];
    assert!(table.len() >= 60);
    for (sql, want) in table {
        assert_eq!(classify(sql.as_bytes(), DEFAULT_WRITERS), *want, "{sql}");
    }
}

#[test]
fn writer_list_is_configurable() {
    let writers = ["audit_log", "app_*"];
    assert_eq!(classify(b"SELECT audit_log('x')", &writers), W);
    assert_eq!(classify(b"SELECT app_touch(1)", &writers), W);
    assert_eq!(classify(b"SELECT nextval('s')", &writers), R);
    let none: [&str; 0] = [];
    assert_eq!(classify(b"SELECT 1", &none), R);
}

#[test]
fn reads_hints_from_leading_comments() {
    assert_eq!(
        hint(b"/* pglittle:replica */ SELECT 1"),
        Some(Hint::Replica)
    );
    assert_eq!(hint(b"  /*pglittle:primary*/SELECT 1"), Some(Hint::Primary));
    assert_eq!(
        hint(b"/* app */ /* PGLITTLE:REPLICA */ SELECT 1"),
        Some(Hint::Replica)
    );
    assert_eq!(hint(b"SELECT 1 /* pglittle:replica */"), None);
    assert_eq!(hint(b"SELECT '/* pglittle:replica */'"), None);
    assert_eq!(hint(b"/* pglittle:replica"), None);
    assert_eq!(hint(b""), None);
}

#[test]
fn a_comment_whose_opening_slash_star_touches_a_slash_is_one_comment() {
    // Issue 12: `/*/` used to be read as an opening `/*` and a closing
    // `*/` that overlap, and sliced rest[2..1].
    assert_eq!(hint(b"/*/ x */ SELECT 1"), None);
    assert_eq!(hint(b"/*/"), None);
    assert_eq!(hint(b"/*/*/"), None);
    assert_eq!(hint(b"/**/ SELECT 1"), None);
    assert_eq!(
        hint(b"/**/ /* pglittle:replica */ SELECT 1"),
        Some(Hint::Replica)
    );
    assert_eq!(
        hint(b"/*/ x */ /*pglittle:primary*/ SELECT 1"),
        Some(Hint::Primary)
    );
    // Comments nest: the hint inside an outer comment is not a leading hint.
    assert_eq!(hint(b"/* a /* pglittle:replica */ */ SELECT 1"), None);
    assert_eq!(
        hint(b"/* a /* b */ */ /* pglittle:replica */ SELECT 1"),
        Some(Hint::Replica)
    );
    assert_eq!(classify(b"/*/ x */ SELECT 1", DEFAULT_WRITERS), R);
    assert_eq!(classify(b"/*/ x */ DELETE FROM t", DEFAULT_WRITERS), W);
}
