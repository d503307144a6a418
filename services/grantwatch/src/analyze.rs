//! `grantwatch analyze`: IAM snapshots and CloudTrail files in, findings out.
//!
//! The runner, step by step:
//! 1. Parse the IAM snapshots and evaluate every identity's effective permissions.
//! 2. Find the CloudTrail files; skip those the state already holds (same path and fingerprint).
//! 3. Read and normalize files in parallel (rayon workers); each worker accounts its events itself in
//!    one of [`SHARDS`] usage stages chosen by identity, so every copy of an event meets the same stage,
//!    which deduplicates it.
//! 4. Whenever the stages' pending writes pass a budget, and at the end, write them in one atomic
//!    batch together with the "file ingested" markers of the files whose every record they include.
//!    A killed run therefore restarts cleanly: finished files are skipped, the others are read again,
//!    and the stage's idempotent merges and event-id dedup make the re-read count once.
//! 5. Compute findings as of the given time (default: the latest event time in state) and write them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use anyhow::{Context, Result, bail};
use grantwatch_core::catalog::Catalog;
use grantwatch_core::cloudtrail::{ActionMap, NormalizeError, Normalizer};
use grantwatch_core::findings::{AccountRollup, FindingsConfig, for_each_finding};
use grantwatch_core::iam::IamSnapshot;
use grantwatch_core::policy::{IdentityGrants, evaluate};
use grantwatch_core::processor::ProcessorConfig;
use grantwatch_core::stage::{Cx, Stage};
use grantwatch_core::usage::{Observed, UsageStage, all_events_span};
use grantwatch_detect::stage::Detection;
use grantwatch_files::{Format, QuarantineWriter, SourceFile};
use grantwatch_state::{StateRead, StateStore, Table, WriteBatch};
use grantwatch_state_rocks::RocksStore;
use grantwatch_types::{
    AccountsReport, ActionMapping, Event, EventTime, IdentityFinding, IngestReport, Quarantined, UnmappedCall,
};
use rayon::prelude::*;
use rustc_hash::FxHashMap;

use crate::detect::{PassOptions, PassOutcome, run_pass};
use crate::output::Outputs;

/// Options of one `analyze` run.
#[derive(Debug, Clone)]
pub struct AnalyzeOptions {
    pub iam: Vec<PathBuf>,
    pub cloudtrail: Vec<PathBuf>,
    pub as_of: Option<EventTime>,
    pub lookback_days: u32,
    /// Keep usage state here between runs; a temporary directory when absent.
    pub state: Option<PathBuf>,
    pub out: PathBuf,
    pub over_provisioned_ratio: f64,
    /// Pending usage writes that trigger a state flush (bounds memory).
    pub flush_budget: usize,
    pub threads: Option<usize>,
    pub progress: bool,
    /// Fault injection for the crash-restart test: abort the process (as `kill -9` would end it) right
    /// after this many state flushes.
    pub crash_after_flushes: Option<u32>,
    /// Detection (rules, anomalies, models) into `alerts.jsonl`; `None`: no detection pass.
    pub detection: Option<Arc<Detection>>,
}

impl AnalyzeOptions {
    pub fn new(out: PathBuf) -> Self {
        Self {
            iam: Vec::new(),
            cloudtrail: Vec::new(),
            as_of: None,
            lookback_days: 90,
            state: None,
            out,
            over_provisioned_ratio: 0.10,
            flush_budget: 250_000,
            threads: None,
            progress: true,
            crash_after_flushes: None,
            detection: None,
        }
    }
}

/// What a run produced, for the summary and for tests.
#[derive(Debug)]
pub struct AnalyzeOutcome {
    pub ingest: IngestReport,
    pub accounts: AccountsReport,
    /// The identities with the highest PCI (at most 20), for the summary table.
    pub top: Vec<IdentityFinding>,
    pub identities: usize,
    pub outputs: Outputs,
    pub elapsed: std::time::Duration,
    pub peak_rss: Option<u64>,
    /// The detection pass, when it ran; alerts are in `outputs.alerts`.
    pub detection: Option<PassOutcome>,
}

impl AnalyzeOutcome {
    pub fn quarantined_anything(&self) -> bool {
        self.ingest.files_quarantined > 0 || self.ingest.records_quarantined > 0
    }
}

const QUARANTINE_LIST_CAP: usize = 1000;

