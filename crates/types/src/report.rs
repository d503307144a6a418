//! The records grantwatch writes for people and other programs: findings per identity and per account,
//! and the ingest report. JSON Schemas: `schemas/identity.v1.json`, `schemas/accounts.v1.json`,
//! `schemas/ingest_report.v1.json`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Cloud, EventTime, IdentityKind};

/// Status flags of an identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusFlag {
    /// No activity in the lookback window.
    Inactive,
    /// Active, but uses less than the configured share of what it is granted.
    OverProvisioned,
    /// Can do everything, or can grant itself anything, in its account.
    SuperIdentity,
    /// Is not an administrator but can become one through the escalation graph (its `escalation`
    /// says how).
    EscalationPath,
}

/// A PCI band: low 0–33, medium 34–66, high 67–100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PciBand {
    Low,
    Medium,
    High,
}

impl PciBand {
    pub fn of(score: u8) -> PciBand {
        match score {
            0..=33 => PciBand::Low,
            34..=66 => PciBand::Medium,
            _ => PciBand::High,
        }
    }
}

/// A Permission Creep Index score with the formula version that produced it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pci {
    /// 0–100.
    pub score: u8,
    pub band: PciBand,
    /// The formula's version (`docs/pci.md`); scores of different versions are not comparable.
    pub version: String,
    /// Weighted risk of the granted actions not used in the lookback.
    pub unused_risk: f64,
    /// Weighted risk of all granted actions.
    pub granted_risk: f64,
}

/// An access key that is active but has not been used in the lookback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnusedAccessKey {
    pub access_key_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<EventTime>,
    /// Last use seen in the logs (ever, not only in the lookback), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_used: Option<EventTime>,
}

/// Everything grantwatch knows about one identity: one line of `identities.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdentityFinding {
    pub arn: String,
    pub account: String,
    pub cloud: Cloud,
    /// The human behind this identity, when grantwatch links one (`docs/multi-cloud.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub human: Option<String>,
    pub kind: IdentityKind,
    pub name: String,
    /// Actions granted on at least one resource they apply to, sorted, spelled as the catalog spells them.
    pub granted_actions: Vec<String>,
    /// The subset of `granted_actions` granted only under a condition.
    pub conditional_actions: Vec<String>,
    /// Granted actions used (successfully or not) in the lookback.
    pub used_actions: Vec<String>,
    /// Granted actions not used in the lookback.
    pub unused_actions: Vec<String>,
    /// Actions used in the lookback that the snapshot does not grant (resource policies, SCP-less
    /// cross-account access, a stale snapshot): shown, not hidden.
    pub used_not_granted: Vec<String>,
    /// Granted high-risk actions (write, permissions management, privilege escalation) not used in the lookback.
    pub unused_high_risk: usize,
    pub pci: Pci,
    pub status: Vec<StatusFlag>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_activity: Option<EventTime>,
    /// Events by this identity in the lookback.
    pub events_in_lookback: u64,
    /// Distinct days with activity in the lookback.
    pub active_days: u32,
    pub unused_access_keys: Vec<UnusedAccessKey>,
    /// Distinct role-session names seen in the lookback (for SSO roles: the humans behind the role).
    pub session_names: Vec<String>,
    pub recommendations: Vec<String>,
    /// How `granted_actions`, `conditional_actions`, `used_actions` and `unused_actions` are written.
    #[serde(default)]
    pub actions_form: ActionsForm,
    /// The sizes of those four lists written out in full, whatever their form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_counts: Option<ActionCounts>,
    /// How this identity is, or can become, an administrator (`docs/escalation.md`); absent when it
    /// cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation: Option<Escalation>,
}

/// How an identity is, or can become, an administrator: an edge of the escalation graph is a way
/// for one identity to act as another or to raise its own permissions (`docs/escalation.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escalation {
    /// Why the identity is an administrator itself (e.g. `holds nearly every action`,
    /// `iam:PutUserPolicy on itself`); absent when it only reaches one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<String>,
    /// A shortest path to an administrator, first step first; empty when `admin` is set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path: Vec<EscalationStep>,
    /// The administrator the path ends at (the identity itself when `admin` is set).
    pub administrator: String,
    /// Why the administrator at the end of the path is one.
    pub administrator_reason: String,
    /// Some step, or the administrator's own reason, holds only under a Condition (MFA, an
    /// external id, a tag, ...): the path is real only if it is met.
    pub conditional: bool,
}

