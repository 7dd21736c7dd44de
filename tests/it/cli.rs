//! The command line as users meet it: help, config errors, plans, output modes, the state file.

use crate::support::{Workdir, json_events, stderr, stdout};

/// Durations vary between runs; snapshots see them as `<secs>`.
fn settle(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let mut words: Vec<String> = Vec::new();
        for word in line.split(' ') {
            let is_secs = |w: &str| w.strip_suffix('s').is_some_and(|n| n.parse::<f64>().is_ok());
            let w = match word {
                w if is_secs(w.trim_matches(|c| c == '(' || c == ')' || c == ';')) => {
                    w.replace(w.trim_matches(|c| c == '(' || c == ')' || c == ';'), "<secs>")
                }
                w => w.to_string(),
            };
            words.push(w);
        }
        out.push_str(&words.join(" "));
        out.push('\n');
    }
    out
}

#[test]
fn help_texts() {
    let wd = Workdir::new();
    let top = wd.run(&["--help"]);
    assert!(top.status.success());
    insta::assert_snapshot!("help", stdout(&top));
    for sub in ["init", "prereqs", "build", "images", "infra", "push", "deploy", "render", "up", "status", "iam-policy", "teardown"] {
        let out = wd.run(&[sub, "--help"]);
        assert!(out.status.success(), "{sub} --help");
        let text = stdout(&out);
        assert!(text.contains("Example"), "{sub} --help shows an example");
        insta::assert_snapshot!(format!("help-{sub}"), text);
    }
}

