//! `endpoints list|create|delete|update|suspend|start`: the `NeonEndpoint` objects, each a
//! branch's compute (a read-only one is a hot standby of the branch).
//! The operator scales an endpoint's compute to zero once it has been idle for its
//! `suspendTimeoutSeconds` and back up at the next connection; `suspend` and `start` ask it to
//! do so now through the endpoint's `neonctl-aws.dev/action` annotation (what `kubectl
//! annotate` would write), and wait for the state it reports.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use neonctl_contract::resources::{
    ACTION_ANNOTATION, ACTION_START, ACTION_SUSPEND, DEFAULT_SUSPEND_TIMEOUT_SECONDS, EndpointSpec, NeonEndpoint, endpoint_phase,
};
use serde::Serialize;
use serde_json::json;

use super::branches::{Branches, Target, check_label, cluster, create_new, print_connection, usage};
use crate::cli::{EndpointsArgs, EndpointsCommand, Named};
use crate::config::Config;
use crate::exit;
use crate::output::{Printer, Table};
use crate::wait::{self, Check, Waited};

/// How often a wait reads the endpoint again.
const POLL: Duration = Duration::from_millis(100);

/// One endpoint as `list` shows it.
#[derive(Debug, Serialize)]
struct Row {
    name: String,
    branch: String,
    /// `Active`, `Suspended`, `Starting` or `Pending`.
    state: String,
    last_active: Option<String>,
    /// Seconds idle before it is scaled to zero; none: never.
    suspend_timeout_seconds: Option<u32>,
    /// A hot standby of its branch.
    read_only: bool,
    message: Option<String>,
}

fn row(endpoint: &NeonEndpoint) -> Row {
    let status = endpoint.status.clone().unwrap_or_default();
    Row {
        name: endpoint.name_any(),
        branch: endpoint.spec.branch.clone(),
        state: status.phase.unwrap_or_else(|| endpoint_phase::PENDING.into()),
        last_active: status.last_active,
        suspend_timeout_seconds: endpoint.spec.suspends_after_seconds(),
        read_only: endpoint.spec.read_only,
        message: status.message,
    }
}

fn table(rows: &[Row]) -> Table {
    let mut table = Table::new(&["ENDPOINT", "BRANCH", "TYPE", "STATE", "LAST ACTIVE", "SUSPEND AFTER"]);
    for row in rows {
        table.row(vec![
            row.name.clone(),
            row.branch.clone(),
            if row.read_only { "read-only" } else { "read-write" }.into(),
            row.state.clone(),
            row.last_active.clone().unwrap_or_else(|| "-".into()),
            row.suspend_timeout_seconds.map_or_else(|| "never".into(), |seconds| format!("{seconds}s")),
        ]);
    }
    table
}

/// How an endpoint with this timeout scales to zero, for a plan line.
pub(crate) fn scaling_phrase(seconds: Option<u32>) -> String {
    match seconds.unwrap_or(DEFAULT_SUSPEND_TIMEOUT_SECONDS) {
        0 => "never scaled to zero".into(),
        seconds => format!("scaled to zero after {seconds}s idle"),
    }
}

/// What an endpoint's timeout says, for people.
fn describe_timeout(seconds: Option<u32>) -> String {
    match seconds.unwrap_or(DEFAULT_SUSPEND_TIMEOUT_SECONDS) {
        0 => "never".into(),
        seconds => format!("{seconds}s"),
    }
}

