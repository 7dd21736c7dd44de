//! The storage controller's command line and environment (`storage_controller/src/main.rs`).
//!
//! Strict mode (no `--dev`): it refuses to start unless the public key and the pageserver,
//! safekeeper and control-plane tokens are set, and `--control-plane-url` names the service
//! that handles `PUT notify-attach` / `notify-safekeepers`. Every secret, the database URL
//! included, comes from the environment (filled from a Kubernetes Secret), never from argv.

use super::flag;

/// Environment variables the storage controller reads its secrets from (`Secrets::load`).
pub mod env {
    pub const DATABASE_URL: &str = "DATABASE_URL";
    /// PEM content (not a path) of the key that validates incoming JWTs.
    pub const PUBLIC_KEY: &str = "PUBLIC_KEY";
    /// Scope `pageserverapi`, sent to pageservers.
    pub const PAGESERVER_JWT_TOKEN: &str = "PAGESERVER_JWT_TOKEN";
    /// Sent to safekeepers.
    pub const SAFEKEEPER_JWT_TOKEN: &str = "SAFEKEEPER_JWT_TOKEN";
    /// Sent to the compute hook (`--control-plane-url`).
    pub const CONTROL_PLANE_JWT_TOKEN: &str = "CONTROL_PLANE_JWT_TOKEN";
    /// The secrets strict mode refuses to start without.
    pub const STRICT_MODE: [&str; 4] = [PUBLIC_KEY, PAGESERVER_JWT_TOKEN, SAFEKEEPER_JWT_TOKEN, CONTROL_PLANE_JWT_TOKEN];
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageControllerArgs {
    pub listen: String,
    /// Prefix of the compute hook; the controller appends `/notify-attach` and
    /// `/notify-safekeepers` after trimming a trailing `/`.
    pub control_plane_url: String,
    /// How peers reach this instance, e.g. `http://$(POD_IP):1234/`.
    pub address_for_peers: String,
    /// The controller chooses each new timeline's safekeepers (3, in different zones) with a
    /// membership generation, creates the timeline on them, answers the set in the create
    /// response, and can migrate it later (announced through `notify-safekeepers`).
    pub timelines_onto_safekeepers: bool,
}

impl StorageControllerArgs {
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            flag("listen", &self.listen),
            flag("control-plane-url", &self.control_plane_url),
            flag("address-for-peers", &self.address_for_peers),
        ];
        // A clap `bool` switch (`ArgAction::SetTrue`): no value.
        if self.timelines_onto_safekeepers {
            args.push("--timelines-onto-safekeepers".into());
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_mode_args_name_the_hook_and_hold_no_secret() {
        let args = StorageControllerArgs {
            listen: "0.0.0.0:1234".into(),
            control_plane_url: "http://neon-control-plane.neon.svc.cluster.local:8080/storage".into(),
            address_for_peers: "http://$(POD_IP):1234/".into(),
            timelines_onto_safekeepers: true,
        }
        .to_args();
        assert!(args.contains(&"--timelines-onto-safekeepers".to_string()), "a switch without a value");
        assert!(args.iter().any(|a| a.starts_with("--control-plane-url=http")), "strict mode needs the hook");
        assert!(!args.iter().any(|a| a == "--dev"));
        for secret in ["--database-url", "--public-key", "--jwt-token", "--safekeeper-jwt-token", "--control-plane-jwt-token"] {
            assert!(!args.iter().any(|a| a.starts_with(secret)), "{secret} must come from the environment");
        }
        insta::assert_debug_snapshot!("storage-controller-args", args);
    }
}
