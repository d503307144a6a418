//! Discovery, reading, quarantine and fingerprints on real temp files.

// Helpers outside `#[test]` fns are not covered by clippy.toml's allow-unwrap-in-tests.
#![allow(clippy::unwrap_used)]

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    sync::Arc,
};

use flate2::{Compression, write::GzEncoder};
use grantwatch_files::*;

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn put(root: &Path, rel: &str, data: &[u8]) -> PathBuf {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, data).unwrap();
    p
}

/// Reads a file and returns (records as strings with index, result).
fn read(path: &Path, format: Format) -> (Vec<(u64, String)>, Result<FileSummary, FileError>) {
    read_opts(path, format, &ReadOptions::default())
}

/// As [`read`], for files without oversized records.
fn read_opts(path: &Path, format: Format, opts: &ReadOptions) -> (Vec<(u64, String)>, Result<FileSummary, FileError>) {
    let (items, res) = read_items(path, format, opts);
    let records = items.into_iter().map(|(i, r)| (i, r.unwrap_or_else(|o| panic!("unexpected: {o}")))).collect();
    (records, res)
}

type Items = Vec<(u64, Result<String, Oversized>)>;

/// Reads a file and returns every item (records as strings, oversized records as `Err`), checking
/// that the record buffer never held more than the record cap.
fn read_items(path: &Path, format: Format, opts: &ReadOptions) -> (Items, Result<FileSummary, FileError>) {
    let mut sf = source_file(path).unwrap();
    sf.format = format;
    let mut out = Vec::new();
    let mut buf = grantwatch_files::ReadBuffers::default();
    let res = read_records_with(&sf, opts, &mut buf, &mut |item| match item {
        Item::Record(r) => out.push((r.index, Ok(String::from_utf8_lossy(r.raw).into_owned()))),
        Item::Oversized(o) => out.push((o.index, Err(o))),
    });
    assert!(
        buf.record_capacity() as u64 <= 2 * opts.max_record.saturating_add(1),
        "{} bytes held",
        buf.record_capacity()
    );
    if let Ok(s) = &res {
        let oversized = out.iter().filter(|(_, r)| r.is_err()).count() as u64;
        assert_eq!((s.records, s.oversized), (out.len() as u64 - oversized, oversized));
    }
    (out, res)
}

/// The elements of a `{"Records":[...]}` document as serde_json sees them (the reader's old way).
fn serde_records(doc: &[u8]) -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct Doc<'a> {
        #[serde(borrow, rename = "Records")]
        records: Vec<&'a serde_json::value::RawValue>,
    }
    serde_json::from_slice::<Doc<'_>>(doc).unwrap().records.iter().map(|r| r.get().to_string()).collect()
}

/// A CloudTrail-like record, with escapes, nesting and non-ASCII text.
fn event(i: usize) -> serde_json::Value {
    serde_json::json!({
        "eventVersion": "1.08",
        "userIdentity": {"type": "AssumedRole", "arn": format!("arn:aws:sts::123456789012:assumed-role/r/s{i}")},
        "eventTime": "2024-01-02T03:04:05Z",
        "eventSource": "s3.amazonaws.com",
        "eventName": "GetObject",
        "requestParameters": {"bucketName": "b", "key": format!("dir/\"quoted\" ]}} \\ é {i}"), "list": [1, 2.5, -3e7, null, true]},
        "responseElements": null,
        "eventID": format!("id-{i}"),
    })
}

const DOC: &str =
    r#"{"Records":[{"eventName":"GetObject","n":1}, {"eventName":"PutObject","nested":{"a":[1,2]}}],"Other":{"x":1}}"#;

