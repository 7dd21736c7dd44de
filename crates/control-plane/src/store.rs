//! What the control plane knows besides the topology: branches (a tenant's timeline with its
//! roles and databases), endpoints (a compute serving a branch), and where the storage
//! controller last said each tenant's shards and each timeline's safekeepers are.
//!
//! Persistence sits behind [`Store`]: in memory, a JSON file written atomically, or the
//! `NeonBranch`/`NeonEndpoint` custom resources ([`super::kube_store::KubeStore`]). Its methods
//! return futures because the Kubernetes store calls the API server.
//! Passwords never reach this module: roles carry SCRAM verifiers only.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::kube_store::KubeStore;
use crate::neon::Secret;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// By branch id.
    #[serde(default)]
    pub branches: BTreeMap<String, Branch>,
    /// By endpoint id, which is also the compute id (compute_ctl's `--compute-id`).
    #[serde(default)]
    pub endpoints: BTreeMap<String, Endpoint>,
    /// By tenant id: the last `notify-attach`.
    #[serde(default)]
    pub attachments: BTreeMap<String, Attachment>,
    /// By `<tenant_id>/<timeline_id>`: the last `notify-safekeepers`.
    #[serde(default)]
    pub safekeeper_sets: BTreeMap<String, SafekeeperSet>,
}

impl State {
    /// Whether `endpoint`'s compute runs: one to push a spec to.
    pub fn runs(&self, endpoint: &str) -> bool {
        self.endpoints.get(endpoint).is_some_and(|endpoint| !endpoint.stopped)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Branch {
    pub project_id: String,
    pub tenant_id: String,
    pub timeline_id: String,
    #[serde(default)]
    pub roles: Vec<Role>,
    #[serde(default)]
    pub databases: Vec<Database>,
    /// Removed from the branch: its computes drop them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped_roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped_databases: Vec<String>,
    /// Its timeline is not created in storage yet: its computes get an empty spec and wait.
    /// Only the Kubernetes store has branches the control plane creates itself; the others
    /// hold branches created beforehand.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    pub name: String,
    /// `SCRAM-SHA-256$…`, never a password.
    pub verifier: Secret,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Database {
    pub name: String,
    pub owner: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub branch_id: String,
    /// The proxy's allowlist (`10.0.0.0/8`, `1.2.3.4`, `1.2.3.4-1.2.3.9`); none: everyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_ips: Option<Vec<String>>,
    /// Its compute is not running (being made, starting): nobody to push a spec to; it fetches
    /// its spec when it starts. Only the Kubernetes store knows; the others run every compute.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stopped: bool,
    /// Its compute is suspended after this many idle seconds (what its spec tells compute_ctl);
    /// none: never. Only the Kubernetes store suspends computes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend_timeout_seconds: Option<u32>,
    /// A hot standby of its branch (Neon's `Replica` compute mode).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

/// Where a tenant's shards are attached, as the storage controller's `notify-attach` says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    /// Pageserver node id per shard, in shard-number order.
    pub pageservers: Vec<u64>,
    /// Pages per stripe; only for sharded tenants.
    pub stripe_size: Option<u32>,
}

/// A timeline's safekeepers, as the storage controller's `notify-safekeepers` says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafekeeperSet {
    pub generation: u32,
    pub safekeepers: Vec<u64>,
}

pub fn timeline_key(tenant_id: &str, timeline_id: &str) -> String {
    format!("{tenant_id}/{timeline_id}")
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("could not read the control plane state {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the control plane state {path} is not valid: {source}; fix or remove the file")]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error("could not write the control plane state {path}: {source}; check the directory is writable and has space")]
    Write { path: PathBuf, source: std::io::Error },
    /// `what` reads like `listing neonbranches in namespace neon`.
    #[error(
        "{what}: {source}; check that the CustomResourceDefinitions are applied and that the control plane's Role allows this (both are in the rendered manifests)"
    )]
    Kubernetes { what: String, source: kube::Error },
    #[error(
        "watching {what} did not deliver the first list within {seconds}s; check that the CustomResourceDefinitions are applied \
         and that the control plane's Role allows list and watch (both are in the rendered manifests)"
    )]
    Sync { what: String, seconds: u64 },
}

