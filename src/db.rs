//! The SQLite database: connection options, the pool, and the embedded migrations.

use log::LevelFilter;
use std::{
    path::{Path, PathBuf},
    str::FromStr,
    sync::{Mutex, PoisonError},
    time::{Duration, SystemTime},
};

use sqlx::{
    ConnectOptions, Connection, SqlitePool,
    migrate::Migrator,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

/// The migrations in `./migrations`, compiled into the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!();

/// Opens the database at `url`, creating the file (readable by its owner only: it holds
/// password hashes) when missing, and brings its schema up to date.
pub async fn connect(url: &str) -> Result<SqlitePool, sqlx::Error> {
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // WAL + NORMAL is durable across process crashes; only a power loss can drop the
        // last commits.
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true)
        // Queries bind their values, so their text holds no secret; it is still only
        // worth a line when one is slow.
        .log_statements(LevelFilter::Off);
    create_private_file(&options)?;
    make_private(options.get_filename());
    // The pool first: an in-memory database lives only while a connection holds it.
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options.clone())
        .await?;
    migrate(&options).await?;
    Ok(pool)
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

/// SQLite gives the -wal and -shm files the permissions of the database file, so creating
/// that one with mode 0600 keeps all three private.
fn create_private_file(options: &SqliteConnectOptions) -> std::io::Result<()> {
    let path = options.get_filename();
    if path.as_os_str().is_empty() || path.to_str() == Some(":memory:") || path.exists() {
        return Ok(());
    }
    let mut file = std::fs::OpenOptions::new();
    file.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
    match file.open(path) {
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        other => other.map(drop),
    }
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

/// Fails unless the database can be read and written: a full disk, a read-only file or
/// an I/O error shows here, not only at the next login.
pub async fn ping(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into health_probe (id, checked_at) values (1, unixepoch())
         on conflict (id) do update set checked_at = excluded.checked_at",
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Notices commits to the database by any connection of any process, for a few
/// microseconds a look: in WAL mode every commit appends to the `-wal` file, so its size
/// or modification time changes.
pub struct CommitWatch {
    wal: Option<PathBuf>,
    last: Mutex<Option<(u64, SystemTime)>>,
}

impl CommitWatch {
    /// Watches the database at `url`; an in-memory database is never seen to change.
    pub fn new(url: &str) -> Self {
        let wal = SqliteConnectOptions::from_str(url)
            .ok()
            .map(|options| options.get_filename().to_owned())
            .filter(|path| !path.as_os_str().is_empty() && path.to_str() != Some(":memory:"))
            .map(|path| {
                let mut wal = path.into_os_string();
                wal.push("-wal");
                PathBuf::from(wal)
            });
        Self {
            wal,
            last: Mutex::new(None),
        }
    }

    /// Whether anything was committed since the previous call (true on the first).
    pub fn changed(&self) -> bool {
        let Some(wal) = &self.wal else {
            return false;
        };
        let now = std::fs::metadata(wal)
            .ok()
            .and_then(|m| Some((m.len(), m.modified().ok()?)));
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let changed = now.is_none() || *last != now;
        *last = now;
        changed
    }
}
