//! Everything the user sees goes through here. Phases emit [`Event`]s to a [`Reporter`]; the
//! [`Printer`] renders them as progress bars (human), one line per event (plain) or NDJSON (json).
//!
//! Streams: progress and logs go to stderr, results (plans, tables, the json event stream) to
//! stdout, so `neonctl-aws up --plan > plan.txt` and `... --output json | jq` both work.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use console::style;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::calls::CallCount;
use crate::phase::PhaseName;

/// How events are shown: `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputMode {
    /// human on a terminal, plain otherwise (and whenever CI is set)
    Auto,
    Human,
    Plain,
    Json,
}

/// One thing that happened, in the shape the json output prints it.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    PhaseStarted { phase: PhaseName },
    PhaseFinished { phase: PhaseName, outcome: Outcome, seconds: f64 },
    StepStarted { phase: PhaseName, step: String },
    StepProgress { phase: PhaseName, step: String, current: u64, total: Option<u64>, unit: Unit },
    StepFinished { phase: PhaseName, step: String, ok: bool },
    Message { phase: Option<PhaseName>, level: Level, text: String },
    Plan { phase: PhaseName, actions: Vec<PlannedAction>, notes: Vec<String> },
    Summary { ok: bool, seconds: f64, calls: BTreeMap<String, CallCount> },
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    Failed,
    /// Not started because a phase it depends on failed.
    Skipped,
    Interrupted,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Items,
    Bytes,
}

/// What a phase would do, as printed by `--plan`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PlannedAction {
    pub verb: Verb,
    /// What it acts on, e.g. `vpc neon-vpc` or `image pageserver`.
    pub target: String,
    /// Anything worth knowing: why, what it costs, which existing id it adopts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl PlannedAction {
    pub fn new(verb: Verb, target: impl Into<String>) -> Self {
        Self { verb, target: target.into(), detail: None }
    }
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Verb {
    Create,
    Adopt,
    Update,
    Delete,
    Run,
    Wait,
    /// Cannot be done in place: apply refuses, and the detail says the way out.
    Refuse,
}

impl Verb {
    fn symbol(self) -> &'static str {
        match self {
            Verb::Create => "+",
            Verb::Adopt => "=",
            Verb::Update => "~",
            Verb::Delete => "-",
            Verb::Run => ">",
            Verb::Wait => "…",
            Verb::Refuse => "!",
        }
    }
}

/// Where phases send events. Implemented by [`Printer`] and by test recorders.
pub trait Reporter: Send + Sync {
    fn report(&self, event: Event);
}

/// A phase's handle on the reporter: fills in the phase name and keeps call sites short.
#[derive(Clone)]
pub struct PhaseReporter {
    pub phase: PhaseName,
    inner: Arc<dyn Reporter>,
}

impl PhaseReporter {
    pub fn new(phase: PhaseName, inner: Arc<dyn Reporter>) -> Self {
        Self { phase, inner }
    }
    pub fn step(&self, step: impl Into<String>) -> Step {
        let step = step.into();
        self.inner.report(Event::StepStarted { phase: self.phase, step: step.clone() });
        Step { reporter: self.clone(), step, done: false }
    }
    pub fn message(&self, level: Level, text: impl Into<String>) {
        self.inner.report(Event::Message { phase: Some(self.phase), level, text: text.into() });
    }
    pub fn info(&self, text: impl Into<String>) {
        self.message(Level::Info, text)
    }
    pub fn warn(&self, text: impl Into<String>) {
        self.message(Level::Warn, text)
    }
    pub fn debug(&self, text: impl Into<String>) {
        self.message(Level::Debug, text)
    }
}

/// A running step; finishes as failed when dropped without [`Step::finish`].
pub struct Step {
    reporter: PhaseReporter,
    step: String,
    done: bool,
}

