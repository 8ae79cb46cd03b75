//! `GET /health`: whether the service can reach its database.

use std::sync::Arc;

use poem_openapi::{ApiResponse, Object, OpenApi, payload::Json};

use super::ApiTags;
use crate::{
    auth::Auth,
    error::{Detail, UNAVAILABLE_RETRY_AFTER_SECS},
};

#[derive(Object)]
struct Status {
    /// Always `ok`.
    status: String,
}

#[derive(ApiResponse)]
enum HealthResponse {
    /// The database can be read and written.
    #[oai(status = 200)]
    Ok(Json<Status>),
    /// The database cannot be read or written; retry after the given number of seconds.
    #[oai(status = 503)]
    Unavailable(Json<Detail>, #[oai(header = "Retry-After")] u64),
}

pub struct HealthApi {
    pub auth: Arc<Auth>,
}

#[OpenApi(tag = "ApiTags::Health")]
impl HealthApi {
    /// Health check
    ///
    /// 200 when the database can be read and written, 503 when it cannot.
    #[oai(path = "/health", method = "get", operation_id = "health")]
    async fn health(&self) -> HealthResponse {
        match self.auth.ping().await {
            Ok(()) => HealthResponse::Ok(Json(Status {
                status: "ok".into(),
            })),
            Err(err) => {
                tracing::warn!(error = %err, "health check: database unavailable");
                HealthResponse::Unavailable(
                    Json(Detail {
                        detail: "Database unavailable".into(),
                    }),
                    UNAVAILABLE_RETRY_AFTER_SECS,
                )
            }
        }
    }
}