/// How far out of event-time order the detection pass accepts events before it counts them late: the
/// services' default, and more than CloudTrail's ~15 minutes of delivery spread between files.
pub const DETECT_OUT_OF_ORDERNESS_MS: i64 = 20 * 60 * 1000;

/// Usage is accounted in this many independent stages, chosen by a hash of the identity. Every event
/// of an identity — and so every copy of one event — lands in the same shard, so a shard deduplicates
/// on its own and reader threads account in parallel with little contention.
const SHARDS: usize = 16;

/// Events a reader normalizes before handing them to the shards (bounds memory on huge JSON Lines files).
const CHUNK: usize = 1024;

#[derive(Default)]
struct Aggregated {
    counted: u64,
    duplicates: u64,
    no_permission: u64,
    unmapped: FxHashMap<(String, String), u64>,
}

impl Aggregated {
    fn absorb(&mut self, other: Aggregated) {
        self.counted += other.counted;
        self.duplicates += other.duplicates;
        self.no_permission += other.no_permission;
        for (k, v) in other.unmapped {
            *self.unmapped.entry(k).or_insert(0) += v;
        }
    }
}

struct Shard {
    stage: UsageStage,
    tally: Aggregated,
    out: Vec<Observed>,
}

/// The sharded usage stages and the flush protocol.
///
/// A flush first takes the list of finished files, then snapshots every shard into one batch. A file is
/// put on that list only after all its events went into the shards, so every file a batch marks as
/// ingested has all its events in that batch or an earlier one.
struct Shards<'a> {
    shards: Vec<Mutex<Shard>>,
    done: Mutex<Vec<FileDone>>,
    pending: AtomicUsize,
    flushing: Mutex<u32>,
    store: &'a RocksStore,
    budget: usize,
    crash_after: Option<u32>,
}

impl<'a> Shards<'a> {
    fn new(n: usize, store: &'a RocksStore, budget: usize, crash_after: Option<u32>) -> Result<Self> {
        let mut shards = Vec::with_capacity(n);
        for _ in 0..n {
            let stage = UsageStage::new(store).context("reading usage state")?;
            shards.push(Mutex::new(Shard { stage, tally: Aggregated::default(), out: Vec::new() }));
        }
        Ok(Self {
            shards,
            done: Mutex::new(Vec::new()),
            pending: AtomicUsize::new(0),
            flushing: Mutex::new(0),
            store,
            budget: budget.max(1),
            crash_after,
        })
    }

    fn shard_of(&self, identity: &str) -> usize {
        let mut h = rustc_hash::FxHasher::default();
        std::hash::Hash::hash(identity, &mut h);
        (std::hash::Hasher::finish(&h) as usize) % self.shards.len()
    }

    /// Accounts a batch of events, then flushes if the pending writes passed the budget.
    fn account(&self, events: &mut Vec<Event>) -> Result<()> {
        // Group by shard without moving events: one lock per shard touched, not per event.
        let mut order: Vec<(usize, usize)> =
            events.iter().enumerate().map(|(i, ev)| (self.shard_of(&ev.actor.uid), i)).collect();
        order.sort_unstable();
        for group in order.chunk_by(|a, b| a.0 == b.0) {
            let Some(slot) = group.first().and_then(|&(s, _)| self.shards.get(s)) else { continue };
            let mut shard = slot.lock().map_err(|_| anyhow::anyhow!("a reader thread panicked"))?;
            let before = shard.stage.pending();
            let Shard { stage, tally, out } = &mut *shard;
            for ev in group.iter().filter_map(|&(_, i)| events.get(i)) {
                out.clear();
                stage.process(ev, &mut Cx { state: self.store, out })?;
                if out.first() == Some(&Observed::Duplicate) {
                    tally.duplicates += 1;
                    continue;
                }
                tally.counted += 1;
                match ev.mapping {
                    ActionMapping::NoPermission => tally.no_permission += 1,
                    ActionMapping::Unmapped => {
                        *tally.unmapped.entry((ev.api.service.clone(), ev.api.operation.clone())).or_insert(0) += 1;
                    }
                    ActionMapping::Direct | ActionMapping::Exception => {}
                }
            }
            let grown = stage.pending().saturating_sub(before);
            drop(shard);
            self.pending.fetch_add(grown, Ordering::Relaxed);
        }
        events.clear();
        if self.pending.load(Ordering::Relaxed) >= self.budget {
            // One flush at a time; a reader that finds one running goes on reading.
            if let Ok(mut flushes) = self.flushing.try_lock() {
                self.flush(&mut flushes)?;
            }
        }
        Ok(())
    }

