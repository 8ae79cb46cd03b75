//! Queries on sessions (RFC 9700's token families: every token of one login) and their
//! refresh tokens, stored by SHA-256 digest only.

use sqlx::FromRow;

use super::{Pool, Store, devices::FORGET_USER_DEVICES, on_pool, on_writer, rotation};
use crate::{scope::Scopes, users::User};

/// A token to store: its digest and when it expires (Unix ms).
pub struct NewAccessToken<'a> {
    pub digest: &'a [u8; 32],
    pub scopes: &'a Scopes,
    pub expires_at: i64,
}

/// A refresh token as found, with its session and the session's user.
#[derive(Debug, Clone)]
pub struct RefreshRecord {
    pub session_id: i64,
    pub issued_at: i64,
    pub spent_at: Option<i64>,
    /// The scopes granted at login.
    pub session_scopes: Scopes,
    pub session_expires_at: i64,
    pub session_revoked: bool,
    /// The client the login named, if any.
    pub client_id: Option<String>,
    /// How the login authenticated the user (see `Amr::methods`).
    pub amr: Option<String>,
    /// The thumbprint of the DPoP key the session is bound to, if any.
    pub dpop_jkt: Option<String>,
    pub user: User,
}

#[derive(FromRow)]
struct RefreshRow {
    #[sqlx(flatten)]
    user: User,
    session_id: i64,
    issued_at: i64,
    spent_at: Option<i64>,
    session_scopes: String,
    session_expires_at: i64,
    session_revoked_at: Option<i64>,
    client_id: Option<String>,
    amr: Option<String>,
    dpop_jkt: Option<String>,
}

/// How an attempt to issue tokens in a session ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Rotation {
    Issued,
    /// The refresh token to spend was spent by someone else first.
    AlreadySpent,
    /// The session was revoked in the meantime.
    SessionEnded,
}

/// A live session, for the CLI.
#[derive(Debug, Clone, FromRow)]
pub struct SessionSummary {
    pub id: i64,
    pub scopes: String,
    pub client_id: Option<String>,
    pub started_at: i64,
    pub refreshed_at: i64,
    pub expires_at: i64,
}

/// Ends every session of a user: `$1` the time, `$2` the user's id. With
/// [`REVOKE_USER_ACCESS_TOKENS`], in one transaction, the user is logged out everywhere.
pub(super) const REVOKE_USER_SESSIONS: &str =
    "update sessions set revoked_at = $1 where user_id = $2 and revoked_at is null";

/// Revokes every access token of a user: `$1` the time, `$2` the user's id.
pub(super) const REVOKE_USER_ACCESS_TOKENS: &str =
    "update access_tokens set revoked_at = $1 where user_id = $2 and revoked_at is null";

/// A session to start for a login.
pub struct NewSession<'a> {
    pub user_id: i64,
    /// The registered client that logged in, if any.
    pub client_id: Option<&'a str>,
    pub scopes: &'a Scopes,
    /// Unix ms.
    pub started_at: i64,
    pub expires_at: i64,
    /// How many live sessions the user may have, this one included; the least recently
    /// used of the others end.
    pub max_per_user: u32,
    /// How the login authenticated the user (RFC 8176 names, space-separated).
    pub amr: &'a str,
    /// The thumbprint of the DPoP key every token of the session is bound to, if any.
    pub dpop_jkt: Option<&'a str>,
    /// When the user's password was set, as the login read it: a password changed since
    /// (the change ends every session) means no session is started.
    pub password_changed_at: i64,
}

/// How many refresh-token rows a session keeps, the live one included: the newest spent
/// ones tell a retry from a theft; older ones are deleted.
pub const REFRESH_TOKEN_ROWS_PER_SESSION: i64 = 64;

