//! DPoP proofs (RFC 9449): checking the signed JWT a client sends beside a token request
//! or a protected request, and refusing a proof seen before. Knows nothing of HTTP: it is
//! given the header's value, the method, the URL and the access token. Reading a proof's
//! key is `proof_keys.rs`'s work, verifying the signature `signatures.rs`'s, and
//! remembering the proofs already seen `replay.rs`'s.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{Auth, proof_keys::KeyCache, replay::ReplayCache};

/// The proof signing algorithms accepted, as the metadata and the challenge name them.
pub const ALGORITHMS: [&str; 2] = ["ES256", "EdDSA"];

/// Longer proofs are refused unread: an ES256 or EdDSA proof is a few hundred bytes.
const MAX_PROOF_LEN: usize = 4096;

/// Longer `jti` values are refused: a proof's id is a random string, not a document.
const MAX_JTI_LEN: usize = 256;

/// Proofs remembered at most (about 26 MB): about 4,000 proofs a second over the two
/// minutes a proof is remembered with the default `DPOP_PROOF_MAX_AGE`. Beyond it the oldest go first,
/// so a flood of fresh proofs can shorten how long a proof is remembered but never
/// refuses a client's next one.
const REPLAY_CAPACITY: usize = 500_000;

/// How a token is used, as `token_type` says (RFC 6750, RFC 9449).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenType {
    /// Whoever holds the token may use it.
    Bearer,
    /// Only with a proof of the key the token is bound to.
    Dpop,
}

impl TokenType {
    /// The type of a token bound to `jkt` (`None`: to no key).
    pub fn of_binding(jkt: Option<&str>) -> Self {
        match jkt {
            Some(_) => TokenType::Dpop,
            None => TokenType::Bearer,
        }
    }
}

/// The `DPoP` header of a request, as the API layer found it. Its `Debug` never shows
/// the proof: while fresh, a proof is as good as a credential.
#[derive(Clone, PartialEq, Eq)]
pub enum DpopHeader {
    Absent,
    /// Exactly one, as it was sent.
    Proof(String),
    /// Two or more, an empty one, or one that is not text.
    Unusable,
}

impl std::fmt::Debug for DpopHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DpopHeader::Absent => "Absent",
            DpopHeader::Proof(_) => "Proof(..)",
            DpopHeader::Unusable => "Unusable",
        })
    }
}

/// A protected request made with `Authorization: DPoP <token>`: what its proof must match.
#[derive(Debug, Clone)]
pub struct DpopRequest {
    pub header: DpopHeader,
    /// The request's method, e.g. `GET`.
    pub method: String,
    /// The request's path, without the query (the issuer is put before it).
    pub path: String,
    /// Why this very proof was refused moments ago, on this request, by the token
    /// cache's early answer ([`Auth::with_cached_user`]): the full path gives that
    /// answer instead of checking the signature a second time.
    pub refused: Option<ProofError>,
}

/// Why a proof is refused; the message is the `error_description` a client sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("A DPoP proof is required")]
    Missing,
    #[error("Exactly one non-empty DPoP header is allowed")]
    Unusable,
    #[error("The DPoP proof is not a well-formed JWT")]
    Malformed,
    #[error("The DPoP proof's typ must be dpop+jwt")]
    WrongType,
    #[error("The DPoP proof's alg must be ES256 or EdDSA")]
    UnsupportedAlgorithm,
    #[error("The DPoP proof's jwk must be a public key of its alg")]
    BadKey,
    #[error("The DPoP proof's signature does not verify")]
    BadSignature,
    #[error("The DPoP proof lacks a claim: jti, htm, htu and iat are required")]
    MissingClaim,
    #[error("The DPoP proof's htm is not this request's method")]
    WrongMethod,
    #[error("The DPoP proof's htu is not this request's URL")]
    WrongUrl,
    #[error("The DPoP proof's iat is too far from now")]
    Stale,
    #[error("The DPoP proof's ath is not the hash of the access token")]
    WrongTokenHash,
    #[error("The DPoP proof was used before")]
    Replayed,
    #[error("The DPoP proof's key is not the one the token is bound to")]
    WrongKey,
    #[error("This refresh token is not bound to a DPoP key: refresh it without a DPoP proof")]
    NotBound,
}

