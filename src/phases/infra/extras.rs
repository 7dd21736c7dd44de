//! What real EKS has and the emulator (moto) lacks, behind one seam: managed add-ons, access
//! entries, version upgrades, and a cluster endpoint that is a Kubernetes API server. [`of`] picks
//! the implementation once, from `aws.emulator`: [`RealEks`] does these things, [`Emulated`]
//! skips each and says so. `infra`, its plan and `teardown` call through [`EksExtras`] and never
//! ask which one they have; the real calls are tested with recorded answers (`eks.rs`) and the
//! fake Kubernetes API (`k8s/cleanup.rs`).

use std::time::Duration;

use futures::future::BoxFuture;

use super::drift::AddonDefaults;
use super::{Identity, Run, eks, spec};
use crate::aws::Aws;
use crate::aws::call::call;
use crate::aws::inventory::{Found, Inventory, Kind};
use crate::config::Config;
use crate::output::{PhaseReporter, PlannedAction, Verb};

/// The role ARN of each role for service accounts: `(suffix, ARN)`.
pub type IrsaRoles = [(&'static str, String)];

pub trait EksExtras: Send + Sync {
    /// Moves the cluster from `current` to `target` (one minor version at a time) and returns the
    /// version it runs afterwards.
    fn upgrade<'a>(&'a self, run: &'a Run<'a>, current: &'a str, target: &'a str) -> BoxFuture<'a, anyhow::Result<String>>;

    /// The add-ons that must run before nodes join, and the caller's cluster-admin access entry.
    fn before_nodes<'a>(&'a self, run: &'a Run<'a>, roles: &'a IrsaRoles, version: &'a str) -> BoxFuture<'a, anyhow::Result<()>>;

    /// The add-ons that need nodes, then a wait until every add-on is active.
    fn after_nodes<'a>(&'a self, run: &'a Run<'a>, roles: &'a IrsaRoles, version: &'a str) -> BoxFuture<'a, anyhow::Result<()>>;

    /// Moves the pods off a nodegroup about to be deleted: cordons its nodes, evicts their pods
    /// within their PodDisruptionBudgets.
    fn drain<'a>(&'a self, run: &'a Run<'a>, nodegroup: &'a str) -> BoxFuture<'a, anyhow::Result<()>>;

    /// Adds the existing add-ons (with their versions) and access entry to the plan's inventory.
    fn observe<'a>(
        &'a self,
        aws: &'a Aws,
        cluster: &'a str,
        id: &'a Identity,
        inventory: &'a mut Inventory,
    ) -> BoxFuture<'a, anyhow::Result<()>>;

    /// EKS's default version of each of `addons` for each of `kubernetes` (what an upgrade moves
    /// them to); what EKS does not answer is left out.
    fn addon_defaults<'a>(&'a self, aws: &'a Aws, addons: &'a [String], kubernetes: &'a [String]) -> BoxFuture<'a, AddonDefaults>;

    /// A plan line for one of these things (an add-on, the access entry, an upgrade step) as
    /// apply will carry it out.
    fn planned(&self, action: PlannedAction) -> PlannedAction;

    /// The add-ons teardown deletes before the cluster.
    fn addons<'a>(&'a self, aws: &'a Aws, cluster: &'a str) -> BoxFuture<'a, Vec<String>>;

    /// Teardown's first step while the nodes still run: Kubernetes objects that hold AWS
    /// resources (load balancers, volumes) are deleted. Returns those not released in time.
    fn release_kubernetes<'a>(&'a self, aws: &'a Aws, reporter: &'a PhaseReporter, cluster: &'a str) -> BoxFuture<'a, Vec<String>>;

    /// Teardown's plan line for that step, or the note that says why there is none.
    fn release_plan(&self, cluster: &str) -> Result<PlannedAction, String>;
}

/// The implementation for this config.
pub fn of(config: &Config) -> &'static dyn EksExtras {
    if config.aws.emulator { &Emulated } else { &RealEks }
}

/// Real AWS: every call is made.
pub struct RealEks;

