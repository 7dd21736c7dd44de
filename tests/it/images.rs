//! `images` and `push` with the real Docker Engine: images FROM scratch built from the stand-in
//! build, each binary run inside its image, then pushed to a registry on loopback (Debian's
//! docker-registry) and pushed again without uploading a byte.

use std::process::{Command, Output};

use crate::build::build;
use crate::neon_fixture::{CURRENT_TOOLCHAIN, NeonFixture};
use crate::stand_ins::{REGISTRY_PASSWORD, REGISTRY_USER, Registry, http_get};
use crate::support::{Workdir, host_tools, json_events, state_json, stderr};

fn docker(args: &[&str]) -> Output {
    Command::new("docker").args(args).output().expect("the docker CLI")
}

/// Removes the images a test made, whatever happens to the test.
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            let mut args = vec!["rmi", "-f"];
            args.extend(self.0.iter().map(String::as_str));
            let _ = docker(&args);
        }
    }
}

fn run_phase(wd: &Workdir, phase: &str) -> Output {
    host_tools(&mut wd.cmd(&[phase, "--output", "json"])).output().unwrap()
}

fn docker_calls(out: &Output) -> serde_json::Value {
    json_events(out).last().unwrap()["calls"]["docker"].clone()
}

fn uploaded(out: &Output) -> u64 {
    let events = json_events(out);
    let text = events
        .iter()
        .filter_map(|e| e["text"].as_str())
        .find_map(|t| t.strip_prefix("uploaded "))
        .unwrap_or_else(|| panic!("an `uploaded` message in {events:?}"))
        .to_string();
    text.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn images_from_scratch_run_their_binaries_and_push_to_a_registry_once() {
    let fixture = NeonFixture::new(CURRENT_TOOLCHAIN);
    let wd = Workdir::new();
    // Image names are per run: another run on the same engine may clean up its own.
    let prefix = format!("it{}", std::process::id());
    std::fs::write(wd.path().join("neonctl-aws.yaml"), format!("prefix: {prefix}\n")).unwrap();
    let out = build(&wd, &fixture, &[]);
    assert!(out.status.success(), "{}", stderr(&out));

    let out = run_phase(&wd, "images");
    assert!(out.status.success(), "{}\n{}", stderr(&out), String::from_utf8_lossy(&out.stdout));
    let state = state_json(&wd);
    let images = state["images"].as_object().unwrap().clone();
    let mut cleanup = Cleanup(images.values().map(|r| r["tag"].as_str().unwrap().to_string()).collect());
    assert_eq!(images.len(), 7);

    let expected = [
        ("pageserver", "pageserver stand-in 0.1.0"),
        ("safekeeper", "safekeeper stand-in 0.1.0"),
        ("storage-broker", "storage_broker stand-in 0.1.0"),
        ("storage-controller", "storage_controller stand-in 0.1.0"),
        ("proxy", "proxy stand-in 0.1.0"),
        ("compute", "compute_ctl stand-in 0.1.0"),
        ("control-plane", &format!("neonctl-aws-control-plane {}", env!("CARGO_PKG_VERSION"))),
    ];
    for (image, says) in expected {
        let tag = images[image]["tag"].as_str().unwrap();
        let hash = &images[image]["context_sha256"].as_str().unwrap()[..12];
        assert_eq!(tag, format!("{prefix}/{image}:{hash}"));
        let (size, content) = (images[image]["size"].as_f64().unwrap(), images[image]["content_bytes"].as_f64().unwrap());
        assert!(content > 0.0 && size <= 1.15 * content, "{image}: {size} image bytes for {content} bytes of files");
        let run = docker(&["run", "--rm", "--network", "none", tag, "--version"]);
        assert!(run.status.success(), "{image}: {}", String::from_utf8_lossy(&run.stderr));
        assert_eq!(String::from_utf8_lossy(&run.stdout).trim(), says, "{image}");
        let format = "{{.Config.User}} {{index .Config.Labels \"org.opencontainers.image.revision\"}} {{index .Config.Labels \"org.opencontainers.image.version\"}}";
        let inspect = docker(&["image", "inspect", "--format", format, tag]);
        let inspect = String::from_utf8_lossy(&inspect.stdout).trim().to_string();
        let fields: Vec<&str> = inspect.split(' ').collect();
        assert_eq!(fields[0], "1000:1000", "{image} runs as neon");
        if image != "control-plane" {
            assert_eq!(fields[1], state["build"]["revision"], "{image}");
            assert_eq!(fields[2], state["build"]["version"], "{image}");
        }
    }
    // The control plane's executable is a Linux ELF for these nodes without the CLI's AWS SDK
    // or Docker client in it.
    let control_plane = std::fs::read(crate::support::CONTROL_PLANE_BIN).unwrap();
    let host = neonctl_aws::platform::Arch::from_rust(std::env::consts::ARCH).unwrap();
    assert_eq!(neonctl_aws::platform::executable_arch(&control_plane), Ok(host));
    for needle in ["aws_sdk_", "aws_smithy_", "bollard"] {
        assert!(!control_plane.windows(needle.len()).any(|w| w == needle.as_bytes()), "{needle} in the control plane");
    }
    let cli = std::fs::read(crate::support::BIN).unwrap();
    assert!(cli.windows(8).any(|w| w == b"aws_sdk_"), "the check would see them");
    // A CLI that changed (its own code only) builds the same control-plane image: nothing to do.
    let other = tempfile::tempdir().unwrap();
    let changed_cli = other.path().join("neonctl-aws");
    std::fs::write(&changed_cli, [cli, b"changed".to_vec()].concat()).unwrap();
    std::fs::copy(crate::support::CONTROL_PLANE_BIN, other.path().join("neonctl-aws-control-plane")).unwrap();
    let chmod = Command::new("chmod").arg("+x").arg(&changed_cli).status().unwrap();
    assert!(chmod.success());
    let plan = host_tools(&mut wd.cmd_of(&changed_cli, &["images", "--plan", "--output", "json"])).output().unwrap();
    assert!(plan.status.success(), "{}", stderr(&plan));
    let planned: Vec<serde_json::Value> =
        json_events(&plan).into_iter().filter_map(|e| e["actions"].as_array().cloned()).flatten().collect();
    assert!(planned.is_empty(), "no image is rebuilt for a CLI change: {planned:?}");

    // images.strip (the default): each binary goes in without its debug info (neon builds with
    // `debug = true`, as the fixture does), which stays in .neonctl-aws/debug/ for symbolizing.
    let sections = |file: &std::path::Path| -> String {
        let out = Command::new("readelf").args(["-S", "-W"]).arg(file).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let built = std::path::PathBuf::from(state["build"]["artifacts"]["pageserver"]["path"].as_str().unwrap());
    assert!(sections(&built).contains(".debug_info"), "the fixture builds with debug info");
    assert!(sections(&wd.path().join(".neonctl-aws/debug/pageserver.debug")).contains(".debug_info"), "the debug info is kept");
    let container = docker(&["create", images["pageserver"]["tag"].as_str().unwrap()]);
    let container = String::from_utf8_lossy(&container.stdout).trim().to_string();
    let copy = tempfile::tempdir().unwrap();
    let copied = docker(&["cp", &format!("{container}:/usr/local/bin/pageserver"), &copy.path().display().to_string()]);
    docker(&["rm", &container]);
    assert!(copied.status.success(), "{}", String::from_utf8_lossy(&copied.stderr));
    let shipped = sections(&copy.path().join("pageserver"));
    assert!(!shipped.contains(".debug_info") && shipped.contains(".gnu_debuglink"), "the image's pageserver is stripped: {shipped}");

    // Postgres in the compute image (and the pageserver's WAL redo copy) runs too.
    let compute = images["compute"]["tag"].as_str().unwrap();
    let run = docker(&["run", "--rm", "--network", "none", "--entrypoint", "/usr/local/bin/postgres", compute, "--version"]);
    assert_eq!(
        String::from_utf8_lossy(&run.stdout).trim(),
        "postgres (PostgreSQL) 17.5 stand-in",
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let pageserver = images["pageserver"]["tag"].as_str().unwrap();
    let run = docker(&["run", "--rm", "--network", "none", "--entrypoint", "/usr/local/v17/bin/postgres", pageserver, "--version"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));

    // One layer; the user's directories belong to the user.
    let layers = docker(&["image", "inspect", "--format", "{{len .RootFS.Layers}}", compute]);
    assert_eq!(String::from_utf8_lossy(&layers.stdout).trim(), "1");
    let listing = Command::new("sh")
        .arg("-c")
        .arg(format!("c=$(docker create {compute}) && docker export $c | tar -tv --numeric-owner; docker rm $c >/dev/null"))
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    let data = listing.lines().find(|l| l.ends_with(" data/")).unwrap_or_else(|| panic!("/data in {listing}"));
    assert!(data.contains("1000/1000"), "{data}");

    // Unchanged inputs: nothing to plan, nothing rebuilt.
    let plan = host_tools(&mut wd.cmd(&["images", "--plan", "--output", "json"])).output().unwrap();
    let events = json_events(&plan);
    let actions = &events.iter().find(|e| e["event"] == "plan").unwrap()["actions"];
    assert_eq!(actions, &serde_json::json!([]), "{events:?}");
    let again = run_phase(&wd, "images");
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(docker_calls(&again)["mutating"], 0);
    assert_eq!(state_json(&wd)["images"], state["images"]);

    // Push to a registry on loopback.
    let registry = Registry::start();
    let target = format!("127.0.0.1:{}/it", registry.port);
    std::fs::write(wd.path().join("neonctl-aws.yaml"), format!("prefix: {prefix}\nimages:\n  registry: {target}\n")).unwrap();
    let out = run_phase(&wd, "push");
    assert!(out.status.success(), "{}\n{}", stderr(&out), String::from_utf8_lossy(&out.stdout));
    let first_upload = uploaded(&out);
    assert!(first_upload > 0);
    let pushed = state_json(&wd)["push"].as_object().unwrap().clone();
    assert_eq!(pushed.len(), 7);
    for (image, record) in &pushed {
        let digest_ref = record["digest_ref"].as_str().unwrap();
        let (repo, digest) = digest_ref.split_once('@').unwrap();
        assert_eq!(repo, format!("{target}/{image}"));
        assert!(digest.starts_with("sha256:") && digest.len() == 71, "{digest_ref}");
        cleanup.0.push(record["tag"].as_str().unwrap().to_string());
        let tag = record["tag"].as_str().unwrap().rsplit_once(':').unwrap().1;
        let (status, _) = http_get(registry.port, &format!("/v2/it/{image}/manifests/{tag}")).unwrap();
        assert_eq!(status, 200, "the registry has {image}:{tag}");
    }
    let (_, catalog) = http_get(registry.port, "/v2/_catalog").unwrap();
    assert!(catalog.contains("it/compute") && catalog.contains("it/control-plane"), "{catalog}");

    // Again: the registry has everything; nothing to plan, zero bytes go up, no mutating call.
    let plan = host_tools(&mut wd.cmd(&["push", "--plan", "--output", "json"])).output().unwrap();
    let events = json_events(&plan);
    assert_eq!(events.iter().find(|e| e["event"] == "plan").unwrap()["actions"], serde_json::json!([]), "{events:?}");
    let out = run_phase(&wd, "push");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(uploaded(&out), 0);
    assert_eq!(docker_calls(&out)["mutating"], 0);
    assert_eq!(state_json(&wd)["push"].as_object().unwrap(), &pushed);

    // A registry that wants a login: refused without it, pushed to with it.
    let private = Registry::start_authenticated();
    let private_target = format!("127.0.0.1:{}/private", private.port);
    std::fs::write(wd.path().join("neonctl-aws.yaml"), format!("prefix: {prefix}\nimages:\n  registry: {private_target}\n")).unwrap();
    let out = host_tools(&mut wd.cmd(&["push"])).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("check images.registry and the registry credentials"), "{}", stderr(&out));
    let out = host_tools(&mut wd.cmd(&["push"])).env("NEONCTL_AWS_REGISTRY_USERNAME", REGISTRY_USER).output().unwrap();
    assert!(stderr(&out).contains("set both NEONCTL_AWS_REGISTRY_USERNAME and NEONCTL_AWS_REGISTRY_PASSWORD"), "{}", stderr(&out));
    let out = host_tools(&mut wd.cmd(&["push", "--output", "json"]))
        .env("NEONCTL_AWS_REGISTRY_USERNAME", REGISTRY_USER)
        .env("NEONCTL_AWS_REGISTRY_PASSWORD", REGISTRY_PASSWORD)
        .output()
        .unwrap();
    let private_push = state_json(&wd)["push"].clone();
    cleanup.0.extend(private_push.as_object().unwrap().values().map(|r| r["tag"].as_str().unwrap().to_string()));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(!String::from_utf8_lossy(&out.stdout).contains(REGISTRY_PASSWORD), "the password is never shown");
    assert!(!std::fs::read_to_string(wd.state_dir().join("state.json")).unwrap().contains(REGISTRY_PASSWORD));
    assert!(private_push["compute"]["digest_ref"].as_str().unwrap().starts_with(&format!("{private_target}/compute@sha256:")));
    std::fs::write(wd.path().join("neonctl-aws.yaml"), format!("prefix: {prefix}\nimages:\n  registry: {target}\n")).unwrap();

    // A changed proxy: a new revision, so every Neon image gets new labels and is rebuilt
    // (each superseded one untagged), but only the proxy's layer is new to the registry.
    std::fs::write(fixture.path().join("proxy/main.rs"), "fn main() { println!(\"proxy stand-in 2\"); }\n").unwrap();
    assert!(build(&wd, &fixture, &[]).status.success());
    let out = run_phase(&wd, "images");
    let after = state_json(&wd)["images"].clone();
    cleanup.0.extend(after.as_object().unwrap().values().map(|r| r["tag"].as_str().unwrap().to_string()));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(docker_calls(&out)["mutating"], 12, "six builds, six untags");
    assert_eq!(after["control-plane"], images["control-plane"], "the control plane does not depend on Neon");
    let (old_proxy, new_proxy) = (images["proxy"]["tag"].as_str().unwrap(), after["proxy"]["tag"].as_str().unwrap());
    assert_ne!(new_proxy, old_proxy);
    assert!(!docker(&["image", "inspect", old_proxy]).status.success(), "{old_proxy} is untagged");
    let run = docker(&["run", "--rm", "--network", "none", new_proxy]);
    assert_eq!(String::from_utf8_lossy(&run.stdout).trim(), "proxy stand-in 2");
    assert_eq!(after["pageserver"]["content_bytes"], images["pageserver"]["content_bytes"]);

    let out = run_phase(&wd, "push");
    assert!(out.status.success(), "{}", stderr(&out));
    cleanup.0.extend(state_json(&wd)["push"].as_object().unwrap().values().map(|r| r["tag"].as_str().unwrap().to_string()));
    let bytes = uploaded(&out);
    assert!(bytes > 0 && bytes <= after["proxy"]["size"].as_u64().unwrap(), "only the new proxy layer goes up: {bytes} bytes");

    // images.base: nothing can be pulled here, so the base is one of our own images; the new
    // images add only their binary (and Postgres) on top of it.
    let base = after["control-plane"]["tag"].as_str().unwrap();
    std::fs::write(wd.path().join("neonctl-aws.yaml"), format!("prefix: {prefix}\nimages:\n  base: {base}\n  registry: {target}\n"))
        .unwrap();
    let out = run_phase(&wd, "images");
    let on_base = state_json(&wd)["images"].clone();
    cleanup.0.extend(on_base.as_object().unwrap().values().map(|r| r["tag"].as_str().unwrap().to_string()));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let safekeeper = on_base["safekeeper"]["tag"].as_str().unwrap();
    let run = docker(&["run", "--rm", "--network", "none", safekeeper, "--version"]);
    assert_eq!(String::from_utf8_lossy(&run.stdout).trim(), "safekeeper stand-in 0.1.0", "{}", String::from_utf8_lossy(&run.stderr));
    let layers = docker(&["image", "inspect", "--format", "{{len .RootFS.Layers}}", safekeeper]);
    assert_eq!(String::from_utf8_lossy(&layers.stdout).trim(), "2", "the base's layer and ours");
    let own = on_base["safekeeper"]["content_bytes"].as_u64().unwrap();
    assert!(own < after["safekeeper"]["content_bytes"].as_u64().unwrap(), "no libraries of our own on a base");
}

#[test]
fn images_and_push_say_what_to_run_first() {
    let wd = Workdir::new();
    let out = wd.run(&["images"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no finished build in the state; run `neonctl-aws build` first"), "{}", stderr(&out));
    let out = wd.run(&["push"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("run `neonctl-aws images` first"), "{}", stderr(&out));

    let fixture = NeonFixture::new(CURRENT_TOOLCHAIN);
    assert!(build(&wd, &fixture, &[]).status.success());
    let out = host_tools(&mut wd.cmd(&["images"])).env("DOCKER_HOST", "unix:///nonexistent/docker.sock").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot reach the Docker Engine") && stderr(&out).contains("DOCKER_HOST"), "{}", stderr(&out));
    // Planning still works, assuming nothing exists.
    let plan = host_tools(&mut wd.cmd(&["images", "--plan", "--output", "json"]))
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    assert!(plan.status.success(), "{}", stderr(&plan));
    let events = json_events(&plan);
    let plan = events.iter().find(|e| e["event"] == "plan").unwrap();
    assert_eq!(plan["actions"].as_array().unwrap().len(), 7);
    assert!(plan["notes"][0].as_str().unwrap().contains("assuming no image exists yet"), "{plan}");
}
