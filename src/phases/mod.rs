//! One module per subcommand. Graph phases implement [`crate::engine::Phase`].

pub mod iam_policy;
pub mod infra;
pub mod init;
pub mod kubeconfig;
pub mod prereqs;
pub mod render;
pub mod status;
pub mod teardown;

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::cli::Command;
use crate::output::Printer;
use crate::engine::{Context, Phase, PhaseName, PhasePlan};

/// The phase behind `name`, configured from the command line that asked for it.
/// `printer` asks for consent where a phase destroys data.
pub fn phase(name: PhaseName, command: &Command, printer: &Arc<Printer>) -> Arc<dyn Phase> {
    let issue = match name {
        PhaseName::Infra => return Arc::new(infra::Infra),
        PhaseName::Teardown => {
            let keep_data = matches!(command, Command::Teardown(args) if args.keep_data);
            return Arc::new(teardown::Teardown { keep_data, printer: printer.clone() });
        }
        PhaseName::Build | PhaseName::Images | PhaseName::Push => 4,
        PhaseName::Deploy => 5,
    };
    Arc::new(Unavailable { name, issue })
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
            Ok(PhasePlan { actions: vec![], notes: vec![format!("`{}` is not available in this version yet (issue #{})", self.name, self.issue)] })
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