impl EksExtras for RealEks {
    fn drain<'a>(&'a self, run: &'a Run<'a>, nodegroup: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let client = crate::k8s::eks_cluster_client(&run.aws, &run.prefix).await?;
            let selector = format!("{}={nodegroup}", crate::k8s::drain::NODEGROUP_LABEL);
            let step = run.reporter.step(format!("drain eks nodegroup {nodegroup} (pods move to the new nodes)"));
            crate::k8s::drain::drain(&client, &selector, &run.reporter, Duration::from_secs(30 * 60), Duration::from_secs(10)).await?;
            step.finish();
            Ok(())
        })
    }

    fn upgrade<'a>(&'a self, run: &'a Run<'a>, current: &'a str, target: &'a str) -> BoxFuture<'a, anyhow::Result<String>> {
        Box::pin(async move {
            eks::upgrade(run, current, target).await?;
            Ok(target.to_string())
        })
    }

    fn before_nodes<'a>(&'a self, run: &'a Run<'a>, roles: &'a IrsaRoles, version: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            for (addon, _) in eks::addons(true) {
                eks::ensure_addon(run, addon, eks::addon_role(roles, addon), version).await?;
            }
            eks::access_entry(run).await
        })
    }

    fn after_nodes<'a>(&'a self, run: &'a Run<'a>, roles: &'a IrsaRoles, version: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            for (addon, _) in eks::addons(false) {
                eks::ensure_addon(run, addon, eks::addon_role(roles, addon), version).await?;
            }
            for (addon, _) in spec::ADDONS {
                eks::wait_addon(run, addon).await?;
            }
            Ok(())
        })
    }

    fn observe<'a>(
        &'a self,
        aws: &'a Aws,
        cluster: &'a str,
        id: &'a Identity,
        inventory: &'a mut Inventory,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let addons = aws.eks.list_addons().cluster_name(cluster).send().await.map_err(call("ListAddons", cluster))?;
            let described = futures::future::try_join_all(addons.addons().iter().map(|addon| async move {
                let out = aws.eks.describe_addon().cluster_name(cluster).addon_name(addon).send().await;
                let version = crate::aws::call::found(out.map_err(call("DescribeAddon", addon)))?
                    .and_then(|d| d.addon().and_then(|a| a.addon_version()).map(str::to_string));
                let mut found = Found { component: format!("addon-{addon}"), id: addon.clone(), ..Found::default() };
                found.extra.extend(version.map(|v| ("version".to_string(), v)));
                Ok::<_, crate::aws::call::CallError>(found)
            }))
            .await?;
            inventory.add(Kind::Addon, described);
            let entry = eks::existing_access_entry(aws, cluster, id).await?;
            inventory.add(Kind::AccessEntry, entry.state.is_some().then_some(entry));
            Ok(())
        })
    }

    fn addon_defaults<'a>(&'a self, aws: &'a Aws, addons: &'a [String], kubernetes: &'a [String]) -> BoxFuture<'a, AddonDefaults> {
        Box::pin(async move {
            let pairs = kubernetes.iter().flat_map(|k| addons.iter().map(move |a| (k, a)));
            let asked = futures::future::join_all(pairs.map(|(k8s, addon)| async move {
                let out = aws.eks.describe_addon_versions().addon_name(addon).kubernetes_version(k8s).send().await.ok()?;
                Some(((k8s.clone(), addon.clone()), eks::addon_version(out.addons(), k8s)?))
            }))
            .await;
            asked.into_iter().flatten().collect()
        })
    }

    fn planned(&self, action: PlannedAction) -> PlannedAction {
        action
    }

    fn addons<'a>(&'a self, aws: &'a Aws, cluster: &'a str) -> BoxFuture<'a, Vec<String>> {
        Box::pin(async move {
            let listed =
                crate::aws::call::found(aws.eks.list_addons().cluster_name(cluster).send().await.map_err(call("ListAddons", cluster)));
            listed.ok().flatten().map(|a| a.addons().to_vec()).unwrap_or_default()
        })
    }

    fn release_kubernetes<'a>(&'a self, aws: &'a Aws, reporter: &'a PhaseReporter, cluster: &'a str) -> BoxFuture<'a, Vec<String>> {
        Box::pin(async move {
            let client = match crate::k8s::eks_cluster_client(aws, cluster).await {
                Ok(client) => client,
                Err(e) => {
                    reporter.warn(format!(
                        "cluster {cluster} is not reachable ({e:#}), so its LoadBalancer services and volumes were not deleted first: \
                         after teardown, check for load balancers and EBS volumes tagged with the cluster name"
                    ));
                    return vec![];
                }
            };
            let wait = Duration::from_secs(10 * 60);
            match crate::k8s::cleanup::release_cloud_resources(&client, reporter, wait, Duration::from_secs(10)).await {
                Ok(remaining) => remaining.0,
                Err(e) => {
                    reporter.warn(format!("removing Kubernetes load balancers and volumes of cluster {cluster} failed: {e}"));
                    vec![]
                }
            }
        })
    }

    fn release_plan(&self, cluster: &str) -> Result<PlannedAction, String> {
        Ok(PlannedAction::new(Verb::Delete, format!("kubernetes load balancers and volumes of cluster {cluster}"))
            .detail("first, while the nodes run: our namespaces, every LoadBalancer service and claim"))
    }
}

