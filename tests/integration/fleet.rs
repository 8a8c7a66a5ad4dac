//! A fleet of pglittle instances sharing one database budget (issue 16):
//! four instances in this process, auto-sized pools, max_db_connections
//! 40, a load that moves from one instance to another, and one instance
//! stopped. The primary's pg_stat_activity is sampled every 100 ms by an
//! independent connection: the fleet never holds more than the budget.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use pglittle::config::fleet::FleetSettings;
use pglittle::config::PoolSize;
use pglittle::sizing::fleet::{view, NEW_ROUNDS};

use crate::common::*;

const BUDGET: usize = 40;
const ROLE: &str = "fleet_user";

/// This instance's cap and its fair share as it computed them, if synced.
fn share(p: &Pooler) -> Option<(u32, u32)> {
    let (_, f) = p.running.shared.fleet.snapshot().pop()?;
    let v = view(f.budget, &f.mine, &f.members);
    let me = v.members.iter().find(|m| m.is_me)?;
    Some((me.cap, me.target))
}

/// The other members this instance saw in its last round.
fn members_seen(p: &Pooler) -> Vec<String> {
    p.running
        .shared
        .fleet
        .snapshot()
        .pop()
        .map(|(_, f)| f.members.into_iter().map(|m| m.instance).collect())
        .unwrap_or_default()
}

async fn instance(fleet: &str, id: &str) -> (Pooler, String) {
    let mut cfg = crate::console::console_config();
    let password = own_role(&mut cfg, ROLE).await;
    cfg.pooler.pool_size = PoolSize::Auto;
    cfg.databases.get_mut("app").unwrap().max_db_connections = Some(BUDGET);
    cfg.pooler.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    cfg.pooler.fleet = Some(FleetSettings {
        name: fleet.to_string(),
        instance: id.to_string(),
        // The default (1 s): the bar holds as shipped.
        sync_period: pglittle::config::fleet::DEFAULT_SYNC_PERIOD,
    });
    (pooler(cfg).await, password)
}

/// `n` clients on `p`, each running short queries until `stop`.
async fn load(
    p: &Pooler,
    n: usize,
    password: &str,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let client = p.connect_as(ROLE, password).await.unwrap();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            while !stop.load(Relaxed) {
                client.batch_execute("select pg_sleep(0.02)").await.unwrap();
            }
        }));
    }
    tasks
}

/// Server connections `p` holds.
fn held(p: &Pooler) -> u32 {
    let pools = p.running.shared.pools.all();
    let count = |s: pglittle::pool::PoolStatus| s.idle + s.active + s.connecting;
    pools.iter().map(|pool| count(pool.status()) as u32).sum()
}

/// How a loaded instance grew into its fair share: when its cap reached
/// 80% of the share, when the connections it holds did, and the trace of
/// (cap, fair share, held) every 100 ms.
#[derive(Debug)]
struct Growth {
    cap_at: Option<Duration>,
    held_at: Option<Duration>,
    trace: Vec<(u32, u32, u32)>,
}

