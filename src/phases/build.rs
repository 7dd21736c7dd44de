//! `build`: Neon's binaries and Postgres v17 from source, staged with a manifest.
//!
//! The source is `--neon-src` / `neon.source.path`, or a clone of `neon.source.git` at
//! `neon.source.rev` in the state directory. Steps (each streamed, all logged to
//! `<state>/logs/build.log`): the Postgres headers of v14–v17 (every storage binary binds to
//! all four), Postgres v17, the neon extension, the walproposer library, then one
//! `cargo build --locked --release` of the six binaries. The results are copied to
//! `<state>/build/` with `manifest.json` (path, sha256, size of each file).
//!
//! A fingerprint of the inputs (commit, a hash of local changes, toolchain, flags) is kept in
//! the state: an unchanged source re-plans to nothing and `build` returns at once.

use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::cli::BuildOptions;
use crate::engine::{Context, PhaseName, PhasePlan};
use crate::output::{PhaseReporter, PlannedAction, Step, Unit, Verb};
use crate::state::{Artifact, BuildRecord};

/// The binaries `cargo build` produces, by cargo binary name.
pub const BINARIES: [&str; 6] = ["pageserver", "safekeeper", "storage_broker", "storage_controller", "proxy", "compute_ctl"];
/// Postgres major versions whose headers the storage binaries need.
pub const PG_VERSIONS: [&str; 4] = ["v14", "v15", "v16", "v17"];
/// The Postgres version that is installed and shipped.
pub const PG_SHIPPED: &str = "v17";
/// Lines of a failed step's output shown in the error.
const TAIL_LINES: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("the Neon source {path} does not exist; pass --neon-src PATH of a Neon checkout, or set neon.source.path")]
    NoSource { path: PathBuf },
    #[error(
        "the Postgres submodules of {src} are not checked out ({}). Run `git -C {src} submodule update \
         --init --recursive --depth 2` and build again",
        missing.join(", ")
    )]
    Submodules { src: PathBuf, missing: Vec<String> },
    #[error(
        "Neon pins Rust {channel} ({src}/rust-toolchain.toml) and it is not installed; installing it failed: \
         {detail}. Install it with `rustup toolchain install {channel}`, or build with an installed toolchain: \
         `neonctl-aws build --toolchain NAME` (installed: {})",
        installed.join(", ")
    )]
    Toolchain { channel: String, src: PathBuf, detail: String, installed: Vec<String> },
    #[error("the toolchain `{name}` given with --toolchain is not installed (installed: {}); run `rustup toolchain install {name}`", installed.join(", "))]
    NoSuchToolchain { name: String, installed: Vec<String> },
    #[error("build step `{step}` failed ({status}) in {dir}; last lines of its output:\n  {}\nfull log: {log}. Fix the cause and run `neonctl-aws build` again", tail.join("\n  "))]
    Step { step: String, status: String, dir: PathBuf, tail: Vec<String>, log: PathBuf },
    #[error("cannot run `{program}` for `{step}`: {detail}; `neonctl-aws prereqs --for build` lists what the build needs")]
    Spawn { step: String, program: String, detail: String },
    #[error("`cargo build` finished but did not report the binary `{binary}`; full log: {log}")]
    NoArtifact { binary: String, log: PathBuf },
    #[error("`make {target}` finished but {path} does not exist; full log: {log}")]
    NoPostgres { target: String, path: PathBuf, log: PathBuf },
    #[error("{action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> BuildError + 'a {
    move |source| BuildError::Io { action, path: path.to_path_buf(), source }
}

pub struct Build {
    pub options: BuildOptions,
}

/// Where the source lives and whether it still has to be cloned.
struct Source {
    dir: PathBuf,
    origin: String,
    /// (url, rev) when the source comes from git.
    git: Option<(String, String)>,
    /// Paths inside `dir` that are outputs, not inputs: build directories, and the state
    /// directory when it lies inside the checkout.
    outputs: Vec<String>,
}

impl Source {
    fn resolve(cx: &Context) -> Result<Self, BuildError> {
        let cfg = &cx.config.neon.source;
        let (dir, origin, git) = match &cfg.path {
            Some(path) => {
                let dir = std::fs::canonicalize(path).map_err(|_| BuildError::NoSource { path: path.clone() })?;
                (dir.clone(), dir.display().to_string(), None)
            }
            None => (cx.state_dir().join("src").join("neon"), cfg.git.clone(), Some((cfg.git.clone(), cfg.rev.clone()))),
        };
        let state_dir = cx.state_dir();
        let state_dir = std::fs::canonicalize(&state_dir).unwrap_or(state_dir);
        let mut outputs: Vec<String> = OUTPUT_DIRS.iter().map(|d| d.to_string()).collect();
        outputs.extend(state_dir.strip_prefix(&dir).ok().map(|rel| rel.display().to_string()));
        Ok(Self { dir, origin, git, outputs })
    }

