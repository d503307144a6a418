//! The AWS client: IAM, STS and IAM Identity Center (SSO Admin) through the SDK, built like
//! `grantwatch-s3`'s (the default credential chain; the region from the chain, else `us-east-1`: IAM
//! is global; one endpoint URL for the three, for moto or a proxy). It owns a small tokio runtime and
//! blocks on each request: the runs are sequential by design.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use aws_sdk_iam::config::http::HttpResponse;
use aws_sdk_iam::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_iam::operation::RequestId;
use grantwatch_types::IdentityKind;
use grantwatch_types::{AccessKeyState, IamCall, IdentityIamState, NamedDocument, PermissionSetState, Subject};
use serde_json::{Map, Value, json};

use crate::Error;
use crate::api::{ApiError, ApiErrorKind, CallOutput, Caller, IamApi, PolicyState};
use crate::state::decode_document;

/// Where to reach AWS. Credentials come only from the SDK's default chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsConfig {
    /// One endpoint for IAM, STS and SSO Admin (moto, a proxy); also `AWS_ENDPOINT_URL` by the SDK.
    pub endpoint_url: Option<String>,
    /// Over the default chain's; `us-east-1` when neither says. The Identity Center instance is
    /// found in this region.
    pub region: Option<String>,
}

/// How long a permission set's provisioning is waited for (polls one second apart).
const PROVISION_POLLS: u32 = 300;

pub struct AwsIam {
    iam: aws_sdk_iam::Client,
    sts: aws_sdk_sts::Client,
    sso: aws_sdk_ssoadmin::Client,
    /// The caller's account, once asked.
    account: Option<String>,
    /// Permission set name → (instance ARN, permission set ARN).
    permission_sets: HashMap<String, (String, String)>,
    // Declared last, so that the clients (and their connections) are dropped first.
    runtime: tokio::runtime::Runtime,
}

impl fmt::Debug for AwsIam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Deliberately not the clients' config: it holds the credentials provider.
        f.debug_struct("AwsIam").field("account", &self.account).finish_non_exhaustive()
    }
}

pub(crate) fn api_err<E>(err: SdkError<E, HttpResponse>) -> ApiError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let request_id = err.request_id().map(str::to_string);
    match &err {
        SdkError::ServiceError(s) => {
            let status = s.raw().status().as_u16();
            ApiError {
                // A server error after the SDK's retries: the change may have been made.
                kind: if status >= 500 { ApiErrorKind::Unknown } else { ApiErrorKind::Service },
                code: s.err().code().map(str::to_string),
                message: s.err().message().map_or_else(|| format!("HTTP {status}"), str::to_string),
                request_id,
            }
        }
        SdkError::ConstructionFailure(_) => ApiError {
            kind: ApiErrorKind::NotSent,
            code: None,
            message: format!("the request could not be made (credentials? region?): {}", error_chain(&err)),
            request_id,
        },
        _ => ApiError {
            kind: ApiErrorKind::Unknown,
            code: err.code().map(str::to_string),
            message: error_chain(&err),
            request_id,
        },
    }
}

/// An error and its sources on one line (the SDK's own `Display` says only "dispatch failure").
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn rid<T: RequestId>(out: &T) -> Vec<String> {
    out.request_id().map(str::to_string).into_iter().collect()
}

fn doc(s: &str) -> Value {
    decode_document(s).unwrap_or_else(|| Value::String(s.to_string()))
}

fn time(t: Option<&aws_sdk_iam::primitives::DateTime>) -> Option<Value> {
    t.and_then(|t| t.fmt(aws_sdk_iam::primitives::DateTimeFormat::DateTime).ok()).map(Value::String)
}

/// Inserts `key` when `value` is there (the CLI omits absent members).
fn put(o: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(v) = value {
        o.insert(key.to_string(), v);
    }
}

fn s(v: Option<&str>) -> Option<Value> {
    v.map(|v| Value::String(v.to_string()))
}

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("gw-aws-iam")
        .enable_all()
        .build()
        .map_err(Error::Runtime)
}

