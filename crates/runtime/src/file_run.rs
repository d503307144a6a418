//! The file runner: CloudTrail files in, one read pass, every stage fed, state committed atomically.
//!
//! 1. Files are discovered and put in read order ([`crate::order`]): local paths walked, `s3://`
//!    prefixes listed (`grantwatch-s3`). Files the state already holds are skipped: a local file with
//!    the same path and content fingerprint (not even read when its size and modification time are
//!    those it had when it was read, as `make` and `rsync` judge), an S3 object with the same name,
//!    size and ETag (known from the listing, so nothing is downloaded to skip it; see
//!    [`crate::order::listed_version`]).
//! 2. Reader threads take files in that order (an S3 object's body streamed as it is read, through
//!    the same reader as a local file), decompress and split them, normalize each record once,
//!    check its time against the file's delivery ([`grantwatch_core::time_guard`]) and send the events
//!    to the coordinator through a bounded channel. A big JSON Lines file is split into chunks that
//!    other threads normalize, so one file uses every core. Bad records and files are quarantined
//!    (a copy capped per file, every one counted) and the run goes on. An S3 error that no object
//!    can get past (missing bucket, access or credentials refused) stops the run instead.
//! 3. The coordinator (the calling thread) feeds the [`Pipeline`]: reorder buffer, usage + PCI,
//!    detection. Alerts go to the caller's [`AlertSink`] as they are made.
//! 4. When the pipeline's pending writes pass the flush budget, and at the end, the coordinator writes
//!    **one batch**: the stages' state, the "file ingested" marks of the files whose every event the
//!    stages have processed, and the alert sink's committed position. A killed run restarts from there:
//!    finished files are skipped, the others are read again, and the stages' dedup makes each event
//!    count once and alert once.
//!
//! Memory is bounded by settings: the channel (chunks in flight), the reorder buffer (events), the
//! flush budget (pending writes), the per-record cap of the reader.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use grantwatch_core::catalog::Catalog;
use grantwatch_core::cloudtrail::{NormalizeError, Normalizer};
use grantwatch_core::policy::IdentityGrants;
use grantwatch_core::stage::StageError;
use grantwatch_core::time_guard::{Delivery, TimeBounds};
use grantwatch_detect::ml::TrainingWindow;
use grantwatch_detect::ondemand::OnDemandGrants;
use grantwatch_detect::stage::{DetectCounts, Detection};
use grantwatch_files::{
    FileError, FileErrorKind, Format, Input, Item, Location, QuarantineWriter, ReadOptions, SourceFile,
};
use grantwatch_s3::{S3Config, S3Error, S3Source};
use grantwatch_state::{StateError, StateStore, Table, WriteBatch};
use grantwatch_types::{DetectionFinding, Event, EventTime, Quarantined};

use crate::order::{OrderError, ReadOrder, delivery_of, listed_version};
use crate::pipeline::{Pipeline, PipelineConfig, PipelineCounts};

/// Records a reader normalizes before sending them on.
const CHUNK: usize = 1024;
/// Chunks of one JSON Lines file being normalized by other threads at once, at most.
const MAX_IN_FLIGHT: usize = 4;
/// Chunks waiting for the coordinator, at most (back-pressure on the readers).
const CHANNEL_CHUNKS: usize = 16;
/// Messages a reader gathers before handing them over (see [`Outbox`]).
const OUTBOX_MSGS: usize = 256;
/// Quarantined inputs listed in the report, at most (the counts are complete).
const QUARANTINE_LIST_CAP: usize = 1000;

/// Where alerts go. Written as they are made; made durable before the batch that records them.
pub trait AlertSink {
    fn write(&mut self, alerts: &[DetectionFinding]) -> std::io::Result<()>;
    /// Makes everything written so far durable and records in `batch` how far that is, so that a
    /// restart can drop what a crash left after it.
    fn sync(&mut self, batch: &mut WriteBatch) -> std::io::Result<()>;
}

/// A sink that drops alerts (usage only, or training).
pub struct NoAlerts;

impl AlertSink for NoAlerts {
    fn write(&mut self, _: &[DetectionFinding]) -> std::io::Result<()> {
        Ok(())
    }
    fn sync(&mut self, _: &mut WriteBatch) -> std::io::Result<()> {
        Ok(())
    }
}

