//! One CloudTrail record (JSON bytes) to one [`Event`].
//!
//! Deserializes only the fields it needs, into borrowed structs (no `serde_json::Value` of the record);
//! `requestParameters` is kept as a raw slice and parsed only when the record has no `resources` and
//! the service has rules in [`super::resources`].

use std::borrow::Cow;
use std::sync::Arc;

use grantwatch_types::{
    Actor, Api, Cloud, ERROR_MESSAGE_MAX, Event, EventTime, IdentityKind, RAW_DETAIL_MAX, RawJson, Status, cut_str,
};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::action_map::ActionMap;
use super::lenient::{Flag, Str};
use super::{redact, resources};

/// Region and account used when the record names none.
pub const UNKNOWN: &str = "unknown";

/// Why a record could not be normalized. The caller adds the file name and record index.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NormalizeError {
    #[error("not a record of a known log: {0}")]
    Json(String),
    #[error("missing field {0}")]
    Missing(&'static str),
    #[error("eventTime not RFC 3339: {0:?}")]
    BadTime(String),
    /// A field of another log that is malformed (its message names the field).
    #[error("{0}")]
    Invalid(String),
    /// A well-formed record that is not an API call (a CloudTrail Insights event): skipped and counted,
    /// not quarantined.
    #[error("not an API call (eventType {0})")]
    NotApiActivity(String),
}

#[derive(Deserialize)]
struct RawRecord<'a> {
    #[serde(rename = "eventID", borrow, default)]
    event_id: Str<'a>,
    #[serde(rename = "eventTime", borrow, default)]
    event_time: Str<'a>,
    #[serde(rename = "eventSource", borrow, default)]
    event_source: Str<'a>,
    #[serde(rename = "eventName", borrow, default)]
    event_name: Str<'a>,
    #[serde(rename = "awsRegion", borrow, default)]
    aws_region: Str<'a>,
    #[serde(rename = "recipientAccountId", borrow, default)]
    recipient_account_id: Str<'a>,
    #[serde(rename = "errorCode", borrow, default)]
    error_code: Str<'a>,
    #[serde(rename = "sourceIPAddress", borrow, default)]
    source_ip: Str<'a>,
    #[serde(rename = "userAgent", borrow, default)]
    user_agent: Str<'a>,
    #[serde(rename = "readOnly", default)]
    read_only: Flag,
    #[serde(rename = "userIdentity", borrow, default)]
    user_identity: Option<RawIdentity<'a>>,
    #[serde(borrow, default)]
    resources: Option<Vec<RawResource<'a>>>,
    #[serde(rename = "requestParameters", borrow, default)]
    request_parameters: Option<&'a RawValue>,
    #[serde(rename = "responseElements", borrow, default)]
    response_elements: Option<&'a RawValue>,
    #[serde(rename = "additionalEventData", borrow, default)]
    additional_event_data: Option<&'a RawValue>,
    #[serde(rename = "errorMessage", borrow, default)]
    error_message: Str<'a>,
    #[serde(rename = "eventType", borrow, default)]
    event_type: Str<'a>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawIdentity<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Str<'a>,
    #[serde(borrow, default)]
    principal_id: Str<'a>,
    #[serde(borrow, default)]
    arn: Str<'a>,
    #[serde(borrow, default)]
    account_id: Str<'a>,
    #[serde(borrow, default)]
    access_key_id: Str<'a>,
    #[serde(borrow, default)]
    user_name: Str<'a>,
    #[serde(borrow, default)]
    invoked_by: Str<'a>,
    #[serde(borrow, default)]
    session_context: Option<RawSessionContext<'a>>,
    #[serde(borrow, default)]
    on_behalf_of: Option<RawOnBehalfOf<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawSessionContext<'a> {
    #[serde(default)]
    attributes: Option<RawAttributes>,
    #[serde(borrow, default)]
    session_issuer: Option<RawIssuer<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawAttributes {
    #[serde(default)]
    mfa_authenticated: Flag,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawIssuer<'a> {
    #[serde(borrow, default)]
    arn: Str<'a>,
    #[serde(borrow, default)]
    user_name: Str<'a>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawOnBehalfOf<'a> {
    #[serde(borrow, default)]
    user_id: Str<'a>,
}

#[derive(Deserialize)]
struct RawResource<'a> {
    #[serde(rename = "ARN", borrow, default)]
    arn: Str<'a>,
}

