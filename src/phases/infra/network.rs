//! VPC, subnets, internet gateway, NAT gateway(s) with their addresses, route tables and the
//! S3 gateway endpoint.

use std::time::Duration;

use aws_sdk_ec2::types::{AttributeBooleanValue, NatGatewayState, ResourceType, VpcEndpointType};

use super::drift::Configured;
use super::{Run, spec};
use crate::aws::call::{CallError, call, created_id, wait_for};
use crate::aws::inventory::{self, Kind};
use crate::aws::tags::Tags;
use crate::output::Unit;

/// What later steps need from the network.
#[derive(Debug, Clone)]
pub struct Net {
    /// `(zone, subnet id)`
    pub public: Vec<(String, String)>,
    pub private: Vec<(String, String)>,
}

/// DNS support and host names, which EKS nodes need.
pub fn dns_settings(vpc: &str) -> Configured {
    Configured::new("vpc", format!("vpc {vpc} dns support and hostnames"), format!("dns {vpc}"))
}

pub fn subnet_component(public: bool, zone: &str) -> String {
    format!("subnet-{}-{zone}", if public { "public" } else { "private" })
}

/// `inv`: the network as looked up at the start of the run.
pub async fn converge(run: &Run<'_>, inv: &inventory::Inventory) -> anyhow::Result<Net> {
    let ec2 = &run.aws.ec2;
    let config = &run.cx.config;
    let tags = |component: &str| Tags::new(&run.prefix, component);
    let bool_value = |b: bool| AttributeBooleanValue::builder().value(b).build();

    let cidr = &config.network.vpc_cidr;
    let vpc = run
        .ensure(Kind::Vpc, "vpc", &tags("vpc").name(), inv.get(Kind::Vpc, "vpc"), |_| async {
            let out = ec2
                .create_vpc()
                .cidr_block(cidr)
                .tag_specifications(tags("vpc").ec2(ResourceType::Vpc))
                .send()
                .await
                .map_err(call("CreateVpc", cidr))?;
            created_id("CreateVpc", cidr, out.vpc().and_then(|v| v.vpc_id()))
        })
        .await?;
    run.configure(&dns_settings(&vpc), || async {
        // The API takes one attribute per call.
        ec2.modify_vpc_attribute()
            .vpc_id(&vpc)
            .enable_dns_support(bool_value(true))
            .send()
            .await
            .map_err(call("ModifyVpcAttribute", &vpc))?;
        ec2.modify_vpc_attribute()
            .vpc_id(&vpc)
            .enable_dns_hostnames(bool_value(true))
            .send()
            .await
            .map_err(call("ModifyVpcAttribute", &vpc))?;
        Ok(())
    })
    .await?;

    let cidrs = spec::subnet_cidrs(cidr, run.zones.len()).map_err(|e| anyhow::anyhow!("network.vpc_cidr: {e}"))?;
    let (mut public, mut private) = (Vec::new(), Vec::new());
    for (zone, (public_cidr, private_cidr)) in run.zones.iter().zip(&cidrs) {
        for (is_public, block) in [(true, public_cidr), (false, private_cidr)] {
            let component = subnet_component(is_public, zone);
            let existing = inv.get(Kind::Subnet, &component);
            let t = tags(&component);
            let id = run
                .ensure(Kind::Subnet, &component, &t.name(), existing, |_| async {
                    // Load balancer placement: internet-facing in public, internal in private subnets.
                    let role = if is_public { "kubernetes.io/role/elb" } else { "kubernetes.io/role/internal-elb" };
                    let out = ec2
                        .create_subnet()
                        .vpc_id(&vpc)
                        .availability_zone(zone)
                        .cidr_block(block)
                        .tag_specifications(t.ec2_with(ResourceType::Subnet, &[(role, "1")]))
                        .send()
                        .await
                        .map_err(call("CreateSubnet", format!("{block} in {zone}")))?;
                    created_id("CreateSubnet", format!("{block} in {zone}"), out.subnet().and_then(|s| s.subnet_id()))
                })
                .await?;
            let maps_public_ip = existing.is_some_and(|f| f.extra.get("map_public_ip").map(String::as_str) == Some("true"));
            if is_public && !maps_public_ip {
                ec2.modify_subnet_attribute()
                    .subnet_id(&id)
                    .map_public_ip_on_launch(bool_value(true))
                    .send()
                    .await
                    .map_err(call("ModifySubnetAttribute", &id))?;
            }
            if is_public { public.push((zone.clone(), id)) } else { private.push((zone.clone(), id)) }
        }
    }

    let igw_found = inv.get(Kind::InternetGateway, "igw");
    let igw = run
        .ensure(Kind::InternetGateway, "igw", &tags("igw").name(), igw_found, |_| async {
            let out = ec2
                .create_internet_gateway()
                .tag_specifications(tags("igw").ec2(ResourceType::InternetGateway))
                .send()
                .await
                .map_err(call("CreateInternetGateway", tags("igw").name()))?;
            created_id("CreateInternetGateway", tags("igw").name(), out.internet_gateway().and_then(|g| g.internet_gateway_id()))
        })
        .await?;
    if !igw_found.is_some_and(|g| g.has_link(&vpc)) {
        let attached =
            ec2.attach_internet_gateway().internet_gateway_id(&igw).vpc_id(&vpc).send().await.map_err(call("AttachInternetGateway", &igw));
        ignore(attached, &["Resource.AlreadyAssociated"])?;
    }

    // NAT gateways, each with its own elastic IP, in the public subnet of its zone.
    let mut nats = Vec::new();
    for zone in spec::nat_zones(config, &run.zones) {
        let eip_component = format!("eip-nat-{zone}");
        let eip = run
            .ensure(Kind::ElasticIp, &eip_component, &tags(&eip_component).name(), inv.get(Kind::ElasticIp, &eip_component), |_| async {
                let out = ec2
                    .allocate_address()
                    .domain(aws_sdk_ec2::types::DomainType::Vpc)
                    .tag_specifications(tags(&eip_component).ec2(ResourceType::ElasticIp))
                    .send()
                    .await
                    .map_err(call("AllocateAddress", &eip_component))?;
                created_id("AllocateAddress", &eip_component, out.allocation_id())
            })
            .await?;
        let subnet = &public.iter().find(|(z, _)| *z == zone).expect("a public subnet per zone").1;
        let component = format!("nat-{zone}");
        // One being deleted (by a teardown) is as good as gone: make a new one.
        let found = inv.get(Kind::NatGateway, &component).filter(|f| f.state.as_deref() != Some("deleting"));
        let id = run
            .ensure(Kind::NatGateway, &component, &tags(&component).name(), found, |token| async {
                let out = ec2
                    .create_nat_gateway()
                    .subnet_id(subnet)
                    .allocation_id(&eip)
                    .client_token(token)
                    .tag_specifications(tags(&component).ec2(ResourceType::Natgateway))
                    .send()
                    .await
                    .map_err(call("CreateNatGateway", format!("in {zone}")))?;
                created_id("CreateNatGateway", format!("in {zone}"), out.nat_gateway().and_then(|n| n.nat_gateway_id()))
            })
            .await?;
        let available = found.and_then(|f| f.state.as_deref()) == Some("available");
        nats.push((zone, id, available));
    }
    for (zone, id, available) in &nats {
        if !available {
            wait_nat(run, id, zone).await?;
        }
    }
    let nat_of = |zone: &str| {
        let wanted = spec::nat_for(config, &run.zones, zone);
        nats.iter().find(|(z, _, _)| *z == wanted).map(|(_, id, _)| id.clone()).expect("a nat gateway for every zone")
    };

    // Route tables: one public (to the internet gateway), one private per zone (to its NAT).
    let mut tables = Vec::new();
    let public_subnets: Vec<String> = public.iter().map(|(_, s)| s.clone()).collect();
    tables.push(route_table(run, inv, &vpc, "rtb-public", Target::Gateway(igw.clone()), &public_subnets).await?);
    for (zone, subnet) in &private {
        tables.push(
            route_table(run, inv, &vpc, &format!("rtb-private-{zone}"), Target::Nat(nat_of(zone)), std::slice::from_ref(subnet)).await?,
        );
    }

    // S3 traffic stays off the NAT gateways.
    let found = inv.get(Kind::VpcEndpoint, "vpce-s3");
    let service = format!("com.amazonaws.{}.s3", run.region);
    let endpoint = run
        .ensure(Kind::VpcEndpoint, "vpce-s3", &tags("vpce-s3").name(), found, |token| async {
            let out = ec2
                .create_vpc_endpoint()
                .vpc_id(&vpc)
                .vpc_endpoint_type(VpcEndpointType::Gateway)
                .service_name(&service)
                .set_route_table_ids(Some(tables.clone()))
                .client_token(token)
                .tag_specifications(tags("vpce-s3").ec2(ResourceType::VpcEndpoint))
                .send()
                .await
                .map_err(call("CreateVpcEndpoint", &service))?;
            created_id("CreateVpcEndpoint", &service, out.vpc_endpoint().and_then(|e| e.vpc_endpoint_id()))
        })
        .await?;
    if let Some(found) = found {
        let missing: Vec<String> = tables.iter().filter(|t| !found.has_link(t)).cloned().collect();
        if !missing.is_empty() {
            ec2.modify_vpc_endpoint()
                .vpc_endpoint_id(&endpoint)
                .set_add_route_table_ids(Some(missing))
                .send()
                .await
                .map_err(call("ModifyVpcEndpoint", &endpoint))?;
        }
    }
    // NAT gateways the config no longer asks for (`per_az` → `single`): no route uses them now.
    for (nat, eip) in super::drift::unwanted_nats(config, &run.zones, inv) {
        delete_nat(run, nat, eip).await?;
    }
    Ok(Net { public, private })
}

