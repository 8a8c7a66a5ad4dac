//! Failed logins, per source address and user name: each failure is
//! answered a little later than the last (so guessing is slow), and an
//! address that keeps failing for a user is refused for a while (so it
//! is slower still). Loopback addresses are only delayed, never refused:
//! behind a sidecar every client comes from 127.0.0.1, and one app with a
//! wrong password must not lock out the rest of the host.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures are counted over this window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Failures in a window after which the address is refused for the user.
pub const LIMIT: u32 = 20;
/// Each failure in the window adds this to the answer's delay...
const DELAY_STEP: Duration = Duration::from_millis(100);
/// ...up to this.
const MAX_DELAY: Duration = Duration::from_secs(2);
/// Addresses tracked at most; past it, expired windows are dropped, and
/// then the oldest.
const MAX_TRACKED: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    failures: u32,
}

#[derive(Debug, Default)]
pub struct FailedLogins {
    by_source: Mutex<HashMap<(IpAddr, String), Window>>,
}

impl FailedLogins {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<(IpAddr, String), Window>> {
        self.by_source.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long `user` from `ip` is still refused (`None`: let it try).
    pub fn refused(&self, ip: IpAddr, user: &str, now: Instant) -> Option<Duration> {
        if ip.is_loopback() {
            return None;
        }
        let map = self.map();
        let w = map.get(&(ip, user.to_string()))?;
        let left = WINDOW.saturating_sub(now.duration_since(w.start));
        (w.failures >= LIMIT && !left.is_zero()).then_some(left)
    }

    /// Records a failed login; returns how long to wait before saying so.
    pub fn failed(&self, ip: IpAddr, user: &str, now: Instant) -> Duration {
        let mut map = self.map();
        if map.len() >= MAX_TRACKED {
            map.retain(|_, w| now.duration_since(w.start) < WINDOW);
            if map.len() >= MAX_TRACKED {
                let oldest = map
                    .iter()
                    .min_by_key(|(_, w)| w.start)
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    map.remove(&k);
                }
            }
        }
        let w = map.entry((ip, user.to_string())).or_insert(Window {
            start: now,
            failures: 0,
        });
        if now.duration_since(w.start) >= WINDOW {
            *w = Window {
                start: now,
                failures: 0,
            };
        }
        w.failures = w.failures.saturating_add(1);
        (DELAY_STEP * w.failures).min(MAX_DELAY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAR: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7));
    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn failures_are_answered_ever_later_and_then_refused_for_the_window() {
        let f = FailedLogins::default();
        let t0 = Instant::now();
        assert_eq!(f.failed(FAR, "app", t0), DELAY_STEP);
        assert_eq!(f.failed(FAR, "app", t0), DELAY_STEP * 2);
        for _ in 2..LIMIT {
            assert!(f.failed(FAR, "app", t0) <= MAX_DELAY);
        }
        assert_eq!(f.failed(FAR, "other", t0), DELAY_STEP, "per user name");
        let left = f.refused(FAR, "app", t0 + Duration::from_secs(10));
        assert_eq!(left, Some(WINDOW - Duration::from_secs(10)));
        assert_eq!(f.refused(FAR, "other", t0), None);
        // The window passes: the address may try again, from the start.
        assert_eq!(f.refused(FAR, "app", t0 + WINDOW), None);
        assert_eq!(f.failed(FAR, "app", t0 + WINDOW), DELAY_STEP);
    }

    #[test]
    fn loopback_is_delayed_but_never_refused() {
        let f = FailedLogins::default();
        let t0 = Instant::now();
        for _ in 0..LIMIT * 2 {
            f.failed(LOCAL, "app", t0);
        }
        assert_eq!(f.failed(LOCAL, "app", t0), MAX_DELAY);
        assert_eq!(f.refused(LOCAL, "app", t0), None);
    }

    #[test]
    fn the_table_is_bounded() {
        let f = FailedLogins::default();
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 50) {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            f.failed(ip, "app", t0);
        }
        assert!(f.map().len() <= MAX_TRACKED);
    }
}