/// Where [`State`] lives between restarts.
pub trait Store: Send + Sync {
    fn load(&self) -> BoxFuture<'_, Result<State, StoreError>>;
    /// Persists what the control plane itself learns (placements); a store whose branches and
    /// endpoints are written by others (Kubernetes) leaves those as they are.
    fn save<'a>(&'a self, state: &'a State) -> BoxFuture<'a, Result<(), StoreError>>;
    /// The custom resources behind this store, whose tenants and timelines the reconciler
    /// creates; `None` for stores whose branches were created beforehand.
    fn kubernetes(&self) -> Option<&KubeStore> {
        None
    }
}

/// Forgets everything on restart: for tests and throwaway clusters.
#[derive(Debug, Default)]
pub struct MemoryStore(Mutex<State>);

impl MemoryStore {
    pub fn new(state: State) -> Self {
        Self(Mutex::new(state))
    }
}

impl Store for MemoryStore {
    fn load(&self) -> BoxFuture<'_, Result<State, StoreError>> {
        let state = self.0.lock().expect("memory store lock").clone();
        Box::pin(std::future::ready(Ok(state)))
    }

    fn save<'a>(&'a self, state: &'a State) -> BoxFuture<'a, Result<(), StoreError>> {
        *self.0.lock().expect("memory store lock") = state.clone();
        Box::pin(std::future::ready(Ok(())))
    }
}

/// A JSON file, replaced atomically (write a temporary file beside it, then rename), readable
/// by its owner only because it holds SCRAM verifiers. A missing file is an empty state.
#[derive(Debug)]
pub struct FileStore {
    path: PathBuf,
}

impl FileStore {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Store for FileStore {
    fn load(&self) -> BoxFuture<'_, Result<State, StoreError>> {
        Box::pin(std::future::ready(self.read()))
    }

    fn save<'a>(&'a self, state: &'a State) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(std::future::ready(self.write(state)))
    }
}

impl FileStore {
    fn read(&self) -> Result<State, StoreError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
            Err(source) => return Err(StoreError::Read { path: self.path.clone(), source }),
        };
        serde_json::from_str(&text).map_err(|source| StoreError::Parse { path: self.path.clone(), source })
    }

    /// Small and local: written inline rather than on a blocking thread.
    fn write(&self, state: &State) -> Result<(), StoreError> {
        let write = |source| StoreError::Write { path: self.path.clone(), source };
        let dir = self.path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let mut file = tempfile::NamedTempFile::new_in(dir).map_err(write)?;
        let text = serde_json::to_string_pretty(state).expect("state serializes to JSON") + "\n";
        file.write_all(text.as_bytes()).map_err(write)?;
        file.as_file().sync_all().map_err(write)?;
        file.persist(&self.path).map_err(|e| write(e.error))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> State {
        let mut state = State::default();
        state.branches.insert(
            "main".into(),
            Branch {
                project_id: "neon".into(),
                tenant_id: "1f359dd625e519a1a4e8d7509690f6fc".into(),
                timeline_id: "de200bd42b49cc1814412c7e592dd6e9".into(),
                roles: vec![Role { name: "alice".into(), verifier: Secret("SCRAM-SHA-256$4096:c2FsdA==$a:b".into()) }],
                databases: vec![Database { name: "neondb".into(), owner: "alice".into() }],
                ..Default::default()
            },
        );
        state.endpoints.insert(
            "main".into(),
            Endpoint { branch_id: "main".into(), allowed_ips: None, stopped: false, suspend_timeout_seconds: None, read_only: false },
        );
        state.attachments.insert("1f359dd625e519a1a4e8d7509690f6fc".into(), Attachment { pageservers: vec![1], stripe_size: None });
        state
    }

    #[tokio::test]
    async fn file_store_round_trips_and_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path().join("state.json"));
        assert_eq!(store.load().await.unwrap(), State::default());
        store.save(&sample()).await.unwrap();
        assert_eq!(store.load().await.unwrap(), sample());
        let text = std::fs::read_to_string(store.path()).unwrap();
        assert!(!text.contains("pending"), "files written before branches could be pending read the same: {text}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left behind");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(store.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "owner-only: it holds verifiers");
        }
    }

    #[tokio::test]
    async fn a_broken_file_names_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, "{\"endpoint\": {}}").unwrap();
        let error = FileStore::new(&path).load().await.unwrap_err().to_string();
        assert!(error.contains("state.json") && error.contains("endpoint"), "{error}");
    }

    #[tokio::test]
    async fn memory_store_keeps_what_was_saved() {
        let store = MemoryStore::default();
        store.save(&sample()).await.unwrap();
        assert_eq!(store.load().await.unwrap(), sample());
    }
}
