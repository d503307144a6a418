//! `grantwatch policy generate` end to end, over a generated organization.
//!
//! For several users and roles and a group: the policy, replayed against every successful call of
//! the window with the request evaluator, denies none; it grants exactly the actions the identity
//! called successfully in the window (computed here from the raw records and the generator's own call
//! table, not with grantwatch's normalizer); `*` only for actions without a resource type; each
//! logged resource of a call covered by its action's statement; and the same bytes whatever the
//! number of reader threads. One run goes through the binary (`--out`, stderr, exit status).
#![allow(clippy::unwrap_used, clippy::print_stdout)] // test code: a panic is a failed test

mod common;
use common::gz_files;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;

use grantwatch::policy_generate::{GenerateArgs, Outcome, ResourcesArg, run};
use grantwatch_core::catalog::Catalog;
use grantwatch_core::glob::Glob;
use grantwatch_core::iam::parse_policy_document;
use grantwatch_synth::actions::{CALLS, UNMAPPED};
use grantwatch_synth::{GroundTruth, Layout, OrgSpec, generate};
use grantwatch_types::EventTime;

/// One record as this test reads it.
struct Record {
    identity: String,
    time: EventTime,
    event_name: String,
    action: Option<String>,
    ok: bool,
    resources: Vec<String>,
}

/// Every record of the organization's CloudTrail, read with serde_json alone.
fn records(org: &Path) -> Vec<Record> {
    let mut files = Vec::new();
    gz_files(&org.join("cloudtrail"), &mut files);
    let mut out = Vec::new();
    for f in files {
        let mut text = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(&f).unwrap()).read_to_string(&mut text).unwrap();
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        for r in doc["Records"].as_array().unwrap() {
            let ui = &r["userIdentity"];
            let identity = match ui["type"].as_str() {
                Some("AssumedRole") => ui["sessionContext"]["sessionIssuer"]["arn"].as_str(),
                _ => ui["arn"].as_str(),
            };
            let Some(identity) = identity else { continue };
            let (source, name) = (r["eventSource"].as_str().unwrap(), r["eventName"].as_str().unwrap());
            out.push(Record {
                identity: identity.to_string(),
                time: EventTime::parse_rfc3339(r["eventTime"].as_str().unwrap()).unwrap(),
                event_name: name.to_string(),
                action: CALLS.iter().find(|c| c.source == source && c.name == name).map(|c| c.action()),
                ok: r.get("errorCode").is_none(),
                resources: r["resources"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|x| x["ARN"].as_str().map(str::to_string)).collect())
                    .unwrap_or_default(),
            });
        }
    }
    out
}

fn args(org: &Path, identity: &str, as_of: Option<EventTime>) -> GenerateArgs {
    GenerateArgs {
        identity: identity.to_string(),
        cloudtrail: vec![org.join("cloudtrail")],
        lookback_days: 90,
        as_of,
        resources: ResourcesArg::Scoped,
        iam: vec![org.join("iam")],
        out: None,
        max_arns: 10,
        max_scopes: 64,
        threads: None,
        replay: true,
        replay_policy: Vec::new(),
        s3_endpoint_url: None,
        s3_region: None,
    }
}

/// (action, resources) of every statement.
fn grants(o: &Outcome) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for s in &o.generated.policy.statements {
        for a in &s.actions {
            assert!(out.insert(a.clone(), s.resources.clone()).is_none(), "{a} in two statements");
        }
    }
    out
}

