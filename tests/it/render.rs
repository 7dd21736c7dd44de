//! `render`: the manifests of the default config and of a bring-your-own config, snapshotted,
//! and validated strictly (unknown fields are errors) against the Kubernetes schema of the
//! configured version with `kubernetes-validate` (PyPI; `bash .ci/run` installs it).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{Workdir, json_events, stderr, stdout};

/// The validator: $NEONCTL_TEST_KUBERNETES_VALIDATE, else `kubernetes-validate` on PATH.
fn validator() -> PathBuf {
    if let Some(path) = std::env::var_os("NEONCTL_TEST_KUBERNETES_VALIDATE") {
        return PathBuf::from(path);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("kubernetes-validate"))
        .find(|path| path.is_file())
        .expect("kubernetes-validate is not installed: pip install 'kubernetes-validate>=1.33,<2' (bash .ci/run does this)")
}

fn rendered_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    files
}

/// Every rendered file validates strictly against Kubernetes `version`.
fn validate(dir: &Path, version: &str) {
    let files = rendered_files(dir);
    assert!(!files.is_empty());
    let output = Command::new(validator())
        .args(["--strict", "--quiet", "--kubernetes-version", version])
        .args(&files)
        .output()
        .expect("run kubernetes-validate");
    let report = format!("{}{}", stdout(&output), stderr(&output));
    assert!(output.status.success(), "kubernetes-validate --strict -k {version} failed:\n{report}");
    assert!(!report.contains("ERROR"), "{report}");
}

fn snapshot(name: &str, dir: &Path) {
    for file in rendered_files(dir) {
        let file_name = file.file_name().unwrap().to_string_lossy().into_owned();
        insta::assert_snapshot!(format!("{name}-{file_name}"), std::fs::read_to_string(&file).unwrap());
    }
}

