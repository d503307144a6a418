//! The AWS side of permissions on demand: what a grant installs and what its revocation removes
//! (`grantwatch_types::{GrantAction, RevokeAction}`, computed by `grantwatch-access`), made through
//! the SDK. Async, for the access service's tokio runtime, where many grants and revocations run at
//! once: the client is cheap to clone and every method takes `&self`.
//!
//! Every SDK call is bounded ([`GrantClientOptions`]: a connect timeout, a timeout per attempt and
//! one over all the attempts of a call), so a hung endpoint fails a revocation (which the scheduler
//! retries) instead of holding its worker; the wait for an Identity Center assignment is bounded too.
//!
//! Revocations are idempotent: what is already gone (`NoSuchEntity` on a delete or detach, the
//! principal deleted, no such account assignment, no permission set of that name) counts as revoked.
//! Installations may be repeated: `PutUserPolicy` overwrites, `AttachUserPolicy` of an attached policy
//! succeeds, a second `CreateAccountAssignment` succeeds in AWS.
//!
//! Errors carry AWS's code, message and request id ([`ApiError`]), never a request; `Debug` shows the
//! options only (the SDK configuration holds the credentials provider).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_ssoadmin::types::{AccountAssignmentOperationStatus, PrincipalType, StatusValues, TargetType};
use grantwatch_types::{GrantAction, GrantPrincipal, RevokeAction};

use crate::Error;
use crate::api::{ApiError, ApiErrorKind};
use crate::aws::{AwsConfig, api_err, find_permission_set, load_sdk_config, with_default_region};

/// How long the client waits, and how often it tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantClientOptions {
    /// Establishing a connection.
    pub connect_timeout: Duration,
    /// One attempt of one call (request sent, answer read). At most `operation_timeout` in effect.
    pub attempt_timeout: Duration,
    /// One call, all its attempts and the backoff between them: the longest any single AWS call
    /// can hold a caller.
    pub operation_timeout: Duration,
    /// Attempts per call (1: no retry). The SDK retries throttling, server errors and timeouts.
    pub max_attempts: u32,
    /// How long an Identity Center account assignment's creation or deletion is waited for; past
    /// it the outcome is unknown (an error of kind [`ApiErrorKind::Unknown`]).
    pub assignment_wait: Duration,
    /// The interval between two reads of an assignment's status.
    pub assignment_poll: Duration,
}

impl Default for GrantClientOptions {
    fn default() -> GrantClientOptions {
        GrantClientOptions {
            connect_timeout: Duration::from_secs(3),
            attempt_timeout: Duration::from_secs(10),
            operation_timeout: Duration::from_secs(30),
            max_attempts: 3,
            assignment_wait: Duration::from_secs(120),
            assignment_poll: Duration::from_secs(1),
        }
    }
}

impl GrantClientOptions {
    fn check(&self) -> Result<(), String> {
        let positive = [
            ("connect_timeout", self.connect_timeout),
            ("attempt_timeout", self.attempt_timeout),
            ("operation_timeout", self.operation_timeout),
            ("assignment_poll", self.assignment_poll),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, d)| d.is_zero()) {
            return Err(format!("grant client: {name} must be above 0"));
        }
        if self.max_attempts == 0 {
            return Err("grant client: max_attempts must be at least 1".into());
        }
        Ok(())
    }
}

/// A permission set of the region's Identity Center instance.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PermissionSetRef {
    instance_arn: String,
    arn: String,
}

/// Installs and revokes grants. Clones share the permission set cache.
#[derive(Clone)]
pub struct GrantClient {
    iam: aws_sdk_iam::Client,
    sso: aws_sdk_ssoadmin::Client,
    options: GrantClientOptions,
    /// Permission set name → where it is. Names are immutable in Identity Center; an entry that
    /// AWS no longer knows (the set deleted and made again) is dropped and looked up again.
    permission_sets: Arc<Mutex<HashMap<String, PermissionSetRef>>>,
}

impl fmt::Debug for GrantClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Deliberately not the clients' config: it holds the credentials provider.
        f.debug_struct("GrantClient")
            .field("options", &self.options)
            .field("cached_permission_sets", &self.cache().len())
            .finish_non_exhaustive()
    }
}

