//! One module per subcommand. Graph phases implement [`crate::engine::Phase`].

pub mod build;
pub mod deploy;
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

use crate::cli::Command;
use crate::engine::{Phase, PhaseName};
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
        PhaseName::Deploy => {
            let (options, overrides) = match command {
                Command::Deploy(args) => (args.deploy.clone(), args.overrides.clone()),
                _ => Default::default(),
            };
            Arc::new(deploy::Deploy { options, overrides, printer: printer.clone() })
        }
        PhaseName::Teardown => {
            let keep_data = matches!(command, Command::Teardown(args) if args.keep_data);
            Arc::new(teardown::Teardown { keep_data, printer: printer.clone() })
        }
    }
}
