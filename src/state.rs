//! The persisted state: what each phase created and how its last run ended. Never a secret.
//!
//! Rules (see docs/architecture.md):
//! - one writer at a time, enforced by a lock file beside `state.json`;
//! - every mutation is persisted at once: temp file, fsync, rename, fsync of the directory;
//! - any change to the shape of [`State`] bumps [`SCHEMA_VERSION`] and appends a migration, so
//!   that an older binary never silently drops fields it does not know.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::phase::PhaseName;

pub const SCHEMA_VERSION: u32 = 3;
pub const STATE_FILE: &str = "state.json";
pub const LOCK_FILE: &str = "lock";

/// Upgrades a state document by one schema version, in place.
pub type Migration = fn(&mut serde_json::Value) -> Result<(), String>;

/// `MIGRATIONS[i]` upgrades schema `i + 1` to `i + 2`.
pub const MIGRATIONS: &[Migration] = &[v1_to_v2, v2_to_v3];

/// v1 → v2: the sections of `infra` (AWS resources by component), `build`, `images` and `push`
/// appear, empty.
fn v1_to_v2(doc: &mut serde_json::Value) -> Result<(), String> {
    let object = doc.as_object_mut().ok_or("the document is not an object")?;
    object.entry("infra").or_insert_with(|| serde_json::json!({}));
    object.entry("build").or_insert(serde_json::Value::Null);
    object.entry("images").or_insert_with(|| serde_json::json!({}));
    object.entry("push").or_insert_with(|| serde_json::json!({}));
    Ok(())
}

/// v2 → v3: `deploy` appears, empty.
fn v2_to_v3(doc: &mut serde_json::Value) -> Result<(), String> {
    let object = doc.as_object_mut().ok_or("the document is not an object")?;
    object.entry("deploy").or_insert(serde_json::Value::Null);
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub schema_version: u32,
    /// `neonctl-aws <version>` of the last writer.
    pub written_by: String,
    /// The prefix and region this state belongs to, fixed by the first run that mutated anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    #[serde(default)]
    pub phases: BTreeMap<PhaseName, PhaseRecord>,
    /// What `infra` created or adopted; `teardown` empties it.
    #[serde(default)]
    pub infra: InfraState,
    /// What `build` staged: see [`BuildRecord`].
    #[serde(default)]
    pub build: Option<BuildRecord>,
    /// Images `images` built, by image name.
    #[serde(default)]
    pub images: BTreeMap<String, ImageRecord>,
    /// Images `push` pushed, by image name.
    #[serde(default)]
    pub push: BTreeMap<String, PushRecord>,
    /// What `deploy` deployed and bootstrapped: see [`DeployRecord`].
    #[serde(default)]
    pub deploy: Option<DeployRecord>,
}

/// Where `deploy` deployed, and the database it bootstrapped. Names and ids only: passwords,
/// keys and tokens stay in the cluster's Secrets (`role_secret` names the one with the password).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployRecord {
    pub cluster: ClusterAccess,
    pub namespace: String,
    /// The `NeonBranch` and `NeonEndpoint` (by name) deploy created, and their project.
    pub project_id: String,
    pub branch: String,
    pub endpoint: String,
    pub tenant_id: String,
    pub timeline_id: String,
    pub role: String,
    pub database: String,
    /// The Secret (in `namespace`) holding the role's `password`.
    pub role_secret: String,
    /// Clients connect to `<endpoint>.<proxy_domain>`.
    pub proxy_domain: String,
    /// `host:port` where the proxy was reached: its load balancer, or `--proxy-address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_address: Option<String>,
    /// When `select version()` last succeeded through the proxy (RFC 3339); none while a deploy
    /// has bootstrapped but not yet checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<String>,
}

/// How deploy reached the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "via", rename_all = "snake_case")]
pub enum ClusterAccess {
    /// The EKS cluster `infra` created, with a token signed by the AWS credentials.
    Eks { cluster: String },
    /// A kubeconfig (`None`: $KUBECONFIG or ~/.kube/config) and context (`None`: its current one).
    Kubeconfig {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<PathBuf>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        context: Option<String>,
    },
}

