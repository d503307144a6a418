//! The processor stage: events and entitlements in, PCI updates and Discover findings out.
//!
//! Usage accounting is [`UsageStage`], unchanged. On top of it this stage keeps each identity's latest
//! entitlements and, driven by event time only, closes windows: when the watermark passes a window
//! boundary, every identity with new usage or new entitlements since the last close gets a
//! [`PciUpdate`] as of that boundary, and a Discover finding for each status flag it newly carries
//! (over-provisioned, super identity). Everything the stage must remember across a restart (dirty
//! identities, entitlements, flags raised, the last boundary closed) goes into the same snapshot as
//! the usage it was derived from.

use std::sync::Arc;

use grantwatch_state::keys;
use grantwatch_state::{StateRead, Table, WriteBatch};
use grantwatch_types::{
    AnalyticKind, DetectionFinding, EntitlementRecord, Event, EventTime, FindingSpec, IdentityKind, PciUpdate,
    PlanReason, RemediationProposal, Severity, StatusFlag,
};
use rustc_hash::FxHashMap;

use crate::catalog::Catalog;
use crate::findings::{FindingsConfig, identity_finding, identity_score};
use crate::policy::IdentityGrants;
use crate::stage::{Cx, Stage, StageError, decode_json};
use crate::usage::{IdentityMeta, IdentityUsage, Observed, UsageStage};

/// What the processor consumes.
#[derive(Debug, Clone)]
pub enum ProcessorInput {
    Event(Box<Event>),
    Entitlements(Box<EntitlementRecord>),
}

/// What the processor emits.
#[derive(Debug, Clone)]
pub enum ProcessorOutput {
    Pci(Box<PciUpdate>),
    Finding(Box<DetectionFinding>),
    /// A remediation proposal for an identity that newly became over-provisioned or inactive
    /// (`ProcessorConfig::propose_remediation`): published, never applied.
    Proposal(Box<RemediationProposal>),
}

/// Knobs of the processor stage.
#[derive(Debug, Clone)]
pub struct ProcessorConfig {
    /// Length of an event-time window; PCI updates are emitted when one closes.
    pub window_ms: i64,
    pub lookback_days: u32,
    pub over_provisioned_ratio: f64,
    /// See [`FindingsConfig::super_identity_share`].
    pub super_identity_share: f64,
    /// The Organizations policies that cap the identities no entitlement record describes (a member
    /// account's root user): the published entitlements are capped at the source already.
    pub organization: Option<Arc<crate::org::Organization>>,
    /// Close windows, emit PCI updates and record them in the PCI history. Off, usage is all the
    /// stage does (tests of usage alone; `analyze` always closes windows, for the history).
    pub emit_windows: bool,
    /// Emit a [`RemediationProposal`] when an identity newly becomes over-provisioned, or inactive
    /// after having been active.
    pub propose_remediation: bool,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        Self {
            window_ms: 24 * 3600 * 1000,
            lookback_days: 90,
            over_provisioned_ratio: 0.10,
            super_identity_share: crate::findings::SUPER_IDENTITY_SHARE,
            organization: None,
            emit_windows: true,
            propose_remediation: false,
        }
    }
}

const DIRTY: &[u8] = keys::PROCESSOR_DIRTY.prefix;
const ENTITLEMENTS: &[u8] = keys::PROCESSOR_ENTITLEMENTS.prefix;
const FLAGS: &[u8] = keys::PROCESSOR_FLAGS.prefix;
const LAST_CLOSE: &[u8] = keys::PROCESSOR_LAST_CLOSE.prefix;
const EXPIRY: &[u8] = keys::PROCESSOR_EXPIRY.prefix;
const EXPIRY_OF: &[u8] = keys::PROCESSOR_EXPIRY_OF.prefix;
const DAY_MS: i64 = 24 * 3600 * 1000;
/// Entries of the parsed-entitlements cache before it is emptied (~8 KB each).
const GRANTS_CACHE_MAX: usize = 2_000;

fn key(prefix: &[u8], arn: &str) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(arn.as_bytes());
    k
}

/// The processor stage.
pub struct ProcessorStage {
    catalog: Arc<Catalog>,
    cfg: ProcessorConfig,
    usage: UsageStage,
    /// Identities changed since the last close, with what identifies them; `true` once persisted.
    dirty: FxHashMap<String, (IdentityMeta, bool)>,
    /// Identities closed since the last snapshot (their dirty marks are deleted with it).
    cleaned: Vec<String>,
    entitlements: FxHashMap<String, EntitlementRecord>,
    /// Evaluated entitlements by identity: parsing a record (an administrator's lists 20,000 actions)
    /// costs far more than scoring, so each is parsed once. Bounded by [`GRANTS_CACHE_MAX`].
    grants: FxHashMap<String, Arc<IdentityGrants>>,
    flags: FxHashMap<String, Vec<StatusFlag>>,
    /// Entitlements supplied by the runner ([`ProcessorStage::supply_grants`]): never evicted, never persisted.
    supplied: FxHashMap<String, Arc<IdentityGrants>>,
    last_close: Option<i64>,
    last_close_dirty: bool,
    /// Re-scores scheduled or done since the last snapshot: `EXPIRY` key → the identity's meta (JSON),
    /// or `None` to delete it.
    expiries: std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Each identity's scheduled re-score since the last snapshot (`None`: none any more).
    expiry_of: FxHashMap<String, Option<i64>>,
    /// PCI updates emitted since the last snapshot, as [`crate::history`] entries: written in the same
    /// batch as the state they came from, so the history is exactly what was emitted.
    history: Vec<(Vec<u8>, Vec<u8>)>,
    /// The identities this shard owns (`None`: all). Another shard's scheduled re-scores are left to it.
    owns: Option<Owns>,
}

