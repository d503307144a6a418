//! One Azure Activity Log record, or one Entra ID sign-in record (JSON bytes) → one [`Event`].
//!
//! **Activity Log**, in either shape:
//! * `az monitor activity-log list` / the REST API: `eventDataId`, `eventTimestamp`, `operationName.value`,
//!   `status.value`, `subStatus.value`, `caller`, `claims`, `subscriptionId`, `resourceId`,
//!   `httpRequest.clientIpAddress`, `authorization`, `properties`;
//! * the diagnostic-settings export (storage account / Event Hub, JSON Lines): `time`, `operationName`
//!   (upper-case), `resultType`, `resultSignature`, `callerIpAddress`, `correlationId`,
//!   `identity.claims`, `identity.authorization`, `resourceId`, `properties`.
//!
//! One operation is logged several times (`Started`/`Accepted`, then `Succeeded` or `Failed`): only the
//! final record is an event; the others return [`NormalizeError::NotApiActivity`] so the caller counts
//! them without counting the operation twice. Records of other categories (service health, alerts,
//! autoscale, Azure Policy's own evaluations) are not calls by an identity and are skipped the same way.
//!
//! The event's `actions` is the operation as the catalog spells it when the catalog knows it (mapping
//! `Direct`); the Azure catalog holds the operations that built-in roles name, so others are `Unmapped`
//! and counted by the caller.
//!
//! **Sign-ins**: Microsoft Graph `auditLogs/signIns` records, or the diagnostic export (`category`
//! `SignInLogs`, `NonInteractiveUserSignInLogs`, `ServicePrincipalSignInLogs`,
//! `ManagedIdentitySignInLogs`, the record under `properties`). They need no Azure permission
//! (mapping `NoPermission`); `additional` keeps what detection reads: whether MFA was satisfied, the
//! authentication requirement, the app, the client, conditional access, risk, location.

use std::borrow::Cow;

use grantwatch_types::{
    ActionMapping, Actor, Api, Cloud, ERROR_MESSAGE_MAX, Event, EventTime, IdentityKind, RAW_DETAIL_MAX, RawJson,
    Status, cut_str,
};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::lenient::{Flag, List, Str, lower, parse_time};
use crate::catalog::Catalog;
use crate::cloudtrail::{NormalizeError, UNKNOWN, redact};

/// The region of an event whose record names no location.
pub const GLOBAL: &str = "global";

/// `api.service` of sign-in events.
pub const SIGNIN_SERVICE: &str = "Microsoft.AzureActiveDirectory";
/// `api.operation` of sign-in events.
pub const SIGNIN_OPERATION: &str = "Sign-in activity";

/// Token claims, as the Activity Log records them (full claim URIs, or the short JWT names).
#[derive(Deserialize, Default)]
struct RawClaims<'a> {
    #[serde(rename = "http://schemas.microsoft.com/identity/claims/objectidentifier", borrow, default)]
    oid_uri: Str<'a>,
    #[serde(rename = "oid", borrow, default)]
    oid: Str<'a>,
    #[serde(rename = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn", borrow, default)]
    upn_uri: Str<'a>,
    #[serde(rename = "upn", borrow, default)]
    upn: Str<'a>,
    #[serde(rename = "appid", borrow, default)]
    appid: Str<'a>,
    #[serde(rename = "idtyp", borrow, default)]
    idtyp: Str<'a>,
    #[serde(rename = "http://schemas.microsoft.com/identity/claims/tenantid", borrow, default)]
    tid_uri: Str<'a>,
    #[serde(rename = "tid", borrow, default)]
    tid: Str<'a>,
    #[serde(rename = "http://schemas.microsoft.com/claims/authnmethodsreferences", borrow, default)]
    amr_uri: Str<'a>,
    #[serde(rename = "ipaddr", borrow, default)]
    ipaddr: Str<'a>,
}

impl RawClaims<'_> {
    fn oid(&self) -> Option<&str> {
        self.oid_uri.get().or(self.oid.get())
    }
    fn upn(&self) -> Option<&str> {
        self.upn_uri.get().or(self.upn.get())
    }
}

#[derive(Deserialize, Default)]
struct RawAuthorization<'a> {
    #[serde(borrow, default)]
    action: Str<'a>,
    #[serde(borrow, default)]
    scope: Str<'a>,
    #[serde(borrow, default)]
    evidence: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
struct RawIdentity<'a> {
    #[serde(borrow, default)]
    claims: Option<RawClaims<'a>>,
    #[serde(borrow, default)]
    authorization: Option<RawAuthorization<'a>>,
}

#[derive(Deserialize, Default)]
struct RawHttpRequest<'a> {
    #[serde(rename = "clientIpAddress", borrow, default)]
    client_ip: Str<'a>,
}

#[derive(Deserialize, Default)]
struct RawProperties<'a> {
    #[serde(rename = "requestbody", borrow, default)]
    request_body: Option<&'a RawValue>,
    #[serde(rename = "requestBody", borrow, default)]
    request_body_camel: Option<&'a RawValue>,
    #[serde(rename = "responseBody", borrow, default)]
    response_body: Option<&'a RawValue>,
    #[serde(borrow, default)]
    message: Str<'a>,
    #[serde(rename = "statusMessage", borrow, default)]
    status_message: Str<'a>,
    #[serde(rename = "statusCode", borrow, default)]
    status_code: Str<'a>,
    #[serde(rename = "eventCategory", borrow, default)]
    event_category: Str<'a>,
}

