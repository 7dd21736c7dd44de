//! `iam-policy`: the least-privilege IAM policy the AWS phases need for one prefix and region.
//! Every mutating action is scoped to the prefix's names, IAM path or tags; only lookups that
//! AWS cannot scope (Describe*, List*) use `"Resource": "*"`, and no action is a wildcard.

use serde_json::{Value, json};

use crate::aws::inventory::role_path;
use crate::aws::tags::CLUSTER_TAG;
use crate::cli::{IamPolicyArgs, PolicyFor};
use crate::config::Config;
use crate::output::Printer;
use crate::phases::infra::spec;

pub fn run(args: &IamPolicyArgs, config: &Config, printer: &Printer) -> anyhow::Result<()> {
    let wanted = if args.for_phases.is_empty() { PolicyFor::ALL.to_vec() } else { args.for_phases.clone() };
    printer.result_line(&serde_json::to_string_pretty(&policy(config, &wanted)).expect("json serializes"));
    Ok(())
}

struct Statement {
    sid: &'static str,
    phases: &'static [PolicyFor],
    actions: &'static [&'static str],
    resources: Vec<String>,
    condition: Option<Value>,
}

use PolicyFor::{Deploy, Infra, Push, Teardown};

/// The EC2 resource types `infra` creates (ARN form).
const EC2_TYPES: [&str; 7] = ["vpc", "subnet", "internet-gateway", "elastic-ip", "natgateway", "route-table", "vpc-endpoint"];

