//! The HTTP API (`schemas/access_api.openapi.json` is generated from the annotations here).
//!
//! Every `/v1` route needs a bearer token; roles decide what it may do (401 without a valid token,
//! 403 when the role or the approval rules say no). Bodies are JSON, at most 64 KiB, with unknown
//! fields refused; requests are rate-limited per principal, and failed authentications per client
//! address.

use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use grantwatch_access_core::AccessError;
use grantwatch_access_core::validate::{is_request_id, parse_arn};
use grantwatch_types::{
    AccessRecord, AccessRequest, AccessState, AccessTransition, EventTime, RequestedAccess, RequestedIdentity,
};
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

use crate::auth::{AuthError, Authenticator, Caller, Role};
use crate::engine::Engine;
use crate::limit::RateLimiter;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Most requests one listing returns.
pub const MAX_LIST: usize = 1000;

pub struct AppState {
    pub engine: Arc<Engine>,
    pub auth: Authenticator,
    pub per_principal: RateLimiter,
    pub unauthenticated: RateLimiter,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/requests", post(submit).get(list))
        .route("/v1/requests/{id}", get(show))
        .route("/v1/requests/{id}/approve", post(approve))
        .route("/v1/requests/{id}/deny", post(deny))
        .route("/v1/requests/{id}/cancel", post(cancel))
        .route("/v1/requests/{id}/revoke", post(revoke))
        .route("/v1/requests/{id}/abandon", post(abandon))
        .route("/v1/whoami", get(whoami))
        .route("/v1/openapi.json", get(openapi))
        .route("/healthz", get(|| async { Json(serde_json::json!({"status": "ok"})) }))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "grantwatch-access",
        description = "Permissions on demand: request time-bound AWS access, approve it, and have it revoked on time. Every transition is in the request's log, the audit log and the grantwatch.access topic."
    ),
    paths(submit, list, show, approve, deny, cancel, revoke, abandon, whoami),
    components(schemas(ErrorBody, SubmitBody, Decision, RequestDetail, RequestList, WhoAmI)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// The OpenAPI document, as committed in `schemas/access_api.openapi.json`.
pub fn openapi_json() -> String {
    let mut text = ApiDoc::openapi().to_pretty_json().unwrap_or_default();
    text.push('\n');
    text
}

// ---------------------------------------------------------------------------------------------------
// Errors

/// Every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// `unauthenticated`, `forbidden`, `invalid`, `not_found`, `conflict`, `rate_limited`, `internal`.
    pub error: String,
    pub message: String,
}

pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), retry_after: None }
    }
    fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid", message)
    }
    fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    fn not_found(id: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no access request {id:?}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(ErrorBody { error: self.code.into(), message: self.message })).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(v) = self.retry_after.and_then(|secs| HeaderValue::from_str(&secs.to_string()).ok()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        r
    }
}

impl From<AccessError> for ApiError {
    fn from(e: AccessError) -> ApiError {
        use AccessError as E;
        let message = e.to_string();
        match e {
            E::Invalid(_) | E::Plan(_) | E::TimeOverflow(_) => ApiError::invalid(message),
            E::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "not_found", message),
            E::SelfApproval | E::IdentityApproval | E::NotAnApprover { .. } | E::NotAllowed { .. } => {
                ApiError::forbidden(message)
            }
            E::Transition(_)
            | E::Duplicate(_)
            | E::AlreadyApproved(_)
            | E::RuleGone(_)
            | E::AlreadyEnding { .. }
            | E::NotDue { .. }
            | E::Claimed { .. }
            | E::ClaimLost { .. }
            | E::BadWorker => ApiError::new(StatusCode::CONFLICT, "conflict", message),
            E::Encode { .. } | E::State(_) => {
                tracing::error!(error = %message, "access state error");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error (see the service log)")
            }
        }
    }
}

/// Bodies that do not parse or do not fit the schema are 400 (axum says 422 for the latter); a body
/// over the limit keeps its 413, a missing content type its 415.
fn json_rejection(r: JsonRejection) -> ApiError {
    let status = match r.status() {
        StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
        s => s,
    };
    ApiError::new(status, "invalid", r.body_text())
}

// ---------------------------------------------------------------------------------------------------
// Authentication and rate limits, as an extractor

/// The authenticated caller of a `/v1` route.
pub struct Authed(pub Caller);

