//! The ingest driver: activity logs of every cloud (watched directories of CloudTrail, Azure Activity,
//! GCP audit, Okta and Workspace files; the LookupEvents API; the Okta System Log and Workspace Reports
//! APIs, [`okta`] and [`workspace`]; JSON Lines on stdin) and entitlements (IAM snapshots, Azure and
//! GCP exports, the identity providers' directories for humans, `crate::clouds`) in; normalized
//! events (keyed by identity) and entitlements out.
//!
//! Exactly-once: every Kafka transaction carries, with the events it produces, the checkpoint of the
//! sources they came from (`file path → records done`, `LookupEvents region → last event time and ids`,
//! an Okta org → the next page's URL, a Workspace application → the newest time of a window read
//! whole) on the compacted checkpoints topic. A restarted ingest reads that topic back and resumes where its
//! last committed transaction ended; an interrupted transaction is aborted by the broker and its events
//! are never seen by `read_committed` consumers.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use grantwatch_core::catalog::Catalog;
use grantwatch_core::cloudtrail::{ActionMap, NormalizeError, Normalizer};
use grantwatch_core::iam::IamSnapshot;
use grantwatch_core::policy::evaluate;
use grantwatch_files::{Item, SourceFile};
use grantwatch_types::DeadLetterSource;
use rdkafka::Offset;
use serde::{Deserialize, Serialize};

use crate::clouds::CloudPaths;
use crate::kafka::client::{
    Emit, MAX_RECORD_BYTES, Refusal, TxnOutcome, TxnProducer, read_to_end, record_bytes, set_aside_refused,
};
use crate::kafka::config::Config;
use crate::kafka::error::{Result, StreamError};
use crate::kafka::lookup;
use crate::kafka::metrics::{Health, Metrics, serve};
use crate::kafka::runner::{dead_letter, dead_letter_emit};

mod api;
mod okta;
mod workspace;

/// What to ingest (the `run` command of `grantwatch-ingest`).
#[derive(Debug, Clone, Default)]
pub struct IngestArgs {
    /// CloudTrail directories (S3 delivery layout, .json(.gz) or .jsonl files) watched for new files.
    pub watch: Vec<PathBuf>,
    /// IAM snapshot files (`aws iam get-account-authorization-details` output), re-read when changed.
    pub iam: Vec<PathBuf>,
    /// Read CloudTrail records as JSON Lines from stdin until end of input, then stop.
    pub stdin: bool,
    /// Poll the LookupEvents sources of the configuration (`[[ingest.lookup_events]]`).
    pub lookup_events: bool,
    /// Process what is there now, then stop (instead of watching).
    pub once: bool,
    /// AWS Organizations tree and SCPs/RCPs (`docs/organizations.md`) capping the entitlements
    /// published from the IAM snapshots. Read once, at start.
    pub organization: Option<PathBuf>,
    /// Azure and GCP exports, the identity providers' directories and the human mapping (as
    /// `analyze --azure ... --humans`): published with the IAM snapshots' identities, humans linked
    /// across all of them, re-published when a file changes. Activity logs found among them are
    /// ingested as a watched directory's files.
    pub clouds: CloudPaths,
    /// Pull the Okta System Log sources of the configuration (`[[ingest.okta]]`).
    pub okta_logs: bool,
    /// Pull the Google Workspace Reports sources of the configuration (`[[ingest.workspace]]`).
    pub workspace_reports: bool,
}

/// Progress through one source, as stored on the checkpoints topic.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct FileCheckpoint {
    size: u64,
    /// Records of the file already produced.
    records: u64,
    complete: bool,
}

/// Events and checkpoints waiting for the next transaction.
#[derive(Default)]
struct Pending {
    emits: Vec<Emit>,
    /// Where each of `emits` came from (same length).
    origins: Vec<Origin>,
    records: usize,
}

impl Pending {
    fn push(&mut self, emit: Emit, origin: Origin) {
        self.emits.push(emit);
        self.origins.push(origin);
    }

    fn clear(&mut self) {
        self.emits.clear();
        self.origins.clear();
        self.records = 0;
    }
}

const SERVICE: &str = "grantwatch-ingest";

/// Where a pending record came from, so that a dead letter of it can say; cheap to keep for every
/// record (a file's path is shared).
#[derive(Debug, Clone)]
pub(crate) enum Origin {
    /// Checkpoints and dead letters: no source record.
    None,
    /// A CloudTrail or IAM file and the index of the record in it.
    File(Arc<str>, u64),
    Stdin(u64),
    /// LookupEvents: region and event id.
    Lookup(Arc<str>, Box<str>),
    /// A pulled API (Okta, Workspace): the source and page, and the record's index in the page.
    Api(Arc<str>, u64),
}

impl Origin {
    fn source(&self) -> Option<DeadLetterSource> {
        Some(match self {
            Origin::None => return None,
            Origin::File(path, record) => DeadLetterSource::File { path: path.to_string(), record: *record },
            Origin::Stdin(line) => DeadLetterSource::Stdin { line: *line },
            Origin::Lookup(region, id) => {
                DeadLetterSource::LookupEvents { region: region.to_string(), event_id: id.to_string() }
            }
            // The dead-letter schema's "a location and the record's index in it".
            Origin::Api(page, record) => DeadLetterSource::File { path: page.to_string(), record: *record },
        })
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::None => f.write_str("no source record"),
            Origin::File(path, record) => write!(f, "file {path}, record {record}"),
            Origin::Stdin(line) => write!(f, "stdin, line {line}"),
            Origin::Lookup(region, id) => write!(f, "LookupEvents in {region}, event {id}"),
            Origin::Api(page, record) => write!(f, "{page}, record {record}"),
        }
    }
}