/// Which identities (by ARN) a shard owns.
pub type Owns = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// The `EXPIRY` key of a re-score of `arn` at window boundary `at`.
fn expiry_key(at: i64, arn: &str) -> Vec<u8> {
    let mut k = EXPIRY.to_vec();
    k.extend_from_slice(&at.to_be_bytes());
    k.extend_from_slice(arn.as_bytes());
    k
}

impl ProcessorStage {
    /// The stage over a task's state (restores the dirty set and the last boundary closed).
    pub fn open(catalog: Arc<Catalog>, cfg: ProcessorConfig, state: &dyn StateRead) -> Result<Self, StageError> {
        Self::open_shard(catalog, cfg, state, &|_| true)
    }

    /// The stage of one shard of identities: restores only the identities `owns` accepts (by ARN)
    /// awaiting a re-score. Every shard keeps the same window clock (`LAST_CLOSE`), since every shard
    /// sees every watermark.
    pub fn open_shard(
        catalog: Arc<Catalog>,
        cfg: ProcessorConfig,
        state: &dyn StateRead,
        owns: &dyn Fn(&str) -> bool,
    ) -> Result<Self, StageError> {
        let mut dirty = FxHashMap::default();
        let mut corrupt = None;
        state.scan_prefix(Table::Meta, DIRTY, &mut |k, v| {
            match decode_json::<IdentityMeta>(&keys::PROCESSOR_DIRTY, k, v) {
                Ok(meta) => {
                    let arn = String::from_utf8_lossy(k.get(DIRTY.len()..).unwrap_or_default()).into_owned();
                    if owns(&arn) {
                        dirty.insert(arn, (meta, true));
                    }
                }
                Err(e) => corrupt = Some(e),
            }
            corrupt.is_none()
        })?;
        if let Some(e) = corrupt {
            return Err(e.into());
        }
        let last_close = match state.get(Table::Meta, LAST_CLOSE)? {
            Some(v) => Some(keys::PROCESSOR_LAST_CLOSE.decode_i64(LAST_CLOSE, &v)?),
            None => None,
        };
        Ok(Self {
            catalog,
            cfg,
            usage: UsageStage::new(state)?,
            dirty,
            cleaned: Vec::new(),
            entitlements: FxHashMap::default(),
            grants: FxHashMap::default(),
            flags: FxHashMap::default(),
            supplied: FxHashMap::default(),
            last_close,
            last_close_dirty: false,
            expiries: Default::default(),
            expiry_of: FxHashMap::default(),
            history: Vec::new(),
            owns: None,
        })
    }

    /// Restricts the stage to one shard's identities: supplied entitlements and scheduled re-scores of
    /// other identities are ignored, so each identity is scored (and its history written) by one shard.
    pub fn restrict_to(&mut self, owns: Owns) {
        self.owns = Some(owns);
    }

    fn owns(&self, arn: &str) -> bool {
        self.owns.as_ref().is_none_or(|f| f(arn))
    }

    /// Accounts one event's usage and marks its identity for re-scoring; says whether it counted or
    /// was a duplicate. [`Stage::process`] of an [`ProcessorInput::Event`] is this.
    pub fn offer_event(&mut self, ev: &Event, state: &dyn StateRead) -> Result<Observed, StageError> {
        let mut observed = Vec::with_capacity(1);
        self.usage.process(ev, &mut Cx { state, out: &mut observed })?;
        let observed = observed.first().copied().unwrap_or(Observed::Duplicate);
        // AWS services acting for themselves, anonymous callers and whole foreign accounts are not
        // identities to right-size.
        if observed == Observed::Counted
            && self.cfg.emit_windows
            && !matches!(ev.actor.kind, IdentityKind::Service | IdentityKind::External)
            && !self.dirty.contains_key(ev.actor.uid.as_str())
        {
            let meta = IdentityMeta {
                kind: ev.actor.kind,
                account: ev.actor.account_uid.clone().unwrap_or_else(|| ev.account_uid.clone()),
                name: ev.actor.name.clone().unwrap_or_default(),
            };
            self.mark_dirty(&ev.actor.uid, meta);
        }
        Ok(observed)
    }

    /// Entitlements the runner evaluated itself and supplies again on every start (`analyze` reads the
    /// IAM snapshots each run): kept in memory for scoring, never written to state. Cheaper than an
    /// [`ProcessorInput::Entitlements`] record, which a service must persist because it reads it once.
    pub fn supply_grants(&mut self, grants: Arc<IdentityGrants>) {
        if !self.owns(&grants.arn) {
            return;
        }
        if grants.kind != IdentityKind::Group {
            let meta = IdentityMeta { kind: grants.kind, account: grants.account.clone(), name: grants.name.clone() };
            self.dirty.remove(&grants.arn);
            self.mark_dirty(&grants.arn, meta);
        }
        self.supplied.insert(grants.arn.clone(), grants);
    }

    fn mark_dirty(&mut self, arn: &str, meta: IdentityMeta) {
        if !self.dirty.contains_key(arn) {
            self.dirty.insert(arn.to_string(), (meta, false));
        }
    }

