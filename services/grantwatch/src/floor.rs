//! The benchmark floor: only read, decompress and JSON-parse log files, on the same reader threads,
//! with nothing else. `analyze`'s events/s is judged against it. A CloudTrail record is parsed into the
//! fields `analyze` needs (borrowed); a record of another log (Azure Activity, Cloud Audit Logs, Okta,
//! Workspace) is parsed whole and kept nowhere (`IgnoredAny`): every byte checked, nothing built.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use rayon::prelude::*;
use serde::Deserialize;

#[derive(Deserialize)]
#[allow(dead_code)]
struct FloorRecord<'a> {
    #[serde(rename = "eventID", borrow)]
    event_id: &'a str,
    #[serde(rename = "eventTime", borrow)]
    event_time: &'a str,
    #[serde(rename = "eventSource", borrow)]
    event_source: &'a str,
    #[serde(rename = "eventName", borrow)]
    event_name: &'a str,
    #[serde(rename = "awsRegion", borrow, default)]
    region: Option<std::borrow::Cow<'a, str>>,
    #[serde(rename = "sourceIPAddress", borrow, default)]
    src_ip: Option<std::borrow::Cow<'a, str>>,
    #[serde(rename = "userAgent", borrow, default)]
    user_agent: Option<std::borrow::Cow<'a, str>>,
    #[serde(rename = "errorCode", borrow, default)]
    error_code: Option<std::borrow::Cow<'a, str>>,
    #[serde(rename = "recipientAccountId", borrow, default)]
    recipient: Option<std::borrow::Cow<'a, str>>,
    #[serde(rename = "userIdentity", borrow)]
    user: FloorIdentity<'a>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct FloorIdentity<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    arn: Option<std::borrow::Cow<'a, str>>,
    #[serde(rename = "accessKeyId", borrow, default)]
    access_key_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(rename = "sessionContext", borrow, default)]
    session: Option<FloorSession<'a>>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct FloorSession<'a> {
    #[serde(rename = "sessionIssuer", borrow, default)]
    issuer: Option<FloorIssuer<'a>>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct FloorIssuer<'a> {
    #[serde(borrow, default)]
    arn: Option<std::borrow::Cow<'a, str>>,
}

/// What the floor pass read.
#[derive(Debug, Clone, Copy)]
pub struct FloorOutcome {
    pub files: u64,
    pub records: u64,
    pub parse_errors: u64,
    pub bytes: u64,
    pub elapsed: std::time::Duration,
}

pub fn run(paths: &[PathBuf], threads: Option<usize>) -> Result<FloorOutcome> {
    let started = std::time::Instant::now();
    let files = grantwatch_files::discover(paths).context("finding CloudTrail files")?.files;
    let records = AtomicU64::new(0);
    let errors = AtomicU64::new(0);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads.unwrap_or(0)).build()?;
    pool.install(|| {
        files.par_iter().for_each_init(grantwatch_files::ReadBuffers::default, |buf, f| {
            let mut n = 0u64;
            let mut bad = 0u64;
            let r = grantwatch_files::read_records(f, buf, &mut |item| match item {
                grantwatch_files::Item::Record(rec) => {
                    let parsed = match grantwatch_core::shape::RecordShape::of(rec.raw) {
                        grantwatch_core::shape::RecordShape::CloudTrail => {
                            serde_json::from_slice::<FloorRecord<'_>>(rec.raw).map(|r| drop(std::hint::black_box(r)))
                        }
                        _ => serde_json::from_slice::<serde::de::IgnoredAny>(rec.raw).map(|r| {
                            std::hint::black_box(r);
                        }),
                    };
                    match parsed {
                        Ok(()) => n += 1,
                        Err(_) => bad += 1,
                    }
                }
                grantwatch_files::Item::Oversized(_) => bad += 1,
            });
            if r.is_err() {
                bad += 1;
            }
            records.fetch_add(n, Ordering::Relaxed);
            errors.fetch_add(bad, Ordering::Relaxed);
        });
    });
    Ok(FloorOutcome {
        files: files.len() as u64,
        records: records.into_inner(),
        parse_errors: errors.into_inner(),
        bytes: files.iter().map(|f| f.size).sum(),
        elapsed: started.elapsed(),
    })
}
