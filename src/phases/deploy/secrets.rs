//! The Secrets the manifests read ([`RenderInputs::secrets`]) plus the database owner's
//! password: generated once, then kept. A value the cluster has is reused when it is still
//! valid; only what is missing or no longer valid is generated, so a second deploy changes
//! nothing and running pods keep working.
//!
//! - `<prefix>-jwt-signing`: the Ed25519 private key (PKCS#8 PEM).
//! - `<prefix>-auth`: its public key and one token per caller, with the scope the receiver
//!   checks; a token that does not verify against the current key (or has another scope) is
//!   minted again, so a new key pair re-mints them all.
//! - `<prefix>-pageserver-<id>`: `pageserver.toml`, rendered again each time (it follows the
//!   inputs) around the token it already holds.
//! - `<prefix>-storcon-db`: the in-cluster database's password and URL; with an external
//!   database the user's Secret must already have `database-url`, else nothing is changed.
//! - `<prefix>-proxy-tls`: the user's certificate, else a self-signed one for `*.<domain>`,
//!   kept until the domain changes.
//! - `<prefix>-main-owner`: the role's `username`, `password` and `database`.
//!
//! Values are [`Secret`]s: they reach the Kubernetes API and nothing else. Plans and errors
//! carry Secret names and keys only.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use kube::api::DynamicObject;
use ring::rand::SecureRandom;
use serde_json::json;

use crate::neon::Secret;
use crate::render::{
    LABEL_MANAGED_BY, LABEL_PREFIX, MANAGED_BY, RenderError, RenderInputs, S3_CREDENTIAL_KEYS, SecretRef, StorconDb, auth_keys,
};
use neonctl_contract::jwt::SigningKey;
use neonctl_contract::service::scopes;

/// The role and database deploy bootstraps, and the keys of the Secret holding the password.
pub const OWNER_ROLE: &str = "neondb_owner";
pub const DATABASE: &str = "neondb";
pub const USERNAME_KEY: &str = "username";
pub const PASSWORD_KEY: &str = "password";
pub const DATABASE_KEY: &str = "database";
pub const SIGNING_KEY: &str = "auth_private_key.pem";
pub const DATABASE_URL_KEY: &str = "database-url";
const PAGESERVER_TOML: &str = "pageserver.toml";
const TLS_CERT: &str = "tls.crt";
const TLS_KEY: &str = "tls.key";
/// On a generated proxy certificate's Secret: the CN it was made for.
pub const GENERATED_FOR: &str = "neonctl-aws/generated-for";
/// The scope of the pageserver's `control_plane_api_token`.
const GENERATIONS_API: &str = "generations_api";

/// The Secret holding the owner role's password.
pub fn role_secret(prefix: &str) -> String {
    format!("{prefix}-main-owner")
}

/// The scope each token of `<prefix>-auth` carries: neon checks its own (`NEON_SCOPES`), our
/// control plane checks the others.
fn token_scope(key: &str) -> Option<&'static str> {
    auth_keys::NEON_SCOPES.iter().find(|(k, _)| *k == key).map(|(_, scope)| *scope).or(match key {
        auth_keys::STORCON_TO_CONTROL_PLANE => Some(scopes::STORAGE_CONTROLLER),
        auth_keys::PROXY_TO_CONTROL_PLANE => Some(scopes::PROXY),
        auth_keys::COMPUTE_TO_CONTROL_PLANE => Some(scopes::COMPUTE),
        _ => None,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(
        "the storage controller database is external, but Secret {namespace}/{name} {problem}. Nothing was changed. Create it, \
         then run deploy again:\n  kubectl create namespace {namespace}\n  kubectl create secret generic {name} -n {namespace} \
         --from-literal={DATABASE_URL_KEY}='postgresql://USER:PASSWORD@HOST:5432/DATABASE'"
    )]
    ExternalDatabase { namespace: String, name: String, problem: String },
    #[error(
        "the bucket is behind the S3-compatible endpoint {endpoint}, but Secret {namespace}/{name} {problem}. Nothing was \
         changed. Create it with the store's access key, then run deploy again:\n  kubectl create namespace {namespace}\n  \
         kubectl create secret generic {name} -n {namespace} --from-literal=AWS_ACCESS_KEY_ID=... --from-literal=AWS_SECRET_ACCESS_KEY=..."
    )]
    S3Credentials { endpoint: String, namespace: String, name: String, problem: String },
    #[error("the system random number generator failed while generating {what}; retry, and check the host's entropy source")]
    Random { what: &'static str },
    #[error(
        "the proxy certificate's subject is `{found}`, but neon's proxy takes the domain it routes by from the whole \
         subject, so it must be exactly `{needed}`: no other attribute (O, C, OU, ...), and a SAN is not enough. Issue one \
         with only that subject, e.g. `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj '/CN=*.{domain}' \
         -addext 'subjectAltName=DNS:*.{domain}' -days 365 -keyout tls.key -out tls.crt`, or a cert-manager Certificate with \
         spec.commonName *.{domain} and no spec.subject{hint}"
    )]
    CertificateName { found: String, needed: String, domain: String, hint: String },
    #[error("generating the proxy's self-signed certificate for *.{domain}: {message}")]
    Certificate { domain: String, message: String },
    #[error("no Secret with key `{key}` among the ones the manifests read; this is a bug in neonctl-aws, please report it")]
    Missing { key: &'static str },
    #[error(transparent)]
    Render(#[from] RenderError),
}

/// A Secret as the cluster has it: values decoded (values that are not UTF-8 count as absent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveSecret {
    pub data: BTreeMap<String, Secret>,
    pub annotations: BTreeMap<String, String>,
}

