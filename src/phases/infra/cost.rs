//! `infra --plan`: every resource it would create or adopt, and what it would cost a month.
//! Works with no credentials and no network: the lookups that fail become a note and the plan
//! assumes nothing exists.

use std::time::Duration;

use super::drift::{self, Change, Configured, Live};
use super::extras::EksExtras;
use super::spec::Trust;
use super::{Identity, eks, iam, identity, network, pick_zones, spec, storage, versions, zones_in_use};
use crate::aws::Aws;
use crate::aws::inventory::{self, Found, Inventory, Kind};
use crate::config::Config;
use crate::engine::{Context, PhasePlan};
use crate::output::{PlannedAction, Verb};

/// How long `--plan` waits for its lookups before planning without them.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(20);

/// What exists already, as far as the plan could find out.
struct Observed {
    account: String,
    zones: Vec<String>,
    /// The zones the network already lives in (empty for a new deployment).
    zones_in_use: Vec<String>,
    inventory: Inventory,
    /// The settings of the resources that exist, as `infra` would apply them.
    configured: Vec<Configured>,
    /// EKS's calendar of versions, or the dated table when EKS does not answer.
    calendar: versions::Calendar,
    /// EKS's default add-on versions for the Kubernetes versions an upgrade passes.
    addon_defaults: drift::AddonDefaults,
}

pub async fn plan(cx: &Context) -> anyhow::Result<PhasePlan> {
    let mut notes = Vec::new();
    let observed = match tokio::time::timeout(LOOKUP_TIMEOUT, observe(cx)).await {
        Ok(Ok(observed)) => Some(observed),
        Ok(Err(e)) => {
            notes.push(format!("could not look up existing resources ({e}); the plan assumes nothing exists yet"));
            None
        }
        Err(_) => {
            notes.push(format!(
                "looking up existing resources took longer than {}s; the plan assumes nothing exists yet",
                LOOKUP_TIMEOUT.as_secs()
            ));
            None
        }
    };
    let config = &cx.config;
    let recorded = cx.state().infra;
    let zones = match (&observed, recorded.azs.is_empty()) {
        (Some(o), _) => o.zones.clone(),
        (None, false) => recorded.azs.clone(),
        (None, true) => {
            let guess: Vec<String> =
                ["a", "b", "c"].iter().take(config.network.az_count as usize).map(|z| format!("{}{z}", config.region)).collect();
            notes.push(format!("availability zones not looked up: assuming {}", guess.join(", ")));
            guess
        }
    };
    let account = observed.as_ref().map(|o| o.account.clone()).or(recorded.account).unwrap_or_else(|| "<account id>".into());
    let empty = Inventory::default();
    let inventory = observed.as_ref().map(|o| &o.inventory).unwrap_or(&empty);
    let extras = super::extras::of(config);
    let nodegroup = eks::nodegroups(config, &config.prefix, inventory.of(Kind::Nodegroup)).name;
    let mut actions: Vec<PlannedAction> = desired(config, &zones, &account, &nodegroup)
        .into_iter()
        .map(|(kind, component, name)| {
            let existing = match kind {
                // Nodegroups of another shape are replaced (a delete line), not adopted.
                Kind::Nodegroup => inventory.of(kind).iter().find(|f| f.id == name),
                _ => inventory.get(kind, &component).or_else(|| inventory.of(kind).iter().find(|f| f.id == name && !name.is_empty())),
            };
            let target = format!("{} {name}", kind.label());
            let action = match existing {
                Some(found) => PlannedAction::new(Verb::Adopt, target).detail(found.id.clone()),
                None => PlannedAction::new(Verb::Create, target),
            };
            match kind {
                Kind::Addon | Kind::AccessEntry => extras.planned(action),
                _ => action,
            }
        })
        .collect();
    let in_use = observed.as_ref().map(|o| o.zones_in_use.as_slice()).unwrap_or_default();
    let configured = observed.as_ref().map(|o| o.configured.as_slice()).unwrap_or_default();
    let recorded_infra = cx.state().infra;
    let no_defaults = drift::AddonDefaults::new();
    let addon_defaults = observed.as_ref().map(|o| &o.addon_defaults).unwrap_or(&no_defaults);
    let live = Live { inventory, zones: in_use, configured, recorded: &recorded_infra, addon_defaults };
    let changes = drift::changes(config, &live);
    actions.extend(changes.iter().map(|change| change_action(extras, change)));
    if changes.iter().any(Change::is_refusal) {
        notes.push("infra will refuse to run, and change nothing, until the config asks only for what can change in place".into());
    }
    let today = versions::today();
    let calendar = observed.as_ref().map(|o| o.calendar.clone()).unwrap_or_else(versions::Calendar::table);
    let existing = inventory.of(Kind::Cluster).first().and_then(|cluster| cluster.extra.get("version").cloned());
    let version = match (existing, &config.cluster.kubernetes_version) {
        (Some(version), _) => version,
        (None, Some(version)) => version.clone(),
        (None, None) => {
            let version = calendar.newest_in_standard(today);
            notes.push(format!("Kubernetes {version}: the newest in EKS standard support by {}", calendar.source));
            version.to_string()
        }
    };
    notes.extend(calendar.warning(&version, today, config.pricing.eks_cluster_per_hour, config.pricing.eks_extended_cluster_per_hour));
    let estimate = spec::estimate(config, spec::nat_zones(config, &zones).len(), &version, &calendar, today);
    // The estimate is information, not something the phase does: a note, not an action.
    let lines = estimate.lines.iter().map(|(what, usd)| format!("{what} ${usd:.2}")).collect::<Vec<_>>().join(", ");
    notes.push(format!("estimated cost ${:.2}/month ({lines})", estimate.total));
    notes.extend(estimate.notes);
    Ok(PhasePlan { actions, notes })
}