/// The AWS resources of one deployment, by component (the `neonctl-aws/component` tag value).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InfraState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// The availability zones the subnets were placed in, fixed by the first run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub azs: Vec<String>,
    #[serde(default)]
    pub resources: BTreeMap<String, ResourceRecord>,
}

/// One resource. Written before its create call (with the idempotency token) and again after.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceRecord {
    /// The id, ARN or name, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The deterministic client token of the create call, for the APIs that take one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Fingerprint of the settings last applied after creation (attributes, policies), so a
    /// converged run re-applies nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<String>,
    /// Outputs later phases need (cluster endpoint, OIDC issuer, repository URI, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, String>,
}

/// The staged result of a successful build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildRecord {
    /// Hash of every build input (source revision and local changes, toolchain, flags); a
    /// build with the same fingerprint and intact staged files is a no-op.
    pub fingerprint: String,
    /// Where the Neon source was built from (a path, or the clone of a git URL).
    pub source: PathBuf,
    /// `git` URL or the source path, for image labels.
    pub origin: String,
    /// The commit built (`-dirty` when the checkout had local changes), or `unknown`.
    pub revision: String,
    /// A readable name of it: `git describe --tags --always --dirty` (e.g. `release-9129`).
    pub version: String,
    /// The `cargo +NAME` toolchain override, if one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toolchain: Option<String>,
    /// The staged Postgres v17 installation (bin, lib, share; with the neon extension).
    pub pg_install: PathBuf,
    /// The manifest file listing every staged artifact with its sha256.
    pub manifest: PathBuf,
    /// Staged binaries by binary name.
    pub artifacts: BTreeMap<String, Artifact>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    pub path: PathBuf,
    pub sha256: String,
    pub size: u64,
}

/// A built image in the local Docker Engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// `<prefix>/<image>:<first 12 hex digits of the context's sha256>`.
    pub tag: String,
    pub id: String,
    /// sha256 of the build context (Dockerfile and files): the image's content identity.
    pub context_sha256: String,
    /// Bytes of the image as the engine reports them.
    pub size: u64,
    /// Bytes of the files put into the image (binary, libraries, Postgres, certificates): what
    /// `size` is measured against.
    pub content_bytes: u64,
}

/// An image in the target registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushRecord {
    /// `<registry>/<repository>:<tag>`.
    pub tag: String,
    /// `<registry>/<repository>@sha256:...`: what deploy references.
    pub digest_ref: String,
    /// The local image id that was pushed.
    pub image_id: String,
    /// Layer bytes uploaded by the run that last pushed it (0 when the registry had them all).
    pub uploaded_bytes: u64,
}

impl Default for State {
    fn default() -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            written_by: writer(),
            target: None,
            phases: BTreeMap::new(),
            infra: InfraState::default(),
            build: None,
            images: BTreeMap::new(),
            push: BTreeMap::new(),
            deploy: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub prefix: String,
    pub region: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseRecord {
    pub status: PhaseStatus,
    pub started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// The error message of a failed run (error messages never carry secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseStatus {
    Running,
    Succeeded,
    Failed,
    Interrupted,
}

fn writer() -> String {
    format!("neonctl-aws {}", env!("CARGO_PKG_VERSION"))
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "another neonctl-aws run holds the lock on {dir}: {holder}. Wait for it to finish, or stop it; \
         a run that was killed releases the lock by itself"
    )]
    Locked { dir: PathBuf, holder: String },
    #[error(
        "{path} is not a valid state file ({detail}). It was left untouched: restore it from a backup, or \
         move it away and run `neonctl-aws teardown --prefix <prefix> --region <region>` to find what it \
         created by tag"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "{path} has schema_version {found}, written by {written_by}; this neonctl-aws {ours} understands up \
         to schema_version {supported}. Upgrade neonctl-aws; the file was left untouched"
    )]
    TooNew { path: PathBuf, found: u64, supported: u32, written_by: String, ours: &'static str },
    #[error(
        "{dir} holds the state of prefix `{state_prefix}` in {state_region}, but this run targets prefix \
         `{prefix}` in {region}. Use --state DIR for another deployment, or --prefix {state_prefix} \
         --region {state_region} for this one"
    )]
    WrongTarget { dir: PathBuf, state_prefix: String, state_region: String, prefix: String, region: String },
    #[error("internal error: a planning run tried to write the state in {dir}; please report this")]
    ReadOnly { dir: PathBuf },
    #[error("{action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StateError + 'a {
    move |source| StateError::Io { action, path: path.to_path_buf(), source }
}

