//! Differential test of grantwatch's Sigma evaluation (`grantwatch_detect::sigma`, rsigma) against
//! pySigma (`tools/sigma_reference.py`: pySigma's SQLite backend run in Python's sqlite3).
//!
//! Documents: the CloudTrail samples in `tests/data/` (see its README), and events generated from the
//! AWS rules' own detections: one hit per selection alternative and value, plus near misses (wrong
//! eventSource, a failing errorCode, another identity type, each filter applied, a read-only call).
//! All go through `Normalizer` and `sigma_document`, as in production. Asserts the same rule ids per
//! document, and that every AWS rule matches something, except the rules listed in `UNREACHABLE`.
//!
//! Azure and GCP (`rsigma_matches_pysigma_on_azure_and_gcp`): the Activity Log, sign-in and Cloud
//! Audit Log fixtures of `grantwatch-core`, and raw records built from each Azure and GCP rule's
//! detection (hits per value, near misses: another operation, a failure, a refused permission, no
//! category), normalized by `normalize_activity` / `GcpNormalizer` and compared the same way; every
//! Azure and GCP rule must match something.
//!
//! Needs python3 with tools/requirements.txt: `scripts/setup-deps` installs it. Without it the test
//! fails (it does not skip: a skipped differential test checks nothing).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use grantwatch_core::cloudtrail::Normalizer;
use grantwatch_detect::sigma::{SigmaSet, SigmaView, sigma_document};
use grantwatch_types::{Cloud, Event};
use rsigma_eval::event::{Event as _, JsonEvent};
use rsigma_parser::{Detection, DetectionItem, Modifier, SigmaValue};
use serde_json::{Value, json};

/// AWS rules no normalized event can match, with the reason. The test checks the list is exact.
/// (Empty since the normalizer keeps `errorMessage` and `additionalEventData`.)
const UNREACHABLE: &[(&str, &str)] = &[];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rule_sources(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rule_sources(&p, root, out);
        } else if p.extension().is_some_and(|e| e == "yml") {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            out.push((rel, std::fs::read_to_string(&p).unwrap()));
        }
    }
}

// ---- record generation -------------------------------------------------------------------------

const USER: &str = r#"{"type":"IAMUser","principalId":"AIDAGENERATED","arn":"arn:aws:iam::111122223333:user/alice","accountId":"111122223333","accessKeyId":"AKIAGENERATED","userName":"alice"}"#;
const ROLE: &str = r#"{"type":"AssumedRole","principalId":"AROAGENERATED:s1","arn":"arn:aws:sts::111122223333:assumed-role/Deployer/s1","accountId":"111122223333","accessKeyId":"ASIAGENERATED","sessionContext":{"sessionIssuer":{"type":"Role","arn":"arn:aws:iam::111122223333:role/Deployer","userName":"Deployer"},"attributes":{"mfaAuthenticated":"true"}}}"#;
const ROOT: &str =
    r#"{"type":"Root","principalId":"111122223333","arn":"arn:aws:iam::111122223333:root","accountId":"111122223333"}"#;
const SERVICE: &str = r#"{"type":"AWSService","invokedBy":"ec2.amazonaws.com"}"#;

fn identity(kind: &str) -> Value {
    serde_json::from_str(match kind {
        "AssumedRole" => ROLE,
        "Root" => ROOT,
        "AWSService" => SERVICE,
        _ => USER,
    })
    .unwrap()
}

fn base_record() -> Value {
    json!({
        "eventVersion": "1.08",
        "eventTime": "2024-05-06T07:08:09Z",
        "eventSource": "generated.amazonaws.com",
        "eventName": "GeneratedCall",
        "awsRegion": "eu-west-1",
        "recipientAccountId": "111122223333",
        "sourceIPAddress": "203.0.113.9",
        "userAgent": "aws-cli/2.15.0",
        "readOnly": false,
        "userIdentity": identity("IAMUser"),
    })
}

fn get_path<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

fn set_path(v: &mut Value, path: &str, value: Option<Value>) {
    let mut cur = v;
    let mut keys = path.split('.').peekable();
    while let Some(k) = keys.next() {
        if !cur.is_object() {
            *cur = json!({});
        }
        let obj = cur.as_object_mut().unwrap();
        if keys.peek().is_none() {
            match value {
                Some(val) => {
                    obj.insert(k.to_string(), val);
                }
                None => {
                    obj.remove(k);
                }
            }
            return;
        }
        cur = obj.entry(k.to_string()).or_insert_with(|| json!({}));
    }
}

