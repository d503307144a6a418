//! Behavior features per identity-hour: what one identity did in one hour of event time, as a fixed
//! vector of numbers the models in [`crate::ml`] compare with a baseline.
//!
//! One code path: the detection stage and `grantwatch train` both feed each identity's events, in time
//! order, into an [`HourWindow`] with the [`Novelty`] the identity's history reports for each event, and
//! take [`HourWindow::features`] when the hour is over. Nothing here reads a clock or does IO.
//!
//! Every feature grows when the behavior gets more suspicious (more calls, more errors, more novelty,
//! odder hours), so a model only has to look at upward deviations. Counts are `ln(1 + n)`: an hour with
//! 10× the usual calls is as far from the baseline for a quiet identity as for a busy one.

use std::collections::BTreeSet;

use grantwatch_types::{Event, Status};
use serde::{Deserialize, Serialize};

/// Bumped whenever a feature's meaning, order or scale changes: models trained on other features are refused.
pub const FEATURE_VERSION: u32 = 1;

/// Number of features per identity-hour.
pub const FEATURES: usize = 12;

/// Feature names, in vector order. They name the evidence of model alerts, so they say their unit.
pub const FEATURE_NAMES: [&str; FEATURES] = [
    "events_log1p",
    "distinct_actions_log1p",
    "failure_ratio",
    "access_denied_log1p",
    "write_ratio",
    "new_actions_log1p",
    "new_source_ip",
    "new_region",
    "new_user_agent",
    "hour_of_day_rarity",
    "weekday_rarity",
    "idle_days_log1p",
];

/// One line per feature for an analyst reading an alert's evidence.
pub const FEATURE_DESCRIPTIONS: [&str; FEATURES] = [
    "ln(1 + API calls in the hour)",
    "ln(1 + distinct IAM actions (or API operations) called in the hour)",
    "share of the hour's calls that failed",
    "ln(1 + calls refused for lack of permission: AccessDenied, Unauthorized*, Forbidden)",
    "share of the hour's calls that change something (not Get/List/Describe/Head)",
    "ln(1 + distinct actions the identity had never used before)",
    "1 if a source IP the identity had never used appeared in the hour",
    "1 if a region the identity had never used appeared in the hour",
    "1 if a user agent the identity had never used appeared in the hour",
    "how unusual the hour of day is for the identity: 0 = at least its average hour, 1 = never active then",
    "how unusual the day of week is for the identity: 0 = at least its average day, 1 = never active then",
    "ln(1 + days the identity had been idle before the hour's first call)",
];

/// Index of each feature in the vector (same order as [`FEATURE_NAMES`]).
pub mod index {
    pub const EVENTS: usize = 0;
    pub const DISTINCT_ACTIONS: usize = 1;
    pub const FAILURE_RATIO: usize = 2;
    pub const ACCESS_DENIED: usize = 3;
    pub const WRITE_RATIO: usize = 4;
    pub const NEW_ACTIONS: usize = 5;
    pub const NEW_SOURCE_IP: usize = 6;
    pub const NEW_REGION: usize = 7;
    pub const NEW_USER_AGENT: usize = 8;
    pub const HOUR_RARITY: usize = 9;
    pub const WEEKDAY_RARITY: usize = 10;
    pub const IDLE_DAYS: usize = 11;
}

/// One hour in milliseconds.
pub const HOUR_MS: i64 = 3_600_000;

/// How many event ids a window keeps for the explanation of an alert.
const MAX_EVENT_IDS: usize = 20;
/// Of those, how many are simply the hour's first events (the rest are the notable ones).
const FIRST_EVENT_IDS: usize = 8;

/// The start of the hour bucket holding `ms` (event time, ms since the epoch).
pub fn hour_start(ms: i64) -> i64 {
    ms - ms.rem_euclid(HOUR_MS)
}

/// What the identity's history says about one event (computed by the caller from its history store, before
/// the event is added to it).
#[derive(Debug, Clone, Copy, Default)]
pub struct Novelty {
    pub new_action: bool,
    pub new_ip: bool,
    pub new_region: bool,
    pub new_user_agent: bool,
    /// Share of the identity's past events in this event's hour of day (None: too little history).
    pub hour_share: Option<f64>,
    /// Share of the identity's past events in this event's day of week (None: too little history).
    pub weekday_share: Option<f64>,
    /// Days since the identity's previous event (None: first event ever).
    pub idle_days: Option<f64>,
}

impl Novelty {
    fn is_novel(&self) -> bool {
        self.new_action || self.new_ip || self.new_region || self.new_user_agent
    }
}

