//! The detection stage: events and PCI updates in, explained alerts out, grouped into incidents.
//!
//! Per event: Sigma rules and the built-in single-event rules; then, against the identity's
//! [`History`], first-time anomalies, dormancy, roles passed to compute for the first time, the
//! two-step policy-version escalation, and "granted and used within minutes". Per identity-hour (event
//! time): the window's behavior features, scored by the trained models ([`ModelSet`]). Per PCI update:
//! a new super identity, or a sharp PCI rise. Every alert goes through [`DetectStage::raise`], which
//! applies the rule configuration (enabled, severity, allowlists), explains it, and groups it into an
//! incident.
//!
//! State (in [`Table::Meta`], JSON): one profile per identity (history, open hour window, PCI, pending
//! grants and sequence steps), open incidents, and an index of open windows by end time so the
//! watermark can close windows of identities that went quiet. Events already processed are remembered
//! in [`Table::Seen`] by `(day, event id)`, so a re-delivered event changes nothing. The same stage
//! collects the training windows for `grantwatch train` (one code path for training and detection).

use std::collections::BTreeSet;
use std::sync::Arc;

use grantwatch_core::catalog::{AccessLevel, Catalog};
use grantwatch_core::stage::{Cx, Stage, StageError};
use grantwatch_core::usage::SeenKey;
use grantwatch_state::{StateRead, Table, WriteBatch};
use grantwatch_types::{
    Cloud, DetectionFinding, Event, EventTime, FindingSpec, IdentityKind, PciUpdate, RelatedEvent, StatusFlag,
};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};

use crate::alert::Evidence;
use crate::features::{FeatureMean, HOUR_MS, HourWindow, Novelty, hour_start};
use crate::history::{History, Novel};
use crate::incident::{Incident, MAX_EVENTS};
use crate::ml::{BaselineKind, ModelSet, TrainingWindow};
use crate::rules::{self, AnalyticInfo, Builtin, RuleHit, RulePolicy, RulesConfig};
use crate::sigma::SigmaSet;

/// A two-step sequence (policy version created, then made default) must complete within this time.
const SEQUENCE_WINDOW_MS: i64 = HOUR_MS;
/// Grants and sequence steps remembered per identity.
const PENDING_MAX: usize = 16;
/// Profiles kept in memory between snapshots; past this, clean ones are dropped after a commit.
const PROFILE_CACHE_MAX: usize = 50_000;

const PROFILE: &[u8] = grantwatch_state::keys::DETECT_PROFILE.prefix;
const INCIDENT: &[u8] = grantwatch_state::keys::DETECT_INCIDENT.prefix;
const WINDOW: &[u8] = grantwatch_state::keys::DETECT_WINDOW.prefix;
/// Reads from data stores first touched within the hour that make a bulk read.
const BULK_READS: u32 = 100;

/// What the detector consumes.
#[derive(Debug, Clone)]
pub enum DetectInput {
    Event(Box<Event>),
    Pci(Box<PciUpdate>),
}

/// Everything detection loads once: reference data, rules, models.
pub struct Detection {
    pub catalog: Arc<Catalog>,
    pub config: RulesConfig,
    pub sigma: SigmaSet,
    pub model: Option<ModelSet>,
}

impl std::fmt::Debug for Detection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detection")
            .field("sigma_rules", &self.sigma.rules().len())
            .field("config", &self.config)
            .field("model", &self.model.as_ref().map(|m| m.manifest().feature_version))
            .finish_non_exhaustive()
    }
}

impl Detection {
    /// Whether `id` names an analytic that exists (built in, a loaded Sigma rule).
    pub fn knows(sigma: &SigmaSet, id: &str) -> bool {
        Builtin::ALL.iter().any(|b| b.id() == id) || sigma.rules().iter().any(|r| sigma_id(&r.id) == id)
    }
}