/// The SDK configuration of `cfg`: the default credential chain, the region from `cfg`, else the
/// chain, else `us-east-1`, and the one endpoint URL. Shared by [`AwsIam`] and
/// [`crate::GrantClient`]. Never formatted: it holds the credentials provider.
pub(crate) async fn load_sdk_config(cfg: &AwsConfig) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(region) = &cfg.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    if let Some(url) = &cfg.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    let sdk = with_default_region(loader.load().await);
    tracing::info!(
        region = sdk.region().map_or("", |r| r.as_ref()),
        custom_endpoint = sdk.endpoint_url().is_some(),
        "AWS IAM client ready."
    );
    sdk
}

/// `us-east-1` when the configuration names no region (IAM is global).
pub(crate) fn with_default_region(sdk: aws_config::SdkConfig) -> aws_config::SdkConfig {
    if sdk.region().is_some() {
        return sdk;
    }
    sdk.into_builder().region(aws_config::Region::from_static("us-east-1")).build()
}

/// The region's IAM Identity Center instance (the first `ListInstances` names) and the ARN of its
/// permission set called `name` (`None`: there is none). No instance is an error.
pub(crate) async fn find_permission_set(
    sso: &aws_sdk_ssoadmin::Client,
    name: &str,
) -> Result<(String, Option<String>), ApiError> {
    let instances = sso.list_instances().into_paginator().items().send().try_collect().await.map_err(api_err)?;
    let instance = instances.iter().find_map(|i| i.instance_arn()).map(str::to_string).ok_or_else(|| {
        ApiError::service(
            "ResourceNotFoundException",
            "no IAM Identity Center instance in this region (set AWS_REGION)",
        )
    })?;
    let arns = sso
        .list_permission_sets()
        .instance_arn(&instance)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(api_err)?;
    for arn in arns {
        let d = sso.describe_permission_set().instance_arn(&instance).permission_set_arn(&arn).send().await;
        if d.map_err(api_err)?.permission_set().and_then(|p| p.name()) == Some(name) {
            return Ok((instance, Some(arn)));
        }
    }
    Ok((instance, None))
}

impl AwsIam {
    /// Resolves region and endpoint and builds the clients. Credentials are resolved on the first
    /// request.
    pub fn connect(cfg: &AwsConfig) -> Result<AwsIam, Error> {
        let runtime = runtime()?;
        let sdk = runtime.block_on(load_sdk_config(cfg));
        Ok(AwsIam::build(&sdk, runtime))
    }

    /// The client over an SDK configuration the caller built (its own credentials provider, region
    /// and endpoint): for a process that acts in several accounts at once, and for tests. The region
    /// defaults to `us-east-1` as in [`AwsIam::connect`].
    pub fn from_sdk_config(sdk: &aws_config::SdkConfig) -> Result<AwsIam, Error> {
        Ok(AwsIam::build(&with_default_region(sdk.clone()), runtime()?))
    }

    fn build(sdk: &aws_config::SdkConfig, runtime: tokio::runtime::Runtime) -> AwsIam {
        AwsIam {
            iam: aws_sdk_iam::Client::new(sdk),
            sts: aws_sdk_sts::Client::new(sdk),
            sso: aws_sdk_ssoadmin::Client::new(sdk),
            account: None,
            permission_sets: HashMap::new(),
            runtime,
        }
    }

    fn account(&mut self) -> Result<String, ApiError> {
        if let Some(a) = &self.account {
            return Ok(a.clone());
        }
        Ok(self.caller()?.account)
    }

