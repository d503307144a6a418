//! One Cloud Audit Log `LogEntry` (JSON bytes) to one [`Event`].
//!
//! Accepts the entries of `gcloud logging read --format=json` (array elements) and of log sinks (JSON Lines
//! to Cloud Storage, BigQuery exports re-serialized as JSON, Pub/Sub messages' data). Only the fields it needs
//! are deserialized, borrowed from the input; `request`, `response` and `authorizationInfo` stay raw text.
//!
//! * **Which entries.** `protoPayload` with `@type: type.googleapis.com/google.cloud.audit.AuditLog`; or with no
//!   `@type` when the log is an audit log (`logName` contains `cloudaudit.googleapis.com`: older exports and the
//!   BigQuery `jobservice` entries drop the type). Anything else (no `protoPayload`, `jsonPayload` and
//!   `textPayload` entries, other payload types) is [`NormalizeError::NotApiActivity`]: skipped and counted.
//! * **uid** = `{logName}/{insertId}`: Logging treats entries as duplicates when log, timestamp and insertId
//!   agree; insertId alone is unique only within one log, so the log name keeps two projects' entries apart.
//!   The timestamp is left out: a re-delivered entry keeps it, and insertIds are generated per entry.
//! * **account** = `resource.labels.project_id`, else the log's parent (`projects/P` → `P`;
//!   `organizations/O/logs/...` → `organizations/O`, `folders/F` likewise).
//! * **region** = `resource.labels.location`, `region`, or the region of `zone` (`us-central1-a` →
//!   `us-central1`); else `global`.
//! * **actor** = `authenticationInfo.principalEmail` (lowercased), else `principalSubject`: uid
//!   `gcp:projects/{project}/serviceAccount:{email}` when the email ends in `.gserviceaccount.com` (kind
//!   ServiceAccount), else `.../user:{email}` (User); a `principal://` subject keeps its member spelling (workforce
//!   pools External, workload pools ServiceAccount). Entries with no principal (system events) are made by
//!   Google: uid `gcp:service:{serviceName}`, kind Service. `access_key_id` = the id of
//!   `serviceAccountKeyName`; `on_behalf_of` = the first (original) principal of `serviceAccountDelegationInfo`,
//!   who impersonated the service account; `principal_id` = `principalSubject`.
//! * **actions**: the distinct `authorizationInfo[].permission` values the catalog knows (mapping `Direct`);
//!   else (no authorizationInfo, or none known) the methodName table `data/gcp/audit-method-permissions.json.gz`
//!   (`tools/vendor_gcp_data.py`), a methodName that is itself a permission (`storage.objects.get`), the
//!   versioned Compute spelling (`v1.compute.instances.insert` → `compute.instances.create`), and
//!   `SetIamPolicy`/`GetIamPolicy` on a project, folder or organization (mapping `Exception`);
//!   `testIamPermissions` needs no permission (`NoPermission`); else `Unmapped`.
//! * **status**: `Failure` when `status.code` is not 0, with the canonical code name (`7` → `PERMISSION_DENIED`)
//!   and `status.message` (cut to [`ERROR_MESSAGE_MAX`]).
//! * **read_only**: from the permissions' verbs (`get*`, `list*`, `search*`, `read*`...), else the methodName's
//!   verb; Admin Activity and System Event entries are never reads; a Data Access entry of unknown verb is a read
//!   (Data Access also logs DATA_WRITE, hence the verbs first).
//! * **request / response**: for entries that are not reads, redacted ([`crate::cloudtrail::redact`]) and
//!   bounded by [`RAW_DETAIL_MAX`]. **additional**: for the same entries, `{"logName", "resource": {"type"},
//!   "authorizationInfo"}` (Sigma rules read `authorizationInfo.granted`, `logName` and `resource.type`).

use std::borrow::Cow;
use std::fmt;
use std::io::Read;
use std::sync::Arc;

use grantwatch_types::{
    ActionMapping, Actor, Api, Cloud, ERROR_MESSAGE_MAX, Event, EventTime, IdentityKind, RAW_DETAIL_MAX, RawJson,
    Status, cut_str,
};
use rustc_hash::FxHashMap;
use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::member::{MemberKind, is_service_account_email, parse_member};
use crate::catalog::{ActionId, Catalog};
use crate::cloudtrail::{NormalizeError, redact};

