//! The browser harness (`tests/src/browser.rs`, `tests/browser/check.mjs`) checked against pages whose
//! truth is known (`tests/browser/fixtures/`), in the real headless Chromium: a correct page passes, a
//! click sorts, a form filters, a link is followed over HTTP, and each kind of broken page is caught —
//! so the report and `serve` tests built on it can fail.
#![allow(clippy::unwrap_used)]

use std::io::BufReader;
use std::net::TcpStream;
use std::path::{Path, PathBuf};

use grantwatch_e2e::browser::{Browser, Job, assert_page_clean, assert_page_matches_json, file_url, page_mismatches};
use grantwatch_e2e::http1;
use serde_json::json;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser/fixtures")
}

/// A job for a fixture file; `shot` names the screenshot (one per test, as tests run in parallel).
fn fixture(file: &str, shot: &str) -> Job {
    Job::file(shot, &fixtures().join(file)).unwrap()
}

fn report_json() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("report.json")).unwrap()).unwrap()
}

#[test]
fn a_correct_page_matches_its_json() {
    let report = Browser::check(&fixture("report.html", "report").count(".point")).unwrap();
    assert_page_matches_json(&report, &report_json());
    assert_eq!(report.title, "Identities — fixture");
    assert_eq!(report.figures["max_pci"], "72.5");
    assert_eq!(report.charts["pci"], 5);
    assert_eq!(report.counts[".point"], 5);
    let alert = report.links["alert"].clone();
    assert_eq!(alert.len(), 1);
    assert!(alert[0].starts_with("file://") && alert[0].ends_with("/fixtures/alert.html?id=a-1"), "{alert:?}");
    let shot = report.screenshot.unwrap();
    assert!(std::fs::read(&shot).unwrap().starts_with(b"\x89PNG"), "{} is not a PNG", shot.display());
}

#[test]
fn a_page_that_differs_from_its_json_is_caught() {
    let report = Browser::check(&fixture("report.html", "report-differs")).unwrap();
    let mut json = report_json();
    json["figures"]["identities"] = json!(5);
    json["figures"]["max_pci"] = json!("72.50");
    json["figures"]["absent"] = json!(1);
    json["charts"]["pci"].as_array_mut().unwrap().pop();
    json["charts"]["absent"] = json!([]);
    let mut got = page_mismatches(&report, &json);
    got.sort();
    assert_eq!(
        got,
        [
            r#"chart "absent" is not on the page (no svg[data-chart="absent"])"#,
            r#"chart "pci": the page draws 5 points, the JSON has 4"#,
            r#"figure "absent" (1) is not on the page (no [data-figure="absent"])"#,
            r#"figure "identities": the page shows "4", the JSON says "5""#,
            r#"figure "max_pci": the page shows "72.5", the JSON says "72.50""#,
        ]
    );
    // Nothing to compare with is a mismatch too, not a pass.
    assert_eq!(page_mismatches(&report, &json!({"other": 1})).len(), 1);
    let panicked = std::panic::catch_unwind(|| assert_page_matches_json(&report, &json));
    assert!(panicked.is_err());
}

#[test]
fn a_click_sorts_the_table() {
    let pci = "#identities tbody .pci";
    let page = || fixture("report.html", "x").text(pci);
    let [unsorted, once, twice] = Browser::check_all(&[
        Job { name: "report-unsorted".into(), ..page() },
        Job { name: "report-sorted".into(), ..page().click("[data-sort=pci]") },
        Job { name: "report-sorted-desc".into(), ..page().click("[data-sort=pci]").click("[data-sort=pci]") },
    ])
    .unwrap()
    .try_into()
    .unwrap();
    assert_eq!(unsorted.texts[pci], ["12", "72.5", "40", "3"]);
    assert_eq!(once.texts[pci], ["3", "12", "40", "72.5"]);
    assert_eq!(twice.texts[pci], ["72.5", "40", "12", "3"]);
    assert!(twice.problems().is_empty(), "{:?}", twice.problems());
}

