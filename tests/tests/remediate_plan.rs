//! `grantwatch remediate plan` end to end on a generated organization: the plan keeps every action
//! used in the lookback (analyze on `after/` says so, identity by identity), removes what the ground
//! truth says is unused, proves itself by replaying every successful call, refuses a plan that would
//! deny one, and its files match their schemas.
#![allow(clippy::unwrap_used, clippy::print_stdout)] // test code: a panic is a failed test

mod common;
use common::{findings, validate};

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use grantwatch::analyze::{AnalyzeOptions, run};
use grantwatch::remediate::{PlanArgs, ScopeArg, plan};
use grantwatch_core::catalog::Catalog;
use grantwatch_core::cloudtrail::{ActionMap, Normalizer};
use grantwatch_synth::{Layout, OrgSpec, generate};
use grantwatch_types::{Change, PlanReason, RemediationPlan, Status};

fn args(org: &Path, out: &Path) -> PlanArgs {
    PlanArgs {
        iam: vec![org.join("iam")],
        cloudtrail: vec![org.join("cloudtrail").display().to_string()],
        state: None,
        scope: ScopeArg::All,
        identities: Vec::new(),
        exclude: Vec::new(),
        lookback_days: 90,
        as_of: None,
        over_provisioned_threshold: 0.10,
        organization: None,
        out: out.to_path_buf(),
        threads: Some(2),
        quiet: true,
        fault_drop_action: None,
    }
}

/// Successful calls that need a permission, by identities of the snapshot, in the lookback: counted
/// here straight from the files, apart from the code under test.
fn successful_calls_in_window(org: &Path, from_ms: i64, to_ms: i64, identities: &BTreeSet<String>) -> u64 {
    let catalog = Arc::new(Catalog::aws().unwrap());
    let normalizer = Normalizer::new(ActionMap::new(catalog).unwrap());
    let inputs = vec![grantwatch_files::Input::Local(org.join("cloudtrail"))];
    let (_, counts) = grantwatch_runtime::scan::for_each_event(
        &inputs,
        &Default::default(),
        &normalizer,
        Default::default(),
        2,
        || 0u64,
        |n, ev| {
            let t = ev.time.millis();
            if ev.status == Status::Success
                && !ev.actions.is_empty()
                && (from_ms..=to_ms).contains(&t)
                && identities.contains(&ev.actor.uid)
            {
                *n += 1;
            }
        },
    )
    .unwrap();
    counts.into_iter().sum()
}

#[test]
fn a_plan_keeps_every_used_action_removes_the_unused_and_proves_it() {
    let dir = tempfile::tempdir().unwrap();
    let org = dir.path().join("org");
    let truth = generate(&OrgSpec::new(7, 2, 30, 120, 30_000, Layout::S3), &org).unwrap();
    let out = dir.path().join("plan");
    let outcome = plan(&args(&org, &out)).unwrap();
    assert!(outcome.written);
    let p: RemediationPlan = serde_json::from_str(&std::fs::read_to_string(out.join("plan.json")).unwrap()).unwrap();
    assert_eq!(p, outcome.plan);
    validate("remediation_plan.v1.json", &serde_json::to_value(&p).unwrap());

    // The proof: every successful call of the lookback replayed, none denied.
    let r = &p.replay;
    assert_eq!(r.events_denied, 0, "{:?}", r.denied);
    let (snapshot, _) = grantwatch::analyze::load_snapshot(&[org.join("iam")]).unwrap();
    let snapshot_identities: BTreeSet<String> =
        snapshot.users.iter().map(|u| u.arn.clone()).chain(snapshot.roles.iter().map(|r| r.arn.clone())).collect();
    let expected = successful_calls_in_window(&org, p.window_start.millis(), p.as_of.millis(), &snapshot_identities);
    assert!(expected > 1_000, "{expected}");
    assert_eq!(r.events_replayed - r.events_other_identities, expected);

    // The plan touches identities and removes what the ground truth says went unused.
    assert!(p.identities.len() >= 10, "{}", p.identities.len());
    let truth_by: BTreeMap<&str, _> = truth.identities.iter().map(|t| (t.arn.as_str(), t)).collect();
    for i in &p.identities {
        let t = truth_by[i.arn.as_str()];
        let removed: BTreeSet<&str> = i.removed.iter().map(|r| r.action.as_str()).collect();
        for used in &t.used_actions {
            assert!(!removed.contains(used.as_str()), "{}: removes {used}, used in the lookback", i.arn);
        }
        if t.inactive {
            assert_eq!(i.reason, PlanReason::Inactive, "{}", i.arn);
            assert_eq!(i.granted_after, 0, "{}", i.arn);
        }
        // Additions first, removals after.
        let first_removal = i.changes.iter().position(Change::narrows).unwrap_or(i.changes.len());
        assert!(i.changes[first_removal..].iter().all(Change::narrows), "{}", i.arn);
    }

    // `analyze` on after/ agrees: each planned identity is granted what the plan says, and still
    // everything it used; nothing used becomes "used but not granted".
    let before = findings(&out.join("analysis"));
    let mut o = AnalyzeOptions::new(dir.path().join("after-analysis"));
    o.iam = vec![out.join("after")];
    o.cloudtrail = vec![org.join("cloudtrail").into()];
    o.progress = false;
    run(&o).unwrap();
    let after = findings(&dir.path().join("after-analysis"));
    for i in &p.identities {
        let (b, a) = (&before[&i.arn], &after[&i.arn]);
        assert_eq!(a.action_counts.unwrap().granted as u64, i.granted_after, "{}", i.arn);
        assert_eq!(a.pci.score, i.pci_after, "{}", i.arn);
        let granted: BTreeSet<&String> = a.granted_actions.iter().collect();
        for used in &b.used_actions {
            assert!(granted.contains(used), "{}: {used} was used and is no longer granted", i.arn);
        }
        assert_eq!(a.used_not_granted, b.used_not_granted, "{}", i.arn);
    }
    // The accounts' PCI falls.
    for acc in &p.accounts {
        assert!(acc.pci_after < acc.pci_before, "{acc:?}");
    }
}