/// Deletes a NAT gateway, waits until it is gone, releases its address, and forgets both.
async fn delete_nat(run: &Run<'_>, nat: &inventory::Found, eip: Option<&inventory::Found>) -> anyhow::Result<()> {
    let ec2 = &run.aws.ec2;
    let step = run.reporter.step(format!("delete nat gateway {} ({}), no longer used", nat.component, nat.id));
    let deleted = ec2.delete_nat_gateway().nat_gateway_id(&nat.id).send().await.map_err(call("DeleteNatGateway", &nat.id));
    ignore(deleted, &["NatGatewayNotFound"])?;
    wait_for(
        &format!("nat gateway {} to be deleted", nat.id),
        Duration::from_secs(600),
        run.aws.pace.poll,
        |secs| step.progress(secs, None, Unit::Items),
        || async {
            let out = ec2.describe_nat_gateways().nat_gateway_ids(&nat.id).send().await.map_err(call("DescribeNatGateways", &nat.id));
            let state = crate::aws::call::found(out)?.and_then(|o| o.nat_gateways().first().and_then(|n| n.state().cloned()));
            Ok(matches!(state, None | Some(NatGatewayState::Deleted)).then_some(()))
        },
    )
    .await?;
    if let Some(eip) = eip {
        let released = ec2.release_address().allocation_id(&eip.id).send().await.map_err(call("ReleaseAddress", &eip.id));
        ignore(released, &["InvalidAllocationID.NotFound"])?;
    }
    let forget: Vec<&str> = std::iter::once(nat).chain(eip).map(|f| f.component.as_str()).collect();
    run.cx.update_state(|s| forget.iter().for_each(|c| drop(s.infra.resources.remove(*c))))?;
    step.finish();
    Ok(())
}

