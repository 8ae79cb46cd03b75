//! Registered clients (services that introspect tokens): their ids, and their secrets,
//! generated from the OS CSPRNG, stored as SHA-256 digests, checked in constant time and
//! throttled like logins.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use subtle::ConstantTimeEq;

use super::{
    Auth, ClientAuthError, loggable,
    throttle::Subject,
    token::{NewToken, TokenDigest},
};
use crate::store::Changes;

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

/// A stored secret digest (`None`: no such client).
type StoredDigest = Option<[u8; 32]>;

/// How long a database answer about a client is reused at most, as for tokens.
const FRESHNESS: Duration = Duration::from_secs(1);

/// At most this many client ids (known or not) are remembered.
const CAPACITY: usize = 10_000;

/// Registered clients' secret digests as lately read, so that a client introspecting on
/// every request costs no query for its credentials. Invalidated exactly as the token
/// cache is: an entry counts only while the change generation it was read under is
/// current, and the `clients` table's triggers move that generation on every add and
/// delete, whoever makes it (the CLI, another replica).
pub struct ClientSecrets {
    entries: Mutex<HashMap<String, Remembered>>,
    changes: Arc<Changes>,
}

struct Remembered {
    digest: StoredDigest,
    generation: u64,
    checked: Instant,
}

impl ClientSecrets {
    pub fn new(changes: Arc<Changes>) -> Self {
        Self {
            entries: Mutex::default(),
            changes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Remembered>> {
        // Entries are replaced whole; a panic elsewhere cannot leave one half-written.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What was read about `client_id`, if nothing changed since and it is fresh.
    fn get(&self, client_id: &str) -> Option<StoredDigest> {
        let generation = self.changes.generation()?;
        let entries = self.lock();
        let entry = entries.get(client_id)?;
        (entry.generation == generation && entry.checked.elapsed() < FRESHNESS)
            .then_some(entry.digest)
    }

    /// Remembers `digest`, read at `generation` (taken before the read), unless
    /// something changed in between.
    fn insert(&self, client_id: &str, digest: StoredDigest, generation: Option<u64>) {
        let Some(generation) = generation else {
            return;
        };
        if client_id.len() > MAX_CLIENT_ID_LEN {
            return;
        }
        let mut entries = self.lock();
        if self.changes.generation() != Some(generation) {
            return;
        }
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(
            client_id.to_owned(),
            Remembered {
                digest,
                generation,
                checked: Instant::now(),
            },
        );
    }
}

impl Auth {
    /// The digest of a registered client's secret, `None` for an unknown client: from
    /// [`ClientSecrets`] when it can vouch for it, else from the database.
    async fn client_secret(&self, client_id: &str) -> Result<StoredDigest, sqlx::Error> {
        if let Some(found) = self.client_secrets.get(client_id) {
            return Ok(found);
        }
        let generation = self.store.changes().generation();
        let stored = self
            .store
            .client_secret_digest(client_id)
            .await?
            .and_then(|digest| <[u8; 32]>::try_from(digest).ok());
        self.client_secrets.insert(client_id, stored, generation);
        Ok(stored)
    }

    /// Whether `secret` is `client_id`'s by what was read lately, with neither the client
    /// nor the address near a failure limit: the caches alone, no query. `false` means
    /// only "ask [`Auth::authenticate_client`]".
    pub(super) fn client_known_lately(
        &self,
        client_id: &str,
        secret: &str,
        address: Option<IpAddr>,
    ) -> bool {
        let address = address.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        self.throttle
            .lately_clear(Subject::Client(client_id), address)
            && self
                .client_secrets
                .get(client_id)
                .flatten()
                .is_some_and(|digest| secret_matches(secret, Some(&digest)))
    }

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
        // A secret is 256 random bits, so a right one is no guess: keys found clear of
        // failures lately are not read again (see `check_lately`).
        self.throttle
            .check_lately(&self.store, subject, address)
            .await?;
        let stored = self.client_secret(client_id).await?;
        // No secret never matches, at the same cost as a wrong one.
        if secret_matches(
            secret.unwrap_or_default(),
            stored.as_ref().map(<[u8; 32]>::as_slice),
        ) && secret.is_some()
        {
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
        Ok(self.client_secret(client_id).await?.is_some())
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
