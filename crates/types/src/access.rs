//! Permissions on demand: access requests, the grants they become, and the log of every transition.
//!
//! These records are what the access service stores, writes to its audit topic and returns over its
//! API, so all three share one shape. The logic (validation, risk, approvals, the transition table,
//! the revocation scheduler) lives in `grantwatch-access`; this module is data only.

use serde::{Deserialize, Serialize};

use crate::EventTime;

/// The actor a transition names when no person made it (auto-approval, the revocation scheduler's
/// outcome). A principal may not be called this, so the log never confuses the two.
pub const SYSTEM_ACTOR: &str = "system";

/// The identity that is to receive the extra permissions.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RequestedIdentity {
    /// An IAM user, by ARN (`arn:aws:iam::123456789012:user/path/name`).
    IamUser { arn: String },
    /// An IAM role, by ARN (`arn:aws:iam::123456789012:role/path/name`): a workload or a federated human.
    IamRole { arn: String },
    /// An IAM Identity Center user, by its identity store user id.
    IdentityCenterUser { user_id: String },
}

/// One statement of an actions-with-resources request: the actions (names or IAM wildcards) and the
/// resources (ARNs or `*`) they are allowed on.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ActionGrant {
    pub action: String,
    pub resources: Vec<String>,
}

/// What is requested.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RequestedAccess {
    /// Exactly these actions on these resources, installed as an inline policy.
    Actions { grants: Vec<ActionGrant> },
    /// An existing managed policy (AWS managed or of the target account), attached.
    ManagedPolicy { policy_arn: String },
    /// An IAM Identity Center permission set, assigned on one account.
    PermissionSet { name: String, account_id: String },
}

/// A request as submitted. The id is the caller's (the service makes it unique); it names the inline
/// policy and the state keys, so it is restricted to `[A-Za-z0-9_-]`, at most 64 characters.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRequest {
    pub id: String,
    pub identity: RequestedIdentity,
    pub access: RequestedAccess,
    /// How long the grant lasts once active.
    pub duration_secs: u64,
    pub justification: String,
    /// A change or incident ticket, if the requester gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// The authenticated principal that asked.
    pub requester: String,
    /// The AWS account the permissions are granted in.
    pub account_id: String,
}

/// Where a request is in its life.
///
/// `pending → approved → active → expired` is the ordinary path; `denied` and `cancelled` end a
/// request that was never active; `revoked` ends a grant taken back before its time; `failed` ends
/// one that could not be installed (or was abandoned by an operator).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessState {
    Pending,
    Approved,
    Active,
    Expired,
    Denied,
    Cancelled,
    Revoked,
    Failed,
}

impl AccessState {
    pub const ALL: [AccessState; 8] = [
        AccessState::Pending,
        AccessState::Approved,
        AccessState::Active,
        AccessState::Expired,
        AccessState::Denied,
        AccessState::Cancelled,
        AccessState::Revoked,
        AccessState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AccessState::Pending => "pending",
            AccessState::Approved => "approved",
            AccessState::Active => "active",
            AccessState::Expired => "expired",
            AccessState::Denied => "denied",
            AccessState::Cancelled => "cancelled",
            AccessState::Revoked => "revoked",
            AccessState::Failed => "failed",
        }
    }

    /// No command leaves a terminal state.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            AccessState::Expired
                | AccessState::Denied
                | AccessState::Cancelled
                | AccessState::Revoked
                | AccessState::Failed
        )
    }
}

