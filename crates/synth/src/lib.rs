//! `grantwatch-synth`: a seeded generator of synthetic AWS organizations that knows its own ground truth.
//!
//! [`generate`] writes, under an output directory:
//!
//! * `iam/<account>.json` — `aws iam get-account-authorization-details` output (users, groups, roles,
//!   customer managed policies with all versions; documents percent-encoded like the real CLI when
//!   [`OrgSpec::url_encode_policies`]). AWS managed policies (`AdministratorAccess`, `ReadOnlyAccess`,
//!   `SecurityAudit`) are attached by ARN and not included.
//! * `iam/access-keys-<account>.json` — `aws iam list-access-keys` shape plus `"Account"`.
//! * CloudTrail: [`Layout::S3`] writes an organization trail's S3 layout
//!   (`cloudtrail/AWSLogs/<account>/CloudTrail/<region>/YYYY/MM/DD/<account>_CloudTrail_<region>_YYYYMMDDTHHMMZ_<rand16>.json.gz`,
//!   one gzip `{"Records":[...]}` file per account, region and [`OrgSpec::file_minutes`] slot with events);
//!   [`Layout::JsonLines`] writes one uncompressed `cloudtrail/events.jsonl` (about 1.2 KB per record:
//!   10M events is roughly 12 GB).
//! * `truth.json` — the [`GroundTruth`]: per identity, the exact granted set (when policies name actions
//!   explicitly), the actions used in the [`LOOKBACK_DAYS`] before `as_of` (the last event's time),
//!   last activity, inactivity and super-identity flags; and counts of the injected oddities
//!   (duplicate deliveries, unmapped event names, `ConsoleLogin`s, root and AWS-service events).
//!
//! Generation streams: events are produced slot by slot in time order and written at once; only
//! per-identity truth tallies stay in memory. Same spec, same bytes: all randomness comes from one
//! ChaCha8 stream seeded by [`OrgSpec::seed`], and every ordered output iterates vectors or B-trees.
//!
//! Only API calls whose CloudTrail `eventName` is exactly the IAM action name are emitted
//! (see [`actions::CALLS`]), so the truth does not depend on an event-name mapping table.
//!
//! [`generate_multicloud`] adds, to the same output directory, an Azure tenant, a GCP organization and
//! the identity providers (Okta, Google Workspace, IAM Identity Center) of one population of humans:
//! see [`multicloud`].

pub mod actions;
pub mod multicloud;
mod org;
pub mod scenario;
mod trail;
mod util;

use std::path::{Path, PathBuf};

pub use multicloud::{CloudsTruth, MultiCloudSpec, MultiCloudTruth, generate_multicloud};

use grantwatch_types::{EventTime, MS_PER_DAY};
use serde::{Deserialize, Serialize};

/// The lookback window of the truth's `used_actions`, in days before `as_of`.
pub const LOOKBACK_DAYS: u32 = 90;

/// How CloudTrail records are laid out on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Layout {
    /// An organization trail's S3 bucket layout, gzip JSON files.
    S3,
    /// One uncompressed JSON Lines file, one record per line.
    JsonLines,
}

impl std::str::FromStr for Layout {
    type Err = SynthError;
    fn from_str(s: &str) -> Result<Layout, SynthError> {
        match s.to_ascii_lowercase().as_str() {
            "s3" => Ok(Layout::S3),
            "jsonl" | "jsonlines" | "json-lines" => Ok(Layout::JsonLines),
            _ => Err(SynthError::InvalidSpec(format!("unknown layout {s:?} (expected s3 or jsonl)"))),
        }
    }
}

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgSpec {
    pub seed: u64,
    pub accounts: u32,
    /// Users and roles per account (three groups per account come on top).
    pub identities_per_account: u32,
    pub days: u32,
    /// Records to generate, duplicates excluded (injected duplicates come on top).
    pub events: u64,
    /// The first day, 00:00Z.
    pub start: EventTime,
    pub layout: Layout,
    pub regions: Vec<String>,
    /// Width of an S3 delivery slot: one file per account, region and slot.
    pub file_minutes: u32,
    /// Percent-encode policy documents, as the real CLI output does.
    pub url_encode_policies: bool,
}

impl Default for OrgSpec {
    fn default() -> OrgSpec {
        OrgSpec {
            seed: 1,
            accounts: 3,
            identities_per_account: 20,
            days: 120,
            events: 20_000,
            // 2024-01-01T00:00:00Z
            start: EventTime(1_704_067_200_000),
            layout: Layout::S3,
            regions: vec!["us-east-1".into(), "eu-west-1".into(), "us-west-2".into()],
            file_minutes: 5,
            url_encode_policies: true,
        }
    }
}

impl OrgSpec {
    /// The spec behind `grantwatch generate --seed --accounts --identities --days --events --layout`.
    pub fn new(
        seed: u64,
        accounts: u32,
        identities_per_account: u32,
        days: u32,
        events: u64,
        layout: Layout,
    ) -> OrgSpec {
        OrgSpec { seed, accounts, identities_per_account, days, events, layout, ..OrgSpec::default() }
    }

