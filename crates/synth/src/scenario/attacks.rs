//! Attack instances: who is compromised, when, from where, and the exact calls, with their labels.

use std::collections::BTreeSet;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use super::api::{APIS, ix};
use super::normal::weekday;
use super::record::{Ev, Fail, object_key};
use super::world::{ADMIN_CORE, AUDIT_CORE, Arch, DEV_CORE, SCANNER, World};
use super::{Label, ScenarioConfig, Technique};
use crate::util::{hex, key_id, time_string, uuid};

const ATTACK_NETS: &[&str] = &[
    "185.220.101.",
    "45.155.205.",
    "194.26.29.",
    "5.188.206.",
    "91.240.118.",
    "179.43.128.",
    "103.251.167.",
    "146.70.38.",
];
const ATTACK_UAS: &[&str] = &[
    "Boto3/1.26.45 Python/3.11.2 Linux/6.1.0-kali7-amd64 Botocore/1.29.45",
    "aws-cli/1.27.45 Python/3.11.2 Linux/6.5.0-kali3-amd64 botocore/1.29.45",
    "aws-cli/2.13.0 Python/3.11.4 Linux/6.3.0-kali1-amd64 exe/x86_64.kali.2023 prompt/off command/sts.get-caller-identity",
    "Boto3/1.28.3 md/Botocore#1.31.3 ua/2.0 os/linux#6.3.0-kali1-amd64 md/arch#x86_64 lang/python#3.11.4 md/pyimpl#CPython cfg/retry-mode#legacy Botocore/1.31.3",
    "aws-sdk-go/1.44.122 (go1.19.3; linux; amd64)",
];
const BAD_REGIONS: &[&str] =
    &["ap-southeast-1", "sa-east-1", "ap-northeast-2", "eu-north-1", "ap-south-1", "me-central-1"];
const ADMIN_DOC: &str =
    "{\"Version\":\"2012-10-17\",\"Statement\":[{\"Effect\":\"Allow\",\"Action\":\"*\",\"Resource\":\"*\"}]}";

/// Who makes a call and from where.
#[derive(Clone)]
struct Actor {
    who: usize,
    persona: u16,
    session: Option<String>,
    ip: String,
    ua: String,
    key: Option<String>,
}

struct Builder<'a> {
    evs: Vec<Ev>,
    t: i64,
    rng: &'a mut ChaCha8Rng,
}

impl Builder<'_> {
    #[allow(clippy::too_many_arguments)]
    fn call(
        &mut self,
        a: &Actor,
        api: &str,
        region: &'static str,
        fail: Fail,
        req: Option<Value>,
        resp: Option<Value>,
    ) {
        let mut e = Ev::new(self.t, a.who, ix(api), region, a.ip.clone(), a.ua.clone());
        e.persona = a.persona;
        e.session.clone_from(&a.session);
        e.key.clone_from(&a.key);
        e.fail = fail;
        e.req = req;
        e.resp = resp;
        e.id = Some(uuid(self.rng));
        self.evs.push(e);
    }

    fn gap(&mut self, lo: i64, hi: i64) {
        self.t += self.rng.random_range(lo..=hi);
    }
}

fn attacker_ip<G: Rng>(rng: &mut G) -> String {
    format!("{}{}", ATTACK_NETS[rng.random_range(0..ATTACK_NETS.len())], rng.random_range(2..=250u8))
}

fn external_account<G: Rng>(rng: &mut G) -> String {
    let mut s = String::from("9");
    for _ in 0..11 {
        s.push(char::from(b'0' + rng.random_range(0..10u8)));
    }
    s
}

/// Whether an identity may be the victim of `tech`.
fn eligible(w: &World, i: usize, tech: Technique) -> bool {
    let id = &w.ids[i];
    let live = id.first_day < w.history_days && id.last_day >= w.days - 1;
    match tech {
        Technique::DormantIdentity => id.arch == Arch::Dormant,
        Technique::StolenCredentials => {
            live && matches!(
                id.arch,
                Arch::Developer
                    | Arch::Admin
                    | Arch::Analyst
                    | Arch::Auditor
                    | Arch::Sso
                    | Arch::ServiceUser
                    | Arch::AppService
            )
        }
        Technique::PrivilegeEscalation => {
            live && matches!(
                id.arch,
                Arch::Developer | Arch::CiCd | Arch::AppService | Arch::Lambda | Arch::ServiceUser
            )
        }
        Technique::ReconBurst => {
            live && matches!(
                id.arch,
                Arch::Developer
                    | Arch::Analyst
                    | Arch::AppService
                    | Arch::Lambda
                    | Arch::CiCd
                    | Arch::ServiceUser
                    | Arch::Sso
            )
        }
        Technique::DefenseEvasion => {
            live && matches!(id.arch, Arch::Admin | Arch::Sso | Arch::CiCd | Arch::Developer)
                && !(id.arch == Arch::Sso && id.name.contains("ReadOnly"))
        }
        Technique::DataExfiltration => {
            live && matches!(id.arch, Arch::Developer | Arch::Analyst | Arch::AppService | Arch::Lambda | Arch::CiCd)
        }
    }
}

