//! `grantwatch analyze --cloudtrail s3://...` end to end, against moto's S3 server (`scripts/moto`): the
//! real binary, the real SDK, ListObjectsV2 and GetObject over HTTP. A generated organization's trail is
//! uploaded as CloudTrail delivers it, and every run over the bucket must equal the same run over the
//! local copy; a corrupt object is quarantined by its `s3://` name; `--state` skips what was ingested;
//! a missing bucket stops the run with a clear error.
#![allow(clippy::unwrap_used, clippy::print_stdout)] // test code: a panic is a failed test

mod common;
use common::gz_files;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use grantwatch_e2e::moto;
use grantwatch_e2e::stack::service_bin;
use grantwatch_synth::{Layout, OrgSpec, generate};
use grantwatch_types::IngestReport;

/// A bucket name no other test (or earlier run against the same server) uses.
fn bucket(name: &str) -> String {
    format!("gw-{name}-{}-{}", std::process::id(), rand::random::<u32>())
}

/// Runs the real `grantwatch analyze` with S3 settings from the environment only (as a user would:
/// the SDK's default chain), and `extra` arguments.
fn analyze(iam: &Path, cloudtrail: &[String], out: &Path, extra: &[&str]) -> Output {
    let mut cmd = Command::new(service_bin("grantwatch"));
    cmd.arg("analyze").arg("--iam").arg(iam).arg("--cloudtrail").args(cloudtrail);
    cmd.arg("--out").arg(out).arg("--quiet").arg("--rules").arg(service_bin_repo().join("rules")).args(extra);
    for var in ["AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"] {
        cmd.env_remove(var);
    }
    cmd.env("AWS_ACCESS_KEY_ID", moto::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", moto::SECRET_KEY)
        .env("AWS_REGION", moto::REGION)
        // No instance-metadata probing on a machine that is not in AWS.
        .env("AWS_EC2_METADATA_DISABLED", "true");
    let out = cmd.output().unwrap();
    println!("stdout: {}\nstderr: {}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    out
}

fn service_bin_repo() -> PathBuf {
    grantwatch_e2e::stack::repo()
}

fn report(out: &Path) -> IngestReport {
    serde_json::from_str(&std::fs::read_to_string(out.join("ingest_report.json")).unwrap()).unwrap()
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap().lines().map(str::to_string).collect()
}

/// The report's counts, without the fields that name the input (its location differs by design).
fn counts(r: &IngestReport) -> serde_json::Value {
    let mut v = serde_json::to_value(r).unwrap();
    let o = v.as_object_mut().unwrap();
    o.remove("quarantined");
    o.remove("quarantine_file");
    v
}

fn org(dir: &Path, seed: u64) -> PathBuf {
    let org = dir.join("org");
    let mut spec = OrgSpec::new(seed, 2, 8, 20, 4_000, Layout::S3);
    // Two regions and a file every two hours: the real layout, with a few hundred objects to upload.
    spec.regions = vec!["us-east-1".into(), "eu-west-1".into()];
    spec.file_minutes = 120;
    generate(&spec, &org).unwrap();
    org
}

#[test]
fn the_bucket_gives_the_same_findings_alerts_and_counts_as_the_local_copy_and_state_skips_it() {
    let endpoint = moto::endpoint();
    let s3 = moto::client(&endpoint);
    let dir = tempfile::tempdir().unwrap();
    let org = org(dir.path(), 21);
    let trail = org.join("cloudtrail");
    // What a trail bucket also holds: digests and other objects, skipped by the same rules on both sides.
    let aws_logs = trail.join("AWSLogs");
    let account = std::fs::read_dir(&aws_logs).unwrap().next().unwrap().unwrap().file_name();
    let digest_dir = aws_logs.join(&account).join("CloudTrail-Digest/us-east-1/2024/01/01");
    std::fs::create_dir_all(&digest_dir).unwrap();
    std::fs::write(digest_dir.join("x_CloudTrail-Digest_us-east-1_t_20240101T0100Z.json.gz"), b"digest").unwrap();
    std::fs::write(aws_logs.join("README.txt"), b"not a trail").unwrap();
    let b = bucket("same");
    let uploaded = moto::upload_tree(&s3, &b, "", &trail);
    assert!(uploaded > 50, "{uploaded} objects");

    let local_out = dir.path().join("local");
    let o = analyze(&org.join("iam"), &[trail.display().to_string()], &local_out, &[]);
    assert_eq!(o.status.code(), Some(0));
    // One account from the bucket, the other from the local copy: sources mix in one run, in one
    // delivery order.
    let mut accounts: Vec<String> =
        std::fs::read_dir(&aws_logs).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    accounts.retain(|a| a.len() == 12);
    accounts.sort();
    assert_eq!(accounts.len(), 2);
    let s3_out = dir.path().join("s3");
    let state = dir.path().join("state");
    let inputs = [format!("s3://{b}/AWSLogs/{}/", accounts[0]), aws_logs.join(&accounts[1]).display().to_string()];
    let s3_args = ["--s3-endpoint-url", endpoint.as_str(), "--state", state.to_str().unwrap()];
    let o = analyze(&org.join("iam"), &inputs, &s3_out, &s3_args);
    assert_eq!(o.status.code(), Some(0));

    let (local, remote) = (report(&local_out), report(&s3_out));
    assert_eq!(counts(&local), counts(&remote));
    assert!(remote.files_read > 50 && remote.events_counted > 3_000, "{remote:?}");
    assert!(remote.quarantined.is_empty(), "{:?}", remote.quarantined);
    assert_eq!(lines(&local_out.join("identities.jsonl")), lines(&s3_out.join("identities.jsonl")));
    let alerts = lines(&local_out.join("alerts.jsonl"));
    assert!(!alerts.is_empty());
    assert_eq!(alerts, lines(&s3_out.join("alerts.jsonl")));

    // Again with the same state: every object is recognized from its listing (key, size, ETag).
    let o = analyze(&org.join("iam"), &inputs[..1], &dir.path().join("again"), &s3_args);
    assert_eq!(o.status.code(), Some(0));
    let again = report(&dir.path().join("again"));
    assert_eq!((again.files_read, again.records_read, again.events_counted), (0, 0, 0), "{again:?}");
    assert!(again.files_already_ingested > 20, "{again:?}");

    // An object written again (a new ETag) is read again, and only it; its events were counted before.
    let mut files = Vec::new();
    gz_files(&aws_logs.join(&accounts[0]), &mut files);
    files.retain(|f| !f.to_string_lossy().contains("Digest"));
    files.sort();
    let victim = &files[files.len() / 2];
    let key = victim.strip_prefix(&trail).unwrap().to_str().unwrap().to_string();
    let mut body = std::fs::read(victim).unwrap();
    // Same records, new bytes: gzip members concatenate, and an empty member adds no record.
    body.extend_from_slice(&gzip(b""));
    moto::put(&s3, &b, &key, body);
    let o = analyze(&org.join("iam"), &inputs[..1], &dir.path().join("third"), &s3_args);
    assert_eq!(o.status.code(), Some(0));
    let third = report(&dir.path().join("third"));
    assert_eq!((third.files_read, third.events_counted), (1, 0), "{third:?}");
    assert!(third.records_read > 0 && third.duplicates == third.records_read - third.non_api_records, "{third:?}");
}

#[test]
fn a_corrupt_object_is_quarantined_by_its_name_and_the_rest_is_counted() {
    let endpoint = moto::endpoint();
    let s3 = moto::client(&endpoint);
    let dir = tempfile::tempdir().unwrap();
    let org = org(dir.path(), 22);
    let trail = org.join("cloudtrail");
    let mut files = Vec::new();
    gz_files(&trail, &mut files);
    files.sort();
    // A delivered object cut in half (corrupt gzip), and one that is not JSON at all.
    let victim = files[files.len() / 3].clone();
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..bytes.len() / 2]).unwrap();
    std::fs::write(trail.join("AWSLogs/notes.json"), b"this is not json").unwrap();
    let b = bucket("corrupt");
    moto::upload_tree(&s3, &b, "", &trail);

    let local_out = dir.path().join("local");
    let o = analyze(&org.join("iam"), &[trail.display().to_string()], &local_out, &["--no-detect"]);
    assert_eq!(o.status.code(), Some(3), "the exit status says that input was quarantined");
    let s3_out = dir.path().join("s3");
    let url = format!("s3://{b}/AWSLogs/");
    let o = analyze(&org.join("iam"), &[url], &s3_out, &["--no-detect", "--s3-endpoint-url", &endpoint]);
    assert_eq!(o.status.code(), Some(3));

    let (local, remote) = (report(&local_out), report(&s3_out));
    assert_eq!(counts(&local), counts(&remote));
    assert_eq!(remote.files_quarantined, 2, "{:?}", remote.quarantined);
    let key = victim.strip_prefix(&trail).unwrap().to_str().unwrap();
    let name = format!("s3://{b}/{key}");
    let q: Vec<_> = remote.quarantined.iter().filter(|q| q.record.is_none()).collect();
    assert!(q.iter().any(|q| q.file == name && q.reason.contains(&name) && q.reason.contains("gzip")), "{q:?}");
    assert!(q.iter().any(|q| q.file == format!("s3://{b}/AWSLogs/notes.json") && q.reason.contains("JSON")), "{q:?}");
    let quarantine = std::fs::read_to_string(s3_out.join("quarantine.jsonl")).unwrap();
    assert!(quarantine.contains(&name), "{quarantine}");
    assert_eq!(lines(&local_out.join("identities.jsonl")), lines(&s3_out.join("identities.jsonl")));
}

