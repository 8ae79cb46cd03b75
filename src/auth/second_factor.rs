//! The second factor: time-based one-time passwords (RFC 6238: 6 digits, 30 s steps,
//! HMAC-SHA-1, what every authenticator app reads from an `otpauth://` URI). Enrolment
//! by the user (pending until confirmed with a code) or by an operator, and the check a
//! password login makes once the password is known to be right.
//!
//! The code arithmetic is in `totp.rs`. Each code is accepted once: the latest used step
//! is kept in the database and moved forward by one conditional update, so a code used on
//! one replica is refused on all of them.

use std::{
    net::{IpAddr, Ipv4Addr},
    time::{Duration, SystemTime},
};

use secrecy::{ExposeSecret, SecretString};

use super::{
    AccessError, Auth, LoginError, Outcome,
    dpop::DpopRequest,
    loggable,
    throttle::{Attempt, Refusal, Subject},
    totp::{matching_step, new_secret, otpauth_uri, split_appended_code, step_of},
};
use crate::{
    metrics::Metrics,
    store::{TotpFactor, unix_millis},
    users::User,
};

/// How a session's login authenticated its user (RFC 8176 method names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Amr {
    /// A password alone.
    Password,
    /// A password and a one-time code.
    PasswordAndOtp,
}

impl Amr {
    /// As stored with the session: method names, space-separated.
    pub fn stored(self) -> &'static str {
        match self {
            Amr::Password => "pwd",
            Amr::PasswordAndOtp => "pwd otp",
        }
    }

    /// The method names of a stored value; sessions from before second factors have
    /// none stored and were opened with a password.
    pub fn methods(stored: Option<&str>) -> Vec<String> {
        let names: Vec<String> = stored
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if names.is_empty() {
            vec![Amr::Password.stored().to_owned()]
        } else {
            names
        }
    }
}

/// A new secret, shown once: base32 and as an `otpauth://` URI.
pub struct Enrolment {
    pub secret: SecretString,
    pub otpauth_uri: SecretString,
}

/// Why a change to a second factor was refused.
#[derive(Debug, thiserror::Error)]
pub enum SecondFactorError {
    /// The bearer token does not give access (as on `/users/me`).
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error("a second factor is active already")]
    AlreadyActive,
    /// Wrong, missing, malformed or already used.
    #[error("incorrect one-time code")]
    IncorrectCode,
    #[error("too many failed attempts")]
    TooManyAttempts(Duration),
    #[error("database unavailable: {0}")]
    Unavailable(#[from] sqlx::Error),
}

impl Outcome for SecondFactorError {
    fn is_unavailable(&self) -> bool {
        match self {
            SecondFactorError::Access(err) => err.is_unavailable(),
            SecondFactorError::Unavailable(_) => true,
            _ => false,
        }
    }

    fn outcome(&self) -> &'static str {
        match self {
            SecondFactorError::Access(err) => err.outcome(),
            SecondFactorError::AlreadyActive => "already_active",
            SecondFactorError::IncorrectCode => "incorrect_code",
            SecondFactorError::TooManyAttempts(_) => "throttled",
            SecondFactorError::Unavailable(_) => "unavailable",
        }
    }
}

/// What a login must still check once the password is known to be right.
pub struct PendingCheck {
    /// The user's active factor; `None`: the user has none, nothing to check.
    factor: Option<TotpFactor>,
    code: Option<SecretString>,
}

impl Auth {
    /// Before a login's password is checked: the user's active second factor, and the
    /// password to check. Without a `totp` field, a user with an active factor may have
    /// appended the code to the password (as FreeIPA takes it; Swagger UI's dialog has no
    /// field for it): then a password ending in six digits is always taken as the
    /// password followed by the code. One rule, one argon2 verification: a user with a
    /// factor whose real password ends in six digits must send the code (in `totp` or
    /// appended). `user_id`: `None` for an unknown user, who costs the same lookup.
    pub(super) async fn second_factor_input(
        &self,
        user_id: Option<i64>,
        password: SecretString,
        totp: Option<SecretString>,
    ) -> Result<(SecretString, PendingCheck), sqlx::Error> {
        // No user has id -1: the lookup is made, and finds nothing, for unknown users too.
        let factor = self
            .store
            .find_totp(user_id.unwrap_or(-1))
            .await?
            .filter(TotpFactor::is_active);
        if factor.is_none() {
            return Ok((password, PendingCheck { factor, code: None }));
        }
        if totp.is_some() {
            return Ok((password, PendingCheck { factor, code: totp }));
        }
        match split_appended_code(&password) {
            Some((password, code)) => Ok((
                password,
                PendingCheck {
                    factor,
                    code: Some(code),
                },
            )),
            None => Ok((password, PendingCheck { factor, code: None })),
        }
    }

    /// After a login's password was found right: checks the one-time code when the user
    /// has an active factor, and gives the counted `attempt` its verdict: a success clears
    /// the username's failures; a missing code is no failure (the attempt is let go); a
    /// wrong or used code is a failure.
    pub(super) async fn check_second_factor(
        &self,
        user: &User,
        check: PendingCheck,
        attempt: Attempt,
    ) -> Result<Amr, LoginError> {
        let Some(factor) = check.factor else {
            self.throttle.succeeded(&self.store, attempt).await?;
            return Ok(Amr::Password);
        };
        let Some(code) = check.code else {
            self.throttle.let_go(&self.store, attempt).await;
            self.metrics.second_factor("required");
            return Err(LoginError::SecondFactorRequired);
        };
        let now = step_of(SystemTime::now());
        let used = match matching_step(&factor.secret, code.expose_secret(), now, factor.last_step)
        {
            Some(step) => {
                self.store
                    .use_totp_step(user.id, &factor.secret, step as i64)
                    .await?
            }
            None => false,
        };
        if !used {
            self.throttle.failed(&self.store, attempt).await?;
            self.metrics.second_factor("incorrect_code");
            return Err(LoginError::IncorrectOneTimeCode);
        }
        self.throttle.succeeded(&self.store, attempt).await?;
        self.metrics.second_factor("passed");
        Ok(Amr::PasswordAndOtp)
    }

