//! `images`: one container image per component, built through the Docker Engine from an
//! in-memory tar context and a generated Dockerfile.
//!
//! With `images.base: scratch` (the default) nothing is pulled: an image holds its binary,
//! every shared library the binary loads as resolved on this machine (`ldd`, the dynamic
//! loader included), CA certificates, UTC zone data, `/etc/passwd` and `/etc/group` with the
//! non-root user `neon` (1000:1000) it runs as. The compute image (and the pageserver, whose
//! WAL redo runs `postgres`) adds the staged Postgres v17 with the neon extension.
//!
//! With `images.strip` (the default) each binary goes in without its debug info, as Neon's own
//! images ship them: `objcopy --only-keep-debug` keeps it in `<binary>.debug` (in the debug
//! directory, `.neonctl-aws/debug/` on apply), `objcopy --strip-debug --add-gnu-debuglink` makes
//! the binary that goes in, which names that file for a debugger or symbolizer.
//!
//! The context is deterministic (sorted entries, mtime 0, root owner), so its sha256 is the
//! image's content identity: the tag is `<prefix>/<image>:<first 12 hex digits>`, and an image
//! whose tag the engine already has is not rebuilt.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::docker::Docker;
use crate::engine::{Context, PhaseName, PhasePlan};
use crate::output::{PlannedAction, Verb};
use crate::phases::build::file_sha256;
use crate::state::{BuildRecord, ImageRecord};

/// The user the images run as.
pub const USER: (&str, u32) = ("neon", 1000);
const CA_CERTIFICATES: &str = "/etc/ssl/certs/ca-certificates.crt";
const ZONEINFO_UTC: &str = "/usr/share/zoneinfo/UTC";

#[derive(Debug, thiserror::Error)]
pub enum ImagesError {
    #[error("no finished build in the state; run `neonctl-aws build` first")]
    NotBuilt,
    #[error("the staged file {path} is missing; run `neonctl-aws build` again to restage it")]
    MissingArtifact { path: PathBuf },
    #[error(
        "{file} needs {library}, which `ldd` cannot find on this machine; install it (or fix LD_LIBRARY_PATH) and run `neonctl-aws images` again"
    )]
    LibraryNotFound { file: PathBuf, library: String },
    #[error("cannot run `ldd` on {file}: {detail}; `ldd` (glibc) is needed to collect the libraries of images FROM scratch")]
    Ldd { file: PathBuf, detail: String },
    #[error("{action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error(
        "the control plane's executable {expected} is missing: it is installed beside neonctl-aws; run `cargo install --path .` \
         (or `cargo build --release`, which builds both)"
    )]
    NoControlPlane { expected: PathBuf },
    #[error(
        "could not strip the debug info of {file}: {detail}; images.strip needs `objcopy` (Debian: binutils). Install it, or set \
         `images: {{strip: false}}` to ship the binaries as built"
    )]
    Strip { file: PathBuf, detail: String },
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ImagesError + 'a {
    move |source| ImagesError::Io { action, path: path.to_path_buf(), source }
}

/// Which binary an image runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Binary {
    /// One that `build` staged, by cargo binary name.
    Built(&'static str),
    /// The control plane, installed beside the CLI ([`CONTROL_PLANE_BINARY`]).
    ControlPlane,
}

/// What goes into one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ImageSpec {
    name: &'static str,
    binary: Binary,
    /// Where the staged Postgres goes, when the image needs it.
    postgres: Option<&'static str>,
    /// Directories the user owns besides its home and /data.
    writable: &'static [&'static str],
}

impl ImageSpec {
    /// What `images.strip` removes: Neon's binaries lose their debug info but keep their
    /// symbols, so that a panic's backtrace in the logs still names functions; the control
    /// plane also loses its symbols (its image's goal is at most 20 MB), so its backtraces are
    /// addresses that `addr2line -e <debug dir>/neonctl-aws-control-plane.debug` resolves.
    fn strip_flag(&self) -> &'static str {
        match self.binary {
            Binary::Built(_) => "--strip-debug",
            Binary::ControlPlane => "--strip-unneeded",
        }
    }

    fn binary_name(&self) -> &'static str {
        match self.binary {
            Binary::Built(name) => name,
            Binary::ControlPlane => CONTROL_PLANE_BINARY,
        }
    }
}

