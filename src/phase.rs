//! The phases, by name: what the state file records, what `--output json` reports, what the
//! CLI's `--phase` flags take. A leaf module, so that the engine, the state and the output can
//! all name phases without depending on each other.

use clap::ValueEnum;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum PhaseName {
    Build,
    Images,
    Infra,
    Push,
    Deploy,
    Teardown,
}

impl PhaseName {
    pub fn as_str(self) -> &'static str {
        match self {
            PhaseName::Build => "build",
            PhaseName::Images => "images",
            PhaseName::Infra => "infra",
            PhaseName::Push => "push",
            PhaseName::Deploy => "deploy",
            PhaseName::Teardown => "teardown",
        }
    }

    /// The phases whose results this one consumes.
    pub fn deps(self) -> &'static [PhaseName] {
        match self {
            PhaseName::Build | PhaseName::Infra | PhaseName::Teardown => &[],
            PhaseName::Images => &[PhaseName::Build],
            PhaseName::Push => &[PhaseName::Images, PhaseName::Infra],
            PhaseName::Deploy => &[PhaseName::Push, PhaseName::Infra],
        }
    }

    /// What `up` runs, in an order where every phase comes after its deps.
    pub const UP: [PhaseName; 5] = [PhaseName::Build, PhaseName::Infra, PhaseName::Images, PhaseName::Push, PhaseName::Deploy];
}

impl std::fmt::Display for PhaseName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