impl Store {
    /// Starts a session for a login: the session, its first access token and (when
    /// refresh tokens are on) its first refresh token, in one transaction, ending the
    /// user's least recently used live sessions beyond `max_per_user`. `false`, and
    /// nothing written, when the user's password changed (or the user went) since the
    /// login read it.
    pub async fn start_session(
        &self,
        session: NewSession<'_>,
        access: NewAccessToken<'_>,
        refresh: Option<&[u8; 32]>,
    ) -> Result<bool, sqlx::Error> {
        let session_id = super::random_id();
        let now = session.started_at;
        let ended = on_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            let started = sqlx::query(
                "insert into sessions (id, user_id, scopes, client_id, started_at, refreshed_at, expires_at,
                                       amr, dpop_jkt)
                 select $1, id, $3, $4, $5, $5, $6, $7, $8 from users
                 where id = $2 and password_changed_at = $9",
            )
            .bind(session_id)
            .bind(session.user_id)
            .bind(session.scopes.to_string())
            .bind(session.client_id)
            .bind(now)
            .bind(session.expires_at)
            .bind(session.amr)
            .bind(session.dpop_jkt)
            .bind(session.password_changed_at)
            .execute(&mut *tx)
            .await?;
            if started.rows_affected() == 0 {
                return Ok(false);
            }
            sqlx::query(
                "insert into access_tokens (token_hash, user_id, session_id, scopes, issued_at, expires_at)
                 values ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&access.digest[..])
            .bind(session.user_id)
            .bind(session_id)
            .bind(access.scopes.to_string())
            .bind(now)
            .bind(access.expires_at)
            .execute(&mut *tx)
            .await?;
            if let Some(refresh) = refresh {
                sqlx::query(
                    "insert into refresh_tokens (token_hash, session_id, issued_at)
                     values ($1, $2, $3)",
                )
                .bind(&refresh[..])
                .bind(session_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            let ended = sqlx::query(
                "update sessions set revoked_at = $1
                 where user_id = $2 and revoked_at is null and expires_at > $1
                   and id not in (select id from sessions
                                  where user_id = $2 and revoked_at is null and expires_at > $1
                                  order by refreshed_at desc, started_at desc, id desc
                                  limit $3)",
            )
            .bind(now)
            .bind(session.user_id)
            .bind(i64::from(session.max_per_user.max(1)))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if ended > 0 {
                sqlx::query(
                    "update access_tokens set revoked_at = $1
                     where user_id = $2 and revoked_at is null
                       and session_id in (select id from sessions
                                          where user_id = $2 and revoked_at = $1)",
                )
                .bind(now)
                .bind(session.user_id)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            ended
        });
        self.bump_if(ended);
        Ok(true)
    }

