//! Every CloudTrail fixture record (`src/cloudtrail/fixtures/`) normalized and snapshotted; every normalized
//! event validated against `schemas/event.v1.json`.
#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use grantwatch_core::cloudtrail::{ActionMap, NormalizeError, normalize_record};
use grantwatch_types::{ActionMapping, Event};
use serde::Deserialize;
use serde_json::value::RawValue;

static MAP: LazyLock<ActionMap> = LazyLock::new(|| ActionMap::aws().unwrap());

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fixtures_dir() -> PathBuf {
    manifest_dir().join("src/cloudtrail/fixtures")
}

#[derive(Deserialize)]
struct DocItem<'a> {
    #[serde(rename = "_doc_file")]
    doc_file: String,
    #[serde(borrow)]
    record: &'a RawValue,
}

#[derive(Deserialize)]
struct Delivery<'a> {
    #[serde(rename = "Records", borrow)]
    records: Vec<&'a RawValue>,
}

/// (snapshot name, record bytes) of every fixture record, in a stable order.
fn fixture_records() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    for path in files {
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        if let Ok(items) = serde_json::from_str::<Vec<DocItem<'_>>>(&text) {
            for (i, item) in items.iter().enumerate() {
                let doc = item.doc_file.trim_end_matches(".md");
                out.push((format!("{stem}-{i:02}-{doc}"), item.record.get().to_string()));
            }
        } else {
            let d: Delivery<'_> = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            for (i, r) in d.records.iter().enumerate() {
                out.push((format!("{stem}-{i:02}"), r.get().to_string()));
            }
        }
    }
    out
}

fn normalize_all() -> Vec<(String, Result<Event, NormalizeError>)> {
    fixture_records().into_iter().map(|(name, raw)| (name, normalize_record(raw.as_bytes(), &MAP))).collect()
}

#[test]
fn cloudtrail_fixture_snapshots() {
    let all = normalize_all();
    assert!(all.len() >= 24 + 2 + 15, "{}", all.len());
    for (name, result) in &all {
        let text = match result {
            Ok(e) => serde_json::to_string_pretty(e).unwrap(),
            Err(e) => format!("ERROR: {e}"),
        };
        insta::assert_snapshot!(name.as_str(), text);
    }
}

#[test]
fn cloudtrail_fixture_outcomes() {
    let all = normalize_all();
    let errors: Vec<&str> = all.iter().filter(|(_, r)| r.is_err()).map(|(n, _)| n.as_str()).collect();
    // 4 CloudTrail Insights records (not API calls), 5 eventVersion 1.0 doc examples without eventID, and
    // 2 deliberately broken hand-written ones.
    assert_eq!(errors.len(), 11, "{errors:?}");
    let events: Vec<&Event> = all.iter().filter_map(|(_, r)| r.as_ref().ok()).collect();
    let count = |m: ActionMapping| events.iter().filter(|e| e.mapping == m).count();
    assert!(count(ActionMapping::Direct) >= 8);
    assert!(count(ActionMapping::Exception) >= 5);
    assert!(count(ActionMapping::NoPermission) >= 10);
    assert_eq!(count(ActionMapping::Unmapped), 1, "only handwritten newservice DoSomethingNew");
    // The round trip through serde is lossless.
    for e in &events {
        let back: Event = serde_json::from_str(&serde_json::to_string(e).unwrap()).unwrap();
        assert_eq!(&back, *e);
    }
}

#[test]
fn cloudtrail_events_match_event_schema() {
    let path = manifest_dir().join("../../schemas/event.v1.json");
    let schema: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    jsonschema::meta::validate(&schema).unwrap_or_else(|e| panic!("schema is not valid JSON Schema: {e}"));
    let validator = jsonschema::validator_for(&schema).unwrap();
    let mut checked = 0;
    for (name, result) in normalize_all() {
        let Ok(event) = result else { continue };
        let instance = serde_json::to_value(&event).unwrap();
        let errors: Vec<String> =
            validator.iter_errors(&instance).map(|e| format!("{} at {}", e, e.instance_path)).collect();
        assert!(errors.is_empty(), "{name}: {errors:?}");
        checked += 1;
    }
    assert!(checked >= 30, "{checked}");
    // The schema rejects what the type cannot produce.
    let bad = serde_json::json!({"uid": "x", "time": "yesterday"});
    assert!(!validator.is_valid(&bad));
}
