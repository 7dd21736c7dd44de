//! The endpoint half of the operator: every `NeonEndpoint` gets its compute, a Deployment and a
//! Service made from the topology's [`ComputeTemplate`] (owned by the endpoint, so they go with
//! it), once its branch is `Ready`; the endpoint's status says `Pending`, `Starting` or
//! `Running`. A kube-runtime `Controller` over NeonEndpoint, woken by changes to the objects it
//! owns and to the branch an endpoint serves.
//!
//! Where a compute is reached sits behind [`ComputeAddresses`]: its Service's cluster DNS name
//! in the cluster, the addresses of stand-ins in tests.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt as _;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use neonctl_contract::computes::{ComputeAddress, ComputeTemplate, TIMELINE_ANNOTATION, is_current};
use neonctl_contract::resources::{EndpointStatus, NeonEndpoint, endpoint_phase};
use serde_json::json;

use super::ControlPlane;
use super::kube_store::{FIELD_MANAGER, KubeStore};
use super::reconcile::{ReconcileError, is_ready};
use super::store::StoreError;

/// Where an endpoint's compute is reached, if it is anywhere.
pub trait ComputeAddresses: Send + Sync {
    fn of(&self, endpoint: &str) -> Option<ComputeAddress>;
}

/// In the cluster: the endpoint's Service, by its DNS name.
pub struct ServiceDns(pub ComputeTemplate);

impl ComputeAddresses for ServiceDns {
    fn of(&self, endpoint: &str) -> Option<ComputeAddress> {
        Some(self.0.address(endpoint))
    }
}

/// Whether a Deployment has a ready pod for its current spec.
fn is_running(deployment: &Deployment) -> bool {
    deployment.status.as_ref().is_some_and(|status| {
        status.ready_replicas.unwrap_or_default() >= 1 && status.observed_generation >= deployment.metadata.generation
    })
}

/// The status an endpoint should show.
fn status_of(endpoint: &NeonEndpoint, phase: &str, message: Option<String>, compute: Option<&Deployment>) -> EndpointStatus {
    EndpointStatus {
        phase: Some(phase.into()),
        message,
        observed_generation: endpoint.metadata.generation,
        compute: compute.map(|d| d.name_any()),
        timeline_id: compute
            .and_then(|d| d.spec.as_ref()?.template.metadata.as_ref()?.annotations.as_ref()?.get(TIMELINE_ANNOTATION).cloned()),
    }
}

