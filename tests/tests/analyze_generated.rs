//! `grantwatch analyze` end to end, against the ground truth of generated organizations.
#![allow(clippy::unwrap_used, clippy::print_stdout)] // test code: a panic is a failed test

mod common;
use common::{findings, gz_files, validate};

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use grantwatch::analyze::{AnalyzeOptions, AnalyzeOutcome, run};
use grantwatch_synth::{GroundTruth, Layout, OrgSpec, generate};
use grantwatch_types::{IdentityFinding, StatusFlag};

fn spec(layout: Layout) -> OrgSpec {
    OrgSpec::new(42, 2, 18, 120, 25_000, layout)
}

fn analyze(org: &Path, out: &Path, state: Option<&Path>, cloudtrail: Vec<PathBuf>) -> AnalyzeOutcome {
    let mut o = AnalyzeOptions::new(out.to_path_buf());
    o.iam = vec![org.join("iam")];
    o.cloudtrail = cloudtrail.into_iter().map(Into::into).collect();
    o.state = state.map(Path::to_path_buf);
    o.progress = false;
    o.flush_budget = 5_000; // many flushes: exercises the batch boundaries
    run(&o).unwrap()
}

/// Asserts two runs' findings are equal, naming the first identity and field that differ (the full
/// findings are too large to print).
fn assert_same_findings(a: &BTreeMap<String, IdentityFinding>, b: &BTreeMap<String, IdentityFinding>, what: &str) {
    let ka: Vec<&String> = a.keys().collect();
    let kb: Vec<&String> = b.keys().collect();
    assert_eq!(ka, kb, "{what}: different identities");
    for (arn, fa) in a {
        let fb = &b[arn];
        if fa == fb {
            continue;
        }
        let (va, vb) = (serde_json::to_value(fa).unwrap(), serde_json::to_value(fb).unwrap());
        for (field, x) in va.as_object().unwrap() {
            let y = &vb[field];
            assert_eq!(x, y, "{what}: {arn} differs in {field}");
        }
    }
}

/// (account, group name) → ARNs of its member users, from the IAM snapshots.
fn group_members(org: &Path) -> BTreeMap<(String, String), Vec<String>> {
    let mut out: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for e in std::fs::read_dir(org.join("iam")).unwrap() {
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(e.unwrap().path()).unwrap()).unwrap();
        for u in doc["UserDetailList"].as_array().into_iter().flatten() {
            let arn = u["Arn"].as_str().unwrap().to_string();
            let account = arn.split(':').nth(4).unwrap().to_string();
            for g in u["GroupList"].as_array().into_iter().flatten() {
                out.entry((account.clone(), g.as_str().unwrap().to_string())).or_default().push(arn.clone());
            }
        }
    }
    out
}

