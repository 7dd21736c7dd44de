//! The storage controller's API, as far as the reconciler uses it: safekeeper registration,
//! tenant and timeline creation, and the node list. Shapes and permission checks are neon
//! release-9129's (`storage_controller/src/http.rs`, `persistence.rs` `SafekeeperUpsert`,
//! `libs/pageserver_api/src/{controller_api,models}.rs`).
//!
//! Every route accepts a token of its own scope or `admin` (`check_permissions`); each call
//! gets a short-lived token of exactly its route's scope, so no token we mint is worth more
//! than the call it was minted for. No signing key: no token (a storage controller without
//! `--public-key`).

use std::time::Duration;

use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::http::{Body, HttpClient, read_body};
use super::jwt::SigningKey;
use crate::neon::control_plane::Node;

/// The scope each route checks (`check_permissions(&req, Scope::…)` in `http.rs`).
pub mod scope {
    /// `POST /control/v1/safekeeper/{id}` (`handle_upsert_safekeeper`), `GET /control/v1/node`
    /// (`handle_node_list`).
    pub const INFRA: &str = "infra";
    /// `POST /control/v1/safekeeper/{id}/scheduling_policy`: admin only.
    pub const ADMIN: &str = "admin";
    /// `GET /control/v1/tenant/{id}` (`handle_tenant_describe`, a scrubber route).
    pub const SCRUBBER: &str = "scrubber";
    /// `POST /v1/tenant`, `POST /v1/tenant/{id}/timeline`, `DELETE` of both, and the tenant GETs
    /// passed through to the pageserver (`get_lsn_by_timestamp`, a timeline's detail).
    pub const PAGESERVER_API: &str = "pageserverapi";
}

/// How long a minted token is valid: one call (neon validates `exp` when present).
const TOKEN_LIFETIME: Duration = Duration::from_secs(300);
/// For one call. Tenant creation waits for the first attach (the controller's
/// `RECONCILE_TIMEOUT`, 30 s), which includes its `notify-attach` to us.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// `SafekeeperUpsert.version`: the neon release whose shapes this speaks (1 would mean "just
/// created, not yet posted").
const SAFEKEEPER_VERSION: i64 = 9129;

#[derive(Debug, thiserror::Error)]
pub enum StorconError {
    #[error("{method} {url} failed: {reason}; is the storage controller running and reachable from the control plane?")]
    Unreachable { method: Method, url: String, reason: String },
    #[error("{method} {url} answered {status}: {message}")]
    Status { method: Method, url: String, status: StatusCode, message: String },
    /// A pageserver's error, which neon's controller passes on as 409 whatever it was.
    #[error("{method} {url}: pageserver {} answered {}: {} (passed on by the storage controller as 409)", .pageserver.node, .pageserver.status, .pageserver.message)]
    Pageserver { method: Method, url: String, pageserver: PageserverError },
    #[error("{method} {url} answered with a body that is not valid: {reason}")]
    Body { method: Method, url: String, reason: String },
    #[error("safekeeper {id}'s address {address} in the topology is not host:port; render and apply the manifests again")]
    Address { id: u64, address: String },
}

impl StorconError {
    /// The status of the pageserver behind a passed-on error, else the controller's own.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Status { status, .. } => Some(*status),
            Self::Pageserver { pageserver, .. } => Some(pageserver.status),
            _ => None,
        }
    }

    /// Worth retrying as is: the controller or the pageserver is starting, busy (a creation
    /// already in progress answers 429), or not reachable yet.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Status { .. } | Self::Pageserver { .. } => {
                matches!(self.status(), Some(StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE))
            }
            Self::Body { .. } | Self::Address { .. } => false,
        }
    }

    /// The pageserver refused because the timeline exists with other parameters (its 409).
    pub fn is_conflicting_timeline(&self) -> bool {
        matches!(self, Self::Pageserver { pageserver, .. } if pageserver.status == StatusCode::CONFLICT)
    }
}

/// A pageserver error as the storage controller passes it on: always 409 Conflict, with the
/// message `Conflict: {node id} ({node host}) {status}: {status} {pageserver's message}`
/// (`passthrough_api_error` in neon's `storage_controller/src/service.rs`; the `Conflict: `
/// comes from `ApiError::Conflict`'s display in `libs/http-utils/src/error.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageserverError {
    /// `{id} ({host})`.
    pub node: String,
    pub status: StatusCode,
    pub message: String,
}