/// An emulator (moto): it has none of these, so each is skipped with a warning, and plans say so.
pub struct Emulated;

const SKIPPED: &str = "skipped: aws.emulator has no EKS add-ons, access entries or version upgrades";

impl EksExtras for Emulated {
    fn upgrade<'a>(&'a self, run: &'a Run<'a>, current: &'a str, target: &'a str) -> BoxFuture<'a, anyhow::Result<String>> {
        skipped(run, &format!("the upgrade of eks cluster {} from Kubernetes {current} to {target}", run.prefix));
        Box::pin(async move { Ok(current.to_string()) })
    }

    fn before_nodes<'a>(&'a self, run: &'a Run<'a>, _: &'a IrsaRoles, _: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        skipped(run, "the EKS addons (vpc-cni, kube-proxy, coredns, aws-ebs-csi-driver) and the cluster access entry");
        Box::pin(async { Ok(()) })
    }

    fn after_nodes<'a>(&'a self, _: &'a Run<'a>, _: &'a IrsaRoles, _: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async { Ok(()) })
    }

    fn drain<'a>(&'a self, run: &'a Run<'a>, nodegroup: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        skipped(run, &format!("draining eks nodegroup {nodegroup} before its deletion (its endpoint is no Kubernetes API server)"));
        Box::pin(async { Ok(()) })
    }

    fn observe<'a>(&'a self, _: &'a Aws, _: &'a str, _: &'a Identity, _: &'a mut Inventory) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async { Ok(()) })
    }

    fn addon_defaults<'a>(&'a self, _: &'a Aws, _: &'a [String], _: &'a [String]) -> BoxFuture<'a, AddonDefaults> {
        Box::pin(async { AddonDefaults::new() })
    }

    fn planned(&self, action: PlannedAction) -> PlannedAction {
        let detail = match &action.detail {
            Some(what) => format!("{what}; {SKIPPED}"),
            None => SKIPPED.to_string(),
        };
        PlannedAction::new(Verb::Run, action.target).detail(detail)
    }

    fn addons<'a>(&'a self, _: &'a Aws, _: &'a str) -> BoxFuture<'a, Vec<String>> {
        Box::pin(async { vec![] })
    }

    fn release_kubernetes<'a>(&'a self, _: &'a Aws, reporter: &'a PhaseReporter, _: &'a str) -> BoxFuture<'a, Vec<String>> {
        reporter.warn(NO_API_SERVER);
        Box::pin(async { vec![] })
    }

    fn release_plan(&self, _: &str) -> Result<PlannedAction, String> {
        Err(NO_API_SERVER.to_string())
    }
}

fn skipped(run: &Run<'_>, what: &str) {
    run.reporter.warn(format!("aws.emulator: skipping {what} (the emulator does not implement it)"));
}

const NO_API_SERVER: &str =
    "aws.emulator: the cluster endpoint is not a real API server, so Kubernetes load balancers and volumes are not removed first";

