//! `grantwatch-processor`: events and entitlements in, usage state in RocksDB, PCI updates and
//! Discover findings out. The logic is `grantwatch_core::processor::ProcessorStage`; this binary only
//! wires it to Kafka through the shared runner.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use clap::Parser;
use grantwatch_core::catalog::Catalog;
use grantwatch_core::processor::{ProcessorConfig, ProcessorInput, ProcessorOutput, ProcessorStage};
use grantwatch_state::StateRead;
use grantwatch_stream::config::{Config, Topics};
use grantwatch_stream::kafka::Emit;
use grantwatch_stream::runner::{App, RunnerConfig, serve_and_run};
use grantwatch_types::EventTime;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(version, about = "grantwatch stream processor: usage state, PCI updates and Discover findings")]
struct Cli {
    /// Configuration file (TOML); `GRANTWATCH_*` environment variables override it.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

struct ProcessorApp {
    topics: Topics,
    catalog: Arc<Catalog>,
    cfg: ProcessorConfig,
}

impl App for ProcessorApp {
    type Stage = ProcessorStage;

    fn name(&self) -> &'static str {
        "grantwatch-processor"
    }

    fn inputs(&self) -> Vec<String> {
        vec![self.topics.events.name.clone(), self.topics.entitlements.name.clone()]
    }

    fn open_stage(&self, state: &dyn StateRead) -> Result<ProcessorStage, grantwatch_core::stage::StageError> {
        ProcessorStage::open(self.catalog.clone(), self.cfg.clone(), state)
    }

    fn decode(&self, input: usize, _key: Option<&[u8]>, payload: &[u8]) -> Result<ProcessorInput, String> {
        if input == 0 {
            serde_json::from_slice(payload)
                .map(|e| ProcessorInput::Event(Box::new(e)))
                .map_err(|e| format!("not an event: {e}"))
        } else {
            serde_json::from_slice(payload)
                .map(|r| ProcessorInput::Entitlements(Box::new(r)))
                .map_err(|e| format!("not an entitlements record: {e}"))
        }
    }

    fn event_time(&self, input: &ProcessorInput) -> Option<EventTime> {
        match input {
            ProcessorInput::Event(e) => Some(e.time),
            ProcessorInput::Entitlements(_) => None,
        }
    }

    fn encode(&self, out: ProcessorOutput, emits: &mut Vec<Emit>) {
        let (topic, key, payload, kind) = match out {
            ProcessorOutput::Pci(u) => (&self.topics.pci.name, u.arn.clone(), serde_json::to_vec(&u), "pci"),
            ProcessorOutput::Finding(f) => {
                (&self.topics.findings.name, f.actor.user.uid.clone(), serde_json::to_vec(&f), "finding")
            }
        };
        match payload {
            Ok(payload) => emits.push(Emit { topic: topic.clone(), key: Some(key.into_bytes()), payload, kind }),
            Err(e) => tracing::error!(error = %e, "cannot serialize an output"),
        }
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    let cfg = Config::load(cli.config.as_deref())?;
    tracing::info!(config = ?cfg.processor, kafka = ?cfg.kafka, "starting grantwatch-processor");
    let p = &cfg.processor;
    let app = ProcessorApp {
        topics: cfg.topics.clone(),
        catalog: Arc::new(Catalog::aws()?),
        cfg: ProcessorConfig {
            window_ms: p.window_ms(),
            lookback_days: p.lookback_days,
            over_provisioned_ratio: p.over_provisioned_ratio,
            emit_windows: true,
        },
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
        max_record_bytes: grantwatch_stream::kafka::MAX_RECORD_BYTES,
    };
    Ok(serve_and_run(app, runner_cfg, &p.http_listen)?)
}

fn main() -> ExitCode {
    grantwatch_stream::init_tracing();
    grantwatch_stream::exit_code(run())
}
