//! `status`: what the state file records for each phase, then live checks of what is running
//! when a cluster is reachable: the EKS cluster is ACTIVE, nodes are Ready, each component's
//! pods are ready, the storage controller sees its pageservers (as the control plane last
//! reported it), and SQL answers through the proxy.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Secret};
use kube::Api;
use kube::api::ListParams;
use serde::Serialize;

use crate::aws::Aws;
use crate::calls::Calls;
use crate::cli::StatusArgs;
use crate::config::Config;
use crate::engine::PhaseName;
use crate::exit;
use crate::output::{Printer, Style, Table};
use crate::phases::deploy::connect;
use crate::phases::infra::versions::Calendar;
use crate::state::{self, ClusterAccess, DeployRecord, PhaseRecord, State};
use neonctl_contract::service::StorageStatus;

/// How long one live check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(20);
/// A control plane report older than this (two of its refreshes) fails its check.
const REPORT_STALE_AFTER: Duration = Duration::from_secs(2 * neonctl_contract::service::REPORT_REFRESH.as_secs());
/// The label every workload `render` writes carries with its component's name.
const COMPONENT_LABEL: &str = "app.kubernetes.io/name";

#[derive(Serialize)]
struct Status<'a> {
    prefix: &'a str,
    region: &'a str,
    state_dir: String,
    phases: Vec<PhaseStatusRow<'a>>,
    /// What the last `deploy` recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    deploy: Option<&'a DeployRecord>,
    live: Vec<Check>,
}

#[derive(Serialize)]
struct PhaseStatusRow<'a> {
    phase: PhaseName,
    #[serde(flatten)]
    record: Option<&'a PhaseRecord>,
}

/// One live check and what it found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub check: String,
    pub outcome: Outcome,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Failed,
    /// Works, but not as it should run: said, without failing `status`.
    Warning,
    /// Not run: nothing to check yet, or an earlier check failed.
    Skipped,
}

impl Check {
    fn new(check: impl Into<String>, outcome: Outcome, detail: impl Into<String>) -> Self {
        Self { check: check.into(), outcome, detail: detail.into() }
    }
}

/// Prints the phases and the live checks; the exit code is 1 when a live check failed.
pub async fn run(args: &StatusArgs, config: &Config, state_dir: &Path, printer: &Printer) -> anyhow::Result<u8> {
    let state = state::read(state_dir)?;
    let (prefix, region) = match &state.target {
        Some(t) => (t.prefix.as_str(), t.region.as_str()),
        None => (config.prefix.as_str(), config.region.as_str()),
    };
    let phases: Vec<PhaseStatusRow> =
        PhaseName::UP.iter().chain([&PhaseName::Teardown]).map(|p| PhaseStatusRow { phase: *p, record: state.phases.get(p) }).collect();
    let mut table = Table::new(&["phase", "last run", "started", "finished", "error"]);
    for row in &phases {
        let cell = |f: fn(&PhaseRecord) -> Option<String>| row.record.and_then(f).unwrap_or_else(|| "-".into());
        table.row(vec![
            row.phase.to_string(),
            cell(|r| Some(format!("{:?}", r.status).to_lowercase())),
            cell(|r| Some(r.started_at.clone())),
            cell(|r| r.finished_at.clone()),
            cell(|r| r.error.as_ref().map(|e| e.lines().next().unwrap_or_default().to_string())),
        ]);
    }
    let live = if args.offline { Vec::new() } else { live_checks(args, config, &state).await };
    let mut checks = Table::new(&["check", "result", "detail"]);
    for check in &live {
        checks.row(vec![check.check.clone(), format!("{:?}", check.outcome).to_lowercase(), check.detail.clone()]);
    }
    let failed = live.iter().any(|c| c.outcome == Outcome::Failed);
    let has_checks = !live.is_empty();
    printer.result_line(&format!("{prefix} in {region} (state: {})", state_dir.display()));
    let status = Status { prefix, region, state_dir: state_dir.display().to_string(), phases, deploy: state.deploy.as_ref(), live };
    printer.table("status", &table, &status);
    if let Some(deploy) = status.deploy.filter(|_| printer.style() != Style::Json) {
        printer.result_line(&deployed(deploy));
    }
    // In json mode the one result above carries the checks too.
    if has_checks && printer.style() != Style::Json {
        printer.result_line(&format!("\n{}", checks.render()));
    }
    Ok(if failed { exit::FAILURE } else { exit::SUCCESS })
}

