//! Usage accounting: normalized events in, usage state out.
//!
//! For every identity the stage keeps, as `(first_seen, last_seen)` spans in [`Table::Usage`]:
//! each IAM action it exercised, each resource it touched, each access key and role-session name it
//! used, and its activity overall; and in [`Table::Counters`], its number of events per UTC day.
//!
//! Exactly-once in effect: spans merge by min/max, so replaying an event cannot change them; counters
//! are only bumped for an event id not yet in [`Table::Seen`], and the id is written in the same batch
//! as the bump. Two records are the same event only when their eventID, identity, event time and
//! operation all agree ([`event_seen_key`]): a re-delivered event carries all four unchanged, while a
//! forged or colliding eventID shared by records of other identities or times cannot hide them. The
//! key starts with the UTC day so that old ids can be pruned by day.
//!
//! Memory is bounded by what is pending, not by the number of events: the runner calls
//! [`Stage::snapshot`] whenever [`Stage::pending`] grows past its budget.

use grantwatch_state::keys::{self, KeySpace};
use grantwatch_state::{SeenSpan, StateRead, Table, WriteBatch, encode_counter};
use grantwatch_types::{ActionMapping, Event, EventTime, IdentityKind};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};

use crate::stage::{Cx, Stage, StageError};

const SEP: u8 = 0;

/// Kinds of usage keys; each is a key space of [`Table::Usage`] in the registry ([`UsageKind::space`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageKind {
    Action,
    Resource,
    AccessKey,
    Session,
    /// Any activity of the identity (key: just the identity).
    Identity,
}

impl UsageKind {
    pub fn space(self) -> &'static KeySpace {
        match self {
            UsageKind::Action => &keys::USAGE_ACTION,
            UsageKind::Resource => &keys::USAGE_RESOURCE,
            UsageKind::AccessKey => &keys::USAGE_ACCESS_KEY,
            UsageKind::Session => &keys::USAGE_SESSION,
            UsageKind::Identity => &keys::USAGE_IDENTITY,
        }
    }
}

/// Key of a usage span: `kind identity \0 item`.
pub fn usage_key(kind: UsageKind, identity: &str, item: &str) -> Vec<u8> {
    let prefix = kind.space().prefix;
    let mut k = Vec::with_capacity(prefix.len() + 1 + identity.len() + item.len());
    k.extend_from_slice(prefix);
    k.extend_from_slice(identity.as_bytes());
    k.push(SEP);
    k.extend_from_slice(item.as_bytes());
    k
}

/// The key of the span covering all events (first and latest event time seen).
pub const ALL_EVENTS_KEY: &[u8] = keys::USAGE_ALL_EVENTS.prefix;

/// Key of an identity's event counter for one UTC day.
pub fn day_counter_key(identity: &str, day: i64) -> Vec<u8> {
    let mut k = Vec::with_capacity(keys::DAY_COUNTER.prefix.len() + 9 + identity.len());
    k.extend_from_slice(keys::DAY_COUNTER.prefix);
    k.extend_from_slice(identity.as_bytes());
    k.push(SEP);
    k.extend_from_slice(&day.to_be_bytes());
    k
}

/// A [`Table::Seen`] key: the event's UTC day (big-endian, so ids sort and can be pruned by day), then a
/// 128-bit XXH3 hash of what makes an event the same event. Fixed-size keys need no allocation per event
/// and keep the table small; two distinct events of one day collide with probability ~2^-128 times the
/// number of pairs.
pub type SeenKey = [u8; 24];

/// Usage's seen key of an event; see [`event_seen_key_with_seed`].
pub fn event_seen_key(ev: &Event) -> SeenKey {
    event_seen_key_with_seed(ev, keys::SEEN_SEED_USAGE)
}

