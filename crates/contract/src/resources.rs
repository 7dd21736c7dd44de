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
//! Both are namespaced, in the deployment's namespace. The CRDs are rendered by `render`
//! (`03-crds.yaml`) from [`crd`].

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::neon::Secret;

pub const GROUP: &str = "neonctl-aws.dev";
pub const VERSION: &str = "v1alpha1";
pub const API_VERSION: &str = "neonctl-aws.dev/v1alpha1";

/// One custom resource kind: names as the API server knows them.
#[derive(Debug, Clone, Copy)]
pub struct ResourceKind {
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_name: &'static str,
}

pub const BRANCH: ResourceKind = ResourceKind { kind: "NeonBranch", plural: "neonbranches", singular: "neonbranch", short_name: "nbr" };
pub const ENDPOINT: ResourceKind =
    ResourceKind { kind: "NeonEndpoint", plural: "neonendpoints", singular: "neonendpoint", short_name: "nep" };

/// `status.phase` values.
pub mod phase {
    /// Not created in storage yet (or being created).
    pub const PENDING: &str = "Pending";
    /// Tenant and timeline exist; computes can attach.
    pub const READY: &str = "Ready";
    /// The last attempt failed; `message` says why and the control plane retries.
    pub const FAILED: &str = "Failed";
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BranchSpec {
    pub project_id: String,
    /// 32 lowercase hex digits, chosen by whoever creates the branch and never changed.
    pub tenant_id: String,
    /// 32 lowercase hex digits.
    pub timeline_id: String,
    /// Postgres major version of the timeline (17).
    pub pg_version: u32,
    /// Branch from this timeline of the same tenant (none: a fresh `initdb`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_timeline_id: Option<String>,
    #[serde(default)]
    pub roles: Vec<RoleSpec>,
    #[serde(default)]
    pub databases: Vec<DatabaseSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleSpec {
    pub name: String,
    /// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
    pub verifier: Secret,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSpec {
    pub name: String,
    pub owner: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BranchStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The `metadata.generation` the phase refers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The last `notify-attach` for the branch's tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment: Option<AttachmentStatus>,
    /// The last `notify-safekeepers` for the branch's timeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safekeepers: Option<SafekeepersStatus>,
    /// Kubernetes-style conditions; `Ready` says whether the tenant and timeline exist, and why
    /// not (what `kubectl wait --for=condition=Ready` reads).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// The condition every branch carries.
pub const READY_CONDITION: &str = "Ready";

/// A condition as Kubernetes defines them (`metav1.Condition`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// CamelCase, for machines.
    pub reason: String,
    /// For people.
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// RFC 3339: when `status` last changed.
    pub last_transition_time: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentStatus {
    /// Pageserver node id per shard, in shard-number order.
    pub pageservers: Vec<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stripe_size: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SafekeepersStatus {
    pub generation: u32,
    pub ids: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSpec {
    /// The `NeonBranch` (by name) this endpoint's compute serves.
    pub branch: String,
    /// The proxy's allowlist (`10.0.0.0/8`, `1.2.3.4`, `1.2.3.4-1.2.3.9`); none: everyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_ips: Option<Vec<String>>,
}

/// The CustomResourceDefinition of `kind`, with its structural schema (the API server rejects
/// objects that do not match it, so a typo in a hand-written branch fails at `kubectl apply`).
pub fn crd(kind: &ResourceKind, labels: &Value) -> Value {
    let (spec, status, columns) = match kind.kind {
        "NeonBranch" => (branch_spec_schema(), branch_status_schema(), branch_columns()),
        _ => (endpoint_spec_schema(), phase_status_schema(), vec![column("Branch", ".spec.branch")]),
    };
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{}.{GROUP}", kind.plural), "labels": labels},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"kind": kind.kind, "plural": kind.plural, "singular": kind.singular, "shortNames": [kind.short_name]},
            "versions": [{
                "name": VERSION,
                "served": true,
                "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": columns,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "required": ["spec"],
                    "properties": {"spec": spec, "status": status},
                }},
            }],
        },
    })
}

fn column(name: &str, path: &str) -> Value {
    json!({"name": name, "type": "string", "jsonPath": path})
}

fn branch_columns() -> Vec<Value> {
    vec![
        column("Phase", ".status.phase"),
        column("Ready", ".status.conditions[?(@.type==\"Ready\")].status"),
        column("Tenant", ".spec.tenantId"),
        column("Timeline", ".spec.timelineId"),
    ]
}

fn hex_id() -> Value {
    json!({"type": "string", "pattern": "^[0-9a-f]{32}$"})
}

fn branch_spec_schema() -> Value {
    json!({
        "type": "object",
        "required": ["projectId", "tenantId", "timelineId", "pgVersion"],
        "properties": {
            "projectId": {"type": "string", "minLength": 1},
            "tenantId": hex_id(),
            "timelineId": hex_id(),
            "pgVersion": {"type": "integer", "minimum": 14, "maximum": 17},
            "parentTimelineId": hex_id(),
            "roles": {"type": "array", "items": {
                "type": "object",
                "required": ["name", "verifier"],
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "verifier": {"type": "string", "pattern": "^SCRAM-SHA-256\\$"},
                },
            }},
            "databases": {"type": "array", "items": {
                "type": "object",
                "required": ["name", "owner"],
                "properties": {"name": {"type": "string", "minLength": 1}, "owner": {"type": "string", "minLength": 1}},
            }},
        },
    })
}

