//! The pure part of `infra`: names, address ranges, tokens, policy documents, the cost estimate.
//! Nothing here calls AWS, so all of it is unit-tested.

use std::net::Ipv4Addr;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::config::{Config, NatGateways};

/// Namespace and service accounts of the Neon storage components (deploy creates them).
pub const EBS_CSI_SERVICE_ACCOUNT: (&str, &str) = ("kube-system", "ebs-csi-controller-sa");
pub const VPC_CNI_SERVICE_ACCOUNT: (&str, &str) = ("kube-system", "aws-node");

/// EKS managed addons, in the order they are created; `true` = before the nodegroup.
pub const ADDONS: [(&str, bool); 4] = [("vpc-cni", true), ("kube-proxy", true), ("coredns", true), ("aws-ebs-csi-driver", false)];

pub const MANAGED: &str = "arn:aws:iam::aws:policy/";

/// An IAM role of the deployment: `<prefix>-<suffix>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleSpec {
    pub suffix: &'static str,
    pub trust: Trust,
    pub managed: &'static [&'static str],
    /// Gets the inline policy that reads and writes the bucket.
    pub bucket_access: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    Service(&'static str),
    /// IRSA: only this Kubernetes service account (namespace, name) may assume the role.
    ServiceAccount(&'static str, &'static str),
    /// IRSA for a Neon component: its service account as `render` names it for the prefix.
    NeonServiceAccount(&'static str),
}

pub const CLUSTER_ROLE: RoleSpec = RoleSpec {
    suffix: "cluster",
    trust: Trust::Service("eks.amazonaws.com"),
    managed: &["AmazonEKSClusterPolicy", "AmazonEKSVPCResourceController"],
    bucket_access: false,
};
pub const NODE_ROLE: RoleSpec = RoleSpec {
    suffix: "node",
    trust: Trust::Service("ec2.amazonaws.com"),
    managed: &["AmazonEKSWorkerNodePolicy", "AmazonEC2ContainerRegistryPullOnly", "AmazonSSMManagedInstanceCore"],
    bucket_access: false,
};
/// Roles for service accounts; they need the cluster's OIDC provider.
pub const IRSA_ROLES: [RoleSpec; 4] = [
    RoleSpec { suffix: "pageserver", trust: Trust::NeonServiceAccount("pageserver"), managed: &[], bucket_access: true },
    RoleSpec { suffix: "safekeeper", trust: Trust::NeonServiceAccount("safekeeper"), managed: &[], bucket_access: true },
    RoleSpec {
        suffix: "ebs-csi",
        trust: Trust::ServiceAccount(EBS_CSI_SERVICE_ACCOUNT.0, EBS_CSI_SERVICE_ACCOUNT.1),
        managed: &["service-role/AmazonEBSCSIDriverPolicy"],
        bucket_access: false,
    },
    RoleSpec {
        suffix: "vpc-cni",
        trust: Trust::ServiceAccount(VPC_CNI_SERVICE_ACCOUNT.0, VPC_CNI_SERVICE_ACCOUNT.1),
        managed: &["AmazonEKS_CNI_Policy"],
        bucket_access: false,
    },
];

/// Deterministic idempotency token: the same resource of the same deployment always gets the
/// same token, so a re-run after a crash cannot create a twin. `generation` changes when a
/// recorded resource vanished and must be created anew.
pub fn token(prefix: &str, region: &str, component: &str, generation: &str) -> String {
    let digest = Sha256::digest(format!("neonctl-aws|{prefix}|{region}|{component}|{generation}"));
    hex::encode(&digest[..16])
}

/// A fingerprint of settings, to know whether they were already applied.
pub fn fingerprint(settings: &str) -> String {
    hex::encode(&Sha256::digest(settings)[..8])
}

/// Private subnets get a quarter of the VPC each (pods take their addresses from them);
/// public subnets (NAT gateways and load balancers only) get an eighth of the last quarter.
/// Returns `(public, private)` per zone.
pub fn subnet_cidrs(vpc_cidr: &str, zones: usize) -> Result<Vec<(String, String)>, String> {
    let (addr, len) = vpc_cidr.split_once('/').ok_or_else(|| format!("`{vpc_cidr}` is not a CIDR block"))?;
    let base = u32::from(addr.parse::<Ipv4Addr>().map_err(|e| format!("`{addr}`: {e}"))?);
    let len: u32 = len.parse().map_err(|_| format!("`{len}` is not a prefix length"))?;
    if !(1..=3).contains(&zones) || len > 24 {
        return Err(format!("cannot carve {zones} zones from /{len}"));
    }
    let block = |index: u32, sub_len: u32| format!("{}/{sub_len}", Ipv4Addr::from(base + (index << (32 - sub_len))));
    Ok((0..zones as u32).map(|i| (block(24 + i, len + 5), block(i, len + 2))).collect())
}

/// The zones to use: the first `count` (by name) where the instance type is offered, or the
/// first `count` available ones when the offerings are unknown.
pub fn choose_zones(available: &[String], offered: Option<&[String]>, count: usize) -> Result<Vec<String>, String> {
    let mut zones: Vec<String> = available.iter().filter(|z| offered.is_none_or(|o| o.contains(z))).cloned().collect();
    zones.sort();
    zones.truncate(count);
    if zones.len() < count.min(2) || zones.len() < count {
        return Err(format!(
            "only {} availability zone(s) offer the node instance type ({}); need {count}. Choose another cluster.node_instance_type, \
             region, or lower network.az_count",
            zones.len(),
            zones.join(", ")
        ));
    }
    Ok(zones)
}

/// The zones hosting NAT gateways.
pub fn nat_zones(config: &Config, zones: &[String]) -> Vec<String> {
    match config.network.nat_gateways {
        NatGateways::Single => zones.iter().take(1).cloned().collect(),
        NatGateways::PerAz => zones.to_vec(),
    }
}

/// The NAT gateway private subnets in `zone` route through.
pub fn nat_for(config: &Config, zones: &[String], zone: &str) -> String {
    match config.network.nat_gateways {
        NatGateways::Single => zones[0].clone(),
        NatGateways::PerAz => zone.to_string(),
    }
}

pub fn bucket_name(config: &Config, account: &str) -> String {
    config.bucket.name.clone().unwrap_or_else(|| format!("{}-{account}-{}", config.prefix, config.region))
}

pub fn trust_service(service: &str) -> Value {
    json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow",
        "Principal": {"Service": service},
        "Action": if service == "eks.amazonaws.com" { json!(["sts:AssumeRole", "sts:TagSession"]) } else { json!("sts:AssumeRole") }
    }]})
}

