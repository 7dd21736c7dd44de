//! `control-plane serve`: the SCRAM verifiers against a real Postgres, the API against a plain
//! HTTP client, the hooks against a stand-in compute_ctl, and JWT checks.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use neonctl_aws::neon::control_plane::{Node, Topology};
use neonctl_contract::computes::{ComputeAddress, ComputeTemplate};
use neonctl_contract::jwt::SigningKey;
use neonctl_contract::scram;
use neonctl_contract::service::SERVE_ARGS;
use neonctl_control_plane::computes::ComputeAddresses;
use neonctl_control_plane::store::{Attachment, Branch, Database, Endpoint, MemoryStore, Role, State};
use neonctl_control_plane::{ControlPlane, Keys, Retry, Running, scopes};
use serde_json::{Value, json};

use crate::support::{Workdir, stderr, stdout};

pub(crate) const TENANT: &str = "1f359dd625e519a1a4e8d7509690f6fc";
pub(crate) const TIMELINE: &str = "de200bd42b49cc1814412c7e592dd6e9";
const PASSWORD: &str = "correct horse battery staple";

// ---- SCRAM against Postgres -------------------------------------------------------------

/// Debian's Postgres binaries, newest version first.
fn postgres_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dir| dir.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).filter(|bin| bin.join("initdb").is_file()).collect())
        .unwrap_or_default();
    versions.sort_by_key(|bin| bin.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()).and_then(|v| v.parse::<u32>().ok()));
    versions.pop().expect("Postgres is not installed: apt-get install postgresql (bash .ci/run does this)")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Postgres refuses to run as root: as root, server commands run as the package's `postgres` user.
pub(crate) struct PgServer {
    bin: PathBuf,
    data: PathBuf,
    socket_dir: PathBuf,
    pub(crate) port: u16,
    as_postgres: bool,
    _dir: tempfile::TempDir,
}

impl PgServer {
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(path);
            cmd
        } else {
            Command::new(path)
        }
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        let output = self.command(program).args(args).output().unwrap_or_else(|e| panic!("running {program}: {e}"));
        assert!(output.status.success(), "{program} {args:?} failed: {}", stderr(&output));
        output
    }

    pub(crate) fn start() -> Self {
        let bin = postgres_bin();
        let dir = tempfile::tempdir().unwrap();
        let root = Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false);
        if root {
            let chown = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status().unwrap();
            assert!(chown.success(), "chown to the postgres user (created by Debian's postgresql package)");
        }
        let server = Self {
            bin,
            data: dir.path().join("data"),
            socket_dir: dir.path().to_path_buf(),
            port: free_port(),
            as_postgres: root,
            _dir: dir,
        };
        let data = server.data.to_str().unwrap();
        server.run("initdb", &["-D", data, "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256"]);
        std::fs::write(server.data.join("pg_hba.conf"), "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n").unwrap();
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -c unix_socket_directories={} -c password_encryption=scram-sha-256",
            server.port,
            server.socket_dir.display()
        );
        let log = server.socket_dir.join("postgres.log");
        server.run("pg_ctl", &["-D", data, "-o", &options, "-l", log.to_str().unwrap(), "-w", "start"]);
        server
    }

    /// The psql of this server's version.
    pub(crate) fn psql(&self) -> PathBuf {
        self.bin.join("psql")
    }

    /// The psql of the newest Postgres installed.
    pub(crate) fn psql_bin() -> PathBuf {
        postgres_bin().join("psql")
    }

    /// SQL as the superuser over the Unix socket.
    pub(crate) fn admin_sql(&self, sql: &str) {
        self.admin_sql_in("postgres", sql);
    }

    /// SQL as the superuser in `database`.
    pub(crate) fn admin_sql_in(&self, database: &str, sql: &str) {
        let port = self.port.to_string();
        self.run(
            "psql",
            &[
                "-X",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                self.socket_dir.to_str().unwrap(),
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                database,
                "-c",
                sql,
            ],
        );
    }

    /// The rows of `sql` as the superuser, unaligned (`|` between columns).
    pub(crate) fn admin_query(&self, sql: &str) -> String {
        let port = self.port.to_string();
        let socket = self.socket_dir.to_str().unwrap();
        let out = self
            .run("psql", &["-X", "-tA", "-v", "ON_ERROR_STOP=1", "-h", socket, "-p", &port, "-U", "postgres", "-d", "postgres", "-c", sql]);
        stdout(&out).trim().to_string()
    }

    /// Stops Postgres the way compute_ctl's `/terminate` does (a fast shutdown).
    pub(crate) fn stop_fast(&self) {
        let _ = self.command("pg_ctl").args(["-D", self.data.to_str().unwrap(), "-m", "fast", "-w", "stop"]).output();
    }

    /// A TCP login (SCRAM, per pg_hba) as `user` with `password`.
    fn login(&self, user: &str, password: &str) -> Output {
        Command::new(self.bin.join("psql"))
            .args(["-X", "-w", "-tA", "-c", "select current_user"])
            .arg(format!("host=127.0.0.1 port={} user={user} dbname=postgres sslmode=disable", self.port))
            .env("PGPASSWORD", password)
            .output()
            .unwrap()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self.command("pg_ctl").args(["-D", self.data.to_str().unwrap(), "-m", "immediate", "-w", "stop"]).output();
    }
}

