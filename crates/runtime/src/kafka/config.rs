//! Service configuration: built-in defaults, then a TOML file, then `GRANTWATCH_*` environment
//! variables (`__` separates sections: `GRANTWATCH_KAFKA__BOOTSTRAP_SERVERS=host:9092`), validated
//! once at start with errors that name the offending key.
//!
//! librdkafka properties come from `[kafka.properties]` (numbers and booleans are taken as their
//! text; nested tables join their keys with `.`, so TOML's `sasl.password = "x"` means the property
//! `sasl.password`) and from `GRANTWATCH_KAFKA__PROPERTIES__<NAME>` variables, whose values are taken
//! verbatim (a password `0012345` stays `0012345`) and whose names map `_` to `.`
//! (`..._SASL_PASSWORD` is `sasl.password`).
//!
//! Secrets never reach a log line or an error message: [`KafkaConfig`]'s `Debug` redacts
//! secret-looking properties, and configuration errors about a secret-looking key, or quoting a
//! TOML line that holds one, leave the value out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::error::{Actual, Kind};
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// The whole configuration file; each service reads the sections it needs.
#[derive(Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub topics: Topics,
    pub ingest: IngestConfig,
    pub processor: ProcessorSection,
    pub detector: DetectorSection,
}

/// How to reach the broker.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    pub bootstrap_servers: String,
    /// Extra librdkafka properties (`security.protocol`, `sasl.username`, ...), passed through as is.
    #[serde(deserialize_with = "properties::deserialize")]
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self { bootstrap_servers: "127.0.0.1:9092".into(), properties: BTreeMap::new() }
    }
}

/// Property names whose values are secrets: never printed.
pub(crate) fn is_secret(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["password", "secret", "token", "key", "credential"].iter().any(|s| n.contains(s)) && !n.ends_with(".location")
}

mod properties {
    use std::collections::BTreeMap;
    use std::fmt;

    use serde::Deserializer;
    use serde::de::{DeserializeSeed, MapAccess, Visitor};

    /// `[kafka.properties]`: a table of scalars, nested tables flattened with `.`.
    ///
    /// Accepting numbers and booleans (as their text) is what keeps a numeric `sasl.password` out
    /// of type errors, which would quote it.
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
        let mut out = BTreeMap::new();
        d.deserialize_map(Table { prefix: None, out: &mut out })?;
        Ok(out)
    }

    struct Table<'a> {
        prefix: Option<String>,
        out: &'a mut BTreeMap<String, String>,
    }

    impl<'de> Visitor<'de> for Table<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a table of librdkafka properties")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let out = self.out;
            while let Some(key) = map.next_key::<String>()? {
                let name = match &self.prefix {
                    Some(p) => format!("{p}.{key}"),
                    None => key,
                };
                map.next_value_seed(Property { name, out: &mut *out })?;
            }
            Ok(())
        }
    }

    struct Property<'a> {
        name: String,
        out: &'a mut BTreeMap<String, String>,
    }

    impl Property<'_> {
        fn set<E>(self, value: String) -> Result<(), E> {
            self.out.insert(self.name, value);
            Ok(())
        }
    }

    impl<'de> DeserializeSeed<'de> for Property<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Property<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string, number or boolean (or a table of them)")
        }
        fn visit_str<E>(self, v: &str) -> Result<(), E> {
            self.set(v.to_string())
        }
        fn visit_string<E>(self, v: String) -> Result<(), E> {
            self.set(v)
        }
        fn visit_bool<E>(self, v: bool) -> Result<(), E> {
            self.set(v.to_string())
        }
        fn visit_i64<E>(self, v: i64) -> Result<(), E> {
            self.set(v.to_string())
        }
        fn visit_u64<E>(self, v: u64) -> Result<(), E> {
            self.set(v.to_string())
        }
        fn visit_i128<E>(self, v: i128) -> Result<(), E> {
            self.set(v.to_string())
        }
        fn visit_u128<E>(self, v: u128) -> Result<(), E> {
            self.set(v.to_string())
        }
        fn visit_f64<E>(self, v: f64) -> Result<(), E> {
            self.set(v.to_string())
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
            Table { prefix: Some(self.name), out: self.out }.visit_map(map)
        }
    }
}

/// Environment variables that set librdkafka properties; read by [`env_properties`], not by figment.
const PROPERTIES_ENV: &str = "GRANTWATCH_KAFKA__PROPERTIES__";

/// `GRANTWATCH_KAFKA__PROPERTIES__SASL_PASSWORD=v` → (`sasl.password`, `v`), the value verbatim:
/// figment would parse `0012345` as the number 12345, or `[x]` as an array.
fn env_properties() -> Result<BTreeMap<String, String>, ConfigError> {
    let mut out = BTreeMap::new();
    for (var, value) in std::env::vars_os() {
        let Some(var) = var.to_str() else { continue };
        let Some(rest) = var.get(PROPERTIES_ENV.len()..) else { continue };
        if !var[..PROPERTIES_ENV.len()].eq_ignore_ascii_case(PROPERTIES_ENV) {
            continue;
        }
        let name = rest.to_ascii_lowercase().replace("__", ".").replace('_', ".");
        if name.is_empty() {
            return Err(invalid(var, "names no property"));
        }
        let Some(value) = value.to_str() else {
            return Err(invalid(var, "is not valid UTF-8"));
        };
        out.insert(name, value.to_string());
    }
    Ok(out)
}

