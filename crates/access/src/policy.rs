//! What a grant installs and what its revocation removes, as data.
//!
//! For an actions request the grant is an inline policy that allows exactly the requested actions on
//! the requested resources, and carries its own end: `DateLessThan aws:CurrentTime <expiry>`. The
//! scheduler's revocation is the first lock; the condition is the second, so a grant whose
//! revocation is late (the service down, AWS refusing) still stops working on time.

use grantwatch_types::{
    AccessRequest, ActionGrant, EventTime, GrantAction, GrantPrincipal, RequestedAccess, RequestedIdentity,
    RevokeAction,
};
use serde::Serialize;

use crate::validate::{MAX_ROLE_INLINE_POLICY_CHARS, MAX_USER_INLINE_POLICY_CHARS, ValidationError, iam_identity};

/// The prefix of every inline policy a grant installs; the rest is the request id.
pub const INLINE_POLICY_PREFIX: &str = "grantwatch-access-";

/// The inline policy's name: deterministic, so a revocation (or a retry of an installation) names
/// the same policy without looking anything up.
pub fn inline_policy_name(request_id: &str) -> String {
    format!("{INLINE_POLICY_PREFIX}{request_id}")
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct PolicyDocument<'a> {
    version: &'static str,
    statement: Vec<Statement<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Statement<'a> {
    sid: String,
    effect: &'static str,
    action: Vec<&'a str>,
    resource: Vec<&'a str>,
    condition: Condition,
}

#[derive(Serialize)]
struct Condition {
    #[serde(rename = "DateLessThan")]
    date_less_than: CurrentTime,
}

#[derive(Serialize)]
struct CurrentTime {
    #[serde(rename = "aws:CurrentTime")]
    current_time: String,
}

/// The inline policy document (compact JSON) for `grants`, valid until `expires_at`.
///
/// Grants naming the same resources share one statement (their actions in request order), which keeps
/// the document small against IAM's size limits; the resources of a statement are sorted and
/// deduplicated, so equal requests give byte-identical documents.
pub fn inline_policy_document(grants: &[ActionGrant], expires_at: EventTime) -> Result<String, serde_json::Error> {
    let mut groups: Vec<(Vec<&str>, Vec<&str>)> = Vec::new();
    for g in grants {
        let mut resources: Vec<&str> = g.resources.iter().map(String::as_str).collect();
        resources.sort_unstable();
        resources.dedup();
        let action = g.action.trim();
        match groups.iter_mut().find(|(r, _)| *r == resources) {
            Some((_, actions)) => {
                if !actions.contains(&action) {
                    actions.push(action);
                }
            }
            None => groups.push((resources, vec![action])),
        }
    }
    let expiry = expires_at.to_rfc3339();
    let statement = groups
        .into_iter()
        .enumerate()
        .map(|(i, (resource, action))| Statement {
            sid: format!("GrantwatchAccess{}", i + 1),
            effect: "Allow",
            action,
            resource,
            condition: Condition { date_less_than: CurrentTime { current_time: expiry.clone() } },
        })
        .collect();
    serde_json::to_string(&PolicyDocument { version: "2012-10-17", statement })
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("could not encode the policy document: {0}")]
    Encode(#[from] serde_json::Error),
}

