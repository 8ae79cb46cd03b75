//! Login throttling: failed logins counted per username and per client address in a fixed
//! window, in the database, so that neither a restart, nor a flood of made-up names, nor
//! a second replica lifts a limit.
//!
//! An attempt is counted before its password is checked (check and count in one atomic
//! statement) and given back if the password was right, so parallel guesses cannot all
//! slip under the limit.

use std::{
    net::{IpAddr, Ipv6Addr},
    time::{Duration, SystemTime},
};

use crate::store::{Store, millis, unix_millis};

/// Usernames longer than this cannot exist, so they are counted per address only.
const MAX_TRACKED_USERNAME_LEN: usize = 128;

/// Counts failed logins per username and per client address; a limit of 0 is off.
pub struct LoginThrottle {
    per_username: u32,
    per_address: u32,
    window: Duration,
}

/// The keys one login attempt is counted under.
struct Keys {
    username: Option<String>,
    address: String,
}

impl Keys {
    fn new(username: &str, address: IpAddr) -> Self {
        Self {
            username: (username.len() <= MAX_TRACKED_USERNAME_LEN)
                .then(|| format!("user:{username}")),
            address: format!("addr:{}", address_key(address)),
        }
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

/// An attempt counted against its keys: a failure unless [`Attempt::succeeded`] says
/// otherwise.
#[must_use = "a counted attempt stays a failure unless told it succeeded"]
pub struct Attempt {
    keys: Keys,
    counted_username: bool,
    counted_address: bool,
}

impl LoginThrottle {
    pub fn new(max_per_username: u32, max_per_address: u32, window: Duration) -> Self {
        Self {
            per_username: max_per_username,
            per_address: max_per_address,
            window,
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
        username: &str,
        address: IpAddr,
    ) -> Result<(), Refusal> {
        let keys = Keys::new(username, address);
        let now = unix_millis(SystemTime::now());
        let mut ends = None;
        for (key, max) in self.keyed(&keys) {
            let exhausted = store
                .attempts_exhausted(key, max, self.window_millis(), now)
                .await?;
            ends = ends.max(exhausted);
        }
        match ends {
            Some(ends_at) => Err(Refusal::Throttled(self.retry_after(ends_at, now))),
            None => Ok(()),
        }
    }

    /// Counts an attempt against the username and the address, or refuses it when either
    /// limit is used up (then nothing stays counted).
    pub async fn count(
        &self,
        store: &Store,
        username: &str,
        address: IpAddr,
    ) -> Result<Attempt, Refusal> {
        let now = unix_millis(SystemTime::now());
        let mut attempt = Attempt {
            keys: Keys::new(username, address),
            counted_username: false,
            counted_address: false,
        };
        let window = self.window_millis();
        if let Some(key) = attempt.keys.username.as_deref()
            && self.per_username > 0
        {
            if let Some(ends_at) = store
                .count_attempt(key, self.per_username, window, now)
                .await?
            {
                return Err(Refusal::Throttled(self.retry_after(ends_at, now)));
            }
            attempt.counted_username = true;
        }
        if self.per_address > 0 {
            let counted = store
                .count_attempt(&attempt.keys.address, self.per_address, window, now)
                .await;
            let refusal = match counted {
                Ok(None) => {
                    attempt.counted_address = true;
                    return Ok(attempt);
                }
                Ok(Some(ends_at)) => Refusal::Throttled(self.retry_after(ends_at, now)),
                Err(err) => Refusal::Database(err),
            };
            self.give_back(store, attempt).await;
            return Err(refusal);
        }
        Ok(attempt)
    }

    /// A right password: the username's failures are forgotten, and the attempt no
    /// longer counts against the address.
    pub async fn succeeded(&self, store: &Store, attempt: Attempt) -> Result<(), sqlx::Error> {
        if let Some(key) = attempt.keys.username.as_deref() {
            store.forget_attempts(key).await?;
        }
        if attempt.counted_address {
            store.uncount_attempt(&attempt.keys.address).await?;
        }
        Ok(())
    }

    /// Takes back what `attempt` counted; a failure to do so only errs on the safe side.
    pub async fn give_back(&self, store: &Store, attempt: Attempt) {
        let keys = [
            (attempt.counted_username, attempt.keys.username.as_deref()),
            (attempt.counted_address, Some(attempt.keys.address.as_str())),
        ];
        for (counted, key) in keys {
            if let (true, Some(key)) = (counted, key)
                && let Err(err) = store.uncount_attempt(key).await
            {
                tracing::warn!(error = %err, "could not take back a counted login attempt");
            }
        }
    }

    fn keyed<'k>(&self, keys: &'k Keys) -> impl Iterator<Item = (&'k str, u32)> {
        let username = keys.username.as_deref().map(|key| (key, self.per_username));
        let address = Some((keys.address.as_str(), self.per_address));
        username
            .into_iter()
            .chain(address)
            .filter(|&(_, max)| max > 0)
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
        let keys = Keys::new(&"x".repeat(129), IpAddr::from([127, 0, 0, 1]));
        assert!(keys.username.is_none());
        assert_eq!(keys.address, "addr:127.0.0.1");
    }
}