/// One per name in [`crate::IMAGES`], in that order.
const SPECS: [ImageSpec; 7] = [
    // pg_distrib_dir=/usr/local: the WAL redo process is /usr/local/v17/bin/postgres.
    ImageSpec { name: "pageserver", binary: Binary::Built("pageserver"), postgres: Some("usr/local/v17"), writable: &[] },
    ImageSpec { name: "safekeeper", binary: Binary::Built("safekeeper"), postgres: None, writable: &[] },
    ImageSpec { name: "storage-broker", binary: Binary::Built("storage_broker"), postgres: None, writable: &[] },
    ImageSpec { name: "storage-controller", binary: Binary::Built("storage_controller"), postgres: None, writable: &[] },
    ImageSpec { name: "proxy", binary: Binary::Built("proxy"), postgres: None, writable: &[] },
    // As Neon's compute image: Postgres in /usr/local, compute_ctl the entrypoint, the data
    // under /var/db/postgres.
    ImageSpec { name: "compute", binary: Binary::Built("compute_ctl"), postgres: Some("usr/local"), writable: &["var/db/postgres"] },
    ImageSpec { name: "control-plane", binary: Binary::ControlPlane, postgres: None, writable: &[] },
];

/// The labels every image carries.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Labels {
    source: String,
    revision: String,
    version: String,
}

/// One entry of a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// Content from a file on this machine (symlinks followed).
    File {
        from: PathBuf,
        mode: u32,
    },
    Bytes {
        data: Vec<u8>,
        mode: u32,
    },
    /// A directory owned by `owner` (uid and gid).
    Dir {
        mode: u32,
        owner: u32,
    },
    Symlink {
        target: PathBuf,
    },
}

/// A file tree that becomes a tar: the image's root filesystem (`rootfs.tar`, which the
/// Dockerfile ADDs in one layer with owners and modes intact), or the build context holding
/// `Dockerfile` and `rootfs.tar`.
#[derive(Debug, Default)]
struct Tree {
    entries: BTreeMap<String, Entry>,
}

impl Tree {
    fn add(&mut self, path: impl Into<String>, entry: Entry) {
        let path: String = path.into();
        let mut parent = Path::new(&path).parent();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            self.entries.entry(dir.display().to_string()).or_insert(Entry::Dir { mode: 0o755, owner: 0 });
            parent = dir.parent();
        }
        self.entries.insert(path, entry);
    }

    /// The bytes of the regular files in the tree.
    fn file_bytes(&self) -> Result<u64, ImagesError> {
        self.entries.values().try_fold(0, |sum, entry| match entry {
            Entry::File { from, .. } => Ok(sum + std::fs::metadata(from).map_err(io("reading", from))?.len()),
            Entry::Bytes { data, .. } => Ok(sum + data.len() as u64),
            Entry::Dir { .. } | Entry::Symlink { .. } => Ok(sum),
        })
    }

    fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(path)
    }

    /// The tar: entries in path order, mtime 0, owner 0:0 unless set, so equal inputs give
    /// equal bytes.
    fn tar(&self) -> Result<Vec<u8>, ImagesError> {
        let mut tar = tar::Builder::new(Vec::new());
        let failed = |path: &str| {
            let path = PathBuf::from(path);
            move |source| ImagesError::Io { action: "archiving", path, source }
        };
        for (path, entry) in &self.entries {
            let mut header = tar::Header::new_gnu();
            header.set_mtime(0);
            header.set_uid(0);
            header.set_gid(0);
            match entry {
                Entry::Dir { mode, owner } => {
                    header.set_uid(u64::from(*owner));
                    header.set_gid(u64::from(*owner));
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(*mode);
                    header.set_size(0);
                    tar.append_data(&mut header, format!("{path}/"), std::io::empty()).map_err(failed(path))?;
                }
                Entry::Symlink { target } => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_mode(0o777);
                    header.set_size(0);
                    tar.append_link(&mut header, path, target).map_err(failed(path))?;
                }
                Entry::Bytes { data, mode } => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(*mode);
                    header.set_size(data.len() as u64);
                    tar.append_data(&mut header, path, data.as_slice()).map_err(failed(path))?;
                }
                Entry::File { from, mode } => {
                    let file = std::fs::File::open(from).map_err(io("reading", from))?;
                    let size = file.metadata().map_err(io("reading", from))?.len();
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(*mode);
                    header.set_size(size);
                    tar.append_data(&mut header, path, file.take(size)).map_err(failed(path))?;
                }
            }
        }
        tar.into_inner().map_err(failed("context"))
    }
}

