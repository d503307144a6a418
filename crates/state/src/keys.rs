//! The registry of state keys: every key space of every table, with its owner and value encoding.
//!
//! Stages of different crates share one store (`analyze` keeps usage, the processor's windows,
//! detection and the file runner's bookkeeping together; a service task keeps its stage and the Kafka
//! runner's offsets together). Keys built ad hoc in each crate could collide without anyone noticing,
//! and a collision is silent corruption: one owner decoding the other's values. So every owner builds
//! its keys from a [`KeySpace`] listed here, and a test checks that within a table no space can
//! hold a key of another.
//!
//! A space is a [`Shape::Prefix`] (the prefix, then an owner-defined suffix) or a [`Shape::Exact`] key.
//! Two spaces are disjoint when no prefix space's prefix starts another space's key or prefix. An exact
//! key may be a prefix of another space's prefix (`rt:outbox` and `rt:outbox-from\0`): it is only ever
//! read with `get`, never scanned, so it names one key and claims no range. The byte strings are the
//! on-disk format of existing state directories; changing one orphans what is stored under it.
//!
//! What it is not: the encoders and decoders stay with their owners (most values are the owner's own
//! serde types); this module only names the spaces and turns a value that fails to decode into
//! [`StateError::Corrupt`] with a printable key ([`KeySpace::corrupt`]).

use std::fmt::Write as _;

use crate::{SeenSpan, StateError, Table, decode_counter};

/// Whether a [`KeySpace`] is one key or a family of keys under a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Prefix,
    Exact,
}

/// One family of keys in one table.
#[derive(Debug)]
pub struct KeySpace {
    pub table: Table,
    /// The prefix ([`Shape::Prefix`]) or the whole key ([`Shape::Exact`]).
    pub prefix: &'static [u8],
    pub shape: Shape,
    /// Who writes and reads these keys.
    pub owner: &'static str,
    /// What follows the prefix.
    pub suffix: &'static str,
    /// How the value is encoded.
    pub value: &'static str,
}

impl KeySpace {
    /// The key of `suffix` in this space (for an exact space, `suffix` must be empty).
    pub fn key(&self, suffix: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + suffix.len());
        k.extend_from_slice(self.prefix);
        k.extend_from_slice(suffix);
        k
    }

    /// The key of a string suffix (an identity ARN, a topic, a path).
    pub fn key_str(&self, suffix: &str) -> Vec<u8> {
        self.key(suffix.as_bytes())
    }

    /// What follows the prefix in `key`, if `key` is in this space.
    pub fn suffix_of<'k>(&self, key: &'k [u8]) -> Option<&'k [u8]> {
        key.strip_prefix(self.prefix)
    }

    /// The error for a value (or key) of this space that does not decode.
    pub fn corrupt(&self, key: &[u8], reason: impl Into<String>) -> StateError {
        StateError::Corrupt { table: self.table.name(), key: printable_key(key), reason: reason.into() }
    }

    /// An `i64` stored as 8 big-endian bytes.
    pub fn decode_i64(&self, key: &[u8], value: &[u8]) -> Result<i64, StateError> {
        <[u8; 8]>::try_from(value)
            .map(i64::from_be_bytes)
            .map_err(|_| self.corrupt(key, format!("expected 8 bytes (big-endian i64), found {}", value.len())))
    }

    /// A `u64` stored as 8 big-endian bytes.
    pub fn decode_u64(&self, key: &[u8], value: &[u8]) -> Result<u64, StateError> {
        decode_counter(value)
            .ok_or_else(|| self.corrupt(key, format!("expected 8 bytes (big-endian u64), found {}", value.len())))
    }

    /// A [`SeenSpan`].
    pub fn decode_span(&self, key: &[u8], value: &[u8]) -> Result<SeenSpan, StateError> {
        SeenSpan::decode(value)
            .ok_or_else(|| self.corrupt(key, format!("expected 16 bytes (first, last ms), found {}", value.len())))
    }
}