fn grant(w: &mut World, i: usize, actions: &[&str]) {
    for a in actions {
        if !w.ids[i].extra_grants.iter().any(|x| x == a) {
            w.ids[i].extra_grants.push((*a).to_string());
        }
    }
}

/// Plans every attack instance; adds the grants they exploit to the victims' policies.
pub(super) fn plan(cfg: &ScenarioConfig, w: &mut World, rng: &mut ChaCha8Rng) -> (Vec<Ev>, Vec<Label>) {
    let ds = w.start + w.history_days * 86_400;
    let de = w.start + w.days * 86_400;
    let n_acc = w.accounts.len();
    // per account, an overprivileged Lambda role (AdministratorAccess): the PassRole target
    let mut admin_lambda = vec![None; n_acc];
    for (i, id) in w.ids.iter().enumerate() {
        if id.arch == Arch::Lambda && admin_lambda[id.account].is_none() && id.first_day == 0 {
            admin_lambda[id.account] = Some(i);
        }
    }
    for j in admin_lambda.iter().flatten() {
        w.ids[*j].managed.push("AdministratorAccess");
    }
    let mut used: BTreeSet<usize> = BTreeSet::new();
    for j in admin_lambda.iter().flatten() {
        used.insert(*j);
    }
    let mut evs = Vec::new();
    let mut labels = Vec::new();
    for (ti, &tech) in Technique::ALL.iter().enumerate() {
        for k in 0..cfg.attacks_per_technique as usize {
            let acct = (k + ti) % n_acc;
            let fits = |i: &usize| eligible(w, *i, tech);
            let fresh: Vec<usize> =
                (0..w.ids.len()).filter(|i| w.ids[*i].account == acct && !used.contains(i)).filter(fits).collect();
            let any_fresh: Vec<usize> = (0..w.ids.len()).filter(|i| !used.contains(i)).filter(fits).collect();
            let any: Vec<usize> = (0..w.ids.len()).filter(fits).collect();
            let pool = if !fresh.is_empty() {
                fresh
            } else if !any_fresh.is_empty() {
                any_fresh
            } else {
                any
            };
            if pool.is_empty() {
                continue;
            }
            let v = pool[rng.random_range(0..pool.len())];
            used.insert(v);
            let t0 = start_time(w, v, tech, ds, de, rng);
            let mut b = Builder { evs: Vec::new(), t: t0, rng };
            let description = match tech {
                Technique::StolenCredentials => stolen(w, v, &mut b),
                Technique::PrivilegeEscalation => privesc(w, v, k, admin_lambda[w.ids[v].account], &mut b),
                Technique::ReconBurst => recon(w, v, &mut b),
                Technique::DefenseEvasion => evasion(w, v, &mut b),
                Technique::DataExfiltration => exfil(w, v, k, &mut b),
                Technique::DormantIdentity => dormant(w, v, &mut b),
            };
            let (mut inst, grants) = (b.evs, description.1);
            grant(w, v, &grants);
            // keep the whole instance inside the detection window
            let last = inst.iter().map(|e| e.t).max().unwrap_or(t0);
            if last >= de - 60 {
                let shift = last - (de - 60);
                for e in &mut inst {
                    e.t -= shift;
                }
            }
            let first = inst.iter().map(|e| e.t).min().unwrap_or(t0);
            if first < ds {
                for e in &mut inst {
                    e.t += ds - first;
                }
            }
            inst.sort_by_key(|e| e.t);
            labels.push(Label {
                id: format!("atk-{}-{:03}", tech.as_str(), k + 1),
                technique: tech,
                identity: w.ids[v].arn.clone(),
                account: w.accounts[w.ids[v].account].id.clone(),
                start: grantwatch_types::EventTime(inst.first().map_or(t0, |e| e.t) * 1000),
                end: grantwatch_types::EventTime(inst.last().map_or(t0, |e| e.t) * 1000),
                event_ids: inst.iter().filter_map(|e| e.id.clone()).collect(),
                description: description.0,
            });
            evs.extend(inst);
        }
    }
    (evs, labels)
}