#[test]
fn a_missing_bucket_or_an_empty_prefix_stops_the_run_with_a_clear_error() {
    let endpoint = moto::endpoint();
    let dir = tempfile::tempdir().unwrap();
    let iam = dir.path().join("iam");
    std::fs::create_dir_all(&iam).unwrap();
    std::fs::write(
        iam.join("a.json"),
        br#"{"UserDetailList":[],"GroupDetailList":[],"RoleDetailList":[],"Policies":[]}"#,
    )
    .unwrap();
    let missing = bucket("missing");
    let url = format!("s3://{missing}/AWSLogs/");
    let o = analyze(&iam, std::slice::from_ref(&url), &dir.path().join("out"), &["--s3-endpoint-url", &endpoint]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&url) && err.contains("does not exist") && err.contains("NoSuchBucket"), "{err}");

    let s3 = moto::client(&endpoint);
    let b = bucket("empty");
    moto::put(&s3, &b, "other/x.json", b"{}".to_vec());
    let url = format!("s3://{b}/AWSLogs/");
    let o = analyze(&iam, std::slice::from_ref(&url), &dir.path().join("out2"), &["--s3-endpoint-url", &endpoint]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&url) && err.contains("no objects"), "{err}");
    // Credentials never reach the output.
    assert!(!err.contains(moto::SECRET_KEY) && !String::from_utf8_lossy(&o.stdout).contains(moto::SECRET_KEY));
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}
