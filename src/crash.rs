//! Crash points for the crash-safety tests: when `NEONCTL_AWS_CRASH_AT` names a point, the
//! process aborts there, with no destructor or flush running, as a `kill -9` would leave it.
//! Points are named after what has just happened or is about to (`state-before-rename`,
//! `infra:vpc:created`, …).

pub const ENV: &str = "NEONCTL_AWS_CRASH_AT";

pub fn point(name: &str) {
    if std::env::var(ENV).is_ok_and(|wanted| wanted.split(',').any(|w| w == name)) {
        std::process::abort();
    }
}
