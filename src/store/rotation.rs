//! A session's rotation on refresh, as each backend does it fastest: on SQLite in a
//! group commit (the rotations that queued up while the last group ran, one transaction,
//! one command that the connection's worker runs start to end), on PostgreSQL one
//! function call. What a rotation does is the same on both (see
//! [`Store::refresh_session`]).
//!
//! [`Store::refresh_session`]: super::Store::refresh_session

use std::sync::OnceLock;

use sqlx::Row;
use tokio::sync::{mpsc, oneshot};

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

/// One rotation's statements on SQLite, run in a group's transaction (see
/// [`group_sql`]): the write lock is held from `begin immediate` to `commit` without a
/// wait for any task between statements (each statement sent on its own cost a trip
/// through the async runtime while the lock was held, and every other writer waited for
/// it). Each write runs only if the one before it did (`changes()` is the row count of
/// the statement just before): the session is live, the presented token was unspent (or
/// this is a retry, `$3` null, which retires whatever is live: the first update, a no-op
/// otherwise), the access token went in. The last `select` says what happened.
///
/// `$1` now, `$2` session, `$3` the token to spend, `$4`..`$7` the access token, `$8` the
/// new refresh token, `$9` how many of the newest rows the trim passes over, `$10`
/// [`USE_PRECISION_MS`].
const ROTATE_STATEMENTS: &str = "
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
";

/// How many parameters [`ROTATE_STATEMENTS`] takes.
const ROTATE_PARAMETERS: usize = 10;

/// The most rotations one group commits: past a dozen or so, a bigger group saves next
/// to nothing more, and each size is a statement of its own in the writer's cache of
/// prepared statements (a hundred, shared with every other write).
const MOST_PER_GROUP: usize = 16;

/// SQLite's rotations, committed in groups by a task of its own.
///
/// Why: on SQLite writes take turns, and a refresh's rotation is short; what it costs
/// is its turn (the transaction's locks, the log frames of the pages it touched, the trips
/// between this process's threads to hand the one writing connection over), paid again
/// by every rotation when each commits alone. A group pays it once: the pages the
/// rotations share (the newest rows of `access_tokens` and `refresh_tokens`) go to the
/// log once. Each rotation still runs its statements in order after the one before it,
/// as it would alone, so a rotation sees what an earlier one in its group did.
#[derive(Debug, Default)]
pub(super) struct SqliteQueue {
    jobs: OnceLock<mpsc::UnboundedSender<Job>>,
}

/// One rotation waiting for its group, with where its outcome goes.
struct Job {
    rotate: OwnedRotate,
    outcome: oneshot::Sender<Result<Rotation, sqlx::Error>>,
}

/// [`Rotate`] with its values owned: it waits in the queue.
struct OwnedRotate {
    session_id: i64,
    user_id: i64,
    spend: Option<[u8; 32]>,
    now: i64,
    access_digest: [u8; 32],
    access_scopes: String,
    access_expires_at: i64,
    refresh: [u8; 32],
}

impl SqliteQueue {
    /// Rotates through the group commit; the task that commits the groups starts with
    /// the first rotation, on the writer, and runs for as long as the store does.
    pub(super) async fn rotate(
        &self,
        writer: &sqlx::SqlitePool,
        rotate: &Rotate<'_>,
    ) -> Result<Rotation, sqlx::Error> {
        let jobs = self.jobs.get_or_init(|| {
            let (jobs, queue) = mpsc::unbounded_channel();
            tokio::spawn(commit_groups(writer.clone(), queue));
            jobs
        });
        let (outcome, reply) = oneshot::channel();
        let job = Job {
            rotate: OwnedRotate {
                session_id: rotate.session_id,
                user_id: rotate.user_id,
                spend: rotate.spend.copied(),
                now: rotate.now,
                access_digest: *rotate.access.digest,
                access_scopes: rotate.access.scopes.to_string(),
                access_expires_at: rotate.access.expires_at,
                refresh: *rotate.refresh,
            },
            outcome,
        };
        let gone = || sqlx::Error::Protocol("the group commit of rotations stopped".into());
        jobs.send(job).map_err(|_| gone())?;
        // The group runs to its end whether or not this caller still waits for it.
        reply.await.map_err(|_| gone())?
    }
}

