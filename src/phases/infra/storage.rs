//! The S3 bucket (pageserver layers, safekeeper WAL) and one ECR repository per image.

use aws_sdk_s3::types as s3t;

use super::drift::Configured;
use super::{Run, spec};
use crate::aws::call::{CallError, call};
use crate::aws::inventory::{self, Kind};
use crate::aws::tags::Tags;

#[derive(Debug, thiserror::Error)]
pub enum BucketError {
    #[error(
        "the S3 bucket name `{0}` belongs to another AWS account (bucket names are global); nothing was created. \
         Set bucket.name in the config to a name of your own and run infra again"
    )]
    Taken(String),
}

/// Tags, public access block, encryption, versioning, lifecycle and policy of the bucket.
pub fn bucket_settings(config: &crate::config::Config, name: &str) -> Configured {
    let b = &config.bucket;
    Configured::new(
        "bucket",
        format!("s3 bucket {name}"),
        format!("v1 {} {} {name}", b.intelligent_tiering_after_days, b.noncurrent_version_expiration_days),
    )
}

/// The lifecycle policy of a repository (`lifecycle`: `spec::ecr_lifecycle`'s text).
pub fn repository_settings(component: &str, name: &str, lifecycle: &str) -> Configured {
    Configured::new(component, format!("ecr lifecycle of {name}"), lifecycle)
}

/// Creates or adopts the bucket, then applies its settings. Returns its name.
pub async fn bucket(run: &Run<'_>) -> anyhow::Result<String> {
    let s3 = &run.aws.s3;
    let name = spec::bucket_name(&run.cx.config, &run.id.account);
    let existing = inventory::bucket(&run.aws, &name).await?;
    let tags = Tags::new(&run.prefix, "bucket");
    run.ensure(Kind::Bucket, "bucket", &name, existing.as_ref(), |_| async {
        let mut create = s3.create_bucket().bucket(&name).object_ownership(s3t::ObjectOwnership::BucketOwnerEnforced);
        if run.region != "us-east-1" {
            let location = s3t::BucketLocationConstraint::from(run.region.as_str());
            create = create.create_bucket_configuration(s3t::CreateBucketConfiguration::builder().location_constraint(location).build());
        }
        match create.send().await.map_err(call("CreateBucket", &name)) {
            Ok(_) => Ok(name.clone()),
            Err(e) if e.is("BucketAlreadyOwnedByYou") => Ok(name.clone()),
            Err(e) => Err(e),
        }
    })
    .await
    .map_err(|e| match e.root_cause().downcast_ref::<CallError>() {
        Some(c) if c.is("BucketAlreadyExists") => BucketError::Taken(name.clone()).into(),
        _ => e,
    })?;

    let config = &run.cx.config.bucket;
    run.configure(&bucket_settings(&run.cx.config, &name), || async {
        s3.put_bucket_tagging().bucket(&name).tagging(tags.s3()).send().await.map_err(call("PutBucketTagging", &name))?;
        let block = s3t::PublicAccessBlockConfiguration::builder()
            .block_public_acls(true)
            .ignore_public_acls(true)
            .block_public_policy(true)
            .restrict_public_buckets(true)
            .build();
        s3.put_public_access_block()
            .bucket(&name)
            .public_access_block_configuration(block)
            .send()
            .await
            .map_err(call("PutPublicAccessBlock", &name))?;
        let sse = s3t::ServerSideEncryptionRule::builder()
            .apply_server_side_encryption_by_default(
                s3t::ServerSideEncryptionByDefault::builder()
                    .sse_algorithm(s3t::ServerSideEncryption::Aes256)
                    .build()
                    .expect("algorithm set"),
            )
            .bucket_key_enabled(true)
            .build();
        let sse = s3t::ServerSideEncryptionConfiguration::builder().rules(sse).build().expect("rules set");
        s3.put_bucket_encryption()
            .bucket(&name)
            .server_side_encryption_configuration(sse)
            .send()
            .await
            .map_err(call("PutBucketEncryption", &name))?;
        let versioning = s3t::VersioningConfiguration::builder().status(s3t::BucketVersioningStatus::Enabled).build();
        s3.put_bucket_versioning()
            .bucket(&name)
            .versioning_configuration(versioning)
            .send()
            .await
            .map_err(call("PutBucketVersioning", &name))?;
        s3.put_bucket_lifecycle_configuration()
            .bucket(&name)
            .lifecycle_configuration(lifecycle(config.intelligent_tiering_after_days, config.noncurrent_version_expiration_days))
            .send()
            .await
            .map_err(call("PutBucketLifecycleConfiguration", &name))?;
        s3.put_bucket_policy()
            .bucket(&name)
            .policy(spec::tls_only(&name).to_string())
            .send()
            .await
            .map_err(call("PutBucketPolicy", &name))?;
        Ok(())
    })
    .await?;
    run.output("bucket", "name", &name)?;
    Ok(name)
}