/// The seen key of an event: its day, then a hash of (eventID, identity, event time, service,
/// operation). Every field is length-prefixed, so no two different tuples hash the same bytes.
/// `seed` separates owners that share one store (usage and detection keep their own seen ids).
pub fn event_seen_key_with_seed(ev: &Event, seed: u64) -> SeenKey {
    let mut h = xxhash_rust::xxh3::Xxh3::with_seed(seed);
    for part in [ev.uid.as_str(), ev.actor.uid.as_str(), ev.api.service.as_str(), ev.api.operation.as_str()] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.update(&ev.time.millis().to_le_bytes());
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&ev.time.day().to_be_bytes());
    k[8..].copy_from_slice(&h.digest128().to_be_bytes());
    k
}

/// Key of an identity's descriptive record in [`Table::Meta`].
pub fn identity_meta_key(identity: &str) -> Vec<u8> {
    keys::IDENTITY_META.key_str(identity)
}

/// What the logs say about an identity that may not be in any IAM snapshot (root, other accounts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityMeta {
    pub kind: IdentityKind,
    pub account: String,
    pub name: String,
}

/// The result of offering one event to the stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    Counted,
    /// The event id was already counted (in this run, or in state from an earlier one).
    Duplicate,
}

const ITEM_KINDS: [UsageKind; 4] = [UsageKind::Action, UsageKind::Resource, UsageKind::AccessKey, UsageKind::Session];

#[derive(Default)]
struct IdentityDelta {
    meta: Option<IdentityMeta>,
    /// Per item kind (actions, resources, access keys, sessions): item → span.
    spans: [FxHashMap<String, SeenSpan>; 4],
    days: FxHashMap<i64, u64>,
    activity: Option<SeenSpan>,
}

/// The usage-accounting stage.
#[derive(Default)]
pub struct UsageStage {
    identities: FxHashMap<String, IdentityDelta>,
    /// Event ids counted since the last snapshot.
    seen: FxHashSet<SeenKey>,
    /// Event ids of the last snapshot, until the runner says its batch is written ([`UsageStage::committed`]):
    /// meanwhile they are neither in `seen` nor readable from state, yet must still count as seen.
    in_flight: FxHashSet<SeenKey>,
    /// Event ids this stage wrote to state in earlier snapshots (may answer "maybe", never misses).
    written: SeenFilter,
    /// Whether state held event ids before this stage started: then every id must be looked up.
    state_had_ids: bool,
    all_events: Option<SeenSpan>,
    pending: usize,
}

impl UsageStage {
    /// A stage over `state`. Looking up every event id in state is the costliest part of accounting;
    /// when state holds no ids yet (a fresh run), only ids this stage itself wrote can be there, and a
    /// filter of those spares nearly every lookup.
    pub fn new(state: &dyn StateRead) -> Result<Self, grantwatch_state::StateError> {
        let mut state_had_ids = false;
        state.scan_prefix(Table::Seen, b"", &mut |_, _| {
            state_had_ids = true;
            false
        })?;
        Ok(Self { state_had_ids, written: SeenFilter::new(), ..Self::default() })
    }
}

impl UsageStage {
    /// Adds what this stage holds pending (not yet snapshot) about `identity` to `usage` loaded from
    /// state, so a caller sees every event offered so far without forcing a write. Events of a snapshot
    /// whose batch is still in flight are not included: runners that call this write their batches
    /// before offering more events.
    pub fn overlay_pending(&self, identity: &str, usage: &mut IdentityUsage) {
        let Some(d) = self.identities.get(identity) else { return };
        if let Some(a) = d.activity {
            widen(&mut usage.activity, a);
        }
        let lists = [&mut usage.actions, &mut usage.resources, &mut usage.access_keys, &mut usage.sessions];
        for (list, spans) in lists.into_iter().zip(&d.spans) {
            for (item, span) in spans {
                match list.iter_mut().find(|(name, _)| name == item) {
                    Some((_, s)) => *s = s.widen(*span),
                    None => list.push((item.clone(), *span)),
                }
            }
        }
        for (day, n) in &d.days {
            match usage.days.iter_mut().find(|(d, _)| d == day) {
                Some((_, c)) => *c += n,
                None => usage.days.push((*day, *n)),
            }
        }
    }
}