    fn cloned(&self) -> bool {
        self.dir.join(".git").exists()
    }
}

/// The toolchain the build uses.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Toolchain {
    /// Neon's rust-toolchain.toml pins this channel; rustup picks it up in the source directory.
    Pinned(String),
    /// `--toolchain NAME`: `cargo +NAME`, and RUSTUP_TOOLCHAIN for cargo runs inside make.
    Override(String),
    /// No pin and no override: whatever `cargo` is.
    Default,
}

impl Toolchain {
    fn describe(&self) -> String {
        match self {
            Toolchain::Pinned(c) => format!("pinned:{c}"),
            Toolchain::Override(n) => format!("override:{n}"),
            Toolchain::Default => "default".into(),
        }
    }
}

/// The `channel` of a rust-toolchain.toml (the TOML subset rustup files use).
fn pinned_channel(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        (key.trim() == "channel").then(|| value.trim().trim_matches('"').trim_matches('\'').to_string())
    })
}

/// `rustup toolchain list` lines to names: `1.95.0-x86_64-unknown-linux-gnu (active)` → name.
fn installed_toolchains(list: &str) -> Vec<String> {
    list.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_string).collect()
}

fn is_installed(installed: &[String], channel: &str) -> bool {
    installed.iter().any(|t| t == channel || t.strip_prefix(channel).is_some_and(|rest| rest.starts_with('-')))
}

/// One command of the build.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Command {
    label: String,
    program: String,
    args: Vec<String>,
}

/// The build's commands, in order; also the flags part of the fingerprint.
fn commands(jobs: u32, toolchain: &Toolchain, mold: bool) -> Vec<Command> {
    let make = |target: &str| Command {
        label: format!("make {target}"),
        program: "make".into(),
        args: vec![format!("-j{jobs}"), "-s".into(), "BUILD_TYPE=release".into(), target.into()],
    };
    let mut cargo_args = Vec::new();
    if let Toolchain::Override(name) = toolchain {
        cargo_args.push(format!("+{name}"));
    }
    cargo_args.extend(["build", "--locked", "--release", "--message-format=json-render-diagnostics"].map(String::from));
    cargo_args.push(format!("--jobs={jobs}"));
    if mold {
        // Appended to Neon's own build.rustflags (`--cfg=tokio_unstable`; cargo joins config
        // arrays), where RUSTFLAGS would replace them.
        cargo_args.extend(["--config".to_string(), r#"build.rustflags=["-Clink-arg=-fuse-ld=mold"]"#.to_string()]);
    }
    for bin in BINARIES {
        cargo_args.extend(["--bin".to_string(), bin.to_string()]);
    }
    let shown: Vec<&str> = cargo_args.iter().map(String::as_str).filter(|a| !a.starts_with("--message-format")).collect();
    vec![
        make("postgres-headers"),
        make(&format!("postgres-install-{PG_SHIPPED}")),
        make(&format!("neon-pg-ext-{PG_SHIPPED}")),
        make("walproposer-lib"),
        Command { label: format!("cargo {}", shown.join(" ")), program: "cargo".into(), args: cargo_args },
    ]
}

/// The smaller of the CPU count and GiB of memory / 4 (a Neon link needs about 4 GiB).
pub fn default_jobs(cpus: usize, mem_bytes: u64) -> u32 {
    let by_memory = (mem_bytes / (4 << 30)).max(1);
    (cpus as u64).min(by_memory).max(1) as u32
}

fn memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kib| kib * 1024)
        })
        .unwrap_or(8 << 30)
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// The revision and a hash of the checkout's content identity: the commit plus every local
/// change (tracked diffs and untracked files), or for a plain directory its file list with
/// sizes and modification times. `outputs` (paths relative to `dir`) are not inputs.
fn source_identity(dir: &Path, outputs: &[String]) -> Result<(String, String), BuildError> {
    let mut hash = Sha256::new();
    let Ok(head) = git_output(dir, &["rev-parse", "HEAD"]) else {
        walk_identity(dir, dir, outputs, &mut hash)?;
        return Ok(("unknown".into(), hex::encode(hash.finalize())));
    };
    let head = head.trim().to_string();
    hash.update(head.as_bytes());
    let pathspec: Vec<String> = std::iter::once(".".to_string()).chain(outputs.iter().map(|o| format!(":(exclude){o}"))).collect();
    let git = |args: &[&str]| {
        let args: Vec<&str> = args.iter().copied().chain(["--"]).chain(pathspec.iter().map(String::as_str)).collect();
        git_output(dir, &args).unwrap_or_default()
    };
    let status = git(&["status", "--porcelain", "--untracked-files=all"]);
    if status.trim().is_empty() {
        return Ok((head, hex::encode(hash.finalize())));
    }
    hash.update(status.as_bytes());
    hash.update(git(&["diff", "HEAD", "--binary"]).as_bytes());
    for file in git(&["ls-files", "--others", "--exclude-standard", "-z"]).split('\0').filter(|f| !f.is_empty()) {
        hash.update(file.as_bytes());
        if let Ok((sha, _)) = file_sha256(&dir.join(file)) {
            hash.update(sha.as_bytes());
        }
    }
    Ok((format!("{head}-dirty"), hex::encode(hash.finalize())))
}

