//! The control plane's custom resources: what `deploy` (and later `branch`) asks for, kept in
//! Kubernetes so that it survives control plane restarts and is visible with kubectl.
//!
//! - `NeonBranch`: a timeline of a tenant, with its roles (SCRAM verifiers, never passwords)
//!   and databases. The control plane creates the tenant and timeline through the storage
//!   controller and reports in `status`; it also keeps there where the storage controller last
//!   said the tenant's shards and the timeline's safekeepers are.
//! - `NeonEndpoint`: a compute serving a branch; its name is the endpoint id the proxy routes
//!   by and the compute id compute_ctl asks its spec for.
//!
//! Both are namespaced, in the deployment's namespace. The Rust types are the API: kube's
//! `CustomResource` derive and schemars make their CRDs (with structural schemas, so the API
//! server rejects a typo in a hand-written branch at `kubectl apply`), which `render` writes
//! to `03-crds.yaml` through [`crds`].

use kube::CustomResource;
use kube::core::{CustomResourceExt as _, Resource as _};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::neon::Secret;

pub const GROUP: &str = "neonctl-aws.dev";
pub const VERSION: &str = "v1alpha1";
pub const API_VERSION: &str = "neonctl-aws.dev/v1alpha1";

/// Set on every NeonBranch the control plane has created storage for: deleting the object then
/// deletes its timeline first (and the tenant with its last branch).
pub const BRANCH_FINALIZER: &str = "neonctl-aws.dev/timeline";

/// On a NeonBranch being renamed (`branches rename`): the name of the NeonBranch that now holds
/// its timeline. Deleting the object then leaves the timeline in storage, as long as that branch
/// names the same one.
pub const RENAMED_TO_ANNOTATION: &str = "neonctl-aws.dev/renamed-to";

/// `status.phase` values.
pub mod phase {
    /// Not created in storage yet (or being created).
    pub const PENDING: &str = "Pending";
    /// Tenant and timeline exist; computes can attach.
    pub const READY: &str = "Ready";
    /// The last attempt failed; `message` says why and the control plane retries.
    pub const FAILED: &str = "Failed";
    /// Being deleted: its timeline is being removed from storage.
    pub const DELETING: &str = "Deleting";
}

/// A 32-hex-digit Neon id (tenant, timeline), as `libs/utils/src/id.rs` prints them.
const HEX_ID: &str = "^[0-9a-f]{32}$";
/// An LSN as neon's `Lsn` reads it (`libs/utils/src/lsn.rs`: two hex halves, `X/Y`).
pub const LSN: &str = "^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$";

