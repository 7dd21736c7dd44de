//! Typed configuration for every Neon component, in the exact shapes neon `release-9129` reads
//! (files: TOML/JSON via serde; command lines: `--flag=value` lists built from typed structs).
//!
//! Nothing here knows about Kubernetes: the CLI's `render` decides names, addresses and where
//! each file is mounted. Secrets (JWTs, keys, passwords) never appear in these structs except
//! as [`Secret`], which serializes into the file that needs it but never into `Debug` output;
//! the files that carry one (`pageserver.toml`, the compute spec) go into Kubernetes Secrets or
//! HTTP responses, never into ConfigMaps or command lines.

pub mod compute;
pub mod control_plane;
pub mod pageserver;
pub mod proxy;
pub mod safekeeper;
pub mod storage_broker;
pub mod storage_controller;

use serde::{Deserialize, Serialize};

/// Ports every component listens on. The code defaults differ (pageserver pg 64000, proxy 4432,
/// storcon none); these are the values neon's Dockerfile, docker-compose and helm charts use.
pub mod ports {
    pub const PAGESERVER_PG: u16 = 6400;
    pub const PAGESERVER_HTTP: u16 = 9898;
    pub const SAFEKEEPER_PG: u16 = 5454;
    pub const SAFEKEEPER_HTTP: u16 = 7676;
    pub const STORAGE_BROKER: u16 = 50051;
    pub const STORAGE_CONTROLLER: u16 = 1234;
    pub const PROXY_PG: u16 = 5432;
    pub const PROXY_MGMT: u16 = 7000;
    pub const PROXY_HTTP: u16 = 7001;
    pub const COMPUTE_PG: u16 = 5432;
    pub const COMPUTE_HTTP: u16 = 3080;
    pub const CONTROL_PLANE: u16 = 8080;
    pub const POSTGRES: u16 = 5432;
}

#[derive(Debug, thiserror::Error)]
pub enum NeonConfigError {
    #[error("could not write {file} for {component}: {message}; this is a bug in neonctl-aws, please report it")]
    Serialize { component: &'static str, file: &'static str, message: String },
}

/// A credential that must reach one file or request and nowhere else: `Debug` redacts it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The S3 variant of neon's `RemoteStorageConfig` (`libs/remote_storage/src/config.rs`):
/// credentials come from the AWS default chain, i.e. IRSA on EKS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3Storage {
    pub bucket_name: String,
    /// Required by neon, even for AWS S3.
    pub bucket_region: String,
    /// Neon strips leading and trailing `/`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix_in_bucket: Option<String>,
    /// An S3-compatible endpoint URL; none: AWS S3 of `bucket_region`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

impl S3Storage {
    /// The inline TOML table the safekeeper's `--remote-storage` parses.
    pub fn to_inline_toml(&self, component: &'static str) -> Result<String, NeonConfigError> {
        toml::Value::try_from(self).map(|value| value.to_string()).map_err(|e| NeonConfigError::Serialize {
            component,
            file: "--remote-storage",
            message: e.to_string(),
        })
    }
}

/// `--name=value`, the one spelling every neon binary's clap parser accepts.
pub(crate) fn flag(name: &str, value: impl std::fmt::Display) -> String {
    format!("--{name}={value}")
}

pub(crate) fn to_toml(value: &impl Serialize, component: &'static str, file: &'static str) -> Result<String, NeonConfigError> {
    toml::to_string(value).map_err(|e| NeonConfigError::Serialize { component, file, message: e.to_string() })
}

pub(crate) fn to_json(value: &impl Serialize, component: &'static str, file: &'static str) -> Result<String, NeonConfigError> {
    serde_json::to_string_pretty(value).map(|text| text + "\n").map_err(|e| NeonConfigError::Serialize {
        component,
        file,
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_leak_through_debug() {
        let secret = Secret("eyJhbGciOi.very.secret".into());
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
        assert_eq!(serde_json::to_string(&secret).unwrap(), "\"eyJhbGciOi.very.secret\"");
    }

    #[test]
    fn remote_storage_is_an_inline_table() {
        let mut s3 = S3Storage {
            bucket_name: "b".into(),
            bucket_region: "us-east-1".into(),
            prefix_in_bucket: Some("safekeeper/".into()),
            endpoint: None,
        };
        let text = s3.to_inline_toml("safekeeper").unwrap();
        assert_eq!(text, r#"{ bucket_name = "b", bucket_region = "us-east-1", prefix_in_bucket = "safekeeper/" }"#);
        // neon parses it as a TOML value (`toml_edit::Item`): it must be one inline table.
        let parsed: toml::Table = toml::from_str(&format!("remote_storage = {text}")).unwrap();
        assert_eq!(parsed["remote_storage"]["bucket_region"].as_str(), Some("us-east-1"));
        // An S3-compatible store: neon's `S3Config.endpoint` (docker-compose uses MinIO so).
        s3.endpoint = Some("http://minio:9000".into());
        let parsed: toml::Table = toml::from_str(&format!("remote_storage = {}", s3.to_inline_toml("safekeeper").unwrap())).unwrap();
        assert_eq!(parsed["remote_storage"]["endpoint"].as_str(), Some("http://minio:9000"));
    }
}
