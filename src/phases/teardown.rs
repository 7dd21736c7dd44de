//! `teardown`: deletes everything of one prefix, found from the state file and by tag lookup,
//! in dependency order, until a fresh lookup finds nothing left.
//!
//! ```text
//! nodegroups ─► addons ─► cluster ─┬─► oidc provider, roles
//! bucket (versions, markers, uploads), ecr repositories   (meanwhile)
//!                                  └─► ENIs ─► endpoints ─► NAT (wait) ─► EIPs ─► IGW ─► route tables ─► SGs ─► subnets ─► VPC
//! ```

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{BoxFuture, join_all};

use crate::aws::Aws;
use crate::aws::call::{Backoff, CallError, call, found, is_dependency, wait_for};
use crate::aws::inventory::{self, Found, Inventory, Kind};
use crate::engine::{Context, Phase, PhaseName, PhasePlan};
use crate::exit::{Coded, LEFTOVERS};
use crate::output::{PhaseReporter, PlannedAction, Printer, Verb};
use crate::state::InfraState;

use super::infra::extras::{self, EksExtras};
use super::infra::{identity, kind_slug, spec};

pub struct Teardown {
    pub keep_data: bool,
    /// Asks for consent before the bucket's data is deleted.
    pub printer: Arc<Printer>,
}

impl Phase for Teardown {
    fn name(&self) -> PhaseName {
        PhaseName::Teardown
    }

    fn plan<'a>(&'a self, cx: &'a Context) -> BoxFuture<'a, anyhow::Result<PhasePlan>> {
        Box::pin(async move {
            let mut notes = Vec::new();
            let inventory = match discover(cx).await {
                Ok((_, inventory)) => inventory,
                Err(e) => {
                    notes.push(format!("could not look up resources ({e:#}); listing only what the state file records"));
                    from_state(&cx.state().infra)
                }
            };
            let mut actions = Vec::new();
            if !inventory.of(Kind::Cluster).is_empty() {
                match extras::of(&cx.config).release_plan(&cx.config.prefix) {
                    Ok(action) => actions.push(action),
                    Err(note) => notes.push(note),
                }
            }
            for (kind, found) in inventory.list() {
                if kind == Kind::Bucket && self.keep_data {
                    notes.push(format!("--keep-data: s3 bucket {} and its data are kept", found.id));
                    continue;
                }
                let target = format!("{} {}", kind.label(), found.id);
                actions.push(match kind {
                    Kind::Bucket => {
                        PlannedAction::new(Verb::Delete, target).detail("every object version, delete marker and upload, then the bucket")
                    }
                    Kind::NetworkInterface if found.state.as_deref() != Some("available") => {
                        PlannedAction::new(Verb::Wait, target).detail("in use: goes with its owner")
                    }
                    _ => PlannedAction::new(Verb::Delete, target),
                });
            }
            Ok(PhasePlan { actions, notes })
        })
    }

    fn apply<'a>(&'a self, cx: &'a Context) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(self.run(cx))
    }
}

/// The resources the state file names, for a plan that could not look anything up.
fn from_state(infra: &InfraState) -> Inventory {
    let mut inventory = Inventory::default();
    for (component, record) in &infra.resources {
        let Some(id) = &record.id else { continue };
        let kind = match component.split('-').next().unwrap_or_default() {
            "vpc" => Kind::Vpc,
            "subnet" => Kind::Subnet,
            "igw" => Kind::InternetGateway,
            "eip" => Kind::ElasticIp,
            "nat" => Kind::NatGateway,
            "rtb" => Kind::RouteTable,
            "vpce" => Kind::VpcEndpoint,
            "role" => Kind::Role,
            "ecr" => Kind::Repository,
            "bucket" => Kind::Bucket,
            "cluster" => Kind::Cluster,
            "nodegroup" => Kind::Nodegroup,
            "oidc" => Kind::OidcProvider,
            _ => continue,
        };
        inventory.add(kind, [Found { component: component.clone(), id: id.clone(), ..Found::default() }]);
    }
    inventory
}

