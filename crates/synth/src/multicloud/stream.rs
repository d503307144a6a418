//! The activity stream: hour by hour, in time order, Azure Activity Log records (one file per
//! subscription and hour), GCP audit entries (one file per project and day), Okta System Log events
//! and Workspace Reports activities, with the attacks embedded; the truth tallies; the attacks' plan.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use grantwatch_types::{Cloud, EventTime};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rustc_hash::FxHashMap;
use serde_json::{Value, json};

use super::exports::{Written, write_directories, write_snapshots};
use super::ops::{AZ_OPS, AzTarget, GCP_CALLS, GTarget, Log, az_op, gcp_call};
use super::roles::{AzureRoles, GcpRoles};
use super::world::{Actor, Assignment, AzScope, Binding, Cl, GScope, OWNER_GUID, PKind, Restrict, SaKey, World, cap};
use super::{CloudIdentity, CloudsTruth, MultiCloudSpec, TruthGrant, TruthHuman, TruthRole};
use crate::scenario::{Label, Technique};
use crate::util::{civil_from_days, hex, time_string, uuid};
use crate::{LOOKBACK_DAYS, SynthError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EvK {
    Az,
    Gcp,
    Okta,
    Ws,
    Attack,
}

#[derive(Debug, Clone, Copy)]
struct Ev {
    t: i64,
    kind: EvK,
    /// Actor, human or attack index.
    who: u32,
    call: u16,
    /// Resource / resource group / bucket … index, by the call's target.
    tgt: u32,
    fail: bool,
}

#[derive(Default, Clone)]
struct Tally {
    events: u64,
    events_lb: u64,
    last: Option<i64>,
    calls: FxHashMap<u16, i64>,
    last_day_lb: i64,
    active_days: u32,
}

#[derive(Debug, Clone, Copy)]
enum AttackKind {
    /// `actor` assigns Owner on its subscription to service principal `principal` (assignment `asg`).
    AzureOwner {
        actor: u32,
        asg: u32,
    },
    /// `actor` deletes the subscription's Activity Log diagnostic setting.
    AzureDiagDelete {
        actor: u32,
    },
    /// `actor` creates a user-managed key for service account `sa` (key `key` of it).
    GcpKey {
        actor: u32,
        sa: u32,
        key: u32,
    },
    /// `actor` grants allUsers objectViewer on bucket `bucket` of its project.
    GcpPublicBucket {
        actor: u32,
        bucket: u16,
    },
    OktaMfa {
        human: u32,
    },
    Ws2sv {
        human: u32,
    },
}

struct Attack {
    t: i64,
    kind: AttackKind,
    label: Label,
}

const DIAG_DELETE: &str = "Microsoft.Insights/diagnosticSettings/delete";
const UNMAPPED_OP: &str = "Microsoft.Compute/virtualMachines/performMaintenance/action";
const AZ_CLI: &str = "04b07795-8ddb-461a-bbee-02f9e1bf7b46";

struct Gen<'a> {
    world: &'a World,
    az_ref: &'a AzureRoles,
    gcp_ref: &'a GcpRoles,
    out: PathBuf,
    cutoff: i64,
    tallies: Vec<Tally>,
    okta_last: Vec<Option<i64>>,
    ws_last: Vec<Option<i64>>,
    /// This hour's Activity Log records per subscription: (time, line), sorted when written.
    az_bufs: Vec<Vec<(String, String)>>,
    gcp_files: Vec<Option<(BufWriter<fs::File>, PathBuf)>>,
    gcp_day: i64,
    okta: (BufWriter<fs::File>, PathBuf),
    ws: (BufWriter<fs::File>, PathBuf),
    created_dirs: BTreeSet<PathBuf>,
    written: Written,
    truth: Counters,
    diag_deleted: Vec<i64>,
}

#[derive(Default)]
struct Counters {
    azure_operations: u64,
    azure_records: u64,
    gcp_records: u64,
    okta_events: u64,
    workspace_events: u64,
    unmapped: u64,
    failures: u64,
    dropped: u64,
}

fn open(path: &Path) -> Result<BufWriter<fs::File>, SynthError> {
    if let Some(d) = path.parent() {
        fs::create_dir_all(d).map_err(|e| SynthError::io(d, e))?;
    }
    let f = fs::File::create(path).map_err(|e| SynthError::io(path, e))?;
    Ok(BufWriter::with_capacity(1 << 18, f))
}

fn pick_cum<R: Rng>(rng: &mut R, cum: &[f64]) -> usize {
    let total = cum.last().copied().unwrap_or(0.0);
    let x = rng.random::<f64>() * total;
    cum.partition_point(|&c| c <= x).min(cum.len().saturating_sub(1))
}

/// Hourly weight: a diurnal curve, quieter weekends (as the AWS part).
fn hour_weight(hour_index: i64) -> u64 {
    let hour = hour_index.rem_euclid(24);
    let diurnal: u64 = match hour {
        0..=5 => 20,
        6..=8 => 45,
        9..=17 => 100,
        18..=21 => 60,
        _ => 30,
    };
    let weekday = (hour_index.div_euclid(24) + 3).rem_euclid(7);
    if weekday >= 5 { diurnal * 2 / 5 } else { diurnal }
}