    /// The identity's evaluated entitlements, if a record was ever seen.
    fn load_grants(&mut self, arn: &str, state: &dyn StateRead) -> Result<Option<Arc<IdentityGrants>>, StageError> {
        if let Some(g) = self.supplied.get(arn).or_else(|| self.grants.get(arn)) {
            return Ok(Some(g.clone()));
        }
        let record: Option<EntitlementRecord> = match self.entitlements.get(arn) {
            Some(r) => Some(r.clone()),
            None => {
                let k = key(ENTITLEMENTS, arn);
                match state.get(Table::Meta, &k)? {
                    Some(v) => Some(decode_json(&keys::PROCESSOR_ENTITLEMENTS, &k, &v)?),
                    None => None,
                }
            }
        };
        let Some(record) = record else { return Ok(None) };
        let grants = Arc::new(IdentityGrants::from_record(&self.catalog, &record));
        if self.grants.len() >= GRANTS_CACHE_MAX {
            self.grants.clear();
        }
        self.grants.insert(arn.to_string(), grants.clone());
        Ok(Some(grants))
    }

    /// The identity's scheduled re-score, if any.
    fn scheduled_rescore(&self, arn: &str, state: &dyn StateRead) -> Result<Option<i64>, StageError> {
        if let Some(at) = self.expiry_of.get(arn) {
            return Ok(*at);
        }
        let k = key(EXPIRY_OF, arn);
        Ok(state.get(Table::Meta, &k)?.map(|v| keys::PROCESSOR_EXPIRY_OF.decode_i64(&k, &v)).transpose()?)
    }

    /// Schedules a re-score of `arn` at boundary `at`, replacing the one scheduled before: one per
    /// identity, so the schedule grows with identities, not with windows.
    fn schedule_rescore(
        &mut self,
        arn: &str,
        meta: &IdentityMeta,
        at: i64,
        state: &dyn StateRead,
    ) -> Result<(), StageError> {
        let before = self.scheduled_rescore(arn, state)?;
        if before == Some(at) {
            return Ok(());
        }
        if let Some(b) = before {
            self.expiries.insert(expiry_key(b, arn), None);
        }
        if let Ok(v) = serde_json::to_vec(meta) {
            self.expiries.insert(expiry_key(at, arn), Some(v));
            self.expiry_of.insert(arn.to_string(), Some(at));
        }
        Ok(())
    }

    /// Marks for re-scoring every identity whose scheduled re-score is due at `boundary` and whose
    /// last activity has left the lookback by then.
    fn mark_aged_out(&mut self, boundary: i64, state: &dyn StateRead) -> Result<(), StageError> {
        let at_of =
            |k: &[u8]| k.get(EXPIRY.len()..EXPIRY.len() + 8).and_then(|b| b.try_into().ok()).map(i64::from_be_bytes);
        let mut due: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = Default::default();
        let mut corrupt = None;
        state.scan_prefix(Table::Meta, EXPIRY, &mut |k, v| match at_of(k) {
            None => {
                corrupt = Some(keys::PROCESSOR_EXPIRY.corrupt(k, "no window boundary"));
                false
            }
            Some(at) if at > boundary => false, // in boundary order: nothing further is due
            Some(_) => {
                due.insert(k.to_vec(), v.to_vec());
                true
            }
        })?;
        if let Some(e) = corrupt {
            return Err(e.into());
        }
        // What this snapshot has not written yet overrides the store.
        for (k, v) in &self.expiries {
            if at_of(k).is_some_and(|at| at <= boundary) {
                match v {
                    Some(v) => due.insert(k.clone(), v.clone()),
                    None => due.remove(k),
                };
            }
        }
        let lookback_ms = i64::from(self.cfg.lookback_days) * DAY_MS;
        for (k, v) in due {
            let arn = String::from_utf8_lossy(&k[EXPIRY.len() + 8..]).into_owned();
            if !self.owns(&arn) {
                continue;
            }
            let meta: IdentityMeta = decode_json(&keys::PROCESSOR_EXPIRY, &k, &v)?;
            self.expiries.insert(k, None);
            self.expiry_of.insert(arn.clone(), None);
            if self.dirty.contains_key(&arn) {
                continue;
            }
            let mut usage = IdentityUsage::default();
            let key = crate::usage::usage_key(crate::usage::UsageKind::Identity, &arn, "");
            if let Some(v) = state.get(Table::Usage, &key)? {
                usage.activity = Some(keys::USAGE_IDENTITY.decode_span(&key, &v)?);
            }
            self.usage.overlay_pending(&arn, &mut usage);
            if usage.activity.is_some_and(|a| a.last_ms < boundary.saturating_sub(lookback_ms)) {
                self.mark_dirty(&arn, meta);
            }
        }
        Ok(())
    }

    /// The proposal a newly raised over-provisioned flag, or a newly raised inactive flag of an
    /// identity that was active, calls for (once per raise: the flags are state).
    fn proposal(
        &self,
        grants: &IdentityGrants,
        score: &crate::findings::IdentityScore,
        before: &[StatusFlag],
        was_active: bool,
        as_of: EventTime,
    ) -> Option<RemediationProposal> {
        if !matches!(grants.kind, IdentityKind::User | IdentityKind::Role) || grants.service_linked {
            return None;
        }
        let raised = |f: StatusFlag| score.status.contains(&f) && !before.contains(&f);
        let reason = if raised(StatusFlag::OverProvisioned) {
            PlanReason::OverProvisioned
        } else if raised(StatusFlag::Inactive) && was_active {
            PlanReason::Inactive
        } else {
            return None;
        };
        let granted = crate::findings::removable(&self.catalog, &grants.granted);
        let mut unused = granted.clone();
        unused.difference_with(&score.used);
        Some(RemediationProposal {
            class_uid: 7001,
            category_uid: 7,
            activity_id: 4,
            activity_name: "Harden".into(),
            time: as_of,
            identity: grants.arn.clone(),
            account: grants.account.clone(),
            kind: grants.kind,
            reason,
            remove: self.catalog.compact_names(&unused),
            keep: self.catalog.compact_names(&score.used),
            unused_count: unused.len() as u64,
            granted_count: granted.len() as u64,
            lookback_days: self.cfg.lookback_days,
            plan_command: format!(
                "grantwatch remediate plan --iam <snapshots> --cloudtrail <logs> --identity {} --lookback-days {} --out <dir>",
                grants.arn, self.cfg.lookback_days
            ),
        })
    }

