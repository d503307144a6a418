//! Splitting a file into raw records.
//!
//! The file is read once, through a counter and an XXH3 hasher (so [`FileSummary::fingerprint`] costs
//! no second read). Gzip is detected by its magic bytes (`1f 8b`), whatever the name says; concatenated
//! gzip members are read as one stream. A leading UTF-8 byte-order mark is skipped.
//!
//! - [`Format::RecordsJson`]: the whole decompressed document is read into the caller's buffer, then
//!   each element of its `Records` array (other top-level keys are ignored) or of a bare top-level
//!   array is yielded as raw bytes, borrowed from the buffer, without building a `serde_json::Value`.
//! - [`Format::JsonLines`]: streamed line by line through a reusable buffer (flat memory whatever the
//!   file size). Every line that is not blank is yielded, trimmed of surrounding whitespace, with its
//!   0-based line number as index (blank lines count for numbering). A line that is not valid JSON is
//!   **not** a file error: it is yielded as is, and the downstream normalizer rejects it with its index.
//!
//! An empty (or blank) file of either format yields no record and is not an error.

use std::{
    cell::{Cell, RefCell},
    fs::File,
    io::{self, BufRead, BufReader, Read},
};

use serde::Deserialize;
use serde_json::value::RawValue;
use xxhash_rust::xxh3::Xxh3;

use crate::{
    discover::{Format, SourceFile},
    error::{FileError, FileErrorKind},
    fingerprint::Fingerprint,
};

/// Default cap on a file's decompressed size: 2 GiB.
pub const DEFAULT_MAX_DECOMPRESSED: u64 = 2 << 30;
/// Default cap on one JSON Lines line: 64 MiB.
pub const DEFAULT_MAX_RECORD: u64 = 64 << 20;

const IO_BUF: usize = 256 << 10;

/// Limits for reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOptions {
    /// Refuse a `{"Records":[...]}` file whose decompressed content exceeds this many bytes (it is read
    /// whole). JSON Lines files stream and are not capped as a whole; `max_record` caps each line.
    pub max_decompressed: u64,
    /// Refuse a JSON Lines file with a line longer than this (the line is never buffered whole).
    pub max_record: u64,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions { max_decompressed: DEFAULT_MAX_DECOMPRESSED, max_record: DEFAULT_MAX_RECORD }
    }
}

/// One raw record. `raw` borrows the reader's buffer: copy it out if it must outlive the callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// 0-based: the position in the `Records` array, or the line number in a JSON Lines file.
    pub index: u64,
    pub raw: &'a [u8],
}

/// What reading a file did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSummary {
    /// Records yielded.
    pub records: u64,
    /// Bytes read from disk (compressed size).
    pub bytes_read: u64,
    /// Bytes after decompression (equal to `bytes_read` for plain files).
    pub bytes_decompressed: u64,
    /// Fingerprint of the bytes read from disk; equals [`crate::fingerprint_file`] of the same file.
    pub fingerprint: Fingerprint,
}

