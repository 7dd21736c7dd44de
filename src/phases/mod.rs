//! One module per subcommand. Graph phases implement [`crate::engine::Phase`].

pub mod branches;
pub mod build;
pub mod deploy;
pub mod endpoints;
pub mod iam_policy;
pub mod images;
pub mod infra;
pub mod init;
pub mod kubeconfig;
pub mod prereqs;
pub mod push;
pub mod render;
pub mod roles;
pub mod status;
pub mod teardown;

use std::sync::Arc;

use crate::cli::{Command, UpArgs};
use crate::config::Config;
use crate::engine::{Phase, PhaseName};
use crate::exit::{Coded, USAGE};
use crate::output::Printer;

/// The phases `up` runs: all of them on AWS; on the user's own cluster (`--kubeconfig`) no
/// `infra`, and neither `build`, `images` nor `push` when `--image` names every image.
pub fn up_phases(args: &UpArgs, config: &Config) -> Result<Vec<PhaseName>, Coded> {
    let own_cluster = args.deploy.kubeconfig.is_some();
    let given: Vec<&str> = args.overrides.images.iter().filter_map(|image| image.split_once('=').map(|(name, _)| name)).collect();
    let all_given = crate::IMAGES.iter().all(|image| given.contains(image));
    if own_cluster && !all_given && config.images.registry.is_none() {
        return Err(Coded {
            code: USAGE,
            message: "up --kubeconfig builds the images but has nowhere to push them: without `infra` there is no ECR. Set \
                      images.registry in neonctl-aws.yaml (credentials in NEONCTL_AWS_REGISTRY_USERNAME/_PASSWORD), or name every \
                      image with --image NAME=REPOSITORY@sha256:..."
                .into(),
        });
    }
    Ok(PhaseName::UP
        .into_iter()
        .filter(|phase| match phase {
            PhaseName::Infra => !own_cluster,
            PhaseName::Build | PhaseName::Images | PhaseName::Push => !(own_cluster && all_given),
            _ => true,
        })
        .collect())
}

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
                Command::Up(args) => (args.deploy.clone(), args.overrides.clone()),
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
