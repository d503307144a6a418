//! The CloudTrail stream: slot-by-slot event generation in time order, record rendering, the S3 and
//! JSON Lines sinks, and the truth tallies.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use grantwatch_types::EventTime;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rustc_hash::{FxHashMap, FxHashSet};

use crate::actions::{ApiCall, CALLS, Res, UNMAPPED, index_of};
use crate::org::{Archetype, Identity, Kind, Org, Style, build};
use crate::util::{Gz, path_parts, push_alnum, push_hex, push_time, push_u64, push_upper32, push_uuid};
use crate::{GroundTruth, LOOKBACK_DAYS, Layout, OrgSpec, SynthError, TruthAccessKey, TruthIdentity};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EvKind {
    Normal,
    Console,
    Unmapped(u8),
    Root,
    Service,
}

#[derive(Debug, Clone, Copy)]
struct Ev {
    t: i64,
    account: u32,
    region: u16,
    /// Acting identity (Normal/Console/Unmapped) or target role (Service); `u32::MAX` for root.
    ident: u32,
    call: u16,
    kind: EvKind,
    fail: bool,
    dup: bool,
    console: bool,
    session: u16,
}

#[derive(Default)]
struct Tally {
    events: u64,
    events_lb: u64,
    last: Option<i64>,
    actions: FxHashMap<u16, i64>,
    last_day_lb: i64,
    active_days: u32,
    sessions_lb: Vec<bool>,
    key_last: Option<i64>,
}

/// The per-slot event weight: a diurnal curve peaking mid-afternoon UTC, quieter weekends.
fn slot_weight(day_index: i64, slot: u32, slots_per_day: u32) -> u64 {
    let hour = slot * 24 / slots_per_day;
    let diurnal: u64 = match hour {
        0..=5 => 20,
        6..=8 => 45,
        9..=17 => 100,
        18..=21 => 60,
        _ => 30,
    };
    // 1970-01-01 was a Thursday: (days + 3) % 7 gives Monday = 0
    let weekday = (day_index + 3).rem_euclid(7);
    if weekday >= 5 { diurnal * 2 / 5 } else { diurnal }
}

fn special_counts(events: u64) -> [u64; 5] {
    if events < 100 {
        return [0; 5];
    }
    // duplicates, unmapped, console logins, root, service
    [
        (events / 20_000).max(3),
        (events / 50_000).max(2),
        (events / 5_000).max(3),
        (events / 100_000).max(1),
        (events / 200).max(2),
    ]
}

const ROOT_CALLS: &[&str] =
    &["iam:GetAccountSummary", "iam:ListUsers", "iam:ListAccessKeys", "s3:GetBucketPolicy", "iam:ListMFADevices"];

struct Gen<'a> {
    spec: &'a OrgSpec,
    org: Org,
    rng: ChaCha8Rng,
    regions: Vec<String>,
    global_region: u16,
    out: PathBuf,
    sink: Sink,
    gz: Gz,
    buf: String,
    rec: String,
    tallies: Vec<Tally>,
    cutoff: i64,
    truth: GroundTruth,
    created_dirs: FxHashSet<String>,
    root_calls: Vec<u16>,
    assume_role: u16,
}

enum Sink {
    S3,
    Jsonl(BufWriter<fs::File>, PathBuf),
}

pub(crate) fn run(spec: &OrgSpec, out_dir: &Path) -> Result<GroundTruth, SynthError> {
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let mut regions = spec.regions.clone();
    if !regions.iter().any(|r| r == "us-east-1") {
        regions.push("us-east-1".into());
    }
    let global_region = regions.iter().position(|r| r == "us-east-1").unwrap_or(0) as u16;
    let org = build(spec, &mut rng, spec.regions.len());

    let iam_dir = out_dir.join("iam");
    fs::create_dir_all(&iam_dir).map_err(|e| SynthError::io(&iam_dir, e))?;
    for ai in 0..org.accounts.len() {
        let id = &org.accounts[ai].id;
        write_json(&iam_dir.join(format!("{id}.json")), &org.authorization_details(ai, spec.url_encode_policies))?;
        write_json(&iam_dir.join(format!("access-keys-{id}.json")), &org.access_keys(ai))?;
    }
    let ct_dir = out_dir.join("cloudtrail");
    fs::create_dir_all(&ct_dir).map_err(|e| SynthError::io(&ct_dir, e))?;
    let sink = match spec.layout {
        Layout::S3 => Sink::S3,
        Layout::JsonLines => {
            let p = ct_dir.join("events.jsonl");
            let f = fs::File::create(&p).map_err(|e| SynthError::io(&p, e))?;
            Sink::Jsonl(BufWriter::with_capacity(1 << 20, f), p)
        }
    };
    let tallies = org
        .identities
        .iter()
        .map(|i| Tally { sessions_lb: vec![false; i.sessions.len()], last_day_lb: i64::MIN, ..Tally::default() })
        .collect();
    let truth = GroundTruth {
        spec: spec.clone(),
        as_of: spec.start,
        lookback_days: LOOKBACK_DAYS,
        first_event: None,
        accounts: org.accounts.iter().map(|a| a.id.clone()).collect(),
        identities: Vec::new(),
        events: 0,
        records_written: 0,
        duplicates_injected: 0,
        unmapped_injected: 0,
        no_permission_injected: 0,
        root_events: 0,
        service_events: 0,
        failures: 0,
        action_events: 0,
        files_written: 0,
        bytes_uncompressed: 0,
    };
    let root_calls = ROOT_CALLS.iter().filter_map(|a| index_of(a)).map(|i| i as u16).collect();
    let assume_role = index_of("sts:AssumeRole").unwrap_or(0) as u16;
    let mut g = Gen {
        spec,
        org,
        rng,
        regions,
        global_region,
        out: out_dir.to_path_buf(),
        sink,
        gz: Gz::new(),
        buf: String::with_capacity(1 << 20),
        rec: String::with_capacity(4096),
        tallies,
        cutoff: 0,
        truth,
        created_dirs: FxHashSet::default(),
        root_calls,
        assume_role,
    };
    g.events()?;
    if let Sink::Jsonl(w, p) = &mut g.sink {
        w.flush().map_err(|e| SynthError::io(p, e))?;
        g.truth.files_written = 1;
    }
    g.finish_truth();
    write_json(&out_dir.join("truth.json"), &g.truth)?;
    Ok(g.truth)
}

