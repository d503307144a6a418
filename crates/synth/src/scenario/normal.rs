//! Normal activity, one day at a time: humans in working hours (each day opened by a federated SAML or
//! OIDC sign-in, with travel, on-call nights, admins' night on-call read bursts, weekend touches,
//! new-but-related actions, and leaves of weeks), workloads around the clock, CI deploy bursts and
//! first deployments into regions new to a CI or pipeline role, nightly and weekly batch jobs, a weekly
//! security scan, and the admins' benign-but-noisy IAM chores.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use super::api::{APIS, ix};
use super::record::{Ev, Fail};
use super::world::{Arch, Identity, OIDC_AUDIENCE, OIDC_ISSUER, World, home_ip, saml_provider, travel_ip};
use crate::util::{hex, key_id, time_string};

/// Poisson-distributed count with mean `lambda`.
pub(super) fn poisson<G: Rng>(rng: &mut G, lambda: f64) -> u32 {
    if lambda <= 0.0 {
        return 0;
    }
    if lambda < 30.0 {
        let l = (-lambda).exp();
        let mut k = 0u32;
        let mut p = 1.0;
        loop {
            p *= rng.random::<f64>();
            if p <= l {
                return k;
            }
            k += 1;
        }
    }
    let u1: f64 = rng.random::<f64>().max(1e-12);
    let u2: f64 = rng.random();
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    (lambda + lambda.sqrt() * z).round().max(0.0) as u32
}

fn pick_cum<G: Rng>(rng: &mut G, cum: &[f64]) -> usize {
    let total = cum.last().copied().unwrap_or(0.0);
    let x = rng.random::<f64>() * total;
    cum.partition_point(|&c| c <= x).min(cum.len().saturating_sub(1))
}

/// Monday = 0.
pub(super) fn weekday(day_start_secs: i64) -> i64 {
    (day_start_secs.div_euclid(86_400) + 3).rem_euclid(7)
}

fn mix(a: u64, b: u64) -> u64 {
    let mut x = a ^ b.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 31;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 29;
    x
}

fn pick_region<G: Rng>(rng: &mut G, id: &Identity) -> &'static str {
    if id.regions.len() > 1 && rng.random_bool(0.2) { id.regions[1] } else { id.regions[0] }
}

const BROWSERS: &[&str] = &[
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/121.0.0.0 Safari/537.36 Edg/121.0.0.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.3; rv:123.0) Gecko/20100101 Firefox/123.0",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 Safari/537.36",
];

struct Session {
    t0: i64,
    secs: i64,
    ip: String,
    ua: String,
    console: bool,
    rate: f64,
}

/// Generates day `d`'s normal calls into `out` (unsorted; times may spill into the next day).
pub(super) fn day(w: &World, d: i64, rng: &mut ChaCha8Rng, out: &mut Vec<Ev>) {
    let day_start = w.start + d * 86_400;
    let dow = weekday(day_start);
    for (i, id) in w.ids.iter().enumerate() {
        if id.arch == Arch::Unused || d < id.first_day || d > id.last_day {
            continue;
        }
        if d == id.first_day && id.first_day > 0 {
            creation(w, i, d, rng, out);
        }
        match id.arch {
            a if a.human() => {
                for p in 0..id.personas.len() {
                    if !id.personas[p].on_leave(d) {
                        human(w, i, p, d, day_start, dow, rng, out);
                    }
                }
            }
            Arch::AppService | Arch::Lambda | Arch::ServiceUser => workload(w, i, day_start, rng, out),
            Arch::Pipeline => pipeline(w, i, day_start, dow, rng, out),
            Arch::CiCd => ci(w, i, day_start, dow, rng, out),
            Arch::Scanner if dow == 0 => scanner(w, i, day_start, rng, out),
            Arch::BreakGlass => break_glass(w, i, d, rng, out),
            _ => {}
        }
        for &(_, region) in id.region_deploys.iter().filter(|x| x.0 == d) {
            region_deploy(w, i, day_start, region, rng, out);
        }
    }
}