fn start_time(w: &World, v: usize, tech: Technique, ds: i64, de: i64, rng: &mut ChaCha8Rng) -> i64 {
    let id = &w.ids[v];
    let days = (de - ds) / 86_400;
    let day = rng.random_range(0..days.max(1));
    let day_start = ds + day * 86_400;
    let human = id.arch.human();
    let tz = id.personas.first().map_or(0, |p| p.tz);
    let local = |h: i64, rng: &mut ChaCha8Rng| (day_start + (h - tz) * 3600 + rng.random_range(0..3600)).max(day_start);
    let t = match tech {
        Technique::StolenCredentials if human => {
            let weekend: Vec<i64> = (0..days).filter(|d| weekday(ds + d * 86_400) >= 5).collect();
            if !weekend.is_empty() && rng.random_bool(0.3) {
                let d = weekend[rng.random_range(0..weekend.len())];
                ds + d * 86_400 + (rng.random_range(10..20) - tz) * 3600 + rng.random_range(0..3600)
            } else {
                local(rng.random_range(1..5), rng)
            }
        }
        _ if human && rng.random_bool(0.5) => {
            let p = &id.personas[0];
            local(rng.random_range(p.start_hour..p.end_hour - 1), rng)
        }
        _ => day_start + rng.random_range(0..86_400),
    };
    t.clamp(ds + 600, (de - 4 * 3600).max(ds + 600))
}

fn own_actor(w: &World, v: usize) -> Actor {
    let id = &w.ids[v];
    let persona = if id.personas.len() > 1 { (v * 7 % id.personas.len()) as u16 } else { 0 };
    let p = &id.personas[usize::from(persona)];
    let (ip, ua) = if id.arch.human() || id.arch == Arch::BreakGlass {
        (p.office_ip.clone(), p.cli_ua.clone())
    } else {
        (id.ips[0].clone(), id.ua.clone())
    };
    Actor { who: v, persona, session: None, ip, ua, key: None }
}

fn attacker(w: &World, v: usize, rng: &mut ChaCha8Rng) -> Actor {
    let mut a = own_actor(w, v);
    a.ip = attacker_ip(rng);
    a.ua = ATTACK_UAS[rng.random_range(0..ATTACK_UAS.len())].to_string();
    a
}

fn self_ref(w: &World, v: usize) -> (&'static str, Value) {
    let id = &w.ids[v];
    if id.is_role {
        ("iam:GetRole", json!({"roleName": id.name}))
    } else {
        ("iam:GetUser", json!({"userName": id.name}))
    }
}

fn s3_req(b: &str, region: &str) -> Value {
    json!({"bucketName": b, "Host": format!("{b}.s3.{region}.amazonaws.com")})
}

/// Fail with AccessDenied unless the identity's habits include the call.
fn allowed(w: &World, v: usize, api: &str) -> Fail {
    let i = ix(api);
    let id = &w.ids[v];
    let admin = matches!(id.arch, Arch::Admin) || (id.arch == Arch::Sso && id.name.contains("Administrator"));
    if admin || id.core.contains(&i) || id.ext.contains(&i) { Fail::No } else { Fail::Denied }
}