    fn file_done(&self, done: FileDone) {
        if let Ok(mut d) = self.done.lock() {
            d.push(done);
        }
    }

    fn flush(&self, flushes: &mut u32) -> Result<()> {
        let done = std::mem::take(&mut *self.done.lock().map_err(|_| anyhow::anyhow!("a reader thread panicked"))?);
        let mut batch = WriteBatch::new();
        for slot in &self.shards {
            let mut shard = slot.lock().map_err(|_| anyhow::anyhow!("a reader thread panicked"))?;
            let pending = shard.stage.pending();
            shard.stage.snapshot(&mut batch)?;
            drop(shard);
            // Saturating: a reader may have counted its growth after this shard was snapshotted.
            let _ =
                self.pending.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| Some(p.saturating_sub(pending)));
        }
        for f in done {
            if !f.failed {
                batch.put(Table::Meta, file_meta_key(&f.path), f.fingerprint.into_bytes());
            }
            tracing::debug!(file = %f.path, records = f.records, "File accounted.");
        }
        // Readers keep accounting while the batch is written; the stages hold its event ids in flight
        // until then, so a copy of one of those events arriving meanwhile is still a duplicate.
        let t0 = std::time::Instant::now();
        self.store.write(batch).context("writing usage state")?;
        for slot in &self.shards {
            slot.lock().map_err(|_| anyhow::anyhow!("a reader thread panicked"))?.stage.committed();
        }
        tracing::debug!(write_ms = t0.elapsed().as_millis() as u64, "State flushed.");
        *flushes += 1;
        if self.crash_after == Some(*flushes) {
            // Fault injection for the crash-restart test: end like `kill -9` right after a commit.
            std::process::abort();
        }
        Ok(())
    }

    /// The final flush; returns the tallies of all shards.
    fn finish(self) -> Result<Aggregated> {
        let mut flushes = self.flushing.lock().map_err(|_| anyhow::anyhow!("a reader thread panicked"))?;
        self.flush(&mut flushes)?;
        drop(flushes);
        let mut total = Aggregated::default();
        for slot in self.shards {
            let shard = slot.into_inner().map_err(|_| anyhow::anyhow!("a reader thread panicked"))?;
            total.absorb(shard.tally);
        }
        Ok(total)
    }
}

struct FileDone {
    path: String,
    fingerprint: String,
    records: u64,
    /// The file could not be read to its end: it is not marked ingested.
    failed: bool,
}

#[derive(Default)]
struct Tally {
    records: AtomicU64,
    records_quarantined: AtomicU64,
    non_api: AtomicU64,
    files_quarantined: AtomicU64,
}

fn file_meta_key(path: &str) -> Vec<u8> {
    let mut k = b"file\0".to_vec();
    k.extend_from_slice(path.as_bytes());
    k
}

