//! The Google Workspace Admin SDK Reports source: `GET {base}/admin/reports/v1/activity/users/all/
//! applications/{app}?startTime=...&endTime=...&maxResults=...&pageToken=...` with a bearer token read
//! from a file (the operator's refresher keeps it current: OAuth service-account flows are not
//! grantwatch's), following `nextPageToken`.
//!
//! Reports answers newest first, so a time window is done only when all its pages are read: each
//! window `[start, start + window_secs)` is read whole (at most `max_window_activities`), sorted
//! oldest first and produced with its checkpoint in one Kafka transaction. The checkpoint (per
//! application) is the newest activity time produced and the ids of the activities within `lag_secs`
//! before it; the next window starts `lag_secs` before that time (Reports shows some activities
//! late) and skips the ids it remembers. A window is *settled* when the API's clock (its `Date`
//! header) is past its end by `lag_secs`: the checkpoint then moves to the window's end even if it
//! held nothing, and the next window follows in the same poll.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use grantwatch_types::EventTime;
use reqwest::Url;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::api::{self, ApiLimits};
use super::{Ingest, Origin};
use crate::kafka::config::WorkspaceSource;
use crate::kafka::error::{Result, StreamError};

/// Windows read per application and poll at most (catching up goes on at the next poll).
const MAX_WINDOWS_PER_POLL: usize = 96;
/// Pages of one window at most (with `max_window_activities`, a bound on a runaway `nextPageToken`).
const MAX_PAGES_PER_WINDOW: usize = 10_000;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct WorkspaceCheckpoint {
    /// The newest activity time produced, or the end of the last settled window, in milliseconds.
    time_ms: Option<i64>,
    /// `(time, id)` of the activities produced within the lag before `time_ms`.
    recent: Vec<(i64, String)>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ActivitiesPage {
    #[serde(default)]
    items: Vec<Box<RawValue>>,
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ActivityId {
    time: Option<String>,
    unique_qualifier: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Activity {
    id: Option<ActivityId>,
}

/// An activity's time and id (`id.time`, `id.uniqueQualifier`), if it has them.
fn activity_key(raw: &RawValue) -> Option<(i64, String)> {
    let a: Activity = serde_json::from_str(raw.get()).ok()?;
    let id = a.id?;
    let t = EventTime::parse_rfc3339(id.time.as_deref()?)?.0;
    let q = match id.unique_qualifier? {
        serde_json::Value::String(s) => s,
        serde_json::Value::Number(n) => n.to_string(),
        _ => return None,
    };
    Some((t, q))
}

pub(crate) struct WorkspaceReports {
    source: WorkspaceSource,
    client: reqwest::Client,
    limits: ApiLimits,
}

/// One activity read: its key (`None`: without a time or id, a dead letter), the raw activity, and
/// the page and index it came from.
type ReadActivity = (Option<(i64, String)>, Box<RawValue>, Arc<str>, u64);

/// What reading one window gave.
struct Window {
    /// The window's activities, oldest first.
    activities: Vec<ReadActivity>,
    /// The API's clock at the first page.
    api_now: Option<i64>,
}

impl WorkspaceReports {
    pub(crate) fn new(source: WorkspaceSource, client: reqwest::Client, limits: ApiLimits) -> Self {
        WorkspaceReports { source, client, limits }
    }

    fn key(&self, app: &str) -> String {
        format!("workspace:{}:{app}", self.source.name)
    }

    pub(crate) async fn poll(&mut self, ingest: &mut Ingest, stop: &AtomicBool) -> Result<()> {
        for app in self.source.applications.clone() {
            for _ in 0..MAX_WINDOWS_PER_POLL {
                if stop.load(std::sync::atomic::Ordering::Relaxed) || !self.window(ingest, &app, stop).await? {
                    break;
                }
            }
        }
        Ok(())
    }

    fn url(&self, app: &str, start: Option<i64>, end: Option<i64>, token: Option<&str>) -> Result<Url> {
        let base = self.source.base_url.trim_end_matches('/');
        let mut url = Url::parse(&format!("{base}/admin/reports/v1/activity/users/all/applications/{app}"))
            .map_err(StreamError::source(format!("ingest.workspace base_url {base}")))?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("maxResults", &self.source.max_results.to_string());
            if let Some(s) = start {
                q.append_pair("startTime", &EventTime(s).to_rfc3339());
            }
            if let Some(e) = end {
                q.append_pair("endTime", &EventTime(e).to_rfc3339());
            }
            if let Some(t) = token {
                q.append_pair("pageToken", t);
            }
        }
        Ok(url)
    }

    /// Reads one window of `app` whole and produces it; `true` if it was settled (the next window
    /// may follow now).
    async fn window(&mut self, ingest: &mut Ingest, app: &str, stop: &AtomicBool) -> Result<bool> {
        let key = self.key(app);
        let cp: WorkspaceCheckpoint =
            ingest.checkpoints.get(&key).and_then(|v| serde_json::from_slice(v).ok()).unwrap_or_default();
        let lag = i64::try_from(self.source.lag_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let len = i64::try_from(self.source.window_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let start = match cp.time_ms {
            Some(t) => Some(t.saturating_sub(lag)),
            None => self.source.start_time.as_deref().and_then(EventTime::parse_rfc3339).map(|t| t.0),
        };
        let end = start.map(|s| s.saturating_add(len));
        let Some(mut window) = self.read_window(app, &key, start, end, stop).await? else {
            return Ok(false);
        };
        let recent: HashSet<(i64, &str)> = cp.recent.iter().map(|(t, id)| (*t, id.as_str())).collect();
        let mut produced_now: Vec<(i64, String)> = Vec::new();
        for (k, raw, page, index) in &window.activities {
            if let Some((t, id)) = k {
                if start.is_some_and(|s| *t < s) || recent.contains(&(*t, id.as_str())) {
                    continue;
                }
                produced_now.push((*t, id.clone()));
            }
            ingest.metrics.input("workspace").inc();
            ingest.record(raw.get().as_bytes(), Origin::Api(page.clone(), *index));
        }
        drop(recent);
        let newest = cp.time_ms.into_iter().chain(produced_now.iter().map(|(t, _)| *t)).max();
        let settled = match (end, window.api_now) {
            (Some(end), Some(now)) => end.saturating_add(lag) <= now,
            _ => false,
        };
        let time_ms = if settled { newest.max(end) } else { newest };
        let keep_from = time_ms.map_or(i64::MIN, |n| n.saturating_sub(lag));
        let mut recent: Vec<(i64, String)> =
            cp.recent.iter().cloned().chain(produced_now.iter().cloned()).filter(|(t, _)| *t >= keep_from).collect();
        recent.sort();
        recent.dedup();
        let new_cp = WorkspaceCheckpoint { time_ms, recent };
        window.activities.clear();
        if new_cp != cp {
            if !produced_now.is_empty() {
                tracing::info!(source = %key, produced = produced_now.len(), "Workspace activities pulled");
            }
            ingest.checkpoint_emit(
                key,
                serde_json::to_vec(&new_cp).map_err(StreamError::source("serializing a checkpoint"))?,
            );
            ingest.flush()?;
        }
        // Moving on only past a settled window that moved the checkpoint (nothing else would change).
        Ok(settled && new_cp.time_ms != cp.time_ms)
    }

    /// Every page of one window, sorted oldest first; `None` if a stop was requested meanwhile.
    async fn read_window(
        &self,
        app: &str,
        key: &str,
        start: Option<i64>,
        end: Option<i64>,
        stop: &AtomicBool,
    ) -> Result<Option<Window>> {
        let span = format!(
            "{} to {}",
            start.map_or("the beginning".to_string(), |s| EventTime(s).to_rfc3339()),
            end.map_or("now".to_string(), |e| EventTime(e).to_rfc3339())
        );
        let mut out = Window { activities: Vec::new(), api_now: None };
        let mut token: Option<String> = None;
        for page_no in 0..MAX_PAGES_PER_WINDOW {
            let url = self.url(app, start, end, token.as_deref())?;
            let what = format!("Workspace Reports {key}, window {span}, page {page_no}");
            let bearer = api::read_token(&self.source.token_file, &what)?;
            let auth = api::Secret::new(format!("Bearer {}", bearer.expose()));
            let Some(page) = api::get(&self.client, &url, &auth, self.limits, &what, stop).await? else {
                return Ok(None);
            };
            if page_no == 0 {
                out.api_now = page.header("date").and_then(api::http_date_ms);
            }
            let parsed: ActivitiesPage = serde_json::from_slice(&page.body).map_err(|e| StreamError::Source {
                what: what.clone(),
                source: format!("not an activities list: {e}").into(),
            })?;
            let origin: Arc<str> = what.as_str().into();
            for (i, raw) in parsed.items.into_iter().enumerate() {
                if out.activities.len() >= self.source.max_window_activities {
                    return Err(StreamError::Source {
                        what,
                        source: format!(
                            "more than max_window_activities ({}) activities in one window: lower window_secs",
                            self.source.max_window_activities
                        )
                        .into(),
                    });
                }
                out.activities.push((activity_key(&raw), raw, origin.clone(), i as u64));
            }
            match parsed.next_page_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => {
                    // Oldest first; activities without a key (dead letters) first, in page order.
                    out.activities.sort_by(|a, b| a.0.cmp(&b.0));
                    return Ok(Some(out));
                }
            }
        }
        Err(StreamError::Source {
            what: format!("Workspace Reports {key}, window {span}"),
            source: format!("more than {MAX_PAGES_PER_WINDOW} pages").into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activity_keys_take_string_and_number_qualifiers() {
        let raw = |s: &str| RawValue::from_string(s.to_string()).unwrap();
        let a = raw(r#"{"id":{"time":"2024-01-02T03:04:05.000Z","uniqueQualifier":"-123","applicationName":"login"}}"#);
        assert_eq!(
            activity_key(&a),
            Some((EventTime::parse_rfc3339("2024-01-02T03:04:05Z").unwrap().0, "-123".into()))
        );
        let b = raw(r#"{"id":{"time":"2024-01-02T03:04:05Z","uniqueQualifier":42}}"#);
        assert_eq!(activity_key(&b).map(|k| k.1), Some("42".into()));
        assert_eq!(activity_key(&raw(r#"{"id":{"time":"soon","uniqueQualifier":1}}"#)), None);
        assert_eq!(activity_key(&raw("[1,2]")), None);
    }
}
