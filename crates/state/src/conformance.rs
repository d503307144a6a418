//! One behavioural suite that every [`StateStore`](crate::StateStore) engine must pass. Engines call
//! [`run_conformance_suite`] from their own tests with a factory for fresh, empty stores.

use crate::{SeenSpan, StateStore, Table, WriteBatch, decode_counter, encode_counter};

/// Runs every conformance check against stores made by `fresh`. Panics (test failure) on a violation.
#[allow(clippy::unwrap_used)]
pub fn run_conformance_suite(fresh: &dyn Fn() -> Box<dyn StateStore>) {
    // Put, get, overwrite, delete.
    let s = fresh();
    let mut b = WriteBatch::new();
    b.put(Table::Meta, b"k".to_vec(), b"v1".to_vec());
    s.write(b).unwrap();
    assert_eq!(s.get(Table::Meta, b"k").unwrap().as_deref(), Some(&b"v1"[..]));
    assert_eq!(s.get(Table::Usage, b"k").unwrap(), None, "tables are separate namespaces");
    let mut b = WriteBatch::new();
    b.put(Table::Meta, b"k".to_vec(), b"v2".to_vec());
    b.delete(Table::Meta, b"gone".to_vec());
    s.write(b).unwrap();
    assert_eq!(s.get(Table::Meta, b"k").unwrap().as_deref(), Some(&b"v2"[..]));
    let mut b = WriteBatch::new();
    b.delete(Table::Meta, b"k".to_vec());
    s.write(b).unwrap();
    assert_eq!(s.get(Table::Meta, b"k").unwrap(), None);

    // Usage merges by (min, max), across batches and within one.
    let s = fresh();
    let mut b = WriteBatch::new();
    b.merge(Table::Usage, b"u".to_vec(), SeenSpan::at(50).encode().to_vec());
    b.merge(Table::Usage, b"u".to_vec(), SeenSpan::at(10).encode().to_vec());
    s.write(b).unwrap();
    let mut b = WriteBatch::new();
    b.merge(Table::Usage, b"u".to_vec(), SeenSpan::at(99).encode().to_vec());
    b.merge(Table::Usage, b"u".to_vec(), SeenSpan::at(50).encode().to_vec());
    s.write(b).unwrap();
    let got = SeenSpan::decode(&s.get(Table::Usage, b"u").unwrap().unwrap()).unwrap();
    assert_eq!(got, SeenSpan { first_ms: 10, last_ms: 99 });

    // Counters sum.
    let mut b = WriteBatch::new();
    b.merge(Table::Counters, b"c".to_vec(), encode_counter(2).to_vec());
    b.merge(Table::Counters, b"c".to_vec(), encode_counter(3).to_vec());
    s.write(b).unwrap();
    let mut b = WriteBatch::new();
    b.merge(Table::Counters, b"c".to_vec(), encode_counter(5).to_vec());
    s.write(b).unwrap();
    assert_eq!(decode_counter(&s.get(Table::Counters, b"c").unwrap().unwrap()), Some(10));

    // A put then a merge in one batch applies in order.
    let mut b = WriteBatch::new();
    b.put(Table::Usage, b"p".to_vec(), SeenSpan::at(7).encode().to_vec());
    b.merge(Table::Usage, b"p".to_vec(), SeenSpan::at(3).encode().to_vec());
    s.write(b).unwrap();
    let got = SeenSpan::decode(&s.get(Table::Usage, b"p").unwrap().unwrap()).unwrap();
    assert_eq!(got, SeenSpan { first_ms: 3, last_ms: 7 });

    // A corrupt value is kept by a merge, in the same batch or a later one, so that its reader
    // reports it; a merge never silently starts the key over.
    let mut b = WriteBatch::new();
    b.put(Table::Usage, b"bad".to_vec(), b"not a span".to_vec());
    b.put(Table::Counters, b"bad".to_vec(), b"7".to_vec());
    b.merge(Table::Usage, b"bad".to_vec(), SeenSpan::at(1).encode().to_vec());
    s.write(b).unwrap();
    let mut b = WriteBatch::new();
    b.merge(Table::Usage, b"bad".to_vec(), SeenSpan::at(2).encode().to_vec());
    b.merge(Table::Counters, b"bad".to_vec(), encode_counter(1).to_vec());
    s.write(b).unwrap();
    assert_eq!(s.get(Table::Usage, b"bad").unwrap().as_deref(), Some(&b"not a span"[..]));
    assert_eq!(s.get(Table::Counters, b"bad").unwrap().as_deref(), Some(&b"7"[..]));

    // Prefix scans are ordered, bounded by the prefix and the table, and stop on request.
    let s = fresh();
    let mut b = WriteBatch::new();
    for k in ["a/2", "a/1", "a/3", "b/1", "a"] {
        b.put(Table::Seen, k.as_bytes().to_vec(), Vec::new());
    }
    b.put(Table::Meta, b"a/9".to_vec(), Vec::new());
    s.write(b).unwrap();
    let mut seen = Vec::new();
    s.scan_prefix(Table::Seen, b"a/", &mut |k, _| {
        seen.push(String::from_utf8(k.to_vec()).unwrap());
        true
    })
    .unwrap();
    assert_eq!(seen, ["a/1", "a/2", "a/3"]);
    let mut first = Vec::new();
    s.scan_prefix(Table::Seen, b"a/", &mut |k, _| {
        first.push(k.to_vec());
        false
    })
    .unwrap();
    assert_eq!(first.len(), 1);
}