/// Completion scripts for every shell kubectl and eksctl support, and the man page, from the
/// same definition as --help; bash and zsh parse their scripts.
#[test]
fn completions_and_the_man_page() {
    let wd = Workdir::new();
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let out = wd.run(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        for word in ["deploy", "teardown", "kubeconfig", "plan"] {
            assert!(script.contains(word), "{shell} completes {word}");
        }
        assert!(stderr(&out).is_empty(), "nothing else is printed: {}", stderr(&out));
        if let Some(check) = match shell {
            "bash" => Some("bash"),
            "zsh" if std::path::Path::new("/usr/bin/zsh").exists() => Some("zsh"),
            _ => None,
        } {
            let path = wd.path().join(format!("completion.{shell}"));
            std::fs::write(&path, &script).unwrap();
            let parsed = std::process::Command::new(check).arg("-n").arg(&path).output().unwrap();
            assert!(parsed.status.success(), "{shell} parses it: {}", String::from_utf8_lossy(&parsed.stderr));
        }
    }
    let out = wd.run(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "an unknown shell is a usage error");

    let out = wd.run(&["man"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let page = stdout(&out);
    assert!(page.starts_with(".ie") || page.contains(".TH neonctl-aws 1"), "roff: {}", &page[..page.len().min(200)]);
    assert!(page.contains("teardown") && page.contains("completions"), "the subcommands are listed");
    assert!(!stdout(&wd.run(&["--help"])).contains("\n  man "), "man is hidden from --help");
}

#[test]
fn config_errors_stop_before_any_external_call() {
    let wd = Workdir::new();
    std::fs::write(wd.path().join("neonctl-aws.yaml"), "cluster:\n  node_cout: 3\n").unwrap();
    let out = wd.run(&["up", "--output", "json"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let events = json_events(&out);
    let error = events.iter().find(|e| e["event"] == "error").expect("an error event");
    assert_eq!(error["message"], "neonctl-aws.yaml: unknown key `cluster.node_cout`; did you mean `node_count`?");
    let summary = events.last().unwrap();
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["calls"], serde_json::json!({}));
    assert!(!wd.state_dir().exists(), "a refused run leaves no state behind");

    let out = Workdir::new().run(&["infra", "--region", "us-east-9"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("`us-east-9` is not an AWS region"), "{}", stderr(&out));
    let out = Workdir::new().run(&["infra", "--prefix", "Neon"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("uppercase"), "{}", stderr(&out));
}

#[test]
fn init_writes_a_loadable_commented_file_once() {
    let wd = Workdir::new();
    let out = wd.run(&["init", "--prefix", "acme", "--region", "eu-west-1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(wd.path().join("neonctl-aws.yaml")).unwrap();
    assert!(text.contains("prefix: acme") && text.contains("region: eu-west-1") && text.contains("# "));
    let again = wd.run(&["init"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(stderr(&again).contains("--force"));
    assert!(wd.run(&["init", "--force"]).status.success());
}

#[test]
fn plain_and_json_plan_output() {
    let wd = Workdir::new();
    // The support dates of Kubernetes versions are read as of a fixed day.
    let run = |args: &[&str]| wd.cmd(args).env(neonctl_aws::phases::infra::versions::TODAY_ENV, "2026-11-26").output().unwrap();
    let plain = run(&["up", "--plan", "--output", "plain"]);
    assert!(plain.status.success(), "{}", stderr(&plain));
    // The default parallelism depends on the machine.
    let jobs = [(r"--jobs=\d+", "--jobs=<N>")];
    insta::with_settings!({filters => jobs.to_vec()}, {
        insta::assert_snapshot!("up-plan-plain", settle(&stdout(&plain)));
    });
    let json = run(&["up", "--plan", "--output", "json"]);
    assert!(json.status.success());
    let events: Vec<serde_json::Value> = json_events(&json)
        .into_iter()
        .map(|mut e| {
            if e.get("seconds").is_some() {
                e["seconds"] = serde_json::json!("<secs>");
            }
            e
        })
        .collect();
    // Sorted keys: a dev-dependency turns on serde_json's preserve_order in test builds.
    insta::with_settings!({sort_maps => true, filters => jobs.to_vec()}, {
        insta::assert_json_snapshot!("up-plan-json", events);
    });
    assert!(!wd.state_dir().join("state.json").exists(), "--plan writes no state");
}

#[test]
fn a_second_run_is_refused_while_the_lock_is_held() {
    let wd = Workdir::new();
    let _held = neonctl_aws::state::StateStore::open(&wd.state_dir(), "neonctl-aws up").unwrap();
    let out = wd.run(&["infra"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(&format!("pid {}", std::process::id())) && err.contains("`neonctl-aws up`"), "{err}");
}

#[test]
fn the_state_survives_a_kill_between_write_and_rename() {
    let wd = Workdir::new();
    // A first run records its (refused) phase; that is the state to keep.
    let first = wd.run(&["deploy"]);
    assert_eq!(first.status.code(), Some(1));
    let state_file = wd.state_dir().join("state.json");
    let before = std::fs::read(&state_file).unwrap();

    let crashed = wd.cmd(&["deploy"]).env(neonctl_aws::crash::ENV, "state-before-rename").output().unwrap();
    assert!(!crashed.status.success() && crashed.status.code().is_none(), "the run was killed by the crash point");
    assert_eq!(std::fs::read(&state_file).unwrap(), before, "the old state is intact");
    let leftovers: Vec<_> =
        std::fs::read_dir(wd.state_dir()).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".tmp")).collect();
    assert_eq!(leftovers.len(), 1, "the killed run left its temp file");

    // The next run loads the old state, cleans the temp file and carries on.
    let again = wd.run(&["deploy"]);
    assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
    assert!(std::fs::read_dir(wd.state_dir()).unwrap().flatten().all(|e| !e.file_name().to_string_lossy().ends_with(".tmp")));
    neonctl_aws::state::read(&wd.state_dir()).unwrap();
}

#[test]
fn corrupt_and_future_state_files_are_refused_untouched() {
    for (content, needle) in [
        ("{\"schema_version\": 1, \"written_by\"", "is not a valid state file"),
        ("{\"schema_version\": 99, \"written_by\": \"neonctl-aws 9.9.9\"}", "schema_version 99"),
    ] {
        let wd = Workdir::new();
        std::fs::create_dir_all(wd.state_dir()).unwrap();
        std::fs::write(wd.state_dir().join("state.json"), content).unwrap();
        for args in [&["infra"][..], &["status"][..]] {
            let out = wd.run(args);
            assert_eq!(out.status.code(), Some(2), "{args:?}");
            assert!(stderr(&out).contains(needle), "{}", stderr(&out));
        }
        assert_eq!(std::fs::read_to_string(wd.state_dir().join("state.json")).unwrap(), content);
    }
}

#[test]
fn status_reads_without_locking() {
    let wd = Workdir::new();
    let _held = neonctl_aws::state::StateStore::open(&wd.state_dir(), "neonctl-aws up").unwrap();
    let out = wd.run(&["status", "--output", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let events = json_events(&out);
    assert!(events.iter().any(|e| e["kind"] == "status"));
}

#[test]
fn iam_policy_prints_a_scoped_policy_document() {
    let out = Workdir::new().run(&["iam-policy", "--prefix", "acme", "--for", "infra,teardown"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(doc["Version"], "2012-10-17");
    let text = doc.to_string();
    assert!(text.contains("arn:aws:eks:us-east-1:*:cluster/acme") && text.contains("/neonctl-aws/acme/"), "{text}");
    assert!(!text.contains("\"*:*\"") && !text.contains("\"Action\":\"*\""));
    assert!(!text.contains("EcrPushAndPull"), "push statements only with --for push");
}