#[cfg(test)]
mod tests {
    use aws_sdk_eks::Client as Eks;
    use aws_sdk_eks::operation as op;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    use super::*;

    /// The plan's look at what only real EKS has: the add-ons and the caller's access entry.
    #[tokio::test]
    async fn the_plan_finds_the_addons_and_the_access_entry() {
        let listed = mock!(Eks::list_addons)
            .match_requests(|r| r.cluster_name() == Some("neon"))
            .then_output(|| op::list_addons::ListAddonsOutput::builder().addons("vpc-cni").addons("coredns").build());
        let entry = mock!(Eks::describe_access_entry)
            .match_requests(|r| r.principal_arn() == Some("arn:aws:iam::123456789012:user/ci"))
            .then_output(|| {
                let entry = aws_sdk_eks::types::AccessEntry::builder().principal_arn("arn:aws:iam::123456789012:user/ci").build();
                op::describe_access_entry::DescribeAccessEntryOutput::builder().access_entry(entry).build()
            });
        let described = mock!(Eks::describe_addon).then_compute_output(|r| {
            let addon = aws_sdk_eks::types::Addon::builder().addon_name(r.addon_name().unwrap()).addon_version("v1.0.0-eksbuild.1").build();
            op::describe_addon::DescribeAddonOutput::builder().addon(addon).build()
        });
        let versions = mock!(Eks::describe_addon_versions).then_compute_output(|r| {
            let (addon, k8s) = (r.addon_name().unwrap(), r.kubernetes_version().unwrap());
            let compat = aws_sdk_eks::types::Compatibility::builder().cluster_version(k8s).default_version(true).build();
            let version =
                aws_sdk_eks::types::AddonVersionInfo::builder().addon_version(format!("{addon}-{k8s}")).compatibilities(compat).build();
            let info = aws_sdk_eks::types::AddonInfo::builder().addon_name(addon).addon_versions(version).build();
            op::describe_addon_versions::DescribeAddonVersionsOutput::builder().addons(info).build()
        });
        let config = Config::default();
        let eks = mock_client!(aws_sdk_eks, RuleMode::MatchAny, &[&listed, &entry, &described, &versions]);
        let aws = Aws { eks, ..Aws::unreachable(&config) };
        let id =
            Identity { account: "123456789012".into(), partition: "aws".into(), caller_arn: "arn:aws:iam::123456789012:user/ci".into() };
        let mut inventory = Inventory::default();
        RealEks.observe(&aws, "neon", &id, &mut inventory).await.unwrap();
        let addons: Vec<&str> = inventory.of(Kind::Addon).iter().map(|f| f.component.as_str()).collect();
        assert_eq!(addons, ["addon-vpc-cni", "addon-coredns"]);
        assert_eq!(inventory.of(Kind::Addon)[0].extra["version"], "v1.0.0-eksbuild.1");
        let (names, minors) = (["vpc-cni".to_string()], ["1.34".to_string(), "1.35".to_string()]);
        let defaults = RealEks.addon_defaults(&aws, &names, &minors).await;
        assert_eq!(defaults.get(&("1.35".to_string(), "vpc-cni".to_string())).map(String::as_str), Some("vpc-cni-1.35"));
        assert_eq!(defaults.len(), 2);
        assert!(Emulated.addon_defaults(&aws, &names, &minors).await.is_empty());
        assert_eq!(inventory.get(Kind::AccessEntry, "access-entry").map(|f| f.id.as_str()), Some("arn:aws:iam::123456789012:user/ci"));

        // The emulator looks nothing up and its plan says what it will skip.
        let mut untouched = Inventory::default();
        Emulated.observe(&aws, "neon", &id, &mut untouched).await.unwrap();
        assert!(untouched.is_empty());
        let line = Emulated.planned(PlannedAction::new(Verb::Create, "eks addon coredns"));
        assert_eq!((line.verb, line.detail.as_deref()), (Verb::Run, Some(SKIPPED)));
        assert_eq!(RealEks.planned(PlannedAction::new(Verb::Create, "eks addon coredns")).verb, Verb::Create);
        assert!(Emulated.release_plan("neon").is_err() && RealEks.release_plan("neon").is_ok());
    }
}