/// One paragraph on what `deploy` made: where, which ids, where the proxy answered.
fn deployed(d: &DeployRecord) -> String {
    let cluster = match &d.cluster {
        ClusterAccess::Eks { cluster } => format!("EKS cluster {cluster}"),
        ClusterAccess::Kubeconfig { context, .. } => format!("kubeconfig context {}", context.as_deref().unwrap_or("(current)")),
    };
    let checked = match (&d.proxy_address, &d.checked_at) {
        (Some(address), Some(at)) => format!("select version() answered through the proxy at {address} at {at}"),
        _ => "not checked through the proxy yet".into(),
    };
    format!(
        "deployed to {cluster}, namespace {}: branch {} (tenant {}, timeline {}), endpoint {} at {}.{}; role {} (password in Secret {}), database {}; {checked}",
        d.namespace, d.branch, d.tenant_id, d.timeline_id, d.endpoint, d.endpoint, d.proxy_domain, d.role, d.role_secret, d.database
    )
}

/// Runs `check` with a deadline; a timeout is a failure that says so.
async fn within<T>(what: &str, check: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    match tokio::time::timeout(CHECK_TIMEOUT, check).await {
        Ok(result) => result,
        Err(_) => anyhow::bail!("{what} did not answer within {}s", CHECK_TIMEOUT.as_secs()),
    }
}

async fn live_checks(args: &StatusArgs, config: &Config, state: &State) -> Vec<Check> {
    let mut checks = Vec::new();
    let Some(access) = crate::k8s::cluster_access(args.kubeconfig.as_deref(), args.context.as_deref(), state) else {
        checks.push(Check::new(
            "cluster",
            Outcome::Skipped,
            "no cluster yet: run `neonctl-aws infra`, or pass --kubeconfig/--context for your own cluster",
        ));
        return checks;
    };
    if let ClusterAccess::Eks { cluster } = &access {
        let eks = within("EKS", eks_status(config, cluster)).await;
        let active = matches!(&eks, Ok((status, ..)) if status == "ACTIVE");
        let (outcome, detail, version) = match eks {
            Ok((status, version)) => (if active { Outcome::Ok } else { Outcome::Failed }, status, version),
            Err(e) => (Outcome::Failed, format!("{e:#}"), None),
        };
        checks.push(Check::new(format!("EKS cluster {cluster}"), outcome, detail));
        // A version in (or close to) extended support costs six times as much an hour.
        let pricing = &config.pricing;
        let today = crate::phases::infra::versions::today();
        if let Some(warning) = version.and_then(|(version, calendar)| {
            calendar.warning(&version, today, pricing.eks_cluster_per_hour, pricing.eks_extended_cluster_per_hour)
        }) {
            checks.push(Check::new("Kubernetes version", Outcome::Warning, warning));
        }
        if !active {
            return checks;
        }
    }
    let client = match within("the Kubernetes API", crate::k8s::client_for(&access, config, Arc::new(Calls::default()))).await {
        Ok(client) => client,
        Err(e) => {
            checks.push(Check::new("Kubernetes API", Outcome::Failed, format!("{e:#}")));
            return checks;
        }
    };
    let nodes = within("the Kubernetes API", nodes_ready(client.clone())).await;
    let reachable = nodes.is_ok();
    checks.push(nodes.unwrap_or_else(|e| Check::new("nodes", Outcome::Failed, format!("{e:#}; check the cluster is reachable"))));
    if !reachable {
        return checks;
    }
    let namespace = state.deploy.as_ref().map_or_else(|| config.prefix.clone(), |d| d.namespace.clone());
    match within("the Kubernetes API", components_ready(client.clone(), &namespace, &config.prefix)).await {
        Ok(components) => checks.extend(components),
        Err(e) => checks.push(Check::new("components", Outcome::Failed, format!("{e:#}"))),
    }
    match within("the Kubernetes API", endpoints(client.clone(), &namespace)).await {
        Ok(Some(check)) => checks.push(check),
        Ok(None) => {}
        Err(e) => checks.push(Check::new("endpoints", Outcome::Failed, format!("{e:#}"))),
    }
    match within("the Kubernetes API", control_plane_report(client.clone(), &namespace, &config.prefix)).await {
        Ok(reported) => checks.extend(reported),
        Err(e) => checks.push(Check::new("storage controller", Outcome::Failed, format!("{e:#}"))),
    }
    checks.push(match (&state.deploy, args.proxy_address.as_deref()) {
        (Some(deploy), address) => sql_through_proxy(client, deploy, address).await,
        (None, _) => Check::new(SQL_CHECK, Outcome::Skipped, "nothing deployed yet: run `neonctl-aws deploy`"),
    });
    checks
}

const SQL_CHECK: &str = "SQL through the proxy";

