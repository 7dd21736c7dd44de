//! The routes and what they answer. Request and response shapes are neon's:
//! `storage_controller/src/compute_hook.rs` (release-9129) for the hooks,
//! `libs/compute_api/src/{responses,requests}.rs` for compute_ctl, and
//! `proxy/src/control_plane/{messages.rs,client/cplane_proxy_v1.rs}` (release-proxy-8853).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, put};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::time::Instant;

use super::http::{Body, read_body};
use super::jwt::TokenError;
use super::metrics::RequestLabels;
use super::scaling::WakeError;
use super::store::{Attachment, Branch, SafekeeperSet, State as ControlPlaneState, timeline_key};
use super::{ControlPlane, scopes};
use crate::neon::compute::{
    self, ComputeCtlConfig, ComputeSpec, ComputeStatus, ComputeTarget, ConfigurationRequest, ControlPlaneConfigResponse, JwkSet,
};
use crate::neon::control_plane::{Node, paths};

/// `NotifyAttachRequest`: where every shard of a tenant is attached.
#[derive(Debug, Deserialize)]
struct NotifyAttach {
    tenant_id: String,
    stripe_size: Option<u32>,
    shards: Vec<NotifyAttachShard>,
}

#[derive(Debug, Deserialize)]
struct NotifyAttachShard {
    node_id: u64,
    shard_number: u8,
}

/// `NotifySafekeepersRequest`: a timeline's safekeeper set and its membership generation.
#[derive(Debug, Deserialize)]
struct NotifySafekeepers {
    tenant_id: String,
    timeline_id: String,
    generation: u32,
    safekeepers: Vec<SafekeeperInfo>,
}