/// A concrete string the Sigma string matches: wildcards become nothing or one letter.
fn concrete(v: &SigmaValue) -> Option<Value> {
    match v {
        SigmaValue::String(s) => {
            let text = s.to_string().replace('*', "").replace('?', "x");
            Some(Value::String(text))
        }
        SigmaValue::Integer(i) => Some(json!(i)),
        SigmaValue::Float(f) => Some(json!(f)),
        SigmaValue::Bool(b) => Some(json!(b)),
        SigmaValue::Null => None,
    }
}

/// Sets `rec` so that `item` holds (value number `pick`, modulo the item's values).
fn apply_item(rec: &mut Value, item: &DetectionItem, pick: usize) {
    let Some(field) = item.field.name.as_deref() else { return };
    let mods = &item.field.modifiers;
    if mods.contains(&Modifier::FieldRef) {
        // field == referenced field: copy this field's current value into the referenced one.
        let target = item.values.first().and_then(concrete);
        if let (Some(Value::String(other)), Some(current)) = (target, get_path(rec, field).cloned()) {
            set_path(rec, &other, Some(current));
        }
        return;
    }
    if mods.contains(&Modifier::Re) {
        // Regexes are not inverted here; the hand-written records cover them.
        return;
    }
    let values: Vec<Option<Value>> = if mods.contains(&Modifier::All) {
        vec![Some(Value::String(
            item.values
                .iter()
                .filter_map(concrete)
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect::<Vec<_>>()
                .join(" "),
        ))]
    } else {
        item.values.iter().map(concrete).collect()
    };
    let Some(value) = values.get(pick % values.len().max(1)).cloned() else { return };
    let value = value.map(|v| match v {
        Value::String(s) if mods.contains(&Modifier::Contains) => Value::String(format!("pre {s} post")),
        Value::String(s) if mods.contains(&Modifier::StartsWith) => Value::String(format!("{s}Tail")),
        Value::String(s) if mods.contains(&Modifier::EndsWith) => Value::String(format!("Head{s}")),
        other => other,
    });
    if field == "userIdentity.type" {
        let kind = value.as_ref().and_then(Value::as_str).unwrap_or("IAMUser");
        rec["userIdentity"] = identity(kind);
        return;
    }
    if matches!(field, "requestParameters" | "responseElements") {
        // A whole-document match reads the document's JSON text: put each needle in as a string
        // member, so the text holds it between quotes (some rules quote their needles).
        let needles: Vec<String> = if mods.contains(&Modifier::All) {
            item.values.iter().filter_map(concrete).filter_map(|v| v.as_str().map(str::to_string)).collect()
        } else {
            value.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()
        };
        let mut obj = serde_json::Map::new();
        for (i, n) in needles.iter().enumerate() {
            obj.insert(format!("g{i}"), Value::String(n.trim_matches('"').to_string()));
        }
        set_path(rec, field, Some(Value::Object(obj)));
        return;
    }
    set_path(rec, field, value);
}

fn alternatives(d: &Detection) -> Vec<Vec<&DetectionItem>> {
    match d {
        Detection::AllOf(items) => vec![items.iter().collect()],
        Detection::AnyOf(ds) => ds.iter().flat_map(alternatives).collect(),
        _ => vec![Vec::new()],
    }
}

fn apply_alternative(rec: &mut Value, items: &[&DetectionItem], pick: usize) {
    for item in items {
        apply_item(rec, item, pick);
    }
}

/// Records generated from one rule's detections: hits and near misses, with a label each.
fn generate(rule: &rsigma_parser::SigmaRule, path: &str, out: &mut Vec<(String, Value)>) {
    let mut names: Vec<&String> = rule.detection.named.keys().collect();
    names.sort();
    let (filters, positives): (Vec<&String>, Vec<&String>) = names.into_iter().partition(|n| n.starts_with("filter"));
    let first_alts: Vec<Vec<&DetectionItem>> =
        positives.iter().map(|n| alternatives(&rule.detection.named[*n]).swap_remove(0)).collect();
    let hit = |over: Option<(usize, &[&DetectionItem], usize)>| {
        let mut rec = base_record();
        for (i, alt) in first_alts.iter().enumerate() {
            match over {
                Some((j, items, pick)) if j == i => apply_alternative(&mut rec, items, pick),
                _ => apply_alternative(&mut rec, alt, 0),
            }
        }
        rec
    };
    let first = hit(None);
    out.push((format!("{path} hit"), first.clone()));
    for (j, name) in positives.iter().enumerate() {
        for (a, alt) in alternatives(&rule.detection.named[*name]).iter().enumerate() {
            let picks = alt.iter().map(|it| it.values.len()).max().unwrap_or(1);
            for pick in 0..picks {
                out.push((format!("{path} hit {name}[{a}] value {pick}"), hit(Some((j, alt, pick)))));
            }
        }
    }
    // Near misses of the first hit.
    let mut miss = |label: &str, f: &dyn Fn(&mut Value)| {
        let mut rec = first.clone();
        f(&mut rec);
        out.push((format!("{path} miss: {label}"), rec));
    };
    miss("other eventSource", &|r| r["eventSource"] = json!("example.amazonaws.com"));
    miss("other eventName", &|r| r["eventName"] = json!("DescribeSomethingElse"));
    miss("errorCode", &|r| r["errorCode"] = json!("AccessDenied"));
    miss("assumed role", &|r| r["userIdentity"] = identity("AssumedRole"));
    miss("iam user", &|r| r["userIdentity"] = identity("IAMUser"));
    miss("read only", &|r| r["readOnly"] = json!(true));
    for name in filters {
        for (a, alt) in alternatives(&rule.detection.named[name]).iter().enumerate() {
            let mut rec = first.clone();
            apply_alternative(&mut rec, alt, 0);
            out.push((format!("{path} miss: {name}[{a}]"), rec));
        }
    }
}