#[derive(Deserialize)]
struct RawActivity<'a> {
    #[serde(rename = "eventDataId", borrow, default)]
    event_data_id: Str<'a>,
    #[serde(rename = "eventTimestamp", borrow, default)]
    event_timestamp: Str<'a>,
    #[serde(borrow, default)]
    time: Str<'a>,
    /// A string in the export, `{value, localizedValue}` in the list shape; [`Str`] reads both.
    #[serde(rename = "operationName", borrow, default)]
    operation_name: Str<'a>,
    #[serde(borrow, default)]
    category: Str<'a>,
    #[serde(borrow, default)]
    status: Str<'a>,
    #[serde(rename = "subStatus", borrow, default)]
    sub_status: Str<'a>,
    #[serde(rename = "resultType", borrow, default)]
    result_type: Str<'a>,
    #[serde(rename = "resultSignature", borrow, default)]
    result_signature: Str<'a>,
    #[serde(borrow, default)]
    caller: Str<'a>,
    #[serde(rename = "callerIpAddress", borrow, default)]
    caller_ip: Str<'a>,
    #[serde(rename = "httpRequest", borrow, default)]
    http_request: Option<RawHttpRequest<'a>>,
    #[serde(borrow, default)]
    claims: Option<RawClaims<'a>>,
    /// An object in the Activity Log export; a display name (a string) in sign-in exports.
    #[serde(borrow, default)]
    identity: Option<&'a RawValue>,
    #[serde(borrow, default)]
    authorization: Option<RawAuthorization<'a>>,
    #[serde(rename = "subscriptionId", borrow, default)]
    subscription_id: Str<'a>,
    #[serde(rename = "resourceId", borrow, default)]
    resource_id: Str<'a>,
    #[serde(rename = "resourceProviderName", borrow, default)]
    resource_provider: Str<'a>,
    #[serde(borrow, default)]
    location: Str<'a>,
    #[serde(rename = "correlationId", borrow, default)]
    correlation_id: Str<'a>,
    #[serde(borrow, default)]
    properties: Option<&'a RawValue>,
    #[serde(rename = "tenantId", borrow, default)]
    tenant_id: Str<'a>,
}

fn require_object(raw: &[u8], what: &str) -> Result<(), NormalizeError> {
    // serde's derived structs would also accept a JSON array (fields by position).
    if raw.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(NormalizeError::Json(format!("expected a JSON object ({what})")));
    }
    Ok(())
}

fn object<'a, T: Deserialize<'a> + Default>(raw: Option<&'a RawValue>) -> T {
    raw.filter(|v| v.get().trim_start().starts_with('{'))
        .and_then(|v| serde_json::from_str(v.get()).ok())
        .unwrap_or_default()
}

/// `/subscriptions/{id}/...` → `id`, lower-case.
fn subscription_of(resource_id: &str) -> Option<String> {
    let mut parts = resource_id.split('/').filter(|s| !s.is_empty());
    let first = parts.next()?;
    if !first.eq_ignore_ascii_case("subscriptions") {
        return None;
    }
    parts.next().map(lower)
}

/// How a status reads: final success, final failure, or not final (`Started`, `Accepted`, ...).
enum Outcome {
    Success,
    Failure,
    NotFinal,
}

fn outcome(status: &str) -> Outcome {
    match status.to_ascii_lowercase().as_str() {
        "succeeded" | "success" => Outcome::Success,
        "failed" | "failure" | "canceled" | "cancelled" => Outcome::Failure,
        _ => Outcome::NotFinal,
    }
}

/// Activity Log categories that record calls by an identity (`Administrative`); a record without one is
/// taken as such.
fn is_call_category(category: Option<&str>) -> bool {
    category.is_none_or(|c| c.eq_ignore_ascii_case("Administrative"))
}