/// What one raw activity record becomes: its events (one, or several for a Google Workspace
/// activity), or why it is a dead letter (naming `origin`), or nothing (a well-formed record that is
/// not an API call). An event larger than `max_bytes` makes the record a dead letter: its
/// transaction would fail, and with it every retry after a restart.
fn convert_record(
    normalizer: &Normalizer,
    topic: &str,
    max_bytes: usize,
    raw: &[u8],
    origin: &Origin,
) -> Option<Result<Vec<Emit>, String>> {
    let mut events = Vec::new();
    match normalizer.normalize_each(raw, &mut |ev| events.push(ev)) {
        Ok(()) => {}
        Err(NormalizeError::NotApiActivity(_)) => return None,
        Err(e) => return Some(Err(format!("{e} ({origin})"))),
    }
    let mut emits = Vec::with_capacity(events.len());
    for ev in events {
        match convert_event(ev, topic, max_bytes, origin) {
            Ok(emit) => emits.push(emit),
            Err(e) => return Some(Err(e)),
        }
    }
    Some(Ok(emits))
}

fn convert_event(ev: grantwatch_types::Event, topic: &str, max_bytes: usize, origin: &Origin) -> Result<Emit, String> {
    let payload = match serde_json::to_vec(&ev) {
        Ok(p) => p,
        Err(e) => return Err(format!("cannot serialize: {e} ({origin})")),
    };
    let emit = Emit {
        partition: None,
        topic: topic.to_string(),
        key: Some(ev.actor.uid.into_bytes()),
        payload,
        kind: "event",
    };
    let bytes = record_bytes(&emit);
    if bytes > max_bytes {
        return Err(format!(
            "event of {bytes} bytes after normalization, over ingest.max_event_bytes ({max_bytes}) ({origin})"
        ));
    }
    Ok(emit)
}

/// The dead-letter record of `raw`: redacted and cut to a bounded size (see `runner::dead_letter`).
fn dead_letter_record(dlq_topic: &str, origin: &Origin, error: String, raw: &[u8]) -> Option<Emit> {
    // Every caller has a source record; the fallback only keeps this function total.
    let source = origin.source().unwrap_or(DeadLetterSource::Stdin { line: 0 });
    dead_letter_emit(dlq_topic, None, &dead_letter(SERVICE, source, error, raw))
}

/// Records a reader thread converts before handing them over (in one message, across small files:
/// one message per 3-record file cost more in thread wake-ups than the file did to read).
const READ_CHUNK: usize = 512;
/// Messages waiting per reader thread, at most (back-pressure: memory stays bounded whatever the files).
const READ_CHANNEL: usize = 8;

/// A file to ingest: records `skip..` of it.
struct ToRead {
    file: SourceFile,
    path: Arc<str>,
    key: String,
    skip: u64,
}

/// What a reader thread needs to convert records.
struct Converter {
    normalizer: Arc<Normalizer>,
    topic: String,
    max_bytes: usize,
}

/// One record as a reader thread converted it.
enum Converted {
    /// Its events (one, or several for a Workspace activity), committed together.
    Events(Vec<Emit>),
    /// Why it is a dead letter (naming its origin), and the record cut to a dead letter's size.
    Unusable(String, Vec<u8>),
    /// Well-formed, not an API call.
    NotApi,
    /// Over the reader's record cap (the reason).
    Oversized(String),
}

/// What a reader thread sends: records of the file it is reading, by index, then the file's end.
enum FileChunk {
    Records(Vec<(u64, Converted)>),
    /// The file ended; `Some`: why the rest of it could not be read.
    Done(Option<String>),
}

/// A reader thread's side of its channel: chunks gathered into messages of about [`READ_CHUNK`] records.
struct Batcher<'a> {
    tx: &'a std::sync::mpsc::SyncSender<Vec<FileChunk>>,
    batch: Vec<FileChunk>,
    records: usize,
}

impl Batcher<'_> {
    /// Queues `chunk`; `false` if the taker is gone.
    fn push(&mut self, chunk: FileChunk) -> bool {
        self.records += match &chunk {
            FileChunk::Records(r) => r.len(),
            FileChunk::Done(_) => 1,
        };
        self.batch.push(chunk);
        self.records < READ_CHUNK || self.flush()
    }

    fn flush(&mut self) -> bool {
        self.records = 0;
        self.batch.is_empty() || self.tx.send(std::mem::take(&mut self.batch)).is_ok()
    }
}

/// The taker's side of one reader thread's channel.
struct Feed {
    rx: std::sync::mpsc::Receiver<Vec<FileChunk>>,
    queue: std::collections::VecDeque<FileChunk>,
}

impl Feed {
    fn new(rx: std::sync::mpsc::Receiver<Vec<FileChunk>>) -> Feed {
        Feed { rx, queue: Default::default() }
    }

    /// The reader's next chunk; `None` once it has ended.
    fn next(&mut self) -> Option<FileChunk> {
        if self.queue.is_empty() {
            self.queue.extend(self.rx.recv().ok()?);
        }
        self.queue.pop_front()
    }
}

/// A reader thread: files `first`, `first + step`, ... of `todo`, converted in chunks. Returns when
/// they are done, when `stop` is set, or when the taker is gone.
fn read_files(
    todo: &[ToRead],
    first: usize,
    step: usize,
    convert: &Converter,
    stop: &AtomicBool,
    tx: &std::sync::mpsc::SyncSender<Vec<FileChunk>>,
) {
    let mut out = Batcher { tx, batch: Vec::new(), records: 0 };
    let mut buf = grantwatch_files::ReadBuffers::default();
    for f in todo.iter().skip(first).step_by(step) {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let mut chunk = Vec::new();
        let mut gone = false;
        let result = grantwatch_files::read_records(&f.file, &mut buf, &mut |item| {
            let index = item.index();
            if gone || index < f.skip {
                return;
            }
            let converted = match item {
                Item::Record(rec) => {
                    let origin = Origin::File(f.path.clone(), index);
                    match convert_record(&convert.normalizer, &convert.topic, convert.max_bytes, rec.raw, &origin) {
                        Some(Ok(emits)) => Converted::Events(emits),
                        Some(Err(error)) => {
                            let cut = &rec.raw[..rec.raw.len().min(grantwatch_types::DeadLetter::MAX_PAYLOAD)];
                            Converted::Unusable(error, cut.to_vec())
                        }
                        None => Converted::NotApi,
                    }
                }
                Item::Oversized(o) => Converted::Oversized(o.to_string()),
            };
            chunk.push((index, converted));
            if chunk.len() >= READ_CHUNK {
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(READ_CHUNK));
                gone = !out.push(FileChunk::Records(full)) || stop.load(Ordering::Relaxed);
            }
        });
        if gone
            || (!chunk.is_empty() && !out.push(FileChunk::Records(chunk)))
            || !out.push(FileChunk::Done(result.err().map(|e| e.to_string())))
        {
            return;
        }
    }
    out.flush();
}

