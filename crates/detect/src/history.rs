//! What each identity did before: the memory behind first-time anomalies and the models' novelty
//! features.
//!
//! A [`History`] keeps, per item (action, resource, region, source network, user-agent family, role
//! passed to compute), the last UTC day it was seen, and the identity's hour-of-day and weekday
//! histograms. "First time" means "not seen within the lookback" (30, 60 or 90 days), so an item
//! unused for longer than the lookback is new again. Each map is capped; past the cap the items seen
//! longest ago are forgotten first (they are the ones the lookback would forget next anyway).

use grantwatch_types::Event;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

const DAY_MS: i64 = 86_400_000;

/// Items remembered per map before the oldest are forgotten.
const CAP_ITEMS: usize = 4_096;
/// Source networks and user agents remembered per identity.
const CAP_SMALL: usize = 256;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// Time of the first and the latest event seen.
    pub first_ms: Option<i64>,
    pub last_ms: Option<i64>,
    pub events: u64,
    pub actions: FxHashMap<String, i32>,
    pub resources: FxHashMap<String, i32>,
    pub regions: FxHashMap<String, i32>,
    pub networks: FxHashMap<String, i32>,
    pub agents: FxHashMap<String, i32>,
    pub passed_roles: FxHashMap<String, i32>,
    pub hours: [u32; 24],
    pub weekdays: [u32; 7],
}

/// What one event shows that the history has not seen (computed before the event is recorded).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Novel {
    /// The identity's history is older than `min_history_days`: novelty means something.
    pub established: bool,
    pub actions: Vec<String>,
    pub resources: Vec<String>,
    pub region: bool,
    pub network: bool,
    /// The identity used [`ROAMING_NETWORKS`] or more networks within the lookback (computed only
    /// with a new network and a new region or a pause of a day or more, where it is read).
    pub roaming: bool,
    pub agent: bool,
    pub passed_role: Option<String>,
    /// Share of the identity's past events in this event's hour of day and weekday (None: too few).
    pub hour_share: Option<f64>,
    pub weekday_share: Option<f64>,
    /// Days since the previous event (None: first event).
    pub idle_days: Option<f64>,
}

/// Networks within the lookback from which an identity counts as roaming: a new network says little.
pub const ROAMING_NETWORKS: usize = 8;

/// Events of history needed before hour and weekday shares are meaningful.
const MIN_EVENTS_FOR_SHARES: u64 = 50;

impl History {
    /// Compares `ev` with the history, then records it. `resources` and `passed_role` are the event's
    /// resources (normalized with [`resource_key`]) and the role it passes to compute, if any.
    pub fn observe(
        &mut self,
        ev: &Event,
        passed_role: Option<&str>,
        lookback_days: u32,
        min_history_days: u32,
    ) -> Novel {
        let t = ev.time.millis();
        let day = day_of(t);
        let lookback = lookback_days as i32;
        let is_new = |map: &FxHashMap<String, i32>, key: &str| map.get(key).is_none_or(|d| day - d > lookback);
        let established = self.first_ms.is_some_and(|f| t - f >= i64::from(min_history_days) * DAY_MS);
        let hour = ((t.rem_euclid(DAY_MS)) / 3_600_000) as usize;
        // 1970-01-01 was a Thursday; weekday 0 = Monday.
        let weekday = ((day as i64 + 3).rem_euclid(7)) as usize;
        let shares = self.events >= MIN_EVENTS_FOR_SHARES;
        let mut novel = Novel {
            established,
            region: is_new(&self.regions, &ev.region),
            hour_share: shares.then(|| f64::from(self.hours[hour]) / self.events as f64),
            weekday_share: shares.then(|| f64::from(self.weekdays[weekday]) / self.events as f64),
            idle_days: self.last_ms.map(|l| (t - l).max(0) as f64 / DAY_MS as f64),
            ..Novel::default()
        };
        if let Some(ip) = &ev.src_ip {
            novel.network = is_new(&self.networks, &network_key(ip));
        }
        if let Some(ua) = &ev.user_agent {
            novel.agent = is_new(&self.agents, agent_family(ua));
        }
        if novel.network && (novel.region || novel.idle_days.is_some_and(|d| d >= 1.0)) {
            novel.roaming = self.networks.values().filter(|d| day - **d <= lookback).count() >= ROAMING_NETWORKS;
        }
        if ev.status == grantwatch_types::Status::Success {
            novel.actions = ev.actions.iter().filter(|a| is_new(&self.actions, a)).cloned().collect();
            for r in &ev.resources {
                let k = resource_key(r);
                if is_new(&self.resources, k) && !novel.resources.iter().any(|x| x == k) {
                    novel.resources.push(k.to_string());
                }
            }
            if let Some(role) = passed_role
                && is_new(&self.passed_roles, role)
            {
                novel.passed_role = Some(role.to_string());
            }
        }
        self.record(ev, passed_role, day, hour, weekday);
        novel
    }

