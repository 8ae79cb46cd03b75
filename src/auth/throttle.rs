//! Login throttling: failed logins counted per username and per client address in a
//! fixed window, in memory.

use std::{
    collections::HashMap,
    hash::Hash,
    net::IpAddr,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

/// How many keys one counter tracks at most, so a spray of made-up usernames cannot grow
/// memory without bound. Past it, new keys go uncounted until old windows end; the
/// per-address limit still applies to them.
const MAX_TRACKED: usize = 50_000;

/// Usernames longer than this cannot exist, so they are counted per address only.
const MAX_TRACKED_USERNAME_LEN: usize = 128;

struct Window {
    failures: u32,
    started: Instant,
}

/// Attempts per key within a fixed window; `max == 0` turns it off.
struct Counter<K> {
    max: u32,
    window: Duration,
    windows: Mutex<HashMap<K, Window>>,
}

impl<K: Eq + Hash + Clone> Counter<K> {
    fn new(max: u32, window: Duration) -> Self {
        Self {
            max,
            window,
            windows: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Window>> {
        // The map holds plain counters; a panic elsewhere cannot leave it inconsistent.
        self.windows.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_open(&self, window: &Window, now: Instant) -> bool {
        now.duration_since(window.started) < self.window
    }

    /// How long `key` must wait, if it has reached the limit of failures.
    fn retry_after(&self, key: &K, now: Instant) -> Option<Duration> {
        if self.max == 0 {
            return None;
        }
        let windows = self.lock();
        let window = windows.get(key)?;
        (self.is_open(window, now) && window.failures >= self.max)
            .then(|| self.window - now.duration_since(window.started))
    }

    fn count(&self, key: &K, now: Instant) {
        if self.max == 0 {
            return;
        }
        let mut windows = self.lock();
        if windows.len() >= MAX_TRACKED && !windows.contains_key(key) {
            windows.retain(|_, w| self.is_open(w, now));
            if windows.len() >= MAX_TRACKED {
                return;
            }
        }
        let window = windows.entry(key.clone()).or_insert(Window {
            failures: 0,
            started: now,
        });
        if !self.is_open(window, now) {
            *window = Window {
                failures: 0,
                started: now,
            };
        }
        window.failures += 1;
    }

    fn forget(&self, key: &K) {
        self.lock().remove(key);
    }

    fn prune(&self, now: Instant) {
        self.lock().retain(|_, w| self.is_open(w, now));
    }
}

/// Counts failed logins per username and per client address.
pub struct LoginThrottle {
    per_username: Counter<String>,
    per_address: Counter<IpAddr>,
}

/// Usernames that cannot exist are not tracked by name: no memory for made-up giants.
fn tracked(username: &str) -> Option<String> {
    (username.len() <= MAX_TRACKED_USERNAME_LEN).then(|| username.to_owned())
}

impl LoginThrottle {
    pub fn new(max_per_username: u32, max_per_address: u32, window: Duration) -> Self {
        Self {
            per_username: Counter::new(max_per_username, window),
            per_address: Counter::new(max_per_address, window),
        }
    }

    /// How long to wait, when either limit is used up. Whether the user exists plays no
    /// part, so a 429 reveals nothing about it.
    pub fn check(&self, username: &str, address: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        let wait = [
            tracked(username).and_then(|u| self.per_username.retry_after(&u, now)),
            self.per_address.retry_after(&address, now),
        ]
        .into_iter()
        .flatten()
        .max();
        wait.map_or(Ok(()), Err)
    }

    pub fn record_failure(&self, username: &str, address: IpAddr) {
        let now = Instant::now();
        if let Some(username) = tracked(username) {
            self.per_username.count(&username, now);
        }
        self.per_address.count(&address, now);
    }

    /// A right password clears the username's failures.
    pub fn record_success(&self, username: &str) {
        if let Some(username) = tracked(username) {
            self.per_username.forget(&username);
        }
    }

    /// Drops windows that have ended.
    pub fn prune(&self) {
        let now = Instant::now();
        self.per_username.prune(now);
        self.per_address.prune(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn fail(throttle: &LoginThrottle, username: &str, times: usize) {
        for _ in 0..times {
            throttle.check(username, HOME).unwrap();
            throttle.record_failure(username, HOME);
        }
    }

    #[test]
    fn the_attempt_after_the_limit_waits_for_the_window() {
        let throttle = LoginThrottle::new(2, 0, Duration::from_secs(60));
        fail(&throttle, "bob", 2);
        let wait = throttle.check("bob", HOME).unwrap_err();
        assert!(wait > Duration::from_secs(59) && wait <= Duration::from_secs(60));
        assert!(throttle.check("carol", HOME).is_ok());
    }

    #[test]
    fn success_clears_the_username() {
        let throttle = LoginThrottle::new(2, 0, Duration::from_secs(60));
        fail(&throttle, "bob", 1);
        throttle.record_success("bob");
        fail(&throttle, "bob", 1);
        assert!(throttle.check("bob", HOME).is_ok());
    }

    #[test]
    fn zero_turns_a_limit_off() {
        let throttle = LoginThrottle::new(0, 0, Duration::from_secs(60));
        fail(&throttle, "bob", 100);
    }

    #[test]
    fn the_address_limit_spans_usernames() {
        let throttle = LoginThrottle::new(0, 3, Duration::from_secs(60));
        for name in ["a", "b", "c"] {
            fail(&throttle, name, 1);
        }
        assert!(throttle.check("d", HOME).is_err());
    }
}