/// A figment error fit to print: no value of a secret-looking key, no quoted TOML line holding one.
fn sanitize(err: figment::Error) -> ConfigError {
    let scrubbed: Vec<figment::Error> = err.into_iter().map(scrub).collect();
    // `into_iter` yields the newest error first; `chain` makes its argument the newest.
    match scrubbed.into_iter().rev().reduce(|older, newer| older.chain(newer)) {
        Some(e) => ConfigError::Load(Box::new(e)),
        None => invalid("configuration", "could not be read"),
    }
}

fn scrub(mut e: figment::Error) -> figment::Error {
    if e.path.iter().any(|p| is_secret(p)) {
        e.kind = match e.kind {
            Kind::InvalidType(a, exp) => Kind::InvalidType(hide(a), exp),
            Kind::InvalidValue(a, exp) => Kind::InvalidValue(hide(a), exp),
            Kind::Unsupported(a) => Kind::Unsupported(hide(a)),
            Kind::UnsupportedKey(a, exp) => Kind::UnsupportedKey(hide(a), exp),
            Kind::UnknownVariant(_, exp) => Kind::UnknownVariant(HIDDEN.into(), exp),
            Kind::ISizeOutOfRange(_) | Kind::USizeOutOfRange(_) => {
                Kind::Message(format!("integer out of range ({HIDDEN})"))
            }
            Kind::Message(_) => Kind::Message(format!("invalid value ({HIDDEN})")),
            other => other,
        };
    }
    if let Kind::Message(m) = &mut e.kind {
        *m = scrub_snippets(m);
    }
    e
}

const HIDDEN: &str = "value not shown: the key looks secret";

fn hide(a: Actual) -> Actual {
    let what = match a {
        Actual::Bool(_) => "a boolean",
        Actual::Unsigned(_) | Actual::Signed(_) => "an integer",
        Actual::Float(_) => "a float",
        Actual::Char(_) => "a character",
        Actual::Str(_) => "a string",
        Actual::Bytes(_) => "bytes",
        Actual::Other(_) => "a value",
        other => return other, // carries no value
    };
    Actual::Other(format!("{what} ({HIDDEN})"))
}

/// Parse errors quote the offending line (`5 | "sasl.password" = hunter2`): such a line is
/// replaced when it names a secret-looking key.
fn scrub_snippets(message: &str) -> String {
    message
        .lines()
        .map(|line| match line.split_once('|') {
            Some((num, text))
                if !num.trim().is_empty() && num.trim().chars().all(|c| c.is_ascii_digit()) && is_secret(text) =>
            {
                format!("{num}| <line not shown: it names a secret-looking key>")
            }
            _ => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let props: BTreeMap<&str, &str> = self
            .properties
            .iter()
            .map(|(k, v)| (k.as_str(), if is_secret(k) { "<redacted>" } else { v.as_str() }))
            .collect();
        f.debug_struct("KafkaConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("properties", &props)
            .finish()
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("kafka", &self.kafka)
            .field("topics", &self.topics)
            .field("ingest", &self.ingest)
            .field("processor", &self.processor)
            .field("detector", &self.detector)
            .finish()
    }
}

/// One topic: its name and how `grantwatch-topics` creates it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i32,
    /// `retention.ms`; -1 keeps records forever.
    pub retention_ms: i64,
    /// `cleanup.policy=compact` (latest record per key kept) instead of `delete`.
    pub compacted: bool,
}

impl Default for TopicSpec {
    fn default() -> Self {
        Self::new("", 12, 7, false)
    }
}

impl TopicSpec {
    fn new(name: &str, partitions: i32, retention_days: i64, compacted: bool) -> Self {
        let retention_ms = if retention_days < 0 { -1 } else { retention_days * 24 * 3600 * 1000 };
        Self { name: name.into(), partitions, replication_factor: 1, retention_ms, compacted }
    }
}

/// Every topic the services use.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Topics {
    /// Normalized events, keyed by identity. Retention bounds how far a new processor instance can
    /// rebuild state from (see ARCHITECTURE.md): keep it at least the lookback.
    pub events: TopicSpec,
    /// Latest entitlements per identity (compacted), keyed by identity; as many partitions as `events`.
    pub entitlements: TopicSpec,
    pub pci: TopicSpec,
    pub findings: TopicSpec,
    /// Remediation proposals (over-provisioned or newly inactive identities), keyed by identity:
    /// suggestions for a human's `grantwatch remediate plan`, never applied from the topic.
    pub remediation: TopicSpec,
    pub alerts: TopicSpec,
    /// Events that arrived later than the watermark allows (still counted).
    pub late: TopicSpec,
    pub dlq: TopicSpec,
    /// The ingest service's source checkpoints, written in the same transactions as the events.
    pub ingest_checkpoints: TopicSpec,
    /// The processor tasks' state (compacted; partition p is task p's): a moved task restores from it.
    pub processor_changelog: TopicSpec,
    /// The detector tasks' state, likewise.
    pub detector_changelog: TopicSpec,
    /// The access service's audit events (one per transition of a permissions-on-demand request, at
    /// least once; schema `schemas/access_event.v1.json`). Every detector task reads it whole (its
    /// partitioning is free); kept forever by default: it is an audit trail, and it is small.
    pub access: TopicSpec,
}

