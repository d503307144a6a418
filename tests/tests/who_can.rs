//! `who-can` against a brute-force evaluation over every identity of a generated organization of
//! 5,000 identities, made harder: role chains, cross-account trust, trust conditions, boundaries,
//! Denies, policy variables, resource policies and SCPs are added to the generated accounts.
//!
//! The brute force here shares nothing with `grantwatch_core::access` but the policy parser and the
//! wildcard matcher: it evaluates every statement of every identity for the request, then every
//! (principal, role) pair for `sts:AssumeRole`, and closes the "can, possibly through roles"
//! relation by iterating to a fixpoint, keeping each identity's shortest chain length. `who-can`
//! uses candidate indexes, per-policy-set caching and a breadth-first search; both must agree on who,
//! how (directly or through how many roles) and whether a condition decides.
#![allow(clippy::unwrap_used, clippy::print_stdout)] // test code: a panic is a failed test

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};

use grantwatch_core::access::{AccessModel, Grade, ResourcePolicy, parse_resource_policies};
use grantwatch_core::glob::Glob;
use grantwatch_core::iam::{Effect, IamSnapshot, PolicyDocument, Statement, arn_account, parse_iam_json};
use grantwatch_core::org::Organization;
use grantwatch_core::policy::Vendored;
use grantwatch_synth::{Layout, OrgSpec, generate};

