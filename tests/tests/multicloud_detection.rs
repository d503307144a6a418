//! Detection over a generated organization spanning AWS, Azure, GCP, Okta and Google Workspace:
//! `grantwatch analyze` with the repository's rules, against the attacks the generator labels
//! (`labels.jsonl`): Owner given to a service principal, a diagnostic setting deleted, a service
//! account key created, a bucket made public to allUsers, an Okta MFA factor deactivated, Workspace
//! 2-Step Verification turned off. Each must raise an alert naming the attacker's identity, with the
//! analytic meant for it; the rest of the activity (120 days of it) must stay nearly quiet.
#![allow(clippy::unwrap_used, clippy::print_stdout)] // test code: a panic is a failed test

mod common;
use common::validate;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use grantwatch::analyze::{AnalyzeOptions, run};
use grantwatch::clouds::CloudPaths;
use grantwatch_core::catalog::Catalog;
use grantwatch_synth::scenario::Label;
use grantwatch_synth::{Layout, MultiCloudSpec, generate_multicloud};
use grantwatch_types::{Cloud, DetectionFinding};

fn spec() -> MultiCloudSpec {
    let mut s = MultiCloudSpec::new(7, 2, 2, 24, 16, 120, 10_000);
    s.aws.events = 4_000;
    s.aws.layout = Layout::JsonLines;
    s
}

/// The analytics an alert carries: the one that names it and those merged into it.
fn analytics(a: &DetectionFinding) -> Vec<String> {
    let mut ids = vec![a.finding_info.analytic.uid.clone()];
    if let Some(also) = a.unmapped["explanation"]["also_matched"].as_array() {
        ids.extend(also.iter().filter_map(|m| m["analytic"].as_str().map(str::to_string)));
    }
    ids
}

/// Whether `a` is about the labeled attack: it relates one of the label's records (GCP entries are
/// `{logName}/{insertId}`, Workspace events `{uniqueQualifier}:{n}`), or, for Azure, whose label
/// names the operation's correlation id rather than a record, it is the attacker's alert on the
/// operation's final record (logged within 90 s of the label's time).
fn about(a: &DetectionFinding, l: &Label) -> bool {
    let by_id = a.finding_info.related_events.iter().any(|e| {
        l.event_ids
            .iter()
            .any(|id| e.uid == *id || e.uid.ends_with(&format!("/{id}")) || e.uid.starts_with(&format!("{id}:")))
    });
    let by_time = a.cloud.provider == Cloud::Azure
        && a.actor.user.uid == l.identity
        && a.finding_info.related_events.iter().any(|e| (e.time - l.start.millis()).abs() <= 120_000);
    by_id || by_time
}

