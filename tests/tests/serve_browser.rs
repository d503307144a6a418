//! The reports and `grantwatch serve` in a real browser (headless Chromium through the harness of
//! `tests/src/browser.rs`), over the sample organization analyzed with a state:
//! - every report kind rendered as `grantwatch report --format html,json` renders, page equal to JSON;
//! - `serve` on an ephemeral port: the identities page, a filter applied through its form, a link from
//!   an identity to an alert, the PCI page; each page against its own `?format=json`;
//! - plain HTTP: 404s, 400s, path traversal, security headers, a missing or broken state, and pages
//!   served while a second analyze rewrites the same state.
#![allow(clippy::unwrap_used, clippy::print_stdout)] // test code: a panic is a failed test

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use grantwatch::analyze::{AnalyzeOptions, run};
use grantwatch::report::{Format, ReportOptions};
use grantwatch::serve::{CSP, ServeOptions, Server};
use grantwatch_e2e::browser::{Browser, Job, assert_page_matches_json, page_mismatches};
use grantwatch_report::{Filters, Kind};
use grantwatch_types::{DetectionFinding, IdentityFinding, PciBand};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

struct Fixture {
    _dir: tempfile::TempDir,
    state: PathBuf,
    out: PathBuf,
    identities: Vec<IdentityFinding>,
    alerts: Vec<DetectionFinding>,
}

fn analyze_options(state: &Path, out: &Path) -> AnalyzeOptions {
    let mut o = AnalyzeOptions::new(out.to_path_buf());
    o.iam = vec![repo().join("samples/iam")];
    o.cloudtrail = vec![repo().join("samples/cloudtrail").into()];
    o.state = Some(state.to_path_buf());
    o.progress = false;
    let catalog = Arc::new(grantwatch_core::catalog::Catalog::aws().unwrap());
    let (detection, _) = grantwatch_detect::load::load_detection(catalog, &repo().join("rules"), None).unwrap();
    o.detection = Some(Arc::new(detection));
    o
}

/// The sample's AWS accounts analyzed once, with detection and a state (as `tests/tests/report.rs`).
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let (state, out) = (dir.path().join("state"), dir.path().join("out"));
        run(&analyze_options(&state, &out)).unwrap();
        let read = |f: &str| std::fs::read_to_string(out.join(f)).unwrap();
        let identities = read("identities.jsonl").lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let alerts: Vec<DetectionFinding> =
            read("alerts.jsonl").lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert!(!alerts.is_empty(), "the sample raises alerts");
        Fixture { _dir: dir, state, out, identities, alerts }
    })
}

/// The identity with the most alerts (it has an alerts table to click through).
fn alerted_identity(f: &Fixture) -> &IdentityFinding {
    let mut per: BTreeMap<&str, usize> = BTreeMap::new();
    for a in &f.alerts {
        *per.entry(a.actor.user.uid.as_str()).or_default() += 1;
    }
    f.identities.iter().filter(|i| per.contains_key(i.arn.as_str())).max_by_key(|i| per[i.arn.as_str()]).unwrap()
}

fn server(f: &Fixture) -> Server {
    Server::start(ServeOptions { state: f.state.clone(), results: None }, "127.0.0.1:0".parse().unwrap()).unwrap()
}

