//! The reconciler, a background task of `control-plane serve`: at start, then at every change
//! the watches deliver (with the Kubernetes store) and at least every [`EVERY`], it
//!
//! 1. reloads the store (with the Kubernetes store: the custom resources) into the state the
//!    API serves;
//! 2. registers every safekeeper of the topology with the storage controller and makes it
//!    `Active` (once per process each, after success): the controller places timelines only on
//!    registered, active safekeepers;
//! 3. with the Kubernetes store, creates the tenant and timeline of every `NeonBranch` that is
//!    not `Ready` at its current generation, reports `Ready` or `Failed` in its status, and
//!    reconfigures the computes of a branch that turned `Ready` (they waited with an empty
//!    spec); and writes what the storage controller says about its pageservers to the status
//!    ConfigMap the `status` command reads.
//!
//! It never holds the state lock or the hooks lock while calling the storage controller:
//! creating a tenant makes the controller call our `notify-attach` before it answers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::kube_store::{BranchObject, KubeStore};
use super::resources::{BranchSpec, Condition, READY_CONDITION, phase};
use neonctl_contract::service::{PageserverStatus, StorageStatus};

use super::ControlPlane;
use super::storcon::{StorageController, StorconError};
use super::store::{SafekeeperSet, StoreError};

/// The pause between two rounds.
pub const EVERY: Duration = Duration::from_secs(5);

/// What the reconciler remembers from one round to the next, for the life of the process.
#[derive(Debug, Default)]
pub(crate) struct Memory {
    /// Safekeepers the storage controller accepted and activated.
    registered: BTreeSet<u64>,
    /// The last line logged about each subject: an outcome repeated every round is said once.
    said: BTreeMap<String, String>,
    /// Endpoints whose compute got its spec pushed, with the branch generation it was for: an
    /// endpoint made after its branch turned Ready (or a restart) gets its spec once.
    configured: BTreeMap<String, i64>,
}

impl Memory {
    fn say(&mut self, subject: &str, line: String) {
        if self.said.get(subject) != Some(&line) {
            tracing::info!("{line}");
            self.said.insert(subject.to_string(), line);
        }
    }
}

