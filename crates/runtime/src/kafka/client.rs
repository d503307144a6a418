//! Kafka clients as the services use them: configuration, the context that feeds health and
//! rebalance notices to the runner, and a transactional producer with the retry policy librdkafka
//! documents (retriable: retry; abortable: abort and let the caller rewind; fatal: give up).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};

use crate::kafka::config::KafkaConfig;
use crate::kafka::error::StreamError;
use crate::kafka::metrics::Health;

/// One record to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emit {
    /// The partition to write to; `None`: the partitioner's choice by key (watermark marks name theirs).
    pub partition: Option<i32>,
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    /// Metric label: `event`, `alert`, `pci`, `finding`, `late`, `dlq`, `checkpoint`, `entitlements`,
    /// `mark`, `changelog`, `tombstone` (produced without a value).
    pub kind: &'static str,
}

impl Emit {
    /// A [`grantwatch_types::WatermarkMark`] for partition `partition` of `topic`.
    pub fn watermark_mark(topic: &str, partition: i32, watermark: i64) -> Emit {
        let mark = grantwatch_types::WatermarkMark { watermark: grantwatch_types::EventTime(watermark) };
        Emit {
            partition: Some(partition),
            topic: topic.to_string(),
            key: Some(grantwatch_types::WATERMARK_KEY.as_bytes().to_vec()),
            // A struct of one time field always serializes.
            payload: serde_json::to_vec(&mark).unwrap_or_default(),
            kind: "mark",
        }
    }
}

pub fn client_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &kafka.bootstrap_servers);
    for (k, v) in &kafka.properties {
        c.set(k, v);
    }
    c.set_log_level(RDKafkaLogLevel::Warning);
    c
}

/// Rebalance notices, recorded during `poll` and acted on by the runner right after it.
#[derive(Debug, Default)]
pub struct RebalanceLog {
    pub revoked: Vec<(String, i32)>,
    pub assigned: Vec<(String, i32)>,
}

/// The context of every client: reports broker trouble to [`Health`] and logs through `tracing`.
pub struct ServiceContext {
    pub health: Arc<Health>,
    pub rebalances: Mutex<RebalanceLog>,
    /// Set when `rebalances` holds notices not yet taken (checked per record without locking).
    pub rebalanced: std::sync::atomic::AtomicBool,
    /// Last stable offset (the end a read_committed consumer can reach) per partition, from the
    /// client's periodic statistics: consumer lag without extra requests to the broker.
    pub end_offsets: Mutex<std::collections::HashMap<(String, i32), i64>>,
}

impl ServiceContext {
    pub fn new(health: Arc<Health>) -> Self {
        Self {
            health,
            rebalances: Mutex::new(RebalanceLog::default()),
            rebalanced: std::sync::atomic::AtomicBool::new(false),
            end_offsets: Mutex::default(),
        }
    }

    pub fn take_rebalances(&self) -> RebalanceLog {
        self.rebalanced.store(false, std::sync::atomic::Ordering::Relaxed);
        self.rebalances.lock().map(|mut l| std::mem::take(&mut *l)).unwrap_or_default()
    }
}

impl ClientContext for ServiceContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        // A connection up means the broker answers again: an idle, caught-up service has no other way
        // to find out (it neither receives records nor commits).
        if statistics.brokers.values().any(|b| b.state == "UP") && !self.health.is_broker_up() {
            tracing::info!("broker reachable again");
            self.health.broker_ok();
        }
        if let Ok(mut ends) = self.end_offsets.lock() {
            for (topic, t) in statistics.topics {
                for (p, part) in t.partitions {
                    if p >= 0 && part.ls_offset >= 0 {
                        ends.insert((topic.clone(), p), part.ls_offset);
                    }
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure) => {
                tracing::warn!(%reason, "broker unreachable; retrying");
                self.health.broker_down(reason);
            }
            _ => tracing::warn!(error = %error, %reason, "kafka client error"),
        }
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect()
}