pub async fn run(args: &EndpointsArgs, config: &Config, state_dir: &Path, printer: &Printer) -> anyhow::Result<u8> {
    if let EndpointsCommand::Create { name, .. } = &args.command {
        check_label("endpoint", name).map_err(usage)?;
    }
    let (client, namespace, state) = cluster(&args.cluster, config, state_dir).await?;
    let timeout = Duration::from_secs(args.timeout);
    let endpoints = Endpoints { api: Api::namespaced(client.clone(), &namespace), namespace: namespace.clone(), timeout };
    match &args.command {
        EndpointsCommand::Create { name, branch, read_only, suspend_timeout, show_password, plan } => {
            let branches = Branches::new(client, namespace, timeout);
            branches.get(branch).await?.ok_or_else(|| branches.not_found(branch))?;
            let spec = EndpointSpec {
                branch: branch.clone(),
                suspend_timeout_seconds: *suspend_timeout,
                read_only: *read_only,
                ..Default::default()
            };
            let existing =
                endpoints.api.get_opt(name).await.with_context(|| format!("reading NeonEndpoint {}/{name}", endpoints.namespace))?;
            let kind = if *read_only { "read-only endpoint (a hot standby)" } else { "endpoint" };
            match &existing {
                // A create interrupted after the write: the same endpoint, waited for again.
                Some(live) if live.spec.branch == spec.branch && live.spec.read_only == spec.read_only => {}
                Some(live) => {
                    return Err(usage(format!(
                        "endpoint {name} already exists in namespace {} (branch {}, {}); pick another name",
                        endpoints.namespace,
                        live.spec.branch,
                        if live.spec.read_only { "read-only" } else { "read-write" }
                    )));
                }
                None if plan.plan => {
                    printer.result_line(&format!(
                        "create NeonEndpoint {}/{name}: a {kind} of branch {branch}, {}",
                        endpoints.namespace,
                        scaling_phrase(*suspend_timeout)
                    ));
                    return Ok(exit::SUCCESS);
                }
                None => {
                    if !create_new(&endpoints.api, NeonEndpoint::new(name, spec), &endpoints.namespace).await? {
                        return Err(usage(format!(
                            "endpoint {name} was created meanwhile by someone else; see `neonctl-aws endpoints list`"
                        )));
                    }
                }
            }
            if plan.plan {
                printer.result_line(&format!("adopt (exists) NeonEndpoint {}/{name}", endpoints.namespace));
                return Ok(exit::SUCCESS);
            }
            printer.result_line(&format!("endpoint {name}: a {kind} of branch {branch}; waiting for its compute"));
            branches.wait_running(name).await?;
            printer.result_line(&format!("endpoint {name}: its compute runs"));
            let target = Target { branch: branch.clone(), endpoint: Some(name.clone()), ..Default::default() };
            let connection = branches.connection(&target, config, &state).await?;
            let password = branches.password(&connection, config, *show_password).await?;
            print_connection(printer, &connection, password.as_ref(), false);
        }
        EndpointsCommand::Delete(Named { name, plan }) => {
            let endpoint = endpoints.get(name).await?;
            if plan.plan {
                printer.result_line(&format!(
                    "delete NeonEndpoint {}/{name}: its compute stops; branch {} and its data stay",
                    endpoints.namespace, endpoint.spec.branch
                ));
                return Ok(exit::SUCCESS);
            }
            match endpoints.api.delete(name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(response)) if response.code == 404 => {}
                Err(e) => return Err(anyhow!(e).context(format!("deleting NeonEndpoint {}/{name}", endpoints.namespace))),
            }
            printer.result_line(&format!("endpoint {name} deleted: Kubernetes removes its compute with it"));
        }
        EndpointsCommand::List => {
            let list = endpoints
                .api
                .list(&Default::default())
                .await
                .with_context(|| format!("listing the NeonEndpoints in namespace {}", endpoints.namespace))?;
            let mut rows: Vec<Row> = list.items.iter().map(row).collect();
            rows.sort_by(|a, b| a.name.cmp(&b.name));
            printer.table("endpoints", &table(&rows), &rows);
        }
        EndpointsCommand::Update { name, suspend_timeout, plan } => {
            let endpoint = endpoints.get(name).await?;
            let before = endpoint.spec.suspend_timeout_seconds;
            if before == Some(*suspend_timeout) {
                printer.result_line(&format!("endpoint {name}: suspend timeout is {} already", describe_timeout(before)));
            } else if plan.plan {
                printer.result_line(&format!(
                    "update NeonEndpoint {}/{name}: suspendTimeoutSeconds {} -> {}",
                    endpoints.namespace,
                    describe_timeout(before),
                    describe_timeout(Some(*suspend_timeout))
                ));
            } else {
                let patch = Patch::Merge(json!({"spec": {"suspendTimeoutSeconds": suspend_timeout}}));
                endpoints
                    .api
                    .patch(name, &PatchParams::default(), &patch)
                    .await
                    .with_context(|| format!("updating NeonEndpoint {}/{name}", endpoints.namespace))?;
                printer.result_line(&format!("endpoint {name}: suspend timeout {}", describe_timeout(Some(*suspend_timeout))));
            }
        }
        EndpointsCommand::Suspend(Named { name, plan }) => endpoints.act(name, ACTION_SUSPEND, plan.plan, printer).await?,
        EndpointsCommand::Start(Named { name, plan }) => endpoints.act(name, ACTION_START, plan.plan, printer).await?,
    }
    Ok(exit::SUCCESS)
}

