//! End-to-end checks of the generator: determinism, layouts, and that the ground truth agrees with
//! what an independent reader recomputes from the written files.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use grantwatch_synth::{GroundTruth, LOOKBACK_DAYS, Layout, OrgSpec, actions::CALLS, generate};
use grantwatch_types::EventTime;
use serde_json::Value;

fn small(seed: u64, layout: Layout) -> OrgSpec {
    OrgSpec { seed, accounts: 2, identities_per_account: 12, days: 130, events: 3_000, layout, ..OrgSpec::default() }
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() { stack.push(p) } else { out.push(p) }
        }
    }
    out.sort();
    out
}

fn gunzip(p: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(p).unwrap()).read_to_end(&mut out).unwrap();
    out
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

fn document(v: &Value) -> Value {
    match v {
        Value::String(s) => serde_json::from_str(&percent_decode(s)).unwrap(),
        other => other.clone(),
    }
}

/// Records of the trail, in file order, with the file they came from.
fn records(out: &Path, layout: Layout) -> Vec<(PathBuf, Value)> {
    let mut recs = Vec::new();
    match layout {
        Layout::S3 => {
            for f in files(&out.join("cloudtrail")) {
                let v: Value = serde_json::from_slice(&gunzip(&f)).unwrap();
                for r in v["Records"].as_array().unwrap() {
                    recs.push((f.clone(), r.clone()));
                }
            }
        }
        Layout::JsonLines => {
            let p = out.join("cloudtrail/events.jsonl");
            for line in std::fs::read_to_string(&p).unwrap().lines() {
                recs.push((p.clone(), serde_json::from_str(line).unwrap()));
            }
        }
    }
    recs
}

#[derive(Default, Debug)]
struct Seen {
    used: BTreeSet<String>,
    ever: BTreeSet<String>,
    last: Option<EventTime>,
    events: u64,
    events_lb: u64,
    sessions: BTreeSet<String>,
}