/// An admin of `account` at work on day `d` (none if all are on leave).
fn admin_of(w: &World, account: usize, salt: u64, d: i64) -> Option<usize> {
    let admins: Vec<usize> = w
        .ids
        .iter()
        .enumerate()
        .filter(|(_, x)| x.account == account && x.arch == Arch::Admin && !x.personas[0].on_leave(d))
        .map(|(i, _)| i)
        .collect();
    if admins.is_empty() { None } else { Some(admins[(salt % admins.len() as u64) as usize]) }
}

fn admin_ctx(w: &World, admin: usize, t: i64) -> Ev {
    let a = &w.ids[admin];
    let p = &a.personas[0];
    Ev::new(t, admin, 0, a.regions[0], p.office_ip.clone(), p.cli_ua.clone())
}

/// The admin's CreateUser/CreateRole (and key, group) for an identity created on this day.
fn creation(w: &World, i: usize, d: i64, rng: &mut ChaCha8Rng, out: &mut Vec<Ev>) {
    let id = &w.ids[i];
    let Some(admin) = admin_of(w, id.account, i as u64, d) else { return };
    let t = id.created - rng.random_range(60..600);
    let aid = &w.accounts[id.account].id;
    if id.is_role {
        let mut e = admin_ctx(w, admin, t);
        e.api = ix("iam:CreateRole");
        e.req = Some(
            json!({"roleName": id.name, "path": "/", "assumeRolePolicyDocument": "{\"Version\":\"2012-10-17\",\"Statement\":[{\"Effect\":\"Allow\",\"Principal\":{\"Service\":\"ec2.amazonaws.com\"},\"Action\":\"sts:AssumeRole\"}]}"}),
        );
        e.resp = Some(
            json!({"role": {"path": "/", "roleName": id.name, "roleId": id.id, "arn": id.arn, "createDate": time_string(t)}}),
        );
        out.push(e);
        if let Some(p) = &id.policy {
            let mut e = admin_ctx(w, admin, t + 20);
            e.api = ix("iam:AttachRolePolicy");
            e.req = Some(json!({"roleName": id.name, "policyArn": format!("arn:aws:iam::{aid}:policy/{p}")}));
            out.push(e);
        }
    } else {
        let mut e = admin_ctx(w, admin, t);
        e.api = ix("iam:CreateUser");
        e.req = Some(json!({"userName": id.name}));
        e.resp = Some(
            json!({"user": {"path": "/", "userName": id.name, "userId": id.id, "arn": id.arn, "createDate": time_string(t)}}),
        );
        out.push(e);
        if let Some(g) = id.groups.first() {
            let mut e = admin_ctx(w, admin, t + 30);
            e.api = ix("iam:AddUserToGroup");
            e.req = Some(json!({"groupName": g, "userName": id.name}));
            out.push(e);
        }
        let mut e = admin_ctx(w, admin, t + 45);
        e.api = ix("iam:CreateAccessKey");
        e.req = Some(json!({"userName": id.name}));
        e.resp = Some(
            json!({"accessKey": {"accessKeyId": id.key, "userName": id.name, "status": "Active", "createDate": time_string(t + 45)}}),
        );
        out.push(e);
    }
}