/// The Dockerfile of an image.
fn dockerfile(spec: &ImageSpec, base: &str, labels: &Labels) -> String {
    let scratch = base == "scratch";
    let (user, uid) = USER;
    let mut out = format!("FROM {base}\nADD rootfs.tar /\n");
    let quote = |s: &str| serde_json::to_string(s).expect("strings serialize");
    out.push_str(&format!(
        "LABEL org.opencontainers.image.title={} org.opencontainers.image.source={} org.opencontainers.image.revision={} org.opencontainers.image.version={}\n",
        quote(spec.name),
        quote(&labels.source),
        quote(&labels.revision),
        quote(&labels.version)
    ));
    let mut env = vec!["LANG=C.UTF-8".to_string(), "TZ=UTC".to_string()];
    if scratch {
        env.splice(0..0, ["PATH=/usr/local/bin".to_string(), format!("HOME=/home/{user}")]);
    }
    if let Some(pg) = spec.postgres {
        env.push(format!("LD_LIBRARY_PATH=/{pg}/lib"));
    }
    out.push_str(&format!("ENV {}\n", env.join(" ")));
    if scratch {
        out.push_str("WORKDIR /data\n");
    }
    out.push_str(&format!("USER {uid}:{uid}\n"));
    out.push_str(&format!("ENTRYPOINT [{}]\n", quote(&format!("/usr/local/bin/{}", spec.binary_name()))));
    out
}

/// What `ldd` says a file loads.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Ldd {
    /// Libraries resolved on this machine, the dynamic loader included.
    pub found: Vec<PathBuf>,
    /// Sonames ldd could not resolve.
    pub missing: Vec<String>,
}

pub fn parse_ldd(output: &str) -> Ldd {
    let mut ldd = Ldd::default();
    for line in output.lines().map(str::trim) {
        let (name, resolved) = line.split_once(" => ").unwrap_or((line, line));
        if resolved.starts_with("not found") {
            ldd.missing.push(name.to_string());
            continue;
        }
        let path = resolved.split(" (").next().unwrap_or_default().trim();
        if path.starts_with('/') {
            ldd.found.push(PathBuf::from(path));
        }
    }
    ldd
}

fn is_elf(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && magic == *b"\x7fELF"
}

/// Every library `file` loads, as resolved on this machine.
fn libraries(file: &Path) -> Result<Ldd, ImagesError> {
    let out = std::process::Command::new("ldd")
        .arg(file)
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .map_err(|e| ImagesError::Ldd { file: file.to_path_buf(), detail: e.to_string() })?;
    // A static executable: ldd says so and exits 1.
    if !out.status.success() {
        return Ok(Ldd::default());
    }
    Ok(parse_ldd(&String::from_utf8_lossy(&out.stdout)))
}

fn mode_of(path: &Path) -> Result<u32, ImagesError> {
    use std::os::unix::fs::PermissionsExt;
    Ok(std::fs::metadata(path).map_err(io("reading", path))?.permissions().mode() & 0o7777)
}

/// Adds a directory tree under `at` (relative to the context root).
fn add_tree(ctx: &mut Tree, from: &Path, at: &str) -> Result<(), ImagesError> {
    let mut entries: Vec<_> = std::fs::read_dir(from).map_err(io("reading", from))?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let dest = format!("{at}/{}", entry.file_name().to_string_lossy());
        let kind = entry.file_type().map_err(io("reading", &path))?;
        if kind.is_symlink() {
            ctx.add(dest, Entry::Symlink { target: std::fs::read_link(&path).map_err(io("reading", &path))? });
        } else if kind.is_dir() {
            ctx.add(dest.clone(), Entry::Dir { mode: mode_of(&path)?, owner: 0 });
            add_tree(ctx, &path, &dest)?;
        } else {
            ctx.add(dest, Entry::File { mode: mode_of(&path)?, from: path });
        }
    }
    Ok(())
}

