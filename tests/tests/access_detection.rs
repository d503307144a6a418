//! Permissions on demand in detection, end to end: `grantwatch analyze --access-log` over a trail and
//! the access service's audit log written here. A role gets `iam:*` for an hour on request: its use in
//! the window is expected (no first-time alert; the alert its call still raises names the request),
//! its use an hour after expiry is an alert, and so is a policy someone else puts on the role. Without
//! the audit log the same trail raises the first-time alerts again. Then the streaming detector on the
//! real broker: the same audit events on the access topic change its answer, live and after a restart.
#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

mod common;
use common::validate;

use std::path::Path;
use std::process::Command;

use grantwatch_e2e::cloudtrail_record;
use grantwatch_e2e::stack::{Stack, service_bin};
use grantwatch_types::{DetectionFinding, EventTime, IngestReport};
use serde_json::{Value, json};

const ACCOUNT: &str = "111122223333";
/// 2026-01-05T00:00:00Z.
const T0: i64 = 1_767_571_200_000;
const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;
/// The grant: activated on day 9 at 10:00, for an hour.
const START: i64 = T0 + 9 * DAY + 10 * HOUR;

fn at(ms: i64) -> String {
    EventTime(ms).to_rfc3339()
}

fn session(role: &str, who: &str) -> Value {
    json!({
        "type": "AssumedRole",
        "principalId": format!("AROAEXAMPLE:{who}"),
        "arn": format!("arn:aws:sts::{ACCOUNT}:assumed-role/{role}/{who}"),
        "accountId": ACCOUNT,
        "sessionContext": {"sessionIssuer": {"type": "Role", "principalId": "AROAEXAMPLE",
            "arn": format!("arn:aws:iam::{ACCOUNT}:role/{role}"), "accountId": ACCOUNT, "userName": role}},
    })
}

/// A write call with its request parameters.
fn call(id: &str, ms: i64, who: &Value, source: &str, name: &str, request: Value) -> String {
    let mut r: Value = serde_json::from_str(&cloudtrail_record(id, &at(ms), who, source, name)).unwrap();
    r["requestParameters"] = request;
    r["readOnly"] = false.into();
    r.to_string()
}

/// Eight days of the deployer role's reads, then on day 9: grantwatch installs the grant, the role
/// attaches a policy and creates a key for another user within the window, attaches again an hour after
/// it expired, and mallory puts a policy of her own on the role.
fn trail() -> String {
    let deployer = session("deployer", "bob@example.com");
    let installer = session("grantwatch-access", "grantwatch");
    let mallory = json!({"type": "IAMUser", "principalId": "AIDAMALLORY", "arn": format!("arn:aws:iam::{ACCOUNT}:user/mallory"),
        "accountId": ACCOUNT, "userName": "mallory"});
    let mut lines: Vec<String> = (0..8)
        .map(|d| {
            let mut r: Value = serde_json::from_str(&cloudtrail_record(
                &format!("read-{d}"),
                &at(T0 + d * DAY + 10 * HOUR),
                &deployer,
                "s3.amazonaws.com",
                "GetObject",
            ))
            .unwrap();
            r["readOnly"] = true.into();
            r.to_string()
        })
        .collect();
    let attach = json!({"roleName": "app", "policyArn": format!("arn:aws:iam::{ACCOUNT}:policy/app-extra")});
    lines.extend([
        call(
            "install",
            START + 2_000,
            &installer,
            "iam.amazonaws.com",
            "PutRolePolicy",
            json!({"roleName": "deployer", "policyName": "grantwatch-access-req-1", "policyDocument": "{}"}),
        ),
        call("attach-in-window", START + 5 * MIN, &deployer, "iam.amazonaws.com", "AttachRolePolicy", attach.clone()),
        call(
            "key-in-window",
            START + 6 * MIN,
            &deployer,
            "iam.amazonaws.com",
            "CreateAccessKey",
            json!({"userName": "svc"}),
        ),
        call("attach-after-expiry", START + 2 * HOUR, &deployer, "iam.amazonaws.com", "AttachRolePolicy", attach),
        call(
            "backdoor",
            START + 3 * HOUR,
            &mallory,
            "iam.amazonaws.com",
            "PutRolePolicy",
            json!({"roleName": "deployer", "policyName": "backdoor", "policyDocument": "{}"}),
        ),
    ]);
    lines.join("\n") + "\n"
}

