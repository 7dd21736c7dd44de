//! [`RenderInputs`]: everything the manifests depend on, in one typed value. It is the seam
//! between the phases (infra knows the bucket, zones and IRSA roles; push knows the image
//! digests) and the templates. `render` builds it from the config plus command-line overrides.

use std::collections::BTreeMap;

use crate::config::Config;

use super::RenderError;

/// The image names of [`crate::IMAGES`] plus the storage controller's Postgres.
pub const POSTGRES_IMAGE: &str = "postgres";
/// The storage controller database image when nothing else is given (ECR Public mirror of the
/// Docker official image: no Docker Hub rate limit from EKS nodes).
pub const DEFAULT_POSTGRES_IMAGE: &str = "public.ecr.aws/docker/library/postgres:17";

/// An image reference: by digest when the push phase recorded one, else by tag.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
pub enum ImageRef {
    Digest { repository: String, digest: String },
    Tag { repository: String, tag: String },
}

impl ImageRef {
    /// Parses `repo@sha256:…`, `repo:tag` or `repo` (tag `latest`).
    pub fn parse(reference: &str) -> Result<Self, RenderError> {
        let bad = || RenderError::BadImage { reference: reference.to_string() };
        if reference.is_empty() || reference.chars().any(char::is_whitespace) {
            return Err(bad());
        }
        if let Some((repository, digest)) = reference.split_once('@') {
            let hex = digest.strip_prefix("sha256:").ok_or_else(bad)?;
            if repository.is_empty() || hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad());
            }
            return Ok(Self::Digest { repository: repository.into(), digest: digest.into() });
        }
        let last = reference.rsplit('/').next().unwrap_or(reference);
        match last.split_once(':') {
            Some((_, "")) => Err(bad()),
            Some((_, tag)) => Ok(Self::Tag { repository: reference[..reference.len() - tag.len() - 1].to_string(), tag: tag.to_string() }),
            None => Ok(Self::Tag { repository: reference.into(), tag: "latest".into() }),
        }
    }

    pub fn reference(&self) -> String {
        match self {
            Self::Digest { repository, digest } => format!("{repository}@{digest}"),
            Self::Tag { repository, tag } => format!("{repository}:{tag}"),
        }
    }
}

/// Where the storage controller's database lives. Either way its URL reaches the controller
/// from the Secret `<prefix>-storcon-db` (key `database-url`), never from a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorconDb {
    /// A Postgres StatefulSet with a PVC in the namespace (the default).
    InCluster { storage: String },
    /// An existing database (RDS, ...): only the Secret is needed.
    External,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderInputs {
    pub prefix: String,
    pub namespace: String,
    pub region: String,
    pub bucket: String,
    /// An S3-compatible endpoint instead of AWS S3; its credentials come from
    /// [`RenderInputs::s3_credentials_secret`].
    pub s3_endpoint: Option<String>,
    /// IRSA roles; `None` on a cluster this tool did not create (S3 access must then come from
    /// the node role or EKS Pod Identity).
    pub pageserver_role_arn: Option<String>,
    pub safekeeper_role_arn: Option<String>,
    /// One per name in [`crate::IMAGES`], plus [`POSTGRES_IMAGE`].
    pub images: BTreeMap<String, ImageRef>,
    /// The availability zones pageservers and safekeepers are pinned to, round-robin.
    pub zones: Vec<String>,
    pub pageservers: u32,
    pub safekeepers: u32,
    pub storcon_db: StorconDb,
    /// Clients connect to `<endpoint>.<proxy_domain>`; the TLS certificate's CN is `*.<proxy_domain>`.
    pub proxy_domain: String,
    pub storage_class: StorageClass,
    pub pageserver_storage: String,
    pub safekeeper_storage: String,
    /// Where compute_ctl exports traces; `None`: it exports none.
    pub otlp_endpoint: Option<String>,
    /// The zones were guessed from the region rather than given.
    pub zones_assumed: bool,
    /// The bucket name holds a placeholder account id.
    pub bucket_assumed: bool,
}

/// The StorageClass every PVC uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageClass {
    /// Render an encrypted gp3 class (EBS CSI driver) with this name.
    Create(String),
    /// Use a class the cluster already has.
    Existing(String),
}

impl StorageClass {
    pub fn name(&self) -> &str {
        match self {
            Self::Create(name) | Self::Existing(name) => name,
        }
    }
}