#[allow(clippy::too_many_arguments)]
fn human(w: &World, i: usize, p: usize, d: i64, day_start: i64, dow: i64, rng: &mut ChaCha8Rng, out: &mut Vec<Ev>) {
    let id = &w.ids[i];
    let per = &id.personas[p];
    let week = d.div_euclid(7) as u64;
    let h = mix(i as u64 * 131 + p as u64, week);
    // the first week back from a leave is spent at the usual places: after weeks of silence, a
    // return looks like a dormant identity acting again, and only its sources tell them apart
    let returning = per.leave.is_some_and(|(_, back)| (back..back + 7).contains(&d));
    let traveling = !returning && h.is_multiple_of(28) && (1..=3).contains(&dow);
    let travel_ip_fixed = {
        let mut r = <ChaCha8Rng as rand::SeedableRng>::seed_from_u64(h);
        travel_ip(&mut r)
    };
    let tz = if traveling { per.tz + if h.is_multiple_of(3) { 6 } else { -3 } } else { per.tz };
    let mut sessions: Vec<Session> = Vec::new();
    let working = if dow < 5 { rng.random_bool(0.92) } else { rng.random_bool(0.04) };
    let browser = BROWSERS[(mix(i as u64, p as u64) % BROWSERS.len() as u64) as usize];
    let mut session_at = |rng: &mut ChaCha8Rng, local_secs: i64, secs: i64, night: bool| {
        let mut t0 = day_start + local_secs - tz * 3600;
        if t0 < day_start {
            t0 += 86_400;
        }
        let ip = if traveling {
            travel_ip_fixed.clone()
        } else if dow < 5 && !night && rng.random_bool(0.7) {
            if !returning && rng.random_bool(0.03) {
                // another egress address of the same office range
                let base = per.office_ip.rsplit_once('.').map_or("", |x| x.0);
                format!("{base}.{}", rng.random_range(1..=254u8))
            } else {
                per.office_ip.clone()
            }
        } else if !returning && rng.random_bool(0.02) {
            home_ip(rng)
        } else {
            per.home_ips[rng.random_range(0..per.home_ips.len())].clone()
        };
        let console = rng.random_bool(per.console);
        let ua = if console { browser.to_string() } else { per.cli_ua.clone() };
        let rate = id.rate * rng.random_range(0.6..1.4);
        sessions.push(Session { t0, secs, ip, ua, console, rate });
    };
    if working {
        let n = if dow < 5 { rng.random_range(1..=3) } else { 1 };
        for _ in 0..n {
            let span = (per.end_hour - per.start_hour - 1).max(1);
            let local = (per.start_hour + rng.random_range(0..span)) * 3600 + rng.random_range(0..3600);
            let len = if dow < 5 { rng.random_range(10..=90) } else { rng.random_range(5..=30) } * 60;
            session_at(rng, local, len, false);
        }
    }
    if per.oncall == Some((week % 4) as u8) && rng.random_bool(0.25) {
        let local = rng.random_range(0..5) * 3600 + rng.random_range(0..3600);
        let len = rng.random_range(10..=40) * 60;
        session_at(rng, local, len, true);
    }
    // admins get paged at night now and then: a burst of reads between 00:00 and 04:00 UTC, through
    // the corporate VPN (the office's address) with the usual CLI
    let burst = if id.arch == Arch::Admin && rng.random_bool(1.0 / 20.0) {
        let secs = rng.random_range(15..=45) * 60;
        let t0 = day_start + rng.random_range(60..4 * 3600 - secs);
        Some(Session { t0, secs, ip: per.office_ip.clone(), ua: per.cli_ua.clone(), console: false, rate: 0.0 })
    } else {
        None
    };
    // the day starts with a federated sign-in through the identity provider, from where and with
    // what the first session runs (pushed first: it sorts before calls of the same second)
    if id.arch.federated()
        && let Some(first) = sessions.iter().chain(burst.iter()).min_by_key(|s| s.t0)
    {
        let t = (first.t0 - rng.random_range(5..120)).max(day_start);
        out.push(sign_in(w, i, p, t, first, rng));
    }
    if let Some(b) = &burst {
        let reads: Vec<u16> = id.core.iter().copied().filter(|&a| APIS[usize::from(a)].read_only).collect();
        if !reads.is_empty() {
            for _ in 0..rng.random_range(20..=60) {
                let t = b.t0 + rng.random_range(0..b.secs);
                let api = reads[rng.random_range(0..reads.len())];
                let mut e = Ev::new(t, i, api, pick_region(rng, id), b.ip.clone(), b.ua.clone());
                e.persona = p as u16;
                if rng.random_bool(id.err_rate) {
                    e.fail = Fail::Other;
                }
                out.push(e);
            }
        }
    }
    for s in sessions {
        let n = poisson(rng, s.rate * s.secs as f64 / 3600.0);
        for _ in 0..n {
            let t = s.t0 + rng.random_range(0..s.secs);
            let drift = !id.ext.is_empty() && rng.random_bool(0.012);
            let api =
                if drift { id.ext[rng.random_range(0..id.ext.len())] } else { id.core[pick_cum(rng, &id.core_cum)] };
            let mut e = Ev::new(t, i, api, pick_region(rng, id), s.ip.clone(), s.ua.clone());
            e.persona = p as u16;
            e.console = s.console;
            let fail_p = if drift { 0.15 } else { id.err_rate };
            if rng.random_bool(fail_p) {
                e.fail = if rng.random_bool(0.6) { Fail::Denied } else { Fail::Other };
            }
            out.push(e);
        }
        if id.arch == Arch::Admin && dow < 5 {
            admin_chores(w, i, &s, rng, out);
        }
    }
}

