#![allow(clippy::unwrap_used)]

use grantwatch_state::SeenSpan;
use grantwatch_types::{Change, EventTime, PlanScope};
use serde_json::json;

use super::*;
use crate::findings::FindingsConfig;
use crate::iam::{IamSnapshot, parse_iam_json};
use crate::policy::evaluate;

const ACCOUNT: &str = "111122223333";
const DAY: i64 = 86_400_000;

fn as_of() -> EventTime {
    EventTime::parse_rfc3339("2024-06-30T00:00:00Z").unwrap()
}

fn snapshot(doc: serde_json::Value) -> IamSnapshot {
    let mut s = IamSnapshot::default();
    s.merge(parse_iam_json(doc.to_string().as_bytes(), "test.json").unwrap());
    s
}

fn old() -> &'static str {
    "2023-01-01T00:00:00Z"
}

/// Usage: these actions used `days_ago` days before `as_of`.
fn usage(actions: &[(&str, i64)]) -> IdentityUsage {
    let mut u = IdentityUsage::default();
    for (a, days_ago) in actions {
        let t = as_of().millis() - days_ago * DAY;
        u.actions.push((a.to_string(), SeenSpan::at(t)));
        u.activity = Some(u.activity.map_or(SeenSpan::at(t), |s| s.widen(SeenSpan::at(t))));
    }
    u
}

struct Fixture {
    catalog: Catalog,
    cfg: FindingsConfig,
    snapshot: IamSnapshot,
}

impl Fixture {
    fn new(doc: serde_json::Value) -> Fixture {
        Fixture { catalog: Catalog::aws().unwrap(), cfg: FindingsConfig::new(as_of()), snapshot: snapshot(doc) }
    }

    fn plan(&self, arn: &str, u: &IdentityUsage, scope: PlanScope) -> Outcome {
        let opts = PlanOptions { scope, only: Vec::new(), exclude: Vec::new() };
        let grants = evaluate(&self.snapshot, &self.catalog);
        let mut cx = PlanCx::new(&self.catalog, &self.cfg, &opts, &self.snapshot);
        for g in &grants {
            cx.note_usage(g, u);
        }
        let g = grants.iter().find(|g| g.arn == arn).unwrap();
        cx.plan(g, u)
    }

    /// The plan of `arn`, completed with its `after` grants.
    fn planned(&self, arn: &str, u: &IdentityUsage) -> Planned {
        let mut p = match self.plan(arn, u, PlanScope::All) {
            Outcome::Planned(p) => *p,
            other => panic!("expected a plan, got {other:?}"),
        };
        let grants = evaluate(&self.snapshot, &self.catalog);
        let before = grants.iter().find(|g| g.arn == arn).unwrap();
        let after = self.after_grants(&p);
        complete(&self.catalog, &self.cfg, &mut p.plan, before, &after, u);
        p
    }

    /// The `after` snapshot's grants of `arn`, read back from its authorization-details JSON (the
    /// file `remediate plan` writes), so the writer is checked too.
    fn after_grants(&self, p: &Planned) -> IdentityGrants {
        let after = apply_edits(&self.snapshot, &[&p.edit]);
        let reread = snapshot(after.authorization_details(ACCOUNT));
        evaluate(&reread, &self.catalog).into_iter().find(|g| g.arn == p.plan.arn).unwrap()
    }

    fn has(&self, g: &IdentityGrants, action: &str) -> bool {
        g.granted.contains(self.catalog.lookup(action).unwrap())
    }
}

