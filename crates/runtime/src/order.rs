//! The order files are read in, and what each file says about when its records were delivered.
//!
//! Stages that need event time in order get it from the reorder buffer, which can only fix small
//! disorder; so files are read roughly oldest first: files without a CloudTrail delivery time in their
//! name (JSON Lines exports, single files) first, in the order the user gave them, then the files of
//! the S3 delivery layout by delivery time (`..._YYYYMMDDTHHMMZ_...`), oldest first, whatever the
//! account or region, and whether a local copy or an S3 object. Files delivered in the same minutes
//! cover the same minutes of events. The other clouds' exports name the period they hold instead, and
//! are delivered when it ends: Azure's diagnostic export (`.../y=2024/m=01/d=02/h=03/m=00/PT1H.json`),
//! Cloud Logging's storage sink (`.../2024/01/02/03:00:00_03:59:59_S0.json`), and daily files named
//! `2024-01-02.jsonl`; they take the end of that period as their delivery time, so every
//! subscription's and project's hours interleave with CloudTrail's minutes.

use std::time::UNIX_EPOCH;

use grantwatch_core::time_guard::{Delivery, parse_delivery_stamp};
use grantwatch_files::{FilesError, Input, Location, SourceFile};
use grantwatch_s3::{S3Error, S3Source};
use grantwatch_types::EventTime;

/// The files of a run in read order.
#[derive(Debug, Default)]
pub struct ReadOrder {
    pub files: Vec<SourceFile>,
    /// The delivery time in each file's name (parallel to `files`): `None` for the plain files, which
    /// come first; then the delivered files, oldest first.
    pub stamps: Vec<Option<EventTime>>,
    /// Paths discovery could not take, with why (reported, never silently dropped).
    pub skipped: Vec<(String, String)>,
}

/// Why the inputs could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error(transparent)]
    Files(#[from] FilesError),
    #[error(transparent)]
    S3(#[from] S3Error),
    /// An `s3://` input without an S3 client (the caller did not connect one).
    #[error("{0}: no S3 client")]
    NoS3(String),
}

impl ReadOrder {
    /// Discovers the files under `inputs` (local paths through [`grantwatch_files::discover`], S3
    /// prefixes through `s3`'s listing) and orders them.
    pub fn of(inputs: &[Input], s3: Option<&S3Source>) -> Result<ReadOrder, OrderError> {
        let mut plain: Vec<SourceFile> = Vec::new();
        let mut delivered: Vec<(EventTime, SourceFile)> = Vec::new();
        // Discovery already yields each file once per argument; only overlapping arguments repeat.
        let mut seen = rustc_hash::FxHashSet::default();
        let mut skipped = Vec::new();
        for input in inputs {
            let found = match input {
                Input::Local(path) => grantwatch_files::discover(std::slice::from_ref(path))?,
                Input::S3(prefix) => s3.ok_or_else(|| OrderError::NoS3(prefix.to_string()))?.list(prefix)?,
            };
            skipped.extend(found.unreadable.iter().map(|(p, why)| (p.display().to_string(), why.clone())));
            for f in found.files {
                if inputs.len() > 1 && !seen.insert(f.location.clone()) {
                    continue;
                }
                match delivery_stamp(&f) {
                    Some(at) => delivered.push((at, f)),
                    None => plain.push(f),
                }
            }
        }
        // Ties (every account and region delivers in the same minutes) by path bytes: cheaper than
        // comparing paths component by component, and as deterministic.
        delivered.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.location.cmp_quick(&b.1.location)));
        let mut stamps = vec![None; plain.len()];
        stamps.extend(delivered.iter().map(|(at, _)| Some(*at)));
        plain.extend(delivered.into_iter().map(|(_, f)| f));
        Ok(ReadOrder { files: plain, stamps, skipped })
    }
}

/// The delivery time in a CloudTrail S3 object's name, else the end of the period an Azure, Cloud
/// Logging or daily export's path names (module docs).
pub fn delivery_stamp(file: &SourceFile) -> Option<EventTime> {
    if let Some(at) = file.delivery_time().as_deref().and_then(parse_delivery_stamp) {
        return Some(at);
    }
    match &file.location {
        Location::Local(path) => period_end(&path.to_string_lossy()),
        Location::S3(o) => period_end(&o.key),
    }
}

const HOUR_MS: i64 = 3_600_000;

