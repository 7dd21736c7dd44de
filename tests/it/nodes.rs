//! Draining a nodegroup's nodes (`k8s::drain`) against the Kubernetes API stand-in: cordon,
//! evictions refused by a PodDisruptionBudget until its set is healthy, DaemonSet pods left.

use std::sync::Arc;
use std::time::Duration;

use neonctl_aws::k8s::drain::{NODEGROUP_LABEL, drain};
use neonctl_aws::output::{PhaseReporter, Recorder};
use neonctl_aws::phase::PhaseName;
use serde_json::{Value, json};

use crate::fake_kube::FakeKube;

fn node(name: &str, group: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {NODEGROUP_LABEL: group}}, "spec": {}})
}

fn pod(name: &str, node: &str, app: &str, ready: bool) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "neon", "labels": {"app": app}},
        "spec": {"nodeName": node},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_cordons_the_nodes_and_evicts_within_the_disruption_budgets() {
    let kube = FakeKube::start().await;
    for object in [
        node("n1", "neon-nodes"),
        node("n2", "neon-nodes"),
        node("n3", "neon-nodes-1a2b3c"),
        pod("pageserver-0", "n1", "pageserver", true),
        pod("safekeeper-0", "n2", "safekeeper", true),
        // Its sibling on the new nodes is not ready yet: the budget allows no disruption.
        pod("safekeeper-1", "n3", "safekeeper", false),
        pod("proxy-abc", "n3", "proxy", true),
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "safekeeper", "namespace": "neon"},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "safekeeper"}}}}),
    ] {
        kube.put_object(object);
    }
    let mut daemon = pod("aws-node-x", "n1", "aws-node", true);
    daemon["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "aws-node", "uid": "1"}]);
    kube.put_object(daemon);
    let reporter = PhaseReporter::new(PhaseName::Infra, Arc::new(Recorder::default()));
    let selector = format!("{NODEGROUP_LABEL}=neon-nodes");

    // The budget holds: after the wait, the safekeeper is still there and named.
    let stopped = drain(&kube.client(), &selector, &reporter, Duration::from_millis(600), Duration::from_millis(100)).await.unwrap_err();
    let message = format!("{stopped:#}");
    assert!(message.contains("neon/safekeeper-0") && message.contains("PodDisruptionBudgets"), "{message}");
    assert!(kube.get("v1", "pods", Some("neon"), "pageserver-0").is_none(), "no budget holds the pageserver: evicted");
    assert!(kube.get("v1", "pods", Some("neon"), "safekeeper-0").is_some(), "the budget kept it");
    for (name, cordoned) in [("n1", true), ("n2", true), ("n3", false)] {
        let unschedulable = kube.get("v1", "nodes", None, name).unwrap()["spec"]["unschedulable"] == json!(true);
        assert_eq!(unschedulable, cordoned, "{name}");
    }

    // Once the other safekeeper is ready, a second run finishes.
    let mut ready = kube.get("v1", "pods", Some("neon"), "safekeeper-1").unwrap();
    ready["status"]["conditions"] = json!([{"type": "Ready", "status": "True"}]);
    kube.put_object(ready);
    drain(&kube.client(), &selector, &reporter, Duration::from_secs(5), Duration::from_millis(100)).await.unwrap();
    assert!(kube.get("v1", "pods", Some("neon"), "safekeeper-0").is_none());
    assert!(kube.get("v1", "pods", Some("neon"), "aws-node-x").is_some(), "DaemonSet pods stay");
    assert!(kube.get("v1", "pods", Some("neon"), "proxy-abc").is_some(), "pods on other nodes stay");
    let evictions = kube.requests().iter().filter(|r| r.starts_with("POST ") && r.contains("/eviction")).count();
    assert!(evictions >= 3, "evicted through the Eviction API, never deleted: {evictions}");
    assert!(!kube.requests().iter().any(|r| r.starts_with("DELETE ") && r.contains("/pods/")));
}