#[test]
fn discovers_s3_layout_org_trails_and_ignores_digests_and_hidden() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    let a = put(
        r,
        "AWSLogs/123456789012/CloudTrail/us-east-1/2024/01/02/123456789012_CloudTrail_us-east-1_20240102T0005Z_a.json.gz",
        b"x",
    );
    let o = put(r, "AWSLogs/o-abcdef1234/210987654321/CloudTrail/eu-west-1/2024/12/31/f.json.gz", b"x");
    put(
        r,
        "AWSLogs/123456789012/CloudTrail-Digest/us-east-1/2024/01/02/123456789012_CloudTrail-Digest_us-east-1_x.json.gz",
        b"x",
    );
    put(r, "AWSLogs/o-abcdef1234/210987654321/CloudTrail-Digest/eu-west-1/2024/12/31/d.json.gz", b"x");
    put(r, ".hidden.json", b"x");
    put(r, ".git/objects/x.json", b"x");
    put(r, "notes.txt", b"x");
    let l = put(r, "export/events.JSONL", b"x");
    let n = put(r, "export/more.ndjson.gz", b"x");
    let p = put(r, "export/plain.json", b"x");
    #[cfg(unix)]
    std::os::unix::fs::symlink(&p, r.join("export/link.json")).unwrap();

    // Overlapping arguments yield each file once; explicitly named files are taken whatever their name.
    let named = put(r, "elsewhere/.explicit", b"x");
    let d = discover(&[r.to_path_buf(), r.join("export"), named.clone()]).unwrap();
    let paths: Vec<&Path> = d.files.iter().map(|f| f.local_path().unwrap()).collect();
    let mut want = vec![a.as_path(), o.as_path(), l.as_path(), n.as_path(), p.as_path(), named.as_path()];
    want.sort();
    assert_eq!(paths, want);
    assert_eq!(d.ignored.digest, 2);
    assert_eq!(d.ignored.hidden, 3, "two hidden files + a hidden dir (not descended)");
    assert_eq!(d.ignored.other, 1);
    #[cfg(unix)]
    assert_eq!(d.ignored.symlinks, 2, "once per walk that reaches it");

    let fa = d.files.iter().find(|f| f.location == Location::Local(a.clone())).unwrap();
    assert_eq!(fa.format, Format::RecordsJson);
    assert!(fa.compressed);
    assert_eq!(fa.size, 1);
    assert_eq!(fa.hints().account.as_deref(), Some("123456789012"));
    assert_eq!(fa.hints().region.as_deref(), Some("us-east-1"));
    assert_eq!(fa.hints().date, Some(YearMonthDay { year: 2024, month: 1, day: 2 }));
    assert_eq!(fa.hints().org_id, None);
    let fo = d.files.iter().find(|f| f.location == Location::Local(o.clone())).unwrap();
    assert_eq!(fo.hints().org_id.as_deref(), Some("o-abcdef1234"));
    assert_eq!(fo.hints().account.as_deref(), Some("210987654321"));
    assert_eq!(fo.hints().region.as_deref(), Some("eu-west-1"));
    assert_eq!(fo.hints().date, Some(YearMonthDay { year: 2024, month: 12, day: 31 }));
    let fl = d.files.iter().find(|f| f.location == Location::Local(l.clone())).unwrap();
    assert_eq!((fl.format, fl.compressed), (Format::JsonLines, false));
    assert_eq!(fl.hints(), S3Hints::default());
    let fn_ = d.files.iter().find(|f| f.location == Location::Local(n.clone())).unwrap();
    assert_eq!((fn_.format, fn_.compressed), (Format::JsonLines, true));

    assert!(d.unreadable.is_empty());

    // Deterministic.
    assert_eq!(discover(&[r.to_path_buf(), r.join("export"), named]).unwrap(), d);
}

#[test]
fn an_unlistable_subdirectory_is_listed_and_the_walk_goes_on() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    let a = put(r, "a/ok.json", DOC.as_bytes());
    let z = put(r, "z/ok.json", DOC.as_bytes());
    // A chain of directories longer than PATH_MAX: its parent lists it, but it cannot be opened by its
    // path, even by root (who can read a chmod 000 directory). Built bottom-up by renames, each of
    // short paths.
    let name = "d".repeat(250);
    put(r, "chain/f.json", b"[]");
    for _ in 0..20 {
        fs::create_dir(r.join("up")).unwrap();
        fs::rename(r.join("chain"), r.join("up").join(&name)).unwrap();
        fs::rename(r.join("up"), r.join("chain")).unwrap();
    }
    fs::rename(r.join("chain"), r.join("deep")).unwrap();
    let d = discover(&[r.to_path_buf()]).unwrap();
    let files: Vec<&Path> = d.files.iter().map(|f| f.local_path().unwrap()).collect();
    assert_eq!(files, vec![a.as_path(), z.as_path()]);
    assert_eq!(d.unreadable.len(), 1, "{:?}", d.unreadable);
    let (path, why) = &d.unreadable[0];
    assert!(path.starts_with(r.join("deep")) && path.as_os_str().len() > 4096);
    assert!(why.contains("too long"), "{why}");
}

