//! `build` against the stand-in Neon checkout: staging, the no-op rebuild, and the errors a
//! user meets (missing submodules, a failing make step, a missing toolchain).

use std::io::{BufRead, BufReader};
use std::process::{Output, Stdio};
use std::time::Instant;

use crate::neon_fixture::{BINARIES, CURRENT_TOOLCHAIN, NeonFixture};
use crate::support::{Workdir, host_tools, json_events, state_json, stderr};

pub fn build(wd: &Workdir, fixture: &NeonFixture, extra: &[&str]) -> Output {
    let src = fixture.arg();
    let mut args = vec!["build", "--neon-src", &src, "--output", "json"];
    args.extend_from_slice(extra);
    host_tools(&mut wd.cmd(&args)).output().unwrap()
}

fn plan_actions(out: &Output, phase: &str) -> Vec<serde_json::Value> {
    let events = json_events(out);
    let plan =
        events.iter().find(|e| e["event"] == "plan" && e["phase"] == phase).unwrap_or_else(|| panic!("a {phase} plan in {events:?}"));
    plan["actions"].as_array().unwrap().clone()
}

fn steps(out: &Output) -> Vec<String> {
    json_events(out).iter().filter(|e| e["event"] == "step_started").map(|e| e["step"].as_str().unwrap().to_string()).collect()
}

#[test]
fn build_stages_artifacts_and_a_second_build_is_a_no_op() {
    let fixture = NeonFixture::new(CURRENT_TOOLCHAIN);
    let wd = Workdir::new();
    let out = build(&wd, &fixture, &[]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), String::from_utf8_lossy(&out.stdout));
    let ran = steps(&out);
    for expected in
        ["make postgres-headers", "make postgres-install-v17", "make neon-pg-ext-v17", "make walproposer-lib", "stage artifacts"]
    {
        assert!(ran.iter().any(|s| s == expected), "{expected} in {ran:?}");
    }
    assert!(ran.iter().any(|s| s.starts_with("cargo build --locked --release") && s.contains("--bin compute_ctl")), "{ran:?}");
    let compiled = json_events(&out)
        .into_iter()
        .rfind(|e| e["event"] == "step_progress" && e["step"].as_str().unwrap().starts_with("cargo build"))
        .map(|e| (e["current"].as_u64().unwrap(), e["total"].as_u64().unwrap()));
    assert_eq!(compiled, Some((6, 6)), "cargo's progress counts the compiled packages");

    let state = state_json(&wd);
    let record = &state["build"];
    assert_eq!(state["schema_version"], neonctl_aws::state::SCHEMA_VERSION);
    assert_eq!(record["revision"].as_str().unwrap().len(), 40, "a clean checkout is built at its commit");
    for bin in BINARIES {
        let artifact = &record["artifacts"][bin];
        let path = std::path::Path::new(artifact["path"].as_str().unwrap());
        assert!(path.starts_with(wd.state_dir().join("build")), "{path:?} is staged");
        let run = std::process::Command::new(path).arg("--version").output().unwrap();
        assert_eq!(String::from_utf8_lossy(&run.stdout).trim(), format!("{bin} stand-in 0.1.0"));
        assert_eq!(artifact["size"].as_u64().unwrap(), std::fs::metadata(path).unwrap().len());
        assert_eq!(artifact["sha256"].as_str().unwrap().len(), 64);
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(record["manifest"].as_str().unwrap()).unwrap()).unwrap();
    assert_eq!(manifest["fingerprint"], record["fingerprint"]);
    assert!(manifest["pg_install"]["bin/postgres"]["sha256"].is_string(), "{manifest}");
    assert!(manifest["pg_install"]["lib/postgresql/neon.so"].is_object(), "{manifest}");
    let log = std::fs::read_to_string(wd.state_dir().join("logs/build.log")).unwrap();
    assert!(log.contains("==> make walproposer-lib") && log.contains("Compiling pageserver"), "{log}");

    // Unchanged inputs: the plan is empty and a build does nothing.
    let plan = host_tools(&mut wd.cmd(&["build", "--neon-src", &fixture.arg(), "--plan", "--output", "json"])).output().unwrap();
    assert!(plan.status.success(), "{}", stderr(&plan));
    assert_eq!(plan_actions(&plan, "build"), Vec::<serde_json::Value>::new());
    let started = Instant::now();
    let again = build(&wd, &fixture, &["--jobs", "1"]);
    let seconds = started.elapsed().as_secs_f64();
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(steps(&again), Vec::<String>::new(), "nothing runs");
    assert!(seconds < 5.0, "a no-op build took {seconds:.1}s");
    assert_eq!(state_json(&wd)["build"], state["build"]);

    // A local change is a new input.
    std::fs::write(fixture.path().join("proxy/main.rs"), "fn main() { println!(\"proxy stand-in changed\"); }\n").unwrap();
    let plan = host_tools(&mut wd.cmd(&["build", "--neon-src", &fixture.arg(), "--plan", "--output", "json"])).output().unwrap();
    let actions = plan_actions(&plan, "build");
    assert!(actions.iter().any(|a| a["target"].as_str().unwrap().starts_with("cargo build")), "{actions:?}");
    let events = json_events(&plan);
    let notes = events.iter().find(|e| e["event"] == "plan").unwrap()["notes"].to_string();
    assert!(notes.contains("-dirty"), "{notes}");
}