#[test]
fn scram_verifier_authenticates_with_a_real_postgres() {
    let verifier = scram::verifier(PASSWORD);
    let server = PgServer::start();
    // Postgres stores a SCRAM-SHA-256$… password as given instead of hashing it again.
    server.admin_sql(&format!("CREATE ROLE alice LOGIN PASSWORD '{}'", verifier.0));
    let ok = server.login("alice", PASSWORD);
    assert!(ok.status.success(), "login with the right password: {}", stderr(&ok));
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "alice");
    let wrong = server.login("alice", "Tr0ub4dor&3");
    assert!(!wrong.status.success());
    assert!(stderr(&wrong).contains("password authentication failed"), "{}", stderr(&wrong));

    // libpq prepares a non-ASCII password with SASLprep (a no-break space becomes a space, a
    // soft hyphen goes): the verifier must be of the prepared password too.
    let non_ascii = "Grüße\u{00A0}aus\u{00AD}Köln ✓";
    let verifier = scram::verifier(non_ascii);
    server.admin_sql(&format!("CREATE ROLE bob LOGIN PASSWORD '{}'", verifier.0));
    let ok = server.login("bob", non_ascii);
    assert!(ok.status.success(), "a non-ASCII password logs in: {}", stderr(&ok));
    let prepared = server.login("bob", "Grüße ausKöln ✓");
    assert!(prepared.status.success(), "so does its SASLprep form: {}", stderr(&prepared));
    assert!(scram::matches(&verifier, non_ascii));
}

// ---- The API, in process --------------------------------------------------------------

/// A compute_ctl stand-in: records every request and answers with `status` after `delay_ms`.
pub(crate) struct StandIn {
    pub(crate) addr: SocketAddr,
    status: Arc<AtomicU16>,
    delay_ms: Arc<AtomicU64>,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) authorization: Option<String>,
    pub(crate) body: Value,
}

