//! A killed `grantwatch analyze` restarts from its last committed batch: the final state, findings and
//! alerts equal those of an uninterrupted run, with no usage lost, no event counted twice and no alert
//! written twice.
#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use grantwatch_synth::{Layout, OrgSpec, generate};

fn analyze(org: &Path, out: &Path, state: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_grantwatch"));
    c.arg("analyze")
        .arg("--iam")
        .arg(org.join("iam"))
        .arg("--cloudtrail")
        .arg(org.join("cloudtrail"))
        .arg("--state")
        .arg(state)
        .arg("--out")
        .arg(out)
        .args(["--quiet", "--threads", "2", "--flush-budget", "1500"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

fn identities(out: &Path) -> String {
    std::fs::read_to_string(out.join("identities.jsonl")).unwrap()
}

/// The alerts of a run, one line each, sorted (the order of lines written by one run is kept by
/// comparing sorted copies, which a duplicate or a lost alert still changes).
fn alerts(out: &Path) -> Vec<String> {
    let mut lines: Vec<String> =
        std::fs::read_to_string(out.join("alerts.jsonl")).unwrap().lines().map(str::to_string).collect();
    lines.sort();
    lines
}

fn report(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("ingest_report.json")).unwrap()).unwrap()
}

#[test]
fn killed_runs_resume_to_the_uninterrupted_result() {
    let dir = tempfile::tempdir().unwrap();
    let org = dir.path().join("org");
    let truth = generate(&OrgSpec::new(11, 2, 15, 60, 40_000, Layout::S3), &org).unwrap();

    let clean_out = dir.path().join("clean");
    let status = analyze(&org, &clean_out, &dir.path().join("clean-state"), &[]).status().unwrap();
    assert!(status.success());
    let clean = identities(&clean_out);

    // Crash at chosen points: right after the 2nd, then the 5th state flush of the respective run.
    let state = dir.path().join("state");
    let out = dir.path().join("out");
    for n in ["2", "5"] {
        let status = analyze(&org, &out, &state, &["--crash-after-flushes", n]).status().unwrap();
        assert!(!status.success(), "the fault injection must end the process");
    }
    // And kill -9 at arbitrary moments.
    for delay_ms in [150u64, 400] {
        let mut child = analyze(&org, &out, &state, &[]).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL; the run may also have finished already, which is fine too
        let _ = child.wait();
    }
    let status = analyze(&org, &out, &state, &[]).status().unwrap();
    assert!(status.success());
    assert_eq!(identities(&out), clean, "findings after crashes equal the uninterrupted run's");
    let clean_alerts = alerts(&clean_out);
    assert!(!clean_alerts.is_empty(), "the generated organization raises alerts");
    assert_eq!(alerts(&out), clean_alerts, "alerts after crashes: none lost, none twice");

    // Event counts too: over all runs, each distinct event was counted exactly once.
    let per_identity = |text: &str| -> u64 {
        text.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["events_in_lookback"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(per_identity(&identities(&out)), per_identity(&clean));
    let clean_report = report(&clean_out);
    assert_eq!(
        clean_report["events_counted"].as_u64().unwrap(),
        truth.records_written - truth.duplicates_injected,
        "the uninterrupted run counts every distinct event once"
    );
}
