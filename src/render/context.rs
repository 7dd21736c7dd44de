//! The values the templates see: every name, address, label, command line and network path,
//! computed here so that the templates only lay out objects.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};

use super::inputs::{POSTGRES_IMAGE, RenderInputs, StorageClass, StorconDb};
use super::{RenderError, SecretRef};
use crate::neon::control_plane::{self, Topology};
use crate::neon::pageserver::{AuthType, Identity, NodeMetadata, PageserverToml};
use crate::neon::proxy::ProxyArgs;
use crate::neon::safekeeper::SafekeeperArgs;
use crate::neon::storage_broker::StorageBrokerArgs;
use crate::neon::storage_controller::{self, StorageControllerArgs};
use crate::neon::{S3Storage, Secret, compute, ports, proxy};
use neonctl_contract::computes::{self, ComputeTemplate};
use neonctl_contract::resources;

pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "neonctl-aws";
pub const LABEL_PREFIX: &str = "neonctl-aws/prefix";
const LABEL_NAME: &str = "app.kubernetes.io/name";
const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
const LABEL_NODE_ID: &str = "neonctl-aws/node-id";

/// Where the JWT public key is mounted in pageservers and safekeepers.
const AUTH_DIR: &str = "/etc/neon/auth";
const PUBLIC_KEY_FILE: &str = "auth_public_key.pem";
const TLS_DIR: &str = "/etc/neon/tls";
const CONTROL_PLANE_CONFIG_DIR: &str = "/etc/neonctl-aws";
/// Where the official images install Postgres (`v17/bin/postgres`).
const PG_DISTRIB_DIR: &str = "/usr/local/";
const PAGESERVER_WORKDIR: &str = "/data";
/// The keys of the S3 credentials Secret: the environment variables the AWS SDK inside
/// pageservers and safekeepers reads.
pub const S3_CREDENTIAL_KEYS: [&str; 2] = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"];
/// Role and database of the in-cluster storage controller Postgres.
const STORCON_DB_USER: &str = "storage_controller";

/// Keys of the Secret `<prefix>-auth`: the JWT public key and one token per caller.
pub mod auth_keys {
    pub const PUBLIC_KEY: &str = super::PUBLIC_KEY_FILE;
    pub const STORCON_TO_PAGESERVER: &str = "storcon-pageserver.jwt";
    pub const STORCON_TO_SAFEKEEPER: &str = "storcon-safekeeper.jwt";
    pub const STORCON_TO_CONTROL_PLANE: &str = "storcon-control-plane.jwt";
    pub const PAGESERVER_TO_SAFEKEEPER: &str = "pageserver-safekeeper.jwt";
    /// A safekeeper's `--auth-token-path`: what it sends its peers (`pull_timeline`, when the
    /// storage controller moves a timeline), checked like any safekeeper call
    /// (`safekeeper/src/auth.rs`: scope `safekeeperdata`).
    pub const SAFEKEEPER_TO_SAFEKEEPER: &str = "safekeeper-peer.jwt";
    pub const PROXY_TO_CONTROL_PLANE: &str = "proxy-control-plane.jwt";
    pub const COMPUTE_TO_CONTROL_PLANE: &str = "compute-control-plane.jwt";
    /// The JWT scope neon checks for each token it receives (`libs/utils/src/auth.rs`, as
    /// neon_local mints them); the other tokens are checked by our control plane. The
    /// pageserver's `control_plane_api_token` (in pageserver.toml) has scope `generations_api`.
    pub const NEON_SCOPES: [(&str, &str); 4] = [
        (STORCON_TO_PAGESERVER, "pageserverapi"),
        (STORCON_TO_SAFEKEEPER, "safekeeperdata"),
        (PAGESERVER_TO_SAFEKEEPER, "safekeeperdata"),
        (SAFEKEEPER_TO_SAFEKEEPER, "safekeeperdata"),
    ];
    pub const ALL: [&str; 8] = [
        PUBLIC_KEY,
        STORCON_TO_PAGESERVER,
        STORCON_TO_SAFEKEEPER,
        STORCON_TO_CONTROL_PLANE,
        PAGESERVER_TO_SAFEKEEPER,
        SAFEKEEPER_TO_SAFEKEEPER,
        PROXY_TO_CONTROL_PLANE,
        COMPUTE_TO_CONTROL_PLANE,
    ];
}