/// Records the generator cannot derive (regexes, arrays, real-world shapes).
fn hand_written() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut add = |label: &str, f: &dyn Fn(&mut Value)| {
        let mut rec = base_record();
        f(&mut rec);
        out.push((format!("hand: {label}"), rec));
    };
    let imds = json!({"type":"AssumedRole","arn":"arn:aws:sts::111122223333:assumed-role/aws:ec2-instance/i-0abc","accountId":"111122223333","principalId":"AROAIMDS:i-0abc"});
    add("imds credentials used", &|r| {
        r["userIdentity"] = imds.clone();
        r["eventSource"] = json!("s3.amazonaws.com");
        r["eventName"] = json!("ListBuckets");
    });
    add("imds credentials, ssm (filtered)", &|r| {
        r["userIdentity"] = imds.clone();
        r["eventSource"] = json!("ssm.amazonaws.com");
    });
    add("imds credentials, AWS Internal (filtered)", &|r| {
        r["userIdentity"] = imds.clone();
        r["sourceIPAddress"] = json!("AWS Internal");
    });
    add("lambda layers array", &|r| {
        r["eventSource"] = json!("lambda.amazonaws.com");
        r["eventName"] = json!("UpdateFunctionConfiguration20150331v2");
        r["requestParameters"] =
            json!({"functionName":"f","layers":["arn:aws:lambda:eu-west-1:111122223333:layer:l:1"]});
    });
    add("lambda layers empty", &|r| {
        r["eventSource"] = json!("lambda.amazonaws.com");
        r["eventName"] = json!("UpdateFunctionConfiguration20150331v2");
        r["requestParameters"] = json!({"functionName":"f","layers":[]});
    });
    add("ecs container definitions array", &|r| {
        r["eventSource"] = json!("ecs.amazonaws.com");
        r["eventName"] = json!("RegisterTaskDefinition");
        r["requestParameters"] = json!({"family":"t","containerDefinitions":[
            {"name":"a","command":["sh","-c","echo hi"]},
            {"name":"b","command":["sh","-c","curl 169.254.170.2$AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"]}]});
    });
    add("ecs container definitions, harmless", &|r| {
        r["eventSource"] = json!("ecs.amazonaws.com");
        r["eventName"] = json!("RegisterTaskDefinition");
        r["requestParameters"] = json!({"family":"t","containerDefinitions":[{"name":"a","command":["sleep","1"]}]});
    });
    add("s3browser policy as a nested document", &|r| {
        r["eventSource"] = json!("iam.amazonaws.com");
        r["eventName"] = json!("PutUserPolicy");
        r["userAgent"] = json!("S3 Browser 9.5.5 https://s3browser.com");
        r["requestParameters"] = json!({"userName":"u","policyName":"p","policyDocument":{"Statement":[
            {"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::<YOUR-BUCKET-NAME>/*"}]}});
    });
    add("s3browser policy as a string (CloudTrail's own shape: quotes escaped)", &|r| {
        r["eventSource"] = json!("iam.amazonaws.com");
        r["eventName"] = json!("PutUserPolicy");
        r["userAgent"] = json!("S3 Browser 9.5.5 https://s3browser.com");
        r["requestParameters"] = json!({"userName":"u","policyName":"p","policyDocument":
            "{\"Statement\":[{\"Effect\":\"Allow\",\"Action\":\"s3:GetObject\",\"Resource\":\"arn:aws:s3:::<YOUR-BUCKET-NAME>/*\"}]}"});
    });
    add("backdoor key for another user", &|r| {
        r["eventSource"] = json!("iam.amazonaws.com");
        r["eventName"] = json!("CreateAccessKey");
        r["responseElements"] = json!({"accessKey":{"userName":"bob","accessKeyId":"AKIANEW","status":"Active"}});
    });
    add("case: event name in other case", &|r| {
        r["eventSource"] = json!("CLOUDTRAIL.amazonaws.com");
        r["eventName"] = json!("stoplogging");
    });
    add("rds restore public as boolean", &|r| {
        r["eventSource"] = json!("rds.amazonaws.com");
        r["eventName"] = json!("RestoreDBInstanceFromDBSnapshot");
        r["responseElements"] = json!({"publiclyAccessible": true, "dBInstanceIdentifier": "db"});
    });
    add("root service event", &|r| {
        r["userIdentity"] = identity("Root");
        r["eventType"] = json!("AwsServiceEvent");
    });
    add("federated user", &|r| {
        r["userIdentity"] = json!({"type":"FederatedUser","arn":"arn:aws:sts::111122223333:federated-user/bob","accountId":"111122223333","sessionContext":{"sessionIssuer":{"type":"IAMUser","arn":"arn:aws:iam::111122223333:user/alice","userName":"alice"}}});
        r["eventSource"] = json!("sts.amazonaws.com");
        r["eventName"] = json!("GetSessionToken");
    });
    add("service principal", &|r| {
        r["userIdentity"] = identity("AWSService");
        r["eventSource"] = json!("s3.amazonaws.com");
        r["eventName"] = json!("ListBuckets");
    });
    out
}