    /// `POST /users/me/totp`: a new pending secret for the token's user, replacing a
    /// pending one; refused while one is active.
    pub async fn enrol_totp(
        &self,
        token: &str,
        dpop: Option<&DpopRequest>,
    ) -> Result<Enrolment, SecondFactorError> {
        let result = self.try_enrol_totp(token, dpop).await;
        self.observe(result.as_ref().map(|_| "pending"), Metrics::second_factor);
        result
    }

    async fn try_enrol_totp(
        &self,
        token: &str,
        dpop: Option<&DpopRequest>,
    ) -> Result<Enrolment, SecondFactorError> {
        let user = self.current_user(token, dpop, None).await?;
        let secret = new_secret();
        let otpauth_uri = otpauth_uri(&secret, &self.issuer, &user.username)
            .expect("a fresh 160-bit secret always makes a URI");
        let now = unix_millis(SystemTime::now());
        if !self
            .store
            .start_totp_enrolment(user.id, secret.expose_secret(), now)
            .await?
        {
            return Err(SecondFactorError::AlreadyActive);
        }
        Ok(Enrolment {
            secret,
            otpauth_uri,
        })
    }

    /// `POST /users/me/totp/confirm`: activates the pending secret with a code of it
    /// (that code is then used).
    pub async fn confirm_totp(
        &self,
        token: &str,
        dpop: Option<&DpopRequest>,
        code: Option<&str>,
        client: Option<IpAddr>,
    ) -> Result<(), SecondFactorError> {
        let result = self
            .change_totp(token, dpop, code, client, Change::Confirm)
            .await;
        self.observe(result.as_ref().map(|_| "enrolled"), Metrics::second_factor);
        result
    }

    /// `DELETE /users/me/totp`: removes the user's secret, pending or active, with a
    /// current code of it (that code is then used).
    pub async fn remove_totp(
        &self,
        token: &str,
        dpop: Option<&DpopRequest>,
        code: Option<&str>,
        client: Option<IpAddr>,
    ) -> Result<(), SecondFactorError> {
        let result = self
            .change_totp(token, dpop, code, client, Change::Remove)
            .await;
        self.observe(result.as_ref().map(|_| "removed"), Metrics::second_factor);
        result
    }

    /// Checks `code` against the user's secret and makes `change` with it. Wrong codes
    /// count against the username and address like failed logins: a stolen access token
    /// cannot be used to guess its way to removing the factor.
    async fn change_totp(
        &self,
        token: &str,
        dpop: Option<&DpopRequest>,
        code: Option<&str>,
        client: Option<IpAddr>,
        change: Change,
    ) -> Result<(), SecondFactorError> {
        let user = self.current_user(token, dpop, None).await?;
        let factor = self.store.find_totp(user.id).await?;
        if change == Change::Confirm && factor.as_ref().is_some_and(TotpFactor::is_active) {
            return Err(SecondFactorError::AlreadyActive);
        }
        let client = client.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let attempt = self
            .throttle
            .count(&self.store, Subject::User(&user.username), client)
            .await
            .map_err(|refusal| match refusal {
                Refusal::Throttled(wait) => SecondFactorError::TooManyAttempts(wait),
                Refusal::Database(err) => SecondFactorError::Unavailable(err),
            })?;
        let now = SystemTime::now();
        let step = factor.as_ref().and_then(|factor| {
            matching_step(
                &factor.secret,
                code.unwrap_or_default(),
                step_of(now),
                factor.last_step,
            )
        });
        let (Some(factor), Some(step)) = (factor, step) else {
            self.throttle.failed(&self.store, attempt).await?;
            return Err(SecondFactorError::IncorrectCode);
        };
        let step = step as i64;
        let done = match change {
            Change::Confirm => {
                self.store
                    .confirm_totp(user.id, &factor.secret, step, unix_millis(now))
                    .await?
            }
            Change::Remove => {
                self.store
                    .remove_totp(user.id, &factor.secret, step)
                    .await?
            }
        };
        if !done {
            self.throttle.failed(&self.store, attempt).await?;
            return Err(SecondFactorError::IncorrectCode);
        }
        // A right code is no failure, but it does not clear the username's failed logins.
        self.throttle.let_go(&self.store, attempt).await;
        let username = loggable(&user.username);
        match change {
            Change::Confirm => tracing::info!(
                target: "audit", event = "totp.enrolled", %username, source = "api",
                "second factor enrolled"
            ),
            Change::Remove => tracing::info!(
                target: "audit", event = "totp.removed", %username, source = "api",
                "second factor removed"
            ),
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Confirm,
    Remove,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amr_reads_what_sessions_store_and_old_sessions_are_password_only() {
        assert_eq!(
            Amr::methods(Some(Amr::PasswordAndOtp.stored())),
            ["pwd", "otp"]
        );
        assert_eq!(Amr::methods(Some(Amr::Password.stored())), ["pwd"]);
        assert_eq!(Amr::methods(None), ["pwd"]);
    }
}
