//! Rolls rendered manifests out: server-side apply (field manager `neonctl-aws`), component by
//! component in dependency order, waiting for each CustomResourceDefinition to be established
//! (right after applying it: objects of its kind may follow) and each workload to be ready;
//! then prunes what an earlier run applied and this one no longer renders.
//!
//! Kinds come from a fixed table instead of API discovery: the tool renders only these, and it
//! saves the discovery round trips on every run.
//!
//! `deploy` rolls out in two parts around its bootstrap ([`Applier::apply_components`] twice),
//! then prunes once over the union of what both applied ([`Applier::prune`]).

use crate::wait::{self, Check, Waited};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, LogParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::Value;

use crate::output::PhaseReporter;

pub const FIELD_MANAGER: &str = "neonctl-aws";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const PREFIX_LABEL: &str = "neonctl-aws/prefix";

/// A kind the tool applies. The table order is the apply order inside a component.
struct Kind {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    /// Deleted when labelled as ours and no longer applied. Never for what holds data or what
    /// users add to: claims, CRDs (deleting one deletes every object of its kind), branches.
    prune: bool,
}

const fn kind(group: &'static str, version: &'static str, kind: &'static str, plural: &'static str, namespaced: bool) -> Kind {
    Kind { group, version, kind, plural, namespaced, prune: true }
}

const fn kept(group: &'static str, version: &'static str, kind: &'static str, plural: &'static str, namespaced: bool) -> Kind {
    Kind { group, version, kind, plural, namespaced, prune: false }
}

const KINDS: &[Kind] = &[
    kept("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", false),
    // Deleting a namespace deletes its claims: only teardown does that.
    kept("", "v1", "Namespace", "namespaces", false),
    kind("storage.k8s.io", "v1", "StorageClass", "storageclasses", false),
    kind("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", false),
    kind("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", false),
    kind("", "v1", "ServiceAccount", "serviceaccounts", true),
    kind("", "v1", "Secret", "secrets", true),
    kind("", "v1", "ConfigMap", "configmaps", true),
    kind("rbac.authorization.k8s.io", "v1", "Role", "roles", true),
    kind("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", true),
    kind("", "v1", "Service", "services", true),
    kind("apps", "v1", "StatefulSet", "statefulsets", true),
    kind("apps", "v1", "Deployment", "deployments", true),
    kind("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", true),
    kind("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", true),
    kept(neonctl_contract::resources::GROUP, neonctl_contract::resources::VERSION, "NeonBranch", "neonbranches", true),
    kept(neonctl_contract::resources::GROUP, neonctl_contract::resources::VERSION, "NeonEndpoint", "neonendpoints", true),
];

impl Kind {
    fn api_resource(&self) -> ApiResource {
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(self.group, self.version, self.kind), self.plural)
    }

    fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.to_string() } else { format!("{}/{}", self.group, self.version) }
    }
}

fn kind_of(obj: &DynamicObject) -> Result<(usize, &'static Kind), ApplyError> {
    let types = obj.types.as_ref().ok_or_else(|| ApplyError::Malformed { name: obj.name_any() })?;
    KINDS
        .iter()
        .enumerate()
        .find(|(_, k)| k.kind == types.kind && k.api_version() == types.api_version)
        .ok_or_else(|| ApplyError::UnknownKind { kind: types.kind.clone(), api_version: types.api_version.clone() })
}

/// One component's objects (e.g. `pageserver`): applied together, then waited for.
#[derive(Debug, Clone)]
pub struct Component {
    pub name: String,
    pub objects: Vec<DynamicObject>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("manifest {name} has no apiVersion/kind")]
    Malformed { name: String },
    #[error("{kind} ({api_version}) is not a kind neonctl-aws applies")]
    UnknownKind { kind: String, api_version: String },
    /// `name` reads like `Deployment neon/broker`.
    #[error("{verb} {name}: {source}")]
    Api { verb: &'static str, name: String, source: kube::Error },
    #[error("{name} was not ready after {seconds}s: {progress}\n{diagnostics}")]
    NotReady { name: String, seconds: u64, progress: String, diagnostics: String },
}

/// What a roll-out did.
#[derive(Debug, Default, PartialEq)]
pub struct RollOut {
    pub applied: Vec<String>,
    pub pruned: Vec<String>,
}