impl ConsumerContext for ServiceContext {
    fn pre_rebalance(&self, _c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let (Rebalance::Revoke(tpl), Ok(mut log)) = (rebalance, self.rebalances.lock()) {
            log.revoked.extend(partitions(tpl));
            self.rebalanced.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    fn post_rebalance(&self, _c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let (Rebalance::Assign(tpl), Ok(mut log)) = (rebalance, self.rebalances.lock()) {
            log.assigned.extend(partitions(tpl));
            self.rebalanced.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// The producer's context: broker trouble reaches [`Health`] as soon as librdkafka notices it, and
/// records the broker refuses are noted for [`TxnProducer::transact`].
pub struct ProducerHealth {
    health: Arc<Health>,
    refused: Mutex<Vec<Refusal>>,
}

impl ClientContext for ProducerHealth {
    fn error(&self, error: KafkaError, reason: &str) {
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure) => {
                tracing::warn!(%reason, "broker unreachable; retrying");
                self.health.broker_down(reason);
            }
            _ => tracing::warn!(error = %error, %reason, "kafka producer error"),
        }
    }
}

impl ProducerContext for ProducerHealth {
    /// The record's index in the `emits` of its transaction.
    type DeliveryOpaque = usize;
    // Other delivery failures surface in `commit_transaction`, which fails the whole transaction.
    fn delivery(&self, result: &DeliveryResult<'_>, index: usize) {
        if let Err((e, _)) = result
            && refused_as_is(e)
            && let Ok(mut refused) = self.refused.lock()
        {
            refused.push(Refusal { index, error: e.to_string() });
        }
    }
}

/// Errors that will recur however often the record is produced: it is too large (for the producer's
/// `message.max.bytes` or the topic's `max.message.bytes`) or invalid.
fn refused_as_is(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::MessageBatchTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::InvalidRecord
        )
    )
}

/// A record of a transaction that the producer or the broker refused as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Its index in the `emits` given to [`TxnProducer::transact`].
    pub index: usize,
    pub error: String,
}

/// How a transaction ended.
#[derive(Debug)]
pub enum TxnOutcome {
    Committed,
    /// Aborted (e.g. fenced by a rebalance): nothing of it is visible; the caller rewinds.
    Aborted(String),
    /// Aborted because these records can never be produced as they are (too large). Nothing of the
    /// transaction is visible; the caller replaces or drops them and tries again. When the broker
    /// refuses a whole batch, every record of it is listed, including ones that are fine on their own.
    Refused(Vec<Refusal>),
}

/// A transactional producer.
pub struct TxnProducer {
    producer: BaseProducer<ProducerHealth>,
    health: Arc<Health>,
    timeout: Duration,
}

/// How long one transactional call may take before it is retried.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest a transaction abort is retried (see [`TxnProducer::abort`]), and one attempt.
const ABORT_DEADLINE: Duration = Duration::from_secs(90);
const ABORT_ATTEMPT: Duration = Duration::from_secs(5);

/// The transactional producer's `message.max.bytes`: librdkafka refuses a larger record at `send`.
pub const PRODUCER_MESSAGE_MAX_BYTES: usize = 16_000_000;

/// The largest record (payload and key) the services produce; a larger one is dead-lettered before
/// it reaches the producer. Below the `max.message.bytes` of the topics `create-topics` makes
/// (8 MiB, the broker's limit) and [`PRODUCER_MESSAGE_MAX_BYTES`].
pub const MAX_RECORD_BYTES: usize = 8_000_000;

/// Size of a record as the size limits count it.
pub fn record_bytes(e: &Emit) -> usize {
    e.payload.len() + e.key.as_ref().map_or(0, Vec::len)
}

/// After [`TxnOutcome::Refused`]: takes the largest refused record out of `emits` and puts its
/// replacement (its dead letter) in its place, or drops it when `replace` gives none. Only the
/// largest, because a refused batch lists records that are fine on their own: those go again.
/// Returns what was done, or `None` if `refused` names no record of `emits`.
pub fn set_aside_refused(
    emits: &mut Vec<Emit>,
    refused: &[Refusal],
    replace: impl FnOnce(usize, &Emit, &str) -> Option<Emit>,
) -> Option<SetAside> {
    let worst = refused.iter().filter(|r| r.index < emits.len()).max_by_key(|r| record_bytes(&emits[r.index]))?;
    let index = worst.index;
    Some(match replace(index, &emits[index], &worst.error) {
        Some(dead_letter) => {
            SetAside { index, record: std::mem::replace(&mut emits[index], dead_letter), replaced: true }
        }
        None => SetAside { index, record: emits.remove(index), replaced: false },
    })
}

/// A record [`set_aside_refused`] took out of a transaction.
#[derive(Debug)]
pub struct SetAside {
    /// Where it was: its replacement is there now, or (not `replaced`) the records after it moved up.
    pub index: usize,
    pub record: Emit,
    pub replaced: bool,
}

