//! The order files are read in, and what each file says about when its records were delivered.
//!
//! Stages that need event time in order get it from the reorder buffer, which can only fix small
//! disorder; so files are read roughly oldest first: files without a CloudTrail delivery time in their
//! name (JSON Lines exports, single files) first, in the order the user gave them, then the files of
//! the S3 delivery layout by delivery time (`..._YYYYMMDDTHHMMZ_...`), oldest first, whatever the
//! account or region, and whether a local copy or an S3 object. Files delivered in the same minutes
//! cover the same minutes of events.

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

/// The delivery time in a CloudTrail S3 object's name, if the name has one.
pub fn delivery_stamp(file: &SourceFile) -> Option<EventTime> {
    file.delivery_time().as_deref().and_then(parse_delivery_stamp)
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