impl Default for Topics {
    fn default() -> Self {
        Self {
            events: TopicSpec::new("grantwatch.events", 12, 120, false),
            entitlements: TopicSpec::new("grantwatch.entitlements", 12, -1, true),
            pci: TopicSpec::new("grantwatch.pci", 12, -1, true),
            findings: TopicSpec::new("grantwatch.findings", 6, 90, false),
            remediation: TopicSpec::new("grantwatch.remediation", 3, 90, false),
            alerts: TopicSpec::new("grantwatch.alerts", 6, 90, false),
            late: TopicSpec::new("grantwatch.late", 3, 30, false),
            dlq: TopicSpec::new("grantwatch.dlq", 3, 30, false),
            ingest_checkpoints: TopicSpec::new("grantwatch.ingest.checkpoints", 1, -1, true),
            processor_changelog: TopicSpec::new("grantwatch.processor.changelog", 12, -1, true),
            detector_changelog: TopicSpec::new("grantwatch.detector.changelog", 12, -1, true),
            access: TopicSpec::new("grantwatch.access", 1, -1, false),
        }
    }
}

impl Topics {
    pub fn all(&self) -> [&TopicSpec; 12] {
        [
            &self.events,
            &self.entitlements,
            &self.pci,
            &self.findings,
            &self.remediation,
            &self.alerts,
            &self.late,
            &self.dlq,
            &self.ingest_checkpoints,
            &self.processor_changelog,
            &self.detector_changelog,
            &self.access,
        ]
    }

    /// Every topic name with this prefix prepended (tests isolate runs this way).
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        for t in [
            &mut self.events,
            &mut self.entitlements,
            &mut self.pci,
            &mut self.findings,
            &mut self.remediation,
            &mut self.alerts,
            &mut self.late,
            &mut self.dlq,
            &mut self.ingest_checkpoints,
            &mut self.processor_changelog,
            &mut self.detector_changelog,
            &mut self.access,
        ] {
            t.name = format!("{prefix}{}", t.name);
        }
        self
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Unique per running ingest instance: it names the Kafka transactional id.
    pub instance_id: String,
    /// Seconds between scans of watched directories and LookupEvents polls.
    pub poll_interval_secs: u64,
    /// Records per Kafka transaction at most (a big file spans several, each with its checkpoint).
    pub batch_records: usize,
    /// stdin: commit what is pending after this long even if the batch is not full.
    pub flush_interval_ms: u64,
    pub http_listen: String,
    /// LookupEvents sources.
    pub lookup_events: Vec<LookupEventsSource>,
    /// How late CloudTrail may make an event visible to LookupEvents (each poll re-reads this much).
    pub lookup_lag_secs: u64,
    /// Largest normalized event (JSON plus key) produced; a larger one is dead-lettered instead, so
    /// it cannot fail the transaction it would ride in. At most [`MAX_EVENT_BYTES_LIMIT`].
    pub max_event_bytes: usize,
    /// Okta System Log sources (`GET /api/v1/logs`), pulled by `run --okta-logs`.
    pub okta: Vec<OktaSource>,
    /// Google Workspace Admin SDK Reports sources, pulled by `run --workspace-reports`.
    pub workspace: Vec<WorkspaceSource>,
    /// The pulled APIs: attempts of one request (429 and 5xx answers, connection errors) before the
    /// poll fails naming the source and page (1 to 20).
    pub api_max_attempts: u32,
    /// The pulled APIs: longest wait for a rate limit to reset (`X-Rate-Limit-Reset`, `Retry-After`)
    /// or between attempts, in seconds (1 to 3600). A longer reset is waited this long, then retried.
    pub api_max_wait_secs: u64,
    /// The pulled APIs: largest response body read, in bytes (a larger page fails the poll).
    pub api_max_page_bytes: usize,
}

/// An Okta org whose System Log is pulled (`docs/streaming.md`, Pulled logs).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OktaSource {
    /// `https://acme.okta.com` (scheme and host; the org of the events' uids is its host). A test
    /// points it at a fake.
    pub org_url: String,
    /// A file holding the API token (`SSWS` scheme), read at every poll; never logged.
    pub api_token_file: PathBuf,
    /// Where a source without a checkpoint starts (RFC 3339); Okta's default (7 days back) without it.
    #[serde(default)]
    pub since: Option<String>,
    /// Events per page (1 to 1000).
    #[serde(default = "default_okta_limit")]
    pub limit: u32,
}

fn default_okta_limit() -> u32 {
    1000
}

/// A Google Workspace customer whose Reports activities are pulled, application by application.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceSource {
    /// `https://admin.googleapis.com` unless a test points it at a fake.
    #[serde(default = "default_workspace_url")]
    pub base_url: String,
    /// A file holding an OAuth access token (scope `admin.reports.audit.readonly`), read at every
    /// request: the operator's token refresher keeps it current. Never logged.
    pub token_file: PathBuf,
    /// Names the source in checkpoints and logs (any text; the customer id is a good one).
    #[serde(default = "default_workspace_name")]
    pub name: String,
    /// Applications pulled (`login`, `admin`, `token`, ...).
    #[serde(default = "default_workspace_apps")]
    pub applications: Vec<String>,
    /// Where a source without a checkpoint starts (RFC 3339); without it, whatever Reports keeps.
    #[serde(default)]
    pub start_time: Option<String>,
    /// Length of the time windows read (each window whole, all its pages, then produced oldest first
    /// with its checkpoint in one transaction), in seconds (60 to 86400).
    #[serde(default = "default_workspace_window")]
    pub window_secs: u64,
    /// How late Reports may show an activity (each poll re-reads this much before the newest activity
    /// produced; ids in that span are remembered), in seconds (0 to 86400).
    #[serde(default = "default_workspace_lag")]
    pub lag_secs: u64,
    /// Activities per page (1 to 1000).
    #[serde(default = "default_workspace_max_results")]
    pub max_results: u32,
    /// Activities of one window held at most; a fuller window fails the poll naming it (lower
    /// `window_secs`).
    #[serde(default = "default_workspace_max_window")]
    pub max_window_activities: usize,
}