/// A fixed-size Bloom filter of event-id keys: memory stays flat whatever the number of events; when it
/// fills up it answers "maybe" more often, which only costs lookups, never correctness.
#[derive(Default)]
struct SeenFilter {
    bits: Vec<u64>,
}

impl SeenFilter {
    /// 2^22 bits (512 KiB): ~1% false positives at 400,000 ids, 3 probes.
    const BITS_LOG2: u32 = 22;

    fn new() -> Self {
        Self { bits: vec![0; 1 << (Self::BITS_LOG2 - 6)] }
    }

    fn probes(key: &[u8]) -> [usize; 3] {
        let mut h = rustc_hash::FxHasher::default();
        std::hash::Hasher::write(&mut h, key);
        let h = std::hash::Hasher::finish(&h);
        let (a, b) = (h as u32 as u64, (h >> 32) | 1);
        let mask = (1u64 << Self::BITS_LOG2) - 1;
        [0u64, 1, 2].map(|i| (a.wrapping_add(i.wrapping_mul(b)) & mask) as usize)
    }

    fn insert(&mut self, key: &[u8]) {
        for p in Self::probes(key) {
            if let Some(w) = self.bits.get_mut(p >> 6) {
                *w |= 1 << (p & 63);
            }
        }
    }

    fn may_contain(&self, key: &[u8]) -> bool {
        // An empty (default-built) filter has no words and answers "maybe": safe.
        Self::probes(key).iter().all(|&p| self.bits.get(p >> 6).is_none_or(|w| w & (1 << (p & 63)) != 0))
    }
}

fn widen(slot: &mut Option<SeenSpan>, t: SeenSpan) {
    *slot = Some(slot.map_or(t, |s| s.widen(t)));
}

impl IdentityDelta {
    fn touch(&mut self, kind: UsageKind, item: &str, t: SeenSpan, pending: &mut usize) {
        let map = &mut self.spans[ITEM_KINDS.iter().position(|k| *k == kind).unwrap_or(0)];
        // Look up by borrowed key first: the common case (item already pending) allocates nothing.
        if let Some(s) = map.get_mut(item) {
            *s = s.widen(t);
        } else {
            map.insert(item.to_owned(), t);
            *pending += 1;
        }
    }
}

impl Stage for UsageStage {
    type In = Event;
    type Out = Observed;

    fn process(&mut self, ev: &Event, cx: &mut Cx<'_, Observed>) -> Result<(), StageError> {
        let day = ev.time.day();
        let seen = event_seen_key(ev);
        let maybe_stored = self.state_had_ids || self.written.may_contain(&seen);
        if self.seen.contains(&seen)
            || self.in_flight.contains(&seen)
            || (maybe_stored && cx.state.get(Table::Seen, &seen)?.is_some())
        {
            cx.out.push(Observed::Duplicate);
            return Ok(());
        }
        self.seen.insert(seen);
        self.pending += 1;
        let t = SeenSpan::at(ev.time.millis());
        widen(&mut self.all_events, t);

        let id = &ev.actor.uid;
        let delta = match self.identities.get_mut(id.as_str()) {
            Some(d) => d,
            None => {
                self.pending += 1;
                self.identities.entry(id.clone()).or_default()
            }
        };
        if delta.meta.is_none() {
            delta.meta = Some(IdentityMeta {
                kind: ev.actor.kind,
                account: ev.actor.account_uid.clone().unwrap_or_else(|| ev.account_uid.clone()),
                name: ev.actor.name.clone().unwrap_or_default(),
            });
        }
        widen(&mut delta.activity, t);
        *delta.days.entry(day).or_insert(0) += 1;
        if ev.mapping != ActionMapping::NoPermission {
            for action in &ev.actions {
                delta.touch(UsageKind::Action, action, t, &mut self.pending);
            }
        }
        for r in &ev.resources {
            delta.touch(UsageKind::Resource, r, t, &mut self.pending);
        }
        if let Some(k) = &ev.actor.access_key_id {
            delta.touch(UsageKind::AccessKey, k, t, &mut self.pending);
        }
        if let Some(s) = &ev.actor.session_name {
            delta.touch(UsageKind::Session, s, t, &mut self.pending);
        }
        cx.out.push(Observed::Counted);
        Ok(())
    }

