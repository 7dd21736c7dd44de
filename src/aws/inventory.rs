//! Everything one prefix owns, found by tag (EC2), by path (IAM roles) or by its deterministic
//! name (EKS, S3, ECR). `infra` adopts from it, `teardown` deletes from it, `--plan` reads it.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Aws;
use super::call::{CallError, call, found};
use super::tags::{COMPONENT_TAG, ec2_filter, ec2_value, is_ours};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Cluster,
    Nodegroup,
    Addon,
    AccessEntry,
    Role,
    OidcProvider,
    Bucket,
    Repository,
    Vpc,
    Subnet,
    InternetGateway,
    ElasticIp,
    NatGateway,
    RouteTable,
    VpcEndpoint,
    SecurityGroup,
    NetworkInterface,
}

impl Kind {
    /// The create call takes a client token, persisted before the call.
    pub fn takes_token(self) -> bool {
        matches!(
            self,
            Kind::Cluster | Kind::Nodegroup | Kind::Addon | Kind::AccessEntry | Kind::NatGateway | Kind::RouteTable | Kind::VpcEndpoint
        )
    }

    pub fn label(self) -> &'static str {
        match self {
            Kind::Cluster => "eks cluster",
            Kind::Nodegroup => "eks nodegroup",
            Kind::Addon => "eks addon",
            Kind::AccessEntry => "eks access entry",
            Kind::Role => "iam role",
            Kind::OidcProvider => "iam oidc provider",
            Kind::Bucket => "s3 bucket",
            Kind::Repository => "ecr repository",
            Kind::Vpc => "vpc",
            Kind::Subnet => "subnet",
            Kind::InternetGateway => "internet gateway",
            Kind::ElasticIp => "elastic ip",
            Kind::NatGateway => "nat gateway",
            Kind::RouteTable => "route table",
            Kind::VpcEndpoint => "vpc endpoint",
            Kind::SecurityGroup => "security group",
            Kind::NetworkInterface => "network interface",
        }
    }
}

/// One existing resource.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Found {
    pub component: String,
    /// The id (EC2), name (EKS, IAM role, S3, ECR) or ARN (OIDC provider).
    pub id: String,
    /// Lifecycle state where the API has one (`available`, `ACTIVE`, `pending`, …).
    pub state: Option<String>,
    /// Associations: internet gateway → VPCs, route table → (subnet, association id), VPC
    /// endpoint → route tables, elastic IP → its association.
    pub links: Vec<(String, String)>,
    /// Anything else callers need: `az`, `map_public_ip`, `arn`, `endpoint`, `oidc_issuer`, route
    /// destinations (`route:0.0.0.0/0`), …
    pub extra: BTreeMap<String, String>,
}

impl Found {
    pub fn new(component: Option<&str>, id: Option<&str>) -> Self {
        Self { component: component.unwrap_or_default().to_string(), id: id.unwrap_or_default().to_string(), ..Self::default() }
    }
    pub fn has_link(&self, target: &str) -> bool {
        self.links.iter().any(|(t, _)| t == target)
    }
}

/// Resources by kind.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub items: BTreeMap<Kind, Vec<Found>>,
}

impl Inventory {
    pub fn add(&mut self, kind: Kind, items: impl IntoIterator<Item = Found>) {
        self.items.entry(kind).or_default().extend(items);
    }
    pub fn of(&self, kind: Kind) -> &[Found] {
        self.items.get(&kind).map(Vec::as_slice).unwrap_or_default()
    }
    /// The resource of `kind` tagged with `component` (the first, if a bug made two).
    pub fn get(&self, kind: Kind, component: &str) -> Option<&Found> {
        self.of(kind).iter().find(|f| f.component == component)
    }
    pub fn is_empty(&self) -> bool {
        self.items.values().all(Vec::is_empty)
    }
    /// `(kind, id)` of every resource, for plans and leftover reports.
    pub fn list(&self) -> Vec<(Kind, &Found)> {
        self.items.iter().flat_map(|(k, v)| v.iter().map(move |f| (*k, f))).collect()
    }
}