/// What became of one branch in a round.
#[derive(Debug, PartialEq)]
enum Outcome {
    Ready,
    /// The controller is starting, busy or unreachable: stay `Pending`, try next round.
    Retry(String),
    /// Reported in the status; tried again next round all the same.
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
    fn condition(&self) -> (&'static str, &'static str) {
        match self {
            Self::Ready => ("True", "TimelineReady"),
            Self::Retry(_) => ("False", "StorageUnavailable"),
            Self::Failed(_) => ("False", "StorageError"),
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

/// Counts a round and its duration when the round ends (or is cancelled).
struct RoundTimer<'a> {
    metrics: &'a super::metrics::Metrics,
    started: std::time::Instant,
}

impl Drop for RoundTimer<'_> {
    fn drop(&mut self) {
        self.metrics.rounds.inc();
        self.metrics.round_seconds.observe(self.started.elapsed().as_secs_f64());
    }
}

/// Whether `branch`'s status already says `outcome` for its generation.
fn reported(branch: &BranchObject, outcome: &Outcome) -> bool {
    let status = &branch.status;
    status.phase.as_deref() == Some(outcome.phase())
        && status.message.as_deref() == outcome.message()
        && status.observed_generation == Some(branch.generation)
        && ready_condition(branch).is_some_and(|c| c.observed_generation == Some(branch.generation))
}

fn ready_condition(branch: &BranchObject) -> Option<&Condition> {
    branch.status.conditions.iter().find(|c| c.kind == READY_CONDITION)
}

/// The branch's status for `outcome`: phase, message and the `Ready` condition, whose
/// transition time moves only when its status does.
fn status_of(branch: &BranchObject, outcome: &Outcome) -> serde_json::Value {
    let (status, reason) = outcome.condition();
    let message = match outcome {
        Outcome::Ready => match &branch.spec {
            Ok(spec) => format!("tenant {} and timeline {} exist in storage", spec.tenant_id, spec.timeline_id),
            Err(_) => String::new(),
        },
        Outcome::Retry(message) | Outcome::Failed(message) => message.clone(),
    };
    let since = ready_condition(branch).filter(|c| c.status == status).map(|c| c.last_transition_time.clone()).unwrap_or_else(now_rfc3339);
    let condition = Condition {
        kind: READY_CONDITION.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: Some(branch.generation),
        last_transition_time: since,
    };
    json!({"phase": outcome.phase(), "message": outcome.message(), "observedGeneration": branch.generation, "conditions": [condition]})
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

impl ControlPlane {
    /// One round (see the module documentation). Rounds never overlap; errors are logged once
    /// and, for branches, reported in their status.
    pub async fn reconcile(&self) {
        let mut memory = self.reconciler.lock().await;
        let _timer = RoundTimer { metrics: &self.metrics, started: std::time::Instant::now() };
        match self.reload().await {
            Ok((branches, endpoints)) => memory.say("store", format!("state: {branches} branch(es), {endpoints} endpoint(s)")),
            Err(e) => memory.say("store", format!("could not reload the state, serving the last one: {e}")),
        }
        let storcon = StorageController { url: &self.topology.storage_controller_url, key: self.keys.sign.as_ref(), client: &self.client };
        self.register_safekeepers(&storcon, &mut memory).await;
        if let Some(kube) = self.store.kubernetes() {
            self.ensure_branches(kube, &storcon, &mut memory).await;
            self.report(kube, &storcon, &mut memory).await;
        }
    }

    /// Rounds now and then every `every`, until `stop`.
    /// Rounds now and then every `every`, until `stop`: whole rounds while `leading` says this
    /// replica leads, else only the reload (a follower serves the APIs from the same state).
    pub(crate) async fn reconcile_until(self: Arc<Self>, every: Duration, mut leading: watch::Receiver<bool>, stop: CancellationToken) {
        // With the Kubernetes store a change starts the next round at once; `every` is the
        // pace of retries and of the storage report.
        let changes = self.store.kubernetes().map(KubeStore::changes);
        let changed = || async {
            match &changes {
                Some(changes) => changes.notified().await,
                None => std::future::pending().await,
            }
        };
        loop {
            let leads = *leading.borrow_and_update();
            self.metrics.leader.set(i64::from(leads));
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.reconcile(), if leads => {}
                () = self.refresh(), if !leads => {}
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(every) => {}
                () = changed() => {}
                // A new leader starts at once; no election: the sender is gone, never changes.
                Ok(()) = leading.changed() => {}
            }
        }
    }

    /// A follower's round: the store's state, for the APIs it serves.
    async fn refresh(&self) {
        let mut memory = self.reconciler.lock().await;
        match self.reload().await {
            Ok((branches, endpoints)) => memory.say("store", format!("state: {branches} branch(es), {endpoints} endpoint(s), following")),
            Err(e) => memory.say("store", format!("could not reload the state, serving the last one: {e}")),
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

    async fn register_safekeepers(&self, storcon: &StorageController<'_>, memory: &mut Memory) {
        for node in &self.topology.safekeepers {
            if memory.registered.contains(&node.id) {
                continue;
            }
            let subject = format!("safekeeper {}", node.id);
            match storcon.register_safekeeper(node, &self.topology.region).await {
                Ok(()) => {
                    memory.registered.insert(node.id);
                    memory.say(&subject, format!("safekeeper {} registered with the storage controller, scheduling Active", node.id));
                }
                Err(e) => memory.say(&subject, format!("could not register safekeeper {}: {e}; retrying next round", node.id)),
            }
        }
    }

    async fn ensure_branches(&self, kube: &KubeStore, storcon: &StorageController<'_>, memory: &mut Memory) {
        let mut branches = match kube.branches().await {
            Ok(branches) => branches,
            Err(e) => return memory.say("branches", format!("could not list the branches: {e}")),
        };
        // Fresh timelines before branched ones: a child's parent is usually another branch.
        branches.sort_by_key(|branch| branch.spec.as_ref().is_ok_and(|spec| spec.parent_timeline_id.is_some()));
        // Tenants known to exist this round: branches of one tenant ask once.
        let mut tenants = BTreeSet::new();
        // Each branch's endpoints, grouped once per round (not once per branch).
        let mut endpoints: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (id, endpoint) in &self.state.lock().await.endpoints {
            endpoints.entry(endpoint.branch_id.clone()).or_default().push(id.clone());
        }
        for branch in branches {
            let served = endpoints.get(&branch.name).map(Vec::as_slice).unwrap_or_default();
            let status = &branch.status;
            if status.phase.as_deref() == Some(phase::READY)
                && status.observed_generation == Some(branch.generation)
                && ready_condition(&branch).is_some()
            {
                self.attach_computes(&branch.name, branch.generation, served, memory).await;
                continue;
            }
            let outcome = match &branch.spec {
                Ok(spec) => self.ensure_timeline(storcon, spec, &mut tenants).await,
                Err(e) => Outcome::Failed(format!("NeonBranch {} cannot be read: {e}; fix its spec", branch.name)),
            };
            let subject = format!("branch {}", branch.name);
            self.metrics.branch_outcomes.get_or_create(&super::metrics::OutcomeLabels { phase: outcome.phase() }).inc();
            if !reported(&branch, &outcome) {
                let status = status_of(&branch, &outcome);
                if let Err(e) = kube.patch_branch_status(&branch.name, status).await {
                    memory.say(&subject, format!("branch {}: {e}", branch.name));
                    continue;
                }
            }
            match &outcome {
                Outcome::Ready => {
                    let Ok(spec) = &branch.spec else { continue };
                    memory.say(
                        &subject,
                        format!(
                            "branch {} ready (generation {}): tenant {}, timeline {}",
                            branch.name, branch.generation, spec.tenant_id, spec.timeline_id
                        ),
                    );
                    self.attach_computes(&branch.name, branch.generation, served, memory).await;
                }
                Outcome::Retry(message) => memory.say(&subject, format!("branch {} pending: {message}", branch.name)),
                Outcome::Failed(message) => memory.say(&subject, format!("branch {} failed: {message}", branch.name)),
            }
        }
    }

    /// Creates the branch's tenant unless it exists, then its timeline (idempotent).
    async fn ensure_timeline(&self, storcon: &StorageController<'_>, spec: &BranchSpec, tenants: &mut BTreeSet<String>) -> Outcome {
        let (tenant, timeline) = (&spec.tenant_id, &spec.timeline_id);
        if !tenants.contains(tenant) {
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
            tenants.insert(tenant.clone());
        }
        let safekeepers = match storcon.create_timeline(tenant, timeline, spec.pg_version, spec.parent_timeline_id.as_deref()).await {
            Ok(safekeepers) => safekeepers,
            Err(e) => return Outcome::of_error(format!("creating timeline {timeline} of tenant {tenant}"), e),
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

    /// Marks the branch created and pushes the spec to the computes serving it (`served`, its
    /// endpoints) that have not had it for this generation: they waited with an empty one, and
    /// a new generation may have changed roles or databases.
    async fn attach_computes(&self, branch_id: &str, generation: i64, served: &[String], memory: &mut Memory) {
        let endpoints: Vec<String> = served.iter().filter(|id| memory.configured.get(*id) != Some(&generation)).cloned().collect();
        if let Some(branch) = self.state.lock().await.branches.get_mut(branch_id) {
            branch.pending = false;
        }
        if endpoints.is_empty() {
            return;
        }
        let _hook = self.hooks.lock().await;
        match self.reconfigure(&endpoints).await {
            Ok(()) => memory.configured.extend(endpoints.into_iter().map(|id| (id, generation))),
            Err(e) => memory.say(&format!("computes of {branch_id}"), format!("branch {branch_id}: {e}")),
        }
    }

    /// Writes the storage controller's view to the status ConfigMap.
    async fn report(&self, kube: &KubeStore, storcon: &StorageController<'_>, memory: &mut Memory) {
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
        memory.say("nodes", summary);
        let status = StorageStatus {
            checked_at: now_rfc3339(),
            pageservers,
            safekeepers: memory.registered.iter().copied().collect(),
            error,
            unauthenticated: self.keys.verify.is_none(),
        };
        let text = serde_json::to_string_pretty(&status).expect("the status serializes to JSON");
        match kube.write_status(&text).await {
            Ok(()) => memory.say("status", "writing the storage status ConfigMap every round".into()),
            Err(e) => memory.say("status", format!("could not write the storage status: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use hyper::StatusCode;

    use super::*;
    use crate::resources::BranchStatus;

    fn branch(phase: Option<&str>, message: Option<&str>, observed: Option<i64>) -> BranchObject {
        BranchObject {
            name: "main".into(),
            generation: 2,
            spec: Err("unused".into()),
            status: BranchStatus {
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
            },
        }
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
