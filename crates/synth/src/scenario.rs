//! A labeled attack scenario: weeks of realistic, attack-free activity of an organization, then a
//! detection window with injected attacks, and the labels to score a detector's alerts against
//! ([`eval::score`]).
//!
//! [`generate`] writes, under an output directory:
//!
//! ```text
//! iam/<account>.json              get-account-authorization-details (users, groups, roles, policies)
//! iam/access-keys-<account>.json  list-access-keys (plus "Account")
//! history/cloudtrail.jsonl        CloudTrail records of the history days (attack-free), time-ordered
//! detect/cloudtrail.jsonl         CloudTrail records of the detection days (normal + attacks), time-ordered
//! labels.jsonl                    one [`Label`] per injected attack instance
//! scenario.json                   the [`ScenarioSummary`]
//! ```
//!
//! **Normal activity.** Identities follow archetypes (`world::Arch`): human IAM users (developers,
//! admins, analysts, auditors), IAM Identity Center roles shared by many humans (session name = e-mail),
//! integration users with long-lived keys, CI/CD roles (deploy bursts from a new GitHub runner IP each
//! time), application and Lambda roles (24/7, diurnal traffic, fixed NAT IPs), data-pipeline roles
//! (nightly batches, a big weekly one on Sundays), a security-scanner role (a sweep of hundreds of
//! List/Describe/Get calls every Monday 03:00 UTC), a break-glass user, and never-used roles. Each has
//! its own action habits (Zipf-weighted), regions (1–2), user agent family, source IPs and an error
//! rate of 0.5–3 % (AccessDenied or service errors). Humans work weekdays in their office's time zone,
//! and every human of the organization's identity provider (developers, admins, analysts, auditors, the
//! humans of IAM Identity Center roles) starts each day with a federated sign-in from where and with what
//! that day's first session runs: `sts:AssumeRoleWithSAML`, or `AssumeRoleWithWebIdentity` for the
//! quarter who sign in through OIDC.
//!
//! **Benign drift and noise** (a detector must not fire on these): new-but-related actions (about 1 %
//! of human calls, 15 % of those denied), new hosts of the office's /24, new home IPs, travel weeks (a
//! hotel IP and another time zone), on-call night sessions, rare weekend sessions, identities created
//! during the history (an admin's `CreateUser`/`CreateRole`, `AddUserToGroup`, `CreateAccessKey` for the
//! new user) and a few in the detection days, admins rotating integration users' keys (`CreateAccessKey`
//! for another user), updating customer-managed policies (`CreatePolicyVersion`, `setAsDefault`) and
//! setting non-public bucket policies, CI runs that touch IAM (Terraform) or delete a feature
//! environment's log group, the weekly scanner burst, the nightly/weekly batch volume, a break-glass
//! access test (in one account's history and another's detection window), leaves (about 8 % of humans
//! are away 15–30 days, without a single call, then come back from their usual addresses and agents),
//! first deployments of CI/CD and pipeline roles into an enabled region of their account they never
//! used (about one a month while such regions remain), and admins' night on-call bursts (about one
//! night in 20, 20–60 reads between 00:00 and 04:00 UTC from the office address and their CLI).
//!
//! **Attacks** ([`Technique`]) are injected only into the detection days, by existing identities, and
//! embedded in the time-ordered stream. A *dormant identity* (see [`DORMANCY_DAYS`]) is a human user
//! active only on the first 2–4 history days and silent for at least `DORMANCY_DAYS` before it acts
//! again in the detection window, always from an attacker's address and agent: acting again from its
//! usual place is what a human back from leave does. The IAM snapshot is taken at the end of the
//! scenario; its policies grant what the identities were seen doing, plus the overprivilege the attacks
//! exploit.
//!
//! Same config, same bytes: every random draw comes from ChaCha8 streams of [`ScenarioConfig::seed`]
//! (one for the organization, one for the attacks, one per day); the clock is never read.

pub mod eval;

mod api;
mod attacks;
mod normal;
mod record;
mod world;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use grantwatch_types::EventTime;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use record::Ev;

/// Days without any logged activity after which an identity counts as dormant.
pub const DORMANCY_DAYS: u32 = 14;

