//! The safekeeper's command line (`safekeeper/src/bin/safekeeper.rs`, clap `Args`). It has no
//! config file: everything is a flag.
//!
//! Pitfalls this encodes: bind `0.0.0.0` for pg but publish a resolvable `--advertise-pg`
//! (pageservers connect to what the broker publishes); bind HTTP to the pod IP, because
//! `http_connstr` is published unadvertised; WAL offload takes an inline TOML table.

use super::{NeonConfigError, S3Storage, flag};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafekeeperArgs {
    /// Stable per pod; written to `<datadir>/safekeeper.id` on first start and checked after.
    pub id: u64,
    /// On a persistent volume: WAL and control files.
    pub datadir: String,
    pub listen_pg: String,
    pub listen_http: String,
    /// `host:port` pageservers and computes can resolve.
    pub advertise_pg: String,
    pub availability_zone: String,
    pub broker_endpoint: String,
    pub remote_storage: S3Storage,
    /// PEM public key validating JWTs on the pg and http endpoints.
    pub auth_public_key_path: String,
    /// The JWT (scope `safekeeperdata`) it sends other safekeepers: without one, `pull_timeline`
    /// between safekeepers fails with "missing authorization header" (`safekeeper.rs`).
    pub auth_token_path: String,
}

impl SafekeeperArgs {
    pub fn to_args(&self) -> Result<Vec<String>, NeonConfigError> {
        Ok(vec![
            flag("id", self.id),
            flag("datadir", &self.datadir),
            flag("listen-pg", &self.listen_pg),
            flag("listen-http", &self.listen_http),
            flag("advertise-pg", &self.advertise_pg),
            flag("availability-zone", &self.availability_zone),
            flag("broker-endpoint", &self.broker_endpoint),
            flag("remote-storage", self.remote_storage.to_inline_toml("safekeeper")?),
            flag("pg-auth-public-key-path", &self.auth_public_key_path),
            flag("http-auth-public-key-path", &self.auth_public_key_path),
            flag("auth-token-path", &self.auth_token_path),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_carry_every_flag_a_deployment_needs() {
        let args = SafekeeperArgs {
            id: 2,
            datadir: "/data".into(),
            listen_pg: "0.0.0.0:5454".into(),
            listen_http: "$(POD_IP):7676".into(),
            advertise_pg: "neon-safekeeper-2-0.neon-safekeeper.neon.svc.cluster.local:5454".into(),
            availability_zone: "us-east-1b".into(),
            broker_endpoint: "http://neon-storage-broker.neon.svc.cluster.local:50051".into(),
            remote_storage: S3Storage {
                bucket_name: "b".into(),
                bucket_region: "us-east-1".into(),
                prefix_in_bucket: Some("safekeeper/".into()),
                endpoint: None,
            },
            auth_public_key_path: "/etc/neon/auth/auth_public_key.pem".into(),
            auth_token_path: "/etc/neon/auth/safekeeper-peer.jwt".into(),
        }
        .to_args()
        .unwrap();
        for name in [
            "id",
            "datadir",
            "listen-pg",
            "listen-http",
            "advertise-pg",
            "availability-zone",
            "broker-endpoint",
            "remote-storage",
            "pg-auth-public-key-path",
            "http-auth-public-key-path",
            "auth-token-path",
        ] {
            assert_eq!(args.iter().filter(|a| a.starts_with(&format!("--{name}="))).count(), 1, "--{name} once in {args:?}");
        }
        assert!(args.contains(&"--id=2".to_string()));
        insta::assert_debug_snapshot!("safekeeper-args", args);
    }
}
