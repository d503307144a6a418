//! The consume–process–produce runner shared by the processor and the detector.
//!
//! Partition `p` of every input topic forms task `p`: its own RocksDB directory and its own stage.
//! Exactly-once in effect comes from a local outbox plus a Kafka transaction:
//!
//! 1. Every commit interval, each task writes **one RocksDB batch** holding the stage's state writes,
//!    the next input offsets, its watermark, and the outputs produced since the last commit (the
//!    *outbox*, with the offsets it starts from).
//! 2. Then **one Kafka transaction** produces all outboxes and commits the consumed offsets
//!    (`send_offsets_to_transaction`, fenced by the consumer group generation).
//! 3. Then each task deletes its outbox.
//!
//! A task opening (start, restart, rebalance) compares its local offsets `L`, its outbox start `S`
//! and the group's committed offsets `C`: `C == S` means step 2 never happened, so the outbox is sent
//! now; `C == L` means it did, so the outbox is dropped; otherwise the partition moved on elsewhere.
//! If `C` is ahead of `L` the task catches up by re-reading `[L, C)` with outputs discarded (another
//! instance already produced them); if `S < C < L` the local state is unusable and is rebuilt from the
//! start of the input topic. Messages below `L` are skipped. Consumers of the outputs read with
//! `isolation.level=read_committed`, so an aborted transaction's records are never seen.
//!
//! **Alignment.** An app may join a *side input* as of each event's time (the processor its
//! entitlements, the detector its PCI updates). The side topic carries watermark marks
//! ([`grantwatch_types::WatermarkMark`]): "every record up to this time precedes me". An event that
//! would move the task's watermark is held (in memory, its partition paused past a bound) until the side input is complete up
//! to what the new watermark needs ([`App::side_needed`]); a side record takes effect when the
//! watermark reaches its time ([`App::side_time`]), kept in the task's state until then. What the stage
//! sees is then a function of the topics' contents, not of which topic the consumer happened to fetch
//! first: a backlog, a live run and a run with restarts give the same outputs. Records of the side
//! input before its first mark (the first snapshot) take effect at once, and events wait for that mark.
//! An app that writes a side input for another ([`App::output_mark`]) writes the marks into it.
//!
//! **Broadcast input.** An app may also read a topic whole in every task ([`App::broadcast_input`]):
//! low-volume reference records that concern identities of every partition (the detector's on-demand
//! grants, from the access service's audit topic). It is not in the group's subscription: a task reads
//! it to its end when it opens, before it catches up on its own inputs, and a consumer of the runner's
//! own, positioned at the topic's end when the runner starts, hands every later record to every open
//! task. The stage folds them idempotently (each open reads them all again) and raises nothing on them;
//! they take effect when read, neither aligned on event time nor in the task's offsets.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use grantwatch_core::stage::{Cx, Stage, StageError};
use grantwatch_state::keys;
use grantwatch_state::{MemStore, StateError, StateRead, StateStore, Table, WriteBatch};
use grantwatch_state_rocks::RocksStore;
use grantwatch_types::{DeadLetter, DeadLetterSource, EventTime};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::kafka::changelog;
use crate::kafka::client::{
    Emit, Refusal, ServiceContext, TxnOutcome, TxnProducer, client_config, read_to_end, record_bytes, set_aside_refused,
};
use crate::kafka::config::KafkaConfig;
use crate::kafka::error::{Result, StreamError};
use crate::kafka::metrics::{Health, Metrics};

type In<A> = <<A as App>::Stage as Stage>::In;
type Out<A> = <<A as App>::Stage as Stage>::Out;

/// What a service plugs into the runner: its stage, and how records become stage inputs and outputs.
pub trait App {
    type Stage: Stage;

    /// Service name (logs, dead letters).
    fn name(&self) -> &'static str;
    /// Input topics; partition `p` of each is read by task `p`.
    fn inputs(&self) -> Vec<String>;
    /// The stage over a task's state; a value there that does not decode fails the task
    /// ([`grantwatch_state::StateError::Corrupt`]), it is never read as empty.
    fn open_stage(&self, state: &dyn StateRead) -> Result<Self::Stage, StageError>;
    /// Decodes a record of input `input`; an error sends it to the dead-letter topic.
    fn decode(&self, input: usize, key: Option<&[u8]>, payload: &[u8]) -> Result<In<Self>, String>;
    /// The event time of an input, if it has one (it then drives the watermark).
    fn event_time(&self, input: &In<Self>) -> Option<EventTime>;
    fn encode(&self, out: Out<Self>, emits: &mut Vec<Emit>);
    /// The input joined as of each event's time, if the app aligns on one (see the module docs).
    fn side_input(&self) -> Option<usize> {
        None
    }
    /// When a record of the side input takes effect; `None`: when read.
    fn side_time(&self, _input: &In<Self>) -> Option<EventTime> {
        None
    }
    /// How far the side input must be complete before the stage's watermark may reach `watermark`;
    /// side records up to that time take effect before the stage sees the watermark.
    fn side_needed(&self, watermark: i64) -> i64 {
        watermark
    }
    /// The marks this app writes for a consumer that aligns on its output: the topic, and how far the
    /// output is complete once the stage has seen `watermark`.
    fn output_mark(&self, _watermark: i64) -> Option<(&str, i64)> {
        None
    }
    /// Whether this app copies late events to the late topic (one service does, so each is there once).
    fn routes_late(&self) -> bool {
        true
    }
    /// A topic every task reads whole, whatever its partition (see the module docs); `None`: none.
    fn broadcast_input(&self) -> Option<String> {
        None
    }
    /// Decodes a record of the broadcast input. An error is logged and counted, not dead-lettered: every
    /// task reads the same record.
    fn decode_broadcast(&self, _payload: &[u8]) -> Result<In<Self>, String> {
        Err("this service reads no broadcast input".into())
    }
}

/// Runner settings.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    pub kafka: KafkaConfig,
    pub group_id: String,
    pub instance_id: String,
    pub state_dir: PathBuf,
    pub max_out_of_orderness_ms: i64,
    pub commit_interval: Duration,
    pub late_topic: String,
    pub dlq_topic: String,
    /// Pending stage writes that force an early commit (bounds memory).
    pub max_pending: usize,
    /// Largest output record (payload and key); a larger one becomes a dead letter instead of
    /// failing every commit. [`crate::kafka::client::MAX_RECORD_BYTES`] unless testing.
    pub max_record_bytes: usize,
    /// The compacted topic the tasks log their state to ([`changelog`]); `None`: no log, a task
    /// without local state rebuilds it from its input topics.
    pub changelog_topic: Option<String>,
}

/// A dead letter of `raw`, fit to publish: the payload cut to [`DeadLetter::MAX_PAYLOAD`] and
/// without credentials (values of secret-looking keys read `"<redacted>"`, see
/// `grantwatch_core::cloudtrail::redact`). Every dead letter the services write is made here.
pub fn dead_letter(service: &str, source: DeadLetterSource, error: String, raw: &[u8]) -> DeadLetter {
    // Cut first (a huge record is never scanned whole); a secret cut in half is still redacted.
    let cut = &raw[..raw.len().min(DeadLetter::MAX_PAYLOAD)];
    let redacted = grantwatch_core::cloudtrail::redact::redact_json(cut);
    // The marker can be longer than the value it replaces: `new` cuts again if need be.
    let mut dl = DeadLetter::new(service, source, error, &redacted);
    dl.payload_truncated |= cut.len() < raw.len();
    dl
}

/// [`dead_letter`] as a record of the dead-letter topic; `None` only if it cannot be serialized.
pub fn dead_letter_emit(dlq_topic: &str, key: Option<Vec<u8>>, dl: &DeadLetter) -> Option<Emit> {
    match serde_json::to_vec(dl) {
        Ok(payload) => Some(Emit { partition: None, topic: dlq_topic.to_string(), key, payload, kind: "dlq" }),
        Err(e) => {
            tracing::error!(error = %e, "cannot serialize a dead letter");
            None
        }
    }
}

/// Where the runner keeps each task's state. The services keep a RocksDB directory per partition
/// ([`RocksDirs`]); tests keep [`MemStore`]s that outlive a runner, as a disk outlives a process.
pub trait TaskStores {
    type Store: StateStore;
    /// Partition `p`'s state as its last write left it (empty the first time).
    fn open(&self, partition: i32) -> Result<Self::Store>;
    /// Discards partition `p`'s state (local state diverged from the group) and opens it empty.
    fn reset(&self, partition: i32, store: Self::Store) -> Result<Self::Store>;
    /// Bytes the store takes on disk, for the `state_bytes` gauge.
    fn disk_bytes(&self, _store: &Self::Store) -> u64 {
        0
    }
}

/// One RocksDB directory per partition, `p<partition>` under one state directory.
#[derive(Debug, Clone)]
pub struct RocksDirs {
    dir: PathBuf,
}

impl RocksDirs {
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)
            .map_err(StreamError::io(format!("creating state directory {}", dir.display())))?;
        Ok(Self { dir })
    }

    fn task_dir(&self, partition: i32) -> PathBuf {
        self.dir.join(format!("p{partition}"))
    }
}

impl TaskStores for RocksDirs {
    type Store = RocksStore;

    fn open(&self, partition: i32) -> Result<RocksStore> {
        let dir = self.task_dir(partition);
        RocksStore::open(&dir).map_err(|source| StreamError::OpenState { dir, source })
    }

    fn reset(&self, partition: i32, store: RocksStore) -> Result<RocksStore> {
        drop(store); // closes the database before its files go
        let dir = self.task_dir(partition);
        std::fs::remove_dir_all(&dir).map_err(StreamError::io(format!("removing {}", dir.display())))?;
        self.open(partition)
    }

