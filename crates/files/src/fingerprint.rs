//! "This file was already ingested": size + XXH3-64 (seed 0) of a file's bytes as stored on disk
//! (compressed bytes for a gzip file). Cheap, stable across versions and platforms, not cryptographic:
//! it tells re-deliveries and re-runs apart from new files, it does not defend against forgery.
//! The same events recompressed differently get a different fingerprint.

use std::{fmt, fs::File, io::Read, str::FromStr};

use xxhash_rust::xxh3::{Xxh3, xxh3_64};

use crate::{
    discover::SourceFile,
    error::{FileError, FileErrorKind},
    read::not_local,
};

/// A file's fingerprint. Its string form, `xxh3:<size>:<16 hex digits>`, is what to store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint {
    /// Size in bytes.
    pub size: u64,
    /// XXH3-64 with seed 0.
    pub xxh3: u64,
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "xxh3:{}:{:016x}", self.size, self.xxh3)
    }
}

impl FromStr for Fingerprint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("not a fingerprint (want xxh3:<size>:<16 hex digits>): {s:?}");
        let rest = s.strip_prefix("xxh3:").ok_or_else(bad)?;
        let (size, hash) = rest.split_once(':').ok_or_else(bad)?;
        if hash.len() != 16 {
            return Err(bad());
        }
        Ok(Fingerprint {
            size: size.parse().map_err(|_| bad())?,
            xxh3: u64::from_str_radix(hash, 16).map_err(|_| bad())?,
        })
    }
}

/// The fingerprint of bytes already in memory (the file's bytes as stored).
pub fn fingerprint(raw_bytes: &[u8]) -> Fingerprint {
    Fingerprint { size: raw_bytes.len() as u64, xxh3: xxh3_64(raw_bytes) }
}

/// The fingerprint of a local file, streamed from disk. [`crate::read_records`] computes the same
/// value in its [`crate::FileSummary`] without a second read. An S3 object is not read here (that
/// would download it): it fails with [`std::io::ErrorKind::Unsupported`].
pub fn fingerprint_file(file: &SourceFile) -> Result<Fingerprint, FileError> {
    let err = |e| FileError::new(&file.location, FileErrorKind::Io(e));
    let path = file.local_path().ok_or_else(|| err(not_local()))?;
    let mut f = File::open(path).map_err(err)?;
    let mut hasher = Xxh3::new();
    let mut chunk = vec![0u8; 256 << 10];
    let mut size = 0u64;
    loop {
        let n = match f.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(err(e)),
        };
        hasher.update(chunk.get(..n).unwrap_or_default());
        size += n as u64;
    }
    Ok(Fingerprint { size, xxh3: hasher.digest() })
}
