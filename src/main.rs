use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = neonctl_aws::cli::Cli::parse();
    neonctl_control_plane::install_crypto_provider();
    ExitCode::from(neonctl_aws::run(cli))
}
