//! `deploy` end to end against the Kubernetes stand-in (`--kubeconfig`), with the test as the
//! control plane (it sets the branch's status) and a real Postgres behind a TLS-terminating
//! stand-in for the proxy: it reads its certificate from the Secret deploy created, checks the
//! routing (SNI and `endpoint=main`) and forwards the session to Postgres.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use neonctl_aws::config::Config;
use neonctl_aws::render::RenderInputs;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::controlplane::PgServer;
use crate::fake_kube::FakeKube;
use crate::support::{Workdir, state_json, stderr, stdout};

const CRD_API: &str = "neonctl-aws.dev/v1alpha1";
const NS: &str = "neon";
const DOMAIN: &str = "neon.neon.internal";
const PASSWORD: &str = "a-password-the-user-chose-0123456789";

/// Secret values by Secret name and key, decoded.
type Secrets = BTreeMap<String, BTreeMap<String, String>>;

fn secrets(fake: &FakeKube) -> Secrets {
    fake.list("v1", "secrets")
        .into_iter()
        .map(|s| {
            let data = s["data"].as_object().cloned().unwrap_or_default();
            let decoded =
                data.into_iter().map(|(k, v)| (k, String::from_utf8(STANDARD.decode(v.as_str().unwrap()).unwrap()).unwrap())).collect();
            (s["metadata"]["name"].as_str().unwrap().to_string(), decoded)
        })
        .collect()
}

/// No secret value (long enough to be one) appears in `text`.
fn assert_no_secret_in(secrets: &Secrets, text: &str, what: &str) {
    for (name, data) in secrets {
        for (key, value) in data {
            let public = key == "auth_public_key.pem" || key == "tls.crt";
            if !public && value.len() >= 16 {
                for line in value.lines().filter(|l| l.len() >= 16 && !l.starts_with("-----")) {
                    assert!(!text.contains(line), "{what} shows a line of Secret {name} key {key}");
                }
            }
        }
    }
}

