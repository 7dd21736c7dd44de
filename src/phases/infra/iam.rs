//! IAM: the cluster and node roles, the cluster's OIDC provider, and the roles for service
//! accounts (pageserver, safekeeper, EBS CSI controller, VPC CNI).

use serde_json::Value;

use super::Run;
use super::drift::Configured;
use super::spec::{self, RoleSpec, Trust};
use futures::TryFutureExt;

use crate::aws::call::{Backoff, CallError, call, found, is_iam_propagation};
use crate::aws::inventory::{self, Found, Kind};
use crate::aws::tags::{CLUSTER_TAG, Tags};

pub fn role_component(suffix: &str) -> String {
    format!("role-{suffix}")
}

/// The cluster role and the node role: `(cluster ARN, node ARN)`.
pub async fn base_roles(run: &Run<'_>) -> anyhow::Result<(String, String)> {
    let existing = inventory::roles(&run.aws, &run.prefix).await?;
    let policies = |role: &RoleSpec| RolePolicies::of(role, &run.prefix, &run.id.partition, None, "");
    let (cluster, node) = futures::try_join!(
        ensure_role(run, &existing, &spec::CLUSTER_ROLE, policies(&spec::CLUSTER_ROLE)),
        ensure_role(run, &existing, &spec::NODE_ROLE, policies(&spec::NODE_ROLE)),
    )?;
    Ok((cluster, node))
}

/// The OIDC provider of the cluster's issuer: its ARN is derived from the issuer URL.
pub async fn oidc_provider(run: &Run<'_>, issuer: &str) -> anyhow::Result<String> {
    let host = issuer.trim_start_matches("https://");
    let arn = format!("arn:{}:iam::{}:oidc-provider/{host}", run.id.partition, run.id.account);
    let existing = found(
        run.aws
            .iam
            .get_open_id_connect_provider()
            .open_id_connect_provider_arn(&arn)
            .send()
            .await
            .map_err(call("GetOpenIDConnectProvider", &arn)),
    )?;
    if let Some(owner) =
        existing.as_ref().and_then(|p| p.tags().iter().find(|t| t.key() == CLUSTER_TAG)).map(|t| t.value()).filter(|v| *v != run.prefix)
    {
        anyhow::bail!(
            "the OIDC provider {arn} of cluster {} is tagged {CLUSTER_TAG}={owner}: it belongs to another deployment and is not adopted. \
             Run `neonctl-aws teardown --prefix {owner}` or remove its tag",
            run.prefix
        );
    }
    let existing = existing.map(|_| Found { component: "oidc-provider".into(), id: arn.clone(), ..Found::default() });
    let tags = Tags::new(&run.prefix, "oidc-provider");
    run.ensure(Kind::OidcProvider, "oidc-provider", host, existing.as_ref(), |_| async {
        // No thumbprint: IAM validates EKS issuers against its own trusted CAs.
        let out = run
            .aws
            .iam
            .create_open_id_connect_provider()
            .url(issuer)
            .client_id_list("sts.amazonaws.com")
            .set_tags(Some(tags.iam()))
            .send()
            .await
            .map_err(call("CreateOpenIDConnectProvider", issuer));
        match out {
            Ok(out) => Ok(out.open_id_connect_provider_arn().unwrap_or(&arn).to_string()),
            Err(e) if e.is("EntityAlreadyExists") => Ok(arn.clone()),
            Err(e) => Err(e),
        }
    })
    .await
}

/// The roles for service accounts, trusting only their own service account: `(suffix, ARN)`.
pub async fn irsa_roles(run: &Run<'_>, provider_arn: &str, issuer: &str, bucket: &str) -> anyhow::Result<Vec<(&'static str, String)>> {
    let existing = inventory::roles(&run.aws, &run.prefix).await?;
    let roles = spec::IRSA_ROLES.iter().map(|role| async {
        let policies = RolePolicies::of(role, &run.prefix, &run.id.partition, Some((provider_arn, issuer)), bucket);
        let arn = ensure_role(run, &existing, role, policies).await?;
        anyhow::Ok((role.suffix, arn))
    });
    futures::future::try_join_all(roles).await
}

/// What a role's policies are: trust, managed policy ARNs, the inline bucket policy.
pub struct RolePolicies {
    trust: String,
    managed: Vec<String>,
    inline: Option<String>,
}

impl RolePolicies {
    /// `oidc`: the provider ARN and issuer, which roles for service accounts trust.
    pub fn of(role: &RoleSpec, prefix: &str, partition: &str, oidc: Option<(&str, &str)>, bucket: &str) -> Self {
        let (provider_arn, issuer) = oidc.unwrap_or_default();
        RolePolicies {
            trust: trust(role, prefix, provider_arn, issuer).to_string(),
            managed: role.managed.iter().map(|p| format!("arn:{partition}:iam::aws:policy/{p}")).collect(),
            inline: role.bucket_access.then(|| spec::bucket_access(bucket).to_string()),
        }
    }

    pub fn settings(&self, prefix: &str, role: &RoleSpec) -> Configured {
        let settings = format!("{}|{:?}|{:?}", self.trust, self.managed, self.inline);
        Configured::new(role_component(role.suffix), format!("iam role {prefix}-{}", role.suffix), settings)
    }
}