/// A NeonBranch's wish: the tenant and timeline it names, how to make the timeline, and the roles
/// and databases its computes get.
#[allow(clippy::duplicated_attributes)] // Each `printcolumn` repeats the same keys.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "neonctl-aws.dev",
    version = "v1alpha1",
    kind = "NeonBranch",
    namespaced,
    status = "BranchStatus",
    shortname = "nbr",
    derive = "PartialEq",
    doc = "A branch of a Neon project: a timeline in Neon's storage, its roles and databases",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Tenant", type_ = "string", json_path = ".spec.tenantId"),
    printcolumn(name = "Timeline", type_ = "string", json_path = ".spec.timelineId")
)]
#[serde(rename_all = "camelCase")]
pub struct BranchSpec {
    #[schemars(length(min = 1))]
    pub project_id: String,
    /// 32 lowercase hex digits, chosen by whoever creates the branch and never changed.
    #[schemars(pattern(HEX_ID))]
    pub tenant_id: String,
    /// 32 lowercase hex digits.
    #[schemars(pattern(HEX_ID))]
    pub timeline_id: String,
    /// Postgres major version of the timeline (17).
    #[schemars(range(min = 14, max = 17))]
    pub pg_version: u32,
    /// Branch from this timeline of the same tenant (none: a fresh `initdb`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(HEX_ID))]
    pub parent_timeline_id: Option<String>,
    /// Branch from the parent as of this LSN (`X/Y`, hex, as Postgres prints them); none: its
    /// last record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(LSN))]
    pub ancestor_start_lsn: Option<String>,
    /// Or as of this time (RFC 3339): the control plane asks the pageserver for the LSN of the
    /// parent's last commit before then, once, and keeps it in `status.branchedAtLsn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub ancestor_timestamp: Option<String>,
    #[serde(default)]
    pub roles: Vec<RoleSpec>,
    #[serde(default)]
    pub databases: Vec<DatabaseSpec>,
    /// Roles removed from the branch: its computes drop them (compute_ctl's
    /// `delta_operations`, `DROP ROLE IF EXISTS`), however often they start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped_roles: Vec<String>,
    /// Databases removed from the branch: its computes drop them (`DROP DATABASE IF EXISTS …
    /// WITH (FORCE)`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped_databases: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoleSpec {
    #[schemars(length(min = 1))]
    pub name: String,
    /// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
    #[schemars(pattern(r"^SCRAM-SHA-256\$"))]
    pub verifier: Secret,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSpec {
    #[schemars(length(min = 1))]
    pub name: String,
    #[schemars(length(min = 1))]
    pub owner: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BranchStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = [phase::PENDING, phase::READY, phase::FAILED, phase::DELETING]))]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The `metadata.generation` the phase refers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The LSN `spec.ancestorTimestamp` resolved to (the branch is made there, also on retries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(LSN))]
    pub branched_at_lsn: Option<String>,
    /// The timeline `branchedAtLsn` was resolved for: a new timeline (a restore) resolves again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(HEX_ID))]
    pub branched_timeline_id: Option<String>,
    /// The timeline the branch's computes were last given. When the spec names another (a reset
    /// or a restore), this one is deleted from storage once the computes have moved, unless
    /// another branch still needs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(HEX_ID))]
    pub timeline_id: Option<String>,
    /// The branch's logical size in bytes: the pageserver's `current_logical_size` of its
    /// timeline, read again while a compute of the branch runs and once after it stops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logical_size: Option<u64>,
    /// The last `notify-attach` for the branch's tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment: Option<AttachmentStatus>,
    /// The last `notify-safekeepers` for the branch's timeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safekeepers: Option<SafekeepersStatus>,
    /// Kubernetes-style conditions; `Ready` says whether the tenant and timeline exist, and why
    /// not (what `kubectl wait --for=condition=Ready` reads).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// The condition every branch carries.
pub const READY_CONDITION: &str = "Ready";

/// A condition as Kubernetes defines them (`metav1.Condition`, with its validation rules).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    #[schemars(length(max = 316))]
    pub kind: String,
    /// `True`, `False` or `Unknown`.
    #[schemars(extend("enum" = ["True", "False", "Unknown"]))]
    pub status: String,
    /// CamelCase, for machines.
    #[schemars(length(min = 1, max = 1024), pattern(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"))]
    pub reason: String,
    /// For people.
    #[schemars(length(max = 32768))]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,
    /// RFC 3339: when `status` last changed.
    #[schemars(extend("format" = "date-time"))]
    pub last_transition_time: String,
}

