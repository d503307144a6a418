//! `grantwatch remediate apply|rollback` and `grantwatch iam attach|detach|export` end to end: the real
//! binary, the real SDK, against moto's IAM, STS and SSO Admin (`scripts/moto`). Each test builds its
//! own account (users with inline and managed policies, groups, access keys, a role with its trust
//! policy) in a fresh moto account of its own, exports it with `iam export`, writes a plan by hand and
//! checks IAM through a second export after each command.
#![allow(clippy::unwrap_used, clippy::print_stdout)] // test code: a panic is a failed test

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use grantwatch_e2e::http1::{read_message, respond, serve};
use grantwatch_e2e::moto::{self, MotoAccount, block_on};
use grantwatch_e2e::stack::{repo, service_bin};
use grantwatch_types::{
    AccessKeyState, Change, EventTime, IdentityIamState, IdentityKind, IdentityPlan, NamedDocument, PLAN_SCHEMA,
    PlanReason, PlanScope, RemediationPlan, ReplayProof,
};
use serde_json::{Value, json};

const WIDE: &str = "wide";

fn doc(actions: &[&str]) -> Value {
    json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]})
}

/// A test's account and working directory.
struct Fixture {
    account: MotoAccount,
    dir: tempfile::TempDir,
    /// Every line the binary printed, to check that no secret ever appears.
    printed: String,
}