fn check_against_truth(
    org: &Path,
    truth: &GroundTruth,
    outcome: &AnalyzeOutcome,
    found: &BTreeMap<String, IdentityFinding>,
) {
    assert_eq!(outcome.ingest.duplicates, truth.duplicates_injected, "duplicates");
    assert_eq!(outcome.ingest.unmapped_events, truth.unmapped_injected, "unmapped events");
    assert_eq!(outcome.ingest.records_quarantined + outcome.ingest.files_quarantined, 0);
    assert_eq!(outcome.ingest.events_counted + outcome.ingest.duplicates, outcome.ingest.records_read);
    assert_eq!(outcome.accounts.as_of, truth.as_of, "as-of defaults to the latest event time");
    let mut exact_checked = 0;
    let members = group_members(org);
    for t in &truth.identities {
        let f = found.get(&t.arn).unwrap_or_else(|| panic!("{} missing from identities.jsonl", t.arn));
        let used: BTreeSet<&str> = f.used_actions.iter().map(String::as_str).collect();
        let want: BTreeSet<&str> = if t.kind == "group" {
            // A group's usage is its members' usage, within what the group grants.
            let granted: BTreeSet<&str> = f.granted_actions.iter().map(String::as_str).collect();
            let key = (t.account.clone(), t.arn.rsplit('/').next().unwrap_or_default().to_string());
            let member_arns = members.get(&key).cloned().unwrap_or_default();
            truth
                .identities
                .iter()
                .filter(|m| member_arns.contains(&m.arn))
                .flat_map(|m| m.used_actions.iter().map(String::as_str))
                .filter(|a| granted.contains(a))
                .collect()
        } else {
            t.used_actions.iter().map(String::as_str).collect()
        };
        assert_eq!(used, want, "used actions of {}", t.arn);
        if let Some(granted) = &t.granted_actions {
            let got: BTreeSet<&str> = f.granted_actions.iter().map(String::as_str).collect();
            let want: BTreeSet<&str> = granted.iter().map(String::as_str).collect();
            assert_eq!(got, want, "granted actions of {}", t.arn);
            let unused: BTreeSet<&str> = f.unused_actions.iter().map(String::as_str).collect();
            assert_eq!(unused, want.difference(&used).copied().collect(), "unused actions of {}", t.arn);
            exact_checked += 1;
        }
        assert!(f.used_not_granted.is_empty(), "{}: used but not granted {:?}", t.arn, f.used_not_granted);
        assert_eq!(f.status.contains(&StatusFlag::Inactive), t.inactive, "inactive flag of {}", t.arn);
        assert_eq!(f.status.contains(&StatusFlag::SuperIdentity), t.super_identity, "super flag of {}", t.arn);
        if t.kind != "group" {
            assert_eq!(f.last_activity, t.last_activity, "last activity of {}", t.arn);
        }
        assert!(f.pci.score <= 100 && f.pci.version == "pci-v3");
    }
    assert!(exact_checked >= 10, "too few identities with an exact granted set: {exact_checked}");
    assert!(truth.identities.iter().any(|t| t.inactive) && truth.identities.iter().any(|t| t.super_identity));
}

#[test]
fn s3_layout_matches_ground_truth_and_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let org = dir.path().join("org");
    let truth = generate(&spec(Layout::S3), &org).unwrap();
    assert!(truth.duplicates_injected > 0 && truth.unmapped_injected > 0);
    let out = dir.path().join("out");
    let outcome = analyze(&org, &out, None, vec![org.join("cloudtrail")]);
    let found = findings(&out);
    check_against_truth(&org, &truth, &outcome, &found);

    for line in std::fs::read_to_string(out.join("identities.jsonl")).unwrap().lines() {
        validate("identity.v1.json", &serde_json::from_str(line).unwrap());
    }
    validate(
        "accounts.v1.json",
        &serde_json::from_str(&std::fs::read_to_string(out.join("accounts.json")).unwrap()).unwrap(),
    );
    validate(
        "ingest_report.v1.json",
        &serde_json::from_str(&std::fs::read_to_string(out.join("ingest_report.json")).unwrap()).unwrap(),
    );
    // The roll-up agrees with the identities.
    let accounts: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("accounts.json")).unwrap()).unwrap();
    let total: u64 = accounts["accounts"].as_array().unwrap().iter().map(|a| a["identities"].as_u64().unwrap()).sum();
    assert_eq!(total as usize, found.len());
}

#[test]
fn json_lines_layout_matches_its_ground_truth() {
    let dir = tempfile::tempdir().unwrap();
    let jl = dir.path().join("jl");
    let truth = generate(&spec(Layout::JsonLines), &jl).unwrap();
    let out = dir.path().join("out");
    let outcome = analyze(&jl, &out, None, vec![jl.join("cloudtrail")]);
    check_against_truth(&jl, &truth, &outcome, &findings(&out));
}