/// Reads a state file without taking the lock (for `--plan` and `status`). A missing file is an
/// empty state.
pub fn read(dir: &Path) -> Result<State, StateError> {
    let path = dir.join(STATE_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => parse(&path, &bytes, MIGRATIONS),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(io("reading", &path)(e)),
    }
}

/// Parses and migrates a state document. Never writes: the caller persists the upgraded state.
pub fn parse(path: &Path, bytes: &[u8], migrations: &[Migration]) -> Result<State, StateError> {
    let corrupt = |detail: String| StateError::Corrupt { path: path.to_path_buf(), detail };
    let mut doc: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    let version = doc.get("schema_version").and_then(|v| v.as_u64()).ok_or_else(|| corrupt("no schema_version".into()))?;
    let supported = migrations.len() as u64 + 1;
    if version > supported {
        let written_by = doc.get("written_by").and_then(|v| v.as_str()).unwrap_or("an unknown version").to_string();
        return Err(StateError::TooNew {
            path: path.to_path_buf(),
            found: version,
            supported: supported as u32,
            written_by,
            ours: env!("CARGO_PKG_VERSION"),
        });
    }
    if version == 0 {
        return Err(corrupt("schema_version 0 does not exist".into()));
    }
    for (from, migrate) in migrations.iter().enumerate().skip(version as usize - 1) {
        migrate(&mut doc).map_err(|e| corrupt(format!("migrating from schema {}: {e}", from + 1)))?;
        doc["schema_version"] = serde_json::json!(from as u64 + 2);
    }
    serde_json::from_value(doc).map_err(|e| corrupt(e.to_string()))
}

/// The locked, writable state of one run.
pub struct StateStore {
    dir: PathBuf,
    state: State,
    /// None for a read-only store (`--plan`), which refuses to persist.
    lock: Option<File>,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl StateStore {
    /// Creates the directory if needed, takes the lock (failing at once if it is held) and loads
    /// the state. `command` is recorded in the lock file so that a second run can name it.
    pub fn open(dir: &Path, command: &str) -> Result<Self, StateError> {
        std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let mut lock =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&lock_path).map_err(io("opening", &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = lock.read_to_string(&mut holder);
                let holder = match holder.trim() {
                    "" => "a process that has not recorded itself yet".to_string(),
                    h => h.replace('\n', " "),
                };
                return Err(StateError::Locked { dir: dir.to_path_buf(), holder });
            }
            Err(TryLockError::Error(e)) => return Err(io("locking", &lock_path)(e)),
        }
        lock.set_len(0).map_err(io("writing", &lock_path))?;
        lock.rewind().map_err(io("writing", &lock_path))?;
        write!(lock, "pid {} running `{command}`", std::process::id()).map_err(io("writing", &lock_path))?;
        let state = read(dir)?;
        let store = Self { dir: dir.to_path_buf(), state, lock: Some(lock) };
        remove_stale_temp_files(dir);
        Ok(store)
    }