/// Why a run stopped. Bad input never stops a run; these are the runner's own failures.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    // Not `#[from]`: that would also make it the `source`, and `{:#}` would print it twice.
    #[error("finding CloudTrail files: {0}")]
    Discover(OrderError),
    /// Reading from S3 failed in a way no later object can get past.
    #[error(transparent)]
    S3(S3Error),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Stage(#[from] StageError),
    #[error("writing alerts: {0}")]
    Alerts(std::io::Error),
    #[error("starting reader threads: {0}")]
    Threads(String),
    #[error("a reader thread panicked")]
    ReaderPanicked,
}

impl From<OrderError> for RunError {
    fn from(e: OrderError) -> Self {
        RunError::Discover(e)
    }
}

/// Settings of one file run.
pub struct FileRunOptions<'a> {
    /// Local paths and `s3://` prefixes.
    pub cloudtrail: &'a [Input],
    /// How to reach S3, when an input is an `s3://` prefix.
    pub s3: S3Config,
    pub catalog: Arc<Catalog>,
    pub normalizer: &'a Normalizer,
    pub detection: Option<Arc<Detection>>,
    /// Entitlements evaluated from IAM snapshots, for PCI and the permission analytics.
    pub grants: Vec<Arc<IdentityGrants>>,
    /// On-demand grants (folded from the access service's audit log), for detection.
    pub on_demand: Option<Arc<OnDemandGrants>>,
    pub pipeline: PipelineConfig,
    pub time_bounds: TimeBounds,
    pub read: ReadOptions,
    /// Pending state writes that trigger a commit (bounds memory).
    pub flush_budget: usize,
    /// Reader threads (0: one per core).
    pub threads: usize,
    /// Quarantined records copied into the quarantine file per input file, at most (all are counted).
    pub quarantine_copies_per_file: u64,
    /// Skip files the state marks as ingested with the same fingerprint.
    pub skip_ingested: bool,
    /// Fault injection for the crash-restart tests: abort (as `kill -9` would end the process) right
    /// after this many commits.
    pub crash_after_commits: Option<u32>,
    /// Told the bytes to read, then the bytes of each file as it is taken (progress bars).
    pub progress: &'a (dyn Fn(Progress) + Sync),
}

/// What the runner tells a progress display.
#[derive(Debug, Clone, Copy)]
pub enum Progress {
    /// Bytes of the files to read (after skipping those already ingested).
    Total(u64),
    /// A file of this many bytes is being read.
    File(u64),
}

impl<'a> FileRunOptions<'a> {
    /// The defaults: detection as given, no entitlements, every core, no crash hook.
    pub fn new(catalog: Arc<Catalog>, normalizer: &'a Normalizer, detection: Option<Arc<Detection>>) -> Self {
        FileRunOptions {
            cloudtrail: &[],
            s3: S3Config::default(),
            catalog,
            normalizer,
            detection,
            grants: Vec::new(),
            on_demand: None,
            pipeline: PipelineConfig::default(),
            time_bounds: TimeBounds::default(),
            read: ReadOptions::default(),
            flush_budget: 250_000,
            threads: 0,
            quarantine_copies_per_file: 100,
            skip_ingested: true,
            crash_after_commits: None,
            progress: &|_| {},
        }
    }
}

/// What a file run did.
#[derive(Debug, Default)]
pub struct FileRunOutcome {
    pub files_found: u64,
    pub files_already_ingested: u64,
    pub files_read: u64,
    pub files_quarantined: u64,
    pub records: u64,
    pub records_quarantined: u64,
    /// Records refused for their event time (also in `records_quarantined`).
    pub records_time_refused: u64,
    pub non_api_records: u64,
    /// Quarantined records not copied into the quarantine file (per-file cap).
    pub quarantine_copies_left_out: u64,
    pub quarantined: Vec<Quarantined>,
    pub counts: PipelineCounts,
    pub detect: Option<DetectCounts>,
    pub alerts_written: u64,
    pub commits: u32,
    pub windows: Vec<TrainingWindow>,
    /// Files found that could not be listed or are named in a way grantwatch cannot show (see discovery).
    pub skipped_paths: Vec<(String, String)>,
}

/// The state key marking a file ingested: its name (a path, or `s3://bucket/key`); the value is its
/// fingerprint (local) or its listed version (S3).
pub fn file_meta_key(path: &str) -> Vec<u8> {
    grantwatch_state::keys::FILE_INGESTED.key_str(path)
}

/// What the state remembers of an ingested file.
#[derive(Debug, PartialEq, Eq)]
enum IngestedMark<'v> {
    /// A local file: the fingerprint of the content read, and the file's modification time (ns since
    /// the epoch) as it was before it was read, when known.
    Local { fingerprint: grantwatch_files::Fingerprint, mtime_ns: Option<u128> },
    /// An S3 object's listed version (see [`listed_version`]).
    S3(&'v str),
}

