//! Opaque access tokens: generated from the OS CSPRNG, stored only as SHA-256 digests.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};
use sqlx::{FromRow, SqliteExecutor};

use crate::{scope::Scopes, users::User};

/// 32 random bytes, base64url without padding.
const TOKEN_BYTES: usize = 32;
const TOKEN_LEN: usize = 43;

/// SHA-256 of a token: all the database (and the cache) ever holds of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    pub fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }
}

/// A freshly generated token: the string goes to the client once; only `digest` is stored.
pub struct NewToken {
    pub token: String,
    digest: TokenDigest,
}

impl NewToken {
    pub fn generate() -> Self {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes).expect("the OS random number generator is available");
        let token = URL_SAFE_NO_PAD.encode(bytes);
        let digest = TokenDigest::of(&token);
        Self { token, digest }
    }
}

/// Whether `token` could be one of ours; anything else is rejected without a query.
pub fn is_well_formed(token: &str) -> bool {
    token.len() == TOKEN_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Milliseconds since the Unix epoch, as stored in the tokens table.
pub fn unix_millis(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Stores `token` for `user_id` with `scopes`, live for `ttl` from `now`.
pub async fn store(
    db: impl SqliteExecutor<'_>,
    token: &NewToken,
    user_id: i64,
    scopes: &Scopes,
    now: SystemTime,
    ttl: Duration,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into access_tokens (token_hash, user_id, scopes, issued_at, expires_at)
         values (?, ?, ?, ?, ?)",
    )
    .bind(&token.digest.0[..])
    .bind(user_id)
    .bind(scopes.to_string())
    .bind(unix_millis(now))
    .bind(unix_millis(now + ttl))
    .execute(db)
    .await?;
    Ok(())
}

/// A live token and its owner, as read from the database.
#[derive(Debug, Clone)]
pub struct LiveToken {
    pub user: User,
    /// The scopes granted at login.
    pub scopes: Scopes,
    /// Unix milliseconds.
    pub expires_at: i64,
}

#[derive(FromRow)]
struct LiveTokenRow {
    #[sqlx(flatten)]
    user: User,
    token_scopes: String,
    expires_at: i64,
}

/// The token with this digest and its owner, if it is live: known, not expired, not revoked.
pub async fn find_user_by_token(
    db: impl SqliteExecutor<'_>,
    digest: &TokenDigest,
    now: SystemTime,
) -> Result<Option<LiveToken>, sqlx::Error> {
    let row: Option<LiveTokenRow> = sqlx::query_as(
        "select u.id, u.username, u.email, u.full_name, u.disabled, u.scopes,
                t.scopes as token_scopes, t.expires_at
         from access_tokens t join users u on u.id = t.user_id
         where t.token_hash = ? and t.revoked_at is null and t.expires_at > ?",
    )
    .bind(&digest.0[..])
    .bind(unix_millis(now))
    .fetch_optional(db)
    .await?;
    Ok(row.map(|row| LiveToken {
        user: row.user,
        scopes: Scopes::from_stored(&row.token_scopes),
        expires_at: row.expires_at,
    }))
}

/// Revokes `token`; revoking an unknown or dead token is not an error (RFC 7009).
pub async fn revoke(
    db: impl SqliteExecutor<'_>,
    digest: &TokenDigest,
    now: SystemTime,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update access_tokens set revoked_at = ? where token_hash = ? and revoked_at is null",
    )
    .bind(unix_millis(now))
    .bind(&digest.0[..])
    .execute(db)
    .await?;
    Ok(())
}

/// Revokes every live token of the user named `username`.
pub async fn revoke_all_of_user(
    db: impl SqliteExecutor<'_>,
    username: &str,
    now: SystemTime,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "update access_tokens set revoked_at = ?
         where revoked_at is null
           and user_id = (select id from users where username = ?)",
    )
    .bind(unix_millis(now))
    .bind(username)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Deletes the rows of tokens that can no longer be used: expired or revoked.
pub async fn delete_dead(db: impl SqliteExecutor<'_>, now: SystemTime) -> Result<u64, sqlx::Error> {
    let done =
        sqlx::query("delete from access_tokens where expires_at <= ? or revoked_at is not null")
            .bind(unix_millis(now))
            .execute(db)
            .await?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_43_url_safe_characters_and_differ() {
        let a = NewToken::generate();
        let b = NewToken::generate();
        assert!(is_well_formed(&a.token), "{}", a.token);
        assert_ne!(a.token, b.token);
        assert_eq!(a.digest, TokenDigest::of(&a.token));
    }

    #[test]
    fn padding_and_other_alphabets_are_not_well_formed() {
        assert!(!is_well_formed(""));
        assert!(!is_well_formed(&"a".repeat(42)));
        assert!(!is_well_formed(&format!("{}=", "a".repeat(42))));
        assert!(!is_well_formed(&format!("{}+", "a".repeat(42))));
    }
}
