//! The release build's figures for `cargo xtask bench`: how long a clean release build of the
//! workspace takes on this machine, and which crates take longest (from cargo's own
//! `--timings` report), into `target/bench-release` so that the usual target directory stays.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// The release binaries (`neonctl-aws` and `neonctl-aws-control-plane`), built clean and timed
/// unless `reuse` says to take those of an earlier run as they are.
pub fn build(reuse: bool) -> Result<PathBuf> {
    let target = super::project_root().join("target/bench-release");
    let binaries = target.join("release");
    if reuse && binaries.join("neonctl-aws").is_file() && binaries.join("neonctl-aws-control-plane").is_file() {
        println!("release build: reusing {} (--reuse-release: no build time measured)", binaries.display());
        return Ok(binaries);
    }
    if target.exists() {
        std::fs::remove_dir_all(&target).with_context(|| format!("removing {}", target.display()))?;
    }
    println!("release build: a clean `cargo build --release --workspace` into {} (tens of minutes on 2 cores)", target.display());
    let started = Instant::now();
    let status = super::cargo()
        .args(["build", "--release", "--workspace", "--locked", "--timings", "--quiet", "--target-dir"])
        .arg(&target)
        .status()
        .context("running cargo build --release")?;
    if !status.success() {
        bail!("the release build failed");
    }
    let elapsed = started.elapsed();
    let report = target.join("cargo-timings/cargo-timing.html");
    let html = std::fs::read_to_string(&report).with_context(|| format!("reading {}", report.display()))?;
    let slowest = slowest_crates(&html)?;
    println!("release build of the workspace: {:.0}s on {} CPU(s)", elapsed.as_secs_f64(), cpus());
    println!("  slowest crates (seconds, all their units):");
    for (name, seconds) in slowest.iter().take(10) {
        println!("  {seconds:>8.1}  {name}");
    }
    Ok(binaries)
}

fn cpus() -> usize {
    std::thread::available_parallelism().map(usize::from).unwrap_or(1)
}

/// Seconds per crate (its build script, lib and bins together), slowest first, from the
/// `UNIT_DATA` array cargo's timing report embeds.
fn slowest_crates(html: &str) -> Result<Vec<(String, f64)>> {
    let start = html.find("UNIT_DATA = ").context("no UNIT_DATA in cargo's timing report")? + "UNIT_DATA = ".len();
    let end = start + html[start..].find(";\n").context("UNIT_DATA does not end")?;
    let units: Vec<serde_json::Value> = serde_json::from_str(&html[start..end]).context("parsing UNIT_DATA")?;
    let mut per_crate: std::collections::BTreeMap<String, f64> = std::collections::BTreeMap::new();
    for unit in units {
        let name = unit["name"].as_str().unwrap_or_default().to_string();
        *per_crate.entry(name).or_default() += unit["duration"].as_f64().unwrap_or_default();
    }
    let mut slowest: Vec<(String, f64)> = per_crate.into_iter().collect();
    slowest.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok(slowest)
}
