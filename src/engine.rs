//! The phase graph and the run loop.
//!
//! ```text
//! build ─► images ─┐
//!                  ├─► push ─► deploy
//! infra ───────────┴───────────┘
//! ```
//! Every phase is plan → apply over the shared state: `plan` reads and returns what `apply`
//! would do; `apply` converges, persisting after each external mutation, so a phase that
//! already finished re-plans to nothing and costs only reads. That is also how a run resumes
//! after any stop: run it again.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::future::BoxFuture;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::calls::Calls;
use crate::config::Config;
use crate::output::{Event, Outcome, PhaseReporter, PlannedAction, Reporter};
pub use crate::phase::PhaseName;
use crate::state::{PhaseRecord, PhaseStatus, State, StateError, StateStore};

/// What a phase would do.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PhasePlan {
    pub actions: Vec<PlannedAction>,
    /// Lookups that could not be made, assumptions, warnings.
    pub notes: Vec<String>,
}

pub trait Phase: Send + Sync {
    fn name(&self) -> PhaseName;
    /// Reads state and the outside world; never mutates anything.
    fn plan<'a>(&'a self, cx: &'a Context) -> BoxFuture<'a, anyhow::Result<PhasePlan>>;
    /// Converges to the plan, persisting state after each mutation.
    fn apply<'a>(&'a self, cx: &'a Context) -> BoxFuture<'a, anyhow::Result<()>>;
}

/// Implements [`Phase`] for a type whose inherent `async fn plan_inner(&self, &Context)` and
/// `async fn apply_inner(&self, &Context)` do the work: the trait's boxed futures are glue.
macro_rules! phase_from_async_fns {
    ($type:ty, $name:expr) => {
        impl $crate::engine::Phase for $type {
            fn name(&self) -> $crate::engine::PhaseName {
                $name
            }
            fn plan<'a>(
                &'a self,
                cx: &'a $crate::engine::Context,
            ) -> futures::future::BoxFuture<'a, anyhow::Result<$crate::engine::PhasePlan>> {
                Box::pin(self.plan_inner(cx))
            }
            fn apply<'a>(&'a self, cx: &'a $crate::engine::Context) -> futures::future::BoxFuture<'a, anyhow::Result<()>> {
                Box::pin(self.apply_inner(cx))
            }
        }
    };
}
pub(crate) use phase_from_async_fns;

/// What every phase gets: config, the shared state, the reporter, the call counter.
pub struct Context {
    pub config: Config,
    state: Mutex<StateStore>,
    pub reporter: Arc<dyn Reporter>,
    pub calls: Arc<Calls>,
    pub cancel: CancellationToken,
    /// `--yes` was given: destructive actions need no prompt.
    pub assume_yes: bool,
}

impl Context {
    pub fn new(config: Config, state: StateStore, reporter: Arc<dyn Reporter>, assume_yes: bool) -> Self {
        Self { config, state: Mutex::new(state), reporter, calls: Arc::default(), cancel: CancellationToken::new(), assume_yes }
    }

    pub fn reporter(&self, phase: PhaseName) -> PhaseReporter {
        PhaseReporter::new(phase, self.reporter.clone())
    }

    /// A copy of the current state.
    pub fn state(&self) -> State {
        self.state.lock().expect("state lock").state().clone()
    }

    /// Changes the state and persists it before returning.
    pub fn update_state<T>(&self, change: impl FnOnce(&mut State) -> T) -> Result<T, StateError> {
        self.state.lock().expect("state lock").update(change)
    }

    /// The directory holding the state file, as an absolute path; phases keep their files
    /// (clones, staged artifacts, logs) beside it.
    pub fn state_dir(&self) -> std::path::PathBuf {
        let dir = self.state.lock().expect("state lock").dir().to_path_buf();
        std::path::absolute(&dir).unwrap_or(dir)
    }

    pub fn into_store(self) -> StateStore {
        self.state.into_inner().expect("state lock")
    }
}

/// How a run ended.
#[derive(Debug, Default)]
pub struct RunReport {
    pub outcomes: BTreeMap<PhaseName, Outcome>,
    pub errors: Vec<(PhaseName, anyhow::Error)>,
    pub interrupted: bool,
}

impl RunReport {
    pub fn ok(&self) -> bool {
        self.errors.is_empty() && !self.interrupted && self.outcomes.values().all(|o| *o == Outcome::Succeeded)
    }
}