type Outcome = (String, Vec<&'static str>);

fn stolen(w: &World, v: usize, b: &mut Builder<'_>) -> Outcome {
    let a = attacker(w, v, b.rng);
    let id = &w.ids[v];
    let home = id.regions[0];
    let bad = BAD_REGIONS[b.rng.random_range(0..BAD_REGIONS.len())];
    b.call(&a, "sts:GetCallerIdentity", bad, Fail::No, None, None);
    b.gap(5, 60);
    b.call(&a, "s3:ListBuckets", home, allowed(w, v, "s3:ListBuckets"), None, None);
    b.gap(3, 30);
    let (api, req) = self_ref(w, v);
    b.call(&a, api, "us-east-1", allowed(w, v, api), Some(req), None);
    b.gap(3, 30);
    b.call(&a, "iam:ListUsers", "us-east-1", allowed(w, v, "iam:ListUsers"), None, None);
    for r in [bad, BAD_REGIONS[(BAD_REGIONS.iter().position(|x| *x == bad).unwrap_or(0) + 1) % BAD_REGIONS.len()], home]
    {
        b.gap(2, 20);
        b.call(&a, "ec2:DescribeInstances", r, allowed(w, v, "ec2:DescribeInstances"), None, None);
    }
    b.gap(5, 40);
    b.call(&a, "secretsmanager:ListSecrets", home, allowed(w, v, "secretsmanager:ListSecrets"), None, None);
    let acct = &w.accounts[id.account];
    let n = b.rng.random_range(5..=20);
    for _ in 0..n {
        b.gap(2, 120);
        let bucket =
            if id.buckets.is_empty() { &acct.buckets[0] } else { &id.buckets[b.rng.random_range(0..id.buckets.len())] };
        let key = object_key(b.rng, bucket, b.t);
        let mut req = s3_req(bucket, home);
        req["key"] = json!(key);
        b.call(&a, "s3:GetObject", home, Fail::No, Some(req), None);
    }
    if let Some(s) = id.secrets.first() {
        b.gap(10, 60);
        let req =
            json!({"secretId": format!("arn:aws:secretsmanager:{home}:{}:secret:{s}-{}", acct.id, hex(b.rng, 6))});
        b.call(&a, "secretsmanager:GetSecretValue", home, Fail::No, Some(req), None);
    }
    (
        format!(
            "{}'s credentials used from {} ({}) in {bad}: discovery, then {n} S3 reads",
            id.name,
            a.ip,
            a.ua.split(' ').next().unwrap_or("")
        ),
        vec!["s3:GetObject", "secretsmanager:GetSecretValue"],
    )
}

fn privesc(w: &World, v: usize, k: usize, admin_lambda: Option<usize>, b: &mut Builder<'_>) -> Outcome {
    let id = &w.ids[v];
    let acct = &w.accounts[id.account];
    let aid = acct.id.as_str();
    let a = if b.rng.random_bool(0.5) { attacker(w, v, b.rng) } else { own_actor(w, v) };
    let region = id.regions[0];
    let g = "us-east-1";
    let admins: Vec<usize> =
        (0..w.ids.len()).filter(|&i| w.ids[i].account == id.account && w.ids[i].arch == Arch::Admin).collect();
    let variant = match k % 6 {
        1 if admin_lambda.is_none() => 0,
        3 if admins.is_empty() => 2,
        4 if admin_lambda.is_none() => 2,
        5 if id.is_role => 0,
        x => x,
    };
    b.call(&a, "sts:GetCallerIdentity", region, Fail::No, None, None);
    b.gap(3, 40);
    let (api, req) = self_ref(w, v);
    b.call(&a, api, g, Fail::No, Some(req.clone()), None);
    b.gap(3, 40);
    let list = if id.is_role { "iam:ListAttachedRolePolicies" } else { "iam:ListAttachedUserPolicies" };
    b.call(&a, list, g, Fail::No, Some(req), None);
    b.gap(10, 120);
    match variant {
        0 => {
            let p = id.policy.clone().unwrap_or_else(|| "DeveloperAccess".into());
            let arn = format!("arn:aws:iam::{aid}:policy/{p}");
            b.call(&a, "iam:GetPolicy", g, Fail::No, Some(json!({"policyArn": arn})), None);
            b.gap(5, 60);
            b.call(
                &a,
                "iam:CreatePolicyVersion",
                g,
                Fail::No,
                Some(json!({"policyArn": arn, "policyDocument": ADMIN_DOC, "setAsDefault": false})),
                Some(json!({"policyVersion": {"versionId": "v3", "isDefaultVersion": false, "createDate": time_string(b.t)}})),
            );
            b.gap(5, 60);
            b.call(
                &a,
                "iam:SetDefaultPolicyVersion",
                g,
                Fail::No,
                Some(json!({"policyArn": arn, "versionId": "v3"})),
                None,
            );
            (
                format!("{} creates an admin version v3 of {p} and makes it the default", id.name),
                vec![
                    "iam:GetPolicy",
                    "iam:CreatePolicyVersion",
                    "iam:SetDefaultPolicyVersion",
                    "iam:GetUser",
                    "iam:GetRole",
                    "iam:ListAttachedUserPolicies",
                    "iam:ListAttachedRolePolicies",
                ],
            )
        }
        1 => {
            let target = admin_lambda.map_or(v, |x| x);
            let role = &w.ids[target];
            let fname =
                format!("{}-{}", ["log-rotate", "healthcheck", "cost-report", "tag-sync"][k % 4], hex(b.rng, 6));
            let farn = format!("arn:aws:lambda:{region}:{aid}:function:{fname}");
            b.call(&a, "iam:ListRoles", g, Fail::No, None, None);
            b.gap(5, 60);
            b.call(&a, "iam:GetRole", g, Fail::No, Some(json!({"roleName": role.name})), None);
            b.gap(20, 120);
            b.call(
                &a,
                "lambda:CreateFunction20150331",
                region,
                Fail::No,
                Some(json!({"functionName": fname, "runtime": "python3.12", "role": role.arn, "handler": "index.handler", "code": {}, "timeout": 60, "publish": false})),
                Some(json!({"functionName": fname, "functionArn": farn, "runtime": "python3.12", "role": role.arn, "handler": "index.handler", "state": "Pending"})),
            );
            b.gap(10, 60);
            b.call(&a, "lambda:Invoke", region, Fail::No, Some(json!({"functionName": farn})), None);
            b.gap(1, 5);
            // the function, running as the admin role, grants the attacker admin
            let mut la = own_actor(w, target);
            la.session = Some(fname.clone());
            la.persona = 0;
            let (grant_api, req) = if id.is_role {
                (
                    "iam:AttachRolePolicy",
                    json!({"roleName": id.name, "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"}),
                )
            } else {
                (
                    "iam:AttachUserPolicy",
                    json!({"userName": id.name, "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"}),
                )
            };
            b.call(&la, grant_api, g, Fail::No, Some(req), None);
            (
                format!(
                    "{} passes admin role {} to new Lambda function {fname}, invokes it; the function attaches AdministratorAccess to {}",
                    id.name, role.name, id.name
                ),
                vec![
                    "iam:PassRole",
                    "iam:ListRoles",
                    "iam:GetRole",
                    "lambda:CreateFunction",
                    "lambda:InvokeFunction",
                    "iam:GetUser",
                    "iam:ListAttachedUserPolicies",
                    "iam:ListAttachedRolePolicies",
                ],
            )
        }
        2 => {
            let (api, req, act) = if id.is_role {
                (
                    "iam:AttachRolePolicy",
                    json!({"roleName": id.name, "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"}),
                    "iam:AttachRolePolicy",
                )
            } else {
                (
                    "iam:AttachUserPolicy",
                    json!({"userName": id.name, "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"}),
                    "iam:AttachUserPolicy",
                )
            };
            b.call(&a, api, g, Fail::No, Some(req), None);
            b.gap(30, 300);
            b.call(&a, "iam:ListUsers", g, Fail::No, None, None);
            (
                format!("{} attaches AdministratorAccess to itself", id.name),
                vec![
                    act,
                    "iam:ListUsers",
                    "iam:GetUser",
                    "iam:GetRole",
                    "iam:ListAttachedUserPolicies",
                    "iam:ListAttachedRolePolicies",
                ],
            )
        }
        3 => {
            let target = admins[k % admins.len()];
            let t = &w.ids[target];
            b.call(&a, "iam:ListUsers", g, Fail::No, None, None);
            b.gap(5, 60);
            b.call(&a, "iam:ListAccessKeys", g, Fail::No, Some(json!({"userName": t.name})), None);
            b.gap(5, 60);
            let new_key = key_id(b.rng, "AKIA");
            b.call(
                &a,
                "iam:CreateAccessKey",
                g,
                Fail::No,
                Some(json!({"userName": t.name})),
                Some(json!({"accessKey": {"accessKeyId": new_key, "userName": t.name, "status": "Active", "createDate": time_string(b.t)}})),
            );
            b.gap(30, 600);
            // the new key in use
            let mut na = own_actor(w, target);
            na.ip.clone_from(&a.ip);
            na.ua.clone_from(&a.ua);
            na.key = Some(new_key);
            b.call(&na, "sts:GetCallerIdentity", region, Fail::No, None, None);
            b.gap(5, 60);
            b.call(&na, "iam:ListRoles", g, Fail::No, None, None);
            (
                format!("{} creates an access key for admin user {} and uses it", id.name, t.name),
                vec![
                    "iam:CreateAccessKey",
                    "iam:ListUsers",
                    "iam:ListAccessKeys",
                    "iam:GetUser",
                    "iam:GetRole",
                    "iam:ListAttachedUserPolicies",
                    "iam:ListAttachedRolePolicies",
                ],
            )
        }
        4 => {
            let target = admin_lambda.map_or(v, |x| x);
            let role = &w.ids[target];
            let ext = external_account(b.rng);
            let doc = json!({"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"},
                {"Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{ext}:root")}, "Action": "sts:AssumeRole"}
            ]});
            b.call(&a, "iam:GetRole", g, Fail::No, Some(json!({"roleName": role.name})), None);
            b.gap(10, 90);
            b.call(
                &a,
                "iam:UpdateAssumeRolePolicy",
                g,
                Fail::No,
                Some(json!({"roleName": role.name, "policyDocument": doc.to_string()})),
                None,
            );
            (
                format!("{} makes admin role {} assumable from external account {ext}", id.name, role.name),
                vec![
                    "iam:UpdateAssumeRolePolicy",
                    "iam:GetRole",
                    "iam:GetUser",
                    "iam:ListAttachedUserPolicies",
                    "iam:ListAttachedRolePolicies",
                ],
            )
        }
        _ => {
            b.call(&a, "iam:ListGroups", g, Fail::No, None, None);
            b.gap(5, 60);
            b.call(
                &a,
                "iam:AddUserToGroup",
                g,
                Fail::No,
                Some(json!({"groupName": "admins", "userName": id.name})),
                None,
            );
            b.gap(30, 300);
            b.call(&a, "iam:ListRoles", g, Fail::No, None, None);
            (
                format!("{} adds itself to the admins group", id.name),
                vec![
                    "iam:AddUserToGroup",
                    "iam:ListGroups",
                    "iam:ListRoles",
                    "iam:GetUser",
                    "iam:ListAttachedUserPolicies",
                ],
            )
        }
    }
}