/// The records of an S3-layout trail, re-packed in reverse order into one JSON Lines file, give the
/// same findings: neither file boundaries nor order matter.
#[test]
fn same_records_in_another_shape_and_order_give_the_same_findings() {
    let dir = tempfile::tempdir().unwrap();
    let org = dir.path().join("org");
    generate(&spec(Layout::S3), &org).unwrap();
    let mut files = Vec::new();
    gz_files(&org.join("cloudtrail"), &mut files);
    files.sort();
    let mut lines = Vec::new();
    for f in &files {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(std::fs::File::open(f).unwrap()), &mut text)
            .unwrap();
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        for r in doc["Records"].as_array().unwrap() {
            lines.push(serde_json::to_string(r).unwrap());
        }
    }
    lines.reverse();
    let jsonl = dir.path().join("all.jsonl");
    std::fs::write(&jsonl, lines.join("\n")).unwrap();

    let a = analyze(&org, &dir.path().join("out-s3"), None, vec![org.join("cloudtrail")]);
    let b = analyze(&org, &dir.path().join("out-jl"), None, vec![jsonl]);
    assert_eq!(a.ingest.events_counted, b.ingest.events_counted);
    assert_eq!(a.ingest.duplicates, b.ingest.duplicates);
    assert_same_findings(
        &findings(&dir.path().join("out-s3")),
        &findings(&dir.path().join("out-jl")),
        "S3 vs JSON Lines",
    );
}

/// Split the files in two halves and ingest them in two runs over one state, in reverse order, and
/// then once more (everything again): the findings equal those of one run over everything.
#[test]
fn incremental_runs_in_any_order_give_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let org = dir.path().join("org");
    generate(&spec(Layout::S3), &org).unwrap();
    let once = dir.path().join("once");
    analyze(&org, &once, None, vec![org.join("cloudtrail")]);

    let regions = region_dirs(&org.join("cloudtrail"));
    assert!(regions.len() >= 2, "{regions:?}");
    let (first, second) = regions.split_at(regions.len() / 2);
    let state = dir.path().join("state");
    let inc = dir.path().join("inc");
    analyze(&org, &inc, Some(&state), second.to_vec());
    analyze(&org, &inc, Some(&state), first.to_vec());
    assert_same_findings(&findings(&inc), &findings(&once), "two incremental runs (reverse order) = one run");

    let again = analyze(&org, &inc, Some(&state), vec![org.join("cloudtrail")]);
    assert_eq!(again.ingest.files_read, 0, "every file is already in state");
    assert!(again.ingest.files_already_ingested > 0);
    assert_same_findings(&findings(&inc), &findings(&once), "re-reading changes nothing");

    // The same files under another path are read again, but every event is a duplicate.
    let copy = dir.path().join("copy");
    copy_tree(&org.join("cloudtrail"), &copy);
    let dup = analyze(&org, &inc, Some(&state), vec![copy]);
    assert_eq!(dup.ingest.events_counted, 0);
    assert!(dup.ingest.duplicates > 0);
    assert_same_findings(&findings(&inc), &findings(&once), "a second copy of the logs changes nothing");
}

/// With `--state`, a file whose size and modification time are those it had when it was read is
/// skipped without being read; once its time changes, its content decides. The test swaps a file's
/// content for garbage of the same size: read, it would be quarantined.
#[test]
fn an_unchanged_file_is_not_read_again_and_a_touched_one_is() {
    let dir = tempfile::tempdir().unwrap();
    let org = dir.path().join("org");
    generate(&spec(Layout::S3), &org).unwrap();
    let (state, out) = (dir.path().join("state"), dir.path().join("out"));
    let first = analyze(&org, &out, Some(&state), vec![org.join("cloudtrail")]);
    assert!(first.ingest.files_read > 1);

    let mut gz = Vec::new();
    common::gz_files(&org.join("cloudtrail"), &mut gz);
    gz.sort();
    let file = gz[0].clone();
    let modified = std::fs::metadata(&file).unwrap().modified().unwrap();
    let size = std::fs::metadata(&file).unwrap().len() as usize;
    std::fs::write(&file, vec![b'x'; size]).unwrap();
    let set_time = |t: std::time::SystemTime| {
        std::fs::File::options().write(true).open(&file).unwrap().set_modified(t).unwrap();
    };
    set_time(modified);
    let again = analyze(&org, &out, Some(&state), vec![org.join("cloudtrail")]);
    assert_eq!((again.ingest.files_read, again.ingest.files_quarantined), (0, 0), "nothing read");

    set_time(modified + std::time::Duration::from_secs(1));
    let touched = analyze(&org, &out, Some(&state), vec![org.join("cloudtrail")]);
    assert_eq!(touched.ingest.files_quarantined, 1, "the touched file is read (and its garbage quarantined)");
    assert_eq!(touched.ingest.files_already_ingested, again.ingest.files_already_ingested - 1);
}

