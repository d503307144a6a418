//! `grantwatch-detector`: events and PCI updates in, alerts (OCSF Detection Findings) out. The logic
//! is `grantwatch_detect::stage::DetectStage`; this binary wires it to Kafka through the shared runner.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use grantwatch_core::catalog::Catalog;
use grantwatch_detect::load::load_detection;
use grantwatch_detect::stage::{DetectInput, DetectStage, Detection};
use grantwatch_state::StateRead;
use grantwatch_stream::config::{Config, Topics};
use grantwatch_stream::kafka::Emit;
use grantwatch_stream::runner::{App, RunnerConfig, serve_and_run};
use grantwatch_types::{DetectionFinding, EventTime};

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

struct DetectorApp {
    topics: Topics,
    detection: Arc<Detection>,
}

impl App for DetectorApp {
    type Stage = DetectStage;

    fn name(&self) -> &'static str {
        "grantwatch-detector"
    }

    fn inputs(&self) -> Vec<String> {
        vec![self.topics.events.name.clone(), self.topics.pci.name.clone()]
    }

    fn open_stage(&self, state: &dyn StateRead) -> Result<DetectStage, grantwatch_core::stage::StageError> {
        DetectStage::open(self.detection.clone(), state)
    }

    fn decode(&self, input: usize, _key: Option<&[u8]>, payload: &[u8]) -> Result<DetectInput, String> {
        if input == 0 {
            serde_json::from_slice(payload)
                .map(|e| DetectInput::Event(Box::new(e)))
                .map_err(|e| format!("not an event: {e}"))
        } else {
            serde_json::from_slice(payload)
                .map(|u| DetectInput::Pci(Box::new(u)))
                .map_err(|e| format!("not a PCI update: {e}"))
        }
    }

    fn event_time(&self, input: &DetectInput) -> Option<EventTime> {
        match input {
            DetectInput::Event(e) => Some(e.time),
            // PCI updates are stamped with the window boundary they close, which is behind the events
            // that caused them: they must not hold the watermark back or move it.
            DetectInput::Pci(_) => None,
        }
    }

    fn encode(&self, out: DetectionFinding, emits: &mut Vec<Emit>) {
        match serde_json::to_vec(&out) {
            Ok(payload) => emits.push(Emit {
                topic: self.topics.alerts.name.clone(),
                key: Some(out.actor.user.uid.into_bytes()),
                payload,
                kind: "alert",
            }),
            Err(e) => tracing::error!(error = %e, "cannot serialize an alert"),
        }
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    let cfg = Config::load(cli.config.as_deref())?;
    let d = &cfg.detector;
    let catalog = Arc::new(Catalog::aws().context("loading the action catalog")?);
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
        max_record_bytes: grantwatch_stream::kafka::MAX_RECORD_BYTES,
    };
    let app = DetectorApp { topics: cfg.topics.clone(), detection: Arc::new(detection) };
    Ok(serve_and_run(app, runner_cfg, &d.http_listen)?)
}

fn main() -> ExitCode {
    grantwatch_stream::init_tracing();
    grantwatch_stream::exit_code(run())
}
