//! A multi-cloud organization: the AWS organization of [`crate::generate`], an Azure tenant, a GCP
//! organization and the identity providers of one population of humans, written as the exports a user
//! can make today, with its own ground truth.
//!
//! [`generate_multicloud`] writes, under one output directory, everything [`crate::generate`] writes
//! (`iam/`, `cloudtrail/`; IAM users of a human now carry an `email` tag) and:
//!
//! ```text
//! okta/users.json                   GET /api/v1/users (array; profile.login, profile.email, lastLogin)
//! okta/groups.json                  GET /api/v1/groups (array); each group object gains "members": the
//!                                   ids of GET /api/v1/groups/{id}/users (the wrapper this generator documents)
//! okta/system-log.jsonl             System Log events (GET /api/v1/logs), one per line, time-ordered
//! workspace/users.json              Directory API users.list ({"kind", "users": [...]})
//! workspace/activities.jsonl        Admin SDK Reports activities (login, user_accounts), time-ordered
//! identity-center/users.json        aws identitystore list-users ({"Users": [...]})
//! azure/subscriptions.json          az account list
//! azure/management-groups.json      az account management-group show --name <root> --expand --recurse
//! azure/role-definitions.json       az role definition list --custom-role-only true
//! azure/role-assignments.json       az role assignment list --all, for every subscription, concatenated
//!                                   (an assignment on a management group is listed once per subscription
//!                                   under it, with the same id, as each subscription's listing shows it)
//! azure/users.json, groups.json,    Microsoft Graph list responses ({"@odata.context", "value"}); groups
//! azure/service-principals.json     with $expand=members
//! azure/activity/<sub>/y=YYYY/m=MM/d=DD/h=HH/m=00/PT1H.json
//!                                   Activity Log diagnostic-settings export: JSON Lines, UPPERCASE
//!                                   operationName and resourceId, Start + Success pairs for long-running
//!                                   operations (sharing a correlationId)
//! gcp/iam-policies.jsonl            Cloud Asset Inventory export --content-type=iam-policy
//! gcp/projects.jsonl                Cloud Asset Inventory export --content-type=resource (folders, projects)
//! gcp/service-accounts.json         gcloud iam service-accounts list --format=json (every project)
//! gcp/service-account-keys.json     gcloud iam service-accounts keys list --format=json (every account)
//! gcp/custom-roles.json             gcloud iam roles list --organization=<org> --format=json, with includedPermissions
//! gcp/audit/<project>/YYYY-MM-DD.jsonl
//!                                   Cloud Audit Log entries (a sink export), admin activity and data access
//! labels.jsonl                      the injected attacks, as scenario::Label
//! truth.json                        the AWS GroundTruth (unchanged fields) plus "multicloud": CloudsTruth
//! ```
//!
//! **Truth.** Azure and GCP identities use the uids of `docs/multi-cloud.md`. Permissions are per scope:
//! a principal is one identity per subscription or project its grants reach (directly, through an
//! Entra group, or inherited from a management group / folder / the organization). The granted set is
//! the union of the sets of the roles in its `grants`, each computed here from the embedded built-in
//! and predefined role data with this crate's own wildcard matcher: an Azure role grants the concrete
//! operations (those some built-in role names without a wildcard) its `actions` match minus its
//! `notActions`, and likewise for data actions; a GCP role its `includedPermissions`. Sets are stored
//! once per role ([`CloudsTruth::roles`]) and joined with [`CloudsTruth::granted`]: an Owner's 3,000
//! operations repeated per identity would make `truth.json` gigabytes at benchmark sizes. Azure operations
//! that a built-in role spells twice (`…/Read`, `…/read`) appear once, first spelling: compare
//! case-insensitively.
//!
//! Activity: an Activity Log records writes, deletes and POST actions, never reads, so Azure identities
//! whose roles only read (Reader) are never seen acting; that is what a real log shows. The operation
//! universe is the catalog's: every concrete operation a built-in role names, plus
//! `data/azure/extra-operations.txt` (operations only wildcards reach, e.g.
//! `Microsoft.Insights/diagnosticSettings/delete`, which an Owner's `*` grants). Now and then a VM
//! write is replaced by `Microsoft.Compute/virtualMachines/performMaintenance/action`, a real operation
//! outside that universe: usage of nothing (`unmapped_injected`), as real logs hold.
//!
//! Same spec, same bytes: the AWS part is [`crate::generate`] of [`MultiCloudSpec::aws`]; the rest draws
//! from a ChaCha8 stream of [`MultiCloudSpec::seed`] (stream 1), and the clock is never read.

