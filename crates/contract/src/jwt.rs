//! EdDSA (Ed25519) JWTs, the only kind Neon uses (`docs/authentication.md`): verifying the
//! bearer tokens our callers send, and signing the tokens we hand out (the compute's
//! `storage_auth_token`, and the one we send to compute_ctl's `/configure`). Tokens are made and
//! checked by jsonwebtoken (what neon's `libs/utils/src/auth.rs` uses), PEM is read by
//! rustls-pki-types, keys are ed25519-dalek's.
//!
//! Keys are PEM, as `openssl genpkey -algorithm ed25519` writes them: a PKCS#8 private key and
//! an SPKI public key.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _, EncodePrivateKey as _, EncodePublicKey as _};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{PrivatePkcs8KeyDer, SubjectPublicKeyInfoDer};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::neon::Secret;
use crate::neon::compute::Jwk;

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
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

/// How incoming tokens are checked, as neon's `JwtAuth::decode` does: EdDSA only, `exp`
/// optional but enforced (without leeway) when present, no audience.
fn validation() -> Validation {
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.required_spec_claims.clear();
    validation.leeway = 0;
    validation.validate_aud = false;
    validation
}

/// The public key incoming bearer tokens must be signed with.
#[derive(Clone)]
pub struct PublicKey {
    key: ed25519_dalek::VerifyingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PublicKey").field(&URL_SAFE_NO_PAD.encode(self.key.as_bytes())).finish()
    }
}

impl PublicKey {
    fn new(key: ed25519_dalek::VerifyingKey) -> Self {
        Self { decoding: DecodingKey::from_ed_der(key.as_bytes()), key }
    }

    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        let what = "the JWT public key";
        let der = SubjectPublicKeyInfoDer::from_pem_slice(text.as_bytes()).map_err(|_| KeyError::NotPem { what, label: "PUBLIC KEY" })?;
        ed25519_dalek::VerifyingKey::from_public_key_der(&der).map(Self::new).map_err(|_| KeyError::NotEd25519 { what })
    }

    /// The key as PEM (SPKI).
    pub fn to_pem(&self) -> String {
        self.key.to_public_key_pem(LineEnding::LF).expect("an Ed25519 key encodes as SPKI")
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
        match jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation()) {
            Ok(data) => Ok(data.claims.scope),
            Err(error) => Err(match error.kind() {
                ErrorKind::InvalidSignature => TokenError::Signature,
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::InvalidAlgorithm => TokenError::Algorithm,
                _ => TokenError::Malformed,
            }),
        }
    }
}

/// The private key the control plane signs tokens with.
pub struct SigningKey {
    key: ed25519_dalek::SigningKey,
    encoding: EncodingKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

impl SigningKey {
    /// A fresh key as PKCS#8 PEM, which [`SigningKey::from_pem`] and openssl read.
    pub fn generate_pem(rng: &dyn ring::rand::SecureRandom) -> Result<Secret, ring::error::Unspecified> {
        let mut seed = [0u8; 32];
        rng.fill(&mut seed)?;
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        Ok(Secret(key.to_pkcs8_pem(LineEnding::LF).map_err(|_| ring::error::Unspecified)?.to_string()))
    }

    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        let what = "the JWT private key";
        let der = PrivatePkcs8KeyDer::from_pem_slice(text.as_bytes()).map_err(|_| KeyError::NotPem { what, label: "PRIVATE KEY" })?;
        let key = ed25519_dalek::SigningKey::from_pkcs8_der(der.secret_pkcs8_der()).map_err(|_| KeyError::NotEd25519 { what })?;
        Ok(Self { encoding: EncodingKey::from_ed_der(der.secret_pkcs8_der()), key })
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey::new(self.key.verifying_key())
    }

    /// The public half as the JWK compute_ctl verifies `/configure` calls with.
    pub fn jwk(&self) -> Jwk {
        Jwk::ed25519(KEY_ID, URL_SAFE_NO_PAD.encode(self.key.verifying_key().as_bytes()))
    }

    pub fn sign(&self, claims: &impl Serialize) -> Secret {
        let header = Header { kid: Some(KEY_ID.into()), ..Header::new(Algorithm::EdDSA) };
        Secret(jsonwebtoken::encode(&header, claims, &self.encoding).expect("an Ed25519 key signs any JSON claims"))
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