fn sigma_id(rule_id: &str) -> String {
    format!("sigma/{rule_id}")
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Profile {
    kind: Option<IdentityKind>,
    name: Option<String>,
    account: String,
    history: History,
    window: Option<HourWindow>,
    /// Mean of the identity's closed windows' features: its running profile, which places an identity
    /// the model has never seen into a peer group.
    #[serde(default)]
    running: FeatureMean,
    pci: Option<u8>,
    super_identity: Option<bool>,
    /// Permissions granted to this identity recently, waiting for a first use.
    grants: Vec<Pending>,
    /// First steps of two-step sequences.
    steps: Vec<Pending>,
    /// Data stores first touched in the current hour, and the reads from them so far.
    #[serde(default)]
    fresh: FreshData,
    /// Analytics this identity triggered: first and last UTC day, within the lookback (established
    /// behavior once the first day is past).
    #[serde(default)]
    triggered: FxHashMap<String, (i32, i32)>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct FreshData {
    hour_ms: i64,
    stores: Vec<String>,
    reads: u32,
    events: Vec<RelatedEvent>,
    alerted: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    /// What was granted, or the sequence step's subject (a policy ARN).
    what: String,
    event: RelatedEvent,
    /// Who made the grant (empty for sequence steps).
    #[serde(default)]
    by: String,
}

/// A grant one identity made to another (`AttachUserPolicy`, `AddUserToGroup`, ...), remembered on the
/// grantee so that its first use of the new permission can be told apart. It is the one piece of
/// detection state that crosses identities: a runner that shards identities hands it to the grantee's
/// shard ([`DetectStage::apply_grant`]) instead of letting the granting event record it
/// ([`DetectStage::route_grants`]).
#[derive(Debug, Clone)]
pub struct GrantNotice {
    grantee: String,
    pending: Pending,
    /// The granting event's seen key: a re-delivered grant is remembered once.
    seen: SeenKey,
}

impl GrantNotice {
    /// The grant `ev` makes, if it is one. Cheap for every other event (no request parsing).
    pub fn of(ev: &Event) -> Option<GrantNotice> {
        if !rules::may_grant(ev) {
            return None;
        }
        let request = ev.request.as_ref().and_then(|r| r.parse());
        let (target, what) = rules::grant_target(ev, request.as_ref())?;
        Some(GrantNotice {
            grantee: format!("arn:aws:iam::{}:{target}", ev.account_uid),
            pending: Pending { what, event: related(ev), by: ev.actor.uid.clone() },
            seen: detect_seen_key(ev),
        })
    }

    /// The identity granted to (its ARN, as events name their actor).
    pub fn grantee(&self) -> &str {
        &self.grantee
    }
}

/// Counts the runner reports.
#[derive(Debug, Clone, Default)]
pub struct DetectCounts {
    pub events: u64,
    pub duplicates: u64,
    pub alerts: u64,
    pub repeats: u64,
    /// Alerts not raised because the behavior is established for the identity.
    pub established: u64,
    pub windows_scored: u64,
}

/// The detection stage.
pub struct DetectStage {
    det: Arc<Detection>,
    /// Enabled analytics and their effective settings, by id.
    policies: FxHashMap<String, (AnalyticInfo, RulePolicy)>,
    profiles: FxHashMap<String, Profile>,
    dirty_profiles: FxHashSet<String>,
    /// Open hour windows by end time, and their changes since the last snapshot (true: opened).
    windows: BTreeSet<(i64, String)>,
    window_changes: FxHashMap<(i64, String), bool>,
    incidents: FxHashMap<String, Incident>,
    /// Open incidents by expiry.
    expiries: BTreeSet<(i64, String)>,
    dirty_incidents: FxHashSet<String>,
    closed_incidents: Vec<String>,
    seen: FxHashSet<SeenKey>,
    in_flight: FxHashSet<SeenKey>,
    /// Set when the caller hands over each event once only (it deduplicated them with the same notion
    /// of "same event", in the same atomic commits): the stage then keeps no seen keys of its own.
    deduplicated_upstream: bool,
    /// Set when the caller routes [`GrantNotice`]s to the grantee's stage itself.
    grants_routed: bool,
    collect: Option<Vec<TrainingWindow>>,
    /// Alerts of the current input, before analytics on the same event are merged.
    drafts: Vec<Draft>,
    pub counts: DetectCounts,
}

/// An alert that passed the configuration, before it is merged and grouped.
struct Draft {
    info: AnalyticInfo,
    policy: RulePolicy,
    subject: Subject,
    time: EventTime,
    region: Option<String>,
    events: Vec<RelatedEvent>,
    evidence: Vec<Evidence>,
    desc: String,
}

impl DetectStage {
    /// The stage over a task's state (restores open windows and incidents).
    pub fn open(det: Arc<Detection>, state: &dyn StateRead) -> Result<Self, StageError> {
        Self::open_shard(det, state, &|_| true)
    }

    /// The stage of one shard of identities: restores the open windows and incidents of the identities
    /// `owns` accepts (by ARN), and leaves the others to their own shards.
    pub fn open_shard(
        det: Arc<Detection>,
        state: &dyn StateRead,
        owns: &dyn Fn(&str) -> bool,
    ) -> Result<Self, StageError> {
        let mut policies = FxHashMap::default();
        let infos = Builtin::ALL.iter().map(|b| b.info()).chain(det.sigma.rules().iter().map(|r| AnalyticInfo {
            id: sigma_id(&r.id),
            title: r.title.clone(),
            kind: grantwatch_types::AnalyticKind::Rule,
            severity: r.level,
            technique: technique_of(&r.tags),
            // Community rules of low and medium level flag things that are routine for some identities.
            suppress_established: r.level < grantwatch_types::Severity::High,
        }));
        for info in infos {
            if let Some(p) = det.config.policy(&info) {
                policies.insert(info.id.clone(), (info, p));
            }
        }
        let mut windows = BTreeSet::new();
        let mut corrupt = None;
        state.scan_prefix(Table::Meta, WINDOW, &mut |k, _| {
            if let Some(rest) = k.get(WINDOW.len()..)
                && rest.len() > 8
                && let Ok(end) = <[u8; 8]>::try_from(&rest[..8])
            {
                let arn = String::from_utf8_lossy(&rest[8..]).into_owned();
                if owns(&arn) {
                    windows.insert((i64::from_be_bytes(end), arn));
                }
            } else {
                let why = "key is not an 8-byte window end and an identity";
                corrupt = Some(grantwatch_state::keys::DETECT_WINDOW.corrupt(k, why));
            }
            corrupt.is_none()
        })?;
        let mut incidents = FxHashMap::default();
        let mut expiries = BTreeSet::new();
        state.scan_prefix(Table::Meta, INCIDENT, &mut |k, v| {
            match grantwatch_core::stage::decode_json::<Incident>(&grantwatch_state::keys::DETECT_INCIDENT, k, v) {
                Ok(inc) => {
                    let key = String::from_utf8_lossy(k.get(INCIDENT.len()..).unwrap_or_default()).into_owned();
                    // Keyed "<analytic>\0<subject ARN>".
                    if owns(key.split_once('\0').map_or(key.as_str(), |(_, subject)| subject)) {
                        expiries.insert((inc.expires_ms(), key.clone()));
                        incidents.insert(key, inc);
                    }
                }
                Err(e) => corrupt = Some(e),
            }
            corrupt.is_none()
        })?;
        if let Some(e) = corrupt {
            return Err(e.into());
        }
        Ok(Self {
            det,
            policies,
            profiles: FxHashMap::default(),
            dirty_profiles: FxHashSet::default(),
            windows,
            window_changes: FxHashMap::default(),
            incidents,
            expiries,
            dirty_incidents: FxHashSet::default(),
            closed_incidents: Vec::new(),
            seen: FxHashSet::default(),
            in_flight: FxHashSet::default(),
            deduplicated_upstream: false,
            grants_routed: false,
            collect: None,
            drafts: Vec::new(),
            counts: DetectCounts::default(),
        })
    }

    /// Makes the stage keep every closed identity-hour window (for training) instead of only scoring it.
    pub fn collect_windows(&mut self) {
        self.collect = Some(Vec::new());
    }

    pub fn take_windows(&mut self) -> Vec<TrainingWindow> {
        self.collect.as_mut().map(std::mem::take).unwrap_or_default()
    }

    fn settings(&self) -> &rules::DetectionSettings {
        &self.det.config.detection
    }

    fn profile<'a>(
        profiles: &'a mut FxHashMap<String, Profile>,
        state: &dyn StateRead,
        arn: &str,
    ) -> Result<&'a mut Profile, StageError> {
        if !profiles.contains_key(arn) {
            let key = meta_key(PROFILE, arn);
            let p = match state.get(Table::Meta, &key)? {
                Some(v) => {
                    grantwatch_core::stage::decode_json::<Profile>(&grantwatch_state::keys::DETECT_PROFILE, &key, &v)?
                }
                None => Profile::default(),
            };
            profiles.insert(arn.to_string(), p);
        }
        // Inserted just above when absent.
        Ok(profiles.entry(arn.to_string()).or_default())
    }

    /// The caller guarantees every event reaches the stage once (see `deduplicated_upstream`): the
    /// embedded pipeline, whose usage stage already drops re-deliveries and commits its seen keys in
    /// the same batch as this stage's state. Saves a state lookup and a key write per event.
    pub fn trust_upstream_dedup(&mut self) {
        self.deduplicated_upstream = true;
    }

    /// The caller hands each [`GrantNotice`] to the grantee's stage ([`Self::apply_grant`]); granting
    /// events then no longer record grants themselves.
    pub fn route_grants(&mut self) {
        self.grants_routed = true;
    }

    /// Remembers a grant on its grantee (once per granting event, whatever the re-deliveries).
    pub fn apply_grant(&mut self, notice: GrantNotice, state: &dyn StateRead) -> Result<(), StageError> {
        let GrantNotice { grantee, pending, seen } = notice;
        if self.seen.contains(&seen) || self.in_flight.contains(&seen) || state.get(Table::Seen, &seen)?.is_some() {
            return Ok(());
        }
        self.seen.insert(seen);
        self.record_grant(grantee, pending, state)
    }

    fn record_grant(&mut self, grantee: String, pending: Pending, state: &dyn StateRead) -> Result<(), StageError> {
        let p = Self::profile(&mut self.profiles, state, &grantee)?;
        p.grants.push(pending);
        if p.grants.len() > PENDING_MAX {
            p.grants.remove(0);
        }
        self.dirty_profiles.insert(grantee);
        Ok(())
    }

    fn already_seen(&mut self, ev: &Event, state: &dyn StateRead) -> Result<bool, StageError> {
        if self.deduplicated_upstream {
            return Ok(false);
        }
        let key = detect_seen_key(ev);
        if self.seen.contains(&key) || self.in_flight.contains(&key) || state.get(Table::Seen, &key)?.is_some() {
            return Ok(true);
        }
        self.seen.insert(key);
        Ok(false)
    }

    fn on_event(&mut self, ev: &Event, cx: &mut Cx<'_, DetectionFinding>) -> Result<(), StageError> {
        if self.already_seen(ev, cx.state)? {
            self.counts.duplicates += 1;
            return Ok(());
        }
        self.counts.events += 1;
        let request = ev.request.as_ref().and_then(|r| r.parse());
        let response = ev.response.as_ref().and_then(|r| r.parse());
        let subject = Subject::of(ev);
        // The profile must be at hand before any analytic raises (established behavior lives there).
        Self::profile(&mut self.profiles, cx.state, &ev.actor.uid)?;

        // Stateless rules.
        let mut hits = Vec::new();
        rules::single_event_rules(ev, request.as_ref(), response.as_ref(), &mut hits);
        let mut sigma_hits = Vec::new();
        self.det.sigma.matching(ev, &mut sigma_hits);
        for hit in hits {
            let evidence = hit.matched.iter().map(|(k, v)| field_evidence(k, v)).collect();
            let desc = describe_call(&hit.rule.info().title, ev, &hit);
            self.raise_on(hit.rule, &subject, ev, evidence, desc, cx)?;
        }
        for i in sigma_hits {
            let Some(rule) = self.det.sigma.rules().get(i) else { continue };
            let id = sigma_id(&rule.id);
            let desc = format!(
                "Sigma rule \"{}\" matched {}:{} by {}.",
                rule.title,
                short(&ev.api.service),
                ev.api.operation,
                subject.display()
            );
            let evidence =
                vec![field_evidence("eventName", &ev.api.operation), field_evidence("eventSource", &ev.api.service)];
            self.raise(&id, &subject, ev.time, Some(ev.region.clone()), vec![related(ev)], evidence, desc, cx)?;
        }

        // Grants are remembered on the grantee (same account, by name), whichever identity made them.
        if !self.grants_routed
            && let Some((target, what)) = rules::grant_target(ev, request.as_ref())
        {
            let arn = format!("arn:aws:iam::{}:{target}", ev.account_uid);
            self.record_grant(arn, Pending { what, event: related(ev), by: ev.actor.uid.clone() }, cx.state)?;
        }

        // AWS services acting for themselves have no behavior of their own to learn.
        if ev.actor.kind == IdentityKind::Service {
            return Ok(());
        }
        let passed = rules::passed_role(ev, request.as_ref());
        let (lookback, min_history) = (self.settings().first_time_lookback_days, self.settings().min_history_days);
        let this_hour = hour_start(ev.time.millis());

        // Close the identity's previous hour if this event starts a later one.
        let profile = Self::profile(&mut self.profiles, cx.state, &ev.actor.uid)?;
        let closing = match &profile.window {
            Some(w) if w.start_ms() < this_hour => profile.window.take(),
            _ => None,
        };
        if let Some(w) = closing {
            self.window_closed(&ev.actor.uid, w, cx)?;
        }

        let profile = Self::profile(&mut self.profiles, cx.state, &ev.actor.uid)?;
        profile.kind = Some(ev.actor.kind);
        profile.name = ev.actor.name.clone();
        profile.account = subject.account.clone();
        let novel = profile.history.observe(ev, passed.as_deref(), lookback, min_history);
        let novelty = Novelty {
            new_action: !novel.actions.is_empty() && novel.established,
            new_ip: novel.network && novel.established,
            new_region: novel.region && novel.established,
            new_user_agent: novel.agent && novel.established,
            hour_share: novel.hour_share,
            weekday_share: novel.weekday_share,
            idle_days: novel.idle_days,
        };
        let mut opened = None;
        let window = profile.window.get_or_insert_with(|| {
            opened = Some(this_hour + HOUR_MS);
            HourWindow::new(this_hour)
        });
        // A late event for an hour already closed is counted in the current window.
        window.add(ev, &novelty);
        let grants = std::mem::take(&mut profile.grants);
        let steps = std::mem::take(&mut profile.steps);
        self.dirty_profiles.insert(ev.actor.uid.clone());
        if let Some(end) = opened {
            self.windows.insert((end, ev.actor.uid.clone()));
            self.window_changes.insert((end, ev.actor.uid.clone()), true);
        }

        let (grants, steps) = self.stateful_rules(ev, &subject, &novel, request.as_ref(), grants, steps, cx)?;
        let profile = Self::profile(&mut self.profiles, cx.state, &ev.actor.uid)?;
        profile.grants = grants;
        profile.steps = steps;
        Ok(())
    }

    /// The analytics that need the identity's past: first-time, dormancy, sequences, grants.
    #[allow(clippy::too_many_arguments)]
    fn stateful_rules(
        &mut self,
        ev: &Event,
        subject: &Subject,
        novel: &Novel,
        request: Option<&serde_json::Value>,
        mut grants: Vec<Pending>,
        mut steps: Vec<Pending>,
        cx: &mut Cx<'_, DetectionFinding>,
    ) -> Result<(Vec<Pending>, Vec<Pending>), StageError> {
        let t = ev.time.millis();
        let region = Some(ev.region.clone());
        if novel.established {
            let catalog = self.det.catalog.clone();
            let (mut high_risk, mut sensitive) = (Vec::new(), Vec::new());
            for a in &novel.actions {
                let Some(id) = catalog.lookup(a) else { continue };
                let tags = catalog.risk_tags(id);
                let level = catalog.access_level(id);
                if a == "iam:PassRole" {
                    // What a passed role is used for is the PassRole analytic's question.
                    continue;
                }
                // Permission changes that escalate or expose credentials (iam:AttachUserPolicy,
                // iam:CreateAccessKey, iam:UpdateAssumeRolePolicy...). Tagged Write or Read actions
                // (iam:PassRole, ecr:GetAuthorizationToken) are daily work for developers; the
                // PassRole analytic looks at what a passed role is used for.
                if level == AccessLevel::PermissionsManagement
                    && (tags.privilege_escalation || tags.credential_exposure)
                {
                    high_risk.push(a.clone());
                } else if matches!(level, AccessLevel::Write | AccessLevel::PermissionsManagement) {
                    sensitive.push(a.clone());
                }
            }
            for (rule, actions) in
                [(Builtin::HighRiskPermissionFirstUse, high_risk), (Builtin::FirstTimeAction, sensitive)]
            {
                if actions.is_empty() {
                    continue;
                }
                let desc = format!(
                    "{} used {} for the first time in {} days.",
                    subject.display(),
                    actions.join(", "),
                    self.settings().first_time_lookback_days
                );
                let evidence = actions.iter().map(|a| first_time_evidence("action", a)).collect();
                self.raise_on(rule, subject, ev, evidence, desc, cx)?;
            }
            let sensitive_resources: Vec<&String> = novel.resources.iter().filter(|r| sensitive_resource(r)).collect();
            if !sensitive_resources.is_empty() {
                let names: Vec<&str> = sensitive_resources.iter().map(|s| s.as_str()).collect();
                let desc = format!("{} accessed {} for the first time.", subject.display(), names.join(", "));
                let evidence = names.iter().map(|r| first_time_evidence("resource", r)).collect();
                self.raise_on(Builtin::FirstTimeResource, subject, ev, evidence, desc, cx)?;
            }
            if novel.region {
                let desc = format!("{} acted in region {} for the first time.", subject.display(), ev.region);
                let evidence = vec![first_time_evidence("region", &ev.region)];
                self.raise_on(Builtin::FirstTimeRegion, subject, ev, evidence, desc, cx)?;
            }
            if let Some(idle) = novel.idle_days
                && idle >= f64::from(self.settings().dormant_after_days)
            {
                let desc = format!("{} acted after {:.0} days without activity.", subject.display(), idle);
                let evidence = vec![Evidence {
                    name: "idle_days".into(),
                    value: idle,
                    baseline: Some(f64::from(self.settings().dormant_after_days)),
                    spread: None,
                    score: None,
                }];
                self.raise_on(Builtin::DormantIdentityActive, subject, ev, evidence, desc, cx)?;
            }
            if let Some(role) = &novel.passed_role {
                let desc = format!(
                    "{} passed role {role} to new compute ({}:{}) for the first time.",
                    subject.display(),
                    short(&ev.api.service),
                    ev.api.operation
                );
                let evidence = vec![first_time_evidence("passed_role", role)];
                self.raise_on(Builtin::PassRoleToCompute, subject, ev, evidence, desc, cx)?;
            }
        }

        if novel.established {
            self.bulk_reads(ev, subject, novel, cx)?;
        }

        // Policy version created, then made default, on the same policy within the sequence window.
        steps.retain(|s| t - s.event.time <= SEQUENCE_WINDOW_MS);
        if ev.status == grantwatch_types::Status::Success && ev.api.service == "iam.amazonaws.com" {
            let policy = request.and_then(|r| r.get("policyArn")).and_then(|v| v.as_str()).map(str::to_string);
            match (ev.api.operation.as_str(), policy) {
                ("CreatePolicyVersion", Some(p)) => {
                    steps.push(Pending { what: p, event: related(ev), by: String::new() });
                    if steps.len() > PENDING_MAX {
                        steps.remove(0);
                    }
                }
                ("SetDefaultPolicyVersion", Some(p)) => {
                    if let Some(at) = steps.iter().position(|s| s.what == p) {
                        let first = steps.remove(at);
                        let desc = format!(
                            "{} created a new version of {p} and made it the default {} minutes later.",
                            subject.display(),
                            (t - first.event.time) / 60_000
                        );
                        let evidence = vec![field_evidence("policyArn", &p)];
                        self.raise(
                            Builtin::PolicyVersionEscalation.id(),
                            subject,
                            ev.time,
                            region.clone(),
                            vec![first.event, related(ev)],
                            evidence,
                            desc,
                            cx,
                        )?;
                    }
                }
                _ => {}
            }
        }

        // A permission granted to this identity, and used for the first time, within minutes.
        let within = i64::from(self.settings().granted_used_within_minutes) * 60_000;
        // A grant to oneself is the self-privilege-grant analytic's, not this one's.
        grants.retain(|g| t - g.event.time <= within && t >= g.event.time && g.by != ev.actor.uid);
        if !novel.actions.is_empty()
            && ev.status == grantwatch_types::Status::Success
            && let Some(g) = grants.first().cloned()
            && g.event.uid != ev.uid
        {
            grants.remove(0);
            let desc = format!(
                "{} was granted {} and used {} for the first time {} minutes later.",
                subject.display(),
                g.what,
                novel.actions.join(", "),
                (t - g.event.time) / 60_000
            );
            let evidence = vec![
                field_evidence("granted", &g.what),
                Evidence {
                    name: "minutes_between_grant_and_use".into(),
                    value: ((t - g.event.time) as f64 / 60_000.0).round(),
                    baseline: Some(f64::from(self.settings().granted_used_within_minutes)),
                    spread: None,
                    score: None,
                },
            ];
            self.raise(
                Builtin::GrantedAndUsed.id(),
                subject,
                ev.time,
                region,
                vec![g.event, related(ev)],
                evidence,
                desc,
                cx,
            )?;
        }
        Ok((grants, steps))
    }

    /// Many reads, within an hour, from data stores the identity had never read (in the lookback):
    /// collection before exfiltration, or the exfiltration itself.
    fn bulk_reads(
        &mut self,
        ev: &Event,
        subject: &Subject,
        novel: &Novel,
        cx: &mut Cx<'_, DetectionFinding>,
    ) -> Result<(), StageError> {
        let hour = hour_start(ev.time.millis());
        let profile = Self::profile(&mut self.profiles, cx.state, &ev.actor.uid)?;
        let fresh = &mut profile.fresh;
        if fresh.hour_ms != hour {
            *fresh = FreshData { hour_ms: hour, ..FreshData::default() };
        }
        for r in novel.resources.iter().filter(|r| data_store(r)) {
            if fresh.stores.len() < 16 && !fresh.stores.contains(r) {
                fresh.stores.push(r.clone());
            }
        }
        let reads_fresh = ev.read_only == Some(true)
            && ev.resources.iter().any(|r| fresh.stores.iter().any(|s| s == crate::history::resource_key(r)));
        if !reads_fresh {
            return Ok(());
        }
        fresh.reads += 1;
        if fresh.events.len() < MAX_EVENTS {
            fresh.events.push(related(ev));
        }
        if fresh.reads < BULK_READS || fresh.alerted {
            return Ok(());
        }
        fresh.alerted = true;
        let (stores, events, reads) = (fresh.stores.join(", "), fresh.events.clone(), fresh.reads);
        let desc = format!(
            "{} made {reads} reads within the hour from data it had never read before: {stores}.",
            subject.display()
        );
        let evidence = vec![Evidence {
            name: "reads_from_new_data_stores_per_hour".into(),
            value: f64::from(reads),
            baseline: Some(0.0),
            spread: None,
            score: None,
        }];
        self.raise(Builtin::BulkReadNewData.id(), subject, ev.time, Some(ev.region.clone()), events, evidence, desc, cx)
    }

    /// An identity-hour is over: score it (or keep it for training).
    fn window_closed(&mut self, arn: &str, w: HourWindow, cx: &mut Cx<'_, DetectionFinding>) -> Result<(), StageError> {
        let end = w.end_ms();
        if self.windows.remove(&(end, arn.to_string())) {
            self.window_changes.insert((end, arn.to_string()), false);
        }
        let features = w.features();
        let profile = Self::profile(&mut self.profiles, cx.state, arn)?;
        // The profile before this window: the window itself is what is being judged.
        let running = (profile.running.windows() > 0).then(|| *profile.running.mean());
        profile.running.add(&features);
        let subject = Subject {
            uid: arn.to_string(),
            name: profile.name.clone(),
            kind: profile.kind.unwrap_or(IdentityKind::External),
            account: profile.account.clone(),
            cloud: Cloud::Aws,
        };
        self.dirty_profiles.insert(arn.to_string());
        if let Some(c) = &mut self.collect {
            c.push(TrainingWindow { identity: arn.to_string(), start_ms: w.start_ms(), features });
            return Ok(());
        }
        let det = self.det.clone();
        let Some(model) = &det.model else { return Ok(()) };
        self.counts.windows_scored += 1;
        let verdict = model.score(arn, &features, running.as_ref());
        if !verdict.anomalous {
            return Ok(());
        }
        let (rule, baseline) = match verdict.baseline {
            BaselineKind::Identity => (Builtin::ModelIdentity, "the identity's own history".to_string()),
            BaselineKind::PeerGroup(g) => (Builtin::ModelPeerGroup, format!("peer group {g}")),
        };
        let top: Vec<String> = verdict.evidence.iter().take(3).map(|e| e.name.clone()).collect();
        let desc = format!(
            "{} behaved unusually in the hour from {} compared with {baseline} (score {:.1}, threshold {:.1}; most unusual: {}).",
            subject.display(),
            EventTime(w.start_ms()),
            verdict.score,
            verdict.threshold,
            top.join(", ")
        );
        let events = w
            .event_ids()
            .iter()
            .take(MAX_EVENTS)
            .map(|id| RelatedEvent { uid: id.clone(), time: w.start_ms(), kind: "hour-window".into() })
            .collect();
        let mut evidence = verdict.evidence;
        evidence.push(Evidence {
            name: "anomaly_score".into(),
            value: verdict.score,
            baseline: Some(verdict.threshold),
            spread: None,
            score: Some(verdict.score / verdict.threshold.max(f64::EPSILON)),
        });
        self.raise(rule.id(), &subject, EventTime(end - 1), None, events, evidence, desc, cx)
    }

    fn on_pci(&mut self, u: &PciUpdate, cx: &mut Cx<'_, DetectionFinding>) -> Result<(), StageError> {
        let profile = Self::profile(&mut self.profiles, cx.state, &u.arn)?;
        let (prev_pci, prev_super) = (profile.pci, profile.super_identity);
        let is_super = u.status.contains(&StatusFlag::SuperIdentity);
        profile.pci = Some(u.pci.score);
        profile.super_identity = Some(is_super);
        self.dirty_profiles.insert(u.arn.clone());
        let subject = Subject {
            uid: u.arn.clone(),
            name: profile.name.clone(),
            kind: u.kind,
            account: u.account.clone(),
            cloud: Cloud::Aws,
        };
        let pci_evidence = |prev: Option<u8>| Evidence {
            name: "pci".into(),
            value: f64::from(u.pci.score),
            baseline: prev.map(f64::from),
            spread: None,
            score: prev.map(|p| f64::from(u.pci.score) - f64::from(p)),
        };
        // Only a transition counts: an identity already super in its first update is a Discover finding
        // (super identity), not news. Both analytics depend on the sequence of updates alone, so they
        // do not depend on how the PCI and event topics interleave.
        if is_super && prev_super == Some(false) {
            let desc = format!(
                "{} became a super identity (can do nearly everything, or grant itself anything) in account {}.",
                subject.display(),
                u.account
            );
            self.raise(
                Builtin::NewSuperIdentity.id(),
                &subject,
                u.as_of,
                None,
                vec![],
                vec![pci_evidence(prev_pci)],
                desc,
                cx,
            )?;
        }
        if let Some(p) = prev_pci
            && u.pci.score >= p.saturating_add(self.settings().pci_rise_points)
        {
            let desc = format!("{}'s Permission Creep Index rose from {p} to {}.", subject.display(), u.pci.score);
            self.raise(Builtin::PciRise.id(), &subject, u.as_of, None, vec![], vec![pci_evidence(prev_pci)], desc, cx)?;
        }
        Ok(())
    }

    /// Raises an alert of a built-in analytic triggered by the single event `ev`.
    fn raise_on(
        &mut self,
        rule: Builtin,
        subject: &Subject,
        ev: &Event,
        evidence: Vec<Evidence>,
        desc: String,
        cx: &mut Cx<'_, DetectionFinding>,
    ) -> Result<(), StageError> {
        self.raise(rule.id(), subject, ev.time, Some(ev.region.clone()), vec![related(ev)], evidence, desc, cx)
    }

    /// Raises one alert of analytic `id`: configuration, explanation, incident grouping.
    #[allow(clippy::too_many_arguments)]
    fn raise(
        &mut self,
        id: &str,
        subject: &Subject,
        time: EventTime,
        region: Option<String>,
        events: Vec<RelatedEvent>,
        evidence: Vec<Evidence>,
        desc: String,
        // Alerts leave through `flush_drafts`; `cx` keeps every analytic's call site alike.
        _cx: &mut Cx<'_, DetectionFinding>,
    ) -> Result<(), StageError> {
        // Cloned (small, and alerts are rare): the checks below need the stage mutably.
        let Some((info, policy)) = self.policies.get(id).cloned() else { return Ok(()) };
        if policy.severity < self.det.config.detection.min_severity
            || self.det.config.allowlisted(&subject.account, &subject.uid)
            || policy.allows(&subject.account, &subject.uid)
        {
            return Ok(());
        }
        // Established behavior: the identity triggered this analytic on an earlier day in the lookback.
        let day = crate::history::day_of(time.millis());
        let lookback = self.det.config.detection.first_time_lookback_days as i32;
        let suppress = policy.suppress_established;
        if let Some(profile) = self.profiles.get_mut(&subject.uid) {
            let (first, last) = match profile.triggered.get(id) {
                // Lapsed (not seen within the lookback): it starts over.
                Some(&(first, last)) if day - last <= lookback => (first.min(day), last.max(day)),
                _ => (day, day),
            };
            profile.triggered.insert(id.to_string(), (first, last));
            self.dirty_profiles.insert(subject.uid.clone());
            if suppress && first < day {
                self.counts.established += 1;
                return Ok(());
            }
        }
        self.drafts.push(Draft { info, policy, subject: subject.clone(), time, region, events, evidence, desc });
        Ok(())
    }

    /// Turns the drafts of the last input into alerts. Analytics that fired on the same triggering
    /// event become one alert: the most severe names it, the others are listed with their evidence
    /// (`explanation.also_matched`). One suspicious call is one thing for an analyst to look at.
    fn flush_drafts(&mut self, cx: &mut Cx<'_, DetectionFinding>) {
        let mut drafts = std::mem::take(&mut self.drafts);
        while !drafts.is_empty() {
            let trigger = |d: &Draft| (d.subject.uid.clone(), d.events.first().map(|e| e.uid.clone()));
            let first = trigger(&drafts[0]);
            let (group, rest): (Vec<Draft>, Vec<Draft>) =
                drafts.into_iter().partition(|d| first.1.is_some() && trigger(d) == first);
            drafts = rest;
            let mut group = if group.is_empty() {
                // No triggering event (PCI and model analytics): alone.
                vec![drafts.remove(0)]
            } else {
                group
            };
            let top = group
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.policy.severity.cmp(&b.1.policy.severity).then(b.0.cmp(&a.0)))
                .map_or(0, |(i, _)| i);
            let primary = group.remove(top);
            self.emit(primary, group, cx);
        }
    }

    fn emit(&mut self, d: Draft, also: Vec<Draft>, cx: &mut Cx<'_, DetectionFinding>) {
        let id = d.info.id.as_str();
        let key = format!("{id}\0{}", d.subject.uid);
        let uid_src = format!("{key}\0{}\0{}", d.time.millis(), d.events.first().map_or("", |e| e.uid.as_str()));
        let pci = self.profiles.get(&d.subject.uid).and_then(|p| p.pci);
        let mut unmapped = serde_json::Map::new();
        if !d.info.technique.is_empty() {
            unmapped.insert("mitre_attack".into(), d.info.technique.clone().into());
        }
        let also_matched: Vec<serde_json::Value> = also
            .iter()
            .map(|a| {
                serde_json::json!({
                    "analytic": a.info.id,
                    "title": a.info.title,
                    "severity": a.policy.severity,
                    "desc": a.desc,
                    "evidence": a.evidence,
                })
            })
            .collect();
        let mut explanation = serde_json::json!({
            "analytic": id,
            "evidence": d.evidence,
            "identity_pci": pci,
        });
        if !also_matched.is_empty() {
            explanation["also_matched"] = also_matched.into();
        }
        unmapped.insert("explanation".into(), explanation);
        let mut types = Vec::new();
        for t in std::iter::once(&d.info.technique).chain(also.iter().map(|a| &a.info.technique)) {
            let t = format!("MITRE ATT&CK {t}");
            if !t.ends_with(' ') && !types.contains(&t) {
                types.push(t);
            }
        }
        let mut events = d.events;
        for e in also.into_iter().flat_map(|a| a.events) {
            if events.len() < MAX_EVENTS && !events.iter().any(|x| x.uid == e.uid) {
                events.push(e);
            }
        }
        let finding = DetectionFinding::new(FindingSpec {
            uid: format!("{:032x}", xxhash_rust::xxh3::xxh3_128(uid_src.as_bytes())),
            title: d.info.title.clone(),
            desc: d.desc,
            analytic_uid: id.to_string(),
            analytic_name: d.info.title.clone(),
            analytic_kind: d.info.kind,
            types,
            severity: d.policy.severity,
            time: d.time,
            cloud: d.subject.cloud,
            account: d.subject.account.clone(),
            region: d.region,
            actor_uid: d.subject.uid.clone(),
            actor_name: d.subject.name.clone(),
            actor_kind: d.subject.kind,
            related_events: events,
            unmapped,
        });
        let time = d.time;
        let window_ms = d.policy.incident_window_ms;
        if let Some(open) = self.incidents.get_mut(&key) {
            if time.millis() <= open.expires_ms() {
                self.expiries.remove(&(open.expires_ms(), key.clone()));
                open.repeat(&finding);
                self.expiries.insert((open.expires_ms(), key.clone()));
                self.dirty_incidents.insert(key);
                self.counts.repeats += 1;
                return;
            }
            self.close_incident(&key, cx);
        }
        self.counts.alerts += 1;
        let inc = Incident::open(finding.clone(), window_ms);
        self.expiries.insert((inc.expires_ms(), key.clone()));
        self.incidents.insert(key.clone(), inc);
        self.dirty_incidents.insert(key);
        cx.out.push(finding);
    }

    fn close_incident(&mut self, key: &str, cx: &mut Cx<'_, DetectionFinding>) {
        if let Some(inc) = self.incidents.remove(key) {
            self.expiries.remove(&(inc.expires_ms(), key.to_string()));
            self.dirty_incidents.remove(key);
            self.closed_incidents.push(key.to_string());
            if let Some(update) = inc.close() {
                cx.out.push(update);
            }
        }
    }
}

