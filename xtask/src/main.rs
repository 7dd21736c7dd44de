//! Development automation in plain Rust (`cargo xtask <task>`).
//!
//! - `test`: check the stand-ins the integration tests need, then run every test.

use std::path::PathBuf;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

fn main() -> Result<()> {
    let task = std::env::args().nth(1).unwrap_or_default();
    match task.as_str() {
        "test" => test(),
        _ => {
            eprintln!("usage: cargo xtask <task>\n\ntasks:\n  test    check the stand-ins (moto, docker-registry, postgresql, Docker Engine, kubernetes-validate), run every test");
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
    let postgres = std::fs::read_dir("/usr/lib/postgresql")
        .map(|versions| versions.filter_map(Result::ok).any(|v| v.path().join("bin/initdb").is_file()))
        .unwrap_or(false);
    if !postgres {
        missing.push("Postgres server binaries in /usr/lib/postgresql (apt-get install postgresql)");
    }
    let validator = find("kubernetes-validate", "/usr/local/bin/kubernetes-validate");
    if validator.is_none() {
        missing.push("kubernetes-validate (pip install kubernetes-validate)");
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
    cmd.env("NEONCTL_TEST_KUBERNETES_VALIDATE", validator.expect("checked"));
    cmd.stdout(Stdio::piped());
    let mut child = cmd.spawn().context("running cargo test")?;
    // Pass the output through while adding up every binary's `test result:` line.
    let (mut passed, mut failed) = (0u64, 0u64);
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line.context("reading cargo test output")?;
        println!("{line}");
        if let Some(result) = line.strip_prefix("test result: ") {
            let count = |word: &str| {
                result.split([';', '.']).find_map(|part| part.trim().strip_suffix(word)?.trim().parse::<u64>().ok()).unwrap_or(0)
            };
            passed += count("passed");
            failed += count("failed");
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    println!("\ntests: {passed} passed, {failed} failed");
    if !status.success() || failed > 0 {
        bail!("tests failed");
    }
    if passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}
