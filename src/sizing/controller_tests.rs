//! Controller decisions on synthetic traces, on tokio's paused clock: a
//! simulated database (hold time W0 up to `parallel` busy connections, then
//! growing with contention) under open- and closed-loop load.

use std::time::Duration;

use super::*;

const GOAL: Goal = Goal {
    headroom: 0.2,
    wait_target: Duration::from_millis(10),
};
const OPEN: AutoBounds = AutoBounds { min: 0, max: 0 };

#[derive(Clone, Copy)]
enum Load {
    /// Requests per second, arriving whatever happens.
    Open(f64),
    /// Clients each sending the next request as soon as one is answered.
    Closed(usize),
}

struct Sim {
    w0: f64,
    parallel: f64,
    queue: f64,
}

impl Sim {
    fn new(w0_ms: f64, parallel: usize) -> Sim {
        Sim {
            w0: w0_ms / 1000.0,
            parallel: parallel as f64,
            queue: 0.0,
        }
    }

    fn hold(&self, busy: f64) -> f64 {
        self.w0 * (busy / self.parallel).max(1.0)
    }

    /// One second of the system at pool size `n`.
    fn second(&mut self, load: Load, n: usize) -> Sample {
        let n = n as f64;
        match load {
            Load::Open(lambda) => {
                let need = lambda * self.w0 + self.queue / 1.0 * self.w0;
                if need <= n.min(self.parallel) * 0.95 {
                    self.queue = 0.0;
                    return Sample {
                        lambda,
                        throughput: lambda,
                        hold_mean: self.w0,
                        busy_mean: lambda * self.w0,
                        ..Sample::default()
                    };
                }
                let w = self.hold(n);
                let throughput = n / w;
                self.queue = (self.queue + lambda - throughput).max(0.0);
                Sample {
                    lambda,
                    throughput,
                    hold_mean: w,
                    busy_mean: n,
                    waiting_mean: self.queue,
                    wait_p99: self.queue / throughput,
                }
            }
            Load::Closed(clients) => {
                let busy = n.min(clients as f64);
                let w = self.hold(busy);
                let throughput = busy / w;
                let waiting = clients as f64 - busy;
                Sample {
                    lambda: throughput,
                    throughput,
                    hold_mean: w,
                    busy_mean: busy,
                    waiting_mean: waiting,
                    wait_p99: waiting / throughput,
                }
            }
        }
    }
}

/// Runs `secs` one-second ticks on the paused clock; returns the sizes.
async fn run(
    ctl: &mut Controller,
    sim: &mut Sim,
    load: Load,
    size: &mut usize,
    secs: usize,
    bounds: AutoBounds,
    budget: usize,
) -> Vec<usize> {
    let mut sizes = Vec::new();
    for _ in 0..secs {
        tokio::time::advance(Duration::from_secs(1)).await;
        let now = tokio::time::Instant::now().into_std();
        let s = sim.second(load, *size);
        let (want, _) = ctl.decide(now, &s, *size, bounds, &GOAL);
        *size = want.min(budget);
        ctl.applied(*size);
        sizes.push(*size);
    }
    sizes
}

#[tokio::test(start_paused = true)]
async fn step_up_reaches_littles_law_then_step_down_shrinks_gradually() {
    // 160 req/s x 50 ms = 8 busy servers; the pool starts at 2.
    let (mut ctl, mut sim, mut size) = (Controller::new(), Sim::new(50.0, 100), START_SIZE);
    let up = run(
        &mut ctl,
        &mut sim,
        Load::Open(160.0),
        &mut size,
        10,
        OPEN,
        1000,
    )
    .await;
    assert!(size >= 8, "after 10 s: {up:?}");
    assert_bounded_growth(START_SIZE, &up);
    // The backlog queued while the pool was small drains, then the size
    // settles within 2 of L = 8 (plus 20% headroom).
    let settled = run(
        &mut ctl,
        &mut sim,
        Load::Open(160.0),
        &mut size,
        40,
        OPEN,
        1000,
    )
    .await;
    assert!(
        settled[20..].iter().all(|s| (8..=11).contains(s)),
        "{settled:?}"
    );

    let down = run(
        &mut ctl,
        &mut sim,
        Load::Open(0.0),
        &mut size,
        30,
        OPEN,
        1000,
    )
    .await;
    assert_eq!(
        down[..4],
        [size_at(&settled); 4],
        "no shrink before SHRINK_AFTER: {down:?}"
    );
    assert!(size <= 2, "after 30 idle seconds: {down:?}");
    for pair in down.windows(2) {
        assert!(pair[0] - pair[1] <= 3, "gradual: {down:?}");
    }
}