#[derive(Debug, Deserialize)]
struct SafekeeperInfo {
    id: u64,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum ApiError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("{0}")]
    BadRequest(String),
    /// `reason` is the proxy's `Reason` (`messages.rs`): its not-found reasons make the proxy
    /// fail the login like a wrong password instead of reporting an internal error.
    #[error("{message}")]
    NotFound { message: String, reason: &'static str },
    #[error("no such API: {0}")]
    NoRoute(String),
    #[error("{method} is not allowed on {path}")]
    Method { method: Method, path: String },
    /// The storage controller retries on 503.
    #[error("{0}")]
    Unavailable(String),
    /// A compute is starting: the proxy retries a `RUNNING_OPERATIONS` answer
    /// (`Reason::can_retry`, `messages.rs`).
    #[error("{0}")]
    Waking(String),
    /// A compute cannot start: the proxy gives up and tells the client this message.
    #[error("{0}")]
    CannotStart(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Token(TokenError::Scope { .. }) => StatusCode::FORBIDDEN,
            Self::Token(_) => StatusCode::UNAUTHORIZED,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound { .. } | Self::NoRoute(_) => StatusCode::NOT_FOUND,
            Self::Method { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unavailable(_) | Self::Waking(_) | Self::CannotStart(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// neon's error body: `{"error", "status"?: {"code", "message", "details"}}`.
    fn response(&self) -> Response {
        let message = self.to_string();
        let mut body = json!({"error": message});
        let (code, reason) = match self {
            Self::NotFound { reason, .. } => ("NOT_FOUND", Some(*reason)),
            Self::Waking(_) => ("UNAVAILABLE", Some("RUNNING_OPERATIONS")),
            // No reason: the proxy does not retry an unknown one, and shows the message.
            Self::CannotStart(_) => ("UNAVAILABLE", None),
            _ => ("", None),
        };
        if !code.is_empty() {
            let mut details = json!({"user_facing_message": {"message": message}});
            if let Some(reason) = reason {
                details["error_info"] = json!({"reason": reason});
            }
            body["status"] = json!({"code": code, "message": message, "details": details});
        }
        let mut response = json(self.status(), &body);
        response.extensions_mut().insert(ErrorMessage(message));
        response
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.response()
    }
}

/// What an error response says, for the log line [`guard`] writes.
#[derive(Clone)]
struct ErrorMessage(String);

fn json(status: StatusCode, value: &impl Serialize) -> Response {
    (status, axum::Json(value)).into_response()
}

fn not_found(reason: &'static str, message: String) -> ApiError {
    ApiError::NotFound { message, reason }
}

/// Who may call a route, and its name in metrics (never the path: ids stay out of labels).
#[derive(Clone, Copy)]
struct Access {
    name: &'static str,
    /// The token scopes that may call it; `None`: anyone.
    scopes: Option<&'static [&'static str]>,
}

/// Every API, each behind [`guard`].
pub(super) fn router(control_plane: Arc<ControlPlane>) -> Router {
    const HOOKS: Option<&[&str]> = Some(&[scopes::STORAGE_CONTROLLER, scopes::ADMIN]);
    const COMPUTES: Option<&[&str]> = Some(&[scopes::COMPUTE, scopes::ADMIN]);
    const PROXY: Option<&[&str]> = Some(&[scopes::PROXY, scopes::ADMIN]);
    let guarded = |name: &'static str, scopes, route: MethodRouter<Arc<ControlPlane>>| {
        route.route_layer(from_fn_with_state((control_plane.clone(), Access { name, scopes }), guard))
    };
    Router::new()
        .route(paths::HEALTH, guarded("healthz", None, get(|| async { json(StatusCode::OK, &json!({"status": "ok"})) })))
        .route(paths::METRICS, guarded("metrics", None, get(metrics)))
        .route(&format!("{}/notify-attach", paths::STORAGE_HOOKS), guarded("notify_attach", HOOKS, put(notify_attach)))
        .route(&format!("{}/notify-safekeepers", paths::STORAGE_HOOKS), guarded("notify_safekeepers", HOOKS, put(notify_safekeepers)))
        .route(&format!("{}/{{id}}/spec", paths::COMPUTE_SPECS), guarded("compute_spec", COMPUTES, get(compute_spec)))
        .route(
            &format!("{}/get_endpoint_access_control", paths::PROXY_API),
            guarded("get_endpoint_access_control", PROXY, get(access_control)),
        )
        .route(&format!("{}/wake_compute", paths::PROXY_API), guarded("wake_compute", PROXY, get(wake_compute)))
        .route(&format!("{}/endpoints/{{id}}/jwks", paths::PROXY_API), guarded("endpoint_jwks", PROXY, get(endpoint_jwks)))
        .fallback(|uri: Uri| async move { ApiError::NoRoute(uri.path().to_string()) })
        .method_not_allowed_fallback(|method: Method, uri: Uri| async move { ApiError::Method { method, path: uri.path().to_string() } })
        .with_state(control_plane)
}

/// Checks the caller's token against the route's scopes, logs what failed, and counts the
/// answer by route and status.
async fn guard(State((control_plane, access)): State<(Arc<ControlPlane>, Access)>, request: Request, next: Next) -> Response {
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    let response = match authorize(&control_plane, access, request.headers()) {
        Ok(()) => next.run(request).await,
        Err(error) => error.into_response(),
    };
    if let Some(ErrorMessage(message)) = response.extensions().get() {
        tracing::info!("{method} {path}: {} {message}", response.status().as_u16());
    }
    control_plane.metrics.requests.get_or_create(&RequestLabels { route: access.name, status: response.status().as_u16() }).inc();
    response
}

fn authorize(control_plane: &ControlPlane, access: Access, headers: &HeaderMap) -> Result<(), ApiError> {
    if let (Some(allowed), Some(key)) = (access.scopes, &control_plane.keys.verify) {
        let header = headers.get(AUTHORIZATION).and_then(|value| value.to_str().ok());
        key.authorize(header, allowed)?;
    }
    Ok(())
}

async fn metrics(State(control_plane): State<Arc<ControlPlane>>) -> Response {
    ([(CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], control_plane.metrics.encode()).into_response()
}

async fn notify_attach(State(control_plane): State<Arc<ControlPlane>>, body: Bytes) -> Result<Response, ApiError> {
    control_plane.notify_attach(parse_body(&body, "notify-attach")?).await
}

async fn notify_safekeepers(State(control_plane): State<Arc<ControlPlane>>, body: Bytes) -> Result<Response, ApiError> {
    control_plane.notify_safekeepers(parse_body(&body, "notify-safekeepers")?).await
}

async fn compute_spec(State(control_plane): State<Arc<ControlPlane>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let state = control_plane.state.lock().await;
    Ok(json(StatusCode::OK, &control_plane.config_response(&state, &id)?))
}

async fn access_control(State(control_plane): State<Arc<ControlPlane>>, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    let (endpoint, role) = (query_param(query.as_deref(), "endpointish")?, query_param(query.as_deref(), "role")?);
    let state = control_plane.state.lock().await;
    control_plane.access_control(&state, &endpoint, &role)
}

/// Starts a suspended compute first (waiting for it, without holding the state).
async fn wake_compute(State(control_plane): State<Arc<ControlPlane>>, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    let endpoint = query_param(query.as_deref(), "endpointish")?;
    endpoint_branch(&*control_plane.state.lock().await, &endpoint)?;
    control_plane.ensure_running(&endpoint).await.map_err(|error| match error {
        WakeError::Starting { .. } => ApiError::Waking(error.to_string()),
        WakeError::CannotStart { .. } => ApiError::CannotStart(error.to_string()),
        WakeError::Store(e) => ApiError::Internal(e.to_string()),
    })?;
    let state = control_plane.state.lock().await;
    control_plane.wake_compute(&state, &endpoint)
}

async fn endpoint_jwks(State(control_plane): State<Arc<ControlPlane>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let state = control_plane.state.lock().await;
    endpoint_branch(&state, &id)?;
    Ok(json(StatusCode::OK, &json!({"jwks": []})))
}

impl ControlPlane {
    /// Applies `change` to a copy of the state, persists it, then makes it current; returns
    /// the endpoints whose spec may have changed (those `affected` selects).
    async fn update(
        &self,
        change: impl FnOnce(&mut ControlPlaneState),
        affected: impl Fn(&Branch) -> bool,
    ) -> Result<Vec<String>, ApiError> {
        let mut state = self.state.lock().await;
        let mut next = state.clone();
        change(&mut next);
        self.store.save(&next).await.map_err(|e| ApiError::Internal(e.to_string()))?;
        *state = next;
        Ok(state
            .endpoints
            .iter()
            .filter(|(_, endpoint)| state.branches.get(&endpoint.branch_id).is_some_and(&affected))
            .map(|(id, _)| id.clone())
            .collect())
    }

    async fn notify_attach(&self, request: NotifyAttach) -> Result<Response, ApiError> {
        let _hook = self.hooks.lock().await;
        check_id("tenant_id", &request.tenant_id)?;
        let mut shards = request.shards;
        shards.sort_by_key(|shard| shard.shard_number);
        if shards.is_empty() || shards.iter().enumerate().any(|(i, shard)| usize::from(shard.shard_number) != i) {
            return Err(ApiError::BadRequest(format!("notify-attach for tenant {} must list shards 0..n exactly once", request.tenant_id)));
        }
        for shard in &shards {
            node(&self.topology.pageservers, shard.node_id, "pageserver").map_err(ApiError::BadRequest)?;
        }
        let attachment = Attachment { pageservers: shards.iter().map(|shard| shard.node_id).collect(), stripe_size: request.stripe_size };
        tracing::info!("tenant {} attached to pageserver(s) {:?}", request.tenant_id, attachment.pageservers);
        let tenant = request.tenant_id;
        let endpoints =
            self.update(|state| _ = state.attachments.insert(tenant.clone(), attachment), |branch| branch.tenant_id == tenant).await?;
        self.reconfigure_for_hook(&endpoints).await
    }

    async fn notify_safekeepers(&self, request: NotifySafekeepers) -> Result<Response, ApiError> {
        let _hook = self.hooks.lock().await;
        check_id("tenant_id", &request.tenant_id)?;
        check_id("timeline_id", &request.timeline_id)?;
        let set = SafekeeperSet {
            generation: request.generation,
            safekeepers: request.safekeepers.iter().map(|safekeeper| safekeeper.id).collect(),
        };
        let endpoints = self.set_safekeepers(&request.tenant_id, &request.timeline_id, set).await?;
        self.reconfigure_for_hook(&endpoints).await
    }

    /// Records a timeline's safekeepers (from `notify-safekeepers` or the timeline creation's
    /// answer) unless a newer generation is known; returns the endpoints serving the timeline.
    pub(super) async fn set_safekeepers(&self, tenant: &str, timeline: &str, set: SafekeeperSet) -> Result<Vec<String>, ApiError> {
        for &id in &set.safekeepers {
            node(&self.topology.safekeepers, id, "safekeeper").map_err(ApiError::BadRequest)?;
        }
        let key = timeline_key(tenant, timeline);
        // The same generation again (a retried hook) reconfigures the computes again.
        let known = self.state.lock().await.safekeeper_sets.get(&key).map(|known| known.generation);
        if let Some(known) = known.filter(|&known| known > set.generation) {
            tracing::info!("timeline {key}: ignoring safekeeper generation {} older than {known}", set.generation);
            return Ok(Vec::new());
        }
        tracing::info!("timeline {key}: safekeepers {:?} at generation {}", set.safekeepers, set.generation);
        self.update(
            |state| _ = state.safekeeper_sets.insert(key.clone(), set),
            |branch| branch.tenant_id == tenant && branch.timeline_id == timeline,
        )
        .await
    }

    /// 503 (the storage controller retries) if a compute stays unreachable.
    async fn reconfigure_for_hook(&self, endpoints: &[String]) -> Result<Response, ApiError> {
        self.reconfigure(endpoints)
            .await
            .map_err(|failures| ApiError::Unavailable(format!("{failures}; the new placement is saved, retry the notification")))?;
        Ok(json(StatusCode::OK, &json!({})))
    }

    /// Pushes the current spec to each endpoint's compute that runs and is attached; says
    /// which stayed unreachable (or had no valid spec) if any did.
    pub(super) async fn reconfigure(&self, endpoints: &[String]) -> Result<(), String> {
        let running: Vec<String> = {
            let state = self.state.lock().await;
            endpoints.iter().filter(|id| state.runs(id)).cloned().collect()
        };
        self.configure_computes(&running).await
    }

    /// Pushes the current spec to each endpoint's compute, running or said not to be.
    pub(super) async fn configure_computes(&self, endpoints: &[String]) -> Result<(), String> {
        let mut requests = Vec::new();
        let mut failures = Vec::new();
        {
            let state = self.state.lock().await;
            for id in endpoints {
                // Not running anywhere (a stand-in not started yet): it fetches its spec when it starts.
                let Some(compute) = self.addresses.of(id) else { continue };
                let answer = match self.config_response(&state, id) {
                    Ok(answer) => answer,
                    Err(e) => {
                        failures.push(format!("compute {id}: {e}"));
                        continue;
                    }
                };
                if let Some(spec) = answer.spec {
                    let body = ConfigurationRequest { spec, compute_ctl_config: answer.compute_ctl_config };
                    requests.push((id, compute, body));
                }
            }
        }
        let results = futures::future::join_all(requests.iter().map(|(id, compute, body)| self.configure(id, &compute.http, body))).await;
        failures.extend(results.into_iter().filter_map(Result::err));
        if failures.is_empty() {
            return Ok(());
        }
        Err(format!("could not reconfigure {} compute(s): {}", failures.len(), failures.join("; ")))
    }

    /// `POST {http}/configure` (it answers once the compute has applied the spec), retried
    /// with exponential backoff until the hook's deadline.
    async fn configure(&self, compute_id: &str, http: &str, body: &ConfigurationRequest) -> Result<(), String> {
        let uri = format!("{}/configure", http.trim_end_matches('/'));
        let payload = serde_json::to_vec(body).expect("specs serialize to JSON");
        let started = Instant::now();
        let deadline = started + self.retry.deadline;
        let mut delay = self.retry.first_delay;
        let mut attempt = 1;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let error = match tokio::time::timeout(remaining, self.post(compute_id, &uri, payload.clone())).await {
                Ok(Ok(())) => {
                    tracing::info!("compute {compute_id} reconfigured");
                    return Ok(());
                }
                Ok(Err(error)) => error,
                Err(_) => format!("POST {uri} got no answer"),
            };
            if Instant::now() + delay >= deadline {
                return Err(format!("compute {compute_id}: {error} ({attempt} attempt(s) in {:.1}s)", started.elapsed().as_secs_f64()));
            }
            tracing::info!("compute {compute_id}: {error}; retrying in {delay:?}");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
            attempt += 1;
        }
    }

    async fn post(&self, compute_id: &str, uri: &str, payload: Vec<u8>) -> Result<(), String> {
        self.compute_ctl_call(Method::POST, compute_id, uri, Some(payload), self.retry.deadline).await.map(drop)
    }

    /// A call to compute `compute_id`'s compute_ctl with a token for it, within `timeout`: the
    /// body of a 2xx answer.
    pub(super) async fn compute_ctl_call(
        &self,
        method: Method,
        compute_id: &str,
        uri: &str,
        payload: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Bytes, String> {
        let mut request = hyper::Request::builder().method(method.clone()).uri(uri);
        if payload.is_some() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        if let Some(key) = &self.keys.sign {
            request = request.header(AUTHORIZATION, format!("Bearer {}", key.compute_ctl_token(compute_id).0));
        }
        let request = request.body(Body::from(payload.unwrap_or_default())).map_err(|e| format!("invalid compute_ctl URL {uri}: {e}"))?;
        let call = async {
            let response = self.client.request(request).await.map_err(|e| format!("{method} {uri} failed: {e}"))?;
            let status = response.status();
            let body = read_body(response.into_body()).await.map_err(|e| format!("{method} {uri}: reading the answer: {e}"))?;
            if status.is_success() {
                return Ok(body);
            }
            // compute_ctl's error bodies are `{"error": "..."}`: a message, no secrets.
            let text = String::from_utf8_lossy(&body);
            Err(format!("{method} {uri} answered {status}: {}", text.chars().take(300).collect::<String>()))
        };
        tokio::time::timeout(timeout, call).await.map_err(|_| format!("{method} {uri} got no answer in {timeout:?}"))?
    }

    /// What compute_ctl gets for `compute_id` (its endpoint's id): attached with a spec, or
    /// empty while its branch's timeline is not created yet or its tenant is not attached yet
    /// (it then waits for `/configure`, which the hooks and the reconciler send).
    fn config_response(&self, state: &ControlPlaneState, compute_id: &str) -> Result<ControlPlaneConfigResponse, ApiError> {
        let compute_ctl_config = ComputeCtlConfig { jwks: JwkSet { keys: self.keys.sign.iter().map(|key| key.jwk()).collect() } };
        let empty = ControlPlaneConfigResponse { spec: None, status: ComputeStatus::Empty, compute_ctl_config: compute_ctl_config.clone() };
        let Some(endpoint) = state.endpoints.get(compute_id) else {
            return Err(not_found("RESOURCE_NOT_FOUND", format!("compute {compute_id} is not an endpoint: no NeonEndpoint has its name")));
        };
        let branch = state.branches.get(&endpoint.branch_id).ok_or_else(|| {
            ApiError::Internal(format!(
                "endpoint {compute_id} serves branch {}, which the control plane state does not have; add the branch",
                endpoint.branch_id
            ))
        })?;
        let Some(attachment) = state.attachments.get(&branch.tenant_id).filter(|_| !branch.pending) else {
            return Ok(empty);
        };
        let internal = ApiError::Internal;
        let pageservers = attachment
            .pageservers
            .iter()
            .map(|&id| node(&self.topology.pageservers, id, "pageserver").map(|node| node.pg.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(internal)?;
        let (safekeepers, safekeepers_generation) = match state.safekeeper_sets.get(&timeline_key(&branch.tenant_id, &branch.timeline_id)) {
            Some(set) => (
                set.safekeepers
                    .iter()
                    .map(|&id| node(&self.topology.safekeepers, id, "safekeeper").map(|node| node.pg.clone()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(internal)?,
                Some(set.generation),
            ),
            None => (self.topology.safekeepers.iter().map(|node| node.pg.clone()).collect(), None),
        };
        let port = self.topology.compute.pg_port;
        let spec = ComputeSpec::new(ComputeTarget {
            project_id: branch.project_id.clone(),
            branch_id: endpoint.branch_id.clone(),
            endpoint_id: compute_id.into(),
            tenant_id: branch.tenant_id.clone(),
            timeline_id: branch.timeline_id.clone(),
            pageservers,
            stripe_size: attachment.stripe_size,
            safekeepers,
            safekeepers_generation,
            storage_auth_token: self.keys.sign.as_ref().map(|key| key.tenant_token(&branch.tenant_id)),
            roles: branch
                .roles
                .iter()
                .map(|role| compute::Role { name: role.name.clone(), encrypted_password: role.verifier.clone(), options: None })
                .collect(),
            databases: branch
                .databases
                .iter()
                .map(|db| compute::Database { name: db.name.clone(), owner: db.owner.clone(), options: None })
                .collect(),
            port,
            suspend_timeout_seconds: endpoint.suspend_timeout_seconds,
            read_only: endpoint.read_only,
            dropped_databases: branch.dropped_databases.clone(),
            dropped_roles: branch.dropped_roles.clone(),
        });
        Ok(ControlPlaneConfigResponse { spec: Some(spec), status: ComputeStatus::Attached, compute_ctl_config })
    }

    /// `GetEndpointAccessControl`: the role's SCRAM verifier and the endpoint's allowlist.
    fn access_control(&self, state: &ControlPlaneState, endpoint_id: &str, role: &str) -> Result<Response, ApiError> {
        let (endpoint, branch) = endpoint_branch(state, endpoint_id)?;
        let role = branch
            .roles
            .iter()
            .find(|r| r.name == role)
            .ok_or_else(|| not_found("RESOURCE_NOT_FOUND", format!("role {role} does not exist on endpoint {endpoint_id}")))?;
        Ok(json(
            StatusCode::OK,
            &json!({
                "role_secret": role.verifier.0,
                "allowed_ips": endpoint.allowed_ips,
                "project_id": branch.project_id,
            }),
        ))
    }

    /// `WakeCompute`: the compute's `host:port` (plain TCP: no `server_name`) and metrics labels.
    fn wake_compute(&self, state: &ControlPlaneState, endpoint_id: &str) -> Result<Response, ApiError> {
        let (endpoint, branch) = endpoint_branch(state, endpoint_id)?;
        let compute = self
            .addresses
            .of(endpoint_id)
            .ok_or_else(|| ApiError::Unavailable(format!("endpoint {endpoint_id}'s compute is not running")))?;
        Ok(json(
            StatusCode::OK,
            &json!({
                "address": compute.pg,
                "aux": {
                    "endpoint_id": endpoint_id,
                    "project_id": branch.project_id,
                    "branch_id": endpoint.branch_id,
                    "compute_id": endpoint_id,
                    "cold_start_info": "warm",
                },
            }),
        ))
    }
}

fn endpoint_branch<'s>(state: &'s ControlPlaneState, endpoint_id: &str) -> Result<(&'s super::store::Endpoint, &'s Branch), ApiError> {
    let endpoint = state
        .endpoints
        .get(endpoint_id)
        .ok_or_else(|| not_found("ENDPOINT_NOT_FOUND", format!("endpoint {endpoint_id} does not exist")))?;
    let branch = state
        .branches
        .get(&endpoint.branch_id)
        .ok_or_else(|| not_found("BRANCH_NOT_FOUND", format!("branch {} of endpoint {endpoint_id} does not exist", endpoint.branch_id)))?;
    Ok((endpoint, branch))
}

fn node<'t>(nodes: &'t [Node], id: u64, kind: &str) -> Result<&'t Node, String> {
    nodes.iter().find(|node| node.id == id).ok_or_else(|| {
        format!("{kind} {id} is not in the control plane topology; render and apply the manifests again so that it knows every node")
    })
}

/// Tenant and timeline ids are 32 hex digits.
fn check_id(field: &str, value: &str) -> Result<(), ApiError> {
    if value.len() == 32 && value.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!("{field} {value:?} is not a 32-digit hex id")))
    }
}

