//! Remediation plans (`grantwatch remediate plan`), what `remediate apply` executes and the journal it
//! keeps. JSON Schema: `schemas/remediation_plan.v1.json`, `schemas/remediation_journal.v1.json`.
//!
//! A plan is data, never code: every change names the API call's subject and carries the documents it
//! writes, so a reviewer reads exactly what `apply` will do, and `apply` needs nothing but the plan.

use serde::{Deserialize, Serialize};

use crate::{EventTime, IdentityKind};

/// The plan format's version, in `plan.json`'s `schema`.
pub const PLAN_SCHEMA: &str = "grantwatch.remediation-plan.v1";

/// Which identities a plan looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanScope {
    /// No activity in the lookback: every permission is taken away (the identity is kept, disabled;
    /// its deletion is proposed, never applied).
    Inactive,
    /// Active, using less than the over-provisioned ratio of its grants: right-sized to what it used.
    OverProvisioned,
    /// Both, and every other active identity with unused permissions.
    All,
}

/// `remediate plan`'s whole output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemediationPlan {
    /// [`PLAN_SCHEMA`].
    pub schema: String,
    /// The grantwatch version that wrote the plan.
    pub generated_by: String,
    /// The end of the lookback (the latest event time, unless given).
    pub as_of: EventTime,
    pub lookback_days: u32,
    /// The start of the lookback: usage before it does not count.
    pub window_start: EventTime,
    pub scope: PlanScope,
    /// The replay proof: every event of the lookback evaluated against the `after` snapshot.
    pub replay: ReplayProof,
    /// Per account: identities touched, actions removed, PCI before and after.
    pub accounts: Vec<AccountPlanSummary>,
    /// One entry per identity that changes, in ARN order.
    pub identities: Vec<IdentityPlan>,
    /// Identities in scope that the plan leaves alone, and why (service-linked, nothing unused, ...).
    pub skipped: Vec<SkippedIdentity>,
}

/// What the replay of the lookback against the `after` snapshot found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayProof {
    /// Successful calls of the lookback that needed a permission, evaluated (every one, not a sample).
    pub events_replayed: u64,
    /// Distinct (identity, action, resource) requests among them.
    pub requests: u64,
    /// Of the replayed events, those the `before` snapshot allows and the `after` snapshot denies. A
    /// plan is written only when this is 0.
    pub events_denied: u64,
    /// Replayed events the `before` snapshot does not explain either (resource policies, a stale
    /// snapshot, an identity of another account): not the plan's doing, counted apart.
    pub events_unexplained_before: u64,
    /// Allowed after only under a condition the snapshot cannot decide (as before).
    pub events_conditional: u64,
    /// Events of callers the snapshot does not hold (other accounts, deleted identities, services):
    /// no plan changes them.
    pub events_other_identities: u64,
    /// The denied requests (at most 100), each with its event count.
    pub denied: Vec<DeniedRequest>,
}

/// A past successful call the `after` snapshot would deny.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeniedRequest {
    pub identity: String,
    pub action: String,
    /// The resource ARN, or `*` when the event named none.
    pub resource: String,
    pub events: u64,
    /// One event id of them, to look the call up.
    pub example_event: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountPlanSummary {
    pub account: String,
    pub identities_touched: u64,
    pub actions_removed: u64,
    /// The account's PCI before and after: the mean over its users and roles, as `accounts.json`
    /// reports it, unrounded.
    pub pci_before: f64,
    pub pci_after: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedIdentity {
    pub arn: String,
    pub reason: String,
}

/// Why an identity is in the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanReason {
    Inactive,
    OverProvisioned,
    UnusedPermissions,
}

/// Everything a plan does to one identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdentityPlan {
    pub arn: String,
    pub account: String,
    pub kind: IdentityKind,
    pub name: String,
    pub reason: PlanReason,
    /// The identity's last activity of any kind, if the logs saw it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_activity: Option<EventTime>,
    pub granted_before: u64,
    pub granted_after: u64,
    /// Granted actions used in the lookback (all kept).
    pub used: u64,
    /// The identity's PCI (0–100) before and after.
    pub pci_before: u8,
    pub pci_after: u8,
    /// What the identity has in IAM now: `apply` refuses to run when the live state differs.
    pub before: IdentityIamState,
    /// In the order `apply` makes them: additions first, then removals, so that access never widens
    /// past `before` and never narrows past the plan mid-way.
    pub changes: Vec<Change>,
    /// Removed actions, with when each was last used (never, or before the lookback).
    pub removed: Vec<RemovedAction>,
    /// What stays, said plainly: kept actions (compact form), the boundary, the group memberships that
    /// grant nothing unused, the actions kept because they need no permission.
    pub kept: Vec<String>,
    /// What a human should decide and `apply` never does (deleting an inactive identity).
    pub proposals: Vec<String>,
}

