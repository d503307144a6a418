//! Hostile input: one record must not change the answer for everyone else, and nothing the user did not
//! ask grantwatch to write is ever written.
#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

mod common;
use common::gz_files;

use std::io::{Read, Write};
use std::path::Path;

use grantwatch::analyze::{AnalyzeOptions, run};
use grantwatch_synth::{Layout, OrgSpec, generate};

fn options(org: &Path, out: &Path) -> AnalyzeOptions {
    let mut o = AnalyzeOptions::new(out.to_path_buf());
    o.iam = vec![org.join("iam")];
    o.cloudtrail = vec![org.join("cloudtrail").into()];
    o.progress = false;
    o
}

fn gunzip(path: &Path) -> serde_json::Value {
    let mut s = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap()).read_to_string(&mut s).unwrap();
    serde_json::from_str(&s).unwrap()
}

fn gzip(path: &Path, doc: &serde_json::Value) {
    let mut w = flate2::write::GzEncoder::new(std::fs::File::create(path).unwrap(), flate2::Compression::fast());
    w.write_all(doc.to_string().as_bytes()).unwrap();
    w.finish().unwrap();
}

#[test]
fn records_dated_far_from_their_delivery_are_quarantined_and_do_not_move_time() {
    let dir = tempfile::tempdir().unwrap();
    let org = dir.path().join("org");
    let truth = generate(&OrgSpec::new(21, 1, 8, 20, 3_000, Layout::S3), &org).unwrap();
    let clean = run(&options(&org, &dir.path().join("clean"))).unwrap();

    let mut files = Vec::new();
    gz_files(&org.join("cloudtrail"), &mut files);
    files.sort();
    let victim = &files[files.len() / 2];
    let mut doc = gunzip(victim);
    let records = doc["Records"].as_array_mut().unwrap();
    let template = records[0].clone();
    for (id, time) in [("from-9999", "9999-12-31T23:59:59Z"), ("from-1970", "1970-01-01T00:00:00Z")] {
        let mut r = template.clone();
        r["eventID"] = id.into();
        r["eventTime"] = time.into();
        records.push(r);
    }
    gzip(victim, &doc);

    let poisoned = run(&options(&org, &dir.path().join("out"))).unwrap();
    let r = &poisoned.ingest;
    assert_eq!(r.records_time_refused, 2, "{:?}", r.quarantined);
    assert_eq!(r.records_quarantined, 2);
    let reasons: Vec<&str> = r.quarantined.iter().map(|q| q.reason.as_str()).collect();
    assert!(
        reasons.iter().any(|w| w.contains("9999-12-31T23:59:59Z") && w.contains("after its delivery")),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|w| w.contains("1970-01-01")), "{reasons:?}");
    assert!(r.quarantined.iter().all(|q| q.file == victim.display().to_string()));
    // Everyone else's answer is the clean run's: same time span, same as-of, same findings.
    assert_eq!(r.last_event, clean.ingest.last_event);
    assert_eq!(r.first_event, clean.ingest.first_event);
    assert_eq!(poisoned.accounts.as_of, clean.accounts.as_of);
    assert_eq!(r.events_counted, clean.ingest.events_counted);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out/identities.jsonl")).unwrap(),
        std::fs::read_to_string(dir.path().join("clean/identities.jsonl")).unwrap()
    );
    assert_eq!(clean.ingest.events_counted, truth.records_written - truth.duplicates_injected);
}

fn record(id: &str, user: &str, time: &str) -> String {
    grantwatch_e2e::cloudtrail_record(
        id,
        time,
        &serde_json::json!({"type": "IAMUser", "arn": format!("arn:aws:iam::111122223333:user/{user}"),
            "accountId": "111122223333", "userName": user, "principalId": "AIDAEXAMPLE"}),
        "s3.amazonaws.com",
        "ListBuckets",
    )
}

