//! Kubernetes manifests for every Neon component, rendered from [`RenderInputs`].
//!
//! Pipeline: [`RenderInputs`] → a typed [`context::Context`] (names, addresses, command lines
//! from [`crate::neon`], labels, network paths) → embedded minijinja templates
//! (`templates/*.yaml.j2`, strict undefined, JSON auto-escaping so every value lands as a
//! quoted scalar) → parsed back as YAML → checked (labels, namespace) → re-emitted with sorted
//! keys. The output is byte-for-byte stable for the same inputs.
//!
//! Availability zones: a pod cannot read its node's `topology.kubernetes.io/zone` label
//! through the downward API, and our images have no shell to ask the API server at start-up.
//! So every pageserver and safekeeper is its own one-replica StatefulSet pinned to a zone by
//! node affinity (zones assigned round-robin), which makes its id, pod DNS name and zone known
//! here: `identity.toml`, `metadata.json` and the safekeeper's `--availability-zone` are
//! rendered, not discovered. EBS volumes are zonal, so the pin also keeps pod and volume
//! together.
//!
//! Secrets are referenced, never rendered: [`RenderInputs::secrets`] lists the Secrets the
//! manifests expect (created by `deploy`, or by the user for an external database).

mod context;
pub mod inputs;

use std::collections::BTreeSet;

use minijinja::{Environment, UndefinedBehavior};
use serde_json::Value;

pub use context::{LABEL_MANAGED_BY, LABEL_PREFIX, MANAGED_BY, S3_CREDENTIAL_KEYS, auth_keys};
pub use inputs::{ImageRef, Overrides, RenderInputs, StorageClass, StorconDb, proxy_domain};

use crate::neon::NeonConfigError;

/// The Kubernetes service account (namespace, name) a Neon component's pods run as in the
/// default namespace: what the IRSA roles `infra` creates must trust, so both sides use this.
pub fn service_account(prefix: &str, component: &str) -> (String, String) {
    (prefix.to_string(), format!("{prefix}-{component}"))
}

/// The first line of every rendered file; `render` only replaces files that start with it.
pub const HEADER: &str = "# Rendered by neonctl-aws; edit the config or the render flags, not this file.\n";

/// Output file name and template, in apply order.
const TEMPLATES: [(&str, &str); 12] = [
    ("00-namespace.yaml", include_str!("../../templates/namespace.yaml.j2")),
    ("01-storage-class.yaml", include_str!("../../templates/storage-class.yaml.j2")),
    ("02-policies.yaml", include_str!("../../templates/policies.yaml.j2")),
    ("03-crds.yaml", include_str!("../../templates/crds.yaml.j2")),
    ("10-storage-broker.yaml", include_str!("../../templates/storage-broker.yaml.j2")),
    ("20-storage-controller-db.yaml", include_str!("../../templates/storage-controller-db.yaml.j2")),
    ("21-storage-controller.yaml", include_str!("../../templates/storage-controller.yaml.j2")),
    ("30-pageserver.yaml", include_str!("../../templates/pageserver.yaml.j2")),
    ("40-safekeeper.yaml", include_str!("../../templates/safekeeper.yaml.j2")),
    ("50-control-plane.yaml", include_str!("../../templates/control-plane.yaml.j2")),
    ("60-compute.yaml", include_str!("../../templates/compute.yaml.j2")),
    ("70-proxy.yaml", include_str!("../../templates/proxy.yaml.j2")),
];

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("`{reference}` is not an image reference: use repository:tag or repository@sha256:<64 hex digits>")]
    BadImage { reference: String },
    #[error("`{name}` is not an image this deployment uses; the images are: {}", known.join(", "))]
    UnknownImage { name: String, known: Vec<String> },
    #[error("{flag} `{value}` is not a valid name: use lowercase letters, digits and hyphens (at most 63)")]
    BadName { flag: String, value: String },
    #[error("{flag} `{value}` is not an IAM role ARN like arn:aws:iam::123456789012:role/neon-pageserver")]
    BadRoleArn { flag: String, value: String },
    #[error("`--image {value}`: expected IMAGE=REFERENCE, e.g. pageserver=registry/neon/pageserver@sha256:…")]
    BadImageOverride { value: String },
    #[error("`{value}` is not an S3 endpoint URL: use http(s)://host[:port], e.g. http://minio.minio.svc:9000")]
    BadEndpoint { value: String },
    #[error("no availability zones to place pageservers and safekeepers in: pass --zones")]
    NoZones,
    #[error(transparent)]
    Neon(#[from] NeonConfigError),
    #[error("template {template} failed: {message}; this is a bug in neonctl-aws, please report it")]
    Template { template: String, message: String },
    #[error("{file} is not valid: {message}; this is a bug in neonctl-aws, please report it")]
    Invalid { file: String, message: String },
}

