//! What `compute_ctl` needs: its command line, and the spec our control plane serves at
//! `GET {base}/compute/api/v2/computes/{compute_id}/spec` (`ControlPlaneConfigResponse`,
//! `libs/compute_api/src/{spec,responses}.rs`, compute release `release-compute-9073`).
//!
//! Required by serde in `ComputeSpec`: `format_version`, `cluster` (`roles`, `databases`,
//! `settings`), `suspend_timeout_seconds`. Required to start a primary: `tenant_id`,
//! `timeline_id`, `pageserver_connstring`, `safekeeper_connstrings` (`host:port`). compute_ctl
//! does not add `shared_preload_libraries=neon` or `synchronous_standby_names=walproposer`
//! itself, so [`ComputeSpec::new`] always sets them for a primary.

use serde::{Deserialize, Serialize};

use super::{NeonConfigError, Secret, flag, to_json};

/// Environment variable compute_ctl sends as its bearer token to the control plane.
pub const CONTROL_PLANE_TOKEN_ENV: &str = "NEON_CONTROL_PLANE_TOKEN";

/// compute_ctl's command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComputeCtlArgs {
    /// Wiped on every start: an emptyDir is right.
    pub pgdata: String,
    /// How compute_ctl reaches its own Postgres; the port must match the spec's `port`.
    pub connstr: String,
    pub pgbin: String,
    pub compute_id: String,
    /// Our control plane's base URL (no trailing `/`).
    pub control_plane_uri: String,
}

impl ComputeCtlArgs {
    pub fn to_args(&self) -> Vec<String> {
        vec![
            flag("pgdata", &self.pgdata),
            flag("connstr", &self.connstr),
            flag("pgbin", &self.pgbin),
            flag("compute-id", &self.compute_id),
            flag("control-plane-uri", self.control_plane_uri.trim_end_matches('/')),
        ]
    }
}

/// `ControlPlaneConfigResponse`: what the spec endpoint returns.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ControlPlaneConfigResponse {
    pub spec: Option<ComputeSpec>,
    pub status: ComputeStatus,
    pub compute_ctl_config: ComputeCtlConfig,
}

impl ControlPlaneConfigResponse {
    pub fn to_json(&self) -> Result<String, NeonConfigError> {
        to_json(self, "compute", "spec response")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ComputeStatus {
    /// Known but not attached: compute_ctl waits for `POST /configure`.
    Empty,
    Attached,
}

/// `ComputeStatusResponse` (`libs/compute_api/src/responses.rs`): compute_ctl's `GET /status`,
/// the fields the operator reads. `last_active` is when compute_tools/src/monitor.rs last saw
/// activity: a query running, a transaction open, a logical replication sender or subscriber,
/// autovacuum (None: none since it started); RFC 3339 times.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ComputeStatusResponse {
    pub start_time: String,
    /// `ComputeStatus` in snake_case: `empty`, `init`, `running`, `configuration`, `failed`,
    /// `termination_pending_fast`, `terminated`, …
    pub status: String,
    pub last_active: Option<String>,
    pub error: Option<String>,
}

/// The `ComputeStatus` of a compute that serves queries.
pub const COMPUTE_RUNNING: &str = "running";

/// How `POST /terminate?mode=…` stops Postgres (`TerminateMode`): `immediate` answers as soon as
/// Postgres is stopped and its WAL synced to the safekeepers, and compute_ctl exits 0.3 s later
/// (`fast` keeps it 30 s more, for a control plane that wants to read an error).
pub const TERMINATE_IMMEDIATE: &str = "immediate";

/// `TerminateResponse`: the LSN the safekeepers were synced to (primaries only).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TerminateResponse {
    pub lsn: Option<String>,
}

/// `ConfigurationRequest`: the body of compute_ctl's `POST /configure`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfigurationRequest {
    pub spec: ComputeSpec,
    pub compute_ctl_config: ComputeCtlConfig,
}

/// `ComputeCtlConfig`: the keys compute_ctl accepts control-plane JWTs from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComputeCtlConfig {
    pub jwks: JwkSet,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

/// An Ed25519 public key as a JWK (RFC 8037).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Jwk {
    pub kty: &'static str,
    pub crv: &'static str,
    pub alg: &'static str,
    #[serde(rename = "use")]
    pub use_: &'static str,
    pub key_ops: [&'static str; 1],
    pub kid: String,
    /// The public key, base64url without padding.
    pub x: String,
}

