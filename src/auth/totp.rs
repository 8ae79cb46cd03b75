//! RFC 6238 arithmetic (6 digits, 30 s steps, HMAC-SHA-1, what every authenticator app
//! reads from an `otpauth://` URI): secrets, URIs, steps, and which step a code is of.
//! `totp-rs` computes the codes; they are compared in constant time.

use std::time::{SystemTime, UNIX_EPOCH};

use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use totp_rs::{Builder, Secret, Totp};

/// Digits of a code.
pub const CODE_DIGITS: usize = 6;
/// Seconds of a time step.
pub const STEP_SECONDS: u64 = 30;
/// Steps accepted on either side of the current one (RFC 6238, section 5.2).
const SKEW_STEPS: u64 = 1;
/// Bytes of a new secret: 160 bits, as RFC 4226 recommends.
const SECRET_BYTES: usize = 20;

/// The name of this service in authenticator apps: the issuer's host, without scheme,
/// port or path. (`https://auth.example.com` -> `auth.example.com`.)
pub fn issuer_name(issuer: &str) -> String {
    let rest = issuer.split_once("://").map_or(issuer, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = match host.strip_prefix('[') {
        // An IPv6 literal: what is between the brackets.
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.split(':').next().unwrap_or_default(),
    };
    label_part(host)
}

/// The Key URI format forbids a colon in the issuer and the account name (it separates
/// them in the label); one in an IPv6 host or a username is shown as `_`. The label is
/// only what the app displays: codes do not depend on it.
fn label_part(name: &str) -> String {
    name.replace(':', "_")
}

/// The `otpauth://` URI of `secret` for `username`: label `<issuer name>:<username>`
/// and `issuer=<issuer name>`. `None` only for a secret that is not base32 of at least
/// 128 bits, which [`new_secret`] never makes.
pub fn otpauth_uri(secret: &SecretString, issuer: &str, username: &str) -> Option<SecretString> {
    let mut account = label_part(username);
    if account.is_empty() {
        // The format needs an account name; an empty username can only come from SQL.
        account.push('_');
    }
    let totp = Builder::new()
        .with_secret(decode_secret(secret)?)
        .with_account_name(account)
        .with_issuer(Some(issuer_name(issuer)))
        .build()
        .ok()?;
    totp.to_url().ok().map(SecretString::from)
}

/// A new random secret, base32.
pub fn new_secret() -> SecretString {
    let mut bytes = [0u8; SECRET_BYTES];
    getrandom::fill(&mut bytes).expect("the OS random number generator is available");
    SecretString::from(Secret::from(bytes).to_base32())
}

fn decode_secret(secret: &SecretString) -> Option<Secret> {
    Secret::try_from_base32(secret.expose_secret()).ok()
}

/// The RFC 6238 parameters every authenticator app assumes, with `secret`.
fn totp(secret: &str) -> Option<Totp> {
    let secret = Secret::try_from_base32(secret).ok()?;
    Builder::new()
        .with_secret(secret)
        .with_digits(CODE_DIGITS as u8)
        .with_step_duration(STEP_SECONDS)
        .build()
        .ok()
}

/// The time step of `at`.
pub fn step_of(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() / STEP_SECONDS
}

/// Whether `code` looks like a code at all: exactly six ASCII digits (a NUL byte, a
/// space, a seventh digit are simply wrong, and never reach the database).
pub(super) fn is_well_formed(code: &str) -> bool {
    code.len() == CODE_DIGITS && code.bytes().all(|b| b.is_ascii_digit())
}

/// The step, among the current one and those beside it, whose code is `code` and that
/// is later than `after`; the earliest such. Every candidate is computed and compared
/// (in constant time), whichever matches.
pub(super) fn matching_step(secret: &str, code: &str, now: u64, after: Option<i64>) -> Option<u64> {
    if !is_well_formed(code) {
        return None;
    }
    let Some(totp) = totp(secret) else {
        tracing::warn!("a stored TOTP secret does not decode; its codes are refused");
        return None;
    };
    let mut found = None;
    for step in now.saturating_sub(SKEW_STEPS)..=now + SKEW_STEPS {
        let expected = totp.generate(step * STEP_SECONDS).to_string();
        let matches: bool = expected.as_bytes().ct_eq(code.as_bytes()).into();
        let unused = after.is_none_or(|last| i64::try_from(step).is_ok_and(|step| step > last));
        if matches && unused && found.is_none() {
            found = Some(step);
        }
    }
    found
}

/// `password` split into the password and an appended code, when it ends in six digits
/// and is longer than them.
pub(super) fn split_appended_code(password: &SecretString) -> Option<(SecretString, SecretString)> {
    let password = password.expose_secret();
    let cut = password.len().checked_sub(CODE_DIGITS)?;
    if cut == 0 || !password.is_char_boundary(cut) || !is_well_formed(&password[cut..]) {
        return None;
    }
    Some((
        SecretString::from(&password[..cut]),
        SecretString::from(&password[cut..]),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issuer_name_is_the_host_alone() {
        assert_eq!(issuer_name("http://127.0.0.1:8000"), "127.0.0.1");
        assert_eq!(issuer_name("https://auth.example.com"), "auth.example.com");
        assert_eq!(
            issuer_name("https://u@auth.example.com:8443/base"),
            "auth.example.com"
        );
        assert_eq!(issuer_name("http://[::1]:8000"), "__1");
    }

    #[test]
    fn rfc_6238_test_vector_with_sha1() {
        // RFC 6238, appendix B: the 20-byte ASCII secret "12345678901234567890" at
        // T = 59 s gives 94287082 (8 digits); its last six digits are the 6-digit code.
        let secret = Secret::from(b"12345678901234567890".to_vec()).to_base32();
        assert_eq!(matching_step(&secret, "287082", 1, None), Some(1));
        assert_eq!(matching_step(&secret, "287082", 1, Some(1)), None);
        assert_eq!(matching_step(&secret, "287082", 3, None), None);
    }

    #[test]
    fn malformed_codes_never_match() {
        let secret = Secret::from(b"12345678901234567890".to_vec()).to_base32();
        for code in ["", "28708", "2870820", "28708\0", " 287082", "２８７０８２"] {
            assert_eq!(matching_step(&secret, code, 1, None), None, "{code:?}");
        }
    }

    #[test]
    fn only_six_trailing_digits_after_a_password_are_split_off() {
        let split = |p: &str| {
            split_appended_code(&SecretString::from(p))
                .map(|(p, c)| (p.expose_secret().to_owned(), c.expose_secret().to_owned()))
        };
        assert_eq!(
            split("secret123456"),
            Some(("secret".into(), "123456".into()))
        );
        assert_eq!(
            split("pw2024123456"),
            Some(("pw2024".into(), "123456".into()))
        );
        assert_eq!(split("123456"), None);
        assert_eq!(split("secret12345"), None);
        assert_eq!(split("secret"), None);
    }
}