/// Directories of a Neon checkout that hold build outputs, not inputs (Neon's .gitignore does
/// not list all of them).
const OUTPUT_DIRS: [&str; 3] = ["target", "pg_install", "build"];

fn walk_identity(root: &Path, dir: &Path, outputs: &[String], hash: &mut Sha256) -> Result<(), BuildError> {
    let mut entries: Vec<_> = std::fs::read_dir(dir).map_err(io("reading", dir))?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let meta = entry.metadata().map_err(io("reading", &path))?;
        let rel = path.strip_prefix(root).unwrap_or(&path).display().to_string();
        if meta.is_dir() {
            if rel != ".git" && !outputs.contains(&rel) {
                walk_identity(root, &path, outputs, hash)?;
            }
        } else {
            let mtime = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).unwrap_or_default();
            hash.update(format!("{rel}\0{}\0{}\n", meta.len(), mtime.as_nanos()).as_bytes());
        }
    }
    Ok(())
}

fn git_output(dir: &Path, args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new("git").arg("-C").arg(dir).args(args).stdin(Stdio::null()).output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn file_sha256(path: &Path) -> Result<(String, u64), BuildError> {
    let mut file = std::fs::File::open(path).map_err(io("reading", path))?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io("reading", path))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hash.update(&buf[..n]);
    }
    Ok((hex::encode(hash.finalize()), size))
}

/// Everything a build depends on, hashed.
fn fingerprint(origin: &str, identity: &str, toolchain: &Toolchain, commands: &[Command]) -> String {
    let mut hash = Sha256::new();
    hash.update(format!("neonctl-aws build v1\n{origin}\n{identity}\n{}\n", toolchain.describe()));
    for c in commands {
        // Parallelism changes how fast, not what is built.
        let args: Vec<&str> = c.args.iter().map(String::as_str).filter(|a| !a.starts_with("-j") && !a.starts_with("--jobs")).collect();
        hash.update(format!("{} {}\n", c.program, args.join(" ")));
    }
    hex::encode(hash.finalize())
}

/// The staged build matches `fingerprint` and its files are still there.
fn is_current(record: Option<&BuildRecord>, fingerprint: &str) -> bool {
    record.is_some_and(|r| {
        r.fingerprint == fingerprint
            && r.pg_install.is_dir()
            && r.manifest.is_file()
            && r.artifacts.values().all(|a| std::fs::metadata(&a.path).is_ok_and(|m| m.len() == a.size))
    })
}