fn recon(w: &World, v: usize, b: &mut Builder<'_>) -> Outcome {
    let id = &w.ids[v];
    let a = if b.rng.random_bool(0.6) { attacker(w, v, b.rng) } else { own_actor(w, v) };
    let mut pool: Vec<&str> = SCANNER.iter().chain(DEV_CORE).chain(ADMIN_CORE).chain(AUDIT_CORE).copied().collect();
    pool.retain(|x| {
        let api = &APIS[usize::from(ix(x))];
        api.read_only && !api.data
    });
    pool.sort_unstable();
    pool.dedup();
    let mut regions: Vec<&'static str> = id.regions.clone();
    for _ in 0..b.rng.random_range(1..=4) {
        regions.push(BAD_REGIONS[b.rng.random_range(0..BAD_REGIONS.len())]);
    }
    let n = b.rng.random_range(60..=300);
    let mut denied = 0;
    for _ in 0..n {
        let api = pool[b.rng.random_range(0..pool.len())];
        let r = regions[b.rng.random_range(0..regions.len())];
        let fail = if allowed(w, v, api) == Fail::Denied && b.rng.random_bool(0.85) { Fail::Denied } else { Fail::No };
        if fail == Fail::Denied {
            denied += 1;
        }
        b.call(&a, api, r, fail, None, None);
        b.gap(0, 4);
    }
    (
        format!("{} enumerates {n} List/Describe/Get calls across services and regions ({denied} denied)", id.name),
        vec![],
    )
}

