//! A session's routing state: its read-your-writes floor (the causal
//! token), `SET pglittle.route`, when it last wrote, and pglittle's own
//! `SET`/`SHOW`/`RESET pglittle.*` answered from it. Pure.

use std::time::Instant;

use bytes::BytesMut;

use crate::protocol::backend;
use crate::protocol::sqlstate;
use crate::protocol::Lsn;
use crate::sql::local::{Local, RouteOverride, Var};

/// A session's routing state.
#[derive(Debug, Default)]
pub struct RouteState {
    /// Reads must see at least this WAL position (the causal token).
    pub floor: Lsn,
    /// `SET pglittle.route`.
    pub session: RouteOverride,
    /// Time mode: when the client last wrote.
    pub last_write: Option<Instant>,
    /// The floor last sent to the client as ParameterStatus `pglittle.lsn`.
    pub announced: Lsn,
}

impl RouteState {
    /// Raises the floor to `lsn` (never lowers it).
    pub fn learn(&mut self, lsn: Lsn) {
        self.floor = self.floor.max(lsn);
        self.last_write = Some(Instant::now());
    }

    /// Appends ParameterStatus `pglittle.lsn` if the floor moved since last told.
    pub fn announce(&mut self, out: &mut BytesMut) {
        if self.floor > self.announced {
            self.announced = self.floor;
            backend::parameter_status(out, "pglittle.lsn", &self.floor.to_string());
        }
    }

    /// Answers one of pglittle's own commands into `out` (without the
    /// final ReadyForQuery).
    pub fn answer(&mut self, cmd: Result<Local, String>, out: &mut BytesMut) {
        match cmd {
            Ok(Local::SetMinLsn(lsn)) => {
                self.floor = self.floor.max(lsn);
                backend::command_complete(out, "SET");
            }
            Ok(Local::SetRoute(r)) => {
                self.session = r;
                backend::command_complete(out, "SET");
            }
            Ok(Local::Reset(Var::Route)) => {
                self.session = RouteOverride::Auto;
                backend::command_complete(out, "RESET");
            }
            Ok(Local::Reset(_)) => {
                self.floor = Lsn::ZERO;
                self.announced = Lsn::ZERO;
                backend::command_complete(out, "RESET");
            }
            Ok(Local::Show(var)) => {
                let (name, value) = match var {
                    Var::Lsn => ("pglittle.lsn", self.floor.to_string()),
                    Var::MinLsn => ("pglittle.min_lsn", self.floor.to_string()),
                    Var::Route => ("pglittle.route", self.session.to_string()),
                };
                backend::row_description(out, &[(name, 25)]);
                backend::data_row(out, &[Some(&value)]);
                backend::command_complete(out, "SHOW");
            }
            Err(message) => {
                backend::error_response(
                    out,
                    backend::Severity::Error,
                    sqlstate::INVALID_PARAMETER_VALUE,
                    &message,
                    None,
                );
            }
        }
    }
}
