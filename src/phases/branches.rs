//! `branches list|get|create|delete` and `connection-string`: the `NeonBranch` and
//! `NeonEndpoint` objects of the deployment, which the in-cluster operator turns into timelines
//! and computes. The custom resources are the API: this writes and reads exactly what `kubectl
//! apply -f branch.yaml` would, and waits on the status the operator reports (the branch's
//! `Ready` condition at the object's generation, the endpoint's `Active`, or the object gone).
//!
//! A branch is a copy-on-write child of its parent's timeline (at its last record, at an LSN, or
//! as of a time, which the operator turns into an LSN): same tenant and project, a new timeline
//! id, the parent's roles and databases, and an endpoint of the same name with its own compute.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use k8s_openapi::api::core::v1::Secret as SecretObject;
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use neonctl_contract::resources::{
    BranchSpec, EndpointSpec, NeonBranch, NeonEndpoint, READY_CONDITION, RENAMED_TO_ANNOTATION, endpoint_phase, phase,
};
use serde::Serialize;

use crate::calls::Calls;
use crate::cli::{
    BranchCreateArgs, BranchDeleteArgs, BranchRenameArgs, BranchResetArgs, BranchRestoreArgs, BranchesArgs, BranchesCommand, ClusterArgs,
    ConnectionStringArgs,
};
use crate::config::Config;
use crate::exit;
use crate::neon::Secret;
use crate::output::{Printer, Table};
use crate::phases::deploy::bootstrap;
use crate::phases::deploy::connect::{Address, Connection};
use crate::phases::deploy::secrets;
use crate::state::State;
use crate::wait::{self, Check, Waited};

/// The branch `deploy` makes; never deleted from here.
const MAIN: &str = bootstrap::BRANCH;

/// How often a wait reads the objects again: the operator answers in tens of milliseconds.
const POLL: Duration = Duration::from_millis(100);

/// One branch as `list` and `get` show it.
#[derive(Debug, Serialize)]
struct Row {
    name: String,
    parent: Option<String>,
    /// The LSN it branched at, given or resolved from its time; none: its parent's last record
    /// at creation.
    branched_at_lsn: Option<String>,
    /// The time it was branched as of, when given.
    branched_at_time: Option<String>,
    phase: String,
    ready: String,
    message: Option<String>,
    created: Option<String>,
    tenant_id: String,
    timeline_id: String,
    /// The endpoint serving it (the one named like it, else the first), its phase (`Active`,
    /// `Suspended`, `Starting`, `Pending`) and when its compute was last active.
    endpoint: Option<String>,
    endpoint_phase: Option<String>,
    last_active: Option<String>,
    /// Whether its endpoint is read-only (a hot standby).
    read_only: bool,
    /// Its logical size in bytes, as the pageserver last reported it.
    logical_size: Option<u64>,
}

pub(crate) fn usage(message: String) -> anyhow::Error {
    exit::Coded { code: exit::USAGE, message }.into()
}

/// A branch (or endpoint) name is the object's name: an RFC 1123 DNS label, as the endpoint
/// hostnames built from it must be too.
pub fn check_name(name: &str) -> Result<(), String> {
    check_label("branch", name)
}

/// `name` of a `what` (branch, endpoint) is an RFC 1123 DNS label.
pub(crate) fn check_label(what: &str, name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{what} name {name:?} is not valid: use at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit"
        ))
    }
}

/// The deployment's cluster (as the state records it, or `--kubeconfig/--context`), its
/// namespace, and the state.
pub(crate) async fn cluster(cluster: &ClusterArgs, config: &Config, state_dir: &Path) -> anyhow::Result<(kube::Client, String, State)> {
    let state = crate::state::read(state_dir).unwrap_or_default();
    let access = crate::k8s::cluster_access(cluster.kubeconfig.as_deref(), cluster.context.as_deref(), &state).ok_or_else(|| {
        usage("no cluster yet: run `neonctl-aws up` (or `infra` and `deploy`), or pass --kubeconfig/--context for your own cluster".into())
    })?;
    let client = crate::k8s::client_for(&access, config, Arc::new(Calls::default())).await?;
    let namespace = state.deploy.as_ref().map_or_else(|| config.prefix.clone(), |d| d.namespace.clone());
    Ok((client, namespace, state))
}

pub async fn run(args: &BranchesArgs, config: &Config, state_dir: &Path, printer: &Printer) -> anyhow::Result<u8> {
    if let BranchesCommand::Create(create) = &args.command {
        check_name(&create.name).map_err(usage)?;
        if let Some(at) = &create.at {
            BranchPoint::parse(at, time::OffsetDateTime::now_utc()).map_err(usage)?;
        }
    }
    if let BranchesCommand::Rename(rename) = &args.command {
        check_name(&rename.new_name).map_err(usage)?;
    }
    if let BranchesCommand::Restore(restore) = &args.command {
        BranchPoint::parse(&restore.at, time::OffsetDateTime::now_utc()).map_err(usage)?;
    }
    let (client, namespace, state) = cluster(&args.cluster, config, state_dir).await?;
    let branches = Branches::new(client, namespace, Duration::from_secs(args.timeout));
    match &args.command {
        BranchesCommand::List => {
            let rows = branches.rows().await?;
            printer.table("branches", &table(&rows), &rows);
        }
        BranchesCommand::Get { name } => {
            let rows = branches.rows().await?;
            let row = rows.into_iter().find(|row| &row.name == name).ok_or_else(|| branches.not_found(name))?;
            printer.table("branch", &table(std::slice::from_ref(&row)), &row);
        }
        BranchesCommand::Create(create) => {
            branches.create(create, printer).await?;
            if !create.plan.plan {
                let target = Target { branch: create.name.clone(), ..Default::default() };
                let connection = branches.connection(&target, config, &state).await?;
                let password = branches.password(&connection, config, create.show_password).await?;
                print_connection(printer, &connection, password.as_ref(), false);
            }
        }
        BranchesCommand::Reset(reset) => branches.reset(reset, printer).await?,
        BranchesCommand::Restore(restore) => branches.restore(restore, printer).await?,
        BranchesCommand::Delete(delete) => branches.delete(delete, printer).await?,
        BranchesCommand::Rename(rename) => branches.rename(rename, &config.prefix, printer).await?,
    }
    Ok(exit::SUCCESS)
}

