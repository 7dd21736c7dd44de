//! The control plane service as the rest of the system sees it: how the Deployment starts it,
//! which environment it reads, the scopes of the tokens its callers carry, and the storage
//! report it writes for `status`.

use serde::{Deserialize, Serialize};

/// The command line that runs the service in the cluster, after `neonctl-aws-control-plane`
/// (the image's entrypoint) or `neonctl-aws control-plane`: the
/// Deployment's args.
pub const SERVE_ARGS: [&str; 3] = ["serve", "--store", "kubernetes"];
/// The namespace of the custom resources with `--store kubernetes` (the downward API's
/// `metadata.namespace` in the Deployment).
pub const NAMESPACE_ENV: &str = "POD_NAMESPACE";
/// The name of the ConfigMap the reconciler writes the storage status to.
pub const STATUS_CONFIG_MAP_ENV: &str = "NEONCTL_STATUS_CONFIG_MAP";
/// The Lease the replicas elect the reconciler's leader with (`--lease`).
pub const LEASE_ENV: &str = "NEONCTL_LEASE";
/// This replica's pod name (the downward API's `metadata.name`): its identity in the Lease.
pub const POD_NAME_ENV: &str = "POD_NAME";

/// The Lease of deployment `prefix`.
pub fn control_plane_lease(prefix: &str) -> String {
    format!("{prefix}-control-plane")
}

/// The status ConfigMap of deployment `prefix` (key [`STATUS_KEY`]).
pub fn status_config_map(prefix: &str) -> String {
    format!("{prefix}-control-plane-status")
}
/// PEM of the public key callers' tokens are verified with; unset: no authentication.
pub const PUBLIC_KEY_ENV: &str = "NEONCTL_JWT_PUBLIC_KEY";
/// PEM (PKCS#8) of the key the control plane signs compute and storage tokens with.
pub const PRIVATE_KEY_ENV: &str = "NEONCTL_JWT_PRIVATE_KEY";

/// The `scope` claim each caller's token must carry (or `admin`, accepted everywhere).
pub mod scopes {
    /// The storage controller's `--control-plane-jwt-token`.
    pub const STORAGE_CONTROLLER: &str = "control_plane:storage";
    /// The proxy's `NEON_PROXY_TO_CONTROLPLANE_TOKEN`.
    pub const PROXY: &str = "control_plane:proxy";
    /// compute_ctl's `NEON_CONTROL_PLANE_TOKEN`.
    pub const COMPUTE: &str = "control_plane:compute";
    pub const ADMIN: &str = "admin";
}

/// The key of the status ConfigMap that holds [`StorageStatus`] as JSON.
pub const STATUS_KEY: &str = "storage.json";

/// How often the control plane writes its report when nothing in it changed (a change is
/// written at the round that sees it); `status` fails a report twice as old.
pub const REPORT_REFRESH: std::time::Duration = std::time::Duration::from_secs(15);

/// `storage.json` in the status ConfigMap: the storage controller's view at the last round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageStatus {
    /// RFC 3339, UTC.
    pub checked_at: String,
    /// As `GET /control/v1/node` lists them; empty when the controller could not be asked.
    pub pageservers: Vec<PageserverStatus>,
    /// The safekeepers this control plane registered and activated.
    pub safekeepers: Vec<u64>,
    /// Why the storage controller could not be asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The control plane runs with `--insecure-no-auth` and no public key: it checks no token.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unauthenticated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PageserverStatus {
    pub id: u64,
    /// `Active`, `WarmingUp` or `Offline`.
    pub availability: String,
    /// `Active`, `Filling`, `Pause`, `PauseForRestart`, `Draining` or `Deleting`.
    pub scheduling: String,
    pub availability_zone: String,
}
