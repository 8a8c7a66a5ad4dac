//! Little's Law, live: sliding windows of arrivals, hold times (W), wait
//! times and the time-integral of busy and waiting connections, per pool.
//!
//! Pure bookkeeping with the clock passed in, so tests drive it with
//! synthetic instants. Recording happens at lease boundaries only (a short
//! mutex hold, never per query). Time is cut into one-second slots kept in a
//! ring; a window of N seconds sums the last N slots (the newest one partial).
//! Hold and wait times go into log-scale histograms (four buckets per
//! octave, about 19% wide) so a window's p99 costs no sample storage.
//!
//! What the figures recommend (Erlang C for an M/M/c queue) is in
//! [`super::erlang`].

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Seconds of history kept: enough for the longest window plus the partial slot.
const SLOTS: usize = 61;
/// Histogram buckets per octave (powers of two of microseconds).
const PER_OCTAVE: f64 = 4.0;
/// Buckets from 1 µs up to 2^30 µs (about 18 minutes).
const BUCKETS: usize = 121;

/// The windows reported by SHOW SIZING and /metrics.
pub const WINDOWS: [Duration; 2] = [Duration::from_secs(10), Duration::from_secs(60)];

#[derive(Clone)]
struct Slot {
    second: u64,
    arrivals: u64,
    completions: u64,
    hold_sum: f64,
    waits: u64,
    wait_sum: f64,
    busy_secs: f64,
    waiting_secs: f64,
    /// Time during which at least one client was waiting, and the
    /// completions in that time (and their holds): how fast a standing
    /// queue moves.
    queued_secs: f64,
    queued_completions: u64,
    queued_hold_sum: f64,
    hold_hist: [u32; BUCKETS],
    wait_hist: [u32; BUCKETS],
}

impl Slot {
    fn empty(second: u64) -> Slot {
        Slot {
            second,
            arrivals: 0,
            completions: 0,
            hold_sum: 0.0,
            waits: 0,
            wait_sum: 0.0,
            busy_secs: 0.0,
            waiting_secs: 0.0,
            queued_secs: 0.0,
            queued_completions: 0,
            queued_hold_sum: 0.0,
            hold_hist: [0; BUCKETS],
            wait_hist: [0; BUCKETS],
        }
    }
}

struct Inner {
    slots: Vec<Slot>,
    busy: u64,
    waiting: u64,
    /// When busy/waiting last changed, in seconds since the epoch (kept as
    /// a number: one clock subtraction per event instead of three).
    last_change: f64,
}

/// One pool's sliding-window statistics.
pub struct PoolStats {
    epoch: Instant,
    inner: Mutex<Inner>,
}

/// What a window says about how fast a standing queue moves: the part of
/// the window in which clients were queueing, the completions in it and
/// their holds. Completions are leases of any kind (a simple Query, a
/// Parse/Describe batch, a Bind/Execute batch): each is one place in the
/// queue, whatever its hold. Time and holds with no queue are left out.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Service {
    pub queued_completions: u64,
    pub queued_hold_sum: f64,
    pub queued_secs: f64,
}

/// What a window says about a pool.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Figures {
    /// Seconds actually covered (less than the window just after start).
    pub span: f64,
    pub arrivals: u64,
    pub completions: u64,
    /// λ: transactions (server requests) per second.
    pub lambda: f64,
    /// W: mean and p99 time a transaction holds a server, in seconds.
    pub hold_mean: f64,
    pub hold_p99: f64,
    /// L = λ·W: busy servers needed on average.
    pub offered_load: f64,
    /// Measured mean of lent servers (the cross-check of L).
    pub busy_mean: f64,
    /// Mean number of clients waiting for a server.
    pub waiting_mean: f64,
    pub wait_mean: f64,
    pub wait_p99: f64,
}

fn bucket(d: Duration) -> usize {
    let micros = d.as_secs_f64() * 1e6;
    if micros < 1.0 {
        return 0;
    }
    ((micros.log2() * PER_OCTAVE).floor() as usize + 1).min(BUCKETS - 1)
}

