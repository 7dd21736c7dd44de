//! `infra`: the AWS side of a deployment, created with the SDK directly.
//!
//! ```text
//! identity, zones ─► bucket ─┬─► network ─┐
//!                            ├─► roles ───┼─► cluster ─► oidc ─► irsa roles ─► addons, access ─► nodegroup ─► ebs-csi
//!                            └─► ecr      │
//! ```
//! Every resource is looked up first (by tag, IAM path or deterministic name) and adopted when
//! it exists, so a run that crashed anywhere resumes without twins. Before each create call the
//! component's record (with its deterministic client token) is persisted; the id right after.

mod cost;
mod drift;
pub(crate) mod eks;
pub(crate) mod extras;
mod iam;
mod network;
pub mod spec;
mod storage;
pub mod versions;

use std::future::Future;

use anyhow::Context as _;
use futures::future::BoxFuture;

use crate::aws::Aws;
use crate::aws::call::{CallError, call};
use crate::aws::inventory::{self, Found, Kind};
use crate::engine::{Context, Phase, PhaseName, PhasePlan};
use crate::output::PhaseReporter;
use crate::state::ResourceRecord;

pub struct Infra;

impl Phase for Infra {
    fn name(&self) -> PhaseName {
        PhaseName::Infra
    }

    fn plan<'a>(&'a self, cx: &'a Context) -> BoxFuture<'a, anyhow::Result<PhasePlan>> {
        Box::pin(cost::plan(cx))
    }

    fn apply<'a>(&'a self, cx: &'a Context) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let run = Run::start(cx).await?;
            run.converge().await
        })
    }
}

/// Who runs this: account, partition and the IAM principal for the cluster access entry.
#[derive(Debug, Clone)]
pub struct Identity {
    pub account: String,
    pub partition: String,
    pub caller_arn: String,
}

/// Calls STS; a failure here means no usable credentials or no route to AWS.
pub async fn identity(aws: &Aws) -> anyhow::Result<Identity> {
    let who = aws.sts.get_caller_identity().send().await.map_err(call("GetCallerIdentity", "of the current credentials")).map_err(|e| {
        let hint = if e.is_unreachable() {
            "no usable AWS credentials or no route to AWS. Configure credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID and \
             AWS_SECRET_ACCESS_KEY, or `aws sso login`) and check the network, then run the command again"
        } else {
            "the credentials were refused. Check them (aws sts get-caller-identity) and run the command again"
        };
        anyhow::Error::new(e).context(hint)
    })?;
    let arn = who.arn().unwrap_or_default().to_string();
    Ok(Identity {
        account: who.account().unwrap_or_default().to_string(),
        partition: arn.split(':').nth(1).unwrap_or("aws").to_string(),
        caller_arn: arn,
    })
}

/// One apply: the clients, who we are, and the helpers every resource goes through.
pub(crate) struct Run<'a> {
    pub cx: &'a Context,
    pub aws: Aws,
    pub id: Identity,
    pub prefix: String,
    pub region: String,
    pub zones: Vec<String>,
    pub reporter: PhaseReporter,
}

