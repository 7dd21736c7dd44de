//! `cargo xtask bench`: the numbers issue #4 sets goals for, measured end to end with the
//! release binaries, the Docker Engine and a loopback registry.
//!
//! - image bytes with `images.strip` (the default) and without, per image: the control plane's
//!   goal is ≤ 20 MB;
//! - image bytes ÷ bytes of the files put in (binary, libraries, Postgres, certificates), per
//!   image: goal ≤ 1.15;
//! - bytes a second `push` uploads: goal 0;
//! - a no-op `build` against cargo's own no-op build of the same binaries: goal ≤ +2 s.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

#[path = "../../tests/it/neon_fixture.rs"]
#[allow(dead_code, reason = "shared with the tests, which use all of it")]
mod neon_fixture;
#[path = "../../tests/it/stand_ins.rs"]
#[allow(dead_code, reason = "shared with the tests, which use all of it")]
mod stand_ins;

use neon_fixture::{BINARIES, CURRENT_TOOLCHAIN, NeonFixture};

/// The control plane's image, at most.
const CONTROL_PLANE_IMAGE_GOAL: u64 = 20_000_000;

pub fn run(binaries: &Path, args: Vec<String>) -> Result<()> {
    let neon_src = match args.as_slice() {
        [] => None,
        [flag, path] if flag == "--neon-src" => Some(PathBuf::from(path)),
        _ => bail!("usage: cargo xtask bench [--neon-src PATH]"),
    };
    let bin = binaries.join("neonctl-aws");
    let fixture = neon_src.is_none().then(|| NeonFixture::new(CURRENT_TOOLCHAIN));
    let src = neon_src.unwrap_or_else(|| fixture.as_ref().expect("made above").path().to_path_buf());
    let work = tempfile::tempdir()?;
    let registry = stand_ins::Registry::start();
    let config = |strip: bool| {
        let text = format!("images:\n  registry: 127.0.0.1:{}/bench\n  strip: {strip}\n", registry.port);
        std::fs::write(work.path().join("neonctl-aws.yaml"), text)
    };
    config(true)?;
    let neonctl = |args: &[&str]| -> Result<Output> {
        let out = Command::new(&bin).args(args).args(["--output", "json"]).current_dir(work.path()).output()?;
        if !out.status.success() {
            bail!("neonctl-aws {} failed:\n{}", args.join(" "), String::from_utf8_lossy(&out.stdout));
        }
        Ok(out)
    };
    let src_arg = src.display().to_string();

    neonctl(&["build", "--neon-src", &src_arg])?;
    let (noop_build, _) = timed(|| neonctl(&["build", "--neon-src", &src_arg]))?;
    let (noop_cargo, _) = timed(|| cargo_noop(&src))?;

    neonctl(&["images"])?;
    let state = read_state(work.path())?;
    let images = state["images"].as_object().context("no images in the state")?.clone();
    let first_push = uploaded(&neonctl(&["push"])?)?;
    let second_push = uploaded(&neonctl(&["push"])?)?;
    let state = read_state(work.path())?;
    config(false)?;
    neonctl(&["images"])?;
    let unstripped = read_state(work.path())?["images"].as_object().context("no images in the state")?.clone();

    println!("{:<20} {:>14} {:>14} {:>14} {:>7}", "image", "image bytes", "not stripped", "content bytes", "ratio");
    let mut worst: f64 = 0.0;
    for (name, record) in &images {
        let size = record["size"].as_u64().unwrap_or_default();
        let whole = unstripped.get(name).and_then(|r| r["size"].as_u64()).unwrap_or_default();
        let content = record["content_bytes"].as_u64().unwrap_or(1).max(1);
        let ratio = size as f64 / content as f64;
        worst = worst.max(ratio);
        println!("{name:<20} {size:>14} {whole:>14} {content:>14} {ratio:>7.3}");
    }
    let control_plane = images.get("control-plane").and_then(|r| r["size"].as_u64()).unwrap_or_default();
    println!();
    println!("control-plane image        {control_plane} bytes, stripped   (goal <= {CONTROL_PLANE_IMAGE_GOAL})");
    println!();
    println!("worst image ratio          {worst:.3}   (goal <= 1.15)");
    println!("bytes uploaded, first push {first_push}");
    println!("bytes uploaded, re-push    {second_push}   (goal 0)");
    let extra = noop_build.as_secs_f64() - noop_cargo.as_secs_f64();
    println!(
        "no-op build                {:.2}s vs cargo's own no-op {:.2}s: {extra:+.2}s   (goal <= +2s)",
        noop_build.as_secs_f64(),
        noop_cargo.as_secs_f64()
    );

    let mut tags: Vec<String> = images.values().chain(unstripped.values()).filter_map(|r| r["tag"].as_str().map(str::to_string)).collect();
    tags.extend(state["push"].as_object().into_iter().flatten().filter_map(|(_, r)| r["tag"].as_str().map(str::to_string)));
    let _ = Command::new("docker").arg("rmi").arg("-f").args(&tags).output();
    Ok(())
}

fn timed<T>(f: impl FnOnce() -> Result<T>) -> Result<(Duration, T)> {
    let start = Instant::now();
    let out = f()?;
    Ok((start.elapsed(), out))
}

/// cargo's own no-op: the same build of the same binaries, already built.
fn cargo_noop(src: &Path) -> Result<()> {
    let mut cmd = Command::new("cargo");
    cmd.args(["build", "--locked", "--release", "--quiet"]).current_dir(src).env_remove("RUSTUP_TOOLCHAIN").env_remove("CARGO");
    for bin in BINARIES {
        cmd.args(["--bin", bin]);
    }
    let status = cmd.status().context("running cargo")?;
    if !status.success() {
        bail!("cargo build in {} failed", src.display());
    }
    Ok(())
}

fn read_state(dir: &Path) -> Result<serde_json::Value> {
    let path = dir.join(".neonctl-aws/state.json");
    Ok(serde_json::from_str(&std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?)?)
}

/// The `uploaded N bytes` message of a push.
fn uploaded(out: &Output) -> Result<u64> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find_map(|e| e["text"].as_str().and_then(|t| t.strip_prefix("uploaded ")).and_then(|t| t.split_whitespace().next()?.parse().ok()))
        .context("push reported no uploaded bytes")
}
