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
use neonctl_aws::controlplane::jwt::{PublicKey, SigningKey};
use neonctl_aws::controlplane::kube_store::{KubeStore, STATUS_KEY};
use neonctl_aws::controlplane::reconcile::StorageStatus;
use neonctl_aws::controlplane::{ControlPlane, Keys, NAMESPACE_ENV, Retry, Running, SERVE_ARGS, STATUS_CONFIG_MAP_ENV, scopes, scram};
use neonctl_aws::neon::control_plane::{Compute, Topology};
use serde_json::{Value, json};

use crate::controlplane::{StandIn, TENANT, TIMELINE, call, jwt_claims, key_pem, node};
use crate::fake_kube::FakeKube;
use crate::stand_ins::free_port;
use crate::support::{Workdir, stderr};

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

#[derive(Default)]
struct Storage {
    calls: Vec<Call>,
    /// By tenant id: its timelines with their `(pg_version, ancestor)`.
    tenants: BTreeMap<String, BTreeMap<String, (u64, Option<String>)>>,
    safekeepers: BTreeSet<u64>,
    active: BTreeSet<u64>,
    /// Answer every call with this status (a broken or busy controller).
    fail: Option<StatusCode>,
    /// The control plane's hooks (`…/storage`): a new tenant is attached to pageserver 1 there
    /// before the creation is answered, as neon's controller does.
    hooks: Option<String>,
    /// What the `notify-attach` calls answered.
    hook_answers: Vec<StatusCode>,
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

    fn clear_calls(&self) {
        self.storage.lock().unwrap().calls.clear();
    }

    fn fail_with(&self, status: Option<StatusCode>) {
        self.storage.lock().unwrap().fail = status;
    }
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
    let header = parts.headers.get("authorization").map(|v| v.to_str().unwrap().to_string());
    let scope =
        header.as_deref().and_then(|h| h.strip_prefix("Bearer ")).map(|token| jwt_claims(token)["scope"].as_str().unwrap().to_string());
    let method = parts.method;
    let new_tenant = {
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
                storage.safekeepers.insert(id.parse().unwrap());
                return reply(StatusCode::NO_CONTENT, Value::Null);
            }
            ("POST", ["control", "v1", "safekeeper", id, "scheduling_policy"]) => {
                let id: u64 = id.parse().unwrap();
                if !storage.safekeepers.contains(&id) {
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
                storage.hooks.clone().map(|hooks| (hooks, tenant))
            }
            ("POST", ["v1", "tenant", tenant, "timeline"]) => {
                let Some(timelines) = storage.tenants.get_mut(*tenant) else {
                    return error(StatusCode::NOT_FOUND, &format!("Tenant {tenant} not found"));
                };
                let timeline = body["new_timeline_id"].as_str().unwrap().to_string();
                let params = (body["pg_version"].as_u64().unwrap(), body["ancestor_timeline_id"].as_str().map(str::to_string));
                if let Some(ancestor) = &params.1
                    && !timelines.contains_key(ancestor)
                {
                    return error(StatusCode::NOT_FOUND, &format!("ancestor timeline {ancestor} not found"));
                }
                return match timelines.get(&timeline) {
                    Some(existing) if *existing != params => {
                        error(StatusCode::CONFLICT, "timeline already exists with different parameters")
                    }
                    _ => {
                        timelines.insert(timeline.clone(), params);
                        reply(StatusCode::CREATED, json!({"tenant_id": tenant, "timeline_id": timeline, "safekeepers": null}))
                    }
                };
            }
            _ => return error(StatusCode::NOT_FOUND, "no such route"),
        }
    };
    // A new tenant: attach it through the control plane's hook before answering.
    if let Some((hooks, tenant)) = new_tenant {
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let mut request = Request::put(format!("{hooks}/notify-attach")).header("content-type", "application/json");
        if let Some(key) = &hook_key {
            request = request.header("authorization", format!("Bearer {}", key.sign(&json!({"scope": scopes::STORAGE_CONTROLLER})).0));
        }
        let notify =
            json!({"tenant_id": tenant, "preferred_az": "az-a", "stripe_size": null, "shards": [{"node_id": 1, "shard_number": 0}]});
        let request = request.body(Full::new(Bytes::from(notify.to_string()))).unwrap();
        let status = match tokio::time::timeout(Duration::from_secs(5), client.request(request)).await {
            Ok(Ok(response)) => response.status(),
            _ => StatusCode::GATEWAY_TIMEOUT,
        };
        storage.lock().unwrap().hook_answers.push(status);
    }
    reply(StatusCode::CREATED, json!({"shards": [{"shard_id": "x", "node_id": 1, "generation": 1}]}))
}

// ---- The custom resources -------------------------------------------------------------------

