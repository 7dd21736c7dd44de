//! The proxy's command line (`proxy/src/binary/proxy.rs`, `ProxyCliArgs`).
//!
//! Auth backend `control-plane` (alias `cplane-v1`): the proxy calls
//! `GET {auth-endpoint}/get_endpoint_access_control` and `/wake_compute` on our control plane
//! with `Authorization: Bearer $NEON_PROXY_TO_CONTROLPLANE_TOKEN`. The auth endpoint must not
//! end with `/` (path segments are appended). The TLS certificate's subject CN must itself be
//! the wildcard `*.<domain>`: the proxy derives the endpoint from SNI `<endpoint>.<domain>`.

use super::flag;

/// Environment variable the proxy reads its control-plane token from.
pub const CONTROL_PLANE_TOKEN_ENV: &str = "NEON_PROXY_TO_CONTROLPLANE_TOKEN";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyArgs {
    pub proxy: String,
    pub mgmt: String,
    /// Metrics and `/v1/status`.
    pub http: String,
    /// Our control plane's proxy API base, without a trailing `/`.
    pub auth_endpoint: String,
    pub tls_cert: String,
    pub tls_key: String,
    pub region: String,
}

impl ProxyArgs {
    pub fn to_args(&self) -> Vec<String> {
        vec![
            flag("proxy", &self.proxy),
            flag("mgmt", &self.mgmt),
            flag("http", &self.http),
            flag("auth-backend", "control-plane"),
            flag("auth-endpoint", self.auth_endpoint.trim_end_matches('/')),
            flag("tls-cert", &self.tls_cert),
            flag("tls-key", &self.tls_key),
            flag("region", &self.region),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uses_the_control_plane_backend_without_a_trailing_slash() {
        let args = ProxyArgs {
            proxy: "0.0.0.0:5432".into(),
            mgmt: "0.0.0.0:7000".into(),
            http: "0.0.0.0:7001".into(),
            auth_endpoint: "http://neon-control-plane.neon.svc.cluster.local:8080/proxy/".into(),
            tls_cert: "/etc/neon/tls/tls.crt".into(),
            tls_key: "/etc/neon/tls/tls.key".into(),
            region: "us-east-1".into(),
        }
        .to_args();
        assert!(args.contains(&"--auth-backend=control-plane".to_string()));
        assert!(args.contains(&"--auth-endpoint=http://neon-control-plane.neon.svc.cluster.local:8080/proxy".to_string()));
        assert!(!args.iter().any(|a| a.starts_with("--control-plane-token")), "the token comes from the environment");
        insta::assert_debug_snapshot!("proxy-args", args);
    }
}
