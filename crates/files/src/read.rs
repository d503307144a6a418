//! Splitting a file into raw records.
//!
//! The file is read once, through a counter and an XXH3 hasher (so [`FileSummary::fingerprint`] costs
//! no second read). Gzip is detected by its magic bytes (`1f 8b`), whatever the name says; concatenated
//! gzip members are read as one stream. A leading UTF-8 byte-order mark is skipped.
//!
//! Both formats stream: memory is two IO buffers, the decompressor's window and one record buffer,
//! whatever the size of the file or of what it inflates to.
//!
//! - [`Format::RecordsJson`]: a streaming scanner (no `serde_json::Value`, no whole-document buffer)
//!   finds the top-level `Records` array (other top-level keys, before or after it, are checked and
//!   skipped without being kept; a bare top-level array is accepted too) and yields each element's
//!   bytes as written, from its first to its last byte, with its 0-based position as index. The whole
//!   document's JSON syntax is checked as it goes (not UTF-8, and not what the values mean: the
//!   normalizer checks each record): a syntax error is [`FileErrorKind::NotJson`] with its line, column
//!   and byte offset, after the elements before it were yielded. `{"Records": null}`, or an object
//!   without the key, is [`FileErrorKind::NoRecordsArray`] (at the end of the document); a scalar top
//!   level is [`FileErrorKind::NotObjectOrArray`].
//! - [`Format::JsonLines`]: line by line. Every line that is not blank is yielded, trimmed of
//!   surrounding whitespace, with its 0-based line number as index (blank lines count for numbering).
//!   A line that is not valid JSON is **not** a file error: it is yielded as is, and the downstream
//!   normalizer rejects it with its index.
//!
//! Limits ([`ReadOptions`]), both enforced while reading:
//! - A record (a `Records` element, or a JSON Lines line without its line end) longer than
//!   [`ReadOptions::max_record`] is never buffered whole: at most `max_record` bytes of it are held,
//!   the rest is scanned past, and it is yielded as [`Item::Oversized`] (index, length, cap) in its
//!   place; the rest of the file is read as usual. (A JSON Lines line that long made only of
//!   whitespace is blank, as any blank line.)
//! - Reading stops as soon as the decompressed content passes [`ReadOptions::max_decompressed`]: the
//!   file fails with [`FileErrorKind::TooLarge`], so a gzip bomb costs no more than the buffers above.
//!
//! An empty (or blank) file of either format yields nothing and is not an error. When reading fails,
//! the items already yielded stay yielded: the caller decides what to keep (and quarantines the file).

use std::{
    cell::{Cell, RefCell},
    fmt,
    fs::File,
    io::{self, BufRead, Read},
};

use xxhash_rust::xxh3::Xxh3;

use crate::{
    discover::{Format, SourceFile},
    error::{FileError, FileErrorKind},
    fingerprint::Fingerprint,
    scan,
};

/// Default cap on a file's decompressed size: 64 GiB (both formats stream, so this bounds time and
/// disk reads, not memory).
pub const DEFAULT_MAX_DECOMPRESSED: u64 = 64 << 30;
/// Default cap on one record: 16 MiB (CloudTrail's own events are far smaller; the cap is what one
/// reader thread may hold for one record).
pub const DEFAULT_MAX_RECORD: u64 = 16 << 20;

const IO_BUF: usize = 256 << 10;
/// After bad JSON in a gzip file, how much further to inflate to see whether the stream is corrupt.
const CORRUPT_PROBE: u64 = 1 << 20;
/// Keys of a record of the logs grantwatch reads (CloudTrail, Azure Activity and sign-ins, Cloud
/// Logging, Okta System Log, Workspace Reports).
const LOG_RECORD_KEYS: [&str; 8] =
    ["eventTime", "eventSource", "operationName", "createdDateTime", "protoPayload", "logName", "published", "events"];

/// How much of a `.json` file is looked at to tell one document from JSON Lines.
const SNIFF_BYTES: u64 = 64 << 10;