enum Target {
    Gateway(String),
    Nat(String),
}

/// One route table with its default route and subnet associations, each made only if missing.
async fn route_table(
    run: &Run<'_>,
    inv: &inventory::Inventory,
    vpc: &str,
    component: &str,
    target: Target,
    subnets: &[String],
) -> anyhow::Result<String> {
    let ec2 = &run.aws.ec2;
    let tags = Tags::new(&run.prefix, component);
    let found = inv.get(Kind::RouteTable, component);
    let id = run
        .ensure(Kind::RouteTable, component, &tags.name(), found, |token| async {
            let out = ec2
                .create_route_table()
                .vpc_id(vpc)
                .client_token(token)
                .tag_specifications(tags.ec2(ResourceType::RouteTable))
                .send()
                .await
                .map_err(call("CreateRouteTable", tags.name()))?;
            created_id("CreateRouteTable", tags.name(), out.route_table().and_then(|t| t.route_table_id()))
        })
        .await?;
    let (target_id, request) = match &target {
        Target::Gateway(g) => (g, ec2.create_route().gateway_id(g)),
        Target::Nat(n) => (n, ec2.create_route().nat_gateway_id(n)),
    };
    let current = found.and_then(|f| f.extra.get("route:0.0.0.0/0"));
    if current != Some(target_id) {
        if current.is_some() {
            let replaced = match &target {
                Target::Gateway(g) => ec2.replace_route().gateway_id(g),
                Target::Nat(n) => ec2.replace_route().nat_gateway_id(n),
            };
            replaced.route_table_id(&id).destination_cidr_block("0.0.0.0/0").send().await.map_err(call("ReplaceRoute", &id))?;
        } else {
            let created = request.route_table_id(&id).destination_cidr_block("0.0.0.0/0").send().await.map_err(call("CreateRoute", &id));
            ignore(created, &["RouteAlreadyExists"])?;
        }
    }
    for subnet in subnets {
        if !found.is_some_and(|f| f.has_link(subnet)) {
            let associated =
                ec2.associate_route_table().route_table_id(&id).subnet_id(subnet).send().await.map_err(call("AssociateRouteTable", &id));
            ignore(associated, &["Resource.AlreadyAssociated"])?;
        }
    }
    Ok(id)
}