impl std::fmt::Display for AccessState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to a request: the input of the transition table.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessCommand {
    /// The request was validated and stored.
    Submit,
    /// One approval that does not yet complete the quorum (a high-risk request's first approver).
    AddApproval,
    /// The approval that completes the quorum (or the auto-approval of a low-risk request).
    Approve,
    Deny,
    /// The requester (or an operator) withdrew the request before it became active.
    Cancel,
    /// The grant is about to be installed: from here on the scheduler will revoke it.
    Activate,
    /// Someone asked to take an active grant back early, or its installation failed: revoke now.
    RequestRevoke,
    /// A revocation worker took the grant (a lease: it is not due again until the lease runs out).
    Claim,
    /// A revocation attempt failed; it is retried later.
    RevokeFailed,
    /// Revoked at (or after) its deadline.
    Expire,
    /// Revoked before its deadline, on request.
    Revoke,
    /// Never installed, cleaned up after a failed installation, or abandoned by an operator.
    Fail,
}

impl AccessCommand {
    pub const ALL: [AccessCommand; 12] = [
        AccessCommand::Submit,
        AccessCommand::AddApproval,
        AccessCommand::Approve,
        AccessCommand::Deny,
        AccessCommand::Cancel,
        AccessCommand::Activate,
        AccessCommand::RequestRevoke,
        AccessCommand::Claim,
        AccessCommand::RevokeFailed,
        AccessCommand::Expire,
        AccessCommand::Revoke,
        AccessCommand::Fail,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AccessCommand::Submit => "submit",
            AccessCommand::AddApproval => "add_approval",
            AccessCommand::Approve => "approve",
            AccessCommand::Deny => "deny",
            AccessCommand::Cancel => "cancel",
            AccessCommand::Activate => "activate",
            AccessCommand::RequestRevoke => "request_revoke",
            AccessCommand::Claim => "claim",
            AccessCommand::RevokeFailed => "revoke_failed",
            AccessCommand::Expire => "expire",
            AccessCommand::Revoke => "revoke",
            AccessCommand::Fail => "fail",
        }
    }
}

impl std::fmt::Display for AccessCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How much a request could do, which decides how many approvers it needs.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskLevel {
    Low,
    Medium,
    High,
}

impl RiskLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            RiskLevel::Low => "low",
            RiskLevel::Medium => "medium",
            RiskLevel::High => "high",
        }
    }
}

/// One approver's approval.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub approver: String,
    pub at: EventTime,
}

/// Why an active grant is being revoked before its deadline; decides its final state.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EarlyEnd {
    /// Taken back on request: ends `revoked`.
    Revoked { by: String, reason: String },
    /// Its installation failed (perhaps half done): cleaned up, then ends `failed`.
    InstallFailed { error: String },
}

/// A revocation worker's lease on a due grant.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeClaim {
    pub worker: String,
    /// Which attempt this is (1 for the first): the fencing token a completion must present.
    pub attempt: u32,
    pub until: EventTime,
}

/// An active grant's revocation bookkeeping.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeSchedule {
    /// When the grant ends (activation + duration). The inline policy's time condition says the same.
    pub expires_at: EventTime,
    /// When the scheduler next sees it: the deadline, a claim's lease end, or a retry time. The expiry
    /// index holds exactly this entry while the grant is active.
    pub due_at: EventTime,
    /// Revocation attempts made so far (claims taken).
    pub attempts: u32,
    /// Attempts that reported failure.
    pub failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<RevokeClaim>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Raised once `failures` reaches the configured threshold: a person must look.
    pub alert: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_end: Option<EarlyEnd>,
}

/// A request and everything decided about it: the value stored per request.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRecord {
    pub request: AccessRequest,
    pub state: AccessState,
    pub risk: RiskLevel,
    /// The approval rule that matched the target account.
    pub rule: String,
    /// Distinct approvals needed.
    pub approvals_required: u32,
    pub approvals: Vec<Approval>,
    pub submitted_at: EventTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activated_at: Option<EventTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke: Option<RevokeSchedule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<EventTime>,
    /// Transitions recorded so far; the next log entry's `seq`.
    pub version: u64,
}

