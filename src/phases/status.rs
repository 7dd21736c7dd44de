//! `status`: what the state file records for each phase.

use std::path::Path;

use serde::Serialize;

use crate::config::Config;
use crate::engine::PhaseName;
use crate::output::{Printer, Table};
use crate::state::{self, ClusterAccess, DeployRecord, PhaseRecord};

#[derive(Serialize)]
struct Status<'a> {
    prefix: &'a str,
    region: &'a str,
    state_dir: String,
    phases: Vec<PhaseStatusRow<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deploy: Option<&'a DeployRecord>,
}

#[derive(Serialize)]
struct PhaseStatusRow<'a> {
    phase: PhaseName,
    #[serde(flatten)]
    record: Option<&'a PhaseRecord>,
}

pub fn run(config: &Config, state_dir: &Path, printer: &Printer) -> anyhow::Result<()> {
    let state = state::read(state_dir)?;
    let (prefix, region) = match &state.target {
        Some(t) => (t.prefix.as_str(), t.region.as_str()),
        None => (config.prefix.as_str(), config.region.as_str()),
    };
    let phases: Vec<PhaseStatusRow> =
        PhaseName::UP.iter().chain([&PhaseName::Teardown]).map(|p| PhaseStatusRow { phase: *p, record: state.phases.get(p) }).collect();
    let mut table = Table::new(&["phase", "last run", "started", "finished", "error"]);
    for row in &phases {
        let cell = |f: fn(&PhaseRecord) -> Option<String>| row.record.and_then(f).unwrap_or_else(|| "-".into());
        table.row(vec![
            row.phase.to_string(),
            cell(|r| Some(format!("{:?}", r.status).to_lowercase())),
            cell(|r| Some(r.started_at.clone())),
            cell(|r| r.finished_at.clone()),
            cell(|r| r.error.as_ref().map(|e| e.lines().next().unwrap_or_default().to_string())),
        ]);
    }
    printer.result_line(&format!("{prefix} in {region} (state: {})", state_dir.display()));
    let status = Status { prefix, region, state_dir: state_dir.display().to_string(), phases, deploy: state.deploy.as_ref() };
    printer.table("status", &table, &status);
    if let Some(deploy) = status.deploy.filter(|_| printer.style() != crate::output::Style::Json) {
        printer.result_line(&deployed(deploy));
    }
    Ok(())
}

/// One paragraph on what `deploy` made: where, which ids, where the proxy answered.
fn deployed(d: &DeployRecord) -> String {
    let cluster = match &d.cluster {
        ClusterAccess::Eks { cluster } => format!("EKS cluster {cluster}"),
        ClusterAccess::Kubeconfig { context, .. } => format!("kubeconfig context {}", context.as_deref().unwrap_or("(current)")),
    };
    let checked = match (&d.proxy_address, &d.checked_at) {
        (Some(address), Some(at)) => format!("select version() answered through the proxy at {address} at {at}"),
        _ => "not checked through the proxy yet".into(),
    };
    format!(
        "deployed to {cluster}, namespace {}: branch {} (tenant {}, timeline {}), endpoint {} at {}.{}; role {} (password in Secret {}), database {}; {checked}",
        d.namespace, d.branch, d.tenant_id, d.timeline_id, d.endpoint, d.endpoint, d.proxy_domain, d.role, d.role_secret, d.database
    )
}