fn sample_records() -> Vec<(String, Value)> {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut out = Vec::new();
    let docs: Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("cloudtrail-awsdocs/records.json")).unwrap()).unwrap();
    for (i, item) in docs.as_array().unwrap().iter().enumerate() {
        out.push((format!("awsdocs #{i} {}", item["_doc_file"]), item["record"].clone()));
    }
    let trail =
        data.join("cloudtrail-trailscraper/111111111111_CloudTrail_eu-central-1_20171211T1505Z_A6kvhMoVeCsc7v8U.json");
    let trail: Value = serde_json::from_str(&std::fs::read_to_string(trail).unwrap()).unwrap();
    for (i, rec) in trail["Records"].as_array().unwrap().iter().enumerate() {
        out.push((format!("trailscraper #{i}"), rec.clone()));
    }
    out
}

// ---- the reference -----------------------------------------------------------------------------

fn run_reference(rules_dir: &Path, jsonl: &Path, product: &str) -> Vec<BTreeSet<String>> {
    let python = std::env::var("GRANTWATCH_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let script = repo().join("tools/sigma_reference.py");
    let output =
        match Command::new(&python).arg(&script).arg(rules_dir).arg(jsonl).args(["--product", product]).output() {
            Ok(o) => o,
            Err(e) => panic!(
                "cannot run {python} ({e}): the Sigma differential test needs python3 with pySigma; \
             run scripts/setup-deps (installs tools/requirements.txt)"
            ),
        };
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        if stderr.contains("ModuleNotFoundError") || stderr.contains("No module named") {
            panic!(
                "pySigma is not installed for {python}: run scripts/setup-deps (installs tools/requirements.txt)\n{stderr}"
            );
        }
        panic!("tools/sigma_reference.py failed ({}):\n{stderr}", output.status);
    }
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

/// The rules, and the events of the corpus (samples, records generated from the AWS rules, hand
/// written ones), with the number of samples read.
struct Corpus {
    sources: Vec<(String, String)>,
    set: SigmaSet,
    events: Vec<(String, Event)>,
    samples_read: usize,
}

fn corpus() -> Corpus {
    let rules_dir = repo().join("rules/sigma");
    let mut sources = Vec::new();
    rule_sources(&rules_dir, &rules_dir, &mut sources);
    let (set, errors) = SigmaSet::load(&sources);
    assert!(errors.is_empty(), "{errors:?}");

    // Generated records, from the AWS rules' detections.
    let mut records = sample_records();
    let sample_count = records.len();
    for (path, text) in &sources {
        if !path.starts_with("aws/") {
            continue;
        }
        for rule in rsigma_parser::parse_sigma_yaml(text).unwrap().rules {
            generate(&rule, path, &mut records);
        }
    }
    records.extend(hand_written());

    let normalizer = Normalizer::aws().unwrap();
    let mut events: Vec<(String, Event)> = Vec::new();
    let mut skipped = Vec::new();
    for (i, (label, mut rec)) in records.into_iter().enumerate() {
        // Documentation samples often omit eventID, which only names the record.
        if rec.get("eventID").is_none() {
            rec["eventID"] = json!(format!("generated-{i}"));
        }
        match normalizer.normalize(rec.to_string().as_bytes()) {
            Ok(ev) => events.push((label, ev)),
            Err(e) => {
                assert!(i < sample_count, "generated record {label} does not normalize: {e}");
                skipped.push(format!("{label}: {e}"));
            }
        }
    }
    // The doc samples include Insights events and fragments without eventTime; the rest must be read.
    assert!(sample_count - skipped.len() >= 20, "{skipped:?}");
    Corpus { sources, set, events, samples_read: sample_count - skipped.len() }
}

#[test]
fn rsigma_matches_pysigma_on_cloudtrail() {
    let rules_dir = repo().join("rules/sigma");
    let Corpus { set, events, samples_read, .. } = corpus();
    let docs: Vec<Value> = events.iter().map(|(_, ev)| sigma_document(ev)).collect();
    let jsonl = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("sigma_differential_{}.jsonl", std::process::id()));
    let text: String = docs.iter().map(|d| format!("{d}\n")).collect();
    std::fs::write(&jsonl, text).unwrap();
    let reference = run_reference(&rules_dir, &jsonl, "aws");
    let _ = std::fs::remove_file(&jsonl);
    assert_eq!(reference.len(), docs.len(), "the reference printed one line per document");

    let mut matched_by: BTreeMap<&str, usize> = BTreeMap::new();
    let mut differences = Vec::new();
    let mut out = Vec::new();
    for (i, (label, ev)) in events.iter().enumerate() {
        set.matching(ev, &mut out);
        let ours: BTreeSet<String> = out.iter().map(|&r| set.rules()[r].id.clone()).collect();
        for &r in &out {
            *matched_by.entry(set.rules()[r].path.as_str()).or_default() += 1;
        }
        if ours != reference[i] {
            differences.push(format!(
                "{label}\n  rsigma only: {:?}\n  pySigma only: {:?}\n  document: {}",
                ours.difference(&reference[i]).collect::<Vec<_>>(),
                reference[i].difference(&ours).collect::<Vec<_>>(),
                docs[i]
            ));
        }
    }
    let total: usize = matched_by.values().sum();
    println!("{} documents ({samples_read} samples), {total} rule matches", docs.len());
    assert!(differences.is_empty(), "{} documents differ:\n{}", differences.len(), differences.join("\n"));

    let unmatched: Vec<&str> = set
        .rules()
        .iter()
        .filter(|r| r.product == "aws" && !matched_by.contains_key(r.path.as_str()))
        .map(|r| r.path.as_str())
        .collect();
    let expected: Vec<&str> = UNREACHABLE.iter().map(|(p, _)| *p).collect();
    assert_eq!(unmatched, expected, "AWS rules no document matched (UNREACHABLE lists the known ones)");
}