mod exports;
mod ops;
mod roles;
mod stream;
mod world;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufWriter, Write};
use std::path::Path;

use grantwatch_types::{Cloud, EventTime, MS_PER_DAY};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::scenario::Label;
use crate::{GroundTruth, Layout, OrgSpec, SynthError};

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MultiCloudSpec {
    pub seed: u64,
    pub azure_subscriptions: u32,
    pub gcp_projects: u32,
    /// People in the identity providers (at least: every address an AWS IAM Identity Center role
    /// session carries is one).
    pub humans: u32,
    /// Principals with a direct role assignment or binding per subscription / project (about 45 %
    /// humans, the rest workloads); groups and inherited grants come on top.
    pub identities_per_scope: u32,
    pub days: u32,
    /// Azure Activity Log operations and GCP audit entries (a Start + Success pair counts once). Okta
    /// and Workspace sign-ins come on top, about one per 40, and the AWS part has its own count.
    pub events: u64,
    /// The first day, 00:00Z (the AWS part's too).
    pub start: EventTime,
    /// The AWS part; its `days` and `start` must equal this spec's.
    pub aws: OrgSpec,
}

impl Default for MultiCloudSpec {
    /// Small enough for `samples/` (under 3 MB as a .tar.gz): 2 subscriptions, 2 projects, 30 humans,
    /// 2 AWS accounts, about 20,000 records in all. The AWS part writes `cloudtrail/events.jsonl`:
    /// S3-layout files are gzip each on their own, thousands of them would dominate the archive.
    fn default() -> MultiCloudSpec {
        let mut s = MultiCloudSpec::new(1, 2, 2, 30, 20, 120, 12_000);
        s.aws.events = 6_000;
        s.aws.layout = Layout::JsonLines;
        s
    }
}

impl MultiCloudSpec {
    /// A spec whose AWS part has 2 accounts of `identities_per_scope` identities, the same seed, days
    /// and start, and two thirds of `events` more CloudTrail records.
    pub fn new(
        seed: u64,
        azure_subscriptions: u32,
        gcp_projects: u32,
        humans: u32,
        identities_per_scope: u32,
        days: u32,
        events: u64,
    ) -> MultiCloudSpec {
        let aws = OrgSpec::new(seed, 2, identities_per_scope.max(8), days, events * 2 / 3, Layout::S3);
        MultiCloudSpec {
            seed,
            azure_subscriptions,
            gcp_projects,
            humans,
            identities_per_scope,
            days,
            events,
            start: aws.start,
            aws,
        }
    }

    fn validate(&self) -> Result<(), SynthError> {
        let bad = |m: String| Err(SynthError::InvalidSpec(m));
        self.aws.validate()?;
        if self.aws.days != self.days || self.aws.start != self.start {
            return bad("the AWS part's days and start must equal the multi-cloud spec's".into());
        }
        // one open audit file per project and one Activity Log file per subscription-hour at a time
        if self.azure_subscriptions > 200 || self.gcp_projects > 200 {
            return bad(format!(
                "azure_subscriptions and gcp_projects must be at most 200, got {} and {}",
                self.azure_subscriptions, self.gcp_projects
            ));
        }
        if !(1..=200_000).contains(&self.humans) {
            return bad(format!("humans must be 1..=200000, got {}", self.humans));
        }
        if !(4..=50_000).contains(&self.identities_per_scope) {
            return bad(format!("identities_per_scope must be 4..=50000, got {}", self.identities_per_scope));
        }
        if u64::from(self.azure_subscriptions + self.gcp_projects) * u64::from(self.identities_per_scope) > 2_000_000 {
            return bad("(subscriptions + projects) × identities_per_scope must be at most 2,000,000".into());
        }
        if self.events > 2_000_000_000 {
            return bad(format!("events must be at most 2·10^9, got {}", self.events));
        }
        if self.start.millis().rem_euclid(MS_PER_DAY) != 0 {
            return bad(format!("start must be a day's 00:00Z, got {}", self.start));
        }
        Ok(())
    }
}