fn lifecycle(tiering_days: u32, noncurrent_days: u32) -> s3t::BucketLifecycleConfiguration {
    let everything = || s3t::LifecycleRuleFilter::builder().prefix("").build();
    let tiering = s3t::LifecycleRule::builder()
        .id("intelligent-tiering")
        .filter(everything())
        .status(s3t::ExpirationStatus::Enabled)
        .transitions(
            s3t::Transition::builder().days(tiering_days as i32).storage_class(s3t::TransitionStorageClass::IntelligentTiering).build(),
        )
        .build()
        .expect("status set");
    let cleanup = s3t::LifecycleRule::builder()
        .id("expire-noncurrent-versions")
        .filter(everything())
        .status(s3t::ExpirationStatus::Enabled)
        .noncurrent_version_expiration(s3t::NoncurrentVersionExpiration::builder().noncurrent_days(noncurrent_days as i32).build())
        .abort_incomplete_multipart_upload(s3t::AbortIncompleteMultipartUpload::builder().days_after_initiation(7).build())
        .build()
        .expect("status set");
    s3t::BucketLifecycleConfiguration::builder().rules(tiering).rules(cleanup).build().expect("rules set")
}

/// One repository per image, `<prefix>/<image>`, scanned on push, keeping the last N images.
pub async fn repositories(run: &Run<'_>) -> anyhow::Result<()> {
    let ecr = &run.aws.ecr;
    let existing = inventory::repositories(&run.aws, &run.prefix).await?;
    let keep = run.cx.config.ecr.keep_images;
    let lifecycle = spec::ecr_lifecycle(keep).to_string();
    let each = crate::IMAGES.iter().map(|image| {
        let existing = &existing;
        let lifecycle = &lifecycle;
        async move {
            let component = format!("ecr-{image}");
            let name = format!("{}/{image}", run.prefix);
            let found = existing.iter().find(|f| f.id == name);
            let tags = Tags::new(&run.prefix, &component);
            run.ensure(Kind::Repository, &component, &name, found, |_| async {
                let scan = aws_sdk_ecr::types::ImageScanningConfiguration::builder().scan_on_push(true).build();
                match ecr
                    .create_repository()
                    .repository_name(&name)
                    .image_scanning_configuration(scan)
                    .set_tags(Some(tags.ecr()))
                    .send()
                    .await
                {
                    Ok(out) => Ok(out.repository().and_then(|r| r.repository_name()).unwrap_or(&name).to_string()),
                    Err(e) => {
                        let e = call("CreateRepository", &name)(e);
                        if e.is("RepositoryAlreadyExistsException") { Ok(name.clone()) } else { Err(e) }
                    }
                }
            })
            .await?;
            let uri = match found.and_then(|f| f.extra.get("uri")) {
                Some(uri) => uri.clone(),
                None => format!("{}.dkr.ecr.{}.amazonaws.com/{name}", run.id.account, run.region),
            };
            run.output(&component, "uri", &uri)?;
            run.configure(&repository_settings(&component, &name, lifecycle), || async {
                ecr.put_lifecycle_policy()
                    .repository_name(&name)
                    .lifecycle_policy_text(lifecycle)
                    .send()
                    .await
                    .map_err(call("PutLifecyclePolicy", &name))?;
                Ok(())
            })
            .await
        }
    });
    futures::future::try_join_all(each).await?;
    Ok(())
}