/// The IAM path of every role of a prefix, so that one ListRoles finds them all.
pub fn role_path(prefix: &str) -> String {
    format!("/neonctl-aws/{prefix}/")
}

/// Every page of an EC2 Describe call, collected; errors name the operation and `what`.
macro_rules! all_pages {
    ($request:expr, $operation:literal, $what:expr) => {
        $request.into_paginator().items().send().try_collect().await.map_err(call($operation, $what))
    };
}

/// The EC2 network of `prefix`: VPC, subnets, gateways, addresses, route tables, endpoints.
/// NAT gateways that are deleted (or failed) are left out.
pub async fn network(aws: &Aws, prefix: &str) -> Result<Inventory, CallError> {
    let ec2 = &aws.ec2;
    let filter = || ec2_filter(prefix);
    let component = |tags: &[aws_sdk_ec2::types::Tag]| ec2_value(tags, COMPONENT_TAG).map(str::to_string);
    let what = format!("tagged {}={prefix}", super::tags::CLUSTER_TAG);
    let (vpcs, subnets, igws, addresses, nats, tables, endpoints) = futures::try_join!(
        async { all_pages!(ec2.describe_vpcs().filters(filter()), "DescribeVpcs", &what) },
        async { all_pages!(ec2.describe_subnets().filters(filter()), "DescribeSubnets", &what) },
        async { all_pages!(ec2.describe_internet_gateways().filters(filter()), "DescribeInternetGateways", &what) },
        async { ec2.describe_addresses().filters(filter()).send().await.map_err(call("DescribeAddresses", &what)) },
        async { all_pages!(ec2.describe_nat_gateways().filter(filter()), "DescribeNatGateways", &what) },
        async { all_pages!(ec2.describe_route_tables().filters(filter()), "DescribeRouteTables", &what) },
        async { all_pages!(ec2.describe_vpc_endpoints().filters(filter()), "DescribeVpcEndpoints", &what) },
    )?;
    let mut inv = Inventory::default();
    inv.add(
        Kind::Vpc,
        vpcs.iter().map(|v| {
            let mut f = Found::new(component(v.tags()).as_deref(), v.vpc_id());
            f.extra.insert("cidr".into(), v.cidr_block().unwrap_or_default().into());
            f
        }),
    );
    inv.add(
        Kind::Subnet,
        subnets.iter().map(|s| {
            let mut f = Found::new(component(s.tags()).as_deref(), s.subnet_id());
            f.extra.insert("az".into(), s.availability_zone().unwrap_or_default().into());
            f.extra.insert("map_public_ip".into(), s.map_public_ip_on_launch().unwrap_or(false).to_string());
            f
        }),
    );
    inv.add(
        Kind::InternetGateway,
        igws.iter().map(|g| {
            let mut f = Found::new(component(g.tags()).as_deref(), g.internet_gateway_id());
            f.links = g.attachments().iter().filter_map(|a| a.vpc_id()).map(|v| (v.to_string(), String::new())).collect();
            f
        }),
    );
    inv.add(
        Kind::ElasticIp,
        addresses.addresses().iter().map(|a| {
            let mut f = Found::new(component(a.tags()).as_deref(), a.allocation_id());
            if let Some(assoc) = a.association_id() {
                f.links.push((a.network_interface_id().unwrap_or_default().to_string(), assoc.to_string()));
            }
            f
        }),
    );
    use aws_sdk_ec2::types::NatGatewayState as Nat;
    inv.add(
        Kind::NatGateway,
        nats.iter().filter(|n| !matches!(n.state(), Some(Nat::Deleted | Nat::Failed))).map(|n| {
            let mut f = Found::new(component(n.tags()).as_deref(), n.nat_gateway_id());
            f.state = n.state().map(|s| s.as_str().to_string());
            f
        }),
    );
    inv.add(
        Kind::RouteTable,
        tables.iter().map(|t| {
            let mut f = Found::new(component(t.tags()).as_deref(), t.route_table_id());
            f.links = t
                .associations()
                .iter()
                .filter(|a| !a.main().unwrap_or(false))
                .map(|a| (a.subnet_id().unwrap_or_default().to_string(), a.route_table_association_id().unwrap_or_default().to_string()))
                .collect();
            for route in t.routes() {
                if let Some(dest) = route.destination_cidr_block() {
                    let target = route.nat_gateway_id().or(route.gateway_id()).unwrap_or_default();
                    f.extra.insert(format!("route:{dest}"), target.to_string());
                }
            }
            f
        }),
    );
    inv.add(
        Kind::VpcEndpoint,
        endpoints.iter().filter(|e| !matches!(e.state().map(|s| s.as_str()), Some("deleted" | "Deleted"))).map(|e| {
            let mut f = Found::new(component(e.tags()).as_deref(), e.vpc_endpoint_id());
            f.links = e.route_table_ids().iter().map(|r| (r.clone(), String::new())).collect();
            f
        }),
    );
    Ok(inv)
}

