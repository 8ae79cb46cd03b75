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
mod rotation;
mod sessions;
mod sqlite;
mod sqlite_watch;
mod throttle;
mod tokens;
mod totp;
mod users;
mod wal_index;

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
    users::Credentials,
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

/// [`on_pool!`] for code that writes: on SQLite it runs on the one connection this
/// process writes through, so that its writers queue here, in the runtime, and never in
/// SQLite's busy handler, which sleeps in whole milliseconds (1, 2, 5, 10, ...) while the
/// lock may long be free. On PostgreSQL it is the one pool.
macro_rules! on_writer {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.writer {
            $crate::store::Pool::Sqlite($pool) => $body,
            $crate::store::Pool::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_writer;

/// A connection pool of one of the supported databases.
#[derive(Clone, Debug)]
pub enum Pool {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// A database URL. Its `Debug` and `Display` hide a password, so it can be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

/// The schemes [`DatabaseUrl`] accepts, as people write them.
pub const DATABASE_SCHEMES: &str = "sqlite:, postgres:// or postgresql://";

impl DatabaseUrl {
    /// A URL taken as it is (tests, tools); [`str::parse`] checks the scheme.
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

    fn is_sqlite(&self) -> bool {
        self.0.starts_with("sqlite:")
    }
}

/// A `DATABASE_URL` of no supported database, with what was probably meant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("it must start with {DATABASE_SCHEMES}{hint}")]
pub struct UnsupportedDatabaseUrl {
    hint: String,
}

impl std::str::FromStr for DatabaseUrl {
    type Err = UnsupportedDatabaseUrl;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let url = Self::new(url);
        if url.is_sqlite() || url.is_postgres() {
            return Ok(url);
        }
        let scheme = url
            .0
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let hint = match scheme.as_str() {
            "postgres" | "postgresql" => {
                format!(" (a PostgreSQL URL: {scheme}://user@host:5432/dbname)")
            }
            "mysql" | "mariadb" => " (MySQL and MariaDB are not supported)".to_owned(),
            _ => ["postgres", "postgresql", "sqlite"]
                .into_iter()
                .find(|known| strsim::damerau_levenshtein(&scheme, known) <= 2)
                .map(|known| {
                    let separator = if known == "sqlite" { ":" } else { "://" };
                    format!(" (did you mean {known}{separator}?)")
                })
                .unwrap_or_default(),
        };
        Err(UnsupportedDatabaseUrl { hint })
    }
}

/// `url` with any password replaced by `***`: in the userinfo
/// (`scheme://user:password@host`) and in a `password=` query parameter.
pub fn redact_url(url: &str) -> String {
    let (address, query) = match url.split_once('?') {
        Some((address, query)) => (address, Some(query)),
        None => (url, None),
    };
    let mut redacted = match address.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((credentials, host)) => match credentials.split_once(':') {
                Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
                None => address.to_owned(),
            },
            None => address.to_owned(),
        },
        None => address.to_owned(),
    };
    if let Some(query) = query {
        let parameters: Vec<String> = query
            .split('&')
            .map(|parameter| match parameter.split_once('=') {
                Some((name, _)) if name.eq_ignore_ascii_case("password") => format!("{name}=***"),
                _ => parameter.to_owned(),
            })
            .collect();
        redacted.push('?');
        redacted.push_str(&parameters.join("&"));
    }
    redacted
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// Why the database could not be opened, said so that a person knows what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{0}")]
    Unsupported(String),
    /// A PostgreSQL database that does not exist on a server that answers.
    #[error(
        "the PostgreSQL database {name:?} does not exist on {server}; create it (createdb {name}) and start again"
    )]
    NoSuchDatabase { name: String, server: String },
    /// A file or folder the database needs cannot be written or read.
    #[error("{0}")]
    Access(String),
    #[error("{0}")]
    Database(#[from] sqlx::Error),
}

/// The service's database.
#[derive(Clone, Debug)]
pub struct Store {
    pool: Pool,
    /// Where writes go (see [`on_writer!`]): on SQLite a pool of one connection, on
    /// PostgreSQL the same pool.
    writer: Pool,
    changes: Arc<Changes>,
    /// SQLite's group commit of refresh rotations (see [`rotation::SqliteQueue`]).
    rotations: Arc<rotation::SqliteQueue>,
}

