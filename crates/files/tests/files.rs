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

fn read_opts(path: &Path, format: Format, opts: &ReadOptions) -> (Vec<(u64, String)>, Result<FileSummary, FileError>) {
    let mut sf = source_file(path).unwrap();
    sf.format = format;
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let res = read_records_with(&sf, opts, &mut buf, &mut |r: Record<'_>| {
        out.push((r.index, String::from_utf8_lossy(r.raw).into_owned()))
    });
    (out, res)
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
    let paths: Vec<&Path> = d.files.iter().map(|f| f.path.as_path()).collect();
    let mut want = vec![a.as_path(), o.as_path(), l.as_path(), n.as_path(), p.as_path(), named.as_path()];
    want.sort();
    assert_eq!(paths, want);
    assert_eq!(d.ignored.digest, 2);
    assert_eq!(d.ignored.hidden, 3, "two hidden files + a hidden dir (not descended)");
    assert_eq!(d.ignored.other, 1);
    #[cfg(unix)]
    assert_eq!(d.ignored.symlinks, 2, "once per walk that reaches it");

    let fa = d.files.iter().find(|f| f.path == a).unwrap();
    assert_eq!(fa.format, Format::RecordsJson);
    assert!(fa.compressed);
    assert_eq!(fa.size, 1);
    assert_eq!(fa.hints().account.as_deref(), Some("123456789012"));
    assert_eq!(fa.hints().region.as_deref(), Some("us-east-1"));
    assert_eq!(fa.hints().date, Some(YearMonthDay { year: 2024, month: 1, day: 2 }));
    assert_eq!(fa.hints().org_id, None);
    let fo = d.files.iter().find(|f| f.path == o).unwrap();
    assert_eq!(fo.hints().org_id.as_deref(), Some("o-abcdef1234"));
    assert_eq!(fo.hints().account.as_deref(), Some("210987654321"));
    assert_eq!(fo.hints().region.as_deref(), Some("eu-west-1"));
    assert_eq!(fo.hints().date, Some(YearMonthDay { year: 2024, month: 12, day: 31 }));
    let fl = d.files.iter().find(|f| f.path == l).unwrap();
    assert_eq!((fl.format, fl.compressed), (Format::JsonLines, false));
    assert_eq!(fl.hints(), S3Hints::default());
    let fn_ = d.files.iter().find(|f| f.path == n).unwrap();
    assert_eq!((fn_.format, fn_.compressed), (Format::JsonLines, true));

    // Deterministic.
    assert_eq!(discover(&[r.to_path_buf(), r.join("export"), named]).unwrap(), d);
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
    assert_eq!(e.path, p);
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
fn caps_are_enforced() {
    let t = tempfile::tempdir().unwrap();
    let opts = ReadOptions { max_decompressed: 64, max_record: 16 };
    let big = vec![b' '; 10_000];
    let p = put(t.path(), "bomb.json.gz", &gz(&big));
    let e = read_opts(&p, Format::RecordsJson, &opts).1.unwrap_err();
    assert!(matches!(e.kind, FileErrorKind::TooLarge { cap: 64 }), "{e}");
    // JSON Lines streams: only a line is capped, not the file. A file of short lines larger than the
    // whole-file cap is read to its end; one endless line is refused.
    let p = put(t.path(), "bomb.jsonl", &big);
    assert!(matches!(
        read_opts(&p, Format::JsonLines, &opts).1.unwrap_err().kind,
        FileErrorKind::RecordTooLarge { .. }
    ));
    let many = "{\"a\":1}\n".repeat(100);
    let p = put(t.path(), "many.jsonl", many.as_bytes());
    assert_eq!(read_opts(&p, Format::JsonLines, &opts).1.unwrap().records, 100);
    let p = put(t.path(), "long.jsonl", b"{\"a\":1}\n{\"a\":\"0123456789abcdef\"}\n");
    let (recs, res) = read_opts(&p, Format::JsonLines, &opts);
    assert_eq!(recs.len(), 1);
    assert!(matches!(res.unwrap_err().kind, FileErrorKind::RecordTooLarge { line: 1, cap: 16 }));
    // Exactly at the record cap is fine.
    let p = put(t.path(), "ok.jsonl", b"{\"a\":\"01234567\"}\n");
    assert_eq!(read_opts(&p, Format::JsonLines, &opts).1.unwrap().records, 1);
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

    q.file(Path::new("logs/bad.json.gz"), "corrupt gzip").unwrap();
    q.record(Path::new("logs/a.jsonl"), 3, "not JSON", b"{not json").unwrap();
    q.record(Path::new("logs/a.json"), 12, "no eventName", b"{\n  \"a\" : \"x y\",\n  \"b\": [1, 2]\n}").unwrap();
    let huge = vec![b'x'; RAW_STRING_LIMIT + 100];
    q.record(Path::new("logs/b.jsonl"), 0, "not JSON", &huge).unwrap();
    q.record(Path::new("logs/c.jsonl"), 1, "not UTF-8", b"\xff\xfe").unwrap();
    // Parallel writers never interleave lines.
    std::thread::scope(|s| {
        for i in 0..4u64 {
            let q = Arc::clone(&q);
            s.spawn(move || {
                for j in 0..50 {
                    q.record(Path::new("logs/p.jsonl"), i * 100 + j, "bad", b"{\"k\":1}").unwrap();
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
