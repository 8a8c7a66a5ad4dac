//! SHOW FLEET: each database's shared budget as this instance sees it, one
//! row per fleet member (this one marked), then a row of fleet sums.

use super::table::{v, Table, INT4, TEXT};
use crate::shared::Shared;

pub fn fleet(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        ("database", TEXT),
        ("fleet", TEXT),
        ("instance", TEXT),
        ("me", TEXT),
        ("demand", INT4),
        ("cap", INT4),
        ("held", INT4),
        ("fair_share", INT4),
        ("short", TEXT),
        ("budget", INT4),
        ("synced_ms_ago", INT4),
    ]);
    let yes_no = |b: bool| v(if b { "yes" } else { "no" });
    for (db, f) in shared.fleet.snapshot() {
        let view = crate::sizing::fleet::view(f.budget, &f.mine, &f.members);
        let ago = f.last_sync.map(|t| t.elapsed().as_millis().to_string());
        for m in &view.members {
            t.row(vec![
                v(&db),
                v(&f.mine.fleet),
                v(&m.instance),
                yes_no(m.is_me),
                v(m.demand),
                v(m.cap),
                v(m.held),
                v(m.target),
                yes_no(m.short),
                v(view.budget),
                if m.is_me { ago.clone() } else { None },
            ]);
        }
        t.row(vec![
            v(&db),
            v(&f.mine.fleet),
            v("(fleet)"),
            None,
            v(view.demand),
            v(view.caps),
            v(view.held),
            None,
            None,
            v(view.budget),
            None,
        ]);
    }
    t
}