/// `connection-string [BRANCH]`.
pub async fn connection_string(args: &ConnectionStringArgs, config: &Config, state_dir: &Path, printer: &Printer) -> anyhow::Result<u8> {
    let (client, namespace, state) = cluster(&args.cluster, config, state_dir).await?;
    let branches = Branches::new(client, namespace, Duration::from_secs(0));
    let target = Target {
        branch: args.branch.clone(),
        endpoint: args.endpoint.clone(),
        role: args.role.clone(),
        database: args.database.clone(),
        proxy_address: args.proxy_address.clone(),
    };
    let connection = branches.connection(&target, config, &state).await?;
    let password = branches.password(&connection, config, args.show_password).await?;
    print_connection(printer, &connection, password.as_ref(), args.psql);
    Ok(exit::SUCCESS)
}

/// Which connection string to make.
#[derive(Default)]
pub(crate) struct Target {
    pub(crate) branch: String,
    /// One of the branch's endpoints; none: the one named like it, else its first.
    pub(crate) endpoint: Option<String>,
    pub(crate) role: Option<String>,
    pub(crate) database: Option<String>,
    pub(crate) proxy_address: Option<String>,
}

/// What a connection string needs, and how to reach the proxy without DNS when known.
pub(crate) struct Endpoint {
    connection: Connection,
    /// The branch it serves.
    branch: String,
    /// Whether [`Connection::address`] is the proxy's own address (else only the DNS form).
    direct: bool,
}

/// The connection strings: on stdout, with the password only when given.
pub(crate) fn print_connection(printer: &Printer, endpoint: &Endpoint, password: Option<&Secret>, psql: bool) {
    #[derive(Serialize)]
    struct Strings {
        endpoint: String,
        connection_string: String,
        without_dns: Option<String>,
    }
    let connection = &endpoint.connection;
    let strings = Strings {
        endpoint: connection.endpoint.clone(),
        connection_string: connection.url(password),
        without_dns: endpoint.direct.then(|| connection.url_without_dns(password)),
    };
    let quoted = |url: &str| if psql { format!("psql '{url}'") } else { url.to_string() };
    let mut table = Table::new(&["FORM", "CONNECTION"]);
    table.row(vec!["dns".into(), quoted(&strings.connection_string)]);
    if let Some(direct) = &strings.without_dns {
        table.row(vec!["without dns".into(), quoted(direct)]);
    }
    printer.table("connection", &table, &strings);
}

/// The branch a restore keeps the replaced data in: Neon's `<name>_old_<time>`, as a DNS label
/// of at most 63 characters.
fn backup_name(name: &str, now: time::OffsetDateTime) -> String {
    let stamp = format!(
        "-old-{:04}{:02}{:02}{:02}{:02}{:02}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    format!("{}{stamp}", name[..name.len().min(63 - stamp.len())].trim_end_matches('-'))
}

/// Where a branch starts in its parent, as `--at` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum BranchPoint {
    /// `X/Y` in hex, as Postgres prints an LSN.
    Lsn(String),
    /// RFC 3339, normalized to UTC.
    Time(String),
}

impl BranchPoint {
    fn parse(at: &str, now: time::OffsetDateTime) -> Result<Self, String> {
        use time::format_description::well_known::Rfc3339;
        let halves: Vec<&str> = at.split('/').collect();
        let hex = |half: &str| (1..=8).contains(&half.len()) && half.chars().all(|c| c.is_ascii_hexdigit());
        if halves.len() == 2 && halves.iter().all(|half| hex(half)) {
            return Ok(Self::Lsn(at.to_string()));
        }
        let Ok(time) = time::OffsetDateTime::parse(at, &Rfc3339) else {
            return Err(format!(
                "--at {at:?} is neither an LSN (e.g. 0/16B5A50, as `select pg_current_wal_lsn()` prints it) nor an RFC 3339 time \
                 (e.g. 2026-11-26T09:30:00Z)"
            ));
        };
        if time > now {
            return Err(format!("--at {at} is in the future: a branch can start at most now"));
        }
        let utc = time.to_offset(time::UtcOffset::UTC).format(&Rfc3339).map_err(|e| format!("--at {at}: {e}"))?;
        Ok(Self::Time(utc))
    }

    fn describe(point: Option<&Self>) -> String {
        match point {
            None => "its last record".into(),
            Some(Self::Lsn(lsn)) => format!("LSN {lsn}"),
            Some(Self::Time(time)) => format!("its state at {time}"),
        }
    }
}

