//! CloudTrail: one record to one [`grantwatch_types::Event`], with the IAM actions it exercised.
//!
//! * [`ActionMap`]: `(eventSource, eventName)` → IAM action(s), data-driven (`data/aws/` plus
//!   `cloudtrail/exceptions.json`); precomputed so mapping an event is one hash lookup.
//! * [`normalize_record`] / [`Normalizer`]: the JSON bytes of one record → `Event`, deserializing only the
//!   fields it needs, borrowed from the input.
//! * [`redact`]: credentials out of the documents an event keeps and out of dead letters.

mod action_map;
mod lenient;
mod normalize;
pub mod redact;
mod resources;

pub use action_map::{
    ActionMap, ActionMapError, EXCEPTIONS_JSON, ExceptionEntry, Resolution, exception_entries, permissionless_names,
    strip_version_suffix,
};
pub use normalize::{NormalizeError, Normalizer, UNKNOWN, normalize_record};