    fn load_flags(&self, arn: &str, state: &dyn StateRead) -> Result<Vec<StatusFlag>, StageError> {
        if let Some(f) = self.flags.get(arn) {
            return Ok(f.clone());
        }
        let k = key(FLAGS, arn);
        match state.get(Table::Meta, &k)? {
            Some(v) => Ok(decode_json(&keys::PROCESSOR_FLAGS, &k, &v)?),
            None => Ok(Vec::new()),
        }
    }

    /// Computes the update of one identity as of `as_of`, and the findings it newly raises.
    fn close_identity(
        &mut self,
        arn: &str,
        meta: &IdentityMeta,
        as_of: EventTime,
        cx: &mut Cx<'_, ProcessorOutput>,
    ) -> Result<(), StageError> {
        let known = self.load_grants(arn, cx.state)?;
        let grants = match &known {
            Some(g) => g.clone(),
            None => {
                let mut g = IdentityGrants::unknown(&self.catalog, arn, &meta.account, meta.kind, &meta.name);
                if meta.kind == IdentityKind::Root {
                    g.granted = self.catalog.full_set();
                    g.unscoped = self.catalog.full_set();
                }
                if let Some(org) = &self.cfg.organization {
                    org.apply(&self.catalog, std::slice::from_mut(&mut g));
                }
                Arc::new(g)
            }
        };
        let mut usage = IdentityUsage::load(cx.state, arn, false)?;
        self.usage.overlay_pending(arn, &mut usage);
        let cfg = FindingsConfig {
            as_of,
            lookback_days: self.cfg.lookback_days,
            over_provisioned_ratio: self.cfg.over_provisioned_ratio,
            super_identity_share: self.cfg.super_identity_share,
        };
        let score = identity_score(&self.catalog, &cfg, &grants, &usage);
        let before = self.load_flags(arn, cx.state)?;
        if score.status.iter().any(|s| !before.contains(s) && *s != StatusFlag::Inactive) {
            // Rare (a flag is raised): only then are the full finding's name lists worth building.
            let f = identity_finding(&self.catalog, &cfg, &grants, &usage);
            for flag in f.status.iter().filter(|s| !before.contains(s)) {
                if let Some(finding) = flag_finding(*flag, &f, as_of, self.cfg.lookback_days) {
                    cx.out.push(ProcessorOutput::Finding(Box::new(finding)));
                }
            }
        }
        if self.cfg.propose_remediation
            && let Some(p) = self.proposal(&grants, &score, &before, had_activity_by(&usage, as_of), as_of)
        {
            cx.out.push(ProcessorOutput::Proposal(Box::new(p)));
        }
        if before != score.status {
            self.flags.insert(arn.to_string(), score.status.clone());
        }
        // The window in which the identity's last activity leaves the lookback: re-scored then, so its
        // PCI on the topic does not stay what it was while it was active.
        if let Some(activity) = usage.activity {
            let lookback_ms = i64::from(self.cfg.lookback_days) * DAY_MS;
            let w = self.cfg.window_ms;
            let out_at =
                (activity.last_ms.saturating_add(lookback_ms)).div_euclid(w).saturating_add(1).saturating_mul(w);
            if out_at > as_of.millis() {
                self.schedule_rescore(arn, meta, out_at, cx.state)?;
            }
        }
        let update = PciUpdate {
            arn: arn.to_string(),
            account: if grants.account.is_empty() { meta.account.clone() } else { grants.account.clone() },
            kind: grants.kind,
            as_of,
            lookback_days: self.cfg.lookback_days,
            pci: score.pci,
            granted: grants.granted.len(),
            used: score.used.len(),
            unused_high_risk: score.unused_high_risk,
            status: score.status,
            last_activity: usage.activity.map(|s| EventTime(s.last_ms)),
            events_in_lookback: score.events,
            entitlements_known: known.is_some(),
        };
        if let Some(e) = crate::history::entry(&update) {
            self.history.push(e);
        }
        cx.out.push(ProcessorOutput::Pci(Box::new(update)));
        Ok(())
    }
}

/// Whether the identity acted at or before `as_of`. Not "has any activity": a window closes while
/// events past its end are already counted, and how many depends on arrival, so only activity up to
/// the window's end may decide what the window emits.
fn had_activity_by(usage: &IdentityUsage, as_of: EventTime) -> bool {
    usage.activity.is_some_and(|s| s.first_ms <= as_of.millis())
}