/// [`read_records_with`] with [`ReadOptions::default`].
pub fn read_records(
    file: &SourceFile,
    buf: &mut Vec<u8>,
    visit: &mut dyn FnMut(Record<'_>),
) -> Result<FileSummary, FileError> {
    read_records_with(file, &ReadOptions::default(), buf, visit)
}

/// Reads `file` and calls `visit` for each record, in order. `buf` is cleared and reused (keep one per
/// thread to avoid reallocations). On `Err` the records already yielded (JSON Lines only) should be
/// discarded with the file, which the caller quarantines.
pub fn read_records_with(
    file: &SourceFile,
    opts: &ReadOptions,
    buf: &mut Vec<u8>,
    visit: &mut dyn FnMut(Record<'_>),
) -> Result<FileSummary, FileError> {
    let path = &file.path;
    let f = File::open(path).map_err(|e| FileError::new(path, FileErrorKind::Io(e)))?;
    let state = State::default();
    let mut gzip = false;
    let res = run(f, file.format, opts, &state, &mut gzip, buf, visit);
    match res {
        Ok(records) => Ok(FileSummary {
            records,
            bytes_read: state.read.get(),
            bytes_decompressed: state.decompressed.get(),
            fingerprint: Fingerprint { size: state.read.get(), xxh3: state.hasher.borrow().digest() },
        }),
        Err(Failure::Kind(kind)) => Err(FileError::new(path, kind)),
        Err(Failure::Io(e)) => {
            let kind = if state.over_cap.get() {
                FileErrorKind::TooLarge { cap: opts.max_decompressed }
            } else if state.disk_failed.get() || !gzip {
                FileErrorKind::Io(e)
            } else if e.kind() == io::ErrorKind::UnexpectedEof {
                FileErrorKind::TruncatedGzip
            } else {
                FileErrorKind::CorruptGzip(e.to_string())
            };
            Err(FileError::new(path, kind))
        }
    }
}

/// Counters shared by the reader chain, inspected after it is dropped to classify errors.
#[derive(Default)]
struct State {
    read: Cell<u64>,
    decompressed: Cell<u64>,
    disk_failed: Cell<bool>,
    over_cap: Cell<bool>,
    hasher: RefCell<Xxh3>,
}

enum Failure {
    Io(io::Error),
    Kind(FileErrorKind),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Io(e)
    }
}

/// The file as stored: counts and hashes what passes.
struct DiskReader<'s> {
    inner: File,
    state: &'s State,
}

impl Read for DiskReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(out) {
            Ok(n) => {
                let got = out.get(..n).unwrap_or_default();
                self.state.hasher.borrow_mut().update(got);
                self.state.read.set(self.state.read.get() + n as u64);
                Ok(n)
            }
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.state.disk_failed.set(true);
                }
                Err(e)
            }
        }
    }
}

/// The decompressed stream: counts and enforces the cap.
struct CapReader<'s, R> {
    inner: R,
    cap: u64,
    state: &'s State,
}

impl<R: Read> Read for CapReader<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(out)?;
        let total = self.state.decompressed.get().saturating_add(n as u64);
        self.state.decompressed.set(total);
        if total > self.cap {
            self.state.over_cap.set(true);
            return Err(io::Error::other("decompressed size cap exceeded"));
        }
        Ok(n)
    }
}

