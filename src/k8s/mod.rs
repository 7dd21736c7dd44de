//! Kubernetes access: a client for the EKS cluster from `infra` (endpoint + CA + a signed EKS
//! token, no aws CLI) or for any cluster from a kubeconfig; and [`apply`], which rolls the
//! rendered manifests out.

pub mod apply;
pub mod cleanup;
pub mod drain;

use std::path::Path;
use std::sync::Arc;

use kube::Client;
use kube::config::{AuthInfo, Cluster, Context, KubeConfigOptions, Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext};

use crate::aws::eks_token::EksToken;
use crate::calls::Calls;
use crate::state::ClusterAccess;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("building a Kubernetes client for EKS cluster {cluster} at {endpoint}: {source}")]
    Eks { cluster: String, endpoint: String, source: Box<dyn std::error::Error + Send + Sync> },
    #[error("loading kubeconfig {what}: {source}. Check the file and --context")]
    Kubeconfig { what: String, source: Box<dyn std::error::Error + Send + Sync> },
}

/// A client for an EKS cluster, authenticated with `token` (valid 14 minutes: build a new
/// client for each phase rather than keeping one).
pub async fn eks_client(cluster: &str, endpoint: &str, ca_data: &str, token: &EksToken, calls: Arc<Calls>) -> Result<Client, ClientError> {
    let fail = |source: Box<dyn std::error::Error + Send + Sync>| ClientError::Eks {
        cluster: cluster.to_string(),
        endpoint: endpoint.to_string(),
        source,
    };
    let user = "neonctl-aws";
    let kubeconfig = Kubeconfig {
        clusters: vec![NamedCluster {
            name: cluster.to_string(),
            cluster: Some(Cluster {
                server: Some(endpoint.to_string()),
                certificate_authority_data: Some(ca_data.to_string()),
                ..Default::default()
            }),
            ..Default::default()
        }],
        auth_infos: vec![NamedAuthInfo {
            name: user.to_string(),
            auth_info: Some(AuthInfo { token: Some(token.token.clone().into()), ..Default::default() }),
            ..Default::default()
        }],
        contexts: vec![NamedContext {
            name: cluster.to_string(),
            context: Some(Context { cluster: cluster.to_string(), user: Some(user.to_string()), ..Default::default() }),
            ..Default::default()
        }],
        current_context: Some(cluster.to_string()),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.map_err(|e| fail(Box::new(e)))?;
    counted(config, calls).map_err(|e| fail(Box::new(e)))
}

/// A client from a kubeconfig (bring your own cluster): `path` or the usual $KUBECONFIG /
/// ~/.kube/config, and `context` or its current context.
pub async fn kubeconfig_client(path: Option<&Path>, context: Option<&str>, calls: Arc<Calls>) -> Result<Client, ClientError> {
    let what = path.map(|p| p.display().to_string()).unwrap_or_else(|| "from $KUBECONFIG or ~/.kube/config".into());
    let fail = |source: Box<dyn std::error::Error + Send + Sync>| ClientError::Kubeconfig { what: what.clone(), source };
    let options = KubeConfigOptions { context: context.map(str::to_string), ..Default::default() };
    let config = match path {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path).map_err(|e| fail(Box::new(e)))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options).await
        }
        None => kube::Config::from_kubeconfig(&options).await,
    }
    .map_err(|e| fail(Box::new(e)))?;
    counted(config, calls).map_err(|e| fail(Box::new(e)))
}

/// The service name Kubernetes calls are counted under in the json summary.
pub const KUBERNETES: &str = "kubernetes";

/// A client that counts every call in `calls`: reads (GET, and dry runs) and writes.
fn counted(config: kube::Config, calls: Arc<Calls>) -> Result<Client, kube::Error> {
    let count = tower::util::MapRequestLayer::new(move |request: http::Request<kube::client::Body>| {
        let dry_run = request.uri().query().is_some_and(|query| query.split('&').any(|pair| pair == "dryRun=All"));
        calls.record(KUBERNETES, request.method() != http::Method::GET && !dry_run);
        request
    });
    Ok(kube::client::ClientBuilder::try_from(config)?.with_layer(&count).build())
}

/// A client for the EKS cluster `cluster`: endpoint and CA from DescribeCluster, a fresh token
/// signed with the run's credentials.
pub async fn eks_cluster_client(aws: &crate::aws::Aws, cluster: &str) -> anyhow::Result<Client> {
    use anyhow::{Context as _, anyhow};
    use aws_credential_types::provider::ProvideCredentials;

    let described = aws.eks.describe_cluster().name(cluster).send().await.with_context(|| format!("describing EKS cluster {cluster}"))?;
    let info = described.cluster.ok_or_else(|| anyhow!("EKS returned no cluster {cluster}"))?;
    let endpoint = info.endpoint.ok_or_else(|| anyhow!("EKS cluster {cluster} has no endpoint"))?;
    let ca =
        info.certificate_authority.and_then(|c| c.data).ok_or_else(|| anyhow!("EKS cluster {cluster} has no certificate authority"))?;
    let provider = aws.sdk.credentials_provider().ok_or_else(|| anyhow!("no AWS credentials provider is configured"))?;
    let credentials = provider.provide_credentials().await.context("resolving AWS credentials for the EKS token")?;
    let token = crate::aws::eks_token::token(cluster, &aws.region, &credentials, std::time::SystemTime::now())?;
    Ok(eks_client(cluster, &endpoint, &ca, &token, aws.calls.clone()).await?)
}

/// The cluster a command talks to: the flags first; then the cluster the last deploy used;
/// then the EKS cluster of `infra`. `None`: there is none yet.
pub fn cluster_access(kubeconfig: Option<&Path>, context: Option<&str>, state: &crate::state::State) -> Option<ClusterAccess> {
    if kubeconfig.is_some() || context.is_some() {
        // Absolute, so that the state still names the file when run from another directory.
        let path = kubeconfig.map(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()));
        return Some(ClusterAccess::Kubeconfig { path, context: context.map(str::to_string) });
    }
    state
        .deploy
        .as_ref()
        .map(|d| d.cluster.clone())
        .or_else(|| state.infra.resources.get("cluster").and_then(|r| r.id.clone()).map(|cluster| ClusterAccess::Eks { cluster }))
}

/// A client for `access`.
pub async fn client_for(access: &ClusterAccess, config: &crate::config::Config, calls: Arc<Calls>) -> anyhow::Result<Client> {
    match access {
        ClusterAccess::Eks { cluster } => {
            let aws = crate::aws::Aws::connect(config, calls).await?;
            eks_cluster_client(&aws, cluster).await
        }
        ClusterAccess::Kubeconfig { path, context } => Ok(kubeconfig_client(path.as_deref(), context.as_deref(), calls).await?),
    }
}
