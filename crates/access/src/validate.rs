//! Checking a request before it is stored, and judging its risk.
//!
//! Every refusal is a [`ValidationError`] whose message is written for the requester: it says which
//! field is wrong and what would be accepted.

use grantwatch_core::catalog::{AccessLevel, ActionSet, Catalog};
use grantwatch_core::findings::SELF_ESCALATION_ACTIONS;
use grantwatch_types::{AccessRequest, ActionGrant, RequestedAccess, RequestedIdentity, RiskLevel, SYSTEM_ACTOR};

use crate::config::{AccessConfig, ApprovalRule};

/// Longest request id: the inline policy name `grantwatch-access-<id>` stays within IAM's 128.
pub const MAX_REQUEST_ID_CHARS: usize = 64;
pub const MAX_TICKET_CHARS: usize = 128;
pub const MAX_PRINCIPAL_CHARS: usize = 256;
/// Bounds on an actions request, so one request cannot make a policy IAM would refuse anyway.
pub const MAX_GRANTS: usize = 50;
pub const MAX_RESOURCES_PER_GRANT: usize = 50;
/// IAM's limits on inline policies (characters, whitespace not counted; the document is compact).
pub const MAX_USER_INLINE_POLICY_CHARS: usize = 2_048;
pub const MAX_ROLE_INLINE_POLICY_CHARS: usize = 10_240;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("request id {0:?} must be 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-'")]
    BadRequestId(String),
    #[error("the requester must be named (1 to 256 characters, not {SYSTEM_ACTOR:?})")]
    BadRequester,
    #[error("account id {0:?} is not a 12-digit AWS account id")]
    BadAccountId(String),
    #[error("no approval rule covers account {0}")]
    NoRule(String),
    #[error("the justification is empty: say why the access is needed")]
    EmptyJustification,
    #[error("the justification is {len} characters; at most {max} are allowed")]
    JustificationTooLong { len: usize, max: usize },
    #[error("a reason is required: say why")]
    EmptyReason,
    #[error("the reason is {len} characters; at most {max} are allowed")]
    ReasonTooLong { len: usize, max: usize },
    #[error("the ticket reference must be 1 to 128 characters without control characters")]
    BadTicket,
    #[error("the duration must be at least 1 second")]
    ZeroDuration,
    #[error("the duration of {requested} seconds exceeds rule {rule:?}'s maximum of {max} seconds")]
    DurationTooLong { requested: u64, max: u64, rule: String },
    #[error("{what} {value:?} is not a valid ARN: {why}")]
    BadArn { what: &'static str, value: String, why: &'static str },
    #[error("{what} {value:?} is in account {found:?}, not the target account {target}")]
    WrongAccount { what: &'static str, value: String, found: String, target: String },
    #[error("IAM Identity Center user id {0:?} must be 1 to 64 characters of A-Z, a-z, 0-9 and '-'")]
    BadIdentityCenterUser(String),
    #[error("permission set name {0:?} must be 1 to 32 characters of A-Z, a-z, 0-9 and +=,.@_-")]
    BadPermissionSetName(String),
    #[error("{access} is granted to an {expected}, not to {found}")]
    IdentityMismatch { access: &'static str, expected: &'static str, found: &'static str },
    #[error("no actions requested")]
    NoActions,
    #[error("at most {max} action entries may be requested, not {found}")]
    TooManyGrants { found: usize, max: usize },
    #[error("action {action:?} names no resources (use \"*\" for any)")]
    NoResources { action: String },
    #[error("action {action:?} names {found} resources; at most {max} are allowed")]
    TooManyResources { action: String, found: usize, max: usize },
    #[error("{0:?} is not an action name (expected service:Action, e.g. s3:GetObject)")]
    MalformedAction(String),
    #[error("unknown action {0:?}: it is not in the AWS action catalog")]
    UnknownAction(String),
    #[error("action pattern {0:?} matches no action in the AWS action catalog")]
    WildcardMatchesNothing(String),
    #[error("the inline policy would be {size} characters; IAM allows at most {max} for an {kind}")]
    PolicyTooLarge { size: usize, max: usize, kind: &'static str },
    #[error(
        "a {risk} risk request needs {needed} distinct approvers, and rule {rule:?} names fewer people than that \
         (besides the requester)"
    )]
    NotEnoughApprovers { risk: &'static str, needed: u32, rule: String },
}

/// An ARN split into its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arn<'a> {
    pub partition: &'a str,
    pub service: &'a str,
    pub region: &'a str,
    pub account: &'a str,
    pub resource: &'a str,
}

