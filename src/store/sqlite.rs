//! SQLite: a private file created on demand, WAL, the migrations in `migrations/`, and
//! the one writer connection (noticing what other processes commit is in
//! `sqlite_watch.rs`).

use std::{
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use log::LevelFilter;
use sqlx::{
    ConnectOptions, Connection, SqlitePool,
    migrate::Migrator,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

use super::ConnectError;

/// The migrations in `./migrations`, compiled into the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The size the write-ahead log file is cut back to when the log starts over.
const WAL_SIZE_LIMIT: u64 = 64 * 1024 * 1024;

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
pub(super) fn database_folder(pool: &SqlitePool) -> Option<PathBuf> {
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

/// The pool this process writes through: one connection, so that writers queue for it
/// (see `on_writer!`). An in-memory database exists only on the pool's own connections:
/// there it is the pool.
///
/// It never checkpoints itself: SQLite's automatic checkpoint (every 1,000 log pages,
/// with two fsyncs) ran on the committing connection, and every writer waited for the
/// disk behind it. The server checkpoints on a reading connection instead, every
/// second (see `sqlite_watch.rs`), and once more when the store closes
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

/// Runs `batch` (which takes the write lock and rolls back) as one command: SQLite's
/// worker runs it through without waiting for this task, so the lock is never held
/// while an async thread is busy elsewhere. Whatever fails, the transaction ends.
pub(super) async fn under_write_lock(
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
