//! A stored value that does not decode stops the detection stage with `StateError::Corrupt` naming the
//! key: it is never read as "no incident" or "no history", which would silently reset an identity.

use std::sync::Arc;

use grantwatch_core::catalog::Catalog;
use grantwatch_core::stage::{Cx, Stage, StageError};
use grantwatch_core::testing::{ALICE, event};
use grantwatch_detect::rules::RulesConfig;
use grantwatch_detect::sigma::SigmaSet;
use grantwatch_detect::stage::{DetectInput, DetectStage, Detection};
use grantwatch_state::keys;
use grantwatch_state::{MemStore, StateError, StateStore, Table, WriteBatch};
use grantwatch_types::EventTime;

fn detection() -> Arc<Detection> {
    Arc::new(Detection {
        catalog: Arc::new(Catalog::aws().expect("embedded catalog")),
        config: RulesConfig::default(),
        sigma: SigmaSet::load(&[]).0,
        model: None,
    })
}

fn store_with(table: Table, key: Vec<u8>, value: &[u8]) -> MemStore {
    let store = MemStore::new();
    let mut b = WriteBatch::new();
    b.put(table, key, value.to_vec());
    store.write(b).expect("in-memory write");
    store
}

fn corrupt_key(e: StageError) -> String {
    match e {
        StageError::State(StateError::Corrupt { table: "meta", key, .. }) => key,
        other => panic!("expected a corrupt meta value, got {other}"),
    }
}

#[test]
fn a_corrupt_incident_fails_open() {
    let store = store_with(Table::Meta, keys::DETECT_INCIDENT.key_str("grantwatch/root-account-used|x"), b"{not json");
    let e = DetectStage::open(detection(), &store).err().expect("open must fail");
    let shown = e.to_string();
    assert_eq!(corrupt_key(e), "det-inc\\u{0}grantwatch/root-account-used|x");
    assert!(shown.contains("corrupt value in table meta") && !shown.contains("{not json"), "{shown}");
}

#[test]
fn a_corrupt_on_demand_grant_or_identity_fails_open() {
    for (space, key) in [(&keys::DETECT_ON_DEMAND, "req-1"), (&keys::DETECT_ON_DEMAND_IDENTITY, "role:111122223333:x")]
    {
        let store = store_with(Table::Meta, space.key_str(key), br#"{"request_id": 7}"#);
        let e = DetectStage::open(detection(), &store).err().expect("open must fail");
        assert_eq!(corrupt_key(e), format!("{}{key}", String::from_utf8_lossy(space.prefix).replace('\0', "\\u{0}")));
    }
}

#[test]
fn a_malformed_window_key_fails_open() {
    let store = store_with(Table::Meta, keys::DETECT_WINDOW.key(b"\x01\x02"), b"");
    let e = DetectStage::open(detection(), &store).err().expect("open must fail");
    assert!(corrupt_key(e).starts_with("det-win\\u{0}"));
}

#[test]
fn a_corrupt_profile_fails_the_event_that_needs_it() {
    let store = store_with(Table::Meta, keys::DETECT_PROFILE.key_str(ALICE), b"[1,2");
    let mut stage = DetectStage::open(detection(), &store).unwrap();
    let input = DetectInput::Event(Box::new(event("e1", EventTime(1_767_571_200_000))));
    let mut out = Vec::new();
    let e = stage.process(&input, &mut Cx { state: &store, out: &mut out }).expect_err("process must fail");
    assert_eq!(corrupt_key(e), format!("det-prof\\u{{0}}{ALICE}"));
}