impl PageserverError {
    pub fn parse(message: &str) -> Option<Self> {
        let rest = message.strip_prefix("Conflict: ")?;
        let close = rest.find(") ")?;
        let (node, rest) = (&rest[..=close], &rest[close + 2..]);
        let status = StatusCode::from_u16(rest.get(..3)?.parse().ok()?).ok()?;
        let rest = rest.strip_prefix(&format!("{status}: {status}"))?;
        Some(Self { node: node.to_string(), status, message: rest.trim().to_string() })
    }
}

/// The safekeepers the controller chose for a timeline, with their membership generation
/// (`SafekeepersInfo` in `libs/pageserver_api/src/models.rs`); only with
/// `--timelines-onto-safekeepers`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SafekeepersInfo {
    pub generation: u32,
    pub safekeepers: Vec<SafekeeperId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SafekeeperId {
    pub id: u64,
}

/// `TimelineCreateResponseStorcon`: the pageserver's `TimelineInfo` and the safekeepers.
#[derive(Debug, Deserialize)]
struct TimelineCreated {
    #[serde(default)]
    safekeepers: Option<SafekeepersInfo>,
}

/// `get_lsn_by_timestamp`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LsnForTimestamp {
    pub lsn: String,
    pub kind: String,
}

/// What the operator reads of the pageserver's `TimelineInfo` (`libs/pageserver_api/src/models.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TimelineSize {
    pub current_logical_size: u64,
    /// False while the pageserver still computes the size after loading the timeline.
    pub current_logical_size_is_accurate: bool,
}

/// A pageserver as `GET /control/v1/node` describes it (`NodeDescribeResponse`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NodeDescription {
    pub id: u64,
    /// `Active`, `WarmingUp` or `Offline`.
    pub availability: String,
    /// `Active`, `Filling`, `Pause`, `PauseForRestart`, `Draining` or `Deleting`.
    pub scheduling: String,
    pub availability_zone_id: String,
}

/// The storage controller at `url`, called with `client`, with tokens signed by `key`.
pub struct StorageController<'a> {
    pub url: &'a str,
    pub key: Option<&'a SigningKey>,
    pub client: &'a HttpClient,
}

