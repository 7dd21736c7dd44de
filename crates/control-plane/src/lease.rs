//! Leader election over a `coordination.k8s.io/v1` Lease, the way client-go's leaderelection
//! does it: the leader renews the Lease every [`Election::renew_every`]; a follower takes it over
//! once it has seen the same holder and renew time for a whole [`Election::duration`] on its
//! own clock (so clocks need not agree); every write carries the resourceVersion it read, so
//! two candidates never both win. Only the leader reconciles; every replica serves the HTTP
//! APIs, so losing a node does not stop computes from getting specs or waking.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Who competes for which Lease, and how fast.
#[derive(Debug, Clone)]
pub struct Election {
    pub lease: String,
    pub namespace: String,
    /// This replica: its pod name.
    pub identity: String,
    /// How long a Lease not renewed stays its holder's (client-go's default is 15 s).
    pub duration: Duration,
    /// How often the leader renews, and a follower looks (client-go: 2 s retry).
    pub renew_every: Duration,
}

impl Election {
    pub fn new(lease: String, namespace: String, identity: String) -> Self {
        Self { lease, namespace, identity, duration: Duration::from_secs(15), renew_every: Duration::from_secs(2) }
    }
}

/// What a follower last saw of the Lease, and when.
struct Observed {
    holder: Option<String>,
    renew: Option<Timestamp>,
    at: Instant,
}

/// Competes for the Lease until `stop`, reporting on `leader` whether this replica leads; a
/// stopping leader hands the Lease back so another takes over at once.
pub async fn run(client: kube::Client, election: Election, leader: watch::Sender<bool>, stop: CancellationToken) {
    let api: Api<Lease> = Api::namespaced(client, &election.namespace);
    let mut observed: Option<Observed> = None;
    // Leadership lasts while renewals succeed within the Lease's duration.
    let mut renewed_at: Option<Instant> = None;
    loop {
        let leads = match round(&api, &election, &mut observed).await {
            Ok(leads) => {
                renewed_at = leads.then(Instant::now);
                leads
            }
            Err(e) => {
                tracing::info!("lease {}: {e}", election.lease);
                renewed_at.is_some_and(|at| at.elapsed() < election.duration)
            }
        };
        if *leader.borrow() != leads {
            tracing::info!(
                "{} {} lease {}",
                election.identity,
                if leads { "now leads through" } else { "no longer holds" },
                election.lease
            );
            leader.send_replace(leads);
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(election.renew_every) => {}
        }
    }
    if *leader.borrow() {
        leader.send_replace(false);
        if let Err(e) = release(&api, &election).await {
            tracing::info!("lease {}: could not hand it back: {e}", election.lease);
        }
    }
}

/// One look at the Lease: create it, renew it, take it over, or follow. Whether this replica
/// holds it afterwards.
async fn round(api: &Api<Lease>, election: &Election, observed: &mut Option<Observed>) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let Some(mut lease) = api.get_opt(&election.lease).await? else {
        let lease = Lease {
            metadata: ObjectMeta { name: Some(election.lease.clone()), ..Default::default() },
            spec: Some(spec(election, now, now, 0)),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            // Another replica created it first.
            Err(kube::Error::Api(response)) if response.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let current = lease.spec.clone().unwrap_or_default();
    let holder = current.holder_identity.clone().filter(|h| !h.is_empty());
    let renew = current.renew_time.as_ref().map(|t| t.0);
    let ours = holder.as_deref() == Some(election.identity.as_str());
    if !ours && holder.is_some() {
        let unchanged = observed.as_ref().is_some_and(|seen| seen.holder == holder && seen.renew == renew);
        if !unchanged {
            *observed = Some(Observed { holder, renew, at: Instant::now() });
            return Ok(false);
        }
        let seen_for = observed.as_ref().map(|seen| seen.at.elapsed()).unwrap_or_default();
        let duration = current.lease_duration_seconds.map_or(election.duration, |s| Duration::from_secs(u64::try_from(s).unwrap_or(0)));
        if seen_for < duration {
            return Ok(false);
        }
    }
    // Ours to renew, free, or expired: write with the resourceVersion read.
    let acquired = if ours { current.acquire_time.map_or(now, |t| t.0) } else { now };
    let transitions = current.lease_transitions.unwrap_or(0) + i32::from(!ours);
    lease.spec = Some(spec(election, acquired, now, transitions));
    match api.replace(&election.lease, &PostParams::default(), &lease).await {
        Ok(_) => {
            *observed = None;
            Ok(true)
        }
        // Someone else wrote first: they won this round.
        Err(kube::Error::Api(response)) if response.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

fn spec(election: &Election, acquired: Timestamp, renewed: Timestamp, transitions: i32) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(election.identity.clone()),
        lease_duration_seconds: Some(i32::try_from(election.duration.as_secs().max(1)).unwrap_or(i32::MAX)),
        acquire_time: Some(MicroTime(acquired)),
        renew_time: Some(MicroTime(renewed)),
        lease_transitions: Some(transitions),
        ..Default::default()
    }
}

/// Gives the Lease up (client-go's ReleaseOnCancel): no holder, so a follower takes it at its
/// next look instead of waiting out the duration.
async fn release(api: &Api<Lease>, election: &Election) -> Result<(), kube::Error> {
    let Some(mut lease) = api.get_opt(&election.lease).await? else { return Ok(()) };
    let spec = lease.spec.get_or_insert_with(Default::default);
    if spec.holder_identity.as_deref() != Some(election.identity.as_str()) {
        return Ok(());
    }
    spec.holder_identity = None;
    api.replace(&election.lease, &PostParams::default(), &lease).await?;
    Ok(())
}