/// Recomputes the truth from the files alone and compares.
fn check_truth(out: &Path, layout: Layout) -> GroundTruth {
    let truth: GroundTruth = serde_json::from_slice(&std::fs::read(out.join("truth.json")).unwrap()).unwrap();
    let recs = records(out, layout);
    let source_prefix: BTreeMap<&str, &str> = CALLS.iter().map(|c| (c.source, c.prefix)).collect();
    let known: BTreeSet<String> = CALLS.iter().map(|c| c.action()).collect();
    let mut ids = BTreeSet::new();
    let mut dups = 0;
    let mut first_copy: BTreeMap<String, (PathBuf, Value)> = BTreeMap::new();
    let mut unique = Vec::new();
    for (f, r) in recs {
        let id = r["eventID"].as_str().unwrap().to_string();
        if ids.insert(id.clone()) {
            first_copy.insert(id, (f, r.clone()));
            unique.push(r);
        } else {
            dups += 1;
            let (f0, r0) = &first_copy[&id];
            assert_eq!(r0, &r, "a duplicate is the same record");
            if layout == Layout::S3 {
                assert_ne!(f0, &f, "a duplicate is re-delivered in another file");
            }
        }
    }
    assert_eq!(dups, truth.duplicates_injected);
    assert_eq!(unique.len() as u64, truth.events);
    assert_eq!(unique.len() as u64 + dups, truth.records_written);
    let as_of =
        unique.iter().map(|r| EventTime::parse_rfc3339(r["eventTime"].as_str().unwrap()).unwrap()).max().unwrap();
    assert_eq!(as_of, truth.as_of);
    let cutoff = as_of.minus_days(LOOKBACK_DAYS);
    let (mut unmapped, mut console, mut root, mut service, mut failures, mut action_events) = (0, 0, 0, 0, 0, 0);
    let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
    for r in &unique {
        let t = EventTime::parse_rfc3339(r["eventTime"].as_str().unwrap()).unwrap();
        assert_ne!(t, cutoff, "no event sits exactly on the lookback boundary");
        let ui = &r["userIdentity"];
        let (arn, session) = match ui["type"].as_str().unwrap() {
            "IAMUser" => (ui["arn"].as_str().unwrap().to_string(), None),
            "AssumedRole" => {
                let arn = ui["arn"].as_str().unwrap();
                (
                    ui["sessionContext"]["sessionIssuer"]["arn"].as_str().unwrap().to_string(),
                    arn.rsplit('/').next().map(str::to_string),
                )
            }
            "Root" => {
                root += 1;
                continue;
            }
            "AWSService" => {
                service += 1;
                continue;
            }
            other => panic!("unexpected identity type {other}"),
        };
        let s = seen.entry(arn).or_default();
        s.events += 1;
        s.last = s.last.max(Some(t));
        if t > cutoff {
            s.events_lb += 1;
            if let Some(sess) = session {
                s.sessions.insert(sess);
            }
        }
        let src = r["eventSource"].as_str().unwrap();
        let name = r["eventName"].as_str().unwrap();
        if src == "signin.amazonaws.com" && name == "ConsoleLogin" {
            console += 1;
            continue;
        }
        let action = format!("{}:{name}", source_prefix[src]);
        if !known.contains(&action) {
            unmapped += 1;
            continue;
        }
        action_events += 1;
        if r.get("errorCode").is_some() {
            failures += 1;
        }
        s.ever.insert(action.clone());
        if t > cutoff {
            s.used.insert(action);
        }
    }
    assert_eq!(unmapped, truth.unmapped_injected);
    assert_eq!(console, truth.no_permission_injected);
    assert_eq!(root, truth.root_events);
    assert_eq!(service, truth.service_events);
    assert_eq!(failures, truth.failures);
    assert_eq!(action_events, truth.action_events);
    let empty = Seen::default();
    for ti in &truth.identities {
        let s = seen.get(&ti.arn).unwrap_or(&empty);
        let v = |x: &BTreeSet<String>| x.iter().cloned().collect::<Vec<_>>();
        assert_eq!(ti.used_actions, v(&s.used), "used {}", ti.arn);
        assert_eq!(ti.used_actions_ever, v(&s.ever), "ever {}", ti.arn);
        assert_eq!(ti.last_activity, s.last, "last {}", ti.arn);
        assert_eq!(ti.events, s.events, "events {}", ti.arn);
        assert_eq!(ti.events_in_lookback, s.events_lb, "lookback events {}", ti.arn);
        assert_eq!(ti.session_names, v(&s.sessions), "sessions {}", ti.arn);
        assert_eq!(ti.inactive, ti.kind != "group" && s.events_lb == 0, "inactive {}", ti.arn);
        if let Some(g) = &ti.granted_actions {
            for a in &ti.used_actions_ever {
                assert!(g.contains(a), "{} uses {a} it is not granted", ti.arn);
            }
        }
    }
    let truth_arns: BTreeSet<&String> = truth.identities.iter().map(|t| &t.arn).collect();
    for arn in seen.keys() {
        assert!(truth_arns.contains(arn), "records by unknown identity {arn}");
    }
    truth
}

