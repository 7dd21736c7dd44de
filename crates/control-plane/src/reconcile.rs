//! The operator. Every replica keeps the state the APIs serve in step with the store (at every
//! change the watches deliver, and every [`EVERY`]); the replica that leads (through the Lease,
//! or the only one) also runs
//!
//! - a kube-runtime [`Controller`] over `NeonBranch`, woken too by changes to the
//!   `NeonEndpoint`s that name a branch: for a branch not `Ready` at its generation it creates
//!   the tenant (unless it exists) and the timeline through the storage controller, reports
//!   `Ready` or why not in the status (phase and a `Ready` condition), and pushes the spec to
//!   the branch's computes that have not had it. Failures are retried with a per-branch
//!   exponential backoff ([`backoff`]); a branch that is `Ready` waits for its next change,
//!   so an idle operator makes no calls at all. A finalizer ([`BRANCH_FINALIZER`]) makes
//!   deleting a NeonBranch delete its timeline first (refused while child branches exist), and
//!   its tenant with the tenant's last branch;
//! - every [`EVERY`]: registers the topology's safekeepers with the storage controller and makes
//!   them `Active` (once per process each), and writes what the storage controller says about
//!   its pageservers to the status ConfigMap the `status` command reads.
//!
//! It never holds the state lock or the hooks lock while calling the storage controller:
//! creating a tenant makes the controller call our `notify-attach` before it answers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::ResourceExt as _;
use kube::api::DeleteParams;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::kube_store::KubeStore;
use super::resources::{BRANCH_FINALIZER, BranchSpec, Condition, NeonBranch, NeonEndpoint, READY_CONDITION, RENAMED_TO_ANNOTATION, phase};
use neonctl_contract::computes;
use neonctl_contract::service::{PageserverStatus, REPORT_REFRESH, StorageStatus};

use super::ControlPlane;
use super::scaling::rfc3339;
use super::storcon::{StorageController, StorconError};
use super::store::{SafekeeperSet, StoreError};

/// The pace of the storage report and safekeeper registration, and of the state reload when no
/// change wakes it.
pub const EVERY: Duration = Duration::from_secs(5);

/// What the operator remembers, for the life of the process.
#[derive(Debug, Default)]
pub(crate) struct Memory {
    /// Safekeepers the storage controller accepted and activated.
    registered: BTreeSet<u64>,
    /// The last line logged about each subject: an outcome repeated every time is said once.
    pub(crate) said: BTreeMap<String, String>,
    /// Endpoints whose compute got its spec pushed, with the branch generation it was for: an
    /// endpoint made after its branch turned Ready (or a restart) gets its spec once.
    pub(crate) configured: BTreeMap<String, i64>,
    /// Tenants known to exist: branches of one tenant look it up once.
    tenants: BTreeSet<String>,
    /// Timelines this process deleted: a branch seen again before the cache has its finalizer
    /// gone does not delete them twice.
    deleted: BTreeSet<String>,
    /// Failed reconciles in a row, by branch: the backoff's exponent.
    pub(crate) failures: BTreeMap<String, u32>,
    /// When the proxy last asked for each endpoint's compute (a connection is activity).
    pub(crate) touched: BTreeMap<String, time::OffsetDateTime>,
    /// The last activity compute_ctl reported, by endpoint.
    pub(crate) last_active: BTreeMap<String, time::OffsetDateTime>,
    /// Why each compute this process suspended was, by endpoint.
    pub(crate) suspended: BTreeMap<String, String>,
    /// When this process last asked storage for each branch's size.
    pub(crate) sized: BTreeMap<String, time::OffsetDateTime>,
    /// The last report written (without its time) and when.
    reported: Option<(StorageStatus, Instant)>,
}

/// The pause before reconciling a branch again after its `failures`-th failure in a row: 1 s,
/// doubling, at most a minute.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1 << failures.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}

/// What became of one branch.
#[derive(Debug, PartialEq)]
enum Outcome {
    Ready,
    /// The controller is starting, busy or unreachable, or a parent is not ready: stay
    /// `Pending`, try again after the backoff.
    Retry(String),
    /// Reported in the status; tried again after the backoff all the same.
    Failed(String),
}

impl Outcome {
    fn phase(&self) -> &'static str {
        match self {
            Self::Ready => phase::READY,
            Self::Retry(_) => phase::PENDING,
            Self::Failed(_) => phase::FAILED,
        }
    }

    /// The `Ready` condition's status and reason.
    fn condition(&self) -> (bool, &'static str) {
        match self {
            Self::Ready => (true, "TimelineReady"),
            Self::Retry(_) => (false, "StorageUnavailable"),
            Self::Failed(_) => (false, "StorageError"),
        }
    }

    fn message(&self) -> Option<&str> {
        match self {
            Self::Ready => None,
            Self::Retry(message) | Self::Failed(message) => Some(message),
        }
    }

    /// What the storage controller's `error` during `doing` means for the branch.
    fn of_error(doing: String, error: StorconError) -> Self {
        if error.is_transient() {
            Self::Retry(format!("{doing}: {error}; retrying"))
        } else if error.is_conflicting_timeline() {
            Self::Failed(format!(
                "{doing}: {error}; the timeline exists with other parameters (pg version or parent): give the branch a new timeline id"
            ))
        } else {
            Self::Failed(format!("{doing}: {error}"))
        }
    }
}