impl LiveSecret {
    /// From a Secret's `data` (base64 in JSON, bytes in k8s-openapi) and annotations.
    pub fn new(data: impl IntoIterator<Item = (String, Vec<u8>)>, annotations: BTreeMap<String, String>) -> Self {
        let data = data.into_iter().filter_map(|(key, bytes)| String::from_utf8(bytes).ok().map(|v| (key, Secret(v)))).collect();
        Self { data, annotations }
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.data.get(key).map(|v| v.0.as_str()).filter(|v| !v.trim().is_empty())
    }
}

/// The proxy certificate and key the user gives (PEM).
#[derive(Debug, Clone)]
pub struct UserTls {
    pub cert: Secret,
    pub key: Secret,
}

/// What happens to one key of a Secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyChange {
    Keep,
    Add,
    Update,
}

/// One Secret as deploy will apply it.
#[derive(Debug, Clone)]
pub struct PlannedSecret {
    pub name: String,
    /// The cluster has it already.
    pub exists: bool,
    pub data: BTreeMap<String, Secret>,
    pub annotations: BTreeMap<String, String>,
    pub changes: BTreeMap<String, KeyChange>,
}

impl PlannedSecret {
    pub fn changed(&self) -> bool {
        !self.exists || self.changes.values().any(|c| *c != KeyChange::Keep)
    }

    /// What changes, by key: `add key tls.crt; update pageserver.toml; keep …`. Never a value.
    pub fn summary(&self) -> String {
        if !self.exists {
            return format!("keys {}", self.changes.keys().cloned().collect::<Vec<_>>().join(", "));
        }
        let of = |wanted: KeyChange| self.changes.iter().filter(|(_, c)| **c == wanted).map(|(k, _)| k.as_str()).collect::<Vec<_>>();
        [("add key", of(KeyChange::Add)), ("update", of(KeyChange::Update)), ("keep", of(KeyChange::Keep))]
            .into_iter()
            .filter(|(_, keys)| !keys.is_empty())
            .map(|(verb, keys)| format!("{verb} {}", keys.join(", ")))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The Secret to server-side apply (`data` base64, our labels).
    pub fn object(&self, namespace: &str, prefix: &str) -> DynamicObject {
        let data: BTreeMap<&str, String> = self.data.iter().map(|(k, v)| (k.as_str(), STANDARD.encode(&v.0))).collect();
        let mut metadata = json!({
            "name": self.name,
            "namespace": namespace,
            "labels": {LABEL_MANAGED_BY: MANAGED_BY, LABEL_PREFIX: prefix},
        });
        if !self.annotations.is_empty() {
            metadata["annotations"] = json!(self.annotations);
        }
        serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "data": data}))
            .expect("a Secret is a valid object")
    }
}