fn ts_frac(t: i64, frac: u64, digits: usize) -> String {
    let s = time_string(t);
    format!("{}.{:0digits$}Z", &s[..19], frac)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn run(
    spec: &MultiCloudSpec,
    world: &mut World,
    az_ref: &AzureRoles,
    gcp_ref: &GcpRoles,
    rng: &mut ChaCha8Rng,
    out: &Path,
    start: i64,
    as_of: i64,
) -> Result<CloudsTruth, SynthError> {
    let cutoff = as_of - i64::from(LOOKBACK_DAYS) * 86_400;
    let mut attacks = plan_attacks(world, rng, start, as_of, cutoff);
    attacks.sort_by_key(|a| a.t);
    let mut written = Written::default();
    write_snapshots(world, gcp_ref, out, as_of, &mut written)?;
    let world: &World = world;

    let okta_p = out.join("okta/system-log.jsonl");
    let ws_p = out.join("workspace/activities.jsonl");
    let mut g = Gen {
        world,
        az_ref,
        gcp_ref,
        out: out.to_path_buf(),
        cutoff,
        tallies: vec![Tally { last_day_lb: i64::MIN, ..Tally::default() }; world.actors.len()],
        okta_last: vec![None; world.humans.len()],
        ws_last: vec![None; world.humans.len()],
        az_bufs: vec![Vec::new(); world.azure.subs.len()],
        gcp_files: (0..world.gcp.projects.len()).map(|_| None).collect(),
        gcp_day: i64::MIN,
        okta: (open(&okta_p)?, okta_p),
        ws: (open(&ws_p)?, ws_p),
        created_dirs: BTreeSet::new(),
        written,
        truth: Counters::default(),
        diag_deleted: vec![i64::MAX; world.azure.subs.len()],
    };
    for a in &attacks {
        if let AttackKind::AzureDiagDelete { actor } = a.kind {
            let s = world.actors[actor as usize].scope as usize;
            g.diag_deleted[s] = g.diag_deleted[s].min(a.t);
        }
    }
    g.written.files += 2;
    g.stream(spec, rng, start, as_of, &mut attacks)?;
    for (w, p) in [&mut g.okta, &mut g.ws] {
        w.flush().map_err(|e| SynthError::io(p, e))?;
    }
    g.close_gcp()?;
    let mut written = std::mem::take(&mut g.written);
    write_directories(world, out, &g.okta_last, &g.ws_last, &mut written)?;
    let labels: Vec<Label> = attacks.into_iter().map(|a| a.label).collect();
    let lpath = out.join("labels.jsonl");
    let mut lw = open(&lpath)?;
    for l in &labels {
        let line = serde_json::to_vec(l)?;
        lw.write_all(&line).and_then(|()| lw.write_all(b"\n")).map_err(|e| SynthError::io(&lpath, e))?;
        written.bytes += line.len() as u64 + 1;
    }
    lw.flush().map_err(|e| SynthError::io(&lpath, e))?;
    written.files += 1;
    g.written = written;
    Ok(g.finish(spec, as_of, labels))
}

/// Picks each attack's actor, target and time (in the last two days, inside the lookback), and
/// changes the snapshot accordingly: the snapshot is taken at the end.
fn plan_attacks(world: &mut World, rng: &mut ChaCha8Rng, start: i64, as_of: i64, cutoff: i64) -> Vec<Attack> {
    let lo = (as_of - 2 * 86_400).max(start).max(cutoff + 1);
    let span = (as_of - lo).max(1);
    let when = |rng: &mut ChaCha8Rng| (lo + rng.random_range(0..span) * 3 / 4).min(as_of);
    let mut out = Vec::new();
    let ev = |t: i64| EventTime(t * 1000);
    let label =
        |n: usize, technique: Technique, identity: String, account: String, t: i64, description: String| Label {
            id: format!("mc-{n:02}"),
            technique,
            identity,
            account,
            start: ev(t),
            end: ev(t),
            event_ids: Vec::new(),
            description,
        };
    let owner_role = world.azure.roles.iter().position(|r| r.guid == OWNER_GUID).unwrap_or(0) as u16;
    // Azure: a subscription Owner (a human) gives a service principal Owner, then blinds the log.
    let candidates: Vec<u32> = (0..world.actors.len() as u32)
        .filter(|&i| {
            let a = &world.actors[i as usize];
            a.cloud == Cl::Azure && a.kind == "user" && a.super_identity
        })
        .collect();
    if !candidates.is_empty() {
        let actor = candidates[rng.random_range(0..candidates.len())];
        let s = world.actors[actor as usize].scope;
        let target = (0..world.actors.len()).find(|&i| {
            let a = &world.actors[i];
            a.cloud == Cl::Azure && a.scope == s && a.kind == "service_account" && !a.super_identity
        });
        let t = when(rng);
        if let Some(ti) = target {
            let principal = world.actors[ti].az.unwrap_or(0);
            let asg = world.azure.assignments.len() as u32;
            world.azure.assignments.push(Assignment {
                id: uuid(rng),
                principal,
                role: owner_role,
                scope: AzScope::Sub(s),
                created: t,
            });
            let scope = world.azure.scope_str(AzScope::Sub(s));
            let ta = &mut world.actors[ti];
            ta.grants.push(super::world::Grant {
                role: owner_role,
                scope,
                inherited: false,
                restrict: Restrict::Anywhere,
                via_group: None,
            });
            ta.super_identity = true;
            let a = &world.actors[actor as usize];
            let target_name = world.actors[ti].name.clone();
            out.push(Attack {
                t,
                kind: AttackKind::AzureOwner { actor, asg },
                label: label(
                    1,
                    Technique::PrivilegeEscalation,
                    a.uid.clone(),
                    world.azure.subs[s as usize].id.clone(),
                    t,
                    format!("{} assigns Owner on the subscription to the service principal {target_name}", a.name),
                ),
            });
        }
        let td = (t + rng.random_range(300..1800)).min(as_of);
        let a = &world.actors[actor as usize];
        out.push(Attack {
            t: td,
            kind: AttackKind::AzureDiagDelete { actor },
            label: label(
                2,
                Technique::DefenseEvasion,
                a.uid.clone(),
                world.azure.subs[s as usize].id.clone(),
                td,
                format!("{} deletes the subscription's Activity Log diagnostic setting", a.name),
            ),
        });
    }
    // GCP: an Owner/Editor human creates a key for a service account of the project.
    let key_perm = world.gcp_ix[gcp_call("google.iam.admin.v1.CreateServiceAccountKey")];
    let can = |world: &World, a: &Actor, perm: Option<u32>| {
        perm.is_some_and(|perm| {
            a.grants.iter().any(|g| {
                g.restrict == Restrict::Anywhere && world.gcp.roles[g.role as usize].perms.binary_search(&perm).is_ok()
            })
        })
    };
    let cands: Vec<u32> = (0..world.actors.len() as u32)
        .filter(|&i| {
            let a = &world.actors[i as usize];
            a.cloud == Cl::Gcp && a.kind == "user" && can(world, a, key_perm)
        })
        .collect();
    if !cands.is_empty() {
        let actor = cands[rng.random_range(0..cands.len())];
        let p = world.actors[actor as usize].scope;
        let sas: Vec<u32> = (0..world.gcp.sas.len() as u32)
            .filter(|&s| {
                world.gcp.sas[s as usize].project == p && world.gcp.sas[s as usize].archetype != "default_compute"
            })
            .collect();
        if !sas.is_empty() {
            let sa = sas[rng.random_range(0..sas.len())];
            let t = when(rng);
            let key = world.gcp.sas[sa as usize].keys.len() as u32;
            world.gcp.sas[sa as usize].keys.push(SaKey { id: hex(rng, 40), user_managed: true, created: t });
            let a = &world.actors[actor as usize];
            out.push(Attack {
                t,
                kind: AttackKind::GcpKey { actor, sa, key },
                label: label(
                    3,
                    Technique::PrivilegeEscalation,
                    a.uid.clone(),
                    world.gcp.projects[p as usize].id.clone(),
                    t,
                    format!("{} creates a user-managed key for {}", a.name, world.gcp.sas[sa as usize].email),
                ),
            });
        }
    }
    // GCP: a storage admin makes a bucket public.
    let set_perm = world.gcp_ix[gcp_call("storage.setIamPermissions")];
    let cands: Vec<u32> = (0..world.actors.len() as u32)
        .filter(|&i| {
            let a = &world.actors[i as usize];
            a.cloud == Cl::Gcp && a.kind == "user" && can(world, a, set_perm)
        })
        .collect();
    if !cands.is_empty() {
        let actor = cands[rng.random_range(0..cands.len())];
        let p = world.actors[actor as usize].scope;
        let nb = world.gcp.projects[p as usize].buckets.len();
        let bucket = if nb > 1 { 1 } else { 0 } as u16;
        let t = when(rng);
        let viewer = world.gcp.roles.iter().position(|r| r.name == "roles/storage.objectViewer").unwrap_or(0) as u16;
        world.gcp.bindings.push(Binding {
            scope: GScope::Bucket(p, bucket),
            role: viewer,
            members: vec!["allUsers".into()],
        });
        let a = &world.actors[actor as usize];
        out.push(Attack {
            t,
            kind: AttackKind::GcpPublicBucket { actor, bucket },
            label: label(
                4,
                Technique::DataExfiltration,
                a.uid.clone(),
                world.gcp.projects[p as usize].id.clone(),
                t,
                format!(
                    "{} grants allUsers roles/storage.objectViewer on gs://{}",
                    a.name, world.gcp.projects[p as usize].buckets[bucket as usize]
                ),
            ),
        });
    }
    // Identity providers: an MFA factor deactivated, 2-step verification turned off.
    if !world.humans.is_empty() {
        let h = rng.random_range(0..world.humans.len()) as u32;
        let t = when(rng);
        let hu = &world.humans[h as usize];
        out.push(Attack {
            t,
            kind: AttackKind::OktaMfa { human: h },
            label: label(
                5,
                Technique::DefenseEvasion,
                format!("okta:{}/users/{}", world.okta_host, hu.okta_id),
                world.okta_host.clone(),
                t,
                format!("the MFA factor of {} is deactivated from an unfamiliar address", hu.spelled()),
            ),
        });
        let ws: Vec<u32> = (0..world.humans.len() as u32)
            .filter(|&i| world.humans[i as usize].ws_id.is_some() && world.humans[i as usize].ws_2sv)
            .collect();
        if !ws.is_empty() {
            let h = ws[rng.random_range(0..ws.len())];
            let t = when(rng);
            world.humans[h as usize].ws_2sv = false;
            let hu = &world.humans[h as usize];
            out.push(Attack {
                t,
                kind: AttackKind::Ws2sv { human: h },
                label: label(
                    6,
                    Technique::DefenseEvasion,
                    format!("workspace:{}/users/{}", world.customer_id, hu.ws_id.clone().unwrap_or_default()),
                    world.customer_id.clone(),
                    t,
                    format!("{} turns off 2-step verification", hu.email),
                ),
            });
        }
    }
    out
}

impl Gen<'_> {
    fn stream(
        &mut self,
        spec: &MultiCloudSpec,
        rng: &mut ChaCha8Rng,
        start: i64,
        as_of: i64,
        attacks: &mut [Attack],
    ) -> Result<(), SynthError> {
        let world = self.world;
        let h0 = start.div_euclid(3600);
        let last_slot = (as_of.div_euclid(3600) - h0).max(0) as u64;
        let total_w: u128 = (0..=last_slot).map(|s| u128::from(hour_weight(h0 + s as i64))).sum::<u128>().max(1);
        let e = u128::from(spec.events);
        let idp_total = if world.humans.is_empty() { 0 } else { u128::from(spec.events / 40 + 20) };
        let mut cum = 0u128;
        let mut cur_day = i64::MIN;
        let mut eligible: Vec<u32> = Vec::new();
        let mut ecum: Vec<f64> = Vec::new();
        let mut evs: Vec<Ev> = Vec::new();
        let mut next_attack = 0usize;
        for s in 0..=last_slot {
            let before = cum;
            cum += u128::from(hour_weight(h0 + s as i64));
            let n = (e * cum / total_w - e * before / total_w) as u64;
            let n_idp = (idp_total * cum / total_w - idp_total * before / total_w) as u64;
            let slot_start = (h0 + s as i64) * 3600;
            let slot_end = (slot_start + 3600).min(as_of + 1);
            let day = (slot_start - start).div_euclid(86_400);
            if day != cur_day {
                cur_day = day;
                let d = day as u32;
                eligible = (0..world.actors.len() as u32)
                    .filter(|&i| {
                        let a = &world.actors[i as usize];
                        !a.calls.is_empty() && a.window.is_some_and(|(from, to)| from <= d && d < to)
                    })
                    .collect();
                let mut acc = 0.0;
                ecum = eligible
                    .iter()
                    .map(|&i| {
                        acc += world.actors[i as usize].weight;
                        acc
                    })
                    .collect();
            }
            evs.clear();
            if slot_start >= slot_end {
                continue;
            }
            let time = |rng: &mut ChaCha8Rng, cutoff: i64| {
                let t = rng.random_range(slot_start..slot_end);
                if t == cutoff { if t + 1 < slot_end { t + 1 } else { t - 1 } } else { t }
            };
            if !eligible.is_empty() {
                for _ in 0..n {
                    let t = time(rng, self.cutoff);
                    let who = eligible[pick_cum(rng, &ecum)];
                    let a = &world.actors[who as usize];
                    let (mut call, restrict) = a.calls[pick_cum(rng, &a.cum)];
                    if a.cloud == Cl::Azure
                        && AZ_OPS[call as usize].op == "Microsoft.Compute/virtualMachines/write"
                        && rng.random_bool(0.1)
                    {
                        call = az_op(UNMAPPED_OP) as u16;
                    }
                    let fail = rng.random_bool(0.02);
                    let (kind, tgt) = match a.cloud {
                        Cl::Azure => {
                            if t >= self.diag_deleted[a.scope as usize] {
                                // the subscription's log is no longer exported
                                self.truth.dropped += 1;
                                continue;
                            }
                            (EvK::Az, self.az_target(rng, a, AZ_OPS[call as usize].target, restrict))
                        }
                        Cl::Gcp => (EvK::Gcp, self.gcp_target(rng, a, GCP_CALLS[call as usize].target, restrict)),
                    };
                    let mapped = match a.cloud {
                        Cl::Azure => world.az_ix[call as usize].is_some(),
                        Cl::Gcp => true,
                    };
                    self.tally(who, t, mapped.then_some(call));
                    if fail {
                        self.truth.failures += 1;
                    }
                    evs.push(Ev { t, kind, who, call, tgt, fail });
                }
            }
            for _ in 0..n_idp {
                let t = time(rng, self.cutoff);
                let h = rng.random_range(0..world.humans.len()) as u32;
                let ws = world.humans[h as usize].ws_id.is_some() && rng.random_bool(0.5);
                let fail = rng.random_bool(0.04);
                evs.push(Ev { t, kind: if ws { EvK::Ws } else { EvK::Okta }, who: h, call: 0, tgt: 0, fail });
            }
            while next_attack < attacks.len() && attacks[next_attack].t < slot_end {
                let a = &attacks[next_attack];
                match a.kind {
                    AttackKind::AzureOwner { actor, .. } => {
                        self.tally(actor, a.t, Some(az_op("Microsoft.Authorization/roleAssignments/write") as u16))
                    }
                    AttackKind::AzureDiagDelete { actor } => {
                        let call = az_op(DIAG_DELETE);
                        self.tally(actor, a.t, world.az_ix[call].map(|_| call as u16))
                    }
                    AttackKind::GcpKey { actor, .. } => {
                        self.tally(actor, a.t, Some(gcp_call("google.iam.admin.v1.CreateServiceAccountKey") as u16))
                    }
                    AttackKind::GcpPublicBucket { actor, .. } => {
                        self.tally(actor, a.t, Some(gcp_call("storage.setIamPermissions") as u16))
                    }
                    AttackKind::OktaMfa { .. } | AttackKind::Ws2sv { .. } => {}
                }
                evs.push(Ev { t: a.t, kind: EvK::Attack, who: next_attack as u32, call: 0, tgt: 0, fail: false });
                next_attack += 1;
            }
            evs.sort_by_key(|e| e.t);
            for ev in std::mem::take(&mut evs) {
                match ev.kind {
                    EvK::Az => {
                        let a = &world.actors[ev.who as usize];
                        let op = &AZ_OPS[ev.call as usize];
                        let rid = self.az_resource_id(rng, a, op.target, ev.tgt);
                        self.az_records(rng, a, ev.call as usize, &rid, ev.t, ev.fail, None, slot_end);
                    }
                    EvK::Gcp => {
                        let line = self.gcp_entry(
                            rng,
                            &world.actors[ev.who as usize],
                            ev.call as usize,
                            ev.tgt,
                            ev.t,
                            ev.fail,
                            None,
                        );
                        self.gcp_write(world.actors[ev.who as usize].scope, ev.t, &line)?;
                    }
                    EvK::Okta => {
                        let line = self.okta_event(rng, ev.who, ev.t, ev.fail, false);
                        self.idp_write(true, &line)?;
                        if !ev.fail {
                            self.okta_last[ev.who as usize] = Some(ev.t);
                        }
                    }
                    EvK::Ws => {
                        let line = self.ws_event(rng, ev.who, ev.t, ev.fail, false);
                        self.idp_write(false, &line)?;
                        if !ev.fail {
                            self.ws_last[ev.who as usize] = Some(ev.t);
                        }
                    }
                    EvK::Attack => {
                        let ids = self.attack(rng, &attacks[ev.who as usize], slot_end)?;
                        attacks[ev.who as usize].label.event_ids = ids;
                    }
                }
            }
            self.flush_azure(slot_start)?;
        }
        Ok(())
    }

    fn tally(&mut self, who: u32, t: i64, call: Option<u16>) {
        let cutoff = self.cutoff;
        let tl = &mut self.tallies[who as usize];
        tl.events += 1;
        tl.last = Some(tl.last.map_or(t, |l| l.max(t)));
        if t > cutoff {
            tl.events_lb += 1;
            let day = t.div_euclid(86_400);
            if day != tl.last_day_lb {
                tl.last_day_lb = day;
                tl.active_days += 1;
            }
        }
        if let Some(c) = call {
            let e = tl.calls.entry(c).or_insert(t);
            *e = (*e).max(t);
        }
    }

    // ------------------------------------------------------------------------------------ azure

    fn az_target(&self, rng: &mut ChaCha8Rng, a: &Actor, target: AzTarget, r: Restrict) -> u32 {
        let sub = &self.world.azure.subs[a.scope as usize];
        match target.kind() {
            Some(kind) => {
                let ok: Vec<u32> = (0..sub.res.len() as u32)
                    .filter(|&i| {
                        let x = &sub.res[i as usize];
                        x.kind == kind
                            && match r {
                                Restrict::Rg(rg) => x.rg == rg,
                                Restrict::Res(ri) => ri == i,
                                _ => true,
                            }
                    })
                    .collect();
                ok.get(rng.random_range(0..ok.len().max(1))).copied().unwrap_or(0)
            }
            None => match r {
                Restrict::Rg(rg) => u32::from(rg),
                Restrict::Res(ri) => u32::from(sub.res[ri as usize].rg),
                _ => rng.random_range(0..sub.rgs.len().max(1)) as u32,
            },
        }
    }

    fn az_resource_id(&self, rng: &mut ChaCha8Rng, a: &Actor, target: AzTarget, tgt: u32) -> String {
        let sub = &self.world.azure.subs[a.scope as usize];
        match target {
            AzTarget::Snapshot => {
                let d = &sub.res[tgt as usize];
                let base: String = d.name.chars().take_while(|&c| c != '_').collect();
                format!(
                    "{}/providers/Microsoft.Compute/snapshots/snap-{base}-{}",
                    sub.rg_id(d.rg),
                    rng.random_range(1000..9999)
                )
            }
            AzTarget::Container => {
                let name = ["data", "exports", "uploads", "backups", "logs"][rng.random_range(0..5)];
                format!("{}/blobServices/default/containers/{name}", sub.res_id(tgt))
            }
            AzTarget::NsgRule => {
                let port = [22, 443, 3389, 8080, 5432][rng.random_range(0..5)];
                format!("{}/securityRules/allow-{port}", sub.res_id(tgt))
            }
            AzTarget::ResourceGroup => sub.rg_id(tgt as u16),
            AzTarget::Deployment => format!(
                "{}/providers/Microsoft.Resources/deployments/main-{}",
                sub.rg_id(tgt as u16),
                rng.random_range(100_000..999_999)
            ),
            AzTarget::RoleAssignment => {
                format!("{}/providers/Microsoft.Authorization/roleAssignments/{}", sub.rg_id(tgt as u16), uuid(rng))
            }
            AzTarget::DiagnosticSetting => format!(
                "/subscriptions/{}/providers/microsoft.insights/diagnosticSettings/{}",
                sub.id, self.world.azure.diag_setting
            ),
            _ => sub.res_id(tgt),
        }
    }

    /// Renders one operation (a Start + Success/Failure pair, or one record) into the
    /// subscription's buffer; returns the correlation id.
    #[allow(clippy::too_many_arguments)]
    fn az_records(
        &mut self,
        rng: &mut ChaCha8Rng,
        a: &Actor,
        call: usize,
        rid: &str,
        t: i64,
        fail: bool,
        request: Option<Value>,
        slot_end: i64,
    ) -> String {
        let world = self.world;
        let az = &world.azure;
        let sub = &az.subs[a.scope as usize];
        let op = &AZ_OPS[call];
        let p = &az.principals[a.az.unwrap_or(0) as usize];
        let corr = uuid(rng);
        let ip = &a.ips[(t as usize) % a.ips.len().max(1)];
        let op_ix = self.world.az_ix[call];
        // the grant that allowed it (evidence), as ARM logs it
        let grant = a
            .grants
            .iter()
            .find(|g| op_ix.is_some_and(|i| az.roles[g.role as usize].set.control.binary_search(&i).is_ok()))
            .or_else(|| a.grants.iter().find(|g| az.roles[g.role as usize].guid == OWNER_GUID))
            .or(a.grants.first());
        let ptype = match p.kind {
            PKind::User => "User",
            PKind::Group => "Group",
            _ => "ServicePrincipal",
        };
        let evidence = grant.map(|g| {
            let r = &az.roles[g.role as usize];
            json!({
                "role": r.name, "roleAssignmentScope": g.scope, "roleDefinitionId": r.guid.replace('-', ""),
                "principalId": p.oid.replace('-', ""), "principalType": ptype
            })
        });
        let iat = t - rng.random_range(60..3000);
        let mut claims = json!({
            "aud": "https://management.core.windows.net/",
            "iss": format!("https://sts.windows.net/{}/", az.tenant),
            "iat": iat.to_string(), "nbf": iat.to_string(), "exp": (iat + 4200).to_string(),
            "http://schemas.microsoft.com/identity/claims/objectidentifier": p.oid,
            "http://schemas.microsoft.com/identity/claims/tenantid": az.tenant,
            "ver": "1.0"
        });
        if let Value::Object(m) = &mut claims {
            match (p.kind, p.human.map(|h| &world.humans[h as usize])) {
                (PKind::User, h) => {
                    let upn = p.upn.clone().unwrap_or_default();
                    m.insert("http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn".into(), json!(upn));
                    m.insert("http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name".into(), json!(upn));
                    m.insert("name".into(), json!(p.display));
                    if let Some(h) = h {
                        m.insert(
                            "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/givenname".into(),
                            json!(cap(&h.first)),
                        );
                        m.insert(
                            "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/surname".into(),
                            json!(cap(&h.last)),
                        );
                    }
                    m.insert("http://schemas.microsoft.com/claims/authnmethodsreferences".into(), json!("pwd,mfa"));
                    m.insert("appid".into(), json!(AZ_CLI));
                    m.insert("appidacr".into(), json!("0"));
                    m.insert("ipaddr".into(), json!(ip));
                }
                _ => {
                    m.insert("appid".into(), json!(p.app_id));
                    m.insert("appidacr".into(), json!("2"));
                    m.insert(
                        "http://schemas.microsoft.com/identity/claims/identityprovider".into(),
                        json!(format!("https://sts.windows.net/{}/", az.tenant)),
                    );
                    m.insert("idtyp".into(), json!("app"));
                    if let Some(r) = &p.mi_resource {
                        m.insert("xms_mirid".into(), json!(r));
                    }
                }
            }
        }
        let mut hierarchy = String::from(&az.tenant);
        for m in az.mg_chain(a.scope).into_iter().skip(1) {
            hierarchy.push('/');
            hierarchy.push_str(&az.mgs[m as usize].name);
        }
        hierarchy.push('/');
        hierarchy.push_str(&sub.id);
        let upper_rid = rid.to_ascii_uppercase();
        let upper_op = op.op.to_ascii_uppercase();
        let record = |rng: &mut ChaCha8Rng, t: i64, result: &str, sig: String, status: Option<&str>, dur: u64| {
            let mut props = json!({
                "eventCategory": "Administrative", "entity": rid, "message": op.op, "hierarchy": hierarchy,
                "serviceRequestId": if result == "Start" { Value::Null } else { json!(uuid(rng)) }
            });
            if let Some(s) = status {
                props["statusCode"] = json!(s);
            }
            match (&request, result) {
                (Some(r), "Start") => props["requestbody"] = json!(r.to_string()),
                // A created role assignment comes back in the final record, as Azure's export writes it
                // (`properties.responseBody`, lower-camel keys): what names the role there.
                (Some(r), "Success") if op.op.eq_ignore_ascii_case(ROLE_ASSIGNMENT_WRITE) => {
                    props["responseBody"] = json!(assignment_response(r, rid).to_string());
                }
                _ => {}
            }
            json!({
                "time": ts_frac(t, rng.random_range(0..10_000_000), 7),
                "resourceId": upper_rid,
                "operationName": upper_op,
                "category": "Administrative",
                "resultType": result,
                "resultSignature": sig,
                "durationMs": dur.to_string(),
                "callerIpAddress": ip,
                "correlationId": corr,
                "identity": {
                    "authorization": {"scope": rid, "action": op.op, "evidence": evidence},
                    "claims": claims
                },
                "level": if result == "Failure" { "Error" } else { "Information" },
                "location": sub.location,
                "properties": props
            })
        };
        let end_t = (t + rng.random_range(1..90)).min(slot_end - 1).max(t);
        let (result, sig, status) = if fail {
            ("Failure", "Failed.Conflict".to_string(), "Conflict")
        } else {
            ("Success", format!("Succeeded.{}", op.status), op.status)
        };
        let buf = &mut self.az_bufs[a.scope as usize];
        let mut n = 0;
        if op.pair {
            let start_rec = record(rng, t, "Start", "Started.".into(), None, 0);
            push_line(buf, &start_rec);
            n += 1;
            let dur = ((end_t - t) * 1000) as u64 + rng.random_range(0..1000);
            let done = record(rng, end_t, result, sig, Some(status), dur);
            push_line(buf, &done);
            n += 1;
        } else {
            let dur = rng.random_range(40..900);
            let done = record(rng, t, result, sig, Some(status), dur);
            push_line(buf, &done);
            n += 1;
        }
        self.truth.azure_operations += 1;
        self.truth.azure_records += n;
        // One operation, one unmapped event: a `Start` record is not an API call's outcome.
        if op_ix.is_none() {
            self.truth.unmapped += 1;
        }
        corr
    }

    fn flush_azure(&mut self, slot_start: i64) -> Result<(), SynthError> {
        let (y, m, d) = civil_from_days(slot_start.div_euclid(86_400));
        let h = slot_start.rem_euclid(86_400) / 3600;
        for (i, buf) in self.az_bufs.iter_mut().enumerate() {
            if buf.is_empty() {
                continue;
            }
            let sub = &self.world.azure.subs[i].id;
            let dir = self.out.join(format!("azure/activity/{sub}/y={y:04}/m={m:02}/d={d:02}/h={h:02}/m=00"));
            if !self.created_dirs.contains(&dir) {
                fs::create_dir_all(&dir).map_err(|e| SynthError::io(&dir, e))?;
                if self.created_dirs.len() > 100_000 {
                    self.created_dirs.clear();
                }
                self.created_dirs.insert(dir.clone());
            }
            // a Success lands after the Start of later operations: the file is in time order
            buf.sort_by(|a, b| a.0.cmp(&b.0));
            let mut body = String::with_capacity(buf.iter().map(|(_, l)| l.len() + 1).sum());
            for (_, l) in buf.drain(..) {
                body.push_str(&l);
                body.push('\n');
            }
            let p = dir.join("PT1H.json");
            fs::write(&p, body.as_bytes()).map_err(|e| SynthError::io(&p, e))?;
            self.written.files += 1;
            self.written.bytes += body.len() as u64;
        }
        Ok(())
    }

    // -------------------------------------------------------------------------------------- gcp

    fn gcp_target(&self, rng: &mut ChaCha8Rng, a: &Actor, target: GTarget, r: Restrict) -> u32 {
        let p = &self.world.gcp.projects[a.scope as usize];
        let n = match target {
            GTarget::Bucket | GTarget::Object => {
                if let Restrict::Bucket(b) = r {
                    return u32::from(b);
                }
                p.buckets.len()
            }
            GTarget::Instance => p.instances.len(),
            GTarget::Secret => p.secrets.len(),
            GTarget::Topic => p.topics.len(),
            GTarget::RunService => p.services.len(),
            GTarget::ServiceAccount => self.world.gcp.sas.len(),
            GTarget::Project => 1,
        };
        if target == GTarget::ServiceAccount {
            // a service account of the same project
            let mine: Vec<u32> = (0..n as u32).filter(|&s| self.world.gcp.sas[s as usize].project == a.scope).collect();
            return mine.get(rng.random_range(0..mine.len().max(1))).copied().unwrap_or(0);
        }
        rng.random_range(0..n.max(1)) as u32
    }

    #[allow(clippy::too_many_arguments)]
    fn gcp_entry(
        &mut self,
        rng: &mut ChaCha8Rng,
        a: &Actor,
        call: usize,
        tgt: u32,
        t: i64,
        fail: bool,
        request: Option<Value>,
    ) -> Value {
        let g = &self.world.gcp;
        let p = &g.projects[a.scope as usize];
        let c = &GCP_CALLS[call];
        let pid = p.id.as_str();
        let bucket = |i: u32| p.buckets.get(i as usize).map_or("", String::as_str);
        let (resource_name, auth_resource, rtype, labels, location) = match c.target {
            GTarget::Project => {
                let (rt, labels) = match c.service {
                    "cloudresourcemanager.googleapis.com" => ("project", json!({"project_id": pid})),
                    "bigquery.googleapis.com" => ("bigquery_project", json!({"project_id": pid, "location": "US"})),
                    "storage.googleapis.com" => {
                        ("gcs_bucket", json!({"project_id": pid, "bucket_name": "", "location": "global"}))
                    }
                    _ => ("audited_resource", json!({"project_id": pid, "service": c.service, "method": c.method})),
                };
                (format!("projects/{pid}"), format!("projects/{pid}"), rt, labels, None)
            }
            GTarget::Bucket => {
                let b = bucket(tgt);
                let r = format!("projects/_/buckets/{b}");
                (r.clone(), r, "gcs_bucket", json!({"project_id": pid, "bucket_name": b, "location": "us"}), Some("us"))
            }
            GTarget::Object => {
                let b = bucket(tgt);
                let r = format!(
                    "projects/_/buckets/{b}/objects/{}/{}.json",
                    ["data", "exports", "raw", "reports"][rng.random_range(0..4)],
                    hex(rng, 12)
                );
                (r.clone(), r, "gcs_bucket", json!({"project_id": pid, "bucket_name": b, "location": "us"}), Some("us"))
            }
            GTarget::Instance => {
                let (zone, name, id) = &p.instances[tgt as usize % p.instances.len().max(1)];
                let r = format!("projects/{pid}/zones/{zone}/instances/{name}");
                (r.clone(), r, "gce_instance", json!({"project_id": pid, "instance_id": id, "zone": zone}), None)
            }
            GTarget::ServiceAccount => {
                let sa = &g.sas[tgt as usize];
                let r = format!("projects/-/serviceAccounts/{}", sa.unique_id);
                (
                    format!("projects/-/serviceAccounts/{}", sa.unique_id),
                    r,
                    "service_account",
                    json!({"project_id": pid, "email_id": sa.email, "unique_id": sa.unique_id}),
                    None,
                )
            }
            GTarget::Secret => {
                let s = &p.secrets[tgt as usize % p.secrets.len().max(1)];
                let r = format!("projects/{}/secrets/{s}/versions/latest", p.number);
                (
                    r.clone(),
                    r,
                    "audited_resource",
                    json!({"project_id": pid, "service": c.service, "method": c.method}),
                    None,
                )
            }
            GTarget::Topic => {
                let s = &p.topics[tgt as usize % p.topics.len().max(1)];
                let r = format!("projects/{pid}/topics/{s}");
                (r.clone(), r.clone(), "pubsub_topic", json!({"project_id": pid, "topic_id": r}), None)
            }
            GTarget::RunService => {
                let s = &p.services[tgt as usize % p.services.len().max(1)];
                let r = format!("projects/{pid}/locations/us-central1/services/{s}");
                (
                    r.clone(),
                    format!("namespaces/{pid}/services/{s}"),
                    "cloud_run_revision",
                    json!({"project_id": pid, "service_name": s, "location": "us-central1", "revision_name": "", "configuration_name": ""}),
                    None,
                )
            }
        };
        let ts = ts_frac(t, rng.random_range(0..1_000_000_000), 9);
        let ua = match (a.kind, a.ua) {
            ("user", 0 | 1) => {
                "google-cloud-sdk gcloud/463.0.0 command/gcloud.storage.ls invocation-id/0 environment/None"
            }
            ("user", _) => {
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/121.0.0.0 Safari/537.36,gzip(gfe)"
            }
            (_, 0) => "gl-python/3.11.8 grpc/1.60.1 gax/2.17.1 gapic/2.14.2 gccl/2.14.2",
            (_, 1) => {
                "Terraform/1.7.4 (+https://www.terraform.io) Terraform-Plugin-SDK/2.10.1 terraform-provider-google/5.17.0"
            }
            _ => "google-api-go-client/0.5 gl-go/1.22.0 gdcl/0.160.0",
        };
        let mut auth = json!({"principalEmail": a.email});
        if a.kind == "service_account" {
            auth["principalSubject"] = json!(format!("serviceAccount:{}", a.email));
            if let Some(k) = a.sa.and_then(|s| g.sas[s as usize].keys.iter().find(|k| k.user_managed)) {
                auth["serviceAccountKeyName"] =
                    json!(format!("//iam.googleapis.com/projects/{pid}/serviceAccounts/{}/keys/{}", a.email, k.id));
            }
        } else {
            auth["principalSubject"] = json!(format!("user:{}", a.email));
        }
        let ip = &a.ips[(t as usize) % a.ips.len().max(1)];
        let mut proto = json!({
            "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
            "status": if fail { json!({"code": 5, "message": "NOT_FOUND"}) } else { json!({}) },
            "authenticationInfo": auth,
            "requestMetadata": {
                "callerIp": ip, "callerSuppliedUserAgent": ua,
                "requestAttributes": {"time": ts, "auth": {}}, "destinationAttributes": {}
            },
            "serviceName": c.service,
            "methodName": c.method,
            "authorizationInfo": [{"resource": auth_resource, "permission": c.permission, "granted": true, "resourceAttributes": {}}],
            "resourceName": resource_name
        });
        if let Some(loc) = location {
            proto["resourceLocation"] = json!({"currentLocations": [loc]});
        }
        if let Some(r) = request {
            proto["request"] = r;
        }
        let log = match c.log {
            Log::Activity => "activity",
            Log::DataAccess => "data_access",
        };
        let severity = match (fail, c.log) {
            (true, _) => "ERROR",
            (false, Log::Activity) => "NOTICE",
            (false, Log::DataAccess) => "INFO",
        };
        let mut insert = hex(rng, 12);
        insert.insert(0, '1');
        self.truth.gcp_records += 1;
        json!({
            "protoPayload": proto,
            "insertId": insert,
            "resource": {"type": rtype, "labels": labels},
            "timestamp": ts,
            "severity": severity,
            "logName": format!("projects/{pid}/logs/cloudaudit.googleapis.com%2F{log}"),
            "receiveTimestamp": ts_frac(t + 1, rng.random_range(0..1_000_000_000), 9)
        })
    }

    fn gcp_write(&mut self, project: u32, t: i64, v: &Value) -> Result<(), SynthError> {
        let day = t.div_euclid(86_400);
        if day != self.gcp_day {
            self.close_gcp()?;
            self.gcp_day = day;
        }
        let slot = &mut self.gcp_files[project as usize];
        if slot.is_none() {
            let (y, m, d) = civil_from_days(day);
            let pid = &self.world.gcp.projects[project as usize].id;
            let p = self.out.join(format!("gcp/audit/{pid}/{y:04}-{m:02}-{d:02}.jsonl"));
            *slot = Some((open(&p)?, p));
            self.written.files += 1;
        }
        if let Some((w, p)) = slot {
            let line = serde_json::to_vec(v)?;
            w.write_all(&line).and_then(|()| w.write_all(b"\n")).map_err(|e| SynthError::io(p, e))?;
            self.written.bytes += line.len() as u64 + 1;
        }
        Ok(())
    }

    fn close_gcp(&mut self) -> Result<(), SynthError> {
        for slot in &mut self.gcp_files {
            if let Some((mut w, p)) = slot.take() {
                w.flush().map_err(|e| SynthError::io(&p, e))?;
            }
        }
        Ok(())
    }

    // -------------------------------------------------------------------------------------- idp

    fn idp_write(&mut self, okta: bool, v: &Value) -> Result<(), SynthError> {
        let (w, p) = if okta { &mut self.okta } else { &mut self.ws };
        let line = serde_json::to_vec(v)?;
        w.write_all(&line).and_then(|()| w.write_all(b"\n")).map_err(|e| SynthError::io(p, e))?;
        self.written.bytes += line.len() as u64 + 1;
        if okta {
            self.truth.okta_events += 1;
        } else {
            self.truth.workspace_events += 1;
        }
        Ok(())
    }

    fn okta_event(&mut self, rng: &mut ChaCha8Rng, h: u32, t: i64, fail: bool, mfa_attack: bool) -> Value {
        let hu = &self.world.humans[h as usize];
        let (ip, geo) = if mfa_attack {
            ("185.220.101.47".to_string(), ("Frankfurt am Main", "Hesse", "Germany", "60313", 50.1109, 8.6821))
        } else {
            let geo = [
                ("San Francisco", "California", "United States", "94105", 37.7898, -122.3942),
                ("London", "England", "United Kingdom", "EC2A", 51.5226, -0.0825),
                ("Berlin", "Berlin", "Germany", "10115", 52.532, 13.3849),
            ][h as usize % 3];
            (hu.ips[(t as usize) % hu.ips.len().max(1)].clone(), geo)
        };
        let geo_v = json!({"city": geo.0, "state": geo.1, "country": geo.2, "postalCode": geo.3, "geolocation": {"lat": geo.4, "lon": geo.5}});
        let actor = json!({"id": hu.okta_id, "type": "User", "alternateId": hu.spelled(), "displayName": hu.display(), "detailEntry": null});
        let (event_type, legacy, display, outcome, target) = if mfa_attack {
            (
                "user.mfa.factor.deactivate",
                "core.user.factor.deactivate",
                "Deactivate factor for user",
                json!({"result": "SUCCESS", "reason": "User reset FIDO_WEBAUTHN factor"}),
                json!([{"id": hu.okta_id, "type": "User", "alternateId": hu.spelled(), "displayName": hu.display(), "detailEntry": null}]),
            )
        } else if fail {
            (
                "user.session.start",
                "core.user_auth.login_failed",
                "User login to Okta",
                json!({"result": "FAILURE", "reason": "INVALID_CREDENTIALS"}),
                Value::Null,
            )
        } else {
            (
                "user.session.start",
                "core.user_auth.login_success",
                "User login to Okta",
                json!({"result": "SUCCESS", "reason": null}),
                Value::Null,
            )
        };
        json!({
            "actor": actor,
            "client": {
                "userAgent": {
                    "rawUserAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/121.0.0.0 Safari/537.36",
                    "os": "Mac OS X", "browser": "CHROME"
                },
                "zone": "null", "device": "Computer", "id": null, "ipAddress": ip, "geographicalContext": geo_v
            },
            "device": null,
            "authenticationContext": {
                "authenticationProvider": null, "credentialProvider": null, "credentialType": null, "issuer": null,
                "interface": null, "authenticationStep": 0, "externalSessionId": format!("102{}", hex(rng, 22))
            },
            "displayMessage": display,
            "eventType": event_type,
            "outcome": outcome,
            "published": ts_frac(t, rng.random_range(0..1000), 3),
            "securityContext": {"asNumber": null, "asOrg": null, "isp": null, "domain": null, "isProxy": null},
            "severity": if fail { "WARN" } else { "INFO" },
            "debugContext": {"debugData": {"requestId": hex(rng, 24), "requestUri": "/api/v1/authn", "url": "/api/v1/authn?"}},
            "legacyEventType": legacy,
            "transaction": {"type": "WEB", "id": hex(rng, 24), "detail": {}},
            "uuid": uuid(rng),
            "version": "0",
            "request": {"ipChain": [{"ip": ip, "geographicalContext": geo_v, "version": "V4", "source": null}]},
            "target": target
        })
    }

    fn ws_event(&mut self, rng: &mut ChaCha8Rng, h: u32, t: i64, fail: bool, disable_2sv: bool) -> Value {
        let hu = &self.world.humans[h as usize];
        let ip =
            if disable_2sv { "185.220.101.47".to_string() } else { hu.ips[(t as usize) % hu.ips.len().max(1)].clone() };
        let (app, events) = if disable_2sv {
            ("user_accounts", json!([{"type": "2sv_change", "name": "2sv_disable"}]))
        } else if fail {
            (
                "login",
                json!([{"type": "login", "name": "login_failure", "parameters": [
                    {"name": "login_type", "value": "google_password"},
                    {"name": "login_failure_type", "value": "login_failure_invalid_password"},
                    {"name": "is_suspicious", "boolValue": false}
                ]}]),
            )
        } else {
            (
                "login",
                json!([{"type": "login", "name": "login_success", "parameters": [
                    {"name": "login_type", "value": "google_password"},
                    {"name": "login_challenge_method", "multiValue": ["password", "google_authenticator"]},
                    {"name": "is_suspicious", "boolValue": false}
                ]}]),
            )
        };
        let q: i64 = rng.random_range(1_000_000_000_000_000_000..i64::MAX);
        json!({
            "kind": "admin#reports#activity",
            "id": {
                "time": ts_frac(t, rng.random_range(0..1000), 3),
                "uniqueQualifier": (if rng.random_bool(0.5) { -q } else { q }).to_string(),
                "applicationName": app,
                "customerId": self.world.customer_id
            },
            "etag": format!("\"{}\"", hex(rng, 27)),
            "actor": {"callerType": "USER", "email": hu.email, "profileId": hu.ws_id},
            "ipAddress": ip,
            "events": events
        })
    }

    // ---------------------------------------------------------------------------------- attacks

    fn attack(&mut self, rng: &mut ChaCha8Rng, at: &Attack, slot_end: i64) -> Result<Vec<String>, SynthError> {
        let world = self.world;
        match at.kind {
            AttackKind::AzureOwner { actor, asg } => {
                let a = &world.actors[actor as usize];
                let asg = &world.azure.assignments[asg as usize];
                let sub = &world.azure.subs[a.scope as usize];
                let scope = world.azure.scope_str(asg.scope);
                let rid = format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{}", asg.id);
                let target = &world.azure.principals[asg.principal as usize];
                let body = json!({
                    "Id": asg.id,
                    "Properties": {
                        "PrincipalId": target.oid, "PrincipalType": "ServicePrincipal",
                        "RoleDefinitionId": format!("/subscriptions/{}/providers/Microsoft.Authorization/roleDefinitions/{OWNER_GUID}", sub.id),
                        "Scope": scope
                    }
                });
                let call = az_op("Microsoft.Authorization/roleAssignments/write");
                Ok(vec![self.az_records(rng, a, call, &rid, at.t, false, Some(body), slot_end)])
            }
            AttackKind::AzureDiagDelete { actor } => {
                let a = &world.actors[actor as usize];
                let call = az_op(DIAG_DELETE);
                let rid = self.az_resource_id(rng, a, AzTarget::DiagnosticSetting, 0);
                Ok(vec![self.az_records(rng, a, call, &rid, at.t, false, None, slot_end)])
            }
            AttackKind::GcpKey { actor, sa, key } => {
                let a = &world.actors[actor as usize];
                let s = &world.gcp.sas[sa as usize];
                let call = gcp_call("google.iam.admin.v1.CreateServiceAccountKey");
                let req = json!({
                    "@type": "type.googleapis.com/google.iam.admin.v1.CreateServiceAccountKeyRequest",
                    "name": format!("projects/-/serviceAccounts/{}", s.unique_id),
                    "private_key_type": 2
                });
                let mut e = self.gcp_entry(rng, a, call, sa, at.t, false, Some(req));
                let k = &s.keys[key as usize];
                e["protoPayload"]["response"] = json!({
                    "@type": "type.googleapis.com/google.iam.admin.v1.ServiceAccountKey",
                    "name": format!("projects/{}/serviceAccounts/{}/keys/{}", world.gcp.projects[s.project as usize].id, s.email, k.id),
                    "key_algorithm": 2, "key_origin": 2, "key_type": 1,
                    "valid_after_time": {"seconds": k.created}
                });
                let id = e["insertId"].as_str().unwrap_or_default().to_string();
                self.gcp_write(a.scope, at.t, &e)?;
                Ok(vec![id])
            }
            AttackKind::GcpPublicBucket { actor, bucket } => {
                let a = &world.actors[actor as usize];
                let p = &world.gcp.projects[a.scope as usize];
                let call = gcp_call("storage.setIamPermissions");
                let bindings: Vec<Value> = world
                    .gcp
                    .bindings
                    .iter()
                    .filter(|b| b.scope == GScope::Bucket(a.scope, bucket))
                    .map(|b| json!({"role": world.gcp.roles[b.role as usize].name, "members": b.members}))
                    .collect();
                let req = json!({
                    "@type": "type.googleapis.com/google.iam.v1.SetIamPolicyRequest",
                    "resource": format!("projects/_/buckets/{}", p.buckets[bucket as usize]),
                    "policy": {"bindings": bindings}
                });
                let mut e = self.gcp_entry(rng, a, call, u32::from(bucket), at.t, false, Some(req));
                e["protoPayload"]["serviceData"] = json!({
                    "@type": "type.googleapis.com/google.iam.v1.logging.AuditData",
                    "policyDelta": {"bindingDeltas": [{"action": "ADD", "role": "roles/storage.objectViewer", "member": "allUsers"}]}
                });
                let id = e["insertId"].as_str().unwrap_or_default().to_string();
                self.gcp_write(a.scope, at.t, &e)?;
                Ok(vec![id])
            }
            AttackKind::OktaMfa { human } => {
                let e = self.okta_event(rng, human, at.t, false, true);
                let id = e["uuid"].as_str().unwrap_or_default().to_string();
                self.idp_write(true, &e)?;
                Ok(vec![id])
            }
            AttackKind::Ws2sv { human } => {
                let e = self.ws_event(rng, human, at.t, false, true);
                let id = e["id"]["uniqueQualifier"].as_str().unwrap_or_default().to_string();
                self.idp_write(false, &e)?;
                Ok(vec![id])
            }
        }
    }

    // ------------------------------------------------------------------------------------ truth

    fn finish(self, spec: &MultiCloudSpec, as_of: i64, labels: Vec<Label>) -> CloudsTruth {
        let world = self.world;
        let az = &world.azure;
        let g = &world.gcp;
        let mut roles = BTreeMap::new();
        for r in &az.roles {
            roles.insert(
                r.guid.clone(),
                TruthRole {
                    cloud: Cloud::Azure,
                    name: r.name.clone(),
                    custom: r.custom.is_some(),
                    operations: sorted(r.set.control.iter().map(|&i| self.az_ref.ops[i as usize].clone())),
                    data_operations: sorted(r.set.data.iter().map(|&i| self.az_ref.data_ops[i as usize].clone())),
                },
            );
        }
        for r in &g.roles {
            roles.insert(
                r.name.clone(),
                TruthRole {
                    cloud: Cloud::Gcp,
                    name: r.name.clone(),
                    custom: r.custom,
                    operations: sorted(r.perms.iter().map(|&i| self.gcp_ref.perms[i as usize].clone())),
                    data_operations: Vec::new(),
                },
            );
        }
        let cutoff = self.cutoff;
        let mut identities = Vec::with_capacity(world.actors.len());
        for (a, t) in world.actors.iter().zip(&self.tallies) {
            let (name_of, account): (Box<dyn Fn(u16) -> Option<String>>, String) = match a.cloud {
                Cl::Azure => (
                    Box::new(|c: u16| world.az_ix[c as usize].map(|i| self.az_ref.ops[i as usize].clone())),
                    az.subs[a.scope as usize].id.clone(),
                ),
                Cl::Gcp => (
                    Box::new(|c: u16| world.gcp_ix[c as usize].map(|i| self.gcp_ref.perms[i as usize].clone())),
                    g.projects[a.scope as usize].id.clone(),
                ),
            };
            let used: Vec<String> =
                sorted(t.calls.iter().filter(|&(_, &l)| l > cutoff).filter_map(|(&c, _)| name_of(c)));
            let used_ever: Vec<String> = sorted(t.calls.keys().filter_map(|&c| name_of(c)));
            let grants: Vec<TruthGrant> = a
                .grants
                .iter()
                .map(|gr| {
                    let (key, name) = match a.cloud {
                        Cl::Azure => {
                            let r = &az.roles[gr.role as usize];
                            (r.guid.clone(), r.name.clone())
                        }
                        Cl::Gcp => {
                            let r = &g.roles[gr.role as usize];
                            (r.name.clone(), r.name.clone())
                        }
                    };
                    TruthGrant {
                        role: key,
                        role_name: name,
                        scope: gr.scope.clone(),
                        inherited: gr.inherited,
                        scoped: gr.restrict != Restrict::Anywhere,
                        via_group: gr.via_group.clone(),
                    }
                })
                .collect();
            let mut granted: BTreeSet<&str> = BTreeSet::new();
            for gr in &grants {
                if let Some(r) = roles.get(&gr.role) {
                    granted.extend(r.operations.iter().map(String::as_str));
                    granted.extend(r.data_operations.iter().map(String::as_str));
                }
            }
            let used_granted = used.iter().filter(|u| granted.contains(u.as_str())).count();
            identities.push(CloudIdentity {
                uid: a.uid.clone(),
                cloud: match a.cloud {
                    Cl::Azure => Cloud::Azure,
                    Cl::Gcp => Cloud::Gcp,
                },
                account,
                kind: a.kind.to_string(),
                name: a.name.clone(),
                principal_id: a.principal_id.clone(),
                archetype: a.archetype.to_string(),
                human: a.human.map(|h| world.humans[h as usize].email.clone()),
                granted_count: granted.len(),
                unused_count: granted.len() - used_granted,
                grants,
                used,
                used_ever,
                last_activity: t.last.map(|s| EventTime(s * 1000)),
                inactive: a.kind != "group" && t.events_lb == 0,
                super_identity: a.super_identity,
                events: t.events,
                events_in_lookback: t.events_lb,
                active_days: t.active_days,
            });
        }
        let mut humans = Vec::with_capacity(world.humans.len());
        for (hi, h) in world.humans.iter().enumerate() {
            let mut ids: Vec<String> = world
                .actors
                .iter()
                .filter(|a| a.human == Some(hi as u32))
                .map(|a| a.uid.clone())
                .chain(h.aws_users.iter().cloned())
                .collect();
            ids.push(format!("okta:{}/users/{}", world.okta_host, h.okta_id));
            if let Some(w) = &h.ws_id {
                ids.push(format!("workspace:{}/users/{w}", world.customer_id));
            }
            ids.sort();
            ids.dedup();
            humans.push(TruthHuman {
                email: h.email.clone(),
                other_spellings: h.alt.iter().cloned().collect(),
                identities: ids,
                aws_sso_roles: h.sso_roles.clone(),
                identity_center_user_id: h.idc_id.clone(),
            });
        }
        let c = &self.truth;
        CloudsTruth {
            spec: spec.clone(),
            as_of: EventTime(as_of * 1000),
            lookback_days: LOOKBACK_DAYS,
            azure_tenant: az.tenant.clone(),
            gcp_organization: format!("organizations/{}", g.org),
            okta_org: world.okta_host.clone(),
            workspace_customer: world.customer_id.clone(),
            subscriptions: az.subs.iter().map(|s| s.id.clone()).collect(),
            projects: g.projects.iter().map(|p| p.id.clone()).collect(),
            roles,
            identities,
            humans,
            labels,
            azure_operations: c.azure_operations,
            azure_records: c.azure_records,
            gcp_records: c.gcp_records,
            okta_events: c.okta_events,
            workspace_events: c.workspace_events,
            unmapped_injected: c.unmapped,
            failures: c.failures,
            dropped_after_diagnostic_delete: c.dropped,
            files_written: self.written.files,
            bytes_written: self.written.bytes,
        }
    }
}

fn push_line(buf: &mut Vec<(String, String)>, v: &Value) {
    let time = v["time"].as_str().unwrap_or_default().to_string();
    buf.push((time, v.to_string()));
}

fn sorted(it: impl Iterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = it.collect();
    v.sort();
    v.dedup();
    v
}

const ROLE_ASSIGNMENT_WRITE: &str = "Microsoft.Authorization/roleAssignments/write";

/// The role assignment Azure returns for a create request (`{"Id", "Properties": {...}}` in, the
/// resource with lower-camel properties out).
fn assignment_response(request: &Value, rid: &str) -> Value {
    let p = &request["Properties"];
    json!({
        "properties": {
            "roleDefinitionId": p["RoleDefinitionId"], "principalId": p["PrincipalId"],
            "principalType": p["PrincipalType"], "scope": p["Scope"]
        },
        "id": rid,
        "type": "Microsoft.Authorization/roleAssignments",
        "name": request["Id"]
    })
}