fn user_account() -> serde_json::Value {
    json!({
        "UserDetailList": [{
            "UserName": "alice", "Path": "/", "Arn": format!("arn:aws:iam::{ACCOUNT}:user/alice"), "CreateDate": old(),
            "GroupList": ["ops"],
            "UserPolicyList": [{"PolicyName": "s3-work", "PolicyDocument": {"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                 "Resource": "arn:aws:s3:::reports/*", "Condition": {"Bool": {"aws:SecureTransport": "true"}}},
                {"Effect": "Deny", "Action": "s3:DeleteBucket", "Resource": "*"}
            ]}}],
            "AttachedManagedPolicies": [{"PolicyName": "ReadOnlyAccess", "PolicyArn": "arn:aws:iam::aws:policy/ReadOnlyAccess"}]
        }],
        "GroupDetailList": [{
            "GroupName": "ops", "Path": "/", "Arn": format!("arn:aws:iam::{ACCOUNT}:group/ops"), "CreateDate": old(),
            "GroupPolicyList": [{"PolicyName": "ec2", "PolicyDocument": {"Statement": [
                {"Effect": "Allow", "Action": "ec2:*", "Resource": "*"}]}}],
            "AttachedManagedPolicies": []
        }],
        "RoleDetailList": [
            {"RoleName": "AWSServiceRoleForSupport", "Path": "/aws-service-role/support.amazonaws.com/",
             "Arn": format!("arn:aws:iam::{ACCOUNT}:role/aws-service-role/support.amazonaws.com/AWSServiceRoleForSupport"),
             "CreateDate": old(), "RolePolicyList": [],
             "AttachedManagedPolicies": [{"PolicyName": "AdministratorAccess", "PolicyArn": "arn:aws:iam::aws:policy/AdministratorAccess"}]},
            {"RoleName": "AWSReservedSSO_DataTeam_0123456789abcdef", "Path": "/aws-reserved/sso.amazonaws.com/",
             "Arn": format!("arn:aws:iam::{ACCOUNT}:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_DataTeam_0123456789abcdef"),
             "CreateDate": old(), "RolePolicyList": [{"PolicyName": "AwsSSOInlinePolicy", "PolicyDocument": {"Statement": [
                {"Effect": "Allow", "Action": ["athena:*", "glue:GetTable"], "Resource": "*"}]}}],
             "AttachedManagedPolicies": [{"PolicyName": "ReadOnlyAccess", "PolicyArn": "arn:aws:iam::aws:policy/ReadOnlyAccess"}]},
            {"RoleName": "young", "Path": "/", "Arn": format!("arn:aws:iam::{ACCOUNT}:role/young"),
             "CreateDate": "2024-06-20T00:00:00Z", "RolePolicyList": [],
             "AttachedManagedPolicies": [{"PolicyName": "ReadOnlyAccess", "PolicyArn": "arn:aws:iam::aws:policy/ReadOnlyAccess"}]}
        ],
        "Policies": [],
        "AccessKeyMetadata": [
            {"UserName": "alice", "AccessKeyId": "AKIAOLDUNUSED0000001", "Status": "Active", "CreateDate": old()},
            {"UserName": "alice", "AccessKeyId": "AKIAUSEDKEY000000002", "Status": "Active", "CreateDate": old()},
            {"UserName": "alice", "AccessKeyId": "AKIANEWKEY0000000003", "Status": "Active", "CreateDate": "2024-06-25T00:00:00Z"}
        ]
    })
}

fn alice() -> String {
    format!("arn:aws:iam::{ACCOUNT}:user/alice")
}

fn alice_usage() -> IdentityUsage {
    let mut u = usage(&[("s3:GetObject", 3), ("ec2:DescribeInstances", 10), ("s3:PutObject", 200)]);
    u.access_keys.push(("AKIAUSEDKEY000000002".into(), SeenSpan::at(as_of().millis() - 2 * DAY)));
    u
}

#[test]
fn every_used_action_stays_on_its_resources_under_its_condition_and_the_rest_goes() {
    let f = Fixture::new(user_account());
    let p = f.planned(&alice(), &alice_usage());
    let after = f.after_grants(&p);
    assert!(f.has(&after, "s3:GetObject"));
    assert!(f.has(&after, "ec2:DescribeInstances"));
    // Used 200 days ago: outside the 90-day lookback, so removed, with its last use.
    assert!(!f.has(&after, "s3:PutObject"));
    let put = p.plan.removed.iter().find(|r| r.action == "s3:PutObject").unwrap();
    assert_eq!(put.last_used, Some(EventTime(as_of().millis() - 200 * DAY)));
    assert!(p.plan.removed.iter().any(|r| r.action == "ec2:TerminateInstances" && r.last_used.is_none()));
    assert_eq!(after.granted.len(), 2, "only the two used actions remain");

    // The kept statement keeps the original's resource and condition.
    let Some(Change::CreatePolicy { document, .. }) = p.plan.changes.first() else { panic!("{:?}", p.plan.changes) };
    let statements = document["Statement"].as_array().unwrap();
    let s3 = statements.iter().find(|s| s["Action"] == json!(["s3:GetObject"])).unwrap();
    assert_eq!(s3["Resource"], json!(["arn:aws:s3:::reports/*"]));
    assert_eq!(s3["Condition"], json!({"Bool": {"aws:SecureTransport": "true"}}));
    // The inline policy's Deny is carried over: removing it would widen access.
    assert!(statements.iter().any(|s| s["Effect"] == "Deny" && s["Action"] == json!(["s3:DeleteBucket"])));
}

#[test]
fn changes_add_before_they_remove_and_say_why() {
    let f = Fixture::new(user_account());
    let p = f.planned(&alice(), &alice_usage());
    let ops: Vec<&str> = p.plan.changes.iter().map(|c| c.operation(p.plan.kind)).collect();
    assert_eq!(
        ops,
        [
            "CreatePolicy",
            "AttachUserPolicy",
            "DeleteUserPolicy",
            "DetachUserPolicy",
            "RemoveUserFromGroup",
            "UpdateAccessKey"
        ]
    );
    let first_narrowing = p.plan.changes.iter().position(Change::narrows).unwrap();
    assert!(p.plan.changes[..first_narrowing].iter().all(|c| !c.narrows()));
    // Only the old unused key goes: the used one and the one created within the lookback stay.
    let keys: Vec<&str> = p
        .plan
        .changes
        .iter()
        .filter_map(|c| match c {
            Change::DeactivateAccessKey { access_key_id, .. } => Some(access_key_id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(keys, ["AKIAOLDUNUSED0000001"]);
    assert_eq!(p.plan.before.groups, ["ops"]);
    assert_eq!(p.plan.before.managed_policies, ["arn:aws:iam::aws:policy/ReadOnlyAccess"]);
    assert_eq!(p.plan.before.access_keys.len(), 3);
}

#[test]
fn a_source_whose_every_grant_was_used_is_left_alone() {
    let f = Fixture::new(user_account());
    // Every action the group grants is ec2:*; use them all (as if), plus the inline's three.
    let mut u = alice_usage();
    for id in f.catalog.expand("ec2:*").iter() {
        u.actions.push((f.catalog.name(id).to_string(), SeenSpan::at(as_of().millis() - DAY)));
    }
    let p = f.planned(&alice(), &u);
    assert!(!p.plan.changes.iter().any(|c| matches!(c, Change::RemoveFromGroup { .. })), "{:?}", p.plan.changes);
    assert!(p.plan.kept.iter().any(|k| k.starts_with("group ops")));
}

#[test]
fn inactive_identities_lose_everything_and_their_deletion_is_only_proposed() {
    let f = Fixture::new(user_account());
    let p = f.planned(&alice(), &usage(&[("s3:GetObject", 300)]));
    assert_eq!(p.plan.reason, PlanReason::Inactive);
    assert!(!p.plan.changes.iter().any(|c| matches!(c, Change::CreatePolicy { .. })));
    let after = f.after_grants(&p);
    assert!(after.granted.is_empty(), "{:?}", after.granted.names(&f.catalog));
    assert_eq!(p.plan.proposals.len(), 1);
    assert!(p.plan.proposals[0].contains("never deletes"));
    // Every active key older than the lookback is deactivated; the new one stays.
    let n = p.plan.changes.iter().filter(|c| matches!(c, Change::DeactivateAccessKey { .. })).count();
    assert_eq!(n, 2);
}

#[test]
fn scope_service_linked_young_and_permission_set_roles() {
    let f = Fixture::new(user_account());
    let none = IdentityUsage::default();
    // Under --scope over_provisioned, an inactive identity is out of scope.
    assert!(matches!(f.plan(&alice(), &none, PlanScope::OverProvisioned), Outcome::OutOfScope));
    let slr = format!("arn:aws:iam::{ACCOUNT}:role/aws-service-role/support.amazonaws.com/AWSServiceRoleForSupport");
    assert!(matches!(f.plan(&slr, &none, PlanScope::All), Outcome::Skipped(why) if why.contains("service-linked")));
    let young = format!("arn:aws:iam::{ACCOUNT}:role/young");
    assert!(matches!(f.plan(&young, &none, PlanScope::All), Outcome::Skipped(why) if why.contains("too young")));

    let sso =
        format!("arn:aws:iam::{ACCOUNT}:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_DataTeam_0123456789abcdef");
    let p = f.planned(&sso, &usage(&[("athena:StartQueryExecution", 1), ("s3:ListBucket", 2)]));
    let [Change::UpdatePermissionSet { permission_set_name, inline_policy, detach_managed, .. }] =
        p.plan.changes.as_slice()
    else {
        panic!("{:?}", p.plan.changes)
    };
    assert_eq!(permission_set_name, "DataTeam");
    assert_eq!(detach_managed, &["arn:aws:iam::aws:policy/ReadOnlyAccess".to_string()]);
    let actions: Vec<&serde_json::Value> =
        inline_policy["Statement"].as_array().unwrap().iter().flat_map(|s| s["Action"].as_array().unwrap()).collect();
    assert!(actions.contains(&&json!("athena:StartQueryExecution")) && actions.contains(&&json!("s3:ListBucket")));
    let after = f.after_grants(&p);
    assert!(f.has(&after, "athena:StartQueryExecution") && !f.has(&after, "athena:DeleteWorkGroup"));
    assert_eq!(permission_set_name_of("AWSReservedSSO_Admin_x"), None);
}

fn permission_set_name_of(role: &str) -> Option<&str> {
    permission_set_name(role)
}

#[test]
fn big_kept_sets_fit_iam_limits_without_granting_more_than_before() {
    // A role granted every read of every service and using a thousand of them: the exact list is far
    // over 6,144 characters.
    let f = Fixture::new(json!({
        "RoleDetailList": [{"RoleName": "reader", "Path": "/", "Arn": format!("arn:aws:iam::{ACCOUNT}:role/reader"),
            "CreateDate": old(), "RolePolicyList": [{"PolicyName": "reads", "PolicyDocument": {"Statement": [
                {"Effect": "Allow", "Action": ["*:Get*", "*:List*", "*:Describe*"], "Resource": "*"},
                {"Effect": "Allow", "Action": "iam:*", "Resource": "*"}]}}],
            "AttachedManagedPolicies": []}]
    }));
    let arn = format!("arn:aws:iam::{ACCOUNT}:role/reader");
    let grants = evaluate(&f.snapshot, &f.catalog);
    let before = grants.iter().find(|g| g.arn == arn).unwrap();
    let used: Vec<String> =
        before.granted.iter().step_by(7).take(1000).map(|id| f.catalog.name(id).to_string()).collect();
    let u = usage(&used.iter().map(|a| (a.as_str(), 1)).collect::<Vec<_>>());
    let p = f.planned(&arn, &u);
    for c in &p.plan.changes {
        if let Change::CreatePolicy { document, .. } = c {
            assert!(document.to_string().len() <= MANAGED_POLICY_MAX_CHARS, "{}", document.to_string().len());
        }
    }
    let after = f.after_grants(&p);
    for a in &used {
        assert!(f.has(&after, a), "{a} was used and must stay");
    }
    assert!(after.granted.is_subset(&before.granted), "never more than before");
    assert!(after.granted.len() < before.granted.len(), "and less");
}

#[test]
fn the_after_file_reads_back_as_the_after_snapshot() {
    let f = Fixture::new(user_account());
    let p = f.planned(&alice(), &alice_usage());
    let after = apply_edits(&f.snapshot, &[&p.edit]);
    let reread = snapshot(after.authorization_details(ACCOUNT));
    let a = evaluate(&after, &f.catalog);
    let b = evaluate(&reread, &f.catalog);
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((&x.arn, &x.granted, &x.conditional, &x.groups), (&y.arn, &y.granted, &y.conditional, &y.groups));
        let keys =
            |g: &IdentityGrants| g.access_keys.iter().map(|k| (k.access_key_id.clone(), k.active)).collect::<Vec<_>>();
        assert_eq!(keys(x), keys(y));
    }
    let alice_after = b.iter().find(|g| g.arn == alice()).unwrap();
    assert!(alice_after.access_keys.iter().any(|k| k.access_key_id == "AKIAOLDUNUSED0000001" && !k.active));
    assert!(alice_after.groups.is_empty());
}

#[test]
fn policy_names_are_valid_and_change_with_the_document() {
    let long = "x".repeat(200);
    let a = policy_name(&long, &json!({"a": 1}), 0, 1);
    let b = policy_name(&long, &json!({"a": 2}), 0, 1);
    assert!(a.len() <= 128 && a != b);
    assert!(policy_name("bob", &json!({}), 1, 2).ends_with("-2"));
    assert_eq!(leading_word("GetObject"), "Get");
    assert_eq!(leading_word("X"), "X");
}

#[test]
fn excluded_identities_are_never_planned() {
    let f = Fixture::new(user_account());
    let opts = PlanOptions { scope: PlanScope::All, only: Vec::new(), exclude: vec!["*:user/ali*".into()] };
    let grants = evaluate(&f.snapshot, &f.catalog);
    let cx = PlanCx::new(&f.catalog, &f.cfg, &opts, &f.snapshot);
    let g = grants.iter().find(|g| g.arn == alice()).unwrap();
    assert!(matches!(cx.plan(g, &alice_usage()), Outcome::Skipped(why) if why.contains("--exclude *:user/ali*")));
}