pub fn policy(config: &Config, wanted: &[PolicyFor]) -> Value {
    let p = &config.prefix;
    let r = &config.region;
    let ec2 = |t: &str| format!("arn:aws:ec2:{r}:*:{t}/*");
    let ours = json!({"StringEquals": {format!("aws:ResourceTag/{CLUSTER_TAG}"): p}});
    let bucket = config.bucket.name.clone().unwrap_or_else(|| format!("{p}-*-{r}"));
    let statements = [
        Statement {
            sid: "LookupsAwsCannotScope",
            phases: &[Infra, Push, Deploy, Teardown],
            actions: &[
                "sts:GetCallerIdentity",
                "ec2:DescribeAvailabilityZones",
                "ec2:DescribeInstanceTypeOfferings",
                "ec2:DescribeVpcs",
                "ec2:DescribeSubnets",
                "ec2:DescribeInternetGateways",
                "ec2:DescribeAddresses",
                "ec2:DescribeNatGateways",
                "ec2:DescribeRouteTables",
                "ec2:DescribeVpcEndpoints",
                "ec2:DescribeSecurityGroups",
                "ec2:DescribeSecurityGroupRules",
                "ec2:DescribeNetworkInterfaces",
                "eks:DescribeAddonVersions",
                "eks:DescribeClusterVersions",
                "ecr:DescribeRepositories",
                "ecr:GetAuthorizationToken",
                "s3:ListAllMyBuckets",
                "iam:ListRoles",
                "iam:ListOpenIDConnectProviders",
            ],
            resources: vec!["*".into()],
            condition: None,
        },
        Statement {
            sid: "Ec2CreateOnlyTagged",
            phases: &[Infra],
            actions: &[
                "ec2:CreateVpc",
                "ec2:CreateSubnet",
                "ec2:CreateInternetGateway",
                "ec2:AllocateAddress",
                "ec2:CreateNatGateway",
                "ec2:CreateRouteTable",
                "ec2:CreateVpcEndpoint",
            ],
            resources: EC2_TYPES.iter().map(|t| ec2(t)).collect(),
            condition: Some(json!({"StringEquals": {format!("aws:RequestTag/{CLUSTER_TAG}"): p}})),
        },
        Statement {
            sid: "Ec2TagOnCreate",
            phases: &[Infra],
            actions: &["ec2:CreateTags"],
            resources: EC2_TYPES.iter().map(|t| ec2(t)).collect(),
            condition: Some(json!({"StringEquals": {"ec2:CreateAction": [
                "CreateVpc", "CreateSubnet", "CreateInternetGateway", "AllocateAddress", "CreateNatGateway", "CreateRouteTable", "CreateVpcEndpoint"
            ]}})),
        },
        Statement {
            sid: "Ec2UseAndChangeOurs",
            phases: &[Infra],
            actions: &[
                "ec2:CreateSubnet",
                "ec2:CreateNatGateway",
                "ec2:CreateRouteTable",
                "ec2:CreateVpcEndpoint",
                "ec2:ModifyVpcAttribute",
                "ec2:ModifySubnetAttribute",
                "ec2:AttachInternetGateway",
                "ec2:CreateRoute",
                "ec2:ReplaceRoute",
                "ec2:AssociateRouteTable",
                "ec2:ModifyVpcEndpoint",
            ],
            resources: EC2_TYPES.iter().map(|t| ec2(t)).collect(),
            condition: Some(ours.clone()),
        },
        Statement {
            sid: "Ec2DeleteOurs",
            phases: &[Teardown],
            actions: &[
                "ec2:DeleteVpcEndpoints",
                "ec2:DeleteNatGateway",
                "ec2:ReleaseAddress",
                "ec2:DetachInternetGateway",
                "ec2:DeleteInternetGateway",
                "ec2:DisassociateRouteTable",
                "ec2:DeleteRouteTable",
                "ec2:DeleteSubnet",
                "ec2:DeleteVpc",
            ],
            resources: EC2_TYPES.iter().map(|t| ec2(t)).collect(),
            condition: Some(ours.clone()),
        },
        Statement {
            sid: "Ec2DeleteTheEksClusterSecurityGroup",
            phases: &[Teardown],
            // Rules referencing another group are revoked first: they block both groups' deletion.
            actions: &["ec2:RevokeSecurityGroupIngress", "ec2:RevokeSecurityGroupEgress", "ec2:DeleteSecurityGroup"],
            resources: vec![ec2("security-group")],
            condition: Some(json!({"StringEquals": {"aws:ResourceTag/aws:eks:cluster-name": p}})),
        },
        Statement {
            sid: "Ec2DeleteInterfacesTheVpcCniLeft",
            phases: &[Teardown],
            actions: &["ec2:DeleteNetworkInterface"],
            resources: vec![ec2("network-interface")],
            condition: Some(json!({"StringEquals": {"aws:ResourceTag/cluster.k8s.amazonaws.com/name": p}})),
        },
        Statement {
            sid: "IamRolesUnderThePrefixPath",
            phases: &[Infra, Teardown],
            actions: &[
                "iam:CreateRole",
                "iam:GetRole",
                "iam:TagRole",
                "iam:UpdateAssumeRolePolicy",
                "iam:PutRolePolicy",
                "iam:ListAttachedRolePolicies",
                "iam:ListRolePolicies",
                "iam:ListInstanceProfilesForRole",
                "iam:DetachRolePolicy",
                "iam:DeleteRolePolicy",
                "iam:RemoveRoleFromInstanceProfile",
                "iam:DeleteRole",
            ],
            resources: vec![format!("arn:aws:iam::*:role{}*", role_path(p))],
            condition: None,
        },
        Statement {
            sid: "IamAttachOnlyTheManagedPoliciesInfraUses",
            phases: &[Infra],
            actions: &["iam:AttachRolePolicy"],
            resources: vec![format!("arn:aws:iam::*:role{}*", role_path(p))],
            condition: Some(json!({"ArnEquals": {"iam:PolicyARN": managed_policies()}})),
        },
        Statement {
            sid: "IamPassRolesToEks",
            phases: &[Infra],
            actions: &["iam:PassRole"],
            resources: vec![format!("arn:aws:iam::*:role{}*", role_path(p))],
            condition: Some(json!({"StringEquals": {"iam:PassedToService": "eks.amazonaws.com"}})),
        },
        Statement {
            sid: "IamCallerRoleForTheAccessEntry",
            phases: &[Infra],
            actions: &["iam:GetRole"],
            resources: vec!["arn:aws:iam::*:role/*".into()],
            condition: None,
        },
        Statement {
            sid: "IamClusterOidcProvider",
            phases: &[Infra, Teardown],
            actions: &[
                "iam:CreateOpenIDConnectProvider",
                "iam:GetOpenIDConnectProvider",
                "iam:TagOpenIDConnectProvider",
                "iam:DeleteOpenIDConnectProvider",
            ],
            resources: vec![format!("arn:aws:iam::*:oidc-provider/oidc.eks.{r}.amazonaws.com/id/*")],
            condition: None,
        },
        Statement {
            sid: "EksTheCluster",
            phases: &[Infra, Deploy, Teardown],
            actions: &[
                "eks:CreateCluster",
                "eks:DescribeCluster",
                "eks:TagResource",
                "eks:ListNodegroups",
                "eks:CreateNodegroup",
                "eks:DescribeNodegroup",
                "eks:ListAddons",
                "eks:CreateAddon",
                "eks:DescribeAddon",
                "eks:CreateAccessEntry",
                "eks:DescribeAccessEntry",
                "eks:AssociateAccessPolicy",
                "eks:UpdateNodegroupConfig",
                "eks:UpdateClusterVersion",
                "eks:UpdateNodegroupVersion",
                "eks:UpdateAddon",
                "eks:DescribeUpdate",
                "eks:DeleteAddon",
                "eks:DeleteNodegroup",
                "eks:DeleteCluster",
            ],
            resources: vec![
                format!("arn:aws:eks:{r}:*:cluster/{p}"),
                format!("arn:aws:eks:{r}:*:nodegroup/{p}/*/*"),
                format!("arn:aws:eks:{r}:*:addon/{p}/*/*"),
                format!("arn:aws:eks:{r}:*:access-entry/{p}/*"),
                "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy".into(),
            ],
            condition: None,
        },
        Statement {
            sid: "S3TheBucket",
            phases: &[Infra, Teardown],
            actions: &[
                "s3:CreateBucket",
                "s3:PutBucketOwnershipControls",
                "s3:PutBucketTagging",
                "s3:PutBucketPublicAccessBlock",
                "s3:PutEncryptionConfiguration",
                "s3:PutBucketVersioning",
                "s3:PutLifecycleConfiguration",
                "s3:PutBucketPolicy",
                "s3:DeleteBucketPolicy",
                "s3:ListBucket",
                "s3:ListBucketVersions",
                "s3:ListBucketMultipartUploads",
                "s3:DeleteBucket",
            ],
            resources: vec![format!("arn:aws:s3:::{bucket}")],
            condition: None,
        },
        Statement {
            sid: "S3PurgeTheBucket",
            phases: &[Teardown],
            actions: &["s3:DeleteObject", "s3:DeleteObjectVersion", "s3:AbortMultipartUpload"],
            resources: vec![format!("arn:aws:s3:::{bucket}/*")],
            condition: None,
        },
        Statement {
            sid: "EcrTheRepositories",
            phases: &[Infra, Teardown],
            actions: &["ecr:CreateRepository", "ecr:TagResource", "ecr:PutLifecyclePolicy", "ecr:DeleteRepository"],
            resources: vec![format!("arn:aws:ecr:{r}:*:repository/{p}/*")],
            condition: None,
        },
        Statement {
            sid: "EcrPushAndPull",
            phases: &[Push, Deploy],
            actions: &[
                "ecr:BatchCheckLayerAvailability",
                "ecr:InitiateLayerUpload",
                "ecr:UploadLayerPart",
                "ecr:CompleteLayerUpload",
                "ecr:PutImage",
                "ecr:BatchGetImage",
                "ecr:GetDownloadUrlForLayer",
            ],
            resources: vec![format!("arn:aws:ecr:{r}:*:repository/{p}/*")],
            condition: None,
        },
    ];
    let statements: Vec<Value> = statements
        .into_iter()
        .filter(|s| s.phases.iter().any(|p| wanted.contains(p)))
        .map(|s| {
            let mut statement = json!({"Sid": s.sid, "Effect": "Allow", "Action": s.actions, "Resource": s.resources});
            if let Some(condition) = s.condition {
                statement["Condition"] = condition;
            }
            statement
        })
        .collect();
    json!({"Version": "2012-10-17", "Statement": statements})
}

