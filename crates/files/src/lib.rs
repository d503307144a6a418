//! `grantwatch-files`: the local-file source layer of grantwatch.
//!
//! What it is:
//! - **Locations** ([`Location`], [`Input`]): a file to read is a local path or an S3 object
//!   ([`S3Object`]); a user names local paths or `s3://bucket[/prefix]` ([`S3Prefix`]). An S3
//!   listing becomes a [`Discovery`] by the same name rules as a walk ([`discover_objects`]).
//! - **Discovery** ([`discover`]): turns the paths a user names (files or directory trees) into a
//!   sorted, de-duplicated list of [`SourceFile`]s: CloudTrail's S3 delivery layout
//!   (`AWSLogs/<account>/CloudTrail/<region>/YYYY/MM/DD/*.json.gz`, and the organization-trail layout
//!   `AWSLogs/<org-id>/<account>/CloudTrail/...`) plus any `*.json`, `*.jsonl`, `*.ndjson` file,
//!   each optionally `.gz`. Digest files and hidden files are skipped and counted.
//! - **Reading** ([`read_records`], and [`read_records_from`] over any `Read`, such as an S3 object's
//!   body): decompresses gzip (detected by its magic bytes), and splits a
//!   file into raw records — the elements of a `{"Records":[...]}` document (or of a bare top-level
//!   array), or the lines of a JSON Lines file — streaming, without building a `serde_json::Value`,
//!   in memory bounded by [`ReadOptions`] whatever the input (records over the cap are reported as
//!   [`Item::Oversized`], inflation stops at the decompressed-size cap).
//! - **Quarantine** ([`QuarantineWriter`]): a thread-safe JSON Lines sink for rejected files and records.
//! - **Fingerprints** ([`Fingerprint`]): size + XXH3-64 of a file's bytes as stored on disk, to tell
//!   "this file was already ingested".
//!
//! What it deliberately is not: it knows nothing of CloudTrail event semantics (no field is read from a
//! record; normalization lives downstream), it does no network IO (the S3 client is `grantwatch-s3`;
//! here S3 is only names and listing rules), it keeps no state
//! (whether a fingerprint was seen is the caller's business) and it does not log: errors are returned,
//! and the only thing it ever writes is the quarantine file the caller asked for.

mod discover;
mod error;
mod fingerprint;
mod location;
mod quarantine;
mod read;
mod scan;

pub use discover::{
    Discovery, Format, Ignored, S3Hints, SourceFile, YearMonthDay, delivery_time, discover, sort_by_delivery,
    source_file,
};
pub use error::{FileError, FileErrorKind, FilesError};
pub use fingerprint::{Fingerprint, fingerprint, fingerprint_file};
pub use location::{Input, ListedObject, Location, S3Object, S3Prefix, discover_objects};
pub use quarantine::{QuarantineCounts, QuarantineWriter, RAW_STRING_LIMIT};
pub use read::{
    DEFAULT_MAX_DECOMPRESSED, DEFAULT_MAX_RECORD, FileSummary, Item, Oversized, ReadBuffers, ReadOptions, Record,
    read_records, read_records_from, read_records_with,
};
