//! The streaming scanner of `{"Records":[...]}` documents (and bare top-level arrays).
//!
//! A pull scanner over a [`Read`], through its own read window: it checks the JSON syntax of the whole document (the grammar of
//! RFC 8259: strings and their escapes, numbers, literals, separators, balanced nesting) without
//! building any value, and copies out only the bytes of one `Records` element at a time, into the
//! caller's buffer, reused from element to element. Everything else (other top-level keys, their
//! values, whitespace) is consumed and checked, never kept. Memory is the read window, the
//! record buffer (at most `max_record` bytes: an element longer than that is scanned to its end
//! without being kept, and reported as [`Item::Oversized`]) and one bit per level of nesting (at most
//! [`MAX_DEPTH`] levels).
//!
//! What it does not check: UTF-8 (a record with invalid UTF-8 is yielded, and rejected downstream
//! with its index) and the meaning of values (that is the normalizer's job). Newlines are counted only
//! in whitespace between tokens, which is the only place JSON allows a raw newline, so error line
//! numbers are exact.

use std::io::{self, Read};

use crate::{
    error::FileErrorKind,
    read::{Failure, Item, Oversized, Record},
};

/// Nesting deeper than this many levels (top level included) makes the document an error: the cost
/// of one bit per level stays fixed whatever the input.
pub(crate) const MAX_DEPTH: usize = 1 << 16;

/// A `"Records"` key is at most 7 characters, each written with at most 6 bytes (`\u0052`).
const KEY_CAPTURE: u64 = 2 + 7 * 6;

/// The bytes that end a run of plain string content: `"`, `\\` and control characters.
static STRING_STOP: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// Which buffer consumed bytes are copied into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Capture {
    Off,
    Record,
    Key,
}

/// How many records and oversized records a file yielded.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counts {
    pub(crate) records: u64,
    pub(crate) oversized: u64,
}

/// Scans a `{"Records":[...]}` document or a bare array and calls `visit` for each element.
pub(crate) fn records_json<R: Read>(
    r: R,
    max_record: u64,
    buf: &mut Vec<u8>,
    window: &mut [u8],
    visit: &mut dyn FnMut(Item<'_>),
) -> Result<Counts, Failure> {
    let mut s = Scanner::new(r, buf, window, max_record);
    let mut counts = Counts::default();
    s.bom()?;
    match s.ws()? {
        None => return Ok(counts), // empty or blank
        Some(b'[') => s.records_array(visit, &mut counts)?,
        Some(b'{') => {
            let found = s.top_object(visit, &mut counts)?;
            s.end()?;
            return if found { Ok(counts) } else { Err(Failure::Kind(FileErrorKind::NoRecordsArray)) };
        }
        Some(_) => {
            s.value()?;
            s.end()?;
            return Err(Failure::Kind(FileErrorKind::NotObjectOrArray));
        }
    }
    s.end()?;
    Ok(counts)
}

struct Scanner<'b, R> {
    r: R,
    /// The read window: `data[start..end]` is read and not yet consumed; `data[..start]` is consumed.
    data: &'b mut [u8],
    start: usize,
    end: usize,
    /// Content offset of `data[0]`.
    base: u64,
    eof: bool,
    /// 1-based line of the next byte, and the offset at which that line starts.
    line: usize,
    line_start: u64,
    /// Where consumed bytes are copied (up to `limit` bytes): `data[from..start]` are captured bytes
    /// not copied yet; `len` counts those copied (or dropped over the limit).
    capture: Capture,
    from: usize,
    len: u64,
    limit: u64,
    /// The record buffer.
    buf: &'b mut Vec<u8>,
    /// The top-level key being read (at most [`KEY_CAPTURE`] bytes).
    key: Vec<u8>,
    max_record: u64,
    /// One bit per open container, set for an object. `depth` containers are open.
    stack: Vec<u64>,
    depth: usize,
}

impl<'b, R: Read> Scanner<'b, R> {
    fn new(r: R, buf: &'b mut Vec<u8>, data: &'b mut [u8], max_record: u64) -> Self {
        buf.clear();
        Scanner {
            r,
            data,
            start: 0,
            end: 0,
            base: 0,
            eof: false,
            line: 1,
            line_start: 0,
            capture: Capture::Off,
            from: 0,
            len: 0,
            limit: 0,
            buf,
            key: Vec::new(),
            max_record,
            stack: Vec::new(),
            depth: 0,
        }
    }

