//! A task's state as a compacted changelog topic, so a moved or lost task restores from the size of
//! its state rather than from the lookback of its input events (which retention may have deleted).
//!
//! Partition `p` of the changelog belongs to task `p`. Each commit produces, **in the same
//! transaction** as the outputs and the consumed offsets, one record per state key the commit changed:
//! key = table tag + state key, value = the key's value after the commit (a tombstone if it was
//! deleted). Values are final, never merge operands, so replaying a compacted log (which keeps only
//! the last record of a key) gives the same state as replaying every record.
//!
//! The log is trusted only if it holds the task's whole history: the first commit of a task whose
//! state is not known to be in the log (a fresh task, or one rebuilt from the input topics) writes a
//! [`RESET`] record followed by every key of its state, including [`LOGGED`]. A restore clears the
//! store at each [`RESET`] it reads, so keys written before the latest dump and never since disappear,
//! as they did from the state; compaction keeps the latest [`RESET`] and everything after it in order.
//! A restored state without [`LOGGED`], or whose input offsets are not the group's committed ones, is
//! not used: the task falls back to re-reading its inputs.
//!
//! Keys of [`Table::Seen`] (event ids, one per event, with empty values) are logged many to a
//! record: a members record ([`MEMBERS`]) lists the ids a commit added, under a key no other record
//! ever has (the sum of the task's input offsets at that commit, then the record's index), so
//! compaction never drops one. One record per event cost the producer and the broker more than the
//! rest of the state's records together.
//!
//! Not logged: the outbox (local crash bookkeeping: the log is written by the very transaction that
//! makes the outbox obsolete).

use std::collections::BTreeMap;

use grantwatch_state::{Op, StateError, StateRead, Table, WriteBatch, keys, merge_value};

use crate::kafka::client::Emit;

/// Key of the record that clears the state on restore (a dump follows it).
pub const RESET: &[u8] = b"\xffgrantwatch:reset";

/// State key present in every state whose history is entirely in the changelog.
pub const LOGGED: &[u8] = keys::RUNNER_LOGGED.prefix;

/// Metric labels of changelog records.
pub const KIND: &str = "changelog";
pub const TOMBSTONE: &str = "tombstone";

fn tag(table: Table) -> u8 {
    match table {
        Table::Usage => 0,
        Table::Counters => 1,
        Table::Seen => 2,
        Table::Meta => 3,
    }
}

/// The changelog key of a state key.
pub fn log_key(table: Table, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(tag(table));
    k.extend_from_slice(key);
    k
}

/// First byte of a members record's key: the keys in its value are put into [`Table::Seen`] with
/// empty values. The value is a sequence of (u16 big-endian length, key).
pub const MEMBERS: u8 = 0x80 | 2;

/// A members record's value stays under this many bytes (well under `message.max.bytes`).
const MEMBERS_MAX_BYTES: usize = 256 * 1024;

/// What a changelog record means for the store.
#[derive(Debug, PartialEq, Eq)]
pub enum Change<'a> {
    Reset,
    Put(Table, &'a [u8], &'a [u8]),
    Delete(Table, &'a [u8]),
    /// Keys put into [`Table::Seen`] with empty values (checked to decode whole).
    Members(&'a [u8]),
}

impl Change<'_> {
    /// Adds what the record puts or deletes to `batch`; a [`Change::Reset`] adds nothing (clearing
    /// the store is the caller's).
    pub fn apply_to(&self, batch: &mut WriteBatch) {
        match *self {
            Change::Reset => {}
            Change::Put(t, k, v) => batch.put(t, k, v),
            Change::Delete(t, k) => batch.delete(t, k),
            Change::Members(list) => {
                for key in members(list).map_while(|k| k) {
                    batch.put(Table::Seen, key, Vec::new());
                }
            }
        }
    }
}

