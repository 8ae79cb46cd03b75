//! Login throttling: failed logins counted per username (or per client id, for client
//! authentication) and per client address in a fixed window, in the database, so that
//! neither a restart, nor a flood of made-up names, nor a second replica lifts a limit.
//!
//! An attempt is counted as in flight before its password is checked (check and count in
//! one atomic statement), then recorded as a failure or let go. So parallel guesses cannot
//! all slip under the limit, and parallel correct logins are never refused: an attempt
//! that finds the limit filled by attempts still in flight waits for their verdicts.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use crate::store::{Counted, Store, millis, unix_millis};

/// Names longer than this cannot exist, so they are counted per address only.
const MAX_TRACKED_NAME_LEN: usize = 128;

/// How often an attempt that waits for others' verdicts looks again, and for how long.
const BUSY_POLL: Duration = Duration::from_millis(20);
const BUSY_WAIT_LIMIT: Duration = Duration::from_secs(5);

/// How long [`LoginThrottle::check_lately`] trusts a key it found clear of failures
/// without reading it again, unless this process records a failure first: the bound
/// the contract gives replicas to see each other's changes.
const CLEAR_REUSE: Duration = Duration::from_secs(1);

/// At most this many keys found clear are remembered.
const MAX_REMEMBERED_CLEAR: usize = 10_000;

/// Counts failed logins per name and per client address; a limit of 0 is off.
pub struct LoginThrottle {
    per_name: u32,
    per_address: u32,
    window: Duration,
    /// Keys found clear, with the [`LoginThrottle::failures_recorded`] count and the
    /// time they were read at.
    clear: Mutex<HashMap<String, (u64, Instant)>>,
    /// Moves whenever this process records a failure, against any key: whatever was
    /// found clear before is read again.
    failures_recorded: AtomicU64,
}

/// Who an attempt claims to be.
#[derive(Debug, Clone, Copy)]
pub enum Subject<'a> {
    /// A user logging in with a password.
    User(&'a str),
    /// A registered client authenticating with its secret.
    Client(&'a str),
    /// A user logging in from a device trusted for them: counted on its own, never
    /// against the username.
    Device(i64),
    /// Only the address counts: a password that can never be right (over the length
    /// limit) says nothing about the username, and must not lock it.
    AddressOnly,
}

/// The keys one attempt is counted under.
struct Keys {
    name: Option<String>,
    address: String,
}

impl Keys {
    fn new(subject: Subject<'_>, address: IpAddr) -> Self {
        Self {
            name: name_key(subject),
            address: format!("addr:{}", address_key(address)),
        }
    }
}

/// The key a subject's own failures are counted under, if any.
fn name_key(subject: Subject<'_>) -> Option<String> {
    let tracked = |name: &str| name.len() <= MAX_TRACKED_NAME_LEN;
    match subject {
        Subject::User(name) => tracked(name).then(|| format!("user:{name}")),
        Subject::Client(id) => tracked(id).then(|| format!("client:{id}")),
        Subject::Device(id) => Some(format!("device:{id}")),
        Subject::AddressOnly => None,
    }
}

/// An IPv6 client usually holds a whole /64, so that is what one address counts as.
fn address_key(address: IpAddr) -> String {
    match address {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let [a, b, c, d, ..] = v6.segments();
                format!("{}/64", Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0))
            }
        },
    }
}

/// Why an attempt may not go on.
#[derive(Debug)]
pub enum Refusal {
    /// A limit is used up; try again after this long.
    Throttled(Duration),
    Database(sqlx::Error),
}

impl From<sqlx::Error> for Refusal {
    fn from(err: sqlx::Error) -> Self {
        Self::Database(err)
    }
}

/// An attempt counted as in flight against its keys, until [`LoginThrottle::failed`] or
/// [`LoginThrottle::succeeded`] gives its verdict.
#[must_use = "an attempt in flight holds a place under the limit until its verdict"]
pub struct Attempt {
    /// The keys it is counted under.
    counted: Vec<String>,
    /// The one whose failures a success forgets (the name's, never the address's).
    name: Option<String>,
}

