//! `grantwatch-detector`: events and PCI updates in, alerts (OCSF Detection Findings) out. The logic
//! is `grantwatch_detect::stage::DetectStage`; this binary wires it to Kafka through the runtime's
//! runner (`grantwatch_runtime::kafka::apps::DetectorApp`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use grantwatch_core::catalog::Catalog;
use grantwatch_detect::load::load_detection;
use grantwatch_runtime::kafka::apps::DetectorApp;
use grantwatch_runtime::kafka::config::Config;
use grantwatch_runtime::kafka::runner::{RunnerConfig, serve_and_run};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    version,
    about = "grantwatch detector: Sigma and built-in rules, anomalies and models over events, alerts out"
)]
struct Cli {
    /// Configuration file (TOML); `GRANTWATCH_*` environment variables override it.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    let cfg = Config::load(cli.config.as_deref())?;
    let d = &cfg.detector;
    let catalog = Arc::new(Catalog::all_clouds().context("loading the action catalog")?);
    let models = (!d.models_dir.as_os_str().is_empty()).then_some(d.models_dir.as_path());
    let (detection, loaded) = load_detection(catalog, &d.rules_dir, models).with_context(|| {
        format!("configuration: detector.rules_dir / detector.models_dir ({})", d.rules_dir.display())
    })?;
    for e in &loaded.sigma_errors {
        tracing::warn!(error = %e, "Sigma rule skipped");
    }
    tracing::info!(sigma_rules = loaded.sigma_rules, model = ?loaded.model, "detection loaded");
    tracing::info!(config = ?d, kafka = ?cfg.kafka, "starting grantwatch-detector");
    let runner_cfg = RunnerConfig {
        kafka: cfg.kafka.clone(),
        group_id: d.group_id.clone(),
        instance_id: d.instance_id.clone(),
        state_dir: d.state_dir.clone(),
        max_out_of_orderness_ms: d.max_out_of_orderness_ms(),
        commit_interval: Duration::from_millis(d.commit_interval_ms),
        late_topic: cfg.topics.late.name.clone(),
        dlq_topic: cfg.topics.dlq.name.clone(),
        max_pending: 100_000,
        max_record_bytes: grantwatch_runtime::kafka::client::MAX_RECORD_BYTES,
        changelog_topic: d.changelog.then(|| cfg.topics.detector_changelog.name.clone()),
    };
    let app = DetectorApp { topics: cfg.topics.clone(), detection: Arc::new(detection), await_pci: d.await_pci };
    Ok(serve_and_run(app, runner_cfg, "detector.http_listen", &d.http_listen)?)
}

fn main() -> ExitCode {
    grantwatch_runtime::kafka::init_tracing();
    grantwatch_runtime::kafka::exit_code(run())
}
