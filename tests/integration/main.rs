//! Integration tests: the real pglittle against a real PostgreSQL primary
//! and streaming replica, started once for this binary.

mod auth_query;
mod autosize;
mod binary;
mod binary_metrics;
mod cancel;
mod common;
mod console;
mod core;
mod dashboard;
mod differential;
mod drivers;
mod failover;
mod fleet;
mod isolation;
mod observe;
mod pgbench;
mod pool_slots;
mod prepared;
mod raw;
mod replica;
mod restart;
mod server_login;
mod tls;
mod tls_both;