#[test]
fn every_labeled_attack_in_every_cloud_raises_an_alert_on_its_identity() {
    let dir = tempfile::tempdir().unwrap();
    let org = dir.path().join("org");
    generate_multicloud(&spec(), &org).unwrap();
    let labels: Vec<Label> = std::fs::read_to_string(org.join("labels.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(labels.len(), 6, "{labels:?}");

    let catalog = Arc::new(Catalog::all_clouds().unwrap());
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules");
    let (detection, loaded) = grantwatch_detect::load::load_detection(catalog, &rules, None).unwrap();
    assert!(loaded.sigma_errors.is_empty(), "{:?}", loaded.sigma_errors);
    let out = dir.path().join("out");
    let mut o = AnalyzeOptions::new(out.clone());
    o.iam = vec![org.join("iam")];
    o.cloudtrail = vec![org.join("cloudtrail").into()];
    o.clouds = CloudPaths {
        azure: vec![org.join("azure")],
        gcp: vec![org.join("gcp")],
        okta: vec![org.join("okta")],
        workspace: vec![org.join("workspace")],
        identity_center: vec![org.join("identity-center")],
        humans: None,
    };
    o.progress = false;
    o.detection = Some(Arc::new(detection));
    let outcome = run(&o).unwrap();
    assert!(!outcome.quarantined_anything(), "{:?}", outcome.ingest.quarantined);

    let alerts: Vec<DetectionFinding> = std::fs::read_to_string(out.join("alerts.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            validate("detection_finding.v1.json", &v);
            serde_json::from_value(v).unwrap()
        })
        .collect();

    // The analytic each technique is meant to raise (an alert may be named by a more severe one that
    // fired on the same record; it is then listed under also_matched).
    let expected: BTreeMap<&str, &[&str]> = BTreeMap::from([
        // Owner, named by the created assignment in the final record's responseBody.
        ("mc-01", &["grantwatch/azure-privileged-role-assigned"][..]),
        ("mc-02", &["grantwatch/logging-disabled"][..]),
        ("mc-03", &["grantwatch/gcp-service-account-key-created"][..]),
        ("mc-04", &["grantwatch/resource-made-public"][..]),
        ("mc-05", &["grantwatch/mfa-removed"][..]),
        ("mc-06", &["grantwatch/mfa-removed"][..]),
    ]);
    // The person behind each identity and directory account, as humans.jsonl links them.
    let mut human_of: BTreeMap<String, String> = BTreeMap::new();
    for line in std::fs::read_to_string(out.join("humans.jsonl")).unwrap().lines() {
        let h: serde_json::Value = serde_json::from_str(line).unwrap();
        let id = h["id"].as_str().unwrap().to_string();
        for uid in h["identities"].as_array().unwrap().iter().chain(h["directories"].as_array().unwrap()) {
            let uid = uid.get("uid").or(uid.get("id")).and_then(|u| u.as_str()).unwrap();
            human_of.insert(uid.to_string(), id.clone());
        }
    }
    let mut named = 0;
    let mut attack_alerts = vec![false; alerts.len()];
    for l in &labels {
        let hits: Vec<usize> = (0..alerts.len()).filter(|&i| about(&alerts[i], l)).collect();
        assert!(
            !hits.is_empty(),
            "{} ({}): no alert; alerts on that identity: {:?}",
            l.id,
            l.description,
            alerts.iter().filter(|a| a.actor.user.uid == l.identity).map(analytics).collect::<Vec<_>>()
        );
        for &i in &hits {
            attack_alerts[i] = true;
            assert_eq!(alerts[i].actor.user.uid, l.identity, "{}: the alert names another identity", l.id);
            // Alerts name the person behind the identity.
            assert_eq!(alerts[i].actor.user.uid_alt.as_ref(), human_of.get(&l.identity), "{}: human", l.id);
            named += usize::from(alerts[i].actor.user.uid_alt.is_some());
        }
        let fired: Vec<String> = hits.iter().flat_map(|&i| analytics(&alerts[i])).collect();
        let want = expected[l.id.as_str()];
        assert!(fired.iter().any(|f| want.contains(&f.as_str())), "{}: {fired:?}, wanted one of {want:?}", l.id);
        println!("{} {:?}: {fired:?}", l.id, l.technique);
    }

    assert!(named >= 2, "only {named} attack alerts name a human");

    // Counts per cloud and analytic, and the benign remainder.
    let mut by_cloud: BTreeMap<(Cloud, String), usize> = BTreeMap::new();
    for a in &alerts {
        *by_cloud.entry((a.cloud.provider, a.finding_info.analytic.uid.clone())).or_default() += 1;
    }
    for ((cloud, analytic), n) in &by_cloud {
        println!("{:16} {analytic:60} {n}", format!("{cloud:?}"));
    }
    let benign: Vec<&DetectionFinding> =
        alerts.iter().zip(&attack_alerts).filter(|(_, attack)| !**attack).map(|(a, _)| a).collect();
    let benign_of = |c: Cloud| benign.iter().filter(|a| a.cloud.provider == c).count();
    println!(
        "{} alerts, {} on attacks; benign: azure {}, gcp {}, okta {}, workspace {}, aws {}",
        alerts.len(),
        alerts.len() - benign.len(),
        benign_of(Cloud::Azure),
        benign_of(Cloud::Gcp),
        benign_of(Cloud::Okta),
        benign_of(Cloud::GoogleWorkspace),
        benign_of(Cloud::Aws)
    );
    // Measured: see the bound's comment below.
    let other_clouds = benign.iter().filter(|a| a.cloud.provider != Cloud::Aws).count();
    assert!(
        other_clouds <= BENIGN_NON_AWS_MAX,
        "{other_clouds} benign alerts outside AWS: {:#?}",
        benign
            .iter()
            .filter(|a| a.cloud.provider != Cloud::Aws)
            .map(|a| (&a.finding_info.analytic.uid, &a.actor.user.uid, &a.finding_info.desc))
            .collect::<Vec<_>>()
    );
}

/// Alerts outside AWS that concern no labeled attack, over 120 days of about 10,000 Azure, GCP and
/// identity-provider records. Measured 39 (seed 7): SigmaHQ's Azure network rules (virtual network,
/// NSG: 21) and GCP firewall rule (6) on the generator's routine changes, each identity's first time
/// (established after), role assignments of unknown role (3), people back from leave at an address
/// their directory never saw (Okta 4, Workspace 6). The bound leaves room for nothing more.
const BENIGN_NON_AWS_MAX: usize = 40;
