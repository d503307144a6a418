//! The quarantine file: one JSON line per rejected file or record,
//! `{"file": "...", "record": 12 | null, "reason": "...", "raw": ...}`.
//!
//! `raw` is the record itself when it is valid JSON (re-emitted on one line, byte-for-byte otherwise:
//! only whitespace outside strings is dropped), else a string of its bytes decoded lossily and cut to
//! [`RAW_STRING_LIMIT`] bytes, or `null` for a whole-file entry (the file is not copied) and for a
//! record written without its bytes ([`QuarantineWriter::record_without_raw`], e.g. one over the
//! record cap, which the reader never held whole). Files are named as [`crate::Location`] displays
//! them: local paths lossily (U+FFFD for bytes that are not UTF-8), S3 objects as `s3://bucket/key`. Nothing else is written, and nothing is logged. The file is created (truncated)
//! on the first entry, with its parent directories; each entry is written with one `write_all` and
//! flushed, under a mutex, so lines from parallel readers never interleave.

use std::{
    fs::{self, File},
    io::{self, Write},
    path::{Path, PathBuf},
    sync::Mutex,
};

use serde::Serialize;
use serde_json::value::RawValue;

/// Undecodable raw bytes are kept up to this many bytes (64 KiB).
pub const RAW_STRING_LIMIT: usize = 64 << 10;

/// Numbers of entries written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuarantineCounts {
    pub files: u64,
    pub records: u64,
}

/// A thread-safe, lazily created JSON Lines quarantine file.
#[derive(Debug)]
pub struct QuarantineWriter {
    path: PathBuf,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    out: Option<File>,
    counts: QuarantineCounts,
}

#[derive(Serialize)]
struct Entry<'a> {
    file: &'a str,
    record: Option<u64>,
    reason: &'a str,
    raw: Raw<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Raw<'a> {
    Json(&'a RawValue),
    Text(String),
    None(Option<()>),
}

impl QuarantineWriter {
    /// Nothing is created until the first entry.
    pub fn new(path: impl Into<PathBuf>) -> QuarantineWriter {
        QuarantineWriter { path: path.into(), inner: Mutex::new(Inner::default()) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Quarantines a whole file (`record: null`, `raw: null`). `file` is its name (a path or an
    /// `s3://` URL, as [`crate::Location`] displays it).
    pub fn file(&self, file: &str, reason: &str) -> io::Result<()> {
        let entry = Entry { file, record: None, reason, raw: Raw::None(None) };
        self.write(&entry, true)
    }

    /// Quarantines one record of `file`.
    pub fn record(&self, file: &str, index: u64, reason: &str, raw: &[u8]) -> io::Result<()> {
        let compact;
        let raw = match serde_json::from_slice::<&RawValue>(raw) {
            Ok(v) if memchr::memchr2(b'\n', b'\r', v.get().as_bytes()).is_none() => Raw::Json(v),
            Ok(v) => {
                compact = minify(v.get());
                match serde_json::from_str::<&RawValue>(&compact) {
                    Ok(c) => Raw::Json(c),
                    Err(_) => Raw::Text(lossy_prefix(raw)),
                }
            }
            Err(_) => Raw::Text(lossy_prefix(raw)),
        };
        let entry = Entry { file, record: Some(index), reason, raw };
        self.write(&entry, false)
    }

    /// Quarantines one record of `file` without its bytes (`raw: null`): for a record that was not
    /// kept, such as one over [`crate::ReadOptions::max_record`] ([`crate::Oversized`]).
    pub fn record_without_raw(&self, file: &str, index: u64, reason: &str) -> io::Result<()> {
        let entry = Entry { file, record: Some(index), reason, raw: Raw::None(None) };
        self.write(&entry, false)
    }

    pub fn counts(&self) -> QuarantineCounts {
        self.lock().counts
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self, entry: &Entry<'_>, whole_file: bool) -> io::Result<()> {
        let mut line = serde_json::to_vec(entry).map_err(io::Error::other)?;
        line.push(b'\n');
        let mut inner = self.lock();
        let out = match &mut inner.out {
            Some(f) => f,
            slot @ None => {
                if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    fs::create_dir_all(parent)?;
                }
                slot.insert(File::create(&self.path)?)
            }
        };
        out.write_all(&line)?;
        out.flush()?;
        if whole_file {
            inner.counts.files += 1;
        } else {
            inner.counts.records += 1;
        }
        Ok(())
    }
}

/// Drops JSON whitespace outside strings (the input is valid JSON).
fn minify(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            out.push(c);
        }
    }
    out
}

fn lossy_prefix(raw: &[u8]) -> String {
    let cut = raw.get(..RAW_STRING_LIMIT).unwrap_or(raw);
    String::from_utf8_lossy(cut).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minify_keeps_strings() {
        assert_eq!(minify("{ \"a b\" : [1, \"x\\\" y\"],\n \"c\":\t2 }"), "{\"a b\":[1,\"x\\\" y\"],\"c\":2}");
    }
}