/// The vendored audit methodName → permission table (gzip JSON, `{"services": {service: {method: permission}}}`).
pub const AUDIT_METHODS_GZ: &[u8] = include_bytes!("../../../../data/gcp/audit-method-permissions.json.gz");

/// The `@type` of an audit log payload.
pub const AUDIT_LOG_TYPE: &str = "type.googleapis.com/google.cloud.audit.AuditLog";

/// Why the methodName table could not be loaded (a build defect: the table is compiled in).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("GCP audit methodName table unreadable: {0}")]
pub struct AuditTableError(String);

/// Normalizes Cloud Audit Log entries against a catalog holding the GCP permissions.
pub struct GcpNormalizer {
    catalog: Arc<Catalog>,
    /// serviceName → methodName → permission.
    methods: FxHashMap<Box<str>, FxHashMap<Box<str>, ActionId>>,
}

impl fmt::Debug for GcpNormalizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GcpNormalizer({} services in the methodName table)", self.methods.len())
    }
}

impl GcpNormalizer {
    /// `catalog` must hold the GCP permissions ([`Catalog::all_clouds`]); table entries whose permission it
    /// does not know are dropped.
    pub fn new(catalog: Arc<Catalog>) -> Result<GcpNormalizer, AuditTableError> {
        let mut text = String::new();
        flate2::read::GzDecoder::new(AUDIT_METHODS_GZ)
            .read_to_string(&mut text)
            .map_err(|e| AuditTableError(e.to_string()))?;
        #[derive(Deserialize)]
        struct Table {
            services: FxHashMap<String, FxHashMap<String, String>>,
        }
        let table: Table = serde_json::from_str(&text).map_err(|e| AuditTableError(e.to_string()))?;
        let mut methods: FxHashMap<Box<str>, FxHashMap<Box<str>, ActionId>> = FxHashMap::default();
        for (service, ms) in table.services {
            let mut out = FxHashMap::default();
            for (method, perm) in ms {
                if let Some(id) = gcp_permission(&catalog, &perm) {
                    out.insert(method.into_boxed_str(), id);
                }
            }
            if !out.is_empty() {
                methods.insert(service.into_boxed_str(), out);
            }
        }
        Ok(GcpNormalizer { catalog, methods })
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Number of (serviceName, methodName) pairs the table maps.
    pub fn table_len(&self) -> usize {
        self.methods.values().map(FxHashMap::len).sum()
    }

    /// Normalizes one entry (the JSON bytes of one LogEntry object). Never panics.
    pub fn normalize(&self, raw: &[u8]) -> Result<Event, NormalizeError> {
        normalize_entry(raw, self)
    }

    /// The permission a (serviceName, methodName) pair exercises, from the table and the heuristics.
    fn method_permission(&self, service: &str, method: &str, resource_name: Option<&str>) -> Option<ActionId> {
        if let Some(id) = self.methods.get(service).and_then(|m| m.get(method)) {
            return Some(*id);
        }
        if let Some(id) = gcp_permission(&self.catalog, method) {
            return Some(id);
        }
        // `v1.compute.instances.insert`, `beta.compute.firewalls.patch`: the REST verb to the permission verb.
        if let Some((version, rest)) = method.split_once('.')
            && (version == "beta" || version == "alpha" || version.starts_with('v'))
            && let Some(rest) = rest.strip_prefix("compute.")
            && let Some((resource, verb)) = rest.rsplit_once('.')
        {
            let verb = match verb {
                "insert" => "create",
                "patch" => "update",
                "aggregatedList" => "list",
                v => v,
            };
            if let Some(id) = gcp_permission(&self.catalog, &format!("compute.{resource}.{verb}")) {
                return Some(id);
            }
        }
        // `SetIamPolicy` / `google.iam.v1.IAMPolicy.SetIamPolicy` on the resource manager's containers.
        let verb = method.rsplit('.').next().unwrap_or(method);
        if matches!(verb, "SetIamPolicy" | "GetIamPolicy")
            && let Some(rn) = resource_name
        {
            let kind = ["projects/", "folders/", "organizations/"].into_iter().find(|k| {
                let rn = rn.trim_start_matches("//cloudresourcemanager.googleapis.com/");
                rn.starts_with(k) && rn.matches('/').count() == 1
            })?;
            let perm = format!("resourcemanager.{}.{}", kind.trim_end_matches('/'), lower_first(verb));
            return gcp_permission(&self.catalog, &perm);
        }
        None
    }
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_ascii_lowercase().to_string() + c.as_str(),
        None => String::new(),
    }
}

