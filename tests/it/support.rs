//! Shared helpers: run the binary in a scratch directory with a clean environment.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_neonctl-aws");
/// What the control plane's image runs.
pub const CONTROL_PLANE_BIN: &str = env!("CARGO_BIN_EXE_neonctl-aws-control-plane");

/// A scratch working directory; the binary runs inside it, so `./.neonctl-aws` lands there.
pub struct Workdir {
    pub dir: tempfile::TempDir,
}

impl Workdir {
    pub fn new() -> Self {
        Self { dir: tempfile::tempdir().expect("tempdir") }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.path().join(".neonctl-aws")
    }

    /// A command for the binary with no AWS, Docker or CI variables leaking in from the host.
    pub fn cmd(&self, args: &[&str]) -> Command {
        self.cmd_of(BIN, args)
    }

    /// `neonctl-aws-control-plane <args>`, as the control plane's image runs it.
    pub fn control_plane(&self, args: &[&str]) -> Command {
        self.cmd_of(CONTROL_PLANE_BIN, args)
    }

    /// `program <args>` in this directory with the environment every run gets.
    pub fn cmd_of(&self, program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(args).current_dir(self.path()).env_clear();
        cmd.env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.path())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", self.path().join("no-aws-config"))
            .env("AWS_SHARED_CREDENTIALS_FILE", self.path().join("no-aws-credentials"))
            .env("NO_COLOR", "1");
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run neonctl-aws")
    }
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Parses NDJSON output into its events.
pub fn json_events(output: &Output) -> Vec<serde_json::Value> {
    stdout(output).lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not json: {l}: {e}"))).collect()
}

/// Passes through what a build and the Docker Engine need from the host: rustup's and cargo's
/// homes (HOME points at the scratch directory) and DOCKER_HOST.
pub fn host_tools(cmd: &mut Command) -> &mut Command {
    let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_default());
    let rustup = std::env::var_os("RUSTUP_HOME").map(PathBuf::from).unwrap_or_else(|| home.join(".rustup"));
    let cargo = std::env::var_os("CARGO_HOME").map(PathBuf::from).unwrap_or_else(|| home.join(".cargo"));
    cmd.env("RUSTUP_HOME", rustup).env("CARGO_HOME", cargo);
    if let Some(host) = std::env::var_os("DOCKER_HOST") {
        cmd.env("DOCKER_HOST", host);
    }
    cmd
}

/// Reads the state file a run left.
pub fn state_json(wd: &Workdir) -> serde_json::Value {
    let text = std::fs::read_to_string(wd.state_dir().join("state.json")).expect("state.json");
    serde_json::from_str(&text).expect("state is json")
}