fn default_workspace_url() -> String {
    "https://admin.googleapis.com".into()
}
fn default_workspace_name() -> String {
    "my_customer".into()
}
fn default_workspace_apps() -> Vec<String> {
    ["login", "admin", "token", "user_accounts"].map(String::from).to_vec()
}
fn default_workspace_window() -> u64 {
    3600
}
fn default_workspace_lag() -> u64 {
    600
}
fn default_workspace_max_results() -> u32 {
    1000
}
fn default_workspace_max_window() -> usize {
    200_000
}

// Token files are paths, not secrets; still, nothing of a source's credentials is ever printed.
impl std::fmt::Debug for OktaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OktaSource")
            .field("org_url", &self.org_url)
            .field("api_token_file", &self.api_token_file)
            .field("since", &self.since)
            .field("limit", &self.limit)
            .finish()
    }
}

impl std::fmt::Debug for WorkspaceSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkspaceSource")
            .field("base_url", &self.base_url)
            .field("token_file", &self.token_file)
            .field("name", &self.name)
            .field("applications", &self.applications)
            .field("start_time", &self.start_time)
            .field("window_secs", &self.window_secs)
            .field("lag_secs", &self.lag_secs)
            .field("max_results", &self.max_results)
            .field("max_window_activities", &self.max_window_activities)
            .finish()
    }
}

/// Upper bound of `ingest.max_event_bytes`: below the `max.message.bytes` of the topics
/// `create-topics` makes (8 MiB) and the producer's ([`crate::kafka::client::PRODUCER_MESSAGE_MAX_BYTES`]).
pub const MAX_EVENT_BYTES_LIMIT: usize = crate::kafka::client::MAX_RECORD_BYTES;

/// Upper bound of `processor.window_secs` and `*.max_out_of_orderness_secs`: a year and a day.
/// Bounded so that converting to milliseconds cannot overflow, and a typo does not go unnoticed.
pub const MAX_EVENT_TIME_SECS: i64 = 366 * 24 * 3600;

/// Upper bound of `ingest.poll_interval_secs` (a day): larger ones overflow the clock arithmetic.
pub const MAX_POLL_INTERVAL_SECS: u64 = 24 * 3600;

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            instance_id: "ingest-1".into(),
            poll_interval_secs: 10,
            batch_records: 50_000,
            flush_interval_ms: 100,
            http_listen: "127.0.0.1:9464".into(),
            lookup_events: Vec::new(),
            lookup_lag_secs: 900,
            max_event_bytes: 1_000_000,
            okta: Vec::new(),
            workspace: Vec::new(),
            api_max_attempts: 6,
            api_max_wait_secs: 60,
            api_max_page_bytes: 64 << 20,
        }
    }
}

/// One account and region polled through the CloudTrail `LookupEvents` API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupEventsSource {
    pub region: String,
    /// The account the credentials reach (recorded in checkpoints and dead letters).
    pub account: String,
    /// Endpoint override (a local emulator or recorded fake); the regional endpoint when absent.
    #[serde(default)]
    pub endpoint_url: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProcessorSection {
    pub group_id: String,
    /// Unique per running instance (names its transactional id).
    pub instance_id: String,
    /// RocksDB state, one directory per assigned partition.
    pub state_dir: PathBuf,
    /// Event-time window after which PCI updates are emitted.
    pub window_secs: i64,
    pub lookback_days: u32,
    pub over_provisioned_ratio: f64,
    /// Share of the catalog that, granted on every resource without condition, makes a super identity.
    pub super_identity_share: f64,
    /// The AWS Organizations file (`docs/organizations.md`) that caps member accounts' root users,
    /// which no entitlement record describes. Give ingest the same file (`--organization`).
    pub organization: Option<PathBuf>,
    pub max_out_of_orderness_secs: i64,
    pub commit_interval_ms: u64,
    pub http_listen: String,
    /// Close a window only once the entitlements topic is known complete up to it (its watermark marks,
    /// written by `grantwatch-ingest --iam`): PCI is then a function of the data, not of arrival timing.
    /// Off: entitlements count from when they are read, and windows close without waiting.
    pub await_entitlements: bool,
    /// Log the tasks' state to `topics.processor_changelog`, so a task that moves or loses its disk
    /// restores from it. Off: it rebuilds from the input topics (their retention must cover the
    /// lookback), and the processor produces ~1.8 fewer records per event.
    pub changelog: bool,
    /// Publish a remediation proposal to `topics.remediation` when an identity newly becomes
    /// over-provisioned, or inactive after having been active (docs/remediation.md).
    pub remediation_proposals: bool,
}

impl Default for ProcessorSection {
    fn default() -> Self {
        Self {
            group_id: "grantwatch-processor".into(),
            instance_id: "processor-1".into(),
            state_dir: PathBuf::from("state/processor"),
            window_secs: 24 * 3600,
            lookback_days: 90,
            over_provisioned_ratio: 0.10,
            super_identity_share: grantwatch_core::findings::SUPER_IDENTITY_SHARE,
            organization: None,
            max_out_of_orderness_secs: 1200,
            commit_interval_ms: 1000,
            http_listen: "127.0.0.1:9465".into(),
            await_entitlements: true,
            changelog: true,
            remediation_proposals: true,
        }
    }
}