impl LoginThrottle {
    pub fn new(max_per_name: u32, max_per_address: u32, window: Duration) -> Self {
        Self {
            per_name: max_per_name,
            per_address: max_per_address,
            window,
            clear: Mutex::default(),
            failures_recorded: AtomicU64::new(0),
        }
    }

    fn window_millis(&self) -> i64 {
        millis(self.window)
    }

    fn retry_after(&self, ends_at: i64, now: i64) -> Duration {
        Duration::from_millis(u64::try_from(ends_at.saturating_sub(now)).unwrap_or(0))
            .max(Duration::from_millis(1))
    }

    /// Refuses early, without counting, when a limit is already used up. Whether the
    /// user exists plays no part, so a 429 reveals nothing about it.
    pub async fn check(
        &self,
        store: &Store,
        subject: Subject<'_>,
        address: IpAddr,
    ) -> Result<(), Refusal> {
        self.check_keys(store, subject, address, false).await
    }

    /// As [`LoginThrottle::check`], but a key found clear less than [`CLEAR_REUSE`] ago
    /// is not read again, unless this process has recorded a failure since. For client
    /// authentication, whose right secret is no guess: failures are still counted
    /// exactly (by [`LoginThrottle::count`]), and a limit filled on this replica holds
    /// from the next attempt, on another within the second.
    pub async fn check_lately(
        &self,
        store: &Store,
        subject: Subject<'_>,
        address: IpAddr,
    ) -> Result<(), Refusal> {
        self.check_keys(store, subject, address, true).await
    }

    /// Whether every key of the attempt was found clear lately (see
    /// [`LoginThrottle::check_lately`]), so that checking it would read nothing.
    pub fn lately_clear(&self, subject: Subject<'_>, address: IpAddr) -> bool {
        let keys = Keys::new(subject, address);
        self.keyed(&keys).all(|(key, _)| self.known_clear(key))
    }

    async fn check_keys(
        &self,
        store: &Store,
        subject: Subject<'_>,
        address: IpAddr,
        reuse_clear: bool,
    ) -> Result<(), Refusal> {
        let keys = Keys::new(subject, address);
        let now = unix_millis(SystemTime::now());
        let mut ends = None;
        for (key, max) in self.keyed(&keys) {
            if reuse_clear && self.known_clear(key) {
                continue;
            }
            let recorded = self.failures_recorded.load(Ordering::Acquire);
            let exhausted = store
                .attempts_exhausted(key, max, self.window_millis(), now)
                .await?;
            if reuse_clear && exhausted.is_none() {
                self.remember_clear(key, recorded);
            }
            ends = ends.max(exhausted);
        }
        match ends {
            Some(ends_at) => Err(Refusal::Throttled(self.retry_after(ends_at, now))),
            None => Ok(()),
        }
    }

    /// Whether the subject's own failures (not the address's) fill its limit.
    pub async fn name_exhausted(
        &self,
        store: &Store,
        subject: Subject<'_>,
    ) -> Result<bool, sqlx::Error> {
        let Some(key) = name_key(subject).filter(|_| self.per_name > 0) else {
            return Ok(false);
        };
        let now = unix_millis(SystemTime::now());
        Ok(store
            .attempts_exhausted(&key, self.per_name, self.window_millis(), now)
            .await?
            .is_some())
    }