impl Step {
    pub fn progress(&self, current: u64, total: Option<u64>, unit: Unit) {
        self.reporter.inner.report(Event::StepProgress { phase: self.reporter.phase, step: self.step.clone(), current, total, unit });
    }
    pub fn finish(mut self) {
        self.end(true);
    }
    fn end(&mut self, ok: bool) {
        if !self.done {
            self.done = true;
            self.reporter.inner.report(Event::StepFinished { phase: self.reporter.phase, step: self.step.clone(), ok });
        }
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        self.end(false);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Human,
    Plain,
    Json,
}

/// Renders events and results for one run.
pub struct Printer {
    style: Style,
    verbose: u8,
    quiet: bool,
    interactive: bool,
    bars: Option<Bars>,
}

struct Bars {
    multi: MultiProgress,
    running: Mutex<BTreeMap<(PhaseName, String), ProgressBar>>,
}

impl Printer {
    pub fn new(mode: OutputMode, verbose: u8, quiet: bool) -> Self {
        let stderr_tty = std::io::stderr().is_terminal();
        let ci = std::env::var_os("CI").is_some();
        let style = match mode {
            OutputMode::Json => Style::Json,
            OutputMode::Plain => Style::Plain,
            OutputMode::Human => Style::Human,
            OutputMode::Auto if stderr_tty && !ci => Style::Human,
            OutputMode::Auto => Style::Plain,
        };
        if std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()) || style != Style::Human {
            console::set_colors_enabled(false);
            console::set_colors_enabled_stderr(false);
        }
        // Bars interleave badly with debug logs, so -v switches to plain lines (as uv does).
        let bars = (style == Style::Human && stderr_tty && verbose == 0 && !quiet).then(|| Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10)),
            running: Mutex::new(BTreeMap::new()),
        });
        Self { style, verbose, quiet, interactive: std::io::stdin().is_terminal(), bars }
    }

    /// A printer for tests: no terminal, fixed style.
    pub fn for_style(style: Style) -> Self {
        Self { style, verbose: 0, quiet: false, interactive: false, bars: None }
    }

    pub fn style(&self) -> Style {
        self.style
    }

    /// Asks a yes/no question on the terminal. Without a TTY it refuses, naming the flag.
    pub fn confirm(&self, question: &str, assume_yes: bool) -> Result<bool, ConfirmError> {
        if assume_yes {
            return Ok(true);
        }
        if !self.interactive || self.style == Style::Json {
            return Err(ConfirmError::NoTerminal(question.to_string()));
        }
        let ask = || {
            eprint!("{question} [y/N] ");
            let _ = std::io::stderr().flush();
            let mut answer = String::new();
            std::io::stdin().read_line(&mut answer).map(|_| answer)
        };
        let answer = match &self.bars {
            Some(bars) => bars.multi.suspend(ask),
            None => ask(),
        }
        .map_err(|e| ConfirmError::Io(e.to_string()))?;
        Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
    }

    /// Prints a result table (prereqs, status). In json mode `json` is printed instead.
    pub fn table(&self, title: &str, table: &Table, json: &impl Serialize) {
        if self.style == Style::Json {
            self.stdout_line(&serde_json::json!({"event": "result", "kind": title, "data": json}).to_string());
            return;
        }
        self.stdout_line(&table.render());
    }

    /// One line of text on stdout (a final result such as a connection string).
    pub fn result_line(&self, text: &str) {
        if self.style == Style::Json {
            self.stdout_line(&serde_json::json!({"event": "result", "text": text}).to_string());
        } else {
            self.stdout_line(text);
        }
    }

    pub fn error(&self, err: &anyhow::Error) {
        if self.style == Style::Json {
            let chain: Vec<String> = err.chain().map(|e| e.to_string()).collect();
            self.stdout_line(&serde_json::json!({"event": "error", "message": err.to_string(), "chain": chain}).to_string());
            return;
        }
        let mut text = format!("{} {err}", style("error:").red().bold());
        for cause in err.chain().skip(1) {
            text.push_str(&format!("\n  {} {cause}", style("caused by:").dim()));
        }
        self.stderr_line(&text);
    }

    fn stdout_line(&self, text: &str) {
        let write = || {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{text}");
            let _ = out.flush();
        };
        match &self.bars {
            Some(bars) => bars.multi.suspend(write),
            None => write(),
        }
    }

    fn stderr_line(&self, text: &str) {
        match &self.bars {
            Some(bars) => {
                let _ = bars.multi.println(text);
            }
            None => eprintln!("{text}"),
        }
    }

    fn render_plain(&self, event: &Event) -> Option<String> {
        let tag = |phase: &PhaseName| format!("{:<8}", phase.as_str());
        match event {
            Event::PhaseStarted { phase } => Some(format!("{} started", tag(phase))),
            Event::PhaseFinished { phase, outcome, seconds } => {
                let word = match outcome {
                    Outcome::Succeeded => style("done").green().to_string(),
                    Outcome::Failed => style("FAILED").red().bold().to_string(),
                    Outcome::Skipped => style("skipped").yellow().to_string(),
                    Outcome::Interrupted => style("interrupted").yellow().to_string(),
                };
                Some(format!("{} {word} ({seconds:.1}s)", tag(phase)))
            }
            Event::StepStarted { phase, step } => Some(format!("{} > {step}", tag(phase))),
            Event::StepProgress { phase, step, current, total, unit } => {
                // Plain mode prints progress only at coarse points to keep CI logs short.
                let total = (*total)?;
                let pct = current.saturating_mul(100).checked_div(total).unwrap_or(100);
                (*current == total || pct % 25 == 0 && self.verbose > 0)
                    .then(|| format!("{} . {step}: {}/{}", tag(phase), fmt_amount(*current, *unit), fmt_amount(total, *unit)))
            }
            Event::StepFinished { phase, step, ok } => {
                let mark = if *ok { style("ok").green() } else { style("failed").red() };
                Some(format!("{} {mark} {step}", tag(phase)))
            }
            Event::Message { phase, level, text } => {
                if *level == Level::Debug && self.verbose == 0 {
                    return None;
                }
                let who = phase.map(|p| tag(&p)).unwrap_or_else(|| format!("{:<8}", "-"));
                let label = match level {
                    Level::Debug => style("debug:").dim().to_string(),
                    Level::Info => String::new(),
                    Level::Warn => style("warning:").yellow().bold().to_string(),
                    Level::Error => style("error:").red().bold().to_string(),
                };
                Some(format!("{who} {label}{}{text}", if label.is_empty() { "" } else { " " }))
            }
            Event::Plan { .. } | Event::Summary { .. } => None,
        }
    }
}