/// Seconds to milliseconds; saturating, though [`Config::validate`] keeps values far from overflow.
fn secs_to_ms(secs: i64) -> i64 {
    secs.saturating_mul(1000)
}

impl ProcessorSection {
    pub fn window_ms(&self) -> i64 {
        secs_to_ms(self.window_secs)
    }
    pub fn max_out_of_orderness_ms(&self) -> i64 {
        secs_to_ms(self.max_out_of_orderness_secs)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectorSection {
    pub group_id: String,
    pub instance_id: String,
    pub state_dir: PathBuf,
    pub max_out_of_orderness_secs: i64,
    pub commit_interval_ms: u64,
    /// The rules directory: Sigma rules (`*.yml`, any depth) and `grantwatch.toml` (per-analytic
    /// settings). The repository's `rules/` by default.
    pub rules_dir: PathBuf,
    /// The model directory written by `grantwatch train` (`manifest.json`, `model.json`). Empty: no
    /// model, the ML analytics are off. A model of another feature version is refused at start.
    pub models_dir: PathBuf,
    pub http_listen: String,
    /// Join each event with the PCI updates as of its time, waiting at a window boundary for the
    /// processor's watermark mark. Off: the detector uses whatever PCI it has read.
    pub await_pci: bool,
    /// Log the tasks' state to `topics.detector_changelog` (see [`ProcessorSection::changelog`]).
    pub changelog: bool,
}

impl Default for DetectorSection {
    fn default() -> Self {
        Self {
            group_id: "grantwatch-detector".into(),
            instance_id: "detector-1".into(),
            state_dir: PathBuf::from("state/detector"),
            max_out_of_orderness_secs: 1200,
            commit_interval_ms: 200,
            rules_dir: PathBuf::from("rules"),
            models_dir: PathBuf::new(),
            http_listen: "127.0.0.1:9466".into(),
            await_pci: true,
            changelog: true,
        }
    }
}

impl DetectorSection {
    pub fn max_out_of_orderness_ms(&self) -> i64 {
        secs_to_ms(self.max_out_of_orderness_secs)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("configuration: {key}: {problem}")]
    Invalid { key: String, problem: String },
}

fn invalid(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), problem: problem.into() }
}

