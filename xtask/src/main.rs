//! Development automation in plain Rust (`cargo xtask <task>`).
//!
//! - `man`: the man page, `target/man/neonctl-aws.1`.
//! - `test`: set up the stand-ins the integration tests need where they are missing
//!   ([`stand_ins`]), then run every test.
//! - `bench [--release] [--neon-src PATH]`: every benchmark, printing its figures:
//!   a no-op `infra` on a converged deployment against moto (wall time and calls); the
//!   control plane against 1,000 branches and endpoints (idle calls, RSS, new-branch latency);
//!   build,
//!   images and push against the stand-in Neon checkout (or a real one): the image size ratio,
//!   the bytes a re-push uploads and the cost of a no-op build.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

mod bench;
mod release;
mod stand_ins;

fn main() -> Result<()> {
    let task = std::env::args().nth(1).unwrap_or_default();
    match task.as_str() {
        "test" => test(),
        "man" => man(),
        "bench" => {
            let args: Vec<String> = std::env::args().skip(2).collect();
            let flag = |name: &str| args.iter().any(|a| a == name);
            bench_infra(flag("--release"))?;
            bench_control_plane()?;
            let release = release::build(flag("--reuse-release"))?;
            bench::run(&release, args.iter().filter(|a| !a.starts_with("--re")).cloned().collect())
        }
        _ => {
            eprintln!(
                "usage: cargo xtask <task>\n\ntasks:\n  man     write the man page to target/man/neonctl-aws.1\n  test    set up the missing stand-ins (moto and kubernetes-validate in target/stand-ins/venv; docker-registry, postgresql with apt-get as root), run every test\n  \
                 bench   [--release] [--reuse-release] [--neon-src PATH]  no-op infra against moto (goal: 0 mutating calls, <= 1 read\n          \
                 per resource, < 3 s); the control plane with 1,000 branches; a clean release build's time and slowest crates\n          \
                 (--reuse-release: the last one's binaries, untimed); image bytes stripped and not (control plane goal <= 20 MB),\n          \
                 size ratio (goal <= 1.15), re-push bytes (goal 0), no-op build time (goal <= cargo + 2 s)"
            );
            std::process::exit(2)
        }
    }
}

fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

/// Where cargo puts what it builds: `$CARGO_TARGET_DIR`, else `target/` of the workspace.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| project_root().join("target"))
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(project_root());
    cmd
}

/// The man page, from the CLI's own clap definition.
fn man() -> Result<()> {
    let output = cargo().args(["run", "--quiet", "--bin", "neonctl-aws", "--", "man"]).output().context("running neonctl-aws man")?;
    if !output.status.success() {
        bail!("neonctl-aws man failed:\n{}", String::from_utf8_lossy(&output.stderr));
    }
    let dir = project_root().join("target/man");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let page = dir.join("neonctl-aws.1");
    std::fs::write(&page, &output.stdout).with_context(|| format!("writing {}", page.display()))?;
    println!("{} (read it with `man {}`)", page.display(), page.display());
    Ok(())
}

fn test() -> Result<()> {
    let stand_ins = stand_ins::ensure(&project_root())?;
    let mut cmd = cargo();
    cmd.args(["test", "--workspace", "--locked"]);
    cmd.env("NEONCTL_TEST_MOTO_SERVER", stand_ins.moto);
    cmd.env("NEONCTL_TEST_DOCKER_REGISTRY", stand_ins.registry);
    cmd.env("NEONCTL_TEST_KUBERNETES_VALIDATE", stand_ins.validator);
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

/// moto on a free port, killed on drop.
struct Moto(std::process::Child, u16);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_moto() -> Result<Moto> {
    let program = match std::env::var_os("NEONCTL_TEST_MOTO_SERVER") {
        Some(program) => PathBuf::from(program),
        None => stand_ins::ensure(&project_root())?.moto,
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let child = Command::new(&program)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .env("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    let moto = Moto(child, port);
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if started.elapsed() > std::time::Duration::from_secs(60) {
            bail!("moto did not listen on port {port} within 60s");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Ok(moto)
}

/// The control plane against 1,000 branches and endpoints in the fake Kubernetes API: idle
/// calls, RSS, and how soon a new branch reaches the storage controller; `branches create` to a
/// running compute and `branches list` among 1,000; the control plane's share of a wake and its
/// calls with 1,000 suspended endpoints (ignored tests of the integration binary, which has the
/// stand-ins).
fn bench_control_plane() -> Result<()> {
    let status = cargo()
        .args(["test", "--quiet", "-p", "neonctl-aws", "--test", "it", "--", "--ignored", "--nocapture", "--test-threads", "1"])
        .args(["bench_control_plane_at_scale", "bench_branches_at_scale", "bench_scale_to_zero"])
        .status()
        .context("running the control plane benchmark")?;
    if !status.success() {
        bail!("the control plane benchmark missed a goal or failed");
    }
    Ok(())
}

/// Converges once, then times a second `infra` and checks it against the goals.
fn bench_infra(release: bool) -> Result<()> {
    let mut build = cargo();
    build.args(["build", "--bin", "neonctl-aws"]);
    if release {
        build.arg("--release");
    }
    if !build.status().context("building neonctl-aws")?.success() {
        bail!("build failed");
    }
    let binary = target_dir().join(if release { "release" } else { "debug" }).join("neonctl-aws");
    let moto = start_moto()?;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("neonctl-aws.yaml"), "aws:\n  emulator: true\n")?;
    let infra = || {
        let mut cmd = Command::new(&binary);
        cmd.args(["infra", "--output", "json"])
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir.path())
            .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{}", moto.1))
            .env("AWS_ACCESS_KEY_ID", "bench")
            .env("AWS_SECRET_ACCESS_KEY", "bench")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true");
        cmd
    };
    let first = infra().output().context("running infra")?;
    if !first.status.success() {
        bail!("the converging infra run failed:\n{}", String::from_utf8_lossy(&first.stdout));
    }
    let started = std::time::Instant::now();
    let second = infra().output().context("running infra")?;
    let wall = started.elapsed().as_secs_f64();
    if !second.status.success() {
        bail!("the no-op infra run failed:\n{}", String::from_utf8_lossy(&second.stdout));
    }
    let stdout = String::from_utf8_lossy(&second.stdout);
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or_default()).context("parsing the json summary")?;
    let calls = summary["calls"].as_object().context("the summary has no call counts")?;
    let sum = |kind: &str| calls.values().map(|c| c[kind].as_u64().unwrap_or(0)).sum::<u64>();
    let (reads, mutating) = (sum("read"), sum("mutating"));
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join(".neonctl-aws/state.json"))?)?;
    let resources = state["infra"]["resources"].as_object().map(|r| r.values().filter(|v| v.get("id").is_some()).count()).unwrap_or(0);
    println!(
        "no-op infra ({}): {wall:.2}s wall, {reads} read calls for {resources} resources, {mutating} mutating",
        if release { "release" } else { "debug" }
    );
    for (service, count) in calls {
        println!("  {service:<4} {} read, {} mutating", count["read"], count["mutating"]);
    }
    let mut missed = Vec::new();
    if mutating > 0 {
        missed.push(format!("{mutating} mutating calls (goal 0)"));
    }
    if reads as usize > resources {
        missed.push(format!("{reads} reads for {resources} resources (goal <= 1 per resource)"));
    }
    if wall >= 3.0 {
        missed.push(format!("{wall:.2}s (goal < 3 s)"));
    }
    if !missed.is_empty() {
        bail!("bench goals missed: {}", missed.join(", "));
    }
    println!("all goals met");
    Ok(())
}
