//! Each endpoint's compute, end to end: the operator makes a Deployment and a Service per
//! NeonEndpoint; a kubelet stand-in runs each compute Deployment as a real Postgres with a
//! compute_ctl stand-in; the proxy stand-in routes a session by its endpoint through the real
//! control plane's `wake_compute`; the CLI creates branches, prints their connection strings and
//! deletes them (computes first).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt as _;
use kube::api::{Api, ListParams};
use neonctl_contract::computes::{ENDPOINT_LABEL, MANAGED_BY, TIMELINE_ANNOTATION};
use serde_json::{Value, json};

use crate::controlplane::{PgServer, StandInComputes, call, call_at};
use crate::deploy::{ProxyStandIn, Upstream};
use crate::fake_kube::FakeKube;
use crate::reconcile::Harness;
use crate::support::{Workdir, json_events, stderr, stdout};
use neonctl_control_plane::Running;

const NAMESPACE: &str = "neon";
const PASSWORD: &str = "correct horse battery staple";

/// One running compute: its Postgres and its compute_ctl stand-in, on a timeline.
struct Compute {
    postgres: Arc<PgServer>,
    compute_ctl: ComputeCtl,
    timeline: String,
}

/// compute_ctl as neon's answers the control plane, over the compute's real Postgres:
/// - `GET /status`: `ComputeStatusResponse` (`libs/compute_api/src/responses.rs`), its
///   `last_active` kept as `compute_tools/src/monitor.rs` keeps it for a spec without the
///   `activity_monitor_experimental` feature (ours): now while a client backend is not idle
///   (a query running, a transaction open), else the latest state change of the idle ones if
///   newer; now while a logical walsender, a subscription or an autovacuum worker runs;
/// - `POST /terminate[?mode=fast|immediate]`: only from `running` or `empty`, else 412
///   (`compute_tools/src/http/routes/terminate.rs`); Postgres stopped fast, then `{"lsn"}`;
/// - `POST /configure`: only in `running` or `empty`, else 412 (`routes/configure.rs`); the
///   spec's roles, databases and delta operations applied to the running Postgres.
///
/// With a key, every route needs a token as `http/middleware/authorize.rs` checks it: EdDSA by
/// that key, not expired, and `compute_id` this compute's id (or scope `compute_ctl:admin` with
/// audience `compute`); else 401.
struct ComputeCtl {
    addr: std::net::SocketAddr,
    state: Arc<Mutex<CtlState>>,
    task: tokio::task::JoinHandle<()>,
}

/// The key and compute id a compute_ctl stand-in checks tokens against.
type CtlAuth = Option<(neonctl_contract::jwt::PublicKey, String)>;

fn authorized(auth: &CtlAuth, header: Option<&str>) -> Result<(), String> {
    let Some((key, compute_id)) = auth else { return Ok(()) };
    let token = header.and_then(|h| h.strip_prefix("Bearer ")).ok_or("missing authorization header")?;
    key.scope_of(token).map_err(|e| format!("invalid token: {e}"))?;
    let claims = crate::controlplane::jwt_claims(token);
    let admin = claims["scope"] == "compute_ctl:admin" && claims["aud"].as_array().is_some_and(|aud| aud.contains(&json!("compute")));
    if claims["compute_id"] == compute_id.as_str() || admin {
        Ok(())
    } else {
        Err(format!("invalid compute ID in token: {}", claims["compute_id"]))
    }
}

struct CtlState {
    status: &'static str,
    start_time: String,
    last_active: Option<time::OffsetDateTime>,
    terminated_at: Option<std::time::Instant>,
}

fn rfc3339(at: time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339).unwrap()
}

/// monitor.rs's checks in one query: client backends not idle, the latest state change of the
/// idle ones, and walsenders + subscriptions + autovacuum workers. `postgres` stands for
/// `cloud_admin`, whose sessions the monitor leaves out.
const ACTIVITY: &str = "select \
    (select count(*) from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid() \
       and usename <> 'postgres' and state is distinct from 'idle'), \
    (select coalesce(to_char(max(state_change) at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), '') from pg_stat_activity \
       where backend_type = 'client backend' and pid <> pg_backend_pid() and usename <> 'postgres' and state = 'idle'), \
    (select count(*) from pg_stat_replication where application_name <> 'walproposer') \
      + (select count(*) from pg_stat_subscription where pid is not null) \
      + (select count(*) from pg_stat_activity where backend_type = 'autovacuum worker')";

impl ComputeCtl {
    /// Over `postgres`; without one, a compute that runs and never has any activity.
    async fn start(postgres: Option<Arc<PgServer>>) -> Self {
        Self::start_checking(postgres, None).await
    }

    async fn start_checking(postgres: Option<Arc<PgServer>>, auth: CtlAuth) -> Self {
        let auth = Arc::new(auth);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(CtlState {
            status: "running",
            start_time: rfc3339(time::OffsetDateTime::now_utc()),
            last_active: None,
            terminated_at: None,
        }));
        let served = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (state, postgres, auth) = (served.clone(), postgres.clone(), auth.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                        let (state, postgres, auth) = (state.clone(), postgres.clone(), auth.clone());
                        async move {
                            let header = request.headers().get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string);
                            let (method, path) = (request.method().clone(), request.uri().path().to_string());
                            let bytes =
                                http_body_util::BodyExt::collect(request.into_body()).await.map(|b| b.to_bytes()).unwrap_or_default();
                            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                            let (status, body) = match authorized(&auth, header.as_deref()) {
                                Ok(()) => Self::answer(&method, &path, body, &state, &postgres).await,
                                Err(error) => (401, json!({"error": error})),
                            };
                            let body = http_body_util::Full::new(hyper::body::Bytes::from(body.to_string()));
                            Ok::<_, std::convert::Infallible>(hyper::Response::builder().status(status).body(body).unwrap())
                        }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            }
        });
        Self { addr, state, task }
    }

    async fn answer(
        method: &hyper::Method,
        path: &str,
        body: Value,
        state: &Mutex<CtlState>,
        postgres: &Option<Arc<PgServer>>,
    ) -> (u16, Value) {
        let status = state.lock().unwrap().status;
        let invalid = |status: &str| (412, json!({"error": format!("invalid compute status: {status}")}));
        match (method.as_str(), path) {
            ("GET", "/status") => {
                if let Some(postgres) = postgres.as_ref().filter(|_| status == "running") {
                    let postgres = postgres.clone();
                    let row = tokio::task::spawn_blocking(move || postgres.admin_query(ACTIVITY)).await.unwrap();
                    let fields: Vec<&str> = row.split('|').collect();
                    let now = time::OffsetDateTime::now_utc();
                    let parse = |text: &str| time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok();
                    let mut state = state.lock().unwrap();
                    let seen = if fields[0] != "0" || fields[2] != "0" { Some(now) } else { parse(fields[1]) };
                    // `update_last_active`: only ever later.
                    if seen > state.last_active {
                        state.last_active = seen;
                    }
                }
                let state = state.lock().unwrap();
                (
                    200,
                    json!({"start_time": state.start_time, "tenant": null, "timeline": null, "status": state.status,
                    "last_active": state.last_active.map(rfc3339), "error": null}),
                )
            }
            ("POST", "/terminate") if matches!(status, "running" | "empty") => {
                state.lock().unwrap().status = "termination_pending_immediate";
                let postgres = postgres.clone();
                let lsn = tokio::task::spawn_blocking(move || {
                    let postgres = postgres?;
                    let lsn = postgres.admin_query("select pg_current_wal_lsn()");
                    postgres.stop_fast();
                    Some(lsn)
                })
                .await
                .unwrap();
                let mut state = state.lock().unwrap();
                (state.status, state.terminated_at) = ("terminated", Some(std::time::Instant::now()));
                (200, json!({"lsn": lsn}))
            }
            ("POST", "/terminate") => invalid(status),
            ("POST", "/configure") if matches!(status, "running" | "empty") => {
                if let Some(postgres) = postgres.clone().filter(|_| status == "running") {
                    let spec = body["spec"].clone();
                    tokio::task::spawn_blocking(move || apply_spec(&postgres, &spec, false)).await.unwrap();
                }
                (200, json!({}))
            }
            ("POST", "/configure") => invalid(status),
            _ => (404, json!({"error": format!("no route {method} {path}")})),
        }
    }

    fn status(&self) -> &'static str {
        self.state.lock().unwrap().status
    }

    /// Whether the process has exited: 0.3 s after an immediate `/terminate` answered
    /// (`ComputeNode::run`, `compute_tools/src/compute.rs`); its container then restarts if the
    /// Deployment still wants a pod.
    fn exited(&self) -> bool {
        self.state.lock().unwrap().terminated_at.is_some_and(|at| at.elapsed() >= Duration::from_millis(300))
    }
}