fn branch(name: &str, timeline: &str, parent: Option<&str>) -> Value {
    let mut spec = json!({
        "projectId": "proj",
        "tenantId": TENANT,
        "timelineId": timeline,
        "pgVersion": 17,
        "roles": [{"name": "alice", "verifier": scram::verifier("correct horse battery staple").unwrap().0}],
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

struct Harness {
    kube: FakeKube,
    storcon: StorageController,
    compute: StandIn,
    signing: Option<Arc<SigningKey>>,
    pem: Option<String>,
}

impl Harness {
    /// `auth`: a key pair; the stand-in storage controller then checks tokens.
    async fn start(auth: bool) -> Self {
        let pem = auth.then(key_pem);
        let signing = pem.as_deref().map(|pem| Arc::new(SigningKey::from_pem(pem).unwrap()));
        let storcon = StorageController::start(signing.as_ref().map(|key| key.public_key()), signing.clone()).await;
        let kube = FakeKube::start().await;
        kube.put_object(branch("main", TIMELINE, None));
        kube.put_object(endpoint("main", "main"));
        Self { kube, storcon, compute: StandIn::start().await, signing, pem }
    }

    fn topology(&self) -> Topology {
        Topology {
            listen: "127.0.0.1:0".into(),
            region: "us-east-1".into(),
            storage_controller_url: self.storcon.url(),
            pageservers: (1..=2).map(|id| node("ps", id, 6400)).collect(),
            safekeepers: (1..=3).map(|id| node("sk", id, 5454)).collect(),
            computes: vec![Compute { id: "main".into(), pg: "compute-main:55432".into(), http: format!("http://{}", self.compute.addr) }],
        }
    }

    /// A control plane on the fake cluster, serving; rounds run when the test says.
    async fn control_plane(&self) -> (Arc<ControlPlane>, Running) {
        let keys = match &self.pem {
            Some(pem) => {
                Keys { verify: Some(SigningKey::from_pem(pem).unwrap().public_key()), sign: Some(SigningKey::from_pem(pem).unwrap()) }
            }
            None => Keys::default(),
        };
        let store = KubeStore::new(self.kube.client(), NAMESPACE, STATUS_CONFIG_MAP);
        let retry = Retry { first_delay: Duration::from_millis(20), deadline: Duration::from_millis(500) };
        let control_plane = Arc::new(ControlPlane::new(self.topology(), keys, Box::new(store), retry).await.unwrap());
        let running = control_plane.clone().start("127.0.0.1:0", None).await.unwrap();
        self.storcon.set_hooks(format!("http://{}/storage", running.addr()));
        (control_plane, running)
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
    assert!(status.get("message").is_none(), "{status}");
    assert_eq!(status["attachment"], json!({"pageservers": [1]}), "the controller's notify-attach is kept in the branch");

    let configure = harness.compute.configures().pop().expect("the waiting compute got its spec");
    assert_eq!(configure.body["spec"]["tenant_id"], TENANT);
    assert_eq!(configure.body["spec"]["timeline_id"], TIMELINE);
    assert_eq!(configure.body["spec"]["pageserver_connstring"], "postgresql://no_user@ps-1:6400");
    assert_eq!(harness.spec(&server).await["status"], "attached");

    let report = storage_status(&harness.kube);
    assert_eq!(report.safekeepers, [1, 2, 3]);
    assert_eq!((report.pageservers.len(), report.pageservers[0].availability.as_str()), (1, "Active"));
    assert!(report.error.is_none() && report.checked_at.ends_with('Z'), "{report:?}");

    // Nothing changed: the next round only asks for the nodes.
    harness.storcon.clear_calls();
    let configured = harness.compute.configures().len();
    let before = harness.kube.requests().len();
    control_plane.reconcile().await;
    assert_eq!(paths(&harness.storcon.calls()), ["GET /control/v1/node"]);
    let writes: Vec<String> = harness.kube.requests()[before..].iter().filter(|r| !r.starts_with("GET ")).cloned().collect();
    assert_eq!(writes.len(), 1, "only the status ConfigMap is written: {writes:?}");
    assert!(writes[0].starts_with(&format!("PATCH /api/v1/namespaces/{NAMESPACE}/configmaps/{STATUS_CONFIG_MAP}?")), "{writes:?}");
    assert_eq!(harness.compute.configures().len(), configured, "no reconfiguration without a change");
    server.stop().await;
}

#[tokio::test]
async fn a_new_generation_or_a_child_branch_is_created_and_pushed_again() {
    let harness = Harness::start(false).await;
    let (control_plane, server) = harness.control_plane().await;
    harness.kube.put_object(branch("child", CHILD_TIMELINE, Some(TIMELINE)));
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

    // A new role bumps the generation: the timeline is checked again (idempotent) and the
    // compute gets the new roles.
    let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("neonctl-aws.dev", "v1alpha1", "NeonBranch"), "neonbranches");
    let api: Api<DynamicObject> = Api::namespaced_with(harness.kube.client(), NAMESPACE, &resource);
    let verifier = scram::verifier("another password").unwrap().0;
    let roles = json!({"spec": {"roles": [{"name": "alice", "verifier": verifier}, {"name": "bob", "verifier": verifier}]}});
    api.patch("main", &PatchParams::default(), &Patch::Merge(roles)).await.unwrap();
    harness.storcon.clear_calls();
    control_plane.reconcile().await;
    let expected =
        [format!("GET /control/v1/tenant/{TENANT}"), format!("POST /v1/tenant/{TENANT}/timeline"), "GET /control/v1/node".into()];
    assert_eq!(paths(&harness.storcon.calls()), expected);
    assert_eq!(status_of(&harness.kube, "main")["observedGeneration"], 2);
    let configure = harness.compute.configures().pop().unwrap();
    assert_eq!(configure.body["spec"]["cluster"]["roles"][1]["name"], "bob");
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
    harness.storcon.storage.lock().unwrap().tenants.insert(TENANT.into(), BTreeMap::from([(TIMELINE.to_string(), (16, None))]));
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
        let mut cmd = wd.cmd(&SERVE_ARGS);
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
    assert!(!log.contains("SCRAM-SHA-256$"), "verifiers never reach the log: {log}");
    assert_eq!(storage_status(&harness.kube).safekeepers, [1, 2, 3]);
}