impl StorageController<'_> {
    /// `(status, body)` of one call; an error for statuses other than 2xx and `accept`.
    async fn call(
        &self,
        method: Method,
        path: &str,
        scope: &'static str,
        body: Option<&Value>,
        accept: &[StatusCode],
    ) -> Result<(StatusCode, Vec<u8>), StorconError> {
        let url = format!("{}{path}", self.url.trim_end_matches('/'));
        let unreachable = |reason: String| StorconError::Unreachable { method: method.clone(), url: url.clone(), reason };
        let mut request = Request::builder().method(method.clone()).uri(&url).header(CONTENT_TYPE, "application/json");
        if let Some(key) = self.key {
            request = request.header(AUTHORIZATION, format!("Bearer {}", key.storage_controller_token(scope, TOKEN_LIFETIME).0));
        }
        let payload = body.map(|value| value.to_string()).unwrap_or_default();
        let request = request.body(Body::from(payload)).map_err(|e| unreachable(format!("not a valid URL: {e}")))?;
        let response = tokio::time::timeout(CALL_TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| unreachable(format!("no answer in {}s", CALL_TIMEOUT.as_secs())))?
            .map_err(|e| unreachable(error_chain(&e)))?;
        let status = response.status();
        let bytes = read_body(response.into_body()).await.map_err(unreachable)?.to_vec();
        if status.is_success() || accept.contains(&status) {
            return Ok((status, bytes));
        }
        let message = error_message(&bytes);
        match PageserverError::parse(&message).filter(|_| status == StatusCode::CONFLICT) {
            Some(pageserver) => Err(StorconError::Pageserver { method, url, pageserver }),
            None => Err(StorconError::Status { method, url, status, message }),
        }
    }

    /// Registers (or updates) a safekeeper and makes it schedulable: timelines are placed only
    /// on `Active` safekeepers.
    pub async fn register_safekeeper(&self, node: &Node, region: &str) -> Result<(), StorconError> {
        let upsert = safekeeper_upsert(node, region)?;
        let path = format!("/control/v1/safekeeper/{}", node.id);
        self.call(Method::POST, &path, scope::INFRA, Some(&upsert), &[]).await?;
        let policy = json!({"scheduling_policy": "Active"});
        self.call(Method::POST, &format!("{path}/scheduling_policy"), scope::ADMIN, Some(&policy), &[]).await?;
        Ok(())
    }

    pub async fn tenant_exists(&self, tenant_id: &str) -> Result<bool, StorconError> {
        let path = format!("/control/v1/tenant/{tenant_id}");
        let (status, _) = self.call(Method::GET, &path, scope::SCRUBBER, None, &[StatusCode::NOT_FOUND]).await?;
        Ok(status != StatusCode::NOT_FOUND)
    }

    /// One unsharded shard, no secondary (the controller's defaults).
    pub async fn create_tenant(&self, tenant_id: &str) -> Result<(), StorconError> {
        self.call(Method::POST, "/v1/tenant", scope::PAGESERVER_API, Some(&json!({"new_tenant_id": tenant_id})), &[]).await?;
        Ok(())
    }

    /// Bootstraps a timeline (initdb), or branches it from `ancestor` (at an LSN). Idempotent when the
    /// parameters match (the answer then repeats the safekeepers chosen the first time); the
    /// pageserver's 409 when the timeline exists with others.
    pub async fn create_timeline(
        &self,
        tenant_id: &str,
        timeline_id: &str,
        pg_version: u32,
        ancestor: Option<(&str, Option<&str>)>,
    ) -> Result<Option<SafekeepersInfo>, StorconError> {
        let path = format!("/v1/tenant/{tenant_id}/timeline");
        let body = timeline_create(timeline_id, pg_version, ancestor);
        let (_, bytes) = self.call(Method::POST, &path, scope::PAGESERVER_API, Some(&body), &[]).await?;
        let url = format!("{}{path}", self.url.trim_end_matches('/'));
        let created: TimelineCreated =
            serde_json::from_slice(&bytes).map_err(|e| StorconError::Body { method: Method::POST, url, reason: e.to_string() })?;
        Ok(created.safekeepers)
    }

    /// Deletes a timeline: `Ok(true)` once it is gone (also when its tenant is), `Ok(false)`
    /// while the deletion goes on. The controller waits up to 25 s for the pageservers itself and
    /// answers 200 when done, 409 when still going (`deletion_wrapper` in `http.rs`), 404 for a
    /// tenant it does not know (`tenant_timeline_delete` in `service.rs`).
    pub async fn delete_timeline(&self, tenant_id: &str, timeline_id: &str) -> Result<bool, StorconError> {
        let path = format!("/v1/tenant/{tenant_id}/timeline/{timeline_id}");
        let accept = [StatusCode::CONFLICT, StatusCode::NOT_FOUND];
        let (status, _) = self.call(Method::DELETE, &path, scope::PAGESERVER_API, None, &accept).await?;
        Ok(status != StatusCode::CONFLICT)
    }

    /// Deletes a tenant with whatever timelines it has left: `Ok(true)` once gone (the
    /// controller answers 200 for the pageserver's 404, `handle_tenant_delete`), `Ok(false)`
    /// while it goes on (202).
    pub async fn delete_tenant(&self, tenant_id: &str) -> Result<bool, StorconError> {
        let path = format!("/v1/tenant/{tenant_id}");
        let accept = [StatusCode::ACCEPTED, StatusCode::CONFLICT, StatusCode::NOT_FOUND];
        let (status, _) = self.call(Method::DELETE, &path, scope::PAGESERVER_API, None, &accept).await?;
        Ok(matches!(status, StatusCode::OK | StatusCode::NOT_FOUND))
    }

    /// The LSN of `timeline`'s last commit at `timestamp` (RFC 3339), and how the pageserver
    /// found it: `present`, `future` (no commit since), `past` (before the history it keeps,
    /// its `pitr_interval`) or `nodata` (no commit with a time at all): the pageserver's
    /// `get_lsn_by_timestamp` (`pageserver/src/http/routes.rs`), through the controller's
    /// pass-through of tenant GETs (`/v1/tenant/:tenant_id/*`).
    pub async fn lsn_by_timestamp(&self, tenant_id: &str, timeline_id: &str, timestamp: &str) -> Result<LsnForTimestamp, StorconError> {
        let query: String = form_urlencoded::Serializer::new(String::new()).append_pair("timestamp", timestamp).finish();
        let path = format!("/v1/tenant/{tenant_id}/timeline/{timeline_id}/get_lsn_by_timestamp?{query}");
        let (_, bytes) = self.call(Method::GET, &path, scope::PAGESERVER_API, None, &[]).await?;
        let url = format!("{}{path}", self.url.trim_end_matches('/'));
        serde_json::from_slice(&bytes).map_err(|e| StorconError::Body { method: Method::GET, url, reason: e.to_string() })
    }

    /// The timeline's logical size: the pageserver's `timeline_detail_handler`
    /// (`pageserver/src/http/routes.rs`) through the controller's pass-through of tenant GETs.
    pub async fn timeline_size(&self, tenant_id: &str, timeline_id: &str) -> Result<TimelineSize, StorconError> {
        // Waits for the size to be computed rather than answering an estimate.
        let path = format!("/v1/tenant/{tenant_id}/timeline/{timeline_id}?force-await-initial-logical-size=true");
        let (_, bytes) = self.call(Method::GET, &path, scope::PAGESERVER_API, None, &[]).await?;
        let url = format!("{}{path}", self.url.trim_end_matches('/'));
        serde_json::from_slice(&bytes).map_err(|e| StorconError::Body { method: Method::GET, url, reason: e.to_string() })
    }

    /// The pageservers the controller knows.
    pub async fn nodes(&self) -> Result<Vec<NodeDescription>, StorconError> {
        let url = format!("{}/control/v1/node", self.url.trim_end_matches('/'));
        let (_, bytes) = self.call(Method::GET, "/control/v1/node", scope::INFRA, None, &[]).await?;
        serde_json::from_slice(&bytes).map_err(|e| StorconError::Body { method: Method::GET, url, reason: e.to_string() })
    }
}

