//! Scoring a detector's alerts (OCSF Detection Findings) against a scenario's labels.
//!
//! Rules:
//! * Alerts are deduplicated by `finding_info.uid`, the last one of a uid wins (an incident may be
//!   emitted when it opens and again, updated, later).
//! * Only alerts whose time — `finding_info.last_seen_time`, or `time` when that is 0 — falls in the
//!   detection window `[detect_start, end)` count.
//! * An alert is **true** when one of its `related_events` is an event of an attack instance; failing
//!   that (alerts that name no attack event, e.g. an hourly model listing some of the hour's events),
//!   when its actor (`actor.user.uid`) is the instance's identity and `[first_seen_time,
//!   last_seen_time]` overlaps `[start − 1 h, end + 1 h]`. Otherwise it is **false**.
//! * An instance is **detected** when at least one true alert matches it.
//! * precision = true alerts / alerts; recall = detected instances / instances (overall and per
//!   technique); false alerts per 1,000 identity-days = false alerts / (identities × detect days) × 1000.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use grantwatch_types::{DetectionFinding, EventTime};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::{Label, ScenarioError, ScenarioSummary, Technique};

const HOUR_MS: i64 = 3_600_000;

/// The attack instances of a scenario (`labels.jsonl`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Labels {
    pub instances: Vec<Label>,
}

impl Labels {
    /// Reads `labels.jsonl`.
    pub fn load(path: &Path) -> Result<Labels, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError::io(path, e))?;
        Labels::from_lines(&text)
    }

    /// Parses JSON Lines, one [`Label`] per non-blank line.
    pub fn from_lines(text: &str) -> Result<Labels, ScenarioError> {
        let mut instances = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let l: Label =
                serde_json::from_str(line).map_err(|e| ScenarioError::Label { line: i + 1, message: e.to_string() })?;
            instances.push(l);
        }
        Ok(Labels { instances })
    }

    pub fn len(&self) -> usize {
        self.instances.len()
    }

    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }
}

/// The figures to reach.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Targets {
    /// Minimum recall, overall and per technique.
    pub recall: f64,
    pub precision: f64,
    /// Maximum false alerts per 1,000 identities per day.
    pub false_per_1k_identity_days: f64,
    /// Each analytic's share of that budget: an analytic over it is the one to tune first.
    #[serde(default)]
    pub false_per_1k_identity_days_per_analytic: f64,
}

impl Default for Targets {
    /// The targets of issue 12: recall 0.95 per technique, precision 0.9, at most 0.5 false alerts per
    /// 1,000 identities per day, of which no analytic may spend more than 0.1.
    fn default() -> Self {
        Targets {
            recall: 0.95,
            precision: 0.9,
            false_per_1k_identity_days: 0.5,
            false_per_1k_identity_days_per_analytic: 0.1,
        }
    }
}

/// Recall of one technique.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TechniqueScore {
    pub technique: Technique,
    pub instances: usize,
    pub detected: usize,
    /// `None` without instances.
    pub recall: Option<f64>,
    /// True alerts matching an instance of this technique.
    pub alerts: usize,
    pub pass: bool,
}

/// How one rule or model (`finding_info.analytic.uid`) fared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalyticScore {
    pub analytic: String,
    pub alerts: usize,
    pub true_alerts: usize,
    pub false_alerts: usize,
    pub precision: Option<f64>,
    /// Sum of the alerts' `count` (`unmapped.count`, 1 when absent): occurrences grouped into them.
    pub occurrences: u64,
    /// Instances detected by this analytic, per technique.
    pub detected: BTreeMap<Technique, usize>,
    /// This analytic's false alerts per 1,000 identities per day, and whether that is within its budget
    /// ([`Targets::false_per_1k_identity_days_per_analytic`]).
    #[serde(default)]
    pub false_per_1k_identity_days: f64,
    #[serde(default)]
    pub within_budget: bool,
}

/// The result of [`score`]. `Display` prints an aligned table; `Serialize` gives JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub window_start: EventTime,
    pub window_end: EventTime,
    pub identities: u32,
    pub detect_days: u32,
    /// Alerts passed in.
    pub alerts_received: usize,
    /// Alerts dropped as repeats of a uid.
    pub duplicates: usize,
    /// Distinct alerts outside the window (not counted).
    pub out_of_window: usize,
    /// Distinct alerts counted.
    pub alerts: usize,
    pub true_alerts: usize,
    pub false_alerts: usize,
    /// True alerts matched through a related event id (the rest matched by identity and time).
    pub matched_by_event: usize,
    pub matched_by_identity: usize,
    pub instances: usize,
    pub detected: usize,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub false_per_1k_identity_days: f64,
    pub techniques: Vec<TechniqueScore>,
    pub analytics: Vec<AnalyticScore>,
    /// Label ids not detected.
    pub missed: Vec<String>,
    pub targets: Targets,
    pub precision_pass: bool,
    pub recall_pass: bool,
    pub false_rate_pass: bool,
    /// Every figure and every technique's recall on target.
    pub pass: bool,
}

fn alert_time(a: &DetectionFinding) -> i64 {
    if a.finding_info.last_seen_time != 0 { a.finding_info.last_seen_time } else { a.time }
}