async fn wait_nat(run: &Run<'_>, id: &str, zone: &str) -> anyhow::Result<()> {
    let step = run.reporter.step(format!("wait for nat gateway {id} in {zone}"));
    wait_for(
        &format!("nat gateway {id} to become available"),
        Duration::from_secs(600),
        Duration::from_secs(10),
        |secs| step.progress(secs, None, Unit::Items),
        || async {
            let out = run.aws.ec2.describe_nat_gateways().nat_gateway_ids(id).send().await.map_err(call("DescribeNatGateways", id))?;
            match out.nat_gateways().first().and_then(|n| n.state()) {
                Some(NatGatewayState::Available) => Ok(Some(())),
                Some(NatGatewayState::Failed) => {
                    let reason = out.nat_gateways().first().and_then(|n| n.failure_message()).unwrap_or("no reason given");
                    anyhow::bail!("nat gateway {id} failed: {reason}. Run `neonctl-aws teardown` or delete it, then run infra again")
                }
                _ => Ok(None),
            }
        },
    )
    .await?;
    step.finish();
    Ok(())
}

/// Treats the listed "already done" error codes as success.
pub fn ignore<T>(result: Result<T, CallError>, codes: &[&str]) -> Result<(), CallError> {
    match result {
        Ok(_) => Ok(()),
        Err(e) if e.is_any(codes) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use aws_sdk_ec2::Client as Ec2;
    use aws_sdk_ec2::operation as op;
    use aws_smithy_mocks::{MockResponseInterceptor, Rule, RuleMode, mock};

    use super::*;
    use crate::aws::Aws;
    use crate::aws::tags::{CLUSTER_TAG, COMPONENT_TAG};
    use crate::engine::{Context, PhaseName};
    use crate::output::Recorder;
    use crate::phases::infra::Identity;
    use crate::state::StateStore;

    fn run(cx: &Context, ec2: Ec2) -> Run<'_> {
        let id =
            Identity { account: "123456789012".into(), partition: "aws".into(), caller_arn: "arn:aws:iam::123456789012:user/ci".into() };
        let zones = ["us-east-1a", "us-east-1b", "us-east-1c"].map(String::from).to_vec();
        let aws = Aws { ec2, ..Aws::unreachable(&cx.config) };
        Run { cx, aws, id, prefix: "neon".into(), region: "us-east-1".into(), zones, reporter: cx.reporter(PhaseName::Infra) }
    }

    /// An EC2 client answered by `rules` (what `mock_client!` builds, without the SDK's test-util
    /// feature: aws-sdk-ec2 is the slowest crate to compile).
    fn mocked(rules: &[Rule]) -> Ec2 {
        let interceptor = rules.iter().fold(MockResponseInterceptor::new().rule_mode(RuleMode::MatchAny), |i, rule| i.with_rule(rule));
        let config = aws_sdk_ec2::Config::builder()
            .behavior_version(aws_sdk_ec2::config::BehaviorVersion::latest())
            .region(aws_sdk_ec2::config::Region::new("us-east-1"))
            .credentials_provider(aws_credential_types::Credentials::for_tests())
            .http_client(aws_smithy_mocks::create_mock_http_client())
            .interceptor(interceptor)
            .build();
        Ec2::from_conf(config)
    }

    /// The lookups of a network that has only the VPC `tagged` finds (or nothing).
    fn lookups(tagged: Option<&'static str>) -> Vec<Rule> {
        let tag = |k: &str, v: &str| aws_sdk_ec2::types::Tag::builder().key(k).value(v).build();
        vec![
            mock!(Ec2::describe_vpcs).then_output(move || {
                let vpcs = tagged.map(|id| {
                    aws_sdk_ec2::types::Vpc::builder()
                        .vpc_id(id)
                        .cidr_block("10.42.0.0/16")
                        .tags(tag(CLUSTER_TAG, "neon"))
                        .tags(tag(COMPONENT_TAG, "vpc"))
                        .build()
                });
                op::describe_vpcs::DescribeVpcsOutput::builder().set_vpcs(Some(vpcs.into_iter().collect())).build()
            }),
            mock!(Ec2::describe_subnets).then_output(|| op::describe_subnets::DescribeSubnetsOutput::builder().build()),
            mock!(Ec2::describe_internet_gateways)
                .then_output(|| op::describe_internet_gateways::DescribeInternetGatewaysOutput::builder().build()),
            mock!(Ec2::describe_addresses).then_output(|| op::describe_addresses::DescribeAddressesOutput::builder().build()),
            mock!(Ec2::describe_nat_gateways).then_output(|| op::describe_nat_gateways::DescribeNatGatewaysOutput::builder().build()),
            mock!(Ec2::describe_route_tables).then_output(|| op::describe_route_tables::DescribeRouteTablesOutput::builder().build()),
            mock!(Ec2::describe_vpc_endpoints).then_output(|| op::describe_vpc_endpoints::DescribeVpcEndpointsOutput::builder().build()),
        ]
    }

    /// A create whose answer lacks the new id is an error naming the call, never an id of "";
    /// the next run finds the resource by its tags and adopts it instead of creating a twin.
    #[tokio::test]
    async fn a_create_answered_without_an_id_fails_and_the_next_run_adopts_it_by_tag() {
        let dir = tempfile::tempdir().unwrap();
        let cx = Context::new(
            crate::config::Config::default(),
            StateStore::open(dir.path(), "test").unwrap(),
            Arc::new(Recorder::default()),
            false,
        );
        let create_vpc = mock!(Ec2::create_vpc)
            .match_requests(|r| r.cidr_block() == Some("10.42.0.0/16"))
            .then_output(|| op::create_vpc::CreateVpcOutput::builder().build());
        let mut rules = lookups(None);
        rules.push(create_vpc);
        let ec2 = mocked(&rules);
        let first = run(&cx, ec2);
        let inv = inventory::network(&first.aws, "neon").await.unwrap();
        let error = format!("{:#}", converge(&first, &inv).await.unwrap_err());
        assert!(error.contains("CreateVpc") && error.contains("without the new resource's id"), "{error}");
        assert_eq!(cx.state().infra.resources.get("vpc").and_then(|r| r.id.clone()), None, "no empty id recorded");
        assert_eq!(rules.last().unwrap().num_calls(), 1);

        // The next run: the VPC is found by tag and adopted; it stops at the subnets here.
        let create_vpc = mock!(Ec2::create_vpc).then_output(|| op::create_vpc::CreateVpcOutput::builder().build());
        let dns = mock!(Ec2::modify_vpc_attribute)
            .match_requests(|r| r.vpc_id() == Some("vpc-0tagged"))
            .then_output(|| op::modify_vpc_attribute::ModifyVpcAttributeOutput::builder().build());
        let subnet = mock!(Ec2::create_subnet).then_output(|| op::create_subnet::CreateSubnetOutput::builder().build());
        let mut rules = lookups(Some("vpc-0tagged"));
        rules.extend([create_vpc, dns, subnet]);
        let ec2 = mocked(&rules);
        let second = run(&cx, ec2);
        let inv = inventory::network(&second.aws, "neon").await.unwrap();
        let error = format!("{:#}", converge(&second, &inv).await.unwrap_err());
        assert!(error.contains("CreateSubnet"), "{error}");
        let n = rules.len();
        assert_eq!((rules[n - 3].num_calls(), rules[n - 2].num_calls()), (0, 2), "adopted, not created again; dns configured");
        assert_eq!(cx.state().infra.resources["vpc"].id.as_deref(), Some("vpc-0tagged"));
    }
}
