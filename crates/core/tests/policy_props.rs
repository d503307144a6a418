//! Properties of policy evaluation over a small generated catalog.

use grantwatch_core::catalog::{AccessLevel, Catalog, RiskTags};
use grantwatch_core::iam::{Effect, IamSnapshot, PolicyDocument, Statement, parse_iam_json};
use grantwatch_core::policy::{Grants, evaluate_policies};
use proptest::prelude::*;

fn catalog() -> Catalog {
    let s3_obj = "arn:${Partition}:s3:::${BucketName}/${ObjectName}";
    let s3_bucket = "arn:${Partition}:s3:::${BucketName}";
    let instance = "arn:${Partition}:ec2:${Region}:${Account}:instance/${InstanceId}";
    let user = "arn:${Partition}:iam::${Account}:user/${UserNameWithPath}";
    let role = "arn:${Partition}:iam::${Account}:role/${RoleNameWithPath}";
    let entries: Vec<(&str, &str, AccessLevel, Vec<&str>)> = vec![
        ("s3", "GetObject", AccessLevel::Read, vec!["*", s3_obj]),
        ("s3", "PutObject", AccessLevel::Write, vec![s3_obj]),
        ("s3", "ListBucket", AccessLevel::List, vec![s3_bucket]),
        ("s3", "GetBucketPolicy", AccessLevel::Read, vec![s3_bucket]),
        ("s3", "ListAllMyBuckets", AccessLevel::List, vec![]),
        ("ec2", "DescribeInstances", AccessLevel::List, vec![]),
        ("ec2", "RunInstances", AccessLevel::Write, vec![instance]),
        ("ec2", "TerminateInstances", AccessLevel::Write, vec![instance]),
        ("iam", "GetUser", AccessLevel::Read, vec![user]),
        ("iam", "PassRole", AccessLevel::Write, vec![role]),
        ("iam", "GetRole", AccessLevel::Read, vec![role]),
        ("iam", "ListRoles", AccessLevel::List, vec![]),
    ];
    Catalog::from_entries(entries.into_iter().map(|(p, n, l, arns)| {
        (p.to_string(), n.to_string(), l, arns.into_iter().map(String::from).collect(), RiskTags::default())
    }))
}

const ACTIONS: &[&str] = &[
    "*",
    "s3:*",
    "s3:Get*",
    "s3:List*",
    "ec2:*",
    "ec2:Describe*",
    "iam:Get*",
    "iam:?et*",
    "*:Get*",
    "s3:GetObject",
    "iam:PassRole",
    "ec2:RunInstances",
    "nosuch:Thing",
];
const RESOURCES: &[&str] = &[
    "*",
    "arn:aws:s3:::b/*",
    "arn:aws:s3:::b",
    "arn:aws:s3:::*",
    "arn:aws:s3:::b*",
    "arn:aws:ec2:*:*:instance/*",
    "arn:aws:ec2:us-east-1:123456789012:instance/i-1",
    "arn:aws:iam::*:user/*",
    "arn:aws:iam::123456789012:role/x",
    "arn:aws:iam::*:role/${aws:username}",
    "arn:*",
];

fn pick(list: &'static [&'static str]) -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(proptest::sample::select(list).prop_map(String::from), 1..4)
}

