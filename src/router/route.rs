//! Where one request may run, from its class, hints, the session's
//! override and its read-your-writes state. Pure; the topology then picks
//! the host.

use crate::protocol::Lsn;
use crate::sql::classify::{Class, Hint};
pub use crate::sql::local::RouteOverride;

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Primary,
    /// Any healthy replica that has replayed at least `min_lsn` (or the
    /// primary when none has).
    Replica {
        min_lsn: Lsn,
    },
}

/// Everything the decision looks at.
#[derive(Debug, Clone, Copy)]
pub struct Inputs {
    pub class: Class,
    pub hint: Option<Hint>,
    pub session: RouteOverride,
    /// The client's read-your-writes floor (zero when it has not written).
    pub floor: Lsn,
    /// Time-based read-your-writes: the client wrote a moment ago.
    pub pinned: bool,
}

/// Decides the route: a hint beats the session override, which beats the
/// classification. Reads respect the floor; writes and anything unknown go
/// to the primary.
pub fn decide(i: &Inputs) -> Route {
    let replica = Route::Replica { min_lsn: i.floor };
    match (i.hint, i.session) {
        (Some(Hint::Primary), _) => Route::Primary,
        (Some(Hint::Replica), _) => replica,
        (None, RouteOverride::Primary) => Route::Primary,
        (None, RouteOverride::Replica) => replica,
        (None, RouteOverride::Auto) => match i.class {
            Class::Write => Route::Primary,
            Class::Read | Class::ReadOnlyTx if i.pinned => Route::Primary,
            Class::Read | Class::ReadOnlyTx => replica,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(class: Class) -> Inputs {
        Inputs {
            class,
            hint: None,
            session: RouteOverride::Auto,
            floor: Lsn(7),
            pinned: false,
        }
    }

    #[test]
    fn decides() {
        let replica = Route::Replica { min_lsn: Lsn(7) };
        assert_eq!(decide(&inputs(Class::Read)), replica);
        assert_eq!(decide(&inputs(Class::ReadOnlyTx)), replica);
        assert_eq!(decide(&inputs(Class::Write)), Route::Primary);
        let pinned = Inputs {
            pinned: true,
            ..inputs(Class::Read)
        };
        assert_eq!(decide(&pinned), Route::Primary);
        let hinted = Inputs {
            hint: Some(Hint::Replica),
            ..inputs(Class::Write)
        };
        assert_eq!(decide(&hinted), replica);
        let hinted = Inputs {
            hint: Some(Hint::Primary),
            session: RouteOverride::Replica,
            ..inputs(Class::Read)
        };
        assert_eq!(decide(&hinted), Route::Primary);
        let forced = Inputs {
            session: RouteOverride::Primary,
            ..inputs(Class::Read)
        };
        assert_eq!(decide(&forced), Route::Primary);
        let forced = Inputs {
            session: RouteOverride::Replica,
            ..inputs(Class::Write)
        };
        assert_eq!(decide(&forced), replica);
        assert_eq!("Replica".parse(), Ok(RouteOverride::Replica));
        assert!("both".parse::<RouteOverride>().is_err());
    }
}