/// Takes what queued up while the last group ran (at least one rotation) and commits it
/// as one group, until the store is gone.
async fn commit_groups(writer: sqlx::SqlitePool, mut queue: mpsc::UnboundedReceiver<Job>) {
    let mut group = Vec::with_capacity(MOST_PER_GROUP);
    while queue.recv_many(&mut group, MOST_PER_GROUP).await > 0 {
        let rotations: Vec<&OwnedRotate> = group.iter().map(|job| &job.rotate).collect();
        let mut outcomes = match commit_group(&writer, &rotations).await {
            Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
            // A constraint that one rotation broke: alone, each gets its own outcome.
            Err(err) if group.len() > 1 && broke_a_constraint(&err) => {
                let mut outcomes = Vec::with_capacity(group.len());
                for rotate in &rotations {
                    outcomes.push(
                        commit_group(&writer, std::slice::from_ref(rotate))
                            .await
                            .map(|mut one| one.remove(0)),
                    );
                }
                outcomes
            }
            // Anything else (the write lock not had in time, a full disk) would fail each
            // of them alone too, one after the other.
            Err(err) => {
                let said = err.to_string();
                let mut outcomes = vec![Err(err)];
                outcomes.extend((1..group.len()).map(|_| {
                    Err(sqlx::Error::Protocol(format!(
                        "the rotations committed with this one failed: {said}"
                    )))
                }));
                outcomes
            }
        };
        for (job, outcome) in group.drain(..).zip(outcomes.drain(..)) {
            // A caller that hung up is told nothing: its rotation stands, as a lost
            // answer's would.
            let _ = job.outcome.send(outcome);
        }
    }
}

/// Whether `err` is a constraint that a statement broke (a unique key, a foreign key).
fn broke_a_constraint(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .is_some_and(|err| !matches!(err.kind(), sqlx::error::ErrorKind::Other))
}

/// Runs [`ROTATE_STATEMENTS`] for each of `rotations`, in order, in one transaction on the
/// writer; each one's outcome, in the same order.
async fn commit_group(
    writer: &sqlx::SqlitePool,
    rotations: &[&OwnedRotate],
) -> Result<Vec<Rotation>, sqlx::Error> {
    // Made of the constant statements and parameter numbers only.
    let mut batch = sqlx::query(sqlx::AssertSqlSafe(group_sql(rotations.len())));
    for rotate in rotations {
        batch = batch
            .bind(rotate.now)
            .bind(rotate.session_id)
            .bind(rotate.spend.map(|spend| spend.to_vec()))
            .bind(rotate.access_digest.to_vec())
            .bind(rotate.user_id)
            .bind(rotate.access_scopes.clone())
            .bind(rotate.access_expires_at)
            .bind(rotate.refresh.to_vec())
            .bind(REFRESH_TOKEN_ROWS_PER_SESSION - 1)
            .bind(USE_PRECISION_MS);
    }
    let mut connection = writer.acquire().await?;
    let rows = match batch.fetch_all(&mut *connection).await {
        Ok(rows) => rows,
        Err(err) => {
            let _ = sqlx::raw_sql("rollback").execute(&mut *connection).await;
            return Err(err);
        }
    };
    if rows.len() != rotations.len() {
        return Err(sqlx::Error::RowNotFound);
    }
    rows.iter()
        .map(|outcome| {
            let (live, issued): (bool, bool) = (outcome.try_get(0)?, outcome.try_get(1)?);
            Ok(match (live, issued) {
                (_, true) => Rotation::Issued,
                (true, false) => Rotation::AlreadySpent,
                (false, false) => Rotation::SessionEnded,
            })
        })
        .collect()
}

/// The statement of a group of `size` rotations: [`ROTATE_STATEMENTS`] once for each,
/// its parameters numbered on past the ones before it, in one transaction.
fn group_sql(size: usize) -> String {
    let mut sql = String::from("begin immediate;");
    for index in 0..size {
        let offset = index * ROTATE_PARAMETERS;
        let mut rest = ROTATE_STATEMENTS;
        while let Some(at) = rest.find('$') {
            sql.push_str(&rest[..=at]);
            rest = &rest[at + 1..];
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            let number: usize = rest[..digits].parse().expect("numbered parameters only");
            sql.push_str(&(number + offset).to_string());
            rest = &rest[digits..];
        }
        sql.push_str(rest);
    }
    sql.push_str("commit;");
    sql
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

#[cfg(test)]
mod tests {
    use super::*;

    /// How often parameter `$number` (and not `$number0`) occurs in `sql`.
    fn uses(sql: &str, number: usize) -> usize {
        let name = format!("${number}");
        sql.match_indices(&name)
            .filter(|(at, _)| !sql[at + name.len()..].starts_with(|c: char| c.is_ascii_digit()))
            .count()
    }

    #[test]
    fn each_rotation_of_a_group_has_parameters_of_its_own() {
        assert_eq!(
            group_sql(1),
            format!("begin immediate;{ROTATE_STATEMENTS}commit;")
        );
        let three = group_sql(3);
        assert_eq!(three.matches("select exists").count(), 3);
        for number in 1..=ROTATE_PARAMETERS {
            let alone = uses(ROTATE_STATEMENTS, number);
            assert!(alone > 0);
            for index in 0..3 {
                assert_eq!(uses(&three, number + index * ROTATE_PARAMETERS), alone);
            }
        }
        assert_eq!(uses(&three, 3 * ROTATE_PARAMETERS + 1), 0);
    }
}
