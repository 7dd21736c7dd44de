//! The Docker Engine through bollard: build from an in-memory tar, inspect, tag, push. Every
//! call is counted under `docker` (reads vs mutations), like the AWS calls.
//!
//! The engine is found the usual way (DOCKER_HOST, else the local socket) and the API version
//! is negotiated, so older engines (API 1.41) work.

use std::collections::BTreeMap;
use std::sync::Arc;

use bollard::auth::DockerCredentials;
use bollard::errors::Error as BollardError;
use bollard::query_parameters::{BuildImageOptionsBuilder, PushImageOptionsBuilder, TagImageOptionsBuilder};
use futures::StreamExt;

use crate::calls::Calls;

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error(
        "cannot reach the Docker Engine ({detail}). Start it, or point DOCKER_HOST at one; \
         `neonctl-aws prereqs --for images` checks it"
    )]
    Unreachable { detail: String },
    #[error("docker build of {tag} failed: {detail}{}", tail(last_lines))]
    Build { tag: String, detail: String, last_lines: Vec<String> },
    #[error("docker push of {reference} failed: {detail}")]
    Push { reference: String, detail: String },
    #[error("docker push of {reference} finished without reporting a digest; run push again")]
    NoDigest { reference: String },
    #[error("docker {action} {target}: {source}")]
    Api { action: &'static str, target: String, source: BollardError },
}

fn tail(lines: &[String]) -> String {
    if lines.is_empty() { String::new() } else { format!("; last output:\n  {}", lines.join("\n  ")) }
}

/// What a finished push reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// `sha256:...` of the manifest in the registry.
    pub digest: String,
    /// Layer bytes sent (layers the registry already had count 0).
    pub uploaded_bytes: u64,
}

/// Byte progress of one push, summed over its layers.
///
/// The engine's progress messages carry a layer id, but bollard's `PushImageInfo` drops it, so
/// layers are told apart by their total size (two layers of exactly equal size would be merged,
/// which only makes the progress bar shorter).
#[derive(Debug, Default)]
pub struct PushProgress {
    layers: BTreeMap<u64, u64>,
    digest: Option<String>,
}

impl PushProgress {
    /// Takes one progress message; returns (current, total) bytes over all layers seen.
    pub fn observe(&mut self, status: Option<&str>, current: Option<i64>, total: Option<i64>) -> (u64, u64) {
        if let (Some("Pushing"), Some(current), Some(total)) = (status, current, total) {
            let (current, total) = (current.max(0) as u64, total.max(0) as u64);
            let seen = self.layers.entry(total).or_default();
            *seen = (*seen).max(current.min(total));
        }
        if let Some(digest) = status.and_then(digest_in_status) {
            self.digest = Some(digest);
        }
        (self.layers.values().sum(), self.layers.keys().sum())
    }

    pub fn finish(self) -> Option<Pushed> {
        let uploaded_bytes = self.layers.values().sum();
        self.digest.map(|digest| Pushed { digest, uploaded_bytes })
    }
}

/// The engine's last push message: `<tag>: digest: sha256:<hex> size: <n>`.
fn digest_in_status(status: &str) -> Option<String> {
    let rest = &status[status.find("digest: ")? + "digest: ".len()..];
    let digest = rest.split_whitespace().next()?;
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| digest.to_string())
}

/// A connected, version-negotiated engine.
#[derive(Clone)]
pub struct Docker {
    inner: bollard::Docker,
    calls: Arc<Calls>,
}

/// What the engine knows of a local image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalImage {
    pub id: String,
    pub size: u64,
}

impl Docker {
    pub async fn connect(calls: Arc<Calls>) -> Result<Self, DockerError> {
        let unreachable = |e: BollardError| DockerError::Unreachable { detail: e.to_string() };
        let docker = bollard::Docker::connect_with_local_defaults().map_err(unreachable)?;
        calls.record("docker", false);
        let inner = docker.negotiate_version().await.map_err(unreachable)?;
        Ok(Self { inner, calls })
    }

    fn count(&self, mutating: bool) {
        self.calls.record("docker", mutating);
    }