/// Why a reconcile did not finish; the controller tries again after [`backoff`].
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// Already in the branch's status.
    #[error("NeonBranch {branch}: {message}")]
    Branch { branch: String, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("NeonBranch {branch}: {source}")]
    Finalizer { branch: String, source: Box<finalizer::Error<ReconcileError>> },
}

/// Counts a reconcile and its duration when it ends (or is cancelled).
struct ReconcileTimer<'a> {
    metrics: &'a super::metrics::Metrics,
    started: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics.reconciles.inc();
        self.metrics.reconcile_seconds.observe(self.started.elapsed().as_secs_f64());
    }
}

fn generation(branch: &NeonBranch) -> i64 {
    branch.metadata.generation.unwrap_or_default()
}

fn ready_condition(branch: &NeonBranch) -> Option<&Condition> {
    branch.status.as_ref()?.conditions.iter().find(|c| c.kind == READY_CONDITION)
}

/// Whether `branch`'s status says `phase` with the `Ready` condition, for its generation.
pub(crate) fn is_ready(branch: &NeonBranch) -> bool {
    branch
        .status
        .as_ref()
        .is_some_and(|status| status.phase.as_deref() == Some(phase::READY) && status.observed_generation == Some(generation(branch)))
        && ready_condition(branch).is_some()
}

/// Whether `branch`'s status already says `outcome` for its generation.
fn reported(branch: &NeonBranch, outcome: &Outcome) -> bool {
    let Some(status) = &branch.status else { return false };
    status.phase.as_deref() == Some(outcome.phase())
        && status.message.as_deref() == outcome.message()
        && status.observed_generation == Some(generation(branch))
        && ready_condition(branch).is_some_and(|c| c.observed_generation == Some(generation(branch)))
}

/// The branch's status for `outcome`: phase, message and the `Ready` condition, whose
/// transition time moves only when its status does.
fn status_of(branch: &NeonBranch, outcome: &Outcome) -> serde_json::Value {
    let (status, reason) = outcome.condition();
    let message = match outcome {
        Outcome::Ready => format!("tenant {} and timeline {} exist in storage", branch.spec.tenant_id, branch.spec.timeline_id),
        Outcome::Retry(message) | Outcome::Failed(message) => message.clone(),
    };
    let previous = branch.status.as_ref().map(|status| status.conditions.as_slice()).unwrap_or_default();
    let condition = Condition::ready(status, reason, message, Some(generation(branch)), previous, &now_rfc3339());
    json!({"phase": outcome.phase(), "message": outcome.message(), "observedGeneration": generation(branch), "conditions": [condition]})
}

/// At most this many objects reconciled at once per controller: a thousand new objects are
/// worked through in bounded memory (each reconcile holds its objects and requests).
const CONCURRENCY: u16 = 64;

fn controller_config() -> kube::runtime::controller::Config {
    kube::runtime::controller::Config::default().concurrency(CONCURRENCY)
}

/// Logs what a controller's reconcile came to, at debug level: failures are said by the error
/// policy.
fn log_result<T: std::fmt::Debug, E: std::fmt::Display>(result: Result<T, E>) -> std::future::Ready<()> {
    if let Err(e) = result {
        tracing::debug!("controller: {e}");
    }
    std::future::ready(())
}

/// A deleting branch's status: the phase says so, the message what it waits for.
fn deleting_status(message: &str) -> serde_json::Value {
    json!({"phase": phase::DELETING, "message": message})
}

fn now_rfc3339() -> String {
    rfc3339(time::OffsetDateTime::now_utc())
}