/// The test's control plane: gives branch `main` the status `outcome` for each new generation.
fn control_plane(fake: Arc<FakeKube>, outcome: Value) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Some(branch) = fake.get(CRD_API, "neonbranches", Some(NS), "main") {
                let generation = branch["metadata"]["generation"].as_i64().unwrap_or(1);
                if branch["status"]["observedGeneration"].as_i64() != Some(generation) {
                    let mut status = outcome.clone();
                    status["observedGeneration"] = json!(generation);
                    fake.set_status(CRD_API, "neonbranches", Some(NS), "main", status);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

/// What the proxy stand-in saw of one connection.
#[derive(Debug, Clone)]
struct Seen {
    sni: Option<String>,
    options: Option<String>,
    user: Option<String>,
    /// The endpoint neon's proxy would route to, or why it would refuse.
    endpoint: Result<String, String>,
}

/// The domain neon's proxy routes by, read from its certificate as `process_key_cert` does
/// (`proxy/src/tls/server_config.rs`): the subject's RFC 4514 string (x509-cert), less `CN=*.`,
/// `CN=apiauth.` or `CN=`; anything else stops the proxy at start.
fn neons_common_name(cert: &[u8]) -> Result<String, String> {
    use x509_cert::der::Decode as _;
    let certificate = x509_cert::Certificate::from_der(cert).map_err(|e| format!("Failed to parse cerficiate: {e}"))?;
    let subject = certificate.tbs_certificate.subject.to_string();
    [CN_WILDCARD, "CN=apiauth.", "CN="]
        .iter()
        .find_map(|prefix| subject.strip_prefix(prefix))
        .map(str::to_string)
        .ok_or_else(|| "Failed to parse common name from certificate".to_string())
}
const CN_WILDCARD: &str = "CN=*.";

/// The endpoint a connection names, as neon's proxy reads it (`ComputeUserInfoMaybeEndpoint::parse`
/// and `endpoint_sni`, `proxy/src/auth/credentials.rs`): the SNI's first label when the rest is
/// the certificate's domain, or `endpoint=`/`project=` in the options; both must agree.
fn neons_endpoint(sni: Option<&str>, options: Option<&str>, common_name: &str) -> Result<String, String> {
    let from_sni = sni.and_then(|sni| sni.split_once('.')).filter(|(_, domain)| *domain == common_name).map(|(label, _)| label.to_string());
    let from_options = options
        .into_iter()
        .flat_map(str::split_whitespace)
        .find_map(|option| option.strip_prefix("endpoint=").or_else(|| option.strip_prefix("project=")).map(str::to_string));
    match (from_options, from_sni) {
        (Some(option), Some(domain)) if option != domain => {
            Err(format!("Inconsistent project name inferred from SNI ('{domain}') and project option ('{option}')"))
        }
        (option, domain) => option.or(domain).ok_or_else(|| "Endpoint ID is not specified".to_string()),
    }
}

/// Where the proxy stand-in sends a session.
#[derive(Clone)]
pub(crate) enum Upstream {
    /// One Postgres on 127.0.0.1, whatever the endpoint.
    Postgres(u16),
    /// Where the control plane at this `host:port` says the endpoint's compute is, as neon's
    /// proxy asks it (`GET {auth-endpoint}/wake_compute?endpointish=…`,
    /// `proxy/src/control_plane/client/cplane_proxy_v1.rs`).
    WakeCompute(String),
}

/// Whether neon's proxy asks `wake_compute` again after this error body
/// (`ControlPlaneErrorMessage::could_retry`, `proxy/src/control_plane/messages.rs`): when it
/// carries `retry_info`, or a reason `Reason::can_retry` lists; never without a `status`.
fn proxy_retries(body: &Value) -> bool {
    let details = &body["status"]["details"];
    if body["status"].is_null() {
        return false;
    }
    !details["retry_info"].is_null()
        || matches!(
            details["error_info"]["reason"].as_str(),
            Some("RUNNING_OPERATIONS" | "CONCURRENCY_LIMIT_REACHED" | "LOCK_ALREADY_TAKEN" | "ENDPOINT_IDLE" | "PROJECT_UNDER_MAINTENANCE")
        )
}

/// neon's `retry_after` (`proxy/src/proxy/retry.rs`): `base * factor^(n-1)`.
fn retry_after(retries: u32, base: Duration, factor: f64) -> Duration {
    base.mul_f64(factor.powi(retries as i32 - 1))
}

impl Upstream {
    /// A connection to `endpoint`'s compute, as neon's proxy makes it
    /// (`proxy/src/proxy/{wake_compute,connect_compute}.rs` with the default
    /// `--wake-compute-retry num_retries=8,base_retry_wait_duration=100ms,retry_wait_exponent_base=1.6`
    /// and `--connect-to-compute-retry num_retries=5,base_retry_wait_duration=200ms,retry_wait_exponent_base=2`):
    /// `wake_compute` retried while its error says so; a refused connection to the address it
    /// just got (not from a cache, which this stand-in does not keep) retried as is.
    async fn connect(&self, endpoint: &str) -> std::io::Result<tokio::net::TcpStream> {
        let mut retries = 0;
        let address = self.address(endpoint, &mut retries).await?;
        loop {
            match tokio::net::TcpStream::connect(&address).await {
                Ok(stream) => return Ok(stream),
                Err(e) if retries < 5 && matches!(e.kind(), std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::TimedOut) => {
                    tokio::time::sleep(retry_after(retries, Duration::from_millis(200), 2.0)).await;
                    retries += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn address(&self, endpoint: &str, retries: &mut u32) -> std::io::Result<String> {
        match self {
            Self::Postgres(port) => Ok(format!("127.0.0.1:{port}")),
            Self::WakeCompute(control_plane) => loop {
                let path = format!("/proxy/wake_compute?session_id=s&application_name=psql&endpointish={endpoint}");
                let (status, body) = crate::controlplane::call_at(control_plane, hyper::Method::GET, &path, None, None).await;
                match body["address"].as_str() {
                    Some(address) if status == hyper::StatusCode::OK => return Ok(address.to_string()),
                    _ if *retries < 8 && proxy_retries(&body) => {
                        tokio::time::sleep(retry_after(*retries, Duration::from_millis(100), 1.6)).await;
                        *retries += 1;
                    }
                    _ => return Err(std::io::Error::other(format!("wake_compute for {endpoint}: {status} {body}"))),
                }
            },
        }
    }
}

/// The proxy stand-in: TLS with the certificate from Secret `neon-proxy-tls`, then the startup
/// message without `options` to the upstream, then bytes both ways.
pub(crate) struct ProxyStandIn {
    pub(crate) addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl ProxyStandIn {
    pub(crate) async fn start(fake: Arc<FakeKube>, upstream: Upstream) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = seen.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (fake, seen, upstream) = (fake.clone(), recorded.clone(), upstream.clone());
                tokio::spawn(async move {
                    if let Err(e) = relay(stream, &fake, &upstream, &seen).await {
                        eprintln!("proxy stand-in: {e}");
                    }
                });
            }
        });
        Self { addr, seen }
    }
}

async fn relay(mut client: tokio::net::TcpStream, fake: &FakeKube, upstream: &Upstream, seen: &Mutex<Vec<Seen>>) -> std::io::Result<()> {
    const SSL_REQUEST: u32 = 80877103;
    let mut request = [0u8; 8];
    client.read_exact(&mut request).await?;
    if u32::from_be_bytes(request[4..8].try_into().unwrap()) != SSL_REQUEST {
        return Err(std::io::Error::other("the client did not ask for TLS"));
    }
    client.write_all(b"S").await?;
    let secret = fake.get("v1", "secrets", Some(NS), "neon-proxy-tls").ok_or_else(|| std::io::Error::other("no proxy Secret"))?;
    let decode = |key: &str| STANDARD.decode(secret["data"][key].as_str().unwrap_or_default()).unwrap_or_default();
    let certs = CertificateDer::pem_slice_iter(&decode("tls.crt")).collect::<Result<Vec<_>, _>>().map_err(std::io::Error::other)?;
    // Neon's proxy does not start with a certificate whose subject it cannot read.
    let common_name =
        neons_common_name(certs.first().ok_or_else(|| std::io::Error::other("no certificate"))?).map_err(std::io::Error::other)?;
    let key = PrivateKeyDer::from_pem_slice(&decode("tls.key")).map_err(std::io::Error::other)?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(std::io::Error::other)?;
    let mut tls = tokio_rustls::TlsAcceptor::from(Arc::new(config)).accept(client).await?;
    let sni = tls.get_ref().1.server_name().map(str::to_string);

    let mut length = [0u8; 4];
    tls.read_exact(&mut length).await?;
    let mut body = vec![0u8; u32::from_be_bytes(length) as usize - 4];
    tls.read_exact(&mut body).await?;
    let mut fields: Vec<String> = body[4..].split(|b| *b == 0).map(|f| String::from_utf8_lossy(f).into_owned()).collect();
    fields.retain(|f| !f.is_empty());
    let params: BTreeMap<String, String> = fields.chunks(2).filter(|p| p.len() == 2).map(|p| (p[0].clone(), p[1].clone())).collect();
    let endpoint = neons_endpoint(sni.as_deref(), params.get("options").map(String::as_str), &common_name);
    seen.lock().unwrap().push(Seen {
        sni,
        options: params.get("options").cloned(),
        user: params.get("user").cloned(),
        endpoint: endpoint.clone(),
    });
    let endpoint = endpoint.map_err(std::io::Error::other)?;

    let mut startup = body[..4].to_vec();
    for (key, value) in params.iter().filter(|(k, _)| *k != "options") {
        startup.extend_from_slice(key.as_bytes());
        startup.push(0);
        startup.extend_from_slice(value.as_bytes());
        startup.push(0);
    }
    startup.push(0);
    let mut server = upstream.connect(&endpoint).await?;
    server.write_all(&(startup.len() as u32 + 4).to_be_bytes()).await?;
    server.write_all(&startup).await?;
    tokio::io::copy_bidirectional(&mut tls, &mut server).await?;
    Ok(())
}

/// Whether a safekeeper lets `token` through to an HTTP route (`safekeeper/src/auth.rs`,
/// `check_permission`): a valid EdDSA token of scope `safekeeperdata`, or of scope `tenant` for
/// that very tenant on per-tenant routes; every other scope is "ineligible for Safekeeper auth".
fn safekeeper_permission(public: &neonctl_contract::jwt::PublicKey, token: &str, tenant: Option<&str>) -> Result<(), String> {
    let scope = public.scope_of(token).map_err(|e| e.to_string())?.ok_or("no scope")?;
    let claims = crate::controlplane::jwt_claims(token);
    match (scope.as_str(), tenant) {
        ("safekeeperdata", _) => Ok(()),
        ("tenant", Some(tenant)) if claims["tenant_id"] == tenant => Ok(()),
        ("tenant", _) => Err("Attempt to access management api with tenant scope. Permission denied".into()),
        (other, _) => Err(format!("JWT scope '{other}' is ineligible for Safekeeper auth")),
    }
}

/// A token of scope `tenant` for `tenant`, signed with the deployment's key (what computes get).
fn tenant_token_of(created: &Secrets, tenant: &Value) -> String {
    let key = neonctl_contract::jwt::SigningKey::from_pem(&created["neon-jwt-signing"]["auth_private_key.pem"]).unwrap();
    key.tenant_token(tenant.as_str().unwrap()).0
}

/// The value of the Secret key mounted at `path` in `pod` (a secret volume with items).
fn mounted_secret(fake: &FakeKube, pod: &Value, path: &str) -> Option<String> {
    let (dir, file) = path.rsplit_once('/')?;
    let mount = pod["containers"][0]["volumeMounts"].as_array()?.iter().find(|m| m["mountPath"] == dir)?;
    let volume = pod["volumes"].as_array()?.iter().find(|v| v["name"] == mount["name"])?;
    let item = volume["secret"]["items"].as_array()?.iter().find(|i| i["path"] == file)?;
    let secret = fake.get("v1", "secrets", Some(NS), volume["secret"]["secretName"].as_str()?)?;
    String::from_utf8(STANDARD.decode(secret["data"][item["key"].as_str()?].as_str()?).ok()?).ok()
}

/// A real Postgres with the owner and database deploy bootstraps, the owner's Secret (so deploy
/// keeps its password), and the proxy stand-in in front of that Postgres.
async fn database_behind_proxy(setup: &Setup) -> (PgServer, ProxyStandIn) {
    let pg = PgServer::start();
    pg.admin_sql(&format!("CREATE ROLE neondb_owner LOGIN PASSWORD '{PASSWORD}'"));
    pg.admin_sql("CREATE DATABASE neondb OWNER neondb_owner");
    setup.fake.put_object(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "neon-main-owner", "namespace": NS},
        "data": {"password": STANDARD.encode(PASSWORD)}}));
    let proxy = ProxyStandIn::start(setup.fake.clone(), Upstream::Postgres(pg.port)).await;
    (pg, proxy)
}