/// Checks one identity's (or group's) policy against the raw records of `members`.
fn check(org: &Path, truth: &GroundTruth, recs: &[Record], identity: &str, members: &[String]) {
    let catalog = Catalog::aws().unwrap();
    let o = run(&args(org, identity, Some(truth.as_of))).unwrap();
    let (start, end) = o.generated.window.unwrap();
    assert_eq!(end, truth.as_of);
    assert_eq!(start, truth.as_of.minus_days(90));
    let mut ids = o.identities.clone();
    ids.sort();
    assert_eq!(ids, members, "{identity}");

    // A valid policy document, read back by the parser the evaluators use.
    let value: serde_json::Value = serde_json::from_str(&o.json).unwrap();
    assert_eq!(value["Version"], "2012-10-17");
    let doc = parse_policy_document(&value, "policy", "", false).unwrap();
    assert_eq!(doc, o.generated.policy.document());
    let sids: BTreeSet<&str> = doc.statements.iter().filter_map(|s| s.sid.as_deref()).collect();
    assert_eq!(sids.len(), doc.statements.len(), "Sids are unique");

    // Replay: every successful call of the window is allowed.
    let (label, replay) = &o.replays[0];
    assert_eq!(label, "generated");
    assert!(replay.events > 0, "{identity}: nothing replayed");
    assert_eq!(replay.denied, 0, "{identity}: {:?}", replay.examples);

    // Least privilege: exactly the actions called successfully in the window.
    let window: Vec<&Record> =
        recs.iter().filter(|r| members.contains(&r.identity) && r.ok && r.time >= start && r.time <= end).collect();
    let used: BTreeSet<String> = window.iter().filter_map(|r| r.action.clone()).collect();
    let granted = grants(&o);
    assert_eq!(granted.keys().cloned().collect::<BTreeSet<_>>(), used, "{identity}");
    assert_eq!(replay.events as usize, window.iter().filter(|r| r.action.is_some()).count(), "{identity}");

    // Scoped: `*` only for actions without a resource type, never beside an ARN.
    for (action, resources) in &granted {
        let id = catalog.lookup(action).unwrap();
        let has_type = catalog.resource_arns(id).iter().any(|t| t != "*");
        if resources.iter().any(|r| r == "*") {
            assert!(!has_type, "{identity}: {action} has a resource type but is granted on *");
            assert_eq!(resources.len(), 1);
        } else {
            assert!(has_type, "{identity}: {action} has no resource type but is granted on {resources:?}");
        }
    }
    // Each call's logged resources: one of them is covered by its action's statement.
    for r in window.iter().filter(|r| !r.resources.is_empty()) {
        let Some(action) = &r.action else { continue };
        let patterns = &granted[action];
        assert!(
            r.resources.iter().any(|arn| patterns.iter().any(|p| Glob::RESOURCE.matches(p, arn))),
            "{identity}: {action} on {:?} not covered by {patterns:?}",
            r.resources
        );
    }
}

#[test]
fn generated_policies_allow_every_call_of_the_window_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let org = dir.path();
    let mut spec = OrgSpec::new(11, 2, 14, 120, 12_000, Layout::S3);
    spec.file_minutes = 60;
    let truth = generate(&spec, org).unwrap();
    let recs = records(org);

    // The busiest user and role of each account, a quiet one, and a group of users.
    let mut active: Vec<_> =
        truth.identities.iter().filter(|i| i.kind != "group" && i.events_in_lookback > 0).collect();
    active.sort_by_key(|i| (std::cmp::Reverse(i.events_in_lookback), i.arn.clone()));
    let mut chosen: Vec<String> = Vec::new();
    for kind in ["user", "role"] {
        for account in &truth.accounts {
            if let Some(i) = active.iter().find(|i| i.kind == kind && &i.account == account) {
                chosen.push(i.arn.clone());
            }
        }
    }
    if let Some(quiet) = active.last() {
        chosen.push(quiet.arn.clone());
    }
    chosen.sort();
    chosen.dedup();
    assert!(chosen.len() >= 4, "{chosen:?}");
    for arn in &chosen {
        check(org, &truth, &recs, arn, std::slice::from_ref(arn));
    }

    // A group: its members' activity (members from the snapshot, as --iam gives them).
    let (snapshot, _) = grantwatch::analyze::load_snapshot(&[org.join("iam")]).unwrap();
    let group = snapshot
        .groups
        .iter()
        .filter_map(|g| {
            let members: Vec<String> = snapshot
                .users
                .iter()
                .filter(|u| u.account == g.account && u.groups.contains(&g.name))
                .map(|u| u.arn.clone())
                .collect();
            let active = members.iter().filter(|m| recs.iter().any(|r| &r.identity == *m && r.ok)).count();
            (active >= 2).then_some((g.arn.clone(), members))
        })
        .next()
        .expect("a group with two active members");
    let mut members = group.1.clone();
    members.sort();
    check(org, &truth, &recs, &group.0, &members);

    // Any split between reader threads, the same policy.
    let mut a = args(org, &chosen[0], None);
    a.replay = false;
    a.threads = Some(1);
    let one = run(&a).unwrap().json;
    a.threads = Some(3);
    assert_eq!(run(&a).unwrap().json, one);

    // Generalizing at every second ARN: fewer resources, the same actions, still nothing denied.
    let mut tight = args(org, &chosen[0], Some(truth.as_of));
    tight.max_arns = 1;
    let tight = run(&tight).unwrap();
    let wide = run(&args(org, &chosen[0], Some(truth.as_of))).unwrap();
    let count = |o: &Outcome| grants(o).values().map(Vec::len).sum::<usize>();
    assert!(count(&tight) < count(&wide), "{} !< {}", count(&tight), count(&wide));
    assert_eq!(grants(&tight).keys().collect::<Vec<_>>(), grants(&wide).keys().collect::<Vec<_>>());
    assert_eq!(tight.replays[0].1.denied, 0, "{:?}", tight.replays[0].1.examples);
    assert!(grants(&tight).values().flatten().all(|r| r == "*" || r.starts_with("arn:aws:")));

    // --resources any: the same actions, all on `*`.
    a.resources = ResourcesArg::Any;
    let any = run(&a).unwrap();
    assert_eq!(any.generated.policy.statements.len(), 1);
    assert_eq!(any.generated.policy.statements[0].resources, ["*"]);

    // A group without --iam, a role session, an identity with no events: errors that say why.
    let mut g = args(org, &group.0, None);
    g.iam.clear();
    assert!(run(&g).unwrap_err().to_string().contains("--iam"));
    let session = args(org, "arn:aws:sts::111122223333:assumed-role/r/s", None);
    assert!(run(&session).unwrap_err().to_string().contains("role session"));
    let nobody = args(org, "arn:aws:iam::111122223333:user/nobody", None);
    assert!(run(&nobody).unwrap_err().to_string().contains("no event of"));

    binary_run(org, &truth, &recs, &chosen[0], &one);
}

