//! `grantwatch report` end to end: the sample organization analyzed with a state, then every report
//! kind, its figures checked against an independent reading of identities.jsonl, alerts.jsonl and the
//! state, its outputs against the schema and the browser-test conventions.
#![allow(clippy::unwrap_used, clippy::print_stdout)] // test code: a panic is a failed test

mod common;
use common::validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use grantwatch::analyze::{AnalyzeOptions, run};
use grantwatch::report::{Format, ReportOptions};
use grantwatch_core::history;
use grantwatch_report::{Filters, Kind, Report};
use grantwatch_state_rocks::RocksStore;
use grantwatch_types::{DetectionFinding, EventTime, IdentityFinding, IdentityKind, StatusFlag};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

struct Fixture {
    _dir: tempfile::TempDir,
    state: PathBuf,
    out: PathBuf,
    pci_updates: u64,
    identities: Vec<IdentityFinding>,
    alerts: Vec<DetectionFinding>,
}

/// The sample's AWS accounts, analyzed once with detection and a state.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let (state, out) = (dir.path().join("state"), dir.path().join("out"));
        let mut o = AnalyzeOptions::new(out.clone());
        o.iam = vec![repo().join("samples/iam")];
        o.cloudtrail = vec![repo().join("samples/cloudtrail").into()];
        o.state = Some(state.clone());
        o.progress = false;
        let catalog = Arc::new(grantwatch_core::catalog::Catalog::aws().unwrap());
        let (detection, _) = grantwatch_detect::load::load_detection(catalog, &repo().join("rules"), None).unwrap();
        o.detection = Some(Arc::new(detection));
        let outcome = run(&o).unwrap();
        let pci_updates = outcome.detection.as_ref().unwrap().pci_updates;
        let read = |f: &str| std::fs::read_to_string(out.join(f)).unwrap();
        let identities = read("identities.jsonl").lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let alerts: Vec<DetectionFinding> =
            read("alerts.jsonl").lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert!(!alerts.is_empty(), "the sample raises alerts");
        Fixture { _dir: dir, state, out, pci_updates, identities, alerts }
    })
}

/// Runs `grantwatch report` as the CLI does (state → recorded results dir), in every format, and
/// checks the outputs: schema, CSV shape, HTML conventions. Returns the model.
fn report(kind: Kind, filters: Filters) -> Report {
    let f = fixture();
    let out = tempfile::tempdir().unwrap();
    let o = grantwatch::report::run(&ReportOptions {
        kind,
        state: f.state.clone(),
        results: None,
        filters,
        out: out.path().to_path_buf(),
        formats: vec![Format::Html, Format::Csv, Format::Json],
        page_size: 50,
    })
    .unwrap();
    assert_eq!(o.files.len(), 3);
    let stem = o.report.file_stem();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join(format!("{stem}.json"))).unwrap()).unwrap();
    validate("report.v1.json", &json);
    assert_eq!(json["kind"], kind.as_str());
    check_csv(&std::fs::read_to_string(out.path().join(format!("{stem}.csv"))).unwrap(), &o.report);
    check_html(&std::fs::read_to_string(out.path().join(format!("{stem}.html"))).unwrap(), &json);
    o.report
}

/// Parses RFC 4180 (quoted fields, doubled quotes, CRLF), every row as wide as the header.
fn check_csv(csv: &str, r: &Report) {
    let mut rows: Vec<Vec<String>> = Vec::new();
    let (mut row, mut field, mut quoted, mut chars) = (Vec::new(), String::new(), false, csv.chars().peekable());
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            ('"', true) => quoted = false,
            ('"', false) if field.is_empty() => quoted = true,
            (',', false) => row.push(std::mem::take(&mut field)),
            ('\r', false) => {}
            ('\n', false) => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (c, _) => field.push(c),
        }
    }
    assert!(!quoted && field.is_empty() && row.is_empty(), "the CSV ends with a complete row");
    let main = &r.tables[0];
    assert_eq!(rows[0], main.columns);
    assert_eq!(rows.len(), main.rows.len() + 1);
    assert!(rows.iter().all(|x| x.len() == main.columns.len()));
}

