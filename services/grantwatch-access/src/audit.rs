//! The audit trail: every committed transition, from the ledger's outbox, appended to the audit log
//! (JSON Lines, fsynced) and sent to the `grantwatch.access` topic, then acknowledged.
//!
//! The log holds each event once: on open, a torn last line (a crash mid-write) is cut, and events at
//! or below the last `audit_seq` in the file are not written again. The topic is at least once:
//! events are acknowledged only after the broker has them, so a crash between the two sends again
//! (with the same `audit_seq`). Both keep commit order; the topic is keyed by request id.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use grantwatch_types::AccessAuditEvent;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::watch;

use crate::config::KafkaSection;
use crate::engine::Engine;

/// Events read from the outbox per round.
const PAGE: usize = 500;

pub struct AuditLog {
    path: PathBuf,
    file: File,
    /// The last `audit_seq` in the file.
    last: Option<u64>,
}

impl AuditLog {
    pub fn open(path: &Path) -> Result<AuditLog> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening the audit log {}", path.display()))?;
        let len = file.metadata()?.len();
        // The last complete line is within the last 1 MiB (events are far smaller).
        let tail_start = len.saturating_sub(1 << 20);
        file.seek(SeekFrom::Start(tail_start))?;
        let mut tail = Vec::new();
        file.read_to_end(&mut tail)?;
        let complete = tail.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if complete < tail.len() {
            let keep = tail_start + complete as u64;
            tracing::warn!(path = %path.display(), cut_bytes = len - keep, "the audit log ends in a torn line (a crash mid-write); cutting it, the event is written again from the outbox");
            file.set_len(keep)?;
            file.sync_data()?;
        }
        let last = tail[..complete]
            .split(|&b| b == b'\n')
            .rev()
            .find(|l| !l.is_empty())
            .map(|l| {
                serde_json::from_slice::<AccessAuditEvent>(l)
                    .map(|e| e.audit_seq)
                    .with_context(|| format!("{}: the last line is not an access event", path.display()))
            })
            .transpose()?;
        Ok(AuditLog { path: path.to_path_buf(), file, last })
    }

    /// Appends the events not yet in the file, then fsyncs.
    pub fn append(&mut self, events: &[AccessAuditEvent]) -> Result<()> {
        let mut buf = Vec::new();
        let mut last = self.last;
        for e in events {
            if last.is_some_and(|l| e.audit_seq <= l) {
                continue;
            }
            serde_json::to_writer(&mut buf, e)?;
            buf.push(b'\n');
            last = Some(e.audit_seq);
        }
        if buf.is_empty() {
            return Ok(());
        }
        self.file.write_all(&buf).with_context(|| format!("appending to {}", self.path.display()))?;
        self.file.sync_data().with_context(|| format!("syncing {}", self.path.display()))?;
        self.last = last;
        Ok(())
    }
}

/// The audit topic's producer.
pub struct AuditTopic {
    producer: FutureProducer,
    topic: String,
}

impl AuditTopic {
    /// Creates the topic if it does not exist, and the producer.
    pub async fn new(cfg: &KafkaSection) -> Result<AuditTopic> {
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", &cfg.bootstrap_servers);
        for (k, v) in &cfg.properties {
            c.set(k, v);
        }
        c.set_log_level(rdkafka::config::RDKafkaLogLevel::Warning);
        let admin: AdminClient<DefaultClientContext> = c.create().context("creating the Kafka admin client")?;
        let topic = NewTopic::new(&cfg.topic, cfg.partitions, TopicReplication::Fixed(cfg.replication_factor));
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        for r in admin.create_topics([&topic], &opts).await.context("creating the audit topic")? {
            match r {
                Ok(name) => tracing::info!(topic = %name, "created the audit topic"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => anyhow::bail!("creating the audit topic {name}: {code}"),
            }
        }
        c.set("enable.idempotence", "true").set("acks", "all").set("message.timeout.ms", "30000");
        let producer: FutureProducer = c.create().context("creating the audit topic's producer")?;
        Ok(AuditTopic { producer, topic: cfg.topic.clone() })
    }

    async fn send(&self, events: &[AccessAuditEvent]) -> Result<()> {
        let mut pending = Vec::with_capacity(events.len());
        for e in events {
            let payload = serde_json::to_vec(e)?;
            let record = FutureRecord::to(&self.topic).key(e.transition.request_id.as_bytes()).payload(&payload);
            let delivery = self
                .producer
                .send_result(record)
                .map_err(|(err, _)| anyhow::anyhow!("queueing audit event {}: {err}", e.audit_seq))?;
            pending.push((e.audit_seq, delivery));
        }
        for (seq, delivery) in pending {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((err, _))) => anyhow::bail!("audit event {seq} not delivered to {}: {err}", self.topic),
                Err(_) => anyhow::bail!("audit event {seq}: the producer was dropped"),
            }
        }
        Ok(())
    }
}

