//! How big a pool should be, and whom it should turn away: Little's Law
//! windows, Erlang C, the auto-size controller, the sharing of a server's
//! connection budget, the sharing of one database's budget across a fleet
//! of instances (`fleet`: what they publish and each one's cap), and
//! admission control (shedding).
//!
//! Pure: no I/O, no tasks, and no clock of its own. Every function that
//! needs the time takes it as an `Instant` (or a `Duration`), so tests drive
//! it with synthetic instants or tokio's paused clock. The pool records its
//! lease boundaries into [`PoolStats`] and asks this room for decisions;
//! running the controller over the pools and applying its sizes is the
//! pool's (`pool::autosize`). Imports nothing above `config`.

pub mod admission;
pub mod budget;
pub mod controller;
pub mod erlang;
pub mod fleet;
pub mod windows;

pub use controller::{AutoBounds, Controller, Goal};
pub use erlang::{Sizing, SizingGoal};
pub use windows::{Figures, PoolStats, Service, WINDOWS};