impl Fixture {
    fn new() -> Fixture {
        let endpoint = moto::endpoint();
        Fixture { account: MotoAccount::new(&endpoint), dir: tempfile::tempdir().unwrap(), printed: String::new() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arn(&self, kind: &str, name: &str) -> String {
        format!("arn:aws:iam::{}:{kind}/{name}", self.account.id)
    }

    fn policy_arn(&self, name: &str) -> String {
        self.arn("policy", name)
    }

    /// Runs the real binary with this account's credentials (the SDK's default chain only).
    fn run(&mut self, args: &[&str], extra_env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(service_bin("grantwatch"));
        cmd.args(args);
        for var in ["AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_IAM", "AWS_ENDPOINT_URL_STS", GW_FAULT] {
            cmd.env_remove(var);
        }
        cmd.envs(self.account.env());
        cmd.envs(extra_env.iter().copied());
        let out = cmd.output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        println!("$ grantwatch {}\n{text}", args.join(" "));
        self.printed.push_str(&text);
        out
    }

    fn ok(&mut self, args: &[&str]) -> String {
        let out = self.run(args, &[]);
        assert!(out.status.success(), "grantwatch {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// `grantwatch iam export`, parsed.
    fn export(&mut self) -> Value {
        let file = self.path("export.json");
        let endpoint = self.account.endpoint.clone();
        self.ok(&["iam", "export", "--out", file.to_str().unwrap(), "--endpoint-url", &endpoint]);
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap()
    }

    fn apply(&mut self, plan: &Path, journal: &Path, yes: bool, env: &[(&str, &str)]) -> Output {
        let endpoint = self.account.endpoint.clone();
        let mut args =
            vec!["remediate", "apply", "--plan", plan.to_str().unwrap(), "--journal", journal.to_str().unwrap()];
        args.extend(["--endpoint-url", &endpoint]);
        if yes {
            args.push("--yes");
        }
        self.run(&args, env)
    }

    fn rollback(&mut self, journal: &Path, yes: bool) -> Output {
        let endpoint = self.account.endpoint.clone();
        let mut args =
            vec!["remediate", "rollback", "--journal", journal.to_str().unwrap(), "--endpoint-url", &endpoint];
        if yes {
            args.push("--yes");
        }
        self.run(&args, &[])
    }

    /// Nothing the binary printed and nothing in the journal holds the secret key or session token.
    fn assert_no_secret(&self, journal: &Path) {
        let j = std::fs::read_to_string(journal).unwrap_or_default();
        for secret in [&self.account.secret_key, &self.account.session_token, &moto::SECRET_KEY.to_string()] {
            assert!(!self.printed.contains(secret.as_str()), "a secret was printed");
            assert!(!j.contains(secret.as_str()), "a secret is in the journal");
        }
    }

    /// The account every test starts from: alice (inline s3-all, wide attached, in devs, two keys),
    /// bob (inline sqs, wide attached, one key), the devs group (ops attached, an inline policy), the
    /// deploy role (a trust policy, inline ec2, wide attached).
    fn build_account(&self) {
        let iam = self.account.iam();
        block_on(async {
            for (name, d) in [(WIDE, doc(&["s3:*", "ec2:*", "sqs:*"])), ("ops", doc(&["logs:*"]))] {
                iam.create_policy().policy_name(name).policy_document(d.to_string()).send().await.unwrap();
            }
            iam.create_group().group_name("devs").send().await.unwrap();
            iam.attach_group_policy().group_name("devs").policy_arn(self.policy_arn("ops")).send().await.unwrap();
            iam.put_group_policy()
                .group_name("devs")
                .policy_name("devs-inline")
                .policy_document(doc(&["cloudwatch:*"]).to_string())
                .send()
                .await
                .unwrap();
            for (user, inline, actions, keys) in [("alice", "s3-all", ["s3:*"], 2), ("bob", "sqs", ["sqs:*"], 1)] {
                iam.create_user().user_name(user).send().await.unwrap();
                iam.put_user_policy()
                    .user_name(user)
                    .policy_name(inline)
                    .policy_document(doc(&actions).to_string())
                    .send()
                    .await
                    .unwrap();
                iam.attach_user_policy().user_name(user).policy_arn(self.policy_arn(WIDE)).send().await.unwrap();
                for _ in 0..keys {
                    iam.create_access_key().user_name(user).send().await.unwrap();
                }
            }
            iam.add_user_to_group().user_name("alice").group_name("devs").send().await.unwrap();
            let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
                "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]});
            iam.create_role().role_name("deploy").assume_role_policy_document(trust.to_string()).send().await.unwrap();
            iam.put_role_policy()
                .role_name("deploy")
                .policy_name("ec2")
                .policy_document(doc(&["ec2:*"]).to_string())
                .send()
                .await
                .unwrap();
            iam.attach_role_policy().role_name("deploy").policy_arn(self.policy_arn(WIDE)).send().await.unwrap();
        });
    }

    /// The plan a reviewer would approve: each identity gets a smaller policy, then loses the wide one,
    /// alice her inline policy, group and second key, bob his key, deploy its inline policy.
    fn plan(&self, export: &Value) -> RemediationPlan {
        let why = || "unused in the lookback".to_string();
        let keys = |user: &str| state_of(export, IdentityKind::User, user).access_keys;
        let mut identities = Vec::new();
        let create = |name: &str, actions: &[&str]| Change::CreatePolicy {
            policy_name: name.into(),
            path: "/grantwatch/".into(),
            policy_arn: self.policy_arn(&format!("grantwatch/{name}")),
            document: doc(actions),
            description: "what it used".into(),
        };
        let attach = |name: &str| Change::AttachPolicy { policy_arn: self.policy_arn(&format!("grantwatch/{name}")) };
        let detach_wide = Change::DetachPolicy { policy_arn: self.policy_arn(WIDE), why: why() };
        identities.push(self.identity(
            export,
            IdentityKind::User,
            "alice",
            vec![
                create("alice-keep", &["s3:GetObject"]),
                attach("alice-keep"),
                detach_wide.clone(),
                Change::DeleteInlinePolicy { policy_name: "s3-all".into(), document: doc(&["s3:*"]), why: why() },
                Change::RemoveFromGroup { group: "devs".into(), why: why() },
                Change::DeactivateAccessKey { access_key_id: keys("alice")[1].access_key_id.clone(), why: why() },
            ],
        ));
        identities.push(self.identity(
            export,
            IdentityKind::User,
            "bob",
            vec![
                create("bob-keep", &["sqs:SendMessage"]),
                attach("bob-keep"),
                detach_wide.clone(),
                Change::DeactivateAccessKey { access_key_id: keys("bob")[0].access_key_id.clone(), why: why() },
            ],
        ));
        identities.push(self.identity(
            export,
            IdentityKind::Role,
            "deploy",
            vec![
                create("deploy-keep", &["ec2:DescribeInstances"]),
                attach("deploy-keep"),
                detach_wide,
                Change::DeleteInlinePolicy { policy_name: "ec2".into(), document: doc(&["ec2:*"]), why: why() },
            ],
        ));
        plan(identities)
    }

    fn identity(&self, export: &Value, kind: IdentityKind, name: &str, changes: Vec<Change>) -> IdentityPlan {
        let k = if kind == IdentityKind::Role { "role" } else { "user" };
        identity_plan(&self.arn(k, name), &self.account.id, kind, name, state_of(export, kind, name), changes)
    }

    fn write_plan(&self, plan: &RemediationPlan) -> PathBuf {
        let dir = self.path("plan");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("plan.json"), serde_json::to_vec_pretty(plan).unwrap()).unwrap();
        dir.join("plan.json")
    }
}

const GW_FAULT: &str = "GRANTWATCH_FAULT_APPLY_AFTER_CALLS";
/// The plan's changes: 6 for alice, 4 for bob, 4 for deploy.
const PLAN_CALLS: usize = 14;

fn identity_plan(
    arn: &str,
    account: &str,
    kind: IdentityKind,
    name: &str,
    before: IdentityIamState,
    changes: Vec<Change>,
) -> IdentityPlan {
    IdentityPlan {
        arn: arn.into(),
        account: account.into(),
        kind,
        name: name.into(),
        reason: PlanReason::OverProvisioned,
        last_activity: None,
        granted_before: 100,
        granted_after: 1,
        used: 1,
        pci_before: 90,
        pci_after: 0,
        before,
        changes,
        removed: Vec::new(),
        kept: Vec::new(),
        proposals: Vec::new(),
    }
}

fn plan(identities: Vec<IdentityPlan>) -> RemediationPlan {
    RemediationPlan {
        schema: PLAN_SCHEMA.into(),
        generated_by: "remediate_apply.rs".into(),
        as_of: EventTime(1_700_000_000_000),
        lookback_days: 90,
        window_start: EventTime(1_700_000_000_000 - 90 * 86_400_000),
        scope: PlanScope::All,
        replay: ReplayProof::default(),
        accounts: Vec::new(),
        identities,
        skipped: Vec::new(),
    }
}

/// An identity's state in an export, as a plan's `before` holds it.
fn state_of(export: &Value, kind: IdentityKind, name: &str) -> IdentityIamState {
    let (list, name_key, inline_key) = match kind {
        IdentityKind::Role => ("RoleDetailList", "RoleName", "RolePolicyList"),
        IdentityKind::Group => ("GroupDetailList", "GroupName", "GroupPolicyList"),
        _ => ("UserDetailList", "UserName", "UserPolicyList"),
    };
    let e = export[list].as_array().unwrap().iter().find(|e| e[name_key] == name).unwrap();
    let mut s = IdentityIamState {
        managed_policies: e["AttachedManagedPolicies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["PolicyArn"].as_str().unwrap().to_string())
            .collect(),
        inline_policies: e[inline_key]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| NamedDocument {
                name: p["PolicyName"].as_str().unwrap().into(),
                document: p["PolicyDocument"].clone(),
            })
            .collect(),
        groups: e
            .get("GroupList")
            .and_then(Value::as_array)
            .map_or(Vec::new(), |g| g.iter().map(|g| g.as_str().unwrap().to_string()).collect()),
        access_keys: export["AccessKeyMetadata"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| kind == IdentityKind::User && k["UserName"] == name)
            .map(|k| AccessKeyState {
                access_key_id: k["AccessKeyId"].as_str().unwrap().into(),
                status: k["Status"].as_str().unwrap().into(),
            })
            .collect(),
    };
    s.managed_policies.sort();
    s.inline_policies.sort_by(|a, b| a.name.cmp(&b.name));
    s.groups.sort();
    s.access_keys.sort_by(|a, b| a.access_key_id.cmp(&b.access_key_id));
    s
}

/// Every array sorted (by its elements' JSON), recursively: exports compare regardless of the order
/// IAM lists things in.
fn canonical(v: &Value) -> Value {
    match v {
        Value::Array(items) => {
            let mut items: Vec<Value> = items.iter().map(canonical).collect();
            items.sort_by_key(Value::to_string);
            Value::Array(items)
        }
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), canonical(v))).collect()),
        other => other.clone(),
    }
}