fn phase_status_properties() -> serde_json::Map<String, Value> {
    let value = json!({
        "phase": {"type": "string", "enum": [phase::PENDING, phase::READY, phase::FAILED]},
        "message": {"type": "string"},
        "observedGeneration": {"type": "integer", "format": "int64"},
    });
    value.as_object().cloned().unwrap_or_default()
}

fn phase_status_schema() -> Value {
    json!({"type": "object", "properties": phase_status_properties()})
}

/// `metav1.Condition`'s schema, as the API server's own types declare it.
fn conditions_schema() -> Value {
    json!({
        "type": "array",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": {
            "type": "object",
            "required": ["type", "status", "reason", "message", "lastTransitionTime"],
            "properties": {
                "type": {"type": "string", "maxLength": 316, "pattern": "^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"},
                "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                "reason": {"type": "string", "minLength": 1, "maxLength": 1024, "pattern": "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"},
                "message": {"type": "string", "maxLength": 32768},
                "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0},
                "lastTransitionTime": {"type": "string", "format": "date-time"},
            },
        },
    })
}

fn branch_status_schema() -> Value {
    let mut properties = phase_status_properties();
    properties.insert("conditions".into(), conditions_schema());
    properties.insert(
        "attachment".into(),
        json!({
            "type": "object",
            "required": ["pageservers"],
            "properties": {
                "pageservers": {"type": "array", "items": {"type": "integer", "format": "int64"}},
                "stripeSize": {"type": "integer", "format": "int32"},
            },
        }),
    );
    properties.insert(
        "safekeepers".into(),
        json!({
            "type": "object",
            "required": ["generation", "ids"],
            "properties": {
                "generation": {"type": "integer", "format": "int32"},
                "ids": {"type": "array", "items": {"type": "integer", "format": "int64"}},
            },
        }),
    );
    json!({"type": "object", "properties": properties})
}

fn endpoint_spec_schema() -> Value {
    json!({
        "type": "object",
        "required": ["branch"],
        "properties": {
            "branch": {"type": "string", "minLength": 1},
            "allowedIps": {"type": "array", "items": {"type": "string"}},
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_round_trip_in_camel_case() {
        let spec = BranchSpec {
            project_id: "neon".into(),
            tenant_id: "1f359dd625e519a1a4e8d7509690f6fc".into(),
            timeline_id: "de200bd42b49cc1814412c7e592dd6e9".into(),
            pg_version: 17,
            parent_timeline_id: None,
            roles: vec![RoleSpec { name: "neondb_owner".into(), verifier: Secret("SCRAM-SHA-256$4096:c2FsdA==$a:b".into()) }],
            databases: vec![DatabaseSpec { name: "neondb".into(), owner: "neondb_owner".into() }],
        };
        let value = serde_json::to_value(&spec).unwrap();
        assert_eq!(value["tenantId"], "1f359dd625e519a1a4e8d7509690f6fc");
        assert_eq!(value["pgVersion"], 17);
        assert!(value.get("parentTimelineId").is_none());
        assert_eq!(serde_json::from_value::<BranchSpec>(value).unwrap(), spec);
    }

    #[test]
    fn crds_name_group_and_plural() {
        let crd = crd(&BRANCH, &json!({}));
        assert_eq!(crd["metadata"]["name"], "neonbranches.neonctl-aws.dev");
        assert_eq!(crd["spec"]["versions"][0]["subresources"]["status"], json!({}));
        let required = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["required"];
        assert_eq!(required, &json!(["projectId", "tenantId", "timelineId", "pgVersion"]));
    }
}
