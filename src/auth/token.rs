//! Opaque tokens (access and refresh): generated from the OS CSPRNG, known to the
//! service only as SHA-256 digests.

use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hash, Hasher},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

/// 32 random bytes, base64url without padding.
const TOKEN_BYTES: usize = 32;
const TOKEN_LEN: usize = 43;

/// SHA-256 of a token: all the database (and the cache) ever holds of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenDigest([u8; 32]);

/// Eight bytes of a SHA-256 digest are as even a hash as any hasher would make of all
/// 32, and nobody can choose them: a map keyed by digests ([`DigestMap`]) takes them as
/// they are.
impl Hash for TokenDigest {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let [a, b, c, d, e, f, g, h, ..] = self.0;
        state.write_u64(u64::from_ne_bytes([a, b, c, d, e, f, g, h]));
    }
}

/// A map keyed by token digests, hashed by [`DigestHasher`].
pub type DigestMap<V> = HashMap<TokenDigest, V, BuildHasherDefault<DigestHasher>>;

/// Passes on the eight bytes [`TokenDigest`] hashes by; anything else is folded in.
#[derive(Default)]
pub struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*byte)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
}

impl TokenDigest {
    pub fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// A freshly generated token: the string goes to the client once; only `digest` is stored.
pub struct NewToken {
    pub token: String,
    pub digest: TokenDigest,
}

impl NewToken {
    pub fn generate() -> Self {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes).expect("the OS random number generator is available");
        let token = URL_SAFE_NO_PAD.encode(bytes);
        let digest = TokenDigest::of(&token);
        Self { token, digest }
    }
}

/// Whether `token` could be one of ours; anything else is rejected without a query.
pub fn is_well_formed(token: &str) -> bool {
    token.len() == TOKEN_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_43_url_safe_characters_and_differ() {
        let a = NewToken::generate();
        let b = NewToken::generate();
        assert!(is_well_formed(&a.token), "{}", a.token);
        assert_ne!(a.token, b.token);
        assert_eq!(a.digest, TokenDigest::of(&a.token));
    }

    #[test]
    fn padding_and_other_alphabets_are_not_well_formed() {
        assert!(!is_well_formed(""));
        assert!(!is_well_formed(&"a".repeat(42)));
        assert!(!is_well_formed(&format!("{}=", "a".repeat(42))));
        assert!(!is_well_formed(&format!("{}+", "a".repeat(42))));
    }
}
