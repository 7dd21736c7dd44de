//! The first database: a `NeonBranch` named `main` (a fresh tenant and timeline, the owner role
//! with its SCRAM verifier, the database) and a `NeonEndpoint` named `main` serving it. The
//! in-cluster control plane creates them in storage and reports `status.phase`; deploy only
//! asks and reads.
//!
//! Idempotent: the tenant and timeline ids of an existing branch are kept (they name data in
//! storage), and so is its verifier while it still matches the password, so a second deploy
//! applies the same objects and the control plane has nothing to do.

use kube::Resource as _;
use kube::api::DynamicObject;
use ring::rand::SecureRandom;
use serde_json::{Value, json};

use crate::neon::Secret;
use crate::render::{LABEL_MANAGED_BY, LABEL_PREFIX, MANAGED_BY};
use neonctl_contract::resources::{self, BranchSpec, BranchStatus, DatabaseSpec, EndpointSpec, NeonBranch, NeonEndpoint, RoleSpec, phase};
use neonctl_contract::scram;

use super::secrets::{DATABASE, OWNER_ROLE, SecretError};

/// The branch and endpoint deploy creates; the endpoint's name is what clients route by.
pub const BRANCH: &str = "main";
pub const ENDPOINT: &str = "main";
pub const PG_VERSION: u32 = 17;

/// 16 random bytes as 32 lowercase hex digits: a tenant or timeline id.
pub fn new_id(rng: &dyn SecureRandom) -> Result<String, SecretError> {
    let mut bytes = [0u8; 16];
    rng.fill(&mut bytes).map_err(|_| SecretError::Random { what: "a tenant or timeline id" })?;
    Ok(hex::encode(bytes))
}

/// The spec of branch `main`: ids and verifier from `live` when it has them, else new.
pub fn branch_spec(
    project_id: &str,
    live: Option<&DynamicObject>,
    password: &Secret,
    rng: &dyn SecureRandom,
) -> Result<BranchSpec, SecretError> {
    let spec = live.map(|obj| &obj.data["spec"]).unwrap_or(&Value::Null);
    let id = |field: &str| -> Result<String, SecretError> {
        match spec[field].as_str() {
            Some(id) if id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()) => Ok(id.to_string()),
            _ => new_id(rng),
        }
    };
    let live_verifier = spec["roles"]
        .as_array()
        .and_then(|roles| roles.iter().find(|r| r["name"] == OWNER_ROLE))
        .and_then(|role| role["verifier"].as_str())
        .map(|v| Secret(v.to_string()))
        .filter(|verifier| scram::matches(verifier, &password.0));
    let verifier = live_verifier.unwrap_or_else(|| scram::verifier(&password.0));
    Ok(BranchSpec {
        project_id: project_id.to_string(),
        tenant_id: id("tenantId")?,
        timeline_id: id("timelineId")?,
        pg_version: spec["pgVersion"].as_u64().and_then(|v| u32::try_from(v).ok()).unwrap_or(PG_VERSION),
        // A restored `main` branches from the timeline the restore kept: that stays.
        parent_timeline_id: spec["parentTimelineId"].as_str().map(str::to_string),
        ancestor_start_lsn: spec["ancestorStartLsn"].as_str().map(str::to_string),
        ancestor_timestamp: spec["ancestorTimestamp"].as_str().map(str::to_string),
        roles: vec![RoleSpec { name: OWNER_ROLE.into(), verifier }],
        databases: vec![DatabaseSpec { name: DATABASE.into(), owner: OWNER_ROLE.into() }],
        dropped_roles: Vec::new(),
        dropped_databases: Vec::new(),
    })
}

fn object(kind: &str, name: &str, namespace: &str, prefix: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": resources::API_VERSION,
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace, "labels": {LABEL_MANAGED_BY: MANAGED_BY, LABEL_PREFIX: prefix}},
        "spec": spec,
    }))
    .expect("a custom resource is a valid object")
}

pub fn branch_object(namespace: &str, prefix: &str, spec: &BranchSpec) -> DynamicObject {
    object(&NeonBranch::kind(&()), BRANCH, namespace, prefix, serde_json::to_value(spec).expect("a branch spec serializes"))
}

/// Branch `main` by kind and name only: to look it up.
pub fn branch_probe(namespace: &str, prefix: &str) -> DynamicObject {
    object(&NeonBranch::kind(&()), BRANCH, namespace, prefix, Value::Null)
}