/// Every Secret deploy applies, and what the bootstrap needs from them.
#[derive(Debug)]
pub struct SecretsPlan {
    pub secrets: Vec<PlannedSecret>,
    /// The owner role's password (kept or new).
    pub role_password: Secret,
    /// The user's Secrets the workloads read (an external database's, an S3-compatible
    /// store's), as read: checked, never applied, never pruned.
    pub user_owned: BTreeMap<String, BTreeMap<String, Secret>>,
}

impl SecretsPlan {
    /// A digest of the values the workloads read, the user's Secrets included, so that pods
    /// restart when one changes (stamped on pod templates; it reveals nothing of the values).
    pub fn fingerprint(&self, owner_secret: &str) -> String {
        use sha2::Digest as _;
        let mut hash = sha2::Sha256::new();
        let ours = self.secrets.iter().filter(|s| s.name != owner_secret).map(|s| (&s.name, &s.data));
        for (name, data) in ours.chain(&self.user_owned) {
            for (key, value) in data {
                for part in [name.as_bytes(), key.as_bytes(), value.0.as_bytes()] {
                    hash.update((part.len() as u64).to_le_bytes());
                    hash.update(part);
                }
            }
        }
        hex::encode(hash.finalize())
    }
}

/// One Secret being planned: live values in, kept or new values out.
struct Builder<'a> {
    live: Option<&'a LiveSecret>,
    planned: PlannedSecret,
}

impl<'a> Builder<'a> {
    fn new(name: &str, live: &'a BTreeMap<String, LiveSecret>) -> Self {
        let live = live.get(name);
        let planned = PlannedSecret {
            name: name.to_string(),
            exists: live.is_some(),
            data: BTreeMap::new(),
            annotations: BTreeMap::new(),
            changes: BTreeMap::new(),
        };
        Self { live, planned }
    }

    fn live(&self, key: &str) -> Option<&'a str> {
        self.live.and_then(|s| s.get(key))
    }

    /// Sets `key` to `value`: kept when the cluster has the same, else updated or added.
    fn set(&mut self, key: &str, value: Secret) -> &mut Self {
        let change = match self.live(key) {
            Some(live) if live == value.0 => KeyChange::Keep,
            Some(_) => KeyChange::Update,
            None => KeyChange::Add,
        };
        self.planned.changes.insert(key.to_string(), change);
        self.planned.data.insert(key.to_string(), value);
        self
    }

    /// Keeps the live value of `key` when `valid` says so, else generates one.
    fn keep_or(
        &mut self,
        key: &str,
        valid: impl FnOnce(&str) -> bool,
        generate: impl FnOnce() -> Result<Secret, SecretError>,
    ) -> Result<Secret, SecretError> {
        let value = match self.live(key).filter(|v| valid(v)) {
            Some(live) => Secret(live.to_string()),
            None => generate()?,
        };
        self.set(key, value.clone());
        Ok(value)
    }

    fn done(self) -> PlannedSecret {
        self.planned
    }
}

