//! `control-plane serve --store kubernetes`: branches and endpoints are the `NeonBranch` and
//! `NeonEndpoint` objects of the control plane's namespace (branch id and endpoint id are the
//! object names), and the placements the storage controller reports are written to each
//! NeonBranch's status, so that they survive restarts. Whoever creates the objects (`deploy`,
//! kubectl) owns their specs; the control plane only ever writes their status.
//!
//! Both kinds are read from watch-backed caches (kube-runtime reflectors): one list each at
//! start, then watches, so a control plane with nothing to do makes no list calls however many
//! branches there are, and every replica serves from state as fresh as the last event.
//!
//! Also what the reconciler needs beyond [`Store`]: each branch's generation and phase, status
//! patches, and the status ConfigMap the `status` command reads.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt as _, reflector, watcher};
use kube::{Client, Resource, ResourceExt};
use neonctl_contract::computes;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::resources::{self, AttachmentStatus, NeonBranch, NeonEndpoint, SafekeepersStatus};
use super::store::{Attachment, Branch, Database, Endpoint, Role, SafekeeperSet, State, Store, StoreError, timeline_key};

/// The field manager of every write: the status subresource and the status ConfigMap.
pub const FIELD_MANAGER: &str = "neonctl-aws-control-plane";
pub use neonctl_contract::service::STATUS_KEY;
/// The field manager of scaling (suspends and wakes): apart from the template's applier, so
/// that `spec.replicas` is never the applier's.
pub const SCALER: &str = "neonctl-aws-control-plane-scaler";

/// The placements a NeonBranch's status holds.
#[derive(Debug, Clone, Default, PartialEq)]
struct Placements {
    attachment: Option<AttachmentStatus>,
    safekeepers: Option<SafekeepersStatus>,
}

pub struct KubeStore {
    client: Client,
    namespace: String,
    status_config_map: String,
    /// The placements each NeonBranch's status held when last read or written, by name: `save`
    /// patches only the branches whose placements changed.
    written: Mutex<BTreeMap<String, Placements>>,
    /// Started at the first read.
    caches: tokio::sync::OnceCell<Caches>,
    /// Signalled on every change the watches deliver: the API state is reloaded then.
    changed: Arc<tokio::sync::Notify>,
    /// NeonBranches as our own writes left them, until the cache has caught up with them
    /// (read-your-writes: a reconcile right after a write must not act on the older version).
    own_writes: Mutex<BTreeMap<String, NeonBranch>>,
    /// Bumped on every change to a compute's Deployment: a wake or a suspend waits on it.
    deployments_changed: Arc<tokio::sync::watch::Sender<()>>,
}

/// How long the first read waits for the initial lists before it reports an error (RBAC or
/// a missing CRD show up here).
const CACHE_SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// The reflectors of both kinds and of the computes' objects, and the tasks that feed them
/// (stopped with the store).
struct Caches {
    branches: reflector::Store<NeonBranch>,
    endpoints: reflector::Store<NeonEndpoint>,
    deployments: reflector::Store<Deployment>,
    services: reflector::Store<Service>,
    /// The computes' pods, for what keeps one from running.
    pods: reflector::Store<Pod>,
    feeders: Vec<tokio::task::AbortHandle>,
}

impl Drop for Caches {
    fn drop(&mut self) {
        for feeder in &self.feeders {
            feeder.abort();
        }
    }
}

impl From<&Attachment> for AttachmentStatus {
    fn from(attachment: &Attachment) -> Self {
        Self { pageservers: attachment.pageservers.clone(), stripe_size: attachment.stripe_size }
    }
}

impl From<&AttachmentStatus> for Attachment {
    fn from(status: &AttachmentStatus) -> Self {
        Self { pageservers: status.pageservers.clone(), stripe_size: status.stripe_size }
    }
}

impl From<&SafekeeperSet> for SafekeepersStatus {
    fn from(set: &SafekeeperSet) -> Self {
        Self { generation: set.generation, ids: set.safekeepers.clone() }
    }
}

