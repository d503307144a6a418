//! grantwatch's built-in analytics, and the configuration every analytic obeys.
//!
//! Every analytic has a stable id (`grantwatch/...`, `sigma/<rule id>`, `ml/...`), a title, a default
//! severity and the ATT&CK technique it points to. The rules directory's `grantwatch.toml` may disable
//! any of them, change its severity, set how long repeats are grouped into one incident (suppression),
//! and allowlist accounts and identities, globally or per analytic. Unknown analytic ids and unknown
//! keys are errors that name the key: a typo must not silently leave a rule on.

use std::collections::BTreeMap;

use grantwatch_core::glob::Glob;
use grantwatch_types::{AnalyticKind, Event, IdentityKind, Severity, Status};
use serde::Deserialize;

/// What an analytic is, independent of configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalyticInfo {
    pub id: String,
    pub title: String,
    pub kind: AnalyticKind,
    pub severity: Severity,
    /// MITRE ATT&CK technique id (`T1078.004`), or empty.
    pub technique: String,
    /// By default, an identity that triggered this analytic on an earlier day within the lookback is
    /// not alerted again: the behavior is established for it (an administrator who creates access keys
    /// for integration users every week). Off for analytics where every occurrence matters.
    pub suppress_established: bool,
}

/// The analytics built into grantwatch (Sigma rules and models are added from the rules directory and
/// the model directory).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Builtin {
    RootAccountUsed,
    LoggingDisabled,
    ResourceMadePublic,
    AccessKeyForOtherIdentity,
    SelfPrivilegeGrant,
    PolicyVersionEscalation,
    PassRoleToCompute,
    HighRiskPermissionFirstUse,
    FirstTimeAction,
    FirstTimeResource,
    BulkReadNewData,
    FirstTimeRegion,
    DormantIdentityActive,
    NewSuperIdentity,
    PciRise,
    GrantedAndUsed,
    CredentialHarvest,
    RemoteAccessFanout,
    OnDemandUsedAfterExpiry,
    GrantOutsideGrantwatch,
    AzurePrivilegedRoleAssigned,
    AzureRoleAssignmentCreated,
    AzureElevateAccess,
    GcpServiceAccountKeyCreated,
    MfaRemoved,
    IdpAdminGranted,
    ModelIdentity,
    ModelPeerGroup,
}