/// What rules read through [`SigmaView`] (the document computed field by field, as `matching` uses
/// it) equals what they would read in [`sigma_document`], for every path a rule names and every path
/// the document has, on the corpus above and the Stratus Red Team detonations.
#[test]
fn the_lazy_view_reads_as_the_document() {
    let Corpus { sources, mut events, .. } = corpus();
    let normalizer = Normalizer::aws().unwrap();
    let stratus = repo().join("samples/stratus-detonation-logs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&stratus).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for file in files.iter().filter(|p| p.extension().is_some_and(|e| e == "json")) {
        let records: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        for (i, rec) in records.iter().enumerate() {
            if let Ok(ev) = normalizer.normalize(rec.to_string().as_bytes()) {
                events.push((format!("{} #{i}", file.display()), ev));
            }
        }
    }
    let mut event_variants = Vec::new();
    for (label, ev) in &events {
        // The same event in the other clouds takes the whole-document path; keep a few.
        if event_variants.len() < 20 {
            for cloud in [Cloud::Azure, Cloud::Gcp] {
                let mut other = ev.clone();
                other.cloud = cloud;
                event_variants.push((format!("{label} as {cloud:?}"), other));
            }
        }
    }
    events.extend(event_variants);

    let mut rule_fields: BTreeSet<String> = BTreeSet::new();
    for (_, text) in &sources {
        for rule in rsigma_parser::parse_sigma_yaml(text).unwrap().rules {
            for detection in rule.detection.named.values() {
                for alternative in alternatives(detection) {
                    for item in alternative {
                        if let Some(name) = &item.field.name {
                            rule_fields.insert(name.clone());
                        }
                    }
                }
            }
        }
    }
    assert!(rule_fields.len() > 30, "{rule_fields:?}");
    let odd = ["", ".", "eventName.", "userIdentity..type", "resources.ARN", "resources[0].ARN", "nope.nope"];

    let mut checked = 0usize;
    for (label, ev) in &events {
        let doc = sigma_document(ev);
        let reference = JsonEvent::borrow(&doc);
        let view = SigmaView::new(ev);
        let mut paths: BTreeSet<String> = rule_fields.clone();
        paths.extend(odd.iter().map(|p| p.to_string()));
        for leaf in reference.field_keys() {
            let leaf = leaf.into_owned();
            let mut prefix = String::new();
            for part in leaf.split('.') {
                if !prefix.is_empty() {
                    prefix.push('.');
                }
                prefix.push_str(part);
                paths.insert(prefix.clone());
                paths.insert(format!("{prefix}.absent"));
            }
        }
        for path in &paths {
            let want = reference.get_field(path).map(|v| as_text(v.to_json()));
            let got = view.get_field(path).map(|v| as_text(v.to_json()));
            assert_eq!(got, want, "{label}: field {path:?} of {doc}");
            checked += 1;
        }
        let mut keys = Vec::new();
        view.visit_top_level_keys(&mut |k| keys.push(k.to_string()));
        for key in doc.as_object().unwrap().keys() {
            assert!(keys.contains(key), "{label}: the view does not name {key}");
        }
        assert_eq!(view.to_json(), doc);
    }
    println!("{} events, {checked} fields compared", events.len());
}

