//! SQLite: a private file created on demand, WAL, the migrations in `migrations/`, and
//! noticing what other processes (the CLI) commit.

use std::{
    path::{Path, PathBuf},
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use log::LevelFilter;
use sqlx::{
    ConnectOptions, Connection, Row, SqlitePool,
    migrate::Migrator,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

use tokio::sync::Notify;

use super::{ConnectError, changes::Changes, wal_index::WalIndex};

/// The migrations in `./migrations`, compiled into the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// How often the change counter is read when nothing woke the watcher (a lookup that
/// found a commit it has not read, a file event): a backstop, and the only check where
/// neither the WAL index nor file events are available.
const RECHECK: Duration = Duration::from_millis(250);

/// The size the write-ahead log file is cut back to when the log starts over.
const WAL_SIZE_LIMIT: u64 = 64 * 1024 * 1024;

/// How often the server moves the write-ahead log into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

pub async fn connect(url: &str) -> Result<SqlitePool, ConnectError> {
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // WAL + NORMAL is durable across process crashes; only a power loss can drop the
        // last commits.
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true)
        // Under a write flood some reader always holds a snapshot, so the log cannot start
        // over and grows (hundreds of MB in seconds); once it does start over, this cuts
        // the file back instead of keeping its largest size until the server stops.
        .pragma("journal_size_limit", WAL_SIZE_LIMIT.to_string())
        // Queries bind their values, so their text holds no secret; it is still only
        // worth a line when one is slow.
        .log_statements(LevelFilter::Off);
    let path = options.get_filename().to_owned();
    // A typo in DATABASE_URL makes a new, empty database: say where, so it shows.
    if create_private_file(&options).map_err(|err| access_error(&path, err.into()))? {
        tracing::info!(
            path = %std::path::absolute(&path).unwrap_or_else(|_| path.clone()).display(),
            "created a new SQLite database file"
        );
    }
    make_private(&path);
    // The pool first: an in-memory database lives only while a connection holds it.
    let opened = async {
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.clone())
            .await?;
        migrate(&options).await?;
        Ok(pool)
    };
    opened.await.map_err(|err| access_error(&path, err))
}

/// SQLite says "unable to open database file" or "attempt to write a readonly database"
/// without a path, and the same when the folder (where its journal files go) is the
/// cause: name the file or the folder that cannot be written.
pub(super) fn access_error(path: &Path, err: sqlx::Error) -> ConnectError {
    let denied = match &err {
        sqlx::Error::Io(io) => io.kind() == std::io::ErrorKind::PermissionDenied,
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|code| code.parse::<i32>().ok())
            // SQLITE_PERM, SQLITE_READONLY, SQLITE_CANTOPEN and their extended codes.
            .is_some_and(|code| matches!(code & 0xff, 3 | 8 | 14)),
        _ => false,
    };
    let missing = matches!(&err, sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::NotFound);
    if !(denied || missing) || is_in_memory(path) {
        return err.into();
    }
    let file = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let folder = file.parent().map(Path::to_owned).unwrap_or_default();
    let message = if !folder.is_dir() {
        format!(
            "the folder {} for the database file does not exist: create it, or change DATABASE_URL",
            folder.display()
        )
    } else if !writable(&folder) {
        format!(
            "the folder {} is not writable, and SQLite must create the database and its \
             journal files ({}-wal, -shm) there: make the folder writable by this user \
             ({err})",
            folder.display(),
            file.display(),
        )
    } else if file.exists() && !writable(&file) {
        format!(
            "the database file {} is read-only: make the file writable by this user ({err})",
            file.display()
        )
    } else {
        format!("cannot open the database file {}: {err}", file.display())
    };
    ConnectError::Access(message)
}

/// Whether this process may write `path` (a file, or a folder to create files in).
#[cfg(unix)]
fn writable(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: access(2) reads a NUL-terminated path and nothing else.
    unsafe { libc::access(path.as_ptr(), libc::W_OK) == 0 }
}

#[cfg(not(unix))]
fn writable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|metadata| !metadata.permissions().readonly())
}

/// Applies the migrations on a connection of their own that logs no SQL at all, not even
/// a slow statement: the seed migration carries password hashes.
async fn migrate(options: &SqliteConnectOptions) -> Result<(), sqlx::Error> {
    let mut connection = options
        .clone()
        .log_slow_statements(LevelFilter::Off, Duration::MAX)
        .connect()
        .await?;
    MIGRATOR.run(&mut connection).await?;
    connection.close().await
}

