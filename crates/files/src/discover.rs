//! Finding input files.
//!
//! Rules:
//! - A path named by the caller that is a **file** is always taken (even if hidden, a digest or with an
//!   unknown extension: naming it is explicit). Its format comes from its extension; an unknown
//!   extension is read as [`Format::RecordsJson`].
//! - A **directory** is walked recursively. Taken: `*.json`, `*.jsonl`, `*.ndjson`, each optionally
//!   `.gz` (case-insensitive), which covers CloudTrail's `*.json.gz`. Skipped and counted in
//!   [`Ignored`]: CloudTrail digest files (a `CloudTrail-Digest` path component or file name), hidden
//!   entries (name starting with `.`; hidden directories are not descended into and count once),
//!   symbolic links (never followed below a named root, so a walk cannot escape the tree or loop),
//!   and files with other extensions.
//! - A named path that is itself a symlink is followed (the user named it).
//! - Faults: a named path that does not exist is [`FilesError::NotFound`]; one that cannot be
//!   inspected, or a named directory that cannot be listed, is [`FilesError::Io`]. Below a named
//!   directory nothing aborts the walk: a sub-directory that cannot be listed (permission denied,
//!   vanished or replaced mid-walk, path too long) or a file that cannot be inspected is listed in
//!   [`Discovery::unreadable`] with the error, and the walk goes on. The caller reports that list.
//! - File names need not be UTF-8: a name is matched on its bytes (the extension is ASCII), so a file
//!   whose name is not UTF-8 is taken like any other. Such a path prints lossily (`Path::display`,
//!   U+FFFD for the bytes that are not UTF-8), so two names that differ only in those bytes display
//!   alike: do not key state by the displayed path alone. S3 hints and delivery times are read from
//!   the components that are UTF-8.
//! - The result is sorted by path (its bytes) and de-duplicated (overlapping arguments yield each file once;
//!   [`Ignored`] counts are per walk, so overlapping directories count their skipped entries twice).

use std::{
    ffi::OsStr,
    fs,
    path::{Component, Path, PathBuf},
};

use crate::{error::FilesError, location::Location};

/// How a file's records are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Format {
    /// One JSON document `{"Records":[...]}` (CloudTrail's delivery format) or a bare array.
    RecordsJson,
    /// One record per line.
    JsonLines,
}

/// A calendar date parsed from a path (`.../YYYY/MM/DD/...`), range-checked but not calendar-checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct YearMonthDay {
    pub year: u16,
    pub month: u8,
    pub day: u8,
}

/// What the CloudTrail S3 layout says about a file, when its path follows it. Hints only: the
/// records themselves are authoritative.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct S3Hints {
    /// `o-...` for organization trails.
    pub org_id: Option<String>,
    /// 12-digit AWS account id.
    pub account: Option<String>,
    pub region: Option<String>,
    pub date: Option<YearMonthDay>,
}

/// One input file: a local file or an S3 object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceFile {
    pub location: Location,
    /// Size at discovery time (on disk, or as listed).
    pub size: u64,
    pub format: Format,
    /// The name ends in `.gz`. Informational: the reader detects gzip by its magic bytes.
    pub compressed: bool,
}

impl SourceFile {
    /// Account, region and date, parsed from an S3 delivery path. Computed on request rather than kept:
    /// an organization trail has millions of files, and the reader does not need them.
    pub fn hints(&self) -> S3Hints {
        match &self.location {
            Location::Local(p) => s3_hints(p),
            // A key's `/`-separated components read as a relative path's.
            Location::S3(o) => s3_hints(Path::new(&o.key)),
        }
    }

    /// The CloudTrail delivery time in the file's name (see [`delivery_time`]).
    pub fn delivery_time(&self) -> Option<String> {
        delivery_time_in_name(&self.location.file_name())
    }

    /// The file's local path; `None` for an S3 object.
    pub fn local_path(&self) -> Option<&Path> {
        self.location.local_path()
    }
}

/// Entries skipped while walking directories.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ignored {
    /// CloudTrail digest files.
    pub digest: u64,
    /// Hidden files, and hidden directories (each counted once, not descended into).
    pub hidden: u64,
    /// Symbolic links below a named root.
    pub symlinks: u64,
    /// Files with an extension that is not taken.
    pub other: u64,
}

impl Ignored {
    pub fn total(&self) -> u64 {
        self.digest + self.hidden + self.symlinks + self.other
    }
}