impl StandIn {
    pub(crate) async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let status = Arc::new(AtomicU16::new(200));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (status2, delay2, requests2) = (status.clone(), delay_ms.clone(), requests.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (status, delay, requests) = (status2.clone(), delay2.clone(), requests2.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let (status, delay, requests) = (status.clone(), delay.clone(), requests.clone());
                        async move {
                            tokio::time::sleep(Duration::from_millis(delay.load(Ordering::SeqCst))).await;
                            let (parts, body) = request.into_parts();
                            let body = body.collect().await.unwrap().to_bytes();
                            requests.lock().unwrap().push(Recorded {
                                method: parts.method,
                                path: parts.uri.path().into(),
                                authorization: parts.headers.get("authorization").map(|v| v.to_str().unwrap().into()),
                                body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                            });
                            let status = StatusCode::from_u16(status.load(Ordering::SeqCst)).unwrap();
                            Ok::<_, std::convert::Infallible>(
                                Response::builder().status(status).body(Full::new(Bytes::from_static(b"{}"))).unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Self { addr, status, delay_ms, requests }
    }

    pub(crate) fn configures(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().iter().filter(|r| r.method == Method::POST && r.path == "/configure").cloned().collect()
    }
}

pub(crate) fn node(kind: &str, id: u64, port: u16) -> Node {
    Node { id, pg: format!("{kind}-{id}:{port}"), http: format!("http://{kind}-{id}:1"), availability_zone: "az-a".into() }
}

/// The computes' template of a deployment in namespace `neon` (what `render` writes).
pub(crate) fn compute_template() -> ComputeTemplate {
    let labels: BTreeMap<String, String> =
        [("app.kubernetes.io/instance", "neon"), ("app.kubernetes.io/name", "compute")].map(|(k, v)| (k.to_string(), v.to_string())).into();
    let mut all = labels.clone();
    all.insert("app.kubernetes.io/managed-by".into(), neonctl_contract::computes::MANAGED_BY.into());
    ComputeTemplate {
        namespace: "neon".into(),
        name_prefix: "neon-compute".into(),
        service_domain: "neon.svc.cluster.local".into(),
        labels: all,
        selector: labels,
        image: "registry.test/compute:1".into(),
        service_account: "neon-compute".into(),
        pgbin: "/usr/local/bin/postgres".into(),
        control_plane_uri: "http://neon-control-plane.neon.svc.cluster.local:8080".into(),
        env: Vec::new(),
        resources: Default::default(),
        pod_security: Default::default(),
        container_security: Default::default(),
        pg_port: 55432,
        http_port: 3080,
    }
}

/// Where the tests' computes run: compute_ctl stand-ins (with a real Postgres behind some), by
/// endpoint. What a cluster's DNS does for the control plane.
#[derive(Default)]
pub(crate) struct StandInComputes(Mutex<BTreeMap<String, ComputeAddress>>);

impl StandInComputes {
    pub(crate) fn with(endpoint: &str, pg: &str, http: SocketAddr) -> Arc<Self> {
        let computes = Arc::new(Self::default());
        computes.set(endpoint, pg, http);
        computes
    }

    pub(crate) fn set(&self, endpoint: &str, pg: &str, http: SocketAddr) {
        self.0.lock().unwrap().insert(endpoint.into(), ComputeAddress { pg: pg.into(), http: format!("http://{http}") });
    }

    pub(crate) fn remove(&self, endpoint: &str) {
        self.0.lock().unwrap().remove(endpoint);
    }
}

impl ComputeAddresses for StandInComputes {
    fn of(&self, endpoint: &str) -> Option<ComputeAddress> {
        self.0.lock().unwrap().get(endpoint).cloned()
    }
}

fn topology() -> Topology {
    Topology {
        listen: "127.0.0.1:0".into(),
        region: "us-east-1".into(),
        storage_controller_url: "http://storcon:1234".into(),
        pageservers: (1..=2).map(|id| node("ps", id, 6400)).collect(),
        safekeepers: (1..=3).map(|id| node("sk", id, 5454)).collect(),
        compute: compute_template(),
    }
}

fn state() -> State {
    let mut state = State::default();
    state.branches.insert(
        "br-main".into(),
        Branch {
            project_id: "proj".into(),
            tenant_id: TENANT.into(),
            timeline_id: TIMELINE.into(),
            roles: vec![Role { name: "alice".into(), verifier: scram::verifier(PASSWORD) }],
            databases: vec![Database { name: "neondb".into(), owner: "alice".into() }],
            ..Default::default()
        },
    );
    state.endpoints.insert(
        "main".into(),
        Endpoint {
            branch_id: "br-main".into(),
            allowed_ips: Some(vec!["10.0.0.0/8".into()]),
            stopped: false,
            suspend_timeout_seconds: None,
            read_only: false,
        },
    );
    state.attachments.insert(TENANT.into(), Attachment { pageservers: vec![1], stripe_size: None });
    state
}

/// A fresh Ed25519 private key, as PEM.
pub(crate) fn key_pem() -> String {
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref())
    )
}

async fn start(compute_http: SocketAddr, keys: Keys) -> Running {
    let retry = Retry { first_delay: Duration::from_millis(20), deadline: Duration::from_millis(500) };
    let control_plane = ControlPlane::new(topology(), keys, Box::new(MemoryStore::new(state())), retry)
        .await
        .unwrap()
        .with_compute_addresses(StandInComputes::with("main", "compute-main:55432", compute_http));
    Arc::new(control_plane).start("127.0.0.1:0", None).await.unwrap()
}

/// One request with a plain HTTP client; the answer's status and JSON body.
pub(crate) async fn call(server: &Running, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
    call_at(&server.addr().to_string(), method, path, token, body).await
}

/// [`call`] to the server at `addr` (`host:port`).
pub(crate) async fn call_at(addr: &str, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
    let (status, bytes) = fetch(addr, method, path, token, body).await;
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// A `GET` of a text document (the metrics) from the server at `addr`.
pub(crate) async fn call_at_text(addr: &str, path: &str) -> (StatusCode, String) {
    let (status, bytes) = fetch(addr, Method::GET, path, None, None).await;
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

async fn fetch(addr: &str, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> (StatusCode, Bytes) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut request = Request::builder().method(method).uri(format!("http://{addr}{path}"));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    let response = client.request(request.body(Full::new(body)).unwrap()).await.unwrap();
    let status = response.status();
    (status, response.into_body().collect().await.unwrap().to_bytes())
}

fn attach(node_id: u64) -> Value {
    json!({"tenant_id": TENANT, "preferred_az": "az-a", "stripe_size": null, "shards": [{"node_id": node_id, "shard_number": 0}]})
}

#[tokio::test]
async fn serves_specs_the_proxy_api_and_health() {
    let compute = StandIn::start().await;
    let server = start(compute.addr, Keys::default()).await;

    let (status, body) = call(&server, Method::GET, "/healthz", None, None).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("ok")));

    let (status, body) = call(&server, Method::GET, "/compute/api/v2/computes/main/spec", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "attached");
    assert!(body["compute_ctl_config"]["jwks"]["keys"].is_array());
    let spec = &body["spec"];
    assert_eq!(spec["format_version"], 1.0);
    assert_eq!(spec["suspend_timeout_seconds"], -1);
    assert_eq!(spec["tenant_id"], TENANT);
    assert_eq!(spec["timeline_id"], TIMELINE);
    assert_eq!(spec["mode"], "Primary");
    assert_eq!(spec["pageserver_connstring"], "postgresql://no_user@ps-1:6400");
    assert_eq!(spec["safekeeper_connstrings"], json!(["sk-1:5454", "sk-2:5454", "sk-3:5454"]));
    assert_eq!(spec["endpoint_id"], "main");
    assert_eq!(spec["branch_id"], "br-main");
    assert_eq!(spec["project_id"], "proj");
    assert_eq!(spec["cluster"]["roles"][0]["name"], "alice");
    assert!(spec["cluster"]["roles"][0]["encrypted_password"].as_str().unwrap().starts_with("SCRAM-SHA-256$4096:"));
    assert_eq!(spec["cluster"]["databases"][0], json!({"name": "neondb", "owner": "alice", "options": null}));
    let port = spec["cluster"]["settings"].as_array().unwrap().iter().find(|s| s["name"] == "port").unwrap();
    assert_eq!(port["value"], "55432", "the compute's port from the topology");
    assert!(spec.get("storage_auth_token").is_none(), "no signing key, no token");

    let (status, body) = call(&server, Method::GET, "/compute/api/v2/computes/nope/spec", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a compute exists only for an endpoint: {body}");

    let access = "/proxy/get_endpoint_access_control?session_id=s1&application_name=psql&endpointish=main&role=alice";
    let (status, body) = call(&server, Method::GET, access, None, None).await;
    assert_eq!(status, StatusCode::OK);
    let secret = body["role_secret"].as_str().unwrap();
    let (head, keys) = secret.strip_prefix("SCRAM-SHA-256$").unwrap().split_once('$').unwrap();
    assert!(head.starts_with("4096:") && keys.split(':').count() == 2, "{secret}");
    assert_eq!(body["allowed_ips"], json!(["10.0.0.0/8"]));
    assert_eq!(body["project_id"], "proj");
    let (status, body) = call(&server, Method::GET, &access.replace("role=alice", "role=mallory"), None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body["status"]["details"]["error_info"]["reason"], "RESOURCE_NOT_FOUND",
        "the proxy then fails the login like a wrong password"
    );
    let (status, body) = call(&server, Method::GET, &access.replace("endpointish=main", "endpointish=ghost"), None, None).await;
    assert_eq!((status, &body["status"]["details"]["error_info"]["reason"]), (StatusCode::NOT_FOUND, &json!("ENDPOINT_NOT_FOUND")));

    let (status, body) =
        call(&server, Method::GET, "/proxy/wake_compute?session_id=s1&application_name=psql&endpointish=main", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["address"], "compute-main:55432");
    assert!(body.get("server_name").is_none(), "plain TCP to the compute");
    assert_eq!(
        body["aux"],
        json!({"endpoint_id": "main", "project_id": "proj", "branch_id": "br-main", "compute_id": "main", "cold_start_info": "warm"})
    );

    let (status, body) = call(&server, Method::GET, "/proxy/endpoints/main/jwks?session_id=s1", None, None).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"jwks": []})));
    let (status, _) = call(&server, Method::GET, "/proxy/endpoints/ghost/jwks", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, _) = call(&server, Method::GET, "/storage/notify-attach", None, None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, body) = call(&server, Method::GET, "/nothing-here", None, None).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::NOT_FOUND, Some("no such API: /nothing-here")));
    // Hook bodies are a few KiB: 2 MiB is refused before it is read whole.
    let huge = json!({"tenant_id": TENANT, "padding": "x".repeat(2 << 20)});
    let (status, _) = call(&server, Method::PUT, "/storage/notify-attach", None, Some(huge)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    server.stop().await;
}

