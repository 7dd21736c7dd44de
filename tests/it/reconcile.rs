//! The control plane's reconciler and Kubernetes store, in process: NeonBranch and NeonEndpoint
//! objects in the Kubernetes API stand-in, a storage controller stand-in that answers (and
//! checks tokens) like neon's, and the compute_ctl stand-in of `controlplane.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use neonctl_aws::neon::control_plane::{Node, Topology};
use neonctl_contract::jwt::{PublicKey, SigningKey};
use neonctl_contract::scram;
use neonctl_contract::service::StorageStatus;
use neonctl_control_plane::kube_store::{KubeStore, STATUS_KEY};
use neonctl_control_plane::{ControlPlane, Keys, NAMESPACE_ENV, Retry, Running, SERVE_ARGS, STATUS_CONFIG_MAP_ENV, Scaling, scopes};
use serde_json::{Value, json};

use crate::controlplane::{StandIn, StandInComputes, TENANT, TIMELINE, call, compute_template, jwt_claims, key_pem, node};
use crate::fake_kube::FakeKube;
use crate::stand_ins::free_port;
use crate::support::{Workdir, json_events, stderr, stdout};

const API_VERSION: &str = "neonctl-aws.dev/v1alpha1";
const NAMESPACE: &str = "neon";
const STATUS_CONFIG_MAP: &str = "neon-control-plane-status";
const CHILD_TIMELINE: &str = "0c5e4ff6a1b2c3d4e5f60718293a4b5c";

// ---- A storage controller stand-in ----------------------------------------------------------

/// One call the stand-in received.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Call {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) body: Value,
    /// The `scope` claim of the bearer token; `None` without one.
    scope: Option<String>,
}

/// A timeline as the stand-in keeps it.
#[derive(Debug, Clone, PartialEq)]
struct Timeline {
    pg_version: u64,
    ancestor: Option<String>,
    /// Its safekeepers and membership generation (`--timelines-onto-safekeepers`).
    safekeepers: Vec<u64>,
    generation: u32,
    /// Its logical size in bytes (a child starts with its parent's).
    size: u64,
}

#[derive(Default)]
struct Storage {
    calls: Vec<Call>,
    /// By tenant id: its timelines.
    tenants: BTreeMap<String, BTreeMap<String, Timeline>>,
    /// Registered safekeepers and their zones.
    safekeepers: BTreeMap<u64, String>,
    active: BTreeSet<u64>,
    /// Answer every call with this status (a broken or busy controller).
    fail: Option<StatusCode>,
    /// The pageserver answers timeline creations with this status and message (passed on as
    /// neon's controller does).
    pageserver_fails: Option<(StatusCode, String)>,
    /// The control plane's hooks (`…/storage`): a new tenant is attached to pageserver 1 there
    /// before the creation is answered, as neon's controller does.
    hooks: Option<String>,
    /// What the `notify-attach` calls answered.
    hook_answers: Vec<StatusCode>,
    /// By timeline id: the oldest time the pageserver keeps history for (its PITR horizon) and
    /// the commits it knows, `(time, lsn)` in order.
    history: BTreeMap<String, (time::OffsetDateTime, Vec<(time::OffsetDateTime, String)>)>,
}

/// The scopes neon's `storage_controller/src/http.rs` accepts on each route: the one
/// `check_permissions` names, or `admin`.
fn allowed_scopes(method: &Method, path: &str) -> &'static [&'static str] {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method.as_str(), parts.as_slice()) {
        ("POST", ["control", "v1", "safekeeper", _]) | ("GET", ["control", "v1", "node"]) => &["infra", "admin"],
        ("POST", ["control", "v1", "safekeeper", _, "scheduling_policy"]) => &["admin"],
        ("GET", ["control", "v1", "tenant", _]) => &["scrubber", "admin"],
        ("POST", ["v1", "tenant"]) | ("POST", ["v1", "tenant", _, "timeline"]) => &["pageserverapi", "admin"],
        // `handle_tenant_timeline_safekeeper_migrate`.
        ("POST", ["v1", "tenant", _, "timeline", _, "safekeeper_migrate"]) => &["pageserverapi", "admin"],
        // `handle_tenant_timeline_passthrough` for `/v1/tenant/:tenant_id/*` GETs.
        ("GET", ["v1", "tenant", _, "timeline", _, "get_lsn_by_timestamp"]) | ("GET", ["v1", "tenant", _, "timeline", _]) => {
            &["pageserverapi", "admin"]
        }
        // `handle_tenant_timeline_delete`, `handle_tenant_delete`.
        ("DELETE", ["v1", "tenant", _, "timeline", _]) | ("DELETE", ["v1", "tenant", _]) => &["pageserverapi", "admin"],
        _ => panic!("the stand-in does not serve {method} {path}"),
    }
}

pub(crate) struct StorageController {
    addr: SocketAddr,
    storage: Arc<Mutex<Storage>>,
}