/// Plans each phase in dependency order and reports the plans. Phases whose dependencies have
/// not run plan against the current state, which is what `up --plan` shows a newcomer.
pub async fn plan(cx: &Context, phases: &[Arc<dyn Phase>]) -> anyhow::Result<Vec<(PhaseName, PhasePlan)>> {
    let mut plans = Vec::new();
    for phase in phases {
        let plan = phase.plan(cx).await.map_err(|e| e.context(format!("planning {}", phase.name())))?;
        cx.reporter.report(Event::Plan { phase: phase.name(), actions: plan.actions.clone(), notes: plan.notes.clone() });
        plans.push((phase.name(), plan));
    }
    Ok(plans)
}

/// Applies `phases`, each as soon as its dependencies (among `phases`) have succeeded, so that
/// independent branches run at the same time. Every error is collected; a phase whose
/// dependency failed is skipped. When `interrupt` resolves, running phases are stopped, marked
/// interrupted in the state, and the report says so.
pub async fn apply(cx: Arc<Context>, phases: Vec<Arc<dyn Phase>>, interrupt: impl Future<Output = ()>) -> RunReport {
    let requested: BTreeSet<PhaseName> = phases.iter().map(|p| p.name()).collect();
    let mut waiting: Vec<Arc<dyn Phase>> = phases;
    let mut report = RunReport::default();
    let mut running: JoinSet<(PhaseName, f64, anyhow::Result<()>)> = JoinSet::new();
    let mut in_flight: BTreeMap<tokio::task::Id, PhaseName> = BTreeMap::new();
    tokio::pin!(interrupt);

    loop {
        // Skip what can no longer run, start what can.
        loop {
            let blocked = waiting.iter().position(|p| {
                p.name()
                    .deps()
                    .iter()
                    .any(|d| requested.contains(d) && matches!(report.outcomes.get(d), Some(o) if *o != Outcome::Succeeded))
            });
            let Some(index) = blocked else { break };
            let phase = waiting.remove(index);
            report.outcomes.insert(phase.name(), Outcome::Skipped);
            cx.reporter.report(Event::PhaseFinished { phase: phase.name(), outcome: Outcome::Skipped, seconds: 0.0 });
        }
        let (ready, rest): (Vec<_>, Vec<_>) = waiting
            .into_iter()
            .partition(|p| p.name().deps().iter().all(|d| !requested.contains(d) || report.outcomes.get(d) == Some(&Outcome::Succeeded)));
        waiting = rest;
        for phase in ready {
            let name = phase.name();
            if let Err(e) = record(&cx, name, PhaseStatus::Running, None) {
                report.outcomes.insert(name, Outcome::Failed);
                report.errors.push((name, e.into()));
                continue;
            }
            cx.reporter.report(Event::PhaseStarted { phase: name });
            let cx = cx.clone();
            let task = running.spawn(async move {
                let started = Instant::now();
                let result = phase.apply(&cx).await;
                (name, started.elapsed().as_secs_f64(), result)
            });
            in_flight.insert(task.id(), name);
        }
        if running.is_empty() {
            break;
        }

        tokio::select! {
            joined = running.join_next_with_id() => {
                let Some(joined) = joined else { continue };
                // A panicking phase must not take the others down with it.
                let (name, seconds, result) = match joined {
                    Ok((id, done)) => {
                        in_flight.remove(&id);
                        done
                    }
                    Err(panic) => {
                        let name = in_flight.remove(&panic.id()).expect("every task is in flight");
                        (name, 0.0, Err(anyhow::anyhow!("{name} panicked: {panic}")))
                    }
                };
                let outcome = match result {
                    Ok(()) => {
                        let _ = record(&cx, name, PhaseStatus::Succeeded, None).map_err(|e| report.errors.push((name, e.into())));
                        Outcome::Succeeded
                    }
                    Err(error) => {
                        let _ = record(&cx, name, PhaseStatus::Failed, Some(format!("{error:#}")));
                        report.errors.push((name, error));
                        Outcome::Failed
                    }
                };
                report.outcomes.insert(name, outcome);
                cx.reporter.report(Event::PhaseFinished { phase: name, outcome, seconds });
            }
            () = &mut interrupt => {
                cx.cancel.cancel();
                running.abort_all();
                while running.join_next().await.is_some() {}
                for name in std::mem::take(&mut in_flight).into_values() {
                    let _ = record(&cx, name, PhaseStatus::Interrupted, None);
                    report.outcomes.insert(name, Outcome::Interrupted);
                    cx.reporter.report(Event::PhaseFinished { phase: name, outcome: Outcome::Interrupted, seconds: 0.0 });
                }
                report.interrupted = true;
                break;
            }
        }
    }
    report
}