impl Config {
    /// Defaults, then `file` (if any), then `GRANTWATCH_*` variables; validated.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(f) = file {
            if !f.exists() {
                return Err(invalid("--config", format!("{} does not exist", f.display())));
            }
            fig = fig.merge(Toml::file(f));
        }
        let props = env_properties()?;
        if !props.is_empty() {
            fig = fig.merge(Serialized::defaults(serde_json::json!({ "kafka": { "properties": props } })));
        }
        let prefix = &PROPERTIES_ENV["GRANTWATCH_".len()..];
        let cfg: Config = fig
            // Only `SECTION__KEY` variables are configuration; others (`GRANTWATCH_LOG_FORMAT`, ...) are not.
            // Properties are read above, verbatim.
            .merge(
                Env::prefixed("GRANTWATCH_")
                    .filter(move |k| {
                        let k = k.as_str();
                        k.contains("__") && !k.get(..prefix.len()).is_some_and(|p| p.eq_ignore_ascii_case(prefix))
                    })
                    .split("__"),
            )
            .extract()
            .map_err(sanitize)?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.kafka.bootstrap_servers.trim().is_empty() {
            return Err(invalid("kafka.bootstrap_servers", "must not be empty"));
        }
        let names = [
            "events",
            "entitlements",
            "pci",
            "findings",
            "remediation",
            "alerts",
            "late",
            "dlq",
            "ingest_checkpoints",
            "processor_changelog",
            "detector_changelog",
            "access",
        ];
        for (field, t) in names.iter().zip(self.topics.all()) {
            let key = format!("topics.{field}");
            if t.name.is_empty() || t.name.len() > 249 {
                return Err(invalid(&format!("{key}.name"), "must be 1 to 249 characters"));
            }
            if !t.name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
                return Err(invalid(&format!("{key}.name"), "may only contain letters, digits, '.', '_' and '-'"));
            }
            if t.partitions < 1 {
                return Err(invalid(&format!("{key}.partitions"), "must be at least 1"));
            }
            if t.replication_factor < 1 {
                return Err(invalid(&format!("{key}.replication_factor"), "must be at least 1"));
            }
            if t.retention_ms < -1 || t.retention_ms == 0 {
                return Err(invalid(&format!("{key}.retention_ms"), "must be positive, or -1 for forever"));
            }
        }
        if self.topics.events.partitions != self.topics.entitlements.partitions {
            return Err(invalid(
                "topics.entitlements.partitions",
                "must equal topics.events.partitions (both are partitioned by identity and read together)",
            ));
        }
        if self.topics.events.partitions != self.topics.pci.partitions {
            return Err(invalid(
                "topics.pci.partitions",
                "must equal topics.events.partitions (the detector reads both, partitioned by identity)",
            ));
        }
        for (key, t) in [
            ("topics.processor_changelog", &self.topics.processor_changelog),
            ("topics.detector_changelog", &self.topics.detector_changelog),
        ] {
            if t.partitions != self.topics.events.partitions {
                return Err(invalid(
                    &format!("{key}.partitions"),
                    "must equal topics.events.partitions (partition p holds the state of task p)",
                ));
            }
            if !t.compacted || t.retention_ms != -1 {
                return Err(invalid(
                    &format!("{key}.compacted"),
                    "must be true with retention_ms = -1 (a restore reads the whole log)",
                ));
            }
        }
        for (key, id) in [
            ("ingest.instance_id", &self.ingest.instance_id),
            ("processor.instance_id", &self.processor.instance_id),
            ("detector.instance_id", &self.detector.instance_id),
            ("processor.group_id", &self.processor.group_id),
            ("detector.group_id", &self.detector.group_id),
        ] {
            if id.trim().is_empty() {
                return Err(invalid(key, "must not be empty"));
            }
        }
        if !(1..=MAX_EVENT_TIME_SECS).contains(&self.processor.window_secs) {
            return Err(invalid("processor.window_secs", format!("must be 1 to {MAX_EVENT_TIME_SECS} (366 days)")));
        }
        if self.detector.await_pci
            && self.detector.max_out_of_orderness_secs != self.processor.max_out_of_orderness_secs
        {
            return Err(invalid(
                "detector.max_out_of_orderness_secs",
                "must equal processor.max_out_of_orderness_secs while detector.await_pci is on (both watermarks \
                 must agree for the detector to know which PCI updates an event is joined with)",
            ));
        }
        if self.processor.lookback_days < 1 {
            return Err(invalid("processor.lookback_days", "must be at least 1"));
        }
        if !(0.0..=1.0).contains(&self.processor.over_provisioned_ratio) {
            return Err(invalid("processor.over_provisioned_ratio", "must be between 0 and 1"));
        }
        if !(self.processor.super_identity_share > 0.0 && self.processor.super_identity_share <= 1.0) {
            return Err(invalid("processor.super_identity_share", "must be above 0 and at most 1"));
        }
        for (key, v) in [
            ("processor.max_out_of_orderness_secs", self.processor.max_out_of_orderness_secs),
            ("detector.max_out_of_orderness_secs", self.detector.max_out_of_orderness_secs),
        ] {
            if !(0..=MAX_EVENT_TIME_SECS).contains(&v) {
                return Err(invalid(key, format!("must be 0 to {MAX_EVENT_TIME_SECS} (366 days)")));
            }
        }
        for (key, v) in [
            ("processor.commit_interval_ms", self.processor.commit_interval_ms),
            ("detector.commit_interval_ms", self.detector.commit_interval_ms),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if self.ingest.flush_interval_ms == 0 {
            return Err(invalid("ingest.flush_interval_ms", "must be at least 1"));
        }
        if self.ingest.batch_records == 0 {
            return Err(invalid("ingest.batch_records", "must be at least 1"));
        }
        if self.ingest.poll_interval_secs > MAX_POLL_INTERVAL_SECS {
            return Err(invalid(
                "ingest.poll_interval_secs",
                format!("must be at most {MAX_POLL_INTERVAL_SECS} (a day)"),
            ));
        }
        if !(1024..=MAX_EVENT_BYTES_LIMIT).contains(&self.ingest.max_event_bytes) {
            return Err(invalid(
                "ingest.max_event_bytes",
                format!(
                    "must be 1024 to {MAX_EVENT_BYTES_LIMIT} (below the topics' and the producer's message size limits)"
                ),
            ));
        }
        self.validate_pulled()?;
        for (key, addr) in [
            ("ingest.http_listen", &self.ingest.http_listen),
            ("processor.http_listen", &self.processor.http_listen),
            ("detector.http_listen", &self.detector.http_listen),
        ] {
            if !addr.is_empty() && addr.parse::<std::net::SocketAddr>().is_err() {
                return Err(invalid(key, format!("{addr:?} is not an address:port (empty disables it)")));
            }
        }
        Ok(())
    }
}

