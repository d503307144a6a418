//! PCI history: every [`PciUpdate`] the processor emits, kept in state, and the series read back.
//!
//! The processor writes each update it emits under [`keys::PCI_HISTORY`] (`pci-h\0{arn}\0{as_of}`) in
//! the same batch as the state the update was derived from: a crash before the batch loses both, a
//! replay of the same input closes the same windows and overwrites the same keys with the same values,
//! so the history is exact and never duplicated.
//!
//! Only identity points are stored. Account and cloud series are derived at read time
//! ([`rollup_daily`]): on each day every identity counts with its latest point at or before that day
//! (carried forward), and an account's PCI is the rounded mean over its acting identities (users,
//! roles, root, service accounts), as `accounts.json` aggregates; a cloud's is the same mean over the
//! acting identities of all its accounts (identity-weighted, not a mean of account means).

use std::collections::BTreeMap;

use grantwatch_state::{StateError, StateRead, Table, keys};
use grantwatch_types::{EventTime, IdentityKind, PciBand, PciUpdate, StatusFlag};
use serde::{Deserialize, Serialize};

use crate::stage::decode_json;

const PREFIX: &[u8] = keys::PCI_HISTORY.prefix;

/// One stored point: a [`PciUpdate`] without what the key says (ARN, time), with short field names
/// (a 5,000-identity org over 90 days stores ~450,000 of them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PciPoint {
    #[serde(rename = "a")]
    pub account: String,
    #[serde(rename = "k")]
    pub kind: IdentityKind,
    #[serde(rename = "s")]
    pub score: u8,
    #[serde(rename = "v")]
    pub version: String,
    #[serde(rename = "g")]
    pub granted: usize,
    #[serde(rename = "u")]
    pub used: usize,
    #[serde(rename = "h")]
    pub unused_high_risk: usize,
    #[serde(rename = "f", default, skip_serializing_if = "Vec::is_empty")]
    pub status: Vec<StatusFlag>,
    #[serde(rename = "l", default, skip_serializing_if = "Option::is_none")]
    pub last_activity: Option<EventTime>,
    #[serde(rename = "e")]
    pub events_in_lookback: u64,
    #[serde(rename = "n")]
    pub entitlements_known: bool,
    #[serde(rename = "b")]
    pub lookback_days: u32,
}

impl PciPoint {
    pub fn of(u: &PciUpdate) -> Self {
        Self {
            account: u.account.clone(),
            kind: u.kind,
            score: u.pci.score,
            version: u.pci.version.clone(),
            granted: u.granted,
            used: u.used,
            unused_high_risk: u.unused_high_risk,
            status: u.status.clone(),
            last_activity: u.last_activity,
            events_in_lookback: u.events_in_lookback,
            entitlements_known: u.entitlements_known,
            lookback_days: u.lookback_days,
        }
    }

    pub fn band(&self) -> PciBand {
        PciBand::of(self.score)
    }

    /// Whether the identity counts in an account's PCI (as in `accounts.json`).
    pub fn acts(&self) -> bool {
        acts(self.kind)
    }
}

/// Identities that count in an account's PCI: those that act. Groups hold permissions only through
/// their members.
pub fn acts(kind: IdentityKind) -> bool {
    matches!(kind, IdentityKind::User | IdentityKind::Role | IdentityKind::Root | IdentityKind::ServiceAccount)
}

/// The key of `arn`'s point as of `as_of`.
pub fn key(arn: &str, as_of: EventTime) -> Vec<u8> {
    let mut k = Vec::with_capacity(PREFIX.len() + arn.len() + 9);
    k.extend_from_slice(PREFIX);
    k.extend_from_slice(arn.as_bytes());
    k.push(0);
    k.extend_from_slice(&as_of.millis().to_be_bytes());
    k
}

/// The (key, value) to write for an update.
pub fn entry(u: &PciUpdate) -> Option<(Vec<u8>, Vec<u8>)> {
    serde_json::to_vec(&PciPoint::of(u)).ok().map(|v| (key(&u.arn, u.as_of), v))
}

fn split(k: &[u8]) -> Result<(&str, EventTime), StateError> {
    let rest = &k[PREFIX.len()..];
    if rest.len() < 9 || rest[rest.len() - 9] != 0 {
        return Err(keys::PCI_HISTORY.corrupt(k, "no ARN, \\0, 8-byte time"));
    }
    let (arn, t) = rest.split_at(rest.len() - 9);
    let arn = std::str::from_utf8(arn).map_err(|_| keys::PCI_HISTORY.corrupt(k, "ARN is not UTF-8"))?;
    let mut b = [0u8; 8];
    b.copy_from_slice(&t[1..]);
    Ok((arn, EventTime(i64::from_be_bytes(b))))
}