/// The mark of a local file read to its end: `xxh3:<size>:<hash>`, then `@<mtime ns>` when known.
fn local_mark(fingerprint: grantwatch_files::Fingerprint, mtime_ns: Option<u128>) -> String {
    match mtime_ns {
        Some(ns) => format!("{fingerprint}@{ns}"),
        None => fingerprint.to_string(),
    }
}

/// A stored mark; one that does not parse is corrupt state, not a file to read again.
fn decode_ingested_mark<'v>(key: &[u8], value: &'v [u8]) -> Result<IngestedMark<'v>, StateError> {
    let corrupt = |why| grantwatch_state::keys::FILE_INGESTED.corrupt(key, why);
    let text = std::str::from_utf8(value).map_err(|_| corrupt("not UTF-8"))?;
    if text.starts_with("s3-") {
        return Ok(IngestedMark::S3(text));
    }
    let not_a_mark =
        || corrupt("neither a fingerprint (xxh3:<size>:<16 hex digits>[@<mtime ns>]) nor an S3 object version");
    let (fingerprint, mtime_ns) = match text.split_once('@') {
        Some((fp, ns)) => (fp, Some(ns.parse::<u128>().map_err(|_| not_a_mark())?)),
        None => (text, None),
    };
    let fingerprint = fingerprint.parse().map_err(|_| not_a_mark())?;
    Ok(IngestedMark::Local { fingerprint, mtime_ns })
}

/// A local file's modification time in ns since the epoch (`None` for S3 objects, or when the file
/// system does not say).
fn local_mtime_ns(file: &SourceFile) -> Option<u128> {
    let path = file.local_path()?;
    let modified = std::fs::metadata(path).ok()?.modified().ok()?;
    Some(modified.duration_since(std::time::UNIX_EPOCH).ok()?.as_nanos())
}

/// Whether `file` is the one `mark` remembers. An S3 object compares its listed version. A local file
/// whose size and modification time are those it had when it was read is not read again (a change
/// that keeps both, as `make` and `rsync` also assume, is not seen); otherwise its content decides.
fn already_ingested(file: &SourceFile, mark: &IngestedMark<'_>) -> bool {
    match (mark, listed_version(file)) {
        (IngestedMark::S3(known), Some(version)) => *known == version,
        (IngestedMark::Local { fingerprint, mtime_ns }, None) => {
            if mtime_ns.is_some() && fingerprint.size == file.size && local_mtime_ns(file) == *mtime_ns {
                return true;
            }
            grantwatch_files::fingerprint_file(file).is_ok_and(|fp| fp == *fingerprint)
        }
        _ => false,
    }
}

enum Msg {
    /// The `seq`-th chunk of events of file `tag` (chunks of one file may arrive out of order).
    Events {
        tag: u32,
        seq: u32,
        events: Vec<Event>,
    },
    FileDone {
        tag: u32,
        fingerprint: Option<String>,
    },
    /// S3 refused a request in a way no later object can get past: the run stops.
    Fatal(S3Error),
}

/// A reader's messages on their way to the coordinator, sent together: an S3-layout trail is mostly
/// files of a few events, and one channel hand-off (a wake-up of the coordinator) per file cost more
/// than reading it. Holds at most about a chunk of events.
struct Outbox<'t> {
    tx: &'t SyncSender<Vec<Msg>>,
    msgs: Vec<Msg>,
    events: usize,
}

impl<'t> Outbox<'t> {
    fn new(tx: &'t SyncSender<Vec<Msg>>) -> Self {
        Outbox { tx, msgs: Vec::new(), events: 0 }
    }

    /// `Err`: the coordinator hung up.
    fn send(&mut self, msg: Msg) -> Result<(), ()> {
        if let Msg::Events { events, .. } = &msg {
            self.events += events.len();
        }
        self.msgs.push(msg);
        if self.events >= CHUNK || self.msgs.len() >= OUTBOX_MSGS { self.flush() } else { Ok(()) }
    }

    fn flush(&mut self) -> Result<(), ()> {
        self.events = 0;
        if self.msgs.is_empty() {
            return Ok(());
        }
        self.tx.send(std::mem::take(&mut self.msgs)).map_err(|_| ())
    }
}

