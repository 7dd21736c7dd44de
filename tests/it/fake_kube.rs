//! A Kubernetes API stand-in: an HTTP server on 127.0.0.1 that stores objects of any group,
//! version and plural in memory and answers the calls neonctl-aws makes (get, list with label
//! and field selectors, server-side apply with `dryRun=All`, merge patches, status
//! subresources, create, replace, delete, pod logs).
//!
//! It also plays the controllers a real cluster runs, so that a roll-out can finish: a
//! Deployment or StatefulSet reports all replicas ready for its generation, a LoadBalancer
//! Service gets an ingress address, a CustomResourceDefinition becomes Established, and
//! deleting a Namespace deletes what is in it. [`FakeKube::never_ready`] and
//! [`FakeKube::set_load_balancer`] change that.
//!
//! A replace (PUT) that names a resourceVersion other than the stored one is refused with 409,
//! as the API server refuses it. JSON patches (RFC 6902, what kube-runtime's finalizer helper
//! sends) are applied with their `test` operations. Deleting an object that has finalizers
//! only sets its `deletionTimestamp`; it goes when a write leaves its finalizers empty.
//!
//! Watches stream every change from a resourceVersion on, with bookmarks when asked for, and
//! 410 Gone from before [`FakeKube::compact`].
//!
//! Removing an object removes what names it in `ownerReferences`, as the garbage collector does.
//!
//! What it does not do: field ownership (apply merges into the live object; lists and scalars
//! are replaced), validation against schemas, admission. It runs on its own thread, so
//! a test may block on the binary while the server answers.

#![allow(dead_code)] // Each test module uses the part it needs.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::StreamExt as _;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// `(apiVersion, plural, namespace, name)`.
type Key = (String, String, Option<String>, String);