/// Whether a file named like one JSON document holds JSON Lines: its first line is a whole JSON object
/// without a record array (`Records`, `value`, `items`, `entries`): a record, alone or followed by
/// more (Azure writes an hour with one operation as a one-line `PT1H.json`). A document written on
/// one line (CloudTrail's delivery files) has its record array; a pretty-printed one has no whole
/// object on its first line.
fn sniff_lines(head: &[u8]) -> bool {
    let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    let Some(start) = head.iter().position(|b| !b.is_ascii_whitespace()) else { return false };
    if head.get(start) != Some(&b'{') {
        return false;
    }
    // A file within the peek may end without a line end.
    let len = memchr::memchr(b'\n', &head[start..]).unwrap_or(head.len() - start);
    let (line, rest) = head[start..].split_at(len);
    let Ok(keys) = serde_json::from_slice::<std::collections::BTreeMap<String, serde::de::IgnoredAny>>(line) else {
        return false;
    };
    if ["Records", "value", "items", "entries"].iter().any(|k| keys.contains_key(*k)) {
        return false;
    }
    // A lone object is a record only if it looks like one of a log (else the file is a document that
    // lacks its record array, and says so).
    !rest.iter().all(u8::is_ascii_whitespace) || LOG_RECORD_KEYS.iter().any(|k| keys.contains_key(*k))
}

/// Limits for reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOptions {
    /// Stop reading a file (it fails with [`FileErrorKind::TooLarge`]) as soon as its decompressed
    /// content passes this many bytes.
    pub max_decompressed: u64,
    /// A record longer than this many bytes is skipped without being buffered whole, and yielded as
    /// [`Item::Oversized`]; exactly this long is fine.
    pub max_record: u64,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions { max_decompressed: DEFAULT_MAX_DECOMPRESSED, max_record: DEFAULT_MAX_RECORD }
    }
}

/// The buffers one reader thread reuses from file to file: the record buffer and two IO windows (the
/// file as stored, and its decompressed content). Keep one per thread: allocating and zeroing fresh
/// windows per file cost more than reading a small file (an S3-layout trail is mostly 2-10 KB files).
pub struct ReadBuffers {
    /// The current record (at most [`ReadOptions::max_record`] bytes).
    record: Vec<u8>,
    disk: Box<[u8]>,
    decoded: Box<[u8]>,
}

impl Default for ReadBuffers {
    fn default() -> Self {
        ReadBuffers {
            record: Vec::new(),
            disk: vec![0; IO_BUF].into_boxed_slice(),
            decoded: vec![0; IO_BUF].into_boxed_slice(),
        }
    }
}

impl ReadBuffers {
    /// The record buffer's capacity: at most about twice [`ReadOptions::max_record`].
    pub fn record_capacity(&self) -> usize {
        self.record.capacity()
    }
}

impl fmt::Debug for ReadBuffers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadBuffers").field("record_capacity", &self.record.capacity()).finish_non_exhaustive()
    }
}

/// What the reader yields, in file order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item<'a> {
    /// A record.
    Record(Record<'a>),
    /// A record longer than [`ReadOptions::max_record`], skipped without being kept. Quarantine it
    /// (its `Display` is the reason); the items after it are read as usual.
    Oversized(Oversized),
}

impl Item<'_> {
    /// The index of the record (see [`Record::index`]).
    pub fn index(&self) -> u64 {
        match self {
            Item::Record(r) => r.index,
            Item::Oversized(o) => o.index,
        }
    }
}

/// One raw record. `raw` borrows the reader's buffer: copy it out if it must outlive the callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// 0-based: the position in the `Records` array, or the line number in a JSON Lines file.
    pub index: u64,
    pub raw: &'a [u8],
}

/// A record over the record cap. `Display`: "record 12 (20000000 bytes) exceeds the record cap of
/// 16777216 bytes".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Oversized {
    /// As [`Record::index`].
    pub index: u64,
    /// Its length in bytes: a `Records` element from its first to its last byte, a JSON Lines line
    /// without its line end (`\n`).
    pub len: u64,
    /// [`ReadOptions::max_record`].
    pub cap: u64,
}

impl fmt::Display for Oversized {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "record {} ({} bytes) exceeds the record cap of {} bytes", self.index, self.len, self.cap)
    }
}

/// What reading a file did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSummary {
    /// Records yielded ([`Item::Record`]).
    pub records: u64,
    /// Records over the record cap ([`Item::Oversized`]).
    pub oversized: u64,
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
    buf: &mut ReadBuffers,
    visit: &mut dyn FnMut(Item<'_>),
) -> Result<FileSummary, FileError> {
    read_records_with(file, &ReadOptions::default(), buf, visit)
}

