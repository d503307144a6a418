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

use crate::config::KafkaConfig;
use crate::metrics::Health;

/// One record to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emit {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    /// Metric label: `event`, `alert`, `pci`, `finding`, `late`, `dlq`, `checkpoint`, `entitlements`.
    pub kind: &'static str,
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

/// The producer's context: broker trouble reaches [`Health`] as soon as librdkafka notices it.
pub struct ProducerHealth(Arc<Health>);

impl ClientContext for ProducerHealth {
    fn error(&self, error: KafkaError, reason: &str) {
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure) => {
                tracing::warn!(%reason, "broker unreachable; retrying");
                self.0.broker_down(reason);
            }
            _ => tracing::warn!(error = %error, %reason, "kafka producer error"),
        }
    }
}

impl ProducerContext for ProducerHealth {
    type DeliveryOpaque = ();
    // Delivery failures surface in `commit_transaction`, which fails the whole transaction.
    fn delivery(&self, _result: &DeliveryResult<'_>, _opaque: ()) {}
}

/// How a transaction ended.
#[derive(Debug)]
pub enum TxnOutcome {
    Committed,
    /// Aborted (e.g. fenced by a rebalance): nothing of it is visible; the caller rewinds.
    Aborted(String),
}

/// A transactional producer.
pub struct TxnProducer {
    producer: BaseProducer<ProducerHealth>,
    health: Arc<Health>,
    timeout: Duration,
}

/// How long one transactional call may take before it is retried.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);

impl TxnProducer {
    /// A producer with `transactional.id`, initialized (which fences any older instance of that id and
    /// aborts its open transaction). Waits, with backoff, for the broker to become reachable.
    pub fn new(kafka: &KafkaConfig, transactional_id: &str, health: Arc<Health>) -> anyhow::Result<TxnProducer> {
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
            .set("message.max.bytes", "16000000");
        let producer: BaseProducer<ProducerHealth> = cfg.create_with_context(ProducerHealth(health.clone()))?;
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
                Err(e) => return Err(e.into()),
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
    ) -> anyhow::Result<TxnOutcome> {
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
        for e in emits {
            let mut record = BaseRecord::to(&e.topic).payload(&e.payload);
            if let Some(k) = &e.key {
                record = record.key(k);
            }
            let mut record = record;
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        self.producer.poll(Duration::from_millis(50));
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

    fn fail(&self, e: KafkaError) -> anyhow::Result<TxnOutcome> {
        if requires_abort(&e) || retriable(&e) {
            tracing::warn!(error = %e, "aborting transaction");
            let mut backoff = Backoff::new();
            loop {
                match self.producer.abort_transaction(self.timeout) {
                    Ok(()) => return Ok(TxnOutcome::Aborted(e.to_string())),
                    Err(a) if retriable(&a) => backoff.sleep()?,
                    Err(a) => return Err(anyhow::anyhow!("abort after {e} failed: {a}")),
                }
            }
        }
        Err(anyhow::anyhow!("kafka transaction failed: {e}"))
    }
}

fn rd_error(e: &KafkaError) -> Option<&rdkafka::error::RDKafkaError> {
    match e {
        KafkaError::Transaction(r) => Some(r),
        _ => None,
    }
}

fn retriable(e: &KafkaError) -> bool {
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
    /// Sleeps the next delay; fails with [`crate::Stopped`] if a stop is requested meanwhile.
    pub fn sleep(&mut self) -> Result<(), crate::Stopped> {
        let until = std::time::Instant::now() + self.next;
        while std::time::Instant::now() < until {
            if crate::stopping() {
                return Err(crate::Stopped);
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
pub type RecordVisitor<'a> = dyn FnMut(i32, i64, Option<&[u8]>, Option<&[u8]>) -> anyhow::Result<()> + 'a;

/// Reads a whole topic partition set from its beginning to its current end with read_committed
/// isolation, outside any consumer group (checkpoint topics, state rebuilds).
pub fn read_to_end(
    kafka: &KafkaConfig,
    topic: &str,
    partitions: &[i32],
    from: Offset,
    until: Option<i64>,
    visit: &mut RecordVisitor<'_>,
) -> anyhow::Result<()> {
    use rdkafka::consumer::Consumer;
    use rdkafka::message::Message;
    let consumer: BaseConsumer = client_config(kafka)
        .set("group.id", "grantwatch-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    let mut ends = std::collections::HashMap::new();
    for &p in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(30))?;
        let end = until.map_or(high, |u| u.min(high));
        let start = match from {
            Offset::Offset(o) => o.max(low),
            _ => low,
        };
        if start < end {
            tpl.add_partition_offset(topic, p, Offset::Offset(start))?;
            ends.insert(p, end);
        }
    }
    if ends.is_empty() {
        return Ok(());
    }
    consumer.assign(&tpl)?;
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
            Some(Err(e)) => return Err(e.into()),
            None => {
                // Transaction markers occupy offsets but are never delivered: the position tells.
                for e in consumer.position()?.elements() {
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