/// The root filesystem of one image, naming the host files it reads.
fn rootfs(spec: &ImageSpec, build: &BuildRecord, own_exe: &Path, base: &str, debug_dir: Option<&Path>) -> Result<Tree, ImagesError> {
    let mut ctx = Tree::default();
    let scratch = base == "scratch";
    let binary = match spec.binary {
        Binary::Built(name) => build.artifacts.get(name).map(|a| a.path.clone()).unwrap_or_else(|| PathBuf::from(name)),
        Binary::ControlPlane => own_exe.to_path_buf(),
    };
    if !binary.is_file() {
        return Err(ImagesError::MissingArtifact { path: binary });
    }
    let mut elves = vec![binary.clone()];
    let installed = format!("usr/local/bin/{}", spec.binary_name());
    match debug_dir {
        Some(dir) => ctx.add(installed, Entry::Bytes { data: strip_debug(&binary, spec, dir)?, mode: 0o755 }),
        None => ctx.add(installed, Entry::File { from: binary, mode: 0o755 }),
    }
    if let Some(pg) = spec.postgres {
        if !build.pg_install.is_dir() {
            return Err(ImagesError::MissingArtifact { path: build.pg_install.clone() });
        }
        for dir in ["bin", "lib", "share"] {
            let from = build.pg_install.join(dir);
            if from.is_dir() {
                add_tree(&mut ctx, &from, &format!("{pg}/{dir}"))?;
            }
        }
        let pg_files = ctx.entries.iter().filter_map(|(path, entry)| match entry {
            Entry::File { from, .. } if path.starts_with(&format!("{pg}/")) && is_elf(from) => Some(from.clone()),
            _ => None,
        });
        elves.extend(pg_files.collect::<Vec<_>>());
    }
    if scratch {
        let pg_lib = spec.postgres.map(|pg| format!("{pg}/lib/"));
        // Postgres' own libraries (libpq, …) are in the image already, found through
        // LD_LIBRARY_PATH (even where ldd, following a build-time rpath, cannot find them); the
        // rest go where the loader looks for them.
        let in_image = |ctx: &Tree, name: &str| pg_lib.as_ref().is_some_and(|dir| ctx.contains(&format!("{dir}{name}")));
        for elf in &elves {
            let ldd = libraries(elf)?;
            if let Some(library) = ldd.missing.into_iter().find(|name| !in_image(&ctx, name)) {
                return Err(ImagesError::LibraryNotFound { file: elf.clone(), library });
            }
            for lib in ldd.found {
                let name = lib.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                if in_image(&ctx, &name) {
                    continue;
                }
                let dest = lib.display().to_string().trim_start_matches('/').to_string();
                if !ctx.contains(&dest) {
                    let mode = mode_of(&lib)?;
                    ctx.add(dest, Entry::File { from: lib, mode });
                }
            }
        }
        let (user, uid) = USER;
        let passwd = format!("root:x:0:0:root:/root:/sbin/nologin\n{user}:x:{uid}:{uid}:{user}:/home/{user}:/sbin/nologin\n");
        ctx.add("etc/passwd", Entry::Bytes { data: passwd.into_bytes(), mode: 0o644 });
        ctx.add("etc/group", Entry::Bytes { data: format!("root:x:0:\n{user}:x:{uid}:\n").into_bytes(), mode: 0o644 });
        for host in [CA_CERTIFICATES, ZONEINFO_UTC] {
            let path = Path::new(host);
            if path.is_file() {
                ctx.add(host.trim_start_matches('/'), Entry::File { from: path.to_path_buf(), mode: 0o644 });
            }
        }
        ctx.add("tmp", Entry::Dir { mode: 0o1777, owner: 0 });
        for dir in [format!("home/{user}"), "data".into()].into_iter().chain(spec.writable.iter().map(|d| d.to_string())) {
            ctx.add(dir, Entry::Dir { mode: 0o755, owner: uid });
        }
    }
    Ok(ctx)
}

/// The build context (the Dockerfile and the image's root filesystem as `rootfs.tar`) and the
/// bytes of the files in that root filesystem.
fn context(
    spec: &ImageSpec,
    build: &BuildRecord,
    own_exe: &Path,
    base: &str,
    labels: &Labels,
    debug_dir: Option<&Path>,
) -> Result<(Tree, u64), ImagesError> {
    let fs = rootfs(spec, build, own_exe, base, debug_dir)?;
    let mut ctx = Tree::default();
    ctx.add("Dockerfile", Entry::Bytes { data: dockerfile(spec, base, labels).into_bytes(), mode: 0o644 });
    ctx.add("rootfs.tar", Entry::Bytes { data: fs.tar()?, mode: 0o644 });
    Ok((ctx, fs.file_bytes()?))
}

/// A context ready to build: its tar and its tag.
struct Prepared {
    tar: Vec<u8>,
    sha256: String,
    tag: String,
    content_bytes: u64,
}

/// What `prepare` needs besides the image: the name prefix, the base, and where stripped debug
/// info goes (`None`: binaries are not stripped).
struct Options<'a> {
    prefix: &'a str,
    base: &'a str,
    debug_dir: Option<&'a Path>,
}

fn prepare(spec: &ImageSpec, build: &BuildRecord, own_exe: &Path, options: &Options<'_>) -> Result<Prepared, ImagesError> {
    let labels = match spec.binary {
        Binary::Built(_) => Labels { source: build.origin.clone(), revision: build.revision.clone(), version: build.version.clone() },
        Binary::ControlPlane => Labels {
            source: "neonctl-aws".into(),
            revision: file_sha256(own_exe).map(|(sha, _)| sha).unwrap_or_default(),
            version: env!("CARGO_PKG_VERSION").into(),
        },
    };
    let (context, content_bytes) = context(spec, build, own_exe, options.base, &labels, options.debug_dir)?;
    let tar = context.tar()?;
    let sha256 = hex::encode(Sha256::digest(&tar));
    let tag = format!("{}/{}:{}", options.prefix, spec.name, &sha256[..12]);
    Ok(Prepared { tar, sha256, tag, content_bytes })
}

