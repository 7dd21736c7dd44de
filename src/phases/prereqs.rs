//! `prereqs`: what the requested phases need from this machine, checked with versions, and with
//! `--install` the package-manager commands that add what is missing.
//!
//! Only [`Probe`] touches the machine (it runs commands, reads files, asks Docker and AWS); OS
//! detection, version parsing, evaluation and the install plan are pure, so tests run them on
//! fixtures. The exit code describes the machine as it is at the end: 5 while something required
//! is missing, also after `--install --plan` (which changes nothing).

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use aws_credential_types::Credentials;
use aws_credential_types::credential_feature::AwsCredentialFeature;
use serde::Serialize;

use crate::cli::PrereqsArgs;
use crate::config::Config;
use crate::engine::PhaseName;
use crate::exit::{Coded, PREREQS_MISSING};
use crate::output::{Event, Level, Printer, Reporter, Style, Table};

/// What `rust-toolchain.toml` pins at Neon's `release-9129`, the default `neon.source.rev`.
const RELEASE_9129_TOOLCHAIN: &str = "1.88.0";
/// Neon's README: "Building Neon requires 3.15+ version of protoc".
const PROTOC_MIN: &str = "3.15";
/// Docker and AWS must answer within this; a check should not hang on a dead socket or IMDS.
const REMOTE_TIMEOUT: Duration = Duration::from_secs(5);
/// Where bollard connects without DOCKER_HOST (its own constant is private).
const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

pub async fn run(args: &PrereqsArgs, config: &Config, assume_yes: bool, printer: &Printer) -> anyhow::Result<()> {
    let probe = System;
    let phases = selected_phases(&args.for_phases);
    let os = current_os(&probe);
    let toolchain = neon_toolchain(config, &probe);
    let check_now = || check(&probe, &os, &phases, &toolchain, &config.region);
    let mut rows = check_now().await;
    show(printer, &os, &phases, &rows);

    // `--plan` alone means the same as `--install --plan`: the install is the only action here.
    if args.install || args.plan.plan {
        let missing: Vec<Item> = rows.iter().filter(|r| r.status != Status::Ok).map(|r| r.item).collect();
        if missing.is_empty() {
            printer.result_line("nothing to install");
        } else {
            let env = InstallEnv {
                sudo: os.family != Family::Macos && !is_root(&probe),
                rustup: probe.command("rustup", &["--version"]).is_some(),
                toolchain: toolchain.channel.clone(),
            };
            let plan = install_plan(&os, &missing, &env);
            printer.table("install plan", &plan_table(&plan), &plan);
            if !args.plan.plan && !plan.commands.is_empty() {
                let n = plan.commands.len();
                let question = format!("Run the {n} command{} above?", if n == 1 { "" } else { "s" });
                if printer.confirm(&question, assume_yes)? {
                    for argv in &plan.commands {
                        run_command(printer, argv).await?;
                    }
                    rows = check_now().await;
                    show(printer, &os, &phases, &rows);
                } else {
                    printer.result_line("nothing installed");
                }
            }
        }
    }
    verdict(&rows, &args.for_phases)
}

fn selected_phases(asked: &[PhaseName]) -> Vec<PhaseName> {
    let mut phases = if asked.is_empty() { PhaseName::UP.iter().chain([&PhaseName::Teardown]).copied().collect() } else { asked.to_vec() };
    phases.sort();
    phases.dedup();
    phases
}

// ---------------------------------------------------------------------------------------------
// The operating system

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// Debian, Ubuntu and their derivatives: apt.
    Debian,
    /// Fedora, RHEL, CentOS, Rocky, Alma: dnf.
    Fedora,
    /// Arch and derivatives: pacman.
    Arch,
    /// Homebrew plus the Xcode command line tools.
    Macos,
    /// No package manager we know; the plan lists what to install by hand.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Os {
    pub family: Family,
    /// os-release `ID` (`ubuntu`, `rocky`), or `macos`.
    pub id: String,
    /// os-release `PRETTY_NAME`, or `macOS`.
    pub name: String,
    pub version: Option<String>,
}

/// Reads `/etc/os-release` (`ID`, `ID_LIKE`, `VERSION_ID`, `PRETTY_NAME`) and `uname -s`.
pub fn detect_os(os_release: Option<&str>, uname: &str) -> Os {
    if uname.trim().eq_ignore_ascii_case("darwin") || uname.trim().eq_ignore_ascii_case("macos") {
        return Os { family: Family::Macos, id: "macos".into(), name: "macOS".into(), version: None };
    }
    let fields: Vec<(&str, &str)> = os_release
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.trim(), unquote(value)))
        .collect();
    let field = |key: &str| fields.iter().find(|(k, _)| *k == key).map(|(_, v)| *v).filter(|v| !v.is_empty());
    let id = field("ID").unwrap_or_default().to_ascii_lowercase();
    let like = field("ID_LIKE").unwrap_or_default().to_ascii_lowercase();
    let family_of = |names: &[&str]| std::iter::once(id.as_str()).chain(like.split_whitespace()).any(|x| names.contains(&x));
    let family = if family_of(&["debian", "ubuntu"]) {
        Family::Debian
    } else if family_of(&["fedora", "rhel", "centos", "rocky", "almalinux"]) {
        Family::Fedora
    } else if family_of(&["arch"]) {
        Family::Arch
    } else {
        Family::Unknown
    };
    let fallback = if uname.trim().is_empty() { "unknown system" } else { uname.trim() };
    let name = field("PRETTY_NAME").or(field("NAME")).unwrap_or(fallback).to_string();
    Os { family, id, name, version: field("VERSION_ID").map(str::to_string) }
}

fn unquote(value: &str) -> &str {
    let value = value.trim();
    ['"', '\''].iter().find_map(|q| value.strip_prefix(*q).and_then(|v| v.strip_suffix(*q))).unwrap_or(value)
}

fn current_os(probe: &impl Probe) -> Os {
    let release = probe.read_file(Path::new("/etc/os-release")).or_else(|| probe.read_file(Path::new("/usr/lib/os-release")));
    let uname = probe.command("uname", &["-s"]).unwrap_or_else(|| std::env::consts::OS.to_string());
    let mut os = detect_os(release.as_deref(), &uname);
    if os.family == Family::Macos {
        os.version = probe.command("sw_vers", &["-productVersion"]).map(|v| v.trim().to_string());
        if let Some(version) = &os.version {
            os.name = format!("macOS {version}");
        }
    }
    os
}

/// Whether we already run as root, so package managers need no `sudo`. The effective uid from
/// `/proc/self/status` avoids linking libc; elsewhere `id -u` answers.
fn is_root(probe: &impl Probe) -> bool {
    if let Some(uid) = probe.read_file(Path::new("/proc/self/status")).as_deref().and_then(effective_uid) {
        return uid == 0;
    }
    probe.command("id", &["-u"]).is_some_and(|out| out.trim() == "0")
}