impl Drop for ComputeCtl {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Plays the kubelet for the computes the operator makes: a compute Deployment with replicas
/// runs as a real Postgres whose roles and databases come from the spec compute_ctl fetches at
/// start (a `Replica`'s refuse writes, as a hot standby does), as compute_ctl applies them (`compute_tools/src/spec_apply.rs`: roles with their
/// SCRAM verifier as `PASSWORD`, databases with their owner). Each database gets a table
/// `whoami` naming the endpoint and timeline, so a query tells which compute answered. A
/// Deployment gone (or at zero replicas) stops its compute; a new pod template (another
/// timeline) replaces it.
struct Kubelet {
    running: Arc<Mutex<BTreeMap<String, Compute>>>,
    /// Each compute stopped, with what its compute_ctl said then (`terminated` after a clean stop).
    stops: Arc<Mutex<Vec<(String, &'static str)>>>,
    /// Computes started, by endpoint.
    starts: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Kubelet {
    fn start(kube: Arc<FakeKube>, computes: Arc<StandInComputes>, control_plane: String) -> Self {
        kube.pods_run_by_kubelet("app.kubernetes.io/managed-by", MANAGED_BY);
        let running: Arc<Mutex<BTreeMap<String, Compute>>> = Arc::default();
        let stops: Arc<Mutex<Vec<(String, &'static str)>>> = Arc::default();
        let starts: Arc<Mutex<Vec<String>>> = Arc::default();
        let (pods, stopped, started) = (running.clone(), stops.clone(), starts.clone());
        let task = tokio::spawn(async move {
            let api: Api<Deployment> = Api::namespaced(kube.client(), NAMESPACE);
            let ours = ListParams::default().labels(&format!("app.kubernetes.io/managed-by={MANAGED_BY}"));
            loop {
                let deployments = match api.list(&ours).await {
                    Ok(list) => list.items,
                    // A failed list says nothing about what should run.
                    Err(e) => {
                        eprintln!("kubelet stand-in: listing Deployments: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let timeline_of = |d: &Deployment| -> Option<String> {
                    d.spec.as_ref()?.template.metadata.as_ref()?.annotations.as_ref()?.get(TIMELINE_ANNOTATION).cloned()
                };
                let wanted: BTreeMap<String, (i32, String)> = deployments
                    .iter()
                    .filter_map(|d| {
                        Some((d.labels().get(ENDPOINT_LABEL)?.clone(), (d.spec.as_ref()?.replicas.unwrap_or(1), timeline_of(d)?)))
                    })
                    .collect();
                let stale: Vec<String> = pods
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|(e, compute)| {
                        compute.compute_ctl.exited()
                            || wanted.get(*e).is_none_or(|(replicas, timeline)| *replicas < 1 || *timeline != compute.timeline)
                    })
                    .map(|(e, _)| e.clone())
                    .collect();
                for endpoint in &stale {
                    computes.remove(endpoint);
                    let compute = pods.lock().unwrap().remove(endpoint);
                    if let Some(compute) = &compute {
                        stopped.lock().unwrap().push((endpoint.clone(), compute.compute_ctl.status()));
                    }
                    tokio::task::spawn_blocking(move || drop(compute)).await.unwrap();
                    // A container that exited while its pod is wanted restarts: not ready meanwhile.
                    if let Some(deployment) = deployments.iter().find(|d| d.labels().get(ENDPOINT_LABEL) == Some(endpoint)) {
                        let status = json!({"observedGeneration": deployment.metadata.generation, "replicas": 1, "readyReplicas": 0});
                        kube.set_status("apps/v1", "deployments", Some(NAMESPACE), &deployment.name_any(), status);
                    }
                }
                let known: Vec<String> = pods.lock().unwrap().keys().cloned().collect();
                for (endpoint, _) in wanted.iter().filter(|(e, (replicas, _))| *replicas >= 1 && !known.contains(e)) {
                    let compute = match start_compute(endpoint, &control_plane).await {
                        Ok(compute) => compute,
                        // Tried again next round, as a kubelet restarts a failed container.
                        Err(e) => {
                            eprintln!("kubelet stand-in: {e}");
                            continue;
                        }
                    };
                    computes.set(endpoint, &format!("127.0.0.1:{}", compute.postgres.port), compute.compute_ctl.addr);
                    pods.lock().unwrap().insert(endpoint.clone(), compute);
                    started.lock().unwrap().push(endpoint.clone());
                }
                // A running compute's pod is ready (Postgres answers), for its Deployment's spec.
                for deployment in &deployments {
                    let Some(endpoint) = deployment.labels().get(ENDPOINT_LABEL) else { continue };
                    let status = deployment.status.as_ref();
                    let ready = status.and_then(|s| s.ready_replicas).unwrap_or(0);
                    // A status written for an older generation (the spec changed meanwhile) is written again.
                    let observed = status.and_then(|s| s.observed_generation) >= deployment.metadata.generation;
                    if pods.lock().unwrap().contains_key(endpoint) && (ready < 1 || !observed) {
                        let status = json!({"observedGeneration": deployment.metadata.generation, "replicas": 1,
                            "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1});
                        kube.set_status("apps/v1", "deployments", Some(NAMESPACE), &deployment.name_any(), status);
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Self { running, stops, starts, task }
    }

    fn running(&self) -> Vec<String> {
        self.running.lock().unwrap().keys().cloned().collect()
    }

    /// What `sql` answers in `endpoint`'s Postgres, once it is `wanted` (or after 10 s).
    async fn until(&self, endpoint: &str, sql: &str, wanted: &str) -> String {
        let mut answer = String::new();
        for _ in 0..100 {
            let Some(postgres) = self.running.lock().unwrap().get(endpoint).map(|c| c.postgres.clone()) else { break };
            let sql = sql.to_string();
            answer = tokio::task::spawn_blocking(move || postgres.admin_query(&sql)).await.unwrap();
            if answer == wanted {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        answer
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A Postgres set up from the spec the control plane serves compute_ctl for `endpoint`.
async fn start_compute(endpoint: &str, control_plane: &str) -> Result<Compute, String> {
    let path = format!("/compute/api/v2/computes/{endpoint}/spec");
    let mut spec = Value::Null;
    for _ in 0..100 {
        let (status, body) = call_at(control_plane, hyper::Method::GET, &path, None, None).await;
        if status == hyper::StatusCode::OK && body["status"] == "attached" {
            spec = body["spec"].clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !spec.is_object() {
        return Err(format!("compute {endpoint} got no attached spec within 5 s"));
    }
    let timeline = spec["timeline_id"].as_str().unwrap().to_string();
    let postgres = tokio::task::spawn_blocking(move || {
        let postgres = PgServer::start();
        apply_spec(&postgres, &spec, true);
        Arc::new(postgres)
    })
    .await
    .unwrap();
    let compute_ctl = ComputeCtl::start(Some(postgres.clone())).await;
    Ok(Compute { postgres, compute_ctl, timeline })
}

/// What compute_ctl does to the catalog with a spec (`compute_tools/src/spec_apply.rs`, in its
/// order): roles created (or their password set), databases of `delete_db` dropped, databases
/// created with their owner (each with a table `whoami` naming the endpoint and timeline),
/// roles of `delete_role` dropped; nothing with `skip_pg_catalog_updates`. A hot standby
/// (`Replica`) has its primary's catalog instead, which the stand-in makes `at_start`, and
/// refuses writes with the error a read-only transaction gives.
fn apply_spec(postgres: &PgServer, spec: &Value, at_start: bool) {
    let replica = spec["mode"] == "Replica";
    if spec["skip_pg_catalog_updates"] == true && !(replica && at_start) {
        return;
    }
    let list = |sql: &str| postgres.admin_query(sql).lines().map(str::to_string).collect::<Vec<String>>();
    let deltas = |action: &str| -> Vec<String> {
        spec["delta_operations"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|op| op["action"] == action)
            .map(|op| op["name"].as_str().unwrap().to_string())
            .collect()
    };
    let roles = list("select rolname from pg_roles");
    for role in spec["cluster"]["roles"].as_array().unwrap() {
        let (name, verifier) = (role["name"].as_str().unwrap(), role["encrypted_password"].as_str().unwrap());
        let verb = if roles.iter().any(|r| r == name) { "ALTER" } else { "CREATE" };
        postgres.admin_sql(&format!("{verb} ROLE \"{name}\" LOGIN PASSWORD '{verifier}'"));
    }
    for name in deltas("delete_db") {
        postgres.admin_sql(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"));
    }
    let databases = list("select datname from pg_database");
    for database in spec["cluster"]["databases"].as_array().unwrap() {
        let (name, owner) = (database["name"].as_str().unwrap(), database["owner"].as_str().unwrap());
        if databases.iter().any(|d| d == name) {
            continue;
        }
        postgres.admin_sql(&format!("CREATE DATABASE \"{name}\" OWNER \"{owner}\""));
        postgres.admin_sql_in(
            name,
            &format!(
                "CREATE TABLE whoami AS SELECT '{}'::text AS endpoint, '{}'::text AS timeline; GRANT SELECT ON whoami TO PUBLIC",
                spec["endpoint_id"].as_str().unwrap(),
                spec["timeline_id"].as_str().unwrap()
            ),
        );
        if replica {
            postgres.admin_sql(&format!("ALTER DATABASE \"{name}\" SET default_transaction_read_only = on"));
        }
    }
    for name in deltas("delete_role") {
        postgres.admin_sql(&format!("DROP ROLE IF EXISTS \"{name}\""));
    }
}

/// The proxy's certificate for `*.neon.neon.internal` (the default domain of prefix `neon`), in
/// the Secret deploy would have made.
fn proxy_certificate(harness: &Harness) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["*.neon.neon.internal".into()]).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, "*.neon.neon.internal");
    let cert = params.self_signed(&key).unwrap();
    harness.kube.put_object(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "neon-proxy-tls", "namespace": NAMESPACE},
        "data": {"tls.crt": STANDARD.encode(cert.pem()), "tls.key": STANDARD.encode(key.serialize_pem())}}));
}

/// The CLI against the stand-in cluster, run off the test's runtime.
struct Cli {
    wd: Workdir,
    kubeconfig: String,
}

impl Cli {
    fn of(harness: &Harness) -> Self {
        let (wd, kubeconfig) = harness.cli_workdir();
        Self { wd, kubeconfig }
    }

    async fn run(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = self.wd.cmd(&[args, &["--kubeconfig", &self.kubeconfig]].concat());
        tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap()
    }
}

/// A deployment on the stand-ins with its operator running (scale to zero paced by `scaling`),
/// the kubelet stand-in running its computes, and the proxy stand-in routing through
/// `wake_compute`.
async fn deployment(scaling: neonctl_control_plane::Scaling) -> (Harness, Running, String, Kubelet, ProxyStandIn, Cli) {
    let harness = Harness::start(false).await;
    harness.computes.remove("main");
    let running = harness.running_operator_with(scaling).await;
    let control_plane_addr = running.addr().to_string();
    let kubelet = Kubelet::start(harness.kube.clone(), harness.computes.clone(), control_plane_addr.clone());
    proxy_certificate(&harness);
    let proxy = ProxyStandIn::start(harness.kube.clone(), Upstream::WakeCompute(control_plane_addr.clone())).await;
    let cli = Cli::of(&harness);
    (harness, running, control_plane_addr, kubelet, proxy, cli)
}

/// `select endpoint from whoami` with psql at `url` (the printed one, with the password).
fn whoami(url: &str) -> Result<String, String> {
    query(url, "select endpoint from whoami")
}

fn query(url: &str, sql: &str) -> Result<String, String> {
    let psql = PgServer::psql_bin();
    let out = std::process::Command::new(psql)
        .args(["-X", "-w", "-tA", "-c", sql])
        .arg(url.replace(neonctl_aws::phases::deploy::connect::PASSWORD_PLACEHOLDER, &PASSWORD.replace(' ', "%20")))
        .output()
        .unwrap();
    if out.status.success() { Ok(stdout(&out).trim().to_string()) } else { Err(stderr(&out)) }
}

/// `branches create` gives a branch its own compute, reached through the proxy by its endpoint
/// (and not main's); `connection-string` prints the way there; `branches delete` stops the
/// compute, then deletes the timeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_branch_gets_its_own_compute_behind_the_proxy() {
    let (harness, running, control_plane_addr, kubelet, proxy, cli) = deployment(Default::default()).await;

    // main's compute: made by the operator from the endpoint deploy would have written.
    for _ in 0..300 {
        if kubelet.running().contains(&"main".to_string()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = cli.run(&["branches", "create", "dev", "--timeout", "60"]).await;
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("endpoint dev: its compute runs"), "{}", stdout(&out));
    assert!(stdout(&out).contains("postgresql://alice:<password>@dev.neon.neon.internal:5432/neondb?sslmode=require"), "{}", stdout(&out));
    assert_eq!(kubelet.running(), ["dev", "main"]);

    // What the operator made for dev: owned by its endpoint, selected by it alone.
    let deployment = harness.kube.get("apps/v1", "deployments", Some(NAMESPACE), "neon-compute-dev").expect("dev's Deployment");
    let endpoint = harness.kube.get("neonctl-aws.dev/v1alpha1", "neonendpoints", Some(NAMESPACE), "dev").unwrap();
    let owner = &deployment["metadata"]["ownerReferences"][0];
    assert_eq!((owner["kind"].as_str(), &owner["uid"]), (Some("NeonEndpoint"), &endpoint["metadata"]["uid"]));
    assert_eq!(deployment["spec"]["selector"]["matchLabels"][ENDPOINT_LABEL], "dev");
    assert_eq!(deployment["metadata"]["labels"]["neonctl-aws.dev/branch"], "dev");
    assert!(deployment["spec"]["template"]["spec"]["containers"][0]["args"].as_array().unwrap().contains(&json!("--compute-id=dev")));
    let dev_timeline =
        harness.kube.get("neonctl-aws.dev/v1alpha1", "neonbranches", Some(NAMESPACE), "dev").unwrap()["spec"]["timelineId"].clone();
    assert_eq!(deployment["spec"]["template"]["metadata"]["annotations"]["neonctl-aws.dev/timeline"], dev_timeline);
    assert!(harness.kube.get("v1", "services", Some(NAMESPACE), "neon-compute-dev").is_some());
    assert_eq!(
        (endpoint["status"]["phase"].as_str(), endpoint["status"]["compute"].as_str()),
        (Some("Active"), Some("neon-compute-dev")),
        "{}",
        endpoint["status"]
    );

    // Through the proxy, by endpoint: dev's compute answers for dev, main's for main.
    let proxy_address = proxy.addr.to_string();
    let mut urls = BTreeMap::new();
    for branch in ["dev", "main"] {
        let out = cli.run(&["connection-string", branch, "--proxy-address", &proxy_address, "--output", "json"]).await;
        assert!(out.status.success(), "{}", stderr(&out));
        let strings = json_events(&out).into_iter().find(|e| e["kind"] == "connection").expect("the connection result")["data"].clone();
        assert_eq!(strings["endpoint"], branch);
        urls.insert(branch, strings["without_dns"].as_str().unwrap().to_string());
    }
    assert!(urls["dev"].contains("options=endpoint%3Ddev"), "{}", urls["dev"]);
    assert_eq!(whoami(&urls["dev"]), Ok("dev".to_string()));
    assert_eq!(whoami(&urls["main"]), Ok("main".to_string()));
    // A read-only branch: its compute is a hot standby (`Replica`) that reads and refuses writes.
    let out = cli.run(&["branches", "create", "ro", "--read-only", "--timeout", "60"]).await;
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let (_, spec) = call_at(&control_plane_addr, hyper::Method::GET, "/compute/api/v2/computes/ro/spec", None, None).await;
    assert_eq!((&spec["spec"]["mode"], &spec["spec"]["skip_pg_catalog_updates"]), (&json!("Replica"), &json!(true)));
    let out = cli.run(&["connection-string", "ro", "--proxy-address", &proxy_address, "--output", "json"]).await;
    let ro =
        json_events(&out).into_iter().find(|e| e["kind"] == "connection").unwrap()["data"]["without_dns"].as_str().unwrap().to_string();
    assert_eq!(whoami(&ro), Ok("ro".to_string()));
    let refused = query(&ro, "create table t (x int)").unwrap_err();
    assert!(refused.contains("cannot execute CREATE TABLE in a read-only transaction"), "{refused}");
    let list = cli.run(&["branches", "list"]).await;
    assert!(stdout(&list).lines().any(|l| l.starts_with("ro ") && l.contains("ro (read-only)")), "{}", stdout(&list));
    let out = cli.run(&["branches", "delete", "ro", "--timeout", "60"]).await;
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));

    // A read-only endpoint of main: a compute of its own, a hot standby of main's data.
    let out = cli.run(&["endpoints", "create", "main-ro", "--branch", "main", "--read-only", "--timeout", "60"]).await;
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("postgresql://alice:<password>@main-ro.neon.neon.internal:5432/neondb"), "{}", stdout(&out));
    let args = ["connection-string", "main", "--endpoint", "main-ro", "--proxy-address", &proxy_address, "--output", "json"];
    let out = cli.run(&args).await;
    let replica =
        json_events(&out).into_iter().find(|e| e["kind"] == "connection").unwrap()["data"]["without_dns"].as_str().unwrap().to_string();
    assert_eq!(whoami(&replica), Ok("main-ro".to_string()));
    assert!(query(&replica, "insert into whoami values ('x', 'y')").unwrap_err().contains("read-only transaction"));
    let list = cli.run(&["endpoints", "list"]).await;
    assert!(
        stdout(&list).lines().any(|l| l.starts_with("main-ro ") && l.contains("read-only") && l.contains("Active")),
        "{}",
        stdout(&list)
    );
    let out = cli.run(&["endpoints", "delete", "main-ro"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(harness.kube.get("apps/v1", "deployments", Some(NAMESPACE), "neon-compute-main-ro").is_none(), "its compute goes with it");

    let psql = cli.run(&["connection-string", "dev", "--psql"]).await;
    assert!(
        stdout(&psql).contains("psql 'postgresql://alice:<password>@dev.neon.neon.internal:5432/neondb?sslmode=require'"),
        "{}",
        stdout(&psql)
    );
    let unknown = cli.run(&["connection-string", "dev", "--role", "mallory"]).await;
    assert_eq!(unknown.status.code(), Some(2));
    assert!(stderr(&unknown).contains("branch dev has no role mallory; it has: alice"), "{}", stderr(&unknown));

    // A role of its own on dev: its password only in a Secret and as the verifier the proxy and
    // the compute get; a database it owns; a role that owns one stays.
    let out = cli.run(&["roles", "create", "app", "--branch", "dev", "--show-password", "--output", "json"]).await;
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let secret = harness.kube.get("v1", "secrets", Some(NAMESPACE), "neon-role-dev-app").expect("the role's Secret");
    let password = String::from_utf8(STANDARD.decode(secret["data"]["password"].as_str().unwrap()).unwrap()).unwrap();
    let printed = json_events(&out).into_iter().find(|e| e["kind"] == "connection").unwrap()["data"]["connection_string"].clone();
    assert_eq!(printed, format!("postgresql://app:{password}@dev.neon.neon.internal:5432/neondb?sslmode=require"));
    let access = "/proxy/get_endpoint_access_control?session_id=s&endpointish=dev&role=app";
    let (status, body) = call_at(&control_plane_addr, hyper::Method::GET, access, None, None).await;
    assert_eq!(status, hyper::StatusCode::OK, "{body}");
    let verifier = neonctl_aws::neon::Secret(body["role_secret"].as_str().unwrap().to_string());
    assert!(neonctl_contract::scram::matches(&verifier, &password), "the proxy checks the generated password");
    let (_, spec) = call_at(&control_plane_addr, hyper::Method::GET, "/compute/api/v2/computes/dev/spec", None, None).await;
    assert!(spec["spec"]["cluster"]["roles"].as_array().unwrap().iter().any(|r| r["name"] == "app"), "dev's compute gets it");
    let out = cli.run(&["databases", "create", "shop", "--owner", "app", "--branch", "dev"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let dev_spec = harness.kube.get("neonctl-aws.dev/v1alpha1", "neonbranches", Some(NAMESPACE), "dev").unwrap()["spec"].clone();
    assert!(dev_spec["databases"].as_array().unwrap().contains(&json!({"name": "shop", "owner": "app"})), "{dev_spec}");
    let refused = cli.run(&["roles", "delete", "app", "--branch", "dev"]).await;
    assert_eq!(refused.status.code(), Some(2));
    assert!(stderr(&refused).contains("role app owns the database(s) shop on branch dev"), "{}", stderr(&refused));
    let shown = cli.run(&["connection-string", "dev", "--role", "app", "--database", "shop", "--show-password"]).await;
    assert!(stdout(&shown).contains(&format!("postgresql://app:{password}@dev.neon.neon.internal:5432/shop")), "{}", stdout(&shown));
    let roles = cli.run(&["roles", "list", "--branch", "dev"]).await;
    assert!(stdout(&roles).contains("neon-role-dev-app"), "{}", stdout(&roles));
    let bad = cli.run(&["roles", "create", "App-1", "--branch", "dev"]).await;
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    let shop = "select count(*) from pg_database where datname = 'shop'";
    assert_eq!(kubelet.until("dev", shop, "1").await, "1", "dev's compute made shop");

    // Deleted, the database and then its owner are dropped from dev's compute (compute_ctl's
    // delta operations), and stay dropped.
    let out = cli.run(&["databases", "delete", "shop", "--branch", "dev"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cli.run(&["roles", "delete", "app", "--branch", "dev"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let (_, spec) = call_at(&control_plane_addr, hyper::Method::GET, "/compute/api/v2/computes/dev/spec", None, None).await;
    assert_eq!(
        spec["spec"]["delta_operations"],
        json!([{"action": "delete_db", "name": "shop"}, {"action": "delete_role", "name": "app"}])
    );
    assert_eq!(kubelet.until("dev", shop, "0").await, "0", "shop dropped");
    let app = "select count(*) from pg_roles where rolname = 'app'";
    assert_eq!(kubelet.until("dev", app, "0").await, "0", "app dropped");
    let owners = cli.run(&["databases", "delete", "neondb", "--branch", "main"]).await;
    assert_eq!(owners.status.code(), Some(2), "deploy's own database stays: {}", stderr(&owners));

    let list = cli.run(&["branches", "list"]).await;
    let dev_row = stdout(&list).lines().find(|l| l.starts_with("dev ")).map(str::to_string).unwrap_or_default();
    assert!(dev_row.contains(" dev ") && dev_row.contains("Active"), "{}", stdout(&list));

    // Reset: a new timeline from main's head, the same connection string, the old timeline gone.
    let branch_of = |name: &str| harness.kube.get("neonctl-aws.dev/v1alpha1", "neonbranches", Some(NAMESPACE), name);
    let dev_timeline = dev_timeline.as_str().unwrap().to_string();
    harness.storcon.clear_calls();
    let out = cli.run(&["branches", "reset", "dev", "--timeout", "60"]).await;
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("branch dev reset to its parent's head; same endpoint and connection string"), "{}", stdout(&out));
    let reset = branch_of("dev").unwrap();
    let reset_timeline = reset["spec"]["timelineId"].as_str().unwrap().to_string();
    assert_ne!(reset_timeline, dev_timeline);
    assert_eq!(reset["spec"]["parentTimelineId"], crate::controlplane::TIMELINE);
    assert_eq!(query(&urls["dev"], "select timeline from whoami"), Ok(reset_timeline.clone()), "dev's compute runs on it");
    let timeline_calls = |storcon: &crate::reconcile::StorageController| -> Vec<String> {
        storcon.calls().into_iter().filter(|c| c.path.contains("/timeline")).map(|c| format!("{} {}", c.method, c.path)).collect()
    };
    let tenant = crate::controlplane::TENANT;
    for _ in 0..100 {
        if branch_of("dev").unwrap()["status"]["timelineId"] == reset_timeline.as_str() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The new timeline (asked for again while the operator's cache catches up: idempotent),
    // then the old one goes, once the compute moved.
    let calls = timeline_calls(&harness.storcon);
    let (last, creates) = calls.split_last().unwrap();
    assert_eq!(last, &format!("DELETE /v1/tenant/{tenant}/timeline/{dev_timeline}"), "{calls:?}");
    assert!(!creates.is_empty() && creates.iter().all(|c| c == &format!("POST /v1/tenant/{tenant}/timeline")), "{calls:?}");
    assert!(
        harness
            .storcon
            .calls()
            .iter()
            .filter(|c| c.method == hyper::Method::POST)
            .all(|c| c.body["new_timeline_id"] == reset_timeline.as_str()),
        "only the new timeline is made"
    );

    // Restore: dev's data as of an LSN, the same connection string; what it had is kept as a branch.
    harness.storcon.clear_calls();
    let out = cli.run(&["branches", "restore", "dev", "--at", "0/1500000", "--timeout", "60"]).await;
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let restored = branch_of("dev").unwrap();
    let restored_timeline = restored["spec"]["timelineId"].as_str().unwrap().to_string();
    assert_eq!(
        (restored["spec"]["parentTimelineId"].as_str(), restored["spec"]["ancestorStartLsn"].as_str()),
        (Some(reset_timeline.as_str()), Some("0/1500000"))
    );
    let backups: Vec<Value> = harness
        .kube
        .list("neonctl-aws.dev/v1alpha1", "neonbranches")
        .into_iter()
        .filter(|b| b["metadata"]["name"].as_str().unwrap().starts_with("dev-old-"))
        .collect();
    assert_eq!(backups.len(), 1, "the data dev had is kept as a branch");
    assert_eq!(backups[0]["spec"]["timelineId"], reset_timeline.as_str());
    assert_eq!(backups[0]["status"]["phase"], "Ready");
    assert_eq!(query(&urls["dev"], "select timeline from whoami"), Ok(restored_timeline.clone()));
    let created = harness.storcon.calls().into_iter().find(|c| c.body["new_timeline_id"] == restored_timeline.as_str()).unwrap();
    assert_eq!(
        (created.body["ancestor_timeline_id"].as_str(), created.body["ancestor_start_lsn"].as_str()),
        (Some(reset_timeline.as_str()), Some("0/1500000"))
    );
    assert!(!timeline_calls(&harness.storcon).iter().any(|c| c.starts_with("DELETE")), "the kept timeline stays");
    let backup = backups[0]["metadata"]["name"].as_str().unwrap().to_string();
    let refused = cli.run(&["branches", "delete", &backup]).await;
    assert_eq!(refused.status.code(), Some(2), "dev branches from it now: {}", stderr(&refused));
    assert!(stderr(&refused).contains("or pass --with-children"), "{}", stderr(&refused));

    // Renamed: the same timeline, endpoint and connection string, role passwords kept; nothing
    // leaves storage.
    let out = cli.run(&["roles", "create", "bob", "--branch", "dev"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    harness.storcon.clear_calls();
    let out = cli.run(&["branches", "rename", "dev", "feature", "--timeout", "60"]).await;
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert!(branch_of("dev").is_none(), "the old name is gone");
    assert_eq!(branch_of("feature").unwrap()["spec"]["timelineId"], restored_timeline.as_str());
    let endpoint = harness.kube.get("neonctl-aws.dev/v1alpha1", "neonendpoints", Some(NAMESPACE), "dev").unwrap();
    assert_eq!(endpoint["spec"]["branch"], "feature");
    assert!(!timeline_calls(&harness.storcon).iter().any(|c| c.starts_with("DELETE")), "{:?}", timeline_calls(&harness.storcon));
    assert_eq!(whoami(&urls["dev"]), Ok("dev".to_string()));
    assert!(harness.kube.get("v1", "secrets", Some(NAMESPACE), "neon-role-dev-bob").is_none());
    let bob = cli.run(&["connection-string", "feature", "--role", "bob", "--show-password"]).await;
    assert!(bob.status.success() && !stdout(&bob).contains("<password>"), "{}\n{}", stdout(&bob), stderr(&bob));
    let again = cli.run(&["branches", "rename", "dev", "feature"]).await;
    assert!(stdout(&again).contains("branch dev is feature already"), "{}", stdout(&again));

    // Deleting the kept branch with its child: the child first (its compute stops, then its
    // timeline goes), then the kept one.
    let plan = cli.run(&["branches", "delete", &backup, "--with-children", "--plan"]).await;
    let planned = stdout(&plan);
    let planned: Vec<&str> = planned.lines().map(|l| l.split(':').next().unwrap()).collect();
    assert_eq!(
        planned,
        [
            "delete NeonEndpoint(s) dev",
            &format!("delete NeonBranch {NAMESPACE}/feature"),
            &format!("delete NeonBranch {NAMESPACE}/{backup}")
        ],
        "{}",
        stdout(&plan)
    );
    harness.storcon.clear_calls();
    let out = cli.run(&["branches", "delete", &backup, "--with-children", "--timeout", "60"]).await;
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    for kind in [("neonctl-aws.dev/v1alpha1", "neonendpoints"), ("apps/v1", "deployments"), ("v1", "services")] {
        let name = if kind.1 == "neonendpoints" { "dev" } else { "neon-compute-dev" };
        assert!(harness.kube.get(kind.0, kind.1, Some(NAMESPACE), name).is_none(), "{kind:?} {name} is gone");
    }
    let deletes: Vec<String> = harness.storcon.calls().into_iter().filter(|c| c.method == hyper::Method::DELETE).map(|c| c.path).collect();
    assert_eq!(
        deletes,
        [format!("/v1/tenant/{tenant}/timeline/{restored_timeline}"), format!("/v1/tenant/{tenant}/timeline/{reset_timeline}")]
    );
    for _ in 0..100 {
        if kubelet.running() == ["main"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(kubelet.running(), ["main"], "dev's compute stopped");
    assert_eq!(whoami(&urls["main"]), Ok("main".to_string()), "main's untouched");
    assert!(branch_of(&backup).is_none() && branch_of("feature").is_none());
    running.stop().await;
}

/// `cargo xtask bench` runs this (`--ignored`): `branches create` until the branch is Ready and
/// its compute Active, with pods ready at once (the product's own time, not a pod's start;
/// goal ≤ 1 s), and `branches list` among 1,000 branches with their endpoints (goal ≤ 1 s, one
/// list call per kind).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: cargo xtask bench"]
async fn bench_branches_at_scale() {
    const COUNT: usize = 1000;
    let harness = Harness::start(false).await;
    let running = harness.running_operator().await;
    let (wd, kubeconfig) = harness.cli_workdir();
    let cli = |args: &[&str]| {
        let mut cmd = wd.cmd(&[args, &["--kubeconfig", &kubeconfig]].concat());
        async move {
            let started = std::time::Instant::now();
            let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
            (out, started.elapsed())
        }
    };
    // main first: the operator is warm, as in a deployment.
    for _ in 0..200 {
        let main = harness.kube.get("neonctl-aws.dev/v1alpha1", "neonendpoints", Some(NAMESPACE), "main");
        if main.is_some_and(|m| m["status"]["phase"] == "Active") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut creates = Vec::new();
    for n in 0..5 {
        let (out, took) = cli(&["branches", "create", &format!("dev{n}"), "--timeout", "30"]).await;
        assert!(out.status.success(), "{}", stderr(&out));
        creates.push(took.as_secs_f64() * 1000.0);
    }
    creates.sort_by(f64::total_cmp);
    let median = creates[creates.len() / 2];

    let template = harness.kube.get("neonctl-aws.dev/v1alpha1", "neonbranches", Some(NAMESPACE), "dev0").unwrap();
    for n in 0..COUNT {
        let mut branch = template.clone();
        branch["metadata"] = json!({"name": format!("b{n}"), "namespace": NAMESPACE});
        branch["spec"]["timelineId"] = json!(format!("{:032x}", n + 1));
        harness.kube.put_object(branch);
        harness.kube.put_object(json!({"apiVersion": "neonctl-aws.dev/v1alpha1", "kind": "NeonEndpoint",
            "metadata": {"name": format!("b{n}"), "namespace": NAMESPACE}, "spec": {"branch": format!("b{n}")},
            "status": {"phase": "Active"}}));
    }
    // The operator makes their computes first: the list is timed on a settled cluster.
    let started = std::time::Instant::now();
    let settled = || harness.kube.list("neonctl-aws.dev/v1alpha1", "neonendpoints").iter().all(|e| e["status"]["compute"].is_string());
    while !settled() {
        assert!(started.elapsed() < Duration::from_secs(300), "the operator never made every compute");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = harness.kube.requests().len();
    let (out, took) = cli(&["branches", "list", "--output", "json"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = json_events(&out).into_iter().find(|e| e["kind"] == "branches").unwrap()["data"].as_array().unwrap().len();
    let requests = harness.kube.requests()[before..].to_vec();
    let lists = |plural: &str| requests.iter().filter(|r| r.starts_with("GET ") && r.contains(&format!("/{plural}?"))).count();
    let (branch_lists, endpoint_lists) = (lists("neonbranches"), lists("neonendpoints"));
    println!(
        "branches create → Ready and its compute Active (pods ready at once, debug build): median {median:.0} ms of {} (goal ≤ 1000 ms)",
        creates.len()
    );
    println!(
        "branches list with {rows} branches: {:.0} ms (goal ≤ 1000 ms), list calls: {branch_lists} NeonBranch, {endpoint_lists} NeonEndpoint (goal 1 each), {} requests in all",
        took.as_secs_f64() * 1000.0,
        requests.len()
    );
    running.stop().await;
    assert!(median <= 1000.0 && took.as_secs_f64() <= 1.0 && branch_lists == 1 && endpoint_lists == 1, "a goal was missed");
}

/// Once its computes run, the operator writes nothing but its storage report: no object, no
/// status rewritten with the same content (a status field it leaves out must be cleared, not
/// kept by the merge patch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settled_operator_writes_only_its_report() {
    let harness = Harness::start(false).await;
    let running = harness.running_operator().await;
    let endpoint = || harness.kube.get("neonctl-aws.dev/v1alpha1", "neonendpoints", Some(NAMESPACE), "main").unwrap();
    for _ in 0..100 {
        if endpoint()["status"]["phase"] == "Active" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = harness.kube.requests().len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let writes: Vec<String> = harness.kube.requests()[before..]
        .iter()
        .filter(|r| !r.starts_with("GET") && !r.contains("/configmaps/neon-control-plane-status?"))
        .cloned()
        .collect();
    assert!(writes.is_empty(), "{writes:#?}");
    let mut status = endpoint()["status"].clone();
    let conditions = status.as_object_mut().unwrap().remove("conditions").unwrap();
    assert_eq!(
        status,
        json!({"phase": "Active", "observedGeneration": 1, "compute": "neon-compute-main", "timelineId": crate::controlplane::TIMELINE})
    );
    assert_eq!(
        (&conditions[0]["type"], &conditions[0]["status"], &conditions[0]["reason"]),
        (&json!("Ready"), &json!("True"), &json!("ComputeRunning"))
    );
    running.stop().await;
}

/// The `phase` of NeonEndpoint `name`, and its whole status.
fn endpoint_status(harness: &Harness, name: &str) -> Value {
    harness.kube.get("neonctl-aws.dev/v1alpha1", "neonendpoints", Some(NAMESPACE), name).map(|e| e["status"].clone()).unwrap_or_default()
}

/// Waits (at most `seconds`) until endpoint `name` shows `phase`.
async fn until_phase(harness: &Harness, name: &str, phase: &str, seconds: u64) {
    let started = std::time::Instant::now();
    while endpoint_status(harness, name)["phase"] != phase {
        assert!(started.elapsed() < Duration::from_secs(seconds), "endpoint {name} never {phase}: {}", endpoint_status(harness, name));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The merge patches that scaled `deployment` (the scaler's, never the template's applier).
fn scalings(harness: &Harness, deployment: &str) -> Vec<String> {
    let path = format!("PATCH /apis/apps/v1/namespaces/{NAMESPACE}/deployments/{deployment}?");
    harness
        .kube
        .requests()
        .into_iter()
        .filter(|r| r.starts_with(&path) && r.contains("fieldManager=neonctl-aws-control-plane-scaler"))
        .collect()
}

/// Scale to zero, end to end: an endpoint idle past its `suspendTimeoutSeconds` (as its
/// compute_ctl reports activity, over a real Postgres) is stopped through compute_ctl's
/// `/terminate` and scaled to zero, never while a session has a transaction open; a connection
/// through the proxy stand-in (retrying as neon's proxy does) wakes it and runs `select 1`; 100
/// concurrent `wake_compute` calls for a suspended endpoint start it once; `endpoints
/// suspend|start|update|list` act and report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_computes_scale_to_zero_and_a_connection_wakes_them() {
    let scaling = neonctl_control_plane::Scaling {
        poll: Duration::from_millis(200),
        wake_timeout: Duration::from_secs(20),
        last_active_every: Duration::from_secs(1),
    };
    let (harness, running, control_plane_addr, kubelet, proxy, cli) = deployment(scaling).await;

    let out = cli.run(&["endpoints", "update", "main", "--suspend-timeout", "0"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cli.run(&["branches", "create", "dev", "--suspend-timeout", "2", "--timeout", "60"]).await;
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let out = cli.run(&["connection-string", "dev", "--proxy-address", &proxy.addr.to_string(), "--output", "json"]).await;
    let url =
        json_events(&out).into_iter().find(|e| e["kind"] == "connection").unwrap()["data"]["without_dns"].as_str().unwrap().to_string();
    let url = url.replace(neonctl_aws::phases::deploy::connect::PASSWORD_PLACEHOLDER, &PASSWORD.replace(' ', "%20"));
    until_phase(&harness, "dev", "Active", 30).await;

    // A session with a transaction open is activity: dev runs well past its timeout.
    let mut session = std::process::Command::new(PgServer::psql_bin())
        .args(["-X", "-q", &url])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    session.stdin.as_mut().unwrap().write_all(b"begin;\nselect 1;\n").unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(endpoint_status(&harness, "dev")["phase"], "Active", "suspended with a transaction open");
    assert!(kubelet.running().contains(&"dev".to_string()));
    let shown = endpoint_status(&harness, "dev")["lastActive"].clone();
    assert!(shown.is_string(), "lastActive is shown while it runs: {}", endpoint_status(&harness, "dev"));

    // Closed, the session leaves dev idle: Postgres stopped through compute_ctl, then zero replicas.
    drop(session.stdin.take());
    tokio::task::spawn_blocking(move || session.wait().unwrap()).await.unwrap();
    until_phase(&harness, "dev", "Suspended", 15).await;
    let deployment = harness.kube.get("apps/v1", "deployments", Some(NAMESPACE), "neon-compute-dev").unwrap();
    assert_eq!(deployment["spec"]["replicas"], 0);
    let status = endpoint_status(&harness, "dev");
    assert!(status["message"].as_str().unwrap().contains("idle since"), "{status}");
    assert!(status["lastActive"].as_str() >= shown.as_str(), "{status}");
    for _ in 0..100 {
        if !kubelet.running().contains(&"dev".to_string()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(kubelet.running(), ["main"], "main never suspends (timeout 0)");
    assert_eq!(*kubelet.stops.lock().unwrap(), [("dev".to_string(), "terminated")], "compute_ctl's /terminate before the scale-down");
    let list = cli.run(&["endpoints", "list"]).await;
    let dev_row = stdout(&list).lines().find(|l| l.starts_with("dev ")).unwrap_or_default().to_string();
    assert!(dev_row.contains("Suspended") && dev_row.contains("2s"), "{}", stdout(&list));
    assert!(stdout(&list).lines().any(|l| l.starts_with("main ") && l.contains("Active") && l.contains("never")), "{}", stdout(&list));

    // The first connection through the proxy wakes it.
    assert_eq!(query(&url, "select 1"), Ok("1".to_string()));
    assert_eq!(scalings(&harness, "neon-compute-dev").len(), 2, "one suspend, one wake");
    assert_eq!(endpoint_status(&harness, "dev")["phase"], "Active");

    // Idle again, suspended again; then 100 connections at once start it once.
    until_phase(&harness, "dev", "Suspended", 15).await;
    let before = (scalings(&harness, "neon-compute-dev").len(), kubelet.starts.lock().unwrap().len());
    let wake = "/proxy/wake_compute?session_id=s&application_name=psql&endpointish=dev";
    let answers = futures::future::join_all((0..100).map(|_| call_at(&control_plane_addr, hyper::Method::GET, wake, None, None))).await;
    let addresses: std::collections::BTreeSet<String> = answers
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, hyper::StatusCode::OK, "{body}");
            body["address"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(addresses.len(), 1, "{addresses:?}");
    assert_eq!(scalings(&harness, "neon-compute-dev").len(), before.0 + 1, "one scale-up for 100 wakes");
    assert_eq!(kubelet.starts.lock().unwrap().len(), before.1 + 1, "one pod started");

    // By hand: never by itself, then suspend and start.
    let out = cli.run(&["endpoints", "update", "dev", "--suspend-timeout", "0"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cli.run(&["endpoints", "suspend", "dev", "--timeout", "30"]).await;
    assert!(out.status.success() && stdout(&out).contains("endpoint dev is Suspended"), "{}\n{}", stdout(&out), stderr(&out));
    let again = cli.run(&["endpoints", "suspend", "dev"]).await;
    assert!(stdout(&again).contains("endpoint dev is Suspended already"), "{}", stdout(&again));
    let out = cli.run(&["endpoints", "start", "dev", "--timeout", "30"]).await;
    assert!(out.status.success() && stdout(&out).contains("endpoint dev is Active"), "{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(whoami(&url), Ok("dev".to_string()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(endpoint_status(&harness, "dev")["phase"], "Active", "timeout 0: never suspended");

    let (_, metrics) = crate::controlplane::call_at_text(&control_plane_addr, "/metrics").await;
    assert!(metrics.contains("neonctl_control_plane_wakes_total 3"), "{metrics}");
    assert!(metrics.contains("neonctl_control_plane_suspends_total 3"), "{metrics}");
    assert!(metrics.contains("neonctl_control_plane_wake_seconds_count 2"), "{metrics}");
    running.stop().await;
}

/// `cargo xtask bench` runs this (`--ignored`): the control plane's own share of a wake, from
/// `wake_compute` to its answer, with pods ready at once and a compute_ctl that answers at once
/// (goal: p99 ≤ 100 ms), and the Kubernetes calls each wake makes; then, with 1,000 suspended
/// endpoints, the calls the control plane makes while nothing happens (goal: none beyond
/// watches and its storage report).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: cargo xtask bench"]
async fn bench_scale_to_zero() {
    const WAKES: usize = 50;
    const SUSPENDED: usize = 1000;
    let harness = Harness::start(false).await;
    let running = harness.running_operator().await;
    let control_plane = running.addr().to_string();
    let compute_ctl = ComputeCtl::start(None).await;
    until_phase(&harness, "main", "Active", 60).await;
    for n in 0..SUSPENDED {
        let name = format!("s{n}");
        harness.computes.set(&name, "127.0.0.1:1", compute_ctl.addr);
        harness.kube.put_object(json!({"apiVersion": "neonctl-aws.dev/v1alpha1", "kind": "NeonEndpoint",
            "metadata": {"name": name, "namespace": NAMESPACE}, "spec": {"branch": "main"}}));
    }
    let started = std::time::Instant::now();
    let made = || {
        harness
            .kube
            .list("apps/v1", "deployments")
            .iter()
            .filter(|d| d["metadata"]["name"].as_str().is_some_and(|n| n.starts_with("neon-compute-s")))
            .count()
    };
    while made() < SUSPENDED {
        assert!(started.elapsed() < Duration::from_secs(300), "the operator never made every compute");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Scaled to zero by hand (`kubectl scale`): the operator reports them Suspended.
    for n in 0..SUSPENDED {
        harness.kube.scale_deployment(NAMESPACE, &format!("neon-compute-s{n}"), 0);
    }
    let suspended =
        || harness.kube.list("neonctl-aws.dev/v1alpha1", "neonendpoints").iter().filter(|e| e["status"]["phase"] == "Suspended").count();
    while suspended() < SUSPENDED {
        assert!(started.elapsed() < Duration::from_secs(600), "not every endpoint was reported Suspended: {}", suspended());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Nothing happens for 30 s.
    let quiet = Duration::from_secs(30);
    let before = harness.kube.requests().len();
    tokio::time::sleep(quiet).await;
    let requests = harness.kube.requests()[before..].to_vec();
    let report = |r: &String| r.contains("/configmaps/neon-control-plane-status");
    let calls: Vec<&String> = requests.iter().filter(|r| !r.contains("watch=true") && !report(r)).collect();
    let per_minute = |count: usize| count as f64 * 60.0 / quiet.as_secs_f64();

    // Wakes, one at a time: the control plane's share.
    let mut took = Vec::new();
    let mut kube_calls = Vec::new();
    let wake = |name: String| format!("/proxy/wake_compute?session_id=s&application_name=psql&endpointish={name}");
    for n in 0..WAKES {
        let before = harness.kube.requests().len();
        let started = std::time::Instant::now();
        let (status, body) = call_at(&control_plane, hyper::Method::GET, &wake(format!("s{n}")), None, None).await;
        took.push(started.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(status, hyper::StatusCode::OK, "{body}");
        let calls: Vec<String> = harness.kube.requests()[before..].iter().filter(|r| !r.contains("watch=true")).cloned().collect();
        // The wake's own calls, and the operator's status writes (Starting, Active) it causes.
        let own = calls.iter().filter(|r| r.contains("/deployments/")).count();
        kube_calls.push((own, calls.len() - own));
    }
    took.sort_by(f64::total_cmp);
    let percentile = |p: f64| took[((took.len() as f64 * p).ceil() as usize).clamp(1, took.len()) - 1];
    let (p50, p99) = (percentile(0.50), percentile(0.99));
    let own: std::collections::BTreeSet<usize> = kube_calls.iter().map(|c| c.0).collect();
    let status_writes = kube_calls.iter().map(|c| c.1).max().unwrap_or_default();
    println!(
        "wake_compute of a suspended compute, the control plane's share (pods ready at once, debug build): p50 {p50:.1} ms, p99 {p99:.1} ms \
         of {WAKES} (goal p99 ≤ 100 ms); Kubernetes calls per wake: {own:?} (the scale-up), and up to {status_writes} status write(s) of the operator's",
    );
    println!(
        "with {SUSPENDED} suspended endpoints, nothing happening for {}s: {:.0} calls/min beyond watches (goal 0); the storage report \
         besides: {:.1} call(s) per round, whatever the endpoints{}",
        quiet.as_secs(),
        per_minute(calls.len()),
        requests.iter().filter(|r| report(r)).count() as f64 / (quiet.as_secs_f64() / 0.2),
        if calls.is_empty() { String::new() } else { format!(": {calls:?}") }
    );
    running.stop().await;
    assert!(p99 <= 100.0 && calls.is_empty() && own == std::collections::BTreeSet::from([1]), "a goal was missed");
}

/// A compute that does not come up: while its pod only starts, `wake_compute` answers the
/// cplane-v1 error neon's proxy retries; once the pod's status says why it cannot run (no node
/// with room, an image that cannot be pulled), the endpoint's `Ready` condition says so and the
/// wake's answer names the endpoint and the reason, which the proxy gives up with. A wake whose control plane stops half-way is finished by another replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compute_that_cannot_start_is_reported_and_another_replica_finishes_a_wake() {
    let harness = Harness::start(false).await;
    let compute_ctl = ComputeCtl::start(None).await;
    harness.computes.set("main", "compute-main:55432", compute_ctl.addr);
    let scaling = neonctl_control_plane::Scaling { wake_timeout: Duration::from_millis(500), ..Default::default() };
    let running = harness.running_operator_with(scaling).await;
    let control_plane = running.addr().to_string();
    until_phase(&harness, "main", "Active", 60).await;
    harness.kube.never_ready("neon-compute-stuck");
    harness.kube.put_object(json!({"apiVersion": "neonctl-aws.dev/v1alpha1", "kind": "NeonEndpoint",
        "metadata": {"name": "stuck", "namespace": NAMESPACE}, "spec": {"branch": "main"}}));
    until_phase(&harness, "stuck", "Starting", 30).await;
    let wake = |name: &str| format!("/proxy/wake_compute?session_id=s&application_name=psql&endpointish={name}");

    let (status, body) = call_at(&control_plane, hyper::Method::GET, &wake("stuck"), None, None).await;
    assert_eq!(status, hyper::StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"]["details"]["error_info"]["reason"], "RUNNING_OPERATIONS", "retried by the proxy: {body}");

    // A node without room: the endpoint's Ready condition says so, and the wake's answer.
    let pod = |status: Value| {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "neon-compute-stuck-5d9c-x", "namespace": NAMESPACE,
                "labels": {ENDPOINT_LABEL: "stuck", "app.kubernetes.io/managed-by": MANAGED_BY}},
            "spec": {"containers": [{"name": "compute", "image": "registry.test/compute:1"}]},
            "status": status})
    };
    let full = "0/3 nodes are available: 3 Insufficient memory. preemption: 0/3 nodes are available";
    harness.kube.put_object(pod(json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
        "reason": "Unschedulable", "message": full}]})));
    let condition = |harness: &Harness| endpoint_status(harness, "stuck")["conditions"][0].clone();
    let started = std::time::Instant::now();
    while condition(&harness)["reason"] != "Unschedulable" {
        assert!(started.elapsed() < Duration::from_secs(30), "{}", endpoint_status(&harness, "stuck"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(condition(&harness)["status"], "False");
    assert!(condition(&harness)["message"].as_str().unwrap().contains(full), "{}", condition(&harness));
    let (_, body) = call_at(&control_plane, hyper::Method::GET, &wake("stuck"), None, None).await;
    assert!(body["error"].as_str().unwrap().contains(&format!("cannot be scheduled: {full}")), "{body}");

    // An image that cannot be pulled: the proxy gives up with the reason.
    harness.kube.put_object(pod(json!({"phase": "Pending", "containerStatuses": [{"name": "compute", "ready": false,
        "restartCount": 0, "image": "registry.test/compute:1", "imageID": "",
        "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"registry.test/compute:1\""}}}]})));
    while condition(&harness)["reason"] != "ImagePullBackOff" {
        assert!(started.elapsed() < Duration::from_secs(30), "{}", endpoint_status(&harness, "stuck"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = call_at(&control_plane, hyper::Method::GET, &wake("stuck"), None, None).await;
    assert_eq!(status, hyper::StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let message = body["status"]["details"]["user_facing_message"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("endpoint stuck's compute cannot start") && message.contains("ImagePullBackOff"), "{body}");
    assert!(body["status"]["details"]["error_info"].is_null(), "not retried: {body}");

    // A wake on a replica that stops half-way (the scale-up made) is finished by the other.
    let (_, follower) = harness.control_plane().await;
    harness.kube.scale_deployment(NAMESPACE, "neon-compute-main", 0);
    until_phase(&harness, "main", "Suspended", 30).await;
    harness.kube.never_ready("neon-compute-main");
    let scaled = scalings(&harness, "neon-compute-main").len();
    let interrupted = tokio::spawn({
        let path = wake("main");
        let control_plane = control_plane.clone();
        async move { call_at(&control_plane, hyper::Method::GET, &path, None, None).await }
    });
    while scalings(&harness, "neon-compute-main").len() == scaled {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.stop().await;
    interrupted.abort();
    harness.kube.set_status("apps/v1", "deployments", Some(NAMESPACE), "neon-compute-main",
        json!({"observedGeneration": harness.kube.get("apps/v1", "deployments", Some(NAMESPACE), "neon-compute-main").unwrap()["metadata"]["generation"], "replicas": 1, "readyReplicas": 1}));
    let (status, body) = call(&follower, hyper::Method::GET, &wake("main"), None, None).await;
    assert_eq!(status, hyper::StatusCode::OK, "{body}");
    assert_eq!(body["address"], "compute-main:55432");
    assert_eq!(scalings(&harness, "neon-compute-main").len(), scaled + 1, "started once");
    follower.stop().await;
}

/// With keys, the operator asks compute_ctl for activity and stops it with the token compute_ctl
/// checks (`compute_id` of that compute, signed by the key whose public half is in the spec's
/// `jwks`): a compute idle past its timeout is stopped and scaled to zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspending_calls_compute_ctl_with_the_token_it_checks() {
    let harness = Harness::start(true).await;
    let public = neonctl_contract::jwt::SigningKey::from_pem(harness.pem.as_deref().unwrap()).unwrap().public_key();
    let compute_ctl = ComputeCtl::start_checking(None, Some((public, "main".into()))).await;
    harness.computes.set("main", "compute-main:55432", compute_ctl.addr);
    let mut main = harness.kube.get("neonctl-aws.dev/v1alpha1", "neonendpoints", Some(NAMESPACE), "main").unwrap();
    main["spec"]["suspendTimeoutSeconds"] = json!(1);
    harness.kube.put_object(main);
    let scaling = neonctl_control_plane::Scaling { poll: Duration::from_millis(100), ..Default::default() };
    let running = harness.running_operator_with(scaling).await;
    until_phase(&harness, "main", "Suspended", 30).await;
    assert_eq!(compute_ctl.status(), "terminated", "stopped through /terminate, with a token it accepted");
    let deployment = harness.kube.get("apps/v1", "deployments", Some(NAMESPACE), "neon-compute-main").unwrap();
    assert_eq!(deployment["spec"]["replicas"], 0);
    running.stop().await;
}