/// Normalizes one Activity Log record (either shape; see the module documentation).
///
/// Required: a time (`eventTimestamp` or `time`, RFC 3339), `operationName`, a final status (`status` or
/// `resultType`). The account is `subscriptionId`, else the subscription of `resourceId`, else
/// [`UNKNOWN`]. Never panics.
pub fn normalize_activity(raw: &[u8], catalog: &Catalog) -> Result<Event, NormalizeError> {
    require_object(raw, "an Activity Log record")?;
    let rec: RawActivity<'_> = serde_json::from_slice(raw).map_err(|e| NormalizeError::Json(e.to_string()))?;
    let props: RawProperties<'_> = object(rec.properties);
    let category = rec.category.get().or(props.event_category.get());
    if !is_call_category(category) {
        return Err(NormalizeError::NotApiActivity(format!("category {}", category.unwrap_or_default())));
    }
    let time_s = rec.event_timestamp.get().or(rec.time.get()).ok_or(NormalizeError::Missing("eventTimestamp"))?;
    let op = rec.operation_name.get().ok_or(NormalizeError::Missing("operationName"))?;
    let status_s = rec.status.get().or(rec.result_type.get()).ok_or(NormalizeError::Missing("status"))?;
    let status = match outcome(status_s) {
        Outcome::Success => Status::Success,
        Outcome::Failure => Status::Failure,
        Outcome::NotFinal => return Err(NormalizeError::NotApiActivity(status_s.to_string())),
    };
    let time = parse_time(time_s).ok_or_else(|| NormalizeError::BadTime(time_s.to_string()))?;

    let identity: RawIdentity<'_> = object(rec.identity);
    let claims = rec.claims.as_ref().or(identity.claims.as_ref());
    let authorization = rec.authorization.as_ref().or(identity.authorization.as_ref());
    let resource = rec.resource_id.get().or(authorization.and_then(|a| a.scope.get()));
    let sub = rec.subscription_id.get().map(lower).or_else(|| resource.and_then(subscription_of));
    let account = sub.clone().unwrap_or_else(|| UNKNOWN.to_string());

    // The catalog's spelling when it knows the operation (the export upper-cases it).
    let known = catalog.lookup(op).filter(|id| catalog.cloud_of(*id) == Cloud::Azure);
    let (actions, mapping) = match known {
        Some(id) => (vec![catalog.name(id).to_string()], ActionMapping::Direct),
        None => (Vec::new(), ActionMapping::Unmapped),
    };
    let service = match known {
        Some(id) => namespace(catalog.name(id)).to_string(),
        None => rec.resource_provider.get().unwrap_or_else(|| namespace(op)).to_string(),
    };

    let uid = match rec.event_data_id.get() {
        Some(id) => id.to_string(),
        None => {
            // The export has no event id; these fields tell one record of an operation from another.
            let parts = [
                rec.correlation_id.get().unwrap_or_default(),
                op,
                time_s,
                status_s,
                rec.resource_id.get().unwrap_or_default(),
            ];
            format!("azure-{:032x}", xxhash_rust::xxh3::xxh3_128(parts.join("\u{1f}").as_bytes()))
        }
    };

    let actor = activity_actor(claims, rec.caller.get(), sub.as_deref());
    let read_only = op.to_ascii_lowercase().ends_with("/read");
    let lower_op = op.to_ascii_lowercase();
    // `/action` operations may answer with credentials (`listKeys/action`, `listCredentials/action`)
    // under keys the redactor cannot know (`value`): only writes and deletes keep their response.
    let keeps_response = lower_op.ends_with("/write") || lower_op.ends_with("/delete");
    let request = if read_only { None } else { body(props.request_body.or(props.request_body_camel)) };
    let response = if keeps_response { body(props.response_body) } else { None };

    let (status_code, error_message) = match status {
        Status::Success => (None, None),
        Status::Failure => failure_detail(&props, rec.sub_status.get(), rec.result_signature.get()),
    };
    let tenant = rec.tenant_id.get().or(claims.and_then(|c| c.tid_uri.get().or(c.tid.get())));
    let additional = activity_additional(category, props.message.get(), authorization, tenant);
    Ok(Event {
        uid,
        time,
        cloud: Cloud::Azure,
        account_uid: account,
        region: rec.location.get().unwrap_or(GLOBAL).to_string(),
        actor,
        api: Api { service, operation: op.to_string() },
        actions,
        mapping,
        resources: resource.map(|r| vec![r.to_string()]).unwrap_or_default(),
        status,
        status_code,
        src_ip: rec
            .http_request
            .as_ref()
            .and_then(|h| h.client_ip.get())
            .or(rec.caller_ip.get())
            .or(claims.and_then(|c| c.ipaddr.get()))
            .map(str::to_string),
        user_agent: None,
        read_only: Some(read_only),
        request,
        response,
        additional,
        error_message,
    })
}

/// `Microsoft.Storage/storageAccounts/write` → `Microsoft.Storage`.
fn namespace(op: &str) -> &str {
    op.split('/').next().unwrap_or(op)
}

/// The caller: the token's object id (`oid`) names the principal, so its uid is the one the
/// entitlements give it in this subscription.
fn activity_actor(claims: Option<&RawClaims<'_>>, caller: Option<&str>, sub: Option<&str>) -> Actor {
    let oid = claims.and_then(RawClaims::oid).map(lower);
    let upn = claims.and_then(RawClaims::upn);
    let kind = match claims {
        Some(c) if c.upn().is_some() || c.idtyp.get().is_some_and(|t| t.eq_ignore_ascii_case("user")) => {
            IdentityKind::User
        }
        Some(c) if c.appid.get().is_some() || oid.is_some() => IdentityKind::ServiceAccount,
        _ => IdentityKind::External,
    };
    // Without claims the caller (a UPN, an object id, or a service name) is all there is.
    let principal = oid.clone().or_else(|| caller.map(lower)).unwrap_or_else(|| UNKNOWN.to_string());
    let mfa =
        claims.and_then(|c| c.amr_uri.get()).map(|amr| amr.split([',', ' ']).any(|m| m.eq_ignore_ascii_case("mfa")));
    Actor {
        human: None,
        uid: identity_uid(sub.unwrap_or(UNKNOWN), &principal),
        kind,
        name: upn.or(caller).map(str::to_string),
        account_uid: sub.map(str::to_string),
        session_name: None,
        principal_id: oid,
        access_key_id: None,
        invoked_by: None,
        mfa_authenticated: mfa,
        on_behalf_of: None,
    }
}

fn identity_uid(sub: &str, principal: &str) -> String {
    super::entitlements::identity_uid(sub, principal)
}

/// A request or response body: the Activity Log keeps it as a string holding JSON (sometimes as JSON
/// itself). Kept when it is JSON of at most [`RAW_DETAIL_MAX`] bytes, with secret-looking values redacted.
fn body(raw: Option<&RawValue>) -> Option<RawJson> {
    let raw = raw?.get();
    let text: Cow<'_, str> =
        if raw.starts_with('"') { Cow::Owned(serde_json::from_str::<String>(raw).ok()?) } else { Cow::Borrowed(raw) };
    let text = text.trim();
    if text.is_empty() || text == "null" || text.len() > RAW_DETAIL_MAX {
        return None;
    }
    let redacted = redact::redact_json_str(text);
    if redacted.len() > RAW_DETAIL_MAX {
        return None;
    }
    // Not JSON (a truncated body): nothing a rule could read.
    RawJson::from_text(&redacted)
}