    /// The state as it is on disk, unlocked and unwritable: what `--plan` plans against.
    pub fn read_only(dir: &Path) -> Result<Self, StateError> {
        Ok(Self { dir: dir.to_path_buf(), state: read(dir)?, lock: None })
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Applies `change` and persists the result before returning.
    pub fn update<T>(&mut self, change: impl FnOnce(&mut State) -> T) -> Result<T, StateError> {
        let out = change(&mut self.state);
        self.persist()?;
        Ok(out)
    }

    /// Checks that this state belongs to `target`, and records it if the state has none yet.
    pub fn claim(&mut self, target: &Target) -> Result<(), StateError> {
        match &self.state.target {
            Some(existing) if existing == target => Ok(()),
            Some(existing) => Err(StateError::WrongTarget {
                dir: self.dir.clone(),
                state_prefix: existing.prefix.clone(),
                state_region: existing.region.clone(),
                prefix: target.prefix.clone(),
                region: target.region.clone(),
            }),
            None => self.update(|s| s.target = Some(target.clone())),
        }
    }

    fn persist(&mut self) -> Result<(), StateError> {
        if self.lock.is_none() {
            return Err(StateError::ReadOnly { dir: self.dir.clone() });
        }
        self.state.schema_version = SCHEMA_VERSION;
        self.state.written_by = writer();
        let bytes = serde_json::to_vec_pretty(&self.state).expect("state serializes");
        write_atomically(&self.dir.join(STATE_FILE), &bytes)
    }
}

/// temp file in the same directory (0600), fsync, rename over the target, fsync the directory.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let dir = path.parent().expect("state file has a directory");
    let mut tmp =
        tempfile::Builder::new().prefix(".state.json.").suffix(".tmp").tempfile_in(dir).map_err(io("creating a temporary file in", dir))?;
    tmp.write_all(bytes).map_err(io("writing", tmp.path()))?;
    tmp.write_all(b"\n").map_err(io("writing", tmp.path()))?;
    tmp.as_file().sync_all().map_err(io("syncing", tmp.path()))?;
    crate::crash::point("state-before-rename");
    tmp.persist(path).map_err(|e| StateError::Io { action: "replacing", path: path.to_path_buf(), source: e.error })?;
    crate::crash::point("state-after-rename");
    File::open(dir).and_then(|d| d.sync_all()).map_err(io("syncing", dir))?;
    Ok(())
}