/// The end of the period a log export's path names (see the module docs), if it names one.
pub fn period_end(path: &str) -> Option<EventTime> {
    let parts: Vec<&str> = path.split(['/', '\\']).collect();
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    let at = |y: &str, m: &str, d: &str, h: &str| EventTime::parse_rfc3339(&format!("{y}-{m}-{d}T{h}:00:00Z"));
    // Azure: y=YYYY/m=MM/d=DD/h=HH.
    let field = |key: &str, n: usize| parts.iter().rev().find_map(|p| p.strip_prefix(key).filter(|v| digits(v, n)));
    if let (Some(y), Some(d), Some(h)) = (field("y=", 4), field("d=", 2), field("h=", 2)) {
        // `m=` is both the month (before `d=`) and the minute (after `h=`).
        let month = parts.windows(2).find_map(|w| w[1].starts_with("d=").then(|| w[0].strip_prefix("m=")).flatten())?;
        return at(y, month, d, h).map(|t| EventTime(t.millis() + HOUR_MS));
    }
    let name = parts.last()?;
    // Cloud Logging's sink: YYYY/MM/DD/HH:MM:SS_HH:MM:SS_S<n>.json.
    if let [.., y, m, d, _] = parts.as_slice()
        && digits(y, 4)
        && digits(m, 2)
        && digits(d, 2)
        && let Some((_, end)) = name.split('_').next().zip(name.split('_').nth(1))
        && end.len() == 8
        && end.as_bytes()[2] == b':'
    {
        let t = EventTime::parse_rfc3339(&format!("{y}-{m}-{d}T{end}Z"))?;
        return Some(EventTime(t.millis() + 1000));
    }
    // A daily file: YYYY-MM-DD.<ext>.
    let day = name.get(..10)?;
    let b = day.as_bytes();
    if b[4] == b'-' && b[7] == b'-' && digits(&day[..4], 4) && digits(&day[5..7], 2) && digits(&day[8..], 2) {
        let rest = &name[10..];
        if rest.is_empty() || rest.starts_with('.') {
            return at(&day[..4], &day[5..7], &day[8..], "00").map(|t| EventTime(t.millis() + 24 * HOUR_MS));
        }
    }
    None
}

/// When a file's records were delivered: `stamp`, the delivery time in a CloudTrail S3 object's name
/// ([`ReadOrder::stamps`]), else at most the file's modification time (a copy is never older than its
/// content) or the S3 object's LastModified, else unknown.
pub fn delivery_of(file: &SourceFile, stamp: Option<EventTime>) -> Delivery {
    if let Some(at) = stamp {
        return Delivery::At(at);
    }
    let modified_ms = match &file.location {
        Location::Local(path) => std::fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        Location::S3(o) => o.last_modified_ms,
    };
    match modified_ms {
        Some(ms) => Delivery::NotAfter(EventTime(ms)),
        None => Delivery::Unknown,
    }
}

/// The state's "file ingested" mark of a file, when it can be known without reading the file: an S3
/// object's listed size and ETag. S3 gives any rewrite of an object a new ETag and the reader asks
/// for exactly the listed one (`If-Match`), so an unchanged mark means the very bytes already
/// ingested, and a re-run over years of trail skips them without downloading anything. A local file
/// has no such version: its mark is the fingerprint of its content ([`grantwatch_files::Fingerprint`]).
pub fn listed_version(file: &SourceFile) -> Option<String> {
    match &file.location {
        Location::Local(_) => None,
        Location::S3(o) => Some(match (&o.etag, o.last_modified_ms) {
            (Some(etag), _) => format!("s3-etag:{}:{etag}", file.size),
            // An S3-compatible store without ETags: size and modification time stand in.
            (None, Some(ms)) => format!("s3-mtime:{}:{ms}", file.size),
            (None, None) => format!("s3-size:{}", file.size),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Option<EventTime> {
        EventTime::parse_rfc3339(s)
    }

    #[test]
    fn export_paths_name_the_end_of_their_period() {
        let azure = "insights-activity-logs/resourceId=/SUBSCRIPTIONS/ABC/y=2024/m=03/d=05/h=07/m=00/PT1H.json";
        assert_eq!(period_end(azure), t("2024-03-05T08:00:00Z"));
        let sink = "logs/cloudaudit.googleapis.com/activity/2024/03/05/07:00:00_07:59:59_S0.json";
        assert_eq!(period_end(sink), t("2024-03-05T08:00:00Z"));
        assert_eq!(period_end("gcp/audit/proj-1/2024-03-05.jsonl.gz"), t("2024-03-06T00:00:00Z"));
        assert_eq!(period_end("gcp\\audit\\2024-03-05.json"), t("2024-03-06T00:00:00Z"));
        // Not periods: other names, impossible dates, a date inside a longer name.
        for p in [
            "events.jsonl",
            "y=2024/m=13/d=05/h=07/PT1H.json",
            "2024-03-05-export.json",
            "a/2024-3-5.json",
            "x/2024/03/05/notes.json",
        ] {
            assert_eq!(period_end(p), None, "{p}");
        }
    }
}