/// Splits `arn:partition:service:region:account:resource` (the resource may hold more `:`).
pub fn parse_arn<'a>(what: &'static str, value: &'a str) -> Result<Arn<'a>, ValidationError> {
    let bad = |why| ValidationError::BadArn { what, value: value.to_string(), why };
    let mut parts = value.splitn(6, ':');
    let (Some("arn"), Some(partition), Some(service), Some(region), Some(account), Some(resource)) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("expected arn:partition:service:region:account:resource"));
    };
    if !partition.starts_with("aws") || !partition.bytes().all(|b| b.is_ascii_lowercase() || b == b'-') {
        return Err(bad("the partition must be aws, aws-cn, aws-us-gov or another aws partition"));
    }
    if service.is_empty() || !service.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(bad("the service must be a service prefix such as s3 or iam"));
    }
    if resource.is_empty() {
        return Err(bad("the resource part is empty"));
    }
    if value.chars().any(char::is_control) {
        return Err(bad("it holds control characters"));
    }
    Ok(Arn { partition, service, region, account, resource })
}

pub fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

pub fn is_request_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_REQUEST_ID_CHARS
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A principal name the log can carry unambiguously: not empty, bounded, not the system actor.
pub fn is_principal_name(s: &str) -> bool {
    !s.trim().is_empty() && s.len() <= MAX_PRINCIPAL_CHARS && s != SYSTEM_ACTOR && !s.chars().any(char::is_control)
}

/// The kind and name of an IAM identity ARN in the target account.
pub fn iam_identity<'a>(
    arn: &'a str,
    target: &str,
) -> Result<(grantwatch_types::GrantPrincipal, &'a str), ValidationError> {
    const WHAT: &str = "identity";
    let a = parse_arn(WHAT, arn)?;
    let bad = |why| ValidationError::BadArn { what: WHAT, value: arn.to_string(), why };
    if a.service != "iam" || !a.region.is_empty() {
        return Err(bad("an IAM identity ARN has service iam and no region"));
    }
    if a.account != target {
        return Err(ValidationError::WrongAccount {
            what: WHAT,
            value: arn.to_string(),
            found: a.account.to_string(),
            target: target.to_string(),
        });
    }
    let (kind, path) = a.resource.split_once('/').ok_or_else(|| bad("expected user/<name> or role/<name>"))?;
    let name = path.rsplit('/').next().unwrap_or(path);
    if name.is_empty() || name.contains(['*', '?']) {
        return Err(bad("the identity name is empty or a wildcard"));
    }
    let principal = match kind {
        "user" => grantwatch_types::GrantPrincipal::IamUser { name: name.to_string() },
        "role" => grantwatch_types::GrantPrincipal::IamRole { name: name.to_string() },
        _ => return Err(bad("expected user/<name> or role/<name>")),
    };
    Ok((principal, name))
}

/// Checks `request` against the configuration and the catalog; returns the governing rule and the
/// request's risk.
pub fn validate<'c>(
    config: &'c AccessConfig,
    catalog: &Catalog,
    request: &AccessRequest,
) -> Result<(&'c ApprovalRule, RiskLevel), ValidationError> {
    if !is_request_id(&request.id) {
        return Err(ValidationError::BadRequestId(request.id.clone()));
    }
    if !is_principal_name(&request.requester) {
        return Err(ValidationError::BadRequester);
    }
    let target = request.account_id.as_str();
    if !is_account_id(target) {
        return Err(ValidationError::BadAccountId(target.to_string()));
    }
    let rule = config.rule_for(target).ok_or_else(|| ValidationError::NoRule(target.to_string()))?;
    let justification = request.justification.trim();
    if justification.is_empty() {
        return Err(ValidationError::EmptyJustification);
    }
    let len = request.justification.chars().count();
    if len > config.justification_max_chars {
        return Err(ValidationError::JustificationTooLong { len, max: config.justification_max_chars });
    }
    let bad_ticket =
        |t: &String| t.trim().is_empty() || t.chars().count() > MAX_TICKET_CHARS || t.chars().any(char::is_control);
    if request.ticket.as_ref().is_some_and(bad_ticket) {
        return Err(ValidationError::BadTicket);
    }
    if request.duration_secs == 0 {
        return Err(ValidationError::ZeroDuration);
    }
    if request.duration_secs > rule.max_duration_secs {
        return Err(ValidationError::DurationTooLong {
            requested: request.duration_secs,
            max: rule.max_duration_secs,
            rule: rule.name.clone(),
        });
    }
    check_identity_and_access(request)?;
    let risk = assess_risk(config, catalog, &request.access)?;
    let needed = approvals_required(risk);
    // The requester never approves, so the rule must name enough other people for the quorum;
    // otherwise the request would wait forever.
    let others = rule.approver_capacity().saturating_sub(usize::from(rule.approvers.contains(&request.requester)));
    if others < needed as usize {
        return Err(ValidationError::NotEnoughApprovers { risk: risk.as_str(), needed, rule: rule.name.clone() });
    }
    Ok((rule, risk))
}

