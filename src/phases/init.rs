//! `init`: write the commented starter config.

use std::path::Path;

use anyhow::Context as _;

use crate::cli::InitArgs;
use crate::config::{Config, DEFAULT_YAML};
use crate::output::Printer;

pub fn run(args: &InitArgs, prefix: Option<&str>, region: Option<&str>, printer: &Printer) -> anyhow::Result<()> {
    let text = starter(prefix, region);
    let file = args.file.display().to_string();
    // Refuse before writing anything: the file must load as it is written.
    Config::parse(&text, &file)?.validate().map_err(|(key, message)| crate::config::ConfigError::Invalid {
        file: file.clone(),
        key,
        message,
    })?;
    if args.file.exists() && !args.force {
        return Err(crate::exit::Coded {
            code: crate::exit::USAGE,
            message: format!("{file} already exists; pass --force to overwrite it, or --file to write another"),
        }
        .into());
    }
    write_new(&args.file, &text).with_context(|| format!("writing {file}"))?;
    printer.result_line(&format!("wrote {file}; next: neonctl-aws prereqs, then neonctl-aws up --plan"));
    Ok(())
}

/// The default file with the prefix and region lines replaced, and nodes of this host's CPU.
fn starter(prefix: Option<&str>, region: Option<&str>) -> String {
    DEFAULT_YAML
        .lines()
        .map(|line| match (line, prefix, region) {
            (l, Some(p), _) if l.starts_with("prefix: ") => format!("prefix: {p}"),
            (l, _, Some(r)) if l.starts_with("region: ") => format!("region: {r}"),
            (l, _, _) if l.starts_with("  node_instance_type: ") => {
                format!("  node_instance_type: {}", crate::platform::host_instance_type())
            }
            (l, _, _) => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn write_new(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_land_in_the_starter_file() {
        let config = Config::parse(&starter(Some("acme"), Some("eu-west-1")), "x").unwrap();
        assert_eq!((config.prefix.as_str(), config.region.as_str()), ("acme", "eu-west-1"));
        assert_eq!(config.cluster, Config::default().cluster);
    }
}