    /// The account as `aws iam get-account-authorization-details` prints it (every page, every
    /// filter; documents URL-decoded into JSON objects), plus, in the shape of `aws iam
    /// list-access-keys`, every user's access keys (`AccessKeyMetadata`) and the account id
    /// (`Account`, grantwatch's extension that ties the keys to the account), which `grantwatch
    /// analyze --iam` reads from the same file.
    pub fn export(&mut self) -> Result<Value, Error> {
        let e = |what: &str| {
            let what = what.to_string();
            move |error: ApiError| Error::Api { what: what.clone(), error }
        };
        let account = self.account().map_err(e("STS GetCallerIdentity"))?;
        let pages = self
            .runtime
            .block_on(self.iam.get_account_authorization_details().into_paginator().send().try_collect())
            .map_err(api_err)
            .map_err(e("GetAccountAuthorizationDetails"))?;
        let (mut users, mut groups, mut roles, mut policies) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut user_names = Vec::new();
        for page in &pages {
            for u in page.user_detail_list() {
                user_names.extend(u.user_name().map(str::to_string));
                let mut o = Map::new();
                put(&mut o, "Path", s(u.path()));
                put(&mut o, "UserName", s(u.user_name()));
                put(&mut o, "UserId", s(u.user_id()));
                put(&mut o, "Arn", s(u.arn()));
                put(&mut o, "CreateDate", time(u.create_date()));
                o.insert("UserPolicyList".into(), inline_list(u.user_policy_list()));
                o.insert("GroupList".into(), json!(u.group_list()));
                o.insert("AttachedManagedPolicies".into(), attached_list(u.attached_managed_policies()));
                put(&mut o, "PermissionsBoundary", boundary(u.permissions_boundary()));
                o.insert("Tags".into(), tags(u.tags()));
                users.push(Value::Object(o));
            }
            for g in page.group_detail_list() {
                let mut o = Map::new();
                put(&mut o, "Path", s(g.path()));
                put(&mut o, "GroupName", s(g.group_name()));
                put(&mut o, "GroupId", s(g.group_id()));
                put(&mut o, "Arn", s(g.arn()));
                put(&mut o, "CreateDate", time(g.create_date()));
                o.insert("GroupPolicyList".into(), inline_list(g.group_policy_list()));
                o.insert("AttachedManagedPolicies".into(), attached_list(g.attached_managed_policies()));
                groups.push(Value::Object(o));
            }
            for r in page.role_detail_list() {
                let mut o = Map::new();
                put(&mut o, "Path", s(r.path()));
                put(&mut o, "RoleName", s(r.role_name()));
                put(&mut o, "RoleId", s(r.role_id()));
                put(&mut o, "Arn", s(r.arn()));
                put(&mut o, "CreateDate", time(r.create_date()));
                put(&mut o, "AssumeRolePolicyDocument", r.assume_role_policy_document().map(doc));
                let profiles: Vec<Value> = r
                    .instance_profile_list()
                    .iter()
                    .map(|p| {
                        let roles: Vec<Value> = p
                            .roles()
                            .iter()
                            .map(|r| {
                                let mut o = Map::new();
                                o.insert("Path".into(), json!(r.path()));
                                o.insert("RoleName".into(), json!(r.role_name()));
                                o.insert("RoleId".into(), json!(r.role_id()));
                                o.insert("Arn".into(), json!(r.arn()));
                                put(&mut o, "CreateDate", time(Some(r.create_date())));
                                put(&mut o, "AssumeRolePolicyDocument", r.assume_role_policy_document().map(doc));
                                Value::Object(o)
                            })
                            .collect();
                        let mut o = Map::new();
                        o.insert("Path".into(), json!(p.path()));
                        o.insert("InstanceProfileName".into(), json!(p.instance_profile_name()));
                        o.insert("InstanceProfileId".into(), json!(p.instance_profile_id()));
                        o.insert("Arn".into(), json!(p.arn()));
                        put(&mut o, "CreateDate", time(Some(p.create_date())));
                        o.insert("Roles".into(), Value::Array(roles));
                        Value::Object(o)
                    })
                    .collect();
                o.insert("InstanceProfileList".into(), Value::Array(profiles));
                o.insert("RolePolicyList".into(), inline_list(r.role_policy_list()));
                o.insert("AttachedManagedPolicies".into(), attached_list(r.attached_managed_policies()));
                put(&mut o, "PermissionsBoundary", boundary(r.permissions_boundary()));
                o.insert("Tags".into(), tags(r.tags()));
                if let Some(lu) = r.role_last_used() {
                    let mut l = Map::new();
                    put(&mut l, "LastUsedDate", time(lu.last_used_date()));
                    put(&mut l, "Region", s(lu.region()));
                    o.insert("RoleLastUsed".into(), Value::Object(l));
                }
                roles.push(Value::Object(o));
            }
            for p in page.policies() {
                let mut o = Map::new();
                // A policy's name is its ARN's last segment (some IAM emulators leave the name out).
                let name = p.policy_name().or_else(|| p.arn().and_then(|a| a.rsplit('/').next()));
                put(&mut o, "PolicyName", s(name));
                put(&mut o, "PolicyId", s(p.policy_id()));
                put(&mut o, "Arn", s(p.arn()));
                put(&mut o, "Path", s(p.path()));
                put(&mut o, "DefaultVersionId", s(p.default_version_id()));
                put(&mut o, "AttachmentCount", p.attachment_count().map(Value::from));
                put(&mut o, "PermissionsBoundaryUsageCount", p.permissions_boundary_usage_count().map(Value::from));
                o.insert("IsAttachable".into(), Value::Bool(p.is_attachable()));
                put(&mut o, "Description", s(p.description()));
                put(&mut o, "CreateDate", time(p.create_date()));
                put(&mut o, "UpdateDate", time(p.update_date()));
                let versions: Vec<Value> = p
                    .policy_version_list()
                    .iter()
                    .map(|v| {
                        let mut o = Map::new();
                        put(&mut o, "Document", v.document().map(doc));
                        put(&mut o, "VersionId", s(v.version_id()));
                        o.insert("IsDefaultVersion".into(), Value::Bool(v.is_default_version()));
                        put(&mut o, "CreateDate", time(v.create_date()));
                        Value::Object(o)
                    })
                    .collect();
                o.insert("PolicyVersionList".into(), Value::Array(versions));
                policies.push(Value::Object(o));
            }
        }
        let mut keys = Vec::new();
        for name in &user_names {
            let list = self
                .runtime
                .block_on(self.iam.list_access_keys().user_name(name).into_paginator().items().send().try_collect())
                .map_err(api_err)
                .map_err(e(&format!("ListAccessKeys of user {name}")))?;
            for k in list {
                let mut o = Map::new();
                put(&mut o, "UserName", s(k.user_name()));
                put(&mut o, "AccessKeyId", s(k.access_key_id()));
                put(&mut o, "Status", s(k.status().map(|s| s.as_str())));
                put(&mut o, "CreateDate", time(k.create_date()));
                keys.push(Value::Object(o));
            }
        }
        Ok(json!({
            "Account": account,
            "UserDetailList": users,
            "GroupDetailList": groups,
            "RoleDetailList": roles,
            "Policies": policies,
            "AccessKeyMetadata": keys,
        }))
    }