/// The error code and message of a failed operation: `properties.statusMessage`'s `error.code` /
/// `error.message` when it has them (`AuthorizationFailed`), else the sub-status (`Forbidden`) or the
/// second part of `resultSignature` (`Failed.Forbidden`).
fn failure_detail(
    props: &RawProperties<'_>,
    sub_status: Option<&str>,
    result_signature: Option<&str>,
) -> (Option<String>, Option<String>) {
    #[derive(Deserialize, Default)]
    struct ErrorBody {
        #[serde(default)]
        error: Option<ErrorInner>,
    }
    #[derive(Deserialize, Default)]
    struct ErrorInner {
        #[serde(default)]
        code: Option<String>,
        #[serde(default)]
        message: Option<String>,
    }
    let parsed: ErrorBody =
        props.status_message.get().and_then(|m| serde_json::from_str::<ErrorBody>(m).ok()).unwrap_or_default();
    let inner = parsed.error.unwrap_or_default();
    let signature = result_signature.map(|s| s.split_once('.').map_or(s, |(_, tail)| tail)).filter(|s| !s.is_empty());
    let code = inner
        .code
        .filter(|c| !c.is_empty())
        .or(sub_status.map(str::to_string))
        .or(signature.map(str::to_string))
        .or(props.status_code.owned());
    let message = inner.message.or(props.status_message.owned()).map(|m| cut_str(&m, ERROR_MESSAGE_MAX).to_string());
    (code, message)
}

/// What detection reads beyond the event's fields: the category, `properties.message`, which role
/// assignment authorized the call (`authorization.evidence`: role, assignment id and scope, principal),
/// and the tenant (sign-in events are accounted to it).
fn activity_additional(
    category: Option<&str>,
    message: Option<&str>,
    authorization: Option<&RawAuthorization<'_>>,
    tenant: Option<&str>,
) -> Option<RawJson> {
    let mut map = serde_json::Map::new();
    if let Some(t) = tenant {
        map.insert("tenantId".to_string(), lower(t).into());
    }
    if let Some(c) = category {
        map.insert("category".to_string(), c.into());
    }
    if let Some(m) = message {
        map.insert("message".to_string(), cut_str(m, ERROR_MESSAGE_MAX).into());
    }
    if let Some(a) = authorization {
        if let Some(action) = a.action.get() {
            map.insert("authorizationAction".to_string(), action.into());
        }
        if let Some(e) = a.evidence.filter(|e| e.get().len() <= RAW_DETAIL_MAX / 4)
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(e.get())
            && v.is_object()
        {
            map.insert("evidence".to_string(), v);
        }
    }
    if map.is_empty() {
        return None;
    }
    let text = serde_json::Value::Object(map).to_string();
    RawJson::from_text(&redact::redact_json_str(&text))
}

#[derive(Deserialize, Default)]
struct RawSignInStatus<'a> {
    #[serde(rename = "errorCode", borrow, default)]
    error_code: Str<'a>,
    #[serde(rename = "failureReason", borrow, default)]
    failure_reason: Str<'a>,
}

#[derive(Deserialize, Default)]
struct RawMfaDetail<'a> {
    #[serde(rename = "authMethod", borrow, default)]
    auth_method: Str<'a>,
}

#[derive(Deserialize, Default)]
struct RawAuthDetail<'a> {
    #[serde(rename = "authenticationMethod", borrow, default)]
    method: Str<'a>,
    #[serde(default)]
    succeeded: Flag,
    #[serde(rename = "authenticationStepRequirement", borrow, default)]
    step_requirement: Str<'a>,
    #[serde(rename = "authenticationStepResultDetail", borrow, default)]
    result_detail: Str<'a>,
}

#[derive(Deserialize, Default)]
struct RawLocation<'a> {
    #[serde(borrow, default)]
    city: Str<'a>,
    #[serde(rename = "countryOrRegion", borrow, default)]
    country: Str<'a>,
}

/// A sign-in record (Graph `signIn`, or the export's `properties`).
#[derive(Deserialize, Default)]
struct RawSignIn<'a> {
    #[serde(borrow, default)]
    id: Str<'a>,
    #[serde(rename = "createdDateTime", borrow, default)]
    created: Str<'a>,
    #[serde(rename = "userPrincipalName", borrow, default)]
    upn: Str<'a>,
    #[serde(rename = "userId", borrow, default)]
    user_id: Str<'a>,
    #[serde(rename = "servicePrincipalId", borrow, default)]
    sp_id: Str<'a>,
    #[serde(rename = "servicePrincipalName", borrow, default)]
    sp_name: Str<'a>,
    #[serde(rename = "appId", borrow, default)]
    app_id: Str<'a>,
    #[serde(rename = "appDisplayName", borrow, default)]
    app_display_name: Str<'a>,
    #[serde(rename = "resourceDisplayName", borrow, default)]
    resource_display_name: Str<'a>,
    #[serde(rename = "ipAddress", borrow, default)]
    ip: Str<'a>,
    #[serde(rename = "clientAppUsed", borrow, default)]
    client_app: Str<'a>,
    #[serde(rename = "userAgent", borrow, default)]
    user_agent: Str<'a>,
    #[serde(rename = "conditionalAccessStatus", borrow, default)]
    conditional_access: Str<'a>,
    #[serde(rename = "isInteractive", default)]
    interactive: Flag,
    #[serde(rename = "riskLevelDuringSignIn", borrow, default)]
    risk_level: Str<'a>,
    #[serde(rename = "riskState", borrow, default)]
    risk_state: Str<'a>,
    #[serde(rename = "authenticationRequirement", borrow, default)]
    auth_requirement: Str<'a>,
    #[serde(borrow, default)]
    status: Option<RawSignInStatus<'a>>,
    #[serde(rename = "mfaDetail", borrow, default)]
    mfa_detail: Option<RawMfaDetail<'a>>,
    #[serde(rename = "authenticationDetails", borrow, default)]
    auth_details: List<RawAuthDetail<'a>>,
    #[serde(borrow, default)]
    location: Option<RawLocation<'a>>,
    #[serde(rename = "homeTenantId", borrow, default)]
    home_tenant_id: Str<'a>,
    #[serde(rename = "resourceTenantId", borrow, default)]
    resource_tenant_id: Str<'a>,
    #[serde(rename = "tenantId", borrow, default)]
    tenant_id: Str<'a>,
    #[serde(rename = "correlationId", borrow, default)]
    correlation_id: Str<'a>,
}