/// The trust policy of `role`; service accounts need the OIDC provider and issuer.
fn trust(role: &RoleSpec, prefix: &str, provider_arn: &str, issuer: &str) -> Value {
    match role.trust {
        Trust::Service(service) => spec::trust_service(service),
        Trust::ServiceAccount(namespace, account) => spec::trust_service_account(provider_arn, issuer, namespace, account),
        Trust::NeonServiceAccount(component) => {
            let (namespace, account) = crate::render::service_account(prefix, component);
            spec::trust_service_account(provider_arn, issuer, &namespace, &account)
        }
    }
}

/// Creates or adopts `<prefix>-<suffix>` under the prefix's path, then makes its trust policy,
/// managed policies and bucket policy match (once per distinct setting).
async fn ensure_role(run: &Run<'_>, existing: &[Found], role: &RoleSpec, policies: RolePolicies) -> anyhow::Result<String> {
    let iam = &run.aws.iam;
    let name = format!("{}-{}", run.prefix, role.suffix);
    let component = role_component(role.suffix);
    let found = existing.iter().find(|f| f.id == name);
    let path = inventory::role_path(&run.prefix);
    let tags = Tags::new(&run.prefix, &component);
    let trust_text = &policies.trust;
    run.ensure(Kind::Role, &component, &name, found, |_| async {
        // A trust naming the OIDC provider created a moment ago can be refused until IAM sees it.
        let out = Backoff::IAM_PROPAGATION
            .retry(is_iam_propagation, || {
                iam.create_role()
                    .role_name(&name)
                    .path(&path)
                    .assume_role_policy_document(trust_text)
                    .description(format!("neonctl-aws {}: {}", run.prefix, role.suffix))
                    .set_tags(Some(tags.iam()))
                    .send()
                    .map_err(call("CreateRole", &name))
            })
            .await?;
        Ok(out.role().map(|r| r.role_name().to_string()).unwrap_or_else(|| name.clone()))
    })
    .await?;
    let arn = match found.and_then(|f| f.extra.get("arn")) {
        Some(arn) => arn.clone(),
        None => format!("arn:{}:iam::{}:role{path}{name}", run.id.partition, run.id.account),
    };
    run.output(&component, "arn", &arn)?;
    let (managed, inline) = (&policies.managed, &policies.inline);
    run.configure(&policies.settings(&run.prefix, role), || async {
        Backoff::IAM_PROPAGATION
            .retry(is_iam_propagation, || {
                iam.update_assume_role_policy()
                    .role_name(&name)
                    .policy_document(trust_text)
                    .send()
                    .map_err(call("UpdateAssumeRolePolicy", &name))
            })
            .await?;
        for policy in managed {
            iam.attach_role_policy()
                .role_name(&name)
                .policy_arn(policy)
                .send()
                .await
                .map_err(call("AttachRolePolicy", format!("{policy} to {name}")))?;
        }
        if let Some(document) = inline {
            iam.put_role_policy()
                .role_name(&name)
                .policy_name("bucket-access")
                .policy_document(document)
                .send()
                .await
                .map_err(call("PutRolePolicy", &name))?;
        }
        Ok::<(), CallError>(())
    })
    .await?;
    Ok(arn)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pageserver and safekeeper roles trust exactly the service accounts `render` creates
    /// for the same prefix; any drift would fail S3 access on a real cluster.
    #[test]
    fn irsa_trust_names_the_rendered_service_accounts() {
        let config = crate::config::Config { prefix: "acme".into(), ..Default::default() };
        let mut inputs = crate::render::RenderInputs::from_config(&config);
        inputs.pageserver_role_arn = Some("arn:aws:iam::123456789012:role/acme-pageserver".into());
        inputs.safekeeper_role_arn = Some("arn:aws:iam::123456789012:role/acme-safekeeper".into());
        let rendered: Vec<serde_json::Value> = crate::render::render(&inputs)
            .unwrap()
            .iter()
            .flat_map(|m| crate::k8s::apply::parse_manifests(&m.yaml).unwrap())
            .map(|o| serde_json::to_value(o).unwrap())
            .collect();
        for role in spec::IRSA_ROLES.iter().filter(|r| matches!(r.trust, Trust::NeonServiceAccount(_))) {
            let policy = trust(role, "acme", "arn:aws:iam::1:oidc-provider/x", "https://x");
            let subject = policy["Statement"][0]["Condition"]["StringEquals"]["x:sub"].as_str().unwrap().to_string();
            let annotated = rendered
                .iter()
                .find(|o| {
                    o["kind"] == "ServiceAccount"
                        && o["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
                            .as_str()
                            .is_some_and(|a| a.ends_with(&format!("acme-{}", role.suffix)))
                })
                .unwrap_or_else(|| panic!("a service account annotated with the {} role", role.suffix));
            let expected = format!(
                "system:serviceaccount:{}:{}",
                annotated["metadata"]["namespace"].as_str().unwrap(),
                annotated["metadata"]["name"].as_str().unwrap()
            );
            assert_eq!(subject, expected, "{} role", role.suffix);
        }
    }
}