fn write_json<T: serde::Serialize>(path: &Path, v: &T) -> Result<(), SynthError> {
    let f = fs::File::create(path).map_err(|e| SynthError::io(path, e))?;
    let mut w = BufWriter::new(f);
    serde_json::to_writer_pretty(&mut w, v)?;
    w.write_all(b"\n").map_err(|e| SynthError::io(path, e))?;
    w.flush().map_err(|e| SynthError::io(path, e))
}

fn pick_cum<R: Rng>(rng: &mut R, cum: &[f64]) -> usize {
    let total = cum.last().copied().unwrap_or(0.0);
    let x = rng.random::<f64>() * total;
    cum.partition_point(|&c| c <= x).min(cum.len().saturating_sub(1))
}

impl Gen<'_> {
    fn events(&mut self) -> Result<(), SynthError> {
        let spec = self.spec;
        let spd = 1440 / spec.file_minutes;
        let slot_secs = i64::from(spec.file_minutes) * 60;
        let total_slots = u64::from(spec.days) * u64::from(spd);
        let start_secs = spec.start.millis().div_euclid(1000);
        let start_day = start_secs.div_euclid(86_400);
        let weight = |s: u64| slot_weight(start_day + (s / u64::from(spd)) as i64, (s % u64::from(spd)) as u32, spd);
        let total_w: u128 = (0..total_slots).map(|s| u128::from(weight(s))).sum();
        let e = u128::from(spec.events);
        // last non-empty slot
        let mut last_slot = None;
        {
            let mut cum = 0u128;
            for s in 0..total_slots {
                let before = e * cum / total_w;
                cum += u128::from(weight(s));
                if e * cum / total_w > before {
                    last_slot = Some(s);
                }
            }
        }
        let Some(last_slot) = last_slot else {
            return Ok(());
        };
        let last_start = start_secs + last_slot as i64 * slot_secs;
        let as_of = last_start + self.rng.random_range(0..slot_secs);
        self.cutoff = as_of - i64::from(LOOKBACK_DAYS) * 86_400;
        self.truth.as_of = EventTime(as_of * 1000);

        // special events at chosen global indices
        let counts = special_counts(spec.events);
        let mut specials: std::collections::BTreeMap<u64, u8> = std::collections::BTreeMap::new();
        for (k, &c) in counts.iter().enumerate() {
            let mut placed = 0;
            let mut tries = 0;
            while placed < c && tries < c * 20 + 100 {
                tries += 1;
                if specials.insert(self.rng.random_range(0..spec.events), k as u8).is_none() {
                    placed += 1;
                } else {
                    // keep the first kind at that index
                }
            }
        }
        let specials: Vec<(u64, u8)> = specials.into_iter().collect();
        let mut next_special = 0usize;

        let mut gidx = 0u64;
        let mut cum = 0u128;
        let mut cur_day = u64::MAX;
        let mut eligible: Vec<u32> = Vec::new();
        let mut ecum: Vec<f64> = Vec::new();
        let mut evs: Vec<Ev> = Vec::new();
        let mut pending_console = 0u32;
        for s in 0..=last_slot {
            let before = e * cum / total_w;
            cum += u128::from(weight(s));
            let n = (e * cum / total_w - before) as u64;
            if n == 0 {
                continue;
            }
            let day = s / u64::from(spd);
            if day != cur_day {
                cur_day = day;
                let d = day as u32;
                let now: Vec<u32> = (0..self.org.identities.len() as u32)
                    .filter(|&i| {
                        let id = &self.org.identities[i as usize];
                        !id.uses.is_empty() && id.window.is_some_and(|(from, to)| from <= d && d < to)
                    })
                    .collect();
                if now != eligible {
                    eligible = now;
                    let mut acc = 0.0;
                    ecum = eligible
                        .iter()
                        .map(|&i| {
                            acc += self.org.identities[i as usize].weight;
                            acc
                        })
                        .collect();
                }
            }
            let slot_start = start_secs + s as i64 * slot_secs;
            let slot_end = if s == last_slot { as_of + 1 } else { slot_start + slot_secs };
            evs.clear();
            for k in 0..n {
                let mut t = if s == last_slot && k == 0 { as_of } else { self.rng.random_range(slot_start..slot_end) };
                if t == self.cutoff {
                    t = if t + 1 < slot_end { t + 1 } else { t - 1 };
                }
                let mut kind = EvKind::Normal;
                let mut dup = false;
                if next_special < specials.len() && specials[next_special].0 == gidx {
                    match specials[next_special].1 {
                        0 => dup = true,
                        1 => kind = EvKind::Unmapped(self.rng.random_range(0..UNMAPPED.len()) as u8),
                        2 => pending_console += 1,
                        3 => kind = EvKind::Root,
                        _ => kind = EvKind::Service,
                    }
                    next_special += 1;
                }
                gidx += 1;
                if eligible.is_empty() && matches!(kind, EvKind::Normal | EvKind::Unmapped(_)) {
                    kind = EvKind::Root;
                }
                let ev = self.make_event(t, kind, dup, &eligible, &ecum, &mut pending_console);
                evs.push(ev);
            }
            self.write_slot(&mut evs, slot_start + slot_secs)?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn make_event(
        &mut self,
        t: i64,
        mut kind: EvKind,
        dup: bool,
        eligible: &[u32],
        ecum: &[f64],
        pending_console: &mut u32,
    ) -> Ev {
        let mut ev = Ev {
            t,
            account: 0,
            region: 0,
            ident: u32::MAX,
            call: 0,
            kind,
            fail: false,
            dup,
            console: false,
            session: 0,
        };
        if kind == EvKind::Service {
            let n = self.org.accounts.len();
            let a = self.rng.random_range(0..n);
            let with_roles: Vec<usize> =
                (0..n).map(|i| (a + i) % n).filter(|&i| !self.org.accounts[i].roles.is_empty()).take(1).collect();
            match with_roles.first() {
                Some(&ai) => {
                    let roles = &self.org.accounts[ai].roles;
                    ev.ident = roles[self.rng.random_range(0..roles.len())];
                    ev.account = ai as u32;
                    ev.call = self.assume_role;
                    ev.region = self.org.identities[ev.ident as usize].home_region;
                    self.truth.service_events += 1;
                    self.truth.events += 1;
                    if dup {
                        self.truth.duplicates_injected += 1;
                    }
                    return ev;
                }
                None => {
                    kind = if eligible.is_empty() { EvKind::Root } else { EvKind::Normal };
                    ev.kind = kind;
                }
            }
        }
        if kind == EvKind::Root {
            ev.account = self.rng.random_range(0..self.org.accounts.len()) as u32;
            ev.call = self.root_calls[self.rng.random_range(0..self.root_calls.len())];
            ev.region = if CALLS[ev.call as usize].global() { self.global_region } else { 0 };
            ev.console = true;
            self.truth.root_events += 1;
            self.truth.events += 1;
            if dup {
                self.truth.duplicates_injected += 1;
            }
            return ev;
        }
        let mut ix = eligible[pick_cum(&mut self.rng, ecum)];
        if kind == EvKind::Normal && *pending_console > 0 {
            // a console sign-in needs a user or an SSO role: try a few draws
            for _ in 0..20 {
                let id = &self.org.identities[ix as usize];
                if id.kind == Kind::User || id.sso {
                    kind = EvKind::Console;
                    *pending_console -= 1;
                    break;
                }
                ix = eligible[pick_cum(&mut self.rng, ecum)];
            }
            ev.kind = kind;
        }
        let id = &self.org.identities[ix as usize];
        ev.ident = ix;
        ev.account = id.account;
        ev.call = id.uses[pick_cum(&mut self.rng, &id.cum)];
        let call = &CALLS[ev.call as usize];
        ev.region = if call.global() || kind == EvKind::Console {
            self.global_region
        } else if self.rng.random_bool(0.85) {
            id.home_region
        } else {
            self.rng.random_range(0..self.spec.regions.len()) as u16
        };
        if !id.sessions.is_empty() {
            let n = id.sessions.len();
            ev.session = (self.rng.random_range(0..n * n).isqrt()).min(n - 1) as u16;
            ev.session = (n - 1 - ev.session as usize) as u16;
        }
        ev.console = kind == EvKind::Console
            || (id.kind == Kind::User && id.style == Style::Human && self.rng.random_bool(0.25));
        ev.fail = kind == EvKind::Normal && self.rng.random_bool(0.02);

        // truth
        self.truth.events += 1;
        if dup {
            self.truth.duplicates_injected += 1;
        }
        let tally = &mut self.tallies[ix as usize];
        tally.events += 1;
        tally.last = Some(tally.last.map_or(t, |l| l.max(t)));
        if t > self.cutoff {
            tally.events_lb += 1;
            let day = t.div_euclid(86_400);
            if day != tally.last_day_lb {
                // days are visited in order: a new day
                tally.last_day_lb = day;
                tally.active_days += 1;
            }
            if let Some(s) = tally.sessions_lb.get_mut(ev.session as usize) {
                *s = true;
            }
        }
        match kind {
            EvKind::Normal => {
                self.truth.action_events += 1;
                if ev.fail {
                    self.truth.failures += 1;
                }
                let e = tally.actions.entry(ev.call).or_insert(t);
                *e = (*e).max(t);
                if id.kind == Kind::User && !ev.console {
                    tally.key_last = Some(tally.key_last.map_or(t, |l| l.max(t)));
                }
            }
            EvKind::Console => self.truth.no_permission_injected += 1,
            EvKind::Unmapped(_) => self.truth.unmapped_injected += 1,
            _ => {}
        }
        ev
    }

    fn write_slot(&mut self, evs: &mut [Ev], file_time: i64) -> Result<(), SynthError> {
        evs.sort_by_key(|e| (e.account, e.region, e.t));
        let mut dups: Vec<(u32, u16, String)> = Vec::new();
        let mut i = 0;
        while i < evs.len() {
            let (a, r) = (evs[i].account, evs[i].region);
            let mut j = i;
            self.buf.clear();
            self.buf.push_str("{\"Records\":[");
            while j < evs.len() && evs[j].account == a && evs[j].region == r {
                let ev = evs[j];
                self.render(&ev);
                self.truth.bytes_uncompressed += self.rec.len() as u64;
                self.truth.records_written += 1;
                match &mut self.sink {
                    Sink::S3 => {
                        if j > i {
                            self.buf.push(',');
                        }
                        self.buf.push_str(&self.rec);
                    }
                    Sink::Jsonl(w, p) => {
                        w.write_all(self.rec.as_bytes())
                            .and_then(|_| w.write_all(b"\n"))
                            .map_err(|e| SynthError::io(p, e))?;
                    }
                }
                if ev.dup {
                    dups.push((a, r, self.rec.clone()));
                }
                j += 1;
            }
            if let Sink::S3 = self.sink {
                self.buf.push_str("]}");
                let body = std::mem::take(&mut self.buf);
                let res = self.write_s3(a, r, file_time, &body);
                self.buf = body;
                res?;
            }
            i = j;
        }
        for (a, r, rec) in dups {
            self.truth.bytes_uncompressed += rec.len() as u64;
            self.truth.records_written += 1;
            match &mut self.sink {
                Sink::S3 => {
                    let body = format!("{{\"Records\":[{rec}]}}");
                    self.write_s3(a, r, file_time, &body)?;
                }
                Sink::Jsonl(w, p) => {
                    w.write_all(rec.as_bytes()).and_then(|_| w.write_all(b"\n")).map_err(|e| SynthError::io(p, e))?;
                }
            }
        }
        Ok(())
    }

    fn write_s3(&mut self, account: u32, region: u16, file_time: i64, body: &str) -> Result<(), SynthError> {
        let acct = &self.org.accounts[account as usize].id;
        let region = &self.regions[region as usize];
        let (y, m, d, hm) = path_parts(file_time);
        let dir = format!("cloudtrail/AWSLogs/{acct}/CloudTrail/{region}/{y}/{m}/{d}");
        let dir_path = self.out.join(&dir);
        if !self.created_dirs.contains(&dir) {
            fs::create_dir_all(&dir_path).map_err(|e| SynthError::io(&dir_path, e))?;
            if self.created_dirs.len() > 100_000 {
                self.created_dirs.clear();
            }
            self.created_dirs.insert(dir);
        }
        let mut name = format!("{acct}_CloudTrail_{region}_{y}{m}{d}T{hm}Z_");
        push_alnum(&mut name, &mut self.rng, 16);
        name.push_str(".json.gz");
        let path = dir_path.join(name);
        let bytes = self.gz.compress(body.as_bytes()).map_err(|e| SynthError::io(&path, e))?;
        fs::write(&path, bytes).map_err(|e| SynthError::io(&path, e))?;
        self.truth.files_written += 1;
        Ok(())
    }

    fn finish_truth(&mut self) {
        let cutoff = self.cutoff;
        let has_events = self.truth.events > 0;
        let mut out = Vec::with_capacity(self.org.identities.len());
        for (id, t) in self.org.identities.iter().zip(&self.tallies) {
            let mut used: Vec<String> = t
                .actions
                .iter()
                .filter(|&(_, &l)| has_events && l > cutoff)
                .map(|(&c, _)| CALLS[c as usize].action())
                .collect();
            used.sort();
            let mut ever: Vec<String> = t.actions.keys().map(|&c| CALLS[c as usize].action()).collect();
            ever.sort();
            let mut sessions: Vec<String> =
                id.sessions.iter().zip(&t.sessions_lb).filter(|(_, u)| **u).map(|(s, _)| s.name.clone()).collect();
            sessions.sort();
            let access_keys = id
                .keys
                .iter()
                .enumerate()
                .map(|(k, key)| TruthAccessKey {
                    access_key_id: key.id.clone(),
                    active: key.active,
                    created: EventTime(key.created * 1000),
                    last_used: if k == 0 { t.key_last.map(|s| EventTime(s * 1000)) } else { None },
                })
                .collect();
            out.push(TruthIdentity {
                arn: id.arn.clone(),
                account: self.org.accounts[id.account as usize].id.clone(),
                kind: id.kind.as_str().to_string(),
                name: id.name.clone(),
                archetype: id.archetype.name().to_string(),
                granted_actions: id.granted.as_ref().map(|g| g.iter().cloned().collect()),
                used_actions: used,
                used_actions_ever: ever,
                last_activity: t.last.map(|s| EventTime(s * 1000)),
                inactive: id.kind != Kind::Group && t.events_lb == 0,
                super_identity: id.super_identity,
                events: t.events,
                events_in_lookback: t.events_lb,
                active_days: t.active_days,
                session_names: sessions,
                access_keys,
            });
        }
        self.truth.identities = out;
    }

    // ---------------------------------------------------------------- rendering

    fn render(&mut self, ev: &Ev) {
        let t = ev.t;
        if self.truth.first_event.is_none_or(|f| f.millis() > t * 1000) {
            self.truth.first_event = Some(EventTime(t * 1000));
        }
        let rng = &mut self.rng;
        let org = &self.org;
        let acct = &org.accounts[ev.account as usize];
        let aid = acct.id.as_str();
        let region = self.regions[ev.region as usize].as_str();
        let call: &ApiCall = &CALLS[ev.call as usize];
        let s = &mut self.rec;
        s.clear();
        s.push_str(if rng.random_bool(0.7) {
            "{\"eventVersion\":\"1.09\",\"userIdentity\":"
        } else {
            "{\"eventVersion\":\"1.08\",\"userIdentity\":"
        });
        let ident: Option<&Identity> = match ev.kind {
            EvKind::Root | EvKind::Service => None,
            _ => Some(&org.identities[ev.ident as usize]),
        };
        // who
        let mut actor_arn = String::new();
        match (ev.kind, ident) {
            (EvKind::Service, _) => s.push_str("{\"type\":\"AWSService\",\"invokedBy\":\"lambda.amazonaws.com\"}"),
            (EvKind::Root, _) => {
                actor_arn = format!("arn:aws:iam::{aid}:root");
                s.push_str("{\"type\":\"Root\",\"principalId\":\"");
                s.push_str(aid);
                s.push_str("\",\"arn\":\"");
                s.push_str(&actor_arn);
                s.push_str("\",\"accountId\":\"");
                s.push_str(aid);
                s.push_str("\",\"accessKeyId\":\"ASIA");
                push_upper32(s, rng, 16);
                s.push_str("\",\"sessionContext\":{\"sessionIssuer\":{},\"webIdFederationData\":{},\"attributes\":{\"creationDate\":\"");
                push_time(s, t - t.rem_euclid(3600));
                s.push_str("\",\"mfaAuthenticated\":\"true\"}}}");
            }
            (_, Some(id)) if id.kind == Kind::User => {
                actor_arn.clone_from(&id.arn);
                s.push_str("{\"type\":\"IAMUser\",\"principalId\":\"");
                s.push_str(&id.id);
                s.push_str("\",\"arn\":\"");
                s.push_str(&id.arn);
                s.push_str("\",\"accountId\":\"");
                s.push_str(aid);
                if ev.kind == EvKind::Console {
                    s.push_str("\",\"userName\":\"");
                    s.push_str(&id.name);
                    s.push_str("\"}");
                } else if ev.console {
                    s.push_str("\",\"accessKeyId\":\"ASIA");
                    push_upper32(s, rng, 16);
                    s.push_str("\",\"userName\":\"");
                    s.push_str(&id.name);
                    s.push_str("\",\"sessionContext\":{\"sessionIssuer\":{},\"webIdFederationData\":{},\"attributes\":{\"creationDate\":\"");
                    push_time(s, t - t.rem_euclid(3600));
                    s.push_str("\",\"mfaAuthenticated\":\"true\"}}}");
                } else {
                    s.push_str("\",\"accessKeyId\":\"");
                    s.push_str(id.keys.first().map_or("", |k| k.id.as_str()));
                    s.push_str("\",\"userName\":\"");
                    s.push_str(&id.name);
                    s.push_str("\"}");
                }
            }
            (_, Some(id)) => {
                let sess = id.sessions.get(ev.session as usize);
                let sname = sess.map_or("session", |x| x.name.as_str());
                actor_arn = format!("arn:aws:sts::{aid}:assumed-role/{}/{sname}", id.name);
                s.push_str("{\"type\":\"AssumedRole\",\"principalId\":\"");
                s.push_str(&id.id);
                s.push(':');
                s.push_str(sname);
                s.push_str("\",\"arn\":\"");
                s.push_str(&actor_arn);
                s.push_str("\",\"accountId\":\"");
                s.push_str(aid);
                s.push_str("\",\"accessKeyId\":\"");
                s.push_str(sess.map_or("ASIAXXXXXXXXXXXXXXXX", |x| x.key.as_str()));
                s.push_str("\",\"sessionContext\":{\"sessionIssuer\":{\"type\":\"Role\",\"principalId\":\"");
                s.push_str(&id.id);
                s.push_str("\",\"arn\":\"");
                s.push_str(&id.arn);
                s.push_str("\",\"accountId\":\"");
                s.push_str(aid);
                s.push_str("\",\"userName\":\"");
                s.push_str(&id.name);
                s.push_str("\"},\"webIdFederationData\":");
                if id.oidc {
                    s.push_str("{\"federatedProvider\":\"arn:aws:iam::");
                    s.push_str(aid);
                    s.push_str(":oidc-provider/token.actions.githubusercontent.com\",\"attributes\":{}}");
                } else {
                    s.push_str("{}");
                }
                s.push_str(",\"attributes\":{\"creationDate\":\"");
                push_time(s, t - t.rem_euclid(3600));
                s.push_str("\",\"mfaAuthenticated\":\"false\"}}");
                if id.archetype == Archetype::CiDeploy && call.prefix == "cloudformation" {
                    s.push_str(",\"invokedBy\":\"cloudformation.amazonaws.com\"");
                }
                s.push('}');
            }
            (_, None) => s.push_str("{}"),
        }
        s.push_str(",\"eventTime\":\"");
        push_time(s, t);
        // what
        let (source, name) = match ev.kind {
            EvKind::Console => ("signin.amazonaws.com", "ConsoleLogin"),
            EvKind::Unmapped(k) => UNMAPPED[k as usize],
            _ => (call.source, call.name),
        };
        s.push_str("\",\"eventSource\":\"");
        s.push_str(source);
        s.push_str("\",\"eventName\":\"");
        s.push_str(name);
        s.push_str("\",\"awsRegion\":\"");
        s.push_str(region);
        s.push_str("\",\"sourceIPAddress\":\"");
        let via_cfn = ident.is_some_and(|i| i.archetype == Archetype::CiDeploy) && call.prefix == "cloudformation";
        match (ev.kind, ident) {
            (EvKind::Service, _) => s.push_str("lambda.amazonaws.com"),
            _ if via_cfn => s.push_str("cloudformation.amazonaws.com"),
            (_, Some(id)) => s.push_str(&id.ips[(t as usize) % id.ips.len()]),
            _ => s.push_str("198.51.100.7"),
        }
        s.push_str("\",\"userAgent\":\"");
        let style = ident.map_or(Style::Human, |i| i.style);
        let v = ev.ident as u64 % 37;
        if ev.kind == EvKind::Service {
            s.push_str("lambda.amazonaws.com");
        } else if via_cfn {
            s.push_str("cloudformation.amazonaws.com");
        } else if ev.kind == EvKind::Console {
            s.push_str("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 Safari/537.36");
        } else if ev.console {
            s.push_str(if rng.random_bool(0.5) { "console.amazonaws.com" } else { "AWS Internal" });
        } else {
            match (style, rng.random_range(0..10u32)) {
                (Style::Terraform, 0) | (Style::Human, 0..=6) => {
                    s.push_str("aws-cli/2.15.");
                    push_u64(s, v);
                    s.push_str(" Python/3.11.8 Linux/6.5.0-1014-aws exe/x86_64.ubuntu.22 prompt/off command/");
                    s.push_str(call.prefix);
                    s.push('.');
                    for c in call.name.chars() {
                        s.push(c.to_ascii_lowercase());
                    }
                }
                (Style::Terraform, _) => {
                    s.push_str("APN/1.0 HashiCorp/1.0 Terraform/1.7.4 (+https://www.terraform.io) terraform-provider-aws/5.40.0 (+https://registry.terraform.io/providers/hashicorp/aws) aws-sdk-go-v2/1.25.2 os/linux lang/go#1.22.0 md/GOOS#linux md/GOARCH#amd64 api/");
                    s.push_str(call.prefix);
                    s.push_str("#1.");
                    push_u64(s, v);
                    s.push_str(".0");
                }
                (Style::Sdk, 8..) => s.push_str("aws-sdk-java/1.12.652 Linux/5.10.210-201.852.amzn2.x86_64 OpenJDK_64-Bit_Server_VM/17.0.10+7-LTS java/17.0.10 vendor/Amazon.com_Inc. cfg/retry-mode/standard"),
                _ => {
                    s.push_str("Boto3/1.34.");
                    push_u64(s, v);
                    s.push_str(" md/Botocore#1.34.");
                    push_u64(s, v);
                    s.push_str(" ua/2.0 os/linux#5.10.210-201.852.amzn2.x86_64 md/arch#x86_64 lang/python#3.12.2 md/pyimpl#CPython cfg/retry-mode#legacy Botocore/1.34.");
                    push_u64(s, v);
                }
            }
        }
        s.push('"');
        if ev.fail {
            let action = call.action();
            if call.prefix == "s3" {
                s.push_str(",\"errorCode\":\"AccessDenied\",\"errorMessage\":\"Access Denied\"");
            } else if call.prefix == "ec2" {
                s.push_str(",\"errorCode\":\"Client.UnauthorizedOperation\",\"errorMessage\":\"You are not authorized to perform this operation. User: ");
                s.push_str(&actor_arn);
                s.push_str(" is not authorized to perform: ");
                s.push_str(&action);
                s.push_str(" because no identity-based policy allows the ");
                s.push_str(&action);
                s.push_str(" action\"");
            } else {
                s.push_str(
                    if matches!(
                        call.prefix,
                        "dynamodb" | "kms" | "secretsmanager" | "logs" | "ecr" | "ecs" | "glue" | "athena"
                    ) {
                        ",\"errorCode\":\"AccessDeniedException\",\"errorMessage\":\"User: "
                    } else {
                        ",\"errorCode\":\"AccessDenied\",\"errorMessage\":\"User: "
                    },
                );
                s.push_str(&actor_arn);
                s.push_str(" is not authorized to perform: ");
                s.push_str(&action);
                s.push_str(" on resource: * because no identity-based policy allows the ");
                s.push_str(&action);
                s.push_str(" action\"");
            }
        }
        // request
        s.push_str(",\"requestParameters\":");
        let mut resources = String::new();
        if ev.kind == EvKind::Console {
            s.push_str("null,\"responseElements\":{\"ConsoleLogin\":\"Success\"},\"additionalEventData\":{\"LoginTo\":\"https://console.aws.amazon.com/console/home?state=hashArgs%23&isauthcode=true\",\"MobileVersion\":\"No\",\"MFAUsed\":\"Yes\"}");
        } else if ev.kind == EvKind::Service {
            let role = &org.identities[ev.ident as usize];
            s.push_str("{\"roleArn\":\"");
            s.push_str(&role.arn);
            s.push_str("\",\"roleSessionName\":\"");
            s.push_str(role.sessions.first().map_or("session", |x| x.name.as_str()));
            s.push_str("\"},\"responseElements\":null");
        } else if let EvKind::Unmapped(_) = ev.kind {
            s.push_str("null,\"responseElements\":null");
        } else {
            params(s, &mut resources, rng, org, acct, region, call, ev);
            s.push_str(",\"responseElements\":null");
            if call.prefix == "s3" {
                s.push_str(",\"additionalEventData\":{\"SignatureVersion\":\"SigV4\",\"CipherSuite\":\"TLS_AES_128_GCM_SHA256\",\"bytesTransferredIn\":0,\"AuthenticationMethod\":\"AuthHeader\",\"x-amz-id-2\":\"");
                push_alnum(s, rng, 76);
                s.push_str("\",\"bytesTransferredOut\":");
                push_u64(s, if call.data && !ev.fail { rng.random_range(100..5_000_000) } else { 0 });
                s.push('}');
            }
        }
        s.push_str(",\"requestID\":\"");
        if call.prefix == "s3" && !matches!(ev.kind, EvKind::Console | EvKind::Service) {
            push_upper32(s, rng, 16);
        } else {
            push_uuid(s, rng);
        }
        s.push_str("\",\"eventID\":\"");
        push_uuid(s, rng);
        let (read_only, data) = match ev.kind {
            EvKind::Console => (false, false),
            EvKind::Service => (false, false),
            EvKind::Unmapped(_) => (true, false),
            _ => (call.read_only(), call.data),
        };
        s.push_str(if read_only { "\",\"readOnly\":true" } else { "\",\"readOnly\":false" });
        if !resources.is_empty() {
            s.push_str(",\"resources\":");
            s.push_str(&resources);
            s.push(']');
        }
        s.push_str(if ev.kind == EvKind::Console {
            ",\"eventType\":\"AwsConsoleSignIn\""
        } else {
            ",\"eventType\":\"AwsApiCall\""
        });
        s.push_str(if data { ",\"managementEvent\":false" } else { ",\"managementEvent\":true" });
        s.push_str(",\"recipientAccountId\":\"");
        s.push_str(aid);
        s.push_str(if data { "\",\"eventCategory\":\"Data\"" } else { "\",\"eventCategory\":\"Management\"" });
        if ev.kind != EvKind::Console && ev.kind != EvKind::Service {
            s.push_str(",\"tlsDetails\":{\"tlsVersion\":\"");
            s.push_str(if rng.random_bool(0.8) {
                "TLSv1.3\",\"cipherSuite\":\"TLS_AES_128_GCM_SHA256"
            } else {
                "TLSv1.2\",\"cipherSuite\":\"ECDHE-RSA-AES128-GCM-SHA256"
            });
            s.push_str("\",\"clientProvidedHostHeader\":\"");
            let host_prefix = source.trim_end_matches(".amazonaws.com");
            if call.global() {
                s.push_str(source);
            } else {
                s.push_str(host_prefix);
                s.push('.');
                s.push_str(region);
                s.push_str(".amazonaws.com");
            }
            s.push_str("\"}");
        }
        if ev.console && ev.kind != EvKind::Console {
            s.push_str(",\"sessionCredentialFromConsole\":\"true\"");
        }
        s.push('}');
    }
}

fn pick_str<'a, R: Rng>(rng: &mut R, xs: &'a [String]) -> &'a str {
    xs[rng.random_range(0..xs.len())].as_str()
}

