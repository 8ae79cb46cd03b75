//! The signatures a DPoP proof may carry, verified for `jsonwebtoken` as its crypto
//! provider: ES256 by ring, EdDSA by ed25519-dalek. Nothing else verifies and nothing
//! signs: the service issues no JWTs.
//!
//! Why not `jsonwebtoken`'s own `rust_crypto` provider: its pure-Rust P-256 took about
//! 390 µs per verify on the 2-core benchmark machine, ring about 70 µs, and a DPoP
//! request pays one verify. (aws-lc measured no faster than ring, and costs a minute of
//! C compilation.)

use jsonwebtoken::{
    Algorithm, AlgorithmFamily, DecodingKey, EncodingKey,
    crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils},
    errors::{Error, ErrorKind},
    jwk::ThumbprintHash,
    signature::{self, Verifier},
};
use sha2::{Digest, Sha256};

/// The provider: verifiers for ES256 and EdDSA, the digest of a JWK thumbprint, and
/// nothing that handles a private key.
static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: no_signer,
    verifier_factory: verifier,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: |_| Err(ErrorKind::InvalidAlgorithm.into()),
        rsa_pub_components_from_public_key: |_| Err(ErrorKind::InvalidAlgorithm.into()),
        ec_pub_components_from_private_key: |_, _| Err(ErrorKind::InvalidAlgorithm.into()),
        ed_pub_components_from_private_key: |_, _| Err(ErrorKind::InvalidAlgorithm.into()),
        compute_digest: digest,
    },
};

/// Makes this module the provider `jsonwebtoken` uses. Idempotent: only the first call
/// installs it, and nothing else in the process installs another.
pub fn install() {
    let _ = PROVIDER.install_default();
}

fn no_signer(_: &Algorithm, _: &EncodingKey) -> Result<Box<dyn JwtSigner>, Error> {
    Err(ErrorKind::InvalidAlgorithm.into())
}

fn verifier(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    match algorithm {
        Algorithm::ES256 => Ok(Box::new(Es256::new(key)?)),
        Algorithm::EdDSA => Ok(Box::new(EdDsa::new(key)?)),
        _ => Err(ErrorKind::InvalidAlgorithm.into()),
    }
}

/// The thumbprints DPoP takes (RFC 9449, section 6.1) are SHA-256.
fn digest(data: &[u8], hash: ThumbprintHash) -> Result<Vec<u8>, Error> {
    match hash {
        ThumbprintHash::SHA256 => Ok(Sha256::digest(data).to_vec()),
        _ => Err(ErrorKind::InvalidAlgorithm.into()),
    }
}

/// A P-256 public key as an uncompressed SEC1 point (`04 || x || y`), known to lie on
/// the curve.
struct Es256(Vec<u8>);

impl Es256 {
    const POINT_LEN: usize = 65;

    fn new(key: &DecodingKey) -> Result<Self, Error> {
        if key.family() != AlgorithmFamily::Ec {
            return Err(ErrorKind::InvalidKeyFormat.into());
        }
        let point = key.try_get_as_bytes()?;
        // ring tells a point off the curve from a bad signature only as "unspecified";
        // checked here (well under a microsecond), so the client hears its key is at fault.
        let uncompressed = point.len() == Self::POINT_LEN && point[0] == 0x04;
        if !uncompressed || p256::PublicKey::from_sec1_bytes(point).is_err() {
            return Err(ErrorKind::InvalidEcdsaKey.into());
        }
        Ok(Self(point.to_vec()))
    }
}

impl Verifier<Vec<u8>> for Es256 {
    fn verify(&self, message: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, &self.0)
            .verify(message, signature)
            .map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for Es256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::ES256
    }
}

/// An Ed25519 public key.
struct EdDsa(ed25519_dalek::VerifyingKey);

impl EdDsa {
    fn new(key: &DecodingKey) -> Result<Self, Error> {
        if key.family() != AlgorithmFamily::Ed {
            return Err(ErrorKind::InvalidKeyFormat.into());
        }
        let bytes: &[u8; 32] = key
            .try_get_as_bytes()?
            .try_into()
            .map_err(|_| ErrorKind::InvalidEddsaKey)?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(bytes)
            .map_err(|_| ErrorKind::InvalidEddsaKey)?;
        Ok(Self(key))
    }
}

impl Verifier<Vec<u8>> for EdDsa {
    fn verify(&self, message: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        let signature =
            ed25519_dalek::Signature::from_slice(signature).map_err(|_| signature::Error::new())?;
        ed25519_dalek::Verifier::verify(&self.0, message, &signature)
            .map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for EdDsa {
    fn algorithm(&self) -> Algorithm {
        Algorithm::EdDSA
    }
}
