//! One module per subcommand. Graph phases implement [`crate::engine::Phase`].

pub mod build;
pub mod images;
pub mod init;
pub mod prereqs;
pub mod push;
pub mod status;

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::cli::Command;
use crate::engine::{Context, Phase, PhaseName, PhasePlan};

/// The phase behind `name`, configured from the command line that asked for it.
pub fn phase(name: PhaseName, command: &Command) -> Arc<dyn Phase> {
    let issue = match name {
        PhaseName::Build => {
            let options = match command {
                Command::Build(args) => args.build.clone(),
                Command::Up(args) => args.build.clone(),
                _ => Default::default(),
            };
            return Arc::new(build::Build { options });
        }
        PhaseName::Images => return Arc::new(images::Images),
        PhaseName::Push => return Arc::new(push::Push),
        PhaseName::Infra | PhaseName::Teardown => 3,
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