/// Recomputes exact grants from the IAM snapshot files (default policy versions only).
fn check_snapshot(out: &Path, truth: &GroundTruth) {
    let mut keys_seen = BTreeSet::new();
    for acct in &truth.accounts {
        let d: Value = serde_json::from_slice(&std::fs::read(out.join(format!("iam/{acct}.json"))).unwrap()).unwrap();
        let mut managed: BTreeMap<String, Value> = BTreeMap::new();
        for p in d["Policies"].as_array().unwrap() {
            let versions = p["PolicyVersionList"].as_array().unwrap();
            let default: Vec<&Value> = versions.iter().filter(|v| v["IsDefaultVersion"] == true).collect();
            assert_eq!(default.len(), 1);
            assert_eq!(default[0]["VersionId"], p["DefaultVersionId"]);
            managed.insert(p["Arn"].as_str().unwrap().to_string(), document(&default[0]["Document"]));
        }
        let grant = |inline: &Value, attached: &Value| -> Option<BTreeSet<String>> {
            let mut docs: Vec<Value> =
                inline.as_array().unwrap().iter().map(|p| document(&p["PolicyDocument"])).collect();
            for a in attached.as_array().unwrap() {
                docs.push(managed.get(a["PolicyArn"].as_str().unwrap())?.clone());
            }
            let mut out = BTreeSet::new();
            for doc in docs {
                for st in doc["Statement"].as_array().unwrap() {
                    assert_eq!(st["Effect"], "Allow");
                    let acts = match &st["Action"] {
                        Value::String(s) => vec![s.clone()],
                        Value::Array(a) => a.iter().map(|x| x.as_str().unwrap().to_string()).collect(),
                        _ => panic!(),
                    };
                    for a in acts {
                        if a.contains('*') {
                            return None;
                        }
                        out.insert(a);
                    }
                }
            }
            Some(out)
        };
        let mut computed: BTreeMap<String, Option<BTreeSet<String>>> = BTreeMap::new();
        let mut group_grants: BTreeMap<String, Option<BTreeSet<String>>> = BTreeMap::new();
        for g in d["GroupDetailList"].as_array().unwrap() {
            let x = grant(&g["GroupPolicyList"], &g["AttachedManagedPolicies"]);
            group_grants.insert(g["GroupName"].as_str().unwrap().to_string(), x.clone());
            computed.insert(g["Arn"].as_str().unwrap().to_string(), x);
        }
        for u in d["UserDetailList"].as_array().unwrap() {
            let mut x = grant(&u["UserPolicyList"], &u["AttachedManagedPolicies"]);
            for g in u["GroupList"].as_array().unwrap() {
                match (&mut x, &group_grants[g.as_str().unwrap()]) {
                    (Some(a), Some(b)) => a.extend(b.iter().cloned()),
                    _ => x = None,
                }
            }
            computed.insert(u["Arn"].as_str().unwrap().to_string(), x);
        }
        for r in d["RoleDetailList"].as_array().unwrap() {
            let trust = document(&r["AssumeRolePolicyDocument"]);
            assert!(trust["Statement"].is_array());
            computed.insert(
                r["Arn"].as_str().unwrap().to_string(),
                grant(&r["RolePolicyList"], &r["AttachedManagedPolicies"]),
            );
        }
        for ti in truth.identities.iter().filter(|t| &t.account == acct) {
            let c = computed.get(&ti.arn).unwrap_or_else(|| panic!("{} not in snapshot", ti.arn));
            assert_eq!(&ti.granted_actions, &c.as_ref().map(|s| s.iter().cloned().collect()), "granted {}", ti.arn);
        }
        let k: Value =
            serde_json::from_slice(&std::fs::read(out.join(format!("iam/access-keys-{acct}.json"))).unwrap()).unwrap();
        assert_eq!(k["Account"], acct.as_str());
        for m in k["AccessKeyMetadata"].as_array().unwrap() {
            keys_seen.insert(m["AccessKeyId"].as_str().unwrap().to_string());
        }
    }
    let truth_keys: BTreeSet<String> =
        truth.identities.iter().flat_map(|t| t.access_keys.iter().map(|k| k.access_key_id.clone())).collect();
    assert_eq!(keys_seen, truth_keys);
}

#[test]
fn same_seed_same_bytes() {
    let (a, b, c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let spec = small(11, Layout::S3);
    generate(&spec, a.path()).unwrap();
    generate(&spec, b.path()).unwrap();
    generate(&OrgSpec { seed: 12, ..spec }, c.path()).unwrap();
    let (fa, fb) = (files(a.path()), files(b.path()));
    let rel = |fs: &[PathBuf], root: &Path| {
        fs.iter().map(|f| f.strip_prefix(root).unwrap().to_path_buf()).collect::<Vec<_>>()
    };
    assert_eq!(rel(&fa, a.path()), rel(&fb, b.path()));
    for (x, y) in fa.iter().zip(&fb) {
        assert!(std::fs::read(x).unwrap() == std::fs::read(y).unwrap(), "{} differs", x.display());
    }
    assert_ne!(
        std::fs::read(a.path().join("truth.json")).unwrap(),
        std::fs::read(c.path().join("truth.json")).unwrap()
    );
}

#[test]
fn truth_matches_s3_files_and_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let t = generate(&small(3, Layout::S3), dir.path()).unwrap();
    let back = check_truth(dir.path(), Layout::S3);
    assert_eq!(back, t);
    check_snapshot(dir.path(), &t);
    // the generated org exercises every behaviour the engine must handle
    assert!(t.duplicates_injected >= 3 && t.unmapped_injected >= 2 && t.no_permission_injected >= 1);
    assert!(t.failures > 0 && t.root_events > 0 && t.service_events > 0);
    let ids: Vec<_> = t.identities.iter().filter(|i| i.kind != "group").collect();
    assert!(ids.iter().any(|i| i.inactive && i.last_activity.is_some()), "inactive with older activity");
    assert!(ids.iter().any(|i| i.inactive && i.last_activity.is_none()), "never active");
    assert!(ids.iter().any(|i| i.super_identity));
    assert!(ids.iter().any(|i| i.granted_actions.is_none()) && ids.iter().any(|i| i.granted_actions.is_some()));
    assert!(ids.iter().any(|i| i.archetype.starts_with("sso_") && i.session_names.iter().any(|s| s.contains('@'))));
    let with_unused =
        ids.iter().filter(|i| i.granted_actions.as_ref().is_some_and(|g| g.len() > i.used_actions.len())).count();
    assert!(with_unused > 0);
    let avg = t.bytes_uncompressed / t.records_written;
    assert!((900..=1600).contains(&avg), "average record size {avg}");
}