/// Which assignment operation a status belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AssignmentOp {
    Create,
    Delete,
}

impl AssignmentOp {
    fn failed_code(self) -> &'static str {
        match self {
            AssignmentOp::Create => "AccountAssignmentCreationFailed",
            AssignmentOp::Delete => "AccountAssignmentDeletionFailed",
        }
    }

    fn verb(self) -> &'static str {
        match self {
            AssignmentOp::Create => "creation",
            AssignmentOp::Delete => "deletion",
        }
    }
}

fn unknown(message: String, request_id: Option<&str>) -> ApiError {
    ApiError { kind: ApiErrorKind::Unknown, code: None, message, request_id: request_id.map(str::to_string) }
}

/// `Ok` when the call succeeded or what it removes is already gone.
fn gone_is_ok<T>(r: Result<T, ApiError>) -> Result<(), ApiError> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

impl GrantClient {
    /// The client of `cfg` (the SDK's default credential chain; the region from `cfg`, the chain, else
    /// `us-east-1`; the Identity Center instance is the region's). Credentials are resolved on the
    /// first request. Refused: options that cannot work (a zero timeout, no attempt).
    pub async fn connect(cfg: &AwsConfig, options: GrantClientOptions) -> Result<GrantClient, Error> {
        options.check().map_err(Error::Refused)?;
        let sdk = load_sdk_config(cfg).await;
        Ok(GrantClient::build(&sdk, options))
    }

    /// The client over an SDK configuration the caller built (its own credentials provider, e.g. a
    /// role assumed in the target account; region and endpoint): `options` replace its timeouts and
    /// retries.
    pub fn from_sdk_config(sdk: &aws_config::SdkConfig, options: GrantClientOptions) -> Result<GrantClient, Error> {
        options.check().map_err(Error::Refused)?;
        Ok(GrantClient::build(sdk, options))
    }

