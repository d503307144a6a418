//! Service configuration: built-in defaults, then a TOML file, then `GRANTWATCH_*` environment
//! variables (`__` separates sections: `GRANTWATCH_KAFKA__BOOTSTRAP_SERVERS=host:9092`), validated
//! once at start with errors that name the offending key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::Figment;
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
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self { bootstrap_servers: "127.0.0.1:9092".into(), properties: BTreeMap::new() }
    }
}

/// Property names whose values are secrets: never printed.
fn is_secret(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["password", "secret", "token", "key"].iter().any(|s| n.contains(s)) && !n.ends_with(".location")
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
    pub alerts: TopicSpec,
    /// Events that arrived later than the watermark allows (still counted).
    pub late: TopicSpec,
    pub dlq: TopicSpec,
    /// The ingest service's source checkpoints, written in the same transactions as the events.
    pub ingest_checkpoints: TopicSpec,
}

impl Default for Topics {
    fn default() -> Self {
        Self {
            events: TopicSpec::new("grantwatch.events", 12, 120, false),
            entitlements: TopicSpec::new("grantwatch.entitlements", 12, -1, true),
            pci: TopicSpec::new("grantwatch.pci", 12, -1, true),
            findings: TopicSpec::new("grantwatch.findings", 6, 90, false),
            alerts: TopicSpec::new("grantwatch.alerts", 6, 90, false),
            late: TopicSpec::new("grantwatch.late", 3, 30, false),
            dlq: TopicSpec::new("grantwatch.dlq", 3, 30, false),
            ingest_checkpoints: TopicSpec::new("grantwatch.ingest.checkpoints", 1, -1, true),
        }
    }
}

impl Topics {
    pub fn all(&self) -> [&TopicSpec; 8] {
        [
            &self.events,
            &self.entitlements,
            &self.pci,
            &self.findings,
            &self.alerts,
            &self.late,
            &self.dlq,
            &self.ingest_checkpoints,
        ]
    }

    /// Every topic name with this prefix prepended (tests isolate runs this way).
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        for t in [
            &mut self.events,
            &mut self.entitlements,
            &mut self.pci,
            &mut self.findings,
            &mut self.alerts,
            &mut self.late,
            &mut self.dlq,
            &mut self.ingest_checkpoints,
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
}

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
    pub max_out_of_orderness_secs: i64,
    pub commit_interval_ms: u64,
    pub http_listen: String,
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
            max_out_of_orderness_secs: 300,
            commit_interval_ms: 1000,
            http_listen: "127.0.0.1:9465".into(),
        }
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
}

impl Default for DetectorSection {
    fn default() -> Self {
        Self {
            group_id: "grantwatch-detector".into(),
            instance_id: "detector-1".into(),
            state_dir: PathBuf::from("state/detector"),
            max_out_of_orderness_secs: 300,
            commit_interval_ms: 200,
            rules_dir: PathBuf::from("rules"),
            models_dir: PathBuf::new(),
            http_listen: "127.0.0.1:9466".into(),
        }
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
        let cfg: Config = fig
            // Only `SECTION__KEY` variables are configuration; others (`GRANTWATCH_LOG_FORMAT`, ...) are not.
            .merge(Env::prefixed("GRANTWATCH_").filter(|k| k.as_str().contains("__")).split("__"))
            .extract()
            .map_err(Box::new)?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.kafka.bootstrap_servers.trim().is_empty() {
            return Err(invalid("kafka.bootstrap_servers", "must not be empty"));
        }
        let names = ["events", "entitlements", "pci", "findings", "alerts", "late", "dlq", "ingest_checkpoints"];
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
        if self.processor.window_secs < 1 {
            return Err(invalid("processor.window_secs", "must be at least 1"));
        }
        if self.processor.lookback_days < 1 {
            return Err(invalid("processor.lookback_days", "must be at least 1"));
        }
        if !(0.0..=1.0).contains(&self.processor.over_provisioned_ratio) {
            return Err(invalid("processor.over_provisioned_ratio", "must be between 0 and 1"));
        }
        for (key, v) in [
            ("processor.max_out_of_orderness_secs", self.processor.max_out_of_orderness_secs),
            ("detector.max_out_of_orderness_secs", self.detector.max_out_of_orderness_secs),
        ] {
            if v < 0 {
                return Err(invalid(key, "must not be negative"));
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
}