/// `binary` without what [`ImageSpec::strip_flag`] removes, linked (`.gnu_debuglink`) to
/// `<name>.debug`, which is written to `debug_dir` with its debug info and symbols.
fn strip_debug(binary: &Path, spec: &ImageSpec, debug_dir: &Path) -> Result<Vec<u8>, ImagesError> {
    let name = spec.binary_name();
    let fail = |detail: String| ImagesError::Strip { file: binary.to_path_buf(), detail };
    std::fs::create_dir_all(debug_dir).map_err(io("creating", debug_dir))?;
    let debug = debug_dir.join(format!("{name}.debug"));
    let scratch = tempfile::tempdir_in(debug_dir).map_err(io("creating a temporary directory in", debug_dir))?;
    let stripped = scratch.path().join(name);
    let objcopy = |args: &[&std::ffi::OsStr]| -> Result<(), ImagesError> {
        let out = std::process::Command::new("objcopy").args(args).output().map_err(|e| fail(format!("running objcopy: {e}")))?;
        match out.status.success() {
            true => Ok(()),
            false => Err(fail(String::from_utf8_lossy(&out.stderr).trim().to_string())),
        }
    };
    objcopy(&["--only-keep-debug".as_ref(), binary.as_os_str(), debug.as_os_str()])?;
    let link = format!("--add-gnu-debuglink={}", debug.display());
    objcopy(&[spec.strip_flag().as_ref(), link.as_ref(), binary.as_os_str(), stripped.as_os_str()])?;
    std::fs::read(&stripped).map_err(io("reading", &stripped))
}

pub struct Images;

/// The control plane's executable: it links none of the CLI (no AWS SDK, no Docker client), so
/// its image changes only when its own code does.
pub const CONTROL_PLANE_BINARY: &str = "neonctl-aws-control-plane";

/// The control plane's executable beside this one (cargo builds and installs both), checked to
/// run on the nodes.
fn control_plane_exe(instance_type: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().map_err(io("locating", Path::new("the neonctl-aws executable")))?;
    let beside = exe.with_file_name(CONTROL_PLANE_BINARY);
    if !beside.is_file() {
        return Err(ImagesError::NoControlPlane { expected: beside }.into());
    }
    crate::platform::check_binary(&beside, instance_type)?;
    Ok(beside)
}

impl Images {
    async fn plan_inner(&self, cx: &Context) -> anyhow::Result<PhasePlan> {
        crate::platform::check_this_host(&cx.config.cluster.node_instance_type)?;
        let mut plan = PhasePlan::default();
        let state = cx.state();
        let Some(build) = state.build else {
            plan.notes.push("no finished build yet: every image is built after `build`".into());
            plan.actions.extend(SPECS.iter().map(|s| PlannedAction::new(Verb::Create, format!("image {}", s.name))));
            return Ok(plan);
        };
        let docker = match Docker::connect(cx.calls.clone()).await {
            Ok(docker) => Some(docker),
            Err(e) => {
                plan.notes.push(format!("{e}; assuming no image exists yet"));
                None
            }
        };
        let exe = control_plane_exe(&cx.config.cluster.node_instance_type)?;
        // The plan strips to learn the tags, and keeps nothing.
        let scratch = tempfile::tempdir().map_err(io("creating", Path::new("a temporary directory")))?;
        let options = Options {
            prefix: &cx.config.prefix,
            base: &cx.config.images.base,
            debug_dir: cx.config.images.strip.then_some(scratch.path()),
        };
        for spec in &SPECS {
            let prepared = prepare(spec, &build, &exe, &options)?;
            let exists = match &docker {
                Some(docker) => docker.image(&prepared.tag).await?.is_some(),
                None => false,
            };
            if !exists {
                plan.actions.push(PlannedAction::new(Verb::Create, format!("image {}", spec.name)).detail(prepared.tag));
            } else if state.images.get(spec.name).is_none_or(|r| r.tag != prepared.tag) {
                plan.actions.push(PlannedAction::new(Verb::Adopt, format!("image {}", spec.name)).detail(prepared.tag));
            }
        }
        if cx.config.images.base != "scratch" {
            plan.notes.push(format!("images build on {}: the engine must have it or be able to pull it", cx.config.images.base));
        }
        Ok(plan)
    }

