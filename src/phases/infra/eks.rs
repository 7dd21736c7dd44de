//! The EKS cluster, its OIDC provider and IRSA roles, managed addons, the access entry of the
//! caller, and the managed nodegroup.

use std::time::Duration;

use futures::TryFutureExt;

use aws_sdk_eks::types as ekst;

use super::drift::UpgradeStep;
use super::network::Net;
use super::{Run, iam, spec};
use crate::aws::call::{Backoff, CallError, call, created_id, found, is_iam_propagation, wait_for};
use crate::aws::inventory::{self, Found, Kind};
use crate::aws::tags::Tags;
use crate::output::Unit;

const CLUSTER_ADMIN: &str = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy";

pub fn nodegroup_name(prefix: &str) -> String {
    format!("{prefix}-nodes")
}

/// `existing`: the cluster as looked up at the start of the run.
pub async fn converge(
    run: &Run<'_>,
    existing: Option<Found>,
    net: &Net,
    cluster_role: &str,
    node_role: &str,
    bucket: &str,
) -> anyhow::Result<()> {
    // EKS's calendar of versions (one DescribeClusterVersions), for a new cluster's version and
    // the support warning.
    let calendar = super::versions::calendar(&run.aws).await;
    let cluster = cluster(run, existing, net, cluster_role, &calendar).await?;
    let extras = super::extras::of(&run.cx.config);
    let mut version = match cluster.extra.get("version") {
        Some(version) => version.clone(),
        None => kubernetes_version(run, &calendar),
    };
    if let Some(target) = run.cx.config.cluster.kubernetes_version.as_ref().filter(|t| **t != version) {
        version = extras.upgrade(run, &version, target).await?;
    }
    let pricing = &run.cx.config.pricing;
    if let Some(warning) =
        calendar.0.warning(&version, super::versions::today(), pricing.eks_cluster_per_hour, pricing.eks_extended_cluster_per_hour)
    {
        run.reporter.warn(warning);
    }
    let issuer =
        cluster.extra.get("oidc_issuer").cloned().ok_or_else(|| anyhow::anyhow!("eks cluster {} reports no OIDC issuer", run.prefix))?;
    let provider = iam::oidc_provider(run, &issuer).await?;
    let roles = iam::irsa_roles(run, &provider, &issuer, bucket).await?;
    extras.before_nodes(run, &roles, &version).await?;
    nodegroup(run, net, node_role).await?;
    extras.after_nodes(run, &roles, &version).await
}

/// The managed add-ons that run before the nodes join (`before`), or after.
pub(super) fn addons(before: bool) -> impl Iterator<Item = &'static (&'static str, bool)> {
    spec::ADDONS.iter().filter(move |(_, b)| *b == before)
}

/// The role ARN an add-on runs with, if any.
pub(super) fn addon_role<'r>(roles: &'r super::extras::IrsaRoles, addon: &str) -> Option<&'r str> {
    let suffix = match addon {
        "vpc-cni" => "vpc-cni",
        "aws-ebs-csi-driver" => "ebs-csi",
        _ => return None,
    };
    roles.iter().find(|(s, _)| *s == suffix).map(|(_, arn)| arn.as_str())
}

async fn cluster(
    run: &Run<'_>,
    existing: Option<Found>,
    net: &Net,
    role_arn: &str,
    calendar: &(super::versions::Calendar, Option<String>),
) -> anyhow::Result<Found> {
    let eks = &run.aws.eks;
    let name = &run.prefix;
    let tags = Tags::new(name, "cluster");
    let subnets: Vec<String> = net.public.iter().chain(&net.private).map(|(_, s)| s.clone()).collect();
    let version = match &existing {
        Some(_) => String::new(),
        None => kubernetes_version(run, calendar),
    };
    let version = &version;
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

/// The Kubernetes version a new cluster gets: the config's, else the newest in standard support
/// by EKS's calendar (`DescribeClusterVersions`), else by the dated table.
fn kubernetes_version(run: &Run<'_>, (calendar, why): &(super::versions::Calendar, Option<String>)) -> String {
    if let Some(version) = &run.cx.config.cluster.kubernetes_version {
        return version.clone();
    }
    let version = calendar.newest_in_standard(super::versions::today()).to_string();
    let why = why.as_ref().map(|why| format!(" ({why})")).unwrap_or_default();
    run.reporter.info(format!("Kubernetes {version}: the newest in standard support by {}{why}", calendar.source));
    version
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
                Some("DELETING") => anyhow::bail!("eks cluster {name} is being deleted. Wait until it is gone, then run infra again"),
                _ => Ok(None),
            }
        },
    )
    .await?;
    step.finish();
    Ok(found)
}