impl ControlPlane {
    pub(crate) fn storage_controller(&self) -> StorageController<'_> {
        StorageController { url: &self.topology.storage_controller_url, key: self.keys.sign.as_ref(), client: &self.client }
    }

    pub(crate) fn say(&self, subject: &str, line: String) {
        let mut memory = self.memory.lock().expect("operator memory lock");
        if memory.said.get(subject) != Some(&line) {
            tracing::info!("{line}");
            memory.said.insert(subject.to_string(), line);
        }
    }

    /// Everything the operator does, once and in order: reload, register the safekeepers,
    /// reconcile every branch as the controller would, report. What tests call to run the
    /// operator a step at a time.
    pub async fn reconcile(&self) {
        self.refresh().await;
        let storcon = self.storage_controller();
        self.register_safekeepers(&storcon).await;
        let Some(kube) = self.store.kubernetes() else { return };
        let mut branches = match kube.branches().await {
            Ok(branches) => branches,
            Err(e) => return self.say("branches", format!("could not read the branches: {e}")),
        };
        // Fresh timelines before branched ones: a child's parent is usually another branch.
        branches.sort_by_key(|branch| branch.spec.parent_timeline_id.is_some());
        for branch in branches {
            let had_finalizer = branch.finalizers().iter().any(|f| f == BRANCH_FINALIZER);
            let name = branch.name_any();
            let mut result = self.reconcile_branch(kube, Arc::new(branch)).await;
            // The controller gets the branch back from its watch once the finalizer is added.
            if !had_finalizer && result.is_ok() {
                result = match kube.branch_api().get_opt(&name).await {
                    Ok(Some(branch)) => self.reconcile_branch(kube, Arc::new(branch)).await,
                    Ok(None) => continue,
                    Err(e) => return self.say(&name, format!("could not read NeonBranch {name}: {e}")),
                };
            }
            if let Err(e) = result {
                self.say(&format!("branch {name}"), e.to_string());
            }
        }
        for endpoint in kube.cached_endpoints() {
            let name = endpoint.name_any();
            if let Err(e) = self.reconcile_endpoint(kube, endpoint).await {
                self.say(&format!("endpoint {name}"), e.to_string());
            }
        }
        self.refresh_sizes(kube).await;
        self.report(kube, &storcon).await;
    }

    /// Keeps the APIs' state in step with the store, and, while `leading` says this replica
    /// leads, runs the operator; until `stop`.
    pub(crate) async fn reconcile_until(self: Arc<Self>, every: Duration, leading: watch::Receiver<bool>, stop: CancellationToken) {
        let follow = self.clone().follow(every, stop.clone());
        let lead = self.lead(every, leading, stop);
        futures::join!(follow, lead);
    }

    /// Reloads the state at every change the watches deliver, and at least every `every`.
    async fn follow(self: Arc<Self>, every: Duration, stop: CancellationToken) {
        let changes = self.store.kubernetes().map(KubeStore::changes);
        let changed = || async {
            match &changes {
                Some(changes) => changes.notified().await,
                None => std::future::pending().await,
            }
        };
        loop {
            self.refresh().await;
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(every) => {}
                () = changed() => {}
            }
        }
    }

    /// Runs the operator whenever this replica leads; stops it when it no longer does.
    async fn lead(self: Arc<Self>, every: Duration, mut leading: watch::Receiver<bool>, stop: CancellationToken) {
        loop {
            self.metrics.leader.set(0);
            // Without an election the sender is gone from the start and the value never changes.
            let led = async { leading.wait_for(|leads| *leads).await.is_ok() };
            let led = tokio::select! {
                () = stop.cancelled() => return,
                led = led => led,
            };
            if !led && !*leading.borrow() {
                return;
            }
            self.metrics.leader.set(1);
            tracing::info!("leading: running the operator");
            let lost = async {
                if leading.wait_for(|leads| !*leads).await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = lost => tracing::info!("no longer leading: the operator stops"),
                () = self.clone().operate(every) => {}
            }
        }
    }

    /// The operator proper: the controller (with the Kubernetes store) and the storage tending.
    async fn operate(self: Arc<Self>, every: Duration) {
        let tend = async {
            loop {
                self.tend_storage().await;
                tokio::time::sleep(every).await;
            }
        };
        let control = async {
            let Some(kube) = self.store.kubernetes() else { return std::future::pending().await };
            let namespace = kube.namespace().to_string();
            Controller::new(kube.branch_api(), watcher::Config::default())
                .with_config(controller_config())
                .watches(kube.endpoint_api(), watcher::Config::default(), move |endpoint| {
                    Some(ObjectRef::<NeonBranch>::new(&endpoint.spec.branch).within(&namespace))
                })
                .run(
                    |branch, control_plane: Arc<ControlPlane>| async move {
                        let kube = control_plane.store.kubernetes().expect("the controller runs with the Kubernetes store");
                        control_plane.reconcile_branch(kube, branch).await
                    },
                    |branch, error, control_plane| control_plane.error_policy(&format!("branch {}", branch.name_any()), error),
                    self.clone(),
                )
                .for_each(log_result)
                .await;
        };
        // Each endpoint's compute: woken by its own objects, its pods and its branch's changes.
        let computes = async {
            let Some(kube) = self.store.kubernetes() else { return std::future::pending().await };
            let (namespace, control_plane) = (kube.namespace().to_string(), self.clone());
            let ours = watcher::Config::default().labels(&computes::selector());
            let pods_namespace = namespace.clone();
            Controller::new(kube.endpoint_api(), watcher::Config::default())
                .with_config(controller_config())
                .owns(kube.api::<Deployment>(), ours.clone())
                .owns(kube.api::<Service>(), ours.clone())
                // What keeps a pod from running shows in its endpoint's status.
                .watches(kube.api::<Pod>(), ours, move |pod| {
                    let endpoint = pod.labels().get(computes::ENDPOINT_LABEL)?;
                    Some(ObjectRef::<NeonEndpoint>::new(endpoint).within(&pods_namespace))
                })
                .watches(kube.branch_api(), watcher::Config::default(), move |branch| {
                    let kube = control_plane.store.kubernetes().expect("the controller runs with the Kubernetes store");
                    let name = branch.name_any();
                    kube.cached_endpoints()
                        .into_iter()
                        .filter(|endpoint| endpoint.spec.branch == name)
                        .map(|endpoint| ObjectRef::<NeonEndpoint>::new(&endpoint.name_any()).within(&namespace))
                        .collect::<Vec<_>>()
                })
                .run(
                    |endpoint, control_plane: Arc<ControlPlane>| async move {
                        let kube = control_plane.store.kubernetes().expect("the controller runs with the Kubernetes store");
                        control_plane.reconcile_endpoint(kube, endpoint).await
                    },
                    |endpoint, error, control_plane| control_plane.error_policy(&format!("endpoint {}", endpoint.name_any()), error),
                    self.clone(),
                )
                .for_each(log_result)
                .await;
        };
        // Branch sizes, apart from the report: a thousand first reads must not delay it.
        let sizes = async {
            let Some(kube) = self.store.kubernetes() else { return std::future::pending().await };
            loop {
                self.refresh_sizes(kube).await;
                tokio::time::sleep(every).await;
            }
        };
        // Scale to zero: idle computes suspended.
        let idle = async {
            loop {
                self.suspend_idle().await;
                tokio::time::sleep(self.scaling.poll).await;
            }
        };
        futures::join!(tend, control, computes, sizes, idle);
    }

    /// The controllers' answer to a failed reconcile of `subject` (`branch x`, `endpoint y`):
    /// log it once, count it, and try again after its backoff.
    fn error_policy(&self, subject: &str, error: &ReconcileError) -> Action {
        self.say(subject, error.to_string());
        let mut memory = self.memory.lock().expect("operator memory lock");
        let failures = memory.failures.entry(subject.to_string()).or_default();
        *failures += 1;
        Action::requeue(backoff(*failures))
    }

    /// One NeonBranch, through its finalizer: created in storage (and its computes attached),
    /// or, once deleted, removed from storage.
    async fn reconcile_branch(&self, kube: &KubeStore, branch: Arc<NeonBranch>) -> Result<Action, ReconcileError> {
        let _timer = ReconcileTimer { metrics: &self.metrics, started: Instant::now() };
        let branch = Arc::new(kube.freshest(&branch));
        let name = branch.name_any();
        let action = finalizer(&kube.branch_api(), BRANCH_FINALIZER, branch, |event| async move {
            match event {
                finalizer::Event::Apply(branch) => self.apply_branch(kube, &branch).await,
                finalizer::Event::Cleanup(branch) => self.clean_up_branch(kube, &branch).await,
            }
        })
        .await
        .map_err(|error| {
            self.metrics.reconcile_errors.inc();
            match error {
                finalizer::Error::ApplyFailed(error) | finalizer::Error::CleanupFailed(error) => error,
                other => ReconcileError::Finalizer { branch: name.clone(), source: Box::new(other) },
            }
        })?;
        self.memory.lock().expect("operator memory lock").failures.remove(&format!("branch {name}"));
        Ok(action)
    }

    async fn apply_branch(&self, kube: &KubeStore, branch: &NeonBranch) -> Result<Action, ReconcileError> {
        let name = branch.name_any();
        let served = kube.endpoints_of(&name).await?;
        if is_ready(branch) {
            self.attach_computes(&name, generation(branch), &served).await;
            return self.retire_previous_timeline(kube, branch).await;
        }
        let outcome = match self.waiting_parent(kube, branch).await? {
            Some(parent) => Outcome::Retry(format!("waiting for the parent branch {parent} to be ready")),
            None => match self.branch_point(kube, branch).await? {
                Ok(lsn) => self.ensure_timeline(&branch.spec, lsn.as_deref()).await,
                Err(outcome) => outcome,
            },
        };
        self.metrics.branch_outcomes.get_or_create(&super::metrics::OutcomeLabels { phase: outcome.phase() }).inc();
        if !reported(branch, &outcome) {
            kube.patch_branch_status(&name, status_of(branch, &outcome)).await?;
        }
        let spec = &branch.spec;
        match outcome {
            Outcome::Ready => {
                self.say(
                    &format!("branch {name}"),
                    format!(
                        "branch {name} ready (generation {}): tenant {}, timeline {}",
                        generation(branch),
                        spec.tenant_id,
                        spec.timeline_id
                    ),
                );
                self.attach_computes(&name, generation(branch), &served).await;
                self.retire_previous_timeline(kube, branch).await
            }
            Outcome::Retry(message) => Err(ReconcileError::Branch { branch: name, message: format!("pending: {message}") }),
            Outcome::Failed(message) => Err(ReconcileError::Branch { branch: name, message: format!("failed: {message}") }),
        }
    }

    /// After a reset or a restore (the spec names a new timeline, now ready): once every compute
    /// of the branch runs on the new timeline, the previous one is deleted from storage, unless
    /// another branch still has it (a restore keeps it as a branch of its own, and the restored
    /// timeline branches from it). Then the status names the new timeline.
    async fn retire_previous_timeline(&self, kube: &KubeStore, branch: &NeonBranch) -> Result<Action, ReconcileError> {
        let name = branch.name_any();
        let (tenant, timeline) = (&branch.spec.tenant_id, &branch.spec.timeline_id);
        let previous = branch.status.as_ref().and_then(|status| status.timeline_id.clone());
        if previous.as_ref() == Some(timeline) {
            return Ok(Action::await_change());
        }
        if let Some(previous) = &previous {
            let waiting: Vec<String> = kube
                .cached_endpoints()
                .iter()
                .filter(|endpoint| endpoint.spec.branch == name)
                // Not yet on the new timeline (a running one's old pod, Recreate, is gone by then).
                .filter(|endpoint| !endpoint.status.as_ref().is_some_and(|status| status.is_on(timeline)))
                .map(|endpoint| endpoint.name_any())
                .collect();
            if !waiting.is_empty() {
                // Their computes' status changes wake this branch again.
                self.say(
                    &format!("branch {name}"),
                    format!("branch {name}: waiting for {} to move to timeline {timeline}", waiting.join(", ")),
                );
                return Ok(Action::await_change());
            }
            let needed = kube.branches().await?.iter().any(|other| {
                &other.spec.tenant_id == tenant
                    && (&other.spec.timeline_id == previous || other.spec.parent_timeline_id.as_ref() == Some(previous))
            });
            if !needed {
                if let Err(message) = self.delete_storage(tenant, previous, false).await {
                    return Err(ReconcileError::Branch { branch: name, message: format!("retiring timeline {previous}: {message}") });
                }
                tracing::info!("branch {name}: previous timeline {previous} deleted from storage");
            }
        }
        kube.patch_branch_status(&name, json!({"timelineId": timeline})).await?;
        Ok(Action::await_change())
    }

    /// The branch this one branches from, when it is another NeonBranch not ready yet.
    async fn waiting_parent(&self, kube: &KubeStore, branch: &NeonBranch) -> Result<Option<String>, StoreError> {
        let Some(parent) = &branch.spec.parent_timeline_id else { return Ok(None) };
        Ok(kube
            .branches()
            .await?
            .into_iter()
            .find(|other| other.spec.tenant_id == branch.spec.tenant_id && &other.spec.timeline_id == parent)
            .filter(|other| !is_ready(other))
            .map(|other| other.name_any()))
    }

    /// Where in its parent the branch starts: the spec's LSN, or the one its time resolved to
    /// (asked of the pageserver once, then kept in the status so that a retry creates the same
    /// timeline); `None`: the parent's last record.
    async fn branch_point(&self, kube: &KubeStore, branch: &NeonBranch) -> Result<Result<Option<String>, Outcome>, ReconcileError> {
        let spec = &branch.spec;
        let (Some(parent), Some(time)) = (&spec.parent_timeline_id, &spec.ancestor_timestamp) else {
            return Ok(Ok(spec.ancestor_start_lsn.clone()));
        };
        if spec.ancestor_start_lsn.is_some() {
            return Ok(Err(Outcome::Failed("the spec gives both ancestorStartLsn and ancestorTimestamp: keep one".into())));
        }
        let status = branch.status.clone().unwrap_or_default();
        if let (Some(lsn), Some(for_timeline)) = (status.branched_at_lsn, status.branched_timeline_id)
            && for_timeline == spec.timeline_id
        {
            return Ok(Ok(Some(lsn)));
        }
        let tenant = &spec.tenant_id;
        let found = match self.storage_controller().lsn_by_timestamp(tenant, parent, time).await {
            Ok(found) => found,
            Err(e) => return Ok(Err(Outcome::of_error(format!("finding the parent's LSN at {time}"), e))),
        };
        let lsn = found.lsn;
        match found.kind.as_str() {
            // `future`: no commit since then; the parent's data as of then is at that LSN.
            "present" | "future" => {
                let resolved = json!({"branchedAtLsn": lsn, "branchedTimelineId": spec.timeline_id});
                kube.patch_branch_status(&branch.name_any(), resolved).await?;
                Ok(Ok(Some(lsn)))
            }
            "past" => Ok(Err(Outcome::Failed(format!(
                "{time} is before the history the pageserver keeps of the parent (its pitr_interval, 7 days unless configured; \
                 the earliest point it has is LSN {lsn}): pick a later time"
            )))),
            "nodata" => Ok(Err(Outcome::Failed(format!(
                "the parent has no commit at or before {time} (it is before the parent's first commit): pick a later time, or an LSN"
            )))),
            other => Ok(Err(Outcome::Failed(format!(
                "the pageserver found LSN {lsn} of kind {other:?} for {time}, which is not one it documents"
            )))),
        }
    }

    /// Creates the branch's tenant unless it exists, then its timeline (idempotent), from its
    /// parent at `lsn` when given.
    async fn ensure_timeline(&self, spec: &BranchSpec, lsn: Option<&str>) -> Outcome {
        let storcon = self.storage_controller();
        let (tenant, timeline) = (&spec.tenant_id, &spec.timeline_id);
        if !self.memory.lock().expect("operator memory lock").tenants.contains(tenant) {
            match storcon.tenant_exists(tenant).await {
                Ok(true) => {}
                Ok(false) => {
                    if let Err(e) = storcon.create_tenant(tenant).await {
                        return Outcome::of_error(format!("creating tenant {tenant}"), e);
                    }
                    tracing::info!("tenant {tenant} created");
                }
                Err(e) => return Outcome::of_error(format!("looking up tenant {tenant}"), e),
            }
            self.memory.lock().expect("operator memory lock").tenants.insert(tenant.clone());
        }
        let ancestor = spec.parent_timeline_id.as_deref().map(|parent| (parent, lsn));
        let safekeepers = match storcon.create_timeline(tenant, timeline, spec.pg_version, ancestor).await {
            Ok(safekeepers) => safekeepers,
            Err(e) => {
                // Deleted behind our back: look it up (and create it) again next time.
                if e.status() == Some(hyper::StatusCode::NOT_FOUND) {
                    self.memory.lock().expect("operator memory lock").tenants.remove(tenant);
                }
                return Outcome::of_error(format!("creating timeline {timeline} of tenant {tenant}"), e);
            }
        };
        // With `--timelines-onto-safekeepers` the controller names the timeline's safekeepers
        // and their generation: computes must write to exactly those.
        if let Some(info) = safekeepers {
            let set = SafekeeperSet { generation: info.generation, safekeepers: info.safekeepers.iter().map(|sk| sk.id).collect() };
            if let Err(e) = self.set_safekeepers(tenant, timeline, set).await {
                return Outcome::Failed(format!("timeline {timeline} of tenant {tenant}: the storage controller's safekeepers: {e}"));
            }
        }
        Outcome::Ready
    }

    /// A deleted NeonBranch: its timeline goes from storage (never while another branch
    /// branches from it: Neon refuses, and the child's data depends on it), then the tenant
    /// when no other branch names it. The finalizer is removed after that.
    async fn clean_up_branch(&self, kube: &KubeStore, branch: &NeonBranch) -> Result<Action, ReconcileError> {
        let name = branch.name_any();
        let (tenant, timeline) = (&branch.spec.tenant_id, &branch.spec.timeline_id);
        let others: Vec<NeonBranch> =
            kube.branches().await?.into_iter().filter(|other| other.name_any() != name && &other.spec.tenant_id == tenant).collect();
        let children: Vec<String> =
            others.iter().filter(|other| other.spec.parent_timeline_id.as_ref() == Some(timeline)).map(|other| other.name_any()).collect();
        let waiting = |message: String| ReconcileError::Branch { branch: name.clone(), message };
        // Renamed: the new NeonBranch holds the timeline (and the children hang on it).
        let renamed_to = branch.annotations().get(RENAMED_TO_ANNOTATION).filter(|new| {
            others.iter().any(|other| {
                &other.name_any() == *new && &other.spec.timeline_id == timeline && other.metadata.deletion_timestamp.is_none()
            })
        });
        if let Some(new) = renamed_to {
            self.say(&format!("branch {name}"), format!("branch {name} renamed to {new}: timeline {timeline} stays"));
            return Ok(Action::await_change());
        }
        let step = if !children.is_empty() {
            Err(format!("its child branches {} branch from its timeline: delete them first", children.join(", ")))
        } else if let Some(computes) = self.stop_computes(kube, &name).await? {
            Err(format!("stopping its computes first ({computes})"))
        } else {
            self.delete_storage(tenant, timeline, others.is_empty()).await
        };
        match step {
            Ok(()) => {
                self.say(
                    &format!("branch {name}"),
                    format!("branch {name} deleted: timeline {timeline} of tenant {tenant} removed from storage"),
                );
                // A branch made again under this name starts at generation 1: its endpoints must
                // get its spec then, not count as configured already.
                let served = kube.endpoints_of(&name).await?;
                self.memory.lock().expect("operator memory lock").configured.retain(|endpoint, _| !served.contains(endpoint));
                Ok(Action::await_change())
            }
            Err(message) => {
                let status = branch.status.as_ref();
                if status.and_then(|s| s.phase.as_deref()) != Some(phase::DELETING)
                    || status.and_then(|s| s.message.as_deref()) != Some(&message)
                {
                    kube.patch_branch_status(&name, deleting_status(&message)).await?;
                }
                Err(waiting(format!("deleting: {message}")))
            }
        }
    }

    /// Deletes the NeonEndpoints serving `branch` (their computes go with them); says which
    /// computes are still there, if any.
    async fn stop_computes(&self, kube: &KubeStore, branch: &str) -> Result<Option<String>, ReconcileError> {
        let endpoints = kube.endpoint_api();
        let mut left = Vec::new();
        for endpoint in kube.endpoints_of(branch).await? {
            match endpoints.delete(&endpoint, &DeleteParams::background()).await {
                Ok(_) => tracing::info!("NeonEndpoint {endpoint} deleted with its branch {branch}"),
                Err(kube::Error::Api(response)) if response.code == 404 => {}
                Err(source) => {
                    let what = format!("deleting NeonEndpoint {endpoint} of branch {branch}");
                    return Err(StoreError::Kubernetes { what, source }.into());
                }
            }
            left.push(format!("NeonEndpoint {endpoint}"));
        }
        // The garbage collector removes an endpoint's compute after the endpoint.
        left.extend(kube.computes_of(branch).await?.into_iter().map(|name| format!("Deployment {name}")));
        Ok((!left.is_empty()).then(|| left.join(", ")))
    }

    /// Deletes the timeline, and the tenant with it when `last` of its branches.
    async fn delete_storage(&self, tenant: &str, timeline: &str, last: bool) -> Result<(), String> {
        if self.memory.lock().expect("operator memory lock").deleted.contains(timeline) {
            return Ok(());
        }
        let storcon = self.storage_controller();
        match storcon.delete_timeline(tenant, timeline).await {
            Ok(true) => {}
            Ok(false) => return Err(format!("the storage controller is still deleting timeline {timeline}; retrying")),
            Err(e) => return Err(format!("deleting timeline {timeline} of tenant {tenant}: {e}")),
        }
        if last {
            match storcon.delete_tenant(tenant).await {
                Ok(true) => {
                    self.memory.lock().expect("operator memory lock").tenants.remove(tenant);
                    tracing::info!("tenant {tenant} deleted with its last branch");
                }
                Ok(false) => return Err(format!("the storage controller is still deleting tenant {tenant}; retrying")),
                Err(e) => return Err(format!("deleting tenant {tenant}: {e}")),
            }
        }
        self.memory.lock().expect("operator memory lock").deleted.insert(timeline.to_string());
        Ok(())
    }

    /// A replica's reload: the store's state, for the APIs it serves.
    pub(crate) async fn refresh(&self) {
        match self.reload().await {
            Ok((branches, endpoints)) => self.say("store", format!("state: {branches} branch(es), {endpoints} endpoint(s)")),
            Err(e) => self.say("store", format!("could not reload the state, serving the last one: {e}")),
        }
    }

    /// Replaces the state with the store's. Placements the store could not hold (a tenant no
    /// branch names yet) are kept, and saved: a branch naming them may have appeared.
    async fn reload(&self) -> Result<(usize, usize), StoreError> {
        let mut state = self.state.lock().await;
        let mut loaded = self.store.load().await?;
        let mut kept = false;
        for (tenant, attachment) in &state.attachments {
            if !loaded.attachments.contains_key(tenant) {
                loaded.attachments.insert(tenant.clone(), attachment.clone());
                kept = true;
            }
        }
        for (timeline, set) in &state.safekeeper_sets {
            if !loaded.safekeeper_sets.contains_key(timeline) {
                loaded.safekeeper_sets.insert(timeline.clone(), set.clone());
                kept = true;
            }
        }
        if kept {
            self.store.save(&loaded).await?;
        }
        let counts = (loaded.branches.len(), loaded.endpoints.len());
        *state = loaded;
        Ok(counts)
    }

    /// Registers the safekeepers (with the storage controller) and, with the Kubernetes store,
    /// writes the storage report.
    async fn tend_storage(&self) {
        let storcon = self.storage_controller();
        self.register_safekeepers(&storcon).await;
        if let Some(kube) = self.store.kubernetes() {
            self.report(kube, &storcon).await;
        }
    }

    async fn register_safekeepers(&self, storcon: &StorageController<'_>) {
        for node in &self.topology.safekeepers {
            if self.memory.lock().expect("operator memory lock").registered.contains(&node.id) {
                continue;
            }
            let subject = format!("safekeeper {}", node.id);
            match storcon.register_safekeeper(node, &self.topology.region).await {
                Ok(()) => {
                    self.memory.lock().expect("operator memory lock").registered.insert(node.id);
                    self.say(&subject, format!("safekeeper {} registered with the storage controller, scheduling Active", node.id));
                }
                Err(e) => self.say(&subject, format!("could not register safekeeper {}: {e}; retrying", node.id)),
            }
        }
    }

    /// Marks the branch created and pushes the spec to the computes serving it (`served`, its
    /// endpoints) that have not had it for this generation: they waited with an empty one, and
    /// a new generation may have changed roles or databases.
    async fn attach_computes(&self, branch_id: &str, generation: i64, served: &[String]) {
        let endpoints: Vec<String> = {
            let mut state = self.state.lock().await;
            if let Some(branch) = state.branches.get_mut(branch_id) {
                branch.pending = false;
            }
            let memory = self.memory.lock().expect("operator memory lock");
            // Only computes that run can be given the spec; the others get it when they start
            // (or when their endpoint turns Running), so they are not counted as configured.
            served.iter().filter(|id| memory.configured.get(*id) != Some(&generation)).filter(|id| state.runs(id)).cloned().collect()
        };
        if endpoints.is_empty() {
            return;
        }
        let _hook = self.hooks.lock().await;
        match self.configure_computes(&endpoints).await {
            Ok(()) => self.memory.lock().expect("operator memory lock").configured.extend(endpoints.into_iter().map(|id| (id, generation))),
            Err(e) => self.say(&format!("computes of {branch_id}"), format!("branch {branch_id}: {e}")),
        }
    }

    /// Writes the storage controller's view to the status ConfigMap.
    async fn report(&self, kube: &KubeStore, storcon: &StorageController<'_>) {
        let (pageservers, error) = match storcon.nodes().await {
            Ok(nodes) => (
                nodes
                    .into_iter()
                    .map(|node| PageserverStatus {
                        id: node.id,
                        availability: node.availability,
                        scheduling: node.scheduling,
                        availability_zone: node.availability_zone_id,
                    })
                    .collect::<Vec<_>>(),
                None,
            ),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        let summary = match &error {
            Some(error) => format!("could not list the storage controller's nodes: {error}"),
            None => {
                let nodes: Vec<String> =
                    pageservers.iter().map(|p| format!("pageserver {} {}/{}", p.id, p.availability, p.scheduling)).collect();
                format!("storage controller: {}", if nodes.is_empty() { "no pageservers".into() } else { nodes.join(", ") })
            }
        };
        self.say("nodes", summary);
        let registered = self.memory.lock().expect("operator memory lock").registered.iter().copied().collect();
        let status = StorageStatus {
            checked_at: now_rfc3339(),
            pageservers,
            safekeepers: registered,
            error,
            unauthenticated: self.keys.verify.is_none(),
        };
        // Written when it says something new, else every REPORT_REFRESH to show it is alive.
        let content = StorageStatus { checked_at: String::new(), ..status.clone() };
        let due = match &self.memory.lock().expect("operator memory lock").reported {
            Some((last, at)) => *last != content || at.elapsed() >= REPORT_REFRESH,
            None => true,
        };
        if !due {
            return;
        }
        let text = serde_json::to_string_pretty(&status).expect("the status serializes to JSON");
        match kube.write_status(&text).await {
            Ok(()) => {
                self.memory.lock().expect("operator memory lock").reported = Some((content, Instant::now()));
                self.say("status", format!("writing the storage status ConfigMap on changes, at least every {}s", REPORT_REFRESH.as_secs()))
            }
            Err(e) => self.say("status", format!("could not write the storage status: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use hyper::StatusCode;

    use super::*;
    use crate::resources::BranchStatus;

    fn branch(phase: Option<&str>, message: Option<&str>, observed: Option<i64>) -> NeonBranch {
        let spec = BranchSpec {
            project_id: "neon".into(),
            tenant_id: "1f359dd625e519a1a4e8d7509690f6fc".into(),
            timeline_id: "de200bd42b49cc1814412c7e592dd6e9".into(),
            pg_version: 17,
            parent_timeline_id: None,
            ancestor_start_lsn: None,
            ancestor_timestamp: None,
            ..Default::default()
        };
        let mut branch = NeonBranch::new("main", spec);
        branch.metadata.generation = Some(2);
        branch.status = Some(BranchStatus {
            phase: phase.map(Into::into),
            message: message.map(Into::into),
            observed_generation: observed,
            conditions: phase
                .map(|_| Condition {
                    kind: READY_CONDITION.into(),
                    status: "True".into(),
                    reason: "TimelineReady".into(),
                    message: String::new(),
                    observed_generation: observed,
                    last_transition_time: "2026-11-25T00:00:00Z".into(),
                })
                .into_iter()
                .collect(),
            ..Default::default()
        });
        branch
    }

    #[test]
    fn the_backoff_doubles_up_to_a_minute() {
        let pauses: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(pauses, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    /// The `Ready` condition follows the outcome; its transition time moves only with its status.
    #[test]
    fn the_ready_condition_follows_the_outcome() {
        let ready = status_of(&branch(Some("Ready"), None, Some(2)), &Outcome::Ready);
        let condition = &ready["conditions"][0];
        assert_eq!((condition["type"].as_str(), condition["status"].as_str()), (Some("Ready"), Some("True")));
        assert_eq!(condition["lastTransitionTime"], "2026-11-25T00:00:00Z", "still True: the time stays");
        assert_eq!(condition["observedGeneration"], 2);
        let failed = status_of(&branch(Some("Ready"), None, Some(2)), &Outcome::Failed("initdb failed".into()));
        let condition = &failed["conditions"][0];
        assert_eq!((condition["status"].as_str(), condition["reason"].as_str()), (Some("False"), Some("StorageError")));
        assert_eq!(condition["message"], "initdb failed");
        assert_ne!(condition["lastTransitionTime"], "2026-11-25T00:00:00Z", "True to False is a transition");
        let pending = status_of(&branch(None, None, None), &Outcome::Retry("busy".into()));
        assert_eq!(pending["conditions"][0]["reason"], "StorageUnavailable");
        assert_eq!(pending["phase"], "Pending");
    }

    #[test]
    fn a_status_is_rewritten_only_when_it_changes() {
        assert!(reported(&branch(Some("Ready"), None, Some(2)), &Outcome::Ready));
        assert!(!reported(&branch(Some("Ready"), None, Some(1)), &Outcome::Ready), "a new generation is reported");
        assert!(reported(&branch(Some("Failed"), Some("boom"), Some(2)), &Outcome::Failed("boom".into())));
        assert!(!reported(&branch(Some("Failed"), Some("boom"), Some(2)), &Outcome::Failed("bang".into())));
        assert!(!reported(&branch(None, None, None), &Outcome::Retry("busy".into())));
    }

    #[test]
    fn storage_controller_errors_become_phases() {
        let status =
            |status| StorconError::Status { method: hyper::Method::POST, url: "http://sc/v1/tenant".into(), status, message: "m".into() };
        let busy = Outcome::of_error("creating tenant t".into(), status(StatusCode::SERVICE_UNAVAILABLE));
        assert!(
            matches!(&busy, Outcome::Retry(m) if m.starts_with("creating tenant t: POST http://sc/v1/tenant answered 503")),
            "{busy:?}"
        );
        let passed_on = |message: &str| StorconError::Pageserver {
            method: hyper::Method::POST,
            url: "http://sc/v1/tenant/t/timeline".into(),
            pageserver: crate::storcon::PageserverError::parse(message).unwrap(),
        };
        let conflict = Outcome::of_error(
            "creating timeline x".into(),
            passed_on("Conflict: 1 (ps) 409 Conflict: 409 Conflict timeline already exists with different parameters"),
        );
        assert!(matches!(&conflict, Outcome::Failed(m) if m.contains("new timeline id")), "{conflict:?}");
        // Any other pageserver error comes as 409 too: it says what really failed.
        let initdb = Outcome::of_error(
            "creating timeline x".into(),
            passed_on("Conflict: 1 (ps) 500 Internal Server Error: 500 Internal Server Error initdb failed"),
        );
        assert!(
            matches!(&initdb, Outcome::Failed(m) if m.contains("pageserver 1 (ps) answered 500 Internal Server Error: initdb failed") && !m.contains("new timeline id")),
            "{initdb:?}"
        );
        let busy = Outcome::of_error(
            "creating timeline x".into(),
            passed_on("Conflict: 1 (ps) 429 Too Many Requests: 429 Too Many Requests in progress"),
        );
        assert_eq!(busy.phase(), phase::PENDING);
        let own = Outcome::of_error("creating timeline x".into(), status(StatusCode::CONFLICT));
        assert!(matches!(&own, Outcome::Failed(m) if !m.contains("new timeline id")), "{own:?}");
        let broken = Outcome::of_error("creating timeline x".into(), status(StatusCode::INTERNAL_SERVER_ERROR));
        assert_eq!(broken.phase(), phase::FAILED);
    }
}