/// GET through a raw socket (no URL normalization on the way: `..` reaches the server as written).
fn raw_get(addr: SocketAddr, target: &str) -> (u16, String, String) {
    raw_request(addr, &format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"))
}

fn raw_request(addr: SocketAddr, req: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

fn get_json(url: &str) -> serde_json::Value {
    let resp = reqwest::blocking::get(url).unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{url}");
    resp.json().unwrap()
}

fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn band(b: PciBand) -> &'static str {
    match b {
        PciBand::Low => "low",
        PciBand::Medium => "medium",
        PciBand::High => "high",
    }
}

#[test]
fn every_report_kind_renders_in_chromium_as_its_json_says() {
    let f = fixture();
    let out = tempfile::tempdir().unwrap();
    let identity = alerted_identity(f);
    let mut jobs = Vec::new();
    let mut jsons = Vec::new();
    for kind in Kind::ALL {
        let mut filters = Filters::default();
        match kind {
            Kind::Identity => filters.identity = Some(identity.arn.clone()),
            Kind::Alert => filters.alert = Some(f.alerts[0].finding_info.uid.clone()),
            _ => {}
        }
        let o = grantwatch::report::run(&ReportOptions {
            kind,
            state: f.state.clone(),
            results: None,
            filters,
            out: out.path().to_path_buf(),
            formats: vec![Format::Html, Format::Json],
            page_size: 50,
        })
        .unwrap();
        let stem = o.report.file_stem();
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.path().join(format!("{stem}.json"))).unwrap()).unwrap();
        jobs.push(Job::file(&format!("report-{}", kind.as_str()), &out.path().join(format!("{stem}.html"))).unwrap());
        jsons.push((kind, json));
    }
    let pages = Browser::check_all(&jobs).unwrap();
    for (page, (kind, json)) in pages.iter().zip(&jsons) {
        assert_page_matches_json(page, json);
        let charts = json["charts"].as_object().unwrap();
        for (name, points) in charts {
            assert_eq!(page.charts[name], points.as_array().unwrap().len(), "{} chart {name}", kind.as_str());
        }
        assert!(!page.figures.is_empty(), "{} shows figures", kind.as_str());
        assert!(page.screenshot.as_ref().is_some_and(|p| p.is_file()), "{} screenshot saved", kind.as_str());
    }
    // Charts with points: the identity's PCI history, the all-identities PCI series.
    let points = |k: Kind, c: &str| pages[Kind::ALL.iter().position(|x| *x == k).unwrap()].charts[c];
    assert!(points(Kind::PciHistory, "pci_all") > 1);
    assert!(points(Kind::Identity, "pci_history") > 0);
}