impl TxnProducer {
    /// A producer with `transactional.id`, initialized (which fences any older instance of that id and
    /// aborts its open transaction). Waits, with backoff, for the broker to become reachable.
    pub fn new(kafka: &KafkaConfig, transactional_id: &str, health: Arc<Health>) -> Result<TxnProducer, StreamError> {
        let mut cfg = client_config(kafka);
        cfg.set("transactional.id", transactional_id)
            .set("enable.idempotence", "true")
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "5")
            .set("batch.size", "1000000")
            .set("compression.type", "lz4")
            .set("queue.buffering.max.messages", "1000000")
            .set("transaction.timeout.ms", "60000")
            // An administrator's entitlements list ~20,000 action names (over 1 MB before compression).
            .set("message.max.bytes", PRODUCER_MESSAGE_MAX_BYTES.to_string());
        let context = ProducerHealth { health: health.clone(), refused: Mutex::default() };
        let producer: BaseProducer<ProducerHealth> = cfg
            .create_with_context(context)
            .map_err(|e| StreamError::client(kafka, "creating the transactional producer", e))?;
        let mut backoff = Backoff::new();
        loop {
            // Short, so a stop request is noticed while the broker is unreachable.
            match producer.init_transactions(Duration::from_secs(5)) {
                Ok(()) => break,
                Err(e) if retriable(&e) => {
                    health.broker_down(&e.to_string());
                    tracing::warn!(error = %e, "init_transactions failed; retrying");
                    backoff.sleep()?;
                }
                Err(e) => {
                    return Err(StreamError::kafka(format!("initializing transactions of {transactional_id}"), e));
                }
            }
        }
        health.broker_ok();
        Ok(TxnProducer { producer, health, timeout: TXN_TIMEOUT })
    }

    /// Produces `emits` and, if given, the consumed `offsets` of `group` in one transaction.
    pub fn transact(
        &self,
        emits: &[Emit],
        offsets: Option<(&TopicPartitionList, &rdkafka::consumer::ConsumerGroupMetadata)>,
    ) -> Result<TxnOutcome, StreamError> {
        // Delivery reports of earlier transactions, so a refusal noted below belongs to this one.
        self.serve_delivery_reports();
        self.take_refused();
        let mut backoff = Backoff::new();
        loop {
            match self.producer.begin_transaction() {
                Ok(()) => break,
                Err(e) if retriable(&e) => {
                    self.health.broker_down(&e.to_string());
                    backoff.sleep()?;
                }
                Err(e) => return self.fail(e),
            }
        }
        for (index, e) in emits.iter().enumerate() {
            let mut record: BaseRecord<'_, [u8], [u8], usize> = BaseRecord::with_opaque_to(&e.topic, index);
            // A tombstone has no value at all (an empty one would be kept by compaction).
            record.payload = (e.kind != crate::kafka::changelog::TOMBSTONE).then_some(e.payload.as_slice());
            record.key = e.key.as_deref();
            record.partition = e.partition;
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        self.producer.poll(Duration::from_millis(50));
                    }
                    // librdkafka checks a record against `message.max.bytes` before queueing it.
                    Err((err, _)) if refused_as_is(&err) => {
                        tracing::warn!(error = %err, index, topic = %e.topic, bytes = e.payload.len(), "record refused");
                        self.abort()?;
                        return Ok(TxnOutcome::Refused(vec![Refusal { index, error: err.to_string() }]));
                    }
                    Err((err, _)) => return self.fail(err),
                }
            }
        }
        if let Some((tpl, group)) = offsets
            && let Err(e) = self.producer.send_offsets_to_transaction(tpl, group, self.timeout)
        {
            return self.fail(e);
        }
        self.await_deliveries();
        loop {
            match self.producer.commit_transaction(self.timeout) {
                Ok(()) => {
                    self.health.broker_ok();
                    return Ok(TxnOutcome::Committed);
                }
                Err(e) if retriable(&e) => {
                    self.health.broker_down(&e.to_string());
                    tracing::warn!(error = %e, "commit_transaction failed; retrying");
                    backoff.sleep()?;
                }
                Err(e) => return self.fail(e),
            }
        }
    }

    fn fail(&self, e: KafkaError) -> Result<TxnOutcome, StreamError> {
        if requires_abort(&e) || retriable(&e) {
            tracing::warn!(error = %e, "aborting transaction");
            match self.abort() {
                Ok(()) => {}
                Err(StreamError::Transaction { what, why }) => {
                    return Err(StreamError::Transaction { what: format!("{what} after \"{e}\""), why });
                }
                Err(a) => return Err(a),
            }
            // The broker refusing a record makes the commit fail as abortable: the caller must leave
            // that record out, not just retry. Its delivery report may still wait in the queue.
            self.serve_delivery_reports();
            let refused = self.take_refused();
            if !refused.is_empty() {
                return Ok(TxnOutcome::Refused(refused));
            }
            return Ok(TxnOutcome::Aborted(e.to_string()));
        }
        Err(StreamError::kafka("kafka transaction", e))
    }

    /// Aborts the transaction in progress, retrying while the broker is away, for at most
    /// [`ABORT_DEADLINE`]: past it the transaction is left to the broker's transaction timeout and the
    /// caller gets an error (the service exits and is restarted, crash-only) instead of hanging.
    fn abort(&self) -> Result<(), StreamError> {
        let mut backoff = Backoff::new();
        let started = std::time::Instant::now();
        loop {
            // The abort purges what is in flight and then waits until the purged records' delivery
            // reports are served; with no thread of its own serving them, an abort that is not
            // preceded by this waits forever (seen after a broker restart during a commit).
            self.serve_delivery_reports();
            match self.producer.abort_transaction(ABORT_ATTEMPT) {
                Ok(()) => return Ok(()),
                Err(a) if retriable(&a) && started.elapsed() < ABORT_DEADLINE => {
                    tracing::warn!(error = %a, "aborting the transaction failed; retrying");
                    backoff.sleep()?;
                }
                // The transaction cannot be ended by this producer (the broker timed it out, or the
                // producer is in an invalid state): a new producer with the same transactional id
                // fences it and aborts what is open (see `Runner::renew_producer`).
                Err(a) => {
                    return Err(StreamError::Transaction {
                        what: "aborting the transaction".into(),
                        why: format!("{a} (after {:.0?})", started.elapsed()),
                    });
                }
            }
        }
    }

    /// Serves the delivery reports waiting in the client's queue (each `poll` serves one batch);
    /// bounded, so a client that keeps producing events cannot hold the caller here.
    /// Serves delivery reports until every record produced has one (bounded by the client timeout;
    /// `commit_transaction` then reports what is still missing). rust-rdkafka's `commit_transaction`
    /// flushes first, and its flush polls in slices of 100 ms that always run to their end: with any
    /// record in flight, every commit lasted at least 100 ms (measured: 101-115 ms for 160 to 12,000
    /// records, while the broker answered EndTxn in 1 ms), and the loop waits for the commit. Served
    /// here in 1 ms waits, the flush inside finds nothing left.
    fn await_deliveries(&self) {
        let deadline = std::time::Instant::now() + self.timeout;
        while self.producer.in_flight_count() > 0 && std::time::Instant::now() < deadline {
            self.producer.poll(Duration::from_millis(1));
        }
    }

    fn serve_delivery_reports(&self) {
        for _ in 0..100_000 {
            if self.producer.in_flight_count() <= 0 {
                break;
            }
            self.producer.poll(Duration::ZERO);
        }
    }

    fn take_refused(&self) -> Vec<Refusal> {
        let mut refused =
            self.producer.context().refused.lock().map(|mut r| std::mem::take(&mut *r)).unwrap_or_default();
        refused.sort_by_key(|r| r.index);
        refused.dedup_by_key(|r| r.index);
        refused
    }
}