impl Reporter for Printer {
    fn report(&self, event: Event) {
        if self.style == Style::Json {
            if matches!(event, Event::Message { level: Level::Debug, .. }) && self.verbose == 0 {
                return;
            }
            self.stdout_line(&serde_json::to_string(&event).expect("events serialize"));
            return;
        }
        match &event {
            Event::Plan { phase, actions, notes } => self.stdout_line(&render_plan(*phase, actions, notes)),
            Event::Summary { ok, seconds, calls } => {
                if !self.quiet {
                    self.stderr_line(&render_summary(*ok, *seconds, calls));
                }
            }
            _ if self.quiet => {
                if let Event::Message { level: Level::Error | Level::Warn, .. } = &event {
                    self.stderr_line(&self.render_plain(&event).unwrap_or_default());
                }
            }
            _ => match &self.bars {
                Some(bars) => bars.render(&event, self),
                None => {
                    if let Some(line) = self.render_plain(&event) {
                        self.stderr_line(&line);
                    }
                }
            },
        }
    }
}

impl Bars {
    fn render(&self, event: &Event, printer: &Printer) {
        let mut running = self.running.lock().expect("progress lock");
        match event {
            Event::StepStarted { phase, step } => {
                let bar = self.multi.add(ProgressBar::new_spinner());
                bar.set_style(ProgressStyle::with_template("{spinner:.cyan} {prefix:.bold} {msg} {elapsed:.dim}").expect("template"));
                bar.set_prefix(phase.as_str());
                bar.set_message(step.clone());
                bar.enable_steady_tick(Duration::from_millis(100));
                running.insert((*phase, step.clone()), bar);
            }
            Event::StepProgress { phase, step, current, total: Some(total), unit } => {
                if let Some(bar) = running.get(&(*phase, step.clone())) {
                    if bar.length() != Some(*total) {
                        let template = match unit {
                            Unit::Bytes => "{spinner:.cyan} {prefix:.bold} {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                            Unit::Items => "{spinner:.cyan} {prefix:.bold} {msg} [{bar:30}] {pos}/{len}",
                        };
                        bar.set_style(ProgressStyle::with_template(template).expect("template").progress_chars("=> "));
                        bar.set_length(*total);
                    }
                    bar.set_position(*current);
                }
            }
            Event::StepFinished { phase, step, .. } => {
                if let Some(bar) = running.remove(&(*phase, step.clone())) {
                    bar.finish_and_clear();
                }
                if let Some(line) = printer.render_plain(event) {
                    let _ = self.multi.println(line);
                }
            }
            _ => {
                if let Some(line) = printer.render_plain(event) {
                    let _ = self.multi.println(line);
                }
            }
        }
    }
}

