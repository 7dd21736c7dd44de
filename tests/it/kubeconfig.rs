//! `kubeconfig` and `token` against moto's EKS: the context points at the cluster's endpoint and
//! runs this binary as its exec plugin; the plugin answers with a signed ExecCredential.

use base64::Engine;

use crate::moto::Moto;
use crate::support::{Workdir, stderr, stdout};

#[test]
fn kubeconfig_merges_a_context_whose_exec_plugin_signs_tokens() {
    let moto = Moto::start();
    let wd = Workdir::new();
    let eks = aws_sdk_eks::Client::new(&moto.sdk());
    let cluster = moto
        .block_on(
            eks.create_cluster()
                .name("neon")
                .role_arn("arn:aws:iam::123456789012:role/neon-cluster")
                .resources_vpc_config(aws_sdk_eks::types::VpcConfigRequest::builder().subnet_ids("subnet-1").build())
                .send(),
        )
        .unwrap()
        .cluster
        .unwrap();
    let kubeconfig = wd.path().join("kube/config");
    std::fs::create_dir_all(kubeconfig.parent().unwrap()).unwrap();
    std::fs::write(&kubeconfig, "apiVersion: v1\nkind: Config\nclusters:\n- name: other\n  cluster: {server: https://other}\n").unwrap();

    let out = moto.run(&wd, &["kubeconfig", "--file", kubeconfig.to_str().unwrap(), "--output", "plain"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("context `neon` written"), "{}", stdout(&out));
    let written: serde_json::Value = serde_saphyr::from_str(&std::fs::read_to_string(&kubeconfig).unwrap()).unwrap();
    assert_eq!(written["current-context"], "neon");
    let clusters = written["clusters"].as_array().unwrap();
    assert_eq!(clusters.len(), 2, "the other cluster is kept");
    assert_eq!(clusters[1]["cluster"]["server"], cluster.endpoint.unwrap().as_str());
    assert_eq!(clusters[1]["cluster"]["certificate-authority-data"], cluster.certificate_authority.unwrap().data.unwrap().as_str());
    let exec = &written["users"][0]["user"]["exec"];
    assert_eq!(exec["command"], crate::support::BIN);
    assert_eq!(exec["args"], serde_json::json!(["token", "--cluster", "neon", "--region", "us-east-1"]));

    // What kubectl runs: only the ExecCredential on stdout.
    let args: Vec<&str> = exec["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    let out = moto.run(&wd, &args);
    assert!(out.status.success(), "{}", stderr(&out));
    let credential: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(credential["kind"], "ExecCredential");
    let token = credential["status"]["token"].as_str().unwrap();
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token.strip_prefix("k8s-aws-v1.").unwrap()).unwrap();
    let url = String::from_utf8(url).unwrap();
    assert!(url.starts_with("https://sts.us-east-1.amazonaws.com/?Action=GetCallerIdentity"), "{url}");
    assert!(url.contains("X-Amz-SignedHeaders=host%3Bx-k8s-aws-id"), "{url}");
    assert!(!stdout(&out).contains(crate::moto::SECRET_KEY) && !stderr(&out).contains(crate::moto::SECRET_KEY));
}

#[test]
fn kubeconfig_for_a_missing_cluster_says_to_run_infra() {
    let moto = Moto::start();
    let wd = Workdir::new();
    let file = wd.path().join("kubeconfig");
    let out = moto.run(&wd, &["kubeconfig", "--file", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("EKS cluster `neon` does not exist in us-east-1: run `neonctl-aws infra` first"), "{}", stderr(&out));
    assert!(!file.exists());
}