impl Builtin {
    pub const ALL: [Builtin; 28] = [
        Builtin::RootAccountUsed,
        Builtin::LoggingDisabled,
        Builtin::ResourceMadePublic,
        Builtin::AccessKeyForOtherIdentity,
        Builtin::SelfPrivilegeGrant,
        Builtin::PolicyVersionEscalation,
        Builtin::PassRoleToCompute,
        Builtin::HighRiskPermissionFirstUse,
        Builtin::FirstTimeAction,
        Builtin::FirstTimeResource,
        Builtin::BulkReadNewData,
        Builtin::FirstTimeRegion,
        Builtin::DormantIdentityActive,
        Builtin::NewSuperIdentity,
        Builtin::PciRise,
        Builtin::GrantedAndUsed,
        Builtin::CredentialHarvest,
        Builtin::RemoteAccessFanout,
        Builtin::OnDemandUsedAfterExpiry,
        Builtin::GrantOutsideGrantwatch,
        Builtin::AzurePrivilegedRoleAssigned,
        Builtin::AzureRoleAssignmentCreated,
        Builtin::AzureElevateAccess,
        Builtin::GcpServiceAccountKeyCreated,
        Builtin::MfaRemoved,
        Builtin::IdpAdminGranted,
        Builtin::ModelIdentity,
        Builtin::ModelPeerGroup,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Builtin::RootAccountUsed => "grantwatch/root-account-used",
            Builtin::LoggingDisabled => "grantwatch/logging-disabled",
            Builtin::ResourceMadePublic => "grantwatch/resource-made-public",
            Builtin::AccessKeyForOtherIdentity => "grantwatch/access-key-for-other-identity",
            Builtin::SelfPrivilegeGrant => "grantwatch/self-privilege-grant",
            Builtin::PolicyVersionEscalation => "grantwatch/privesc-policy-version",
            Builtin::PassRoleToCompute => "grantwatch/privesc-passrole-compute",
            Builtin::HighRiskPermissionFirstUse => "grantwatch/high-risk-permission-used",
            Builtin::FirstTimeAction => "grantwatch/first-time-action",
            Builtin::FirstTimeResource => "grantwatch/first-time-resource",
            Builtin::BulkReadNewData => "grantwatch/bulk-read-new-data",
            Builtin::FirstTimeRegion => "grantwatch/first-time-region",
            Builtin::DormantIdentityActive => "grantwatch/dormant-identity-active",
            Builtin::NewSuperIdentity => "grantwatch/new-super-identity",
            Builtin::PciRise => "grantwatch/pci-rise",
            Builtin::GrantedAndUsed => "grantwatch/granted-and-used",
            Builtin::CredentialHarvest => "grantwatch/credential-harvest",
            Builtin::RemoteAccessFanout => "grantwatch/remote-access-fanout",
            Builtin::OnDemandUsedAfterExpiry => "grantwatch/on-demand-used-after-expiry",
            Builtin::GrantOutsideGrantwatch => "grantwatch/grant-outside-grantwatch",
            Builtin::AzurePrivilegedRoleAssigned => "grantwatch/azure-privileged-role-assigned",
            Builtin::AzureRoleAssignmentCreated => "grantwatch/azure-role-assignment-created",
            Builtin::AzureElevateAccess => "grantwatch/azure-elevate-access",
            Builtin::GcpServiceAccountKeyCreated => "grantwatch/gcp-service-account-key-created",
            Builtin::MfaRemoved => "grantwatch/mfa-removed",
            Builtin::IdpAdminGranted => "grantwatch/idp-admin-granted",
            Builtin::ModelIdentity => "ml/identity-behavior",
            Builtin::ModelPeerGroup => "ml/peer-group-behavior",
        }
    }

    pub fn info(self) -> AnalyticInfo {
        use AnalyticKind::{Behavioral, Rule};
        use Severity::*;
        let (title, kind, severity, technique) = match self {
            Builtin::RootAccountUsed => ("Root account used", Rule, High, "T1078.004"),
            Builtin::LoggingDisabled => ("Audit logging stopped or deleted", Rule, Critical, "T1562.008"),
            Builtin::ResourceMadePublic => ("Resource made public or shared outside the account", Rule, High, "T1537"),
            Builtin::AccessKeyForOtherIdentity => ("Credentials created for another identity", Rule, High, "T1098.001"),
            Builtin::SelfPrivilegeGrant => ("Identity granted itself permissions", Rule, High, "T1098.003"),
            Builtin::PolicyVersionEscalation => {
                ("Managed policy rewritten and made default (privilege escalation)", Rule, High, "T1098.003")
            }
            Builtin::PassRoleToCompute => {
                ("Role passed to new compute for the first time (privilege escalation)", Rule, High, "T1548")
            }
            Builtin::HighRiskPermissionFirstUse => {
                ("High-risk permission used for the first time", Behavioral, Medium, "T1098")
            }
            // Low: signals for hunting (and novelty features of the models), not alerts by default.
            Builtin::FirstTimeAction => ("First-time sensitive action", Behavioral, Low, "T1078"),
            Builtin::FirstTimeResource => ("First-time access to a sensitive resource", Behavioral, Low, "T1530"),
            Builtin::BulkReadNewData => {
                ("Bulk reads from data the identity never read before", Behavioral, High, "T1530")
            }
            Builtin::FirstTimeRegion => ("Identity active in a region for the first time", Behavioral, Medium, "T1535"),
            Builtin::DormantIdentityActive => ("Dormant identity active again", Behavioral, Medium, "T1078.004"),
            Builtin::NewSuperIdentity => ("New super identity", Behavioral, High, "T1098"),
            Builtin::PciRise => ("Permission Creep Index rose sharply", Behavioral, Medium, "T1098"),
            Builtin::GrantedAndUsed => ("Permission granted and used within minutes", Behavioral, High, "T1098"),
            Builtin::CredentialHarvest => {
                ("Secrets, passwords or user data read in bulk", Behavioral, High, "T1555.006")
            }
            Builtin::RemoteAccessFanout => {
                ("Shells opened on several instances within an hour", Behavioral, Medium, "T1021")
            }
            // High: the removal failed and the time condition did not stop the call (a denied call is
            // reported one lower: the grant is gone, the identity still tries).
            Builtin::OnDemandUsedAfterExpiry => {
                ("On-demand permissions used after their grant ended", Rule, High, "T1078.004")
            }
            Builtin::GrantOutsideGrantwatch => {
                ("Permissions granted outside grantwatch to an identity with on-demand access", Rule, High, "T1098.003")
            }
            // Owner and User Access Administrator (and RBAC Administrator) can grant anyone anything in
            // their scope: whoever holds them controls the subscription.
            Builtin::AzurePrivilegedRoleAssigned => {
                ("Azure Owner or User Access Administrator role assigned", Rule, High, "T1098.003")
            }
            // The final Activity Log record often lacks the request body (Azure logs it on the
            // operation's Started record): the role is unknown, so lower, and learned per identity.
            Builtin::AzureRoleAssignmentCreated => {
                ("Azure role assignment created (role not in the log)", Rule, Medium, "T1098.003")
            }
            Builtin::AzureElevateAccess => {
                ("Azure access elevated to User Access Administrator at the root scope", Rule, High, "T1098.003")
            }
            Builtin::GcpServiceAccountKeyCreated => ("GCP service account key created", Rule, High, "T1098.001"),
            Builtin::MfaRemoved => ("MFA factor removed or 2-step verification turned off", Rule, High, "T1556.006"),
            Builtin::IdpAdminGranted => {
                ("Administrator privileges granted in the identity provider", Rule, High, "T1098.003")
            }
            Builtin::ModelIdentity => ("Unusual behavior for this identity (model)", Behavioral, Medium, "T1078"),
            Builtin::ModelPeerGroup => ("Unusual behavior for this peer group (model)", Behavioral, Medium, "T1078"),
        };
        // Occurrences that matter every time, whoever the identity is; the others learn what is normal.
        let suppress_established = matches!(
            self,
            Builtin::AccessKeyForOtherIdentity
                | Builtin::SelfPrivilegeGrant
                | Builtin::PolicyVersionEscalation
                | Builtin::HighRiskPermissionFirstUse
                | Builtin::GrantedAndUsed
                | Builtin::CredentialHarvest
                | Builtin::RemoteAccessFanout
                | Builtin::AzureRoleAssignmentCreated
                | Builtin::GcpServiceAccountKeyCreated
        );
        AnalyticInfo {
            id: self.id().into(),
            title: title.into(),
            kind,
            severity,
            technique: technique.into(),
            suppress_established,
        }
    }
}