#[tokio::test]
async fn hooks_reconfigure_the_computes_and_ask_for_retries_while_one_is_down() {
    let compute = StandIn::start().await;
    let server = start(compute.addr, Keys::default()).await;

    let (status, _) = call(&server, Method::PUT, "/storage/notify-attach", None, Some(attach(2))).await;
    assert_eq!(status, StatusCode::OK);
    let configures = compute.configures();
    assert_eq!(configures.len(), 1, "only `main` serves the tenant: {configures:?}");
    assert_eq!(configures[0].body["spec"]["pageserver_connstring"], "postgresql://no_user@ps-2:6400");
    assert!(configures[0].body["compute_ctl_config"]["jwks"]["keys"].is_array());
    let (_, body) = call(&server, Method::GET, "/compute/api/v2/computes/main/spec", None, None).await;
    assert_eq!(body["spec"]["pageserver_connstring"], "postgresql://no_user@ps-2:6400", "specs follow the hook");

    let sharded = json!({"tenant_id": TENANT, "preferred_az": null, "stripe_size": 2048,
        "shards": [{"node_id": 2, "shard_number": 1}, {"node_id": 1, "shard_number": 0}]});
    let (status, _) = call(&server, Method::PUT, "/storage/notify-attach", None, Some(sharded)).await;
    assert_eq!(status, StatusCode::OK);
    let last = compute.configures().pop().unwrap();
    assert_eq!(last.body["spec"]["pageserver_connstring"], "postgresql://no_user@ps-1:6400,postgresql://no_user@ps-2:6400");
    assert_eq!(last.body["spec"]["shard_stripe_size"], 2048);

    let safekeepers = json!({"tenant_id": TENANT, "timeline_id": TIMELINE, "generation": 4,
        "safekeepers": [{"id": 3, "hostname": "sk-3"}, {"id": 1, "hostname": null}]});
    let (status, _) = call(&server, Method::PUT, "/storage/notify-safekeepers", None, Some(safekeepers)).await;
    assert_eq!(status, StatusCode::OK);
    let last = compute.configures().pop().unwrap();
    assert_eq!(last.body["spec"]["safekeeper_connstrings"], json!(["sk-3:5454", "sk-1:5454"]));
    assert_eq!(last.body["spec"]["safekeepers_generation"], 4);
    let before = compute.configures().len();
    let stale = json!({"tenant_id": TENANT, "timeline_id": TIMELINE, "generation": 3, "safekeepers": [{"id": 2, "hostname": null}]});
    let (status, _) = call(&server, Method::PUT, "/storage/notify-safekeepers", None, Some(stale)).await;
    assert_eq!(status, StatusCode::OK, "an older generation is acknowledged");
    assert_eq!(compute.configures().len(), before, "and ignored");
    let (_, body) = call(&server, Method::GET, "/compute/api/v2/computes/main/spec", None, None).await;
    assert_eq!(body["spec"]["safekeepers_generation"], 4);

    let (status, body) = call(&server, Method::PUT, "/storage/notify-attach", None, Some(attach(9))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "an unknown pageserver is fatal: {body}");
    assert!(body["error"].as_str().unwrap().contains("pageserver 9"), "{body}");

    compute.status.store(503, Ordering::SeqCst);
    let before = compute.configures().len();
    let (status, body) = call(&server, Method::PUT, "/storage/notify-attach", None, Some(attach(1))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "the storage controller retries on 503: {body}");
    assert!(compute.configures().len() - before >= 3, "retried with backoff until the deadline");
    assert!(body["error"].as_str().unwrap().contains("compute main"), "{body}");
    let (_, body) = call(&server, Method::GET, "/compute/api/v2/computes/main/spec", None, None).await;
    assert_eq!(body["spec"]["pageserver_connstring"], "postgresql://no_user@ps-1:6400", "the placement is kept for the retry");

    compute.status.store(200, Ordering::SeqCst);
    compute.delay_ms.store(5_000, Ordering::SeqCst);
    let started = std::time::Instant::now();
    let (status, _) = call(&server, Method::PUT, "/storage/notify-attach", None, Some(attach(2))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "a hung compute_ctl is retried later, too");
    assert!(started.elapsed() < Duration::from_secs(2), "answered by the deadline, before the storage controller's own timeout");
    server.stop().await;
}