/// Visits every stored point, identity by identity (ARN order), each identity's in time order.
/// `visit` returns `false` to stop.
pub fn scan_all(
    state: &dyn StateRead,
    visit: &mut dyn FnMut(&str, EventTime, PciPoint) -> bool,
) -> Result<(), StateError> {
    scan(state, PREFIX, visit)
}

fn scan(
    state: &dyn StateRead,
    prefix: &[u8],
    visit: &mut dyn FnMut(&str, EventTime, PciPoint) -> bool,
) -> Result<(), StateError> {
    let mut err = None;
    state.scan_prefix(Table::Meta, prefix, &mut |k, v| {
        let r = split(k).and_then(|(arn, t)| decode_json::<PciPoint>(&keys::PCI_HISTORY, k, v).map(|p| (arn, t, p)));
        match r {
            Ok((arn, t, p)) => visit(arn, t, p),
            Err(e) => {
                err = Some(e);
                false
            }
        }
    })?;
    err.map_or(Ok(()), Err)
}

/// One identity's points in `[from, to]` (inclusive), in time order.
pub fn identity_series(
    state: &dyn StateRead,
    arn: &str,
    from: EventTime,
    to: EventTime,
) -> Result<Vec<(EventTime, PciPoint)>, StateError> {
    let mut prefix = PREFIX.to_vec();
    prefix.extend_from_slice(arn.as_bytes());
    prefix.push(0);
    let mut out = Vec::new();
    scan(state, &prefix, &mut |a, t, p| {
        if a == arn && t >= from && t <= to {
            out.push((t, p));
        }
        t <= to
    })?;
    Ok(out)
}

/// Every identity's points in `[from, to]`, by ARN.
pub fn all_series(
    state: &dyn StateRead,
    from: EventTime,
    to: EventTime,
) -> Result<BTreeMap<String, Vec<(EventTime, PciPoint)>>, StateError> {
    let mut out: BTreeMap<String, Vec<(EventTime, PciPoint)>> = BTreeMap::new();
    scan_all(state, &mut |arn, t, p| {
        if t >= from && t <= to {
            match out.get_mut(arn) {
                Some(v) => v.push((t, p)),
                None => {
                    out.insert(arn.to_string(), vec![(t, p)]);
                }
            }
        }
        true
    })?;
    Ok(out)
}

/// A group's PCI on one day: the rounded mean over the identities counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct DayFigure {
    pub day: EventTime,
    pub pci: u8,
    /// Acting identities with a point at or before this day.
    pub identities: u64,
}

#[derive(Default, Clone, Copy)]
struct Acc {
    sum: u64,
    n: u64,
}

/// Daily figures per group (the caller's `group_of` maps an identity to its group(s), e.g. its
/// account, its cloud), over the days `days` (ascending window boundaries). One pass over the
/// history, identities × days work: each identity's latest point at or before a day stands for it on
/// that day, acting identities only.
pub fn rollup_daily(
    state: &dyn StateRead,
    days: &[EventTime],
    group_of: &mut dyn FnMut(&str, &PciPoint) -> Vec<String>,
) -> Result<BTreeMap<String, Vec<DayFigure>>, StateError> {
    let mut acc: BTreeMap<String, Vec<Acc>> = BTreeMap::new();
    let mut cur: Option<(String, Vec<(EventTime, PciPoint)>)> = None;
    let mut flush = |arn: &str, pts: &[(EventTime, PciPoint)], acc: &mut BTreeMap<String, Vec<Acc>>| {
        let Some((_, last)) = pts.last() else { return };
        if !last.acts() {
            return;
        }
        let groups = group_of(arn, last);
        let mut i = 0;
        let mut score: Option<u8> = None;
        let mut per_day = Vec::with_capacity(days.len());
        for d in days {
            while i < pts.len() && pts[i].0 <= *d {
                score = Some(pts[i].1.score);
                i += 1;
            }
            per_day.push(score);
        }
        for g in groups {
            let a = acc.entry(g).or_insert_with(|| vec![Acc::default(); days.len()]);
            for (slot, s) in a.iter_mut().zip(&per_day) {
                if let Some(s) = s {
                    slot.sum += u64::from(*s);
                    slot.n += 1;
                }
            }
        }
    };
    let to = days.last().copied().unwrap_or(EventTime(i64::MIN));
    scan_all(state, &mut |arn, t, p| {
        if t > to {
            return true;
        }
        match &mut cur {
            Some((a, pts)) if a == arn => pts.push((t, p)),
            _ => {
                if let Some((a, pts)) = cur.take() {
                    flush(&a, &pts, &mut acc);
                }
                cur = Some((arn.to_string(), vec![(t, p)]));
            }
        }
        true
    })?;
    if let Some((a, pts)) = cur.take() {
        flush(&a, &pts, &mut acc);
    }
    Ok(acc
        .into_iter()
        .map(|(g, v)| {
            let figs = v
                .iter()
                .zip(days)
                .map(|(a, d)| DayFigure {
                    day: *d,
                    pci: if a.n > 0 { ((a.sum as f64) / (a.n as f64)).round() as u8 } else { 0 },
                    identities: a.n,
                })
                .collect();
            (g, figs)
        })
        .collect())
}