/// The export without the managed policies whose ARN contains `skip`.
fn without_policies(export: &Value, skip: &str) -> Value {
    let mut e = export.clone();
    e["Policies"].as_array_mut().unwrap().retain(|p| !p["Arn"].as_str().unwrap().contains(skip));
    canonical(&e)
}

/// What the account must look like after the plan, whatever the path (uninterrupted, resumed).
fn assert_applied(f: &Fixture, export: &Value, original: &Value) {
    let alice = state_of(export, IdentityKind::User, "alice");
    let orig_alice = state_of(original, IdentityKind::User, "alice");
    assert_eq!(alice.managed_policies, vec![f.policy_arn("grantwatch/alice-keep")]);
    assert!(alice.inline_policies.is_empty());
    assert!(alice.groups.is_empty());
    assert_eq!(alice.access_keys[0], orig_alice.access_keys[0], "the first key is kept active");
    assert_eq!(
        (alice.access_keys[1].access_key_id.as_str(), alice.access_keys[1].status.as_str()),
        (orig_alice.access_keys[1].access_key_id.as_str(), "Inactive")
    );
    let bob = state_of(export, IdentityKind::User, "bob");
    assert_eq!(bob.managed_policies, vec![f.policy_arn("grantwatch/bob-keep")]);
    assert_eq!(bob.inline_policies, state_of(original, IdentityKind::User, "bob").inline_policies);
    assert_eq!(bob.access_keys[0].status, "Inactive");
    let deploy = state_of(export, IdentityKind::Role, "deploy");
    assert_eq!(deploy.managed_policies, vec![f.policy_arn("grantwatch/deploy-keep")]);
    assert!(deploy.inline_policies.is_empty());
    // The role's trust policy and the group are untouched.
    let role = |e: &Value| {
        e["RoleDetailList"].as_array().unwrap().iter().find(|r| r["RoleName"] == "deploy").unwrap()["AssumeRolePolicyDocument"].clone()
    };
    assert_eq!(role(export), role(original));
    assert_eq!(state_of(export, IdentityKind::Group, "devs"), state_of(original, IdentityKind::Group, "devs"));
    // The created policies hold the plan's documents, at v1.
    for (name, actions) in
        [("alice-keep", "s3:GetObject"), ("bob-keep", "sqs:SendMessage"), ("deploy-keep", "ec2:DescribeInstances")]
    {
        let p = export["Policies"].as_array().unwrap().iter().find(|p| p["PolicyName"] == name).unwrap();
        assert_eq!(p["DefaultVersionId"], "v1");
        assert_eq!(p["PolicyVersionList"][0]["Document"], doc(&[actions]), "{name}");
    }
    // The wide policy is attached to nothing any more.
    let wide = export["Policies"].as_array().unwrap().iter().find(|p| p["PolicyName"] == WIDE).unwrap();
    assert_eq!(wide["AttachmentCount"], 0);
}

fn journal_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Every journal line valid against `schemas/remediation_journal.v1.json`.
fn validate_journal(path: &Path) {
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("schemas/remediation_journal.v1.json")).unwrap())
            .unwrap();
    let v = jsonschema::validator_for(&schema).unwrap();
    for (i, line) in journal_lines(path).iter().enumerate() {
        let errors: Vec<String> = v.iter_errors(line).map(|e| format!("{e} at {}", e.instance_path)).collect();
        assert!(errors.is_empty(), "journal line {}: {errors:?}\n{line}", i + 1);
    }
}