/// One output file: one component's objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub file: String,
    /// `Kind/name` of each object, in file order.
    pub objects: Vec<String>,
    pub yaml: String,
}

/// A Secret the manifests read and `render` does not write.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SecretRef {
    pub name: String,
    pub keys: Vec<String>,
    pub purpose: String,
}

/// Renders every manifest. Files without objects (the StorageClass when an existing one is
/// used, the database with an external one) are left out.
pub fn render(inputs: &RenderInputs) -> Result<Vec<Manifest>, RenderError> {
    let context = context::Context::build(inputs)?;
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.add_template("macros.yaml.j2", include_str!("../../templates/macros.yaml.j2"))
        .map_err(|e| RenderError::Template { template: "macros.yaml.j2".into(), message: format!("{e:#}") })?;
    let mut manifests = Vec::new();
    for (file, source) in TEMPLATES {
        let name = template_name(file);
        let template_error = |e: minijinja::Error| RenderError::Template { template: name.clone(), message: format!("{e:#}") };
        env.add_template_owned(name.clone(), source).map_err(template_error)?;
        let text = env.get_template(&name).map_err(template_error)?.render(minijinja::value::Serde(&context)).map_err(template_error)?;
        let objects = parse_objects(file, &text)?;
        if objects.is_empty() {
            continue;
        }
        check_objects(file, &objects, inputs)?;
        let mut yaml = String::from(HEADER);
        let mut ids = Vec::new();
        for object in &objects {
            ids.push(format!(
                "{}/{}",
                object["kind"].as_str().unwrap_or_default(),
                object["metadata"]["name"].as_str().unwrap_or_default()
            ));
            let doc = emit(file, object)?;
            yaml.push_str("---\n");
            yaml.push_str(&doc);
            if !doc.ends_with('\n') {
                yaml.push('\n');
            }
        }
        manifests.push(Manifest { file: file.to_string(), objects: ids, yaml });
    }
    Ok(manifests)
}

/// One object as block YAML with sorted keys: multi-line strings (config files) as literal
/// blocks, one-line strings never folded. The text must parse back to the same object.
fn emit(file: &str, object: &Value) -> Result<String, RenderError> {
    let invalid = |message: String| RenderError::Invalid { file: file.into(), message };
    let mut options = serde_saphyr::SerializerOptions::default();
    options.folded_wrap_chars = usize::MAX;
    let doc = serde_saphyr::to_string_with_options(object, options).map_err(|e| invalid(e.to_string()))?;
    let back: Value = serde_saphyr::from_str(&doc).map_err(|e| invalid(e.to_string()))?;
    if &back != object {
        return Err(invalid(format!("the emitted YAML does not read back as written:\n{doc}")));
    }
    Ok(doc)
}

/// `00-namespace.yaml` → `namespace.yaml.j2` (the name picks JSON auto-escaping).
fn template_name(file: &str) -> String {
    let stem = file.split_once('-').map_or(file, |(_, rest)| rest);
    format!("{stem}.j2")
}

fn parse_objects(file: &str, text: &str) -> Result<Vec<Value>, RenderError> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(text).map_err(|e| RenderError::Invalid { file: file.into(), message: format!("{e}\n{text}") })?;
    Ok(docs.into_iter().filter(|doc| !doc.is_null()).collect())
}

/// Every object carries the pruning labels, a name, and (unless cluster-scoped) our namespace;
/// no two objects share a kind and name.
fn check_objects(file: &str, objects: &[Value], inputs: &RenderInputs) -> Result<(), RenderError> {
    let invalid = |message: String| RenderError::Invalid { file: file.into(), message };
    let mut seen = BTreeSet::new();
    for object in objects {
        let kind = object["kind"].as_str().ok_or_else(|| invalid("an object has no kind".into()))?;
        let name = object["metadata"]["name"].as_str().ok_or_else(|| invalid(format!("a {kind} has no name")))?;
        let labels = &object["metadata"]["labels"];
        if labels[LABEL_MANAGED_BY] != MANAGED_BY || labels[LABEL_PREFIX] != inputs.prefix.as_str() {
            return Err(invalid(format!("{kind}/{name} lacks the {LABEL_MANAGED_BY} and {LABEL_PREFIX} labels")));
        }
        let cluster_scoped = matches!(kind, "Namespace" | "StorageClass" | "CustomResourceDefinition");
        if !cluster_scoped && object["metadata"]["namespace"] != inputs.namespace.as_str() {
            return Err(invalid(format!("{kind}/{name} is not in namespace {}", inputs.namespace)));
        }
        if !seen.insert((kind.to_string(), name.to_string())) {
            return Err(invalid(format!("{kind}/{name} appears twice")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