/// The Discover finding a newly raised status flag becomes (inactivity is reported in PCI updates,
/// not as a finding: every new identity starts inactive).
fn flag_finding(
    flag: StatusFlag,
    f: &grantwatch_types::IdentityFinding,
    as_of: EventTime,
    lookback_days: u32,
) -> Option<DetectionFinding> {
    let (id, title, severity, desc) = match flag {
        StatusFlag::Inactive => return None,
        StatusFlag::OverProvisioned => (
            "grantwatch/over-provisioned",
            "Identity over-provisioned",
            Severity::Medium,
            format!(
                "{} uses {} of {} granted actions in the last {} days (PCI {}).",
                f.arn,
                f.used_actions.len(),
                f.granted_actions.len(),
                lookback_days,
                f.pci.score
            ),
        ),
        StatusFlag::SuperIdentity => (
            "grantwatch/super-identity",
            "Super identity",
            Severity::High,
            format!("{} can do nearly everything, or grant itself anything, in account {}.", f.arn, f.account),
        ),
        StatusFlag::EscalationPath => {
            let e = f.escalation.as_ref()?;
            let steps: Vec<String> =
                e.path.iter().map(|s| format!("{} ({}) to {}", s.kind, s.actions.join(" + "), s.to)).collect();
            (
                "grantwatch/escalation-path",
                "New path to administrator",
                if e.conditional { Severity::Medium } else { Severity::High },
                format!(
                    "{} can become an administrator ({}: {}) in {} step(s): {}{}.",
                    f.arn,
                    e.administrator,
                    e.administrator_reason,
                    e.path.len(),
                    steps.join(", then "),
                    if e.conditional { "; a condition decides one step" } else { "" }
                ),
            )
        }
    };
    let mut unmapped = serde_json::Map::new();
    unmapped.insert("pci".into(), f.pci.score.into());
    unmapped.insert("granted".into(), f.granted_actions.len().into());
    unmapped.insert("used".into(), f.used_actions.len().into());
    unmapped.insert("recommendations".into(), f.recommendations.clone().into());
    if let Some(e) = &f.escalation {
        unmapped.insert("escalation".into(), serde_json::to_value(e).unwrap_or_default());
    }
    let uid_src = format!("{id}\0{}\0{}", f.arn, as_of.millis());
    Some(DetectionFinding::new(FindingSpec {
        uid: format!("{:032x}", xxhash_rust::xxh3::xxh3_128(uid_src.as_bytes())),
        title: title.to_string(),
        desc,
        analytic_uid: id.to_string(),
        analytic_name: title.to_string(),
        analytic_kind: AnalyticKind::Behavioral,
        types: vec!["CIEM".to_string()],
        severity,
        time: as_of,
        cloud: f.cloud,
        account: f.account.clone(),
        region: None,
        actor_uid: f.arn.clone(),
        actor_name: Some(f.name.clone()),
        actor_kind: f.kind,
        actor_human: None,
        related_events: Vec::new(),
        unmapped,
    }))
}

impl Stage for ProcessorStage {
    type In = ProcessorInput;
    type Out = ProcessorOutput;