#[test]
fn serve_pages_filters_and_links_in_chromium() {
    let f = fixture();
    let srv = server(f);
    let base = srv.url();
    let identity = alerted_identity(f);
    let id_url = format!("{base}/identity/{}", pct(&identity.arn));

    // A filter with a few matches but not all: the account and PCI band with the most identities
    // short of every identity.
    let mut combos: BTreeMap<(String, &str), usize> = BTreeMap::new();
    for i in &f.identities {
        *combos.entry((i.account.clone(), band(i.pci.band))).or_default() += 1;
    }
    let ((account, band_v), expected) = combos
        .iter()
        .filter(|(_, n)| **n < f.identities.len())
        .max_by_key(|(_, n)| **n)
        .map(|(k, n)| (k.clone(), *n))
        .unwrap();
    assert!(expected <= grantwatch::serve::DEFAULT_PAGE_SIZE, "the filtered set fits one page");

    let jobs = [
        Job::new("serve-identities", &format!("{base}/")).count("tbody tr[data-row]"),
        Job::new("serve-identities-filtered", &format!("{base}/"))
            .select("#f-account", &account)
            .select("#f-band", band_v)
            .click_and_follow("#apply")
            .count("tbody tr[data-row]"),
        Job::new("serve-identity", &id_url),
        Job::new("serve-identity-to-alert", &id_url).click_and_follow("a[data-link=alert]").wait_for_url("/alert/"),
        Job::new("serve-alerts-to-alert", &format!("{base}/alerts")).click_and_follow("a[data-link=alert]"),
        Job::new("serve-pci", &format!("{base}/pci")),
    ];
    let [all, filtered, id_page, id_to_alert, alerts_to_alert, pci] =
        <[_; 6]>::try_from(Browser::check_all(&jobs).unwrap()).unwrap();

    // The identities page: its figures are its JSON's; as many rows as the page holds.
    let all_json = get_json(&format!("{base}/?format=json"));
    assert_page_matches_json(&all, &all_json);
    assert_eq!(all_json["figures"]["identities"], f.identities.len());
    assert_eq!(all.counts["tbody tr[data-row]"], f.identities.len().min(grantwatch::serve::DEFAULT_PAGE_SIZE));

    // The form's filter: the URL carries it; rows and the `matching` figure are identities.jsonl's count.
    assert!(
        filtered.url.contains(&format!("account={account}")) && filtered.url.contains(&format!("band={band_v}")),
        "{}",
        filtered.url
    );
    assert_eq!(filtered.counts["tbody tr[data-row]"], expected);
    assert_eq!(filtered.figures["matching"], expected.to_string());
    let filtered_json = get_json(&format!("{}&format=json", filtered.url));
    assert_page_matches_json(&filtered, &filtered_json);

    // The identity page is the identity report: the same JSON as `grantwatch report identity`.
    let id_json = get_json(&format!("{id_url}?format=json"));
    assert_page_matches_json(&id_page, &id_json);
    assert_eq!(id_json["figures"]["arn"], identity.arn.as_str());
    let cli = grantwatch::report::run(&ReportOptions {
        kind: Kind::Identity,
        state: f.state.clone(),
        results: None,
        filters: Filters { identity: Some(identity.arn.clone()), ..Default::default() },
        out: tempfile::tempdir().unwrap().path().to_path_buf(),
        formats: vec![Format::Json],
        page_size: 50,
    })
    .unwrap();
    assert_eq!(id_json, serde_json::to_value(&cli.report).unwrap());

    // The first alert link of the identity page leads to that alert's page.
    let first_alert = id_page.links["alert"][0].clone();
    let uid = id_json["tables"].as_array().unwrap().iter().find(|t| t["name"] == "alerts").unwrap()["rows"][0][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(first_alert.ends_with(&format!("/alert/{}", pct(&uid))), "{first_alert}");
    assert_eq!(id_to_alert.url, first_alert);
    assert_eq!(id_to_alert.figures["alert"], uid);
    assert_eq!(id_to_alert.figures["identity"], identity.arn);
    assert_page_matches_json(&id_to_alert, &get_json(&format!("{first_alert}?format=json")));
    // From /alerts too: the newest alert's page.
    let alerts_json = get_json(&format!("{base}/alerts?format=json"));
    let newest = alerts_json["rows"][0]["uid"].as_str().unwrap();
    assert_eq!(alerts_to_alert.figures["alert"], newest);
    assert!(page_mismatches(&alerts_to_alert, &get_json(&format!("{}?format=json", alerts_to_alert.url))).is_empty());

    // PCI trends: as many points as its JSON.
    let pci_json = get_json(&format!("{base}/pci?format=json"));
    assert_page_matches_json(&pci, &pci_json);
    assert_eq!(pci.charts["pci_all"], pci_json["charts"]["pci_all"].as_array().unwrap().len());
    assert!(pci.charts["pci_all"] > 1);
}

#[test]
fn every_report_kind_is_served_and_equals_the_cli_json() {
    let f = fixture();
    let srv = server(f);
    let identity = alerted_identity(f);
    for kind in Kind::ALL {
        let (query, filters) = match kind {
            Kind::Identity => (
                format!("?identity={}", pct(&identity.arn)),
                Filters { identity: Some(identity.arn.clone()), ..Default::default() },
            ),
            Kind::Alert => {
                let uid = &f.alerts[0].finding_info.uid;
                (format!("?alert={}", pct(uid)), Filters { alert: Some(uid.clone()), ..Default::default() })
            }
            _ => (String::new(), Filters::default()),
        };
        let sep = if query.is_empty() { "?" } else { "&" };
        let served = get_json(&format!("{}/reports/{}{query}{sep}format=json", srv.url(), kind.as_str()));
        let cli = grantwatch_report::build(
            kind,
            &grantwatch_state_rocks::RocksStore::open_read_only(&f.state).unwrap(),
            &grantwatch_report::Results::load(&f.out).unwrap(),
            &filters,
        )
        .unwrap();
        assert_eq!(served, serde_json::to_value(&cli).unwrap(), "{}", kind.as_str());
        let (status, _, html) = raw_get(srv.addr, &format!("/reports/{}{query}", kind.as_str()));
        assert_eq!(status, 200, "{}", kind.as_str());
        assert!(html.contains(&format!("data-kind=\"{}\"", kind.as_str())));
    }
}

#[test]
fn bad_requests_unknown_pages_and_traversal_get_clear_statuses() {
    let f = fixture();
    let srv = server(f);
    let a = srv.addr;
    let cases: &[(&str, u16, &str)] = &[
        ("/identity/arn%3Aaws%3Aiam%3A%3A1%3Auser%2Fnobody", 404, "no identity"),
        ("/identity?uid=nobody", 404, "no identity"),
        ("/identity", 400, "needs ?uid="),
        ("/alert/ffffffffnotanalert", 404, "no alert"),
        ("/reports/no-such-kind", 404, "no report kind"),
        ("/reports/identity", 400, "needs --identity"),
        ("/nope", 404, "no page at /nope"),
        ("/?band=extreme", 400, "band=&quot;extreme&quot;"),
        ("/?page_size=0", 400, "page_size"),
        ("/?page_size=100000", 400, "page_size"),
        ("/?page=999", 404, "page 999: there are"),
        ("/?sort=password", 400, "sort="),
        ("/?dir=up", 400, "dir="),
        ("/?bogus=1", 400, "unknown parameter"),
        ("/?band=low&band=high", 400, "given twice"),
        ("/pci?from=yesterday", 400, "not an RFC 3339 time"),
        ("/pci?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", 400, "is after"),
        ("/reports/permissions-analytics?account=000000000000", 400, "no account"),
        ("/alerts?severity=Apocalyptic", 400, "severity="),
        ("/?format=xml", 400, "expected html or json"),
        // Traversal: nothing reads a file named by a request, so these are unknown pages or subjects.
        ("/../../../../etc/passwd", 404, ""),
        ("/reports/..%2F..%2F..%2Fetc%2Fpasswd", 404, "no report kind"),
        ("/identity/..%2F..%2F..%2F..%2Fetc%2Fpasswd", 404, "no identity"),
        ("/alert/%2e%2e%2f%2e%2e%2fetc%2fpasswd", 404, "no alert"),
        ("/static/..%252f..%252fetc%252fpasswd", 404, ""),
    ];
    for (target, status, needle) in cases {
        let (got, head, body) = raw_get(a, target);
        assert_eq!(got, *status, "{target}: {head}\n{body}");
        assert!(body.contains(needle), "{target}: {needle:?} not in {body}");
        assert!(!body.contains("root:x:0:0"), "{target} leaked a file");
        assert!(head.contains(&format!("content-security-policy: {CSP}")), "{target}: {head}");
        assert!(body.starts_with("<!doctype html>"), "{target}: an error page");
    }
    // A JSON caller gets JSON errors.
    let (got, _, body) = raw_get(a, "/alert/nope?format=json");
    assert_eq!(got, 404);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], 404);
    // Bounded: an overlong target, a body on a GET route, another method.
    let (got, _, _) = raw_get(a, &format!("/?q={}", "a".repeat(20_000)));
    assert!(got == 414 || got == 431 || got == 400, "overlong target: {got}");
    let (got, _, _) =
        raw_request(a, &format!("POST / HTTP/1.1\r\nHost: {a}\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"));
    assert_eq!(got, 405);
    // Every value escaped: a query echoed in the form comes back inert.
    let (got, _, body) = raw_get(a, "/?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E");
    assert_eq!(got, 200);
    assert!(body.contains("&lt;script&gt;alert(1)&lt;/script&gt;") && !body.contains("<script>alert(1)"));
}