impl Stage for DetectStage {
    type In = DetectInput;
    type Out = DetectionFinding;

    fn process(&mut self, input: &DetectInput, cx: &mut Cx<'_, DetectionFinding>) -> Result<(), StageError> {
        let result = match input {
            DetectInput::Event(ev) => self.on_event(ev, cx),
            DetectInput::Pci(u) => self.on_pci(u, cx),
        };
        self.flush_drafts(cx);
        result
    }

    fn on_watermark(&mut self, watermark: EventTime, cx: &mut Cx<'_, DetectionFinding>) -> Result<(), StageError> {
        let w = watermark.millis();
        while self.windows.first().is_some_and(|(end, _)| *end <= w) {
            // Cloned only when due: this runs on every watermark tick.
            let Some((end, arn)) = self.windows.first().cloned() else { break };
            let profile = Self::profile(&mut self.profiles, cx.state, &arn)?;
            match profile.window.take() {
                Some(win) if win.end_ms() == end => self.window_closed(&arn, win, cx)?,
                other => {
                    // The index is stale (the window closed another way): drop the entry.
                    profile.window = other;
                    self.windows.remove(&(end, arn.clone()));
                    self.window_changes.insert((end, arn), false);
                }
            }
        }
        while self.expiries.first().is_some_and(|(expiry, _)| *expiry < w) {
            let Some((_, key)) = self.expiries.first().cloned() else { break };
            self.close_incident(&key, cx);
        }
        self.flush_drafts(cx);
        Ok(())
    }

