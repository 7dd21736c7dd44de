//! The EKS cluster, its OIDC provider and IRSA roles, managed addons, the access entry of the
//! caller, and the managed nodegroup.

use std::time::Duration;

use futures::TryFutureExt;

use aws_sdk_eks::types as ekst;

use super::network::Net;
use super::{iam, spec, Run};
use crate::aws::call::{call, found, is_iam_propagation, wait_for, Backoff, CallError};
use crate::aws::inventory::{self, Found, Kind};
use crate::aws::tags::Tags;
use crate::output::Unit;

const CLUSTER_ADMIN: &str = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy";

pub fn nodegroup_name(prefix: &str) -> String {
    format!("{prefix}-nodes")
}

pub async fn converge(run: &Run<'_>, net: &Net, cluster_role: &str, node_role: &str, bucket: &str) -> anyhow::Result<()> {
    let cluster = cluster(run, net, cluster_role).await?;
    let issuer = cluster.extra.get("oidc_issuer").cloned().ok_or_else(|| anyhow::anyhow!("eks cluster {} reports no OIDC issuer", run.prefix))?;
    let provider = iam::oidc_provider(run, &issuer).await?;
    let roles = iam::irsa_roles(run, &provider, &issuer, bucket).await?;
    let role_of = |suffix: &str| roles.iter().find(|(s, _)| *s == suffix).map(|(_, arn)| arn.clone());

    if run.aws.emulator {
        run.skipped("the EKS addons (vpc-cni, kube-proxy, coredns, aws-ebs-csi-driver) and the cluster access entry");
    } else {
        for (addon, _) in spec::ADDONS.iter().filter(|(_, before)| *before) {
            ensure_addon(run, addon, role_of(addon_role(addon)).as_deref()).await?;
        }
        access_entry(run).await?;
    }
    nodegroup(run, net, node_role).await?;
    if !run.aws.emulator {
        for (addon, _) in spec::ADDONS.iter().filter(|(_, before)| !*before) {
            ensure_addon(run, addon, role_of(addon_role(addon)).as_deref()).await?;
        }
        for (addon, _) in spec::ADDONS {
            wait_addon(run, addon).await?;
        }
    }
    Ok(())
}

/// The IRSA role suffix an addon runs with ("" for none).
fn addon_role(addon: &str) -> &'static str {
    match addon {
        "vpc-cni" => "vpc-cni",
        "aws-ebs-csi-driver" => "ebs-csi",
        _ => "",
    }
}

async fn cluster(run: &Run<'_>, net: &Net, role_arn: &str) -> anyhow::Result<Found> {
    let eks = &run.aws.eks;
    let name = &run.prefix;
    let existing = inventory::cluster(&run.aws, name).await?;
    let tags = Tags::new(name, "cluster");
    let subnets: Vec<String> = net.public.iter().chain(&net.private).map(|(_, s)| s.clone()).collect();
    let version = &run.cx.config.cluster.kubernetes_version;
    run.ensure(Kind::Cluster, "cluster", name, existing.as_ref(), |token| async move {
        let vpc_config = ekst::VpcConfigRequest::builder()
            .set_subnet_ids(Some(subnets.clone()))
            .endpoint_public_access(true)
            .endpoint_private_access(true)
            .build();
        let access = ekst::CreateAccessConfigRequest::builder()
            .authentication_mode(ekst::AuthenticationMode::Api)
            .bootstrap_cluster_creator_admin_permissions(false)
            .build();
        Backoff::IAM_PROPAGATION
            .retry(is_iam_propagation, || {
                eks.create_cluster()
                    .name(name)
                    .version(version)
                    .role_arn(role_arn)
                    .resources_vpc_config(vpc_config.clone())
                    .access_config(access.clone())
                    .bootstrap_self_managed_addons(false)
                    .upgrade_policy(ekst::UpgradePolicyRequest::builder().support_type(ekst::SupportType::Standard).build())
                    .set_tags(Some(tags.map()))
                    .client_request_token(&token)
                    .send()
                    .map_err(call("CreateCluster", name))
            })
            .await
            .map(|_| name.clone())
    })
    .await?;
    let active = match existing {
        Some(found) if found.state.as_deref() == Some("ACTIVE") => found,
        _ => wait_cluster(run).await?,
    };
    for key in ["arn", "endpoint", "certificate_authority", "oidc_issuer"] {
        if let Some(value) = active.extra.get(key) {
            run.output("cluster", key, value)?;
        }
    }
    Ok(active)
}

