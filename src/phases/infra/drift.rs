//! How an existing deployment differs from the config: the changes `infra` makes in place and
//! the differences it refuses. `infra --plan` lists exactly these (beside creates and adopts),
//! and `infra` computes the same list from the same lookups before its first mutating call:
//! a refusal stops it there, so nothing is silently adopted and nothing is half-changed.

use super::versions::minor_number;
use super::{eks, network, spec};
use crate::aws::inventory::{Found, Inventory, Kind};
use crate::config::Config;
use crate::state::InfraState;

/// One difference between what exists and what the config asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Changed in place by `infra`, in this order.
    Update { resource: String, field: String, before: String, after: String },
    /// One step of a Kubernetes version upgrade (EKS's own update calls).
    Upgrade { resource: String, field: String, before: String, after: String },
    /// Deleted by `infra`: the config no longer asks for it; `why` says what replaces it.
    Delete { resource: String, why: String },
    /// Cannot change in place: `infra` refuses before any mutating call.
    Refuse { resource: String, field: String, before: String, after: String, way_out: String },
}

impl Change {
    fn update(resource: impl Into<String>, field: impl Into<String>, before: impl Into<String>, after: impl Into<String>) -> Self {
        Change::Update { resource: resource.into(), field: field.into(), before: before.into(), after: after.into() }
    }

    pub fn is_refusal(&self) -> bool {
        matches!(self, Change::Refuse { .. })
    }

    /// `resource: field: before → after`, as a refusal's error and the tests list it.
    pub fn line(&self) -> String {
        let (resource, what) = self.describe();
        format!("{resource}: {what}")
    }

    /// `resource`, and `field: before → after` (with the way out of a refusal).
    pub fn describe(&self) -> (String, String) {
        match self {
            Change::Update { resource, field, before, after } | Change::Upgrade { resource, field, before, after } => {
                (resource.clone(), format!("{field}: {before} → {after}"))
            }
            Change::Delete { resource, why } => (resource.clone(), why.clone()),
            Change::Refuse { resource, field, before, after, way_out } => {
                (resource.clone(), format!("cannot change in place: {field}: {before} → {after}. {way_out}"))
            }
        }
    }
}

/// The error `infra` stops with when the config asks for changes it cannot make in place.
pub fn refusal_error(changes: &[Change]) -> Option<anyhow::Error> {
    let refused: Vec<String> = changes.iter().filter(|c| c.is_refusal()).map(Change::line).collect();
    (!refused.is_empty()).then(|| {
        anyhow::anyhow!(
            "infra changed nothing: the config asks for {} change(s) AWS cannot make in place:\n  {}",
            refused.len(),
            refused.join("\n  ")
        )
    })
}

/// Settings `infra` applies to a resource after creating or adopting it (attributes, policies),
/// fingerprinted in the state so a converged run applies nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Configured {
    pub component: String,
    /// What the settings are of, as the plan and progress name it.
    pub what: String,
    pub settings: String,
}

impl Configured {
    pub fn new(component: impl Into<String>, what: impl Into<String>, settings: impl Into<String>) -> Self {
        Self { component: component.into(), what: what.into(), settings: settings.into() }
    }

    pub fn fingerprint(&self) -> String {
        spec::fingerprint(&self.settings)
    }

    pub fn is_applied(&self, recorded: &InfraState) -> bool {
        recorded.resources.get(&self.component).and_then(|r| r.applied.as_deref()) == Some(self.fingerprint().as_str())
    }
}

/// One step of a Kubernetes upgrade, in AWS's order for each minor version: the control plane,
/// then the add-ons, then the nodegroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpgradeStep {
    Cluster(String),
    Addons(String),
    Nodegroup(String),
}