/// Accumulates one identity's events of one hour (event time). Kept in state across restarts, so it holds
/// counts and small sets only (action hashes, at most [`MAX_EVENT_IDS`] ids), never the events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HourWindow {
    start_ms: i64,
    events: u64,
    failures: u64,
    denied: u64,
    writes: u64,
    /// xxh3 of each distinct action: 8 bytes each however long the action's name.
    actions: BTreeSet<u64>,
    new_actions: BTreeSet<u64>,
    new_ip: bool,
    new_region: bool,
    new_user_agent: bool,
    hour_rarity: f64,
    weekday_rarity: f64,
    idle_days: Option<f64>,
    /// The window holds the identity's first event ever: everything is "new" for an identity without a
    /// past, which says nothing, so the novelty features of this window are 0.
    first_seen: bool,
    event_ids: Vec<String>,
}

impl HourWindow {
    /// An empty window for the hour starting at `hour_start_ms` (rounded down to the hour).
    pub fn new(hour_start_ms: i64) -> Self {
        HourWindow { start_ms: hour_start(hour_start_ms), ..HourWindow::default() }
    }

    /// The hour bucket's start (ms since the epoch).
    pub fn start_ms(&self) -> i64 {
        self.start_ms
    }

    /// The end of the hour bucket (exclusive).
    pub fn end_ms(&self) -> i64 {
        self.start_ms.saturating_add(HOUR_MS)
    }

    /// Accounts one event of this identity and hour. The caller picks the window by event time; an event of
    /// another hour is still counted (the window does not second-guess its caller).
    pub fn add(&mut self, ev: &Event, novelty: &Novelty) {
        self.events += 1;
        if ev.status == Status::Failure {
            self.failures += 1;
        }
        let denied = ev.status_code.as_deref().is_some_and(is_access_denied);
        if denied {
            self.denied += 1;
        }
        if is_write(ev) {
            self.writes += 1;
        }

        // An event that maps to no IAM action still called something: count its API operation instead.
        let mut keys: Vec<u64> = ev.actions.iter().map(|a| action_key(a)).collect();
        if keys.is_empty() {
            keys.push(action_key(&format!("{}:{}", ev.api.service, ev.api.operation)));
        }
        self.actions.extend(keys.iter().copied());
        if novelty.new_action {
            self.new_actions.extend(keys.iter().copied());
        }
        self.new_ip |= novelty.new_ip;
        self.new_region |= novelty.new_region;
        self.new_user_agent |= novelty.new_user_agent;

        // The first event of the hour carries the share from the history before this hour; later ones see
        // their own hour counted. The largest rarity is therefore the one that matters.
        if let Some(share) = finite(novelty.hour_share) {
            self.hour_rarity = self.hour_rarity.max(rarity(share, 24.0));
        }
        if let Some(share) = finite(novelty.weekday_share) {
            self.weekday_rarity = self.weekday_rarity.max(rarity(share, 7.0));
        }
        match novelty.idle_days {
            None => self.first_seen = true,
            Some(days) if days.is_finite() => {
                let days = days.max(0.0);
                self.idle_days = Some(self.idle_days.map_or(days, |d| d.max(days)));
            }
            Some(_) => {}
        }

        // Keep the hour's first calls (context) and then the notable ones (what an analyst wants to see).
        let notable = novelty.is_novel() || denied;
        let keep = self.event_ids.len() < FIRST_EVENT_IDS || (notable && self.event_ids.len() < MAX_EVENT_IDS);
        if keep && !self.event_ids.contains(&ev.uid) {
            self.event_ids.push(ev.uid.clone());
        }
    }

    /// Events accounted so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Ids of the events kept for explanations: the hour's first ones and the novel or refused ones.
    pub fn event_ids(&self) -> &[String] {
        &self.event_ids
    }

    /// The feature vector (order: [`FEATURE_NAMES`]). All values are finite and ≥ 0.
    pub fn features(&self) -> [f64; FEATURES] {
        use index::*;
        let mut f = [0.0; FEATURES];
        let events = self.events as f64;
        f[EVENTS] = events.ln_1p();
        f[DISTINCT_ACTIONS] = (self.actions.len() as f64).ln_1p();
        if self.events > 0 {
            f[FAILURE_RATIO] = self.failures as f64 / events;
            f[WRITE_RATIO] = self.writes as f64 / events;
        }
        f[ACCESS_DENIED] = (self.denied as f64).ln_1p();
        if !self.first_seen {
            f[NEW_ACTIONS] = (self.new_actions.len() as f64).ln_1p();
            f[NEW_SOURCE_IP] = flag(self.new_ip);
            f[NEW_REGION] = flag(self.new_region);
            f[NEW_USER_AGENT] = flag(self.new_user_agent);
            f[IDLE_DAYS] = self.idle_days.map_or(0.0, f64::ln_1p);
        }
        f[HOUR_RARITY] = self.hour_rarity;
        f[WEEKDAY_RARITY] = self.weekday_rarity;
        f
    }
}