/// Normalizes one CloudTrail record (the JSON bytes of one record object).
///
/// Required: `eventID`, `eventTime` (RFC 3339), `eventSource`, `eventName`, `userIdentity` (an object).
/// `awsRegion` and the account (`recipientAccountId`, else `userIdentity.accountId`, else the actor ARN's
/// account) default to [`UNKNOWN`]. Never panics.
pub fn normalize_record(raw: &[u8], map: &ActionMap) -> Result<Event, NormalizeError> {
    // serde's derived structs would also accept a JSON array (fields by position).
    if raw.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(NormalizeError::Json("expected a JSON object".to_string()));
    }
    let rec: RawRecord<'_> = serde_json::from_slice(raw).map_err(|e| NormalizeError::Json(e.to_string()))?;
    if let Some(kind @ "AwsCloudTrailInsight") = rec.event_type.get() {
        return Err(NormalizeError::NotApiActivity(kind.to_string()));
    }
    let uid = rec.event_id.get().ok_or(NormalizeError::Missing("eventID"))?;
    let time_s = rec.event_time.get().ok_or(NormalizeError::Missing("eventTime"))?;
    let source = rec.event_source.get().ok_or(NormalizeError::Missing("eventSource"))?;
    let name = rec.event_name.get().ok_or(NormalizeError::Missing("eventName"))?;
    let ident = rec.user_identity.as_ref().ok_or(NormalizeError::Missing("userIdentity"))?;
    let time = EventTime::parse_rfc3339(time_s).ok_or_else(|| NormalizeError::BadTime(time_s.to_string()))?;

    let actor = resolve_actor(ident);
    let region = rec.aws_region.get();
    let account =
        rec.recipient_account_id.get().or(ident.account_id.get()).or_else(|| ident.arn.get().and_then(arn_account));

    let mut res: Vec<String> = rec.resources.iter().flatten().filter_map(|r| r.arn.get().map(str::to_string)).collect();
    if res.is_empty()
        && resources::has_rules(source)
        && let Some(params) = rec.request_parameters
    {
        resources::from_request_parameters(params.get(), source, region, account, &mut res);
    }
    res.sort_unstable();
    res.dedup();

    let mapped = map.map_event(source, name);
    let mut actions = mapped.actions.clone();
    if actions.iter().any(|a| a == PASS_ROLE) && !passes_a_role(source, name, rec.request_parameters) {
        actions.retain(|a| a != PASS_ROLE);
    }
    let status_code = rec.error_code.get().map(str::to_string);
    Ok(Event {
        uid: uid.to_string(),
        time,
        cloud: Cloud::Aws,
        account_uid: account.unwrap_or(UNKNOWN).to_string(),
        region: region.unwrap_or(UNKNOWN).to_string(),
        actor,
        api: Api { service: source.to_string(), operation: name.to_string() },
        actions,
        mapping: mapped.mapping,
        resources: res,
        status: if status_code.is_some() { Status::Failure } else { Status::Success },
        status_code,
        src_ip: rec.source_ip.get().map(str::to_string),
        user_agent: rec.user_agent.get().map(str::to_string),
        read_only: rec.read_only.0,
        request: detail(&rec, rec.request_parameters, inspected_read(source, name)),
        response: detail(&rec, rec.response_elements, false),
        additional: detail(&rec, rec.additional_event_data, signs_in(source)),
        error_message: rec.error_message.get().map(|m| cut_str(m, ERROR_MESSAGE_MAX).to_string()),
    })
}

const PASS_ROLE: &str = "iam:PassRole";

/// Calls that pass a role only when their request names one (by event source, event name prefix, and
/// the request keys that carry it): `iam:PassRole` is exercised only then. An EC2 instance launched
/// without an instance profile, a Run Command without a notification role, a Lambda configuration
/// change of layers alone pass no role, and counting one would keep `iam:PassRole` off every
/// right-sizing plan.
const ROLE_PASSED_BY: &[(&str, &str, &[&str])] = &[
    ("ec2.amazonaws.com", "RunInstances", &["iamInstanceProfile"]),
    ("ssm.amazonaws.com", "SendCommand", &["serviceRoleArn"]),
    ("lambda.amazonaws.com", "UpdateFunctionConfiguration", &["role"]),
];