/// An action a plan removes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedAction {
    pub action: String,
    /// Last use before the lookback, if the logs saw one; absent: never used in the logs read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_used: Option<EventTime>,
}

/// An identity's IAM state as a plan saw it: attachments, inline documents, groups, keys.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IdentityIamState {
    /// Attached managed policy ARNs, sorted.
    pub managed_policies: Vec<String>,
    /// Inline policies, by name (sorted), with their documents.
    pub inline_policies: Vec<NamedDocument>,
    /// Groups (users only), by name, sorted.
    pub groups: Vec<String>,
    /// Access keys (users only) and their status.
    pub access_keys: Vec<AccessKeyState>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedDocument {
    pub name: String,
    pub document: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessKeyState {
    pub access_key_id: String,
    /// `Active` or `Inactive`.
    pub status: String,
}

/// One IAM change. The subject is the plan entry's identity (`kind` says user or role; `name` is the
/// API's `UserName` / `RoleName`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    /// `CreatePolicy`: a customer-managed policy holding what the identity keeps.
    CreatePolicy {
        policy_name: String,
        path: String,
        /// The ARN the policy will have (`arn:aws:iam::<account>:policy<path><name>`).
        policy_arn: String,
        document: serde_json::Value,
        description: String,
    },
    /// `AttachUserPolicy` / `AttachRolePolicy`.
    AttachPolicy { policy_arn: String },
    /// `DetachUserPolicy` / `DetachRolePolicy`.
    DetachPolicy { policy_arn: String, why: String },
    /// `DeleteUserPolicy` / `DeleteRolePolicy`; `document` is what was there (for rollback and review).
    DeleteInlinePolicy { policy_name: String, document: serde_json::Value, why: String },
    /// `RemoveUserFromGroup`: what the user used of the group's grants is in the created policy.
    RemoveFromGroup { group: String, why: String },
    /// `UpdateAccessKey` to `Inactive`.
    DeactivateAccessKey { access_key_id: String, why: String },
    /// An IAM Identity Center role (`AWSReservedSSO_*`) is managed through its permission set, never
    /// edited in IAM: `PutInlinePolicyToPermissionSet` with `inline_policy`, detach `detach_managed`,
    /// then `ProvisionPermissionSet`. The permission set is found by name in the instance.
    UpdatePermissionSet {
        permission_set_name: String,
        inline_policy: serde_json::Value,
        detach_managed: Vec<String>,
        why: String,
    },
}

impl Change {
    /// The API operation's name, as the dry run prints it and the journal records it.
    pub fn operation(&self, kind: IdentityKind) -> &'static str {
        let user = kind == IdentityKind::User;
        match self {
            Change::CreatePolicy { .. } => "CreatePolicy",
            Change::AttachPolicy { .. } if user => "AttachUserPolicy",
            Change::AttachPolicy { .. } => "AttachRolePolicy",
            Change::DetachPolicy { .. } if user => "DetachUserPolicy",
            Change::DetachPolicy { .. } => "DetachRolePolicy",
            Change::DeleteInlinePolicy { .. } if user => "DeleteUserPolicy",
            Change::DeleteInlinePolicy { .. } => "DeleteRolePolicy",
            Change::RemoveFromGroup { .. } => "RemoveUserFromGroup",
            Change::DeactivateAccessKey { .. } => "UpdateAccessKey",
            Change::UpdatePermissionSet { .. } => "PutInlinePolicyToPermissionSet",
        }
    }

    /// Whether the change can only take permissions away (everything but creating and attaching).
    pub fn narrows(&self) -> bool {
        !matches!(self, Change::CreatePolicy { .. } | Change::AttachPolicy { .. })
    }
}

