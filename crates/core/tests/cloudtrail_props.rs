//! The CloudTrail normalizer never panics: arbitrary bytes, arbitrary JSON, CloudTrail-shaped JSON with
//! arbitrary values, and truncated/mutated real records.
#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use std::sync::LazyLock;

use grantwatch_core::cloudtrail::{ActionMap, normalize_record};
use proptest::prelude::*;
use serde_json::{Map, Value};

static MAP: LazyLock<ActionMap> = LazyLock::new(|| ActionMap::aws().unwrap());

const SAMPLE: &str = include_str!("../src/cloudtrail/fixtures/trailscraper-eu-central-1.json");

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("2024-01-02T03:04:05Z"),
            Just("s3.amazonaws.com"),
            Just("GetFunction20150331v2"),
            Just("arn:aws:sts::1:assumed-role/R/s"),
            Just("AssumedRole"),
            Just("Root"),
            Just("true"),
        ]
        .prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((".{0,8}", inner), 0..5).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

const RECORD_KEYS: &[&str] = &[
    "eventID",
    "eventTime",
    "eventSource",
    "eventName",
    "awsRegion",
    "recipientAccountId",
    "errorCode",
    "sourceIPAddress",
    "userAgent",
    "readOnly",
    "resources",
    "requestParameters",
];
const IDENTITY_KEYS: &[&str] = &[
    "type",
    "principalId",
    "arn",
    "accountId",
    "accessKeyId",
    "userName",
    "invokedBy",
    "sessionContext",
    "onBehalfOf",
];

fn arb_object(keys: &'static [&'static str]) -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::vec((prop::sample::select(keys), arb_json()), 0..keys.len())
        .prop_map(|kv| kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

/// Records with the right keys and arbitrary values (including a well-formed core most of the time).
fn arb_record() -> impl Strategy<Value = Value> {
    (
        arb_object(RECORD_KEYS),
        arb_object(IDENTITY_KEYS),
        any::<bool>(),
        arb_object(&["bucketName", "key", "userName", "functionName", "keyId"]),
    )
        .prop_map(|(mut rec, ident, core, params)| {
            if core {
                rec.insert("eventID".into(), "e".into());
                rec.insert("eventTime".into(), "2024-01-02T03:04:05Z".into());
                rec.entry("eventSource").or_insert("s3.amazonaws.com".into());
                rec.entry("eventName").or_insert("GetObject".into());
                rec.entry("requestParameters").or_insert(Value::Object(params));
            }
            rec.insert("userIdentity".into(), Value::Object(ident));
            Value::Object(rec)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = normalize_record(&bytes, &MAP);
    }

    #[test]
    fn never_panics_on_arbitrary_json(v in arb_json()) {
        let _ = normalize_record(v.to_string().as_bytes(), &MAP);
    }

    #[test]
    fn never_panics_on_cloudtrail_shaped_json(v in arb_record()) {
        let raw = v.to_string();
        if let Ok(e) = normalize_record(raw.as_bytes(), &MAP) {
            prop_assert!(!e.uid.is_empty() && !e.actor.uid.is_empty());
            prop_assert!(!e.region.is_empty() && !e.account_uid.is_empty());
        }
    }

    #[test]
    fn never_panics_on_truncated_or_mutated_records(cut in 0usize..4096, pos in 0usize..4096, byte in any::<u8>()) {
        let mut raw = SAMPLE.as_bytes().to_vec();
        if let Some(b) = raw.get_mut(pos % SAMPLE.len()) {
            *b = byte;
        }
        raw.truncate(cut % (SAMPLE.len() + 1));
        let _ = normalize_record(&raw, &MAP);
    }
}