    fn disk_bytes(&self, store: &RocksStore) -> u64 {
        store.disk_bytes()
    }
}

/// In-memory stores, one per partition, kept across runners: what a test restarts a runner on.
#[derive(Debug, Default, Clone)]
pub struct MemStores {
    stores: Arc<Mutex<BTreeMap<i32, Arc<MemStore>>>>,
}

impl MemStores {
    /// Partition `p`'s store, created empty if need be (tests look inside or prepare it).
    pub fn get(&self, partition: i32) -> Arc<MemStore> {
        let mut stores = self.stores.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        stores.entry(partition).or_default().clone()
    }
}

impl TaskStores for MemStores {
    type Store = Arc<MemStore>;

    fn open(&self, partition: i32) -> Result<Arc<MemStore>> {
        Ok(self.get(partition))
    }

    fn reset(&self, partition: i32, _store: Arc<MemStore>) -> Result<Arc<MemStore>> {
        let fresh = Arc::new(MemStore::new());
        let mut stores = self.stores.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        stores.insert(partition, fresh.clone());
        Ok(fresh)
    }
}

/// What every consuming service does around its app: serve `/metrics` and `/health` on `http_listen`,
/// run until SIGTERM or SIGINT, commit, return.
/// `http_key` names the setting `http_listen` came from, for the error when the address is taken.
pub fn serve_and_run<A>(app: A, cfg: RunnerConfig, http_key: &str, http_listen: &str) -> Result<()>
where
    A: App + Send + 'static,
    A::Stage: Send,
{
    let metrics = Metrics::new();
    let health = Health::new();
    crate::kafka::metrics::serve(http_key, http_listen, metrics.clone(), health.clone())?;
    health.probe(&cfg.kafka.bootstrap_servers);
    let stop = crate::kafka::stop_flag()?;
    let stores = RocksDirs::new(&cfg.state_dir)?;
    let mut runner = Runner::new(app, cfg, stores, metrics, health)?;
    runner.run(&stop)?;
    // Everything is committed. Closing the clients leaves the consumer group at once (the partitions
    // move without waiting for the session timeout), but librdkafka's close was seen to block for
    // minutes: it gets a bounded time, then the process exits anyway, as a kill would.
    let (closed, wait) = std::sync::mpsc::channel();
    let closing = std::thread::Builder::new().name("close".into()).spawn(move || {
        drop(runner);
        let _ = closed.send(());
    });
    if closing.is_ok() && wait.recv_timeout(Duration::from_secs(10)).is_err() {
        tracing::warn!("closing the Kafka clients took over 10 s; exiting without waiting");
    }
    tracing::info!("stopped");
    Ok(())
}

const OFFSET: &keys::KeySpace = &keys::RUNNER_OFFSET;
const OUTBOX: &[u8] = keys::RUNNER_OUTBOX.prefix;
const OUTBOX_FROM: &keys::KeySpace = &keys::RUNNER_OUTBOX_FROM;
const MAX_TIME: &keys::KeySpace = &keys::RUNNER_MAX_TIME;
const SIDE_WM: &keys::KeySpace = &keys::RUNNER_SIDE_WATERMARK;
const OUT_MARK: &keys::KeySpace = &keys::RUNNER_OUT_MARK;
const SIDE_PENDING: &keys::KeySpace = &keys::RUNNER_SIDE_PENDING;
/// Records a task holds in memory while it waits for its side input before its partition is paused.
const HOLD_BYTES: usize = 8 << 20;

fn pending_key(time: i64, offset: i64) -> Vec<u8> {
    let mut k = SIDE_PENDING.prefix.to_vec();
    k.extend_from_slice(&time.to_be_bytes());
    k.extend_from_slice(&offset.to_be_bytes());
    k
}

fn pending_time(key: &[u8]) -> Option<i64> {
    let p = SIDE_PENDING.prefix.len();
    key.get(p..p + 8).and_then(|b| b.try_into().ok()).map(i64::from_be_bytes)
}

fn offset_key(space: &keys::KeySpace, topic: &str) -> Vec<u8> {
    space.key_str(topic)
}

/// An offset or time of `space` at `key`; one that is not 8 bytes is corrupt state, never "none":
/// a missing offset would re-apply a partition from its start, a missing time move the watermark back.
fn read_i64(state: &dyn StateRead, space: &keys::KeySpace, key: &[u8]) -> Result<Option<i64>, StateError> {
    state.get(Table::Meta, key)?.map(|v| space.decode_i64(key, &v)).transpose()
}

struct Task<S, St> {
    partition: i32,
    store: St,
    stage: S,
    /// Next offset to apply, per input; `None`: nothing applied yet.
    next: Vec<Option<i64>>,
    /// The group's committed offsets as this instance last knew them: where an outbox starts.
    committed_next: Vec<Option<i64>>,
    max_time: Option<i64>,
    emits: Vec<Emit>,
    dirty: bool,
    /// Latest watermark mark read on the side input.
    side_wm: Option<i64>,
    /// Latest watermark mark written (see [`App::output_mark`]).
    out_mark: Option<i64>,
    /// Records waiting for the side input (their partition is paused meanwhile), in offset order.
    held: std::collections::VecDeque<rdkafka::message::OwnedMessage>,
    held_bytes: usize,
    paused: bool,
    /// Earliest time of a side record kept in state until it takes effect.
    side_due: Option<i64>,
    /// Kept side records applied since the last write (deleted by it).
    side_applied: Vec<Vec<u8>>,
    /// When the task began waiting for the side input (for the log and `/health`, never logic).
    waiting_since: Option<Instant>,
    /// A watermark mark is in the outbox: commit now rather than at the interval.
    marked: bool,
    /// State keys written outside the commit batch since the last commit (side records kept until
    /// due): their values go to the changelog with the commit's.
    logged: std::collections::BTreeSet<(Table, Vec<u8>)>,
    /// The changelog does not hold this task's history yet: the next commit logs the whole state.
    dump: bool,
}

/// What became of a consumed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handled {
    Applied,
    /// Waits for the side input; the caller keeps it and pauses its partition.
    Held,
    /// A mark moved the side input's watermark: held records may go now.
    SideAdvanced,
}

/// What a held record counts against [`HOLD_BYTES`].
fn held_size(m: &rdkafka::message::OwnedMessage) -> usize {
    m.payload().map_or(0, <[u8]>::len) + m.key().map_or(0, <[u8]>::len) + 64
}

impl<S, St> Task<S, St> {
    fn hold_back(&mut self, m: rdkafka::message::OwnedMessage) {
        self.held_bytes += held_size(&m);
        self.held.push_back(m);
    }

    fn watermark(&self, bound: i64) -> Option<i64> {
        self.max_time.map(|t| t.saturating_sub(bound))
    }
}

/// The broadcast input's topic, its partitions, and the consumer that brings its new records.
struct Broadcast {
    topic: String,
    partitions: Vec<i32>,
    consumer: BaseConsumer,
}

impl Broadcast {
    /// A consumer of every partition of `topic` from its current end; `None` if the topic does not
    /// exist (logged: the service runs without it).
    fn open(kafka: &KafkaConfig, topic: &str) -> Result<Option<Broadcast>> {
        let consumer: BaseConsumer = client_config(kafka)
            .set("group.id", "grantwatch-broadcast")
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", "50")
            .create()
            .map_err(|e| StreamError::client(kafka, format!("creating the reader of {topic}"), e))?;
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(30))
            .map_err(|e| StreamError::kafka(format!("reading the metadata of {topic}"), e))?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            tracing::warn!(%topic, "broadcast input topic does not exist (create-topics creates it); running without it");
            return Ok(None);
        }
        let mut tpl = TopicPartitionList::new();
        for &p in &partitions {
            let (_, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(30))
                .map_err(|e| StreamError::kafka(format!("fetching the watermarks of {topic}"), e))?;
            tpl.add_partition_offset(topic, p, Offset::Offset(high))
                .map_err(|e| StreamError::kafka(format!("positioning the reader of {topic}"), e))?;
        }
        consumer.assign(&tpl).map_err(|e| StreamError::kafka(format!("assigning {topic}"), e))?;
        tracing::info!(%topic, partitions = partitions.len(), "broadcast input open");
        Ok(Some(Broadcast { topic: topic.to_string(), partitions, consumer }))
    }
}

/// The runner: one consumer, one transactional producer, the tasks of the assigned partitions.
pub struct Runner<A: App, T: TaskStores = RocksDirs> {
    app: A,
    cfg: RunnerConfig,
    stores: T,
    inputs: Vec<String>,
    consumer: BaseConsumer<ServiceContext>,
    producer: TxnProducer,
    tasks: BTreeMap<i32, Task<A::Stage, T::Store>>,
    /// Partitions whose task could not open (its outbox could not be sent while the consumer rejoins
    /// its group): paused, retried from the loop once `reopen_after` passes.
    reopen: std::collections::BTreeSet<i32>,
    reopen_after: Instant,
    /// A transaction of the producer could not be ended: it is replaced before the next attempt.
    producer_suspect: bool,
    /// Records polled for a partition in `reopen` before its pause took effect, applied when it opens.
    stash: BTreeMap<i32, Vec<rdkafka::message::OwnedMessage>>,
    /// Changelog records of an aborted transaction, per task, sent again with its outbox when the task
    /// reopens (after a crash they are gone, and the reopened task logs its whole state instead).
    unsent_log: BTreeMap<i32, Vec<Emit>>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    broadcast: Option<Broadcast>,
}