fn evasion(w: &World, v: usize, b: &mut Builder<'_>) -> Outcome {
    let id = &w.ids[v];
    let acct = &w.accounts[id.account];
    let aid = acct.id.as_str();
    let a = if b.rng.random_bool(0.5) { attacker(w, v, b.rng) } else { own_actor(w, v) };
    let region = id.regions[0];
    let trail = format!("arn:aws:cloudtrail:us-east-1:{aid}:trail/org-trail");
    let disc = [
        "cloudtrail:DescribeTrails",
        "cloudtrail:GetTrailStatus",
        "guardduty:ListDetectors",
        "config:DescribeConfigurationRecorders",
        "ec2:DescribeFlowLogs",
        "logs:DescribeLogGroups",
    ];
    for _ in 0..b.rng.random_range(2..=5) {
        let api = disc[b.rng.random_range(0..disc.len())];
        let req = if api == "cloudtrail:GetTrailStatus" { Some(json!({"name": trail})) } else { None };
        b.call(&a, api, if api.starts_with("cloudtrail") { "us-east-1" } else { region }, Fail::No, req, None);
        b.gap(3, 60);
    }
    let mut acts = [0usize, 1, 2, 3, 4, 5, 6];
    for i in (1..acts.len()).rev() {
        let j = b.rng.random_range(0..=i);
        acts.swap(i, j);
    }
    let n = b.rng.random_range(1..=3);
    let mut done = Vec::new();
    let mut grants = vec![
        "cloudtrail:DescribeTrails",
        "cloudtrail:GetTrailStatus",
        "guardduty:ListDetectors",
        "config:DescribeConfigurationRecorders",
        "ec2:DescribeFlowLogs",
        "logs:DescribeLogGroups",
    ];
    for &x in &acts[..n] {
        let fail = if id.arch == Arch::Developer && b.rng.random_bool(0.2) { Fail::Denied } else { Fail::No };
        let (api, r, req) = match x {
            0 => ("cloudtrail:StopLogging", "us-east-1", json!({"name": trail})),
            1 => ("cloudtrail:DeleteTrail", "us-east-1", json!({"name": trail})),
            2 => (
                "cloudtrail:UpdateTrail",
                "us-east-1",
                json!({"name": trail, "s3BucketName": format!("trail-archive-{}", hex(b.rng, 8)), "isMultiRegionTrail": false, "includeGlobalServiceEvents": false}),
            ),
            3 => ("guardduty:DeleteDetector", region, json!({"detectorId": acct.detector})),
            4 => ("config:StopConfigurationRecorder", region, json!({"configurationRecorderName": "default"})),
            5 => (
                "ec2:DeleteFlowLogs",
                region,
                json!({"DeleteFlowLogsRequest": {"FlowLogId": {"tag": 1, "content": acct.flow_logs[0]}}}),
            ),
            _ => (
                "logs:DeleteLogGroup",
                region,
                json!({"logGroupName": if b.rng.random_bool(0.5) { "/aws/cloudtrail/org-trail" } else { "/aws/vpc/flowlogs" }}),
            ),
        };
        let resp = if api == "ec2:DeleteFlowLogs" {
            Some(json!({"DeleteFlowLogsResponse": {"unsuccessful": ""}}))
        } else {
            None
        };
        b.call(&a, api, r, fail, Some(req), resp);
        b.gap(5, 90);
        done.push(api.split(':').nth(1).unwrap_or(api));
        grants.push(api);
    }
    (format!("{} tampers with logging/monitoring: {}", id.name, done.join(", ")), grants)
}

