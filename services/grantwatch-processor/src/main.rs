//! `grantwatch-processor`: events and entitlements in, usage state in RocksDB, PCI updates and
//! Discover findings out. The logic is `grantwatch_core::processor::ProcessorStage`; this binary only
//! wires it to Kafka through the runtime's runner
//! (`grantwatch_runtime::kafka::apps::ProcessorApp`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use grantwatch_core::catalog::Catalog;
use grantwatch_core::org::Organization;
use grantwatch_core::processor::ProcessorConfig;
use grantwatch_runtime::kafka::apps::ProcessorApp;
use grantwatch_runtime::kafka::config::Config;
use grantwatch_runtime::kafka::runner::{RunnerConfig, serve_and_run};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(version, about = "grantwatch stream processor: usage state, PCI updates and Discover findings")]
struct Cli {
    /// Configuration file (TOML); `GRANTWATCH_*` environment variables override it.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    let cfg = Config::load(cli.config.as_deref())?;
    tracing::info!(config = ?cfg.processor, kafka = ?cfg.kafka, "starting grantwatch-processor");
    let p = &cfg.processor;
    let organization = match &p.organization {
        Some(file) => {
            let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
            Some(Arc::new(Organization::parse(&text, &file.display().to_string())?))
        }
        None => None,
    };
    let app = ProcessorApp {
        topics: cfg.topics.clone(),
        catalog: Arc::new(Catalog::all_clouds()?),
        cfg: ProcessorConfig {
            window_ms: p.window_ms(),
            lookback_days: p.lookback_days,
            over_provisioned_ratio: p.over_provisioned_ratio,
            super_identity_share: p.super_identity_share,
            organization,
            emit_windows: true,
            propose_remediation: p.remediation_proposals,
        },
        await_entitlements: p.await_entitlements,
    };
    let runner_cfg = RunnerConfig {
        kafka: cfg.kafka.clone(),
        group_id: p.group_id.clone(),
        instance_id: p.instance_id.clone(),
        state_dir: p.state_dir.clone(),
        max_out_of_orderness_ms: p.max_out_of_orderness_ms(),
        commit_interval: Duration::from_millis(p.commit_interval_ms),
        late_topic: cfg.topics.late.name.clone(),
        dlq_topic: cfg.topics.dlq.name.clone(),
        max_pending: 200_000,
        max_record_bytes: grantwatch_runtime::kafka::client::MAX_RECORD_BYTES,
        changelog_topic: p.changelog.then(|| cfg.topics.processor_changelog.name.clone()),
    };
    Ok(serve_and_run(app, runner_cfg, "processor.http_listen", &p.http_listen)?)
}

fn main() -> ExitCode {
    grantwatch_runtime::kafka::init_tracing();
    grantwatch_runtime::kafka::exit_code(run())
}