/// Command-line or phase-state overrides of what the config alone implies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    pub namespace: Option<String>,
    pub bucket: Option<String>,
    pub s3_endpoint: Option<String>,
    pub pageserver_role_arn: Option<String>,
    pub safekeeper_role_arn: Option<String>,
    /// `(image name, reference)`.
    pub images: Vec<(String, String)>,
    pub zones: Vec<String>,
    pub external_storcon_db: bool,
    pub proxy_domain: Option<String>,
    pub storage_class: Option<String>,
}

impl Overrides {
    /// What earlier phases recorded: the bucket, zones and IRSA roles `infra` created, and the
    /// digests `push` recorded. Anything not recorded yet stays as the config implies.
    pub fn from_state(state: &crate::state::State) -> Self {
        let output = |component: &str, key: &str| state.infra.resources.get(component).and_then(|r| r.outputs.get(key)).cloned();
        Self {
            bucket: output("bucket", "name"),
            pageserver_role_arn: output("role-pageserver", "arn"),
            safekeeper_role_arn: output("role-safekeeper", "arn"),
            images: state.push.iter().map(|(image, pushed)| (image.clone(), pushed.digest_ref.clone())).collect(),
            zones: state.infra.azs.clone(),
            ..Self::default()
        }
    }
}

impl RenderInputs {
    /// What the config alone implies: images by tag `latest` from the configured registry (or
    /// unqualified `<prefix>/<image>`), zones `<region>a`, `b`, ... and no IRSA roles.
    /// [`RenderInputs::assumptions`] lists each guess.
    pub fn from_config(config: &Config) -> Self {
        let prefix = &config.prefix;
        let images = crate::IMAGES
            .iter()
            .map(|image| {
                let repository = match &config.images.registry {
                    Some(registry) => format!("{}/{prefix}/{image}", registry.trim_end_matches('/')),
                    None => format!("{prefix}/{image}"),
                };
                (image.to_string(), ImageRef::Tag { repository, tag: "latest".into() })
            })
            .chain([(POSTGRES_IMAGE.to_string(), ImageRef::parse(DEFAULT_POSTGRES_IMAGE).expect("a valid constant"))])
            .collect();
        Self {
            prefix: prefix.clone(),
            namespace: prefix.clone(),
            region: config.region.clone(),
            bucket: config.bucket.name.clone().unwrap_or_else(|| format!("{prefix}-000000000000-{}", config.region)),
            s3_endpoint: config.bucket.endpoint.clone(),
            pageserver_role_arn: None,
            safekeeper_role_arn: None,
            images,
            zones: (0..config.network.az_count).map(|i| format!("{}{}", config.region, char::from(b'a' + i))).collect(),
            pageservers: config.neon.pageservers,
            safekeepers: config.neon.safekeepers,
            storcon_db: StorconDb::InCluster { storage: "10Gi".into() },
            proxy_domain: proxy_domain(config),
            storage_class: StorageClass::Create(format!("{prefix}-gp3")),
            pageserver_storage: "100Gi".into(),
            safekeeper_storage: "50Gi".into(),
            otlp_endpoint: config.compute.otlp_endpoint.clone(),
            zones_assumed: true,
            bucket_assumed: config.bucket.name.is_none(),
        }
    }

    /// Applies overrides on top of what the config implies.
    pub fn with_overrides(mut self, overrides: Overrides) -> Result<Self, RenderError> {
        if let Some(namespace) = overrides.namespace {
            check_dns_label("--namespace", &namespace)?;
            self.namespace = namespace;
        }
        if let Some(bucket) = overrides.bucket {
            crate::aws_names::Resource::S3Bucket
                .check(&bucket)
                .map_err(|message| RenderError::BadName { flag: "--bucket".into(), value: format!("{bucket} ({message})") })?;
            self.bucket = bucket;
            self.bucket_assumed = false;
        }
        if let Some(endpoint) = overrides.s3_endpoint {
            let valid = (endpoint.starts_with("http://") || endpoint.starts_with("https://"))
                && endpoint.split_once("://").is_some_and(|(_, rest)| !rest.is_empty() && !rest.chars().any(char::is_whitespace));
            if !valid {
                return Err(RenderError::BadEndpoint { value: endpoint });
            }
            self.s3_endpoint = Some(endpoint);
        }
        for (flag, arn) in
            [("--pageserver-role-arn", &overrides.pageserver_role_arn), ("--safekeeper-role-arn", &overrides.safekeeper_role_arn)]
        {
            if let Some(arn) = arn {
                check_role_arn(flag, arn)?;
            }
        }
        self.pageserver_role_arn = overrides.pageserver_role_arn.or(self.pageserver_role_arn);
        self.safekeeper_role_arn = overrides.safekeeper_role_arn.or(self.safekeeper_role_arn);
        for (name, reference) in overrides.images {
            if !self.images.contains_key(&name) {
                return Err(RenderError::UnknownImage { name, known: self.images.keys().cloned().collect() });
            }
            self.images.insert(name, ImageRef::parse(&reference)?);
        }
        if !overrides.zones.is_empty() {
            for zone in &overrides.zones {
                check_dns_label("--zones", zone)?;
            }
            self.zones = overrides.zones;
            self.zones_assumed = false;
        }
        if overrides.external_storcon_db {
            self.storcon_db = StorconDb::External;
        }
        if let Some(domain) = overrides.proxy_domain {
            for label in domain.split('.') {
                check_dns_label("--proxy-domain", label)
                    .map_err(|_| RenderError::BadName { flag: "--proxy-domain".into(), value: domain.clone() })?;
            }
            self.proxy_domain = domain;
        }
        if let Some(class) = overrides.storage_class {
            check_dns_label("--storage-class", &class)?;
            self.storage_class = StorageClass::Existing(class);
        }
        Ok(self)
    }

