//! Where input lives: a local path or an S3 object, and what a user names on the command line (a
//! local path or an `s3://bucket[/prefix]`).
//!
//! This module is data and pure rules only: parsing `s3://` arguments, and turning an S3 listing into
//! the same [`Discovery`] a directory walk gives ([`discover_objects`]), with the same name rules. The
//! S3 client (listing, GetObject) lives in `grantwatch-s3`; this crate still does no network IO.

use std::{
    ffi::{OsStr, OsString},
    fmt,
    path::{Path, PathBuf},
};

use crate::discover::{Discovery, Format, SourceFile};

/// Where one input file's bytes are.
///
/// `Ord` keeps local files in path order (as discovery always sorted them) and puts S3 objects after
/// them, by bucket and key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Location {
    Local(PathBuf),
    S3(S3Object),
}

impl Location {
    /// A total order like `Ord`'s, cheaper for local paths: by their bytes rather than component by
    /// component (sorting an organization trail's paths is then a small part of discovery).
    pub fn cmp_quick(&self, other: &Location) -> std::cmp::Ordering {
        match (self, other) {
            (Location::Local(a), Location::Local(b)) => {
                a.as_os_str().as_encoded_bytes().cmp(b.as_os_str().as_encoded_bytes())
            }
            _ => self.cmp(other),
        }
    }

    /// The local path, for a local file.
    pub fn local_path(&self) -> Option<&Path> {
        match self {
            Location::Local(p) => Some(p),
            Location::S3(_) => None,
        }
    }

    /// The last component of the name (the file name, or what follows the key's last `/`), lossily
    /// for a local name that is not UTF-8.
    pub fn file_name(&self) -> String {
        match self {
            Location::Local(p) => p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            Location::S3(o) => o.key.rsplit('/').next().unwrap_or_default().to_string(),
        }
    }
}

/// `Display`: the path (lossily, as [`Path::display`]), or `s3://bucket/key`: the name used in errors,
/// reports, the quarantine file and the state's "file ingested" marks.
impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::S3(o) => write!(f, "s3://{}/{}", o.bucket, o.key),
        }
    }
}

/// One S3 object, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct S3Object {
    pub bucket: String,
    pub key: String,
    /// The ETag the listing gave (quotes included, as S3 sends it). It changes whenever the object is
    /// written again; the reader asks for exactly this version (`If-Match`).
    pub etag: Option<String>,
    /// LastModified, in ms since the epoch: the delivery time when the key carries no CloudTrail
    /// delivery stamp (as a local file's modification time is).
    pub last_modified_ms: Option<i64>,
}

/// An S3 bucket and key prefix named by the user (`s3://bucket[/prefix]`).
///
/// The prefix is an S3 key prefix, as ListObjectsV2 and IAM's `s3:prefix` take it: `AWSLogs/1111`
/// also matches `AWSLogs/111122223333/...`; end it with `/` to name a folder.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct S3Prefix {
    pub bucket: String,
    pub prefix: String,
}

impl fmt::Display for S3Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

impl S3Prefix {
    /// Parses `s3://bucket[/prefix]`. Bucket names are checked loosely (ASCII letters, digits, `.`,
    /// `-`, `_`, at most 255: legacy us-east-1 buckets allow more than today's rules), so that a typo
    /// fails here rather than as a signature error.
    pub fn parse(url: &str) -> Result<S3Prefix, String> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| format!("not an s3:// URL: {url:?}"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("no bucket in {url:?} (want s3://bucket[/prefix])"));
        }
        if bucket.len() > 255 || !bucket.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')) {
            return Err(format!("not an S3 bucket name: {bucket:?}"));
        }
        if prefix.chars().any(char::is_control) {
            return Err(format!("control characters in the S3 prefix of {url:?}"));
        }
        Ok(S3Prefix { bucket: bucket.to_string(), prefix: prefix.to_string() })
    }
}

/// What a user names as input: a local file or directory tree, or an S3 prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Input {
    Local(PathBuf),
    S3(S3Prefix),
}