/// The diagnostic export's envelope around a sign-in.
#[derive(Deserialize, Default)]
struct RawSignInEnvelope<'a> {
    #[serde(borrow, default)]
    category: Str<'a>,
    #[serde(borrow, default)]
    time: Str<'a>,
    #[serde(rename = "tenantId", borrow, default)]
    tenant_id: Str<'a>,
    #[serde(rename = "resultType", borrow, default)]
    result_type: Str<'a>,
    #[serde(rename = "resultDescription", borrow, default)]
    result_description: Str<'a>,
    #[serde(rename = "callerIpAddress", borrow, default)]
    caller_ip: Str<'a>,
    #[serde(rename = "correlationId", borrow, default)]
    correlation_id: Str<'a>,
    #[serde(rename = "resourceId", borrow, default)]
    resource_id: Str<'a>,
    #[serde(borrow, default)]
    properties: Option<&'a RawValue>,
}

const SIGNIN_CATEGORIES: &[&str] =
    &["SignInLogs", "NonInteractiveUserSignInLogs", "ServicePrincipalSignInLogs", "ManagedIdentitySignInLogs"];

/// `/tenants/{id}/providers/Microsoft.aadiam` → `id`, lower-case.
fn tenant_of(resource_id: &str) -> Option<String> {
    let mut parts = resource_id.split('/').filter(|s| !s.is_empty());
    if !parts.next()?.eq_ignore_ascii_case("tenants") {
        return None;
    }
    parts.next().map(lower)
}

/// Whether the sign-in satisfied MFA: `Some(true)` when a multi-factor step succeeded (or an earlier one
/// was reused: "MFA requirement satisfied by claim in the token"), `Some(false)` when the record says
/// single-factor and shows none, `None` when it does not say.
fn mfa_satisfied(s: &RawSignIn<'_>, success: bool) -> Option<bool> {
    let step = s.auth_details.0.iter().any(|d| {
        d.succeeded.0 != Some(false)
            && (d.step_requirement.get().is_some_and(|r| r.to_ascii_lowercase().contains("multi"))
                || d.result_detail.get().is_some_and(|r| r.contains("MFA"))
                || d.method.get().is_some_and(|m| m.eq_ignore_ascii_case("Previously satisfied")))
    });
    let mfa_detail = s.mfa_detail.as_ref().is_some_and(|m| m.auth_method.get().is_some());
    let requirement = s.auth_requirement.get().map(str::to_ascii_lowercase);
    match requirement.as_deref() {
        _ if step || mfa_detail => Some(success),
        Some("multifactorauthentication") => Some(success),
        Some("singlefactorauthentication") => Some(false),
        _ => None,
    }
}

