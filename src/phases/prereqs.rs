//! `prereqs` (being written).

use crate::cli::PrereqsArgs;
use crate::config::Config;
use crate::output::Printer;

pub async fn run(_args: &PrereqsArgs, _config: &Config, _assume_yes: bool, _printer: &Printer) -> anyhow::Result<()> {
    anyhow::bail!("prereqs is being written")
}