fn region_dirs(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for acct in std::fs::read_dir(root.join("AWSLogs")).unwrap() {
        for region in std::fs::read_dir(acct.unwrap().path().join("CloudTrail")).unwrap() {
            out.push(region.unwrap().path());
        }
    }
    out.sort();
    out
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// An SCP at the root that denies IAM takes IAM out of every account's grants (the PCI and the
/// unused lists follow), except the management account's and service-linked roles'; a file that is
/// not an organization stops the run naming it.
#[test]
fn organizations_policies_cap_the_grants() {
    let dir = tempfile::tempdir().unwrap();
    let org = dir.path().join("org");
    generate(&OrgSpec::new(7, 2, 6, 20, 2_000, Layout::S3), &org).unwrap();
    let truth: GroundTruth = serde_json::from_slice(&std::fs::read(org.join("truth.json")).unwrap()).unwrap();
    let mut accounts: Vec<String> = truth.identities.iter().map(|t| t.account.clone()).collect();
    accounts.sort();
    accounts.dedup();
    assert!(accounts.len() >= 2);
    let management = accounts[0].clone();
    let file = dir.path().join("org.json");
    let mut full_targets = vec!["r-1".to_string()];
    full_targets.extend(accounts.iter().cloned());
    let tree = serde_json::json!({
        "management_account": management,
        "roots": [{"id": "r-1"}],
        "accounts": accounts.iter().map(|a| serde_json::json!({"id": a, "parent": "r-1"})).collect::<Vec<_>>(),
        "policies": [
            {"id": "p-full", "type": "SERVICE_CONTROL_POLICY", "targets": full_targets,
             "content": {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}},
            {"id": "p-no-iam", "type": "SERVICE_CONTROL_POLICY", "targets": ["r-1"],
             "content": {"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": "iam:*", "Resource": "*"}]}}
        ]
    });
    std::fs::write(&file, tree.to_string()).unwrap();
    let out = dir.path().join("out");
    let mut o = AnalyzeOptions::new(out.clone());
    o.iam = vec![org.join("iam")];
    o.cloudtrail = vec![org.join("cloudtrail").into()];
    o.progress = false;
    o.organization = Some(file.clone());
    run(&o).unwrap();
    let found = findings(&out);
    let (mut capped, mut exempt_with_iam) = (0, 0);
    for f in found.values() {
        let iam = f.granted_actions.iter().any(|a| a.starts_with("iam:"));
        if f.account == management || f.arn.contains("/aws-service-role/") {
            exempt_with_iam += usize::from(iam);
        } else {
            assert!(!iam, "{} keeps IAM under an SCP that denies it", f.arn);
            assert!(!f.unused_actions.iter().any(|a| a.starts_with("iam:")));
            capped += 1;
        }
    }
    assert!(capped > 0 && exempt_with_iam > 0, "{capped} capped, {exempt_with_iam} exempt with IAM");

    std::fs::write(&file, "{\"roots\": 7}").unwrap();
    let err = format!("{:#}", run(&o).unwrap_err());
    assert!(err.contains("org.json") && err.contains("not an organization file"), "{err}");
}