    fn record(&mut self, ev: &Event, passed_role: Option<&str>, day: i32, hour: usize, weekday: usize) {
        let t = ev.time.millis();
        self.first_ms = Some(self.first_ms.map_or(t, |f| f.min(t)));
        self.last_ms = Some(self.last_ms.map_or(t, |l| l.max(t)));
        self.events += 1;
        self.hours[hour] += 1;
        self.weekdays[weekday] += 1;
        touch(&mut self.regions, &ev.region, day, CAP_SMALL);
        if let Some(ip) = &ev.src_ip {
            touch(&mut self.networks, &network_key(ip), day, CAP_SMALL);
        }
        if let Some(ua) = &ev.user_agent {
            touch(&mut self.agents, agent_family(ua), day, CAP_SMALL);
        }
        if ev.status == grantwatch_types::Status::Success {
            for a in &ev.actions {
                touch(&mut self.actions, a, day, CAP_ITEMS);
            }
            for r in &ev.resources {
                touch(&mut self.resources, resource_key(r), day, CAP_ITEMS);
            }
            if let Some(role) = passed_role {
                touch(&mut self.passed_roles, role, day, CAP_SMALL);
            }
        }
    }
}

impl History {
    /// Whether the identity used `action` successfully within the lookback before `t`: permission it
    /// holds on its own, not only through a grant.
    pub fn knows_action(&self, action: &str, t: i64, lookback_days: u32) -> bool {
        self.actions.get(action).is_some_and(|d| day_of(t) - d <= lookback_days as i32)
    }

    /// `ev` as the identity's own history should see it when an on-demand grant gave it the actions
    /// `granted` (the whole call when `whole`): without the granted actions it had not used on its own
    /// within the lookback, and for a whole call without the resources it had not touched, so that what
    /// only the grant allowed is neither news now nor learned as a habit. What it already did on its own
    /// stays, and stays fresh.
    pub fn without_new(&self, ev: &Event, granted: &[String], whole: bool, lookback_days: u32) -> Event {
        let t = ev.time.millis();
        let lookback = lookback_days as i32;
        let day = day_of(t);
        let known = |map: &FxHashMap<String, i32>, key: &str| map.get(key).is_some_and(|d| day - d <= lookback);
        let mut own = ev.clone();
        own.actions.retain(|a| !granted.contains(a) || known(&self.actions, a));
        if whole {
            own.resources.retain(|r| known(&self.resources, resource_key(r)));
        }
        own
    }
}

fn touch(map: &mut FxHashMap<String, i32>, key: &str, day: i32, cap: usize) {
    match map.get_mut(key) {
        Some(d) => *d = (*d).max(day),
        None => {
            if map.len() >= cap {
                // Forget the oldest quarter at once, so eviction stays rare.
                let mut days: Vec<i32> = map.values().copied().collect();
                days.sort_unstable();
                let cut = days[days.len() / 4];
                map.retain(|_, d| *d > cut);
            }
            map.insert(key.to_string(), day);
        }
    }
}

pub fn day_of(ms: i64) -> i32 {
    ms.div_euclid(DAY_MS) as i32
}

/// Resources are compared at the level a person thinks of: an S3 object counts as its bucket, and so
/// does a GCP Cloud Storage object (`projects/_/buckets/B/objects/O` → `projects/_/buckets/B`).
pub fn resource_key(arn: &str) -> &str {
    if let Some(rest) = arn.strip_prefix("arn:aws:s3:::") {
        return match rest.find('/') {
            Some(at) => &arn[..13 + at],
            None => arn,
        };
    }
    match arn.find("/objects/") {
        Some(at) if arn.starts_with("projects/_/buckets/") => &arn[..at],
        _ => arn,
    }
}