/// The claims of a proof (RFC 9449, section 4.2). Optional here so that a missing one is
/// told apart from a malformed proof.
#[derive(Deserialize)]
struct Claims {
    jti: Option<String>,
    htm: Option<String>,
    htu: Option<String>,
    /// NumericDate: seconds, possibly with a fraction.
    iat: Option<f64>,
    ath: Option<String>,
}

/// What a proof must match.
pub struct Expected<'a> {
    pub method: &'a str,
    /// The full URL: the issuer and the path.
    pub url: &'a str,
    /// The access token presented with the proof, on a protected request.
    pub access_token: Option<&'a str>,
    /// The thumbprint of the key the access token is bound to, on a protected request.
    pub key: Option<&'a str>,
}

impl Auth {
    /// The key a token request's proof binds its tokens to: `None` without a proof
    /// (unless `DPOP_REQUIRED`); an error for a proof that does not hold.
    pub(super) fn token_request_key(
        &self,
        request: &DpopRequest,
    ) -> Result<Option<String>, ProofError> {
        match &request.header {
            DpopHeader::Absent if self.dpop_required => Err(ProofError::Missing),
            DpopHeader::Absent => Ok(None),
            DpopHeader::Unusable => Err(ProofError::Unusable),
            DpopHeader::Proof(proof) => self
                .check_proof(proof, request, None, None)
                .map(Some)
                .inspect_err(log_refusal),
        }
    }

    /// Checks a protected request's proof: it must carry `ath` for `token` and be signed
    /// by the key the token is bound to (`bound`, that key's thumbprint).
    pub(super) fn check_resource_proof(
        &self,
        request: &DpopRequest,
        token: &str,
        bound: &str,
    ) -> Result<(), ProofError> {
        match &request.refused {
            Some(refused) => Err(refused.clone()),
            None => self.resource_proof(request, token, bound),
        }
        .inspect_err(log_refusal)
    }

    /// [`Auth::check_resource_proof`] without a word in the log: for the cache's fast
    /// path, which leaves a refused proof to the full path, with the reason (nothing
    /// refused is remembered, so checking it again would find the same fault).
    pub(super) fn resource_proof(
        &self,
        request: &DpopRequest,
        token: &str,
        bound: &str,
    ) -> Result<(), ProofError> {
        match &request.header {
            DpopHeader::Absent => Err(ProofError::Missing),
            DpopHeader::Unusable => Err(ProofError::Unusable),
            DpopHeader::Proof(proof) => self
                .check_proof(proof, request, Some(token), Some(bound))
                .map(|_| ()),
        }
    }

    fn check_proof(
        &self,
        proof: &str,
        request: &DpopRequest,
        access_token: Option<&str>,
        key: Option<&str>,
    ) -> Result<String, ProofError> {
        let url = format!("{}{}", self.issuer, request.path);
        let expected = Expected {
            method: &request.method,
            url: &url,
            access_token,
            key,
        };
        let checked = self.dpop.check(proof, &expected, SystemTime::now());
        self.metrics.dpop_proof(if checked.is_ok() {
            "accepted"
        } else {
            "refused"
        });
        checked
    }
}

/// The reason only, never the proof: it is as good as a credential while fresh.
fn log_refusal(err: &ProofError) {
    tracing::debug!(reason = %err, "DPoP proof refused");
}

/// Checks proofs and remembers the ones it accepted.
pub struct ProofChecker {
    max_age: Duration,
    keys: KeyCache,
    seen: ReplayCache,
}

impl ProofChecker {
    /// `max_age`: how far a proof's `iat` may be from now, before or after.
    pub fn new(max_age: Duration) -> Self {
        super::signatures::install();
        Self {
            max_age,
            keys: KeyCache::default(),
            // A proof is acceptable from `iat - max_age` until `iat + max_age`: counted
            // from when it was first seen, twice the age covers all of that.
            seen: ReplayCache::new(max_age.saturating_mul(2), REPLAY_CAPACITY),
        }
    }