/// The result of [`discover`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovery {
    /// Sorted by path, without duplicates.
    pub files: Vec<SourceFile>,
    pub ignored: Ignored,
    /// Paths below a named directory that could not be listed or inspected, with the error; sorted by
    /// path, without duplicates. Not silently dropped: the caller reports them.
    pub unreadable: Vec<(PathBuf, String)>,
}

/// Finds the input files under `paths` (see the module rules above).
pub fn discover(paths: &[PathBuf]) -> Result<Discovery, FilesError> {
    let mut out = Discovery::default();
    for root in paths {
        let meta = match fs::metadata(root) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(FilesError::NotFound { path: root.clone() });
            }
            Err(source) => {
                return Err(FilesError::Io { path: root.clone(), source });
            }
        };
        if meta.is_file() {
            let format = format_of(root.file_name().unwrap_or_default()).unwrap_or(Format::RecordsJson);
            out.files.push(make(root.clone(), meta.len(), format));
            continue;
        }
        walk(root, &mut out)?;
    }
    // Local paths by their bytes: comparing paths component by component costs more than the walk's
    // stats on an organization trail (hundreds of thousands of files), for no better order.
    out.files.sort_unstable_by(|a, b| a.location.cmp_quick(&b.location));
    out.files.dedup_by(|a, b| a.location == b.location);
    out.unreadable.sort();
    out.unreadable.dedup_by(|a, b| a.0 == b.0);
    Ok(out)
}

/// Describes one file the caller names, without filtering (format by extension, default
/// [`Format::RecordsJson`]).
pub fn source_file(path: &Path) -> Result<SourceFile, FilesError> {
    let meta = fs::metadata(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            FilesError::NotFound { path: path.to_path_buf() }
        } else {
            FilesError::Io { path: path.to_path_buf(), source }
        }
    })?;
    let format = format_of(path.file_name().unwrap_or_default()).unwrap_or(Format::RecordsJson);
    Ok(make(path.to_path_buf(), meta.len(), format))
}

fn walk(root: &Path, out: &mut Discovery) -> Result<(), FilesError> {
    walk_entries(root, walkdir::WalkDir::new(root).follow_links(false).follow_root_links(true).into_iter(), out)
}

/// The walk of [`walk`], over any sequence of entries (tests inject failures).
fn walk_entries(root: &Path, mut it: impl WalkIter, out: &mut Discovery) -> Result<(), FilesError> {
    while let Some(next) = it.next() {
        let entry = match next {
            Ok(e) => e,
            Err(e) => {
                let path = e.path().unwrap_or(root).to_path_buf();
                let depth = e.depth();
                let source = e.into_io_error().unwrap_or_else(|| std::io::Error::other("filesystem loop"));
                if depth == 0 {
                    // The named directory itself cannot be listed.
                    return Err(FilesError::Io { path, source });
                }
                out.unreadable.push((path, source.to_string()));
                continue;
            }
        };
        if entry.depth() == 0 {
            continue;
        }
        let name = entry.file_name();
        let ft = entry.file_type();
        if is_hidden(name) {
            out.ignored.hidden += 1;
            if ft.is_dir() {
                it.skip_current_dir();
            }
            continue;
        }
        if ft.is_symlink() {
            out.ignored.symlinks += 1;
            continue;
        }
        if !ft.is_file() {
            continue;
        }
        if is_digest(entry.path()) {
            out.ignored.digest += 1;
            continue;
        }
        let Some(format) = format_of(name) else {
            out.ignored.other += 1;
            continue;
        };
        let size = match entry.metadata() {
            Ok(m) => m.len(),
            Err(e) => {
                let why = e.io_error().map_or_else(|| e.to_string(), ToString::to_string);
                out.unreadable.push((entry.into_path(), why));
                continue;
            }
        };
        out.files.push(make(entry.into_path(), size, format));
    }
    Ok(())
}

/// What [`walk_entries`] needs of a directory walk.
trait WalkIter: Iterator<Item = walkdir::Result<walkdir::DirEntry>> {
    fn skip_current_dir(&mut self);
}

impl WalkIter for walkdir::IntoIter {
    fn skip_current_dir(&mut self) {
        walkdir::IntoIter::skip_current_dir(self);
    }
}

fn make(path: PathBuf, size: u64, format: Format) -> SourceFile {
    let compressed = path.file_name().is_some_and(|n| ends_with_ignore_case(n.as_encoded_bytes(), b".gz"));
    SourceFile { location: Location::Local(path), size, format, compressed }
}

