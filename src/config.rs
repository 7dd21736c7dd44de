//! The user's config: `neonctl-aws.yaml`, every knob documented in `config/default.yaml`.
//!
//! Loading never touches the network: a bad name, key or region is refused before any external
//! call, with the key's path and what to write instead.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::aws_names;

/// The commented starter file `init` writes; it parses to [`Config::default`].
pub const DEFAULT_YAML: &str = include_str!("../config/default.yaml");
pub const DEFAULT_FILE: &str = "neonctl-aws.yaml";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Name prefix of every resource; also the EKS cluster name and the tag value.
    pub prefix: String,
    pub region: String,
    pub aws: AwsConfig,
    pub network: NetworkConfig,
    pub cluster: ClusterConfig,
    pub neon: NeonConfig,
    pub images: ImagesConfig,
    pub bucket: BucketConfig,
    pub ecr: EcrConfig,
    pub proxy: ProxyConfig,
    pub compute: ComputeConfig,
    pub pricing: PricingConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            prefix: "neon".into(),
            region: "us-east-1".into(),
            aws: AwsConfig::default(),
            network: NetworkConfig::default(),
            cluster: ClusterConfig::default(),
            neon: NeonConfig::default(),
            images: ImagesConfig::default(),
            bucket: BucketConfig::default(),
            ecr: EcrConfig::default(),
            proxy: ProxyConfig::default(),
            compute: ComputeConfig::default(),
            pricing: PricingConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsConfig {
    /// Running against an emulator (moto): skip only the calls it lacks, with a warning.
    pub emulator: bool,
    /// Accept a region missing from the built-in list (a region newer than this binary).
    pub allow_unlisted_region: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    pub vpc_cidr: String,
    pub az_count: u8,
    pub nat_gateways: NatGateways,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self { vpc_cidr: "10.42.0.0/16".into(), az_count: 3, nat_gateways: NatGateways::Single }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NatGateways {
    Single,
    PerAz,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `1.NN`; none: the newest version in EKS standard support when the cluster is created.
    pub kubernetes_version: Option<String>,
    pub node_instance_type: String,
    pub node_count: u32,
    pub node_disk_gib: u32,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            kubernetes_version: None,
            node_instance_type: crate::platform::host_instance_type().into(),
            node_count: 3,
            node_disk_gib: 100,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NeonConfig {
    pub source: NeonSource,
    pub pageservers: u32,
    pub safekeepers: u32,
}

impl Default for NeonConfig {
    fn default() -> Self {
        Self { source: NeonSource::default(), pageservers: 1, safekeepers: 3 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NeonSource {
    /// A local checkout; when set, `git` and `rev` are not used.
    pub path: Option<PathBuf>,
    pub git: String,
    pub rev: String,
}

impl Default for NeonSource {
    fn default() -> Self {
        Self { path: None, git: "https://github.com/neondatabase/neon.git".into(), rev: "release-9129".into() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImagesConfig {
    /// `scratch` (binaries plus their shared libraries) or a distro image to build on.
    pub base: String,
    /// Push here instead of ECR: `host[:port]/path`.
    pub registry: Option<String>,
    /// Ship the binaries without their debug info (kept in `.neonctl-aws/debug/`), as Neon's
    /// own images do.
    pub strip: bool,
}

impl Default for ImagesConfig {
    fn default() -> Self {
        Self { base: "scratch".into(), registry: None, strip: true }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BucketConfig {
    /// Default: `<prefix>-<account id>-<region>`, unique worldwide.
    pub name: Option<String>,
    /// An S3-compatible endpoint (MinIO, Ceph, R2, ...) instead of AWS S3, for your own cluster.
    pub endpoint: Option<String>,
    pub intelligent_tiering_after_days: u32,
    pub noncurrent_version_expiration_days: u32,
}

impl Default for BucketConfig {
    fn default() -> Self {
        Self { name: None, endpoint: None, intelligent_tiering_after_days: 30, noncurrent_version_expiration_days: 7 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EcrConfig {
    /// Images kept per repository; older ones expire.
    pub keep_images: u32,
}

impl Default for EcrConfig {
    fn default() -> Self {
        Self { keep_images: 10 }
    }
}

/// How clients reach the proxy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Clients connect to `<endpoint>.<domain>`. Default: `<prefix>.neon.internal`.
    pub domain: Option<String>,
    /// The proxy's TLS certificate (PEM) and key; both or neither. Without them deploy
    /// generates a self-signed certificate for `*.<domain>`.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

/// What computes run with.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ComputeConfig {
    /// Where compute_ctl exports its OpenTelemetry traces (OTLP over HTTP). Default: nowhere,
    /// with the export switched off (neon's default, `localhost:4318`, has no collector).
    pub otlp_endpoint: Option<String>,
}

/// On-demand list prices (USD) behind the monthly estimate of `infra --plan`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PricingConfig {
    /// When these prices were read from the AWS price list; printed with the estimate.
    pub as_of: String,
    pub eks_cluster_per_hour: f64,
    /// A cluster on a Kubernetes version in extended support.
    pub eks_extended_cluster_per_hour: f64,
    pub nat_gateway_per_hour: f64,
    pub ebs_gp3_per_gib_month: f64,
    pub nlb_per_hour: f64,
    /// Per instance type; a node type missing here is left out of the estimate, with a note.
    pub instance_per_hour: std::collections::BTreeMap<String, f64>,
}

impl Default for PricingConfig {
    fn default() -> Self {
        let instances = [
            ("m6i.large", 0.096),
            ("m6i.xlarge", 0.192),
            ("m6i.2xlarge", 0.384),
            ("m7i.xlarge", 0.2016),
            ("m7g.xlarge", 0.1632),
            ("r6i.xlarge", 0.252),
            ("c6i.xlarge", 0.17),
            ("t3.large", 0.0832),
            ("t3.xlarge", 0.1664),
        ];
        Self {
            as_of: "2026-11-01".into(),
            eks_cluster_per_hour: 0.10,
            eks_extended_cluster_per_hour: 0.60,
            nat_gateway_per_hour: 0.045,
            ebs_gp3_per_gib_month: 0.08,
            nlb_per_hour: 0.0225,
            instance_per_hour: instances.into_iter().map(|(t, p)| (t.to_string(), p)).collect(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("reading {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{file}: not valid YAML: {message}")]
    Yaml { file: String, message: String },
    #[error("{file}: unknown key `{key}`{}", suggestion.as_ref().map(|s| format!("; did you mean `{s}`?")).unwrap_or_default())]
    UnknownKey { file: String, key: String, suggestion: Option<String> },
    #[error("{file}: `{key}`: {message}")]
    Invalid { file: String, key: String, message: String },
}

impl Config {
    /// Loads `explicit`, else `./neonctl-aws.yaml` if present, else the defaults; applies the
    /// command-line overrides; validates.
    pub fn load(explicit: Option<&Path>, prefix: Option<&str>, region: Option<&str>) -> Result<Self, ConfigError> {
        let path = explicit.map(Path::to_path_buf).or_else(|| {
            let default = PathBuf::from(DEFAULT_FILE);
            default.exists().then_some(default)
        });
        let mut config = match &path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read { path: path.clone(), message: e.to_string() })?;
                Self::parse(&text, &path.display().to_string())?
            }
            None => Self::default(),
        };
        if let Some(prefix) = prefix {
            config.prefix = prefix.to_string();
        }
        if let Some(region) = region {
            config.region = region.to_string();
        }
        let file = path.map(|p| p.display().to_string()).unwrap_or_else(|| "config".into());
        config.validate().map_err(|(key, message)| ConfigError::Invalid { file, key, message })?;
        Ok(config)
    }

    /// Parses YAML text; `file` names it in errors. Does not validate values.
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let value: serde_json::Value = if text.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_saphyr::from_str(text).map_err(|e| ConfigError::Yaml { file: file.into(), message: e.to_string() })?
        };
        let value = if value.is_null() { serde_json::json!({}) } else { value };
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            match unknown_field(&inner) {
                Some((field, expected)) => {
                    let parent = path.strip_suffix(&field).unwrap_or(&path).trim_end_matches('.');
                    let key = if parent.is_empty() || parent == "." { field.clone() } else { format!("{parent}.{field}") };
                    ConfigError::UnknownKey { file: file.into(), key, suggestion: closest(&field, &expected) }
                }
                None => ConfigError::Invalid { file: file.into(), key: path, message: inner },
            }
        })
    }

    /// Checks every value against the rules of what it becomes. Returns (key, message).
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |key: &str, message: String| Err((key.to_string(), message));
        if let Err(message) = aws_names::check_prefix(&self.prefix) {
            return err("prefix", message);
        }
        for (resource, name) in self.derived_names() {
            if let Err(message) = resource.check(&name) {
                return err("prefix", format!("becomes {resource} name `{name}`, which is invalid: {message}"));
            }
        }
        if let Some(endpoint) = &self.compute.otlp_endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return err(
                "compute.otlp_endpoint",
                format!("`{endpoint}` is not an http:// or https:// URL, e.g. http://otel-collector.monitoring:4318"),
            );
        }
        if let Some(Err(message)) = self.bucket.name.as_deref().map(|b| aws_names::Resource::S3Bucket.check(b)) {
            return err("bucket.name", message);
        }
        if let Err(message) = aws_names::check_region(&self.region, self.aws.allow_unlisted_region) {
            return err("region", message);
        }
        if let Err(message) = check_vpc_cidr(&self.network.vpc_cidr) {
            return err("network.vpc_cidr", message);
        }
        if !(2..=3).contains(&self.network.az_count) {
            return err("network.az_count", format!("{} is out of range: use 2 or 3 availability zones", self.network.az_count));
        }
        if let Some(version) = &self.cluster.kubernetes_version {
            let version_ok = version.strip_prefix("1.").and_then(|minor| minor.parse::<u32>().ok()).is_some_and(|minor| minor >= 30);
            if !version_ok {
                return err(
                    "cluster.kubernetes_version",
                    format!("`{version}` is not a supported EKS version: write it as 1.NN, 1.30 or newer (e.g. \"1.35\"), or leave it out"),
                );
            }
        }
        let itype = &self.cluster.node_instance_type;
        let itype_ok = itype.split_once('.').is_some_and(|(family, size)| {
            let ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            ok(family) && ok(size)
        });
        if !itype_ok {
            return err("cluster.node_instance_type", format!("`{itype}` is not an EC2 instance type (like m6i.xlarge)"));
        }
        if !(1..=100).contains(&self.cluster.node_count) {
            return err("cluster.node_count", format!("{} is out of range 1..=100", self.cluster.node_count));
        }
        if !(20..=16384).contains(&self.cluster.node_disk_gib) {
            return err("cluster.node_disk_gib", format!("{} GiB is out of range 20..=16384", self.cluster.node_disk_gib));
        }
        if !(1..=32).contains(&self.neon.pageservers) {
            return err("neon.pageservers", format!("{} is out of range 1..=32", self.neon.pageservers));
        }
        if !(3..=7).contains(&self.neon.safekeepers) {
            return err("neon.safekeepers", format!("{} is out of range: the WAL quorum needs 3 to 7 safekeepers", self.neon.safekeepers));
        }
        if self.neon.source.path.is_none() && self.neon.source.rev.trim().is_empty() {
            return err("neon.source.rev", "empty: name a tag, branch or commit (default release-9129)".into());
        }
        if self.images.base.trim().is_empty() {
            return err("images.base", "empty: use `scratch` or an image reference".into());
        }
        if let Some(Err(message)) = self.images.registry.as_deref().map(aws_names::check_registry) {
            return err("images.registry", message);
        }
        if self.bucket.noncurrent_version_expiration_days == 0 {
            return err("bucket.noncurrent_version_expiration_days", "must be at least 1".into());
        }
        if let Some(domain) = &self.proxy.domain {
            let label_ok = |l: &str| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            };
            if !domain.split('.').all(label_ok) {
                return err("proxy.domain", format!("`{domain}` is not a DNS domain: lowercase labels of letters, digits and hyphens"));
            }
        }
        if self.proxy.tls_cert.is_some() != self.proxy.tls_key.is_some() {
            let (key, other) = if self.proxy.tls_cert.is_some() { ("proxy.tls_key", "tls_cert") } else { ("proxy.tls_cert", "tls_key") };
            return err(key, format!("missing: proxy.{other} is set, and the certificate and its key go together"));
        }
        if self.ecr.keep_images == 0 {
            return err("ecr.keep_images", "must be at least 1: deploy needs the image it references".into());
        }
        Ok(())
    }

    /// Every AWS name the prefix turns into, checked at load time (the bucket name needs the
    /// account id, so a 12-digit placeholder stands in for it).
    pub fn derived_names(&self) -> Vec<(aws_names::Resource, String)> {
        use aws_names::Resource::*;
        let p = &self.prefix;
        let mut names = vec![(EksCluster, p.clone()), (EksNodegroup, format!("{p}-nodes"))];
        for role in ["cluster", "node", "pageserver", "safekeeper", "ebs-csi", "vpc-cni"] {
            names.push((IamRole, format!("{p}-{role}")));
        }
        for repo in crate::IMAGES {
            names.push((EcrRepository, format!("{p}/{repo}")));
        }
        if self.bucket.name.is_none() {
            names.push((S3Bucket, format!("{p}-000000000000-{}", self.region)));
        }
        names
    }
}

/// serde's message for deny_unknown_fields: "unknown field `x`, expected one of `a`, `b`".
fn unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (field, rest) = rest.split_once('`')?;
    let expected = rest.split('`').skip(1).step_by(2).map(str::to_string).collect();
    Some((field.to_string(), expected))
}

fn closest(word: &str, candidates: &[String]) -> Option<String> {
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.75)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c.clone())
}

