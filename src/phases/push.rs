//! `push`: the built images to ECR (`<account>.dkr.ecr.<region>.amazonaws.com/<prefix>/<image>`)
//! or to `images.registry` (`<registry>/<image>`), keeping each image's content tag. The
//! manifest digest (`repo@sha256:…`) is recorded for deploy.
//!
//! An image the registry already has under its tag is not pushed again (the tag is the hash of
//! the image's content), and layers the registry has are not uploaded: a re-push sends 0 bytes.

use std::time::SystemTime;

use bollard::auth::DockerCredentials;

use crate::aws::Aws;
use crate::aws::ecr_auth::{self, EcrAuth};
use crate::docker::Docker;
use crate::engine::{Context, PhaseName, PhasePlan};
use crate::output::{PlannedAction, Unit, Verb};
use crate::state::{ImageRecord, PushRecord};

pub const USERNAME_ENV: &str = "NEONCTL_AWS_REGISTRY_USERNAME";
pub const PASSWORD_ENV: &str = "NEONCTL_AWS_REGISTRY_PASSWORD";

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("no image {image} in the state; run `neonctl-aws images` first")]
    NotBuilt { image: String },
    #[error("the engine no longer has {tag}; run `neonctl-aws images` to rebuild it")]
    ImageGone { tag: String },
    #[error("set both {USERNAME_ENV} and {PASSWORD_ENV}, or neither (only {0} is set)")]
    HalfCredentials(&'static str),
    #[error(
        "cannot find the AWS account for ECR: {detail}. Check the AWS credentials, or push elsewhere with images.registry in the config"
    )]
    Account { detail: String },
}

/// Where images go and how to log in there.
enum Target {
    Ecr { registry: String, aws: Box<Aws>, auth: EcrAuth },
    Registry { registry: String, credentials: Option<DockerCredentials> },
}

impl Target {
    async fn resolve(cx: &Context) -> anyhow::Result<Self> {
        if let Some(registry) = &cx.config.images.registry {
            let credentials = match (std::env::var(USERNAME_ENV).ok(), std::env::var(PASSWORD_ENV).ok()) {
                (Some(username), Some(password)) => Some(DockerCredentials {
                    username: Some(username),
                    password: Some(password),
                    serveraddress: registry.split('/').next().map(str::to_string),
                    ..Default::default()
                }),
                (None, None) => None,
                (Some(_), None) => return Err(PushError::HalfCredentials(USERNAME_ENV).into()),
                (None, Some(_)) => return Err(PushError::HalfCredentials(PASSWORD_ENV).into()),
            };
            return Ok(Target::Registry { registry: registry.trim_end_matches('/').to_string(), credentials });
        }
        let aws = Aws::connect(&cx.config, cx.calls.clone()).await?;
        let identity = aws.sts.get_caller_identity().send().await.map_err(|e| PushError::Account { detail: ecr_auth::error_chain(&e) })?;
        let account = identity.account().ok_or_else(|| PushError::Account { detail: "STS returned no account".into() })?;
        Ok(Target::Ecr { registry: ecr_auth::registry(account, &aws.region), aws: Box::new(aws), auth: EcrAuth::default() })
    }

    fn repository(&self, prefix: &str, image: &str) -> String {
        match self {
            Target::Ecr { registry, .. } => format!("{registry}/{prefix}/{image}"),
            Target::Registry { registry, .. } => format!("{registry}/{image}"),
        }
    }

    fn registry(&self) -> &str {
        match self {
            Target::Ecr { registry, .. } | Target::Registry { registry, .. } => registry,
        }
    }

    /// What to check when the registry refuses us.
    fn hint(&self) -> &'static str {
        match self {
            Target::Ecr { .. } => "the ECR repositories come from `neonctl-aws infra`; run it first",
            Target::Registry { .. } => {
                "check images.registry and the registry credentials (NEONCTL_AWS_REGISTRY_USERNAME, NEONCTL_AWS_REGISTRY_PASSWORD)"
            }
        }
    }

    /// Fresh credentials (an ECR token is fetched again once it is due).
    async fn credentials(&self) -> anyhow::Result<Option<DockerCredentials>> {
        match self {
            Target::Ecr { registry, aws, auth } => Ok(Some(auth.credentials(&aws.ecr, registry, SystemTime::now()).await?)),
            Target::Registry { credentials, .. } => Ok(credentials.clone()),
        }
    }
}

/// The content tag of a local image name `<prefix>/<image>:<tag>`.
fn content_tag(local: &str) -> &str {
    local.rsplit_once(':').map(|(_, tag)| tag).unwrap_or(local)
}

pub struct Push;

impl Push {
    fn image(cx: &Context, name: &str) -> Result<ImageRecord, PushError> {
        cx.state().images.get(name).cloned().ok_or_else(|| PushError::NotBuilt { image: name.into() })
    }