/// What to generate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioConfig {
    pub seed: u64,
    pub accounts: u32,
    /// Users and roles in total (groups come on top), spread evenly over the accounts.
    pub identities: u32,
    /// Attack-free days (training, lookback).
    pub history_days: u32,
    /// Days with attacks injected, right after the history.
    pub detect_days: u32,
    /// The first day, 00:00Z.
    pub start: EventTime,
    /// Attack instances per technique.
    pub attacks_per_technique: u32,
    /// Multiplier of normal call rates (1.0: about 30k calls per 1,000 identities per day).
    pub volume: f64,
}

impl Default for ScenarioConfig {
    fn default() -> Self {
        ScenarioConfig {
            seed: 7,
            accounts: 3,
            identities: 1000,
            history_days: 21,
            detect_days: 7,
            // 2026-01-05T00:00:00Z, a Monday
            start: EventTime(1_767_571_200_000),
            attacks_per_technique: 14,
            volume: 1.0,
        }
    }
}

impl ScenarioConfig {
    /// A small, fast scenario for tests: 2 accounts, 80 identities, 18 + 3 days, 3 attacks per technique.
    pub fn small(seed: u64) -> Self {
        ScenarioConfig {
            seed,
            accounts: 2,
            identities: 80,
            history_days: 18,
            detect_days: 3,
            attacks_per_technique: 3,
            volume: 0.3,
            ..ScenarioConfig::default()
        }
    }

    fn validate(&self) -> Result<(), ScenarioError> {
        let bad = |m: String| Err(ScenarioError::InvalidConfig(m));
        if !(1..=50).contains(&self.accounts) {
            return bad(format!("accounts must be 1..=50, got {}", self.accounts));
        }
        if self.identities < 30 * self.accounts || self.identities > 200_000 {
            return bad(format!("identities must be 30 × accounts ..= 200000, got {}", self.identities));
        }
        if !(DORMANCY_DAYS + 4..=730).contains(&self.history_days) {
            return bad(format!(
                "history_days must be {}..=730 (dormant identities need {DORMANCY_DAYS} silent days), got {}",
                DORMANCY_DAYS + 4,
                self.history_days
            ));
        }
        if !(1..=90).contains(&self.detect_days) {
            return bad(format!("detect_days must be 1..=90, got {}", self.detect_days));
        }
        if self.attacks_per_technique > 500 {
            return bad(format!("attacks_per_technique must be at most 500, got {}", self.attacks_per_technique));
        }
        if !(self.volume > 0.0 && self.volume <= 20.0) {
            return bad(format!("volume must be in (0, 20], got {}", self.volume));
        }
        if self.start.millis().rem_euclid(86_400_000) != 0 {
            return bad(format!("start must be a day's 00:00Z, got {}", self.start));
        }
        if !(946_684_800_000..=7_258_118_400_000).contains(&self.start.millis()) {
            return bad(format!("start must be between 2000 and 2200, got {}", self.start));
        }
        Ok(())
    }
}

/// The attack techniques injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Technique {
    /// An identity's credentials used from a new IP range, region and user agent at an unusual hour:
    /// discovery, then data access.
    StolenCredentials,
    /// `CreatePolicyVersion`+`SetDefaultPolicyVersion`, `PassRole`+Lambda, `AttachUserPolicy`
    /// AdministratorAccess to self, `CreateAccessKey` for another user, `UpdateAssumeRolePolicy`, or
    /// `AddUserToGroup` admins.
    PrivilegeEscalation,
    /// Dozens to hundreds of List/Describe/Get calls across services within minutes, many denied.
    ReconBurst,
    /// Trail, GuardDuty, Config, flow-log or log-group tampering, after a little discovery.
    DefenseEvasion,
    /// A burst of `GetObject` on buckets the identity never touched, or data made public / shared.
    DataExfiltration,
    /// An identity silent for at least [`DORMANCY_DAYS`] acting again, from an attacker's network and
    /// user agent.
    DormantIdentity,
}

impl Technique {
    pub const ALL: [Technique; 6] = [
        Technique::StolenCredentials,
        Technique::PrivilegeEscalation,
        Technique::ReconBurst,
        Technique::DefenseEvasion,
        Technique::DataExfiltration,
        Technique::DormantIdentity,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Technique::StolenCredentials => "stolen_credentials",
            Technique::PrivilegeEscalation => "privilege_escalation",
            Technique::ReconBurst => "recon_burst",
            Technique::DefenseEvasion => "defense_evasion",
            Technique::DataExfiltration => "data_exfiltration",
            Technique::DormantIdentity => "dormant_identity",
        }
    }
}