#[derive(Default)]
struct Store {
    objects: BTreeMap<Key, Value>,
    requests: Vec<String>,
    resource_version: u64,
    /// Every change, for watches: `(resourceVersion, key, ADDED|MODIFIED|DELETED, object)`.
    events: Vec<(u64, Key, &'static str, Value)>,
    /// Changes at or below this version are gone: a watch from before it gets 410 Gone.
    compacted: u64,
    /// Woken on every change.
    changed: Arc<tokio::sync::Notify>,
    never_ready: BTreeSet<String>,
    /// Workloads with this label (`key`, `value`) are made ready by the test's kubelet, not here.
    kubelet: Option<(String, String)>,
    /// The `status.loadBalancer.ingress` given to LoadBalancer Services; `None`: none yet.
    load_balancer: Option<Value>,
    /// Log text returned for every pod.
    pod_log: String,
}

pub struct FakeKube {
    addr: SocketAddr,
    store: Arc<Mutex<Store>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl FakeKube {
    /// Starts the server on a free port of 127.0.0.1.
    pub async fn start() -> Self {
        let store = Arc::new(Mutex::new(Store { load_balancer: Some(json!([{"ip": "127.0.0.1"}])), ..Store::default() }));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = store.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("fake kube runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the fake Kubernetes API");
                addr_tx.send(listener.local_addr().expect("local addr")).expect("report the address");
                tokio::select! {
                    () = accept(listener, served) => {}
                    _ = stopped => {}
                }
            });
        });
        let addr = addr_rx.recv().expect("the fake Kubernetes API started");
        Self { addr, store, stop: Some(stop) }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn client(&self) -> kube::Client {
        neonctl_control_plane::install_crypto_provider();
        let config = kube::Config::new(self.url().parse().expect("a valid URL"));
        kube::Client::try_from(config).expect("a client for the fake Kubernetes API")
    }

    /// Writes a kubeconfig with the single context `fake` pointing at this server.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             users:\n- name: fake\n  user:\n    token: fake-token\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n",
            self.url()
        );
        std::fs::write(&path, text).expect("write the kubeconfig");
        path
    }

    pub fn get(&self, api_version: &str, plural: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let key = (api_version.to_string(), plural.to_string(), namespace.map(str::to_string), name.to_string());
        self.store.lock().unwrap().objects.get(&key).cloned()
    }

    /// Every object of a kind, in any namespace.
    pub fn list(&self, api_version: &str, plural: &str) -> Vec<Value> {
        let store = self.store.lock().unwrap();
        store.objects.iter().filter(|((v, p, _, _), _)| v == api_version && p == plural).map(|(_, o)| o.clone()).collect()
    }

    /// Stores an object as if a user had created it (its plural is guessed from the kind).
    pub fn put_object(&self, object: Value) {
        let api_version = object["apiVersion"].as_str().expect("apiVersion").to_string();
        let plural = plural_of(object["kind"].as_str().expect("kind"));
        let namespace = object["metadata"]["namespace"].as_str().map(str::to_string);
        let name = object["metadata"]["name"].as_str().expect("metadata.name").to_string();
        let mut store = self.store.lock().unwrap();
        let key = (api_version, plural, namespace, name);
        let stored = store.admit(&key, None, object, true);
        store.put(key, stored);
    }

    pub fn set_status(&self, api_version: &str, plural: &str, namespace: Option<&str>, name: &str, status: Value) {
        let key = (api_version.to_string(), plural.to_string(), namespace.map(str::to_string), name.to_string());
        let mut store = self.store.lock().unwrap();
        store.resource_version += 1;
        let version = store.resource_version.to_string();
        let object = store.objects.get_mut(&key).unwrap_or_else(|| panic!("no {plural} {name} to set the status of"));
        object["status"] = status;
        object["metadata"]["resourceVersion"] = json!(version);
        let object = object.clone();
        store.record(&key, "MODIFIED", object);
    }

    /// `kubectl scale`: the Deployment's replicas set, its controller's status with it.
    pub fn scale_deployment(&self, namespace: &str, name: &str, replicas: i64) {
        let key = ("apps/v1".to_string(), "deployments".to_string(), Some(namespace.to_string()), name.to_string());
        let mut store = self.store.lock().unwrap();
        let mut object = store.objects.get(&key).cloned().unwrap_or_else(|| panic!("no Deployment {name} to scale"));
        object["spec"]["replicas"] = json!(replicas);
        let current = store.objects.get(&key).cloned();
        store.store(key, current, object, Write { dry_run: false, status_only: false, code: StatusCode::OK });
    }

    pub fn delete(&self, api_version: &str, plural: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let key = (api_version.to_string(), plural.to_string(), namespace.map(str::to_string), name.to_string());
        self.store.lock().unwrap().delete(&key)
    }

    /// Forgets every change so far, as etcd compaction does: a watch that resumes from an
    /// older resourceVersion gets 410 Gone and must list again.
    pub fn compact(&self) {
        let mut store = self.store.lock().unwrap();
        store.compacted = store.resource_version;
        store.events.clear();
    }

    /// Every request so far, as `METHOD path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.store.lock().unwrap().requests.clone()
    }

    /// Workloads with this name never report ready replicas.
    pub fn never_ready(&self, name: &str) {
        self.store.lock().unwrap().never_ready.insert(name.to_string());
    }

    /// Workloads labelled `key: value` report no ready replica until the test says (with
    /// [`FakeKube::set_status`]), as a kubelet that runs their pods would.
    pub fn pods_run_by_kubelet(&self, key: &str, value: &str) {
        self.store.lock().unwrap().kubelet = Some((key.to_string(), value.to_string()));
    }

    /// The ingress LoadBalancer Services get from now on (`None`: still pending).
    pub fn set_load_balancer(&self, ingress: Option<Value>) {
        self.store.lock().unwrap().load_balancer = ingress;
    }

    pub fn set_pod_log(&self, text: &str) {
        self.store.lock().unwrap().pod_log = text.to_string();
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn accept(listener: tokio::net::TcpListener, store: Arc<Mutex<Store>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let store = store.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let store = store.clone();
                async move { Ok::<_, Infallible>(handle(request, store).await) }
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// How a write is stored and answered.
struct Write {
    dry_run: bool,
    /// A write to the status subresource: controllers do not react to it.
    status_only: bool,
    code: StatusCode,
}

/// What a request path names.
struct Target {
    api_version: String,
    plural: String,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

/// `/api/v1/...` or `/apis/<group>/<version>/...`, then `[namespaces/<ns>/]<plural>[/<name>[/<sub>]]`.
/// `/api/v1/namespaces/<name>` is the Namespace itself.
fn parse_path(path: &str) -> Option<Target> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (api_version, rest) = match parts.as_slice() {
        ["api", version, rest @ ..] => (version.to_string(), rest),
        ["apis", group, version, rest @ ..] => (format!("{group}/{version}"), rest),
        _ => return None,
    };
    let owned = |s: &&str| s.to_string();
    let target = |plural: &str, namespace: Option<&str>, tail: &[&str]| Target {
        api_version: api_version.clone(),
        plural: plural.to_string(),
        namespace: namespace.map(str::to_string),
        name: tail.first().map(owned),
        subresource: tail.get(1).map(owned),
    };
    match rest {
        ["namespaces", ns, plural, tail @ ..] => Some(target(plural, Some(ns), tail)),
        [plural, tail @ ..] => Some(target(plural, None, tail)),
        [] => None,
    }
}

/// A response body: whole, or a watch's stream of events.
type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn handle(request: Request<Incoming>, store: Arc<Mutex<Store>>) -> Response<Body> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let query: BTreeMap<String, String> =
        form_urlencoded::parse(request.uri().query().unwrap_or_default().as_bytes()).into_owned().collect();
    let content_type = request.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let line = match request.uri().query() {
        Some(q) => format!("{method} {path}?{q}"),
        None => format!("{method} {path}"),
    };
    let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let mut locked = store.lock().unwrap();
    locked.requests.push(line);
    let Some(target) = parse_path(&path) else {
        return status(StatusCode::NOT_FOUND, "NotFound", &format!("no such API path {path}")).map(BodyExt::boxed);
    };
    if method == Method::GET && target.name.is_none() && query.get("watch").is_some_and(|w| w == "true" || w == "1") {
        drop(locked);
        return watch(store, target, &query);
    }
    let body: Option<Value> = if body.is_empty() {
        None
    } else {
        match serde_json::from_slice(&body) {
            Ok(value) => Some(value),
            Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &format!("body is not JSON: {e}")).map(BodyExt::boxed),
        }
    };
    locked.serve(&method, target, &query, &content_type, body).map(BodyExt::boxed)
}