/// Reads the local `file` and calls `visit` for each record (or oversized record), in order. `buf` is
/// reused (keep one per thread); its record buffer holds at most `opts.max_record` bytes. On `Err` the
/// items already yielded stay yielded; the caller quarantines the file. An S3 object fails with
/// [`io::ErrorKind::Unsupported`]: open it with `grantwatch-s3` and read it with [`read_records_from`].
pub fn read_records_with(
    file: &SourceFile,
    opts: &ReadOptions,
    buf: &mut ReadBuffers,
    visit: &mut dyn FnMut(Item<'_>),
) -> Result<FileSummary, FileError> {
    let io_err = |e| FileError::new(&file.location, FileErrorKind::Io(e));
    let path = file.local_path().ok_or_else(|| io_err(not_local()))?;
    let f = File::open(path).map_err(io_err)?;
    read_records_from(f, file, opts, buf, visit)
}

/// [`read_records_with`] over bytes already opened: `stored` yields `file`'s bytes as stored (gzip
/// or not), e.g. an S3 object's body. Everything else is the same: gzip detection, the streaming
/// scanner, both caps, the fingerprint of the bytes read; errors name `file`. An error of `stored`
/// itself is [`FileErrorKind::Io`].
pub fn read_records_from<R: Read>(
    stored: R,
    file: &SourceFile,
    opts: &ReadOptions,
    buf: &mut ReadBuffers,
    visit: &mut dyn FnMut(Item<'_>),
) -> Result<FileSummary, FileError> {
    let path = &file.location;
    let f = stored;
    let state = State::default();
    let mut gzip = false;
    let res = run(f, file.format, opts, &state, &mut gzip, buf, visit);
    match res {
        Ok(counts) => Ok(FileSummary {
            records: counts.records,
            oversized: counts.oversized,
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

pub(crate) enum Failure {
    Io(io::Error),
    Kind(FileErrorKind),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Io(e)
    }
}

/// The error of reading an S3 object as a local file.
pub(crate) fn not_local() -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, "an S3 object is not a local file")
}

/// The file as stored: counts and hashes what passes.
struct DiskReader<'s, R> {
    inner: R,
    state: &'s State,
}

impl<R: Read> Read for DiskReader<'_, R> {
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

/// The decompressed stream: counts and enforces the cap as it inflates, and retries interrupted reads
/// (so the readers above it see none).
struct CapReader<'s, R> {
    inner: R,
    cap: u64,
    state: &'s State,
}

impl<R: Read> Read for CapReader<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.state.over_cap.get() {
            return Err(io::Error::other("decompressed size cap exceeded"));
        }
        let room = self.cap.saturating_sub(self.state.decompressed.get());
        if room == 0 {
            // At the cap: any one byte more is too much (and inflating stops there).
            let mut probe = [0u8; 1];
            if read_retrying(&mut self.inner, &mut probe)? == 0 {
                return Ok(0);
            }
            self.state.decompressed.set(self.cap.saturating_add(1));
            self.state.over_cap.set(true);
            return Err(io::Error::other("decompressed size cap exceeded"));
        }
        let want = usize::try_from(room).unwrap_or(usize::MAX).min(out.len());
        let n = read_retrying(&mut self.inner, out.get_mut(..want).unwrap_or_default())?;
        self.state.decompressed.set(self.state.decompressed.get().saturating_add(n as u64));
        Ok(n)
    }
}

fn read_retrying<R: Read>(r: &mut R, out: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(out) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            res => return res,
        }
    }
}