impl ControlPlane {
    /// One NeonEndpoint: its compute made (or updated) once its branch is ready, and its status.
    pub(crate) async fn reconcile_endpoint(&self, kube: &KubeStore, endpoint: Arc<NeonEndpoint>) -> Result<Action, ReconcileError> {
        // Kubernetes' garbage collector removes the compute with the endpoint.
        if endpoint.metadata.deletion_timestamp.is_some() {
            return Ok(Action::await_change());
        }
        let template = &self.topology.compute;
        let name = endpoint.name_any();
        let compute = template.name(&name);
        let deployments: Api<Deployment> = kube.api();
        let error = |what: String| move |source| ReconcileError::Store(StoreError::Kubernetes { what, source });
        let (live, live_service) = kube.compute_objects(&compute).await?;
        let branch_name = &endpoint.spec.branch;
        let branch = kube.branch(branch_name).await?;
        // The branch generation whose spec the compute gets, when it is made from a ready branch.
        let mut served_generation = None;
        let status = match (branch, live) {
            // Its endpoints go with it (computes first): nothing new is made for it.
            (Some(branch), live) if branch.metadata.deletion_timestamp.is_some() => {
                status_of(&endpoint, endpoint_phase::PENDING, Some(format!("branch {branch_name} is being deleted")), live.as_ref())
            }
            (Some(branch), live) if is_ready(&branch) => {
                served_generation = branch.metadata.generation;
                let desired = template.deployment(&endpoint, &branch.spec.timeline_id, 1);
                let deployment = self.ensure(&deployments, live, desired).await?;
                self.ensure(&kube.api::<Service>(), live_service, template.service(&endpoint)).await?;
                if is_running(&deployment) {
                    status_of(&endpoint, endpoint_phase::RUNNING, None, Some(&deployment))
                } else {
                    let message = format!("waiting for the compute's pod (Deployment {compute}) to be ready");
                    status_of(&endpoint, endpoint_phase::STARTING, Some(message), Some(&deployment))
                }
            }
            // A branch being changed keeps its compute as it is until it is ready again.
            (Some(_), Some(live)) => {
                let phase = if is_running(&live) { endpoint_phase::RUNNING } else { endpoint_phase::STARTING };
                status_of(&endpoint, phase, Some(format!("branch {branch_name} is being updated")), Some(&live))
            }
            (Some(_), None) => {
                status_of(&endpoint, endpoint_phase::PENDING, Some(format!("waiting for branch {branch_name} to be ready")), None)
            }
            (None, live) => status_of(
                &endpoint,
                endpoint_phase::PENDING,
                Some(format!("NeonBranch {branch_name} does not exist: create it, or point the endpoint at another branch")),
                live.as_ref(),
            ),
        };
        if endpoint.status.as_ref() != Some(&status) {
            let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
            // Every field, absent ones as null: a merge patch keeps what it does not name.
            let patch = json!({"status": {
                "phase": status.phase, "message": status.message, "observedGeneration": status.observed_generation,
                "compute": status.compute, "timelineId": status.timeline_id,
            }});
            match kube.endpoint_api().patch_status(&name, &params, &Patch::Merge(patch)).await {
                Ok(_) => {}
                Err(kube::Error::Api(response)) if response.code == 404 => {}
                Err(source) => return Err(error(format!("writing the status of NeonEndpoint {name}"))(source)),
            }
            // Served at once, before the watch brings the status back.
            if let Some(served) = self.state.lock().await.endpoints.get_mut(&name) {
                served.stopped = status.phase.as_deref() != Some(endpoint_phase::RUNNING);
            }
            let was = endpoint.status.as_ref().and_then(|status| status.phase.as_deref());
            if status.phase.as_deref() == Some(endpoint_phase::RUNNING) && was != Some(endpoint_phase::RUNNING) {
                // It fetched its spec when it started; anything that changed while it started
                // reaches it now. The APIs' state may not have the endpoint yet.
                if !self.state.lock().await.endpoints.contains_key(&name) {
                    self.refresh().await;
                }
                let _hook = self.hooks.lock().await;
                match self.configure_computes(std::slice::from_ref(&name)).await {
                    // The branch's own round need not push it again.
                    Ok(()) => {
                        if let Some(generation) = served_generation {
                            self.memory.lock().expect("operator memory lock").configured.insert(name.clone(), generation);
                        }
                    }
                    Err(e) => self.say(&format!("endpoint {name}"), format!("endpoint {name} is running, but: {e}")),
                }
            }
        }
        self.memory.lock().expect("operator memory lock").failures.remove(&format!("endpoint {name}"));
        Ok(Action::await_change())
    }

    /// Applies `desired` (server-side, as the control plane) unless `live` (from the cache) is
    /// what was applied last; returns the object as it is now.
    async fn ensure<K>(&self, api: &Api<K>, live: Option<K>, desired: K) -> Result<K, ReconcileError>
    where
        K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
    {
        let name = desired.name_any();
        let kind = K::kind(&());
        let error = |source| ReconcileError::Store(StoreError::Kubernetes { what: format!("applying {kind} {name}"), source });
        if let Some(live) = live.filter(|live| is_current(live, &desired)) {
            return Ok(live);
        }
        tracing::info!("{kind} {name}: applying the compute's {}", kind.to_lowercase());
        api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&desired)).await.map_err(error)
    }
}