/// `truth.json` of a multi-cloud organization: the AWS [`GroundTruth`], field for field (a reader of
/// the AWS truth reads this file unchanged), plus the other clouds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MultiCloudTruth {
    #[serde(flatten)]
    pub aws: GroundTruth,
    pub multicloud: CloudsTruth,
}

/// The truth about the Azure, GCP and identity-provider part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudsTruth {
    pub spec: MultiCloudSpec,
    /// The end of all activity, every cloud (the AWS part's `as_of` when it has events).
    pub as_of: EventTime,
    pub lookback_days: u32,
    pub azure_tenant: String,
    pub gcp_organization: String,
    pub okta_org: String,
    pub workspace_customer: String,
    pub subscriptions: Vec<String>,
    pub projects: Vec<String>,
    /// Every role granted, by key (Azure: role definition GUID; GCP: role name).
    pub roles: BTreeMap<String, TruthRole>,
    pub identities: Vec<CloudIdentity>,
    pub humans: Vec<TruthHuman>,
    pub labels: Vec<Label>,
    /// Azure operations logged (a Start + Success pair is one) and records written.
    pub azure_operations: u64,
    pub azure_records: u64,
    pub gcp_records: u64,
    pub okta_events: u64,
    pub workspace_events: u64,
    /// Azure operations outside the catalog (each counted once, whether logged as Start + Success or not).
    pub unmapped_injected: u64,
    /// Failed operations (`Failure` / a non-OK status): still usage of their operation.
    pub failures: u64,
    /// Azure records after the Activity Log's diagnostic setting was deleted are not exported: the
    /// operations dropped for that reason.
    pub dropped_after_diagnostic_delete: u64,
    pub files_written: u64,
    pub bytes_written: u64,
}

/// A role's effective concrete set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TruthRole {
    pub cloud: Cloud,
    pub name: String,
    pub custom: bool,
    /// Azure control-plane operations / GCP permissions, sorted.
    pub operations: Vec<String>,
    /// Azure data actions, sorted.
    pub data_operations: Vec<String>,
}

/// One role reaching an identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TruthGrant {
    /// Key into [`CloudsTruth::roles`].
    pub role: String,
    pub role_name: String,
    /// Where the role is assigned / bound (ARM scope, or `organizations/…`, `folders/…`,
    /// `projects/{id}`, `projects/_/buckets/{name}`).
    pub scope: String,
    /// Assigned above the subscription / project (management group, folder, organization).
    pub inherited: bool,
    /// Assigned below it (resource group, resource, bucket): the operations hold only there.
    pub scoped: bool,
    /// The Entra group the grant reaches the user through.
    pub via_group: Option<String>,
}

/// The truth about one Azure or GCP identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudIdentity {
    pub uid: String,
    pub cloud: Cloud,
    /// Subscription id / project id.
    pub account: String,
    /// `user`, `group` or `service_account`.
    pub kind: String,
    /// UPN, display name or email.
    pub name: String,
    /// Azure object id / GCP member.
    pub principal_id: String,
    /// `human`, `group`, or the workload's archetype (`ci_deploy`, `app_identity`, ...).
    pub archetype: String,
    /// The human's canonical (lowercase) address.
    pub human: Option<String>,
    pub grants: Vec<TruthGrant>,
    /// Size of the granted set (control-plane and data operations).
    pub granted_count: usize,
    /// Distinct operations / permissions exercised in the lookback before `as_of`, sorted.
    pub used: Vec<String>,
    pub used_ever: Vec<String>,
    pub unused_count: usize,
    pub last_activity: Option<EventTime>,
    /// No record in the lookback. Always `false` for groups (groups never act).
    pub inactive: bool,
    /// Azure: Owner at the subscription or above; GCP: roles/owner at the project or above.
    pub super_identity: bool,
    pub events: u64,
    pub events_in_lookback: u64,
    pub active_days: u32,
}

