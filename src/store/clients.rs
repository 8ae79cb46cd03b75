//! Queries on registered clients, stored with the SHA-256 digest of their secret only.

use sqlx::FromRow;

use super::{Store, on_pool, on_writer, storable};

/// A registered client, for the CLI.
#[derive(Debug, Clone, FromRow)]
pub struct ClientSummary {
    pub client_id: String,
    /// Unix milliseconds.
    pub created_at: i64,
}

impl Store {
    /// Registers a client; `false` when the id is taken.
    pub async fn insert_client(
        &self,
        client_id: &str,
        secret_digest: &[u8; 32],
        now: i64,
    ) -> Result<bool, sqlx::Error> {
        let done = on_writer!(self, pool => {
            sqlx::query(
                "insert into clients (client_id, secret_hash, created_at) values ($1, $2, $3)
                 on conflict (client_id) do nothing",
            )
            .bind(client_id)
            .bind(&secret_digest[..])
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected()
        });
        // The service caches what it read about clients, an unknown id included.
        self.bump_if(done);
        Ok(done == 1)
    }

    /// The digest of the client's secret, if the client is registered.
    pub async fn client_secret_digest(
        &self,
        client_id: &str,
    ) -> Result<Option<Vec<u8>>, sqlx::Error> {
        if !storable(client_id) {
            return Ok(None);
        }
        on_pool!(self, pool => {
            sqlx::query_scalar("select secret_hash from clients where client_id = $1")
                .bind(client_id)
                .fetch_optional(pool)
                .await
        })
    }

    /// Every registered client, by id.
    pub async fn list_clients(&self) -> Result<Vec<ClientSummary>, sqlx::Error> {
        on_pool!(self, pool => {
            sqlx::query_as("select client_id, created_at from clients order by client_id")
                .fetch_all(pool)
                .await
        })
    }

    /// Deletes a client; `false` when there is no such client.
    pub async fn delete_client(&self, client_id: &str) -> Result<bool, sqlx::Error> {
        let done = on_writer!(self, pool => {
            sqlx::query("delete from clients where client_id = $1")
                .bind(client_id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        self.bump_if(done);
        Ok(done == 1)
    }
}