/// Makes a change and rolls it back (a read-only file refuses it; an uncommitted change
/// never leaves SQLite's page cache) and checks that the database's folder has room left:
/// neither writes a byte.
pub async fn ping(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    under_write_lock(
        pool,
        "begin immediate; update change_counter set value = value where id = 1; rollback",
    )
    .await?;
    if let Some(folder) = database_folder(pool)
        && free_bytes(&folder) == Some(0)
    {
        return Err(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            "no space left for the database",
        )));
    }
    Ok(())
}

/// The bytes an unprivileged process may still write in `folder`'s file system.
#[cfg(unix)]
fn free_bytes(folder: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(folder.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs(3) fills the struct passed, from a NUL-terminated path.
    // The field types differ between platforms (32 or 64 bits), hence the conversions.
    #[allow(clippy::useless_conversion)]
    unsafe {
        let mut stats: libc::statvfs = std::mem::zeroed();
        (libc::statvfs(path.as_ptr(), &mut stats) == 0)
            .then(|| u64::from(stats.f_bavail).saturating_mul(u64::from(stats.f_frsize)))
    }
}

#[cfg(not(unix))]
fn free_bytes(_folder: &Path) -> Option<u64> {
    None
}

/// SQLite gives the -wal and -shm files the permissions of the database file, so creating
/// that one with mode 0600 keeps all three private. `true` when it made a new file.
fn create_private_file(options: &SqliteConnectOptions) -> std::io::Result<bool> {
    let path = options.get_filename();
    if is_in_memory(path) || path.exists() {
        return Ok(false);
    }
    let mut file = std::fs::OpenOptions::new();
    file.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
    match file.open(path) {
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        other => other.map(|_| true),
    }
}

fn is_in_memory(path: &Path) -> bool {
    path.as_os_str().is_empty() || path.to_str() == Some(":memory:")
}

/// A database file that other users can read (made by hand, copied, restored from a
/// backup) would hand them every password hash: take those rights away, and say so.
fn make_private(path: &Path) {
    #[cfg(unix)]
    for suffix in ["", "-wal", "-shm"] {
        use std::os::unix::fs::PermissionsExt;
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let file = PathBuf::from(file);
        let Ok(metadata) = std::fs::metadata(&file) else {
            continue;
        };
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 == 0 {
            continue;
        }
        match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode & 0o700)) {
            Ok(()) => tracing::warn!(
                file = %file.display(),
                was = format_args!("{mode:o}"),
                now = format_args!("{:o}", mode & 0o700),
                "the database file was readable by other users; tightened its permissions"
            ),
            Err(err) => tracing::warn!(
                file = %file.display(),
                mode = format_args!("{mode:o}"),
                error = %err,
                "the database file is readable by other users and could not be tightened"
            ),
        }
    }
}