impl<A: App, T: TaskStores> Runner<A, T> {
    pub fn new(app: A, cfg: RunnerConfig, stores: T, metrics: Arc<Metrics>, health: Arc<Health>) -> Result<Self> {
        let inputs = app.inputs();
        let consumer: BaseConsumer<ServiceContext> = client_config(&cfg.kafka)
            .set("group.id", &cfg.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            // Range assignment gives one instance partition p of every input: co-partitioned tasks.
            .set("partition.assignment.strategy", "range")
            .set("max.poll.interval.ms", "600000")
            // No static membership (group.instance.id): librdkafka consumers that restart quickly
            // under a static id were seen to get their assignment back and then fetch nothing.
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "1000")
            .set("statistics.interval.ms", "5000")
            // Records become readable only when their transaction commits; a short fetch wait lets
            // the consumer see them promptly (the default 500 ms dominates produce-to-alert latency).
            .set("fetch.wait.max.ms", "50")
            .create_with_context(ServiceContext::new(health.clone()))
            .map_err(|e| StreamError::client(&cfg.kafka, "creating the consumer", e))?;
        let names: Vec<&str> = inputs.iter().map(String::as_str).collect();
        consumer.subscribe(&names).map_err(|e| StreamError::kafka(format!("subscribing to {names:?}"), e))?;
        let txn_id = format!("{}-{}", cfg.group_id, cfg.instance_id);
        let producer = TxnProducer::new(&cfg.kafka, &txn_id, health.clone())?;
        // Positioned before any task opens: a task reads the topic to its end when it opens, so every
        // record is read by the one or the other (some by both: the stage folds them idempotently).
        let broadcast = match app.broadcast_input() {
            Some(topic) => Broadcast::open(&cfg.kafka, &topic)?,
            None => None,
        };
        Ok(Self {
            app,
            cfg,
            stores,
            inputs,
            consumer,
            producer,
            tasks: BTreeMap::new(),
            reopen: Default::default(),
            reopen_after: Instant::now(),
            producer_suspect: false,
            stash: BTreeMap::new(),
            unsent_log: BTreeMap::new(),
            metrics,
            health,
            broadcast,
        })
    }

