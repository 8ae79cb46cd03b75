//! Queries on trusted devices: the clients that logged in as a user before, known by the
//! SHA-256 digest of their cookie only.

use sqlx::FromRow;

use super::{Store, on_pool, on_writer};

/// A device as found, with the user it is trusted for.
#[derive(Debug, Clone, FromRow)]
pub struct DeviceRecord {
    pub id: i64,
    pub username: String,
    pub expires_at: i64,
}

/// A device to trust after a successful login.
pub struct NewDevice<'a> {
    pub digest: &'a [u8; 32],
    pub user_id: i64,
    pub now: i64,
    pub expires_at: i64,
    /// The cookie the client presented, whoever it named: one cookie per client, so it
    /// goes (unless it is this one, kept for the same user).
    pub replacing: Option<&'a [u8; 32]>,
    /// How many devices the user may have; the least recently used go first.
    pub max_per_user: u32,
    /// When the user's password was set, as the login read it: a password changed since
    /// (which forgets every device) means no trust.
    pub password_changed_at: i64,
}

/// Forgets every device of a user: `$1` the user's id. With a password change or a logout.
pub(super) const FORGET_USER_DEVICES: &str = "delete from devices where user_id = $1";

impl Store {
    /// The device with this cookie digest, and the user it is trusted for.
    pub async fn find_device(
        &self,
        digest: &[u8; 32],
    ) -> Result<Option<DeviceRecord>, sqlx::Error> {
        on_pool!(self, pool => {
            sqlx::query_as(
                "select d.id, u.username, d.expires_at
                 from devices d join users u on u.id = d.user_id
                 where d.token_hash = $1",
            )
            .bind(&digest[..])
            .fetch_optional(pool)
            .await
        })
    }

    /// Trusts a device for a user, in one transaction: the cookie it replaces goes, and
    /// the user's least recently used devices beyond `max_per_user`. `false`, and nothing
    /// written, when the user's password changed since the login read it.
    pub async fn trust_device(&self, device: NewDevice<'_>) -> Result<bool, sqlx::Error> {
        let id = super::random_id();
        on_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            if let Some(replacing) = device.replacing.filter(|old| *old != device.digest) {
                sqlx::query("delete from devices where token_hash = $1")
                    .bind(&replacing[..])
                    .execute(&mut *tx)
                    .await?;
            }
            // The same cookie again (a trusted device logging in once more) only lives on.
            let trusted = sqlx::query(
                "insert into devices (token_hash, id, user_id, created_at, last_used_at, expires_at)
                 select $1, $2, id, $4, $4, $5 from users where id = $3 and password_changed_at = $6
                 on conflict (token_hash) do update set last_used_at = $4, expires_at = $5",
            )
            .bind(&device.digest[..])
            .bind(id)
            .bind(device.user_id)
            .bind(device.now)
            .bind(device.expires_at)
            .bind(device.password_changed_at)
            .execute(&mut *tx)
            .await?;
            if trusted.rows_affected() == 0 {
                return Ok(false);
            }
            sqlx::query(
                "delete from devices
                 where user_id = $1
                   and token_hash not in (select token_hash from devices where user_id = $1
                                          order by last_used_at desc, created_at desc
                                          limit $2)",
            )
            .bind(device.user_id)
            .bind(i64::from(device.max_per_user.max(1)))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(true)
        })
    }
}