/// `select version()` as the deployed role, with the password from its Secret, through the
/// address deploy reached the proxy at (or `--proxy-address`).
async fn sql_through_proxy(client: kube::Client, deploy: &DeployRecord, address: Option<&str>) -> Check {
    let Some(address) = address.or(deploy.proxy_address.as_deref()) else {
        return Check::new(SQL_CHECK, Outcome::Skipped, "deploy never reached the proxy: pass --proxy-address HOST:PORT");
    };
    let Some(address) = connect::Address::parse(address) else {
        return Check::new(SQL_CHECK, Outcome::Failed, format!("`{address}` is not HOST:PORT"));
    };
    let connection = connect::Connection {
        role: deploy.role.clone(),
        database: deploy.database.clone(),
        endpoint: deploy.endpoint.clone(),
        domain: deploy.proxy_domain.clone(),
        address,
    };
    let answer = within("the proxy", async {
        let secret = Api::<Secret>::namespaced(client, &deploy.namespace)
            .get(&deploy.role_secret)
            .await
            .map_err(|e| anyhow::anyhow!("reading the password from Secret {}/{}: {e}", deploy.namespace, deploy.role_secret))?;
        let password = secret
            .data
            .as_ref()
            .and_then(|data| data.get("password"))
            .and_then(|bytes| String::from_utf8(bytes.0.clone()).ok())
            .ok_or_else(|| anyhow::anyhow!("Secret {}/{} has no password key", deploy.namespace, deploy.role_secret))?;
        connection.select_version(&crate::neon::Secret(password), CHECK_TIMEOUT).await
    })
    .await;
    let at = connection.address.to_string();
    match answer {
        Ok(version) => Check::new(SQL_CHECK, Outcome::Ok, format!("{} at {at}: {version}", connection.host())),
        Err(e) => Check::new(SQL_CHECK, Outcome::Failed, format!("{} at {at}: {e:#}", connection.host())),
    }
}

/// The cluster's status, and its Kubernetes version.
/// The cluster's status, and its version with EKS's calendar to judge it by (the dated table
/// when EKS does not answer).
async fn eks_status(config: &Config, cluster: &str) -> anyhow::Result<(String, Option<(String, Calendar)>)> {
    let aws = Aws::connect(config, Arc::new(Calls::default())).await?;
    let described = aws.eks.describe_cluster().name(cluster).send().await?;
    let cluster = described.cluster;
    let version = match cluster.as_ref().and_then(|c| c.version.clone()) {
        Some(version) => Some((version, crate::phases::infra::versions::calendar(&aws).await.0)),
        None => None,
    };
    Ok((cluster.and_then(|c| c.status).map(|s| s.as_str().to_string()).unwrap_or_else(|| "no status".into()), version))
}

