//! The Kubernetes objects of an endpoint's compute: one Deployment and one Service per
//! `NeonEndpoint`, made by the operator from the [`ComputeTemplate`] `render` writes into the
//! control plane's topology. This is the only way computes exist (the bootstrap endpoint `main`
//! included), so `render` and the operator cannot disagree on what a compute is.
//!
//! The objects are owned by their NeonEndpoint (`ownerReferences`, controller), so Kubernetes'
//! garbage collector removes them with it. They carry `app.kubernetes.io/managed-by:
//! neonctl-aws-control-plane`, never `neonctl-aws`: `deploy` prunes what it manages and did not
//! render, and it renders no compute.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, HTTPGetAction, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SecurityContext, Service, ServicePort, ServiceSpec, TCPSocketAction, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Serialize};

use crate::neon::compute::ComputeCtlArgs;
use crate::resources::{API_VERSION, NeonEndpoint};

/// `app.kubernetes.io/managed-by` of every object the operator makes.
pub const MANAGED_BY: &str = "neonctl-aws-control-plane";
/// The label selector of every object the operator makes (what its watches ask for).
pub fn selector() -> String {
    format!("app.kubernetes.io/managed-by={MANAGED_BY}")
}

/// The label naming the endpoint a compute object serves.
pub const ENDPOINT_LABEL: &str = "neonctl-aws.dev/endpoint";
/// The label naming the branch an endpoint's compute serves (on the objects, not in selectors:
/// an endpoint may move to another branch).
pub const BRANCH_LABEL: &str = "neonctl-aws.dev/branch";
/// Pod annotation naming the timeline the compute runs on: a new timeline (a reset or a
/// restore) replaces the pod, since a running Postgres cannot change timelines.
pub const TIMELINE_ANNOTATION: &str = "neonctl-aws.dev/timeline";
/// The hash of what the operator applied: an object whose annotation matches needs no write.
pub const SPEC_HASH_ANNOTATION: &str = "neonctl-aws.dev/spec-hash";
/// Where compute_ctl keeps pgdata (wiped on every start: an emptyDir is right).
const PGDATA_DIR: &str = "/var/db/postgres/compute";

/// Everything every compute shares; the endpoint adds its name, id and timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComputeTemplate {
    pub namespace: String,
    /// Objects are named `<name_prefix>-<endpoint>` (shortened with a hash beyond 63 characters).
    pub name_prefix: String,
    /// The DNS suffix of the namespace's Services: `<namespace>.svc.cluster.local`.
    pub service_domain: String,
    /// On every object and pod; the NetworkPolicy and PodDisruptionBudget of computes select
    /// `selector`, which these include.
    pub labels: BTreeMap<String, String>,
    pub selector: BTreeMap<String, String>,
    pub image: String,
    pub service_account: String,
    pub pgbin: String,
    /// The control plane's base URL compute_ctl fetches its spec from.
    pub control_plane_uri: String,
    pub env: Vec<EnvVar>,
    pub resources: ResourceRequirements,
    pub pod_security: PodSecurityContext,
    pub container_security: SecurityContext,
    pub pg_port: u16,
    pub http_port: u16,
}

/// Where an endpoint's compute is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComputeAddress {
    /// `host:port` of Postgres: what `wake_compute` answers the proxy.
    pub pg: String,
    /// compute_ctl's base URL (`/configure`).
    pub http: String,
}

/// FNV-1a: stable across releases and platforms, unlike std's hasher.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// `object` with [`SPEC_HASH_ANNOTATION`] set to the hash of everything else in it.
fn stamped<K: kube::Resource + Serialize>(mut object: K) -> K {
    let hash = fnv(&serde_json::to_vec(&object).expect("a Kubernetes object serializes to JSON"));
    object.meta_mut().annotations.get_or_insert_default().insert(SPEC_HASH_ANNOTATION.into(), format!("{hash:016x}"));
    object
}

/// Whether `live` carries the hash of `desired`: what the operator applied last is still there.
pub fn is_current<K: kube::Resource>(live: &K, desired: &K) -> bool {
    let hash = |object: &K| object.meta().annotations.as_ref().and_then(|a| a.get(SPEC_HASH_ANNOTATION)).cloned();
    hash(live).is_some() && hash(live) == hash(desired)
}