/// Source addresses are compared by network (/24 for IPv4, /48 for IPv6): an office's DHCP pool is one
/// place. AWS service names (`lambda.amazonaws.com`) stay as they are.
pub fn network_key(ip: &str) -> String {
    if let Ok(v4) = ip.parse::<std::net::Ipv4Addr>() {
        let o = v4.octets();
        return format!("{}.{}.{}.0/24", o[0], o[1], o[2]);
    }
    if let Ok(v6) = ip.parse::<std::net::Ipv6Addr>() {
        let s = v6.segments();
        return format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2]);
    }
    ip.to_string()
}

/// A user agent's family: its first product token, version cut to the major (`aws-cli/2`,
/// `Boto3/1`), so upgrades are not novelty but a different tool is.
pub fn agent_family(ua: &str) -> &str {
    let token = ua.split_whitespace().next().unwrap_or(ua);
    match token.find('/') {
        Some(slash) => {
            let major_end = token[slash + 1..].find('.').map_or(token.len(), |d| slash + 1 + d);
            &token[..major_end]
        }
        None => token,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grantwatch_types::EventTime;

    fn ev(at_ms: i64, action: &str, ip: &str, region: &str) -> Event {
        let mut e = grantwatch_core::testing::event("x", EventTime(at_ms));
        e.actions = vec![action.into()];
        e.src_ip = Some(ip.into());
        e.region = region.into();
        e.user_agent = Some("aws-cli/2.13.5 Python/3.11.4".into());
        e
    }

    #[test]
    fn keys_normalize_what_a_person_would_call_the_same() {
        assert_eq!(resource_key("arn:aws:s3:::bucket/a/b.txt"), "arn:aws:s3:::bucket");
        assert_eq!(resource_key("arn:aws:s3:::bucket"), "arn:aws:s3:::bucket");
        assert_eq!(resource_key("arn:aws:iam::1:role/x"), "arn:aws:iam::1:role/x");
        assert_eq!(resource_key("projects/_/buckets/shop-assets/objects/a/b.png"), "projects/_/buckets/shop-assets");
        assert_eq!(resource_key("projects/_/buckets/shop-assets"), "projects/_/buckets/shop-assets");
        assert_eq!(network_key("198.51.100.7"), "198.51.100.0/24");
        assert_eq!(network_key("lambda.amazonaws.com"), "lambda.amazonaws.com");
        assert_eq!(agent_family("aws-cli/2.13.5 Python/3.11.4"), "aws-cli/2");
        assert_eq!(agent_family("Boto3/1.28.0 md/Botocore#1.31.0"), "Boto3/1");
        assert_eq!(agent_family("console.amazonaws.com"), "console.amazonaws.com");
    }

    #[test]
    fn novelty_respects_lookback_and_establishment() {
        let day = DAY_MS;
        let t0 = 20_000 * day;
        let mut h = History::default();
        let n = h.observe(&ev(t0, "s3:GetObject", "10.0.0.1", "us-east-1"), None, 30, 7);
        assert!(!n.established, "no history yet");
        assert_eq!(n.idle_days, None);
        let n = h.observe(&ev(t0 + 8 * day, "s3:GetObject", "10.0.0.9", "us-east-1"), None, 30, 7);
        assert!(n.established);
        assert!(n.actions.is_empty() && !n.network && !n.region, "{n:?}");
        assert_eq!(n.idle_days, Some(8.0));
        let n = h.observe(&ev(t0 + 9 * day, "iam:CreateUser", "203.0.113.5", "eu-west-1"), None, 30, 7);
        assert_eq!(n.actions, ["iam:CreateUser"]);
        assert!(n.network && n.region);
        // 31 days after its last use, GetObject is new again under a 30-day lookback, not under 90.
        let mut h90 = h.clone();
        let n = h.observe(&ev(t0 + 39 * day + 1, "s3:GetObject", "10.0.0.1", "us-east-1"), None, 30, 7);
        assert_eq!(n.actions, ["s3:GetObject"]);
        let n = h90.observe(&ev(t0 + 39 * day + 1, "s3:GetObject", "10.0.0.1", "us-east-1"), None, 90, 7);
        assert!(n.actions.is_empty());
    }

    #[test]
    fn maps_stay_capped() {
        let mut m = FxHashMap::default();
        for i in 0..1000 {
            touch(&mut m, &format!("k{i}"), i, 100);
        }
        assert!(m.len() <= 100);
        assert!(m.contains_key("k999"), "the newest survive");
    }
}