/// The audit log of request req-1: submitted, approved by carol, active 10:00–11:00, expired.
fn audit_log() -> Vec<Value> {
    let transition = |seq: u64, ms: i64, by: &str, command: &str, from: Option<&str>, state: &str| {
        let mut e = json!({
            "schema": "grantwatch.access-event.v1",
            "audit_seq": 40 + seq,
            "request_id": "req-1",
            "seq": seq,
            "at": at(ms),
            "by": by,
            "command": command,
            "state": state,
            "reason": "incident INC-42: rotate the app role's policy",
            "identity": {"kind": "iam_role", "arn": format!("arn:aws:iam::{ACCOUNT}:role/deployer")},
            "account_id": ACCOUNT,
            "access": {"kind": "actions", "grants": [{"action": "iam:*", "resources": ["*"]}]},
            "risk": "high",
            "requester": "bob@example.com",
            "ticket": "INC-42",
            "approvals": [],
        });
        if let Some(f) = from {
            e["from"] = f.into();
        }
        if seq >= 1 {
            e["approvals"] = json!([{"approver": "carol", "at": at(START - 5 * MIN)}]);
        }
        if seq >= 2 {
            e["activated_at"] = at(START).into();
            e["expires_at"] = at(START + HOUR).into();
        }
        if seq >= 4 {
            e["ended_at"] = at(START + HOUR + 30_000).into();
        }
        e
    };
    vec![
        transition(0, START - 10 * MIN, "bob@example.com", "submit", None, "pending"),
        transition(1, START - 5 * MIN, "carol", "approve", Some("pending"), "approved"),
        transition(2, START, "system", "activate", Some("approved"), "active"),
        transition(3, START + HOUR, "revoker-1", "claim", Some("active"), "active"),
        transition(4, START + HOUR + 30_000, "revoker-1", "expire", Some("active"), "expired"),
    ]
}