    /// The recorded push of `image` to `reference`, if the registry still has that digest.
    async fn already_there(
        docker: &Docker,
        target: &Target,
        reference: &str,
        known: Option<&PushRecord>,
    ) -> anyhow::Result<Option<String>> {
        let remote =
            docker.remote_digest(reference, target.credentials().await?).await.map_err(|e| anyhow::Error::new(e).context(target.hint()))?;
        Ok(match (remote, known) {
            (Some(digest), Some(known)) if known.digest_ref.ends_with(&digest) => Some(digest),
            // Same tag, same content: adopt what the registry has.
            (Some(digest), None) => Some(digest),
            _ => None,
        })
    }

    async fn plan_inner(&self, cx: &Context) -> anyhow::Result<PhasePlan> {
        let mut plan = PhasePlan::default();
        let state = cx.state();
        let (target, docker) = if state.images.is_empty() {
            (None, None)
        } else {
            match async { anyhow::Ok((Target::resolve(cx).await?, Docker::connect(cx.calls.clone()).await?)) }.await {
                Ok((target, docker)) => (Some(target), Some(docker)),
                Err(e) => {
                    plan.notes.push(format!("{e:#}; assuming the registry has no image yet"));
                    (None, None)
                }
            }
        };
        for name in crate::IMAGES {
            let Some(image) = state.images.get(name) else {
                plan.actions.push(PlannedAction::new(Verb::Create, format!("push {name}")).detail("after `images`"));
                continue;
            };
            let (Some(target), Some(docker)) = (&target, &docker) else {
                plan.actions.push(PlannedAction::new(Verb::Create, format!("push {name}")).detail(image.tag.clone()));
                continue;
            };
            let reference = format!("{}:{}", target.repository(&cx.config.prefix, name), content_tag(&image.tag));
            let known = state.push.get(name).filter(|p| p.tag == reference);
            match Self::already_there(docker, target, &reference, known).await? {
                Some(_) if known.is_some() => {}
                Some(_) => plan.actions.push(PlannedAction::new(Verb::Adopt, format!("push {name}")).detail(reference)),
                None => plan.actions.push(PlannedAction::new(Verb::Create, format!("push {name}")).detail(reference)),
            }
        }
        Ok(plan)
    }

    async fn apply_inner(&self, cx: &Context) -> anyhow::Result<()> {
        let reporter = cx.reporter(PhaseName::Push);
        let images: Vec<(&str, ImageRecord)> =
            crate::IMAGES.iter().map(|n| Ok((*n, Self::image(cx, n)?))).collect::<Result<_, PushError>>()?;
        let target = Target::resolve(cx).await?;
        let docker = Docker::connect(cx.calls.clone()).await?;
        let mut uploaded = 0u64;
        for (name, image) in images {
            let repo = target.repository(&cx.config.prefix, name);
            let tag = content_tag(&image.tag);
            let reference = format!("{repo}:{tag}");
            let known = cx.state().push.get(name).filter(|p| p.tag == reference).cloned();
            let record = match Self::already_there(&docker, &target, &reference, known.as_ref()).await? {
                Some(_) if known.is_some() => continue,
                Some(digest) => {
                    PushRecord { tag: reference, digest_ref: format!("{repo}@{digest}"), image_id: image.id.clone(), uploaded_bytes: 0 }
                }
                None => {
                    if docker.image(&image.tag).await?.is_none() {
                        return Err(PushError::ImageGone { tag: image.tag }.into());
                    }
                    docker.tag(&image.tag, &repo, tag).await?;
                    let step = reporter.step(format!("push {name}"));
                    let credentials = target.credentials().await?;
                    let pushed = docker
                        .push(&repo, tag, credentials, |current, total| step.progress(current, Some(total), Unit::Bytes))
                        .await
                        .map_err(|e| anyhow::Error::new(e).context(target.hint()))?;
                    step.finish();
                    reporter.info(format!("pushed {reference} ({} uploaded)", indicatif::HumanBytes(pushed.uploaded_bytes)));
                    PushRecord {
                        tag: reference,
                        digest_ref: format!("{repo}@{}", pushed.digest),
                        image_id: image.id.clone(),
                        uploaded_bytes: pushed.uploaded_bytes,
                    }
                }
            };
            uploaded += record.uploaded_bytes;
            cx.update_state(|s| s.push.insert(name.to_string(), record))?;
        }
        reporter.info(format!("uploaded {uploaded} bytes to {}", target.registry()));
        Ok(())
    }
}

crate::engine::phase_from_async_fns!(Push, PhaseName::Push);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_tags_are_the_part_after_the_last_colon() {
        assert_eq!(content_tag("neon/pageserver:0123456789ab"), "0123456789ab");
        assert_eq!(content_tag("127.0.0.1:5000/neon/proxy:abc"), "abc");
    }
}