impl FromRequestParts<Arc<AppState>> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let now = state.engine.now();
        let header = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        match state.auth.authenticate(header, now) {
            Ok(caller) => {
                state.per_principal.check(&caller.principal.name, now).map_err(rate_limited)?;
                Ok(Authed(caller))
            }
            Err(e) => {
                let client = parts
                    .extensions
                    .get::<ConnectInfo<SocketAddr>>()
                    .map_or_else(|| "unknown".to_string(), |c| c.0.ip().to_string());
                state.unauthenticated.check(&client, now).map_err(rate_limited)?;
                if e != AuthError::Missing {
                    tracing::info!(%client, reason = %e, "authentication failed");
                }
                Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", e.to_string()))
            }
        }
    }
}

fn rate_limited(retry_after: u64) -> ApiError {
    let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "too many requests; slow down");
    e.retry_after = Some(retry_after);
    e
}

fn require(caller: &Caller, role: Role) -> Result<(), ApiError> {
    if caller.has(role) {
        return Ok(());
    }
    let role = serde_json::to_value(role).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
    Err(ApiError::forbidden(format!("{:?} does not have the {role} role", caller.principal.name)))
}

// ---------------------------------------------------------------------------------------------------
// Bodies

/// A request for access. The requester is the authenticated caller.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitBody {
    /// Your own id (`[A-Za-z0-9_-]`, at most 64); the service makes one otherwise.
    #[serde(default)]
    pub id: Option<String>,
    pub identity: RequestedIdentity,
    pub access: RequestedAccess,
    /// How long the grant lasts once active; at most the rule's maximum.
    pub duration_secs: u64,
    pub justification: String,
    #[serde(default)]
    pub ticket: Option<String>,
    /// The account the access is granted in; by default the identity ARN's account (or the
    /// permission set's).
    #[serde(default)]
    pub account_id: Option<String>,
}

/// Why a decision was taken (required to deny, cancel, revoke or abandon).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    #[serde(default)]
    pub reason: String,
}

/// A request and its whole transition log.
#[derive(Debug, Serialize, ToSchema)]
pub struct RequestDetail {
    pub request: AccessRecord,
    pub log: Vec<AccessTransition>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RequestList {
    /// Newest first.
    pub requests: Vec<AccessRecord>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only requests in this state.
    pub state: Option<AccessState>,
    /// Only requests for this identity (ARN or Identity Center user id).
    pub identity: Option<String>,
    /// Only requests by this requester (approvers only; a requester sees their own).
    pub requester: Option<String>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WhoAmI {
    pub principal: String,
    pub groups: Vec<String>,
    pub roles: Vec<Role>,
}

// ---------------------------------------------------------------------------------------------------
// Handlers

/// Ask for access.
#[utoipa::path(post, path = "/v1/requests", request_body = SubmitBody,
    responses(
        (status = 201, description = "Stored: pending, or approved and installed when auto-approved", body = AccessRecord),
        (status = 400, description = "Invalid (the message names the field)", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, description = "The id is taken", body = ErrorBody),
        (status = 429, body = ErrorBody)))]
async fn submit(
    State(s): State<Arc<AppState>>,
    Authed(caller): Authed,
    body: Result<Json<SubmitBody>, JsonRejection>,
) -> Result<(StatusCode, Json<AccessRecord>), ApiError> {
    require(&caller, Role::Requester)?;
    let Json(b) = body.map_err(json_rejection)?;
    let account_id = match (b.account_id, &b.identity, &b.access) {
        (Some(a), _, _) => a,
        (None, _, RequestedAccess::PermissionSet { account_id, .. }) => account_id.clone(),
        (None, RequestedIdentity::IamUser { arn } | RequestedIdentity::IamRole { arn }, _) => {
            parse_arn("identity", arn).map_err(|e| ApiError::invalid(e.to_string()))?.account.to_string()
        }
        (None, RequestedIdentity::IdentityCenterUser { .. }, _) => {
            return Err(ApiError::invalid("account_id is required for an Identity Center user"));
        }
    };
    let id = match b.id {
        Some(id) if is_request_id(&id) => id,
        Some(id) => return Err(ApiError::invalid(format!("id {id:?}: use [A-Za-z0-9_-], at most 64 characters"))),
        None => format!("req-{}", hex::encode(rand::random::<[u8; 8]>())),
    };
    let request = AccessRequest {
        id,
        identity: b.identity,
        access: b.access,
        duration_secs: b.duration_secs,
        justification: b.justification,
        ticket: b.ticket,
        requester: caller.principal.name.clone(),
        account_id,
    };
    let record = s.engine.submit(request).await?;
    Ok((StatusCode::CREATED, Json(record)))
}