/// The nodegroup of the config's shape: kept (and resized), or created; then the others, made
/// for another shape, drained and deleted. A change of instance type, disk or AMI thus rolls the
/// nodes: the new group joins first, the pods move within their disruption budgets (volumes
/// reattach in their zones), the old group goes. A run stopped anywhere goes on from what exists.
async fn nodegroup(run: &Run<'_>, net: &Net, node_role: &str) -> anyhow::Result<()> {
    let eks = &run.aws.eks;
    let cluster = &run.prefix;
    let found = inventory::nodegroups_described(&run.aws, cluster).await?;
    let groups = nodegroups(&run.cx.config, cluster, &found);
    let name = &groups.name;
    let existing = groups.current;
    let c = &run.cx.config.cluster;
    let tags = Tags::new(&run.prefix, "nodegroup");
    let subnets: Vec<String> = net.private.iter().map(|(_, s)| s.clone()).collect();
    run.ensure(Kind::Nodegroup, "nodegroup", name, existing, |token| async move {
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
    let resized = match existing {
        Some(group) => resize(run, group).await?,
        None => false,
    };
    if existing.and_then(|g| g.state.as_deref()) != Some("ACTIVE") || resized {
        wait_nodegroup(run, name).await?;
    }
    let extras = super::extras::of(&run.cx.config);
    for old in &groups.replaced {
        // One already being deleted (a run stopped after asking) is only waited for.
        let deleting = old.state.as_deref() == Some("DELETING");
        if !deleting {
            extras.drain(run, &old.id).await?;
        }
        delete_nodegroup(run, &old.id, deleting).await?;
    }
    Ok(())
}

/// The nodegroups `infra` finds, sorted for what it does with them.
pub struct Nodegroups<'a> {
    /// The one of the config's shape, if it exists.
    pub current: Option<&'a Found>,
    /// Its name, or the name of the one to create.
    pub name: String,
    /// The others: drained and deleted once the current one runs.
    pub replaced: Vec<&'a Found>,
}

/// What a nodegroup is made of and cannot change: `(inventory key, config field, value)`.
pub fn node_shape(config: &crate::config::Config) -> [(&'static str, &'static str, String); 3] {
    let c = &config.cluster;
    [
        ("instance_types", "cluster.node_instance_type", c.node_instance_type.clone()),
        ("disk_size", "cluster.node_disk_gib", c.node_disk_gib.to_string()),
        ("ami_type", "AMI type (from cluster.node_instance_type)", spec::ami_type(&c.node_instance_type).to_string()),
    ]
}

/// Sorts `found` into the nodegroup of the config's shape and the ones it replaces. The first
/// is `<prefix>-nodes`; a replacement is named after its shape, so each shape has one name.
pub fn nodegroups<'a>(config: &crate::config::Config, prefix: &str, found: &'a [Found]) -> Nodegroups<'a> {
    let shape = node_shape(config);
    let fits = |group: &Found| shape.iter().all(|(key, _, wanted)| group.extra.get(*key).is_none_or(|have| have == wanted));
    let current = found.iter().find(|g| fits(g) && g.state.as_deref() != Some("DELETING"));
    let name = match current {
        Some(group) => group.id.clone(),
        None if found.is_empty() => nodegroup_name(prefix),
        None => {
            let described: Vec<&str> = shape.iter().map(|(_, _, value)| value.as_str()).collect();
            format!("{}-{}", nodegroup_name(prefix), &spec::fingerprint(&described.join("|"))[..6])
        }
    };
    let replaced = found.iter().filter(|g| Some(g.id.as_str()) != current.map(|c| c.id.as_str())).collect();
    Nodegroups { current, name, replaced }
}

async fn wait_nodegroup(run: &Run<'_>, name: &str) -> anyhow::Result<()> {
    let eks = &run.aws.eks;
    let cluster = &run.prefix;
    let step = run.reporter.step(format!("wait for eks nodegroup {name} (3-6 minutes)"));
    wait_for(
        &format!("eks nodegroup {name} to become ACTIVE"),
        Duration::from_secs(30 * 60),
        Duration::from_secs(20),
        |secs| step.progress(secs, None, Unit::Items),
        || async {
            let out = eks
                .describe_nodegroup()
                .cluster_name(cluster)
                .nodegroup_name(name)
                .send()
                .await
                .map_err(call("DescribeNodegroup", name))?;
            let group = out.nodegroup();
            match group.and_then(|n| n.status()) {
                Some(ekst::NodegroupStatus::Active) => Ok(Some(())),
                Some(ekst::NodegroupStatus::CreateFailed | ekst::NodegroupStatus::Degraded) => {
                    let issues: Vec<String> = group
                        .and_then(|n| n.health())
                        .map(|h| {
                            h.issues()
                                .iter()
                                .map(|i| format!("{}: {}", i.code().map(|c| c.as_str()).unwrap_or("?"), i.message().unwrap_or("")))
                                .collect()
                        })
                        .unwrap_or_default();
                    anyhow::bail!(
                        "eks nodegroup {name} failed: {}. Fix the cause, delete the nodegroup, then run infra again",
                        issues.join("; ")
                    )
                }
                _ => Ok(None),
            }
        },
    )
    .await?;
    step.finish();
    Ok(())
}

/// Deletes a drained nodegroup and waits until it is gone.
async fn delete_nodegroup(run: &Run<'_>, name: &str, deleting: bool) -> anyhow::Result<()> {
    let eks = &run.aws.eks;
    let cluster = &run.prefix;
    let step = run.reporter.step(format!("delete eks nodegroup {name}, replaced (5-10 minutes)"));
    if !deleting {
        let deleted = eks.delete_nodegroup().cluster_name(cluster).nodegroup_name(name).send().await;
        found(deleted.map_err(call("DeleteNodegroup", name)))?;
    }
    wait_for(
        &format!("eks nodegroup {name} to be deleted"),
        Duration::from_secs(30 * 60),
        run.aws.pace.poll,
        |secs| step.progress(secs, None, Unit::Items),
        || async {
            let out = eks.describe_nodegroup().cluster_name(cluster).nodegroup_name(name).send().await;
            Ok(found(out.map_err(call("DescribeNodegroup", name)))?.is_none().then_some(()))
        },
    )
    .await?;
    step.finish();
    Ok(())
}