/// Follows `p` for at most `limit` from `start`, until it holds 80% of its
/// share; times are from `start`.
async fn grows(p: &Pooler, start: tokio::time::Instant, limit: Duration) -> Growth {
    let mut g = Growth {
        cap_at: None,
        held_at: None,
        trace: Vec::new(),
    };
    while start.elapsed() < limit && g.held_at.is_none() {
        let (cap, target) = share(p).unwrap_or((0, 0));
        let now = held(p);
        g.trace.push((cap, target, now));
        let near = |n: u32| target > 10 && n * 10 >= target * 8;
        if near(cap) && g.cap_at.is_none() {
            g.cap_at = Some(start.elapsed());
        }
        if near(now) {
            g.held_at = Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    g
}

/// The role's connections on the primary, counted every 100 ms by a
/// connection of its own, until [`Sampler::worst`].
struct Sampler {
    worst: Arc<AtomicUsize>,
    sampling: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start() -> Sampler {
        let worst = Arc::new(AtomicUsize::new(0));
        let sampling = Arc::new(AtomicBool::new(true));
        let task = tokio::spawn({
            let (worst, sampling) = (worst.clone(), sampling.clone());
            async move {
                let su = superuser().await;
                while sampling.load(Relaxed) {
                    let n: i64 = su
                        .query_one(
                            "select count(*) from pg_stat_activity where usename = $1",
                            &[&ROLE],
                        )
                        .await
                        .unwrap()
                        .get(0);
                    worst.fetch_max(n as usize, Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        Sampler {
            worst,
            sampling,
            task,
        }
    }

    /// Stops sampling; the most connections seen at once.
    async fn worst(self) -> usize {
        self.sampling.store(false, Relaxed);
        self.task.await.unwrap();
        self.worst.load(Relaxed)
    }
}

/// The share (cap) and the connections held, within 5 s of the load's
/// start (the connections follow the auto-size controller, which at most
/// doubles a pool per second).
fn assert_grew(who: &str, g: &Growth) {
    let in_time = |at: Option<Duration>, s: u64| at.is_some_and(|t| t <= Duration::from_secs(s));
    assert!(
        in_time(g.cap_at, 5),
        "{who}: share not reached within 5 s: {g:?}"
    );
    assert!(
        in_time(g.held_at, 5),
        "{who}: connections not grown within 5 s: {g:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_instances_share_one_budget_as_the_load_moves() {
    let _heavy = HEAVY.lock().await;
    let fleet = format!("t{}", std::process::id() % 100_000);
    let mut fleet_of = Vec::new();
    let mut password = String::new();
    for i in 0..4 {
        let (p, pw) = instance(&fleet, &format!("i{i}")).await;
        fleet_of.push(p);
        password = pw;
    }
    let sampler = Sampler::start();
    // Every instance joins, knows the other three, and is past the rounds
    // in which a new instance bids an equal share.
    for p in &fleet_of {
        let settled = || async {
            let rounds = p
                .running
                .shared
                .fleet
                .snapshot()
                .pop()
                .map(|(_, f)| f.rounds);
            members_seen(p).len() == 3 && rounds.is_some_and(|r| r > NEW_ROUNDS)
        };
        assert!(
            eventually(Duration::from_secs(10), settled).await,
            "an instance did not settle in the fleet: {:?}",
            members_seen(p)
        );
    }

    // The load on instance 0 (30 clients): it reaches 80% of its fair share.
    let (stop0, stop0_rest) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let tasks0 = load(&fleet_of[0], 20, &password, &stop0).await;
    let tasks0_rest = load(&fleet_of[0], 10, &password, &stop0_rest).await;
    let first = grows(
        &fleet_of[0],
        tokio::time::Instant::now(),
        Duration::from_secs(12),
    )
    .await;
    assert_grew("instance 0", &first);

    // Most of the load moves to instance 1 (30 clients; 10 stay on
    // instance 0): together they would want more than the budget, and
    // instance 0 must hand back what instance 1 takes.
    stop0.store(true, Relaxed);
    for t in tasks0 {
        t.await.unwrap();
    }
    let stop1 = Arc::new(AtomicBool::new(false));
    let tasks1 = load(&fleet_of[1], 30, &password, &stop1).await;
    let second = grows(
        &fleet_of[1],
        tokio::time::Instant::now(),
        Duration::from_secs(12),
    )
    .await;
    assert_grew("instance 1", &second);
    eprintln!(
        "fleet growth: instance 0 share {:?}, held {:?}; instance 1 share {:?}, held {:?}",
        first.cap_at, first.held_at, second.cap_at, second.held_at
    );

    // SHOW FLEET on instance 1: the four members, itself marked, and the
    // fleet's sums within the budget.
    let admin = crate::console::console(fleet_of[1].port, crate::console::ADMIN)
        .await
        .unwrap();
    let rows = crate::console::rows(&admin, "SHOW FLEET").await;
    let col = |r: &[(String, String)], c: &str| crate::console::cell(r, c).to_string();
    let ids: Vec<String> = rows.iter().map(|r| col(r, "instance")).collect();
    assert_eq!(ids, ["i0", "i1", "i2", "i3", "(fleet)"], "{rows:?}");
    assert_eq!(col(&rows[1], "me"), "yes");
    let config = crate::console::rows(&admin, "SHOW CONFIG").await;
    let fleet_key = config.iter().find(|r| col(r, "key") == "fleet");
    assert_eq!(fleet_key.map(|r| col(r, "value")), Some(fleet.clone()));
    let caps: usize = col(&rows[4], "cap").parse().unwrap();
    assert!(
        caps <= BUDGET && col(&rows[4], "budget") == "40",
        "{rows:?}"
    );
    // The same in /metrics.
    let metrics_at = fleet_of[1]
        .running
        .metrics_addr
        .expect("a /metrics endpoint");
    let text = crate::observe::scrape(metrics_at).await;
    let mine = [("instance", "i1"), ("me", "yes")];
    let cap = crate::observe::sample(&text, "pglittle_fleet_cap", &mine);
    // (a sync round may have moved it since SHOW FLEET)
    assert!(
        cap.is_some_and(|c| c >= 1.0 && c <= BUDGET as f64),
        "{text}"
    );
    let budget = crate::observe::sample(&text, "pglittle_fleet_budget", &[]);
    assert_eq!(budget, Some(40.0));

    // Instance 2 stops: the others count it out, and the busy one takes
    // its part within a few sync periods.
    let before = share(&fleet_of[1]).map(|(_, t)| t).unwrap_or(0);
    let gone = fleet_of.remove(2);
    gone.running.shutdown().advance(pglittle::Phase::Stopping);
    let counted_out = eventually(Duration::from_secs(5), || async {
        fleet_of
            .iter()
            .all(|p| !members_seen(p).contains(&"i2".to_string()))
    })
    .await;
    let grown = eventually(Duration::from_secs(5), || async {
        share(&fleet_of[1]).is_some_and(|(cap, target)| target > before && cap * 10 >= target * 8)
    })
    .await;
    stop1.store(true, Relaxed);
    stop0_rest.store(true, Relaxed);
    for t in tasks1.into_iter().chain(tasks0_rest) {
        t.await.unwrap();
    }
    let worst = sampler.worst().await;
    assert!(counted_out, "a stopped instance is still counted");
    assert!(
        grown,
        "instance 1 did not take the stopped one's part: {:?} (before {before})",
        share(&fleet_of[1])
    );
    assert!(
        worst <= BUDGET,
        "the fleet held {worst} connections for a budget of {BUDGET}"
    );
    assert!(
        worst > BUDGET / 2,
        "the busy instances never used the budget (at most {worst})"
    );
}

/// A new instance joining a fleet whose budget another one has taken: it
/// bids an equal share at once, the other hands back, and the newcomer's
/// cap and connections reach 80% of that share within 5 s of its start;
/// the fleet never holds more than the budget meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_instance_takes_an_equal_share_from_a_busy_fleet() {
    let _heavy = HEAVY.lock().await;
    let fleet = format!("n{}", std::process::id() % 100_000);
    let sampler = Sampler::start();
    let (old, password) = instance(&fleet, "old").await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = load(&old, 30, &password, &stop).await;
    let took_all = eventually(Duration::from_secs(10), || async {
        share(&old).is_some_and(|(cap, _)| cap as usize * 10 >= BUDGET * 7)
    })
    .await;
    assert!(
        took_all,
        "the busy instance never took the budget: {:?}",
        share(&old)
    );

    let started = tokio::time::Instant::now();
    let (new, _) = instance(&fleet, "new").await;
    tasks.extend(load(&new, 30, &password, &stop).await);
    let grew = grows(&new, started, Duration::from_secs(10)).await;
    eprintln!(
        "new instance: cap at {:?}, held at {:?} after its start",
        grew.cap_at, grew.held_at
    );
    stop.store(true, Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let worst = sampler.worst().await;
    let equal = u32::try_from(BUDGET / 2).unwrap();
    assert!(
        grew.trace
            .last()
            .is_some_and(|(_, target, _)| *target == equal),
        "the newcomer's fair share is not an equal one: {grew:?}"
    );
    assert_grew("the new instance", &grew);
    assert!(
        worst <= BUDGET,
        "the fleet held {worst} connections for a budget of {BUDGET}"
    );
}

/// SHOW FLEET's instance column on the binary listening on `port`.
async fn fleet_members(port: u16) -> Vec<String> {
    let url = format!(
        "host=127.0.0.1 port={port} user={} password={} dbname=pgbouncer",
        pgcluster::APP_USER,
        pgcluster::APP_PASSWORD
    );
    let Ok((client, conn)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await else {
        return Vec::new();
    };
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let rows = crate::console::rows(&client, "SHOW FLEET").await;
    rows.iter()
        .map(|r| crate::console::cell(r, "instance").to_string())
        .filter(|i| i != "(fleet)")
        .collect()
}

/// Two real processes; one is killed (SIGKILL: no goodbye, its sync
/// connection dies with it) and the other counts it out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_is_counted_out_by_the_others() {
    use crate::binary::{config_file, free_port, pglittle, Proc, TempDir};
    let fleet = format!("k{}", std::process::id() % 100_000);
    let start = |id: &'static str, dir: &TempDir| {
        let port = free_port();
        let text = config_file(
            port,
            2,
            &format!(
                "max_db_connections = 20\nadmin_users = [\"app\"]\nfleet = \"{fleet}\"\n\
             fleet_instance = \"{id}\"\nfleet_sync_period = \"250ms\""
            ),
        )
        .replace("pool_size = 2", "pool_size = \"auto\"");
        let file = dir.write("pooler.toml", &text);
        let mut cmd = pglittle();
        cmd.arg("--config").arg(&file);
        (Proc::spawn(cmd, dir), port)
    };
    let (dir_a, dir_b) = (TempDir::new("fleet-a"), TempDir::new("fleet-b"));
    let (mut a, port_a) = start("a", &dir_a);
    let (mut b, port_b) = start("b", &dir_b);
    let _probes = (a.wait_ready(port_a).await, b.wait_ready(port_b).await);
    let both = eventually(Duration::from_secs(10), || async {
        fleet_members(port_b).await == ["a", "b"]
    })
    .await;
    assert!(
        both,
        "b never saw a: {:?}\n{}",
        fleet_members(port_b).await,
        b.log()
    );
    a.signal("KILL");
    let alone = eventually(Duration::from_secs(5), || async {
        fleet_members(port_b).await == ["b"]
    })
    .await;
    assert!(
        alone,
        "b still counts a: {:?}\n{}",
        fleet_members(port_b).await,
        b.log()
    );
}
