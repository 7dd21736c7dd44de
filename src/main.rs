use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = neonctl_aws::cli::Cli::parse();
    ExitCode::from(neonctl_aws::run(cli))
}