/// A fake cluster, a workdir with its kubeconfig, and the test's control plane.
struct Setup {
    fake: Arc<FakeKube>,
    wd: Workdir,
    kubeconfig: PathBuf,
    /// The test playing the control plane; `None` when the real one runs.
    control_plane: Option<tokio::task::JoinHandle<()>>,
}

impl Setup {
    async fn new(branch_status: Value) -> Self {
        let mut setup = Self::without_control_plane().await;
        setup.control_plane = Some(control_plane(setup.fake.clone(), branch_status));
        setup
    }

    async fn without_control_plane() -> Self {
        let fake = Arc::new(FakeKube::start().await);
        let wd = Workdir::new();
        let kubeconfig = fake.kubeconfig(wd.path());
        Self { fake, wd, kubeconfig, control_plane: None }
    }

    /// `neonctl-aws deploy --kubeconfig … --context fake <args>` (plain output unless `args`
    /// say otherwise), run off the runtime.
    async fn deploy(&self, args: &[&str]) -> Output {
        self.deploy_with(args, &[]).await
    }

    async fn deploy_with(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut all = vec!["deploy", "--kubeconfig", self.kubeconfig.to_str().unwrap(), "--context", "fake"];
        if !args.contains(&"--output") {
            all.extend(["--output", "plain"]);
        }
        all.extend_from_slice(args);
        let mut cmd: Command = self.wd.cmd(&all);
        cmd.envs(env.iter().copied());
        tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap()
    }