    fn validate(&self) -> Result<(), SynthError> {
        let bad = |m: String| Err(SynthError::InvalidSpec(m));
        if !(1..=100_000).contains(&self.accounts) {
            return bad(format!("accounts must be 1..=100000, got {}", self.accounts));
        }
        if !(1..=1_000_000).contains(&self.identities_per_account) {
            return bad(format!("identities_per_account must be 1..=1000000, got {}", self.identities_per_account));
        }
        if u64::from(self.accounts) * u64::from(self.identities_per_account) > 2_000_000 {
            return bad("accounts × identities_per_account must be at most 2,000,000".into());
        }
        if !(1..=3660).contains(&self.days) {
            return bad(format!("days must be 1..=3660, got {}", self.days));
        }
        if self.file_minutes == 0 || self.file_minutes > 1440 || 1440 % self.file_minutes != 0 {
            return bad(format!("file_minutes must divide 1440, got {}", self.file_minutes));
        }
        if self.start.millis().rem_euclid(MS_PER_DAY) != 0 {
            return bad(format!("start must be a day's 00:00Z, got {}", self.start));
        }
        // 2000-01-01 ..= 2200-01-01
        if !(946_684_800_000..=7_258_118_400_000).contains(&self.start.millis()) {
            return bad(format!("start must be between 2000 and 2200, got {}", self.start));
        }
        if self.events > 10_000_000_000 {
            return bad(format!("events must be at most 10^10, got {}", self.events));
        }
        if self.regions.is_empty() || self.regions.len() > 64 {
            return bad("regions must list 1..=64 regions".into());
        }
        for r in &self.regions {
            let ok = !r.is_empty()
                && r.len() <= 32
                && r.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ok {
                return bad(format!("not a region name: {r:?}"));
            }
        }
        let mut sorted = self.regions.clone();
        sorted.sort();
        sorted.dedup();
        if sorted.len() != self.regions.len() {
            return bad("regions must not repeat".into());
        }
        Ok(())
    }
}

/// Why generation failed.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl SynthError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> SynthError {
        SynthError::Io { path: path.to_path_buf(), source }
    }
}

/// What the generated data contains, by construction. Also written to `truth.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroundTruth {
    pub spec: OrgSpec,
    /// The last event's time (the spec's start when no events were generated).
    pub as_of: EventTime,
    pub lookback_days: u32,
    /// The first event's time, if any.
    pub first_event: Option<EventTime>,
    pub accounts: Vec<String>,
    pub identities: Vec<TruthIdentity>,
    /// Distinct records written (every record except the injected re-deliveries).
    pub events: u64,
    /// Records written in total: `events + duplicates_injected`.
    pub records_written: u64,
    /// Re-delivered records (same `eventID`, in another file / later line).
    pub duplicates_injected: u64,
    /// Records with an `eventName` that maps to no IAM action (made-up internal names on real sources).
    pub unmapped_injected: u64,
    /// `signin.amazonaws.com` `ConsoleLogin` records (need no permission).
    pub no_permission_injected: u64,
    /// Records by the accounts' root users (not attributed to any identity below).
    pub root_events: u64,
    /// `userIdentity.type = AWSService` records (not attributed to any identity below).
    pub service_events: u64,
    /// Records with an `errorCode` (they still count as usage of their action).
    pub failures: u64,
    /// Records mapped to an IAM action and attributed to an identity (failures included).
    pub action_events: u64,
    /// CloudTrail files written (S3 layout) or 1 (JSON Lines).
    pub files_written: u64,
    /// Uncompressed bytes of all records written.
    pub bytes_uncompressed: u64,
}

/// The truth about one user, role or group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TruthIdentity {
    pub arn: String,
    pub account: String,
    /// `user`, `role` or `group`.
    pub kind: String,
    pub name: String,
    /// The generator's archetype (`admin`, `developer`, `ci_deploy`, ...).
    pub archetype: String,
    /// The exact granted set when all policies name actions explicitly; `None` when wildcards or AWS
    /// managed policies make it catalog-dependent. Users include their groups' policies.
    pub granted_actions: Option<Vec<String>>,
    /// Distinct IAM actions exercised (successfully or not) in the lookback before `as_of`, sorted.
    /// Excludes `ConsoleLogin`, unmapped and duplicate records.
    pub used_actions: Vec<String>,
    /// Distinct IAM actions exercised at any time, sorted.
    pub used_actions_ever: Vec<String>,
    /// Latest record attributed to the identity (any kind, incl. `ConsoleLogin` and unmapped).
    pub last_activity: Option<EventTime>,
    /// No record in the lookback. Always `false` for groups (groups never act).
    pub inactive: bool,
    /// `*`, `AdministratorAccess`, or explicit IAM policy-writing actions (`iam:PutRolePolicy`, ...).
    pub super_identity: bool,
    /// Records attributed to the identity (duplicates excluded), ever.
    pub events: u64,
    pub events_in_lookback: u64,
    /// Distinct UTC days with a record in the lookback.
    pub active_days: u32,
    /// Role session names seen in the lookback, sorted (for SSO roles: the humans' emails).
    pub session_names: Vec<String>,
    /// The user's access keys.
    pub access_keys: Vec<TruthAccessKey>,
}

/// An access key of a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TruthAccessKey {
    pub access_key_id: String,
    pub active: bool,
    pub created: EventTime,
    pub last_used: Option<EventTime>,
}

/// Generates the organization described by `spec` under `out_dir` (created if missing) and returns
/// (and writes to `truth.json`) its ground truth.
pub fn generate(spec: &OrgSpec, out_dir: &Path) -> Result<GroundTruth, SynthError> {
    spec.validate()?;
    trail::run(spec, out_dir)
}
