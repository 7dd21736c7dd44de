//! The pageserver's three workdir files (`pageserver/src/bin/pageserver.rs` reads them from
//! `-D <workdir>`): `pageserver.toml` (`ConfigToml`, `libs/pageserver_api/src/config.rs`),
//! `identity.toml` (`PageserverIdentity { id }`) and `metadata.json` (`NodeMetadata`, sent to
//! the storage controller on `re-attach` to register the node).
//!
//! Pitfalls this encodes: `control_plane_api` is mandatory; `id` lives only in
//! `identity.toml`; the availability zone must be known (metadata.json `availability_zone_id`,
//! else `availability_zone` in pageserver.toml, else the pageserver panics), so both are set.

use serde::{Deserialize, Serialize};

use super::{NeonConfigError, S3Storage, Secret, to_json, to_toml};

const COMPONENT: &str = "pageserver";

/// `postgres_backend::AuthType`, written with its `Display` spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthType {
    Trust,
    #[serde(rename = "NeonJWT")]
    NeonJwt,
}

/// `pageserver.toml`. Holds the storage controller token, so it belongs in a Secret.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PageserverToml {
    pub listen_pg_addr: String,
    pub listen_http_addr: String,
    /// The storage broker, `http://host:port`.
    pub broker_endpoint: String,
    /// The storage controller's upcall prefix, `http://host:port/upcall/v1/`. Mandatory.
    pub control_plane_api: String,
    /// JWT with scope `generations_api` for the upcalls; the strict storage controller needs it.
    pub control_plane_api_token: Secret,
    /// Where `v17/bin/postgres` and `v17/bin/initdb` live.
    pub pg_distrib_dir: String,
    /// Fallback for metadata.json's `availability_zone_id`.
    pub availability_zone: String,
    pub http_auth_type: AuthType,
    pub pg_auth_type: AuthType,
    /// PEM public key that validates incoming JWTs (required when either auth type is NeonJWT).
    pub auth_validation_public_key_path: String,
    pub remote_storage: S3Storage,
}

impl PageserverToml {
    pub fn to_toml(&self) -> Result<String, NeonConfigError> {
        to_toml(self, COMPONENT, "pageserver.toml")
    }
}

/// `identity.toml`: the node id, and nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub id: u64,
}

impl Identity {
    pub fn to_toml(&self) -> Result<String, NeonConfigError> {
        to_toml(self, COMPONENT, "identity.toml")
    }
}

/// `metadata.json` (`NodeMetadata`): the addresses the storage controller and computes use.
/// `availability_zone_id` travels in neon's flattened `other` map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMetadata {
    /// Postgres (page service) host.
    pub host: String,
    pub port: u16,
    pub http_host: String,
    pub http_port: u16,
    pub availability_zone_id: String,
}

impl NodeMetadata {
    pub fn to_json(&self) -> Result<String, NeonConfigError> {
        to_json(self, COMPONENT, "metadata.json")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample_toml() -> PageserverToml {
        PageserverToml {
            listen_pg_addr: "0.0.0.0:6400".into(),
            listen_http_addr: "0.0.0.0:9898".into(),
            broker_endpoint: "http://neon-storage-broker.neon.svc.cluster.local:50051".into(),
            control_plane_api: "http://neon-storage-controller.neon.svc.cluster.local:1234/upcall/v1/".into(),
            control_plane_api_token: Secret("<generations_api token>".into()),
            pg_distrib_dir: "/usr/local/".into(),
            availability_zone: "us-east-1a".into(),
            http_auth_type: AuthType::NeonJwt,
            pg_auth_type: AuthType::NeonJwt,
            auth_validation_public_key_path: "/etc/neon/auth/auth_public_key.pem".into(),
            remote_storage: S3Storage {
                bucket_name: "neon-123456789012-us-east-1".into(),
                bucket_region: "us-east-1".into(),
                prefix_in_bucket: Some("pageserver/".into()),
                endpoint: None,
            },
        }
    }

    #[test]
    fn pageserver_toml_has_every_mandatory_key() {
        let text = sample_toml().to_toml().unwrap();
        let table: toml::Table = toml::from_str(&text).unwrap();
        for key in [
            "listen_pg_addr",
            "listen_http_addr",
            "broker_endpoint",
            "control_plane_api",
            "control_plane_api_token",
            "pg_distrib_dir",
            "availability_zone",
            "auth_validation_public_key_path",
        ] {
            assert!(table[key].is_str(), "{key} is a string in\n{text}");
        }
        assert_eq!(table["http_auth_type"].as_str(), Some("NeonJWT"));
        assert_eq!(table["pg_auth_type"].as_str(), Some("NeonJWT"));
        assert!(!table.contains_key("id"), "id belongs in identity.toml only");
        let storage = table["remote_storage"].as_table().expect("remote_storage is a table");
        for key in ["bucket_name", "bucket_region", "prefix_in_bucket"] {
            assert!(storage[key].is_str(), "remote_storage.{key}");
        }
        assert!(table["control_plane_api"].as_str().unwrap().ends_with("/upcall/v1/"));
        insta::assert_snapshot!("pageserver.toml", text);
    }

    #[test]
    fn identity_is_only_the_id() {
        let text = Identity { id: 1 }.to_toml().unwrap();
        assert_eq!(text, "id = 1\n");
    }

    #[test]
    fn metadata_json_matches_node_metadata() {
        let metadata = NodeMetadata {
            host: "neon-pageserver-1-0.neon-pageserver.neon.svc.cluster.local".into(),
            port: 6400,
            http_host: "neon-pageserver-1-0.neon-pageserver.neon.svc.cluster.local".into(),
            http_port: 9898,
            availability_zone_id: "us-east-1a".into(),
        };
        let text = metadata.to_json().unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        for key in ["host", "http_host", "availability_zone_id"] {
            assert!(value[key].is_string(), "{key}");
        }
        for key in ["port", "http_port"] {
            assert!(value[key].is_u64(), "{key}");
        }
        insta::assert_snapshot!("metadata.json", text);
    }
}