impl Input {
    /// An argument starting with `s3://` is an S3 prefix; anything else is a local path (taken as
    /// given: it need not be UTF-8).
    pub fn parse(arg: &OsStr) -> Result<Input, String> {
        match arg.to_str() {
            Some(s) if s.starts_with("s3://") => S3Prefix::parse(s).map(Input::S3),
            _ => Ok(Input::Local(PathBuf::from(arg))),
        }
    }
}

impl From<PathBuf> for Input {
    fn from(p: PathBuf) -> Input {
        Input::Local(p)
    }
}

impl From<&Path> for Input {
    fn from(p: &Path) -> Input {
        Input::Local(p.to_path_buf())
    }
}

impl From<OsString> for Input {
    fn from(s: OsString) -> Input {
        Input::Local(PathBuf::from(s))
    }
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Input::Local(p) => write!(f, "{}", p.display()),
            Input::S3(s) => s.fmt(f),
        }
    }
}

/// One entry of an S3 listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    pub object: S3Object,
    pub size: u64,
}

/// Turns the objects listed under `root` into a [`Discovery`], with the rules of a directory walk
/// (see [`crate::discover`]):
/// - an object whose key is the prefix itself was named by the user, so it is always taken (format by
///   extension, default [`Format::RecordsJson`]), as a named file is;
/// - below the prefix: taken are `*.json`, `*.jsonl`, `*.ndjson`, each optionally `.gz`; skipped and
///   counted are CloudTrail digests (a `CloudTrail-Digest` component anywhere in the key), hidden
///   objects (a component after the prefix starting with `.`; each object counts, as S3 has no
///   directories to skip whole) and other names; "folder" markers (keys ending in `/`) are skipped
///   as directories are, uncounted.
///
/// The files are sorted by key, without duplicates.
pub fn discover_objects(root: &S3Prefix, objects: impl IntoIterator<Item = ListedObject>) -> Discovery {
    let mut out = Discovery::default();
    for ListedObject { object, size } in objects {
        if object.bucket != root.bucket || !object.key.starts_with(&root.prefix) {
            continue; // not what was asked for (a listing never returns these)
        }
        if object.key == root.prefix && !object.key.is_empty() {
            let format = crate::discover::format_of(OsStr::new(key_name(&object.key))).unwrap_or(Format::RecordsJson);
            out.files.push(object_file(object, size, format));
            continue;
        }
        if object.key.ends_with('/') {
            continue;
        }
        let below = object.key.get(root.prefix.len()..).unwrap_or_default();
        // A prefix ending inside a component (`AWSLogs/1111`) named that component's start: only the
        // components after it are below the prefix.
        let skip_first = !root.prefix.is_empty() && !root.prefix.ends_with('/');
        if below.split('/').skip(usize::from(skip_first)).any(|c| c.starts_with('.')) {
            out.ignored.hidden += 1;
            continue;
        }
        if object.key.split('/').any(|c| c.contains("CloudTrail-Digest")) {
            out.ignored.digest += 1;
            continue;
        }
        let Some(format) = crate::discover::format_of(OsStr::new(key_name(&object.key))) else {
            out.ignored.other += 1;
            continue;
        };
        out.files.push(object_file(object, size, format));
    }
    out.files.sort_by(|a, b| a.location.cmp(&b.location));
    out.files.dedup_by(|a, b| a.location == b.location);
    out
}

fn key_name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or_default()
}