/// An object reads as its canonical text (the module's rule); arrays member by member.
fn as_text(v: Value) -> Value {
    match v {
        Value::Object(_) => Value::String(grantwatch_detect::sigma::canonical_json(&v)),
        Value::Array(items) => Value::Array(items.into_iter().map(as_text).collect()),
        other => other,
    }
}

// ---- Azure and GCP -----------------------------------------------------------------------------

/// The value a rule's item needs in a raw field, from each of its string modifiers: exact, or built
/// from `startswith` + `contains` + `endswith` (several items may constrain one field).
#[derive(Default, Clone)]
struct Needed {
    exact: Option<String>,
    prefix: String,
    middle: Vec<String>,
    suffix: String,
}

impl Needed {
    fn add(&mut self, item: &DetectionItem, value: &str) {
        let mods = &item.field.modifiers;
        if mods.contains(&Modifier::StartsWith) {
            self.prefix = value.to_string();
        } else if mods.contains(&Modifier::EndsWith) {
            self.suffix = value.to_string();
        } else if mods.contains(&Modifier::Contains) {
            self.middle.push(value.to_string());
        } else {
            self.exact = Some(value.to_string());
        }
    }

    fn text(&self) -> String {
        match &self.exact {
            Some(e) => e.clone(),
            None => format!("{}x{}x{}", self.prefix, self.middle.join("x"), self.suffix),
        }
    }
}

/// The raw fields a rule's selection asks for, for one alternative and value pick: `(rule field, value)`
/// merged per field, plus the keywords.
fn needs(rule: &rsigma_parser::SigmaRule, pick: usize) -> Vec<(BTreeMap<String, Needed>, Option<String>)> {
    let mut names: Vec<&String> = rule.detection.named.keys().collect();
    names.sort();
    let mut fields: BTreeMap<String, Needed> = BTreeMap::new();
    let mut keyword = None;
    for name in names.into_iter().filter(|n| !n.starts_with("filter")) {
        match &rule.detection.named[name] {
            Detection::Keywords(values) => {
                keyword = values
                    .get(pick % values.len().max(1))
                    .and_then(concrete)
                    .and_then(|v| v.as_str().map(str::to_string));
            }
            d => {
                for item in alternatives(d).into_iter().next().unwrap_or_default() {
                    let Some(field) = item.field.name.clone() else { continue };
                    let values: Vec<String> = item
                        .values
                        .iter()
                        .filter_map(concrete)
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect();
                    if let Some(v) = values.get(pick % values.len().max(1)) {
                        fields.entry(field).or_default().add(item, v);
                    }
                }
            }
        }
    }
    vec![(fields, keyword)]
}

/// The number of value picks that reach every value of a rule's items.
fn picks(rule: &rsigma_parser::SigmaRule) -> usize {
    rule.detection
        .named
        .values()
        .map(|d| match d {
            Detection::Keywords(v) => v.len(),
            d => alternatives(d).iter().flat_map(|a| a.iter().map(|i| i.values.len())).max().unwrap_or(1),
        })
        .max()
        .unwrap_or(1)
}