/// The folder holding the database file, where its journal files come and go.
fn database_folder(pool: &SqlitePool) -> Option<PathBuf> {
    let path = pool.connect_options().get_filename().to_owned();
    if is_in_memory(&path) {
        return None;
    }
    let folder = path.parent().map(Path::to_owned).unwrap_or_default();
    Some(if folder.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        folder
    })
}

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
        // File events wake the watcher as soon as a commit is written, before a lookup
        // finds it; without the index they are also the check itself.
        let news = index.is_none().then(|| changes.clone());
        // News whose file events have all been read: only those can be settled by a
        // check that starts now (see `watch_folder`).
        let drained = Arc::new(AtomicU64::new(changes.news_seen()));
        if let Some(folder) = &folder
            && let Err(err) = watch_folder(folder, news, drained.clone(), wake.clone(), running)
        {
            if index.is_some() {
                tracing::debug!(error = %err, "cannot watch the database folder; the WAL index is read instead");
            } else {
                tracing::warn!(
                    error = %err,
                    "cannot watch the database folder; changes made by other processes count within {RECHECK:?}"
                );
            }
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

/// The pool this process writes through: one connection, so that writers queue for it
/// (see `on_writer!`). An in-memory database exists only on the pool's own connections:
/// there it is the pool.
///
/// It never checkpoints itself: SQLite's automatic checkpoint (every 1,000 log pages,
/// with two fsyncs) ran on the committing connection, and every writer waited for the
/// disk behind it. The server checkpoints on a reading connection instead, every
/// [`CHECKPOINT_EVERY`] (see [`watch_changes`]), and once more when the store closes
/// ([`checkpoint_at_close`]): the WAL index's connection stays open until the process
/// ends, so the last connection no longer closes before that.
pub fn writer(pool: &SqlitePool) -> SqlitePool {
    if database_folder(pool).is_none() {
        return pool.clone();
    }
    let options = (*pool.connect_options())
        .clone()
        .pragma("wal_autocheckpoint", "0");
    SqlitePoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(options)
}

/// Moves the write-ahead log into the database file before the store closes (see
/// [`writer`]); a failure only leaves the log for the next start to read.
pub async fn checkpoint_at_close(writer: &SqlitePool) {
    if let Err(err) = sqlx::query("pragma wal_checkpoint(truncate)")
        .execute(writer)
        .await
    {
        tracing::debug!(error = %err, "the checkpoint at close failed");
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

/// Runs `batch` (which takes the write lock and rolls back) as one command: SQLite's
/// worker runs it through without waiting for this task, so the lock is never held
/// while an async thread is busy elsewhere. Whatever fails, the transaction ends.
async fn under_write_lock(
    pool: &SqlitePool,
    batch: &'static str,
) -> Result<Vec<sqlx::sqlite::SqliteRow>, sqlx::Error> {
    to_the_end(pool, sqlx::query(batch)).await
}

/// Runs `batch`, which opens a transaction and ends it, on the writer and on a task of
/// its own, so that it runs to its end even when its caller is dropped (a client that
/// hangs up, a health probe that times out): sqlx's worker stops a batch between
/// statements once nobody waits for its results, which would leave the transaction open
/// on the one connection every later write goes through. Whatever fails, the transaction
/// ends.
pub(super) async fn to_the_end(
    pool: &SqlitePool,
    batch: sqlx::query::Query<'static, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
) -> Result<Vec<sqlx::sqlite::SqliteRow>, sqlx::Error> {
    let pool = pool.clone();
    let run = tokio::spawn(async move {
        let mut connection = pool.acquire().await?;
        let rows = batch.fetch_all(&mut *connection).await;
        if rows.is_err() {
            let _ = sqlx::raw_sql("rollback").execute(&mut *connection).await;
        }
        rows
    });
    run.await
        .map_err(|err| sqlx::Error::Protocol(format!("a write batch did not finish: {err}")))?
}

/// Tells the event thread to end when the watcher does.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

/// Starts a thread that wakes the watcher on every write in `folder`, until `running` is
/// false (it looks twice a second). With `news`, every write is also news, and every
/// cache lookup asks the kernel whether events are queued: the exact check where the WAL
/// index cannot be read.
#[cfg(target_os = "linux")]
fn watch_folder(
    folder: &Path,
    news: Option<Arc<Changes>>,
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
    if let Some(changes) = &news {
        let inotify = inotify.clone();
        changes.set_probe(move || readable(inotify.as_raw_fd(), 0));
    }
    std::thread::Builder::new()
        .name("sqlite-changes".into())
        .spawn(move || {
            let fd = inotify.as_raw_fd();
            let mut buffer = [0u8; 4096];
            while running.load(Ordering::Relaxed) {
                if !readable(fd, 500) {
                    continue;
                }
                let count = news.as_ref().map(|changes| changes.news());
                // The descriptor is non-blocking: read until nothing is left.
                // SAFETY: reads into a buffer of the length given, from a descriptor the
                // Arc keeps open.
                while unsafe { libc::read(fd, buffer.as_mut_ptr().cast(), buffer.len()) } > 0 {}
                // Only now may a check settle this news: one that began before the read
                // could settle it and miss a write whose events this read took away.
                if let Some(count) = count {
                    drained.store(count, Ordering::Release);
                }
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
    _news: Option<Arc<Changes>>,
    _drained: Arc<AtomicU64>,
    _wake: Arc<Notify>,
    _running: Arc<AtomicBool>,
) -> std::io::Result<()> {
    Err(std::io::Error::other(
        "file events are watched on Linux only",
    ))
}
