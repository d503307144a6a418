//! The service's configuration (TOML; `GRANTWATCH_ACCESS_SECTION__KEY` variables override it):
//!
//! ```toml
//! listen = "127.0.0.1:8790"           # loopback unless you say otherwise
//! state_dir = "/var/lib/grantwatch-access"
//! audit_log = "/var/log/grantwatch/access-audit.jsonl"
//! rules = "/etc/grantwatch/access-rules.toml"   # approval rules, see crates/access/src/config.rs
//!
//! [auth]
//! tokens_file = "/etc/grantwatch/access-tokens.toml"   # static tokens, stored hashed
//! [auth.oidc]                                          # and/or OIDC JWTs
//! issuer = "https://idp.example.com"
//! audience = "grantwatch-access"
//! jwks_file = "/etc/grantwatch/jwks.json"
//! approver_groups = ["secops"]
//!
//! [kafka]                      # optional: the audit topic
//! bootstrap_servers = "127.0.0.1:9092"
//! topic = "grantwatch.access"
//!
//! [aws]                        # credentials from the SDK's default chain only
//! region = "us-east-1"
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Where the API listens: loopback by default, so exposing it is a decision.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The RocksDB state (requests, logs, the expiry index, the audit outbox).
    pub state_dir: PathBuf,
    /// The append-only audit log (JSON Lines, `schemas/access_event.v1.json`).
    pub audit_log: PathBuf,
    /// The approval rules (TOML).
    pub rules: PathBuf,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    /// The audit topic; without it, the audit log only.
    #[serde(default)]
    pub kafka: Option<KafkaSection>,
    #[serde(default)]
    pub aws: AwsSection,
    #[serde(default)]
    pub scheduler: SchedulerConfig,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8790))
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Static bearer tokens, stored as SHA-256 hashes (`grantwatch-access token new` makes one).
    pub tokens_file: Option<PathBuf>,
    pub oidc: Option<OidcConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The `iss` a token must carry.
    pub issuer: String,
    /// The `aud` a token must carry.
    pub audience: String,
    /// The issuer's JSON Web Key Set, as a file (fetched and rotated by the deployment, so the
    /// service makes no outbound call to authenticate).
    pub jwks_file: PathBuf,
    /// The claim that names the principal.
    #[serde(default = "default_principal_claim")]
    pub principal_claim: String,
    /// The claim listing the principal's groups (an array of strings).
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Members of these groups are requesters; with the list empty, every authenticated user is.
    #[serde(default)]
    pub requester_groups: Vec<String>,
    #[serde(default)]
    pub approver_groups: Vec<String>,
    #[serde(default)]
    pub admin_groups: Vec<String>,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(default = "default_leeway_secs")]
    pub leeway_secs: u64,
}

fn default_principal_claim() -> String {
    "email".into()
}
fn default_groups_claim() -> String {
    "groups".into()
}
fn default_leeway_secs() -> u64 {
    60
}

/// Token buckets: per authenticated principal, and per client address for requests that fail to
/// authenticate (so guessing tokens is slow).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    pub per_principal_per_sec: f64,
    pub per_principal_burst: f64,
    pub unauthenticated_per_sec: f64,
    pub unauthenticated_burst: f64,
    /// Buckets kept at most (the least recently used go first): memory does not grow with the
    /// number of callers.
    pub max_tracked: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            per_principal_per_sec: 20.0,
            per_principal_burst: 60.0,
            unauthenticated_per_sec: 2.0,
            unauthenticated_burst: 10.0,
            max_tracked: 10_000,
        }
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSection {
    pub bootstrap_servers: String,
    /// Extra librdkafka properties (`security.protocol`, `sasl.username`, ...), as strings.
    #[serde(default)]
    pub properties: std::collections::BTreeMap<String, String>,
    #[serde(default = "default_topic")]
    pub topic: String,
    /// The topic is created with these when it does not exist (an existing topic is left as it is).
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    #[serde(default = "default_replication")]
    pub replication_factor: i32,
}

fn default_partitions() -> i32 {
    3
}
fn default_replication() -> i32 {
    1
}

impl std::fmt::Debug for KafkaSection {
    /// Property values that may be secrets (`sasl.password`, `ssl.key.password`, ...) are not shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let props: std::collections::BTreeMap<&str, &str> = self
            .properties
            .iter()
            .map(|(k, v)| {
                let n = k.to_ascii_lowercase();
                let secret = ["password", "secret", "token", "key", "credential"].iter().any(|s| n.contains(s))
                    && !n.ends_with(".location");
                (k.as_str(), if secret { "<redacted>" } else { v.as_str() })
            })
            .collect();
        f.debug_struct("KafkaSection")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("properties", &props)
            .field("topic", &self.topic)
            .field("partitions", &self.partitions)
            .field("replication_factor", &self.replication_factor)
            .finish()
    }
}

fn default_topic() -> String {
    "grantwatch.access".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsSection {
    /// One endpoint for IAM and SSO Admin (moto, a proxy); AWS's otherwise.
    pub endpoint_url: Option<String>,
    pub region: Option<String>,
    /// Longest wait for one AWS call, retries included: a hung endpoint fails the attempt, which is
    /// retried later, instead of holding a worker.
    pub call_timeout_secs: u64,
}

impl Default for AwsSection {
    fn default() -> Self {
        Self { endpoint_url: None, region: None, call_timeout_secs: 20 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// Revocations in flight at once.
    pub workers: usize,
    /// Due grants read per look at the expiry index.
    pub page: usize,
    /// Longest sleep between looks when nothing is due sooner.
    pub max_idle_ms: u64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self { workers: 64, page: 1000, max_idle_ms: 1000 }
    }
}

impl ServiceConfig {
    pub fn load(file: &Path) -> anyhow::Result<ServiceConfig> {
        if !file.exists() {
            anyhow::bail!("--config: {} does not exist", file.display());
        }
        let cfg: ServiceConfig = Figment::new()
            .merge(Toml::file(file))
            .merge(Env::prefixed("GRANTWATCH_ACCESS_").split("__"))
            .extract()
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        if cfg.auth.tokens_file.is_none() && cfg.auth.oidc.is_none() {
            anyhow::bail!("{}: [auth] needs tokens_file or [auth.oidc]: the API never runs open", file.display());
        }
        if cfg.scheduler.workers == 0 || cfg.scheduler.page == 0 {
            anyhow::bail!("{}: scheduler.workers and scheduler.page must be at least 1", file.display());
        }
        Ok(cfg)
    }
}