#[test]
fn one_event_id_shared_by_many_identities_hides_none_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let trail = dir.path().join("trail.jsonl");
    let mut f = std::fs::File::create(&trail).unwrap();
    for i in 0..20 {
        writeln!(f, "{}", record("00000000-0000-0000-0000-000000000000", &format!("u{i}"), "2024-05-01T10:00:00Z"))
            .unwrap();
    }
    // A true re-delivery: same id, identity, time and call.
    writeln!(f, "{}", record("00000000-0000-0000-0000-000000000000", "u3", "2024-05-01T10:00:00Z")).unwrap();
    drop(f);
    let iam = dir.path().join("iam.json");
    std::fs::write(&iam, r#"{"UserDetailList":[],"GroupDetailList":[],"RoleDetailList":[],"Policies":[]}"#).unwrap();
    let mut o = AnalyzeOptions::new(dir.path().join("out"));
    o.iam = vec![iam];
    o.cloudtrail = vec![trail.into()];
    o.progress = false;
    let r = run(&o).unwrap().ingest;
    assert_eq!(r.events_counted, 20);
    assert_eq!(r.duplicates, 1);
}

#[test]
fn outputs_replace_symlinks_and_never_write_through_them() {
    let dir = tempfile::tempdir().unwrap();
    let org = dir.path().join("org");
    generate(&OrgSpec::new(22, 1, 5, 10, 500, Layout::S3), &org).unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, b"precious").unwrap();
    for name in ["identities.jsonl", "identities.jsonl.tmp", "accounts.json", "ingest_report.json", "alerts.jsonl"] {
        std::os::unix::fs::symlink(&victim, out.join(name)).unwrap();
    }
    let mut o = options(&org, &out);
    let catalog = std::sync::Arc::new(grantwatch_core::catalog::Catalog::aws().unwrap());
    let rules = tempfile::tempdir().unwrap();
    let (det, _) = grantwatch_detect::load::load_detection(catalog, rules.path(), None).unwrap();
    o.detection = Some(std::sync::Arc::new(det));
    run(&o).unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    for name in ["identities.jsonl", "accounts.json", "ingest_report.json", "alerts.jsonl"] {
        let meta = std::fs::symlink_metadata(out.join(name)).unwrap();
        assert!(meta.file_type().is_file(), "{name} is a regular file now");
    }
}

#[test]
fn a_state_directory_that_is_not_grantwatch_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let org = dir.path().join("org");
    generate(&OrgSpec::new(23, 1, 5, 10, 200, Layout::S3), &org).unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    for name in ["000004.log", "LOCK", "thesis.txt"] {
        std::fs::write(home.join(name), b"mine").unwrap();
    }
    let mut o = options(&org, &dir.path().join("out"));
    o.state = Some(home.clone());
    let err = format!("{:#}", run(&o).unwrap_err());
    assert!(err.contains("not a grantwatch state directory"), "{err}");
    for name in ["000004.log", "LOCK", "thesis.txt"] {
        assert_eq!(std::fs::read(home.join(name)).unwrap(), b"mine");
    }
}

#[test]
fn iam_only_runs_without_as_of_and_reports_nothing_used() {
    let dir = tempfile::tempdir().unwrap();
    let org = dir.path().join("org");
    generate(&OrgSpec::new(24, 1, 5, 10, 200, Layout::S3), &org).unwrap();
    let mut o = options(&org, &dir.path().join("out"));
    o.cloudtrail = Vec::new();
    let outcome = run(&o).unwrap();
    assert!(outcome.identities > 0);
    assert_eq!(outcome.ingest.events_counted, 0);
    let text = std::fs::read_to_string(dir.path().join("out/identities.jsonl")).unwrap();
    for line in text.lines() {
        let f: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(f["used_actions"].as_array().map(Vec::len), Some(0), "{}", f["arn"]);
    }
    // And the summary says why nothing is used.
    let mut summary = Vec::new();
    grantwatch::output::write_summary(&mut summary, &outcome).unwrap();
    let summary = String::from_utf8(summary).unwrap();
    assert!(summary.contains("No activity logs read: nothing counts as used"), "{summary}");
}
