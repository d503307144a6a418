//! The engine's [`Grants`] over AWS: `grantwatch_aws_iam::GrantClient` (IAM and SSO Admin through
//! the SDK; credentials from its default chain only).

use std::time::Duration;

use anyhow::Result;
use grantwatch_aws_iam::{AwsConfig, GrantClient, GrantClientOptions};
use grantwatch_types::{GrantAction, RevokeAction};

use crate::config::AwsSection;
use crate::grants::{BoxFuture, CallError, Grants};

#[derive(Debug)]
pub struct AwsGrants {
    client: GrantClient,
}

impl AwsGrants {
    pub async fn connect(cfg: &AwsSection) -> Result<AwsGrants> {
        let aws = AwsConfig { endpoint_url: cfg.endpoint_url.clone(), region: cfg.region.clone() };
        let options = GrantClientOptions {
            operation_timeout: Duration::from_secs(cfg.call_timeout_secs.max(1)),
            ..GrantClientOptions::default()
        };
        Ok(AwsGrants { client: GrantClient::connect(&aws, options).await? })
    }

    /// Over an SDK configuration built by the caller (the tests' moto accounts).
    pub fn from_sdk_config(sdk: &aws_config::SdkConfig, call_timeout: Duration) -> Result<AwsGrants> {
        let options = GrantClientOptions { operation_timeout: call_timeout, ..GrantClientOptions::default() };
        Ok(AwsGrants { client: GrantClient::from_sdk_config(sdk, options)? })
    }
}

impl Grants for AwsGrants {
    fn precheck<'a>(&'a self, action: &'a GrantAction) -> BoxFuture<'a, Result<Option<String>, CallError>> {
        Box::pin(async move {
            let principal = match action {
                GrantAction::PutInlinePolicy { principal, .. } | GrantAction::AttachManagedPolicy { principal, .. } => {
                    principal
                }
                // The assignment call itself refuses an unknown user or permission set; one that is
                // already assigned must not be taken away at expiry.
                GrantAction::CreateAccountAssignment { account_id, permission_set_name, user_id } => {
                    let exists = self
                        .client
                        .account_assignment_exists(account_id, permission_set_name, user_id)
                        .await
                        .map_err(|e| e.to_string())?;
                    return Ok(exists.then(|| {
                        format!(
                            "{permission_set_name} is already assigned to the user on {account_id}: revoking it at expiry would remove access it had before"
                        )
                    }));
                }
            };
            if !self.client.principal_exists(principal).await.map_err(|e| e.to_string())? {
                return Ok(Some(format!("{principal:?} does not exist in the account")));
            }
            if let GrantAction::AttachManagedPolicy { principal, policy_arn } = action
                && self.client.managed_policy_attached(principal, policy_arn).await.map_err(|e| e.to_string())?
            {
                {
                    return Ok(Some(format!(
                        "{policy_arn} is already attached to the identity: revoking it at expiry would remove access it had before"
                    )));
                }
            }
            Ok(None)
        })
    }

    fn install<'a>(&'a self, action: &'a GrantAction) -> BoxFuture<'a, Result<(), CallError>> {
        Box::pin(async move { self.client.install(action).await.map_err(|e| e.to_string()) })
    }

    fn revoke<'a>(&'a self, action: &'a RevokeAction) -> BoxFuture<'a, Result<(), CallError>> {
        Box::pin(async move { self.client.revoke(action).await.map_err(|e| e.to_string()) })
    }
}