/// The roles under the prefix's IAM path.
pub async fn roles(aws: &Aws, prefix: &str) -> Result<Vec<Found>, CallError> {
    let path = role_path(prefix);
    let roles: Vec<_> = aws
        .iam
        .list_roles()
        .path_prefix(&path)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(call("ListRoles", format!("under path {path}")))?;
    Ok(roles
        .iter()
        .map(|r| {
            let component = r.role_name().strip_prefix(&format!("{prefix}-")).unwrap_or(r.role_name());
            let mut f = Found::new(Some(component), Some(r.role_name()));
            f.extra.insert("arn".into(), r.arn().to_string());
            f
        })
        .collect())
}

/// The error code of a resource that has our name but not our tag.
pub const NOT_OURS: &str = "neonctl-aws.NotOurs";

/// The EKS cluster named `prefix`, if it exists and carries this prefix's tag; a cluster of that
/// name without the tag is an error (never adopted, never deleted).
pub async fn cluster(aws: &Aws, prefix: &str) -> Result<Option<Found>, CallError> {
    let Some(out) = found(aws.eks.describe_cluster().name(prefix).send().await.map_err(call("DescribeCluster", prefix)))? else {
        return Ok(None);
    };
    let Some(c) = out.cluster() else { return Ok(None) };
    let tags = c.tags().map(|t| t.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect::<Vec<_>>()).unwrap_or_default();
    if !is_ours(tags.into_iter(), prefix) {
        return Err(CallError {
            operation: "DescribeCluster",
            resource: prefix.to_string(),
            code: Some(NOT_OURS.to_string()),
            status: Some(200),
            detail: format!(
                "an EKS cluster named `{prefix}` exists but is not tagged {}={prefix}; neonctl-aws will neither adopt nor \
                 delete it. Choose another prefix (--prefix)",
                super::tags::CLUSTER_TAG
            ),
        });
    }
    let mut f = Found::new(Some("cluster"), c.name());
    f.state = c.status().map(|s| s.as_str().to_string());
    let mut put = |k: &str, v: Option<&str>| {
        if let Some(v) = v {
            f.extra.insert(k.to_string(), v.to_string());
        }
    };
    put("arn", c.arn());
    put("endpoint", c.endpoint());
    put("certificate_authority", c.certificate_authority().and_then(|ca| ca.data()));
    put("oidc_issuer", c.identity().and_then(|i| i.oidc()).and_then(|o| o.issuer()));
    put("version", c.version());
    Ok(Some(f))
}

/// The nodegroups of the cluster `prefix`.
pub async fn nodegroups(aws: &Aws, prefix: &str) -> Result<Vec<Found>, CallError> {
    let names: Vec<String> = found(
        aws.eks
            .list_nodegroups()
            .cluster_name(prefix)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(call("ListNodegroups", prefix)),
    )?
    .unwrap_or_default();
    Ok(names.iter().map(|n| Found::new(Some("nodegroup"), Some(n))).collect())
}