impl StorageController {
    /// With `verify`, tokens are checked like neon does (signature, expiry, scope or admin).
    pub(crate) async fn start(verify: Option<PublicKey>, hook_key: Option<Arc<SigningKey>>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let storage = Arc::new(Mutex::new(Storage::default()));
        let served = storage.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (storage, verify, hook_key) = (served.clone(), verify.clone(), hook_key.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let (storage, verify, hook_key) = (storage.clone(), verify.clone(), hook_key.clone());
                        async move { Ok::<_, std::convert::Infallible>(answer(request, &storage, verify, hook_key).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Self { addr, storage }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub(crate) fn calls(&self) -> Vec<Call> {
        self.storage.lock().unwrap().calls.clone()
    }

    /// Where the control plane's storage hooks (`…/storage`) are.
    pub(crate) fn set_hooks(&self, url: String) {
        self.storage.lock().unwrap().hooks = Some(url);
    }

    pub(crate) fn clear_calls(&self) {
        self.storage.lock().unwrap().calls.clear();
    }

    fn fail_with(&self, status: Option<StatusCode>) {
        self.storage.lock().unwrap().fail = status;
    }

    /// The commits the pageserver knows on `timeline`, and the oldest time it keeps.
    fn set_history(&self, timeline: &str, horizon: &str, commits: &[(&str, &str)]) {
        let at = |text: &str| time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).unwrap();
        let commits = commits.iter().map(|(when, lsn)| (at(when), lsn.to_string())).collect();
        self.storage.lock().unwrap().history.insert(timeline.to_string(), (at(horizon), commits));
    }

    fn pageserver_fails_with(&self, failure: Option<(StatusCode, &str)>) {
        self.storage.lock().unwrap().pageserver_fails = failure.map(|(status, message)| (status, message.to_string()));
    }
}

/// How neon's controller passes a pageserver's error on: always 409 Conflict, the pageserver's
/// status and message inside (`passthrough_api_error`, `storage_controller/src/service.rs`;
/// `Conflict: ` is `ApiError::Conflict`'s display, `libs/http-utils/src/error.rs`; the node is
/// `{id} ({listen_http_addr})`, `storage_controller/src/node.rs`).
fn passed_on(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    error(StatusCode::CONFLICT, &format!("Conflict: 1 (ps-1) {status}: {status} {message}"))
}

/// The safekeepers neon's controller picks for a new timeline (`safekeepers_for_new_timeline`,
/// `storage_controller/src/service/safekeeper_service.rs`): active ones, fewest timelines
/// first, then by id, one per zone, exactly `--timeline-safekeeper-count` (3) or a 500.
fn place(storage: &Storage) -> Result<Vec<u64>, String> {
    const WANTED: usize = 3;
    let load = |id: u64| storage.tenants.values().flat_map(|t| t.values()).filter(|t| t.safekeepers.contains(&id)).count();
    let mut active: Vec<u64> = storage.active.iter().copied().collect();
    active.sort_by_key(|&id| (load(id), id));
    let (mut chosen, mut zones) = (Vec::new(), BTreeSet::new());
    for id in &active {
        if zones.insert(storage.safekeepers[id].clone()) {
            chosen.push(*id);
        }
        if chosen.len() == WANTED {
            return Ok(chosen);
        }
    }
    Err(format!(
        "couldn't find {WANTED} safekeepers in different AZs for new timeline (found: {}, total active: {})",
        chosen.len(),
        active.len()
    ))
}

/// `SafekeepersInfo` (`libs/pageserver_api/src/models.rs`).
fn safekeepers_info(tenant: &str, timeline: &str, generation: u32, ids: &[u64]) -> Value {
    json!({"tenant_id": tenant, "timeline_id": timeline, "generation": generation,
           "safekeepers": ids.iter().map(|id| json!({"id": id, "hostname": format!("sk-{id}")})).collect::<Vec<_>>()})
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    Response::builder().status(status).body(Full::new(Bytes::from(body.to_string()))).unwrap()
}

/// neon's error body.
fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    reply(status, json!({"msg": message}))
}

async fn answer(
    request: Request<Incoming>,
    storage: &Mutex<Storage>,
    verify: Option<PublicKey>,
    hook_key: Option<Arc<SigningKey>>,
) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body: Value = serde_json::from_slice(&body.collect().await.unwrap().to_bytes()).unwrap_or(Value::Null);
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or_default().to_string();
    let header = parts.headers.get("authorization").map(|v| v.to_str().unwrap().to_string());
    let scope =
        header.as_deref().and_then(|h| h.strip_prefix("Bearer ")).map(|token| jwt_claims(token)["scope"].as_str().unwrap().to_string());
    let method = parts.method;
    // What is left to do once the lock is released: the control plane's hooks are called.
    let pending = {
        let mut storage = storage.lock().unwrap();
        storage.calls.push(Call { method: method.clone(), path: path.clone(), body: body.clone(), scope });
        if let Some(status) = storage.fail {
            return error(status, "injected failure");
        }
        if let Some(key) = &verify
            && let Err(e) = key.authorize(header.as_deref(), allowed_scopes(&method, &path))
        {
            return error(StatusCode::FORBIDDEN, &e.to_string());
        }
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (method.as_str(), parts.as_slice()) {
            ("POST", ["control", "v1", "safekeeper", id]) => {
                assert_eq!(body["id"].as_u64().unwrap().to_string(), *id, "SafekeeperUpsert repeats the id");
                let zone = body["availability_zone_id"].as_str().expect("SafekeeperUpsert names the zone").to_string();
                storage.safekeepers.insert(id.parse().unwrap(), zone);
                return reply(StatusCode::NO_CONTENT, Value::Null);
            }
            ("POST", ["control", "v1", "safekeeper", id, "scheduling_policy"]) => {
                let id: u64 = id.parse().unwrap();
                if !storage.safekeepers.contains_key(&id) {
                    return error(StatusCode::NOT_FOUND, "unknown safekeeper");
                }
                assert_eq!(body, json!({"scheduling_policy": "Active"}));
                storage.active.insert(id);
                return reply(StatusCode::OK, Value::Null);
            }
            ("GET", ["control", "v1", "node"]) => {
                return reply(
                    StatusCode::OK,
                    json!([{"id": 1, "availability": "Active", "scheduling": "Active", "availability_zone_id": "az-a",
                            "listen_http_addr": "ps-1", "listen_http_port": 9898, "listen_https_port": null,
                            "listen_pg_addr": "ps-1", "listen_pg_port": 6400, "listen_grpc_addr": null, "listen_grpc_port": null}]),
                );
            }
            ("GET", ["control", "v1", "tenant", tenant]) => {
                return match storage.tenants.contains_key(*tenant) {
                    true => reply(StatusCode::OK, json!({"tenant_id": tenant, "shards": []})),
                    false => error(StatusCode::NOT_FOUND, &format!("Tenant {tenant} not found")),
                };
            }
            ("POST", ["v1", "tenant"]) => {
                let tenant = body["new_tenant_id"].as_str().unwrap().to_string();
                storage.tenants.entry(tenant.clone()).or_default();
                match storage.hooks.clone() {
                    Some(hooks) => Pending::Attach { hooks, tenant },
                    None => Pending::Nothing,
                }
            }
            ("POST", ["v1", "tenant", tenant, "timeline"]) => {
                let Some(timelines) = storage.tenants.get(*tenant) else {
                    return error(StatusCode::NOT_FOUND, &format!("Tenant {tenant} not found"));
                };
                let timeline = body["new_timeline_id"].as_str().unwrap().to_string();
                let (pg_version, ancestor) =
                    (body["pg_version"].as_u64().unwrap(), body["ancestor_timeline_id"].as_str().map(str::to_string));
                if let Some(ancestor) = &ancestor
                    && !timelines.contains_key(ancestor)
                {
                    return error(StatusCode::NOT_FOUND, &format!("ancestor timeline {ancestor} not found"));
                }
                if let Some((status, message)) = &storage.pageserver_fails {
                    return passed_on(*status, message);
                }
                // The pageserver: "Recreating the same timeline will succeed if the parameters
                // match" (`timeline_create_handler`, `pageserver/src/http/routes.rs`).
                let existing = timelines.get(&timeline).cloned();
                if let Some(existing) = &existing
                    && (existing.pg_version, &existing.ancestor) != (pg_version, &ancestor)
                {
                    return passed_on(StatusCode::CONFLICT, "timeline already exists with different parameters");
                }
                // The controller keeps the first placement (`tenant_timeline_create_safekeepers`).
                let created = match existing {
                    Some(existing) => existing,
                    None => {
                        let safekeepers = match place(&storage) {
                            Ok(ids) => ids,
                            Err(message) => return error(StatusCode::INTERNAL_SERVER_ERROR, &message),
                        };
                        // initdb's cluster is about 22 MiB (Postgres 17); a branch shares its parent's data.
                        let size = ancestor.as_ref().and_then(|a| timelines.get(a)).map_or(22 << 20, |parent| parent.size);
                        Timeline { pg_version, ancestor, safekeepers, generation: 1, size }
                    }
                };
                storage.tenants.get_mut(*tenant).unwrap().insert(timeline.clone(), created.clone());
                let info = safekeepers_info(tenant, &timeline, created.generation, &created.safekeepers);
                return reply(
                    StatusCode::CREATED,
                    json!({"tenant_id": tenant, "timeline_id": timeline, "pg_version": pg_version, "safekeepers": info}),
                );
            }
            ("POST", ["v1", "tenant", tenant, "timeline", timeline, "safekeeper_migrate"]) => {
                let Some(current) = storage.tenants.get(*tenant).and_then(|t| t.get(*timeline)).cloned() else {
                    return error(StatusCode::NOT_FOUND, "timeline not found");
                };
                let new: Vec<u64> = serde_json::from_value(body["new_sk_set"].clone()).expect("TimelineSafekeeperMigrateRequest");
                if let Some(unknown) = new.iter().find(|id| !storage.safekeepers.contains_key(id)) {
                    return error(StatusCode::BAD_REQUEST, &format!("safekeeper {unknown} not found"));
                }
                // The joint configuration first (both sets), then the new one, each announced
                // to the control plane (`tenant_timeline_safekeeper_migrate`,
                // `cplane_notify_safekeepers`).
                let mut joint = current.safekeepers.clone();
                joint.extend(new.iter().filter(|id| !current.safekeepers.contains(id)));
                let steps = vec![(current.generation + 1, joint), (current.generation + 2, new.clone())];
                let entry = storage.tenants.get_mut(*tenant).unwrap().get_mut(*timeline).unwrap();
                entry.safekeepers = new;
                entry.generation = current.generation + 2;
                let Some(hooks) = storage.hooks.clone() else { return reply(StatusCode::OK, Value::Null) };
                Pending::Migrate { hooks, tenant: tenant.to_string(), timeline: timeline.to_string(), steps }
            }
            // The pageserver's `get_lsn_by_timestamp_handler` (`pageserver/src/http/routes.rs`), as
            // `find_lsn_for_timestamp` (`pgdatadir_mapping.rs`) classifies the time: `nodata`
            // without any commit, `past` before the history kept, `future` after the last
            // commit (its LSN), else `present` (the last commit at or before the time).
            ("GET", ["v1", "tenant", tenant, "timeline", timeline, "get_lsn_by_timestamp"]) => {
                if !storage.tenants.get(*tenant).is_some_and(|t| t.contains_key(*timeline)) {
                    return error(StatusCode::NOT_FOUND, "timeline not found");
                }
                let raw = form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "timestamp").map(|(_, v)| v.into_owned());
                let Some(at) = raw.and_then(|raw| time::OffsetDateTime::parse(&raw, &time::format_description::well_known::Rfc3339).ok())
                else {
                    return error(StatusCode::BAD_REQUEST, "Invalid time");
                };
                let (horizon, commits) = storage.history.get(*timeline).cloned().unwrap_or((time::OffsetDateTime::UNIX_EPOCH, Vec::new()));
                let (lsn, kind) = match (commits.first(), commits.iter().rev().find(|(when, _)| *when <= at)) {
                    (None, _) => ("0/14EE2F0".to_string(), "nodata"),
                    (Some((_, first)), _) if at < horizon => (first.clone(), "past"),
                    (Some((_, first)), None) => (first.clone(), "past"),
                    (Some(_), Some((_, lsn))) if commits.last().is_some_and(|(when, _)| *when <= at) => (lsn.clone(), "future"),
                    (Some(_), Some((_, lsn))) => (lsn.clone(), "present"),
                };
                return reply(StatusCode::OK, json!({"lsn": lsn, "kind": kind}));
            }
            // The pageserver's `timeline_detail_handler` (`pageserver/src/http/routes.rs`) through
            // the controller's pass-through: `TimelineInfo` (`libs/pageserver_api/src/models.rs`),
            // whose `current_logical_size` is an estimate until computed, unless the caller asked
            // it to wait (`force-await-initial-logical-size`); 404 for a timeline it lacks.
            ("GET", ["v1", "tenant", tenant, "timeline", timeline]) => {
                let Some(found) = storage.tenants.get(*tenant).and_then(|t| t.get(*timeline)) else {
                    return error(StatusCode::NOT_FOUND, "timeline not found");
                };
                let waited = form_urlencoded::parse(query.as_bytes()).any(|(k, v)| k == "force-await-initial-logical-size" && v == "true");
                return reply(
                    StatusCode::OK,
                    json!({
                        "tenant_id": tenant,
                        "timeline_id": timeline,
                        "ancestor_timeline_id": found.ancestor,
                        "current_logical_size": if waited { found.size } else { found.size / 2 },
                        "current_logical_size_is_accurate": waited,
                        "pg_version": found.pg_version,
                        "state": "Active",
                    }),
                );
            }
            // `tenant_timeline_delete` (`storage_controller/src/service.rs`): 404 for a tenant it
            // does not know; the pageserver refuses a timeline with children (412, `HasChildren`
            // in `pageserver/src/http/routes.rs`), which the controller turns into a 500; the
            // pageserver's 404 for a timeline already gone becomes 200 (`deletion_wrapper`).
            ("DELETE", ["v1", "tenant", tenant, "timeline", timeline]) => {
                let Some(timelines) = storage.tenants.get_mut(*tenant) else {
                    return error(StatusCode::NOT_FOUND, "Tenant not found");
                };
                let children: Vec<&String> =
                    timelines.iter().filter(|(_, t)| t.ancestor.as_deref() == Some(*timeline)).map(|(id, _)| id).collect();
                if !children.is_empty() {
                    return error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &format!(
                            "Error deleting timeline {timeline} on {tenant} on node 1: Precondition failed: Cannot delete timeline which has child timelines: {children:?}"
                        ),
                    );
                }
                timelines.remove(*timeline);
                return reply(StatusCode::OK, Value::Null);
            }
            // `handle_tenant_delete`: the pageserver's 404 (deleted) becomes 200.
            ("DELETE", ["v1", "tenant", tenant]) => {
                return match storage.tenants.remove(*tenant) {
                    Some(_) => reply(StatusCode::OK, Value::Null),
                    None => error(StatusCode::NOT_FOUND, &format!("Tenant {tenant} not found")),
                };
            }
            _ => return error(StatusCode::NOT_FOUND, "no such route"),
        }
    };
    let hook = |hooks: &str, name: &str, body: Value| {
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let mut request = Request::put(format!("{hooks}/{name}")).header("content-type", "application/json");
        if let Some(key) = &hook_key {
            request = request.header("authorization", format!("Bearer {}", key.sign(&json!({"scope": scopes::STORAGE_CONTROLLER})).0));
        }
        let request = request.body(Full::new(Bytes::from(body.to_string()))).unwrap();
        async move {
            match tokio::time::timeout(Duration::from_secs(5), client.request(request)).await {
                Ok(Ok(response)) => response.status(),
                _ => StatusCode::GATEWAY_TIMEOUT,
            }
        }
    };
    match pending {
        Pending::Nothing => reply(StatusCode::CREATED, json!({"shards": [{"shard_id": "x", "node_id": 1, "generation": 1}]})),
        // A new tenant: attach it through the control plane's hook before answering.
        Pending::Attach { hooks, tenant } => {
            let notify =
                json!({"tenant_id": tenant, "preferred_az": "az-a", "stripe_size": null, "shards": [{"node_id": 1, "shard_number": 0}]});
            let status = hook(&hooks, "notify-attach", notify).await;
            storage.lock().unwrap().hook_answers.push(status);
            reply(StatusCode::CREATED, json!({"shards": [{"shard_id": "x", "node_id": 1, "generation": 1}]}))
        }
        // A migration succeeds only once the control plane took each configuration.
        Pending::Migrate { hooks, tenant, timeline, steps } => {
            for (generation, ids) in steps {
                let status = hook(&hooks, "notify-safekeepers", safekeepers_info(&tenant, &timeline, generation, &ids)).await;
                storage.lock().unwrap().hook_answers.push(status);
                if !status.is_success() {
                    return error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &format!("failed to notify cplane about safekeeper membership change: {status}"),
                    );
                }
            }
            reply(StatusCode::OK, Value::Null)
        }
    }
}