/// An update, upgrade step or refusal as a plan line.
fn change_action(extras: &dyn EksExtras, change: &Change) -> PlannedAction {
    let (resource, what) = change.describe();
    match change {
        Change::Update { .. } => PlannedAction::new(Verb::Update, resource).detail(what),
        Change::Upgrade { .. } => extras.planned(PlannedAction::new(Verb::Update, resource).detail(what)),
        Change::Delete { .. } => PlannedAction::new(Verb::Delete, resource).detail(what),
        Change::Refuse { .. } => PlannedAction::new(Verb::Refuse, resource).detail(what),
    }
}

async fn observe(cx: &Context) -> anyhow::Result<Observed> {
    let aws = Aws::connect(&cx.config, cx.calls.clone()).await?;
    let id = identity(&aws).await?;
    let prefix = &cx.config.prefix;
    let recorded = cx.state().infra.azs;
    // As `infra` chooses them: recorded, else where the subnets are, else new ones.
    let zones_in_use = match recorded.is_empty() {
        false => recorded,
        true => zones_in_use(&aws, prefix).await?.unwrap_or_default(),
    };
    let zones = if zones_in_use.is_empty() { pick_zones(&aws, &cx.config).await? } else { zones_in_use.clone() };
    let bucket = spec::bucket_name(&cx.config, &id.account);
    let (mut inventory, roles, cluster, nodegroups, repos, bucket) = futures::try_join!(
        inventory::network(&aws, prefix),
        inventory::roles(&aws, prefix),
        inventory::cluster(&aws, prefix),
        inventory::nodegroups_described(&aws, prefix),
        inventory::repositories(&aws, prefix),
        inventory::bucket(&aws, &bucket),
    )?;
    inventory.add(Kind::Role, roles);
    inventory.add(Kind::Repository, repos);
    inventory.add(Kind::Nodegroup, nodegroups);
    inventory.add(Kind::Bucket, bucket);
    if let Some(cluster) = cluster {
        // The provider's ARN follows from the cluster's issuer.
        if let Some(issuer) = cluster.extra.get("oidc_issuer") {
            let arn = format!("arn:{}:iam::{}:oidc-provider/{}", id.partition, id.account, issuer.trim_start_matches("https://"));
            let exists = aws.iam.get_open_id_connect_provider().open_id_connect_provider_arn(&arn).send().await.is_ok();
            inventory.add(Kind::OidcProvider, exists.then(|| Found { component: "oidc-provider".into(), id: arn, ..Found::default() }));
        }
        super::extras::of(&cx.config).observe(&aws, prefix, &id, &mut inventory).await?;
        inventory.add(Kind::Cluster, [cluster]);
    }
    let configured = existing_settings(&cx.config, &id, &inventory);
    let (calendar, _) = versions::calendar(&aws).await;
    let addon_defaults = upgrade_addon_defaults(&cx.config, &aws, &inventory).await;
    Ok(Observed { account: id.account, zones, zones_in_use, inventory, configured, calendar, addon_defaults })
}