/// The nodegroup `name` of the cluster `prefix` with what a config change can differ in:
/// `instance_types`, `disk_size`, `ami_type`, `nodes` (min/max/desired), `version`.
pub async fn nodegroup(aws: &Aws, prefix: &str, name: &str) -> Result<Option<Found>, CallError> {
    let described = found(
        aws.eks.describe_nodegroup().cluster_name(prefix).nodegroup_name(name).send().await.map_err(call("DescribeNodegroup", name)),
    )?;
    let Some(group) = described.as_ref().and_then(|d| d.nodegroup()) else { return Ok(None) };
    let mut f = Found::new(Some("nodegroup"), Some(name));
    f.state = group.status().map(|s| s.as_str().to_string());
    if !group.instance_types().is_empty() {
        f.extra.insert("instance_types".into(), group.instance_types().join(","));
    }
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            f.extra.insert(k.to_string(), v);
        }
    };
    put("disk_size", group.disk_size().map(|d| d.to_string()));
    put("ami_type", group.ami_type().map(|a| a.as_str().to_string()));
    put("version", group.version().map(str::to_string));
    let scaling = group.scaling_config();
    let size = |n: Option<i32>| n.map(|n| n.to_string()).unwrap_or_else(|| "?".into());
    put("nodes", scaling.map(|s| format!("{}/{}/{}", size(s.min_size()), size(s.max_size()), size(s.desired_size()))));
    Ok(Some(f))
}

/// Every nodegroup of the cluster `prefix`, described as [`nodegroup`] describes one.
pub async fn nodegroups_described(aws: &Aws, prefix: &str) -> Result<Vec<Found>, CallError> {
    let names = nodegroups(aws, prefix).await?;
    let described = futures::future::try_join_all(names.iter().map(|n| nodegroup(aws, prefix, &n.id))).await?;
    Ok(described.into_iter().flatten().collect())
}

/// OIDC providers tagged with the prefix (one GetOpenIDConnectProvider per provider in the
/// account: only teardown, which must also find providers of a cluster that is gone, uses it).
pub async fn oidc_providers(aws: &Aws, prefix: &str) -> Result<Vec<Found>, CallError> {
    let list = aws.iam.list_open_id_connect_providers().send().await.map_err(call("ListOpenIDConnectProviders", "in the account"))?;
    let mut out = Vec::new();
    for arn in list.open_id_connect_provider_list().iter().filter_map(|p| p.arn()) {
        let Some(provider) = found(
            aws.iam
                .get_open_id_connect_provider()
                .open_id_connect_provider_arn(arn)
                .send()
                .await
                .map_err(call("GetOpenIDConnectProvider", arn)),
        )?
        else {
            continue;
        };
        if is_ours(provider.tags().iter().map(|t| (t.key(), t.value())), prefix) {
            out.push(Found::new(Some("oidc-provider"), Some(arn)));
        }
    }
    Ok(out)
}

/// The ECR repositories named `<prefix>/…`.
pub async fn repositories(aws: &Aws, prefix: &str) -> Result<Vec<Found>, CallError> {
    let repos: Vec<_> = aws
        .ecr
        .describe_repositories()
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(call("DescribeRepositories", "in the registry"))?;
    let start = format!("{prefix}/");
    Ok(repos
        .iter()
        .filter_map(|r| {
            let name = r.repository_name()?;
            let image = name.strip_prefix(&start)?;
            let mut f = Found::new(Some(&format!("ecr-{image}")), Some(name));
            f.extra.insert("uri".into(), r.repository_uri().unwrap_or_default().to_string());
            f.extra.insert("arn".into(), r.repository_arn().unwrap_or_default().to_string());
            Some(f)
        })
        .collect())
}

/// The bucket `name` if this account owns it. ListBuckets lists only the caller's own buckets,
/// so a name taken by another account is not found here (its CreateBucket then fails).
pub async fn bucket(aws: &Aws, name: &str) -> Result<Option<Found>, CallError> {
    let owned: Vec<aws_sdk_s3::types::Bucket> =
        aws.s3.list_buckets().prefix(name).into_paginator().items().send().try_collect().await.map_err(call("ListBuckets", name))?;
    Ok(owned.iter().any(|b| b.name() == Some(name)).then(|| Found::new(Some("bucket"), Some(name))))
}