pub(crate) struct Ingest {
    cfg: Config,
    producer: TxnProducer,
    normalizer: Arc<Normalizer>,
    catalog: Arc<Catalog>,
    pub(crate) checkpoints: HashMap<String, Vec<u8>>,
    pending: Pending,
    pub(crate) metrics: Arc<Metrics>,
    /// The last watermark mark written to the entitlements topic.
    entitlements_mark: Option<i64>,
    organization: Option<grantwatch_core::org::Organization>,
    /// Files under the other clouds' paths, by path: (size, modified, fingerprint, whether an activity
    /// log), so that an unchanged file is neither hashed nor sniffed again.
    export_files: HashMap<PathBuf, ExportFile>,
    /// Activity logs found under the other clouds' paths, ingested with the watched directories.
    export_logs: Vec<PathBuf>,
    /// The Okta org of the directory export (`--okta`), naming the System Log's identities.
    okta_org: Option<String>,
    /// Who is behind each identity, as last linked (`None` until the entitlements are first loaded in
    /// this process): the normalizer and the pulled sources stamp their events with it.
    humans: Option<Arc<grantwatch_core::humans::HumanIndex>>,
}

/// A file under the other clouds' paths as last seen.
#[derive(Clone)]
struct ExportFile {
    size: u64,
    modified: Option<std::time::SystemTime>,
    fingerprint: String,
    is_log: bool,
}