/// Plans every Secret against what the cluster has (`live`, by name). Generates only what is
/// missing or invalid; fails before anything is applied when the external database's Secret
/// is missing.
pub fn plan(
    inputs: &RenderInputs,
    live: &BTreeMap<String, LiveSecret>,
    tls: Option<&UserTls>,
    rng: &dyn SecureRandom,
) -> Result<SecretsPlan, SecretError> {
    let refs = inputs.secrets();
    let by_key = |key: &'static str| -> Result<&SecretRef, SecretError> {
        refs.iter().find(|r| r.keys.iter().any(|k| k == key)).ok_or(SecretError::Missing { key })
    };
    let mut secrets = Vec::new();

    // The key pair, then everything signed with it.
    let mut signing = Builder::new(&by_key(SIGNING_KEY)?.name, live);
    let pem = signing.keep_or(
        SIGNING_KEY,
        |pem| SigningKey::from_pem(pem).is_ok(),
        || SigningKey::generate_pem(rng).map_err(|_| SecretError::Random { what: "the JWT signing key" }),
    )?;
    let key = SigningKey::from_pem(&pem.0).map_err(|_| SecretError::Random { what: "the JWT signing key" })?;
    let public = key.public_key();
    secrets.push(signing.done());
    // A token is kept while it verifies against the current key with the scope it needs.
    let valid_token = |scope: &str| {
        let public = public.clone();
        let scope = scope.to_string();
        move |token: &str| public.scope_of(token).is_ok_and(|found| found.as_deref() == Some(scope.as_str()))
    };
    let mint = |scope: &str| key.sign(&json!({"scope": scope}));

    let mut auth = Builder::new(&by_key(auth_keys::PUBLIC_KEY)?.name, live);
    auth.set(auth_keys::PUBLIC_KEY, Secret(public.to_pem()));
    for token_key in auth_keys::ALL.iter().copied().filter(|k| *k != auth_keys::PUBLIC_KEY) {
        let scope = token_scope(token_key).ok_or(SecretError::Missing { key: "a token scope" })?;
        auth.keep_or(token_key, valid_token(scope), || Ok(mint(scope)))?;
    }
    secrets.push(auth.done());

    // pageserver.toml follows the inputs; its token is kept while valid.
    for (id, secret) in (1u64..).zip(refs.iter().filter(|r| r.keys.iter().any(|k| k == PAGESERVER_TOML))) {
        let mut config = Builder::new(&secret.name, live);
        let token = config
            .live(PAGESERVER_TOML)
            .and_then(|text| text.parse::<toml::Table>().ok())
            .and_then(|table| table.get("control_plane_api_token").and_then(|t| t.as_str()).map(str::to_string))
            .filter(|token| valid_token(GENERATIONS_API)(token))
            .map(Secret)
            .unwrap_or_else(|| mint(GENERATIONS_API));
        config.set(PAGESERVER_TOML, Secret(inputs.pageserver_toml(id, token)?.to_toml().map_err(RenderError::from)?));
        secrets.push(config.done());
    }

    let mut user_owned = BTreeMap::new();
    let database = by_key(DATABASE_URL_KEY)?;
    match inputs.storcon_db {
        StorconDb::InCluster { .. } => {
            let mut db = Builder::new(&database.name, live);
            // Never a new password for a database that exists: it keeps the first one.
            let password = db.keep_or(PASSWORD_KEY, |_| true, || password(rng))?;
            let url = inputs.in_cluster_database_url(&password).ok_or(SecretError::Missing { key: DATABASE_URL_KEY })?;
            db.set(DATABASE_URL_KEY, url);
            secrets.push(db.done());
        }
        StorconDb::External => {
            let data = users_secret(live, &database.name, &[DATABASE_URL_KEY]).map_err(|problem| SecretError::ExternalDatabase {
                namespace: inputs.namespace.clone(),
                name: database.name.clone(),
                problem,
            })?;
            user_owned.insert(database.name.clone(), data);
        }
    }

    // The S3-compatible store's credentials are the user's: checked, never generated.
    if let (Some(name), Some(endpoint)) = (inputs.s3_credentials_secret(), &inputs.s3_endpoint) {
        let data = users_secret(live, &name, &S3_CREDENTIAL_KEYS).map_err(|problem| SecretError::S3Credentials {
            endpoint: endpoint.clone(),
            namespace: inputs.namespace.clone(),
            name: name.clone(),
            problem,
        })?;
        user_owned.insert(name, data);
    }

    let mut proxy = Builder::new(&by_key(TLS_CERT)?.name, live);
    let wildcard = format!("*.{}", inputs.proxy_domain);
    match tls {
        Some(user) => {
            check_users_certificate(&user.cert, &inputs.proxy_domain)?;
            proxy.set(TLS_CERT, user.cert.clone()).set(TLS_KEY, user.key.clone());
        }
        None => {
            let made_for = proxy.live.and_then(|s| s.annotations.get(GENERATED_FOR));
            let complete = proxy.live(TLS_CERT).is_some() && proxy.live(TLS_KEY).is_some();
            // Kept: ours for this domain (unless made before its subject was exactly what the
            // proxy needs), or one the user put there (no annotation), which must pass the rule.
            let live_cert = proxy.live(TLS_CERT).unwrap_or_default();
            let valid = super::tls::check_proxy_subject(live_cert, &inputs.proxy_domain).is_ok();
            if complete && made_for.is_none() && !valid {
                check_users_certificate(&Secret(live_cert.to_string()), &inputs.proxy_domain)?;
            }
            if complete && valid && made_for.is_none_or(|cn| *cn == wildcard) {
                let (cert, key) = (proxy.live(TLS_CERT).unwrap_or_default(), proxy.live(TLS_KEY).unwrap_or_default());
                proxy.set(TLS_CERT, Secret(cert.to_string())).set(TLS_KEY, Secret(key.to_string()));
                if let Some(cn) = made_for {
                    proxy.planned.annotations.insert(GENERATED_FOR.into(), cn.clone());
                }
            } else {
                let (cert, key) = super::tls::self_signed(&inputs.proxy_domain)
                    .map_err(|e| SecretError::Certificate { domain: inputs.proxy_domain.clone(), message: e.to_string() })?;
                proxy.set(TLS_CERT, cert).set(TLS_KEY, key);
                proxy.planned.annotations.insert(GENERATED_FOR.into(), wildcard);
            }
        }
    }
    secrets.push(proxy.done());

    let mut owner = Builder::new(&role_secret(&inputs.prefix), live);
    owner.set(USERNAME_KEY, Secret(OWNER_ROLE.into())).set(DATABASE_KEY, Secret(DATABASE.into()));
    let role_password = owner.keep_or(PASSWORD_KEY, |_| true, || password(rng))?;
    secrets.push(owner.done());

    Ok(SecretsPlan { secrets, role_password, user_owned })
}