async fn wait_cluster(run: &Run<'_>) -> anyhow::Result<Found> {
    let name = &run.prefix;
    let step = run.reporter.step(format!("wait for eks cluster {name} (10-15 minutes)"));
    let found = wait_for(
        &format!("eks cluster {name} to become ACTIVE"),
        Duration::from_secs(40 * 60),
        Duration::from_secs(20),
        |secs| step.progress(secs, None, Unit::Items),
        || async {
            let found = inventory::cluster(&run.aws, name).await?;
            match found.as_ref().and_then(|f| f.state.as_deref()) {
                Some("ACTIVE") => Ok(found),
                Some("FAILED") => anyhow::bail!("eks cluster {name} failed to create. Run `neonctl-aws teardown`, then infra again"),
                _ => Ok(None),
            }
        },
    )
    .await?;
    step.finish();
    Ok(found)
}

async fn nodegroup(run: &Run<'_>, net: &Net, node_role: &str) -> anyhow::Result<()> {
    let eks = &run.aws.eks;
    let name = &nodegroup_name(&run.prefix);
    let cluster = &run.prefix;
    let described = found(eks.describe_nodegroup().cluster_name(cluster).nodegroup_name(name).send().await.map_err(call("DescribeNodegroup", name)))?;
    let status = described.as_ref().and_then(|d| d.nodegroup()).and_then(|n| n.status()).map(|s| s.as_str().to_string());
    let existing = described.map(|_| Found { component: "nodegroup".into(), id: name.clone(), state: status.clone(), ..Found::default() });
    let c = &run.cx.config.cluster;
    let tags = Tags::new(&run.prefix, "nodegroup");
    let subnets: Vec<String> = net.private.iter().map(|(_, s)| s.clone()).collect();
    run.ensure(Kind::Nodegroup, "nodegroup", name, existing.as_ref(), |token| async move {
        let count = c.node_count as i32;
        let scaling = ekst::NodegroupScalingConfig::builder().min_size(count).max_size(count).desired_size(count).build();
        Backoff::IAM_PROPAGATION
            .retry(is_iam_propagation, || {
                eks.create_nodegroup()
                    .cluster_name(cluster)
                    .nodegroup_name(name)
                    .node_role(node_role)
                    .set_subnets(Some(subnets.clone()))
                    .scaling_config(scaling.clone())
                    .instance_types(&c.node_instance_type)
                    .disk_size(c.node_disk_gib as i32)
                    .ami_type(ekst::AmiTypes::from(spec::ami_type(&c.node_instance_type)))
                    .capacity_type(ekst::CapacityTypes::OnDemand)
                    .update_config(ekst::NodegroupUpdateConfig::builder().max_unavailable(1).build())
                    .set_tags(Some(tags.map()))
                    .client_request_token(&token)
                    .send()
                    .map_err(call("CreateNodegroup", name))
            })
            .await
            .map(|_| name.clone())
    })
    .await?;
    if status.as_deref() == Some("ACTIVE") {
        return Ok(());
    }
    let step = run.reporter.step(format!("wait for eks nodegroup {name} (3-6 minutes)"));
    wait_for(
        &format!("eks nodegroup {name} to become ACTIVE"),
        Duration::from_secs(30 * 60),
        Duration::from_secs(20),
        |secs| step.progress(secs, None, Unit::Items),
        || async {
            let out = eks.describe_nodegroup().cluster_name(cluster).nodegroup_name(name).send().await.map_err(call("DescribeNodegroup", name))?;
            let group = out.nodegroup();
            match group.and_then(|n| n.status()) {
                Some(ekst::NodegroupStatus::Active) => Ok(Some(())),
                Some(ekst::NodegroupStatus::CreateFailed | ekst::NodegroupStatus::Degraded) => {
                    let issues: Vec<String> = group
                        .and_then(|n| n.health())
                        .map(|h| h.issues().iter().map(|i| format!("{}: {}", i.code().map(|c| c.as_str()).unwrap_or("?"), i.message().unwrap_or(""))).collect())
                        .unwrap_or_default();
                    anyhow::bail!("eks nodegroup {name} failed: {}. Fix the cause, delete the nodegroup, then run infra again", issues.join("; "))
                }
                _ => Ok(None),
            }
        },
    )
    .await?;
    step.finish();
    Ok(())
}

/// The version EKS marks as default for `kubernetes_version`, else the newest compatible one.
pub fn addon_version(addons: &[ekst::AddonInfo], kubernetes_version: &str) -> Option<String> {
    let versions: Vec<&ekst::AddonVersionInfo> = addons.iter().flat_map(|a| a.addon_versions()).collect();
    let compatible = |v: &&&ekst::AddonVersionInfo| v.compatibilities().iter().any(|c| c.cluster_version() == Some(kubernetes_version));
    let default = versions
        .iter()
        .filter(compatible)
        .find(|v| v.compatibilities().iter().any(|c| c.cluster_version() == Some(kubernetes_version) && c.default_version()));
    default.or_else(|| versions.iter().find(compatible)).and_then(|v| v.addon_version()).map(str::to_string)
}

