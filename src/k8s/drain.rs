//! Draining the nodes of a nodegroup before it is deleted, as `kubectl drain` does: cordon every
//! node, then evict (never delete) each pod on them but DaemonSet pods, mirror pods and finished
//! ones, through the Eviction API, which refuses what a PodDisruptionBudget does not allow yet
//! (429). Refused evictions are tried again until the pods are gone or the time is up, so a
//! StatefulSet with `maxUnavailable: 1` moves one pod at a time; its volumes follow in their zone.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, EvictParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::output::PhaseReporter;
use crate::wait::{self, Check, Waited};

/// The label EKS puts on the nodes of a managed nodegroup.
pub const NODEGROUP_LABEL: &str = "eks.amazonaws.com/nodegroup";

/// Cordons the nodes `selector` picks and evicts their pods; fails with the pods still there
/// when `timeout` runs out (the nodes stay cordoned: running again goes on).
pub async fn drain(client: &Client, selector: &str, reporter: &PhaseReporter, timeout: Duration, poll: Duration) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let listed =
        nodes.list(&ListParams::default().labels(selector)).await.map_err(|e| anyhow::anyhow!("listing the nodes {selector}: {e}"))?;
    let names: Vec<String> = listed.items.iter().map(|n| n.name_any()).collect();
    for node in listed.items.iter().filter(|n| !n.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false)) {
        let name = node.name_any();
        let cordon = Patch::Merge(json!({"spec": {"unschedulable": true}}));
        nodes.patch(&name, &PatchParams::default(), &cordon).await.map_err(|e| anyhow::anyhow!("cordoning node {name}: {e}"))?;
        reporter.info(format!("node {name} cordoned"));
    }
    let pods: Api<Pod> = Api::all(client.clone());
    let check = || async {
        let mut left = Vec::new();
        for node in &names {
            let on_node = pods.list(&ListParams::default().fields(&format!("spec.nodeName={node}"))).await?;
            for pod in on_node.items.into_iter().filter(evicted_by_drain) {
                let (namespace, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
                if pod.metadata.deletion_timestamp.is_none() {
                    // 429: a PodDisruptionBudget does not allow it yet; asked again next time. The
                    // client retries a 429 by itself, for minutes: bounded here by `poll`.
                    let api = Api::<Pod>::namespaced(client.clone(), &namespace);
                    match tokio::time::timeout(poll, api.evict(&name, &EvictParams::default())).await {
                        Ok(Ok(_)) => reporter.info(format!("pod {namespace}/{name} evicted from {node}")),
                        Err(_) => {}
                        Ok(Err(kube::Error::Api(e))) if e.code == 429 || e.code == 404 => {}
                        Ok(Err(e)) => return Err(e),
                    }
                }
                left.push(format!("{namespace}/{name}"));
            }
        }
        Ok::<_, kube::Error>(if left.is_empty() { Check::Done(()) } else { Check::Waiting(left) })
    };
    match wait::poll(timeout, poll, check, |_, _| {}).await.map_err(|e| anyhow::anyhow!("draining the nodes {selector}: {e}"))? {
        Waited::Done(()) => Ok(()),
        Waited::TimedOut(left) => anyhow::bail!(
            "the nodes {selector} still run {} after {}s: their PodDisruptionBudgets allow no eviction yet (a pod of the same \
             set is not ready). Check `kubectl get pdb -A` and the pods, then run the command again; the nodes stay cordoned",
            left.join(", "),
            timeout.as_secs()
        ),
    }
}

/// What `kubectl drain` moves: not DaemonSet pods (they run on every node), not mirror pods
/// (the kubelet's own), not pods that have finished.
fn evicted_by_drain(pod: &Pod) -> bool {
    let daemon = pod.owner_references().iter().any(|o| o.kind == "DaemonSet");
    let mirror = pod.annotations().contains_key("kubernetes.io/config.mirror");
    let finished = pod.status.as_ref().and_then(|s| s.phase.as_deref()).is_some_and(|p| p == "Succeeded" || p == "Failed");
    !daemon && !mirror && !finished
}
