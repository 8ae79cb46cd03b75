//! Noticing what other processes (the CLI) commit to a SQLite database: SQLite's record
//! of its last commit, read by every cache lookup, or file events where it cannot be
//! read; the change counter read after them; and the periodic checkpoint.

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use sqlx::{Row, SqlitePool};
use tokio::sync::Notify;

use super::{
    changes::Changes,
    sqlite::{database_folder, under_write_lock},
    wal_index::WalIndex,
};

/// How often the change counter is read when nothing woke the watcher (a lookup that
/// found a commit it has not read, a file event): a backstop, and the only check where
/// neither the WAL index nor file events are available.
const RECHECK: Duration = Duration::from_millis(250);

/// How often the server moves the write-ahead log into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Reads the change counter (bumped by triggers on every revocation and user change,
/// whoever commits it) whenever something may have been committed, and moves `changes`
/// on when it has moved.
///
/// Exact: every cache lookup compares SQLite's record of the last commit (see
/// [`WalIndex`]) with the one this watcher last read the counter after, so a change
/// counts from the first request after its commit; a lookup that finds them apart wakes
/// the watcher. Where that record cannot be read, file events in the database's folder
/// take its place: a thread of its own reads them, and every lookup asks the kernel
/// whether some are queued.
pub fn watch_changes(
    reader: SqlitePool,
    pool: SqlitePool,
    changes: Arc<Changes>,
) -> tokio::task::JoinHandle<()> {
    let wake = Arc::new(Notify::new());
    let running = Arc::new(AtomicBool::new(true));
    let folder = database_folder(&pool);
    let checkpointer = reader.clone();
    let watch = async move {
        let _stop = StopOnDrop(running.clone());
        let index = match &folder {
            Some(_) => open_index(&reader).await,
            None => None,
        };
        let read_at = Arc::new(AtomicU64::new(0));
        if let Some(index) = &index {
            let (index, read_at, wake) = (index.clone(), read_at.clone(), wake.clone());
            changes.set_probe(move || {
                let committed_since = index.fingerprint() != read_at.load(Ordering::Acquire);
                if committed_since {
                    wake.notify_one();
                }
                committed_since
            });
        }
        // News whose file events have all been read: only those can be settled by a
        // check that starts now (see `watch_folder`).
        let drained = Arc::new(AtomicU64::new(changes.news_seen()));
        // Without the index, file events in the folder are the check. With it they are
        // not watched at all: every page a commit writes is an event, and waking for each
        // cost a busy writer a sixth of its rate, where a lookup that finds a commit it
        // has not read wakes the watcher anyway.
        if index.is_none()
            && let Some(folder) = &folder
            && let Err(err) = watch_folder(folder, &changes, drained.clone(), wake.clone(), running)
        {
            tracing::warn!(
                error = %err,
                "cannot watch the database folder; changes made by other processes count within {RECHECK:?}"
            );
        }
        let mut last = None;
        loop {
            let seen = drained.load(Ordering::Acquire);
            let read = match &index {
                Some(index) => read_after_commits(index, &changes, &read_at, &mut last).await,
                // `pool` is the writer: the check takes the write lock, so it waits its
                // turn among this process's writers instead of in SQLite's busy handler.
                None => check(&pool, &changes, &mut last).await,
            };
            if read {
                changes.settle(seen);
            }
            let wait = if read {
                RECHECK
            } else {
                Duration::from_millis(100)
            };
            tokio::select! {
                () = wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    };
    let checkpoint = async move {
        loop {
            tokio::time::sleep(CHECKPOINT_EVERY).await;
            // Passive: it copies what no reader still needs and waits for nobody.
            if let Err(err) = sqlx::query("pragma wal_checkpoint(passive)")
                .execute(&checkpointer)
                .await
            {
                tracing::debug!(error = %err, "checkpoint failed; trying again later");
            }
        }
    };
    tokio::spawn(async move {
        tokio::join!(watch, checkpoint);
    })
}

/// The WAL index of the database `reader` reads, or `None` (said once: file events then
/// take its place) where it cannot be mapped.
async fn open_index(reader: &SqlitePool) -> Option<Arc<WalIndex>> {
    match WalIndex::open(reader).await {
        Ok(index) => Some(Arc::new(index)),
        Err(err) => {
            tracing::info!(error = %err, "cannot read SQLite's WAL index; watching file events instead");
            None
        }
    }
}

/// Reads the counter when something was committed since it was last read, bumps
/// `changes` when it moved, and records which commit it was read after; `true` when it
/// could be read.
///
/// The commit is noted before the read, so the read sees it or a later one: a lookup
/// that finds the same commit can trust the generation the read left.
async fn read_after_commits(
    index: &WalIndex,
    changes: &Changes,
    read_at: &AtomicU64,
    last: &mut Option<i64>,
) -> bool {
    let at = index.fingerprint();
    if last.is_some() && at == read_at.load(Ordering::Acquire) {
        return true;
    }
    // On the index's own connection: never waiting behind lookups for the pool's.
    let value = index
        .read_i64("select value from change_counter where id = 1")
        .await;
    match value {
        Ok(value) => {
            if last.is_some_and(|last| last != value) {
                changes.bump();
            }
            *last = Some(value);
            read_at.store(at, Ordering::Release);
            true
        }
        Err(err) => {
            tracing::debug!(error = %err, "cannot read the change counter");
            false
        }
    }
}

/// Reads the counter and bumps `changes` when it moved; `true` when it could be read.
///
/// A commit's file event comes when its log frames are written, a moment before readers
/// can see it. The read therefore waits for the write lock first: a writer whose frames
/// were seen holds it until its commit is visible. Taking the lock writes nothing.
async fn check(pool: &SqlitePool, changes: &Changes, last: &mut Option<i64>) -> bool {
    let read = under_write_lock(
        pool,
        "begin immediate; select value from change_counter where id = 1; rollback",
    );
    let value = read.await.and_then(|rows| {
        rows.first()
            .ok_or(sqlx::Error::RowNotFound)?
            .try_get::<i64, _>(0)
    });
    match value {
        Ok(value) => {
            if last.is_some_and(|last| last != value) {
                changes.bump();
            }
            *last = Some(value);
            true
        }
        Err(err) => {
            tracing::debug!(error = %err, "cannot read the change counter");
            false
        }
    }
}

/// Tells the event thread to end when the watcher does.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

/// Starts a thread that wakes the watcher on every write in `folder`, until `running` is
/// false (it looks twice a second). Every write is news, and every cache lookup asks the
/// kernel whether events are queued: the exact check where the WAL index cannot be read.
#[cfg(target_os = "linux")]
fn watch_folder(
    folder: &Path,
    changes: &Arc<Changes>,
    drained: Arc<AtomicU64>,
    wake: Arc<Notify>,
    running: Arc<AtomicBool>,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;

    use inotify::{Inotify, WatchMask};

    let inotify = Inotify::init()?;
    inotify.watches().add(
        folder,
        WatchMask::MODIFY
            | WatchMask::CLOSE_WRITE
            | WatchMask::CREATE
            | WatchMask::DELETE
            | WatchMask::MOVED_TO,
    )?;
    let inotify = Arc::new(inotify);
    let probe = inotify.clone();
    changes.set_probe(move || readable(probe.as_raw_fd(), 0));
    let changes = changes.clone();
    std::thread::Builder::new()
        .name("sqlite-changes".into())
        .spawn(move || {
            let fd = inotify.as_raw_fd();
            let mut buffer = [0u8; 4096];
            while running.load(Ordering::Relaxed) {
                if !readable(fd, 500) {
                    continue;
                }
                let count = changes.news();
                // The descriptor is non-blocking: read until nothing is left.
                // SAFETY: reads into a buffer of the length given, from a descriptor the
                // Arc keeps open.
                while unsafe { libc::read(fd, buffer.as_mut_ptr().cast(), buffer.len()) } > 0 {}
                // Only now may a check settle this news: one that began before the read
                // could settle it and miss a write whose events this read took away.
                drained.store(count, Ordering::Release);
                wake.notify_one();
            }
        })?;
    Ok(())
}

/// Whether `fd` has data to read, waiting up to `timeout_ms` for it.
#[cfg(target_os = "linux")]
fn readable(fd: std::os::fd::RawFd, timeout_ms: libc::c_int) -> bool {
    let mut ready = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll(2) on one descriptor, with a struct that lives across the call.
    unsafe { libc::poll(&mut ready, 1, timeout_ms) > 0 }
}

#[cfg(not(target_os = "linux"))]
fn watch_folder(
    _folder: &Path,
    _changes: &Arc<Changes>,
    _drained: Arc<AtomicU64>,
    _wake: Arc<Notify>,
    _running: Arc<AtomicBool>,
) -> std::io::Result<()> {
    Err(std::io::Error::other(
        "file events are watched on Linux only",
    ))
}