#[test]
fn s3_layout_paths_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let t = generate(&OrgSpec { events: 3_000, ..small(5, Layout::S3) }, dir.path()).unwrap();
    let mut keys: BTreeMap<String, String> = BTreeMap::new();
    for a in &t.accounts {
        let k: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(format!("iam/access-keys-{a}.json"))).unwrap())
                .unwrap();
        for m in k["AccessKeyMetadata"].as_array().unwrap() {
            keys.insert(m["AccessKeyId"].as_str().unwrap().into(), m["UserName"].as_str().unwrap().into());
        }
    }
    let root = dir.path().join("cloudtrail");
    let all = files(&root);
    assert_eq!(all.len() as u64, t.files_written);
    for f in all {
        let rel = f.strip_prefix(&root).unwrap().to_str().unwrap().to_string();
        let parts: Vec<&str> = rel.split('/').collect();
        assert_eq!(parts.len(), 8, "{rel}");
        let (acct, region, (y, m, d), name) = (parts[1], parts[3], (parts[4], parts[5], parts[6]), parts[7]);
        assert_eq!((parts[0], parts[2]), ("AWSLogs", "CloudTrail"));
        assert!(t.accounts.iter().any(|a| a == acct));
        let stem = name.strip_suffix(".json.gz").unwrap();
        let fields: Vec<&str> = stem.split('_').collect();
        assert_eq!(fields.len(), 5, "{name}");
        assert_eq!((fields[0], fields[1], fields[2]), (acct, "CloudTrail", region));
        assert_eq!(fields[3], format!("{y}{m}{d}T{}Z", &fields[3][9..13]));
        assert_eq!(fields[3].len(), 14);
        assert!(fields[4].len() == 16 && fields[4].bytes().all(|b| b.is_ascii_alphanumeric()));
        let v: Value = serde_json::from_slice(&gunzip(&f)).unwrap();
        let recs = v["Records"].as_array().unwrap();
        assert!(!recs.is_empty());
        let mut prev = "";
        for r in recs {
            let time = r["eventTime"].as_str().unwrap();
            assert!(EventTime::parse_rfc3339(time).is_some() && time.len() == 20);
            assert!(time >= prev, "records sorted by time in {rel}");
            prev = time;
            assert_eq!(r["recipientAccountId"], acct);
            assert_eq!(r["awsRegion"], region);
            assert!(r["eventVersion"] == "1.08" || r["eventVersion"] == "1.09");
            let id = r["eventID"].as_str().unwrap();
            assert!(id.len() == 36 && &id[14..15] == "4", "uuid v4 {id}");
            for k in
                ["eventSource", "eventName", "sourceIPAddress", "userAgent", "requestID", "eventType", "eventCategory"]
            {
                assert!(r[k].is_string(), "{k} in {r}");
            }
            assert!(r["readOnly"].is_boolean() && r["managementEvent"].is_boolean());
            let ui = &r["userIdentity"];
            if ui["type"] == "IAMUser" {
                let key = ui["accessKeyId"].as_str().unwrap_or("");
                if key.starts_with("AKIA") {
                    assert_eq!(
                        keys.get(key).map(String::as_str),
                        ui["userName"].as_str(),
                        "key {key} belongs to the user"
                    );
                }
                assert!(ui["principalId"].as_str().unwrap().starts_with("AIDA"));
            }
            if ui["type"] == "AssumedRole" {
                let issuer = &ui["sessionContext"]["sessionIssuer"];
                let role = issuer["userName"].as_str().unwrap();
                assert!(ui["arn"].as_str().unwrap().starts_with(&format!("arn:aws:sts::{acct}:assumed-role/{role}/")));
                assert!(issuer["arn"].as_str().unwrap().ends_with(&format!("/{role}")));
                assert!(ui["accessKeyId"].as_str().unwrap().starts_with("ASIA"));
                assert!(ui["principalId"].as_str().unwrap().starts_with("AROA"));
            }
        }
    }
}

