//! Queries on failed-login counts: one row per counted key, in a fixed window, with the
//! attempts still being checked counted apart from the failures already recorded.

use std::borrow::Cow;

use super::{Store, on_pool, on_writer};

/// How long an attempt may stay in flight before it is taken for one that will never
/// report (its replica died): a check takes one password hash, well under a second.
pub const STALE_PENDING_MILLIS: i64 = 30_000;

/// What counting an attempt found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// Counted as in flight: report its verdict with [`Store::attempt_failed`] or
    /// [`Store::attempt_succeeded`].
    InFlight,
    /// `max` failures are recorded; the window ends at this Unix millisecond.
    LimitReached(i64),
    /// Failures and attempts in flight together fill the limit: their verdicts decide.
    Busy,
}

/// PostgreSQL cannot store a NUL in text; a key is only ever compared, so it is spelt
/// without one.
fn storable(key: &str) -> Cow<'_, str> {
    if key.contains('\0') {
        Cow::Owned(key.replace('\0', "\u{fffd}"))
    } else {
        Cow::Borrowed(key)
    }
}

impl Store {
    /// Counts one attempt against `key` as in flight, unless the failures recorded and the
    /// attempts in flight already fill `max` in the window open at `now`: check and count
    /// are one statement, so parallel attempts (on any number of replicas) cannot all slip
    /// under the limit.
    pub async fn count_attempt(
        &self,
        key: &str,
        max: u32,
        window: i64,
        now: i64,
    ) -> Result<Counted, sqlx::Error> {
        let key = storable(key);
        // The row is inserted or updated (one row affected) unless the limit holds.
        let counted = on_writer!(self, pool => {
            sqlx::query(
                "insert into login_failures as f (key, failures, window_started, pending, pending_at)
                 values ($1, 0, $2, 1, $2)
                 on conflict (key) do update set
                     failures = case when f.window_started <= $3 then 0 else f.failures end,
                     window_started = case when f.window_started <= $3 then $2 else f.window_started end,
                     pending = case when f.window_started <= $3 or f.pending_at <= $5 then 1
                                    else f.pending + 1 end,
                     pending_at = $2
                 where f.window_started <= $3
                    or f.failures + case when f.pending_at <= $5 then 0 else f.pending end < $4",
            )
            .bind(key.as_ref())
            .bind(now)
            .bind(now.saturating_sub(window))
            .bind(i64::from(max))
            .bind(now.saturating_sub(STALE_PENDING_MILLIS))
            .execute(pool)
            .await?
            .rows_affected()
        });
        if counted > 0 {
            return Ok(Counted::InFlight);
        }
        let row: Option<(i64, i64)> = on_pool!(self, pool => {
            sqlx::query_as("select failures, window_started from login_failures where key = $1")
                .bind(key.as_ref())
                .fetch_optional(pool)
                .await?
        });
        Ok(match row {
            Some((failures, started)) if failures >= i64::from(max) => {
                Counted::LimitReached(started.saturating_add(window))
            }
            // Attempts in flight hold the rest, or the window has just ended: try again.
            _ => Counted::Busy,
        })
    }

    /// When `key` may try again, if `max` failures are recorded in the window open at
    /// `now`: a read, for refusing early without counting.
    pub async fn attempts_exhausted(
        &self,
        key: &str,
        max: u32,
        window: i64,
        now: i64,
    ) -> Result<Option<i64>, sqlx::Error> {
        let key = storable(key);
        let started: Option<i64> = on_pool!(self, pool => {
            sqlx::query_scalar(
                "select window_started from login_failures
                 where key = $1 and failures >= $2 and window_started > $3",
            )
            .bind(key.as_ref())
            .bind(i64::from(max))
            .bind(now.saturating_sub(window))
            .fetch_optional(pool)
            .await?
        });
        Ok(started.map(|started| started.saturating_add(window)))
    }

    /// An attempt in flight against `key` failed: it is recorded as a failure.
    pub async fn attempt_failed(&self, key: &str) -> Result<(), sqlx::Error> {
        self.settle_attempt(
            key,
            "update login_failures
             set failures = failures + 1,
                 pending = case when pending > 0 then pending - 1 else 0 end
             where key = $1",
        )
        .await
    }

    /// An attempt in flight against `key` succeeded; with `forget`, the failures recorded
    /// against it are forgotten too.
    pub async fn attempt_succeeded(&self, key: &str, forget: bool) -> Result<(), sqlx::Error> {
        let sql = if forget {
            "update login_failures
             set failures = 0, pending = case when pending > 0 then pending - 1 else 0 end
             where key = $1"
        } else {
            "update login_failures
             set pending = case when pending > 0 then pending - 1 else 0 end
             where key = $1"
        };
        self.settle_attempt(key, sql).await
    }

    async fn settle_attempt(&self, key: &str, sql: &'static str) -> Result<(), sqlx::Error> {
        let key = storable(key);
        on_writer!(self, pool => {
            sqlx::query(sql)
                .bind(key.as_ref())
                .execute(pool)
                .await
                .map(drop)
        })
    }
}
