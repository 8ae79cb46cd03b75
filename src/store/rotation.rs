//! A session's rotation on refresh, as each backend does it fastest: on SQLite one
//! command that the connection's worker runs start to end, on PostgreSQL one function call.
//! What a rotation does is the same on both (see [`Store::refresh_session`]).
//!
//! [`Store::refresh_session`]: super::Store::refresh_session

use sqlx::Row;

use super::sessions::{NewAccessToken, REFRESH_TOKEN_ROWS_PER_SESSION, Rotation};

/// One rotation: what [`super::Store::refresh_session`] was given.
pub(super) struct Rotate<'a> {
    pub session_id: i64,
    pub user_id: i64,
    /// The refresh token to spend; `None`: a retry, which retires whatever is live.
    pub spend: Option<&'a [u8; 32]>,
    pub now: i64,
    pub access: NewAccessToken<'a>,
    pub refresh: &'a [u8; 32],
}

/// A session's `refreshed_at` (its place in the least-recently-used order) moves only
/// once it is this old: a session refreshed many times a second would otherwise rewrite
/// its row and its index entries every time (on PostgreSQL a dead row version each).
const USE_PRECISION_MS: i64 = 1000;

/// The rotation as one batch: SQLite's write lock is held from `begin immediate` to
/// `commit` without a wait for this task between statements (each statement sent on its
/// own cost a trip through the async runtime while the lock was held, and every other
/// writer waited for it). Each write runs only if the one before it did (`changes()` is
/// the row count of the statement just before): the session is live, the presented token
/// was unspent (or this is a retry, `$3` null, which retires whatever is live: the first
/// update, a no-op otherwise), the access token went in. The last `select` says what happened.
///
/// `$1` now, `$2` session, `$3` the token to spend, `$4`..`$7` the access token, `$8` the
/// new refresh token, `$9` how many of the newest rows the trim passes over, `$10`
/// [`USE_PRECISION_MS`].
const ROTATE_SQLITE: &str = "
begin immediate;
update refresh_tokens set spent_at = $1
 where $3 is null and session_id = $2 and spent_at is null
   and exists (select 1 from sessions where id = $2 and revoked_at is null);
update refresh_tokens set spent_at = $1
 where token_hash = $3 and session_id = $2 and spent_at is null
   and exists (select 1 from sessions where id = $2 and revoked_at is null);
insert into access_tokens (token_hash, user_id, session_id, scopes, issued_at, expires_at)
 select $4, $5, $2, $6, $1, $7
  where ($3 is null or changes() = 1)
    and exists (select 1 from sessions where id = $2 and revoked_at is null);
insert into refresh_tokens (token_hash, session_id, issued_at)
 select $8, $2, $1 where changes() = 1;
update sessions set refreshed_at = $1
 where id = $2 and changes() = 1 and refreshed_at <= $1 - $10;
delete from refresh_tokens
 where session_id = $2 and spent_at is not null
   and issued_at <= (select issued_at from refresh_tokens
                      where session_id = $2
                      order by issued_at desc
                      limit 1 offset $9);
select exists (select 1 from sessions where id = $2 and revoked_at is null),
       exists (select 1 from refresh_tokens where token_hash = $8);
commit;
";

/// SQLite: [`ROTATE_SQLITE`] on the writer, run to its end whatever happens to the caller.
pub(super) async fn sqlite(
    pool: &sqlx::SqlitePool,
    rotate: &Rotate<'_>,
) -> Result<Rotation, sqlx::Error> {
    // Owned values: the batch runs on a task of its own (see `sqlite::to_the_end`).
    let batch = sqlx::query(ROTATE_SQLITE)
        .bind(rotate.now)
        .bind(rotate.session_id)
        .bind(rotate.spend.map(|spend| spend.to_vec()))
        .bind(rotate.access.digest.to_vec())
        .bind(rotate.user_id)
        .bind(rotate.access.scopes.to_string())
        .bind(rotate.access.expires_at)
        .bind(rotate.refresh.to_vec())
        .bind(REFRESH_TOKEN_ROWS_PER_SESSION - 1)
        .bind(USE_PRECISION_MS);
    let rows = super::sqlite::to_the_end(pool, batch).await?;
    let outcome = rows.first().ok_or(sqlx::Error::RowNotFound)?;
    let (live, issued): (bool, bool) = (outcome.try_get(0)?, outcome.try_get(1)?);
    Ok(match (live, issued) {
        (_, true) => Rotation::Issued,
        (true, false) => Rotation::AlreadySpent,
        (false, false) => Rotation::SessionEnded,
    })
}

/// PostgreSQL: one call of `rotate_refresh_token` (a migration defines it), which runs
/// the rotation's statements in one round trip, each with its own snapshot.
pub(super) async fn postgres(
    pool: &sqlx::PgPool,
    rotate: &Rotate<'_>,
) -> Result<Rotation, sqlx::Error> {
    let outcome: String =
        sqlx::query_scalar("select rotate_refresh_token($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
            .bind(rotate.session_id)
            .bind(rotate.user_id)
            .bind(rotate.spend.map(|spend| &spend[..]))
            .bind(rotate.now)
            .bind(&rotate.access.digest[..])
            .bind(rotate.access.scopes.to_string())
            .bind(rotate.access.expires_at)
            .bind(&rotate.refresh[..])
            .bind(REFRESH_TOKEN_ROWS_PER_SESSION - 1)
            .bind(USE_PRECISION_MS)
            .fetch_one(pool)
            .await?;
    match outcome.as_str() {
        "issued" => Ok(Rotation::Issued),
        "already_spent" => Ok(Rotation::AlreadySpent),
        "session_ended" => Ok(Rotation::SessionEnded),
        other => Err(sqlx::Error::Protocol(format!(
            "rotate_refresh_token answered {other:?}"
        ))),
    }
}