fn exfil(w: &World, v: usize, k: usize, b: &mut Builder<'_>) -> Outcome {
    let id = &w.ids[v];
    let acct = &w.accounts[id.account];
    let a = if b.rng.random_bool(0.5) { attacker(w, v, b.rng) } else { own_actor(w, v) };
    let region = id.regions[0];
    let others: Vec<&String> =
        acct.sensitive.iter().chain(acct.buckets.iter()).filter(|x| !id.buckets.contains(x)).collect();
    let bucket =
        others.get(b.rng.random_range(0..others.len().max(1))).map_or(acct.buckets[0].clone(), |s| (*s).clone());
    let ext = external_account(b.rng);
    match k % 6 {
        0 => {
            let mut targets = vec![bucket.clone()];
            if b.rng.random_bool(0.5) && others.len() > 1 {
                targets.push(others[b.rng.random_range(0..others.len())].clone());
            }
            b.call(&a, "s3:ListBuckets", region, Fail::No, None, None);
            let n = b.rng.random_range(150..=800);
            let mut lists = 0;
            for i in 0..n {
                let t = &targets[i % targets.len()];
                if i % 100 == 0 {
                    let mut req = s3_req(t, region);
                    req["list-type"] = json!("2");
                    b.call(&a, "s3:ListObjects", region, Fail::No, Some(req), None);
                    lists += 1;
                    b.gap(0, 2);
                }
                let key = object_key(b.rng, t, b.t);
                let mut req = s3_req(t, region);
                req["key"] = json!(key);
                b.call(&a, "s3:GetObject", region, Fail::No, Some(req), None);
                b.gap(0, 3);
            }
            (
                format!(
                    "{} downloads {n} objects ({lists} listings) from {} it never read before",
                    id.name,
                    targets.join(", ")
                ),
                vec!["s3:GetObject", "s3:ListBucket", "s3:ListAllMyBuckets"],
            )
        }
        1 => {
            b.call(&a, "s3:GetBucketPolicy", region, Fail::Other, Some(s3_req(&bucket, region)), None);
            b.gap(10, 120);
            let policy = json!({"Version": "2012-10-17", "Statement": [{"Sid": "PublicRead", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": format!("arn:aws:s3:::{bucket}/*")}]});
            let mut req = s3_req(&bucket, region);
            req["bucketPolicy"] = policy;
            b.call(&a, "s3:PutBucketPolicy", region, Fail::No, Some(req), None);
            (
                format!("{} makes bucket {bucket} world-readable with a bucket policy (Principal \"*\")", id.name),
                vec!["s3:PutBucketPolicy", "s3:GetBucketPolicy"],
            )
        }
        2 => {
            b.call(&a, "s3:GetBucketAcl", region, Fail::No, Some(s3_req(&bucket, region)), None);
            b.gap(10, 120);
            let mut req = s3_req(&bucket, region);
            req["acl"] = json!("");
            req["AccessControlPolicy"] = json!({"AccessControlList": {"Grant": [
                {"Grantee": {"xsi:type": "CanonicalUser", "ID": hex(b.rng, 64)}, "Permission": "FULL_CONTROL"},
                {"Grantee": {"xsi:type": "Group", "URI": "http://acs.amazonaws.com/groups/global/AllUsers"}, "Permission": "READ"}
            ]}, "Owner": {"ID": hex(b.rng, 64)}});
            b.call(&a, "s3:PutBucketAcl", region, Fail::No, Some(req), None);
            (
                format!("{} grants AllUsers READ on bucket {bucket} via ACL", id.name),
                vec!["s3:PutBucketAcl", "s3:GetBucketAcl"],
            )
        }
        3 => {
            b.call(
                &a,
                "ec2:DescribeSnapshots",
                region,
                Fail::No,
                Some(json!({"ownersSet": {"items": [{"owner": "self"}]}})),
                None,
            );
            b.gap(10, 120);
            let snap = format!("snap-0{}", hex(b.rng, 16));
            b.call(
                &a,
                "ec2:ModifySnapshotAttribute",
                region,
                Fail::No,
                Some(json!({"snapshotId": snap, "createVolumePermission": {"add": {"items": [{"group": "all"}]}}, "attributeType": "CREATE_VOLUME_PERMISSION"})),
                Some(json!({"_return": true})),
            );
            (
                format!("{} makes EBS snapshot {snap} public", id.name),
                vec!["ec2:DescribeSnapshots", "ec2:ModifySnapshotAttribute"],
            )
        }
        4 => {
            let db = &acct.dbs[k % acct.dbs.len()];
            let snap = format!("{db}-manual-{}", hex(b.rng, 6));
            b.call(&a, "rds:DescribeDBInstances", region, Fail::No, None, None);
            b.gap(10, 90);
            b.call(
                &a,
                "rds:CreateDBSnapshot",
                region,
                Fail::No,
                Some(json!({"dBInstanceIdentifier": db, "dBSnapshotIdentifier": snap})),
                Some(json!({"dBSnapshotIdentifier": snap, "dBInstanceIdentifier": db, "status": "creating", "dBSnapshotArn": format!("arn:aws:rds:{region}:{}:snapshot:{snap}", acct.id)})),
            );
            b.gap(300, 900);
            b.call(
                &a,
                "rds:ModifyDBSnapshotAttribute",
                region,
                Fail::No,
                Some(json!({"dBSnapshotIdentifier": snap, "attributeName": "restore", "valuesToAdd": ["all"]})),
                Some(json!({"dBSnapshotIdentifier": snap, "dBSnapshotAttributes": [{"attributeName": "restore", "attributeValues": ["all"]}]})),
            );
            (
                format!("{} snapshots RDS instance {db} and makes snapshot {snap} public", id.name),
                vec!["rds:DescribeDBInstances", "rds:CreateDBSnapshot", "rds:ModifyDBSnapshotAttribute"],
            )
        }
        _ => {
            let vol = &acct.volumes[k % acct.volumes.len()];
            let snap = format!("snap-0{}", hex(b.rng, 16));
            b.call(&a, "ec2:DescribeVolumes", region, Fail::No, None, None);
            b.gap(10, 90);
            b.call(
                &a,
                "ec2:CreateSnapshot",
                region,
                Fail::No,
                Some(json!({"volumeId": vol, "description": "backup"})),
                Some(json!({"snapshotId": snap, "volumeId": vol, "status": "pending", "ownerId": acct.id})),
            );
            b.gap(300, 900);
            b.call(
                &a,
                "ec2:ModifySnapshotAttribute",
                region,
                Fail::No,
                Some(json!({"snapshotId": snap, "createVolumePermission": {"add": {"items": [{"userId": ext}]}}, "attributeType": "CREATE_VOLUME_PERMISSION"})),
                Some(json!({"_return": true})),
            );
            (
                format!("{} snapshots volume {vol} and shares {snap} with external account {ext}", id.name),
                vec!["ec2:DescribeVolumes", "ec2:CreateSnapshot", "ec2:ModifySnapshotAttribute"],
            )
        }
    }
}

fn dormant(w: &World, v: usize, b: &mut Builder<'_>) -> Outcome {
    let id = &w.ids[v];
    // always from elsewhere: a silent identity acting again from its own usual place and agent is
    // what a human back from leave does (benign in the normal activity), so no detector could tell
    let a = attacker(w, v, b.rng);
    let region = id.regions[0];
    b.call(&a, "sts:GetCallerIdentity", region, Fail::No, None, None);
    let n = b.rng.random_range(5..=20);
    for _ in 0..n {
        b.gap(5, 180);
        let api = id.core[b.rng.random_range(0..id.core.len())];
        let x = &APIS[usize::from(api)];
        let name = format!("{}:{}", x.service(), x.name);
        b.call(&a, &name, region, Fail::No, None, None);
    }
    let silent = (b.t / 86_400) - (w.start / 86_400 + id.last_day);
    (
        format!("{} acts again after about {silent} days without activity, from {} ({} calls)", id.name, a.ip, n + 1),
        vec![],
    )
}
