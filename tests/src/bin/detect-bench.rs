#![allow(clippy::print_stdout)]
//! Detector benchmark: events/s of the detection stage with every analytic on (the shipped rules
//! directory, all Sigma rules, the trained models), over a scenario's CloudTrail, on one core, with its
//! state in RocksDB and committed as the services commit.
//!
//! `detect-bench --scenario DIR --models DIR [--rules DIR]` (`scripts/bench-detect` builds and runs it).
//! Events are normalized into memory first, so the figure is the stage's alone.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use grantwatch_core::catalog::Catalog;
use grantwatch_core::cloudtrail::Normalizer;
use grantwatch_core::stage::{Cx, Stage};
use grantwatch_detect::load::load_detection;
use grantwatch_detect::stage::{DetectInput, DetectStage};
use grantwatch_state::{StateStore, WriteBatch};
use grantwatch_state_rocks::RocksStore;
use grantwatch_types::Event;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    scenario: PathBuf,
    #[arg(long)]
    models: PathBuf,
    #[arg(long, default_value = "rules")]
    rules: PathBuf,
    /// Commit (snapshot + RocksDB write) every this many events, as a service commits its batches.
    #[arg(long, default_value_t = 20_000)]
    commit_every: usize,
}

fn main() -> Result<()> {
    let a = Args::parse();
    let catalog = Arc::new(Catalog::aws()?);
    let (detection, loaded) = load_detection(catalog, &a.rules, Some(&a.models))?;
    let normalizer = Normalizer::aws()?;
    let mut events: Vec<Event> = Vec::new();
    for part in ["history", "detect"] {
        let files = grantwatch_files::discover(&[a.scenario.join(part)])?.files;
        let mut buf = grantwatch_files::ReadBuffers::default();
        for f in &files {
            grantwatch_files::read_records(f, &mut buf, &mut |item| {
                if let grantwatch_files::Item::Record(rec) = item
                    && let Ok(ev) = normalizer.normalize(rec.raw)
                {
                    events.push(ev);
                }
            })
            .with_context(|| format!("reading {}", f.location))?;
        }
    }
    let inputs: Vec<DetectInput> = events.into_iter().map(|e| DetectInput::Event(Box::new(e))).collect();
    let dir = tempfile::tempdir()?;
    let store = RocksStore::open(dir.path())?;
    let mut stage = DetectStage::open(Arc::new(detection), &store)?;
    let mut out = Vec::new();
    let mut alerts = 0usize;
    let started = Instant::now();
    let mut watermark = i64::MIN;
    for (i, input) in inputs.iter().enumerate() {
        stage.process(input, &mut Cx { state: &store, out: &mut out })?;
        if let DetectInput::Event(e) = input
            && e.time.millis() > watermark
        {
            watermark = e.time.millis();
            stage.on_watermark(e.time, &mut Cx { state: &store, out: &mut out })?;
        }
        if (i + 1) % a.commit_every == 0 {
            let mut batch = WriteBatch::new();
            stage.snapshot(&mut batch)?;
            store.write(batch)?;
            stage.committed();
        }
        alerts += out.len();
        out.clear();
    }
    let secs = started.elapsed().as_secs_f64();
    let c = &stage.counts;
    println!(
        "detect-bench: {} events in {secs:.2} s = {:.0} events/s on one core; {} Sigma rules, model: {}; \
         {alerts} alerts, {} identity-hours scored, {} repeats grouped, {} established suppressed; state {} MiB",
        inputs.len(),
        inputs.len() as f64 / secs,
        loaded.sigma_rules,
        loaded.model.unwrap_or_default(),
        c.windows_scored,
        c.repeats,
        c.established,
        store.disk_bytes() / (1 << 20)
    );
    Ok(())
}