impl Build {
    fn jobs(&self) -> u32 {
        self.options
            .jobs
            .unwrap_or_else(|| default_jobs(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1), memory_bytes()))
    }

    /// The toolchain this build would use, without installing anything.
    fn toolchain(&self, src: &Path) -> Toolchain {
        if let Some(name) = &self.options.toolchain {
            return Toolchain::Override(name.clone());
        }
        match std::fs::read_to_string(src.join("rust-toolchain.toml")).ok().and_then(|t| pinned_channel(&t)) {
            Some(channel) => Toolchain::Pinned(channel),
            None => Toolchain::Default,
        }
    }

    /// The toolchain and the commands of a build of `source`.
    fn recipe(&self, source: &Source) -> (Toolchain, Vec<Command>) {
        let toolchain = self.toolchain(&source.dir);
        let commands = commands(self.jobs(), &toolchain, on_path("mold"));
        (toolchain, commands)
    }

    /// What the current inputs hash to, and the revision they are at.
    fn inputs(source: &Source, toolchain: &Toolchain, commands: &[Command]) -> Result<(String, String), BuildError> {
        let (revision, identity) = source_identity(&source.dir, &source.outputs)?;
        let origin = match &source.git {
            Some((url, rev)) => format!("{url}#{rev}"),
            None => source.origin.clone(),
        };
        Ok((fingerprint(&origin, &identity, toolchain, commands), revision))
    }

    async fn plan_inner(&self, cx: &Context) -> anyhow::Result<PhasePlan> {
        crate::platform::check_this_host(&cx.config.cluster.node_instance_type)?;
        let source = Source::resolve(cx)?;
        let mut plan = PhasePlan::default();
        let (toolchain, commands) = self.recipe(&source);
        if let Some((url, rev)) = &source.git
            && !source.cloned()
        {
            plan.actions.push(
                PlannedAction::new(Verb::Run, format!("git clone {url}"))
                    .detail(format!("{rev}, with submodules, into {}", shown(&source.dir))),
            );
        }
        if source.cloned() || source.git.is_none() {
            let (fingerprint, revision) = Self::inputs(&source, &toolchain, &commands)?;
            if is_current(cx.state().build.as_ref(), &fingerprint) {
                return Ok(plan);
            }
            plan.notes.push(format!("source {} at {revision}", source.dir.display()));
        }
        for c in &commands {
            plan.actions.push(PlannedAction::new(Verb::Run, c.label.clone()));
        }
        plan.actions.push(PlannedAction::new(Verb::Create, "staged artifacts").detail(shown(&cx.state_dir().join("build"))));
        if let Toolchain::Override(name) = &toolchain {
            plan.notes.push(format!("building with toolchain {name} instead of the one Neon pins"));
        }
        Ok(plan)
    }

    async fn apply_inner(&self, cx: &Context) -> anyhow::Result<()> {
        crate::platform::check_this_host(&cx.config.cluster.node_instance_type)?;
        let reporter = cx.reporter(PhaseName::Build);
        let source = Source::resolve(cx)?;
        let logs = cx.state_dir().join("logs");
        std::fs::create_dir_all(&logs).map_err(io("creating", &logs))?;
        let log_path = logs.join("build.log");
        let mut log = Log::create(&log_path)?;

        if let Some((url, rev)) = &source.git {
            checkout(&source.dir, url, rev, &reporter, &mut log).await?;
        }
        check_submodules(&source.dir)?;
        let (toolchain, commands) = self.recipe(&source);
        let mut env = ensure_toolchain(&toolchain, &source.dir, &reporter, &mut log).await?;
        // The cargo runs inside make (the neon extension's Rust library) share the limit.
        env.push(("CARGO_BUILD_JOBS".into(), Some(self.jobs().to_string())));

        if let Some(var) = ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS"].into_iter().find(|v| std::env::var_os(v).is_some()) {
            reporter.warn(format!(
                "{var} is set: it replaces Neon's own rustflags (--cfg=tokio_unstable), which the build needs; unset it if the build fails"
            ));
        }
        let (fingerprint, revision) = Self::inputs(&source, &toolchain, &commands)?;
        if is_current(cx.state().build.as_ref(), &fingerprint) {
            reporter.info(format!("up to date: {} at {revision}", source.dir.display()));
            return Ok(());
        }
        let mut executables = BTreeMap::new();
        // cargo announces no total: the locked packages are a close upper bound.
        let packages = std::fs::read_to_string(source.dir.join("Cargo.lock")).map_or(0, |lock| lock.matches("[[package]]").count() as u64);
        for command in &commands {
            let is_cargo = command.program == "cargo";
            let mut compiled = 0u64;
            run_logged(&command.label, &command.program, &command.args, &source.dir, &env, &reporter, &mut log, |line, step| {
                let Some((target, executable)) = cargo_artifact(line).filter(|_| is_cargo) else { return };
                compiled += 1;
                step.progress(compiled, Some(packages.max(compiled)), Unit::Items);
                if let Some(executable) = executable.filter(|_| BINARIES.contains(&target.as_str())) {
                    executables.insert(target, executable);
                }
            })
            .await?;
        }
        let pg_src = source.dir.join("pg_install").join(PG_SHIPPED);
        if !pg_src.join("bin").join("postgres").is_file() {
            return Err(BuildError::NoPostgres {
                target: format!("postgres-install-{PG_SHIPPED}"),
                path: pg_src.join("bin/postgres"),
                log: log_path,
            }
            .into());
        }
        for bin in BINARIES {
            if !executables.contains_key(bin) {
                return Err(BuildError::NoArtifact { binary: bin.into(), log: log_path }.into());
            }
        }

        // The old record goes first: a crash while staging must not leave a record that
        // vouches for half-copied files.
        cx.update_state(|s| s.build = None)?;
        let step = reporter.step("stage artifacts");
        let staged = cx.state_dir().join("build");
        let record =
            stage(&staged, &executables, &pg_src, &source.dir, Manifest::head(&source, &revision, &fingerprint, &toolchain, &commands))?;
        cx.update_state(|s| s.build = Some(record))?;
        step.finish();
        reporter.info(format!("built {} at {revision}; staged in {}", source.dir.display(), staged.display()));
        Ok(())
    }
}

