//! The Okta System Log source: `GET {org}/api/v1/logs?since=...&sortOrder=ASCENDING&limit=...` with
//! `Authorization: SSWS {token}`, following `Link: <...>; rel="next"` (Okta's polling cursor: present
//! on every page, an empty page when caught up).
//!
//! Each page is one Kafka transaction: its events and the checkpoint `{next, published, ids}` (the
//! next page's URL; the newest `published` produced and the uuids produced at that instant). A
//! restarted ingest resumes at the committed next URL; a source whose checkpoint has no URL (it was
//! cut, or Okta gave none) asks `since` the newest `published` (inclusive) and skips the uuids it
//! remembers. Events are normalized with the org's host as their uids' org (`okta:{host}/users/{id}`).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use grantwatch_core::catalog::Catalog;
use grantwatch_core::cloudtrail::{ActionMap, Normalizer};
use grantwatch_types::EventTime;
use reqwest::Url;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::api::{self, ApiLimits};
use super::{Ingest, Origin};
use crate::kafka::config::OktaSource;
use crate::kafka::error::{Result, StreamError};

/// Pages read per poll at most: other sources get their turn; the next poll goes on.
const MAX_PAGES_PER_POLL: usize = 200;
/// Uuids remembered at the newest `published` (events of one millisecond), at most.
const MAX_IDS: usize = 10_000;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct OktaCheckpoint {
    /// The next page (Okta's cursor), where the next poll starts.
    next: Option<String>,
    /// The newest `published` produced, in milliseconds.
    published: Option<i64>,
    /// Uuids produced at `published`.
    ids: Vec<String>,
}

/// The fields of an event the checkpoint needs; the normalizer reads the rest.
#[derive(Deserialize)]
struct Meta {
    uuid: Option<String>,
    published: Option<String>,
}

pub(crate) struct OktaLog {
    source: OktaSource,
    base: Url,
    key: String,
    /// The org's host: the org of the events' uids.
    host: String,
    normalizer: Arc<Normalizer>,
    /// The human links `normalizer` stamps events with (the ingest's, when it last looked).
    humans: Option<Arc<grantwatch_core::humans::HumanIndex>>,
    client: reqwest::Client,
    limits: ApiLimits,
}

impl OktaLog {
    pub(crate) fn new(
        source: OktaSource,
        catalog: &Arc<Catalog>,
        client: reqwest::Client,
        limits: ApiLimits,
    ) -> Result<Self> {
        let base = Url::parse(&source.org_url)
            .map_err(StreamError::source(format!("ingest.okta org_url {}", source.org_url)))?;
        let host = base.host_str().unwrap_or("okta").to_string();
        let map = ActionMap::new(catalog.clone()).map_err(StreamError::source("loading the CloudTrail action map"))?;
        let normalizer = Arc::new(Normalizer::new(map).with_okta_org(Some(host.clone())));
        let key = format!("okta:{}", source.org_url.trim_end_matches('/'));
        Ok(OktaLog { source, base, key, host, normalizer, humans: None, client, limits })
    }

    /// The first page of a source: from its checkpoint's `published`, else the configured `since`.
    fn first_url(&self, cp: &OktaCheckpoint) -> Result<Url> {
        let mut url = self.base.join("/api/v1/logs").map_err(StreamError::source(format!("Okta {}", self.key)))?;
        {
            let mut q = url.query_pairs_mut();
            let since = cp.published.map(|t| EventTime(t).to_rfc3339()).or_else(|| self.source.since.clone());
            if let Some(since) = since {
                q.append_pair("since", &since);
            }
            q.append_pair("sortOrder", "ASCENDING");
            q.append_pair("limit", &self.source.limit.to_string());
        }
        Ok(url)
    }