    /// The local image `reference`, or None when the engine has no such image.
    pub async fn image(&self, reference: &str) -> Result<Option<LocalImage>, DockerError> {
        self.count(false);
        match self.inner.inspect_image(reference).await {
            Ok(image) => Ok(Some(LocalImage { id: image.id.unwrap_or_default(), size: image.size.unwrap_or_default().max(0) as u64 })),
            Err(BollardError::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
            Err(source) => Err(DockerError::Api { action: "inspecting image", target: reference.into(), source }),
        }
    }

    /// Builds `context` (an uncompressed tar holding `Dockerfile`) as `tag`. Each output line
    /// goes to `on_line`; returns the new image's id.
    pub async fn build(&self, tag: &str, context: Vec<u8>, mut on_line: impl FnMut(&str)) -> Result<String, DockerError> {
        self.count(true);
        let options = BuildImageOptionsBuilder::default().dockerfile("Dockerfile").t(tag).rm(true).forcerm(true).build();
        let mut stream = self.inner.build_image(options, None, Some(bollard::body_full(context.into())));
        let mut last_lines: Vec<String> = Vec::new();
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| DockerError::Build { tag: tag.into(), detail: e.to_string(), last_lines: last_lines.clone() })?;
            for line in info.stream.iter().chain(info.status.iter()).flat_map(|text| text.lines()) {
                let line = line.trim_end();
                if line.is_empty() {
                    continue;
                }
                on_line(line);
                if last_lines.len() == 10 {
                    last_lines.remove(0);
                }
                last_lines.push(line.to_string());
            }
        }
        let image = self.image(tag).await?.ok_or_else(|| DockerError::Build {
            tag: tag.into(),
            detail: "the engine reported success but has no such image".into(),
            last_lines,
        })?;
        Ok(image.id)
    }

    /// Removes the name `reference`; the image goes too unless another name or a container
    /// still uses it.
    pub async fn untag(&self, reference: &str) -> Result<(), DockerError> {
        self.count(true);
        match self.inner.remove_image(reference, None::<bollard::query_parameters::RemoveImageOptions>, None).await {
            Ok(_) | Err(BollardError::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
            Err(source) => Err(DockerError::Api { action: "removing", target: reference.into(), source }),
        }
    }

    /// Adds the name `repo:tag` to the local image `source`.
    pub async fn tag(&self, source: &str, repo: &str, tag: &str) -> Result<(), DockerError> {
        self.count(true);
        let options = TagImageOptionsBuilder::default().repo(repo).tag(tag).build();
        self.inner.tag_image(source, Some(options)).await.map_err(|source_err| DockerError::Api {
            action: "tagging",
            target: format!("{source} as {repo}:{tag}"),
            source: source_err,
        })
    }

    /// The manifest digest the registry holds for `reference` (`repo:tag`), asked through the
    /// engine without pulling; None when the registry does not have it.
    pub async fn remote_digest(&self, reference: &str, credentials: Option<DockerCredentials>) -> Result<Option<String>, DockerError> {
        self.count(false);
        match self.inner.inspect_registry_image(reference, credentials).await {
            Ok(inspect) => Ok(inspect.descriptor.digest),
            // The engine maps the registry's "manifest unknown" / "name unknown" to 401/403/404.
            Err(BollardError::DockerResponseServerError { status_code: 401 | 403 | 404, .. }) => Ok(None),
            Err(source) => Err(DockerError::Api { action: "asking the registry about", target: reference.into(), source }),
        }
    }

    /// Pushes `repo:tag`; `on_progress(current, total)` gets the layer bytes sent so far.
    pub async fn push(
        &self,
        repo: &str,
        tag: &str,
        credentials: Option<DockerCredentials>,
        mut on_progress: impl FnMut(u64, u64),
    ) -> Result<Pushed, DockerError> {
        self.count(true);
        let reference = format!("{repo}:{tag}");
        let options = PushImageOptionsBuilder::default().tag(tag).build();
        let mut stream = self.inner.push_image(repo, Some(options), credentials);
        let mut progress = PushProgress::default();
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| DockerError::Push { reference: reference.clone(), detail: e.to_string() })?;
            let detail = info.progress_detail.unwrap_or_default();
            let (current, total) = progress.observe(info.status.as_deref(), detail.current, detail.total);
            on_progress(current, total);
        }
        progress.finish().ok_or(DockerError::NoDigest { reference })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_progress_sums_layers_and_finds_the_digest() {
        let mut p = PushProgress::default();
        assert_eq!(p.observe(Some("Preparing"), None, None), (0, 0));
        assert_eq!(p.observe(Some("Pushing"), Some(100), Some(1000)), (100, 1000));
        assert_eq!(p.observe(Some("Pushing"), Some(50), Some(200)), (150, 1200));
        assert_eq!(p.observe(Some("Pushing"), Some(1000), Some(1000)), (1050, 1200));
        // Compressed uploads can report more than the total; never count past it.
        assert_eq!(p.observe(Some("Pushing"), Some(260), Some(200)), (1200, 1200));
        p.observe(Some("Pushed"), None, None);
        let digest = format!("sha256:{}", "ab".repeat(32));
        p.observe(Some(&format!("0123456789ab: digest: {digest} size: 528")), None, None);
        assert_eq!(p.finish(), Some(Pushed { digest, uploaded_bytes: 1200 }));
    }

    #[test]
    fn a_push_of_existing_layers_uploads_nothing() {
        let mut p = PushProgress::default();
        p.observe(Some("Layer already exists"), None, None);
        let digest = format!("sha256:{}", "0f".repeat(32));
        p.observe(Some(&format!("t: digest: {digest} size: 1")), None, None);
        assert_eq!(p.finish().unwrap().uploaded_bytes, 0);
    }

    #[test]
    fn digests_are_only_taken_from_well_formed_status_lines() {
        assert_eq!(digest_in_status("digest: sha256:abc size: 1"), None);
        assert_eq!(digest_in_status("Pushed"), None);
        assert!(digest_in_status(&format!("x: digest: sha256:{} size: 2", "1".repeat(64))).is_some());
    }
}