fn azure_record(fields: &BTreeMap<String, Needed>, keyword: Option<&str>) -> Value {
    let get = |k: &str| fields.get(k).map(Needed::text);
    let op = get("operationName")
        .or_else(|| get("OperationNameValue"))
        .or_else(|| keyword.map(str::to_string))
        .unwrap_or_else(|| "MICROSOFT.RESOURCES/DEPLOYMENTS/WRITE".into());
    let mut rec = json!({
        "time": "2024-05-03T08:00:00.1000000Z",
        "resourceId": get("ResourceId").unwrap_or_else(|| "/SUBSCRIPTIONS/22222222-2222-4222-8222-222222222222/RESOURCEGROUPS/RG".into()),
        "operationName": op,
        "resultType": "Success",
        "resultSignature": "Succeeded.OK",
        "callerIpAddress": "203.0.113.20",
        "correlationId": "c1c1c1c1-0000-4000-8000-000000000001",
        "identity": {"claims": {"http://schemas.microsoft.com/identity/claims/objectidentifier": "1a1a1a1a-0000-4000-8000-000000000003",
            "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn": "carol@fabrikam.com"}},
        "properties": {"message": get("properties.message").unwrap_or_else(|| op.clone())}
    });
    // The export names no category on some records; a rule that asks for one gets it.
    if let Some(c) = get("CategoryValue") {
        rec["category"] = json!(c);
    }
    if let Some(p) = get("ResourceProviderValue") {
        rec["resourceProviderName"] = json!(p);
    }
    rec
}

fn gcp_record(fields: &BTreeMap<String, Needed>, keyword: Option<&str>) -> Value {
    let get = |k: &str| fields.get(k).map(Needed::text);
    let method = get("gcp.audit.method_name")
        .or_else(|| get("data.protoPayload.methodName"))
        .unwrap_or_else(|| "google.generated.v1.Service.Method".into());
    let service = get("data.protoPayload.serviceName").unwrap_or_else(|| "generated.googleapis.com".into());
    let mut authz = json!({"resource": "projects/p/generated", "granted": true});
    if let Some(p) = get("data.protoPayload.authorizationInfo.permission") {
        authz["permission"] = json!(p);
    }
    if let Some(g) = get("data.protoPayload.authorizationInfo.granted") {
        authz["granted"] = json!(g == "true");
    }
    let log = get("data.protoPayload.logName").unwrap_or_else(|| "cloudaudit.googleapis.com%2Factivity".into());
    let mut request = json!({"@type": "type.googleapis.com/generated.Request", "name": "projects/p/generated"});
    if let Some(k) = keyword {
        request["metadata"] = json!({"annotations": {k: "true"}});
    }
    json!({
        "protoPayload": {
            "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
            "status": {},
            "authenticationInfo": {"principalEmail": "alice@example.com"},
            "requestMetadata": {"callerIp": "203.0.113.9", "callerSuppliedUserAgent": "google-cloud-sdk gcloud/470.0.0"},
            "serviceName": service,
            "methodName": method,
            "authorizationInfo": [authz],
            "resourceName": "projects/p/generated",
            "request": request
        },
        "insertId": "generated",
        "resource": {"type": get("data.protoPayload.resource.type").unwrap_or_else(|| "audited_resource".into()), "labels": {"project_id": "p"}},
        "timestamp": "2024-05-03T08:00:00Z",
        "logName": format!("projects/p/logs/{}", log.replace('/', "%2F"))
    })
}

fn core_testdata(rel: &str) -> PathBuf {
    repo().join("crates/core/src").join(rel)
}

/// JSON Lines, a JSON array, or one object.
fn records_of(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Array(items)) => items,
        Ok(Value::Object(m)) if m.get("value").is_some_and(Value::is_array) => m["value"].as_array().unwrap().clone(),
        Ok(v) => vec![v],
        Err(_) => text.lines().filter(|l| !l.trim().is_empty()).filter_map(|l| serde_json::from_str(l).ok()).collect(),
    }
}

