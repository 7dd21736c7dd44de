//! Scale to zero. The leader asks each active compute's compute_ctl for its activity (`GET
//! /status`, the `last_active` compute_tools/src/monitor.rs keeps) every [`Scaling::poll`]; a
//! compute idle for its endpoint's `suspendTimeoutSeconds` is stopped as Neon's control plane
//! stops one (`POST /terminate`: Postgres shut down and its WAL synced to the safekeepers; on a
//! bare SIGTERM compute_ctl would exit without that) and its Deployment scaled to zero.
//! `wake_compute` on any replica scales it back up and answers once compute_ctl reports it
//! running; until then (at most [`Scaling::wake_timeout`]) the proxy gets the cplane-v1 error it
//! retries. One lock per endpoint makes concurrent wakes one start, and a wake wait for a
//! suspend under way.
//!
//! Nothing here polls Kubernetes: Deployments are read from the watch-fed cache, and a
//! suspended compute costs no call at all.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt as _;
use kube::api::{Patch, PatchParams};
use neonctl_contract::neon::compute::{COMPUTE_RUNNING, ComputeStatusResponse, TERMINATE_IMMEDIATE, TerminateResponse};
use neonctl_contract::resources::endpoint_phase;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::time::Instant;

use super::ControlPlane;
use super::computes::is_running;
use super::kube_store::{FIELD_MANAGER, KubeStore};
use super::store::StoreError;

/// How scale to zero paces itself.
#[derive(Debug, Clone, Copy)]
pub struct Scaling {
    /// How often the leader asks each active compute for its activity.
    pub poll: Duration,
    /// How long `wake_compute` waits for a compute it starts before it answers with an error the
    /// proxy retries: well within the 60 s the proxy gives a control plane request.
    pub wake_timeout: Duration,
    /// How often, at most, an active endpoint's `status.lastActive` is written.
    pub last_active_every: Duration,
}

impl Default for Scaling {
    fn default() -> Self {
        Self { poll: Duration::from_secs(10), wake_timeout: Duration::from_secs(20), last_active_every: Duration::from_secs(60) }
    }
}

/// How long a `POST /terminate` may take: compute_ctl answers once Postgres is down and the
/// safekeepers are synced.
const TERMINATE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a `GET /status` may take.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);
/// At most this many computes asked for their activity at once.
const POLL_CONCURRENCY: usize = 64;

/// Why `wake_compute` could not answer with a running compute.
#[derive(Debug, thiserror::Error)]
pub enum WakeError {
    /// Still starting when the wait ended: the proxy asks again.
    #[error("endpoint {endpoint}'s compute is starting ({waited:.1}s so far); the connection is retried")]
    Starting { endpoint: String, waited: f64 },
    /// It cannot start as things are: what its pod (or compute_ctl) says.
    #[error("endpoint {endpoint}'s compute cannot start: {reason}")]
    CannotStart { endpoint: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The replicas a Deployment asks for (the API server makes a missing one 1).
pub(crate) fn replicas(deployment: &Deployment) -> i32 {
    deployment.spec.as_ref().and_then(|spec| spec.replicas).unwrap_or(1)
}

pub(crate) fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

pub(crate) fn parse_time(text: Option<&str>) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text?, &Rfc3339).ok()
}

/// What compute_ctl says of a compute's activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activity {
    /// Running, with no activity since `since`.
    IdleSince(OffsetDateTime),
    /// Starting, being configured, failed or stopping: not the time to suspend it.
    Busy,
}

impl ControlPlane {
    /// The lock suspends and wakes of `endpoint` take.
    fn scaling_lock(&self, endpoint: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.scaling_locks.lock().expect("scaling locks lock").entry(endpoint.to_string()).or_default().clone()
    }

    /// `GET {compute_ctl}/status`.
    async fn compute_ctl_status(&self, endpoint: &str) -> Result<ComputeStatusResponse, String> {
        let compute = self.addresses.of(endpoint).ok_or_else(|| format!("endpoint {endpoint}'s compute is not running"))?;
        let uri = format!("{}/status", compute.http.trim_end_matches('/'));
        let body = self.compute_ctl_call(hyper::Method::GET, endpoint, &uri, None, STATUS_TIMEOUT).await?;
        serde_json::from_slice(&body).map_err(|e| format!("GET {uri} answered what is not a compute status: {e}"))
    }

    /// How active `endpoint`'s compute is: compute_ctl's `last_active`, or its start if nothing
    /// happened since, or the last connection the proxy asked for, whichever is latest.
    pub(crate) async fn activity(&self, endpoint: &str) -> Result<Activity, String> {
        let status = self.compute_ctl_status(endpoint).await?;
        if status.status != COMPUTE_RUNNING {
            return Ok(Activity::Busy);
        }
        let touched = self.memory.lock().expect("operator memory lock").touched.get(endpoint).copied();
        let since = [parse_time(status.last_active.as_deref()), parse_time(Some(&status.start_time)), touched]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or_else(OffsetDateTime::now_utc);
        Ok(Activity::IdleSince(since))
    }