/// Everything of the prefix that exists now.
async fn discover(cx: &Context) -> anyhow::Result<(Aws, Inventory)> {
    let aws = Aws::connect(&cx.config, cx.calls.clone()).await?;
    let id = identity(&aws).await?;
    let prefix = &cx.config.prefix;
    let mut buckets = vec![spec::bucket_name(&cx.config, &id.account)];
    if let Some(recorded) = cx.state().infra.resources.get("bucket").and_then(|r| r.id.clone())
        && !buckets.contains(&recorded)
    {
        buckets.push(recorded);
    }
    let cluster_and_nodegroups = async {
        let cluster = match inventory::cluster(&aws, prefix).await {
            Err(e) if e.is(inventory::NOT_OURS) => {
                cx.reporter(PhaseName::Teardown).warn(e.detail);
                None
            }
            other => other?,
        };
        let nodegroups = if cluster.is_some() { inventory::nodegroups(&aws, prefix).await? } else { vec![] };
        Ok::<_, CallError>((cluster, nodegroups))
    };
    let (mut inv, roles, (cluster, nodegroups), providers, repos, buckets) = futures::try_join!(
        inventory::network(&aws, prefix),
        inventory::roles(&aws, prefix),
        cluster_and_nodegroups,
        inventory::oidc_providers(&aws, prefix),
        inventory::repositories(&aws, prefix),
        futures::future::try_join_all(buckets.iter().map(|b| inventory::bucket(&aws, b))),
    )?;
    inv.add(Kind::Cluster, cluster);
    inv.add(Kind::Nodegroup, nodegroups);
    inv.add(Kind::Role, roles);
    inv.add(Kind::OidcProvider, providers);
    inv.add(Kind::Repository, repos);
    inv.add(Kind::Bucket, buckets.into_iter().flatten());
    // Security groups and ENIs in our VPCs carry no tag of ours (EKS and controllers make them).
    let vpcs: Vec<String> = inv.of(Kind::Vpc).iter().map(|v| v.id.clone()).collect();
    if !vpcs.is_empty() {
        let in_vpcs = aws_sdk_ec2::types::Filter::builder().name("vpc-id").set_values(Some(vpcs)).build();
        let (groups, interfaces) = futures::try_join!(
            async {
                aws.ec2
                    .describe_security_groups()
                    .filters(in_vpcs.clone())
                    .send()
                    .await
                    .map_err(call("DescribeSecurityGroups", "in the vpc"))
            },
            async {
                aws.ec2
                    .describe_network_interfaces()
                    .filters(in_vpcs.clone())
                    .send()
                    .await
                    .map_err(call("DescribeNetworkInterfaces", "in the vpc"))
            },
        )?;
        inv.add(
            Kind::SecurityGroup,
            groups.security_groups().iter().filter(|g| g.group_name() != Some("default")).map(|g| Found {
                component: g.group_name().unwrap_or_default().to_string(),
                id: g.group_id().unwrap_or_default().to_string(),
                ..Found::default()
            }),
        );
        inv.add(
            Kind::NetworkInterface,
            interfaces.network_interfaces().iter().map(|n| Found {
                component: n.description().unwrap_or_default().to_string(),
                id: n.network_interface_id().unwrap_or_default().to_string(),
                // An interface AWS manages for a NAT gateway or endpoint goes with its owner.
                state: if n.requester_managed() == Some(true) {
                    Some("requester-managed".into())
                } else {
                    n.status().map(|s| s.as_str().to_string())
                },
                ..Found::default()
            }),
        );
    }
    Ok((aws, inv))
}