    /// Runs until `stop` is set, then commits what is in flight and returns.
    pub fn run(&mut self, stop: &AtomicBool) -> Result<()> {
        let input_counters: Vec<_> = self.inputs.iter().map(|t| self.metrics.input(t)).collect();
        let mut last_commit = Instant::now();
        let mut last_stats = Instant::now();
        let mut consumed_since_stats = 0u64;
        let mut since_clock = 0u32;
        while !stop.load(Ordering::Relaxed) {
            let polled = self.consumer.poll(Duration::from_millis(100));
            let got_message = matches!(polled, Some(Ok(_)));
            let idle = polled.is_none();
            match polled {
                Some(Ok(m)) => {
                    self.health.broker_ok();
                    consumed_since_stats += 1;
                    let input = self.inputs.iter().position(|t| t == m.topic()).unwrap_or(0);
                    input_counters[input].inc();
                    let partition = m.partition();
                    let rebalanced = self.consumer.context().rebalanced.load(Ordering::Relaxed);
                    // The common case works on the borrowed message; a task must first open (which
                    // needs the consumer) only after a rebalance, so then the message is copied.
                    let handled = match self.tasks.get_mut(&partition) {
                        Some(task) if !rebalanced => {
                            let handled = handle(&self.app, &self.cfg, &self.metrics, input, task, &m, false)?;
                            if handled == Handled::Held {
                                task.hold_back(m.detach());
                            }
                            handled
                        }
                        _ => {
                            let owned = m.detach();
                            drop(m);
                            self.handle_rebalances()?;
                            if !self.tasks.contains_key(&partition) && !self.reopen.contains(&partition) {
                                self.try_open(partition)?;
                            }
                            if !self.tasks.contains_key(&partition) {
                                self.stash.entry(partition).or_default().push(owned);
                                continue;
                            }
                            match self.tasks.get_mut(&partition) {
                                Some(task) => {
                                    let handled =
                                        handle(&self.app, &self.cfg, &self.metrics, input, task, &owned, false)?;
                                    if handled == Handled::Held {
                                        task.hold_back(owned);
                                    }
                                    handled
                                }
                                None => Handled::Applied,
                            }
                        }
                    };
                    match handled {
                        Handled::Held => self.pause(partition, input),
                        Handled::SideAdvanced => self.release_held(partition)?,
                        Handled::Applied => {}
                    }
                    // A mark is committed at once: a consumer aligned on this output waits for it.
                    if self.tasks.get(&partition).is_some_and(|t| t.marked || t.stage.pending() > self.cfg.max_pending)
                    {
                        self.commit()?;
                        last_commit = Instant::now();
                    }
                }
                Some(Err(e)) if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::Fatal) => {
                    // Crash-only: a restart reconciles every task from state and the group's offsets.
                    return Err(StreamError::kafka("consuming (fatal)", e));
                }
                Some(Err(e)) => tracing::warn!(error = %e, "consumer error"),
                None => {}
            }
            if self.consumer.context().rebalanced.load(Ordering::Relaxed) {
                self.handle_rebalances()?;
            }
            // Reading the clock costs more than handling a small record: look every 256 records.
            since_clock += 1;
            if got_message && since_clock < 256 {
                continue;
            }
            since_clock = 0;
            self.poll_broadcast()?;
            if !self.reopen.is_empty() && Instant::now() >= self.reopen_after {
                self.retry_reopen()?;
            }
            if last_commit.elapsed() >= self.cfg.commit_interval {
                self.commit()?;
                last_commit = Instant::now();
            }
            if last_stats.elapsed() >= Duration::from_secs(5) {
                let secs = last_stats.elapsed().as_secs_f64();
                self.metrics.events_per_second.set((consumed_since_stats as f64 / secs) as i64);
                consumed_since_stats = 0;
                last_stats = Instant::now();
                self.update_gauges(idle);
            }
        }
        self.health.draining();
        tracing::info!("stopping: committing in-flight work");
        self.commit()?;
        Ok(())
    }

    /// Hands the broadcast input's new records to every open task.
    fn poll_broadcast(&mut self) -> Result<()> {
        let Some(b) = &self.broadcast else { return Ok(()) };
        let counter = self.metrics.input(&b.topic);
        let mut outs = Vec::new();
        while let Some(polled) = b.consumer.poll(Duration::ZERO) {
            let m = match polled {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, topic = %b.topic, "broadcast input error");
                    break;
                }
            };
            counter.inc();
            match self.app.decode_broadcast(m.payload().unwrap_or_default()) {
                Ok(value) => {
                    for task in self.tasks.values_mut() {
                        task.stage.process(&value, &mut Cx { state: &task.store, out: &mut outs })?;
                    }
                }
                Err(error) => tracing::warn!(
                    topic = %b.topic, partition = m.partition(), offset = m.offset(), %error,
                    "unusable broadcast record skipped"
                ),
            }
        }
        if !outs.is_empty() {
            tracing::warn!(outputs = outs.len(), "a broadcast record produced outputs; dropped");
        }
        Ok(())
    }

    /// Reads the broadcast input to its end into a task that is opening.
    fn read_broadcast(&self, task: &mut Task<A::Stage, T::Store>) -> Result<()> {
        let Some(b) = &self.broadcast else { return Ok(()) };
        let (mut read, mut unusable) = (0u64, 0u64);
        let mut outs = Vec::new();
        read_to_end(&self.cfg.kafka, &b.topic, &b.partitions, Offset::Beginning, None, &mut |_, _, _, payload| {
            read += 1;
            match self.app.decode_broadcast(payload.unwrap_or_default()) {
                Ok(value) => task.stage.process(&value, &mut Cx { state: &task.store, out: &mut outs })?,
                Err(_) => unusable += 1,
            }
            Ok(())
        })?;
        if unusable > 0 {
            tracing::warn!(topic = %b.topic, unusable, "unusable broadcast records skipped");
        }
        tracing::info!(partition = task.partition, topic = %b.topic, read, "broadcast input read");
        Ok(())
    }

    /// Pauses input `input` of partition `p` while its task holds records (see the module docs).
    fn pause(&mut self, p: i32, input: usize) {
        let Some(task) = self.tasks.get_mut(&p) else { return };
        if task.paused {
            return;
        }
        // A short wait (the other service's next commit) is absorbed in memory: pausing drops what the
        // consumer prefetched and resuming fetches it again, which costs more than the wait. Past
        // HOLD_BYTES the partition is paused, so memory stays bounded.
        if task.waiting_since.is_none() {
            task.waiting_since = Some(Instant::now());
            let side = self.app.side_input().map(|i| self.inputs[i].as_str()).unwrap_or_default();
            if task.side_wm.is_none() {
                tracing::info!(partition = p, side, "waiting for the first watermark mark of the side input");
            } else {
                tracing::debug!(partition = p, side, side_wm = ?task.side_wm, "waiting for the side input");
            }
        }
        if task.held_bytes < HOLD_BYTES {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.inputs[input], p);
        match self.consumer.pause(&tpl) {
            Ok(()) => task.paused = true,
            // Not paused: records keep coming and are held in order (memory grows until the mark).
            Err(e) => tracing::warn!(error = %e, partition = p, "cannot pause a waiting partition"),
        }
    }

    /// Applies held records of partition `p` as far as the side input now allows; resumes the
    /// partition when none is left.
    fn release_held(&mut self, p: i32) -> Result<()> {
        let Some(task) = self.tasks.get_mut(&p) else { return Ok(()) };
        while let Some(m) = task.held.pop_front() {
            task.held_bytes = task.held_bytes.saturating_sub(held_size(&m));
            let input = self.inputs.iter().position(|t| t == m.topic()).unwrap_or(0);
            if handle(&self.app, &self.cfg, &self.metrics, input, task, &m, true)? == Handled::Held {
                task.held_bytes += held_size(&m);
                task.held.push_front(m);
                return Ok(());
            }
        }
        if let Some(since) = task.waiting_since.take() {
            tracing::debug!(partition = p, waited_ms = since.elapsed().as_millis() as u64, "side input caught up");
        }
        if task.paused {
            let mut tpl = TopicPartitionList::new();
            for (i, t) in self.inputs.iter().enumerate() {
                if Some(i) != self.app.side_input() {
                    tpl.add_partition(t, p);
                }
            }
            self.consumer.resume(&tpl).map_err(|e| StreamError::kafka(format!("resuming partition {p}"), e))?;
            task.paused = false;
        }
        Ok(())
    }

    /// `idle`: the last poll found nothing to deliver, so every partition not paused is caught up
    /// (what lies between its next offset and its end are transaction markers, not records).
    fn update_gauges(&self, idle: bool) {
        let ends = self.consumer.context().end_offsets.lock().map(|e| e.clone()).unwrap_or_default();
        let mut bytes = 0u64;
        for task in self.tasks.values() {
            bytes += self.stores.disk_bytes(&task.store);
            for (i, topic) in self.inputs.iter().enumerate() {
                if let Some(end) = ends.get(&(topic.clone(), task.partition)) {
                    let label = crate::kafka::metrics::PartitionLabel {
                        topic: topic.clone(),
                        partition: task.partition.to_string(),
                    };
                    let lag = if idle && !task.paused { 0 } else { (end - task.next[i].unwrap_or(0)).max(0) };
                    self.metrics.consumer_lag.get_or_create(&label).set(lag);
                }
                let label = crate::kafka::metrics::PartitionLabel {
                    topic: topic.clone(),
                    partition: task.partition.to_string(),
                };
                let wm = if Some(i) == self.app.side_input() {
                    task.side_wm
                } else {
                    task.watermark(self.cfg.max_out_of_orderness_ms)
                };
                if let Some(wm) = wm {
                    self.metrics.watermark.get_or_create(&label).set(wm);
                }
            }
        }
        self.metrics.state_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        let waiting = self.tasks.values().filter(|t| !t.held.is_empty()).count();
        self.health.partitions(self.tasks.len(), waiting);
    }

    fn handle_rebalances(&mut self) -> Result<()> {
        let log = self.consumer.context().take_rebalances();
        for (_, p) in log.revoked {
            self.reopen.remove(&p);
            self.stash.remove(&p);
            if self.tasks.remove(&p).is_some() {
                tracing::info!(partition = p, "partition revoked; uncommitted work is left to its next owner");
            }
        }
        let mut assigned: Vec<i32> = log.assigned.into_iter().map(|(_, p)| p).collect();
        assigned.sort_unstable();
        assigned.dedup();
        for p in assigned {
            if !self.tasks.contains_key(&p) {
                self.try_open(p)?;
            }
        }
        Ok(())
    }

    /// Opens partition `p`'s task; if its interrupted commit cannot be completed now (the transaction
    /// is aborted: typically the consumer lost its group membership while the broker was away and has
    /// not rejoined yet, which needs this loop to poll), pauses the partition and retries later
    /// instead of failing the service.
    fn try_open(&mut self, p: i32) -> Result<()> {
        match self.open_task(p) {
            Ok(()) => {
                self.reopen.remove(&p);
                let stashed = self.stash.remove(&p).unwrap_or_default();
                for m in stashed {
                    let input = self.inputs.iter().position(|t| t == m.topic()).unwrap_or(0);
                    let Some(task) = self.tasks.get_mut(&p) else { break };
                    match handle(&self.app, &self.cfg, &self.metrics, input, task, &m, false)? {
                        Handled::Held => {
                            task.hold_back(m);
                            self.pause(p, input);
                        }
                        Handled::SideAdvanced => self.release_held(p)?,
                        Handled::Applied => {}
                    }
                }
                Ok(())
            }
            Err(StreamError::Transaction { what, why }) => {
                tracing::warn!(partition = p, %what, %why, "task not opened yet; retrying once the group settles");
                self.producer_suspect |= what.starts_with("aborting");
                let mut tpl = TopicPartitionList::new();
                for t in &self.inputs {
                    tpl.add_partition(t, p);
                }
                if let Err(e) = self.consumer.pause(&tpl) {
                    tracing::debug!(error = %e, partition = p, "pause while reopening");
                }
                self.reopen.insert(p);
                self.reopen_after = Instant::now() + Duration::from_secs(1);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Retries the partitions whose task could not open, those still assigned to this instance.
    fn retry_reopen(&mut self) -> Result<()> {
        if std::mem::take(&mut self.producer_suspect) {
            self.renew_producer()?;
        }
        let assigned: std::collections::BTreeSet<i32> = match self.consumer.assignment() {
            Ok(tpl) => tpl.elements().iter().map(|e| e.partition()).collect(),
            Err(_) => return Ok(()),
        };
        let due: Vec<i32> = std::mem::take(&mut self.reopen).into_iter().collect();
        for p in due {
            if assigned.contains(&p) && !self.tasks.contains_key(&p) {
                self.try_open(p)?;
            } else {
                self.stash.remove(&p);
            }
        }
        Ok(())
    }

    /// Replaces the transactional producer: the new one, under the same transactional id, fences the
    /// old one and aborts the transaction it could not end (as a restart would, without one).
    fn renew_producer(&mut self) -> Result<()> {
        tracing::warn!("replacing the transactional producer");
        let txn_id = format!("{}-{}", self.cfg.group_id, self.cfg.instance_id);
        let fresh = TxnProducer::new(&self.cfg.kafka, &txn_id, self.health.clone())?;
        drop(std::mem::replace(&mut self.producer, fresh));
        self.metrics.recovery("producer_renewed").inc();
        Ok(())
    }

    /// Committed group offsets of partition `p` of every input.
    fn group_offsets(&self, p: i32) -> Result<Vec<Option<i64>>> {
        let mut tpl = TopicPartitionList::new();
        for t in &self.inputs {
            tpl.add_partition(t, p);
        }
        let mut backoff = crate::kafka::client::Backoff::new();
        let committed = loop {
            match self.consumer.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
                Ok(c) => break c,
                Err(e) => {
                    self.health.broker_down(&e.to_string());
                    tracing::warn!(error = %e, partition = p, "cannot read committed offsets; retrying");
                    backoff.sleep()?;
                }
            }
        };
        Ok(self
            .inputs
            .iter()
            .map(|t| match committed.find_partition(t, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => Some(o),
                _ => None,
            })
            .collect())
    }

    /// The next input offsets a task's state records, per input (`None`: nothing applied).
    fn stored_offsets(&self, store: &dyn StateRead) -> Result<Vec<Option<i64>>> {
        Ok(self.inputs.iter().map(|t| read_i64(store, OFFSET, &offset_key(OFFSET, t))).collect::<Result<_, _>>()?)
    }

    fn open_task(&mut self, p: i32) -> Result<()> {
        let mut store = self.stores.open(p)?;
        let committed = self.group_offsets(p)?;
        let local = self.stored_offsets(&store)?;
        if let Some(outbox) = store.get(Table::Meta, OUTBOX)? {
            let from: Vec<Option<i64>> = self
                .inputs
                .iter()
                .map(|t| read_i64(&store, OUTBOX_FROM, &offset_key(OUTBOX_FROM, t)))
                .collect::<Result<_, _>>()?;
            let unsent_log = self.unsent_log.remove(&p);
            if committed == from {
                let mut emits = decode_outbox(&outbox)?;
                tracing::info!(partition = p, records = emits.len(), "sending the outbox of an interrupted commit");
                if let Some(topic) = &self.cfg.changelog_topic {
                    match unsent_log {
                        Some(log) => emits.extend(log),
                        None => {
                            // The interrupted commit's changelog records died with the process: the
                            // state it committed goes to the log whole instead.
                            let mut mark = WriteBatch::new();
                            mark.put(Table::Meta, changelog::LOGGED.to_vec(), Vec::new());
                            store.write(mark)?;
                            let state = changelog::dump(&store, &WriteBatch::new())?;
                            tracing::info!(partition = p, keys = state.len(), "logging the whole state with it");
                            changelog::records(topic, p, true, offsets_sum(&local), state, &mut emits);
                        }
                    }
                }
                let tpl = self.offsets_tpl(p, &local)?;
                let group = self.group_metadata()?;
                loop {
                    match self.producer.transact(&emits, Some((&tpl, &group)))? {
                        TxnOutcome::Committed => break,
                        TxnOutcome::Aborted(why) => {
                            return Err(StreamError::Transaction {
                                what: format!("sending the outbox of partition {p}"),
                                why,
                            });
                        }
                        TxnOutcome::Refused(refused) => {
                            self.set_aside(&mut emits, &refused, |_| (p, from.first().copied().flatten()))?
                        }
                    }
                }
                self.count_out(&emits);
                clear_outbox(&store, &self.inputs)?;
                self.metrics.recovery("outbox_resent").inc();
            } else if committed == local {
                tracing::info!(partition = p, "recovery: the interrupted commit went through; outbox dropped");
                clear_outbox(&store, &self.inputs)?;
                self.metrics.recovery("outbox_dropped").inc();
            } else {
                tracing::warn!(
                    partition = p,
                    ?local,
                    ?committed,
                    "recovery: local state diverged from the group; rebuilding"
                );
                store = self.stores.reset(p, store)?;
                self.metrics.recovery("rebuilt").inc();
            }
        }
        let local = self.stored_offsets(&store)?;
        let behind = committed.iter().zip(&local).any(|(c, l)| c.is_some() && (l.is_none() || l < c));
        if let Some(topic) = self.cfg.changelog_topic.clone()
            && behind
        {
            store = self.restore(p, store, &topic, &committed)?;
        }
        let local = self.stored_offsets(&store)?;
        let dump = self.cfg.changelog_topic.is_some() && store.get(Table::Meta, changelog::LOGGED)?.is_none();
        let stage = self.app.open_stage(&store)?;
        let max_time = read_i64(&store, MAX_TIME, MAX_TIME.prefix)?;
        let side_wm = read_i64(&store, SIDE_WM, SIDE_WM.prefix)?;
        let out_mark = read_i64(&store, OUT_MARK, OUT_MARK.prefix)?;
        let side_due = first_pending(&store)?;
        let mut task = Task {
            partition: p,
            store,
            stage,
            next: local.clone(),
            committed_next: committed.clone(),
            max_time,
            emits: Vec::new(),
            dirty: false,
            side_wm,
            out_mark,
            held: Default::default(),
            held_bytes: 0,
            paused: false,
            side_due,
            side_applied: Vec::new(),
            waiting_since: None,
            marked: false,
            logged: Default::default(),
            dump,
        };
        // A partition paused by an earlier owner of this task stays paused through a reassignment.
        let mut tpl = TopicPartitionList::new();
        for t in &self.inputs {
            tpl.add_partition(t, p);
        }
        if let Err(e) = self.consumer.resume(&tpl) {
            tracing::debug!(error = %e, partition = p, "resume on open");
        }
        self.read_broadcast(&mut task)?;
        // Inputs without event time (entitlements: tables) before events (streams), so replayed
        // events meet the entitlements they met the first time as nearly as possible.
        for (i, topic) in self.inputs.iter().enumerate().rev() {
            if let Some(c) = committed[i]
                && local[i].is_none_or(|l| l < c)
            {
                let from = local[i].unwrap_or(0);
                tracing::info!(partition = p, %topic, from, until = c, "recovery: catching up state from the input topic");
                self.catch_up(&mut task, i, from, c)?;
                self.metrics.recovery("caught_up").inc();
            }
        }
        tracing::info!(partition = p, next = ?task.next, "task open");
        self.tasks.insert(p, task);
        Ok(())
    }

    /// Replaces a task's state by the one its changelog partition holds, if that is the state of the
    /// group's `committed` offsets; otherwise leaves it empty, for the caller to rebuild from the inputs.
    fn restore(&self, p: i32, store: T::Store, topic: &str, committed: &[Option<i64>]) -> Result<T::Store> {
        const FLUSH_OPS: usize = 20_000;
        let started = Instant::now();
        let mut store = Some(self.stores.reset(p, store)?);
        let remaining = self.metrics.restore_remaining.get_or_create(&crate::kafka::metrics::PartitionLabel {
            topic: topic.to_string(),
            partition: p.to_string(),
        });
        let (_, end) = self
            .consumer
            .fetch_watermarks(topic, p, Duration::from_secs(30))
            .map_err(|e| StreamError::kafka(format!("fetching the watermarks of {topic}"), e))?;
        remaining.set(end);
        tracing::info!(partition = p, %topic, records = end, "recovery: restoring state from the changelog");
        let mut batch = WriteBatch::with_capacity(FLUSH_OPS);
        let (mut read, mut unknown) = (0u64, 0u64);
        let flush = |store: &T::Store, batch: &mut WriteBatch| -> Result<()> {
            if !batch.is_empty() {
                store.write(std::mem::replace(batch, WriteBatch::with_capacity(FLUSH_OPS)))?;
            }
            Ok(())
        };
        read_to_end(&self.cfg.kafka, topic, &[p], Offset::Beginning, None, &mut |_, offset, key, value| {
            read += 1;
            match key.and_then(|k| changelog::decode(k, value)) {
                Some(changelog::Change::Reset) => {
                    batch = WriteBatch::with_capacity(FLUSH_OPS);
                    let old = store.take().ok_or_else(|| StreamError::Inconsistent("no store".into()))?;
                    store = Some(self.stores.reset(p, old)?);
                }
                Some(change) => change.apply_to(&mut batch),
                None => unknown += 1,
            }
            if batch.len() >= FLUSH_OPS
                && let Some(s) = store.as_ref()
            {
                flush(s, &mut batch)?;
                remaining.set(end.saturating_sub(offset + 1));
            }
            Ok(())
        })?;
        let store = store.ok_or_else(|| StreamError::Inconsistent("no store after restoring".into()))?;
        flush(&store, &mut batch)?;
        remaining.set(0);
        let restored = self.stored_offsets(&store)?;
        let whole = store.get(Table::Meta, changelog::LOGGED)?.is_some();
        let secs = started.elapsed().as_secs_f64();
        if whole && restored == committed {
            tracing::info!(partition = p, %topic, records = read, secs, "restored from the changelog");
            self.metrics.recovery("changelog_restored").inc();
            return Ok(store);
        }
        tracing::warn!(
            partition = p,
            %topic,
            records = read,
            unknown,
            whole,
            ?restored,
            ?committed,
            "the changelog does not hold this task's committed state; rebuilding from the input topics"
        );
        self.stores.reset(p, store)
    }

    /// Applies input records `[from, until)` of one input to a task's state; their outputs were
    /// produced by whoever processed them first, so they are dropped.
    fn catch_up(&self, task: &mut Task<A::Stage, T::Store>, input: usize, from: i64, until: i64) -> Result<()> {
        let bound = self.cfg.max_out_of_orderness_ms;
        let topic = self.inputs[input].clone();
        let mut outs = Vec::new();
        let mut applied = 0u64;
        let started = Instant::now();
        let remaining = self.metrics.restore_remaining.get_or_create(&crate::kafka::metrics::PartitionLabel {
            topic: topic.clone(),
            partition: task.partition.to_string(),
        });
        remaining.set(until.saturating_sub(from));
        read_to_end(
            &self.cfg.kafka,
            &topic,
            &[task.partition],
            Offset::Offset(from),
            Some(until),
            &mut |_, offset, key, payload| {
                task.next[input] = Some(offset + 1);
                let payload = payload.unwrap_or_default();
                if Some(input) == self.app.side_input() {
                    // The same as a live read: marks, records kept until due, records due now.
                    match take_side(&self.app, task, bound, offset, key, payload, &mut outs) {
                        // An undecodable record was dead-lettered when it was first read.
                        Ok(_) | Err(SideError::Undecodable(_)) => {}
                        Err(SideError::Stream(e)) => return Err(e),
                    }
                } else if let Ok(value) = self.app.decode(input, key, payload) {
                    apply(&self.app, task, bound, &value, &mut outs)?;
                }
                outs.clear();
                applied += 1;
                if applied.is_multiple_of(4096) {
                    remaining.set(until.saturating_sub(offset + 1));
                }
                if task.stage.pending() > self.cfg.max_pending {
                    self.write_task_state(task, None)?;
                }
                Ok(())
            },
        )?;
        task.next[input] = Some(until);
        self.write_task_state(task, None)?;
        // Already in the changelog, written by whoever processed these records (or to be dumped).
        task.logged.clear();
        remaining.set(0);
        let secs = started.elapsed().as_secs_f64();
        let per_sec = (applied as f64 / secs.max(1e-3)).round();
        tracing::info!(partition = task.partition, %topic, applied, secs, per_sec, "caught up");
        Ok(())
    }

    /// Writes a task's pending state, offsets and watermark in one batch. With `commit` (its outputs
    /// and the offsets they start from), the batch also keeps the outputs as the outbox, and the
    /// changelog records of what the batch writes are returned, for the same transaction. They are not
    /// in the outbox (they would double what RocksDB writes per commit): an outbox is written whenever
    /// they exist, and a task that resends its outbox after a crash logs its whole state with it.
    /// Returns whether there is an outbox, and the changelog records.
    fn write_task_state(
        &self,
        task: &mut Task<A::Stage, T::Store>,
        commit: Option<(&mut Vec<Emit>, &[Option<i64>])>,
    ) -> Result<(bool, Vec<Emit>)> {
        let mut batch = WriteBatch::new();
        task.stage.snapshot(&mut batch)?;
        for (i, t) in self.inputs.iter().enumerate() {
            if let Some(n) = task.next[i] {
                batch.put(Table::Meta, offset_key(OFFSET, t), n.to_be_bytes().to_vec());
            }
        }
        if let Some(m) = task.max_time {
            batch.put(Table::Meta, MAX_TIME.prefix.to_vec(), m.to_be_bytes().to_vec());
        }
        if let Some(w) = task.side_wm {
            batch.put(Table::Meta, SIDE_WM.prefix.to_vec(), w.to_be_bytes().to_vec());
        }
        if let Some(m) = task.out_mark {
            batch.put(Table::Meta, OUT_MARK.prefix.to_vec(), m.to_be_bytes().to_vec());
        }
        for k in task.side_applied.drain(..) {
            batch.delete(Table::Meta, k);
        }
        let Some((emits, from)) = commit else {
            task.store.write(batch)?;
            task.stage.committed();
            return Ok((false, Vec::new()));
        };
        let mut log = Vec::new();
        if let Some(topic) = &self.cfg.changelog_topic {
            let dump = task.dump;
            let changes = if dump {
                batch.put(Table::Meta, changelog::LOGGED.to_vec(), Vec::new());
                changelog::dump(&task.store, &batch)?
            } else {
                changelog::changes(&task.store, &batch, &task.logged)?
            };
            changelog::records(topic, task.partition, dump, offsets_sum(&task.next), changes, &mut log);
            task.logged.clear();
            task.dump = false;
        }
        let outbox = !emits.is_empty() || !log.is_empty();
        if outbox {
            batch.put(Table::Meta, OUTBOX.to_vec(), encode_outbox(emits));
            for (i, t) in self.inputs.iter().enumerate() {
                match from[i] {
                    Some(o) => batch.put(Table::Meta, offset_key(OUTBOX_FROM, t), o.to_be_bytes().to_vec()),
                    None => batch.delete(Table::Meta, offset_key(OUTBOX_FROM, t)),
                }
            }
        }
        task.store.write(batch)?;
        task.stage.committed();
        Ok((outbox, log))
    }

    fn group_metadata(&self) -> Result<rdkafka::consumer::ConsumerGroupMetadata> {
        self.consumer
            .group_metadata()
            .ok_or_else(|| StreamError::Inconsistent("no consumer group metadata while consuming in a group".into()))
    }

    fn offsets_tpl(&self, p: i32, next: &[Option<i64>]) -> Result<TopicPartitionList> {
        let mut tpl = TopicPartitionList::new();
        for (i, t) in self.inputs.iter().enumerate() {
            if let Some(n) = next[i] {
                tpl.add_partition_offset(t, p, Offset::Offset(n))
                    .map_err(|e| StreamError::kafka(format!("offsets of {t} partition {p}"), e))?;
            }
        }
        Ok(tpl)
    }

    /// After a refusal: the refused output becomes a dead letter naming the partition and the input
    /// offset its outbox starts from (`origin` of its index), since which input record produced it
    /// is not kept. Fails only if the refusal names no record of `emits`.
    fn set_aside(
        &self,
        emits: &mut Vec<Emit>,
        refused: &[Refusal],
        origin: impl Fn(usize) -> (i32, Option<i64>),
    ) -> Result<()> {
        let (service, dlq) = (self.app.name(), self.cfg.dlq_topic.as_str());
        let topic = self.inputs.first().cloned().unwrap_or_default();
        let set = set_aside_refused(emits, refused, |index, e, error| {
            if e.kind == "dlq" {
                return None; // bounded in size; refused anyway: nothing more to do than log it
            }
            let (partition, from) = origin(index);
            let error = format!(
                "{} record for {} ({} bytes) refused by Kafka: {error}; produced from partition {partition} \
                 of the inputs at or after offset {}",
                e.kind,
                e.topic,
                record_bytes(e),
                from.unwrap_or(0)
            );
            let source = DeadLetterSource::Kafka { topic, partition: partition.max(0), offset: from.unwrap_or(0) };
            dead_letter_emit(dlq, e.key.clone(), &dead_letter(service, source, error, &e.payload))
        });
        let Some(set) = set else {
            return Err(StreamError::Inconsistent(format!(
                "Kafka refused records that are not in the transaction: {refused:?}"
            )));
        };
        let e = &set.record;
        if set.replaced {
            self.metrics.dead_letters.inc();
            tracing::warn!(kind = e.kind, topic = %e.topic, bytes = record_bytes(e), "output refused by Kafka; dead-lettered");
        } else {
            tracing::error!(kind = e.kind, topic = %e.topic, bytes = record_bytes(e), "dead letter refused by Kafka; dropped");
        }
        Ok(())
    }

    fn count_out(&self, emits: &[Emit]) {
        for e in emits {
            self.metrics.out(e.kind).inc();
        }
    }

    /// Steps 1–3 of the module documentation for every task with new input.
    fn commit(&mut self) -> Result<()> {
        let started = Instant::now();
        self.health.committing(true);
        let result = self.commit_inner();
        self.health.committing(false);
        let ms = started.elapsed().as_millis() as u64;
        tracing::debug!(ms, "commit");
        result
    }

    fn commit_inner(&mut self) -> Result<()> {
        let dirty: Vec<i32> = self.tasks.iter().filter(|(_, t)| t.dirty).map(|(p, _)| *p).collect();
        if dirty.is_empty() {
            return Ok(());
        }
        let mut all_emits = Vec::new();
        let mut tpl = TopicPartitionList::new();
        let mut with_outbox = Vec::new();
        // Where each task's records start in `all_emits`, and the input offsets they start from.
        let mut origins: Vec<(usize, i32, Option<i64>)> = Vec::new();
        for p in &dirty {
            let Some(mut task) = self.tasks.remove(p) else { continue };
            let committed = task.committed_next.clone();
            let mut emits = std::mem::take(&mut task.emits);
            let written = self.write_task_state(&mut task, Some((&mut emits, committed.as_slice())));
            for (i, t) in self.inputs.iter().enumerate() {
                if let Some(n) = task.next[i] {
                    tpl.add_partition_offset(t, *p, Offset::Offset(n))
                        .map_err(|e| StreamError::kafka(format!("offsets of {t} partition {p}"), e))?;
                }
            }
            task.dirty = false;
            task.marked = false;
            self.tasks.insert(*p, task);
            let (outbox, log) = written?;
            if outbox {
                with_outbox.push(*p);
                origins.push((all_emits.len(), *p, committed.first().copied().flatten()));
            }
            all_emits.extend(emits);
            all_emits.extend(log);
        }
        let group = self.group_metadata()?;
        let aborted = loop {
            let outcome = match self.producer.transact(&all_emits, Some((&tpl, &group))) {
                Ok(outcome) => outcome,
                Err(StreamError::Transaction { what, why }) => {
                    tracing::warn!(%what, %why, "the transaction could not be ended");
                    self.renew_producer()?;
                    TxnOutcome::Aborted(format!("{what}: {why}"))
                }
                Err(e) => return Err(e),
            };
            match outcome {
                TxnOutcome::Committed => break None,
                TxnOutcome::Aborted(why) => break Some(why),
                TxnOutcome::Refused(refused) => self.set_aside(&mut all_emits, &refused, |index| {
                    let task = origins.iter().rev().find(|(start, _, _)| *start <= index);
                    task.map_or((-1, None), |&(_, p, from)| (p, from))
                })?,
            }
        };
        match aborted {
            None => {
                self.metrics.commits.inc();
                self.count_out(&all_emits);
                for p in &with_outbox {
                    if let Some(task) = self.tasks.get(p) {
                        clear_outbox(&task.store, &self.inputs)?;
                    }
                }
                for p in &dirty {
                    if let Some(task) = self.tasks.get_mut(p) {
                        task.committed_next = task.next.clone();
                    }
                }
            }
            Some(why) => {
                self.metrics.commit_failures.inc();
                tracing::warn!(%why, "transaction aborted; reopening tasks from their last commit");
                if let Some(topic) = &self.cfg.changelog_topic {
                    for e in all_emits.into_iter().filter(|e| &e.topic == topic) {
                        self.unsent_log.entry(e.partition.unwrap_or(-1)).or_default().push(e);
                    }
                }
                let parts: Vec<i32> = self.tasks.keys().copied().collect();
                self.tasks.clear();
                for p in parts {
                    self.try_open(p)?;
                }
            }
        }
        Ok(())
    }
}

/// The sum of a task's next input offsets: it grows with every record consumed, which is what names
/// a commit's changelog members records.
fn offsets_sum(next: &[Option<i64>]) -> u64 {
    next.iter().flatten().map(|&o| o.max(0) as u64).sum()
}

/// Handles one consumed record for its task: skips it if already applied, holds it if it must wait
/// for the side input, else decodes and applies it (or turns it into a dead letter), queueing outputs
/// and late copies in the task's outbox. `from_held`: the record comes from the task's held queue.
fn handle<A: App, St: StateStore, M: Message>(
    app: &A,
    cfg: &RunnerConfig,
    metrics: &Metrics,
    input: usize,
    task: &mut Task<A::Stage, St>,
    m: &M,
    from_held: bool,
) -> Result<Handled> {
    let (partition, offset) = (m.partition(), m.offset());
    if task.next[input].is_some_and(|n| offset < n) {
        return Ok(Handled::Applied); // applied before a restart; its outputs were committed then
    }
    let side = app.side_input();
    let bound = cfg.max_out_of_orderness_ms;
    let payload = m.payload().unwrap_or_default();
    if side == Some(input) {
        task.next[input] = Some(offset + 1);
        task.dirty = true;
        let mut outs = Vec::new();
        let taken = take_side(app, task, bound, offset, m.key(), payload, &mut outs);
        for o in outs {
            app.encode(o, &mut task.emits);
        }
        return match taken {
            Ok(advanced) => Ok(if advanced { Handled::SideAdvanced } else { Handled::Applied }),
            Err(SideError::Stream(e)) => Err(e),
            Err(SideError::Undecodable(error)) => {
                dead_letter_input(app, cfg, metrics, task, m, error);
                Ok(Handled::Applied)
            }
        };
    }
    if side.is_some() && !from_held && !task.held.is_empty() {
        return Ok(Handled::Held); // behind a held record: order is kept
    }
    let source = || DeadLetterSource::Kafka { topic: m.topic().to_string(), partition, offset };
    match app.decode(input, m.key(), payload) {
        Ok(value) => {
            if side.is_some()
                && let Some(t) = app.event_time(&value)
            {
                let wm_now = task.watermark(bound);
                let wm_then = task.max_time.map_or(t.millis(), |m| m.max(t.millis())).saturating_sub(bound);
                let needed = app.side_needed(wm_then);
                if wm_now.is_none_or(|w| wm_then > w) && task.side_wm.is_none_or(|s| s < needed) {
                    return Ok(Handled::Held);
                }
            }
            task.next[input] = Some(offset + 1);
            task.dirty = true;
            let mut outs = Vec::new();
            let applied = apply(app, task, bound, &value, &mut outs)?;
            if applied.late {
                metrics.late_events.inc();
                if app.routes_late() {
                    task.emits.push(Emit {
                        partition: None,
                        topic: cfg.late_topic.clone(),
                        key: m.key().map(<[u8]>::to_vec),
                        payload: payload.to_vec(),
                        kind: "late",
                    });
                }
            }
            let first_out = task.emits.len();
            for o in outs {
                app.encode(o, &mut task.emits);
            }
            // An output too large to produce would fail every commit of the partition, forever.
            let mut i = first_out;
            while let Some(e) = task.emits.get(i) {
                let bytes = record_bytes(e);
                if bytes <= cfg.max_record_bytes {
                    i += 1;
                    continue;
                }
                metrics.dead_letters.inc();
                tracing::warn!(kind = e.kind, topic = %e.topic, bytes, partition, offset, "output too large; dead-lettered");
                let error = format!(
                    "{} record for {} of {bytes} bytes, over the largest record ({} bytes)",
                    e.kind, e.topic, cfg.max_record_bytes
                );
                let dl = dead_letter(app.name(), source(), error, &e.payload);
                match dead_letter_emit(&cfg.dlq_topic, e.key.clone(), &dl) {
                    Some(dead) => {
                        task.emits[i] = dead;
                        i += 1;
                    }
                    None => {
                        task.emits.remove(i);
                    }
                }
            }
            // The mark goes after the outputs it covers.
            if let Some((topic, mark)) = applied.mark {
                task.emits.push(Emit::watermark_mark(topic, partition, mark));
                task.marked = true;
            }
        }
        Err(error) => {
            task.next[input] = Some(offset + 1);
            task.dirty = true;
            dead_letter_input(app, cfg, metrics, task, m, error);
        }
    }
    Ok(Handled::Applied)
}

/// Queues the dead letter of an input record that cannot be used.
fn dead_letter_input<A: App, St, M: Message>(
    app: &A,
    cfg: &RunnerConfig,
    metrics: &Metrics,
    task: &mut Task<A::Stage, St>,
    m: &M,
    error: String,
) {
    metrics.dead_letters.inc();
    let (topic, partition, offset) = (m.topic(), m.partition(), m.offset());
    tracing::warn!(%topic, partition, offset, %error, "unusable record sent to the dead-letter topic");
    let source = DeadLetterSource::Kafka { topic: topic.to_string(), partition, offset };
    let dl = dead_letter(app.name(), source, error, m.payload().unwrap_or_default());
    task.emits.extend(dead_letter_emit(&cfg.dlq_topic, m.key().map(<[u8]>::to_vec), &dl));
}

enum SideError {
    Undecodable(String),
    Stream(StreamError),
}

impl From<StreamError> for SideError {
    fn from(e: StreamError) -> Self {
        SideError::Stream(e)
    }
}

impl From<StageError> for SideError {
    fn from(e: StageError) -> Self {
        SideError::Stream(e.into())
    }
}

impl From<StateError> for SideError {
    fn from(e: StateError) -> Self {
        SideError::Stream(e.into())
    }
}

/// One record of the side input: a mark moves the side watermark (returns `true`); a record takes
/// effect now if it is due (or the first mark has not come: it belongs to the first snapshot), else is
/// kept in the task's state until the watermark reaches its time.
fn take_side<A: App, St: StateStore>(
    app: &A,
    task: &mut Task<A::Stage, St>,
    bound: i64,
    offset: i64,
    key: Option<&[u8]>,
    payload: &[u8],
    outs: &mut Vec<Out<A>>,
) -> Result<bool, SideError> {
    if key == Some(grantwatch_types::WATERMARK_KEY.as_bytes()) {
        let mark: grantwatch_types::WatermarkMark = serde_json::from_slice(payload)
            .map_err(|e| SideError::Undecodable(format!("not a watermark mark: {e}")))?;
        let w = mark.watermark.millis();
        if task.side_wm.is_some_and(|s| s >= w) {
            return Ok(false);
        }
        task.side_wm = Some(w);
        return Ok(true);
    }
    let input = app.side_input().unwrap_or(0);
    let value = app.decode(input, key, payload).map_err(SideError::Undecodable)?;
    let effective = app.side_time(&value).map(EventTime::millis);
    let due_by = task.watermark(bound).map(|w| app.side_needed(w));
    let now = match (task.side_wm, effective) {
        (None, _) | (_, None) => true,
        (Some(_), Some(t)) => due_by.is_some_and(|d| t <= d),
    };
    if now {
        task.stage.process(&value, &mut Cx { state: &task.store, out: outs })?;
        return Ok(false);
    }
    let t = effective.unwrap_or(i64::MIN);
    // Written now, alone: the same key again after a restart overwrites it, and the batch that applies
    // it deletes it with the state it produced.
    let mut batch = WriteBatch::new();
    let key = pending_key(t, offset);
    batch.put(Table::Meta, key.clone(), payload.to_vec());
    task.store.write(batch)?;
    task.logged.insert((Table::Meta, key));
    task.side_due = Some(task.side_due.map_or(t, |d| d.min(t)));
    Ok(false)
}

/// The earliest time of a side record kept in state.
fn first_pending(state: &dyn StateRead) -> Result<Option<i64>, StateError> {
    let mut first = None;
    state.scan_prefix(Table::Meta, SIDE_PENDING.prefix, &mut |k, _| {
        first = pending_time(k);
        false
    })?;
    Ok(first)
}

/// Applies the kept side records due by `due_by`, in time order (then offset order).
fn apply_due_side<A: App, St: StateStore>(
    app: &A,
    task: &mut Task<A::Stage, St>,
    due_by: i64,
    outs: &mut Vec<Out<A>>,
) -> Result<()> {
    if task.side_due.is_none_or(|d| d > due_by) {
        return Ok(());
    }
    let input = app.side_input().unwrap_or(0);
    let mut due: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut next_due = None;
    task.store.scan_prefix(Table::Meta, SIDE_PENDING.prefix, &mut |k, v| {
        if task.side_applied.iter().any(|a| a == k) {
            return true;
        }
        match pending_time(k) {
            Some(t) if t <= due_by => {
                due.push((k.to_vec(), v.to_vec()));
                true
            }
            t => {
                next_due = t;
                false
            }
        }
    })?;
    for (k, payload) in due {
        // It decoded when it was read; the same code decodes it now.
        if let Ok(value) = app.decode(input, None, &payload) {
            task.stage.process(&value, &mut Cx { state: &task.store, out: outs })?;
        }
        task.side_applied.push(k);
    }
    task.side_due = next_due;
    Ok(())
}

/// What applying an input did.
struct Applied<'a> {
    /// Older than the watermark before it arrived.
    late: bool,
    /// A watermark mark to write after the outputs.
    mark: Option<(&'a str, i64)>,
}

/// Offers one decoded input to a task's stage, advancing its watermark: the side records due by the
/// new watermark take effect, then the stage closes what it closes. Late inputs are still processed:
/// they count in usage.
fn apply<'a, A: App, St: StateStore>(
    app: &'a A,
    task: &mut Task<A::Stage, St>,
    bound: i64,
    value: &In<A>,
    outs: &mut Vec<Out<A>>,
) -> Result<Applied<'a>> {
    let t = app.event_time(value).map(EventTime::millis);
    let wm_before = task.watermark(bound);
    let late = matches!((t, wm_before), (Some(t), Some(wm)) if t < wm);
    task.stage.process(value, &mut Cx { state: &task.store, out: outs })?;
    if let Some(t) = t {
        task.max_time = Some(task.max_time.map_or(t, |m| m.max(t)));
    }
    let wm_after = task.watermark(bound);
    let mut mark = None;
    if let Some(wm) = wm_after
        && wm_after > wm_before
    {
        if app.side_input().is_some() {
            apply_due_side(app, task, app.side_needed(wm), outs)?;
        }
        task.stage.on_watermark(EventTime(wm), &mut Cx { state: &task.store, out: outs })?;
        if let Some((topic, m)) = app.output_mark(wm)
            && task.out_mark.is_none_or(|o| m > o)
        {
            task.out_mark = Some(m);
            mark = Some((topic, m));
        }
    }
    Ok(Applied { late, mark })
}