    /// Whether the storage controller places each timeline on safekeepers itself
    /// (`--timelines-onto-safekeepers`): it wants `--timeline-safekeeper-count` (3; strict mode
    /// refuses fewer) safekeepers in different zones (`safekeepers_for_new_timeline` in
    /// `safekeeper_service.rs`), else every timeline creation fails.
    pub fn timelines_onto_safekeepers(&self) -> bool {
        self.zones.len().min(usize::try_from(self.safekeepers).unwrap_or(usize::MAX)) >= 3
    }

    /// What is assumed rather than known: each line says what to pass or run to settle it.
    pub fn assumptions(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.timelines_onto_safekeepers() {
            out.push(format!(
                "the safekeepers span {} zone(s): the storage controller needs 3 in different zones to place timelines, so it runs \
                 without --timelines-onto-safekeepers (computes write to every safekeeper; no safekeeper migration); give 3 zones",
                self.zones.len().min(usize::try_from(self.safekeepers).unwrap_or(usize::MAX))
            ));
        }
        if self.zones_assumed {
            out.push(format!(
                "zones {} are guessed from the region: the infra phase records the real ones (or pass --zones)",
                self.zones.join(", ")
            ));
        }
        if self.bucket_assumed {
            out.push(format!("bucket {} holds a placeholder account id: pass --bucket, or run infra first", self.bucket));
        }
        for (name, image) in &self.images {
            if let ImageRef::Tag { .. } = image {
                let settle = if name == POSTGRES_IMAGE {
                    "pass --image postgres=<repository>@sha256:<digest>"
                } else {
                    "the push phase records digests"
                };
                out.push(format!("image {name} is referenced by tag ({}): a re-push can change what runs ({settle})", image.reference()));
            }
        }
        for (component, arn) in [("pageserver", &self.pageserver_role_arn), ("safekeeper", &self.safekeeper_role_arn)] {
            if arn.is_some() && self.namespace != self.prefix {
                let (trusted, account) = super::service_account(&self.prefix, component);
                out.push(format!(
                    "the {component} IRSA role trusts service account {trusted}/{account}, but it runs in namespace {}: \
                     S3 access will be denied (use --namespace {trusted}, or pass --{component}-role-arn of a role that trusts it)",
                    self.namespace
                ));
            }
            if arn.is_none() {
                out.push(format!(
                    "no IRSA role for the {component}: its S3 access must come from the node role or EKS Pod Identity (or pass --{component}-role-arn)"
                ));
            }
        }
        out
    }
}

fn check_dns_label(flag: &str, value: &str) -> Result<(), RenderError> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok { Ok(()) } else { Err(RenderError::BadName { flag: flag.into(), value: value.into() }) }
}

/// `arn:<partition>:iam::<12-digit account>:role/<path/name>`.
fn check_role_arn(flag: &str, arn: &str) -> Result<(), RenderError> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let ok = matches!(parts.as_slice(), ["arn", partition, "iam", "", account, resource]
        if partition.starts_with("aws")
            && account.len() == 12
            && account.chars().all(|c| c.is_ascii_digit())
            && resource.strip_prefix("role/").is_some_and(|name| !name.is_empty()));
    if ok { Ok(()) } else { Err(RenderError::BadRoleArn { flag: flag.into(), value: arn.into() }) }
}

/// Clients connect to `<endpoint>.<this>`: `proxy.domain`, else `<prefix>.neon.internal`.
pub fn proxy_domain(config: &Config) -> String {
    config.proxy.domain.clone().unwrap_or_else(|| format!("{}.neon.internal", config.prefix))
}
