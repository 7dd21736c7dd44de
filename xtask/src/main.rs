//! Development automation in plain Rust (`cargo xtask <task>`).
//!
//! - `test`: check the stand-ins the integration tests need, then run every test.
//! - `bench [--neon-src PATH]`: build, images and push against the stand-in Neon checkout (or a
//!   real one) and print the image size ratio, the bytes a re-push uploads and the cost of a
//!   no-op build.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

mod bench;

fn main() -> Result<()> {
    let task = std::env::args().nth(1).unwrap_or_default();
    match task.as_str() {
        "test" => test(),
        "bench" => bench::run(std::env::args().skip(2).collect()),
        _ => {
            eprintln!(
                "usage: cargo xtask <task>\n\ntasks:\n  test    check the stand-ins (moto, docker-registry, Docker Engine), run every test\n  \
                 bench [--neon-src PATH]   image size ratio, re-push bytes, no-op build time"
            );
            std::process::exit(2)
        }
    }
}

fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(project_root());
    cmd
}

/// Finds a program on PATH (or at a fixed fallback path).
fn find(program: &str, fallback: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(program))
        .chain([PathBuf::from(fallback)])
        .find(|p| p.is_file())
}

fn test() -> Result<()> {
    let mut missing = Vec::new();
    let moto = find("moto_server", "/usr/local/bin/moto_server");
    if moto.is_none() {
        missing.push("moto_server (pip install 'moto[server]')");
    }
    let registry = find("docker-registry", "/usr/bin/docker-registry");
    if registry.is_none() {
        missing.push("docker-registry (apt-get install docker-registry)");
    }
    let docker_ok = Command::new("docker").arg("version").output().map(|o| o.status.success()).unwrap_or(false);
    if !docker_ok {
        missing.push("a running Docker Engine (docker version fails)");
    }
    if !missing.is_empty() {
        bail!("the integration tests need: {}. `bash .ci/run` installs them on Debian", missing.join(", "));
    }
    let mut cmd = cargo();
    cmd.args(["test", "--workspace", "--locked"]);
    cmd.env("NEONCTL_TEST_MOTO_SERVER", moto.expect("checked"));
    cmd.env("NEONCTL_TEST_DOCKER_REGISTRY", registry.expect("checked"));
    let status = cmd.status().context("running cargo test")?;
    if !status.success() {
        bail!("tests failed");
    }
    Ok(())
}