/// Framing of an outbox: per record, kind index, topic, key (or none), payload, partition (or none:
/// by key; 4 bytes big-endian), length-prefixed.
const KINDS: [&str; 12] = [
    "event",
    "alert",
    "pci",
    "finding",
    "late",
    "dlq",
    "checkpoint",
    "entitlements",
    "mark",
    changelog::KIND,
    changelog::TOMBSTONE,
    "other",
];

fn encode_outbox(emits: &[Emit]) -> Vec<u8> {
    let mut out = Vec::with_capacity(emits.iter().map(|e| e.payload.len() + e.topic.len() + 32).sum());
    for e in emits {
        out.push(KINDS.iter().position(|k| *k == e.kind).unwrap_or(KINDS.len() - 1) as u8);
        let partition = e.partition.map(i32::to_be_bytes);
        for part in
            [Some(e.topic.as_bytes()), e.key.as_deref(), Some(e.payload.as_slice()), partition.as_ref().map(|p| &p[..])]
        {
            match part {
                Some(b) => {
                    out.push(1);
                    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
                    out.extend_from_slice(b);
                }
                None => out.push(0),
            }
        }
    }
    out
}

/// Decodes the stored outbox; a malformed one is corrupt state (its records cannot be sent, and
/// dropping them would lose outputs whose offsets are committed with them).
fn decode_outbox(mut b: &[u8]) -> Result<Vec<Emit>, StateError> {
    let corrupt = |why: &str| keys::RUNNER_OUTBOX.corrupt(OUTBOX, why);
    fn part<'a>(b: &mut &'a [u8]) -> Option<Option<&'a [u8]>> {
        let (&flag, rest) = b.split_first()?;
        *b = rest;
        if flag == 0 {
            return Some(None);
        }
        let len = u32::from_be_bytes(b.get(..4)?.try_into().ok()?) as usize;
        let data = b.get(4..4usize.checked_add(len)?)?;
        *b = b.get(4 + len..)?;
        Some(Some(data))
    }
    let mut out = Vec::new();
    while let Some((&kind, rest)) = b.split_first() {
        b = rest;
        let topic = part(&mut b).ok_or_else(|| corrupt("truncated outbox"))?;
        let topic = topic.ok_or_else(|| corrupt("outbox record without topic"))?;
        let key = part(&mut b).ok_or_else(|| corrupt("truncated outbox"))?.map(<[u8]>::to_vec);
        let payload = part(&mut b).ok_or_else(|| corrupt("truncated outbox"))?.unwrap_or_default().to_vec();
        let partition = match part(&mut b).ok_or_else(|| corrupt("truncated outbox"))? {
            None => None,
            Some(p) => Some(i32::from_be_bytes(p.try_into().map_err(|_| corrupt("partition not 4 bytes"))?)),
        };
        out.push(Emit {
            partition,
            topic: String::from_utf8_lossy(topic).into_owned(),
            key,
            payload,
            kind: KINDS.get(kind as usize).copied().unwrap_or("other"),
        });
    }
    Ok(out)
}