fn ends_with_ignore_case(name: &[u8], suffix: &[u8]) -> bool {
    name.len() >= suffix.len() && name.get(name.len() - suffix.len()..).is_some_and(|s| s.eq_ignore_ascii_case(suffix))
}

fn is_hidden(name: &OsStr) -> bool {
    name.as_encoded_bytes().first() == Some(&b'.')
}

fn is_digest(path: &Path) -> bool {
    path.components().any(|c| match c {
        Component::Normal(s) => memchr::memmem::find(s.as_encoded_bytes(), b"CloudTrail-Digest").is_some(),
        _ => false,
    })
}

/// The format implied by a file name (its bytes: it need not be UTF-8), or `None` if the name is not
/// taken.
pub(crate) fn format_of(name: &OsStr) -> Option<Format> {
    let name = name.as_encoded_bytes();
    let base = if ends_with_ignore_case(name, b".gz") { name.get(..name.len() - 3)? } else { name };
    if ends_with_ignore_case(base, b".json") {
        Some(Format::RecordsJson)
    } else if ends_with_ignore_case(base, b".jsonl") || ends_with_ignore_case(base, b".ndjson") {
        Some(Format::JsonLines)
    } else {
        None
    }
}

/// Parses `.../AWSLogs/[<org-id>/]<account>/CloudTrail/<region>/YYYY/MM/DD/<file>`.
fn s3_hints(path: &Path) -> S3Hints {
    // A component that is not UTF-8 keeps its place (as "", which matches nothing).
    let comps: Vec<&str> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_str().unwrap_or_default()),
            _ => None,
        })
        .collect();
    let mut hints = S3Hints::default();
    let Some(aws) = comps.iter().rposition(|c| *c == "AWSLogs") else {
        return hints;
    };
    let rest = comps.get(aws + 1..).unwrap_or_default();
    let (org, account, after) = match rest {
        [account, "CloudTrail", after @ ..] => (None, *account, after),
        [org, account, "CloudTrail", after @ ..] => (Some(*org), *account, after),
        _ => return hints,
    };
    if !is_account(account) {
        return hints;
    }
    hints.account = Some(account.to_string());
    hints.org_id = org.filter(|o| o.starts_with("o-")).map(str::to_string);
    // `after` is region, year, month, day, file name.
    if let [region, rest @ ..] = after {
        if rest.is_empty() {
            return hints; // the region would be the file name
        }
        hints.region = Some((*region).to_string());
        if let [y, m, d, _file, ..] = rest {
            hints.date = parse_date(y, m, d);
        }
    }
    hints
}