impl Teardown {
    async fn run(&self, cx: &Context) -> anyhow::Result<()> {
        let reporter = cx.reporter(PhaseName::Teardown);
        let (aws, inventory) = discover(cx).await?;
        let kept = |inv: &Inventory| -> Vec<String> {
            if self.keep_data { inv.of(Kind::Bucket).iter().map(|b| b.id.clone()).collect() } else { vec![] }
        };
        if let Some(bucket) = inventory.of(Kind::Bucket).first().filter(|_| !self.keep_data) {
            // Consent comes before the first deletion, not in the middle of the run.
            let question = format!("delete s3 bucket {} with all its data (every object version)?", bucket.id);
            let consent = self.printer.confirm(&question, cx.assume_yes).map_err(|e| {
                anyhow::Error::new(e).context(
                    "deleting the bucket's data needs consent and nothing was deleted: pass --yes, or --keep-data to keep the bucket",
                )
            })?;
            if !consent {
                anyhow::bail!(
                    "nothing was deleted: the bucket deletion was declined. Run with --keep-data to keep the bucket and delete the rest"
                );
            }
        }
        let del = Deleter {
            aws: &aws,
            extras: extras::of(&cx.config),
            reporter: &reporter,
            errors: Mutex::default(),
            unreleased: Mutex::default(),
            backoff: Backoff { budget: aws.pace.dependency_budget },
        };
        let mut inventory = inventory;
        for round in 1..=3 {
            if inventory.list().iter().all(|(kind, f)| *kind == Kind::Bucket && kept(&inventory).contains(&f.id)) {
                break;
            }
            if round > 1 {
                reporter.info(format!("round {round}: deleting what is still there"));
            }
            self.delete_all(&del, &inventory, &cx.config.prefix).await;
            inventory = discover(cx).await?.1;
        }
        let keep = kept(&inventory);
        let mut leftovers: Vec<String> = inventory
            .list()
            .into_iter()
            .filter(|(kind, f)| !(*kind == Kind::Bucket && keep.contains(&f.id)))
            .map(|(kind, f)| format!("{} {}", kind.label(), f.id))
            .collect();
        leftovers.extend(std::mem::take(&mut *del.unreleased.lock().expect("unreleased list")));
        let errors = std::mem::take(&mut *del.errors.lock().expect("error list"));
        if !leftovers.is_empty() {
            let mut message = format!("teardown left {} resource(s): {}", leftovers.len(), leftovers.join(", "));
            if !errors.is_empty() {
                message.push_str(&format!(". Errors: {}", errors.join("; ")));
            }
            message.push_str(". Run `neonctl-aws teardown` again, or delete them in the AWS console");
            return Err(Coded { code: LEFTOVERS, message }.into());
        }
        cx.update_state(|s| {
            let bucket = s.infra.resources.remove("bucket").filter(|_| !keep.is_empty());
            s.infra = InfraState::default();
            // What infra made is gone; its record would say otherwise.
            s.phases.remove(&PhaseName::Infra);
            // So is a deploy to the EKS cluster (one to your own cluster is not teardown's).
            if matches!(&s.deploy, Some(d) if matches!(d.cluster, crate::state::ClusterAccess::Eks { .. })) {
                s.deploy = None;
                s.phases.remove(&PhaseName::Deploy);
            }
            if let Some(bucket) = bucket {
                s.infra.resources.insert("bucket".into(), bucket);
            }
        })?;
        if !keep.is_empty() {
            reporter.info(format!("kept s3 bucket {} (--keep-data)", keep.join(", ")));
        }
        Ok(())
    }

    async fn delete_all(&self, del: &Deleter<'_>, inv: &Inventory, prefix: &str) {
        let storage = async {
            if !self.keep_data {
                join_all(inv.of(Kind::Bucket).iter().map(|b| del.one(Kind::Bucket, &b.id, || purge_bucket(del.aws, &b.id)))).await;
            }
            join_all(inv.of(Kind::Repository).iter().map(|r| {
                del.one(Kind::Repository, &r.id, || async {
                    del.aws
                        .ecr
                        .delete_repository()
                        .repository_name(&r.id)
                        .force(true)
                        .send()
                        .await
                        .map_err(call("DeleteRepository", &r.id))
                        .map(drop)
                })
            }))
            .await;
        };
        let compute_then_rest = async {
            delete_eks(del, inv, prefix).await;
            futures::join!(delete_iam(del, inv), delete_network(del, inv));
        };
        futures::join!(storage, compute_then_rest);
    }
}

/// Deletes with progress, retrying while dependencies go away; "not found" counts as deleted.
struct Deleter<'a> {
    aws: &'a Aws,
    extras: &'static dyn EksExtras,
    reporter: &'a PhaseReporter,
    errors: Mutex<Vec<String>>,
    /// Kubernetes objects whose AWS resources (ELBs, EBS volumes) were not released in time.
    unreleased: Mutex<Vec<String>>,
    backoff: Backoff,
}