#[tokio::test]
async fn tokens_are_checked_when_a_public_key_is_configured() {
    let compute = StandIn::start().await;
    let pem = key_pem();
    let key = SigningKey::from_pem(&pem).unwrap();
    let keys = Keys { verify: Some(key.public_key()), sign: Some(SigningKey::from_pem(&pem).unwrap()) };
    let server = start(compute.addr, keys).await;
    let token = |scope: &str| key.sign(&json!({"scope": scope})).0;

    let (status, _) = call(&server, Method::PUT, "/storage/notify-attach", None, Some(attach(2))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "no token");
    let stranger = SigningKey::from_pem(&key_pem()).unwrap().sign(&json!({"scope": scopes::STORAGE_CONTROLLER})).0;
    let (status, _) = call(&server, Method::PUT, "/storage/notify-attach", Some(&stranger), Some(attach(2))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "signed by another key");
    let (status, _) = call(&server, Method::PUT, "/storage/notify-attach", Some("not-a-jwt"), Some(attach(2))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "garbage");
    let (status, _) = call(&server, Method::PUT, "/storage/notify-attach", Some(&token(scopes::PROXY)), Some(attach(2))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "the proxy's token cannot move tenants");
    assert!(compute.configures().is_empty(), "rejected calls change nothing");

    let (status, _) = call(&server, Method::PUT, "/storage/notify-attach", Some(&token(scopes::STORAGE_CONTROLLER)), Some(attach(2))).await;
    assert_eq!(status, StatusCode::OK);
    let configure = compute.configures().pop().unwrap();
    let bearer = configure.authorization.expect("compute_ctl gets a token");
    let claims = jwt_claims(bearer.strip_prefix("Bearer ").unwrap());
    assert_eq!((&claims["compute_id"], &claims["aud"]), (&json!("main"), &json!(["compute"])));
    assert!(claims["exp"].is_u64());
    let jwk = &configure.body["compute_ctl_config"]["jwks"]["keys"][0];
    assert_eq!((&jwk["kty"], &jwk["crv"], &jwk["alg"]), (&json!("OKP"), &json!("Ed25519"), &json!("EdDSA")));
    let storage_token = configure.body["spec"]["storage_auth_token"].as_str().unwrap();
    assert_eq!(jwt_claims(storage_token), json!({"scope": "tenant", "tenant_id": TENANT}));

    let (status, _) = call(&server, Method::GET, "/compute/api/v2/computes/main/spec", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = call(&server, Method::GET, "/compute/api/v2/computes/main/spec", Some(&token(scopes::COMPUTE)), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(&server, Method::GET, "/proxy/wake_compute?endpointish=main", Some(&token(scopes::ADMIN)), None).await;
    assert_eq!(status, StatusCode::OK, "admin may call everything");
    let (status, _) = call(&server, Method::GET, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK, "probes need no token");
    server.stop().await;
}

pub(crate) fn jwt_claims(token: &str) -> Value {
    let claims = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap()
}

// ---- The binary ---------------------------------------------------------------------------

fn write_topology(dir: &Path, listen: &str) -> PathBuf {
    let mut topology = topology();
    topology.listen = listen.into();
    let path = dir.join("topology.json");
    std::fs::write(&path, topology.to_json().unwrap()).unwrap();
    path
}

#[test]
fn serve_runs_until_sigterm_and_keeps_its_state_file() {
    let wd = Workdir::new();
    let listen = format!("127.0.0.1:{}", free_port());
    let topology = write_topology(wd.path(), &listen);
    let store = wd.path().join("store.json");
    std::fs::write(&store, serde_json::to_string(&state()).unwrap()).unwrap();
    // Without keys it refuses to start, unless told to trust every caller.
    let refused = wd
        .cmd(&["control-plane", "serve", "--store", store.to_str().unwrap()])
        .env("NEONCTL_CONTROL_PLANE_CONFIG", &topology)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2), "a usage error: {}", stderr(&refused));
    let said = stderr(&refused);
    assert!(
        said.contains("$NEONCTL_JWT_PUBLIC_KEY and $NEONCTL_JWT_PRIVATE_KEY is not set") && said.contains("--insecure-no-auth"),
        "{said}"
    );
    assert!(std::net::TcpStream::connect(&listen).is_err(), "it never listened");
    let child = wd
        .cmd(&["control-plane", "serve", "--store", store.to_str().unwrap(), "--insecure-no-auth"])
        .env("NEONCTL_CONTROL_PLANE_CONFIG", &topology)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let up = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        std::net::TcpStream::connect(&listen).is_ok()
    });
    assert!(up, "serve listens on the topology's address");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (status, body) = rt.block_on(async {
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let uri = format!("http://{listen}/proxy/wake_compute?endpointish=main");
        let response = client.get(uri.parse().unwrap()).await.unwrap();
        let status = response.status();
        (status, response.into_body().collect().await.unwrap().to_bytes())
    });
    assert_eq!(status, StatusCode::OK, "the state file was loaded: {body:?}");
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["address"], "neon-compute-main.neon.svc.cluster.local:55432", "the endpoint's Service, by its DNS name");
    let kill = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "a graceful stop exits 0: {}", stderr(&output));
    let log = stderr(&output);
    assert!(log.contains("shutting down"), "{log}");
    assert!(log.contains("--insecure-no-auth: $NEONCTL_JWT_PUBLIC_KEY and $NEONCTL_JWT_PRIVATE_KEY not set"), "{log}");
    assert!(!log.contains("SCRAM-SHA-256$"), "verifiers never reach the log: {log}");

    let help = wd.run(&["control-plane", "serve", "--help"]);
    assert!(help.status.success());
    let help = stdout(&help);
    assert!(help.contains("Example"));
    insta::assert_snapshot!("help-control-plane-serve", help);
}