#[test]
fn default_config_renders_valid_manifests() {
    let wd = Workdir::new();
    let out = wd.run(&["render", "--out", "manifests", "--output", "plain"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let dir = wd.path().join("manifests");
    assert_eq!(rendered_files(&dir).len(), 12);
    // What is guessed is said, with what settles it.
    let err = stderr(&out);
    assert!(err.contains("zones us-east-1a, us-east-1b, us-east-1c are guessed"), "{err}");
    assert!(err.contains("image pageserver is referenced by tag (neon/pageserver:latest)"), "{err}");
    assert!(err.contains("no IRSA role for the pageserver"), "{err}");
    assert!(stdout(&out).contains("neon-storcon-db"), "the Secrets to create are listed");
    assert!(stdout(&out).contains("wrote 12 files to manifests"));
    snapshot("default", &dir);
    validate(&dir, "1.33");
    assert!(!wd.state_dir().exists(), "render needs no state");

    // What the control plane makes of each endpoint from the rendered topology validates too.
    let text = std::fs::read_to_string(dir.join("50-control-plane.yaml")).unwrap();
    let objects: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap();
    let config_map = objects.iter().find(|o| o["kind"] == "ConfigMap").unwrap();
    let topology: neonctl_aws::neon::control_plane::Topology =
        serde_json::from_str(config_map["data"]["topology.json"].as_str().unwrap()).unwrap();
    let spec = neonctl_contract::resources::EndpointSpec { branch: "main".into(), ..Default::default() };
    let mut endpoint = neonctl_contract::resources::NeonEndpoint::new("main", spec);
    endpoint.metadata.uid = Some("3f2a6c1e-8d4b-4e5f-9a7b-0c1d2e3f4a5b".into());
    let computes = wd.path().join("computes");
    std::fs::create_dir(&computes).unwrap();
    let deployment = serde_json::to_string(&topology.compute.deployment(&endpoint, crate::controlplane::TIMELINE)).unwrap();
    let service = serde_json::to_string(&topology.compute.service(&endpoint)).unwrap();
    std::fs::write(computes.join("compute-main.yaml"), format!("{deployment}\n---\n{service}\n")).unwrap();
    validate(&computes, "1.33");
}

#[test]
fn bring_your_own_cluster_renders_valid_manifests() {
    let wd = Workdir::new();
    std::fs::write(
        wd.path().join("neonctl-aws.yaml"),
        "prefix: acme\nregion: eu-west-1\ncluster:\n  kubernetes_version: \"1.31\"\nneon:\n  pageservers: 2\n\
         images:\n  registry: registry.example.com:5000/platform\nbucket:\n  name: acme-neon-data\n  endpoint: http://minio.storage.svc:9000\n",
    )
    .unwrap();
    let digest = format!("sha256:{}", "0f".repeat(32));
    let pageserver = format!("--image=pageserver=registry.example.com:5000/platform/acme/pageserver@{digest}");
    let out = wd.run(&[
        "render",
        "--out",
        "byo",
        "--namespace",
        "neon-acme",
        "--zones",
        "eu-west-1a,eu-west-1b",
        "--external-storcon-db",
        "--storage-class",
        "gp3-existing",
        "--proxy-domain",
        "db.acme.example",
        &pageserver,
        "--output",
        "json",
    ]);
    assert!(out.status.success(), "{}", stdout(&out));
    let events = json_events(&out);
    let result = events.iter().find(|e| e["event"] == "result" && e["kind"] == "render").expect("a render result");
    let data = &result["data"];
    assert_eq!(data["out"], "byo");
    let db = data["secrets"].as_array().unwrap().iter().find(|s| s["name"] == "acme-storcon-db").unwrap();
    assert_eq!(db["keys"], serde_json::json!(["database-url"]), "an external database needs only its URL");
    let s3 = data["secrets"].as_array().unwrap().iter().find(|s| s["name"] == "acme-s3-credentials").expect("the S3 credentials Secret");
    assert_eq!(s3["keys"], serde_json::json!(["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]));
    let assumptions: Vec<&str> = data["assumptions"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert!(
        !assumptions.iter().any(|a| a.contains("guessed") || a.contains("bucket") || a.contains("image pageserver")),
        "{assumptions:?}"
    );
    assert!(assumptions.iter().any(|a| a.contains("span 2 zone(s)") && a.contains("--timelines-onto-safekeepers")), "{assumptions:?}");
    assert!(assumptions.iter().any(|a| a.contains("registry.example.com:5000/platform/acme/proxy:latest")), "{assumptions:?}");
    let dir = wd.path().join("byo");
    let names: Vec<String> = rendered_files(&dir).iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert!(!names.iter().any(|n| n.contains("storage-class") || n.contains("storage-controller-db")), "{names:?}");
    snapshot("byo", &dir);
    validate(&dir, "1.31");
}

#[test]
fn a_re_render_replaces_its_own_files_only() {
    let wd = Workdir::new();
    assert!(wd.run(&["render", "--out", "m"]).status.success());
    let dir = wd.path().join("m");
    std::fs::write(dir.join("extra.yaml"), "kind: ConfigMap\n").unwrap();
    let out = wd.run(&["render", "--out", "m", "--external-storcon-db"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!dir.join("20-storage-controller-db.yaml").exists(), "the stale file of the earlier render is gone");
    assert!(dir.join("extra.yaml").exists(), "a file render did not write is kept");

    std::fs::write(dir.join("70-proxy.yaml"), "# mine\n").unwrap();
    let out = wd.run(&["render", "--out", "m"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("70-proxy.yaml exists and was not written by render"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(dir.join("70-proxy.yaml")).unwrap(), "# mine\n", "a foreign file is never overwritten");
}

#[test]
fn bad_render_flags_are_usage_errors() {
    let wd = Workdir::new();
    for (flag, needle) in [
        ("--image=pagesrv=x:1", "not an image this deployment uses"),
        ("--image=pageserver", "expected IMAGE=REFERENCE"),
        ("--image=pageserver=repo@sha256:123", "not an image reference"),
        ("--namespace=Bad_NS", "--namespace `Bad_NS` is not a valid name"),
    ] {
        let out = wd.run(&["render", "--out", "m", flag]);
        assert_eq!(out.status.code(), Some(2), "{flag}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{flag}: {}", stderr(&out));
    }
    assert!(!wd.path().join("m").exists(), "nothing is written when the inputs are refused");
}
