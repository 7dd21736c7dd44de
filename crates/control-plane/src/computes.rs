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
use neonctl_contract::resources::{
    ACTION_ANNOTATION, ACTION_START, ACTION_SUSPEND, Condition, EndpointStatus, NeonEndpoint, endpoint_phase,
};
use serde_json::json;
use time::OffsetDateTime;

use super::ControlPlane;
use super::kube_store::{FIELD_MANAGER, KubeStore};
use super::reconcile::{ReconcileError, is_ready};
use super::scaling::{parse_time, replicas, rfc3339};
use super::store::StoreError;

/// How soon a compute still starting is looked at again.
const STARTING_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

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
pub(crate) fn is_running(deployment: &Deployment) -> bool {
    deployment.status.as_ref().is_some_and(|status| {
        status.ready_replicas.unwrap_or_default() >= 1 && status.observed_generation >= deployment.metadata.generation
    })
}

/// What an endpoint's status says of its compute: the phase, and the `Ready` condition's
/// reason and message.
struct Shown {
    phase: &'static str,
    reason: String,
    message: Option<String>,
}

impl Shown {
    fn new(phase: &'static str, reason: &str, message: Option<String>) -> Self {
        Self { phase, reason: reason.into(), message }
    }
}

/// The status an endpoint should show; `lastActive` stays what it was unless `last_active`
/// is newer, and the condition's transition time unless its status changes.
fn status_of(endpoint: &NeonEndpoint, shown: Shown, compute: Option<&Deployment>, last_active: Option<OffsetDateTime>) -> EndpointStatus {
    let status = endpoint.status.clone().unwrap_or_default();
    let newer = last_active.filter(|at| parse_time(status.last_active.as_deref()).is_none_or(|s| *at > s));
    let ready = shown.phase == endpoint_phase::ACTIVE;
    let said = shown.message.clone().unwrap_or_else(|| "its compute runs".into());
    let now = rfc3339(OffsetDateTime::now_utc());
    EndpointStatus {
        phase: Some(shown.phase.into()),
        message: shown.message,
        observed_generation: endpoint.metadata.generation,
        compute: compute.map(|d| d.name_any()),
        timeline_id: compute
            .and_then(|d| d.spec.as_ref()?.template.metadata.as_ref()?.annotations.as_ref()?.get(TIMELINE_ANNOTATION).cloned()),
        last_active: newer.map(rfc3339).or(status.last_active),
        conditions: vec![Condition::ready(ready, &shown.reason, said, endpoint.metadata.generation, &status.conditions, &now)],
    }
}