    fn snapshot(&mut self, batch: &mut WriteBatch) -> Result<(), StageError> {
        let mut keys: Vec<SeenKey> = self.seen.drain().collect();
        keys.sort_unstable();
        for k in &keys {
            batch.put(Table::Seen, k.to_vec(), Vec::new());
        }
        self.in_flight.extend(keys);
        for arn in self.dirty_profiles.drain() {
            if let Some(p) = self.profiles.get(&arn)
                && let Ok(v) = serde_json::to_vec(p)
            {
                batch.put(Table::Meta, meta_key(PROFILE, &arn), v);
            }
        }
        for ((end, arn), open) in self.window_changes.drain() {
            let mut k = WINDOW.to_vec();
            k.extend_from_slice(&end.to_be_bytes());
            k.extend_from_slice(arn.as_bytes());
            if open {
                batch.put(Table::Meta, k, Vec::new());
            } else {
                batch.delete(Table::Meta, k);
            }
        }
        for key in self.closed_incidents.drain(..) {
            if !self.incidents.contains_key(&key) {
                batch.delete(Table::Meta, meta_key(INCIDENT, &key));
            }
        }
        for key in self.dirty_incidents.drain() {
            if let Some(inc) = self.incidents.get(&key)
                && let Ok(v) = serde_json::to_vec(inc)
            {
                batch.put(Table::Meta, meta_key(INCIDENT, &key), v);
            }
        }
        Ok(())
    }