/// How often an idle watch that asked for them gets a BOOKMARK (the API server's is about a
/// minute; short here so that tests see them).
const BOOKMARK_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// A watch, as the API server streams it: one JSON event per line (ADDED, MODIFIED, DELETED,
/// BOOKMARK when `allowWatchBookmarks`), from the requested resourceVersion on, until
/// `timeoutSeconds`; a resourceVersion older than the last compaction gets an ERROR event with
/// 410 Gone (`staging/src/k8s.io/apiserver/pkg/storage/cacher`).
fn watch(store: Arc<Mutex<Store>>, target: Target, query: &BTreeMap<String, String>) -> Response<Body> {
    let from: u64 = query.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
    let timeout = std::time::Duration::from_secs(query.get("timeoutSeconds").and_then(|v| v.parse().ok()).unwrap_or(300));
    let bookmarks = query.get("allowWatchBookmarks").is_some_and(|v| v == "true");
    let labels = query.get("labelSelector").cloned().unwrap_or_default();
    let fields = query.get("fieldSelector").cloned().unwrap_or_default();
    let (api_version, plural) = (target.api_version.clone(), target.plural.clone());
    let matches = move |key: &Key, object: &Value| {
        key.0 == target.api_version
            && key.1 == target.plural
            && (target.namespace.is_none() || key.2 == target.namespace)
            && selects(&labels, |k| object["metadata"]["labels"][k].clone())
            && selects(&fields, |path| path.split('.').fold(object.clone(), |v, part| v[part].clone()))
    };
    let line = |event: Value| Ok::<_, Infallible>(hyper::body::Frame::data(Bytes::from(format!("{event}\n"))));
    // "0" (or none): the objects as they are, then every change.
    let (changed, gone) = {
        let store = store.lock().unwrap();
        (store.changed.clone(), from != 0 && from < store.compacted)
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let stream = futures::stream::unfold((true, tokio::time::Instant::now(), from), move |(first, mut bookmarked, mut last)| {
        let (store, changed, matches) = (store.clone(), changed.clone(), matches.clone());
        let (api_version, plural) = (api_version.clone(), plural.clone());
        async move {
            if gone {
                if !first {
                    return None;
                }
                let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": format!("too old resource version: {from}"), "reason": "Expired", "code": 410});
                return Some((vec![line(json!({"type": "ERROR", "object": status}))], (false, bookmarked, last)));
            }
            loop {
                let notified = changed.notified();
                let (events, version) = {
                    let store = store.lock().unwrap();
                    let events: Vec<_> = if first && last == 0 {
                        store.objects.iter().filter(|(k, o)| matches(k, o)).map(|(_, o)| ("ADDED", o.clone())).collect()
                    } else {
                        // Events are kept in resourceVersion order: only the newer ones are read.
                        let newer = store.events.partition_point(|(v, ..)| *v <= last);
                        store.events[newer..].iter().filter(|(_, k, _, o)| matches(k, o)).map(|(_, _, t, o)| (*t, o.clone())).collect()
                    };
                    (events, store.resource_version)
                };
                if first && last == 0 {
                    last = version;
                }
                if !events.is_empty() {
                    for (_, object) in &events {
                        last = last.max(object["metadata"]["resourceVersion"].as_str().and_then(|v| v.parse().ok()).unwrap_or(last));
                    }
                    let frames = events.into_iter().map(|(kind, object)| line(json!({"type": kind, "object": object}))).collect();
                    return Some((frames, (false, bookmarked, last)));
                }
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    return None;
                }
                if bookmarks && now.duration_since(bookmarked) >= BOOKMARK_EVERY {
                    bookmarked = now;
                    let kind = store
                        .lock()
                        .unwrap()
                        .objects
                        .iter()
                        .find(|((v, p, _, _), _)| *v == api_version && *p == plural)
                        .and_then(|(_, o)| o["kind"].as_str().map(str::to_string))
                        .unwrap_or_else(|| plural.clone());
                    let bookmark = json!({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": api_version,
                        "metadata": {"resourceVersion": version.to_string()}}});
                    return Some((vec![line(bookmark)], (false, bookmarked, last)));
                }
                let _ = tokio::time::timeout(BOOKMARK_EVERY.min(deadline - now), notified).await;
            }
        }
    })
    .flat_map(futures::stream::iter);
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(BodyExt::boxed(http_body_util::StreamBody::new(stream)))
        .expect("a valid response")
}

impl Store {
    fn record(&mut self, key: &Key, kind: &'static str, object: Value) {
        let version = object["metadata"]["resourceVersion"].as_str().and_then(|v| v.parse().ok()).unwrap_or(self.resource_version);
        self.events.push((version, key.clone(), kind, object));
        self.changed.notify_waiters();
    }

    fn put(&mut self, key: Key, object: Value) {
        let kind = if self.objects.contains_key(&key) { "MODIFIED" } else { "ADDED" };
        self.objects.insert(key.clone(), object.clone());
        self.record(&key, kind, object);
    }

