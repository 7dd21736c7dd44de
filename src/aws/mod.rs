//! AWS clients for one run: one SDK config, one client per service, every call counted.
//!
//! Endpoints come from the SDK's own settings (AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_<SERVICE>,
//! profiles), which is how the tests point everything at moto's server.

pub mod call;
pub mod ecr_auth;
pub mod eks_token;
pub mod inventory;
pub mod tags;

use std::sync::Arc;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeSerializationInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

use crate::calls::Calls;
use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum AwsSetupError {
    #[error(
        "aws.emulator is true but no AWS_ENDPOINT_URL is set: refusing to skip API calls against real AWS. \
         Set AWS_ENDPOINT_URL to the emulator, or remove aws.emulator from the config"
    )]
    EmulatorWithoutEndpoint,
}

/// Waits that take minutes on AWS and no time on an emulator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pace {
    /// Between two looks at something being deleted.
    pub poll: std::time::Duration,
    /// How long a delete blocked by a dependency is retried.
    pub dependency_budget: std::time::Duration,
}

impl Pace {
    pub const AWS: Pace = Pace { poll: std::time::Duration::from_secs(15), dependency_budget: call::Backoff::DEPENDENCY.budget };
    pub const EMULATOR: Pace = Pace { poll: std::time::Duration::from_secs(1), dependency_budget: std::time::Duration::from_secs(5) };
}

/// The clients of one run.
#[derive(Clone, Debug)]
pub struct Aws {
    pub sdk: SdkConfig,
    pub region: String,
    /// Set when the endpoint is overridden (an emulator or a private endpoint).
    pub endpoint: Option<String>,
    /// How long to wait for what AWS does slowly and an emulator at once.
    pub pace: Pace,
    pub ec2: aws_sdk_ec2::Client,
    pub eks: aws_sdk_eks::Client,
    pub iam: aws_sdk_iam::Client,
    pub s3: aws_sdk_s3::Client,
    pub ecr: aws_sdk_ecr::Client,
    pub sts: aws_sdk_sts::Client,
    /// Where every call is counted; clients built from this one (Kubernetes) count there too.
    pub calls: Arc<Calls>,
}

impl Aws {
    /// Loads credentials and endpoints lazily: nothing here touches the network, so `--plan`
    /// can build clients with no account and find out at the first call.
    pub async fn connect(config: &Config, calls: Arc<Calls>) -> Result<Self, AwsSetupError> {
        let sdk = aws_config::defaults(BehaviorVersion::latest()).region(Region::new(config.region.clone())).load().await;
        Self::from_sdk(sdk, config, calls)
    }

    pub fn from_sdk(sdk: SdkConfig, config: &Config, calls: Arc<Calls>) -> Result<Self, AwsSetupError> {
        let endpoint = sdk.endpoint_url().map(str::to_string);
        if config.aws.emulator && endpoint.is_none() {
            return Err(AwsSetupError::EmulatorWithoutEndpoint);
        }
        let counter = CountCalls(calls.clone());
        let s3 = aws_sdk_s3::config::Builder::from(&sdk)
            // Emulators and private endpoints are addressed by IP or a bare host name, where
            // virtual-hosted bucket names do not resolve.
            .force_path_style(endpoint.is_some())
            .interceptor(counter.clone())
            .build();
        Ok(Self {
            region: config.region.clone(),
            endpoint,
            pace: if config.aws.emulator { Pace::EMULATOR } else { Pace::AWS },
            ec2: aws_sdk_ec2::Client::from_conf(aws_sdk_ec2::config::Builder::from(&sdk).interceptor(counter.clone()).build()),
            eks: aws_sdk_eks::Client::from_conf(aws_sdk_eks::config::Builder::from(&sdk).interceptor(counter.clone()).build()),
            iam: aws_sdk_iam::Client::from_conf(aws_sdk_iam::config::Builder::from(&sdk).interceptor(counter.clone()).build()),
            ecr: aws_sdk_ecr::Client::from_conf(aws_sdk_ecr::config::Builder::from(&sdk).interceptor(counter.clone()).build()),
            sts: aws_sdk_sts::Client::from_conf(aws_sdk_sts::config::Builder::from(&sdk).interceptor(counter).build()),
            s3: aws_sdk_s3::Client::from_conf(s3),
            calls,
            sdk,
        })
    }
}

#[cfg(test)]
impl Aws {
    /// Clients that reach nothing (127.0.0.1:1), for tests that swap in mocked ones.
    pub fn unreachable(config: &Config) -> Self {
        let sdk = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .endpoint_url("http://127.0.0.1:1")
            .credentials_provider(aws_sdk_sts::config::SharedCredentialsProvider::new(aws_credential_types::Credentials::for_tests()))
            .build();
        Self::from_sdk(sdk, config, Arc::default()).expect("an endpoint is set")
    }
}

/// Counts each operation once (not each retry attempt), by service and read/mutating. The
/// operation metadata is in the bag from serialization on, not yet at execution start.
#[derive(Clone, Debug)]
struct CountCalls(Arc<Calls>);

impl Intercept for CountCalls {
    fn name(&self) -> &'static str {
        "neonctl-aws call counter"
    }

    fn read_before_serialization(
        &self,
        _: &BeforeSerializationInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(meta) = cfg.load::<Metadata>() {
            self.0.record_operation(&meta.service().to_ascii_lowercase(), meta.name());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::CallCount;

    #[tokio::test]
    async fn every_operation_is_counted_once_by_service() {
        let sdk = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url("http://127.0.0.1:1")
            .credentials_provider(aws_sdk_sts::config::SharedCredentialsProvider::new(aws_credential_types::Credentials::for_tests()))
            .build();
        let calls = Arc::new(Calls::default());
        let aws = Aws::from_sdk(sdk, &Config::default(), calls.clone()).unwrap();
        // Nothing listens on port 1: the calls fail, but each was made once.
        assert!(aws.sts.get_caller_identity().send().await.is_err());
        assert!(aws.ec2.create_vpc().cidr_block("10.0.0.0/16").send().await.is_err());
        assert!(aws.ec2.describe_vpcs().send().await.is_err());
        let counted = calls.snapshot();
        assert_eq!(counted["sts"], CallCount { read: 1, mutating: 0, ..Default::default() });
        assert_eq!((counted["ec2"].read, counted["ec2"].mutating), (1, 1));
    }
}