    fn process(&mut self, input: &ProcessorInput, cx: &mut Cx<'_, ProcessorOutput>) -> Result<(), StageError> {
        match input {
            ProcessorInput::Event(ev) => {
                self.offer_event(ev, cx.state)?;
            }
            ProcessorInput::Entitlements(r) => {
                let meta = IdentityMeta { kind: r.kind, account: r.account.clone(), name: r.name.clone() };
                self.entitlements.insert(r.arn.clone(), (**r).clone());
                self.grants.insert(r.arn.clone(), Arc::new(IdentityGrants::from_record(&self.catalog, r)));
                // A group acts only through its members, who may live in other partitions: its usage
                // (their union) is computed by `analyze`, not here, so it gets no PCI update.
                if r.kind != IdentityKind::Group {
                    // Entitlements changed: the identity must be re-scored even if already marked.
                    self.dirty.remove(&r.arn);
                    self.mark_dirty(&r.arn, meta);
                }
            }
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: EventTime, cx: &mut Cx<'_, ProcessorOutput>) -> Result<(), StageError> {
        if !self.cfg.emit_windows {
            return Ok(());
        }
        let boundary = watermark.millis().div_euclid(self.cfg.window_ms) * self.cfg.window_ms;
        let Some(last) = self.last_close else {
            // The first watermark opens the first window; nothing closes yet.
            self.last_close = Some(boundary);
            self.last_close_dirty = true;
            return Ok(());
        };
        if boundary <= last {
            return Ok(());
        }
        self.last_close = Some(boundary);
        self.last_close_dirty = true;
        self.mark_aged_out(boundary, cx.state)?;
        let mut dirty: Vec<(String, IdentityMeta)> = self.dirty.drain().map(|(k, (m, _))| (k, m)).collect();
        dirty.sort_by(|a, b| a.0.cmp(&b.0));
        for (arn, meta) in &dirty {
            self.close_identity(arn, meta, EventTime(boundary), cx)?;
        }
        self.cleaned.extend(dirty.into_iter().map(|(k, _)| k));
        Ok(())
    }

    fn snapshot(&mut self, batch: &mut WriteBatch) -> Result<(), StageError> {
        self.usage.snapshot(batch)?;
        for arn in self.cleaned.drain(..) {
            if !self.dirty.contains_key(&arn) {
                batch.delete(Table::Meta, key(DIRTY, &arn));
            }
        }
        for (arn, (meta, persisted)) in self.dirty.iter_mut() {
            if !*persisted {
                if let Ok(v) = serde_json::to_vec(meta) {
                    batch.put(Table::Meta, key(DIRTY, arn), v);
                }
                *persisted = true;
            }
        }
        for (arn, r) in self.entitlements.drain() {
            if let Ok(v) = serde_json::to_vec(&r) {
                batch.put(Table::Meta, key(ENTITLEMENTS, &arn), v);
            }
        }
        for (k, v) in std::mem::take(&mut self.expiries) {
            match v {
                Some(v) => batch.put(Table::Meta, k, v),
                None => batch.delete(Table::Meta, k),
            }
        }
        for (arn, at) in self.expiry_of.drain() {
            match at {
                Some(at) => batch.put(Table::Meta, key(EXPIRY_OF, &arn), at.to_be_bytes().to_vec()),
                None => batch.delete(Table::Meta, key(EXPIRY_OF, &arn)),
            }
        }
        for (arn, f) in self.flags.drain() {
            if let Ok(v) = serde_json::to_vec(&f) {
                batch.put(Table::Meta, key(FLAGS, &arn), v);
            }
        }
        for (k, v) in self.history.drain(..) {
            batch.put(Table::Meta, k, v);
        }
        if self.last_close_dirty {
            if let Some(b) = self.last_close {
                batch.put(Table::Meta, LAST_CLOSE.to_vec(), b.to_be_bytes().to_vec());
            }
            self.last_close_dirty = false;
        }
        Ok(())
    }

    fn committed(&mut self) {
        self.usage.committed();
    }

    fn pending(&self) -> usize {
        self.usage.pending() + self.entitlements.len() + self.flags.len() + self.expiries.len() + self.history.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::ALICE as ARN;
    use grantwatch_state::{MemStore, StateStore};

    const DAY: i64 = 24 * 3600 * 1000;

    fn event(uid: &str, ms: i64, action: &str) -> ProcessorInput {
        let mut e = crate::testing::event(uid, EventTime(ms));
        e.actions = vec![action.into()];
        ProcessorInput::Event(Box::new(e))
    }

    fn entitlements(granted: &[&str]) -> ProcessorInput {
        let names: Vec<String> = granted.iter().map(|s| s.to_string()).collect();
        ProcessorInput::Entitlements(Box::new(EntitlementRecord {
            arn: ARN.into(),
            cloud: Default::default(),
            human: None,
            emails: vec![],
            account: "111122223333".into(),
            kind: IdentityKind::User,
            name: "alice".into(),
            granted: names.clone(),
            conditional: vec![],
            unscoped: names,
            groups: vec![],
            access_keys: vec![],
            as_of: None,
            reachable: vec![],
            escalation: None,
        }))
    }

    /// Offers inputs with the watermark at each event's time (no out-of-orderness), as the runner does.
    fn feed(stage: &mut ProcessorStage, store: &MemStore, inputs: Vec<ProcessorInput>) -> Vec<ProcessorOutput> {
        let mut out = Vec::new();
        for i in inputs {
            let t = match &i {
                ProcessorInput::Event(e) => Some(e.time),
                ProcessorInput::Entitlements(_) => None,
            };
            stage.process(&i, &mut Cx { state: store, out: &mut out }).unwrap();
            if let Some(t) = t {
                stage.on_watermark(t, &mut Cx { state: store, out: &mut out }).unwrap();
            }
        }
        out
    }

    fn pci(out: &[ProcessorOutput]) -> Vec<&PciUpdate> {
        out.iter()
            .filter_map(|o| match o {
                ProcessorOutput::Pci(u) => Some(&**u),
                _ => None,
            })
            .collect()
    }

    /// A member account's root user, which no entitlement record describes, is granted everything
    /// but what the Organizations policies above its account take away.
    #[test]
    fn a_member_accounts_root_is_capped_by_the_organization() {
        let catalog = Arc::new(Catalog::aws().unwrap());
        let org = crate::org::Organization::parse(
            r#"{"roots": [{"id": "r-1"}], "accounts": [{"id": "111122223333", "parent": "r-1"}],
                "policies": [
                  {"id": "p-full", "type": "SERVICE_CONTROL_POLICY", "targets": ["r-1", "111122223333"],
                   "content": {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}},
                  {"id": "p-deny", "type": "SERVICE_CONTROL_POLICY", "targets": ["r-1"],
                   "content": {"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": "iam:*", "Resource": "*"}]}}]}"#,
            "org.json",
        )
        .unwrap();
        let root_event = |uid: &str, ms: i64| {
            let mut e = crate::testing::event(uid, EventTime(ms));
            e.actor.uid = "arn:aws:iam::111122223333:root".into();
            e.actor.kind = IdentityKind::Root;
            e.actor.account_uid = Some("111122223333".into());
            e.actions = vec!["s3:ListAllMyBuckets".into()];
            ProcessorInput::Event(Box::new(e))
        };
        let granted_of = |organization: Option<Arc<crate::org::Organization>>| {
            let store = MemStore::new();
            let cfg = ProcessorConfig { organization, ..ProcessorConfig::default() };
            let mut stage = ProcessorStage::open(catalog.clone(), cfg, &store).unwrap();
            let day0 = 19_800 * DAY;
            let out = feed(&mut stage, &store, vec![root_event("a", day0 + 1000), root_event("b", day0 + DAY + 5)]);
            let updates = pci(&out);
            assert_eq!(updates.len(), 1);
            updates[0].granted
        };
        let iam = catalog.expand("iam:*").len();
        assert_eq!(granted_of(None), catalog.len());
        assert_eq!(granted_of(Some(Arc::new(org))), catalog.len() - iam);
    }

    /// A snapshot that opens a path to an administrator raises one finding, naming the path, when the
    /// identity is next scored; the same path again raises nothing.
    #[test]
    fn a_new_path_to_administrator_raises_a_finding_once() {
        let catalog = Arc::new(Catalog::aws().unwrap());
        let store = MemStore::new();
        let mut stage = ProcessorStage::open(catalog.clone(), ProcessorConfig::default(), &store).unwrap();
        let with_path = || {
            let ProcessorInput::Entitlements(mut r) = entitlements(&["sts:AssumeRole", "s3:GetObject"]) else {
                unreachable!()
            };
            r.reachable = vec!["*".into()];
            r.escalation = Some(grantwatch_types::Escalation {
                admin: None,
                path: vec![grantwatch_types::EscalationStep {
                    from: ARN.into(),
                    to: "arn:aws:iam::111122223333:role/admin".into(),
                    kind: "assume-role".into(),
                    actions: vec!["sts:AssumeRole".into()],
                    conditional: false,
                    policies: vec!["inline:alice:hop".into()],
                }],
                administrator: "arn:aws:iam::111122223333:role/admin".into(),
                administrator_reason: "holds nearly every action".into(),
                conditional: false,
            });
            ProcessorInput::Entitlements(r)
        };
        let findings = |out: &[ProcessorOutput]| -> Vec<String> {
            out.iter()
                .filter_map(|o| match o {
                    ProcessorOutput::Finding(f) => Some(serde_json::to_string(f).unwrap()),
                    _ => None,
                })
                .collect()
        };
        let day0 = 19_800 * DAY;
        let out = feed(
            &mut stage,
            &store,
            vec![entitlements(&["sts:AssumeRole", "s3:GetObject"]), event("a", day0 + 1000, "s3:GetObject")],
        );
        let out2 = feed(&mut stage, &store, vec![event("b", day0 + DAY + 5, "s3:GetObject")]);
        assert!(findings(&out).iter().chain(&findings(&out2)).all(|f| !f.contains("escalation-path")));
        let before = pci(&out2)[0].pci.score;

        let out = feed(&mut stage, &store, vec![with_path(), event("c", day0 + 2 * DAY + 5, "s3:GetObject")]);
        let raised = findings(&out);
        assert_eq!(raised.iter().filter(|f| f.contains("grantwatch/escalation-path")).count(), 1, "{raised:?}");
        assert!(raised.iter().any(|f| f.contains("role/admin") && f.contains("assume-role")));
        let update = pci(&out)[0];
        assert!(
            update.status.contains(&StatusFlag::EscalationPath) && update.status.contains(&StatusFlag::SuperIdentity)
        );
        assert!(
            update.pci.score > before,
            "reaching an administrator raises the PCI: {} -> {}",
            before,
            update.pci.score
        );

        let out = feed(&mut stage, &store, vec![with_path(), event("d", day0 + 3 * DAY + 5, "s3:GetObject")]);
        assert!(findings(&out).iter().all(|f| !f.contains("escalation-path")), "the same path is not new");
    }

    #[test]
    fn windows_close_on_event_time_and_state_survives_a_restart() {
        let catalog = Arc::new(Catalog::aws().unwrap());
        let store = MemStore::new();
        let open = |store: &MemStore| ProcessorStage::open(catalog.clone(), ProcessorConfig::default(), store).unwrap();
        let mut stage = open(&store);
        let granted: Vec<&str> = vec!["s3:GetObject", "s3:PutObject", "iam:CreateUser", "ec2:RunInstances"];
        let day0 = 19_800 * DAY;
        let out = feed(
            &mut stage,
            &store,
            vec![
                entitlements(&granted),
                event("a", day0 + 1000, "s3:GetObject"),
                event("b", day0 + 2000, "s3:GetObject"),
                event("c", day0 + DAY / 2, "s3:PutObject"),
            ],
        );
        assert!(pci(&out).is_empty(), "no window has closed yet");

        // The first event of the next day closes day 0: one update, as of midnight, with day 0's usage.
        let out = feed(&mut stage, &store, vec![event("d", day0 + DAY + 5, "iam:CreateUser")]);
        let updates = pci(&out);
        assert_eq!(updates.len(), 1);
        assert_eq!(updates[0].as_of, EventTime(day0 + DAY));
        assert_eq!((updates[0].granted, updates[0].used), (4, 2), "d is after the window's end");
        assert!(updates[0].entitlements_known);
        assert_eq!(updates[0].events_in_lookback, 4, "counters are per day; day 1 has begun");

        // Snapshot, write, and restart: the next close still knows the identity is dirty and the usage.
        let mut batch = WriteBatch::new();
        stage.snapshot(&mut batch).unwrap();
        store.write(batch).unwrap();
        let mut restarted = open(&store);
        let out = feed(&mut restarted, &store, vec![event("d", day0 + DAY + 5, "iam:CreateUser")]);
        assert!(pci(&out).is_empty(), "a duplicate closes nothing");
        let out = feed(&mut restarted, &store, vec![event("e", day0 + 2 * DAY + 1, "s3:GetObject")]);
        let updates = pci(&out);
        assert_eq!(updates.len(), 1);
        assert_eq!(updates[0].as_of, EventTime(day0 + 2 * DAY));
        assert_eq!(updates[0].used, 3, "GetObject, PutObject, CreateUser");
        assert_eq!(updates[0].events_in_lookback, 5, "d counted once");
    }

    /// Every PCI update emitted is in the history, written with the snapshot; replaying the same input
    /// over the same state closes the same windows and rewrites the same keys: no duplicates.
    #[test]
    fn history_records_each_update_once_across_a_replay() {
        let catalog = Arc::new(Catalog::aws().unwrap());
        let store = MemStore::new();
        let day0 = 19_800 * DAY;
        let inputs = || {
            vec![
                entitlements(&["s3:GetObject", "s3:PutObject"]),
                event("a", day0 + 1000, "s3:GetObject"),
                event("b", day0 + DAY + 5, "s3:PutObject"),
                event("c", day0 + 2 * DAY + 5, "s3:GetObject"),
            ]
        };
        let run = |store: &MemStore| {
            let mut stage = ProcessorStage::open(catalog.clone(), ProcessorConfig::default(), store).unwrap();
            let out = feed(&mut stage, store, inputs());
            let mut batch = WriteBatch::new();
            stage.snapshot(&mut batch).unwrap();
            store.write(batch).unwrap();
            pci(&out).into_iter().cloned().collect::<Vec<_>>()
        };
        let emitted = run(&store);
        assert_eq!(emitted.len(), 2);
        let read = || crate::history::all_series(&store, EventTime(0), EventTime(i64::MAX)).unwrap();
        let first = read();
        let points: Vec<(EventTime, crate::history::PciPoint)> = first[ARN].clone();
        let expected: Vec<_> = emitted.iter().map(|u| (u.as_of, crate::history::PciPoint::of(u))).collect();
        assert_eq!(points, expected);

        // A fresh stage over an empty copy of nothing: replay onto the same state.
        let store2 = MemStore::new();
        run(&store2);
        run(&store2);
        let twice = crate::history::all_series(&store2, EventTime(0), EventTime(i64::MAX)).unwrap();
        assert_eq!(twice[ARN], points, "the replay rewrote the same points");
    }

    /// Alice, granted `granted`, calls s3:GetObject once on day 0; then someone else keeps the clock
    /// going, one event a day for a week. The stage restarts (snapshot, reopen) after day 2 closed, so
    /// what is due at day 3 comes from state. Returns every output.
    fn alice_once_then_days_pass(cfg: ProcessorConfig, granted: &[&str], day0: i64) -> Vec<ProcessorOutput> {
        let catalog = Arc::new(Catalog::aws().unwrap());
        let store = MemStore::new();
        let mut stage = ProcessorStage::open(catalog.clone(), cfg.clone(), &store).unwrap();
        let mut inputs = vec![entitlements(granted), event("a", day0 + 1000, "s3:GetObject")];
        for d in 1..8 {
            let mut e = crate::testing::event(&format!("b{d}"), EventTime(day0 + d * DAY + 5));
            e.actor.uid = "arn:aws:iam::111122223333:user/bob".into();
            e.actions = vec!["s3:ListBucket".into()];
            inputs.push(ProcessorInput::Event(Box::new(e)));
        }
        let mut out = Vec::new();
        for (i, input) in inputs.into_iter().enumerate() {
            out.extend(feed(&mut stage, &store, vec![input]));
            if i == 3 {
                let mut batch = WriteBatch::new();
                stage.snapshot(&mut batch).unwrap();
                store.write(batch).unwrap();
                stage = ProcessorStage::open(catalog.clone(), cfg.clone(), &store).unwrap();
            }
        }
        out
    }

    #[test]
    fn an_identity_whose_usage_leaves_the_lookback_is_scored_again_once() {
        let cfg = ProcessorConfig { lookback_days: 2, ..ProcessorConfig::default() };
        let day0 = 19_800 * DAY;
        let out = alice_once_then_days_pass(cfg, &["s3:GetObject"], day0);
        let alice: Vec<&PciUpdate> = pci(&out).into_iter().filter(|u| u.arn == ARN).collect();
        let days: Vec<i64> = alice.iter().map(|u| (u.as_of.millis() - day0) / DAY).collect();
        // Active on day 0 (closed at day 1); its last use leaves the 2-day lookback in the window that
        // closes at day 3; nothing after that.
        assert_eq!(days, [1, 3], "{alice:?}");
        assert_eq!((alice[0].used, alice[0].events_in_lookback), (1, 1));
        assert_eq!((alice[1].used, alice[1].events_in_lookback), (0, 0));
        assert!(alice[1].status.contains(&StatusFlag::Inactive));
    }

    #[test]
    fn proposals_follow_newly_raised_flags_once_across_a_restart() {
        let catalog = Catalog::aws().unwrap();
        let cfg = ProcessorConfig { lookback_days: 2, propose_remediation: true, ..ProcessorConfig::default() };
        let mut granted: Vec<String> = catalog.expand("ec2:Describe*").names(&catalog);
        granted.push("s3:GetObject".into());
        let granted: Vec<&str> = granted.iter().map(String::as_str).collect();
        let out = alice_once_then_days_pass(cfg, &granted, 19_800 * DAY);
        let proposals: Vec<&RemediationProposal> = out
            .iter()
            .filter_map(|o| match o {
                ProcessorOutput::Proposal(p) if p.identity == ARN => Some(&**p),
                _ => None,
            })
            .collect();
        let reasons: Vec<PlanReason> = proposals.iter().map(|p| p.reason).collect();
        // Over-provisioned when its first window closes (1 of 200-odd actions used), inactive once
        // that use leaves the 2-day lookback; each once, the restart in between notwithstanding.
        assert_eq!(reasons, [PlanReason::OverProvisioned, PlanReason::Inactive], "{proposals:?}");
        assert_eq!(proposals[0].keep, ["s3:GetObject"]);
        assert!(proposals[0].remove.contains(&"ec2:Describe*".to_string()));
        assert_eq!(proposals[1].keep, Vec::<String>::new());
        assert_eq!(proposals[0].unused_count + 1, proposals[0].granted_count);
        assert_eq!((proposals[0].class_uid, proposals[0].activity_id), (7001, 4));
        let json = serde_json::to_value(proposals[0]).unwrap();
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/remediation_proposal.v1.json");
        let schema: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let errors: Vec<String> = validator.iter_errors(&json).map(|e| format!("{e} at {}", e.instance_path)).collect();
        assert!(errors.is_empty(), "{errors:?}");
    }
}
