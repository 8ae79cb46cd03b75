//! Recently checked tokens, so that a client calling again and again does not cost a
//! SQLite query per request.
//!
//! Every commit to the database, by this process or another (the CLI disabling a user),
//! empties the cache, so answers are as fresh as a query's. [`FRESHNESS`] bounds an
//! entry's age in case a commit goes unnoticed.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use super::token::{LiveToken, TokenDigest};
use crate::db::CommitWatch;

/// How long a database answer about a token is reused.
const FRESHNESS: Duration = Duration::from_secs(1);

/// At most this many tokens are remembered, so memory stays bounded however many clients
/// there are.
const CAPACITY: usize = 10_000;

struct Entry {
    token: Arc<LiveToken>,
    checked: Instant,
}

impl Entry {
    fn is_fresh(&self) -> bool {
        self.checked.elapsed() < FRESHNESS
    }
}

pub struct TokenCache {
    entries: Mutex<HashMap<TokenDigest, Entry>>,
    commits: CommitWatch,
}

impl TokenCache {
    pub fn new(commits: CommitWatch) -> Self {
        Self {
            entries: Mutex::default(),
            commits,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TokenDigest, Entry>> {
        // Entries are replaced whole; a panic elsewhere cannot leave one half-written.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The remembered token, if nothing was committed since it was read, it was read less
    /// than [`FRESHNESS`] ago, and it has not expired since (`now_millis`: Unix ms).
    pub fn get(&self, digest: &TokenDigest, now_millis: i64) -> Option<Arc<LiveToken>> {
        let mut entries = self.lock();
        if self.commits.changed() {
            entries.clear();
            return None;
        }
        let entry = entries.get(digest)?;
        (entry.is_fresh() && entry.token.expires_at > now_millis).then(|| entry.token.clone())
    }

    pub fn insert(&self, digest: TokenDigest, token: Arc<LiveToken>) {
        let mut entries = self.lock();
        if entries.len() >= CAPACITY {
            entries.retain(|_, e| e.is_fresh());
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(
            digest,
            Entry {
                token,
                checked: Instant::now(),
            },
        );
    }

    pub fn remove(&self, digest: &TokenDigest) {
        self.lock().remove(digest);
    }

    /// Forgets entries too old to be used.
    pub fn prune(&self) {
        self.lock().retain(|_, e| e.is_fresh());
    }
}