crate::engine::phase_from_async_fns!(Build, PhaseName::Build);

/// `path` relative to the working directory when it is inside it.
fn shown(path: &Path) -> String {
    let relative = std::env::current_dir().ok().and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf));
    relative.unwrap_or_else(|| path.to_path_buf()).display().to_string()
}

fn check_submodules(src: &Path) -> Result<(), BuildError> {
    let missing: Vec<String> = PG_VERSIONS
        .iter()
        .map(|v| format!("vendor/postgres-{v}"))
        .filter(|dir| std::fs::read_dir(src.join(dir)).map_or(true, |mut entries| entries.next().is_none()))
        .collect();
    if missing.is_empty() { Ok(()) } else { Err(BuildError::Submodules { src: src.to_path_buf(), missing }) }
}

/// Checks that the toolchain is there (installing a pinned one with rustup if needed) and
/// returns the environment changes the build commands need.
async fn ensure_toolchain(
    toolchain: &Toolchain,
    src: &Path,
    reporter: &PhaseReporter,
    log: &mut Log,
) -> Result<Vec<(String, Option<String>)>, BuildError> {
    let list = match tokio::process::Command::new("rustup").args(["toolchain", "list"]).output().await {
        Ok(out) if out.status.success() => Some(installed_toolchains(&String::from_utf8_lossy(&out.stdout))),
        _ => None,
    };
    match (toolchain, list) {
        (Toolchain::Override(name), Some(installed)) if !is_installed(&installed, name) => {
            Err(BuildError::NoSuchToolchain { name: name.clone(), installed })
        }
        (Toolchain::Override(name), _) => {
            reporter.warn(format!(
                "building with toolchain {name} (--toolchain) instead of the one Neon pins; the result may differ from Neon's releases"
            ));
            Ok(vec![("RUSTUP_TOOLCHAIN".into(), Some(name.clone()))])
        }
        (Toolchain::Pinned(channel), Some(installed)) if !is_installed(&installed, channel) => {
            let args = ["toolchain".to_string(), "install".into(), channel.clone(), "--profile".into(), "minimal".into()];
            let label = format!("rustup toolchain install {channel}");
            run_logged(&label, "rustup", &args, src, &[], reporter, log, |_, _| {}).await.map_err(|e| BuildError::Toolchain {
                channel: channel.clone(),
                src: src.to_path_buf(),
                detail: match &e {
                    BuildError::Step { tail, .. } => tail.last().cloned().unwrap_or_else(|| "no output".into()),
                    other => other.to_string(),
                },
                installed,
            })?;
            Ok(vec![("RUSTUP_TOOLCHAIN".into(), None)])
        }
        (Toolchain::Pinned(channel), None) => {
            reporter.warn(format!("rustup is not installed: building with the cargo on PATH, not Neon's pinned {channel}"));
            Ok(vec![])
        }
        // The pin in the source directory decides; an inherited override must not.
        (Toolchain::Pinned(_) | Toolchain::Default, _) => Ok(vec![("RUSTUP_TOOLCHAIN".into(), None)]),
    }
}

/// Clones `url` into `dir` if needed and checks out `rev` with submodules.
async fn checkout(dir: &Path, url: &str, rev: &str, reporter: &PhaseReporter, log: &mut Log) -> Result<(), BuildError> {
    let parent = dir.parent().expect("the clone directory has a parent");
    if !dir.join(".git").exists() {
        std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
        let args = ["clone", "--no-checkout", url, &dir.display().to_string()].map(String::from);
        run_logged(&format!("git clone {url}"), "git", &args, parent, &[], reporter, log, |_, _| {}).await?;
    }
    let resolves = |r: &str| git_output(dir, &["rev-parse", "--verify", "--quiet", &format!("{r}^{{commit}}")]).is_ok();
    if !resolves(rev) && !resolves(&format!("origin/{rev}")) {
        let args = ["fetch", "--tags", "origin"].map(String::from);
        run_logged("git fetch", "git", &args, dir, &[], reporter, log, |_, _| {}).await?;
    }
    let target = if resolves(rev) { rev.to_string() } else { format!("origin/{rev}") };
    let args = ["checkout", "--detach", target.as_str()].map(String::from);
    run_logged(&format!("git checkout {rev}"), "git", &args, dir, &[], reporter, log, |_, _| {}).await?;
    let args = ["submodule", "update", "--init", "--recursive", "--depth", "2"].map(String::from);
    run_logged("git submodule update", "git", &args, dir, &[], reporter, log, |_, _| {}).await
}

