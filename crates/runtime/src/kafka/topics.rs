//! Creating the topics the configuration names (`grantwatch-ingest create-topics`).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use crate::kafka::config::{KafkaConfig, TopicSpec, Topics};
use crate::kafka::error::StreamError;

/// Creates every topic of `topics` that does not exist yet; returns `(name, created)` per topic.
pub async fn create_topics(kafka: &KafkaConfig, topics: &Topics) -> Result<Vec<(String, bool)>, StreamError> {
    let admin: AdminClient<DefaultClientContext> = crate::kafka::client::client_config(kafka)
        .create()
        .map_err(|e| StreamError::client(kafka, "creating the admin client", e))?;
    let specs: Vec<&TopicSpec> = topics.all().into_iter().collect();
    let retention: Vec<String> = specs.iter().map(|t| t.retention_ms.to_string()).collect();
    let new: Vec<NewTopic<'_>> = specs
        .iter()
        .zip(&retention)
        .map(|(t, r)| {
            let topic = NewTopic::new(&t.name, t.partitions, TopicReplication::Fixed(t.replication_factor))
                .set("cleanup.policy", if t.compacted { "compact" } else { "delete" })
                .set("retention.ms", r)
                // Batches are compressed (lz4); an administrator's entitlements are ~1.2 MB raw.
                .set("max.message.bytes", "8388608");
            // Compaction only cleans closed segments: with the default 1 GiB a changelog would be read
            // whole, every superseded value included, until it had grown that far.
            if t.compacted { topic.set("segment.bytes", "67108864") } else { topic }
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin.create_topics(&new, &opts).await.map_err(|e| StreamError::kafka("creating topics", e))?;
    let mut out = Vec::new();
    for r in results {
        match r {
            Ok(name) => out.push((name, true)),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => out.push((name, false)),
            Err((name, code)) => return Err(StreamError::Topic { name, code }),
        }
    }
    Ok(out)
}