    /// Removes the object, and then, as the garbage collector does, whatever names it in its
    /// `ownerReferences` (at once: the real collector takes a moment).
    fn remove(&mut self, key: &Key) -> Option<Value> {
        let mut object = self.objects.remove(key)?;
        self.resource_version += 1;
        object["metadata"]["resourceVersion"] = json!(self.resource_version.to_string());
        self.record(key, "DELETED", object.clone());
        let uid = object["metadata"]["uid"].clone();
        let owned: Vec<Key> = self
            .objects
            .iter()
            .filter(|(_, o)| o["metadata"]["ownerReferences"].as_array().is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid)))
            .map(|(key, _)| key.clone())
            .collect();
        for key in owned {
            self.delete(&key);
        }
        Some(object)
    }

    /// A delete as the API server does it: an object with finalizers gets a
    /// `deletionTimestamp` and stays until they are gone; a namespace takes its objects along.
    fn delete(&mut self, key: &Key) -> Option<Value> {
        let current = self.objects.get(key)?.clone();
        let finalized = current["metadata"]["finalizers"].as_array().is_some_and(|f| !f.is_empty());
        let object = if finalized {
            let mut next = current.clone();
            if next["metadata"]["deletionTimestamp"].is_null() {
                next["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:01Z");
                self.resource_version += 1;
                next["metadata"]["resourceVersion"] = json!(self.resource_version.to_string());
                self.put(key.clone(), next.clone());
            }
            next
        } else {
            self.remove(key)?
        };
        if key.1 == "namespaces" {
            let inside: Vec<Key> = self.objects.keys().filter(|(_, _, ns, _)| ns.as_deref() == Some(key.3.as_str())).cloned().collect();
            for key in inside {
                self.delete(&key);
            }
        }
        Some(object)
    }

    /// Whether every PodDisruptionBudget selecting `pod` allows one more disruption: its healthy
    /// (Ready, not deleting) pods stay at or above what `minAvailable`, or the matching pods less
    /// `maxUnavailable`, require (`pkg/controller/disruption/disruption.go`); a pod that is not
    /// healthy itself may go while the budget is met (`IfHealthyBudget`, the default policy).
    fn disruption_allowed(&self, pod: &Value) -> bool {
        let namespace = pod["metadata"]["namespace"].as_str();
        let labels = &pod["metadata"]["labels"];
        let healthy = |p: &Value| {
            p["metadata"]["deletionTimestamp"].is_null()
                && p["status"]["conditions"].as_array().is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
        };
        let mut budgets =
            self.objects.iter().filter(|((v, p, ns, _), _)| v == "policy/v1" && p == "poddisruptionbudgets" && ns.as_deref() == namespace);
        budgets.all(|(_, budget)| {
            let wanted = budget["spec"]["selector"]["matchLabels"].as_object().cloned().unwrap_or_default();
            let selected = |p: &Value| wanted.iter().all(|(k, v)| &p["metadata"]["labels"][k] == v);
            if !selected(pod) || labels.is_null() {
                return true;
            }
            let matching: Vec<&Value> = self
                .objects
                .iter()
                .filter(|((v, p, ns, _), o)| v == "v1" && p == "pods" && ns.as_deref() == namespace && selected(o))
                .map(|(_, o)| o)
                .collect();
            let current = matching.iter().filter(|p| healthy(p)).count() as i64;
            let desired = match (budget["spec"]["minAvailable"].as_i64(), budget["spec"]["maxUnavailable"].as_i64()) {
                (Some(min), _) => min,
                (None, Some(max)) => matching.len() as i64 - max,
                (None, None) => 0,
            };
            if healthy(pod) { current - desired > 0 } else { current >= desired }
        })
    }

    fn serve(
        &mut self,
        method: &Method,
        target: Target,
        query: &BTreeMap<String, String>,
        content_type: &str,
        body: Option<Value>,
    ) -> Response<Full<Bytes>> {
        let Target { api_version, plural, namespace, name, subresource } = target;
        let Some(name) = name else {
            return match *method {
                Method::GET => self.list_response(&api_version, &plural, namespace.as_deref(), query),
                Method::POST => {
                    let Some(body) = body else { return status(StatusCode::BAD_REQUEST, "BadRequest", "create needs a body") };
                    let Some(name) = body["metadata"]["name"].as_str().map(str::to_string) else {
                        return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", "metadata.name is required");
                    };
                    let key = (api_version, plural, namespace, name);
                    if self.objects.contains_key(&key) {
                        return status(StatusCode::CONFLICT, "AlreadyExists", &format!("{} \"{}\" already exists", key.1, key.3));
                    }
                    self.store(key, None, body, Write { dry_run: dry_run(query), status_only: false, code: StatusCode::CREATED })
                }
                _ => status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "not supported on a collection"),
            };
        };
        let key = (api_version, plural, namespace, name);
        let current = self.objects.get(&key).cloned();
        match (method.clone(), subresource.as_deref()) {
            (Method::GET, Some("log")) => text(&self.pod_log),
            // The Eviction API (`pkg/registry/core/pod/storage/eviction.go`): 429 while a
            // PodDisruptionBudget that selects the pod allows no disruption, else the pod goes.
            (Method::POST, Some("eviction")) if key.1 == "pods" => {
                let Some(pod) = current else { return not_found(&key) };
                if !self.disruption_allowed(&pod) {
                    return status(
                        StatusCode::TOO_MANY_REQUESTS,
                        "TooManyRequests",
                        "Cannot evict pod as it would violate the pod's disruption budget.",
                    );
                }
                self.delete(&key);
                json_response(StatusCode::CREATED, &json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}))
            }
            (Method::GET, _) => match current {
                Some(object) => ok(&object),
                None => not_found(&key),
            },
            (Method::DELETE, _) => match self.delete(&key) {
                Some(object) => ok(&object),
                None => not_found(&key),
            },
            (Method::PUT, sub) => {
                let (Some(current), Some(body)) = (current, body) else { return not_found(&key) };
                // Optimistic concurrency: a replace names the version it read, and loses to any
                // write since (the API server's update precondition).
                if let Some(read) = body["metadata"]["resourceVersion"].as_str()
                    && Some(read) != current["metadata"]["resourceVersion"].as_str()
                {
                    return status(
                        StatusCode::CONFLICT,
                        "Conflict",
                        &format!(
                            "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                            key.1, key.3
                        ),
                    );
                }
                let next = match sub {
                    Some("status") => with_status(&current, &body["status"]),
                    _ => body,
                };
                let write = Write { dry_run: dry_run(query), status_only: sub == Some("status"), code: StatusCode::OK };
                self.store(key, Some(current), next, write)
            }
            (Method::PATCH, sub) => {
                let Some(patch) = body else { return status(StatusCode::BAD_REQUEST, "BadRequest", "patch needs a body") };
                let apply = content_type.starts_with("application/apply-patch");
                if content_type.starts_with("application/json-patch") {
                    let Some(current) = current else { return not_found(&key) };
                    return match json_patched(&current, patch) {
                        Ok(next) => {
                            let code = StatusCode::OK;
                            self.store(
                                key,
                                Some(current),
                                next,
                                Write { dry_run: dry_run(query), status_only: sub == Some("status"), code },
                            )
                        }
                        Err(message) => status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", &message),
                    };
                }
                if !apply && !content_type.contains("merge-patch") {
                    return status(StatusCode::UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType", content_type);
                }
                let Some(base) = current.clone().or_else(|| apply.then(|| json!({}))) else { return not_found(&key) };
                let patch = match sub {
                    Some("status") => json!({"status": patch["status"].clone()}),
                    _ if !apply => patch,
                    // Apply sets what the manager owns; status is the controllers'.
                    _ => {
                        let mut patch = patch;
                        if let Some(map) = patch.as_object_mut() {
                            map.remove("status");
                        }
                        patch
                    }
                };
                let mut next = base;
                merge(&mut next, &patch, !apply);
                let code = if current.is_some() { StatusCode::OK } else { StatusCode::CREATED };
                self.store(key, current, next, Write { dry_run: dry_run(query), status_only: sub == Some("status"), code })
            }
            _ => status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "not supported"),
        }
    }

    fn list_response(
        &self,
        api_version: &str,
        plural: &str,
        namespace: Option<&str>,
        query: &BTreeMap<String, String>,
    ) -> Response<Full<Bytes>> {
        let labels = query.get("labelSelector").map(String::as_str).unwrap_or_default();
        let fields = query.get("fieldSelector").map(String::as_str).unwrap_or_default();
        let items: Vec<Value> = self
            .objects
            .iter()
            .filter(|((v, p, ns, _), _)| v == api_version && p == plural && (namespace.is_none() || ns.as_deref() == namespace))
            .map(|(_, object)| object)
            .filter(|object| selects(labels, |key| object["metadata"]["labels"][key].clone()))
            .filter(|object| selects(fields, |path| path.split('.').fold((*object).clone(), |v, part| v[part].clone())))
            .cloned()
            .collect();
        let kind = items.first().and_then(|o| o["kind"].as_str()).map(|k| format!("{k}List")).unwrap_or_else(|| "List".into());
        ok(&json!({
            "apiVersion": api_version,
            "kind": kind,
            "metadata": {"resourceVersion": self.resource_version.to_string()},
            "items": items,
        }))
    }

    /// Stores `next` (unless a dry run) with server-set metadata, after the controllers had
    /// their say; answers with what was (or would be) stored.
    fn store(&mut self, key: Key, current: Option<Value>, next: Value, write: Write) -> Response<Full<Bytes>> {
        let stored = self.admit(&key, current.as_ref(), next, !write.status_only);
        if !write.dry_run {
            let finalized = stored["metadata"]["finalizers"].as_array().is_some_and(|f| !f.is_empty());
            self.put(key.clone(), stored.clone());
            // The last finalizer of an object being deleted is gone: so is the object.
            if !stored["metadata"]["deletionTimestamp"].is_null() && !finalized {
                self.remove(&key);
            }
        }
        json_response(write.code, &stored)
    }

    /// Server-set fields: uid, creation time, resourceVersion, generation (bumped when
    /// anything but metadata and status changes), then the simulated controllers.
    fn admit(&mut self, key: &Key, current: Option<&Value>, mut next: Value, controllers: bool) -> Value {
        self.resource_version += 1;
        let (api_version, plural, namespace, name) = key;
        next["apiVersion"] = json!(api_version);
        if next["kind"].is_null() {
            next["kind"] = current.map(|c| c["kind"].clone()).unwrap_or(Value::Null);
        }
        let meta = &mut next["metadata"];
        meta["name"] = json!(name);
        if let Some(ns) = namespace {
            meta["namespace"] = json!(ns);
        }
        meta["resourceVersion"] = json!(self.resource_version.to_string());
        let generation = match current {
            None => 1,
            Some(current) => {
                let old = current["metadata"]["generation"].as_i64().unwrap_or(1);
                if without_meta_and_status(current) == without_meta_and_status(&next) { old } else { old + 1 }
            }
        };
        let meta = &mut next["metadata"];
        meta["generation"] = json!(generation);
        meta["uid"] = current.map(|c| c["metadata"]["uid"].clone()).unwrap_or_else(|| json!(format!("uid-{}", self.resource_version)));
        meta["creationTimestamp"] =
            current.map(|c| c["metadata"]["creationTimestamp"].clone()).unwrap_or_else(|| json!("2026-01-01T00:00:00Z"));
        // Only a delete sets it, and nothing unsets it.
        if let Some(deleted) = current.map(|c| c["metadata"]["deletionTimestamp"].clone()).filter(|d| !d.is_null()) {
            meta["deletionTimestamp"] = deleted;
        }
        if let Some(map) = meta.as_object_mut() {
            map.remove("managedFields");
        }
        // The API server's defaulting (`pkg/apis/apps/v1/defaults.go`, `SetDefaults_Deployment`):
        // a Deployment that names no replicas gets one.
        if plural == "deployments" && next["spec"].is_object() && next["spec"]["replicas"].is_null() {
            next["spec"]["replicas"] = json!(1);
        }
        if controllers {
            self.simulate_controllers(plural, &mut next, generation);
        }
        next
    }

    fn simulate_controllers(&self, plural: &str, object: &mut Value, generation: i64) {
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
        match plural {
            "deployments" | "statefulsets" => {
                let replicas = object["spec"]["replicas"].as_i64().unwrap_or(1);
                let by_kubelet = self.kubelet.as_ref().is_some_and(|(key, value)| object["metadata"]["labels"][key] == value.as_str());
                let ready = if self.never_ready.contains(&name) || by_kubelet { 0 } else { replicas };
                object["status"] = json!({
                    "observedGeneration": generation,
                    "replicas": replicas,
                    "updatedReplicas": replicas,
                    "readyReplicas": ready,
                    "availableReplicas": ready,
                });
            }
            "services" if object["spec"]["type"] == "LoadBalancer" => {
                if let Some(ingress) = &self.load_balancer {
                    object["status"] = json!({"loadBalancer": {"ingress": ingress}});
                }
            }
            "customresourcedefinitions" => {
                object["status"] = json!({"conditions": [
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts"},
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted"},
                ]});
            }
            "namespaces" => object["status"] = json!({"phase": "Active"}),
            _ => {}
        }
    }
}