#[cfg(unix)]
#[test]
fn names_that_are_not_utf8_are_taken_by_their_extension() {
    use std::{ffi::OsStr, os::unix::ffi::OsStrExt};
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join(OsStr::from_bytes(b"AWSLogs-\xff"));
    fs::create_dir_all(&dir).unwrap();
    let taken = dir.join(OsStr::from_bytes(b"caf\xe9.JSON.gz"));
    fs::write(&taken, gz(DOC.as_bytes())).unwrap();
    let lines = dir.join(OsStr::from_bytes(b"\xfe.jsonl"));
    fs::write(&lines, b"{\"a\":1}\n").unwrap();
    fs::write(dir.join(OsStr::from_bytes(b"notes-\xff.txt")), b"x").unwrap();
    fs::write(dir.join(OsStr::from_bytes(b".\xff.json")), b"x").unwrap();
    fs::write(dir.join(OsStr::from_bytes(b"\xff-CloudTrail-Digest.json.gz")), b"x").unwrap();
    let d = discover(&[t.path().to_path_buf()]).unwrap();
    let files: Vec<(&Path, Format, bool)> =
        d.files.iter().map(|f| (f.local_path().unwrap(), f.format, f.compressed)).collect();
    assert_eq!(files, vec![(taken.as_path(), Format::RecordsJson, true), (lines.as_path(), Format::JsonLines, false)]);
    assert_eq!((d.ignored.other, d.ignored.hidden, d.ignored.digest), (1, 1, 1));
    assert!(d.unreadable.is_empty());
    assert_eq!(read(&taken, Format::RecordsJson).1.unwrap().records, 2);
    // Displayed lossily.
    assert!(taken.display().to_string().ends_with("AWSLogs-\u{fffd}/caf\u{fffd}.JSON.gz"));
}

#[test]
fn missing_path_is_an_error_naming_it() {
    let t = tempfile::tempdir().unwrap();
    let missing = t.path().join("nope/AWSLogs");
    let e = discover(&[t.path().to_path_buf(), missing.clone()]).unwrap_err();
    assert!(matches!(&e, FilesError::NotFound { path } if *path == missing));
    assert!(e.to_string().contains("nope/AWSLogs"), "{e}");
}