/// The effective uid from a `/proc/<pid>/status` text (`Uid: real effective saved fs`).
fn effective_uid(status: &str) -> Option<u32> {
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// What each phase needs

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Item {
    Rustc,
    Cargo,
    /// The toolchain Neon's `rust-toolchain.toml` pins, installed through rustup.
    NeonToolchain,
    Protoc,
    Clang,
    Make,
    Flex,
    Bison,
    PkgConfig,
    Lib(Lib),
    Git,
    Mold,
    /// Strips the binaries that go into images (`images.strip`).
    Objcopy,
    Docker,
    AwsCredentials,
}

/// C libraries Postgres and Neon link, found through pkg-config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Lib {
    Openssl,
    Readline,
    Zlib,
    Libseccomp,
    Libcurl,
    Icu,
}

impl Lib {
    /// The pkg-config module name.
    fn module(self) -> &'static str {
        match self {
            Lib::Openssl => "openssl",
            Lib::Readline => "readline",
            Lib::Zlib => "zlib",
            Lib::Libseccomp => "libseccomp",
            Lib::Libcurl => "libcurl",
            Lib::Icu => "icu-uc",
        }
    }
}

impl Item {
    pub fn name(self) -> &'static str {
        match self {
            Item::Rustc => "rustc",
            Item::Cargo => "cargo",
            Item::NeonToolchain => "neon toolchain",
            Item::Protoc => "protoc",
            Item::Clang => "clang",
            Item::Make => "make",
            Item::Flex => "flex",
            Item::Bison => "bison",
            Item::PkgConfig => "pkg-config",
            Item::Lib(lib) => lib.module(),
            Item::Git => "git",
            Item::Mold => "mold",
            Item::Objcopy => "objcopy",
            Item::Docker => "docker",
            Item::AwsCredentials => "aws credentials",
        }
    }

    /// The program whose `--version` tells whether the tool is there.
    fn program(self) -> Option<&'static str> {
        match self {
            Item::Rustc => Some("rustc"),
            Item::Cargo => Some("cargo"),
            Item::Protoc => Some("protoc"),
            Item::Clang => Some("clang"),
            Item::Make => Some("make"),
            Item::Flex => Some("flex"),
            Item::Bison => Some("bison"),
            Item::PkgConfig => Some("pkg-config"),
            Item::Git => Some("git"),
            Item::Mold => Some("mold"),
            Item::Objcopy => Some("objcopy"),
            Item::NeonToolchain | Item::Lib(_) | Item::Docker | Item::AwsCredentials => None,
        }
    }
}

/// One item and the requested phases that need it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Need {
    item: Item,
    phases: Vec<PhaseName>,
    required: bool,
}

fn items_for(phase: PhaseName, family: Family) -> Vec<(Item, bool)> {
    match phase {
        PhaseName::Build => {
            let mut items = vec![
                (Item::Rustc, true),
                (Item::Cargo, true),
                (Item::NeonToolchain, true),
                (Item::Protoc, true),
                (Item::Clang, true),
                (Item::Make, true),
                (Item::Flex, true),
                (Item::Bison, true),
                (Item::PkgConfig, true),
            ];
            let libs: &[Lib] = if family == Family::Macos {
                // seccomp is Linux-only (the Makefile adds --with-libseccomp on Linux); macOS
                // builds Postgres against the system libedit instead of readline.
                &[Lib::Openssl, Lib::Zlib, Lib::Libcurl, Lib::Icu]
            } else {
                &[Lib::Openssl, Lib::Readline, Lib::Zlib, Lib::Libseccomp, Lib::Libcurl, Lib::Icu]
            };
            items.extend(libs.iter().map(|lib| (Item::Lib(*lib), true)));
            items.extend([(Item::Git, true), (Item::Mold, false)]);
            items
        }
        PhaseName::Images => vec![(Item::Objcopy, true), (Item::Docker, true)],
        PhaseName::Push => vec![(Item::Docker, true), (Item::AwsCredentials, true)],
        PhaseName::Infra | PhaseName::Deploy | PhaseName::Teardown => vec![(Item::AwsCredentials, true)],
    }
}

fn needs(phases: &[PhaseName], family: Family) -> Vec<Need> {
    let mut needs: Vec<Need> = Vec::new();
    for &phase in phases {
        for (item, required) in items_for(phase, family) {
            match needs.iter_mut().find(|n| n.item == item) {
                Some(need) => {
                    need.phases.push(phase);
                    need.required |= required;
                }
                None => needs.push(Need { item, phases: vec![phase], required }),
            }
        }
    }
    needs.sort_by_key(|n| n.item);
    needs
}

// ---------------------------------------------------------------------------------------------
// Versions

/// The first dotted number on the first line of `--version` output: `rustc 1.95.0 (…)` →
/// `1.95.0`, `Ubuntu clang version 14.0.0-1ubuntu1.1` → `14.0.0`, `20.10.24+dfsg1` → `20.10.24`.
pub fn parse_version(output: &str) -> Option<String> {
    let line = output.lines().find(|l| !l.trim().is_empty())?;
    line.split_whitespace().find_map(|word| {
        let end = word.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(word.len());
        let number = word[..end].trim_end_matches('.');
        (number.contains('.') && number.starts_with(|c: char| c.is_ascii_digit())).then(|| number.to_string())
    })
}

/// Numeric, component-wise: `25.1` is newer than `3.15`, `3.21.12` too, `3.12.4` is not.
pub fn version_at_least(found: &str, minimum: &str) -> bool {
    let parts = |v: &str| v.split('.').map(|p| p.parse::<u64>().unwrap_or(0)).collect::<Vec<_>>();
    let (found, minimum) = (parts(found), parts(minimum));
    let at = |v: &[u64], i: usize| v.get(i).copied().unwrap_or(0);
    (0..found.len().max(minimum.len())).map(|i| (at(&found, i), at(&minimum, i))).find(|(f, m)| f != m).is_none_or(|(f, m)| f > m)
}

fn minimum(item: Item) -> Option<&'static str> {
    (item == Item::Protoc).then_some(PROTOC_MIN)
}

// ---------------------------------------------------------------------------------------------
// Neon's pinned toolchain

#[derive(Debug, Clone, PartialEq, Eq)]
struct Toolchain {
    channel: String,
    /// Where the channel comes from, for the note.
    source: String,
}

fn neon_toolchain(config: &Config, probe: &impl Probe) -> Toolchain {
    let Some(path) = &config.neon.source.path else {
        let rev = &config.neon.source.rev;
        let source = if rev == "release-9129" {
            "pinned by Neon release-9129".to_string()
        } else {
            format!("assumed from release-9129; set neon.source.path to read {rev}'s rust-toolchain.toml")
        };
        return Toolchain { channel: RELEASE_9129_TOOLCHAIN.into(), source };
    };
    let file = path.join("rust-toolchain.toml");
    match probe.read_file(&file).as_deref().and_then(toolchain_channel) {
        Some(channel) => Toolchain { channel, source: format!("pinned by {}", file.display()) },
        None => Toolchain {
            channel: RELEASE_9129_TOOLCHAIN.into(),
            source: format!("assumed from release-9129: {} names no channel", file.display()),
        },
    }
}

/// The `channel = "…"` of a `rust-toolchain.toml`.
fn toolchain_channel(toml: &str) -> Option<String> {
    toml.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        if key.trim() != "channel" {
            return None;
        }
        let value = value.trim();
        let quote = value.chars().next().filter(|c| *c == '"' || *c == '\'')?;
        let channel = value[1..].split(quote).next()?;
        (!channel.is_empty()).then(|| channel.to_string())
    })
}