/// The components, by their `app.kubernetes.io/name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Component {
    StorageBroker,
    StorageControllerDb,
    StorageController,
    Pageserver,
    Safekeeper,
    ControlPlane,
    Compute,
    Proxy,
}

impl Component {
    fn name(self) -> &'static str {
        match self {
            Self::StorageBroker => "storage-broker",
            Self::StorageControllerDb => "storage-controller-db",
            Self::StorageController => "storage-controller",
            Self::Pageserver => "pageserver",
            Self::Safekeeper => "safekeeper",
            Self::ControlPlane => "control-plane",
            Self::Compute => "compute",
            Self::Proxy => "proxy",
        }
    }

    /// (cpu request, memory request, memory limit).
    fn resources(self) -> Value {
        let (cpu, memory, limit) = match self {
            Self::StorageBroker => ("100m", "128Mi", "512Mi"),
            Self::StorageControllerDb => ("250m", "512Mi", "1Gi"),
            Self::StorageController => ("250m", "512Mi", "1Gi"),
            Self::Pageserver => ("1", "4Gi", "8Gi"),
            Self::Safekeeper => ("250m", "1Gi", "2Gi"),
            Self::ControlPlane => ("100m", "128Mi", "512Mi"),
            Self::Compute => ("500m", "1Gi", "2Gi"),
            Self::Proxy => ("100m", "256Mi", "1Gi"),
        };
        json!({"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": limit}})
    }

    /// Read-only root everywhere except the compute: Postgres writes sockets and extension
    /// files outside its data directory.
    fn container_security(self) -> Value {
        json!({
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": self != Self::Compute,
            "capabilities": {"drop": ["ALL"]},
        })
    }
}

type Labels = BTreeMap<String, String>;

/// Names and addresses derived from the prefix and namespace.
struct Names<'a> {
    inputs: &'a RenderInputs,
}

