//! `/users/me/totp`: a user enrols, confirms and removes their second factor (TOTP,
//! RFC 6238) with a bearer token.

use std::sync::Arc;

use poem::web::RemoteAddr;
use poem_openapi::{ApiResponse, Object, OpenApi, payload::Json, types::Example};
use secrecy::ExposeSecret;

use super::{ApiTags, bearer::BearerToken, form::UrlEncoded};
use crate::{
    auth::{Auth, Enrolment},
    error::{TotpConfirmErrorResponse, TotpEnrolErrorResponse, TotpRemoveErrorResponse},
};

/// A new secret for an authenticator app; it is shown this once.
#[derive(Object)]
#[oai(rename = "TotpEnrolment", example)]
struct EnrolmentBody {
    /// The secret, base32 (for typing into an app by hand).
    secret: String,
    /// The same secret as an `otpauth://totp/` URI (for a QR code).
    otpauth_uri: String,
}

impl Example for EnrolmentBody {
    fn example() -> Self {
        Self {
            secret: "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP".into(),
            otpauth_uri: "otpauth://totp/auth.example.com:johndoe?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&issuer=auth.example.com".into(),
        }
    }
}

impl From<Enrolment> for EnrolmentBody {
    fn from(enrolment: Enrolment) -> Self {
        Self {
            secret: enrolment.secret.expose_secret().to_owned(),
            otpauth_uri: enrolment.otpauth_uri.expose_secret().to_owned(),
        }
    }
}

/// The state of the user's second factor after a change.
#[derive(Object)]
#[oai(rename = "TotpStatus")]
struct StatusBody {
    /// `active` (now required at login) or `removed`.
    status: String,
}

/// The form of a confirmation or a removal.
#[derive(Object)]
#[oai(rename = "TotpCodeRequest")]
#[allow(dead_code)] // Describes the form in OpenAPI; `UrlEncoded` reads the fields.
struct CodeForm {
    /// The current 6-digit code from the authenticator app.
    #[oai(validator(pattern = "^[0-9]{6}$"))]
    code: String,
}

#[derive(ApiResponse)]
enum EnrolResponse {
    /// A new pending secret: not required at login until confirmed. Never cache it.
    #[oai(status = 200)]
    Ok(
        Json<EnrolmentBody>,
        #[oai(header = "Cache-Control")] String,
        #[oai(header = "Pragma")] String,
    ),
}

#[derive(ApiResponse)]
enum ChangeResponse {
    /// Done: `{"status": "active"}` or `{"status": "removed"}`.
    #[oai(status = 200)]
    Ok(Json<StatusBody>),
}

pub struct TotpApi {
    pub auth: Arc<Auth>,
}

#[OpenApi(tag = "ApiTags::Users")]
impl TotpApi {
    /// Start enrolling a second factor (TOTP)
    ///
    /// Answers a new secret and its `otpauth://` URI for an authenticator app. It is
    /// pending, not yet required at login, until confirmed with a code; calling this
    /// again while pending replaces it. 409 while one is active.
    #[oai(path = "/users/me/totp", method = "post", operation_id = "enrol_totp")]
    async fn enrol(&self, token: BearerToken) -> Result<EnrolResponse, TotpEnrolErrorResponse> {
        let enrolment = self.auth.enrol_totp(token.as_str(), token.dpop()).await?;
        Ok(EnrolResponse::Ok(
            Json(enrolment.into()),
            "no-store".into(),
            "no-cache".into(),
        ))
    }

    /// Confirm the pending second factor
    ///
    /// With a current code from the app: from now on, logging in needs a code too
    /// (form field `totp` of `POST /token`). The code counts as used.
    #[oai(
        path = "/users/me/totp/confirm",
        method = "post",
        operation_id = "confirm_totp"
    )]
    async fn confirm(
        &self,
        token: BearerToken,
        form: UrlEncoded<CodeForm>,
        remote: &RemoteAddr,
    ) -> Result<ChangeResponse, TotpConfirmErrorResponse> {
        let client = remote.as_socket_addr().map(|addr| addr.ip());
        self.auth
            .confirm_totp(token.as_str(), token.dpop(), code(&form), client)
            .await?;
        Ok(status("active"))
    }

    /// Remove the second factor
    ///
    /// With a current code of it (form field `code`); a pending one is removed the same
    /// way. The code counts as used.
    #[oai(
        path = "/users/me/totp",
        method = "delete",
        operation_id = "remove_totp"
    )]
    async fn remove(
        &self,
        token: BearerToken,
        form: UrlEncoded<CodeForm>,
        remote: &RemoteAddr,
    ) -> Result<ChangeResponse, TotpRemoveErrorResponse> {
        let client = remote.as_socket_addr().map(|addr| addr.ip());
        self.auth
            .remove_totp(token.as_str(), token.dpop(), code(&form), client)
            .await?;
        Ok(status("removed"))
    }
}

/// The form's `code`; absent, empty or repeated, there is none (an incorrect code).
fn code(form: &UrlEncoded<CodeForm>) -> Option<&str> {
    form.get("code").ok().flatten()
}

fn status(status: &str) -> ChangeResponse {
    ChangeResponse::Ok(Json(StatusBody {
        status: status.to_owned(),
    }))
}