/// Drains the outbox into the log and the topic until `stop`, then once more.
pub async fn run_publisher(
    engine: Arc<Engine>,
    mut log: AuditLog,
    topic: Option<AuditTopic>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let stopping = *stop.borrow();
        match publish_page(&engine, &mut log, topic.as_ref()).await {
            Ok(0) if stopping => return,
            Ok(0) => {
                backoff = Duration::from_millis(100);
                tokio::select! {
                    _ = engine.committed.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => {}
                }
            }
            Ok(_) => backoff = Duration::from_millis(100),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "publishing the audit trail failed; retrying (events stay in the outbox)");
                if stopping {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

async fn publish_page(engine: &Engine, log: &mut AuditLog, topic: Option<&AuditTopic>) -> Result<usize> {
    let events = engine.ledger.outbox(PAGE)?;
    let Some(last) = events.last().map(|e| e.audit_seq) else { return Ok(0) };
    log.append(&events)?;
    if let Some(t) = topic {
        t.send(&events).await?;
    }
    engine.ledger.ack_outbox(last)?;
    Ok(events.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use grantwatch_types::{
        AccessCommand, AccessState, AccessTransition, EventTime, RequestedAccess, RequestedIdentity, RiskLevel,
    };

    fn event(seq: u64) -> AccessAuditEvent {
        AccessAuditEvent {
            schema: grantwatch_types::ACCESS_EVENT_SCHEMA.into(),
            audit_seq: seq,
            transition: AccessTransition {
                request_id: "r1".into(),
                seq,
                at: EventTime(1_700_000_000_000),
                by: "alice".into(),
                command: AccessCommand::Submit,
                from: None,
                state: AccessState::Pending,
                reason: "why".into(),
            },
            identity: RequestedIdentity::IamRole { arn: "arn:aws:iam::111111111111:role/app".into() },
            account_id: "111111111111".into(),
            access: RequestedAccess::ManagedPolicy { policy_arn: "arn:aws:iam::aws:policy/ReadOnlyAccess".into() },
            risk: RiskLevel::Medium,
            requester: "alice".into(),
            ticket: None,
            approvals: vec![],
            activated_at: None,
            expires_at: None,
            ended_at: None,
            alert: false,
        }
    }

    fn seqs(path: &Path) -> Vec<u64> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<AccessAuditEvent>(l).unwrap().audit_seq)
            .collect()
    }

    #[test]
    fn events_are_written_once_even_when_sent_again_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit/log.jsonl");
        let mut log = AuditLog::open(&path).unwrap();
        log.append(&[event(0), event(1)]).unwrap();
        log.append(&[event(1), event(2)]).unwrap();
        drop(log);
        let mut log = AuditLog::open(&path).unwrap();
        log.append(&[event(0), event(1), event(2), event(3)]).unwrap();
        assert_eq!(seqs(&path), [0, 1, 2, 3]);
    }

    #[test]
    fn a_torn_last_line_is_cut_and_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        let mut log = AuditLog::open(&path).unwrap();
        log.append(&[event(0), event(1)]).unwrap();
        drop(log);
        // A crash in the middle of writing event 2.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&serde_json::to_vec(&event(2)).unwrap()[..40]).unwrap();
        drop(f);
        let mut log = AuditLog::open(&path).unwrap();
        log.append(&[event(2)]).unwrap();
        assert_eq!(seqs(&path), [0, 1, 2]);
    }

    #[test]
    fn a_log_that_is_not_ours_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        std::fs::write(&path, "not json\n").unwrap();
        let Err(e) = AuditLog::open(&path) else { panic!("a foreign file was taken as the audit log") };
        assert!(format!("{e:#}").contains("not an access event"), "{e:#}");
    }
}