/// Whether `rustup toolchain list` shows `channel` (listed as `1.88.0-x86_64-… (default)`).
fn toolchain_installed(list: &str, channel: &str) -> bool {
    list.lines()
        .filter_map(|line| line.split_whitespace().next())
        .any(|name| name == channel || name.strip_prefix(channel).is_some_and(|rest| rest.starts_with('-')))
}

// ---------------------------------------------------------------------------------------------
// Probing the machine

/// Everything the check asks the machine; tests substitute a fake.
trait Probe {
    /// The output of a command that ran and succeeded (stdout, or stderr when stdout is empty).
    fn command(&self, program: &str, args: &[&str]) -> Option<String>;
    fn read_file(&self, path: &Path) -> Option<String>;
    /// The Docker Engine's version, or why it cannot be reached.
    async fn docker(&self) -> Result<String, String>;
    /// Where AWS credentials come from (never the secret), or why none resolve.
    async fn aws_credentials(&self, region: &str) -> Result<String, String>;
}

/// The real machine.
struct System;

impl Probe for System {
    fn command(&self, program: &str, args: &[&str]) -> Option<String> {
        let output = std::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            // English output for the parsers; and a version check must never make rustup
            // download a toolchain that a rust-toolchain.toml in the working directory names.
            .env("LC_ALL", "C")
            .env("RUSTUP_AUTO_INSTALL", "0")
            .output()
            .ok()?;
        if !output.status.success() {
            return None;
        }
        let text = if output.stdout.iter().all(u8::is_ascii_whitespace) { output.stderr } else { output.stdout };
        Some(String::from_utf8_lossy(&text).into_owned())
    }

    fn read_file(&self, path: &Path) -> Option<String> {
        std::fs::read_to_string(path).ok()
    }

    async fn docker(&self) -> Result<String, String> {
        let host = std::env::var("DOCKER_HOST").unwrap_or_else(|_| DEFAULT_DOCKER_HOST.to_string());
        let ask = async {
            // connect_with_defaults honours DOCKER_HOST (unix or tcp), as the images phase does.
            let docker = bollard::Docker::connect_with_defaults()?.with_timeout(REMOTE_TIMEOUT);
            // Older engines (API 1.41) refuse requests made with a newer API version.
            let docker = docker.negotiate_version().await?;
            docker.version().await
        };
        match tokio::time::timeout(REMOTE_TIMEOUT, ask).await {
            Err(_) => Err(format!("the Docker Engine at {host} did not answer within {}s", REMOTE_TIMEOUT.as_secs())),
            Ok(Err(e)) => Err(format!("cannot reach the Docker Engine at {host}: {:#}", anyhow::Error::from(e))),
            Ok(Ok(version)) => {
                let engine = version.version.as_deref().and_then(parse_version).unwrap_or_else(|| "unknown version".into());
                Ok(match version.api_version {
                    Some(api) => format!("{engine} (API {api})"),
                    None => engine,
                })
            }
        }
    }

    async fn aws_credentials(&self, region: &str) -> Result<String, String> {
        use aws_credential_types::provider::ProvideCredentials;
        let resolve = async {
            let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .region(aws_config::Region::new(region.to_string()))
                .load()
                .await;
            let provider = sdk.credentials_provider().ok_or_else(|| "no credential provider is configured".to_string())?;
            provider.provide_credentials().await.map_err(|e| format!("the default chain found none: {:#}", anyhow::Error::from(e)))
        };
        match tokio::time::timeout(REMOTE_TIMEOUT, resolve).await {
            Err(_) => Err(format!("no credentials resolved within {}s", REMOTE_TIMEOUT.as_secs())),
            Ok(result) => result.map(|creds| describe_credentials(&creds)),
        }
    }
}

/// `environment AKIA…XYZ`: the source and a recognisable part of the key id, never the secret.
fn describe_credentials(creds: &Credentials) -> String {
    let key = mask_key(creds.access_key_id());
    let source = creds.get_property::<Vec<AwsCredentialFeature>>().and_then(|features| features.iter().find_map(source_label));
    match source {
        Some(source) => format!("{source} {key}"),
        None => key,
    }
}

fn source_label(feature: &AwsCredentialFeature) -> Option<&'static str> {
    use AwsCredentialFeature as F;
    Some(match feature {
        F::CredentialsEnvVars => "environment",
        F::CredentialsEnvVarsStsWebIdToken | F::CredentialsStsAssumeRoleWebId | F::CredentialsProfileStsWebIdToken => "web identity",
        F::CredentialsProfile | F::CredentialsProfileSourceProfile | F::CredentialsProfileNamedProvider => "profile",
        F::CredentialsSso | F::CredentialsProfileSso => "sso",
        F::CredentialsProcess | F::CredentialsProfileProcess => "credential_process",
        F::CredentialsHttp => "container",
        F::CredentialsImds => "instance metadata",
        F::CredentialsStsAssumeRole => "assumed role",
        F::CredentialsLogin | F::CredentialsProfileLogin => "aws login",
        _ => return None,
    })
}

/// `AKIAIOSFODNN7EXAMPLE` → `AKIA…PLE`.
fn mask_key(key_id: &str) -> String {
    if key_id.len() < 8 || !key_id.is_ascii() {
        return "…".into();
    }
    format!("{}…{}", &key_id[..4], &key_id[key_id.len() - 3..])
}

// ---------------------------------------------------------------------------------------------
// Evaluation

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Missing,
    TooOld,
    /// Missing, but only recommended.
    Recommended,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Missing => "missing",
            Status::TooOld => "too old",
            Status::Recommended => "recommended",
        }
    }
}

/// One line of the result, as the table and the json show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct Row {
    #[serde(skip)]
    item: Item,
    tool: &'static str,
    needed_for: Vec<PhaseName>,
    required: bool,
    /// A minimum version or the exact toolchain.
    #[serde(skip_serializing_if = "Option::is_none")]
    wants: Option<String>,
    found: Option<String>,
    status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

/// What the probe saw of one item.
#[derive(Debug, Default)]
struct Finding {
    found: Option<String>,
    note: Option<String>,
}

impl Finding {
    fn absent(note: impl Into<String>) -> Self {
        Self { found: None, note: Some(note.into()) }
    }
}

async fn check(probe: &impl Probe, os: &Os, phases: &[PhaseName], toolchain: &Toolchain, region: &str) -> Vec<Row> {
    let needs = needs(phases, os.family);
    let wanted = |item| needs.iter().any(|n| n.item == item);
    // The two network checks wait on timeouts, so they run side by side.
    let (docker, aws) = futures::join!(async { if wanted(Item::Docker) { Some(probe.docker().await) } else { None } }, async {
        if wanted(Item::AwsCredentials) { Some(probe.aws_credentials(region).await) } else { None }
    },);
    let remote = |result: &Option<Result<String, String>>| match result {
        Some(Ok(found)) => Finding { found: Some(found.clone()), note: None },
        Some(Err(why)) => Finding::absent(why.clone()),
        None => Finding::default(),
    };
    needs
        .iter()
        .map(|need| {
            let finding = match need.item {
                Item::Docker => remote(&docker),
                Item::AwsCredentials => remote(&aws),
                item => probe_local(probe, item, toolchain),
            };
            evaluate(need, finding, toolchain)
        })
        .collect()
}