#[test]
fn build_errors_name_the_cause_and_the_fix() {
    // Missing submodules: refused before anything runs.
    let fixture = NeonFixture::new(CURRENT_TOOLCHAIN);
    std::fs::remove_file(fixture.vendor("v16").join("README")).unwrap();
    let wd = Workdir::new();
    let out = build(&wd, &fixture, &[]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("vendor/postgres-v16") && text.contains("submodule update --init --recursive --depth 2"), "{text}");
    assert!(!text.contains("postgres-v15"), "only the empty one is named: {text}");
    std::fs::write(fixture.vendor("v16").join("README"), "back\n").unwrap();

    // A failing make step: named, with its last lines and the log.
    let out = host_tools(&mut wd.cmd(&["build", "--neon-src", &fixture.arg()])).env("FAIL_STEP", "neon-pg-ext-v17").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(text.contains("build step `make neon-pg-ext-v17` failed"), "{text}");
    assert!(text.contains("simulated compiler failure in neon-pg-ext-v17"), "{text}");
    assert!(text.contains("logs/build.log"), "{text}");
    let log = std::fs::read_to_string(wd.state_dir().join("logs/build.log")).unwrap();
    assert!(log.contains("simulated compiler failure"), "{log}");
    assert!(state_json(&wd)["build"].is_null());
}

#[test]
fn a_missing_toolchain_is_refused_and_toolchain_overrides_it() {
    let fixture = NeonFixture::new("1.2.3");
    let wd = Workdir::new();
    // Installing fails fast: the distribution server is a closed port.
    let out = host_tools(&mut wd.cmd(&["build", "--neon-src", &fixture.arg()]))
        .env("RUSTUP_DIST_SERVER", "http://127.0.0.1:9")
        .env("RUSTUP_UPDATE_ROOT", "http://127.0.0.1:9")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(text.contains("Neon pins Rust 1.2.3") && text.contains("--toolchain NAME"), "{text}");
    assert!(text.contains(CURRENT_TOOLCHAIN), "installed toolchains are listed: {text}");

    let out = build(&wd, &fixture, &["--toolchain", "no-such-toolchain"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("rustup toolchain install no-such-toolchain"));

    let out = build(&wd, &fixture, &["--toolchain", CURRENT_TOOLCHAIN]);
    assert!(out.status.success(), "{}", stderr(&out));
    let warned = json_events(&out).iter().any(|e| e["level"] == "warn" && e["text"].as_str().unwrap().contains(CURRENT_TOOLCHAIN));
    assert!(warned, "the override is warned about");
    assert!(steps(&out).iter().any(|s| s.starts_with(&format!("cargo +{CURRENT_TOOLCHAIN} build"))));
    assert_eq!(state_json(&wd)["build"]["toolchain"], CURRENT_TOOLCHAIN);
}

#[test]
fn a_git_source_is_cloned_at_its_rev_into_the_state_directory() {
    let fixture = NeonFixture::new(CURRENT_TOOLCHAIN);
    let git =
        |args: &[&str]| assert!(std::process::Command::new("git").arg("-C").arg(fixture.path()).args(args).status().unwrap().success());
    git(&["tag", "release-1"]);
    // A later commit that must not be built.
    std::fs::write(fixture.path().join("proxy/main.rs"), "fn main() { println!(\"proxy from a later commit\"); }\n").unwrap();
    git(&["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qam", "later"]);

    let wd = Workdir::new();
    let url = format!("file://{}", fixture.arg());
    std::fs::write(wd.path().join("neonctl-aws.yaml"), format!("neon:\n  source:\n    git: {url}\n    rev: release-1\n")).unwrap();
    let plan = host_tools(&mut wd.cmd(&["build", "--plan", "--output", "json"])).output().unwrap();
    let actions = plan_actions(&plan, "build");
    assert_eq!(actions[0]["target"], format!("git clone {url}"), "{actions:?}");

    let out = host_tools(&mut wd.cmd(&["build", "--output", "json"])).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let record = state_json(&wd)["build"].clone();
    assert_eq!(record["source"], wd.state_dir().join("src/neon").display().to_string());
    let proxy = record["artifacts"]["proxy"]["path"].as_str().unwrap();
    let run = std::process::Command::new(proxy).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&run.stdout).trim(), "proxy stand-in", "the tagged commit was built");
    assert_eq!(record["version"], "release-1");

    let again = host_tools(&mut wd.cmd(&["build", "--plan", "--output", "json"])).output().unwrap();
    assert_eq!(plan_actions(&again, "build"), Vec::<serde_json::Value>::new());
}