impl Config {
    /// The Okta and Workspace sources' settings.
    fn validate_pulled(&self) -> Result<(), ConfigError> {
        let i = &self.ingest;
        if !(1..=20).contains(&i.api_max_attempts) {
            return Err(invalid("ingest.api_max_attempts", "must be 1 to 20"));
        }
        if !(1..=3600).contains(&i.api_max_wait_secs) {
            return Err(invalid("ingest.api_max_wait_secs", "must be 1 to 3600"));
        }
        if !(1024..=(1 << 30)).contains(&i.api_max_page_bytes) {
            return Err(invalid("ingest.api_max_page_bytes", "must be 1024 to 1073741824"));
        }
        let url = |key: String, u: &str| {
            let ok = (u.starts_with("https://") || u.starts_with("http://"))
                && !u.contains(['?', '#', ' '])
                && u.split_once("://").is_some_and(|(_, rest)| !rest.is_empty() && !rest.contains('@'));
            // The value is not quoted: it may hold credentials.
            if ok {
                Ok(())
            } else {
                Err(invalid(&key, "must be an http(s) base URL: scheme and host, no credentials, query or fragment"))
            }
        };
        let time = |key: String, t: &Option<String>| match t {
            Some(t) if grantwatch_types::EventTime::parse_rfc3339(t).is_none() => {
                Err(invalid(&key, format!("{t:?} is not an RFC 3339 time")))
            }
            _ => Ok(()),
        };
        let mut names = std::collections::BTreeSet::new();
        for (n, o) in i.okta.iter().enumerate() {
            url(format!("ingest.okta[{n}].org_url"), &o.org_url)?;
            time(format!("ingest.okta[{n}].since"), &o.since)?;
            if !(1..=1000).contains(&o.limit) {
                return Err(invalid(&format!("ingest.okta[{n}].limit"), "must be 1 to 1000"));
            }
            if !names.insert(format!("okta:{}", o.org_url.trim_end_matches('/'))) {
                return Err(invalid(&format!("ingest.okta[{n}].org_url"), "names the same org as an earlier source"));
            }
        }
        for (n, w) in i.workspace.iter().enumerate() {
            let key = |k: &str| format!("ingest.workspace[{n}].{k}");
            url(key("base_url"), &w.base_url)?;
            time(key("start_time"), &w.start_time)?;
            if w.applications.is_empty() {
                return Err(invalid(&key("applications"), "must name at least one application"));
            }
            if let Some(a) = w
                .applications
                .iter()
                .find(|a| a.is_empty() || !a.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            {
                return Err(invalid(&key("applications"), format!("{a:?} is not an application name")));
            }
            if !(60..=86_400).contains(&w.window_secs) {
                return Err(invalid(&key("window_secs"), "must be 60 to 86400"));
            }
            if w.lag_secs >= w.window_secs {
                // Each window starts lag_secs before the last one's end: it must reach past it.
                return Err(invalid(&key("lag_secs"), "must be below window_secs"));
            }
            if !(1..=1000).contains(&w.max_results) {
                return Err(invalid(&key("max_results"), "must be 1 to 1000"));
            }
            if w.max_window_activities == 0 {
                return Err(invalid(&key("max_window_activities"), "must be at least 1"));
            }
            if !names.insert(format!("workspace:{}", w.name)) {
                return Err(invalid(&key("name"), "names the same source as an earlier one"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own error type
    fn file_then_environment_and_validation_names_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gw.toml");
        std::fs::write(
            &file,
            "[kafka]\nbootstrap_servers = \"b:1\"\n[kafka.properties]\n\"sasl.password\" = \"hunter2\"\n[processor]\nwindow_secs = 60\n",
        )
        .unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("GRANTWATCH_PROCESSOR__LOOKBACK_DAYS", "30");
            jail.set_env("GRANTWATCH_LOG_FORMAT", "json"); // not configuration
            jail.set_env("GRANTWATCH_BIN_DIR", "/x"); // nor this
            let cfg = Config::load(Some(&file)).unwrap();
            assert_eq!(cfg.kafka.bootstrap_servers, "b:1");
            assert_eq!(cfg.processor.window_secs, 60);
            assert_eq!(cfg.processor.lookback_days, 30);
            let shown = format!("{cfg:?}");
            assert!(!shown.contains("hunter2") && shown.contains("<redacted>"), "{shown}");

            jail.set_env("GRANTWATCH_TOPICS__EVENTS__PARTITIONS", "4");
            let err = Config::load(Some(&file)).unwrap_err().to_string();
            assert!(err.contains("topics.entitlements.partitions"), "{err}");
            jail.set_env("GRANTWATCH_TOPICS__EVENTS__PARTITIONS", "12");
            jail.set_env("GRANTWATCH_PROCESSOR__BOGUS", "1");
            let err = Config::load(Some(&file)).unwrap_err().to_string();
            assert!(err.contains("bogus"), "{err}");
            Ok(())
        });
    }

    /// Writes `text` as a config file and loads it with `env` set.
    #[allow(clippy::result_large_err)]
    fn load_with(text: &str, env: &[(&str, &str)]) -> Result<Config, String> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gw.toml");
        std::fs::write(&file, text).unwrap();
        let mut out = None;
        figment::Jail::expect_with(|jail| {
            for (k, v) in env {
                jail.set_env(k, v);
            }
            out = Some(Config::load(Some(&file)).map_err(|e| e.to_string()));
            Ok(())
        });
        out.unwrap()
    }

    #[test]
    fn numeric_secrets_load_and_are_never_shown() {
        // A quoted key with a number (a type error quoting the value, before).
        let cfg = load_with("[kafka.properties]\n\"sasl.password\" = 12345\n\"sasl.username\" = \"u\"\n", &[]).unwrap();
        assert_eq!(cfg.kafka.properties["sasl.password"], "12345");
        assert!(!format!("{cfg:?}").contains("12345"));
        // TOML's dotted keys mean the dotted property; booleans are text too.
        let cfg =
            load_with("[kafka.properties]\nsasl.password = 12345\nenable.ssl.certificate.verification = false\n", &[])
                .unwrap();
        assert_eq!(cfg.kafka.properties["sasl.password"], "12345");
        assert_eq!(cfg.kafka.properties["enable.ssl.certificate.verification"], "false");
        // The environment: verbatim, `_` → `.`, over the file.
        let cfg = load_with(
            "[kafka.properties]\n\"sasl.password\" = \"from-file\"\n",
            &[
                ("GRANTWATCH_KAFKA__PROPERTIES__SASL_PASSWORD", "0012345"),
                ("grantwatch_kafka__properties__sasl__username", "7"),
            ],
        )
        .unwrap();
        assert_eq!(cfg.kafka.properties["sasl.password"], "0012345");
        assert_eq!(cfg.kafka.properties["sasl.username"], "7");
        assert_eq!(cfg.kafka.properties.len(), 2, "{:?}", cfg.kafka.properties.keys());
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("0012345") && shown.contains("<redacted>"), "{shown}");
        // An error elsewhere does not drag the secret along.
        let err = load_with(
            "[processor]\nwindow_secs = \"x\"\n",
            &[("GRANTWATCH_KAFKA__PROPERTIES__SASL_PASSWORD", "s3cr3t-env")],
        )
        .unwrap_err();
        assert!(err.contains("window_secs") && !err.contains("s3cr3t-env"), "{err}");
    }

    #[test]
    fn errors_never_quote_a_secret() {
        // A TOML syntax error quotes the offending line.
        let err = load_with("[kafka.properties]\n\"sasl.password\" = hunter2 x\n", &[]).unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(err.contains("line 2") && err.contains("line not shown"), "{err}");
        // ... but other lines still are.
        let err = load_with("[kafka]\nbootstrap_servers = nohost\n", &[]).unwrap_err();
        assert!(err.contains("nohost"), "{err}");
        // A type error at a secret-looking key leaves the value out.
        let mut e = figment::Error::from(Kind::InvalidType(Actual::Unsigned(12345), "a string".into()));
        e.path = vec!["kafka".into(), "properties".into(), "sasl.password".into()];
        let other = figment::Error::from(Kind::InvalidValue(Actual::Str("visible".into()), "x".into()));
        let shown = sanitize(other.chain(e)).to_string();
        assert!(!shown.contains("12345") && shown.contains("an integer"), "{shown}");
        assert!(shown.contains("visible"), "{shown}");
    }

    #[test]
    fn out_of_range_values_name_their_key() {
        for (text, key) in [
            ("[processor]\nwindow_secs = 9223372036854775807\n", "processor.window_secs"),
            ("[processor]\nwindow_secs = 0\n", "processor.window_secs"),
            ("[processor]\nmax_out_of_orderness_secs = 9223372036854775807\n", "processor.max_out_of_orderness_secs"),
            ("[detector]\nmax_out_of_orderness_secs = -1\n", "detector.max_out_of_orderness_secs"),
            ("[ingest]\npoll_interval_secs = 9223372036854775807\n", "ingest.poll_interval_secs"),
            ("[ingest]\nmax_event_bytes = 100000000\n", "ingest.max_event_bytes"),
            ("[ingest]\nmax_event_bytes = 10\n", "ingest.max_event_bytes"),
        ] {
            let err = load_with(text, &[]).unwrap_err();
            assert!(err.contains(key), "{text}: {err}");
        }
        let cfg = load_with(&format!("[processor]\nwindow_secs = {MAX_EVENT_TIME_SECS}\n"), &[]).unwrap();
        assert_eq!(cfg.processor.window_ms(), MAX_EVENT_TIME_SECS * 1000);
        assert_eq!(ProcessorSection { window_secs: i64::MAX, ..Default::default() }.window_ms(), i64::MAX);
    }

    #[test]
    fn debug_shows_no_secret() {
        let mut cfg = Config::default();
        for (k, v) in [
            ("sasl.password", "p-1"),
            ("ssl.key.password", "p-2"),
            ("sasl.oauthbearer.client.secret", "p-3"),
            ("sasl.oauthbearer.token.endpoint.url", "https://idp/token"),
            ("x.credentials", "p-4"),
        ] {
            cfg.kafka.properties.insert(k.into(), v.into());
        }
        cfg.kafka.properties.insert("ssl.ca.location".into(), "/etc/ca.pem".into());
        let shown = format!("{cfg:?} {:?}", cfg.kafka);
        for secret in ["p-1", "p-2", "p-3", "p-4"] {
            assert!(!shown.contains(secret), "{secret}: {shown}");
        }
        assert!(shown.contains("/etc/ca.pem"), "{shown}");
    }

    #[test]
    fn pulled_sources_load_validate_and_name_their_key() {
        let ok = "[[ingest.okta]]\norg_url = \"https://acme.okta.com\"\napi_token_file = \"/run/okta\"\n\
                  [[ingest.workspace]]\ntoken_file = \"/run/ws\"\nstart_time = \"2024-01-01T00:00:00Z\"\n";
        let cfg = load_with(ok, &[]).unwrap();
        assert_eq!(cfg.ingest.okta[0].limit, 1000);
        assert_eq!(cfg.ingest.workspace[0].base_url, "https://admin.googleapis.com");
        assert_eq!(cfg.ingest.workspace[0].applications, ["login", "admin", "token", "user_accounts"]);
        for (text, key) in [
            ("[[ingest.okta]]\norg_url = \"acme.okta.com\"\napi_token_file = \"/t\"\n", "ingest.okta[0].org_url"),
            (
                "[[ingest.okta]]\norg_url = \"https://u:p@acme.okta.com\"\napi_token_file = \"/t\"\n",
                "ingest.okta[0].org_url",
            ),
            ("[[ingest.okta]]\norg_url = \"https://a\"\napi_token_file = \"/t\"\nlimit = 0\n", "ingest.okta[0].limit"),
            (
                "[[ingest.okta]]\norg_url = \"https://a\"\napi_token_file = \"/t\"\nsince = \"monday\"\n",
                "ingest.okta[0].since",
            ),
            (
                "[[ingest.workspace]]\ntoken_file = \"/t\"\nwindow_secs = 600\nlag_secs = 600\n",
                "ingest.workspace[0].lag_secs",
            ),
            (
                "[[ingest.workspace]]\ntoken_file = \"/t\"\napplications = [\"lo/gin\"]\n",
                "ingest.workspace[0].applications",
            ),
            ("[ingest]\napi_max_attempts = 0\n", "ingest.api_max_attempts"),
        ] {
            let err = load_with(text, &[]).unwrap_err();
            assert!(err.contains(key), "{text}: {err}");
        }
    }
}
