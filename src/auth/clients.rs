//! Registered clients (services that introspect tokens): their ids, and their secrets,
//! generated from the OS CSPRNG, stored as SHA-256 digests, checked in constant time and
//! throttled like logins.

use std::net::{IpAddr, Ipv4Addr};

use subtle::ConstantTimeEq;

use super::{
    Auth, ClientAuthError, loggable,
    throttle::Subject,
    token::{NewToken, TokenDigest},
};

/// Longer client ids are refused.
const MAX_CLIENT_ID_LEN: usize = 128;

/// Compared against when the client is unknown, so an unknown id costs the same work.
const NO_DIGEST: [u8; 32] = [0; 32];

/// A new client secret: the string is shown once; only `digest` is stored.
pub fn generate_secret() -> NewToken {
    NewToken::generate()
}

/// Why a client id cannot be registered.
pub fn check_client_id(client_id: &str) -> Result<(), &'static str> {
    if client_id.is_empty() {
        return Err("it is empty");
    }
    if client_id.len() > MAX_CLIENT_ID_LEN {
        return Err("it is longer than 128 bytes");
    }
    // The unreserved characters of RFC 3986: safe in HTTP Basic and in a form unencoded.
    if !client_id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
    {
        return Err("use letters, digits and - . _ ~ only");
    }
    Ok(())
}

/// Whether `secret` is the one whose digest is `stored` (`None`: an unknown client, which
/// never matches but costs the same).
pub fn secret_matches(secret: &str, stored: Option<&[u8]>) -> bool {
    let presented = TokenDigest::of(secret);
    let expected = stored.unwrap_or(&NO_DIGEST);
    let equal: bool = presented.as_bytes().as_slice().ct_eq(expected).into();
    equal && stored.is_some()
}

impl Auth {
    /// Checks a registered client's credentials, in constant time whether or not the
    /// client exists, and counts failures per client id and per address like logins.
    /// `secret` `None`: the client named itself without one.
    pub async fn authenticate_client(
        &self,
        client_id: &str,
        secret: Option<&str>,
        address: Option<IpAddr>,
    ) -> Result<(), ClientAuthError> {
        let address = address.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let subject = Subject::Client(client_id);
        self.throttle.check(&self.store, subject, address).await?;
        let stored = self.store.client_secret_digest(client_id).await?;
        // No secret never matches, at the same cost as a wrong one.
        if secret_matches(secret.unwrap_or_default(), stored.as_deref()) && secret.is_some() {
            return Ok(());
        }
        // Only failures are counted: a secret is 256 random bits, so there is no guessing
        // to race, and a right one costs no write.
        let attempt = self.throttle.count(&self.store, subject, address).await?;
        self.throttle.failed(&self.store, attempt).await?;
        tracing::info!(
            target: "audit", event = "client.authentication_failed",
            client_id = %loggable(client_id), %address, "client authentication failed"
        );
        Err(ClientAuthError::InvalidClient)
    }

    /// Whether `client_id` names a registered client.
    pub async fn is_registered_client(&self, client_id: &str) -> Result<bool, sqlx::Error> {
        Ok(self.store.client_secret_digest(client_id).await?.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_right_secret_of_a_known_client_matches() {
        let secret = generate_secret();
        let stored = secret.digest.as_bytes().as_slice();
        assert!(secret_matches(&secret.token, Some(stored)));
        assert!(!secret_matches("wrong", Some(stored)));
        assert!(!secret_matches(&secret.token, None));
    }

    #[test]
    fn client_ids_are_url_safe_names() {
        assert!(check_client_id("billing-service.v2").is_ok());
        for bad in ["", "has space", "colon:here", "ümlaut", &"x".repeat(129)] {
            assert!(check_client_id(bad).is_err(), "{bad:?}");
        }
    }
}