    /// One round of the leader's watch over activity: every active endpoint with a suspend
    /// timeout is asked, suspended if idle past it, and its `lastActive` written when it moved.
    pub(crate) async fn suspend_idle(&self) {
        let Some(kube) = self.store.kubernetes() else { return };
        let active: Vec<_> = kube
            .cached_endpoints()
            .into_iter()
            .filter(|endpoint| endpoint.metadata.deletion_timestamp.is_none())
            .filter(|endpoint| endpoint.status.as_ref().and_then(|s| s.phase.as_deref()) == Some(endpoint_phase::ACTIVE))
            .collect();
        futures::stream::iter(active)
            .for_each_concurrent(POLL_CONCURRENCY, |endpoint| async move {
                let name = endpoint.name_any();
                let since = match self.activity(&name).await {
                    Ok(Activity::IdleSince(since)) => since,
                    Ok(Activity::Busy) => return,
                    Err(e) => return self.say(&format!("activity {name}"), format!("endpoint {name}: reading its activity: {e}")),
                };
                self.memory.lock().expect("operator memory lock").said.remove(&format!("activity {name}"));
                let idle = OffsetDateTime::now_utc() - since;
                match endpoint.spec.suspend_timeout() {
                    Some(timeout) if idle >= timeout => {
                        let why = format!("idle since {} (timeout {}s)", rfc3339(since), timeout.as_secs());
                        if let Err(e) = self.suspend(kube, &name, &why, Some(timeout)).await {
                            self.say(&format!("endpoint {name}"), format!("endpoint {name}: suspending: {e}"));
                        }
                    }
                    _ => self.show_last_active(kube, &name, endpoint.status.as_ref().and_then(|s| s.last_active.as_deref()), since).await,
                }
            })
            .await;
    }

    /// Writes `since` as the endpoint's `lastActive` if the status shows one older by more than
    /// [`Scaling::last_active_every`].
    async fn show_last_active(&self, kube: &KubeStore, endpoint: &str, shown: Option<&str>, since: OffsetDateTime) {
        self.memory.lock().expect("operator memory lock").last_active.insert(endpoint.to_string(), since);
        if parse_time(shown).is_some_and(|shown| since - shown < self.scaling.last_active_every) {
            return;
        }
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
        let patch = Patch::Merge(json!({"status": {"lastActive": rfc3339(since)}}));
        if let Err(e) = kube.endpoint_api().patch_status(endpoint, &params, &patch).await {
            self.say(&format!("endpoint {endpoint}"), format!("endpoint {endpoint}: writing lastActive: {e}"));
        }
    }

    /// Stops `endpoint`'s compute and scales it to zero, unless it is not running, or (with
    /// `idle_for`) it is no longer idle that long once the lock is held. Whether it did.
    pub(crate) async fn suspend(
        &self,
        kube: &KubeStore,
        endpoint: &str,
        why: &str,
        idle_for: Option<Duration>,
    ) -> Result<bool, StoreError> {
        let lock = self.scaling_lock(endpoint);
        let _held = lock.lock().await;
        let compute = self.topology.compute.name(endpoint);
        let (live, _) = kube.compute_objects(&compute).await?;
        if live.as_ref().is_none_or(|deployment| replicas(deployment) == 0) {
            return Ok(false);
        }
        // A connection may have come while the lock was taken.
        let mut last_active = None;
        match self.activity(endpoint).await {
            Ok(Activity::IdleSince(since)) => last_active = Some(since),
            Ok(Activity::Busy) if idle_for.is_some() => return Ok(false),
            Ok(Activity::Busy) | Err(_) => {}
        }
        if let Some(timeout) = idle_for
            && last_active.is_none_or(|since| OffsetDateTime::now_utc() - since < timeout)
        {
            return Ok(false);
        }
        match self.terminate(endpoint).await {
            Ok(lsn) => {
                tracing::info!("endpoint {endpoint}: Postgres stopped{}", lsn.map(|lsn| format!(" at LSN {lsn}")).unwrap_or_default())
            }
            // Scaling down stops it all the same (compute_ctl's SIGTERM path).
            Err(e) => tracing::info!("endpoint {endpoint}: {e}; scaling to zero all the same"),
        }
        kube.scale(&compute, 0).await?;
        // Until the cache has it, a wake would take the compute for running.
        let settled = Instant::now() + Duration::from_secs(5);
        kube.wait_for_deployment(&compute, |deployment| deployment.is_none_or(|d| replicas(d) == 0), settled).await?;
        {
            let mut memory = self.memory.lock().expect("operator memory lock");
            if let Some(since) = last_active {
                memory.last_active.insert(endpoint.to_string(), since);
            }
            memory.suspended.insert(endpoint.to_string(), why.to_string());
        }
        if let Some(served) = self.state.lock().await.endpoints.get_mut(endpoint) {
            served.stopped = true;
        }
        self.metrics.suspends.inc();
        tracing::info!("endpoint {endpoint}: suspended, {why}");
        Ok(true)
    }