#[test]
fn reads_plain_and_gzip_records_json() {
    let t = tempfile::tempdir().unwrap();
    let plain = put(t.path(), "a.json", DOC.as_bytes());
    let zipped = put(t.path(), "a.json.gz", &gz(DOC.as_bytes()));
    let want = vec![
        (0, r#"{"eventName":"GetObject","n":1}"#.to_string()),
        (1, r#"{"eventName":"PutObject","nested":{"a":[1,2]}}"#.to_string()),
    ];
    let (recs, s) = read(&plain, Format::RecordsJson);
    let s = s.unwrap();
    assert_eq!(recs, want);
    assert_eq!((s.records, s.bytes_read, s.bytes_decompressed), (2, DOC.len() as u64, DOC.len() as u64));
    let (recs, s) = read(&zipped, Format::RecordsJson);
    let s = s.unwrap();
    assert_eq!(recs, want);
    assert_eq!(s.bytes_read, fs::metadata(&zipped).unwrap().len());
    assert_eq!(s.bytes_decompressed, DOC.len() as u64);
}

#[test]
fn gzip_is_detected_by_magic_not_name_and_members_concatenate() {
    let t = tempfile::tempdir().unwrap();
    // Gzip content named .json; plain content named .json.gz.
    let a = put(t.path(), "a.json", &gz(DOC.as_bytes()));
    let b = put(t.path(), "b.json.gz", DOC.as_bytes());
    assert_eq!(read(&a, Format::RecordsJson).1.unwrap().records, 2);
    assert_eq!(read(&b, Format::RecordsJson).1.unwrap().records, 2);
    // Two gzip members form one stream.
    let mut two = gz(b"{\"a\":1}\n");
    two.extend(gz(b"{\"b\":2}\n"));
    let c = put(t.path(), "c.jsonl.gz", &two);
    let (recs, s) = read(&c, Format::JsonLines);
    assert_eq!(s.unwrap().records, 2);
    assert_eq!(recs, vec![(0, "{\"a\":1}".into()), (1, "{\"b\":2}".into())]);
}

#[test]
fn reads_bare_array_with_bom_and_whitespace() {
    let t = tempfile::tempdir().unwrap();
    let p = put(t.path(), "a.json", b"\xEF\xBB\xBF \n[ {\"a\": 1},\n  {\"b\": [2]} ]\n");
    let (recs, s) = read(&p, Format::RecordsJson);
    assert_eq!(s.unwrap().records, 2);
    assert_eq!(recs, vec![(0, "{\"a\": 1}".into()), (1, "{\"b\": [2]}".into())]);
}

#[test]
fn reads_json_lines_with_blank_lines_crlf_and_a_bad_line() {
    let t = tempfile::tempdir().unwrap();
    let data = b"{\"a\":1}\r\n\n   \n{not json\n  {\"b\":2}  \n{\"c\":3}";
    let p = put(t.path(), "a.jsonl", data);
    let (recs, s) = read(&p, Format::JsonLines);
    let s = s.unwrap();
    assert_eq!(
        recs,
        vec![(0, "{\"a\":1}".into()), (3, "{not json".into()), (4, "{\"b\":2}".into()), (5, "{\"c\":3}".into())]
    );
    assert_eq!((s.records, s.bytes_decompressed), (4, data.len() as u64));
    let pz = put(t.path(), "a.jsonl.gz", &gz(data));
    let (recs2, s2) = read(&pz, Format::JsonLines);
    assert_eq!(recs2, recs);
    assert_eq!(s2.unwrap().records, 4);
}

#[test]
fn empty_files_yield_nothing() {
    let t = tempfile::tempdir().unwrap();
    for (name, format) in [("a.json", Format::RecordsJson), ("a.jsonl", Format::JsonLines)] {
        let p = put(t.path(), name, b"");
        let (recs, s) = read(&p, format);
        let s = s.unwrap();
        assert!(recs.is_empty());
        assert_eq!((s.records, s.bytes_read), (0, 0));
        let p = put(t.path(), &format!("{name}.gz"), &gz(b"  \n"));
        assert_eq!(read(&p, format).1.unwrap().records, 0);
    }
}

#[test]
fn corrupt_gzip_is_an_error_naming_the_file() {
    let t = tempfile::tempdir().unwrap();
    let mut data = gz(DOC.as_bytes());
    let mid = data.len() / 2;
    for b in &mut data[12..mid] {
        *b ^= 0x5a;
    }
    let p = put(t.path(), "bad.json.gz", &data);
    let e = read(&p, Format::RecordsJson).1.unwrap_err();
    assert_eq!(*e.location, Location::Local(p.clone()));
    assert!(matches!(e.kind, FileErrorKind::CorruptGzip(_)), "{e}");
    assert!(e.to_string().contains("bad.json.gz") && e.to_string().contains("corrupt gzip"), "{e}");
}

#[test]
fn truncated_gzip_is_an_error() {
    let t = tempfile::tempdir().unwrap();
    let data = gz(DOC.as_bytes());
    for cut in [3, data.len() / 2, data.len() - 4] {
        let p = put(t.path(), "trunc.json.gz", &data[..cut]);
        let e = read(&p, Format::RecordsJson).1.unwrap_err();
        assert!(matches!(e.kind, FileErrorKind::TruncatedGzip | FileErrorKind::CorruptGzip(_)), "{cut}: {e}");
        assert!(e.to_string().contains("trunc.json.gz"), "{e}");
    }
    let p = put(t.path(), "trunc.json.gz", &data[..data.len() / 2]);
    assert!(matches!(read(&p, Format::RecordsJson).1.unwrap_err().kind, FileErrorKind::TruncatedGzip));
    let p = put(t.path(), "trunc.jsonl.gz", &data[..data.len() / 2]);
    assert!(matches!(read(&p, Format::JsonLines).1.unwrap_err().kind, FileErrorKind::TruncatedGzip));
}

#[test]
fn not_json_is_an_error_with_position() {
    let t = tempfile::tempdir().unwrap();
    let p = put(t.path(), "x.json", b"{\"Records\":[\n{\"a\":1},\n{\"a\" 2}]}");
    let e = read(&p, Format::RecordsJson).1.unwrap_err();
    match &e.kind {
        FileErrorKind::NotJson { line, column, offset, .. } => {
            assert_eq!(*line, 3);
            assert_eq!(*offset as usize, "{\"Records\":[\n{\"a\":1},\n".len() + column - 1);
        }
        k => panic!("{k}"),
    }
    assert!(e.to_string().contains("x.json") && e.to_string().contains("line 3"), "{e}");
    let p = put(t.path(), "y.json", b"hello, world");
    assert!(matches!(read(&p, Format::RecordsJson).1.unwrap_err().kind, FileErrorKind::NotJson { .. }));
    let p = put(t.path(), "z.json", b"\"just a string\"");
    assert!(matches!(read(&p, Format::RecordsJson).1.unwrap_err().kind, FileErrorKind::NotObjectOrArray));
    // Trailing garbage after the document.
    let p = put(t.path(), "w.json", format!("{DOC} trailing").as_bytes());
    assert!(matches!(read(&p, Format::RecordsJson).1.unwrap_err().kind, FileErrorKind::NotJson { .. }));
}

#[test]
fn missing_or_wrong_records_is_an_error() {
    let t = tempfile::tempdir().unwrap();
    for (name, body) in [("a.json", "{\"records\":[]}"), ("b.json", "{}"), ("c.json", "{\"Records\":null}")] {
        let p = put(t.path(), name, body.as_bytes());
        let e = read(&p, Format::RecordsJson).1.unwrap_err();
        assert!(matches!(e.kind, FileErrorKind::NoRecordsArray), "{name}: {e}");
        assert!(e.to_string().contains(name) && e.to_string().contains("Records"), "{e}");
    }
    let p = put(t.path(), "d.json", b"{\"Records\":{\"a\":1}}");
    assert!(matches!(read(&p, Format::RecordsJson).1.unwrap_err().kind, FileErrorKind::NotJson { .. }));
    let p = put(t.path(), "e.json", b"{\"Records\":[]}");
    assert_eq!(read(&p, Format::RecordsJson).1.unwrap().records, 0);
}

#[test]
fn the_decompressed_cap_applies_to_both_formats() {
    let t = tempfile::tempdir().unwrap();
    let opts = ReadOptions { max_decompressed: 64, max_record: 16 };
    let big = vec![b' '; 10_000];
    let p = put(t.path(), "bomb.json.gz", &gz(&big));
    let e = read_opts(&p, Format::RecordsJson, &opts).1.unwrap_err();
    assert!(matches!(e.kind, FileErrorKind::TooLarge { cap: 64 }), "{e}");
    assert!(e.to_string().contains("bomb.json.gz") && e.to_string().contains("cap of 64 bytes"), "{e}");
    let many = "{\"a\":1}\n".repeat(100);
    let p = put(t.path(), "many.jsonl", many.as_bytes());
    let (recs, res) = read_opts(&p, Format::JsonLines, &opts);
    assert!(matches!(res.unwrap_err().kind, FileErrorKind::TooLarge { cap: 64 }));
    assert_eq!(recs.len(), 8, "the lines within the cap were yielded");
    // Exactly at the cap is fine.
    let p = put(t.path(), "exact.jsonl", &many.as_bytes()[..64]);
    assert_eq!(read_opts(&p, Format::JsonLines, &opts).1.unwrap().records, 8);
}

#[test]
fn a_json_lines_line_over_the_record_cap_is_reported_and_the_rest_read() {
    let t = tempfile::tempdir().unwrap();
    let opts = ReadOptions { max_decompressed: u64::MAX, max_record: 16 };
    let long = format!("{{\"a\":\"{}\"}}", "x".repeat(1000));
    let blank = " ".repeat(1000);
    let data = format!("{{\"a\":1}}\n{long}\r\n{blank}\n{{\"a\":\"01234567\"}}\n{long}");
    for (name, bytes) in [("a.jsonl", data.as_bytes().to_vec()), ("a.jsonl.gz", gz(data.as_bytes()))] {
        let p = put(t.path(), name, &bytes);
        let (items, res) = read_items(&p, Format::JsonLines, &opts);
        let s = res.unwrap();
        let over = |index, len| Err(Oversized { index, len, cap: 16 });
        assert_eq!(
            items,
            vec![
                (0, Ok("{\"a\":1}".into())),
                (1, over(1, long.len() as u64 + 1)),    // the \r counts
                (3, Ok("{\"a\":\"01234567\"}".into())), // exactly at the cap; the blank line 2 is skipped
                (4, over(4, long.len() as u64)),
            ]
        );
        assert_eq!((s.records, s.oversized), (2, 2));
        assert_eq!(over(4, 1006).unwrap_err().to_string(), "record 4 (1006 bytes) exceeds the record cap of 16 bytes");
    }
}

#[test]
fn a_records_element_over_the_record_cap_is_reported_and_the_rest_read() {
    let t = tempfile::tempdir().unwrap();
    let huge = serde_json::json!({"eventName": "Huge", "responseElements": {"blob": "y".repeat(5 << 20), "n": [1, 2]}});
    let doc = serde_json::to_vec(&serde_json::json!({"Records": [event(0), huge, event(2)]})).unwrap();
    let want = serde_records(&doc);
    let opts = ReadOptions { max_record: 1 << 20, ..ReadOptions::default() };
    for (name, bytes) in [("a.json", doc.clone()), ("a.json.gz", gz(&doc))] {
        let p = put(t.path(), name, &bytes);
        // read_items checks the buffer never held more than 1 MiB of the 5 MiB element.
        let (items, res) = read_items(&p, Format::RecordsJson, &opts);
        assert_eq!(
            items,
            vec![
                (0, Ok(want[0].clone())),
                (1, Err(Oversized { index: 1, len: want[1].len() as u64, cap: 1 << 20 })),
                (2, Ok(want[2].clone())),
            ]
        );
        let s = res.unwrap();
        assert_eq!((s.records, s.oversized), (2, 1));
    }
}

/// Gzip members that inflate to `n` × 64 MiB of `byte`, after `head`.
fn bomb(head: &[u8], byte: u8, n: usize) -> Vec<u8> {
    let mut out = gz(head);
    let mut e = GzEncoder::new(Vec::new(), Compression::best());
    e.write_all(&vec![byte; 64 << 20]).unwrap();
    let member = e.finish().unwrap();
    for _ in 0..n {
        out.extend_from_slice(&member);
    }
    out
}

#[test]
fn a_gzip_bomb_stops_at_the_cap_quickly() {
    let t = tempfile::tempdir().unwrap();
    let opts = ReadOptions { max_decompressed: 1 << 20, max_record: 1 << 10 };
    // 10 GiB of JSON whitespace inside the Records array; 10 GiB of zeros in one JSON Lines "line".
    for (name, format, head, byte) in [
        ("bomb.json.gz", Format::RecordsJson, &b"{\"Records\":[{\"a\":1},"[..], b' '),
        ("bomb.jsonl.gz", Format::JsonLines, &b"{\"a\":1}\n"[..], 0u8),
    ] {
        let p = put(t.path(), name, &bomb(head, byte, 160));
        assert!(fs::metadata(&p).unwrap().len() < 40 << 20);
        let started = std::time::Instant::now();
        let (recs, res) = read_opts(&p, format, &opts);
        let e = res.unwrap_err();
        assert!(matches!(e.kind, FileErrorKind::TooLarge { cap } if cap == 1 << 20), "{name}: {e}");
        assert_eq!(recs, vec![(0, "{\"a\":1}".to_string())], "{name}: the record before the bomb stays yielded");
        // Inflating all of it would take far longer: reading stopped at the cap.
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{name}: {:?}", started.elapsed());
    }
}

#[test]
fn records_stream_exactly_as_serde_splits_them() {
    let t = tempfile::tempdir().unwrap();
    let events: Vec<serde_json::Value> = (0..3000).map(event).collect();
    for (name, doc) in [
        ("compact.json", serde_json::to_vec(&serde_json::json!({"Records": events}))),
        ("pretty.json", serde_json::to_vec_pretty(&serde_json::json!({"Records": events}))),
    ] {
        let doc = doc.unwrap();
        let want: Vec<(u64, String)> =
            serde_records(&doc).into_iter().enumerate().map(|(i, r)| (i as u64, r)).collect();
        assert_eq!(want.len(), 3000);
        for (file, bytes) in [(name.to_string(), doc.clone()), (format!("{name}.gz"), gz(&doc))] {
            let p = put(t.path(), &file, &bytes);
            let (recs, s) = read(&p, Format::RecordsJson);
            let s = s.unwrap();
            assert_eq!(recs, want, "{file}");
            assert_eq!((s.records, s.bytes_read, s.bytes_decompressed), (3000, bytes.len() as u64, doc.len() as u64));
            assert_eq!(s.fingerprint, fingerprint(&bytes));
            assert_eq!(s.fingerprint, fingerprint_file(&source_file(&p).unwrap()).unwrap());
        }
    }
}

#[test]
fn the_records_array_may_come_after_a_large_other_key() {
    let t = tempfile::tempdir().unwrap();
    // 4 MiB of other keys before the array and more after; a 1 KiB record cap: only records are held.
    let other = serde_json::json!({"digest": "z".repeat(4 << 20), "nested": [{"Records": [1, 2]}, "]}"]});
    let mut doc = br#"{"Other": "#.to_vec();
    doc.extend(serde_json::to_vec(&other).unwrap());
    doc.extend_from_slice(b",\n \"Records\" : [");
    doc.extend(serde_json::to_vec(&event(1)).unwrap());
    doc.extend_from_slice(b", {\"b\":\"]}\\\"\\\\\"}],\n \"After\": {\"Records\": \"not these\"}}\n");
    let want: Vec<(u64, String)> = serde_records(&doc).into_iter().enumerate().map(|(i, r)| (i as u64, r)).collect();
    assert_eq!(want[1].1, r#"{"b":"]}\"\\"}"#);
    let p = put(t.path(), "a.json", &doc);
    let opts = ReadOptions { max_record: 1 << 10, ..ReadOptions::default() };
    let (recs, s) = read_opts(&p, Format::RecordsJson, &opts);
    assert_eq!(recs, want);
    assert_eq!(s.unwrap().records, 2);
}

#[test]
fn escapes_inside_strings_do_not_end_records() {
    let t = tempfile::tempdir().unwrap();
    let doc = br#"{"Records":[{"k":"a\"]},{\"x\":[","t":"\\"},"\\\"]","]}\u005d\/"]}"#;
    let p = put(t.path(), "a.json", doc);
    let (recs, s) = read(&p, Format::RecordsJson);
    assert_eq!(s.unwrap().records, 3);
    let want: Vec<(u64, String)> = serde_records(doc).into_iter().enumerate().map(|(i, r)| (i as u64, r)).collect();
    assert_eq!(recs, want);
    assert_eq!(recs[0].1, r#"{"k":"a\"]},{\"x\":[","t":"\\"}"#);
}

#[test]
fn a_truncated_document_is_not_json_after_the_whole_records_before_the_cut() {
    let t = tempfile::tempdir().unwrap();
    let doc = serde_json::to_vec_pretty(&serde_json::json!({"Records": [event(0), 17, event(2)], "x": 1})).unwrap();
    let all = serde_records(&doc);
    let text = String::from_utf8(doc.clone()).unwrap();
    // Where each element's following separator is: an element counts once it is seen.
    let seps: Vec<usize> = {
        let mut at = 0;
        all.iter()
            .map(|r| {
                at = text[at..].find(r.as_str()).unwrap() + at + r.len();
                at += text[at..].find([',', ']']).unwrap();
                at
            })
            .collect()
    };
    for cut in (0..doc.len()).step_by(7).chain([seps[1], seps[1] + 1, doc.len() - 1]) {
        let p = put(t.path(), "cut.json", &doc[..cut]);
        let (recs, res) = read(&p, Format::RecordsJson);
        match res {
            Err(FileError { kind: FileErrorKind::NotJson { offset, .. }, .. }) => assert!(offset <= cut as u64),
            Err(e) => panic!("cut {cut}: {e}"),
            Ok(_) => assert_eq!(cut, 0, "an empty file is no error"),
        }
        let n = seps.iter().filter(|&&s| s < cut).count();
        let want: Vec<(u64, String)> = all[..n].iter().cloned().enumerate().map(|(i, r)| (i as u64, r)).collect();
        assert_eq!(recs, want, "cut {cut}");
    }
}

#[test]
fn fingerprints_agree_and_differ() {
    let t = tempfile::tempdir().unwrap();
    let bytes = gz(DOC.as_bytes());
    let p = put(t.path(), "a.json.gz", &bytes);
    let sf = source_file(&p).unwrap();
    let from_read = read(&p, Format::RecordsJson).1.unwrap().fingerprint;
    assert_eq!(from_read, fingerprint_file(&sf).unwrap());
    assert_eq!(from_read, fingerprint(&bytes));
    assert_eq!(from_read.size, bytes.len() as u64);
    let s = from_read.to_string();
    assert!(
        s.starts_with(&format!("xxh3:{}:", bytes.len()))
            && s.len() == "xxh3::".len() + 16 + s.split(':').nth(1).unwrap().len()
    );
    assert_eq!(s.parse::<Fingerprint>().unwrap(), from_read);
    assert!("xxh3:1:zz".parse::<Fingerprint>().is_err());
    assert_ne!(fingerprint(DOC.as_bytes()), from_read);
}

#[test]
fn quarantine_writes_jsonl_lazily_and_counts() {
    let t = tempfile::tempdir().unwrap();
    let qp = t.path().join("out/q/quarantine.jsonl");
    let q = Arc::new(QuarantineWriter::new(&qp));
    assert!(!qp.exists(), "created lazily");
    assert_eq!(q.counts(), QuarantineCounts::default());

    q.file("logs/bad.json.gz", "corrupt gzip").unwrap();
    q.record("logs/a.jsonl", 3, "not JSON", b"{not json").unwrap();
    q.record("logs/a.json", 12, "no eventName", b"{\n  \"a\" : \"x y\",\n  \"b\": [1, 2]\n}").unwrap();
    let huge = vec![b'x'; RAW_STRING_LIMIT + 100];
    q.record("logs/b.jsonl", 0, "not JSON", &huge).unwrap();
    q.record("logs/c.jsonl", 1, "not UTF-8", b"\xff\xfe").unwrap();
    // Parallel writers never interleave lines.
    std::thread::scope(|s| {
        for i in 0..4u64 {
            let q = Arc::clone(&q);
            s.spawn(move || {
                for j in 0..50 {
                    q.record("logs/p.jsonl", i * 100 + j, "bad", b"{\"k\":1}").unwrap();
                }
            });
        }
    });
    assert_eq!(q.counts(), QuarantineCounts { files: 1, records: 204 });

    let text = fs::read_to_string(&qp).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 205);
    assert_eq!(
        lines[0],
        serde_json::json!({"file": "logs/bad.json.gz", "record": null, "reason": "corrupt gzip", "raw": null})
    );
    assert_eq!(
        lines[1],
        serde_json::json!({"file": "logs/a.jsonl", "record": 3, "reason": "not JSON", "raw": "{not json"})
    );
    assert_eq!(
        lines[2],
        serde_json::json!({"file": "logs/a.json", "record": 12, "reason": "no eventName", "raw": {"a": "x y", "b": [1, 2]}})
    );
    assert_eq!(lines[3]["raw"].as_str().unwrap().len(), RAW_STRING_LIMIT);
    assert_eq!(lines[4]["raw"], serde_json::json!("\u{fffd}\u{fffd}"));
    assert!(lines[5..].iter().all(|l| l["raw"] == serde_json::json!({"k": 1})));
}

#[test]
fn json_lines_named_json_are_read_as_lines() {
    // Azure's diagnostic-settings export: `PT1H.json` holding one object per line, gzip or not.
    let dir = tempfile::tempdir().unwrap();
    let lines = b"{\"time\":\"2024-01-01T00:00:00Z\",\"operationName\":\"A\"}\n{\"time\":\"2024-01-01T00:01:00Z\",\"operationName\":\"B\"}\n";
    for (name, data) in [("PT1H.json", lines.to_vec()), ("PT1H.json.gz", gz(lines))] {
        let p = put(dir.path(), name, &data);
        let (records, res) = read(&p, Format::RecordsJson);
        assert_eq!(res.unwrap().records, 2, "{name}");
        assert!(records[1].1.contains("\"B\""), "{records:?}");
    }
    // One-line documents keep their meaning: a CloudTrail delivery file, a Graph list, a lone object.
    let ct = put(dir.path(), "ct.json", b"{\"Records\":[{\"a\":1},{\"a\":2}]}\n");
    assert_eq!(read(&ct, Format::RecordsJson).1.unwrap().records, 2);
    let graph = put(dir.path(), "g.json", b"{\"value\":[{\"id\":1}]}\n{\"value\":[{\"id\":2}]}\n");
    assert!(read(&graph, Format::RecordsJson).1.is_err(), "two documents in one .json file are not lines");
    // An hour with one operation: a one-line PT1H.json.
    let lone = put(dir.path(), "lone.json", b"{\"time\":\"t\",\"operationName\":\"x\"}\n");
    assert_eq!(read(&lone, Format::RecordsJson).1.unwrap().records, 1);
    let pretty = put(dir.path(), "pretty.json", b"{\n  \"time\": \"t\"\n}\n");
    assert!(read(&pretty, Format::RecordsJson).1.is_err(), "a pretty-printed object without a record array is no log");
}