fn table(rows: &[Row]) -> Table {
    let mut table =
        Table::new(&["BRANCH", "PARENT", "AT LSN", "AT TIME", "PHASE", "READY", "SIZE", "ENDPOINT", "COMPUTE", "LAST ACTIVE", "CREATED"]);
    for row in rows {
        let or_dash = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".into());
        table.row(vec![
            row.name.clone(),
            or_dash(&row.parent),
            or_dash(&row.branched_at_lsn),
            or_dash(&row.branched_at_time),
            row.phase.clone(),
            row.ready.clone(),
            row.logical_size.map_or_else(|| "-".into(), |bytes| indicatif::HumanBytes(bytes).to_string()),
            row.endpoint.as_ref().map_or_else(|| "-".into(), |e| if row.read_only { format!("{e} (read-only)") } else { e.clone() }),
            or_dash(&row.endpoint_phase),
            or_dash(&row.last_active),
            or_dash(&row.created),
        ]);
    }
    table
}

/// Creates `object` (named, in `namespace`, labelled part of neon) as `kubectl create` would;
/// false if an object of that name exists already.
pub(crate) async fn create_new<K>(api: &Api<K>, mut object: K, namespace: &str) -> anyhow::Result<bool>
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + Serialize + serde::de::DeserializeOwned,
{
    let meta = object.meta_mut();
    meta.namespace = Some(namespace.to_string());
    meta.labels.get_or_insert_default().insert("app.kubernetes.io/part-of".into(), "neon".into());
    let name = object.name_any();
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(response)) if response.code == 409 => Ok(false),
        Err(e) => Err(anyhow!(e).context(format!("creating {} {namespace}/{name}", K::kind(&())))),
    }
}

pub(crate) struct Branches {
    api: Api<NeonBranch>,
    endpoints: Api<NeonEndpoint>,
    client: kube::Client,
    namespace: String,
    timeout: Duration,
}

impl Branches {
    pub(crate) fn new(client: kube::Client, namespace: String, timeout: Duration) -> Self {
        Self {
            api: Api::namespaced(client.clone(), &namespace),
            endpoints: Api::namespaced(client.clone(), &namespace),
            client,
            namespace,
            timeout,
        }
    }

    pub(crate) fn api(&self) -> &Api<NeonBranch> {
        &self.api
    }

    pub(crate) fn not_found(&self, name: &str) -> anyhow::Error {
        usage(format!("there is no branch {name} in namespace {}; `neonctl-aws branches list` shows them", self.namespace))
    }

    async fn all(&self) -> anyhow::Result<Vec<NeonBranch>> {
        let list = self
            .api
            .list(&Default::default())
            .await
            .with_context(|| format!("listing the NeonBranches in namespace {}", self.namespace))?;
        Ok(list.items)
    }

    pub(crate) async fn get(&self, name: &str) -> anyhow::Result<Option<NeonBranch>> {
        self.api.get_opt(name).await.with_context(|| format!("reading NeonBranch {}/{name}", self.namespace))
    }

    pub(crate) async fn all_endpoints(&self) -> anyhow::Result<Vec<NeonEndpoint>> {
        let list = self
            .endpoints
            .list(&Default::default())
            .await
            .with_context(|| format!("listing the NeonEndpoints in namespace {}", self.namespace))?;
        Ok(list.items)
    }

