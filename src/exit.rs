//! Exit codes, documented in `--help` and the README.

use crate::config::ConfigError;
use crate::output::ConfirmError;
use crate::render::RenderError;
use crate::state::StateError;

pub const SUCCESS: u8 = 0;
/// An external call (AWS, Docker, Kubernetes, a build step) failed.
pub const FAILURE: u8 = 1;
/// Bad command line or config; nothing was done.
pub const USAGE: u8 = 2;
/// Another run holds the state lock.
pub const LOCKED: u8 = 3;
/// Teardown finished but tagged resources are left.
pub const LEFTOVERS: u8 = 4;
/// `prereqs` found a required tool missing.
pub const PREREQS_MISSING: u8 = 5;
/// Ctrl-C; the state is saved and the same command resumes.
pub const INTERRUPTED: u8 = 130;

/// An error that carries its own exit code (prerequisites missing, leftovers).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Coded {
    pub code: u8,
    pub message: String,
}

pub fn code_for(error: &anyhow::Error) -> u8 {
    if neonctl_control_plane::is_usage_error(error) {
        return USAGE;
    }
    for cause in error.chain() {
        if let Some(coded) = cause.downcast_ref::<Coded>() {
            return coded.code;
        }
        if let Some(state) = cause.downcast_ref::<StateError>() {
            return match state {
                StateError::Locked { .. } => LOCKED,
                StateError::Corrupt { .. } | StateError::TooNew { .. } | StateError::WrongTarget { .. } => USAGE,
                StateError::ReadOnly { .. } | StateError::Io { .. } => FAILURE,
            };
        }
        if cause.is::<ConfigError>() || cause.is::<ConfirmError>() || cause.is::<crate::platform::PlatformError>() {
            return USAGE;
        }
        if let Some(render) = cause.downcast_ref::<RenderError>() {
            return match render {
                RenderError::Neon(_) | RenderError::Template { .. } | RenderError::Invalid { .. } => FAILURE,
                _ => USAGE,
            };
        }
    }
    FAILURE
}
