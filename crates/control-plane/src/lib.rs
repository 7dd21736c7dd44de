//! The in-cluster control plane (`neonctl-aws-control-plane serve`, also `neonctl-aws
//! control-plane serve`): the small service Neon expects from its cloud.
//!
//! - the storage controller's compute hooks (`PUT /storage/notify-attach`,
//!   `/storage/notify-safekeepers`): record where a tenant's shards or a timeline's
//!   safekeepers now are and push the new spec to every affected compute (`POST /configure`);
//! - compute specs for compute_ctl (`GET /compute/api/v2/computes/{id}/spec`);
//! - the proxy's cplane-v1 API (`GET /proxy/get_endpoint_access_control`, `/proxy/wake_compute`,
//!   `/proxy/endpoints/{id}/jwks`);
//! - `GET /healthz`.
//!
//! Where the storage nodes and computes are comes from the [`Topology`] file the manifests
//! mount; branches, endpoints, roles and placements live in a [`store::Store`], in the
//! cluster the `NeonBranch`/`NeonEndpoint` custom resources ([`kube_store`]). A background
//! [`reconcile`]r creates their tenants and timelines through the storage controller.
//! Callers authenticate with EdDSA JWTs when a public key is configured; see [`scopes`].

mod api;
mod cli;
pub mod computes;
mod http;
pub mod kube_store;
pub mod lease;
mod metrics;
pub mod reconcile;
pub mod scaling;
mod sizes;
mod storcon;
pub mod store;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use neonctl_contract::jwt::{self, KeyError, PublicKey, SigningKey};
use neonctl_contract::neon::control_plane::Topology;
pub use neonctl_contract::service::{
    LEASE_ENV, NAMESPACE_ENV, POD_NAME_ENV, PRIVATE_KEY_ENV, PUBLIC_KEY_ENV, SERVE_ARGS, STATUS_CONFIG_MAP_ENV, scopes,
};
use neonctl_contract::{neon, resources};

pub use self::cli::{Command, ServeArgs, StoreArg};
use self::computes::{ComputeAddresses, ServiceDns};
pub use self::http::Running;
use self::kube_store::KubeStore;
pub use self::scaling::Scaling;
use self::store::{FileStore, MemoryStore, State, Store, StoreError};

/// Keys for incoming and outgoing tokens; either may be absent in an unauthenticated setup.
#[derive(Debug, Default)]
pub struct Keys {
    pub verify: Option<PublicKey>,
    pub sign: Option<SigningKey>,
}

impl Keys {
    fn from_env() -> Result<Self, ServeError> {
        let read = |name: &'static str| std::env::var(name).ok().filter(|value| !value.trim().is_empty());
        let key_error = |variable: &'static str| move |source| ServeError::Key { variable, source };
        Ok(Self {
            verify: read(PUBLIC_KEY_ENV).map(|pem| PublicKey::from_pem(&pem)).transpose().map_err(key_error(PUBLIC_KEY_ENV))?,
            sign: read(PRIVATE_KEY_ENV).map(|pem| SigningKey::from_pem(&pem)).transpose().map_err(key_error(PRIVATE_KEY_ENV))?,
        })
    }
}

