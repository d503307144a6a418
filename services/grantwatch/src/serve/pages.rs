//! The pages that are not reports: the chrome around every page, the identities list and the alerts list
//! (filters as a GET form, server-side sort and pages). Every value from the data goes through [`esc`].
//! The lists follow the report conventions (`data-figure`, `data-link`) so the browser tests read them
//! the same way, and their JSON has the same top-level `figures` and `charts`.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use grantwatch_report::Kind;
use grantwatch_types::{IdentityFinding, PciBand, StatusFlag};
use serde_json::json;

use super::data::Snapshot;
use super::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, PageError, Params};

pub(super) use grantwatch_report::render::esc;

/// A list page: its HTML body and its JSON.
pub(super) struct Page {
    pub(super) title: String,
    pub(super) html: String,
    pub(super) json: serde_json::Value,
}

/// Extra CSS for the chrome (navigation, filter form, error text) on top of the reports' stylesheet.
const CSS: &str = r#"
header.top{background:#16324f;color:#fff;padding:.5rem 1.5rem;display:flex;gap:1.2rem;align-items:center;flex-wrap:wrap}
header.top a{color:#fff;text-decoration:none;font-weight:600}header.top a:hover,header.top a:focus{text-decoration:underline}
header.top .brand{font-size:1.1rem;margin-right:1rem}header.top .json{margin-left:auto;font-weight:400}
form.filters{display:flex;flex-wrap:wrap;gap:.6rem 1rem;align-items:flex-end;margin:.5rem 0 1rem;padding:.6rem;border:1px solid #c8ccd2;border-radius:4px}
form.filters label{display:flex;flex-direction:column;font-size:.8rem;color:#3d4451;gap:.15rem}
form.filters select,form.filters input{font:inherit;padding:.15rem .3rem;border:1px solid #5c6370;border-radius:3px;background:#fff;color:#1a1a1a}
form.filters button{font:inherit;padding:.25rem .9rem;border:1px solid #16324f;background:#16324f;color:#fff;border-radius:3px;cursor:pointer}
th a{color:#1a1a1a;text-decoration:none}th a:hover{text-decoration:underline}
nav.pages{display:flex;gap:1rem;align-items:center;margin:.5rem 0}
p.error{font-size:1.05rem;color:#8a1c1c;overflow-wrap:anywhere}
ul.kinds li{margin:.3rem 0}
#identities td,#alerts td{overflow-wrap:normal}
#identities td:first-child,#identities td:nth-child(2),#alerts td:first-child,#alerts td:nth-child(3),#alerts td:nth-child(7){overflow-wrap:anywhere}
"#;

/// The whole document around a body: the reports' CSS and JS inline, a navigation bar, a link to the
/// page's JSON (`json_query`: the query string with `format=json`; empty: none).
pub(super) fn layout(title: &str, json_query: &str, body: &str) -> String {
    let json_link = if json_query.is_empty() {
        String::new()
    } else {
        format!("<a class=\"json\" href=\"?{}\">JSON</a>", esc(json_query))
    };
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <link rel=\"icon\" href=\"data:,\">\n<title>{title} — grantwatch</title>\n<style>{css}{css2}</style>\n</head>\n<body>\n\
         <header class=\"top\"><span class=\"brand\">grantwatch</span>\
         <nav aria-label=\"Pages\" style=\"display:flex;gap:1.2rem\"><a href=\"/\">Identities</a><a href=\"/alerts\">Alerts</a>\
         <a href=\"/pci\">PCI trends</a><a href=\"/reports\">Reports</a></nav>{json_link}</header>\n\
         <main>\n{body}</main>\n<script>{js}</script>\n</body>\n</html>\n",
        title = esc(title),
        css = grantwatch_report::render::CSS,
        css2 = CSS,
        js = grantwatch_report::render::JS,
    )
}

pub(super) fn reports_index() -> String {
    let mut o = String::from(
        "<h1>Reports</h1>\n<p>Each report takes the filters of <code>grantwatch report</code> as query parameters: <code>from</code>, <code>to</code> (RFC 3339 event time), <code>account</code>, <code>identity</code>, <code>alert</code>; and <code>format=json</code>.</p>\n<ul class=\"kinds\">\n",
    );
    for k in Kind::ALL {
        let note = match k {
            Kind::Identity => " (needs <code>identity</code>; or open one from the identities list)",
            Kind::Alert => " (needs <code>alert</code>; or open one from the alerts list)",
            _ => "",
        };
        let _ = writeln!(
            o,
            "<li><a data-link=\"report\" href=\"/reports/{k}\">{t}</a>{note}</li>",
            k = k.as_str(),
            t = esc(k.title())
        );
    }
    o.push_str("</ul>\n");
    o
}

/// Percent-encodes a path segment (everything but unreserved characters).
pub(super) fn pct(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            o.push(char::from(b));
        } else {
            let _ = write!(o, "%{b:02X}");
        }
    }
    o
}

fn band(b: PciBand) -> &'static str {
    match b {
        PciBand::Low => "low",
        PciBand::Medium => "medium",
        PciBand::High => "high",
    }
}

fn flag(f: StatusFlag) -> &'static str {
    match f {
        StatusFlag::Inactive => "inactive",
        StatusFlag::OverProvisioned => "over_provisioned",
        StatusFlag::SuperIdentity => "super_identity",
        StatusFlag::EscalationPath => "escalation_path",
    }
}

const FLAGS: [StatusFlag; 4] =
    [StatusFlag::SuperIdentity, StatusFlag::OverProvisioned, StatusFlag::Inactive, StatusFlag::EscalationPath];
const BANDS: [PciBand; 3] = [PciBand::High, PciBand::Medium, PciBand::Low];

/// A `<select>` of `name` with "any" first; the current value selected.
fn select(o: &mut String, name: &str, label: &str, options: &[(String, String)], current: Option<&str>) {
    let _ =
        write!(o, "<label>{}<select name=\"{n}\" id=\"f-{n}\"><option value=\"\">any</option>", esc(label), n = name);
    for (v, text) in options {
        let sel = if current == Some(v.as_str()) { " selected" } else { "" };
        let _ = write!(o, "<option value=\"{}\"{sel}>{}</option>", esc(v), esc(text));
    }
    o.push_str("</select></label>\n");
}

fn figures_html(o: &mut String, figures: &BTreeMap<&str, i64>, labels: &[(&str, &str)]) {
    o.push_str("<section aria-labelledby=\"figures-h\">\n<h2 id=\"figures-h\">Counts</h2>\n<dl class=\"figures\">\n");
    for (name, label) in labels {
        if let Some(v) = figures.get(name) {
            let _ = writeln!(
                o,
                "<div><dt id=\"fig-{name}\">{}</dt><dd data-figure=\"{name}\" aria-labelledby=\"fig-{name}\">{v}</dd></div>",
                esc(label)
            );
        }
    }
    o.push_str("</dl>\n</section>\n");
}

/// A pager: previous / next links that keep the filters.
fn pager(o: &mut String, p: &Params, path: &str, page: usize, pages: usize, rows: usize) {
    o.push_str("<nav class=\"pages\" aria-label=\"Pages\">");
    if page > 1 {
        let q = p.encode_without(&["page"], &[("page", (page - 1).to_string())]);
        let _ = write!(o, "<a rel=\"prev\" href=\"{path}?{}\">Previous</a>", esc(&q));
    }
    let _ = write!(o, "<span>Page {page} of {pages} ({rows} rows)</span>");
    if page < pages {
        let q = p.encode_without(&["page"], &[("page", (page + 1).to_string())]);
        let _ = write!(o, "<a rel=\"next\" href=\"{path}?{}\">Next</a>", esc(&q));
    }
    o.push_str("</nav>\n");
}

/// A sortable column header: a link that sorts by `key` (descending first for numbers), the current
/// sort marked with `aria-sort`.
fn sort_header(o: &mut String, p: &Params, path: &str, label: &str, key: &str, cur: (&str, bool)) {
    let (sort, desc) = cur;
    let next_desc = if sort == key { !desc } else { NUMERIC.contains(&key) };
    let q = p.encode_without(
        &["sort", "dir", "page"],
        &[("sort", key.into()), ("dir", if next_desc { "desc" } else { "asc" }.into())],
    );
    let aria = if sort == key {
        format!(" aria-sort=\"{}\"", if desc { "descending" } else { "ascending" })
    } else {
        String::new()
    };
    let _ =
        write!(o, "<th scope=\"col\"{aria}><a data-sort=\"{key}\" href=\"{path}?{}\">{}</a></th>", esc(&q), esc(label));
}

const NUMERIC: &[&str] = &["pci", "events", "alerts", "granted", "count", "time", "last_activity"];

fn sort_param<'a>(
    p: &'a Params,
    keys: &[&str],
    default: &'a str,
    default_desc: bool,
) -> Result<(&'a str, bool), PageError> {
    let sort = p.get("sort").unwrap_or(default);
    if !keys.contains(&sort) {
        return Err(PageError::bad_request(format!("sort={sort:?}: expected one of {}", keys.join(", "))));
    }
    let desc = match p.get("dir") {
        None => {
            if p.get("sort").is_none() {
                default_desc
            } else {
                NUMERIC.contains(&sort)
            }
        }
        Some("asc") => false,
        Some("desc") => true,
        Some(d) => return Err(PageError::bad_request(format!("dir={d:?}: expected asc or desc"))),
    };
    Ok((sort, desc))
}

/// Checks a filter value against the values the data has, so a typo is a 400 that lists them rather
/// than an empty page.
fn one_of<'a>(
    p: &'a Params,
    k: &str,
    known: impl Iterator<Item = &'a str> + Clone,
) -> Result<Option<&'a str>, PageError> {
    match p.get(k) {
        None => Ok(None),
        Some(v) if known.clone().any(|x| x == v) => Ok(Some(v)),
        Some(v) => {
            let list: Vec<&str> = known.take(20).collect();
            Err(PageError::bad_request(format!(
                "{k}={v:?}: not one of the values in the results ({})",
                list.join(", ")
            )))
        }
    }
}

