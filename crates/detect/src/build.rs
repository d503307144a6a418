//! From drafts to OCSF Detection Findings: the one place that builds what an analyst reads.
//!
//! The analytics hand over [`Draft`]s (alerts that passed the rule configuration). [`emit`] merges the
//! drafts of one input that fired on the same triggering event into one finding (the most severe names
//! it, the others are listed under `explanation.also_matched`), writes the explanation (evidence, the
//! identity's PCI, ATT&CK techniques), and groups the finding into its incident ([`OpenIncidents`]):
//! the first alert of an incident is emitted at once, repeats only add to it, and an incident that
//! grew emits one Update when it closes. The explanation helpers the analytics use for their
//! descriptions and evidence ([`Subject`], [`describe_call`], [`field_evidence`], ...) live here too,
//! so every alert reads alike.
//!
//! Which incidents are open is the stage's state: it restores them when it opens and persists the
//! changes [`OpenIncidents`] records.

use std::collections::BTreeSet;

use grantwatch_types::{Cloud, DetectionFinding, Event, EventTime, FindingSpec, IdentityKind, RelatedEvent};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::alert::Evidence;
use crate::incident::{Incident, MAX_EVENTS};
use crate::rules::{AnalyticInfo, RuleHit, RulePolicy};

/// The identity an alert is about.
#[derive(Debug, Clone)]
pub(crate) struct Subject {
    pub(crate) uid: String,
    pub(crate) name: Option<String>,
    pub(crate) kind: IdentityKind,
    pub(crate) account: String,
    pub(crate) cloud: Cloud,
    /// The person behind the identity, or behind this session of a shared role.
    pub(crate) human: Option<String>,
}

impl Subject {
    pub(crate) fn of(ev: &Event) -> Self {
        Subject {
            uid: ev.actor.uid.clone(),
            name: ev.actor.name.clone(),
            kind: ev.actor.kind,
            account: ev.actor.account_uid.clone().unwrap_or_else(|| ev.account_uid.clone()),
            cloud: ev.cloud,
            human: ev.actor.human.clone(),
        }
    }

    /// How descriptions name the identity: its name, else its ARN.
    pub(crate) fn display(&self) -> &str {
        self.name.as_deref().filter(|n| !n.is_empty()).unwrap_or(&self.uid)
    }
}

/// An alert that passed the configuration, before it is merged and grouped.
pub(crate) struct Draft {
    pub(crate) info: AnalyticInfo,
    pub(crate) policy: RulePolicy,
    pub(crate) subject: Subject,
    pub(crate) time: EventTime,
    pub(crate) region: Option<String>,
    pub(crate) events: Vec<RelatedEvent>,
    pub(crate) evidence: Vec<Evidence>,
    pub(crate) desc: String,
    /// `explanation.on_demand`: the on-demand grant the alert is about or the call used.
    pub(crate) on_demand: Option<serde_json::Value>,
}

/// What [`emit`] did with the drafts it was given.
#[derive(Debug, Default)]
pub(crate) struct Emitted {
    /// Findings that opened an incident (and were emitted).
    pub(crate) alerts: u64,
    /// Findings added to an open incident (emitted later, as its Update, if at all).
    pub(crate) repeats: u64,
}

/// The open incidents, keyed `"<analytic>\0<subject ARN>"`, indexed by expiry, with their changes since
/// the stage last persisted them.
#[derive(Debug, Default)]
pub(crate) struct OpenIncidents {
    pub(crate) by_key: FxHashMap<String, Incident>,
    /// Open incidents by expiry.
    expiries: BTreeSet<(i64, String)>,
    /// Opened or grown since the last snapshot.
    pub(crate) dirty: FxHashSet<String>,
    /// Closed since the last snapshot.
    pub(crate) closed: Vec<String>,
}

impl OpenIncidents {
    /// Adds an incident restored from state.
    pub(crate) fn restore(&mut self, key: String, inc: Incident) {
        self.expiries.insert((inc.expires_ms(), key.clone()));
        self.by_key.insert(key, inc);
    }

    /// Closes the incidents whose window event time `watermark_ms` has passed.
    pub(crate) fn close_expired(&mut self, watermark_ms: i64, out: &mut Vec<DetectionFinding>) {
        while self.expiries.first().is_some_and(|(expiry, _)| *expiry < watermark_ms) {
            let Some((_, key)) = self.expiries.first().cloned() else { break };
            self.close(&key, out);
        }
    }

    fn close(&mut self, key: &str, out: &mut Vec<DetectionFinding>) {
        if let Some(inc) = self.by_key.remove(key) {
            self.expiries.remove(&(inc.expires_ms(), key.to_string()));
            self.dirty.remove(key);
            self.closed.push(key.to_string());
            if let Some(update) = inc.close() {
                out.push(update);
            }
        }
    }

