//! Small helpers: fast time formatting, identifiers, percent-encoding and a reusable gzip writer.

use flate2::{Compress, Compression, Crc, FlushCompress, Status};
use rand::Rng;

/// Howard Hinnant's civil-from-days: (year, month, day) of a day count since the epoch.
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn push_2(s: &mut String, v: u32) {
    s.push(char::from(b'0' + (v / 10 % 10) as u8));
    s.push(char::from(b'0' + (v % 10) as u8));
}

fn push_4(s: &mut String, v: i64) {
    let v = v.rem_euclid(10_000) as u32;
    push_2(s, v / 100);
    push_2(s, v % 100);
}

/// Appends `YYYY-MM-DDTHH:MM:SSZ` for seconds since the epoch.
pub(crate) fn push_time(s: &mut String, secs: i64) {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400) as u32;
    push_4(s, y);
    s.push('-');
    push_2(s, m);
    s.push('-');
    push_2(s, d);
    s.push('T');
    push_2(s, sod / 3600);
    s.push(':');
    push_2(s, sod / 60 % 60);
    s.push(':');
    push_2(s, sod % 60);
    s.push('Z');
}

/// `YYYY-MM-DDTHH:MM:SSZ`.
pub(crate) fn time_string(secs: i64) -> String {
    let mut s = String::with_capacity(20);
    push_time(&mut s, secs);
    s
}

/// `(YYYY, MM, DD, HHMM)` pieces for S3 key paths.
pub(crate) fn path_parts(secs: i64) -> (String, String, String, String) {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400) as u32;
    (format!("{y:04}"), format!("{m:02}"), format!("{d:02}"), format!("{:02}{:02}", sod / 3600, sod / 60 % 60))
}

pub(crate) fn push_u64(s: &mut String, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for &b in &buf[i..] {
        s.push(char::from(b));
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";
const UPPER32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const ALNUM: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Appends a random UUID v4 (lowercase, hyphenated).
pub(crate) fn push_uuid<R: Rng>(s: &mut String, rng: &mut R) {
    let mut b: [u8; 16] = rng.random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push(char::from(HEX[usize::from(byte >> 4)]));
        s.push(char::from(HEX[usize::from(byte & 15)]));
    }
}

pub(crate) fn uuid<R: Rng>(rng: &mut R) -> String {
    let mut s = String::with_capacity(36);
    push_uuid(&mut s, rng);
    s
}

fn push_from<R: Rng>(s: &mut String, rng: &mut R, alphabet: &[u8], n: usize) {
    let mut x: u64 = rng.random();
    let mut left = 0;
    for _ in 0..n {
        if left == 0 {
            x = rng.random();
            left = 8;
        }
        s.push(char::from(alphabet[(x & 0xff) as usize % alphabet.len()]));
        x >>= 8;
        left -= 1;
    }
}

/// `n` random uppercase-base32 characters (the alphabet of AWS unique ids and access key ids).
pub(crate) fn push_upper32<R: Rng>(s: &mut String, rng: &mut R, n: usize) {
    push_from(s, rng, UPPER32, n);
}

/// An AWS unique id: `prefix` (`AIDA`, `AROA`, `AGPA`, `ANPA`) and 17 characters.
pub(crate) fn aws_id<R: Rng>(rng: &mut R, prefix: &str) -> String {
    let mut s = String::with_capacity(21);
    s.push_str(prefix);
    push_upper32(&mut s, rng, 17);
    s
}

/// An access key id: `AKIA`/`ASIA` and 16 characters.
pub(crate) fn key_id<R: Rng>(rng: &mut R, prefix: &str) -> String {
    let mut s = String::with_capacity(20);
    s.push_str(prefix);
    push_upper32(&mut s, rng, 16);
    s
}

pub(crate) fn push_alnum<R: Rng>(s: &mut String, rng: &mut R, n: usize) {
    push_from(s, rng, ALNUM, n);
}

pub(crate) fn push_hex<R: Rng>(s: &mut String, rng: &mut R, n: usize) {
    push_from(s, rng, HEX, n);
}

pub(crate) fn hex<R: Rng>(rng: &mut R, n: usize) -> String {
    let mut s = String::with_capacity(n);
    push_hex(&mut s, rng, n);
    s
}

/// Percent-encodes everything but RFC 3986 unreserved characters, as IAM does for policy documents.
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b >> 4)]));
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b & 15)]));
        }
    }
    out
}

/// A gzip writer that reuses one deflate state for many small files (CloudTrail delivers thousands).
pub(crate) struct Gz {
    comp: Compress,
    pub(crate) out: Vec<u8>,
}

impl Gz {
    pub(crate) fn new() -> Gz {
        Gz { comp: Compress::new(Compression::fast(), false), out: Vec::with_capacity(1 << 16) }
    }

    /// Compresses `input` into `self.out` as one complete gzip member (mtime 0: deterministic).
    pub(crate) fn compress(&mut self, input: &[u8]) -> std::io::Result<&[u8]> {
        self.out.clear();
        self.out.extend_from_slice(&[0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x04, 0x03]);
        self.comp.reset();
        loop {
            self.out.reserve(input.len() / 4 + 4096);
            let consumed = usize::try_from(self.comp.total_in()).unwrap_or(usize::MAX).min(input.len());
            let st = self
                .comp
                .compress_vec(&input[consumed..], &mut self.out, FlushCompress::Finish)
                .map_err(std::io::Error::other)?;
            if st == Status::StreamEnd {
                break;
            }
        }
        let mut crc = Crc::new();
        crc.update(input);
        self.out.extend_from_slice(&crc.sum().to_le_bytes());
        self.out.extend_from_slice(&(input.len() as u32).to_le_bytes());
        Ok(&self.out)
    }
}

/// Glob match with `*` and `?`, ASCII case-insensitive (IAM action matching).
///
/// Deliberately not `grantwatch_core::glob`: this crate does not depend on core, and the ground truth it
/// writes (which actions a wildcard policy grants) is what the end-to-end tests check core's policy
/// evaluation against. An independent implementation keeps it a test oracle, not a copy of the code under test.
pub(crate) fn glob_match(pat: &str, s: &str) -> bool {
    let (p, t) = (pat.as_bytes(), s.as_bytes());
    let (mut pi, mut ti, mut star, mut mark) = (0usize, 0usize, usize::MAX, 0usize);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi].eq_ignore_ascii_case(&t[ti])) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = pi;
            mark = ti;
            pi += 1;
        } else if star != usize::MAX {
            pi = star + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use grantwatch_types::EventTime;

    #[test]
    fn time_matches_types() {
        for secs in [0i64, 951_782_400, 1_700_000_000, 1_709_251_199, 4_102_444_800] {
            assert_eq!(time_string(secs), EventTime(secs * 1000).to_rfc3339());
        }
    }

    #[test]
    fn globbing() {
        assert!(glob_match("s3:Get*", "s3:GetObject"));
        assert!(glob_match("*", "iam:PassRole"));
        assert!(glob_match("s3:get*", "s3:GetObject"));
        assert!(!glob_match("s3:Get*", "s3:PutObject"));
        assert!(glob_match("dynamodb:*Item", "dynamodb:GetItem"));
    }

    #[test]
    fn gzip_roundtrip() {
        use std::io::Read;
        let mut gz = Gz::new();
        for input in [&b""[..], b"hello world", &vec![b'x'; 300_000]] {
            let out = gz.compress(input).unwrap().to_vec();
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&out[..]).read_to_end(&mut back).unwrap();
            assert_eq!(back, input);
        }
    }
}