fn assert_bounded_growth(start: usize, sizes: &[usize]) {
    let mut prev = start;
    for s in sizes {
        assert!(
            *s <= (prev + prev.clamp(MIN_STEP, MAX_STEP)).max(PROBE_FROM),
            "stampede: {sizes:?}"
        );
        prev = *s;
    }
}

fn size_at(sizes: &[usize]) -> usize {
    sizes[sizes.len() - 1]
}

#[tokio::test(start_paused = true)]
async fn a_spike_grows_at_a_bounded_rate_and_is_given_back() {
    let (mut ctl, mut sim, mut size) = (Controller::new(), Sim::new(10.0, 64), START_SIZE);
    run(
        &mut ctl,
        &mut sim,
        Load::Open(400.0),
        &mut size,
        20,
        OPEN,
        1000,
    )
    .await;
    let base = size;
    assert!((4..=6).contains(&base), "steady at L=4: {base}");
    // Three seconds at ten times the rate.
    let spike = run(
        &mut ctl,
        &mut sim,
        Load::Open(4000.0),
        &mut size,
        3,
        OPEN,
        1000,
    )
    .await;
    assert_bounded_growth(base, &spike);
    assert!(size > base, "the spike was answered: {spike:?}");
    let after = run(
        &mut ctl,
        &mut sim,
        Load::Open(400.0),
        &mut size,
        40,
        OPEN,
        1000,
    )
    .await;
    assert!(size <= base + 1, "given back: {after:?}");
}

#[tokio::test(start_paused = true)]
async fn the_knee_stops_growth_where_throughput_stops_rising() {
    // 200 clients in a closed loop against a server that runs 8 in parallel:
    // without the knee, demand (200) would take the pool to the budget.
    let (mut ctl, mut sim, mut size) = (Controller::new(), Sim::new(1.0, 8), START_SIZE);
    let sizes = run(
        &mut ctl,
        &mut sim,
        Load::Closed(200),
        &mut size,
        25,
        OPEN,
        100,
    )
    .await;
    let tail = &sizes[10..];
    assert!(tail.iter().all(|s| *s <= 12), "past the knee: {sizes:?}");
    assert!(ctl.knee(tokio::time::Instant::now().into_std()).is_some());
    assert!(
        tail.iter().filter(|s| **s >= 8).count() >= tail.len() / 2,
        "{sizes:?}"
    );
    // After KNEE_HOLD it probes again, and backs off again.
    let later = run(
        &mut ctl,
        &mut sim,
        Load::Closed(200),
        &mut size,
        60,
        OPEN,
        100,
    )
    .await;
    // It probes again, with smaller steps each time, and comes back to
    // the knee (the simulated server's 8) in between.
    let above = later.iter().filter(|s| **s > 8).count();
    assert!((1..=12).contains(&above), "re-probes are brief: {later:?}");
    assert!(later.iter().all(|s| *s <= 12), "{later:?}");
    assert_eq!(*later.last().unwrap(), 8, "{later:?}");
}

#[tokio::test(start_paused = true)]
async fn a_server_that_scales_is_not_mistaken_for_a_knee() {
    // 40 clients, each transaction 50 ms, server parallel enough: the pool
    // should reach the clients' concurrency.
    let (mut ctl, mut sim, mut size) = (Controller::new(), Sim::new(50.0, 64), START_SIZE);
    let sizes = run(
        &mut ctl,
        &mut sim,
        Load::Closed(40),
        &mut size,
        30,
        OPEN,
        1000,
    )
    .await;
    assert!(size >= 40, "{sizes:?}");
    assert!(ctl.knee(tokio::time::Instant::now().into_std()).is_none());
    // Probes that pay off at once are not waited out: straight to 8, then
    // doubling every tick (16, 32), the clients' 40 (with headroom) by the
    // sixth.
    assert!(sizes[5] >= 40, "{sizes:?}");
}

#[tokio::test(start_paused = true)]
async fn never_above_the_budget_or_max_and_never_below_min() {
    let bounds = AutoBounds { min: 3, max: 30 };
    let (mut ctl, mut sim, mut size) = (Controller::new(), Sim::new(50.0, 1000), bounds.start());
    let high = run(
        &mut ctl,
        &mut sim,
        Load::Open(600.0),
        &mut size,
        30,
        bounds,
        25,
    )
    .await;
    assert!(high.iter().all(|s| *s <= 25), "{high:?}");
    assert_eq!(size, 25);
    let idle = run(
        &mut ctl,
        &mut sim,
        Load::Open(0.0),
        &mut size,
        60,
        bounds,
        25,
    )
    .await;
    assert!(idle.iter().all(|s| *s >= 3), "{idle:?}");
    assert_eq!(size, 3);
}