fn last_run_finished(path: &Path) -> Value {
    journal_lines(path).into_iter().rev().find(|l| l["entry"] == "run_finished").unwrap()
}

#[test]
fn export_has_the_cli_shape_and_the_iam_parser_reads_it() {
    let mut f = Fixture::new();
    f.build_account();
    let export = f.export();
    assert_eq!(export["Account"], f.account.id.as_str());
    let alice = export["UserDetailList"].as_array().unwrap().iter().find(|u| u["UserName"] == "alice").unwrap();
    // Documents URL-decoded into objects, as `aws iam get-account-authorization-details` prints them.
    assert_eq!(alice["UserPolicyList"][0]["PolicyDocument"], doc(&["s3:*"]));
    assert_eq!(alice["GroupList"], json!(["devs"]));
    assert_eq!(alice["AttachedManagedPolicies"], json!([{"PolicyName": WIDE, "PolicyArn": f.policy_arn(WIDE)}]));
    let role = export["RoleDetailList"].as_array().unwrap().iter().find(|r| r["RoleName"] == "deploy").unwrap();
    assert_eq!(role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]["Service"], "ec2.amazonaws.com");
    let wide = export["Policies"].as_array().unwrap().iter().find(|p| p["PolicyName"] == WIDE).unwrap();
    assert_eq!(wide["PolicyVersionList"][0]["Document"], doc(&["s3:*", "ec2:*", "sqs:*"]));
    assert_eq!(wide["PolicyVersionList"][0]["IsDefaultVersion"], true);
    assert_eq!(wide["AttachmentCount"], 3);

    let bytes = std::fs::read(f.path("export.json")).unwrap();
    let parsed = grantwatch_core::iam::parse_iam_json(&bytes, "export.json").unwrap();
    assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
    assert_eq!(parsed.users.len(), 2);
    assert_eq!(parsed.groups.len(), 1);
    assert_eq!(parsed.roles.len(), 1);
    let u = parsed.users.iter().find(|u| u.name == "alice").unwrap();
    assert_eq!(
        (u.account.as_str(), u.inline.len(), u.attached.len(), u.groups.len()),
        (f.account.id.as_str(), 1, 1, 1)
    );
    let r = &parsed.roles[0];
    assert!(
        r.trust_policy.as_ref().unwrap().statements[0]
            .principal
            .as_ref()
            .unwrap()
            .service
            .contains(&"ec2.amazonaws.com".to_string())
    );
    assert!(
        parsed.policies.iter().any(|p| p.name == WIDE && p.document.as_ref().unwrap().statements[0].actions.len() == 3)
    );
    // The access keys, tied to the account by the file's `Account`, resolve to their users.
    let mut snapshot = grantwatch_core::iam::IamSnapshot::new();
    snapshot.merge(parsed);
    let (keys, warnings) = snapshot.resolve_access_keys();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(keys.iter().map(Vec::len).sum::<usize>(), 3);
}

