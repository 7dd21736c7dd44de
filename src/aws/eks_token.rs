//! EKS bearer tokens without the aws CLI.
//!
//! A token is `k8s-aws-v1.` + base64url (no padding) of a presigned STS GetCallerIdentity URL
//! whose signature covers the `x-k8s-aws-id: <cluster>` header. The API server's authenticator
//! calls that URL to learn who we are; it accepts the token for 15 minutes after X-Amz-Date
//! whatever X-Amz-Expires says, so we report expiry at 14 minutes, as aws-iam-authenticator does.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign};
use aws_sigv4::sign::v4;
use base64::Engine;

pub const TOKEN_PREFIX: &str = "k8s-aws-v1.";
const CLUSTER_HEADER: &str = "x-k8s-aws-id";
/// How long a token is good for, counted from the signing time.
pub const VALIDITY: Duration = Duration::from_secs(14 * 60);

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("signing the EKS token for cluster {cluster}: {message}")]
    Signing { cluster: String, message: String },
}

/// A bearer token; deliberately not `Debug`/`Display`, so it cannot end up in a log line.
pub struct EksToken {
    pub token: String,
    pub expires_at: SystemTime,
}

pub fn token(cluster: &str, region: &str, credentials: &Credentials, now: SystemTime) -> Result<EksToken, TokenError> {
    let fail = |message: String| TokenError::Signing { cluster: cluster.to_string(), message };
    let identity = credentials.clone().into();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(Duration::from_secs(60));
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("sts")
        .time(now)
        .settings(settings)
        .build()
        .map_err(|e| fail(e.to_string()))?
        .into();
    let url = format!("https://sts.{region}.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15");
    let request = SignableRequest::new("GET", url.as_str(), std::iter::once((CLUSTER_HEADER, cluster)), SignableBody::Bytes(&[]))
        .map_err(|e| fail(e.to_string()))?;
    let (instructions, _signature) = sign(request, &params).map_err(|e| fail(e.to_string()))?.into_parts();
    let mut signed = http::Request::builder().method("GET").uri(url.as_str()).body(()).map_err(|e| fail(e.to_string()))?;
    instructions.apply_to_request_http1x(&mut signed);
    let token = format!("{TOKEN_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signed.uri().to_string()));
    Ok(EksToken { token, expires_at: now + VALIDITY })
}

/// The kubectl exec-plugin answer (`client.authentication.k8s.io/v1beta1` ExecCredential).
pub fn exec_credential(token: &EksToken) -> serde_json::Value {
    let expires = time::OffsetDateTime::from(token.expires_at)
        .replace_nanosecond(0)
        .expect("zero nanoseconds is valid")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("UTC time formats");
    serde_json::json!({
        "kind": "ExecCredential",
        "apiVersion": "client.authentication.k8s.io/v1beta1",
        "spec": {},
        "status": {"expirationTimestamp": expires, "token": token.token},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded_url(token: &EksToken) -> String {
        let encoded = token.token.strip_prefix(TOKEN_PREFIX).expect("prefixed");
        String::from_utf8(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded).unwrap()).unwrap()
    }

    /// The vector from shared/reference/aws-eks-and-moto.md §2.2: the signature botocore (what
    /// `aws eks get-token` uses) computes for the same credentials, time and cluster.
    #[test]
    fn matches_the_reference_vector() {
        let credentials =
            Credentials::new("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", Some("SESSIONTOKEN".into()), None, "test");
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let token = token("neon-test", "us-west-2", &credentials, now).unwrap();
        let url = decoded_url(&token);
        let (base, query) = url.split_once('?').unwrap();
        assert_eq!(base, "https://sts.us-west-2.amazonaws.com/");
        let params: std::collections::BTreeMap<&str, &str> = query.split('&').filter_map(|kv| kv.split_once('=')).collect();
        assert_eq!(params["Action"], "GetCallerIdentity");
        assert_eq!(params["Version"], "2011-06-15");
        assert_eq!(params["X-Amz-Algorithm"], "AWS4-HMAC-SHA256");
        assert_eq!(params["X-Amz-Credential"], "AKIDEXAMPLE%2F20231114%2Fus-west-2%2Fsts%2Faws4_request");
        assert_eq!(params["X-Amz-Date"], "20231114T221320Z");
        assert_eq!(params["X-Amz-Expires"], "60");
        assert_eq!(params["X-Amz-SignedHeaders"], "host%3Bx-k8s-aws-id");
        assert_eq!(params["X-Amz-Security-Token"], "SESSIONTOKEN");
        assert_eq!(params["X-Amz-Signature"], "7ab924b634ae241d5b8330497957455d073142db2d2ef9760207358b4b88dc41");
        assert_eq!(params.len(), 9, "the authenticator rejects any other parameter: {url}");
        assert_eq!(token.expires_at, now + VALIDITY);
    }

    #[test]
    fn exec_credential_shape() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let token = token("c", "us-east-1", &Credentials::for_tests(), now).unwrap();
        let json = exec_credential(&token);
        assert_eq!(json["kind"], "ExecCredential");
        assert_eq!(json["apiVersion"], "client.authentication.k8s.io/v1beta1");
        assert_eq!(json["status"]["expirationTimestamp"], "2023-11-14T22:27:20Z");
        assert!(json["status"]["token"].as_str().unwrap().starts_with(TOKEN_PREFIX));
    }
}