/// The federated sign-in (`AssumeRoleWithSAML`, or `AssumeRoleWithWebIdentity` for OIDC users) of
/// persona `p` at `t`, from session `s`'s address and agent, in the identity's first region.
fn sign_in(w: &World, i: usize, p: usize, t: i64, s: &Session, rng: &mut ChaCha8Rng) -> Ev {
    let id = &w.ids[i];
    let per = &id.personas[p];
    let aid = w.accounts[id.account].id.as_str();
    let api = if per.web_identity { "sts:AssumeRoleWithWebIdentity" } else { "sts:AssumeRoleWithSAML" };
    let mut e = Ev::new(t, i, ix(api), id.regions[0], s.ip.clone(), s.ua.clone());
    e.persona = p as u16;
    e.console = s.console;
    let session = per.session.clone().unwrap_or_else(|| id.name.clone());
    let subject = if session.contains('@') { session.clone() } else { format!("{session}@acme.example") };
    // a working day's credentials
    let mut req = json!({"roleSessionName": session, "durationSeconds": 43_200});
    let assumed = json!({"assumedRoleId": format!("{}:{session}", id.id),
                         "arn": format!("arn:aws:sts::{aid}:assumed-role/{}/{session}", id.name)});
    if id.is_role {
        req["roleArn"] = json!(id.arn);
    }
    if per.web_identity {
        e.resp = id.is_role.then(|| {
            json!({"subjectFromWebIdentityToken": subject, "assumedRoleUser": assumed,
                   "provider": format!("https://{OIDC_ISSUER}"), "audience": OIDC_AUDIENCE})
        });
    } else {
        req["sAMLAssertionID"] = json!(format!("_{}", hex(rng, 32)));
        req["principalArn"] = json!(saml_provider(aid, id));
        e.resp = id.is_role.then(|| {
            json!({"assumedRoleUser": assumed, "subject": subject, "subjectType": "persistent",
                   "issuer": format!("https://{OIDC_ISSUER}/saml"), "audience": "https://signin.aws.amazon.com/saml"})
        });
    }
    e.req = Some(req);
    e
}

