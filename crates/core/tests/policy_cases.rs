//! Example-based tests of IAM parsing and effective-permission evaluation (rules: `policy` module doc).

use std::sync::OnceLock;

use grantwatch_core::catalog::{ActionSet, Catalog};
use grantwatch_core::iam::{IamSnapshot, PolicyDocument, parse_iam_json, parse_policy_document};
use grantwatch_core::policy::{Grants, IdentityGrants, evaluate, evaluate_policies, evaluate_with_warnings};
use grantwatch_types::IdentityKind;
use serde_json::{Value, json};

fn catalog() -> &'static Catalog {
    static C: OnceLock<Catalog> = OnceLock::new();
    C.get_or_init(|| Catalog::aws().expect("embedded catalog"))
}

fn id(name: &str) -> u32 {
    catalog().lookup(name).unwrap_or_else(|| panic!("{name} not in catalog"))
}

fn doc(v: Value) -> PolicyDocument {
    parse_policy_document(&v, "test", "doc", false).expect("valid document")
}

fn eval(stmts: Value) -> Grants {
    let d = doc(json!({ "Version": "2012-10-17", "Statement": stmts }));
    evaluate_policies(catalog(), &[&d], None)
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/fixtures/iam/{name}", env!("CARGO_MANIFEST_DIR"))).expect("fixture")
}

fn snapshot(files: &[&str]) -> IamSnapshot {
    let mut s = IamSnapshot::new();
    for f in files {
        s.merge(parse_iam_json(&fixture(f), f).expect("valid fixture"));
    }
    s
}

fn find<'a>(all: &'a [IdentityGrants], arn: &str) -> &'a IdentityGrants {
    all.iter().find(|g| g.arn == arn).unwrap_or_else(|| panic!("{arn} not evaluated"))
}

#[test]
fn wildcard_action_grants_its_expansion() {
    let g = eval(json!([{ "Effect": "Allow", "Action": "s3:Get*", "Resource": "*" }]));
    assert_eq!(g.granted, catalog().expand("s3:Get*"));
    assert_eq!(g.unscoped, g.granted);
    assert!(g.conditional.is_empty() && g.resource_patterns.is_empty());
    let all = eval(json!([{ "Effect": "Allow", "Action": "*", "Resource": "*" }]));
    assert_eq!(all.granted.len(), catalog().len());
}

#[test]
fn not_action_grants_every_other_action() {
    let g = eval(json!([{ "Effect": "Allow", "NotAction": ["iam:*", "organizations:*"], "Resource": "*" }]));
    assert!(!g.granted.contains(id("iam:PassRole")));
    assert!(!g.granted.contains(id("organizations:ListAccounts")));
    assert!(g.granted.contains(id("s3:GetObject")) && g.granted.contains(id("ec2:RunInstances")));
    let excluded = catalog().expand("iam:*").len() + catalog().expand("organizations:*").len();
    assert_eq!(g.granted.len(), catalog().len() - excluded);
}

#[test]
fn object_pattern_grants_get_object_not_list_bucket() {
    let g = eval(
        json!([{ "Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": "arn:aws:s3:::b/*" }]),
    );
    assert!(g.granted.contains(id("s3:GetObject")));
    assert!(!g.granted.contains(id("s3:ListBucket")));
    assert!(!g.unscoped.contains(id("s3:GetObject")));
    assert_eq!(g.resource_patterns.len(), 1);
    assert_eq!(g.resource_patterns[0].0, id("s3:GetObject"));
    assert_eq!(&*g.resource_patterns[0].1, &["arn:aws:s3:::b/*".to_string()]);

    let bucket = eval(json!([{ "Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::b" }]));
    assert!(bucket.granted.contains(id("s3:ListBucket")));
    // Actions without a resource type need Resource "*".
    let none = eval(json!([{ "Effect": "Allow", "Action": "s3:ListAllMyBuckets", "Resource": "arn:aws:s3:::*" }]));
    assert!(none.granted.is_empty());
    // An ARN of another service grants nothing.
    let other =
        eval(json!([{ "Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:ec2:*:*:instance/*" }]));
    assert!(other.granted.is_empty());
}