#[derive(Default)]
struct FileProgress {
    /// Events sent and not yet processed by the pipeline.
    outstanding: u64,
    /// The reader is done with the file: `Some(fingerprint)` if read to its end, `Some(None)` if it failed.
    /// Taken by the commit that marks the file.
    done: Option<Option<String>>,
    /// The reader is done with the file (stays true).
    read: bool,
    /// The next chunk to hand to the pipeline, and chunks that arrived ahead of it (at most the
    /// chunks a file has in flight): events of one file enter the pipeline in file order.
    next_chunk: u32,
    early: std::collections::BTreeMap<u32, Vec<Event>>,
}

#[derive(Default)]
struct Tally {
    records: AtomicU64,
    records_quarantined: AtomicU64,
    time_refused: AtomicU64,
    non_api: AtomicU64,
    files_quarantined: AtomicU64,
    copies_left_out: AtomicU64,
}

/// Runs the stages over `opts.cloudtrail`, committing into `store`.
pub fn run<S: StateStore>(
    opts: &FileRunOptions<'_>,
    store: &S,
    quarantine: &QuarantineWriter,
    alerts: &mut dyn AlertSink,
) -> Result<FileRunOutcome, RunError> {
    let s3 = match opts.cloudtrail.iter().any(|i| matches!(i, Input::S3(_))) {
        true => Some(S3Source::connect(&opts.s3).map_err(RunError::S3)?),
        false => None,
    };
    let order = ReadOrder::of(opts.cloudtrail, s3.as_ref())?;
    let mut outcome = FileRunOutcome {
        files_found: order.files.len() as u64,
        skipped_paths: order.skipped.clone(),
        ..Default::default()
    };
    let mut todo: Vec<SourceFile> = Vec::with_capacity(order.files.len());
    let mut stamps: Vec<Option<EventTime>> = Vec::with_capacity(order.files.len());
    for (f, stamp) in order.files.into_iter().zip(order.stamps) {
        if opts.skip_ingested {
            let key = file_meta_key(&f.location.to_string());
            if let Some(known) = store.get(Table::Meta, &key)?
                && already_ingested(&f, &decode_ingested_mark(&key, &known)?)
            {
                outcome.files_already_ingested += 1;
                continue;
            }
        }
        todo.push(f);
        stamps.push(stamp);
    }

    (opts.progress)(Progress::Total(todo.iter().map(|f| f.size).sum()));
    let mut pipeline = Pipeline::open(opts.catalog.clone(), opts.detection.clone(), &opts.pipeline, store)?;
    for g in &opts.grants {
        pipeline.supply_grants(g.clone());
    }
    if let Some(on_demand) = &opts.on_demand {
        pipeline.supply_on_demand(on_demand);
    }
    let tally = Tally::default();
    let quarantined = Mutex::new(Vec::<Quarantined>::new());
    let n_plain = stamps.iter().position(Option::is_some).unwrap_or(todo.len());
    let next = AtomicUsize::new(n_plain);
    let (tx, rx) = sync_channel::<Vec<Msg>>(CHANNEL_CHUNKS);
    let readers = Readers {
        files: &todo,
        stamps: &stamps,
        next: &next,
        opts,
        s3: s3.as_ref(),
        quarantine,
        tally: &tally,
        quarantined: &quarantined,
    };
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
    } else {
        opts.threads
    };
    let pool = rayon_pool(threads)?;
    let coordinated = std::thread::scope(|scope| {
        let reading = scope.spawn(|| {
            pool.install(|| {
                rayon::scope(|s| {
                    let readers = &readers;
                    let tx = tx.clone();
                    s.spawn(move |s| {
                        // Files without a delivery time (exports, JSON Lines) say nothing about the
                        // time they cover, so they are read one after another, in the order given;
                        // a big one still spreads its chunks over every core. Then the delivered
                        // files, several at once, oldest delivery first.
                        let mut buf = grantwatch_files::ReadBuffers::default();
                        let mut out = Outbox::new(&tx);
                        for (i, file) in readers.files.iter().enumerate().take(n_plain) {
                            (readers.opts.progress)(Progress::File(file.size));
                            if readers.read_file(i as u32, file, &mut buf, &mut out).is_err() {
                                return;
                            }
                        }
                        if out.flush().is_err() {
                            return;
                        }
                        for _ in 0..threads {
                            let tx = tx.clone();
                            s.spawn(move |_| readers.pull(&tx));
                        }
                    });
                });
            });
            drop(tx);
        });
        let r = coordinate(opts, store, &mut pipeline, rx, &readers, alerts, &mut outcome);
        let joined = reading.join();
        match (r, joined) {
            (Err(e), _) => Err(e),
            (Ok(()), Err(_)) => Err(RunError::ReaderPanicked),
            (Ok(()), Ok(())) => Ok(()),
        }
    });
    coordinated?;

    outcome.files_quarantined = tally.files_quarantined.load(Ordering::Relaxed);
    outcome.files_read = todo.len() as u64 - outcome.files_quarantined;
    outcome.records = tally.records.load(Ordering::Relaxed);
    outcome.records_quarantined = tally.records_quarantined.load(Ordering::Relaxed);
    outcome.records_time_refused = tally.time_refused.load(Ordering::Relaxed);
    outcome.non_api_records = tally.non_api.load(Ordering::Relaxed);
    outcome.quarantine_copies_left_out = tally.copies_left_out.load(Ordering::Relaxed);
    let mut q = quarantined.into_inner().unwrap_or_default();
    q.sort_by(|a, b| (&a.file, a.record).cmp(&(&b.file, b.record)));
    outcome.quarantined = q;
    outcome.counts = pipeline.counts();
    outcome.detect = pipeline.detect_counts();
    outcome.windows = pipeline.take_windows();
    Ok(outcome)
}