impl ComputeTemplate {
    /// The Deployment's and Service's name for `endpoint`: a DNS label of at most 63 characters.
    pub fn name(&self, endpoint: &str) -> String {
        let name = format!("{}-{endpoint}", self.name_prefix);
        if name.len() <= 63 {
            return name;
        }
        let hash = fnv(name.as_bytes());
        format!("{}-{:08x}", name[..54].trim_end_matches('-'), hash as u32)
    }

    /// The Service's cluster DNS name and ports.
    pub fn address(&self, endpoint: &str) -> ComputeAddress {
        let host = format!("{}.{}", self.name(endpoint), self.service_domain);
        ComputeAddress { pg: format!("{host}:{}", self.pg_port), http: format!("http://{host}:{}", self.http_port) }
    }

    fn labels_of(&self, labels: &BTreeMap<String, String>, endpoint: &str) -> BTreeMap<String, String> {
        let mut labels = labels.clone();
        labels.insert(ENDPOINT_LABEL.into(), endpoint.into());
        labels
    }

    fn metadata(&self, endpoint: &NeonEndpoint) -> ObjectMeta {
        let name = endpoint.metadata.name.clone().unwrap_or_default();
        let mut labels = self.labels_of(&self.labels, &name);
        labels.insert(BRANCH_LABEL.into(), endpoint.spec.branch.clone());
        ObjectMeta {
            name: Some(self.name(&name)),
            namespace: Some(self.namespace.clone()),
            labels: Some(labels),
            owner_references: Some(vec![OwnerReference {
                api_version: API_VERSION.into(),
                kind: "NeonEndpoint".into(),
                name,
                uid: endpoint.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        }
    }

    /// The endpoint's Deployment: one compute_ctl (`--compute-id` = the endpoint) on
    /// `timeline`. Readiness is Postgres' port (compute_ctl's `/status` needs a JWT), probed
    /// every second (a wake waits for it), liveness compute_ctl's unauthenticated `/metrics`.
    ///
    /// It names no `replicas`: the API server makes a new one 1, and scaling (suspend, wake)
    /// owns the field, so applying the template again never undoes a suspend or a wake.
    pub fn deployment(&self, endpoint: &NeonEndpoint, timeline: &str) -> Deployment {
        let name = endpoint.metadata.name.clone().unwrap_or_default();
        let args = ComputeCtlArgs {
            pgdata: format!("{PGDATA_DIR}/pgdata"),
            connstr: format!("postgresql://cloud_admin@localhost:{}/postgres", self.pg_port),
            pgbin: self.pgbin.clone(),
            compute_id: name.clone(),
            control_plane_uri: self.control_plane_uri.clone(),
        };
        let port = |name: &str, port: u16| ContainerPort { name: Some(name.into()), container_port: port.into(), ..Default::default() };
        let mount = |name: &str, path: &str| VolumeMount { name: name.into(), mount_path: path.into(), ..Default::default() };
        let empty_dir = |name: &str| Volume { name: name.into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Default::default() };
        let container = Container {
            name: "compute".into(),
            image: Some(self.image.clone()),
            image_pull_policy: Some("IfNotPresent".into()),
            args: Some(args.to_args()),
            env: Some(self.env.clone()),
            resources: Some(self.resources.clone()),
            security_context: Some(self.container_security.clone()),
            ports: Some(vec![port("postgres", self.pg_port), port("http", self.http_port)]),
            readiness_probe: Some(Probe {
                tcp_socket: Some(TCPSocketAction { port: IntOrString::Int(self.pg_port.into()), ..Default::default() }),
                period_seconds: Some(1),
                ..Default::default()
            }),
            liveness_probe: Some(Probe {
                http_get: Some(HTTPGetAction {
                    path: Some("/metrics".into()),
                    port: IntOrString::Int(self.http_port.into()),
                    ..Default::default()
                }),
                initial_delay_seconds: Some(30),
                period_seconds: Some(20),
                failure_threshold: Some(6),
                ..Default::default()
            }),
            // Postgres writes sockets and extension files outside pgdata: the root stays writable.
            volume_mounts: Some(vec![mount("pgdata", PGDATA_DIR), mount("tmp", "/tmp")]),
            ..Default::default()
        };
        stamped(Deployment {
            metadata: self.metadata(endpoint),
            spec: Some(DeploymentSpec {
                strategy: Some(DeploymentStrategy { type_: Some("Recreate".into()), ..Default::default() }),
                selector: LabelSelector { match_labels: Some(self.labels_of(&self.selector, &name)), ..Default::default() },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(self.labels_of(&self.labels, &name)),
                        annotations: Some(BTreeMap::from([(TIMELINE_ANNOTATION.into(), timeline.into())])),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec {
                        service_account_name: Some(self.service_account.clone()),
                        automount_service_account_token: Some(false),
                        security_context: Some(self.pod_security.clone()),
                        enable_service_links: Some(false),
                        containers: vec![container],
                        volumes: Some(vec![empty_dir("pgdata"), empty_dir("tmp")]),
                        ..Default::default()
                    }),
                },
                ..Default::default()
            }),
            status: None,
        })
    }

    /// The endpoint's Service: the name the proxy and the control plane reach the compute by.
    pub fn service(&self, endpoint: &NeonEndpoint) -> Service {
        let name = endpoint.metadata.name.clone().unwrap_or_default();
        let port = |name: &str, port: u16| ServicePort {
            name: Some(name.into()),
            port: port.into(),
            target_port: Some(IntOrString::Int(port.into())),
            protocol: Some("TCP".into()),
            ..Default::default()
        };
        stamped(Service {
            metadata: self.metadata(endpoint),
            spec: Some(ServiceSpec {
                selector: Some(self.labels_of(&self.selector, &name)),
                ports: Some(vec![port("postgres", self.pg_port), port("http", self.http_port)]),
                ..Default::default()
            }),
            status: None,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::resources::EndpointSpec;

    use super::*;

    pub(crate) fn template() -> ComputeTemplate {
        let labels: BTreeMap<String, String> =
            [("app.kubernetes.io/managed-by", MANAGED_BY), ("app.kubernetes.io/instance", "neon"), ("app.kubernetes.io/name", "compute")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into();
        let selector = labels.iter().filter(|(k, _)| k.as_str() != "app.kubernetes.io/managed-by").map(|(k, v)| (k.clone(), v.clone()));
        ComputeTemplate {
            namespace: "neon".into(),
            name_prefix: "neon-compute".into(),
            service_domain: "neon.svc.cluster.local".into(),
            labels: labels.clone(),
            selector: selector.collect(),
            image: "registry.example/compute@sha256:00".into(),
            service_account: "neon-compute".into(),
            pgbin: "/usr/local/bin/postgres".into(),
            control_plane_uri: "http://neon-control-plane.neon.svc.cluster.local:8080".into(),
            env: vec![EnvVar { name: "OTEL_SDK_DISABLED".into(), value: Some("true".into()), ..Default::default() }],
            resources: ResourceRequirements::default(),
            pod_security: PodSecurityContext { run_as_non_root: Some(true), ..Default::default() },
            container_security: SecurityContext { allow_privilege_escalation: Some(false), ..Default::default() },
            pg_port: 55432,
            http_port: 3080,
        }
    }

    pub(crate) fn endpoint(name: &str) -> NeonEndpoint {
        let mut endpoint = NeonEndpoint::new(name, EndpointSpec { branch: "dev".into(), ..Default::default() });
        endpoint.metadata.uid = Some("8a4b6c2e-0000-4000-8000-000000000001".into());
        endpoint
    }

    #[test]
    fn names_are_dns_labels_and_addresses_the_services() {
        let template = template();
        assert_eq!(template.name("dev"), "neon-compute-dev");
        let long = template.name(&"x".repeat(60));
        assert_eq!(long.len(), 63, "{long}");
        assert_ne!(long, template.name(&format!("{}y", "x".repeat(59))), "a hash tells long names apart");
        assert_eq!(
            template.address("dev"),
            ComputeAddress {
                pg: "neon-compute-dev.neon.svc.cluster.local:55432".into(),
                http: "http://neon-compute-dev.neon.svc.cluster.local:3080".into()
            }
        );
    }

    #[test]
    fn an_endpoints_objects() {
        let template = template();
        let endpoint = endpoint("dev");
        let objects = serde_json::json!({
            "deployment": template.deployment(&endpoint, "de200bd42b49cc1814412c7e592dd6e9"),
            "service": template.service(&endpoint),
        });
        insta::assert_json_snapshot!("compute-objects", objects);
        let again = template.deployment(&endpoint, "de200bd42b49cc1814412c7e592dd6e9");
        assert!(is_current(&again, &template.deployment(&endpoint, "de200bd42b49cc1814412c7e592dd6e9")));
        assert!(!is_current(&again, &template.deployment(&endpoint, "00000000000000000000000000000001")), "a new timeline");
    }
}
