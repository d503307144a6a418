//! Properties of request-level evaluation (`grantwatch_core::access`) over generated policies: a Deny
//! added anywhere (identity policy, permissions boundary, resource policy, SCP) never allows more; an
//! SCP never grants; a resource policy statement that allows never takes access away; a request's time
//! judges `aws:CurrentTime` locks exactly as removing the statements they stop (and the lock of those
//! they let through) would.
#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use grantwatch_core::access::{AccessModel, Grade, RequestContext, ResourcePolicy, parse_resource_policies};
use grantwatch_core::iam::{IamSnapshot, parse_iam_json};
use grantwatch_core::org::Organization;
use grantwatch_types::EventTime;
use proptest::prelude::*;
use serde_json::{Value, json};

const ACCOUNT: &str = "111122223333";
const OTHER: &str = "444455556666";

const ACTIONS: &[&str] = &[
    "*",
    "s3:*",
    "s3:Get*",
    "s3:GetObject",
    "s3:PutObject",
    "sts:AssumeRole",
    "iam:PassRole",
    "kms:Decrypt",
    "*:Get*",
];
const RESOURCES: &[&str] = &[
    "*",
    "arn:aws:s3:::b/*",
    "arn:aws:s3:::b/${aws:username}/*",
    "arn:aws:s3:::*",
    "arn:aws:iam::111122223333:role/*",
    "arn:aws:iam::*:role/r",
    "arn:aws:kms:*:111122223333:key/*",
];
/// The time the locks of [`CONDITIONS`] name.
const LOCK_TIME: &str = "2025-06-01T00:00:00Z";
const CONDITIONS: &[Option<&str>] = &[
    None,
    None,
    Some(r#"{"Bool":{"aws:MultiFactorAuthPresent":"true"}}"#),
    Some(r#"{"DateLessThan":{"aws:CurrentTime":"2025-06-01T00:00:00Z"}}"#),
    Some(r#"{"DateGreaterThan":{"aws:CurrentTime":"2025-06-01T00:00:00Z"}}"#),
    Some(r#"{"DateLessThan":{"aws:CurrentTime":"2025-06-01T00:00:00Z"},"Bool":{"aws:MultiFactorAuthPresent":"true"}}"#),
];
const PRINCIPALS: &[&str] = &[
    "*",
    "111122223333",
    "arn:aws:iam::111122223333:root",
    "arn:aws:iam::111122223333:user/u",
    "arn:aws:iam::444455556666:user/x",
    "arn:aws:iam::444455556666:root",
];
/// Requests: (action, resource).
const REQUESTS: &[(&str, &str)] = &[
    ("s3:GetObject", "arn:aws:s3:::b/u/report"),
    ("s3:PutObject", "arn:aws:s3:::b/other"),
    ("sts:AssumeRole", "arn:aws:iam::111122223333:role/r"),
    ("iam:PassRole", "arn:aws:iam::111122223333:role/r"),
    ("kms:Decrypt", "arn:aws:kms:us-east-1:111122223333:key/k"),
];

fn statement(effect: &'static str, with_principal: bool) -> impl Strategy<Value = Value> {
    (
        proptest::sample::subsequence(ACTIONS, 1..3),
        any::<bool>(),
        proptest::sample::subsequence(RESOURCES, 1..3),
        any::<bool>(),
        proptest::sample::select(CONDITIONS),
        proptest::sample::subsequence(PRINCIPALS, 1..3),
    )
        .prop_map(move |(actions, not_action, resources, not_resource, condition, principals)| {
            let mut s = json!({"Effect": effect});
            s[if not_action && actions.len() > 1 { "NotAction" } else { "Action" }] = json!(actions);
            s[if not_resource && resources.len() > 1 { "NotResource" } else { "Resource" }] = json!(resources);
            if let Some(c) = condition {
                s["Condition"] = serde_json::from_str(c).unwrap_or_default();
            }
            if with_principal {
                s["Principal"] = json!({"AWS": principals});
            }
            s
        })
}

fn statements(with_principal: bool) -> impl Strategy<Value = Vec<Value>> {
    proptest::collection::vec(
        prop_oneof![3 => statement("Allow", with_principal), 1 => statement("Deny", with_principal)],
        0..4,
    )
}

/// A world: the user `u`'s policy, its boundary (or none), role `r`'s trust, a bucket and a key
/// policy, and the SCP above the account.
#[derive(Debug, Clone)]
struct World {
    user: Vec<Value>,
    boundary: Option<Vec<Value>>,
    trust: Vec<Value>,
    bucket: Vec<Value>,
    key: Vec<Value>,
    scp: Vec<Value>,
}

fn world() -> impl Strategy<Value = World> {
    (
        statements(false),
        proptest::option::of(statements(false)),
        statements(true),
        statements(true),
        statements(true),
        statements(false),
    )
        .prop_map(|(user, boundary, trust, bucket, key, scp)| World { user, boundary, trust, bucket, key, scp })
}

fn doc(statements: &[Value]) -> Value {
    json!({"Version": "2012-10-17", "Statement": statements})
}

/// The grade of every request for user `u`, and for `x` of the other account.
fn grades(w: &World) -> Vec<Grade> {
    grades_in(w, &RequestContext::UNKNOWN)
}

/// [`grades`] of requests made in `ctx`.
fn grades_in(w: &World, ctx: &RequestContext) -> Vec<Grade> {
    let mut user = json!({"UserName": "u", "Arn": format!("arn:aws:iam::{ACCOUNT}:user/u"), "Path": "/",
        "UserPolicyList": [{"PolicyName": "p", "PolicyDocument": doc(&w.user)}], "GroupList": [], "AttachedManagedPolicies": []});
    let mut policies = vec![];
    if let Some(b) = &w.boundary {
        let arn = format!("arn:aws:iam::{ACCOUNT}:policy/boundary");
        user["PermissionsBoundary"] = json!({"PermissionsBoundaryType": "Policy", "PermissionsBoundaryArn": arn});
        policies.push(json!({"PolicyName": "boundary", "Arn": arn, "DefaultVersionId": "v1",
            "PolicyVersionList": [{"VersionId": "v1", "IsDefaultVersion": true, "Document": doc(b)}]}));
    }
    let role = json!({"RoleName": "r", "Arn": format!("arn:aws:iam::{ACCOUNT}:role/r"), "Path": "/",
        "AssumeRolePolicyDocument": doc(&w.trust), "RolePolicyList": [], "AttachedManagedPolicies": []});
    let other_user = json!({"UserName": "x", "Arn": format!("arn:aws:iam::{OTHER}:user/x"), "Path": "/",
        "UserPolicyList": [{"PolicyName": "p", "PolicyDocument": doc(&w.user)}], "GroupList": [], "AttachedManagedPolicies": []});
    let mut snapshot = IamSnapshot::default();
    let details = json!({"UserDetailList": [user, other_user], "RoleDetailList": [role], "GroupDetailList": [], "Policies": policies});
    snapshot.merge(parse_iam_json(details.to_string().as_bytes(), "world.json").unwrap());
    let resources: Vec<ResourcePolicy> = parse_resource_policies(
        &json!({"ResourcePolicies": [
            {"Arn": "arn:aws:s3:::b", "Account": ACCOUNT, "Policy": doc(&w.bucket)},
            {"Arn": format!("arn:aws:kms:us-east-1:{ACCOUNT}:key/k"), "Policy": doc(&w.key)}
        ]})
        .to_string(),
        "resources.json",
    )
    .unwrap();
    // The account's SCPs allow everything but what the generated statements deny or narrow.
    let mut scp = vec![json!({"Effect": "Allow", "Action": "*", "Resource": "*"})];
    scp.extend(w.scp.iter().cloned());
    let org = Organization::parse(
        &json!({"roots": [{"id": "r-1"}], "accounts": [{"id": ACCOUNT, "parent": "r-1"}, {"id": OTHER, "parent": "r-1"}],
            "policies": [
                {"id": "p-full", "type": "SERVICE_CONTROL_POLICY", "targets": ["r-1"], "content": doc(&[json!({"Effect": "Allow", "Action": "*", "Resource": "*"})])},
                {"id": "p-acct", "type": "SERVICE_CONTROL_POLICY", "targets": [ACCOUNT, OTHER], "content": doc(&scp)}
            ]})
        .to_string(),
        "org.json",
    )
    .unwrap();
    let model = AccessModel::new(&snapshot, &resources, Some(&org));
    let mut out = Vec::new();
    for who in ["arn:aws:iam::111122223333:user/u", "arn:aws:iam::444455556666:user/x"] {
        let s = model.subject(who).unwrap();
        for (action, resource) in REQUESTS {
            out.push(model.decide_in(s, action, resource, ctx).grade);
        }
    }
    out
}

/// How many requests are allowed over many worlds: the properties are not vacuous.
#[test]
fn generated_worlds_allow_some_requests() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut allowed, mut total) = (0, 0);
    for _ in 0..200 {
        let w = world().new_tree(&mut runner).unwrap().current();
        let g = grades(&w);
        allowed += g.iter().filter(|g| **g > Grade::No).count();
        total += g.len();
    }
    assert!(allowed * 20 > total, "only {allowed} of {total} requests allowed");
}

/// The world as a request at `before_lock` (or after it) sees it, judged by hand: a statement whose
/// time lock fails is gone, a lock that holds is taken out of its condition (the condition gone when
/// nothing else is left in it).
fn settled(w: &World, before_lock: bool) -> World {
    let settle = |statements: &[Value]| -> Vec<Value> {
        statements
            .iter()
            .filter_map(|st| {
                let mut st = st.clone();
                let Some(cond) = st.get_mut("Condition").and_then(Value::as_object_mut) else { return Some(st) };
                for (op, holds) in [("DateLessThan", before_lock), ("DateGreaterThan", !before_lock)] {
                    if let Some(keys) = cond.remove(op) {
                        assert_eq!(keys, json!({"aws:CurrentTime": LOCK_TIME}));
                        if !holds {
                            return None;
                        }
                    }
                }
                if cond.is_empty() {
                    st.as_object_mut().unwrap().remove("Condition");
                }
                Some(st)
            })
            .collect()
    };
    World {
        user: settle(&w.user),
        boundary: w.boundary.as_deref().map(settle),
        trust: settle(&w.trust),
        bucket: settle(&w.bucket),
        key: settle(&w.key),
        scp: settle(&w.scp),
    }
}

fn no_more(after: &[Grade], before: &[Grade]) -> bool {
    after.iter().zip(before).all(|(a, b)| a <= b)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn a_deny_anywhere_never_allows_more(w in world(), deny in statement("Deny", false), deny_p in statement("Deny", true), place in 0..6u8) {
        let before = grades(&w);
        let mut w2 = w.clone();
        match place {
            0 => w2.user.push(deny),
            1 => w2.boundary.get_or_insert_with(Vec::new).push(deny),
            2 => w2.trust.push(deny_p),
            3 => w2.bucket.push(deny_p),
            4 => w2.key.push(deny_p),
            _ => w2.scp.push(deny),
        }
        let after = grades(&w2);
        prop_assert!(no_more(&after, &before), "{before:?} -> {after:?}");
    }

    #[test]
    fn a_full_deny_in_any_gate_denies(w in world(), place in 0..4u8) {
        let mut w = w;
        let all = json!({"Effect": "Deny", "Action": "*", "Resource": "*"});
        let mut everyone = all.clone();
        everyone["Principal"] = json!("*");
        match place {
            0 => w.user.push(all),
            1 => w.boundary.get_or_insert_with(Vec::new).push(all),
            2 => w.scp.push(all),
            _ => {
                w.bucket.push(everyone.clone());
                w.key.push(everyone.clone());
                w.trust.push(everyone);
            }
        }
        let g = grades(&w);
        // Every request of `u` (the first half); for a boundary, `x` has none, and the SCP is above
        // both. A role's trust policy does not govern iam:PassRole on it.
        let governed = |i: usize| place != 3 || REQUESTS[i % REQUESTS.len()].0 != "iam:PassRole";
        let denied: Vec<Grade> = g.iter().enumerate().filter(|(i, _)| (place != 1 || *i < REQUESTS.len()) && governed(*i)).map(|(_, g)| *g).collect();
        prop_assert!(denied.iter().all(|g| *g == Grade::No), "{g:?}");
    }

    #[test]
    fn an_scp_never_grants(w in world(), allow in statement("Allow", false)) {
        // With the user's own policy empty and no resource policy naming it, no SCP can let it in.
        let mut w = w;
        w.user.clear();
        w.trust.clear();
        w.bucket.clear();
        w.key.clear();
        w.scp.push(allow);
        // (`grades` puts an Allow-everything SCP beside them: it grants nothing either.)
        prop_assert!(grades(&w).iter().all(|g| *g == Grade::No));
    }

    #[test]
    fn a_request_time_judges_time_locks_as_removing_what_they_stop(w in world(), before_lock in any::<bool>()) {
        let t = if before_lock { "2025-05-31T23:59:59Z" } else { "2025-06-01T00:00:01Z" };
        let ctx = RequestContext::at(EventTime::parse_rfc3339(t).unwrap());
        let judged = grades_in(&w, &ctx);
        prop_assert_eq!(&judged, &grades(&settled(&w, before_lock)));
        // Knowing the time only settles what was conditional.
        let unknown = grades(&w);
        for (j, u) in judged.iter().zip(&unknown) {
            prop_assert!(*u == Grade::Conditional || j == u, "{unknown:?} -> {judged:?}");
        }
    }

    #[test]
    fn an_allow_in_a_resource_policy_never_takes_access_away(w in world(), allow in statement("Allow", true), place in 0..3u8) {
        let before = grades(&w);
        let mut w2 = w.clone();
        match place {
            0 => w2.trust.push(allow),
            1 => w2.bucket.push(allow),
            _ => w2.key.push(allow),
        }
        let after = grades(&w2);
        prop_assert!(no_more(&before, &after), "{before:?} -> {after:?}");
    }
}
