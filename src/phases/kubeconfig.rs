//! `kubeconfig` and `token`: kubectl access to the EKS cluster without the aws CLI.
//!
//! `kubeconfig` merges a context whose user runs `neonctl-aws token` as its exec plugin;
//! `token` prints the ExecCredential kubectl asks that plugin for.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Context as _, anyhow};
use aws_credential_types::provider::ProvideCredentials;
use serde_json::{Value, json};

use crate::aws::{Aws, eks_token};
use crate::calls::Calls;
use crate::cli::{KubeconfigArgs, TokenArgs};
use crate::config::Config;
use crate::output::Printer;

pub async fn token(args: &TokenArgs, config: &Config, calls: Arc<Calls>) -> anyhow::Result<String> {
    let cluster = args.cluster.as_deref().unwrap_or(&config.prefix);
    let aws = Aws::connect(config, calls).await?;
    let provider = aws.sdk.credentials_provider().ok_or_else(|| anyhow!("no AWS credentials provider is configured"))?;
    let credentials = provider
        .provide_credentials()
        .await
        .context("resolving AWS credentials for the EKS token (set AWS_PROFILE, or the AWS_ACCESS_KEY_ID pair)")?;
    let token = eks_token::token(cluster, &config.region, &credentials, SystemTime::now())?;
    Ok(eks_token::exec_credential(&token).to_string())
}

pub async fn kubeconfig(args: &KubeconfigArgs, config: &Config, calls: Arc<Calls>, printer: &Printer) -> anyhow::Result<()> {
    let aws = Aws::connect(config, calls).await?;
    let name = &config.prefix;
    let cluster = aws
        .eks
        .describe_cluster()
        .name(name)
        .send()
        .await
        .map_err(|e| match e.as_service_error() {
            Some(se) if se.is_resource_not_found_exception() => {
                anyhow!("EKS cluster `{name}` does not exist in {}: run `neonctl-aws infra` first", config.region)
            }
            _ => anyhow::Error::new(e).context(format!("describing EKS cluster `{name}` in {}", config.region)),
        })?
        .cluster
        .ok_or_else(|| anyhow!("EKS returned no cluster for `{name}`"))?;
    let endpoint = cluster.endpoint.ok_or_else(|| anyhow!("EKS cluster `{name}` has no endpoint yet: wait until it is ACTIVE"))?;
    let ca = cluster
        .certificate_authority
        .and_then(|c| c.data)
        .ok_or_else(|| anyhow!("EKS cluster `{name}` has no certificate authority yet: wait until it is ACTIVE"))?;
    let path = match &args.file {
        Some(file) => file.clone(),
        None => default_kubeconfig_path()?,
    };
    let context = args.context.clone().unwrap_or_else(|| name.clone());
    let binary = std::env::current_exe().context("finding this binary's path for the exec plugin")?;
    let existing = read_kubeconfig(&path)?;
    let entry = Entry { context: &context, server: &endpoint, ca: &ca, cluster: name, region: &config.region, binary: &binary };
    let merged = merge(existing, &entry);
    write_private(&path, &serde_saphyr::to_string(&merged).context("serializing the kubeconfig")?)
        .with_context(|| format!("writing {}", path.display()))?;
    printer.result_line(&format!("context `{context}` written to {}; try: kubectl --context {context} get nodes", path.display()));
    Ok(())
}

fn default_kubeconfig_path() -> anyhow::Result<PathBuf> {
    if let Some(first) = std::env::var_os("KUBECONFIG").and_then(|v| std::env::split_paths(&v).next()) {
        return Ok(first);
    }
    let home = std::env::var_os("HOME").ok_or_else(|| anyhow!("HOME is not set: pass --file"))?;
    Ok(PathBuf::from(home).join(".kube").join("config"))
}

fn read_kubeconfig(path: &Path) -> anyhow::Result<Option<Value>> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => Ok(None),
        Ok(text) => serde_saphyr::from_str(&text)
            .map(Some)
            .with_context(|| format!("{} is not a valid kubeconfig; fix it or pass --file for another", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

struct Entry<'a> {
    context: &'a str,
    server: &'a str,
    ca: &'a str,
    cluster: &'a str,
    region: &'a str,
    binary: &'a Path,
}

/// Upserts the cluster, user and context named after `entry.context` and makes it current;
/// every other entry is kept as it was.
fn merge(existing: Option<Value>, entry: &Entry) -> Value {
    let mut doc = existing.unwrap_or_else(|| json!({"apiVersion": "v1", "kind": "Config", "preferences": {}}));
    let name = entry.context;
    let user = format!("neonctl-aws-{name}");
    let upsert = |doc: &mut Value, list: &str, item: Value| {
        let key = item["name"].clone();
        let items = doc[list].as_array_mut().map(std::mem::take).unwrap_or_default();
        let mut kept: Vec<Value> = items.into_iter().filter(|i| i["name"] != key).collect();
        kept.push(item);
        doc[list] = Value::Array(kept);
    };
    upsert(&mut doc, "clusters", json!({"name": name, "cluster": {"server": entry.server, "certificate-authority-data": entry.ca}}));
    upsert(
        &mut doc,
        "users",
        json!({"name": user, "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": entry.binary.display().to_string(),
            "args": ["token", "--cluster", entry.cluster, "--region", entry.region],
            "interactiveMode": "Never",
        }}}),
    );
    upsert(&mut doc, "contexts", json!({"name": name, "context": {"cluster": name, "user": user}}));
    doc["current-context"] = json!(name);
    doc
}

/// Kubeconfigs hold credentials of other clusters too: written 0600, atomically.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, text.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_keeps_other_entries_and_replaces_ours() {
        let existing: Value = serde_saphyr::from_str(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: other\n  cluster: {server: https://other}\n- name: neon\n  cluster: {server: https://stale}\n\
             users:\n- name: other-user\n  user: {token: x}\ncontexts:\n- name: other\n  context: {cluster: other, user: other-user}\ncurrent-context: other\n",
        )
        .unwrap();
        let entry = Entry {
            context: "neon",
            server: "https://ABC.gr7.us-east-1.eks.amazonaws.com",
            ca: "Q0E=",
            cluster: "neon",
            region: "us-east-1",
            binary: Path::new("/usr/local/bin/neonctl-aws"),
        };
        let merged = merge(Some(existing), &entry);
        insta::assert_snapshot!(serde_saphyr::to_string(&merged).unwrap());
        // Merging twice changes nothing.
        assert_eq!(merge(Some(merged.clone()), &entry), merged);
    }
}