fn check_vpc_cidr(cidr: &str) -> Result<(), String> {
    let (addr, len) = cidr.split_once('/').ok_or_else(|| format!("`{cidr}` is not a CIDR block like 10.42.0.0/16"))?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| format!("`{addr}` is not an IPv4 address"))?;
    let len: u32 = len.parse().map_err(|_| format!("`/{len}` is not a prefix length"))?;
    if !(16..=20).contains(&len) {
        return Err(format!("/{len} is out of range: use /16 to /20 (six subnets are carved from it)"));
    }
    if u32::from(addr) & !(u32::MAX << (32 - len)) != 0 {
        return Err(format!("{addr} has host bits set for /{len}"));
    }
    if !(addr.is_private() || addr.octets()[0] == 100 && (64..128).contains(&addr.octets()[1])) {
        return Err(format!("{addr} is not in a private range (10/8, 172.16/12, 192.168/16, 100.64/10)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_starter_file_is_the_defaults() {
        // The file names the x86_64 default; `init` writes the host's (see `platform`).
        let mut expected = Config::default();
        expected.cluster.node_instance_type = "m6i.xlarge".into();
        assert_eq!(Config::parse(DEFAULT_YAML, "default.yaml").unwrap(), expected);
        Config::default().validate().unwrap();
    }

    #[test]
    fn empty_file_is_the_defaults() {
        assert_eq!(Config::parse("", "x").unwrap(), Config::default());
        assert_eq!(Config::parse("# only a comment\n", "x").unwrap(), Config::default());
    }

    #[test]
    fn unknown_keys_name_their_path_and_the_closest_key() {
        let err = Config::parse("cluster:\n  node_cout: 3\n", "n.yaml").unwrap_err();
        assert_eq!(err.to_string(), "n.yaml: unknown key `cluster.node_cout`; did you mean `node_count`?");
        let err = Config::parse("prefx: a\n", "n.yaml").unwrap_err();
        assert_eq!(err.to_string(), "n.yaml: unknown key `prefx`; did you mean `prefix`?");
        let err = Config::parse("neon:\n  source:\n    zzz: 1\n", "n.yaml").unwrap_err();
        assert_eq!(err.to_string(), "n.yaml: unknown key `neon.source.zzz`");
    }

    #[test]
    fn wrong_types_name_their_path() {
        let err = Config::parse("cluster:\n  node_count: many\n", "n.yaml").unwrap_err();
        assert!(matches!(&err, ConfigError::Invalid { key, .. } if key == "cluster.node_count"), "{err}");
        let err = Config::parse("network:\n  nat_gateways: two\n", "n.yaml").unwrap_err();
        assert!(err.to_string().contains("network.nat_gateways"), "{err}");
    }

    #[test]
    fn invalid_yaml_is_reported() {
        let err = Config::parse("prefix: [unclosed\n", "n.yaml").unwrap_err();
        assert!(matches!(err, ConfigError::Yaml { .. }), "{err}");
    }

    fn invalid(mutate: impl FnOnce(&mut Config)) -> (String, String) {
        let mut config = Config::default();
        mutate(&mut config);
        config.validate().unwrap_err()
    }

    #[test]
    fn prefix_name_classes_are_refused() {
        for (prefix, needle) in [
            ("Neon", "lowercase"),
            ("neon-with-a-prefix-far-too-long", "at most"),
            ("neon_db", "letters, digits and hyphens"),
            ("neon.db", "letters, digits and hyphens"),
            ("1neon", "start with a letter"),
            ("neon-", "end with a letter or digit"),
            ("ne--on", "two hyphens"),
            ("aws-neon", "reserves"),
            ("xn--neon", "reserves"),
            ("sthree-x", "reserves"),
            ("n", "at least"),
        ] {
            let (key, message) = invalid(|c| c.prefix = prefix.into());
            assert_eq!(key, "prefix");
            assert!(message.contains(needle), "{prefix}: {message}");
        }
    }

    #[test]
    fn other_values_are_checked() {
        assert_eq!(invalid(|c| c.region = "us-east-9".into()).0, "region");
        assert!(invalid(|c| c.region = "us-eats-1".into()).1.contains("did you mean `us-east-1`"));
        assert_eq!(invalid(|c| c.bucket.name = Some("Bad_Bucket".into())).0, "bucket.name");
        assert_eq!(invalid(|c| c.network.vpc_cidr = "10.42.0.1/16".into()).0, "network.vpc_cidr");
        assert_eq!(invalid(|c| c.network.vpc_cidr = "8.8.0.0/16".into()).0, "network.vpc_cidr");
        assert_eq!(invalid(|c| c.network.az_count = 4).0, "network.az_count");
        assert_eq!(invalid(|c| c.cluster.kubernetes_version = Some("1.2".into())).0, "cluster.kubernetes_version");
        assert_eq!(invalid(|c| c.cluster.node_instance_type = "big".into()).0, "cluster.node_instance_type");
        assert_eq!(invalid(|c| c.neon.safekeepers = 2).0, "neon.safekeepers");
        assert_eq!(invalid(|c| c.images.registry = Some("https://reg/x".into())).0, "images.registry");
    }

    #[test]
    fn an_unlisted_region_can_be_allowed() {
        let mut config = Config { region: "xx-north-7".into(), ..Config::default() };
        assert!(config.validate().is_err());
        config.aws.allow_unlisted_region = true;
        config.validate().unwrap();
    }
}
