//! The detection stage: events in, alerts (OCSF Detection Findings) out.
//!
//! This first cut evaluates grantwatch's built-in activity rules; Sigma rules and models plug in beside
//! them. Alerts are exactly-once in effect: an alert's identity is `(rule, event id)`, and the stage
//! remembers the alerts it raised in [`Table::Seen`] (keyed by the event's day, like usage dedup), so a
//! re-delivered event raises nothing twice, even across restarts.

use grantwatch_state::{StateRead, Table, WriteBatch};
use grantwatch_types::{
    AnalyticKind, DetectionFinding, Event, FindingSpec, IdentityKind, RelatedEvent, Severity, Status,
};
use rustc_hash::FxHashSet;

use crate::stage::{Cx, Stage, StageError};
use crate::usage::{SeenKey, seen_key};

/// A rule built into grantwatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuiltinRule {
    /// The account's root user made a call (other than through an AWS service acting for it).
    RootAccountUsed,
    /// Audit logging was stopped or deleted (CloudTrail, Config, GuardDuty, VPC flow logs).
    LoggingDisabled,
}

/// Calls that stop or delete audit logging, as `(event source, operation)`.
const LOGGING_DISABLED_CALLS: [(&str, &str); 9] = [
    ("cloudtrail.amazonaws.com", "StopLogging"),
    ("cloudtrail.amazonaws.com", "DeleteTrail"),
    ("config.amazonaws.com", "StopConfigurationRecorder"),
    ("config.amazonaws.com", "DeleteConfigurationRecorder"),
    ("config.amazonaws.com", "DeleteDeliveryChannel"),
    ("guardduty.amazonaws.com", "DeleteDetector"),
    ("guardduty.amazonaws.com", "UpdateDetector"),
    ("ec2.amazonaws.com", "DeleteFlowLogs"),
    ("logs.amazonaws.com", "DeleteLogGroup"),
];

impl BuiltinRule {
    pub const ALL: [BuiltinRule; 2] = [BuiltinRule::RootAccountUsed, BuiltinRule::LoggingDisabled];

    pub fn id(self) -> &'static str {
        match self {
            BuiltinRule::RootAccountUsed => "grantwatch/root-account-used",
            BuiltinRule::LoggingDisabled => "grantwatch/logging-disabled",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            BuiltinRule::RootAccountUsed => "Root account used",
            BuiltinRule::LoggingDisabled => "Audit logging stopped or deleted",
        }
    }

    pub fn severity(self) -> Severity {
        match self {
            BuiltinRule::RootAccountUsed => Severity::High,
            BuiltinRule::LoggingDisabled => Severity::Critical,
        }
    }

    fn technique(self) -> &'static str {
        match self {
            // MITRE ATT&CK: Valid Accounts: Cloud Accounts; Impair Defenses: Disable Cloud Logs.
            BuiltinRule::RootAccountUsed => "T1078.004",
            BuiltinRule::LoggingDisabled => "T1562.008",
        }
    }

    pub fn matches(self, ev: &Event) -> bool {
        match self {
            BuiltinRule::RootAccountUsed => ev.actor.kind == IdentityKind::Root && ev.actor.invoked_by.is_none(),
            // GuardDuty's UpdateDetector only disables logging when it sets `enable=false`, which the
            // normalized event does not carry; it is kept because disabling is its most common misuse
            // and a false positive here is cheap to review.
            BuiltinRule::LoggingDisabled => {
                ev.status == Status::Success
                    && LOGGING_DISABLED_CALLS.iter().any(|(src, op)| ev.api.service == *src && ev.api.operation == *op)
            }
        }
    }

    fn describe(self, ev: &Event) -> String {
        let who = ev.actor.name.as_deref().unwrap_or(&ev.actor.uid);
        let from = ev.src_ip.as_deref().map(|ip| format!(" from {ip}")).unwrap_or_default();
        let outcome = if ev.status == Status::Success { "" } else { " (failed)" };
        format!(
            "{who} called {}:{} in account {} ({}){from}{outcome}.",
            ev.api.service.trim_end_matches(".amazonaws.com"),
            ev.api.operation,
            ev.account_uid,
            ev.region
        )
    }
}

/// The key under which the alert of `rule` for event `uid` is remembered.
fn alert_key(rule: BuiltinRule, ev: &Event) -> SeenKey {
    let mut id = String::with_capacity(rule.id().len() + 1 + ev.uid.len());
    id.push_str(rule.id());
    id.push('\0');
    id.push_str(&ev.uid);
    seen_key(ev.time.day(), &id)
}

/// Hex of the alert key's hash (after its day prefix): the finding's stable uid.
fn alert_uid(key: &SeenKey) -> String {
    key[8..].iter().map(|b| format!("{b:02x}")).collect()
}

/// Builds the Detection Finding of `rule` firing on `ev`.
pub fn rule_finding(rule: BuiltinRule, ev: &Event, uid: String) -> DetectionFinding {
    let mut unmapped = serde_json::Map::new();
    unmapped.insert("mitre_attack".into(), rule.technique().into());
    if let Some(ip) = &ev.src_ip {
        unmapped.insert("src_ip".into(), ip.clone().into());
    }
    if let Some(code) = &ev.status_code {
        unmapped.insert("status_code".into(), code.clone().into());
    }
    DetectionFinding::new(FindingSpec {
        uid,
        title: rule.title().to_string(),
        desc: rule.describe(ev),
        analytic_uid: rule.id().to_string(),
        analytic_name: rule.title().to_string(),
        analytic_kind: AnalyticKind::Rule,
        types: vec![format!("MITRE ATT&CK {}", rule.technique())],
        severity: rule.severity(),
        time: ev.time,
        cloud: ev.cloud,
        account: ev.account_uid.clone(),
        region: Some(ev.region.clone()),
        actor_uid: ev.actor.uid.clone(),
        actor_name: ev.actor.name.clone(),
        actor_kind: ev.actor.kind,
        related_events: vec![RelatedEvent {
            uid: ev.uid.clone(),
            time: ev.time.millis(),
            kind: format!("{}:{}", ev.api.service, ev.api.operation),
        }],
        unmapped,
    })
}

