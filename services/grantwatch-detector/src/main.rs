//! `grantwatch-detector`: events in, alerts (OCSF Detection Findings) out. The logic is
//! `grantwatch_core::detect::DetectStage`; this binary wires it to Kafka through the shared runner.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Parser;
use grantwatch_core::detect::{BuiltinRule, DetectStage};
use grantwatch_state::StateRead;
use grantwatch_stream::config::{Config, Topics};
use grantwatch_stream::kafka::Emit;
use grantwatch_stream::runner::{App, RunnerConfig, serve_and_run};
use grantwatch_types::{DetectionFinding, Event, EventTime};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(version, about = "grantwatch detector: activity rules over events, alerts out")]
struct Cli {
    /// Configuration file (TOML); `GRANTWATCH_*` environment variables override it.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

struct DetectorApp {
    topics: Topics,
    rules: Vec<BuiltinRule>,
}

impl App for DetectorApp {
    type Stage = DetectStage;

    fn name(&self) -> &'static str {
        "grantwatch-detector"
    }

    fn inputs(&self) -> Vec<String> {
        vec![self.topics.events.name.clone()]
    }

    fn open_stage(&self, _state: &dyn StateRead) -> Result<DetectStage> {
        Ok(DetectStage::new(self.rules.clone()))
    }

    fn decode(&self, _input: usize, _key: Option<&[u8]>, payload: &[u8]) -> Result<Event, String> {
        serde_json::from_slice(payload).map_err(|e| format!("not an event: {e}"))
    }

    fn event_time(&self, input: &Event) -> Option<EventTime> {
        Some(input.time)
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
    let mut rules = Vec::new();
    for name in &d.rules {
        match BuiltinRule::ALL.iter().find(|r| r.id() == name) {
            Some(r) => rules.push(*r),
            None => {
                let known: Vec<&str> = BuiltinRule::ALL.iter().map(|r| r.id()).collect();
                bail!("configuration: detector.rules: unknown rule {name:?} (known: {})", known.join(", "))
            }
        }
    }
    tracing::info!(config = ?d, kafka = ?cfg.kafka, "starting grantwatch-detector");
    let runner_cfg = RunnerConfig {
        kafka: cfg.kafka.clone(),
        group_id: d.group_id.clone(),
        instance_id: d.instance_id.clone(),
        state_dir: d.state_dir.clone(),
        max_out_of_orderness_ms: d.max_out_of_orderness_secs * 1000,
        commit_interval: Duration::from_millis(d.commit_interval_ms),
        late_topic: cfg.topics.late.name.clone(),
        dlq_topic: cfg.topics.dlq.name.clone(),
        max_pending: 100_000,
    };
    let app = DetectorApp { topics: cfg.topics.clone(), rules };
    serve_and_run(app, runner_cfg, &d.http_listen)
}

fn main() -> ExitCode {
    grantwatch_stream::init_tracing();
    grantwatch_stream::exit_code(run())
}