/// `current` after a JSON patch. A `test` of null passes on a missing member, as the API
/// server's json-patch library has it (`/metadata/finalizers` of an object without any).
fn json_patched(current: &Value, patch: Value) -> Result<Value, String> {
    let mut operations: json_patch::Patch = serde_json::from_value(patch).map_err(|e| format!("not a JSON patch: {e}"))?;
    operations.0.retain(|op| match op {
        json_patch::PatchOperation::Test(test) => !(test.value.is_null() && current.pointer(test.path.as_str()).is_none()),
        _ => true,
    });
    let mut next = current.clone();
    json_patch::patch(&mut next, &operations).map_err(|e| format!("the JSON patch does not apply: {e}"))?;
    Ok(next)
}

fn without_meta_and_status(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(map) = object.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
    }
    object
}

fn with_status(current: &Value, status: &Value) -> Value {
    let mut next = current.clone();
    next["status"] = status.clone();
    next
}

/// Merges `patch` into `target`: objects key by key, anything else replaced. With `nulls_delete`
/// (a JSON merge patch) a null removes the key.
fn merge(target: &mut Value, patch: &Value, nulls_delete: bool) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() && nulls_delete {
                    target.remove(key);
                } else {
                    merge(target.entry(key.clone()).or_insert(Value::Null), value, nulls_delete);
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

/// `a=b,c!=d,e` against a value looked up per key; an empty selector selects everything.
fn selects(selector: &str, lookup: impl Fn(&str) -> Value) -> bool {
    selector.split(',').filter(|term| !term.is_empty()).all(|term| {
        if let Some((key, want)) = term.split_once("!=") {
            lookup(key).as_str() != Some(want)
        } else if let Some((key, want)) = term.split_once("==").or_else(|| term.split_once('=')) {
            lookup(key).as_str() == Some(want)
        } else {
            !lookup(term).is_null()
        }
    })
}

fn dry_run(query: &BTreeMap<String, String>) -> bool {
    query.get("dryRun").is_some_and(|v| v == "All")
}

/// The plural the API uses for a kind (the ones neonctl-aws renders and reads).
pub fn plural_of(kind: &str) -> String {
    let lower = kind.to_lowercase();
    match lower.as_str() {
        "networkpolicy" => "networkpolicies".into(),
        "storageclass" => "storageclasses".into(),
        "neonbranch" => "neonbranches".into(),
        "endpoints" => lower,
        _ if lower.ends_with('s') => format!("{lower}es"),
        _ if lower.ends_with('y') => format!("{}ies", &lower[..lower.len() - 1]),
        _ => format!("{lower}s"),
    }
}

fn json_response(code: StatusCode, value: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(value).expect("JSON"))))
        .expect("a valid response")
}