/// Whether the call passed a role. Only a request that is there and names none says no: without the
/// request (omitted by CloudTrail, or unparsable) the mapping's `iam:PassRole` stands, since counting
/// a permission as unused that was used is the worse mistake.
fn passes_a_role(source: &str, name: &str, request: Option<&RawValue>) -> bool {
    let Some((_, _, keys)) = ROLE_PASSED_BY.iter().find(|(s, n, _)| *s == source && name.starts_with(n)) else {
        return true;
    };
    let Some(request) = request else { return true };
    match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(request.get()) {
        Ok(map) => keys.iter().any(|k| map.get(*k).is_some_and(|v| !v.is_null())),
        Err(_) => true,
    }
}

/// Read-only calls whose request detection inspects: they read credentials (a Windows password, an
/// instance's user data, secrets, SecureString parameters), so which item and how (`withDecryption`)
/// matter. Other reads, most of the volume, keep no request.
const INSPECTED_READS: &[(&str, &str)] = &[
    ("ec2.amazonaws.com", "GetPasswordData"),
    ("ec2.amazonaws.com", "DescribeInstanceAttribute"),
    ("secretsmanager.amazonaws.com", "GetSecretValue"),
    ("secretsmanager.amazonaws.com", "BatchGetSecretValue"),
    ("ssm.amazonaws.com", "GetParameter"),
    ("ssm.amazonaws.com", "GetParameters"),
    ("ssm.amazonaws.com", "GetParametersByPath"),
];

/// Sign-in events carry what detection reads in `additionalEventData` (`MFAUsed`), read-only or not.
/// Reads elsewhere (S3 data events: bytes, cipher suite, signature version) keep none: they are a fifth
/// of a data-event trail, and parsing their extra document for every rule cost a third of the detector.
fn signs_in(source: &str) -> bool {
    matches!(source, "signin.amazonaws.com" | "sso.amazonaws.com" | "sts.amazonaws.com")
}

fn inspected_read(source: &str, name: &str) -> bool {
    INSPECTED_READS.iter().any(|(s, n)| *s == source && *n == name)
}

/// A request, response or additional-data document an event keeps: for calls that may change
/// something (the ones detection rules inspect; reads are most of the volume) or when `even_if_read`,
/// and only up to [`RAW_DETAIL_MAX`]. Credentials CloudTrail left unmasked are redacted ([`redact`]):
/// the event travels on to Kafka, alerts and files.
fn detail(rec: &RawRecord<'_>, doc: Option<&RawValue>, even_if_read: bool) -> Option<RawJson> {
    let doc = doc?.get();
    if (rec.read_only.0 == Some(true) && !even_if_read) || doc == "null" || doc.len() > RAW_DETAIL_MAX {
        return None;
    }
    match redact::redact_json_str(doc) {
        Cow::Borrowed(doc) => RawJson::from_text(doc),
        // A short secret replaced by the marker can push the document just past the limit.
        Cow::Owned(doc) if doc.len() <= RAW_DETAIL_MAX => RawValue::from_string(doc).ok().map(RawJson),
        Cow::Owned(_) => None,
    }
}

/// `arn:aws:sts::111122223333:assumed-role/R/s` → `111122223333`.
fn arn_account(arn: &str) -> Option<&str> {
    arn.split(':').nth(4).filter(|a| !a.is_empty())
}

fn arn_partition(arn: &str) -> &str {
    arn.split(':').nth(1).filter(|p| !p.is_empty()).unwrap_or("aws")
}

/// The resource part of an ARN (after the fifth colon).
fn arn_resource(arn: &str) -> Option<&str> {
    arn.splitn(6, ':').nth(5)
}

