//! SCRAM-SHA-256 verifiers (RFC 5802, RFC 7677) in the form Postgres stores in `pg_authid`
//! and neon's proxy parses (`proxy/src/scram/secret.rs`):
//! `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, all base64.
//! Fresh verifiers come from postgres-protocol, which prepares the password with SASLprep as
//! Postgres does (`pg_be_scram_build_secret`), so non-ASCII passwords match what clients send.
//! Passwords go in and are forgotten; only the verifier is kept.

use std::num::NonZeroU32;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::{digest, hmac, pbkdf2};

use crate::neon::Secret;

/// Postgres' default `scram_iterations` (postgres-protocol's too).
pub const ITERATIONS: NonZeroU32 = NonZeroU32::new(4096).expect("non-zero");

/// A fresh verifier for `password`, with a random salt.
pub fn verifier(password: &str) -> Secret {
    Secret(postgres_protocol::password::scram_sha_256(password.as_bytes()))
}

/// SASLprep (RFC 4013) where the password allows it, else the bytes as they are: what Postgres
/// and postgres-protocol hash.
fn prepare(password: &str) -> std::borrow::Cow<'_, str> {
    stringprep::saslprep(password).unwrap_or(std::borrow::Cow::Borrowed(password))
}

/// The verifier for `password` with a given salt and iteration count.
pub fn verifier_with(password: &str, salt: &[u8], iterations: NonZeroU32) -> Secret {
    let mut salted = [0u8; digest::SHA256_OUTPUT_LEN];
    pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, iterations, salt, prepare(password).as_bytes(), &mut salted);
    let key = hmac::Key::new(hmac::HMAC_SHA256, &salted);
    let client_key = hmac::sign(&key, b"Client Key");
    let stored_key = digest::digest(&digest::SHA256, client_key.as_ref());
    let server_key = hmac::sign(&key, b"Server Key");
    Secret(format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        STANDARD.encode(salt),
        STANDARD.encode(stored_key.as_ref()),
        STANDARD.encode(server_key.as_ref())
    ))
}

/// Whether `verifier` is one for `password` (same salt and iterations give the same keys), so
/// that a verifier that still matches is kept instead of re-salted.
pub fn matches(verifier: &Secret, password: &str) -> bool {
    let parse = || {
        let rest = verifier.0.strip_prefix("SCRAM-SHA-256$")?;
        let (params, _) = rest.split_once('$')?;
        let (iterations, salt) = params.split_once(':')?;
        Some((NonZeroU32::new(iterations.parse().ok()?)?, STANDARD.decode(salt).ok()?))
    };
    parse().is_some_and(|(iterations, salt)| verifier_with(password, &salt, iterations) == *verifier)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 §3: user "user", password "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==, 4096
    /// iterations; StoredKey and ServerKey follow from the exchange's ClientProof and
    /// ServerSignature (the same values Postgres' own test suite uses).
    #[test]
    fn matches_the_rfc_7677_example() {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let secret = verifier_with("pencil", &salt, ITERATIONS);
        assert_eq!(
            secret.0,
            "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
        );
    }

    #[test]
    fn verifiers_match_their_password_only() {
        let verifier = verifier("pencil");
        assert!(matches(&verifier, "pencil"));
        assert!(!matches(&verifier, "pencil2"));
        assert!(!matches(&Secret("SCRAM-SHA-256$x".into()), "pencil"));
        assert!(!matches(&Secret("md5abc".into()), "pencil"));
    }

    /// SASLprep maps non-ASCII spaces to a space and removes soft hyphens, as Postgres does
    /// before hashing: both spellings have one verifier.
    #[test]
    fn passwords_are_prepared_with_saslprep() {
        let verifier = verifier("p\u{00A0}ass\u{00AD}wörd");
        assert!(matches(&verifier, "p ass\u{00AD}wörd"));
        assert!(matches(&verifier, "p\u{00A0}asswörd"));
        assert!(!matches(&verifier, "p asswörd2"));
    }

    #[test]
    fn fresh_verifiers_are_salted() {
        let a = verifier("pencil");
        let b = verifier("pencil");
        assert_ne!(a, b);
        let parts: Vec<&str> = a.0.split(['$', ':']).collect();
        assert_eq!(parts[0], "SCRAM-SHA-256");
        assert_eq!(parts[1], "4096");
        assert_eq!(STANDARD.decode(parts[2]).unwrap().len(), 16);
        assert_eq!(STANDARD.decode(parts[3]).unwrap().len(), 32);
        assert_eq!(STANDARD.decode(parts[4]).unwrap().len(), 32);
        assert!(!a.0.contains("pencil"));
    }
}
