//! Errors: [`FilesError`] for discovery, [`FileError`] for reading one file.

use std::{fmt, io, path::PathBuf};

use crate::location::Location;

/// Discovery failed: a path the caller named is missing or cannot be inspected or listed. (A path
/// found *below* a named directory that cannot be read is not an error: it is listed in
/// [`crate::Discovery::unreadable`].)
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// A path the caller named does not exist.
    #[error("{}: no such file or directory", path.display())]
    NotFound { path: PathBuf },
    /// A named path exists but could not be inspected, or a named directory could not be listed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Reading one file failed; the caller quarantines the whole file. `Display` names the file (its
/// path, or `s3://bucket/key`).
#[derive(Debug, thiserror::Error)]
#[error("{location}: {kind}")]
pub struct FileError {
    /// Boxed: an S3 location is several strings, and errors travel in every `Result` of the reader.
    pub location: Box<Location>,
    pub kind: FileErrorKind,
}

impl FileError {
    pub fn new(location: &Location, kind: FileErrorKind) -> FileError {
        FileError { location: Box::new(location.clone()), kind }
    }
}

/// What was wrong with a file.
#[derive(Debug)]
#[non_exhaustive]
pub enum FileErrorKind {
    /// The file could not be opened or read (for an S3 object: GetObject failed, or its body broke off).
    Io(io::Error),
    /// The gzip stream is corrupt.
    CorruptGzip(String),
    /// The gzip stream ends early.
    TruncatedGzip,
    /// The decompressed content exceeds [`crate::ReadOptions::max_decompressed`]; reading stopped
    /// there (the records yielded before stay yielded).
    TooLarge { cap: u64 },
    /// The content is not valid JSON. `line` and `column` are 1-based (the column counts bytes, after
    /// a byte-order mark on the first line); `offset` is the 0-based byte offset into the decompressed
    /// content of the first byte that does not fit (or of the end, when the document ends early).
    NotJson { message: String, line: usize, column: usize, offset: u64 },
    /// The top level is a JSON value other than an object or an array.
    NotObjectOrArray,
    /// A top-level object without a `Records` array.
    NoRecordsArray,
}

impl fmt::Display for FileErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileErrorKind::Io(e) => write!(f, "read error: {e}"),
            FileErrorKind::CorruptGzip(m) => write!(f, "corrupt gzip: {m}"),
            FileErrorKind::TruncatedGzip => write!(f, "truncated gzip: the stream ends early"),
            FileErrorKind::TooLarge { cap } => {
                write!(f, "decompressed content exceeds the cap of {cap} bytes")
            }
            FileErrorKind::NotJson { message, line, column, offset } => {
                write!(f, "not valid JSON at line {line} column {column} (byte offset {offset}): {message}")
            }
            FileErrorKind::NotObjectOrArray => {
                write!(f, "not a log document: the top level is neither an object nor an array")
            }
            FileErrorKind::NoRecordsArray => {
                write!(
                    f,
                    "not a log document: no top-level record array (\"Records\", \"value\", \"items\" or \"entries\")"
                )
            }
        }
    }
}