#[test]
fn unscoped_needs_every_template_covered() {
    let g = eval(json!([{ "Effect": "Allow", "Action": ["dynamodb:GetItem", "iam:GetUser"],
        "Resource": ["arn:aws:dynamodb:*:*:table/*", "arn:aws:iam::123456789012:user/*"] }]));
    assert!(g.unscoped.contains(id("dynamodb:GetItem")));
    assert!(g.granted.contains(id("iam:GetUser")) && !g.unscoped.contains(id("iam:GetUser")));
    let pats: Vec<_> = g.resource_patterns.iter().map(|(a, _)| *a).collect();
    assert_eq!(pats, vec![id("iam:GetUser")]);
}

#[test]
fn conditional_allow_is_marked_unless_also_unconditional() {
    let cond = json!({ "Bool": { "aws:MultiFactorAuthPresent": "true" } });
    let g = eval(
        json!([{ "Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"], "Resource": "*", "Condition": cond },
                        { "Effect": "Allow", "Action": "s3:GetObject", "Resource": "*" }]),
    );
    assert!(g.granted.contains(id("s3:PutObject")) && g.conditional.contains(id("s3:PutObject")));
    assert!(g.granted.contains(id("s3:GetObject")) && !g.conditional.contains(id("s3:GetObject")));
    assert!(g.unscoped.contains(id("s3:PutObject")));
}

