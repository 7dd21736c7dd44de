//! `prereqs` against this very machine: whatever it has installed, the rows, their statuses and
//! the exit code must agree.

use serde_json::Value;

use crate::support::{Workdir, json_events, stderr, stdout};

/// Every row `--for build` shows, libraries included (this runs on Linux).
const BUILD_ROWS: [&str; 17] = [
    "rustc",
    "cargo",
    "neon toolchain",
    "protoc",
    "clang",
    "make",
    "flex",
    "bison",
    "pkg-config",
    "openssl",
    "readline",
    "zlib",
    "libseccomp",
    "libcurl",
    "icu-uc",
    "git",
    "mold",
];

fn result<'a>(events: &'a [Value], kind: &str) -> Option<&'a Value> {
    events.iter().find(|e| e["event"] == "result" && e["kind"] == kind)
}

/// The rows of the `prereqs` result, checked for shape; returns them with the required ones
/// that are missing or too old.
fn rows(events: &[Value]) -> (Vec<Value>, Vec<String>) {
    let report = result(events, "prereqs").expect("a prereqs result");
    assert_eq!(report["data"]["for"], serde_json::json!(["build"]));
    assert!(report["data"]["os"]["family"].is_string(), "{report}");
    let rows = report["data"]["rows"].as_array().expect("rows").clone();
    let tools: Vec<&str> = rows.iter().map(|r| r["tool"].as_str().expect("tool")).collect();
    assert_eq!(tools, BUILD_ROWS);
    let mut failing = Vec::new();
    for row in &rows {
        let status = row["status"].as_str().expect("status");
        assert_eq!(row["needed_for"], serde_json::json!(["build"]), "{row}");
        assert_eq!(row["required"], row["tool"] != "mold", "{row}");
        match status {
            "ok" | "too_old" => assert!(row["found"].is_string(), "{row}"),
            "missing" | "recommended" => assert!(row["found"].is_null(), "{row}"),
            other => panic!("unexpected status {other}: {row}"),
        }
        assert_eq!(status == "recommended", row["tool"] == "mold" && row["found"].is_null(), "{row}");
        if matches!(status, "missing" | "too_old") {
            failing.push(row["tool"].as_str().unwrap().to_string());
        }
    }
    (rows, failing)
}

/// Exit 0 when nothing required fails, else 5 with an error naming each failing tool.
fn assert_verdict(out: &std::process::Output, events: &[Value], failing: &[String]) {
    if failing.is_empty() {
        assert_eq!(out.status.code(), Some(0), "{}", stderr(out));
        assert!(events.iter().all(|e| e["event"] != "error"));
        return;
    }
    assert_eq!(out.status.code(), Some(5), "{}", stderr(out));
    let error = events.iter().find(|e| e["event"] == "error").expect("an error event");
    let message = error["message"].as_str().unwrap();
    let plural = if failing.len() == 1 { "" } else { "s" };
    assert!(message.starts_with(&format!("{} required prerequisite{plural} missing: ", failing.len())), "{message}");
    for tool in failing {
        assert!(message.contains(tool.as_str()), "{message} names {tool}");
    }
    assert!(message.contains("prereqs --install --for build"), "{message}");
}

#[test]
fn checks_what_build_needs() {
    let wd = Workdir::new();
    let out = wd.run(&["prereqs", "--for", "build", "--output", "json"]);
    let events = json_events(&out);
    let (_, failing) = rows(&events);
    assert_verdict(&out, &events, &failing);
    assert_eq!(events.last().unwrap()["event"], "summary");
    assert!(result(&events, "install plan").is_none(), "a plain check plans no install");
}

#[test]
fn install_plan_lists_commands_and_runs_nothing() {
    let wd = Workdir::new();
    let out = wd.run(&["prereqs", "--install", "--plan", "--for", "build", "--output", "json"]);
    let events = json_events(&out);
    let (rows, failing) = rows(&events);
    assert_verdict(&out, &events, &failing);
    let not_ok = rows.iter().filter(|r| r["status"] != "ok").count();
    let plan = result(&events, "install plan");
    let has_commands = match plan {
        None => {
            assert_eq!(not_ok, 0, "something is missing, so there is a plan");
            assert!(events.iter().any(|e| e["text"] == "nothing to install"));
            false
        }
        Some(plan) => {
            assert!(not_ok > 0, "a plan only when something is missing");
            let commands = plan["data"]["commands"].as_array().expect("commands");
            let manual = plan["data"]["manual"].as_array().expect("manual");
            assert!(!commands.is_empty() || !manual.is_empty(), "{plan}");
            for argv in commands {
                let argv = argv.as_array().expect("an argv list");
                assert!(!argv.is_empty() && argv.iter().all(Value::is_string), "{plan}");
            }
            !commands.is_empty()
        }
    };

    // The same in text: the table, then the plan, the same verdict.
    let text = wd.run(&["prereqs", "--install", "--plan", "--for", "build"]);
    assert_eq!(text.status.code(), out.status.code(), "{}", stderr(&text));
    let shown = stdout(&text);
    assert!(shown.contains("needed for") && shown.contains("protoc >= 3.15"), "{shown}");
    assert_eq!(shown.contains("by hand") || shown.contains("run "), plan.is_some(), "{shown}");

    // Without --plan there is no terminal to ask on, so nothing runs without --yes.
    let refused = wd.run(&["prereqs", "--install", "--for", "build"]);
    if has_commands {
        assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
        assert!(stderr(&refused).contains("re-run with --yes"), "{}", stderr(&refused));
    } else {
        assert_eq!(refused.status.code(), out.status.code(), "{}", stderr(&refused));
    }
}
