//! ECR credentials against moto's GetAuthorizationToken: decoded, cached, refreshed. moto's
//! proxyEndpoint is a real AWS host and is never contacted; its expiresAt lies in the past,
//! which the cache treats as a short fixed validity.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use neonctl_aws::aws::Aws;
use neonctl_aws::aws::ecr_auth::{self, EcrAuth, FALLBACK_LIFETIME};
use neonctl_aws::calls::{CallCount, Calls};
use neonctl_aws::config::Config;

use crate::stand_ins::{free_port, http_get, wait_for};

/// moto's server on 127.0.0.1; stopped on drop.
struct Moto {
    port: u16,
    child: Child,
}

impl Moto {
    fn start() -> Self {
        let program = std::env::var("NEONCTL_TEST_MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
        let port = free_port();
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {program}: {e}"));
        let moto = Self { port, child };
        assert!(wait_for(30, || http_get(port, "/moto-api/").is_some()), "moto answers");
        moto
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn ecr_tokens_are_decoded_cached_and_refreshed() {
    let moto = Moto::start();
    let sdk = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(format!("http://127.0.0.1:{}", moto.port))
        .credentials_provider(aws_sdk_sts::config::SharedCredentialsProvider::new(aws_credential_types::Credentials::for_tests()))
        .build();
    let calls = Arc::new(Calls::default());
    let aws = Aws::from_sdk(sdk, &Config::default(), calls.clone()).unwrap();

    let account = aws.sts.get_caller_identity().send().await.unwrap().account().unwrap().to_string();
    let registry = ecr_auth::registry(&account, "us-east-1");
    assert_eq!(registry, format!("{account}.dkr.ecr.us-east-1.amazonaws.com"));

    let auth = EcrAuth::default();
    let now = SystemTime::now();
    let creds = auth.credentials(&aws.ecr, &registry, now).await.unwrap();
    assert_eq!(creds.username.as_deref(), Some("AWS"));
    assert!(creds.password.as_deref().is_some_and(|p| !p.is_empty()));
    assert_eq!(creds.serveraddress.as_deref(), Some(registry.as_str()));
    assert_eq!(calls.snapshot()["ecr"], CallCount { read: 1, mutating: 0, ..Default::default() });
    assert!(!format!("{auth:?}").contains(creds.password.as_deref().unwrap()), "Debug never shows the token");

    // moto's token "expired" in 2015: it is used for the fallback window, then fetched again.
    auth.credentials(&aws.ecr, &registry, now + FALLBACK_LIFETIME - Duration::from_secs(1)).await.unwrap();
    assert_eq!(calls.snapshot()["ecr"].read, 1, "cached within the window");
    auth.credentials(&aws.ecr, &registry, now + FALLBACK_LIFETIME).await.unwrap();
    assert_eq!(calls.snapshot()["ecr"].read, 2, "refreshed once due");
}