/// List requests, newest first.
#[utoipa::path(get, path = "/v1/requests", params(ListQuery),
    responses((status = 200, body = RequestList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn list(
    State(s): State<Arc<AppState>>,
    Authed(caller): Authed,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<RequestList>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid(e.body_text()))?;
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_LIST);
    let requester = if caller.sees_all() { q.requester } else { Some(caller.principal.name.clone()) };
    // Newest `limit` kept in a bounded heap while the store streams by: memory is the page, not the
    // store.
    let mut heap: BinaryHeap<std::cmp::Reverse<ByAge>> = BinaryHeap::new();
    grantwatch_access_core::for_each_record(s.engine.ledger.store(), &mut |r| {
        let keep = q.state.is_none_or(|st| r.state == st)
            && requester.as_ref().is_none_or(|who| &r.request.requester == who)
            && q.identity.as_ref().is_none_or(|i| identity_name(&r.request.identity) == i);
        if keep {
            heap.push(std::cmp::Reverse(ByAge(r)));
            if heap.len() > limit {
                heap.pop();
            }
        }
        true
    })?;
    let mut requests: Vec<_> = heap.into_iter().map(|std::cmp::Reverse(ByAge(r))| r).collect();
    requests.sort_by(|a, b| (b.submitted_at, &b.request.id).cmp(&(a.submitted_at, &a.request.id)));
    Ok(Json(RequestList { requests }))
}

/// A record ordered by (submission time, id): the listing keeps the newest.
struct ByAge(AccessRecord);