/// A user's certificate must have exactly the subject neon's proxy routes by.
fn check_users_certificate(cert: &Secret, domain: &str) -> Result<(), SecretError> {
    use super::tls::{SubjectError, check_proxy_subject, required_subject};
    let found = match check_proxy_subject(&cert.0, domain) {
        Ok(()) => return Ok(()),
        Err(SubjectError::Subject { found }) => found,
        Err(e @ SubjectError::NotACertificate(_)) => e.to_string(),
    };
    let hint = match found.strip_prefix("CN=*.").filter(|rest| !rest.contains([',', '+'])) {
        Some(other) => format!("; or, if {other} is the domain you meant, pass --proxy-domain {other}"),
        None => String::new(),
    };
    Err(SecretError::CertificateName { found, needed: required_subject(domain), domain: domain.to_string(), hint })
}

/// The data of a Secret the user creates, or what is wrong with it ("does not exist", "has no
/// key K").
fn users_secret(live: &BTreeMap<String, LiveSecret>, name: &str, keys: &[&str]) -> Result<BTreeMap<String, Secret>, String> {
    let secret = live.get(name).ok_or_else(|| "does not exist".to_string())?;
    match keys.iter().find(|key| secret.get(key).is_none()) {
        Some(key) => Err(format!("has no key {key}")),
        None => Ok(secret.data.clone()),
    }
}

/// 24 random bytes, base64url: 32 characters that need no escaping in a URL.
pub fn password(rng: &dyn SecureRandom) -> Result<Secret, SecretError> {
    let mut bytes = [0u8; 24];
    rng.fill(&mut bytes).map_err(|_| SecretError::Random { what: "a password" })?;
    Ok(Secret(URL_SAFE_NO_PAD.encode(bytes)))
}

#[cfg(test)]
mod tests {
    use ring::rand::SystemRandom;

    use super::*;
    use crate::config::Config;

    fn inputs() -> RenderInputs {
        RenderInputs::from_config(&Config::default())
    }

    /// What the cluster would hold after applying `plan`.
    fn applied(plan: &SecretsPlan) -> BTreeMap<String, LiveSecret> {
        plan.secrets.iter().map(|s| (s.name.clone(), LiveSecret { data: s.data.clone(), annotations: s.annotations.clone() })).collect()
    }