/// Benign but noisy admin work: key rotation for integration users, policy updates, bucket policies.
fn admin_chores(w: &World, i: usize, s: &Session, rng: &mut ChaCha8Rng, out: &mut Vec<Ev>) {
    let id = &w.ids[i];
    let acct = &w.accounts[id.account];
    let aid = &acct.id;
    let t = s.t0 + rng.random_range(0..s.secs.max(1));
    let mk = |t: i64, api: &str| {
        let mut e = Ev::new(t, i, ix(api), id.regions[0], s.ip.clone(), s.ua.clone());
        e.console = s.console;
        e
    };
    let roll: f64 = rng.random();
    if roll < 0.05 {
        let svc: Vec<&Identity> =
            w.ids.iter().filter(|x| x.account == id.account && x.arch == Arch::ServiceUser).collect();
        if svc.is_empty() {
            return;
        }
        let target = svc[rng.random_range(0..svc.len())];
        let new_key = key_id(rng, "AKIA");
        let mut e = mk(t, "iam:ListAccessKeys");
        e.req = Some(json!({"userName": target.name}));
        out.push(e);
        let mut e = mk(t + 15, "iam:CreateAccessKey");
        e.req = Some(json!({"userName": target.name}));
        e.resp = Some(
            json!({"accessKey": {"accessKeyId": new_key, "userName": target.name, "status": "Active", "createDate": time_string(t + 15)}}),
        );
        out.push(e);
        let mut e = mk(t + 600 + rng.random_range(0..1200), "iam:UpdateAccessKey");
        e.req = Some(json!({"userName": target.name, "accessKeyId": target.key, "status": "Inactive"}));
        out.push(e);
    } else if roll < 0.08 {
        let roles: Vec<&Identity> = w.ids.iter().filter(|x| x.account == id.account && x.policy.is_some()).collect();
        if roles.is_empty() {
            return;
        }
        let target = roles[rng.random_range(0..roles.len())];
        let p = target.policy.as_deref().unwrap_or("DeveloperAccess");
        let arn = format!("arn:aws:iam::{aid}:policy/{p}");
        let mut actions: Vec<String> = target
            .core
            .iter()
            .map(|&a| super::world::iam_action(APIS[usize::from(a)].service(), APIS[usize::from(a)].name))
            .collect();
        actions.sort();
        actions.dedup();
        let doc =
            json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]});
        let mut e = mk(t, "iam:GetPolicyVersion");
        e.req = Some(json!({"policyArn": arn, "versionId": "v2"}));
        out.push(e);
        let mut e = mk(t + 90, "iam:CreatePolicyVersion");
        e.req = Some(json!({"policyArn": arn, "policyDocument": doc.to_string(), "setAsDefault": true}));
        e.resp = Some(
            json!({"policyVersion": {"versionId": "v3", "isDefaultVersion": true, "createDate": time_string(t + 90)}}),
        );
        out.push(e);
    } else if roll < 0.1 {
        let b = &acct.buckets[rng.random_range(0..acct.buckets.len())];
        let policy = json!({"Version": "2012-10-17", "Statement": [
            {"Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
             "Resource": [format!("arn:aws:s3:::{b}"), format!("arn:aws:s3:::{b}/*")], "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
            {"Sid": "OrgRead", "Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{aid}:root")}, "Action": "s3:GetObject", "Resource": format!("arn:aws:s3:::{b}/*")}
        ]});
        let mut e = mk(t, "s3:GetBucketPolicy");
        e.req = Some(json!({"bucketName": b, "Host": format!("{b}.s3.amazonaws.com"), "policy": ""}));
        out.push(e);
        let mut e = mk(t + 120, "s3:PutBucketPolicy");
        e.req = Some(json!({"bucketName": b, "Host": format!("{b}.s3.amazonaws.com"), "bucketPolicy": policy}));
        out.push(e);
    }
}

fn workload(w: &World, i: usize, day_start: i64, rng: &mut ChaCha8Rng, out: &mut Vec<Ev>) {
    let id = &w.ids[i];
    for h in 0..24i64 {
        // traffic follows the customers' day (peak ~15-20 UTC)
        let diurnal = 0.45 + 0.9 * (-((h - 17) as f64).powi(2) / 40.0).exp();
        let lambda = id.rate * diurnal * rng.random_range(0.7..1.3);
        let n = poisson(rng, lambda);
        for _ in 0..n {
            let t = day_start + h * 3600 + rng.random_range(0..3600);
            let p = rng.random_range(0..id.personas.len());
            let api = id.core[pick_cum(rng, &id.core_cum)];
            let ip = id.ips[p % id.ips.len()].clone();
            let mut e = Ev::new(t, i, api, pick_region(rng, id), ip, id.ua.clone());
            e.persona = p as u16;
            if rng.random_bool(id.err_rate * 0.5) {
                e.fail = if rng.random_bool(0.3) { Fail::Denied } else { Fail::Other };
            }
            out.push(e);
        }
    }
}

fn batch(w: &World, i: usize, t0: i64, n: u32, secs: i64, rng: &mut ChaCha8Rng, out: &mut Vec<Ev>) {
    let id = &w.ids[i];
    let start = ix("glue:StartJobRun");
    let mut e = Ev::new(t0, i, start, id.regions[0], id.ips[0].clone(), id.ua.clone());
    e.req = Some(json!({"jobName": w.accounts[id.account].jobs[i % w.accounts[id.account].jobs.len()]}));
    e.resp = Some(json!({"jobRunId": format!("jr_{}", hex(rng, 64))}));
    out.push(e);
    for _ in 0..n {
        let t = t0 + 5 + rng.random_range(0..secs);
        let api = id.core[pick_cum(rng, &id.core_cum)];
        let mut e = Ev::new(t, i, api, id.regions[0], id.ips[0].clone(), id.ua.clone());
        if rng.random_bool(id.err_rate * 0.3) {
            e.fail = Fail::Other;
        }
        out.push(e);
    }
}