/// The detection configuration: `grantwatch.toml` in the rules directory.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    pub detection: DetectionSettings,
    /// Accounts and identities no analytic alerts on.
    pub allowlist: Allowlist,
    /// Per-analytic settings, by analytic id.
    pub rule: BTreeMap<String, RuleSettings>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DetectionSettings {
    /// How far back "first time" looks: 30, 60 or 90 days.
    pub first_time_lookback_days: u32,
    /// An identity must have been active this long before first-time and dormancy analytics apply
    /// (before that everything it does is new).
    pub min_history_days: u32,
    /// Repeats of one analytic on one identity within this many hours of the last one are one incident.
    pub incident_window_hours: u32,
    /// Days without activity after which an identity counts as dormant.
    pub dormant_after_days: u32,
    /// PCI points an identity must gain between two updates for a `pci-rise` alert.
    pub pci_rise_points: u8,
    /// A grant followed by the grantee's first use of a permission within this many minutes alerts.
    pub granted_used_within_minutes: u32,
    /// Distinct secrets, decrypted parameters, instance passwords or user data one identity tries to
    /// read within an hour that raise `credential-harvest`.
    pub credential_reads_per_hour: u32,
    /// Alerts below this severity are not emitted.
    pub min_severity: Severity,
    /// A use of on-demand permissions within this many hours after their grant ended (expired or
    /// revoked) raises `on-demand-used-after-expiry`.
    pub on_demand_after_expiry_hours: u32,
    /// The IAM or Identity Center change that installs an on-demand grant is expected within this many
    /// minutes of its activation; other grants to identities with on-demand access raise
    /// `grant-outside-grantwatch`.
    pub on_demand_install_minutes: u32,
    /// On-demand grants kept at most (in memory and state); past this, those that ended first are
    /// forgotten first.
    pub on_demand_max_grants: u32,
}

impl DetectionSettings {
    /// The on-demand analytics' settings. An identity counts as having had on-demand access for the
    /// first-time lookback after its last grant ended.
    pub fn on_demand_limits(&self) -> crate::ondemand::OnDemandLimits {
        crate::ondemand::OnDemandLimits {
            after_expiry_ms: i64::from(self.on_demand_after_expiry_hours) * 3_600_000,
            install_ms: i64::from(self.on_demand_install_minutes) * 60_000,
            horizon_ms: i64::from(self.first_time_lookback_days) * 86_400_000,
            max_grants: self.on_demand_max_grants as usize,
        }
    }
}