async fn ensure_addon(run: &Run<'_>, addon: &str, role: Option<&str>) -> anyhow::Result<()> {
    let eks = &run.aws.eks;
    let cluster = &run.prefix;
    let component = format!("addon-{addon}");
    let existing = found(eks.describe_addon().cluster_name(cluster).addon_name(addon).send().await.map_err(call("DescribeAddon", addon)))?
        .map(|_| Found { component: component.clone(), id: addon.to_string(), ..Found::default() });
    let k8s = &run.cx.config.cluster.kubernetes_version;
    let tags = Tags::new(&run.prefix, &component);
    run.ensure(Kind::Addon, &component, addon, existing.as_ref(), |token| async move {
        let versions = eks.describe_addon_versions().addon_name(addon).kubernetes_version(k8s).send().await.map_err(call("DescribeAddonVersions", addon))?;
        let version = addon_version(versions.addons(), k8s).ok_or_else(|| CallError {
            operation: "DescribeAddonVersions",
            resource: addon.to_string(),
            code: None,
            status: Some(200),
            detail: format!("no version of {addon} supports Kubernetes {k8s}; choose another cluster.kubernetes_version"),
        })?;
        eks.create_addon()
            .cluster_name(cluster)
            .addon_name(addon)
            .addon_version(version)
            .set_service_account_role_arn(role.map(str::to_string))
            .resolve_conflicts(ekst::ResolveConflicts::Overwrite)
            .set_tags(Some(tags.map()))
            .client_request_token(token)
            .send()
            .await
            .map_err(call("CreateAddon", addon))?;
        Ok(addon.to_string())
    })
    .await?;
    Ok(())
}

async fn wait_addon(run: &Run<'_>, addon: &str) -> anyhow::Result<()> {
    let eks = &run.aws.eks;
    let cluster = &run.prefix;
    wait_for(
        &format!("eks addon {addon} to become ACTIVE"),
        Duration::from_secs(20 * 60),
        Duration::from_secs(15),
        |_| {},
        || async {
            let out = eks.describe_addon().cluster_name(cluster).addon_name(addon).send().await.map_err(call("DescribeAddon", addon))?;
            let a = out.addon();
            match a.and_then(|a| a.status()) {
                Some(ekst::AddonStatus::Active) => Ok(Some(())),
                Some(ekst::AddonStatus::CreateFailed | ekst::AddonStatus::Degraded) => {
                    let issues: Vec<String> =
                        a.and_then(|a| a.health()).map(|h| h.issues().iter().map(|i| i.message().unwrap_or("").to_string()).collect()).unwrap_or_default();
                    anyhow::bail!("eks addon {addon} is unhealthy: {}. Check the nodes, then run infra again", issues.join("; "))
                }
                _ => Ok(None),
            }
        },
    )
    .await
}

/// Cluster-admin access for the IAM identity running this (its role, not the STS session).
async fn access_entry(run: &Run<'_>) -> anyhow::Result<()> {
    let eks = &run.aws.eks;
    let cluster = &run.prefix;
    let principal = match spec::principal(&run.id.caller_arn) {
        spec::Principal::Arn(arn) => arn,
        spec::Principal::Role(role) => {
            let out = run.aws.iam.get_role().role_name(&role).send().await.map_err(call("GetRole", &role))?;
            out.role().map(|r| r.arn().to_string()).unwrap_or_default()
        }
    };
    let existing = found(eks.describe_access_entry().cluster_name(cluster).principal_arn(&principal).send().await.map_err(call("DescribeAccessEntry", &principal)))?
        .map(|_| Found { component: "access-entry".into(), id: principal.clone(), ..Found::default() });
    let tags = Tags::new(&run.prefix, "access-entry");
    run.ensure(Kind::AccessEntry, "access-entry", &principal, existing.as_ref(), |token| async {
        eks.create_access_entry()
            .cluster_name(cluster)
            .principal_arn(&principal)
            .r#type("STANDARD")
            .set_tags(Some(tags.map()))
            .client_request_token(token)
            .send()
            .await
            .map_err(call("CreateAccessEntry", &principal))?;
        Ok(principal.clone())
    })
    .await?;
    run.configure("access-entry", &format!("cluster admin access for {principal}"), &principal, || async {
        let scope = ekst::AccessScope::builder().r#type(ekst::AccessScopeType::Cluster).build();
        eks.associate_access_policy()
            .cluster_name(cluster)
            .principal_arn(&principal)
            .policy_arn(CLUSTER_ADMIN)
            .access_scope(scope)
            .send()
            .await
            .map_err(call("AssociateAccessPolicy", &principal))?;
        Ok(())
    })
    .await
}
