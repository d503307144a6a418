//! The exit status tells a script whether input was quarantined: 0 clean, 3 quarantined, 1 stopped.
#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use std::process::Command;

use grantwatch_synth::{Layout, OrgSpec, generate};

fn analyze(args: &[&std::ffi::OsStr]) -> Option<i32> {
    Command::new(env!("CARGO_BIN_EXE_grantwatch"))
        .arg("analyze")
        .arg("--quiet")
        .args(args)
        .output()
        .unwrap()
        .status
        .code()
}

#[test]
fn exit_status_says_whether_input_was_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let org = dir.path().join("org");
    generate(&OrgSpec::new(3, 1, 6, 10, 500, Layout::S3), &org).unwrap();
    let (iam, trail, out) = (org.join("iam"), org.join("cloudtrail"), dir.path().join("out"));
    let base = [iam.as_os_str(), trail.as_os_str(), out.as_os_str()];
    let run = |extra: &std::path::Path| {
        let mut args: Vec<&std::ffi::OsStr> = vec!["--out".as_ref(), base[2], "--iam".as_ref(), base[0]];
        args.extend(["--cloudtrail".as_ref(), base[1]]);
        if extra.exists() {
            args.push(extra.as_os_str());
        }
        analyze(&args)
    };
    let bad = dir.path().join("bad.json");
    assert_eq!(run(&bad), Some(0), "clean input");
    std::fs::write(&bad, b"{\"Records\": [ {\"eventID\": 1").unwrap();
    assert_eq!(run(&bad), Some(3), "a quarantined file");
    assert!(std::fs::read_to_string(out.join("quarantine.jsonl")).unwrap().contains("bad.json"));
    let missing = dir.path().join("no-such-dir");
    let code = analyze(&["--iam".as_ref(), missing.as_os_str(), "--out".as_ref(), out.as_os_str()]);
    assert_eq!(code, Some(1), "an error that stops the run");
}
