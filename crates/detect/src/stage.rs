//! The detection stage: events and PCI updates in, explained alerts out, grouped into incidents.
//!
//! The stage orchestrates and persists: what is alert-worthy is the `analytics` module's to decide,
//! and the findings are the `build` module's to write. Per event: the single-event and Sigma rules;
//! then, once [`History`](crate::history::History) has compared the event with the identity's past,
//! the stateful analytics. An event that starts a later hour first closes the identity's previous hour
//! window, which the trained models ([`ModelSet`]) score. A grant is recorded on its grantee
//! ([`GrantNotice`]). Per PCI update: the PCI transitions. Every alert an analytic raises goes through
//! `DetectStage::raise`, which applies the rule configuration and keeps what passes as a draft; at the
//! end of each input, `build` merges the drafts into OCSF Detection Findings and groups them into
//! incidents.
//!
//! Permissions on demand ([`OnDemandGrants`], fed by the access service's audit events): a call that
//! uses a grant within its window is expected (its actions and resources are no first-time news, an
//! entirely covered call neither a new region nor a return from dormancy nor part of the hour the
//! models score, and any alert it still raises names the grant); a use right after a grant ended, and
//! a grant to an on-demand identity that grantwatch did not make, are alerts.
//!
//! State (in [`Table::Meta`], JSON): one profile per identity (history, open hour window, PCI, pending
//! grants and sequence steps), open incidents, an index of open windows by end time so the
//! watermark can close windows of identities that went quiet, and the on-demand grants (every shard
//! and task holds all of them: a grant is no identity's alone). Events already processed are remembered
//! in [`Table::Seen`] by `(day, event id)`, so a re-delivered event changes nothing. The same stage
//! collects the training windows for `grantwatch train` (one code path for training and detection).

use std::collections::BTreeSet;
use std::sync::Arc;

use grantwatch_core::catalog::{ActionSet, Catalog};
use grantwatch_core::stage::{Cx, Stage, StageError};
use grantwatch_core::usage::SeenKey;
use grantwatch_state::{StateRead, Table, WriteBatch};

use grantwatch_types::{AccessAuditEvent, Cloud, DetectionFinding, Event, EventTime, IdentityKind, PciUpdate};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::analytics::{self, PENDING_MAX, Pending, Policies, Profile, Raised, sigma_id};
use crate::build::{self, Draft, OpenIncidents, Subject, related};
use crate::features::{HOUR_MS, HourWindow, Novelty, hour_start};
use crate::incident::Incident;
use crate::ml::{ModelSet, TrainingWindow};
use crate::ondemand::{OnDemandGrant, OnDemandGrants, OnDemandIdentity, PolicyContent};
use crate::rules::{self, Builtin, RulesConfig};
use crate::sigma::SigmaSet;

/// What an on-demand grant gave a call: its actions, whether it gave the whole call, and whether the
/// call was within the grant's window (else right after it).
struct Granted {
    actions: Vec<String>,
    whole: bool,
    within: bool,
}

/// Profiles kept in memory between snapshots; past this, clean ones are dropped after a commit.
const PROFILE_CACHE_MAX: usize = 50_000;

const PROFILE: &[u8] = grantwatch_state::keys::DETECT_PROFILE.prefix;
const INCIDENT: &[u8] = grantwatch_state::keys::DETECT_INCIDENT.prefix;
const WINDOW: &[u8] = grantwatch_state::keys::DETECT_WINDOW.prefix;
const ON_DEMAND: &grantwatch_state::keys::KeySpace = &grantwatch_state::keys::DETECT_ON_DEMAND;
const ON_DEMAND_IDENTITY: &grantwatch_state::keys::KeySpace = &grantwatch_state::keys::DETECT_ON_DEMAND_IDENTITY;

/// What the detector consumes.
#[derive(Debug, Clone)]
pub enum DetectInput {
    Event(Box<Event>),
    Pci(Box<PciUpdate>),
    /// A transition of an on-demand access request (the access service's audit event). Changes what
    /// later events are judged against; raises nothing itself.
    Access(Box<AccessAuditEvent>),
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
    /// Access audit events folded in (new or newer transitions of active grants).
    pub access_events: u64,
    /// Calls that used on-demand permissions within their grant's window (expected, not news).
    pub on_demand_uses: u64,
}