/// One entry of a request's append-only transition log (and one record of the audit topic).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessTransition {
    pub request_id: String,
    /// 0 for the submission, then one more per transition.
    pub seq: u64,
    /// Given by the caller: the access core never reads a clock.
    pub at: EventTime,
    /// A principal, a revocation worker, or [`SYSTEM_ACTOR`].
    pub by: String,
    pub command: AccessCommand,
    /// `None` for the submission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<AccessState>,
    pub state: AccessState,
    pub reason: String,
}

/// The IAM principal a grant is installed on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GrantPrincipal {
    IamUser { name: String },
    IamRole { name: String },
}

/// What installing a grant does, as data: the service turns it into the one AWS call it names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GrantAction {
    /// `iam:PutUserPolicy` / `iam:PutRolePolicy`.
    PutInlinePolicy { principal: GrantPrincipal, policy_name: String, document: String },
    /// `iam:AttachUserPolicy` / `iam:AttachRolePolicy`.
    AttachManagedPolicy { principal: GrantPrincipal, policy_arn: String },
    /// `sso:CreateAccountAssignment` (principal type USER); the service resolves the permission set
    /// name to its ARN in the Identity Center instance.
    CreateAccountAssignment { account_id: String, permission_set_name: String, user_id: String },
}

/// What revoking a grant does, as data; each is idempotent at the service (an already absent policy or
/// assignment counts as revoked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RevokeAction {
    /// `iam:DeleteUserPolicy` / `iam:DeleteRolePolicy`.
    DeleteInlinePolicy { principal: GrantPrincipal, policy_name: String },
    /// `iam:DetachUserPolicy` / `iam:DetachRolePolicy`.
    DetachManagedPolicy { principal: GrantPrincipal, policy_arn: String },
    /// `sso:DeleteAccountAssignment`.
    DeleteAccountAssignment { account_id: String, permission_set_name: String, user_id: String },
}

/// The schema id of [`AccessAuditEvent`] (`schemas/access_event.v1.json`).
pub const ACCESS_EVENT_SCHEMA: &str = "grantwatch.access-event.v1";

/// One record of the access service's audit log and of its `grantwatch.access` topic: one transition,
/// with what a SIEM needs to read it alone (who got what, on which identity and account, approved by
/// whom, until when).
///
/// `audit_seq` numbers the events of one service's state without gaps, in commit order. The audit
/// file holds each once; the topic is at least once (a crash between the send and its
/// acknowledgement sends again), so a consumer drops an `audit_seq` it has seen — the pair
/// `(request_id, seq)` identifies a transition as well.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessAuditEvent {
    pub schema: String,
    pub audit_seq: u64,
    #[serde(flatten)]
    pub transition: AccessTransition,
    pub identity: RequestedIdentity,
    pub account_id: String,
    pub access: RequestedAccess,
    pub risk: RiskLevel,
    pub requester: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    pub approvals: Vec<Approval>,
    /// When the grant became active (set from the `activate` transition on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activated_at: Option<EventTime>,
    /// When the grant ends: its `aws:CurrentTime` lock (set from the `activate` transition on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<EventTime>,
    /// Set once the grant is revoked and the request ended (expired, revoked, failed...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<EventTime>,
    /// Set while a revocation keeps failing: a person must look.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub alert: bool,
}

impl AccessAuditEvent {
    /// The event of `transition`, read against the record as it stands after it.
    pub fn new(audit_seq: u64, record: &AccessRecord, transition: AccessTransition) -> AccessAuditEvent {
        let revoke = record.revoke.as_ref();
        AccessAuditEvent {
            schema: ACCESS_EVENT_SCHEMA.to_string(),
            audit_seq,
            transition,
            identity: record.request.identity.clone(),
            account_id: record.request.account_id.clone(),
            access: record.request.access.clone(),
            risk: record.risk,
            requester: record.request.requester.clone(),
            ticket: record.request.ticket.clone(),
            approvals: record.approvals.clone(),
            activated_at: record.activated_at,
            expires_at: revoke.map(|r| r.expires_at),
            ended_at: record.ended_at,
            alert: revoke.is_some_and(|r| r.alert),
        }
    }
}
