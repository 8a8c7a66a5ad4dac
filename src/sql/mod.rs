//! Pure statement analysis, no I/O, table-tested and fuzzed: the lexer,
//! which statements change session state (`effects`, `settings`), whether
//! a request only reads (`classify`), SQL PREPARE/EXECUTE/DEALLOCATE
//! (`prepare`), and the statements pglittle answers itself (`local`).

pub mod classify;
pub mod effects;
pub mod lexer;
pub mod local;
pub mod prepare;
pub mod settings;

#[cfg(test)]
mod no_panic_tests;

pub use classify::{classify, hint, Class, Hint};
pub use effects::{inspect, SqlEffects};