fn ratio(n: usize, d: usize) -> Option<f64> {
    if d == 0 { None } else { Some(n as f64 / d as f64) }
}

/// Scores `alerts` against `labels` with the default [`Targets`].
pub fn score(alerts: &[DetectionFinding], labels: &Labels, summary: &ScenarioSummary) -> EvalReport {
    score_with(alerts, labels, summary, Targets::default())
}

/// Scores `alerts` against `labels` with `targets`.
pub fn score_with(
    alerts: &[DetectionFinding],
    labels: &Labels,
    summary: &ScenarioSummary,
    targets: Targets,
) -> EvalReport {
    let (ws, we) = (summary.detect_start.millis(), summary.end.millis());
    // dedupe by uid, last wins, in first-seen order
    let mut order: Vec<&str> = Vec::new();
    let mut last: FxHashMap<&str, &DetectionFinding> = FxHashMap::default();
    for a in alerts {
        if last.insert(a.finding_info.uid.as_str(), a).is_none() {
            order.push(a.finding_info.uid.as_str());
        }
    }
    let duplicates = alerts.len() - order.len();
    let mut by_event: FxHashMap<&str, usize> = FxHashMap::default();
    for (i, l) in labels.instances.iter().enumerate() {
        for e in &l.event_ids {
            by_event.insert(e.as_str(), i);
        }
    }
    let mut detected_by: Vec<BTreeSet<String>> = vec![BTreeSet::new(); labels.instances.len()];
    let mut tech_alerts: BTreeMap<Technique, usize> = BTreeMap::new();
    let mut analytics: BTreeMap<String, AnalyticScore> = BTreeMap::new();
    let (mut counted, mut out_of_window, mut true_alerts, mut by_ev, mut by_id) = (0, 0, 0, 0, 0);
    for uid in order {
        let Some(a) = last.get(uid).copied() else { continue };
        let t = alert_time(a);
        if t < ws || t >= we {
            out_of_window += 1;
            continue;
        }
        counted += 1;
        let mut matched: BTreeSet<usize> =
            a.finding_info.related_events.iter().filter_map(|r| by_event.get(r.uid.as_str()).copied()).collect();
        let via_event = !matched.is_empty();
        if !via_event {
            let first = if a.finding_info.first_seen_time != 0 { a.finding_info.first_seen_time } else { t };
            let (lo, hi) = (first.min(t), first.max(t));
            for (i, l) in labels.instances.iter().enumerate() {
                if l.identity == a.actor.user.uid && lo <= l.end.millis() + HOUR_MS && hi >= l.start.millis() - HOUR_MS
                {
                    matched.insert(i);
                }
            }
        }
        let analytic = a.finding_info.analytic.uid.clone();
        let entry = analytics.entry(analytic.clone()).or_insert_with(|| AnalyticScore {
            analytic,
            alerts: 0,
            true_alerts: 0,
            false_alerts: 0,
            precision: None,
            occurrences: 0,
            detected: BTreeMap::new(),
            false_per_1k_identity_days: 0.0,
            within_budget: true,
        });
        entry.alerts += 1;
        entry.occurrences += a.unmapped.get("count").and_then(serde_json::Value::as_u64).unwrap_or(1);
        if matched.is_empty() {
            entry.false_alerts += 1;
            continue;
        }
        entry.true_alerts += 1;
        true_alerts += 1;
        if via_event {
            by_ev += 1;
        } else {
            by_id += 1;
        }
        let mut techs = BTreeSet::new();
        for i in matched {
            let tech = labels.instances[i].technique;
            techs.insert(tech);
            if detected_by[i].insert(a.finding_info.analytic.uid.clone()) {
                *entry.detected.entry(tech).or_insert(0) += 1;
            }
        }
        for tech in techs {
            *tech_alerts.entry(tech).or_insert(0) += 1;
        }
    }
    let false_alerts = counted - true_alerts;
    let mut techniques = Vec::new();
    for tech in Technique::ALL {
        let idx: Vec<usize> = (0..labels.instances.len()).filter(|&i| labels.instances[i].technique == tech).collect();
        let detected = idx.iter().filter(|&&i| !detected_by[i].is_empty()).count();
        let recall = ratio(detected, idx.len());
        techniques.push(TechniqueScore {
            technique: tech,
            instances: idx.len(),
            detected,
            recall,
            alerts: tech_alerts.get(&tech).copied().unwrap_or(0),
            pass: recall.is_none_or(|r| r >= targets.recall),
        });
    }
    let instances = labels.instances.len();
    let detected = detected_by.iter().filter(|s| !s.is_empty()).count();
    let missed =
        labels.instances.iter().zip(&detected_by).filter(|(_, s)| s.is_empty()).map(|(l, _)| l.id.clone()).collect();
    let precision = ratio(true_alerts, counted);
    let recall = ratio(detected, instances);
    let identity_days = f64::from(summary.identities) * f64::from(summary.detect_days);
    let false_rate = if identity_days > 0.0 { false_alerts as f64 / identity_days * 1000.0 } else { 0.0 };
    let mut analytics: Vec<AnalyticScore> = analytics.into_values().collect();
    for a in &mut analytics {
        a.precision = ratio(a.true_alerts, a.alerts);
        a.false_per_1k_identity_days =
            if identity_days > 0.0 { a.false_alerts as f64 / identity_days * 1000.0 } else { 0.0 };
        a.within_budget = a.false_per_1k_identity_days <= targets.false_per_1k_identity_days_per_analytic;
    }
    analytics.sort_by(|a, b| b.alerts.cmp(&a.alerts).then_with(|| a.analytic.cmp(&b.analytic)));
    let precision_pass = precision.is_some_and(|p| p >= targets.precision);
    let recall_pass = recall.is_some_and(|r| r >= targets.recall);
    let false_rate_pass = false_rate <= targets.false_per_1k_identity_days;
    let pass = precision_pass && recall_pass && false_rate_pass && techniques.iter().all(|t| t.pass);
    EvalReport {
        window_start: summary.detect_start,
        window_end: summary.end,
        identities: summary.identities,
        detect_days: summary.detect_days,
        alerts_received: alerts.len(),
        duplicates,
        out_of_window,
        alerts: counted,
        true_alerts,
        false_alerts,
        matched_by_event: by_ev,
        matched_by_identity: by_id,
        instances,
        detected,
        precision,
        recall,
        false_per_1k_identity_days: false_rate,
        techniques,
        analytics,
        missed,
        targets,
        precision_pass,
        recall_pass,
        false_rate_pass,
        pass,
    }
}