/// `SafekeeperUpsert`: where the controller (and, through it, computes) reach the safekeeper.
fn safekeeper_upsert(node: &Node, region: &str) -> Result<Value, StorconError> {
    let invalid = |address: &str| StorconError::Address { id: node.id, address: address.into() };
    let (host, port) = host_port(&node.pg).ok_or_else(|| invalid(&node.pg))?;
    let http = node.http.split_once("://").map_or(node.http.as_str(), |(_, rest)| rest).trim_end_matches('/');
    let (_, http_port) = host_port(http).ok_or_else(|| invalid(&node.http))?;
    Ok(json!({
        "id": node.id,
        "region_id": region,
        "version": SAFEKEEPER_VERSION,
        "host": host,
        "port": port,
        "http_port": http_port,
        "https_port": null,
        "availability_zone_id": node.availability_zone,
    }))
}

fn host_port(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    Some((host, port.parse().ok()?)).filter(|(host, _)| !host.is_empty())
}

/// `TimelineCreateRequest`: untagged modes; `ancestor_timeline_id` makes it a branch.
/// `TimelineCreateRequest` (`libs/pageserver_api/src/models.rs`): `Bootstrap`, or `Branch` from
/// an ancestor, at its last record or at `ancestor_start_lsn`.
fn timeline_create(timeline_id: &str, pg_version: u32, ancestor: Option<(&str, Option<&str>)>) -> Value {
    let mut body = json!({"new_timeline_id": timeline_id, "pg_version": pg_version});
    if let Some((ancestor, lsn)) = ancestor {
        body["ancestor_timeline_id"] = json!(ancestor);
        if let Some(lsn) = lsn {
            body["ancestor_start_lsn"] = json!(lsn);
        }
    }
    body
}