/// Runs `analyze`.
pub fn run(opts: &AnalyzeOptions) -> Result<AnalyzeOutcome> {
    let started = std::time::Instant::now();
    std::fs::create_dir_all(&opts.out).with_context(|| format!("creating output dir {}", opts.out.display()))?;
    let catalog = Arc::new(Catalog::aws().context("loading the AWS action catalog")?);
    let normalizer =
        Normalizer::new(ActionMap::new(Arc::clone(&catalog)).context("loading the CloudTrail action map")?);

    // 1. Entitlements.
    let (grants, iam_files) = load_grants(&opts.iam, &catalog)?;

    // 2. State and inputs.
    let temp_state;
    let state_dir: &Path = match &opts.state {
        Some(d) => d,
        None => {
            temp_state = tempfile::Builder::new()
                .prefix("grantwatch-state-")
                .tempdir()
                .context("creating a temporary state dir")?;
            temp_state.path()
        }
    };
    let store = RocksStore::open(state_dir).with_context(|| format!("opening state dir {}", state_dir.display()))?;
    let files = grantwatch_files::discover(&opts.cloudtrail).context("finding CloudTrail files")?.files;
    tracing::info!(files = files.len(), elapsed_ms = started.elapsed().as_millis() as u64, "CloudTrail files found.");
    let quarantine_path = opts.out.join("quarantine.jsonl");
    let quarantine = QuarantineWriter::new(quarantine_path.clone());

    let mut report =
        IngestReport { iam_snapshots_read: iam_files, identities: grants.len() as u64, ..Default::default() };
    let mut todo: Vec<SourceFile> = Vec::with_capacity(files.len());
    for f in files {
        // Only a path the state already knows costs an extra read for its fingerprint; new files are
        // fingerprinted during their one read.
        let key = file_meta_key(&f.path.display().to_string());
        if let Some(known) = store.get(Table::Meta, &key)?
            && let Ok(fp) = grantwatch_files::fingerprint_file(&f)
            && known == fp.to_string().as_bytes()
        {
            report.files_already_ingested += 1;
            continue;
        }
        todo.push(f);
    }

    // 3 + 4. Read, normalize and account in parallel; flush atomically.
    let total_bytes: u64 = todo.iter().map(|f| f.size).sum();
    let bar = crate::output::progress_bar(opts.progress, total_bytes);
    let tally = Tally::default();
    let quarantined_list = Mutex::new(Vec::<Quarantined>::new());
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads.unwrap_or(0))
        .thread_name(|i| format!("gw-read-{i}"))
        .build()
        .context("starting reader threads")?;
    let shards = Shards::new(SHARDS, &store, opts.flush_budget, opts.crash_after_flushes)?;
    let first_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let read_cx = ReadCx {
        normalizer: &normalizer,
        quarantine: &quarantine,
        tally: &tally,
        quarantined_list: &quarantined_list,
        shards: &shards,
    };
    pool.install(|| {
        todo.par_iter().for_each_init(Vec::new, |buf, file| {
            let r = read_one(file, &read_cx, buf);
            if let Err(e) = r
                && let Ok(mut slot) = first_error.lock()
            {
                slot.get_or_insert(e);
            }
            bar.inc(file.size);
        });
    });
    if let Some(e) = first_error.into_inner().ok().flatten() {
        return Err(e);
    }
    let agg = shards.finish()?;
    bar.finish_and_clear();
    tracing::info!(rocksdb_memory_bytes = store.memory_bytes(), "Ingest finished.");

    report.files_read = todo.len() as u64 - tally.files_quarantined.load(Ordering::Relaxed);
    report.files_quarantined = tally.files_quarantined.load(Ordering::Relaxed);
    report.records_read = tally.records.load(Ordering::Relaxed);
    report.records_quarantined = tally.records_quarantined.load(Ordering::Relaxed);
    report.non_api_records = tally.non_api.load(Ordering::Relaxed);
    report.duplicates = agg.duplicates;
    report.events_counted = agg.counted;
    report.no_permission_events = agg.no_permission;
    report.unmapped_events = agg.unmapped.values().sum();
    let mut unmapped: Vec<UnmappedCall> = agg
        .unmapped
        .into_iter()
        .map(|((service, operation), count)| UnmappedCall { service, operation, count })
        .collect();
    unmapped.sort_by(|a, b| {
        b.count.cmp(&a.count).then_with(|| (&a.service, &a.operation).cmp(&(&b.service, &b.operation)))
    });
    report.unmapped_calls = unmapped;
    let mut q = quarantined_list.into_inner().unwrap_or_default();
    q.sort_by(|a, b| (&a.file, a.record).cmp(&(&b.file, b.record)));
    report.quarantined = q;
    let qc = quarantine.counts();
    report.quarantine_file = (qc.files + qc.records > 0).then(|| quarantine_path.display().to_string());

    // 5. Findings.
    let span = all_events_span(&store)?;
    report.first_event = span.map(|s| EventTime(s.first_ms));
    report.last_event = span.map(|s| EventTime(s.last_ms));
    let as_of = match (opts.as_of, span) {
        (Some(t), _) => t,
        (None, Some(s)) => EventTime(s.last_ms),
        (None, None) => bail!("no --as-of given and no events in state to take the latest event time from"),
    };
    let mut cfg = FindingsConfig::new(as_of);
    cfg.lookback_days = opts.lookback_days;
    cfg.over_provisioned_ratio = opts.over_provisioned_ratio;
    let (accounts, top, identities, mut outputs) = write_findings(&catalog, &cfg, &grants, &store, &opts.out, &report)?;

    // 6. Detection, in event-time order, over the same files.
    let detection = match &opts.detection {
        Some(det) => {
            let alerts_path = opts.out.join("alerts.jsonl");
            let pass = run_pass(&PassOptions {
                catalog: catalog.clone(),
                detection: det.clone(),
                cloudtrail: &opts.cloudtrail,
                grants: &grants,
                processor: ProcessorConfig {
                    lookback_days: opts.lookback_days,
                    over_provisioned_ratio: opts.over_provisioned_ratio,
                    ..ProcessorConfig::default()
                },
                max_out_of_orderness_ms: DETECT_OUT_OF_ORDERNESS_MS,
                collect_windows: false,
                alerts_path: Some(&alerts_path),
            })?;
            outputs.alerts = Some(alerts_path);
            Some(pass)
        }
        None => None,
    };
    Ok(AnalyzeOutcome {
        ingest: report,
        accounts,
        top,
        identities,
        outputs,
        elapsed: started.elapsed(),
        peak_rss: crate::rss::peak_rss_bytes(),
        detection,
    })
}