/// Adds, to each generated account file, identities that exercise every rule.
fn harden(account: &str, other: &str, doc: &mut Value) {
    let root = |a: &str| format!("arn:aws:iam::{a}:root");
    let inline = |name: &str, statements: Value| json!([{"PolicyName": name, "PolicyDocument": {"Version": "2012-10-17", "Statement": statements}}]);
    let user = |name: &str, statements: Value, extra: Value| {
        let mut u = json!({"UserName": name, "UserId": "AIDA", "Path": "/", "Arn": format!("arn:aws:iam::{account}:user/{name}"),
            "CreateDate": "2024-01-01T00:00:00Z", "UserPolicyList": inline(name, statements), "GroupList": [], "AttachedManagedPolicies": []});
        if let (Some(u), Some(e)) = (u.as_object_mut(), extra.as_object()) {
            u.extend(e.clone());
        }
        u
    };
    let role = |name: &str, trust: Value, statements: Value| {
        json!({"RoleName": name, "RoleId": "AROA", "Path": "/", "Arn": format!("arn:aws:iam::{account}:role/{name}"),
            "CreateDate": "2024-01-01T00:00:00Z", "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": trust},
            "RolePolicyList": inline(name, statements), "AttachedManagedPolicies": [], "InstanceProfileList": []})
    };
    let trust_aws = |p: Value| json!([{"Effect": "Allow", "Principal": {"AWS": p}, "Action": "sts:AssumeRole"}]);
    let users = doc["UserDetailList"].as_array_mut().unwrap();
    for i in 0..6 {
        users.push(user(
            &format!("hopper-{i}"),
            json!([{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}]),
            json!({}),
        ));
    }
    users.push(user("hopper-bounded", json!([{"Effect": "Allow", "Action": "sts:*", "Resource": "*"}]),
        json!({"PermissionsBoundary": {"PermissionsBoundaryType": "Policy", "PermissionsBoundaryArn": "arn:aws:iam::aws:policy/ReadOnlyAccess"}})));
    users.push(user("hopper-mfa", json!([{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": format!("arn:aws:iam::{account}:role/chain-*"),
        "Condition": {"Bool": {"aws:MultiFactorAuthPresent": "true"}}}]), json!({})));
    users.push(user(
        "denied-reader",
        json!([{"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
        {"Effect": "Deny", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::target-bucket/*"}]),
        json!({}),
    ));
    users.push(user("cond-denied", json!([{"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
        {"Effect": "Deny", "Action": "s3:*", "Resource": "*", "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]), json!({})));
    users.push(user(
        "home-user",
        json!([{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::home/${aws:username}/*"}]),
        json!({}),
    ));
    users.push(user("tagged", json!([{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::target-bucket/${aws:PrincipalTag/team}/*"}]), json!({})));
    users.push(user("not-action", json!([{"Effect": "Allow", "NotAction": ["iam:*", "organizations:*"], "NotResource": "arn:aws:s3:::target-bucket/secret/*"}]), json!({})));
    users.push(user(
        "external-caller",
        json!([{"Effect": "Allow", "Action": ["s3:GetObject", "kms:Decrypt", "sts:AssumeRole"], "Resource": "*"}]),
        json!({}),
    ));
    users.push(user("no-rights", json!([]), json!({})));

    let roles = doc["RoleDetailList"].as_array_mut().unwrap();
    roles.push(role("chain-a", trust_aws(json!(root(account))),
        json!([{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": format!("arn:aws:iam::{account}:role/chain-b")}])));
    roles.push(role("chain-b", trust_aws(json!(format!("arn:aws:iam::{account}:role/chain-a"))),
        json!([{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": format!("arn:aws:iam::{account}:role/chain-c")}])));
    roles.push(role("chain-c", trust_aws(json!([format!("arn:aws:iam::{account}:role/chain-b"), format!("arn:aws:iam::{other}:user/external-caller")])),
        json!([{"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "kms:Decrypt", "iam:CreateAccessKey"], "Resource": "*"}])));
    roles.push(role(
        "vendor-access",
        json!([{"Effect": "Allow", "Principal": {"AWS": root(other)}, "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"sts:ExternalId": "vendor-7731"}}}]),
        json!([{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::target-bucket/*"}]),
    ));
    roles.push(role(
        "open-role",
        json!([{"Effect": "Allow", "Principal": "*", "Action": "sts:AssumeRole"}]),
        json!([{"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::target-bucket"}]),
    ));
    roles.push(role("denying-trust", json!([{"Effect": "Allow", "Principal": {"AWS": root(account)}, "Action": "sts:AssumeRole"},
        {"Effect": "Deny", "Principal": {"AWS": format!("arn:aws:iam::{account}:user/hopper-0")}, "Action": "sts:AssumeRole"}]),
        json!([{"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*"}])));
}

fn resource_policies(accounts: &[String]) -> Vec<ResourcePolicy> {
    let (a, b) = (&accounts[0], &accounts[1]);
    let file = json!({"ResourcePolicies": [
        {"Arn": "arn:aws:s3:::shared-bucket", "Account": a, "Policy": {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{b}:user/external-caller")}, "Action": "s3:GetObject", "Resource": "arn:aws:s3:::shared-bucket/*"},
            {"Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{a}:user/no-rights")}, "Action": "s3:GetObject", "Resource": "arn:aws:s3:::shared-bucket/*"},
            {"Effect": "Deny", "Principal": "*", "Action": "s3:*", "Resource": "arn:aws:s3:::shared-bucket/private/*"}]}},
        {"Arn": format!("arn:aws:kms:us-east-1:{a}:key/1111"), "Policy": {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{a}:root")}, "Action": "kms:*", "Resource": "*"}]}},
        {"Arn": format!("arn:aws:kms:us-east-1:{a}:key/2222"), "Policy": {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{a}:role/chain-c")}, "Action": "kms:Decrypt", "Resource": "*"}]}}
    ]});
    parse_resource_policies(&file.to_string(), "resource-policies.json").unwrap()
}

fn organization(accounts: &[String]) -> Organization {
    let org = json!({
        "management_account": accounts[4],
        "roots": [{"id": "r-root"}],
        "organizational_units": [{"id": "ou-restricted", "parent": "r-root"}],
        "accounts": [{"id": accounts[0], "parent": "r-root"}, {"id": accounts[1], "parent": "ou-restricted"},
                     {"id": accounts[2], "parent": "r-root"}, {"id": accounts[3], "parent": "r-root"}, {"id": accounts[4], "parent": "r-root"}],
        "policies": [
            {"id": "p-full", "type": "SERVICE_CONTROL_POLICY", "content": {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]},
             "targets": ["r-root", "ou-restricted", accounts[0], accounts[2], accounts[3], accounts[4]]},
            {"id": "p-list", "type": "SERVICE_CONTROL_POLICY", "content": {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:*", "sts:*", "kms:*"], "Resource": "*"}]},
             "targets": [accounts[1]]},
            {"id": "p-deny", "type": "SERVICE_CONTROL_POLICY", "content": {"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::target-bucket/locked/*"}]},
             "targets": [accounts[2]]}
        ]
    });
    Organization::parse(&org.to_string(), "org.json").unwrap()
}

// ---- the brute force ----

struct Who<'a> {
    arn: &'a str,
    account: &'a str,
    name: &'a str,
    user: bool,
    policies: Vec<&'a PolicyDocument>,
    boundary: Option<&'a PolicyDocument>,
}

fn substitute(p: &str, who: &Who<'_>) -> (String, bool) {
    let mut s = p.to_string();
    if who.user {
        s = s.replace("${aws:username}", who.name);
    }
    s = s.replace("${aws:PrincipalAccount}", who.account);
    let mut unknown = false;
    while let Some(start) = s.find("${") {
        let Some(end) = s[start..].find('}') else { break };
        s.replace_range(start..start + end + 1, "*");
        unknown = true;
    }
    (s, unknown)
}

/// Grade of one statement for the request: `None` when it does not apply.
fn applies(st: &Statement, action: &str, resource: &str, who: Option<&Who<'_>>, check_resource: bool) -> Option<Grade> {
    let named = st.actions.iter().any(|p| Glob::IAM_ACTION.matches(p.trim(), action));
    if named == st.not_action {
        return None;
    }
    let mut grade = if st.condition.is_some() { Grade::Conditional } else { Grade::Yes };
    if check_resource {
        let mut hit = None;
        for p in &st.resources {
            let (pat, unknown) = match who {
                Some(w) => substitute(p, w),
                None => (p.clone(), false),
            };
            if Glob::RESOURCE.matches(&pat, resource) {
                hit = Some(hit.map_or(unknown, |u: bool| u && unknown));
            }
        }
        let ok = match (hit, st.not_resource) {
            (None, false) => return None,
            (Some(unknown), false) => !unknown,
            (Some(false), true) => return None,
            (Some(true), true) => false,
            (None, true) => true,
        };
        if !ok {
            grade = Grade::Conditional;
        }
    }
    Some(grade)
}

#[derive(Default, Clone, Copy)]
struct Tally {
    allow: Grade,
    deny: bool,
    cond_deny: bool,
}

fn tally<'a>(
    docs: impl IntoIterator<Item = &'a PolicyDocument>,
    action: &str,
    resource: &str,
    who: Option<&Who<'_>>,
) -> Tally {
    let mut t = Tally::default();
    for d in docs {
        for st in &d.statements {
            if let Some(g) = applies(st, action, resource, who, true) {
                match (st.effect, g) {
                    (Effect::Allow, g) => t.allow = t.allow.max(g),
                    (Effect::Deny, Grade::Yes) => t.deny = true,
                    (Effect::Deny, _) => t.cond_deny = true,
                }
            }
        }
    }
    t
}

/// (allow by name, allow by account, deny, conditional deny) of a resource or trust policy for `who`.
fn resource_tally(
    doc: &PolicyDocument,
    action: &str,
    resource: &str,
    who: &Who<'_>,
    trust: bool,
) -> (Grade, Grade, bool, bool) {
    let (mut named, mut by_account, mut deny, mut cond_deny) = (Grade::No, Grade::No, false, false);
    for st in &doc.statements {
        let Some(p) = &st.principal else { continue };
        let is_named = p.any || p.aws.iter().any(|a| a == who.arn);
        let is_account = p.aws.iter().any(|a| a == who.account || *a == format!("arn:aws:iam::{}:root", who.account));
        if !is_named && !is_account {
            continue;
        }
        let Some(g) = applies(st, action, resource, Some(who), !trust) else { continue };
        match st.effect {
            Effect::Allow if is_named => named = named.max(g),
            Effect::Allow => by_account = by_account.max(g),
            Effect::Deny if g == Grade::Yes => deny = true,
            Effect::Deny => cond_deny = true,
        }
    }
    (named, by_account, deny, cond_deny)
}

struct World<'a> {
    who: Vec<Who<'a>>,
    trust: BTreeMap<&'a str, &'a PolicyDocument>,
    resources: &'a [ResourcePolicy],
    org: &'a Organization,
}

fn brute_decide(w: &World<'_>, i: usize, action: &str, resource: &str) -> Grade {
    let who = &w.who[i];
    let id = tally(who.policies.iter().copied(), action, resource, Some(who));
    let mut id_grade = id.allow;
    let (mut deny, mut cond_deny) = (id.deny, id.cond_deny);
    if let Some(b) = who.boundary {
        let t = tally([b], action, resource, Some(who));
        id_grade = id_grade.min(t.allow);
        deny |= t.deny;
        cond_deny |= t.cond_deny;
    }
    let mut grade = id_grade;
    let bucket =
        resource.strip_prefix("arn:aws:s3:::").and_then(|r| r.split('/').next()).map(|b| format!("arn:aws:s3:::{b}"));
    let rp = w
        .trust
        .get(resource)
        .filter(|_| action.starts_with("sts:"))
        .map(|d| (*d, arn_account(resource).unwrap().to_string(), true))
        .or_else(|| {
            w.resources
                .iter()
                .find(|r| r.arn == resource || Some(&r.arn) == bucket.as_ref())
                .map(|r| (&r.document, r.account.clone(), r.arn.starts_with("arn:aws:kms:")))
        });
    let mut resource_account = arn_account(resource).filter(|a| !a.is_empty()).map(str::to_string);
    if let Some((doc, account, required)) = rp {
        let is_trust = w.trust.contains_key(resource) && action.starts_with("sts:");
        let (named, by_account, d, cd) = resource_tally(doc, action, resource, who, is_trust);
        deny |= d;
        cond_deny |= cd;
        grade = if account != who.account {
            id_grade.min(named.max(by_account))
        } else if required {
            named.max(by_account.min(id_grade))
        } else {
            id_grade.max(named)
        };
        resource_account = Some(account);
    } else if resource_account.as_deref().is_some_and(|a| a != who.account && a != "aws") {
        grade = Grade::No;
    }
    if let Some(p) = w.org.policies_above(who.account) {
        for level in &p.scp_levels {
            let t = tally(level.iter().copied(), action, resource, None);
            grade = grade.min(t.allow);
            deny |= t.deny;
            cond_deny |= t.cond_deny;
        }
    }
    if let Some(p) = w.org.policies_above(resource_account.as_deref().unwrap_or(who.account)) {
        let t = tally(p.rcps.iter().copied(), action, resource, None);
        deny |= t.deny;
        cond_deny |= t.cond_deny;
    }
    if deny {
        Grade::No
    } else if cond_deny {
        grade.min(Grade::Conditional)
    } else {
        grade
    }
}

/// Every (principal, role, grade) where the principal may assume the role: every pair whose trust
/// policy mentions the principal (by ARN, account or `*`) is decided, with no index.
fn brute_assume(w: &World<'_>) -> Vec<Vec<(usize, Grade)>> {
    let n = w.who.len();
    let mut assume: Vec<Vec<(usize, Grade)>> = vec![Vec::new(); n];
    for r in 0..n {
        let Some(trust) = w.trust.get(w.who[r].arn) else { continue };
        for (p, a) in assume.iter_mut().enumerate() {
            if p == r {
                continue;
            }
            let (named, by_account, _, _) = resource_tally(trust, "sts:AssumeRole", w.who[r].arn, &w.who[p], true);
            if named == Grade::No && by_account == Grade::No {
                continue;
            }
            let g = brute_decide(w, p, "sts:AssumeRole", w.who[r].arn);
            if g > Grade::No {
                a.push((r, g));
            }
        }
    }
    assume
}

/// Everyone who can, with (chain length, grade of the direct decision or of the shortest chain).
fn brute_who_can(
    w: &World<'_>,
    assume: &[Vec<(usize, Grade)>],
    action: &str,
    resource: &str,
) -> BTreeMap<String, (usize, Grade)> {
    let n = w.who.len();
    let is_self = |i: usize| action == "sts:AssumeRole" && w.who[i].arn == resource;
    let direct: Vec<Grade> =
        (0..n).map(|i| if is_self(i) { Grade::No } else { brute_decide(w, i, action, resource) }).collect();
    // Fixpoint on (shortest length, its grade); among equally short chains the best grade.
    let mut best: Vec<Option<(usize, Grade)>> = direct.iter().map(|&g| (g > Grade::No).then_some((0, g))).collect();
    loop {
        let mut changed = false;
        for p in 0..n {
            for &(r, g) in &assume[p] {
                let Some((len, rg)) = best[r] else { continue };
                let cand = (len + 1, rg.min(g));
                let better = match best[p] {
                    None => true,
                    Some((l, bg)) => cand.0 < l || (cand.0 == l && cand.1 > bg),
                };
                if better {
                    best[p] = Some(cand);
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    (0..n).filter_map(|i| best[i].map(|b| (w.who[i].arn.to_string(), b))).collect()
}

fn snapshot(org: &Path) -> (IamSnapshot, Vec<String>) {
    let mut files: Vec<_> = std::fs::read_dir(org.join("iam"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with("access-keys"))
        .collect();
    files.sort();
    let accounts: Vec<String> = files.iter().map(|p| p.file_stem().unwrap().to_string_lossy().into_owned()).collect();
    let mut snap = IamSnapshot::default();
    for (i, f) in files.iter().enumerate() {
        let mut doc: Value = serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap();
        harden(&accounts[i], &accounts[(i + 1) % accounts.len()], &mut doc);
        snap.merge(parse_iam_json(doc.to_string().as_bytes(), &f.display().to_string()).unwrap());
    }
    (snap, accounts)
}

#[test]
fn who_can_equals_brute_force_on_5000_identities() {
    let dir = tempfile::tempdir().unwrap();
    let spec = OrgSpec::new(11, 5, 1_000, 2, 500, Layout::JsonLines);
    generate(&spec, dir.path()).unwrap();
    let (snap, accounts) = snapshot(dir.path());
    let resources = resource_policies(&accounts);
    let org = organization(&accounts);
    let model = AccessModel::new(&snap, &resources, Some(&org));
    let groups: Vec<&str> = snap.groups.iter().map(|g| g.arn.as_str()).collect();
    assert!(model.subjects.len() - groups.len() >= 5_000, "{} identities", model.subjects.len());

    let mut world = World { who: Vec::new(), trust: BTreeMap::new(), resources: &resources, org: &org };
    let by_name = |acct: &str, name: &str| snap.groups.iter().find(|g| g.account == acct && g.name == name);
    // AWS managed policies the snapshot does not carry come from the vendored copy, as in the model.
    let vendored = Vendored::load();
    let mut aws_managed: BTreeMap<String, PolicyDocument> = BTreeMap::new();
    for a in snap
        .users
        .iter()
        .flat_map(|u| &u.attached)
        .chain(snap.roles.iter().flat_map(|r| &r.attached))
        .chain(snap.groups.iter().flat_map(|g| &g.attached))
    {
        if !snap.policies.contains_key(a)
            && let Some(d) = vendored.document(a)
        {
            aws_managed.insert(a.clone(), d);
        }
    }
    let managed = |arn: &str| snap.policies.get(arn).and_then(|p| p.document.as_ref()).or_else(|| aws_managed.get(arn));
    for u in &snap.users {
        let mut policies: Vec<&PolicyDocument> = u.inline.iter().map(|p| &p.document).collect();
        policies.extend(u.attached.iter().filter_map(|a| managed(a)));
        for g in u.groups.iter().filter_map(|g| by_name(&u.account, g)) {
            policies.extend(g.inline.iter().map(|p| &p.document));
            policies.extend(g.attached.iter().filter_map(|a| managed(a)));
        }
        let boundary = u.boundary.as_deref().and_then(managed);
        world.who.push(Who { arn: &u.arn, account: &u.account, name: &u.name, user: true, policies, boundary });
    }
    for r in &snap.roles {
        let mut policies: Vec<&PolicyDocument> = r.inline.iter().map(|p| &p.document).collect();
        policies.extend(r.attached.iter().filter_map(|a| managed(a)));
        let boundary = r.boundary.as_deref().and_then(managed);
        world.who.push(Who { arn: &r.arn, account: &r.account, name: &r.name, user: false, policies, boundary });
        if let Some(t) = &r.trust_policy {
            world.trust.insert(&r.arn, t);
        }
    }

    let (a, b, c) = (&accounts[0], &accounts[1], &accounts[2]);
    let queries = [
        ("s3:GetObject".to_string(), "arn:aws:s3:::target-bucket/report.csv".to_string()),
        ("s3:GetObject".to_string(), "arn:aws:s3:::target-bucket/locked/x".to_string()),
        ("s3:GetObject".to_string(), "arn:aws:s3:::target-bucket/secret/x".to_string()),
        ("s3:GetObject".to_string(), "arn:aws:s3:::shared-bucket/data/1".to_string()),
        ("s3:GetObject".to_string(), "arn:aws:s3:::shared-bucket/private/1".to_string()),
        ("s3:GetObject".to_string(), "arn:aws:s3:::home/home-user/notes".to_string()),
        ("kms:Decrypt".to_string(), format!("arn:aws:kms:us-east-1:{a}:key/1111")),
        ("kms:Decrypt".to_string(), format!("arn:aws:kms:us-east-1:{a}:key/2222")),
        ("iam:CreateAccessKey".to_string(), format!("arn:aws:iam::{}:user/no-rights", accounts[3])),
        ("sts:AssumeRole".to_string(), format!("arn:aws:iam::{a}:role/vendor-access")),
        ("sts:AssumeRole".to_string(), format!("arn:aws:iam::{c}:role/chain-c")),
        ("ec2:RunInstances".to_string(), format!("arn:aws:ec2:us-east-1:{c}:instance/*")),
        ("s3:DeleteBucket".to_string(), "arn:aws:s3:::target-bucket".to_string()),
        ("s3:ListBucket".to_string(), "arn:aws:s3:::target-bucket".to_string()),
        ("iam:PutRolePolicy".to_string(), format!("arn:aws:iam::{a}:role/chain-a")),
        ("iam:PassRole".to_string(), format!("arn:aws:iam::{c}:role/vendor-access")),
        ("s3:GetObject".to_string(), "arn:aws:s3:::target-bucket/team-a/report.csv".to_string()),
    ];
    let started = std::time::Instant::now();
    let assume = brute_assume(&world);
    println!("brute force: assume pairs in {:?}", started.elapsed());
    let started = std::time::Instant::now();
    let edges = model.assume_edges();
    println!("model: {} assume edges in {:?}", edges.len(), started.elapsed());
    let mut chains = 0;
    for (action, resource) in &queries {
        let started = std::time::Instant::now();
        let got = model.who_can(action, resource, &edges);
        let took = started.elapsed();
        let got: BTreeMap<String, (usize, Grade)> =
            got.iter().map(|a| (model.subjects[a.subject as usize].arn.clone(), (a.chain.len(), a.grade))).collect();
        let want = brute_who_can(&world, &assume, action, resource);
        let diff: Vec<_> = want
            .iter()
            .filter(|(k, v)| got.get(*k) != Some(v))
            .map(|(k, v)| format!("{k}: want {v:?} got {:?}", got.get(k)))
            .chain(got.iter().filter(|(k, _)| !want.contains_key(*k)).map(|(k, v)| format!("{k}: want none got {v:?}")))
            .take(10)
            .collect();
        assert!(diff.is_empty(), "{action} on {resource}: {diff:#?}");
        chains += got.values().filter(|(l, _)| *l > 0).count();
        println!("{action} on {resource}: {} identities ({took:?} in a debug build)", got.len());
    }
    assert!(chains > 0, "no answer went through a role: the test would not exercise the chains");

    // The cases built above, spelled out.
    let at = |action: &str, resource: &str| -> BTreeMap<String, (usize, Grade)> {
        model
            .who_can(action, resource, &edges)
            .iter()
            .map(|a| (model.subjects[a.subject as usize].arn.clone(), (a.chain.len(), a.grade)))
            .collect()
    };
    let report = at("s3:GetObject", "arn:aws:s3:::target-bucket/report.csv");
    let user = |acct: &str, n: &str| format!("arn:aws:iam::{acct}:user/{n}");
    assert!(!report.contains_key(&user(a, "denied-reader")), "an explicit Deny wins");
    assert_eq!(report.get(&user(a, "cond-denied")).map(|v| v.1), Some(Grade::Conditional));
    assert_eq!(report.get(&user(a, "hopper-0")), Some(&(1, Grade::Yes)), "through OrganizationAccountAccessRole");
    assert_eq!(report.get(&user(a, "hopper-mfa")), Some(&(3, Grade::Conditional)), "chain-a, chain-b, chain-c");
    let chain_c = at("sts:AssumeRole", &format!("arn:aws:iam::{a}:role/chain-c"));
    assert_eq!(chain_c.get(&user(a, "hopper-0")), Some(&(2, Grade::Yes)));
    assert_eq!(
        chain_c.get(&user(b, "external-caller")),
        Some(&(0, Grade::Yes)),
        "named across accounts, and allowed at home"
    );
    let denying = at("sts:AssumeRole", &format!("arn:aws:iam::{a}:role/denying-trust"));
    assert_ne!(denying.get(&user(a, "hopper-0")).map(|v| v.0), Some(0), "a Deny in the trust policy");
    assert_eq!(denying.get(&user(a, "hopper-1")).map(|v| v.0), Some(0));
    let d = &accounts[3];
    let keys = at("iam:CreateAccessKey", &format!("arn:aws:iam::{d}:user/no-rights"));
    assert!(keys.contains_key(&user(d, "hopper-0")));
    assert!(
        keys.iter().filter(|(_, v)| v.0 == 0).all(|(k, _)| arn_account(k) == Some(d.as_str())),
        "IAM users have no resource policy: only the same account directly"
    );
    assert!(
        at("iam:CreateAccessKey", &format!("arn:aws:iam::{b}:user/no-rights")).is_empty(),
        "the SCP of {b} allows only s3, sts, kms"
    );
    assert!(!report.contains_key(&user(a, "hopper-bounded")), "ReadOnlyAccess as boundary has no sts:AssumeRole");
    let team = at("s3:GetObject", "arn:aws:s3:::target-bucket/team-a/report.csv");
    assert_eq!(team.get(&user(a, "tagged")), Some(&(0, Grade::Conditional)), "${{aws:PrincipalTag/team}} is unknown");
    let listing = at("s3:ListBucket", "arn:aws:s3:::target-bucket");
    assert!(
        listing.contains_key(&user(a, "no-rights")),
        "open-role trusts anyone: a same-account caller needs no Allow of its own"
    );
    let vendor = at("sts:AssumeRole", &format!("arn:aws:iam::{a}:role/vendor-access"));
    assert_eq!(vendor.get(&user(b, "external-caller")).map(|v| v.1), Some(Grade::Conditional), "sts:ExternalId");
    assert!(!vendor.contains_key(&user(b, "no-rights")), "cross-account needs the caller's own Allow");
    let shared = at("s3:GetObject", "arn:aws:s3:::shared-bucket/data/1");
    assert!(shared.contains_key(&user(a, "no-rights")), "a bucket policy naming a same-account user suffices");
    assert!(shared.contains_key(&user(b, "external-caller")));
    let key = at("kms:Decrypt", &format!("arn:aws:kms:us-east-1:{a}:key/2222"));
    assert_eq!(
        key.get(&user(a, "external-caller")),
        Some(&(3, Grade::Yes)),
        "a key policy must allow: this one names chain-c only"
    );
}