#[test]
fn dry_run_apply_rerun_and_rollback_restore_the_account() {
    let mut f = Fixture::new();
    f.build_account();
    let original = f.export();
    let plan = f.plan(&original);
    let plan_path = f.write_plan(&plan);
    let journal = f.path("journal.jsonl");

    // Dry run: every call, one line each, and nothing changes (not even the journal).
    let out = f.apply(&plan_path, &journal, false, &[]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.matches("would call: ").count(), PLAN_CALLS, "{text}");
    let id = f.account.id.clone();
    assert!(text.contains(&format!("would call: {id} DetachUserPolicy user/alice policy={}", f.policy_arn(WIDE))));
    assert!(text.contains(&format!("would call: {id} RemoveUserFromGroup user/alice group=devs")));
    assert!(text.contains(&format!("would call: {id} DeleteRolePolicy role/deploy inline=ec2")));
    assert!(text.contains("CreatePolicy") && text.contains("document=[1 statement, 1 action,"), "{text}");
    assert!(!journal.exists(), "a dry run writes no journal");
    assert_eq!(canonical(&f.export()), canonical(&original), "a dry run changes nothing");

    // Apply.
    let out = f.apply(plan_path.parent().unwrap(), &journal, true, &[]);
    assert!(out.status.success());
    let applied = f.export();
    assert_applied(&f, &applied, &original);
    validate_journal(&journal);
    let lines = journal_lines(&journal);
    let begun: Vec<&Value> = lines.iter().filter(|l| l["entry"] == "begun").collect();
    assert_eq!(begun.len(), PLAN_CALLS);
    let ops: Vec<&str> = begun.iter().map(|l| l["operation"].as_str().unwrap()).collect();
    assert_eq!(
        ops[..6],
        [
            "CreatePolicy",
            "AttachUserPolicy",
            "DetachUserPolicy",
            "DeleteUserPolicy",
            "RemoveUserFromGroup",
            "UpdateAccessKey"
        ]
    );
    // Each step: begun (with what it replaces), then done with the AWS request id.
    let delete = begun.iter().find(|l| l["operation"] == "DeleteUserPolicy").unwrap();
    assert_eq!(delete["prior"]["document"], doc(&["s3:*"]));
    let detach = begun.iter().find(|l| l["operation"] == "DetachRolePolicy").unwrap();
    assert_eq!(detach["prior"]["attached"], true);
    let dones: Vec<&Value> = lines.iter().filter(|l| l["entry"] == "done").collect();
    assert_eq!(dones.len(), PLAN_CALLS);
    assert!(dones.iter().all(|d| d["outcome"] == "done" && !d["request_ids"][0].as_str().unwrap().is_empty()));
    assert!(dones.iter().any(|d| d["version_id"] == "v1"));
    let finished = last_run_finished(&journal);
    assert_eq!(
        (finished["outcome"].as_str(), finished["calls"].as_u64()),
        (Some("completed"), Some(PLAN_CALLS as u64))
    );

    // Again: no call, and the journal says so.
    let out = f.apply(&plan_path, &journal, true, &[]);
    assert!(out.status.success());
    assert!(String::from_utf8(out.stdout).unwrap().contains("made 0 call(s); 14 step(s) already done"));
    let finished = last_run_finished(&journal);
    assert_eq!((finished["calls"].as_u64(), finished["already_done"].as_u64()), (Some(0), Some(PLAN_CALLS as u64)));
    assert_eq!(journal_lines(&journal).iter().filter(|l| l["entry"] == "begun").count(), PLAN_CALLS);
    assert_eq!(canonical(&f.export()), canonical(&applied));

    // Rollback: dry run first (nothing changes), then for real.
    let out = f.rollback(&journal, false);
    assert!(out.status.success());
    assert!(String::from_utf8(out.stdout).unwrap().contains("would call: "));
    assert_eq!(canonical(&f.export()), canonical(&applied));
    let out = f.rollback(&journal, true);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(&format!("policy re-attached: {}", f.policy_arn(WIDE))), "{text}");
    assert!(text.contains("inline policy restored: s3-all") && text.contains("inline policy restored: ec2"), "{text}");
    assert!(text.contains("back in group: devs"), "{text}");
    assert!(text.contains(": Active again"), "{text}");
    let restored = f.export();
    assert_eq!(without_policies(&restored, "/grantwatch/"), without_policies(&original, "/grantwatch/"));
    assert!(
        !restored["Policies"].as_array().unwrap().iter().any(|p| p["Path"] == "/grantwatch/"),
        "created policies deleted"
    );
    validate_journal(&journal);
    assert!(journal_lines(&journal).iter().filter(|l| l["entry"] == "undone").count() == PLAN_CALLS);
    // A rolled-back journal is not applied again.
    let out = f.apply(&plan_path, &journal, true, &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("rollback undid"));
    f.assert_no_secret(&journal);
}

#[test]
fn a_crashed_apply_resumes_to_the_uninterrupted_state_and_rolls_back() {
    let mut f = Fixture::new();
    f.build_account();
    let original = f.export();
    let plan_path = f.write_plan(&f.plan(&original));
    let journal = f.path("journal.jsonl");
    // Killed three times: after the 3rd call (alice's detach), 3 calls later (bob's create), and
    // 5 calls later (deploy's detach), each time after the call and before its outcome is journaled.
    for n in ["3", "3", "5"] {
        let out = f.apply(&plan_path, &journal, true, &[(GW_FAULT, n)]);
        assert!(!out.status.success(), "the fault hook aborts the process");
        let lines = journal_lines(&journal);
        assert!(lines.last().unwrap()["entry"] == "begun", "the last call's outcome is not journaled");
    }
    let out = f.apply(&plan_path, &journal, true, &[]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("completed (found in effect)"), "{text}");
    let applied = f.export();
    assert_applied(&f, &applied, &original);
    validate_journal(&journal);
    // Every change made once: each interrupted one was found in effect by the next run, not made
    // again (3 + 3 + 5 calls in the killed runs, the last 3 in the run that finished).
    let lines = journal_lines(&journal);
    assert_eq!(lines.iter().filter(|l| l["entry"] == "begun").count(), PLAN_CALLS);
    assert_eq!(lines.iter().filter(|l| l["entry"] == "done").count(), PLAN_CALLS);
    assert!(lines.iter().filter(|l| l["entry"] == "done").all(|l| l["outcome"] == "done"));
    let found = lines.iter().filter(|l| l["entry"] == "done" && l.get("request_ids").is_none()).count();
    assert_eq!(found, 3, "three steps completed by finding them in effect");
    let finished: Vec<&Value> = lines.iter().filter(|l| l["entry"] == "run_finished").collect();
    assert_eq!(finished.len(), 1, "killed runs have no end line");
    assert_eq!((finished[0]["calls"].as_u64(), finished[0]["already_done"].as_u64()), (Some(3), Some(11)));

    // A crashed rollback resumes too.
    let endpoint = f.account.endpoint.clone();
    let args = ["remediate", "rollback", "--journal", journal.to_str().unwrap(), "--endpoint-url", &endpoint, "--yes"];
    let out = f.run(&args, &[(GW_FAULT, "4")]);
    assert!(!out.status.success());
    let out = f.rollback(&journal, true);
    assert!(out.status.success());
    assert_eq!(without_policies(&f.export(), "/grantwatch/"), without_policies(&original, "/grantwatch/"));
    validate_journal(&journal);
    f.assert_no_secret(&journal);
}