fn paging(p: &Params, total: usize) -> Result<(usize, usize, usize), PageError> {
    let size = p.number("page_size", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)?;
    let pages = total.div_ceil(size).max(1);
    let page = p.number("page", 1, 1, usize::MAX)?;
    if page > pages {
        return Err(PageError::not_found(format!("page {page}: there are {pages} pages of {size} rows")));
    }
    Ok((size, page, pages))
}

// ---- identities ---------------------------------------------------------------------------------------------

pub(super) const IDENTITY_PARAMS: &[&str] =
    &["cloud", "account", "band", "flag", "kind", "q", "sort", "dir", "page", "page_size"];
const IDENTITY_SORTS: &[&str] =
    &["arn", "name", "kind", "cloud", "account", "pci", "events", "last_activity", "alerts"];

/// `/`: the identities of analyze's results, filtered, sorted and paged on the server.
pub(super) fn identities(snap: &Snapshot, p: &Params) -> Result<Page, PageError> {
    let l = &snap.loaded;
    let ids = &l.results.identities;
    let cloud = one_of(p, "cloud", l.clouds.iter().map(String::as_str))?;
    let account = one_of(p, "account", l.accounts.iter().map(String::as_str))?;
    let band_f = one_of(p, "band", BANDS.iter().map(|b| band(*b)))?;
    let flag_f = one_of(p, "flag", FLAGS.iter().map(|f| flag(*f)))?;
    let kinds: std::collections::BTreeSet<&str> = ids.iter().map(|i| i.kind.as_str()).collect();
    let kind_f = one_of(p, "kind", kinds.iter().copied())?;
    let q = p.get("q").map(str::to_lowercase);
    let (sort, desc) = sort_param(p, IDENTITY_SORTS, "pci", true)?;
    let alerts_of = |i: &IdentityFinding| l.alerts_per_identity.get(&i.arn).copied().unwrap_or(0);

    let mut rows: Vec<&IdentityFinding> = ids
        .iter()
        .filter(|i| cloud.is_none_or(|c| i.cloud.as_str() == c))
        .filter(|i| account.is_none_or(|a| i.account == a))
        .filter(|i| band_f.is_none_or(|b| band(i.pci.band) == b))
        .filter(|i| flag_f.is_none_or(|f| i.status.iter().any(|s| flag(*s) == f)))
        .filter(|i| kind_f.is_none_or(|k| i.kind.as_str() == k))
        .filter(|i| q.as_ref().is_none_or(|q| i.arn.to_lowercase().contains(q) || i.name.to_lowercase().contains(q)))
        .collect();
    let key = |a: &IdentityFinding, b: &IdentityFinding| -> Ordering {
        match sort {
            "name" => a.name.cmp(&b.name),
            "kind" => a.kind.as_str().cmp(b.kind.as_str()),
            "cloud" => a.cloud.as_str().cmp(b.cloud.as_str()),
            "account" => a.account.cmp(&b.account),
            "pci" => a.pci.score.cmp(&b.pci.score),
            "events" => a.events_in_lookback.cmp(&b.events_in_lookback),
            "last_activity" => a.last_activity.cmp(&b.last_activity),
            "alerts" => alerts_of(a).cmp(&alerts_of(b)),
            _ => Ordering::Equal,
        }
    };
    // The ARN breaks ties (always ascending), so pages never overlap or skip a row.
    rows.sort_by(|a, b| {
        let o = key(a, b);
        (if desc { o.reverse() } else { o }).then_with(|| a.arn.cmp(&b.arn))
    });

    let (size, page, pages) = paging(p, rows.len())?;
    let shown = &rows[((page - 1) * size).min(rows.len())..(page * size).min(rows.len())];
    let mut figures: BTreeMap<&str, i64> = BTreeMap::new();
    let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
    figures.insert("identities", n(ids.len()));
    figures.insert("matching", n(rows.len()));
    figures.insert("rows_on_page", n(shown.len()));
    figures.insert("page", n(page));
    figures.insert("pages", n(pages));
    for b in BANDS {
        figures.insert(
            match b {
                PciBand::High => "pci_high",
                PciBand::Medium => "pci_medium",
                PciBand::Low => "pci_low",
            },
            n(rows.iter().filter(|i| i.pci.band == b).count()),
        );
    }
    for f in FLAGS {
        figures.insert(flag(f), n(rows.iter().filter(|i| i.status.contains(&f)).count()));
    }

    let json_rows: Vec<serde_json::Value> = shown
        .iter()
        .map(|i| {
            json!({
                "arn": i.arn, "name": i.name, "kind": i.kind.as_str(), "cloud": i.cloud.as_str(), "account": i.account,
                "pci": i.pci.score, "band": band(i.pci.band), "status": i.status.iter().map(|s| flag(*s)).collect::<Vec<_>>(),
                "events_in_lookback": i.events_in_lookback, "last_activity": i.last_activity.map(|t| t.to_rfc3339()),
                "alerts": alerts_of(i), "href": format!("/identity/{}", pct(&i.arn)),
            })
        })
        .collect();
    let json = json!({
        "schema": "grantwatch.serve.identities.v1",
        "figures": figures,
        "charts": {},
        "filters": {"cloud": cloud, "account": account, "band": band_f, "flag": flag_f, "kind": kind_f, "q": p.get("q"),
                    "sort": sort, "dir": if desc { "desc" } else { "asc" }, "page_size": size},
        "rows": json_rows,
    });

    let mut o = String::from("<h1>Identities</h1>\n");
    o.push_str("<form class=\"filters\" method=\"get\" action=\"/\" aria-label=\"Filter identities\">\n");
    let opts =
        |set: &std::collections::BTreeSet<String>| set.iter().map(|s| (s.clone(), s.clone())).collect::<Vec<_>>();
    select(&mut o, "cloud", "Cloud", &opts(&l.clouds), cloud);
    select(&mut o, "account", "Account", &opts(&l.accounts), account);
    let band_opts: Vec<(String, String)> = BANDS.iter().map(|b| (band(*b).to_string(), band(*b).to_string())).collect();
    select(&mut o, "band", "PCI band", &band_opts, band_f);
    let flag_opts: Vec<(String, String)> =
        FLAGS.iter().map(|f| (flag(*f).to_string(), flag(*f).replace('_', " "))).collect();
    select(&mut o, "flag", "Status flag", &flag_opts, flag_f);
    let kind_opts: Vec<(String, String)> = kinds.iter().map(|k| (k.to_string(), k.to_string())).collect();
    select(&mut o, "kind", "Kind", &kind_opts, kind_f);
    let _ = writeln!(
        o,
        "<label>Name or ARN contains<input type=\"search\" name=\"q\" id=\"f-q\" value=\"{}\" maxlength=\"256\"></label>",
        esc(p.get("q").unwrap_or(""))
    );
    let _ = writeln!(
        o,
        "<label>Rows per page<input type=\"number\" name=\"page_size\" id=\"f-page_size\" min=\"1\" max=\"{MAX_PAGE_SIZE}\" value=\"{size}\"></label>"
    );
    // The sort survives a new filter; the page does not (page 1 of the new set).
    for k in ["sort", "dir"] {
        if let Some(v) = p.get(k) {
            let _ = writeln!(o, "<input type=\"hidden\" name=\"{k}\" value=\"{}\">", esc(v));
        }
    }
    o.push_str("<button type=\"submit\" id=\"apply\">Apply</button> <a href=\"/\">Clear</a>\n</form>\n");
    let labels = [
        ("matching", "identities matching"),
        ("identities", "identities in all"),
        ("rows_on_page", "rows on this page"),
        ("pci_high", "PCI high"),
        ("pci_medium", "PCI medium"),
        ("pci_low", "PCI low"),
        ("super_identity", "super identities"),
        ("over_provisioned", "over-provisioned"),
        ("inactive", "inactive"),
        ("escalation_path", "escalation path"),
        ("page", "page"),
        ("pages", "pages"),
    ];
    figures_html(&mut o, &figures, &labels);
    o.push_str("<section aria-labelledby=\"ids-h\">\n<h2 id=\"ids-h\">Identities</h2>\n");
    pager(&mut o, p, "/", page, pages, rows.len());
    let _ = write!(
        o,
        "<table id=\"identities\" data-table=\"identities\" data-rows=\"{}\">\n<caption>Identities, sorted by {} ({})</caption>\n<thead><tr>",
        rows.len(),
        esc(sort),
        if desc { "descending" } else { "ascending" }
    );
    for (label, k) in [
        ("Identity", "arn"),
        ("Name", "name"),
        ("Kind", "kind"),
        ("Cloud", "cloud"),
        ("Account", "account"),
        ("PCI", "pci"),
    ] {
        sort_header(&mut o, p, "/", label, k, (sort, desc));
    }
    o.push_str("<th scope=\"col\">Band</th><th scope=\"col\">Status</th>");
    for (label, k) in [("Events", "events"), ("Last activity", "last_activity"), ("Alerts", "alerts")] {
        sort_header(&mut o, p, "/", label, k, (sort, desc));
    }
    o.push_str("</tr></thead>\n<tbody>\n");
    for i in shown {
        let _ = writeln!(
            o,
            "<tr data-row><td><a data-link=\"identity\" href=\"/identity/{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td class=\"pci\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&pct(&i.arn)),
            esc(&i.arn),
            esc(&i.name),
            esc(i.kind.as_str()),
            esc(i.cloud.as_str()),
            esc(&i.account),
            i.pci.score,
            band(i.pci.band),
            esc(&i.status.iter().map(|s| flag(*s)).collect::<Vec<_>>().join(" ")),
            i.events_in_lookback,
            esc(&i.last_activity.map(|t| t.to_rfc3339()).unwrap_or_default()),
            alerts_of(i)
        );
    }
    if shown.is_empty() {
        o.push_str("<tr><td colspan=\"11\">No identity matches these filters.</td></tr>\n");
    }
    o.push_str("</tbody>\n</table>\n");
    pager(&mut o, p, "/", page, pages, rows.len());
    o.push_str("</section>\n");
    Ok(Page { title: "Identities".into(), html: o, json })
}

