//! EdDSA (Ed25519) JWTs, the only kind Neon uses (`docs/authentication.md`): verifying the
//! bearer tokens our callers send, and signing the tokens we hand out (the compute's
//! `storage_auth_token`, and the one we send to compute_ctl's `/configure`).
//!
//! Keys are PEM, as `openssl genpkey -algorithm ed25519` writes them: a PKCS#8 private key and
//! an SPKI public key.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::signature::{self, Ed25519KeyPair, KeyPair as _};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::neon::Secret;
use crate::neon::compute::Jwk;

/// DER prefix of an Ed25519 SubjectPublicKeyInfo; the 32-byte key follows.
const ED25519_SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
/// The `kid` of the key compute_ctl gets in its `jwks`.
pub const KEY_ID: &str = "neon-control-plane";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "{what} is not a PEM block `-----BEGIN {label}-----`; give the file `openssl genpkey -algorithm ed25519` (private) or `openssl pkey -pubout` (public) writes"
    )]
    NotPem { what: &'static str, label: &'static str },
    #[error("{what} is not an Ed25519 key; Neon only accepts EdDSA (generate one with `openssl genpkey -algorithm ed25519`)")]
    NotEd25519 { what: &'static str },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("no bearer token in the Authorization header")]
    Missing,
    #[error("the bearer token is not a JWT (three base64url parts)")]
    Malformed,
    #[error("the bearer token is not signed with EdDSA")]
    Algorithm,
    #[error("the bearer token's signature does not match the control plane's public key")]
    Signature,
    #[error("the bearer token has expired")]
    Expired,
    #[error("the bearer token's scope {found:?} does not allow this call (needs one of {allowed:?})")]
    Scope { found: Option<String>, allowed: &'static [&'static str] },
}

/// The claims we read from incoming tokens (neon's `Claims`, `libs/utils/src/auth.rs`).
#[derive(Debug, Deserialize)]
struct Claims {
    scope: Option<String>,
    exp: Option<u64>,
}

/// Extracts the raw DER of the PEM block labelled `label`.
fn pem_der(text: &str, label: &'static str, what: &'static str) -> Result<Vec<u8>, KeyError> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let body = text
        .split_once(&begin)
        .and_then(|(_, rest)| rest.split_once(&end))
        .map(|(body, _)| body.split_whitespace().collect::<String>())
        .ok_or(KeyError::NotPem { what, label })?;
    STANDARD.decode(body).map_err(|_| KeyError::NotPem { what, label })
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

/// The public key incoming bearer tokens must be signed with.
#[derive(Debug, Clone)]
pub struct PublicKey {
    raw: [u8; 32],
}

impl PublicKey {
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        let what = "the JWT public key";
        let der = pem_der(text, "PUBLIC KEY", what)?;
        der.strip_prefix(&ED25519_SPKI_PREFIX[..])
            .and_then(|raw| <[u8; 32]>::try_from(raw).ok())
            .map(|raw| Self { raw })
            .ok_or(KeyError::NotEd25519 { what })
    }

    /// The raw key as PEM (SPKI).
    pub fn to_pem(&self) -> String {
        let mut der = ED25519_SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.raw);
        format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", STANDARD.encode(der))
    }

    /// Checks a `Bearer` header value: EdDSA signature, expiry, and a scope among `allowed`.
    pub fn authorize(&self, header: Option<&str>, allowed: &'static [&'static str]) -> Result<(), TokenError> {
        let token = header.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim).ok_or(TokenError::Missing)?;
        match self.scope_of(token)? {
            Some(scope) if allowed.contains(&scope.as_str()) => Ok(()),
            found => Err(TokenError::Scope { found, allowed }),
        }
    }

    /// The `scope` claim of `token`, once its EdDSA signature (by this key) and expiry are checked.
    pub fn scope_of(&self, token: &str) -> Result<Option<String>, TokenError> {
        let mut parts = token.split('.');
        let (Some(head), Some(body), Some(sig), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(TokenError::Malformed);
        };
        let decode = |part: &str| URL_SAFE_NO_PAD.decode(part).map_err(|_| TokenError::Malformed);
        let header: Value = serde_json::from_slice(&decode(head)?).map_err(|_| TokenError::Malformed)?;
        if header["alg"] != "EdDSA" {
            return Err(TokenError::Algorithm);
        }
        signature::UnparsedPublicKey::new(&signature::ED25519, &self.raw)
            .verify(format!("{head}.{body}").as_bytes(), &decode(sig)?)
            .map_err(|_| TokenError::Signature)?;
        let claims: Claims = serde_json::from_slice(&decode(body)?).map_err(|_| TokenError::Malformed)?;
        if claims.exp.is_some_and(|exp| exp < now()) {
            return Err(TokenError::Expired);
        }
        Ok(claims.scope)
    }
}

/// The private key the control plane signs tokens with.
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