/// A representative value (seconds) for bucket `i`: the geometric middle.
fn bucket_value(i: usize) -> f64 {
    if i == 0 {
        return 0.5e-6;
    }
    let lo = ((i - 1) as f64 / PER_OCTAVE).exp2();
    let hi = (i as f64 / PER_OCTAVE).exp2();
    (lo * hi).sqrt() * 1e-6
}

fn quantile(hist: &[u64; BUCKETS], count: u64, q: f64) -> f64 {
    if count == 0 {
        return 0.0;
    }
    let rank = (q * count as f64).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, n) in hist.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return bucket_value(i);
        }
    }
    bucket_value(BUCKETS - 1)
}

impl Inner {
    fn slot(&mut self, second: u64) -> &mut Slot {
        let s = &mut self.slots[(second % SLOTS as u64) as usize];
        if s.second != second {
            *s = Slot::empty(second);
        }
        s
    }

    /// Credits busy and waiting time from the last change up to `now`,
    /// split at second boundaries.
    fn advance(&mut self, to: f64) {
        if to <= self.last_change {
            return;
        }
        let (busy, waiting) = (self.busy as f64, self.waiting as f64);
        let mut from = self.last_change;
        // Gaps longer than the ring only need the last SLOTS seconds.
        from = from.max(to - SLOTS as f64);
        while from < to {
            let second = from.floor();
            let end = (second + 1.0).min(to);
            let dt = end - from;
            let s = self.slot(second as u64);
            s.busy_secs += busy * dt;
            s.waiting_secs += waiting * dt;
            if waiting > 0.0 {
                s.queued_secs += dt;
            }
            from = end;
        }
        self.last_change = to;
    }
}

impl PoolStats {
    pub fn new(epoch: Instant) -> PoolStats {
        PoolStats {
            epoch,
            inner: Mutex::new(Inner {
                slots: vec![Slot::empty(u64::MAX); SLOTS],
                busy: 0,
                waiting: 0,
                last_change: 0.0,
            }),
        }
    }

    fn with<R>(&self, now: Instant, f: impl FnOnce(&mut Inner, u64) -> R) -> R {
        let since = now.saturating_duration_since(self.epoch);
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.advance(since.as_secs_f64());
        f(&mut inner, since.as_secs())
    }

    /// A client asked for a server.
    pub fn arrive(&self, now: Instant) {
        self.with(now, |i, sec| {
            i.waiting += 1;
            i.slot(sec).arrivals += 1;
        });
    }

    /// A client asked for a server and got one at once: `arrive` and a
    /// `lent` after no wait, in one update.
    pub fn arrive_lent(&self, now: Instant) {
        self.with(now, |i, sec| {
            i.busy += 1;
            let s = i.slot(sec);
            s.arrivals += 1;
            s.waits += 1;
            s.wait_hist[0] += 1;
        });
    }

    /// A client stopped waiting without a server (timeout, error).
    pub fn gave_up(&self, now: Instant) {
        self.with(now, |i, _| i.waiting = i.waiting.saturating_sub(1));
    }

    /// A server was lent after `waited`.
    pub fn lent(&self, now: Instant, waited: Duration) {
        self.with(now, |i, sec| {
            i.waiting = i.waiting.saturating_sub(1);
            i.busy += 1;
            let s = i.slot(sec);
            s.waits += 1;
            s.wait_sum += waited.as_secs_f64();
            s.wait_hist[bucket(waited)] += 1;
        });
    }

    /// A server came back (or was closed) after being held for `held`.
    pub fn returned(&self, now: Instant, held: Duration) {
        self.with(now, |i, sec| {
            i.busy = i.busy.saturating_sub(1);
            // The next waiter (if any) is still counted as waiting: the
            // connection is handed to it after this.
            let queued = i.waiting > 0;
            let s = i.slot(sec);
            s.completions += 1;
            if queued {
                s.queued_completions += 1;
                s.queued_hold_sum += held.as_secs_f64();
            }
            s.hold_sum += held.as_secs_f64();
            s.hold_hist[bucket(held)] += 1;
        });
    }

