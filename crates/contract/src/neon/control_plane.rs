//! The configuration file of our own control plane (the small HTTP service that Neon expects
//! from "the cloud"): where every storage node is, so that it can answer the storage
//! controller's compute hooks, serve compute specs and the proxy's cplane-v1 API. It holds
//! addresses only; keys and tokens reach the control plane through environment variables.

use serde::{Deserialize, Serialize};

use super::{NeonConfigError, to_json};
use crate::computes::ComputeTemplate;

/// The URL paths the control plane serves, relative to its base URL. The storage controller,
/// the proxy and compute_ctl are pointed at these.
pub mod paths {
    /// `--control-plane-url` of the storage controller: `PUT {this}/notify-attach`, `…/notify-safekeepers`.
    pub const STORAGE_HOOKS: &str = "/storage";
    /// `--auth-endpoint` of the proxy: `GET {this}/get_endpoint_access_control`, `…/wake_compute`.
    pub const PROXY_API: &str = "/proxy";
    /// Liveness and readiness.
    pub const HEALTH: &str = "/healthz";
    /// Prometheus metrics.
    pub const METRICS: &str = "/metrics";
    /// Fixed by compute_ctl, which appends it to `--control-plane-uri`:
    /// `GET {base}{this}/{compute_id}/spec`.
    pub const COMPUTE_SPECS: &str = "/compute/api/v2/computes";
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    pub listen: String,
    pub region: String,
    pub storage_controller_url: String,
    pub pageservers: Vec<Node>,
    pub safekeepers: Vec<Node>,
    /// What every endpoint's compute is made of; the operator makes one per NeonEndpoint.
    pub compute: ComputeTemplate,
}

/// A pageserver or safekeeper: its node id and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub id: u64,
    /// `host:port` of the libpq endpoint.
    pub pg: String,
    pub http: String,
    pub availability_zone: String,
}

impl Topology {
    pub fn to_json(&self) -> Result<String, NeonConfigError> {
        to_json(self, "control-plane", "topology.json")
    }
}