/// The steps from the cluster's and the nodegroup's versions to `target`: nodes behind the
/// control plane (a run killed half-way) catch up first, in one step (new nodes can start at any
/// version the control plane serves, and every step replaces them all); then one minor version
/// at a time. Steps already done are left out, so a resume goes on from the live versions.
pub fn upgrade_steps(cluster: &str, nodegroup: Option<&str>, target: &str) -> Vec<UpgradeStep> {
    let (Some(cluster_minor), Some(target_minor)) = (minor_number(cluster), minor_number(target)) else { return vec![] };
    let nodes_minor = nodegroup.and_then(minor_number);
    let major = target.split('.').next().unwrap_or("1");
    let mut steps = Vec::new();
    if nodes_minor.is_some_and(|nodes| nodes < cluster_minor) {
        // The add-ons may not have been reached either; checking them changes nothing if they were.
        steps.push(UpgradeStep::Addons(cluster.to_string()));
        steps.push(UpgradeStep::Nodegroup(cluster.to_string()));
    }
    for minor in cluster_minor + 1..=target_minor {
        let version = format!("{major}.{minor}");
        steps.push(UpgradeStep::Cluster(version.clone()));
        steps.push(UpgradeStep::Addons(version.clone()));
        if nodes_minor.is_some() {
            steps.push(UpgradeStep::Nodegroup(version));
        }
    }
    steps
}

/// What was found, as `infra` and its plan look it up.
pub struct Live<'a> {
    pub inventory: &'a Inventory,
    /// The zones the network already lives in (none for a new deployment).
    pub zones: &'a [String],
    /// The settings of resources that exist, and what the state says was applied to them.
    pub configured: &'a [Configured],
    pub recorded: &'a InfraState,
    /// EKS's default version of each installed add-on for each Kubernetes version an upgrade
    /// passes; empty when EKS was not asked (then the plan names the add-on step as a whole).
    pub addon_defaults: &'a AddonDefaults,
}

/// `(Kubernetes version, add-on) → EKS's default add-on version for it`.
pub type AddonDefaults = std::collections::BTreeMap<(String, String), String>;