/// How an endpoint whose compute is `deployment` shows; `problem` says what keeps its pod from
/// running, if anything does (asked only of a compute that is starting).
fn compute_phase(deployment: &Deployment, suspended_why: Option<&str>, problem: impl FnOnce() -> Option<(String, String)>) -> Shown {
    if replicas(deployment) == 0 {
        let why = suspended_why.map(|why| format!(" ({why})")).unwrap_or_default();
        return Shown::new(endpoint_phase::SUSPENDED, "Suspended", Some(format!("suspended{why}: the next connection starts it")));
    }
    if is_running(deployment) {
        return Shown::new(endpoint_phase::ACTIVE, "ComputeRunning", None);
    }
    let waiting = format!("waiting for the compute's pod (Deployment {}) to be ready", deployment.name_any());
    match problem() {
        Some((reason, problem)) => Shown::new(endpoint_phase::STARTING, &reason, Some(format!("{waiting}: {problem}"))),
        None => Shown::new(endpoint_phase::STARTING, "PodStarting", Some(waiting)),
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
        if let Some(action) = endpoint.annotations().get(ACTION_ANNOTATION) {
            return self.act(kube, &name, action, live.as_ref()).await;
        }
        let (last_active, suspended_why) = {
            let memory = self.memory.lock().expect("operator memory lock");
            (memory.last_active.get(&name).copied(), memory.suspended.get(&name).cloned())
        };
        let problem = || kube.pod_problem(&name);
        let status_of = |shown: Shown, compute: Option<&Deployment>| status_of(&endpoint, shown, compute, last_active);
        let pending = |reason: &str, message: String| Shown::new(endpoint_phase::PENDING, reason, Some(message));
        // The branch generation whose spec the compute gets, when it is made from a ready branch.
        let mut served_generation = None;
        let status = match (branch, live) {
            // Its endpoints go with it (computes first): nothing new is made for it.
            (Some(branch), live) if branch.metadata.deletion_timestamp.is_some() => {
                status_of(pending("BranchDeleting", format!("branch {branch_name} is being deleted")), live.as_ref())
            }
            (Some(branch), live) if is_ready(&branch) => {
                served_generation = branch.metadata.generation;
                let desired = template.deployment(&endpoint, &branch.spec.timeline_id);
                let deployment = self.ensure(&deployments, live, desired).await?;
                self.ensure(&kube.api::<Service>(), live_service, template.service(&endpoint)).await?;
                status_of(compute_phase(&deployment, suspended_why.as_deref(), problem), Some(&deployment))
            }
            // A branch being changed keeps its compute as it is until it is ready again.
            (Some(_), Some(live)) => {
                let mut shown = compute_phase(&live, suspended_why.as_deref(), problem);
                let updating = format!("branch {branch_name} is being updated");
                shown.message = Some(shown.message.map_or(updating.clone(), |m| format!("{m}; {updating}")));
                status_of(shown, Some(&live))
            }
            (Some(_), None) => status_of(pending("BranchNotReady", format!("waiting for branch {branch_name} to be ready")), None),
            (None, live) => status_of(
                pending(
                    "BranchMissing",
                    format!("NeonBranch {branch_name} does not exist: create it, or point the endpoint at another branch"),
                ),
                live.as_ref(),
            ),
        };
        if endpoint.status.as_ref() != Some(&status) {
            let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
            // Every field, absent ones as null: a merge patch keeps what it does not name.
            let patch = json!({"status": {
                "phase": status.phase, "message": status.message, "observedGeneration": status.observed_generation,
                "compute": status.compute, "timelineId": status.timeline_id, "lastActive": status.last_active,
                "conditions": status.conditions,
            }});
            match kube.endpoint_api().patch_status(&name, &params, &Patch::Merge(patch)).await {
                Ok(_) => {}
                Err(kube::Error::Api(response)) if response.code == 404 => {}
                Err(source) => return Err(error(format!("writing the status of NeonEndpoint {name}"))(source)),
            }
            // Served at once, before the watch brings the status back.
            if let Some(served) = self.state.lock().await.endpoints.get_mut(&name) {
                served.stopped = status.phase.as_deref() != Some(endpoint_phase::ACTIVE);
            }
            let was = endpoint.status.as_ref().and_then(|status| status.phase.as_deref());
            if status.phase.as_deref() == Some(endpoint_phase::ACTIVE) && was != Some(endpoint_phase::ACTIVE) {
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
        // The controller's own watches can wake this before the store's caches have the change
        // that woke it: a compute still starting is looked at again, so a missed readiness (or
        // a pod's new problem) shows within a second.
        Ok(if status.phase.as_deref() == Some(endpoint_phase::STARTING) {
            Action::requeue(STARTING_RECHECK)
        } else {
            Action::await_change()
        })
    }

    /// An action asked of the endpoint by its annotation (`endpoints suspend|start`): done,
    /// then the annotation removed (which wakes the endpoint's reconcile again).
    async fn act(&self, kube: &KubeStore, name: &str, action: &str, live: Option<&Deployment>) -> Result<Action, ReconcileError> {
        let store_error = |source| ReconcileError::Store(source);
        match action {
            ACTION_SUSPEND if live.is_some() => {
                self.suspend(kube, name, "suspended by request", None).await.map_err(store_error)?;
            }
            ACTION_START if live.is_some() => {
                self.start_compute(kube, name).await.map_err(store_error)?;
            }
            // No compute yet: the action waits for it.
            ACTION_SUSPEND | ACTION_START => return Ok(Action::requeue(std::time::Duration::from_secs(1))),
            other => self.say(
                &format!("endpoint {name}"),
                format!("endpoint {name}: unknown {ACTION_ANNOTATION} {other:?} (use {ACTION_SUSPEND} or {ACTION_START}); removing it"),
            ),
        }
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
        let patch = Patch::Merge(json!({"metadata": {"annotations": {ACTION_ANNOTATION: null}}}));
        match kube.endpoint_api().patch(name, &params, &patch).await {
            Ok(_) => Ok(Action::await_change()),
            Err(kube::Error::Api(response)) if response.code == 404 => Ok(Action::await_change()),
            Err(source) => {
                Err(ReconcileError::Store(StoreError::Kubernetes { what: format!("removing the action of NeonEndpoint {name}"), source }))
            }
        }
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

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};
    use neonctl_contract::resources::EndpointSpec;

    use super::*;

    fn deployment(replicas: Option<i32>, ready: i32, observed: i64) -> Deployment {
        Deployment {
            metadata: kube::api::ObjectMeta { name: Some("neon-compute-dev".into()), generation: Some(2), ..Default::default() },
            spec: Some(DeploymentSpec { replicas, ..Default::default() }),
            status: Some(DeploymentStatus { ready_replicas: Some(ready), observed_generation: Some(observed), ..Default::default() }),
        }
    }

    /// Zero replicas is suspended whatever the pods do; a ready pod counts only for the spec
    /// the controller has seen (a missing `replicas` is the API server's 1); a pod that cannot
    /// run gives its reason.
    #[test]
    fn the_phase_follows_the_deployment() {
        let phase = |d: Deployment, problem: Option<(String, String)>| {
            let shown = compute_phase(&d, Some("idle since x"), || problem);
            (shown.phase, shown.reason, shown.message.unwrap_or_default())
        };
        let (suspended, reason, message) = phase(deployment(Some(0), 1, 2), None);
        assert_eq!((suspended, reason.as_str()), (endpoint_phase::SUSPENDED, "Suspended"));
        assert!(message.contains("(idle since x)"), "{message}");
        assert_eq!(phase(deployment(None, 1, 2), None).0, endpoint_phase::ACTIVE);
        assert_eq!(phase(deployment(Some(1), 1, 1), None).0, endpoint_phase::STARTING, "an older generation's pod");
        let full = Some(("Unschedulable".to_string(), "pod p cannot be scheduled: 0/3 nodes are available".to_string()));
        let (starting, reason, message) = phase(deployment(Some(1), 0, 2), full);
        assert_eq!((starting, reason.as_str()), (endpoint_phase::STARTING, "Unschedulable"));
        assert!(message.ends_with("0/3 nodes are available"), "{message}");
    }

    /// `lastActive` only moves forward: an older activity (another replica's memory) never
    /// replaces a newer one the status shows.
    #[test]
    fn last_active_only_moves_forward() {
        let mut endpoint = NeonEndpoint::new("dev", EndpointSpec { branch: "dev".into(), ..Default::default() });
        endpoint.status = Some(EndpointStatus { last_active: Some("2026-11-26T10:00:00Z".into()), ..Default::default() });
        let at = |text: &str| parse_time(Some(text));
        let shown = |last_active| {
            let active = Shown::new(endpoint_phase::ACTIVE, "ComputeRunning", None);
            status_of(&endpoint, active, None, last_active).last_active.unwrap()
        };
        assert_eq!(shown(at("2026-11-26T09:00:00Z")), "2026-11-26T10:00:00Z");
        assert_eq!(shown(at("2026-11-26T11:00:00Z")), "2026-11-26T11:00:00Z");
        assert_eq!(shown(None), "2026-11-26T10:00:00Z");
    }
}
