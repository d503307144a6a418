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

impl RocksStore {
    /// Opens (creating if needed) the state directory `path`.
    pub fn open(path: &Path) -> Result<Self> {
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
        let db = DB::open_cf_descriptors(&db_opts, path, cfs).map_err(engine)?;
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
}
