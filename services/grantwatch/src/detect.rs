//! The file runner of detection: CloudTrail files in event-time order through the same two stages the
//! services run (`ProcessorStage` for PCI updates, `DetectStage` for alerts), into `alerts.jsonl`.
//!
//! Detection needs each identity's events in time order, which the parallel usage pass of `analyze`
//! does not give. This pass reads the files oldest delivery first on one thread, normalizes them on
//! another, and releases events through a reorder buffer bounded by event time (the same
//! out-of-orderness bound the services' watermark uses): an event older than the watermark is still
//! processed, late, exactly as the detector would. Its state lives in a scratch RocksDB that starts
//! empty every run, so `alerts.jsonl` always covers the whole input (forensic replay), and `train`
//! gets its windows from the very same code.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::sync_channel;

use anyhow::{Context, Result};
use grantwatch_core::catalog::Catalog;
use grantwatch_core::cloudtrail::{ActionMap, Normalizer};
use grantwatch_core::policy::IdentityGrants;
use grantwatch_core::processor::{ProcessorConfig, ProcessorInput, ProcessorOutput, ProcessorStage};
use grantwatch_core::stage::{Cx, Stage};
use grantwatch_detect::ml::TrainingWindow;
use grantwatch_detect::stage::{DetectCounts, DetectInput, DetectStage, Detection};
use grantwatch_files::SourceFile;
use grantwatch_state::{StateStore, WriteBatch};
use grantwatch_state_rocks::RocksStore;
use grantwatch_types::{DetectionFinding, Event, EventTime};

/// Events normalized per batch handed from the reader thread to the stages.
const BATCH: usize = 4_096;
/// Pending writes of both stages that trigger a write of their state (bounds memory).
const FLUSH_PENDING: usize = 200_000;

pub struct PassOptions<'a> {
    pub catalog: Arc<Catalog>,
    pub detection: Arc<Detection>,
    pub cloudtrail: &'a [PathBuf],
    /// Entitlements, for PCI updates (empty: no permission analytics).
    pub grants: &'a [IdentityGrants],
    pub processor: ProcessorConfig,
    pub max_out_of_orderness_ms: i64,
    /// Keep every closed identity-hour window (for `grantwatch train`).
    pub collect_windows: bool,
    /// Where alerts go (JSON Lines), if anywhere.
    pub alerts_path: Option<&'a Path>,
}

#[derive(Debug, Default)]
pub struct PassOutcome {
    pub events: u64,
    pub late: u64,
    pub unreadable_records: u64,
    pub pci_updates: u64,
    /// Alerts written (incident openings and updates).
    pub alerts_written: u64,
    pub counts: DetectCounts,
    pub windows: Vec<TrainingWindow>,
    pub first_event: Option<EventTime>,
    pub last_event: Option<EventTime>,
}

/// Files by CloudTrail delivery time (`YYYYMMDDTHHMMZ`), oldest first.
type DeliveryGroups = BTreeMap<String, Vec<SourceFile>>;

/// The files of `paths` in the order detection reads them: files without a CloudTrail delivery time
/// in their name (JSON Lines exports, single files) first, in the order given; then the delivered files,
/// grouped by delivery time, oldest first.
fn read_order(paths: &[PathBuf]) -> Result<(Vec<SourceFile>, DeliveryGroups)> {
    let mut plain: Vec<SourceFile> = Vec::new();
    let mut delivered = DeliveryGroups::new();
    for path in paths {
        let found = grantwatch_files::discover(std::slice::from_ref(path)).context("finding CloudTrail files")?;
        for f in found.files {
            match grantwatch_files::delivery_time(&f.path) {
                Some(at) => delivered.entry(at).or_default().push(f),
                None if !plain.iter().any(|p| p.path == f.path) => plain.push(f),
                None => {}
            }
        }
    }
    Ok((plain, delivered))
}

