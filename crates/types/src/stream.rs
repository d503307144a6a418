//! Records the services exchange over Kafka that are not events: entitlements, PCI updates, dead
//! letters, and OCSF Detection Findings (alerts and Discover findings).

use serde::{Deserialize, Serialize};

use crate::{Cloud, EventTime, IdentityKind, Pci, StatusFlag};

/// One identity's effective permissions, as `grantwatch-ingest` publishes them to the compacted
/// entitlements topic (key: the identity's ARN). Action names are spelled as the catalog spells them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntitlementRecord {
    pub arn: String,
    /// Absent in records of versions that knew only AWS.
    #[serde(default, skip_serializing_if = "crate::is_aws")]
    pub cloud: crate::Cloud,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub human: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emails: Vec<String>,
    pub account: String,
    pub kind: IdentityKind,
    pub name: String,
    pub granted: Vec<String>,
    /// Subset of `granted` granted only under a condition.
    pub conditional: Vec<String>,
    /// Subset of `granted` granted on every resource.
    pub unscoped: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_keys: Vec<AccessKeyRecord>,
    /// From when these entitlements hold: the time the snapshot was published. The processor applies
    /// them to the windows that close at or after it; the first snapshot of a partition (the records
    /// before its first [`WatermarkMark`]) stands for all earlier time. Absent: from the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_of: Option<EventTime>,
    /// Actions not granted but reachable through the escalation graph, in the compact form
    /// (`prefix:*`, `*`; see `ActionsForm::Compact`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reachable: Vec<String>,
    /// How the identity is, or can become, an administrator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation: Option<crate::Escalation>,
}

/// The key of a [`WatermarkMark`] record. No identity ARN can equal it (an ARN starts with `arn:`).
pub const WATERMARK_KEY: &str = "grantwatch:watermark";

/// A progress mark, written to every partition of a topic whose records carry a time (entitlements,
/// PCI updates) under the key [`WATERMARK_KEY`]: every record of this partition with a time at or
/// before `watermark` precedes this mark. A consumer that joins the topic's records as of an event's
/// time waits for a mark at or past that time, so what it joins depends on the data, never on when
/// the records arrived. Subscribers that only want the records skip this key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatermarkMark {
    pub watermark: EventTime,
}

/// An access key of a user, without its secret (grantwatch never sees secrets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessKeyRecord {
    pub access_key_id: String,
    pub active: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<EventTime>,
}

/// An identity's PCI and usage summary as of the end of an event-time window (topic `grantwatch.pci`,
/// key: the identity's ARN; the latest record per key is the current value).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PciUpdate {
    pub arn: String,
    pub account: String,
    pub kind: IdentityKind,
    /// The end of the window this update closes; the lookback ends here.
    pub as_of: EventTime,
    pub lookback_days: u32,
    pub pci: Pci,
    pub granted: usize,
    pub used: usize,
    pub unused_high_risk: usize,
    pub status: Vec<StatusFlag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity: Option<EventTime>,
    pub events_in_lookback: u64,
    /// Whether an entitlements record for this identity has been seen (otherwise nothing is known to
    /// be granted and the PCI is 0).
    pub entitlements_known: bool,
}

/// Where a dead letter came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DeadLetterSource {
    Kafka { topic: String, partition: i32, offset: i64 },
    File { path: String, record: u64 },
    LookupEvents { region: String, event_id: String },
    Stdin { line: u64 },
}

/// A record that could not be used, with why (topic `grantwatch.dlq`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub service: String,
    pub source: DeadLetterSource,
    pub error: String,
    /// The record as received (lossy UTF-8, cut to a bounded size).
    pub payload: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub payload_truncated: bool,
}

impl DeadLetter {
    /// Largest payload copied into a dead letter.
    pub const MAX_PAYLOAD: usize = 64 * 1024;

    pub fn new(service: &str, source: DeadLetterSource, error: String, payload: &[u8]) -> Self {
        let cut = payload.len().min(Self::MAX_PAYLOAD);
        Self {
            service: service.to_string(),
            source,
            error,
            payload: String::from_utf8_lossy(&payload[..cut]).into_owned(),
            payload_truncated: cut < payload.len(),
        }
    }
}

/// OCSF severity (`severity_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Informational,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// One level lower (informational stays informational).
    pub fn lower(self) -> Severity {
        match self {
            Severity::Informational | Severity::Low => Severity::Informational,
            Severity::Medium => Severity::Low,
            Severity::High => Severity::Medium,
            Severity::Critical => Severity::High,
        }
    }

    pub fn id(self) -> u8 {
        match self {
            Severity::Informational => 1,
            Severity::Low => 2,
            Severity::Medium => 3,
            Severity::High => 4,
            Severity::Critical => 5,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Severity::Informational => "Informational",
            Severity::Low => "Low",
            Severity::Medium => "Medium",
            Severity::High => "High",
            Severity::Critical => "Critical",
        }
    }
}

/// What produced a finding: OCSF `analytic.type_id` 1 (Rule) or 2 (Behavioral).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AnalyticKind {
    Rule,
    Behavioral,
}