fn fmt_amount(n: u64, unit: Unit) -> String {
    match unit {
        Unit::Items => n.to_string(),
        Unit::Bytes => indicatif::HumanBytes(n).to_string(),
    }
}

/// The text `--plan` prints for one phase.
pub fn render_plan(phase: PhaseName, actions: &[PlannedAction], notes: &[String]) -> String {
    let mut out = format!("{}: ", style(phase.as_str()).bold());
    if actions.is_empty() {
        out.push_str("nothing to do");
    } else {
        out.push_str(&format!("{} action{}", actions.len(), if actions.len() == 1 { "" } else { "s" }));
    }
    for action in actions {
        out.push_str(&format!("\n  {} {:<7} {}", action.verb.symbol(), format!("{:?}", action.verb).to_lowercase(), action.target));
        if let Some(detail) = &action.detail {
            out.push_str(&format!("  ({detail})"));
        }
    }
    for note in notes {
        out.push_str(&format!("\n  note: {note}"));
    }
    out
}

fn render_summary(ok: bool, seconds: f64, calls: &BTreeMap<String, CallCount>) -> String {
    let head = if ok { style("finished").green().bold() } else { style("failed").red().bold() };
    let mut out = format!("{head} in {seconds:.1}s");
    if !calls.is_empty() {
        let parts: Vec<String> = calls.iter().map(|(service, c)| format!("{service} {} read/{} mutating", c.read, c.mutating)).collect();
        out.push_str(&format!("; external calls: {}", parts.join(", ")));
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum ConfirmError {
    #[error("{0} — no terminal to ask on; re-run with --yes to confirm")]
    NoTerminal(String),
    #[error("reading the answer from the terminal: {0}")]
    Io(String),
}

/// A plain-text table with aligned columns.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Self { headers: headers.iter().map(|h| h.to_string()).collect(), rows: Vec::new() }
    }
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }
    pub fn render(&self) -> String {
        let width = |i: usize| {
            std::iter::once(&self.headers[i])
                .chain(self.rows.iter().filter_map(|r| r.get(i)))
                .map(|c| console::measure_text_width(c))
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..self.headers.len()).map(width).collect();
        let line = |cells: &[String]| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c}{}", " ".repeat(w.saturating_sub(console::measure_text_width(c)))))
                .collect();
            padded.join("  ").trim_end().to_string()
        };
        let mut out = vec![line(&self.headers)];
        out.extend(self.rows.iter().map(|r| line(r)));
        out.join("\n")
    }
}

/// A reporter that keeps every event, for tests.
#[derive(Default)]
pub struct Recorder(pub Mutex<Vec<Event>>);

impl Reporter for Recorder {
    fn report(&self, event: Event) {
        self.0.lock().expect("recorder lock").push(event);
    }
}

impl Recorder {
    pub fn events(&self) -> Vec<Event> {
        self.0.lock().expect("recorder lock").clone()
    }
}
