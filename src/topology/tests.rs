use std::sync::atomic::Ordering::Relaxed;

use super::*;
use crate::config::HostConfig;

fn db(weights: &[u32]) -> DbHosts {
    let cfg = DatabaseConfig {
        host: "p".into(),
        port: 1,
        dbname: "app".into(),
        pool_size: None,
        min_pool_size: None,
        max_db_connections: None,
        pool_mode: None,
        replicas: weights
            .iter()
            .enumerate()
            .map(|(i, &w)| HostConfig {
                host: format!("r{i}"),
                port: 1,
                weight: w,
            })
            .collect(),
        routing: Default::default(),
    };
    DbHosts::new(&cfg, Default::default())
}

fn host(c: Option<Choice>) -> String {
    match c {
        Some(Choice::Primary) => "primary".into(),
        Some(Choice::Replica(h)) => h.host.clone(),
        None => "none".into(),
    }
}

#[test]
fn round_robin_on_ties_least_busy_first() {
    let d = db(&[1, 1]);
    let want = Eligibility::default();
    let picks: Vec<String> = (0..4)
        .map(|_| host(d.pick(&want, PrimaryReads::Fallback)))
        .collect();
    assert_eq!(picks, ["r0", "r1", "r0", "r1"]);
    d.replicas[0].outstanding.store(3, Relaxed);
    for _ in 0..3 {
        assert_eq!(host(d.pick(&want, PrimaryReads::Fallback)), "r1");
    }
}

#[test]
fn weights_scale_the_load() {
    let d = db(&[1, 4]);
    d.replicas[0].outstanding.store(1, Relaxed);
    d.replicas[1].outstanding.store(3, Relaxed);
    // 1/1 = 1000 vs 3/4 = 750: the heavier replica still wins.
    assert_eq!(
        host(d.pick(&Eligibility::default(), PrimaryReads::Fallback)),
        "r1"
    );
}

#[test]
fn floor_lag_and_health_decide_eligibility() {
    let d = db(&[1]);
    let r = &d.replicas[0];
    let want = |lsn| Eligibility {
        min_lsn: Lsn(lsn),
        ..Eligibility::default()
    };
    // Unknown replay position: fine for a client without a floor only.
    assert_eq!(host(d.pick(&want(0), PrimaryReads::Fallback)), "r0");
    assert_eq!(host(d.pick(&want(10), PrimaryReads::Fallback)), "primary");
    r.probe_ok(Some(Lsn(10)), 1);
    assert_eq!(host(d.pick(&want(10), PrimaryReads::Fallback)), "r0");
    assert_eq!(host(d.pick(&want(11), PrimaryReads::Fallback)), "primary");
    r.set_lag(1000, Some(Duration::from_secs(5)));
    let lagging = Eligibility {
        max_lag_bytes: Some(999),
        ..want(0)
    };
    assert_eq!(host(d.pick(&lagging, PrimaryReads::Fallback)), "primary");
    let lagging = Eligibility {
        max_lag: Some(Duration::from_secs(4)),
        ..want(0)
    };
    assert_eq!(host(d.pick(&lagging, PrimaryReads::Fallback)), "primary");
    r.probe_failed(2);
    assert_eq!(
        host(d.pick(&want(0), PrimaryReads::Fallback)),
        "r0",
        "one failure is not a ban"
    );
    r.probe_failed(2);
    assert_eq!(host(d.pick(&want(0), PrimaryReads::Fallback)), "primary");
    r.probe_ok(None, 2);
    assert_eq!(
        host(d.pick(&want(0), PrimaryReads::Fallback)),
        "primary",
        "one success is not an unban"
    );
    r.probe_ok(None, 2);
    assert_eq!(host(d.pick(&want(0), PrimaryReads::Fallback)), "r0");
}

#[test]
fn primary_reads_always_shares_the_load() {
    let d = db(&[1]);
    d.replicas[0].outstanding.store(2, Relaxed);
    assert_eq!(
        host(d.pick(&Eligibility::default(), PrimaryReads::Always)),
        "primary"
    );
    assert_eq!(
        host(d.pick(&Eligibility::default(), PrimaryReads::Fallback)),
        "r0"
    );
}

#[test]
fn health_is_up_while_some_probed_primary_is_up() {
    let t = Topology::new();
    assert!(t.any_primary_up(), "no databases: nothing says down");
    let a = Arc::new(db(&[]));
    let b = Arc::new(db(&[1]));
    {
        let mut dbs = t.dbs.write().unwrap();
        dbs.insert("a".into(), a.clone());
        dbs.insert("b".into(), b.clone());
    }
    assert_eq!(a.primary.health(), None);
    assert!(t.any_primary_up(), "not probed yet");
    a.primary.probe_failed(2);
    a.primary.probe_failed(2);
    assert_eq!(a.primary.health(), Some(false));
    assert!(!t.any_primary_up(), "the one probed primary is down");
    b.primary.probe_ok(None, 2);
    assert!(t.any_primary_up(), "one primary up is enough");
    b.primary.probe_failed(1);
    assert!(!t.any_primary_up());
    b.replicas[0].probe_ok(None, 1);
    assert!(!t.any_primary_up(), "a replica up does not count");
    a.primary.probe_ok(None, 2);
    a.primary.probe_ok(None, 2);
    assert!(t.any_primary_up(), "unbanned after unban_after good probes");
}
