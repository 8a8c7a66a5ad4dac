//! Pure SQL inspection: no I/O, table-tested. It tells the session which
//! statements change session state (`effects`), whether a request only
//! reads (`classify`), which statements pglittle answers itself (`local`),
//! and where a request may run (`route`).

pub mod classify;
pub mod effects;
pub mod lexer;
pub mod local;
pub mod lsn;
pub mod prepared;
pub mod route;
pub mod settings;

#[cfg(test)]
mod no_panic_tests;

pub use classify::{classify, hint, Class, Hint};
pub use effects::{inspect, SqlEffects};
pub use lsn::Lsn;
pub use route::{decide, Inputs, Route, RouteOverride};