impl From<&SafekeepersStatus> for SafekeeperSet {
    fn from(status: &SafekeepersStatus) -> Self {
        Self { generation: status.generation, safekeepers: status.ids.clone() }
    }
}

impl KubeStore {
    /// The objects of `namespace`; the reconciler writes its view of the storage controller to
    /// the ConfigMap `status_config_map` there.
    pub fn new(client: Client, namespace: impl Into<String>, status_config_map: impl Into<String>) -> Self {
        Self {
            client,
            namespace: namespace.into(),
            status_config_map: status_config_map.into(),
            written: Mutex::new(BTreeMap::new()),
            caches: tokio::sync::OnceCell::new(),
            changed: Arc::new(tokio::sync::Notify::new()),
            own_writes: Mutex::new(BTreeMap::new()),
            deployments_changed: Arc::new(tokio::sync::watch::Sender::new(())),
        }
    }

    /// Notified whenever a NeonBranch or NeonEndpoint changes (once the caches run).
    pub fn changes(&self) -> Arc<tokio::sync::Notify> {
        self.changed.clone()
    }

    /// The newer of the cached object and our own last write of it (same uid, higher
    /// resourceVersion); a write the cache has caught up with is forgotten.
    pub fn freshest(&self, cached: &NeonBranch) -> NeonBranch {
        let version = |object: &NeonBranch| object.metadata.resource_version.as_deref().and_then(|v| v.parse::<u64>().ok());
        let mut own = self.own_writes.lock().expect("own writes lock");
        let name = cached.name_any();
        match own.get(&name) {
            Some(written) if written.metadata.uid == cached.metadata.uid && version(written) > version(cached) => written.clone(),
            Some(_) => {
                own.remove(&name);
                cached.clone()
            }
            None => cached.clone(),
        }
    }

    /// The caches, started (and synced with one list per kind) at the first call.
    async fn caches(&self) -> Result<&Caches, StoreError> {
        self.caches
            .get_or_try_init(|| async {
                let mut feeders = Vec::new();
                let all = watcher::Config::default();
                let computes = watcher::Config::default().labels(&computes::selector());
                // Of the computes' objects only what the operator compares and reports is kept:
                // at 1,000 endpoints the pod specs would double the control plane's memory.
                let trim_deployment = |deployment: &mut Deployment| {
                    deployment.managed_fields_mut().clear();
                    if let Some(spec) = deployment.spec.as_mut() {
                        spec.template.spec = None;
                    }
                };
                let trim_service = |service: &mut Service| {
                    service.managed_fields_mut().clear();
                    service.spec = None;
                };
                let trim_pod = |pod: &mut Pod| {
                    pod.managed_fields_mut().clear();
                    pod.spec = None;
                };
                let caches = Caches {
                    branches: self.cache(self.branch_api(), all.clone(), |_| {}, None, &mut feeders),
                    endpoints: self.cache(self.endpoint_api(), all, |_| {}, None, &mut feeders),
                    deployments: self.cache(
                        self.api(),
                        computes.clone(),
                        trim_deployment,
                        Some(self.deployments_changed.clone()),
                        &mut feeders,
                    ),
                    services: self.cache(self.api(), computes.clone(), trim_service, None, &mut feeders),
                    pods: self.cache(self.api(), computes, trim_pod, None, &mut feeders),
                    feeders,
                };
                let plurals = resources::plurals();
                let synced = tokio::time::timeout(CACHE_SYNC_TIMEOUT, async {
                    caches.branches.wait_until_ready().await.is_ok()
                        && caches.endpoints.wait_until_ready().await.is_ok()
                        && caches.deployments.wait_until_ready().await.is_ok()
                        && caches.services.wait_until_ready().await.is_ok()
                        && caches.pods.wait_until_ready().await.is_ok()
                });
                if !matches!(synced.await, Ok(true)) {
                    return Err(StoreError::Sync {
                        what: format!("{} in namespace {}", plurals.join(" and "), self.namespace),
                        seconds: CACHE_SYNC_TIMEOUT.as_secs(),
                    });
                }
                Ok(caches)
            })
            .await
    }

