//! Queries on failed-login counts: one row per counted key, in a fixed window.

use super::{Store, on_pool};

impl Store {
    /// Counts one attempt against `key`, unless `max` attempts are already counted in the
    /// window that is open at `now`: check and count are one statement, so parallel
    /// attempts (on any number of replicas) cannot all slip under the limit. Returns
    /// `Ok(None)` when counted, or when the limit is reached, the Unix millisecond at
    /// which the window ends.
    pub async fn count_attempt(
        &self,
        key: &str,
        max: u32,
        window: i64,
        now: i64,
    ) -> Result<Option<i64>, sqlx::Error> {
        // The row is inserted or updated (one row affected) unless the limit holds.
        let counted = on_pool!(self, pool => {
            sqlx::query(
                "insert into login_failures as f (key, failures, window_started)
                 values ($1, 1, $2)
                 on conflict (key) do update set
                     failures = case when f.window_started <= $3 then 1 else f.failures + 1 end,
                     window_started = case when f.window_started <= $3 then $2 else f.window_started end
                 where f.window_started <= $3 or f.failures < $4",
            )
            .bind(key)
            .bind(now)
            .bind(now.saturating_sub(window))
            .bind(i64::from(max))
            .execute(pool)
            .await?
            .rows_affected()
        });
        if counted > 0 {
            return Ok(None);
        }
        let started: Option<i64> = on_pool!(self, pool => {
            sqlx::query_scalar("select window_started from login_failures where key = $1")
                .bind(key)
                .fetch_optional(pool)
                .await?
        });
        // The window may have ended in between: then the caller may simply try again.
        Ok(Some(
            started.map_or(now, |started| started.saturating_add(window)),
        ))
    }

    /// When `key` may try again, if it has used up `max` attempts in the window open at
    /// `now`: a read, for refusing early without counting.
    pub async fn attempts_exhausted(
        &self,
        key: &str,
        max: u32,
        window: i64,
        now: i64,
    ) -> Result<Option<i64>, sqlx::Error> {
        let started: Option<i64> = on_pool!(self, pool => {
            sqlx::query_scalar(
                "select window_started from login_failures
                 where key = $1 and failures >= $2 and window_started > $3",
            )
            .bind(key)
            .bind(i64::from(max))
            .bind(now.saturating_sub(window))
            .fetch_optional(pool)
            .await?
        });
        Ok(started.map(|started| started.saturating_add(window)))
    }

    /// Takes back one attempt counted against `key` (it turned out not to be a failure).
    pub async fn uncount_attempt(&self, key: &str) -> Result<(), sqlx::Error> {
        on_pool!(self, pool => {
            sqlx::query(
                "update login_failures set failures = failures - 1
                 where key = $1 and failures > 0",
            )
            .bind(key)
            .execute(pool)
            .await
            .map(drop)
        })
    }

    /// Forgets every attempt counted against `key`.
    pub async fn forget_attempts(&self, key: &str) -> Result<(), sqlx::Error> {
        on_pool!(self, pool => {
            sqlx::query("delete from login_failures where key = $1")
                .bind(key)
                .execute(pool)
                .await
                .map(drop)
        })
    }
}