    /// The refresh token with this digest, its session and user, whatever their state.
    pub async fn find_refresh_token(
        &self,
        digest: &[u8; 32],
    ) -> Result<Option<RefreshRecord>, sqlx::Error> {
        let row: Option<RefreshRow> = on_pool!(self, pool => {
            sqlx::query_as(
                "select u.id, u.username, u.email, u.full_name, u.disabled, u.scopes,
                        r.session_id, r.issued_at, r.spent_at,
                        s.scopes as session_scopes, s.expires_at as session_expires_at,
                        s.revoked_at as session_revoked_at, s.client_id, s.amr, s.dpop_jkt
                 from refresh_tokens r
                 join sessions s on s.id = r.session_id
                 join users u on u.id = s.user_id
                 where r.token_hash = $1",
            )
            .bind(&digest[..])
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(|row| RefreshRecord {
            session_id: row.session_id,
            issued_at: row.issued_at,
            spent_at: row.spent_at,
            session_scopes: Scopes::from_stored(&row.session_scopes),
            session_expires_at: row.session_expires_at,
            session_revoked: row.session_revoked_at.is_some(),
            client_id: row.client_id,
            amr: row.amr,
            dpop_jkt: row.dpop_jkt,
            user: row.user,
        }))
    }

    /// Issues a new access token and refresh token in a live session, spending `spend`
    /// first when given, and retiring every other refresh token of the session: a session
    /// has one live refresh token at most. All or nothing: when `spend` was already spent,
    /// or the session was revoked, nothing is written. Concurrent refreshes of one session
    /// take turns (on PostgreSQL by the session's row lock, taken first; on SQLite by the
    /// write lock) and each sees the tokens the others issued. `user_id`: the session's
    /// user. How each backend does it: `rotation.rs`.
    pub async fn refresh_session(
        &self,
        session_id: i64,
        user_id: i64,
        spend: Option<&[u8; 32]>,
        now: i64,
        access: NewAccessToken<'_>,
        refresh: &[u8; 32],
    ) -> Result<Rotation, sqlx::Error> {
        let rotate = rotation::Rotate {
            session_id,
            user_id,
            spend,
            now,
            access,
            refresh,
        };
        match &self.writer {
            Pool::Sqlite(pool) => self.rotations.rotate(pool, &rotate).await,
            Pool::Postgres(pool) => rotation::postgres(pool, &rotate).await,
        }
    }

    /// Ends a session: it can no longer refresh, and every access token of it dies.
    pub async fn revoke_session(&self, session_id: i64, now: i64) -> Result<(), sqlx::Error> {
        let revoked = on_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            let sessions = sqlx::query(
                "update sessions set revoked_at = $1 where id = $2 and revoked_at is null",
            )
            .bind(now)
            .bind(session_id)
            .execute(&mut *tx)
            .await?;
            let tokens = sqlx::query(
                "update access_tokens set revoked_at = $1
                 where session_id = $2 and revoked_at is null",
            )
            .bind(now)
            .bind(session_id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            sessions.rows_affected() + tokens.rows_affected()
        });
        self.bump_if(revoked);
        Ok(())
    }

    /// The session of the refresh token with this digest, spent or not.
    pub async fn session_of_refresh_token(
        &self,
        digest: &[u8; 32],
    ) -> Result<Option<i64>, sqlx::Error> {
        on_pool!(self, pool => {
            sqlx::query_scalar("select session_id from refresh_tokens where token_hash = $1")
                .bind(&digest[..])
                .fetch_optional(pool)
                .await
        })
    }

    /// The user's sessions that can still be used at `now`, newest first; `None` when
    /// there is no such user.
    pub async fn list_sessions(
        &self,
        username: &str,
        now: i64,
        refresh_idle_ttl: i64,
    ) -> Result<Option<Vec<SessionSummary>>, sqlx::Error> {
        let Some(user) = self.find_user(username).await? else {
            return Ok(None);
        };
        let sessions = on_pool!(self, pool => {
            sqlx::query_as(
                "select s.id, s.scopes, s.client_id, s.started_at, s.refreshed_at, s.expires_at
                 from sessions s
                 where s.user_id = $1 and s.revoked_at is null and s.expires_at > $2
                   and (s.refreshed_at > $2 - $3
                        or exists (select 1 from access_tokens t
                                   where t.session_id = s.id
                                     and t.revoked_at is null and t.expires_at > $2))
                 order by s.started_at desc, s.id desc",
            )
            .bind(user.id)
            .bind(now)
            .bind(refresh_idle_ttl)
            .fetch_all(pool)
            .await?
        });
        Ok(Some(sessions))
    }

    /// Ends every session and access token of the user and forgets their trusted devices;
    /// `None` when there is no such user, otherwise how many sessions were live.
    pub async fn logout_user(&self, username: &str, now: i64) -> Result<Option<u64>, sqlx::Error> {
        let Some(user) = self.find_user(username).await? else {
            return Ok(None);
        };
        let ended = on_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            let sessions = sqlx::query(REVOKE_USER_SESSIONS)
                .bind(now)
                .bind(user.id)
                .execute(&mut *tx)
                .await?;
            let tokens = sqlx::query(REVOKE_USER_ACCESS_TOKENS)
                .bind(now)
                .bind(user.id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(FORGET_USER_DEVICES)
                .bind(user.id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            (sessions.rows_affected(), tokens.rows_affected())
        });
        self.bump_if(ended.0 + ended.1);
        Ok(Some(ended.0))
    }
}
