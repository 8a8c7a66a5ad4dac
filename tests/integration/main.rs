//! Integration tests: the real pglittle against a real PostgreSQL primary
//! and streaming replica, started once for this binary.

mod binary;
mod common;
mod console;
mod core;
mod observe;
mod pgbench;
