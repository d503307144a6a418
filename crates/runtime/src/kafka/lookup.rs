//! The CloudTrail `LookupEvents` source (management events of one account and region).
//!
//! CloudTrail makes events visible to LookupEvents minutes after they happen, and not in event-time
//! order across services. So each poll asks for events from `newest produced − lag` on (LookupEvents
//! answers newest first, 50 per page), skips those the checkpoint remembers (it keeps the ids of the
//! last `lag`), and produces the rest, oldest first, with the new checkpoint in one transaction. An
//! event that becomes visible more than `lag` after a newer one was produced is missed: the lag is
//! configurable (`ingest.lookup_lag_secs`, default 15 minutes).

use aws_config::BehaviorVersion;
use aws_sdk_cloudtrail::primitives::DateTime;
use serde::{Deserialize, Serialize};

use crate::kafka::config::LookupEventsSource;
use crate::kafka::error::{Result, StreamError};
use crate::kafka::ingest::{Ingest, Origin};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct LookupCheckpoint {
    /// The latest event time produced, in milliseconds.
    time_ms: Option<i64>,
    /// `(time, id)` of the events produced within the lag before `time_ms`.
    recent: Vec<(i64, String)>,
}

pub(crate) struct LookupSource {
    source: LookupEventsSource,
    lag_ms: i64,
    client: aws_sdk_cloudtrail::Client,
}

impl LookupSource {
    pub(crate) async fn new(source: LookupEventsSource, lag_secs: u64) -> Self {
        let mut loader =
            aws_config::defaults(BehaviorVersion::latest()).region(aws_config::Region::new(source.region.clone()));
        if let Some(url) = &source.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let sdk = loader.load().await;
        let lag_ms = i64::try_from(lag_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        Self { source, lag_ms, client: aws_sdk_cloudtrail::Client::new(&sdk) }
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
                req = req.start_time(DateTime::from_millis(t.saturating_sub(self.lag_ms)));
            }
            if let Some(tok) = &next_token {
                req = req.next_token(tok);
            }
            let out = req.send().await.map_err(|e| StreamError::Source {
                what: format!("LookupEvents in {} (account {})", self.source.region, self.source.account),
                source: aws_sdk_cloudtrail::error::DisplayErrorContext(e).to_string().into(),
            })?;
            for e in out.events() {
                let (Some(id), Some(raw)) = (e.event_id(), e.cloud_trail_event()) else { continue };
                // An event without a time cannot be placed: it is left out (LookupEvents always sets one).
                let Some(t) = e.event_time().and_then(|t| t.to_millis().ok()) else { continue };
                events.push((t, id.to_string(), raw.to_string()));
            }
            next_token = out.next_token().map(str::to_string);
            if next_token.is_none() {
                break;
            }
        }
        events.sort();
        let window_start = cp.time_ms.map(|t| t.saturating_sub(self.lag_ms));
        let recent: std::collections::HashSet<(i64, &str)> =
            cp.recent.iter().map(|(t, id)| (*t, id.as_str())).collect();
        let mut produced_now: Vec<(i64, String)> = Vec::new();
        let region: std::sync::Arc<str> = self.source.region.as_str().into();
        for (t, id, raw) in &events {
            let seen = window_start.is_some_and(|w| *t < w) || recent.contains(&(*t, id.as_str()));
            if seen {
                continue;
            }
            ingest.metrics.input("lookup_events").inc();
            ingest.record(raw.as_bytes(), Origin::Lookup(region.clone(), id.as_str().into()));
            produced_now.push((*t, id.clone()));
        }
        let produced = produced_now.len();
        let newest = cp.time_ms.into_iter().chain(produced_now.iter().map(|(t, _)| *t)).max();
        let keep_from = newest.map_or(i64::MIN, |n| n.saturating_sub(self.lag_ms));
        let mut new_cp = LookupCheckpoint { time_ms: newest, recent: Vec::new() };
        new_cp.recent = cp.recent.iter().cloned().chain(produced_now).filter(|(t, _)| *t >= keep_from).collect();
        new_cp.recent.sort();
        new_cp.recent.dedup();
        if produced > 0 {
            tracing::info!(region = %self.source.region, produced, "LookupEvents polled");
            ingest.checkpoint_emit(
                key,
                serde_json::to_vec(&new_cp).map_err(StreamError::source("serializing a checkpoint"))?,
            );
            ingest.flush()?;
        }
        Ok(())
    }
}