/// A plan proposal on the `grantwatch.remediation` topic: the processor's over-provisioned or
/// inactive finding, as the change it suggests (applied only by a human `remediate apply`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemediationProposal {
    /// OCSF 1.3+: Remediation Activity, class 7001 in category 7 (Remediation); `activity_id` 4 =
    /// Harden (D3FEND d3f:Harden), `activity_name` "Harden" and `status` the proposal's (never applied).
    pub class_uid: u32,
    pub category_uid: u32,
    pub activity_id: u32,
    pub activity_name: String,
    pub time: EventTime,
    pub identity: String,
    pub account: String,
    pub kind: IdentityKind,
    pub reason: PlanReason,
    /// Actions the proposal would remove (compact form).
    pub remove: Vec<String>,
    /// Actions it keeps (compact form).
    pub keep: Vec<String>,
    pub unused_count: u64,
    pub granted_count: u64,
    pub lookback_days: u32,
    /// The command that turns the proposal into a reviewed plan.
    pub plan_command: String,
}

// ---------------------------------------------------------------------------------------------------
// The journal of `remediate apply`, `remediate rollback` and `iam attach|detach`.
// ---------------------------------------------------------------------------------------------------

/// The journal format's version, in every line's `schema`.
pub const JOURNAL_SCHEMA: &str = "grantwatch.remediation-journal.v1";

/// One line of a journal: JSON Lines, append-only, each line fsync'd before the next call is made.
/// A step is a [`JournalRecord::Begun`] line written before its API call and a
/// [`JournalRecord::Done`] (or [`JournalRecord::Failed`]) line written after it; a `Begun` with neither
/// is a call whose outcome is unknown (the process stopped), which the next run re-checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// [`JOURNAL_SCHEMA`].
    pub schema: String,
    /// The line's position in the file, from 1.
    pub seq: u64,
    /// When the line was written (the CLI's wall clock: an audit stamp, never used in decisions).
    pub time: EventTime,
    /// The command invocation that wrote the line.
    pub run: String,
    #[serde(flatten)]
    pub record: JournalRecord,
}

/// Which command wrote a run's lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JournalCommand {
    Apply,
    Rollback,
    Attach,
    Detach,
}

/// What a journal line says.
// `Begun` is the big one and the most frequent: boxing it would only add an allocation per line.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "entry", rename_all = "snake_case")]
pub enum JournalRecord {
    /// A run began, acting on `account` (the caller's).
    RunStarted {
        command: JournalCommand,
        account: String,
        /// `remediate apply`: the plan file.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        plan: Option<String>,
        /// Identities of `account` the run acts on.
        identities: u64,
        /// Identities of other accounts it leaves for a run with their credentials.
        other_account_identities: u64,
    },
    /// A call is about to be made (written and fsync'd first).
    Begun {
        /// Unique in the journal: `<run>/<n>`.
        step: String,
        /// `remediate apply`: the plan change this step makes (`<identity ARN>#<index in changes>`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
        /// `remediate rollback`: the step this call undoes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        undoes: Option<String>,
        account: String,
        /// The identity the change is for (absent for a policy's own calls).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        identity: Option<String>,
        /// The AWS API operation (`AttachUserPolicy`, `PutInlinePolicyToPermissionSet`, ...).
        operation: String,
        call: IamCall,
        /// What the call replaces, as read from IAM before it.
        prior: Prior,
    },
    /// The step's change is in effect.
    Done {
        step: String,
        outcome: StepOutcome,
        /// The AWS request ids of the calls made (none when no call was needed).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        request_ids: Vec<String>,
        /// `CreatePolicy`: the version created (or found).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    /// AWS refused the call: nothing changed (the next run tries the step again).
    Failed {
        step: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<String>,
        message: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        request_ids: Vec<String>,
    },
    /// A rollback restored what `step` changed (every undoing call is done).
    Undone { step: String },
    /// The run refused to make any call: the live state differs from the plan's (or the journal's).
    Refused { drift: Vec<Drift> },
    /// The run ended (an aborted run has no such line).
    RunFinished {
        outcome: RunOutcome,
        /// API calls that change IAM made by this run.
        calls: u64,
        /// Steps found already done (by an earlier run, or in IAM).
        #[serde(default)]
        already_done: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepOutcome {
    /// This journal's call made the change: a rollback undoes it.
    Done,
    /// IAM already was in the state the step asks for: nothing to undo.
    AlreadyInState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    Completed,
    Refused,
    Failed,
}

/// One difference between an identity's live state and what the plan (or journal) expects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drift {
    pub identity: String,
    pub difference: String,
}

/// The identity a call acts on: `name` is the API's `UserName` / `RoleName` / `GroupName`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Subject {
    pub kind: IdentityKind,
    pub name: String,
    pub arn: String,
}

/// One IAM change as the journal records it: everything needed to make it again or undo it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum IamCall {
    CreatePolicy {
        policy_arn: String,
        policy_name: String,
        path: String,
        description: String,
        document: serde_json::Value,
    },
    /// `Attach{User,Role,Group}Policy`.
    AttachPolicy {
        subject: Subject,
        policy_arn: String,
    },
    /// `Detach{User,Role,Group}Policy`.
    DetachPolicy {
        subject: Subject,
        policy_arn: String,
    },
    /// `Delete{User,Role,Group}Policy`.
    DeleteInlinePolicy {
        subject: Subject,
        policy_name: String,
    },
    /// `Put{User,Role,Group}Policy` (a rollback restoring a deleted inline policy).
    PutInlinePolicy {
        subject: Subject,
        policy_name: String,
        document: serde_json::Value,
    },
    RemoveUserFromGroup {
        subject: Subject,
        group: String,
    },
    AddUserToGroup {
        subject: Subject,
        group: String,
    },
    /// `UpdateAccessKey` to `status` (`Active` / `Inactive`).
    UpdateAccessKey {
        subject: Subject,
        access_key_id: String,
        status: String,
    },
    DeletePolicyVersion {
        policy_arn: String,
        version_id: String,
    },
    DeletePolicy {
        policy_arn: String,
    },
    /// IAM Identity Center: set the permission set's inline policy (`None`: delete it), detach and
    /// attach managed policies, then `ProvisionPermissionSet` to every account it is provisioned to.
    UpdatePermissionSet {
        permission_set_name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        inline_policy: Option<serde_json::Value>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        detach_managed: Vec<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        attach_managed: Vec<String>,
    },
}