impl Default for DetectionSettings {
    fn default() -> Self {
        Self {
            first_time_lookback_days: 90,
            min_history_days: 7,
            incident_window_hours: 24,
            dormant_after_days: 14,
            pci_rise_points: 15,
            granted_used_within_minutes: 30,
            credential_reads_per_hour: 5,
            min_severity: Severity::Medium,
            on_demand_after_expiry_hours: 24,
            on_demand_install_minutes: 10,
            on_demand_max_grants: 10_000,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Allowlist {
    /// Account ids.
    pub accounts: Vec<String>,
    /// Identity ARNs; `*` matches any run of characters (`arn:aws:iam::*:role/ci-*`).
    pub identities: Vec<String>,
}

impl Allowlist {
    fn allows(&self, account: &str, identity: &str) -> bool {
        self.accounts.iter().any(|a| a == account)
            || self.identities.iter().any(|p| Glob::STAR_ONLY.matches(p, identity))
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RuleSettings {
    pub enabled: Option<bool>,
    pub severity: Option<Severity>,
    /// Overrides `incident_window_hours` for this analytic.
    pub incident_window_hours: Option<u32>,
    /// Overrides the analytic's default: when true, an identity that triggered the analytic on an
    /// earlier day within the lookback is not alerted again.
    pub suppress_established: Option<bool>,
    /// Whether trained models may demote this analytic to low severity when it alerted on a quarter
    /// of the training identities or more (default true; `false` keeps it at its severity).
    pub learn_routine: Option<bool>,
    pub allowlist: Allowlist,
}

#[derive(Debug, thiserror::Error)]
pub enum RulesConfigError {
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error(
        "{path}: [rule.\"{id}\"]: no such analytic (known: grantwatch/*, ml/*, and sigma/<id> of the loaded Sigma rules)"
    )]
    UnknownAnalytic { path: String, id: String },
    #[error("{path}: detection.first_time_lookback_days must be 30, 60 or 90 (got {got})")]
    Lookback { path: String, got: u32 },
}

impl RulesConfig {
    /// Parses `grantwatch.toml`; `known` tells whether an analytic id exists (built-in or loaded).
    pub fn parse(path: &str, text: &str, known: &dyn Fn(&str) -> bool) -> Result<Self, RulesConfigError> {
        let cfg: RulesConfig =
            toml::from_str(text).map_err(|e| RulesConfigError::Parse { path: path.into(), message: e.to_string() })?;
        if let Some(id) = cfg.rule.keys().find(|id| !known(id)) {
            return Err(RulesConfigError::UnknownAnalytic { path: path.into(), id: id.clone() });
        }
        let got = cfg.detection.first_time_lookback_days;
        if ![30, 60, 90].contains(&got) {
            return Err(RulesConfigError::Lookback { path: path.into(), got });
        }
        Ok(cfg)
    }

    /// What the configuration makes of an analytic: `None` when it is disabled.
    pub fn policy(&self, info: &AnalyticInfo) -> Option<RulePolicy> {
        let s = self.rule.get(&info.id);
        if s.and_then(|s| s.enabled) == Some(false) {
            return None;
        }
        let hours = s.and_then(|s| s.incident_window_hours).unwrap_or(self.detection.incident_window_hours);
        Some(RulePolicy {
            severity: s.and_then(|s| s.severity).unwrap_or(info.severity),
            incident_window_ms: i64::from(hours) * 3_600_000,
            suppress_established: s.and_then(|s| s.suppress_established).unwrap_or(info.suppress_established),
            allowlist: s.map(|s| s.allowlist.clone()).unwrap_or_default(),
        })
    }

    /// Whether the global allowlist silences this identity.
    pub fn allowlisted(&self, account: &str, identity: &str) -> bool {
        self.allowlist.allows(account, identity)
    }
}

/// An enabled analytic's effective settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RulePolicy {
    pub severity: Severity,
    pub incident_window_ms: i64,
    pub suppress_established: bool,
    pub allowlist: Allowlist,
}

impl RulePolicy {
    pub fn allows(&self, account: &str, identity: &str) -> bool {
        self.allowlist.allows(account, identity)
    }
}

// ---- Single-event rules -------------------------------------------------------------------------

/// Calls that stop or delete audit logging, as `(event source, operation)`.
const LOGGING_DISABLED_CALLS: [(&str, &str); 12] = [
    ("cloudtrail.amazonaws.com", "StopLogging"),
    ("cloudtrail.amazonaws.com", "DeleteTrail"),
    ("config.amazonaws.com", "StopConfigurationRecorder"),
    ("config.amazonaws.com", "DeleteConfigurationRecorder"),
    ("config.amazonaws.com", "DeleteDeliveryChannel"),
    ("guardduty.amazonaws.com", "DeleteDetector"),
    ("guardduty.amazonaws.com", "UpdateDetector"),
    ("guardduty.amazonaws.com", "DisassociateFromMasterAccount"),
    ("ec2.amazonaws.com", "DeleteFlowLogs"),
    ("logs.amazonaws.com", "DeleteLogGroup"),
    ("route53resolver.amazonaws.com", "DeleteResolverQueryLogConfig"),
    ("route53resolver.amazonaws.com", "DisassociateResolverQueryLogConfig"),
];

/// A log bucket whose objects this lifecycle rule expires within this many days loses the logs
/// before anyone reads them.
const LOG_EXPIRY_DAYS_MAX: u64 = 7;

/// Log groups that receive audit data, by the names AWS and common setups give them.
fn audit_log_group(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["cloudtrail", "trail", "flowlog", "flow-log", "flow_log", "vpc", "audit", "guardduty", "securityhub", "config"]
        .iter()
        .any(|k| name.contains(k))
}

fn is_call(ev: &Event, service: &str, op: &str) -> bool {
    ev.api.service == service && ev.api.operation == op
}

/// Lambda event names carry an API version suffix (`CreateFunction20150331`).
fn op_base(op: &str) -> &str {
    op.trim_end_matches(|c: char| c.is_ascii_digit() || c == 'v')
}

/// A hit of a single-event rule: the rule and what it saw, for the explanation.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleHit {
    pub rule: Builtin,
    /// The fields the rule matched, as `(name, value)`.
    pub matched: Vec<(String, String)>,
    /// The call was denied: an attempt, reported one severity lower (only rules for which an attempt
    /// says something raise on failed calls: disabling logging).
    pub attempt: bool,
}

/// Evaluates the stateless built-in rules on one event (`request`/`response` parsed once by the caller).
pub fn single_event_rules(
    ev: &Event,
    request: Option<&serde_json::Value>,
    response: Option<&serde_json::Value>,
    out: &mut Vec<RuleHit>,
) {
    let failed = ev.status != Status::Success;
    let hit = |rule, matched: Vec<(&str, String)>| RuleHit {
        rule,
        matched: matched.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        attempt: false,
    };
    if ev.actor.kind == IdentityKind::Root && ev.actor.invoked_by.is_none() {
        out.push(hit(Builtin::RootAccountUsed, vec![("userIdentity.type", "Root".into())]));
    }
    let call = || {
        let mut m = vec![("eventName", ev.api.operation.clone()), ("eventSource", ev.api.service.clone())];
        if let Some(code) = ev.status_code.as_ref().filter(|_| failed) {
            m.push(("errorCode", code.clone()));
        }
        m
    };
    // Turning audit logging off is the one change whose denied attempt is news on its own: someone
    // tried to blind the defenders (reported one severity lower than a success).
    let attempt = |rule, matched| RuleHit { attempt: failed, ..hit(rule, matched) };
    if LOGGING_DISABLED_CALLS.iter().any(|(s, o)| is_call(ev, s, o)) {
        let disables = if is_call(ev, "guardduty.amazonaws.com", "UpdateDetector") {
            // GuardDuty's UpdateDetector disables logging only with `enable: false`.
            request.and_then(|r| r.get("enable")).and_then(|v| v.as_bool()) == Some(false)
        } else if is_call(ev, "logs.amazonaws.com", "DeleteLogGroup") {
            // Deleting an application's log group is routine (feature environments come and go);
            // deleting the group an audit trail or flow log writes to is not.
            let name = request.and_then(|r| r.get("logGroupName")).and_then(|v| v.as_str()).unwrap_or("");
            audit_log_group(name)
        } else {
            true
        };
        if disables {
            out.push(attempt(Builtin::LoggingDisabled, call()));
        }
    }
    if let Some(how) = logging_reduced(ev, request) {
        let mut m = call();
        m.push(("change", how));
        out.push(attempt(Builtin::LoggingDisabled, m));
    }
    if let Some(how) = crate::multicloud::logging_disabled(ev, request) {
        let mut m = call();
        m.push(("change", how));
        out.push(attempt(Builtin::LoggingDisabled, m));
    }
    if failed {
        return;
    }
    crate::multicloud::single_event_rules(ev, request, response, out);
    if let Some(what) = made_public(ev, request) {
        let mut m = call();
        m.push(("exposure", what));
        out.push(hit(Builtin::ResourceMadePublic, m));
    }
    let target_user = request.and_then(|r| r.get("userName")).and_then(|v| v.as_str());
    let own_name = ev.actor.name.as_deref();
    if ev.api.service == "iam.amazonaws.com" {
        let op = ev.api.operation.as_str();
        if matches!(op, "CreateAccessKey" | "CreateLoginProfile" | "UpdateLoginProfile")
            && let Some(user) =
                target_user.or_else(|| response.and_then(|r| r.pointer("/accessKey/userName")).and_then(|v| v.as_str()))
            && (ev.actor.kind != IdentityKind::User || Some(user) != own_name)
        {
            let mut m = call();
            m.push(("requestParameters.userName", user.to_string()));
            out.push(hit(Builtin::AccessKeyForOtherIdentity, m));
        }
        let target_role = request.and_then(|r| r.get("roleName")).and_then(|v| v.as_str());
        let grants_self = match op {
            "AttachUserPolicy" | "PutUserPolicy" | "AddUserToGroup" => {
                ev.actor.kind == IdentityKind::User && target_user.is_some() && target_user == own_name
            }
            "AttachRolePolicy" | "PutRolePolicy" | "UpdateAssumeRolePolicy" => {
                ev.actor.kind == IdentityKind::Role && target_role.is_some() && target_role == own_name
            }
            _ => false,
        };
        // A deny-only policy (a quarantine) takes rights away: attaching it to oneself is no grant.
        let denies_only = || {
            let policy = request.and_then(|r| r.get("policyDocument"));
            let arn = request.and_then(|r| r.get("policyArn")).and_then(|v| v.as_str());
            grantwatch_core::policy::policy_allows_anything(policy, arn) == Some(false)
        };
        if grants_self && !denies_only() {
            let mut m = call();
            m.push(("target", target_user.or(target_role).unwrap_or_default().to_string()));
            out.push(hit(Builtin::SelfPrivilegeGrant, m));
        }
        if op == "CreatePolicyVersion"
            && request.and_then(|r| r.get("setAsDefault")).and_then(|v| v.as_bool()) == Some(true)
        {
            let mut m = call();
            m.push(("requestParameters.setAsDefault", "true".into()));
            out.push(hit(Builtin::PolicyVersionEscalation, m));
        }
    }
}

/// Calls that leave logging on but make it useless: a trail's event selectors that no longer record
/// management write events, or a lifecycle rule that expires an audit bucket's logs within days.
fn logging_reduced(ev: &Event, request: Option<&serde_json::Value>) -> Option<String> {
    let req = request?;
    match (ev.api.service.as_str(), ev.api.operation.as_str()) {
        ("cloudtrail.amazonaws.com", "PutEventSelectors") => {
            // Advanced selectors are not judged here: they are a filter language of their own.
            let selectors = req.get("eventSelectors")?.as_array()?;
            let logs_writes = |s: &serde_json::Value| {
                s.get("includeManagementEvents").and_then(|v| v.as_bool()) != Some(false)
                    && s.get("readWriteType").and_then(|v| v.as_str()).is_none_or(|t| t != "ReadOnly")
            };
            (!selectors.iter().any(logs_writes))
                .then(|| "event selectors no longer record management write events".to_string())
        }
        ("s3.amazonaws.com", "PutBucketLifecycle" | "PutBucketLifecycleConfiguration") => {
            let bucket = req.get("bucketName").and_then(|v| v.as_str())?;
            if !audit_log_group(bucket) {
                return None;
            }
            let text = req.to_string();
            // Every `"Days":N` of an Expiration in the request (the shape differs between API versions).
            let shortest = text
                .match_indices("\"Days\":")
                .filter_map(|(i, m)| {
                    let rest = &text[i + m.len()..];
                    let end = rest.find(|c: char| !c.is_ascii_digit() && c != '"').unwrap_or(rest.len());
                    rest[..end].trim_matches('"').parse::<u64>().ok()
                })
                .min()?;
            (text.contains("Expiration") && shortest <= LOG_EXPIRY_DAYS_MAX)
                .then(|| format!("log bucket {bucket} expires objects after {shortest} days"))
        }
        _ => None,
    }
}

/// Whether the call exposes a resource publicly or to another account, and how.
fn made_public(ev: &Event, request: Option<&serde_json::Value>) -> Option<String> {
    let req = request?;
    let op = op_base(&ev.api.operation);
    let own = ev.account_uid.as_str();
    match (ev.api.service.as_str(), op) {
        ("s3.amazonaws.com", "PutBucketPolicy") => req.get("bucketPolicy").and_then(|p| exposing_policy(p, own)),
        ("s3.amazonaws.com", "PutBucketAcl" | "PutObjectAcl") => {
            let text = req.to_string();
            let public =
                ["global/AllUsers", "global/AuthenticatedUsers", "public-read"].iter().find(|g| text.contains(*g));
            public.map(|g| format!("ACL grants {g}"))
        }
        ("ec2.amazonaws.com", "ModifySnapshotAttribute" | "ModifyImageAttribute") => {
            let perm = req.get("createVolumePermission").or_else(|| req.get("launchPermission"))?;
            shared_with(perm.get("add")?, own)
        }
        ("rds.amazonaws.com", "ModifyDBSnapshotAttribute" | "ModifyDBClusterSnapshotAttribute") => {
            let values = req.get("valuesToAdd")?.as_array()?;
            values.iter().filter_map(|v| v.as_str()).find(|v| *v == "all" || *v != own).map(|v| {
                if v == "all" {
                    "snapshot restorable by everyone".to_string()
                } else {
                    format!("snapshot shared with {v}")
                }
            })
        }
        ("lambda.amazonaws.com", "AddPermission" | "AddLayerVersionPermission") => {
            let p = req.get("principal").and_then(|v| v.as_str())?;
            if p == "*" {
                Some("invocable by anyone".to_string())
            } else {
                foreign_account(p, own).map(|a| format!("shared with account {a}"))
            }
        }
        ("kms.amazonaws.com", "PutKeyPolicy") => req.get("policy").and_then(|p| exposing_policy(p, own)),
        ("secretsmanager.amazonaws.com", "PutResourcePolicy") => {
            req.get("resourcePolicy").and_then(|p| exposing_policy(p, own))
        }
        ("ecr.amazonaws.com", "SetRepositoryPolicy") => req.get("policyText").and_then(|p| exposing_policy(p, own)),
        // A role's trust policy is its resource policy: who may assume it.
        ("iam.amazonaws.com", "CreateRole") => {
            req.get("assumeRolePolicyDocument").and_then(|p| exposing_policy(p, own))
        }
        ("iam.amazonaws.com", "UpdateAssumeRolePolicy") => {
            req.get("policyDocument").and_then(|p| exposing_policy(p, own))
        }
        _ => None,
    }
}

/// `{"items": [{"group": "all"} | {"userId": "..."}]}` → who it was shared with, if outside the account.
fn shared_with(add: &serde_json::Value, own: &str) -> Option<String> {
    let items = add.get("items")?.as_array()?;
    for item in items {
        if item.get("group").and_then(|g| g.as_str()) == Some("all") {
            return Some("shared with everyone".into());
        }
        if let Some(user) = item.get("userId").and_then(|u| u.as_str())
            && user != own
        {
            return Some(format!("shared with account {user}"));
        }
    }
    None
}

/// The account a principal (`123456789012`, `arn:aws:iam::123456789012:root`, a role or user ARN)
/// belongs to, when it is a 12-digit account other than `own`.
fn foreign_account<'a>(principal: &'a str, own: &str) -> Option<&'a str> {
    grantwatch_core::iam::principal_account(principal).filter(|a| grantwatch_core::iam::is_account_id(a) && *a != own)
}

