//! neonctl-aws: an AWS account to a working self-hosted Neon on EKS, and back.
//!
//! Reading order: [`run`] (parse → printer → config → state lock → runtime → dispatch → exit
//! code), then [`engine`] (the phase graph), then one module per phase under [`phases`].

pub mod aws;
pub mod aws_names;
pub mod calls;
pub mod cli;
pub mod config;
pub mod crash;
pub mod docker;
pub mod engine;
pub mod exit;
pub mod k8s;
pub mod output;
pub mod phase;
pub mod phases;
pub mod platform;
pub mod render;
pub mod state;
pub mod wait;

/// Neon's configuration shapes, shared with the control plane.
pub use neonctl_contract::neon;

use std::sync::Arc;

use anyhow::Context as _;

use crate::cli::{Cli, Command};
use crate::config::Config;
use crate::engine::{Context, PhaseName};
use crate::output::{Event, Printer, Reporter};
use crate::state::StateStore;

/// The images the `images` phase builds, one ECR repository each.
pub const IMAGES: [&str; 7] = ["pageserver", "safekeeper", "storage-broker", "storage-controller", "proxy", "compute", "control-plane"];

/// Runs one command line to completion and returns the process exit code.
pub fn run(cli: Cli) -> u8 {
    let printer = Arc::new(Printer::new(cli.global.output, cli.global.verbose, cli.global.quiet));
    let serving = matches!(cli.command, Command::ControlPlane(_));
    init_tracing(if serving { cli.global.verbose.max(1) } else { cli.global.verbose });
    let started = std::time::Instant::now();
    // kubectl shows an exec plugin's stderr on every call: `token` stays silent on success; a
    // completion script or man page is all that is printed.
    let summary = !matches!(cli.command, Command::Token(_) | Command::Completions(_) | Command::Man);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let result = runtime.block_on(dispatch(cli, printer.clone()));
    let (ok, calls, code) = match result {
        Ok(outcome) => (outcome.code == exit::SUCCESS, outcome.calls, outcome.code),
        Err(error) => {
            printer.error(&error);
            (false, Default::default(), exit::code_for(&error))
        }
    };
    if summary {
        printer.report(Event::Summary { ok, seconds: started.elapsed().as_secs_f64(), calls });
    }
    code
}

/// What `-v` shows on stderr beside the phases' own output: with `-v` the AWS SDKs' and kube's
/// debug events (retries, credential and endpoint resolution, requests), with `-vv` everything
/// at debug. `RUST_LOG` overrides either; without `-v` (and without `RUST_LOG`) nothing.
fn init_tracing(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let filter = match (EnvFilter::try_from_default_env(), verbose) {
        (Ok(filter), _) => filter,
        (Err(_), 0) => return,
        (Err(_), 1) => {
            EnvFilter::new("warn,neonctl_aws=info,neonctl_control_plane=info,aws_config=debug,aws_smithy_runtime=debug,kube_client=debug")
        }
        (Err(_), _) => EnvFilter::new("debug,hyper=info,hyper_util=info,h2=info,rustls=info,tower=info"),
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).try_init();
}

struct Finished {
    code: u8,
    calls: std::collections::BTreeMap<String, calls::CallCount>,
}

impl Finished {
    fn ok() -> Self {
        Self { code: exit::SUCCESS, calls: Default::default() }
    }
}