/// One way into a resource from outside its account, or from anyone: a line of
/// `resource_access.jsonl`, from role trust policies and resource-based policies (`docs/access.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceAccess {
    /// The role or resource ARN.
    pub resource: String,
    /// The account owning it.
    pub account: String,
    /// `public` (any principal), `cross-account` (an account or principal of another account),
    /// `federated` (an identity provider of another account).
    pub access: String,
    /// The principal as the policy names it (`*`, an account id, an ARN, a provider).
    pub principal: String,
    /// The principal's account is none of the snapshot's accounts.
    pub external: bool,
    /// The actions the statement allows (as written).
    pub actions: Vec<String>,
    /// The statement's Condition, which decides whether the access is real (`sts:ExternalId`,
    /// `aws:PrincipalOrgID`, `aws:SourceArn`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<serde_json::Value>,
    /// `trust:<role ARN>` or `resource:<resource ARN>`, and the statement's index in it.
    pub policy: String,
    pub statement: u32,
}

/// One step of an escalation path: `from` can act as `to` (or, for a group, gain its permissions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscalationStep {
    pub from: String,
    pub to: String,
    /// `assume-role`, `create-access-key`, `login-profile`, `update-trust-policy`, `pass-role`,
    /// `ssm`, `add-to-group`; GCP: `impersonate-service-account`.
    pub kind: String,
    /// The actions the step takes, e.g. `["iam:PassRole", "lambda:CreateFunction"]`.
    pub actions: Vec<String>,
    pub conditional: bool,
    /// The policies whose statements allow it.
    pub policies: Vec<String>,
}

/// The form of a finding's action lists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionsForm {
    /// Every action named.
    #[default]
    Exact,
    /// `prefix:*` stands for every action of that service prefix in the catalog, `*` for the whole
    /// catalog; other entries are single actions. Expanding the entries against the catalog gives the
    /// exact list (`grantwatch_core::findings::expand_actions`).
    Compact,
}

/// Sizes of a finding's action lists, written out in full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionCounts {
    pub granted: usize,
    pub conditional: usize,
    pub used: usize,
    pub unused: usize,
}

/// Counts of identities per PCI band.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BandCounts {
    pub low: usize,
    pub medium: usize,
    pub high: usize,
}

/// The roll-up of one account: an entry of `accounts.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountSummary {
    pub account: String,
    pub cloud: Cloud,
    /// Mean PCI over the account's identities (users and roles; groups are reported, not averaged).
    pub pci: u8,
    pub pci_band: PciBand,
    pub pci_version: String,
    pub pci_distribution: BandCounts,
    pub identities: usize,
    pub by_kind: BTreeMap<String, usize>,
    pub inactive: usize,
    pub over_provisioned: usize,
    pub super_identities: usize,
    pub unused_access_keys: usize,
    pub granted_actions: usize,
    pub unused_actions: usize,
}

/// `accounts.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountsReport {
    pub as_of: EventTime,
    pub lookback_days: u32,
    pub pci_version: String,
    pub accounts: Vec<AccountSummary>,
}

/// An input file or record that was set aside, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantined {
    pub file: String,
    /// Index of the record in its file (0-based), or absent when the whole file was set aside.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<u64>,
    pub reason: String,
}

/// An (eventSource, eventName) pair that could not be mapped to an IAM action, with its count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnmappedCall {
    pub service: String,
    pub operation: String,
    pub count: u64,
}

/// `ingest_report.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestReport {
    pub files_read: u64,
    /// Files skipped because the state already holds them (same path, size and content hash).
    pub files_already_ingested: u64,
    pub files_quarantined: u64,
    pub records_read: u64,
    pub records_quarantined: u64,
    /// Well-formed records that are not API calls (CloudTrail Insights events): skipped, not quarantined.
    pub non_api_records: u64,
    /// Records quarantined for an event time that cannot be true (see `grantwatch_core::time_guard`);
    /// included in `records_quarantined`.
    #[serde(default)]
    pub records_time_refused: u64,
    /// Quarantined records not copied into the quarantine file (per-file cap); included in
    /// `records_quarantined`.
    #[serde(default)]
    pub quarantine_copies_left_out: u64,
    /// Paths under a named directory that could not be listed or read (each also in `quarantined`).
    #[serde(default)]
    pub paths_skipped: u64,
    /// Records whose event id was already counted (in this run or, with `--state`, an earlier one).
    pub duplicates: u64,
    pub events_counted: u64,
    /// Events of calls that need no IAM permission (counted as activity, grant no action).
    pub no_permission_events: u64,
    pub unmapped_events: u64,
    pub unmapped_calls: Vec<UnmappedCall>,
    /// Quarantined inputs, at most the first 1,000; the counts above are complete.
    pub quarantined: Vec<Quarantined>,
    /// Where quarantined records were written, if anywhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantine_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_event: Option<EventTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_event: Option<EventTime>,
    pub iam_snapshots_read: u64,
    pub identities: u64,
    /// Audit events of the access service read (`--access-log`): the permissions granted on demand
    /// that detection judged the calls against.
    #[serde(default)]
    pub access_events_read: u64,
}