/// A policy document (object, or JSON text as CloudTrail often logs it) that exposes its resource: an
/// unconditional Allow to everyone, or an Allow to a principal of another account than `own`. Service
/// and federated principals are not judged (they are how AWS services and identity providers work).
fn exposing_policy(doc: &serde_json::Value, own: &str) -> Option<String> {
    let parsed;
    let doc = match doc {
        serde_json::Value::String(s) => {
            parsed = serde_json::from_str::<serde_json::Value>(s).ok()?;
            &parsed
        }
        other => other,
    };
    let statements = match doc.get("Statement")? {
        serde_json::Value::Array(a) => a.iter().collect::<Vec<_>>(),
        one => vec![one],
    };
    let aws_principals = |p: &serde_json::Value| -> Vec<String> {
        let list = match p {
            serde_json::Value::String(s) => return vec![s.clone()],
            serde_json::Value::Object(o) => o.get("AWS"),
            _ => None,
        };
        match list {
            Some(serde_json::Value::String(s)) => vec![s.clone()],
            Some(serde_json::Value::Array(v)) => v.iter().filter_map(|x| x.as_str().map(str::to_string)).collect(),
            _ => Vec::new(),
        }
    };
    let mut shared = None;
    for s in statements {
        if s.get("Effect").and_then(|e| e.as_str()) != Some("Allow") {
            continue;
        }
        let principals = s.get("Principal").map(aws_principals).unwrap_or_default();
        if principals.iter().any(|p| p == "*") && s.get("Condition").is_none() {
            return Some("policy allows Principal \"*\" without condition".to_string());
        }
        if shared.is_none()
            && let Some(account) = principals.iter().find_map(|p| foreign_account(p, own))
        {
            shared = Some(format!("policy allows account {account}"));
        }
    }
    shared
}