/// EKS's default versions of the installed add-ons for each Kubernetes version the configured
/// upgrade passes (none without an upgrade).
async fn upgrade_addon_defaults(config: &Config, aws: &Aws, inventory: &Inventory) -> drift::AddonDefaults {
    let version = |kind: Kind| inventory.of(kind).first().and_then(|f| f.extra.get("version").cloned());
    let (Some(cluster), Some(target)) = (version(Kind::Cluster), &config.cluster.kubernetes_version) else { return Default::default() };
    let nodes =
        eks::nodegroups(config, &config.prefix, inventory.of(Kind::Nodegroup)).current.and_then(|g| g.extra.get("version").cloned());
    let minors: Vec<String> = drift::upgrade_steps(&cluster, nodes.as_deref(), target)
        .into_iter()
        .filter_map(|step| match step {
            drift::UpgradeStep::Addons(v) => Some(v),
            _ => None,
        })
        .collect();
    let addons: Vec<String> = inventory.of(Kind::Addon).iter().map(|a| a.id.clone()).collect();
    if minors.is_empty() || addons.is_empty() {
        return Default::default();
    }
    super::extras::of(config).addon_defaults(aws, &addons, &minors).await
}

/// The settings `infra` would apply to the resources that exist (compared with what the state
/// says was applied, they become "update" lines).
fn existing_settings(config: &Config, id: &Identity, inv: &Inventory) -> Vec<Configured> {
    let p = &config.prefix;
    let mut out = Vec::new();
    if let Some(vpc) = inv.get(Kind::Vpc, "vpc") {
        out.push(network::dns_settings(&vpc.id));
    }
    let bucket = spec::bucket_name(config, &id.account);
    if inv.of(Kind::Bucket).iter().any(|b| b.id == bucket) {
        out.push(storage::bucket_settings(config, &bucket));
    }
    let lifecycle = spec::ecr_lifecycle(config.ecr.keep_images).to_string();
    for image in crate::IMAGES {
        let (component, name) = (format!("ecr-{image}"), format!("{p}/{image}"));
        if inv.of(Kind::Repository).iter().any(|r| r.id == name) {
            out.push(storage::repository_settings(&component, &name, &lifecycle));
        }
    }
    let issuer = inv.get(Kind::Cluster, "cluster").and_then(|c| c.extra.get("oidc_issuer"));
    let provider = issuer.map(|i| format!("arn:{}:iam::{}:oidc-provider/{}", id.partition, id.account, i.trim_start_matches("https://")));
    for role in [spec::CLUSTER_ROLE, spec::NODE_ROLE].iter().chain(&spec::IRSA_ROLES) {
        if !inv.of(Kind::Role).iter().any(|r| r.id == format!("{p}-{}", role.suffix)) {
            continue;
        }
        let oidc = match (role.trust, &provider, issuer) {
            (Trust::Service(_), ..) => None,
            (_, Some(provider), Some(issuer)) => Some((provider.as_str(), issuer.as_str())),
            // Trusts a cluster that does not exist yet: its policies change once it does.
            _ => {
                let what = format!("iam role {p}-{} (trust of the new cluster's OIDC provider)", role.suffix);
                out.push(Configured::new(iam::role_component(role.suffix), what, "the new cluster's"));
                continue;
            }
        };
        out.push(iam::RolePolicies::of(role, p, &id.partition, oidc, &bucket).settings(p, role));
    }
    if let Some(entry) = inv.get(Kind::AccessEntry, "access-entry") {
        out.push(eks::access_settings(&entry.id));
    }
    out
}