fn rayon_pool(threads: usize) -> Result<rayon::ThreadPool, RunError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("gw-read-{i}"))
        .build()
        .map_err(|e| RunError::Threads(e.to_string()))
}

/// The coordinator: feeds the pipeline, writes alerts, commits.
fn coordinate<S: StateStore>(
    opts: &FileRunOptions<'_>,
    store: &S,
    pipeline: &mut Pipeline,
    rx: Receiver<Vec<Msg>>,
    readers: &Readers<'_, '_>,
    alerts: &mut dyn AlertSink,
    outcome: &mut FileRunOutcome,
) -> Result<(), RunError> {
    let (files, stamps) = (readers.files, readers.stamps);
    let mut progress: Vec<FileProgress> = Vec::new();
    progress.resize_with(files.len(), FileProgress::default);
    let budget = opts.flush_budget.max(1);
    // The delivery-time frontier. Files without a delivery time come first in read order, and the
    // watermark is held until they are read (see `limit_at`). Files with a CloudTrail delivery time
    // come last in read order,
    // oldest delivery first, and a file holds the events since its trail's previous delivery. So while
    // a file delivered at D is unread, events up to the delivery before D are all that is safe to
    // release: the watermark is capped there. Files spanning hours (daily exports) then still come
    // out in event-time order, as 5-minute files do.
    let stamps: Vec<Option<i64>> = stamps.iter().map(|s| s.map(EventTime::millis)).collect();
    let first_stamped = stamps.iter().position(Option::is_some).unwrap_or(files.len());
    let limit_at = |frontier: usize| -> Option<i64> {
        // Files without a delivery time (exports, LookupEvents output, JSON Lines) may hold their
        // events in any order, newest first included: nothing is released until they are all read, so
        // the reorder buffer sorts them whole (up to its capacity; beyond, the oldest go early).
        if frontier < first_stamped {
            return Some(i64::MIN / 2);
        }
        let s = stamps.get(frontier).copied().flatten()?;
        let mut i = frontier;
        while i > first_stamped && stamps.get(i - 1).copied().flatten() == Some(s) {
            i -= 1;
        }
        if i == first_stamped { Some(i64::MIN / 2) } else { stamps.get(i - 1).copied().flatten() }
    };
    // The first file not yet read whole, plain files included.
    let mut frontier = 0;
    pipeline.set_limit(limit_at(frontier), store)?;
    for msg in rx.into_iter().flatten() {
        match msg {
            Msg::Events { tag, seq, events } => {
                let Some(p) = progress.get_mut(tag as usize) else { continue };
                p.outstanding += events.len() as u64;
                p.early.insert(seq, events);
                while let Some(events) = p.early.remove(&p.next_chunk) {
                    p.next_chunk += 1;
                    for ev in events {
                        pipeline.push(Box::new(ev), tag, store)?;
                    }
                }
            }
            Msg::Fatal(e) => return Err(RunError::S3(e)),
            Msg::FileDone { tag, fingerprint } => {
                if let Some(p) = progress.get_mut(tag as usize) {
                    p.done = Some(fingerprint);
                    p.read = true;
                }
                let before = frontier;
                while progress.get(frontier).is_some_and(|p| p.read) {
                    frontier += 1;
                }
                if frontier != before {
                    pipeline.set_limit(limit_at(frontier), store)?;
                }
            }
        }
        settle(pipeline, &mut progress, alerts, outcome)?;
        if pipeline.pending() >= budget {
            commit(opts, store, pipeline, &mut progress, files, alerts, outcome)?;
        }
    }
    pipeline.finish(store)?;
    settle(pipeline, &mut progress, alerts, outcome)?;
    commit(opts, store, pipeline, &mut progress, files, alerts, outcome)
}