enum Pending {
    Nothing,
    Attach { hooks: String, tenant: String },
    Migrate { hooks: String, tenant: String, timeline: String, steps: Vec<(u32, Vec<u64>)> },
}

// ---- The custom resources -------------------------------------------------------------------

fn branch(name: &str, timeline: &str, parent: Option<&str>) -> Value {
    let mut spec = json!({
        "projectId": "proj",
        "tenantId": TENANT,
        "timelineId": timeline,
        "pgVersion": 17,
        "roles": [{"name": "alice", "verifier": scram::verifier("correct horse battery staple").0}],
        "databases": [{"name": "neondb", "owner": "alice"}],
    });
    if let Some(parent) = parent {
        spec["parentTimelineId"] = json!(parent);
    }
    json!({"apiVersion": API_VERSION, "kind": "NeonBranch", "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec})
}

fn endpoint(name: &str, branch: &str) -> Value {
    json!({"apiVersion": API_VERSION, "kind": "NeonEndpoint", "metadata": {"name": name, "namespace": NAMESPACE}, "spec": {"branch": branch}})
}

fn status_of(kube: &FakeKube, name: &str) -> Value {
    kube.get(API_VERSION, "neonbranches", Some(NAMESPACE), name).unwrap_or_else(|| panic!("NeonBranch {name}"))["status"].clone()
}

fn storage_status(kube: &FakeKube) -> StorageStatus {
    let map = kube.get("v1", "configmaps", Some(NAMESPACE), STATUS_CONFIG_MAP).expect("the status ConfigMap");
    assert!(map["metadata"]["labels"].get("app.kubernetes.io/managed-by").is_none(), "deploy would prune it");
    serde_json::from_str(map["data"][STATUS_KEY].as_str().unwrap()).unwrap()
}

// ---- The control plane ----------------------------------------------------------------------

/// `count` safekeepers, each in a zone of its own (the storage controller places a timeline on
/// three in different zones).
pub(crate) fn safekeepers(count: u64) -> Vec<Node> {
    (1..=count).map(|id| Node { availability_zone: format!("az-{id}"), ..node("sk", id, 5454) }).collect()
}

pub(crate) struct Harness {
    pub(crate) kube: Arc<FakeKube>,
    pub(crate) storcon: StorageController,
    /// compute_ctl of endpoint `main`.
    compute: StandIn,
    /// Where each endpoint's compute is.
    pub(crate) computes: Arc<StandInComputes>,
    signing: Option<Arc<SigningKey>>,
    pub(crate) pem: Option<String>,
    safekeepers: u64,
}

impl Harness {
    /// `auth`: a key pair; the stand-in storage controller then checks tokens.
    pub(crate) async fn start(auth: bool) -> Self {
        let pem = auth.then(key_pem);
        let signing = pem.as_deref().map(|pem| Arc::new(SigningKey::from_pem(pem).unwrap()));
        let storcon = StorageController::start(signing.as_ref().map(|key| key.public_key()), signing.clone()).await;
        let kube = Arc::new(FakeKube::start().await);
        kube.put_object(branch("main", TIMELINE, None));
        kube.put_object(endpoint("main", "main"));
        let compute = StandIn::start().await;
        let computes = StandInComputes::with("main", "compute-main:55432", compute.addr);
        Self { kube, storcon, compute, computes, signing, pem, safekeepers: 3 }
    }

    fn topology(&self) -> Topology {
        Topology {
            listen: "127.0.0.1:0".into(),
            region: "us-east-1".into(),
            storage_controller_url: self.storcon.url(),
            pageservers: (1..=2).map(|id| node("ps", id, 6400)).collect(),
            safekeepers: safekeepers(self.safekeepers),
            compute: compute_template(),
        }
    }

    /// A control plane on the fake cluster, serving; rounds run when the test says.
    pub(crate) async fn control_plane(&self) -> (Arc<ControlPlane>, Running) {
        self.control_plane_with(Scaling::default()).await
    }

    async fn control_plane_with(&self, scaling: Scaling) -> (Arc<ControlPlane>, Running) {
        let keys = match &self.pem {
            Some(pem) => {
                Keys { verify: Some(SigningKey::from_pem(pem).unwrap().public_key()), sign: Some(SigningKey::from_pem(pem).unwrap()) }
            }
            None => Keys::default(),
        };
        let store = KubeStore::new(self.kube.client(), NAMESPACE, STATUS_CONFIG_MAP);
        let retry = Retry { first_delay: Duration::from_millis(20), deadline: Duration::from_millis(500) };
        let control_plane = ControlPlane::new(self.topology(), keys, Box::new(store), retry).await.unwrap();
        let control_plane = Arc::new(control_plane.with_compute_addresses(self.computes.clone()).with_scaling(scaling));
        let running = control_plane.clone().start("127.0.0.1:0", None).await.unwrap();
        self.storcon.set_hooks(format!("http://{}/storage", running.addr()));
        (control_plane, running)
    }

    /// A control plane on the fake cluster with its operator running, as `serve` runs it.
    pub(crate) async fn running_operator(&self) -> Running {
        self.running_operator_with(Scaling::default()).await
    }

    /// The same, pacing scale to zero as `scaling` says.
    pub(crate) async fn running_operator_with(&self, scaling: Scaling) -> Running {
        let (control_plane, first) = self.control_plane_with(scaling).await;
        first.stop().await;
        let every = Duration::from_millis(200);
        let running = control_plane.start("127.0.0.1:0", Some(neonctl_control_plane::Reconciling { every, election: None })).await.unwrap();
        self.storcon.set_hooks(format!("http://{}/storage", running.addr()));
        running
    }

    /// A workdir whose config names this deployment, and the kubeconfig of the fake cluster.
    pub(crate) fn cli_workdir(&self) -> (Workdir, String) {
        let wd = Workdir::new();
        std::fs::write(wd.path().join("neonctl-aws.yaml"), format!("prefix: {NAMESPACE}\n")).unwrap();
        let kubeconfig = self.kube.kubeconfig(wd.path()).display().to_string();
        (wd, kubeconfig)
    }

    fn token(&self, scope: &str) -> Option<String> {
        self.signing.as_ref().map(|key| key.sign(&json!({"scope": scope})).0)
    }

    async fn spec(&self, server: &Running) -> Value {
        let (status, body) =
            call(server, Method::GET, "/compute/api/v2/computes/main/spec", self.token(scopes::COMPUTE).as_deref(), None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }
}

fn paths(calls: &[Call]) -> Vec<String> {
    calls.iter().map(|c| format!("{} {}", c.method, c.path)).collect()
}

#[tokio::test]
async fn a_round_creates_tenant_and_timeline_marks_the_branch_ready_and_attaches_the_waiting_compute() {
    let harness = Harness::start(true).await;
    let (control_plane, server) = harness.control_plane().await;
    assert_eq!(harness.spec(&server).await["status"], "empty", "the compute waits until the timeline exists");

    control_plane.reconcile().await;

    let calls = harness.storcon.calls();
    let scoped: Vec<(String, Option<String>)> = calls.iter().map(|c| (format!("{} {}", c.method, c.path), c.scope.clone())).collect();
    let expected = [
        ("POST /control/v1/safekeeper/1", "infra"),
        ("POST /control/v1/safekeeper/1/scheduling_policy", "admin"),
        ("POST /control/v1/safekeeper/2", "infra"),
        ("POST /control/v1/safekeeper/2/scheduling_policy", "admin"),
        ("POST /control/v1/safekeeper/3", "infra"),
        ("POST /control/v1/safekeeper/3/scheduling_policy", "admin"),
        (&format!("GET /control/v1/tenant/{TENANT}"), "scrubber"),
        ("POST /v1/tenant", "pageserverapi"),
        (&format!("POST /v1/tenant/{TENANT}/timeline"), "pageserverapi"),
        (&format!("GET /v1/tenant/{TENANT}/timeline/{TIMELINE}"), "pageserverapi"),
        ("GET /control/v1/node", "infra"),
    ]
    .map(|(path, scope)| (path.to_string(), Some(scope.to_string())));
    assert_eq!(scoped, expected, "each call carries exactly the scope neon checks on its route");
    let upsert = &calls[0].body;
    assert_eq!(upsert["host"], "sk-1");
    assert_eq!((&upsert["port"], &upsert["http_port"], &upsert["region_id"]), (&json!(5454), &json!(1), &json!("us-east-1")));
    assert_eq!(calls[7].body, json!({"new_tenant_id": TENANT}));
    assert_eq!(calls[8].body, json!({"new_timeline_id": TIMELINE, "pg_version": 17}));
    assert_eq!(harness.storcon.storage.lock().unwrap().active, BTreeSet::from([1, 2, 3]));
    assert_eq!(harness.storcon.storage.lock().unwrap().hook_answers, [StatusCode::OK], "the hook answered while the tenant was created");

    let status = status_of(&harness.kube, "main");
    assert_eq!(status["phase"], "Ready");
    assert_eq!(status["observedGeneration"], 1);
    let ready = &status["conditions"][0];
    assert_eq!(
        (ready["type"].as_str(), ready["status"].as_str(), ready["reason"].as_str()),
        (Some("Ready"), Some("True"), Some("TimelineReady"))
    );
    assert_eq!(ready["observedGeneration"], 1);
    assert!(status.get("message").is_none(), "{status}");
    assert_eq!(status["attachment"], json!({"pageservers": [1]}), "the controller's notify-attach is kept in the branch");
    assert_eq!(status["logicalSize"], 22 << 20, "the pageserver's size once computed, for `branches list`");

    let configure = harness.compute.configures().pop().expect("the waiting compute got its spec");
    assert_eq!(configure.body["spec"]["tenant_id"], TENANT);
    assert_eq!(configure.body["spec"]["timeline_id"], TIMELINE);
    assert_eq!(configure.body["spec"]["pageserver_connstring"], "postgresql://no_user@ps-1:6400");
    // The safekeepers the controller chose for the timeline, with their generation: what
    // compute_ctl writes as `neon.safekeepers='g#1:…'`.
    assert_eq!(configure.body["spec"]["safekeeper_connstrings"], json!(["sk-1:5454", "sk-2:5454", "sk-3:5454"]));
    assert_eq!(configure.body["spec"]["safekeepers_generation"], 1);
    assert_eq!(status["safekeepers"], json!({"generation": 1, "ids": [1, 2, 3]}), "kept in the branch");
    assert_eq!(harness.spec(&server).await["status"], "attached");

    let report = storage_status(&harness.kube);
    assert_eq!(report.safekeepers, [1, 2, 3]);
    assert_eq!((report.pageservers.len(), report.pageservers[0].availability.as_str()), (1, "Active"));
    assert!(report.error.is_none() && report.checked_at.ends_with('Z'), "{report:?}");

    // What Prometheus scrapes: requests by route and status, rounds, branch outcomes; no token
    // needed, no id in a label.
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let response = client.get(format!("http://{}/metrics", server.addr()).parse().unwrap()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let metrics = String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    for line in [
        // Twice: once to add the finalizer, once with it.
        "neonctl_control_plane_reconciles_total 2",
        "neonctl_control_plane_reconcile_errors_total 0",
        "neonctl_control_plane_branch_reconciles_total{phase=\"Ready\"} 1",
        "neonctl_control_plane_http_requests_total{route=\"compute_spec\",status=\"200\"} 2",
        "neonctl_control_plane_http_requests_total{route=\"notify_attach\",status=\"200\"} 1",
        "neonctl_control_plane_reconcile_seconds_count 2",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
    assert!(!metrics.contains(TENANT), "no id in a label");

    // Nothing changed: the next round only asks for the nodes.
    harness.storcon.clear_calls();
    let configured = harness.compute.configures().len();
    let before = harness.kube.requests().len();
    control_plane.reconcile().await;
    assert_eq!(paths(&harness.storcon.calls()), ["GET /control/v1/node"]);
    let writes: Vec<String> = harness.kube.requests()[before..].iter().filter(|r| !r.starts_with("GET ")).cloned().collect();
    assert!(writes.is_empty(), "nothing is written, the unchanged report neither (it is refreshed every 15 s): {writes:?}");
    let reads: Vec<String> = harness.kube.requests()[before..].iter().filter(|r| r.starts_with("GET ")).cloned().collect();
    assert!(reads.is_empty(), "the branches and endpoints come from the watches, not from lists: {reads:?}");
    assert_eq!(harness.compute.configures().len(), configured, "no reconfiguration without a change");
    // A report that says something new is written at once.
    harness.storcon.storage.lock().unwrap().fail = Some(StatusCode::SERVICE_UNAVAILABLE);
    control_plane.reconcile().await;
    harness.storcon.storage.lock().unwrap().fail = None;
    let writes: Vec<String> = harness.kube.requests()[before..].iter().filter(|r| !r.starts_with("GET ")).cloned().collect();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert!(writes[0].starts_with(&format!("PATCH /api/v1/namespaces/{NAMESPACE}/configmaps/{STATUS_CONFIG_MAP}?")), "{writes:?}");
    assert!(storage_status(&harness.kube).error.is_some());
    server.stop().await;
}

#[tokio::test]
async fn a_new_generation_or_a_child_branch_is_created_and_pushed_again() {
    let harness = Harness::start(false).await;
    harness.kube.put_object(branch("child", CHILD_TIMELINE, Some(TIMELINE)));
    let (control_plane, server) = harness.control_plane().await;
    control_plane.reconcile().await;
    let timelines: Vec<Value> = harness.storcon.calls().into_iter().filter(|c| c.path.ends_with("/timeline")).map(|c| c.body).collect();
    assert_eq!(
        timelines,
        [
            json!({"new_timeline_id": TIMELINE, "pg_version": 17}),
            json!({"new_timeline_id": CHILD_TIMELINE, "pg_version": 17, "ancestor_timeline_id": TIMELINE}),
        ],
        "the parent first, then the branch from it"
    );
    assert!(harness.storcon.calls().iter().all(|c| c.scope.is_none()), "no signing key, no token");
    assert_eq!(harness.storcon.calls().iter().filter(|c| c.path.starts_with("/control/v1/tenant/")).count(), 1, "one tenant, one look-up");
    assert_eq!(status_of(&harness.kube, "child")["phase"], "Ready");

    // A new role bumps the generation: the timeline is created again (idempotent; the tenant is
    // known to exist by now) and the compute gets the new roles.
    let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("neonctl-aws.dev", "v1alpha1", "NeonBranch"), "neonbranches");
    let api: Api<DynamicObject> = Api::namespaced_with(harness.kube.client(), NAMESPACE, &resource);
    let verifier = scram::verifier("another password").0;
    let roles = json!({"spec": {"roles": [{"name": "alice", "verifier": verifier}, {"name": "bob", "verifier": verifier}]}});
    api.patch("main", &PatchParams::default(), &Patch::Merge(roles)).await.unwrap();
    harness.storcon.clear_calls();
    // The control plane learns of the change through its watch: the rounds until then find
    // nothing to do.
    for _ in 0..50 {
        control_plane.reconcile().await;
        if status_of(&harness.kube, "main")["observedGeneration"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status_of(&harness.kube, "main")["observedGeneration"], 2);
    let acting: Vec<String> = paths(&harness.storcon.calls()).into_iter().filter(|p| p != "GET /control/v1/node").collect();
    assert_eq!(acting, [format!("POST /v1/tenant/{TENANT}/timeline")]);
    let configure = harness.compute.configures().pop().unwrap();
    assert_eq!(configure.body["spec"]["cluster"]["roles"][1]["name"], "bob");
    server.stop().await;
}

/// Deleting a NeonBranch deletes its timeline from storage first, and the tenant with the
/// tenant's last branch; its finalizer keeps the object until then. A branch another branches
/// from is not deleted (Neon refuses, and the child's data depends on it) until the child is.
#[tokio::test]
async fn deleting_a_branch_deletes_its_timeline_then_its_tenant_with_the_last_branch() {
    let harness = Harness::start(false).await;
    harness.kube.put_object(branch("child", CHILD_TIMELINE, Some(TIMELINE)));
    let (control_plane, server) = harness.control_plane().await;
    control_plane.reconcile().await;
    let object = |name: &str| harness.kube.get(API_VERSION, "neonbranches", Some(NAMESPACE), name);
    for name in ["main", "child"] {
        assert_eq!(object(name).unwrap()["metadata"]["finalizers"], json!(["neonctl-aws.dev/timeline"]), "{name}");
        assert_eq!(status_of(&harness.kube, name)["phase"], "Ready");
    }
    let deletes =
        |storcon: &StorageController| -> Vec<String> { paths(&storcon.calls()).into_iter().filter(|p| p.starts_with("DELETE")).collect() };
    // The operator runs until the cache has learnt of each deletion through its watch.
    harness.storcon.clear_calls();
    harness.kube.delete(API_VERSION, "neonbranches", Some(NAMESPACE), "main");
    for _ in 0..50 {
        control_plane.reconcile().await;
        if status_of(&harness.kube, "main")["phase"] == "Deleting" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let main = status_of(&harness.kube, "main");
    assert_eq!(main["phase"], "Deleting", "{main}");
    assert!(main["message"].as_str().unwrap().contains("its child branches child branch from its timeline: delete them first"), "{main}");
    assert!(deletes(&harness.storcon).is_empty(), "storage untouched while a child needs the timeline");

    harness.kube.delete(API_VERSION, "neonbranches", Some(NAMESPACE), "child");
    for _ in 0..50 {
        control_plane.reconcile().await;
        if object("child").is_none() && object("main").is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(object("child").is_none() && object("main").is_none(), "both went once storage let them");
    assert_eq!(
        deletes(&harness.storcon),
        [
            format!("DELETE /v1/tenant/{TENANT}/timeline/{CHILD_TIMELINE}"),
            format!("DELETE /v1/tenant/{TENANT}/timeline/{TIMELINE}"),
            format!("DELETE /v1/tenant/{TENANT}"),
        ],
        "the child's timeline, then the parent's, then the tenant with its last branch"
    );
    server.stop().await;
}

/// `neonctl-aws branches` against the running operator: create (from the head or an LSN, and
/// again: the same branch), list, refuse what would lose data or cannot be, delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_branches_commands_drive_the_operator() {
    let harness = Harness::start(false).await;
    let running = harness.running_operator().await;
    let (wd, kubeconfig) = harness.cli_workdir();
    let cli = |args: &[&str]| {
        let mut cmd = wd.cmd(&[&["branches"], args, &["--kubeconfig", &kubeconfig, "--timeout", "20"]].concat());
        async move { tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap() }
    };

    let out = cli(&["create", "dev"]).await;
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("branch dev is ready"), "{}", stdout(&out));
    let dev = harness.kube.get(API_VERSION, "neonbranches", Some(NAMESPACE), "dev").unwrap();
    let dev_timeline = dev["spec"]["timelineId"].as_str().unwrap().to_string();
    assert_eq!((dev["spec"]["tenantId"].as_str(), dev["spec"]["parentTimelineId"].as_str()), (Some(TENANT), Some(TIMELINE)));
    assert_eq!(dev["spec"]["roles"], json!([{"name": "alice", "verifier": dev["spec"]["roles"][0]["verifier"]}]), "the parent's roles");
    let created = |timeline: &str| {
        harness.storcon.calls().into_iter().find(|c| c.path.ends_with("/timeline") && c.body["new_timeline_id"] == timeline).map(|c| c.body)
    };
    assert_eq!(created(&dev_timeline).unwrap()["ancestor_timeline_id"], TIMELINE);

    let out = cli(&["create", "before", "--parent", "dev", "--at", "0/16B5A50"]).await;
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let before = harness.kube.get(API_VERSION, "neonbranches", Some(NAMESPACE), "before").unwrap();
    let body = created(before["spec"]["timelineId"].as_str().unwrap()).unwrap();
    assert_eq!(
        (body["ancestor_timeline_id"].as_str(), body["ancestor_start_lsn"].as_str()),
        (Some(dev_timeline.as_str()), Some("0/16B5A50"))
    );

    // The same create again is the same branch; a different one under that name is refused.
    let again = cli(&["create", "dev"]).await;
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(harness.kube.get(API_VERSION, "neonbranches", Some(NAMESPACE), "dev").unwrap()["spec"]["timelineId"], dev_timeline.as_str());
    let other = cli(&["create", "dev", "--at", "0/1"]).await;
    assert_eq!(other.status.code(), Some(2));
    assert!(stderr(&other).contains("already exists in namespace neon with another parent or LSN"), "{}", stderr(&other));
    for (args, says) in [
        (&["create", "Dev_1"][..], "branch name \"Dev_1\" is not valid"),
        (&["create", "x", "--at", "yesterday"][..], "is neither an LSN"),
        (&["create", "x", "--parent", "nope"][..], "there is no branch nope in namespace neon"),
        (&["delete", "main"][..], "branch main is the deployment's own"),
        (&["delete", "dev"][..], "branch dev has child branches (before)"),
    ] {
        let out = cli(args).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }

    // As of a time: the operator asks the pageserver for the LSN once and branches there.
    harness.storcon.set_history(
        TIMELINE,
        "2026-11-20T00:00:00Z",
        &[("2026-11-21T10:00:00Z", "0/1500000"), ("2026-11-22T10:00:00Z", "0/1600000"), ("2026-11-23T10:00:00Z", "0/1700000")],
    );
    let out = cli(&["create", "monday", "--at", "2026-11-22T12:00:00+01:00"]).await;
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let monday = harness.kube.get(API_VERSION, "neonbranches", Some(NAMESPACE), "monday").unwrap();
    assert_eq!(monday["spec"]["ancestorTimestamp"], "2026-11-22T11:00:00Z");
    assert_eq!(monday["status"]["branchedAtLsn"], "0/1600000");
    assert_eq!(created(monday["spec"]["timelineId"].as_str().unwrap()).unwrap()["ancestor_start_lsn"], "0/1600000");
    let asked: Vec<String> = paths(&harness.storcon.calls()).into_iter().filter(|p| p.contains("get_lsn_by_timestamp")).collect();
    assert_eq!(asked, [format!("GET /v1/tenant/{TENANT}/timeline/{TIMELINE}/get_lsn_by_timestamp")]);
    // Before the history the pageserver keeps: the branch fails with the window, and the CLI says so.
    let out = cli(&["create", "too-old", "--at", "2026-11-19T00:00:00Z"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("is before the history the pageserver keeps of the parent (its pitr_interval"), "{}", stderr(&out));
    let out = cli(&["delete", "too-old"]).await;
    assert!(out.status.success(), "a failed branch can be deleted: {}", stderr(&out));
    let out = cli(&["delete", "monday"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    harness.storcon.clear_calls();

    let list = cli(&["list", "--output", "json"]).await;
    assert!(list.status.success(), "{}", stderr(&list));
    let rows = json_events(&list).into_iter().find(|e| e["kind"] == "branches").expect("the branches result")["data"].clone();
    let summary: Vec<(String, Value, Value, String)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["parent"].clone(),
                r["branched_at_lsn"].clone(),
                r["ready"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("before".into(), json!("dev"), json!("0/16B5A50"), "True".into()),
            ("dev".into(), json!("main"), Value::Null, "True".into()),
            ("main".into(), Value::Null, Value::Null, "True".into()),
        ]
    );

    // The table people read: the tree, branch points, readiness, each endpoint and its compute.
    let table = cli(&["list"]).await;
    insta::assert_snapshot!("branches-list", stdout(&table));

    let out = cli(&["delete", "before"]).await;
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert!(harness.kube.get(API_VERSION, "neonbranches", Some(NAMESPACE), "before").is_none());
    let deleted: Vec<String> = paths(&harness.storcon.calls()).into_iter().filter(|p| p.starts_with("DELETE")).collect();
    assert_eq!(deleted, [format!("DELETE /v1/tenant/{TENANT}/timeline/{}", before["spec"]["timelineId"].as_str().unwrap())]);
    running.stop().await;
}

/// An endpoint made after its branch turned Ready (what `deploy` and kubectl do, in that
/// order) still gets its compute's spec pushed, once.
#[tokio::test]
async fn an_endpoint_made_after_its_branch_is_ready_gets_its_spec() {
    let harness = Harness::start(false).await;
    harness.kube.delete(API_VERSION, "neonendpoints", Some(NAMESPACE), "main").unwrap();
    let (control_plane, server) = harness.control_plane().await;
    control_plane.reconcile().await;
    assert_eq!(status_of(&harness.kube, "main")["phase"], "Ready");
    assert!(harness.compute.configures().is_empty(), "no endpoint yet");

    harness.kube.put_object(endpoint("main", "main"));
    // Rounds until the watch has brought the endpoint (seconds on a loaded machine).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while harness.compute.configures().is_empty() && std::time::Instant::now() < deadline {
        control_plane.reconcile().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let configures = harness.compute.configures();
    assert_eq!(configures.len(), 1, "the new endpoint's compute got its spec");
    assert_eq!(configures[0].body["spec"]["timeline_id"], TIMELINE);
    control_plane.reconcile().await;
    assert_eq!(harness.compute.configures().len(), 1, "once");
    server.stop().await;
}

#[tokio::test]
async fn a_storage_controller_failure_is_reported_and_the_next_round_recovers() {
    let harness = Harness::start(true).await;
    let (control_plane, server) = harness.control_plane().await;

    harness.storcon.fail_with(Some(StatusCode::SERVICE_UNAVAILABLE));
    control_plane.reconcile().await;
    let status = status_of(&harness.kube, "main");
    assert_eq!(status["phase"], "Pending", "a busy controller is waited for: {status}");
    assert!(status["message"].as_str().unwrap().ends_with("retrying"), "{status}");

    harness.storcon.fail_with(Some(StatusCode::INTERNAL_SERVER_ERROR));
    control_plane.reconcile().await;
    let status = status_of(&harness.kube, "main");
    assert_eq!(status["phase"], "Failed");
    assert_eq!(
        (status["conditions"][0]["status"].as_str(), status["conditions"][0]["reason"].as_str()),
        (Some("False"), Some("StorageError"))
    );
    let message = status["message"].as_str().unwrap();
    assert!(message.contains(TENANT) && message.contains("500") && message.contains("injected failure"), "{message}");
    assert!(!message.contains("eyJ") && !message.contains("Bearer"), "no token in the status: {message}");
    let report = storage_status(&harness.kube);
    assert!(report.error.as_deref().is_some_and(|e| e.contains("/control/v1/node")), "{report:?}");
    assert!(report.safekeepers.is_empty() && report.pageservers.is_empty());
    assert_eq!(harness.spec(&server).await["status"], "empty");

    harness.storcon.fail_with(None);
    control_plane.reconcile().await;
    let status = status_of(&harness.kube, "main");
    assert_eq!(status["phase"], "Ready");
    assert!(status.get("message").is_none(), "the failure is cleared: {status}");
    assert!(storage_status(&harness.kube).error.is_none());
    assert_eq!(harness.spec(&server).await["status"], "attached");
    server.stop().await;
}

#[tokio::test]
async fn a_timeline_that_exists_with_other_parameters_fails_with_a_conflict() {
    let harness = Harness::start(false).await;
    let existing = Timeline { pg_version: 16, ancestor: None, safekeepers: vec![1, 2, 3], generation: 1, size: 0 };
    harness.storcon.storage.lock().unwrap().tenants.insert(TENANT.into(), BTreeMap::from([(TIMELINE.to_string(), existing)]));
    let (control_plane, server) = harness.control_plane().await;
    control_plane.reconcile().await;
    assert!(!paths(&harness.storcon.calls()).contains(&"POST /v1/tenant".to_string()), "an existing tenant is not created again");
    let status = status_of(&harness.kube, "main");
    assert_eq!(status["phase"], "Failed");
    let message = status["message"].as_str().unwrap();
    assert!(message.contains(&format!("creating timeline {TIMELINE} of tenant {TENANT}")) && message.contains("409"), "{message}");
    assert!(message.contains("new timeline id"), "it says what to do: {message}");
    server.stop().await;
}

#[tokio::test]
async fn placements_are_kept_in_the_branch_status_and_served_after_a_restart() {
    let harness = Harness::start(true).await;
    let (control_plane, server) = harness.control_plane().await;
    control_plane.reconcile().await;
    let storage_token = harness.token(scopes::STORAGE_CONTROLLER);
    let attach = json!({"tenant_id": TENANT, "preferred_az": "az-b", "stripe_size": null, "shards": [{"node_id": 2, "shard_number": 0}]});
    let (status, body) = call(&server, Method::PUT, "/storage/notify-attach", storage_token.as_deref(), Some(attach)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let safekeepers = json!({"tenant_id": TENANT, "timeline_id": TIMELINE, "generation": 3,
                             "safekeepers": [{"id": 2, "hostname": "sk-2"}, {"id": 3, "hostname": "sk-3"}]});
    let (status, body) = call(&server, Method::PUT, "/storage/notify-safekeepers", storage_token.as_deref(), Some(safekeepers)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let status = status_of(&harness.kube, "main");
    assert_eq!(status["attachment"], json!({"pageservers": [2]}));
    assert_eq!(status["safekeepers"], json!({"generation": 3, "ids": [2, 3]}));
    server.stop().await;
    drop(control_plane);

    // A restart: a new control plane on the same cluster knows where everything is.
    let (_, restarted) = harness.control_plane().await;
    let spec = harness.spec(&restarted).await;
    assert_eq!(spec["status"], "attached");
    assert_eq!(spec["spec"]["pageserver_connstring"], "postgresql://no_user@ps-2:6400");
    assert_eq!(spec["spec"]["safekeeper_connstrings"], json!(["sk-2:5454", "sk-3:5454"]));
    assert_eq!(spec["spec"]["safekeepers_generation"], 3);
    let (status, body) = call(
        &restarted,
        Method::GET,
        "/proxy/get_endpoint_access_control?endpointish=main&role=alice",
        harness.token(scopes::PROXY).as_deref(),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["role_secret"].as_str().unwrap().starts_with("SCRAM-SHA-256$"), "roles come from the NeonBranch");
    restarted.stop().await;
}

/// A pageserver's failure reaches the branch as what it was (here initdb's), although neon's
/// controller passes it on as 409; only a real parameter conflict says to pick a new id.
#[tokio::test]
async fn a_pageserver_failure_shows_the_pageservers_message() {
    let harness = Harness::start(true).await;
    let (control_plane, server) = harness.control_plane().await;
    let initdb = "initdb failed: running initdb: initdb: error: cannot be run as root";
    harness.storcon.pageserver_fails_with(Some((StatusCode::INTERNAL_SERVER_ERROR, initdb)));
    control_plane.reconcile().await;
    let status = status_of(&harness.kube, "main");
    assert_eq!(status["phase"], "Failed");
    let message = status["message"].as_str().unwrap();
    assert!(message.contains(&format!("pageserver 1 (ps-1) answered 500 Internal Server Error: {initdb}")), "{message}");
    assert!(!message.contains("new timeline id"), "not a conflict: {message}");

    // A creation already in progress (the pageserver's 429) is waited for.
    harness.storcon.pageserver_fails_with(Some((StatusCode::TOO_MANY_REQUESTS, "creation of timeline with the given ID is in progress")));
    control_plane.reconcile().await;
    assert_eq!(status_of(&harness.kube, "main")["phase"], "Pending");

    harness.storcon.pageserver_fails_with(None);
    control_plane.reconcile().await;
    assert_eq!(status_of(&harness.kube, "main")["phase"], "Ready");
    server.stop().await;
}

/// The storage controller moves a timeline to other safekeepers: the running compute is
/// reconfigured with the joint set, then the new one, each with its generation.
#[tokio::test]
async fn a_safekeeper_migration_reaches_the_running_compute() {
    let mut harness = Harness::start(true).await;
    harness.safekeepers = 4;
    let (control_plane, server) = harness.control_plane().await;
    control_plane.reconcile().await;
    assert_eq!(status_of(&harness.kube, "main")["safekeepers"], json!({"generation": 1, "ids": [1, 2, 3]}));
    let configured = harness.compute.configures().len();

    // What `storcon_cli` (or an operator) asks the controller.
    let key = harness.signing.clone().unwrap();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let request = Request::post(format!("{}/v1/tenant/{TENANT}/timeline/{TIMELINE}/safekeeper_migrate", harness.storcon.url()))
        .header("authorization", format!("Bearer {}", key.sign(&json!({"scope": "pageserverapi"})).0))
        .body(Full::new(Bytes::from(json!({"new_sk_set": [2, 3, 4]}).to_string())))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "the control plane took both configurations");

    let pushed: Vec<(Value, Value)> = harness.compute.configures()[configured..]
        .iter()
        .map(|c| (c.body["spec"]["safekeepers_generation"].clone(), c.body["spec"]["safekeeper_connstrings"].clone()))
        .collect();
    assert_eq!(
        pushed,
        [
            (json!(2), json!(["sk-1:5454", "sk-2:5454", "sk-3:5454", "sk-4:5454"])),
            (json!(3), json!(["sk-2:5454", "sk-3:5454", "sk-4:5454"])),
        ]
    );
    assert_eq!(status_of(&harness.kube, "main")["safekeepers"], json!({"generation": 3, "ids": [2, 3, 4]}));
    // An idempotent re-creation (a new generation of the branch) repeats generation 3; the
    // older answer never rolls the compute back.
    let spec = harness.spec(&server).await;
    assert_eq!(spec["spec"]["safekeepers_generation"], 3);
    server.stop().await;
}

/// Two replicas on one cluster, each with its own storage controller stand-in so that the
/// calls tell who reconciles: exactly one leads through the Lease, both serve the APIs, and
/// the other takes over when the leader stops, or when a holder stops renewing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_elect_one_reconciler_and_the_other_takes_over() {
    use neonctl_control_plane::Reconciling;
    use neonctl_control_plane::lease::Election;
    const LEASE: &str = "neon-control-plane";

    let harness = Harness::start(false).await;
    let replica = |name: &'static str| {
        let kube = harness.kube.client();
        let computes = harness.computes.clone();
        async move {
            let storcon = StorageController::start(None, None).await;
            let topology = Topology {
                listen: "127.0.0.1:0".into(),
                region: "us-east-1".into(),
                storage_controller_url: storcon.url(),
                pageservers: (1..=2).map(|id| node("ps", id, 6400)).collect(),
                safekeepers: safekeepers(3),
                compute: compute_template(),
            };
            let store = KubeStore::new(kube.clone(), NAMESPACE, STATUS_CONFIG_MAP);
            let control_plane = ControlPlane::new(topology, Keys::default(), Box::new(store), Retry::default()).await.unwrap();
            let control_plane = Arc::new(control_plane.with_compute_addresses(computes));
            let election = Election {
                lease: LEASE.into(),
                namespace: NAMESPACE.into(),
                identity: name.into(),
                duration: Duration::from_secs(2),
                renew_every: Duration::from_millis(100),
            };
            let reconciling = Reconciling { every: Duration::from_millis(100), election: Some((kube, election)) };
            let running = control_plane.start("127.0.0.1:0", Some(reconciling)).await.unwrap();
            storcon.set_hooks(format!("http://{}/storage", running.addr()));
            (storcon, running)
        }
    };
    let (storcon_a, running_a) = replica("replica-a").await;
    let (storcon_b, running_b) = replica("replica-b").await;
    let holder = |kube: &FakeKube| kube.get("coordination.k8s.io/v1", "leases", Some(NAMESPACE), LEASE).map(|l| l["spec"].clone());
    let mut settled = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if status_of(&harness.kube, "main")["phase"] == "Ready" {
            settled = true;
            break;
        }
    }
    assert!(settled, "the leader reconciled the branch");
    let lease = holder(&harness.kube).expect("the Lease");
    let (leader, follower) = match lease["holderIdentity"].as_str() {
        Some("replica-a") => ((&storcon_a, running_a), (&storcon_b, running_b)),
        Some("replica-b") => ((&storcon_b, running_b), (&storcon_a, running_a)),
        other => panic!("holder {other:?}"),
    };
    assert!(!leader.0.calls().is_empty());
    assert!(follower.0.calls().is_empty(), "the follower never called its storage controller: {:?}", follower.0.calls());
    // Both serve the APIs from the same state.
    for (role, running) in [("leader", &leader.1), ("follower", &follower.1)] {
        let mut last = Value::Null;
        for _ in 0..30 {
            let (status, body) = call(running, Method::GET, "/compute/api/v2/computes/main/spec", None, None).await;
            assert_eq!(status, StatusCode::OK);
            last = body;
            if last["status"] == "attached" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(last["status"], "attached", "the {role} serves the attached spec: {last}\n{}", status_of(&harness.kube, "main"));
    }

    // The leader stops: it hands the Lease back and the follower reconciles from then on.
    let transitions = lease["leaseTransitions"].as_i64().unwrap_or(0);
    leader.1.stop().await;
    let mut took_over = false;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if !follower.0.calls().is_empty() {
            took_over = true;
            break;
        }
    }
    assert!(took_over, "the follower took over");
    let lease = holder(&harness.kube).unwrap();
    assert_ne!(lease["holderIdentity"], json!(null));
    assert!(lease["leaseTransitions"].as_i64().unwrap() > transitions, "{lease}");
    follower.1.stop().await;

    // A holder that stopped renewing without handing the Lease back (a lost node): a new
    // replica waits out the Lease's duration on its own clock, then takes it.
    let mut lease = harness.kube.get("coordination.k8s.io/v1", "leases", Some(NAMESPACE), LEASE).unwrap();
    lease["spec"]["holderIdentity"] = json!("replica-lost");
    lease["spec"]["renewTime"] = json!("2026-11-25T00:00:00.000000Z");
    harness.kube.put_object(lease);
    let started = std::time::Instant::now();
    let (storcon_c, running_c) = replica("replica-c").await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(storcon_c.calls().is_empty(), "not before the Lease expired");
    let mut took_over = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if !storcon_c.calls().is_empty() {
            took_over = true;
            break;
        }
    }
    assert!(took_over, "the Lease expired and replica-c took it");
    assert!(started.elapsed() >= Duration::from_secs(2), "after the Lease's duration: {:?}", started.elapsed());
    assert_eq!(holder(&harness.kube).unwrap()["holderIdentity"], "replica-c");
    running_c.stop().await;
}

// ---- The binary -----------------------------------------------------------------------------

/// `control-plane serve --store kubernetes` as the Deployment runs it: the namespace and the
/// status ConfigMap from the environment, the cluster from the kubeconfig, a first round at
/// start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_the_kubernetes_store_reconciles_at_start() {
    let harness = Harness::start(false).await;
    let wd = Workdir::new();
    let mut topology = harness.topology();
    topology.listen = format!("127.0.0.1:{}", free_port());
    let topology_path = wd.path().join("topology.json");
    std::fs::write(&topology_path, topology.to_json().unwrap()).unwrap();
    let serve = |namespace: Option<&str>| {
        let mut cmd = wd.control_plane(&[&SERVE_ARGS[..], &["--insecure-no-auth"]].concat());
        cmd.env("NEONCTL_CONTROL_PLANE_CONFIG", &topology_path)
            .env("KUBECONFIG", harness.kube.kubeconfig(wd.path()))
            .env(STATUS_CONFIG_MAP_ENV, STATUS_CONFIG_MAP)
            .stderr(std::process::Stdio::piped());
        if let Some(namespace) = namespace {
            cmd.env(NAMESPACE_ENV, namespace);
        }
        cmd
    };

    let output = serve(None).output().unwrap();
    assert!(!output.status.success());
    assert!(stderr(&output).contains("--store kubernetes needs a namespace: set $POD_NAMESPACE"), "{}", stderr(&output));

    let child = serve(Some(NAMESPACE)).spawn().unwrap();
    let mut ready = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if status_of(&harness.kube, "main")["phase"] == "Ready"
            && harness.kube.get("v1", "configmaps", Some(NAMESPACE), STATUS_CONFIG_MAP).is_some()
        {
            ready = true;
            break;
        }
    }
    let kill = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let output = child.wait_with_output().unwrap();
    let log = stderr(&output);
    assert!(ready, "the first round ran at start: {log}");
    assert!(output.status.success(), "a graceful stop exits 0: {log}");
    assert!(log.contains(&format!("state: NeonBranch and NeonEndpoint objects in namespace {NAMESPACE}")), "{log}");
    // The image's executable logs one JSON object a line, as log collectors read them.
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let entry: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(entry["level"].is_string() && entry["fields"]["message"].is_string() && entry["timestamp"].is_string(), "{line}");
    }
    assert!(!log.contains("SCRAM-SHA-256$"), "verifiers never reach the log: {log}");
    assert_eq!(storage_status(&harness.kube).safekeepers, [1, 2, 3]);
}

/// `cargo xtask bench` runs this (`--ignored`): the control plane's executable against 1,000
/// NeonBranch and 1,000 NeonEndpoint objects in the fake API. Prints the Kubernetes calls per
/// minute while idle (goal: no lists), its RSS (goal ≤ 100 MB) and the time from a new
/// NeonBranch to its storage controller call (goal ≤ 1 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: cargo xtask bench"]
async fn bench_control_plane_at_scale() {
    const COUNT: usize = 1000;
    let harness = Harness::start(false).await;
    harness.kube.pods_run_by_kubelet("app.kubernetes.io/managed-by", neonctl_contract::computes::MANAGED_BY);
    let hex = |n: usize| format!("{n:032x}");
    // One verifier for all (a debug build takes ~35 ms to derive each).
    let template = branch("template", &hex(0), None);
    for n in 0..COUNT {
        let mut object = template.clone();
        object["metadata"]["name"] = json!(format!("b{n}"));
        object["spec"]["timelineId"] = json!(hex(n + 1));
        object["status"] = json!({"phase": "Ready", "observedGeneration": 1, "attachment": {"pageservers": [1]},
            "conditions": [{"type": "Ready", "status": "True", "reason": "TimelineReady", "message": "",
                            "observedGeneration": 1, "lastTransitionTime": "2026-11-25T00:00:00Z"}]});
        harness.kube.put_object(object);
        harness.kube.put_object(endpoint(&format!("e{n}"), &format!("b{n}")));
    }
    // Their timelines exist in storage, so each branch's size is read once.
    {
        let mut storage = harness.storcon.storage.lock().unwrap();
        let timelines = storage.tenants.entry(TENANT.to_string()).or_default();
        for n in 0..COUNT {
            let timeline =
                Timeline { pg_version: 17, ancestor: None, safekeepers: vec![1, 2, 3], generation: 1, size: (n as u64 + 1) << 20 };
            timelines.insert(hex(n + 1), timeline);
        }
    }
    let wd = Workdir::new();
    let mut topology = harness.topology();
    topology.listen = format!("127.0.0.1:{}", free_port());
    harness.storcon.set_hooks(format!("http://{}/storage", topology.listen));
    let topology_path = wd.path().join("topology.json");
    std::fs::write(&topology_path, topology.to_json().unwrap()).unwrap();
    let child = wd
        .control_plane(&[&SERVE_ARGS[..], &["--insecure-no-auth"]].concat())
        .env("NEONCTL_CONTROL_PLANE_CONFIG", &topology_path)
        .env("KUBECONFIG", harness.kube.kubeconfig(wd.path()))
        .env(NAMESPACE_ENV, NAMESPACE)
        .env(STATUS_CONFIG_MAP_ENV, STATUS_CONFIG_MAP)
        .stderr(std::fs::File::create(std::env::temp_dir().join("neonctl-control-plane-bench.log")).unwrap())
        .spawn()
        .unwrap();
    // Synced: the first storage report is written after the first round.
    let started = std::time::Instant::now();
    while harness.kube.get("v1", "configmaps", Some(NAMESPACE), STATUS_CONFIG_MAP).is_none() {
        assert!(started.elapsed() < Duration::from_secs(60), "the control plane never reported");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let synced = started.elapsed();
    // The first pass over existing branches adds the finalizer to each (once, ever).
    let finalized = || {
        harness
            .kube
            .list(API_VERSION, "neonbranches")
            .iter()
            .filter(|b| b["metadata"]["finalizers"].as_array().is_some_and(|f| !f.is_empty()))
            .count()
    };
    while finalized() < COUNT {
        assert!(started.elapsed() < Duration::from_secs(120), "the operator never finalized every branch: {}", finalized());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first_pass = started.elapsed();
    // Then every endpoint's compute: a Deployment and a Service, named in the endpoint's status.
    // Their pods never start here (no kubelet): the control plane's own work is measured, and
    // nothing is pushed to computes that do not exist.
    let made = || harness.kube.list(API_VERSION, "neonendpoints").iter().filter(|e| e["status"]["compute"].is_string()).count();
    while made() < COUNT + 1 {
        assert!(started.elapsed() < Duration::from_secs(300), "the operator never made every compute: {}", made());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let computes = started.elapsed();
    // And the last status writes of that burst.
    let quiet = std::time::Instant::now();
    loop {
        let before = harness.kube.requests().len();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let writes = harness.kube.requests()[before..]
            .iter()
            .filter(|r| !r.starts_with("GET ") && !r.contains(&format!("/configmaps/{STATUS_CONFIG_MAP}?")))
            .count();
        if writes == 0 || quiet.elapsed() > Duration::from_secs(60) {
            break;
        }
    }

    let sized = || harness.kube.list(API_VERSION, "neonbranches").iter().filter(|b| b["status"]["logicalSize"].is_u64()).count();
    let size_reads = |calls: &[Call]| calls.iter().filter(|c| c.method == Method::GET && c.path.contains("/timeline/")).count();
    // The 1,000 and `main`.
    while sized() < COUNT + 1 {
        assert!(started.elapsed() < Duration::from_secs(300), "the operator never read every branch's size: {}", sized());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sizes = started.elapsed();
    let first_size_reads = size_reads(&harness.storcon.calls());

    // Idle: what it asks the API server (and storage) for while nothing changes.
    const WINDOW: Duration = Duration::from_secs(30);
    let before = harness.kube.requests().len();
    harness.storcon.clear_calls();
    tokio::time::sleep(WINDOW).await;
    let idle_size_reads = size_reads(&harness.storcon.calls());
    let idle: Vec<String> = harness.kube.requests()[before..].to_vec();
    let per_minute = |n: usize| n as f64 * 60.0 / WINDOW.as_secs_f64();
    let lists = idle.iter().filter(|r| r.starts_with("GET ") && !r.contains("watch=")).count();
    let watches = idle.iter().filter(|r| r.contains("watch=")).count();
    let writes = idle.len() - lists - watches;
    let written: std::collections::BTreeSet<String> =
        idle.iter().filter(|r| !r.starts_with("GET ")).map(|r| r.split('?').next().unwrap_or_default().to_string()).collect();
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let rss_kib: u64 =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches(" kB").trim().parse().unwrap();

    // A new branch: how long until the storage controller is asked for its timeline.
    harness.storcon.clear_calls();
    let new_timeline = hex(COUNT + 1);
    let asked = std::time::Instant::now();
    harness.kube.put_object(branch("new", &new_timeline, None));
    let wanted = format!("POST /v1/tenant/{TENANT}/timeline");
    let latency = loop {
        if harness.storcon.calls().iter().any(|c| format!("{} {}", c.method, c.path) == wanted && c.body["new_timeline_id"] == new_timeline)
        {
            break asked.elapsed();
        }
        assert!(asked.elapsed() < Duration::from_secs(30), "the new branch was never created");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let mut child = child;
    let _ = child.kill();
    let _ = child.wait();

    println!("control plane with {COUNT} NeonBranch + {COUNT} NeonEndpoint objects (debug build):");
    println!("  first storage report after  {:.2}s", synced.as_secs_f64());
    println!("  first pass over all branches {:.2}s (adds each one's finalizer, once)", first_pass.as_secs_f64());
    println!("  every endpoint's compute (Deployment + Service) made after {:.2}s", computes.as_secs_f64());
    println!(
        "  idle, per minute:           {:.0} list calls (goal 0), {:.0} watch requests, {:.0} writes ({written:?})",
        per_minute(lists),
        per_minute(watches),
        per_minute(writes)
    );
    println!(
        "  every branch's logical size read once after {:.2}s ({first_size_reads} reads); idle: {idle_size_reads} size reads",
        sizes.as_secs_f64()
    );
    println!("  RSS                         {:.1} MB (goal <= 100 MB)", rss_kib as f64 / 1024.0);
    println!("  new NeonBranch -> storage controller call: {} ms (goal <= 1000 ms)", latency.as_millis());
    assert_eq!(lists, 0, "no list while idle: {idle:?}");
    assert_eq!(idle_size_reads, 0, "suspended or idle branches are not asked for their size again");
    assert!(rss_kib <= 100 * 1024, "RSS {rss_kib} KiB");
    assert!(latency <= Duration::from_secs(1), "{latency:?}");
}