/// Runs detection over `opts.cloudtrail`.
pub fn run_pass(opts: &PassOptions<'_>) -> Result<PassOutcome> {
    let (plain, delivered) = read_order(opts.cloudtrail)?;
    let normalizer =
        Normalizer::new(ActionMap::new(Arc::clone(&opts.catalog)).context("loading the CloudTrail action map")?);
    let scratch = tempfile::Builder::new().prefix("grantwatch-detect-").tempdir().context("creating a scratch dir")?;
    let store = RocksStore::open(scratch.path()).context("opening the detection scratch state")?;
    let mut processor = ProcessorStage::open(opts.catalog.clone(), opts.processor.clone(), &store)?;
    let mut detect = DetectStage::open(opts.detection.clone(), &store)?;
    if opts.collect_windows {
        detect.collect_windows();
    }
    let mut alerts_out = match opts.alerts_path {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => None,
    };
    let mut outcome = PassOutcome::default();
    let mut proc_out = Vec::new();
    let mut det_out = Vec::new();
    for g in opts.grants {
        let input = ProcessorInput::Entitlements(Box::new(g.to_record(&opts.catalog)));
        processor.process(&input, &mut Cx { state: &store, out: &mut proc_out })?;
    }

    let (tx, rx) = sync_channel::<(Vec<Event>, u64)>(4);
    let reader = std::thread::Builder::new().name("gw-detect-read".into()).spawn(move || {
        let mut buf = Vec::new();
        let mut batch = Vec::with_capacity(BATCH);
        let mut unreadable = 0u64;
        // Unreadable files and records were reported (and quarantined) by the usage pass.
        let mut read = |file: &SourceFile, batch: &mut Vec<Event>, unreadable: &mut u64| {
            let _ = grantwatch_files::read_records(file, &mut buf, &mut |rec| match normalizer.normalize(rec.raw) {
                Ok(ev) => batch.push(ev),
                Err(_) => *unreadable += 1,
            });
        };
        for file in &plain {
            read(file, &mut batch, &mut unreadable);
            if batch.len() >= BATCH && tx.send((std::mem::take(&mut batch), std::mem::take(&mut unreadable))).is_err() {
                return;
            }
        }
        // Files delivered at the same time (one per account and region) cover the same minutes: read
        // together and sorted, they come out in event time.
        for group in delivered.values() {
            for file in group {
                read(file, &mut batch, &mut unreadable);
            }
            batch.sort_by_key(|e| e.time);
            if tx.send((std::mem::take(&mut batch), std::mem::take(&mut unreadable))).is_err() {
                return;
            }
        }
        let _ = tx.send((batch, unreadable));
    })?;

    let mut pending: BinaryHeap<Reverse<(i64, u64)>> = BinaryHeap::new();
    let mut parked: rustc_hash::FxHashMap<u64, Event> = rustc_hash::FxHashMap::default();
    let mut seq = 0u64;
    let mut max_seen = i64::MIN;
    let mut watermark = i64::MIN;
    let release = |ev: Event,
                   watermark: &mut i64,
                   processor: &mut ProcessorStage,
                   detect: &mut DetectStage,
                   outcome: &mut PassOutcome,
                   proc_out: &mut Vec<ProcessorOutput>,
                   det_out: &mut Vec<DetectionFinding>|
     -> Result<()> {
        let t = ev.time.millis();
        if t < *watermark {
            outcome.late += 1;
        }
        outcome.events += 1;
        outcome.first_event = Some(outcome.first_event.map_or(ev.time, |f| f.min(ev.time)));
        outcome.last_event = Some(outcome.last_event.map_or(ev.time, |l| l.max(ev.time)));
        let ev = Box::new(ev);
        let input = DetectInput::Event(ev);
        detect.process(&input, &mut Cx { state: &store, out: det_out })?;
        // Hand the same boxed event on to the processor (no copy).
        let DetectInput::Event(ev) = input else { return Ok(()) };
        processor.process(&ProcessorInput::Event(ev), &mut Cx { state: &store, out: proc_out })?;
        if t > *watermark {
            *watermark = t;
            processor.on_watermark(EventTime(t), &mut Cx { state: &store, out: proc_out })?;
            for o in proc_out.drain(..) {
                if let ProcessorOutput::Pci(u) = o {
                    outcome.pci_updates += 1;
                    detect.process(&DetectInput::Pci(u), &mut Cx { state: &store, out: det_out })?;
                }
            }
            detect.on_watermark(EventTime(t), &mut Cx { state: &store, out: det_out })?;
        }
        proc_out.clear();
        Ok(())
    };
    let flush = |processor: &mut ProcessorStage, detect: &mut DetectStage, force: bool| -> Result<()> {
        if !force && processor.pending() + detect.pending() < FLUSH_PENDING {
            return Ok(());
        }
        let mut batch = WriteBatch::new();
        processor.snapshot(&mut batch)?;
        detect.snapshot(&mut batch)?;
        store.write(batch)?;
        processor.committed();
        detect.committed();
        Ok(())
    };
    let mut write_alerts = |det_out: &mut Vec<DetectionFinding>, outcome: &mut PassOutcome| -> Result<()> {
        if let Some(w) = &mut alerts_out {
            for a in det_out.iter() {
                serde_json::to_writer(&mut *w, a)?;
                w.write_all(b"\n")?;
            }
        }
        outcome.alerts_written += det_out.len() as u64;
        det_out.clear();
        Ok(())
    };

    for (batch, unreadable) in rx {
        outcome.unreadable_records += unreadable;
        for ev in batch {
            let t = ev.time.millis();
            max_seen = max_seen.max(t);
            pending.push(Reverse((t, seq)));
            parked.insert(seq, ev);
            seq += 1;
            while let Some(Reverse((t, s))) = pending.peek().copied() {
                if t > max_seen.saturating_sub(opts.max_out_of_orderness_ms) {
                    break;
                }
                pending.pop();
                if let Some(ev) = parked.remove(&s) {
                    release(
                        ev,
                        &mut watermark,
                        &mut processor,
                        &mut detect,
                        &mut outcome,
                        &mut proc_out,
                        &mut det_out,
                    )?;
                }
            }
            write_alerts(&mut det_out, &mut outcome)?;
        }
        flush(&mut processor, &mut detect, false)?;
    }
    reader.join().map_err(|_| anyhow::anyhow!("the detection reader thread panicked"))?;
    while let Some(Reverse((_, s))) = pending.pop() {
        if let Some(ev) = parked.remove(&s) {
            release(ev, &mut watermark, &mut processor, &mut detect, &mut outcome, &mut proc_out, &mut det_out)?;
        }
    }
    // End of input: every open hour window and incident is over.
    detect.on_watermark(EventTime(i64::MAX / 4), &mut Cx { state: &store, out: &mut det_out })?;
    write_alerts(&mut det_out, &mut outcome)?;
    flush(&mut processor, &mut detect, true)?;
    if let Some(mut w) = alerts_out {
        w.flush()?;
    }
    outcome.counts = detect.counts.clone();
    outcome.windows = detect.take_windows();
    Ok(outcome)
}