    /// A reflector of `api`'s objects (those `config` selects, as `trim` leaves them), fed by a
    /// task added to `feeders`, bumping `signal` at every change it applies.
    fn cache<K>(
        &self,
        api: Api<K>,
        config: watcher::Config,
        trim: impl FnMut(&mut K) + Send + 'static,
        signal: Option<Arc<tokio::sync::watch::Sender<()>>>,
        feeders: &mut Vec<tokio::task::AbortHandle>,
    ) -> reflector::Store<K>
    where
        K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
    {
        let (reader, writer) = reflector::store();
        let (namespace, changed) = (self.namespace.clone(), self.changed.clone());
        let plural = K::plural(&()).into_owned();
        let events = watcher(api, config).default_backoff().modify(trim);
        let feeder = tokio::spawn(reflector(writer, events).for_each(move |event| {
            match event {
                // One wake-up however many events: the reload reads them all.
                Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone) => {
                    changed.notify_one();
                    if let Some(signal) = &signal {
                        signal.send_replace(());
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("watching {plural} in namespace {namespace}: {e}; retrying"),
            }
            std::future::ready(())
        }));
        feeders.push(feeder.abort_handle());
        reader
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn branch_api(&self) -> Api<NeonBranch> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub fn endpoint_api(&self) -> Api<NeonEndpoint> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Objects of kind `K` in the namespace (the computes' Deployments and Services).
    pub fn api<K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>>(&self) -> Api<K> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The computes' Deployment and Service called `name`, as the caches have them.
    pub async fn compute_objects(&self, name: &str) -> Result<(Option<Deployment>, Option<Service>), StoreError> {
        let caches = self.caches().await?;
        let deployment = caches.deployments.get(&reflector::ObjectRef::new(name).within(&self.namespace));
        let service = caches.services.get(&reflector::ObjectRef::new(name).within(&self.namespace));
        Ok((deployment.map(|d| (*d).clone()), service.map(|s| (*s).clone())))
    }

    /// The compute's Deployment `name` once `done` says so of it (as the cache has it, absent
    /// as None), woken by each change the watch brings; None if `deadline` comes first.
    pub async fn wait_for_deployment(
        &self,
        name: &str,
        done: impl Fn(Option<&Deployment>) -> bool,
        deadline: tokio::time::Instant,
    ) -> Result<Option<Option<Deployment>>, StoreError> {
        // Subscribed before the first look, so no change between the two is missed.
        let mut changes = self.deployments_changed.subscribe();
        loop {
            let (deployment, _) = self.compute_objects(name).await?;
            if done(deployment.as_ref()) {
                return Ok(Some(deployment));
            }
            tokio::select! {
                _ = changes.changed() => {}
                () = tokio::time::sleep_until(deadline) => return Ok(None),
            }
        }
    }

    /// Sets the compute Deployment `name`'s replicas (a merge patch, as `kubectl scale` would:
    /// the applied template names none, so the next apply keeps what this sets).
    pub async fn scale(&self, name: &str, replicas: i32) -> Result<Deployment, StoreError> {
        let params = PatchParams { field_manager: Some(SCALER.into()), ..Default::default() };
        self.api::<Deployment>()
            .patch(name, &params, &Patch::Merge(json!({"spec": {"replicas": replicas}})))
            .await
            .map_err(self.error(format_args!("scaling Deployment {name} to {replicas}")))
    }

    /// What keeps the pods of the compute of `endpoint` from running, as their status says it
    /// (unschedulable, an image that cannot be pulled, a crashing container): a reason in
    /// CamelCase and what the pod says; None if nothing does (or the caches have not started).
    pub fn pod_problem(&self, endpoint: &str) -> Option<(String, String)> {
        let pods = self.caches.get()?.pods.state();
        pods.iter().filter(|pod| pod.labels().get(computes::ENDPOINT_LABEL).map(String::as_str) == Some(endpoint)).find_map(|pod| {
            let status = pod.status.as_ref()?;
            let unscheduled = status.conditions.iter().flatten().find(|c| c.type_ == "PodScheduled" && c.status == "False");
            if let Some(condition) = unscheduled {
                let reason = condition.reason.clone().unwrap_or_else(|| "Unschedulable".into());
                let message = condition.message.clone().unwrap_or_else(|| reason.clone());
                return Some((reason, format!("pod {} cannot be scheduled: {message}", pod.name_any())));
            }
            status.container_statuses.iter().flatten().find_map(|container| {
                let waiting = container.state.as_ref()?.waiting.as_ref()?;
                let reason = waiting.reason.clone().filter(|reason| reason != "ContainerCreating" && reason != "PodInitializing")?;
                let message = waiting.message.as_ref().map(|m| format!(": {m}")).unwrap_or_default();
                Some((reason.clone(), format!("pod {} container {}: {reason}{message}", pod.name_any(), container.name)))
            })
        })
    }

    /// The names of the computes' Deployments labelled as serving `branch`.
    pub async fn computes_of(&self, branch: &str) -> Result<Vec<String>, StoreError> {
        let deployments = self.caches().await?.deployments.state();
        Ok(deployments
            .iter()
            .filter(|d| d.labels().get(computes::BRANCH_LABEL).map(String::as_str) == Some(branch))
            .map(|d| d.name_any())
            .collect())
    }

    /// Every NeonEndpoint as the cache has it (none before it has started).
    pub fn cached_endpoints(&self) -> Vec<Arc<NeonEndpoint>> {
        self.caches.get().map(|caches| caches.endpoints.state()).unwrap_or_default()
    }

    fn error(&self, what: impl std::fmt::Display) -> impl FnOnce(kube::Error) -> StoreError {
        let what = format!("{what} in namespace {}", self.namespace);
        move |source| StoreError::Kubernetes { what, source }
    }

    /// Every NeonBranch, by name, as the cache (and our own later writes) have it.
    pub async fn branches(&self) -> Result<Vec<NeonBranch>, StoreError> {
        let mut branches: Vec<NeonBranch> = self.caches().await?.branches.state().iter().map(|object| self.freshest(object)).collect();
        branches.sort_by_key(ResourceExt::name_any);
        Ok(branches)
    }

    /// The NeonBranch `name`, as the cache (or our own later write) has it.
    pub async fn branch(&self, name: &str) -> Result<Option<NeonBranch>, StoreError> {
        let cached = self.caches().await?.branches.get(&reflector::ObjectRef::new(name).within(&self.namespace));
        Ok(cached.map(|branch| self.freshest(&branch)))
    }

    /// The names of the NeonEndpoints serving `branch`.
    pub async fn endpoints_of(&self, branch: &str) -> Result<Vec<String>, StoreError> {
        let endpoints = self.caches().await?.endpoints.state();
        let mut names: Vec<String> = endpoints.iter().filter(|e| e.spec.branch == branch).map(|e| e.name_any()).collect();
        names.sort();
        Ok(names)
    }

    /// Remembers `written`, what the API server answered to one of our writes, until the cache
    /// has it.
    pub fn wrote(&self, written: NeonBranch) {
        self.own_writes.lock().expect("own writes lock").insert(written.name_any(), written);
    }

    /// A merge patch of the NeonBranch's status subresource; a branch deleted meanwhile has no
    /// status left to write.
    pub async fn patch_branch_status(&self, name: &str, status: Value) -> Result<(), StoreError> {
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
        match self.branch_api().patch_status(name, &params, &Patch::Merge(json!({"status": status}))).await {
            Ok(written) => {
                self.wrote(written);
                Ok(())
            }
            Err(kube::Error::Api(response)) if response.code == 404 => Ok(()),
            Err(source) => Err(self.error(format_args!("writing the status of NeonBranch {name}"))(source)),
        }
    }

    /// Server-side applies the status ConfigMap with `text` under [`STATUS_KEY`]. It carries no
    /// `app.kubernetes.io/managed-by: neonctl-aws` label: `deploy` prunes what has that label
    /// and does not render.
    pub async fn write_status(&self, text: &str) -> Result<(), StoreError> {
        let name = &self.status_config_map;
        let config_map = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": {"app.kubernetes.io/part-of": "neon", "app.kubernetes.io/component": "control-plane-status"},
            },
            "data": {STATUS_KEY: text},
        });
        Api::<ConfigMap>::namespaced(self.client.clone(), &self.namespace)
            .patch(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(config_map))
            .await
            .map_err(self.error(format_args!("writing ConfigMap {name}")))?;
        Ok(())
    }