impl Deleter<'_> {
    async fn one<F, Fut>(&self, kind: Kind, id: &str, delete: F) -> bool
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), CallError>>,
    {
        let step = self.reporter.step(format!("delete {} {id}", kind.label()));
        match found(self.backoff.retry(is_dependency, delete).await) {
            Ok(_) => {
                crate::crash::point(&format!("teardown:{}:deleted", kind_slug(kind)));
                step.finish();
                true
            }
            Err(e) => {
                self.reporter.warn(format!("could not delete {} {id}: {e}", kind.label()));
                self.errors.lock().expect("error list").push(e.to_string());
                false
            }
        }
    }

    async fn each<'i, F, Fut>(&self, inv: &'i Inventory, kind: Kind, delete: F)
    where
        F: Fn(&'i Found) -> Fut,
        Fut: Future<Output = Result<(), CallError>>,
    {
        join_all(inv.of(kind).iter().map(|f| self.one(kind, &f.id, || delete(f)))).await;
    }

    async fn wait_gone<Fut>(&self, what: String, timeout: Duration, mut exists: impl FnMut() -> Fut)
    where
        Fut: Future<Output = Result<bool, CallError>>,
    {
        let waited = wait_for(
            &what,
            timeout,
            self.aws.pace.poll,
            |_| {},
            || {
                let check = exists();
                async move { Ok((!check.await?).then_some(())) }
            },
        )
        .await;
        if let Err(e) = waited {
            self.reporter.warn(format!("{e:#}"));
            self.errors.lock().expect("error list").push(format!("{e:#}"));
        }
    }
}

async fn delete_eks(del: &Deleter<'_>, inv: &Inventory, prefix: &str) {
    let eks = &del.aws.eks;
    if inv.of(Kind::Cluster).is_empty() {
        return;
    }
    let unreleased = del.extras.release_kubernetes(del.aws, del.reporter, prefix).await;
    del.unreleased.lock().expect("unreleased list").extend(unreleased);
    del.each(inv, Kind::Nodegroup, |n| async {
        eks.delete_nodegroup().cluster_name(prefix).nodegroup_name(&n.id).send().await.map_err(call("DeleteNodegroup", &n.id)).map(drop)
    })
    .await;
    for group in inv.of(Kind::Nodegroup) {
        del.wait_gone(format!("eks nodegroup {} to be deleted", group.id), Duration::from_secs(30 * 60), || async {
            let out = eks
                .describe_nodegroup()
                .cluster_name(prefix)
                .nodegroup_name(&group.id)
                .send()
                .await
                .map_err(call("DescribeNodegroup", &group.id));
            Ok(found(out)?.is_some())
        })
        .await;
    }
    for addon in del.extras.addons(del.aws, prefix).await {
        del.one(Kind::Addon, &addon, || async {
            eks.delete_addon().cluster_name(prefix).addon_name(&addon).send().await.map_err(call("DeleteAddon", &addon)).map(drop)
        })
        .await;
    }
    del.one(Kind::Cluster, prefix, || async {
        eks.delete_cluster().name(prefix).send().await.map_err(call("DeleteCluster", prefix)).map(drop)
    })
    .await;
    del.wait_gone(format!("eks cluster {prefix} to be deleted"), Duration::from_secs(30 * 60), || async {
        Ok(found(eks.describe_cluster().name(prefix).send().await.map_err(call("DescribeCluster", prefix)))?.is_some())
    })
    .await;
}

/// LoadBalancer services and volumes go first, while the controllers that delete their ELBs
/// and EBS volumes still run on the nodes.
async fn delete_iam(del: &Deleter<'_>, inv: &Inventory) {
    let iam = &del.aws.iam;
    del.each(inv, Kind::OidcProvider, |p| async {
        iam.delete_open_id_connect_provider()
            .open_id_connect_provider_arn(&p.id)
            .send()
            .await
            .map_err(call("DeleteOpenIDConnectProvider", &p.id))
            .map(drop)
    })
    .await;
    del.each(inv, Kind::Role, |r| delete_role(del.aws, &r.id)).await;
}

