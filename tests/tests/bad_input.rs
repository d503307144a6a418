//! Bad input is quarantined with a reason naming the file (and record), counted, and the run goes on.
#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

mod common;
use common::gz_files;

use std::io::Write;

use grantwatch::analyze::{AnalyzeOptions, run};
use grantwatch_synth::{Layout, OrgSpec, generate};

#[test]
fn corrupt_files_and_records_are_quarantined_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let org = dir.path().join("org");
    let truth = generate(&OrgSpec::new(5, 1, 10, 30, 5_000, Layout::S3), &org).unwrap();
    let trail = org.join("cloudtrail");
    let mut files = Vec::new();
    gz_files(&trail, &mut files);
    files.sort();
    assert!(files.len() > 3);

    // 1. A truncated gzip (its records are lost to the run, and it is not marked ingested).
    let victim = &files[1];
    let bytes = std::fs::read(victim).unwrap();
    let lost_records = {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut s).unwrap();
        serde_json::from_str::<serde_json::Value>(&s).unwrap()["Records"].as_array().unwrap().len() as u64
    };
    std::fs::write(victim, &bytes[..bytes.len() / 2]).unwrap();
    // 2. A file that is not JSON.
    let extra = trail.join("extra");
    std::fs::create_dir_all(&extra).unwrap();
    std::fs::write(extra.join("notes.json"), b"this is not json").unwrap();
    // 3. JSON Lines with a good record, a record missing eventTime, a broken line, a bad time.
    let good = r#"{"eventVersion":"1.08","eventID":"11111111-2222-3333-4444-555555555555","eventTime":"2020-01-01T00:00:00Z","eventSource":"s3.amazonaws.com","eventName":"GetObject","awsRegion":"us-east-1","userIdentity":{"type":"IAMUser","arn":"arn:aws:iam::999999999999:user/x","accountId":"999999999999"}}"#;
    let mut f = std::fs::File::create(extra.join("mixed.jsonl")).unwrap();
    writeln!(f, "{good}").unwrap();
    writeln!(f, r#"{{"eventID":"a","eventSource":"s3.amazonaws.com","eventName":"GetObject","userIdentity":{{}}}}"#)
        .unwrap();
    writeln!(f, "{{\"eventID\": ").unwrap();
    writeln!(f, "{}", good.replace("2020-01-01T00:00:00Z", "last tuesday").replace("11111111", "22222222")).unwrap();
    drop(f);

    let out = dir.path().join("out");
    let mut o = AnalyzeOptions::new(out.clone());
    o.iam = vec![org.join("iam")];
    o.cloudtrail = vec![trail.clone().into()];
    o.progress = false;
    let outcome = run(&o).unwrap();
    let r = &outcome.ingest;
    assert!(outcome.quarantined_anything(), "the exit status must say so");
    assert_eq!(r.files_quarantined, 2, "{:?}", r.quarantined);
    assert_eq!(r.records_quarantined, 3, "{:?}", r.quarantined);
    assert_eq!(
        r.events_counted + r.duplicates,
        truth.records_written - lost_records + 1,
        "every other record was read and counted"
    );
    let victim_name = victim.display().to_string();
    let file_reasons: Vec<_> = r.quarantined.iter().filter(|q| q.record.is_none()).collect();
    assert!(file_reasons.iter().any(|q| q.file == victim_name && q.reason.contains(&victim_name)));
    assert!(file_reasons.iter().any(|q| q.file.ends_with("notes.json")));
    let rec: Vec<_> = r.quarantined.iter().filter_map(|q| q.record.map(|i| (i, q.reason.as_str()))).collect();
    assert!(rec.iter().any(|(i, why)| *i == 1 && why.contains("eventTime")), "{rec:?}");
    assert!(rec.iter().any(|(i, _)| *i == 2), "{rec:?}");
    assert!(rec.iter().any(|(i, why)| *i == 3 && why.contains("last tuesday")), "{rec:?}");

    // Nothing is lost: every quarantined input is in the quarantine file with its reason.
    let q = std::fs::read_to_string(out.join("quarantine.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = q.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 5);
    assert!(lines.iter().any(|l| l["record"] == 2 && l["raw"].as_str().is_some_and(|s| s.contains("eventID"))));

    // The truncated file was not marked ingested: once repaired, a run with the same state reads it.
    let state = dir.path().join("state");
    o.state = Some(state.clone());
    run(&o).unwrap();
    std::fs::write(victim, &bytes).unwrap();
    let again = run(&o).unwrap();
    assert_eq!(again.ingest.files_read, 1, "only the repaired file is read; the not-JSON file stays quarantined");
    assert_eq!(again.ingest.events_counted + again.ingest.duplicates, lost_records);
    assert!(again.ingest.events_counted > 0);
}