fn statement(effect: impl Strategy<Value = Effect>) -> impl Strategy<Value = Statement> {
    (effect, any::<bool>(), pick(ACTIONS), any::<u8>(), pick(RESOURCES), any::<bool>()).prop_map(
        |(effect, not_action, actions, nr, resources, has_condition)| Statement {
            sid: None,
            effect,
            not_action,
            actions,
            not_resource: nr % 5 == 0,
            resources,
            condition: has_condition.then(|| r#"{"Bool":{"aws:MultiFactorAuthPresent":"true"}}"#.to_string()),
            principal: None,
        },
    )
}

fn any_effect() -> impl Strategy<Value = Effect> {
    prop_oneof![3 => Just(Effect::Allow), 1 => Just(Effect::Deny)]
}

fn statements() -> impl Strategy<Value = Vec<Statement>> {
    proptest::collection::vec(statement(any_effect()), 0..6)
}

fn eval(c: &Catalog, stmts: &[Statement]) -> Grants {
    let d = PolicyDocument { statements: stmts.to_vec() };
    evaluate_policies(c, &[&d], None)
}

fn invariants(g: &Grants) {
    assert!(g.conditional.is_subset(&g.granted));
    assert!(g.unscoped.is_subset(&g.granted));
    for (a, pats) in &g.resource_patterns {
        assert!(g.granted.contains(*a) && !g.unscoped.contains(*a) && !pats.is_empty());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn adding_a_deny_never_grows_granted(stmts in statements(), deny in statement(Just(Effect::Deny))) {
        let c = catalog();
        let before = eval(&c, &stmts);
        let mut more = stmts.clone();
        more.push(deny);
        let after = eval(&c, &more);
        invariants(&before);
        invariants(&after);
        prop_assert!(after.granted.is_subset(&before.granted));
        prop_assert!(after.unscoped.is_subset(&before.unscoped));
    }

    #[test]
    fn adding_an_allow_never_shrinks_granted(stmts in statements(), allow in statement(Just(Effect::Allow))) {
        let c = catalog();
        let before = eval(&c, &stmts);
        let mut more = stmts.clone();
        more.push(allow);
        let after = eval(&c, &more);
        prop_assert!(before.granted.is_subset(&after.granted));
        prop_assert!(before.unscoped.is_subset(&after.unscoped));
    }

    #[test]
    fn wildcard_grants_exactly_its_expansion(pattern in proptest::sample::select(ACTIONS)) {
        let c = catalog();
        let s = Statement { sid: None, effect: Effect::Allow, not_action: false, actions: vec![pattern.to_string()],
            not_resource: false, resources: vec!["*".to_string()], condition: None, principal: None };
        let g = eval(&c, &[s]);
        prop_assert_eq!(&g.granted, &c.expand(pattern));
        prop_assert_eq!(&g.unscoped, &g.granted);
        prop_assert!(g.conditional.is_empty());
    }

    #[test]
    fn statement_order_does_not_matter(stmts in statements().prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle()))) {
        let c = catalog();
        let (a, b) = stmts;
        prop_assert_eq!(eval(&c, &a), eval(&c, &b));
    }

    #[test]
    fn unconditional_star_deny_empties_everything(stmts in statements()) {
        let c = catalog();
        let mut more = stmts;
        more.push(Statement { sid: None, effect: Effect::Deny, not_action: false, actions: vec!["*".to_string()],
            not_resource: false, resources: vec!["*".to_string()], condition: None, principal: None });
        let g = eval(&c, &more);
        prop_assert!(g.granted.is_empty() && g.conditional.is_empty() && g.unscoped.is_empty());
        prop_assert!(g.resource_patterns.is_empty());
    }

    #[test]
    fn boundary_only_narrows(stmts in statements(), bstmts in statements()) {
        let c = catalog();
        let d = PolicyDocument { statements: stmts };
        let b = PolicyDocument { statements: bstmts };
        let alone = evaluate_policies(&c, &[&d], None);
        let bounded = evaluate_policies(&c, &[&d], Some(&b));
        let boundary = evaluate_policies(&c, &[&b], None);
        invariants(&bounded);
        prop_assert!(bounded.granted.is_subset(&alone.granted));
        prop_assert!(bounded.granted.is_subset(&boundary.granted));
    }

    /// Corrupted snapshots never panic: they parse to an error (with a path) or evaluate.
    #[test]
    fn corrupted_input_never_panics(edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let path = format!("{}/tests/fixtures/iam/account_111111111111.json", env!("CARGO_MANIFEST_DIR"));
        let mut bytes = std::fs::read(path).expect("fixture");
        for (at, b) in edits {
            let i = at.index(bytes.len());
            let alphabet = b"{}[]\\\",:%7B0 ";
            bytes[i] = alphabet[usize::from(b) % alphabet.len()];
        }
        if let Ok(doc) = parse_iam_json(&bytes, "corrupt") {
            let mut s = IamSnapshot::new();
            s.merge(doc);
            let _ = grantwatch_core::policy::evaluate(&s, &catalog());
        }
    }
}
