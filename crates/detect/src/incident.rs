//! Grouping repeated alerts into incidents.
//!
//! An incident is one analytic firing on one identity, again and again, with gaps shorter than the
//! analytic's incident window (its suppression period). The first alert is emitted at once, as an OCSF
//! Detection Finding with activity Create and count 1: an analyst hears about it without delay. Later
//! repeats only add to the incident (count, last seen, the first [`MAX_EVENTS`] event ids). When event
//! time passes the window after the last repeat, the incident closes, and if it grew, one Update is
//! emitted with the same finding uid and the final count. A thousand identical hits are two lines.

use grantwatch_types::{DetectionFinding, RelatedEvent};
use serde::{Deserialize, Serialize};

/// Event ids kept per incident (the count says how many there were).
pub const MAX_EVENTS: usize = 20;

/// An open incident, as kept in state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// The finding as first emitted; updates are derived from it.
    pub finding: DetectionFinding,
    pub count: u64,
    pub last_ms: i64,
    /// Incident window of the analytic: the incident closes when event time passes `last_ms + window_ms`.
    pub window_ms: i64,
}

/// What to do with a new alert.
#[derive(Debug, PartialEq)]
pub enum Grouped {
    /// No open incident: emit the alert, and open one.
    Opened(Box<DetectionFinding>),
    /// Added to an open incident: emit nothing now.
    Repeated,
}

impl Incident {
    pub fn open(finding: DetectionFinding, window_ms: i64) -> Self {
        let last_ms = finding.finding_info.last_seen_time;
        Incident { finding, count: 1, last_ms, window_ms }
    }

    /// Event time after which a repeat opens a new incident.
    pub fn expires_ms(&self) -> i64 {
        self.last_ms.saturating_add(self.window_ms)
    }

    /// Event time before which an alert is not a repeat of this incident (older than its first event
    /// by more than the window).
    pub fn starts_ms(&self) -> i64 {
        self.finding.finding_info.first_seen_time.saturating_sub(self.window_ms)
    }

    /// Adds a repeat (an alert of the same analytic on the same identity).
    pub fn repeat(&mut self, alert: &DetectionFinding) {
        self.count += 1;
        self.last_ms = self.last_ms.max(alert.finding_info.last_seen_time);
        let events = &mut self.finding.finding_info.related_events;
        for e in &alert.finding_info.related_events {
            if events.len() >= MAX_EVENTS {
                break;
            }
            if !events.iter().any(|x: &RelatedEvent| x.uid == e.uid) {
                events.push(e.clone());
            }
        }
        if alert.severity_id > self.finding.severity_id {
            self.finding.severity_id = alert.severity_id;
            self.finding.severity = alert.severity.clone();
        }
    }

    /// The Update a closing incident emits, if it grew beyond its first alert.
    pub fn close(self) -> Option<DetectionFinding> {
        if self.count <= 1 {
            return None;
        }
        let mut f = self.finding;
        f.activity_id = 2;
        f.activity_name = "Update".into();
        f.type_uid = 200402;
        f.type_name = "Detection Finding: Update".into();
        f.count = self.count;
        f.time = self.last_ms;
        f.time_dt = grantwatch_types::EventTime(self.last_ms);
        f.finding_info.last_seen_time = self.last_ms;
        f.message = format!("{} ({} times)", f.finding_info.title, self.count);
        Some(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grantwatch_types::{AnalyticKind, Cloud, EventTime, FindingSpec, IdentityKind, Severity};

    fn alert(uid: &str, at: i64, severity: Severity) -> DetectionFinding {
        DetectionFinding::new(FindingSpec {
            uid: "inc-1".into(),
            title: "t".into(),
            desc: "d".into(),
            analytic_uid: "grantwatch/x".into(),
            analytic_name: "x".into(),
            analytic_kind: AnalyticKind::Rule,
            types: vec![],
            severity,
            time: EventTime(at),
            cloud: Cloud::Aws,
            account: "1".into(),
            region: None,
            actor_uid: "arn".into(),
            actor_name: None,
            actor_human: None,
            actor_kind: IdentityKind::User,
            related_events: vec![RelatedEvent { uid: uid.into(), time: at, kind: "k".into() }],
            unmapped: Default::default(),
        })
    }

    #[test]
    fn repeats_grow_one_incident_and_close_into_one_update() {
        let mut inc = Incident::open(alert("e0", 1_000, Severity::Medium), 10_000);
        for i in 1..1000 {
            inc.repeat(&alert(&format!("e{i}"), 1_000 + i, Severity::Medium));
        }
        inc.repeat(&alert("e0", 2_500, Severity::High));
        assert_eq!(inc.expires_ms(), 12_500);
        let update = inc.close().unwrap();
        assert_eq!(update.count, 1001);
        assert_eq!((update.activity_id, update.type_uid), (2, 200402));
        assert_eq!(update.finding_info.uid, "inc-1", "an update names the incident it updates");
        assert_eq!(update.finding_info.related_events.len(), MAX_EVENTS);
        assert_eq!(update.finding_info.first_seen_time, 1_000);
        assert_eq!(update.finding_info.last_seen_time, 2_500);
        assert_eq!(update.severity_id, Severity::High.id(), "the incident is as severe as its worst alert");
        assert_eq!(Incident::open(alert("e0", 1, Severity::Low), 5).close(), None, "a single alert needs no update");
    }
}