/// Detaches managed policies, deletes inline ones, leaves instance profiles, deletes the role.
async fn delete_role(aws: &Aws, name: &str) -> Result<(), CallError> {
    let iam = &aws.iam;
    let attached = iam.list_attached_role_policies().role_name(name).send().await.map_err(call("ListAttachedRolePolicies", name))?;
    for policy in attached.attached_policies().iter().filter_map(|p| p.policy_arn()) {
        found(
            iam.detach_role_policy()
                .role_name(name)
                .policy_arn(policy)
                .send()
                .await
                .map_err(call("DetachRolePolicy", format!("{policy} from {name}"))),
        )?;
    }
    let inline = iam.list_role_policies().role_name(name).send().await.map_err(call("ListRolePolicies", name))?;
    for policy in inline.policy_names() {
        found(
            iam.delete_role_policy()
                .role_name(name)
                .policy_name(policy)
                .send()
                .await
                .map_err(call("DeleteRolePolicy", format!("{policy} of {name}"))),
        )?;
    }
    let profiles = iam.list_instance_profiles_for_role().role_name(name).send().await.map_err(call("ListInstanceProfilesForRole", name))?;
    for profile in profiles.instance_profiles() {
        let profile = profile.instance_profile_name();
        found(
            iam.remove_role_from_instance_profile()
                .instance_profile_name(profile)
                .role_name(name)
                .send()
                .await
                .map_err(call("RemoveRoleFromInstanceProfile", format!("{name} from {profile}"))),
        )?;
    }
    iam.delete_role().role_name(name).send().await.map_err(call("DeleteRole", name)).map(drop)
}

async fn delete_network(del: &Deleter<'_>, inv: &Inventory) {
    let ec2 = &del.aws.ec2;
    // Interfaces left by the VPC CNI or load balancers; EKS's own go with the cluster.
    let detached = Inventory {
        items: [(
            Kind::NetworkInterface,
            inv.of(Kind::NetworkInterface).iter().filter(|n| n.state.as_deref() == Some("available")).cloned().collect(),
        )]
        .into(),
    };
    del.each(&detached, Kind::NetworkInterface, |n| async {
        ec2.delete_network_interface().network_interface_id(&n.id).send().await.map_err(call("DeleteNetworkInterface", &n.id)).map(drop)
    })
    .await;
    del.each(inv, Kind::VpcEndpoint, |e| async {
        ec2.delete_vpc_endpoints().vpc_endpoint_ids(&e.id).send().await.map_err(call("DeleteVpcEndpoints", &e.id)).map(drop)
    })
    .await;
    // Addresses stay mapped until their NAT gateway is gone.
    del.each(inv, Kind::NatGateway, |n| async {
        ec2.delete_nat_gateway().nat_gateway_id(&n.id).send().await.map_err(call("DeleteNatGateway", &n.id)).map(drop)
    })
    .await;
    for nat in inv.of(Kind::NatGateway) {
        del.wait_gone(format!("nat gateway {} to be deleted", nat.id), Duration::from_secs(10 * 60), || async {
            let out = ec2.describe_nat_gateways().nat_gateway_ids(&nat.id).send().await.map_err(call("DescribeNatGateways", &nat.id));
            let state = found(out)?.and_then(|o| o.nat_gateways().first().and_then(|n| n.state().cloned()));
            Ok(!matches!(state, None | Some(aws_sdk_ec2::types::NatGatewayState::Deleted)))
        })
        .await;
    }
    del.each(inv, Kind::ElasticIp, |a| async {
        ec2.release_address().allocation_id(&a.id).send().await.map_err(call("ReleaseAddress", &a.id)).map(drop)
    })
    .await;
    del.each(inv, Kind::InternetGateway, |g| async {
        for (vpc, _) in &g.links {
            found(
                ec2.detach_internet_gateway()
                    .internet_gateway_id(&g.id)
                    .vpc_id(vpc)
                    .send()
                    .await
                    .map_err(call("DetachInternetGateway", &g.id)),
            )?;
        }
        ec2.delete_internet_gateway().internet_gateway_id(&g.id).send().await.map_err(call("DeleteInternetGateway", &g.id)).map(drop)
    })
    .await;
    // Associations first: a subnet's deletion does not always drop them.
    del.each(inv, Kind::RouteTable, |t| async {
        for (_, association) in t.links.iter().filter(|(_, a)| !a.is_empty()) {
            found(
                ec2.disassociate_route_table()
                    .association_id(association)
                    .send()
                    .await
                    .map_err(call("DisassociateRouteTable", association)),
            )?;
        }
        ec2.delete_route_table().route_table_id(&t.id).send().await.map_err(call("DeleteRouteTable", &t.id)).map(drop)
    })
    .await;
    // Groups that reference each other (a node group allowing a load balancer's) cannot go
    // until those rules do.
    let groups: Vec<String> = inv.of(Kind::SecurityGroup).iter().map(|g| g.id.clone()).collect();
    if !groups.is_empty()
        && let Err(e) = revoke_group_references(del.aws, groups).await
    {
        del.reporter.warn(format!("could not revoke security group rules: {e}"));
        del.errors.lock().expect("error list").push(e.to_string());
    }
    del.each(inv, Kind::SecurityGroup, |g| async {
        ec2.delete_security_group().group_id(&g.id).send().await.map_err(call("DeleteSecurityGroup", &g.id)).map(drop)
    })
    .await;
    del.each(inv, Kind::Subnet, |s| async {
        ec2.delete_subnet().subnet_id(&s.id).send().await.map_err(call("DeleteSubnet", &s.id)).map(drop)
    })
    .await;
    del.each(inv, Kind::Vpc, |v| async { ec2.delete_vpc().vpc_id(&v.id).send().await.map_err(call("DeleteVpc", &v.id)).map(drop) }).await;
}