#[test]
fn a_form_filters_the_rows() {
    let shown = "#identities tbody tr:not([hidden]) .name";
    let [aws, gcp] = Browser::check_all(&[
        fixture("report.html", "report-aws-e").select("#cloud-filter", "aws").fill("#name", "e").text(shown),
        fixture("report.html", "report-gcp").select("#cloud-filter", "gcp").text(shown),
    ])
    .unwrap()
    .try_into()
    .unwrap();
    assert_eq!(aws.texts[shown], ["alice", "deploy-role", "ci-user"]);
    assert_eq!(aws.figures["shown"], "3");
    assert_eq!(gcp.texts[shown], ["bob@example.org"]);
    assert_eq!(gcp.figures["shown"], "1");
    // The page no longer says what the JSON says: the harness sees the page as it is after the actions.
    let mismatches = page_mismatches(&gcp, &report_json());
    assert_eq!(mismatches, [r#"figure "shown": the page shows "1", the JSON says "4""#]);
}

#[test]
fn console_errors_and_uncaught_exceptions_are_caught() {
    let report = Browser::check(&fixture("console-error.html", "console-error")).unwrap();
    assert_eq!(report.console_errors.len(), 1, "{:?}", report.console_errors);
    assert!(report.console_errors[0].starts_with("fixture: chart data missing"), "{:?}", report.console_errors);
    assert_eq!(report.page_errors.len(), 1, "{:?}", report.page_errors);
    assert!(report.page_errors[0].contains("render"), "{:?}", report.page_errors);
    // The figure itself is right; the page still fails.
    let mismatches = page_mismatches(&report, &json!({"figures": {"identities": 4}}));
    assert_eq!(mismatches.len(), 2, "{mismatches:?}");
}

#[test]
fn a_request_off_the_machine_is_caught_and_never_sent() {
    let report = Browser::check(&fixture("external-image.html", "external-image")).unwrap();
    assert_eq!(report.external_requests, ["https://cdn.example.com/logo.png"]);
    let mismatches = page_mismatches(&report, &json!({"figures": {"identities": 4}}));
    assert!(mismatches.contains(&"non-local request: https://cdn.example.com/logo.png".to_string()), "{mismatches:?}");
}

/// The fixtures over HTTP on a free loopback port: GET only, no `..`, 404 for anything else.
fn serve_fixtures() -> String {
    http1::serve(|conn: TcpStream| {
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let Ok(Some((first, _, _))) = http1::read_message(&mut reader) else { return };
        let mut conn = conn;
        let target = first.split(' ').nth(1).unwrap_or("/");
        let path = target.split(['?', '#']).next().unwrap_or("/").trim_start_matches('/');
        let file = fixtures().join(path);
        let safe = first.starts_with("GET ") && !path.is_empty() && !path.split('/').any(|p| p == ".." || p.is_empty());
        match std::fs::read(&file) {
            Ok(body) if safe => {
                let kind =
                    if path.ends_with(".html") { "text/html; charset=utf-8" } else { "application/octet-stream" };
                http1::respond(&mut conn, "200 OK", &[("Content-Type".into(), kind.into())], &body).unwrap();
            }
            _ => http1::respond(&mut conn, "404 Not Found", &[], b"not found").unwrap(),
        }
    })
}

#[test]
fn pages_over_http_and_a_followed_link() {
    let base = serve_fixtures();
    let [report, followed, missing] = Browser::check_all(&[
        Job::new("http-report", &format!("{base}/report.html")),
        Job::new("http-alert", &format!("{base}/report.html")).click_and_follow("a[data-link=alert]"),
        Job::new("http-missing", &format!("{base}/missing.html")),
    ])
    .unwrap()
    .try_into()
    .unwrap();
    assert_page_matches_json(&report, &report_json());
    assert_eq!(report.links["alert"], [format!("{base}/alert.html?id=a-1")]);

    assert_eq!(followed.url, format!("{base}/alert.html?id=a-1"));
    assert_eq!(followed.title, "Alert a-1 — fixture");
    assert_page_matches_json(&followed, &json!({"figures": {"alert": "a-1", "severity": "high"}}));

    assert!(
        missing.failed_requests.contains(&format!("{base}/missing.html: HTTP 404")),
        "{:?}",
        missing.failed_requests
    );
}

#[test]
fn many_pages_in_one_chromium() {
    let pci = "#identities tbody .pci";
    let reports = Browser::check_all(&[
        fixture("report.html", "batch-report").click("[data-sort=pci]").text(pci),
        fixture("console-error.html", "batch-console-error"),
        fixture("alert.html", "batch-alert"),
    ])
    .unwrap();
    assert_eq!(reports.len(), 3);
    assert_page_matches_json(&reports[0], &report_json());
    assert_eq!(reports[0].texts[pci], ["3", "12", "40", "72.5"]);
    // One page's errors stay with that page.
    assert_eq!(reports[1].page_errors.len(), 1, "{:?}", reports[1].page_errors);
    assert_page_clean(&reports[2]);
    assert_eq!(reports[2].figures["alert"], "a-1");
    for r in &reports {
        assert!(r.screenshot.as_ref().unwrap().is_file());
    }

    let err = Browser::check_all(&[fixture("alert.html", "same"), fixture("report.html", "same")]).unwrap_err();
    assert!(err.to_string().contains("two jobs named \"same\""), "{err}");
    // A failed step names its job.
    let mut jobs = [fixture("alert.html", "batch-ok"), fixture("report.html", "batch-fails").click("#no-such-button")];
    jobs.iter_mut().for_each(|j| j.step_timeout_ms = 2_000);
    let err = Browser::check_all(&jobs).unwrap_err().to_string();
    assert!(err.contains("job 2 (file://") && err.contains(r##"action 1 {"click":"#no-such-button"}"##), "{err}");
}

#[test]
fn a_file_path_that_needs_escaping() {
    assert_eq!(file_url(Path::new("/tmp/a b/#1 é.html")), "file:///tmp/a%20b/%231%20%C3%A9.html");
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("alert #1 é.html");
    std::fs::copy(fixtures().join("alert.html"), &page).unwrap();
    let report = Browser::check(&Job::file("escaped-path", &page).unwrap()).unwrap();
    assert_page_matches_json(&report, &json!({"figures": {"alert": "a-1"}}));
}

#[test]
fn a_failed_check_is_an_error_that_says_why() {
    // A Chromium that exits at once: the driver's own message, not a hang or a garbled report.
    let mut job = fixture("report.html", "no-chromium");
    job.chromium = Some("/bin/false".into());
    let err = Browser::check(&job).unwrap_err().to_string();
    assert!(err.contains("Chromium cannot start (/bin/false)"), "{err}");

    let mut job = fixture("report.html", "no-chromium");
    job.chromium = Some("/nonexistent/chromium".into());
    let err = Browser::check(&job).unwrap_err().to_string();
    assert!(err.contains("Chromium cannot start: /nonexistent/chromium is not an executable"), "{err}");

    // A step that cannot happen fails with the step named, within its time limit.
    let mut job = fixture("report.html", "failed-step").click("#no-such-button");
    job.step_timeout_ms = 2_000;
    let err = Browser::check(&job).unwrap_err().to_string();
    assert!(err.contains(r##"action 1 {"click":"#no-such-button"}"##), "{err}");

    let err = Browser::check(&Job::new("../escape", "file:///tmp/x.html")).unwrap_err().to_string();
    assert!(err.contains("job name"), "{err}");
    let err = Browser::check(&Job::new("remote", "https://example.com/")).unwrap_err().to_string();
    assert!(err.contains("must be file:// or http:// on the loopback"), "{err}");
}