fn pipeline(w: &World, i: usize, day_start: i64, dow: i64, rng: &mut ChaCha8Rng, out: &mut Vec<Ev>) {
    let id = &w.ids[i];
    let vol = id.rate.max(0.05) / 0.6;
    // nightly batch
    let t0 = day_start + 3600 + id.phase * 60 + rng.random_range(0..120);
    batch(w, i, t0, poisson(rng, 60.0 * vol), 40 * 60, rng, out);
    // weekly full rebuild (Sunday)
    if dow == 6 {
        let t0 = day_start + 4 * 3600 + id.phase * 60;
        batch(w, i, t0, poisson(rng, 300.0 * vol), 90 * 60, rng, out);
    }
    // a trickle during the day
    workload_trickle(w, i, day_start, rng, out);
}

fn workload_trickle(w: &World, i: usize, day_start: i64, rng: &mut ChaCha8Rng, out: &mut Vec<Ev>) {
    let id = &w.ids[i];
    let n = poisson(rng, id.rate * 24.0);
    for _ in 0..n {
        let t = day_start + rng.random_range(0..86_400);
        let api = id.core[pick_cum(rng, &id.core_cum)];
        out.push(Ev::new(t, i, api, id.regions[0], id.ips[0].clone(), id.ua.clone()));
    }
}

fn ci(w: &World, i: usize, day_start: i64, dow: i64, rng: &mut ChaCha8Rng, out: &mut Vec<Ev>) {
    let id = &w.ids[i];
    let acct = &w.accounts[id.account];
    let deploys = if dow < 5 { poisson(rng, id.rate) } else { poisson(rng, id.rate * 0.05) };
    let tz = if id.account.is_multiple_of(2) { -5 } else { 1 };
    for _ in 0..deploys {
        let t0 = day_start + (rng.random_range(9..18) - tz) * 3600 + rng.random_range(0..3600);
        let t0 = t0.clamp(day_start, day_start + 86_399);
        let ip = super::world::runner_ip(rng);
        let session = format!("GitHubActions-{}", rng.random_range(7_000_000_000u64..9_000_000_000));
        let secs = rng.random_range(120..600);
        let push = |t: i64, api: u16, rng: &mut ChaCha8Rng| {
            let mut e = Ev::new(t, i, api, id.regions[0], ip.clone(), id.ua.clone());
            e.session = Some(session.clone());
            if rng.random_bool(id.err_rate * 0.5) {
                e.fail = Fail::Other;
            }
            e
        };
        out.push(push(t0, ix("sts:GetCallerIdentity"), rng));
        for _ in 0..rng.random_range(12..40) {
            let t = t0 + 3 + rng.random_range(0..secs);
            let api = id.core[pick_cum(rng, &id.core_cum)];
            out.push(push(t, api, rng));
        }
        let roll: f64 = rng.random();
        if roll < 0.05 {
            // a Terraform change that touches IAM
            for (k, &a) in id.ext.iter().enumerate() {
                out.push(push(t0 + secs + k as i64 * 4, a, rng));
            }
        } else if roll < 0.08 {
            // teardown of a feature environment: its log group goes away
            let f = &acct.functions[rng.random_range(0..acct.functions.len())];
            let mut e = push(t0 + secs + 5, ix("logs:DeleteLogGroup"), rng);
            e.fail = Fail::No;
            e.req = Some(json!({"logGroupName": format!("/aws/lambda/{f}-pr{}", rng.random_range(100..999))}));
            out.push(e);
        }
    }
}