    async fn apply_inner(&self, cx: &Context) -> anyhow::Result<()> {
        crate::platform::check_this_host(&cx.config.cluster.node_instance_type)?;
        let reporter = cx.reporter(PhaseName::Images);
        let build = cx.state().build.ok_or(ImagesError::NotBuilt)?;
        let docker = Docker::connect(cx.calls.clone()).await?;
        let exe = control_plane_exe(&cx.config.cluster.node_instance_type)?;
        let base = cx.config.images.base.as_str();
        if base == "scratch" && !Path::new(CA_CERTIFICATES).is_file() {
            reporter.warn(format!(
                "{CA_CERTIFICATES} is missing: the images get no CA certificates and cannot verify TLS; install ca-certificates"
            ));
        }
        let debug_dir = cx.state_dir().join("debug");
        let options = Options { prefix: &cx.config.prefix, base, debug_dir: cx.config.images.strip.then_some(debug_dir.as_path()) };
        for spec in &SPECS {
            let Prepared { tar, sha256, tag, content_bytes } = prepare(spec, &build, &exe, &options)?;
            let existing = docker.image(&tag).await?;
            let image = match existing {
                Some(image) => image,
                None => {
                    let step = reporter.step(format!("image {}", spec.name));
                    docker.build(&tag, tar, |line| reporter.debug(format!("{}: {line}", spec.name))).await.map_err(|e| match base {
                        "scratch" => anyhow::Error::new(e),
                        _ => anyhow::Error::new(e).context(format!("images.base `{base}` must be in the engine or pullable")),
                    })?;
                    let image =
                        docker.image(&tag).await?.ok_or_else(|| anyhow::anyhow!("the engine lost the image {tag} it just built"))?;
                    step.finish();
                    reporter.info(format!("built {tag} ({})", indicatif::HumanBytes(image.size)));
                    image
                }
            };
            let record = ImageRecord { tag, id: image.id, context_sha256: sha256, size: image.size, content_bytes };
            let previous = cx.state().images.get(spec.name).cloned();
            if previous.as_ref() != Some(&record) {
                cx.update_state(|s| s.images.insert(spec.name.to_string(), record.clone()))?;
            }
            // The image this one supersedes would only fill the disk.
            if let Some(previous) = previous.filter(|p| p.tag != record.tag) {
                match docker.untag(&previous.tag).await {
                    Ok(()) => reporter.info(format!("removed superseded image {}", previous.tag)),
                    Err(e) => reporter.warn(format!("{e}; remove it by hand when it is no longer used")),
                }
            }
        }
        Ok(())
    }
}