/// Keys are bytes (ARNs, topics, paths, big-endian numbers): shown with non-printable bytes escaped and cut
/// to a bounded length, so an error message stays one readable line whatever the key holds.
pub fn printable_key(key: &[u8]) -> String {
    const MAX: usize = 160;
    let mut out = String::with_capacity(key.len().min(MAX) + 8);
    for chunk in key.utf8_chunks() {
        for c in chunk.valid().chars() {
            if out.len() >= MAX {
                break;
            }
            if c.is_control() {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            if out.len() >= MAX {
                break;
            }
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    if out.len() >= MAX {
        let _ = write!(out, "… ({} bytes)", key.len());
    }
    out
}

const SPAN: &str = "SeenSpan: first and last event time, ms, 2 × big-endian i64; merged by (min, max)";
const JSON_META: &str = "JSON IdentityMeta (kind, account, name)";

// ---- Table::Usage (owner: grantwatch-core usage) -------------------------------------------------------

pub const USAGE_ACTION: KeySpace = usage(b"a", "identity \\0 IAM action");
pub const USAGE_RESOURCE: KeySpace = usage(b"r", "identity \\0 resource ARN");
pub const USAGE_ACCESS_KEY: KeySpace = usage(b"k", "identity \\0 access key id");
pub const USAGE_SESSION: KeySpace = usage(b"s", "identity \\0 session name");
pub const USAGE_IDENTITY: KeySpace = usage(b"i", "identity \\0 (any activity)");
pub const USAGE_ALL_EVENTS: KeySpace =
    KeySpace { table: Table::Usage, prefix: b"g", shape: Shape::Exact, owner: "core::usage", suffix: "", value: SPAN };

const fn usage(prefix: &'static [u8], suffix: &'static str) -> KeySpace {
    KeySpace { table: Table::Usage, prefix, shape: Shape::Prefix, owner: "core::usage", suffix, value: SPAN }
}

// ---- Table::Counters --------------------------------------------------------------------------------

pub const DAY_COUNTER: KeySpace = KeySpace {
    table: Table::Counters,
    prefix: b"d",
    shape: Shape::Prefix,
    owner: "core::usage",
    suffix: "identity \\0 UTC day since the epoch (big-endian i64)",
    value: "events that day, big-endian u64; merged by sum",
};

// ---- Table::Seen --------------------------------------------------------------------------------------

/// Event ids already processed. Two owners share the layout (day, then a 128-bit hash) and are kept
/// apart by the hash seed, not by a prefix: [`SEEN_SEED_USAGE`], [`SEEN_SEED_DETECT`].
pub const SEEN_EVENT: KeySpace = KeySpace {
    table: Table::Seen,
    prefix: b"",
    shape: Shape::Prefix,
    owner: "core::usage (seed SEEN_SEED_USAGE), detect::stage (seed SEEN_SEED_DETECT)",
    suffix: "UTC day (big-endian i64), XXH3-128 of the event identity with the owner's seed",
    value: "empty",
};
pub const SEEN_SEED_USAGE: u64 = 0;
/// `"detect"` in ASCII.
pub const SEEN_SEED_DETECT: u64 = 0x6465_7465_6374;

// ---- Table::Meta ----------------------------------------------------------------------------------------

pub const IDENTITY_META: KeySpace = meta(b"id\0", "core::usage", "identity ARN", JSON_META);
pub const PROCESSOR_DIRTY: KeySpace =
    meta(b"dirty\0", "core::processor", "identity ARN (changed since the last close)", JSON_META);
pub const PROCESSOR_ENTITLEMENTS: KeySpace =
    meta(b"ent\0", "core::processor", "identity ARN", "JSON EntitlementRecord");
pub const PROCESSOR_FLAGS: KeySpace = meta(b"flags\0", "core::processor", "identity ARN", "JSON [StatusFlag]");
pub const PROCESSOR_LAST_CLOSE: KeySpace = KeySpace {
    table: Table::Meta,
    prefix: b"last-close",
    shape: Shape::Exact,
    owner: "core::processor",
    suffix: "",
    value: "last window boundary closed, ms, big-endian i64",
};
pub const PROCESSOR_EXPIRY: KeySpace = meta(
    b"expiry\0",
    "core::processor",
    "window boundary ms (big-endian i64), identity ARN (its usage leaves the lookback by then)",
    "empty",
);
pub const ACCESS_OUTBOX: KeySpace = meta(
    b"acc:out\0",
    "access::store",
    "audit sequence number (big-endian u64): transitions committed, not yet in the audit log and topic",
    "JSON AccessAuditEvent",
);
pub const ACCESS_AUDIT_NEXT: KeySpace = KeySpace {
    table: Table::Meta,
    prefix: b"acc:seq",
    shape: Shape::Exact,
    owner: "access::store",
    suffix: "",
    value: "the next audit sequence number, big-endian u64",
};
pub const PROCESSOR_EXPIRY_OF: KeySpace = meta(
    b"expiry-of\0",
    "core::processor",
    "identity ARN (the identity's one scheduled re-score, see PROCESSOR_EXPIRY)",
    "window boundary ms, big-endian i64",
);
pub const PCI_HISTORY: KeySpace = meta(
    b"pci-h\0",
    "core::processor (written), core::history (read)",
    "identity ARN, \\0, window boundary ms (big-endian i64): every PCI update emitted, in the close's batch",
    "JSON PciPoint (compact PciUpdate without ARN and time)",
);
pub const RESULTS_DIR: KeySpace = KeySpace {
    table: Table::Meta,
    prefix: b"results-dir",
    shape: Shape::Exact,
    owner: "grantwatch CLI (analyze writes, report reads)",
    suffix: "",
    value: "UTF-8 path of the last analyze --out directory",
};
pub const DETECT_PROFILE: KeySpace = meta(b"det-prof\0", "detect::stage", "identity ARN", "JSON Profile");
pub const DETECT_INCIDENT: KeySpace = meta(b"det-inc\0", "detect::stage", "incident key", "JSON Incident");
pub const DETECT_WINDOW: KeySpace = meta(
    b"det-win\0",
    "detect::stage",
    "window end ms (big-endian i64), identity ARN (an open identity-hour window)",
    "empty",
);
pub const DETECT_ON_DEMAND: KeySpace =
    meta(b"det-od\0", "detect::stage", "access request id (an on-demand grant)", "JSON OnDemandGrant");
pub const DETECT_ON_DEMAND_IDENTITY: KeySpace = meta(
    b"det-odi\0",
    "detect::stage",
    "identity key (`user:`/`role:<account>:<name>`, `ic:<user id>`) that had on-demand grants",
    "JSON OnDemandIdentity",
);
pub const RUNNER_OFFSET: KeySpace =
    meta(b"rt:offset\0", "stream::runner", "input topic", "next offset to apply, big-endian i64");
pub const RUNNER_OUTBOX: KeySpace = KeySpace {
    table: Table::Meta,
    prefix: b"rt:outbox",
    shape: Shape::Exact,
    owner: "stream::runner",
    suffix: "",
    value: "outbox framing (stream::runner::encode_outbox)",
};
pub const RUNNER_OUTBOX_FROM: KeySpace =
    meta(b"rt:outbox-from\0", "stream::runner", "input topic", "offset the outbox starts from, big-endian i64");
pub const RUNNER_MAX_TIME: KeySpace = KeySpace {
    table: Table::Meta,
    prefix: b"rt:max-time",
    shape: Shape::Exact,
    owner: "stream::runner",
    suffix: "",
    value: "highest event time seen, ms, big-endian i64",
};
pub const RUNNER_SIDE_WATERMARK: KeySpace = KeySpace {
    table: Table::Meta,
    prefix: b"rt:side-wm",
    shape: Shape::Exact,
    owner: "stream::runner",
    suffix: "",
    value: "watermark of the side input (latest mark read), ms, big-endian i64",
};
pub const RUNNER_OUT_MARK: KeySpace = KeySpace {
    table: Table::Meta,
    prefix: b"rt:out-mark",
    shape: Shape::Exact,
    owner: "stream::runner",
    suffix: "",
    value: "last watermark mark produced, ms, big-endian i64",
};
pub const RUNNER_SIDE_PENDING: KeySpace = meta(
    b"rt:pending\0",
    "stream::runner",
    "effective time ms (big-endian i64), input offset (big-endian i64): a side record not yet due",
    "the record's payload as read",
);
pub const RUNNER_LOGGED: KeySpace = KeySpace {
    table: Table::Meta,
    prefix: b"rt:logged",
    shape: Shape::Exact,
    owner: "stream::changelog",
    suffix: "",
    value: "empty: the task's whole state history is in its changelog topic",
};
pub const FILE_INGESTED: KeySpace =
    meta(b"file\0", "runtime::file_run", "file path", "fingerprint, `xxh3:<size>:<16 hex digits>`");
pub const ALERTS_LENGTH: KeySpace = meta(
    b"out\0alerts\0",
    "grantwatch CLI (output::AlertFile)",
    "alerts file path",
    "committed length in bytes, big-endian u64",
);

pub const ACCESS_REQUEST: KeySpace =
    meta(b"acc:req\0", "access::store", "request id ([A-Za-z0-9_-], no \\0)", "JSON AccessRecord");
pub const ACCESS_LOG: KeySpace = meta(
    b"acc:log\0",
    "access::store",
    "request id, \\0, transition seq (big-endian u64): append-only",
    "JSON AccessTransition",
);
pub const ACCESS_DUE: KeySpace = meta(
    b"acc:due\0",
    "access::store",
    "due time ms (big-endian i64, sign bit flipped so keys sort as times), request id: an active grant's next \
     revocation check",
    "empty",
);

const fn meta(prefix: &'static [u8], owner: &'static str, suffix: &'static str, value: &'static str) -> KeySpace {
    KeySpace { table: Table::Meta, prefix, shape: Shape::Prefix, owner, suffix, value }
}

/// Every key space grantwatch uses.
pub const ALL: &[&KeySpace] = &[
    &USAGE_ACTION,
    &USAGE_RESOURCE,
    &USAGE_ACCESS_KEY,
    &USAGE_SESSION,
    &USAGE_IDENTITY,
    &USAGE_ALL_EVENTS,
    &DAY_COUNTER,
    &SEEN_EVENT,
    &IDENTITY_META,
    &PROCESSOR_DIRTY,
    &PROCESSOR_ENTITLEMENTS,
    &PROCESSOR_FLAGS,
    &PROCESSOR_LAST_CLOSE,
    &PROCESSOR_EXPIRY,
    &PROCESSOR_EXPIRY_OF,
    &PCI_HISTORY,
    &RESULTS_DIR,
    &DETECT_PROFILE,
    &DETECT_INCIDENT,
    &DETECT_WINDOW,
    &DETECT_ON_DEMAND,
    &DETECT_ON_DEMAND_IDENTITY,
    &RUNNER_OFFSET,
    &RUNNER_OUTBOX,
    &RUNNER_OUTBOX_FROM,
    &RUNNER_MAX_TIME,
    &RUNNER_SIDE_WATERMARK,
    &RUNNER_OUT_MARK,
    &RUNNER_SIDE_PENDING,
    &RUNNER_LOGGED,
    &FILE_INGESTED,
    &ALERTS_LENGTH,
    &ACCESS_REQUEST,
    &ACCESS_LOG,
    &ACCESS_DUE,
    &ACCESS_OUTBOX,
    &ACCESS_AUDIT_NEXT,
];

/// Why two spaces of one table overlap, if they do.
pub fn overlap(a: &KeySpace, b: &KeySpace) -> Option<String> {
    if a.table != b.table {
        return None;
    }
    let claims = |x: &KeySpace, y: &KeySpace| x.shape == Shape::Prefix && y.prefix.starts_with(x.prefix);
    let same_exact = a.shape == Shape::Exact && b.shape == Shape::Exact && a.prefix == b.prefix;
    (same_exact || claims(a, b) || claims(b, a)).then(|| {
        format!(
            "{} key spaces overlap: {:?} ({}) and {:?} ({})",
            a.table.name(),
            printable_key(a.prefix),
            a.owner,
            printable_key(b.prefix),
            b.owner
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_spaces_of_a_table_are_disjoint() {
        for (i, a) in ALL.iter().enumerate() {
            for b in &ALL[i + 1..] {
                assert_eq!(overlap(a, b), None);
            }
        }
        // The check itself sees overlaps.
        assert!(overlap(&meta(b"det-", "x", "", ""), &DETECT_PROFILE).is_some());
        assert!(overlap(&DETECT_PROFILE, &DETECT_PROFILE).is_some());
        assert!(overlap(&RUNNER_OUTBOX, &RUNNER_OUTBOX_FROM).is_none());
        assert_ne!(SEEN_SEED_USAGE, SEEN_SEED_DETECT);
    }

    #[test]
    fn only_the_seen_table_has_an_empty_prefix_and_only_one_space_there() {
        for s in ALL {
            assert_eq!(s.prefix.is_empty(), s.table == Table::Seen, "{s:?}");
            assert!(s.shape == Shape::Prefix || s.suffix.is_empty(), "{s:?}");
        }
        assert_eq!(ALL.iter().filter(|s| s.table == Table::Seen).count(), 1);
    }

    #[test]
    fn keys_print_readably_and_bounded() {
        assert_eq!(printable_key(b"det-prof\0arn:aws:iam::1:user/a"), "det-prof\\u{0}arn:aws:iam::1:user/a");
        assert_eq!(printable_key(&[b'd', 0xff, 0x01]), "d\\xff\\u{1}");
        let long = printable_key(&vec![b'x'; 10_000]);
        assert!(long.len() < 200 && long.ends_with("(10000 bytes)"), "{long}");
        let e = DETECT_INCIDENT.corrupt(b"det-inc\0k", "not JSON");
        assert_eq!(e.to_string(), "corrupt value in table meta (key \"det-inc\\u{0}k\"): not JSON");
    }

    #[test]
    fn fixed_width_values_refuse_other_lengths() {
        let k = RUNNER_OFFSET.key_str("t");
        assert_eq!(RUNNER_OFFSET.decode_i64(&k, &7i64.to_be_bytes()).unwrap(), 7);
        let e = RUNNER_OFFSET.decode_i64(&k, b"seven").unwrap_err();
        assert!(matches!(&e, StateError::Corrupt { table: "meta", key, .. } if key == "rt:offset\\u{0}t"), "{e}");
        assert!(DAY_COUNTER.decode_u64(b"d", &[1; 9]).is_err());
        assert!(USAGE_ACTION.decode_span(b"a", &[0; 15]).is_err());
        assert_eq!(RUNNER_OFFSET.suffix_of(&k), Some(&b"t"[..]));
    }
}