fn record(cx: &Context, phase: PhaseName, status: PhaseStatus, error: Option<String>) -> Result<(), StateError> {
    let now = now_rfc3339();
    cx.update_state(|s| {
        let started_at = match status {
            PhaseStatus::Running => now.clone(),
            _ => s.phases.get(&phase).map(|r| r.started_at.clone()).unwrap_or_else(|| now.clone()),
        };
        let finished_at = (status != PhaseStatus::Running).then(|| now.clone());
        s.phases.insert(phase, PhaseRecord { status, started_at, finished_at, error });
    })
}

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).expect("UTC time formats")
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::output::{Recorder, Verb};

    type Spans = Arc<Mutex<Vec<(PhaseName, Instant, Instant)>>>;

    /// A phase with `items` units of work. Work done is remembered (as a real phase records
    /// created resources in state) so that a re-run only does what is left.
    struct Fake {
        name: PhaseName,
        items: usize,
        delay: Duration,
        fail_at: Option<usize>,
        done: Arc<Mutex<BTreeSet<usize>>>,
        applied: AtomicUsize,
        spans: Spans,
    }

    impl Fake {
        fn new(name: PhaseName, spans: &Spans) -> Self {
            Self {
                name,
                items: 3,
                delay: Duration::from_millis(1),
                fail_at: None,
                done: Default::default(),
                applied: AtomicUsize::new(0),
                spans: spans.clone(),
            }
        }
    }

    impl Phase for Fake {
        fn name(&self) -> PhaseName {
            self.name
        }
        fn plan<'a>(&'a self, _cx: &'a Context) -> BoxFuture<'a, anyhow::Result<PhasePlan>> {
            Box::pin(async move {
                let done = self.done.lock().unwrap();
                let actions =
                    (0..self.items).filter(|i| !done.contains(i)).map(|i| PlannedAction::new(Verb::Create, format!("item {i}"))).collect();
                Ok(PhasePlan { actions, notes: vec![] })
            })
        }
        fn apply<'a>(&'a self, cx: &'a Context) -> BoxFuture<'a, anyhow::Result<()>> {
            Box::pin(async move {
                let start = Instant::now();
                for i in 0..self.items {
                    if self.done.lock().unwrap().contains(&i) {
                        continue;
                    }
                    tokio::time::sleep(self.delay).await;
                    if self.fail_at == Some(i) {
                        anyhow::bail!("{} failed at item {i}", self.name);
                    }
                    self.applied.fetch_add(1, Ordering::SeqCst);
                    self.done.lock().unwrap().insert(i);
                    cx.reporter(self.name).info(format!("item {i}"));
                }
                self.spans.lock().unwrap().push((self.name, start, Instant::now()));
                Ok(())
            })
        }
    }

    fn context(dir: &std::path::Path) -> (Arc<Context>, Arc<Recorder>) {
        let recorder = Arc::new(Recorder::default());
        let store = StateStore::open(dir, "test").unwrap();
        (Arc::new(Context::new(Config::default(), store, recorder.clone(), false)), recorder)
    }

    fn never() -> impl Future<Output = ()> {
        futures::future::pending()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn independent_phases_overlap_and_dependents_wait() {
        let dir = tempfile::tempdir().unwrap();
        let (cx, _) = context(dir.path());
        let spans: Spans = Arc::default();
        let slow = |name| Arc::new(Fake { delay: Duration::from_millis(100), ..Fake::new(name, &spans) }) as Arc<dyn Phase>;
        let phases = vec![slow(PhaseName::Build), slow(PhaseName::Infra), slow(PhaseName::Images)];
        let report = apply(cx.clone(), phases, never()).await;
        assert!(report.ok(), "{:?}", report.errors);

        let spans = spans.lock().unwrap().clone();
        let span = |n| spans.iter().find(|s| s.0 == n).map(|s| (s.1, s.2)).unwrap();
        let (build, infra, images) = (span(PhaseName::Build), span(PhaseName::Infra), span(PhaseName::Images));
        assert!(build.0 < infra.1 && infra.0 < build.1, "build and infra must overlap");
        assert!(images.0 >= build.1, "images must start after build ends");
        let state = cx.state();
        assert!(state.phases.values().all(|r| r.status == PhaseStatus::Succeeded));
    }

    #[tokio::test]
    async fn every_error_is_collected_and_dependents_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let (cx, recorder) = context(dir.path());
        let spans: Spans = Arc::default();
        let phases: Vec<Arc<dyn Phase>> = vec![
            Arc::new(Fake { fail_at: Some(1), ..Fake::new(PhaseName::Build, &spans) }),
            Arc::new(Fake { fail_at: Some(0), ..Fake::new(PhaseName::Infra, &spans) }),
            Arc::new(Fake::new(PhaseName::Images, &spans)),
            Arc::new(Fake::new(PhaseName::Push, &spans)),
        ];
        let report = apply(cx.clone(), phases, never()).await;
        let failed: BTreeSet<_> = report.errors.iter().map(|(n, _)| *n).collect();
        assert_eq!(failed, BTreeSet::from([PhaseName::Build, PhaseName::Infra]));
        assert_eq!(report.outcomes[&PhaseName::Images], Outcome::Skipped);
        assert_eq!(report.outcomes[&PhaseName::Push], Outcome::Skipped);
        let state = cx.state();
        assert_eq!(state.phases[&PhaseName::Build].status, PhaseStatus::Failed);
        assert!(state.phases[&PhaseName::Build].error.as_deref().unwrap().contains("failed at item 1"));
        assert!(!state.phases.contains_key(&PhaseName::Images));
        let skipped = recorder.events().into_iter().filter(|e| matches!(e, Event::PhaseFinished { outcome: Outcome::Skipped, .. })).count();
        assert_eq!(skipped, 2);
    }

    #[tokio::test]
    async fn a_rerun_resumes_after_a_failure_without_redoing_work() {
        let dir = tempfile::tempdir().unwrap();
        let spans: Spans = Arc::default();
        let build = Arc::new(Fake { items: 4, fail_at: Some(2), ..Fake::new(PhaseName::Build, &spans) });
        let images = Arc::new(Fake::new(PhaseName::Images, &spans));
        {
            let (cx, _) = context(dir.path());
            let report = apply(cx, vec![build.clone() as Arc<dyn Phase>, images.clone()], never()).await;
            assert!(!report.ok());
        }
        assert_eq!(build.applied.load(Ordering::SeqCst), 2);

        // The failure is fixed; the second run does the two remaining items and then images.
        let build = Arc::new(Fake {
            fail_at: None,
            applied: AtomicUsize::new(0),
            done: build.done.clone(),
            items: 4,
            ..Fake::new(PhaseName::Build, &spans)
        });
        let (cx, _) = context(dir.path());
        assert_eq!(build.plan(&cx).await.unwrap().actions.len(), 2);
        let report = apply(cx.clone(), vec![build.clone() as Arc<dyn Phase>, images.clone()], never()).await;
        assert!(report.ok(), "{:?}", report.errors);
        assert_eq!(build.applied.load(Ordering::SeqCst), 2);
        assert_eq!(images.applied.load(Ordering::SeqCst), 3);

        // Converged: a third run plans nothing.
        assert!(build.plan(&cx).await.unwrap().actions.is_empty());
        assert!(images.plan(&cx).await.unwrap().actions.is_empty());
    }

    #[tokio::test]
    async fn an_interrupt_stops_running_phases_and_records_it() {
        let dir = tempfile::tempdir().unwrap();
        let (cx, _) = context(dir.path());
        let spans: Spans = Arc::default();
        let slow = Arc::new(Fake { delay: Duration::from_secs(60), ..Fake::new(PhaseName::Infra, &spans) });
        let report = apply(cx.clone(), vec![slow as Arc<dyn Phase>], tokio::time::sleep(Duration::from_millis(50))).await;
        assert!(report.interrupted);
        assert!(cx.cancel.is_cancelled());
        assert_eq!(report.outcomes[&PhaseName::Infra], Outcome::Interrupted);
        assert_eq!(crate::state::read(dir.path()).unwrap().phases[&PhaseName::Infra].status, PhaseStatus::Interrupted);
    }

    #[tokio::test]
    async fn plans_are_reported_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (cx, recorder) = context(dir.path());
        let spans: Spans = Arc::default();
        let phases: Vec<Arc<dyn Phase>> =
            vec![Arc::new(Fake::new(PhaseName::Build, &spans)), Arc::new(Fake::new(PhaseName::Infra, &spans))];
        let plans = plan(&cx, &phases).await.unwrap();
        assert_eq!(plans.len(), 2);
        assert_eq!(recorder.events().len(), 2);
        assert!(cx.state().phases.is_empty(), "planning records nothing");
    }
}