impl<'a> Run<'a> {
    async fn start(cx: &'a Context) -> anyhow::Result<Run<'a>> {
        let aws = Aws::connect(&cx.config, cx.calls.clone()).await?;
        let reporter = cx.reporter(PhaseName::Infra);
        let id = identity(&aws).await?;
        if let Some(recorded) = cx.state().infra.account.filter(|a| *a != id.account) {
            anyhow::bail!(
                "the state records resources in AWS account {recorded}, but the current credentials are for account {}. \
                 Use the credentials of account {recorded}, or --state DIR for a new deployment",
                id.account
            );
        }
        let mut run = Run { cx, aws, id, prefix: cx.config.prefix.clone(), region: cx.config.region.clone(), zones: vec![], reporter };
        run.zones = match cx.state().infra.azs {
            recorded if !recorded.is_empty() => recorded,
            // A lost state file must not move the network to other zones.
            _ => match zones_in_use(&run.aws, &run.prefix).await? {
                Some(zones) => zones,
                None => pick_zones(&run.aws, &cx.config).await?,
            },
        };
        Ok(run)
    }

    async fn converge(&self) -> anyhow::Result<()> {
        // A cluster of our name that is not ours, or a bucket name someone else owns, stops the
        // run before anything is created.
        let (cluster, network) =
            futures::try_join!(inventory::cluster(&self.aws, &self.prefix), inventory::network(&self.aws, &self.prefix))?;
        // What the config asks to change is decided from these lookups, as `--plan` decides it:
        // anything that cannot change in place stops the run before its first mutating call.
        let mut live = network.clone();
        if let Some(cluster) = &cluster {
            live.add(Kind::Cluster, [cluster.clone()]);
            live.add(Kind::Nodegroup, inventory::nodegroups_described(&self.aws, &self.prefix).await?);
        }
        let existing_network = !self.cx.state().infra.azs.is_empty() || !network.of(Kind::Subnet).is_empty();
        let zones_in_use = if existing_network { self.zones.as_slice() } else { &[] };
        let recorded = self.cx.state().infra;
        let no_defaults = drift::AddonDefaults::new();
        let live =
            drift::Live { inventory: &live, zones: zones_in_use, configured: &[], recorded: &recorded, addon_defaults: &no_defaults };
        let changes = drift::changes(&self.cx.config, &live);
        if let Some(refused) = drift::refusal_error(&changes) {
            return Err(refused);
        }
        let bucket = storage::bucket(self).await?;
        let (account, zones) = (self.id.account.clone(), self.zones.clone());
        if self.cx.state().infra.azs != zones {
            self.cx.update_state(|s| {
                s.infra.account = Some(account);
                s.infra.azs = zones;
            })?;
        }
        let (net, (cluster_role, node_role), ()) =
            futures::try_join!(network::converge(self, &network), iam::base_roles(self), storage::repositories(self))?;
        eks::converge(self, cluster, &net, &cluster_role, &node_role, &bucket).await
    }

    pub fn record(&self, component: &str) -> Option<ResourceRecord> {
        self.cx.state().infra.resources.get(component).cloned()
    }

    pub fn token(&self, component: &str) -> String {
        match self.record(component) {
            // A create that may have been sent: the same token again, so AWS can deduplicate.
            Some(ResourceRecord { id: None, token: Some(token), .. }) => token,
            // A recorded resource that vanished gets a new generation, hence a new token.
            record => spec::token(&self.prefix, &self.region, component, &record.and_then(|r| r.id).unwrap_or_default()),
        }
    }

    /// Adopts `existing`, or creates the resource with `create(token)`: the record and token are
    /// persisted before the call, the id right after it.
    pub async fn ensure<F, Fut>(
        &self,
        kind: Kind,
        component: &str,
        name: &str,
        existing: Option<&Found>,
        create: F,
    ) -> anyhow::Result<String>
    where
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = Result<String, CallError>>,
    {
        if let Some(found) = existing {
            let id = found.id.clone();
            if self.record(component).and_then(|r| r.id).as_deref() != Some(id.as_str()) {
                self.reporter.info(format!("adopted {} {name} ({id})", kind.label()));
                let recorded = id.clone();
                self.cx.update_state(|s| {
                    let record = s.infra.resources.entry(component.to_string()).or_default();
                    record.id = Some(recorded);
                    record.applied = None;
                })?;
            }
            return Ok(id);
        }
        let token = self.token(component);
        if kind.takes_token() {
            let recorded_token = token.clone();
            self.cx.update_state(|s| {
                s.infra
                    .resources
                    .insert(component.to_string(), ResourceRecord { token: Some(recorded_token), ..ResourceRecord::default() });
            })?;
        }
        let slug = kind_slug(kind);
        crate::crash::point(&format!("infra:{slug}:before-create"));
        let step = self.reporter.step(format!("create {} {name}", kind.label()));
        let id = create(token).await.with_context(|| format!("creating {} {name}", kind.label()))?;
        crate::crash::point(&format!("infra:{slug}:created"));
        let recorded = id.clone();
        self.cx.update_state(|s| s.infra.resources.entry(component.to_string()).or_default().id = Some(recorded))?;
        step.finish();
        Ok(id)
    }

    /// Runs `apply` unless the same settings were applied to the component already.
    pub async fn configure<Fut>(&self, configured: &drift::Configured, apply: impl FnOnce() -> Fut) -> anyhow::Result<()>
    where
        Fut: Future<Output = Result<(), CallError>>,
    {
        if configured.is_applied(&self.cx.state().infra) {
            return Ok(());
        }
        let what = &configured.what;
        let step = self.reporter.step(format!("configure {what}"));
        apply().await.with_context(|| format!("configuring {what}"))?;
        let fingerprint = configured.fingerprint();
        self.cx.update_state(|s| s.infra.resources.entry(configured.component.clone()).or_default().applied = Some(fingerprint))?;
        step.finish();
        Ok(())
    }

    /// Records outputs later phases read (endpoint, ARNs, URIs).
    pub fn output(&self, component: &str, key: &str, value: &str) -> anyhow::Result<()> {
        if self.record(component).and_then(|r| r.outputs.get(key).cloned()).as_deref() == Some(value) {
            return Ok(());
        }
        self.cx.update_state(|s| {
            s.infra.resources.entry(component.to_string()).or_default().outputs.insert(key.to_string(), value.to_string());
        })?;
        Ok(())
    }
}

/// The name crash points and logs use for a kind: `infra:<slug>:created`.
pub fn kind_slug(kind: Kind) -> String {
    serde_json::to_value(kind).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// The first `network.az_count` available zones that offer the node instance type.
pub async fn pick_zones(aws: &Aws, config: &crate::config::Config) -> anyhow::Result<Vec<String>> {
    let ec2 = &aws.ec2;
    let filter = |name: &str, value: &str| aws_sdk_ec2::types::Filter::builder().name(name).values(value).build();
    let available = ec2
        .describe_availability_zones()
        .filters(filter("state", "available"))
        .filters(filter("zone-type", "availability-zone"))
        .send()
        .await
        .map_err(call("DescribeAvailabilityZones", &config.region))?;
    let available: Vec<String> = available.availability_zones().iter().filter_map(|z| z.zone_name()).map(str::to_string).collect();
    let itype = &config.cluster.node_instance_type;
    let offerings: Vec<aws_sdk_ec2::types::InstanceTypeOffering> = ec2
        .describe_instance_type_offerings()
        .location_type(aws_sdk_ec2::types::LocationType::AvailabilityZone)
        .filters(filter("instance-type", itype))
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(call("DescribeInstanceTypeOfferings", itype))?;
    let offered: Vec<String> = offerings.iter().filter_map(|o| o.location().map(str::to_string)).collect();
    spec::choose_zones(&available, Some(&offered), config.network.az_count as usize).map_err(|e| anyhow::anyhow!("{e}"))
}

/// The zones of the prefix's existing private subnets, if there are any.
pub(crate) async fn zones_in_use(aws: &Aws, prefix: &str) -> anyhow::Result<Option<Vec<String>>> {
    let subnets = aws
        .ec2
        .describe_subnets()
        .filters(crate::aws::tags::ec2_filter(prefix))
        .send()
        .await
        .map_err(call("DescribeSubnets", format!("tagged {}={prefix}", crate::aws::tags::CLUSTER_TAG)))?;
    let mut zones: Vec<String> = subnets
        .subnets()
        .iter()
        .filter(|s| {
            crate::aws::tags::ec2_value(s.tags(), crate::aws::tags::COMPONENT_TAG).is_some_and(|c| c.starts_with("subnet-private-"))
        })
        .filter_map(|s| s.availability_zone().map(str::to_string))
        .collect();
    zones.sort();
    zones.dedup();
    Ok((!zones.is_empty()).then_some(zones))
}