fn write_findings(
    catalog: &Catalog,
    cfg: &FindingsConfig,
    grants: &[IdentityGrants],
    store: &RocksStore,
    out: &Path,
    report: &IngestReport,
) -> Result<(AccountsReport, Vec<IdentityFinding>, usize, Outputs)> {
    let outputs = Outputs::new(out);
    let mut identities_w = outputs.identities_writer()?;
    let mut rollup = AccountRollup::default();
    let mut top: Vec<IdentityFinding> = Vec::new();
    let mut n = 0usize;
    let mut write_err = None;
    for_each_finding(catalog, cfg, grants, store, &mut |f| {
        n += 1;
        rollup.add(&f);
        if write_err.is_none()
            && let Err(e) = identities_w.write(&f)
        {
            write_err = Some(e);
        }
        crate::output::keep_top(&mut top, f, 20);
    })?;
    if let Some(e) = write_err {
        return Err(e);
    }
    identities_w.finish()?;
    let accounts = rollup.finish(cfg);
    outputs.write_json(&outputs.accounts, &accounts)?;
    outputs.write_json(&outputs.ingest_report, report)?;
    Ok((accounts, top, n, outputs))
}

/// What a reader needs besides the file: shared by every file of a run.
struct ReadCx<'a> {
    normalizer: &'a Normalizer,
    quarantine: &'a QuarantineWriter,
    tally: &'a Tally,
    quarantined_list: &'a Mutex<Vec<Quarantined>>,
    shards: &'a Shards<'a>,
}

impl ReadCx<'_> {
    /// Normalizes one record into `events`, or skips or quarantines it.
    fn record(&self, file: &SourceFile, name: &str, index: u64, raw: &[u8], events: &mut Vec<Event>) {
        match self.normalizer.normalize(raw) {
            Ok(ev) => events.push(ev),
            Err(NormalizeError::NotApiActivity(kind)) => {
                tracing::debug!(file = %name, record = index, event_type = %kind, "Non-API record skipped.");
                self.tally.non_api.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                let reason = e.to_string();
                tracing::warn!(file = %name, record = index, error = %reason, "Record quarantined.");
                if let Err(e) = self.quarantine.record(&file.path, index, &reason, raw) {
                    tracing::error!(file = %name, error = %e, "Could not write the quarantine file.");
                }
                self.tally.records_quarantined.fetch_add(1, Ordering::Relaxed);
                self.note(name, Some(index), reason);
            }
        }
    }

    fn note(&self, name: &str, record: Option<u64>, reason: String) {
        if let Ok(mut l) = self.quarantined_list.lock()
            && l.len() < QUARANTINE_LIST_CAP
        {
            l.push(Quarantined { file: name.to_string(), record, reason });
        }
    }

    /// Normalizes and accounts a chunk of raw records of one file.
    fn chunk(&self, file: &SourceFile, name: &str, chunk: &RawChunk) -> Result<()> {
        let mut events = Vec::with_capacity(chunk.spans.len());
        for (index, range) in &chunk.spans {
            if let Some(raw) = chunk.data.get(range.clone()) {
                self.record(file, name, *index, raw, &mut events);
            }
        }
        self.shards.account(&mut events)
    }
}

/// Raw records copied out of a file's read buffer, so that other threads can normalize them.
#[derive(Default)]
struct RawChunk {
    data: Vec<u8>,
    spans: Vec<(u64, std::ops::Range<usize>)>,
}

impl RawChunk {
    fn push(&mut self, index: u64, raw: &[u8]) {
        let start = self.data.len();
        self.data.extend_from_slice(raw);
        self.spans.push((index, start..self.data.len()));
    }
}