#[test]
fn drift_since_the_export_refuses_with_no_call() {
    let mut f = Fixture::new();
    f.build_account();
    let original = f.export();
    let plan_path = f.write_plan(&f.plan(&original));
    // Someone changes bob and the role after the snapshot.
    let iam = f.account.iam();
    block_on(async {
        iam.put_user_policy()
            .user_name("bob")
            .policy_name("sqs")
            .policy_document(doc(&["sqs:*", "sns:*"]).to_string())
            .send()
            .await
            .unwrap();
        iam.attach_role_policy().role_name("deploy").policy_arn(f.policy_arn("ops")).send().await.unwrap();
    });
    let drifted = f.export();
    let journal = f.path("journal.jsonl");
    for yes in [false, true] {
        let out = f.apply(&plan_path, &journal, yes, &[]);
        assert_eq!(out.status.code(), Some(4), "refused");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains(&format!("{}: inline policy sqs: its document changed", f.arn("user", "bob"))), "{text}");
        assert!(
            text.contains(&format!("{}: managed policy {} is attached", f.arn("role", "deploy"), f.policy_arn("ops"))),
            "{text}"
        );
        assert!(!text.contains("called:") && !text.contains("would call:"), "{text}");
    }
    assert_eq!(canonical(&f.export()), canonical(&drifted), "no call was made");
    validate_journal(&journal);
    let lines = journal_lines(&journal);
    assert!(!lines.iter().any(|l| l["entry"] == "begun"));
    let refused = lines.iter().find(|l| l["entry"] == "refused").unwrap();
    assert_eq!(refused["drift"].as_array().unwrap().len(), 2);
}

#[test]
fn attach_and_detach_round_trip_through_rollback() {
    let mut f = Fixture::new();
    f.build_account();
    let original = f.export();
    let journal = f.path("journal.jsonl");
    let endpoint = f.account.endpoint.clone();
    let j = journal.to_str().unwrap().to_string();
    let (deploy, devs, alice) = (f.arn("role", "deploy"), f.arn("group", "devs"), f.arn("user", "alice"));
    let (ops, wide) = (f.policy_arn("ops"), f.policy_arn(WIDE));
    let cmd = |verb: &'static str, who: &str, what: &str, yes: bool| {
        let mut v: Vec<String> =
            ["iam", verb, "--identity", who, "--policy", what, "--journal", &j, "--endpoint-url", &endpoint]
                .iter()
                .map(|s| s.to_string())
                .collect();
        if yes {
            v.push("--yes".into());
        }
        v
    };
    let run = |f: &mut Fixture, args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        f.ok(&refs)
    };
    let text = run(&mut f, cmd("attach", &deploy, &ops, false));
    assert!(
        text.contains(&format!("would call: {} AttachRolePolicy role/deploy policy={ops}", f.account.id)),
        "{text}"
    );
    assert_eq!(canonical(&f.export()), canonical(&original));
    run(&mut f, cmd("attach", &deploy, &ops, true));
    run(&mut f, cmd("detach", &alice, &wide, true));
    run(&mut f, cmd("attach", &devs, &wide, true));
    let text = run(&mut f, cmd("attach", &devs, &wide, true));
    assert!(text.contains("is already attached: nothing to do"), "{text}");
    let changed = f.export();
    assert!(state_of(&changed, IdentityKind::Role, "deploy").managed_policies.contains(&ops));
    assert!(state_of(&changed, IdentityKind::User, "alice").managed_policies.is_empty());
    assert!(state_of(&changed, IdentityKind::Group, "devs").managed_policies.contains(&wide));
    // Another account's identity is refused.
    let other = cmd("attach", "arn:aws:iam::999999999999:role/x", &ops, true);
    let refs: Vec<&str> = other.iter().map(String::as_str).collect();
    let out = f.run(&refs, &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("account 999999999999"));

    let out = f.rollback(&journal, true);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(&format!("policy re-attached: {wide}")), "{text}");
    assert_eq!(canonical(&f.export()), canonical(&original));
    validate_journal(&journal);
    f.assert_no_secret(&journal);
}

