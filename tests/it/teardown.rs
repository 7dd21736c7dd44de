//! `teardown` against moto: from the state and by tag, after crashes, with bucket data, consent.

use crate::moto::{Moto, assert_complete};
use crate::support::{Workdir, stderr, stdout};

fn infra(moto: &Moto, wd: &Workdir, prefix: &str) {
    let out = moto.run(wd, &["infra", "--prefix", prefix]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_complete(&moto.census(prefix));
}

fn teardown_ok(moto: &Moto, wd: &Workdir, args: &[&str]) -> std::process::Output {
    let out = moto.run(wd, args);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    out
}

#[test]
fn teardown_after_a_full_run_purges_the_versioned_bucket_and_leaves_nothing() {
    let moto = Moto::start();
    let wd = Workdir::new();
    infra(&moto, &wd, "neon");
    // Data in the bucket: versions, delete markers and an unfinished multipart upload. The
    // TLS-only policy refuses plain-HTTP object calls, which is all moto speaks, so lift it first.
    let bucket = "neon-123456789012-us-east-1";
    let s3 = moto.s3();
    moto.block_on(async {
        s3.delete_bucket_policy().bucket(bucket).send().await.unwrap();
        for round in 0..3 {
            for key in ["layers/a", "layers/b", "wal/000001"] {
                s3.put_object().bucket(bucket).key(key).body(format!("v{round}").into_bytes().into()).send().await.unwrap();
            }
        }
        s3.delete_object().bucket(bucket).key("layers/a").send().await.unwrap();
        s3.create_multipart_upload().bucket(bucket).key("big").send().await.unwrap();
        let versions = s3.list_object_versions().bucket(bucket).send().await.unwrap();
        assert_eq!(versions.versions().len(), 9);
        assert_eq!(versions.delete_markers().len(), 1);
    });

    teardown_ok(&moto, &wd, &["teardown", "--yes"]);
    assert!(moto.census("neon").is_empty(), "{:#?}", moto.census("neon"));
    assert!(moto.block_on(s3.head_bucket().bucket(bucket).send()).is_err(), "the bucket is gone");
    let state = neonctl_aws::state::read(&wd.state_dir()).unwrap();
    assert!(state.infra.resources.is_empty());

    // Nothing left: a second teardown is a no-op.
    let again = teardown_ok(&moto, &wd, &["teardown", "--yes", "--output", "json"]);
    assert_eq!(crate::moto::mutating_calls(&again), 0);
}

#[test]
fn teardown_without_a_state_file_finds_everything_by_tag() {
    let moto = Moto::start();
    let wd = Workdir::new();
    infra(&moto, &wd, "lost");
    // Something of another prefix in the same account must survive.
    let ec2 = aws_sdk_ec2::Client::new(&moto.sdk());
    let other = moto.block_on(
        ec2.create_vpc()
            .cidr_block("10.9.0.0/16")
            .tag_specifications(
                aws_sdk_ec2::types::TagSpecification::builder()
                    .resource_type(aws_sdk_ec2::types::ResourceType::Vpc)
                    .tags(aws_sdk_ec2::types::Tag::builder().key(crate::moto::CLUSTER_TAG).value("kept").build())
                    .build(),
            )
            .send(),
    );
    other.unwrap();
    // A load balancer's group and a group that allows it, as Kubernetes controllers leave them.
    let lost_vpc = moto.census("lost")["vpc/vpc"][0].clone();
    let groups = moto.block_on(async {
        let lb = ec2.create_security_group().group_name("k8s-elb-a1").description("lb").vpc_id(&lost_vpc).send().await.unwrap();
        let nodes = ec2.create_security_group().group_name("nodes").description("nodes").vpc_id(&lost_vpc).send().await.unwrap();
        let (lb, nodes) = (lb.group_id().unwrap().to_string(), nodes.group_id().unwrap().to_string());
        let from_lb = aws_sdk_ec2::types::IpPermission::builder()
            .ip_protocol("tcp")
            .from_port(30000)
            .to_port(32767)
            .user_id_group_pairs(aws_sdk_ec2::types::UserIdGroupPair::builder().group_id(&lb).build())
            .build();
        ec2.authorize_security_group_ingress().group_id(&nodes).ip_permissions(from_lb).send().await.unwrap();
        vec![lb, nodes]
    });
    std::fs::remove_dir_all(wd.state_dir()).unwrap();
    let out = teardown_ok(&moto, &wd, &["teardown", "--yes", "--prefix", "lost", "--region", "us-east-1"]);
    // The one expected warning: emulator mode skips the Kubernetes step.
    let warnings: Vec<_> =
        stderr(&out).lines().filter(|l| l.contains("warning") && !l.contains("aws.emulator")).map(str::to_string).collect();
    assert!(warnings.is_empty(), "{}", stderr(&out));
    assert!(moto.census("lost").is_empty(), "{:#?}", moto.census("lost"));
    assert_eq!(moto.census("kept").keys().collect::<Vec<_>>(), ["vpc/?"]);
    let left = moto.block_on(ec2.describe_security_groups().set_group_ids(Some(groups)).send());
    assert!(left.is_err() || left.unwrap().security_groups().is_empty(), "the security groups in the vpc are gone");
}

#[test]
fn teardown_after_crashed_runs_leaves_nothing() {
    let moto = Moto::start();
    for (prefix, point) in [("early", "infra:nat-gateway:created"), ("late", "infra:cluster:created"), ("last", "infra:nodegroup:created")]
    {
        moto.reset();
        let wd = Workdir::new();
        let crashed = moto.cmd(&wd, &["infra", "--prefix", prefix]).env(neonctl_aws::crash::ENV, point).output().unwrap();
        assert!(crashed.status.code().is_none());
        assert!(!moto.census(prefix).is_empty());
        teardown_ok(&moto, &wd, &["teardown", "--yes", "--prefix", prefix]);
        assert!(moto.census(prefix).is_empty(), "{point}: {:#?}", moto.census(prefix));
    }
}

#[test]
fn a_teardown_killed_midway_finishes_when_run_again() {
    let moto = Moto::start();
    for point in ["teardown:nodegroup:deleted", "teardown:nat-gateway:deleted", "teardown:role:deleted", "teardown:route-table:deleted"] {
        moto.reset();
        let wd = Workdir::new();
        infra(&moto, &wd, "neon");
        let crashed = moto.cmd(&wd, &["teardown", "--yes"]).env(neonctl_aws::crash::ENV, point).output().unwrap();
        assert!(crashed.status.code().is_none(), "{point}: killed at the crash point");
        assert!(!moto.census("neon").is_empty());
        teardown_ok(&moto, &wd, &["teardown", "--yes"]);
        assert!(moto.census("neon").is_empty(), "{point}: {:#?}", moto.census("neon"));
    }
}

#[test]
fn consent_dry_run_and_keep_data() {
    let moto = Moto::start();
    let wd = Workdir::new();
    infra(&moto, &wd, "neon");
    let before = moto.census("neon");

    // No --yes and no terminal: refused before anything is deleted.
    let out = moto.run(&wd, &["teardown"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--keep-data") && stderr(&out).contains("--yes"), "{}", stderr(&out));
    assert_eq!(moto.census("neon"), before);

    // --dry-run lists and deletes nothing.
    let out = moto.run(&wd, &["teardown", "--dry-run", "--output", "json"]);
    assert!(out.status.success());
    let events = crate::support::json_events(&out);
    let plan = events.iter().find(|e| e["event"] == "plan").unwrap();
    assert_eq!(plan["actions"].as_array().unwrap().len(), before.values().map(Vec::len).sum::<usize>() + 1, "{plan:#}");
    assert_eq!(crate::moto::mutating_calls(&out), 0);
    assert_eq!(moto.census("neon"), before);

    // --keep-data keeps the bucket only, and needs no consent.
    teardown_ok(&moto, &wd, &["teardown", "--keep-data"]);
    let left = moto.census("neon");
    assert_eq!(left.keys().collect::<Vec<_>>(), ["s3/bucket"], "{left:#?}");
}

#[test]
fn leftovers_are_named_and_exit_4() {
    let moto = Moto::start();
    let wd = Workdir::new();
    infra(&moto, &wd, "neon");
    // Someone added an untagged subnet to our VPC: the VPC cannot go.
    let vpc = moto.census("neon")["vpc/vpc"][0].clone();
    let ec2 = aws_sdk_ec2::Client::new(&moto.sdk());
    moto.block_on(ec2.create_subnet().vpc_id(&vpc).cidr_block("10.42.240.0/24").send()).unwrap();
    let out = moto.run(&wd, &["teardown", "--yes"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("vpc {vpc}")), "{}", stderr(&out));
    assert_eq!(moto.census("neon").keys().collect::<Vec<_>>(), ["vpc/vpc"]);
}

#[test]
fn dry_run_without_credentials_lists_what_the_state_records() {
    let wd = Workdir::new();
    let out = wd.run(&["teardown", "--dry-run", "--output", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let events = crate::support::json_events(&out);
    let plan = events.iter().find(|e| e["event"] == "plan").unwrap();
    let notes = plan["notes"].to_string();
    assert!(notes.contains("could not look up resources"), "{notes}");
    assert!(!wd.state_dir().join("state.json").exists());
}

#[test]
fn a_cluster_with_our_name_but_not_our_tag_is_left_alone() {
    let moto = Moto::start();
    let eks = aws_sdk_eks::Client::new(&moto.sdk());
    let vpc = aws_sdk_eks::types::VpcConfigRequest::builder().subnet_ids("subnet-1").build();
    moto.block_on(eks.create_cluster().name("neon").role_arn("arn:aws:iam::123456789012:role/x").resources_vpc_config(vpc).send()).unwrap();
    let wd = Workdir::new();
    let out = teardown_ok(&moto, &wd, &["teardown", "--yes"]);
    assert!(stderr(&out).contains("is not tagged neonctl-aws/cluster=neon"), "{}", stderr(&out));
    assert!(moto.block_on(eks.describe_cluster().name("neon").send()).is_ok(), "the cluster is still there");
    // infra refuses to adopt it.
    let out = moto.run(&wd, &["infra"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("will neither adopt nor delete it"), "{}", stderr(&out));
    assert!(moto.census("neon").is_empty(), "refused before creating anything: {:#?}", moto.census("neon"));
}