crate::engine::phase_from_async_fns!(Images, PhaseName::Images);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phases::build::PG_SHIPPED;
    use crate::state::Artifact;

    #[test]
    fn specs_cover_every_image_in_order() {
        let names: Vec<&str> = SPECS.iter().map(|s| s.name).collect();
        assert_eq!(names, crate::IMAGES);
        assert!(SPECS.iter().filter_map(|s| s.postgres).all(|pg| pg.starts_with("usr/local")));
        assert_eq!(PG_SHIPPED, "v17", "the pageserver's pg_distrib_dir layout names v17");
    }

    #[test]
    fn ldd_output_is_parsed() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd5b3f2000)\n\
                   \tlibssl.so.3 => /lib/x86_64-linux-gnu/libssl.so.3 (0x00007f0c1c000000)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0c1bc00000)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f0c1c3a0000)\n";
        assert_eq!(
            parse_ldd(out).found,
            ["/lib/x86_64-linux-gnu/libssl.so.3", "/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"].map(PathBuf::from)
        );
        let missing = parse_ldd("\tlibpq.so.5 => not found\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x1)\n");
        assert_eq!(missing.missing, ["libpq.so.5"]);
        assert_eq!(missing.found.len(), 1);
        assert_eq!(parse_ldd("\tstatically linked\n"), Ldd::default());
    }

    #[test]
    fn the_library_closure_of_a_real_binary_has_libc_and_the_loader() {
        let libs = libraries(Path::new("/bin/sh")).unwrap().found;
        assert!(libs.iter().any(|l| l.ends_with("libc.so.6")), "{libs:?}");
        assert!(libs.iter().any(|l| l.to_string_lossy().contains("ld-linux")), "{libs:?}");
    }

    fn labels() -> Labels {
        Labels { source: "https://github.com/neondatabase/neon.git".into(), revision: "6a35a3e9f1".into(), version: "6a35a3e9f1".into() }
    }

    #[test]
    fn dockerfiles() {
        for spec in &SPECS {
            insta::assert_snapshot!(format!("dockerfile-{}", spec.name), dockerfile(spec, "scratch", &labels()));
        }
        insta::assert_snapshot!("dockerfile-compute-on-a-base", dockerfile(&SPECS[5], "debian:bookworm-slim", &labels()));
    }

    fn fake_build(dir: &Path) -> BuildRecord {
        let bin = dir.join("bin");
        let pg = dir.join("pg");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(pg.join("lib/postgresql")).unwrap();
        std::fs::create_dir_all(pg.join("share/extension")).unwrap();
        std::fs::create_dir_all(pg.join("bin")).unwrap();
        std::fs::copy("/bin/true", pg.join("bin/postgres")).unwrap();
        std::fs::write(pg.join("share/extension/neon.control"), "x").unwrap();
        std::fs::write(pg.join("lib/libpq.so.5.17"), "not really a library").unwrap();
        std::os::unix::fs::symlink("libpq.so.5.17", pg.join("lib/libpq.so.5")).unwrap();
        let mut artifacts = BTreeMap::new();
        for name in crate::phases::build::BINARIES {
            let path = bin.join(name);
            std::fs::copy("/bin/true", &path).unwrap();
            artifacts.insert(name.to_string(), Artifact { path, sha256: String::new(), size: 0 });
        }
        BuildRecord {
            fingerprint: "f".into(),
            source: dir.to_path_buf(),
            origin: "o".into(),
            revision: "r".into(),
            version: "v".into(),
            toolchain: None,
            pg_install: pg,
            manifest: dir.join("manifest.json"),
            artifacts,
        }
    }

    #[test]
    fn root_filesystems_are_deterministic_and_complete() {
        let dir = tempfile::tempdir().unwrap();
        let build = fake_build(dir.path());
        let compute = &SPECS[5];
        let fs = rootfs(compute, &build, Path::new("/bin/true"), "scratch", None).unwrap();
        for path in [
            "usr/local/bin/compute_ctl",
            "usr/local/bin/postgres",
            "usr/local/share/extension/neon.control",
            "etc/passwd",
            "etc/group",
            "home/neon",
            "data",
            "var/db/postgres",
            "tmp",
        ] {
            assert!(fs.contains(path), "{path} in {:?}", fs.entries.keys().collect::<Vec<_>>());
        }
        assert_eq!(fs.entries["usr/local/lib/libpq.so.5"], Entry::Symlink { target: "libpq.so.5.17".into() });
        assert_eq!(fs.entries["data"], Entry::Dir { mode: 0o755, owner: 1000 });
        assert!(fs.entries.keys().any(|k| k.contains("libc.so")), "libc is in the closure");
        assert!(fs.entries.keys().any(|k| k.contains("ld-linux")), "the loader is in the closure");

        let first = fs.tar().unwrap();
        let again = rootfs(compute, &build, Path::new("/bin/true"), "scratch", None).unwrap().tar().unwrap();
        assert_eq!(Sha256::digest(&first), Sha256::digest(&again));
        let mut archive = tar::Archive::new(first.as_slice());
        let mut paths = Vec::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let path = entry.path().unwrap().display().to_string().trim_end_matches('/').to_string();
            assert_eq!(entry.header().mtime().unwrap(), 0);
            let owner = if ["data", "home/neon", "var/db/postgres"].contains(&path.as_str()) { 1000 } else { 0 };
            assert_eq!(entry.header().uid().unwrap(), owner, "{path}");
            paths.push(path);
        }
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(paths, sorted, "entries are in path order");
        assert!(paths.contains(&"usr".to_string()), "parent directories are explicit");

        let (context, content_bytes) = context(compute, &build, Path::new("/bin/true"), "scratch", &labels(), None).unwrap();
        assert_eq!(context.entries.keys().collect::<Vec<_>>(), ["Dockerfile", "rootfs.tar"]);
        assert!(content_bytes > 2 * std::fs::metadata("/bin/true").unwrap().len() && content_bytes < first.len() as u64);
        assert_eq!(context.entries["rootfs.tar"], Entry::Bytes { data: first, mode: 0o644 });
    }

    #[test]
    fn postgres_libraries_ldd_cannot_find_are_taken_from_the_image_and_others_refused() {
        let dir = tempfile::tempdir().unwrap();
        let build = fake_build(dir.path());
        let cc = |args: &[&str]| assert!(std::process::Command::new("cc").args(args).current_dir(dir.path()).status().unwrap().success());
        std::fs::write(dir.path().join("stub.c"), "int stub(void) { return 0; }\n").unwrap();
        std::fs::write(dir.path().join("main.c"), "int stub(void);\nint main(void) { return stub(); }\n").unwrap();
        cc(&["-shared", "-fPIC", "-Wl,-soname,libstub.so.1", "-o", "pg/lib/libstub.so.1", "stub.c"]);
        // Linked against the library with an rpath that no longer exists, as after moving a build.
        cc(&["-o", "pg/bin/postgres", "main.c", "-Lpg/lib", "-l:libstub.so.1", "-Wl,-rpath,/nonexistent/pg_install/v17/lib"]);
        let fs = rootfs(&SPECS[5], &build, Path::new("/bin/true"), "scratch", None).unwrap();
        assert!(fs.contains("usr/local/lib/libstub.so.1"));

        std::fs::remove_file(dir.path().join("pg/lib/libstub.so.1")).unwrap();
        let err = rootfs(&SPECS[5], &build, Path::new("/bin/true"), "scratch", None).unwrap_err().to_string();
        assert!(err.contains("needs libstub.so.1, which `ldd` cannot find"), "{err}");
    }

    #[test]
    fn a_base_image_gets_only_the_binary_and_postgres() {
        let dir = tempfile::tempdir().unwrap();
        let build = fake_build(dir.path());
        let fs = rootfs(&SPECS[0], &build, Path::new("/bin/true"), "debian:bookworm-slim", None).unwrap();
        assert!(fs.contains("usr/local/bin/pageserver"));
        assert!(fs.contains("usr/local/v17/bin/postgres"));
        assert!(!fs.entries.keys().any(|k| k.contains("libc.so") || k.starts_with("home") || k.contains("passwd")));
    }

    /// A binary built with debug info goes in without it, linked to the `.debug` file kept in
    /// the debug directory; the same binary strips to the same bytes (the same tag).
    #[test]
    fn stripped_binaries_keep_their_debug_info_beside() {
        let dir = tempfile::tempdir().unwrap();
        let build = fake_build(dir.path());
        let source = dir.path().join("main.c");
        std::fs::write(&source, "int main(void) { return 0; }\n").unwrap();
        let binary = &build.artifacts["safekeeper"].path;
        let cc = std::process::Command::new("cc").arg("-g").arg("-o").arg(binary).arg(&source).status().unwrap();
        assert!(cc.success());
        let has = |bytes: &[u8], name: &str| bytes.windows(name.len()).any(|w| w == name.as_bytes());
        let built = std::fs::read(binary).unwrap();
        assert!(has(&built, ".debug_info"));

        let debug_dir = dir.path().join("debug");
        let fs = rootfs(&SPECS[1], &build, Path::new("/bin/true"), "scratch", Some(&debug_dir)).unwrap();
        let Entry::Bytes { data, mode: 0o755 } = &fs.entries["usr/local/bin/safekeeper"] else { panic!("the stripped binary") };
        assert!(!has(data, ".debug_info") && has(data, ".gnu_debuglink") && has(data, "safekeeper.debug"));
        assert!(data.len() < built.len());
        let debug = std::fs::read(debug_dir.join("safekeeper.debug")).unwrap();
        assert!(has(&debug, ".debug_info"), "the debug info is kept");
        let again = rootfs(&SPECS[1], &build, Path::new("/bin/true"), "scratch", Some(&debug_dir)).unwrap();
        assert_eq!(again.entries["usr/local/bin/safekeeper"], fs.entries["usr/local/bin/safekeeper"]);
        assert_eq!(std::fs::read_dir(&debug_dir).unwrap().count(), 1, "nothing but the debug file is left behind");

        // The control plane's image loses the symbols too.
        let fs = rootfs(&SPECS[6], &build, binary, "scratch", Some(&debug_dir)).unwrap();
        let Entry::Bytes { data: control_plane, .. } = &fs.entries["usr/local/bin/neonctl-aws-control-plane"] else { panic!("stripped") };
        assert!(has(data, ".symtab") && !has(control_plane, ".symtab"), "Neon's binaries keep their symbols, the control plane not");
        assert!(has(&std::fs::read(debug_dir.join("neonctl-aws-control-plane.debug")).unwrap(), ".symtab"));

        let unstripped = rootfs(&SPECS[1], &build, Path::new("/bin/true"), "scratch", None).unwrap();
        assert_eq!(unstripped.entries["usr/local/bin/safekeeper"], Entry::File { from: binary.clone(), mode: 0o755 });
    }

    #[test]
    fn tags_follow_content() {
        let dir = tempfile::tempdir().unwrap();
        let build = fake_build(dir.path());
        let exe = Path::new("/bin/true");
        let options = Options { prefix: "neon", base: "scratch", debug_dir: None };
        let a = prepare(&SPECS[1], &build, exe, &options).unwrap();
        assert_eq!(a.tag, format!("neon/safekeeper:{}", &a.sha256[..12]));
        assert_eq!(prepare(&SPECS[1], &build, exe, &options).unwrap().tag, a.tag);
        std::fs::copy("/bin/false", &build.artifacts["safekeeper"].path).unwrap();
        assert_ne!(prepare(&SPECS[1], &build, exe, &options).unwrap().tag, a.tag);
        let missing = BuildRecord { artifacts: BTreeMap::new(), ..build };
        assert!(matches!(prepare(&SPECS[1], &missing, exe, &options), Err(ImagesError::MissingArtifact { .. })));
    }
}
