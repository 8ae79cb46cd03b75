//! The database behind one interface: every query the service makes is a method on
//! [`Store`], and SQLite or PostgreSQL is chosen once, from the URL, at start.
//!
//! Most SQL is written once and runs on both (numbered `$1` placeholders, `on conflict`,
//! `returning`); [`on_pool!`] compiles it against each driver. What differs lives in
//! `sqlite.rs` and `postgres.rs`: connecting, migrations, and hearing about changes.

mod changes;
mod clients;
mod devices;
mod postgres;
mod sessions;
mod sqlite;
mod throttle;
mod tokens;
mod totp;
mod users;

use std::{
    fmt,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

pub use self::{
    changes::Changes,
    clients::ClientSummary,
    devices::{DeviceRecord, NewDevice},
    sessions::{NewAccessToken, NewSession, RefreshRecord, Rotation, SessionSummary},
    throttle::Counted,
    tokens::LiveToken,
    totp::TotpFactor,
};

/// Runs the same sqlx code on whichever pool the store has: `on_pool!(self, pool => ...)`.
/// Each arm is type-checked against its own driver.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.pool {
            $crate::store::Pool::Sqlite($pool) => $body,
            $crate::store::Pool::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// A connection pool of one of the supported databases.
#[derive(Clone, Debug)]
pub enum Pool {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// A database URL. Its `Debug` and `Display` hide a password, so it can be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL itself, password included: for connecting only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    fn is_postgres(&self) -> bool {
        self.0.starts_with("postgres://") || self.0.starts_with("postgresql://")
    }
}

impl std::str::FromStr for DatabaseUrl {
    type Err = std::convert::Infallible;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(url))
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // scheme://user:password@host/... -> scheme://user:***@host/...
        if let Some((scheme, rest)) = self.0.split_once("://")
            && let Some((credentials, host)) = rest.rsplit_once('@')
            && let Some((user, _password)) = credentials.split_once(':')
        {
            return write!(f, "{scheme}://{user}:***@{host}");
        }
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// The service's database.
#[derive(Clone, Debug)]
pub struct Store {
    pool: Pool,
    changes: Arc<Changes>,
}

impl Store {
    /// Opens the database at `url` and brings its schema up to date: a SQLite file is
    /// created (private to its owner) when missing; a PostgreSQL database must exist.
    pub async fn connect(url: &DatabaseUrl) -> Result<Self, sqlx::Error> {
        let pool = if url.is_postgres() {
            Pool::Postgres(postgres::connect(url.expose()).await?)
        } else {
            Pool::Sqlite(sqlite::connect(url.expose()).await?)
        };
        Ok(Self {
            pool,
            changes: Arc::new(Changes::default()),
        })
    }

    /// The pool, for tests and tools that need plain SQL.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Which database this is, for logs.
    pub fn backend(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    /// What the service knows about changes to users and tokens (see [`Changes`]).
    pub fn changes(&self) -> &Arc<Changes> {
        &self.changes
    }

    /// Starts listening for changes made by other processes (the CLI, other replicas);
    /// until it stops, [`Changes`] counts every change there. Call once, in a runtime.
    pub fn watch_changes(&self) -> tokio::task::JoinHandle<()> {
        match &self.pool {
            Pool::Sqlite(pool) => sqlite::watch_changes(pool.clone(), self.changes.clone()),
            Pool::Postgres(pool) => postgres::watch_changes(pool.clone(), self.changes.clone()),
        }
    }

    /// Moves the change generation on when a write changed something a cached token
    /// answer depends on; a write that changed nothing costs no cache.
    fn bump_if(&self, changed_rows: u64) {
        if changed_rows > 0 {
            self.changes.bump();
        }
    }

    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await)
    }

    /// Fails unless the database answers. On SQLite it also fails when the file could
    /// not be written (read-only, or no space left), so that shows here and not only at
    /// the next login; it writes nothing itself, which would cost every cached token.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        match &self.pool {
            Pool::Sqlite(pool) => sqlite::ping(pool).await,
            Pool::Postgres(pool) => sqlx::query("select 1").execute(pool).await.map(drop),
        }
    }
}

/// Whether text can be stored and looked up on every backend: PostgreSQL refuses a NUL
/// byte outright, so such a value is one that no row can hold.
fn storable(text: &str) -> bool {
    !text.contains('\0')
}

/// A random row id (sessions, devices): chosen here rather than by the database, so that
/// no write needs `returning` (sqlx 0.9 on SQLite can leave a failed `returning`
/// statement holding the write lock). 63 random bits do not collide in practice; the
/// primary key would refuse a collision anyway.
fn random_id() -> i64 {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the OS random number generator is available");
    i64::from_le_bytes(bytes) & i64::MAX
}

/// Milliseconds since the Unix epoch: how every time is stored.
pub fn unix_millis(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A duration in milliseconds, saturating.
pub fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_urls_password_never_shows() {
        let url = DatabaseUrl::new("postgres://app:s3cr3t@db.internal:5432/auth");
        assert_eq!(url.to_string(), "postgres://app:***@db.internal:5432/auth");
        assert!(!format!("{url:?}").contains("s3cr3t"));
        let url = DatabaseUrl::new("postgres://app:p@ss@word@db/auth");
        assert!(!url.to_string().contains("ss@word"));
        assert_eq!(
            DatabaseUrl::new("sqlite:simple-oauth2.db").to_string(),
            "sqlite:simple-oauth2.db"
        );
    }
}
