//! Creating the topics the configuration names (`grantwatch-ingest create-topics`).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use crate::config::{KafkaConfig, TopicSpec, Topics};

/// Creates every topic of `topics` that does not exist yet; returns `(name, created)` per topic.
pub async fn create_topics(kafka: &KafkaConfig, topics: &Topics) -> anyhow::Result<Vec<(String, bool)>> {
    let admin: AdminClient<DefaultClientContext> = crate::kafka::client_config(kafka).create()?;
    let specs: Vec<&TopicSpec> = topics.all().into_iter().collect();
    let retention: Vec<String> = specs.iter().map(|t| t.retention_ms.to_string()).collect();
    let new: Vec<NewTopic<'_>> = specs
        .iter()
        .zip(&retention)
        .map(|(t, r)| {
            NewTopic::new(&t.name, t.partitions, TopicReplication::Fixed(t.replication_factor))
                .set("cleanup.policy", if t.compacted { "compact" } else { "delete" })
                .set("retention.ms", r)
                // Batches are compressed (lz4); an administrator's entitlements are ~1.2 MB raw.
                .set("max.message.bytes", "8388608")
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin.create_topics(&new, &opts).await?;
    let mut out = Vec::new();
    for r in results {
        match r {
            Ok(name) => out.push((name, true)),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => out.push((name, false)),
            Err((name, code)) => anyhow::bail!("creating topic {name}: {code}"),
        }
    }
    Ok(out)
}
