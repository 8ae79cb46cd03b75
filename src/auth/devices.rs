//! Trusted devices (OWASP "device cookies"): a client that has logged in as a user before
//! keeps a cookie naming that user, counts its failed logins on its own, and is spared the
//! per-username lockout that anyone can set off with a few wrong passwords.

use std::time::{Duration, SystemTime};

use super::{
    Auth,
    throttle::Subject,
    token::{self, NewToken, TokenDigest},
};
use crate::store::{Credentials, NewDevice, unix_millis};

/// How long a device stays trusted after its last successful login.
pub const DEVICE_COOKIE_LIFETIME: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// What the device cookie a login carried turned out to be.
#[derive(Default)]
pub(super) struct PresentedDevice {
    /// The cookie, when it names a known device (of any user): it is replaced on success.
    known: Option<TokenDigest>,
    /// When the device is trusted for the user logging in: its id, and the cookie itself,
    /// which it keeps.
    trusted: Option<(i64, String)>,
}

impl PresentedDevice {
    /// Who the attempt is counted against: the trusted device, or else the username.
    pub(super) fn subject<'a>(&self, username: &'a str) -> Subject<'a> {
        match &self.trusted {
            Some((id, _)) => Subject::Device(*id),
            None => Subject::User(username),
        }
    }
}

impl Auth {
    /// Looks up the device cookie a login carried. An unknown, expired, forged or another
    /// user's cookie is no cookie, after the same lookup; so is one whose own failures
    /// have used up the limit.
    pub(super) async fn presented_device(
        &self,
        cookie: Option<&str>,
        username: &str,
    ) -> Result<PresentedDevice, sqlx::Error> {
        let Some(cookie) =
            cookie.filter(|cookie| self.device_cookies && token::is_well_formed(cookie))
        else {
            return Ok(PresentedDevice::default());
        };
        let digest = TokenDigest::of(cookie);
        let Some(device) = self.store.find_device(digest.as_bytes()).await? else {
            return Ok(PresentedDevice::default());
        };
        let now = unix_millis(SystemTime::now());
        let trusted = device.username == username
            && device.expires_at > now
            && !self
                .throttle
                .name_exhausted(&self.store, Subject::Device(device.id))
                .await?;
        Ok(PresentedDevice {
            known: Some(digest),
            trusted: trusted.then(|| (device.id, cookie.to_owned())),
        })
    }

    /// After a successful login: trusts the client for this user, with the cookie it
    /// presented when that was already trusted for them, or a new one (which replaces
    /// whatever cookie it had). Returns the cookie to set; `None` when the feature is off,
    /// or when the user's password changed since the login read it.
    pub(super) async fn remember_device(
        &self,
        presented: PresentedDevice,
        verified: &Credentials,
    ) -> Result<Option<String>, sqlx::Error> {
        if !self.device_cookies {
            return Ok(None);
        }
        let cookie = match presented.trusted {
            Some((_, cookie)) => cookie,
            None => NewToken::generate().token,
        };
        let now = SystemTime::now();
        let trusted = self
            .store
            .trust_device(NewDevice {
                digest: TokenDigest::of(&cookie).as_bytes(),
                user_id: verified.user.id,
                now: unix_millis(now),
                expires_at: unix_millis(now + DEVICE_COOKIE_LIFETIME),
                replacing: presented.known.as_ref().map(TokenDigest::as_bytes),
                max_per_user: self.max_sessions_per_user,
                password_changed_at: verified.password_changed_at,
            })
            .await?;
        Ok(trusted.then_some(cookie))
    }
}
