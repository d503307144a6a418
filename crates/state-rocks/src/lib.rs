//! The RocksDB engine behind [`grantwatch_state::StateStore`].
//!
//! One column family per [`Table`]; `Usage` and `Counters` get associative merge operators that call
//! [`grantwatch_state::merge_value`], so RocksDB folds merges exactly as the in-memory engine does. Writes go
//! through a RocksDB `WriteBatch` with the WAL on: a batch is atomic and survives a process kill.
//! This is the only crate that knows RocksDB.

use std::path::Path;

use grantwatch_state::{Op, Result, StateError, StateRead, StateStore, Table, WriteBatch, merge_value};
use rocksdb::{ColumnFamilyDescriptor, DB, IteratorMode, MergeOperands, Options};

pub struct RocksStore {
    db: DB,
}

impl std::fmt::Debug for RocksStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksStore").field("path", &self.db.path()).finish()
    }
}

fn engine(e: rocksdb::Error) -> StateError {
    StateError::Engine(e.into_string())
}

fn merge_fn(table: Table) -> impl Fn(&[u8], Option<&[u8]>, &MergeOperands) -> Option<Vec<u8>> + Clone {
    move |_key, existing, operands| {
        let mut acc: Option<Vec<u8>> = existing.map(<[u8]>::to_vec);
        for op in operands {
            acc = Some(merge_value(table, acc.as_deref(), op));
        }
        acc
    }
}

/// The file that marks a directory as grantwatch's state. RocksDB deletes files it considers obsolete
/// (`*.log`, `*.sst`, ...) in the directory it opens, so grantwatch opens only a directory that is
/// empty, new, or marked: `--state ~/Documents` must fail, not delete someone's files.
pub const STATE_MARKER: &str = "GRANTWATCH_STATE";

/// Checks that `path` is grantwatch's to open (see [`STATE_MARKER`]), creating it and its marker if
/// it is new or empty.
fn claim_dir(path: &Path) -> Result<()> {
    let io = |what: &str, e: std::io::Error| StateError::Engine(format!("{what} {}: {e}", path.display()));
    let marker = path.join(STATE_MARKER);
    if marker.is_file() {
        return Ok(());
    }
    match std::fs::read_dir(path) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(StateError::Engine(format!(
                    "{} is not empty and is not a grantwatch state directory (it has no {STATE_MARKER} file); \
                     refusing to open it, as the storage engine would delete files in it. Name a new or empty \
                     directory",
                    path.display()
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(path).map_err(|e| io("creating", e))?;
        }
        Err(e) => return Err(io("reading", e)),
    }
    std::fs::write(&marker, b"grantwatch state (RocksDB). Delete the whole directory to start over.\n")
        .map_err(|e| io("marking", e))
}

/// The engine's options and the tables' column families, the same for every open.
fn options() -> (Options, Vec<ColumnFamilyDescriptor>) {
    let mut db_opts = Options::default();
    db_opts.create_if_missing(true);
    db_opts.create_missing_column_families(true);
    db_opts.set_max_background_jobs(2);
    // One memory budget for the memtables of all tables, so state memory does not grow with the
    // number of column families or with a burst of writes.
    db_opts.set_db_write_buffer_size(64 << 20);
    let cfs = Table::ALL.iter().map(|&t| {
        let mut o = Options::default();
        o.set_write_buffer_size(16 << 20);
        o.set_max_write_buffer_number(2);
        o.set_compression_type(rocksdb::DBCompressionType::Lz4);
        match t {
            Table::Usage | Table::Counters => {
                // Both rules are associative, so partial merges during compaction are sound.
                o.set_merge_operator_associative(t.name(), merge_fn(t));
                // A stream commit merges into the same usage keys every second: without a bound,
                // a memtable holds hundreds of operands per key, and every read of it (the
                // changelog's final values, a window close loading an identity's usage) folds
                // them all. Past this many, the write folds them into one value instead.
                o.set_max_successive_merges(8);
            }
            Table::Seen => {
                // Point lookups of event ids: a bloom filter makes the common "not seen" answer cheap.
                let mut bo = rocksdb::BlockBasedOptions::default();
                bo.set_bloom_filter(10.0, false);
                o.set_block_based_table_factory(&bo);
                // The same for keys still in the memtable, where most lookups of a run land.
                o.set_memtable_whole_key_filtering(true);
                o.set_memtable_prefix_bloom_ratio(0.1);
            }
            Table::Meta => {}
        }
        ColumnFamilyDescriptor::new(t.name(), o)
    });
    (db_opts, cfs.collect())
}

impl RocksStore {
    /// Opens (creating if needed) the state directory `path`. Refuses a non-empty directory that is
    /// not grantwatch's ([`STATE_MARKER`]).
    pub fn open(path: &Path) -> Result<Self> {
        claim_dir(path)?;
        let (db_opts, cfs) = options();
        let db = DB::open_cf_descriptors(&db_opts, path, cfs).map_err(engine)?;
        Ok(Self { db })
    }

    /// Opens an existing state directory for reading only (`grantwatch report`): no lock is taken, so
    /// it works beside a running writer, and reads what was committed when it opened.
    pub fn open_read_only(path: &Path) -> Result<Self> {
        if !path.join(STATE_MARKER).exists() {
            return Err(StateError::Engine(format!(
                "{} is not a grantwatch state directory (no {STATE_MARKER})",
                path.display()
            )));
        }
        let (db_opts, cfs) = options();
        let db = DB::open_cf_descriptors_read_only(&db_opts, path, cfs, false).map_err(engine)?;
        Ok(Self { db })
    }

    fn cf(&self, table: Table) -> Result<&rocksdb::ColumnFamily> {
        self.db
            .cf_handle(table.name())
            .ok_or_else(|| StateError::Engine(format!("missing column family {}", table.name())))
    }

    /// Bytes of state: live SST files on disk plus memtables, all tables (the `state_bytes` metric).
    pub fn disk_bytes(&self) -> u64 {
        let prop = |cf, name| self.db.property_int_value_cf(cf, name).ok().flatten().unwrap_or(0);
        Table::ALL
            .iter()
            .filter_map(|t| self.cf(*t).ok())
            .map(|cf| prop(cf, "rocksdb.live-sst-files-size") + prop(cf, "rocksdb.cur-size-all-mem-tables"))
            .sum()
    }

    /// Memory RocksDB holds outside its block cache: memtables and table readers (index and filter
    /// blocks), summed over all tables. For logs and metrics.
    pub fn memory_bytes(&self) -> u64 {
        let mut total = 0u64;
        for t in Table::ALL {
            if let Ok(cf) = self.cf(t) {
                for prop in ["rocksdb.cur-size-all-mem-tables", "rocksdb.estimate-table-readers-mem"] {
                    total += self.db.property_int_value_cf(cf, prop).ok().flatten().unwrap_or(0);
                }
            }
        }
        total
    }

    /// Flushes memtables to SST files (used before measuring on-disk size, and at clean shutdown).
    pub fn flush(&self) -> Result<()> {
        for t in Table::ALL {
            self.db.flush_cf(self.cf(t)?).map_err(engine)?;
        }
        Ok(())
    }
}

impl StateRead for RocksStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db.get_cf(self.cf(table)?, key).map_err(engine)
    }

    fn scan_prefix(&self, table: Table, prefix: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<()> {
        let iter = self.db.iterator_cf(self.cf(table)?, IteratorMode::From(prefix, rocksdb::Direction::Forward));
        for item in iter {
            let (k, v) = item.map_err(engine)?;
            if !k.starts_with(prefix) || !visit(&k, &v) {
                break;
            }
        }
        Ok(())
    }
}