/// The window boundaries (UTC midnights when `window_ms` is a day) from the first at or after `from`
/// to the last at or before `to`.
pub fn days_between(from: EventTime, to: EventTime, window_ms: i64) -> Vec<EventTime> {
    if window_ms <= 0 || to < from {
        return Vec::new();
    }
    let first = from.millis().div_euclid(window_ms) * window_ms;
    let first = if first < from.millis() { first + window_ms } else { first };
    let mut out = Vec::new();
    let mut t = first;
    while t <= to.millis() {
        out.push(EventTime(t));
        t += window_ms;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use grantwatch_state::{MemStore, StateStore, WriteBatch};
    use grantwatch_types::Pci;

    const DAY: i64 = 24 * 3600 * 1000;

    fn update(arn: &str, account: &str, kind: IdentityKind, day: i64, score: u8) -> PciUpdate {
        PciUpdate {
            arn: arn.into(),
            account: account.into(),
            kind,
            as_of: EventTime(day * DAY),
            lookback_days: 90,
            pci: Pci { score, band: PciBand::of(score), version: "1".into(), unused_risk: 0.0, granted_risk: 0.0 },
            granted: 10,
            used: 1,
            unused_high_risk: 0,
            status: vec![],
            last_activity: None,
            events_in_lookback: 1,
            entitlements_known: true,
        }
    }

    fn store(updates: &[PciUpdate]) -> MemStore {
        let s = MemStore::new();
        let mut b = WriteBatch::new();
        for u in updates {
            let (k, v) = entry(u).unwrap();
            b.put(Table::Meta, k, v);
        }
        s.write(b).unwrap();
        s
    }

    #[test]
    fn series_read_back_in_time_order_and_accounts_carry_points_forward() {
        let a = "arn:aws:iam::1:user/a";
        let ab = "arn:aws:iam::1:user/ab"; // a prefix of it must not leak into a's series
        let g = "arn:aws:iam::1:group/g";
        let s = store(&[
            update(a, "1", IdentityKind::User, 11, 40),
            update(a, "1", IdentityKind::User, 10, 20),
            update(ab, "1", IdentityKind::User, 12, 80),
            update(g, "1", IdentityKind::Group, 10, 99),
        ]);
        let series = identity_series(&s, a, EventTime(0), EventTime(i64::MAX)).unwrap();
        assert_eq!(series.iter().map(|(t, p)| (t.millis() / DAY, p.score)).collect::<Vec<_>>(), [(10, 20), (11, 40)]);
        assert_eq!(identity_series(&s, a, EventTime(11 * DAY), EventTime(11 * DAY)).unwrap().len(), 1);
        assert_eq!(all_series(&s, EventTime(0), EventTime(i64::MAX)).unwrap().len(), 3);

        let days = days_between(EventTime(10 * DAY), EventTime(13 * DAY), DAY);
        let r = rollup_daily(&s, &days, &mut |_, p| vec![p.account.clone()]).unwrap();
        let figs: Vec<(u8, u64)> = r["1"].iter().map(|f| (f.pci, f.identities)).collect();
        // Day 10: a=20; day 11: a=40; day 12: a=40 (carried), ab=80 → 60; day 13 the same. The group never counts.
        assert_eq!(figs, [(20, 1), (40, 1), (60, 2), (60, 2)]);
    }

    #[test]
    fn a_corrupt_point_is_an_error_naming_the_key() {
        let s = MemStore::new();
        let mut b = WriteBatch::new();
        b.put(Table::Meta, key("arn:x", EventTime(5)), b"{not json".to_vec());
        s.write(b).unwrap();
        let e = all_series(&s, EventTime(0), EventTime(10)).unwrap_err();
        assert!(e.to_string().contains("pci-h"), "{e}");
    }
}