// ---- alerts -------------------------------------------------------------------------------------------------

pub(super) const ALERT_PARAMS: &[&str] =
    &["severity", "analytic", "cloud", "identity", "sort", "dir", "page", "page_size"];
const ALERT_SORTS: &[&str] = &["time", "severity", "analytic", "identity", "count"];

/// `/alerts`: one row per alert (the latest record of its uid), filtered, sorted and paged.
pub(super) fn alerts(snap: &Snapshot, p: &Params) -> Result<Page, PageError> {
    let l = &snap.loaded;
    let severity = one_of(p, "severity", l.severities.iter().map(String::as_str))?;
    let analytic = one_of(p, "analytic", l.analytics.iter().map(String::as_str))?;
    let clouds: std::collections::BTreeSet<&str> =
        l.alerts.iter().map(|i| l.alert(*i).cloud.provider.as_str()).collect();
    let cloud = one_of(p, "cloud", clouds.iter().copied())?;
    let identity = p.get("identity");
    let (sort, desc) = sort_param(p, ALERT_SORTS, "time", true)?;
    let mut rows: Vec<usize> = l
        .alerts
        .iter()
        .copied()
        .filter(|i| {
            let a = l.alert(*i);
            severity.is_none_or(|s| a.severity == s)
                && analytic.is_none_or(|x| a.finding_info.analytic.uid == x)
                && cloud.is_none_or(|c| a.cloud.provider.as_str() == c)
                && identity.is_none_or(|u| a.actor.user.uid == u)
        })
        .collect();
    rows.sort_by(|x, y| {
        let (a, b) = (l.alert(*x), l.alert(*y));
        let o = match sort {
            "time" => a.time.cmp(&b.time),
            "severity" => a.severity_id.cmp(&b.severity_id),
            "analytic" => a.finding_info.analytic.uid.cmp(&b.finding_info.analytic.uid),
            "identity" => a.actor.user.uid.cmp(&b.actor.user.uid),
            "count" => a.count.cmp(&b.count),
            _ => Ordering::Equal,
        };
        (if desc { o.reverse() } else { o }).then_with(|| a.finding_info.uid.cmp(&b.finding_info.uid))
    });
    let (size, page, pages) = paging(p, rows.len())?;
    let shown = &rows[((page - 1) * size).min(rows.len())..(page * size).min(rows.len())];
    let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
    let mut figures: BTreeMap<&str, i64> = BTreeMap::new();
    figures.insert("alerts", n(l.alerts.len()));
    figures.insert("matching", n(rows.len()));
    figures.insert("rows_on_page", n(shown.len()));
    figures.insert("page", n(page));
    figures.insert("pages", n(pages));
    let mut by_sev: BTreeMap<String, i64> = BTreeMap::new();
    for i in &rows {
        *by_sev.entry(format!("severity_{}", l.alert(*i).severity.to_lowercase())).or_default() += 1;
    }
    let json_rows: Vec<serde_json::Value> = shown
        .iter()
        .map(|i| {
            let a = l.alert(*i);
            json!({"uid": a.finding_info.uid, "time": a.time_dt.to_rfc3339(), "title": a.finding_info.title,
                   "severity": a.severity, "analytic": a.finding_info.analytic.uid, "cloud": a.cloud.provider.as_str(),
                   "identity": a.actor.user.uid, "count": a.count, "href": format!("/alert/{}", pct(&a.finding_info.uid))})
        })
        .collect();
    let mut all_figures: BTreeMap<String, i64> = figures.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    all_figures.extend(by_sev.clone());
    let json = json!({
        "schema": "grantwatch.serve.alerts.v1",
        "figures": all_figures,
        "charts": {},
        "filters": {"severity": severity, "analytic": analytic, "cloud": cloud, "identity": identity,
                    "sort": sort, "dir": if desc { "desc" } else { "asc" }, "page_size": size},
        "rows": json_rows,
    });

    let mut o = String::from(
        "<h1>Alerts</h1>\n<form class=\"filters\" method=\"get\" action=\"/alerts\" aria-label=\"Filter alerts\">\n",
    );
    let opts = |it: &mut dyn Iterator<Item = &str>| it.map(|s| (s.to_string(), s.to_string())).collect::<Vec<_>>();
    select(&mut o, "severity", "Severity", &opts(&mut l.severities.iter().map(String::as_str)), severity);
    select(&mut o, "analytic", "Analytic", &opts(&mut l.analytics.iter().map(String::as_str)), analytic);
    select(&mut o, "cloud", "Cloud", &opts(&mut clouds.iter().copied()), cloud);
    let _ = writeln!(
        o,
        "<label>Identity (uid)<input type=\"search\" name=\"identity\" id=\"f-identity\" value=\"{}\" maxlength=\"2048\"></label>",
        esc(identity.unwrap_or(""))
    );
    let _ = writeln!(
        o,
        "<label>Rows per page<input type=\"number\" name=\"page_size\" id=\"f-page_size\" min=\"1\" max=\"{MAX_PAGE_SIZE}\" value=\"{size}\"></label>"
    );
    o.push_str("<button type=\"submit\" id=\"apply\">Apply</button> <a href=\"/alerts\">Clear</a>\n</form>\n");
    let mut fig_html: BTreeMap<&str, i64> = figures.clone();
    let sev_keys: Vec<(String, i64)> = by_sev.into_iter().collect();
    for (k, v) in &sev_keys {
        fig_html.insert(k.as_str(), *v);
    }
    let mut labels: Vec<(&str, &str)> =
        vec![("matching", "alerts matching"), ("alerts", "alerts in all"), ("rows_on_page", "rows on this page")];
    labels.extend(sev_keys.iter().map(|(k, _)| (k.as_str(), k.as_str())));
    labels.extend([("page", "page"), ("pages", "pages")]);
    figures_html(&mut o, &fig_html, &labels);
    o.push_str("<section aria-labelledby=\"alerts-h\">\n<h2 id=\"alerts-h\">Alerts</h2>\n");
    pager(&mut o, p, "/alerts", page, pages, rows.len());
    let _ = write!(
        o,
        "<table id=\"alerts\" data-table=\"alerts\" data-rows=\"{}\">\n<caption>Alerts</caption>\n<thead><tr>",
        rows.len()
    );
    o.push_str("<th scope=\"col\">Alert</th>");
    sort_header(&mut o, p, "/alerts", "Time", "time", (sort, desc));
    o.push_str("<th scope=\"col\">Title</th>");
    sort_header(&mut o, p, "/alerts", "Severity", "severity", (sort, desc));
    sort_header(&mut o, p, "/alerts", "Analytic", "analytic", (sort, desc));
    o.push_str("<th scope=\"col\">Cloud</th>");
    sort_header(&mut o, p, "/alerts", "Identity", "identity", (sort, desc));
    sort_header(&mut o, p, "/alerts", "Count", "count", (sort, desc));
    o.push_str("</tr></thead>\n<tbody>\n");
    for i in shown {
        let a = l.alert(*i);
        let _ = writeln!(
            o,
            "<tr data-row><td><a data-link=\"alert\" href=\"/alert/{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td><a data-link=\"identity\" href=\"/identity/{}\">{}</a></td><td>{}</td></tr>",
            esc(&pct(&a.finding_info.uid)),
            esc(&a.finding_info.uid),
            esc(&a.time_dt.to_rfc3339()),
            esc(&a.finding_info.title),
            esc(&a.severity),
            esc(&a.finding_info.analytic.uid),
            esc(a.cloud.provider.as_str()),
            esc(&pct(&a.actor.user.uid)),
            esc(&a.actor.user.uid),
            a.count
        );
    }
    if shown.is_empty() {
        o.push_str("<tr><td colspan=\"8\">No alert matches these filters.</td></tr>\n");
    }
    o.push_str("</tbody>\n</table>\n");
    pager(&mut o, p, "/alerts", page, pages, rows.len());
    o.push_str("</section>\n");
    Ok(Page { title: "Alerts".into(), html: o, json })
}
