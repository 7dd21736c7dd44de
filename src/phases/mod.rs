//! One module per subcommand. Graph phases implement [`crate::engine::Phase`].

pub mod build;
pub mod iam_policy;
pub mod images;
pub mod infra;
pub mod init;
pub mod kubeconfig;
pub mod prereqs;
pub mod push;
pub mod render;
pub mod status;
pub mod teardown;

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::cli::Command;
use crate::engine::{Context, Phase, PhaseName, PhasePlan};
use crate::output::Printer;

/// The phase behind `name`, configured from the command line that asked for it.
/// `printer` asks for consent where a phase destroys data.
pub fn phase(name: PhaseName, command: &Command, printer: &Arc<Printer>) -> Arc<dyn Phase> {
    match name {
        PhaseName::Build => {
            let options = match command {
                Command::Build(args) => args.build.clone(),
                Command::Up(args) => args.build.clone(),
                _ => Default::default(),
            };
            Arc::new(build::Build { options })
        }
        PhaseName::Images => Arc::new(images::Images),
        PhaseName::Infra => Arc::new(infra::Infra),
        PhaseName::Push => Arc::new(push::Push),
        PhaseName::Deploy => Arc::new(Unavailable { name, issue: 5 }),
        PhaseName::Teardown => {
            let keep_data = matches!(command, Command::Teardown(args) if args.keep_data);
            Arc::new(teardown::Teardown { keep_data, printer: printer.clone() })
        }
    }
}

/// A phase this version does not ship yet: it plans a note and refuses to apply, so that
/// nothing ever pretends to have worked.
struct Unavailable {
    name: PhaseName,
    issue: u32,
}

impl Phase for Unavailable {
    fn name(&self) -> PhaseName {
        self.name
    }
    fn plan<'a>(&'a self, _cx: &'a Context) -> BoxFuture<'a, anyhow::Result<PhasePlan>> {
        Box::pin(async move {
            Ok(PhasePlan {
                actions: vec![],
                notes: vec![format!("`{}` is not available in this version yet (issue #{})", self.name, self.issue)],
            })
        })
    }
    fn apply<'a>(&'a self, _cx: &'a Context) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            anyhow::bail!(
                "`{}` is not available in this version of neonctl-aws yet (tracked as issue #{}); nothing was changed",
                self.name,
                self.issue
            )
        })
    }
}