impl SigningKey {
    /// A fresh key as PKCS#8 PEM (v2, with the public key), which [`SigningKey::from_pem`] and
    /// openssl read.
    pub fn generate_pem(rng: &dyn ring::rand::SecureRandom) -> Result<Secret, ring::error::Unspecified> {
        let der = Ed25519KeyPair::generate_pkcs8(rng)?;
        let body = STANDARD.encode(der.as_ref());
        let lines: Vec<&str> = body.as_bytes().chunks(64).map(|line| std::str::from_utf8(line).expect("base64 is ASCII")).collect();
        Ok(Secret(format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", lines.join("\n"))))
    }

    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        let what = "the JWT private key";
        let der = pem_der(text, "PRIVATE KEY", what)?;
        Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map(|pair| Self { pair }).map_err(|_| KeyError::NotEd25519 { what })
    }

    pub fn public_key(&self) -> PublicKey {
        let raw = <[u8; 32]>::try_from(self.pair.public_key().as_ref()).expect("Ed25519 public keys are 32 bytes");
        PublicKey { raw }
    }

    /// The public half as the JWK compute_ctl verifies `/configure` calls with.
    pub fn jwk(&self) -> Jwk {
        Jwk::ed25519(KEY_ID, URL_SAFE_NO_PAD.encode(self.pair.public_key().as_ref()))
    }

    pub fn sign(&self, claims: &impl Serialize) -> Secret {
        let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": KEY_ID});
        let encode = |value: &Value| URL_SAFE_NO_PAD.encode(value.to_string());
        let claims = serde_json::to_value(claims).expect("claims serialize to JSON");
        let signing_input = format!("{}.{}", encode(&header), encode(&claims));
        let signature = URL_SAFE_NO_PAD.encode(self.pair.sign(signing_input.as_bytes()).as_ref());
        Secret(format!("{signing_input}.{signature}"))
    }

    /// The token a compute uses as its password to pageservers and safekeepers: scope
    /// `tenant` for its tenant, no expiry (Neon has no rotation scheme).
    pub fn tenant_token(&self, tenant_id: &str) -> Secret {
        self.sign(&json!({"scope": "tenant", "tenant_id": tenant_id}))
    }

    /// A token for the storage controller's API (neon's `Claims`: `scope`, no tenant), valid
    /// for `lifetime`: neon checks `exp` when a token has one.
    pub fn storage_controller_token(&self, scope: &str, lifetime: std::time::Duration) -> Secret {
        self.sign(&json!({"scope": scope, "exp": now() + lifetime.as_secs()}))
    }

    /// A short-lived token compute_ctl accepts for `compute_id` (`ComputeClaims`:
    /// `compute_id`, `aud: ["compute"]`, `exp`).
    pub fn compute_ctl_token(&self, compute_id: &str) -> Secret {
        self.sign(&json!({"compute_id": compute_id, "aud": ["compute"], "exp": now() + 600}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key pair as openssl writes it (PKCS#8 v1 private key, SPKI public key).
    const PRIVATE: &str =
        "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIBHUH9DnKj1KHnHNI/8N+u5lLb17NToswyQK/8WQl1km\n-----END PRIVATE KEY-----\n";

    #[test]
    fn signs_and_verifies_with_scope_and_expiry() {
        let key = SigningKey::from_pem(PRIVATE).unwrap();
        let public = PublicKey::from_pem(&key.public_key().to_pem()).unwrap();
        let bearer = |token: Secret| Some(format!("Bearer {}", token.0));
        let token = key.sign(&json!({"scope": "infra"}));
        assert_eq!(public.authorize(bearer(token.clone()).as_deref(), &["infra", "admin"]), Ok(()));
        assert!(matches!(public.authorize(bearer(token).as_deref(), &["admin"]), Err(TokenError::Scope { .. })));
        let expired = key.sign(&json!({"scope": "infra", "exp": 1}));
        assert_eq!(public.authorize(bearer(expired).as_deref(), &["infra"]), Err(TokenError::Expired));
        assert_eq!(public.authorize(None, &["infra"]), Err(TokenError::Missing));
        assert_eq!(public.authorize(Some("Bearer a.b"), &["infra"]), Err(TokenError::Malformed));
        let mut forged = key.sign(&json!({"scope": "admin"})).0;
        forged.replace_range(forged.len() - 4.., "AAAA");
        assert_eq!(public.authorize(Some(&format!("Bearer {forged}")), &["admin"]), Err(TokenError::Signature));
        assert_eq!(key.jwk().x.len(), 43, "32 bytes, base64url without padding");
        let storage = key.storage_controller_token("infra", std::time::Duration::from_secs(60));
        assert_eq!(public.authorize(bearer(storage).as_deref(), &["infra"]), Ok(()));
    }

    #[test]
    fn generated_keys_read_back_and_sign() {
        let pem = SigningKey::generate_pem(&ring::rand::SystemRandom::new()).unwrap();
        assert!(pem.0.starts_with("-----BEGIN PRIVATE KEY-----\n") && pem.0.lines().all(|l| l.len() <= 64));
        let key = SigningKey::from_pem(&pem.0).unwrap();
        let token = key.sign(&json!({"scope": "pageserverapi"}));
        assert_eq!(key.public_key().scope_of(&token.0), Ok(Some("pageserverapi".into())));
        let other = SigningKey::from_pem(PRIVATE).unwrap();
        assert_eq!(other.public_key().scope_of(&token.0), Err(TokenError::Signature));
    }

    #[test]
    fn rejects_keys_that_are_not_ed25519_pem() {
        assert!(matches!(PublicKey::from_pem("hello"), Err(KeyError::NotPem { .. })));
        assert!(matches!(SigningKey::from_pem(PRIVATE.replace("MC4C", "MC4D").as_str()), Err(KeyError::NotEd25519 { .. })));
    }
}
