//! `infra` against moto: full creation, convergence, crash safety, bad input, no leaked secret.

use crate::moto::{Moto, SECRET_KEY, assert_complete, call_counts, mutating_calls, mutations};
use crate::support::{Workdir, stderr, stdout};

fn state(wd: &Workdir) -> neonctl_aws::state::State {
    neonctl_aws::state::read(&wd.state_dir()).unwrap()
}

/// The plan's changes other than adopt (and the emulator's skips), one line each.
fn updates(plan: &std::process::Output) -> Vec<String> {
    plan_actions(plan)
        .iter()
        .filter(|a| a["verb"] != "adopt" && a["verb"] != "run")
        .map(|a| format!("{} {}: {}", a["verb"].as_str().unwrap(), a["target"].as_str().unwrap(), a["detail"].as_str().unwrap_or("")))
        .collect()
}

/// What a run re-applied settings to (its `configure …` steps).
fn configure_steps(run: &std::process::Output) -> Vec<String> {
    crate::support::json_events(run)
        .iter()
        .filter(|e| e["event"] == "step_started")
        .filter_map(|e| e["step"].as_str()?.strip_prefix("configure ").map(str::to_string))
        .collect()
}

fn plan_actions(output: &std::process::Output) -> Vec<serde_json::Value> {
    let events = crate::support::json_events(output);
    let plan = events.iter().find(|e| e["event"] == "plan");
    let plan = plan.unwrap_or_else(|| panic!("no plan event in:\n{}\n{}", stdout(output), stderr(output)));
    plan["actions"].as_array().unwrap().clone()
}

