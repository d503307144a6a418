//! A stored value that does not decode is `StateError::Corrupt` naming its key, never an absent or
//! empty value: usage and the processor stage would otherwise reset an identity's history silently.

use std::sync::Arc;

use grantwatch_core::catalog::Catalog;
use grantwatch_core::processor::{ProcessorConfig, ProcessorStage};
use grantwatch_core::stage::StageError;
use grantwatch_core::usage::{
    IdentityUsage, UsageKind, all_events_span, day_counter_key, identities_in_logs, usage_key,
};
use grantwatch_state::keys;
use grantwatch_state::{MemStore, StateError, StateStore, Table, WriteBatch};

const ARN: &str = "arn:aws:iam::111122223333:user/alice";

fn store_with(table: Table, key: Vec<u8>, value: &[u8]) -> MemStore {
    let store = MemStore::new();
    let mut b = WriteBatch::new();
    b.put(table, key, value.to_vec());
    store.write(b).expect("in-memory write");
    store
}

fn corrupt(e: StateError) -> (&'static str, String) {
    match e {
        StateError::Corrupt { table, key, .. } => (table, key),
        other => panic!("expected corrupt state, got {other}"),
    }
}

fn open(store: &MemStore) -> Result<ProcessorStage, StageError> {
    ProcessorStage::open(Arc::new(Catalog::aws().expect("embedded catalog")), ProcessorConfig::default(), store)
}

#[test]
fn processor_open_refuses_a_corrupt_dirty_mark_or_boundary() {
    let store = store_with(Table::Meta, keys::PROCESSOR_DIRTY.key_str(ARN), b"{\"kind\":");
    let Err(StageError::State(e)) = open(&store) else { panic!("open must fail") };
    assert_eq!(corrupt(e), ("meta", format!("dirty\\u{{0}}{ARN}")));

    let store = store_with(Table::Meta, keys::PROCESSOR_LAST_CLOSE.key(b""), b"\x01\x02\x03");
    let Err(StageError::State(e)) = open(&store) else { panic!("open must fail") };
    let shown = e.to_string();
    assert_eq!(corrupt(e), ("meta", "last-close".to_string()));
    assert!(shown.contains("found 3"), "{shown}");
}

#[test]
fn usage_reads_refuse_corrupt_spans_counters_and_metas() {
    let store = store_with(Table::Usage, usage_key(UsageKind::Action, ARN, "s3:GetObject"), b"short");
    let e = IdentityUsage::load(&store, ARN, false).unwrap_err();
    assert_eq!(corrupt(e), ("usage", format!("a{ARN}\\u{{0}}s3:GetObject")));

    let store = store_with(Table::Counters, day_counter_key(ARN, 19_000), &[0; 4]);
    let (table, key) = corrupt(IdentityUsage::load(&store, ARN, false).unwrap_err());
    assert_eq!(table, "counters");
    assert!(key.starts_with(&format!("d{ARN}")), "{key}");

    let store = store_with(Table::Usage, keys::USAGE_ALL_EVENTS.key(b""), &[0; 17]);
    assert_eq!(corrupt(all_events_span(&store).unwrap_err()), ("usage", "g".to_string()));

    let store = store_with(Table::Meta, keys::IDENTITY_META.key_str(ARN), b"null");
    assert_eq!(corrupt(identities_in_logs(&store).unwrap_err()), ("meta", format!("id\\u{{0}}{ARN}")));
}

#[test]
fn well_formed_state_still_reads() {
    let store = MemStore::new();
    assert!(open(&store).is_ok());
    assert_eq!(IdentityUsage::load(&store, ARN, true).unwrap(), IdentityUsage::default());
    assert_eq!(all_events_span(&store).unwrap(), None);
}