/// IRSA trust: the cluster's OIDC provider, for exactly one service account.
pub fn trust_service_account(provider_arn: &str, issuer: &str, namespace: &str, account: &str) -> Value {
    let host = issuer.trim_start_matches("https://");
    json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow",
        "Principal": {"Federated": provider_arn},
        "Action": "sts:AssumeRoleWithWebIdentity",
        "Condition": {"StringEquals": {
            format!("{host}:sub"): format!("system:serviceaccount:{namespace}:{account}"),
            format!("{host}:aud"): "sts.amazonaws.com"
        }}
    }]})
}

/// Read and write access to one bucket, nothing else.
pub fn bucket_access(bucket: &str) -> Value {
    json!({"Version": "2012-10-17", "Statement": [
        {"Sid": "ListTheBucket", "Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"], "Resource": format!("arn:aws:s3:::{bucket}")},
        {"Sid": "ReadWriteObjects", "Effect": "Allow",
         "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
         "Resource": format!("arn:aws:s3:::{bucket}/*")}
    ]})
}

/// Refuses every request that does not use TLS.
pub fn tls_only(bucket: &str) -> Value {
    json!({"Version": "2012-10-17", "Statement": [{
        "Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
        "Resource": [format!("arn:aws:s3:::{bucket}"), format!("arn:aws:s3:::{bucket}/*")],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}}
    }]})
}

pub fn ecr_lifecycle(keep: u32) -> Value {
    json!({"rules": [{
        "rulePriority": 1,
        "description": format!("keep the last {keep} images"),
        "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": keep},
        "action": {"type": "expire"}
    }]})
}

/// EKS access entries want the IAM ARN, not the STS session: `assumed-role/R/session` becomes
/// the role R (its path is looked up by the caller), `sts … user/u` becomes `iam … user/u`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// Final ARN.
    Arn(String),
    /// An assumed role: look up the role's ARN (with its path) by name.
    Role(String),
}

pub fn principal(caller_arn: &str) -> Principal {
    let parts: Vec<&str> = caller_arn.splitn(6, ':').collect();
    if let [_, partition, "sts", _, account, resource] = parts[..] {
        if let Some(rest) = resource.strip_prefix("assumed-role/") {
            return Principal::Role(rest.split('/').next().unwrap_or(rest).to_string());
        }
        return Principal::Arn(format!("arn:{partition}:iam::{account}:{resource}"));
    }
    Principal::Arn(caller_arn.to_string())
}