fn is_account(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

fn parse_date(y: &str, m: &str, d: &str) -> Option<YearMonthDay> {
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    if !(digits(y, 4) && digits(m, 2) && digits(d, 2)) {
        return None;
    }
    let year: u16 = y.parse().ok()?;
    let month: u8 = m.parse().ok()?;
    let day: u8 = d.parse().ok()?;
    ((1..=12).contains(&month) && (1..=31).contains(&day)).then_some(YearMonthDay { year, month, day })
}

/// The delivery time CloudTrail writes into its file names
/// (`<account>_CloudTrail_<region>_<YYYYMMDDTHHMMZ>_<id>.json.gz`), if the name has one.
pub fn delivery_time(path: &std::path::Path) -> Option<String> {
    delivery_time_in_name(&path.file_name()?.to_string_lossy())
}

fn delivery_time_in_name(name: &str) -> Option<String> {
    name.split('_')
        .find(|part| {
            let b = part.as_bytes();
            b.len() == 14 && b[8] == b'T' && b[13] == b'Z' && b[..8].iter().chain(&b[9..13]).all(u8::is_ascii_digit)
        })
        .map(str::to_string)
}

/// Sorts files oldest delivery first (across accounts and regions), then by path: events then come
/// roughly in event time, which is what readers that must see time in order need.
pub fn sort_by_delivery(files: &mut [SourceFile]) {
    files.sort_by_cached_key(|f| (f.delivery_time().unwrap_or_default(), f.location.clone()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_plain_and_org() {
        let h = s3_hints(Path::new(
            "/x/AWSLogs/123456789012/CloudTrail/eu-west-1/2024/03/05/123456789012_CloudTrail_eu-west-1_20240305T0000Z_abc.json.gz",
        ));
        assert_eq!(h.account.as_deref(), Some("123456789012"));
        assert_eq!(h.region.as_deref(), Some("eu-west-1"));
        assert_eq!(h.date, Some(YearMonthDay { year: 2024, month: 3, day: 5 }));
        assert_eq!(h.org_id, None);
        let h = s3_hints(Path::new("AWSLogs/o-abc123/123456789012/CloudTrail/us-east-1/2024/13/05/f.json.gz"));
        assert_eq!(h.org_id.as_deref(), Some("o-abc123"));
        assert_eq!(h.account.as_deref(), Some("123456789012"));
        assert_eq!(h.region.as_deref(), Some("us-east-1"));
        assert_eq!(h.date, None);
        assert_eq!(s3_hints(Path::new("AWSLogs/nope/CloudTrail/r/f.json")), S3Hints::default());
        assert_eq!(s3_hints(Path::new("a/b.json")), S3Hints::default());
    }

    #[test]
    fn formats() {
        assert_eq!(format_of(OsStr::new("a.JSON.GZ")), Some(Format::RecordsJson));
        assert_eq!(format_of(OsStr::new("a.ndjson")), Some(Format::JsonLines));
        assert_eq!(format_of(OsStr::new("a.jsonl.gz")), Some(Format::JsonLines));
        assert_eq!(format_of(OsStr::new("a.txt")), None);
        assert_eq!(format_of(OsStr::new("a.gz")), None);
    }

    #[test]
    fn files_order_by_their_delivery_time() {
        let t = |p: &str| delivery_time(Path::new(p));
        assert_eq!(
            t(
                "AWSLogs/1/CloudTrail/us-east-1/2024/01/02/111122223333_CloudTrail_us-east-1_20240102T0005Z_ab12.json.gz"
            ),
            Some("20240102T0005Z".to_string())
        );
        assert_eq!(t("events.jsonl"), None);
        assert_eq!(t("a_2024010T0005Z_b.json"), None);
    }

    /// A walk that runs `hook` on every entry it yields.
    struct Hooked<F> {
        inner: walkdir::IntoIter,
        hook: F,
    }

    impl<F: FnMut(&walkdir::DirEntry)> Iterator for Hooked<F> {
        type Item = walkdir::Result<walkdir::DirEntry>;
        fn next(&mut self) -> Option<Self::Item> {
            let next = self.inner.next();
            if let Some(Ok(e)) = &next {
                (self.hook)(e);
            }
            next
        }
    }

    impl<F: FnMut(&walkdir::DirEntry)> WalkIter for Hooked<F> {
        fn skip_current_dir(&mut self) {
            self.inner.skip_current_dir();
        }
    }

    #[test]
    fn a_directory_that_vanishes_mid_walk_is_listed_and_the_walk_goes_on() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        for d in ["a", "b"] {
            fs::create_dir_all(root.join(d)).unwrap();
            fs::write(root.join(d).join("x.json"), b"[]").unwrap();
        }
        // When the walk meets the first of the two directories, the other one goes away (the root's
        // listing already named it); the walk then fails to list it, and must go on.
        let mut gone = None;
        let hook = |e: &walkdir::DirEntry| {
            if gone.is_none() && e.depth() == 1 && e.file_type().is_dir() {
                let other = if e.file_name() == "a" { "b" } else { "a" };
                fs::remove_dir_all(root.join(other)).unwrap();
                gone = Some((other.to_string(), e.file_name().to_string_lossy().into_owned()));
            }
        };
        let it = Hooked { inner: walkdir::WalkDir::new(root).into_iter(), hook };
        let mut out = Discovery::default();
        walk_entries(root, it, &mut out).unwrap();
        let (other, kept) = gone.unwrap();
        let files: Vec<PathBuf> = out.files.iter().filter_map(|f| f.local_path().map(Path::to_path_buf)).collect();
        assert_eq!(files, vec![root.join(&kept).join("x.json")]);
        assert_eq!(out.unreadable.len(), 1, "{:?}", out.unreadable);
        assert_eq!(out.unreadable[0].0, root.join(&other));
        assert!(out.unreadable[0].1.contains("No such file"), "{:?}", out.unreadable);
    }

    #[test]
    fn a_named_directory_that_cannot_be_listed_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        let missing = t.path().join("gone");
        let it = walkdir::WalkDir::new(&missing).into_iter();
        let e = walk_entries(&missing, it, &mut Discovery::default()).unwrap_err();
        assert!(matches!(e, FilesError::Io { ref path, .. } if *path == missing), "{e}");
    }
}