    fn committed(&mut self) {
        self.in_flight.clear();
        if self.profiles.len() > PROFILE_CACHE_MAX {
            // Every profile is clean right after a snapshot: state has them all.
            let dirty = &self.dirty_profiles;
            self.profiles.retain(|k, _| dirty.contains(k));
        }
    }

    fn pending(&self) -> usize {
        self.seen.len() + self.dirty_profiles.len() + self.dirty_incidents.len()
    }
}

/// The identity an alert is about.
#[derive(Debug, Clone)]
struct Subject {
    uid: String,
    name: Option<String>,
    kind: IdentityKind,
    account: String,
    cloud: Cloud,
}

impl Subject {
    fn of(ev: &Event) -> Self {
        Subject {
            uid: ev.actor.uid.clone(),
            name: ev.actor.name.clone(),
            kind: ev.actor.kind,
            account: ev.actor.account_uid.clone().unwrap_or_else(|| ev.account_uid.clone()),
            cloud: ev.cloud,
        }
    }

    fn display(&self) -> &str {
        self.name.as_deref().filter(|n| !n.is_empty()).unwrap_or(&self.uid)
    }
}

fn meta_key(prefix: &[u8], id: &str) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(id.as_bytes());
    k
}

/// Like usage's seen keys (the same notion of "same event"), but hashed with another seed: the file
/// runner keeps usage and detection in one store, and an event counted by one must not look processed to
/// the other.
fn detect_seen_key(ev: &Event) -> SeenKey {
    grantwatch_core::usage::event_seen_key_with_seed(ev, grantwatch_state::keys::SEEN_SEED_DETECT)
}