    /// Checks `proof` against `expected` at `now` and returns its key's RFC 7638 SHA-256
    /// thumbprint. Every check runs before the proof is remembered, so a refused proof
    /// costs its client nothing.
    pub fn check(
        &self,
        proof: &str,
        expected: &Expected<'_>,
        now: SystemTime,
    ) -> Result<String, ProofError> {
        if proof.len() > MAX_PROOF_LEN {
            return Err(ProofError::Malformed);
        }
        // The compact serialization (RFC 7515, section 7.1): header, claims, signature.
        let mut parts = proof.split('.');
        let (Some(header), Some(claims), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(ProofError::Malformed);
        };
        let key = self.keys.read(header)?;
        // The signing input is the first two parts as sent (RFC 7515, section 5.2).
        let signed = &proof[..header.len() + 1 + claims.len()];
        let verified = jsonwebtoken::crypto::verify(
            signature,
            signed.as_bytes(),
            &key.decoding,
            key.algorithm,
        )
        .map_err(|err| {
            use jsonwebtoken::errors::ErrorKind;
            match err.kind() {
                // Coordinates that are no point of the curve, or of the wrong size.
                ErrorKind::InvalidEcdsaKey
                | ErrorKind::InvalidEddsaKey
                | ErrorKind::InvalidKeyFormat => ProofError::BadKey,
                _ => ProofError::Malformed,
            }
        })?;
        if !verified {
            return Err(ProofError::BadSignature);
        }
        // Read only once the signature holds: until then the claims are anybody's.
        let claims: Claims = URL_SAFE_NO_PAD
            .decode(claims)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or(ProofError::Malformed)?;
        let (Some(jti), Some(htm), Some(htu), Some(iat)) =
            (claims.jti, claims.htm, claims.htu, claims.iat)
        else {
            return Err(ProofError::MissingClaim);
        };
        if jti.is_empty() || jti.len() > MAX_JTI_LEN {
            return Err(ProofError::MissingClaim);
        }
        if htm != expected.method {
            return Err(ProofError::WrongMethod);
        }
        if normalized_url(&htu) != normalized_url(expected.url) {
            return Err(ProofError::WrongUrl);
        }
        let now_secs = now
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        if !iat.is_finite() || (now_secs - iat).abs() > self.max_age.as_secs_f64() {
            return Err(ProofError::Stale);
        }
        if let Some(token) = expected.access_token
            && claims.ath.as_deref() != Some(access_token_hash(token).as_str())
        {
            return Err(ProofError::WrongTokenHash);
        }
        let thumbprint = key.thumbprint.as_deref().ok_or(ProofError::BadKey)?;
        // Before the proof is remembered: a proof of another key costs its client nothing.
        if expected.key.is_some_and(|bound| bound != thumbprint) {
            return Err(ProofError::WrongKey);
        }
        if !self.seen.insert_new(thumbprint, &jti) {
            return Err(ProofError::Replayed);
        }
        Ok(thumbprint.to_owned())
    }

    /// Forgets proofs that can no longer be accepted anyway.
    pub fn prune(&self) {
        self.seen.prune();
    }
}

/// `ath` (RFC 9449, section 4.2): base64url(SHA-256(access token)), without padding.
pub fn access_token_hash(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}

/// A URL as `htu` is compared (RFC 9449, section 4.3): without query and fragment, scheme
/// and host in lower case, without the scheme's default port.
fn normalized_url(url: &str) -> String {
    let url = url.split(['?', '#']).next().unwrap_or_default();
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let scheme = scheme.to_ascii_lowercase();
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut authority = authority.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => Some(":80"),
        "https" => Some(":443"),
        _ => None,
    };
    if let Some(port) = default_port
        && authority.ends_with(port)
    {
        authority.truncate(authority.len() - port.len());
    }
    let path = if path.is_empty() { "/" } else { path };
    format!("{scheme}://{authority}{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_compare_without_query_fragment_case_or_default_port() {
        assert_eq!(
            normalized_url("HTTP://Example.COM:80/token?x=1#y"),
            "http://example.com/token"
        );
        assert_eq!(
            normalized_url("https://a.example:443"),
            "https://a.example/"
        );
        assert_ne!(
            normalized_url("http://a.example:8000/token"),
            normalized_url("http://a.example/token")
        );
        // The path keeps its case.
        assert_ne!(
            normalized_url("http://a.example/Token"),
            normalized_url("http://a.example/token")
        );
    }

    #[test]
    fn a_proof_never_shows_in_debug_output() {
        let header = DpopHeader::Proof("eyJ0eXAiOiJkcG9wK2p3dCJ9.secret.sig".into());
        assert_eq!(format!("{header:?}"), "Proof(..)");
    }

    #[test]
    fn access_token_hash_is_base64url_sha256_without_padding() {
        // RFC 9449, section 7.1's example.
        assert_eq!(
            access_token_hash("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"),
            "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
        );
    }
}