impl Condition {
    /// The `Ready` condition with `status`, `reason` and `message` at `generation`; it keeps
    /// the transition time of the one in `previous` while its status stays the same, else `now`.
    pub fn ready(status: bool, reason: &str, message: String, generation: Option<i64>, previous: &[Condition], now: &str) -> Self {
        let status = if status { "True" } else { "False" };
        let since = previous
            .iter()
            .find(|c| c.kind == READY_CONDITION && c.status == status)
            .map_or_else(|| now.to_string(), |c| c.last_transition_time.clone());
        Self {
            kind: READY_CONDITION.into(),
            status: status.into(),
            reason: reason.into(),
            message,
            observed_generation: generation,
            last_transition_time: since,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentStatus {
    /// Pageserver node id per shard, in shard-number order.
    pub pageservers: Vec<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stripe_size: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SafekeepersStatus {
    pub generation: u32,
    pub ids: Vec<u64>,
}

/// A compute serving a branch; the object's name is the endpoint id.
#[allow(clippy::duplicated_attributes)] // Each `printcolumn` repeats the same keys.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "neonctl-aws.dev",
    version = "v1alpha1",
    kind = "NeonEndpoint",
    namespaced,
    status = "EndpointStatus",
    shortname = "nep",
    derive = "PartialEq",
    doc = "An endpoint of a Neon branch: the compute the proxy routes `<name>.<domain>` to",
    printcolumn(name = "Branch", type_ = "string", json_path = ".spec.branch"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Last Active", type_ = "date", json_path = ".status.lastActive"),
    printcolumn(name = "Compute", type_ = "string", json_path = ".status.compute")
)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSpec {
    /// The `NeonBranch` (by name) this endpoint's compute serves.
    #[schemars(length(min = 1))]
    pub branch: String,
    /// The proxy's allowlist (`10.0.0.0/8`, `1.2.3.4`, `1.2.3.4-1.2.3.9`); none: everyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_ips: Option<Vec<String>>,
    /// Seconds without activity (as compute_ctl reports it) after which the compute is stopped
    /// and scaled to zero; the next connection starts it again. `0`: never. None: 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend_timeout_seconds: Option<u32>,
    /// A read-only endpoint: a hot standby following its branch's writes (Neon's `Replica`
    /// compute mode); writes are refused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

/// Neon's default: a compute idle for five minutes is suspended.
pub const DEFAULT_SUSPEND_TIMEOUT_SECONDS: u32 = 300;

impl EndpointSpec {
    /// How many seconds the compute may be idle before it is suspended; `None`: never.
    pub fn suspends_after_seconds(&self) -> Option<u32> {
        Some(self.suspend_timeout_seconds.unwrap_or(DEFAULT_SUSPEND_TIMEOUT_SECONDS)).filter(|&seconds| seconds > 0)
    }

    /// The same as a duration.
    pub fn suspend_timeout(&self) -> Option<std::time::Duration> {
        self.suspends_after_seconds().map(|seconds| std::time::Duration::from_secs(seconds.into()))
    }
}

/// An annotation asking the operator to act on an endpoint now (`neonctl-aws endpoints
/// suspend|start`, or `kubectl annotate`): [`ACTION_SUSPEND`] or [`ACTION_START`]. The operator
/// removes it once done.
pub const ACTION_ANNOTATION: &str = "neonctl-aws.dev/action";
pub const ACTION_SUSPEND: &str = "suspend";
pub const ACTION_START: &str = "start";

/// `NeonEndpoint` `status.phase` values.
pub mod endpoint_phase {
    /// Its branch is not ready (or missing): no compute yet.
    pub const PENDING: &str = "Pending";
    /// The compute's Deployment exists; its pod is not ready yet.
    pub const STARTING: &str = "Starting";
    /// The compute is ready: Postgres answers.
    pub const ACTIVE: &str = "Active";
    /// Scaled to zero (idle past its timeout, or by hand): the next connection starts it.
    pub const SUSPENDED: &str = "Suspended";
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = [endpoint_phase::PENDING, endpoint_phase::STARTING, endpoint_phase::ACTIVE, endpoint_phase::SUSPENDED]))]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The compute's Deployment and Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute: Option<String>,
    /// The timeline the compute runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(HEX_ID))]
    pub timeline_id: Option<String>,
    /// RFC 3339: when compute_ctl last saw activity (written when the compute is suspended, and
    /// at most once a minute while it runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub last_active: Option<String>,
    /// `Ready`: whether the compute serves now, and if not why (`Suspended`, `BranchNotReady`,
    /// `PodStarting`, or what its pod says: `Unschedulable`, `ImagePullBackOff`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

impl EndpointStatus {
    /// Whether the compute has moved to `timeline`: it runs there, or it is suspended with a
    /// template naming it (it starts there) — the previous timeline has no compute left.
    pub fn is_on(&self, timeline: &str) -> bool {
        self.timeline_id.as_deref() == Some(timeline)
            && matches!(self.phase.as_deref(), Some(endpoint_phase::ACTIVE | endpoint_phase::SUSPENDED))
    }
}

/// The plural of each kind, for RBAC rules: `neonbranches`, `neonendpoints`.
pub fn plurals() -> [String; 2] {
    [NeonBranch::plural(&()).into_owned(), NeonEndpoint::plural(&()).into_owned()]
}

/// Both CustomResourceDefinitions, carrying `labels`.
pub fn crds(labels: &Value) -> Vec<Value> {
    [NeonBranch::crd(), NeonEndpoint::crd()]
        .into_iter()
        .map(|crd| {
            let mut crd = serde_json::to_value(crd).expect("a CRD serializes to JSON");
            crd["metadata"]["labels"] = labels.clone();
            crd
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn specs_round_trip_in_camel_case() {
        let spec = BranchSpec {
            project_id: "neon".into(),
            tenant_id: "1f359dd625e519a1a4e8d7509690f6fc".into(),
            timeline_id: "de200bd42b49cc1814412c7e592dd6e9".into(),
            pg_version: 17,
            parent_timeline_id: None,
            ancestor_start_lsn: None,
            ancestor_timestamp: None,
            roles: vec![RoleSpec { name: "neondb_owner".into(), verifier: Secret("SCRAM-SHA-256$4096:c2FsdA==$a:b".into()) }],
            databases: vec![DatabaseSpec { name: "neondb".into(), owner: "neondb_owner".into() }],
            dropped_roles: Vec::new(),
            dropped_databases: Vec::new(),
        };
        let value = serde_json::to_value(&spec).unwrap();
        assert_eq!(value["tenantId"], "1f359dd625e519a1a4e8d7509690f6fc");
        assert_eq!(value["pgVersion"], 17);
        assert!(value.get("parentTimelineId").is_none());
        assert_eq!(serde_json::from_value::<BranchSpec>(value).unwrap(), spec);
    }

    /// The derived CRDs carry the names, the status subresource and the validation the
    /// hand-written schemas had.
    #[test]
    fn crds_carry_names_status_and_validation() {
        let crds = crds(&json!({"app": "neon"}));
        let branch = &crds[0];
        assert_eq!(branch["metadata"]["name"], "neonbranches.neonctl-aws.dev");
        assert_eq!(branch["metadata"]["labels"]["app"], "neon");
        assert_eq!(branch["spec"]["names"]["shortNames"], json!(["nbr"]));
        let version = &branch["spec"]["versions"][0];
        assert_eq!((version["name"].as_str(), API_VERSION), (Some(VERSION), format!("{GROUP}/{VERSION}").as_str()));
        assert_eq!(version["subresources"]["status"], json!({}));
        let schema = &version["schema"]["openAPIV3Schema"]["properties"];
        let spec = &schema["spec"];
        let mut required: Vec<&str> = spec["required"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        required.sort_unstable();
        assert_eq!(required, ["pgVersion", "projectId", "tenantId", "timelineId"]);
        assert_eq!(spec["properties"]["tenantId"]["pattern"], HEX_ID);
        assert_eq!(spec["properties"]["pgVersion"]["minimum"].as_f64(), Some(14.0));
        assert_eq!(spec["properties"]["roles"]["items"]["properties"]["verifier"]["pattern"], "^SCRAM-SHA-256\\$");
        let conditions = &schema["status"]["properties"]["conditions"];
        assert_eq!(conditions["x-kubernetes-list-type"], "map");
        assert_eq!(conditions["items"]["properties"]["lastTransitionTime"]["format"], "date-time");
        assert_eq!(crds[1]["metadata"]["name"], "neonendpoints.neonctl-aws.dev");
        assert_eq!(plurals(), ["neonbranches", "neonendpoints"]);
    }
}