/// The role a call hands to new compute (PassRole), if any: Lambda functions, EC2 instances, Glue
/// endpoints, CloudFormation stacks, ECS task definitions.
pub fn passed_role(ev: &Event, request: Option<&serde_json::Value>) -> Option<String> {
    if ev.status != Status::Success {
        return None;
    }
    let req = request?;
    let s = |p: &str| req.pointer(p).and_then(|v| v.as_str()).map(str::to_string);
    match (ev.api.service.as_str(), op_base(&ev.api.operation)) {
        ("lambda.amazonaws.com", "CreateFunction" | "UpdateFunctionConfiguration") => s("/role"),
        ("ec2.amazonaws.com", "RunInstances") => s("/iamInstanceProfile/arn").or_else(|| s("/iamInstanceProfile/name")),
        ("ec2.amazonaws.com", "AssociateIamInstanceProfile") => s("/iamInstanceProfile/arn"),
        ("glue.amazonaws.com", "CreateDevEndpoint" | "CreateJob") => s("/roleArn").or_else(|| s("/role")),
        ("cloudformation.amazonaws.com", "CreateStack" | "UpdateStack") => s("/roleARN"),
        ("ecs.amazonaws.com", "RegisterTaskDefinition") => s("/taskRoleArn"),
        _ => None,
    }
}