/// `<state>/logs/build.log`, rewritten by each run.
struct Log {
    path: PathBuf,
    file: std::fs::File,
}

impl Log {
    fn create(path: &Path) -> Result<Self, BuildError> {
        let file = std::fs::File::create(path).map_err(io("creating", path))?;
        Ok(Self { path: path.to_path_buf(), file })
    }

    fn line(&mut self, line: &str) {
        // A full disk shows up in the step's own failure; the log is best effort.
        let _ = writeln!(self.file, "{line}");
    }
}

/// Runs one command in `dir`, streaming stdout and stderr lines into the log and the reporter
/// (debug level) and stdout lines into `on_stdout` (with the step, for progress); fails with
/// the last lines of output.
#[allow(clippy::too_many_arguments)]
async fn run_logged(
    label: &str,
    program: &str,
    args: &[String],
    dir: &Path,
    env: &[(String, Option<String>)],
    reporter: &PhaseReporter,
    log: &mut Log,
    mut on_stdout: impl FnMut(&str, &Step),
) -> Result<(), BuildError> {
    let step = reporter.step(label);
    log.line(&format!("==> {label}\n    ({program} {} in {})", args.join(" "), dir.display()));
    let mut command = tokio::process::Command::new(program);
    command.args(args).current_dir(dir).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    for (key, value) in env {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    let mut child =
        command.spawn().map_err(|e| BuildError::Spawn { step: label.into(), program: program.into(), detail: e.to_string() })?;
    let mut stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut stderr = BufReader::new(child.stderr.take().expect("piped")).lines();
    let mut tail: VecDeque<String> = VecDeque::with_capacity(TAIL_LINES);
    let mut keep = |line: &str, log: &mut Log| {
        log.line(line);
        reporter.debug(line.to_string());
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line.to_string());
    };
    let (mut out_open, mut err_open) = (true, true);
    while out_open || err_open {
        tokio::select! {
            line = stdout.next_line(), if out_open => match line {
                Ok(Some(line)) => {
                    on_stdout(&line, &step);
                    // cargo's json messages are for us; its rendered diagnostics come on stderr.
                    if !line.starts_with('{') {
                        keep(&line, log);
                    }
                }
                _ => out_open = false,
            },
            line = stderr.next_line(), if err_open => match line {
                Ok(Some(line)) => keep(&line, log),
                _ => err_open = false,
            },
        }
    }
    let status =
        child.wait().await.map_err(|e| BuildError::Spawn { step: label.into(), program: program.into(), detail: e.to_string() })?;
    if !status.success() {
        log.line(&format!("<== {label} failed: {status}"));
        return Err(BuildError::Step {
            step: label.into(),
            status: status.to_string(),
            dir: dir.to_path_buf(),
            tail: tail.into(),
            log: log.path.clone(),
        });
    }
    step.finish();
    Ok(())
}

/// A `compiler-artifact` message of `cargo --message-format=json`: the target's name, and its
/// executable if it is a binary.
fn cargo_artifact(line: &str) -> Option<(String, Option<PathBuf>)> {
    let msg: serde_json::Value = serde_json::from_str(line).ok()?;
    if msg["reason"] != "compiler-artifact" {
        return None;
    }
    let name = msg["target"]["name"].as_str()?.to_string();
    let is_bin = msg["target"]["kind"].as_array().is_some_and(|kinds| kinds.iter().any(|k| k == "bin"));
    Some((name, msg["executable"].as_str().filter(|_| is_bin).map(PathBuf::from)))
}

/// `<state>/build/manifest.json`.
#[derive(Debug, Serialize)]
struct Manifest {
    neon_revision: String,
    neon_version: String,
    origin: String,
    fingerprint: String,
    toolchain: String,
    commands: Vec<String>,
    artifacts: BTreeMap<String, Artifact>,
    pg_install: BTreeMap<String, Artifact>,
}

impl Manifest {
    fn head(source: &Source, revision: &str, fingerprint: &str, toolchain: &Toolchain, commands: &[Command]) -> Self {
        let describe = git_output(&source.dir, &["describe", "--tags", "--always", "--dirty"]);
        Self {
            neon_version: describe.map(|d| d.trim().to_string()).unwrap_or_else(|_| revision.into()),
            neon_revision: revision.into(),
            origin: source.origin.clone(),
            fingerprint: fingerprint.into(),
            toolchain: toolchain.describe(),
            commands: commands.iter().map(|c| format!("{} {}", c.program, c.args.join(" "))).collect(),
            artifacts: BTreeMap::new(),
            pg_install: BTreeMap::new(),
        }
    }
}