/// An object by kind, namespace and name: what [`Applier::prune`] keeps.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectKey {
    pub kind: &'static str,
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectKey {
    /// The key of `obj`, for objects of a kind the applier knows.
    pub fn of(obj: &DynamicObject) -> Result<Self, ApplyError> {
        let (_, kind) = kind_of(obj)?;
        Ok(Self::new(kind, obj))
    }

    fn new(kind: &Kind, obj: &DynamicObject) -> Self {
        Self { kind: kind.kind, namespace: obj.namespace(), name: obj.name_any() }
    }
}

/// What [`Applier::apply_components`] applied.
#[derive(Debug, Default, PartialEq)]
pub struct Applied {
    /// Every object applied, for [`Applier::prune`].
    pub keys: BTreeSet<ObjectKey>,
    /// `Kind namespace/name`, in apply order.
    pub objects: Vec<String>,
}

impl Applied {
    pub fn extend(&mut self, other: Applied) {
        self.keys.extend(other.keys);
        self.objects.extend(other.objects);
    }
}

/// How an object would change, from [`Applier::diff`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Create,
    /// The paths whose values would change (at most a few, the first ones in key order).
    Update(Vec<String>),
    Unchanged,
}

/// One object's [`Change`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectChange {
    pub key: ObjectKey,
    /// `Kind namespace/name`.
    pub object: String,
    pub change: Change,
}

pub struct Applier {
    client: Client,
    prefix: String,
    pub timeout: Duration,
    pub poll: Duration,
}

impl Applier {
    pub fn new(client: Client, prefix: &str) -> Self {
        Self { client, prefix: prefix.to_string(), timeout: Duration::from_secs(600), poll: Duration::from_secs(3) }
    }

    fn api(&self, kind: &Kind, namespace: Option<&str>) -> Api<DynamicObject> {
        match (kind.namespaced, namespace) {
            (true, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, &kind.api_resource()),
            (true, None) => Api::default_namespaced_with(self.client.clone(), &kind.api_resource()),
            (false, _) => Api::all_with(self.client.clone(), &kind.api_resource()),
        }
    }

    /// Applies every component in order, waiting for its workloads, then prunes.
    pub async fn roll_out(&self, components: &[Component], reporter: &PhaseReporter) -> Result<RollOut, ApplyError> {
        let applied = self.apply_components(components, reporter).await?;
        let pruned = self.prune(&applied.keys).await?;
        Ok(RollOut { applied: applied.objects, pruned })
    }

    /// Applies every component in order, each followed by a wait for its workloads; a CRD is
    /// waited for right after it is applied.
    /// Prunes nothing: the caller prunes once, over everything its roll-outs applied.
    pub async fn apply_components(&self, components: &[Component], reporter: &PhaseReporter) -> Result<Applied, ApplyError> {
        let mut out = Applied::default();
        for component in components {
            let step = reporter.step(format!("apply {}", component.name));
            let mut waits = Vec::new();
            for (kind, obj) in sorted(component)? {
                let applied = self.apply(kind, obj).await?;
                out.keys.insert(ObjectKey::new(kind, obj));
                out.objects.push(describe(kind, obj));
                match kind.kind {
                    "CustomResourceDefinition" => self.wait_ready(kind, &applied).await?,
                    "Deployment" | "StatefulSet" => waits.push((kind, applied)),
                    _ => {}
                }
            }
            step.finish();
            for (kind, applied) in waits {
                let step = reporter.step(format!("wait for {} {}", kind.kind, applied.name_any()));
                self.wait_ready(kind, &applied).await?;
                step.finish();
            }
        }
        Ok(out)
    }

    /// Server-side applies one object (of a kind the applier knows) and returns it as stored.
    pub async fn apply_object(&self, obj: &DynamicObject) -> Result<DynamicObject, ApplyError> {
        let (_, kind) = kind_of(obj)?;
        self.apply(kind, obj).await
    }

    /// The live object with `obj`'s kind, namespace and name, if there is one.
    pub async fn get(&self, obj: &DynamicObject) -> Result<Option<DynamicObject>, ApplyError> {
        let (_, kind) = kind_of(obj)?;
        self.api(kind, obj.namespace().as_deref()).get_opt(&obj.name_any()).await.map_err(|source| ApplyError::Api {
            verb: "reading",
            name: describe(kind, obj),
            source,
        })
    }