impl std::fmt::Display for Technique {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One injected attack instance (a line of `labels.jsonl`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Label {
    pub id: String,
    pub technique: Technique,
    /// The compromised identity as grantwatch resolves it: a user ARN or a role ARN (not the session).
    pub identity: String,
    pub account: String,
    /// The first and last event's time.
    pub start: EventTime,
    pub end: EventTime,
    /// Every CloudTrail `eventID` of the instance, in time order (follow-on events by other
    /// identities, e.g. a Lambda function's admin role or a freshly created key's user, included).
    pub event_ids: Vec<String>,
    pub description: String,
}

/// What was generated (also `scenario.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioSummary {
    pub seed: u64,
    pub config: ScenarioConfig,
    pub accounts: Vec<String>,
    /// Users and roles in the IAM snapshots.
    pub identities: u32,
    /// Identities with at least one record.
    pub active_identities: u32,
    /// Identities per archetype.
    pub archetypes: BTreeMap<String, u32>,
    pub history_days: u32,
    pub detect_days: u32,
    pub dormancy_days: u32,
    /// Scenario start (history start).
    pub start: EventTime,
    /// Detection window `[detect_start, end)`.
    pub detect_start: EventTime,
    pub end: EventTime,
    pub history_events: u64,
    /// Detection-window records, attacks included.
    pub detect_events: u64,
    pub attack_events: u64,
    /// Records with an `errorCode`.
    pub failed_events: u64,
    /// Attack instances per technique.
    pub techniques: BTreeMap<Technique, u32>,
    pub history_bytes: u64,
    pub detect_bytes: u64,
}

impl ScenarioSummary {
    /// Reads `scenario.json`.
    pub fn load(path: &Path) -> Result<ScenarioSummary, ScenarioError> {
        let s = fs::read_to_string(path).map_err(|e| ScenarioError::io(path, e))?;
        Ok(serde_json::from_str(&s)?)
    }
}

/// Why generation or scoring failed.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("invalid scenario config: {0}")]
    InvalidConfig(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("labels line {line}: {message}")]
    Label { line: usize, message: String },
}

impl ScenarioError {
    fn io(path: &Path, source: std::io::Error) -> ScenarioError {
        ScenarioError::Io { path: path.to_path_buf(), source }
    }
}

fn rng_stream(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(stream);
    r
}

struct Sink {
    w: BufWriter<fs::File>,
    path: PathBuf,
    events: u64,
    bytes: u64,
}

impl Sink {
    fn create(dir: &Path) -> Result<Sink, ScenarioError> {
        fs::create_dir_all(dir).map_err(|e| ScenarioError::io(dir, e))?;
        let path = dir.join("cloudtrail.jsonl");
        let f = fs::File::create(&path).map_err(|e| ScenarioError::io(&path, e))?;
        Ok(Sink { w: BufWriter::with_capacity(1 << 20, f), path, events: 0, bytes: 0 })
    }

    fn line(&mut self, buf: &[u8]) -> Result<(), ScenarioError> {
        self.w.write_all(buf).and_then(|()| self.w.write_all(b"\n")).map_err(|e| ScenarioError::io(&self.path, e))?;
        self.events += 1;
        self.bytes += buf.len() as u64 + 1;
        Ok(())
    }

