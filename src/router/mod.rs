//! Pure SQL inspection: no I/O, table-tested. Today it tells the session
//! which statements change session state; read/write routing builds on the
//! same lexer.

pub mod effects;
pub mod lexer;
pub mod prepared;

pub use effects::{inspect, SqlEffects};