fn rd_error(e: &KafkaError) -> Option<&rdkafka::error::RDKafkaError> {
    match e {
        KafkaError::Transaction(r) => Some(r),
        _ => None,
    }
}

pub(crate) fn retriable(e: &KafkaError) -> bool {
    rd_error(e).is_some_and(|r| r.is_retriable())
        || matches!(
            e.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::MessageTimedOut
                    | RDKafkaErrorCode::RequestTimedOut
                    | RDKafkaErrorCode::OperationTimedOut
            )
        )
}

fn requires_abort(e: &KafkaError) -> bool {
    rd_error(e).is_some_and(|r| r.txn_requires_abort())
}

/// Exponential backoff from 100 ms to 5 s.
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    pub fn new() -> Self {
        Self { next: Duration::from_millis(100) }
    }
    /// Sleeps the next delay; fails with [`crate::kafka::Stopped`] if a stop is requested meanwhile.
    pub fn sleep(&mut self) -> Result<(), crate::kafka::Stopped> {
        let until = std::time::Instant::now() + self.next;
        while std::time::Instant::now() < until {
            if crate::kafka::stopping() {
                return Err(crate::kafka::Stopped);
            }
            std::thread::sleep(Duration::from_millis(50).min(self.next));
        }
        self.next = (self.next * 2).min(Duration::from_secs(5));
        Ok(())
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

/// Called with `(partition, offset, key, payload)` of each record read.
pub type RecordVisitor<'a> = dyn FnMut(i32, i64, Option<&[u8]>, Option<&[u8]>) -> Result<(), StreamError> + 'a;

/// Reads a whole topic partition set from its beginning to its current end with read_committed
/// isolation, outside any consumer group (checkpoint topics, state rebuilds).
pub fn read_to_end(
    kafka: &KafkaConfig,
    topic: &str,
    partitions: &[i32],
    from: Offset,
    until: Option<i64>,
    visit: &mut RecordVisitor<'_>,
) -> Result<(), StreamError> {
    use rdkafka::consumer::Consumer;
    use rdkafka::message::Message;
    let mut config = client_config(kafka);
    if !kafka.properties.contains_key("max.partition.fetch.bytes") {
        // One partition read start to end (a restore): large fetches, fewer round trips (-25 % time).
        config.set("max.partition.fetch.bytes", "16777216");
    }
    let consumer: BaseConsumer = config
        .set("group.id", "grantwatch-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "false")
        .create()
        .map_err(|e| StreamError::client(kafka, format!("creating a reader of {topic}"), e))?;
    let fail = |what: &str| {
        let what = format!("{what} of {topic}");
        move |e| StreamError::kafka(what, e)
    };
    let mut tpl = TopicPartitionList::new();
    let mut ends = std::collections::HashMap::new();
    for &p in partitions {
        let (low, high) =
            consumer.fetch_watermarks(topic, p, Duration::from_secs(30)).map_err(fail("fetching the watermarks"))?;
        let end = until.map_or(high, |u| u.min(high));
        let start = match from {
            Offset::Offset(o) => o.max(low),
            _ => low,
        };
        if start < end {
            tpl.add_partition_offset(topic, p, Offset::Offset(start)).map_err(fail("positioning the reader"))?;
            ends.insert(p, end);
        }
    }
    if ends.is_empty() {
        return Ok(());
    }
    consumer.assign(&tpl).map_err(fail("assigning the partitions"))?;
    while !ends.is_empty() {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                let p = m.partition();
                if let Some(&end) = ends.get(&p) {
                    if m.offset() < end {
                        visit(p, m.offset(), m.key(), m.payload())?;
                    }
                    if m.offset() + 1 >= end {
                        ends.remove(&p);
                    }
                }
            }
            Some(Err(e)) => return Err(fail("reading")(e)),
            None => {
                // Transaction markers occupy offsets but are never delivered: the position tells.
                for e in consumer.position().map_err(fail("reading the position"))?.elements() {
                    if let (Offset::Offset(pos), Some(&end)) = (e.offset(), ends.get(&e.partition()))
                        && pos >= end
                    {
                        ends.remove(&e.partition());
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emit(kind: &'static str, bytes: usize) -> Emit {
        Emit { partition: None, topic: "t".into(), key: None, payload: vec![b'x'; bytes], kind }
    }

    #[test]
    fn the_largest_refused_record_is_set_aside() {
        let mut emits = vec![emit("event", 10), emit("event", 500), emit("checkpoint", 5)];
        let refused =
            [Refusal { index: 0, error: "too large".into() }, Refusal { index: 1, error: "too large".into() }];
        let dead = |i: usize, e: &Emit, why: &str| Some(emit("dlq", i + e.payload.len() + why.len()));
        let out = set_aside_refused(&mut emits, &refused, dead).unwrap();
        assert_eq!((out.index, out.record.payload.len(), out.replaced), (1, 500, true));
        assert_eq!(
            emits.iter().map(|e| (e.kind, e.payload.len())).collect::<Vec<_>>(),
            [("event", 10), ("dlq", 510), ("checkpoint", 5)]
        );
        // No replacement: dropped. A refusal naming no record: nothing to do.
        let out = set_aside_refused(&mut emits, &refused[1..], |_, _, _| None).unwrap();
        assert_eq!((out.index, out.record.kind, out.replaced), (1, "dlq", false));
        assert_eq!(emits.len(), 2);
        assert!(set_aside_refused(&mut emits, &[Refusal { index: 7, error: String::new() }], dead).is_none());
    }
}