/// For a successful call that grants permissions to an identity: who (as `user/NAME` or `role/NAME`
/// within the event's account) and what.
/// Whether `ev` may be a grant [`grant_target`] recognizes (a cheap test on names only).
pub fn may_grant(ev: &Event) -> bool {
    ev.status == Status::Success
        && ev.api.service == "iam.amazonaws.com"
        && matches!(
            ev.api.operation.as_str(),
            "AttachUserPolicy" | "PutUserPolicy" | "AddUserToGroup" | "AttachRolePolicy" | "PutRolePolicy"
        )
}

pub fn grant_target(ev: &Event, request: Option<&serde_json::Value>) -> Option<(String, String)> {
    if ev.status != Status::Success || ev.api.service != "iam.amazonaws.com" {
        return None;
    }
    let req = request?;
    let s = |k: &str| req.get(k).and_then(|v| v.as_str());
    let what = s("policyArn").or(s("policyName")).or(s("groupName")).unwrap_or("inline policy").to_string();
    match ev.api.operation.as_str() {
        "AttachUserPolicy" | "PutUserPolicy" | "AddUserToGroup" => Some((format!("user/{}", s("userName")?), what)),
        "AttachRolePolicy" | "PutRolePolicy" => Some((format!("role/{}", s("roleName")?), what)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlisted_identities_match_stars_only() {
        let list = |p: &str| Allowlist { accounts: vec!["9".into()], identities: vec![p.into()] };
        assert!(list("arn:aws:iam::*:role/ci-*").allows("1", "arn:aws:iam::1:role/ci-deploy"));
        assert!(!list("arn:aws:iam::*:role/ci-*").allows("1", "arn:aws:iam::1:user/ci-deploy"));
        assert!(list("exact").allows("1", "exact") && !list("exact").allows("1", "exactly"));
        assert!(list("*").allows("1", "anything") && list("nobody").allows("9", "anything"));
        // `?` is literal in allowlists, and ARNs compare with case.
        assert!(!list("role/?").allows("1", "role/x") && !list("ROLE/*").allows("1", "role/x"));
    }

    #[test]
    fn config_rejects_unknown_analytics_keys_and_lookbacks() {
        let known = |id: &str| Builtin::ALL.iter().any(|b| b.id() == id);
        let ok = RulesConfig::parse(
            "r.toml",
            "[detection]\nfirst_time_lookback_days = 30\n[rule.\"grantwatch/first-time-action\"]\nenabled = false\n",
            &known,
        )
        .unwrap();
        assert_eq!(ok.policy(&Builtin::FirstTimeAction.info()), None);
        assert!(ok.policy(&Builtin::RootAccountUsed.info()).is_some());
        let e = RulesConfig::parse("r.toml", "[rule.\"grantwatch/nope\"]\n", &known).unwrap_err();
        assert!(e.to_string().contains("grantwatch/nope"), "{e}");
        let e = RulesConfig::parse("r.toml", "[detection]\nlookback = 3\n", &known).unwrap_err();
        assert!(e.to_string().contains("lookback"), "{e}");
        let e = RulesConfig::parse("r.toml", "[detection]\nfirst_time_lookback_days = 45\n", &known).unwrap_err();
        assert!(e.to_string().contains("45"), "{e}");
    }

    #[test]
    fn public_and_cross_account_policies_are_recognized() {
        const OWN: &str = "111122223333";
        let public =
            serde_json::json!({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject"}]});
        assert!(exposing_policy(&public, OWN).unwrap().contains("\"*\""));
        let text = serde_json::Value::String(public.to_string());
        assert!(exposing_policy(&text, OWN).is_some(), "policy logged as JSON text");
        let conditioned = serde_json::json!({"Statement": {"Effect": "Allow", "Principal": {"AWS": "*"},
            "Condition": {"StringEquals": {"aws:PrincipalOrgID": "o-1"}}}});
        assert!(exposing_policy(&conditioned, OWN).is_none());
        let own = serde_json::json!({"Statement": [{"Effect": "Allow",
            "Principal": {"AWS": "arn:aws:iam::111122223333:root"}}]});
        assert!(exposing_policy(&own, OWN).is_none(), "the account's own principals expose nothing");
        let other = serde_json::json!({"Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}},
            {"Effect": "Allow", "Principal": {"AWS": ["arn:aws:iam::111122223333:role/x", "arn:aws:iam::193672423079:root"]}}]});
        assert_eq!(exposing_policy(&other, OWN).unwrap(), "policy allows account 193672423079");
        let denied = serde_json::json!({"Statement": [{"Effect": "Deny", "Principal": {"AWS": "999988887777"}}]});
        assert!(exposing_policy(&denied, OWN).is_none());
    }
}

#[cfg(test)]
mod logging_tests {
    use super::*;
    use grantwatch_core::testing::event;
    use grantwatch_types::{Api, EventTime};

    fn hits(service: &str, op: &str, request: serde_json::Value) -> Vec<Builtin> {
        let mut ev = event("e", EventTime(0));
        ev.api = Api { service: service.into(), operation: op.into() };
        let mut out = Vec::new();
        single_event_rules(&ev, Some(&request), None, &mut out);
        out.into_iter().map(|h| h.rule).collect()
    }

    #[test]
    fn logging_made_useless_counts_as_logging_disabled() {
        let ct = "cloudtrail.amazonaws.com";
        let off = serde_json::json!({"trailName": "t", "eventSelectors": [{"includeManagementEvents": false, "readWriteType": "All"}]});
        assert_eq!(hits(ct, "PutEventSelectors", off), [Builtin::LoggingDisabled]);
        let reads_only =
            serde_json::json!({"eventSelectors": [{"includeManagementEvents": true, "readWriteType": "ReadOnly"}]});
        assert_eq!(hits(ct, "PutEventSelectors", reads_only), [Builtin::LoggingDisabled]);
        let data_too = serde_json::json!({"eventSelectors": [{"includeManagementEvents": true, "readWriteType": "All",
            "dataResources": [{"type": "AWS::S3::Object", "values": []}]}]});
        assert!(hits(ct, "PutEventSelectors", data_too).is_empty(), "adding data events is no evasion");
        let s3 = "s3.amazonaws.com";
        let one_day = serde_json::json!({"bucketName": "org-cloudtrail-logs",
            "LifecycleConfiguration": {"Rule": {"Expiration": {"Days": 1}, "Status": "Enabled"}}});
        assert_eq!(hits(s3, "PutBucketLifecycle", one_day.clone()), [Builtin::LoggingDisabled]);
        let mut app = one_day;
        app["bucketName"] = "web-uploads".into();
        assert!(hits(s3, "PutBucketLifecycle", app).is_empty(), "expiring an application's bucket is routine");
        // A denied attempt counts, as an attempt; other rules ignore denied calls.
        let mut denied = event("e", EventTime(0));
        denied.api = Api { service: "ec2.amazonaws.com".into(), operation: "DeleteFlowLogs".into() };
        denied.status = grantwatch_types::Status::Failure;
        denied.status_code = Some("Client.UnauthorizedOperation".into());
        let mut out = Vec::new();
        single_event_rules(&denied, Some(&serde_json::json!({})), None, &mut out);
        assert_eq!(out.len(), 1);
        assert!(out[0].attempt && out[0].matched.iter().any(|(k, v)| k == "errorCode" && v.contains("Unauthorized")));
        let dns = serde_json::json!({"resolverQueryLogConfigId": "rqlc-1"});
        assert_eq!(
            hits("route53resolver.amazonaws.com", "DeleteResolverQueryLogConfig", dns),
            [Builtin::LoggingDisabled]
        );
    }

    #[test]
    fn role_trust_naming_another_account_is_exposure() {
        let iam = "iam.amazonaws.com";
        let doc = r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::193672423079:root"},"Action":"sts:AssumeRole"}]}"#;
        let backdoor = serde_json::json!({"roleName": "r", "policyDocument": doc});
        assert_eq!(hits(iam, "UpdateAssumeRolePolicy", backdoor), [Builtin::ResourceMadePublic]);
        let own = doc.replace("193672423079", "111122223333");
        let fine = serde_json::json!({"roleName": "r", "assumeRolePolicyDocument": own});
        assert!(hits(iam, "CreateRole", fine).is_empty());
    }
}
