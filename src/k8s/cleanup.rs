//! Before teardown deletes the nodes: remove what keeps AWS resources alive outside the
//! cluster's own lifecycle, while the controllers that release them still run.
//!
//! A LoadBalancer Service keeps its finalizer until the cloud load balancer is deleted, and a
//! PersistentVolume with reclaim policy Delete exists until its EBS volume is deleted. So
//! "gone from Kubernetes" means "gone from AWS", and waiting needs only the Kubernetes API.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, PersistentVolumeClaim, Service};
use kube::api::{Api, DeleteParams, ListParams};
use kube::{Client, ResourceExt};

use super::apply::{ApplyError, MANAGED_BY_LABEL};
use crate::output::PhaseReporter;
use crate::wait::{self, Check, Waited};

/// What is still there when the wait ran out (empty when everything is released).
#[derive(Debug, Default, PartialEq)]
pub struct Remaining(pub Vec<String>);

pub async fn release_cloud_resources(
    client: &Client,
    reporter: &PhaseReporter,
    timeout: Duration,
    poll: Duration,
) -> Result<Remaining, ApplyError> {
    let api_error = |verb: &'static str, name: &str| {
        let name = name.to_string();
        move |source| ApplyError::Api { verb, name, source }
    };
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let services: Api<Service> = Api::all(client.clone());
    let claims: Api<PersistentVolumeClaim> = Api::all(client.clone());
    let volumes: Api<PersistentVolume> = Api::all(client.clone());

    let step = reporter.step("delete Kubernetes load balancers and volumes");
    // Our namespaces go whole: their pods let go of the claims, their services of the ELBs.
    let ours = ListParams::default().labels(&format!("{MANAGED_BY_LABEL}=neonctl-aws"));
    for ns in namespaces.list(&ours).await.map_err(api_error("listing", "namespaces"))?.items {
        let name = ns.name_any();
        ignore_gone(namespaces.delete(&name, &DeleteParams::background()).await)
            .map_err(api_error("deleting", &format!("Namespace {name}")))?;
    }
    for svc in load_balancers(&services).await.map_err(api_error("listing", "services"))? {
        let (ns, name) = (svc.namespace().unwrap_or_default(), svc.name_any());
        let api: Api<Service> = Api::namespaced(client.clone(), &ns);
        ignore_gone(api.delete(&name, &DeleteParams::background()).await)
            .map_err(api_error("deleting", &format!("Service {ns}/{name}")))?;
    }
    for claim in claims.list(&ListParams::default()).await.map_err(api_error("listing", "persistentvolumeclaims"))?.items {
        let (ns, name) = (claim.namespace().unwrap_or_default(), claim.name_any());
        let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
        ignore_gone(api.delete(&name, &DeleteParams::background()).await)
            .map_err(api_error("deleting", &format!("PersistentVolumeClaim {ns}/{name}")))?;
    }
    step.finish();

    let step = reporter.step("wait for load balancers and volumes to be released");
    let check = || async {
        let mut left: Vec<String> = Vec::new();
        for svc in load_balancers(&services).await.map_err(api_error("listing", "services"))? {
            left.push(format!("Service {}/{} (load balancer)", svc.namespace().unwrap_or_default(), svc.name_any()));
        }
        for claim in claims.list(&ListParams::default()).await.map_err(api_error("listing", "persistentvolumeclaims"))?.items {
            left.push(format!("PersistentVolumeClaim {}/{}", claim.namespace().unwrap_or_default(), claim.name_any()));
        }
        for volume in volumes.list(&ListParams::default()).await.map_err(api_error("listing", "persistentvolumes"))?.items {
            // Retain is the owner's explicit wish to keep the disk; only Delete volumes are waited for.
            if volume.spec.as_ref().and_then(|s| s.persistent_volume_reclaim_policy.as_deref()) == Some("Delete") {
                left.push(format!("PersistentVolume {} (EBS volume)", volume.name_any()));
            }
        }
        Ok(if left.is_empty() { Check::Done(()) } else { Check::Waiting(left) })
    };
    match wait::poll(timeout, poll, check, |_, _| {}).await? {
        Waited::Done(()) => {
            step.finish();
            Ok(Remaining::default())
        }
        Waited::TimedOut(left) => Ok(Remaining(left)),
    }
}

async fn load_balancers(services: &Api<Service>) -> Result<Vec<Service>, kube::Error> {
    let all = services.list(&ListParams::default()).await?;
    Ok(all.items.into_iter().filter(|s| s.spec.as_ref().and_then(|spec| spec.type_.as_deref()) == Some("LoadBalancer")).collect())
}