    /// What applying `components` would change, object by object, without changing anything:
    /// a missing object is created; for an existing one the result of a server-side apply with
    /// `dryRun=All` is compared with the live object (both without status and server
    /// bookkeeping), so defaults and fields other managers own count as they will.
    pub async fn diff(&self, components: &[Component]) -> Result<Vec<ObjectChange>, ApplyError> {
        let mut out = Vec::new();
        for component in components {
            for (kind, obj) in sorted(component)? {
                let object = describe(kind, obj);
                let api = self.api(kind, obj.namespace().as_deref());
                let name = obj.name_any();
                let live = api.get_opt(&name).await.map_err(|source| ApplyError::Api { verb: "reading", name: object.clone(), source })?;
                let change = match live {
                    None => Change::Create,
                    Some(live) => {
                        let params = PatchParams::apply(FIELD_MANAGER).force().dry_run();
                        let would = api.patch(&name, &params, &Patch::Apply(obj)).await.map_err(|source| ApplyError::Api {
                            verb: "dry-run applying",
                            name: object.clone(),
                            source,
                        })?;
                        let paths = differences(&comparable(&live), &comparable(&would));
                        if paths.is_empty() { Change::Unchanged } else { Change::Update(paths) }
                    }
                };
                out.push(ObjectChange { key: ObjectKey::new(kind, obj), object, change });
            }
        }
        Ok(out)
    }

    async fn apply(&self, kind: &Kind, obj: &DynamicObject) -> Result<DynamicObject, ApplyError> {
        let name = obj.name_any();
        self.api(kind, obj.namespace().as_deref())
            // force: this tool is the only intended owner of what it renders.
            .patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(obj))
            .await
            .map_err(|source| ApplyError::Api { verb: "applying", name: describe(kind, obj), source })
    }

    /// Polls until a CustomResourceDefinition is established, or until the workload's current
    /// generation is fully rolled out and ready, like `kubectl rollout status`
    /// (observedGeneration first: right after an apply the old generation's status still says
    /// ready).
    async fn wait_ready(&self, kind: &Kind, applied: &DynamicObject) -> Result<(), ApplyError> {
        let api = self.api(kind, applied.namespace().as_deref());
        let name = applied.name_any();
        let generation = applied.metadata.generation.unwrap_or(0);
        let check = || async {
            let current =
                api.get(&name).await.map_err(|source| ApplyError::Api { verb: "reading", name: describe(kind, applied), source })?;
            let (ready, progress) = readiness(kind.kind, &current, generation);
            Ok(if ready { Check::Done(()) } else { Check::Waiting((progress, current)) })
        };
        let (progress, current) = match wait::poll(self.timeout, self.poll, check, |_, _| {}).await? {
            Waited::Done(()) => return Ok(()),
            Waited::TimedOut(last) => last,
        };
        Err(ApplyError::NotReady {
            name: describe(kind, applied),
            seconds: self.timeout.as_secs(),
            progress,
            diagnostics: match kind.kind {
                "CustomResourceDefinition" => conditions(&current),
                _ => self.diagnose(&current).await,
            },
        })
    }

    /// The pods of a workload that is not ready: their state, recent events and last log lines.
    async fn diagnose(&self, workload: &DynamicObject) -> String {
        let Some(ns) = workload.namespace() else { return String::new() };
        let selector = workload.data["spec"]["selector"]["matchLabels"]
            .as_object()
            .map(|labels| labels.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect::<Vec<_>>().join(","))
            .unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let events: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        let list = match pods.list(&ListParams::default().labels(&selector)).await {
            Ok(list) => list,
            Err(e) => return format!("  (could not list its pods: {e})"),
        };
        if list.items.is_empty() {
            return format!("  no pods match {selector}");
        }
        let mut out = Vec::new();
        for pod in list.items {
            let pod_name = pod.name_any();
            let status = pod.status.unwrap_or_default();
            let mut line = format!("  pod {pod_name}: {}", status.phase.unwrap_or_else(|| "Unknown".into()));
            let mut unready = None;
            for cs in status.container_statuses.unwrap_or_default() {
                if let Some(waiting) = cs.state.as_ref().and_then(|s| s.waiting.as_ref()) {
                    line.push_str(&format!(
                        "; {} waiting: {} {}",
                        cs.name,
                        waiting.reason.clone().unwrap_or_default(),
                        waiting.message.clone().unwrap_or_default()
                    ));
                }
                if !cs.ready && unready.is_none() {
                    unready = Some(cs.name.clone());
                }
            }
            out.push(line);
            let fields = format!("involvedObject.name={pod_name}");
            if let Ok(evs) = events.list(&ListParams::default().fields(&fields)).await {
                for ev in evs.items.iter().rev().take(5).rev() {
                    out.push(format!("    event {}: {}", ev.reason.clone().unwrap_or_default(), ev.message.clone().unwrap_or_default()));
                }
            }
            if let Some(container) = unready {
                let params = LogParams { container: Some(container.clone()), tail_lines: Some(20), ..Default::default() };
                match pods.logs(&pod_name, &params).await {
                    Ok(logs) => out.extend(logs.lines().map(|l| format!("    log {container}: {l}"))),
                    Err(e) => out.push(format!("    (no logs from {container}: {e})")),
                }
            }
        }
        out.join("\n")
    }

    /// Deletes objects labelled as ours for this prefix that `keep` does not list. Persistent
    /// volume claims are never pruned: they hold data, and teardown owns them; nor are
    /// namespaces (they hold claims), CRDs and the control plane's custom resources.
    pub async fn prune(&self, keep: &BTreeSet<ObjectKey>) -> Result<Vec<String>, ApplyError> {
        let mut pruned = Vec::new();
        for (kind, obj) in self.stale(keep).await? {
            let name = describe(kind, &obj);
            self.api(kind, obj.namespace().as_deref())
                .delete(&obj.name_any(), &DeleteParams::background())
                .await
                .map_err(|source| ApplyError::Api { verb: "pruning", name: name.clone(), source })?;
            pruned.push(name);
        }
        Ok(pruned)
    }

    /// What [`Applier::prune`] would delete, as `Kind namespace/name`.
    pub async fn prunable(&self, keep: &BTreeSet<ObjectKey>) -> Result<Vec<String>, ApplyError> {
        Ok(self.stale(keep).await?.iter().map(|(kind, obj)| describe(kind, obj)).collect())
    }

    async fn stale(&self, keep: &BTreeSet<ObjectKey>) -> Result<Vec<(&'static Kind, DynamicObject)>, ApplyError> {
        let selector = format!("{MANAGED_BY_LABEL}=neonctl-aws,{PREFIX_LABEL}={}", self.prefix);
        let mut stale = Vec::new();
        for kind in KINDS.iter().rev().filter(|k| k.prune) {
            let listed = Api::<DynamicObject>::all_with(self.client.clone(), &kind.api_resource())
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(|source| ApplyError::Api { verb: "listing", name: selector.clone(), source })?;
            stale.extend(listed.items.into_iter().filter(|obj| !keep.contains(&ObjectKey::new(kind, obj))).map(|obj| (kind, obj)));
        }
        Ok(stale)
    }
}