/// The CLI: `--out`, the summary and the unmapped calls on stderr, exit status 0.
fn binary_run(org: &Path, truth: &GroundTruth, recs: &[Record], identity: &str, expected: &str) {
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("policy.json");
    let output = Command::new(grantwatch_bin())
        .args(["policy", "generate", "--identity", identity, "--cloudtrail"])
        .arg(org.join("cloudtrail"))
        .arg("--out")
        .arg(&out)
        .arg("--replay")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(output.stdout.is_empty());
    assert_eq!(std::fs::read_to_string(&out).unwrap(), expected);
    assert!(stderr.contains(&format!("policy generate: {identity}: ")), "{stderr}");
    assert!(stderr.contains("replay generated: ") && stderr.contains(" 0 denied ("), "{stderr}");

    // The generator injects calls that map to no IAM action: named on stderr, never dropped silently.
    let start = truth.as_of.minus_days(90);
    let unmapped: Vec<&str> = UNMAPPED.iter().map(|(_, name)| *name).collect();
    let (who, name) = recs
        .iter()
        .filter(|r| r.ok && r.time >= start && r.time <= truth.as_of)
        .find_map(|r| unmapped.iter().find(|n| r.event_name == **n).map(|n| (r.identity.clone(), *n)))
        .expect("an unmapped call in the window");
    let output = Command::new(grantwatch_bin())
        .args(["policy", "generate", "--identity", &who, "--as-of", &truth.as_of.to_rfc3339(), "--cloudtrail"])
        .arg(org.join("cloudtrail"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("map to no IAM action grantwatch knows") && stderr.contains(name), "{stderr}");
    let policy: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(policy["Version"], "2012-10-17");
}

/// The `grantwatch` binary: `GRANTWATCH_BIN_DIR`'s, else this profile's, built once.
fn grantwatch_bin() -> PathBuf {
    static BUILD: Once = Once::new();
    if let Some(dir) = std::env::var_os("GRANTWATCH_BIN_DIR") {
        return PathBuf::from(dir).join("grantwatch");
    }
    BUILD.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
            .args(["build", "-q", "-p", "grantwatch"])
            .status()
            .unwrap();
        assert!(status.success(), "building grantwatch failed");
    });
    // target/<profile>/deps/<test binary> → target/<profile>/grantwatch
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("grantwatch")
}