/// neon's error body is `{"msg": …}`; anything else is shown as text, shortened.
fn error_message(bytes: &[u8]) -> String {
    let text = serde_json::from_slice::<Value>(bytes)
        .ok()
        .and_then(|body| body["msg"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(bytes).into_owned());
    let text = text.trim();
    if text.is_empty() { "(no message)".into() } else { text.chars().take(300).collect() }
}

/// hyper's client errors say "client error (Connect)" and keep the cause in `source()`.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn safekeeper() -> Node {
        Node {
            id: 2,
            pg: "neon-safekeeper-2-0.neon-safekeeper.neon.svc.cluster.local:5454".into(),
            http: "http://neon-safekeeper-2-0.neon-safekeeper.neon.svc.cluster.local:7676".into(),
            availability_zone: "us-east-1b".into(),
        }
    }

    #[test]
    fn safekeeper_upserts_name_the_advertised_address() {
        let body = safekeeper_upsert(&safekeeper(), "us-east-1").unwrap();
        assert_eq!(
            body,
            json!({"id": 2, "region_id": "us-east-1", "version": 9129, "host": "neon-safekeeper-2-0.neon-safekeeper.neon.svc.cluster.local",
                   "port": 5454, "http_port": 7676, "https_port": null, "availability_zone_id": "us-east-1b"})
        );
        let broken = Node { pg: "no-port".into(), ..safekeeper() };
        assert!(matches!(safekeeper_upsert(&broken, "r"), Err(StorconError::Address { id: 2, .. })));
    }

    #[test]
    fn timeline_creation_bootstraps_or_branches() {
        assert_eq!(timeline_create("t", 17, None), json!({"new_timeline_id": "t", "pg_version": 17}));
        assert_eq!(
            timeline_create("t", 17, Some(("p", None))),
            json!({"new_timeline_id": "t", "pg_version": 17, "ancestor_timeline_id": "p"})
        );
        assert_eq!(
            timeline_create("t", 17, Some(("p", Some("0/16B5A50")))),
            json!({"new_timeline_id": "t", "pg_version": 17, "ancestor_timeline_id": "p", "ancestor_start_lsn": "0/16B5A50"})
        );
    }

    #[test]
    fn errors_keep_neons_message_and_say_whether_to_retry() {
        assert_eq!(error_message(br#"{"msg": "Tenant 1 not found"}"#), "Tenant 1 not found");
        assert_eq!(error_message(b"  "), "(no message)");
        let status = |status| StorconError::Status { method: Method::POST, url: "u".into(), status, message: "m".into() };
        assert!(status(StatusCode::SERVICE_UNAVAILABLE).is_transient());
        assert!(status(StatusCode::TOO_MANY_REQUESTS).is_transient());
        assert!(!status(StatusCode::CONFLICT).is_transient());
        assert!(StorconError::Unreachable { method: Method::GET, url: "u".into(), reason: "r".into() }.is_transient());
    }

    /// The 409 bodies neon's controller makes of pageserver errors (`passthrough_api_error`).
    #[test]
    fn pageserver_errors_passed_on_as_conflicts_are_read_back() {
        let initdb = "Conflict: 1 (neon-pageserver-1-0.neon-pageserver.neon.svc.cluster.local) 500 Internal Server Error: \
                      500 Internal Server Error initdb failed: could not create directory: Permission denied";
        let parsed = PageserverError::parse(initdb).unwrap();
        assert_eq!(parsed.node, "1 (neon-pageserver-1-0.neon-pageserver.neon.svc.cluster.local)");
        assert_eq!(parsed.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(parsed.message, "initdb failed: could not create directory: Permission denied");
        let busy = PageserverError::parse(
            "Conflict: 2 (ps) 429 Too Many Requests: 429 Too Many Requests creation of timeline with the given ID is in progress",
        )
        .unwrap();
        assert_eq!(busy.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(PageserverError::parse("Conflict: Tenant is being split"), None, "the controller's own conflicts are its own");
        assert_eq!(PageserverError::parse("Tenant 1 not found"), None);

        let error = |message: &str| StorconError::Pageserver {
            method: Method::POST,
            url: "u".into(),
            pageserver: PageserverError::parse(message).unwrap(),
        };
        assert!(!error(initdb).is_transient() && !error(initdb).is_conflicting_timeline());
        assert_eq!(error(initdb).status(), Some(StatusCode::INTERNAL_SERVER_ERROR));
        assert!(error(initdb).to_string().contains("pageserver 1 (neon-pageserver-1-0"));
        assert!(error("Conflict: 2 (ps) 429 Too Many Requests: 429 Too Many Requests in progress").is_transient());
        let conflict = error("Conflict: 1 (ps) 409 Conflict: 409 Conflict timeline already exists with different parameters");
        assert!(conflict.is_conflicting_timeline() && !conflict.is_transient());
    }
}