/// A component's objects with their kinds, in apply order.
fn sorted(component: &Component) -> Result<Vec<(&'static Kind, &DynamicObject)>, ApplyError> {
    let mut objects = Vec::new();
    for obj in &component.objects {
        let (order, kind) = kind_of(obj)?;
        objects.push((order, kind, obj));
    }
    objects.sort_by_key(|(order, _, obj)| (*order, obj.name_any()));
    Ok(objects.into_iter().map(|(_, kind, obj)| (kind, obj)).collect())
}

/// An object without what the server keeps for itself: status and bookkeeping metadata.
fn comparable(obj: &DynamicObject) -> Value {
    let mut value = serde_json::to_value(obj).unwrap_or(Value::Null);
    if let Some(map) = value.as_object_mut() {
        map.remove("status");
    }
    if let Some(metadata) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in ["managedFields", "resourceVersion", "generation", "creationTimestamp", "uid", "selfLink"] {
            metadata.remove(field);
        }
    }
    value
}

/// The paths (`spec.template.spec.containers[0].image`) where `a` and `b` differ, at most 5.
fn differences(a: &Value, b: &Value) -> Vec<String> {
    const MAX: usize = 5;
    fn walk(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
        if out.len() >= MAX || a == b {
            return;
        }
        let join = |key: &str| if path.is_empty() { key.to_string() } else { format!("{path}.{key}") };
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for key in keys {
                    walk(x.get(key).unwrap_or(&Value::Null), y.get(key).unwrap_or(&Value::Null), &join(key), out);
                }
            }
            (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
                for (i, (x, y)) in x.iter().zip(y).enumerate() {
                    walk(x, y, &format!("{path}[{i}]"), out);
                }
            }
            _ => out.push(if path.is_empty() { "(whole object)".into() } else { path.to_string() }),
        }
    }
    let mut out = Vec::new();
    walk(a, b, "", &mut out);
    out
}