/// Hands new alerts to the sink and counts processed events against their files.
fn settle(
    pipeline: &mut Pipeline,
    progress: &mut [FileProgress],
    alerts: &mut dyn AlertSink,
    outcome: &mut FileRunOutcome,
) -> Result<(), RunError> {
    for tag in pipeline.take_released() {
        if let Some(p) = progress.get_mut(tag as usize) {
            p.outstanding = p.outstanding.saturating_sub(1);
        }
    }
    let new = pipeline.take_alerts();
    if !new.is_empty() {
        alerts.write(&new).map_err(RunError::Alerts)?;
        outcome.alerts_written += new.len() as u64;
    }
    Ok(())
}

/// One atomic batch: stage state, finished files, the alert sink's position.
fn commit<S: StateStore>(
    opts: &FileRunOptions<'_>,
    store: &S,
    pipeline: &mut Pipeline,
    progress: &mut [FileProgress],
    files: &[SourceFile],
    alerts: &mut dyn AlertSink,
    outcome: &mut FileRunOutcome,
) -> Result<(), RunError> {
    let mut batch = WriteBatch::with_capacity(pipeline.pending() + 1024);
    pipeline.snapshot(&mut batch, store)?;
    // The snapshot processed the events still batched: their alerts belong to this commit.
    let new = pipeline.take_alerts();
    if !new.is_empty() {
        alerts.write(&new).map_err(RunError::Alerts)?;
        outcome.alerts_written += new.len() as u64;
    }
    for (p, f) in progress.iter_mut().zip(files) {
        if p.outstanding == 0
            && let Some(done) = p.done.take()
            && let Some(fp) = done
        {
            // An S3 object is marked by its listed version, which the next run can compare without
            // reading it; a local file by the fingerprint of the bytes just read.
            let mark = listed_version(f).unwrap_or(fp);
            batch.put(Table::Meta, file_meta_key(&f.location.to_string()), mark.into_bytes());
        }
    }
    alerts.sync(&mut batch).map_err(RunError::Alerts)?;
    store.write(batch)?;
    pipeline.committed();
    outcome.commits += 1;
    tracing::debug!(commits = outcome.commits, "State committed.");
    if opts.crash_after_commits == Some(outcome.commits) {
        // Fault injection for the crash-restart tests: end like `kill -9` right after a commit.
        std::process::abort();
    }
    Ok(())
}

/// What every reader shares.
struct Readers<'r, 'o> {
    files: &'r [SourceFile],
    stamps: &'r [Option<EventTime>],
    next: &'r AtomicUsize,
    opts: &'r FileRunOptions<'o>,
    s3: Option<&'r S3Source>,
    quarantine: &'r QuarantineWriter,
    tally: &'r Tally,
    quarantined: &'r Mutex<Vec<Quarantined>>,
}

/// Quarantine bookkeeping of one file.
struct FileQuarantine {
    copied: u64,
    left_out: u64,
    first_reason: Option<String>,
}

