//! Helpers shared by the end-to-end tests.
#![allow(dead_code, clippy::unwrap_used)] // each test crate uses a part of it; test code

use std::path::{Path, PathBuf};

/// Every `.gz` file below `root`.
pub(crate) fn gz_files(root: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(root).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            gz_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "gz") {
            out.push(p);
        }
    }
}

/// Asserts `instance` matches `schemas/<schema>`. Each schema is read, checked against the JSON
/// Schema meta-schema and compiled once per test binary.
pub(crate) fn validate(schema: &str, instance: &serde_json::Value) {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex, OnceLock};
    static VALIDATORS: OnceLock<Mutex<BTreeMap<String, Arc<jsonschema::Validator>>>> = OnceLock::new();
    let validator = {
        let mut cache = VALIDATORS.get_or_init(Mutex::default).lock().unwrap();
        cache
            .entry(schema.to_string())
            .or_insert_with(|| {
                let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas").join(schema);
                let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
                jsonschema::meta::validate(&doc).unwrap_or_else(|e| panic!("{schema} is not valid JSON Schema: {e}"));
                Arc::new(jsonschema::validator_for(&doc).unwrap())
            })
            .clone()
    };
    let errors: Vec<String> =
        validator.iter_errors(instance).take(5).map(|e| format!("{e} at {}", e.instance_path)).collect();
    assert!(errors.is_empty(), "{instance} does not match {schema}: {errors:?}");
}

/// The findings of `identities.jsonl`, their action lists expanded to the exact form (the file has
/// them compact by default; the counts beside them must match the expansion).
pub(crate) fn findings(out: &Path) -> std::collections::BTreeMap<String, grantwatch_types::IdentityFinding> {
    use grantwatch_types::{ActionsForm, IdentityFinding};
    let catalog = grantwatch_core::catalog::Catalog::aws().unwrap();
    std::fs::read_to_string(out.join("identities.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<IdentityFinding>(l).unwrap())
        .map(|mut f| {
            if f.actions_form == ActionsForm::Compact {
                for list in
                    [&mut f.granted_actions, &mut f.conditional_actions, &mut f.used_actions, &mut f.unused_actions]
                {
                    *list = grantwatch_core::findings::expand_actions(&catalog, list);
                }
                f.actions_form = ActionsForm::Exact;
            }
            let counts = f.action_counts.expect("action counts");
            assert_eq!(
                (counts.granted, counts.conditional, counts.used, counts.unused),
                (f.granted_actions.len(), f.conditional_actions.len(), f.used_actions.len(), f.unused_actions.len()),
                "{}",
                f.arn
            );
            (f.arn.clone(), f)
        })
        .collect()
}
