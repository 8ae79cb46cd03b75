//! Recently checked access tokens, so that a client calling again and again does not cost
//! a database query per request.
//!
//! Every entry remembers the change generation (see [`Changes`]) it was read under and is
//! used only while that generation is current, so a revocation, a disabled user or a
//! changed scope counts from the next request, wherever it was made. An answer read
//! while a change happened is not remembered at all. [`FRESHNESS`] bounds an entry's age
//! in any case.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use prometheus_client::metrics::counter::Counter;

use super::token::{DigestMap, TokenDigest};
use crate::{
    metrics::Metrics,
    store::{Changes, LiveToken},
};

/// How long a database answer about a token is reused at most.
const FRESHNESS: Duration = Duration::from_secs(1);

/// At most this many tokens are remembered, so memory stays bounded however many clients
/// there are.
const CAPACITY: usize = 10_000;

struct Entry {
    token: Arc<LiveToken>,
    generation: u64,
    checked: Instant,
}

impl Entry {
    fn is_fresh(&self) -> bool {
        self.checked.elapsed() < FRESHNESS
    }
}

pub struct TokenCache {
    entries: Mutex<DigestMap<Entry>>,
    changes: Arc<Changes>,
    hits: Counter,
    misses: Counter,
}

/// How often the cache answered, and how often the database had to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
}

/// Taken before reading a token from the database; see [`TokenCache::insert`].
#[derive(Clone, Copy)]
pub struct ReadStarted(Option<u64>);

impl TokenCache {
    /// A cache that counts its hits and misses in `metrics`.
    pub fn new(changes: Arc<Changes>, metrics: &Metrics) -> Self {
        Self {
            entries: Mutex::default(),
            changes,
            hits: metrics.token_cache_hits.clone(),
            misses: metrics.token_cache_misses.clone(),
        }
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.get(),
            misses: self.misses.get(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DigestMap<Entry>> {
        // Entries are replaced whole; a panic elsewhere cannot leave one half-written.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The remembered token, if nothing changed since it was read, it was read less than
    /// [`FRESHNESS`] ago, and it has not expired since (`now_millis`: Unix ms).
    pub fn get(&self, digest: &TokenDigest, now_millis: i64) -> Option<Arc<LiveToken>> {
        let found = self.peek(digest, now_millis);
        if found.is_some() {
            self.hits.inc();
        } else {
            self.misses.inc();
        }
        found
    }

    /// As [`TokenCache::get`], but counts nothing: a caller that uses the answer counts
    /// it with [`TokenCache::hit`]; one that does not asks `get` next.
    pub fn peek(&self, digest: &TokenDigest, now_millis: i64) -> Option<Arc<LiveToken>> {
        let generation = self.changes.generation()?;
        let entries = self.lock();
        let entry = entries.get(digest)?;
        (entry.generation == generation && entry.is_fresh() && entry.token.expires_at > now_millis)
            .then(|| entry.token.clone())
    }

    /// Counts a hit that [`TokenCache::peek`] found.
    pub fn hit(&self) {
        self.hits.inc();
    }

    /// Marks the start of a database read whose answer may be remembered.
    pub fn read_started(&self) -> ReadStarted {
        ReadStarted(self.changes.generation())
    }

    /// Remembers `token`, read since `started`, unless something changed in between: a
    /// revocation committed while the read was in flight must not be undone here.
    pub fn insert(&self, digest: TokenDigest, token: Arc<LiveToken>, started: ReadStarted) {
        let Some(generation) = started.0 else {
            return;
        };
        let mut entries = self.lock();
        if self.changes.generation() != Some(generation) {
            return;
        }
        if entries.len() >= CAPACITY {
            entries.retain(|_, e| e.generation == generation && e.is_fresh());
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(
            digest,
            Entry {
                token,
                generation,
                checked: Instant::now(),
            },
        );
    }

    /// Forgets entries that can no longer be used.
    pub fn prune(&self) {
        let generation = self.changes.generation();
        self.lock()
            .retain(|_, e| Some(e.generation) == generation && e.is_fresh());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{scope::Scopes, users::User};

    fn live_token() -> Arc<LiveToken> {
        Arc::new(LiveToken {
            user: User {
                id: 1,
                username: "johndoe".into(),
                email: None,
                full_name: None,
                disabled: false,
                allowed_scopes: String::new(),
            },
            scopes: Scopes::default(),
            issued_at: 0,
            expires_at: i64::MAX,
            client_id: None,
            amr: None,
            dpop_jkt: None,
        })
    }

    fn settled_changes() -> Arc<Changes> {
        let changes = Arc::new(Changes::default());
        changes.settle_for_tests();
        changes
    }

    #[test]
    fn an_answer_read_while_a_revocation_committed_is_not_remembered() {
        let cache = TokenCache::new(settled_changes(), &Metrics::default());
        let digest = TokenDigest::of("token");

        let started = cache.read_started();
        cache.changes.bump(); // a revocation commits while the read is in flight
        cache.insert(digest, live_token(), started);

        assert!(cache.get(&digest, 0).is_none());
    }

    #[test]
    fn a_change_retires_what_was_remembered_before_it() {
        let cache = TokenCache::new(settled_changes(), &Metrics::default());
        let digest = TokenDigest::of("token");
        cache.insert(digest, live_token(), cache.read_started());
        assert!(cache.get(&digest, 0).is_some());

        cache.changes.bump();

        assert!(cache.get(&digest, 0).is_none());
        assert_eq!(cache.stats(), CacheStats { hits: 1, misses: 1 });
    }
}