impl Readers<'_, '_> {
    /// Takes files in read order until none is left.
    fn pull(&self, tx: &SyncSender<Vec<Msg>>) {
        let mut buf = grantwatch_files::ReadBuffers::default();
        let mut out = Outbox::new(tx);
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            let Some(file) = self.files.get(i) else { break };
            (self.opts.progress)(Progress::File(file.size));
            if self.read_file(i as u32, file, &mut buf, &mut out).is_err() {
                // The coordinator stopped (it failed and returns its error): stop reading.
                return;
            }
        }
        let _ = out.flush();
    }

    fn note(&self, file: &str, record: Option<u64>, reason: String) {
        if let Ok(mut l) = self.quarantined.lock()
            && l.len() < QUARANTINE_LIST_CAP
        {
            l.push(Quarantined { file: file.to_string(), record, reason });
        }
    }

    /// Reads one file; `Err` only when the coordinator hung up.
    fn read_file(
        &self,
        tag: u32,
        file: &SourceFile,
        buf: &mut grantwatch_files::ReadBuffers,
        out: &mut Outbox<'_>,
    ) -> Result<(), ()> {
        let tx = out.tx;
        let name = file.location.to_string();
        // Before reading: a change made while it is read then shows as a newer time next run.
        let mtime_ns = if self.opts.skip_ingested { local_mtime_ns(file) } else { None };
        let delivery = delivery_of(file, self.stamps.get(tag as usize).copied().flatten());
        let fq = Mutex::new(FileQuarantine { copied: 0, left_out: 0, first_reason: None });
        let ctx = RecordCx { readers: self, name: &name, delivery, fq: &fq };
        let mut records = 0u64;
        let mut hung_up = false;
        let mut seq = 0u32;
        let mut next_seq = || {
            seq += 1;
            seq - 1
        };
        let result = if file.format == Format::JsonLines {
            // A JSON Lines file can hold millions of records: this thread only splits lines and hands
            // chunks to idle threads (at most MAX_IN_FLIGHT at once), so one big file uses every core.
            let in_flight = AtomicUsize::new(0);
            rayon::scope(|scope| {
                let mut chunk = RawChunk::default();
                let r = self.read_records(file, buf, &mut |item| {
                    records += 1;
                    match item {
                        Item::Record(rec) => chunk.push(rec.index, rec.raw),
                        Item::Oversized(o) => ctx.quarantine(o.index, None, o.to_string()),
                    }
                    if chunk.spans.len() < CHUNK || hung_up {
                        return;
                    }
                    let full = std::mem::take(&mut chunk);
                    let seq = next_seq();
                    // At most MAX_IN_FLIGHT chunks of this file out at once, so the coordinator,
                    // which hands chunks on in file order, holds few early ones. While the limit
                    // is reached, this thread runs its own queued chunks (or lets another finish).
                    while in_flight.load(Ordering::Acquire) >= MAX_IN_FLIGHT {
                        if rayon::yield_now() != Some(rayon::Yield::Executed) {
                            std::thread::yield_now();
                        }
                    }
                    in_flight.fetch_add(1, Ordering::AcqRel);
                    let (in_flight, tx, ctx) = (&in_flight, tx.clone(), &ctx);
                    scope.spawn(move |_| {
                        let events = ctx.normalize_chunk(&full);
                        let _ = tx.send(vec![Msg::Events { tag, seq, events }]);
                        in_flight.fetch_sub(1, Ordering::AcqRel);
                    });
                });
                let events = ctx.normalize_chunk(&chunk);
                hung_up |= out.send(Msg::Events { tag, seq: next_seq(), events }).is_err();
                r
            })
        } else {
            // Not reserved up front: most files hold a few events, and the outbox keeps many of them.
            let mut events = Vec::new();
            let r = self.read_records(file, buf, &mut |item| {
                records += 1;
                match item {
                    Item::Record(rec) => ctx.record(rec.index, rec.raw, &mut events),
                    Item::Oversized(o) => ctx.quarantine(o.index, None, o.to_string()),
                }
                if events.len() >= CHUNK && !hung_up {
                    let events = std::mem::take(&mut events);
                    hung_up |= out.send(Msg::Events { tag, seq: next_seq(), events }).is_err();
                }
            });
            hung_up |= out.send(Msg::Events { tag, seq: next_seq(), events }).is_err();
            r
        };
        self.tally.records.fetch_add(records, Ordering::Relaxed);
        let fingerprint = match result {
            Ok(summary) => Some(local_mark(summary.fingerprint, mtime_ns)),
            Err(Failed::Fatal(e)) => {
                // Not the object's fault (the bucket is gone, access or credentials are refused):
                // quarantining every object would hide it, so the run stops with it.
                let _ = out.send(Msg::Fatal(e));
                let _ = out.flush();
                return Err(());
            }
            Err(Failed::File(e)) => {
                let reason = e.to_string();
                tracing::warn!(file = %name, error = %reason, records_before_error = records, "File quarantined.");
                if let Err(e) = self.quarantine.file(&name, &reason) {
                    tracing::error!(file = %name, error = %e, "Could not write the quarantine file.");
                }
                self.tally.files_quarantined.fetch_add(1, Ordering::Relaxed);
                self.note(&name, None, reason);
                None
            }
        };
        if let Ok(fq) = fq.into_inner()
            && let Some(reason) = fq.first_reason
        {
            // One line per file, not one per record: a hostile file must not flood the log.
            tracing::warn!(
                file = %name,
                records_quarantined = fq.copied + fq.left_out,
                copies_left_out = fq.left_out,
                first_reason = %reason,
                "Records quarantined."
            );
        }
        hung_up |= out.send(Msg::FileDone { tag, fingerprint }).is_err();
        if hung_up { Err(()) } else { Ok(()) }
    }
}