    fn find_permission_set(&mut self, name: &str) -> Result<(String, String), ApiError> {
        if let Some(found) = self.permission_sets.get(name) {
            return Ok(found.clone());
        }
        let (instance, arn) = self.runtime.block_on(find_permission_set(&self.sso, name))?;
        let Some(arn) = arn else {
            return Err(ApiError::service(
                "ResourceNotFoundException",
                format!("no permission set named {name:?} in {instance}"),
            ));
        };
        let found = (instance, arn);
        self.permission_sets.insert(name.to_string(), found.clone());
        Ok(found)
    }

    fn update_permission_set(
        &mut self,
        name: &str,
        inline: Option<&Value>,
        detach: &[String],
        attach: &[String],
    ) -> Result<CallOutput, ApiError> {
        let (instance, ps) = self.find_permission_set(name)?;
        let mut ids = Vec::new();
        let rt = &self.runtime;
        let sso = &self.sso;
        match inline {
            Some(doc) => {
                let out = rt
                    .block_on(
                        sso.put_inline_policy_to_permission_set()
                            .instance_arn(&instance)
                            .permission_set_arn(&ps)
                            .inline_policy(doc.to_string())
                            .send(),
                    )
                    .map_err(api_err)?;
                ids.extend(rid(&out));
            }
            None => match rt.block_on(
                sso.delete_inline_policy_from_permission_set().instance_arn(&instance).permission_set_arn(&ps).send(),
            ) {
                Ok(out) => ids.extend(rid(&out)),
                Err(e) => {
                    let e = api_err(e);
                    if !e.is_not_found() {
                        return Err(e);
                    }
                }
            },
        }
        for arn in detach {
            match rt.block_on(
                sso.detach_managed_policy_from_permission_set()
                    .instance_arn(&instance)
                    .permission_set_arn(&ps)
                    .managed_policy_arn(arn)
                    .send(),
            ) {
                Ok(out) => ids.extend(rid(&out)),
                // Detached already (by the run that stopped, or by someone): the goal holds.
                Err(e) => {
                    let e = api_err(e);
                    if !e.is_not_found() {
                        return Err(e);
                    }
                }
            }
        }
        for arn in attach {
            match rt.block_on(
                sso.attach_managed_policy_to_permission_set()
                    .instance_arn(&instance)
                    .permission_set_arn(&ps)
                    .managed_policy_arn(arn)
                    .send(),
            ) {
                Ok(out) => ids.extend(rid(&out)),
                Err(e) => {
                    let e = api_err(e);
                    // Attached already: the goal holds.
                    if e.code.as_deref() != Some("ConflictException") {
                        return Err(e);
                    }
                }
            }
        }
        let out = rt
            .block_on(
                sso.provision_permission_set()
                    .instance_arn(&instance)
                    .permission_set_arn(&ps)
                    .target_type(aws_sdk_ssoadmin::types::ProvisionTargetType::AllProvisionedAccounts)
                    .send(),
            )
            .map_err(api_err)?;
        ids.extend(rid(&out));
        let mut status = out.permission_set_provisioning_status().cloned();
        for _ in 0..PROVISION_POLLS {
            use aws_sdk_ssoadmin::types::StatusValues;
            let Some(st) = status.as_ref() else { break };
            match st.status() {
                Some(StatusValues::InProgress) => {}
                Some(StatusValues::Failed) => {
                    return Err(ApiError::service(
                        "ProvisioningFailed",
                        format!("provisioning {name}: {}", st.failure_reason().unwrap_or("no reason given")),
                    ));
                }
                _ => return Ok(CallOutput { request_ids: ids, version_id: None }),
            }
            let Some(request) = st.request_id().map(str::to_string) else { break };
            // The timer must be made inside the runtime: an `async` block defers it.
            rt.block_on(async { tokio::time::sleep(Duration::from_secs(1)).await });
            let d = rt
                .block_on(
                    sso.describe_permission_set_provisioning_status()
                        .instance_arn(&instance)
                        .provision_permission_set_request_id(&request)
                        .send(),
                )
                .map_err(api_err)?;
            status = d.permission_set_provisioning_status().cloned();
        }
        match status.as_ref().and_then(|s| s.status()) {
            Some(aws_sdk_ssoadmin::types::StatusValues::InProgress) => Err(ApiError {
                kind: ApiErrorKind::Unknown,
                code: None,
                message: format!("provisioning {name} still in progress"),
                request_id: None,
            }),
            _ => Ok(CallOutput { request_ids: ids, version_id: None }),
        }
    }
}