    fn secret<'a>(plan: &'a SecretsPlan, name: &str) -> &'a PlannedSecret {
        plan.secrets.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no Secret {name}"))
    }

    #[test]
    fn a_first_plan_creates_every_secret_the_manifests_read_with_every_key() {
        let inputs = inputs();
        let plan = plan(&inputs, &BTreeMap::new(), None, &SystemRandom::new()).unwrap();
        for wanted in inputs.secrets() {
            let planned = secret(&plan, &wanted.name);
            assert!(!planned.exists && planned.changed());
            let keys: Vec<&String> = planned.data.keys().collect();
            for key in &wanted.keys {
                assert!(keys.contains(&key), "{} lacks {key}", wanted.name);
            }
        }
        let owner = secret(&plan, "neon-main-owner");
        assert_eq!(owner.data[USERNAME_KEY].0, OWNER_ROLE);
        assert_eq!(owner.data[DATABASE_KEY].0, DATABASE);
        assert_eq!(owner.data[PASSWORD_KEY], plan.role_password);
        assert_eq!(plan.role_password.0.len(), 32);
        assert!(plan.user_owned.is_empty());

        // Every token verifies against the public key with its receiver's scope.
        let auth = secret(&plan, "neon-auth");
        let public = neonctl_contract::jwt::PublicKey::from_pem(&auth.data[auth_keys::PUBLIC_KEY].0).unwrap();
        assert_eq!(public.scope_of(&auth.data[auth_keys::STORCON_TO_PAGESERVER].0).unwrap().as_deref(), Some("pageserverapi"));
        assert_eq!(public.scope_of(&auth.data[auth_keys::PAGESERVER_TO_SAFEKEEPER].0).unwrap().as_deref(), Some("safekeeperdata"));
        assert_eq!(public.scope_of(&auth.data[auth_keys::PROXY_TO_CONTROL_PLANE].0).unwrap().as_deref(), Some(scopes::PROXY));
        let toml: toml::Table = secret(&plan, "neon-pageserver-1").data[PAGESERVER_TOML].0.parse().unwrap();
        let token = toml["control_plane_api_token"].as_str().unwrap();
        assert_eq!(public.scope_of(token).unwrap().as_deref(), Some(GENERATIONS_API));
        let db = secret(&plan, "neon-storcon-db");
        assert!(db.data[DATABASE_URL_KEY].0.contains(&db.data[PASSWORD_KEY].0));
        let tls = secret(&plan, "neon-proxy-tls");
        assert_eq!(tls.annotations[GENERATED_FOR], "*.neon.neon.internal");
        assert_eq!(tls.summary(), "keys tls.crt, tls.key");
    }

    #[test]
    fn a_second_plan_keeps_every_value() {
        let inputs = inputs();
        let first = plan(&inputs, &BTreeMap::new(), None, &SystemRandom::new()).unwrap();
        let second = plan(&inputs, &applied(&first), None, &SystemRandom::new()).unwrap();
        for (a, b) in first.secrets.iter().zip(&second.secrets) {
            assert_eq!(a.name, b.name);
            assert!(!b.changed(), "{} changes: {}", b.name, b.summary());
            assert_eq!(a.data, b.data, "{}", a.name);
            assert_eq!(a.annotations, b.annotations);
        }
        assert_eq!(first.fingerprint("neon-main-owner"), second.fingerprint("neon-main-owner"));
    }

    #[test]
    fn a_new_signing_key_re_mints_every_token_and_missing_keys_are_added() {
        let inputs = inputs();
        let first = plan(&inputs, &BTreeMap::new(), None, &SystemRandom::new()).unwrap();
        let mut live = applied(&first);
        live.remove("neon-jwt-signing");
        live.get_mut("neon-main-owner").unwrap().data.remove(DATABASE_KEY);
        let second = plan(&inputs, &live, None, &SystemRandom::new()).unwrap();
        let auth = secret(&second, "neon-auth");
        assert!(auth.changes.values().all(|c| *c == KeyChange::Update), "{}", auth.summary());
        let page = secret(&second, "neon-pageserver-1");
        assert_eq!(page.changes[PAGESERVER_TOML], KeyChange::Update, "the generations_api token is re-minted");
        let owner = secret(&second, "neon-main-owner");
        assert_eq!(owner.summary(), "add key database; keep password, username");
        assert_eq!(second.role_password, first.role_password);
        assert_ne!(first.fingerprint("neon-main-owner"), second.fingerprint("neon-main-owner"));
    }

    #[test]
    fn pageserver_configs_follow_the_inputs_and_keep_their_token() {
        let mut inputs = inputs();
        let first = plan(&inputs, &BTreeMap::new(), None, &SystemRandom::new()).unwrap();
        inputs.bucket = "another-bucket".into();
        let second = plan(&inputs, &applied(&first), None, &SystemRandom::new()).unwrap();
        let page = secret(&second, "neon-pageserver-1");
        assert_eq!(page.summary(), "update pageserver.toml");
        let token = |plan: &SecretsPlan| {
            let toml: toml::Table = secret(plan, "neon-pageserver-1").data[PAGESERVER_TOML].0.parse().unwrap();
            toml["control_plane_api_token"].as_str().unwrap().to_string()
        };
        assert_eq!(token(&first), token(&second));
        assert!(!secret(&second, "neon-auth").changed());
    }

    #[test]
    fn an_external_database_needs_the_users_secret() {
        let mut inputs = inputs();
        inputs.storcon_db = StorconDb::External;
        let err = plan(&inputs, &BTreeMap::new(), None, &SystemRandom::new()).unwrap_err().to_string();
        assert!(err.contains("Secret neon/neon-storcon-db does not exist") && err.contains("Nothing was changed"), "{err}");
        assert!(err.contains("kubectl create secret generic neon-storcon-db -n neon --from-literal=database-url="), "{err}");
        let mut live = BTreeMap::new();
        live.insert("neon-storcon-db".to_string(), LiveSecret::default());
        let err = plan(&inputs, &live, None, &SystemRandom::new()).unwrap_err().to_string();
        assert!(err.contains("has no key database-url"), "{err}");
        live.insert(
            "neon-storcon-db".into(),
            LiveSecret::new([("database-url".into(), b"postgresql://u:p@h/d".to_vec())], BTreeMap::new()),
        );
        let plan = plan(&inputs, &live, None, &SystemRandom::new()).unwrap();
        assert!(plan.user_owned.contains_key("neon-storcon-db"));
        assert!(plan.secrets.iter().all(|s| s.name != "neon-storcon-db"), "the user's Secret is never applied");
    }

    #[test]
    fn an_s3_compatible_endpoint_needs_the_users_credentials() {
        let mut inputs = inputs();
        inputs.s3_endpoint = Some("http://minio.minio.svc:9000".into());
        let err = plan(&inputs, &BTreeMap::new(), None, &SystemRandom::new()).unwrap_err().to_string();
        assert!(err.contains("http://minio.minio.svc:9000") && err.contains("Secret neon/neon-s3-credentials does not exist"), "{err}");
        assert!(err.contains("--from-literal=AWS_ACCESS_KEY_ID=... --from-literal=AWS_SECRET_ACCESS_KEY=..."), "{err}");
        let mut live = BTreeMap::new();
        live.insert("neon-s3-credentials".to_string(), LiveSecret::new([("AWS_ACCESS_KEY_ID".into(), b"minio".to_vec())], BTreeMap::new()));
        let err = plan(&inputs, &live, None, &SystemRandom::new()).unwrap_err().to_string();
        assert!(err.contains("has no key AWS_SECRET_ACCESS_KEY"), "{err}");
        live.get_mut("neon-s3-credentials").unwrap().data.insert("AWS_SECRET_ACCESS_KEY".into(), Secret("minio123".into()));
        let first = plan(&inputs, &live, None, &SystemRandom::new()).unwrap();
        assert!(first.secrets.iter().all(|s| s.name != "neon-s3-credentials"), "the user's Secret is never applied");
        // Rotated credentials restart the pods that read them: the fingerprint follows them.
        let mut rotated = applied(&first);
        rotated.insert("neon-s3-credentials".into(), live["neon-s3-credentials"].clone());
        rotated.get_mut("neon-s3-credentials").unwrap().data.insert("AWS_SECRET_ACCESS_KEY".into(), Secret("rotated".into()));
        let second = plan(&inputs, &rotated, None, &SystemRandom::new()).unwrap();
        assert_ne!(first.fingerprint("neon-main-owner"), second.fingerprint("neon-main-owner"));
        let plan = second;
        let toml: toml::Table = secret(&plan, "neon-pageserver-1").data[PAGESERVER_TOML].0.parse().unwrap();
        assert_eq!(toml["remote_storage"]["endpoint"].as_str(), Some("http://minio.minio.svc:9000"));
    }

    #[test]
    fn the_proxy_certificate_is_the_users_or_one_generated_per_domain() {
        let mut inputs = inputs();
        let (cert, key) = super::super::tls::self_signed(&inputs.proxy_domain).unwrap();
        let user = UserTls { cert, key };
        let with_user = plan(&inputs, &BTreeMap::new(), Some(&user), &SystemRandom::new()).unwrap();
        let tls = secret(&with_user, "neon-proxy-tls");
        assert_eq!(tls.data[TLS_CERT], user.cert);
        assert!(tls.annotations.is_empty());
        // Without files later, the user's certificate stays.
        let kept = plan(&inputs, &applied(&with_user), None, &SystemRandom::new()).unwrap();
        assert!(!secret(&kept, "neon-proxy-tls").changed());

        // A certificate for another domain is refused: the proxy would route nothing.
        let (cert, key) = super::super::tls::self_signed("other.example.com").unwrap();
        let err = plan(&inputs, &BTreeMap::new(), Some(&UserTls { cert, key }), &SystemRandom::new()).unwrap_err().to_string();
        assert!(err.contains("subject is `CN=*.other.example.com`") && err.contains("--proxy-domain other.example.com"), "{err}");
        assert!(err.contains("must be exactly `CN=*.neon.neon.internal`"), "{err}");

        // One with an extra attribute is refused too, showing what was found.
        let mut params = rcgen::CertificateParams::new(vec![format!("*.{}", inputs.proxy_domain)]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, format!("*.{}", inputs.proxy_domain));
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "Acme");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = Secret(params.self_signed(&key).unwrap().pem());
        let user = UserTls { cert: cert.clone(), key: Secret(key.serialize_pem()) };
        let cert = cert.clone();
        let err = plan(&inputs, &BTreeMap::new(), Some(&user), &SystemRandom::new()).unwrap_err().to_string();
        assert!(err.contains("subject is `O=Acme,CN=*.neon.neon.internal`") && err.contains("-subj '/CN=*.neon.neon.internal'"), "{err}");
        assert!(!err.contains("--proxy-domain"), "{err}");
        // Already in the cluster without our annotation (the user's): refused the same way.
        let mut live = BTreeMap::new();
        live.insert(
            "neon-proxy-tls".to_string(),
            LiveSecret::new([(TLS_CERT.into(), cert.0.clone().into_bytes()), (TLS_KEY.into(), b"k".to_vec())], BTreeMap::new()),
        );
        let err = plan(&inputs, &live, None, &SystemRandom::new()).unwrap_err().to_string();
        assert!(err.contains("subject is `O=Acme,CN=*.neon.neon.internal`"), "{err}");
        // Ours from before the subject was exactly the proxy's rule: made again.
        let annotations = BTreeMap::from([(GENERATED_FOR.to_string(), format!("*.{}", inputs.proxy_domain))]);
        live.insert(
            "neon-proxy-tls".into(),
            LiveSecret::new([(TLS_CERT.into(), cert.0.clone().into_bytes()), (TLS_KEY.into(), b"k".to_vec())], annotations),
        );
        let remade = plan(&inputs, &live, None, &SystemRandom::new()).unwrap();
        assert_eq!(secret(&remade, "neon-proxy-tls").summary(), "update tls.crt, tls.key");
        assert_eq!(
            super::super::tls::check_proxy_subject(&secret(&remade, "neon-proxy-tls").data[TLS_CERT].0, &inputs.proxy_domain),
            Ok(())
        );

        let generated = plan(&inputs, &BTreeMap::new(), None, &SystemRandom::new()).unwrap();
        inputs.proxy_domain = "db.example.com".into();
        let moved = plan(&inputs, &applied(&generated), None, &SystemRandom::new()).unwrap();
        let tls = secret(&moved, "neon-proxy-tls");
        assert_eq!(tls.summary(), "update tls.crt, tls.key");
        assert_eq!(tls.annotations[GENERATED_FOR], "*.db.example.com");
    }

    #[test]
    fn secret_objects_carry_base64_data_and_our_labels() {
        let plan = plan(&inputs(), &BTreeMap::new(), None, &SystemRandom::new()).unwrap();
        let object = secret(&plan, "neon-main-owner").object("neon", "neon");
        let value = serde_json::to_value(&object).unwrap();
        assert_eq!(value["data"][USERNAME_KEY], STANDARD.encode(OWNER_ROLE));
        assert_eq!(value["metadata"]["labels"][LABEL_MANAGED_BY], MANAGED_BY);
        assert_eq!(value["metadata"]["namespace"], "neon");
        assert!(!format!("{:?}", secret(&plan, "neon-main-owner")).contains(&plan.role_password.0), "Debug redacts values");
    }
}