fn related(ev: &Event) -> RelatedEvent {
    RelatedEvent {
        uid: ev.uid.clone(),
        time: ev.time.millis(),
        kind: format!("{}:{}", ev.api.service, ev.api.operation),
    }
}

fn short(service: &str) -> &str {
    service.trim_end_matches(".amazonaws.com")
}

/// Evidence naming a matched field (the value is in the name: rules match strings, not numbers).
fn field_evidence(name: &str, value: &str) -> Evidence {
    Evidence { name: format!("{name}={value}"), value: 1.0, baseline: None, spread: None, score: None }
}

/// Evidence of a first-time item: seen now (1), never in the lookback (baseline 0).
fn first_time_evidence(kind: &str, item: &str) -> Evidence {
    Evidence { name: format!("first_{kind}={item}"), value: 1.0, baseline: Some(0.0), spread: None, score: None }
}

fn describe_call(title: &str, ev: &Event, hit: &RuleHit) -> String {
    let who = ev.actor.name.as_deref().unwrap_or(&ev.actor.uid);
    let from = ev.src_ip.as_deref().map(|ip| format!(" from {ip}")).unwrap_or_default();
    let detail: Vec<String> = hit
        .matched
        .iter()
        .filter(|(k, _)| k != "eventName" && k != "eventSource")
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    let detail = if detail.is_empty() { String::new() } else { format!(" ({})", detail.join("; ")) };
    format!(
        "{title}: {who} called {}:{} in account {} ({}){from}{detail}.",
        short(&ev.api.service),
        ev.api.operation,
        ev.account_uid,
        ev.region
    )
}