/// Every AWS managed policy `infra` attaches.
fn managed_policies() -> Vec<String> {
    [spec::CLUSTER_ROLE, spec::NODE_ROLE]
        .iter()
        .chain(&spec::IRSA_ROLES)
        .flat_map(|role| role.managed.iter().map(|m| format!("{}{m}", spec::MANAGED)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_wildcard_actions_and_every_write_is_scoped() {
        let config = Config::default();
        let doc = policy(&config, PolicyFor::ALL);
        for statement in doc["Statement"].as_array().unwrap() {
            let actions: Vec<&str> = statement["Action"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
            assert!(actions.iter().all(|a| !a.contains('*')), "{actions:?}");
            let resources: Vec<&str> = statement["Resource"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
            let reads_only =
                actions.iter().all(|a| crate::calls::is_read_operation(a.split(':').nth(1).unwrap()) || a.ends_with("ListAllMyBuckets"));
            if resources.contains(&"*") {
                assert!(reads_only, "{} grants writes on *", statement["Sid"]);
            } else if !reads_only {
                let scoped = statement.get("Condition").is_some()
                    || resources.iter().all(|r| r.contains("neon") || r.contains("oidc-provider") || r.starts_with("arn:aws:eks::aws:"));
                assert!(scoped, "{} is not scoped to the prefix", statement["Sid"]);
            }
        }
    }

    /// Every AWS operation the phases call (the names their errors carry) is in the policy, so
    /// a new call cannot ship without its permission.
    #[test]
    fn every_operation_the_phases_call_is_allowed() {
        let sources = [
            include_str!("infra.rs"),
            include_str!("infra/network.rs"),
            include_str!("infra/iam.rs"),
            include_str!("infra/eks.rs"),
            include_str!("infra/storage.rs"),
            include_str!("infra/cost.rs"),
            include_str!("teardown.rs"),
            include_str!("push.rs"),
            include_str!("../aws/inventory.rs"),
            include_str!("../aws/ecr_auth.rs"),
        ];
        let doc = policy(&Config::default(), PolicyFor::ALL).to_string();
        // Needs no permission: STS answers it for any credentials.
        let free = ["GetCallerIdentity"];
        // S3's IAM actions are named apart from its API operations.
        fn action(operation: &str) -> &str {
            match operation {
                "PutPublicAccessBlock" => "PutBucketPublicAccessBlock",
                "PutBucketEncryption" => "PutEncryptionConfiguration",
                "PutBucketLifecycleConfiguration" => "PutLifecycleConfiguration",
                "ListObjectVersions" => "ListBucketVersions",
                "ListMultipartUploads" => "ListBucketMultipartUploads",
                "DeleteObjects" => "DeleteObjectVersion",
                "ListBuckets" => "ListAllMyBuckets",
                other => other,
            }
        }
        let mut missing = Vec::new();
        for source in sources {
            for operation in source.split("call(\"").skip(1).filter_map(|rest| rest.split('"').next()) {
                let granted = doc.contains(&format!(":{}\"", action(operation))) || free.contains(&operation);
                if !granted && !missing.contains(&operation) {
                    missing.push(operation);
                }
            }
        }
        assert!(missing.is_empty(), "operations without a permission: {missing:?}");
    }

    #[test]
    fn phases_select_statements() {
        let config = Config::default();
        let sids = |phases: &[PolicyFor]| -> Vec<String> {
            policy(&config, phases)["Statement"].as_array().unwrap().iter().map(|s| s["Sid"].as_str().unwrap().to_string()).collect()
        };
        let push = sids(&[PolicyFor::Push]);
        assert!(push.contains(&"EcrPushAndPull".to_string()) && !push.iter().any(|s| s.starts_with("Ec2")), "{push:?}");
        assert!(sids(&[PolicyFor::Teardown]).contains(&"S3PurgeTheBucket".to_string()));
        assert!(policy(&config, &[PolicyFor::Infra]).to_string().contains("AmazonEBSCSIDriverPolicy"));
    }
}