/// The catalog id of a GCP permission (never an AWS or Azure action of the same spelling).
fn gcp_permission(catalog: &Catalog, name: &str) -> Option<ActionId> {
    if name.contains(':') || name.contains('/') || !name.contains('.') {
        return None;
    }
    catalog.lookup(name).filter(|&id| catalog.cloud_of(id) == Cloud::Gcp)
}

/// A cheap test of whether bytes look like a Cloud Audit Log entry (for recognizing a file's shape).
pub fn looks_like_audit_entry(raw: &[u8]) -> bool {
    memchr::memmem::find(raw, b"\"protoPayload\"").is_some() && memchr::memmem::find(raw, b"\"insertId\"").is_some()
}

#[derive(Deserialize)]
struct RawEntry<'a> {
    #[serde(rename = "insertId", borrow, default)]
    insert_id: Text<'a>,
    #[serde(rename = "logName", borrow, default)]
    log_name: Text<'a>,
    #[serde(borrow, default)]
    timestamp: Text<'a>,
    #[serde(borrow, default)]
    resource: Option<RawMonitored<'a>>,
    #[serde(rename = "protoPayload", borrow, default)]
    proto: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
struct RawMonitored<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Text<'a>,
    #[serde(borrow, default)]
    labels: Option<RawLabels<'a>>,
}