/// The browser-test conventions, statically: no network URL; each figure in `data-figure` with the
/// JSON's text; one `.point` per chart point.
fn check_html(html: &str, json: &serde_json::Value) {
    assert!(html.starts_with("<!doctype html>") && html.contains("<html lang=\"en\">"));
    assert!(!html.contains("http://") && !html.contains("https://"), "no network reference");
    assert!(!html.contains(" src="), "nothing loaded from elsewhere");
    for (name, v) in json["figures"].as_object().unwrap() {
        let text = match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let needle = format!(
            "data-figure=\"{name}\" aria-labelledby=\"fig-{name}\">{}</dd>",
            grantwatch_report::render::esc(&text)
        );
        assert!(html.contains(&needle), "figure {name} shown as {text:?}");
    }
    for (name, points) in json["charts"].as_object().unwrap() {
        let start = html.find(&format!("<svg data-chart=\"{name}\" role=\"img\" aria-label=")).unwrap();
        let svg = &html[start..start + html[start..].find("</svg>").unwrap()];
        assert_eq!(svg.matches("class=\"point\"").count(), points.as_array().unwrap().len(), "chart {name}");
    }
}

fn count(f: &Fixture, flag: StatusFlag, account: Option<&str>) -> i64 {
    f.identities.iter().filter(|i| i.status.contains(&flag) && account.is_none_or(|a| i.account == a)).count() as i64
}

fn fig(r: &Report, name: &str) -> serde_json::Value {
    serde_json::to_value(&r.figures[name]).unwrap()
}

#[test]
fn history_holds_exactly_the_updates_the_processor_emitted() {
    let f = fixture();
    let store = RocksStore::open_read_only(&f.state).unwrap();
    let mut n = 0u64;
    let mut by_arn: BTreeMap<String, Vec<(EventTime, history::PciPoint)>> = BTreeMap::new();
    history::scan_all(&store, &mut |arn, t, p| {
        n += 1;
        by_arn.entry(arn.to_string()).or_default().push((t, p));
        true
    })
    .unwrap();
    // One key per (identity, window): as many as emitted means none emitted twice (by two shards).
    assert_eq!(n, f.pci_updates);
    assert!(n > 0);
    // Points are at window boundaries (UTC midnights).
    assert!(by_arn.values().flatten().all(|(t, _)| t.millis() % 86_400_000 == 0));
    drop(store);

    // The whole history in the window: the report counts every point.
    let (first, last) =
        by_arn.values().flatten().fold((i64::MAX, i64::MIN), |(a, b), (t, _)| (a.min(t.millis()), b.max(t.millis())));
    let r = report(
        Kind::PciHistory,
        Filters { from: Some(EventTime(first)), to: Some(EventTime(last)), ..Default::default() },
    );
    assert_eq!(fig(&r, "points_in_window"), n);
    assert_eq!(fig(&r, "days"), (last - first) / 86_400_000 + 1);
    assert_eq!(r.charts["pci_all"].len() as i64, (last - first) / 86_400_000 + 1);

    // An identity's chart is its recorded points; an account's last day is the mean of its acting
    // identities' latest points, computed here independently.
    let (arn, series) = by_arn.iter().max_by_key(|(_, v)| v.len()).unwrap();
    let r = report(
        Kind::PciHistory,
        Filters { identity: Some(arn.clone()), from: Some(EventTime(first)), ..Default::default() },
    );
    let chart: Vec<f64> = r.charts["pci_identity"].iter().map(|p| p.y).collect();
    let recorded: Vec<f64> = series.iter().map(|(_, p)| f64::from(p.score)).collect();
    assert_eq!(chart, recorded);

    let account = &series[0].1.account;
    let r = report(Kind::PciHistory, Filters { account: Some(account.clone()), ..Default::default() });
    let mut scores = Vec::new();
    for pts in by_arn.values() {
        let Some((_, p)) = pts.iter().rev().find(|(t, _)| t.millis() <= last) else { continue };
        if &p.account == account && history::acts(p.kind) {
            scores.push(u64::from(p.score));
        }
    }
    let mean = ((scores.iter().sum::<u64>() as f64) / (scores.len() as f64)).round() as i64;
    let day = EventTime(last).date_string();
    let row = r.tables[0].rows.iter().find(|row| row[0].text() == day && row[1].text() == "account").unwrap();
    assert_eq!(row[3].text(), mean.to_string(), "{row:?}");
    assert_eq!(row[5].text(), scores.len().to_string());
    assert_eq!(r.charts["pci_all"].last().unwrap().y, mean as f64, "one account: all = the account");
}

