//! The whole Remediate loop on a generated organization, against moto's IAM: the organization is created
//! in moto through the API, exported with GetAccountAuthorizationDetails (`grantwatch iam export`),
//! planned from the export and the organization's CloudTrail, applied — killed mid-way, then run again
//! to the end — and exported again: IAM now equals the plan's `after/`. Rolled back and exported once
//! more: IAM equals the original export.
//!
//! moto runs as an instance of this test's own (a free port and its own data dir), started with AWS's managed
//! policies loaded and the generated account as its default account (scripts/moto, scripts/pmapper
//! load): the generated account's ARNs are moto's.
#![allow(clippy::unwrap_used, clippy::print_stdout)] // test code: a panic is a failed test

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use grantwatch::remediate::{PlanArgs, ScopeArg, plan};
use grantwatch_core::catalog::Catalog;
use grantwatch_core::iam::{IamSnapshot, PolicyDocument, parse_iam_json};
use grantwatch_core::policy::evaluate;
use grantwatch_e2e::stack::{repo, service_bin};
use grantwatch_synth::{Layout, OrgSpec, generate};
use grantwatch_types::Change;

/// This test's moto server, on a free port of its own; stopped when dropped.
struct Moto {
    data: tempfile::TempDir,
    account: String,
    port: u16,
}

impl Moto {
    fn start(account: &str) -> Moto {
        let data = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let m = Moto { data, account: account.to_string(), port };
        let out = m.script("start");
        assert!(out.status.success(), "moto: {}", String::from_utf8_lossy(&out.stderr));
        m
    }