/// Copies the binaries and the Postgres installation to `staged`, hashing every file.
fn stage(
    staged: &Path,
    executables: &BTreeMap<String, PathBuf>,
    pg_src: &Path,
    source_dir: &Path,
    mut manifest: Manifest,
) -> Result<BuildRecord, BuildError> {
    if staged.exists() {
        std::fs::remove_dir_all(staged).map_err(io("removing", staged))?;
    }
    let bin_dir = staged.join("bin");
    std::fs::create_dir_all(&bin_dir).map_err(io("creating", &bin_dir))?;
    for (name, path) in executables {
        let dest = bin_dir.join(name);
        std::fs::copy(path, &dest).map_err(io("copying", path))?;
        let (sha256, size) = file_sha256(&dest)?;
        manifest.artifacts.insert(name.clone(), Artifact { path: dest, sha256, size });
    }
    let pg_dest = staged.join("pg_install").join(PG_SHIPPED);
    copy_tree(pg_src, &pg_dest, &mut manifest.pg_install, &pg_dest)?;
    let manifest_path = staged.join("manifest.json");
    let text = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
    std::fs::write(&manifest_path, text).map_err(io("writing", &manifest_path))?;
    Ok(BuildRecord {
        fingerprint: manifest.fingerprint,
        source: source_dir.to_path_buf(),
        origin: manifest.origin,
        revision: manifest.neon_revision,
        version: manifest.neon_version,
        toolchain: manifest.toolchain.strip_prefix("override:").map(str::to_string),
        pg_install: pg_dest,
        manifest: manifest_path,
        artifacts: manifest.artifacts,
    })
}