pub fn endpoint_object(namespace: &str, prefix: &str) -> DynamicObject {
    let spec = EndpointSpec { branch: BRANCH.into(), ..Default::default() };
    object(&NeonEndpoint::kind(&()), ENDPOINT, namespace, prefix, serde_json::to_value(spec).expect("an endpoint spec serializes"))
}

/// Where a branch is, as the control plane reports it for the object's current generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    Ready,
    Failed(String),
    /// Not there yet: what the status says so far.
    Waiting(String),
}

pub fn progress(obj: &DynamicObject) -> Progress {
    let status: BranchStatus = serde_json::from_value(obj.data["status"].clone()).unwrap_or_default();
    let generation = obj.metadata.generation.unwrap_or(0);
    match (status.observed_generation, status.phase.as_deref()) {
        (Some(observed), _) if observed < generation => {
            Progress::Waiting(format!("the control plane has not seen generation {generation} yet (at {observed})"))
        }
        (_, None) | (None, _) => Progress::Waiting("the control plane has not reported on it yet".into()),
        (Some(_), Some(phase::READY)) => Progress::Ready,
        (Some(_), Some(phase::FAILED)) => Progress::Failed(status.message.unwrap_or_else(|| "no message".into())),
        (Some(_), Some(other)) => Progress::Waiting(format!("{other}{}", status.message.map(|m| format!(": {m}")).unwrap_or_default())),
    }
}

#[cfg(test)]
mod tests {
    use ring::rand::SystemRandom;

    use super::*;

    #[test]
    fn a_new_branch_gets_fresh_ids_and_an_existing_one_keeps_them() {
        let password = Secret("pw-1".into());
        let fresh = branch_spec("neon", None, &password, &SystemRandom::new()).unwrap();
        assert_eq!(fresh.tenant_id.len(), 32);
        assert_ne!(fresh.tenant_id, fresh.timeline_id);
        assert_eq!(fresh.pg_version, 17);
        assert_eq!(fresh.roles[0].name, "neondb_owner");
        assert!(scram::matches(&fresh.roles[0].verifier, "pw-1"));
        assert_eq!(fresh.databases, [DatabaseSpec { name: "neondb".into(), owner: "neondb_owner".into() }]);

        let live = branch_object("neon", "neon", &fresh);
        let again = branch_spec("neon", Some(&live), &password, &SystemRandom::new()).unwrap();
        assert_eq!(again, fresh, "same ids, same verifier: the same object");
        let other_password = branch_spec("neon", Some(&live), &Secret("pw-2".into()), &SystemRandom::new()).unwrap();
        assert_eq!(
            (other_password.tenant_id.as_str(), other_password.timeline_id.as_str()),
            (fresh.tenant_id.as_str(), fresh.timeline_id.as_str())
        );
        assert!(scram::matches(&other_password.roles[0].verifier, "pw-2"));
    }

    #[test]
    fn objects_carry_our_labels_and_camel_case_specs() {
        let spec = branch_spec("acme", None, &Secret("x".into()), &SystemRandom::new()).unwrap();
        let branch = serde_json::to_value(branch_object("ns", "acme", &spec)).unwrap();
        assert_eq!(branch["apiVersion"], "neonctl-aws.dev/v1alpha1");
        assert_eq!(branch["kind"], "NeonBranch");
        assert_eq!(branch["metadata"]["name"], "main");
        assert_eq!(branch["spec"]["projectId"], "acme");
        let endpoint = serde_json::to_value(endpoint_object("ns", "acme")).unwrap();
        assert_eq!(endpoint["spec"], json!({"branch": "main"}));
    }

    #[test]
    fn progress_follows_the_current_generation() {
        let with = |generation: i64, status: Value| -> DynamicObject {
            serde_json::from_value(json!({"apiVersion": "neonctl-aws.dev/v1alpha1", "kind": "NeonBranch",
                "metadata": {"name": "main", "generation": generation}, "spec": {}, "status": status}))
            .unwrap()
        };
        assert!(matches!(progress(&with(1, json!({}))), Progress::Waiting(_)));
        assert_eq!(progress(&with(2, json!({"phase": "Ready", "observedGeneration": 2}))), Progress::Ready);
        assert!(
            matches!(progress(&with(3, json!({"phase": "Ready", "observedGeneration": 2}))), Progress::Waiting(m) if m.contains("generation 3"))
        );
        assert_eq!(
            progress(&with(1, json!({"phase": "Failed", "message": "storage controller: 503", "observedGeneration": 1}))),
            Progress::Failed("storage controller: 503".into())
        );
        assert!(matches!(progress(&with(1, json!({"phase": "Pending", "observedGeneration": 1}))), Progress::Waiting(m) if m == "Pending"));
    }
}