#[tokio::test(start_paused = true)]
async fn hysteresis_keeps_a_noisy_load_from_flapping() {
    let (mut ctl, mut sim, mut size) = (Controller::new(), Sim::new(50.0, 100), START_SIZE);
    run(
        &mut ctl,
        &mut sim,
        Load::Open(200.0),
        &mut size,
        60,
        OPEN,
        1000,
    )
    .await;
    let mut sizes = Vec::new();
    for i in 0..60 {
        // L alternates between 8 and 10 every second.
        let rate = if i % 2 == 0 { 160.0 } else { 200.0 };
        sizes.extend(
            run(
                &mut ctl,
                &mut sim,
                Load::Open(rate),
                &mut size,
                1,
                OPEN,
                1000,
            )
            .await,
        );
    }
    let changes = sizes.windows(2).filter(|p| p[0] != p[1]).count();
    assert!(changes <= 2, "flapping: {sizes:?}");
}

#[tokio::test(start_paused = true)]
async fn a_queue_beside_idle_servers_is_not_demand() {
    // 200 clients queue, yet only 10 of 16 servers are busy on average: the
    // bottleneck is elsewhere (the hand-over of freed servers, the CPU), and
    // more servers would not shorten that queue.
    let mut ctl = Controller::new();
    let sample = Sample {
        lambda: 10_000.0,
        throughput: 10_000.0,
        hold_mean: 0.001,
        busy_mean: 10.0,
        waiting_mean: 150.0,
        wait_p99: 0.05,
    };
    let mut size = 16;
    for _ in 0..20 {
        tokio::time::advance(Duration::from_secs(1)).await;
        let now = tokio::time::Instant::now().into_std();
        size = ctl.decide(now, &sample, size, OPEN, &GOAL).0;
        assert!(size <= 16, "grew on a queue beside idle servers");
    }
    // L = 10 plus 20% headroom.
    assert_eq!(size, 12);
}

#[test]
fn a_pool_just_grown_is_still_seen_saturated() {
    // 30 clients on 20 ms transactions: every server busy, a long queue.
    let full = |busy: f64| Sample {
        lambda: busy / 0.02,
        throughput: busy / 0.02,
        hold_mean: 0.02,
        busy_mean: busy,
        waiting_mean: 30.0 - busy,
        wait_p99: 0.5,
    };
    let mut ctl = Controller::new();
    let t0 = Instant::now();
    let (grown, _) = ctl.decide(t0, &full(10.0), 10, OPEN, &GOAL);
    assert_eq!(grown, 20);
    // The next window ran one second at 10 and one at 20: a busy mean of
    // 15 is a full pool, not one with a quarter of it idle.
    let (next, why) = ctl.decide(t0 + Duration::from_secs(1), &full(15.0), 20, OPEN, &GOAL);
    assert_eq!((next > 20, why), (true, Why::Grow));
}

#[test]
fn a_pool_the_budget_held_back_takes_the_room_at_once() {
    // 40 clients queue on 5 ms transactions behind a fleet cap of 3.
    let held = |busy: f64| Sample {
        lambda: busy / 0.005,
        throughput: busy / 0.005,
        hold_mean: 0.005,
        busy_mean: busy,
        waiting_mean: 40.0 - busy,
        wait_p99: 0.5,
    };
    let mut ctl = Controller::new();
    let t0 = Instant::now();
    let tick = |n: u64| t0 + Duration::from_secs(n);
    let (want, _) = ctl.decide(t0, &held(3.0), 3, OPEN, &GOAL);
    assert_eq!(
        want, 8,
        "the capped queue's demand, while it may be a burst"
    );
    ctl.applied(3);
    // Held at 3 for a tick: the queue stood, so all of it is demand, and
    // growth takes its largest step.
    let (want, why) = ctl.decide(tick(1), &held(3.0), 3, OPEN, &GOAL);
    assert_eq!((want, why), (3 + MAX_STEP, Why::Grow));
    // The cap rose to 16; still saturated and still held back.
    ctl.applied(16);
    let (want, _) = ctl.decide(tick(2), &held(16.0), 16, OPEN, &GOAL);
    assert_eq!(want, 16 + MAX_STEP);
    // Held back, then given all it asked for between ticks (a fleet cap
    // that rose): it was still held back for part of the tick.
    let mut joined = Controller::new();
    joined.decide(t0, &held(2.0), 2, OPEN, &GOAL);
    joined.applied(0);
    joined.applied(4);
    let (want, _) = joined.decide(tick(1), &held(3.0), 4, OPEN, &GOAL);
    assert_eq!(want, 4 + MAX_STEP);
    // A pool that got what it asked for doubles.
    let mut free = Controller::new();
    free.decide(t0, &held(3.0), 3, OPEN, &GOAL);
    free.applied(8);
    let (want, _) = free.decide(tick(1), &held(8.0), 8, OPEN, &GOAL);
    assert_eq!(want, 16, "not held back: doubling");
}
