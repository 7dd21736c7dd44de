//! Branch sizes for `branches list`: the pageserver's logical size of each Ready branch's
//! timeline, kept in `NeonBranch.status.logicalSize`. A size changes only while a compute
//! writes, so a branch is asked about once when this process first sees it, then every
//! [`SIZE_EVERY`] while one of its endpoints is Active, and once after its last activity; a
//! thousand suspended branches cost no call once known.

use std::time::Duration;

use futures::StreamExt;
use kube::ResourceExt;
use neonctl_contract::resources::{NeonBranch, endpoint_phase, phase};
use serde_json::json;
use time::OffsetDateTime;

use super::ControlPlane;
use super::kube_store::KubeStore;
use super::scaling::parse_time;

/// How often the size of a branch with a running compute is read again.
pub const SIZE_EVERY: Duration = Duration::from_secs(60);
/// How long a size that could not be read (or is still being computed) waits for another try.
const RETRY_UNKNOWN: Duration = Duration::from_secs(600);
/// Size reads at once: sizes are not urgent, computes and statuses come first.
const AT_ONCE: usize = 4;

/// Whether a branch's size is read now: never asked by this process; a compute running and the
/// last read [`SIZE_EVERY`] ago; activity since the last read (the writes before a suspend);
/// or still unknown [`RETRY_UNKNOWN`] after the last try.
fn is_due(now: OffsetDateTime, asked: Option<OffsetDateTime>, running: bool, last_active: Option<OffsetDateTime>, known: bool) -> bool {
    let Some(asked) = asked else { return true };
    let since = now - asked;
    (running && since >= SIZE_EVERY) || last_active.is_some_and(|t| t > asked) || (!known && since >= RETRY_UNKNOWN)
}

impl ControlPlane {
    /// Reads the sizes that are due and writes those that changed.
    pub(crate) async fn refresh_sizes(&self, kube: &KubeStore) {
        let now = OffsetDateTime::now_utc();
        let endpoints = kube.cached_endpoints();
        let branches = match kube.branches().await {
            Ok(branches) => branches,
            Err(e) => return self.say("sizes", format!("could not read the branches for their sizes: {e}")),
        };
        let due: Vec<NeonBranch> = branches
            .into_iter()
            .filter(|branch| branch.status.as_ref().and_then(|s| s.phase.as_deref()) == Some(phase::READY))
            .filter(|branch| {
                let name = branch.name_any();
                let asked = self.memory.lock().expect("operator memory lock").sized.get(&name).copied();
                let of_branch = || endpoints.iter().filter(|e| e.spec.branch == name).filter_map(|e| e.status.as_ref());
                let running = of_branch().any(|s| s.phase.as_deref() == Some(endpoint_phase::ACTIVE));
                let last_active = of_branch().filter_map(|s| parse_time(s.last_active.as_deref())).max();
                let known = branch.status.as_ref().and_then(|s| s.logical_size).is_some();
                is_due(now, asked, running, last_active, known)
            })
            .collect();
        futures::stream::iter(due).for_each_concurrent(AT_ONCE, |branch| self.refresh_size(kube, branch, now)).await;
    }

    async fn refresh_size(&self, kube: &KubeStore, branch: NeonBranch, now: OffsetDateTime) {
        let name = branch.name_any();
        let timeline = branch.status.as_ref().and_then(|s| s.timeline_id.clone()).unwrap_or_else(|| branch.spec.timeline_id.clone());
        self.memory.lock().expect("operator memory lock").sized.insert(name.clone(), now);
        let subject = format!("size of {name}");
        match self.storage_controller().timeline_size(&branch.spec.tenant_id, &timeline).await {
            // An estimate is not recorded: asked again later.
            Ok(size) if !size.current_logical_size_is_accurate => {}
            Ok(size) if branch.status.as_ref().and_then(|s| s.logical_size) == Some(size.current_logical_size) => {}
            Ok(size) => {
                if let Err(e) = kube.patch_branch_status(&name, json!({"logicalSize": size.current_logical_size})).await {
                    self.say(&subject, format!("could not record the size of branch {name}: {e}"));
                }
            }
            Err(e) => self.say(&subject, format!("could not read the size of branch {name} from storage: {e}; retrying later")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_read_while_computes_write_and_not_while_suspended() {
        let now = OffsetDateTime::now_utc();
        let ago = |secs: i64| Some(now - time::Duration::seconds(secs));
        assert!(is_due(now, None, false, None, false), "first sight");
        assert!(is_due(now, ago(30), false, ago(10), true), "activity after the last read: once more");
        assert!(!is_due(now, ago(30), true, ago(40), true), "running, read 30 s ago");
        assert!(is_due(now, ago(61), true, ago(70), true), "running, read a minute ago");
        assert!(!is_due(now, ago(3600), false, ago(4000), true), "suspended and known: never again");
        assert!(!is_due(now, ago(300), false, None, false), "unknown: not before ten minutes");
        assert!(is_due(now, ago(601), false, None, false), "unknown: after ten minutes");
    }
}