#[test]
fn jsonl_layout_and_truth() {
    let dir = tempfile::tempdir().unwrap();
    let t = generate(&small(9, Layout::JsonLines), dir.path()).unwrap();
    assert_eq!(files(&dir.path().join("cloudtrail")).len(), 1);
    let back = check_truth(dir.path(), Layout::JsonLines);
    assert_eq!(back, t);
    check_snapshot(dir.path(), &t);
}

#[test]
fn unencoded_policies_and_tiny_specs() {
    let dir = tempfile::tempdir().unwrap();
    let spec = OrgSpec {
        url_encode_policies: false,
        days: 3,
        events: 50,
        accounts: 1,
        identities_per_account: 1,
        ..small(2, Layout::S3)
    };
    let t = generate(&spec, dir.path()).unwrap();
    check_truth(dir.path(), Layout::S3);
    check_snapshot(dir.path(), &t);
    let none = tempfile::tempdir().unwrap();
    let t = generate(&OrgSpec { events: 0, ..spec }, none.path()).unwrap();
    assert_eq!((t.events, t.as_of), (0, spec_start()));
}

fn spec_start() -> EventTime {
    OrgSpec::default().start
}

#[test]
fn bad_specs_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let base = small(1, Layout::S3);
    for bad in [
        OrgSpec { accounts: 0, ..base.clone() },
        OrgSpec { identities_per_account: 0, ..base.clone() },
        OrgSpec { days: 0, ..base.clone() },
        OrgSpec { file_minutes: 7, ..base.clone() },
        OrgSpec { file_minutes: 0, ..base.clone() },
        OrgSpec { regions: vec![], ..base.clone() },
        OrgSpec { regions: vec!["../etc".into()], ..base.clone() },
        OrgSpec { start: EventTime(1_704_067_200_001), ..base.clone() },
    ] {
        assert!(generate(&bad, dir.path()).is_err(), "{bad:?}");
    }
    assert!("parquet".parse::<Layout>().is_err());
    assert_eq!("jsonl".parse::<Layout>().unwrap(), Layout::JsonLines);
}

/// Every emitted call and every explicitly granted action is a real action of the vendored AWS catalog,
/// with the access level the table claims, and every event source maps to the call's prefix.
#[test]
fn actions_are_real() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/aws");
    let cat: Value = serde_json::from_slice(&gunzip(&data.join("iam-catalog.json.gz"))).unwrap();
    let map: Value =
        serde_json::from_slice(&std::fs::read(data.join("cloudtrail-eventsource-map.json")).unwrap()).unwrap();
    for c in CALLS {
        let e = &cat[c.prefix][c.name];
        assert!(e.is_object(), "{} not in catalog", c.action());
        assert_eq!(e["level"], c.level.as_str(), "{}", c.action());
        assert_eq!(map[c.source], c.prefix, "{}", c.source);
    }
    let dir = tempfile::tempdir().unwrap();
    let t =
        generate(&OrgSpec { accounts: 3, identities_per_account: 40, events: 500, ..small(4, Layout::S3) }, dir.path())
            .unwrap();
    for ti in &t.identities {
        for a in ti.granted_actions.iter().flatten() {
            let (p, n) = a.split_once(':').unwrap();
            assert!(cat[p][n].is_object(), "{a} granted to {} is not in the catalog", ti.arn);
        }
    }
    for (src, name) in grantwatch_synth::actions::UNMAPPED {
        let p = map[*src].as_str().unwrap();
        assert!(cat[p][*name].is_null(), "{p}:{name} must not be a real action");
    }
}
