//! `status` live checks: against the Kubernetes stand-in with `--kubeconfig`, and against moto's
//! EKS, whose API server endpoint does not exist.

use neonctl_contract::service::{PageserverStatus, StorageStatus};
use serde_json::{Value, json};

use crate::fake_kube::FakeKube;
use crate::moto::Moto;
use crate::support::{Workdir, json_events, stderr, stdout};

fn labels(component: &str) -> Value {
    json!({"app.kubernetes.io/managed-by": "neonctl-aws", "neonctl-aws/prefix": "neon", "app.kubernetes.io/name": component})
}

fn workload(kind: &str, name: &str, component: &str, replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": kind,
        "metadata": {"name": name, "namespace": "neon", "labels": labels(component)},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app.kubernetes.io/name": component}}, "template": {}},
    })
}

fn checks(out: &std::process::Output) -> Vec<Value> {
    let events = json_events(out);
    let result = events.iter().find(|e| e["kind"] == "status").unwrap_or_else(|| panic!("no status result: {events:?}"));
    result["data"]["live"].as_array().cloned().unwrap_or_default()
}

fn check<'a>(checks: &'a [Value], name: &str) -> &'a Value {
    checks.iter().find(|c| c["check"] == name).unwrap_or_else(|| panic!("no check {name}: {checks:#?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn status_checks_nodes_components_and_storage_on_a_kubeconfig_cluster() {
    let fake = FakeKube::start().await;
    let wd = Workdir::new();
    let kubeconfig = fake.kubeconfig(wd.path());
    let kubeconfig = kubeconfig.to_str().unwrap();
    for (name, ready) in [("node-a", "True"), ("node-b", "True")] {
        fake.put_object(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
            "status": {"conditions": [{"type": "Ready", "status": ready}]}}));
    }
    fake.put_object(workload("Deployment", "neon-storage-broker", "storage-broker", 1));
    fake.put_object(workload("StatefulSet", "neon-pageserver-1", "pageserver", 1));
    fake.put_object(workload("StatefulSet", "neon-pageserver-2", "pageserver", 1));
    let now = || time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap();
    let report_at = |checked_at: String, unauthenticated: bool| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "neon-control-plane-status", "namespace": "neon"},
        "data": {"storage.json": serde_json::to_string(&StorageStatus {
            checked_at,
            pageservers: (1..=2)
                .map(|id| PageserverStatus { id, availability: "Active".into(), scheduling: "Active".into(), availability_zone: "us-east-1a".into() })
                .collect(),
            safekeepers: vec![1, 2, 3],
            error: None,
            unauthenticated,
        }).unwrap()}})
    };
    let report = |unauthenticated: bool| report_at(now(), unauthenticated);
    fake.put_object(report(false));
    // Endpoints as the operator reports them: one running, one scaled to zero.
    for (name, phase, last_active) in [("main", "Active", "2026-11-26T09:00:00Z"), ("dev", "Suspended", "2026-11-26T08:00:00Z")] {
        fake.put_object(json!({"apiVersion": "neonctl-aws.dev/v1alpha1", "kind": "NeonEndpoint",
            "metadata": {"name": name, "namespace": "neon"}, "spec": {"branch": name},
            "status": {"phase": phase, "lastActive": last_active}}));
    }

    let out = wd.run(&["status", "--kubeconfig", kubeconfig, "--context", "fake", "--output", "json"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let live = checks(&out);
    assert_eq!(check(&live, "nodes")["detail"], "2/2 Ready");
    assert_eq!(check(&live, "pageserver")["outcome"], "ok");
    assert_eq!(check(&live, "pageserver")["detail"], "2/2 pods ready");
    assert_eq!(check(&live, "storage-broker")["outcome"], "ok");
    let storage = check(&live, "storage controller")["detail"].as_str().unwrap().to_string();
    assert!(storage.starts_with("2/2 pageservers active (reported ") && storage.ends_with("s ago)"), "{storage}");
    assert_eq!(check(&live, "control plane authentication")["outcome"], "ok");
    assert_eq!(
        check(&live, "endpoints")["detail"],
        "dev Suspended, last active 2026-11-26T08:00:00Z; main Active, last active 2026-11-26T09:00:00Z"
    );

    // A control plane started with --insecure-no-auth: said, without failing status.
    fake.put_object(report(true));
    let out = wd.run(&["status", "--kubeconfig", kubeconfig, "--context", "fake", "--output", "json"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let auth = check(&checks(&out), "control plane authentication").clone();
    assert_eq!(auth["outcome"], "warning");
    assert!(auth["detail"].as_str().unwrap().contains("--insecure-no-auth"), "{auth}");

    // A report from a control plane that stopped reporting fails, with its age and where to look.
    fake.put_object(report_at("2026-11-21T15:00:00Z".into(), false));
    let out = wd.run(&["status", "--kubeconfig", kubeconfig, "--context", "fake", "--output", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let stale = check(&checks(&out), "storage controller").clone();
    assert_eq!(stale["outcome"], "failed");
    let detail = stale["detail"].as_str().unwrap();
    assert!(detail.contains("s old (at 2026-11-21T15:00:00Z)") && detail.contains("logs deploy/neon-control-plane"), "{detail}");
    fake.put_object(report(false));

    // A pageserver that is not ready and a node that is not: exit 1, with what to look at.
    fake.set_status("apps/v1", "statefulsets", Some("neon"), "neon-pageserver-2", json!({"replicas": 1, "readyReplicas": 0}));
    fake.set_status("v1", "nodes", None, "node-b", json!({"conditions": [{"type": "Ready", "status": "False"}]}));
    let out = wd.run(&["status", "--kubeconfig", kubeconfig, "--output", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let live = checks(&out);
    assert_eq!(check(&live, "nodes")["outcome"], "failed");
    let pageserver = check(&live, "pageserver");
    assert_eq!(pageserver["outcome"], "failed");
    assert!(pageserver["detail"].as_str().unwrap().contains("kubectl -n neon describe pods -l app.kubernetes.io/name=pageserver"));

    // The human table shows the checks after the phases.
    let out = wd.run(&["status", "--kubeconfig", kubeconfig, "--output", "plain"]);
    let text = stdout(&out);
    assert!(text.contains("check") && text.contains("1/2 pods ready"), "{text}");

    // -v shows kube's own request events on stderr; without it, none.
    let out = wd.run(&["-v", "status", "--kubeconfig", kubeconfig, "--output", "plain"]);
    assert!(stderr(&out).contains("kube_client") && stderr(&out).contains("requesting"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("fake-token"), "no credential in the log");
    let out = wd.run(&["status", "--kubeconfig", kubeconfig, "--output", "plain"]);
    assert!(!stderr(&out).contains("kube_client"), "{}", stderr(&out));

    // --offline makes no call at all.
    let before = fake.requests().len();
    let out = wd.run(&["status", "--kubeconfig", kubeconfig, "--offline", "--output", "json"]);
    assert!(out.status.success());
    assert!(checks(&out).is_empty());
    assert_eq!(fake.requests().len(), before);
}

#[test]
fn status_without_a_cluster_skips_the_live_checks() {
    let out = Workdir::new().run(&["status", "--output", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let live = checks(&out);
    assert_eq!(check(&live, "cluster")["outcome"], "skipped");
    assert!(check(&live, "cluster")["detail"].as_str().unwrap().contains("neonctl-aws infra"));
}

#[test]
fn status_reports_an_active_eks_cluster_whose_api_cannot_be_reached() {
    let moto = Moto::start();
    let wd = Workdir::new();
    let eks = aws_sdk_eks::Client::new(&moto.sdk());
    moto.block_on(
        eks.create_cluster()
            .name("neon")
            .version("1.33")
            .role_arn("arn:aws:iam::123456789012:role/neon-cluster")
            .resources_vpc_config(aws_sdk_eks::types::VpcConfigRequest::builder().subnet_ids("subnet-1").build())
            .send(),
    )
    .unwrap();
    std::fs::create_dir_all(wd.state_dir()).unwrap();
    let state = json!({"schema_version": neonctl_aws::state::SCHEMA_VERSION, "written_by": "neonctl-aws test",
        "target": {"prefix": "neon", "region": "us-east-1"},
        "infra": {"resources": {"cluster": {"id": "neon"}}}});
    std::fs::write(wd.state_dir().join("state.json"), state.to_string()).unwrap();

    let out =
        moto.cmd(&wd, &["status", "--output", "json"]).env(neonctl_aws::phases::infra::versions::TODAY_ENV, "2026-11-26").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}{}", stdout(&out), stderr(&out));
    let live = checks(&out);
    assert_eq!(check(&live, "EKS cluster neon")["outcome"], "ok");
    assert_eq!(check(&live, "EKS cluster neon")["detail"], "ACTIVE");
    // 1.33 left standard support on 2026-07-29: six times the price, said with the way out.
    let version = check(&live, "Kubernetes version");
    assert_eq!(version["outcome"], "warning");
    assert!(version["detail"].as_str().unwrap().contains("extended support until 2027-07-29"), "{version}");
    let api = live.last().unwrap();
    assert_eq!(api["outcome"], "failed", "{live:#?}");
    assert!(!stdout(&out).contains(crate::moto::SECRET_KEY) && !stderr(&out).contains(crate::moto::SECRET_KEY));
}
