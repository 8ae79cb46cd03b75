//! A DPoP proof's key (RFC 9449, section 4.2), read from the proof's header: checked to
//! be a public key of the proof's algorithm, and remembered by the header's text, since a
//! client sends the same header (its key, its algorithm) with every proof it signs.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{
    Algorithm, DecodingKey,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, ThumbprintHash},
};

use super::dpop::ProofError;

/// The `typ` a DPoP proof's header must carry (RFC 9449, section 4.2).
const PROOF_TYPE: &str = "dpop+jwt";

/// Private members of a JWK (RFC 7518, section 6): a proof's key must be public.
const PRIVATE_KEY_MEMBERS: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "k"];

/// Headers remembered at most (each a few hundred bytes); when full, all are forgotten,
/// so a flood of new keys costs the clients nothing but a second reading of theirs.
const CAPACITY: usize = 4096;

/// What a proof's header says about its key, all of it worked out from the header alone.
pub(super) struct ProofKey {
    pub algorithm: Algorithm,
    pub decoding: DecodingKey,
    /// The key's RFC 7638 SHA-256 thumbprint; `None` if it has none (refused as a bad
    /// key, once the signature holds).
    pub thumbprint: Option<String>,
}

/// The keys of the proof headers read lately, by the header's text (base64url, as sent).
#[derive(Default)]
pub(super) struct KeyCache {
    keys: Mutex<HashMap<Box<str>, Arc<ProofKey>>>,
}

impl KeyCache {
    /// The key of a proof whose header is `header`: remembered, or read now. Only keys
    /// that pass are remembered; a refused header is read again, and refused again, every time.
    pub(super) fn read(&self, header: &str) -> Result<Arc<ProofKey>, ProofError> {
        if let Some(key) = self.lock().get(header) {
            return Ok(key.clone());
        }
        let key = Arc::new(read_header(header)?);
        let mut keys = self.lock();
        if keys.len() >= CAPACITY {
            keys.clear();
        }
        keys.insert(header.into(), key.clone());
        Ok(key)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Arc<ProofKey>>> {
        // A map of finished entries: a panic elsewhere leaves nothing half-written.
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The proof's algorithm and public key, from its header (still base64url), checked
/// before the signature: `typ`, an accepted `alg` (never `none` or an HMAC), and a public
/// `jwk` of that alg.
fn read_header(header: &str) -> Result<ProofKey, ProofError> {
    let mut header = URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .ok_or(ProofError::Malformed)?;
    if header["typ"].as_str() != Some(PROOF_TYPE) {
        return Err(ProofError::WrongType);
    }
    let algorithm = match header["alg"].as_str() {
        Some("ES256") => Algorithm::ES256,
        Some("EdDSA") => Algorithm::EdDSA,
        _ => return Err(ProofError::UnsupportedAlgorithm),
    };
    // Read as JSON first: `jsonwebtoken`'s `Jwk` drops members it does not know, `d`
    // among them, and a key that holds anything private is refused.
    let raw_jwk = header["jwk"].take();
    let private = raw_jwk.as_object().is_none_or(|members| {
        PRIVATE_KEY_MEMBERS
            .iter()
            .any(|member| members.contains_key(*member))
    });
    if private {
        return Err(ProofError::BadKey);
    }
    let jwk: Jwk = serde_json::from_value(raw_jwk).map_err(|_| ProofError::BadKey)?;
    let fits = match (&jwk.algorithm, algorithm) {
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES256) => {
            ec.curve == EllipticCurve::P256
        }
        (AlgorithmParameters::OctetKeyPair(okp), Algorithm::EdDSA) => {
            okp.curve == EllipticCurve::Ed25519
        }
        _ => false,
    };
    if !fits {
        return Err(ProofError::BadKey);
    }
    let decoding = DecodingKey::from_jwk(&jwk).map_err(|_| ProofError::BadKey)?;
    Ok(ProofKey {
        algorithm,
        decoding,
        thumbprint: jwk.thumbprint(ThumbprintHash::SHA256).ok(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header of RFC 9449's example proof (section 4.1), as base64url.
    fn example_header() -> String {
        URL_SAFE_NO_PAD.encode(
            r#"{"typ":"dpop+jwt","alg":"ES256","jwk":{"kty":"EC","x":"l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs","y":"9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA","crv":"P-256"}}"#,
        )
    }

    #[test]
    fn a_header_is_read_once_and_gives_its_keys_thumbprint() {
        super::super::signatures::install();
        let cache = KeyCache::default();
        let first = cache.read(&example_header()).unwrap();
        let again = cache.read(&example_header()).unwrap();
        assert!(Arc::ptr_eq(&first, &again), "read once, then remembered");
        assert_eq!(first.algorithm, Algorithm::ES256);
        // RFC 9449, section 6.1: the same key's thumbprint.
        assert_eq!(
            first.thumbprint.as_deref(),
            Some("0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I")
        );
    }

    #[test]
    fn a_refused_header_is_refused_every_time_and_never_remembered() {
        let cache = KeyCache::default();
        let private = URL_SAFE_NO_PAD.encode(
            r#"{"typ":"dpop+jwt","alg":"ES256","jwk":{"kty":"EC","crv":"P-256","x":"l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs","y":"9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA","d":"AAAA"}}"#,
        );
        for _ in 0..2 {
            assert!(matches!(cache.read(&private), Err(ProofError::BadKey)));
        }
        assert!(cache.lock().is_empty());
    }
}