/// Resources that hold data in bulk (objects, items, rows).
fn data_store(arn: &str) -> bool {
    ["arn:aws:s3:::", ":dynamodb:", ":rds:"].iter().any(|p| arn.contains(p))
}

/// Resources whose first access is worth an analyst's look: data stores and secrets.
fn sensitive_resource(arn: &str) -> bool {
    ["arn:aws:s3:::", ":secretsmanager:", ":kms:", ":ssm:", ":dynamodb:", ":rds:"].iter().any(|p| arn.contains(p))
}

/// `attack.t1562.008` → `T1562.008`.
fn technique_of(tags: &[String]) -> String {
    tags.iter()
        .filter_map(|t| t.strip_prefix("attack.t"))
        .find(|t| t.starts_with(|c: char| c.is_ascii_digit()))
        .map(|t| format!("T{}", t.to_uppercase()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use grantwatch_core::testing::{ALICE, event};
    use grantwatch_state::{MemStore, StateStore};
    use grantwatch_types::{RawJson, Severity, Status};

    const T0: i64 = 1_767_571_200_000; // 2026-01-05T00:00:00Z, a Monday
    const MIN: i64 = 60_000;
    const DAY: i64 = 24 * HOUR_MS;

    fn detection(config: RulesConfig) -> Arc<Detection> {
        Arc::new(Detection {
            catalog: Arc::new(Catalog::aws().unwrap()),
            config,
            sigma: SigmaSet::load(&[]).0,
            model: None,
        })
    }

    fn call(uid: &str, at: i64, service: &str, op: &str, action: &str, request: Option<&str>) -> DetectInput {
        let mut e = event(uid, EventTime(at));
        e.api = grantwatch_types::Api { service: service.into(), operation: op.into() };
        e.actions = vec![action.into()];
        e.read_only = Some(false);
        e.request = request.and_then(RawJson::from_text);
        e.src_ip = Some("198.51.100.7".into());
        DetectInput::Event(Box::new(e))
    }

    fn by(mut input: DetectInput, arn: &str, name: &str) -> DetectInput {
        if let DetectInput::Event(e) = &mut input {
            e.actor.uid = arn.into();
            e.actor.name = Some(name.into());
        }
        input
    }

    /// Offers inputs with the watermark at each event's time, as the runners do.
    fn feed(stage: &mut DetectStage, store: &MemStore, inputs: Vec<DetectInput>) -> Vec<DetectionFinding> {
        let mut out = Vec::new();
        for i in inputs {
            let t = match &i {
                DetectInput::Event(e) => Some(e.time),
                DetectInput::Pci(_) => None,
            };
            stage.process(&i, &mut Cx { state: store, out: &mut out }).unwrap();
            if let Some(t) = t {
                stage.on_watermark(t, &mut Cx { state: store, out: &mut out }).unwrap();
            }
        }
        out
    }

    fn commit(stage: &mut DetectStage, store: &MemStore) {
        let mut batch = WriteBatch::new();
        stage.snapshot(&mut batch).unwrap();
        store.write(batch).unwrap();
        stage.committed();
    }

    fn analytics(out: &[DetectionFinding]) -> Vec<(&str, u8, u64)> {
        out.iter().map(|f| (f.finding_info.analytic.uid.as_str(), f.activity_id, f.count)).collect()
    }

    fn root(uid: &str, at: i64) -> DetectInput {
        let mut input = call(uid, at, "s3.amazonaws.com", "ListBuckets", "s3:ListAllMyBuckets", None);
        if let DetectInput::Event(e) = &mut input {
            e.actor.kind = IdentityKind::Root;
            e.actor.uid = "arn:aws:iam::111122223333:root".into();
        }
        input
    }

    #[test]
    fn repeats_become_one_incident_across_a_restart_and_duplicates_count_once() {
        let det = detection(RulesConfig::default());
        let store = MemStore::new();
        let mut stage = DetectStage::open(det.clone(), &store).unwrap();
        let out = feed(&mut stage, &store, vec![root("e1", T0), root("e1", T0)]);
        assert_eq!(analytics(&out), [("grantwatch/root-account-used", 1, 1)], "a duplicate raises nothing");
        let first_uid = out[0].finding_info.uid.clone();
        commit(&mut stage, &store);

        let mut stage = DetectStage::open(det.clone(), &store).unwrap();
        let out =
            feed(&mut stage, &store, vec![root("e1", T0), root("e2", T0 + HOUR_MS), root("e3", T0 + 2 * HOUR_MS)]);
        assert!(out.is_empty(), "repeats within the incident window only count: {:?}", analytics(&out));
        commit(&mut stage, &store);

        // A day after the last repeat the incident closes: one update, same uid, the final count.
        let mut stage = DetectStage::open(det, &store).unwrap();
        let out = feed(
            &mut stage,
            &store,
            vec![call("x", T0 + 27 * HOUR_MS, "s3.amazonaws.com", "GetObject", "s3:GetObject", None)],
        );
        assert_eq!(analytics(&out), [("grantwatch/root-account-used", 2, 3)]);
        assert_eq!(out[0].finding_info.uid, first_uid);
        let ids: Vec<&str> = out[0].finding_info.related_events.iter().map(|e| e.uid.as_str()).collect();
        assert_eq!(ids, ["e1", "e2", "e3"]);
    }

    #[test]
    fn sequences_and_grants_correlate_events_into_one_alert() {
        let store = MemStore::new();
        let mut stage = DetectStage::open(detection(RulesConfig::default()), &store).unwrap();
        let bob = "arn:aws:iam::111122223333:user/bob";
        let policy = r#"{"policyArn":"arn:aws:iam::111122223333:policy/app","policyDocument":"{}"}"#;
        let out = feed(
            &mut stage,
            &store,
            vec![
                by(
                    call("v1", T0, "iam.amazonaws.com", "CreatePolicyVersion", "iam:CreatePolicyVersion", Some(policy)),
                    bob,
                    "bob",
                ),
                by(
                    call(
                        "v2",
                        T0 + 10 * MIN,
                        "iam.amazonaws.com",
                        "SetDefaultPolicyVersion",
                        "iam:SetDefaultPolicyVersion",
                        Some(policy),
                    ),
                    bob,
                    "bob",
                ),
                // bob gives alice a policy; alice uses a permission she never used, five minutes later.
                by(
                    call(
                        "g1",
                        T0 + 20 * MIN,
                        "iam.amazonaws.com",
                        "AttachUserPolicy",
                        "iam:AttachUserPolicy",
                        Some(r#"{"userName":"alice","policyArn":"arn:aws:iam::aws:policy/AdministratorAccess"}"#),
                    ),
                    bob,
                    "bob",
                ),
                call(
                    "u1",
                    T0 + 25 * MIN,
                    "iam.amazonaws.com",
                    "CreateUser",
                    "iam:CreateUser",
                    Some(r#"{"userName":"mallory"}"#),
                ),
            ],
        );
        let got: Vec<(&str, Vec<&str>)> = out
            .iter()
            .map(|f| {
                (
                    f.finding_info.analytic.uid.as_str(),
                    f.finding_info.related_events.iter().map(|e| e.uid.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("grantwatch/privesc-policy-version", vec!["v1", "v2"]),
                ("grantwatch/granted-and-used", vec!["g1", "u1"]),
            ]
        );
        assert_eq!(out[1].actor.user.uid, ALICE);
        let explanation = &out[1].unmapped["explanation"];
        assert_eq!(explanation["evidence"][0]["name"], "granted=arn:aws:iam::aws:policy/AdministratorAccess");
        assert_eq!(explanation["evidence"][1]["value"], 5.0);
    }

    #[test]
    fn first_time_analytics_wait_for_an_established_history() {
        let store = MemStore::new();
        let mut stage = DetectStage::open(detection(RulesConfig::default()), &store).unwrap();
        let mut inputs = Vec::new();
        for d in 0..8 {
            inputs.push(call(
                &format!("d{d}"),
                T0 + d * DAY + 10 * HOUR_MS,
                "s3.amazonaws.com",
                "GetObject",
                "s3:GetObject",
                None,
            ));
        }
        let mut eu = call("eu", T0 + 8 * DAY + 11 * HOUR_MS, "s3.amazonaws.com", "GetObject", "s3:GetObject", None);
        if let DetectInput::Event(e) = &mut eu {
            e.region = "eu-west-1".into();
        }
        inputs.push(eu);
        let out = feed(&mut stage, &store, inputs);
        assert_eq!(analytics(&out), [("grantwatch/first-time-region", 1, 1)], "nothing before day 7 is 'first'");
        assert_eq!(out[0].cloud.region.as_deref(), Some("eu-west-1"));

        // Thirty days of silence, then a call: dormant identity active again.
        let out = feed(
            &mut stage,
            &store,
            vec![call("late", T0 + 40 * DAY, "s3.amazonaws.com", "GetObject", "s3:GetObject", None)],
        );
        assert!(analytics(&out).contains(&("grantwatch/dormant-identity-active", 1, 1)), "{:?}", analytics(&out));
    }

    #[test]
    fn configuration_disables_allowlists_and_reseverities() {
        let known = |id: &str| Builtin::ALL.iter().any(|b| b.id() == id);
        let cfg = RulesConfig::parse(
            "t.toml",
            r#"
            [rule."grantwatch/access-key-for-other-identity"]
            severity = "critical"
            [rule."grantwatch/resource-made-public"]
            allowlist.identities = ["arn:aws:iam::*:user/ali*"]
            [rule."grantwatch/root-account-used"]
            enabled = false
            "#,
            &known,
        )
        .unwrap();
        let store = MemStore::new();
        let mut stage = DetectStage::open(detection(cfg), &store).unwrap();
        let public = r#"{"bucketName":"b","bucketPolicy":{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject"}]}}"#;
        let out = feed(
            &mut stage,
            &store,
            vec![
                root("r", T0),
                call(
                    "k",
                    T0 + 1,
                    "iam.amazonaws.com",
                    "CreateAccessKey",
                    "iam:CreateAccessKey",
                    Some(r#"{"userName":"bob"}"#),
                ),
                call(
                    "own",
                    T0 + 2,
                    "iam.amazonaws.com",
                    "CreateAccessKey",
                    "iam:CreateAccessKey",
                    Some(r#"{"userName":"alice"}"#),
                ),
                call("p", T0 + 3, "s3.amazonaws.com", "PutBucketPolicy", "s3:PutBucketPolicy", Some(public)),
            ],
        );
        assert_eq!(analytics(&out), [("grantwatch/access-key-for-other-identity", 1, 1)]);
        assert_eq!(out[0].severity_id, Severity::Critical.id());

        // Without the allowlist, the public bucket policy alerts; a failed attempt does not.
        let store = MemStore::new();
        let mut stage = DetectStage::open(detection(RulesConfig::default()), &store).unwrap();
        let mut failed = call("p0", T0, "s3.amazonaws.com", "PutBucketPolicy", "s3:PutBucketPolicy", Some(public));
        if let DetectInput::Event(e) = &mut failed {
            e.status = Status::Failure;
            e.status_code = Some("AccessDenied".into());
        }
        let out = feed(
            &mut stage,
            &store,
            vec![failed, call("p1", T0 + 1, "s3.amazonaws.com", "PutBucketPolicy", "s3:PutBucketPolicy", Some(public))],
        );
        assert_eq!(analytics(&out), [("grantwatch/resource-made-public", 1, 1)]);
        assert!(out[0].finding_info.desc.contains("Principal"), "{}", out[0].finding_info.desc);
    }

    fn pci(score: u8, super_identity: bool) -> DetectInput {
        let mut u: PciUpdate =
            serde_json::from_str(include_str!("../../../schemas/examples/pci_update.example.json")).unwrap();
        u.arn = ALICE.into();
        u.pci.score = score;
        u.status = if super_identity { vec![StatusFlag::SuperIdentity] } else { vec![] };
        DetectInput::Pci(Box::new(u))
    }

    #[test]
    fn pci_updates_alert_on_transitions_only() {
        let store = MemStore::new();
        let mut stage = DetectStage::open(detection(RulesConfig::default()), &store).unwrap();
        assert!(feed(&mut stage, &store, vec![pci(90, true)]).is_empty(), "already super when first seen");
        let store = MemStore::new();
        let mut stage = DetectStage::open(detection(RulesConfig::default()), &store).unwrap();
        let out = feed(&mut stage, &store, vec![pci(20, false), pci(30, false), pci(70, true)]);
        assert_eq!(analytics(&out), [("grantwatch/new-super-identity", 1, 1), ("grantwatch/pci-rise", 1, 1)]);
        assert_eq!(out[1].unmapped["explanation"]["evidence"][0]["baseline"], 30.0);
        assert_eq!(out[1].unmapped["explanation"]["identity_pci"], 70);
    }

    #[test]
    fn established_behavior_is_not_alerted_again() {
        let store = MemStore::new();
        let mut stage = DetectStage::open(detection(RulesConfig::default()), &store).unwrap();
        let key = |uid: &str, at: i64| {
            call(uid, at, "iam.amazonaws.com", "CreateAccessKey", "iam:CreateAccessKey", Some(r#"{"userName":"svc"}"#))
        };
        let out = feed(
            &mut stage,
            &store,
            vec![key("k1", T0), key("k2", T0 + 2 * DAY), key("k3", T0 + 2 * DAY + 5), key("k4", T0 + 9 * DAY)],
        );
        assert_eq!(analytics(&out), [("grantwatch/access-key-for-other-identity", 1, 1)]);
        assert_eq!(stage.counts.established, 3);
        // Past the lookback (90 days) it is news again.
        let out = feed(&mut stage, &store, vec![key("k5", T0 + 100 * DAY)]);
        assert!(analytics(&out).contains(&("grantwatch/access-key-for-other-identity", 1, 1)), "{:?}", analytics(&out));
        // Root use is alerted every time (not learned), one incident per quiet period.
        let out = feed(&mut stage, &store, vec![root("r1", T0 + 10 * DAY), root("r2", T0 + 12 * DAY)]);
        assert_eq!(analytics(&out).iter().filter(|a| a.0 == "grantwatch/root-account-used" && a.1 == 1).count(), 2);
    }
}