fn run<R: Read>(
    f: R,
    format: Format,
    opts: &ReadOptions,
    state: &State,
    gzip: &mut bool,
    bufs: &mut ReadBuffers,
    visit: &mut dyn FnMut(Item<'_>),
) -> Result<scan::Counts, Failure> {
    let ReadBuffers { record: buf, disk: disk_window, decoded: window } = bufs;
    let mut disk = Buffered::new(DiskReader { inner: f, state }, disk_window);
    let (head, got) = read_head::<2, _>(&mut disk)?;
    let head = head.get(..got).unwrap_or_default();
    *gzip = head == [0x1f, 0x8b];
    let stream = io::Cursor::new(head.to_vec()).chain(disk);
    let decoded: Box<dyn Read + '_> =
        if *gzip { Box::new(flate2::bufread::MultiGzDecoder::new(stream)) } else { Box::new(stream) };
    let mut capped = CapReader { inner: decoded, cap: opts.max_decompressed, state };
    // A `.json` name does not make one document: Azure's diagnostic export writes JSON Lines into
    // `PT1H.json`. The first line decides (`sniff_lines`).
    let mut peek = Vec::new();
    let format = match format {
        Format::JsonLines => Format::JsonLines,
        Format::RecordsJson => {
            (&mut capped).take(SNIFF_BYTES).read_to_end(&mut peek).map_err(Failure::Io)?;
            if sniff_lines(&peek) { Format::JsonLines } else { Format::RecordsJson }
        }
    };
    let mut stream = io::Cursor::new(peek).chain(&mut capped);
    let res = match format {
        // The scanner has its own read window.
        Format::RecordsJson => scan::records_json(&mut stream, opts.max_record, buf, window, visit),
        Format::JsonLines => json_lines(Buffered::new(&mut stream, window), opts.max_record, buf, visit),
    };
    match res {
        // A corrupt gzip stream can inflate to garbage before the decoder notices: if it fails soon
        // after the bad JSON, the gzip error is the one to report.
        Err(Failure::Kind(kind @ FileErrorKind::NotJson { .. })) if *gzip => {
            match io::copy(&mut (&mut capped).take(CORRUPT_PROBE), &mut io::sink()) {
                Err(e) if !state.over_cap.get() => Err(Failure::Io(e)),
                _ => Err(Failure::Kind(kind)),
            }
        }
        res => res,
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

/// `BufReader` over a window the caller keeps: `std`'s `BufReader` owns its buffer and zeroes all of
/// it on every fill of a reader without `read_buf`, which is most of the cost of a small file.
struct Buffered<'w, R> {
    inner: R,
    window: &'w mut [u8],
    pos: usize,
    filled: usize,
}

impl<'w, R: Read> Buffered<'w, R> {
    fn new(inner: R, window: &'w mut [u8]) -> Self {
        Buffered { inner, window, pos: 0, filled: 0 }
    }
}

impl<R: Read> Read for Buffered<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        // A read at least as large as the window goes straight through, as `BufReader` does.
        if self.pos >= self.filled && out.len() >= self.window.len() {
            return self.inner.read(out);
        }
        let avail = self.fill_buf()?;
        let n = avail.len().min(out.len());
        if let (Some(dst), Some(src)) = (out.get_mut(..n), avail.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.consume(n);
        Ok(n)
    }
}

impl<R: Read> BufRead for Buffered<'_, R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos >= self.filled {
            self.filled = self.inner.read(self.window)?.min(self.window.len());
            self.pos = 0;
        }
        Ok(self.window.get(self.pos..self.filled).unwrap_or_default())
    }

    fn consume(&mut self, n: usize) {
        self.pos = self.pos.saturating_add(n).min(self.filled);
    }
}

fn json_lines<R: BufRead>(
    mut r: R,
    max_record: u64,
    buf: &mut Vec<u8>,
    visit: &mut dyn FnMut(Item<'_>),
) -> Result<scan::Counts, Failure> {
    let mut line_no = 0u64;
    let mut counts = scan::Counts::default();
    loop {
        buf.clear();
        let n = (&mut r).take(max_record.saturating_add(1)).read_until(b'\n', buf)?;
        if n == 0 {
            break;
        }
        let content = buf.strip_suffix(b"\n").unwrap_or(buf);
        let content = if line_no == 0 { strip_bom(content) } else { content };
        if content.len() as u64 > max_record {
            // Too long to keep: scan to the end of the line without buffering it.
            let (rest, rest_blank) = skip_line(&mut r)?;
            let blank = rest_blank && content.trim_ascii().is_empty();
            if !blank {
                let len = (content.len() as u64).saturating_add(rest);
                counts.oversized += 1;
                visit(Item::Oversized(Oversized { index: line_no, len, cap: max_record }));
            }
        } else {
            let trimmed = content.trim_ascii();
            if !trimmed.is_empty() {
                counts.records += 1;
                visit(Item::Record(Record { index: line_no, raw: trimmed }));
            }
        }
        line_no += 1;
    }
    Ok(counts)
}

/// Consumes the rest of a line and its `\n`; returns its length without the `\n`, and whether it is
/// all whitespace.
fn skip_line<R: BufRead>(r: &mut R) -> io::Result<(u64, bool)> {
    let mut len = 0u64;
    let mut blank = true;
    loop {
        let chunk = r.fill_buf()?;
        if chunk.is_empty() {
            return Ok((len, blank));
        }
        let (part, done) = match memchr::memchr(b'\n', chunk) {
            Some(i) => (chunk.get(..i).unwrap_or_default(), true),
            None => (chunk, false),
        };
        blank = blank && part.trim_ascii().is_empty();
        let (n, used) = (part.len(), part.len() + usize::from(done));
        len = len.saturating_add(n as u64);
        r.consume(used);
        if done {
            return Ok((len, blank));
        }
    }
}

fn strip_bom(b: &[u8]) -> &[u8] {
    b.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(b)
}