/// Why reading a file stopped.
enum Failed {
    /// The file is bad, or could not be read: it is quarantined and the run goes on.
    File(FileError),
    /// S3 refused in a way that concerns every object: the run stops.
    Fatal(S3Error),
}

impl Readers<'_, '_> {
    /// Reads a local file or an S3 object through the same reader (gzip detection, scanner, caps,
    /// fingerprint).
    fn read_records(
        &self,
        file: &SourceFile,
        buf: &mut grantwatch_files::ReadBuffers,
        visit: &mut dyn FnMut(Item<'_>),
    ) -> Result<grantwatch_files::FileSummary, Failed> {
        match &file.location {
            Location::Local(_) => {
                grantwatch_files::read_records_with(file, &self.opts.read, buf, visit).map_err(Failed::File)
            }
            Location::S3(object) => {
                let Some(s3) = self.s3 else {
                    let e = std::io::Error::other("no S3 client");
                    return Err(Failed::File(FileError::new(&file.location, FileErrorKind::Io(e))));
                };
                let body = match s3.open(object) {
                    Ok(body) => body,
                    Err(e) if e.is_fatal() => return Err(Failed::Fatal(e)),
                    Err(e) => {
                        // The FileError names the object already: keep only what S3 said.
                        let why = match e {
                            S3Error::Request { kind, .. } => kind.to_string(),
                            other => other.to_string(),
                        };
                        let e = std::io::Error::other(why);
                        return Err(Failed::File(FileError::new(&file.location, FileErrorKind::Io(e))));
                    }
                };
                grantwatch_files::read_records_from(body, file, &self.opts.read, buf, visit).map_err(Failed::File)
            }
        }
    }
}

/// What normalizing a record of one file needs.
struct RecordCx<'r, 'o, 'f> {
    readers: &'f Readers<'r, 'o>,
    name: &'f str,
    delivery: Delivery,
    fq: &'f Mutex<FileQuarantine>,
}

impl RecordCx<'_, '_, '_> {
    fn normalize_chunk(&self, chunk: &RawChunk) -> Vec<Event> {
        let mut events = Vec::with_capacity(chunk.spans.len());
        for (index, range) in &chunk.spans {
            if let Some(raw) = chunk.data.get(range.clone()) {
                self.record(*index, raw, &mut events);
            }
        }
        events
    }

    /// Normalizes one record into `events`, or skips or quarantines it.
    fn record(&self, index: u64, raw: &[u8], events: &mut Vec<Event>) {
        let tally = self.readers.tally;
        let bounds = self.readers.opts.time_bounds;
        let res =
            self.readers.opts.normalizer.normalize_each(raw, &mut |ev| match bounds.check(ev.time, self.delivery) {
                Ok(()) => events.push(ev),
                Err(e) => {
                    tally.time_refused.fetch_add(1, Ordering::Relaxed);
                    self.quarantine(index, Some(raw), e.to_string());
                }
            });
        match res {
            Ok(()) => {}
            Err(NormalizeError::NotApiActivity(_)) => {
                tally.non_api.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => self.quarantine(index, Some(raw), e.to_string()),
        }
    }

    /// Counts a bad record; copies it (redacted) into the quarantine file while its file is under the
    /// per-file cap. `raw` is `None` for a record that was never buffered (over the record cap).
    fn quarantine(&self, index: u64, raw: Option<&[u8]>, reason: String) {
        let readers = self.readers;
        readers.tally.records_quarantined.fetch_add(1, Ordering::Relaxed);
        let copy = match self.fq.lock() {
            Ok(mut fq) => {
                if fq.first_reason.is_none() {
                    fq.first_reason = Some(reason.clone());
                }
                if fq.copied < readers.opts.quarantine_copies_per_file {
                    fq.copied += 1;
                    true
                } else {
                    fq.left_out += 1;
                    readers.tally.copies_left_out.fetch_add(1, Ordering::Relaxed);
                    false
                }
            }
            Err(_) => false,
        };
        if copy {
            // A quarantined record is kept for an analyst, never its credentials.
            let written = match raw {
                Some(raw) => {
                    let raw = grantwatch_core::cloudtrail::redact::redact_json(raw);
                    readers.quarantine.record(self.name, index, &reason, &raw)
                }
                None => readers.quarantine.record_without_raw(self.name, index, &reason),
            };
            if let Err(e) = written {
                tracing::error!(file = %self.name, error = %e, "Could not write the quarantine file.");
            }
            readers.note(self.name, Some(index), reason);
        }
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