    async fn read_state(&self) -> Result<State, StoreError> {
        let branches = self.branches().await?;
        let endpoints = self.caches().await?.endpoints.state();
        let mut state = State::default();
        let mut written = BTreeMap::new();
        for branch in branches {
            let (name, spec, status) = (branch.name_any(), branch.spec, branch.status.unwrap_or_default());
            let placements = Placements { attachment: status.attachment.clone(), safekeepers: status.safekeepers.clone() };
            // Branches of one tenant carry the same attachment; the first one read wins.
            if let Some(attachment) = &placements.attachment {
                state.attachments.entry(spec.tenant_id.clone()).or_insert_with(|| attachment.into());
            }
            if let Some(safekeepers) = &placements.safekeepers {
                state.safekeeper_sets.insert(timeline_key(&spec.tenant_id, &spec.timeline_id), safekeepers.into());
            }
            written.insert(name.clone(), placements);
            state.branches.insert(
                name,
                Branch {
                    project_id: spec.project_id,
                    tenant_id: spec.tenant_id,
                    timeline_id: spec.timeline_id,
                    roles: spec.roles.into_iter().map(|role| Role { name: role.name, verifier: role.verifier }).collect(),
                    databases: spec.databases.into_iter().map(|db| Database { name: db.name, owner: db.owner }).collect(),
                    dropped_roles: spec.dropped_roles,
                    dropped_databases: spec.dropped_databases,
                    pending: status.phase.as_deref() != Some(resources::phase::READY),
                },
            );
        }
        for object in endpoints.iter() {
            let spec = object.spec.clone();
            let running = object.status.as_ref().and_then(|status| status.phase.as_deref()) == Some(resources::endpoint_phase::ACTIVE);
            let suspend_timeout_seconds = spec.suspends_after_seconds();
            state.endpoints.insert(
                object.name_any(),
                Endpoint {
                    branch_id: spec.branch,
                    allowed_ips: spec.allowed_ips,
                    stopped: !running,
                    suspend_timeout_seconds,
                    read_only: spec.read_only,
                },
            );
        }
        *self.written.lock().expect("written placements lock") = written;
        Ok(state)
    }