#[test]
fn a_plan_of_two_accounts_is_applied_one_account_at_a_time() {
    let mut f = Fixture::new();
    let mut g = Fixture::new();
    f.build_account();
    g.build_account();
    let export_f = f.export();
    let export_g = g.export();
    let mut p = f.plan(&export_f);
    let pg = g.plan(&export_g);
    p.identities.push(pg.identities[2].clone()); // g's deploy role
    let plan_path = f.write_plan(&p);
    let journal = f.path("journal.jsonl");

    let out = f.apply(&plan_path, &journal, true, &[]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(&format!("1 identities of account(s) {} (1)", g.account.id)), "{text}");
    let applied = f.export();
    assert_applied(&f, &applied, &export_f);
    // The other account is untouched until a run with its credentials.
    assert_eq!(canonical(&g.export()), canonical(&export_g));
    let endpoint = g.account.endpoint.clone();
    let args = [
        "remediate",
        "apply",
        "--plan",
        plan_path.to_str().unwrap(),
        "--journal",
        journal.to_str().unwrap(),
        "--endpoint-url",
        &endpoint,
        "--yes",
    ];
    // `--account` must be the credentials' account.
    let mut wrong = args.to_vec();
    wrong.extend(["--account", &f.account.id]);
    let out = g.run(&wrong, &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("the credentials act in account"));
    let out = g.run(&args, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let deploy_g = state_of(&g.export(), IdentityKind::Role, "deploy");
    assert_eq!(deploy_g.managed_policies, vec![g.policy_arn("grantwatch/deploy-keep")]);
    assert!(
        state_of(&g.export(), IdentityKind::User, "alice").managed_policies.contains(&g.policy_arn(WIDE)),
        "only the plan's identities"
    );

    // Rollback, one account at a time as well.
    let out = f.rollback(&journal, true);
    assert!(out.status.success());
    assert!(String::from_utf8(out.stdout).unwrap().contains(&format!("{} (4 steps)", g.account.id)));
    assert_eq!(without_policies(&f.export(), "/grantwatch/"), without_policies(&export_f, "/grantwatch/"));
    let rb = ["remediate", "rollback", "--journal", journal.to_str().unwrap(), "--endpoint-url", &endpoint, "--yes"];
    assert!(g.run(&rb, &[]).status.success());
    assert_eq!(without_policies(&g.export(), "/grantwatch/"), without_policies(&export_g, "/grantwatch/"));
    validate_journal(&journal);
}

// ---------------------------------------------------------------------------------------------------
// Permission sets: moto's SSO Admin has every operation used but DescribePermissionSetProvisioningStatus,
// and answers ProvisionPermissionSet SUCCEEDED at once. The test goes through a proxy that forwards
// everything to moto but answers ProvisionPermissionSet IN_PROGRESS (after forwarding it, so moto
// provisions) and DescribePermissionSetProvisioningStatus from a recorded answer, so that the wait
// for an asynchronous provisioning is exercised too.
// ---------------------------------------------------------------------------------------------------

const SSO_TARGET: &str = "SWBExternalService.";

#[derive(Default)]
struct ProxyState {
    /// The SSO Admin operations received, in order.
    sso_ops: Vec<String>,
    errors: Vec<String>,
}

struct SsoProxy {
    url: String,
    state: Arc<Mutex<ProxyState>>,
}

impl SsoProxy {
    fn start(upstream: &str) -> SsoProxy {
        let state = Arc::new(Mutex::new(ProxyState::default()));
        let shared = state.clone();
        let upstream = upstream.trim_start_matches("http://").to_string();
        let url = serve(move |conn| {
            if let Err(e) = proxy(conn, &upstream, &shared) {
                shared.lock().unwrap().errors.push(e.to_string());
            }
        });
        SsoProxy { url, state }
    }

    fn sso_ops(&self) -> Vec<String> {
        let s = self.state.lock().unwrap();
        assert!(s.errors.is_empty(), "the proxy failed: {:?}", s.errors);
        s.sso_ops.clone()
    }
}

fn proxy(conn: TcpStream, upstream: &str, state: &Mutex<ProxyState>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut conn = conn;
    // One request per connection: every answer says `Connection: close`.
    if let Some((request_line, headers, body)) = read_message(&mut reader)? {
        let target = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("x-amz-target")).map(|(_, v)| v.clone());
        let op = target.as_deref().and_then(|t| t.strip_prefix(SSO_TARGET)).map(str::to_string);
        if let Some(op) = &op {
            state.lock().unwrap().sso_ops.push(op.clone());
        }
        if op.as_deref() == Some("DescribePermissionSetProvisioningStatus") {
            let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let answer = json!({"PermissionSetProvisioningStatus": {
                "Status": "SUCCEEDED", "RequestId": req["ProvisionPermissionSetRequestId"], "CreatedDate": 1.7e9}});
            let h = vec![
                ("Content-Type".to_string(), "application/x-amz-json-1.1".to_string()),
                ("x-amzn-RequestId".to_string(), "recorded-1".to_string()),
            ];
            return respond(&mut conn, "200 OK", &h, answer.to_string().as_bytes());
        }
        // Forward to moto, one connection per request.
        let mut up = TcpStream::connect(upstream)?;
        write!(up, "{request_line}\r\n")?;
        for (k, v) in &headers {
            if !k.eq_ignore_ascii_case("connection") {
                write!(up, "{k}: {v}\r\n")?;
            }
        }
        write!(up, "Connection: close\r\n\r\n")?;
        up.write_all(&body)?;
        up.flush()?;
        let mut up_reader = BufReader::new(up);
        let Some((status_line, up_headers, mut up_body)) = read_message(&mut up_reader)? else {
            return Err(std::io::Error::other("moto closed the connection"));
        };
        let status = status_line.split_once(' ').map_or("500 Internal Server Error", |(_, s)| s).to_string();
        if op.as_deref() == Some("ProvisionPermissionSet") {
            let mut v: Value = serde_json::from_slice(&up_body).unwrap_or(Value::Null);
            v["PermissionSetProvisioningStatus"]["Status"] = "IN_PROGRESS".into();
            up_body = v.to_string().into_bytes();
        }
        respond(&mut conn, &status, &up_headers, &up_body)?;
    }
    Ok(())
}

