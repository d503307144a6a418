#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use grantwatch_types::{
    AnalyticKind, Cloud, DetectionFinding, EventTime, FindingSpec, IdentityKind, RelatedEvent, Severity,
};
use serde_json::Value;

use super::eval::{Labels, score};
use super::*;

fn read_lines(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn gen_small(seed: u64) -> (tempfile::TempDir, ScenarioSummary) {
    let dir = tempfile::tempdir().unwrap();
    let s = generate(&ScenarioConfig::small(seed), dir.path()).unwrap();
    (dir, s)
}

#[test]
fn deterministic() {
    let (a, sa) = gen_small(3);
    let (b, sb) = gen_small(3);
    assert_eq!(sa, sb);
    for f in ["history/cloudtrail.jsonl", "detect/cloudtrail.jsonl", "labels.jsonl", "scenario.json"] {
        assert!(std::fs::read(a.path().join(f)).unwrap() == std::fs::read(b.path().join(f)).unwrap(), "{f}");
    }
    for acct in &sa.accounts {
        let f = format!("iam/{acct}.json");
        assert!(std::fs::read(a.path().join(&f)).unwrap() == std::fs::read(b.path().join(&f)).unwrap(), "{f}");
    }
    let (c, _) = gen_small(4);
    assert!(
        std::fs::read(a.path().join("detect/cloudtrail.jsonl")).unwrap()
            != std::fs::read(c.path().join("detect/cloudtrail.jsonl")).unwrap()
    );
}

#[test]
fn records_labels_and_order() {
    let (dir, s) = gen_small(11);
    let hist = read_lines(&dir.path().join("history/cloudtrail.jsonl"));
    let det = read_lines(&dir.path().join("detect/cloudtrail.jsonl"));
    assert_eq!(hist.len() as u64, s.history_events);
    assert_eq!(det.len() as u64, s.detect_events);
    assert!(hist.len() > 1000 && det.len() > 300, "{} {}", hist.len(), det.len());
    let mut ids = BTreeSet::new();
    let ds = s.detect_start.to_rfc3339();
    let end = s.end.to_rfc3339();
    let start = s.start.to_rfc3339();
    for (file, recs) in [("history", &hist), ("detect", &det)] {
        let mut prev = String::new();
        for r in recs.iter() {
            for k in [
                "eventVersion",
                "eventTime",
                "eventSource",
                "eventName",
                "awsRegion",
                "sourceIPAddress",
                "userAgent",
                "userIdentity",
                "requestParameters",
                "responseElements",
                "readOnly",
                "eventType",
                "managementEvent",
                "recipientAccountId",
                "eventID",
            ] {
                assert!(r.get(k).is_some(), "{file}: missing {k} in {r}");
            }
            let t = r["eventTime"].as_str().unwrap().to_string();
            assert!(t >= prev, "{file} not time-ordered: {t} after {prev}");
            if file == "history" {
                assert!(t >= start && t < ds, "{t}");
            } else {
                assert!(t >= ds && t < end, "{t}");
            }
            prev = t;
            let ui = &r["userIdentity"];
            match ui["type"].as_str().unwrap() {
                "IAMUser" => {
                    for k in ["arn", "accountId", "principalId", "accessKeyId", "userName"] {
                        assert!(ui[k].is_string(), "{ui}");
                    }
                }
                "AssumedRole" => {
                    assert!(ui["arn"].as_str().unwrap().starts_with("arn:aws:sts::"));
                    assert!(ui["arn"].as_str().unwrap().contains(":assumed-role/"));
                    assert_eq!(ui["sessionContext"]["sessionIssuer"]["type"], "Role");
                    assert!(ui["sessionContext"]["sessionIssuer"]["arn"].as_str().unwrap().contains(":role/"));
                }
                other => panic!("unexpected identity type {other}"),
            }
            if r.get("errorCode").is_some() {
                assert!(r["errorMessage"].is_string());
            }
            assert_eq!(r["recipientAccountId"], ui["accountId"]);
            assert!(ids.insert(r["eventID"].as_str().unwrap().to_string()), "duplicate eventID");
        }
    }
    // labels: every event id exists in the detection file; history is attack-free
    let labels = Labels::load(&dir.path().join("labels.jsonl")).unwrap();
    let det_ids: BTreeMap<&str, &Value> = det.iter().map(|r| (r["eventID"].as_str().unwrap(), r)).collect();
    let hist_ids: BTreeSet<&str> = hist.iter().map(|r| r["eventID"].as_str().unwrap()).collect();
    let mut per_tech: BTreeMap<Technique, usize> = BTreeMap::new();
    let mut label_events = 0u64;
    for l in &labels.instances {
        *per_tech.entry(l.technique).or_default() += 1;
        assert!(!l.event_ids.is_empty());
        assert!(l.start <= l.end && l.start >= s.detect_start && l.end < s.end);
        for e in &l.event_ids {
            assert!(det_ids.contains_key(e.as_str()), "{} event {e} missing", l.id);
            assert!(!hist_ids.contains(e.as_str()));
            label_events += 1;
        }
        // the instance's own identity acts in it
        let own = l.event_ids.iter().any(|e| {
            let ui = &det_ids[e.as_str()]["userIdentity"];
            ui["arn"] == l.identity.as_str() || ui["sessionContext"]["sessionIssuer"]["arn"] == l.identity.as_str()
        });
        assert!(own, "{}: no event by {}", l.id, l.identity);
    }
    assert_eq!(label_events, s.attack_events);
    for t in Technique::ALL {
        assert_eq!(per_tech.get(&t).copied(), Some(3), "{t}");
        assert_eq!(s.techniques.get(&t).copied(), Some(3));
    }
    // attack signatures never appear in the history
    for r in &hist {
        let name = r["eventName"].as_str().unwrap();
        assert!(
            !matches!(
                name,
                "StopLogging"
                    | "DeleteTrail"
                    | "UpdateTrail"
                    | "DeleteDetector"
                    | "StopConfigurationRecorder"
                    | "DeleteFlowLogs"
                    | "SetDefaultPolicyVersion"
                    | "UpdateAssumeRolePolicy"
                    | "AttachUserPolicy"
                    | "ModifySnapshotAttribute"
                    | "ModifyDBSnapshotAttribute"
                    | "PutBucketAcl"
                    | "CreateFunction20150331"
            ),
            "{name} in history"
        );
        assert!(!r["userAgent"].as_str().unwrap().contains("kali"));
    }
    // IAM snapshots name every acting identity
    let mut arns = BTreeSet::new();
    for a in &s.accounts {
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join(format!("iam/{a}.json"))).unwrap()).unwrap();
        for u in v["UserDetailList"].as_array().unwrap() {
            arns.insert(u["Arn"].as_str().unwrap().to_string());
        }
        for r in v["RoleDetailList"].as_array().unwrap() {
            arns.insert(r["Arn"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(arns.len() as u32, s.identities);
    for r in hist.iter().chain(det.iter()) {
        let ui = &r["userIdentity"];
        let arn = ui["sessionContext"]["sessionIssuer"]["arn"].as_str().or(ui["arn"].as_str()).unwrap();
        assert!(arns.contains(arn), "{arn} not in IAM");
    }
    for l in &labels.instances {
        assert!(arns.contains(&l.identity));
    }
}

#[test]
fn dormant_identities_were_silent() {
    let (dir, s) = gen_small(5);
    let labels = Labels::load(&dir.path().join("labels.jsonl")).unwrap();
    let hist = read_lines(&dir.path().join("history/cloudtrail.jsonl"));
    let det = read_lines(&dir.path().join("detect/cloudtrail.jsonl"));
    for l in labels.instances.iter().filter(|l| l.technique == Technique::DormantIdentity) {
        let times: Vec<EventTime> = hist
            .iter()
            .chain(det.iter())
            .filter(|r| r["userIdentity"]["arn"] == l.identity.as_str())
            .map(|r| EventTime::parse_rfc3339(r["eventTime"].as_str().unwrap()).unwrap())
            .filter(|t| *t < l.start)
            .collect();
        let last = times.iter().max().copied().unwrap();
        assert!(last < l.start.minus_days(s.dormancy_days), "{}: last {last}, attack {}", l.id, l.start);
    }
}

#[test]
fn invalid_configs_rejected() {
    let dir = tempfile::tempdir().unwrap();
    for cfg in [
        ScenarioConfig { history_days: 10, ..ScenarioConfig::small(1) },
        ScenarioConfig { identities: 10, ..ScenarioConfig::small(1) },
        ScenarioConfig { start: EventTime(1_767_571_200_001), ..ScenarioConfig::small(1) },
        ScenarioConfig { volume: 0.0, ..ScenarioConfig::small(1) },
    ] {
        assert!(matches!(generate(&cfg, dir.path()), Err(ScenarioError::InvalidConfig(_))));
    }
}

// ------------------------------------------------------------------ scoring

const H: i64 = 3_600_000;
const DS: i64 = 1_000 * H;

fn summary() -> ScenarioSummary {
    ScenarioSummary {
        seed: 1,
        config: ScenarioConfig::default(),
        accounts: vec!["111122223333".into()],
        identities: 500,
        active_identities: 400,
        archetypes: BTreeMap::new(),
        history_days: 21,
        detect_days: 2,
        dormancy_days: DORMANCY_DAYS,
        start: EventTime(DS - 21 * 24 * H),
        detect_start: EventTime(DS),
        end: EventTime(DS + 48 * H),
        history_events: 0,
        detect_events: 0,
        attack_events: 0,
        failed_events: 0,
        techniques: BTreeMap::new(),
        history_bytes: 0,
        detect_bytes: 0,
    }
}

fn label(id: &str, tech: Technique, who: &str, start: i64, end: i64, events: &[&str]) -> Label {
    Label {
        id: id.into(),
        technique: tech,
        identity: who.into(),
        account: "111122223333".into(),
        start: EventTime(start),
        end: EventTime(end),
        event_ids: events.iter().map(|e| (*e).to_string()).collect(),
        description: String::new(),
    }
}

fn alert(uid: &str, analytic: &str, who: &str, events: &[(&str, i64)], time: i64) -> DetectionFinding {
    DetectionFinding::new(FindingSpec {
        uid: uid.into(),
        title: "t".into(),
        desc: "d".into(),
        analytic_uid: analytic.into(),
        analytic_name: analytic.into(),
        analytic_kind: AnalyticKind::Rule,
        types: vec![],
        severity: Severity::High,
        time: EventTime(time),
        cloud: Cloud::Aws,
        account: "111122223333".into(),
        region: None,
        actor_uid: who.into(),
        actor_name: None,
        actor_kind: IdentityKind::User,
        actor_human: None,
        related_events: events
            .iter()
            .map(|(u, t)| RelatedEvent { uid: (*u).to_string(), time: *t, kind: "iam:AttachUserPolicy".into() })
            .collect(),
        unmapped: serde_json::Map::new(),
    })
}

#[test]
fn scoring_exact_figures() {
    let alice = "arn:aws:iam::111122223333:user/alice";
    let bob = "arn:aws:iam::111122223333:user/bob";
    let role = "arn:aws:iam::111122223333:role/app";
    let labels = Labels {
        instances: vec![
            label("L1", Technique::PrivilegeEscalation, alice, DS + 2 * H, DS + 2 * H + 600_000, &["e1", "e2"]),
            label("L2", Technique::ReconBurst, bob, DS + 10 * H, DS + 10 * H + 300_000, &["e3"]),
            label("L3", Technique::ReconBurst, role, DS + 20 * H, DS + 20 * H, &["e4"]),
            label("L4", Technique::DataExfiltration, role, DS + 30 * H, DS + 30 * H, &["e5"]),
        ],
    };
    let mut a5 = alert("a5", "model/hourly", role, &[("n9", DS + 20 * H + 30 * 60_000)], DS + 21 * H);
    a5.unmapped.insert("count".into(), serde_json::json!(4));
    let alerts = vec![
        // true by event id (L1)
        alert("a1", "rule/privesc", alice, &[("e2", DS + 2 * H)], DS + 2 * H + 1000),
        // re-emitted later with the same uid: counted once (last wins, still true)
        alert("a1", "rule/privesc", alice, &[("e1", DS + 2 * H), ("e2", DS + 2 * H)], DS + 3 * H),
        // false: unrelated event, other identity
        alert("a2", "rule/privesc", bob, &[("x1", DS + 5 * H)], DS + 5 * H),
        // false: right identity (bob, L2) but far from its window
        alert("a3", "model/hourly", bob, &[("x2", DS + 14 * H)], DS + 14 * H),
        // out of window (history): ignored even though it names an attack event
        alert("a4", "rule/privesc", alice, &[("e1", DS - 2 * H)], DS - 2 * H),
        // true by identity + overlap with [start - 1h, end + 1h] of L3
        a5,
        // false, past the window end: ignored
        alert("a6", "model/hourly", bob, &[("x3", DS + 48 * H)], DS + 48 * H),
    ];
    let r = score(&alerts, &labels, &summary());
    assert_eq!(r.alerts_received, 7);
    assert_eq!(r.duplicates, 1);
    assert_eq!(r.out_of_window, 2);
    assert_eq!(r.alerts, 4);
    assert_eq!(r.true_alerts, 2);
    assert_eq!(r.false_alerts, 2);
    assert_eq!(r.matched_by_event, 1);
    assert_eq!(r.matched_by_identity, 1);
    assert_eq!(r.instances, 4);
    assert_eq!(r.detected, 2);
    assert_eq!(r.precision, Some(0.5));
    assert_eq!(r.recall, Some(0.5));
    // 2 false / (500 identities × 2 days) × 1000 = 2.0
    assert!((r.false_per_1k_identity_days - 2.0).abs() < 1e-12);
    assert_eq!(r.missed, vec!["L2".to_string(), "L4".to_string()]);
    let t: BTreeMap<Technique, (usize, usize, Option<f64>, usize)> =
        r.techniques.iter().map(|t| (t.technique, (t.instances, t.detected, t.recall, t.alerts))).collect();
    assert_eq!(t[&Technique::PrivilegeEscalation], (1, 1, Some(1.0), 1));
    assert_eq!(t[&Technique::ReconBurst], (2, 1, Some(0.5), 1));
    assert_eq!(t[&Technique::DataExfiltration], (1, 0, Some(0.0), 0));
    assert_eq!(t[&Technique::StolenCredentials], (0, 0, None, 0));
    assert!(r.techniques.iter().find(|x| x.technique == Technique::StolenCredentials).unwrap().pass);
    let an: BTreeMap<&str, (usize, usize, usize, u64)> = r
        .analytics
        .iter()
        .map(|a| (a.analytic.as_str(), (a.alerts, a.true_alerts, a.false_alerts, a.occurrences)))
        .collect();
    assert_eq!(an["rule/privesc"], (2, 1, 1, 2));
    assert_eq!(an["model/hourly"], (2, 1, 1, 5));
    // One false alert each: 1 / 1,000 identity-days, over a 0.1 budget.
    let budget = r.analytics.iter().find(|a| a.analytic == "rule/privesc").unwrap();
    assert!((budget.false_per_1k_identity_days - 1.0).abs() < 1e-12 && !budget.within_budget);
    assert!(!r.precision_pass && !r.recall_pass && !r.false_rate_pass && !r.pass);
    let text = r.to_string();
    assert!(text.contains("privilege_escalation") && text.contains("FAIL") && text.contains("model/hourly"));
    let json: Value = serde_json::to_value(&r).unwrap();
    assert_eq!(json["precision"], 0.5);
}

#[test]
fn scoring_perfect_and_empty() {
    let alice = "arn:aws:iam::111122223333:user/alice";
    let labels = Labels::from_lines(
        &serde_json::to_string(&label("L1", Technique::DefenseEvasion, alice, DS, DS, &["e1"])).unwrap(),
    )
    .unwrap();
    assert_eq!(labels.len(), 1);
    let r = score(&[alert("a", "rule/ct", alice, &[("e1", DS)], DS)], &labels, &summary());
    assert_eq!((r.precision, r.recall, r.false_alerts), (Some(1.0), Some(1.0), 0));
    assert!(r.pass, "{r}");
    let r = score(&[], &labels, &summary());
    assert_eq!((r.precision, r.recall), (None, Some(0.0)));
    assert!(!r.pass);
    assert!(Labels::from_lines("{\"id\":1}\n").is_err());
}

#[test]
fn scores_the_generated_labels() {
    // a perfect detector built from the labels themselves scores 1.0 / 1.0 / 0
    let (dir, s) = gen_small(9);
    let labels = Labels::load(&dir.path().join("labels.jsonl")).unwrap();
    let summary = ScenarioSummary::load(&dir.path().join("scenario.json")).unwrap();
    assert_eq!(summary, s);
    let alerts: Vec<DetectionFinding> = labels
        .instances
        .iter()
        .map(|l| {
            alert(&l.id, l.technique.as_str(), &l.identity, &[(&l.event_ids[0], l.start.millis())], l.end.millis())
        })
        .collect();
    let r = score(&alerts, &labels, &summary);
    assert_eq!((r.precision, r.recall, r.false_alerts), (Some(1.0), Some(1.0), 0), "{r}");
}

#[test]
fn action_pools_resolve() {
    use super::api::APIS;
    use super::world::*;
    for pool in [
        DEV_CORE,
        DEV_EXT,
        ADMIN_CORE,
        ADMIN_EXT,
        ANALYST_CORE,
        ANALYST_EXT,
        AUDIT_CORE,
        AUDIT_EXT,
        SCANNER,
        CI,
        CI_IAM,
        APP,
        LAMBDA,
        PIPELINE,
        SERVICE_USER,
    ] {
        for name in pool {
            assert!(APIS.iter().any(|a| format!("{}:{}", a.service(), a.name) == *name), "{name} not in APIS");
        }
    }
}

#[test]
fn benign_sign_ins_leaves_and_new_regions() {
    let seed = 12;
    let cfg = ScenarioConfig::small(seed);
    let (dir, s) = gen_small(seed);
    let w = world::World::build(&cfg, &mut rng_stream(seed, 0));
    let labels = Labels::load(&dir.path().join("labels.jsonl")).unwrap();
    let attack: BTreeSet<String> = labels.instances.iter().flat_map(|l| l.event_ids.iter().cloned()).collect();
    let recs: Vec<Value> = read_lines(&dir.path().join("history/cloudtrail.jsonl"))
        .into_iter()
        .chain(read_lines(&dir.path().join("detect/cloudtrail.jsonl")))
        .filter(|r| !attack.contains(r["eventID"].as_str().unwrap()))
        .collect();
    let day_of = |r: &Value| {
        let t = EventTime::parse_rfc3339(r["eventTime"].as_str().unwrap()).unwrap();
        (t.millis() - s.start.millis()).div_euclid(86_400_000)
    };
    // who made a record: an IAM user's ARN, or an assumed-role ARN (role + session)
    let who = |r: &Value| r["userIdentity"]["arn"].as_str().unwrap().to_string();
    let actor = |id: &world::Identity, p: &world::Persona| match &p.session {
        Some(sess) if id.is_role => {
            format!("arn:aws:sts::{}:assumed-role/{}/{sess}", w.accounts[id.account].id, id.name)
        }
        _ => id.arn.clone(),
    };

    // federated humans start with a sign-in; nobody else signs in
    let mut first: BTreeMap<String, &Value> = BTreeMap::new();
    let (mut saml, mut oidc) = (0, 0);
    for r in &recs {
        first.entry(who(r)).or_insert(r);
        match r["eventName"].as_str().unwrap() {
            "AssumeRoleWithSAML" => saml += 1,
            "AssumeRoleWithWebIdentity" => oidc += 1,
            _ => continue,
        }
        assert_eq!(r["eventSource"], "sts.amazonaws.com");
    }
    assert!(saml > 2 * oidc && oidc > 0, "{saml} SAML, {oidc} OIDC sign-ins");
    let mut leaves = 0;
    for id in &w.ids {
        for p in &id.personas {
            let a = actor(id, p);
            if let Some(r) = first.get(&a) {
                let name = r["eventName"].as_str().unwrap();
                if id.arch.federated() {
                    let want = if p.web_identity { "AssumeRoleWithWebIdentity" } else { "AssumeRoleWithSAML" };
                    assert_eq!(name, want, "{a}");
                } else {
                    assert!(!name.starts_with("AssumeRoleWith"), "{a}");
                }
            }
            // no records at all while on leave, and back afterwards
            // (two humans of an SSO role may share a name, and so a session: the other one works)
            let shared = id.personas.iter().filter(|q| q.session == p.session).count() > 1;
            if let Some((from, back)) = p.leave.filter(|_| !shared) {
                leaves += 1;
                assert!((15..=30).contains(&(back - from)));
                let days: Vec<i64> = recs.iter().filter(|r| who(r) == a).map(day_of).collect();
                assert!(!days.iter().any(|d| (from..back).contains(d)), "{a} active on leave {from}..{back}");
            }
        }
    }
    assert!(leaves > 0);

    // first deployments into the account's other regions, never used by the identity before
    let mut deploys = 0;
    for id in &w.ids {
        for &(d, region) in &id.region_deploys {
            deploys += 1;
            assert!(matches!(id.arch, world::Arch::CiCd | world::Arch::Pipeline));
            assert!(!id.regions.contains(&region) && w.accounts[id.account].regions.contains(&region));
            let in_region: Vec<i64> = recs
                .iter()
                .filter(|r| {
                    r["awsRegion"] == region
                        && r["userIdentity"]["sessionContext"]["sessionIssuer"]["arn"] == id.arn.as_str()
                })
                .map(day_of)
                .collect();
            assert!(in_region.contains(&d) && in_region.iter().all(|x| *x >= d), "{} {region} {d}", id.name);
        }
    }
    assert!(deploys > 0);

    // dormant identities come back from an attacker's address, never their own
    let all = read_lines(&dir.path().join("detect/cloudtrail.jsonl"));
    for l in labels.instances.iter().filter(|l| l.technique == Technique::DormantIdentity) {
        let id = w.ids.iter().find(|i| i.arn == l.identity).unwrap();
        let own: BTreeSet<&str> =
            id.personas.iter().flat_map(|p| p.home_ips.iter().chain([&p.office_ip])).map(String::as_str).collect();
        for r in all.iter().filter(|r| l.event_ids.iter().any(|e| r["eventID"] == e.as_str())) {
            assert!(!own.contains(r["sourceIPAddress"].as_str().unwrap()), "{}", l.id);
        }
    }
}
