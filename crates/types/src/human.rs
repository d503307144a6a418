//! One human across clouds: a line of `humans.jsonl`. JSON Schema: `schemas/humans.v1.json`.
//!
//! A human is a person behind identities in several clouds (an IAM user, an Identity Center
//! assignment's role, an Azure user in two subscriptions, a GCP `user:` member), known to one or more
//! directories (Okta, Google Workspace, IAM Identity Center). `grantwatch_core::humans` decides the
//! links; this is what it reports.

use serde::{Deserialize, Serialize};

use crate::{Cloud, EventTime, IdentityKind, Pci};

/// Everything grantwatch knows about one human.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HumanFinding {
    /// The canonical, lower-cased primary email, or the mapping file's id.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// The cloud identities linked to this human, sorted by uid.
    pub identities: Vec<HumanIdentity>,
    /// The directory accounts of this human (one per directory that knows them).
    pub directories: Vec<DirectoryAccount>,
    /// Sum of the identities' granted action counts (an action granted in two accounts counts twice:
    /// it is two grants).
    pub granted_total: usize,
    /// Sum of the identities' used action counts.
    pub used_total: usize,
    /// The PCI formula over the union of the identities' granted and unused risk.
    pub pci: Pci,
    pub flags: Vec<HumanFlag>,
    pub recommendations: Vec<String>,
}

/// One cloud identity of a human, with its numbers from `identities.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HumanIdentity {
    pub uid: String,
    pub cloud: Cloud,
    pub account: String,
    pub kind: IdentityKind,
    /// The identity's own PCI score.
    pub pci: u8,
    pub granted: usize,
    pub used: usize,
    pub unused_high_risk: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity: Option<EventTime>,
    /// Why the identity is this human's.
    pub linked_by: LinkBy,
    /// The identity is shared with other humans (an Identity Center permission set's role assigned to
    /// several people). Its usage is the identity's, not this human's alone: when the human's session
    /// name was never seen on it, all of it counts as unused for them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shared: bool,
}

/// The rule that linked an identity to a human, strongest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkBy {
    /// The mapping file names it.
    Mapping,
    /// An IAM Identity Center account assignment materializes as this role.
    IdentityCenter,
    /// The identity is the directory account itself (an Okta or Workspace user acting in its logs).
    Directory,
    /// One email address, case-insensitive, aliases included.
    Email,
}

/// A directory that knows people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DirectorySource {
    Okta,
    Workspace,
    IdentityCenter,
}

/// A human's account in one directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryAccount {
    pub source: DirectorySource,
    /// The directory account's uid: `okta:{org}/users/{id}`, `workspace:{customerId}/users/{id}`,
    /// `identitycenter:{identityStoreId}/users/{userId}`.
    pub id: String,
    /// Okta `profile.login`, Workspace `primaryEmail`, Identity Center `UserName`.
    pub login: String,
    /// As the directory spells it: Okta `ACTIVE`, `SUSPENDED`, `DEPROVISIONED`, ...; Workspace
    /// `active`, `suspended`, `archived`. Absent when the export says nothing (Identity Center).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The directory considers the account disabled (Okta `SUSPENDED`/`DEPROVISIONED`, Workspace
    /// suspended or archived).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    /// Whether a second factor is enrolled (Okta: an active factor, when factors were exported;
    /// Workspace: `isEnrolledIn2Sv`). Absent when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_login: Option<EventTime>,
}

/// What stands out about a human.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HumanFlag {
    /// Every linked identity is inactive in the lookback.
    InactiveEverywhere,
    /// An enabled directory account has no second factor enrolled.
    MfaDisabled,
    /// A linked identity is a super identity.
    SuperSomewhere,
    /// Every directory account is disabled, yet identities still hold grants (a leaver's access).
    DisabledInDirectoryWithAccess,
}