/// Temp files of a run that was killed before its rename; only the lock holder may remove them.
fn remove_stale_temp_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(".state.json.") && name.ends_with(".tmp") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target { prefix: "neon".into(), region: "us-east-1".into() }
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::open(dir.path(), "test").unwrap();
        store.claim(&target()).unwrap();
        store
            .update(|s| {
                s.phases.insert(
                    PhaseName::Infra,
                    PhaseRecord { status: PhaseStatus::Succeeded, started_at: "t0".into(), finished_at: Some("t1".into()), error: None },
                )
            })
            .unwrap();
        let written = store.state().clone();
        drop(store);
        assert_eq!(read(dir.path()).unwrap(), written);
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(dir.path().join(STATE_FILE)).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn second_open_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let _first = StateStore::open(dir.path(), "neonctl-aws up").unwrap();
        let err = StateStore::open(dir.path(), "neonctl-aws infra").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, StateError::Locked { .. }), "{msg}");
        assert!(msg.contains(&format!("pid {}", std::process::id())) && msg.contains("`neonctl-aws up`"), "{msg}");
    }

    #[test]
    fn lock_is_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        drop(StateStore::open(dir.path(), "a").unwrap());
        StateStore::open(dir.path(), "b").unwrap();
    }

    #[test]
    fn corrupt_and_truncated_files_are_refused_and_untouched() {
        let full = serde_json::to_vec(&State::default()).unwrap();
        for bytes in [b"{not json".to_vec(), full[..full.len() / 2].to_vec(), b"{}".to_vec(), b"".to_vec()] {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join(STATE_FILE), &bytes).unwrap();
            let err = StateStore::open(dir.path(), "test").unwrap_err();
            assert!(matches!(err, StateError::Corrupt { .. }), "{err}");
            assert!(err.to_string().contains("left untouched"), "{err}");
            assert_eq!(std::fs::read(dir.path().join(STATE_FILE)).unwrap(), bytes);
        }
    }

    #[test]
    fn newer_schema_is_refused_naming_both_versions() {
        let dir = tempfile::tempdir().unwrap();
        let doc = br#"{"schema_version": 7, "written_by": "neonctl-aws 9.0.0", "phases": {}}"#;
        std::fs::write(dir.path().join(STATE_FILE), doc).unwrap();
        let err = StateStore::open(dir.path(), "test").unwrap_err().to_string();
        assert!(err.contains("schema_version 7") && err.contains("neonctl-aws 9.0.0"), "{err}");
        assert!(err.contains(&format!("up to schema_version {SCHEMA_VERSION}")), "{err}");
        assert_eq!(std::fs::read(dir.path().join(STATE_FILE)).unwrap(), doc);
    }

    #[test]
    fn migrations_run_in_order_from_the_file_version() {
        fn v1_to_v2(doc: &mut serde_json::Value) -> Result<(), String> {
            doc["phases"] = serde_json::json!({});
            Ok(())
        }
        fn v2_to_v3(doc: &mut serde_json::Value) -> Result<(), String> {
            doc.as_object_mut().unwrap().remove("legacy");
            Ok(())
        }
        let doc = br#"{"schema_version": 1, "written_by": "old", "legacy": true}"#;
        let state = parse(Path::new("s.json"), doc, &[v1_to_v2, v2_to_v3]).unwrap();
        assert_eq!(state.schema_version, 3);
        assert!(state.phases.is_empty());
    }

    #[test]
    fn a_v1_file_gains_empty_infra_build_images_and_push_sections() {
        let doc = br#"{"schema_version": 1, "written_by": "neonctl-aws 0.1.0", "target": {"prefix": "neon", "region": "us-east-1"},
            "phases": {"build": {"status": "succeeded", "started_at": "t0", "finished_at": "t1"}}}"#;
        let state = parse(Path::new("s.json"), doc, MIGRATIONS).unwrap();
        assert_eq!(state.schema_version, SCHEMA_VERSION);
        assert_eq!(state.infra, InfraState::default());
        assert!(state.build.is_none() && state.images.is_empty() && state.push.is_empty());
        assert_eq!(state.phases[&PhaseName::Build].status, PhaseStatus::Succeeded);
        assert_eq!(state.target, Some(target()));
        // A file already at the current version is read as it is.
        let written = serde_json::to_vec(&state).unwrap();
        assert_eq!(parse(Path::new("s.json"), &written, MIGRATIONS).unwrap(), state);
    }

    #[test]
    fn a_v2_file_gains_an_empty_deploy_section() {
        let doc = br#"{"schema_version": 2, "written_by": "neonctl-aws 0.1.0", "infra": {}, "build": null, "images": {}, "push": {}}"#;
        let state = parse(Path::new("s.json"), doc, MIGRATIONS).unwrap();
        assert_eq!(state.schema_version, 3);
        assert!(state.deploy.is_none());
        let record = DeployRecord {
            cluster: ClusterAccess::Kubeconfig { path: Some("/k".into()), context: None },
            namespace: "neon".into(),
            project_id: "neon".into(),
            branch: "main".into(),
            endpoint: "main".into(),
            tenant_id: "1f359dd625e519a1a4e8d7509690f6fc".into(),
            timeline_id: "de200bd42b49cc1814412c7e592dd6e9".into(),
            role: "neondb_owner".into(),
            database: "neondb".into(),
            role_secret: "neon-main-owner".into(),
            proxy_domain: "neon.neon.internal".into(),
            proxy_address: None,
            checked_at: None,
        };
        let value = serde_json::to_value(&record).unwrap();
        assert_eq!(value["cluster"], serde_json::json!({"via": "kubeconfig", "path": "/k"}));
        assert_eq!(serde_json::from_value::<DeployRecord>(value).unwrap(), record);
    }

    #[test]
    fn a_state_claimed_by_another_target_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::open(dir.path(), "test").unwrap();
        store.claim(&target()).unwrap();
        let err = store.claim(&Target { prefix: "other".into(), region: "us-east-1".into() }).unwrap_err();
        assert!(err.to_string().contains("--state DIR"), "{err}");
    }
}
