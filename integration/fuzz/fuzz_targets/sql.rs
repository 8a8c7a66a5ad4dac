//! Every pure SQL analysis on any text: the lexer, read/write
//! classification, session effects, setting changes, SQL PREPARE & co,
//! and pglittle's own SET/SHOW.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pglittle::sql;

fuzz_target!(|data: &[u8]| {
    let mut lx = sql::lexer::Lexer::new(data);
    while lx.next().is_some() {}
    let _ = sql::classify(data, &["nextval", "setval"]);
    let _ = sql::inspect(data);
    let _ = sql::settings::changes(data);
    let _ = sql::prepare::scan(data);
    let _ = sql::local::parse(data);
    let _ = sql::effects::ends_failed_block(data);
});
