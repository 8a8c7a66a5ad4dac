//! Where a request may run: pure, table-tested. `route::decide` takes the
//! request's class and hints (from `sql`), the session's override and its
//! read-your-writes floor, and answers Primary or Replica at an LSN.

pub mod route;

pub use route::{decide, Inputs, Route, RouteOverride};