struct Endpoints {
    api: Api<NeonEndpoint>,
    namespace: String,
    timeout: Duration,
}

impl Endpoints {
    async fn get(&self, name: &str) -> anyhow::Result<NeonEndpoint> {
        self.api.get_opt(name).await.with_context(|| format!("reading NeonEndpoint {}/{name}", self.namespace))?.ok_or_else(|| {
            usage(format!("there is no endpoint {name} in namespace {}; `neonctl-aws endpoints list` shows them", self.namespace))
        })
    }

    /// Asks the operator for `action` on `name` (unless its state is the one asked for), then
    /// waits until it reports that state.
    async fn act(&self, name: &str, action: &str, plan: bool, printer: &Printer) -> anyhow::Result<()> {
        let (wanted, doing) = match action {
            ACTION_SUSPEND => (endpoint_phase::SUSPENDED, "stop its compute and scale it to zero"),
            _ => (endpoint_phase::ACTIVE, "start its compute"),
        };
        let endpoint = self.get(name).await?;
        let phase = endpoint.status.as_ref().and_then(|status| status.phase.clone());
        let asked = endpoint.annotations().get(ACTION_ANNOTATION).is_some_and(|asked| asked == action);
        if phase.as_deref() == Some(wanted) && !asked {
            printer.result_line(&format!("endpoint {name} is {wanted} already"));
            return Ok(());
        }
        if phase.as_deref() == Some(endpoint_phase::PENDING) || phase.is_none() {
            return Err(usage(format!(
                "endpoint {name} has no compute yet ({}); wait until `neonctl-aws endpoints list` shows it Active",
                endpoint.status.and_then(|status| status.message).unwrap_or_else(|| "the control plane has not reported on it".into())
            )));
        }
        if plan {
            printer.result_line(&format!("update NeonEndpoint {}/{name}: {ACTION_ANNOTATION}={action} ({doing})", self.namespace));
            return Ok(());
        }
        let patch = Patch::Merge(json!({"metadata": {"annotations": {ACTION_ANNOTATION: action}}}));
        self.api
            .patch(name, &PatchParams::default(), &patch)
            .await
            .with_context(|| format!("asking the control plane to {doing} (annotating NeonEndpoint {}/{name})", self.namespace))?;
        printer.result_line(&format!("endpoint {name}: asked the control plane to {doing}"));
        let check = || async {
            let endpoint = self.get(name).await?;
            let pending = endpoint.annotations().contains_key(ACTION_ANNOTATION);
            let status = endpoint.status.unwrap_or_default();
            Ok::<_, anyhow::Error>(match status.phase.as_deref() {
                Some(phase) if phase == wanted && !pending => Check::Done(()),
                phase => Check::Waiting(format!(
                    "{}{}",
                    phase.unwrap_or("no state yet"),
                    status.message.map(|message| format!(": {message}")).unwrap_or_default()
                )),
            })
        };
        match wait::poll(self.timeout, POLL, check, |_, _| {}).await? {
            Waited::Done(()) => {
                printer.result_line(&format!("endpoint {name} is {wanted}"));
                Ok(())
            }
            Waited::TimedOut(last) => Err(anyhow!(
                "endpoint {name} was not {wanted} after {}s (it is {last}); see the control plane's log and `kubectl describe \
                 deployment -n {} -l neonctl-aws.dev/endpoint={name}`, then run the same command again",
                self.timeout.as_secs(),
                self.namespace
            )),
        }
    }
}