    /// Adds `finding` (at `time`) to the open incident `key` if its window still runs (true), else opens
    /// a new incident with it and emits it (false), closing the expired one first. A finding older than
    /// the open incident's first event by more than the window is an incident of its own, emitted
    /// alone: it neither joins the open one (a 2019 login is not part of a 2025 incident) nor ends it.
    fn repeat_or_open(
        &mut self,
        key: String,
        time: EventTime,
        finding: DetectionFinding,
        window_ms: i64,
        out: &mut Vec<DetectionFinding>,
    ) -> bool {
        if let Some(open) = self.by_key.get_mut(&key) {
            if time.millis() < open.starts_ms() {
                out.push(finding);
                return false;
            }
            if time.millis() <= open.expires_ms() {
                self.expiries.remove(&(open.expires_ms(), key.clone()));
                open.repeat(&finding);
                self.expiries.insert((open.expires_ms(), key.clone()));
                self.dirty.insert(key);
                return true;
            }
            self.close(&key, out);
        }
        let inc = Incident::open(finding.clone(), window_ms);
        self.expiries.insert((inc.expires_ms(), key.clone()));
        self.by_key.insert(key.clone(), inc);
        self.dirty.insert(key);
        out.push(finding);
        false
    }
}

/// Turns the drafts of one input into alerts. Analytics that fired on the same triggering event become
/// one alert: the most severe names it, the others are listed with their evidence
/// (`explanation.also_matched`). One suspicious call is one thing for an analyst to look at.
/// `pci` gives an identity's current Permission Creep Index, for the explanation.
pub(crate) fn emit(
    mut drafts: Vec<Draft>,
    pci: &dyn Fn(&str) -> Option<u8>,
    incidents: &mut OpenIncidents,
    out: &mut Vec<DetectionFinding>,
) -> Emitted {
    let mut emitted = Emitted::default();
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
        let key = format!("{}\0{}", primary.info.id, primary.subject.uid);
        let (time, window_ms) = (primary.time, primary.policy.incident_window_ms);
        let identity_pci = pci(&primary.subject.uid);
        let finding = finding(&key, primary, group, identity_pci);
        if incidents.repeat_or_open(key, time, finding, window_ms, out) {
            emitted.repeats += 1;
        } else {
            emitted.alerts += 1;
        }
    }
    emitted
}

/// The finding of draft `d` (incident `key`), with the drafts merged into it.
fn finding(key: &str, d: Draft, also: Vec<Draft>, identity_pci: Option<u8>) -> DetectionFinding {
    let id = d.info.id.as_str();
    let uid_src = format!("{key}\0{}\0{}", d.time.millis(), d.events.first().map_or("", |e| e.uid.as_str()));
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
        "identity_pci": identity_pci,
    });
    if !also_matched.is_empty() {
        explanation["also_matched"] = also_matched.into();
    }
    if let Some(note) = d.on_demand.clone().or_else(|| also.iter().find_map(|a| a.on_demand.clone())) {
        explanation["on_demand"] = note;
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
    DetectionFinding::new(FindingSpec {
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
        actor_human: d.subject.human.clone(),
        related_events: events,
        unmapped,
    })
}

/// How an alert names an event it relates to.
pub(crate) fn related(ev: &Event) -> RelatedEvent {
    RelatedEvent {
        uid: ev.uid.clone(),
        time: ev.time.millis(),
        kind: format!("{}:{}", ev.api.service, ev.api.operation),
    }
}

/// `iam.amazonaws.com` → `iam`, `storage.googleapis.com` → `storage`.
pub(crate) fn short(service: &str) -> &str {
    service.trim_end_matches(".amazonaws.com").trim_end_matches(".googleapis.com")
}

/// Evidence naming a matched field (the value is in the name: rules match strings, not numbers).
pub(crate) fn field_evidence(name: &str, value: &str) -> Evidence {
    Evidence { name: format!("{name}={value}"), value: 1.0, baseline: None, spread: None, score: None }
}

/// Evidence of a first-time item: seen now (1), never in the lookback (baseline 0).
pub(crate) fn first_time_evidence(kind: &str, item: &str) -> Evidence {
    Evidence { name: format!("first_{kind}={item}"), value: 1.0, baseline: Some(0.0), spread: None, score: None }
}

/// The description of a built-in single-event rule's alert: who called what, where, and the fields that
/// made it match.
pub(crate) fn describe_call(title: &str, ev: &Event, hit: &RuleHit) -> String {
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

/// `attack.t1562.008` → `T1562.008`.
pub(crate) fn technique_of(tags: &[String]) -> String {
    tags.iter()
        .filter_map(|t| t.strip_prefix("attack.t"))
        .find(|t| t.starts_with(|c: char| c.is_ascii_digit()))
        .map(|t| format!("T{}", t.to_uppercase()))
        .unwrap_or_default()
}