async fn dispatch(cli: Cli, printer: Arc<Printer>) -> anyhow::Result<Finished> {
    let global = &cli.global;
    let load_config = |neon_src: Option<&std::path::Path>| -> anyhow::Result<Config> {
        let mut config = Config::load(global.config.as_deref(), global.prefix.as_deref(), global.region.as_deref())?;
        if let Some(path) = neon_src {
            config.neon.source.path = Some(path.to_path_buf());
        }
        Ok(config)
    };
    let (phases, plan_only, config) = match &cli.command {
        Command::Completions(args) => {
            use clap::CommandFactory as _;
            clap_complete::generate(args.shell, &mut Cli::command(), "neonctl-aws", &mut std::io::stdout());
            return Ok(Finished::ok());
        }
        Command::Man => {
            use clap::CommandFactory as _;
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()).context("writing the man page")?;
            return Ok(Finished::ok());
        }
        Command::Init(args) => {
            phases::init::run(args, global.prefix.as_deref(), global.region.as_deref(), &printer)?;
            return Ok(Finished::ok());
        }
        Command::Prereqs(args) => {
            let config = load_config(None)?;
            phases::prereqs::run(args, &config, global.yes, &printer).await?;
            return Ok(Finished::ok());
        }
        Command::Kubeconfig(args) => {
            let config = load_config(None)?;
            let calls = Arc::new(calls::Calls::default());
            phases::kubeconfig::kubeconfig(args, &config, calls.clone(), &printer).await?;
            return Ok(Finished { code: exit::SUCCESS, calls: calls.snapshot() });
        }
        Command::Token(args) => {
            let config = load_config(None)?;
            // kubectl reads exactly one JSON document from stdout: no events, no summary.
            let credential = phases::kubeconfig::token(args, &config, Arc::default()).await?;
            println!("{credential}");
            return Ok(Finished::ok());
        }
        Command::Render(args) => {
            let config = load_config(None)?;
            phases::render::run(args, &config, &global.state_dir, &printer)?;
            return Ok(Finished::ok());
        }
        Command::IamPolicy(args) => {
            let config = load_config(None)?;
            phases::iam_policy::run(args, &config, &printer)?;
            return Ok(Finished::ok());
        }
        Command::ControlPlane(neonctl_control_plane::Command::Serve(args)) => {
            neonctl_control_plane::serve(args).await?;
            return Ok(Finished::ok());
        }
        Command::Branches(args) => {
            let config = load_config(None)?;
            let code = phases::branches::run(args, &config, &global.state_dir, &printer).await?;
            return Ok(Finished { code, calls: Default::default() });
        }
        Command::Endpoints(args) => {
            let config = load_config(None)?;
            let code = phases::endpoints::run(args, &config, &global.state_dir, &printer).await?;
            return Ok(Finished { code, calls: Default::default() });
        }
        Command::Roles(args) => {
            let config = load_config(None)?;
            let code = phases::roles::roles(args, &config, &global.state_dir, &printer).await?;
            return Ok(Finished { code, calls: Default::default() });
        }
        Command::Databases(args) => {
            let config = load_config(None)?;
            let code = phases::roles::databases(args, &config, &global.state_dir, &printer).await?;
            return Ok(Finished { code, calls: Default::default() });
        }
        Command::ConnectionString(args) => {
            let config = load_config(None)?;
            let code = phases::branches::connection_string(args, &config, &global.state_dir, &printer).await?;
            return Ok(Finished { code, calls: Default::default() });
        }
        Command::Status(args) => {
            let config = load_config(None)?;
            let code = phases::status::run(args, &config, &global.state_dir, &printer).await?;
            return Ok(Finished { code, calls: Default::default() });
        }
        Command::Build(args) => (vec![PhaseName::Build], args.plan.plan, load_config(args.build.neon_src.as_deref())?),
        Command::Images(args) => (vec![PhaseName::Images], args.plan.plan, load_config(None)?),
        Command::Infra(args) => (vec![PhaseName::Infra], args.plan.plan, load_config(None)?),
        Command::Push(args) => (vec![PhaseName::Push], args.plan.plan, load_config(None)?),
        Command::Deploy(args) => (vec![PhaseName::Deploy], args.plan.plan, load_config(None)?),
        Command::Up(args) => {
            let config = load_config(args.build.neon_src.as_deref())?;
            (phases::up_phases(args, &config)?, args.plan.plan, config)
        }
        Command::Teardown(args) => (vec![PhaseName::Teardown], args.plan.plan || args.dry_run, load_config(None)?),
    };
    let phases: Vec<_> = phases.into_iter().map(|name| phases::phase(name, &cli.command, &printer)).collect();
    let target = state::Target { prefix: config.prefix.clone(), region: config.region.clone() };
    let reporter: Arc<dyn Reporter> = printer.clone();

    if plan_only {
        let store = StateStore::read_only(&global.state_dir)?;
        let cx = Context::new(config, store, reporter, global.yes);
        engine::plan(&cx, &phases).await?;
        return Ok(Finished { code: exit::SUCCESS, calls: cx.calls.snapshot() });
    }

    let command_line = std::env::args().collect::<Vec<_>>().join(" ");
    let mut store = StateStore::open(&global.state_dir, &command_line)?;
    store.claim(&target)?;
    let cx = Arc::new(Context::new(config, store, reporter, global.yes));
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            futures::future::pending::<()>().await;
        }
    };
    let report = engine::apply(cx.clone(), phases, interrupt).await;
    let calls = cx.calls.snapshot();
    if report.interrupted {
        printer.report(Event::Message {
            phase: None,
            level: output::Level::Warn,
            text: "interrupted; the state is saved, run the same command again to resume".into(),
        });
        return Ok(Finished { code: exit::INTERRUPTED, calls });
    }
    let mut errors = report.errors.into_iter();
    let Some((first_phase, first)) = errors.next() else { return Ok(Finished { code: exit::SUCCESS, calls }) };
    let code = exit::code_for(&first);
    // Every concurrent failure is shown, not only the first.
    for (phase, error) in errors {
        printer.error(&error.context(format!("{phase} failed")));
    }
    printer.error(&first.context(format!("{first_phase} failed")));
    Ok(Finished { code, calls })
}