#[test]
fn permissions_analytics_counts_what_identities_jsonl_says() {
    let f = fixture();
    let r = report(Kind::PermissionsAnalytics, Filters::default());
    assert_eq!(fig(&r, "identities"), f.identities.len());
    assert_eq!(fig(&r, "super_identities"), count(f, StatusFlag::SuperIdentity, None));
    assert_eq!(fig(&r, "inactive"), count(f, StatusFlag::Inactive, None));
    assert_eq!(fig(&r, "over_provisioned"), count(f, StatusFlag::OverProvisioned, None));
    let unused_keys: usize = f.identities.iter().map(|i| i.unused_access_keys.len()).sum();
    assert_eq!(fig(&r, "unused_access_keys"), unused_keys);
    assert_eq!(r.tables[0].rows.len(), f.identities.iter().filter(|i| !i.status.is_empty()).count());

    // --account: the account's own counts, as accounts.json has them.
    let accounts: grantwatch_types::AccountsReport =
        serde_json::from_str(&std::fs::read_to_string(f.out.join("accounts.json")).unwrap()).unwrap();
    let a = &accounts.accounts[0];
    let r = report(Kind::PermissionsAnalytics, Filters { account: Some(a.account.clone()), ..Default::default() });
    assert_eq!(fig(&r, "identities"), a.identities);
    assert_eq!(fig(&r, "super_identities"), a.super_identities);
    assert_eq!(fig(&r, "over_provisioned"), a.over_provisioned);
    assert_eq!(fig(&r, "inactive"), a.inactive);
}

#[test]
fn groups_roles_keys_and_cross_account_match_the_results() {
    let f = fixture();
    let r = report(Kind::Groups, Filters::default());
    assert_eq!(fig(&r, "groups"), f.identities.iter().filter(|i| i.kind == IdentityKind::Group).count());
    let r = report(Kind::RolesPolicies, Filters::default());
    let roles: Vec<&IdentityFinding> =
        f.identities.iter().filter(|i| matches!(i.kind, IdentityKind::Role | IdentityKind::ServiceAccount)).collect();
    assert_eq!(fig(&r, "roles"), roles.len());
    assert_eq!(fig(&r, "used"), roles.iter().filter(|i| i.events_in_lookback > 0).count());
    let r = report(Kind::CrossAccount, Filters::default());
    let lines = std::fs::read_to_string(f.out.join("resource_access.jsonl")).unwrap().lines().count();
    assert_eq!(fig(&r, "entries"), lines);
    let r = report(Kind::AccessKeys, Filters::default());
    let unused: usize = f.identities.iter().map(|i| i.unused_access_keys.len()).sum();
    assert!(fig(&r, "unused").as_u64().unwrap() >= unused as u64);
    assert_eq!(
        fig(&r, "access_keys").as_u64().unwrap(),
        fig(&r, "used").as_u64().unwrap() + fig(&r, "unused").as_u64().unwrap()
    );
    assert_eq!(
        r.charts["age_buckets"].iter().map(|p| p.y).sum::<f64>() as u64,
        fig(&r, "access_keys").as_u64().unwrap()
    );
}