#[test]
fn mold_links_when_present_and_neon_rustflags_are_kept() {
    let fixture = NeonFixture::new(CURRENT_TOOLCHAIN);
    // A stand-in mold: gcc's -fuse-ld=mold runs `ld.mold`, which logs and hands over to ld.
    let tools = tempfile::tempdir().unwrap();
    let marker = tools.path().join("linked");
    let script = |name: &str, body: &str| {
        let path = tools.path().join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    };
    script("mold", "echo 'mold 2.37.1 (stand-in)'");
    script("ld.mold", &format!("echo \"$@\" >> {}\nexec ld \"$@\"", marker.display()));
    let path = format!("{}:{}", tools.path().display(), std::env::var("PATH").unwrap());

    let wd = Workdir::new();
    let out = host_tools(&mut wd.cmd(&["build", "--neon-src", &fixture.arg(), "--output", "json"])).env("PATH", path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(steps(&out).iter().any(|s| s.contains("-fuse-ld=mold")), "{:?}", steps(&out));
    let linked = std::fs::read_to_string(&marker).expect("ld.mold ran");
    assert!(linked.lines().count() >= BINARIES.len(), "every binary is linked with mold: {linked}");
    let proxy = state_json(&wd)["build"]["artifacts"]["proxy"]["path"].as_str().unwrap().to_string();
    let run = std::process::Command::new(proxy).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&run.stdout).trim(), "proxy stand-in", "built with Neon's --cfg kept");
}

#[test]
fn a_state_directory_inside_the_checkout_is_not_an_input() {
    let fixture = NeonFixture::new(CURRENT_TOOLCHAIN);
    let wd = Workdir::new();
    let run = |extra: &[&str]| {
        let mut args = vec!["build", "--output", "json"];
        args.extend_from_slice(extra);
        host_tools(&mut wd.cmd(&args))
            .current_dir(fixture.path())
            .env("NEONCTL_AWS_STATE", fixture.path().join(".neonctl-aws"))
            .output()
            .unwrap()
    };
    std::fs::write(fixture.path().join("neonctl-aws.yaml"), "neon:\n  source:\n    path: .\n").unwrap();
    assert!(std::process::Command::new("git").arg("-C").arg(fixture.path()).args(["add", "neonctl-aws.yaml"]).status().unwrap().success());
    let out = run(&[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let plan = run(&["--plan"]);
    assert_eq!(plan_actions(&plan, "build"), Vec::<serde_json::Value>::new());
}

#[test]
fn ctrl_c_stops_the_run_saves_the_state_and_exits_130() {
    let fixture = NeonFixture::new(CURRENT_TOOLCHAIN);
    let wd = Workdir::new();
    let src = fixture.arg();
    let mut child = host_tools(&mut wd.cmd(&["build", "--neon-src", &src, "--output", "json"]))
        .env("SLOW_STEP", "postgres-headers")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Interrupt while the slow make step runs, as Ctrl-C would.
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains("\"step_started\"") && line.contains("postgres-headers") {
            break;
        }
    }
    assert!(std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let rest: Vec<serde_json::Value> = lines.map(|l| serde_json::from_str(&l.unwrap()).unwrap()).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{rest:?}");
    assert!(rest.iter().any(|e| e["event"] == "phase_finished" && e["phase"] == "build" && e["outcome"] == "interrupted"), "{rest:?}");
    assert!(rest.iter().any(|e| e["event"] == "message" && e["text"].as_str().unwrap_or_default().contains("run the same command again")));
    assert_eq!(state_json(&wd)["phases"]["build"]["status"], "interrupted");

    // The same command resumes and finishes.
    let out = build(&wd, &fixture, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(state_json(&wd)["phases"]["build"]["status"], "succeeded");
}