/// Normalizes one Entra ID sign-in record (Graph `signIn`, or the diagnostic export; see the module
/// documentation). Required: an id (`id`, else the export's `correlationId`), a time
/// (`createdDateTime` or `time`), a principal (`userId` or `servicePrincipalId`).
pub fn normalize_signin(raw: &[u8]) -> Result<Event, NormalizeError> {
    require_object(raw, "a sign-in record")?;
    let env: RawSignInEnvelope<'_> = serde_json::from_slice(raw).map_err(|e| NormalizeError::Json(e.to_string()))?;
    let exported = env.properties.is_some_and(|p| p.get().trim_start().starts_with('{'))
        && env.category.get().is_some_and(|c| SIGNIN_CATEGORIES.iter().any(|k| k.eq_ignore_ascii_case(c)));
    if let Some(c) = env.category.get()
        && !exported
        && !SIGNIN_CATEGORIES.iter().any(|k| k.eq_ignore_ascii_case(c))
    {
        return Err(NormalizeError::NotApiActivity(format!("category {c}")));
    }
    let s: RawSignIn<'_> = if exported {
        let props = env.properties.map(RawValue::get).unwrap_or("{}");
        serde_json::from_str(props).map_err(|e| NormalizeError::Json(format!("properties: {e}")))?
    } else {
        serde_json::from_slice(raw).map_err(|e| NormalizeError::Json(e.to_string()))?
    };
    let uid =
        s.id.get().or(env.correlation_id.get()).or(s.correlation_id.get()).ok_or(NormalizeError::Missing("id"))?;
    let time_s = s.created.get().or(env.time.get()).ok_or(NormalizeError::Missing("createdDateTime"))?;
    let time: EventTime = parse_time(time_s).ok_or_else(|| NormalizeError::BadTime(time_s.to_string()))?;
    let service_principal = s.user_id.get().is_none() && s.sp_id.get().is_some();
    let principal = s.user_id.get().or(s.sp_id.get()).map(lower).ok_or(NormalizeError::Missing("userId"))?;
    let tenant = env
        .tenant_id
        .get()
        .or(s.tenant_id.get())
        .or(s.resource_tenant_id.get())
        .or(s.home_tenant_id.get())
        .map(lower)
        .or_else(|| env.resource_id.get().and_then(tenant_of))
        .unwrap_or_else(|| UNKNOWN.to_string());

    let code = s.status.as_ref().and_then(|st| st.error_code.get()).or(env.result_type.get());
    let success = code.is_none_or(|c| c == "0");
    let status_code = if success { None } else { code.map(str::to_string) };
    let error_message = if success {
        None
    } else {
        s.status
            .as_ref()
            .and_then(|st| st.failure_reason.get())
            .or(env.result_description.get())
            .map(|m| cut_str(m, ERROR_MESSAGE_MAX).to_string())
    };
    let mfa = if service_principal { None } else { mfa_satisfied(&s, success) };

    let mut add = serde_json::Map::new();
    let mut put = |k: &str, v: Option<&str>| {
        if let Some(v) = v {
            add.insert(k.to_string(), cut_str(v, 512).into());
        }
    };
    put("authenticationRequirement", s.auth_requirement.get());
    put("mfaMethod", s.mfa_detail.as_ref().and_then(|m| m.auth_method.get()));
    put("appId", s.app_id.get());
    put("appDisplayName", s.app_display_name.get());
    put("resourceDisplayName", s.resource_display_name.get());
    put("clientAppUsed", s.client_app.get());
    put("conditionalAccessStatus", s.conditional_access.get());
    put("riskLevelDuringSignIn", s.risk_level.get());
    put("riskState", s.risk_state.get());
    put("city", s.location.as_ref().and_then(|l| l.city.get()));
    put("countryOrRegion", s.location.as_ref().and_then(|l| l.country.get()));
    if let Some(m) = mfa {
        add.insert("mfaSatisfied".to_string(), m.into());
    }
    if let Some(i) = s.interactive.0 {
        add.insert("isInteractive".to_string(), i.into());
    }
    let additional = RawJson::from_text(&serde_json::Value::Object(add).to_string());

    let name = if service_principal { s.sp_name.get().or(s.app_display_name.get()) } else { s.upn.get() };
    Ok(Event {
        uid: uid.to_string(),
        time,
        cloud: Cloud::Azure,
        account_uid: tenant.clone(),
        region: GLOBAL.to_string(),
        actor: Actor {
            human: None,
            uid: format!("azure:/tenants/{tenant}/principals/{principal}"),
            kind: if service_principal { IdentityKind::ServiceAccount } else { IdentityKind::User },
            name: name.map(str::to_string),
            account_uid: Some(tenant),
            session_name: None,
            principal_id: Some(principal),
            access_key_id: None,
            invoked_by: None,
            mfa_authenticated: mfa,
            on_behalf_of: None,
        },
        api: Api { service: SIGNIN_SERVICE.to_string(), operation: SIGNIN_OPERATION.to_string() },
        actions: Vec::new(),
        mapping: ActionMapping::NoPermission,
        resources: Vec::new(),
        status: if success { Status::Success } else { Status::Failure },
        status_code,
        src_ip: s.ip.get().or(env.caller_ip.get()).map(str::to_string),
        user_agent: s.user_agent.get().map(str::to_string),
        read_only: None,
        request: None,
        response: None,
        additional,
        error_message,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use super::*;

    const S1: &str = "11111111-1111-4111-8111-111111111111";
    const S2: &str = "22222222-2222-4222-8222-222222222222";
    const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

    fn catalog() -> &'static Catalog {
        static C: OnceLock<Catalog> = OnceLock::new();
        C.get_or_init(|| Catalog::all_clouds().unwrap())
    }

    /// The records of a JSON array fixture, as the bytes a reader would hand over.
    fn list(text: &str) -> Vec<String> {
        let v: Vec<&RawValue> = serde_json::from_str(text).unwrap();
        v.into_iter().map(|r| r.get().to_string()).collect()
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.trim().is_empty()).collect()
    }

    fn act(raw: &str) -> Result<Event, NormalizeError> {
        normalize_activity(raw.as_bytes(), catalog())
    }

    #[test]
    fn list_shape_started_then_succeeded_is_one_event() {
        let recs = list(include_str!("testdata/activity_list.json"));
        assert_eq!(act(&recs[0]).unwrap_err(), NormalizeError::NotApiActivity("Started".to_string()));
        let e = act(&recs[1]).unwrap();
        assert_eq!(e.uid, "e0e0e0e0-0000-4000-8000-000000000002");
        assert_eq!(e.time, EventTime::parse_rfc3339("2024-05-02T10:16:02.765Z").unwrap());
        assert_eq!((e.cloud, e.account_uid.as_str(), e.region.as_str()), (Cloud::Azure, S1, GLOBAL));
        assert_eq!(e.actor.uid, format!("azure:/subscriptions/{S1}/principals/1a1a1a1a-0000-4000-8000-000000000001"));
        assert_eq!((e.actor.kind, e.actor.name.as_deref()), (IdentityKind::User, Some("alice@contoso.com")));
        assert_eq!(e.actor.mfa_authenticated, Some(true));
        assert_eq!(e.api.service, "Microsoft.Compute");
        assert_eq!(e.api.operation, "Microsoft.Compute/virtualMachines/write");
        assert_eq!(
            (e.actions.as_slice(), e.mapping),
            (&["Microsoft.Compute/virtualMachines/write".to_string()][..], ActionMapping::Direct)
        );
        assert_eq!(
            e.resources,
            [format!("/subscriptions/{S1}/resourceGroups/rg-app/providers/Microsoft.Compute/virtualMachines/vm-web-1")]
        );
        assert_eq!((e.status, e.status_code.as_deref()), (Status::Success, None));
        assert_eq!(e.src_ip.as_deref(), Some("203.0.113.10"));
        assert_eq!(e.read_only, Some(false));
        // The request is kept for a write, without the VM's admin password.
        let req = e.request.as_ref().and_then(RawJson::parse).unwrap();
        assert_eq!(req["properties"]["osProfile"]["adminUsername"], "azureuser");
        assert_eq!(req["properties"]["osProfile"]["adminPassword"], redact::REDACTED);
        assert!(!serde_json::to_string(&e).unwrap().contains("S3cret-Passw0rd!"));
        assert_eq!(e.response.as_ref().and_then(RawJson::parse).unwrap()["name"], "vm-web-1");
        let add = e.additional.as_ref().and_then(RawJson::parse).unwrap();
        assert_eq!(
            (add["category"].as_str(), add["message"].as_str()),
            (Some("Administrative"), Some("Microsoft.Compute/virtualMachines/write"))
        );
    }

    #[test]
    fn failures_carry_the_error_code_and_message() {
        let recs = list(include_str!("testdata/activity_list.json"));
        let e = act(&recs[2]).unwrap();
        assert_eq!(e.status, Status::Failure);
        assert_eq!(e.status_code.as_deref(), Some("AuthorizationFailed"));
        assert!(e.error_message.as_deref().unwrap().contains("does not have authorization"));
        assert_eq!(e.actions, ["Microsoft.Authorization/roleAssignments/write"]);
        assert_eq!(e.actor.mfa_authenticated, Some(false));
    }

    #[test]
    fn managed_identity_key_listing_keeps_no_response() {
        let recs = list(include_str!("testdata/activity_list.json"));
        let e = act(&recs[3]).unwrap();
        assert_eq!(e.actor.kind, IdentityKind::ServiceAccount);
        assert_eq!(e.actor.uid, format!("azure:/subscriptions/{S1}/principals/5e5e5e5e-0000-4000-8000-00000000e001"));
        assert_eq!(e.actions, ["Microsoft.Storage/storageAccounts/listKeys/action"]);
        assert!(e.response.is_none(), "an /action's response may be credentials");
        assert!(!serde_json::to_string(&e).unwrap().contains("c2VjcmV0"));
        // Health events are not calls.
        assert_eq!(act(&recs[4]).unwrap_err(), NormalizeError::NotApiActivity("category ResourceHealth".to_string()));
    }

    #[test]
    fn export_shape_from_upper_case_ids() {
        let recs = lines(include_str!("testdata/activity_export.jsonl"));
        assert_eq!(act(recs[0]).unwrap_err(), NormalizeError::NotApiActivity("Start".to_string()));
        let e = act(recs[1]).unwrap();
        assert_eq!(e.account_uid, S2, "from the upper-cased resourceId");
        assert_eq!(e.actions, ["Microsoft.Network/networkSecurityGroups/write"], "catalog spelling");
        assert_eq!(e.mapping, ActionMapping::Direct);
        assert_eq!(e.api.service, "Microsoft.Network");
        assert_eq!(e.api.operation, "MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/WRITE", "as recorded, for Sigma");
        assert_eq!(e.actor.uid, format!("azure:/subscriptions/{S2}/principals/1a1a1a1a-0000-4000-8000-000000000003"));
        assert_eq!(e.actor.name.as_deref(), Some("carol@fabrikam.com"));
        assert_eq!(e.src_ip.as_deref(), Some("203.0.113.20"));
        assert!(e.uid.starts_with("azure-") && e.uid.len() == 6 + 32, "{}", e.uid);
        // Stable, and different for another record of the same operation.
        assert_eq!(act(recs[1]).unwrap().uid, e.uid);
        let other = recs[1].replace("2024-05-03T08:00:04.5000000Z", "2024-05-03T08:00:05.5000000Z");
        assert_ne!(act(&other).unwrap().uid, e.uid);
        let add = e.additional.as_ref().and_then(RawJson::parse).unwrap();
        assert_eq!(add["evidence"]["role"], "Network Contributor");
    }

    #[test]
    fn unknown_operations_are_unmapped_not_dropped() {
        let recs = lines(include_str!("testdata/activity_export.jsonl"));
        let e = act(recs[2]).unwrap();
        assert_eq!((e.actions.len(), e.mapping), (0, ActionMapping::Unmapped));
        assert_eq!(e.api.service, "CONTOSO.WIDGETS");
        assert_eq!((e.status, e.status_code.as_deref()), (Status::Failure, Some("Conflict")));
        assert_eq!(e.actor.kind, IdentityKind::ServiceAccount);
        assert_eq!(e.actor.uid, format!("azure:/subscriptions/{S2}/principals/5e5e5e5e-0000-4000-8000-00000000e002"));
    }

    #[test]
    fn malformed_activity_records_name_the_problem() {
        assert!(matches!(act("[1]"), Err(NormalizeError::Json(_))));
        assert!(matches!(act("{\"time\": "), Err(NormalizeError::Json(_))));
        assert_eq!(act("{}").unwrap_err(), NormalizeError::Missing("eventTimestamp"));
        assert_eq!(act(r#"{"time":"2024-01-01T00:00:00Z"}"#).unwrap_err(), NormalizeError::Missing("operationName"));
        assert_eq!(
            act(r#"{"time":"2024-01-01T00:00:00Z","operationName":"Microsoft.Storage/storageAccounts/write"}"#)
                .unwrap_err(),
            NormalizeError::Missing("status")
        );
        let bad_time = r#"{"time":"last tuesday","operationName":"x/y/write","resultType":"Success"}"#;
        assert_eq!(act(bad_time).unwrap_err(), NormalizeError::BadTime("last tuesday".to_string()));
        // Wrong types read as absent rather than failing the record.
        let odd = r#"{"time":"2024-01-01T00:00:00Z","operationName":"Microsoft.Storage/storageAccounts/write","resultType":"Success",
            "resourceId":42,"identity":"someone","properties":"text","subscriptionId":["x"]}"#;
        let e = act(odd).unwrap();
        assert_eq!((e.account_uid.as_str(), e.actor.kind), (UNKNOWN, IdentityKind::External));
    }

    #[test]
    fn graph_sign_ins_with_and_without_mfa() {
        let recs = list(
            &serde_json::from_str::<serde_json::Value>(include_str!("testdata/signins_graph.json")).unwrap()["value"]
                .to_string(),
        );
        let alice = normalize_signin(recs[0].as_bytes()).unwrap();
        assert_eq!(alice.uid, "66ea54eb-6301-4ee5-be62-ff5a759b0100");
        assert_eq!((alice.api.service.as_str(), alice.api.operation.as_str()), (SIGNIN_SERVICE, SIGNIN_OPERATION));
        assert_eq!((alice.mapping, alice.actions.len()), (ActionMapping::NoPermission, 0));
        assert_eq!(alice.status, Status::Success);
        assert_eq!(alice.actor.mfa_authenticated, Some(true));
        assert_eq!(alice.actor.name.as_deref(), Some("alice@contoso.com"));
        let add = alice.additional.as_ref().and_then(RawJson::parse).unwrap();
        assert_eq!(
            (add["mfaSatisfied"].as_bool(), add["mfaMethod"].as_str()),
            (Some(true), Some("Mobile app notification"))
        );
        assert_eq!(add["appDisplayName"], "Azure Portal");
        // Graph v1.0 sign-ins name no tenant.
        assert_eq!(alice.account_uid, UNKNOWN);

        let bob = normalize_signin(recs[1].as_bytes()).unwrap();
        assert_eq!((bob.status, bob.actor.mfa_authenticated), (Status::Success, Some(false)));
        let add = bob.additional.as_ref().and_then(RawJson::parse).unwrap();
        assert_eq!((add["mfaSatisfied"].as_bool(), add["countryOrRegion"].as_str()), (Some(false), Some("NG")));

        let failed = normalize_signin(recs[2].as_bytes()).unwrap();
        assert_eq!((failed.status, failed.status_code.as_deref()), (Status::Failure, Some("50126")));
        assert!(failed.error_message.as_deref().unwrap().contains("invalid username or password"));
    }

    #[test]
    fn exported_sign_ins() {
        let recs = lines(include_str!("testdata/signins_export.jsonl"));
        let carol = normalize_signin(recs[0].as_bytes()).unwrap();
        assert_eq!(carol.uid, "77ea54eb-6301-4ee5-be62-ff5a759b0400");
        assert_eq!(carol.account_uid, TENANT);
        assert_eq!(carol.actor.uid, format!("azure:/tenants/{TENANT}/principals/1a1a1a1a-0000-4000-8000-000000000003"));
        assert_eq!((carol.actor.kind, carol.actor.mfa_authenticated), (IdentityKind::User, Some(true)));
        assert_eq!(carol.src_ip.as_deref(), Some("203.0.113.30"));
        let bot = normalize_signin(recs[1].as_bytes()).unwrap();
        assert_eq!((bot.actor.kind, bot.actor.name.as_deref()), (IdentityKind::ServiceAccount, Some("deploy-bot")));
        assert_eq!((bot.status, bot.status_code.as_deref()), (Status::Failure, Some("7000215")));
        assert_eq!(bot.actor.mfa_authenticated, None);
        assert_eq!(
            normalize_signin(recs[2].as_bytes()).unwrap_err(),
            NormalizeError::NotApiActivity("category AuditLogs".to_string())
        );
    }

    #[test]
    fn cut_or_corrupted_records_never_panic() {
        let mut records = list(include_str!("testdata/activity_list.json"));
        records.extend(lines(include_str!("testdata/activity_export.jsonl")).into_iter().map(str::to_string));
        records.extend(lines(include_str!("testdata/signins_export.jsonl")).into_iter().map(str::to_string));
        for rec in &records {
            let bytes = rec.as_bytes();
            for cut in (0..bytes.len()).step_by(11) {
                let _ = normalize_activity(&bytes[..cut], catalog());
                let _ = normalize_signin(&bytes[..cut]);
                let mut flipped = bytes.to_vec();
                flipped[cut] = b"{}[],:\"0"[cut % 8];
                let _ = normalize_activity(&flipped, catalog());
                let _ = normalize_signin(&flipped);
            }
        }
    }

    #[test]
    fn malformed_sign_ins_name_the_problem() {
        assert!(matches!(normalize_signin(b"[]"), Err(NormalizeError::Json(_))));
        assert_eq!(normalize_signin(b"{}").unwrap_err(), NormalizeError::Missing("id"));
        assert_eq!(
            normalize_signin(br#"{"id":"x","createdDateTime":"2024-01-01T00:00:00Z"}"#).unwrap_err(),
            NormalizeError::Missing("userId")
        );
        assert_eq!(
            normalize_signin(br#"{"id":"x","createdDateTime":"soon","userId":"u"}"#).unwrap_err(),
            NormalizeError::BadTime("soon".to_string())
        );
    }
}
