//! `grantwatch analyze` over a generated organization spanning AWS, Azure, GCP, Okta, Google
//! Workspace and IAM Identity Center, against the generator's ground truth (computed apart from
//! grantwatch's code): per Azure and GCP identity granted, used, unused, inactive and super; per
//! human the identities linked to them in every cloud.
#![allow(clippy::unwrap_used, clippy::print_stdout)] // test code: a panic is a failed test

mod common;
use common::validate;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use grantwatch::analyze::{AnalyzeOptions, AnalyzeOutcome, run};
use grantwatch::clouds::CloudPaths;
use grantwatch_synth::{Layout, MultiCloudSpec, MultiCloudTruth, generate_multicloud};
use grantwatch_types::{Cloud, HumanFinding, IdentityFinding, StatusFlag};

fn spec() -> MultiCloudSpec {
    let mut s = MultiCloudSpec::new(7, 2, 2, 24, 16, 120, 10_000);
    s.aws.events = 4_000;
    s.aws.layout = Layout::JsonLines;
    s
}

fn analyze(org: &Path, out: &Path, humans: Option<&Path>) -> AnalyzeOutcome {
    let mut o = AnalyzeOptions::new(out.to_path_buf());
    o.iam = vec![org.join("iam")];
    o.cloudtrail = vec![org.join("cloudtrail").into()];
    o.clouds = CloudPaths {
        azure: vec![org.join("azure")],
        gcp: vec![org.join("gcp")],
        okta: vec![org.join("okta")],
        workspace: vec![org.join("workspace")],
        identity_center: vec![org.join("identity-center")],
        humans: humans.map(Path::to_path_buf),
    };
    o.exact_actions = true;
    o.progress = false;
    run(&o).unwrap()
}

fn lines<T: serde::de::DeserializeOwned>(path: &Path, schema: &str) -> Vec<T> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            validate(schema, &v);
            serde_json::from_value(v).unwrap()
        })
        .collect()
}

/// Asserts two sets are equal, naming what each lacks (the sets run to thousands of names).
fn same(got: BTreeSet<String>, want: BTreeSet<String>, uid: &str, what: &str) {
    let extra: Vec<&String> = got.difference(&want).take(10).collect();
    let missing: Vec<&String> = want.difference(&got).take(10).collect();
    assert!(extra.is_empty() && missing.is_empty(), "{uid}: {what}: not in the truth {extra:?}, missing {missing:?}");
}

fn lower(v: impl IntoIterator<Item = impl AsRef<str>>) -> BTreeSet<String> {
    v.into_iter().map(|s| s.as_ref().to_ascii_lowercase()).collect()
}