/// Follows `cluster.node_count` (true when it changed the nodegroup).
async fn resize(run: &Run<'_>, group: &Found) -> anyhow::Result<bool> {
    let count = run.cx.config.cluster.node_count as i32;
    if group.extra.get("nodes").is_some_and(|n| *n == format!("{count}/{count}/{count}")) {
        return Ok(false);
    }
    let name = &group.id;
    let step = run.reporter.step(format!("resize eks nodegroup {name} to {count} nodes"));
    let scaling = ekst::NodegroupScalingConfig::builder().min_size(count).max_size(count).desired_size(count).build();
    run.aws
        .eks
        .update_nodegroup_config()
        .cluster_name(&run.prefix)
        .nodegroup_name(name)
        .scaling_config(scaling)
        .send()
        .await
        .map_err(call("UpdateNodegroupConfig", name))?;
    step.finish();
    Ok(true)
}

/// Moves the cluster to `target` one minor version at a time, in AWS's order for each (control
/// plane, add-ons, nodegroup), waiting for each update. Every step starts from the live versions,
/// so a run killed half-way goes on from where AWS is (an update still running is waited for).
/// The updates carry no client token: one that failed must be sent anew, not answered again.
/// `current`: the version of the cluster, active (as `cluster` leaves it).
pub(super) async fn upgrade(run: &Run<'_>, current: &str, target: &str) -> anyhow::Result<()> {
    let name = &run.prefix;
    let found = inventory::nodegroups_described(&run.aws, name).await?;
    let groups = nodegroups(&run.cx.config, name, &found);
    // A nodegroup still to be made gets the cluster's version; one being replaced is not upgraded.
    let group_name = groups.name.clone();
    let nodes = groups.current.and_then(|g| g.extra.get("version").cloned());
    for step in super::drift::upgrade_steps(current, nodes.as_deref(), target) {
        match step {
            UpgradeStep::Cluster(version) => {
                let live = wait_cluster(run).await?;
                if live.extra.get("version").is_some_and(|v| minor(v) >= minor(&version)) {
                    continue;
                }
                let step = run.reporter.step(format!("upgrade eks cluster {name} to Kubernetes {version} (about 10 minutes)"));
                let out = run
                    .aws
                    .eks
                    .update_cluster_version()
                    .name(name)
                    .version(&version)
                    .send()
                    .await
                    .map_err(call("UpdateClusterVersion", format!("{name} to {version}")))?;
                crate::crash::point("infra:upgrade:cluster-started");
                wait_update(run, out.update().and_then(|u| u.id()), Updated::Cluster, &step).await?;
                step.finish();
            }
            UpgradeStep::Addons(version) => {
                for (addon, _) in spec::ADDONS {
                    upgrade_addon(run, addon, &version).await?;
                }
            }
            UpgradeStep::Nodegroup(version) => {
                let live = wait_nodegroup_idle(run, &group_name).await?;
                if live.is_some_and(|v| minor(&v) >= minor(&version)) {
                    continue;
                }
                let step = run.reporter.step(format!(
                    "upgrade eks nodegroup {group_name} to Kubernetes {version} (nodes replaced one at a time, 10-30 minutes)"
                ));
                let out = run
                    .aws
                    .eks
                    .update_nodegroup_version()
                    .cluster_name(name)
                    .nodegroup_name(&group_name)
                    .version(&version)
                    .send()
                    .await
                    .map_err(call("UpdateNodegroupVersion", format!("{group_name} to {version}")))?;
                wait_update(run, out.update().and_then(|u| u.id()), Updated::Nodegroup(&group_name), &step).await?;
                step.finish();
            }
        }
    }
    Ok(())
}

fn minor(version: &str) -> u32 {
    super::versions::minor_number(version).unwrap_or_default()
}

/// Moves an installed addon to EKS's default version for `kubernetes`; one not installed yet is
/// created at that version later.
async fn upgrade_addon(run: &Run<'_>, addon: &str, kubernetes: &str) -> anyhow::Result<()> {
    let eks = &run.aws.eks;
    let cluster = &run.prefix;
    let describe =
        || async { found(eks.describe_addon().cluster_name(cluster).addon_name(addon).send().await.map_err(call("DescribeAddon", addon))) };
    let mut described = describe().await?;
    if described.as_ref().and_then(|d| d.addon()).and_then(|a| a.status()) == Some(&ekst::AddonStatus::Updating) {
        // A run stopped during this add-on's update: its outcome decides what is left to do.
        wait_addon(run, addon).await?;
        described = describe().await?;
    }
    let Some(current) = described.as_ref().and_then(|d| d.addon()).and_then(|a| a.addon_version()) else { return Ok(()) };
    let versions = eks
        .describe_addon_versions()
        .addon_name(addon)
        .kubernetes_version(kubernetes)
        .send()
        .await
        .map_err(call("DescribeAddonVersions", addon))?;
    let Some(wanted) = addon_version(versions.addons(), kubernetes) else {
        anyhow::bail!(
            "EKS lists no version of addon {addon} for Kubernetes {kubernetes}; the cluster stays where it is. Run infra again later"
        )
    };
    if wanted == current {
        return Ok(());
    }
    let step = run.reporter.step(format!("upgrade eks addon {addon} {current} → {wanted} (for Kubernetes {kubernetes})"));
    let out = eks
        .update_addon()
        .cluster_name(cluster)
        .addon_name(addon)
        .addon_version(&wanted)
        .resolve_conflicts(ekst::ResolveConflicts::Overwrite)
        .send()
        .await
        .map_err(call("UpdateAddon", format!("{addon} to {wanted}")))?;
    wait_update(run, out.update().and_then(|u| u.id()), Updated::Addon(addon), &step).await?;
    step.finish();
    Ok(())
}