fn resolve_actor(id: &RawIdentity<'_>) -> Actor {
    let arn = id.arn.get();
    let account = id.account_id.get().or_else(|| arn.and_then(arn_account));
    let issuer = id.session_context.as_ref().and_then(|c| c.session_issuer.as_ref());
    let mfa = id.session_context.as_ref().and_then(|c| c.attributes.as_ref()).and_then(|a| a.mfa_authenticated.0);
    let own = |s: Option<&str>| s.map(str::to_string);
    let best_id = || {
        arn.or(id.on_behalf_of.as_ref().and_then(|o| o.user_id.get()))
            .or(id.principal_id.get())
            .or(id.user_name.get())
            .unwrap_or(UNKNOWN)
            .to_string()
    };
    let mut actor = Actor {
        human: None,
        uid: String::new(),
        kind: IdentityKind::External,
        name: None,
        account_uid: own(account),
        session_name: None,
        principal_id: own(id.principal_id.get()),
        access_key_id: own(id.access_key_id.get()),
        invoked_by: own(id.invoked_by.get()),
        mfa_authenticated: mfa,
        on_behalf_of: own(id.on_behalf_of.as_ref().and_then(|o| o.user_id.get())),
    };
    match id.kind.get() {
        Some("IAMUser") => {
            actor.kind = IdentityKind::User;
            actor.name = own(id.user_name.get()).or_else(|| own(arn.and_then(|a| a.rsplit('/').next())));
            actor.uid = match (arn, account, id.user_name.get()) {
                (Some(a), _, _) => a.to_string(),
                (None, Some(acct), Some(user)) => format!("arn:aws:iam::{acct}:user/{user}"),
                _ => best_id(),
            };
        }
        Some("Root") => {
            actor.kind = IdentityKind::Root;
            actor.uid = match account {
                Some(acct) => format!("arn:{}:iam::{acct}:root", arn.map_or("aws", arn_partition)),
                None => best_id(),
            };
        }
        Some("AssumedRole") => {
            actor.kind = IdentityKind::Role;
            // `assumed-role/RoleName/session`
            let parts = arn.and_then(arn_resource).and_then(|r| r.strip_prefix("assumed-role/"));
            let (role_name, session) = match parts.and_then(|p| p.split_once('/')) {
                Some((r, s)) => (Some(r), Some(s)),
                None => (parts, None),
            };
            actor.session_name = own(session.filter(|s| !s.is_empty()));
            actor.name = own(issuer.and_then(|i| i.user_name.get()).or(role_name));
            actor.uid = match (issuer.and_then(|i| i.arn.get()), account, role_name) {
                (Some(role_arn), _, _) => role_arn.to_string(),
                (None, Some(acct), Some(r)) => {
                    format!("arn:{}:iam::{acct}:role/{r}", arn.map_or("aws", arn_partition))
                }
                _ => best_id(),
            };
        }
        Some("FederatedUser") => {
            actor.session_name = own(arn
                .and_then(arn_resource)
                .and_then(|r| r.strip_prefix("federated-user/"))
                .filter(|s| !s.is_empty()));
            match issuer.and_then(|i| i.arn.get()) {
                Some(user_arn) => {
                    actor.kind = IdentityKind::User;
                    actor.uid = user_arn.to_string();
                    actor.name = own(issuer.and_then(|i| i.user_name.get()));
                }
                None => actor.uid = best_id(),
            }
        }
        Some("AWSService") => {
            actor.kind = IdentityKind::Service;
            actor.uid = own(id.invoked_by.get()).unwrap_or_else(best_id);
        }
        Some("AWSAccount") => {
            actor.uid = match id.account_id.get() {
                Some(acct) => format!("arn:aws:iam::{acct}:root"),
                None => best_id(),
            };
        }
        None if id.invoked_by.get().is_some() => {
            // Service events (`eventType: AwsServiceEvent`) carry only accountId + invokedBy.
            actor.kind = IdentityKind::Service;
            actor.uid = own(id.invoked_by.get()).unwrap_or_else(best_id);
        }
        _ => actor.uid = best_id(),
    }
    actor
}

/// Normalizes activity records of every log grantwatch reads: CloudTrail with its [`ActionMap`], and
/// the other clouds' and identity providers' logs, each record routed by its shape
/// ([`crate::shape::RecordShape`]).
#[derive(Debug)]
pub struct Normalizer {
    map: ActionMap,
    /// Cloud Audit Logs' normalizer; `Err` when the catalog holds no GCP permissions (or, a build
    /// defect, its compiled-in table is unreadable): GCP records are then refused with the reason.
    gcp: Result<crate::gcp::GcpNormalizer, String>,
    /// The Okta org of the directory export, which the System Log does not name (`okta` without it).
    okta_org: Option<String>,
    /// Who is behind each actor, stamped on the events (`None`: no links known).
    humans: Option<Arc<crate::humans::HumanIndex>>,
}

