use serde::{Deserialize, Serialize};

use crate::{Cloud, EventTime, IdentityKind};

/// One cloud API call, normalized. Field names follow OCSF API Activity (class 6003) where it fits:
/// `uid` is `metadata.uid`, `api.operation`/`api.service` are OCSF's, `src_ip` is `src_endpoint.ip`,
/// `user_agent` is `http_request.user_agent`. JSON Schema: `schemas/event.v1.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The provider's event id (CloudTrail `eventID`); the deduplication key.
    pub uid: String,
    /// Event time (CloudTrail `eventTime`).
    pub time: EventTime,
    pub cloud: Cloud,
    /// The account the call was made in (CloudTrail `recipientAccountId`, else the actor's account).
    pub account_uid: String,
    pub region: String,
    pub actor: Actor,
    pub api: Api,
    /// IAM actions the call exercised, spelled as the action catalog spells them (`s3:GetObject`).
    /// Empty when the call needs no permission or could not be mapped (see `mapping`).
    pub actions: Vec<String>,
    pub mapping: ActionMapping,
    /// ARNs (or names, where the log gives no ARN) of the resources the call touched.
    pub resources: Vec<String>,
    pub status: Status,
    /// The provider's error code on failure (`AccessDenied`, `NoSuchBucket`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    /// CloudTrail `requestParameters`, verbatim except that values of secret-looking keys (passwords,
    /// session tokens, secret keys; `grantwatch_core::cloudtrail::redact`) read `"<redacted>"`, for
    /// calls that change something (detection rules read them: who got an access key, which policy
    /// became public). Absent for read-only calls and for documents over [`RAW_DETAIL_MAX`] bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<RawJson>,
    /// CloudTrail `responseElements`, on the same terms as `request` (never for reads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<RawJson>,
    /// CloudTrail `additionalEventData` of calls that are not read-only and of sign-ins (a console
    /// sign-in's `MFAUsed`), redacted and bounded like `request`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional: Option<RawJson>,
    /// CloudTrail `errorMessage` of a failed call, cut to [`ERROR_MESSAGE_MAX`] bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
}

/// The longest `errorMessage` an [`Event`] carries (CloudTrail's own can quote whole policies).
pub const ERROR_MESSAGE_MAX: usize = 1024;

/// `s` cut to at most `max` bytes, on a character boundary: how text from a record is bounded.
pub fn cut_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The largest `requestParameters` / `responseElements` document an [`Event`] carries.
pub const RAW_DETAIL_MAX: usize = 16 * 1024;

/// A JSON document kept as its text: copied, never parsed, until a rule asks for a field.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RawJson(pub Box<serde_json::value::RawValue>);

impl RawJson {
    pub fn from_text(text: &str) -> Option<Self> {
        serde_json::value::RawValue::from_string(text.to_string()).ok().map(RawJson)
    }

    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// The document as a tree (for rules; costs a parse).
    pub fn parse(&self) -> Option<serde_json::Value> {
        serde_json::from_str(self.get()).ok()
    }
}

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Eq for RawJson {}

/// Request parameters may name things a log reader should not see in passing (user names, bucket
/// policies): Debug shows the size only.
impl std::fmt::Debug for RawJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RawJson({} bytes)", self.get().len())
    }
}

/// Who made the call, resolved to the IAM identity that holds the permissions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The identity's stable id: its IAM ARN (for an assumed-role session, the role's ARN, not the session's).
    pub uid: String,
    pub kind: IdentityKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_uid: Option<String>,
    /// For a role session: the session name (for `AWSReservedSSO_*` roles, the human behind it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<String>,
    /// The access key id used (`AKIA...` long-term, `ASIA...` temporary). Not a secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// The AWS service that made the call on the identity's behalf, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invoked_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mfa_authenticated: Option<bool>,
    /// The IAM Identity Center user behind the call (CloudTrail `userIdentity.onBehalfOf.userId`), when
    /// the record names one: Identity Center users' own calls, and identity-enhanced role sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
    /// The person behind the call (a `humans.jsonl` id), when identities are linked to people
    /// (`docs/identity-providers.md`): the identity's human, or, for a shared Identity Center role,
    /// the human of this session. Set by the normalizer that knows the links; alerts carry it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub human: Option<String>,
}

/// The API call as the provider names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Api {
    /// CloudTrail `eventSource`, e.g. `s3.amazonaws.com`.
    pub service: String,
    /// CloudTrail `eventName`, e.g. `GetObject`.
    pub operation: String,
}

/// How `actions` was derived from the API call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionMapping {
    /// `prefix:eventName` is an action of the catalog.
    Direct,
    /// A listed exception (renamed event, API-version suffix, call needing several actions).
    Exception,
    /// The call needs no IAM permission (e.g. `signin:ConsoleLogin`, `sts:GetCallerIdentity`).
    NoPermission,
    /// No action could be derived: counted and listed in the ingest report, never silently dropped.
    Unmapped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Status {
    Success,
    Failure,
}