impl Jwk {
    pub fn ed25519(kid: impl Into<String>, x: impl Into<String>) -> Self {
        Self { kty: "OKP", crv: "Ed25519", alg: "EdDSA", use_: "sig", key_ops: ["verify"], kid: kid.into(), x: x.into() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComputeSpec {
    pub format_version: f32,
    pub cluster: Cluster,
    pub skip_pg_catalog_updates: bool,
    pub tenant_id: String,
    pub timeline_id: String,
    /// libpq URL of each shard's pageserver, in shard order, comma-separated.
    pub pageserver_connstring: String,
    /// Pages per stripe: only for sharded tenants.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard_stripe_size: Option<u32>,
    pub safekeeper_connstrings: Vec<String>,
    /// The storage controller's safekeeper membership generation, once it manages them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub safekeepers_generation: Option<u32>,
    pub mode: ComputeMode,
    /// JWT (scope `tenant`) used as the password to pageservers and safekeepers; absent when
    /// storage runs without authentication.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_auth_token: Option<Secret>,
    pub project_id: String,
    pub branch_id: String,
    pub endpoint_id: String,
    /// -1: never suspend.
    pub suspend_timeout_seconds: i64,
    /// Roles and databases to drop (`delete_db`, `delete_role`; compute_ctl's
    /// `compute_tools/src/spec_apply.rs` runs them with `IF EXISTS`, so they may repeat).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub delta_operations: Vec<DeltaOp>,
}

/// `DeltaOp`: one catalog change compute_ctl applies before the roles and databases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeltaOp {
    pub action: &'static str,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ComputeMode {
    /// Read-write: writes WAL through the safekeepers (walproposer).
    Primary,
    /// A hot standby that follows the branch's tip from the safekeepers: reads only.
    Replica,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cluster {
    pub cluster_id: String,
    pub name: String,
    pub roles: Vec<Role>,
    pub databases: Vec<Database>,
    pub settings: Vec<Setting>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Role {
    pub name: String,
    /// A `SCRAM-SHA-256$…` verifier: the same one the proxy gets from the control plane.
    pub encrypted_password: Secret,
    pub options: Option<Vec<Setting>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Database {
    pub name: String,
    pub owner: String,
    pub options: Option<Vec<Setting>>,
}

/// `GenericOption`: one GUC (or role/database option).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Setting {
    pub name: String,
    pub value: Option<String>,
    pub vartype: String,
}

impl Setting {
    fn new(name: &str, value: impl ToString, vartype: &str) -> Self {
        Self { name: name.into(), value: Some(value.to_string()), vartype: vartype.into() }
    }
}

/// Where a compute's data lives, who may log in, and whether it writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComputeTarget {
    pub project_id: String,
    pub branch_id: String,
    pub endpoint_id: String,
    pub tenant_id: String,
    pub timeline_id: String,
    /// `host:port` of the pageserver holding each shard, in shard order.
    pub pageservers: Vec<String>,
    /// Pages per stripe: only for sharded tenants.
    pub stripe_size: Option<u32>,
    /// `host:port` of every safekeeper.
    pub safekeepers: Vec<String>,
    pub safekeepers_generation: Option<u32>,
    pub storage_auth_token: Option<Secret>,
    pub roles: Vec<Role>,
    pub databases: Vec<Database>,
    pub port: u16,
    /// The endpoint's suspend timeout; none: never (-1, as neon_local says it).
    pub suspend_timeout_seconds: Option<u32>,
    /// A read-only endpoint: a [`ComputeMode::Replica`].
    pub read_only: bool,
    /// Databases, then roles, its Postgres must not have (dropped from the branch).
    pub dropped_databases: Vec<String>,
    pub dropped_roles: Vec<String>,
}

impl ComputeSpec {
    /// The spec of `target`'s compute. A primary writes through the walproposer (and never
    /// changes the catalog of a standby); a replica streams from the safekeepers as neon_local
    /// sets one up (`control_plane/src/endpoint.rs`: `primary_conninfo` naming every safekeeper
    /// with the tenant and timeline, slot `repl_<timeline>_`, hot standby), with the storage
    /// token as its password when storage checks tokens, and leaves the catalog to the primary
    /// (`skip_pg_catalog_updates`: a standby cannot create roles).
    pub fn new(target: ComputeTarget) -> Self {
        let mut settings = vec![
            Setting::new("listen_addresses", "0.0.0.0", "string"),
            Setting::new("port", target.port, "integer"),
            Setting::new("max_connections", 100, "integer"),
            Setting::new("shared_buffers", "128MB", "string"),
            Setting::new("shared_preload_libraries", "neon", "string"),
            Setting::new("synchronous_standby_names", "walproposer", "string"),
            Setting::new("wal_level", "logical", "enum"),
            Setting::new("wal_log_hints", "off", "bool"),
            Setting::new("max_wal_senders", 10, "integer"),
            Setting::new("max_replication_slots", 10, "integer"),
            Setting::new("wal_sender_timeout", "5s", "string"),
            Setting::new("wal_keep_size", 0, "integer"),
            Setting::new("max_replication_write_lag", "15MB", "string"),
            Setting::new("max_replication_flush_lag", "10GB", "string"),
            Setting::new("hot_standby", "on", "bool"),
            Setting::new("restart_after_crash", "off", "bool"),
            Setting::new("password_encryption", "scram-sha-256", "enum"),
        ];
        if target.read_only {
            // A standby neither proposes WAL nor is throttled by its replication lag.
            const PRIMARY_ONLY: [&str; 3] = ["synchronous_standby_names", "max_replication_write_lag", "max_replication_flush_lag"];
            settings.retain(|setting| !PRIMARY_ONLY.contains(&setting.name.as_str()));
            let (hosts, ports): (Vec<&str>, Vec<&str>) = target.safekeepers.iter().filter_map(|address| address.rsplit_once(':')).unzip();
            let password = target.storage_auth_token.as_ref().map(|token| format!(" password={}", token.0)).unwrap_or_default();
            let conninfo = format!(
                "host={} port={} options='-c timeline_id={} tenant_id={}' application_name=replica replication=true{password}",
                hosts.join(","),
                ports.join(","),
                target.timeline_id,
                target.tenant_id
            );
            settings.extend([
                Setting::new("primary_conninfo", conninfo, "string"),
                Setting::new("primary_slot_name", format!("repl_{}_", target.timeline_id), "string"),
            ]);
        }
        Self {
            format_version: 1.0,
            cluster: Cluster {
                cluster_id: target.project_id.clone(),
                name: target.endpoint_id.clone(),
                roles: target.roles,
                databases: target.databases,
                settings,
            },
            skip_pg_catalog_updates: target.read_only,
            tenant_id: target.tenant_id,
            timeline_id: target.timeline_id,
            pageserver_connstring: target
                .pageservers
                .iter()
                .map(|address| format!("postgresql://no_user@{address}"))
                .collect::<Vec<_>>()
                .join(","),
            shard_stripe_size: target.stripe_size,
            safekeeper_connstrings: target.safekeepers,
            safekeepers_generation: target.safekeepers_generation,
            mode: if target.read_only { ComputeMode::Replica } else { ComputeMode::Primary },
            storage_auth_token: target.storage_auth_token,
            project_id: target.project_id,
            branch_id: target.branch_id,
            endpoint_id: target.endpoint_id,
            suspend_timeout_seconds: target.suspend_timeout_seconds.map_or(-1, i64::from),
            // Databases first: a role that owned one can go once it has.
            delta_operations: target
                .dropped_databases
                .into_iter()
                .map(|name| DeltaOp { action: "delete_db", name })
                .chain(target.dropped_roles.into_iter().map(|name| DeltaOp { action: "delete_role", name }))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ControlPlaneConfigResponse {
        let spec = ComputeSpec::new(ComputeTarget {
            project_id: "neon".into(),
            branch_id: "main".into(),
            endpoint_id: "main".into(),
            tenant_id: "1f359dd625e519a1a4e8d7509690f6fc".into(),
            timeline_id: "de200bd42b49cc1814412c7e592dd6e9".into(),
            pageservers: vec!["neon-pageserver-1-0.neon-pageserver.neon.svc.cluster.local:6400".into()],
            stripe_size: None,
            safekeepers: (1..=3).map(|i| format!("neon-safekeeper-{i}-0.neon-safekeeper.neon.svc.cluster.local:5454")).collect(),
            safekeepers_generation: None,
            storage_auth_token: Some(Secret("<tenant token>".into())),
            roles: vec![Role {
                name: "neondb_owner".into(),
                encrypted_password: Secret("SCRAM-SHA-256$4096:<salt>$<stored>:<server>".into()),
                options: None,
            }],
            databases: vec![Database { name: "neondb".into(), owner: "neondb_owner".into(), options: None }],
            port: 5432,
            suspend_timeout_seconds: None,
            read_only: false,
            dropped_databases: Vec::new(),
            dropped_roles: Vec::new(),
        });
        ControlPlaneConfigResponse {
            spec: Some(spec),
            status: ComputeStatus::Attached,
            compute_ctl_config: ComputeCtlConfig {
                jwks: JwkSet { keys: vec![Jwk::ed25519("neon-control-plane", "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")] },
            },
        }
    }

    #[test]
    fn spec_has_every_field_compute_ctl_requires() {
        let text = sample().to_json().unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["status"], "attached");
        assert!(value["compute_ctl_config"]["jwks"]["keys"].is_array());
        let spec = &value["spec"];
        assert!(spec["format_version"].is_f64());
        assert!(spec["suspend_timeout_seconds"].is_i64());
        assert!(spec["cluster"]["roles"].is_array());
        assert!(spec["cluster"]["databases"].is_array());
        assert!(spec["cluster"]["settings"].is_array());
        for id in ["tenant_id", "timeline_id"] {
            let id = spec[id].as_str().unwrap();
            assert!(id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()), "{id} is a 32-digit hex id");
        }
        assert!(spec["pageserver_connstring"].as_str().unwrap().starts_with("postgresql://"));
        assert_eq!(spec["mode"], "Primary");
        let safekeepers = spec["safekeeper_connstrings"].as_array().unwrap();
        assert_eq!(safekeepers.len(), 3);
        assert!(safekeepers.iter().all(|s| !s.as_str().unwrap().contains("://")), "host:port, not URLs");
        let setting =
            |name: &str| spec["cluster"]["settings"].as_array().unwrap().iter().find(|s| s["name"] == name).map(|s| s["value"].clone());
        assert_eq!(setting("shared_preload_libraries"), Some("neon".into()));
        assert_eq!(setting("synchronous_standby_names"), Some("walproposer".into()));
        assert_eq!(setting("port"), Some("5432".into()));
        insta::assert_snapshot!("compute-spec.json", text);
    }

    /// A read-only endpoint is a hot standby: `Replica` mode, no walproposer, the safekeepers
    /// as its primary (neon_local's `primary_conninfo`), the catalog left alone.
    #[test]
    fn a_read_only_compute_is_a_replica_of_the_safekeepers() {
        let mut response = sample();
        let primary = response.spec.take().unwrap();
        let mut target = ComputeTarget {
            project_id: primary.project_id.clone(),
            branch_id: primary.branch_id.clone(),
            endpoint_id: "ro".into(),
            tenant_id: primary.tenant_id.clone(),
            timeline_id: primary.timeline_id.clone(),
            pageservers: vec!["ps-1:6400".into()],
            stripe_size: None,
            safekeepers: vec!["sk-1:5454".into(), "sk-2:5454".into()],
            safekeepers_generation: None,
            storage_auth_token: Some(Secret("tok".into())),
            roles: Vec::new(),
            databases: Vec::new(),
            port: 5432,
            suspend_timeout_seconds: Some(60),
            read_only: true,
            dropped_databases: vec!["shop".into()],
            dropped_roles: vec!["app".into()],
        };
        let replica = serde_json::to_value(ComputeSpec::new(target.clone())).unwrap();
        assert_eq!((&replica["mode"], &replica["skip_pg_catalog_updates"]), (&serde_json::json!("Replica"), &serde_json::json!(true)));
        let setting =
            |name: &str| replica["cluster"]["settings"].as_array().unwrap().iter().find(|s| s["name"] == name).map(|s| s["value"].clone());
        assert_eq!(setting("synchronous_standby_names"), None);
        assert_eq!(
            setting("primary_conninfo").unwrap(),
            "host=sk-1,sk-2 port=5454,5454 options='-c timeline_id=de200bd42b49cc1814412c7e592dd6e9 tenant_id=1f359dd625e519a1a4e8d7509690f6fc' \
             application_name=replica replication=true password=tok"
        );
        assert_eq!(setting("primary_slot_name").unwrap(), "repl_de200bd42b49cc1814412c7e592dd6e9_");
        assert_eq!(replica["suspend_timeout_seconds"], 60);
        assert_eq!(
            replica["delta_operations"],
            serde_json::json!([{"action": "delete_db", "name": "shop"}, {"action": "delete_role", "name": "app"}])
        );
        target.read_only = false;
        assert_eq!(serde_json::to_value(ComputeSpec::new(target)).unwrap()["mode"], "Primary");
    }

    #[test]
    fn compute_ctl_fetches_its_spec_from_the_control_plane() {
        let args = ComputeCtlArgs {
            pgdata: "/var/db/postgres/compute/pgdata".into(),
            connstr: "postgresql://cloud_admin@localhost:5432/postgres".into(),
            pgbin: "/usr/local/bin/postgres".into(),
            compute_id: "main".into(),
            control_plane_uri: "http://neon-control-plane.neon.svc.cluster.local:8080/".into(),
        }
        .to_args();
        assert!(args.contains(&"--control-plane-uri=http://neon-control-plane.neon.svc.cluster.local:8080".to_string()));
        insta::assert_debug_snapshot!("compute-ctl-args", args);
    }
}