impl Normalizer {
    pub fn new(map: ActionMap) -> Normalizer {
        let gcp = if map.catalog().cloud_len(grantwatch_types::Cloud::Gcp) == 0 {
            Err("the action catalog holds no GCP permissions".to_string())
        } else {
            crate::gcp::GcpNormalizer::new(Arc::clone(map.catalog_arc())).map_err(|e| e.to_string())
        };
        Normalizer { map, gcp, okta_org: None, humans: None }
    }

    /// A normalizer over the AWS catalog compiled into this binary.
    pub fn aws() -> Result<Normalizer, super::ActionMapError> {
        Ok(Normalizer::new(ActionMap::aws()?))
    }

    /// Names the Okta org the System Log's identities belong to.
    pub fn with_okta_org(mut self, org: Option<String>) -> Normalizer {
        self.okta_org = org;
        self
    }

    /// Stamps every event with the human behind its actor ([`grantwatch_types::Actor::human`]).
    pub fn with_humans(mut self, humans: Option<Arc<crate::humans::HumanIndex>>) -> Normalizer {
        self.humans = humans.filter(|h| !h.is_empty());
        self
    }

    pub fn action_map(&self) -> &ActionMap {
        &self.map
    }

    /// One record that makes one event (see [`Normalizer::normalize_each`]); a Workspace activity of
    /// several events gives its first.
    pub fn normalize(&self, raw: &[u8]) -> Result<Event, NormalizeError> {
        let mut first = None;
        self.normalize_each(raw, &mut |ev| {
            if first.is_none() {
                first = Some(ev);
            }
        })?;
        first.ok_or_else(|| NormalizeError::NotApiActivity("no events".to_string()))
    }

    /// Normalizes one record of any log into its events, handed to `each` in record order: one
    /// event, except a Google Workspace activity, which makes one per event it lists.
    pub fn normalize_each(&self, raw: &[u8], each: &mut dyn FnMut(Event)) -> Result<(), NormalizeError> {
        match &self.humans {
            None => self.normalize_unstamped(raw, each),
            Some(humans) => self.normalize_unstamped(raw, &mut |mut ev: Event| {
                ev.actor.human = humans.human_of(&ev.actor).map(str::to_string);
                each(ev)
            }),
        }
    }

    fn normalize_unstamped(&self, raw: &[u8], each: &mut dyn FnMut(Event)) -> Result<(), NormalizeError> {
        use crate::shape::RecordShape;
        match RecordShape::of(raw) {
            RecordShape::CloudTrail => each(normalize_record(raw, &self.map)?),
            RecordShape::OktaSystemLog => {
                each(crate::idp::okta::normalize_event(raw, self.okta_org.as_deref()).map_err(from_idp)?)
            }
            RecordShape::WorkspaceActivity => {
                let events = crate::idp::workspace::normalize_activity(raw).map_err(from_idp)?;
                if events.is_empty() {
                    return Err(NormalizeError::NotApiActivity("a Workspace activity without events".to_string()));
                }
                events.into_iter().for_each(each);
            }
            RecordShape::AzureActivity => each(crate::azure::normalize_activity(raw, self.map.catalog())?),
            RecordShape::EntraSignIn => each(crate::azure::normalize_signin(raw)?),
            RecordShape::GcpAudit => match &self.gcp {
                Ok(gcp) => each(gcp.normalize(raw)?),
                Err(why) => return Err(NormalizeError::Invalid(format!("a GCP audit log entry, not read: {why}"))),
            },
        }
        Ok(())
    }
}