fn probe_local(probe: &impl Probe, item: Item, toolchain: &Toolchain) -> Finding {
    if let Some(program) = item.program() {
        return match probe.command(program, &["--version"]) {
            Some(out) => Finding { found: Some(parse_version(&out).unwrap_or_else(|| "unknown version".into())), note: None },
            // Not on PATH, or broken: the status says it, a note would only repeat it.
            None => Finding::default(),
        };
    }
    match item {
        Item::Lib(lib) => match probe.command("pkg-config", &["--modversion", lib.module()]) {
            Some(out) => Finding { found: Some(out.trim().to_string()), note: None },
            None => Finding::absent(format!("pkg-config finds no {}.pc", lib.module())),
        },
        Item::NeonToolchain => {
            let channel = &toolchain.channel;
            match probe.command("rustup", &["toolchain", "list"]) {
                None => Finding::absent(format!("rustup is not installed; Neon builds with Rust {channel} ({})", toolchain.source)),
                Some(list) if toolchain_installed(&list, channel) => {
                    Finding { found: Some(channel.clone()), note: Some(toolchain.source.clone()) }
                }
                Some(_) => Finding::absent(format!("not installed: `rustup toolchain install {channel}` ({})", toolchain.source)),
            }
        }
        _ => Finding::default(),
    }
}

fn evaluate(need: &Need, finding: Finding, toolchain: &Toolchain) -> Row {
    let status = match (&finding.found, minimum(need.item)) {
        (None, _) if need.required => Status::Missing,
        (None, _) => Status::Recommended,
        (Some(found), Some(min)) if !version_at_least(found, min) => Status::TooOld,
        (Some(_), _) => Status::Ok,
    };
    let wants = match need.item {
        Item::NeonToolchain => Some(toolchain.channel.clone()),
        item => minimum(item).map(|min| format!(">= {min}")),
    };
    Row {
        item: need.item,
        tool: need.item.name(),
        needed_for: need.phases.clone(),
        required: need.required,
        wants,
        found: finding.found,
        status,
        note: finding.note,
    }
}

#[derive(Serialize)]
struct Report<'a> {
    os: &'a Os,
    #[serde(rename = "for")]
    phases: &'a [PhaseName],
    rows: &'a [Row],
}

fn show(printer: &Printer, os: &Os, phases: &[PhaseName], rows: &[Row]) {
    let text = printer.style() != Style::Json;
    if text {
        let names: Vec<&str> = phases.iter().map(|p| p.as_str()).collect();
        printer.result_line(&format!("{}: what {} needs", os.name, names.join(", ")));
    }
    let mut table = Table::new(&["tool", "needed for", "required", "found", "status"]);
    for row in rows {
        let tool = match (&row.item, &row.wants) {
            (Item::Lib(_), _) => format!("{} library", row.tool),
            (_, Some(wants)) => format!("{} {wants}", row.tool),
            (_, None) => row.tool.to_string(),
        };
        let phases: Vec<&str> = row.needed_for.iter().map(|p| p.as_str()).collect();
        table.row(vec![
            tool,
            phases.join(","),
            if row.required { "yes" } else { "no" }.into(),
            row.found.clone().unwrap_or_else(|| "-".into()),
            row.status.word().into(),
        ]);
    }
    printer.table("prereqs", &table, &Report { os, phases, rows });
    // The json rows carry their notes; text output explains only what is not ok.
    if text {
        for row in rows.iter().filter(|r| r.status != Status::Ok) {
            if let Some(note) = &row.note {
                printer.result_line(&format!("{}: {note}", row.tool));
            }
        }
    }
}