fn run(
    f: File,
    format: Format,
    opts: &ReadOptions,
    state: &State,
    gzip: &mut bool,
    buf: &mut Vec<u8>,
    visit: &mut dyn FnMut(Record<'_>),
) -> Result<u64, Failure> {
    let mut disk = BufReader::with_capacity(IO_BUF, DiskReader { inner: f, state });
    let (head, got) = read_head::<2, _>(&mut disk)?;
    let head = head.get(..got).unwrap_or_default();
    *gzip = head == [0x1f, 0x8b];
    let stream = io::Cursor::new(head.to_vec()).chain(disk);
    let decoded: Box<dyn Read + '_> =
        if *gzip { Box::new(flate2::bufread::MultiGzDecoder::new(stream)) } else { Box::new(stream) };
    // The cap guards the one format read whole into memory. JSON Lines streams line by line with its
    // own per-record cap, so a file of any size is fine (a 10M-event export is ~14 GB).
    let cap = match format {
        Format::RecordsJson => opts.max_decompressed,
        Format::JsonLines => u64::MAX,
    };
    let capped = CapReader { inner: decoded, cap, state };
    match format {
        Format::RecordsJson => records_json(capped, opts, buf, visit),
        Format::JsonLines => json_lines(capped, opts, buf, visit),
    }
}

/// Reads up to `N` bytes (fewer only at end of stream).
fn read_head<const N: usize, R: Read>(r: &mut R) -> io::Result<([u8; N], usize)> {
    let mut head = [0u8; N];
    let mut got = 0;
    while let Some(rest) = head.get_mut(got..) {
        if rest.is_empty() {
            break;
        }
        match r.read(rest) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((head, got))
}

#[derive(Deserialize)]
struct Doc<'a> {
    #[serde(borrow, rename = "Records")]
    records: Option<Vec<&'a RawValue>>,
}

fn records_json<R: Read>(
    mut r: R,
    opts: &ReadOptions,
    buf: &mut Vec<u8>,
    visit: &mut dyn FnMut(Record<'_>),
) -> Result<u64, Failure> {
    buf.clear();
    // Read at most cap+1 bytes so the cap check fires in CapReader rather than growing forever.
    (&mut r).take(opts.max_decompressed.saturating_add(1)).read_to_end(buf)?;
    let body = strip_bom(buf);
    let bom = (buf.len() - body.len()) as u64;
    let start = body.iter().position(|b| !b.is_ascii_whitespace());
    let Some(first) = start.and_then(|i| body.get(i)) else {
        return Ok(0); // empty or blank
    };
    let records: Vec<&RawValue> = match first {
        b'{' => serde_json::from_slice::<Doc<'_>>(body)
            .map_err(|e| not_json(&e, body, bom))?
            .records
            .ok_or(Failure::Kind(FileErrorKind::NoRecordsArray))?,
        b'[' => serde_json::from_slice::<Vec<&RawValue>>(body).map_err(|e| not_json(&e, body, bom))?,
        _ => {
            // Let serde_json say whether it is JSON at all.
            return Err(match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                Err(e) => not_json(&e, body, bom),
                Ok(_) => Failure::Kind(FileErrorKind::NotObjectOrArray),
            });
        }
    };
    let mut n = 0u64;
    for raw in records {
        visit(Record { index: n, raw: raw.get().as_bytes() });
        n += 1;
    }
    Ok(n)
}

fn json_lines<R: Read>(
    r: R,
    opts: &ReadOptions,
    buf: &mut Vec<u8>,
    visit: &mut dyn FnMut(Record<'_>),
) -> Result<u64, Failure> {
    let mut r = BufReader::with_capacity(IO_BUF, r);
    let mut line_no = 0u64;
    let mut records = 0u64;
    loop {
        buf.clear();
        let n = (&mut r).take(opts.max_record.saturating_add(1)).read_until(b'\n', buf)?;
        if n == 0 {
            break;
        }
        let content = buf.strip_suffix(b"\n").unwrap_or(buf);
        if content.len() as u64 > opts.max_record {
            return Err(Failure::Kind(FileErrorKind::RecordTooLarge { line: line_no, cap: opts.max_record }));
        }
        let content = if line_no == 0 { strip_bom(content) } else { content };
        let trimmed = content.trim_ascii();
        if !trimmed.is_empty() {
            visit(Record { index: line_no, raw: trimmed });
            records += 1;
        }
        line_no += 1;
    }
    Ok(records)
}

fn strip_bom(b: &[u8]) -> &[u8] {
    b.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(b)
}

fn not_json(e: &serde_json::Error, body: &[u8], bom: u64) -> Failure {
    let (line, column) = (e.line(), e.column());
    let offset = byte_offset(body, line, column) + bom;
    let message = e.to_string();
    // serde_json appends " at line L column C"; the Display of the kind says it once.
    let message = match message.rfind(" at line ") {
        Some(i) => message.get(..i).unwrap_or(&message).to_string(),
        None => message,
    };
    Failure::Kind(FileErrorKind::NotJson { message, line, column, offset })
}

/// 0-based byte offset of serde_json's 1-based line / column (column 0 means "before the line").
fn byte_offset(body: &[u8], line: usize, column: usize) -> u64 {
    let line_start =
        if line <= 1 { 0 } else { memchr::memchr_iter(b'\n', body).nth(line - 2).map_or(body.len(), |i| i + 1) };
    let off = line_start + column.saturating_sub(1);
    off.min(body.len()) as u64
}