#[test]
fn a_missing_or_broken_state_is_an_error_page_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let missing =
        Server::start(ServeOptions { state: dir.path().join("absent"), results: None }, "127.0.0.1:0".parse().unwrap())
            .unwrap();
    let (got, _, body) = raw_get(missing.addr, "/");
    assert_eq!(got, 503);
    assert!(body.contains("no state directory at"), "{body}");

    // A directory with the marker but no database in it.
    let broken = dir.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join(grantwatch_state_rocks::STATE_MARKER), b"").unwrap();
    std::fs::write(broken.join("CURRENT"), b"MANIFEST-000042\n").unwrap();
    let srv =
        Server::start(ServeOptions { state: broken.clone(), results: None }, "127.0.0.1:0".parse().unwrap()).unwrap();
    for target in ["/", "/pci", "/identity?uid=x", "/alerts?format=json"] {
        let (got, _, body) = raw_get(srv.addr, target);
        assert!(got == 503 || got == 500, "{target}: {got}");
        assert!(body.contains("opening the state"), "{target}: {body}");
    }
    // The server is still up after all of that.
    let (got, _, _) = raw_get(srv.addr, "/reports");
    assert_eq!(got, 200);

    // A state that records no results yet, and results that are not JSON.
    let f = fixture();
    let bad = dir.path().join("bad-results");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("identities.jsonl"), b"{not json\n").unwrap();
    let srv =
        Server::start(ServeOptions { state: f.state.clone(), results: Some(bad) }, "127.0.0.1:0".parse().unwrap())
            .unwrap();
    let (got, _, body) = raw_get(srv.addr, "/");
    assert_eq!(got, 503);
    assert!(body.contains("identities.jsonl line 1"), "{body}");
}