/// How long the hooks keep trying to reach a compute_ctl before answering 503.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Pause after the first failed `/configure`; doubles after each failure, up to 2 s.
    pub first_delay: Duration,
    /// For the whole hook call. The storage controller gives up on a notification after 10 s
    /// (`NOTIFY_REQUEST_TIMEOUT`) and retries it itself, so a 503 must come before that.
    pub deadline: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self { first_delay: Duration::from_millis(250), deadline: Duration::from_secs(8) }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "could not read the control plane topology {path}: {source}; it is the topology.json `render` writes into the control plane's ConfigMap"
    )]
    TopologyRead { path: PathBuf, source: std::io::Error },
    #[error("the control plane topology {path} is not valid: {source}; render it again with `neonctl-aws render`")]
    TopologyParse { path: PathBuf, source: serde_json::Error },
    #[error("{variable}: {source}")]
    Key { variable: &'static str, source: KeyError },
    #[error(
        "{missing} is not set: the control plane checks its callers' tokens with ${PUBLIC_KEY_ENV} and signs compute and \
         storage tokens with ${PRIVATE_KEY_ENV} (the rendered Deployment sets both from the deployment's Secrets). Set them, \
         or pass --insecure-no-auth to trust every caller on a network nobody else reaches"
    )]
    NoKeys { missing: String },
    #[error("could not listen on {listen}: {source}; check the address is valid and free")]
    Bind { listen: String, source: std::io::Error },
    #[error("--store kubernetes needs {what}: set ${variable} (the rendered Deployment does) or pass {flag}")]
    KubernetesSetting { what: &'static str, variable: &'static str, flag: &'static str },
    #[error(
        "could not build a Kubernetes client: {source}; in a pod the service account token must be mounted, elsewhere $KUBECONFIG must name a cluster"
    )]
    KubeClient { source: kube::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub fn load_topology(path: &Path) -> Result<Topology, ServeError> {
    let text = std::fs::read_to_string(path).map_err(|source| ServeError::TopologyRead { path: path.into(), source })?;
    serde_json::from_str(&text).map_err(|source| ServeError::TopologyParse { path: path.into(), source })
}

/// The service: topology, keys, state and the client it calls computes and the storage
/// controller with.
pub struct ControlPlane {
    topology: Topology,
    keys: Keys,
    store: Box<dyn Store>,
    state: tokio::sync::Mutex<State>,
    /// Held for a whole hook call (and the reconciler's reconfigurations), so that
    /// reconfigurations reach computes in order.
    hooks: tokio::sync::Mutex<()>,
    /// What the operator remembers; held briefly, never across a call.
    memory: std::sync::Mutex<reconcile::Memory>,
    retry: Retry,
    client: http::HttpClient,
    metrics: metrics::Metrics,
    /// Where each endpoint's compute is reached.
    addresses: Arc<dyn ComputeAddresses>,
    scaling: Scaling,
    /// One per endpoint: its suspends and wakes happen one at a time.
    scaling_locks: std::sync::Mutex<std::collections::BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl ControlPlane {
    pub async fn new(topology: Topology, keys: Keys, store: Box<dyn Store>, retry: Retry) -> Result<Self, StoreError> {
        let state = store.load().await?;
        Ok(Self {
            addresses: Arc::new(ServiceDns(topology.compute.clone())),
            topology,
            keys,
            store,
            state: tokio::sync::Mutex::new(state),
            hooks: tokio::sync::Mutex::new(()),
            memory: std::sync::Mutex::default(),
            retry,
            client: http::client(),
            metrics: metrics::Metrics::default(),
            scaling: Scaling::default(),
            scaling_locks: std::sync::Mutex::default(),
        })
    }

    /// Paces scale to zero as `scaling` says (tests: a shorter poll and wake).
    pub fn with_scaling(mut self, scaling: Scaling) -> Self {
        self.scaling = scaling;
        self
    }

    /// Reaches computes at `addresses` instead of their Services' DNS names (tests: stand-ins).
    pub fn with_compute_addresses(mut self, addresses: Arc<dyn ComputeAddresses>) -> Self {
        self.addresses = addresses;
        self
    }

    /// Binds `listen` and serves until [`Running::stop`], reconciling as `reconciling` says;
    /// `None`: only when [`ControlPlane::reconcile`] is called.
    pub async fn start(self: Arc<Self>, listen: &str, reconciling: Option<Reconciling>) -> Result<Running, ServeError> {
        let bind = |source| ServeError::Bind { listen: listen.into(), source };
        let listener = tokio::net::TcpListener::bind(listen).await.map_err(bind)?;
        let mut running = http::spawn(listener, api::router(self.clone())).map_err(bind)?;
        if let Some(Reconciling { every, election }) = reconciling {
            let (leader, leading) = tokio::sync::watch::channel(election.is_none());
            if let Some((client, election)) = election {
                running.also(|stop| lease::run(client, election, leader, stop));
            }
            running.also(|stop| self.reconcile_until(every, leading, stop));
        }
        Ok(running)
    }
}

/// How the operator runs: its periodic work every `every`, and with an election only while this
/// replica holds the Lease.
pub struct Reconciling {
    pub every: Duration,
    pub election: Option<(kube::Client, lease::Election)>,
}

/// `control-plane serve`: load, serve, and stop gracefully on SIGTERM or Ctrl-C.
pub async fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let topology = load_topology(&args.topology)?;
    let keys = Keys::from_env()?;
    let missing: Vec<String> = [(PUBLIC_KEY_ENV, keys.verify.is_none()), (PRIVATE_KEY_ENV, keys.sign.is_none())]
        .iter()
        .filter(|(_, absent)| *absent)
        .map(|(name, _)| format!("${name}"))
        .collect();
    match (missing.is_empty(), args.insecure_no_auth) {
        (true, _) => {}
        (false, false) => return Err(ServeError::NoKeys { missing: missing.join(" and ") }.into()),
        (false, true) => {
            tracing::info!("--insecure-no-auth: {} not set, every caller is trusted without a token", missing.join(" and "))
        }
    }
    let mut election = None;
    let (store, described): (Box<dyn Store>, String) = match &args.store {
        Some(StoreArg::Kubernetes) => {
            let setting = |what, variable, flag| ServeError::KubernetesSetting { what, variable, flag };
            let namespace = args.namespace.clone().ok_or(setting("a namespace", NAMESPACE_ENV, "--namespace"))?;
            let status =
                args.status_config_map.clone().ok_or(setting("a status ConfigMap", STATUS_CONFIG_MAP_ENV, "--status-config-map"))?;
            let client = kube::Client::try_default().await.map_err(|source| ServeError::KubeClient { source })?;
            if let Some(lease) = &args.lease {
                let identity = args.pod_name.clone().ok_or(setting("this replica's name for --lease", POD_NAME_ENV, "--pod-name"))?;
                election = Some((client.clone(), lease::Election::new(lease.clone(), namespace.clone(), identity)));
            }
            let described = format!("NeonBranch and NeonEndpoint objects in namespace {namespace}");
            (Box::new(KubeStore::new(client, namespace, status)), described)
        }
        Some(StoreArg::File(path)) => (Box::new(FileStore::new(path)), path.display().to_string()),
        None => (Box::new(MemoryStore::default()), "in memory".into()),
    };
    let listen = args.listen.clone().unwrap_or_else(|| topology.listen.clone());
    let control_plane = Arc::new(ControlPlane::new(topology, keys, store, Retry::default()).await?);
    let running = control_plane.start(&listen, Some(Reconciling { every: reconcile::EVERY, election })).await?;
    tracing::info!("listening on http://{} (state: {described})", running.addr());
    shutdown_signal().await.context("waiting for SIGTERM")?;
    tracing::info!("shutting down: finishing in-flight requests");
    running.stop().await;
    Ok(())
}

/// Makes ring the one TLS crypto provider of this process, at its start (both executables'
/// `main`, and tests that build clients in process). Built together with the CLI, whose AWS
/// SDK brings aws-lc-rs while kube brings ring, rustls cannot pick one itself: a Kubernetes
/// client would panic on its first TLS connection. Idempotent.
pub fn install_crypto_provider() {
    // Err only means a provider is installed already, which is all we need.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The `neonctl-aws-control-plane` binary: parse, run, and exit 2 on a usage error (the
/// Deployment's settings), 1 on any other failure.
pub fn main() -> std::process::ExitCode {
    use clap::Parser as _;

    /// The control plane neonctl-aws deploys into the cluster.
    #[derive(clap::Parser)]
    #[command(name = "neonctl-aws-control-plane", version)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }
    let Command::Serve(args) = Cli::parse().command;
    install_crypto_provider();
    init_json_logs();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(serve(&args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::from(if is_usage_error(&error) { 2 } else { 1 })
        }
    }
}

/// Logs as the cluster's log collectors want them: one JSON object per line on stderr, at
/// `info` unless `RUST_LOG` says otherwise. No log line carries a token, password, verifier or
/// request body.
fn init_json_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().json().with_env_filter(filter).with_writer(std::io::stderr).init();
}

/// The error is the operator's to fix in the command line or environment: nothing was served.
pub fn is_usage_error(error: &anyhow::Error) -> bool {
    error
        .chain()
        .any(|cause| matches!(cause.downcast_ref::<ServeError>(), Some(ServeError::NoKeys { .. } | ServeError::KubernetesSetting { .. })))
}

async fn shutdown_signal() -> std::io::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result,
        _ = terminate.recv() => Ok(()),
    }
}