/// Wall-clock milliseconds. A source is where time enters: the IAM source vouches, by its marks, that
/// it has published every snapshot taken up to now. Never read inside the stages.
#[allow(clippy::disallowed_methods)]
pub(crate) fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Ingest {
    pub(crate) fn checkpoint_emit(&mut self, key: String, value: Vec<u8>) {
        self.checkpoints.insert(key.clone(), value.clone());
        let topic = self.cfg.topics.ingest_checkpoints.name.clone();
        self.pending.push(
            Emit { partition: None, topic, key: Some(key.into_bytes()), payload: value, kind: "checkpoint" },
            Origin::None,
        );
    }

    /// Queues a dead letter of `raw` (redacted, cut to a bounded size) from `origin`.
    fn dead_letter(&mut self, origin: Origin, error: String, raw: &[u8]) {
        tracing::warn!(%origin, %error, "unusable record sent to the dead-letter topic");
        self.metrics.dead_letters.inc();
        if let Some(emit) = dead_letter_record(&self.cfg.topics.dlq.name, &origin, error, raw) {
            self.pending.push(emit, origin);
        }
    }

    /// Normalizes one raw activity record into `pending`.
    pub(crate) fn record(&mut self, raw: &[u8], origin: Origin) {
        let normalizer = self.normalizer.clone();
        self.record_with(&normalizer, raw, origin);
    }

    /// [`Ingest::record`] with a normalizer of the source's own (an Okta org's).
    pub(crate) fn record_with(&mut self, normalizer: &Normalizer, raw: &[u8], origin: Origin) {
        self.pending.records += 1;
        let events = &self.cfg.topics.events.name;
        match convert_record(normalizer, events, self.cfg.ingest.max_event_bytes, raw, &origin) {
            Some(Ok(emits)) => {
                for emit in emits {
                    self.pending.push(emit, origin.clone());
                }
            }
            Some(Err(error)) => self.dead_letter(origin, error, raw),
            None => {}
        }
    }

    /// Commits what is pending in one transaction.
    pub(crate) fn flush(&mut self) -> Result<()> {
        if self.pending.emits.is_empty() {
            return Ok(());
        }
        loop {
            match self.producer.transact(&self.pending.emits, None)? {
                TxnOutcome::Committed => {
                    self.metrics.commits.inc();
                    for e in &self.pending.emits {
                        self.metrics.out(e.kind).inc();
                    }
                    self.pending.clear();
                    return Ok(());
                }
                // Nothing else writes with this transactional id, so an abort means the broker lost the
                // transaction (e.g. it timed out while unreachable). The checkpoints in memory are ahead of
                // what was committed: start over from the committed ones (crash-only).
                TxnOutcome::Aborted(why) => {
                    return Err(StreamError::Transaction {
                        what: "committing ingested records".into(),
                        why: format!("aborted ({why}); restart to resume from the last commit"),
                    });
                }
                // A restart would meet the same record again: dead-letter it and go on.
                TxnOutcome::Refused(refused) => self.set_aside(&refused)?,
            }
        }
    }

    /// Replaces a record Kafka refused by its dead letter (see `set_aside_refused`).
    fn set_aside(&mut self, refused: &[Refusal]) -> Result<()> {
        let dlq = &self.cfg.topics.dlq.name;
        let origins = &self.pending.origins;
        let set = set_aside_refused(&mut self.pending.emits, refused, |index, e, error| {
            let origin = origins.get(index)?;
            // A refused dead letter or checkpoint (both small) has nothing to fall back to.
            if matches!(e.kind, "dlq" | "checkpoint") {
                return None;
            }
            let error = format!("{} of {} bytes refused by Kafka: {error} ({origin})", e.kind, record_bytes(e));
            origin.source()?; // no source record: nothing to dead-letter it as
            dead_letter_record(dlq, origin, error, &e.payload)
        });
        let Some(set) = set else {
            return Err(StreamError::Inconsistent(format!(
                "Kafka refused records that are not in the transaction: {refused:?}"
            )));
        };
        let (e, origin) = (&set.record, self.pending.origins.get(set.index).cloned().unwrap_or(Origin::None));
        if set.replaced {
            self.metrics.dead_letters.inc();
            tracing::warn!(kind = e.kind, bytes = record_bytes(e), %origin, "record refused by Kafka; dead-lettered");
        } else {
            tracing::error!(kind = e.kind, bytes = record_bytes(e), %origin, "record refused by Kafka; dropped");
            if set.index < self.pending.origins.len() {
                self.pending.origins.remove(set.index);
            }
        }
        Ok(())
    }

    /// Sorts the files under the other clouds' paths into exports and activity logs (the logs go to
    /// `export_logs`); returns the exports' `(checkpoint key, fingerprint, modified)`.
    fn scan_exports(&mut self, clouds: &CloudPaths) -> Result<Vec<(String, String, Option<std::time::SystemTime>)>> {
        let roots: Vec<PathBuf> = clouds.sources().cloned().collect();
        let mut out = Vec::new();
        self.export_logs.clear();
        if !roots.is_empty() {
            let found =
                grantwatch_files::discover(&roots).map_err(StreamError::source("finding the other clouds' exports"))?;
            if let Some((path, why)) = found.unreadable.first() {
                return Err(StreamError::Source {
                    what: format!("export {}", path.display()),
                    source: why.clone().into(),
                });
            }
            let mut seen = HashMap::new();
            for f in &found.files {
                let Some(path) = f.local_path() else { continue };
                let meta =
                    std::fs::metadata(path).map_err(StreamError::source(format!("reading {}", path.display())))?;
                let modified = meta.modified().ok();
                let known = self.export_files.get(path).filter(|e| e.size == meta.len() && e.modified == modified);
                let entry = match known {
                    Some(e) => e.clone(),
                    None => ExportFile {
                        size: meta.len(),
                        modified,
                        is_log: crate::clouds::is_log_file(path)
                            .map_err(StreamError::source(format!("sniffing {}", path.display())))?,
                        fingerprint: grantwatch_files::fingerprint_file(f)
                            .map_err(StreamError::source(format!("reading {}", f.location)))?
                            .to_string(),
                    },
                };
                if entry.is_log {
                    self.export_logs.push(path.to_path_buf());
                } else {
                    out.push((format!("export:{}", path.display()), entry.fingerprint.clone(), modified));
                }
                seen.insert(path.to_path_buf(), entry);
            }
            self.export_files = seen;
        }
        if let Some(file) = &clouds.humans {
            let f = grantwatch_files::source_file(file)
                .map_err(StreamError::source(format!("reading the human mapping {}", file.display())))?;
            let fp = grantwatch_files::fingerprint_file(&f)
                .map_err(StreamError::source(format!("reading {}", f.location)))?;
            let modified = std::fs::metadata(file).and_then(|m| m.modified()).ok();
            out.push((format!("humans:{}", file.display()), fp.to_string(), modified));
        }
        Ok(out)
    }

    /// Publishes the entitlements of every identity (IAM snapshots, Azure and GCP exports), humans
    /// linked across them, when any of their files changed since the last publication.
    fn ingest_entitlements(&mut self, files: &[PathBuf], clouds: &CloudPaths) -> Result<()> {
        let found = if files.is_empty() {
            Vec::new()
        } else {
            grantwatch_files::discover(files).map_err(StreamError::source("finding IAM snapshot files"))?.files
        };
        let mut changed = false;
        let mut fingerprints = Vec::new();
        let mut taken = 0i64;
        let ms = |t: Option<std::time::SystemTime>| {
            t.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        };
        for f in &found {
            let fp = grantwatch_files::fingerprint_file(f)
                .map_err(StreamError::source(format!("reading {}", f.location)))?;
            fingerprints.push((format!("iam:{}", f.location), fp.to_string()));
            taken = taken.max(ms(f.local_path().and_then(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())));
        }
        for (key, fp, modified) in self.scan_exports(clouds)? {
            fingerprints.push((key, fp));
            taken = taken.max(ms(modified));
        }
        for (key, fp) in &fingerprints {
            if self.checkpoints.get(key).map(Vec::as_slice) != Some(fp.as_bytes()) {
                changed = true;
            }
        }
        // Unchanged and already loaded: nothing to do. Unchanged after a restart: the links are loaded
        // again (events must name their humans as before the restart), nothing is re-published.
        if !changed && self.humans.is_some() {
            return Ok(());
        }
        let mut grants = if found.is_empty() { Vec::new() } else { self.aws_grants(&found)? };
        let mut others = crate::clouds::load(clouds, &self.catalog)
            .map_err(StreamError::source("loading the exports of Azure, GCP and the identity providers"))?;
        for w in &others.warnings {
            tracing::warn!(warning = %w, "cloud export issue");
        }
        if others.okta_org.is_some() {
            // The System Log names no org: the directory's names its users' uids.
            self.okta_org = others.okta_org.clone();
        }
        grants.append(&mut others.grants);
        grants.sort_by(|a, b| a.arn.cmp(&b.arn));
        // Humans are linked over every identity (AWS's too), as `analyze` links them.
        let linker = Arc::new(others.link_humans(&mut grants));
        tracing::info!(humans = linker.humans().count(), "humans linked");
        // Events from now on name the person behind their actor (and so do their alerts).
        let index = Arc::new(grantwatch_core::humans::HumanIndex::new(
            Arc::clone(&linker),
            grants.iter().filter_map(|g| Some((g.arn.clone(), g.human.clone()?))),
        ));
        let map = grantwatch_core::cloudtrail::ActionMap::new(self.catalog.clone())
            .map_err(StreamError::source("loading the CloudTrail action map"))?;
        self.normalizer =
            Arc::new(Normalizer::new(map).with_okta_org(self.okta_org.clone()).with_humans(Some(Arc::clone(&index))));
        self.humans = Some(index);
        if !changed {
            return Ok(());
        }
        let as_of = taken.max(self.entitlements_mark.map_or(0, |m| m.saturating_add(1)));
        tracing::info!(identities = grants.len(), files = fingerprints.len(), as_of, "entitlements evaluated");
        // Names the files in a dead letter's source: the first few (a directory may hold hundreds).
        let mut names: Vec<&str> =
            fingerprints.iter().take(8).map(|(k, _)| k.split_once(':').map_or(k.as_str(), |(_, p)| p)).collect();
        let more = fingerprints.len().saturating_sub(8).to_string() + " more";
        if fingerprints.len() > 8 {
            names.push(&more);
        }
        let files: Arc<str> = names.join(",").into();
        for (i, g) in grants.iter().enumerate() {
            let mut record = g.to_record(&self.catalog);
            record.as_of = Some(grantwatch_types::EventTime(as_of));
            let emit = Emit {
                partition: None,
                topic: self.cfg.topics.entitlements.name.clone(),
                key: Some(g.arn.clone().into_bytes()),
                payload: serde_json::to_vec(&record).map_err(StreamError::source("serializing entitlements"))?,
                kind: "entitlements",
            };
            let origin = Origin::File(files.clone(), i as u64);
            let bytes = record_bytes(&emit);
            if bytes > MAX_RECORD_BYTES {
                let error = format!(
                    "entitlements of {} are {bytes} bytes, over the largest record ({MAX_RECORD_BYTES}); record = identity index",
                    g.arn
                );
                self.dead_letter(origin, error, &emit.payload);
            } else {
                self.pending.push(emit, origin);
            }
        }
        for (key, fp) in fingerprints {
            self.checkpoint_emit(key, fp.into_bytes());
        }
        self.flush()
    }

    /// The IAM snapshot's identities, evaluated as a whole (policies and groups span files), capped by
    /// the Organizations policies, with their escalation paths.
    fn aws_grants(
        &self,
        found: &[grantwatch_files::SourceFile],
    ) -> Result<Vec<grantwatch_core::policy::IdentityGrants>> {
        let mut snapshot = IamSnapshot::default();
        for f in found {
            let path = f.local_path().ok_or_else(|| StreamError::Source {
                what: format!("IAM snapshot {}", f.location),
                source: "not a local file".into(),
            })?;
            let bytes = std::fs::read(path).map_err(StreamError::source(format!("reading {}", path.display())))?;
            let doc = grantwatch_core::iam::parse_iam_json(&bytes, &path.display().to_string())
                .map_err(StreamError::source(format!("parsing IAM snapshot {}", path.display())))?;
            snapshot.merge(doc);
        }
        let mut grants = evaluate(&snapshot, &self.catalog);
        if let Some(org) = &self.organization {
            for (account, n) in org.apply(&self.catalog, &mut grants) {
                tracing::info!(account, actions_removed = n, "Organizations policies applied");
            }
        }
        // Paths to an administrator ride on each identity's record: the processor sees a new one
        // appear when a snapshot opens it.
        let model = grantwatch_core::access::AccessModel::new(&snapshot, &[], self.organization.as_ref());
        let esc = grantwatch_core::escalation::apply(
            &model,
            &self.catalog,
            &mut grants,
            grantwatch_core::findings::SUPER_IDENTITY_SHARE,
        );
        tracing::info!(
            edges = esc.edges,
            administrators = esc.administrators,
            escalate = esc.escalate,
            "escalation graph built"
        );
        Ok(grants)
    }

    /// Writes a watermark mark to every partition of the entitlements topic: every snapshot taken up
    /// to now has been published. The processor closes a window only behind such a mark.
    fn mark_entitlements(&mut self) -> Result<()> {
        let at = wall_clock_ms().max(self.entitlements_mark.map_or(0, |m| m.saturating_add(1)));
        let topic = &self.cfg.topics.entitlements;
        for p in 0..topic.partitions {
            self.pending.push(Emit::watermark_mark(&topic.name, p, at), Origin::None);
        }
        self.entitlements_mark = Some(at);
        self.flush()
    }

    /// The CloudTrail files under `dirs` not yet (completely) ingested, oldest delivery first. Reader
    /// threads read and normalize them, file `i` on thread `i mod n`; this thread takes their records
    /// file by file, in that order, and produces them with the checkpoints.
    fn ingest_dirs(&mut self, dirs: &[PathBuf], stop: &AtomicBool) -> Result<()> {
        let mut files =
            grantwatch_files::discover(dirs).map_err(StreamError::source("finding CloudTrail files"))?.files;
        // Oldest delivery first, across accounts, regions and clouds: events then reach Kafka roughly
        // in event time order, which is what the consumers' watermarks assume.
        // A file whose path names no time sorts first. (`order::delivery_stamp`: CloudTrail's stamp, the end
        // of an Azure hour, a Cloud Logging sink's or a daily file's period.)
        files.sort_by_cached_key(|f| (crate::order::delivery_stamp(f), f.location.clone()));
        let mut todo = Vec::new();
        for file in files {
            let key = format!("file:{}", file.location);
            let cp: FileCheckpoint =
                self.checkpoints.get(&key).and_then(|v| serde_json::from_slice(v).ok()).unwrap_or_default();
            if cp.complete && cp.size == file.size {
                continue;
            }
            // A file that changed size since its checkpoint is read again whole (downstream dedup by
            // event id keeps the counts exact); an unfinished one resumes after its last record.
            let skip = if cp.size == file.size { cp.records } else { 0 };
            todo.push(ToRead { path: file.location.to_string().into(), file, key, skip });
        }
        if todo.is_empty() {
            return self.flush();
        }
        let threads = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get).min(todo.len());
        let convert = Converter {
            normalizer: self.normalizer.clone(),
            topic: self.cfg.topics.events.name.clone(),
            max_bytes: self.cfg.ingest.max_event_bytes,
        };
        let taken = std::thread::scope(|scope| {
            let mut feeds = Vec::with_capacity(threads);
            for first in 0..threads {
                let (tx, rx) = std::sync::mpsc::sync_channel(READ_CHANNEL);
                feeds.push(Feed::new(rx));
                let (todo, convert) = (&todo, &convert);
                let spawned = std::thread::Builder::new()
                    .name(format!("gw-ingest-read-{first}"))
                    .spawn_scoped(scope, move || read_files(todo, first, threads, convert, stop, &tx));
                if let Err(e) = spawned {
                    return Err(StreamError::Io { what: "starting a reader thread".into(), source: e });
                }
            }
            // Returning drops the receivers: a reader still sending gives up at its next chunk.
            self.take_files(&todo, &mut feeds, stop)
        });
        taken?;
        self.flush()
    }

    /// Takes the readers' chunks file by file, in read order, into transactions with checkpoints.
    fn take_files(&mut self, todo: &[ToRead], feeds: &mut [Feed], stop: &AtomicBool) -> Result<()> {
        let batch_records = self.cfg.ingest.batch_records;
        let input = self.metrics.input("file");
        for (i, f) in todo.iter().enumerate() {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let n = feeds.len();
            let Some(feed) = feeds.get_mut(i % n) else { break };
            let mut done = f.skip;
            loop {
                let Some(chunk) = feed.next() else {
                    // A reader gives up mid-file only when told to stop: the file resumes from its
                    // last committed checkpoint next time.
                    if stop.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    return Err(StreamError::Inconsistent("a reader thread ended early".into()));
                };
                let records = match chunk {
                    FileChunk::Records(records) => records,
                    FileChunk::Done(error) => {
                        // The whole file is unusable (corrupt gzip, not JSON): one dead letter names it.
                        if let Some(error) = error {
                            self.dead_letter(Origin::File(f.path.clone(), done), error, b"");
                        }
                        break;
                    }
                };
                for (index, converted) in records {
                    input.inc();
                    self.pending.records += 1;
                    let origin = Origin::File(f.path.clone(), index);
                    match converted {
                        Converted::Events(emits) => {
                            for emit in emits {
                                self.pending.push(emit, origin.clone());
                            }
                        }
                        Converted::Unusable(error, raw) => self.dead_letter(origin, error, &raw),
                        Converted::NotApi => {}
                        // Over the reader's record cap: never buffered, so there is no payload to keep.
                        Converted::Oversized(why) => {
                            let error = format!("{why} ({origin})");
                            self.dead_letter(origin, error, b"");
                        }
                    }
                    done = index + 1;
                    if self.pending.records >= batch_records {
                        let cp = FileCheckpoint { size: f.file.size, records: done, complete: false };
                        if let Ok(v) = serde_json::to_vec(&cp) {
                            self.checkpoint_emit(f.key.clone(), v);
                        }
                        self.flush()?;
                    }
                }
            }
            let cp = FileCheckpoint { size: f.file.size, records: done, complete: true };
            self.checkpoint_emit(
                f.key.clone(),
                serde_json::to_vec(&cp).map_err(StreamError::source("serializing a checkpoint"))?,
            );
            if self.pending.records >= batch_records {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// JSON Lines from stdin; a transaction commits every `batch_records` records, or after
    /// `flush_interval_ms` without a full batch, so a slow trickle still reaches Kafka promptly.
    fn ingest_stdin(&mut self, stop: &AtomicBool) -> Result<()> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<std::io::Result<Vec<u8>>>(8192);
        std::thread::Builder::new()
            .name("stdin".into())
            .spawn(move || {
                let mut reader = std::io::BufReader::new(std::io::stdin().lock());
                loop {
                    let mut line = Vec::new();
                    match reader.read_until(b'\n', &mut line) {
                        Ok(0) => return,
                        Ok(_) => {
                            if tx.send(Ok(line)).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    }
                }
            })
            .map_err(StreamError::io("starting the stdin reader"))?;
        let batch_records = self.cfg.ingest.batch_records;
        let interval = Duration::from_millis(self.cfg.ingest.flush_interval_ms);
        let mut line_no = 0u64;
        let mut oldest_pending: Option<Instant> = None;
        while !stop.load(Ordering::Relaxed) {
            let wait = oldest_pending.map_or(interval, |t| interval.saturating_sub(t.elapsed()));
            match rx.recv_timeout(wait) {
                Ok(line) => {
                    let line = line.map_err(StreamError::io("reading stdin"))?;
                    line_no += 1;
                    let raw = line.trim_ascii();
                    if raw.is_empty() {
                        continue;
                    }
                    self.metrics.input("stdin").inc();
                    self.record(raw, Origin::Stdin(line_no));
                    oldest_pending.get_or_insert_with(Instant::now);
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if self.pending.records >= batch_records || oldest_pending.is_some_and(|t| t.elapsed() >= interval) {
                self.flush()?;
                oldest_pending = None;
            }
        }
        self.flush()
    }
}

/// Reads the checkpoints topic back (latest value per key).
fn load_checkpoints(cfg: &Config) -> Result<HashMap<String, Vec<u8>>> {
    let topic = &cfg.topics.ingest_checkpoints;
    let mut out = HashMap::new();
    let partitions: Vec<i32> = (0..topic.partitions).collect();
    read_to_end(&cfg.kafka, &topic.name, &partitions, Offset::Beginning, None, &mut |_, _, key, value| {
        if let (Some(k), Some(v)) = (key, value) {
            out.insert(String::from_utf8_lossy(k).into_owned(), v.to_vec());
        }
        Ok(())
    })
    .map_err(|e| StreamError::Source { what: format!("reading checkpoints from {}", topic.name), source: e.into() })?;
    Ok(out)
}

fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) {
    let until = Instant::now() + d;
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Ingests until a stop is requested (SIGTERM), or once with `args.once`, serving `/metrics` and
/// `/health` on `ingest.http_listen`.
pub fn run_ingest(cfg: Config, args: IngestArgs) -> Result<()> {
    let metrics = Metrics::new();
    let health = Health::new();
    serve("ingest.http_listen", &cfg.ingest.http_listen, metrics.clone(), health.clone())?;
    health.probe(&cfg.kafka.bootstrap_servers);
    let stop = crate::kafka::stop_flag()?;
    let catalog = Arc::new(Catalog::all_clouds().map_err(StreamError::source("loading the action catalog"))?);
    let organization = match &args.organization {
        Some(file) => {
            let name = file.display().to_string();
            let text = std::fs::read_to_string(file).map_err(StreamError::source(format!("reading {name}")))?;
            Some(
                grantwatch_core::org::Organization::parse(&text, &name)
                    .map_err(StreamError::source(format!("parsing {name}")))?,
            )
        }
        None => None,
    };
    let normalizer = Arc::new(Normalizer::new(
        ActionMap::new(catalog.clone()).map_err(StreamError::source("loading the CloudTrail action map"))?,
    ));
    let txn_id = format!("grantwatch-ingest-{}", cfg.ingest.instance_id);
    let producer = TxnProducer::new(&cfg.kafka, &txn_id, health.clone())?;
    let checkpoints = load_checkpoints(&cfg)?;
    tracing::info!(checkpoints = checkpoints.len(), "resuming from committed checkpoints");
    let poll = Duration::from_secs(cfg.ingest.poll_interval_secs);
    let lookup_sources = cfg.ingest.lookup_events.clone();
    let lookup_lag = cfg.ingest.lookup_lag_secs;
    let okta_sources = if args.okta_logs { cfg.ingest.okta.clone() } else { Vec::new() };
    let workspace_sources = if args.workspace_reports { cfg.ingest.workspace.clone() } else { Vec::new() };
    if args.okta_logs && okta_sources.is_empty() {
        tracing::warn!("--okta-logs, but the configuration names no [[ingest.okta]] source");
    }
    if args.workspace_reports && workspace_sources.is_empty() {
        tracing::warn!("--workspace-reports, but the configuration names no [[ingest.workspace]] source");
    }
    let api = api::ApiLimits::of(&cfg.ingest);
    let mut ingest = Ingest {
        cfg,
        producer,
        normalizer,
        catalog,
        checkpoints,
        pending: Pending::default(),
        metrics,
        entitlements_mark: None,
        organization,
        export_files: HashMap::new(),
        export_logs: Vec::new(),
        okta_org: None,
        humans: None,
    };
    if args.stdin {
        return ingest.ingest_stdin(&stop);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StreamError::io("starting the LookupEvents runtime"))?;
    let mut lookups = Vec::new();
    if args.lookup_events {
        for s in &lookup_sources {
            lookups.push(runtime.block_on(lookup::LookupSource::new(s.clone(), lookup_lag)));
        }
    }
    let client = {
        let _in_runtime = runtime.enter();
        api::client()?
    };
    let mut oktas = Vec::new();
    for s in okta_sources {
        oktas.push(okta::OktaLog::new(s, &ingest.catalog, client.clone(), api)?);
    }
    let mut workspaces: Vec<workspace::WorkspaceReports> =
        workspace_sources.into_iter().map(|s| workspace::WorkspaceReports::new(s, client.clone(), api)).collect();
    let entitlements = !args.iam.is_empty() || !args.clouds.is_empty();
    while !stop.load(Ordering::Relaxed) {
        if entitlements {
            ingest.ingest_entitlements(&args.iam, &args.clouds)?;
            ingest.mark_entitlements()?;
        }
        if !args.watch.is_empty() || !ingest.export_logs.is_empty() {
            let mut dirs = args.watch.clone();
            dirs.extend(ingest.export_logs.iter().cloned());
            ingest.ingest_dirs(&dirs, &stop)?;
        }
        for source in &mut lookups {
            runtime.block_on(source.poll(&mut ingest))?;
        }
        for source in &mut oktas {
            runtime.block_on(source.poll(&mut ingest, &stop))?;
        }
        for source in &mut workspaces {
            runtime.block_on(source.poll(&mut ingest, &stop))?;
        }
        if args.once {
            break;
        }
        sleep_unless_stopped(poll, &stop);
    }
    health.draining();
    ingest.flush()?;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use grantwatch_types::DeadLetter;

    use super::*;

    fn record(user_agent_bytes: usize) -> String {
        format!(
            r#"{{"eventID":"e1","eventTime":"2024-01-02T03:04:05Z","eventSource":"iam.amazonaws.com","eventName":"CreateLoginProfile","readOnly":false,"userIdentity":{{"type":"IAMUser","arn":"arn:aws:iam::111122223333:user/alice"}},"userAgent":"{}","requestParameters":{{"userName":"bob","password":"Hunter2-secret"}},"responseElements":{{"credentials":{{"accessKeyId":"ASIAKEEP","sessionToken":"FwoGZX-session"}}}}}}"#,
            "u".repeat(user_agent_bytes)
        )
    }

    #[test]
    fn an_oversized_event_becomes_a_bounded_dead_letter_naming_its_source() {
        let normalizer = Normalizer::aws().unwrap();
        let origin = Origin::File(Arc::from("trail/x.json.gz"), 7);
        let small = record(10);
        let event =
            convert_record(&normalizer, "events", 100_000, small.as_bytes(), &origin).unwrap().unwrap().remove(0);
        assert_eq!(event.kind, "event");
        let shown = String::from_utf8_lossy(&event.payload);
        assert!(!shown.contains("Hunter2-secret") && !shown.contains("FwoGZX-session"), "{shown}");

        let big = record(200_000);
        let error = convert_record(&normalizer, "events", 100_000, big.as_bytes(), &origin).unwrap().unwrap_err();
        assert!(error.contains("over ingest.max_event_bytes (100000)"), "{error}");
        assert!(error.contains("file trail/x.json.gz, record 7"), "{error}");
        let dlq = dead_letter_record("dlq", &origin, error, big.as_bytes()).unwrap();
        assert_eq!((dlq.topic.as_str(), dlq.kind), ("dlq", "dlq"));
        let dl: DeadLetter = serde_json::from_slice(&dlq.payload).unwrap();
        assert_eq!(dl.source, DeadLetterSource::File { path: "trail/x.json.gz".into(), record: 7 });
        assert!(dl.payload_truncated && dl.payload.len() <= DeadLetter::MAX_PAYLOAD);
        assert!(dlq.payload.len() < 80_000, "{} bytes", dlq.payload.len());
    }

    #[test]
    fn dead_letters_of_unusable_records_carry_no_credentials() {
        let normalizer = Normalizer::aws().unwrap();
        let origin = Origin::Stdin(3);
        let broken = record(10).replace(r#""eventTime":"2024-01-02T03:04:05Z","#, "");
        let error = convert_record(&normalizer, "events", 100_000, broken.as_bytes(), &origin).unwrap().unwrap_err();
        assert!(error.contains("eventTime") && error.contains("stdin, line 3"), "{error}");
        let dlq = dead_letter_record("dlq", &origin, error, broken.as_bytes()).unwrap();
        let shown = String::from_utf8(dlq.payload).unwrap();
        assert!(!shown.contains("Hunter2-secret") && !shown.contains("FwoGZX-session"), "{shown}");
        assert!(shown.contains("ASIAKEEP"), "{shown}");
    }

    /// What the taker receives from the readers, file by file in read order, as (index, kind) pairs and
    /// the file's end.
    fn read_all(todo: &[ToRead], threads: usize) -> Vec<Vec<String>> {
        let convert =
            Converter { normalizer: Arc::new(Normalizer::aws().unwrap()), topic: "events".into(), max_bytes: 100_000 };
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let mut feeds = Vec::new();
            for first in 0..threads {
                let (tx, rx) = std::sync::mpsc::sync_channel(1);
                feeds.push(Feed::new(rx));
                let (convert, stop) = (&convert, &stop);
                scope.spawn(move || read_files(todo, first, threads, convert, stop, &tx));
            }
            let mut files = Vec::new();
            for i in 0..todo.len() {
                let mut seen = Vec::new();
                loop {
                    match feeds[i % threads].next().unwrap() {
                        FileChunk::Records(records) => seen.extend(records.into_iter().map(|(index, c)| {
                            let kind = match c {
                                Converted::Events(e) => {
                                    format!("event {}", String::from_utf8_lossy(e[0].key.as_deref().unwrap()))
                                }
                                Converted::Unusable(error, _) => format!("unusable: {error}"),
                                Converted::NotApi => "not an API call".into(),
                                Converted::Oversized(why) => format!("oversized: {why}"),
                            };
                            format!("{index} {kind}")
                        })),
                        FileChunk::Done(error) => {
                            seen.push(format!("done {error:?}"));
                            break;
                        }
                    }
                }
                files.push(seen);
            }
            files
        })
    }

    #[test]
    fn reader_threads_hand_over_files_in_order_with_skips_and_unreadable_files_named() {
        let dir = tempfile::tempdir().unwrap();
        let call = |id: usize, who: &str| {
            format!(
                r#"{{"eventID":"e{id}","eventTime":"2024-01-02T03:04:05Z","eventSource":"s3.amazonaws.com","eventName":"ListBuckets","userIdentity":{{"type":"IAMUser","arn":"arn:aws:iam::111122223333:user/{who}"}}}}"#
            )
        };
        let not_api = r#"{"eventVersion":"1.08","eventTime":"2024-01-02T03:04:05Z","eventType":"AwsCloudTrailInsight","insightDetails":{}}"#;
        let mut todo = Vec::new();
        for n in 0..5 {
            let path = dir.path().join(format!("f{n}.json"));
            let body = match n {
                // Unusable as a whole: not JSON, and a gzip file that is not gzip.
                2 => "{\"Records\": [".to_string(),
                // A record without its event time (a dead letter), an Insights record (no event), a call.
                3 => format!(
                    r#"{{"Records":[{},{not_api},{}]}}"#,
                    call(30, "carol").replace(r#""eventTime":"2024-01-02T03:04:05Z","#, ""),
                    call(31, "carol")
                ),
                _ => format!(
                    r#"{{"Records":[{},{}]}}"#,
                    call(n * 10, &format!("u{n}")),
                    call(n * 10 + 1, &format!("u{n}"))
                ),
            };
            std::fs::write(&path, body).unwrap();
            let file = grantwatch_files::source_file(&path).unwrap();
            // File 1 resumes after its first record.
            todo.push(ToRead {
                path: path.display().to_string().into(),
                key: format!("file:{n}"),
                skip: u64::from(n == 1),
                file,
            });
        }
        let gz = dir.path().join("f5.json.gz");
        std::fs::write(&gz, b"not gzip at all").unwrap();
        todo.push(ToRead {
            path: gz.display().to_string().into(),
            key: "file:5".into(),
            skip: 0,
            file: grantwatch_files::source_file(&gz).unwrap(),
        });

        let one = read_all(&todo, 1);
        for threads in [2, 3, 4] {
            assert_eq!(read_all(&todo, threads), one, "{threads} threads");
        }
        let user = |n: usize| format!("event arn:aws:iam::111122223333:user/u{n}");
        assert_eq!(one[0], [format!("0 {}", user(0)), format!("1 {}", user(0)), "done None".into()]);
        assert_eq!(one[1], [format!("1 {}", user(1)), "done None".into()]);
        assert_eq!(one[2].len(), 1);
        assert!(one[2][0].starts_with("done Some(") && one[2][0].contains("f2.json"), "{:?}", one[2]);
        assert_eq!(one[3].len(), 4);
        assert!(one[3][0].starts_with("0 unusable: ") && one[3][0].contains("f3.json, record 0"), "{:?}", one[3]);
        assert_eq!(
            one[3][1..],
            [
                "1 not an API call".to_string(),
                "2 event arn:aws:iam::111122223333:user/carol".into(),
                "done None".into()
            ]
        );
        assert_eq!(one[4], [format!("0 {}", user(4)), format!("1 {}", user(4)), "done None".into()]);
        assert!(
            one[5].len() == 1 && one[5][0].starts_with("done Some(") && one[5][0].contains("f5.json.gz"),
            "{:?}",
            one[5]
        );
    }
}