/// The running mean of an identity's feature vectors: the profile that places an identity the model has
/// never seen into its nearest peer group. Small and serializable so the caller can keep it in state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FeatureMean {
    windows: u64,
    mean: [f64; FEATURES],
}

impl FeatureMean {
    pub fn add(&mut self, features: &[f64; FEATURES]) {
        self.windows += 1;
        let n = self.windows as f64;
        for (m, &x) in self.mean.iter_mut().zip(features) {
            if x.is_finite() {
                *m += (x - *m) / n;
            }
        }
    }

    pub fn windows(&self) -> u64 {
        self.windows
    }

    /// The mean so far (all zeros before the first window).
    pub fn mean(&self) -> &[f64; FEATURES] {
        &self.mean
    }
}

/// Whether a provider error code says the caller lacked permission (`AccessDenied`,
/// `AccessDeniedException`, `Client.UnauthorizedOperation`, `UnauthorizedAccess`, `Forbidden`, ...).
pub fn is_access_denied(code: &str) -> bool {
    let code = code.to_ascii_lowercase();
    code.contains("accessdenied") || code.contains("unauthorized") || code.contains("forbidden")
}

/// Whether the call changes something. The log's own `readOnly` wins; without it, the operation's verb.
pub fn is_write(ev: &Event) -> bool {
    match ev.read_only {
        Some(read_only) => !read_only,
        None => {
            let op = ev.api.operation.as_str();
            !["Get", "List", "Describe", "Head"].iter().any(|verb| op.starts_with(verb))
        }
    }
}

