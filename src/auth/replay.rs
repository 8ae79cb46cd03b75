//! The DPoP proofs accepted lately (RFC 9449, section 11.1), so that none is accepted
//! twice: a bounded, expiring set, in memory, per process.

use std::{
    collections::{HashSet, VecDeque},
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use sha2::{Digest, Sha256};

/// The proofs accepted lately, by key and `jti`, each kept for `ttl` after it was first
/// seen. In memory, per process: see the README on replicas.
pub(super) struct ReplayCache {
    ttl: Duration,
    capacity: usize,
    state: Mutex<ReplayState>,
}

#[derive(Default)]
struct ReplayState {
    /// Truncated SHA-256 of the key's thumbprint and the `jti`: a fixed size per entry,
    /// however long the `jti`.
    keys: HashSet<[u8; 16]>,
    /// The same keys in the order they were seen, which is also the order they expire in.
    order: VecDeque<(Instant, [u8; 16])>,
}

impl ReplayCache {
    pub(super) fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity,
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReplayState> {
        // Every change leaves the two collections consistent before it can panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Remembers the proof; `false` when it was seen within its lifetime.
    pub(super) fn insert_new(&self, thumbprint: &str, jti: &str) -> bool {
        let mut hasher = Sha256::new();
        hasher.update(thumbprint.as_bytes());
        hasher.update([0]);
        hasher.update(jti.as_bytes());
        let digest = hasher.finalize();
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);

        let now = Instant::now();
        let mut state = self.lock();
        Self::expire(&mut state, now, self.ttl);
        if state.keys.contains(&key) {
            return false;
        }
        while state.order.len() >= self.capacity {
            if let Some((_, oldest)) = state.order.pop_front() {
                state.keys.remove(&oldest);
            }
        }
        state.keys.insert(key);
        state.order.push_back((now, key));
        true
    }

    pub(super) fn prune(&self) {
        let mut state = self.lock();
        Self::expire(&mut state, Instant::now(), self.ttl);
    }

    fn expire(state: &mut ReplayState, now: Instant, ttl: Duration) {
        while let Some(&(seen, key)) = state.order.front() {
            if now.duration_since(seen) < ttl {
                break;
            }
            state.order.pop_front();
            state.keys.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_is_refused_again_within_its_lifetime_and_the_cache_stays_bounded() {
        let cache = ReplayCache::new(Duration::from_secs(60), 3);
        assert!(cache.insert_new("key", "a"));
        assert!(!cache.insert_new("key", "a"));
        // The same jti of another key is another proof.
        assert!(cache.insert_new("other", "a"));
        assert!(cache.insert_new("key", "b"));
        assert!(cache.insert_new("key", "c"));
        let state = cache.lock();
        assert_eq!(state.order.len(), 3);
        assert_eq!(state.keys.len(), 3);
    }

    #[test]
    fn remembered_proofs_expire() {
        let cache = ReplayCache::new(Duration::ZERO, 10);
        assert!(cache.insert_new("key", "a"));
        assert!(cache.insert_new("key", "a"));
    }
}