impl ByAge {
    fn key(&self) -> (EventTime, &str) {
        (self.0.submitted_at, &self.0.request.id)
    }
}
impl PartialEq for ByAge {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for ByAge {}
impl PartialOrd for ByAge {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for ByAge {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

fn identity_name(i: &RequestedIdentity) -> &str {
    match i {
        RequestedIdentity::IamUser { arn } | RequestedIdentity::IamRole { arn } => arn,
        RequestedIdentity::IdentityCenterUser { user_id } => user_id,
    }
}

/// One request with its transition log.
#[utoipa::path(get, path = "/v1/requests/{id}", params(("id" = String, Path, description = "Request id")),
    responses((status = 200, body = RequestDetail), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn show(
    State(s): State<Arc<AppState>>,
    Authed(caller): Authed,
    Path(id): Path<String>,
) -> Result<Json<RequestDetail>, ApiError> {
    let record = visible(&s, &caller, &id)?;
    let log = s.engine.ledger.log(&id)?;
    Ok(Json(RequestDetail { request: record, log }))
}

/// A request the caller may see; others are "not found", so ids are not probed.
fn visible(s: &AppState, caller: &Caller, id: &str) -> Result<AccessRecord, ApiError> {
    match s.engine.ledger.get(id)? {
        Some(r) if caller.sees_all() || r.request.requester == caller.principal.name => Ok(r),
        _ => Err(ApiError::not_found(id)),
    }
}

fn decision(body: Result<Json<Decision>, JsonRejection>) -> Result<String, ApiError> {
    match body {
        Ok(Json(d)) => Ok(d.reason),
        // No body at all is an empty reason.
        Err(JsonRejection::MissingJsonContentType(_)) => Ok(String::new()),
        Err(e) => Err(json_rejection(e)),
    }
}

/// Approve a pending request (a high-risk request needs two distinct approvers; never the requester).
/// The approval that completes the quorum installs the grant.
#[utoipa::path(post, path = "/v1/requests/{id}/approve", request_body = Decision, params(("id" = String, Path)),
    responses((status = 200, description = "Pending (one more approval needed), active, or failed (installation refused)", body = AccessRecord),
        (status = 401, body = ErrorBody), (status = 403, description = "Not an approver of its rule, or the requester", body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "Not pending, or already approved by you", body = ErrorBody)))]
async fn approve(
    State(s): State<Arc<AppState>>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    body: Result<Json<Decision>, JsonRejection>,
) -> Result<Json<AccessRecord>, ApiError> {
    require(&caller, Role::Approver)?;
    let reason = decision(body)?;
    visible(&s, &caller, &id)?;
    Ok(Json(s.engine.approve(&id, &caller.principal, &reason).await?))
}

/// Deny a pending request.
#[utoipa::path(post, path = "/v1/requests/{id}/deny", request_body = Decision, params(("id" = String, Path)),
    responses((status = 200, body = AccessRecord), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn deny(
    State(s): State<Arc<AppState>>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    body: Result<Json<Decision>, JsonRejection>,
) -> Result<Json<AccessRecord>, ApiError> {
    require(&caller, Role::Approver)?;
    let reason = decision(body)?;
    visible(&s, &caller, &id)?;
    Ok(Json(s.engine.deny(&id, &caller.principal, &reason)?))
}

/// Withdraw a request that is not active yet (its requester, or an approver of its rule).
#[utoipa::path(post, path = "/v1/requests/{id}/cancel", request_body = Decision, params(("id" = String, Path)),
    responses((status = 200, body = AccessRecord), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn cancel(
    State(s): State<Arc<AppState>>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    body: Result<Json<Decision>, JsonRejection>,
) -> Result<Json<AccessRecord>, ApiError> {
    let reason = decision(body)?;
    visible(&s, &caller, &id)?;
    Ok(Json(s.engine.cancel(&id, &caller.principal, &reason)?))
}

/// Take an active grant back before its time (its requester, or an approver of its rule). It ends
/// `revoked` once removed.
#[utoipa::path(post, path = "/v1/requests/{id}/revoke", request_body = Decision, params(("id" = String, Path)),
    responses((status = 200, body = AccessRecord), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn revoke(
    State(s): State<Arc<AppState>>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    body: Result<Json<Decision>, JsonRejection>,
) -> Result<Json<AccessRecord>, ApiError> {
    let reason = decision(body)?;
    visible(&s, &caller, &id)?;
    Ok(Json(s.engine.revoke(&id, &caller.principal, &reason)?))
}

/// Give up on revoking an active grant (removed by hand, identity gone): it ends `failed`. Admins only.
#[utoipa::path(post, path = "/v1/requests/{id}/abandon", request_body = Decision, params(("id" = String, Path)),
    responses((status = 200, body = AccessRecord), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn abandon(
    State(s): State<Arc<AppState>>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    body: Result<Json<Decision>, JsonRejection>,
) -> Result<Json<AccessRecord>, ApiError> {
    require(&caller, Role::Admin)?;
    let reason = decision(body)?;
    Ok(Json(s.engine.abandon(&id, &caller.principal, &reason)?))
}

/// Who the token says you are.
#[utoipa::path(get, path = "/v1/whoami", responses((status = 200, body = WhoAmI), (status = 401, body = ErrorBody)))]
async fn whoami(Authed(caller): Authed) -> Json<WhoAmI> {
    Json(WhoAmI {
        principal: caller.principal.name.clone(),
        groups: caller.principal.groups.clone(),
        roles: caller.roles.iter().copied().collect(),
    })
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], openapi_json())
}

async fn metrics(State(s): State<Arc<AppState>>) -> impl IntoResponse {
    let m = &s.engine.metrics;
    let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let count = get(&m.expiry_lag_count);
    let text = format!(
        "# TYPE grantwatch_access_installed_total counter\ngrantwatch_access_installed_total {}\n\
         # TYPE grantwatch_access_install_failures_total counter\ngrantwatch_access_install_failures_total {}\n\
         # TYPE grantwatch_access_revoked_total counter\ngrantwatch_access_revoked_total {}\n\
         # TYPE grantwatch_access_revoke_failures_total counter\ngrantwatch_access_revoke_failures_total {}\n\
         # TYPE grantwatch_access_revoke_alerts_total counter\ngrantwatch_access_revoke_alerts_total {}\n\
         # TYPE grantwatch_access_expiry_lag_seconds summary\ngrantwatch_access_expiry_lag_seconds_sum {}\ngrantwatch_access_expiry_lag_seconds_count {count}\n\
         # TYPE grantwatch_access_expiry_lag_seconds_max gauge\ngrantwatch_access_expiry_lag_seconds_max {}\n",
        get(&m.installed),
        get(&m.install_failures),
        get(&m.revoked),
        get(&m.revoke_failures),
        get(&m.revoke_alerts),
        get(&m.expiry_lag_ms_sum) as f64 / 1000.0,
        get(&m.expiry_lag_ms_max) as f64 / 1000.0,
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}