    fn snapshot(&mut self, batch: &mut WriteBatch) -> Result<(), StageError> {
        for (id, d) in self.identities.drain() {
            if let Some(json) = d.meta.as_ref().and_then(|m| serde_json::to_vec(m).ok()) {
                batch.put(Table::Meta, identity_meta_key(&id), json);
            }
            if let Some(a) = d.activity {
                batch.merge(Table::Usage, usage_key(UsageKind::Identity, &id, ""), a.encode().to_vec());
            }
            for (kind, spans) in ITEM_KINDS.iter().zip(d.spans) {
                for (item, span) in spans {
                    batch.merge(Table::Usage, usage_key(*kind, &id, &item), span.encode().to_vec());
                }
            }
            for (day, n) in d.days {
                batch.merge(Table::Counters, day_counter_key(&id, day), encode_counter(n).to_vec());
            }
        }
        // Sorted: RocksDB inserts ascending keys into its memtable much faster than random ones.
        let mut seen: Vec<&SeenKey> = self.seen.iter().collect();
        seen.sort_unstable();
        for key in seen {
            self.written.insert(key);
            batch.put(Table::Seen, key.to_vec(), Vec::new());
        }
        // Kept until `committed`: the batch may not be written yet while more events arrive.
        self.in_flight.extend(self.seen.drain());
        if let Some(s) = self.all_events.take() {
            batch.merge(Table::Usage, ALL_EVENTS_KEY.to_vec(), s.encode().to_vec());
        }
        self.pending = 0;
        Ok(())
    }

    /// The batch of the last snapshot is durably written: its event ids are now found in state.
    fn committed(&mut self) {
        self.in_flight.clear();
    }

    fn pending(&self) -> usize {
        self.pending
    }
}

/// Everything state holds about one identity's usage.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IdentityUsage {
    pub activity: Option<SeenSpan>,
    /// Action name (catalog spelling) → span.
    pub actions: Vec<(String, SeenSpan)>,
    pub resources: Vec<(String, SeenSpan)>,
    pub access_keys: Vec<(String, SeenSpan)>,
    pub sessions: Vec<(String, SeenSpan)>,
    /// `(day since epoch, events)`.
    pub days: Vec<(i64, u64)>,
}