    fn build(sdk: &aws_config::SdkConfig, options: GrantClientOptions) -> GrantClient {
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(options.connect_timeout)
            .operation_attempt_timeout(options.attempt_timeout.min(options.operation_timeout))
            .operation_timeout(options.operation_timeout)
            .build();
        let sdk = with_default_region(sdk.clone())
            .into_builder()
            .timeout_config(timeouts)
            .retry_config(RetryConfig::standard().with_max_attempts(options.max_attempts))
            .build();
        GrantClient {
            iam: aws_sdk_iam::Client::new(&sdk),
            sso: aws_sdk_ssoadmin::Client::new(&sdk),
            options,
            permission_sets: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    pub fn options(&self) -> &GrantClientOptions {
        &self.options
    }

    fn cache(&self) -> MutexGuard<'_, HashMap<String, PermissionSetRef>> {
        // A panic while holding the lock cannot leave the map half-written: take it as it is.
        self.permission_sets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Performs what a grant installs: `PutUserPolicy`/`PutRolePolicy`, `AttachUserPolicy`/
    /// `AttachRolePolicy`, or `CreateAccountAssignment` (principal type `USER`, the permission set
    /// found by name in the region's Identity Center instance), waited for until it succeeds,
    /// fails (an error with AWS's reason) or [`GrantClientOptions::assignment_wait`] passes (an
    /// error whose outcome is unknown).
    pub async fn install(&self, action: &GrantAction) -> Result<(), ApiError> {
        match action {
            GrantAction::PutInlinePolicy { principal, policy_name, document } => match principal {
                GrantPrincipal::IamUser { name } => self
                    .iam
                    .put_user_policy()
                    .user_name(name)
                    .policy_name(policy_name)
                    .policy_document(document)
                    .send()
                    .await
                    .map(drop)
                    .map_err(api_err),
                GrantPrincipal::IamRole { name } => self
                    .iam
                    .put_role_policy()
                    .role_name(name)
                    .policy_name(policy_name)
                    .policy_document(document)
                    .send()
                    .await
                    .map(drop)
                    .map_err(api_err),
            },
            GrantAction::AttachManagedPolicy { principal, policy_arn } => match principal {
                GrantPrincipal::IamUser { name } => {
                    { self.iam.attach_user_policy().user_name(name).policy_arn(policy_arn).send().await.map(drop) }
                        .map_err(api_err)
                }
                GrantPrincipal::IamRole { name } => {
                    { self.iam.attach_role_policy().role_name(name).policy_arn(policy_arn).send().await.map(drop) }
                        .map_err(api_err)
                }
            },
            GrantAction::CreateAccountAssignment { account_id, permission_set_name, user_id } => {
                self.create_assignment(account_id, permission_set_name, user_id).await
            }
        }
    }

    /// Undoes what [`GrantClient::install`] did: `DeleteUserPolicy`/`DeleteRolePolicy`,
    /// `DetachUserPolicy`/`DetachRolePolicy`, `DeleteAccountAssignment` (waited for like a creation).
    /// Idempotent: what is already gone is `Ok`.
    pub async fn revoke(&self, action: &RevokeAction) -> Result<(), ApiError> {
        match action {
            RevokeAction::DeleteInlinePolicy { principal, policy_name } => gone_is_ok(match principal {
                GrantPrincipal::IamUser { name } => {
                    self.iam.delete_user_policy().user_name(name).policy_name(policy_name).send().await.map_err(api_err)
                }
                .map(drop),
                GrantPrincipal::IamRole { name } => {
                    self.iam.delete_role_policy().role_name(name).policy_name(policy_name).send().await.map_err(api_err)
                }
                .map(drop),
            }),
            // IAM answers NoSuchEntity for a policy that is not attached, as for a missing principal.
            RevokeAction::DetachManagedPolicy { principal, policy_arn } => gone_is_ok(match principal {
                GrantPrincipal::IamUser { name } => {
                    self.iam.detach_user_policy().user_name(name).policy_arn(policy_arn).send().await.map_err(api_err)
                }
                .map(drop),
                GrantPrincipal::IamRole { name } => {
                    self.iam.detach_role_policy().role_name(name).policy_arn(policy_arn).send().await.map_err(api_err)
                }
                .map(drop),
            }),
            RevokeAction::DeleteAccountAssignment { account_id, permission_set_name, user_id } => {
                self.delete_assignment(account_id, permission_set_name, user_id).await
            }
        }
    }

    /// Whether `policy_arn` is attached to the principal directly (not through a group): a grant of
    /// a policy already attached must be refused, since its revocation would detach it. A missing
    /// principal is an error (`NoSuchEntity`).
    pub async fn managed_policy_attached(
        &self,
        principal: &GrantPrincipal,
        policy_arn: &str,
    ) -> Result<bool, ApiError> {
        let arns: Vec<String> = match principal {
            GrantPrincipal::IamUser { name } => self
                .iam
                .list_attached_user_policies()
                .user_name(name)
                .into_paginator()
                .items()
                .send()
                .try_collect()
                .await
                .map_err(api_err)?
                .into_iter()
                .filter_map(|p| p.policy_arn)
                .collect(),
            GrantPrincipal::IamRole { name } => self
                .iam
                .list_attached_role_policies()
                .role_name(name)
                .into_paginator()
                .items()
                .send()
                .try_collect()
                .await
                .map_err(api_err)?
                .into_iter()
                .filter_map(|p| p.policy_arn)
                .collect(),
        };
        Ok(arns.iter().any(|a| a == policy_arn))
    }

    /// Whether the IAM user or role exists (`GetUser`/`GetRole`).
    pub async fn principal_exists(&self, principal: &GrantPrincipal) -> Result<bool, ApiError> {
        let r = match principal {
            GrantPrincipal::IamUser { name } => {
                self.iam.get_user().user_name(name).send().await.map(drop).map_err(api_err)
            }
            GrantPrincipal::IamRole { name } => {
                self.iam.get_role().role_name(name).send().await.map(drop).map_err(api_err)
            }
        };
        match r {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether the Identity Center user already holds the permission set on the account: like
    /// [`GrantClient::managed_policy_attached`], a grant of an assignment that exists must be refused,
    /// since its revocation would delete it. `false` when there is no permission set of that name.
    pub async fn account_assignment_exists(
        &self,
        account_id: &str,
        permission_set_name: &str,
        user_id: &str,
    ) -> Result<bool, ApiError> {
        Ok(self.locate_assignment(account_id, permission_set_name, user_id).await?.is_some())
    }

    /// The permission set called `name`, from the cache unless `fresh`; `None` when the instance has
    /// none of that name. The flag says whether the answer came from the cache.
    async fn permission_set(&self, name: &str, fresh: bool) -> Result<Option<(PermissionSetRef, bool)>, ApiError> {
        if !fresh && let Some(p) = self.cache().get(name) {
            return Ok(Some((p.clone(), true)));
        }
        let (instance_arn, arn) = find_permission_set(&self.sso, name).await?;
        let found = arn.map(|arn| PermissionSetRef { instance_arn, arn });
        match &found {
            Some(p) => self.cache().insert(name.to_string(), p.clone()),
            None => self.cache().remove(name),
        };
        Ok(found.map(|p| (p, false)))
    }

    /// Whether `ps` is assigned to the user on the account (`ListAccountAssignments`).
    async fn listed(&self, ps: &PermissionSetRef, account_id: &str, user_id: &str) -> Result<bool, ApiError> {
        let items = self
            .sso
            .list_account_assignments()
            .instance_arn(&ps.instance_arn)
            .account_id(account_id)
            .permission_set_arn(&ps.arn)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(api_err)?;
        Ok(items.iter().any(|a| a.principal_type() == Some(&PrincipalType::User) && a.principal_id() == Some(user_id)))
    }

    /// The permission set through which the user is assigned the account, if it is. A cached
    /// permission set that finds nothing is looked up again, so a stale entry never says "absent".
    async fn locate_assignment(
        &self,
        account_id: &str,
        name: &str,
        user_id: &str,
    ) -> Result<Option<PermissionSetRef>, ApiError> {
        for fresh in [false, true] {
            let Some((ps, cached)) = self.permission_set(name, fresh).await? else { return Ok(None) };
            match self.listed(&ps, account_id, user_id).await {
                Ok(true) => return Ok(Some(ps)),
                Ok(false) if !cached => return Ok(None),
                Err(e) if !(cached && e.is_not_found()) => return Err(e),
                _ => {}
            }
        }
        Ok(None)
    }

    async fn create_assignment(&self, account_id: &str, name: &str, user_id: &str) -> Result<(), ApiError> {
        for fresh in [false, true] {
            let Some((ps, cached)) = self.permission_set(name, fresh).await? else {
                return Err(ApiError::service(
                    "ResourceNotFoundException",
                    format!("no permission set named {name:?} in the region's Identity Center instance"),
                ));
            };
            let out = self
                .sso
                .create_account_assignment()
                .instance_arn(&ps.instance_arn)
                .target_id(account_id)
                .target_type(TargetType::AwsAccount)
                .permission_set_arn(&ps.arn)
                .principal_type(PrincipalType::User)
                .principal_id(user_id)
                .send()
                .await
                .map_err(api_err);
            match out {
                Ok(out) => {
                    let status = out.account_assignment_creation_status().cloned();
                    return self.wait(AssignmentOp::Create, &ps.instance_arn, status).await;
                }
                // A cached permission set AWS no longer knows: look it up again.
                Err(e) if cached && e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        Err(unknown(format!("permission set {name:?} could not be resolved"), None))
    }

    async fn delete_assignment(&self, account_id: &str, name: &str, user_id: &str) -> Result<(), ApiError> {
        // No permission set of that name: there is no assignment of it (names are immutable, and a
        // permission set is deleted only once no account has it).
        let Some(ps) = self.locate_assignment(account_id, name, user_id).await? else { return Ok(()) };
        let out = self
            .sso
            .delete_account_assignment()
            .instance_arn(&ps.instance_arn)
            .target_id(account_id)
            .target_type(TargetType::AwsAccount)
            .permission_set_arn(&ps.arn)
            .principal_type(PrincipalType::User)
            .principal_id(user_id)
            .send()
            .await
            .map_err(api_err);
        let result = match out {
            Ok(out) => {
                let status = out.account_assignment_deletion_status().cloned();
                self.wait(AssignmentOp::Delete, &ps.instance_arn, status).await
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => Ok(()),
            // Not found, or the deletion failed: gone all the same if nothing lists it (someone else
            // deleted it meanwhile). An unknown outcome stays unknown: the caller tries again.
            Err(e) if e.kind == ApiErrorKind::Service => {
                if self.listed(&ps, account_id, user_id).await? {
                    Err(e)
                } else {
                    Ok(())
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Follows an assignment operation from the status its call returned until it is no longer in
    /// progress, reading it every `assignment_poll`, for at most `assignment_wait`.
    async fn wait(
        &self,
        op: AssignmentOp,
        instance_arn: &str,
        mut status: Option<AccountAssignmentOperationStatus>,
    ) -> Result<(), ApiError> {
        let deadline = tokio::time::Instant::now() + self.options.assignment_wait;
        loop {
            let Some(st) = status else {
                return Err(unknown(format!("the assignment {} returned no status", op.verb()), None));
            };
            match st.status() {
                Some(StatusValues::Succeeded) => return Ok(()),
                Some(StatusValues::Failed) => {
                    return Err(ApiError {
                        kind: ApiErrorKind::Service,
                        code: Some(op.failed_code().to_string()),
                        message: st.failure_reason().unwrap_or("no reason given").to_string(),
                        request_id: st.request_id().map(str::to_string),
                    });
                }
                _ => {}
            }
            let Some(request_id) = st.request_id() else {
                return Err(unknown(format!("the assignment {} is in progress, with no request id", op.verb()), None));
            };
            if tokio::time::Instant::now() + self.options.assignment_poll > deadline {
                return Err(unknown(
                    format!(
                        "the assignment {} is still in progress after {:?}",
                        op.verb(),
                        self.options.assignment_wait
                    ),
                    Some(request_id),
                ));
            }
            tokio::time::sleep(self.options.assignment_poll).await;
            status = match op {
                AssignmentOp::Create => self
                    .sso
                    .describe_account_assignment_creation_status()
                    .instance_arn(instance_arn)
                    .account_assignment_creation_request_id(request_id)
                    .send()
                    .await
                    .map_err(api_err)?
                    .account_assignment_creation_status
                    .clone(),
                AssignmentOp::Delete => self
                    .sso
                    .describe_account_assignment_deletion_status()
                    .instance_arn(instance_arn)
                    .account_assignment_deletion_request_id(request_id)
                    .send()
                    .await
                    .map_err(api_err)?
                    .account_assignment_deletion_status
                    .clone(),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_that_cannot_work_are_refused() {
        assert!(GrantClientOptions::default().check().is_ok());
        let zero = GrantClientOptions { attempt_timeout: Duration::ZERO, ..Default::default() };
        assert_eq!(zero.check().unwrap_err(), "grant client: attempt_timeout must be above 0");
        let none = GrantClientOptions { max_attempts: 0, ..Default::default() };
        assert!(none.check().unwrap_err().contains("max_attempts"));
        // An operation bound below the attempt bound is the bound of both.
        let short = GrantClientOptions { operation_timeout: Duration::from_secs(1), ..Default::default() };
        assert!(short.check().is_ok());
    }

    #[test]
    fn debug_shows_no_configuration() {
        let creds = aws_sdk_iam::config::Credentials::new("AKIAEXAMPLE", "very-secret", None, None, "test");
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .credentials_provider(aws_sdk_iam::config::SharedCredentialsProvider::new(creds))
            .build();
        let client = GrantClient::from_sdk_config(&sdk, GrantClientOptions::default()).unwrap();
        let shown = format!("{client:?}");
        assert!(shown.starts_with("GrantClient { options: GrantClientOptions {"), "{shown}");
        assert!(!shown.contains("very-secret") && !shown.contains("AKIAEXAMPLE"), "{shown}");
    }
}
