//! Queries on second factors: one TOTP secret per user, pending or active, and the
//! latest time step whose code was used. Every "use step N" is one conditional update,
//! so a code is accepted once across all replicas.

use std::collections::HashMap;

use sqlx::FromRow;

use super::{Store, on_pool, on_writer};

/// A user's TOTP secret as stored.
#[derive(Clone, FromRow)]
pub struct TotpFactor {
    /// Base32, as in the `otpauth://` URI.
    pub secret: String,
    /// Unix ms; `None` while pending (not yet confirmed with a code).
    pub confirmed_at: Option<i64>,
    /// The latest step whose code was used, if any.
    pub last_step: Option<i64>,
}

impl std::fmt::Debug for TotpFactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret: a Debug print may end up in a log.
        f.debug_struct("TotpFactor")
            .field("confirmed_at", &self.confirmed_at)
            .field("last_step", &self.last_step)
            .finish_non_exhaustive()
    }
}

impl TotpFactor {
    pub fn is_active(&self) -> bool {
        self.confirmed_at.is_some()
    }
}

/// The condition under which step `$1` may still be used.
macro_rules! step_unused {
    () => {
        "(last_step is null or last_step < $1)"
    };
}

impl Store {
    /// The second factor of the user with this id, pending or active.
    pub async fn find_totp(&self, user_id: i64) -> Result<Option<TotpFactor>, sqlx::Error> {
        on_pool!(self, pool => {
            sqlx::query_as(
                "select secret, confirmed_at, last_step from totp_factors where user_id = $1",
            )
            .bind(user_id)
            .fetch_optional(pool)
            .await
        })
    }

    /// Whether each user that has a second factor has an active one, by user id.
    pub async fn totp_states(&self) -> Result<HashMap<i64, bool>, sqlx::Error> {
        let rows: Vec<(i64, Option<i64>)> = on_pool!(self, pool => {
            sqlx::query_as("select user_id, confirmed_at from totp_factors")
                .fetch_all(pool)
                .await?
        });
        Ok(rows
            .into_iter()
            .map(|(user, confirmed)| (user, confirmed.is_some()))
            .collect())
    }

    /// Stores `secret` as the user's pending second factor, replacing a pending one;
    /// `false` (nothing written) when the user already has an active one.
    pub async fn start_totp_enrolment(
        &self,
        user_id: i64,
        secret: &str,
        now: i64,
    ) -> Result<bool, sqlx::Error> {
        let done = on_writer!(self, pool => {
            sqlx::query(
                "insert into totp_factors (user_id, secret, created_at) values ($1, $2, $3)
                 on conflict (user_id) do update
                     set secret = excluded.secret, created_at = excluded.created_at,
                         last_step = null
                     where totp_factors.confirmed_at is null",
            )
            .bind(user_id)
            .bind(secret)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(done == 1)
    }

    /// Stores `secret` as the user's active second factor at once, replacing any other
    /// (an operator's enrolment).
    pub async fn set_totp_active(
        &self,
        user_id: i64,
        secret: &str,
        now: i64,
    ) -> Result<(), sqlx::Error> {
        on_writer!(self, pool => {
            sqlx::query(
                "insert into totp_factors (user_id, secret, created_at, confirmed_at)
                 values ($1, $2, $3, $3)
                 on conflict (user_id) do update
                     set secret = excluded.secret, created_at = excluded.created_at,
                         confirmed_at = excluded.confirmed_at, last_step = null",
            )
            .bind(user_id)
            .bind(secret)
            .bind(now)
            .execute(pool)
            .await
            .map(drop)
        })
    }

    /// Activates the pending `secret` with the code of `step`, which counts as used;
    /// `false` when the secret is no longer the pending one, or the step was used.
    pub async fn confirm_totp(
        &self,
        user_id: i64,
        secret: &str,
        step: i64,
        now: i64,
    ) -> Result<bool, sqlx::Error> {
        let done = on_writer!(self, pool => {
            sqlx::query(concat!(
                "update totp_factors set last_step = $1, confirmed_at = $2
                 where user_id = $3 and secret = $4 and confirmed_at is null and ",
                step_unused!()
            ))
            .bind(step)
            .bind(now)
            .bind(user_id)
            .bind(secret)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(done == 1)
    }

    /// Uses the code of `step` of the active `secret` for a login; `false` when that
    /// step or a later one was used already (on any replica), or the secret changed.
    pub async fn use_totp_step(
        &self,
        user_id: i64,
        secret: &str,
        step: i64,
    ) -> Result<bool, sqlx::Error> {
        let done = on_writer!(self, pool => {
            sqlx::query(concat!(
                "update totp_factors set last_step = $1
                 where user_id = $2 and secret = $3 and confirmed_at is not null and ",
                step_unused!()
            ))
            .bind(step)
            .bind(user_id)
            .bind(secret)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(done == 1)
    }

    /// Removes `secret` (pending or active) with the code of `step`; `false` when that
    /// step was used already, or the secret changed.
    pub async fn remove_totp(
        &self,
        user_id: i64,
        secret: &str,
        step: i64,
    ) -> Result<bool, sqlx::Error> {
        let done = on_writer!(self, pool => {
            sqlx::query(concat!(
                "delete from totp_factors where user_id = $2 and secret = $3 and ",
                step_unused!()
            ))
            .bind(step)
            .bind(user_id)
            .bind(secret)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(done == 1)
    }

    /// Removes the user's second factor whatever its state (an operator's); `false`
    /// when there was none.
    pub async fn delete_totp(&self, user_id: i64) -> Result<bool, sqlx::Error> {
        let done = on_writer!(self, pool => {
            sqlx::query("delete from totp_factors where user_id = $1")
                .bind(user_id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(done == 1)
    }
}