/// Revokes the rules of `groups` that name another security group.
async fn revoke_group_references(aws: &Aws, groups: Vec<String>) -> Result<(), CallError> {
    let ec2 = &aws.ec2;
    let owned_by = aws_sdk_ec2::types::Filter::builder().name("group-id").set_values(Some(groups)).build();
    let rules = ec2
        .describe_security_group_rules()
        .filters(owned_by)
        .send()
        .await
        .map_err(call("DescribeSecurityGroupRules", "of the vpc's groups"))?;
    for rule in rules.security_group_rules().iter().filter(|r| r.referenced_group_info().and_then(|g| g.group_id()).is_some()) {
        let (Some(group), Some(id)) = (rule.group_id(), rule.security_group_rule_id()) else { continue };
        let revoked = if rule.is_egress() == Some(true) {
            ec2.revoke_security_group_egress()
                .group_id(group)
                .security_group_rule_ids(id)
                .send()
                .await
                .map(drop)
                .map_err(call("RevokeSecurityGroupEgress", id))
        } else {
            ec2.revoke_security_group_ingress()
                .group_id(group)
                .security_group_rule_ids(id)
                .send()
                .await
                .map(drop)
                .map_err(call("RevokeSecurityGroupIngress", id))
        };
        found(revoked)?;
    }
    Ok(())
}

/// Deletes every object version, delete marker and multipart upload, then the bucket.
async fn purge_bucket(aws: &Aws, bucket: &str) -> Result<(), CallError> {
    use aws_sdk_s3::types::{Delete, ObjectIdentifier};
    let s3 = &aws.s3;
    // A deny policy (TLS-only, or a lock-out) must not stand between us and the objects.
    found(s3.delete_bucket_policy().bucket(bucket).send().await.map_err(call("DeleteBucketPolicy", bucket)))?;
    loop {
        let page = s3.list_object_versions().bucket(bucket).max_keys(1000).send().await.map_err(call("ListObjectVersions", bucket))?;
        let ids: Vec<ObjectIdentifier> = page
            .versions()
            .iter()
            .map(|v| (v.key(), v.version_id()))
            .chain(page.delete_markers().iter().map(|m| (m.key(), m.version_id())))
            .filter_map(|(key, version)| ObjectIdentifier::builder().key(key?).set_version_id(version.map(str::to_string)).build().ok())
            .collect();
        if ids.is_empty() {
            break;
        }
        let delete = Delete::builder().set_objects(Some(ids)).quiet(true).build().expect("objects set");
        let out = s3.delete_objects().bucket(bucket).delete(delete).send().await.map_err(call("DeleteObjects", bucket))?;
        if let Some(error) = out.errors().first() {
            return Err(CallError {
                operation: "DeleteObjects",
                resource: format!("{bucket}/{}", error.key().unwrap_or_default()),
                code: error.code().map(str::to_string),
                status: Some(200),
                detail: error.message().unwrap_or("an object could not be deleted").to_string(),
            });
        }
    }
    let uploads = s3.list_multipart_uploads().bucket(bucket).send().await.map_err(call("ListMultipartUploads", bucket))?;
    for upload in uploads.uploads() {
        let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) else { continue };
        found(
            s3.abort_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(id)
                .send()
                .await
                .map_err(call("AbortMultipartUpload", format!("{bucket}/{key}"))),
        )?;
    }
    s3.delete_bucket().bucket(bucket).send().await.map_err(call("DeleteBucket", bucket)).map(drop)
}