#[test]
fn identity_and_alert_reports_and_their_errors() {
    let f = fixture();
    // The alert: its figures are the alert's; its timeline is the identity's days around it.
    let a = &f.alerts[0];
    let r = report(Kind::Alert, Filters { alert: Some(a.finding_info.uid.clone()), ..Default::default() });
    assert_eq!(fig(&r, "severity"), a.severity.as_str());
    assert_eq!(fig(&r, "identity"), a.actor.user.uid.as_str());
    assert_eq!(fig(&r, "triggering_events"), a.finding_info.related_events.len());
    assert_eq!(r.charts["daily_events"].len(), 15, "seven days either side");
    let related = f
        .alerts
        .iter()
        .filter(|x| {
            x.actor.user.uid == a.actor.user.uid
                && x.finding_info.uid != a.finding_info.uid
                && (x.time - a.time).abs() <= 7 * 86_400_000
        })
        .map(|x| &x.finding_info.uid)
        .collect::<std::collections::BTreeSet<_>>();
    assert_eq!(fig(&r, "related_alerts"), related.len());

    // The identity with the most alerts: its figures, and its alerts linked.
    let mut per: BTreeMap<&str, usize> = BTreeMap::new();
    for x in &f.alerts {
        *per.entry(x.actor.user.uid.as_str()).or_default() += 1;
    }
    let (arn, n) =
        per.into_iter().filter(|(u, _)| f.identities.iter().any(|i| i.arn == *u)).max_by_key(|x| x.1).unwrap();
    let i = f.identities.iter().find(|i| i.arn == arn).unwrap();
    let r = report(Kind::Identity, Filters { identity: Some(arn.to_string()), ..Default::default() });
    assert_eq!(fig(&r, "pci"), i.pci.score);
    assert_eq!(fig(&r, "alerts"), n);
    let alerts = r.tables.iter().find(|t| t.name == "alerts").unwrap();
    assert_eq!(alerts.rows.len(), n);

    let err = |kind: Kind, filters: Filters| {
        grantwatch::report::run(&ReportOptions {
            kind,
            state: f.state.clone(),
            results: Some(f.out.clone()),
            filters,
            out: tempfile::tempdir().unwrap().path().to_path_buf(),
            formats: vec![Format::Json],
            page_size: 10,
        })
        .map(|_| ())
        .unwrap_err()
        .chain()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
    };
    let e = err(Kind::Identity, Filters { identity: Some("arn:aws:iam::1:user/nobody".into()), ..Default::default() });
    assert!(e.contains("no identity \"arn:aws:iam::1:user/nobody\""), "{e}");
    let e = err(Kind::Alert, Filters { alert: Some("ffffffffnotanalert".into()), ..Default::default() });
    assert!(e.contains("no alert"), "{e}");
    let e = err(Kind::Identity, Filters::default());
    assert!(e.contains("needs --identity"), "{e}");
    let old = EventTime::parse_rfc3339("1990-01-01T00:00:00Z").unwrap();
    let e = err(
        Kind::PciHistory,
        Filters { from: Some(old), to: Some(EventTime(old.millis() + 5 * 86_400_000)), ..Default::default() },
    );
    assert!(e.contains("nothing in the window"), "{e}");
}

#[test]
fn a_past_to_reads_flags_from_the_history() {
    let f = fixture();
    let store = RocksStore::open_read_only(&f.state).unwrap();
    let mut times = Vec::new();
    history::scan_all(&store, &mut |_, t, _| {
        times.push(t);
        true
    })
    .unwrap();
    drop(store);
    times.sort();
    let mid = times[times.len() / 2];
    let r = report(Kind::PermissionsAnalytics, Filters { to: Some(mid), ..Default::default() });
    assert_eq!(fig(&r, "as_of"), mid.to_rfc3339());
    // Independently: each identity's latest point at or before `mid`.
    let store = RocksStore::open_read_only(&f.state).unwrap();
    let mut latest: BTreeMap<String, history::PciPoint> = BTreeMap::new();
    history::scan_all(&store, &mut |arn, t, p| {
        if t <= mid {
            latest.insert(arn.to_string(), p);
        }
        true
    })
    .unwrap();
    assert_eq!(fig(&r, "identities"), latest.len());
    assert_eq!(
        fig(&r, "super_identities"),
        latest.values().filter(|p| p.status.contains(&StatusFlag::SuperIdentity)).count()
    );
}

/// With `--no-detect` analyze still closes windows and records the history.
#[test]
fn history_is_recorded_without_detection() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = AnalyzeOptions::new(dir.path().join("out"));
    o.iam = vec![repo().join("samples/iam")];
    o.cloudtrail = vec![repo().join("samples/cloudtrail").into()];
    o.state = Some(dir.path().join("state"));
    o.progress = false;
    run(&o).unwrap();
    let store = RocksStore::open_read_only(&dir.path().join("state")).unwrap();
    let all = history::all_series(&store, EventTime(0), EventTime(i64::MAX)).unwrap();
    assert!(all.len() > 10, "{} identities with history", all.len());
    let dir_recorded = grantwatch::report::recorded_results(&store).unwrap().unwrap();
    assert_eq!(dir_recorded, std::path::absolute(dir.path().join("out")).unwrap());
}