impl Names<'_> {
    fn of(&self, component: Component) -> String {
        super::service_account(&self.inputs.prefix, component.name()).1
    }
    fn node(&self, component: Component, id: u64) -> String {
        format!("{}-{id}", self.of(component))
    }
    /// The DNS suffix of the namespace's Services.
    fn service_domain(&self) -> String {
        format!("{}.svc.cluster.local", self.inputs.namespace)
    }
    /// The service's cluster DNS name.
    fn host(&self, service: &str) -> String {
        format!("{service}.{}", self.service_domain())
    }
    /// The DNS name of pod 0 of a per-node StatefulSet behind the component's headless Service.
    fn node_host(&self, component: Component, id: u64) -> String {
        self.host(&format!("{}-0.{}", self.node(component, id), self.of(component)))
    }
    fn url(&self, component: Component, port: u16) -> String {
        format!("http://{}:{port}", self.host(&self.of(component)))
    }
    fn secret(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.inputs.prefix)
    }
    fn auth_secret(&self) -> String {
        self.secret("auth")
    }
    fn signing_secret(&self) -> String {
        self.secret("jwt-signing")
    }
    fn storcon_db_secret(&self) -> String {
        self.secret("storcon-db")
    }
    fn pageserver_config_secret(&self, id: u64) -> String {
        self.node(Component::Pageserver, id)
    }
    fn proxy_tls_secret(&self) -> String {
        self.secret("proxy-tls")
    }
    /// Written by the control plane, not rendered: see [`neonctl_contract::service::status_config_map`].
    fn control_plane_status(&self) -> String {
        neonctl_contract::service::status_config_map(&self.inputs.prefix)
    }
    fn common_labels(&self) -> Labels {
        let prefix = &self.inputs.prefix;
        [
            (LABEL_MANAGED_BY, MANAGED_BY),
            (LABEL_PREFIX, prefix.as_str()),
            (LABEL_INSTANCE, prefix.as_str()),
            ("app.kubernetes.io/part-of", "neon"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
    fn selector(&self, component: Component) -> Labels {
        Labels::from([(LABEL_INSTANCE.into(), self.inputs.prefix.clone()), (LABEL_NAME.into(), component.name().into())])
    }
    fn labels(&self, component: Component) -> Labels {
        let mut labels = self.common_labels();
        labels.extend(self.selector(component));
        labels
    }
}

/// The metadata and shared pod fields of one Deployment/StatefulSet, its Service and
/// ServiceAccount.
#[derive(Debug, Serialize)]
struct Workload {
    name: String,
    labels: Labels,
    selector: Labels,
    image: String,
    args: Vec<String>,
    env: Vec<Value>,
    resources: Value,
    /// The container's securityContext.
    security: Value,
    service_account: ServiceAccount,
}

#[derive(Debug, Serialize)]
struct ServiceAccount {
    name: String,
    annotations: BTreeMap<String, String>,
    /// Only the control plane talks to the Kubernetes API.
    automount_token: bool,
}

/// One pageserver or safekeeper: its own StatefulSet pinned to a zone.
#[derive(Debug, Serialize)]
struct StorageNode {
    id: u64,
    name: String,
    labels: Labels,
    selector: Labels,
    zone: String,
    args: Vec<String>,
    /// Pageserver only: ConfigMap name and its files.
    config_map: Option<String>,
    files: BTreeMap<String, String>,
    /// Pageserver only: the Secret holding `pageserver.toml`.
    config_secret: Option<String>,
}

#[derive(Debug, Serialize)]
struct NetworkPolicy {
    name: String,
    labels: Labels,
    selector: Labels,
    rules: Vec<IngressRule>,
}

#[derive(Debug, Serialize)]
struct IngressRule {
    port: u16,
    from: Vec<Value>,
}

#[derive(Debug, Serialize)]
struct Pdb {
    name: String,
    labels: Labels,
    selector: Labels,
}

#[derive(Debug, Serialize)]
pub struct Context {
    namespace: String,
    namespace_labels: Labels,
    common_labels: Labels,
    storage_class: Option<String>,
    storage_class_name: String,
    pod_security: Value,
    auth_secret: String,
    public_key_key: &'static str,
    safekeeper_peer_token_key: &'static str,
    auth_dir: &'static str,
    ports: BTreeMap<&'static str, u16>,
    broker: Workload,
    storcon: Workload,
    storcon_db: Option<StorconDbContext>,
    pageserver: Workload,
    pageserver_storage: String,
    pageservers: Vec<StorageNode>,
    safekeeper: Workload,
    safekeeper_storage: String,
    safekeepers: Vec<StorageNode>,
    control_plane: Workload,
    control_plane_config: BTreeMap<String, String>,
    control_plane_config_dir: &'static str,
    control_plane_health: &'static str,
    /// What the control plane's Role grants on its custom resources and status ConfigMap.
    control_plane_access: ControlPlaneAccess,
    /// The CustomResourceDefinitions, as JSON objects.
    crds: Vec<Value>,
    compute: Workload,
    proxy: Workload,
    proxy_tls_secret: String,
    proxy_domain: String,
    tls_dir: &'static str,
    pageserver_workdir: &'static str,
    network_policies: Vec<NetworkPolicy>,
    pdbs: Vec<Pdb>,
}

#[derive(Debug, Serialize)]
struct ControlPlaneAccess {
    group: &'static str,
    /// The kinds' plurals and their `/status` subresources.
    resources: Vec<String>,
    status_config_map: String,
    lease: String,
}

#[derive(Debug, Serialize)]
struct StorconDbContext {
    workload: Workload,
    storage: String,
    /// The readiness and liveness check.
    ready_command: Vec<String>,
}

/// A value built as JSON for the templates, as the Kubernetes type the operator builds with.
fn typed<T: serde::de::DeserializeOwned>(value: &impl Serialize) -> T {
    serde_json::from_value(serde_json::to_value(value).expect("JSON")).expect("the rendered JSON is the Kubernetes type")
}

fn env_value(name: &str, value: &str) -> Value {
    json!({"name": name, "value": value})
}

fn env_secret(name: &str, secret: &str, key: &str) -> Value {
    json!({"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})
}

fn env_field(name: &str, field: &str) -> Value {
    json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": field}}})
}

impl RenderInputs {
    /// The Secrets the rendered manifests read. `deploy` creates them (the database one too,
    /// unless it is external: then the user creates it); their values never pass through a file.
    pub fn secrets(&self) -> Vec<SecretRef> {
        let names = Names { inputs: self };
        let mut out = vec![
            SecretRef {
                name: names.auth_secret(),
                keys: auth_keys::ALL.iter().map(|k| k.to_string()).collect(),
                purpose: "JWT public key (EdDSA) and one token per caller".into(),
            },
            SecretRef {
                name: names.signing_secret(),
                keys: vec!["auth_private_key.pem".into()],
                purpose: "JWT signing key; mounted only in the control plane".into(),
            },
            SecretRef {
                name: names.storcon_db_secret(),
                keys: match self.storcon_db {
                    StorconDb::InCluster { .. } => vec!["database-url".into(), "password".into()],
                    StorconDb::External => vec!["database-url".into()],
                },
                purpose: match self.storcon_db {
                    StorconDb::InCluster { .. } => "storage controller database URL and the in-cluster Postgres password".into(),
                    StorconDb::External => "URL of your storage controller database (create it before deploy)".into(),
                },
            },
            SecretRef {
                name: names.proxy_tls_secret(),
                keys: vec!["tls.crt".into(), "tls.key".into()],
                purpose: format!("proxy certificate with subject CN *.{}", self.proxy_domain),
            },
        ];
        if let Some(name) = self.s3_credentials_secret() {
            out.push(SecretRef {
                name,
                keys: S3_CREDENTIAL_KEYS.map(String::from).to_vec(),
                purpose: "credentials for the S3-compatible endpoint (create it before deploy)".into(),
            });
        }
        out.extend(self.pageserver_ids().map(|id| SecretRef {
            name: names.pageserver_config_secret(id),
            keys: vec!["pageserver.toml".into()],
            purpose: format!("pageserver {id} config (holds its storage controller token)"),
        }));
        out
    }

    /// The Secret with the S3 credentials pageservers and safekeepers read, when the bucket is
    /// behind an S3-compatible endpoint (AWS S3 is reached with IRSA or the node role instead).
    pub fn s3_credentials_secret(&self) -> Option<String> {
        self.s3_endpoint.as_ref().map(|_| Names { inputs: self }.secret("s3-credentials"))
    }

    /// `pageserver.toml` for pageserver `id`; it goes into the Secret [`RenderInputs::secrets`]
    /// names, because it carries `token` (scope `generations_api`).
    pub fn pageserver_toml(&self, id: u64, token: Secret) -> Result<PageserverToml, RenderError> {
        let names = Names { inputs: self };
        Ok(PageserverToml {
            listen_pg_addr: format!("0.0.0.0:{}", ports::PAGESERVER_PG),
            listen_http_addr: format!("0.0.0.0:{}", ports::PAGESERVER_HTTP),
            broker_endpoint: names.url(Component::StorageBroker, ports::STORAGE_BROKER),
            control_plane_api: format!("{}/upcall/v1/", names.url(Component::StorageController, ports::STORAGE_CONTROLLER)),
            control_plane_api_token: token,
            pg_distrib_dir: PG_DISTRIB_DIR.into(),
            availability_zone: self.zone_of(id)?.to_string(),
            http_auth_type: AuthType::NeonJwt,
            pg_auth_type: AuthType::NeonJwt,
            auth_validation_public_key_path: format!("{AUTH_DIR}/{PUBLIC_KEY_FILE}"),
            remote_storage: self.s3("pageserver/"),
        })
    }

    /// The `database-url` of the in-cluster storage controller database, for the Secret
    /// `deploy` creates; `None` with an external database (the user's Secret has it).
    pub fn in_cluster_database_url(&self, password: &Secret) -> Option<Secret> {
        let names = Names { inputs: self };
        match self.storcon_db {
            StorconDb::InCluster { .. } => Some(Secret(format!(
                "postgresql://{STORCON_DB_USER}:{}@{}:{}/{STORCON_DB_USER}",
                password.0,
                names.host(&names.of(Component::StorageControllerDb)),
                ports::POSTGRES
            ))),
            StorconDb::External => None,
        }
    }

    fn pageserver_ids(&self) -> impl Iterator<Item = u64> {
        1..=u64::from(self.pageservers)
    }

    fn safekeeper_ids(&self) -> impl Iterator<Item = u64> {
        1..=u64::from(self.safekeepers)
    }

    /// Node `id` (1-based) goes to zone `(id - 1) mod zones`.
    fn zone_of(&self, id: u64) -> Result<&str, RenderError> {
        let index = usize::try_from(id.saturating_sub(1)).unwrap_or_default() % self.zones.len().max(1);
        self.zones.get(index).map(String::as_str).ok_or(RenderError::NoZones)
    }

    fn s3(&self, prefix: &str) -> S3Storage {
        S3Storage {
            bucket_name: self.bucket.clone(),
            bucket_region: self.region.clone(),
            prefix_in_bucket: Some(prefix.into()),
            endpoint: self.s3_endpoint.clone(),
        }
    }

    fn image(&self, name: &str) -> String {
        self.images.get(name).map(|image| image.reference()).unwrap_or_default()
    }
}

impl Context {
    pub fn build(inputs: &RenderInputs) -> Result<Self, RenderError> {
        if inputs.zones.is_empty() {
            return Err(RenderError::NoZones);
        }
        let names = Names { inputs };
        let workload = |component: Component, image: &str, args: Vec<String>, env: Vec<Value>| Workload {
            name: names.of(component),
            labels: names.labels(component),
            selector: names.selector(component),
            image: inputs.image(image),
            args,
            env,
            resources: component.resources(),
            security: component.container_security(),
            service_account: ServiceAccount {
                name: names.of(component),
                annotations: BTreeMap::new(),
                automount_token: component == Component::ControlPlane,
            },
        };
        let irsa = |arn: &Option<String>| -> BTreeMap<String, String> {
            arn.iter().map(|arn| ("eks.amazonaws.com/role-arn".to_string(), arn.clone())).collect()
        };
        let auth = names.auth_secret();
        let broker_url = names.url(Component::StorageBroker, ports::STORAGE_BROKER);
        let control_plane_url = names.url(Component::ControlPlane, ports::CONTROL_PLANE);
        let rust_log = env_value("RUST_LOG", "info");
        let s3_credentials: Vec<Value> = inputs
            .s3_credentials_secret()
            .map(|secret| S3_CREDENTIAL_KEYS.iter().map(|key| env_secret(key, &secret, key)).collect())
            .unwrap_or_default();

        let broker = workload(
            Component::StorageBroker,
            "storage-broker",
            StorageBrokerArgs { listen_addr: format!("0.0.0.0:{}", ports::STORAGE_BROKER) }.to_args(),
            vec![rust_log.clone()],
        );

        let storcon_args = StorageControllerArgs {
            listen: format!("0.0.0.0:{}", ports::STORAGE_CONTROLLER),
            control_plane_url: format!("{control_plane_url}{}", control_plane::paths::STORAGE_HOOKS),
            address_for_peers: format!("http://$(POD_IP):{}/", ports::STORAGE_CONTROLLER),
            timelines_onto_safekeepers: inputs.timelines_onto_safekeepers(),
        };
        use storage_controller::env as sc_env;
        let storcon_env = vec![
            env_field("POD_IP", "status.podIP"),
            rust_log.clone(),
            env_secret(sc_env::DATABASE_URL, &names.storcon_db_secret(), "database-url"),
            env_secret(sc_env::PUBLIC_KEY, &auth, auth_keys::PUBLIC_KEY),
            env_secret(sc_env::PAGESERVER_JWT_TOKEN, &auth, auth_keys::STORCON_TO_PAGESERVER),
            env_secret(sc_env::SAFEKEEPER_JWT_TOKEN, &auth, auth_keys::STORCON_TO_SAFEKEEPER),
            env_secret(sc_env::CONTROL_PLANE_JWT_TOKEN, &auth, auth_keys::STORCON_TO_CONTROL_PLANE),
        ];
        let storcon = workload(Component::StorageController, "storage-controller", storcon_args.to_args(), storcon_env);

        let storcon_db = match &inputs.storcon_db {
            StorconDb::InCluster { storage } => Some(StorconDbContext {
                workload: workload(
                    Component::StorageControllerDb,
                    POSTGRES_IMAGE,
                    vec![],
                    vec![
                        env_value("POSTGRES_USER", STORCON_DB_USER),
                        env_value("POSTGRES_DB", STORCON_DB_USER),
                        env_value("PGDATA", "/var/lib/postgresql/data/pgdata"),
                        env_secret("POSTGRES_PASSWORD", &names.storcon_db_secret(), "password"),
                    ],
                ),
                storage: storage.clone(),
                ready_command: ["pg_isready", "-U", STORCON_DB_USER, "-d", STORCON_DB_USER, "-h", "127.0.0.1"].map(String::from).to_vec(),
            }),
            StorconDb::External => None,
        };

        let mut pageserver = workload(
            Component::Pageserver,
            "pageserver",
            vec![format!("--workdir={PAGESERVER_WORKDIR}")],
            [vec![rust_log.clone(), env_secret("NEON_AUTH_TOKEN", &auth, auth_keys::PAGESERVER_TO_SAFEKEEPER)], s3_credentials.clone()]
                .concat(),
        );
        pageserver.service_account.annotations = irsa(&inputs.pageserver_role_arn);
        let pageservers = inputs
            .pageserver_ids()
            .map(|id| {
                let host = names.node_host(Component::Pageserver, id);
                let zone = inputs.zone_of(id)?.to_string();
                let metadata = NodeMetadata {
                    host: host.clone(),
                    port: ports::PAGESERVER_PG,
                    http_host: host,
                    http_port: ports::PAGESERVER_HTTP,
                    availability_zone_id: zone.clone(),
                };
                let files = BTreeMap::from([
                    ("identity.toml".to_string(), Identity { id }.to_toml()?),
                    ("metadata.json".to_string(), metadata.to_json()?),
                ]);
                Ok(StorageNode {
                    id,
                    name: names.node(Component::Pageserver, id),
                    labels: node_labels(names.labels(Component::Pageserver), id),
                    selector: node_labels(names.selector(Component::Pageserver), id),
                    zone,
                    args: pageserver.args.clone(),
                    config_map: Some(names.node(Component::Pageserver, id)),
                    files,
                    config_secret: Some(names.pageserver_config_secret(id)),
                })
            })
            .collect::<Result<Vec<_>, RenderError>>()?;

        let mut safekeeper = workload(
            Component::Safekeeper,
            "safekeeper",
            vec![],
            [vec![env_field("POD_IP", "status.podIP"), rust_log.clone()], s3_credentials].concat(),
        );
        safekeeper.service_account.annotations = irsa(&inputs.safekeeper_role_arn);
        let safekeepers = inputs
            .safekeeper_ids()
            .map(|id| {
                let zone = inputs.zone_of(id)?.to_string();
                let args = SafekeeperArgs {
                    id,
                    datadir: "/data".into(),
                    listen_pg: format!("0.0.0.0:{}", ports::SAFEKEEPER_PG),
                    listen_http: format!("$(POD_IP):{}", ports::SAFEKEEPER_HTTP),
                    advertise_pg: format!("{}:{}", names.node_host(Component::Safekeeper, id), ports::SAFEKEEPER_PG),
                    availability_zone: zone.clone(),
                    broker_endpoint: broker_url.clone(),
                    remote_storage: inputs.s3("safekeeper/"),
                    auth_public_key_path: format!("{AUTH_DIR}/{PUBLIC_KEY_FILE}"),
                    auth_token_path: format!("{AUTH_DIR}/{}", auth_keys::SAFEKEEPER_TO_SAFEKEEPER),
                }
                .to_args()?;
                Ok(StorageNode {
                    id,
                    name: names.node(Component::Safekeeper, id),
                    labels: node_labels(names.labels(Component::Safekeeper), id),
                    selector: node_labels(names.selector(Component::Safekeeper), id),
                    zone,
                    args,
                    config_map: None,
                    files: BTreeMap::new(),
                    config_secret: None,
                })
            })
            .collect::<Result<Vec<_>, RenderError>>()?;

        let pod_security = json!({
            "runAsNonRoot": true,
            "runAsUser": 1000,
            "runAsGroup": 1000,
            "fsGroup": 1000,
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        });
        let compute = workload(
            Component::Compute,
            "compute",
            vec![],
            vec![
                rust_log.clone(),
                env_secret(compute::CONTROL_PLANE_TOKEN_ENV, &auth, auth_keys::COMPUTE_TO_CONTROL_PLANE),
                // neon's tracing-utils exports to localhost:4318 unless told otherwise, and logs
                // every failed export.
                match &inputs.otlp_endpoint {
                    Some(endpoint) => env_value("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
                    None => env_value("OTEL_SDK_DISABLED", "true"),
                },
            ],
        );
        // The operator makes each endpoint's compute; deploy must not prune them.
        let mut compute_labels = compute.labels.clone();
        compute_labels.insert(LABEL_MANAGED_BY.into(), computes::MANAGED_BY.into());
        let compute_template = ComputeTemplate {
            namespace: inputs.namespace.clone(),
            name_prefix: compute.name.clone(),
            service_domain: names.service_domain(),
            labels: compute_labels,
            selector: compute.selector.clone(),
            image: compute.image.clone(),
            service_account: compute.service_account.name.clone(),
            pgbin: "/usr/local/bin/postgres".into(),
            control_plane_uri: control_plane_url.clone(),
            env: typed(&compute.env),
            resources: typed(&compute.resources),
            pod_security: typed(&pod_security),
            container_security: typed(&compute.security),
            pg_port: ports::COMPUTE_PG,
            http_port: ports::COMPUTE_HTTP,
        };

        let topology_node = |component, id, zone: &str, pg_port, http_port| {
            let host = names.node_host(component, id);
            control_plane::Node {
                id,
                pg: format!("{host}:{pg_port}"),
                http: format!("http://{host}:{http_port}"),
                availability_zone: zone.to_string(),
            }
        };
        let topology = Topology {
            listen: format!("0.0.0.0:{}", ports::CONTROL_PLANE),
            region: inputs.region.clone(),
            storage_controller_url: names.url(Component::StorageController, ports::STORAGE_CONTROLLER),
            pageservers: pageservers
                .iter()
                .map(|n| topology_node(Component::Pageserver, n.id, &n.zone, ports::PAGESERVER_PG, ports::PAGESERVER_HTTP))
                .collect(),
            safekeepers: safekeepers
                .iter()
                .map(|n| topology_node(Component::Safekeeper, n.id, &n.zone, ports::SAFEKEEPER_PG, ports::SAFEKEEPER_HTTP))
                .collect(),
            compute: compute_template,
        };
        let control_plane = workload(
            Component::ControlPlane,
            "control-plane",
            // The image's entrypoint is neonctl-aws itself.
            neonctl_contract::service::SERVE_ARGS.map(String::from).to_vec(),
            vec![
                rust_log.clone(),
                env_value("NEONCTL_CONTROL_PLANE_CONFIG", &format!("{CONTROL_PLANE_CONFIG_DIR}/topology.json")),
                env_secret(neonctl_contract::service::PRIVATE_KEY_ENV, &names.signing_secret(), "auth_private_key.pem"),
                env_secret(neonctl_contract::service::PUBLIC_KEY_ENV, &auth, auth_keys::PUBLIC_KEY),
                env_field(neonctl_contract::service::NAMESPACE_ENV, "metadata.namespace"),
                env_field(neonctl_contract::service::POD_NAME_ENV, "metadata.name"),
                env_value(neonctl_contract::service::LEASE_ENV, &neonctl_contract::service::control_plane_lease(&inputs.prefix)),
                env_value(neonctl_contract::service::STATUS_CONFIG_MAP_ENV, &names.control_plane_status()),
            ],
        );

        let proxy = workload(
            Component::Proxy,
            "proxy",
            ProxyArgs {
                proxy: format!("0.0.0.0:{}", ports::PROXY_PG),
                mgmt: format!("0.0.0.0:{}", ports::PROXY_MGMT),
                http: format!("0.0.0.0:{}", ports::PROXY_HTTP),
                auth_endpoint: format!("{control_plane_url}{}", control_plane::paths::PROXY_API),
                tls_cert: format!("{TLS_DIR}/tls.crt"),
                tls_key: format!("{TLS_DIR}/tls.key"),
                region: inputs.region.clone(),
            }
            .to_args(),
            vec![env_value("LOGFMT", "json"), env_secret(proxy::CONTROL_PLANE_TOKEN_ENV, &auth, auth_keys::PROXY_TO_CONTROL_PLANE)],
        );

        let mut components = vec![
            Component::StorageBroker,
            Component::StorageController,
            Component::Pageserver,
            Component::Safekeeper,
            Component::ControlPlane,
            Component::Compute,
            Component::Proxy,
        ];
        if storcon_db.is_some() {
            components.push(Component::StorageControllerDb);
        }
        components.sort();
        let pdbs = components.iter().map(|&c| Pdb { name: names.of(c), labels: names.labels(c), selector: names.selector(c) }).collect();
        let network_policies = components
            .iter()
            .map(|&c| NetworkPolicy {
                name: names.of(c),
                labels: names.labels(c),
                selector: names.selector(c),
                rules: ingress(c)
                    .into_iter()
                    .map(|(port, from)| IngressRule { port, from: from.into_iter().map(|peer| peer.to_json(&names)).collect() })
                    .collect(),
            })
            .collect();

        let mut namespace_labels = names.common_labels();
        // Every pod here runs as the restricted Pod Security Standard requires.
        namespace_labels.insert("pod-security.kubernetes.io/enforce".into(), "restricted".into());

        Ok(Self {
            namespace: inputs.namespace.clone(),
            namespace_labels,
            common_labels: names.common_labels(),
            storage_class: match &inputs.storage_class {
                StorageClass::Create(name) => Some(name.clone()),
                StorageClass::Existing(_) => None,
            },
            storage_class_name: inputs.storage_class.name().to_string(),
            pod_security,
            auth_secret: auth,
            public_key_key: auth_keys::PUBLIC_KEY,
            safekeeper_peer_token_key: auth_keys::SAFEKEEPER_TO_SAFEKEEPER,
            auth_dir: AUTH_DIR,
            ports: BTreeMap::from([
                ("pageserver_pg", ports::PAGESERVER_PG),
                ("pageserver_http", ports::PAGESERVER_HTTP),
                ("safekeeper_pg", ports::SAFEKEEPER_PG),
                ("safekeeper_http", ports::SAFEKEEPER_HTTP),
                ("storage_broker", ports::STORAGE_BROKER),
                ("storage_controller", ports::STORAGE_CONTROLLER),
                ("proxy_pg", ports::PROXY_PG),
                ("proxy_http", ports::PROXY_HTTP),
                ("compute_pg", ports::COMPUTE_PG),
                ("compute_http", ports::COMPUTE_HTTP),
                ("control_plane", ports::CONTROL_PLANE),
                ("postgres", ports::POSTGRES),
            ]),
            broker,
            storcon,
            storcon_db,
            pageserver,
            pageserver_storage: inputs.pageserver_storage.clone(),
            pageservers,
            safekeeper,
            safekeeper_storage: inputs.safekeeper_storage.clone(),
            safekeepers,
            control_plane,
            control_plane_config: BTreeMap::from([("topology.json".to_string(), topology.to_json()?)]),
            control_plane_config_dir: CONTROL_PLANE_CONFIG_DIR,
            control_plane_health: control_plane::paths::HEALTH,
            control_plane_access: ControlPlaneAccess {
                group: resources::GROUP,
                resources: resources::plurals().iter().flat_map(|plural| [plural.clone(), format!("{plural}/status")]).collect(),
                status_config_map: names.control_plane_status(),
                lease: neonctl_contract::service::control_plane_lease(&inputs.prefix),
            },
            crds: resources::crds(&json!(names.common_labels())),
            compute,
            proxy,
            proxy_tls_secret: names.proxy_tls_secret(),
            proxy_domain: inputs.proxy_domain.clone(),
            tls_dir: TLS_DIR,
            pageserver_workdir: PAGESERVER_WORKDIR,
            network_policies,
            pdbs,
        })
    }
}

fn node_labels(mut labels: Labels, id: u64) -> Labels {
    labels.insert(LABEL_NODE_ID.into(), id.to_string());
    labels
}

/// Who may open a connection to a component.
enum Peer {
    Pod(Component),
    Anywhere,
}

impl Peer {
    fn to_json(&self, names: &Names) -> Value {
        match self {
            Peer::Pod(component) => json!({"podSelector": {"matchLabels": names.selector(*component)}}),
            Peer::Anywhere => json!({"ipBlock": {"cidr": "0.0.0.0/0"}}),
        }
    }
}

/// The network paths Neon needs (neon-components.md §2.0), as ingress rules per destination:
/// (port, allowed sources). Everything else is denied by the namespace's default policy.
fn ingress(component: Component) -> Vec<(u16, Vec<Peer>)> {
    use Component::*;
    use Peer::{Anywhere, Pod};
    match component {
        StorageBroker => vec![(ports::STORAGE_BROKER, vec![Pod(Pageserver), Pod(Safekeeper)])],
        StorageControllerDb => vec![(ports::POSTGRES, vec![Pod(StorageController)])],
        StorageController => vec![(ports::STORAGE_CONTROLLER, vec![Pod(Pageserver), Pod(ControlPlane)])],
        Pageserver => vec![(ports::PAGESERVER_PG, vec![Pod(Compute)]), (ports::PAGESERVER_HTTP, vec![Pod(StorageController)])],
        Safekeeper => {
            // Peers call each other's HTTP API to pull a timeline the storage controller moves.
            vec![
                (ports::SAFEKEEPER_PG, vec![Pod(Compute), Pod(Pageserver)]),
                (ports::SAFEKEEPER_HTTP, vec![Pod(StorageController), Pod(Safekeeper)]),
            ]
        }
        ControlPlane => vec![(ports::CONTROL_PLANE, vec![Pod(StorageController), Pod(Proxy), Pod(Compute)])],
        Compute => vec![(ports::COMPUTE_PG, vec![Pod(Proxy)]), (ports::COMPUTE_HTTP, vec![Pod(ControlPlane)])],
        Proxy => vec![(ports::PROXY_PG, vec![Anywhere])],
    }
}
