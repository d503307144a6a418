//! grantwatch's shared data types: what flows between stages and what lands in reports and topics.
//!
//! Plain data with serde derives and no behaviour beyond small conversions. The JSON Schemas in
//! `schemas/` describe these types' serialized form and are the contract with subscribers; a test in
//! `grantwatch-core` validates serialized fixtures against them.

mod access;
mod event;
mod human;
mod remediation;
mod report;
mod stream;
mod time_ms;

pub use access::*;
pub use event::*;
pub use human::*;
pub use remediation::*;
pub use report::*;
pub use stream::*;
pub use time_ms::*;

/// Which cloud an identity or event belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum Cloud {
    #[serde(rename = "AWS")]
    Aws,
    #[serde(rename = "Azure")]
    Azure,
    #[serde(rename = "GCP")]
    Gcp,
    /// Okta, as an identity provider: its directory and System Log.
    #[serde(rename = "Okta")]
    Okta,
    /// Google Workspace (or Cloud Identity), as an identity provider: its directory and Reports.
    #[serde(rename = "GoogleWorkspace")]
    GoogleWorkspace,
}

impl Cloud {
    pub const ALL: [Cloud; 5] = [Cloud::Aws, Cloud::Azure, Cloud::Gcp, Cloud::Okta, Cloud::GoogleWorkspace];

    /// The name OCSF's `cloud.provider` carries, and grantwatch's serialized form.
    pub fn as_str(self) -> &'static str {
        match self {
            Cloud::Aws => "AWS",
            Cloud::Azure => "Azure",
            Cloud::Gcp => "GCP",
            Cloud::Okta => "Okta",
            Cloud::GoogleWorkspace => "GoogleWorkspace",
        }
    }

    /// The cloud of an identity uid (`docs/multi-cloud.md`): `azure:`, `gcp:`, `okta:`, `workspace:`;
    /// anything else (an ARN) is AWS.
    pub fn of_uid(uid: &str) -> Cloud {
        let Some((scheme, _)) = uid.split_once(':') else { return Cloud::Aws };
        match scheme {
            "azure" => Cloud::Azure,
            "gcp" => Cloud::Gcp,
            "okta" => Cloud::Okta,
            "workspace" => Cloud::GoogleWorkspace,
            _ => Cloud::Aws,
        }
    }

    /// Dense index, `0..Cloud::ALL.len()`.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// For `skip_serializing_if`: AWS is the default cloud, left out of records that always had it implied.
pub fn is_aws(cloud: &Cloud) -> bool {
    *cloud == Cloud::Aws
}

/// Records written before grantwatch knew other clouds carry no `cloud`: they are AWS.
impl Default for Cloud {
    fn default() -> Cloud {
        Cloud::Aws
    }
}

/// The kind of an identity, as grantwatch reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityKind {
    /// The account's root user.
    Root,
    User,
    Role,
    Group,
    /// An AWS service acting on its own behalf (`userIdentity.type = AWSService`).
    Service,
    /// A principal of another account, or one grantwatch cannot resolve to an IAM identity.
    External,
    /// A workload identity: an Azure service principal or managed identity, a GCP service account.
    ServiceAccount,
}

impl IdentityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityKind::Root => "root",
            IdentityKind::User => "user",
            IdentityKind::Role => "role",
            IdentityKind::Group => "group",
            IdentityKind::Service => "service",
            IdentityKind::External => "external",
            IdentityKind::ServiceAccount => "service_account",
        }
    }
}