fn query_param(query: Option<&str>, name: &str) -> Result<String, ApiError> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
        .filter(|value| !value.is_empty())
        .ok_or_else(|| ApiError::BadRequest(format!("query parameter {name} is missing")))
}

fn parse_body<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("the {what} body is not valid: {e}")))
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[tokio::test]
    async fn not_found_errors_carry_the_reason_the_proxy_reads() {
        use http_body_util::BodyExt as _;
        let response = not_found("ENDPOINT_NOT_FOUND", "endpoint x does not exist".into()).response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"], "endpoint x does not exist");
        assert_eq!(body["status"]["details"]["error_info"]["reason"], "ENDPOINT_NOT_FOUND");
        assert!(body["status"]["code"].is_string() && body["status"]["message"].is_string());
    }

    /// Neon's proxy retries a wake whose error carries a retryable reason
    /// (`Reason::can_retry`, `proxy/src/control_plane/messages.rs`), and shows the user-facing
    /// message of one it does not retry.
    #[tokio::test]
    async fn wake_errors_say_whether_the_proxy_retries() {
        use http_body_util::BodyExt as _;
        let body = |error: ApiError| async move {
            let response = error.response();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            serde_json::from_slice::<Value>(&bytes).unwrap()
        };
        let waking = body(ApiError::Waking("endpoint dev's compute is starting".into())).await;
        assert_eq!(waking["status"]["details"]["error_info"]["reason"], "RUNNING_OPERATIONS");
        let stuck = body(ApiError::CannotStart("endpoint dev's compute cannot start: ImagePullBackOff".into())).await;
        assert!(stuck["status"]["details"]["error_info"].is_null(), "no reason: not retried");
        assert_eq!(stuck["status"]["details"]["user_facing_message"]["message"], "endpoint dev's compute cannot start: ImagePullBackOff");
    }

    #[test]
    fn query_parameters_are_decoded() {
        assert_eq!(query_param(Some("session_id=1&role=al%20ice&endpointish=ep"), "role").unwrap(), "al ice");
        assert!(query_param(Some("role="), "role").is_err());
        assert!(query_param(None, "role").is_err());
    }
}