#[test]
fn infra_from_nothing_creates_everything_once_then_only_reads() {
    let moto = Moto::start();
    let wd = Workdir::new();
    let first = moto.run(&wd, &["infra", "--output", "json", "-v"]);
    assert!(first.status.success(), "{}{}", stdout(&first), stderr(&first));
    assert_complete(&moto.census("neon"));

    let infra = state(&wd).infra;
    assert_eq!(infra.account.as_deref(), Some("123456789012"));
    assert_eq!(infra.azs, ["us-east-1a", "us-east-1b", "us-east-1c"]);
    assert!(infra.resources["nat-us-east-1a"].token.as_ref().is_some_and(|t| t.len() == 32), "the NAT token is persisted");
    assert!(infra.resources["cluster"].outputs.contains_key("oidc_issuer"));
    assert_eq!(infra.resources["bucket"].id.as_deref(), Some("neon-123456789012-us-east-1"));
    assert!(stdout(&first).contains("skipping the EKS addons"), "the emulator skips are visible");

    // Converged: the second run only reads, and adopts everything it finds.
    let second = moto.run(&wd, &["infra", "--output", "json"]);
    assert!(second.status.success(), "{}", stdout(&second));
    assert_eq!(mutating_calls(&second), 0, "{}", call_counts(&second));
    let reads: u64 = call_counts(&second).as_object().unwrap().values().map(|c| c["read"].as_u64().unwrap()).sum();
    assert!(reads <= 20, "{reads} reads for ~36 resources");
    assert_complete(&moto.census("neon"));
    assert_eq!(state(&wd).infra, infra, "nothing changed in the state either");

    // Drift made outside the tool and a changed node count: the plan names both changes, with
    // the field, before and after, and apply makes exactly those calls.
    let ec2 = aws_sdk_ec2::Client::new(&moto.sdk());
    let public = infra.resources["subnet-public-us-east-1b"].id.clone().unwrap();
    let off = aws_sdk_ec2::types::AttributeBooleanValue::builder().value(false).build();
    moto.block_on(ec2.modify_subnet_attribute().subnet_id(&public).map_public_ip_on_launch(off).send()).unwrap();
    std::fs::write(wd.path().join("neonctl-aws.yaml"), "aws:\n  emulator: true\ncluster:\n  node_count: 5\n").unwrap();
    let plan = moto.run(&wd, &["infra", "--plan", "--output", "json"]);
    assert!(plan.status.success(), "{}", stderr(&plan));
    assert_eq!(
        updates(&plan),
        [
            format!("update subnet neon-subnet-public-us-east-1b ({public}): map public IP on launch: false → true"),
            "update eks nodegroup neon-nodes: nodes (min/max/desired): 3/3/3 → 5/5/5".to_string(),
        ]
    );
    let applied = moto.run(&wd, &["infra", "--output", "json"]);
    assert!(applied.status.success(), "{}", stdout(&applied));
    let expected: std::collections::BTreeMap<String, u64> =
        [("ec2 ModifySubnetAttribute".to_string(), 1), ("eks UpdateNodegroupConfig".to_string(), 1)].into();
    assert_eq!(mutations(&applied), expected, "apply made exactly the planned changes");
    let eks = aws_sdk_eks::Client::new(&moto.sdk());
    let group = moto.block_on(eks.describe_nodegroup().cluster_name("neon").nodegroup_name("neon-nodes").send()).unwrap();
    assert_eq!(group.nodegroup().unwrap().scaling_config().unwrap().desired_size(), Some(5));
    let converged = moto.run(&wd, &["infra", "--plan", "--output", "json"]);
    assert!(plan_actions(&converged).iter().all(|a| a["verb"] == "adopt" || a["verb"] == "run"), "{}", stdout(&converged));

    // What cannot change in place is listed by the plan and refused by apply before any
    // mutating call, each with the way out; the state stays as it was.
    let fixed = "aws:\n  emulator: true\nnetwork:\n  vpc_cidr: 10.9.0.0/16\n  az_count: 2\ncluster:\n  node_count: 5\n";
    std::fs::write(wd.path().join("neonctl-aws.yaml"), fixed).unwrap();
    let plan = moto.run(&wd, &["infra", "--plan", "--output", "json"]);
    assert!(plan.status.success(), "{}", stderr(&plan));
    let refused: Vec<String> =
        plan_actions(&plan).iter().filter(|a| a["verb"] == "refuse").map(|a| a["detail"].as_str().unwrap().to_string()).collect();
    assert_eq!(refused.len(), 2, "{refused:#?}");
    assert!(refused[0].starts_with("cannot change in place: network.vpc_cidr: 10.42.0.0/16 → 10.9.0.0/16. "), "{refused:#?}");
    assert!(refused[1].contains("network.az_count: 3 (us-east-1a, us-east-1b, us-east-1c) → 2"), "{refused:#?}");
    let before = state(&wd).infra;
    let out = moto.run(&wd, &["infra", "--output", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let error = stdout(&out) + &stderr(&out);
    assert!(error.contains("infra changed nothing") && error.contains("Set network.vpc_cidr back to 10.42.0.0/16"), "{error}");
    assert_eq!(mutating_calls(&out), 0, "{}", call_counts(&out));
    assert_eq!(state(&wd).infra, before);

    // A changed setting of an existing resource: the plan names it, apply re-applies just it.
    let tiering = "aws:\n  emulator: true\ncluster:\n  node_count: 5\nbucket:\n  intelligent_tiering_after_days: 60\n";
    std::fs::write(wd.path().join("neonctl-aws.yaml"), tiering).unwrap();
    let plan = moto.run(&wd, &["infra", "--plan", "--output", "json"]);
    assert_eq!(
        updates(&plan),
        ["update s3 bucket neon-123456789012-us-east-1: settings: applied with other values → as configured"],
        "{}",
        stdout(&plan)
    );
    let applied = moto.run(&wd, &["infra", "--output", "json"]);
    assert!(applied.status.success(), "{}", stdout(&applied));
    assert!(mutations(&applied).keys().all(|k| k.starts_with("s3 ")), "{:?}", mutations(&applied));
    assert_eq!(configure_steps(&applied), ["s3 bucket neon-123456789012-us-east-1"]);

    // A new node shape rolls the nodes: a new nodegroup named after its shape, then the old one
    // (drained on a real cluster; the emulator has no API server) deleted.
    let shape = "aws:\n  emulator: true\ncluster:\n  node_count: 5\n  node_disk_gib: 200\nbucket:\n  intelligent_tiering_after_days: 60\n";
    std::fs::write(wd.path().join("neonctl-aws.yaml"), shape).unwrap();
    let plan = moto.run(&wd, &["infra", "--plan", "--output", "json"]);
    let planned = updates(&plan);
    assert_eq!(planned.len(), 2, "{planned:#?}");
    let new_group = planned[0].strip_prefix("create eks nodegroup ").unwrap().trim_end_matches(": ").to_string();
    assert!(new_group.starts_with("neon-nodes-"), "{planned:#?}");
    assert!(
        planned[1].starts_with(&format!("delete eks nodegroup neon-nodes: replaced by {new_group} (cluster.node_disk_gib: 100 → 200)")),
        "{planned:#?}"
    );
    let applied = moto.run(&wd, &["infra", "--output", "json"]);
    assert!(applied.status.success(), "{}\n{}", stdout(&applied), stderr(&applied));
    let expected: std::collections::BTreeMap<String, u64> =
        [("eks CreateNodegroup", 1), ("eks DeleteNodegroup", 1)].map(|(k, n)| (k.to_string(), n)).into();
    assert_eq!(mutations(&applied), expected);
    assert!(stdout(&applied).contains("skipping draining eks nodegroup neon-nodes"), "{}", stdout(&applied));
    let groups = moto.block_on(eks.list_nodegroups().cluster_name("neon").send()).unwrap();
    assert_eq!(groups.nodegroups(), std::slice::from_ref(&new_group));
    assert_eq!(state(&wd).infra.resources["nodegroup"].id.as_deref(), Some(new_group.as_str()));
    let converged = moto.run(&wd, &["infra", "--output", "json"]);
    assert_eq!(mutating_calls(&converged), 0, "{}", call_counts(&converged));
    let tiering = shape;

    // NAT gateways per zone, then back to one: the plan lists the new gateways and addresses,
    // the moved routes, then the deletions; apply makes exactly those calls.
    let nat_config = |mode: &str| format!("{tiering}network:\n  nat_gateways: {mode}\n");
    let verbs = |plan: &std::process::Output| {
        let mut verbs: Vec<String> = updates(plan).iter().map(|u| u.split(':').next().unwrap().to_string()).collect();
        verbs.sort();
        verbs
    };
    std::fs::write(wd.path().join("neonctl-aws.yaml"), nat_config("per-az")).unwrap();
    let plan = moto.run(&wd, &["infra", "--plan", "--output", "json"]);
    assert_eq!(
        verbs(&plan),
        [
            "create elastic ip neon-eip-nat-us-east-1b",
            "create elastic ip neon-eip-nat-us-east-1c",
            "create nat gateway neon-nat-us-east-1b",
            "create nat gateway neon-nat-us-east-1c",
            &format!("update route table neon-rtb-private-us-east-1b ({})", infra.resources["rtb-private-us-east-1b"].id.clone().unwrap()),
            &format!("update route table neon-rtb-private-us-east-1c ({})", infra.resources["rtb-private-us-east-1c"].id.clone().unwrap()),
        ],
        "{}",
        stdout(&plan)
    );
    let applied = moto.run(&wd, &["infra", "--output", "json"]);
    assert!(applied.status.success(), "{}", stdout(&applied));
    let expected: std::collections::BTreeMap<String, u64> =
        [("ec2 AllocateAddress", 2), ("ec2 CreateNatGateway", 2), ("ec2 ReplaceRoute", 2)].map(|(k, n)| (k.to_string(), n)).into();
    assert_eq!(mutations(&applied), expected);
    std::fs::write(wd.path().join("neonctl-aws.yaml"), nat_config("single")).unwrap();
    let plan = moto.run(&wd, &["infra", "--plan", "--output", "json"]);
    let planned = verbs(&plan);
    assert_eq!(planned.iter().filter(|v| v.starts_with("update route table")).count(), 2, "{planned:#?}");
    assert_eq!(planned.iter().filter(|v| v.starts_with("delete nat gateway")).count(), 2, "{planned:#?}");
    assert_eq!(planned.iter().filter(|v| v.starts_with("delete elastic ip")).count(), 2, "{planned:#?}");
    assert_eq!(planned.len(), 6, "{planned:#?}");
    let applied = moto.run(&wd, &["infra", "--output", "json"]);
    assert!(applied.status.success(), "{}", stdout(&applied));
    let expected: std::collections::BTreeMap<String, u64> =
        [("ec2 DeleteNatGateway", 2), ("ec2 ReleaseAddress", 2), ("ec2 ReplaceRoute", 2)].map(|(k, n)| (k.to_string(), n)).into();
    assert_eq!(mutations(&applied), expected);
    assert_complete(&moto.census("neon"));
    let converged = moto.run(&wd, &["infra", "--output", "json"]);
    assert_eq!(mutating_calls(&converged), 0, "{}", call_counts(&converged));

    // With the state file lost, a run adopts everything again, in the same zones, and applies
    // every resource's settings again: the plan says which.
    std::fs::remove_dir_all(wd.state_dir()).unwrap();
    let plan = moto.run(&wd, &["infra", "--plan", "--output", "json"]);
    let planned: Vec<String> = updates(&plan)
        .iter()
        .map(|u| u.strip_prefix("update ").unwrap().split(": settings: not recorded as applied").next().unwrap().to_string())
        .collect();
    let adopted = moto.run(&wd, &["infra", "--output", "json"]);
    let mut configured = configure_steps(&adopted);
    let mut planned_sorted = planned.clone();
    configured.sort();
    planned_sorted.sort();
    assert_eq!(planned_sorted, configured, "the plan names every settings change apply makes");
    assert_eq!(planned.len(), 15, "vpc, bucket, 7 repositories, 6 roles: {planned:#?}");
    assert!(adopted.status.success(), "{}", stdout(&adopted));
    assert_complete(&moto.census("neon"));
    assert_eq!(state(&wd).infra.azs, infra.azs);
    assert_eq!(state(&wd).infra.resources.len(), infra.resources.len());

    // The plan now adopts everything and creates nothing.
    let plan = moto.run(&wd, &["infra", "--plan", "--output", "json"]);
    assert!(plan.status.success());
    let actions = plan_actions(&plan);
    assert!(actions.iter().all(|a| a["verb"] != "create"), "{actions:#?}");
    assert_eq!(actions.iter().filter(|a| a["verb"] == "adopt").count(), 32);
    assert_eq!(mutating_calls(&plan), 0);

    // No secret anywhere.
    for text in [std::fs::read_to_string(wd.state_dir().join("state.json")).unwrap(), stdout(&first), stderr(&first), stdout(&second)] {
        assert!(!text.contains(SECRET_KEY), "the secret key leaked");
    }
}

/// The points a run can die at; each is followed by a run that must converge with no twin.
const CRASH_POINTS: [&str; 16] = [
    "infra:bucket:created",
    "infra:repository:created",
    "infra:role:created",
    "infra:vpc:created",
    "infra:subnet:created",
    "infra:internet-gateway:created",
    "infra:elastic-ip:created",
    "infra:nat-gateway:before-create",
    "infra:nat-gateway:created",
    "infra:route-table:created",
    "infra:vpc-endpoint:created",
    "infra:cluster:before-create",
    "infra:cluster:created",
    "infra:oidc-provider:created",
    "infra:nodegroup:created",
    "state-after-rename",
];

#[test]
fn a_crash_anywhere_then_a_rerun_converges_without_duplicates() {
    let moto = Moto::start();
    for (i, point) in CRASH_POINTS.iter().enumerate() {
        moto.reset();
        let prefix = format!("crash{i}");
        let wd = Workdir::new();
        let crashed = moto.cmd(&wd, &["infra", "--prefix", &prefix]).env(neonctl_aws::crash::ENV, point).output().unwrap();
        assert!(crashed.status.code().is_none(), "{point}: the run was killed at the crash point: {}", stderr(&crashed));
        let again = moto.run(&wd, &["infra", "--prefix", &prefix, "--output", "json"]);
        assert!(again.status.success(), "{point}: {}", stdout(&again));
        assert_complete(&moto.census(&prefix));
        let third = moto.run(&wd, &["infra", "--prefix", &prefix, "--output", "json"]);
        assert_eq!(mutating_calls(&third), 0, "{point}: converged after the resume: {}", call_counts(&third));
    }
}

#[test]
fn bad_input_is_refused_before_anything_is_created() {
    let moto = Moto::start();

    // No credentials at all.
    let wd = Workdir::new();
    let out = moto.cmd(&wd, &["infra"]).env_remove("AWS_ACCESS_KEY_ID").env_remove("AWS_SECRET_ACCESS_KEY").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("no usable AWS credentials"), "{}", stderr(&out));
    assert_eq!(state(&wd).infra, Default::default());

    // A region that does not exist: refused while loading the config, no state written.
    let wd = Workdir::new();
    let out = moto.run(&wd, &["infra", "--region", "us-east-9"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not an AWS region"), "{}", stderr(&out));
    assert!(!wd.state_dir().join("state.json").exists());

    // The bucket name belongs to another account.
    let other = moto.block_on(async {
        let sts = aws_sdk_sts::Client::new(&moto.sdk());
        let assumed = sts.assume_role().role_arn("arn:aws:iam::111111111111:role/other").role_session_name("other").send().await.unwrap();
        let c = assumed.credentials().unwrap();
        aws_credential_types::Credentials::new(c.access_key_id(), c.secret_access_key(), Some(c.session_token().to_string()), None, "other")
    });
    let other_s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&moto.sdk_with(other)).force_path_style(true).build());
    moto.block_on(other_s3.create_bucket().bucket("taken-name").send()).unwrap();
    let wd = Workdir::new();
    std::fs::write(wd.path().join("neonctl-aws.yaml"), "aws:\n  emulator: true\nbucket:\n  name: taken-name\n").unwrap();
    let out = moto.run(&wd, &["infra"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("`taken-name` belongs to another AWS account"), "{}", stderr(&out));
    assert!(moto.census("neon").is_empty(), "nothing was created: {:#?}", moto.census("neon"));
    assert_eq!(state(&wd).infra, Default::default(), "the state records nothing");
}

#[test]
fn plan_without_credentials_assumes_nothing_exists() {
    let wd = Workdir::new();
    let out = wd.run(&["infra", "--plan", "--output", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let events = crate::support::json_events(&out);
    let plan = events.iter().find(|e| e["event"] == "plan").unwrap();
    let actions = plan["actions"].as_array().unwrap();
    assert!(actions.iter().filter(|a| a["verb"] == "create").count() >= 36, "{actions:#?}");
    let notes: Vec<&str> = plan["notes"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
    assert!(notes.iter().any(|n| n.contains("could not look up existing resources")), "{notes:?}");
    assert!(notes.iter().any(|n| n.starts_with("estimated cost $")), "{notes:?}");
    assert!(!wd.state_dir().join("state.json").exists());
}