fn inline_list(list: &[aws_sdk_iam::types::PolicyDetail]) -> Value {
    Value::Array(
        list.iter()
            .map(|p| {
                let mut o = Map::new();
                put(&mut o, "PolicyName", s(p.policy_name()));
                put(&mut o, "PolicyDocument", p.policy_document().map(doc));
                Value::Object(o)
            })
            .collect(),
    )
}

fn attached_list(list: &[aws_sdk_iam::types::AttachedPolicy]) -> Value {
    Value::Array(
        list.iter()
            .map(|p| {
                let mut o = Map::new();
                put(&mut o, "PolicyName", s(p.policy_name()));
                put(&mut o, "PolicyArn", s(p.policy_arn()));
                Value::Object(o)
            })
            .collect(),
    )
}

fn boundary(b: Option<&aws_sdk_iam::types::AttachedPermissionsBoundary>) -> Option<Value> {
    b.map(|b| {
        let mut o = Map::new();
        put(&mut o, "PermissionsBoundaryType", s(b.permissions_boundary_type().map(|t| t.as_str())));
        put(&mut o, "PermissionsBoundaryArn", s(b.permissions_boundary_arn()));
        Value::Object(o)
    })
}

fn tags(list: &[aws_sdk_iam::types::Tag]) -> Value {
    Value::Array(list.iter().map(|t| json!({"Key": t.key(), "Value": t.value()})).collect())
}

