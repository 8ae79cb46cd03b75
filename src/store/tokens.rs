//! Queries on access tokens, stored by the SHA-256 digest of the token only.

use sqlx::FromRow;

use super::{Store, on_pool, on_writer};
use crate::{scope::Scopes, users::User};

/// A live access token and its owner, as read from the database.
#[derive(Debug, Clone)]
pub struct LiveToken {
    pub user: User,
    /// The scopes granted when the token was issued.
    pub scopes: Scopes,
    /// Unix milliseconds.
    pub issued_at: i64,
    pub expires_at: i64,
    /// The client that logged in, when it said which.
    pub client_id: Option<String>,
    /// How its session's login authenticated the user (see `Amr::methods`).
    pub amr: Option<String>,
    /// The thumbprint of the DPoP key the token is bound to; `None`: a bearer token.
    pub dpop_jkt: Option<String>,
}

#[derive(FromRow)]
struct LiveTokenRow {
    #[sqlx(flatten)]
    user: User,
    token_scopes: String,
    issued_at: i64,
    expires_at: i64,
    client_id: Option<String>,
    amr: Option<String>,
    dpop_jkt: Option<String>,
}

impl Store {
    /// The access token with this digest and its owner, if it is live: known, not
    /// expired, not revoked.
    pub async fn find_live_token(
        &self,
        digest: &[u8; 32],
        now: i64,
    ) -> Result<Option<LiveToken>, sqlx::Error> {
        let row: Option<LiveTokenRow> = on_pool!(self, pool => {
            sqlx::query_as(
                "select u.id, u.username, u.email, u.full_name, u.disabled, u.scopes,
                        t.scopes as token_scopes, t.issued_at, t.expires_at, s.client_id,
                        s.amr, s.dpop_jkt
                 from access_tokens t
                 join users u on u.id = t.user_id
                 left join sessions s on s.id = t.session_id
                 where t.token_hash = $1 and t.revoked_at is null and t.expires_at > $2",
            )
            .bind(&digest[..])
            .bind(now)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(|row| LiveToken {
            user: row.user,
            scopes: Scopes::from_stored(&row.token_scopes),
            issued_at: row.issued_at,
            expires_at: row.expires_at,
            client_id: row.client_id,
            amr: row.amr,
            dpop_jkt: row.dpop_jkt,
        }))
    }

    /// Revokes the access token with this digest; `false` when there is no live one.
    pub async fn revoke_access_token(
        &self,
        digest: &[u8; 32],
        now: i64,
    ) -> Result<bool, sqlx::Error> {
        let done = on_writer!(self, pool => {
            sqlx::query(
                "update access_tokens set revoked_at = $1
                 where token_hash = $2 and revoked_at is null",
            )
            .bind(now)
            .bind(&digest[..])
            .execute(pool)
            .await?
            .rows_affected()
        });
        self.bump_if(done);
        Ok(done > 0)
    }

    /// Housekeeping: deletes the rows that can never be used again (expired or revoked
    /// access tokens, dead sessions with their refresh tokens, ended throttle windows,
    /// expired trusted devices).
    /// Returns how many rows went. In small batches with a pause between them, so that a
    /// backlog of millions (after downtime) never holds the database from logins for
    /// long: each batch is sized to take about [`BATCH_TIME`], whatever the machine.
    /// Safe to run on any number of replicas at once.
    pub async fn delete_dead(
        &self,
        now: i64,
        refresh_idle_ttl: i64,
        failure_window: i64,
    ) -> Result<u64, sqlx::Error> {
        let mut deleted = 0;
        for sweep in [
            Sweep::ExpiredAccessTokens,
            Sweep::RevokedAccessTokens,
            Sweep::DeadSessions,
            Sweep::EndedFailureWindows,
            Sweep::ExpiredDevices,
        ] {
            let mut batch = sweep.batch();
            loop {
                let started = std::time::Instant::now();
                let gone = self
                    .delete_batch(sweep, batch, now, refresh_idle_ttl, failure_window)
                    .await?;
                deleted += gone;
                if gone < batch as u64 {
                    break;
                }
                batch = sweep.next_batch(batch, started.elapsed());
                tokio::time::sleep(SWEEP_PAUSE).await;
            }
        }
        Ok(deleted)
    }

    async fn delete_batch(
        &self,
        sweep: Sweep,
        batch: i64,
        now: i64,
        refresh_idle_ttl: i64,
        failure_window: i64,
    ) -> Result<u64, sqlx::Error> {
        let done = on_writer!(self, pool => match sweep {
            Sweep::ExpiredAccessTokens => {
                sqlx::query(
                    "delete from access_tokens where token_hash in
                         (select token_hash from access_tokens where expires_at <= $1 limit $2)",
                )
                .bind(now)
                .bind(batch)
                .execute(pool)
                .await?
                .rows_affected()
            }
            Sweep::RevokedAccessTokens => {
                sqlx::query(
                    "delete from access_tokens where token_hash in
                         (select token_hash from access_tokens where revoked_at is not null limit $1)",
                )
                .bind(batch)
                .execute(pool)
                .await?
                .rows_affected()
            }
            // A session stays while one of its access tokens may still be used; its
            // refresh tokens go with it (by foreign key).
            Sweep::DeadSessions => {
                sqlx::query(
                    "delete from sessions where id in
                         (select id from sessions
                          where (revoked_at is not null or expires_at <= $1 or refreshed_at <= $1 - $2)
                            and not exists (select 1 from access_tokens t
                                            where t.session_id = sessions.id
                                              and t.revoked_at is null and t.expires_at > $1)
                          limit $3)",
                )
                .bind(now)
                .bind(refresh_idle_ttl)
                .bind(batch)
                .execute(pool)
                .await?
                .rows_affected()
            }
            Sweep::ExpiredDevices => {
                sqlx::query(
                    "delete from devices where token_hash in
                         (select token_hash from devices where expires_at <= $1 limit $2)",
                )
                .bind(now)
                .bind(batch)
                .execute(pool)
                .await?
                .rows_affected()
            }
            Sweep::EndedFailureWindows => {
                sqlx::query(
                    "delete from login_failures where key in
                         (select key from login_failures where window_started <= $1 limit $2)",
                )
                .bind(now.saturating_sub(failure_window))
                .bind(batch)
                .execute(pool)
                .await?
                .rows_affected()
            }
        });
        Ok(done)
    }
}

/// What one kind of housekeeping batch deletes.
#[derive(Debug, Clone, Copy)]
enum Sweep {
    ExpiredAccessTokens,
    RevokedAccessTokens,
    DeadSessions,
    EndedFailureWindows,
    ExpiredDevices,
}

impl Sweep {
    /// Rows in the first batch: each batch is one short transaction. A session takes up
    /// to 64 refresh-token rows with it, so fewer of those.
    fn batch(self) -> i64 {
        match self {
            Sweep::DeadSessions => 100,
            _ => 500,
        }
    }

