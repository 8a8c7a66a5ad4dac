//! Whether a read may run a second time when nothing shows that its first
//! run did not happen (a server that hung up with no reply may have run
//! it). A read of tables changes nothing; a function it calls might. So a
//! read counts as pure only when every call in it is to a function known
//! to change nothing, and every other word before a parenthesis is SQL
//! syntax or a type. Anything else, including any schema-qualified call,
//! is treated as a possible write. Pure and conservative.

use super::lexer::{Lexer, Token};

/// Words that may stand before `(` without calling anything: SQL syntax
/// and type names (`numeric(10, 2)`).
const SYNTAX: &[&str] = &[
    "all",
    "and",
    "any",
    "array",
    "as",
    "between",
    "bigint",
    "bit",
    "by",
    "case",
    "cast",
    "char",
    "character",
    "decimal",
    "distinct",
    "else",
    "end",
    "except",
    "exists",
    "extract",
    "filter",
    "float",
    "from",
    "group",
    "having",
    "ilike",
    "in",
    "int",
    "integer",
    "intersect",
    "interval",
    "is",
    "join",
    "lateral",
    "like",
    "limit",
    "not",
    "numeric",
    "offset",
    "on",
    "or",
    "order",
    "over",
    "overlay",
    "partition",
    "position",
    "row",
    "select",
    "similar",
    "some",
    "substring",
    "table",
    "then",
    "time",
    "timestamp",
    "trim",
    "union",
    "using",
    "values",
    "varchar",
    "varying",
    "when",
    "where",
    "window",
    "with",
    "within",
];

/// Built-in functions that read and compute only (no writes, no session
/// state: no `set_config`, no advisory locks, no sequences).
const PURE_FUNCTIONS: &[&str] = &[
    "abs",
    "age",
    "array_agg",
    "array_length",
    "array_position",
    "avg",
    "bool_and",
    "bool_or",
    "btrim",
    "ceil",
    "ceiling",
    "char_length",
    "clock_timestamp",
    "coalesce",
    "concat",
    "concat_ws",
    "count",
    "current_database",
    "current_schema",
    "current_setting",
    "date_part",
    "date_trunc",
    "dense_rank",
    "every",
    "first_value",
    "floor",
    "format",
    "generate_series",
    "greatest",
    "json_agg",
    "json_build_array",
    "json_build_object",
    "jsonb_agg",
    "jsonb_build_array",
    "jsonb_build_object",
    "lag",
    "last_value",
    "lead",
    "least",
    "left",
    "length",
    "lower",
    "lpad",
    "ltrim",
    "max",
    "md5",
    "min",
    "mod",
    "now",
    "nullif",
    "pg_backend_pid",
    "pg_is_in_recovery",
    "pg_last_wal_replay_lsn",
    "pg_current_wal_lsn",
    "power",
    "random",
    "rank",
    "regexp_replace",
    "replace",
    "right",
    "round",
    "row_number",
    "row_to_json",
    "rpad",
    "rtrim",
    "split_part",
    "sqrt",
    "statement_timestamp",
    "string_agg",
    "strpos",
    "substr",
    "sum",
    "to_char",
    "to_date",
    "to_json",
    "to_jsonb",
    "to_number",
    "to_timestamp",
    "transaction_timestamp",
    "trunc",
    "unnest",
    "upper",
    "version",
];

/// True when every word before a `(` in `sql` is SQL syntax, a type, or a
/// function that changes nothing, and no call is schema-qualified. Says
/// nothing about the statements themselves: the caller has classified
/// them as reads.
pub fn calls_nothing_that_writes(sql: &[u8]) -> bool {
    let mut lx = Lexer::new(sql).peekable();
    let mut prev: Option<Token<'_>> = None;
    while let Some(t) = lx.next() {
        if lx.peek() == Some(&Token::Punct(b'(')) {
            let known = match t {
                Token::Word(w) => {
                    let is = |k: &&str| w.eq_ignore_ascii_case(k.as_bytes());
                    SYNTAX.iter().any(is) || PURE_FUNCTIONS.iter().any(is)
                }
                Token::Punct(_) | Token::Semicolon => true,
                _ => false,
            };
            let qualified = prev == Some(Token::Punct(b'.'));
            if !known || (qualified && !matches!(t, Token::Punct(_))) {
                return false;
            }
        }
        prev = Some(t);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::calls_nothing_that_writes as pure;

    #[test]
    fn reads_of_tables_and_known_functions_may_run_twice() {
        for sql in [
            "SELECT 1",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 42",
            "select count(*), max(x) from t where y in (1, 2) and exists (select 1 from u)",
            "SELECT (a + b) * 2, now(), x::numeric(10,2) FROM (SELECT 1 a, 2 b, 3 x) s",
            "WITH r AS (SELECT 1) SELECT * FROM r JOIN t USING (id)",
            "SELECT row_number() OVER (PARTITION BY a ORDER BY b) FROM t",
            "SELECT 'f(' || \"g\" FROM t -- h(\n",
        ] {
            assert!(pure(sql.as_bytes()), "{sql}");
        }
    }

    #[test]
    fn any_other_call_may_have_written() {
        for sql in [
            "SELECT create_order(1)",
            "SELECT nextval('s')",
            "SELECT set_config('a.b', '1', false)",
            "SELECT pg_advisory_lock(1)",
            "SELECT public.count(x) FROM t",
            "SELECT \"count\"(x) FROM t",
            "SELECT * FROM t WHERE audit(id)",
            "SELECT 1; SELECT f()",
        ] {
            assert!(!pure(sql.as_bytes()), "{sql}");
        }
    }
}