impl IdentityUsage {
    /// Reads an identity's usage from state. Resources are read only when asked for: an identity that
    /// touches millions of objects would otherwise bring them all into memory.
    pub fn load(
        state: &dyn StateRead,
        identity: &str,
        with_resources: bool,
    ) -> Result<IdentityUsage, grantwatch_state::StateError> {
        let mut u = IdentityUsage::default();
        let mut prefix = Vec::with_capacity(identity.len() + 2);
        for kind in
            [UsageKind::Identity, UsageKind::Action, UsageKind::Resource, UsageKind::AccessKey, UsageKind::Session]
        {
            if kind == UsageKind::Resource && !with_resources {
                continue;
            }
            prefix.clear();
            prefix.extend_from_slice(kind.space().prefix);
            prefix.extend_from_slice(identity.as_bytes());
            prefix.push(SEP);
            let plen = prefix.len();
            let mut corrupt = None;
            state.scan_prefix(Table::Usage, &prefix, &mut |k, v| {
                let span = match kind.space().decode_span(k, v) {
                    Ok(span) => span,
                    Err(e) => {
                        corrupt = Some(e);
                        return false;
                    }
                };
                let item = String::from_utf8_lossy(k.get(plen..).unwrap_or_default()).into_owned();
                match kind {
                    UsageKind::Identity => u.activity = Some(span),
                    UsageKind::Action => u.actions.push((item, span)),
                    UsageKind::Resource => u.resources.push((item, span)),
                    UsageKind::AccessKey => u.access_keys.push((item, span)),
                    UsageKind::Session => u.sessions.push((item, span)),
                }
                true
            })?;
            if let Some(e) = corrupt {
                return Err(e);
            }
        }
        prefix.clear();
        prefix.extend_from_slice(keys::DAY_COUNTER.prefix);
        prefix.extend_from_slice(identity.as_bytes());
        prefix.push(SEP);
        let plen = prefix.len();
        let mut corrupt = None;
        state.scan_prefix(Table::Counters, &prefix, &mut |k, v| {
            let day = k.get(plen..).and_then(|b| <[u8; 8]>::try_from(b).ok()).map(i64::from_be_bytes);
            let decoded = day
                .ok_or_else(|| keys::DAY_COUNTER.corrupt(k, "key does not end in an 8-byte day"))
                .and_then(|day| Ok((day, keys::DAY_COUNTER.decode_u64(k, v)?)));
            match decoded {
                Ok(d) => u.days.push(d),
                Err(e) => corrupt = Some(e),
            }
            corrupt.is_none()
        })?;
        match corrupt {
            Some(e) => Err(e),
            None => Ok(u),
        }
    }

    /// Events in the `[from, to]` window, by day granularity.
    pub fn events_between(&self, from: EventTime, to: EventTime) -> (u64, u32) {
        let (fd, td) = (from.day(), to.day());
        self.days.iter().filter(|(d, _)| (fd..=td).contains(d)).fold((0, 0), |(n, days), (_, c)| (n + c, days + 1))
    }
}

/// The time span of all events in state, if any.
pub fn all_events_span(state: &dyn StateRead) -> Result<Option<SeenSpan>, grantwatch_state::StateError> {
    match state.get(Table::Usage, ALL_EVENTS_KEY)? {
        Some(v) => Ok(Some(keys::USAGE_ALL_EVENTS.decode_span(ALL_EVENTS_KEY, &v)?)),
        None => Ok(None),
    }
}

