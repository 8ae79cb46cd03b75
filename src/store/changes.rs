//! What this process knows about changes to users and tokens made anywhere: a generation
//! that moves on every such change, and whether it can be trusted right now.
//!
//! This process moves it itself, right after committing a revocation; a watcher per
//! backend moves it when another process (the CLI, another replica) commits one. A
//! watcher that hears of possible news first marks it ([`Changes::news`]), then reads
//! what changed and settles ([`Changes::settle`]); in between, and while it cannot hear
//! news at all, nothing read earlier may be reused.

use std::{
    fmt,
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    },
};

/// Answers "is there news the watcher has not picked up yet?" without waiting for it.
type Probe = Box<dyn Fn() -> bool + Send + Sync>;

pub struct Changes {
    generation: AtomicU64,
    /// Moves on every piece of possible news.
    news: AtomicU64,
    /// The `news` count the watcher has caught up with.
    settled: AtomicU64,
    probe: OnceLock<Probe>,
}

impl fmt::Debug for Changes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Changes")
            .field("generation", &self.generation)
            .field("news", &self.news)
            .field("settled", &self.settled)
            .finish_non_exhaustive()
    }
}

impl Default for Changes {
    fn default() -> Self {
        Self {
            generation: AtomicU64::new(0),
            // Unsettled until a watcher runs: the CLI, or a test without a server,
            // caches nothing.
            news: AtomicU64::new(1),
            settled: AtomicU64::new(0),
            probe: OnceLock::new(),
        }
    }
}

impl Changes {
    /// The current generation, when earlier reads can be trusted; `None` while a
    /// change may have happened that has not been counted yet.
    pub fn generation(&self) -> Option<u64> {
        let news = self.news.load(Ordering::Acquire);
        if self.settled.load(Ordering::Acquire) != news {
            return None;
        }
        // News the watcher has not read yet (a commit it has not seen) counts too.
        if self.probe.get().is_some_and(|pending| pending()) {
            return None;
        }
        // Read last: a watcher moves the generation before it settles the news it read,
        // so a settled state seen above comes with the generation it left.
        Some(self.generation.load(Ordering::Acquire))
    }

    /// Installs the check for news not yet picked up (once; later calls are ignored).
    pub(super) fn set_probe(&self, probe: impl Fn() -> bool + Send + Sync + 'static) {
        let _ = self.probe.set(Box::new(probe));
    }

    /// Something changed: everything read before now is stale.
    pub fn bump(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// There may be news: trust nothing until the watcher has read it. Returns the
    /// count to settle with.
    pub(super) fn news(&self) -> u64 {
        self.news.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The count of news so far, taken before reading what changed.
    pub(super) fn news_seen(&self) -> u64 {
        self.news.load(Ordering::Acquire)
    }

    /// Settles every news so far, as a watcher would: for unit tests elsewhere.
    #[cfg(test)]
    pub fn settle_for_tests(&self) {
        self.settle(self.news_seen());
    }

    /// The watcher has read every change up to news count `seen`; if no news came since,
    /// earlier reads can be trusted again.
    pub(super) fn settle(&self, seen: u64) {
        self.settled.fetch_max(seen, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_trusted_until_a_watcher_settles() {
        let changes = Changes::default();
        assert_eq!(changes.generation(), None);
        changes.settle(changes.news_seen());
        let before = changes.generation().unwrap();
        changes.bump();
        assert_eq!(changes.generation(), Some(before + 1));
    }

    #[test]
    fn news_during_a_check_keeps_the_cache_distrusted() {
        let changes = Changes::default();
        let seen = changes.news_seen();
        changes.news(); // arrives while the watcher reads
        changes.settle(seen);
        assert_eq!(changes.generation(), None);
        changes.settle(changes.news_seen());
        assert!(changes.generation().is_some());
    }
}