impl IamCall {
    /// The AWS API operation's name (the first one, for a permission set's sequence).
    pub fn operation(&self) -> &'static str {
        let by_kind = |s: &Subject, user: &'static str, role: &'static str, group: &'static str| match s.kind {
            IdentityKind::Role => role,
            IdentityKind::Group => group,
            _ => user,
        };
        match self {
            IamCall::CreatePolicy { .. } => "CreatePolicy",
            IamCall::AttachPolicy { subject, .. } => {
                by_kind(subject, "AttachUserPolicy", "AttachRolePolicy", "AttachGroupPolicy")
            }
            IamCall::DetachPolicy { subject, .. } => {
                by_kind(subject, "DetachUserPolicy", "DetachRolePolicy", "DetachGroupPolicy")
            }
            IamCall::DeleteInlinePolicy { subject, .. } => {
                by_kind(subject, "DeleteUserPolicy", "DeleteRolePolicy", "DeleteGroupPolicy")
            }
            IamCall::PutInlinePolicy { subject, .. } => {
                by_kind(subject, "PutUserPolicy", "PutRolePolicy", "PutGroupPolicy")
            }
            IamCall::RemoveUserFromGroup { .. } => "RemoveUserFromGroup",
            IamCall::AddUserToGroup { .. } => "AddUserToGroup",
            IamCall::UpdateAccessKey { .. } => "UpdateAccessKey",
            IamCall::DeletePolicyVersion { .. } => "DeletePolicyVersion",
            IamCall::DeletePolicy { .. } => "DeletePolicy",
            IamCall::UpdatePermissionSet { inline_policy: Some(_), .. } => "PutInlinePolicyToPermissionSet",
            IamCall::UpdatePermissionSet { .. } => "DeleteInlinePolicyFromPermissionSet",
        }
    }
}

/// What a call replaces, read from IAM before it (only the fields that concern the call are set).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Prior {
    /// Attach/detach: whether the policy was attached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached: Option<bool>,
    /// Delete/put inline: the document that was there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<serde_json::Value>,
    /// Group calls: whether the user was a member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<bool>,
    /// `UpdateAccessKey`: the key's status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// `CreatePolicy` / `DeletePolicy`: whether the policy existed, and its default version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_exists: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_version_id: Option<String>,
    /// `UpdatePermissionSet`: the permission set as it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission_set: Option<PermissionSetState>,
}

/// A permission set's policies (IAM Identity Center).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PermissionSetState {
    pub instance_arn: String,
    pub permission_set_arn: String,
    /// The inline policy, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline_policy: Option<serde_json::Value>,
    /// Attached AWS managed policy ARNs, sorted.
    pub managed_policies: Vec<String>,
}