#[test]
fn deny_rules() {
    let allow = json!({ "Effect": "Allow", "Action": "s3:*", "Resource": "*" });
    let cond_deny = eval(json!([allow, { "Effect": "Deny", "Action": "s3:*", "Resource": "*",
        "Condition": { "Bool": { "aws:SecureTransport": "false" } } }]));
    assert_eq!(cond_deny.granted, catalog().expand("s3:*"));
    let scoped_deny =
        eval(json!([allow, { "Effect": "Deny", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::secret/*" }]));
    assert!(scoped_deny.granted.contains(id("s3:GetObject")));
    let star_deny = eval(json!([allow, { "Effect": "Deny", "Action": "s3:Delete*", "Resource": "*" }]));
    assert!(!star_deny.granted.contains(id("s3:DeleteBucket")) && star_deny.granted.contains(id("s3:GetObject")));
    // A Deny covering every template of the action also removes it.
    let full_arn_deny =
        eval(json!([allow, { "Effect": "Deny", "Action": "s3:CreateBucket", "Resource": "arn:aws:s3:::*" }]));
    assert!(!full_arn_deny.granted.contains(id("s3:CreateBucket")));
    let everything = eval(json!([allow, { "Effect": "Deny", "Action": "*", "Resource": "*" }]));
    assert!(everything.granted.is_empty() && everything.unscoped.is_empty() && everything.conditional.is_empty());
}

#[test]
fn not_resource_approximation() {
    let g = eval(json!([{ "Effect": "Allow", "Action": ["s3:GetObject", "ec2:DescribeInstances", "s3:ListBucket"],
        "NotResource": "arn:aws:s3:::secret/*" }]));
    // Excluding some objects: partial for GetObject, irrelevant to the others.
    assert!(g.granted.contains(id("s3:GetObject")) && !g.unscoped.contains(id("s3:GetObject")));
    assert!(g.unscoped.contains(id("ec2:DescribeInstances")) && g.unscoped.contains(id("s3:ListBucket")));
    let p = g.resource_patterns.iter().find(|(a, _)| *a == id("s3:GetObject")).unwrap();
    assert_eq!(&*p.1, &["!arn:aws:s3:::secret/*".to_string()]);
    let none = eval(json!([{ "Effect": "Allow", "Action": "s3:GetObject", "NotResource": "*" }]));
    assert!(none.granted.is_empty());
}

#[test]
fn boundary_intersects_identity_policies() {
    let identity = doc(json!({ "Statement": [{ "Effect": "Allow", "Action": ["s3:*", "ec2:*"], "Resource": "*" }] }));
    let boundary = doc(json!({ "Statement": [
        { "Effect": "Allow", "Action": ["s3:*", "iam:*"], "Resource": "*" },
        { "Effect": "Deny", "Action": "s3:DeleteBucket", "Resource": "*" }] }));
    let g = evaluate_policies(catalog(), &[&identity], Some(&boundary));
    let mut expect = catalog().expand("s3:*");
    expect.difference_with(&catalog().expand("s3:DeleteBucket"));
    assert_eq!(g.granted, expect);
    assert!(!g.granted.contains(id("iam:PassRole")) && !g.granted.contains(id("ec2:RunInstances")));
}

#[test]
fn fixture_account_rules() {
    let s = snapshot(&["account_111111111111.json"]);
    assert_eq!(s.accounts, vec!["111111111111".to_string()]);
    let all = evaluate(&s, catalog());
    assert_eq!(all.len(), 6);
    let mut sorted: Vec<_> = all.iter().map(|g| g.arn.clone()).collect();
    sorted.sort();
    assert_eq!(sorted, all.iter().map(|g| g.arn.clone()).collect::<Vec<_>>());

    // alice: URL-encoded inline policy, group inheritance, AWS managed ReadOnlyAccess from the vendored data.
    let alice = find(&all, "arn:aws:iam::111111111111:user/alice");
    assert_eq!(alice.kind, IdentityKind::User);
    assert_eq!(alice.groups, vec!["devs".to_string()]);
    assert!(alice.granted.contains(id("lambda:CreateFunction")), "group policy inherited");
    assert!(alice.granted.contains(id("ec2:DescribeInstances")), "ReadOnlyAccess fallback");
    assert!(alice.granted.len() > 1000);
    assert!(alice.granted.contains(id("s3:GetObject")) && alice.warnings.is_empty(), "{:?}", alice.warnings);
    assert!(alice.created.is_some());

    // bob: managed policy default version v2 (not v1's `*`), Deny on `*`, boundary s3+iam.
    let bob = find(&all, "arn:aws:iam::111111111111:user/bob");
    let mut expect = catalog().expand("s3:*");
    expect.difference_with(&catalog().expand("s3:DeleteBucket"));
    assert_eq!(bob.granted, expect);
    assert_eq!(bob.boundary.as_deref(), Some("arn:aws:iam::111111111111:policy/Boundary"));

    // The group as its own identity.
    let devs = find(&all, "arn:aws:iam::111111111111:group/devs");
    assert_eq!(devs.kind, IdentityKind::Group);
    assert_eq!(devs.granted, catalog().expand("lambda:*"));

    // Roles: conditional scoped grant, trust, last used, SSO and service-linked.
    let app = find(&all, "arn:aws:iam::111111111111:role/app");
    assert_eq!(app.granted.names(catalog()), vec!["dynamodb:GetItem".to_string()]);
    assert_eq!(app.conditional, app.granted);
    assert!(app.unscoped.is_empty());
    assert_eq!(app.trusted_accounts, vec!["222222222222".to_string(), "333333333333".to_string()]);
    assert!(app.last_used.is_some() && !app.sso_role && !app.service_linked);
    let sso = find(
        &all,
        "arn:aws:iam::111111111111:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_Admin_0123456789abcdef",
    );
    assert!(sso.sso_role && sso.granted.len() == catalog().len());
    let slr =
        find(&all, "arn:aws:iam::111111111111:role/aws-service-role/support.amazonaws.com/AWSServiceRoleForSupport");
    assert!(slr.service_linked && !slr.granted.is_empty(), "{:?}", slr.warnings);
}

#[test]
fn managed_policy_fallback_for_read_only_access() {
    let s = snapshot(&["account_111111111111.json"]);
    assert!(!s.policies.contains_key("arn:aws:iam::aws:policy/ReadOnlyAccess"));
    let all = evaluate(&s, catalog());
    let alice = find(&all, "arn:aws:iam::111111111111:user/alice");
    for a in ["s3:GetObject", "iam:GetRole", "dynamodb:Scan", "ec2:DescribeVpcs"] {
        assert!(alice.granted.contains(id(a)) && alice.unscoped.contains(id(a)), "{a}");
    }
    assert!(!alice.granted.contains(id("s3:PutObject")) && !alice.granted.contains(id("iam:PassRole")));
}

#[test]
fn multi_account_merge_missing_policy_and_access_keys() {
    let s = snapshot(&[
        "access_keys.json",
        "account_111111111111.json",
        "account_222222222222.json",
        "access_keys_222222222222.json",
    ]);
    assert_eq!(s.accounts, vec!["111111111111".to_string(), "222222222222".to_string()]);
    let ev = evaluate_with_warnings(&s, catalog());
    let all = &ev.identities;
    assert_eq!(all.len(), 8);
    let alice_b = find(all, "arn:aws:iam::222222222222:user/alice");
    assert_eq!(alice_b.account, "222222222222");
    assert_eq!(alice_b.granted.names(catalog()), vec!["sqs:SendMessage".to_string()]);
    let keys: Vec<_> = alice_b.access_keys.iter().map(|k| k.access_key_id.as_str()).collect();
    assert_eq!(keys, vec!["AKIAEXAMPLEALICEB01"]);
    // The account-less key of "alice" is ambiguous between the two accounts: attached to none, warned.
    assert!(find(all, "arn:aws:iam::111111111111:user/alice").access_keys.is_empty());
    assert!(ev.warnings.iter().any(|w| w.contains("AKIAEXAMPLEALICE001")), "{:?}", ev.warnings);
    let bob = find(all, "arn:aws:iam::111111111111:user/bob");
    assert_eq!(bob.access_keys.len(), 1);
    assert!(bob.access_keys[0].active && bob.access_keys[0].account.as_deref() == Some("111111111111"));
    let carol = find(all, "arn:aws:iam::222222222222:user/carol");
    assert!(!carol.access_keys[0].active);
    // A customer managed policy found nowhere grants nothing and is reported.
    assert!(carol.granted.is_empty());
    assert!(carol.warnings.iter().any(|w| w.contains("arn:aws:iam::222222222222:policy/Gone")));
}

#[test]
fn plain_and_encoded_documents_agree() {
    let plain = json!({ "Version": "2012-10-17", "Statement": [{ "Effect": "Allow", "Action": "s3:GetObject", "Resource": "*" }] });
    let text = serde_json::to_string(&plain).unwrap();
    let encoded: String = percent_encoding::utf8_percent_encode(&text, percent_encoding::NON_ALPHANUMERIC).to_string();
    let a = parse_policy_document(&plain, "t", "p", false).unwrap();
    let b = parse_policy_document(&Value::String(encoded), "t", "p", false).unwrap();
    let c = parse_policy_document(&Value::String(text), "t", "p", false).unwrap();
    assert_eq!(a, b);
    assert_eq!(a, c);
}

#[test]
fn malformed_input_is_an_error_with_path() {
    let bad = json!({ "RoleDetailList": [
        { "RoleName": "ok", "Arn": "arn:aws:iam::111111111111:role/ok", "RolePolicyList": [] },
        { "RoleName": "r", "Arn": "arn:aws:iam::111111111111:role/r",
          "RolePolicyList": [{ "PolicyName": "p", "PolicyDocument": "%7Bnot json" }] }] });
    let e = parse_iam_json(&serde_json::to_vec(&bad).unwrap(), "bad.json").unwrap_err();
    assert_eq!(e.file, "bad.json");
    assert_eq!(e.path, "RoleDetailList[1].RolePolicyList[0].PolicyDocument");
    for junk in [&b"not json"[..], b"{}", b"{\"UserDetailList\": 3}", b"{\"Policies\":[{\"Arn\":1}]}"] {
        assert!(parse_iam_json(junk, "junk").is_err());
    }
    let no_effect = json!({ "Statement": [{ "Action": "*", "Resource": "*" }] });
    assert_eq!(parse_policy_document(&no_effect, "t", "p", false).unwrap_err().path, "p.Statement[0].Effect");
}

/// A 5,000-identity snapshot built here evaluates correctly (no timing assertion).
#[test]
fn five_thousand_identities() {
    let acct = "444444444444";
    let mut users = Vec::new();
    let mut roles = Vec::new();
    for i in 0..2500 {
        let attached = match i % 3 {
            0 => json!([{ "PolicyName": "ReadOnlyAccess", "PolicyArn": "arn:aws:iam::aws:policy/ReadOnlyAccess" }]),
            1 => json!([{ "PolicyName": "Admin", "PolicyArn": "arn:aws:iam::aws:policy/AdministratorAccess" }]),
            _ => json!([]),
        };
        users.push(json!({ "UserName": format!("u{i}"), "Arn": format!("arn:aws:iam::{acct}:user/u{i}"),
            "GroupList": ["g"], "AttachedManagedPolicies": attached,
            "UserPolicyList": [{ "PolicyName": "own", "PolicyDocument": { "Statement": [
                { "Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"], "Resource": format!("arn:aws:s3:::bucket-{i}/*") },
                { "Effect": "Deny", "Action": "iam:*", "Resource": "*" }] } }] }));
        roles.push(json!({ "RoleName": format!("r{i}"), "Arn": format!("arn:aws:iam::{acct}:role/r{i}"),
            "AssumeRolePolicyDocument": { "Statement": { "Effect": "Allow", "Principal": { "Service": "lambda.amazonaws.com" }, "Action": "sts:AssumeRole" } },
            "RolePolicyList": [{ "PolicyName": "p", "PolicyDocument": { "Statement": [
                { "Effect": "Allow", "Action": "*", "Resource": format!("arn:aws:dynamodb:*:{acct}:table/t{}", i % 50) }] } }],
            "AttachedManagedPolicies": [] }));
    }
    let groups = json!([{ "GroupName": "g", "Arn": format!("arn:aws:iam::{acct}:group/g"),
        "GroupPolicyList": [{ "PolicyName": "sqs", "PolicyDocument": { "Statement": { "Effect": "Allow", "Action": "sqs:*", "Resource": "*" } } }] }]);
    let body = json!({ "UserDetailList": users, "RoleDetailList": roles, "GroupDetailList": groups, "Policies": [] });
    let mut s = IamSnapshot::new();
    s.merge(parse_iam_json(&serde_json::to_vec(&body).unwrap(), "synthetic").unwrap());
    let all = evaluate(&s, catalog());
    assert_eq!(all.len(), 5001);

    let u0 = find(&all, &format!("arn:aws:iam::{acct}:user/u0")); // ReadOnly
    assert!(u0.granted.contains(id("ec2:DescribeInstances")) && u0.granted.contains(id("sqs:SendMessage")));
    assert!(u0.granted.contains(id("s3:PutObject")) && !u0.unscoped.contains(id("s3:PutObject")));
    assert!(!u0.granted.contains(id("iam:GetRole")), "Deny iam:* on * removes ReadOnly's iam reads");
    let put = u0.resource_patterns.iter().find(|(a, _)| *a == id("s3:PutObject")).unwrap();
    assert_eq!(&*put.1, &["arn:aws:s3:::bucket-0/*".to_string()]);
    let u1 = find(&all, &format!("arn:aws:iam::{acct}:user/u1")); // Admin minus iam
    let mut expect = catalog().full_set();
    expect.difference_with(&catalog().expand("iam:*"));
    assert_eq!(u1.granted, expect);
    let u2 = find(&all, &format!("arn:aws:iam::{acct}:user/u2"));
    let mut expect: ActionSet = catalog().expand("sqs:*");
    expect.insert(id("s3:GetObject"));
    expect.insert(id("s3:PutObject"));
    assert_eq!(u2.granted, expect);
    let r7 = find(&all, &format!("arn:aws:iam::{acct}:role/r7"));
    assert!(r7.granted.contains(id("dynamodb:GetItem")) && !r7.granted.contains(id("s3:GetObject")));
    assert!(r7.granted.iter().all(|a| catalog().prefix(a) == "dynamodb"));
    assert!(r7.unscoped.is_empty() && r7.trusted_accounts.is_empty());
}