/// Reads IAM snapshots (files or directories) and evaluates every identity's effective permissions.
/// Returns them with the number of snapshot files read.
pub fn load_grants(iam: &[PathBuf], catalog: &Catalog) -> Result<(Vec<IdentityGrants>, u64)> {
    let mut snapshot = IamSnapshot::default();
    let mut iam_files = 0u64;
    for f in grantwatch_files::discover(iam).context("finding IAM snapshot files")?.files {
        let bytes = std::fs::read(&f.path).with_context(|| format!("reading {}", f.path.display()))?;
        let doc = grantwatch_core::iam::parse_iam_json(&bytes, &f.path.display().to_string())
            .with_context(|| format!("parsing IAM snapshot {}", f.path.display()))?;
        snapshot.merge(doc);
        iam_files += 1;
    }
    for w in &snapshot.warnings {
        tracing::warn!(warning = %w, "IAM snapshot issue.");
    }
    let grants = evaluate(&snapshot, catalog);
    tracing::info!(identities = grants.len(), files = iam_files, "Entitlements evaluated.");
    Ok((grants, iam_files))
}

/// Chunks of one JSON Lines file being normalized by other threads at once, at most.
const MAX_IN_FLIGHT: usize = 4;

/// Reads one file, normalizes its records and accounts them; then records the file as done.
///
/// A CloudTrail S3 file is small, and the files themselves spread over the threads. A JSON Lines file
/// can hold millions of records: its reader only splits lines and hands chunks of them to the other
/// threads, so one big file uses every core too.
fn read_one(file: &SourceFile, cx: &ReadCx<'_>, buf: &mut Vec<u8>) -> Result<()> {
    let name = file.path.display().to_string();
    let mut records = 0u64;
    let failure: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let fail = |e: anyhow::Error| {
        if let Ok(mut slot) = failure.lock() {
            slot.get_or_insert(e);
        }
    };
    let result = if file.format == Format::JsonLines {
        let in_flight = AtomicUsize::new(0);
        rayon::scope(|scope| {
            let mut chunk = RawChunk::default();
            let result = grantwatch_files::read_records(file, buf, &mut |rec| {
                records += 1;
                chunk.push(rec.index, rec.raw);
                if chunk.spans.len() < CHUNK {
                    return;
                }
                let full = std::mem::take(&mut chunk);
                if in_flight.load(Ordering::Acquire) < MAX_IN_FLIGHT {
                    in_flight.fetch_add(1, Ordering::AcqRel);
                    let (name, in_flight, fail) = (&name, &in_flight, &fail);
                    scope.spawn(move |_| {
                        if let Err(e) = cx.chunk(file, name, &full) {
                            fail(e);
                        }
                        in_flight.fetch_sub(1, Ordering::AcqRel);
                    });
                } else if let Err(e) = cx.chunk(file, &name, &full) {
                    // Enough chunks are in flight: work on this one here rather than wait, which
                    // could leave every thread waiting.
                    fail(e);
                }
            });
            if let Err(e) = cx.chunk(file, &name, &chunk) {
                fail(e);
            }
            result
        })
    } else {
        let mut events = Vec::with_capacity(CHUNK);
        let result = grantwatch_files::read_records(file, buf, &mut |rec| {
            records += 1;
            cx.record(file, &name, rec.index, rec.raw, &mut events);
        });
        if let Err(e) = cx.shards.account(&mut events) {
            fail(e);
        }
        result
    };
    if let Some(e) = failure.into_inner().ok().flatten() {
        return Err(e);
    }
    cx.tally.records.fetch_add(records, Ordering::Relaxed);
    let (fingerprint, failed) = match result {
        Ok(summary) => (summary.fingerprint.to_string(), false),
        Err(e) => {
            let reason = e.to_string();
            tracing::warn!(file = %name, error = %reason, records_before_error = records, "File quarantined.");
            if let Err(e) = cx.quarantine.file(&file.path, &reason) {
                tracing::error!(file = %name, error = %e, "Could not write the quarantine file.");
            }
            cx.tally.files_quarantined.fetch_add(1, Ordering::Relaxed);
            cx.note(&name, None, reason);
            (String::new(), true)
        }
    };
    cx.shards.file_done(FileDone { path: name, fingerprint, records, failed });
    Ok(())
}