/// The detection stage.
pub struct DetectStage {
    det: Arc<Detection>,
    policies: Policies,
    profiles: FxHashMap<String, Profile>,
    dirty_profiles: FxHashSet<String>,
    /// Open hour windows by end time, and their changes since the last snapshot (true: opened).
    windows: BTreeSet<(i64, String)>,
    window_changes: FxHashMap<(i64, String), bool>,
    incidents: OpenIncidents,
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
    /// Permissions on demand: the grants, and what the AWS managed policies they name allow.
    on_demand: OnDemandGrants,
    managed: ManagedPolicies,
    /// The current event's id and the grant it uses within its window, if any: alerts it raises say so.
    using: Option<(String, serde_json::Value, String)>,
    pub counts: DetectCounts,
}

/// What AWS managed policies allow, from the documents `grantwatch-core` vendors (read once, when a
/// grant first names one). Customer managed policies are unknown to detection.
struct ManagedPolicies {
    catalog: Arc<Catalog>,
    vendored: Option<grantwatch_core::policy::Vendored>,
    sets: FxHashMap<String, Option<ActionSet>>,
}

/// Managed policies whose allowed actions are kept at once (grants name few distinct ones).
const MANAGED_CACHE_MAX: usize = 256;

impl PolicyContent for ManagedPolicies {
    fn allows(&mut self, policy_arn: &str, action: &str) -> Option<bool> {
        if !grantwatch_core::iam::is_aws_managed(policy_arn) {
            return None;
        }
        if !self.sets.contains_key(policy_arn) {
            if self.sets.len() >= MANAGED_CACHE_MAX {
                self.sets.clear();
            }
            let vendored = self.vendored.get_or_insert_with(grantwatch_core::policy::Vendored::load);
            let set = vendored.document(policy_arn).map(|doc| {
                let g = grantwatch_core::policy::evaluate_policies(&self.catalog, &[&doc], None);
                let mut set = g.granted;
                set.union_with(&g.conditional);
                set
            });
            self.sets.insert(policy_arn.to_string(), set);
        }
        let set = self.sets.get(policy_arn)?.as_ref()?;
        Some(self.catalog.lookup(action).is_some_and(|id| set.contains(id)))
    }
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
        let routine: Vec<String> = det
            .model
            .as_ref()
            .map(|m| m.manifest().routine.iter().map(|r| r.analytic.clone()).collect())
            .unwrap_or_default();
        let policies = Policies::new(&det.config, &det.sigma, &routine);
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
        let mut incidents = OpenIncidents::default();
        state.scan_prefix(Table::Meta, INCIDENT, &mut |k, v| {
            match grantwatch_core::stage::decode_json::<Incident>(&grantwatch_state::keys::DETECT_INCIDENT, k, v) {
                Ok(inc) => {
                    let key = String::from_utf8_lossy(k.get(INCIDENT.len()..).unwrap_or_default()).into_owned();
                    // Keyed "<analytic>\0<subject ARN>".
                    if owns(key.split_once('\0').map_or(key.as_str(), |(_, subject)| subject)) {
                        incidents.restore(key, inc);
                    }
                }
                Err(e) => corrupt = Some(e),
            }
            corrupt.is_none()
        })?;
        if let Some(e) = corrupt {
            return Err(e.into());
        }
        let on_demand = Self::restore_on_demand(&det, state)?;
        Ok(Self {
            managed: ManagedPolicies { catalog: det.catalog.clone(), vendored: None, sets: FxHashMap::default() },
            on_demand,
            using: None,
            det,
            policies,
            profiles: FxHashMap::default(),
            dirty_profiles: FxHashSet::default(),
            windows,
            window_changes: FxHashMap::default(),
            incidents,
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

    /// The on-demand grants kept in state (every shard holds all of them).
    fn restore_on_demand(det: &Detection, state: &dyn StateRead) -> Result<OnDemandGrants, StageError> {
        let mut grants = OnDemandGrants::new(det.config.detection.on_demand_limits());
        let mut corrupt = None;
        state.scan_prefix(Table::Meta, ON_DEMAND.prefix, &mut |k, v| {
            match grantwatch_core::stage::decode_json::<OnDemandGrant>(ON_DEMAND, k, v) {
                Ok(g) => grants.merge_grant(&g),
                Err(e) => corrupt = Some(e),
            }
            corrupt.is_none()
        })?;
        state.scan_prefix(Table::Meta, ON_DEMAND_IDENTITY.prefix, &mut |k, v| {
            match grantwatch_core::stage::decode_json::<OnDemandIdentity>(ON_DEMAND_IDENTITY, k, v) {
                Ok(seen) => {
                    let key = String::from_utf8_lossy(ON_DEMAND_IDENTITY.suffix_of(k).unwrap_or_default()).into_owned();
                    grants.merge_identity(&key, seen);
                }
                Err(e) => corrupt = Some(e),
            }
            corrupt.is_none()
        })?;
        if let Some(e) = corrupt {
            return Err(e.into());
        }
        grants.restored();
        Ok(grants)
    }

    /// Folds one transition of an on-demand request into the grants (idempotent: a transition seen
    /// before, or older than one seen, changes nothing).
    pub fn apply_access(&mut self, ev: &AccessAuditEvent) {
        if self.on_demand.apply(ev) == crate::ondemand::Applied::Changed {
            self.counts.access_events += 1;
        }
    }

    /// Folds in on-demand grants read elsewhere (`grantwatch analyze --access-log`: read once, handed
    /// to every shard).
    pub fn supply_on_demand(&mut self, grants: &OnDemandGrants) {
        self.on_demand.merge(grants);
    }

    /// The on-demand grants as the stage holds them.
    pub fn on_demand(&self) -> &OnDemandGrants {
        &self.on_demand
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
        self.using = None;
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

        // Permissions on demand, judged before anything else looks at the call.
        let expected = self.on_demand_analytics(ev, &subject, request.as_ref());

        for alert in analytics::single_event(&self.det.sigma, ev, &subject, request.as_ref(), response.as_ref()) {
            self.raise(alert);
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
        if ev.actor.kind != IdentityKind::Role {
            profile.human = ev.actor.human.clone();
        }
        profile.account = subject.account.clone();
        // What an on-demand grant gave is not news, and not learned as the identity's own: its history
        // sees the call without the granted actions (and, when the grant gave the whole call, without
        // the resources) it had not used outside a grant. The same after the grant ended: that use is
        // the after-expiry analytic's, and a habit only if it continues past its window.
        let whole = expected.as_ref().is_some_and(|g| g.whole && g.within);
        let novel = match &expected {
            None => profile.history.observe(ev, passed.as_deref(), lookback, min_history),
            Some(g) => {
                let own = profile.history.without_new(ev, &g.actions, whole, lookback);
                let mut novel = profile.history.observe(&own, passed.as_deref(), lookback, min_history);
                if whole {
                    // Where and when a granted call was made is the grant's business, not a new habit.
                    (novel.region, novel.network, novel.agent, novel.idle_days) = (false, false, false, None);
                }
                novel
            }
        };
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
        // A call wholly under an on-demand grant is not part of the hour the models judge.
        if !whole {
            let window = profile.window.get_or_insert_with(|| {
                opened = Some(this_hour + HOUR_MS);
                HourWindow::new(this_hour)
            });
            // A late event for an hour already closed is counted in the current window.
            window.add(ev, &novelty);
        }
        let settings = &self.det.config.detection;
        let raised = analytics::stateful(profile, &self.det.catalog, settings, ev, &subject, &novel, request.as_ref());
        self.dirty_profiles.insert(ev.actor.uid.clone());
        if let Some(end) = opened {
            self.windows.insert((end, ev.actor.uid.clone()));
            self.window_changes.insert((end, ev.actor.uid.clone()), true);
        }
        for alert in raised {
            self.raise(alert);
        }
        Ok(())
    }

    /// The on-demand analytics on `ev`: a use within a grant is remembered for the alerts the call
    /// raises; a use after one ended and a grant made outside grantwatch are raised. Returns what a
    /// grant gave the call, within its window or after it.
    fn on_demand_analytics(
        &mut self,
        ev: &Event,
        subject: &Subject,
        request: Option<&serde_json::Value>,
    ) -> Option<Granted> {
        if self.on_demand.is_empty() {
            return None;
        }
        let mut raised = Vec::new();
        let mut expected = None;
        if ev.actor.kind != IdentityKind::Service {
            if let Some(u) = self.on_demand.within(ev, &mut self.managed) {
                self.counts.on_demand_uses += 1;
                self.using = Some((ev.uid.clone(), u.grant.note(), u.grant.describe()));
                expected = Some(Granted { actions: u.actions, whole: u.whole, within: true });
            } else if let Some(u) = self.on_demand.after(ev, &mut self.managed)
                && let Some(profile) = self.profiles.get(&ev.actor.uid)
            {
                let settings = &self.det.config.detection;
                raised.extend(analytics::used_after_expiry(&u, &profile.history, settings, ev, subject));
                expected = Some(Granted { actions: u.actions, whole: u.whole, within: false });
            }
        }
        if let Some(o) = self.on_demand.outside_grant(ev, request) {
            raised.push(analytics::granted_outside(&o, ev, subject));
        }
        for alert in raised {
            self.raise(alert);
        }
        expected
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
            cloud: Cloud::of_uid(arn),
            human: profile.human.clone(),
        };
        self.dirty_profiles.insert(arn.to_string());
        if let Some(c) = &mut self.collect {
            c.push(TrainingWindow { identity: arn.to_string(), start_ms: w.start_ms(), features });
            return Ok(());
        }
        let Some(model) = &self.det.model else { return Ok(()) };
        self.counts.windows_scored += 1;
        if let Some(alert) = analytics::unusual_hour(model, &subject, &w, &features, running.as_ref()) {
            self.raise(alert);
        }
        Ok(())
    }

    fn on_pci(&mut self, u: &PciUpdate, cx: &mut Cx<'_, DetectionFinding>) -> Result<(), StageError> {
        let profile = Self::profile(&mut self.profiles, cx.state, &u.arn)?;
        let subject = Subject {
            uid: u.arn.clone(),
            name: profile.name.clone(),
            kind: u.kind,
            account: u.account.clone(),
            cloud: Cloud::of_uid(&u.arn),
            human: profile.human.clone(),
        };
        let raised = analytics::pci_transitions(profile, &self.det.config.detection, u, &subject);
        self.dirty_profiles.insert(u.arn.clone());
        for alert in raised {
            self.raise(alert);
        }
        Ok(())
    }

    /// Puts an alert an analytic raised through the rule configuration: enabled, severity, allowlists
    /// ([`Policies::admit`]), then established behavior (the identity triggered this analytic on an
    /// earlier day in the lookback, [`Profile::triggered_before`]). What passes waits in `drafts` for
    /// the end of the input.
    fn raise(&mut self, mut alert: Raised) {
        // An alert on a call made with on-demand permissions says so.
        if let Some((uid, note, describe)) = &self.using
            && alert.on_demand.is_none()
            && alert.events.first().is_some_and(|e| e.uid == *uid)
        {
            alert.on_demand = Some(note.clone());
            alert.desc = format!("{} The call was made under {describe}.", alert.desc);
        }
        let Some((info, policy)) = self.policies.admit(&self.det.config, &alert) else { return };
        let lookback = self.det.config.detection.first_time_lookback_days;
        if let Some(profile) = self.profiles.get_mut(&alert.subject.uid) {
            let established = profile.triggered_before(&alert.analytic, alert.time, lookback);
            self.dirty_profiles.insert(alert.subject.uid.clone());
            if policy.suppress_established && established {
                self.counts.established += 1;
                return;
            }
        }
        self.drafts.push(alert.draft(info, policy));
    }

    /// Turns the drafts of the last input into alerts, grouped into incidents.
    fn flush_drafts(&mut self, cx: &mut Cx<'_, DetectionFinding>) {
        let drafts = std::mem::take(&mut self.drafts);
        let profiles = &self.profiles;
        let pci = |uid: &str| profiles.get(uid).and_then(|p| p.pci);
        let emitted = build::emit(drafts, &pci, &mut self.incidents, cx.out);
        self.counts.alerts += emitted.alerts;
        self.counts.repeats += emitted.repeats;
    }
}

impl Stage for DetectStage {
    type In = DetectInput;
    type Out = DetectionFinding;

    fn process(&mut self, input: &DetectInput, cx: &mut Cx<'_, DetectionFinding>) -> Result<(), StageError> {
        let result = match input {
            DetectInput::Event(ev) => self.on_event(ev, cx),
            DetectInput::Pci(u) => self.on_pci(u, cx),
            DetectInput::Access(a) => {
                self.apply_access(a);
                Ok(())
            }
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
        self.incidents.close_expired(w, cx.out);
        self.on_demand.prune(w);
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
        let (grants, identities) = self.on_demand.take_changes();
        for (id, grant) in grants {
            match grant.map(serde_json::to_vec) {
                Some(Ok(v)) => batch.put(Table::Meta, ON_DEMAND.key_str(&id), v),
                Some(Err(_)) => {}
                None => batch.delete(Table::Meta, ON_DEMAND.key_str(&id)),
            }
        }
        for (key, seen) in identities {
            match seen.map(|s| serde_json::to_vec(&s)) {
                Some(Ok(v)) => batch.put(Table::Meta, ON_DEMAND_IDENTITY.key_str(&key), v),
                Some(Err(_)) => {}
                None => batch.delete(Table::Meta, ON_DEMAND_IDENTITY.key_str(&key)),
            }
        }
        let incidents = &mut self.incidents;
        for key in incidents.closed.drain(..) {
            if !incidents.by_key.contains_key(&key) {
                batch.delete(Table::Meta, meta_key(INCIDENT, &key));
            }
        }
        for key in incidents.dirty.drain() {
            if let Some(inc) = incidents.by_key.get(&key)
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
        self.seen.len() + self.dirty_profiles.len() + self.incidents.dirty.len() + self.on_demand.pending()
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

#[cfg(test)]
mod tests {
    use super::*;
    use grantwatch_core::testing::{ALICE, event};
    use grantwatch_state::{MemStore, StateStore};
    use grantwatch_types::{RawJson, Severity, Status, StatusFlag};

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
                DetectInput::Pci(_) | DetectInput::Access(_) => None,
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
    fn an_event_older_than_an_open_incident_by_more_than_its_window_is_an_alert_of_its_own() {
        let store = MemStore::new();
        let mut stage = DetectStage::open(detection(RulesConfig::default()), &store).unwrap();
        let years = 6 * 365 * 24 * HOUR_MS;
        let out = feed(&mut stage, &store, vec![root("new", T0)]);
        assert_eq!(analytics(&out), [("grantwatch/root-account-used", 1, 1)]);
        // Years older (a late re-delivery, a replayed archive): its own alert, at its own time; the
        // open incident neither absorbs it nor closes.
        let out = feed(&mut stage, &store, vec![root("old", T0 - years)]);
        assert_eq!(analytics(&out), [("grantwatch/root-account-used", 1, 1)], "{out:?}");
        assert_eq!(out[0].finding_info.first_seen_time, T0 - years);
        let ids: Vec<&str> = out[0].finding_info.related_events.iter().map(|e| e.uid.as_str()).collect();
        assert_eq!(ids, ["old"]);
        // Within the window before the first event, or after it: repeats of the open incident.
        let out = feed(&mut stage, &store, vec![root("before", T0 - HOUR_MS), root("after", T0 + HOUR_MS)]);
        assert!(out.is_empty(), "{:?}", analytics(&out));
        let out = feed(
            &mut stage,
            &store,
            vec![call("x", T0 + 27 * HOUR_MS, "s3.amazonaws.com", "GetObject", "s3:GetObject", None)],
        );
        assert_eq!(analytics(&out), [("grantwatch/root-account-used", 2, 3)]);
        let ids: Vec<&str> = out[0].finding_info.related_events.iter().map(|e| e.uid.as_str()).collect();
        assert_eq!(ids, ["new", "before", "after"]);
    }

    #[test]
    fn attaching_a_deny_only_policy_to_oneself_is_no_self_grant() {
        let store = MemStore::new();
        let mut stage = DetectStage::open(detection(RulesConfig::default()), &store).unwrap();
        let bob = "arn:aws:iam::111122223333:user/bob";
        let attach = |uid: &str, at: i64, arn: &str| {
            let request = format!(r#"{{"userName":"bob","policyArn":"{arn}"}}"#);
            by(
                call(uid, at, "iam.amazonaws.com", "AttachUserPolicy", "iam:AttachUserPolicy", Some(&request)),
                bob,
                "bob",
            )
        };
        let put = |uid: &str, at: i64, effect: &str| {
            let doc = format!(r#"{{\"Statement\":[{{\"Effect\":\"{effect}\",\"Action\":\"*\",\"Resource\":\"*\"}}]}}"#);
            let request = format!(r#"{{"userName":"bob","policyName":"p","policyDocument":"{doc}"}}"#);
            by(call(uid, at, "iam.amazonaws.com", "PutUserPolicy", "iam:PutUserPolicy", Some(&request)), bob, "bob")
        };
        let self_grants = |out: &[DetectionFinding]| {
            out.iter().filter(|f| f.finding_info.analytic.uid == "grantwatch/self-privilege-grant").count()
        };
        let quarantine = "arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV3";
        let out = feed(&mut stage, &store, vec![attach("q", T0, quarantine), put("d", T0 + 1, "Deny")]);
        assert_eq!(self_grants(&out), 0, "{:?}", analytics(&out));
        let out = feed(&mut stage, &store, vec![attach("a", T0 + 2, "arn:aws:iam::aws:policy/AdministratorAccess")]);
        assert_eq!(self_grants(&out), 1, "{:?}", analytics(&out));
        let store = MemStore::new();
        let mut stage = DetectStage::open(detection(RulesConfig::default()), &store).unwrap();
        let out = feed(&mut stage, &store, vec![put("p", T0, "Allow")]);
        assert_eq!(self_grants(&out), 1, "{:?}", analytics(&out));
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
        // A first region from the usual network is a deployment, not news ...
        let mut ohio = call("oh", T0 + 8 * DAY + 11 * HOUR_MS, "s3.amazonaws.com", "GetObject", "s3:GetObject", None);
        if let DetectInput::Event(e) = &mut ohio {
            e.region = "us-east-2".into();
        }
        inputs.push(ohio);
        // ... from a network the identity never used, it is.
        let mut eu = call("eu", T0 + 8 * DAY + 12 * HOUR_MS, "s3.amazonaws.com", "GetObject", "s3:GetObject", None);
        if let DetectInput::Event(e) = &mut eu {
            e.region = "eu-west-1".into();
            e.src_ip = Some("203.0.113.9".into());
        }
        inputs.push(eu);
        let out = feed(&mut stage, &store, inputs);
        assert_eq!(analytics(&out), [("grantwatch/first-time-region", 1, 1)], "nothing before day 7 is 'first'");
        assert_eq!(out[0].cloud.region.as_deref(), Some("eu-west-1"));

        // Thirty days of silence, then a call from the usual network: back from leave, quiet.
        let out = feed(
            &mut stage,
            &store,
            vec![call("back", T0 + 40 * DAY, "s3.amazonaws.com", "GetObject", "s3:GetObject", None)],
        );
        assert!(analytics(&out).is_empty(), "{:?}", analytics(&out));
        // Thirty more days, then a call from elsewhere: dormant identity active again.
        let mut elsewhere = call("late", T0 + 70 * DAY, "s3.amazonaws.com", "GetObject", "s3:GetObject", None);
        if let DetectInput::Event(e) = &mut elsewhere {
            e.src_ip = Some("192.0.2.44".into());
        }
        let out = feed(&mut stage, &store, vec![elsewhere]);
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

    /// An on-demand grant to alice: `action` on `resource`, active from `from` for an hour.
    fn grant(id: &str, seq: u64, from: i64, action: &str, resource: &str, ended: Option<i64>) -> DetectInput {
        let ev: AccessAuditEvent = serde_json::from_value(serde_json::json!({
            "schema": grantwatch_types::ACCESS_EVENT_SCHEMA,
            "audit_seq": seq,
            "request_id": id,
            "seq": seq,
            "at": EventTime(from),
            "by": "system",
            "command": if ended.is_some() { "expire" } else { "activate" },
            "from": "approved",
            "state": if ended.is_some() { "expired" } else { "active" },
            "reason": "approved",
            "identity": {"kind": "iam_user", "arn": ALICE},
            "account_id": "111122223333",
            "access": {"kind": "actions", "grants": [{"action": action, "resources": [resource]}]},
            "risk": "high",
            "requester": "alice",
            "ticket": "CHG-7",
            "approvals": [{"approver": "carol", "at": EventTime(from)}, {"approver": "dave", "at": EventTime(from)}],
            "activated_at": EventTime(from),
            "expires_at": EventTime(from + HOUR_MS),
            "ended_at": ended.map(EventTime),
        }))
        .unwrap();
        DetectInput::Access(Box::new(ev))
    }

    /// Eight days of alice's routine reads: her history is established.
    fn routine() -> Vec<DetectInput> {
        (0..8)
            .map(|d| {
                call(
                    &format!("d{d}"),
                    T0 + d * DAY + 10 * HOUR_MS,
                    "s3.amazonaws.com",
                    "GetObject",
                    "s3:GetObject",
                    None,
                )
            })
            .collect()
    }

    fn all_analytics(out: &[DetectionFinding]) -> Vec<String> {
        let mut ids = Vec::new();
        for f in out {
            ids.push(f.finding_info.analytic.uid.clone());
            for a in f.unmapped["explanation"]["also_matched"].as_array().into_iter().flatten() {
                ids.push(a["analytic"].as_str().unwrap_or_default().to_string());
            }
        }
        ids
    }

    #[test]
    fn on_demand_use_is_expected_in_its_window_and_an_alert_after_it_or_beside_it() {
        let start = T0 + 9 * DAY + 9 * HOUR_MS;
        let attach = |uid: &str, at: i64| {
            call(
                uid,
                at,
                "iam.amazonaws.com",
                "AttachRolePolicy",
                "iam:AttachRolePolicy",
                Some(r#"{"roleName":"app","policyArn":"arn:aws:iam::111122223333:policy/app-extra"}"#),
            )
        };
        let key_for_svc = |uid: &str, at: i64| {
            call(uid, at, "iam.amazonaws.com", "CreateAccessKey", "iam:CreateAccessKey", Some(r#"{"userName":"svc"}"#))
        };
        let installer = "arn:aws:iam::111122223333:role/grantwatch-access";
        let install = by(
            call(
                "install",
                start + 1_000,
                "iam.amazonaws.com",
                "PutUserPolicy",
                "iam:PutUserPolicy",
                Some(r#"{"userName":"alice","policyName":"grantwatch-access-r-1","policyDocument":"{}"}"#),
            ),
            installer,
            "grantwatch-access",
        );
        let use_in_window = vec![install, attach("a1", start + 5 * MIN), key_for_svc("k1", start + 6 * MIN)];

        // Without the grant: first use of a high-risk permission, granted and used within minutes.
        let store = MemStore::new();
        let mut stage = DetectStage::open(detection(RulesConfig::default()), &store).unwrap();
        feed(&mut stage, &store, routine());
        let without = all_analytics(&feed(&mut stage, &store, use_in_window.clone()));
        assert!(without.iter().any(|a| a == "grantwatch/high-risk-permission-used"), "{without:?}");
        assert!(without.iter().any(|a| a == "grantwatch/granted-and-used"), "{without:?}");

        // With it: the permission-management call is expected; the credentials created for another
        // identity are still an alert, which names the request, its approvers and its window.
        let store = MemStore::new();
        let mut stage = DetectStage::open(detection(RulesConfig::default()), &store).unwrap();
        feed(&mut stage, &store, routine());
        let mut inputs = vec![grant("r-1", 3, start, "iam:*", "*", None)];
        inputs.extend(use_in_window);
        let out = feed(&mut stage, &store, inputs);
        assert_eq!(all_analytics(&out), ["grantwatch/access-key-for-other-identity"], "{:?}", analytics(&out));
        let note = &out[0].unmapped["explanation"]["on_demand"];
        assert_eq!(note["request_id"], "r-1");
        assert_eq!(note["approved_by"], serde_json::json!(["carol", "dave"]));
        assert_eq!(note["from"], EventTime(start).to_rfc3339());
        assert_eq!(note["until"], EventTime(start + HOUR_MS).to_rfc3339());
        assert!(
            out[0].finding_info.desc.contains("on-demand request r-1 (approved by carol, dave;"),
            "{}",
            out[0].finding_info.desc
        );
        assert_eq!(stage.counts.on_demand_uses, 2);
        commit(&mut stage, &store);

        // A restart keeps the grant. The grant expires (a duplicate of its activation arrives late:
        // no change); an hour after expiry the permission works again: high; denied: one lower.
        let mut stage = DetectStage::open(detection(RulesConfig::default()), &store).unwrap();
        let mut denied = attach("a3", start + 3 * HOUR_MS);
        if let DetectInput::Event(e) = &mut denied {
            e.status = Status::Failure;
            e.status_code = Some("AccessDenied".into());
        }
        let out = feed(
            &mut stage,
            &store,
            vec![
                grant("r-1", 9, start, "iam:*", "*", Some(start + HOUR_MS)),
                grant("r-1", 3, start, "iam:*", "*", None),
                attach("a2", start + 2 * HOUR_MS),
                attach("a2b", start + 2 * HOUR_MS + 30 * MIN),
                denied,
            ],
        );
        assert_eq!(analytics(&out), [("grantwatch/on-demand-used-after-expiry", 1, 1)], "repeats join the incident");
        // The first use after expiry did not make the permission look like the identity's own.
        assert_eq!(stage.counts.repeats, 2);
        assert_eq!(out[0].severity_id, Severity::High.id());
        assert!(
            out[0].finding_info.desc.contains("60 minutes after on-demand request r-1"),
            "{}",
            out[0].finding_info.desc
        );
        assert_eq!(out[0].unmapped["explanation"]["on_demand"]["state"], "expired");
        // Alone, the denied attempt is medium.
        let store = MemStore::new();
        let mut stage = DetectStage::open(detection(RulesConfig::default()), &store).unwrap();
        let mut denied = attach("a4", start + 2 * HOUR_MS);
        if let DetectInput::Event(e) = &mut denied {
            e.status = Status::Failure;
        }
        let out = feed(&mut stage, &store, vec![grant("r-1", 9, start, "iam:*", "*", Some(start + HOUR_MS)), denied]);
        assert_eq!(analytics(&out), [("grantwatch/on-demand-used-after-expiry", 1, 1)]);
        assert_eq!(out[0].severity_id, Severity::Medium.id());
        // Past the post-expiry window: not this analytic's.
        let out = feed(&mut stage, &store, vec![attach("a5", start + 30 * HOUR_MS)]);
        assert!(!all_analytics(&out).iter().any(|a| a == "grantwatch/on-demand-used-after-expiry"), "{out:?}");
    }

    #[test]
    fn standing_permission_used_after_a_grant_is_no_alert_and_grants_beside_grantwatch_are() {
        let start = T0 + 9 * DAY + 9 * HOUR_MS;
        let store = MemStore::new();
        let mut stage = DetectStage::open(detection(RulesConfig::default()), &store).unwrap();
        feed(&mut stage, &store, routine());
        let read = |uid: &str, at: i64| call(uid, at, "s3.amazonaws.com", "GetObject", "s3:GetObject", None);
        let bob = "arn:aws:iam::111122223333:user/bob";
        let put = |uid: &str, at: i64, name: &str| {
            let request = format!(r#"{{"userName":"alice","policyName":"{name}","policyDocument":"{{}}"}}"#);
            by(call(uid, at, "iam.amazonaws.com", "PutUserPolicy", "iam:PutUserPolicy", Some(&request)), bob, "bob")
        };
        let out = feed(
            &mut stage,
            &store,
            vec![
                grant("r-2", 9, start, "s3:GetObject", "*", Some(start + HOUR_MS)),
                // alice reads every day on her own: after the grant, that is her standing permission.
                read("r1", start + 2 * HOUR_MS),
                // bob gives alice a policy of his own, and one named like grantwatch's, long after.
                put("p1", start + 3 * HOUR_MS, "more-access"),
            ],
        );
        assert_eq!(analytics(&out), [("grantwatch/grant-outside-grantwatch", 1, 1)]);
        assert_eq!(out[0].actor.user.uid, bob);
        assert!(out[0].finding_info.desc.contains("user/alice"), "{}", out[0].finding_info.desc);
        assert_eq!(out[0].unmapped["explanation"]["on_demand"]["request_id"], "r-2");
        let out = feed(&mut stage, &store, vec![put("p2", start + 5 * HOUR_MS, "grantwatch-access-r-2")]);
        assert_eq!(all_analytics(&out), Vec::<String>::new(), "the same incident: counted, not emitted again");
        assert_eq!(stage.counts.repeats, 1);
    }
}