/// One person and every identity linked to them by the documented rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TruthHuman {
    /// Canonical, lowercase.
    pub email: String,
    /// Other spellings some systems use (differ only in case).
    pub other_spellings: Vec<String>,
    /// uids of the human's identities: Azure and GCP identities, AWS IAM users tagged `email`, the
    /// Okta user (`okta:{org}/users/{id}`) and the Workspace user (`workspace:{customer}/users/{id}`).
    pub identities: Vec<String>,
    /// IAM Identity Center roles whose sessions carry the human's address (shared with other humans).
    pub aws_sso_roles: Vec<String>,
    pub identity_center_user_id: Option<String>,
}

impl CloudsTruth {
    /// The exact granted set of `ident` (operations and data operations), the union of its roles'.
    pub fn granted(&self, ident: &CloudIdentity) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for g in &ident.grants {
            if let Some(r) = self.roles.get(&g.role) {
                out.extend(r.operations.iter().cloned());
                out.extend(r.data_operations.iter().cloned());
            }
        }
        out
    }

    /// Granted and not used in the lookback.
    pub fn unused(&self, ident: &CloudIdentity) -> BTreeSet<String> {
        let mut g = self.granted(ident);
        for u in &ident.used {
            g.remove(u);
        }
        g
    }

    pub fn identity(&self, uid: &str) -> Option<&CloudIdentity> {
        self.identities.iter().find(|i| i.uid == uid)
    }
}

impl MultiCloudTruth {
    /// Reads `truth.json`.
    pub fn load(path: &Path) -> Result<MultiCloudTruth, SynthError> {
        let s = fs::read_to_string(path).map_err(|e| SynthError::io(path, e))?;
        Ok(serde_json::from_str(&s)?)
    }
}

/// Generates the multi-cloud organization `spec` describes under `out_dir` (created if missing):
/// first the AWS part with [`crate::generate`], then Azure, GCP and the identity providers; returns
/// (and writes to `truth.json`, replacing the AWS-only one) the combined truth.
pub fn generate_multicloud(spec: &MultiCloudSpec, out_dir: &Path) -> Result<MultiCloudTruth, SynthError> {
    spec.validate()?;
    fs::create_dir_all(out_dir).map_err(|e| SynthError::io(out_dir, e))?;
    let aws_truth = crate::generate(&spec.aws, out_dir)?;
    // The AWS organization again, without its events: the generator builds it first from its seed,
    // so the same calls give the same identities (users named after people, SSO session addresses).
    let aws_org = {
        let mut rng = ChaCha8Rng::seed_from_u64(spec.aws.seed);
        crate::org::build(&spec.aws, &mut rng, spec.aws.regions.len())
    };
    let az_ref = roles::AzureRoles::load()?;
    let gcp_ref = roles::GcpRoles::load()?;
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    rng.set_stream(1);
    let mut world = world::World::build(spec, &mut rng, &aws_org, &az_ref, &gcp_ref)?;
    exports::tag_aws_users(&world, &aws_org, &spec.aws, out_dir)?;

    let start = spec.start.millis().div_euclid(1000);
    let as_of = if aws_truth.events > 0 {
        aws_truth.as_of.millis().div_euclid(1000)
    } else {
        start + i64::from(spec.days) * 86_400 - 1
    };
    let clouds = stream::run(spec, &mut world, &az_ref, &gcp_ref, &mut rng, out_dir, start, as_of)?;
    let truth = MultiCloudTruth { aws: aws_truth, multicloud: clouds };
    write_json(&out_dir.join("truth.json"), &truth)?;
    Ok(truth)
}

pub(crate) fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<u64, SynthError> {
    if let Some(d) = path.parent() {
        fs::create_dir_all(d).map_err(|e| SynthError::io(d, e))?;
    }
    let bytes = serde_json::to_vec_pretty(v)?;
    let f = fs::File::create(path).map_err(|e| SynthError::io(path, e))?;
    let mut w = BufWriter::new(f);
    w.write_all(&bytes)
        .and_then(|()| w.write_all(b"\n"))
        .and_then(|()| w.flush())
        .map_err(|e| SynthError::io(path, e))?;
    Ok(bytes.len() as u64 + 1)
}