async fn nodes_ready(client: kube::Client) -> anyhow::Result<Check> {
    let nodes = Api::<Node>::all(client).list(&ListParams::default()).await?;
    let total = nodes.items.len();
    let ready = nodes
        .items
        .iter()
        .filter(|node| {
            let conditions = node.status.as_ref().and_then(|s| s.conditions.as_ref());
            conditions.is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count();
    let outcome = if total > 0 && ready == total { Outcome::Ok } else { Outcome::Failed };
    Ok(Check::new("nodes", outcome, format!("{ready}/{total} Ready")))
}

/// Ready replicas per component over the Deployments and StatefulSets `deploy` created.
async fn components_ready(client: kube::Client, namespace: &str, prefix: &str) -> anyhow::Result<Vec<Check>> {
    let selector = ListParams::default().labels(&format!("{}={prefix}", crate::render::LABEL_PREFIX));
    let mut counts: std::collections::BTreeMap<String, (i32, i32)> = Default::default();
    let mut add = |labels: Option<&std::collections::BTreeMap<String, String>>, want: i32, ready: i32| {
        let component = labels.and_then(|l| l.get(COMPONENT_LABEL)).cloned().unwrap_or_else(|| "unlabelled".into());
        let entry = counts.entry(component).or_default();
        entry.0 += ready;
        entry.1 += want;
    };
    for deployment in Api::<Deployment>::namespaced(client.clone(), namespace).list(&selector).await?.items {
        let want = deployment.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let ready = deployment.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
        add(deployment.metadata.labels.as_ref(), want, ready);
    }
    for set in Api::<StatefulSet>::namespaced(client, namespace).list(&selector).await?.items {
        let want = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let ready = set.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
        add(set.metadata.labels.as_ref(), want, ready);
    }
    if counts.is_empty() {
        return Ok(vec![Check::new(
            "components",
            Outcome::Failed,
            format!("nothing deployed in namespace {namespace}: run `neonctl-aws deploy`"),
        )]);
    }
    Ok(counts
        .into_iter()
        .map(|(component, (ready, want))| {
            let outcome = if ready == want { Outcome::Ok } else { Outcome::Failed };
            let mut detail = format!("{ready}/{want} pods ready");
            if ready < want {
                detail.push_str(&format!("; see `kubectl -n {namespace} describe pods -l {COMPONENT_LABEL}={component}`"));
            }
            Check::new(component, outcome, detail)
        })
        .collect())
}

/// Each endpoint's state (`Active`, `Suspended`, `Starting`, `Pending`) and last activity: a
/// suspended compute is as it should be, started by the next connection.
async fn endpoints(client: kube::Client, namespace: &str) -> anyhow::Result<Option<Check>> {
    use neonctl_contract::resources::{NeonEndpoint, endpoint_phase};
    let list = match Api::<NeonEndpoint>::namespaced(client, namespace).list(&ListParams::default()).await {
        Ok(list) => list,
        // No CRD yet: nothing deployed, which the components check says.
        Err(kube::Error::Api(response)) if response.code == 404 => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut states: Vec<String> = list
        .items
        .iter()
        .map(|endpoint| {
            let status = endpoint.status.clone().unwrap_or_default();
            let phase = status.phase.unwrap_or_else(|| endpoint_phase::PENDING.into());
            let active = status.last_active.map(|at| format!(", last active {at}")).unwrap_or_default();
            format!("{} {phase}{active}", kube::ResourceExt::name_any(endpoint))
        })
        .collect();
    if states.is_empty() {
        return Ok(None);
    }
    states.sort();
    Ok(Some(Check::new("endpoints", Outcome::Ok, states.join("; "))))
}

/// What the control plane last reported: the storage controller's pageservers and their
/// availability (it is the only component that may call the controller), and whether it checks
/// its callers' tokens.
async fn control_plane_report(client: kube::Client, namespace: &str, prefix: &str) -> anyhow::Result<Vec<Check>> {
    let name = "storage controller";
    let map = match Api::<ConfigMap>::namespaced(client, namespace).get_opt(&neonctl_contract::service::status_config_map(prefix)).await? {
        Some(map) => map,
        None => return Ok(vec![Check::new(name, Outcome::Skipped, "the control plane has not reported yet")]),
    };
    let report = map.data.as_ref().and_then(|d| d.get(neonctl_contract::service::STATUS_KEY)).cloned().unwrap_or_default();
    let report: StorageStatus = serde_json::from_str(&report)
        .map_err(|e| anyhow::anyhow!("the control plane's storage report is not what this version writes: {e}"))?;
    let checked = &report.checked_at;
    // The control plane writes its report at least every REPORT_REFRESH: an old one is from a
    // control plane that stopped.
    let age = time::OffsetDateTime::parse(checked, &time::format_description::well_known::Rfc3339)
        .map(|at| (time::OffsetDateTime::now_utc() - at).whole_seconds().max(0))
        .map_err(|e| anyhow::anyhow!("the control plane's report time `{checked}` is not RFC 3339: {e}"))?;
    if age > REPORT_STALE_AFTER.as_secs() as i64 {
        let rounds = neonctl_contract::service::REPORT_REFRESH.as_secs();
        return Ok(vec![Check::new(
            name,
            Outcome::Failed,
            format!(
                "the control plane's last report is {age}s old (at {checked}); it reports every {rounds}s, so it is not running or \
                 cannot write: see `kubectl -n {namespace} logs deploy/{prefix}-control-plane`"
            ),
        )]);
    }
    let checked = format!("reported {age}s ago");
    let auth = if report.unauthenticated {
        Check::new(
            "control plane authentication",
            Outcome::Warning,
            "off (--insecure-no-auth): any pod that reaches it can read role verifiers, reconfigure computes and wake endpoints",
        )
    } else {
        Check::new("control plane authentication", Outcome::Ok, "every caller needs a token signed with the deployment's key")
    };
    if let Some(error) = &report.error {
        return Ok(vec![Check::new(name, Outcome::Failed, format!("unreachable from the control plane ({checked}): {error}")), auth]);
    }
    let total = report.pageservers.len();
    let active = report.pageservers.iter().filter(|p| p.availability == "Active").count();
    let outcome = if total > 0 && active == total { Outcome::Ok } else { Outcome::Failed };
    Ok(vec![Check::new(name, outcome, format!("{active}/{total} pageservers active ({checked})")), auth])
}