    /// What the last `window` shows about how fast a standing queue moves,
    /// for admission control. Cheap (no histograms).
    pub fn service(&self, now: Instant, window: Duration) -> Service {
        self.with(now, |i, cur| {
            let n = window.as_secs().clamp(1, SLOTS as u64 - 1);
            let first = cur.saturating_sub(n - 1);
            let mut out = Service::default();
            for s in i
                .slots
                .iter()
                .filter(|s| s.second >= first && s.second <= cur)
            {
                out.queued_completions += s.queued_completions;
                out.queued_hold_sum += s.queued_hold_sum;
                out.queued_secs += s.queued_secs;
            }
            out
        })
    }

    /// The figures for the `window` ending at `now`.
    pub fn figures(&self, now: Instant, window: Duration) -> Figures {
        let epoch = self.epoch;
        self.with(now, |i, cur| {
            let n = window.as_secs().clamp(1, SLOTS as u64 - 1);
            let first = cur.saturating_sub(n - 1);
            let since = now.max(epoch).duration_since(epoch).as_secs_f64();
            let span = since - (first as f64);
            let mut f = Figures {
                span,
                ..Figures::default()
            };
            let (mut hold, mut wait) = ([0u64; BUCKETS], [0u64; BUCKETS]);
            let (mut hold_sum, mut wait_sum, mut waits) = (0.0, 0.0, 0u64);
            let (mut busy, mut waiting) = (0.0, 0.0);
            for s in i
                .slots
                .iter()
                .filter(|s| s.second >= first && s.second <= cur)
            {
                f.arrivals += s.arrivals;
                f.completions += s.completions;
                hold_sum += s.hold_sum;
                wait_sum += s.wait_sum;
                waits += s.waits;
                busy += s.busy_secs;
                waiting += s.waiting_secs;
                for b in 0..BUCKETS {
                    hold[b] += u64::from(s.hold_hist[b]);
                    wait[b] += u64::from(s.wait_hist[b]);
                }
            }
            if span <= 0.0 {
                return f;
            }
            f.lambda = f.arrivals as f64 / span;
            if f.completions > 0 {
                f.hold_mean = hold_sum / f.completions as f64;
                f.hold_p99 = quantile(&hold, f.completions, 0.99);
            }
            if waits > 0 {
                f.wait_mean = wait_sum / waits as f64;
                f.wait_p99 = quantile(&wait, waits, 0.99);
            }
            f.offered_load = f.lambda * f.hold_mean;
            f.busy_mean = busy / span;
            f.waiting_mean = waiting / span;
            f
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Drives a pool at `rate` per second, each transaction holding `hold`,
    /// for `secs` seconds, never waiting; events are fed in time order.
    fn steady(stats: &PoolStats, start: Instant, rate: u32, hold: Duration, secs: u32) -> Instant {
        let gap = Duration::from_secs(1) / rate;
        let mut events: Vec<(Instant, bool)> = Vec::new();
        for i in 0..rate * secs {
            let t = start + gap * i;
            events.push((t, true));
            events.push((t + hold, false));
        }
        events.sort_by_key(|(t, start)| (*t, *start));
        for (t, begin) in &events {
            if *begin {
                stats.arrive(*t);
                stats.lent(*t, Duration::ZERO);
            } else {
                stats.returned(*t, hold);
            }
        }
        start + gap * (rate * secs)
    }

    #[test]
    fn littles_law_holds_for_steady_load() {
        let t0 = Instant::now();
        let stats = PoolStats::new(t0);
        // 200 tx/s, 25 ms each: L = 5.
        let end = steady(&stats, t0, 200, 25 * MS, 30);
        let f = stats.figures(end, Duration::from_secs(10));
        assert!((f.lambda - 200.0).abs() < 200.0 * 0.02, "{f:?}");
        assert!((f.hold_mean - 0.025).abs() < 1e-6, "{f:?}");
        assert!((f.offered_load - 5.0).abs() < 0.15, "{f:?}");
        assert!((f.busy_mean - 5.0).abs() < 0.15, "{f:?}");
        // The p99 lands in the 19%-wide bucket holding 25 ms.
        assert!((f.hold_p99 / 0.025 - 1.0).abs() < 0.2, "{f:?}");
        assert!(f.wait_p99 < 1e-5, "{f:?}");
    }

    #[test]
    fn old_load_leaves_the_short_window_but_not_the_long_one() {
        let t0 = Instant::now();
        let stats = PoolStats::new(t0);
        let end = steady(&stats, t0, 100, 10 * MS, 20);
        let later = end + Duration::from_secs(15);
        let short = stats.figures(later, WINDOWS[0]);
        assert_eq!(short.arrivals, 0);
        assert_eq!(short.busy_mean, 0.0);
        let long = stats.figures(later, WINDOWS[1]);
        assert_eq!(long.arrivals, 2000);
        assert!((long.lambda - 2000.0 / 35.0).abs() < 2.0, "{long:?}");
    }

    #[test]
    fn p99_sees_the_slow_tail() {
        let t0 = Instant::now();
        let stats = PoolStats::new(t0);
        let mut t = t0;
        for i in 0..1000 {
            let hold = if i % 50 == 0 { 400 * MS } else { 2 * MS };
            stats.arrive(t);
            stats.lent(t, Duration::ZERO);
            t += hold;
            stats.returned(t, hold);
        }
        let f = stats.figures(t + Duration::from_secs(1), WINDOWS[0]);
        assert!((f.hold_p99 / 0.4 - 1.0).abs() < 0.2, "{f:?}");
    }

    #[test]
    fn waiting_clients_are_integrated() {
        let t0 = Instant::now();
        let stats = PoolStats::new(t0);
        // Two clients wait the whole of seconds 0..4.
        stats.arrive(t0);
        stats.arrive(t0);
        let f = stats.figures(t0 + Duration::from_secs(4), WINDOWS[0]);
        assert!((f.waiting_mean - 2.0).abs() < 1e-9, "{f:?}");
        stats.gave_up(t0 + Duration::from_secs(4));
        stats.lent(t0 + Duration::from_secs(4), Duration::from_secs(4));
        let f = stats.figures(t0 + Duration::from_secs(8), WINDOWS[0]);
        assert!((f.waiting_mean - 1.0).abs() < 1e-9, "{f:?}");
        assert!((f.busy_mean - 0.5).abs() < 1e-9, "{f:?}");
        assert!((f.wait_p99 / 4.0 - 1.0).abs() < 0.2, "{f:?}");
    }

    #[test]
    fn service_counts_only_the_time_a_queue_stood_and_the_completions_in_it() {
        let t0 = Instant::now();
        let stats = PoolStats::new(t0);
        // One busy server, no queue, for 1 s: 100 completions of 10 ms.
        for i in 0..100u32 {
            let t = t0 + 10 * MS * i;
            stats.arrive(t);
            stats.lent(t, Duration::ZERO);
            stats.returned(t + 10 * MS, 10 * MS);
        }
        // Then a client queues for 200 ms behind a held server, and gets it.
        let q = t0 + Duration::from_millis(1500);
        stats.arrive(q);
        stats.lent(q, Duration::ZERO);
        stats.arrive(q);
        stats.returned(q + 200 * MS, 200 * MS);
        stats.lent(q + 200 * MS, 200 * MS);
        let s = stats.service(q + Duration::from_millis(300), Duration::from_secs(2));
        // The second of short holds with no queue is not in it: a
        // database that slowed down (and so made the queue) is judged on
        // its new holds only.
        assert_eq!(s.queued_completions, 1);
        assert!((s.queued_secs - 0.2).abs() < 1e-9, "{s:?}");
        assert!((s.queued_hold_sum - 0.2).abs() < 1e-9, "{s:?}");
    }
}