#[test]
fn a_permission_set_is_updated_provisioned_and_restored() {
    let mut f = Fixture::new();
    let ro = "arn:aws:iam::aws:policy/ReadOnlyAccess";
    let pu = "arn:aws:iam::aws:policy/PowerUserAccess";
    let sso = f.account.sso();
    let inline_before = doc(&["s3:*", "ec2:*"]);
    let (instance, ps) = block_on(async {
        let instances = sso.list_instances().send().await.unwrap();
        let instance = instances.instances()[0].instance_arn().unwrap().to_string();
        let ps = sso
            .create_permission_set()
            .instance_arn(&instance)
            .name("Dev")
            // moto's default is the number 3600, which the SDK refuses: AWS answers an ISO 8601 duration.
            .session_duration("PT1H")
            .send()
            .await
            .unwrap();
        let ps = ps.permission_set().unwrap().permission_set_arn().unwrap().to_string();
        sso.put_inline_policy_to_permission_set()
            .instance_arn(&instance)
            .permission_set_arn(&ps)
            .inline_policy(inline_before.to_string())
            .send()
            .await
            .unwrap();
        for p in [ro, pu] {
            sso.attach_managed_policy_to_permission_set()
                .instance_arn(&instance)
                .permission_set_arn(&ps)
                .managed_policy_arn(p)
                .send()
                .await
                .unwrap();
        }
        (instance, ps)
    });
    let read = || {
        block_on(async {
            let inline = sso
                .get_inline_policy_for_permission_set()
                .instance_arn(&instance)
                .permission_set_arn(&ps)
                .send()
                .await
                .unwrap();
            let managed = sso
                .list_managed_policies_in_permission_set()
                .instance_arn(&instance)
                .permission_set_arn(&ps)
                .send()
                .await
                .unwrap();
            let mut m: Vec<String> =
                managed.attached_managed_policies().iter().map(|p| p.arn().unwrap().to_string()).collect();
            m.sort();
            (serde_json::from_str::<Value>(inline.inline_policy().unwrap()).unwrap(), m)
        })
    };
    // The role Identity Center made in the account (moto does not make it: the test does).
    let role = "AWSReservedSSO_Dev_0123456789abcdef";
    let iam = f.account.iam();
    block_on(async {
        let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
            "Principal": {"Federated": format!("arn:aws:iam::{}:saml-provider/AWSSSO_x_DO_NOT_DELETE", f.account.id)},
            "Action": ["sts:AssumeRoleWithSAML", "sts:TagSession"]}]});
        iam.create_role()
            .role_name(role)
            .path("/aws-reserved/sso.amazonaws.com/")
            .assume_role_policy_document(trust.to_string())
            .send()
            .await
            .unwrap();
    });
    let export = f.export();
    let arn = format!("arn:aws:iam::{}:role/aws-reserved/sso.amazonaws.com/{role}", f.account.id);
    let inline_after = doc(&["s3:GetObject"]);
    let p = plan(vec![identity_plan(
        &arn,
        &f.account.id,
        IdentityKind::Role,
        role,
        state_of(&export, IdentityKind::Role, role),
        vec![Change::UpdatePermissionSet {
            permission_set_name: "Dev".into(),
            inline_policy: inline_after.clone(),
            detach_managed: vec![pu.into()],
            why: "unused".into(),
        }],
    )]);
    let plan_path = f.write_plan(&p);
    let journal = f.path("journal.jsonl");
    let proxy = SsoProxy::start(&f.account.endpoint);
    let args = |yes: bool, cmd: &str| -> Vec<String> {
        let mut v: Vec<String> = match cmd {
            "apply" => vec!["remediate".into(), "apply".into(), "--plan".into(), plan_path.to_str().unwrap().into()],
            _ => vec!["remediate".into(), "rollback".into()],
        };
        v.extend(["--journal".into(), journal.to_str().unwrap().into(), "--endpoint-url".into(), proxy.url.clone()]);
        if yes {
            v.push("--yes".into());
        }
        v
    };
    let run = |f: &mut Fixture, a: Vec<String>| {
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        f.ok(&refs)
    };
    let text = run(&mut f, args(false, "apply"));
    assert!(
        text.contains("would call: ") && text.contains("PutInlinePolicyToPermissionSet permission-set=Dev"),
        "{text}"
    );
    assert_eq!(read(), (inline_before.clone(), vec![pu.to_string(), ro.to_string()]), "a dry run changes nothing");
    run(&mut f, args(true, "apply"));
    assert_eq!(read(), (inline_after, vec![ro.to_string()]));
    let ops = proxy.sso_ops();
    let tail: Vec<&str> =
        ops.iter().map(String::as_str).skip_while(|o| *o != "PutInlinePolicyToPermissionSet").collect();
    assert_eq!(
        tail,
        [
            "PutInlinePolicyToPermissionSet",
            "DetachManagedPolicyFromPermissionSet",
            "ProvisionPermissionSet",
            "DescribePermissionSetProvisioningStatus"
        ]
    );
    let begun = journal_lines(&journal).into_iter().find(|l| l["entry"] == "begun").unwrap();
    assert_eq!(begun["prior"]["permission_set"]["inline_policy"], inline_before);
    assert_eq!(begun["prior"]["permission_set"]["managed_policies"], json!([pu, ro]));

    let text = run(&mut f, args(true, "rollback"));
    assert!(
        text.contains("permission set Dev: prior inline policy restored, 1 managed policy(ies) re-attached"),
        "{text}"
    );
    assert_eq!(read(), (inline_before, vec![pu.to_string(), ro.to_string()]));
    let provisioned = block_on(
        sso.list_accounts_for_provisioned_permission_set().instance_arn(&instance).permission_set_arn(&ps).send(),
    )
    .unwrap();
    assert_eq!(provisioned.account_ids(), [f.account.id.clone()]);
    validate_journal(&journal);
}