    pub(crate) async fn poll(&mut self, ingest: &mut Ingest, stop: &AtomicBool) -> Result<()> {
        let same = match (&self.humans, &ingest.humans) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if !same {
            // The directories were (re)loaded: events name their humans from now on.
            let map = ActionMap::new(ingest.catalog.clone())
                .map_err(StreamError::source("loading the CloudTrail action map"))?;
            self.humans = ingest.humans.clone();
            self.normalizer =
                Arc::new(Normalizer::new(map).with_okta_org(Some(self.host.clone())).with_humans(self.humans.clone()));
        }
        let mut cp: OktaCheckpoint =
            ingest.checkpoints.get(&self.key).and_then(|v| serde_json::from_slice(v).ok()).unwrap_or_default();
        let mut url = match &cp.next {
            Some(next) => {
                Url::parse(next).map_err(StreamError::source(format!("Okta {}: checkpointed next page", self.key)))?
            }
            None => self.first_url(&cp)?,
        };
        let mut produced = 0usize;
        for _ in 0..MAX_PAGES_PER_POLL {
            let what = format!("Okta System Log {} page {}", self.key, url.as_str());
            let token = api::read_token(&self.source.api_token_file, &what)?;
            let auth = api::Secret::new(format!("SSWS {}", token.expose()));
            let Some(page) = api::get(&self.client, &url, &auth, self.limits, &what, stop).await? else {
                return Ok(()); // stopping: nothing of this page was produced
            };
            let events: Vec<Box<RawValue>> = serde_json::from_slice(&page.body).map_err(|e| StreamError::Source {
                what: what.clone(),
                source: format!("not a JSON array of events: {e}").into(),
            })?;
            let next = match api::link_next(&page.headers) {
                Some(n) => {
                    let n = url.join(&n).map_err(|e| StreamError::Source {
                        what: what.clone(),
                        source: format!("next link not a URL: {e}").into(),
                    })?;
                    if !api::same_origin(&self.base, &n) {
                        return Err(StreamError::Source {
                            what,
                            source: format!("next link leaves the org ({}): refused", n.origin().ascii_serialization())
                                .into(),
                        });
                    }
                    Some(n)
                }
                None => None,
            };
            let origin_page: Arc<str> = what.as_str().into();
            let count = events.len();
            for (i, raw) in events.iter().enumerate() {
                let meta: Option<Meta> = serde_json::from_str(raw.get()).ok();
                let uuid = meta.as_ref().and_then(|m| m.uuid.clone());
                let published = meta.as_ref().and_then(|m| m.published.as_deref()).and_then(EventTime::parse_rfc3339);
                if let (Some(p), Some(u), Some(last)) = (published, &uuid, cp.published) {
                    // Resuming with `since` (inclusive): the instant of the checkpoint again.
                    if p.0 == last && cp.ids.contains(u) {
                        continue;
                    }
                }
                ingest.metrics.input("okta").inc();
                ingest.record_with(&self.normalizer, raw.get().as_bytes(), Origin::Api(origin_page.clone(), i as u64));
                produced += 1;
                if let (Some(p), Some(u)) = (published, uuid) {
                    match cp.published {
                        Some(last) if last == p.0 => {
                            if cp.ids.len() < MAX_IDS {
                                cp.ids.push(u);
                            }
                        }
                        Some(last) if last > p.0 => {}
                        _ => {
                            cp.published = Some(p.0);
                            cp.ids = vec![u];
                        }
                    }
                }
            }
            let next_str = next.as_ref().map(|n| n.as_str().to_string());
            let moved = count > 0 || next_str != cp.next;
            cp.next = next_str;
            if moved {
                ingest.checkpoint_emit(
                    self.key.clone(),
                    serde_json::to_vec(&cp).map_err(StreamError::source("serializing a checkpoint"))?,
                );
                ingest.flush()?;
            }
            // Caught up: a short page (Okta's polling cursor stays for the next poll).
            match next {
                Some(n) if count >= self.source.limit as usize && count > 0 => url = n,
                _ => break,
            }
        }
        if produced > 0 {
            tracing::info!(source = %self.key, produced, "Okta System Log pulled");
        }
        Ok(())
    }
}