/// A first deployment into a region of the account the identity never used (a new stack, a copy of a
/// pipeline): its usual sources (CI: a fresh GitHub runner, as every job; pipelines: their NAT
/// address) and agent, its habitual calls, a region new to it.
fn region_deploy(w: &World, i: usize, day_start: i64, region: &'static str, rng: &mut ChaCha8Rng, out: &mut Vec<Ev>) {
    let id = &w.ids[i];
    let tz = if id.account.is_multiple_of(2) { -5 } else { 1 };
    let t0 = day_start + (rng.random_range(9..18) - tz) * 3600 + rng.random_range(0..3600);
    let t0 = t0.clamp(day_start, day_start + 86_399);
    let secs = rng.random_range(300..1200);
    let (ip, session) = if id.arch == Arch::CiCd {
        let session = format!("GitHubActions-{}", rng.random_range(7_000_000_000u64..9_000_000_000));
        (super::world::runner_ip(rng), Some(session))
    } else {
        (id.ips[0].clone(), None)
    };
    let mut push = |t: i64, api: u16| {
        let mut e = Ev::new(t, i, api, region, ip.clone(), id.ua.clone());
        e.session.clone_from(&session);
        out.push(e);
    };
    if id.arch == Arch::CiCd {
        push(t0, ix("sts:GetCallerIdentity"));
    }
    for _ in 0..rng.random_range(15..45) {
        let t = t0 + 3 + rng.random_range(0..secs);
        push(t, id.core[pick_cum(rng, &id.core_cum)]);
    }
}

fn scanner(w: &World, i: usize, day_start: i64, rng: &mut ChaCha8Rng, out: &mut Vec<Ev>) {
    let id = &w.ids[i];
    let acct = &w.accounts[id.account];
    let t0 = day_start + 3 * 3600 + id.phase * 60;
    let mut t = t0;
    let users: Vec<&Identity> = w.ids.iter().filter(|x| x.account == id.account && !x.is_role).take(40).collect();
    for &api in &id.core {
        let a = &APIS[usize::from(api)];
        let regions: Vec<&'static str> = if a.global() { vec!["us-east-1"] } else { acct.regions.clone() };
        for r in regions {
            let reps = match (a.service(), a.res) {
                ("s3", super::api::R::Bucket) => acct.buckets.len() + acct.sensitive.len(),
                ("iam", super::api::R::User) => users.len(),
                _ => 1,
            };
            for k in 0..reps {
                t += rng.random_range(0..3);
                let mut e = Ev::new(t, i, api, r, id.ips[0].clone(), id.ua.clone());
                match (a.service(), a.res) {
                    ("s3", super::api::R::Bucket) => {
                        let b = acct.buckets.iter().chain(acct.sensitive.iter()).nth(k).cloned().unwrap_or_default();
                        e.req = Some(json!({"bucketName": b, "Host": format!("{b}.s3.{r}.amazonaws.com")}));
                        if a.name == "GetBucketPolicy" && rng.random_bool(0.5) {
                            e.fail = Fail::Other;
                        }
                    }
                    ("iam", super::api::R::User) => {
                        if let Some(u) = users.get(k) {
                            e.req = Some(json!({"userName": u.name}));
                        }
                    }
                    _ => {}
                }
                if e.fail == Fail::No && rng.random_bool(0.04) {
                    e.fail = Fail::Denied;
                }
                out.push(e);
            }
        }
    }
}

fn break_glass(w: &World, i: usize, d: i64, rng: &mut ChaCha8Rng, out: &mut Vec<Ev>) {
    let id = &w.ids[i];
    // a yearly access test in the history of the first account, and one in the detection week of
    // another: benign, rare, and noisy
    let n_acc = w.accounts.len();
    let test_day = if id.account == 0 { Some(w.history_days / 2) } else { None };
    let live_day = if id.account == 1 % n_acc { Some(w.history_days + 1) } else { None };
    if Some(d) != test_day && Some(d) != live_day {
        return;
    }
    let per = &id.personas[0];
    let t0 = w.start + d * 86_400 + (14 - per.tz) * 3600 + rng.random_range(0..1800);
    let browser = BROWSERS[0];
    for (k, &api) in id.core.iter().enumerate() {
        let mut e = Ev::new(t0 + k as i64 * 40, i, api, "us-east-1", per.office_ip.clone(), browser.to_string());
        e.console = true;
        out.push(e);
    }
}
