//! A stateless pass over CloudTrail inputs: every record read and normalized once, on every core, and
//! handed to a visitor with its own per-thread accumulator. No order, no state, no detection: what
//! `remediate plan`'s replay proof and `policy generate` need, where each event is judged alone.
//!
//! The inputs are the same as `analyze`'s (local paths and `s3://` prefixes, the same discovery and
//! reader limits); records that do not normalize are counted, never fatal (the `analyze` pass of the
//! same files has quarantined and named them).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use grantwatch_core::cloudtrail::{NormalizeError, Normalizer};
use grantwatch_core::time_guard::TimeBounds;
use grantwatch_files::{Input, Item, Location, ReadBuffers, ReadOptions, SourceFile};
use grantwatch_s3::{S3Config, S3Source};
use grantwatch_types::Event;
use rayon::prelude::*;

use crate::order::{ReadOrder, delivery_of};

/// What a scan read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanCounts {
    pub files: u64,
    pub records: u64,
    /// Records normalized into events and visited.
    pub events: u64,
    /// Records that are not API activity (digests, insights).
    pub non_api: u64,
    /// Records that did not normalize (malformed, oversized).
    pub bad_records: u64,
    /// Records the caller's prefilter set aside unparsed (they cannot be about what it looks for).
    pub prefiltered: u64,
    /// Events whose time their delivery contradicts (`core::time_guard`, as `analyze` quarantines
    /// them): not visited, so a forged time cannot weigh here when it did not in `analyze`.
    pub time_refused: u64,
    /// Files that could not be read, with why.
    pub bad_files: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error(transparent)]
    Order(#[from] crate::order::OrderError),
    #[error(transparent)]
    S3(#[from] grantwatch_s3::S3Error),
    #[error("building the reader thread pool: {0}")]
    Pool(String),
}

/// Reads every event of `inputs` on `threads` threads (0: one per core). Each thread folds the events
/// it reads into its own accumulator, made by `init`; the accumulators are returned (one per thread
/// that read anything, in no particular order) for the caller to merge.
pub fn for_each_event<T, I, V>(
    inputs: &[Input],
    s3: &S3Config,
    normalizer: &Normalizer,
    read: ReadOptions,
    threads: usize,
    init: I,
    visit: V,
) -> Result<(ScanCounts, Vec<T>), ScanError>
where
    T: Send,
    I: Fn() -> T + Sync,
    V: Fn(&mut T, &Event) + Sync,
{
    for_each_event_where(inputs, s3, normalizer, read, threads, &|_| true, init, visit)
}

/// [`for_each_event`], normalizing only the records `prefilter` keeps. The prefilter sees a record's
/// raw bytes and must keep every record that could be of interest (false positives are free, false
/// negatives lose events): it lets a reader skip parsing most records when it looks for a few
/// identities (`Prefilter`).
#[allow(clippy::too_many_arguments)]
pub fn for_each_event_where<T, I, V>(
    inputs: &[Input],
    s3: &S3Config,
    normalizer: &Normalizer,
    read: ReadOptions,
    threads: usize,
    prefilter: &(dyn Fn(&[u8]) -> bool + Sync),
    init: I,
    visit: V,
) -> Result<(ScanCounts, Vec<T>), ScanError>
where
    T: Send,
    I: Fn() -> T + Sync,
    V: Fn(&mut T, &Event) + Sync,
{
    let source = match inputs.iter().any(|i| matches!(i, Input::S3(_))) {
        true => Some(S3Source::connect(s3)?),
        false => None,
    };
    let order = ReadOrder::of(inputs, source.as_ref())?;
    let mut pool = rayon::ThreadPoolBuilder::new();
    if threads > 0 {
        pool = pool.num_threads(threads);
    }
    let pool = pool.build().map_err(|e| ScanError::Pool(e.to_string()))?;
    let (records, events, non_api, bad) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let (prefiltered, time_refused) = (AtomicU64::new(0), AtomicU64::new(0));
    let bad_files = Mutex::new(order.skipped.clone());
    // The time guard `analyze` applies: an event whose time its delivery contradicts is not visited.
    let bounds = TimeBounds::default();
    let accumulators: Vec<T> = pool.install(|| {
        order
            .files
            .par_iter()
            .zip(order.stamps.par_iter())
            .fold(
                || (init(), ReadBuffers::default(), false),
                |(mut acc, mut buf, _), (file, stamp)| {
                    let delivery = delivery_of(file, *stamp);
                    let mut visit_item = |item: Item<'_>| {
                        records.fetch_add(1, Ordering::Relaxed);
                        let Item::Record(rec) = item else {
                            bad.fetch_add(1, Ordering::Relaxed);
                            return;
                        };
                        if !prefilter(rec.raw) {
                            prefiltered.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        let res = normalizer.normalize_each(rec.raw, &mut |ev| {
                            if bounds.check(ev.time, delivery).is_err() {
                                time_refused.fetch_add(1, Ordering::Relaxed);
                            } else {
                                events.fetch_add(1, Ordering::Relaxed);
                                visit(&mut acc, &ev);
                            }
                        });
                        match res {
                            Ok(()) => {}
                            Err(NormalizeError::NotApiActivity(_)) => {
                                non_api.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(_) => {
                                bad.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    };
                    if let Err(why) = read_file(file, source.as_ref(), &read, &mut buf, &mut visit_item)
                        && let Ok(mut b) = bad_files.lock()
                    {
                        b.push((file.location.to_string(), why));
                    }
                    (acc, buf, true)
                },
            )
            .filter(|(_, _, used)| *used)
            .map(|(acc, _, _)| acc)
            .collect()
    });
    let counts = ScanCounts {
        files: order.files.len() as u64,
        records: records.into_inner(),
        events: events.into_inner(),
        non_api: non_api.into_inner(),
        bad_records: bad.into_inner(),
        prefiltered: prefiltered.into_inner(),
        time_refused: time_refused.into_inner(),
        bad_files: bad_files.into_inner().unwrap_or_default(),
    };
    Ok((counts, accumulators))
}

/// A prefilter for the records of a few identities: keeps a record whose bytes name one of them (the
/// last segment of its ARN, which a record of the identity holds whether it acted as a user or through
/// a role session), or that holds a `\u` escape (which could spell a name in other bytes).
pub struct Prefilter {
    finders: Vec<memchr::memmem::Finder<'static>>,
}

impl Prefilter {
    pub fn for_identities<'a>(arns: impl IntoIterator<Item = &'a str>) -> Prefilter {
        let mut names: Vec<String> =
            arns.into_iter().map(|a| a.rsplit(['/', ':']).next().unwrap_or(a).to_string()).collect();
        names.sort();
        names.dedup();
        let mut finders: Vec<_> = names
            .iter()
            .filter(|n| !n.is_empty())
            .map(|n| memchr::memmem::Finder::new(n.as_bytes()).into_owned())
            .collect();
        finders.push(memchr::memmem::Finder::new(b"\\u").into_owned());
        Prefilter { finders }
    }

    pub fn keeps(&self, raw: &[u8]) -> bool {
        self.finders.iter().any(|f| f.find(raw).is_some())
    }
}

fn read_file(
    file: &SourceFile,
    s3: Option<&S3Source>,
    read: &ReadOptions,
    buf: &mut ReadBuffers,
    visit: &mut dyn FnMut(Item<'_>),
) -> Result<(), String> {
    match &file.location {
        Location::Local(_) => {
            grantwatch_files::read_records_with(file, read, buf, visit).map(drop).map_err(|e| e.to_string())
        }
        Location::S3(object) => {
            let s3 = s3.ok_or_else(|| "no S3 client".to_string())?;
            let body = s3.open(object).map_err(|e| e.to_string())?;
            grantwatch_files::read_records_from(body, file, read, buf, visit).map(drop).map_err(|e| e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_record_of_every_file_is_visited_once_and_bad_ones_are_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let record = |id: &str| {
            format!(
                r#"{{"eventVersion":"1.08","eventID":"{id}","eventTime":"2024-05-01T10:00:00Z","eventSource":"s3.amazonaws.com","eventName":"GetObject","awsRegion":"us-east-1","recipientAccountId":"111111111111","userIdentity":{{"type":"IAMUser","arn":"arn:aws:iam::111111111111:user/alice","accountId":"111111111111","userName":"alice"}}}}"#
            )
        };
        for f in 0..5 {
            let lines: Vec<String> = (0..20).map(|i| record(&format!("e-{f}-{i}"))).collect();
            std::fs::write(dir.path().join(format!("f{f}.jsonl")), lines.join("\n") + "\n{not json}\n").expect("write");
        }
        let normalizer = Normalizer::aws().expect("normalizer");
        let inputs = vec![Input::Local(dir.path().to_path_buf())];
        let (counts, accs) = for_each_event(
            &inputs,
            &S3Config::default(),
            &normalizer,
            ReadOptions::default(),
            2,
            Vec::<String>::new,
            |acc, ev| acc.push(ev.uid.clone()),
        )
        .expect("scan");
        let mut ids: Vec<String> = accs.into_iter().flatten().collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 100);
        assert_eq!(counts.events, 100);
        assert_eq!(counts.bad_records, 5);
        assert_eq!(counts.files, 5);

        // With a prefilter for bob, nothing of alice is parsed, except an escaped spelling.
        let bob = Prefilter::for_identities(["arn:aws:iam::111111111111:user/bob"]);
        let (counts, accs) = for_each_event_where(
            &inputs,
            &S3Config::default(),
            &normalizer,
            ReadOptions::default(),
            2,
            &|raw| bob.keeps(raw),
            Vec::<String>::new,
            |acc, ev| acc.push(ev.uid.clone()),
        )
        .expect("scan");
        assert_eq!(accs.into_iter().flatten().count(), 0);
        assert_eq!(counts.prefiltered, 105);
        assert!(bob.keeps(br#"{"userName":"b\u006fb"}"#));
        assert!(bob.keeps(br#"{"arn":"arn:aws:sts::1:assumed-role/bob/s"}"#));
        assert!(!bob.keeps(br#"{"userName":"alice"}"#));

        // An event dated after its file was written is refused, as analyze's time guard refuses it.
        let future = record("from-the-future").replace("2024-05-01", "2099-05-01");
        std::fs::write(dir.path().join("future.jsonl"), future + "\n").expect("write");
        let (counts, accs) = for_each_event(
            &inputs,
            &S3Config::default(),
            &normalizer,
            ReadOptions::default(),
            2,
            Vec::<String>::new,
            |acc, ev| acc.push(ev.uid.clone()),
        )
        .expect("scan");
        assert_eq!((counts.events, counts.time_refused), (100, 1));
        assert!(!accs.into_iter().flatten().any(|u| u == "from-the-future"));
    }
}
