//! The SQLite database: connection options, the pool, and the embedded migrations.

use std::{
    path::PathBuf,
    str::FromStr,
    sync::{Mutex, PoisonError},
    time::{Duration, SystemTime},
};

use sqlx::{
    SqlitePool,
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
        .foreign_keys(true);
    create_private_file(&options)?;
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await?;
    MIGRATOR.run(&pool).await?;
    Ok(pool)
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
