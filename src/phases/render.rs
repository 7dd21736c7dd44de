//! `render`: write the manifests `deploy` applies into a directory, one file per component.

use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;

use crate::cli::{RenderArgs, RenderOverrideArgs};
use crate::config::Config;
use crate::output::{Event, Level, Printer, Reporter, Table};
use crate::render::{self, HEADER, Manifest, Overrides, RenderError, RenderInputs, SecretRef};

#[derive(Serialize)]
struct Rendered<'a> {
    out: String,
    files: Vec<RenderedFile<'a>>,
    secrets: Vec<SecretRef>,
    assumptions: Vec<String>,
}

#[derive(Serialize)]
struct RenderedFile<'a> {
    file: &'a str,
    objects: &'a [String],
}

/// Renders from the config, then what earlier phases recorded in the state in `state_dir`,
/// then the command line's flags (each layer wins over the one before).
pub fn run(args: &RenderArgs, config: &Config, state_dir: &Path, printer: &Printer) -> anyhow::Result<()> {
    let state = crate::state::read(state_dir)?;
    let inputs = inputs(config, &state, &args.overrides)?;
    let manifests = render::render(&inputs)?;
    write(&args.out, &manifests)?;
    let assumptions = inputs.assumptions();
    for text in &assumptions {
        printer.report(Event::Message { phase: None, level: Level::Warn, text: text.clone() });
    }
    let mut table = Table::new(&["file", "objects"]);
    for manifest in &manifests {
        table.row(vec![manifest.file.clone(), manifest.objects.join(", ")]);
    }
    let secrets = inputs.secrets();
    let rendered = Rendered {
        out: args.out.display().to_string(),
        files: manifests.iter().map(|m| RenderedFile { file: &m.file, objects: &m.objects }).collect(),
        secrets: secrets.clone(),
        assumptions,
    };
    printer.table("render", &table, &rendered);
    let mut secret_table = Table::new(&["secret (not rendered)", "keys", "purpose"]);
    for secret in &secrets {
        secret_table.row(vec![secret.name.clone(), secret.keys.join(", "), secret.purpose.clone()]);
    }
    if printer.style() != crate::output::Style::Json {
        printer.table("secrets", &secret_table, &secrets);
    }
    printer.result_line(&format!("wrote {} files to {}", manifests.len(), args.out.display()));
    Ok(())
}

/// What `render` and `deploy` render: the config, then what earlier phases recorded in `state`,
/// then the command line's flags (each layer wins over the one before).
pub fn inputs(config: &Config, state: &crate::state::State, args: &RenderOverrideArgs) -> Result<RenderInputs, RenderError> {
    RenderInputs::from_config(config).with_overrides(Overrides::from_state(state))?.with_overrides(overrides(args)?)
}

fn overrides(args: &RenderOverrideArgs) -> Result<Overrides, RenderError> {
    let images = args
        .images
        .iter()
        .map(|value| {
            value
                .split_once('=')
                .map(|(name, reference)| (name.to_string(), reference.to_string()))
                .ok_or_else(|| RenderError::BadImageOverride { value: value.clone() })
        })
        .collect::<Result<_, _>>()?;
    Ok(Overrides {
        namespace: args.namespace.clone(),
        bucket: args.bucket.clone(),
        s3_endpoint: args.s3_endpoint.clone(),
        pageserver_role_arn: args.pageserver_role_arn.clone(),
        safekeeper_role_arn: args.safekeeper_role_arn.clone(),
        images,
        zones: args.zones.clone(),
        external_storcon_db: args.external_storcon_db,
        proxy_domain: args.proxy_domain.clone(),
        storage_class: args.storage_class.clone(),
    })
}

/// Writes every manifest and removes the files an earlier render wrote that this one did not
/// (they start with [`HEADER`]). Any other file is left alone, and never overwritten.
fn write(dir: &Path, manifests: &[Manifest]) -> anyhow::Result<()> {
    let shown = dir.display();
    std::fs::create_dir_all(dir).with_context(|| format!("creating {shown}; choose another --out"))?;
    let mut stale = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {shown}"))? {
        let path = entry.with_context(|| format!("listing {shown}"))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let ours = std::fs::read_to_string(&path).is_ok_and(|text| text.starts_with(HEADER));
        let wanted = manifests.iter().any(|m| m.file == name);
        if wanted && !ours {
            return Err(crate::exit::Coded {
                code: crate::exit::USAGE,
                message: format!("{} exists and was not written by render; move it, or choose another --out", path.display()),
            }
            .into());
        }
        if ours && !wanted {
            stale.push(path);
        }
    }
    for path in stale {
        std::fs::remove_file(&path).with_context(|| format!("removing the stale {}", path.display()))?;
    }
    for manifest in manifests {
        let path = dir.join(&manifest.file);
        std::fs::write(&path, &manifest.yaml).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
