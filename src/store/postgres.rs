//! PostgreSQL: the pool, the migrations in `migrations/postgres/`, and hearing about
//! changes committed by other replicas and the CLI through LISTEN/NOTIFY.

use std::{str::FromStr, sync::Arc, time::Duration};

use log::LevelFilter;
use sqlx::{
    ConnectOptions, Connection, PgPool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgListener, PgPoolOptions},
};

use super::{ConnectError, changes::Changes};

/// The migrations in `./migrations/postgres`, compiled into the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// The channel the migrations' triggers notify on every revocation and user change.
const CHANNEL: &str = "simple_oauth2_changes";

/// How long a request waits for a connection before the service answers 503.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn connect(url: &str) -> Result<PgPool, ConnectError> {
    let options = PgConnectOptions::from_str(url)?
        .application_name("simple-oauth2")
        .log_statements(LevelFilter::Off);
    let server = format!("{}:{}", options.get_host(), options.get_port());
    migrate(&options)
        .await
        .map_err(|err| explain(err, &options, &server))?;
    Ok(PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await?)
}

/// The errors a newcomer meets, said with what to do; the rest as sqlx says them.
fn explain(err: sqlx::Error, options: &PgConnectOptions, server: &str) -> ConnectError {
    match &err {
        // invalid_catalog_name: the server answers, the database is not there.
        sqlx::Error::Database(db) if db.code().as_deref() == Some("3D000") => {
            ConnectError::NoSuchDatabase {
                name: options
                    .get_database()
                    .unwrap_or(options.get_username())
                    .to_owned(),
                server: server.to_owned(),
            }
        }
        sqlx::Error::Io(io) => ConnectError::Access(format!(
            "cannot reach PostgreSQL at {server}: {io}; is it running, and are the host and port in DATABASE_URL right?"
        )),
        _ => err.into(),
    }
}

/// Applies the migrations on a connection that logs no SQL: the seed carries password
/// hashes. The migrator holds an advisory lock, so replicas starting together on an
/// empty database apply them once.
async fn migrate(options: &PgConnectOptions) -> Result<(), sqlx::Error> {
    let mut connection = options
        .clone()
        .log_slow_statements(LevelFilter::Off, Duration::MAX)
        .connect()
        .await?;
    MIGRATOR.run(&mut connection).await?;
    connection.close().await
}

/// Listens on [`CHANNEL`] and moves `changes` on at every notification. A lost
/// connection may have missed some, so until it is back nothing cached is trusted, and
/// coming back counts as a change.
pub fn watch_changes(pool: PgPool, changes: Arc<Changes>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let seen = changes.news_seen();
            let mut listener = match listen(&pool).await {
                Ok(listener) => listener,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot listen for changes; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            // Whatever happened while nobody listened is unknown.
            changes.bump();
            changes.settle(seen);
            loop {
                match listener.try_recv().await {
                    Ok(Some(_)) => changes.bump(),
                    Ok(None) | Err(_) => {
                        changes.news();
                        tracing::warn!("lost the change notifications; reconnecting");
                        break;
                    }
                }
            }
        }
    })
}

async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}