fn object_file(object: S3Object, size: u64, format: Format) -> SourceFile {
    let compressed = key_name(&object.key).to_ascii_lowercase().ends_with(".gz");
    SourceFile { location: Location::S3(object), size, format, compressed }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(key: &str, size: u64) -> ListedObject {
        ListedObject {
            object: S3Object {
                bucket: "trail".into(),
                key: key.into(),
                etag: Some(format!("\"{size}\"")),
                last_modified_ms: Some(1),
            },
            size,
        }
    }

    #[test]
    fn s3_urls_parse() {
        let p = S3Prefix::parse("s3://my-trail.bucket/AWSLogs/o-1/").unwrap();
        assert_eq!((p.bucket.as_str(), p.prefix.as_str()), ("my-trail.bucket", "AWSLogs/o-1/"));
        assert_eq!(p.to_string(), "s3://my-trail.bucket/AWSLogs/o-1/");
        let p = S3Prefix::parse("s3://b").unwrap();
        assert_eq!((p.bucket.as_str(), p.prefix.as_str()), ("b", ""));
        assert!(S3Prefix::parse("s3:///AWSLogs").is_err());
        assert!(S3Prefix::parse("s3://bad bucket/x").is_err());
        assert!(S3Prefix::parse("s3://b/x\ny").is_err());
        assert!(S3Prefix::parse("https://b/x").is_err());
        assert_eq!(Input::parse(OsStr::new("trail/AWSLogs")).unwrap(), Input::Local(PathBuf::from("trail/AWSLogs")));
        assert!(matches!(Input::parse(OsStr::new("s3://b/p")).unwrap(), Input::S3(p) if p.prefix == "p"));
        assert!(Input::parse(OsStr::new("s3://")).is_err());
    }

    #[test]
    fn listings_follow_the_rules_of_a_walk() {
        let root = S3Prefix { bucket: "trail".into(), prefix: "AWSLogs/".into() };
        let d = discover_objects(
            &root,
            [
                obj(
                    "AWSLogs/111122223333/CloudTrail/us-east-1/2024/01/02/111122223333_CloudTrail_us-east-1_20240102T0005Z_b.json.gz",
                    9,
                ),
                obj(
                    "AWSLogs/111122223333/CloudTrail/us-east-1/2024/01/02/111122223333_CloudTrail_us-east-1_20240102T0000Z_a.json.gz",
                    8,
                ),
                obj(
                    "AWSLogs/111122223333/CloudTrail-Digest/us-east-1/2024/01/02/111122223333_CloudTrail-Digest_x.json.gz",
                    1,
                ),
                obj("AWSLogs/111122223333/CloudTrail/us-east-1/2024/01/02/", 0),
                obj("AWSLogs/.tmp/x.json", 1),
                obj("AWSLogs/1/notes.txt", 1),
                obj("AWSLogs/export.JSONL", 3),
                obj("elsewhere/x.json", 1),
            ],
        );
        let keys: Vec<String> = d.files.iter().map(|f| f.location.to_string()).collect();
        assert_eq!(
            keys,
            [
                "s3://trail/AWSLogs/111122223333/CloudTrail/us-east-1/2024/01/02/111122223333_CloudTrail_us-east-1_20240102T0000Z_a.json.gz",
                "s3://trail/AWSLogs/111122223333/CloudTrail/us-east-1/2024/01/02/111122223333_CloudTrail_us-east-1_20240102T0005Z_b.json.gz",
                "s3://trail/AWSLogs/export.JSONL",
            ]
        );
        assert_eq!((d.ignored.digest, d.ignored.hidden, d.ignored.other, d.ignored.symlinks), (1, 1, 1, 0));
        assert!(d.files[0].compressed && !d.files[2].compressed);
        assert_eq!(d.files[2].format, Format::JsonLines);
        assert_eq!(d.files[0].size, 8);
        assert_eq!(d.files[0].delivery_time().as_deref(), Some("20240102T0000Z"));
        let hints = d.files[0].hints();
        assert_eq!((hints.account.as_deref(), hints.region.as_deref()), (Some("111122223333"), Some("us-east-1")));
    }

    #[test]
    fn an_object_named_whole_is_taken_whatever_its_name() {
        let root = S3Prefix { bucket: "trail".into(), prefix: "x/CloudTrail-Digest/notes.txt".into() };
        let d = discover_objects(
            &root,
            [obj("x/CloudTrail-Digest/notes.txt", 4), obj("x/CloudTrail-Digest/notes.txt.1", 4)],
        );
        assert_eq!(d.files.len(), 1);
        assert_eq!(d.files[0].format, Format::RecordsJson);
        assert_eq!(d.ignored.digest, 1);
        // A hidden component in the named prefix itself does not hide what is below it.
        let root = S3Prefix { bucket: "trail".into(), prefix: ".trail/".into() };
        assert_eq!(discover_objects(&root, [obj(".trail/a.json", 1)]).files.len(), 1);
    }
}
