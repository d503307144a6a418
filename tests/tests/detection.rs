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

/// Real CloudTrail of 35 attack techniques (Stratus Red Team's detonation logs, vendored in
/// `samples/stratus-detonation-logs` with their license), each file replayed alone with no IAM snapshot
/// and no history: at least 30 techniques raise an alert that names their records.
#[test]
fn stratus_red_team_detonations_raise_alerts_naming_their_records() {
    let dir = repo().join("samples/stratus-detonation-logs");
    let r = grantwatch::eval::run_labeled(&grantwatch::eval::LabeledOptions {
        dir: dir.clone(),
        rules: repo().join("rules"),
        models: None,
    })
    .unwrap();
    println!("{r}");
    assert_eq!(r.total, 35, "{r}");
    let missed: Vec<&str> = r.techniques.iter().filter(|t| !t.detected).map(|t| t.technique.as_str()).collect();
    assert!(r.detected >= 30, "detected {} of {}; missed {missed:?}", r.detected, r.total);
    // The analytics that should see what each technique does, not merely some alert.
    let by = |technique: &str| {
        r.techniques.iter().find(|t| t.technique.ends_with(technique)).map(|t| t.analytics.clone()).unwrap_or_default()
    };
    let fired = |technique: &str, analytic: &str| by(technique).iter().any(|(id, _)| id == analytic);
    assert!(fired("iam-backdoor-role", "grantwatch/resource-made-public"), "{:?}", by("iam-backdoor-role"));
    assert!(fired("iam-create-backdoor-role", "grantwatch/resource-made-public"));
    assert!(fired("secretsmanager-retrieve-secrets", "grantwatch/credential-harvest"));
    assert!(fired("ec2-get-password-data", "grantwatch/credential-harvest"), "denied attempts count");
    assert!(fired("cloudtrail-event-selectors", "grantwatch/logging-disabled"));
    assert!(fired("dns-delete-logs", "grantwatch/logging-disabled"));
    assert!(
        fired("console-login-without-mfa", "sigma/77caf516-34e5-4df9-b4db-20744fea0a60"),
        "additionalEventData kept"
    );
    assert!(fired("ec2-user-data", "sigma/1ab3c5ed-5baf-417b-bb6b-78ca33f6c3df"), "userData as CloudTrail logs it");
    assert!(fired("ssm-start-session", "grantwatch/remote-access-fanout"));
    assert!(fired("ec2-instance-connect", "grantwatch/remote-access-fanout"));
}

/// A file without a delivery time may list its records newest first (the order CloudTrail's
/// LookupEvents returns them in): `analyze` sorts it whole, so no event is late and the alerts are
/// those of the same records oldest first.
#[test]
fn newest_first_input_is_sorted_whole() {
    let mut records: Vec<serde_json::Value> = Vec::new();
    for entry in std::fs::read_dir(repo().join("samples/stratus-detonation-logs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let file: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            records.extend(file);
        }
    }
    records.sort_by(|a, b| {
        (a["eventTime"].as_str(), a["eventID"].as_str()).cmp(&(b["eventTime"].as_str(), b["eventID"].as_str()))
    });
    let work = tempfile::tempdir().unwrap();
    let catalog = std::sync::Arc::new(grantwatch_core::catalog::Catalog::aws().unwrap());
    let (detection, _) = grantwatch_detect::load::load_detection(catalog, &repo().join("rules"), None).unwrap();
    let detection = std::sync::Arc::new(detection);
    let mut outcomes = Vec::new();
    for (name, newest_first) in [("oldest-first", false), ("newest-first", true)] {
        let mut ordered = records.clone();
        if newest_first {
            ordered.reverse();
        }
        let file = work.path().join(format!("{name}.json"));
        std::fs::write(&file, serde_json::json!({ "Records": ordered }).to_string()).unwrap();
        let alerts_path = work.path().join(format!("{name}-alerts.jsonl"));
        let pass = grantwatch::detect::run_pass(&grantwatch::detect::PassOptions {
            detection: detection.clone(),
            cloudtrail: &[grantwatch_files::Input::Local(file)],
            s3: Default::default(),
            grants: &[],
            collect_windows: false,
            alerts_path: Some(&alerts_path),
        })
        .unwrap();
        assert_eq!(pass.late, 0, "{name}: no event is late");
        // Records of the same second keep their file order (ties are not reordered), so which of them
        // an alert names may differ; which analytic fires on whom may not.
        let mut alerts: Vec<(String, String)> = std::fs::read_to_string(&alerts_path)
            .unwrap()
            .lines()
            .map(|l| {
                let a: DetectionFinding = serde_json::from_str(l).unwrap();
                (a.finding_info.analytic.uid, a.actor.user.uid)
            })
            .collect();
        alerts.sort();
        outcomes.push((pass.events, alerts));
    }
    assert_eq!(outcomes[0].0, records.len() as u64);
    assert!(!outcomes[0].1.is_empty());
    assert_eq!(outcomes[0], outcomes[1], "the same alerts whatever the order of the file");
}
