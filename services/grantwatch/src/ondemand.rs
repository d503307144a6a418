//! `analyze --access-log`: the access service's audit log (JSON Lines of `AccessAuditEvent`, schema
//! `grantwatch.access-event.v1`; gzip is read too) folded into the on-demand grants detection judges
//! CloudTrail against (`grantwatch_detect::ondemand`).
//!
//! Read whole before the CloudTrail pass, so every call meets the grants of its time whatever the
//! order of the files: the fold keeps the latest transition per request and forgets nothing on input
//! order. Memory is the fold's bound (`[detection] on_demand_max_grants`), not the log's size: lines
//! are read one at a time with the CloudTrail reader's record cap. A line that is not an audit event
//! is quarantined (file, 0-based line index and reason, as CloudTrail records are) and counted; a file
//! that cannot be read is quarantined whole. Neither stops the run.

use std::path::PathBuf;

use grantwatch_detect::ondemand::{OnDemandGrants, OnDemandLimits};
use grantwatch_files::{Format, Item, QuarantineWriter, ReadBuffers, ReadOptions};
use grantwatch_types::{ACCESS_EVENT_SCHEMA, AccessAuditEvent, Quarantined};

/// Quarantined inputs listed in the report, at most (the counts are complete).
const LIST_CAP: usize = 1000;

/// What reading the audit logs gave.
#[derive(Debug, Default)]
pub struct AccessLogs {
    pub grants: OnDemandGrants,
    /// Lines that were audit events.
    pub events: u64,
    pub files_quarantined: u64,
    pub records_quarantined: u64,
    pub quarantined: Vec<Quarantined>,
}

/// Reads `paths` into one fold bounded by `limits`; bad lines and files go to `quarantine`.
pub fn read(
    paths: &[PathBuf],
    limits: OnDemandLimits,
    read: &ReadOptions,
    quarantine: &QuarantineWriter,
) -> AccessLogs {
    let mut out = AccessLogs { grants: OnDemandGrants::new(limits), ..Default::default() };
    let mut buf = ReadBuffers::default();
    for path in paths {
        let name = path.display().to_string();
        let set_aside = |out: &mut AccessLogs, record: Option<u64>, reason: String, raw: Option<&[u8]>| {
            let written = match (record, raw) {
                (Some(i), Some(raw)) => quarantine.record(&name, i, &reason, raw),
                (Some(i), None) => quarantine.record_without_raw(&name, i, &reason),
                (None, _) => quarantine.file(&name, &reason),
            };
            if let Err(e) = written {
                tracing::error!(error = %e, file = %name, "cannot write the quarantine file");
            }
            match record {
                Some(_) => out.records_quarantined += 1,
                None => out.files_quarantined += 1,
            }
            if out.quarantined.len() < LIST_CAP {
                out.quarantined.push(Quarantined { file: name.clone(), record, reason });
            }
        };
        let mut file = match grantwatch_files::source_file(path) {
            Ok(f) => f,
            Err(e) => {
                set_aside(&mut out, None, format!("access log: {e}"), None);
                continue;
            }
        };
        // Whatever its name, the audit log is JSON Lines.
        file.format = Format::JsonLines;
        let mut bad = 0u64;
        let result = grantwatch_files::read_records_with(&file, read, &mut buf, &mut |item| match item {
            Item::Record(r) => match serde_json::from_slice::<AccessAuditEvent>(r.raw) {
                Ok(ev) if ev.schema == ACCESS_EVENT_SCHEMA => {
                    out.events += 1;
                    out.grants.apply(&ev);
                }
                Ok(ev) => {
                    bad += 1;
                    let reason = format!(
                        "access log line {}: schema {:?}, expected {ACCESS_EVENT_SCHEMA}",
                        r.index + 1,
                        ev.schema
                    );
                    set_aside(&mut out, Some(r.index), reason, Some(r.raw));
                }
                Err(e) => {
                    bad += 1;
                    let reason = format!("access log line {}: not an access audit event: {e}", r.index + 1);
                    set_aside(&mut out, Some(r.index), reason, Some(r.raw));
                }
            },
            Item::Oversized(o) => {
                bad += 1;
                set_aside(&mut out, Some(o.index), format!("access log line {}: {o}", o.index + 1), None);
            }
        });
        if let Err(e) = result {
            set_aside(&mut out, None, format!("access log: {e}"), None);
        }
        if bad > 0 {
            tracing::warn!(file = %name, lines = bad, "Access log lines quarantined.");
        }
    }
    if out.grants.counts.evicted > 0 {
        tracing::warn!(
            evicted = out.grants.counts.evicted,
            kept = out.grants.len(),
            "More on-demand grants than [detection] on_demand_max_grants: those that ended first were left out."
        );
    }
    tracing::info!(events = out.events, grants = out.grants.len(), "Access logs read.");
    out
}