    /// The offset of the next byte.
    #[inline]
    fn pos(&self) -> u64 {
        self.base + self.start as u64
    }

    /// The unconsumed bytes, reading more when there are none; empty only at the end of the content.
    #[inline]
    fn fill(&mut self) -> Result<&[u8], Failure> {
        if self.start >= self.end {
            self.refill()?;
        }
        Ok(self.data.get(self.start..self.end).unwrap_or_default())
    }

    fn refill(&mut self) -> Result<(), Failure> {
        self.flush_capture();
        self.base += self.end as u64;
        (self.start, self.end, self.from) = (0, 0, 0);
        if self.eof {
            return Ok(());
        }
        loop {
            match self.r.read(self.data) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end = n.min(self.data.len()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Failure::Io(e)),
            }
            return Ok(());
        }
    }

    #[inline]
    fn peek(&mut self) -> Result<Option<u8>, Failure> {
        if self.start < self.end
            && let Some(&b) = self.data.get(self.start)
        {
            return Ok(Some(b));
        }
        Ok(self.fill()?.first().copied())
    }

    /// Consumes the next `n` bytes (the caller saw them in [`Self::fill`] or [`Self::peek`]).
    #[inline]
    fn consume(&mut self, n: usize) {
        self.start = self.start.saturating_add(n).min(self.end);
    }

    /// Copies the captured bytes not copied yet into the capture's buffer, up to its limit.
    fn flush_capture(&mut self) {
        if self.capture == Capture::Off {
            return;
        }
        let part = self.data.get(self.from..self.start).unwrap_or_default();
        let room = usize::try_from(self.limit.saturating_sub(self.len)).unwrap_or(usize::MAX);
        let out = if self.capture == Capture::Key { &mut self.key } else { &mut *self.buf };
        out.extend_from_slice(part.get(..room).unwrap_or(part));
        self.len = self.len.saturating_add(part.len() as u64);
        self.from = self.start;
    }

    fn start_capture(&mut self, into: Capture) {
        self.len = 0;
        self.from = self.start;
        self.limit = match into {
            Capture::Off => 0,
            Capture::Record => {
                self.buf.clear();
                self.max_record
            }
            Capture::Key => {
                self.key.clear();
                KEY_CAPTURE
            }
        };
        self.capture = into;
    }

    /// Ends the capture; `len` is then the length of what it saw.
    fn stop_capture(&mut self) {
        self.flush_capture();
        self.capture = Capture::Off;
    }

    fn error(&self, message: &str) -> Failure {
        Failure::Kind(FileErrorKind::NotJson {
            message: message.to_string(),
            line: self.line,
            column: usize::try_from(self.pos().saturating_sub(self.line_start)).unwrap_or(usize::MAX).saturating_add(1),
            offset: self.pos(),
        })
    }

    /// An error at the next byte, or at the end of the content if there is none.
    fn unexpected(&self, next: Option<u8>, expected: &str, what: &str) -> Failure {
        match next {
            Some(_) => self.error(expected),
            None => self.error(&format!("EOF while parsing {what}")),
        }
    }

    /// Skips a UTF-8 byte-order mark at the start.
    fn bom(&mut self) -> Result<(), Failure> {
        if self.peek()? != Some(0xEF) {
            return Ok(());
        }
        self.consume(1);
        for want in [0xBB, 0xBF] {
            if self.peek()? != Some(want) {
                return Err(self.error("expected value"));
            }
            self.consume(1);
        }
        self.line_start = self.pos();
        Ok(())
    }

    /// Consumes whitespace; returns the next byte (not consumed), `None` at the end.
    #[inline]
    fn ws(&mut self) -> Result<Option<u8>, Failure> {
        match self.peek()? {
            Some(b' ' | b'\t' | b'\n' | b'\r') => self.ws_slow(),
            next => Ok(next),
        }
    }

    fn ws_slow(&mut self) -> Result<Option<u8>, Failure> {
        loop {
            let chunk = self.fill()?;
            if chunk.is_empty() {
                return Ok(None);
            }
            let mut n = 0;
            let mut next = None;
            let mut newlines = 0usize;
            let mut last_newline = 0usize;
            for &b in chunk {
                match b {
                    b' ' | b'\t' | b'\r' => {}
                    b'\n' => {
                        newlines += 1;
                        last_newline = n;
                    }
                    _ => {
                        next = Some(b);
                        break;
                    }
                }
                n += 1;
            }
            if newlines > 0 {
                self.line += newlines;
                self.line_start = self.pos() + last_newline as u64 + 1;
            }
            self.consume(n);
            if next.is_some() {
                return Ok(next);
            }
        }
    }

    /// After the top-level value: only whitespace may follow.
    fn end(&mut self) -> Result<(), Failure> {
        match self.ws()? {
            None => Ok(()),
            Some(_) => Err(self.error("trailing characters")),
        }
    }

    fn push(&mut self, object: bool) -> Result<(), Failure> {
        if self.depth >= MAX_DEPTH {
            return Err(self.error(&format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        let (word, bit) = (self.depth / 64, self.depth % 64);
        if self.stack.len() <= word {
            self.stack.push(0);
        }
        if let Some(w) = self.stack.get_mut(word) {
            if object {
                *w |= 1 << bit;
            } else {
                *w &= !(1 << bit);
            }
        }
        self.depth += 1;
        Ok(())
    }

    /// Whether the innermost open container is an object.
    fn in_object(&self) -> bool {
        let d = self.depth.saturating_sub(1);
        self.stack.get(d / 64).is_some_and(|w| w & (1 << (d % 64)) != 0)
    }

    /// Consumes one value, which starts at the next byte (whitespace already skipped), and nothing
    /// after it.
    fn value(&mut self) -> Result<(), Failure> {
        let base = self.depth;
        'value: loop {
            // A value starts here.
            match self.peek()? {
                Some(b'{') => {
                    self.consume(1);
                    match self.ws()? {
                        Some(b'}') => self.consume(1),
                        Some(b'"') => {
                            self.push(true)?;
                            self.member_key()?;
                            continue 'value;
                        }
                        next => return Err(self.unexpected(next, "expected a string key or `}`", "an object")),
                    }
                }
                Some(b'[') => {
                    self.consume(1);
                    match self.ws()? {
                        Some(b']') => self.consume(1),
                        Some(_) => {
                            self.push(false)?;
                            continue 'value;
                        }
                        None => return Err(self.error("EOF while parsing a list")),
                    }
                }
                Some(b'"') => self.string()?,
                Some(b'-' | b'0'..=b'9') => self.number()?,
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                next => return Err(self.unexpected(next, "expected value", "a value")),
            }
            // A value ended: close containers, or go on to the next element or member.
            while self.depth > base {
                let object = self.in_object();
                match self.ws()? {
                    Some(b',') => {
                        self.consume(1);
                        let next = self.ws()?;
                        if object {
                            if next != Some(b'"') {
                                return Err(self.unexpected(next, "expected a string key", "an object"));
                            }
                            self.member_key()?;
                        }
                        continue 'value;
                    }
                    Some(b'}') if object => {
                        self.consume(1);
                        self.depth -= 1;
                    }
                    Some(b']') if !object => {
                        self.consume(1);
                        self.depth -= 1;
                    }
                    next if object => return Err(self.unexpected(next, "expected `,` or `}`", "an object")),
                    next => return Err(self.unexpected(next, "expected `,` or `]`", "a list")),
                }
            }
            return Ok(());
        }
    }

    /// Consumes a key (at its opening quote), the colon and the whitespace before the value.
    fn member_key(&mut self) -> Result<(), Failure> {
        self.string()?;
        match self.ws()? {
            Some(b':') => self.consume(1),
            next => return Err(self.unexpected(next, "expected `:`", "an object")),
        }
        self.ws()?;
        Ok(())
    }

    /// Consumes a string, at its opening quote.
    fn string(&mut self) -> Result<(), Failure> {
        self.consume(1);
        loop {
            let chunk = self.fill()?;
            if chunk.is_empty() {
                return Err(self.error("EOF while parsing a string"));
            }
            let stop = chunk.iter().position(|&b| STRING_STOP[usize::from(b)]);
            let Some(i) = stop else {
                let n = chunk.len();
                self.consume(n);
                continue;
            };
            let b = chunk.get(i).copied();
            self.consume(i);
            match b {
                Some(b'"') => {
                    self.consume(1);
                    return Ok(());
                }
                Some(b'\\') => {
                    self.consume(1);
                    self.escape()?;
                }
                _ => return Err(self.error("control character (\\u0000-\\u001F) found while parsing a string")),
            }
        }
    }

    /// Consumes what follows a backslash in a string.
    fn escape(&mut self) -> Result<(), Failure> {
        match self.peek()? {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                self.consume(1);
                Ok(())
            }
            Some(b'u') => {
                self.consume(1);
                for _ in 0..4 {
                    match self.peek()? {
                        Some(b) if b.is_ascii_hexdigit() => self.consume(1),
                        next => return Err(self.unexpected(next, "invalid escape", "a string")),
                    }
                }
                Ok(())
            }
            next => Err(self.unexpected(next, "invalid escape", "a string")),
        }
    }

    /// Consumes a number: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn number(&mut self) -> Result<(), Failure> {
        if self.peek()? == Some(b'-') {
            self.consume(1);
        }
        match self.peek()? {
            Some(b'0') => self.consume(1),
            Some(b'1'..=b'9') => self.digits()?,
            next => return Err(self.unexpected(next, "invalid number", "a value")),
        }
        if self.peek()? == Some(b'.') {
            self.consume(1);
            self.some_digits()?;
        }
        if matches!(self.peek()?, Some(b'e' | b'E')) {
            self.consume(1);
            if matches!(self.peek()?, Some(b'+' | b'-')) {
                self.consume(1);
            }
            self.some_digits()?;
        }
        Ok(())
    }

    /// At least one digit.
    fn some_digits(&mut self) -> Result<(), Failure> {
        match self.peek()? {
            Some(b'0'..=b'9') => self.digits(),
            next => Err(self.unexpected(next, "invalid number", "a value")),
        }
    }

    fn digits(&mut self) -> Result<(), Failure> {
        loop {
            let chunk = self.fill()?;
            let n = chunk.iter().take_while(|b| b.is_ascii_digit()).count();
            let more = n == chunk.len() && n > 0;
            self.consume(n);
            if !more {
                return Ok(());
            }
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), Failure> {
        for &want in word {
            match self.peek()? {
                Some(b) if b == want => self.consume(1),
                next => return Err(self.unexpected(next, "expected ident", "a value")),
            }
        }
        Ok(())
    }

    /// The top-level object, at its `{`. Returns whether it had a `Records` array.
    fn top_object(&mut self, visit: &mut dyn FnMut(Item<'_>), counts: &mut Counts) -> Result<bool, Failure> {
        self.consume(1);
        self.push(true)?;
        let mut found = false;
        let mut seen = false;
        match self.ws()? {
            Some(b'}') => {
                self.consume(1);
                self.depth -= 1;
                return Ok(false);
            }
            Some(b'"') => {}
            next => return Err(self.unexpected(next, "expected a string key or `}`", "an object")),
        }
        loop {
            // At a key.
            self.start_capture(Capture::Key);
            let key = self.string();
            self.stop_capture();
            key?;
            let is_records = self.len <= KEY_CAPTURE && key_is_records(&self.key);
            match self.ws()? {
                Some(b':') => self.consume(1),
                next => return Err(self.unexpected(next, "expected `:`", "an object")),
            }
            let next = self.ws()?;
            if is_records {
                if seen {
                    return Err(self.error("a second record array (`Records`, `value`, `items` or `entries`)"));
                }
                seen = true;
                match next {
                    Some(b'[') => {
                        self.records_array(visit, counts)?;
                        found = true;
                    }
                    // Like an absent key.
                    Some(b'n') => self.literal(b"null")?,
                    Some(_) => {
                        return Err(self.error(
                            "invalid type: the record array (`Records`, `value`, `items`, `entries`) is not an array",
                        ));
                    }
                    None => return Err(self.error("EOF while parsing a value")),
                }
            } else {
                self.value()?;
            }
            match self.ws()? {
                Some(b',') => {
                    self.consume(1);
                    let next = self.ws()?;
                    if next != Some(b'"') {
                        return Err(self.unexpected(next, "expected a string key", "an object"));
                    }
                }
                Some(b'}') => {
                    self.consume(1);
                    self.depth -= 1;
                    return Ok(found);
                }
                next => return Err(self.unexpected(next, "expected `,` or `}`", "an object")),
            }
        }
    }

    /// The array whose elements are the records, at its `[`.
    fn records_array(&mut self, visit: &mut dyn FnMut(Item<'_>), counts: &mut Counts) -> Result<(), Failure> {
        self.consume(1);
        self.push(false)?;
        match self.ws()? {
            Some(b']') => {
                self.consume(1);
                self.depth -= 1;
                return Ok(());
            }
            Some(_) => {}
            None => return Err(self.error("EOF while parsing a list")),
        }
        let mut index = 0u64;
        loop {
            // At an element (whitespace skipped).
            self.start_capture(Capture::Record);
            let element = self.value();
            self.stop_capture();
            element?;
            // Yielded once the separator after it is seen: a document cut short yields only whole
            // elements (a number's end is only known from the byte after it).
            let last = match self.ws()? {
                Some(b',') => false,
                Some(b']') => true,
                next => return Err(self.unexpected(next, "expected `,` or `]`", "a list")),
            };
            if self.len > self.max_record {
                counts.oversized += 1;
                visit(Item::Oversized(Oversized { index, len: self.len, cap: self.max_record }));
            } else {
                counts.records += 1;
                visit(Item::Record(Record { index, raw: self.buf.as_slice() }));
            }
            index += 1;
            self.consume(1);
            if last {
                self.depth -= 1;
                return Ok(());
            }
            self.ws()?;
        }
    }
}

/// The keys of a document's record array: CloudTrail's `Records`, the `value` of Microsoft Graph and
/// Azure Resource Manager list responses, the `items` of Google API lists (Workspace Reports), and the
/// `entries` of Cloud Logging's `entries.list`. A document has one.
const RECORD_ARRAY_KEYS: [&[u8]; 4] = [b"Records", b"value", b"items", b"entries"];

/// Whether a key (as written, quotes included, known to be a valid JSON string) names the record
/// array ([`RECORD_ARRAY_KEYS`]).
fn key_is_records(raw: &[u8]) -> bool {
    let inner = raw.strip_prefix(b"\"").and_then(|r| r.strip_suffix(b"\"")).unwrap_or_default();
    if !inner.contains(&b'\\') {
        return RECORD_ARRAY_KEYS.contains(&inner);
    }
    // Decode the escapes (rare): only ASCII can spell `Records`.
    let mut out = [0u8; 7];
    let mut n = 0;
    let mut i = 0;
    while let Some(&b) = inner.get(i) {
        let (c, width) = match b {
            b'\\' => match inner.get(i + 1) {
                Some(b'u') => {
                    let hex = inner.get(i + 2..i + 6).and_then(|h| std::str::from_utf8(h).ok());
                    match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                        Some(c) => (c, 6),
                        None => return false,
                    }
                }
                Some(&e @ (b'"' | b'\\' | b'/')) => (e, 2),
                // `\b`, `\f`, `\n`, `\r`, `\t` stand for control characters, never a letter.
                Some(_) => (0, 2),
                None => return false,
            },
            b => (b, 1),
        };
        match out.get_mut(n) {
            Some(slot) => *slot = c,
            None => return false,
        }
        n += 1;
        i += width;
    }
    out.get(..n).is_some_and(|k| RECORD_ARRAY_KEYS.contains(&k))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads at most `step` bytes at a time.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(out.len()).min(self.data.len());
            let (now, rest) = self.data.split_at(n);
            out[..n].copy_from_slice(now);
            self.data = rest;
            Ok(n)
        }
    }

    #[test]
    fn records_keys() {
        assert!(key_is_records(b"\"Records\""));
        assert!(key_is_records(b"\"\\u0052ecord\\u0073\""));
        assert!(!key_is_records(b"\"records\""));
        assert!(!key_is_records(b"\"Records \""));
        assert!(!key_is_records(b"\"Rec\\u0000ords\""));
        assert!(!key_is_records(b"\"RecordsRecords\""));
        assert!(!key_is_records(b"\"Reco\\rds\""), "`\\r` is a carriage return, not an r");
        assert!(!key_is_records(b"\"\\u0152ecords\""));
        // Microsoft Graph / ARM lists, Google API lists, Cloud Logging's entries.list.
        for key in [&b"\"value\""[..], b"\"items\"", b"\"entries\"", b"\"\\u0076alue\""] {
            assert!(key_is_records(key), "{}", String::from_utf8_lossy(key));
        }
        assert!(!key_is_records(b"\"Value\"") && !key_is_records(b"\"item\""));
    }

    #[test]
    fn graph_and_google_list_documents_yield_their_records() {
        let graph = br#"{"@odata.context":"https://graph.microsoft.com/v1.0/$metadata#auditLogs/signIns","value":[{"id":"a"},{"id":"b"}],"@odata.nextLink":"x"}"#;
        let (items, res) = scan(graph, 1 << 20);
        assert_eq!(res.unwrap().records, 2);
        assert_eq!(items[1], (1, Ok(r#"{"id":"b"}"#.into())));
        let reports = br#"{"kind":"admin#reports#activities","items":[{"id":{"time":"t"}}],"nextPageToken":"p"}"#;
        assert_eq!(scan(reports, 1 << 20).1.unwrap().records, 1);
        let both = br#"{"value":[1],"items":[2]}"#;
        assert!(scan(both, 1 << 20).1.unwrap_err().contains("a second record array"));
    }

    /// Items yielded: a record's text, or an oversized record's length.
    type Items = Vec<(u64, Result<String, u64>)>;

    fn scan(doc: &[u8], max_record: u64) -> (Items, Result<Counts, String>) {
        let mut out = Vec::new();
        let mut buf = Vec::new();
        // Tiny reads split every token across refills.
        let r = Trickle { data: doc, step: 3 };
        let res = records_json(r, max_record, &mut buf, &mut [0; 256 << 10], &mut |item| match item {
            Item::Record(r) => out.push((r.index, Ok(String::from_utf8_lossy(r.raw).into_owned()))),
            Item::Oversized(o) => out.push((o.index, Err(o.len))),
        });
        (
            out,
            res.map_err(|e| match e {
                Failure::Kind(k) => k.to_string(),
                Failure::Io(e) => e.to_string(),
            }),
        )
    }

    #[test]
    fn splits_across_tiny_reads() {
        let doc = br#"{"a":[1,{"b":"]}\"\\"}],"Records" : [ {"x":"\u00e9\n"} , -1.5e+3,[],{}, "s"],"z":null}"#;
        let (items, res) = scan(doc, 1 << 20);
        assert_eq!(res.unwrap().records, 5);
        let want: Items = vec![
            (0, Ok(r#"{"x":"\u00e9\n"}"#.into())),
            (1, Ok("-1.5e+3".into())),
            (2, Ok("[]".into())),
            (3, Ok("{}".into())),
            (4, Ok("\"s\"".into())),
        ];
        assert_eq!(items, want);
    }

    #[test]
    fn oversized_elements_are_skipped_not_kept() {
        let (items, res) = scan(br#"[{"a":1},"0123456789",{"b":2}]"#, 8);
        assert_eq!(items, vec![(0, Ok(r#"{"a":1}"#.into())), (1, Err(12)), (2, Ok(r#"{"b":2}"#.into()))]);
        let c = res.unwrap();
        assert_eq!((c.records, c.oversized), (2, 1));
    }

    #[test]
    fn syntax_errors() {
        for bad in [
            &b"[1,]"[..],
            b"[01]",
            b"[1.]",
            b"[-]",
            b"[1e]",
            b"[tru]",
            b"[\"a\\x\"]",
            b"[\"a\\u12G4\"]",
            b"[\"a\nb\"]",
            b"{\"a\" 1}",
            b"{\"a\":1,}",
            b"{1:2}",
            b"[1 2]",
            b"[{]}",
            b"[[1}]",
            b"{\"Records\":[1]",
            b"{\"Records\":[1]}}",
            b"\xEF\xBB[]",
            b"{\"Records\":[],\"Records\":[]}",
        ] {
            let (_, res) = scan(bad, 1 << 20);
            let e = res.unwrap_err();
            assert!(e.starts_with("not valid JSON"), "{}: {e}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn depth_is_capped() {
        let nested = |levels: usize| {
            let mut doc = vec![b'['; levels];
            doc.push(b'1');
            doc.extend(vec![b']'; levels]);
            doc
        };
        let e = scan(&nested(MAX_DEPTH + 1), u64::MAX).1.unwrap_err();
        assert!(e.contains("nesting deeper"), "{e}");
        assert_eq!(scan(&nested(MAX_DEPTH), u64::MAX).1.unwrap().records, 1);
    }

    /// What the reader did before it streamed: serde_json over the whole document.
    mod oracle {
        use serde::Deserialize;
        use serde_json::value::RawValue;

        #[derive(Debug, PartialEq, Eq)]
        pub(super) enum Outcome {
            Records(Vec<String>),
            NotJson,
            NoRecordsArray,
            NotObjectOrArray,
        }

        #[derive(Deserialize)]
        struct Doc<'a> {
            #[serde(borrow, rename = "Records")]
            records: Option<Vec<&'a RawValue>>,
        }

        fn strings(v: Vec<&RawValue>) -> Outcome {
            Outcome::Records(v.into_iter().map(|r| r.get().to_string()).collect())
        }

        pub(super) fn read(doc: &[u8]) -> Outcome {
            let body = doc.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(doc);
            match body.iter().find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r')) {
                None => Outcome::Records(Vec::new()),
                Some(b'{') => match serde_json::from_slice::<Doc<'_>>(body) {
                    Err(_) => Outcome::NotJson,
                    Ok(Doc { records: None }) => Outcome::NoRecordsArray,
                    Ok(Doc { records: Some(v) }) => strings(v),
                },
                Some(b'[') => serde_json::from_slice::<Vec<&RawValue>>(body).map_or(Outcome::NotJson, strings),
                Some(_) => match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                    Err(_) => Outcome::NotJson,
                    Ok(_) => Outcome::NotObjectOrArray,
                },
            }
        }
    }

    use oracle::Outcome;
    use proptest::prelude::*;
    use serde_json::Value;

    /// The scanner's items (oversized as `Err(len)`) and its outcome in the oracle's terms.
    fn scanned(doc: &[u8], io_buf: usize, max_record: u64) -> (Items, Outcome) {
        let mut items = Vec::new();
        let mut buf = Vec::new();
        let r = Trickle { data: doc, step: io_buf };
        // A window as small as the reads: every token may straddle a refill.
        let res = records_json(r, max_record, &mut buf, &mut vec![0; io_buf.max(1)], &mut |item| match item {
            Item::Record(r) => items.push((r.index, Ok(String::from_utf8_lossy(r.raw).into_owned()))),
            Item::Oversized(o) => items.push((o.index, Err(o.len))),
        });
        assert!(buf.len() as u64 <= max_record);
        let outcome = match res {
            Ok(_) => Outcome::Records(
                items.iter().map(|(_, r)| r.clone().unwrap_or_else(|len| format!("<{len} bytes>"))).collect(),
            ),
            Err(Failure::Kind(FileErrorKind::NotJson { offset, .. })) => {
                assert!(offset <= doc.len() as u64);
                Outcome::NotJson
            }
            Err(Failure::Kind(FileErrorKind::NoRecordsArray)) => Outcome::NoRecordsArray,
            Err(Failure::Kind(FileErrorKind::NotObjectOrArray)) => Outcome::NotObjectOrArray,
            Err(Failure::Kind(k)) => panic!("unexpected {k}"),
            Err(Failure::Io(e)) => panic!("unexpected {e}"),
        };
        (items, outcome)
    }

    fn json_value(text: BoxedStrategy<String>) -> BoxedStrategy<Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
            text.clone().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 40, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((text.clone(), inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
        .boxed()
    }

    /// Text with what needs escaping: quotes, backslashes, brackets, control characters.
    fn text(ascii_only: bool) -> BoxedStrategy<String> {
        if ascii_only {
            "[ -~\"\\\\\\]\\[{}\\n\\t\\x01]{0,12}".boxed()
        } else {
            "[ -~\"\\\\\\]\\[{}\\n\\t\\x01éß中😀]{0,12}".boxed()
        }
    }

    /// A document: a `{"Records":[...]}` object (with other keys around it) or a bare array, written
    /// compactly or pretty-printed, with some whitespace.
    fn document(ascii_only: bool) -> impl Strategy<Value = Vec<u8>> {
        let values = json_value(text(ascii_only));
        (
            prop::collection::vec(values.clone(), 0..8),
            prop::option::of(values.clone()),
            prop::option::of(values),
            0..3u8,
            any::<bool>(),
            prop::sample::select(vec!["", " ", "\n", "\r\n\t "]),
        )
            .prop_map(|(records, before, after, layout, pretty, ws)| {
                let write = |v: &Value| {
                    if pretty { serde_json::to_string_pretty(v) } else { serde_json::to_string(v) }.unwrap_or_default()
                };
                let array = write(&Value::Array(records));
                let mut doc = String::new();
                match layout {
                    0 => doc.push_str(&array),
                    _ => {
                        doc.push('{');
                        if let Some(b) = before {
                            doc.push_str(&format!("{ws}\"Before\"{ws}:{ws}{}{ws},", write(&b)));
                        }
                        let key = if layout == 1 { "\"Records\"" } else { "\"Rec\\u006Frds\"" };
                        doc.push_str(&format!("{ws}{key}{ws}:{ws}{array}{ws}"));
                        if let Some(a) = after {
                            doc.push_str(&format!(",{ws}\"After\"{ws}:{ws}{}{ws}", write(&a)));
                        }
                        doc.push('}');
                    }
                }
                doc.push_str(ws);
                doc.into_bytes()
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        /// On valid documents the scanner yields exactly serde_json's elements, whatever the size of
        /// the reads; elements over the cap are reported with their exact length instead.
        #[test]
        fn valid_documents_match_serde(doc in document(false), io_buf in 1usize..40, cap in 0u64..64) {
            let want = oracle::read(&doc);
            let (_, got) = scanned(&doc, io_buf, u64::MAX);
            prop_assert_eq!(&got, &want);
            let Outcome::Records(want) = want else { return Err(TestCaseError::fail("not records")) };
            let (items, _) = scanned(&doc, io_buf, cap);
            prop_assert_eq!(items.len(), want.len());
            for (i, ((index, item), w)) in items.iter().zip(&want).enumerate() {
                prop_assert_eq!(*index, i as u64);
                match item {
                    Ok(raw) => prop_assert!(raw == w && w.len() as u64 <= cap),
                    Err(len) => prop_assert!(*len == w.len() as u64 && *len > cap),
                }
            }
        }

        /// Damaged documents: the scanner accepts exactly what serde_json accepts, with the same
        /// elements, and fails the same way otherwise (never panics).
        #[test]
        fn damaged_documents_match_serde(
            doc in document(true),
            at in any::<prop::sample::Index>(),
            op in 0..4u8,
            byte in prop::sample::select(b"{}[]\",:\\ 0-.e1tn\x01/u".to_vec()),
            io_buf in 1usize..40,
        ) {
            let mut doc = doc;
            let i = at.index(doc.len() + 1);
            match op {
                0 => doc.truncate(i),
                1 if i < doc.len() => { doc.remove(i); }
                2 if i < doc.len() => doc[i] = byte,
                _ => doc.insert(i, byte),
            }
            let (_, got) = scanned(&doc, io_buf, u64::MAX);
            prop_assert_eq!(got, oracle::read(&doc));
        }

        /// A document cut short yields whole elements only: a prefix of the full document's.
        #[test]
        fn truncated_documents_yield_a_prefix(doc in document(true), at in any::<prop::sample::Index>()) {
            let Outcome::Records(all) = oracle::read(&doc) else { return Err(TestCaseError::fail("not records")) };
            let cut = &doc[..at.index(doc.len() + 1)];
            let (items, _) = scanned(cut, 7, u64::MAX);
            prop_assert!(items.len() <= all.len());
            for ((_, item), want) in items.iter().zip(&all) {
                prop_assert_eq!(item.as_deref().ok(), Some(want.as_str()));
            }
        }
    }
}