/// Every difference between `live` and `config`, in the order `infra` acts on them.
pub fn changes(config: &Config, live: &Live<'_>) -> Vec<Change> {
    let mut out = Vec::new();
    let inv = live.inventory;
    let p = &config.prefix;

    if let Some(vpc) = inv.get(Kind::Vpc, "vpc") {
        let cidr = vpc.extra.get("cidr").cloned().unwrap_or_default();
        if !cidr.is_empty() && cidr != config.network.vpc_cidr {
            out.push(Change::Refuse {
                resource: format!("vpc {p}-vpc ({})", vpc.id),
                field: "network.vpc_cidr".into(),
                before: cidr.clone(),
                after: config.network.vpc_cidr.clone(),
                way_out: format!(
                    "A VPC's address range is fixed when it is created, and every subnet, node and pod address comes from it. \
                     Set network.vpc_cidr back to {cidr}, or remove the deployment (`neonctl-aws teardown`) and run infra again"
                ),
            });
        }
    }
    if !live.zones.is_empty() && live.zones.len() != config.network.az_count as usize {
        out.push(Change::Refuse {
            resource: format!("network of {p}"),
            field: "network.az_count".into(),
            before: format!("{} ({})", live.zones.len(), live.zones.join(", ")),
            after: config.network.az_count.to_string(),
            way_out: format!(
                "The subnets, NAT gateways and the zone-pinned pageservers and safekeepers (with their volumes) live in these \
                 zones. Set network.az_count back to {}, or remove the deployment (`neonctl-aws teardown`) and run infra again",
                live.zones.len()
            ),
        });
    }
    network_updates(config, live, &mut out);
    for configured in live.configured.iter().filter(|c| !c.is_applied(live.recorded)) {
        let before = match live.recorded.resources.get(&configured.component).and_then(|r| r.applied.as_ref()) {
            Some(_) => "applied with other values",
            None => "not recorded as applied in this state",
        };
        out.push(Change::update(&configured.what, "settings", before, "as configured"));
    }

    let cluster = inv.get(Kind::Cluster, "cluster");
    let groups = eks::nodegroups(config, p, inv.of(Kind::Nodegroup));
    nodegroup_changes(config, &groups, &mut out);
    if let (Some(cluster), Some(target)) = (cluster, &config.cluster.kubernetes_version) {
        let current = cluster.extra.get("version").cloned().unwrap_or_default();
        let name = format!("eks cluster {}", cluster.id);
        match (minor_number(&current), minor_number(target)) {
            (Some(now), Some(wanted)) if wanted < now => out.push(Change::Refuse {
                resource: name,
                field: "cluster.kubernetes_version".into(),
                before: current.clone(),
                after: target.clone(),
                way_out: format!("EKS cannot downgrade a cluster. Set cluster.kubernetes_version to {current} or newer"),
            }),
            (Some(_), Some(_)) => {
                let group_name = groups.name.clone();
                let nodes = groups.current.and_then(|g| g.extra.get("version")).map(String::as_str);
                let mut cluster_at = current.clone();
                let mut nodes_at = nodes.unwrap_or_default().to_string();
                // Each installed add-on's version as the steps move it.
                let mut addons_at: Vec<(String, String)> =
                    inv.of(Kind::Addon).iter().filter_map(|a| Some((a.id.clone(), a.extra.get("version")?.clone()))).collect();
                let upgrade =
                    |resource: String, field: String, before: String, after: String| Change::Upgrade { resource, field, before, after };
                for step in upgrade_steps(&current, nodes, target) {
                    match step {
                        UpgradeStep::Cluster(v) => {
                            let before = std::mem::replace(&mut cluster_at, v.clone());
                            out.push(upgrade(name.clone(), "Kubernetes version".into(), before, v));
                        }
                        UpgradeStep::Addons(v) if live.addon_defaults.is_empty() || addons_at.is_empty() => out.push(upgrade(
                            format!("eks addons of {}", cluster.id),
                            "versions".into(),
                            "as installed".into(),
                            format!("EKS's default for {v} where they differ"),
                        )),
                        // Exactly what `eks::upgrade_addon` does: an add-on not at EKS's default.
                        UpgradeStep::Addons(v) => {
                            for (addon, at) in &mut addons_at {
                                let Some(default) = live.addon_defaults.get(&(v.clone(), addon.clone())) else { continue };
                                if default != at {
                                    let before = std::mem::replace(at, default.clone());
                                    out.push(upgrade(
                                        format!("eks addon {addon}"),
                                        format!("version (for Kubernetes {v})"),
                                        before,
                                        default.clone(),
                                    ));
                                }
                            }
                        }
                        UpgradeStep::Nodegroup(v) => {
                            let before = std::mem::replace(&mut nodes_at, v.clone());
                            let field = "Kubernetes version (nodes replaced one at a time)".to_string();
                            out.push(upgrade(format!("eks nodegroup {group_name}"), field, before, v));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// The node count changes in place; a new shape (instance type, disk, AMI) is a new nodegroup
/// (a create line from the plan's resource list) and the old one's deletion once it is drained.
fn nodegroup_changes(config: &Config, groups: &eks::Nodegroups<'_>, out: &mut Vec<Change>) {
    let c = &config.cluster;
    if let Some(current) = groups.current {
        let wanted = format!("{0}/{0}/{0}", c.node_count);
        if let Some(before) = current.extra.get("nodes").filter(|n| **n != wanted) {
            out.push(Change::update(format!("eks nodegroup {}", current.id), "nodes (min/max/desired)", before, wanted));
        }
    }
    for old in &groups.replaced {
        let differences: Vec<String> = eks::node_shape(config)
            .iter()
            .filter_map(|(key, field, wanted)| {
                let before = old.extra.get(*key).filter(|b| *b != wanted)?;
                Some(format!("{field}: {before} → {wanted}"))
            })
            .collect();
        let shape = if differences.is_empty() { "being deleted".to_string() } else { differences.join(", ") };
        out.push(Change::Delete {
            resource: format!("eks nodegroup {}", old.id),
            why: format!(
                "replaced by {} ({shape}): once that one runs, its nodes are cordoned and drained, pods evicted within their \
                 PodDisruptionBudgets (volumes reattach in their zones)",
                groups.name
            ),
        });
    }
}

/// The attribute, attachment, route and association fixes `network::converge` makes to
/// resources that exist.
fn network_updates(config: &Config, live: &Live<'_>, out: &mut Vec<Change>) {
    let inv = live.inventory;
    let Some(vpc) = inv.get(Kind::Vpc, "vpc") else { return };
    let p = &config.prefix;
    let subnet = |public: bool, zone: &str| inv.get(Kind::Subnet, &network::subnet_component(public, zone));
    for zone in live.zones {
        if let Some(s) = subnet(true, zone).filter(|s| s.extra.get("map_public_ip").map(String::as_str) != Some("true")) {
            out.push(Change::update(
                format!("subnet {p}-{} ({})", network::subnet_component(true, zone), s.id),
                "map public IP on launch",
                "false",
                "true",
            ));
        }
    }
    let igw = inv.get(Kind::InternetGateway, "igw");
    if let Some(g) = igw.filter(|g| !g.has_link(&vpc.id)) {
        out.push(Change::update(format!("internet gateway {p}-igw ({})", g.id), "attached to", "nothing", vpc.id.clone()));
    }
    let nat_of = |zone: &str| {
        let nat_zone = spec::nat_for(config, live.zones, zone);
        inv.get(Kind::NatGateway, &format!("nat-{nat_zone}"))
            .filter(|n| n.state.as_deref() != Some("deleting"))
            .map(|n| n.id.clone())
            .unwrap_or_else(|| format!("the new nat gateway in {nat_zone}"))
    };
    let mut tables: Vec<(String, String, Vec<String>)> = Vec::new();
    let ids = |public: bool, zones: &[String]| zones.iter().filter_map(|z| subnet(public, z).map(|s| s.id.clone())).collect::<Vec<_>>();
    if let Some(g) = igw {
        tables.push(("rtb-public".into(), g.id.clone(), ids(true, live.zones)));
    }
    for zone in live.zones {
        tables.push((format!("rtb-private-{zone}"), nat_of(zone), ids(false, std::slice::from_ref(zone))));
    }
    let mut table_ids = Vec::new();
    for (component, target, subnets) in &tables {
        let Some(table) = inv.get(Kind::RouteTable, component) else { continue };
        table_ids.push(table.id.clone());
        let resource = format!("route table {p}-{component} ({})", table.id);
        let current = table.extra.get("route:0.0.0.0/0");
        if current != Some(target) {
            out.push(Change::update(&resource, "route 0.0.0.0/0", current.cloned().unwrap_or_else(|| "none".into()), target.clone()));
        }
        for subnet in subnets.iter().filter(|s| !table.has_link(s)) {
            out.push(Change::update(&resource, "associated subnet", "none", subnet.clone()));
        }
    }
    if let Some(endpoint) = inv.get(Kind::VpcEndpoint, "vpce-s3") {
        for table in table_ids.iter().filter(|t| !endpoint.has_link(t)) {
            out.push(Change::update(format!("vpc endpoint {p}-vpce-s3 ({})", endpoint.id), "route table", "none", table.clone()));
        }
    }
    // Last, once no route uses them.
    for (nat, eip) in unwanted_nats(config, live.zones, inv) {
        let zone = nat.component.trim_start_matches("nat-");
        let why = format!("network.nat_gateways is single: the private subnets of {zone} route through {} first", nat_of(zone));
        out.push(Change::Delete { resource: format!("nat gateway {p}-{} ({})", nat.component, nat.id), why });
        if let Some(eip) = eip {
            out.push(Change::Delete {
                resource: format!("elastic ip {p}-{} ({})", eip.component, eip.id),
                why: format!("the address of {}, released once it is deleted", nat.id),
            });
        }
    }
}

/// The NAT gateways (with their addresses) in zones the config no longer puts one in: after a
/// change from `per_az` to `single`.
pub fn unwanted_nats<'a>(config: &Config, zones: &[String], inv: &'a Inventory) -> Vec<(&'a Found, Option<&'a Found>)> {
    let wanted = spec::nat_zones(config, zones);
    inv.of(Kind::NatGateway)
        .iter()
        .filter(|nat| nat.state.as_deref() != Some("deleting"))
        .filter(|nat| {
            nat.component.strip_prefix("nat-").is_some_and(|zone| zones.iter().any(|z| z == zone) && !wanted.iter().any(|w| w == zone))
        })
        .map(|nat| (nat, inv.get(Kind::ElasticIp, &format!("eip-{}", nat.component))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrades_go_one_minor_at_a_time_in_aws_order_and_resume_from_the_live_versions() {
        use UpgradeStep::*;
        let v = |s: &str| s.to_string();
        assert_eq!(
            upgrade_steps("1.33", Some("1.33"), "1.35"),
            [Cluster(v("1.34")), Addons(v("1.34")), Nodegroup(v("1.34")), Cluster(v("1.35")), Addons(v("1.35")), Nodegroup(v("1.35"))]
        );
        // Killed after the control plane reached 1.34: the nodes follow, then 1.35.
        assert_eq!(
            upgrade_steps("1.34", Some("1.33"), "1.35"),
            [Addons(v("1.34")), Nodegroup(v("1.34")), Cluster(v("1.35")), Addons(v("1.35")), Nodegroup(v("1.35"))]
        );
        assert_eq!(upgrade_steps("1.35", Some("1.35"), "1.35"), []);
        // Nodes far behind catch up in one step, not one per minor version.
        assert_eq!(upgrade_steps("1.35", Some("1.31"), "1.35"), [Addons(v("1.35")), Nodegroup(v("1.35"))]);
        assert_eq!(upgrade_steps("1.35", None, "1.36"), [Cluster(v("1.36")), Addons(v("1.36"))]);
    }

    /// The changes against `inv` with nothing else known (no settings, no add-on defaults).
    fn changes_in(config: &Config, inv: &Inventory) -> Vec<Change> {
        let (recorded, defaults) = (InfraState::default(), AddonDefaults::new());
        changes(config, &Live { inventory: inv, zones: &zones(), configured: &[], recorded: &recorded, addon_defaults: &defaults })
    }

    /// `resource: field: before → after`, one per change.
    fn lines(changes: &[Change]) -> Vec<String> {
        changes.iter().map(Change::line).collect()
    }

    fn live_deployment() -> Inventory {
        let found = |component: &str, id: &str, extra: &[(&str, &str)]| {
            let mut f = Found::new(Some(component), Some(id));
            f.extra = extra.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            f
        };
        let mut inv = Inventory::default();
        inv.add(Kind::Vpc, [found("vpc", "vpc-1", &[("cidr", "10.42.0.0/16")])]);
        inv.add(Kind::Cluster, [found("cluster", "neon", &[("version", "1.33")])]);
        inv.add(
            Kind::Nodegroup,
            [found(
                "nodegroup",
                "neon-nodes",
                &[
                    ("instance_types", "m6i.xlarge"),
                    ("disk_size", "50"),
                    ("ami_type", "AL2023_x86_64_STANDARD"),
                    ("nodes", "3/3/3"),
                    ("version", "1.33"),
                ],
            )],
        );
        inv
    }

    fn config() -> Config {
        let mut config = Config::default();
        config.cluster.node_instance_type = "m6i.xlarge".into();
        config.cluster.node_disk_gib = 50;
        config.cluster.node_count = 3;
        config.network.az_count = 3;
        config
    }

    fn zones() -> Vec<String> {
        ["us-east-1a", "us-east-1b", "us-east-1c"].map(String::from).to_vec()
    }

    /// A new shape rolls the nodes: a new nodegroup named after its shape, the old one deleted
    /// once drained; the node count of the old one is not touched.
    #[test]
    fn a_new_node_shape_replaces_the_nodegroup() {
        let inv = live_deployment();
        let mut config = config();
        config.cluster.node_instance_type = "m7g.xlarge".into();
        config.cluster.node_count = 4;
        let groups = eks::nodegroups(&config, "neon", inv.of(Kind::Nodegroup));
        assert!(groups.current.is_none());
        assert!(groups.name.starts_with("neon-nodes-") && groups.name.len() == "neon-nodes-".len() + 6, "{}", groups.name);
        let found = changes_in(&config, &inv);
        let described: Vec<String> = lines(&found).iter().map(|l| l.replacen(": ", " ", 1)).collect();
        assert_eq!(described.len(), 1, "{described:#?}");
        assert!(described[0].starts_with(&format!("eks nodegroup neon-nodes replaced by {} (cluster.node_instance_type: m6i.xlarge → m7g.xlarge, AMI type (from cluster.node_instance_type): AL2023_x86_64_STANDARD → AL2023_ARM_64_STANDARD)", groups.name)), "{described:#?}");
        // Once the new one exists, it is the current one and the old one is still to go.
        let mut both = live_deployment();
        let mut new = both.of(Kind::Nodegroup)[0].clone();
        new.id = groups.name.clone();
        new.extra.insert("instance_types".into(), "m7g.xlarge".into());
        new.extra.insert("ami_type".into(), "AL2023_ARM_64_STANDARD".into());
        new.extra.insert("nodes".into(), "4/4/4".into());
        both.add(Kind::Nodegroup, [new]);
        let groups = eks::nodegroups(&config, "neon", both.of(Kind::Nodegroup));
        assert_eq!((groups.current.map(|g| g.id.as_str()), groups.replaced.len()), (Some(groups.name.as_str()), 1));
    }

    #[test]
    fn a_converged_deployment_has_no_changes() {
        let inv = live_deployment();
        assert_eq!(changes_in(&config(), &inv), []);
    }

    #[test]
    fn fields_fixed_at_creation_are_refused_with_the_way_out() {
        let inv = live_deployment();
        let mut config = config();
        config.network.vpc_cidr = "10.1.0.0/16".into();
        config.network.az_count = 2;
        config.cluster.kubernetes_version = Some("1.32".into());
        let found = changes_in(&config, &inv);
        let fields: Vec<String> = found
            .iter()
            .map(|c| match c {
                Change::Refuse { field, .. } => field.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(fields, ["network.vpc_cidr", "network.az_count", "cluster.kubernetes_version"]);
        let error = refusal_error(&found).unwrap().to_string();
        assert!(error.contains("Set network.vpc_cidr back to 10.42.0.0/16"), "{error}");
        assert!(error.contains("EKS cannot downgrade"), "{error}");
    }

    #[test]
    fn node_count_and_version_are_updates_in_order() {
        let inv = live_deployment();
        let mut config = config();
        config.cluster.node_count = 5;
        config.cluster.kubernetes_version = Some("1.35".into());
        let described = lines(&changes_in(&config, &inv));
        assert_eq!(
            described,
            [
                "eks nodegroup neon-nodes: nodes (min/max/desired): 3/3/3 → 5/5/5",
                "eks cluster neon: Kubernetes version: 1.33 → 1.34",
                "eks addons of neon: versions: as installed → EKS's default for 1.34 where they differ",
                "eks nodegroup neon-nodes: Kubernetes version (nodes replaced one at a time): 1.33 → 1.34",
                "eks cluster neon: Kubernetes version: 1.34 → 1.35",
                "eks addons of neon: versions: as installed → EKS's default for 1.35 where they differ",
                "eks nodegroup neon-nodes: Kubernetes version (nodes replaced one at a time): 1.34 → 1.35",
            ]
        );
    }

    /// With EKS's defaults known, the plan names each add-on that moves, as apply moves it.
    #[test]
    fn known_addon_defaults_become_one_line_per_addon_that_moves() {
        let mut inv = live_deployment();
        let addon = |name: &str, version: &str| {
            let mut f = Found::new(Some(&format!("addon-{name}")), Some(name));
            f.extra.insert("version".into(), version.into());
            f
        };
        inv.add(Kind::Addon, [addon("vpc-cni", "v1.19.5"), addon("coredns", "v1.11.4")]);
        let mut config = config();
        config.cluster.kubernetes_version = Some("1.34".into());
        let defaults: AddonDefaults = [(("1.34", "vpc-cni"), "v1.20.0"), (("1.34", "coredns"), "v1.11.4")]
            .map(|((k, a), v)| ((k.to_string(), a.to_string()), v.to_string()))
            .into();
        let live = Live { inventory: &inv, zones: &zones(), configured: &[], recorded: &InfraState::default(), addon_defaults: &defaults };
        let described = lines(&changes(&config, &live));
        assert_eq!(
            described,
            [
                "eks cluster neon: Kubernetes version: 1.33 → 1.34",
                "eks addon vpc-cni: version (for Kubernetes 1.34): v1.19.5 → v1.20.0",
                "eks nodegroup neon-nodes: Kubernetes version (nodes replaced one at a time): 1.33 → 1.34",
            ],
            "coredns is at the default already: no line, and apply makes no call for it"
        );
    }
}
