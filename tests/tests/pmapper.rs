//! grantwatch's escalation graph against NCC Group's PMapper 1.1.5 on the same account.
//!
//! `scripts/pmapper graph` loads `tests/data/escalation/pmapper-account.json` (one account whose
//! users and roles cover every edge kind of both tools) into a moto server and runs PMapper's graph
//! creation against it. Every administrator PMapper finds must be one here, and every PMapper edge
//! an edge here, except the differences listed in `docs/escalation.md`, each with its reason; the
//! edges found here only are listed there too. The lists are checked both ways, so they stay true.
#![allow(clippy::unwrap_used, clippy::print_stdout)] // test code: a panic is a failed test

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use grantwatch_core::access::AccessModel;
use grantwatch_core::catalog::Catalog;
use grantwatch_core::escalation::{EdgeKind, EscalationGraph};
use grantwatch_core::findings::SUPER_IDENTITY_SHARE;
use grantwatch_core::iam::{IamSnapshot, parse_iam_json};
use grantwatch_core::policy::evaluate;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn short(arn: &str) -> String {
    arn.rsplit(':').next().unwrap_or(arn).to_string()
}

/// PMapper edges grantwatch does not draw, and why (`docs/escalation.md`).
const ONLY_PMAPPER: &[(&str, &str, &str)] = &[
    (
        "role/r-bounded-update-trust",
        "role/admin-role-root-trust",
        "the role's boundary does not allow iam:UpdateAssumeRolePolicy",
    ),
    ("user/u-ssm", "role/ec2-no-profile", "no instance profile holds the role"),
];

/// Edges grantwatch draws that PMapper does not, and why.
const ONLY_GRANTWATCH: &[(&str, &str, &str)] = &[
    ("user/u-add-to-group", "group/admins", "PMapper does not model iam:AddUserToGroup"),
    (
        "user/u-update-login-profile",
        "user/admin-alice",
        "PMapper checks UpdateLoginProfile only for users with a password",
    ),
    ("user/u-external-id", "role/admin-role-external-id", "PMapper never satisfies a trust condition (sts:ExternalId)"),
    ("user/u-deny-assume", "role/admin-role-external-id", "same"),
    ("user/u-assume-admin-role", "role/admin-role-external-id", "same"),
    ("user/u-assume-admin-role", "role/admin-role-mfa-trust", "PMapper never satisfies a trust condition (MFA)"),
    ("user/u-deny-assume", "role/admin-role-mfa-trust", "same"),
];

#[test]
fn every_pmapper_escalation_is_found() {
    let account = repo().join("tests/data/escalation/pmapper-account.json");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pmapper.json");
    // Its own moto instance and work dir: nothing shared with another run of the script.
    let pmapper = |args: &[&std::ffi::OsStr]| {
        Command::new(repo().join("scripts/pmapper"))
            .args(args)
            .env("GRANTWATCH_PMAPPER_REGIONS", "us-east-1")
            .env("GRANTWATCH_PMAPPER_DATA", dir.path().join("work"))
            .env("GRANTWATCH_PMAPPER_MOTO_PORT", "19096")
            .status()
            .unwrap()
    };
    let status = pmapper(&["graph".as_ref(), account.as_os_str(), out.as_os_str()]);
    let stopped = pmapper(&["moto-stop".as_ref()]);
    assert!(status.success(), "scripts/pmapper graph failed: {status}");
    assert!(stopped.success());
    let pm: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(pm["load_skipped"].as_array().map(Vec::len), Some(0), "moto refused part of the account: {pm:#}");

    let started = std::time::Instant::now();
    let catalog = Catalog::aws().unwrap();
    let mut snapshot = IamSnapshot::default();
    snapshot.merge(parse_iam_json(&std::fs::read(&account).unwrap(), "pmapper-account.json").unwrap());
    let grants = evaluate(&snapshot, &catalog);
    let model = AccessModel::new(&snapshot, &[], None);
    let graph = EscalationGraph::build(&model, &catalog, &grants, SUPER_IDENTITY_SHARE);
    let ours_took = started.elapsed();
    println!(
        "PMapper 1.1.5: {:.2} s ({:.2} s of it in moto API calls); grantwatch: {:.3} s (catalog load included)",
        pm["seconds"].as_f64().unwrap(),
        pm["api_seconds"].as_f64().unwrap_or(0.0),
        ours_took.as_secs_f64()
    );

    let name = |i: u32| short(&model.subjects[i as usize].arn);
    let our_admins: BTreeSet<String> =
        graph.admin.iter().enumerate().filter(|(_, a)| a.is_some()).map(|(i, _)| name(i as u32)).collect();
    let our_edges: BTreeSet<(String, String)> = graph.edges.iter().map(|e| (name(e.from), name(e.to))).collect();
    let pm_admins: BTreeSet<String> = pm["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["is_admin"].as_bool() == Some(true))
        .map(|n| short(n["arn"].as_str().unwrap()))
        .collect();
    let pm_edges: BTreeSet<(String, String)> = pm["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (short(e["source"].as_str().unwrap()), short(e["destination"].as_str().unwrap())))
        .collect();
    assert!(pm_admins.len() >= 10 && pm_edges.len() >= 10, "PMapper found too little to compare: {pm:#}");

    let missing_admins: Vec<&String> = pm_admins.difference(&our_admins).collect();
    assert!(missing_admins.is_empty(), "PMapper administrators not found here: {missing_admins:?}");

    let known = |list: &[(&str, &str, &str)], e: &(String, String)| list.iter().any(|(f, t, _)| e.0 == *f && e.1 == *t);
    let only_pm: Vec<&(String, String)> = pm_edges.difference(&our_edges).collect();
    let unexplained: Vec<_> = only_pm.iter().filter(|e| !known(ONLY_PMAPPER, e)).collect();
    assert!(unexplained.is_empty(), "PMapper edges not found here, with no stated reason: {unexplained:?}");
    for (f, t, why) in ONLY_PMAPPER {
        assert!(
            only_pm.iter().any(|e| e.0 == *f && e.1 == *t),
            "{f} -> {t} is listed as PMapper-only ({why}) but is no longer a difference"
        );
    }
    // Edges from an administrator are not drawn here (it needs none); PMapper draws none either.
    let only_ours: Vec<&(String, String)> = our_edges.difference(&pm_edges).collect();
    // Each of them is conditional or of a kind PMapper lacks.
    for e in graph.edges.iter().filter(|e| only_ours.contains(&&(name(e.from), name(e.to)))) {
        assert!(
            e.grade < grantwatch_core::access::Grade::Yes
                || matches!(e.kind, EdgeKind::AddToGroup | EdgeKind::LoginProfile),
            "{e:?}"
        );
    }
    let unexplained: Vec<_> = only_ours.iter().filter(|e| !known(ONLY_GRANTWATCH, e)).collect();
    assert!(unexplained.is_empty(), "edges found here and not by PMapper, with no stated reason: {unexplained:?}");
    for (f, t, why) in ONLY_GRANTWATCH {
        assert!(
            only_ours.iter().any(|e| e.0 == *f && e.1 == *t),
            "{f} -> {t} is listed as found here only ({why}) but is no longer a difference"
        );
    }
    println!(
        "{} PMapper administrators and {} edges; {} of the edges explained differences, {} edges found here only",
        pm_admins.len(),
        pm_edges.len(),
        only_pm.len(),
        only_ours.len()
    );
}