/// The keys of a members record's value; an item is `None` where the encoding is broken.
fn members(mut list: &[u8]) -> impl Iterator<Item = Option<&[u8]>> {
    std::iter::from_fn(move || {
        if list.is_empty() {
            return None;
        }
        let Some((len, rest)) = list.split_first_chunk::<2>() else {
            list = &[];
            return Some(None);
        };
        let len = u16::from_be_bytes(*len) as usize;
        if rest.len() < len {
            list = &[];
            return Some(None);
        }
        let (key, rest) = rest.split_at(len);
        list = rest;
        Some(Some(key))
    })
}

/// Decodes one changelog record; `None` for a key no version of grantwatch writes, or a members
/// record that does not decode.
pub fn decode<'a>(key: &'a [u8], value: Option<&'a [u8]>) -> Option<Change<'a>> {
    if key == RESET {
        return Some(Change::Reset);
    }
    let (&t, k) = key.split_first()?;
    if t == MEMBERS {
        let list = value?;
        return members(list).all(|k| k.is_some()).then_some(Change::Members(list));
    }
    let table = *Table::ALL.iter().find(|&&table| tag(table) == t)?;
    Some(match value {
        Some(v) => Change::Put(table, k, v),
        None => Change::Delete(table, k),
    })
}

/// State keys a commit writes that are not logged.
fn unlogged(table: Table, key: &[u8]) -> bool {
    table == Table::Meta && (key == keys::RUNNER_OUTBOX.prefix || key.starts_with(keys::RUNNER_OUTBOX_FROM.prefix))
}

/// Final values of the keys `batch` writes once applied over `state`, plus those of `also` (keys
/// written to the store earlier in the commit interval); `None`: deleted.
pub type Changes = BTreeMap<(Table, Vec<u8>), Option<Vec<u8>>>;

pub fn changes<'k>(
    state: &dyn StateRead,
    batch: &WriteBatch,
    also: impl IntoIterator<Item = &'k (Table, Vec<u8>)>,
) -> Result<Changes, StateError> {
    let mut out = Changes::new();
    for op in batch.ops() {
        match op {
            Op::Put { table, key, value } => {
                out.insert((*table, key.clone()), Some(value.clone()));
            }
            Op::Delete { table, key } => {
                out.insert((*table, key.clone()), None);
            }
            Op::Merge { table, key, value } => {
                let slot = (*table, key.clone());
                let existing = match out.get(&slot) {
                    Some(v) => v.clone(),
                    None => state.get(*table, key)?,
                };
                out.insert(slot, Some(merge_value(*table, existing.as_deref(), value)));
            }
        }
    }
    for slot in also {
        if !out.contains_key(slot) {
            out.insert(slot.clone(), state.get(slot.0, &slot.1)?);
        }
    }
    out.retain(|(table, key), _| !unlogged(*table, key));
    Ok(out)
}

/// Every key of `state` with `batch` applied, to follow a [`RESET`]: the dump that makes the log
/// whole (`batch` puts [`LOGGED`]). Holds the whole state in memory once (the records of one transaction do anyway).
pub fn dump(state: &dyn StateRead, batch: &WriteBatch) -> Result<Changes, StateError> {
    let mut out = Changes::new();
    for table in Table::ALL {
        state.scan_prefix(table, b"", &mut |k, v| {
            out.insert((table, k.to_vec()), Some(v.to_vec()));
            true
        })?;
    }
    for (slot, value) in changes(state, batch, [])? {
        out.insert(slot, value);
    }
    out.retain(|(table, key), value| value.is_some() && !unlogged(*table, key));
    Ok(out)
}