/// Deleting what is already gone is success.
fn ignore_gone<T>(result: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use http::{Request, Response};
    use kube::client::Body;
    use serde_json::{Value, json};

    use super::*;
    use crate::engine::PhaseName;
    use crate::output::Recorder;

    /// (method, uri) of every request the fixture answered.
    type Log = Arc<Mutex<Vec<(String, String)>>>;

    fn list(kind: &str, items: Vec<Value>) -> Value {
        json!({"apiVersion": "v1", "kind": format!("{kind}List"), "metadata": {}, "items": items})
    }

    /// An API server holding one namespace of ours, a LoadBalancer and a ClusterIP service, a
    /// claim and its Delete volume plus a Retain volume. Deletes take effect after `lag` polls,
    /// as finalizers do.
    fn start(lag: usize) -> (Client, Log) {
        let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let log: Log = Arc::default();
        let seen = log.clone();
        let polls = Arc::new(AtomicUsize::new(0));
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let (method, uri) = (request.method().to_string(), request.uri().to_string());
                seen.lock().unwrap().push((method.clone(), uri.clone()));
                let deleted = seen.lock().unwrap().iter().filter(|(m, _)| m == "DELETE").count() > 0;
                let released = deleted && polls.load(Ordering::SeqCst) > lag;
                let path = uri.split('?').next().unwrap().to_string();
                let body = match (method.as_str(), path.as_str()) {
                    ("DELETE", _) => json!({"apiVersion": "v1", "kind": "Status", "status": "Success"}),
                    ("GET", "/api/v1/namespaces") => list("Namespace", vec![json!({"metadata": {"name": "neon"}})]),
                    ("GET", "/api/v1/services") => {
                        let mut items = vec![json!({"metadata": {"name": "internal", "namespace": "neon"}, "spec": {"type": "ClusterIP"}})];
                        if !released {
                            items.push(json!({"metadata": {"name": "proxy", "namespace": "neon"}, "spec": {"type": "LoadBalancer"}}));
                        }
                        list("Service", items)
                    }
                    ("GET", "/api/v1/persistentvolumeclaims") => {
                        let items =
                            if released { vec![] } else { vec![json!({"metadata": {"name": "data-pageserver-1", "namespace": "neon"}})] };
                        list("PersistentVolumeClaim", items)
                    }
                    ("GET", "/api/v1/persistentvolumes") => {
                        if deleted {
                            polls.fetch_add(1, Ordering::SeqCst);
                        }
                        let mut items = vec![json!({"metadata": {"name": "pv-kept"}, "spec": {"persistentVolumeReclaimPolicy": "Retain"}})];
                        if !released {
                            items.push(json!({"metadata": {"name": "pv-data"}, "spec": {"persistentVolumeReclaimPolicy": "Delete"}}));
                        }
                        list("PersistentVolume", items)
                    }
                    _ => json!({}),
                };
                send.send_response(Response::new(Body::from(serde_json::to_vec(&body).unwrap())));
            }
        });
        (Client::new(svc, "default"), log)
    }

    fn reporter() -> PhaseReporter {
        PhaseReporter::new(PhaseName::Teardown, Arc::new(Recorder::default()))
    }

    #[tokio::test(start_paused = true)]
    async fn deletes_namespaces_load_balancers_and_claims_then_waits_until_released() {
        let (client, log) = start(2);
        let remaining = release_cloud_resources(&client, &reporter(), Duration::from_secs(600), Duration::from_secs(5)).await.unwrap();
        assert_eq!(remaining, Remaining::default());
        let log = log.lock().unwrap().clone();
        let deletes: Vec<_> = log.iter().filter(|(m, _)| m == "DELETE").map(|(_, u)| u.split('?').next().unwrap().to_string()).collect();
        assert_eq!(
            deletes,
            [
                "/api/v1/namespaces/neon",
                "/api/v1/namespaces/neon/services/proxy",
                "/api/v1/namespaces/neon/persistentvolumeclaims/data-pageserver-1"
            ]
        );
        assert!(
            log.iter().any(|(m, u)| m == "GET"
                && u.contains("/api/v1/namespaces?")
                && u.contains("labelSelector=app.kubernetes.io%2Fmanaged-by%3Dneonctl-aws")),
            "only our namespaces are deleted whole"
        );
        assert!(log.iter().filter(|(m, u)| m == "GET" && u.starts_with("/api/v1/persistentvolumes")).count() >= 3, "it waited");
    }

    #[tokio::test(start_paused = true)]
    async fn what_is_not_released_in_time_is_named() {
        let (client, _) = start(usize::MAX);
        let remaining = release_cloud_resources(&client, &reporter(), Duration::from_secs(30), Duration::from_secs(5)).await.unwrap();
        assert_eq!(
            remaining.0,
            ["Service neon/proxy (load balancer)", "PersistentVolumeClaim neon/data-pageserver-1", "PersistentVolume pv-data (EBS volume)"]
        );
    }
}