fn analyze(dir: &Path, out: &str, access_log: Option<&Path>) -> (i32, String) {
    let mut c = Command::new(service_bin("grantwatch"));
    c.arg("analyze")
        .arg("--iam")
        .arg(dir.join("iam.json"))
        .arg("--cloudtrail")
        .arg(dir.join("trail.jsonl"))
        .arg("--out")
        .arg(dir.join(out))
        .arg("--rules")
        .arg(grantwatch_e2e::stack::repo().join("rules"))
        .arg("--quiet");
    if let Some(log) = access_log {
        c.arg("--access-log").arg(log);
    }
    let output = c.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.code().is_some(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    (output.status.code().unwrap(), stdout)
}

fn alerts(dir: &Path) -> Vec<DetectionFinding> {
    let text = std::fs::read_to_string(dir.join("alerts.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            validate("detection_finding.v1.json", &v);
            serde_json::from_value(v).unwrap()
        })
        .collect()
}

/// Every analytic an alert names, its own and those merged into it, with the alert.
fn analytics(alerts: &[DetectionFinding]) -> Vec<(String, &DetectionFinding)> {
    let mut out = Vec::new();
    for a in alerts {
        out.push((a.finding_info.analytic.uid.clone(), a));
        for m in a.unmapped["explanation"]["also_matched"].as_array().into_iter().flatten() {
            out.push((m["analytic"].as_str().unwrap().to_string(), a));
        }
    }
    out
}

fn first_event(a: &DetectionFinding) -> &str {
    a.finding_info.related_events.first().map_or("", |e| e.uid.as_str())
}

#[test]
fn on_demand_grants_change_what_analyze_alerts_on() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("iam.json"),
        r#"{"UserDetailList":[],"GroupDetailList":[],"RoleDetailList":[],"Policies":[]}"#,
    )
    .unwrap();
    std::fs::write(d.join("trail.jsonl"), trail()).unwrap();
    // The service's audit log, delivered at least once and not in order, with a line that is not one.
    let log = audit_log();
    for e in &log {
        validate("access_event.v1.json", e);
    }
    let lines = [&log[4], &log[0], &log[2], &log[1], &log[2], &log[3]].map(|v| v.to_string());
    let audit = d.join("access-audit.jsonl");
    let bad = r#"{"schema": "not an event"}"#;
    std::fs::write(&audit, format!("{}\n{bad}\n{}\n", lines[..3].join("\n"), lines[3..].join("\n"))).unwrap();

    // With the audit log.
    let (code, stdout) = analyze(d, "with", Some(&audit));
    assert_eq!(code, 3, "a quarantined audit line sets the exit status: {stdout}");
    assert!(
        stdout.contains("Permissions on demand: 6 access audit events read, 2 calls made under an on-demand grant"),
        "{stdout}"
    );
    let report: IngestReport =
        serde_json::from_str(&std::fs::read_to_string(d.join("with/ingest_report.json")).unwrap()).unwrap();
    validate("ingest_report.v1.json", &serde_json::to_value(&report).unwrap());
    assert_eq!((report.access_events_read, report.records_quarantined), (6, 1), "{:?}", report.quarantined);
    let q = &report.quarantined[0];
    assert_eq!((q.file.as_str(), q.record), (audit.to_str().unwrap(), Some(3)));
    assert!(q.reason.contains("access log line 4"), "{}", q.reason);
    let quarantine = std::fs::read_to_string(d.join("with/quarantine.jsonl")).unwrap();
    assert!(quarantine.contains("access-audit.jsonl") && quarantine.contains("not an event"), "{quarantine}");

    let with = alerts(&d.join("with"));
    let found = analytics(&with);
    let deployer = format!("arn:aws:iam::{ACCOUNT}:role/deployer");
    let in_window = ["install", "attach-in-window", "key-in-window"];
    for first_time in
        ["grantwatch/high-risk-permission-used", "grantwatch/first-time-action", "grantwatch/granted-and-used"]
    {
        assert!(
            !found.iter().any(|(id, a)| id == first_time && in_window.contains(&first_event(a))),
            "{first_time} on a use within the grant: {:?}",
            found.iter().map(|(id, a)| (id, first_event(a))).collect::<Vec<_>>()
        );
    }
    // The key created for another user is still an alert, which says it was made under the grant.
    let key = with.iter().find(|a| first_event(a) == "key-in-window").expect("the access-key alert");
    assert_eq!(key.finding_info.analytic.uid, "grantwatch/access-key-for-other-identity");
    let note = &key.unmapped["explanation"]["on_demand"];
    assert_eq!(note["request_id"], "req-1");
    assert_eq!(note["approved_by"], json!(["carol"]));
    assert_eq!(
        (note["from"].as_str(), note["until"].as_str()),
        (Some(at(START).as_str()), Some(at(START + HOUR).as_str()))
    );
    assert_eq!(note["ticket"], "INC-42");
    assert!(key.finding_info.desc.contains("on-demand request req-1 (approved by carol;"), "{}", key.finding_info.desc);
    // An hour after expiry: an alert naming the request.
    let late: Vec<_> =
        with.iter().filter(|a| a.finding_info.analytic.uid == "grantwatch/on-demand-used-after-expiry").collect();
    assert_eq!(late.len(), 1, "{with:?}");
    assert_eq!((first_event(late[0]), late[0].actor.user.uid.as_str()), ("attach-after-expiry", deployer.as_str()));
    assert_eq!(late[0].severity, "High");
    assert_eq!(late[0].unmapped["explanation"]["on_demand"]["state"], "expired");
    // mallory's policy on the role.
    let outside: Vec<_> =
        with.iter().filter(|a| a.finding_info.analytic.uid == "grantwatch/grant-outside-grantwatch").collect();
    assert_eq!(outside.len(), 1, "grantwatch's own PutRolePolicy is not one: {with:?}");
    assert_eq!(first_event(outside[0]), "backdoor");
    assert_eq!(outside[0].actor.user.uid, format!("arn:aws:iam::{ACCOUNT}:user/mallory"));
    assert!(outside[0].finding_info.desc.contains("role/deployer") && outside[0].finding_info.desc.contains("req-1"));

    // The same trail without the audit log: the first-time alerts are back, the on-demand ones gone.
    let (code, stdout) = analyze(d, "without", None);
    assert_eq!(code, 0, "{stdout}");
    let without = alerts(&d.join("without"));
    let found = analytics(&without);
    assert!(
        found
            .iter()
            .any(|(id, a)| id == "grantwatch/high-risk-permission-used" && first_event(a) == "attach-in-window"),
        "{:?}",
        found.iter().map(|(id, a)| (id, first_event(a))).collect::<Vec<_>>()
    );
    assert!(found.iter().any(|(id, _)| id == "grantwatch/granted-and-used"));
    assert!(
        !found
            .iter()
            .any(|(id, _)| id.starts_with("grantwatch/on-demand") || id == "grantwatch/grant-outside-grantwatch")
    );
    let key = without.iter().find(|a| first_event(a) == "key-in-window").unwrap();
    assert!(key.unmapped["explanation"].get("on_demand").is_none());
}

