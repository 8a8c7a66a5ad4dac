//! Sharing a server's connection budget among the pools that use it.
//!
//! Pure arithmetic. Each server (host:port) has a budget: its
//! max_connections less the reserved ones. Fixed-size pools take their size
//! off the top. The rest goes to auto-sized pools with max-min fairness
//! (water-filling): a pool that wants less than an equal share gets what it
//! wants, and what it leaves is shared by the others. Databases are filled
//! first (each capped by its `max_db_connections`), then the pools (users)
//! within each database.

use std::collections::BTreeMap;

/// The budget assumed for a server whose max_connections is not known yet:
/// PostgreSQL's default of 100 less its 3 reserved connections.
pub const FALLBACK_BUDGET: usize = 97;

/// One pool's claim on its server's budget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub host: String,
    pub database: String,
    /// What the controller wants (auto) or the configured size (fixed).
    pub want: usize,
    pub auto: bool,
    /// The least this pool is given while the budget allows (min_pool_size).
    pub min: usize,
}

/// Splits `budget` among `wants`: nobody gets more than they want, and when
/// the wants exceed the budget the smallest are served in full first and
/// the rest share equally.
pub fn share(wants: &[usize], budget: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..wants.len()).collect();
    order.sort_by_key(|&i| wants[i]);
    let mut got = vec![0; wants.len()];
    let mut left = budget;
    for (k, &i) in order.iter().enumerate() {
        let fair = left / (order.len() - k);
        got[i] = wants[i].min(fair);
        left -= got[i];
    }
    // Integer division leaves a remainder: one more each to the largest
    // wants still short.
    for &i in order.iter().rev() {
        if left == 0 {
            break;
        }
        if got[i] < wants[i] {
            got[i] += 1;
            left -= 1;
        }
    }
    got
}

/// The size each claim gets. `budget_of(host)` is the server's budget
/// (`None`: not known yet, so `fallback` is used); `cap_of(database)` is
/// the database's cap (`max_db_connections`, or a fleet's share of it;
/// `None`: no cap beyond the server's). Each auto-sized pool gets at least
/// one connection, unless its database's cap is 0.
pub fn allocate(
    claims: &[Claim],
    budget_of: impl Fn(&str) -> Option<usize>,
    cap_of: impl Fn(&str) -> Option<usize>,
    fallback: usize,
) -> Vec<usize> {
    let mut sizes: Vec<usize> = claims.iter().map(|c| c.want).collect();
    let mut hosts: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, c) in claims.iter().enumerate() {
        hosts.entry(c.host.as_str()).or_default().push(i);
    }
    for (host, members) in hosts {
        let fixed: usize = members
            .iter()
            .filter(|&&i| !claims[i].auto)
            .map(|&i| claims[i].want)
            .sum();
        let budget = budget_of(host).unwrap_or(fallback).saturating_sub(fixed);
        let mut dbs: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for &i in members.iter().filter(|&&i| claims[i].auto) {
            dbs.entry(claims[i].database.as_str()).or_default().push(i);
        }
        let caps: Vec<usize> = dbs
            .keys()
            .map(|db| cap_of(db).unwrap_or(usize::MAX))
            .collect();
        let db_wants: Vec<usize> = dbs
            .values()
            .zip(&caps)
            .map(|(pools, cap)| {
                pools
                    .iter()
                    .map(|&i| claims[i].want)
                    .sum::<usize>()
                    .min(*cap)
            })
            .collect();
        let db_got = share(&db_wants, budget);
        for ((pools, got), cap) in dbs.values().zip(db_got).zip(&caps) {
            // Minimums first, as far as the database's share (and cap) go.
            let mins: Vec<usize> = pools.iter().map(|&i| claims[i].min).collect();
            let floor = share(&mins, got);
            let rest = got.saturating_sub(floor.iter().sum());
            let extra: Vec<usize> = pools
                .iter()
                .zip(&floor)
                .map(|(&i, f)| claims[i].want.saturating_sub(*f))
                .collect();
            let extra = share(&extra, rest);
            let least = usize::from(*cap > 0);
            for ((&i, f), e) in pools.iter().zip(floor).zip(extra) {
                sizes[i] = (f + e).max(least);
            }
        }
    }
    sizes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(host: &str, db: &str, want: usize, auto: bool) -> Claim {
        Claim {
            host: host.into(),
            database: db.into(),
            want,
            auto,
            min: 0,
        }
    }

    #[test]
    fn share_is_max_min_fair() {
        assert_eq!(share(&[2, 10, 10], 12), vec![2, 5, 5]);
        assert_eq!(share(&[2, 3], 100), vec![2, 3]);
        let got = share(&[50, 50, 50], 10);
        assert_eq!(got.iter().sum::<usize>(), 10);
        assert!(got.iter().all(|g| (3..=4).contains(g)), "{got:?}");
        assert_eq!(share(&[], 10), Vec::<usize>::new());
        assert_eq!(share(&[5], 0), vec![0]);
    }

    #[test]
    fn pools_of_a_database_share_its_budget_and_never_exceed_it() {
        let claims = vec![
            claim("h:1", "app", 80, true),
            claim("h:1", "app", 10, true),
            claim("h:1", "app", 80, true),
        ];
        let got = allocate(&claims, |_| Some(100), |_| None, 100);
        assert_eq!(got.iter().sum::<usize>(), 100);
        assert_eq!(got[1], 10);
        assert_eq!(got[0], 45);
        assert_eq!(got[2], 45);
        // A database cap below the server's budget.
        let got = allocate(&claims, |_| Some(100), |_| Some(30), 100);
        assert_eq!(got.iter().sum::<usize>(), 30, "{got:?}");
        assert_eq!(got[1], 10);
    }

    #[test]
    fn fixed_pools_come_off_the_top_and_hosts_are_separate() {
        let claims = vec![
            claim("h:1", "app", 40, false),
            claim("h:1", "app", 90, true),
            claim("h:1", "other", 90, true),
            claim("h:2", "app", 90, true),
        ];
        let got = allocate(&claims, |h| (h == "h:1").then_some(100), |_| None, 20);
        assert_eq!(got[0], 40, "a fixed size is not touched");
        assert_eq!(got[1] + got[2], 60);
        assert_eq!(got[1], 30);
        assert_eq!(got[3], 20, "unknown budget: the fallback");
    }

    #[test]
    fn minimums_are_served_before_extra() {
        let mut claims = vec![claim("h:1", "app", 50, true), claim("h:1", "app", 50, true)];
        claims[0].min = 8;
        claims[1].want = 5;
        claims[1].min = 5;
        let got = allocate(&claims, |_| Some(12), |_| None, 100);
        assert_eq!(got, vec![7, 5]);
    }
}