    fn script(&self, cmd: &str) -> Output {
        Command::new(repo().join("scripts/moto"))
            .arg(cmd)
            .env("MOTO_PORT", self.port.to_string())
            .env("GRANTWATCH_MOTO_DATA", self.data.path())
            .env("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
            .env("MOTO_ACCOUNT_ID", &self.account)
            .output()
            .unwrap()
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.script("stop");
    }
}

/// Runs the real binary with moto's fixed credentials (the SDK's default chain only).
fn grantwatch(args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = Command::new(service_bin("grantwatch"))
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("GRANTWATCH_FAULT_APPLY_AFTER_CALLS")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    println!(
        "$ grantwatch {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn export(moto: &Moto, file: &Path) -> IamSnapshot {
    let out = grantwatch(&["iam", "export", "--out", file.to_str().unwrap(), "--endpoint-url", &moto.endpoint()], &[]);
    assert!(out.status.success());
    read(file)
}

fn read(file: &Path) -> IamSnapshot {
    let mut s = IamSnapshot::default();
    s.merge(parse_iam_json(&std::fs::read(file).unwrap(), &file.display().to_string()).unwrap());
    s
}

/// What an identity holds, comparable across exports: attachments, inline documents, groups, and the
/// documents of the customer-managed policies it attaches.
type Holdings = (Vec<String>, Vec<(String, PolicyDocument)>, Vec<String>, Vec<(String, Option<PolicyDocument>)>);

fn holdings(s: &IamSnapshot) -> BTreeMap<String, Holdings> {
    let customer = |arns: &[String]| -> Vec<(String, Option<PolicyDocument>)> {
        let mut v: Vec<_> = arns
            .iter()
            .filter(|a| !a.starts_with("arn:aws:iam::aws:"))
            .map(|a| (a.clone(), s.policies.get(a).and_then(|p| p.document.clone())))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let sorted = |v: &[String]| {
        let mut v = v.to_vec();
        v.sort();
        v
    };
    let inline = |v: &[grantwatch_core::iam::InlinePolicy]| {
        let mut v: Vec<_> = v.iter().map(|p| (p.name.clone(), p.document.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let mut out = BTreeMap::new();
    for u in &s.users {
        out.insert(u.arn.clone(), (sorted(&u.attached), inline(&u.inline), sorted(&u.groups), customer(&u.attached)));
    }
    for r in &s.roles {
        out.insert(r.arn.clone(), (sorted(&r.attached), inline(&r.inline), Vec::new(), customer(&r.attached)));
    }
    for g in &s.groups {
        out.insert(g.arn.clone(), (sorted(&g.attached), inline(&g.inline), Vec::new(), customer(&g.attached)));
    }
    out
}

/// Asserts two snapshots hold the same for every identity, and grant the same.
fn assert_same(label: &str, got: &IamSnapshot, want: &IamSnapshot) {
    let (g, w) = (holdings(got), holdings(want));
    assert_eq!(g.keys().collect::<Vec<_>>(), w.keys().collect::<Vec<_>>(), "{label}: identities");
    for (arn, want) in &w {
        assert!(&g[arn] == want, "{label}: {arn} holds\n{:?}\nnot\n{want:?}", g[arn]);
    }
    let catalog = Catalog::aws().unwrap();
    let (eg, ew) = (evaluate(got, &catalog), evaluate(want, &catalog));
    for (a, b) in eg.iter().zip(&ew) {
        assert_eq!((&a.arn, &a.granted, &a.conditional), (&b.arn, &b.granted, &b.conditional), "{label}: grants");
    }
}

#[test]
fn plan_apply_killed_and_resumed_then_rollback_round_trip_in_moto() {
    let dir = tempfile::tempdir().unwrap();
    let org = dir.path().join("org");
    let truth = generate(&OrgSpec::new(5, 1, 24, 100, 12_000, Layout::S3), &org).unwrap();
    let account = truth.accounts[0].clone();
    let moto = Moto::start(&account);

    // The generated organization, created in moto through the IAM API.
    let notes = dir.path().join("load-notes.json");
    let load = Command::new(repo().join("scripts/pmapper"))
        .arg("load")
        .arg(org.join("iam").join(format!("{account}.json")))
        .arg(moto.endpoint())
        .arg(&notes)
        .output()
        .unwrap();
    assert!(load.status.success(), "{}", String::from_utf8_lossy(&load.stderr));
    let skipped: serde_json::Value = serde_json::from_slice(&std::fs::read(&notes).unwrap()).unwrap();
    assert_eq!(
        skipped["skipped"].as_array().map(Vec::len),
        Some(0),
        "moto refused part of the organization: {skipped}"
    );

    let original_file = dir.path().join("original.json");
    let original = export(&moto, &original_file);
    assert!(original.users.len() + original.roles.len() >= 20);

    // Plan from the export, as a user would. IAM Identity Center roles are left out: moto's account
    // has no permission sets behind them (tests/tests/remediate_apply.rs covers permission sets).
    let identities: Vec<String> = original
        .users
        .iter()
        .map(|u| u.arn.clone())
        .chain(original.roles.iter().filter(|r| !r.name.starts_with("AWSReservedSSO_")).map(|r| r.arn.clone()))
        .collect();
    let out = dir.path().join("plan");
    let outcome = plan(&PlanArgs {
        iam: vec![original_file.clone()],
        cloudtrail: vec![org.join("cloudtrail").display().to_string()],
        state: None,
        scope: ScopeArg::All,
        identities,
        exclude: Vec::new(),
        lookback_days: 90,
        as_of: None,
        over_provisioned_threshold: 0.10,
        organization: None,
        out: out.clone(),
        threads: Some(2),
        quiet: true,
        fault_drop_action: None,
    })
    .unwrap();
    assert!(outcome.written);
    assert_eq!(outcome.plan.replay.events_denied, 0);
    let changes: usize = outcome.plan.identities.iter().map(|i| i.changes.len()).sum();
    assert!(changes >= 10, "{changes}");
    for op in ["create_policy", "detach_policy", "remove_from_group"] {
        let n = outcome
            .plan
            .identities
            .iter()
            .flat_map(|i| &i.changes)
            .filter(|c| serde_json::to_value(c).unwrap()["op"] == op)
            .count();
        assert!(n > 0, "the plan has no {op}: the round trip would not cover it");
    }
    let after_file: PathBuf = out.join("after").join(format!("{account}.json"));
    let planned_after = read(&after_file);

    // Apply, killed after a few calls (as kill -9 would end it), then run again to the end.
    let plan_file = out.join("plan.json");
    let journal = dir.path().join("journal.jsonl");
    let apply = |env: &[(&str, &str)]| {
        grantwatch(
            &[
                "remediate",
                "apply",
                "--plan",
                plan_file.to_str().unwrap(),
                "--journal",
                journal.to_str().unwrap(),
                "--endpoint-url",
                &moto.endpoint(),
                "--yes",
            ],
            env,
        )
    };
    let killed = apply(&[("GRANTWATCH_FAULT_APPLY_AFTER_CALLS", "7")]);
    assert!(!killed.status.success(), "the fault hook did not stop apply");
    let half = export(&moto, &dir.path().join("half.json"));
    assert!(holdings(&half) != holdings(&original), "the killed run changed nothing");
    assert!(holdings(&half) != holdings(&planned_after), "the killed run did everything");
    let resumed = apply(&[]);
    assert!(resumed.status.success());
    let applied = export(&moto, &dir.path().join("applied.json"));
    assert_same("after apply", &applied, &planned_after);

    // Every used action is still allowed by what IAM now holds: the journaled calls did what the plan
    // proved.
    let created: Vec<&str> = outcome
        .plan
        .identities
        .iter()
        .flat_map(|i| &i.changes)
        .filter_map(|c| match c {
            Change::CreatePolicy { policy_arn, .. } => Some(policy_arn.as_str()),
            _ => None,
        })
        .collect();
    for arn in &created {
        assert!(applied.policies.contains_key(*arn), "{arn} not created");
    }

    // Roll back: IAM equals the original export again, and the created policies are gone.
    let rollback = grantwatch(
        &["remediate", "rollback", "--journal", journal.to_str().unwrap(), "--endpoint-url", &moto.endpoint(), "--yes"],
        &[],
    );
    assert!(rollback.status.success());
    let restored = export(&moto, &dir.path().join("restored.json"));
    assert_same("after rollback", &restored, &original);
    for arn in &created {
        assert!(!restored.policies.contains_key(*arn), "{arn} survived the rollback");
    }
}