fn ok(value: &Value) -> Response<Full<Bytes>> {
    json_response(StatusCode::OK, value)
}

fn text(body: &str) -> Response<Full<Bytes>> {
    Response::builder().status(StatusCode::OK).body(Full::new(Bytes::from(body.to_string()))).expect("a valid response")
}

/// A `Status` object, which kube-rs turns into `kube::Error::Api`.
fn status(code: StatusCode, reason: &str, message: &str) -> Response<Full<Bytes>> {
    json_response(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code.as_u16()}),
    )
}

fn not_found(key: &Key) -> Response<Full<Bytes>> {
    status(StatusCode::NOT_FOUND, "NotFound", &format!("{} \"{}\" not found", key.1, key.3))
}

/// The fake answers kube-rs the way an API server does.
#[tokio::test]
async fn fake_kube_serves_apply_get_list_status_and_delete() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::{ConfigMap, Service};
    use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};

    let fake = FakeKube::start().await;
    let client = fake.client();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "neon");
    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "broker", "namespace": "neon", "labels": {"app": "broker", "tier": "storage"}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "broker"}},
                 "template": {"metadata": {"labels": {"app": "broker"}}, "spec": {"containers": [{"name": "b", "image": "x:1"}]}}},
    }))
    .unwrap();
    let params = PatchParams::apply("neonctl-aws").force();

    // Dry run: answered, not stored.
    let dry = deployments.patch("broker", &PatchParams { dry_run: true, ..params.clone() }, &Patch::Apply(&deployment)).await.unwrap();
    assert_eq!(dry.metadata.generation, Some(1));
    assert!(fake.get("apps/v1", "deployments", Some("neon"), "broker").is_none());

    let applied = deployments.patch("broker", &params, &Patch::Apply(&deployment)).await.unwrap();
    assert_eq!(applied.status.as_ref().unwrap().ready_replicas, Some(2), "the simulated controller rolled it out");
    let again = deployments.patch("broker", &params, &Patch::Apply(&deployment)).await.unwrap();
    assert_eq!(again.metadata.generation, Some(1), "an unchanged apply keeps the generation");
    let mut changed = deployment.clone();
    changed.spec.as_mut().unwrap().replicas = Some(3);
    assert_eq!(deployments.patch("broker", &params, &Patch::Apply(&changed)).await.unwrap().metadata.generation, Some(2));

    assert_eq!(deployments.list(&ListParams::default().labels("app=broker,tier=storage")).await.unwrap().items.len(), 1);
    assert!(deployments.list(&ListParams::default().labels("app=other")).await.unwrap().items.is_empty());
    let all: Api<Deployment> = Api::all(client.clone());
    assert_eq!(all.list(&ListParams::default()).await.unwrap().items.len(), 1);

    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "neon");
    let error = configmaps.get("missing").await.unwrap_err();
    assert!(matches!(&error, kube::Error::Api(e) if e.code == 404), "{error}");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "c"}, "data": {"a": "1"}})).unwrap();
    configmaps.create(&PostParams::default(), &cm).await.unwrap();
    assert!(matches!(configmaps.create(&PostParams::default(), &cm).await, Err(kube::Error::Api(e)) if e.code == 409));
    configmaps.patch("c", &PatchParams::default(), &Patch::Merge(json!({"data": {"a": null, "b": "2"}}))).await.unwrap();
    assert_eq!(fake.get("v1", "configmaps", Some("neon"), "c").unwrap()["data"], json!({"b": "2"}));

    let services: Api<Service> = Api::namespaced(client.clone(), "neon");
    let lb: Service = serde_json::from_value(json!({"metadata": {"name": "proxy"}, "spec": {"type": "LoadBalancer"}})).unwrap();
    let lb = services.patch("proxy", &params, &Patch::Apply(&lb)).await.unwrap();
    assert_eq!(lb.status.unwrap().load_balancer.unwrap().ingress.unwrap()[0].ip.as_deref(), Some("127.0.0.1"));

    deployments.patch_status("broker", &PatchParams::default(), &Patch::Merge(json!({"status": {"readyReplicas": 0}}))).await.unwrap();
    assert_eq!(fake.get("apps/v1", "deployments", Some("neon"), "broker").unwrap()["status"]["readyReplicas"], 0);

    // The kubeconfig it writes is what `--kubeconfig` users give.
    let dir = tempfile::tempdir().unwrap();
    let from_file =
        neonctl_aws::k8s::kubeconfig_client(Some(&fake.kubeconfig(dir.path())), Some("fake"), Default::default()).await.unwrap();
    assert_eq!(Api::<ConfigMap>::namespaced(from_file, "neon").get("c").await.unwrap().data.unwrap()["b"], "2");

    deployments.delete("broker", &DeleteParams::background()).await.unwrap();
    assert!(fake.get("apps/v1", "deployments", Some("neon"), "broker").is_none());
    assert!(
        fake.requests().iter().any(|r| r.starts_with("PATCH /apis/apps/v1/namespaces/neon/deployments/broker?")),
        "{:?}",
        fake.requests()
    );
}