/// The server holds no lock: a second analyze over the same state directory runs to the end while the
/// pages keep answering, and the pages then show the new run's results.
#[test]
fn pages_are_served_while_analyze_rewrites_the_state() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let (state, out) = (dir.path().join("state"), dir.path().join("out"));
    copy_dir(&f.state, &state);
    copy_dir(&f.out, &out);
    // The copied state still records the fixture's results dir; serve follows what the state records.
    let srv =
        Server::start(ServeOptions { state: state.clone(), results: None }, "127.0.0.1:0".parse().unwrap()).unwrap();
    let identity = alerted_identity(f);
    let before = get_json(&format!("{}/?format=json", srv.url()));

    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (state, out2, done) = (state.clone(), dir.path().join("out2"), done.clone());
        std::thread::spawn(move || {
            let r = run(&analyze_options(&state, &out2)).map(|_| ());
            done.store(true, Ordering::SeqCst);
            r
        })
    };
    let (mut during, mut statuses) = (0usize, BTreeMap::<u16, usize>::new());
    while !done.load(Ordering::SeqCst) {
        for target in ["/?format=json".to_string(), format!("/identity/{}?format=json", pct(&identity.arn))] {
            let (got, _, _) = raw_get(srv.addr, &target);
            *statuses.entry(got).or_default() += 1;
        }
        during += 1;
    }
    writer.join().unwrap().unwrap();
    println!("{during} rounds of requests while analyze ran: {statuses:?}");
    assert!(during > 0, "requests were made while analyze ran");
    assert_eq!(statuses.keys().copied().collect::<Vec<_>>(), vec![200], "every request answered: {statuses:?}");

    // The state now records out2: the page follows it (same logs, same figures).
    let after = get_json(&format!("{}/?format=json", srv.url()));
    assert_eq!(after["figures"], before["figures"]);
    let recorded = {
        let store = grantwatch_state_rocks::RocksStore::open_read_only(&state).unwrap();
        grantwatch::report::recorded_results(&store).unwrap().unwrap()
    };
    assert!(recorded.ends_with("out2"), "{}", recorded.display());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}
