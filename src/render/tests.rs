use serde_json::Value;

use super::*;
use crate::config::Config;
use crate::neon::Secret;

fn default_inputs() -> RenderInputs {
    RenderInputs::from_config(&Config::default())
}

fn objects(manifests: &[Manifest]) -> Vec<Value> {
    manifests.iter().flat_map(|m| serde_saphyr::from_multiple::<Value>(&m.yaml).unwrap()).filter(|v| !v.is_null()).collect()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects.iter().find(|o| o["kind"] == kind && o["metadata"]["name"] == name).unwrap_or_else(|| panic!("{kind}/{name} is rendered"))
}

fn container(object: &Value) -> &Value {
    &object["spec"]["template"]["spec"]["containers"][0]
}

fn args(object: &Value) -> Vec<String> {
    container(object)["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect()
}

#[test]
fn default_config_renders_every_component_deterministically() {
    let inputs = default_inputs();
    let manifests = render(&inputs).unwrap();
    let files: Vec<_> = manifests.iter().map(|m| m.file.as_str()).collect();
    assert_eq!(
        files,
        [
            "00-namespace.yaml",
            "01-storage-class.yaml",
            "02-policies.yaml",
            "03-crds.yaml",
            "10-storage-broker.yaml",
            "20-storage-controller-db.yaml",
            "21-storage-controller.yaml",
            "30-pageserver.yaml",
            "40-safekeeper.yaml",
            "50-control-plane.yaml",
            "60-compute.yaml",
            "70-proxy.yaml"
        ]
    );
    assert_eq!(render(&inputs).unwrap(), manifests, "same inputs, same bytes");
    for manifest in &manifests {
        assert!(manifest.yaml.starts_with(HEADER));
        // Re-emitted YAML parses back to the same objects: nothing was lost in quoting.
        let reparsed: Vec<Value> = serde_saphyr::from_multiple(&manifest.yaml).unwrap();
        assert_eq!(reparsed.iter().filter(|v| !v.is_null()).count(), manifest.objects.len(), "{}", manifest.file);
    }
}

#[test]
fn every_object_is_labelled_for_pruning() {
    for object in objects(&render(&default_inputs()).unwrap()) {
        let labels = &object["metadata"]["labels"];
        assert_eq!(labels[LABEL_MANAGED_BY], MANAGED_BY, "{object}");
        assert_eq!(labels[LABEL_PREFIX], "neon", "{object}");
        if let Some(template) = object["spec"]["template"]["metadata"]["labels"].as_object() {
            assert_eq!(template[LABEL_MANAGED_BY], MANAGED_BY, "pods are labelled too");
        }
    }
}

#[test]
fn an_unlabelled_object_is_refused() {
    let inputs = default_inputs();
    let object = serde_json::json!({"kind": "ConfigMap", "metadata": {"name": "x", "namespace": "neon", "labels": {}}});
    let err = check_objects("x.yaml", &[object], &inputs).unwrap_err();
    assert!(err.to_string().contains("lacks the app.kubernetes.io/managed-by"), "{err}");
}

#[test]
fn secrets_are_referenced_never_rendered() {
    let inputs = default_inputs();
    let objects = objects(&render(&inputs).unwrap());
    assert!(!objects.iter().any(|o| o["kind"] == "Secret"));
    let secret_names: Vec<String> = inputs.secrets().into_iter().map(|s| s.name).collect();
    for object in &objects {
        let Some(containers) = object["spec"]["template"]["spec"]["containers"].as_array() else { continue };
        for container in containers {
            for env in container["env"].as_array().unwrap() {
                let name = env["name"].as_str().unwrap();
                if ["TOKEN", "KEY", "PASSWORD", "DATABASE_URL"].iter().any(|s| name.contains(s)) {
                    let secret = env["valueFrom"]["secretKeyRef"]["name"].as_str().unwrap_or_else(|| panic!("{name} comes from a Secret"));
                    assert!(secret_names.iter().any(|s| s == secret), "{secret} is listed by secrets()");
                }
            }
            for arg in container["args"].as_array().unwrap() {
                let arg = arg.as_str().unwrap();
                // A `--…-path=` flag names a mounted file, not the secret itself.
                let value = if arg.starts_with("--auth-token-path=") { "" } else { arg };
                assert!(!value.contains("token") && !arg.contains("password") && !arg.starts_with("--database-url"), "{arg}");
                assert!(!arg.contains("eyJ"), "no JWT in args: {arg}");
            }
        }
    }
}

#[test]
fn storage_controller_runs_in_strict_mode_against_our_control_plane() {
    let objects = objects(&render(&default_inputs()).unwrap());
    let storcon = find(&objects, "Deployment", "neon-storage-controller");
    let args = args(storcon);
    assert!(!args.contains(&"--dev".to_string()));
    assert!(args.contains(&"--control-plane-url=http://neon-control-plane.neon.svc.cluster.local:8080/storage".to_string()), "{args:?}");
    let env: Vec<&str> = container(storcon)["env"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    for required in crate::neon::storage_controller::env::STRICT_MODE.iter().chain([&"DATABASE_URL"]) {
        assert!(env.contains(required), "{required} in {env:?}");
    }
    assert_eq!(storcon["spec"]["strategy"]["type"], "Recreate");
}

#[test]
fn storage_nodes_are_pinned_round_robin_and_know_their_zone() {
    let mut inputs = default_inputs();
    inputs.pageservers = 2;
    let objects = objects(&render(&inputs).unwrap());
    let zone_of = |object: &Value| {
        object["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"][0]
            .as_str()
            .unwrap()
            .to_string()
    };
    for (id, zone) in [(1, "us-east-1a"), (2, "us-east-1b"), (3, "us-east-1c")] {
        let sk = find(&objects, "StatefulSet", &format!("neon-safekeeper-{id}"));
        assert_eq!(zone_of(sk), zone);
        let args = args(sk);
        assert!(args.contains(&format!("--id={id}")));
        assert!(args.contains(&format!("--availability-zone={zone}")));
        assert!(args.contains(&format!("--advertise-pg=neon-safekeeper-{id}-0.neon-safekeeper.neon.svc.cluster.local:5454")), "{args:?}");
    }
    for (id, zone) in [(1, "us-east-1a"), (2, "us-east-1b")] {
        let ps = find(&objects, "StatefulSet", &format!("neon-pageserver-{id}"));
        assert_eq!(zone_of(ps), zone);
        let config = find(&objects, "ConfigMap", &format!("neon-pageserver-{id}"));
        assert_eq!(config["data"]["identity.toml"], format!("id = {id}\n"));
        let metadata: Value = serde_json::from_str(config["data"]["metadata.json"].as_str().unwrap()).unwrap();
        assert_eq!(metadata["availability_zone_id"], zone);
        assert_eq!(metadata["host"], format!("neon-pageserver-{id}-0.neon-pageserver.neon.svc.cluster.local"));
        let toml = inputs.pageserver_toml(id, Secret("t".into())).unwrap();
        assert_eq!(toml.availability_zone, zone, "pageserver.toml agrees with metadata.json");
    }
    let headless = find(&objects, "Service", "neon-safekeeper");
    assert_eq!(headless["spec"]["clusterIP"], "None");
    assert_eq!(headless["spec"]["publishNotReadyAddresses"], true);
}

#[test]
fn pageserver_toml_points_at_the_storage_controller_and_bucket() {
    let inputs = default_inputs();
    let toml = inputs.pageserver_toml(1, Secret("<generations_api token>".into())).unwrap();
    assert_eq!(toml.control_plane_api, "http://neon-storage-controller.neon.svc.cluster.local:1234/upcall/v1/");
    assert_eq!(toml.broker_endpoint, "http://neon-storage-broker.neon.svc.cluster.local:50051");
    assert_eq!(toml.remote_storage.bucket_name, inputs.bucket);
    assert_eq!(toml.remote_storage.bucket_region, inputs.region);
}

#[test]
fn irsa_roles_annotate_only_their_service_accounts() {
    let arn = "arn:aws:iam::123456789012:role/neon-pageserver";
    let inputs = default_inputs().with_overrides(Overrides { pageserver_role_arn: Some(arn.into()), ..Overrides::default() }).unwrap();
    let objects = objects(&render(&inputs).unwrap());
    assert_eq!(find(&objects, "ServiceAccount", "neon-pageserver")["metadata"]["annotations"]["eks.amazonaws.com/role-arn"], arn);
    assert_eq!(find(&objects, "ServiceAccount", "neon-safekeeper")["metadata"]["annotations"], serde_json::json!({}));
    assert!(!inputs.assumptions().iter().any(|a| a.contains("IRSA role for the pageserver")));
    assert!(inputs.assumptions().iter().any(|a| a.contains("IRSA role for the safekeeper")));
    assert!(!inputs.assumptions().iter().any(|a| a.contains("will be denied")));

    // The roles trust the service accounts of namespace <prefix>: another namespace is flagged.
    let moved = inputs.with_overrides(Overrides { namespace: Some("elsewhere".into()), ..Overrides::default() }).unwrap();
    let warning = moved.assumptions().into_iter().find(|a| a.contains("will be denied")).expect("a warning");
    assert!(warning.contains("neon/neon-pageserver") && warning.contains("namespace elsewhere"), "{warning}");
}

#[test]
fn an_s3_compatible_endpoint_reaches_both_storage_configs_with_the_users_credentials() {
    let inputs = default_inputs()
        .with_overrides(Overrides { s3_endpoint: Some("http://minio.minio.svc:9000".into()), ..Overrides::default() })
        .unwrap();
    let objects = objects(&render(&inputs).unwrap());
    let safekeeper = find(&objects, "StatefulSet", "neon-safekeeper-1");
    let container = &safekeeper["spec"]["template"]["spec"]["containers"][0];
    let args = container["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect::<Vec<_>>().join(" ");
    assert!(args.contains(r#"endpoint = "http://minio.minio.svc:9000""#), "{args}");
    for (kind, name) in [("StatefulSet", "neon-safekeeper-1"), ("StatefulSet", "neon-pageserver-1")] {
        let env = find(&objects, kind, name)["spec"]["template"]["spec"]["containers"][0]["env"].clone();
        for key in S3_CREDENTIAL_KEYS {
            let from = env.as_array().unwrap().iter().find(|e| e["name"] == key).unwrap_or_else(|| panic!("{name} lacks {key}"));
            assert_eq!(from["valueFrom"]["secretKeyRef"], serde_json::json!({"name": "neon-s3-credentials", "key": key}));
        }
    }
    let secret = inputs.secrets().into_iter().find(|s| s.name == "neon-s3-credentials").expect("the credentials Secret is listed");
    assert_eq!(secret.keys, S3_CREDENTIAL_KEYS.map(String::from).to_vec());
    let pageserver_toml = inputs.pageserver_toml(1, Secret("t".into())).unwrap().to_toml().unwrap();
    assert!(pageserver_toml.contains("endpoint = \"http://minio.minio.svc:9000\""), "{pageserver_toml}");

    // AWS S3 needs neither.
    assert!(default_inputs().secrets().iter().all(|s| s.name != "neon-s3-credentials"));
    let bad = default_inputs().with_overrides(Overrides { s3_endpoint: Some("minio:9000".into()), ..Overrides::default() });
    assert!(matches!(bad, Err(RenderError::BadEndpoint { .. })));
}

#[test]
fn an_external_database_drops_the_in_cluster_one() {
    let inputs = default_inputs()
        .with_overrides(Overrides { external_storcon_db: true, storage_class: Some("gp2".into()), ..Overrides::default() })
        .unwrap();
    let manifests = render(&inputs).unwrap();
    assert!(!manifests.iter().any(|m| m.file.contains("storage-controller-db") || m.file.contains("storage-class")));
    let objects = objects(&manifests);
    assert!(!objects.iter().any(|o| o["metadata"]["name"].as_str().unwrap().contains("storage-controller-db")));
    let claims = find(&objects, "StatefulSet", "neon-safekeeper-1")["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"].clone();
    assert_eq!(claims, "gp2");
    let db = inputs.secrets().into_iter().find(|s| s.name == "neon-storcon-db").unwrap();
    assert_eq!(db.keys, ["database-url"]);
}

#[test]
fn network_policies_allow_only_the_paths_neon_needs() {
    let objects = objects(&render(&default_inputs()).unwrap());
    let deny = find(&objects, "NetworkPolicy", "default-deny-ingress");
    assert_eq!(deny["spec"]["podSelector"], serde_json::json!({}));
    let sources = |name: &str, port: u64| -> Vec<String> {
        let policy = find(&objects, "NetworkPolicy", name);
        let rule = policy["spec"]["ingress"].as_array().unwrap().iter().find(|r| r["ports"][0]["port"] == port).unwrap();
        rule["from"]
            .as_array()
            .unwrap()
            .iter()
            .map(|peer| {
                peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| peer["ipBlock"]["cidr"].as_str().unwrap().to_string())
            })
            .collect()
    };
    assert_eq!(sources("neon-pageserver", 6400), ["compute"]);
    assert_eq!(sources("neon-pageserver", 9898), ["storage-controller"]);
    assert_eq!(sources("neon-safekeeper", 5454), ["compute", "pageserver"]);
    assert_eq!(sources("neon-storage-broker", 50051), ["pageserver", "safekeeper"]);
    assert_eq!(sources("neon-storage-controller-db", 5432), ["storage-controller"]);
    assert_eq!(sources("neon-control-plane", 8080), ["storage-controller", "proxy", "compute"]);
    assert_eq!(sources("neon-compute", 5432), ["proxy"]);
    assert_eq!(sources("neon-proxy", 5432), ["0.0.0.0/0"]);
    for pdb in objects.iter().filter(|o| o["kind"] == "PodDisruptionBudget") {
        assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    }
}

#[test]
fn pods_run_as_non_root_with_requests_and_probes() {
    for object in objects(&render(&default_inputs()).unwrap()) {
        let Some(pod) = object["spec"]["template"]["spec"].as_object() else { continue };
        let name = object["metadata"]["name"].as_str().unwrap();
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
        assert_eq!(pod["securityContext"]["runAsUser"], 1000, "{name}");
        assert_eq!(pod["securityContext"]["fsGroup"], 1000, "{name}");
        let container = &pod["containers"][0];
        assert!(container["resources"]["requests"]["cpu"].is_string(), "{name}");
        assert!(container["readinessProbe"].is_object() && container["livenessProbe"].is_object(), "{name}");
        assert_eq!(container["securityContext"]["allowPrivilegeEscalation"], false, "{name}");
    }
}

#[test]
fn image_overrides_pin_digests_and_refuse_nonsense() {
    let digest = format!("sha256:{}", "ab".repeat(32));
    let reference = format!("123456789012.dkr.ecr.us-east-1.amazonaws.com/neon/pageserver@{digest}");
    let inputs = default_inputs()
        .with_overrides(Overrides { images: vec![("pageserver".into(), reference.clone())], ..Overrides::default() })
        .unwrap();
    let objects = objects(&render(&inputs).unwrap());
    assert_eq!(container(find(&objects, "StatefulSet", "neon-pageserver-1"))["image"], reference);
    assert!(!inputs.assumptions().iter().any(|a| a.contains("image pageserver")));

    let unknown = default_inputs().with_overrides(Overrides { images: vec![("pagesrv".into(), "x".into())], ..Overrides::default() });
    assert!(matches!(unknown, Err(RenderError::UnknownImage { .. })));
    for bad in ["", "repo@sha256:short", "repo:", "re po:1", "repo@md5:abc"] {
        assert!(ImageRef::parse(bad).is_err(), "{bad:?}");
    }
    assert_eq!(ImageRef::parse("localhost:5000/neon/proxy").unwrap().reference(), "localhost:5000/neon/proxy:latest");
    assert_eq!(ImageRef::parse("localhost:5000/neon/proxy:v1").unwrap().reference(), "localhost:5000/neon/proxy:v1");
}

#[test]
fn bad_names_are_refused_before_rendering() {
    let err = default_inputs().with_overrides(Overrides { namespace: Some("Neon_NS".into()), ..Overrides::default() }).unwrap_err();
    assert!(err.to_string().contains("--namespace"), "{err}");
    let err = default_inputs().with_overrides(Overrides { bucket: Some("Bad_Bucket".into()), ..Overrides::default() }).unwrap_err();
    assert!(err.to_string().contains("--bucket"), "{err}");
    for arn in ["role/x", "arn:aws:iam::12345:role/x", "arn:aws:s3:::bucket", "arn:aws:iam::123456789012:user/x"] {
        let err = default_inputs().with_overrides(Overrides { safekeeper_role_arn: Some(arn.into()), ..Overrides::default() }).unwrap_err();
        assert!(matches!(err, RenderError::BadRoleArn { .. }), "{arn}: {err}");
    }
    let err = default_inputs().with_overrides(Overrides { proxy_domain: Some("db..example".into()), ..Overrides::default() }).unwrap_err();
    assert!(err.to_string().contains("--proxy-domain"), "{err}");
    let mut inputs = default_inputs();
    inputs.zones.clear();
    assert!(matches!(render(&inputs), Err(RenderError::NoZones)));
}

/// The storage controller places timelines on 3 safekeepers in different zones, or, with fewer
/// zones, runs without placement (it would fail every timeline creation) and says why.
#[test]
fn timelines_go_onto_safekeepers_only_across_three_zones() {
    let storcon_args = |inputs: &RenderInputs| -> Vec<String> {
        let objects = objects(&render(inputs).unwrap());
        serde_json::from_value(container(find(&objects, "Deployment", "neon-storage-controller"))["args"].clone()).unwrap()
    };
    let inputs = default_inputs();
    assert_eq!(inputs.zones.len(), 3);
    assert!(storcon_args(&inputs).contains(&"--timelines-onto-safekeepers".to_string()));
    assert!(!inputs.assumptions().iter().any(|a| a.contains("timelines-onto-safekeepers")));
    let two = inputs.with_overrides(Overrides { zones: vec!["a-1a".into(), "a-1b".into()], ..Overrides::default() }).unwrap();
    assert!(!storcon_args(&two).contains(&"--timelines-onto-safekeepers".to_string()));
    let said = two.assumptions().into_iter().find(|a| a.contains("--timelines-onto-safekeepers")).expect("it says why");
    assert!(said.contains("span 2 zone(s)") && said.contains("give 3 zones"), "{said}");
}

/// compute_ctl exports traces to localhost:4318 unless told otherwise (neon's
/// `libs/tracing-utils`): off by default, or to the configured collector.
#[test]
fn compute_traces_go_nowhere_or_to_the_configured_collector() {
    // The control plane makes every compute from the template in its topology.
    let compute_env = |inputs: &RenderInputs| -> Vec<Value> {
        let objects = objects(&render(inputs).unwrap());
        let topology = find(&objects, "ConfigMap", "neon-control-plane")["data"]["topology.json"].as_str().unwrap().to_string();
        let topology: Value = serde_json::from_str(&topology).unwrap();
        topology["compute"]["env"].as_array().unwrap().clone()
    };
    let env = compute_env(&default_inputs());
    assert!(env.iter().any(|e| e["name"] == "OTEL_SDK_DISABLED" && e["value"] == "true"), "{env:?}");
    assert!(!env.iter().any(|e| e["name"] == "OTEL_EXPORTER_OTLP_ENDPOINT"));
    let mut config = Config::default();
    config.compute.otlp_endpoint = Some("http://otel-collector.monitoring:4318".into());
    let env = compute_env(&RenderInputs::from_config(&config));
    assert!(env.iter().any(|e| e["name"] == "OTEL_EXPORTER_OTLP_ENDPOINT" && e["value"] == "http://otel-collector.monitoring:4318"));
    assert!(!env.iter().any(|e| e["name"] == "OTEL_SDK_DISABLED"));
    config.compute.otlp_endpoint = Some("otel:4318".into());
    let (key, message) = config.validate().unwrap_err();
    assert_eq!(key, "compute.otlp_endpoint");
    assert!(message.contains("not an http:// or https:// URL"), "{message}");
}

#[test]
fn the_in_cluster_database_url_names_the_rendered_service() {
    let inputs = default_inputs();
    let url = inputs.in_cluster_database_url(&Secret("pw".into())).unwrap();
    assert_eq!(url.0, "postgresql://storage_controller:pw@neon-storage-controller-db.neon.svc.cluster.local:5432/storage_controller");
    let objects = objects(&render(&inputs).unwrap());
    let db = find(&objects, "StatefulSet", "neon-storage-controller-db");
    let env = container(db)["env"].as_array().unwrap();
    assert!(env.iter().any(|e| e["name"] == "POSTGRES_USER" && e["value"] == "storage_controller"));
    find(&objects, "Service", "neon-storage-controller-db");
    let external = inputs.with_overrides(Overrides { external_storcon_db: true, ..Overrides::default() }).unwrap();
    assert_eq!(external.in_cluster_database_url(&Secret("pw".into())), None);
}

#[test]
fn what_infra_and_push_recorded_replaces_every_guess() {
    use crate::state::{PushRecord, ResourceRecord, State};
    let mut state = State::default();
    let record = |key: &str, value: &str| ResourceRecord { outputs: [(key.to_string(), value.to_string())].into(), ..Default::default() };
    state.infra.resources.insert("bucket".into(), record("name", "neon-123456789012-us-east-1"));
    state
        .infra
        .resources
        .insert("role-pageserver".into(), record("arn", "arn:aws:iam::123456789012:role/neonctl-aws/neon/neon-pageserver"));
    state
        .infra
        .resources
        .insert("role-safekeeper".into(), record("arn", "arn:aws:iam::123456789012:role/neonctl-aws/neon/neon-safekeeper"));
    state.infra.azs = vec!["us-east-1b".into(), "us-east-1d".into(), "us-east-1f".into()];
    let digest = format!("sha256:{}", "a".repeat(64));
    for image in crate::IMAGES {
        state.push.insert(
            image.to_string(),
            PushRecord {
                tag: format!("123456789012.dkr.ecr.us-east-1.amazonaws.com/neon/{image}:0123456789ab"),
                digest_ref: format!("123456789012.dkr.ecr.us-east-1.amazonaws.com/neon/{image}@{digest}"),
                image_id: "sha256:0".into(),
                uploaded_bytes: 0,
            },
        );
    }
    let inputs = default_inputs().with_overrides(Overrides::from_state(&state)).unwrap();
    let assumptions = inputs.assumptions();
    assert_eq!(assumptions.len(), 1, "only the third-party Postgres image is still by tag: {assumptions:?}");
    assert!(assumptions[0].contains("image postgres"), "{assumptions:?}");

    let objects = objects(&render(&inputs).unwrap());
    let pageserver = find(&objects, "StatefulSet", "neon-pageserver-1");
    assert_eq!(container(pageserver)["image"], format!("123456789012.dkr.ecr.us-east-1.amazonaws.com/neon/pageserver@{digest}"));
    let account = find(&objects, "ServiceAccount", "neon-pageserver");
    assert_eq!(
        account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        "arn:aws:iam::123456789012:role/neonctl-aws/neon/neon-pageserver"
    );
    let zone = &pageserver["spec"]["template"]["spec"]["affinity"]["nodeAffinity"];
    assert!(zone.to_string().contains("us-east-1b"), "{zone}");

    // A flag still wins over the state.
    let overridden = default_inputs()
        .with_overrides(Overrides::from_state(&state))
        .unwrap()
        .with_overrides(Overrides { bucket: Some("my-own-bucket".into()), ..Overrides::default() })
        .unwrap();
    assert_eq!(overridden.bucket, "my-own-bucket");
}

#[test]
fn the_control_plane_reads_its_custom_resources_and_writes_only_their_status() {
    let objects = objects(&render(&default_inputs()).unwrap());
    for plural in ["neonbranches", "neonendpoints"] {
        let crd = find(&objects, "CustomResourceDefinition", &format!("{plural}.neonctl-aws.dev"));
        assert!(crd["metadata"].get("namespace").is_none(), "CRDs are cluster-scoped");
        assert_eq!(crd["spec"]["scope"], "Namespaced");
    }
    let role = find(&objects, "Role", "neon-control-plane");
    let rules = role["rules"].as_array().unwrap();
    let custom = rules.iter().find(|r| r["apiGroups"][0] == "neonctl-aws.dev").unwrap();
    assert_eq!(custom["resources"], serde_json::json!(["neonbranches", "neonbranches/status", "neonendpoints", "neonendpoints/status"]));
    let verbs = custom["verbs"].as_array().unwrap();
    assert!(!verbs.iter().any(|v| v == "create"), "branches and endpoints are created by others");
    assert!(verbs.iter().any(|v| v == "delete"), "a deleted branch takes its endpoints along");
    for (group, plural) in [("apps", "deployments"), ("", "services")] {
        let rule = rules.iter().find(|r| r["apiGroups"][0] == group && r["resources"][0] == plural).unwrap();
        let verbs = rule["verbs"].as_array().unwrap();
        assert!(["create", "patch", "delete", "watch"].iter().all(|v| verbs.contains(&Value::from(*v))), "each endpoint's compute: {rule}");
    }
    let named = rules.iter().find(|r| r["resources"][0] == "configmaps" && r.get("resourceNames").is_some()).unwrap();
    assert_eq!(named["resourceNames"], serde_json::json!([neonctl_contract::service::status_config_map("neon")]));

    let deployment = find(&objects, "Deployment", "neon-control-plane");
    assert_eq!(args(deployment), neonctl_contract::service::SERVE_ARGS);
    let env = container(deployment)["env"].as_array().unwrap();
    let namespace = env.iter().find(|e| e["name"] == neonctl_contract::service::NAMESPACE_ENV).unwrap();
    assert_eq!(namespace["valueFrom"]["fieldRef"]["fieldPath"], "metadata.namespace");
    let status = env.iter().find(|e| e["name"] == neonctl_contract::service::STATUS_CONFIG_MAP_ENV).unwrap();
    assert_eq!(status["value"], "neon-control-plane-status");
    let account = find(&objects, "ServiceAccount", "neon-control-plane");
    assert_eq!(account["automountServiceAccountToken"], true, "it calls the API server");
}