fn kv(s: &mut String, first: bool, k: &str, v: &str) {
    s.push_str(if first { "{\"" } else { ",\"" });
    s.push_str(k);
    s.push_str("\":\"");
    s.push_str(v);
    s.push('"');
}

fn resource(r: &mut String, kind: &str, arn: &str, account: Option<&str>) {
    r.push_str(if r.is_empty() { "[{" } else { ",{" });
    if let Some(a) = account {
        r.push_str("\"accountId\":\"");
        r.push_str(a);
        r.push_str("\",");
    }
    r.push_str("\"type\":\"");
    r.push_str(kind);
    r.push_str("\",\"ARN\":\"");
    r.push_str(arn);
    r.push_str("\"}");
}

#[allow(clippy::too_many_arguments)]
fn params<R: Rng>(
    s: &mut String,
    r: &mut String,
    rng: &mut R,
    org: &Org,
    acct: &crate::org::Account,
    region: &str,
    call: &ApiCall,
    ev: &Ev,
) {
    let aid = acct.id.as_str();
    match call.res {
        Res::None => s.push_str("null"),
        Res::S3Bucket | Res::S3Object => {
            let b = pick_str(rng, &acct.buckets);
            kv(s, true, "bucketName", b);
            s.push_str(",\"Host\":\"");
            s.push_str(b);
            s.push_str(".s3.");
            s.push_str(region);
            s.push_str(".amazonaws.com\"");
            if call.res == Res::S3Object {
                let mut key = String::with_capacity(48);
                key.push_str(["data/", "exports/", "logs/", "uploads/"][rng.random_range(0..4)]);
                push_time(&mut key, ev.t - rng.random_range(0..86_400 * 30));
                key.truncate(key.len() - 10);
                key.push('/');
                push_hex(&mut key, rng, 12);
                key.push_str(".json");
                kv(s, false, "key", &key);
                s.push('}');
                let bucket_arn = format!("arn:aws:s3:::{b}");
                resource(r, "AWS::S3::Object", &format!("{bucket_arn}/{key}"), None);
                resource(r, "AWS::S3::Bucket", &bucket_arn, Some(aid));
            } else {
                s.push('}');
                resource(r, "AWS::S3::Bucket", &format!("arn:aws:s3:::{b}"), Some(aid));
            }
        }
        Res::IamRole | Res::StsRole => {
            let roles = &acct.roles;
            let role = if roles.is_empty() {
                None
            } else {
                Some(&org.identities[roles[rng.random_range(0..roles.len())] as usize])
            };
            let (name, arn) = role.map_or(
                (
                    "OrganizationAccountAccessRole".to_string(),
                    format!("arn:aws:iam::{aid}:role/OrganizationAccountAccessRole"),
                ),
                |x| (x.name.clone(), x.arn.clone()),
            );
            if call.res == Res::StsRole {
                kv(s, true, "roleArn", &arn);
                let mut sess = String::from("session-");
                push_u64(&mut sess, ev.t as u64);
                kv(s, false, "roleSessionName", &sess);
                s.push_str(",\"durationSeconds\":3600}");
                resource(r, "AWS::IAM::Role", &arn, Some(aid));
            } else {
                kv(s, true, "roleName", &name);
                s.push('}');
            }
        }
        Res::IamUser => {
            let n = org.identities.len();
            let mut pickd = "admin";
            for _ in 0..4 {
                let c = &org.identities[rng.random_range(0..n)];
                if c.kind == Kind::User && c.account == ev.account {
                    pickd = c.name.as_str();
                    break;
                }
            }
            kv(s, true, "userName", pickd);
            s.push('}');
        }
        Res::IamGroup => {
            kv(s, true, "groupName", ["admins", "developers", "auditors"][rng.random_range(0..3)]);
            s.push('}');
        }
        Res::IamPolicy => {
            let p = if rng.random_bool(0.5) {
                crate::org::READONLY_ARN.to_string()
            } else {
                format!("arn:aws:iam::{aid}:policy/DeveloperAccess")
            };
            kv(s, true, "policyArn", &p);
            if call.name == "GetPolicyVersion" {
                kv(s, false, "versionId", "v1");
            }
            s.push('}');
        }
        Res::Ec2Instance => {
            s.push_str("{\"instancesSet\":{\"items\":[{\"instanceId\":\"");
            s.push_str(pick_str(rng, &acct.instances));
            s.push_str("\"}]}}");
        }
        Res::Ec2Generic => s.push_str("{\"filterSet\":{},\"maxResults\":1000}"),
        Res::DdbTable | Res::DdbItem => {
            let tname = pick_str(rng, &acct.tables);
            kv(s, true, "tableName", tname);
            if call.res == Res::DdbItem {
                s.push_str(
                    ",\"key\":{\"pk\":\"HIDDEN_DUE_TO_SECURITY_REASONS\",\"sk\":\"HIDDEN_DUE_TO_SECURITY_REASONS\"}",
                );
            }
            s.push('}');
            if call.data {
                resource(
                    r,
                    "AWS::DynamoDB::Table",
                    &format!("arn:aws:dynamodb:{region}:{aid}:table/{tname}"),
                    Some(aid),
                );
            }
        }
        Res::KmsKey => {
            let arn = format!("arn:aws:kms:{region}:{aid}:key/{}", pick_str(rng, &acct.keys));
            kv(s, true, "keyId", &arn);
            if matches!(call.name, "Decrypt" | "Encrypt" | "GenerateDataKey") {
                s.push_str(",\"encryptionAlgorithm\":\"SYMMETRIC_DEFAULT\"");
            }
            s.push('}');
            resource(r, "AWS::KMS::Key", &arn, Some(aid));
        }
        Res::SqsQueue => {
            let q = pick_str(rng, &acct.queues);
            let url = format!("https://sqs.{region}.amazonaws.com/{aid}/{q}");
            kv(s, true, "queueUrl", &url);
            s.push('}');
            if call.data {
                resource(r, "AWS::SQS::Queue", &format!("arn:aws:sqs:{region}:{aid}:{q}"), Some(aid));
            }
        }
        Res::SnsTopic => {
            let arn = format!("arn:aws:sns:{region}:{aid}:{}", pick_str(rng, &acct.topics));
            kv(s, true, "topicArn", &arn);
            s.push('}');
            if call.data {
                resource(r, "AWS::SNS::Topic", &arn, Some(aid));
            }
        }
        Res::Metric => s.push_str("{\"namespace\":\"AWS/Lambda\",\"metricName\":\"Invocations\"}"),
        Res::LogGroup => {
            kv(s, true, "logGroupName", pick_str(rng, &acct.log_groups));
            s.push('}');
        }
        Res::SsmParam => {
            let p = pick_str(rng, &acct.params);
            kv(s, true, if call.name == "GetParametersByPath" { "path" } else { "name" }, p);
            s.push_str(",\"withDecryption\":true}");
        }
        Res::Secret => {
            kv(s, true, "secretId", pick_str(rng, &acct.secrets));
            s.push('}');
        }
        Res::Trail => {
            kv(s, true, "name", &format!("arn:aws:cloudtrail:us-east-1:{aid}:trail/org-trail"));
            s.push('}');
        }
        Res::RdsInstance => {
            kv(s, true, "dBInstanceIdentifier", pick_str(rng, &acct.dbs));
            s.push('}');
        }
        Res::EcrRepo => {
            kv(s, true, "repositoryName", pick_str(rng, &acct.repos));
            kv(s, false, "registryId", aid);
            s.push('}');
        }
        Res::EcsCluster => {
            kv(s, true, "cluster", pick_str(rng, &acct.clusters));
            s.push('}');
        }
        Res::EksCluster => {
            kv(s, true, "name", pick_str(rng, &acct.clusters));
            s.push('}');
        }
        Res::GlueTable => {
            let (db, table) = &acct.glue_tables[rng.random_range(0..acct.glue_tables.len())];
            kv(s, true, "databaseName", db);
            kv(s, false, "name", table);
            s.push('}');
        }
        Res::GlueJob => {
            kv(s, true, "jobName", pick_str(rng, &acct.jobs));
            s.push('}');
        }
        Res::Athena => {
            s.push_str("{\"queryExecutionId\":\"");
            push_uuid(s, rng);
            s.push_str("\",\"workGroup\":\"primary\"}");
        }
        Res::Stack => {
            kv(s, true, "stackName", pick_str(rng, &acct.stacks));
            s.push('}');
        }
    }
}
