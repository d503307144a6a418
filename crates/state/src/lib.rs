//! The storage contract of grantwatch.
//!
//! Every stateful stage reads through [`StateRead`] and writes a [`WriteBatch`], which an engine applies
//! atomically: a reader sees all of a batch or none of it. That is what lets a runner put the consumed
//! offsets (or the list of ingested files) in the same batch as the usage they produced, so a crash never
//! leaves one without the other.
//!
//! The merge rules live here, as pure functions, so every engine merges the same way:
//! * [`Table::Usage`] values are `(first_seen, last_seen)` pairs merged by `(min, max)`: commutative and
//!   idempotent, so files may be read in any order, or twice, and give the same state.
//! * [`Table::Counters`] values are `u64` sums. Sums are not idempotent, so a counter may only be bumped in
//!   the batch that also records the event id in [`Table::Seen`] (exactly-once by dedup).
//! * [`Table::Seen`] and [`Table::Meta`] are plain key/value: a merge overwrites.
//!
//! Which keys live in which table, who owns them and how their values are encoded is [`keys`], the one
//! registry every owner builds its keys from.
//!
//! This crate deliberately does not depend on RocksDB; `grantwatch-state-rocks` is the durable engine.
//! [`MemStore`] is the in-memory engine for tests and throwaway runs.

use std::collections::BTreeMap;
use std::sync::RwLock;

mod conformance;
pub mod keys;
pub use conformance::run_conformance_suite;

/// The tables (RocksDB column families) grantwatch keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// `(first_seen_ms, last_seen_ms)` per usage key; merged by min/max.
    Usage,
    /// `u64` counters (events per identity per day); merged by sum.
    Counters,
    /// Event ids already counted, keyed by day then id; value empty.
    Seen,
    /// Run bookkeeping: ingested files, source checkpoints, format version.
    Meta,
}

impl Table {
    pub const ALL: [Table; 4] = [Table::Usage, Table::Counters, Table::Seen, Table::Meta];

    /// Stable name, used as the RocksDB column family name.
    pub fn name(self) -> &'static str {
        match self {
            Table::Usage => "usage",
            Table::Counters => "counters",
            Table::Seen => "seen",
            Table::Meta => "meta",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state engine error: {0}")]
    Engine(String),
    /// A stored value (or key) that does not decode as its owner wrote it. Never treated as absent: a
    /// default in its place would silently reset what it held (an identity's history, an offset).
    /// `key` is printable and bounded ([`keys::printable_key`]).
    #[error("corrupt value in table {table} (key \"{key}\"): {reason}")]
    Corrupt { table: &'static str, key: String, reason: String },
}

pub type Result<T, E = StateError> = std::result::Result<T, E>;

/// One write in a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put { table: Table, key: Vec<u8>, value: Vec<u8> },
    Merge { table: Table, key: Vec<u8>, value: Vec<u8> },
    Delete { table: Table, key: Vec<u8> },
}

/// An engine-neutral batch of writes, applied atomically by [`StateStore::write`].
#[derive(Debug, Default, Clone)]
pub struct WriteBatch {
    ops: Vec<Op>,
}

impl WriteBatch {
    pub fn new() -> Self {
        Self::default()
    }
    /// Room for `ops` operations: a commit of a few hundred thousand keys then allocates once, rather
    /// than growing (and faulting in fresh pages) a dozen times.
    pub fn with_capacity(ops: usize) -> Self {
        Self { ops: Vec::with_capacity(ops) }
    }
    pub fn put(&mut self, table: Table, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(Op::Put { table, key: key.into(), value: value.into() });
    }
    pub fn merge(&mut self, table: Table, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(Op::Merge { table, key: key.into(), value: value.into() });
    }
    pub fn delete(&mut self, table: Table, key: impl Into<Vec<u8>>) {
        self.ops.push(Op::Delete { table, key: key.into() });
    }
    pub fn len(&self) -> usize {
        self.ops.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }
    pub fn into_ops(self) -> Vec<Op> {
        self.ops
    }
}

/// Read access to state.
pub trait StateRead {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Calls `visit` for every key starting with `prefix`, in key order, until it returns `false`.
    fn scan_prefix(&self, table: Table, prefix: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<()>;
}

/// A storage engine: reads, plus atomic application of a [`WriteBatch`].
pub trait StateStore: StateRead + Send + Sync {
    /// Applies every op of `batch` atomically and durably (for a durable engine).
    fn write(&self, batch: WriteBatch) -> Result<()>;
}

/// A shared store reads and writes as the store itself (tests hand one store to a runner and keep
/// a handle to look inside it, or to open it again as a restarted process would).
impl<T: StateRead + ?Sized> StateRead for std::sync::Arc<T> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        (**self).get(table, key)
    }
    fn scan_prefix(&self, table: Table, prefix: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<()> {
        (**self).scan_prefix(table, prefix, visit)
    }
}

impl<T: StateStore + ?Sized> StateStore for std::sync::Arc<T> {
    fn write(&self, batch: WriteBatch) -> Result<()> {
        (**self).write(batch)
    }
}

/// A `(first_seen, last_seen)` pair of event times in milliseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeenSpan {
    pub first_ms: i64,
    pub last_ms: i64,
}

