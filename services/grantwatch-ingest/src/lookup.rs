//! The CloudTrail `LookupEvents` source (management events of one account and region).
//!
//! Each poll asks for events from the checkpoint's time on (LookupEvents answers newest first, 50 per
//! page), sorts them oldest first, skips those the checkpoint already holds (same time, same id: the
//! API's time filter is inclusive) and produces the rest with a new checkpoint in one transaction.

use anyhow::{Context, Result};
use aws_config::BehaviorVersion;
use aws_sdk_cloudtrail::primitives::DateTime;
use grantwatch_stream::config::LookupEventsSource;
use grantwatch_types::DeadLetterSource;
use serde::{Deserialize, Serialize};

use crate::Ingest;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct LookupCheckpoint {
    /// The latest event time produced, in milliseconds.
    time_ms: Option<i64>,
    /// Ids of the events produced at exactly `time_ms`.
    ids_at_time: Vec<String>,
}

pub(crate) struct LookupSource {
    source: LookupEventsSource,
    client: aws_sdk_cloudtrail::Client,
}

impl LookupSource {
    pub(crate) async fn new(source: LookupEventsSource) -> Self {
        let mut loader =
            aws_config::defaults(BehaviorVersion::latest()).region(aws_config::Region::new(source.region.clone()));
        if let Some(url) = &source.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let sdk = loader.load().await;
        Self { source, client: aws_sdk_cloudtrail::Client::new(&sdk) }
    }

    fn key(&self) -> String {
        format!("lookup:{}:{}", self.source.account, self.source.region)
    }

    pub(crate) async fn poll(&mut self, ingest: &mut Ingest) -> Result<()> {
        let key = self.key();
        let cp: LookupCheckpoint =
            ingest.checkpoints.get(&key).and_then(|v| serde_json::from_slice(v).ok()).unwrap_or_default();
        let mut events: Vec<(i64, String, String)> = Vec::new();
        let mut next_token: Option<String> = None;
        loop {
            let mut req = self.client.lookup_events().max_results(50);
            if let Some(t) = cp.time_ms {
                req = req.start_time(DateTime::from_millis(t));
            }
            if let Some(tok) = &next_token {
                req = req.next_token(tok);
            }
            let out = req
                .send()
                .await
                .with_context(|| format!("LookupEvents in {} (account {})", self.source.region, self.source.account))?;
            for e in out.events() {
                let (Some(id), Some(raw)) = (e.event_id(), e.cloud_trail_event()) else { continue };
                let t = e.event_time().and_then(|t| t.to_millis().ok()).unwrap_or(i64::MIN);
                events.push((t, id.to_string(), raw.to_string()));
            }
            next_token = out.next_token().map(str::to_string);
            if next_token.is_none() {
                break;
            }
        }
        events.sort();
        let mut new_cp = cp.clone();
        let mut produced = 0u64;
        for (t, id, raw) in events {
            let seen = cp.time_ms.is_some_and(|c| t < c || (t == c && cp.ids_at_time.contains(&id)));
            if seen {
                continue;
            }
            ingest.metrics.input("lookup_events").inc();
            let region = self.source.region.clone();
            let event_id = id.clone();
            ingest.record(raw.as_bytes(), || DeadLetterSource::LookupEvents { region, event_id });
            produced += 1;
            if new_cp.time_ms != Some(t) {
                new_cp.time_ms = Some(t);
                new_cp.ids_at_time.clear();
            }
            new_cp.ids_at_time.push(id);
        }
        if produced > 0 {
            tracing::info!(region = %self.source.region, produced, "LookupEvents polled");
            ingest.checkpoint_emit(key, serde_json::to_vec(&new_cp)?);
            ingest.flush()?;
        }
        Ok(())
    }
}