    /// The size of the next batch, after one of `size` rows took `took`: about
    /// [`BATCH_TIME`]'s worth. A login waits out the batch in progress at each of its
    /// writes (with 3,000,000 tokens on SQLite, a batch of 2,000 held the write lock for
    /// 100 ms and more on a busy machine), so what counts is the time, not the rows.
    fn next_batch(self, size: i64, took: std::time::Duration) -> i64 {
        let took = took.as_secs_f64().max(1e-6);
        let fitting = (size as f64 * BATCH_TIME.as_secs_f64() / took) as i64;
        // At most double at a time: one quick batch (a cache that happened to be warm)
        // does not make the next one ten times as long.
        fitting.clamp(MIN_BATCH, (size * 2).min(self.batch() * 4))
    }
}

/// What one housekeeping batch should take at most, roughly: a login that waits for it
/// three times still answers well under its goal of 250 ms at the 99th percentile.
const BATCH_TIME: std::time::Duration = std::time::Duration::from_millis(10);

/// Rows per batch at the fewest, so that a backlog on a slow disk still moves.
const MIN_BATCH: i64 = 20;

/// The pause between two batches, in which logins and revocations get the database.
const SWEEP_PAUSE: std::time::Duration = std::time::Duration::from_millis(5);

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_batch_is_sized_by_the_time_the_last_one_took() {
        let sweep = Sweep::ExpiredAccessTokens;
        // Four times too long: a quarter of the rows next.
        assert_eq!(sweep.next_batch(500, BATCH_TIME * 4), 125);
        // Ten times too quick: double at most, and never past four times the first size.
        assert_eq!(sweep.next_batch(500, BATCH_TIME / 10), 1000);
        assert_eq!(sweep.next_batch(1500, Duration::ZERO), 2000);
        // However slow the disk, a batch still deletes something.
        assert_eq!(sweep.next_batch(500, Duration::from_secs(60)), MIN_BATCH);
    }
}