fn from_idp(e: crate::idp::EventError) -> NormalizeError {
    use crate::idp::EventError;
    match e {
        EventError::Json(why) => NormalizeError::Json(why),
        EventError::Missing(field) => NormalizeError::Missing(field),
        e @ EventError::BadTime { .. } => NormalizeError::Invalid(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(raw: &str) -> Result<Event, NormalizeError> {
        thread_local! { static M: ActionMap = ActionMap::aws().unwrap(); }
        M.with(|m| normalize_record(raw.as_bytes(), m))
    }

    const BASE: &str =
        r#""eventID":"e1","eventTime":"2024-01-02T03:04:05Z","eventSource":"s3.amazonaws.com","eventName":"GetObject""#;

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(n("{}").unwrap_err(), NormalizeError::Missing("eventID"));
        assert_eq!(n(&format!("{{{BASE}}}")).unwrap_err(), NormalizeError::Missing("userIdentity"));
        let bad_time = r#"{"eventID":"e","eventTime":"yesterday","eventSource":"s","eventName":"n","userIdentity":{}}"#;
        assert_eq!(n(bad_time).unwrap_err().to_string(), "eventTime not RFC 3339: \"yesterday\"");
        assert!(matches!(n("[1]"), Err(NormalizeError::Json(_))));
        assert!(matches!(n(&format!("{{{BASE},\"userIdentity\":\"x\"}}")), Err(NormalizeError::Json(_))));
    }

    #[test]
    fn kept_documents_carry_no_credentials() {
        let rec = r#"{"eventID":"e2","eventTime":"2024-01-02T03:04:05Z","eventSource":"iam.amazonaws.com","eventName":"ChangePassword","readOnly":false,
            "userIdentity":{"type":"IAMUser","arn":"arn:aws:iam::111122223333:user/alice","accessKeyId":"AKIAEXAMPLEKEY"},
            "requestParameters":{"userName":"alice","password":"Hunter2-request","details":{"NewPassword":"Hunter3-new"}},
            "responseElements":{"credentials":{"accessKeyId":"ASIAEXAMPLEKEY","sessionToken":"FwoGZXIvYXdzEXAMPLE","secretAccessKey":"wJalrXUtnFEMIEXAMPLE","expiration":"2024-01-02T04:04:05Z"}}}"#;
        let e = n(rec).unwrap();
        let shown = serde_json::to_string(&e).unwrap();
        for secret in ["Hunter2-request", "Hunter3-new", "FwoGZXIvYXdzEXAMPLE", "wJalrXUtnFEMIEXAMPLE"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        // What detection reads is still there.
        let req = e.request.as_ref().and_then(RawJson::parse).unwrap();
        assert_eq!(req["userName"], "alice");
        assert_eq!(req["password"], redact::REDACTED);
        let resp = e.response.as_ref().and_then(RawJson::parse).unwrap();
        assert_eq!(resp["credentials"]["accessKeyId"], "ASIAEXAMPLEKEY");
        assert_eq!(resp["credentials"]["expiration"], "2024-01-02T04:04:05Z");
        assert_eq!(e.actor.access_key_id.as_deref(), Some("AKIAEXAMPLEKEY"));
    }

    #[test]
    fn rules_get_additional_data_error_messages_and_the_requests_of_credential_reads() {
        let login = r#"{"eventID":"e3","eventTime":"2024-01-02T03:04:05Z","eventSource":"signin.amazonaws.com","eventName":"ConsoleLogin",
            "userIdentity":{"type":"IAMUser","arn":"arn:aws:iam::111122223333:user/alice"},"responseElements":{"ConsoleLogin":"Success"},
            "additionalEventData":{"LoginTo":"https://console.aws.amazon.com/","MFAUsed":"No"}}"#;
        let e = n(login).unwrap();
        assert_eq!(e.additional.as_ref().and_then(RawJson::parse).unwrap()["MFAUsed"], "No");
        // A credential read keeps its request (which instance, which secret, decrypted or not) ...
        let read = |name: &str, source: &str, req: &str| {
            format!(
                r#"{{"eventID":"e4","eventTime":"2024-01-02T03:04:05Z","eventSource":"{source}","eventName":"{name}","readOnly":true,
                "userIdentity":{{"type":"IAMUser","arn":"arn:aws:iam::111122223333:user/alice"}},"requestParameters":{req},
                "errorCode":"Client.UnauthorizedOperation","errorMessage":"{}"}}"#,
                "x".repeat(3000)
            )
        };
        let e = n(&read("GetPasswordData", "ec2.amazonaws.com", r#"{"instanceId":"i-1"}"#)).unwrap();
        assert_eq!(e.request.as_ref().and_then(RawJson::parse).unwrap()["instanceId"], "i-1");
        assert_eq!(e.error_message.as_ref().map(String::len), Some(ERROR_MESSAGE_MAX), "cut, not dropped");
        // ... other reads do not.
        let e = n(&read("DescribeInstances", "ec2.amazonaws.com", r#"{"instancesSet":{}}"#)).unwrap();
        assert!(e.request.is_none());
        // Cutting never splits a character.
        assert_eq!(cut_str("ééé", 3), "é");
    }

    #[test]
    fn assumed_role_without_issuer_derives_role_arn() {
        let e = n(&format!(
            r#"{{{BASE},"userIdentity":{{"type":"AssumedRole","arn":"arn:aws:sts::111122223333:assumed-role/AWSReservedSSO_Admin_abc/alice@example.com","sessionContext":{{"attributes":{{"mfaAuthenticated":"true"}}}}}},"requestParameters":{{"bucketName":"b","key":"k"}},"errorCode":"AccessDenied","readOnly":true}}"#
        ))
        .unwrap();
        assert_eq!(e.actor.uid, "arn:aws:iam::111122223333:role/AWSReservedSSO_Admin_abc");
        assert_eq!(e.actor.session_name.as_deref(), Some("alice@example.com"));
        assert_eq!(e.actor.mfa_authenticated, Some(true));
        assert_eq!(e.account_uid, "111122223333");
        assert_eq!(e.region, UNKNOWN);
        assert_eq!(e.resources, ["arn:aws:s3:::b", "arn:aws:s3:::b/k"]);
        assert_eq!(e.status, Status::Failure);
        assert_eq!(e.read_only, Some(true));
        assert_eq!(e.actions, ["s3:GetObject"]);
    }

    #[test]
    fn pass_role_counts_only_when_a_role_is_passed() {
        let map = ActionMap::aws().unwrap();
        let actions = |source: &str, name: &str, request: &str| {
            let raw = format!(
                r#"{{"eventID":"e","eventTime":"2024-01-02T03:04:05Z","eventSource":"{source}","eventName":"{name}","userIdentity":{{"type":"IAMUser","arn":"arn:aws:iam::111122223333:user/a"}}{request}}}"#
            );
            normalize_record(raw.as_bytes(), &map).unwrap().actions
        };
        let passes = |a: Vec<String>| a.iter().any(|a| a == PASS_ROLE);
        let profile = r#","requestParameters":{"instanceType":"t3.micro","iamInstanceProfile":{"arn":"arn:aws:iam::111122223333:instance-profile/p"}}"#;
        assert!(passes(actions("ec2.amazonaws.com", "RunInstances", profile)));
        assert!(!passes(actions(
            "ec2.amazonaws.com",
            "RunInstances",
            r#","requestParameters":{"instanceType":"t3.micro"}"#
        )));
        // No request to tell: the mapping stands.
        assert!(passes(actions("ec2.amazonaws.com", "RunInstances", "")));
        let send = |request: &str| actions("ssm.amazonaws.com", "SendCommand", request);
        assert!(!passes(send(r#","requestParameters":{"documentName":"AWS-RunShellScript"}"#)));
        assert!(passes(send(
            r#","requestParameters":{"documentName":"d","serviceRoleArn":"arn:aws:iam::111122223333:role/r"}"#
        )));
        let lambda = |request: &str| actions("lambda.amazonaws.com", "UpdateFunctionConfiguration20150331v2", request);
        assert!(!passes(lambda(
            r#","requestParameters":{"functionName":"f","layers":["arn:aws:lambda:us-east-1:111122223333:layer:l:1"]}"#
        )));
        assert!(passes(lambda(
            r#","requestParameters":{"functionName":"f","role":"arn:aws:iam::111122223333:role/r"}"#
        )));
        // A call that always passes one is untouched.
        assert!(passes(actions(
            "lambda.amazonaws.com",
            "CreateFunction20150331",
            r#","requestParameters":{"functionName":"f"}"#
        )));
    }
}