fn action_key(action: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(action.as_bytes())
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

fn finite(x: Option<f64>) -> Option<f64> {
    x.filter(|v| v.is_finite())
}

/// 0 when the share is at least the uniform share (1 / buckets), rising linearly to 1 at a share of 0.
fn rarity(share: f64, buckets: f64) -> f64 {
    (1.0 - share.clamp(0.0, 1.0) * buckets).clamp(0.0, 1.0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use grantwatch_types::{ActionMapping, Actor, Api, Cloud, EventTime, IdentityKind};

    /// A minimal event for tests of this crate.
    pub(crate) fn event(uid: &str, ms: i64, operation: &str, failure_code: Option<&str>) -> Event {
        Event {
            uid: uid.to_string(),
            time: EventTime(ms),
            cloud: Cloud::Aws,
            account_uid: "111122223333".into(),
            region: "eu-west-1".into(),
            actor: Actor {
                uid: "arn:aws:iam::111122223333:user/alice".into(),
                kind: IdentityKind::User,
                name: None,
                account_uid: None,
                session_name: None,
                principal_id: None,
                access_key_id: None,
                invoked_by: None,
                mfa_authenticated: None,
                on_behalf_of: None,
                human: None,
            },
            api: Api { service: "s3.amazonaws.com".into(), operation: operation.into() },
            actions: vec![format!("s3:{operation}")],
            mapping: ActionMapping::Direct,
            resources: vec![],
            status: if failure_code.is_some() { Status::Failure } else { Status::Success },
            status_code: failure_code.map(str::to_string),
            src_ip: Some("198.51.100.7".into()),
            user_agent: Some("aws-cli/2.15".into()),
            read_only: None,
            request: None,
            response: None,
            additional: None,
            error_message: None,
        }
    }

    fn known() -> Novelty {
        Novelty { hour_share: Some(0.1), weekday_share: Some(0.2), idle_days: Some(0.01), ..Novelty::default() }
    }

    #[test]
    fn names_are_unique_and_match_the_index() {
        let names: BTreeSet<_> = FEATURE_NAMES.iter().collect();
        assert_eq!(names.len(), FEATURES);
        assert_eq!(FEATURE_NAMES[index::ACCESS_DENIED], "access_denied_log1p");
        assert_eq!(FEATURE_NAMES[index::IDLE_DAYS], "idle_days_log1p");
    }

    #[test]
    fn a_window_of_a_handful_of_events() {
        let t0 = 1_700_000_000_000;
        let mut w = HourWindow::new(t0 + 1234);
        assert_eq!(w.start_ms(), hour_start(t0));
        let first = Novelty { idle_days: Some(2.0), ..known() };
        w.add(&event("e1", t0, "GetObject", None), &first);
        w.add(&event("e2", t0 + 1, "GetObject", None), &known());
        w.add(&event("e3", t0 + 2, "PutObject", Some("AccessDenied")), &known());
        let mut odd = event("e4", t0 + 3, "RunInstances", Some("Client.UnauthorizedOperation"));
        odd.actions = vec!["ec2:RunInstances".into()];
        w.add(&odd, &Novelty { new_action: true, new_ip: true, hour_share: Some(0.0), ..known() });
        w.add(&event("e5", t0 + 4, "ListBucket", Some("NoSuchBucket")), &known());
        let mut ro = event("e6", t0 + 5, "DeleteObject", None);
        ro.read_only = Some(true); // the log's flag wins over the verb
        w.add(&ro, &known());

        let f = w.features();
        use index::*;
        assert_eq!(w.events(), 6);
        assert!((f[EVENTS] - 7f64.ln()).abs() < 1e-12);
        // GetObject, PutObject, RunInstances, ListBucket, DeleteObject
        assert!((f[DISTINCT_ACTIONS] - 6f64.ln()).abs() < 1e-12);
        assert!((f[FAILURE_RATIO] - 3.0 / 6.0).abs() < 1e-12);
        assert!((f[ACCESS_DENIED] - 3f64.ln()).abs() < 1e-12);
        // PutObject and RunInstances write; DeleteObject is flagged read-only by the log
        assert!((f[WRITE_RATIO] - 2.0 / 6.0).abs() < 1e-12);
        assert!((f[NEW_ACTIONS] - 2f64.ln()).abs() < 1e-12);
        assert_eq!((f[NEW_SOURCE_IP], f[NEW_REGION], f[NEW_USER_AGENT]), (1.0, 0.0, 0.0));
        assert_eq!(f[HOUR_RARITY], 1.0);
        // weekday share 0.2 ≥ 1/7: a usual day
        assert_eq!(f[WEEKDAY_RARITY], 0.0);
        assert!((f[IDLE_DAYS] - 3f64.ln()).abs() < 1e-12);
        assert_eq!(w.event_ids(), ["e1", "e2", "e3", "e4", "e5", "e6"]);
    }

    #[test]
    fn access_denied_codes() {
        for code in ["AccessDenied", "AccessDeniedException", "Client.UnauthorizedOperation", "Forbidden"] {
            assert!(is_access_denied(code), "{code}");
        }
        for code in ["NoSuchBucket", "ThrottlingException", "ValidationError"] {
            assert!(!is_access_denied(code), "{code}");
        }
    }

    #[test]
    fn first_window_of_a_new_identity_has_no_novelty() {
        let t0 = 1_700_000_000_000;
        let mut w = HourWindow::new(t0);
        let all_new =
            Novelty { new_action: true, new_ip: true, new_region: true, new_user_agent: true, ..Novelty::default() };
        w.add(&event("e1", t0, "GetObject", None), &all_new);
        w.add(&event("e2", t0 + 1, "PutObject", None), &Novelty { idle_days: Some(0.0), ..all_new });
        let f = w.features();
        assert_eq!(f[index::NEW_ACTIONS..=index::NEW_USER_AGENT], [0.0; 4]);
        assert_eq!(f[index::IDLE_DAYS], 0.0);
        assert!(f[index::EVENTS] > 0.0);
    }

    #[test]
    fn keeps_first_and_notable_event_ids_and_survives_bad_input() {
        let t0 = 1_700_000_000_000;
        let mut w = HourWindow::new(t0);
        let weird = Novelty { hour_share: Some(f64::NAN), idle_days: Some(f64::INFINITY), ..known() };
        for i in 0..100 {
            let novelty = if i % 10 == 5 { Novelty { new_ip: true, ..weird } } else { weird };
            w.add(&event(&format!("e{i}"), t0 + i, "GetObject", None), &novelty);
        }
        let ids = w.event_ids();
        // e0..e7, then the novel ones after them: e15, e25, ..., e95
        assert_eq!(ids.len(), FIRST_EVENT_IDS + 9);
        assert_eq!(ids[FIRST_EVENT_IDS], "e15");
        assert!(w.features().iter().all(|x| x.is_finite() && *x >= 0.0));
        let back: HourWindow = serde_json::from_str(&serde_json::to_string(&w).unwrap()).unwrap();
        assert_eq!(back, w);
    }

    #[test]
    fn feature_mean_is_the_mean() {
        let mut m = FeatureMean::default();
        m.add(&[1.0; FEATURES]);
        m.add(&[3.0; FEATURES]);
        assert_eq!(m.windows(), 2);
        assert_eq!(m.mean(), &[2.0; FEATURES]);
    }
}