impl SeenSpan {
    pub fn at(ms: i64) -> Self {
        Self { first_ms: ms, last_ms: ms }
    }
    pub fn widen(self, other: SeenSpan) -> Self {
        Self { first_ms: self.first_ms.min(other.first_ms), last_ms: self.last_ms.max(other.last_ms) }
    }
    pub fn encode(self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.first_ms.to_be_bytes());
        out[8..].copy_from_slice(&self.last_ms.to_be_bytes());
        out
    }
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let first: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
        let last: [u8; 8] = bytes.get(8..16)?.try_into().ok()?;
        (bytes.len() == 16).then(|| Self { first_ms: i64::from_be_bytes(first), last_ms: i64::from_be_bytes(last) })
    }
}

pub fn encode_counter(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

pub fn decode_counter(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// Merges `operand` into `existing` under `table`'s rule. An existing value that does not decode is
/// kept as it is, never replaced: whoever reads it next reports it as [`StateError::Corrupt`], where a
/// replacement would silently restart the key from the operand (an identity's first use forgotten, a
/// count reset). The operand is always a well-formed value written by this crate's callers; one that
/// is not leaves the existing value unchanged.
pub fn merge_value(table: Table, existing: Option<&[u8]>, operand: &[u8]) -> Vec<u8> {
    let Some(existing) = existing else { return operand.to_vec() };
    match table {
        Table::Usage => match (SeenSpan::decode(existing), SeenSpan::decode(operand)) {
            (Some(a), Some(b)) => a.widen(b).encode().to_vec(),
            _ => existing.to_vec(),
        },
        Table::Counters => match (decode_counter(existing), decode_counter(operand)) {
            (Some(a), Some(b)) => encode_counter(a.saturating_add(b)).to_vec(),
            _ => existing.to_vec(),
        },
        Table::Seen | Table::Meta => operand.to_vec(),
    }
}

/// All tables of a [`MemStore`], ordered by table then key (as a prefix scan needs).
type MemTables = BTreeMap<(Table, Vec<u8>), Vec<u8>>;

/// An in-memory engine: the reference for the conformance suite and for tests that need no disk.
#[derive(Debug, Default)]
pub struct MemStore {
    tables: RwLock<MemTables>,
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }
}

impl StateRead for MemStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let tables = self.tables.read().map_err(|_| StateError::Engine("lock poisoned".into()))?;
        Ok(tables.get(&(table, key.to_vec())).cloned())
    }

    fn scan_prefix(&self, table: Table, prefix: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<()> {
        let tables = self.tables.read().map_err(|_| StateError::Engine("lock poisoned".into()))?;
        for ((t, k), v) in tables.range((table, prefix.to_vec())..) {
            if *t != table || !k.starts_with(prefix) {
                break;
            }
            if !visit(k, v) {
                break;
            }
        }
        Ok(())
    }
}

impl StateStore for MemStore {
    fn write(&self, batch: WriteBatch) -> Result<()> {
        let mut tables = self.tables.write().map_err(|_| StateError::Engine("lock poisoned".into()))?;
        for op in batch.into_ops() {
            match op {
                Op::Put { table, key, value } => {
                    tables.insert((table, key), value);
                }
                Op::Delete { table, key } => {
                    tables.remove(&(table, key));
                }
                Op::Merge { table, key, value } => {
                    let slot = (table, key);
                    let merged = merge_value(table, tables.get(&slot).map(Vec::as_slice), &value);
                    tables.insert(slot, merged);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_store_conforms() {
        run_conformance_suite(&|| Box::new(MemStore::new()));
    }

    #[test]
    fn usage_merge_is_commutative_and_idempotent() {
        let spans = [SeenSpan::at(5), SeenSpan::at(1), SeenSpan::at(9), SeenSpan::at(5)];
        let fold = |order: &[usize]| {
            let mut acc: Option<Vec<u8>> = None;
            for &i in order {
                acc = Some(merge_value(Table::Usage, acc.as_deref(), &spans[i].encode()));
            }
            SeenSpan::decode(&acc.unwrap()).unwrap()
        };
        let expected = SeenSpan { first_ms: 1, last_ms: 9 };
        assert_eq!(fold(&[0, 1, 2, 3]), expected);
        assert_eq!(fold(&[3, 2, 1, 0]), expected);
        assert_eq!(fold(&[2, 2, 0, 1, 1, 3]), expected);
    }
}