/// The node group's AMI type for the instance type's CPU.
pub fn ami_type(instance_type: &str) -> &'static str {
    match crate::platform::instance_arch(instance_type) {
        crate::platform::Arch::Aarch64 => "AL2023_ARM_64_STANDARD",
        crate::platform::Arch::X86_64 => "AL2023_x86_64_STANDARD",
    }
}

/// The monthly estimate, one line per item, plus the total and notes about what is missing.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Estimate {
    pub lines: Vec<(String, f64)>,
    pub total: f64,
    pub notes: Vec<String>,
}

pub const HOURS_PER_MONTH: f64 = 730.0;

/// The monthly cost of what `config` asks for, with the cluster on Kubernetes `version` as of
/// `today` (a version in extended support costs more an hour).
pub fn estimate(config: &Config, nat_count: usize, version: &str, calendar: &super::versions::Calendar, today: time::Date) -> Estimate {
    let p = &config.pricing;
    let c = &config.cluster;
    let (control_plane, per_hour) = match calendar.support(version, today) {
        super::versions::Support::Extended { .. } => {
            (format!("eks control plane (Kubernetes {version}, extended support)"), p.eks_extended_cluster_per_hour)
        }
        _ => (format!("eks control plane (Kubernetes {version})"), p.eks_cluster_per_hour),
    };
    let mut lines = vec![
        (control_plane, per_hour * HOURS_PER_MONTH),
        (format!("{nat_count} nat gateway(s)"), p.nat_gateway_per_hour * HOURS_PER_MONTH * nat_count as f64),
        (
            format!("{} × {} GiB gp3 node volumes", c.node_count, c.node_disk_gib),
            p.ebs_gp3_per_gib_month * (c.node_count * c.node_disk_gib) as f64,
        ),
        ("1 network load balancer (proxy)".to_string(), p.nlb_per_hour * HOURS_PER_MONTH),
    ];
    let mut notes = vec![format!(
        "prices as of {} (pricing.* in the config); data transfer, NAT processing, S3 storage and requests are not included",
        p.as_of
    )];
    match p.instance_per_hour.get(&c.node_instance_type) {
        Some(price) => {
            lines.insert(1, (format!("{} × {} nodes", c.node_count, c.node_instance_type), price * HOURS_PER_MONTH * c.node_count as f64))
        }
        None => {
            notes.push(format!("no price for {} in pricing.instance_per_hour: the nodes are not in the estimate", c.node_instance_type))
        }
    }
    let lines: Vec<(String, f64)> = lines.into_iter().map(|(what, usd)| (what, (usd * 100.0).round() / 100.0)).collect();
    let total = (lines.iter().map(|(_, usd)| usd).sum::<f64>() * 100.0).round() / 100.0;
    Estimate { lines, total, notes }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_are_carved_without_overlap() {
        let cidrs = subnet_cidrs("10.42.0.0/16", 3).unwrap();
        insta::assert_json_snapshot!(cidrs, @r#"
        [
          [
            "10.42.192.0/21",
            "10.42.0.0/18"
          ],
          [
            "10.42.200.0/21",
            "10.42.64.0/18"
          ],
          [
            "10.42.208.0/21",
            "10.42.128.0/18"
          ]
        ]
        "#);
        assert_eq!(
            subnet_cidrs("192.168.16.0/20", 2).unwrap(),
            vec![
                ("192.168.28.0/25".to_string(), "192.168.16.0/22".to_string()),
                ("192.168.28.128/25".to_string(), "192.168.20.0/22".to_string()),
            ]
        );
        assert!(subnet_cidrs("10.0.0.0/16", 4).is_err());
    }

    #[test]
    fn tokens_are_deterministic_and_distinct() {
        let a = token("neon", "us-east-1", "nat-us-east-1a", "");
        assert_eq!(a, token("neon", "us-east-1", "nat-us-east-1a", ""));
        assert_eq!(a.len(), 32);
        assert_ne!(a, token("neon", "us-east-1", "nat-us-east-1b", ""));
        assert_ne!(a, token("neon", "us-east-1", "nat-us-east-1a", "nat-0123"));
        assert_ne!(a, token("neon2", "us-east-1", "nat-us-east-1a", ""));
    }

    #[test]
    fn zones_prefer_offered_ones_in_order() {
        let available: Vec<String> = ["us-east-1c", "us-east-1a", "us-east-1b", "us-east-1e"].map(String::from).to_vec();
        let offered: Vec<String> = ["us-east-1a", "us-east-1c", "us-east-1e"].map(String::from).to_vec();
        assert_eq!(choose_zones(&available, Some(&offered), 3).unwrap(), ["us-east-1a", "us-east-1c", "us-east-1e"]);
        assert_eq!(choose_zones(&available, None, 2).unwrap(), ["us-east-1a", "us-east-1b"]);
        let err = choose_zones(&available, Some(&offered[..1]), 2).unwrap_err();
        assert!(err.contains("node_instance_type"), "{err}");
    }

    #[test]
    fn policies() {
        let trust = trust_service_account(
            "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/ABC",
            "https://oidc.eks.us-east-1.amazonaws.com/id/ABC",
            "neon",
            "pageserver",
        );
        // Sorted: a dev-dependency turns on serde_json's preserve_order in test builds.
        insta::with_settings!({sort_maps => true}, { insta::assert_json_snapshot!(trust, @r#"
        {
          "Statement": [
            {
              "Action": "sts:AssumeRoleWithWebIdentity",
              "Condition": {
                "StringEquals": {
                  "oidc.eks.us-east-1.amazonaws.com/id/ABC:aud": "sts.amazonaws.com",
                  "oidc.eks.us-east-1.amazonaws.com/id/ABC:sub": "system:serviceaccount:neon:pageserver"
                }
              },
              "Effect": "Allow",
              "Principal": {
                "Federated": "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/ABC"
              }
            }
          ],
          "Version": "2012-10-17"
        }
        "#) });
        let access = bucket_access("b1").to_string();
        assert!(access.contains("arn:aws:s3:::b1/*") && !access.contains("\"*\""), "{access}");
        assert!(tls_only("b1").to_string().contains("aws:SecureTransport"));
        assert_eq!(ecr_lifecycle(5)["rules"][0]["selection"]["countNumber"], 5);
        assert_eq!(trust_service("eks.amazonaws.com")["Statement"][0]["Action"][1], "sts:TagSession");
    }

    #[test]
    fn principals() {
        assert_eq!(principal("arn:aws:sts::123:assumed-role/Admin/me@x"), Principal::Role("Admin".into()));
        assert_eq!(principal("arn:aws:sts::123456789012:user/moto"), Principal::Arn("arn:aws:iam::123456789012:user/moto".into()));
        assert_eq!(principal("arn:aws:iam::123:user/ci"), Principal::Arn("arn:aws:iam::123:user/ci".into()));
    }

    #[test]
    fn ami_types() {
        assert_eq!(ami_type("m6i.xlarge"), "AL2023_x86_64_STANDARD");
        assert_eq!(ami_type("m7g.xlarge"), "AL2023_ARM_64_STANDARD");
        assert_eq!(ami_type("c7gn.large"), "AL2023_ARM_64_STANDARD");
        assert_eq!(ami_type("g5.xlarge"), "AL2023_x86_64_STANDARD");
    }

    #[test]
    fn cost_estimate() {
        let config = Config::default();
        insta::assert_json_snapshot!(estimate(&config, 1, "1.35", &super::super::versions::Calendar::table(), time::macros::date!(2026 - 11 - 26)), @r#"
        {
          "lines": [
            [
              "eks control plane (Kubernetes 1.35)",
              73.0
            ],
            [
              "3 × m6i.xlarge nodes",
              420.48
            ],
            [
              "1 nat gateway(s)",
              32.85
            ],
            [
              "3 × 100 GiB gp3 node volumes",
              24.0
            ],
            [
              "1 network load balancer (proxy)",
              16.43
            ]
          ],
          "total": 566.76,
          "notes": [
            "prices as of 2026-11-01 (pricing.* in the config); data transfer, NAT processing, S3 storage and requests are not included"
          ]
        }
        "#);
        let mut unknown = Config::default();
        unknown.cluster.node_instance_type = "x9z.huge".into();
        let e = estimate(&unknown, 3, "1.35", &super::super::versions::Calendar::table(), time::macros::date!(2026 - 11 - 26));
        assert!(e.notes.iter().any(|n| n.contains("x9z.huge")));
        assert_eq!(e.lines.len(), 4);
        // A version in extended support costs six times as much an hour.
        let extended = estimate(&config, 1, "1.33", &super::super::versions::Calendar::table(), time::macros::date!(2026 - 11 - 26));
        assert_eq!(extended.lines[0], ("eks control plane (Kubernetes 1.33, extended support)".to_string(), 438.0));
    }
}