#[test]
fn rsigma_matches_pysigma_on_azure_and_gcp() {
    let rules_dir = repo().join("rules/sigma");
    let mut sources = Vec::new();
    rule_sources(&rules_dir, &rules_dir, &mut sources);
    let (set, errors) = SigmaSet::load(&sources);
    assert!(errors.is_empty(), "{errors:?}");
    let catalog = std::sync::Arc::new(grantwatch_core::catalog::Catalog::all_clouds().unwrap());
    let gcp = grantwatch_core::gcp::GcpNormalizer::new(catalog.clone()).unwrap();

    for product in ["azure", "gcp"] {
        let mut events: Vec<(String, Event)> = Vec::new();
        let add = |label: String, rec: &Value, events: &mut Vec<(String, Event)>| {
            let bytes = rec.to_string();
            let ev = match product {
                "azure" => grantwatch_core::azure::normalize_activity(bytes.as_bytes(), &catalog)
                    .or_else(|_| grantwatch_core::azure::normalize_signin(bytes.as_bytes())),
                _ => gcp.normalize(bytes.as_bytes()),
            };
            if let Ok(ev) = ev {
                events.push((label, ev));
            }
        };
        // The normalizers' fixtures (records of other kinds, Started records, flow logs are skipped).
        let fixtures: Vec<PathBuf> = match product {
            "azure" => ["activity_export.jsonl", "activity_list.json", "signins_export.jsonl", "signins_graph.json"]
                .iter()
                .map(|f| core_testdata(&format!("azure/testdata/{f}")))
                .collect(),
            _ => {
                let mut files: Vec<PathBuf> = std::fs::read_dir(core_testdata("gcp/testdata/audit"))
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .filter(|p| p.extension().is_some_and(|e| e == "json"))
                    .collect();
                files.sort();
                files
            }
        };
        for f in &fixtures {
            for (i, rec) in records_of(f).iter().enumerate() {
                add(format!("{} #{i}", f.display()), rec, &mut events);
            }
        }
        let fixture_events = events.len();
        assert!(fixture_events >= 5, "{product}: {fixture_events} fixture events");
        // Records from each rule's detection, and near misses.
        for (path, text) in sources.iter().filter(|(p, _)| p.starts_with(&format!("{product}/"))) {
            for rule in rsigma_parser::parse_sigma_yaml(text).unwrap().rules {
                for pick in 0..picks(&rule) {
                    for (fields, keyword) in needs(&rule, pick) {
                        let hit = match product {
                            "azure" => azure_record(&fields, keyword.as_deref()),
                            _ => gcp_record(&fields, keyword.as_deref()),
                        };
                        add(format!("{path} hit {pick}"), &hit, &mut events);
                        if pick > 0 {
                            continue;
                        }
                        let mut miss = |label: &str, f: &dyn Fn(&mut Value)| {
                            let mut rec = hit.clone();
                            f(&mut rec);
                            add(format!("{path} miss: {label}"), &rec, &mut events);
                        };
                        match product {
                            "azure" => {
                                miss("failed", &|r| {
                                    r["resultType"] = json!("Failure");
                                    r["resultSignature"] = json!("Failed.Forbidden");
                                });
                                miss("other operation", &|r| {
                                    r["operationName"] = json!("MICROSOFT.WEB/SITES/RESTART/ACTION")
                                });
                                miss("no category", &|r| {
                                    r.as_object_mut().unwrap().remove("category");
                                });
                            }
                            _ => {
                                miss("refused", &|r| {
                                    r["protoPayload"]["authorizationInfo"][0]["granted"] = json!(false)
                                });
                                miss("other method", &|r| {
                                    r["protoPayload"]["methodName"] = json!("google.generated.v1.Other")
                                });
                                miss("data access log", &|r| {
                                    r["logName"] = json!("projects/p/logs/cloudaudit.googleapis.com%2Fdata_access")
                                });
                                miss("failed", &|r| {
                                    r["protoPayload"]["status"] = json!({"code": 7, "message": "denied"})
                                });
                            }
                        }
                    }
                }
            }
        }

        let docs: Vec<Value> = events.iter().map(|(_, ev)| sigma_document(ev)).collect();
        let jsonl = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("sigma_differential_{product}_{}.jsonl", std::process::id()));
        std::fs::write(&jsonl, docs.iter().map(|d| format!("{d}\n")).collect::<String>()).unwrap();
        let reference = run_reference(&rules_dir, &jsonl, product);
        let _ = std::fs::remove_file(&jsonl);
        assert_eq!(reference.len(), docs.len());

        let mut matched: BTreeSet<&str> = BTreeSet::new();
        let mut differences = Vec::new();
        let mut out = Vec::new();
        for (i, (label, ev)) in events.iter().enumerate() {
            set.matching(ev, &mut out);
            let ours: BTreeSet<String> = out.iter().map(|&r| set.rules()[r].id.clone()).collect();
            matched.extend(out.iter().map(|&r| set.rules()[r].path.as_str()));
            if ours != reference[i] {
                differences.push(format!(
                    "{label}\n  rsigma only: {:?}\n  pySigma only: {:?}\n  document: {}",
                    ours.difference(&reference[i]).collect::<Vec<_>>(),
                    reference[i].difference(&ours).collect::<Vec<_>>(),
                    docs[i]
                ));
            }
        }
        println!(
            "{product}: {} documents ({fixture_events} from fixtures), {} rules matched",
            docs.len(),
            matched.len()
        );
        assert!(
            differences.is_empty(),
            "{product}: {} documents differ:\n{}",
            differences.len(),
            differences.join("\n")
        );
        let unmatched: Vec<&str> = set
            .rules()
            .iter()
            .filter(|r| r.product == product && !matched.contains(r.path.as_str()))
            .map(|r| r.path.as_str())
            .collect();
        assert!(unmatched.is_empty(), "{product} rules no document matched: {unmatched:?}");
    }
}