/// Every resource `infra` manages: `(kind, component, name)`; `nodegroup` names the nodegroup
/// of the config's shape.
pub fn desired(config: &Config, zones: &[String], account: &str, nodegroup: &str) -> Vec<(Kind, String, String)> {
    let p = &config.prefix;
    let mut out = Vec::new();
    let mut add = |kind: Kind, component: String, name: String| out.push((kind, component, name));
    add(Kind::Bucket, "bucket".into(), spec::bucket_name(config, account));
    add(Kind::Vpc, "vpc".into(), format!("{p}-vpc {}", config.network.vpc_cidr));
    let cidrs = spec::subnet_cidrs(&config.network.vpc_cidr, zones.len()).unwrap_or_default();
    for (zone, (public, private)) in zones.iter().zip(&cidrs) {
        for (is_public, cidr) in [(true, public), (false, private)] {
            let component = network::subnet_component(is_public, zone);
            add(Kind::Subnet, component.clone(), format!("{p}-{component} {cidr}"));
        }
    }
    add(Kind::InternetGateway, "igw".into(), format!("{p}-igw"));
    for zone in spec::nat_zones(config, zones) {
        add(Kind::ElasticIp, format!("eip-nat-{zone}"), format!("{p}-eip-nat-{zone}"));
        add(Kind::NatGateway, format!("nat-{zone}"), format!("{p}-nat-{zone}"));
    }
    add(Kind::RouteTable, "rtb-public".into(), format!("{p}-rtb-public"));
    for zone in zones {
        add(Kind::RouteTable, format!("rtb-private-{zone}"), format!("{p}-rtb-private-{zone}"));
    }
    add(Kind::VpcEndpoint, "vpce-s3".into(), format!("{p}-vpce-s3 (com.amazonaws.{}.s3)", config.region));
    for role in [spec::CLUSTER_ROLE, spec::NODE_ROLE].iter().chain(&spec::IRSA_ROLES) {
        add(Kind::Role, iam::role_component(role.suffix), format!("{p}-{}", role.suffix));
    }
    for image in crate::IMAGES {
        add(Kind::Repository, format!("ecr-{image}"), format!("{p}/{image}"));
    }
    add(Kind::Cluster, "cluster".into(), p.clone());
    add(Kind::OidcProvider, "oidc-provider".into(), format!("for cluster {p}"));
    for (addon, _) in spec::ADDONS {
        add(Kind::Addon, format!("addon-{addon}"), addon.to_string());
    }
    add(Kind::AccessEntry, "access-entry".into(), "cluster admin for the caller".into());
    add(Kind::Nodegroup, "nodegroup".into(), nodegroup.to_string());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn desired_resources_per_nat_mode() {
        let zones: Vec<String> = ["us-east-1a", "us-east-1b", "us-east-1c"].map(String::from).to_vec();
        let single = desired(&Config::default(), &zones, "123456789012", "neon-nodes");
        let count = |list: &[(Kind, String, String)], kind| list.iter().filter(|(k, _, _)| *k == kind).count();
        assert_eq!(count(&single, Kind::Subnet), 6);
        assert_eq!(count(&single, Kind::NatGateway), 1);
        assert_eq!(count(&single, Kind::RouteTable), 4);
        assert_eq!(count(&single, Kind::Role), 6);
        assert_eq!(count(&single, Kind::Repository), 7);
        let mut config = Config::default();
        config.network.nat_gateways = crate::config::NatGateways::PerAz;
        let per_az = desired(&config, &zones, "123456789012", "neon-nodes");
        assert_eq!(count(&per_az, Kind::NatGateway), 3);
        assert_eq!(count(&per_az, Kind::ElasticIp), 3);
        assert!(single.iter().any(|(_, _, name)| name == "neon-123456789012-us-east-1"));
    }
}