#[derive(Deserialize, Default)]
struct RawLabels<'a> {
    #[serde(borrow, default)]
    project_id: Text<'a>,
    #[serde(borrow, default)]
    location: Text<'a>,
    #[serde(borrow, default)]
    region: Text<'a>,
    #[serde(borrow, default)]
    zone: Text<'a>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawAudit<'a> {
    #[serde(rename = "@type", borrow, default)]
    type_url: Text<'a>,
    #[serde(borrow, default)]
    service_name: Text<'a>,
    #[serde(borrow, default)]
    method_name: Text<'a>,
    #[serde(borrow, default)]
    resource_name: Text<'a>,
    #[serde(borrow, default)]
    authentication_info: Option<RawAuthn<'a>>,
    #[serde(borrow, default)]
    authorization_info: Option<&'a RawValue>,
    #[serde(borrow, default)]
    request_metadata: Option<RawRequestMetadata<'a>>,
    #[serde(borrow, default)]
    status: Option<RawStatus<'a>>,
    #[serde(borrow, default)]
    request: Option<&'a RawValue>,
    #[serde(borrow, default)]
    response: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawAuthn<'a> {
    #[serde(borrow, default)]
    principal_email: Text<'a>,
    #[serde(borrow, default)]
    principal_subject: Text<'a>,
    #[serde(borrow, default)]
    service_account_key_name: Text<'a>,
    #[serde(borrow, default)]
    service_account_delegation_info: Option<Vec<RawDelegation<'a>>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawDelegation<'a> {
    #[serde(borrow, default)]
    first_party_principal: Option<RawPrincipal<'a>>,
    #[serde(borrow, default)]
    principal_subject: Text<'a>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawPrincipal<'a> {
    #[serde(borrow, default)]
    principal_email: Text<'a>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawAuthz<'a> {
    #[serde(borrow, default)]
    permission: Text<'a>,
    #[serde(borrow, default)]
    resource: Text<'a>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawRequestMetadata<'a> {
    #[serde(borrow, default)]
    caller_ip: Text<'a>,
    #[serde(borrow, default)]
    caller_supplied_user_agent: Text<'a>,
}

#[derive(Deserialize, Default)]
struct RawStatus<'a> {
    #[serde(default)]
    code: Code,
    #[serde(borrow, default)]
    message: Text<'a>,
}

/// Normalizes one audit log entry. Required: `insertId`, `timestamp` (RFC 3339), `protoPayload.serviceName`,
/// `protoPayload.methodName`. See the module doc for the rest.
pub fn normalize_entry(raw: &[u8], n: &GcpNormalizer) -> Result<Event, NormalizeError> {
    // serde's derived structs would also accept a JSON array (fields by position).
    if raw.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(NormalizeError::Json("expected a JSON object (a Cloud Audit Log entry)".to_string()));
    }
    let entry: RawEntry<'_> = serde_json::from_slice(raw).map_err(|e| NormalizeError::Json(e.to_string()))?;
    let log_name = entry.log_name.get();
    let Some(proto_raw) = entry.proto else {
        return Err(NormalizeError::NotApiActivity("no protoPayload: not a Cloud Audit Log entry".to_string()));
    };
    let audit: RawAudit<'_> =
        serde_json::from_str(proto_raw.get()).map_err(|e| NormalizeError::Json(format!("protoPayload: {e}")))?;
    match audit.type_url.get() {
        Some(AUDIT_LOG_TYPE) => {}
        Some(other) => return Err(NormalizeError::NotApiActivity(format!("protoPayload type {other}"))),
        None if log_name.is_some_and(|l| l.contains("cloudaudit.googleapis.com")) => {}
        None => {
            return Err(NormalizeError::NotApiActivity(
                "protoPayload without @type outside a cloudaudit.googleapis.com log".to_string(),
            ));
        }
    }
    let insert_id = entry.insert_id.get().ok_or(NormalizeError::Missing("insertId"))?;
    let time_s = entry.timestamp.get().ok_or(NormalizeError::Missing("timestamp"))?;
    let service = audit.service_name.get().ok_or(NormalizeError::Missing("protoPayload.serviceName"))?;
    let method = audit.method_name.get().ok_or(NormalizeError::Missing("protoPayload.methodName"))?;
    let time = EventTime::parse_rfc3339(time_s).ok_or_else(|| NormalizeError::BadTime(time_s.to_string()))?;

    let labels = entry.resource.as_ref().and_then(|r| r.labels.as_ref());
    let account = labels
        .and_then(|l| l.project_id.get())
        .map(str::to_string)
        .or_else(|| log_name.and_then(log_parent))
        .unwrap_or_else(|| crate::cloudtrail::UNKNOWN.to_string());
    let region = labels.map_or_else(|| "global".to_string(), region_of);
    let log_kind = log_name.map_or(LogKind::Other, log_kind);

    let authz: Vec<RawAuthz<'_>> = match audit.authorization_info {
        Some(a) if a.get() != "null" => serde_json::from_str(a.get())
            .map_err(|e| NormalizeError::Json(format!("protoPayload.authorizationInfo: {e}")))?,
        _ => Vec::new(),
    };
    let catalog = n.catalog();
    let mut ids: Vec<ActionId> =
        authz.iter().filter_map(|a| a.permission.get()).filter_map(|p| gcp_permission(catalog, p)).collect();
    ids.sort_unstable();
    ids.dedup();
    let resource_name = audit.resource_name.get();
    let mapping = if !ids.is_empty() {
        ActionMapping::Direct
    } else if method.ends_with("testIamPermissions") || method.ends_with("TestIamPermissions") {
        ActionMapping::NoPermission
    } else if let Some(id) = n.method_permission(service, method, resource_name) {
        ids.push(id);
        ActionMapping::Exception
    } else {
        ActionMapping::Unmapped
    };
    let actions: Vec<String> = ids.iter().map(|&id| catalog.name(id).to_string()).collect();

    let read_only = read_only(&actions, method, log_kind);
    let keep = read_only != Some(true);
    let mut resources: Vec<String> = Vec::new();
    if let Some(r) = resource_name {
        resources.push(r.to_string());
    } else {
        resources.extend(authz.iter().filter_map(|a| a.resource.get()).map(str::to_string));
        resources.sort_unstable();
        resources.dedup();
    }
    let (status, status_code, error_message) = match &audit.status {
        Some(s) if s.code.0.is_some_and(|c| c != 0) => {
            let code = s.code.0.unwrap_or_default();
            (Status::Failure, Some(code_name(code)), s.message.get().map(|m| cut_str(m, ERROR_MESSAGE_MAX).to_string()))
        }
        _ => (Status::Success, None, None),
    };
    let meta = audit.request_metadata.as_ref();
    let additional = if keep {
        additional(log_name, entry.resource.as_ref().and_then(|r| r.kind.get()), audit.authorization_info)
    } else {
        None
    };
    Ok(Event {
        uid: format!("{}/{insert_id}", log_name.unwrap_or(crate::cloudtrail::UNKNOWN)),
        time,
        cloud: Cloud::Gcp,
        actor: actor(audit.authentication_info.as_ref(), &account, service),
        account_uid: account,
        region,
        api: Api { service: service.to_string(), operation: method.to_string() },
        actions,
        mapping,
        resources,
        status,
        status_code,
        src_ip: meta.and_then(|m| m.caller_ip.get()).map(str::to_string),
        user_agent: meta.and_then(|m| m.caller_supplied_user_agent.get()).map(str::to_string),
        read_only,
        request: if keep { detail(audit.request) } else { None },
        response: if keep { detail(audit.response) } else { None },
        additional,
        error_message,
    })
}

/// `projects/P/logs/...` → `P`; `organizations/O/logs/...` → `organizations/O` (and folders, billing accounts).
fn log_parent(log_name: &str) -> Option<String> {
    let (parent, _) = log_name.split_once("/logs/")?;
    match parent.split_once('/') {
        Some(("projects", p)) if !p.is_empty() => Some(p.to_string()),
        Some((_, id)) if !id.is_empty() => Some(parent.to_string()),
        _ => None,
    }
}

fn region_of(l: &RawLabels<'_>) -> String {
    if let Some(r) = l.location.get().or(l.region.get()) {
        return r.to_string();
    }
    if let Some(z) = l.zone.get() {
        // `us-central1-a` → `us-central1`: zones are a region plus one letter.
        return match z.rsplit_once('-') {
            Some((region, letter)) if letter.len() == 1 && region.contains('-') => region.to_string(),
            _ => z.to_string(),
        };
    }
    "global".to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LogKind {
    Activity,
    DataAccess,
    SystemEvent,
    Policy,
    Other,
}

fn log_kind(log_name: &str) -> LogKind {
    let id = log_name.rsplit("/logs/").next().unwrap_or_default();
    let id = id.strip_prefix("cloudaudit.googleapis.com").unwrap_or_default();
    let id = id.strip_prefix("%2F").or_else(|| id.strip_prefix("%2f")).or_else(|| id.strip_prefix('/')).unwrap_or(id);
    match id {
        "activity" => LogKind::Activity,
        "data_access" => LogKind::DataAccess,
        "system_event" => LogKind::SystemEvent,
        "policy" => LogKind::Policy,
        _ => LogKind::Other,
    }
}

/// Whether a verb (a permission's last segment, or a method's) only reads. `export` is not one: the
/// request (where the data went) is what detection wants to see.
fn is_read_verb(verb: &str) -> bool {
    const READS: &[&str] = &["get", "list", "search", "read", "lookup", "batchget", "aggregatedlist", "view"];
    let v = verb.to_ascii_lowercase();
    READS.iter().any(|r| v.starts_with(r))
}

fn read_only(actions: &[String], method: &str, kind: LogKind) -> Option<bool> {
    if matches!(kind, LogKind::Activity | LogKind::SystemEvent) {
        return Some(false);
    }
    if !actions.is_empty() {
        return Some(actions.iter().all(|a| a.rsplit('.').next().is_some_and(is_read_verb)));
    }
    // `google.pubsub.v1.Subscriber.ListSubscriptions`, `storage.objects.get`: the last segment's verb.
    let last = method.rsplit('.').next().unwrap_or(method);
    if is_read_verb(last) {
        return Some(true);
    }
    match kind {
        LogKind::DataAccess => Some(true),
        _ => None,
    }
}

/// gRPC canonical code names (google.rpc.Code).
fn code_name(code: i64) -> String {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    usize::try_from(code).ok().and_then(|i| NAMES.get(i)).map_or_else(|| code.to_string(), |s| (*s).to_string())
}

fn actor(authn: Option<&RawAuthn<'_>>, account: &str, service: &str) -> Actor {
    let mut a = Actor {
        human: None,
        uid: String::new(),
        kind: IdentityKind::External,
        name: None,
        account_uid: Some(account.to_string()),
        session_name: None,
        principal_id: authn.and_then(|x| x.principal_subject.get()).map(str::to_string),
        access_key_id: authn
            .and_then(|x| x.service_account_key_name.get())
            .and_then(|k| k.rsplit('/').next())
            .filter(|k| !k.is_empty())
            .map(str::to_string),
        invoked_by: None,
        mfa_authenticated: None,
        on_behalf_of: authn.and_then(|x| x.service_account_delegation_info.as_ref()).and_then(|d| {
            d.first().and_then(|f| {
                f.first_party_principal
                    .as_ref()
                    .and_then(|p| p.principal_email.get())
                    .or(f.principal_subject.get())
                    .map(str::to_string)
            })
        }),
    };
    // `organizations/O` for org-level logs; identity uids of a project are `gcp:projects/{id}/...`.
    let scope = if account.contains('/') { account.to_string() } else { format!("projects/{account}") };
    let member = match authn.and_then(|x| x.principal_email.get()) {
        Some(email) => {
            let email = email.to_ascii_lowercase();
            Some(if is_service_account_email(&email) {
                format!("serviceAccount:{email}")
            } else {
                format!("user:{email}")
            })
        }
        None => authn.and_then(|x| x.principal_subject.get()).map(|s| parse_member(s).key),
    };
    match member {
        Some(key) => {
            let m = parse_member(&key);
            a.kind = match m.kind {
                MemberKind::Unknown => IdentityKind::External,
                k => k.identity_kind(),
            };
            a.name = Some(m.display_name().to_string());
            a.uid = format!("gcp:{scope}/{}", m.key);
        }
        None => {
            a.kind = IdentityKind::Service;
            a.name = Some(service.to_string());
            a.uid = format!("gcp:service:{service}");
            a.invoked_by = Some(service.to_string());
        }
    }
    a
}

/// A request or response document kept: redacted, and only up to [`RAW_DETAIL_MAX`].
fn detail(doc: Option<&RawValue>) -> Option<RawJson> {
    let doc = doc?.get();
    if doc == "null" || doc.len() > RAW_DETAIL_MAX {
        return None;
    }
    match redact::redact_json_str(doc) {
        Cow::Borrowed(doc) => RawJson::from_text(doc),
        Cow::Owned(doc) if doc.len() <= RAW_DETAIL_MAX => RawJson::from_text(&doc),
        Cow::Owned(_) => None,
    }
}

/// `{"logName", "resource": {"type"}, "authorizationInfo"}` for the Sigma view.
fn additional(log_name: Option<&str>, resource_type: Option<&str>, authz: Option<&RawValue>) -> Option<RawJson> {
    let mut doc = String::from("{");
    let mut sep = "";
    if let Some(l) = log_name {
        doc.push_str(&format!("\"logName\":{}", serde_json::to_string(l).ok()?));
        sep = ",";
    }
    if let Some(t) = resource_type {
        doc.push_str(&format!("{sep}\"resource\":{{\"type\":{}}}", serde_json::to_string(t).ok()?));
        sep = ",";
    }
    if let Some(a) = authz.filter(|a| a.get() != "null") {
        doc.push_str(&format!("{sep}\"authorizationInfo\":{}", redact::redact_json_str(a.get())));
    }
    doc.push('}');
    (doc.len() > 2 && doc.len() <= RAW_DETAIL_MAX).then(|| RawJson::from_text(&doc)).flatten()
}

/// A string field; any other JSON type reads as absent instead of failing the entry.
#[derive(Debug, Default)]
struct Text<'a>(Option<Cow<'a, str>>);

impl Text<'_> {
    fn get(&self) -> Option<&str> {
        self.0.as_deref().filter(|s| !s.is_empty())
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TextVisitor)
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Text<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Text(Some(Cow::Borrowed(v))))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Text(Some(Cow::Owned(v.to_string()))))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Text(Some(Cow::Owned(v))))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Text(None))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Text(None))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Text(None))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Text(None))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Text(None))
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Text(None))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        Text::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Text(None))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Text(None))
    }
}

/// `status.code`: a number (or a numeric string, as some re-serializations write int32s); else absent.
#[derive(Debug, Default, Clone, Copy)]
struct Code(Option<i64>);

impl<'de> Deserialize<'de> for Code {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        Ok(Code(match v {
            serde_json::Value::Number(n) => n.as_i64(),
            serde_json::Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }))
    }
}

#[cfg(test)]
mod tests;
