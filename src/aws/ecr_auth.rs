//! Docker credentials for ECR: `GetAuthorizationToken`, decoded and cached until shortly
//! before it expires. The token is a credential: it lives in memory only and is never printed
//! (its `Debug` is redacted) or persisted.

use std::time::{Duration, SystemTime};

use base64::Engine;
use bollard::auth::DockerCredentials;
use tokio::sync::Mutex;

/// Refresh this long before the token's own expiry, so that a push never starts with a token
/// about to lapse.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);
/// How long a token whose expiry is missing or already past is used before asking again.
/// Emulators (moto) report expiry dates in the past; real ECR tokens last 12 hours.
pub const FALLBACK_LIFETIME: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum EcrAuthError {
    #[error("ECR GetAuthorizationToken failed: {detail}. Check the AWS credentials (ecr:GetAuthorizationToken is needed)")]
    Call { detail: String },
    #[error("ECR returned no authorization data")]
    Empty,
    #[error("ECR returned an authorization token that is not base64 of `user:password`")]
    Malformed,
}

/// An SDK error and its causes on one line, without the Debug dump.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

/// The registry host ECR serves an account's repositories from.
pub fn registry(account: &str, region: &str) -> String {
    let suffix = if region.starts_with("cn-") { "amazonaws.com.cn" } else { "amazonaws.com" };
    format!("{account}.dkr.ecr.{region}.{suffix}")
}

/// Splits base64(`AWS:<password>`) into user and password.
pub fn decode(token: &str) -> Result<(String, String), EcrAuthError> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(token.trim()).map_err(|_| EcrAuthError::Malformed)?;
    let text = String::from_utf8(bytes).map_err(|_| EcrAuthError::Malformed)?;
    let (user, password) = text.split_once(':').ok_or(EcrAuthError::Malformed)?;
    if user.is_empty() || password.is_empty() {
        return Err(EcrAuthError::Malformed);
    }
    Ok((user.to_string(), password.to_string()))
}

/// Until when a token fetched at `fetched` with expiry `expires_at` is used.
pub fn valid_until(expires_at: Option<SystemTime>, fetched: SystemTime) -> SystemTime {
    match expires_at.and_then(|e| e.checked_sub(REFRESH_MARGIN)) {
        Some(refresh_at) if refresh_at > fetched => refresh_at,
        _ => fetched + FALLBACK_LIFETIME,
    }
}

struct Token {
    user: String,
    password: String,
    valid_until: SystemTime,
}

/// Caches one token; `credentials` asks ECR again once it is no longer valid.
#[derive(Default)]
pub struct EcrAuth {
    token: Mutex<Option<Token>>,
}

impl std::fmt::Debug for EcrAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EcrAuth { token: <redacted> }")
    }
}

impl EcrAuth {
    /// Credentials for `registry`, valid at `now`.
    pub async fn credentials(&self, ecr: &aws_sdk_ecr::Client, registry: &str, now: SystemTime) -> Result<DockerCredentials, EcrAuthError> {
        let mut cached = self.token.lock().await;
        if cached.as_ref().is_none_or(|t| now >= t.valid_until) {
            let out = ecr.get_authorization_token().send().await.map_err(|e| EcrAuthError::Call { detail: error_chain(&e) })?;
            let data = out.authorization_data().first().ok_or(EcrAuthError::Empty)?;
            let (user, password) = decode(data.authorization_token().ok_or(EcrAuthError::Empty)?)?;
            let expires_at = data.expires_at().and_then(|t| SystemTime::try_from(*t).ok());
            *cached = Some(Token { user, password, valid_until: valid_until(expires_at, now) });
        }
        let token = cached.as_ref().expect("just filled");
        Ok(DockerCredentials {
            username: Some(token.user.clone()),
            password: Some(token.password.clone()),
            serveraddress: Some(registry.to_string()),
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_decode_to_user_and_password() {
        let token = base64::engine::general_purpose::STANDARD.encode("AWS:se:cret");
        assert_eq!(decode(&token).unwrap(), ("AWS".to_string(), "se:cret".to_string()));
        assert!(decode("not base64!").is_err());
        assert!(decode(&base64::engine::general_purpose::STANDARD.encode("no-colon")).is_err());
        assert!(decode(&base64::engine::general_purpose::STANDARD.encode("AWS:")).is_err());
    }

    #[test]
    fn validity_keeps_a_margin_and_past_expiries_get_a_short_window() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let in_12h = now + Duration::from_secs(12 * 3600);
        assert_eq!(valid_until(Some(in_12h), now), in_12h - REFRESH_MARGIN);
        let in_2005 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_420_070_400);
        assert_eq!(valid_until(Some(in_2005), now), now + FALLBACK_LIFETIME);
        assert_eq!(valid_until(Some(now + Duration::from_secs(60)), now), now + FALLBACK_LIFETIME);
        assert_eq!(valid_until(None, now), now + FALLBACK_LIFETIME);
    }

    #[test]
    fn registries_are_named_by_account_and_region() {
        assert_eq!(registry("123456789012", "eu-west-1"), "123456789012.dkr.ecr.eu-west-1.amazonaws.com");
        assert_eq!(registry("123456789012", "cn-north-1"), "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn");
    }
}
