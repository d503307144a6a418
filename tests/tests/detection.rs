#![allow(clippy::unwrap_used, clippy::print_stdout)]
//! Detection end to end over a labeled scenario: train on the attack-free history, detect over history
//! and attack days with the repository's rules, score against the labels; and the model contract
//! (a model of another feature version is refused, by `analyze` and by the detector service).

use std::path::Path;
use std::process::Command;

use grantwatch::eval::{EvalOptions, run};
use grantwatch_detect::ml::{MANIFEST_FILE, MODEL_FILE, TrainParams};
use grantwatch_e2e::stack::{repo, service_bin};
use grantwatch_synth::scenario::{ScenarioConfig, Technique, generate};
use grantwatch_types::DetectionFinding;

fn validate(instance: &serde_json::Value) {
    let path = repo().join("schemas/detection_finding.v1.json");
    let schema: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let v = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = v.iter_errors(instance).map(|e| format!("{e} at {}", e.instance_path)).collect();
    assert!(errors.is_empty(), "{instance} does not match its schema: {errors:?}");
}

/// A scenario small enough for the suite (300 identities, 18 + 4 days), with every technique.
fn scenario(dir: &Path) {
    let cfg = ScenarioConfig {
        seed: 3,
        accounts: 2,
        identities: 300,
        history_days: 18,
        detect_days: 4,
        attacks_per_technique: 5,
        volume: 0.5,
        ..ScenarioConfig::default()
    };
    generate(&cfg, dir).unwrap();
}

#[test]
fn a_labeled_scenario_is_detected_with_explained_alerts() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("scenario");
    scenario(&dir);
    let o = run(&EvalOptions {
        scenario: dir.clone(),
        rules: repo().join("rules"),
        models: None,
        train: TrainParams::default(),
    })
    .unwrap();
    println!("{}", o.report);
    let r = &o.report;

    // The models were trained on the history, written with their manifest, and used.
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(o.models.join(MANIFEST_FILE)).unwrap()).unwrap();
    assert_eq!(manifest["feature_version"], grantwatch_detect::features::FEATURE_VERSION);
    assert!(manifest["evaluation"]["holdout_windows"].as_u64().unwrap() > 0, "{manifest}");
    assert!(o.pass.counts.windows_scored > 1_000, "{:?}", o.pass.counts);

    // Every technique is found, and most alerts are about attacks.
    for t in &r.techniques {
        assert!(t.recall.unwrap() >= 0.8, "{:?} recall {:?}", t.technique, t.recall);
    }
    assert_eq!(r.techniques.len(), Technique::ALL.len());
    assert!(r.recall.unwrap() >= 0.9, "recall {:?}", r.recall);
    assert!(r.precision.unwrap() >= 0.8, "precision {:?}", r.precision);

    // Alerts are explained: analytic, triggering events, evidence, identity; OCSF-shaped.
    let alerts: Vec<DetectionFinding> =
        std::fs::read_to_string(&o.alerts).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(alerts.iter().any(|a| a.finding_info.analytic.uid.starts_with("ml/")), "no model alert");
    assert!(alerts.iter().any(|a| a.finding_info.analytic.uid.starts_with("sigma/")), "no Sigma alert");
    for a in &alerts {
        validate(&serde_json::to_value(a).unwrap());
        assert!(!a.actor.user.uid.is_empty());
        let explanation = &a.unmapped["explanation"];
        assert_eq!(explanation["analytic"], a.finding_info.analytic.uid);
        assert!(!explanation["evidence"].as_array().unwrap().is_empty(), "{a:?}");
        if a.finding_info.analytic.uid.starts_with("ml/") {
            let evidence = explanation["evidence"].as_array().unwrap();
            assert!(evidence.iter().any(|e| e["baseline"].is_number() && e["score"].is_number()), "{evidence:?}");
        } else if !a.finding_info.analytic.uid.contains("pci") && !a.finding_info.analytic.uid.contains("super") {
            assert!(!a.finding_info.related_events.is_empty(), "{a:?}");
        }
    }
    // An incident published twice is a Create, then an Update with the count.
    for u in alerts.iter().filter(|a| a.activity_id == 2) {
        assert!(u.count > 1);
        assert!(alerts.iter().any(|c| c.activity_id == 1 && c.finding_info.uid == u.finding_info.uid));
    }

    // A model of another feature version is refused: by analyze, and by the detector service.
    let model_path = o.models.join(MODEL_FILE);
    let text = std::fs::read_to_string(&model_path).unwrap();
    let mut model: serde_json::Value = serde_json::from_str(&text).unwrap();
    model["manifest"]["feature_version"] = serde_json::json!(999);
    let stale = work.path().join("stale-models");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join(MODEL_FILE), model.to_string()).unwrap();
    let grantwatch = service_bin("grantwatch");
    let out = Command::new(&grantwatch)
        .args(["analyze", "--quiet", "--iam"])
        .arg(dir.join("iam"))
        .arg("--cloudtrail")
        .arg(dir.join("detect"))
        .arg("--out")
        .arg(work.path().join("out"))
        .arg("--rules")
        .arg(repo().join("rules"))
        .arg("--models")
        .arg(&stale)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("version 999") && stderr.contains("retrain"), "{stderr}");
    let out = Command::new(service_bin("grantwatch-detector"))
        .env("GRANTWATCH_DETECTOR__RULES_DIR", repo().join("rules"))
        .env("GRANTWATCH_DETECTOR__MODELS_DIR", &stale)
        .env("GRANTWATCH_DETECTOR__HTTP_LISTEN", "")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("version 999"), "{stderr}");
}