/// Every identity the logs have named, with what they say about it.
pub fn identities_in_logs(state: &dyn StateRead) -> Result<Vec<(String, IdentityMeta)>, grantwatch_state::StateError> {
    let mut out = Vec::new();
    let mut corrupt = None;
    let space = &keys::IDENTITY_META;
    state.scan_prefix(Table::Meta, space.prefix, &mut |k, v| {
        match crate::stage::decode_json::<IdentityMeta>(space, k, v) {
            Ok(meta) => out.push((String::from_utf8_lossy(space.suffix_of(k).unwrap_or_default()).into_owned(), meta)),
            Err(e) => corrupt = Some(e),
        }
        corrupt.is_none()
    })?;
    match corrupt {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grantwatch_state::{MemStore, StateStore};

    fn event(uid: &str, at: &str, action: &str) -> Event {
        let mut e = crate::testing::event(uid, EventTime::parse_rfc3339(at).unwrap());
        e.actions = vec![action.to_string()];
        e.actor.access_key_id = Some("AKIAEXAMPLE".into());
        e.resources = vec!["arn:aws:s3:::b/k".into()];
        e
    }

    fn offer(stage: &mut UsageStage, store: &MemStore, ev: &Event) -> Observed {
        let mut out = Vec::new();
        stage.process(ev, &mut Cx { state: store, out: &mut out }).unwrap();
        out[0]
    }

    #[test]
    fn an_event_counts_once_across_snapshots_writes_and_restarts() {
        let store = MemStore::new();
        let mut stage = UsageStage::new(&store).unwrap();
        let a = event("a", "2024-01-01T10:00:00Z", "s3:GetObject");
        let b = event("b", "2024-01-03T10:00:00Z", "s3:PutObject");
        assert_eq!(offer(&mut stage, &store, &a), Observed::Counted);
        assert_eq!(offer(&mut stage, &store, &a), Observed::Duplicate, "pending");
        let mut batch = WriteBatch::new();
        stage.snapshot(&mut batch).unwrap();
        assert_eq!(offer(&mut stage, &store, &a), Observed::Duplicate, "in flight, not yet written");
        store.write(batch).unwrap();
        stage.committed();
        assert_eq!(offer(&mut stage, &store, &a), Observed::Duplicate, "written by this stage");
        assert_eq!(offer(&mut stage, &store, &b), Observed::Counted);
        let mut batch = WriteBatch::new();
        stage.snapshot(&mut batch).unwrap();
        store.write(batch).unwrap();

        // A new stage over the same state (a restart) still knows both.
        let mut again = UsageStage::new(&store).unwrap();
        assert_eq!(offer(&mut again, &store, &a), Observed::Duplicate);
        assert_eq!(offer(&mut again, &store, &b), Observed::Duplicate);

        let usage = IdentityUsage::load(&store, "arn:aws:iam::111122223333:user/alice", true).unwrap();
        let names: Vec<&str> = usage.actions.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["s3:GetObject", "s3:PutObject"]);
        assert_eq!(usage.days.iter().map(|(_, n)| n).sum::<u64>(), 2, "one count per distinct event");
        assert_eq!(usage.resources.len(), 1);
        assert_eq!(usage.access_keys[0].0, "AKIAEXAMPLE");
        let span = usage.activity.unwrap();
        assert_eq!((EventTime(span.first_ms), EventTime(span.last_ms)), (a.time, b.time));
    }

    #[test]
    fn an_event_id_shared_by_other_identities_or_times_does_not_hide_them() {
        let store = MemStore::new();
        let mut stage = UsageStage::new(&store).unwrap();
        let mut counted = 0;
        for i in 0..20 {
            let mut ev = event("same-id", "2024-01-01T10:00:00Z", "s3:GetObject");
            ev.actor.uid = format!("arn:aws:iam::111122223333:user/u{i}");
            counted += u32::from(offer(&mut stage, &store, &ev) == Observed::Counted);
        }
        assert_eq!(counted, 20, "twenty identities, one forged eventID: twenty events");
        let mut later = event("same-id", "2024-01-01T10:00:01Z", "s3:GetObject");
        later.actor.uid = "arn:aws:iam::111122223333:user/u0".into();
        assert_eq!(offer(&mut stage, &store, &later), Observed::Counted, "another time is another event");
        let mut other_op = event("same-id", "2024-01-01T10:00:00Z", "s3:GetObject");
        other_op.actor.uid = "arn:aws:iam::111122223333:user/u0".into();
        other_op.api.operation = "PutObject".into();
        assert_eq!(offer(&mut stage, &store, &other_op), Observed::Counted, "another operation is another event");
        let mut copy = event("same-id", "2024-01-01T10:00:00Z", "s3:GetObject");
        copy.actor.uid = "arn:aws:iam::111122223333:user/u7".into();
        assert_eq!(offer(&mut stage, &store, &copy), Observed::Duplicate, "a true re-delivery is one event");
    }

    fn key(day: i64, id: &str) -> SeenKey {
        let mut e = crate::testing::event(id, EventTime(day * 86_400_000));
        e.actor.uid = "arn:aws:iam::111122223333:user/alice".into();
        event_seen_key(&e)
    }

    #[test]
    fn the_filter_never_misses() {
        let mut f = SeenFilter::new();
        let keys: Vec<SeenKey> = (0..50_000u32).map(|i| key(i64::from(i % 30), &format!("id-{i}"))).collect();
        for k in &keys {
            f.insert(k);
        }
        assert!(keys.iter().all(|k| f.may_contain(k)));
        let false_positives = (0..10_000u32).filter(|i| f.may_contain(&key(0, &format!("other-{i}")))).count();
        assert!(false_positives < 100, "{false_positives}");
    }
}
