//! What a user reads of the access features: `analyze`'s escalation paths and `resource_access.jsonl`,
//! and `who-can`'s JSON, on the escalation comparison account, each checked against its schema.
#![allow(clippy::unwrap_used, clippy::print_stdout)] // test code: a panic is a failed test

mod common;
use common::validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use grantwatch::access::{AccessInputs, load, who_can};
use grantwatch::analyze::{AnalyzeOptions, run};
use grantwatch_core::access::AccessModel;
use grantwatch_core::catalog::Catalog;
use grantwatch_types::{IdentityFinding, StatusFlag};
use serde_json::{Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

const ACCOUNT: &str = "123456789012";

fn resource_policies(dir: &Path) -> PathBuf {
    let path = dir.join("resource-policies.json");
    let file = json!({"ResourcePolicies": [
        {"Arn": "arn:aws:s3:::public-site", "Account": ACCOUNT, "Policy": {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::public-site/*"}]}},
        {"Arn": format!("arn:aws:sqs:us-east-1:{ACCOUNT}:jobs"), "Policy": serde_json::to_string(&json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::999988887777:root"}, "Action": "sqs:SendMessage",
             "Resource": format!("arn:aws:sqs:us-east-1:{ACCOUNT}:jobs"),
             "Condition": {"ArnLike": {"aws:SourceArn": "arn:aws:sns:*:999988887777:*"}}}]})).unwrap()}
    ]});
    std::fs::write(&path, file.to_string()).unwrap();
    path
}

#[test]
fn analyze_writes_escalation_paths_and_resource_access() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = AnalyzeOptions::new(dir.path().join("out"));
    o.iam = vec![repo().join("tests/data/escalation/pmapper-account.json")];
    o.resource_policies = vec![resource_policies(dir.path())];
    o.progress = false;
    let outcome = run(&o).unwrap();
    assert_eq!((outcome.escalation.administrators, outcome.resource_access), (19, 2), "{:?}", outcome.escalation);

    let mut by_name: BTreeMap<String, IdentityFinding> = BTreeMap::new();
    for line in std::fs::read_to_string(dir.path().join("out/identities.jsonl")).unwrap().lines() {
        validate("identity.v1.json", &serde_json::from_str(line).unwrap());
        let f: IdentityFinding = serde_json::from_str(line).unwrap();
        by_name.insert(f.arn.rsplit(':').next().unwrap().to_string(), f);
    }
    let lambda = by_name["user/u-lambda"].escalation.clone().unwrap();
    assert_eq!(lambda.path.len(), 1);
    assert_eq!(lambda.path[0].kind, "pass-role");
    assert!(lambda.path[0].actions.contains(&"lambda:CreateFunction".to_string()));
    assert!(lambda.conditional, "iam:PassedToService is a condition of its PassRole statement");
    assert!(lambda.administrator.ends_with("role/lambda-admin"));

    let keys = &by_name["user/u-create-access-key"];
    assert!(keys.status.contains(&StatusFlag::EscalationPath) && keys.status.contains(&StatusFlag::SuperIdentity));
    assert_eq!(keys.escalation.as_ref().unwrap().path[0].policies.len(), 1, "the statement's policy is named");
    assert!(keys.pci.score >= 90 && keys.pci.version == "pci-v3", "reaching an administrator: {:?}", keys.pci);
    assert!(keys.recommendations.iter().any(|r| r.contains("create-access-key")));

    let mfa = &by_name["user/u-mfa-assume"];
    assert!(
        mfa.status.contains(&StatusFlag::EscalationPath) && !mfa.status.contains(&StatusFlag::SuperIdentity),
        "a conditional path"
    );
    assert_eq!(
        by_name["user/u-put-self"].escalation.as_ref().unwrap().admin.as_deref(),
        Some("iam:PutUserPolicy on itself")
    );
    assert!(by_name["user/u-reader"].escalation.is_none() && by_name["user/u-reader"].pci.score < keys.pci.score);

    let access: Vec<Value> = std::fs::read_to_string(dir.path().join("out/resource_access.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for a in &access {
        validate("resource_access.v1.json", a);
    }
    assert!(access.iter().any(|a| a["access"] == "public" && a["resource"] == "arn:aws:s3:::public-site"));
    let queue = access.iter().find(|a| a["access"] == "cross-account").unwrap();
    assert_eq!(
        (queue["external"].as_bool(), queue["principal"].as_str()),
        (Some(true), Some("arn:aws:iam::999988887777:root"))
    );
    assert!(queue["condition"]["ArnLike"].is_object(), "the condition is kept");
}

#[test]
fn who_can_answers_in_its_schema_with_chains_and_conditions() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = AccessInputs {
        iam: vec![repo().join("tests/data/escalation/pmapper-account.json")],
        organization: None,
        resource_policies: vec![resource_policies(dir.path())],
    };
    let loaded = load(&inputs).unwrap();
    let catalog = Catalog::aws().unwrap();
    let model = AccessModel::new(&loaded.snapshot, &loaded.resource_policies, None);

    let report = who_can(&model, &catalog, "s3:GetObject", "arn:aws:s3:::private-data/x").unwrap();
    let json = serde_json::to_value(&report).unwrap();
    validate("who_can.v1.json", &json);
    let entry = |arn_end: &str| report.identities.iter().find(|e| e.arn.ends_with(arn_end));
    let alice = entry("user/admin-alice").unwrap();
    assert!(alice.via.is_empty() && alice.statements.iter().any(|s| s.policy.ends_with("policy/AdministratorAccess")));
    let hop = entry("user/u-assume-admin-role").unwrap();
    assert_eq!(hop.via.len(), 1);
    assert!(hop.via[0].assume.ends_with("role/admin-role-root-trust"));
    assert!(hop.via[0].statements.iter().any(|s| s.policy.starts_with("trust:")), "the trust statement is shown");
    let mfa = entry("user/u-mfa-assume").unwrap();
    assert_eq!(mfa.access, "conditional");
    assert!(mfa.via[0].statements.iter().any(|s| s.condition.is_some()), "the MFA condition is shown");
    assert!(entry("user/u-reader").is_none());

    // Everyone may read the public bucket: the bucket policy names `*`, same account.
    let public = who_can(&model, &catalog, "s3:GetObject", "arn:aws:s3:::public-site/index.html").unwrap();
    assert!(public.identities.iter().any(|e| e.arn.ends_with("user/u-reader") && e.statements.iter().any(|s| s.policy.starts_with("resource:"))));

    // Who can assume a role lists its trust's principals, conditions included.
    let ext =
        who_can(&model, &catalog, "sts:AssumeRole", &format!("arn:aws:iam::{ACCOUNT}:role/admin-role-external-id"))
            .unwrap();
    validate("who_can.v1.json", &serde_json::to_value(&ext).unwrap());
    assert!(!ext.trusted_principals.is_empty());
    assert!(ext.trusted_principals.iter().all(|t| t.statement.condition.is_some()), "sts:ExternalId");

    assert!(who_can(&model, &catalog, "s3:NoSuchAction", "*").is_err(), "an unknown action is refused, named");
    let mut text = Vec::new();
    grantwatch::access::render_text(&report, &mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("-> assumes arn:aws:iam::123456789012:role/admin-role-root-trust"));
}
