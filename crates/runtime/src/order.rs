//! The order files are read in, and what each file says about when its records were delivered.
//!
//! Stages that need event time in order get it from the reorder buffer, which can only fix small
//! disorder; so files are read roughly oldest first: files without a CloudTrail delivery time in their
//! name (JSON Lines exports, single files) first, in the order the user gave them, then the files of
//! the S3 delivery layout by delivery time (`..._YYYYMMDDTHHMMZ_...`), oldest first, whatever the
//! account or region. Files delivered in the same minutes cover the same minutes of events.

use std::path::PathBuf;
use std::time::UNIX_EPOCH;

use grantwatch_core::time_guard::{Delivery, parse_delivery_stamp};
use grantwatch_files::{FilesError, SourceFile};
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

impl ReadOrder {
    /// Discovers the files under `paths` and orders them.
    pub fn of(paths: &[PathBuf]) -> Result<ReadOrder, FilesError> {
        let mut plain: Vec<SourceFile> = Vec::new();
        let mut delivered: Vec<(EventTime, SourceFile)> = Vec::new();
        // Discovery already yields each file once per argument; only overlapping arguments repeat.
        let mut seen = rustc_hash::FxHashSet::default();
        let mut skipped = Vec::new();
        for path in paths {
            let found = grantwatch_files::discover(std::slice::from_ref(path))?;
            skipped.extend(found.unreadable.iter().map(|(p, why)| (p.display().to_string(), why.clone())));
            for f in found.files {
                if paths.len() > 1 && !seen.insert(f.path.clone()) {
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
        delivered.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| a.1.path.as_os_str().as_encoded_bytes().cmp(b.1.path.as_os_str().as_encoded_bytes()))
        });
        let mut stamps = vec![None; plain.len()];
        stamps.extend(delivered.iter().map(|(at, _)| Some(*at)));
        plain.extend(delivered.into_iter().map(|(_, f)| f));
        Ok(ReadOrder { files: plain, stamps, skipped })
    }
}

/// The delivery time in a CloudTrail S3 object's name, if the name has one.
pub fn delivery_stamp(file: &SourceFile) -> Option<EventTime> {
    grantwatch_files::delivery_time(&file.path).as_deref().and_then(parse_delivery_stamp)
}

/// When a file's records were delivered: `stamp`, the delivery time in a CloudTrail S3 object's name
/// ([`ReadOrder::stamps`]), else at most the file's modification time (a copy is never older than its
/// content), else unknown.
pub fn delivery_of(file: &SourceFile, stamp: Option<EventTime>) -> Delivery {
    if let Some(at) = stamp {
        return Delivery::At(at);
    }
    let modified = std::fs::metadata(&file.path).and_then(|m| m.modified()).ok();
    match modified.and_then(|m| m.duration_since(UNIX_EPOCH).ok()) {
        Some(d) => Delivery::NotAfter(EventTime(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))),
        None => Delivery::Unknown,
    }
}
