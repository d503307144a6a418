//! What the journaled runs need of AWS, as a trait: the real client ([`crate::AwsIam`]) implements it
//! over the SDK, and the unit tests over an in-memory account, so that ordering, resume and rollback
//! are tested without a server.

use grantwatch_types::{IamCall, IdentityIamState, PermissionSetState, Subject};

/// Who the credentials are (STS GetCallerIdentity).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub account: String,
    /// The caller's ARN (an identifier, not a secret: printed so the operator sees who acts).
    pub arn: String,
}

/// A managed policy as IAM has it now.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyState {
    pub default_version_id: String,
    /// The default version's document, URL-decoded.
    pub document: serde_json::Value,
    /// Every version id, with whether it is the default.
    pub versions: Vec<(String, bool)>,
}

/// What a changing call returned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallOutput {
    /// The AWS request ids of the requests made (several for a permission set).
    pub request_ids: Vec<String>,
    /// `CreatePolicy`: the version it created.
    pub version_id: Option<String>,
}

/// How a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiErrorKind {
    /// AWS answered with an error: the call did not take effect.
    Service,
    /// The request was never sent (no credentials, no region, a bad parameter).
    NotSent,
    /// Sent, but no usable answer (connection, timeout, a server error after the retries): the change
    /// may or may not have been made.
    Unknown,
}

/// A failed AWS request: its code, message and request id, never the request itself (which is signed
/// with the credentials).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}{}", code.as_deref().map(|c| format!("{c}: ")).unwrap_or_default(), request_id.as_deref().map(|r| format!(" (request id {r})")).unwrap_or_default())]
pub struct ApiError {
    pub kind: ApiErrorKind,
    pub code: Option<String>,
    pub message: String,
    pub request_id: Option<String>,
}

impl ApiError {
    pub fn service(code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            kind: ApiErrorKind::Service,
            code: Some(code.to_string()),
            message: message.into(),
            request_id: None,
        }
    }

    /// IAM's `NoSuchEntity`, Identity Center's `ResourceNotFoundException`.
    pub fn is_not_found(&self) -> bool {
        matches!(self.code.as_deref(), Some("NoSuchEntity" | "ResourceNotFoundException"))
    }

    /// IAM's `EntityAlreadyExists`.
    pub fn is_already_exists(&self) -> bool {
        self.code.as_deref() == Some("EntityAlreadyExists")
    }

    /// Whether the call may have taken effect although it failed.
    pub fn outcome_unknown(&self) -> bool {
        self.kind == ApiErrorKind::Unknown
    }
}

/// The AWS operations the runs make. Reads take `&mut self` too: the in-memory account of the tests
/// counts them.
pub trait IamApi {
    /// STS GetCallerIdentity.
    fn caller(&mut self) -> Result<Caller, ApiError>;
    /// An identity's attached managed policies, inline policies with their documents (URL-decoded),
    /// groups and access keys, each list sorted. `NoSuchEntity` when it does not exist.
    fn live_state(&mut self, subject: &Subject) -> Result<IdentityIamState, ApiError>;
    /// A managed policy, or `None` when there is none with this ARN.
    fn policy(&mut self, policy_arn: &str) -> Result<Option<PolicyState>, ApiError>;
    /// The users, roles and groups a managed policy is attached to (ListEntitiesForPolicy).
    fn policy_entities(&mut self, policy_arn: &str) -> Result<Vec<Subject>, ApiError>;
    /// A permission set of the account's Identity Center instance, found by name.
    fn permission_set(&mut self, name: &str) -> Result<PermissionSetState, ApiError>;
    /// Makes one change. Every call is idempotent in effect except `CreatePolicy`
    /// (`EntityAlreadyExists`) and the removals (`NoSuchEntity`), which the caller interprets.
    fn call(&mut self, call: &IamCall) -> Result<CallOutput, ApiError>;
}