impl IamApi for AwsIam {
    fn caller(&mut self) -> Result<Caller, ApiError> {
        let out = self.runtime.block_on(self.sts.get_caller_identity().send()).map_err(api_err)?;
        let account = out.account().unwrap_or_default().to_string();
        self.account = Some(account.clone());
        Ok(Caller { account, arn: out.arn().unwrap_or_default().to_string() })
    }

    fn live_state(&mut self, subject: &Subject) -> Result<IdentityIamState, ApiError> {
        let (iam, rt) = (&self.iam, &self.runtime);
        let n = subject.name.as_str();
        let mut st = IdentityIamState::default();
        match subject.kind {
            IdentityKind::Role => {
                let attached = rt
                    .block_on(
                        iam.list_attached_role_policies().role_name(n).into_paginator().items().send().try_collect(),
                    )
                    .map_err(api_err)?;
                st.managed_policies = attached.iter().filter_map(|p| p.policy_arn().map(str::to_string)).collect();
                let names = rt
                    .block_on(iam.list_role_policies().role_name(n).into_paginator().items().send().try_collect())
                    .map_err(api_err)?;
                for name in names {
                    let p =
                        rt.block_on(iam.get_role_policy().role_name(n).policy_name(&name).send()).map_err(api_err)?;
                    st.inline_policies.push(NamedDocument { name, document: doc(p.policy_document()) });
                }
            }
            IdentityKind::Group => {
                let attached = rt
                    .block_on(
                        iam.list_attached_group_policies().group_name(n).into_paginator().items().send().try_collect(),
                    )
                    .map_err(api_err)?;
                st.managed_policies = attached.iter().filter_map(|p| p.policy_arn().map(str::to_string)).collect();
                let names = rt
                    .block_on(iam.list_group_policies().group_name(n).into_paginator().items().send().try_collect())
                    .map_err(api_err)?;
                for name in names {
                    let p =
                        rt.block_on(iam.get_group_policy().group_name(n).policy_name(&name).send()).map_err(api_err)?;
                    st.inline_policies.push(NamedDocument { name, document: doc(p.policy_document()) });
                }
            }
            _ => {
                let attached = rt
                    .block_on(
                        iam.list_attached_user_policies().user_name(n).into_paginator().items().send().try_collect(),
                    )
                    .map_err(api_err)?;
                st.managed_policies = attached.iter().filter_map(|p| p.policy_arn().map(str::to_string)).collect();
                let names = rt
                    .block_on(iam.list_user_policies().user_name(n).into_paginator().items().send().try_collect())
                    .map_err(api_err)?;
                for name in names {
                    let p =
                        rt.block_on(iam.get_user_policy().user_name(n).policy_name(&name).send()).map_err(api_err)?;
                    st.inline_policies.push(NamedDocument { name, document: doc(p.policy_document()) });
                }
                let groups = rt
                    .block_on(iam.list_groups_for_user().user_name(n).into_paginator().items().send().try_collect())
                    .map_err(api_err)?;
                st.groups = groups.iter().map(|g| g.group_name().to_string()).collect();
                let keys = rt
                    .block_on(iam.list_access_keys().user_name(n).into_paginator().items().send().try_collect())
                    .map_err(api_err)?;
                st.access_keys = keys
                    .iter()
                    .filter_map(|k| {
                        Some(AccessKeyState {
                            access_key_id: k.access_key_id()?.to_string(),
                            status: k.status().map_or("Active", |s| s.as_str()).to_string(),
                        })
                    })
                    .collect();
            }
        }
        crate::state::normalize(&mut st);
        Ok(st)
    }