/// The records of `changes` for partition `partition` of `topic` (a [`RESET`] first if `reset`).
/// `sequence`: the sum of the task's next input offsets after this commit, which names its members
/// records (it grows with every commit that adds an event id, and a dump that repeats an earlier
/// commit's sequence follows a [`RESET`], which makes everything before it moot).
pub fn records(topic: &str, partition: i32, reset: bool, sequence: u64, changes: Changes, out: &mut Vec<Emit>) {
    let record = |key: Vec<u8>, value: Option<Vec<u8>>| Emit {
        partition: Some(partition),
        topic: topic.to_string(),
        key: Some(key),
        kind: if value.is_some() { KIND } else { TOMBSTONE },
        payload: value.unwrap_or_default(),
    };
    if reset {
        out.push(record(RESET.to_vec(), Some(Vec::new())));
    }
    let mut list: Vec<u8> = Vec::new();
    let mut lists = 0u32;
    let mut flush = |list: &mut Vec<u8>, out: &mut Vec<Emit>| {
        if !list.is_empty() {
            let mut key = vec![MEMBERS];
            key.extend_from_slice(&sequence.to_be_bytes());
            key.extend_from_slice(&lists.to_be_bytes());
            lists += 1;
            out.push(record(key, Some(std::mem::take(list))));
        }
    };
    for ((table, key), value) in changes {
        match value {
            Some(v) if table == Table::Seen && v.is_empty() && key.len() <= usize::from(u16::MAX) => {
                if list.len() + 2 + key.len() > MEMBERS_MAX_BYTES {
                    flush(&mut list, out);
                }
                list.extend_from_slice(&(key.len() as u16).to_be_bytes());
                list.extend_from_slice(&key);
            }
            value => out.push(record(log_key(table, &key), value)),
        }
    }
    flush(&mut list, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use grantwatch_state::{MemStore, StateStore};

    /// Applies changelog records to a store as a restore does.
    fn replay(records: &[Emit]) -> MemStore {
        let mut store = MemStore::new();
        for e in records {
            let value = (e.kind != TOMBSTONE).then_some(e.payload.as_slice());
            let mut b = WriteBatch::new();
            match decode(e.key.as_deref().unwrap(), value).unwrap() {
                Change::Reset => store = MemStore::new(),
                change => change.apply_to(&mut b),
            }
            store.write(b).unwrap();
        }
        store
    }

    fn all(store: &dyn StateRead) -> Vec<(Table, Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        for t in Table::ALL {
            store
                .scan_prefix(t, b"", &mut |k, v| {
                    out.push((t, k.to_vec(), v.to_vec()));
                    true
                })
                .unwrap();
        }
        out
    }

    /// Keeps the last record of each key, in offset order, as compaction does.
    fn compact(records: &[Emit]) -> Vec<Emit> {
        let last: BTreeMap<&Vec<u8>, usize> =
            records.iter().enumerate().map(|(i, e)| (e.key.as_ref().unwrap(), i)).collect();
        let mut keep: Vec<usize> = last.into_values().collect();
        keep.sort_unstable();
        keep.into_iter().map(|i| records[i].clone()).collect()
    }

    #[test]
    fn replaying_the_log_or_its_compaction_gives_the_state() {
        let state = MemStore::new();
        let mut log = Vec::new();
        let span = |a: i64, b: i64| grantwatch_state::SeenSpan { first_ms: a, last_ms: b }.encode().to_vec();
        // A key dropped before the first dump must not come back; merges log their results.
        let mut b = WriteBatch::new();
        b.put(Table::Meta, b"gone".to_vec(), b"x".to_vec());
        state.write(b).unwrap();
        let mut commits = Vec::new();
        let mut b = WriteBatch::new();
        b.merge(Table::Usage, b"u".to_vec(), span(5, 5));
        b.delete(Table::Meta, b"gone".to_vec());
        b.put(Table::Seen, b"id1".to_vec(), Vec::new());
        commits.push(b);
        let mut b = WriteBatch::new();
        b.merge(Table::Usage, b"u".to_vec(), span(2, 3));
        b.merge(Table::Usage, b"u".to_vec(), span(9, 9));
        b.merge(Table::Counters, b"c".to_vec(), grantwatch_state::encode_counter(2).to_vec());
        b.put(Table::Meta, keys::RUNNER_OUTBOX.prefix.to_vec(), b"outbox".to_vec());
        commits.push(b);
        let mut b = WriteBatch::new();
        b.delete(Table::Seen, b"id1".to_vec());
        b.merge(Table::Counters, b"c".to_vec(), grantwatch_state::encode_counter(3).to_vec());
        commits.push(b);
        for (i, b) in commits.into_iter().enumerate() {
            let pending = (Table::Meta, b"pending".to_vec());
            let mut side = WriteBatch::new();
            side.put(Table::Meta, pending.1.clone(), vec![i as u8]);
            state.write(side).unwrap();
            let mut b = b;
            if i == 0 {
                b.put(Table::Meta, LOGGED.to_vec(), Vec::new());
            }
            let c = if i == 0 { dump(&state, &b).unwrap() } else { changes(&state, &b, [&pending]).unwrap() };
            records("log", 0, i == 0, i as u64, c, &mut log);
            state.write(b).unwrap();
        }
        let mut expected = all(&state);
        expected.retain(|(t, k, _)| !unlogged(*t, k));
        expected.sort();
        for replayed in [replay(&log), replay(&compact(&log))] {
            let mut got = all(&replayed);
            got.sort();
            assert_eq!(got, expected);
        }
        assert!(all(&replay(&log)).iter().any(|(t, k, _)| *t == Table::Usage && k == b"u"));
        assert_eq!(replay(&log).get(Table::Usage, b"u").unwrap(), Some(span(2, 9)));
        assert_eq!(replay(&log).get(Table::Meta, b"gone").unwrap(), None);
    }

    #[test]
    fn unknown_keys_do_not_decode() {
        assert_eq!(decode(b"", None), None);
        assert_eq!(decode(b"\x09k", Some(b"v")), None);
        assert_eq!(decode(RESET, Some(b"")), Some(Change::Reset));
        assert_eq!(decode(b"\x03k", None), Some(Change::Delete(Table::Meta, b"k")));
        // A members list cut inside a key, or with no value at all, is not applied in part.
        assert_eq!(decode(&[MEMBERS, 0], Some(&[0, 3, b'a', b'b'])), None);
        assert_eq!(decode(&[MEMBERS, 0], Some(&[0])), None);
        assert_eq!(decode(&[MEMBERS, 0], None), None);
        assert_eq!(decode(&[MEMBERS, 0], Some(&[0, 1, b'a'])), Some(Change::Members(&[0, 1, b'a'])));
    }

    /// Event ids travel many to a record, split under the size bound, under keys that differ from
    /// commit to commit (so compaction keeps every one), and read back as the keys they were.
    #[test]
    fn event_ids_are_logged_many_to_a_record() {
        let ids = |range: std::ops::Range<u32>| -> Changes {
            range.map(|i| ((Table::Seen, format!("day-event-{i:08}").into_bytes()), Some(Vec::new()))).collect()
        };
        let mut log = Vec::new();
        let mut first = ids(0..30_000);
        first.insert((Table::Meta, b"m".to_vec()), Some(b"v".to_vec()));
        records("log", 3, false, 41, first, &mut log);
        records("log", 3, false, 97, ids(30_000..30_010), &mut log);
        let lists: Vec<&Emit> = log.iter().filter(|e| e.key.as_ref().unwrap()[0] == MEMBERS).collect();
        assert!(lists.len() >= 3, "30,000 ids of 19 bytes do not fit one record: {}", lists.len());
        assert!(lists.iter().all(|e| e.payload.len() <= MEMBERS_MAX_BYTES && e.partition == Some(3)));
        assert_eq!(log.len(), lists.len() + 1, "the other key keeps its own record");
        let mut keys: Vec<&Vec<u8>> = lists.iter().map(|e| e.key.as_ref().unwrap()).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), lists.len());
        let state = replay(&log);
        let seen: Vec<(Table, Vec<u8>, Vec<u8>)> = all(&state).into_iter().filter(|r| r.0 == Table::Seen).collect();
        assert_eq!(seen.len(), 30_010);
        assert!(seen.iter().all(|(_, k, v)| k.starts_with(b"day-event-") && v.is_empty()));
        assert_eq!(state.get(Table::Meta, b"m").unwrap(), Some(b"v".to_vec()));
    }
}