/// Copies a directory tree keeping symlinks and permissions; regular files go into `files`
/// keyed by their path relative to `root`.
fn copy_tree(from: &Path, to: &Path, files: &mut BTreeMap<String, Artifact>, root: &Path) -> Result<(), BuildError> {
    std::fs::create_dir_all(to).map_err(io("creating", to))?;
    for entry in std::fs::read_dir(from).map_err(io("reading", from))?.flatten() {
        let (src, dest) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type().map_err(io("reading", &src))?;
        if kind.is_symlink() {
            let link = std::fs::read_link(&src).map_err(io("reading", &src))?;
            std::os::unix::fs::symlink(&link, &dest).map_err(io("creating", &dest))?;
        } else if kind.is_dir() {
            copy_tree(&src, &dest, files, root)?;
        } else {
            std::fs::copy(&src, &dest).map_err(io("copying", &src))?;
            let (sha256, size) = file_sha256(&dest)?;
            let rel = dest.strip_prefix(root).unwrap_or(&dest).display().to_string();
            files.insert(rel, Artifact { path: dest, sha256, size });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_follow_memory_and_cpus() {
        assert_eq!(default_jobs(2, 24 << 30), 2);
        assert_eq!(default_jobs(16, 16 << 30), 4);
        assert_eq!(default_jobs(8, 2 << 30), 1);
        assert_eq!(default_jobs(0, 64 << 30), 1);
    }

    #[test]
    fn toolchain_files_and_lists_are_read() {
        let file = "[toolchain]\nchannel = \"1.88.0\"\ncomponents = [\"llvm-tools\", \"rustfmt\", \"clippy\"]\n";
        assert_eq!(pinned_channel(file).as_deref(), Some("1.88.0"));
        assert_eq!(pinned_channel("[toolchain]\n"), None);
        let installed = installed_toolchains("stable-x86_64-unknown-linux-gnu (default)\n1.95.0-x86_64-unknown-linux-gnu (active)\n");
        assert!(is_installed(&installed, "1.95.0"));
        assert!(is_installed(&installed, "stable"));
        assert!(!is_installed(&installed, "1.95"));
        assert!(!is_installed(&installed, "1.88.0"));
    }

    #[test]
    fn commands_keep_neon_flags_and_add_mold_and_the_override() {
        let plain = commands(3, &Toolchain::Pinned("1.88.0".into()), false);
        let labels: Vec<&str> = plain.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(labels[..4], ["make postgres-headers", "make postgres-install-v17", "make neon-pg-ext-v17", "make walproposer-lib"]);
        assert_eq!(
            labels[4],
            "cargo build --locked --release --jobs=3 --bin pageserver --bin safekeeper --bin storage_broker --bin storage_controller --bin proxy --bin compute_ctl"
        );
        assert!(plain[0].args.contains(&"-j3".to_string()));
        let fancy = commands(3, &Toolchain::Override("nightly".into()), true);
        assert_eq!(fancy[4].args[0], "+nightly");
        assert!(fancy[4].args.iter().any(|a| a.contains("fuse-ld=mold")));
    }

    #[test]
    fn the_fingerprint_ignores_parallelism_but_not_flags_or_sources() {
        let tc = Toolchain::Default;
        let base = fingerprint("o", "id", &tc, &commands(1, &tc, false));
        assert_eq!(base, fingerprint("o", "id", &tc, &commands(8, &tc, false)));
        assert_ne!(base, fingerprint("o", "id", &tc, &commands(1, &tc, true)));
        assert_ne!(base, fingerprint("o", "id2", &tc, &commands(1, &tc, false)));
        assert_ne!(base, fingerprint("o", "id", &Toolchain::Override("x".into()), &commands(1, &tc, false)));
    }

    #[test]
    fn cargo_artifacts_are_found_in_json_messages() {
        let line = r#"{"reason":"compiler-artifact","target":{"kind":["bin"],"name":"pageserver"},"executable":"/t/release/pageserver"}"#;
        assert_eq!(cargo_artifact(line), Some(("pageserver".into(), Some(PathBuf::from("/t/release/pageserver")))));
        let lib = r#"{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"utils"},"executable":null}"#;
        assert_eq!(cargo_artifact(lib), Some(("utils".into(), None)));
        let done = r#"{"reason":"build-finished","success":true}"#;
        assert_eq!(cargo_artifact(done), None);
        assert_eq!(cargo_artifact("   Compiling utils v0.1.0"), None);
    }

    #[test]
    fn local_changes_change_the_source_identity() {
        let dir = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| {
            let ok = std::process::Command::new("git").arg("-C").arg(dir.path()).args(args).output().unwrap().status.success();
            assert!(ok, "git {args:?}");
        };
        git(&["init", "-q"]);
        std::fs::write(dir.path().join("a"), "1").unwrap();
        git(&["add", "a"]);
        git(&["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "a"]);
        let outputs = vec!["build".to_string(), ".neonctl-aws".to_string()];
        let identity = || source_identity(dir.path(), &outputs).unwrap();
        let (rev, clean) = identity();
        assert!(!rev.ends_with("-dirty") && rev.len() == 40, "{rev}");
        // Build outputs and the state directory are not inputs, ignored by git or not.
        for output in ["build/walproposer-lib/libwalproposer.a", ".neonctl-aws/state.json"] {
            std::fs::create_dir_all(dir.path().join(output).parent().unwrap()).unwrap();
            std::fs::write(dir.path().join(output), "x").unwrap();
        }
        assert_eq!(identity(), (rev, clean.clone()));
        std::fs::write(dir.path().join("a"), "2").unwrap();
        let (rev, edited) = identity();
        assert!(rev.ends_with("-dirty"));
        assert_ne!(edited, clean);
        std::fs::write(dir.path().join("new"), "x").unwrap();
        assert_ne!(identity().1, edited);
    }

    #[test]
    fn a_plain_directory_is_identified_by_its_files_but_not_its_outputs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), "1").unwrap();
        let outputs = vec!["target".to_string()];
        let (rev, first) = source_identity(dir.path(), &outputs).unwrap();
        assert_eq!(rev, "unknown");
        std::fs::create_dir(dir.path().join("target")).unwrap();
        std::fs::write(dir.path().join("target/x"), "1").unwrap();
        assert_eq!(source_identity(dir.path(), &outputs).unwrap().1, first);
        std::fs::write(dir.path().join("b"), "1").unwrap();
        assert_ne!(source_identity(dir.path(), &outputs).unwrap().1, first);
    }

    #[test]
    fn missing_submodules_are_named() {
        let dir = tempfile::tempdir().unwrap();
        for v in ["v14", "v15", "v17"] {
            std::fs::create_dir_all(dir.path().join(format!("vendor/postgres-{v}"))).unwrap();
            std::fs::write(dir.path().join(format!("vendor/postgres-{v}/README")), "").unwrap();
        }
        std::fs::remove_file(dir.path().join("vendor/postgres-v17/README")).unwrap();
        let err = check_submodules(dir.path()).unwrap_err().to_string();
        assert!(err.contains("vendor/postgres-v16, vendor/postgres-v17"), "{err}");
        assert!(err.contains("submodule update --init --recursive --depth 2"), "{err}");
    }
}