    fn finish(mut self) -> Result<(u64, u64), ScenarioError> {
        self.w.flush().map_err(|e| ScenarioError::io(&self.path, e))?;
        Ok((self.events, self.bytes))
    }
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<(), ScenarioError> {
    let f = fs::File::create(path).map_err(|e| ScenarioError::io(path, e))?;
    let mut w = BufWriter::new(f);
    serde_json::to_writer_pretty(&mut w, v)?;
    w.write_all(b"\n").and_then(|()| w.flush()).map_err(|e| ScenarioError::io(path, e))
}

/// Generates the scenario `cfg` describes under `out` (created if missing) and returns its summary.
pub fn generate(cfg: &ScenarioConfig, out: &Path) -> Result<ScenarioSummary, ScenarioError> {
    cfg.validate()?;
    let mut world = world::World::build(cfg, &mut rng_stream(cfg.seed, 0));
    let (mut attack_evs, mut labels) = attacks::plan(cfg, &mut world, &mut rng_stream(cfg.seed, 1));
    attack_evs.sort_by_key(|e| e.t);
    labels.sort_by(|a, b| (a.start, &a.id).cmp(&(b.start, &b.id)));

    let start = world.start;
    let detect_start = start + i64::from(cfg.history_days) * 86_400;
    let end = detect_start + i64::from(cfg.detect_days) * 86_400;
    let mut hist = Sink::create(&out.join("history"))?;
    let mut det = Sink::create(&out.join("detect"))?;
    let mut last_used: Vec<Option<(i64, &'static str)>> = vec![None; world.ids.len()];
    let mut failed = 0u64;
    let mut attack_written = 0u64;
    let mut pending: Vec<Ev> = Vec::new();
    let mut cursor = 0usize;
    let mut buf = Vec::with_capacity(4096);
    for d in 0..world.days {
        let mut rng = rng_stream(cfg.seed, 100 + d as u64);
        let day_end = start + (d + 1) * 86_400;
        normal::day(&world, d, &mut rng, &mut pending);
        while cursor < attack_evs.len() && attack_evs[cursor].t < day_end {
            pending.push(attack_evs[cursor].clone());
            cursor += 1;
        }
        pending.sort_by_key(|e| e.t);
        let split = pending.partition_point(|e| e.t < day_end);
        let rest = pending.split_off(split);
        for e in pending.drain(..) {
            if e.t < start || e.t >= end {
                continue;
            }
            buf.clear();
            record::render(&world, &e, &mut rng, &mut buf)?;
            if e.t < detect_start {
                hist.line(&buf)?
            } else {
                det.line(&buf)?
            }
            if e.fail != record::Fail::No {
                failed += 1;
            }
            if e.id.is_some() {
                attack_written += 1;
            }
            let lu = &mut last_used[e.who as usize];
            if lu.is_none_or(|(t, _)| t <= e.t) {
                *lu = Some((e.t, e.region));
            }
        }
        pending = rest;
    }
    if attack_written != attack_evs.len() as u64 {
        return Err(ScenarioError::InvalidConfig(format!(
            "{} of {} attack events fell outside the scenario",
            attack_evs.len() as u64 - attack_written,
            attack_evs.len()
        )));
    }
    let (history_events, history_bytes) = hist.finish()?;
    let (detect_events, detect_bytes) = det.finish()?;

    let iam = out.join("iam");
    fs::create_dir_all(&iam).map_err(|e| ScenarioError::io(&iam, e))?;
    for (ai, a) in world.accounts.iter().enumerate() {
        write_json(&iam.join(format!("{}.json", a.id)), &world.authorization_details(ai, &last_used))?;
        write_json(&iam.join(format!("access-keys-{}.json", a.id)), &world.access_keys(ai))?;
    }
    let lpath = out.join("labels.jsonl");
    let mut lw = BufWriter::new(fs::File::create(&lpath).map_err(|e| ScenarioError::io(&lpath, e))?);
    for l in &labels {
        serde_json::to_writer(&mut lw, l)?;
        lw.write_all(b"\n").map_err(|e| ScenarioError::io(&lpath, e))?;
    }
    lw.flush().map_err(|e| ScenarioError::io(&lpath, e))?;

    let mut archetypes = BTreeMap::new();
    for i in &world.ids {
        *archetypes.entry(i.arch.as_str().to_string()).or_insert(0) += 1;
    }
    let mut techniques = BTreeMap::new();
    for t in Technique::ALL {
        techniques.insert(t, 0);
    }
    for l in &labels {
        *techniques.entry(l.technique).or_insert(0) += 1;
    }
    let summary = ScenarioSummary {
        seed: cfg.seed,
        config: cfg.clone(),
        accounts: world.accounts.iter().map(|a| a.id.clone()).collect(),
        identities: world.ids.len() as u32,
        active_identities: last_used.iter().filter(|x| x.is_some()).count() as u32,
        archetypes,
        history_days: cfg.history_days,
        detect_days: cfg.detect_days,
        dormancy_days: DORMANCY_DAYS,
        start: EventTime(start * 1000),
        detect_start: EventTime(detect_start * 1000),
        end: EventTime(end * 1000),
        history_events,
        detect_events,
        attack_events: attack_written,
        failed_events: failed,
        techniques,
        history_bytes,
        detect_bytes,
    };
    write_json(&out.join("scenario.json"), &summary)?;
    Ok(summary)
}