fn verdict(rows: &[Row], asked: &[PhaseName]) -> anyhow::Result<()> {
    let missing: Vec<String> = rows
        .iter()
        .filter(|r| r.required)
        .filter_map(|r| match r.status {
            Status::Missing => Some(r.tool.to_string()),
            Status::TooOld => Some(format!("{} (too old)", r.tool)),
            Status::Ok | Status::Recommended => None,
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let for_flag = if asked.is_empty() {
        String::new()
    } else {
        let names: Vec<&str> = selected_phases(asked).iter().map(|p| p.as_str()).collect();
        format!(" --for {}", names.join(","))
    };
    let n = missing.len();
    Err(Coded {
        code: PREREQS_MISSING,
        message: format!(
            "{n} required prerequisite{} missing: {}; run `neonctl-aws prereqs --install{for_flag}` to install \
             what a package manager can (add --plan to only see the commands)",
            if n == 1 { "" } else { "s" },
            missing.join(", ")
        ),
    }
    .into())
}

// ---------------------------------------------------------------------------------------------
// Installing

/// What the plan may assume about this machine.
#[derive(Debug, Clone)]
pub struct InstallEnv {
    /// Prefix package-manager commands with `sudo` (not root, not Homebrew).
    pub sudo: bool,
    pub rustup: bool,
    /// Neon's pinned toolchain.
    pub toolchain: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct InstallPlan {
    /// argv lists, run in order.
    pub commands: Vec<Vec<String>>,
    /// What no command of ours can do (Docker, credentials, an unknown OS).
    pub manual: Vec<String>,
}

/// The package(s) that provide `item` on `family`; empty when no package manager does.
fn packages(family: Family, item: Item) -> &'static [&'static str] {
    use Item::{AwsCredentials, Bison, Cargo, Clang, Docker, Flex, Git, Make, Mold, NeonToolchain, PkgConfig, Protoc, Rustc};
    match (family, item) {
        (_, Rustc | Cargo | NeonToolchain | Docker | AwsCredentials) | (Family::Unknown, _) => &[],
        (_, Git) => &["git"],
        (_, Mold) => &["mold"],
        (_, Item::Objcopy) => &["binutils"],
        (Family::Debian, Protoc) => &["protobuf-compiler", "libprotobuf-dev"],
        (Family::Debian, Clang) => &["clang"],
        (Family::Debian, Make) => &["build-essential", "libtool"],
        (Family::Debian, Flex) => &["flex"],
        (Family::Debian, Bison) => &["bison"],
        (Family::Debian, PkgConfig) => &["pkg-config"],
        (Family::Debian, Item::Lib(Lib::Openssl)) => &["libssl-dev"],
        (Family::Debian, Item::Lib(Lib::Readline)) => &["libreadline-dev"],
        (Family::Debian, Item::Lib(Lib::Zlib)) => &["zlib1g-dev"],
        (Family::Debian, Item::Lib(Lib::Libseccomp)) => &["libseccomp-dev"],
        (Family::Debian, Item::Lib(Lib::Libcurl)) => &["libcurl4-openssl-dev"],
        (Family::Debian, Item::Lib(Lib::Icu)) => &["libicu-dev"],
        (Family::Fedora, Protoc) => &["protobuf-compiler", "protobuf-devel"],
        (Family::Fedora, Clang) => &["clang"],
        (Family::Fedora, Make) => &["gcc", "gcc-c++", "make", "libtool"],
        (Family::Fedora, Flex) => &["flex"],
        (Family::Fedora, Bison) => &["bison"],
        (Family::Fedora, PkgConfig) => &["pkgconf-pkg-config"],
        (Family::Fedora, Item::Lib(Lib::Openssl)) => &["openssl-devel"],
        (Family::Fedora, Item::Lib(Lib::Readline)) => &["readline-devel"],
        (Family::Fedora, Item::Lib(Lib::Zlib)) => &["zlib-devel"],
        (Family::Fedora, Item::Lib(Lib::Libseccomp)) => &["libseccomp-devel"],
        (Family::Fedora, Item::Lib(Lib::Libcurl)) => &["libcurl-devel"],
        (Family::Fedora, Item::Lib(Lib::Icu)) => &["libicu-devel"],
        (Family::Arch, Protoc) => &["protobuf"],
        (Family::Arch, Clang) => &["clang"],
        (Family::Arch, Make) => &["base-devel"],
        (Family::Arch, Flex) => &["flex"],
        (Family::Arch, Bison) => &["bison"],
        (Family::Arch, PkgConfig) => &["pkgconf"],
        (Family::Arch, Item::Lib(Lib::Openssl)) => &["openssl"],
        (Family::Arch, Item::Lib(Lib::Readline)) => &["readline"],
        (Family::Arch, Item::Lib(Lib::Zlib)) => &["zlib"],
        (Family::Arch, Item::Lib(Lib::Libseccomp)) => &["libseccomp"],
        (Family::Arch, Item::Lib(Lib::Libcurl)) => &["curl"],
        (Family::Arch, Item::Lib(Lib::Icu)) => &["icu"],
        // clang and make come with the Xcode command line tools, not Homebrew.
        (Family::Macos, Clang | Make | Item::Lib(Lib::Libseccomp)) => &[],
        (Family::Macos, Protoc) => &["protobuf"],
        (Family::Macos, Flex) => &["flex", "m4"],
        (Family::Macos, Bison) => &["bison", "m4"],
        (Family::Macos, PkgConfig) => &["pkg-config"],
        (Family::Macos, Item::Lib(Lib::Openssl)) => &["openssl"],
        (Family::Macos, Item::Lib(Lib::Readline)) => &["readline"],
        (Family::Macos, Item::Lib(Lib::Zlib)) => &["zlib"],
        (Family::Macos, Item::Lib(Lib::Libcurl)) => &["curl"],
        (Family::Macos, Item::Lib(Lib::Icu)) => &["icu4c"],
    }
}

/// The commands that install exactly `missing` on `os`, and the steps left to the user.
pub fn install_plan(os: &Os, missing: &[Item], env: &InstallEnv) -> InstallPlan {
    let mut plan = InstallPlan::default();
    let has = |item: Item| missing.contains(&item);
    let argv = |sudo: bool, words: &[&str], packages: &[&str]| -> Vec<String> {
        let sudo = sudo.then_some("sudo");
        sudo.into_iter().chain(words.iter().copied()).chain(packages.iter().copied()).map(String::from).collect()
    };

    let mut wanted: Vec<&str> = Vec::new();
    for item in missing {
        for package in packages(os.family, *item) {
            if !wanted.contains(package) {
                wanted.push(package);
            }
        }
    }
    if os.family == Family::Macos && (has(Item::Clang) || has(Item::Make)) {
        plan.commands.push(argv(false, &["xcode-select", "--install"], &[]));
    }
    if !wanted.is_empty() {
        match os.family {
            Family::Debian => {
                plan.commands.push(argv(env.sudo, &["apt-get", "update"], &[]));
                plan.commands.push(argv(env.sudo, &["apt-get", "install", "-y"], &wanted));
            }
            Family::Fedora => plan.commands.push(argv(env.sudo, &["dnf", "install", "-y"], &wanted)),
            Family::Arch => plan.commands.push(argv(env.sudo, &["pacman", "-S", "--needed", "--noconfirm"], &wanted)),
            // Homebrew refuses to run as root.
            Family::Macos => plan.commands.push(argv(false, &["brew", "install"], &wanted)),
            Family::Unknown => {}
        }
    }
    if os.family == Family::Fedora && os.id != "fedora" && (has(Item::Protoc) || has(Item::Mold)) {
        plan.manual.push(
            "RHEL-compatible systems keep protobuf-compiler and mold in EPEL and CRB: enable both before the dnf \
             command (`dnf install epel-release`, `dnf config-manager --set-enabled crb`)"
                .into(),
        );
    }
    if os.family == Family::Macos && [Item::Flex, Item::Bison, Item::Lib(Lib::Openssl), Item::Lib(Lib::Icu)].iter().any(|i| has(*i)) {
        plan.manual.push(
            "Homebrew's flex, bison, openssl and icu4c are keg-only: put $(brew --prefix bison)/bin and \
             $(brew --prefix flex)/bin first on PATH, and add $(brew --prefix openssl)/lib/pkgconfig and \
             $(brew --prefix icu4c)/lib/pkgconfig to PKG_CONFIG_PATH"
                .into(),
        );
    }
    if os.family == Family::Unknown {
        // The system packages, named as Debian would need them.
        let by_hand: Vec<String> = missing
            .iter()
            .filter(|i| !packages(Family::Debian, **i).is_empty())
            .map(|i| match minimum(*i) {
                Some(min) => format!("{} >= {min}", i.name()),
                None => i.name().to_string(),
            })
            .collect();
        if !by_hand.is_empty() {
            plan.manual.push(format!(
                "{} has no package manager neonctl-aws knows; install these with yours: {}",
                os.name,
                by_hand.join(", ")
            ));
        }
    }

    let rust_missing = has(Item::Rustc) || has(Item::Cargo);
    if env.rustup {
        if rust_missing {
            plan.commands.push(argv(false, &["rustup", "default", "stable"], &[]));
        }
        if has(Item::NeonToolchain) {
            plan.commands.push(argv(false, &["rustup", "toolchain", "install", &env.toolchain], &[]));
        }
    } else if rust_missing || has(Item::NeonToolchain) {
        plan.manual.push(format!(
            "install rustup from https://rustup.rs (it brings rustc and cargo), then run `rustup toolchain install {}`",
            env.toolchain
        ));
    }

    if has(Item::Docker) {
        plan.manual.push(match os.family {
            Family::Macos => "Docker: install Docker Desktop, colima or OrbStack and start it; set DOCKER_HOST when \
                              its socket is not /var/run/docker.sock"
                .into(),
            _ => "Docker: install Docker Engine from your distribution (or docs.docker.com/engine/install) and start it; \
                  add your user to the docker group, or set DOCKER_HOST to an engine you can reach"
                .into(),
        });
    }
    if has(Item::AwsCredentials) {
        plan.manual.push(
            "AWS credentials: set AWS_PROFILE (after `aws sso login` for an SSO profile), or AWS_ACCESS_KEY_ID and \
             AWS_SECRET_ACCESS_KEY, or run where an instance or container role applies"
                .into(),
        );
    }
    plan
}

fn plan_table(plan: &InstallPlan) -> Table {
    let mut table = Table::new(&["step", "what"]);
    for argv in &plan.commands {
        table.row(vec!["run".into(), argv.join(" ")]);
    }
    for step in &plan.manual {
        table.row(vec!["by hand".into(), step.clone()]);
    }
    table
}

async fn run_command(printer: &Printer, argv: &[String]) -> anyhow::Result<()> {
    let shown = argv.join(" ");
    let (program, args) = argv.split_first().context("empty command in the install plan")?;
    printer.report(Event::Message { phase: None, level: Level::Info, text: format!("running {shown}") });
    let status = tokio::process::Command::new(program)
        .args(args)
        // stdout belongs to results (NDJSON in json mode); installer output is progress.
        .stdout(std::io::stderr())
        .status()
        .await
        .with_context(|| format!("could not start `{shown}`"))?;
    anyhow::ensure!(status.success(), "`{shown}` failed ({status}); the commands after it were not run");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    const DEBIAN_12: &str = r#"PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
"#;
    const UBUNTU_24_04: &str = r#"PRETTY_NAME="Ubuntu 24.04.2 LTS"
NAME="Ubuntu"
VERSION_ID="24.04"
VERSION="24.04.2 LTS (Noble Numbat)"
VERSION_CODENAME=noble
ID=ubuntu
ID_LIKE=debian
UBUNTU_CODENAME=noble
"#;
    const MINT_22: &str = r#"NAME="Linux Mint"
VERSION="22 (Wilma)"
ID=linuxmint
ID_LIKE="ubuntu debian"
PRETTY_NAME="Linux Mint 22"
VERSION_ID="22"
"#;
    const FEDORA_41: &str = r#"NAME="Fedora Linux"
VERSION="41 (Container Image)"
ID=fedora
VERSION_ID=41
PLATFORM_ID="platform:f41"
PRETTY_NAME="Fedora Linux 41 (Container Image)"
"#;
    const RHEL_9: &str = r#"NAME="Red Hat Enterprise Linux"
VERSION="9.4 (Plow)"
ID="rhel"
ID_LIKE="fedora"
VERSION_ID="9.4"
PRETTY_NAME="Red Hat Enterprise Linux 9.4 (Plow)"
"#;
    const ROCKY_9: &str = r#"NAME="Rocky Linux"
VERSION="9.5 (Blue Onyx)"
ID="rocky"
ID_LIKE="rhel centos fedora"
VERSION_ID="9.5"
PRETTY_NAME="Rocky Linux 9.5 (Blue Onyx)"
"#;
    const ALMA_9: &str = r#"NAME="AlmaLinux"
VERSION="9.5 (Teal Serval)"
ID="almalinux"
ID_LIKE="rhel centos fedora"
VERSION_ID="9.5"
PRETTY_NAME="AlmaLinux 9.5 (Teal Serval)"
"#;
    const ARCH: &str = r#"NAME="Arch Linux"
PRETTY_NAME="Arch Linux"
ID=arch
BUILD_ID=rolling
ANSI_COLOR="38;2;23;147;209"
"#;
    const MANJARO: &str = r#"NAME="Manjaro Linux"
PRETTY_NAME="Manjaro Linux"
ID=manjaro
ID_LIKE=arch
BUILD_ID=rolling
"#;
    const ALPINE: &str = r#"NAME="Alpine Linux"
ID=alpine
VERSION_ID=3.21.3
PRETTY_NAME="Alpine Linux v3.21"
"#;

    #[test]
    fn detects_each_distribution() {
        // os-release, uname, then the expected family, id, name and version.
        type Case<'a> = (Option<&'a str>, &'a str, Family, &'a str, &'a str, Option<&'a str>);
        let cases: &[Case] = &[
            (Some(DEBIAN_12), "Linux", Family::Debian, "debian", "Debian GNU/Linux 12 (bookworm)", Some("12")),
            (Some(UBUNTU_24_04), "Linux", Family::Debian, "ubuntu", "Ubuntu 24.04.2 LTS", Some("24.04")),
            (Some(MINT_22), "Linux", Family::Debian, "linuxmint", "Linux Mint 22", Some("22")),
            (Some(FEDORA_41), "Linux", Family::Fedora, "fedora", "Fedora Linux 41 (Container Image)", Some("41")),
            (Some(RHEL_9), "Linux", Family::Fedora, "rhel", "Red Hat Enterprise Linux 9.4 (Plow)", Some("9.4")),
            (Some(ROCKY_9), "Linux", Family::Fedora, "rocky", "Rocky Linux 9.5 (Blue Onyx)", Some("9.5")),
            (Some(ALMA_9), "Linux", Family::Fedora, "almalinux", "AlmaLinux 9.5 (Teal Serval)", Some("9.5")),
            (Some(ARCH), "Linux", Family::Arch, "arch", "Arch Linux", None),
            (Some(MANJARO), "Linux", Family::Arch, "manjaro", "Manjaro Linux", None),
            (Some(ALPINE), "Linux", Family::Unknown, "alpine", "Alpine Linux v3.21", Some("3.21.3")),
            (None, "Darwin\n", Family::Macos, "macos", "macOS", None),
            (None, "Linux", Family::Unknown, "", "Linux", None),
            (None, "", Family::Unknown, "", "unknown system", None),
        ];
        for (release, uname, family, id, name, version) in cases {
            let os = detect_os(*release, uname);
            assert_eq!((os.family, os.id.as_str(), os.name.as_str(), os.version.as_deref()), (*family, *id, *name, *version), "{name}");
        }
    }

    #[test]
    fn parses_versions() {
        let cases = [
            ("rustc 1.95.0 (59807616e 2026-04-14)", "1.95.0"),
            ("rustc 1.97.0-nightly (0123abcde 2026-05-01)", "1.97.0"),
            ("cargo 1.95.0 (f2d3ce0bd 2026-03-21)\n", "1.95.0"),
            ("libprotoc 3.21.12\n", "3.21.12"),
            ("libprotoc 25.1", "25.1"),
            ("Debian clang version 14.0.6\nTarget: x86_64-pc-linux-gnu\nThread model: posix\n", "14.0.6"),
            ("Ubuntu clang version 14.0.0-1ubuntu1.1", "14.0.0"),
            ("Apple clang version 15.0.0 (clang-1500.3.9.4)", "15.0.0"),
            ("GNU Make 4.3\nBuilt for x86_64-pc-linux-gnu\n", "4.3"),
            ("flex 2.6.4", "2.6.4"),
            ("bison (GNU Bison) 3.8.2\nWritten by Robert Corbett and Richard Stallman.\n", "3.8.2"),
            ("git version 2.47.3", "2.47.3"),
            ("git version 2.39.3 (Apple Git-146)", "2.39.3"),
            ("mold 2.37.1 (compatible with GNU ld)", "2.37.1"),
            ("1.8.1\n", "1.8.1"),
            ("20.10.24+dfsg1", "20.10.24"),
            ("28.2.2", "28.2.2"),
        ];
        for (output, version) in cases {
            assert_eq!(parse_version(output).as_deref(), Some(version), "{output}");
        }
        assert_eq!(parse_version("no version here 2026"), None);
        assert_eq!(parse_version(""), None);
    }

    #[test]
    fn compares_versions_numerically() {
        assert!(version_at_least("25.1", "3.15"));
        assert!(version_at_least("3.21.12", "3.15"));
        assert!(version_at_least("3.15", "3.15"));
        assert!(version_at_least("3.15.0", "3.15"));
        assert!(!version_at_least("3.12.4", "3.15"));
        assert!(!version_at_least("3.6.1", "3.15"));
        assert!(!version_at_least("2.99", "3.15"));
    }

    #[test]
    fn reads_the_pinned_toolchain() {
        let toml = "[toolchain]\n# comment\nchannel = \"1.88.0\" # pinned\ncomponents = [\"llvm-tools\", \"rustfmt\", \"clippy\"]\n";
        assert_eq!(toolchain_channel(toml).as_deref(), Some("1.88.0"));
        assert_eq!(toolchain_channel("[toolchain]\nchannel='nightly-2025-01-01'\n").as_deref(), Some("nightly-2025-01-01"));
        assert_eq!(toolchain_channel("[toolchain]\ncomponents = []\n"), None);

        let list = "stable-x86_64-unknown-linux-gnu (default)\n1.88.0-x86_64-unknown-linux-gnu\n1.95.0-x86_64-unknown-linux-gnu (active)\n";
        assert!(toolchain_installed(list, "1.88.0"));
        assert!(toolchain_installed(list, "stable"));
        assert!(!toolchain_installed(list, "1.88"));
        assert!(!toolchain_installed(list, "1.8"));
        assert!(!toolchain_installed("no installed toolchains\n", "1.88.0"));
    }

    #[test]
    fn the_toolchain_comes_from_the_checkout_when_there_is_one() {
        let mut config = Config::default();
        let probe = Fake::new(&[]);
        assert_eq!(neon_toolchain(&config, &probe).channel, "1.88.0");
        assert_eq!(neon_toolchain(&config, &probe).source, "pinned by Neon release-9129");
        config.neon.source.rev = "release-9200".into();
        assert!(neon_toolchain(&config, &probe).source.contains("assumed"));

        config.neon.source.path = Some(PathBuf::from("/src/neon"));
        let probe = Fake::new(&[]).file("/src/neon/rust-toolchain.toml", "[toolchain]\nchannel = \"1.90.0\"\n");
        let toolchain = neon_toolchain(&config, &probe);
        assert_eq!((toolchain.channel.as_str(), toolchain.source.as_str()), ("1.90.0", "pinned by /src/neon/rust-toolchain.toml"));
    }

    #[test]
    fn reads_the_effective_uid() {
        assert_eq!(effective_uid("Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t1000\n"), Some(0));
        assert_eq!(effective_uid("Uid:\t1000\t1000\t1000\t1000\n"), Some(1000));
        assert_eq!(effective_uid("Name:\tx\n"), None);
        assert!(is_root(&Fake::new(&[]).file("/proc/self/status", "Uid:\t0\t0\t0\t0\n")));
        assert!(!is_root(&Fake::new(&[("id -u", "1000\n")])));
        assert!(is_root(&Fake::new(&[("id -u", "0\n")])));
    }

    #[test]
    fn credentials_show_their_source_never_the_secret() {
        assert_eq!(mask_key("AKIAIOSFODNN7EXAMPLE"), "AKIA…PLE");
        assert_eq!(mask_key("short"), "…");
        let mut creds = Credentials::new("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", None, None, "test");
        assert_eq!(describe_credentials(&creds), "AKIA…PLE");
        creds.set_property(vec![AwsCredentialFeature::CredentialsSso, AwsCredentialFeature::CredentialsProfile]);
        let shown = describe_credentials(&creds);
        assert_eq!(shown, "sso AKIA…PLE");
        assert!(!shown.contains("wJalr"));
    }

    #[test]
    fn each_phase_needs_its_own_things() {
        let items = |phases: &[PhaseName], family| needs(phases, family).into_iter().map(|n| n.item).collect::<Vec<_>>();
        assert_eq!(items(&[PhaseName::Images], Family::Debian), [Item::Objcopy, Item::Docker]);
        assert_eq!(items(&[PhaseName::Push], Family::Debian), [Item::Docker, Item::AwsCredentials]);
        assert_eq!(items(&[PhaseName::Teardown], Family::Debian), [Item::AwsCredentials]);
        let build = items(&[PhaseName::Build], Family::Debian);
        assert_eq!(build.len(), 17);
        assert!(build.contains(&Item::Lib(Lib::Libseccomp)) && !build.contains(&Item::Docker));
        let mac = items(&[PhaseName::Build], Family::Macos);
        assert!(!mac.contains(&Item::Lib(Lib::Libseccomp)) && !mac.contains(&Item::Lib(Lib::Readline)));

        let all = needs(&selected_phases(&[]), Family::Debian);
        let aws = all.iter().find(|n| n.item == Item::AwsCredentials).unwrap();
        assert_eq!(aws.phases, [PhaseName::Infra, PhaseName::Push, PhaseName::Deploy, PhaseName::Teardown]);
        let mold = all.iter().find(|n| n.item == Item::Mold).unwrap();
        assert!(!mold.required);
        assert_eq!(selected_phases(&[PhaseName::Push, PhaseName::Build, PhaseName::Push]), [PhaseName::Build, PhaseName::Push]);
    }

    /// A machine described by `program args` → output pairs.
    struct Fake {
        commands: Vec<(String, String)>,
        files: Vec<(PathBuf, String)>,
        docker: Result<String, String>,
        aws: Result<String, String>,
    }

    impl Fake {
        fn new(commands: &[(&str, &str)]) -> Self {
            Self {
                commands: commands.iter().map(|(c, o)| (c.to_string(), o.to_string())).collect(),
                files: Vec::new(),
                docker: Err("cannot reach the Docker Engine at unix:///var/run/docker.sock: No such file or directory".into()),
                aws: Err("the default chain found none".into()),
            }
        }
        fn file(mut self, path: &str, text: &str) -> Self {
            self.files.push((PathBuf::from(path), text.to_string()));
            self
        }
    }

    impl Probe for Fake {
        fn command(&self, program: &str, args: &[&str]) -> Option<String> {
            let line = std::iter::once(program).chain(args.iter().copied()).collect::<Vec<_>>().join(" ");
            self.commands.iter().find(|(c, _)| *c == line).map(|(_, o)| o.clone())
        }
        fn read_file(&self, path: &Path) -> Option<String> {
            self.files.iter().find(|(p, _)| p == path).map(|(_, t)| t.clone())
        }
        async fn docker(&self) -> Result<String, String> {
            self.docker.clone()
        }
        async fn aws_credentials(&self, _region: &str) -> Result<String, String> {
            self.aws.clone()
        }
    }

    /// A Debian box with most of the build tools: protoc too old, clang and flex absent.
    fn workstation() -> Fake {
        let mut fake = Fake::new(&[
            ("rustc --version", "rustc 1.95.0 (59807616e 2026-04-14)"),
            ("cargo --version", "cargo 1.95.0 (f2d3ce0bd 2026-03-21)"),
            ("rustup toolchain list", "stable-x86_64-unknown-linux-gnu (default)\n1.88.0-x86_64-unknown-linux-gnu\n"),
            ("protoc --version", "libprotoc 3.12.4"),
            ("make --version", "GNU Make 4.3"),
            ("bison --version", "bison (GNU Bison) 3.8.2"),
            ("pkg-config --version", "1.8.1"),
            ("pkg-config --modversion openssl", "3.0.17\n"),
            ("pkg-config --modversion readline", "8.2\n"),
            ("pkg-config --modversion zlib", "1.2.13\n"),
            ("pkg-config --modversion libseccomp", "2.5.4\n"),
            ("pkg-config --modversion libcurl", "7.88.1\n"),
            ("pkg-config --modversion icu-uc", "72.1\n"),
            ("git --version", "git version 2.47.3"),
            ("objcopy --version", "GNU objcopy (GNU Binutils for Debian) 2.40"),
        ]);
        fake.aws = Ok("environment AKIA…PLE".into());
        fake
    }

    fn toolchain() -> Toolchain {
        Toolchain { channel: "1.88.0".into(), source: "pinned by Neon release-9129".into() }
    }

    #[tokio::test]
    async fn evaluates_what_the_probe_sees() {
        let os = detect_os(Some(DEBIAN_12), "Linux");
        let rows = check(&workstation(), &os, &selected_phases(&[]), &toolchain(), "us-east-1").await;
        let table: Vec<String> = rows
            .iter()
            .map(|r| format!("{} {} {:?} {}", r.tool, r.found.as_deref().unwrap_or("-"), r.status, r.note.as_deref().unwrap_or("")))
            .collect();
        insta::assert_snapshot!(table.join("\n"), @r"
        rustc 1.95.0 Ok 
        cargo 1.95.0 Ok 
        neon toolchain 1.88.0 Ok pinned by Neon release-9129
        protoc 3.12.4 TooOld 
        clang - Missing 
        make 4.3 Ok 
        flex - Missing 
        bison 3.8.2 Ok 
        pkg-config 1.8.1 Ok 
        openssl 3.0.17 Ok 
        readline 8.2 Ok 
        zlib 1.2.13 Ok 
        libseccomp 2.5.4 Ok 
        libcurl 7.88.1 Ok 
        icu-uc 72.1 Ok 
        git 2.47.3 Ok 
        mold - Recommended 
        objcopy 2.40 Ok 
        docker - Missing cannot reach the Docker Engine at unix:///var/run/docker.sock: No such file or directory
        aws credentials environment AKIA…PLE Ok
        ");

        let error = verdict(&rows, &[]).unwrap_err();
        assert_eq!(crate::exit::code_for(&error), PREREQS_MISSING);
        assert_eq!(
            error.to_string(),
            "4 required prerequisites missing: protoc (too old), clang, flex, docker; run `neonctl-aws prereqs --install` \
             to install what a package manager can (add --plan to only see the commands)"
        );
        let error = verdict(&rows, &[PhaseName::Images]).unwrap_err();
        assert!(error.to_string().contains("prereqs --install --for images`"), "{error}");

        // Only what was asked for is checked: the missing build tools do not fail `--for infra`.
        let rows = check(&workstation(), &os, &[PhaseName::Infra], &toolchain(), "us-east-1").await;
        assert_eq!(rows.len(), 1);
        verdict(&rows, &[PhaseName::Infra]).unwrap();
    }

    #[tokio::test]
    async fn a_missing_rustup_means_a_missing_toolchain() {
        let os = detect_os(Some(DEBIAN_12), "Linux");
        let probe = Fake::new(&[("rustc --version", "rustc 1.95.0 (59807616e 2026-04-14)")]);
        let rows = check(&probe, &os, &[PhaseName::Build], &toolchain(), "us-east-1").await;
        let row = rows.iter().find(|r| r.item == Item::NeonToolchain).unwrap();
        assert_eq!(row.status, Status::Missing);
        assert_eq!(row.note.as_deref(), Some("rustup is not installed; Neon builds with Rust 1.88.0 (pinned by Neon release-9129)"));
    }

    #[tokio::test]
    async fn a_failing_install_command_stops_the_install_and_is_named() {
        let printer = Printer::for_style(Style::Plain);
        let argv = |words: &[&str]| words.iter().map(|w| w.to_string()).collect::<Vec<_>>();
        run_command(&printer, &argv(&["true"])).await.unwrap();
        let error = run_command(&printer, &argv(&["false", "--flag"])).await.unwrap_err();
        assert!(error.to_string().starts_with("`false --flag` failed (exit status: 1)"), "{error}");
        let error = run_command(&printer, &argv(&["/nonexistent/apt-get", "update"])).await.unwrap_err();
        assert_eq!(error.to_string(), "could not start `/nonexistent/apt-get update`");
    }

    fn everything(family: Family) -> Vec<Item> {
        needs(&selected_phases(&[]), family).into_iter().map(|n| n.item).collect()
    }

    fn env(sudo: bool, rustup: bool) -> InstallEnv {
        InstallEnv { sudo, rustup, toolchain: "1.88.0".into() }
    }

    #[test]
    fn install_plan_per_distribution() {
        for (name, release, uname) in [
            ("debian", Some(DEBIAN_12), "Linux"),
            ("fedora", Some(FEDORA_41), "Linux"),
            ("rocky", Some(ROCKY_9), "Linux"),
            ("arch", Some(ARCH), "Linux"),
            ("macos", None, "Darwin"),
            ("unknown", Some(ALPINE), "Linux"),
        ] {
            let os = detect_os(release, uname);
            let plan = install_plan(&os, &everything(os.family), &env(os.family != Family::Macos, true));
            insta::assert_snapshot!(format!("install_plan_{name}"), plan_table(&plan).render());
        }
    }

    #[test]
    fn install_plan_covers_exactly_what_is_missing() {
        let debian = detect_os(Some(DEBIAN_12), "Linux");
        let argv = |words: &[&str]| words.iter().map(|w| w.to_string()).collect::<Vec<_>>();
        let plan = install_plan(&debian, &[Item::Protoc, Item::Mold], &env(false, true));
        assert_eq!(
            plan,
            InstallPlan {
                commands: vec![
                    argv(&["apt-get", "update"]),
                    argv(&["apt-get", "install", "-y", "protobuf-compiler", "libprotobuf-dev", "mold"])
                ],
                manual: vec![],
            }
        );

        let ubuntu = detect_os(Some(UBUNTU_24_04), "Linux");
        let plan = install_plan(&ubuntu, &[Item::Lib(Lib::Icu), Item::NeonToolchain], &env(true, true));
        assert_eq!(
            plan.commands,
            [
                argv(&["sudo", "apt-get", "update"]),
                argv(&["sudo", "apt-get", "install", "-y", "libicu-dev"]),
                argv(&["rustup", "toolchain", "install", "1.88.0"])
            ]
        );

        // Nothing a package manager installs: no apt-get at all, only what to do by hand.
        let plan = install_plan(&debian, &[Item::Docker, Item::NeonToolchain], &env(true, false));
        assert!(plan.commands.is_empty());
        assert_eq!(plan.manual.len(), 2);
        assert!(plan.manual[0].contains("rustup toolchain install 1.88.0"), "{:?}", plan.manual);
        assert!(plan.manual[1].starts_with("Docker:"), "{:?}", plan.manual);

        // Fedora proper needs no EPEL note.
        let fedora = detect_os(Some(FEDORA_41), "Linux");
        let plan = install_plan(&fedora, &[Item::Protoc], &env(true, true));
        assert_eq!(plan.commands, [argv(&["sudo", "dnf", "install", "-y", "protobuf-compiler", "protobuf-devel"])]);
        assert!(plan.manual.is_empty());
    }
}