/// The Deployment `render` writes runs this very command: its args parse, its topology loads,
/// and the storage controller, proxy and compute are pointed at routes the server has.
#[test]
fn rendered_manifests_run_the_serve_command_against_their_topology() {
    let wd = Workdir::new();
    let out = wd.run(&["render", "--out", "manifests"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let objects = |file: &str| -> Vec<Value> {
        let text = std::fs::read_to_string(wd.path().join("manifests").join(file)).unwrap();
        serde_saphyr::from_multiple::<Value>(&text).unwrap().into_iter().filter(|v| !v.is_null()).collect()
    };
    let control_plane = objects("50-control-plane.yaml");
    let config_map = control_plane.iter().find(|o| o["kind"] == "ConfigMap").unwrap();
    let path = wd.path().join("topology.json");
    std::fs::write(&path, config_map["data"]["topology.json"].as_str().unwrap()).unwrap();
    let topology = neonctl_control_plane::load_topology(&path).unwrap();
    assert!(!topology.pageservers.is_empty() && !topology.safekeepers.is_empty());

    let deployment = control_plane.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["args"], json!(SERVE_ARGS));
    let env = container["env"].as_array().unwrap();
    assert!(env.iter().any(|e| e["name"] == "NEONCTL_CONTROL_PLANE_CONFIG"), "the topology path comes from the environment");
    let help = wd.control_plane(&[&SERVE_ARGS[..], &["--help"]].concat()).output().unwrap();
    assert!(help.status.success(), "the args name a real subcommand of the image's executable");
    assert_eq!(deployment["spec"]["template"]["spec"]["containers"][0]["command"], serde_json::Value::Null, "the image's entrypoint runs");

    let container_args = |file: &str, kind: &str| -> Vec<String> {
        let object = objects(file).into_iter().find(|o| o["kind"] == kind).unwrap();
        serde_json::from_value(object["spec"]["template"]["spec"]["containers"][0]["args"].clone()).unwrap()
    };
    let flag = |args: &[String], name: &str| -> String {
        args.iter().find_map(|a| a.strip_prefix(&format!("--{name}="))).unwrap_or_else(|| panic!("--{name} in {args:?}")).to_string()
    };
    // compute_ctl's --control-plane-uri: the compute template's, which the operator puts in
    // every compute's Deployment.
    let base = topology.compute.control_plane_uri.clone();
    let hooks = flag(&container_args("21-storage-controller.yaml", "Deployment"), "control-plane-url");
    let proxy = flag(&container_args("70-proxy.yaml", "Deployment"), "auth-endpoint");
    assert_eq!(hooks, format!("{base}/storage"), "notify-attach lives under /storage");
    assert_eq!(proxy, format!("{base}/proxy"), "the cplane-v1 API lives under /proxy");
}