impl StateStore for RocksStore {
    fn write(&self, batch: WriteBatch) -> Result<()> {
        let mut wb = rocksdb::WriteBatch::default();
        for op in batch.into_ops() {
            match op {
                Op::Put { table, key, value } => wb.put_cf(self.cf(table)?, key, value),
                Op::Merge { table, key, value } => wb.merge_cf(self.cf(table)?, key, value),
                Op::Delete { table, key } => wb.delete_cf(self.cf(table)?, key),
            }
        }
        self.db.write(wb).map_err(engine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grantwatch_state::{SeenSpan, run_conformance_suite};

    #[test]
    fn rocks_store_conforms() {
        let dirs = std::sync::Mutex::new(Vec::new());
        run_conformance_suite(&|| {
            let dir = tempfile::tempdir().unwrap();
            let store = RocksStore::open(dir.path()).unwrap();
            dirs.lock().unwrap().push(dir);
            Box::new(store)
        });
    }

    #[test]
    fn state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = RocksStore::open(dir.path()).unwrap();
            let mut b = WriteBatch::new();
            b.merge(Table::Usage, b"id\0s3:GetObject".to_vec(), SeenSpan::at(42).encode().to_vec());
            s.write(b).unwrap();
            // dropped without flush: the WAL must carry it
        }
        let s = RocksStore::open(dir.path()).unwrap();
        let mut b = WriteBatch::new();
        b.merge(Table::Usage, b"id\0s3:GetObject".to_vec(), SeenSpan::at(7).encode().to_vec());
        s.write(b).unwrap();
        let got = SeenSpan::decode(&s.get(Table::Usage, b"id\0s3:GetObject").unwrap().unwrap()).unwrap();
        assert_eq!(got, SeenSpan { first_ms: 7, last_ms: 42 });
    }

    #[test]
    fn a_directory_that_is_not_grantwatch_state_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        // Files a RocksDB would take for its own obsolete ones.
        for name in ["000123.log", "000007.sst", "notes.txt"] {
            std::fs::write(dir.path().join(name), b"someone's data").unwrap();
        }
        let err = RocksStore::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not a grantwatch state directory"), "{err}");
        for name in ["000123.log", "000007.sst", "notes.txt"] {
            assert_eq!(std::fs::read(dir.path().join(name)).unwrap(), b"someone's data");
        }
        assert!(!dir.path().join(STATE_MARKER).exists());

        // A new directory (and an empty one) is claimed, and opens again.
        let new = dir.path().join("new/state");
        drop(RocksStore::open(&new).unwrap());
        assert!(new.join(STATE_MARKER).is_file());
        drop(RocksStore::open(&new).unwrap());
        let empty = tempfile::tempdir().unwrap();
        drop(RocksStore::open(empty.path()).unwrap());
    }
}