#[test]
fn a_plan_that_would_deny_a_past_call_is_refused_and_the_call_named() {
    let dir = tempfile::tempdir().unwrap();
    let org = dir.path().join("org");
    generate(&OrgSpec::new(11, 1, 16, 100, 8_000, Layout::S3), &org).unwrap();
    let out = dir.path().join("plan");
    // A first, good plan, then a faulty one into the same directory: the good plan.json must not
    // survive beside the refusal.
    assert!(plan(&args(&org, &out)).unwrap().written);
    let good: RemediationPlan = serde_json::from_str(&std::fs::read_to_string(out.join("plan.json")).unwrap()).unwrap();
    // An action some rewritten identity used: the created policy is the only place it stays.
    let action = good
        .identities
        .iter()
        .flat_map(|i| &i.changes)
        .find_map(|c| match c {
            Change::CreatePolicy { document, .. } => document["Statement"][0]["Action"][0].as_str().map(str::to_string),
            _ => None,
        })
        .expect("a created policy");
    // A later event of another account in the input does not move the lookback: it ends at the
    // snapshot's identities' latest activity, so the same plan comes out.
    let foreign = dir.path().join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    let later = grantwatch_types::EventTime(good.as_of.millis() + 200 * 86_400_000).to_rfc3339();
    let stranger = serde_json::json!({"type": "IAMUser", "arn": "arn:aws:iam::999999999999:user/stranger",
        "accountId": "999999999999", "userName": "stranger", "principalId": "AIDASTRANGER"});
    let record = grantwatch_e2e::cloudtrail_record("foreign-1", &later, &stranger, "s3.amazonaws.com", "ListBuckets");
    std::fs::write(foreign.join("foreign.jsonl"), record + "\n").unwrap();
    let mut with_foreign = args(&org, &dir.path().join("plan-foreign"));
    with_foreign.cloudtrail.push(foreign.display().to_string());
    let mixed = plan(&with_foreign).unwrap();
    assert!(mixed.written);
    assert_eq!(mixed.plan.as_of, good.as_of);
    assert_eq!(mixed.plan.identities, good.identities);

    let mut a = args(&org, &out);
    a.fault_drop_action = Some(action.clone());
    let outcome = plan(&a).unwrap();
    assert!(!outcome.written);
    assert!(!out.join("plan.json").exists());
    let refused: RemediationPlan =
        serde_json::from_str(&std::fs::read_to_string(out.join("refused.json")).unwrap()).unwrap();
    assert!(refused.replay.events_denied > 0);
    assert!(
        refused.replay.denied.iter().any(|d| d.action.eq_ignore_ascii_case(&action)),
        "{:?}",
        refused.replay.denied
    );
    let listed: u64 = refused.replay.denied.iter().map(|d| d.events).sum();
    assert!(listed <= refused.replay.events_denied);
    // The command's exit status says so (4), and its summary names the call.
    let run = std::process::Command::new(grantwatch_e2e::stack::service_bin("grantwatch"))
        .args(["remediate", "plan", "--quiet", "--iam"])
        .arg(org.join("iam"))
        .arg("--cloudtrail")
        .arg(org.join("cloudtrail"))
        .arg("--out")
        .arg(dir.path().join("cli"))
        .args(["--fault-drop-action", &action])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(4), "{}", String::from_utf8_lossy(&run.stderr));
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.contains("REFUSED") && stdout.contains(&action), "{stdout}");
}