    fn policy(&mut self, policy_arn: &str) -> Result<Option<PolicyState>, ApiError> {
        let (iam, rt) = (&self.iam, &self.runtime);
        let p = match rt.block_on(iam.get_policy().policy_arn(policy_arn).send()).map_err(api_err) {
            Ok(p) => p,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(default_version_id) = p.policy().and_then(|p| p.default_version_id()).map(str::to_string) else {
            return Err(ApiError::service("InvalidPolicy", format!("{policy_arn} has no default version")));
        };
        let v = rt
            .block_on(iam.get_policy_version().policy_arn(policy_arn).version_id(&default_version_id).send())
            .map_err(api_err)?;
        let document = v.policy_version().and_then(|v| v.document()).map(doc).unwrap_or(Value::Null);
        let versions = rt
            .block_on(iam.list_policy_versions().policy_arn(policy_arn).into_paginator().items().send().try_collect())
            .map_err(api_err)?
            .iter()
            .filter_map(|v| Some((v.version_id()?.to_string(), v.is_default_version())))
            .collect();
        Ok(Some(PolicyState { default_version_id, document, versions }))
    }

    fn policy_entities(&mut self, policy_arn: &str) -> Result<Vec<Subject>, ApiError> {
        let account = self.account()?;
        let partition = policy_arn.split(':').nth(1).unwrap_or("aws").to_string();
        let pages = self
            .runtime
            .block_on(self.iam.list_entities_for_policy().policy_arn(policy_arn).into_paginator().send().try_collect())
            .map_err(api_err)?;
        let mut out = Vec::new();
        let arn = |kind: &str, name: &str| format!("arn:{partition}:iam::{account}:{kind}/{name}");
        for page in pages {
            for u in page.policy_users().iter().filter_map(|u| u.user_name()) {
                out.push(Subject { kind: IdentityKind::User, name: u.to_string(), arn: arn("user", u) });
            }
            for r in page.policy_roles().iter().filter_map(|r| r.role_name()) {
                out.push(Subject { kind: IdentityKind::Role, name: r.to_string(), arn: arn("role", r) });
            }
            for g in page.policy_groups().iter().filter_map(|g| g.group_name()) {
                out.push(Subject { kind: IdentityKind::Group, name: g.to_string(), arn: arn("group", g) });
            }
        }
        Ok(out)
    }

    fn permission_set(&mut self, name: &str) -> Result<PermissionSetState, ApiError> {
        let (instance, ps) = self.find_permission_set(name)?;
        let (sso, rt) = (&self.sso, &self.runtime);
        let inline = rt
            .block_on(sso.get_inline_policy_for_permission_set().instance_arn(&instance).permission_set_arn(&ps).send())
            .map_err(api_err)?;
        let inline_policy = inline.inline_policy().filter(|s| !s.trim().is_empty()).map(doc);
        let managed = rt
            .block_on(
                sso.list_managed_policies_in_permission_set()
                    .instance_arn(&instance)
                    .permission_set_arn(&ps)
                    .into_paginator()
                    .items()
                    .send()
                    .try_collect(),
            )
            .map_err(api_err)?;
        let mut managed_policies: Vec<String> = managed.iter().filter_map(|m| m.arn().map(str::to_string)).collect();
        managed_policies.sort();
        Ok(PermissionSetState { instance_arn: instance, permission_set_arn: ps, inline_policy, managed_policies })
    }

    fn call(&mut self, call: &IamCall) -> Result<CallOutput, ApiError> {
        let (iam, rt) = (&self.iam, &self.runtime);
        let ok = |ids: Vec<String>| Ok(CallOutput { request_ids: ids, version_id: None });
        match call {
            IamCall::CreatePolicy { policy_name, path, description, document, .. } => {
                let out = rt
                    .block_on(
                        iam.create_policy()
                            .policy_name(policy_name)
                            .path(path)
                            .description(description)
                            .policy_document(document.to_string())
                            .send(),
                    )
                    .map_err(api_err)?;
                let version_id = out.policy().and_then(|p| p.default_version_id()).map(str::to_string);
                Ok(CallOutput { request_ids: rid(&out), version_id })
            }
            IamCall::AttachPolicy { subject, policy_arn } => {
                let n = subject.name.as_str();
                let ids = match subject.kind {
                    IdentityKind::Role => rid(&rt
                        .block_on(iam.attach_role_policy().role_name(n).policy_arn(policy_arn).send())
                        .map_err(api_err)?),
                    IdentityKind::Group => rid(&rt
                        .block_on(iam.attach_group_policy().group_name(n).policy_arn(policy_arn).send())
                        .map_err(api_err)?),
                    _ => rid(&rt
                        .block_on(iam.attach_user_policy().user_name(n).policy_arn(policy_arn).send())
                        .map_err(api_err)?),
                };
                ok(ids)
            }
            IamCall::DetachPolicy { subject, policy_arn } => {
                let n = subject.name.as_str();
                let ids = match subject.kind {
                    IdentityKind::Role => rid(&rt
                        .block_on(iam.detach_role_policy().role_name(n).policy_arn(policy_arn).send())
                        .map_err(api_err)?),
                    IdentityKind::Group => rid(&rt
                        .block_on(iam.detach_group_policy().group_name(n).policy_arn(policy_arn).send())
                        .map_err(api_err)?),
                    _ => rid(&rt
                        .block_on(iam.detach_user_policy().user_name(n).policy_arn(policy_arn).send())
                        .map_err(api_err)?),
                };
                ok(ids)
            }
            IamCall::DeleteInlinePolicy { subject, policy_name } => {
                let n = subject.name.as_str();
                let ids = match subject.kind {
                    IdentityKind::Role => rid(&rt
                        .block_on(iam.delete_role_policy().role_name(n).policy_name(policy_name).send())
                        .map_err(api_err)?),
                    IdentityKind::Group => rid(&rt
                        .block_on(iam.delete_group_policy().group_name(n).policy_name(policy_name).send())
                        .map_err(api_err)?),
                    _ => rid(&rt
                        .block_on(iam.delete_user_policy().user_name(n).policy_name(policy_name).send())
                        .map_err(api_err)?),
                };
                ok(ids)
            }
            IamCall::PutInlinePolicy { subject, policy_name, document } => {
                let n = subject.name.as_str();
                let d = document.to_string();
                let ids = match subject.kind {
                    IdentityKind::Role => rid(&rt
                        .block_on(iam.put_role_policy().role_name(n).policy_name(policy_name).policy_document(d).send())
                        .map_err(api_err)?),
                    IdentityKind::Group => rid(&rt
                        .block_on(
                            iam.put_group_policy().group_name(n).policy_name(policy_name).policy_document(d).send(),
                        )
                        .map_err(api_err)?),
                    _ => rid(&rt
                        .block_on(iam.put_user_policy().user_name(n).policy_name(policy_name).policy_document(d).send())
                        .map_err(api_err)?),
                };
                ok(ids)
            }
            IamCall::RemoveUserFromGroup { subject, group } => ok(rid(&rt
                .block_on(iam.remove_user_from_group().user_name(&subject.name).group_name(group).send())
                .map_err(api_err)?)),
            IamCall::AddUserToGroup { subject, group } => ok(rid(&rt
                .block_on(iam.add_user_to_group().user_name(&subject.name).group_name(group).send())
                .map_err(api_err)?)),
            IamCall::UpdateAccessKey { subject, access_key_id, status } => ok(rid(&rt
                .block_on(
                    iam.update_access_key()
                        .user_name(&subject.name)
                        .access_key_id(access_key_id)
                        .status(aws_sdk_iam::types::StatusType::from(status.as_str()))
                        .send(),
                )
                .map_err(api_err)?)),
            IamCall::DeletePolicyVersion { policy_arn, version_id } => ok(rid(&rt
                .block_on(iam.delete_policy_version().policy_arn(policy_arn).version_id(version_id).send())
                .map_err(api_err)?)),
            IamCall::DeletePolicy { policy_arn } => {
                ok(rid(&rt.block_on(iam.delete_policy().policy_arn(policy_arn).send()).map_err(api_err)?))
            }
            IamCall::UpdatePermissionSet { permission_set_name, inline_policy, detach_managed, attach_managed } => {
                let name = permission_set_name.clone();
                let inline = inline_policy.clone();
                self.update_permission_set(&name, inline.as_ref(), detach_managed, attach_managed)
            }
        }
    }
}