    /// The endpoint serving `branch`: the one named like it, else the first by name.
    fn endpoint_of<'e>(endpoints: &'e [NeonEndpoint], branch: &str) -> Option<&'e NeonEndpoint> {
        let mut serving: Vec<&NeonEndpoint> = endpoints.iter().filter(|e| e.spec.branch == branch).collect();
        serving.sort_by_key(|e| (e.name_any() != branch, e.name_any()));
        serving.first().copied()
    }

    async fn rows(&self) -> anyhow::Result<Vec<Row>> {
        let all = self.all().await?;
        let endpoints = self.all_endpoints().await?;
        let parent_of = |branch: &NeonBranch| {
            let parent = branch.spec.parent_timeline_id.as_ref()?;
            all.iter()
                .find(|other| &other.spec.timeline_id == parent && other.spec.tenant_id == branch.spec.tenant_id)
                .map(|p| p.name_any())
        };
        let mut rows: Vec<Row> = all
            .iter()
            .map(|branch| {
                let status = branch.status.clone().unwrap_or_default();
                let serving = Self::endpoint_of(&endpoints, &branch.name_any());
                let ready = status.conditions.iter().find(|c| c.kind == READY_CONDITION).map_or("Unknown".into(), |c| c.status.clone());
                Row {
                    name: branch.name_any(),
                    parent: parent_of(branch),
                    branched_at_lsn: branch.spec.ancestor_start_lsn.clone().or_else(|| status.branched_at_lsn.clone()),
                    branched_at_time: branch.spec.ancestor_timestamp.clone(),
                    phase: status.phase.unwrap_or_else(|| phase::PENDING.into()),
                    ready,
                    message: status.message,
                    created: branch.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()),
                    tenant_id: branch.spec.tenant_id.clone(),
                    timeline_id: branch.spec.timeline_id.clone(),
                    endpoint: serving.map(|e| e.name_any()),
                    endpoint_phase: serving
                        .map(|e| e.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_else(|| endpoint_phase::PENDING.into())),
                    last_active: serving.and_then(|e| e.status.as_ref()?.last_active.clone()),
                    read_only: serving.is_some_and(|e| e.spec.read_only),
                    logical_size: status.logical_size,
                }
            })
            .collect();
        rows.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(rows)
    }

    async fn create(&self, args: &BranchCreateArgs, printer: &Printer) -> anyhow::Result<()> {
        let name = &args.name;
        let parent = self.get(&args.parent).await?.ok_or_else(|| self.not_found(&args.parent))?;
        let existing = self.get(name).await?;
        let point = args.at.as_deref().map(|at| BranchPoint::parse(at, time::OffsetDateTime::now_utc())).transpose().map_err(usage)?;
        let (lsn, time) = match &point {
            Some(BranchPoint::Lsn(lsn)) => (Some(lsn.clone()), None),
            Some(BranchPoint::Time(time)) => (None, Some(time.clone())),
            None => (None, None),
        };
        let spec = match &existing {
            // A create interrupted after the write: the same branch, waited for again.
            Some(branch)
                if branch.spec.parent_timeline_id.as_ref() == Some(&parent.spec.timeline_id)
                    && branch.spec.ancestor_start_lsn == lsn
                    && branch.spec.ancestor_timestamp == time =>
            {
                branch.spec.clone()
            }
            Some(_) => {
                return Err(usage(format!(
                    "branch {name} already exists in namespace {} with another parent or LSN; pick another name, or delete it first",
                    self.namespace
                )));
            }
            None => BranchSpec {
                timeline_id: bootstrap::new_id(&ring::rand::SystemRandom::new())?,
                parent_timeline_id: Some(parent.spec.timeline_id.clone()),
                ancestor_start_lsn: lsn,
                ancestor_timestamp: time,
                ..parent.spec.clone()
            },
        };
        let at = BranchPoint::describe(point.as_ref());
        let endpoint = self.endpoints.get_opt(name).await.with_context(|| format!("reading NeonEndpoint {}/{name}", self.namespace))?;
        if let Some(other) = endpoint.as_ref().filter(|e| &e.spec.branch == name && e.spec.read_only != args.read_only) {
            let kind = if other.spec.read_only { "read-only" } else { "read-write" };
            return Err(usage(format!(
                "endpoint {name} already exists in namespace {} and is {kind}; delete the branch first to change that",
                self.namespace
            )));
        }
        if let Some(other) = endpoint.as_ref().filter(|e| &e.spec.branch != name) {
            return Err(usage(format!(
                "endpoint {name} already exists in namespace {} and serves branch {}: pick another name",
                self.namespace, other.spec.branch
            )));
        }
        if args.plan.plan {
            let verb = if existing.is_some() { "adopt (exists)" } else { "create" };
            printer.result_line(&format!(
                "{verb} NeonBranch {}/{name}: a child of {} at {at} (tenant {}, new timeline {})",
                self.namespace, args.parent, spec.tenant_id, spec.timeline_id
            ));
            let verb = if endpoint.is_some() { "adopt (exists)" } else { "create" };
            let suspend = crate::phases::endpoints::scaling_phrase(args.suspend_timeout);
            let kind = if args.read_only { "its read-only compute, a hot standby" } else { "its compute" };
            printer.result_line(&format!(
                "{verb} NeonEndpoint {}/{name}: {kind} (the control plane makes it once the branch is ready; {suspend})",
                self.namespace
            ));
            return Ok(());
        }
        // Two creates of one name: one branch, and a clear conflict for the other.
        if existing.is_none() && !create_new(&self.api, NeonBranch::new(name, spec), &self.namespace).await? {
            return Err(usage(format!("branch {name} was created meanwhile by someone else; see `neonctl-aws branches get {name}`")));
        }
        printer.result_line(&format!(
            "branch {name}: a child of {} at {at}; waiting for the control plane to create its timeline",
            args.parent
        ));
        self.wait_ready(name).await?;
        printer.result_line(&format!("branch {name} is ready"));
        if endpoint.is_none() {
            let spec = EndpointSpec {
                branch: name.clone(),
                suspend_timeout_seconds: args.suspend_timeout,
                read_only: args.read_only,
                ..Default::default()
            };
            // Made meanwhile by another create of this branch: the same endpoint.
            create_new(&self.endpoints, NeonEndpoint::new(name, spec), &self.namespace).await?;
        }
        self.wait_running(name).await?;
        printer.result_line(&format!("endpoint {name}: its compute runs"));
        Ok(())
    }

    /// Until the operator reports the endpoint's compute `Active` (or already `Suspended`).
    pub(crate) async fn wait_running(&self, name: &str) -> anyhow::Result<()> {
        let check = || async {
            let endpoint = self
                .endpoints
                .get_opt(name)
                .await
                .with_context(|| format!("reading NeonEndpoint {}/{name}", self.namespace))?
                .ok_or_else(|| anyhow!("NeonEndpoint {}/{name} disappeared while waiting for it", self.namespace))?;
            let status = endpoint.status.unwrap_or_default();
            Ok::<_, anyhow::Error>(match status.phase.as_deref() {
                // Suspended already (a short timeout): the first connection starts it.
                Some(endpoint_phase::ACTIVE | endpoint_phase::SUSPENDED) => Check::Done(()),
                _ => Check::Waiting(status.message.unwrap_or_else(|| "the control plane has not reported on it yet".into())),
            })
        };
        match wait::poll(self.timeout, POLL, check, |_, _| {}).await? {
            Waited::Done(()) => Ok(()),
            Waited::TimedOut(last) => Err(anyhow!(
                "endpoint {name}'s compute was not running after {}s: {last}. See `kubectl describe deployment -n {} -l \
                 neonctl-aws.dev/endpoint={name}` and the control plane's log, then run the same command again",
                self.timeout.as_secs(),
                self.namespace
            )),
        }
    }

    /// How to reach `target`'s endpoint: its role and database (the branch's first unless
    /// named), the proxy's domain and port, and its address when known.
    pub(crate) async fn connection(&self, target: &Target, config: &Config, state: &State) -> anyhow::Result<Endpoint> {
        let branch = self.get(&target.branch).await?.ok_or_else(|| self.not_found(&target.branch))?;
        let endpoints = self.all_endpoints().await?;
        let endpoint = match &target.endpoint {
            Some(name) => endpoints.iter().find(|e| &e.name_any() == name && e.spec.branch == target.branch).ok_or_else(|| {
                usage(format!("branch {} has no endpoint {name}; `neonctl-aws endpoints list` shows them", target.branch))
            })?,
            None => Self::endpoint_of(&endpoints, &target.branch).ok_or_else(|| {
                usage(format!(
                    "branch {} has no endpoint: create a NeonEndpoint with spec.branch {0} (`branches create` makes one)",
                    target.branch
                ))
            })?,
        };
        let pick = |wanted: &Option<String>, names: Vec<String>, what: &str| -> anyhow::Result<String> {
            match wanted {
                Some(name) if names.contains(name) => Ok(name.clone()),
                Some(name) => Err(usage(format!("branch {} has no {what} {name}; it has: {}", target.branch, names.join(", ")))),
                None => names.into_iter().next().ok_or_else(|| usage(format!("branch {} has no {what}", target.branch))),
            }
        };
        let role = pick(&target.role, branch.spec.roles.iter().map(|r| r.name.clone()).collect(), "role")?;
        let database = pick(&target.database, branch.spec.databases.iter().map(|d| d.name.clone()).collect(), "database")?;
        let deployed = state.deploy.as_ref();
        let domain = deployed.map_or_else(|| crate::render::proxy_domain(config), |d| d.proxy_domain.clone());
        let given = target.proxy_address.as_deref().or_else(|| deployed.and_then(|d| d.proxy_address.as_deref()));
        let address =
            given.map(|text| Address::parse(text).ok_or_else(|| usage(format!("--proxy-address {text} is not HOST:PORT")))).transpose()?;
        let direct = address.is_some();
        let address =
            address.unwrap_or_else(|| Address { host: format!("{}.{domain}", endpoint.name_any()), port: crate::neon::ports::PROXY_PG });
        Ok(Endpoint {
            connection: Connection { role, database, endpoint: endpoint.name_any(), domain, address },
            branch: target.branch.clone(),
            direct,
        })
    }

    /// The role's password, when asked for: the deployment's owner Secret for the owner, else the
    /// Secret `roles create` made on this branch or the one it inherited the role from.
    pub(crate) async fn password(&self, endpoint: &Endpoint, config: &Config, show: bool) -> anyhow::Result<Option<Secret>> {
        if !show {
            return Ok(None);
        }
        let (role, branch) = (&endpoint.connection.role, &endpoint.branch);
        let found = if role == secrets::OWNER_ROLE {
            self.secret_password(&secrets::role_secret(&config.prefix)).await?
        } else {
            self.role_password(branch, role, config).await?
        };
        found.map(Some).ok_or_else(|| {
            usage(format!(
                "the password of role {role} is not kept by neonctl-aws (only for roles `neonctl-aws roles create` made, and \
                 {}): connect without --show-password and give it yourself",
                secrets::OWNER_ROLE
            ))
        })
    }

    /// The password of `role` from the Secret of `branch`, or of the branch it comes from.
    pub(crate) async fn role_password(&self, branch: &str, role: &str, config: &Config) -> anyhow::Result<Option<Secret>> {
        let all = self.all().await?;
        let mut current = all.iter().find(|b| b.name_any() == branch);
        while let Some(on) = current {
            if let Some(password) = self.secret_password(&crate::phases::roles::role_secret(&config.prefix, &on.name_any(), role)).await? {
                return Ok(Some(password));
            }
            current = on.spec.parent_timeline_id.as_ref().and_then(|parent| all.iter().find(|b| &b.spec.timeline_id == parent));
        }
        Ok(None)
    }

    /// The `password` key of Secret `name`, if it exists.
    async fn secret_password(&self, name: &str) -> anyhow::Result<Option<Secret>> {
        let secret = Api::<SecretObject>::namespaced(self.client.clone(), &self.namespace)
            .get_opt(name)
            .await
            .with_context(|| format!("reading Secret {}/{name}", self.namespace))?;
        let Some(value) = secret.and_then(|s| s.data).and_then(|data| data.get(secrets::PASSWORD_KEY).cloned()) else {
            return Ok(None);
        };
        Ok(Some(Secret(String::from_utf8(value.0).with_context(|| format!("the password in Secret {name} is not UTF-8"))?)))
    }

    /// Until the operator reports the branch `Ready` at its generation; a `Failed` phase is an
    /// error with the operator's message.
    pub(crate) async fn wait_ready(&self, name: &str) -> anyhow::Result<()> {
        let check = || async {
            let branch =
                self.get(name).await?.ok_or_else(|| anyhow!("NeonBranch {}/{name} disappeared while waiting for it", self.namespace))?;
            let status = branch.status.clone().unwrap_or_default();
            let current = status.observed_generation == branch.metadata.generation;
            let ready = status.conditions.iter().any(|c| c.kind == READY_CONDITION && c.status == "True");
            match (current, status.phase.as_deref()) {
                (true, Some(phase::READY)) if ready => Ok(Check::Done(())),
                (true, Some(phase::FAILED)) => Err(anyhow!(
                    "branch {name} failed: {}. Fix the cause (the control plane retries), or delete the branch",
                    status.message.unwrap_or_default()
                )),
                _ => Ok(Check::Waiting(status.message.unwrap_or_else(|| "the control plane has not reported on it yet".into()))),
            }
        };
        match wait::poll(self.timeout, POLL, check, |_, _| {}).await? {
            Waited::Done(()) => Ok(()),
            Waited::TimedOut(last) => Err(anyhow!(
                "branch {name} was not ready after {}s: {last}. Check the control plane's log, then run the same command again",
                self.timeout.as_secs()
            )),
        }
    }

    /// The branches that branch from `branch`'s timeline.
    async fn children(&self, branch: &NeonBranch) -> anyhow::Result<Vec<String>> {
        Ok(self
            .all()
            .await?
            .into_iter()
            .filter(|other| {
                other.spec.tenant_id == branch.spec.tenant_id && other.spec.parent_timeline_id.as_ref() == Some(&branch.spec.timeline_id)
            })
            .map(|other| other.name_any())
            .collect())
    }

    /// A branch whose data others depend on keeps its timeline: refused.
    async fn refuse_with_children(&self, branch: &NeonBranch, doing: &str) -> anyhow::Result<()> {
        let children = self.children(branch).await?;
        if children.is_empty() {
            return Ok(());
        }
        let also = if doing == "delete" { ", or pass --with-children to delete them with it" } else { "" };
        Err(usage(format!(
            "branch {} has child branches ({}): their data depends on its timeline; delete them before you {doing} it{also}",
            branch.name_any(),
            children.join(", ")
        )))
    }

    /// `branch` and every branch made from it, children before their parents.
    async fn with_descendants(&self, branch: NeonBranch) -> anyhow::Result<Vec<NeonBranch>> {
        let mut ordered = Vec::new();
        let mut stack = vec![(branch, false)];
        while let Some((branch, expanded)) = stack.pop() {
            if expanded {
                ordered.push(branch);
                continue;
            }
            let children = self.children(&branch).await?;
            stack.push((branch, true));
            for child in children {
                if let Some(child) = self.get(&child).await? {
                    stack.push((child, false));
                }
            }
        }
        Ok(ordered)
    }

    /// Points `name` at a new timeline (`spec`'s), then waits until it is ready and every compute
    /// of the branch runs on it; the operator then retires the previous timeline.
    async fn move_to(&self, name: &str, spec: serde_json::Value) -> anyhow::Result<()> {
        let patch = kube::api::Patch::Merge(serde_json::json!({"spec": spec}));
        self.api
            .patch(name, &kube::api::PatchParams::default(), &patch)
            .await
            .with_context(|| format!("updating NeonBranch {}/{name}", self.namespace))?;
        self.wait_ready(name).await?;
        let timeline = spec["timelineId"].as_str().unwrap_or_default().to_string();
        let check = || async {
            let moving: Vec<String> = self
                .all_endpoints()
                .await?
                .into_iter()
                .filter(|e| e.spec.branch == name)
                .filter(|e| !e.status.as_ref().is_some_and(|status| status.is_on(&timeline)))
                .map(|e| e.name_any())
                .collect();
            Ok::<_, anyhow::Error>(if moving.is_empty() {
                Check::Done(())
            } else {
                Check::Waiting(format!("the computes of {} restart on timeline {timeline}", moving.join(", ")))
            })
        };
        match wait::poll(self.timeout, POLL, check, |_, _| {}).await? {
            Waited::Done(()) => Ok(()),
            Waited::TimedOut(last) => Err(anyhow!(
                "branch {name} has its new timeline, but {last} took over {}s; check the compute's pod, then run `neonctl-aws \
                 branches get {name}`",
                self.timeout.as_secs()
            )),
        }
    }

    async fn reset(&self, args: &BranchResetArgs, printer: &Printer) -> anyhow::Result<()> {
        let name = &args.name;
        let branch = self.get(name).await?.ok_or_else(|| self.not_found(name))?;
        if branch.spec.parent_timeline_id.is_none() {
            return Err(usage(format!(
                "branch {name} has no parent: there is nothing to reset it to (`branches restore` goes back in time)"
            )));
        }
        self.refuse_with_children(&branch, "reset").await?;
        let timeline = bootstrap::new_id(&ring::rand::SystemRandom::new())?;
        let old = &branch.spec.timeline_id;
        if args.plan.plan {
            printer.result_line(&format!(
                "update NeonBranch {}/{name}: timelineId {old} → {timeline}, a new timeline from its parent's head; its computes \
                 restart on it, then timeline {old} is deleted",
                self.namespace
            ));
            return Ok(());
        }
        printer.result_line(&format!("branch {name}: a new timeline {timeline} from its parent's head"));
        self.move_to(name, serde_json::json!({"timelineId": timeline, "ancestorStartLsn": null, "ancestorTimestamp": null})).await?;
        printer.result_line(&format!("branch {name} reset to its parent's head; same endpoint and connection string"));
        Ok(())
    }

    async fn restore(&self, args: &BranchRestoreArgs, printer: &Printer) -> anyhow::Result<()> {
        let name = &args.name;
        let branch = self.get(name).await?.ok_or_else(|| self.not_found(name))?;
        self.refuse_with_children(&branch, "restore").await?;
        let now = time::OffsetDateTime::now_utc();
        let point = BranchPoint::parse(&args.at, now).map_err(usage)?;
        let backup = backup_name(name, now);
        let old = branch.spec.timeline_id.clone();
        let timeline = bootstrap::new_id(&ring::rand::SystemRandom::new())?;
        let (lsn, time) = match &point {
            BranchPoint::Lsn(lsn) => (Some(lsn.clone()), None),
            BranchPoint::Time(time) => (None, Some(time.clone())),
        };
        if args.plan.plan {
            printer.result_line(&format!("create NeonBranch {}/{backup}: keeps timeline {old}, the data {name} has now", self.namespace));
            printer.result_line(&format!(
                "update NeonBranch {}/{name}: timelineId {old} → {timeline}, a child of it at {}; its computes restart on it",
                self.namespace,
                BranchPoint::describe(Some(&point))
            ));
            return Ok(());
        }
        // The backup names the same timeline, made the same way (its time as the LSN it became).
        if !create_new(&self.api, NeonBranch::new(&backup, Self::as_made(&branch)), &self.namespace).await? {
            return Err(usage(format!("branch {backup} exists already: run the restore again in a second")));
        }
        printer
            .result_line(&format!("branch {backup} keeps the data {name} has now (timeline {old}); delete it when you no longer need it"));
        self.wait_ready(&backup).await?;
        let spec = serde_json::json!({"timelineId": timeline, "parentTimelineId": old, "ancestorStartLsn": lsn, "ancestorTimestamp": time});
        self.move_to(name, spec).await?;
        printer.result_line(&format!(
            "branch {name} restored to {}; same endpoint and connection string",
            BranchPoint::describe(Some(&point))
        ));
        Ok(())
    }

    /// The spec a branch's timeline is made again with: its time as the LSN it became (a copy
    /// must not resolve the time again).
    fn as_made(branch: &NeonBranch) -> BranchSpec {
        let mut spec = branch.spec.clone();
        if spec.ancestor_timestamp.take().is_some() {
            spec.ancestor_start_lsn = branch.status.as_ref().and_then(|status| status.branched_at_lsn.clone());
        }
        spec
    }

    /// `branches rename OLD NEW`: a NeonBranch NEW naming the same timeline, the role Secrets
    /// and endpoints moved to it, then OLD deleted with its annotation telling the control plane
    /// to leave the timeline. Run again after an interruption, it finishes.
    async fn rename(&self, args: &BranchRenameArgs, prefix: &str, printer: &Printer) -> anyhow::Result<()> {
        let (old, new) = (&args.name, &args.new_name);
        if old == MAIN {
            return Err(usage(format!("branch {MAIN} is the deployment's own (`deploy` and `status` use its name): it keeps it")));
        }
        let current = self.get(old).await?;
        let renamed = self.get(new).await?;
        let branch = match (current, &renamed) {
            (Some(branch), Some(other)) if other.spec.timeline_id != branch.spec.timeline_id => {
                return Err(usage(format!("branch {new} exists already in namespace {}: pick another name", self.namespace)));
            }
            (Some(branch), _) => branch,
            (None, Some(_)) => {
                printer.result_line(&format!("branch {old} is {new} already"));
                return Ok(());
            }
            (None, None) => return Err(self.not_found(old)),
        };
        let endpoints: Vec<String> = self.all_endpoints().await?.iter().filter(|e| &e.spec.branch == old).map(|e| e.name_any()).collect();
        if args.plan.plan {
            printer.result_line(&format!("create NeonBranch {}/{new}: timeline {} (the same)", self.namespace, branch.spec.timeline_id));
            for endpoint in &endpoints {
                printer.result_line(&format!(
                    "update NeonEndpoint {}/{endpoint}: branch {old} -> {new} (same connection string)",
                    self.namespace
                ));
            }
            printer.result_line(&format!("delete NeonBranch {}/{old}: its timeline stays, {new}'s", self.namespace));
            return Ok(());
        }
        let mark = serde_json::json!({"metadata": {"annotations": {RENAMED_TO_ANNOTATION: new}}});
        self.api
            .patch(old, &PatchParams::default(), &Patch::Merge(mark))
            .await
            .with_context(|| format!("marking NeonBranch {}/{old} as renamed", self.namespace))?;
        if renamed.is_none() {
            create_new(&self.api, NeonBranch::new(new, Self::as_made(&branch)), &self.namespace).await?;
        }
        self.wait_ready(new).await?;
        let secrets: Api<SecretObject> = Api::namespaced(self.client.clone(), &self.namespace);
        for role in &branch.spec.roles {
            let secret = |branch: &str| crate::phases::roles::role_secret(prefix, branch, &role.name);
            let (from, to) = (secret(old), secret(new));
            let Some(kept) = secrets.get_opt(&from).await.with_context(|| format!("reading Secret {}/{from}", self.namespace))? else {
                continue;
            };
            create_new(&secrets, SecretObject { metadata: ObjectMeta { name: Some(to), ..Default::default() }, ..kept }, &self.namespace)
                .await?;
            secrets.delete(&from, &DeleteParams::default()).await.with_context(|| format!("deleting Secret {}/{from}", self.namespace))?;
        }
        for endpoint in &endpoints {
            let patch = serde_json::json!({"spec": {"branch": new}});
            self.endpoints
                .patch(endpoint, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .with_context(|| format!("moving NeonEndpoint {}/{endpoint} to branch {new}", self.namespace))?;
        }
        self.remove(old).await?;
        printer.result_line(&format!(
            "branch {old} is now {new}: the same timeline{}",
            if endpoints.is_empty() { String::new() } else { format!(", endpoint(s) {} and connection strings", endpoints.join(", ")) }
        ));
        Ok(())
    }

    /// Deletes NeonBranch `name` and waits until the control plane has let it go.
    async fn remove(&self, name: &str) -> anyhow::Result<()> {
        match self.api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(response)) if response.code == 404 => {}
            Err(e) => return Err(anyhow!(e).context(format!("deleting NeonBranch {}/{name}", self.namespace))),
        }
        let check = || async {
            Ok::<_, anyhow::Error>(match self.get(name).await? {
                None => Check::Done(()),
                Some(branch) => {
                    Check::Waiting(branch.status.and_then(|s| s.message).unwrap_or_else(|| "waiting for the control plane".into()))
                }
            })
        };
        match wait::poll(self.timeout, POLL, check, |_, _| {}).await? {
            Waited::Done(()) => Ok(()),
            Waited::TimedOut(last) => Err(anyhow!(
                "branch {name} was still being deleted after {}s: {last}. Check the control plane's log; the deletion goes on",
                self.timeout.as_secs()
            )),
        }
    }

    async fn delete(&self, args: &BranchDeleteArgs, printer: &Printer) -> anyhow::Result<()> {
        let name = &args.name;
        if name == MAIN {
            return Err(usage(format!("branch {MAIN} is the deployment's own: `neonctl-aws teardown` removes it with everything else")));
        }
        let Some(branch) = self.get(name).await? else { return Err(self.not_found(name)) };
        let doomed = if args.with_children {
            self.with_descendants(branch).await?
        } else {
            self.refuse_with_children(&branch, "delete").await?;
            vec![branch]
        };
        if args.plan.plan {
            let endpoints = self.all_endpoints().await?;
            for branch in &doomed {
                let name = branch.name_any();
                let served: Vec<String> = endpoints.iter().filter(|e| e.spec.branch == name).map(|e| e.name_any()).collect();
                if !served.is_empty() {
                    printer.result_line(&format!(
                        "delete NeonEndpoint(s) {}: their computes stop first (the control plane deletes them with the branch)",
                        served.join(", ")
                    ));
                }
                printer.result_line(&format!(
                    "delete NeonBranch {}/{name}: its timeline {} goes from storage; its parent is untouched",
                    self.namespace, branch.spec.timeline_id
                ));
            }
            return Ok(());
        }
        // Children first: a parent's timeline goes only once nothing branches from it.
        for branch in &doomed {
            let name = branch.name_any();
            printer.result_line(&format!("branch {name}: deleting its timeline from storage"));
            self.remove(&name).await?;
            printer.result_line(&format!("branch {name} deleted"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_labels() {
        for good in ["dev", "feature-1", "a", &"x".repeat(63)] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for bad in ["", "Dev", "-dev", "dev-", "dev_1", "dev.1", &"x".repeat(64)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_restore_keeps_the_data_in_a_dated_branch() {
        let now = time::macros::datetime!(2026-11-26 10:15:02 UTC);
        assert_eq!(backup_name("dev", now), "dev-old-20261126101502");
        let long = backup_name(&format!("{}-x", "a".repeat(60)), now);
        assert!(long.len() <= 63 && check_name(&long).is_ok(), "{long}");
        assert_eq!(check_name(&backup_name(&"b".repeat(63), now)), Ok(()));
    }

    #[test]
    fn branch_points_are_lsns_or_past_times() {
        let now = time::macros::datetime!(2026-11-26 12:00 UTC);
        assert_eq!(BranchPoint::parse("0/16B5A50", now), Ok(BranchPoint::Lsn("0/16B5A50".into())));
        assert_eq!(BranchPoint::parse("FFFFFFFF/0", now), Ok(BranchPoint::Lsn("FFFFFFFF/0".into())));
        assert_eq!(BranchPoint::parse("2026-11-26T10:30:00+01:00", now), Ok(BranchPoint::Time("2026-11-26T09:30:00Z".into())));
        let future = BranchPoint::parse("2026-11-26T12:00:01Z", now).unwrap_err();
        assert!(future.contains("is in the future"), "{future}");
        for bad in ["16B5A50", "0/", "/1", "0/1/2", "g/1", "yesterday", "2026-11-26"] {
            let error = BranchPoint::parse(bad, now).unwrap_err();
            assert!(error.contains("is neither an LSN"), "{bad}: {error}");
        }
    }
}