/// What an EKS update changes; DescribeUpdate names the nodegroup or addon beside the cluster.
#[derive(Clone, Copy)]
enum Updated<'a> {
    Cluster,
    Nodegroup(&'a str),
    Addon(&'a str),
}

/// Waits for an EKS update to succeed; a failed or cancelled one is an error with EKS's reasons.
async fn wait_update(run: &Run<'_>, id: Option<&str>, what: Updated<'_>, step: &crate::output::Step) -> anyhow::Result<()> {
    let cluster = &run.prefix;
    let id = id.ok_or_else(|| anyhow::anyhow!("EKS answered the update of {cluster} without an update id; run infra again to resume"))?;
    let (nodegroup, addon) = match what {
        Updated::Cluster => (None, None),
        Updated::Nodegroup(n) => (Some(n.to_string()), None),
        Updated::Addon(a) => (None, Some(a.to_string())),
    };
    wait_for(
        &format!("eks update {id} of {cluster}"),
        Duration::from_secs(90 * 60),
        Duration::from_secs(20),
        |secs| step.progress(secs, None, Unit::Items),
        || async {
            let out = run
                .aws
                .eks
                .describe_update()
                .name(cluster)
                .update_id(id)
                .set_nodegroup_name(nodegroup.clone())
                .set_addon_name(addon.clone())
                .send()
                .await
                .map_err(call("DescribeUpdate", id))?;
            let update = out.update();
            match update.and_then(|u| u.status()) {
                Some(ekst::UpdateStatus::Successful) => Ok(Some(())),
                Some(status @ (ekst::UpdateStatus::Failed | ekst::UpdateStatus::Cancelled)) => {
                    let errors: Vec<String> = update
                        .map(|u| {
                            u.errors()
                                .iter()
                                .map(|e| {
                                    format!("{}: {}", e.error_code().map(|c| c.as_str()).unwrap_or("?"), e.error_message().unwrap_or(""))
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    anyhow::bail!(
                        "eks update {id} of {cluster} is {}: {}. Fix the cause, then run infra again to retry from where it stopped",
                        status.as_str(),
                        errors.join("; ")
                    )
                }
                _ => Ok(None),
            }
        },
    )
    .await
}

/// The nodegroup's version once no update runs on it (a resumed run may find one running).
async fn wait_nodegroup_idle(run: &Run<'_>, name: &str) -> anyhow::Result<Option<String>> {
    wait_for(
        &format!("eks nodegroup {name} to finish its update"),
        Duration::from_secs(90 * 60),
        Duration::from_secs(20),
        |_| {},
        || async {
            let group = inventory::nodegroup(&run.aws, &run.prefix, name).await?;
            match group.as_ref().and_then(|g| g.state.as_deref()) {
                Some("UPDATING" | "CREATING") => Ok(None),
                _ => Ok(Some(group.and_then(|g| g.extra.get("version").cloned()))),
            }
        },
    )
    .await
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

pub(super) async fn ensure_addon(run: &Run<'_>, addon: &str, role: Option<&str>, k8s: &str) -> anyhow::Result<()> {
    let eks = &run.aws.eks;
    let cluster = &run.prefix;
    let component = format!("addon-{addon}");
    let existing = found(eks.describe_addon().cluster_name(cluster).addon_name(addon).send().await.map_err(call("DescribeAddon", addon)))?
        .map(|_| Found { component: component.clone(), id: addon.to_string(), ..Found::default() });
    let tags = Tags::new(&run.prefix, &component);
    run.ensure(Kind::Addon, &component, addon, existing.as_ref(), |token| async move {
        let versions = eks
            .describe_addon_versions()
            .addon_name(addon)
            .kubernetes_version(k8s)
            .send()
            .await
            .map_err(call("DescribeAddonVersions", addon))?;
        let version = addon_version(versions.addons(), k8s).ok_or_else(|| CallError {
            operation: "DescribeAddonVersions",
            resource: addon.to_string(),
            code: None,
            status: Some(200),
            detail: format!("no version of {addon} supports Kubernetes {k8s}; choose another cluster.kubernetes_version"),
        })?;
        // The addon's service account role may have been created seconds ago.
        Backoff::IAM_PROPAGATION
            .retry(is_iam_propagation, || {
                eks.create_addon()
                    .cluster_name(cluster)
                    .addon_name(addon)
                    .addon_version(&version)
                    .set_service_account_role_arn(role.map(str::to_string))
                    .resolve_conflicts(ekst::ResolveConflicts::Overwrite)
                    .set_tags(Some(tags.map()))
                    .client_request_token(&token)
                    .send()
                    .map_err(call("CreateAddon", addon))
            })
            .await?;
        Ok(addon.to_string())
    })
    .await?;
    Ok(())
}

pub(super) async fn wait_addon(run: &Run<'_>, addon: &str) -> anyhow::Result<()> {
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
                    let issues: Vec<String> = a
                        .and_then(|a| a.health())
                        .map(|h| h.issues().iter().map(|i| i.message().unwrap_or("").to_string()).collect())
                        .unwrap_or_default();
                    anyhow::bail!("eks addon {addon} is unhealthy: {}. Check the nodes, then run infra again", issues.join("; "))
                }
                _ => Ok(None),
            }
        },
    )
    .await
}

/// The cluster admin policy associated with the access entry of `principal`.
pub fn access_settings(principal: &str) -> super::drift::Configured {
    super::drift::Configured::new("access-entry", format!("cluster admin access for {principal}"), principal)
}

/// The caller's access entry: `id` is its principal (the IAM role of an STS session), `state`
/// is set when the entry exists.
pub async fn existing_access_entry(aws: &crate::aws::Aws, cluster: &str, id: &super::Identity) -> anyhow::Result<Found> {
    let principal = match spec::principal(&id.caller_arn) {
        spec::Principal::Arn(arn) => arn,
        spec::Principal::Role(role) => {
            let out = aws.iam.get_role().role_name(&role).send().await.map_err(call("GetRole", &role))?;
            created_id("GetRole", &role, out.role().map(|r| r.arn()))?
        }
    };
    let described = found(
        aws.eks
            .describe_access_entry()
            .cluster_name(cluster)
            .principal_arn(&principal)
            .send()
            .await
            .map_err(call("DescribeAccessEntry", &principal)),
    )?;
    Ok(Found { component: "access-entry".into(), id: principal, state: described.map(|_| "exists".to_string()), ..Found::default() })
}

/// Cluster-admin access for the IAM identity running this (its role, not the STS session).
pub(super) async fn access_entry(run: &Run<'_>) -> anyhow::Result<()> {
    let eks = &run.aws.eks;
    let cluster = &run.prefix;
    let existing = existing_access_entry(&run.aws, cluster, &run.id).await?;
    let principal = existing.id.clone();
    let existing = existing.state.is_some().then_some(existing);
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
    run.configure(&access_settings(&principal), || async {
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

/// The calls moto lacks (addons, access entries, addon versions), against mocked clients.
#[cfg(test)]
pub mod tests {
    use std::sync::Arc;

    use aws_sdk_eks::Client as Eks;
    use aws_sdk_eks::operation::describe_access_entry::DescribeAccessEntryError;
    use aws_sdk_eks::operation::describe_addon::DescribeAddonError;
    use aws_sdk_iam::Client as Iam;
    use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
    use aws_smithy_types::error::ErrorMetadata;

    use super::*;
    use crate::aws::Aws;
    use crate::engine::{Context, PhaseName};
    use crate::output::Recorder;
    use crate::phases::infra::Identity;
    use crate::state::StateStore;

    const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/admins/Admin";

    pub fn not_found() -> aws_sdk_eks::types::error::ResourceNotFoundException {
        aws_sdk_eks::types::error::ResourceNotFoundException::builder()
            .message("not found")
            .meta(ErrorMetadata::builder().code("ResourceNotFoundException").build())
            .build()
    }

    fn context(dir: &std::path::Path) -> Context {
        Context::new(crate::config::Config::default(), StateStore::open(dir, "test").unwrap(), Arc::new(Recorder::default()), false)
    }

    fn run<'a>(cx: &'a Context, eks: Eks, iam: Iam) -> Run<'a> {
        let aws = Aws { eks, iam, ..Aws::unreachable(&cx.config) };
        let id = Identity {
            account: "123456789012".into(),
            partition: "aws".into(),
            caller_arn: "arn:aws:sts::123456789012:assumed-role/Admin/me".into(),
        };
        Run { cx, aws, id, prefix: "neon".into(), region: "us-east-1".into(), zones: vec![], reporter: cx.reporter(PhaseName::Infra) }
    }

    fn iam_unused() -> Iam {
        mock_client!(aws_sdk_iam, RuleMode::MatchAny, &[] as &[&Rule])
    }

    fn versions() -> aws_sdk_eks::operation::describe_addon_versions::DescribeAddonVersionsOutput {
        let compat =
            |cluster: &str, default: bool| ekst::Compatibility::builder().cluster_version(cluster).default_version(default).build();
        let version =
            |v: &str, c: Vec<ekst::Compatibility>| ekst::AddonVersionInfo::builder().addon_version(v).set_compatibilities(Some(c)).build();
        let info = ekst::AddonInfo::builder()
            .addon_name("vpc-cni")
            .addon_versions(version("v1.20.0-eksbuild.1", vec![compat("1.33", false), compat("1.32", false)]))
            .addon_versions(version("v1.19.5-eksbuild.3", vec![compat("1.33", true)]))
            .addon_versions(version("v1.18.0-eksbuild.1", vec![compat("1.30", true)]))
            .build();
        aws_sdk_eks::operation::describe_addon_versions::DescribeAddonVersionsOutput::builder().addons(info).build()
    }

    #[test]
    fn the_default_version_wins_then_the_newest_compatible() {
        let out = versions();
        assert_eq!(addon_version(out.addons(), "1.33").as_deref(), Some("v1.19.5-eksbuild.3"));
        assert_eq!(addon_version(out.addons(), "1.32").as_deref(), Some("v1.20.0-eksbuild.1"));
        assert_eq!(addon_version(out.addons(), "1.29"), None);
    }

    #[tokio::test]
    async fn a_missing_addon_is_created_at_the_default_version_with_its_role_and_a_persisted_token() {
        let dir = tempfile::tempdir().unwrap();
        let cx = context(dir.path());
        let describe = mock!(Eks::describe_addon).then_error(|| DescribeAddonError::ResourceNotFoundException(not_found()));
        let versions = mock!(Eks::describe_addon_versions)
            .match_requests(|r| r.addon_name() == Some("vpc-cni") && r.kubernetes_version() == Some("1.33"))
            .then_output(versions);
        let create = mock!(Eks::create_addon)
            .match_requests(|r| {
                r.addon_version() == Some("v1.19.5-eksbuild.3")
                    && r.service_account_role_arn() == Some("arn:role/vpc-cni")
                    && r.client_request_token().is_some_and(|t| t.len() == 32)
                    && r.tags().is_some_and(|t| t.get("neonctl-aws/cluster").map(String::as_str) == Some("neon"))
            })
            .then_output(|| aws_sdk_eks::operation::create_addon::CreateAddonOutput::builder().build());
        let eks = mock_client!(aws_sdk_eks, RuleMode::Sequential, &[&describe, &versions, &create]);
        let run = run(&cx, eks, iam_unused());
        ensure_addon(&run, "vpc-cni", Some("arn:role/vpc-cni"), "1.33").await.unwrap();
        assert_eq!((describe.num_calls(), versions.num_calls(), create.num_calls()), (1, 1, 1));
        let record = cx.state().infra.resources["addon-vpc-cni"].clone();
        assert_eq!(record.id.as_deref(), Some("vpc-cni"));
        assert_eq!(record.token.as_deref(), Some(spec::token("neon", "us-east-1", "addon-vpc-cni", "").as_str()));
    }

    /// A new cluster without a configured version gets the newest EKS lists in standard
    /// support; when EKS does not answer (the emulator), the newest of the dated table.
    #[tokio::test]
    async fn a_new_cluster_gets_the_newest_version_in_standard_support() {
        use aws_sdk_eks::operation::describe_cluster_versions::DescribeClusterVersionsOutput;
        let dir = tempfile::tempdir().unwrap();
        let cx = context(dir.path());
        let listed = mock!(Eks::describe_cluster_versions).match_requests(|r| r.include_all() == Some(true)).then_output(|| {
            let day = |d: &str| aws_smithy_types::DateTime::from_str(d, aws_smithy_types::date_time::Format::DateTime).unwrap();
            let version = |v: &str, released: &str, standard: &str| {
                ekst::ClusterVersionInformation::builder()
                    .cluster_version(v)
                    .release_date(day(released))
                    .end_of_standard_support_date(day(standard))
                    .end_of_extended_support_date(day("2029-01-01T00:00:00Z"))
                    .build()
            };
            DescribeClusterVersionsOutput::builder()
                .cluster_versions(version("1.35", "2026-01-28T00:00:00Z", "2027-03-27T00:00:00Z"))
                .cluster_versions(version("1.36", "2026-06-10T00:00:00Z", "2027-08-10T00:00:00Z"))
                .cluster_versions(version("1.34", "2025-10-06T00:00:00Z", "2026-12-02T00:00:00Z"))
                .build()
        });
        let eks = mock_client!(aws_sdk_eks, RuleMode::Sequential, &[&listed]);
        let r = run(&cx, eks, iam_unused());
        assert_eq!(kubernetes_version(&r, &super::super::versions::calendar(&r.aws).await), "1.36");

        let failing = mock!(Eks::describe_cluster_versions).then_http_response(|| {
            aws_smithy_runtime_api::http::Response::new(
                404.try_into().unwrap(),
                aws_smithy_types::body::SdkBody::from("<html>not found</html>"),
            )
        });
        let eks = mock_client!(aws_sdk_eks, RuleMode::Sequential, &[&failing]);
        let today = super::super::versions::today();
        let r = run(&cx, eks, iam_unused());
        let (calendar, why) = super::super::versions::calendar(&r.aws).await;
        assert!(why.is_some_and(|why| why.contains("DescribeClusterVersions failed")));
        assert_eq!(kubernetes_version(&r, &(calendar, None)), super::super::versions::Calendar::table().newest_in_standard(today));

        let other = tempfile::tempdir().unwrap();
        let mut configured = context(other.path());
        configured.config.cluster.kubernetes_version = Some("1.34".into());
        let eks = mock_client!(aws_sdk_eks, RuleMode::Sequential, &[] as &[&Rule]);
        let table = (super::super::versions::Calendar::table(), None);
        assert_eq!(kubernetes_version(&run(&configured, eks, iam_unused()), &table), "1.34", "the config's");
    }

    /// EKS as far as an upgrade sees it: versions, a pending cluster update that finishes when
    /// it is next described, and the log of every mutating call.
    #[derive(Default)]
    struct UpgradingEks {
        cluster: String,
        pending: Option<String>,
        nodes: String,
        addons: std::collections::BTreeMap<String, String>,
        log: Vec<String>,
        /// DescribeUpdate fails (as a killed run would stop) for this update id.
        fail: Option<String>,
    }

    fn upgrading_eks(fake: &Arc<std::sync::Mutex<UpgradingEks>>) -> (Eks, Vec<Rule>) {
        use aws_sdk_eks::operation as op;
        let f = fake.clone();
        let describe_cluster = mock!(Eks::describe_cluster).then_compute_output(move |_| {
            let mut f = f.lock().unwrap();
            let status = match f.pending.take() {
                Some(version) => {
                    f.cluster = version;
                    ekst::ClusterStatus::Updating
                }
                None => ekst::ClusterStatus::Active,
            };
            let cluster =
                ekst::Cluster::builder().name("neon").version(&f.cluster).status(status).tags("neonctl-aws/cluster", "neon").build();
            op::describe_cluster::DescribeClusterOutput::builder().cluster(cluster).build()
        });
        let f = fake.clone();
        let describe_nodegroup = mock!(Eks::describe_nodegroup).then_compute_output(move |_| {
            let f = f.lock().unwrap();
            let group =
                ekst::Nodegroup::builder().nodegroup_name("neon-nodes").version(&f.nodes).status(ekst::NodegroupStatus::Active).build();
            op::describe_nodegroup::DescribeNodegroupOutput::builder().nodegroup(group).build()
        });
        let list_nodegroups = mock!(Eks::list_nodegroups)
            .then_output(|| op::list_nodegroups::ListNodegroupsOutput::builder().nodegroups("neon-nodes").build());
        let update = |id: String| ekst::Update::builder().id(id).build();
        let f = fake.clone();
        let update_cluster = mock!(Eks::update_cluster_version).then_compute_output(move |r| {
            let version = r.version().unwrap().to_string();
            let mut f = f.lock().unwrap();
            f.log.push(format!("cluster {version}"));
            f.pending = Some(version.clone());
            op::update_cluster_version::UpdateClusterVersionOutput::builder().update(update(format!("cluster-{version}"))).build()
        });
        let f = fake.clone();
        let update_nodegroup = mock!(Eks::update_nodegroup_version).then_compute_output(move |r| {
            let version = r.version().unwrap().to_string();
            let mut f = f.lock().unwrap();
            f.log.push(format!("nodegroup {version}"));
            f.nodes = version.clone();
            op::update_nodegroup_version::UpdateNodegroupVersionOutput::builder().update(update(format!("nodes-{version}"))).build()
        });
        let f = fake.clone();
        let describe_addon = mock!(Eks::describe_addon).then_compute_output(move |r| {
            let f = f.lock().unwrap();
            let name = r.addon_name().unwrap();
            let addon = ekst::Addon::builder().addon_name(name).addon_version(&f.addons[name]).build();
            op::describe_addon::DescribeAddonOutput::builder().addon(addon).build()
        });
        let addon_versions = mock!(Eks::describe_addon_versions).then_compute_output(|r| {
            let (name, k8s) = (r.addon_name().unwrap(), r.kubernetes_version().unwrap());
            let compat = ekst::Compatibility::builder().cluster_version(k8s).default_version(true).build();
            let version = ekst::AddonVersionInfo::builder().addon_version(format!("{name}-for-{k8s}")).compatibilities(compat).build();
            let info = ekst::AddonInfo::builder().addon_name(name).addon_versions(version).build();
            op::describe_addon_versions::DescribeAddonVersionsOutput::builder().addons(info).build()
        });
        let f = fake.clone();
        let update_addon = mock!(Eks::update_addon).then_compute_output(move |r| {
            let mut f = f.lock().unwrap();
            let (name, version) = (r.addon_name().unwrap().to_string(), r.addon_version().unwrap().to_string());
            f.log.push(format!("addon {version}"));
            f.addons.insert(name.clone(), version.clone());
            op::update_addon::UpdateAddonOutput::builder().update(update(format!("{name}-{version}"))).build()
        });
        let f = fake.clone();
        let describe_update = mock!(Eks::describe_update).then_compute_response(move |r| {
            let id = r.update_id().unwrap();
            if f.lock().unwrap().fail.as_deref() == Some(id) {
                return aws_smithy_mocks::MockResponse::Error(
                    aws_sdk_eks::operation::describe_update::DescribeUpdateError::ResourceNotFoundException(not_found()),
                );
            }
            let done = ekst::Update::builder().id(id).status(ekst::UpdateStatus::Successful).build();
            aws_smithy_mocks::MockResponse::Output(op::describe_update::DescribeUpdateOutput::builder().update(done).build())
        });
        let rules = vec![
            describe_cluster,
            list_nodegroups,
            describe_nodegroup,
            update_cluster,
            update_nodegroup,
            describe_addon,
            addon_versions,
            update_addon,
            describe_update,
        ];
        let eks = mock_client!(aws_sdk_eks, RuleMode::MatchAny, &rules.iter().collect::<Vec<_>>());
        (eks, rules)
    }

    /// Two minor versions: control plane, add-ons, nodegroup for each, in that order; a run that
    /// stops while the control plane moves to the second goes on from there without repeating it.
    #[tokio::test(start_paused = true)]
    async fn an_upgrade_goes_one_minor_at_a_time_and_resumes_where_it_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let cx = context(dir.path());
        let addons = spec::ADDONS.iter().map(|(a, _)| (a.to_string(), format!("{a}-for-1.33"))).collect();
        let fake = Arc::new(std::sync::Mutex::new(UpgradingEks {
            cluster: "1.33".into(),
            nodes: "1.33".into(),
            addons,
            fail: Some("cluster-1.35".into()),
            ..Default::default()
        }));
        let (eks, _rules) = upgrading_eks(&fake);
        let stopped = upgrade(&run(&cx, eks, iam_unused()), "1.33", "1.35").await.unwrap_err();
        assert!(format!("{stopped:#}").contains("DescribeUpdate"), "{stopped:#}");

        fake.lock().unwrap().fail = None;
        let (eks, _rules) = upgrading_eks(&fake);
        let resumed = run(&cx, eks, iam_unused());
        // As `cluster` hands it over: the cluster waited for until active again.
        let current = wait_cluster(&resumed).await.unwrap().extra["version"].clone();
        assert_eq!(current, "1.35", "the update sent before the stop finished");
        upgrade(&resumed, &current, "1.35").await.unwrap();
        let f = fake.lock().unwrap();
        let addon_steps = |k8s: &'static str| spec::ADDONS.iter().map(move |(a, _)| format!("addon {a}-for-{k8s}"));
        let mut expected = vec!["cluster 1.34".to_string()];
        expected.extend(addon_steps("1.34"));
        expected.extend(["nodegroup 1.34".to_string(), "cluster 1.35".to_string()]);
        expected.extend(addon_steps("1.35"));
        expected.push("nodegroup 1.35".into());
        assert_eq!(f.log, expected, "each step once, in AWS's order, the interrupted one not repeated");
        assert_eq!((f.cluster.as_str(), f.nodes.as_str()), ("1.35", "1.35"));
    }

    #[tokio::test]
    async fn a_create_interrupted_before_its_answer_resends_the_persisted_token() {
        let dir = tempfile::tempdir().unwrap();
        let cx = context(dir.path());
        let persisted = crate::state::ResourceRecord { token: Some("0123456789abcdef0123456789abcdef".into()), ..Default::default() };
        cx.update_state(|s| s.infra.resources.insert("addon-vpc-cni".into(), persisted)).unwrap();
        let describe = mock!(Eks::describe_addon).then_error(|| DescribeAddonError::ResourceNotFoundException(not_found()));
        let versions = mock!(Eks::describe_addon_versions).then_output(versions);
        let create = mock!(Eks::create_addon)
            .match_requests(|r| r.client_request_token() == Some("0123456789abcdef0123456789abcdef"))
            .then_output(|| aws_sdk_eks::operation::create_addon::CreateAddonOutput::builder().build());
        let eks = mock_client!(aws_sdk_eks, RuleMode::Sequential, &[&describe, &versions, &create]);
        let run = run(&cx, eks, iam_unused());
        ensure_addon(&run, "vpc-cni", None, "1.33").await.unwrap();
        assert_eq!(create.num_calls(), 1);
        let record = cx.state().infra.resources["addon-vpc-cni"].clone();
        assert_eq!((record.id.as_deref(), record.token.as_deref()), (Some("vpc-cni"), Some("0123456789abcdef0123456789abcdef")));
    }

    #[tokio::test]
    async fn an_existing_addon_is_adopted_without_a_mutating_call() {
        let dir = tempfile::tempdir().unwrap();
        let cx = context(dir.path());
        let describe = mock!(Eks::describe_addon).then_output(|| {
            aws_sdk_eks::operation::describe_addon::DescribeAddonOutput::builder()
                .addon(ekst::Addon::builder().addon_name("coredns").build())
                .build()
        });
        let create = mock!(Eks::create_addon).then_output(|| aws_sdk_eks::operation::create_addon::CreateAddonOutput::builder().build());
        let eks = mock_client!(aws_sdk_eks, RuleMode::MatchAny, &[&describe, &create]);
        let run = run(&cx, eks, iam_unused());
        ensure_addon(&run, "coredns", None, "1.33").await.unwrap();
        assert_eq!((describe.num_calls(), create.num_calls()), (1, 0));
        assert_eq!(cx.state().infra.resources["addon-coredns"].id.as_deref(), Some("coredns"));
    }

    #[tokio::test]
    async fn the_access_entry_uses_the_iam_role_not_the_sts_session() {
        let dir = tempfile::tempdir().unwrap();
        let cx = context(dir.path());
        let get_role = mock!(Iam::get_role).match_requests(|r| r.role_name() == Some("Admin")).then_output(|| {
            let role = aws_sdk_iam::types::Role::builder()
                .role_name("Admin")
                .path("/admins/")
                .role_id("AROA")
                .arn(ROLE_ARN)
                .create_date(aws_smithy_types::DateTime::from_secs(0))
                .build()
                .unwrap();
            aws_sdk_iam::operation::get_role::GetRoleOutput::builder().role(role).build()
        });
        let iam = mock_client!(aws_sdk_iam, RuleMode::Sequential, &[&get_role]);
        let describe = mock!(Eks::describe_access_entry).then_error(|| DescribeAccessEntryError::ResourceNotFoundException(not_found()));
        let create = mock!(Eks::create_access_entry)
            .match_requests(|r| r.principal_arn() == Some(ROLE_ARN) && r.r#type() == Some("STANDARD") && r.cluster_name() == Some("neon"))
            .then_output(|| aws_sdk_eks::operation::create_access_entry::CreateAccessEntryOutput::builder().build());
        let associate = mock!(Eks::associate_access_policy)
            .match_requests(|r| {
                r.principal_arn() == Some(ROLE_ARN)
                    && r.policy_arn() == Some(CLUSTER_ADMIN)
                    && r.access_scope().and_then(|s| s.r#type()) == Some(&ekst::AccessScopeType::Cluster)
            })
            .then_output(|| aws_sdk_eks::operation::associate_access_policy::AssociateAccessPolicyOutput::builder().build());
        let eks = mock_client!(aws_sdk_eks, RuleMode::Sequential, &[&describe, &create, &associate]);
        let run = run(&cx, eks, iam);
        access_entry(&run).await.unwrap();
        assert_eq!((get_role.num_calls(), describe.num_calls(), create.num_calls(), associate.num_calls()), (1, 1, 1, 1));
        assert_eq!(cx.state().infra.resources["access-entry"].id.as_deref(), Some(ROLE_ARN));
    }
}