/// The EKS deletions moto cannot show (addons), against a mocked client.
#[cfg(test)]
mod tests {
    use aws_sdk_eks::Client as Eks;
    use aws_sdk_eks::operation::describe_cluster::DescribeClusterError;
    use aws_sdk_eks::operation::describe_nodegroup::DescribeNodegroupError;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    use super::*;
    use crate::phases::infra::eks::tests::not_found;

    #[tokio::test]
    async fn nodegroups_then_addons_then_the_cluster() {
        use aws_sdk_eks::operation as op;
        let delete_group = mock!(Eks::delete_nodegroup)
            .match_requests(|r| r.cluster_name() == Some("neon") && r.nodegroup_name() == Some("neon-nodes"))
            .then_output(|| op::delete_nodegroup::DeleteNodegroupOutput::builder().build());
        let group_gone = mock!(Eks::describe_nodegroup).then_error(|| DescribeNodegroupError::ResourceNotFoundException(not_found()));
        let list_addons = mock!(Eks::list_addons)
            .then_output(|| op::list_addons::ListAddonsOutput::builder().addons("vpc-cni").addons("aws-ebs-csi-driver").build());
        let delete_addon = mock!(Eks::delete_addon).then_output(|| op::delete_addon::DeleteAddonOutput::builder().build());
        let delete_cluster = mock!(Eks::delete_cluster).then_output(|| op::delete_cluster::DeleteClusterOutput::builder().build());
        let cluster_gone = mock!(Eks::describe_cluster).then_error(|| DescribeClusterError::ResourceNotFoundException(not_found()));
        let eks = mock_client!(
            aws_sdk_eks,
            RuleMode::MatchAny,
            &[&delete_group, &group_gone, &list_addons, &delete_addon, &delete_cluster, &cluster_gone]
        );
        let aws = Aws { eks, ..Aws::unreachable(&crate::config::Config::default()) };
        let recorder = Arc::new(crate::output::Recorder::default());
        let reporter = PhaseReporter::new(PhaseName::Teardown, recorder.clone());
        let del = Deleter {
            aws: &aws,
            extras: &extras::RealEks,
            reporter: &reporter,
            errors: Mutex::default(),
            unreleased: Mutex::default(),
            backoff: Backoff { budget: Duration::from_secs(1) },
        };
        let mut inv = Inventory::default();
        inv.add(Kind::Cluster, [Found { component: "cluster".into(), id: "neon".into(), ..Found::default() }]);
        inv.add(Kind::Nodegroup, [Found { component: "nodegroup".into(), id: "neon-nodes".into(), ..Found::default() }]);
        delete_eks(&del, &inv, "neon").await;
        assert!(del.errors.lock().unwrap().is_empty(), "{:?}", del.errors.lock().unwrap());
        let calls = [&delete_group, &group_gone, &list_addons, &delete_addon, &delete_cluster, &cluster_gone].map(|r| r.num_calls());
        // DescribeCluster runs twice: first for the Kubernetes step's endpoint (not found here, so
        // that step is skipped with a warning), then to wait for the deletion.
        assert_eq!(calls, [1, 1, 1, 2, 1, 2]);
        let warned = recorder.events().iter().any(|e| {
            matches!(e, crate::output::Event::Message { level: crate::output::Level::Warn, text, .. } if text.contains("is not reachable"))
        });
        assert!(warned, "an unreachable cluster is a warning, not a silent skip");
    }
}