impl Store {
    /// Opens the database at `url` and brings its schema up to date: a SQLite file is
    /// created (private to its owner) when missing; a PostgreSQL database must exist.
    pub async fn connect(url: &DatabaseUrl) -> Result<Self, ConnectError> {
        let (pool, writer) = if url.is_postgres() {
            let pool = Pool::Postgres(postgres::connect(url.expose()).await?);
            (pool.clone(), pool)
        } else if url.is_sqlite() {
            let pool = sqlite::connect(url.expose()).await?;
            let writer = sqlite::writer(&pool);
            (Pool::Sqlite(pool), Pool::Sqlite(writer))
        } else {
            return Err(ConnectError::Unsupported(format!(
                "DATABASE_URL must start with {DATABASE_SCHEMES}"
            )));
        };
        Ok(Self {
            pool,
            writer,
            changes: Arc::new(Changes::default()),
            rotations: Arc::default(),
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
    /// until it stops, [`Changes`] counts every change there. On SQLite it also moves the
    /// write-ahead log into the database file now and then (see `sqlite::writer`). Call
    /// once, in a runtime.
    pub fn watch_changes(&self) -> tokio::task::JoinHandle<()> {
        match (&self.pool, &self.writer) {
            (Pool::Sqlite(reader), Pool::Sqlite(writer)) => {
                sqlite_watch::watch_changes(reader.clone(), writer.clone(), self.changes.clone())
            }
            (Pool::Postgres(pool), _) | (_, Pool::Postgres(pool)) => {
                postgres::watch_changes(pool.clone(), self.changes.clone())
            }
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
        if let Pool::Sqlite(writer) = &self.writer {
            sqlite::checkpoint_at_close(writer).await;
        }
        on_writer!(self, pool => pool.close().await);
        on_pool!(self, pool => pool.close().await)
    }

    /// `err` from a change, said so that a person knows what to do when it is the
    /// database's file or folder that cannot be written (SQLite opens a read-only file
    /// for reading without a word).
    pub fn explain_write_error(&self, err: sqlx::Error) -> ConnectError {
        match &self.pool {
            Pool::Sqlite(pool) => {
                let path = pool.connect_options().get_filename().to_owned();
                sqlite::access_error(&path, err)
            }
            Pool::Postgres(_) => err.into(),
        }
    }

    /// Fails unless the database answers. On SQLite it also fails when the file could
    /// not be written (read-only, or no space left), so that shows here and not only at
    /// the next login; it writes nothing itself, which would cost every cached token.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        // On SQLite the check takes the write lock: through the writer, in turn.
        match &self.writer {
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

    #[test]
    fn a_password_in_the_query_never_shows() {
        let url = DatabaseUrl::new("postgres://app@db/auth?sslmode=require&password=s3cr3t");
        assert_eq!(
            url.to_string(),
            "postgres://app@db/auth?sslmode=require&password=***"
        );
        let url = DatabaseUrl::new("postgres://app:pw1@db/auth?PASSWORD=pw2");
        assert_eq!(url.to_string(), "postgres://app:***@db/auth?PASSWORD=***");
    }

    #[test]
    fn only_the_three_schemes_are_accepted() {
        for good in [
            "sqlite:x.db",
            "sqlite::memory:",
            "postgres://h/db",
            "postgresql://h/db",
        ] {
            assert!(good.parse::<DatabaseUrl>().is_ok(), "{good}");
        }
        let hint = |url: &str| url.parse::<DatabaseUrl>().unwrap_err().to_string();
        assert!(hint("postgres:mydb").contains("postgres://user@host"));
        assert!(hint("postgress://h/db").contains("did you mean postgres://?"));
        assert!(hint("mysql://u:pw@h/db").contains("MySQL"));
        assert!(hint("sqlit:x.db").contains("did you mean sqlite:?"));
        assert!(hint("simple-oauth2.db").contains(DATABASE_SCHEMES));
    }
}