/// The detection stage.
pub struct DetectStage {
    rules: Vec<BuiltinRule>,
    /// Alerts raised since the last snapshot.
    raised: FxHashSet<SeenKey>,
    /// Alerts of the last snapshot, until its batch is written.
    in_flight: FxHashSet<SeenKey>,
}

impl DetectStage {
    pub fn new(rules: Vec<BuiltinRule>) -> Self {
        Self { rules, raised: FxHashSet::default(), in_flight: FxHashSet::default() }
    }

    fn already_raised(&self, key: &SeenKey, state: &dyn StateRead) -> Result<bool, StageError> {
        Ok(self.raised.contains(key) || self.in_flight.contains(key) || state.get(Table::Seen, key)?.is_some())
    }
}

impl Stage for DetectStage {
    type In = Event;
    type Out = DetectionFinding;

    fn process(&mut self, ev: &Event, cx: &mut Cx<'_, DetectionFinding>) -> Result<(), StageError> {
        for &rule in &self.rules {
            if !rule.matches(ev) {
                continue;
            }
            let key = alert_key(rule, ev);
            if self.already_raised(&key, cx.state)? {
                continue;
            }
            self.raised.insert(key);
            cx.out.push(rule_finding(rule, ev, alert_uid(&key)));
        }
        Ok(())
    }

    fn snapshot(&mut self, batch: &mut WriteBatch) -> Result<(), StageError> {
        let mut keys: Vec<SeenKey> = self.raised.drain().collect();
        keys.sort_unstable();
        for k in &keys {
            batch.put(Table::Seen, k.to_vec(), Vec::new());
        }
        self.in_flight.extend(keys);
        Ok(())
    }

    fn committed(&mut self) {
        self.in_flight.clear();
    }

    fn pending(&self) -> usize {
        self.raised.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grantwatch_state::{MemStore, StateStore};
    use grantwatch_types::EventTime;

    fn event(uid: &str, kind: IdentityKind, service: &str, op: &str) -> Event {
        let mut e = crate::testing::event(uid, EventTime::parse_rfc3339("2024-05-01T12:00:00Z").unwrap());
        e.actor.uid = "arn:aws:iam::111122223333:root".into();
        e.actor.kind = kind;
        e.actor.name = None;
        e.api = grantwatch_types::Api { service: service.into(), operation: op.into() };
        e.actions.clear();
        e.src_ip = Some("198.51.100.7".into());
        e
    }

    fn run(stage: &mut DetectStage, store: &MemStore, ev: &Event) -> Vec<DetectionFinding> {
        let mut out = Vec::new();
        stage.process(ev, &mut Cx { state: store, out: &mut out }).unwrap();
        out
    }

    #[test]
    fn rules_fire_once_per_event_across_restarts() {
        let store = MemStore::new();
        let mut stage = DetectStage::new(BuiltinRule::ALL.to_vec());
        let stop = event("e1", IdentityKind::Root, "cloudtrail.amazonaws.com", "StopLogging");
        let alerts = run(&mut stage, &store, &stop);
        let rules: Vec<&str> = alerts.iter().map(|a| a.finding_info.analytic.uid.as_str()).collect();
        assert_eq!(rules, ["grantwatch/root-account-used", "grantwatch/logging-disabled"]);
        assert_eq!(alerts[1].severity_id, 5);
        assert_eq!(alerts[1].finding_info.related_events[0].uid, "e1");
        assert!(run(&mut stage, &store, &stop).is_empty(), "pending");
        let mut batch = WriteBatch::new();
        stage.snapshot(&mut batch).unwrap();
        assert!(run(&mut stage, &store, &stop).is_empty(), "in flight");
        store.write(batch).unwrap();
        stage.committed();
        let mut restarted = DetectStage::new(BuiltinRule::ALL.to_vec());
        assert!(run(&mut restarted, &store, &stop).is_empty(), "after restart");
        let again = run(&mut restarted, &store, &event("e2", IdentityKind::Root, "s3.amazonaws.com", "ListBuckets"));
        assert_eq!(again.len(), 1);
        assert_ne!(again[0].finding_info.uid, alerts[0].finding_info.uid);
    }

    #[test]
    fn ordinary_calls_and_service_invoked_root_calls_raise_nothing() {
        let store = MemStore::new();
        let mut stage = DetectStage::new(BuiltinRule::ALL.to_vec());
        assert!(run(&mut stage, &store, &event("a", IdentityKind::User, "s3.amazonaws.com", "GetObject")).is_empty());
        let mut by_service = event("b", IdentityKind::Root, "s3.amazonaws.com", "GetObject");
        by_service.actor.invoked_by = Some("backup.amazonaws.com".into());
        assert!(run(&mut stage, &store, &by_service).is_empty());
        let mut failed = event("c", IdentityKind::User, "cloudtrail.amazonaws.com", "DeleteTrail");
        failed.status = Status::Failure;
        assert!(run(&mut stage, &store, &failed).is_empty(), "a denied attempt did not disable logging");
    }
}