#[test]
fn every_cloud_matches_the_ground_truth_and_humans_span_them() {
    let dir = tempfile::tempdir().unwrap();
    let org = dir.path().join("org");
    let truth: MultiCloudTruth = generate_multicloud(&spec(), &org).unwrap();
    let mc = &truth.multicloud;
    let out = dir.path().join("out");
    let outcome = analyze(&org, &out, None);

    // Nothing lost: every record read, the injected unmapped operations counted as such.
    assert_eq!(
        outcome.ingest.records_quarantined + outcome.ingest.files_quarantined,
        0,
        "{:?}",
        outcome.ingest.quarantined
    );
    assert_eq!(outcome.ingest.unmapped_events, truth.aws.unmapped_injected + mc.unmapped_injected, "unmapped events");

    let found: BTreeMap<String, IdentityFinding> =
        lines::<IdentityFinding>(&out.join("identities.jsonl"), "identity.v1.json")
            .into_iter()
            .map(|f| (f.arn.clone(), f))
            .collect();
    let (mut azure, mut gcp, mut active, mut supers) = (0, 0, 0, 0);
    for t in &mc.identities {
        let f = found.get(&t.uid).unwrap_or_else(|| panic!("{} missing from identities.jsonl", t.uid));
        assert_eq!((f.cloud, f.account.as_str()), (t.cloud, t.account.as_str()), "{}", t.uid);
        assert_eq!(f.kind.as_str(), t.kind, "{}", t.uid);
        same(lower(&f.granted_actions), lower(mc.granted(t)), &t.uid, "granted");
        same(lower(&f.used_actions), lower(&t.used), &t.uid, "used");
        same(lower(&f.unused_actions), lower(mc.unused(t)), &t.uid, "unused");
        // Usage counts events per day: the lookback's first day counts whole.
        assert!(f.events_in_lookback >= t.events_in_lookback, "{}: events", t.uid);
        // The truth dates an Azure operation at its start, to the second; its outcome record (what
        // counts) is logged up to 90 s later.
        let gap = |a: Option<grantwatch_types::EventTime>, b: Option<grantwatch_types::EventTime>| match (a, b) {
            (Some(a), Some(b)) => (a.millis() - b.millis()).abs() < 91_000,
            (a, b) => a.is_none() && b.is_none(),
        };
        assert!(
            gap(f.last_activity, t.last_activity),
            "{}: last activity {:?} {:?}",
            t.uid,
            f.last_activity,
            t.last_activity
        );
        if t.kind != "group" {
            assert_eq!(f.status.contains(&StatusFlag::Inactive), t.inactive, "{}: inactive", t.uid);
        }
        // The truth's super identities hold Owner / roles/owner; grantwatch also counts whoever can
        // grant itself anything (User Access Administrator, a custom role with setIamPolicy).
        if t.super_identity {
            assert!(f.status.contains(&StatusFlag::SuperIdentity), "{}: super", t.uid);
            supers += 1;
        }
        assert_eq!(f.human, t.human, "{}: human", t.uid);
        match t.cloud {
            Cloud::Azure => azure += 1,
            Cloud::Gcp => gcp += 1,
            _ => unreachable!("{}", t.uid),
        }
        active += usize::from(!t.inactive);
    }
    assert!(azure > 20 && gcp > 20 && active > 10 && supers > 0, "{azure} {gcp} {active} {supers}");
    // Only the truth's identities and AWS's: no identity invented from a log.
    let clouds: BTreeSet<Cloud> = found.values().map(|f| f.cloud).collect();
    assert_eq!(clouds, BTreeSet::from([Cloud::Aws, Cloud::Azure, Cloud::Gcp]));

    // Accounts: every subscription and project, with its cloud.
    for (account, cloud) in
        mc.subscriptions.iter().map(|s| (s, Cloud::Azure)).chain(mc.projects.iter().map(|p| (p, Cloud::Gcp)))
    {
        let a = outcome.accounts.accounts.iter().find(|a| &a.account == account).unwrap_or_else(|| panic!("{account}"));
        assert_eq!(a.cloud, cloud, "{account}");
    }

    // One human, every cloud: the identities the truth links to each human, and one PCI.
    let humans: BTreeMap<String, HumanFinding> = lines::<HumanFinding>(&out.join("humans.jsonl"), "humans.v1.json")
        .into_iter()
        .map(|h| (h.id.clone(), h))
        .collect();
    let mut spanning = 0;
    for t in &mc.humans {
        let h = humans.get(&t.email).unwrap_or_else(|| panic!("human {} missing", t.email));
        let got: BTreeSet<&str> = h.identities.iter().map(|i| i.uid.as_str()).collect();
        for uid in t.identities.iter().filter(|u| found.contains_key(*u)) {
            assert!(got.contains(uid.as_str()), "{}: {uid} not linked (has {got:?})", t.email);
        }
        let clouds: BTreeSet<Cloud> = h.identities.iter().map(|i| i.cloud).collect();
        spanning += usize::from(clouds.len() >= 2);
        let granted: usize = h.identities.iter().map(|i| i.granted).sum();
        assert_eq!(h.granted_total, granted, "{}", t.email);
    }
    assert!(spanning > 5, "humans with identities in two clouds or more: {spanning}");
    // Workloads belong to no human.
    for t in mc.identities.iter().filter(|t| t.human.is_none()) {
        assert!(humans.values().all(|h| h.identities.iter().all(|i| i.uid != t.uid)), "{} linked", t.uid);
    }
}

#[test]
fn the_mapping_file_overrides_links() {
    let dir = tempfile::tempdir().unwrap();
    let org = dir.path().join("org");
    let truth = generate_multicloud(&spec(), &org).unwrap();
    let mc = &truth.multicloud;
    // Unlink one human's Azure identity, and give a workload to another human.
    let person = mc.humans.iter().find(|h| h.identities.iter().any(|u| u.starts_with("azure:"))).unwrap();
    let unlinked = person.identities.iter().find(|u| u.starts_with("azure:")).unwrap();
    let workload = mc.identities.iter().find(|t| t.human.is_none() && t.kind == "service_account").unwrap();
    let owner = mc.humans.iter().find(|h| h.email != person.email).unwrap();
    let mapping = serde_json::json!({
        "humans": [{ "id": owner.email, "identities": [workload.uid], "note": "runs the nightly job" }],
        "unlink": [{ "identity": unlinked }]
    });
    let file = dir.path().join("humans.json");
    std::fs::write(&file, serde_json::to_vec(&mapping).unwrap()).unwrap();
    let out = dir.path().join("out");
    analyze(&org, &out, Some(&file));
    let found: BTreeMap<String, IdentityFinding> =
        lines::<IdentityFinding>(&out.join("identities.jsonl"), "identity.v1.json")
            .into_iter()
            .map(|f| (f.arn.clone(), f))
            .collect();
    assert_eq!(found[unlinked].human, None);
    assert_eq!(found[&workload.uid].human.as_deref(), Some(owner.email.as_str()));
}