/// Distinct approvals a request of `risk` needs.
pub fn approvals_required(risk: RiskLevel) -> u32 {
    match risk {
        RiskLevel::High => 2,
        RiskLevel::Medium | RiskLevel::Low => 1,
    }
}

fn identity_kind(identity: &RequestedIdentity) -> &'static str {
    match identity {
        RequestedIdentity::IamUser { .. } => "IAM user",
        RequestedIdentity::IamRole { .. } => "IAM role",
        RequestedIdentity::IdentityCenterUser { .. } => "IAM Identity Center user",
    }
}

fn check_identity_and_access(request: &AccessRequest) -> Result<(), ValidationError> {
    let target = request.account_id.as_str();
    match &request.identity {
        RequestedIdentity::IamUser { arn } | RequestedIdentity::IamRole { arn } => {
            let (principal, _) = iam_identity(arn, target)?;
            let declared_user = matches!(request.identity, RequestedIdentity::IamUser { .. });
            let is_user = matches!(principal, grantwatch_types::GrantPrincipal::IamUser { .. });
            if declared_user != is_user {
                return Err(ValidationError::BadArn {
                    what: "identity",
                    value: arn.clone(),
                    why: "the ARN's kind (user/ or role/) differs from the identity kind given",
                });
            }
        }
        RequestedIdentity::IdentityCenterUser { user_id } => {
            let ok = !user_id.is_empty()
                && user_id.len() <= 64
                && user_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
            if !ok {
                return Err(ValidationError::BadIdentityCenterUser(user_id.clone()));
            }
        }
    }
    let on_identity_center = matches!(request.identity, RequestedIdentity::IdentityCenterUser { .. });
    match &request.access {
        RequestedAccess::Actions { .. } | RequestedAccess::ManagedPolicy { .. } if on_identity_center => {
            Err(ValidationError::IdentityMismatch {
                access: "an IAM policy",
                expected: "IAM user or role",
                found: identity_kind(&request.identity),
            })
        }
        RequestedAccess::PermissionSet { .. } if !on_identity_center => Err(ValidationError::IdentityMismatch {
            access: "a permission set",
            expected: "IAM Identity Center user",
            found: identity_kind(&request.identity),
        }),
        RequestedAccess::PermissionSet { name, account_id } => {
            let ok = !name.is_empty()
                && name.len() <= 32
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b));
            if !ok {
                return Err(ValidationError::BadPermissionSetName(name.clone()));
            }
            if account_id != target {
                return Err(ValidationError::WrongAccount {
                    what: "permission set assignment",
                    value: name.clone(),
                    found: account_id.clone(),
                    target: target.to_string(),
                });
            }
            Ok(())
        }
        RequestedAccess::ManagedPolicy { policy_arn } => {
            const WHAT: &str = "managed policy";
            let a = parse_arn(WHAT, policy_arn)?;
            if a.service != "iam" || !a.region.is_empty() || !a.resource.starts_with("policy/") {
                return Err(ValidationError::BadArn {
                    what: WHAT,
                    value: policy_arn.clone(),
                    why: "expected arn:aws:iam::<account or aws>:policy/<name>",
                });
            }
            if a.account != "aws" && a.account != target {
                return Err(ValidationError::WrongAccount {
                    what: WHAT,
                    value: policy_arn.clone(),
                    found: a.account.to_string(),
                    target: target.to_string(),
                });
            }
            Ok(())
        }
        RequestedAccess::Actions { grants } => check_grants(grants, target),
    }
}