fn opt(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_string(), |v| format!("{v:.3}"))
}

fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "FAIL" }
}

impl fmt::Display for EvalReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "detection window {} .. {} ({} days, {} identities)",
            self.window_start, self.window_end, self.detect_days, self.identities
        )?;
        writeln!(
            f,
            "alerts: {} counted ({} true, {} false) of {} received ({} duplicate uids, {} outside the window); true by event id {}, by identity+time {}",
            self.alerts,
            self.true_alerts,
            self.false_alerts,
            self.alerts_received,
            self.duplicates,
            self.out_of_window,
            self.matched_by_event,
            self.matched_by_identity
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "{:<24} {:>9} {:>8} {:>7} {:>7}  {:<7}",
            "technique", "instances", "detected", "recall", "alerts", "target"
        )?;
        let rt = format!(">= {:.2}", self.targets.recall);
        for t in &self.techniques {
            writeln!(
                f,
                "{:<24} {:>9} {:>8} {:>7} {:>7}  {:<7} {}",
                t.technique.as_str(),
                t.instances,
                t.detected,
                opt(t.recall),
                t.alerts,
                rt,
                verdict(t.pass)
            )?;
        }
        writeln!(
            f,
            "{:<24} {:>9} {:>8} {:>7} {:>7}  {:<7} {}",
            "overall",
            self.instances,
            self.detected,
            opt(self.recall),
            self.true_alerts,
            rt,
            verdict(self.recall_pass)
        )?;
        writeln!(f)?;
        writeln!(f, "{:<36} {:>8}  {:<8}", "figure", "value", "target")?;
        writeln!(
            f,
            "{:<36} {:>8}  {:<8} {}",
            "precision",
            opt(self.precision),
            format!(">= {:.2}", self.targets.precision),
            verdict(self.precision_pass)
        )?;
        writeln!(
            f,
            "{:<36} {:>8}  {:<8} {}",
            "recall",
            opt(self.recall),
            format!(">= {:.2}", self.targets.recall),
            verdict(self.recall_pass)
        )?;
        writeln!(
            f,
            "{:<36} {:>8.3}  {:<8} {}",
            "false alerts per 1k identity-days",
            self.false_per_1k_identity_days,
            format!("<= {:.2}", self.targets.false_per_1k_identity_days),
            verdict(self.false_rate_pass)
        )?;
        if !self.analytics.is_empty() {
            let w = self.analytics.iter().map(|a| a.analytic.len()).max().unwrap_or(8).max(8);
            writeln!(f)?;
            writeln!(
                f,
                "{:<w$} {:>7} {:>6} {:>6} {:>9} {:>11} {:>9} {:>7}  detected",
                "analytic", "alerts", "true", "false", "precision", "occurrences", "false/1k", "budget"
            )?;
            for a in &self.analytics {
                let det: Vec<String> = a.detected.iter().map(|(t, n)| format!("{t}:{n}")).collect();
                writeln!(
                    f,
                    "{:<w$} {:>7} {:>6} {:>6} {:>9} {:>11} {:>9.3} {:>7}  {}",
                    a.analytic,
                    a.alerts,
                    a.true_alerts,
                    a.false_alerts,
                    opt(a.precision),
                    a.occurrences,
                    a.false_per_1k_identity_days,
                    if a.within_budget { "ok" } else { "OVER" },
                    det.join(" ")
                )?;
            }
        }
        if !self.missed.is_empty() {
            writeln!(f)?;
            writeln!(f, "missed ({}): {}", self.missed.len(), self.missed.join(", "))?;
        }
        writeln!(f)?;
        write!(f, "overall: {}", verdict(self.pass))
    }
}