/// A replace names the resourceVersion it read and loses to any write since, as on a real API
/// server: what leader election relies on.
#[tokio::test]
async fn fake_kube_refuses_a_replace_of_a_stale_version() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, PostParams};

    let fake = FakeKube::start().await;
    let maps: Api<ConfigMap> = Api::namespaced(fake.client(), "neon");
    let map: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "m"}, "data": {"a": "1"}})).unwrap();
    let first = maps.create(&PostParams::default(), &map).await.unwrap();
    let mut winner = first.clone();
    winner.data = Some([("a".to_string(), "2".to_string())].into());
    maps.replace("m", &PostParams::default(), &winner).await.unwrap();
    let mut loser = first;
    loser.data = Some([("a".to_string(), "3".to_string())].into());
    match maps.replace("m", &PostParams::default(), &loser).await {
        Err(kube::Error::Api(response)) => assert_eq!(response.code, 409, "{response:?}"),
        other => panic!("a stale replace must fail with 409: {other:?}"),
    }
    assert_eq!(maps.get("m").await.unwrap().data.unwrap()["a"], "2");
}

/// kube-runtime's watcher runs against the fake as against an API server: one list, then
/// watches that see every change, bookmarks, and a fresh list after 410 Gone.
#[tokio::test]
async fn fake_kube_serves_watches_that_kube_runtime_follows() {
    use futures::TryStreamExt as _;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, DeleteParams, PostParams};
    use kube::runtime::WatchStreamExt as _;
    use kube::runtime::watcher::{self, Event};

    let fake = FakeKube::start().await;
    let maps: Api<ConfigMap> = Api::namespaced(fake.client(), "neon");
    let map = |name: &str, value: &str| -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": name}, "data": {"v": value}})).unwrap()
    };
    maps.create(&PostParams::default(), &map("before", "1")).await.unwrap();
    let mut events = Box::pin(watcher::watcher(maps.clone(), watcher::Config::default()).default_backoff());
    macro_rules! next {
        () => {
            tokio::time::timeout(std::time::Duration::from_secs(5), events.try_next()).await.expect("an event in time").unwrap().unwrap()
        };
    }
    let mut initial = Vec::new();
    loop {
        match next!() {
            Event::Init => {}
            Event::InitApply(object) => initial.push(object.metadata.name.unwrap()),
            Event::InitDone => break,
            other => panic!("{other:?} before the initial list was done"),
        }
    }
    assert_eq!(initial, ["before"]);
    maps.create(&PostParams::default(), &map("after", "2")).await.unwrap();
    match next!() {
        Event::Apply(object) => assert_eq!(object.metadata.name.as_deref(), Some("after")),
        other => panic!("{other:?}"),
    }
    maps.delete("before", &DeleteParams::default()).await.unwrap();
    match next!() {
        Event::Delete(object) => assert_eq!(object.metadata.name.as_deref(), Some("before")),
        other => panic!("{other:?}"),
    }
    let lists = |fake: &FakeKube| {
        fake.requests().iter().filter(|r| r.starts_with("GET /api/v1/namespaces/neon/configmaps") && !r.contains("watch=")).count()
    };
    assert_eq!(lists(&fake), 1, "one list, then watches: {:?}", fake.requests());
    assert!(fake.requests().iter().any(|r| r.contains("watch=true") && r.contains("allowWatchBookmarks=true")), "{:?}", fake.requests());

    // Compaction: the next watch from the old version gets 410 and the watcher lists again,
    // then sees later changes.
    fake.compact();
    let watches = fake.requests().iter().filter(|r| r.contains("watch=true")).count();
    // The running watch ends at its timeout; a short one here by asking for a new watch.
    drop(events);
    let mut events = Box::pin(watcher::watcher(maps.clone(), watcher::Config::default()).default_backoff());
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout(std::time::Duration::from_secs(5), events.try_next()).await.unwrap().unwrap().unwrap() {
            Event::InitApply(object) => seen.push(object.metadata.name.unwrap()),
            Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(seen, ["after"]);
    assert!(fake.requests().iter().filter(|r| r.contains("watch=true")).count() >= watches);
    // A watch from before the compaction is refused with 410 Gone.
    let stale = fake.url() + "/api/v1/namespaces/neon/configmaps?watch=true&resourceVersion=1";
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let response = client.get(stale.parse().unwrap()).await.unwrap();
    let body = String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    let event: Value = serde_json::from_str(body.lines().next().unwrap()).unwrap();
    assert_eq!((event["type"].as_str(), event["object"]["code"].as_u64()), (Some("ERROR"), Some(410)), "{body}");
}