    fn writes(&self) -> Vec<String> {
        self.fake.requests().into_iter().filter(|r| !r.starts_with("GET ") && !r.contains("dryRun=All")).collect()
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Some(control_plane) = &self.control_plane {
            control_plane.abort();
        }
    }
}

fn psql(pg: &PgServer, url: &str) -> Output {
    Command::new(pg.psql()).args(["-X", "-w", "-tA", "-c", "select 1", url]).output().unwrap()
}

fn branch(fake: &FakeKube) -> Value {
    fake.get(CRD_API, "neonbranches", Some(NS), "main").expect("branch main")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_bootstraps_a_database_that_answers_through_the_proxy_and_a_second_deploy_changes_nothing() {
    let setup = Setup::new(json!({"phase": "Ready"})).await;
    let fake = &setup.fake;
    // The owner's Secret exists already: deploy keeps its password.
    let (pg, proxy) = database_behind_proxy(&setup).await;
    let address = proxy.addr.to_string();

    let out = setup.deploy(&["--proxy-address", &address]).await;
    let (text, log) = (stdout(&out), stderr(&out));
    assert!(out.status.success(), "{log}\n{text}");

    // Every Secret the manifests read, with every key, and the owner's.
    let created = secrets(fake);
    for wanted in RenderInputs::from_config(&Config::default()).secrets() {
        let secret = created.get(&wanted.name).unwrap_or_else(|| panic!("no Secret {}", wanted.name));
        for key in &wanted.keys {
            assert!(secret.get(key).is_some_and(|v| !v.is_empty()), "Secret {} lacks {key}", wanted.name);
        }
    }
    let owner = &created["neon-main-owner"];
    assert_eq!((owner["username"].as_str(), owner["password"].as_str(), owner["database"].as_str()), ("neondb_owner", PASSWORD, "neondb"));
    assert_no_secret_in(&created, &text, "stdout");
    assert_no_secret_in(&created, &log, "stderr");
    assert!(!text.contains(PASSWORD) && !log.contains(PASSWORD));

    // The bootstrap: branch main with fresh ids and the verifier of the password; endpoint main.
    let first_branch = branch(fake);
    let spec = &first_branch["spec"];
    assert_eq!((spec["projectId"].as_str(), spec["pgVersion"].as_u64()), (Some("neon"), Some(17)));
    let (tenant, timeline) = (spec["tenantId"].as_str().unwrap().to_string(), spec["timelineId"].as_str().unwrap().to_string());
    assert!(tenant.len() == 32 && tenant.chars().all(|c| c.is_ascii_hexdigit()) && tenant != timeline);
    assert_eq!(spec["roles"][0]["name"], "neondb_owner");
    assert!(neonctl_contract::scram::matches(&neonctl_aws::neon::Secret(spec["roles"][0]["verifier"].as_str().unwrap().into()), PASSWORD));
    assert_eq!(spec["databases"], json!([{"name": "neondb", "owner": "neondb_owner"}]));
    assert_eq!(fake.get(CRD_API, "neonendpoints", Some(NS), "main").unwrap()["spec"], json!({"branch": "main"}));
    assert!(fake.get("apiextensions.k8s.io/v1", "customresourcedefinitions", None, "neonbranches.neonctl-aws.dev").is_some());
    assert!(fake.get("apps/v1", "deployments", Some(NS), "neon-compute").is_none(), "the control plane makes the computes");
    assert!(fake.get("v1", "serviceaccounts", Some(NS), "neon-compute").is_some(), "they run as the rendered ServiceAccount");
    let proxy_deployment = fake.get("apps/v1", "deployments", Some(NS), "neon-proxy").expect("the proxy");
    assert!(proxy_deployment["spec"]["template"]["metadata"]["annotations"]["neonctl-aws/secrets-sha256"].is_string());

    // The proxy comes after the branch.
    let requests = fake.requests();
    let position =
        |needle: &str| requests.iter().position(|r| r.starts_with("PATCH ") && r.contains(needle)).unwrap_or_else(|| panic!("no {needle}"));
    assert!(position("/neonbranches/main") < position("/deployments/neon-proxy"));
    assert!(position("/deployments/neon-control-plane") < position("/neonbranches/main"));
    assert!(position("/secrets/neon-auth") < position("/deployments/neon-storage-controller"));

    // The check went through the proxy, routed to endpoint main.
    let seen = proxy.seen.lock().unwrap().clone();
    assert!(!seen.is_empty());
    assert_eq!(seen[0].options.as_deref(), Some("endpoint=main"));
    assert_eq!(seen[0].sni.as_deref(), Some("main.neon.neon.internal"));
    assert_eq!(seen[0].user.as_deref(), Some("neondb_owner"));
    assert_eq!(seen[0].endpoint.as_deref(), Ok("main"), "neon's proxy reads the domain from the generated certificate");

    // Each safekeeper calls its peers with the token in its --auth-token-path, which passes
    // the safekeeper's own check; so does the storage controller's.
    let public = neonctl_contract::jwt::PublicKey::from_pem(&created["neon-auth"]["auth_public_key.pem"]).unwrap();
    for id in 1..=3 {
        let set = fake.get("apps/v1", "statefulsets", Some(NS), &format!("neon-safekeeper-{id}")).expect("a safekeeper");
        let pod = &set["spec"]["template"]["spec"];
        let args: Vec<String> = serde_json::from_value(pod["containers"][0]["args"].clone()).unwrap();
        let path =
            args.iter().find_map(|a| a.strip_prefix("--auth-token-path=")).unwrap_or_else(|| panic!("--auth-token-path in {args:?}"));
        let token = mounted_secret(fake, pod, path).unwrap_or_else(|| panic!("{path} is mounted from a Secret"));
        assert_eq!(safekeeper_permission(&public, &token, None), Ok(()), "safekeeper {id}'s peer token");
    }
    let storcon_token = &created["neon-auth"]["storcon-safekeeper.jwt"];
    assert_eq!(safekeeper_permission(&public, storcon_token, None), Ok(()), "the storage controller's safekeeper token");
    let tenant_token = tenant_token_of(&created, &spec["tenantId"]);
    assert!(safekeeper_permission(&public, &tenant_token, None).is_err(), "a tenant token cannot manage timelines");

    // The printed connection strings, without the password.
    assert!(text.contains("postgresql://neondb_owner:<password>@main.neon.neon.internal:"), "{text}");
    let without_dns = format!("postgresql://neondb_owner:<password>@{address}/neondb?sslmode=require&options=endpoint%3Dmain");
    assert!(text.contains(&without_dns), "{text}");
    assert!(text.contains("get secret neon-main-owner -n neon -o jsonpath='{.data.password}' | base64 -d"), "{text}");
    assert!(text.contains(&format!("A *.{DOMAIN} -> 127.0.0.1")), "{text}");
    // It works with psql.
    let works = psql(&pg, &without_dns.replace("<password>", PASSWORD));
    assert!(works.status.success(), "psql through the proxy: {}", stderr(&works));
    assert_eq!(stdout(&works).trim(), "1");

    // The state records the deploy, and no secret.
    let state = state_json(&setup.wd);
    let record = &state["deploy"];
    assert_eq!(record["cluster"]["via"], "kubeconfig");
    assert_eq!(record["cluster"]["context"], "fake");
    assert_eq!(
        (record["namespace"].as_str(), record["branch"].as_str(), record["endpoint"].as_str()),
        (Some(NS), Some("main"), Some("main"))
    );
    assert_eq!((record["tenant_id"].as_str(), record["timeline_id"].as_str()), (Some(tenant.as_str()), Some(timeline.as_str())));
    assert_eq!(record["proxy_address"], address.as_str());
    assert_eq!(record["role_secret"], "neon-main-owner");
    assert!(record["checked_at"].is_string());
    let state_text = std::fs::read_to_string(setup.wd.state_dir().join("state.json")).unwrap();
    assert_no_secret_in(&created, &state_text, "the state file");
    assert!(!state_text.contains(PASSWORD));

    let status_cmd = |args: &[&str]| {
        let mut cmd = setup.wd.cmd(args);
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
    };
    let status = status_cmd(&["status", "--output", "plain"]).await.unwrap();
    assert!(
        stdout(&status).contains(&format!("deployed to kubeconfig context fake, namespace neon: branch main (tenant {tenant}")),
        "{}",
        stdout(&status)
    );
    // Its live checks reach the same cluster and log in through the proxy with the Secret's password.
    let status = status_cmd(&["status", "--output", "json"]).await.unwrap();
    let events = crate::support::json_events(&status);
    let live = events.iter().find(|e| e["kind"] == "status").unwrap()["data"]["live"].as_array().unwrap().clone();
    let sql = live.iter().find(|c| c["check"] == "SQL through the proxy").unwrap_or_else(|| panic!("{live:#?}"));
    assert_eq!(sql["outcome"], "ok", "{sql}");
    assert!(sql["detail"].as_str().unwrap().contains("PostgreSQL"), "{sql}");
    assert!(live.iter().any(|c| c["check"] == "proxy" && c["outcome"] == "ok"), "{live:#?}");
    assert!(!stdout(&status).contains(PASSWORD) && !stderr(&status).contains(PASSWORD));

    // A converged cluster plans nothing.
    let plan = setup.deploy(&["--plan"]).await;
    assert!(plan.status.success(), "{}", stderr(&plan));
    assert!(stdout(&plan).contains("deploy: nothing to do"), "{}", stdout(&plan));
    assert_no_secret_in(&created, &stdout(&plan), "the plan");
    // It only reads (dry-run applies are reads), and the summary counts those calls.
    let plan = setup.deploy(&["--plan", "--output", "json"]).await;
    let kubernetes = crate::moto::call_counts(&plan)["kubernetes"].clone();
    assert_eq!(kubernetes["mutating"], 0, "{kubernetes}");
    assert!(kubernetes["read"].as_u64().unwrap() > 10, "{kubernetes}");

    // A second deploy keeps every Secret value, the ids and the branch's generation.
    let again = setup.deploy(&["--proxy-address", &address, "--show-password", "--output", "json"]).await;
    assert!(again.status.success(), "{}", stderr(&again));
    let events = crate::support::json_events(&again);
    let result = events.iter().find(|e| e["event"] == "result" && e["kind"] == "deploy").expect("a deploy result");
    let shown = format!("postgresql://neondb_owner:{PASSWORD}@main.{DOMAIN}:");
    assert!(result["data"]["connection_string"].as_str().unwrap().starts_with(&shown), "--show-password prints it: {result}");
    assert!(result["data"]["without_dns"].as_str().unwrap().ends_with("options=endpoint%3Dmain"), "{result}");
    assert_eq!(secrets(fake), created, "no Secret value changed");
    let kubernetes = crate::moto::call_counts(&again)["kubernetes"].clone();
    assert!(kubernetes["read"].as_u64().unwrap() > 0 && kubernetes["mutating"].as_u64().unwrap() > 0, "{kubernetes}");
    let second_branch = branch(fake);
    assert_eq!(second_branch["spec"], first_branch["spec"]);
    assert_eq!(second_branch["metadata"]["generation"], first_branch["metadata"]["generation"]);

    // A config change shows as an update, and only the objects it changes.
    std::fs::write(setup.wd.path().join("neonctl-aws.yaml"), "images:\n  registry: registry.example.com/neon\n").unwrap();
    let changed = setup.deploy(&["--plan"]).await;
    let plan_text = stdout(&changed);
    assert!(changed.status.success(), "{}", stderr(&changed));
    assert!(plan_text.contains("~ update  Deployment neon/neon-storage-broker"), "{plan_text}");
    assert!(plan_text.contains("spec.template.spec.containers[0].image"), "{plan_text}");
    assert!(!plan_text.contains("Secret neon/"), "no Secret changes: {plan_text}");
    assert!(!plan_text.contains("+ create"), "{plan_text}");
}

/// The two halves together: deploy writes branch `main`, the real `control-plane serve
/// --store kubernetes` (this binary, on the same stand-in cluster) creates in a storage
/// controller stand-in exactly the tenant and timeline deploy chose and marks the branch Ready,
/// and serves the waiting compute a spec whose role verifier matches the password deploy stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_and_the_real_control_plane_agree_on_the_branch() {
    use neonctl_aws::neon::control_plane::Topology;
    use neonctl_control_plane::{NAMESPACE_ENV, SERVE_ARGS, STATUS_CONFIG_MAP_ENV};

    let setup = Setup::without_control_plane().await;
    let storcon = crate::reconcile::StorageController::start(None, None).await;
    let listen = format!("127.0.0.1:{}", crate::stand_ins::free_port());
    storcon.set_hooks(format!("http://{listen}/storage"));
    let topology = Topology {
        listen: listen.clone(),
        region: "us-east-1".into(),
        storage_controller_url: storcon.url(),
        pageservers: (1..=2).map(|id| crate::controlplane::node("ps", id, 6400)).collect(),
        safekeepers: crate::reconcile::safekeepers(3),
        compute: crate::controlplane::compute_template(),
    };
    let topology_path = setup.wd.path().join("topology.json");
    std::fs::write(&topology_path, topology.to_json().unwrap()).unwrap();
    let mut serve = setup.wd.control_plane(&[&SERVE_ARGS[..], &["--insecure-no-auth"]].concat());
    serve
        .env("NEONCTL_CONTROL_PLANE_CONFIG", &topology_path)
        .env("KUBECONFIG", &setup.kubeconfig)
        .env(NAMESPACE_ENV, NS)
        .env(STATUS_CONFIG_MAP_ENV, "neon-control-plane-status")
        .stderr(std::process::Stdio::piped());
    let control_plane = serve.spawn().unwrap();

    let (_pg, proxy) = database_behind_proxy(&setup).await;
    let out = setup.deploy(&["--proxy-address", &proxy.addr.to_string(), "--timeout", "60"]).await;

    // What compute_ctl asks for when it starts.
    let (status, spec) = crate::controlplane::call_at(&listen, hyper::Method::GET, "/compute/api/v2/computes/main/spec", None, None).await;
    let spec_served = (status == hyper::StatusCode::OK).then_some(spec);
    let kill = Command::new("kill").args(["-TERM", &control_plane.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let log = stderr(&control_plane.wait_with_output().unwrap());
    assert!(out.status.success(), "deploy: {}\n{}\ncontrol plane: {log}", stderr(&out), stdout(&out));

    let state = state_json(&setup.wd);
    let (tenant, timeline) = (state["deploy"]["tenant_id"].as_str().unwrap(), state["deploy"]["timeline_id"].as_str().unwrap());
    let calls = storcon.calls();
    let create_tenant = calls.iter().find(|c| c.method == hyper::Method::POST && c.path == "/v1/tenant").expect("a tenant create");
    assert_eq!(create_tenant.body["new_tenant_id"], tenant);
    let timelines = format!("/v1/tenant/{tenant}/timeline");
    let create_timeline = calls.iter().find(|c| c.method == hyper::Method::POST && c.path == timelines).expect("a timeline create");
    assert_eq!((create_timeline.body["new_timeline_id"].as_str(), create_timeline.body["pg_version"].as_u64()), (Some(timeline), Some(17)));
    assert_eq!(branch(&setup.fake)["status"]["phase"], "Ready");

    // The control plane made endpoint main's compute, whose compute_ctl gets deploy's branch,
    // with a verifier of deploy's password.
    let compute = setup.fake.get("apps/v1", "deployments", Some(NS), "neon-compute-main").unwrap_or_else(|| panic!("no compute: {log}"));
    let args = &compute["spec"]["template"]["spec"]["containers"][0]["args"];
    assert!(args.as_array().unwrap().contains(&json!("--compute-id=main")), "{args}");
    assert_eq!(compute["metadata"]["ownerReferences"][0]["kind"], "NeonEndpoint");
    let spec = spec_served.expect("compute_ctl's spec request answered");
    let spec = &spec["spec"];
    assert_eq!((spec["tenant_id"].as_str(), spec["timeline_id"].as_str()), (Some(tenant), Some(timeline)));
    let role = &spec["cluster"]["roles"][0];
    assert_eq!(role["name"], "neondb_owner");
    let verifier = neonctl_aws::neon::Secret(role["encrypted_password"].as_str().unwrap().into());
    assert!(neonctl_contract::scram::matches(&verifier, PASSWORD));
    assert_eq!(spec["cluster"]["databases"][0]["name"], "neondb");
    assert!(!log.contains(PASSWORD) && !log.contains("SCRAM-SHA-256$"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_branch_that_fails_fails_the_deploy_with_its_message() {
    let setup = Setup::new(json!({"phase": "Failed", "message": "creating tenant: storage controller answered 503"})).await;
    let out = setup.deploy(&["--proxy-address", "127.0.0.1:1"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("NeonBranch neon/main failed: creating tenant: storage controller answered 503"), "{err}");
    assert!(err.contains("kubectl logs -n neon deployment/neon-control-plane"), "{err}");
    assert!(setup.fake.get("apps/v1", "deployments", Some(NS), "neon-compute").is_none(), "no compute before a Ready branch");
    // The ids were recorded as soon as the branch was applied; the check never ran.
    let state = state_json(&setup.wd);
    assert_eq!(state["deploy"]["tenant_id"], branch(&setup.fake)["spec"]["tenantId"]);
    assert!(state["deploy"]["checked_at"].is_null());
    assert_eq!(state["phases"]["deploy"]["status"], "failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_database_without_its_secret_stops_before_any_change() {
    let setup = Setup::new(json!({"phase": "Ready"})).await;
    let out = setup.deploy(&["--external-storcon-db"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("Secret neon/neon-storcon-db does not exist") && err.contains("database-url"), "{err}");
    assert!(err.contains("kubectl create secret generic neon-storcon-db -n neon"), "{err}");
    assert_eq!(setup.writes(), Vec::<String>::new(), "nothing was written");

    // The plan says so too.
    let plan = setup.deploy(&["--external-storcon-db", "--plan"]).await;
    assert!(plan.status.success(), "{}", stderr(&plan));
    assert!(stdout(&plan).contains("deploy will stop here"), "{}", stdout(&plan));
    assert_eq!(setup.writes(), Vec::<String>::new(), "a plan writes nothing");

    // With the user's Secret, deploy goes on and leaves it alone: not applied, not pruned.
    let users = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "neon-storcon-db", "namespace": NS},
        "data": {"database-url": STANDARD.encode("postgresql://sc:pw@rds.example.com/sc")}});
    setup.fake.put_object(users.clone());
    let out = setup.deploy(&["--external-storcon-db", "--proxy-address", "127.0.0.1:1", "--timeout", "3"]).await;
    assert!(stderr(&out).contains("select version() through the proxy at 127.0.0.1:1 did not succeed"), "{}", stderr(&out));
    let secret = setup.fake.get("v1", "secrets", Some(NS), "neon-storcon-db").expect("the user's Secret is kept");
    assert_eq!(secret["data"], users["data"]);
    assert!(secret["metadata"]["labels"].is_null(), "never applied by deploy");
    assert!(setup.fake.get("apps/v1", "statefulsets", Some(NS), "neon-storage-controller-db").is_none(), "no in-cluster database");
}

/// `up` onto the user's own cluster with every image named: deploy alone runs, with deploy's
/// and render's flags, and nothing calls AWS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_onto_your_own_cluster_deploys_without_calling_aws() {
    let setup = Setup::new(json!({"phase": "Ready"})).await;
    let (_pg, proxy) = database_behind_proxy(&setup).await;
    let kubeconfig = setup.kubeconfig.to_str().unwrap().to_string();
    let digest = format!("sha256:{}", "ab".repeat(32));
    let images: Vec<String> =
        neonctl_aws::IMAGES.iter().map(|image| format!("--image={image}=registry.example.com/neon/{image}@{digest}")).collect();
    let up = |extra: &[&str]| {
        let mut args = vec!["up", "--kubeconfig", &kubeconfig, "--context", "fake", "--output", "json", "--bucket", "acme-neon"];
        args.extend(extra);
        let mut cmd = setup.wd.cmd(&args);
        // Any AWS call would go here and fail.
        cmd.env("AWS_ENDPOINT_URL", "http://127.0.0.1:1").env("AWS_ACCESS_KEY_ID", "x").env("AWS_SECRET_ACCESS_KEY", "x");
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
    };

    // Without a registry it would build images it cannot push: said before anything runs.
    let out = up(&[]).await.unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(said.contains("Set images.registry") && said.contains("--image NAME="), "{said}");

    // With a registry of the user's, up builds and pushes there: no infra.
    std::fs::write(setup.wd.path().join("neonctl-aws.yaml"), "images:\n  registry: registry.example.com/neon\n").unwrap();
    let out = up(&["--plan"]).await.unwrap();
    assert!(out.status.success(), "{}\n{}", stderr(&out), stdout(&out));
    let planned: Vec<String> = crate::support::json_events(&out)
        .iter()
        .filter(|e| e["event"] == "plan")
        .filter_map(|e| e["phase"].as_str().map(str::to_string))
        .collect();
    assert_eq!(planned, ["build", "images", "push", "deploy"], "no infra on your own cluster");
    assert_eq!(setup.writes(), Vec::<String>::new(), "a plan writes nothing");
    std::fs::remove_file(setup.wd.path().join("neonctl-aws.yaml")).unwrap();

    let address = proxy.addr.to_string();
    let mut extra: Vec<&str> = images.iter().map(String::as_str).collect();
    extra.extend(["--proxy-address", &address, "--storage-class", "standard"]);
    let out = up(&extra).await.unwrap();
    assert!(out.status.success(), "{}\n{}", stderr(&out), stdout(&out));
    let events = crate::support::json_events(&out);
    let started: Vec<&str> = events.iter().filter(|e| e["event"] == "phase_started").filter_map(|e| e["phase"].as_str()).collect();
    assert_eq!(started, ["deploy"], "{events:?}");
    let calls = events.last().unwrap()["calls"].as_object().unwrap().clone();
    assert_eq!(calls.keys().collect::<Vec<_>>(), ["kubernetes"], "no AWS service was called: {calls:?}");
    let pageserver = setup.fake.get("apps/v1", "statefulsets", Some(NS), "neon-pageserver-1").expect("the pageserver");
    let image = pageserver["spec"]["template"]["spec"]["containers"][0]["image"].as_str().unwrap();
    assert_eq!(image, format!("registry.example.com/neon/pageserver@{digest}"), "up took deploy's --image");
    assert!(setup.fake.get("storage.k8s.io/v1", "storageclasses", None, "neon-gp3").is_none(), "up took --storage-class");
    assert_eq!(proxy.seen.lock().unwrap()[0].endpoint.as_deref(), Ok("main"));
}

/// Neon's proxy would not route by a certificate whose subject holds more than the wildcard CN
/// (`proxy/src/tls/server_config.rs`): the user's one is refused before anything is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_certificate_with_another_subject_stops_before_any_change() {
    let setup = Setup::new(json!({"phase": "Ready"})).await;
    let mut params = rcgen::CertificateParams::new(vec![format!("*.{DOMAIN}")]).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, format!("*.{DOMAIN}"));
    params.distinguished_name.push(rcgen::DnType::OrganizationName, "Acme Corp");
    let key = rcgen::KeyPair::generate().unwrap();
    let (cert_path, key_path) = (setup.wd.path().join("tls.crt"), setup.wd.path().join("tls.key"));
    std::fs::write(&cert_path, params.self_signed(&key).unwrap().pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let out = setup.deploy(&["--proxy-tls-cert", cert_path.to_str().unwrap(), "--proxy-tls-key", key_path.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(&format!("subject is `O=Acme Corp,CN=*.{DOMAIN}`")), "{err}");
    assert!(err.contains(&format!("must be exactly `CN=*.{DOMAIN}`")) && err.contains("-subj '/CN=*."), "{err}");
    assert!(
        neons_common_name(&rustls::pki_types::CertificateDer::from_pem_file(&cert_path).unwrap()).is_err(),
        "neon's proxy would not start"
    );
    assert_eq!(setup.writes(), Vec::<String>::new(), "nothing was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_killed_after_creating_the_branch_resumes_with_the_same_tenant_and_timeline() {
    let setup = Setup::new(json!({"phase": "Ready"})).await;
    let args = ["--proxy-address", "127.0.0.1:1", "--timeout", "3"];
    let killed = setup.deploy_with(&args, &[(neonctl_aws::crash::ENV, "deploy:branch-applied")]).await;
    assert!(killed.status.code().is_none(), "killed at the crash point: {}", stderr(&killed));
    let first = branch(&setup.fake)["spec"].clone();
    let again = setup.deploy(&args).await;
    assert!(stderr(&again).contains("did not succeed"), "{}", stderr(&again));
    assert_eq!(branch(&setup.fake)["spec"], first, "the same ids and verifier");
    let state = state_json(&setup.wd);
    assert_eq!(state["deploy"]["tenant_id"], first["tenantId"]);
    assert_eq!(state["deploy"]["timeline_id"], first["timelineId"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_address_deploy_checks_through_the_load_balancer_and_prunes_what_it_no_longer_renders() {
    let setup = Setup::new(json!({"phase": "Ready"})).await;
    setup.fake.set_load_balancer(Some(json!([{"hostname": "nlb.invalid"}])));
    std::fs::write(setup.wd.path().join("neonctl-aws.yaml"), "neon:\n  safekeepers: 4\n").unwrap();
    let first = setup.deploy(&["--timeout", "3"]).await;
    assert_eq!(first.status.code(), Some(1));
    let err = stderr(&first);
    assert!(err.contains("select version() through the proxy at nlb.invalid:5432 did not succeed within 3s"), "{err}");
    assert!(setup.fake.get("apps/v1", "statefulsets", Some(NS), "neon-safekeeper-4").is_some());

    std::fs::remove_file(setup.wd.path().join("neonctl-aws.yaml")).unwrap();
    let plan = setup.deploy(&["--plan"]).await;
    assert!(stdout(&plan).contains("- delete  StatefulSet neon/neon-safekeeper-4  (prune: no longer rendered)"), "{}", stdout(&plan));
    let second = setup.deploy(&["--timeout", "3"]).await;
    assert!(stderr(&second).contains("pruned StatefulSet neon/neon-safekeeper-4"), "{}", stderr(&second));
    assert!(setup.fake.get("apps/v1", "statefulsets", Some(NS), "neon-safekeeper-4").is_none());
    assert!(setup.fake.get("apps/v1", "statefulsets", Some(NS), "neon-safekeeper-3").is_some());
}

#[test]
fn without_a_cluster_the_plan_lists_what_would_be_applied_and_how_to_give_one() {
    let wd = Workdir::new();
    let out = wd.run(&["deploy", "--plan", "--output", "plain"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("note: no cluster to deploy to") && text.contains("--kubeconfig FILE"), "{text}");
    assert!(text.contains("+ create  Secret neon/neon-auth  (keys auth_public_key.pem,"), "{text}");
    assert!(text.contains("+ create  apply storage-broker"), "{text}");
    assert!(text.contains("NeonBranch neon/main Ready"), "{text}");
    let missing = wd.run(&["deploy"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("no cluster to deploy to"), "{}", stderr(&missing));
}