/// What installing `request`'s grant does, for a grant that ends at `expires_at`.
pub fn grant_action(request: &AccessRequest, expires_at: EventTime) -> Result<GrantAction, PlanError> {
    match (&request.identity, &request.access) {
        (RequestedIdentity::IamUser { arn } | RequestedIdentity::IamRole { arn }, access) => {
            let (principal, _) = iam_identity(arn, &request.account_id)?;
            match access {
                RequestedAccess::Actions { grants } => {
                    let document = inline_policy_document(grants, expires_at)?;
                    let (max, kind) = match principal {
                        GrantPrincipal::IamUser { .. } => (MAX_USER_INLINE_POLICY_CHARS, "IAM user"),
                        GrantPrincipal::IamRole { .. } => (MAX_ROLE_INLINE_POLICY_CHARS, "IAM role"),
                    };
                    if document.len() > max {
                        return Err(ValidationError::PolicyTooLarge { size: document.len(), max, kind }.into());
                    }
                    Ok(GrantAction::PutInlinePolicy {
                        principal,
                        policy_name: inline_policy_name(&request.id),
                        document,
                    })
                }
                RequestedAccess::ManagedPolicy { policy_arn } => {
                    Ok(GrantAction::AttachManagedPolicy { principal, policy_arn: policy_arn.clone() })
                }
                RequestedAccess::PermissionSet { .. } => Err(mismatch()),
            }
        }
        (RequestedIdentity::IdentityCenterUser { user_id }, RequestedAccess::PermissionSet { name, account_id }) => {
            Ok(GrantAction::CreateAccountAssignment {
                account_id: account_id.clone(),
                permission_set_name: name.clone(),
                user_id: user_id.clone(),
            })
        }
        (RequestedIdentity::IdentityCenterUser { .. }, _) => Err(mismatch()),
    }
}

fn mismatch() -> PlanError {
    ValidationError::IdentityMismatch {
        access: "this access",
        expected: "identity of the matching kind",
        found: "another kind",
    }
    .into()
}

/// What revoking `request`'s grant does: the inverse of [`grant_action`], derived from the request
/// alone (a revocation never needs the installed document).
pub fn revoke_action(request: &AccessRequest) -> Result<RevokeAction, PlanError> {
    match (&request.identity, &request.access) {
        (RequestedIdentity::IamUser { arn } | RequestedIdentity::IamRole { arn }, access) => {
            let (principal, _) = iam_identity(arn, &request.account_id)?;
            match access {
                RequestedAccess::Actions { .. } => {
                    Ok(RevokeAction::DeleteInlinePolicy { principal, policy_name: inline_policy_name(&request.id) })
                }
                RequestedAccess::ManagedPolicy { policy_arn } => {
                    Ok(RevokeAction::DetachManagedPolicy { principal, policy_arn: policy_arn.clone() })
                }
                RequestedAccess::PermissionSet { .. } => Err(mismatch()),
            }
        }
        (RequestedIdentity::IdentityCenterUser { user_id }, RequestedAccess::PermissionSet { name, account_id }) => {
            Ok(RevokeAction::DeleteAccountAssignment {
                account_id: account_id.clone(),
                permission_set_name: name.clone(),
                user_id: user_id.clone(),
            })
        }
        (RequestedIdentity::IdentityCenterUser { .. }, _) => Err(mismatch()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(action: &str, resources: &[&str]) -> ActionGrant {
        ActionGrant { action: action.into(), resources: resources.iter().map(|r| r.to_string()).collect() }
    }

    #[test]
    fn the_document_allows_exactly_the_request_until_expiry() {
        let grants = [
            grant("s3:GetObject", &["arn:aws:s3:::b/*", "arn:aws:s3:::a/*"]),
            grant("ec2:DescribeInstances", &["*"]),
            grant("s3:ListBucket", &["arn:aws:s3:::a/*", "arn:aws:s3:::b/*"]),
        ];
        let expiry = EventTime::parse_rfc3339("2025-01-02T03:04:05Z").unwrap();
        let doc = inline_policy_document(&grants, expiry).unwrap();
        let cond = r#""Condition":{"DateLessThan":{"aws:CurrentTime":"2025-01-02T03:04:05Z"}}"#;
        assert_eq!(
            doc,
            format!(
                r#"{{"Version":"2012-10-17","Statement":[{{"Sid":"GrantwatchAccess1","Effect":"Allow","Action":["s3:GetObject","s3:ListBucket"],"Resource":["arn:aws:s3:::a/*","arn:aws:s3:::b/*"],{cond}}},{{"Sid":"GrantwatchAccess2","Effect":"Allow","Action":["ec2:DescribeInstances"],"Resource":["*"],{cond}}}]}}"#
            )
        );
        assert_eq!(inline_policy_name("r-1"), "grantwatch-access-r-1");
    }
}