/// The parts of a finding that vary; [`DetectionFinding::new`] fills in the OCSF constants.
#[derive(Debug, Clone, PartialEq)]
pub struct FindingSpec {
    /// Stable id: the same finding computed twice gets the same uid (consumers may dedup on it).
    pub uid: String,
    pub title: String,
    pub desc: String,
    /// e.g. `grantwatch/root-account-used`.
    pub analytic_uid: String,
    pub analytic_name: String,
    pub analytic_kind: AnalyticKind,
    pub types: Vec<String>,
    pub severity: Severity,
    pub time: EventTime,
    pub cloud: Cloud,
    pub account: String,
    pub region: Option<String>,
    pub actor_uid: String,
    pub actor_name: Option<String>,
    pub actor_kind: IdentityKind,
    /// The human behind the actor ([`UserInfo::uid_alt`]).
    pub actor_human: Option<String>,
    pub related_events: Vec<RelatedEvent>,
    pub unmapped: serde_json::Map<String, serde_json::Value>,
}

/// OCSF Detection Finding (class 2004, schema 1.3.0): the form of every alert and Discover finding the
/// services publish. `schemas/detection_finding.v1.json` is its contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectionFinding {
    pub activity_id: u8,
    pub activity_name: String,
    pub category_uid: u8,
    pub category_name: String,
    pub class_uid: u16,
    pub class_name: String,
    pub type_uid: u32,
    pub type_name: String,
    /// Milliseconds since the epoch (OCSF timestamp); `time_dt` is the same instant in RFC 3339.
    pub time: i64,
    pub time_dt: EventTime,
    pub severity_id: u8,
    pub severity: String,
    pub status_id: u8,
    pub status: String,
    pub message: String,
    /// How many times the finding's analytic fired on its identity in this incident (OCSF `count`):
    /// 1 when created, the final total in the incident's Update.
    #[serde(default = "one")]
    pub count: u64,
    pub finding_info: FindingInfo,
    pub metadata: Metadata,
    pub cloud: CloudInfo,
    pub actor: ActorInfo,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub unmapped: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FindingInfo {
    pub uid: String,
    pub title: String,
    pub desc: String,
    pub types: Vec<String>,
    pub analytic: Analytic,
    pub first_seen_time: i64,
    pub last_seen_time: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub related_events: Vec<RelatedEvent>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analytic {
    pub uid: String,
    pub name: String,
    pub type_id: u8,
    #[serde(rename = "type")]
    pub type_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelatedEvent {
    pub uid: String,
    /// Milliseconds since the epoch.
    pub time: i64,
    /// `service:Operation` of the API call.
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    pub version: String,
    pub product: Product,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Product {
    pub name: String,
    pub vendor_name: String,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudInfo {
    pub provider: Cloud,
    pub account: AccountInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountInfo {
    pub uid: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActorInfo {
    pub user: UserInfo,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserInfo {
    pub uid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub kind: IdentityKind,
    /// OCSF's alternate id of the user: the person behind the identity (a `humans.jsonl` id), when
    /// known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid_alt: Option<String>,
}

fn one() -> u64 {
    1
}

/// The OCSF schema version the findings follow.
pub const OCSF_VERSION: &str = "1.3.0";

impl DetectionFinding {
    pub fn new(spec: FindingSpec) -> Self {
        let (type_id, type_name) = match spec.analytic_kind {
            AnalyticKind::Rule => (1, "Rule"),
            AnalyticKind::Behavioral => (2, "Behavioral"),
        };
        DetectionFinding {
            activity_id: 1,
            activity_name: "Create".into(),
            category_uid: 2,
            category_name: "Findings".into(),
            class_uid: 2004,
            class_name: "Detection Finding".into(),
            type_uid: 200401,
            type_name: "Detection Finding: Create".into(),
            time: spec.time.millis(),
            time_dt: spec.time,
            severity_id: spec.severity.id(),
            severity: spec.severity.name().into(),
            status_id: 1,
            status: "New".into(),
            message: spec.title.clone(),
            count: 1,
            finding_info: FindingInfo {
                uid: spec.uid,
                title: spec.title,
                desc: spec.desc,
                types: spec.types,
                analytic: Analytic {
                    uid: spec.analytic_uid,
                    name: spec.analytic_name,
                    type_id,
                    type_name: type_name.into(),
                },
                first_seen_time: spec.related_events.iter().map(|e| e.time).min().unwrap_or(spec.time.millis()),
                last_seen_time: spec.related_events.iter().map(|e| e.time).max().unwrap_or(spec.time.millis()),
                related_events: spec.related_events,
            },
            metadata: Metadata {
                version: OCSF_VERSION.into(),
                product: Product {
                    name: "grantwatch".into(),
                    vendor_name: "grantwatch".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                },
            },
            cloud: CloudInfo { provider: spec.cloud, account: AccountInfo { uid: spec.account }, region: spec.region },
            actor: ActorInfo {
                user: UserInfo {
                    uid: spec.actor_uid,
                    name: spec.actor_name,
                    kind: spec.actor_kind,
                    uid_alt: spec.actor_human,
                },
            },
            unmapped: spec.unmapped,
        }
    }
}
