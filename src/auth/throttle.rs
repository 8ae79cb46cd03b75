//! Login throttling: failed logins counted per username and per client address in a
//! fixed window, in memory.

use std::{
    collections::HashMap,
    hash::Hash,
    net::IpAddr,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

/// How many keys one counter tracks at most, so a spray of made-up usernames cannot grow
/// memory without bound. Past it, new keys go uncounted until old windows end; the
/// per-address limit still applies to them.
const MAX_TRACKED: usize = 50_000;

/// Usernames longer than this cannot exist, so they are counted per address only.
const MAX_TRACKED_USERNAME_LEN: usize = 128;

struct Window {
    attempts: u32,
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

    /// How long `key` must wait, if it has used up its attempts.
    fn retry_after(&self, key: &K, now: Instant) -> Option<Duration> {
        if self.max == 0 {
            return None;
        }
        let windows = self.lock();
        let window = windows.get(key)?;
        let elapsed = now.duration_since(window.started);
        (elapsed < self.window && window.attempts >= self.max).then(|| self.window - elapsed)
    }

    fn count(&self, key: &K, now: Instant) {
        if self.max == 0 {
            return;
        }
        let mut windows = self.lock();
        if windows.len() >= MAX_TRACKED && !windows.contains_key(key) {
            windows.retain(|_, w| now.duration_since(w.started) < self.window);
            if windows.len() >= MAX_TRACKED {
                return;
            }
        }
        let window = windows.entry(key.clone()).or_insert(Window {
            attempts: 0,
            started: now,
        });
        if now.duration_since(window.started) >= self.window {
            *window = Window {
                attempts: 0,
                started: now,
            };
        }
        window.attempts += 1;
    }

    fn uncount(&self, key: &K) {
        if let Some(window) = self.lock().get_mut(key) {
            window.attempts = window.attempts.saturating_sub(1);
        }
    }

    fn forget(&self, key: &K) {
        self.lock().remove(key);
    }

    fn prune(&self, now: Instant) {
        self.lock()
            .retain(|_, w| now.duration_since(w.started) < self.window);
    }
}

/// Counts failed logins per username and per client address.
pub struct LoginThrottle {
    per_username: Counter<String>,
    per_address: Counter<IpAddr>,
}

/// A login attempt that has been counted as a failure in advance, so that parallel
/// attempts cannot slip past the limit while their passwords are being checked.
#[must_use = "call succeeded() when the password was right"]
pub struct Attempt {
    throttle: Arc<LoginThrottle>,
    username: Option<String>,
    address: IpAddr,
}

impl Attempt {
    /// A right password clears the username's failures and does not count against the
    /// address.
    pub fn succeeded(self) {
        if let Some(username) = &self.username {
            self.throttle.per_username.forget(username);
        }
        self.throttle.per_address.uncount(&self.address);
    }
}

impl LoginThrottle {
    pub fn new(max_per_username: u32, max_per_address: u32, window: Duration) -> Self {
        Self {
            per_username: Counter::new(max_per_username, window),
            per_address: Counter::new(max_per_address, window),
        }
    }

    /// Starts a login attempt, or says how long to wait when either limit is used up.
    /// Whether the user exists plays no part, so a 429 reveals nothing about it.
    pub fn begin(self: &Arc<Self>, username: &str, address: IpAddr) -> Result<Attempt, Duration> {
        let now = Instant::now();
        let username = (username.len() <= MAX_TRACKED_USERNAME_LEN).then(|| username.to_owned());
        let wait = [
            username
                .as_ref()
                .and_then(|u| self.per_username.retry_after(u, now)),
            self.per_address.retry_after(&address, now),
        ]
        .into_iter()
        .flatten()
        .max();
        if let Some(wait) = wait {
            return Err(wait);
        }
        if let Some(username) = &username {
            self.per_username.count(username, now);
        }
        self.per_address.count(&address, now);
        Ok(Attempt {
            throttle: Arc::clone(self),
            username,
            address,
        })
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

    #[test]
    fn the_attempt_after_the_limit_waits_for_the_window() {
        let throttle = Arc::new(LoginThrottle::new(2, 0, Duration::from_secs(60)));
        let _ = throttle.begin("bob", HOME).unwrap();
        let _ = throttle.begin("bob", HOME).unwrap();
        let wait = throttle.begin("bob", HOME).err().unwrap();
        assert!(wait > Duration::from_secs(59) && wait <= Duration::from_secs(60));
        assert!(throttle.begin("carol", HOME).is_ok());
    }

    #[test]
    fn success_clears_the_username() {
        let throttle = Arc::new(LoginThrottle::new(2, 0, Duration::from_secs(60)));
        let _ = throttle.begin("bob", HOME).unwrap();
        throttle.begin("bob", HOME).unwrap().succeeded();
        assert!(throttle.begin("bob", HOME).is_ok());
    }

    #[test]
    fn zero_turns_a_limit_off() {
        let throttle = Arc::new(LoginThrottle::new(0, 0, Duration::from_secs(60)));
        for _ in 0..100 {
            let _ = throttle.begin("bob", HOME).unwrap();
        }
    }

    #[test]
    fn the_address_limit_spans_usernames() {
        let throttle = Arc::new(LoginThrottle::new(0, 3, Duration::from_secs(60)));
        for name in ["a", "b", "c"] {
            let _ = throttle.begin(name, HOME).unwrap();
        }
        assert!(throttle.begin("d", HOME).is_err());
    }
}