/// Eight days of reads by `role`, as its history.
fn routine(role: &str) -> Vec<String> {
    let who = session(role, "someone@example.com");
    (0..8)
        .map(|d| {
            let mut r: Value = serde_json::from_str(&cloudtrail_record(
                &format!("{role}-read-{d}"),
                &at(T0 + d * DAY + 10 * HOUR),
                &who,
                "s3.amazonaws.com",
                "GetObject",
            ))
            .unwrap();
            r["readOnly"] = true.into();
            r.to_string()
        })
        .collect()
}

fn attach_by(role: &str, id: &str, ms: i64) -> String {
    let request = json!({"roleName": "app", "policyArn": format!("arn:aws:iam::{ACCOUNT}:policy/app-extra")});
    call(id, ms, &session(role, "someone@example.com"), "iam.amazonaws.com", "AttachRolePolicy", request)
}

#[test]
fn an_access_event_on_the_topic_changes_the_streaming_detectors_answer() {
    let work = tempfile::tempdir().unwrap();
    let mut stack = Stack::new("ondemand", 2, work.path());
    // The detector alone: PCI alignment needs the processor, which has nothing to do with this.
    let detector_env = [("GRANTWATCH_DETECTOR__AWAIT_PCI", "false".to_string())];
    stack.start("detector", "grantwatch-detector", &detector_env);
    // The audit events of req-1 (deployer's grant), at least once, out of order.
    let access = stack.cfg.topics.access.name.clone();
    let log = audit_log();
    for e in [&log[2], &log[0], &log[2], &log[1]] {
        stack.produce_raw(&access, "req-1", e.to_string().as_bytes());
    }
    std::thread::sleep(std::time::Duration::from_secs(2));

    // deployer and builder do the same: a week of reads, then a policy attached within the window.
    let mut lines = routine("deployer");
    lines.extend(routine("builder"));
    lines.push(attach_by("deployer", "deployer-attach", START + 5 * MIN));
    lines.push(attach_by("builder", "builder-attach", START + 5 * MIN));
    assert!(stack.ingest(&["--stdin"], Some((lines.join("\n") + "\n").as_bytes()), &[]).success());
    let (group, events) = (stack.cfg.detector.group_id.clone(), stack.cfg.topics.events.name.clone());
    let wait = std::time::Duration::from_secs(240);
    stack.wait_consumed(&group, &[&events], wait);
    let read_alerts = |stack: &Stack| -> Vec<DetectionFinding> { stack.read_json(&stack.cfg.topics.alerts.name) };
    let alerts = read_alerts(&stack);
    let found: Vec<(String, String)> =
        analytics(&alerts).into_iter().map(|(id, a)| (id, first_event(a).to_string())).collect();
    let high_risk = "grantwatch/high-risk-permission-used".to_string();
    assert!(found.contains(&(high_risk.clone(), "builder-attach".into())), "{found:?}");
    assert!(!found.contains(&(high_risk, "deployer-attach".into())), "a use within the grant: {found:?}");

    // The grant expires; the detector restarts (its tasks read the topic again when they open); an
    // hour after expiry deployer attaches again.
    stack.stop("detector");
    for e in [&log[4], &log[3]] {
        stack.produce_raw(&access, "req-1", e.to_string().as_bytes());
    }
    stack.start("detector", "grantwatch-detector", &detector_env);
    let later = attach_by("deployer", "deployer-late", START + 2 * HOUR) + "\n";
    assert!(stack.ingest(&["--stdin"], Some(later.as_bytes()), &[]).success());
    stack.wait_consumed(&group, &[&events], wait);
    stack.stop("detector");
    let alerts = read_alerts(&stack);
    let late: Vec<_> =
        alerts.iter().filter(|a| a.finding_info.analytic.uid == "grantwatch/on-demand-used-after-expiry").collect();
    assert_eq!(late.len(), 1, "{alerts:?}");
    assert_eq!(first_event(late[0]), "deployer-late");
    let note = &late[0].unmapped["explanation"]["on_demand"];
    assert_eq!(note["request_id"], "req-1");
    // The expiry was produced while the detector was down: read when its tasks opened again.
    assert_eq!(note["state"], "expired");
    // Nothing was published twice across the restart.
    let mut seen = std::collections::BTreeSet::new();
    for a in &alerts {
        assert!(seen.insert((a.finding_info.uid.clone(), a.activity_id)), "published twice: {a:?}");
    }
}