    /// `POST {compute_ctl}/terminate?mode=immediate`: the LSN the safekeepers were synced to.
    async fn terminate(&self, endpoint: &str) -> Result<Option<String>, String> {
        let compute = self.addresses.of(endpoint).ok_or_else(|| format!("endpoint {endpoint}'s compute has no address"))?;
        let uri = format!("{}/terminate?mode={TERMINATE_IMMEDIATE}", compute.http.trim_end_matches('/'));
        let body = self.compute_ctl_call(hyper::Method::POST, endpoint, &uri, None, TERMINATE_TIMEOUT).await?;
        Ok(serde_json::from_slice::<TerminateResponse>(&body).ok().and_then(|answer| answer.lsn))
    }

    /// Scales `endpoint`'s suspended compute up (under its lock); whether it did.
    pub(crate) async fn start_compute(&self, kube: &KubeStore, endpoint: &str) -> Result<bool, StoreError> {
        let lock = self.scaling_lock(endpoint);
        let _held = lock.lock().await;
        self.start_compute_locked(kube, endpoint).await
    }

    async fn start_compute_locked(&self, kube: &KubeStore, endpoint: &str) -> Result<bool, StoreError> {
        let compute = self.topology.compute.name(endpoint);
        let (live, _) = kube.compute_objects(&compute).await?;
        if live.as_ref().is_none_or(|deployment| replicas(deployment) > 0) {
            return Ok(false);
        }
        kube.scale(&compute, 1).await?;
        self.memory.lock().expect("operator memory lock").suspended.remove(endpoint);
        self.metrics.wakes.inc();
        tracing::info!("endpoint {endpoint}: starting its suspended compute");
        Ok(true)
    }

    /// What `wake_compute` needs before it answers: `endpoint`'s compute running, started if it
    /// was suspended, and compute_ctl saying so (its pod is ready before its roles are made).
    pub(crate) async fn ensure_running(&self, endpoint: &str) -> Result<(), WakeError> {
        let Some(kube) = self.store.kubernetes() else { return Ok(()) };
        let now = OffsetDateTime::now_utc();
        self.memory.lock().expect("operator memory lock").touched.insert(endpoint.to_string(), now);
        let compute = self.topology.compute.name(endpoint);
        let running = |deployment: Option<&Deployment>| deployment.is_some_and(|d| replicas(d) > 0 && is_running(d));
        let lock = self.scaling_lock(endpoint);
        // Running, and no suspend under way (its pod still looks ready while Postgres stops).
        if running(kube.compute_objects(&compute).await?.0.as_ref()) && lock.try_lock().is_ok() {
            return Ok(());
        }
        let started = Instant::now();
        let deadline = started + self.scaling.wake_timeout;
        let _held = lock.lock().await;
        // Another wake (holding the lock until compute_ctl ran) may have done it all.
        if running(kube.compute_objects(&compute).await?.0.as_ref()) {
            return Ok(());
        }
        let woke = self.start_compute_locked(kube, endpoint).await?;
        let waited = || started.elapsed().as_secs_f64();
        if kube.wait_for_deployment(&compute, running, deadline).await?.is_none() {
            return Err(match kube.pod_problem(endpoint) {
                Some((_, reason)) => WakeError::CannotStart { endpoint: endpoint.into(), reason },
                None => WakeError::Starting { endpoint: endpoint.into(), waited: waited() },
            });
        }
        loop {
            match self.compute_ctl_status(endpoint).await {
                Ok(status) if status.status == COMPUTE_RUNNING => break,
                Ok(status) if status.status == "failed" => {
                    let reason = format!("compute_ctl failed: {}", status.error.unwrap_or_else(|| "no error given".into()));
                    return Err(WakeError::CannotStart { endpoint: endpoint.into(), reason });
                }
                _ if Instant::now() >= deadline => return Err(WakeError::Starting { endpoint: endpoint.into(), waited: waited() }),
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        if let Some(served) = self.state.lock().await.endpoints.get_mut(endpoint) {
            served.stopped = false;
        }
        if woke {
            self.metrics.wake_seconds.observe(waited());
            tracing::info!("endpoint {endpoint}: woken in {:.2}s", waited());
        }
        Ok(())
    }
}