    /// Counts an attempt as in flight against the name and the address, or refuses it
    /// when the failures recorded fill either limit (then nothing stays counted). While
    /// attempts in flight fill a limit, waits for their verdicts.
    pub async fn count(
        &self,
        store: &Store,
        subject: Subject<'_>,
        address: IpAddr,
    ) -> Result<Attempt, Refusal> {
        let keys = Keys::new(subject, address);
        let started = Instant::now();
        loop {
            let now = unix_millis(SystemTime::now());
            let mut attempt = Attempt {
                counted: Vec::with_capacity(2),
                name: keys.name.clone(),
            };
            let mut outcome = Counted::InFlight;
            for (key, max) in self.keyed(&keys) {
                let counted = store
                    .count_attempt(key, max, self.window_millis(), now)
                    .await;
                match counted {
                    Ok(Counted::InFlight) => attempt.counted.push(key.to_owned()),
                    Ok(other) => {
                        outcome = other;
                        break;
                    }
                    Err(err) => {
                        self.let_go(store, attempt).await;
                        return Err(Refusal::Database(err));
                    }
                }
            }
            match outcome {
                Counted::InFlight => return Ok(attempt),
                Counted::LimitReached(ends_at) => {
                    self.let_go(store, attempt).await;
                    return Err(Refusal::Throttled(self.retry_after(ends_at, now)));
                }
                Counted::Busy => {
                    self.let_go(store, attempt).await;
                    if started.elapsed() >= BUSY_WAIT_LIMIT {
                        return Err(Refusal::Throttled(Duration::from_secs(1)));
                    }
                    tokio::time::sleep(BUSY_POLL).await;
                }
            }
        }
    }

    /// A wrong password (or secret, or one-time code): recorded against every key.
    pub async fn failed(&self, store: &Store, attempt: Attempt) -> Result<(), sqlx::Error> {
        let mut result = Ok(());
        for key in &attempt.counted {
            result = store.attempt_failed(key).await;
            if result.is_err() {
                break;
            }
        }
        // After the writes: a check that read before them remembers nothing.
        self.failures_recorded.fetch_add(1, Ordering::AcqRel);
        result
    }

    fn remembered_clear(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, Instant)>> {
        // Entries are replaced whole; a panic elsewhere cannot leave one half-written.
        self.clear.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `key` was found clear lately, with no failure recorded here since.
    fn known_clear(&self, key: &str) -> bool {
        let recorded = self.failures_recorded.load(Ordering::Acquire);
        self.remembered_clear()
            .get(key)
            .is_some_and(|&(at, read)| at == recorded && read.elapsed() < CLEAR_REUSE)
    }

    /// Remembers `key` as clear, as read when `recorded` failures had been recorded here,
    /// unless one has been recorded since.
    fn remember_clear(&self, key: &str, recorded: u64) {
        let mut clear = self.remembered_clear();
        if self.failures_recorded.load(Ordering::Acquire) != recorded {
            return;
        }
        if clear.len() >= MAX_REMEMBERED_CLEAR {
            clear.clear();
        }
        clear.insert(key.to_owned(), (recorded, Instant::now()));
    }

    /// A right password: the name's failures are forgotten, and the attempt no longer
    /// counts against the address.
    pub async fn succeeded(&self, store: &Store, attempt: Attempt) -> Result<(), sqlx::Error> {
        for key in &attempt.counted {
            let forget = attempt.name.as_ref() == Some(key);
            store.attempt_succeeded(key, forget).await?;
        }
        Ok(())
    }

    /// Takes the attempt out of flight without a verdict (the check could not finish); a
    /// failure to do so only errs on the safe side until the attempt goes stale.
    pub async fn let_go(&self, store: &Store, attempt: Attempt) {
        for key in &attempt.counted {
            if let Err(err) = store.attempt_succeeded(key, false).await {
                tracing::warn!(error = %err, "could not take back a counted login attempt");
            }
        }
    }

    fn keyed<'k>(&self, keys: &'k Keys) -> impl Iterator<Item = (&'k str, u32)> {
        let name = keys.name.as_deref().map(|key| (key, self.per_name));
        let address = Some((keys.address.as_str(), self.per_address));
        name.into_iter().chain(address).filter(|&(_, max)| max > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_client_counts_as_its_slash_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(other));
        assert_eq!(address_key(a), "2001:db8:1:2::/64");
    }

    #[test]
    fn an_ipv4_client_counts_as_itself_however_it_is_written() {
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(address_key(mapped), "192.0.2.7");
    }

    #[test]
    fn giant_usernames_are_counted_by_address_only() {
        let keys = Keys::new(
            Subject::User(&"x".repeat(129)),
            IpAddr::from([127, 0, 0, 1]),
        );
        assert!(keys.name.is_none());
        assert_eq!(keys.address, "addr:127.0.0.1");
    }
}