fn describe(kind: &Kind, obj: &DynamicObject) -> String {
    match obj.namespace() {
        Some(ns) => format!("{} {ns}/{}", kind.kind, obj.name_any()),
        None => format!("{} {}", kind.kind, obj.name_any()),
    }
}

/// The conditions of an object that is not ready, one per line, as the API server states them.
fn conditions(obj: &DynamicObject) -> String {
    let listed = obj.data["status"]["conditions"].as_array().cloned().unwrap_or_default();
    if listed.is_empty() {
        return "  no conditions reported yet".into();
    }
    let text = |c: &Value, key: &str| c[key].as_str().unwrap_or_default().to_string();
    listed
        .iter()
        .map(|c| format!("  condition {}={}: {} {}", text(c, "type"), text(c, "status"), text(c, "reason"), text(c, "message")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// (ready, a short progress text) for a CustomResourceDefinition, or a workload at
/// `generation`.
fn readiness(kind: &str, obj: &DynamicObject, generation: i64) -> (bool, String) {
    let status = &obj.data["status"];
    if kind == "CustomResourceDefinition" {
        let established = status["conditions"]
            .as_array()
            .is_some_and(|conditions| conditions.iter().any(|c| c["type"] == "Established" && c["status"] == "True"));
        return (established, if established { "established".into() } else { "not established yet".into() });
    }
    let int = |v: &Value| v.as_i64().unwrap_or(0);
    let want = obj.data["spec"]["replicas"].as_i64().unwrap_or(1);
    let observed = int(&status["observedGeneration"]);
    let ready = match kind {
        "Deployment" => int(&status["availableReplicas"]),
        _ => int(&status["readyReplicas"]),
    };
    let updated = int(&status["updatedReplicas"]);
    let total = int(&status["replicas"]);
    let done = observed >= generation && updated == want && ready == want && total == want;
    let progress = if observed < generation {
        format!("generation {generation} not observed yet (at {observed})")
    } else {
        format!("{ready}/{want} ready, {updated}/{want} updated")
    };
    (done, progress)
}

/// Parses rendered YAML (several documents) into objects.
pub fn parse_manifests(yaml: &str) -> Result<Vec<DynamicObject>, String> {
    let docs: Vec<BTreeMap<String, Value>> = serde_saphyr::from_multiple(yaml).map_err(|e| e.to_string())?;
    docs.into_iter().map(|doc| serde_json::from_value(Value::Object(doc.into_iter().collect())).map_err(|e| e.to_string())).collect()
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use http::{Request, Response};
    use kube::client::Body;
    use serde_json::json;

    use super::*;
    use crate::engine::PhaseName;
    use crate::output::Recorder;

    /// A stand-in API server: answers with `respond` and records every request.
    #[derive(Clone, Default)]
    struct ApiServer {
        log: Arc<Mutex<Vec<(String, String, Value)>>>,
    }

    impl ApiServer {
        fn start(respond: impl Fn(&str, &str, &Value) -> (u16, Value) + Send + 'static) -> (Client, Self) {
            let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
            let server = ApiServer::default();
            let log = server.log.clone();
            tokio::spawn(async move {
                while let Some((request, send)) = handle.next_request().await {
                    let (parts, body) = request.into_parts();
                    let bytes = body.collect_bytes().await.unwrap();
                    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                    let (method, uri) = (parts.method.to_string(), parts.uri.to_string());
                    let (status, reply) = respond(&method, &uri, &body);
                    log.lock().unwrap().push((method, uri, body));
                    send.send_response(Response::builder().status(status).body(Body::from(serde_json::to_vec(&reply).unwrap())).unwrap());
                }
            });
            (Client::new(svc, "neon"), server)
        }

        fn requests(&self) -> Vec<(String, String, Value)> {
            self.log.lock().unwrap().clone()
        }
    }

    fn manifests() -> Vec<Component> {
        let objects = parse_manifests(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: broker, namespace: neon, labels: {app.kubernetes.io/managed-by: neonctl-aws, neonctl-aws/prefix: p}}\n\
             spec: {replicas: 1, selector: {matchLabels: {app: broker}}}\n---\n\
             apiVersion: v1\nkind: Service\nmetadata: {name: broker, namespace: neon}\nspec: {ports: [{port: 50051}]}\n---\n\
             apiVersion: v1\nkind: Namespace\nmetadata: {name: neon}\n",
        )
        .unwrap();
        vec![Component { name: "broker".into(), objects }]
    }

    fn reporter() -> PhaseReporter {
        PhaseReporter::new(PhaseName::Deploy, Arc::new(Recorder::default()))
    }

    /// Applied objects come back with generation 1; status says ready for generation 1.
    fn ready_server(extra: Option<Value>) -> impl Fn(&str, &str, &Value) -> (u16, Value) {
        move |method, uri, body| match method {
            "PATCH" => {
                let mut obj = body.clone();
                obj["metadata"]["generation"] = json!(1);
                (200, obj)
            }
            "GET" if uri.contains("/deployments/broker") => (
                200,
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "broker", "namespace": "neon", "generation": 1},
                       "spec": {"replicas": 1}, "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}}),
            ),
            "GET" if uri.contains("/deployments?") => {
                let items = extra.clone().into_iter().collect::<Vec<_>>();
                (200, json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": items}))
            }
            "GET" => (200, json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": []})),
            "DELETE" => (200, json!({"apiVersion": "v1", "kind": "Status", "status": "Success"})),
            _ => (404, json!({})),
        }
    }

    #[tokio::test]
    async fn applies_in_kind_order_with_server_side_apply() {
        let (client, server) = ApiServer::start(ready_server(None));
        let applier = Applier::new(client, "p");
        let out = applier.roll_out(&manifests(), &reporter()).await.unwrap();
        assert_eq!(out.applied, ["Namespace neon", "Service neon/broker", "Deployment neon/broker"]);
        let patches: Vec<_> = server.requests().into_iter().filter(|r| r.0 == "PATCH").collect();
        let paths: Vec<_> = patches.iter().map(|r| r.1.split('?').next().unwrap().to_string()).collect();
        assert_eq!(
            paths,
            ["/api/v1/namespaces/neon", "/api/v1/namespaces/neon/services/broker", "/apis/apps/v1/namespaces/neon/deployments/broker"]
        );
        for (_, uri, body) in &patches {
            assert!(uri.contains("fieldManager=neonctl-aws") && uri.contains("force=true"), "{uri}");
            assert!(body["apiVersion"].is_string() && body["kind"].is_string(), "SSA bodies carry their type");
        }
    }

    #[tokio::test]
    async fn prunes_only_labelled_objects_it_no_longer_renders() {
        let stale = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "old-proxy", "namespace": "neon"}});
        let kept = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "broker", "namespace": "neon"}});
        let (client, server) = ApiServer::start(ready_server(Some(stale)));
        let applier = Applier::new(client.clone(), "p");
        let out = applier.roll_out(&manifests(), &reporter()).await.unwrap();
        assert_eq!(out.pruned, ["Deployment neon/old-proxy"]);
        let requests = server.requests();
        let lists: Vec<_> = requests.iter().filter(|r| r.0 == "GET" && r.1.contains("labelSelector")).collect();
        assert_eq!(lists.len(), KINDS.iter().filter(|k| k.prune).count(), "every prunable kind is listed once");
        assert!(
            lists.iter().all(|r| r.1.contains("labelSelector=app.kubernetes.io%2Fmanaged-by%3Dneonctl-aws%2Cneonctl-aws%2Fprefix%3Dp")),
            "{lists:?}"
        );
        for kept in ["persistentvolumeclaims", "/api/v1/namespaces?", "customresourcedefinitions", "neonbranches", "neonendpoints"] {
            assert!(!lists.iter().any(|r| r.1.contains(kept)), "{kept} are never pruned");
        }
        let deletes: Vec<_> = requests.iter().filter(|r| r.0 == "DELETE").map(|r| r.1.clone()).collect();
        assert_eq!(deletes, ["/apis/apps/v1/namespaces/neon/deployments/old-proxy?"]);

        // The same object applied again is kept.
        let (client, server) = ApiServer::start(ready_server(Some(kept)));
        Applier::new(client, "p").roll_out(&manifests(), &reporter()).await.unwrap();
        assert!(!server.requests().iter().any(|r| r.0 == "DELETE"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_workload_that_never_gets_ready_times_out_with_diagnostics() {
        let (client, server) = ApiServer::start(|method, uri, body| match method {
            "PATCH" => {
                let mut obj = body.clone();
                obj["metadata"]["generation"] = json!(2);
                (200, obj)
            }
            "GET" if uri.contains("/deployments/broker") => (
                200,
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "broker", "namespace": "neon", "generation": 2},
                       "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "broker"}}},
                       "status": {"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 0}}),
            ),
            "GET" if uri.starts_with("/api/v1/namespaces/neon/pods?") => (
                200,
                json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [{"metadata": {"name": "broker-0"},
                       "status": {"phase": "Running", "containerStatuses": [{"name": "broker", "ready": false, "restartCount": 3, "image": "x", "imageID": "",
                       "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}}}]}}]}),
            ),
            "GET" if uri.starts_with("/api/v1/namespaces/neon/events?") => (
                200,
                json!({"apiVersion": "v1", "kind": "EventList", "metadata": {}, "items": [{"metadata": {"name": "e1"}, "involvedObject": {},
                       "reason": "BackOff", "message": "Back-off restarting failed container"}]}),
            ),
            "GET" if uri.contains("/pods/broker-0/log") => (200, json!("error: listen 0.0.0.0:50051: address in use")),
            _ => (404, json!({})),
        });
        let mut applier = Applier::new(client, "p");
        applier.timeout = Duration::from_secs(30);
        let err = applier.roll_out(&manifests(), &reporter()).await.unwrap_err().to_string();
        assert!(err.starts_with("Deployment neon/broker was not ready after 30s: 0/1 ready, 1/1 updated"), "{err}");
        assert!(err.contains("pod broker-0: Running; broker waiting: CrashLoopBackOff back-off 40s"), "{err}");
        assert!(err.contains("event BackOff: Back-off restarting failed container"), "{err}");
        assert!(err.contains("log broker:"), "{err}");
        let requests = server.requests();
        assert!(requests.iter().any(|r| r.1.contains("labelSelector=app%3Dbroker")), "pods are found by the workload's selector");
        assert!(requests.iter().any(|r| r.1.contains("tailLines=20")));
        assert!(!requests.iter().any(|r| r.0 == "DELETE"), "nothing is pruned after a failed roll-out");
    }

    fn crd_server(established_after: usize) -> impl Fn(&str, &str, &Value) -> (u16, Value) {
        let gets = std::sync::atomic::AtomicUsize::new(0);
        let otherwise = ready_server(None);
        move |method, uri, body| match method {
            "GET" if uri.starts_with("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/neonbranches.neonctl-aws.dev") => {
                let established = gets.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= established_after;
                let conditions = json!([
                    {"type": "NamesAccepted", "status": "False", "reason": "ListKindConflict", "message": "NeonBranchList is already in use"},
                    {"type": "Established", "status": if established { "True" } else { "False" }, "reason": "NotAccepted", "message": "not all names are accepted"},
                ]);
                (
                    200,
                    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                           "metadata": {"name": "neonbranches.neonctl-aws.dev"}, "status": {"conditions": conditions}}),
                )
            }
            _ => otherwise(method, uri, body),
        }
    }

    fn crds() -> Vec<Component> {
        let yaml = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: neonbranches.neonctl-aws.dev}\n";
        vec![Component { name: "crds".into(), objects: parse_manifests(yaml).unwrap() }]
    }

    #[tokio::test(start_paused = true)]
    async fn a_crd_is_established_before_anything_else_is_applied() {
        let (client, server) = ApiServer::start(crd_server(2));
        let mut components = crds();
        components.extend(manifests());
        let out = Applier::new(client, "p").roll_out(&components, &reporter()).await.unwrap();
        assert_eq!(out.applied[0], "CustomResourceDefinition neonbranches.neonctl-aws.dev");
        let requests = server.requests();
        let polls = requests.iter().filter(|r| r.0 == "GET" && r.1.contains("/customresourcedefinitions/")).count();
        assert_eq!(polls, 3, "polled until Established");
        let first_namespace_patch = requests.iter().position(|r| r.0 == "PATCH" && r.1.starts_with("/api/v1/namespaces/neon")).unwrap();
        let last_poll = requests.iter().rposition(|r| r.1.contains("/customresourcedefinitions/")).unwrap();
        assert!(last_poll < first_namespace_patch, "nothing else is applied before the CRD is established");
    }

    #[tokio::test(start_paused = true)]
    async fn a_crd_that_is_never_established_times_out_with_its_conditions() {
        let (client, _server) = ApiServer::start(crd_server(usize::MAX));
        let mut applier = Applier::new(client, "p");
        applier.timeout = Duration::from_secs(30);
        let err = applier.roll_out(&crds(), &reporter()).await.unwrap_err().to_string();
        assert!(
            err.starts_with("CustomResourceDefinition neonbranches.neonctl-aws.dev was not ready after 30s: not established yet"),
            "{err}"
        );
        assert!(err.contains("condition NamesAccepted=False: ListKindConflict NeonBranchList is already in use"), "{err}");
    }

    #[tokio::test]
    async fn diff_compares_a_dry_run_apply_with_the_live_object_and_changes_nothing() {
        let not_found =
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"});
        let (client, server) = ApiServer::start(move |method, uri, body| match method {
            "GET" if uri.contains("/services/broker") => (404, not_found.clone()),
            "GET" if uri.contains("/deployments/broker") => (
                200,
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "broker", "namespace": "neon", "resourceVersion": "7",
                       "generation": 3, "labels": {"app.kubernetes.io/managed-by": "neonctl-aws", "neonctl-aws/prefix": "p"}},
                       "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "broker"}}}, "status": {"replicas": 2}}),
            ),
            "GET" => (200, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "neon", "resourceVersion": "1"}})),
            // What the server would store: the body plus its own bookkeeping.
            "PATCH" => {
                let mut obj = body.clone();
                obj["metadata"]["resourceVersion"] = json!("8");
                obj["metadata"]["managedFields"] = json!([{"manager": "neonctl-aws"}]);
                obj["status"] = json!({"replicas": 1});
                (200, obj)
            }
            _ => (405, json!({})),
        });
        let changes = Applier::new(client, "p").diff(&manifests()).await.unwrap();
        let summary: Vec<(String, Change)> = changes.into_iter().map(|c| (c.object, c.change)).collect();
        assert_eq!(
            summary,
            [
                ("Namespace neon".to_string(), Change::Unchanged),
                ("Service neon/broker".to_string(), Change::Create),
                ("Deployment neon/broker".to_string(), Change::Update(vec!["spec.replicas".into()])),
            ]
        );
        let patches: Vec<_> = server.requests().into_iter().filter(|r| r.0 == "PATCH").collect();
        assert_eq!(patches.len(), 2, "a dry run for each object that exists");
        assert!(patches.iter().all(|r| r.1.contains("dryRun=All")), "{patches:?}");
    }

    #[test]
    fn differences_name_the_changed_paths() {
        let a = json!({"spec": {"containers": [{"image": "x:1", "name": "c"}], "replicas": 1}, "kind": "Deployment"});
        let b = json!({"spec": {"containers": [{"image": "x:2", "name": "c"}], "replicas": 1, "paused": true}, "kind": "Deployment"});
        assert_eq!(differences(&a, &b), ["spec.containers[0].image", "spec.paused"]);
        assert!(differences(&a, &a).is_empty());
        let c = json!({"spec": {"containers": [], "replicas": 1}});
        assert_eq!(differences(&a, &c), ["kind", "spec.containers"]);
    }

    #[test]
    fn readiness_needs_the_new_generation() {
        let obj: DynamicObject = serde_json::from_value(json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "s"},
            "spec": {"replicas": 3}, "status": {"observedGeneration": 1, "replicas": 3, "readyReplicas": 3, "updatedReplicas": 3}}))
        .unwrap();
        assert_eq!(readiness("StatefulSet", &obj, 1), (true, "3/3 ready, 3/3 updated".into()));
        assert!(!readiness("StatefulSet", &obj, 2).0);
    }

    #[test]
    fn every_rendered_object_is_a_kind_the_applier_knows() {
        let inputs = crate::render::RenderInputs::from_config(&crate::config::Config::default());
        for manifest in crate::render::render(&inputs).unwrap() {
            for obj in parse_manifests(&manifest.yaml).unwrap() {
                kind_of(&obj).unwrap_or_else(|e| panic!("{}: {e}", manifest.file));
            }
        }
    }

    #[test]
    fn unknown_kinds_are_refused() {
        let objs = parse_manifests("apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: x}\n").unwrap();
        assert!(matches!(kind_of(&objs[0]), Err(ApplyError::UnknownKind { .. })));
    }
}