fn check_grants(grants: &[ActionGrant], target: &str) -> Result<(), ValidationError> {
    if grants.is_empty() {
        return Err(ValidationError::NoActions);
    }
    if grants.len() > MAX_GRANTS {
        return Err(ValidationError::TooManyGrants { found: grants.len(), max: MAX_GRANTS });
    }
    for g in grants {
        if g.resources.is_empty() {
            return Err(ValidationError::NoResources { action: g.action.clone() });
        }
        if g.resources.len() > MAX_RESOURCES_PER_GRANT {
            return Err(ValidationError::TooManyResources {
                action: g.action.clone(),
                found: g.resources.len(),
                max: MAX_RESOURCES_PER_GRANT,
            });
        }
        for r in &g.resources {
            if r == "*" {
                continue;
            }
            const WHAT: &str = "resource";
            let a = parse_arn(WHAT, r)?;
            // Some services' ARNs carry no account (S3 buckets); any other account, or a wildcard
            // standing for every account, would reach outside the target account.
            if !a.account.is_empty() && a.account != target {
                return Err(ValidationError::WrongAccount {
                    what: WHAT,
                    value: r.clone(),
                    found: a.account.to_string(),
                    target: target.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// The actions an actions request names, each checked against the catalog.
pub fn requested_actions(catalog: &Catalog, grants: &[ActionGrant]) -> Result<ActionSet, ValidationError> {
    let mut all = catalog.empty_set();
    for g in grants {
        let pattern = g.action.trim();
        let wildcard = pattern.contains(['*', '?']);
        let well_formed = pattern == "*"
            || pattern.split_once(':').is_some_and(|(p, n)| {
                !p.is_empty() && !n.is_empty() && !n.contains(':') && !pattern.chars().any(char::is_whitespace)
            });
        if !well_formed {
            return Err(ValidationError::MalformedAction(g.action.clone()));
        }
        let matched = catalog.expand(pattern);
        if matched.is_empty() {
            return Err(if wildcard {
                ValidationError::WildcardMatchesNothing(g.action.clone())
            } else {
                ValidationError::UnknownAction(g.action.clone())
            });
        }
        all.union_with(&matched);
    }
    Ok(all)
}

/// The risk of `access`:
/// * high: any action of access level "Permissions management", any of [`SELF_ESCALATION_ACTIONS`], any
///   action the catalog tags as privilege escalation (wildcards count by what they expand to), or an
///   administrator-like managed policy or permission set;
/// * low: every action is List or Read, and none is tagged credential exposure (a read of a secret
///   hands over another identity's power); or a policy/permission set configured as read-only;
/// * medium: everything else, including policies and permission sets whose content is not known here.
pub fn assess_risk(
    config: &AccessConfig,
    catalog: &Catalog,
    access: &RequestedAccess,
) -> Result<RiskLevel, ValidationError> {
    match access {
        RequestedAccess::Actions { grants } => {
            let actions = requested_actions(catalog, grants)?;
            Ok(action_risk(catalog, &actions))
        }
        RequestedAccess::ManagedPolicy { policy_arn: name } | RequestedAccess::PermissionSet { name, .. } => {
            Ok(if config.is_administrator_like(name) {
                RiskLevel::High
            } else if config.is_read_only(name) {
                RiskLevel::Low
            } else {
                RiskLevel::Medium
            })
        }
    }
}

/// The risk of a set of catalog actions (see [`assess_risk`]).
pub fn action_risk(catalog: &Catalog, actions: &ActionSet) -> RiskLevel {
    let self_escalation: Vec<_> = SELF_ESCALATION_ACTIONS.iter().filter_map(|a| catalog.lookup(a)).collect();
    let mut all_read = true;
    for id in actions.iter() {
        let level = catalog.access_level(id);
        let tags = catalog.risk_tags(id);
        if level == AccessLevel::PermissionsManagement || tags.privilege_escalation || self_escalation.contains(&id) {
            return RiskLevel::High;
        }
        if !matches!(level, AccessLevel::List | AccessLevel::Read) || tags.credential_exposure {
            all_read = false;
        }
    }
    if all_read { RiskLevel::Low } else { RiskLevel::Medium }
}

/// A reason given for a denial, cancellation or early revocation: required, bounded like a
/// justification.
pub fn check_reason(config: &AccessConfig, reason: &str) -> Result<(), ValidationError> {
    if reason.trim().is_empty() {
        return Err(ValidationError::EmptyReason);
    }
    let len = reason.chars().count();
    if len > config.justification_max_chars {
        return Err(ValidationError::ReasonTooLong { len, max: config.justification_max_chars });
    }
    Ok(())
}