fn clear_outbox(store: &dyn StateStore, inputs: &[String]) -> Result<()> {
    let mut batch = WriteBatch::new();
    batch.delete(Table::Meta, OUTBOX.to_vec());
    for t in inputs {
        batch.delete(Table::Meta, offset_key(OUTBOX_FROM, t));
    }
    store.write(batch)?;
    Ok(())
}

#[cfg(test)]
mod mock_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_round_trips() {
        let emits = vec![
            Emit {
                partition: None,
                topic: "a".into(),
                key: Some(b"k".to_vec()),
                payload: b"{}".to_vec(),
                kind: "alert",
            },
            Emit { partition: None, topic: "b.c".into(), key: None, payload: Vec::new(), kind: "dlq" },
            Emit::watermark_mark("pci", 3, 1_700_000_000_000),
        ];
        assert_eq!(decode_outbox(&encode_outbox(&emits)).unwrap(), emits);
        for cut in [1, 5, 9] {
            let e = decode_outbox(&encode_outbox(&emits)[..cut]).unwrap_err();
            assert!(matches!(&e, StateError::Corrupt { table: "meta", key, .. } if key == "rt:outbox"), "{e}");
        }
        // A length past the end (or near usize::MAX) is corrupt, not a panic.
        assert!(decode_outbox(&[0, 1, 0xff, 0xff, 0xff, 0xff, b'x']).is_err());
    }

    #[test]
    fn corrupt_offsets_and_times_are_errors_not_a_fresh_start() {
        use grantwatch_state::MemStore;
        let store = MemStore::new();
        let key = offset_key(OFFSET, "grantwatch.events");
        assert_eq!(read_i64(&store, OFFSET, &key).unwrap(), None);
        let mut b = WriteBatch::new();
        b.put(Table::Meta, key.clone(), 42i64.to_be_bytes().to_vec());
        b.put(Table::Meta, MAX_TIME.prefix.to_vec(), b"soon".to_vec());
        store.write(b).unwrap();
        assert_eq!(read_i64(&store, OFFSET, &key).unwrap(), Some(42));
        let e = StreamError::from(read_i64(&store, MAX_TIME, MAX_TIME.prefix).unwrap_err());
        assert_eq!(e.class(), crate::kafka::ErrorClass::State);
        assert!(e.to_string().contains("rt:max-time"), "{e}");
    }

    /// A CloudTrail record with credentials CloudTrail did not mask.
    const SECRET_RECORD: &str = r#"{"eventID":"e1","eventName":"ChangePassword","requestParameters":{"userName":"bob","password":"Hunter2-pw","newPassword":"Hunter3-pw"},"responseElements":{"credentials":{"accessKeyId":"ASIAKEEP","sessionToken":"FwoGZX-session","secretAccessKey":"wJalr-secret"}}}"#;
    const SECRETS: [&str; 4] = ["Hunter2-pw", "Hunter3-pw", "FwoGZX-session", "wJalr-secret"];

    fn assert_no_secret(shown: &str) {
        for secret in SECRETS {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }

    #[test]
    fn dead_letters_carry_no_credentials_and_stay_bounded() {
        let source = || DeadLetterSource::File { path: "f.json".into(), record: 3 };
        let dl = dead_letter("svc", source(), "bad".into(), SECRET_RECORD.as_bytes());
        let shown = serde_json::to_string(&dl).unwrap();
        assert_no_secret(&shown);
        assert!(dl.payload.contains("ASIAKEEP") && dl.payload.contains("<redacted>"), "{shown}");
        assert!(!dl.payload_truncated);

        // Huge, with a secret straddling the cut.
        let pad = "x".repeat(DeadLetter::MAX_PAYLOAD - 20);
        let raw =
            format!(r#"{{"a":"{pad}","sessionToken":"FwoGZX-session-and-then-some","b":"{}"}}"#, "y".repeat(1 << 20));
        let dl = dead_letter("svc", source(), "too large".into(), raw.as_bytes());
        assert!(dl.payload_truncated);
        assert!(dl.payload.len() <= DeadLetter::MAX_PAYLOAD);
        assert_no_secret(&dl.payload);
    }

    /// Echoes every JSON object it is given; anything else is undecodable.
    struct Echo;
    struct EchoStage;

    impl Stage for EchoStage {
        type In = Vec<u8>;
        type Out = Vec<u8>;
        fn process(
            &mut self,
            input: &Vec<u8>,
            cx: &mut Cx<'_, Vec<u8>>,
        ) -> Result<(), grantwatch_core::stage::StageError> {
            cx.out.push(input.clone());
            Ok(())
        }
        fn snapshot(&mut self, _: &mut WriteBatch) -> Result<(), grantwatch_core::stage::StageError> {
            Ok(())
        }
        fn pending(&self) -> usize {
            0
        }
    }

    impl App for Echo {
        type Stage = EchoStage;
        fn name(&self) -> &'static str {
            "echo"
        }
        fn inputs(&self) -> Vec<String> {
            vec!["in".into()]
        }
        fn open_stage(&self, _: &dyn StateRead) -> Result<EchoStage, StageError> {
            Ok(EchoStage)
        }
        fn decode(&self, _: usize, _: Option<&[u8]>, payload: &[u8]) -> Result<Vec<u8>, String> {
            if payload.starts_with(b"{\"ok\"") { Ok(payload.to_vec()) } else { Err("not an echo record".into()) }
        }
        fn event_time(&self, _: &Vec<u8>) -> Option<EventTime> {
            None
        }
        fn encode(&self, out: Vec<u8>, emits: &mut Vec<Emit>) {
            emits.push(Emit {
                partition: None,
                topic: "out".into(),
                key: Some(b"k".to_vec()),
                payload: out,
                kind: "alert",
            });
        }
    }

    fn handle_one(payload: &str, max_record_bytes: usize) -> Vec<Emit> {
        let dir = tempfile::tempdir().unwrap();
        let store = RocksStore::open(dir.path()).unwrap();
        let mut task = Task {
            partition: 0,
            store,
            stage: EchoStage,
            next: vec![None],
            committed_next: vec![None],
            max_time: None,
            emits: Vec::new(),
            dirty: false,
            side_wm: None,
            out_mark: None,
            held: Default::default(),
            held_bytes: 0,
            paused: false,
            side_due: None,
            side_applied: Vec::new(),
            waiting_since: None,
            marked: false,
            logged: Default::default(),
            dump: false,
        };
        let cfg = RunnerConfig {
            kafka: KafkaConfig::default(),
            group_id: "g".into(),
            instance_id: "i".into(),
            state_dir: dir.path().into(),
            max_out_of_orderness_ms: 0,
            commit_interval: Duration::from_secs(1),
            late_topic: "late".into(),
            dlq_topic: "dlq".into(),
            max_pending: 10,
            max_record_bytes,
            changelog_topic: None,
        };
        let m = rdkafka::message::OwnedMessage::new(
            Some(payload.as_bytes().to_vec()),
            None,
            "in".into(),
            rdkafka::Timestamp::NotAvailable,
            0,
            42,
            None,
        );
        handle(&Echo, &cfg, &Metrics::new(), 0, &mut task, &m, false).unwrap();
        task.emits
    }

    #[test]
    fn undecodable_records_become_dead_letters_without_credentials() {
        let emits = handle_one(SECRET_RECORD, 1 << 20);
        assert_eq!(emits.len(), 1);
        assert_eq!((emits[0].kind, emits[0].topic.as_str()), ("dlq", "dlq"));
        let shown = String::from_utf8(emits[0].payload.clone()).unwrap();
        assert_no_secret(&shown);
        let dl: DeadLetter = serde_json::from_str(&shown).unwrap();
        assert_eq!(dl.source, DeadLetterSource::Kafka { topic: "in".into(), partition: 0, offset: 42 });
    }

    #[test]
    fn outputs_too_large_to_produce_become_dead_letters() {
        let big = format!(r#"{{"ok":"{}"}}"#, "z".repeat(500));
        let emits = handle_one(&big, 1000);
        assert_eq!(emits[0].kind, "alert", "within the limit");
        let emits = handle_one(&big, 100);
        assert_eq!((emits.len(), emits[0].kind), (1, "dlq"));
        let dl: DeadLetter = serde_json::from_slice(&emits[0].payload).unwrap();
        assert!(dl.error.contains("alert record for out of 510 bytes"), "{}", dl.error);
        assert_eq!(emits[0].key.as_deref(), Some(&b"k"[..]));
    }
}