    async fn write_placements(&self, state: &State) -> Result<(), StoreError> {
        let changes: Vec<(String, Value, Placements)> = {
            let written = self.written.lock().expect("written placements lock");
            state
                .branches
                .iter()
                .filter_map(|(name, branch)| {
                    let want = Placements {
                        attachment: state.attachments.get(&branch.tenant_id).map(Into::into),
                        safekeepers: state.safekeeper_sets.get(&timeline_key(&branch.tenant_id, &branch.timeline_id)).map(Into::into),
                    };
                    let have = written.get(name).cloned().unwrap_or_default();
                    let mut patch = serde_json::Map::new();
                    if want.attachment.is_some() && want.attachment != have.attachment {
                        patch.insert("attachment".into(), json!(want.attachment));
                    }
                    if want.safekeepers.is_some() && want.safekeepers != have.safekeepers {
                        patch.insert("safekeepers".into(), json!(want.safekeepers));
                    }
                    (!patch.is_empty()).then(|| (name.clone(), Value::Object(patch), want))
                })
                .collect()
        };
        for (name, patch, placements) in changes {
            self.patch_branch_status(&name, patch).await?;
            self.written.lock().expect("written placements lock").insert(name, placements);
        }
        Ok(())
    }
}

impl Store for KubeStore {
    fn load(&self) -> BoxFuture<'_, Result<State, StoreError>> {
        Box::pin(self.read_state())
    }

    fn save<'a>(&'a self, state: &'a State) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.write_placements(state))
    }

    fn kubernetes(&self) -> Option<&KubeStore> {
        Some(self)
    }
}
