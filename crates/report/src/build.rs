//! The builders: (state, results, filters) → [`Report`]. No IO but the state reads; no clock (every
//! "now" is analyze's `as_of` or a filter's time).
//!
//! Every builder is one pass over its inputs with hash lookups, never a join of all identities against
//! all of something else: 5,000 identities over 90 days is ~450,000 history points, read once.

use std::collections::{BTreeMap, BTreeSet};

use grantwatch_core::history::{self, PciPoint};
use grantwatch_state::{StateError, StateRead, Table as StateTable, keys};
use grantwatch_types::{
    Cloud, DetectionFinding, EventTime, IdentityFinding, IdentityKind, MS_PER_DAY, PciBand, StatusFlag,
};
use rustc_hash::FxHashMap;

use crate::model::{Cell, Chart, ChartKind, Kind, Point, Report, Scope, Table};
use crate::results::Results;

/// Why a report could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("the {0} report needs --identity (an identity ARN, or a name that is unique)")]
    NeedsIdentity(&'static str),
    #[error("the alert report needs --alert (an alert uid from alerts.jsonl, or a unique prefix of one)")]
    NeedsAlert,
    #[error("no identity {0:?} in identities.jsonl (give its ARN, or a name that is unique)")]
    UnknownIdentity(String),
    #[error("identity name {name:?} is ambiguous: {count} identities have it; give the ARN")]
    AmbiguousIdentity { name: String, count: usize },
    #[error("no alert {0:?} in alerts.jsonl")]
    UnknownAlert(String),
    #[error("no account {0:?} in identities.jsonl")]
    UnknownAccount(String),
    #[error("nothing in the window {from} .. {to}: {what}")]
    EmptyWindow { from: String, to: String, what: String },
    #[error("--from {from} is after --to {to}")]
    BadWindow { from: EventTime, to: EventTime },
    #[error(
        "the state holds no PCI history: run `grantwatch analyze --state DIR` with activity logs (history is \
         recorded from this version on)"
    )]
    NoHistory,
    #[error(transparent)]
    State(#[from] StateError),
}

/// What a report is restricted to.
#[derive(Debug, Clone)]
pub struct Filters {
    pub from: Option<EventTime>,
    pub to: Option<EventTime>,
    pub identity: Option<String>,
    pub account: Option<String>,
    pub alert: Option<String>,
    /// The processor's window (a day): the step of the history's series.
    pub window_ms: i64,
}

impl Default for Filters {
    fn default() -> Self {
        Filters { from: None, to: None, identity: None, account: None, alert: None, window_ms: MS_PER_DAY }
    }
}

/// Builds one report.
pub fn build(kind: Kind, state: &dyn StateRead, res: &Results, f: &Filters) -> Result<Report, BuildError> {
    if let (Some(from), Some(to)) = (f.from, f.to)
        && from > to
    {
        return Err(BuildError::BadWindow { from, to });
    }
    if let Some(a) = &f.account
        && !res.identities.iter().any(|i| &i.account == a)
    {
        return Err(BuildError::UnknownAccount(a.clone()));
    }
    let cx = Cx::new(res, f)?;
    let mut r = match kind {
        Kind::PciHistory => pci_history(state, &cx)?,
        Kind::PermissionsAnalytics => permissions_analytics(state, &cx)?,
        Kind::Identity => identity(state, &cx)?,
        Kind::AccessKeys => access_keys(state, &cx)?,
        Kind::Groups => groups(&cx),
        Kind::RolesPolicies => roles_policies(&cx),
        Kind::CrossAccount => cross_account(&cx),
        Kind::Alert => alert(state, &cx)?,
    };
    r.as_of = Some(cx.as_of);
    Ok(r)
}

/// What every builder shares: the results indexed once.
struct Cx<'a> {
    res: &'a Results,
    f: &'a Filters,
    by_arn: FxHashMap<&'a str, &'a IdentityFinding>,
    as_of: EventTime,
    /// The identity the filter names, resolved.
    identity: Option<&'a IdentityFinding>,
}

impl<'a> Cx<'a> {
    fn new(res: &'a Results, f: &'a Filters) -> Result<Self, BuildError> {
        let by_arn: FxHashMap<&str, &IdentityFinding> = res.identities.iter().map(|i| (i.arn.as_str(), i)).collect();
        let as_of = res
            .accounts
            .as_ref()
            .map(|a| a.as_of)
            .or_else(|| res.identities.iter().filter_map(|i| i.last_activity).max())
            .unwrap_or_default();
        let identity = match &f.identity {
            None => None,
            Some(id) => Some(match by_arn.get(id.as_str()) {
                Some(i) => *i,
                None => {
                    let named: Vec<&IdentityFinding> = res.identities.iter().filter(|i| &i.name == id).collect();
                    match named.len() {
                        0 => return Err(BuildError::UnknownIdentity(id.clone())),
                        1 => named[0],
                        count => return Err(BuildError::AmbiguousIdentity { name: id.clone(), count }),
                    }
                }
            }),
        };
        Ok(Cx { res, f, by_arn, as_of, identity })
    }

    fn scope(&self) -> Scope {
        Scope {
            from: self.f.from,
            to: self.f.to,
            identity: self.identity.map(|i| i.arn.clone()),
            account: self.f.account.clone(),
            alert: None,
        }
    }

    /// Whether an identity passes the account / identity filters.
    fn keeps(&self, i: &IdentityFinding) -> bool {
        self.f.account.as_ref().is_none_or(|a| &i.account == a) && self.identity.is_none_or(|x| x.arn == i.arn)
    }

    fn keeps_arn(&self, arn: &str, account: &str) -> bool {
        self.f.account.as_ref().is_none_or(|a| a == account) && self.identity.is_none_or(|x| x.arn == arn)
    }

    fn cloud_of(&self, arn: &str) -> Cloud {
        self.by_arn.get(arn).map_or_else(|| cloud_from_uid(arn), |i| i.cloud)
    }
}

/// The cloud of an identity the results do not list (deleted since): by the shape of its uid.
fn cloud_from_uid(uid: &str) -> Cloud {
    if uid.starts_with("arn:") {
        Cloud::Aws
    } else if uid.starts_with("/subscriptions/") || uid.starts_with("azure:") {
        Cloud::Azure
    } else if uid.contains("gserviceaccount.com") || uid.starts_with("gcp:") || uid.starts_with("projects/") {
        Cloud::Gcp
    } else {
        Cloud::Aws
    }
}

fn status_text(s: &[StatusFlag]) -> String {
    s.iter()
        .map(|f| match f {
            StatusFlag::Inactive => "inactive",
            StatusFlag::OverProvisioned => "over_provisioned",
            StatusFlag::SuperIdentity => "super_identity",
            StatusFlag::EscalationPath => "escalation_path",
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn band_text(b: PciBand) -> &'static str {
    match b {
        PciBand::Low => "low",
        PciBand::Medium => "medium",
        PciBand::High => "high",
    }
}

fn time_text(t: Option<EventTime>) -> String {
    t.map(EventTime::to_rfc3339).unwrap_or_default()
}

fn identity_link(i: &IdentityFinding) -> Cell {
    Cell::Link { text: i.arn.clone(), kind: Kind::Identity, id: i.arn.clone() }
}

fn pci_chart(title: impl Into<String>) -> Chart {
    Chart { title: title.into(), y_label: "PCI".into(), kind: ChartKind::Line, y_max: Some(100.0) }
}

fn bar_chart(title: &str, y: &str) -> Chart {
    Chart { title: title.into(), y_label: y.into(), kind: ChartKind::Bar, y_max: None }
}

fn day_label(t: EventTime) -> String {
    t.date_string()
}

/// Days a history report covers when `--from` is not given.
pub const DEFAULT_DAYS: u32 = 90;

// ---- pci-history ---------------------------------------------------------------------------------------

fn pci_history(state: &dyn StateRead, cx: &Cx<'_>) -> Result<Report, BuildError> {
    let mut r = Report::new(Kind::PciHistory, Kind::PciHistory.title(), cx.scope());
    // The history's extent, one pass (keys only decode what they must).
    let (mut first, mut last, mut any) = (EventTime(i64::MAX), EventTime(i64::MIN), false);
    history::scan_all(state, &mut |arn, t, p| {
        if cx.keeps_arn(arn, &p.account) {
            any = true;
            first = first.min(t);
            last = last.max(t);
        }
        true
    })?;
    if !any {
        return Err(BuildError::NoHistory);
    }
    // Default: the last 90 days of the history (a replay of old logs may reach years back).
    let to = cx.f.to.unwrap_or(last);
    let from = cx.f.from.unwrap_or_else(|| first.max(to.minus_days(DEFAULT_DAYS)));
    let days = history::days_between(from, to, cx.f.window_ms);
    if days.is_empty() {
        return Err(BuildError::EmptyWindow {
            from: from.to_rfc3339(),
            to: to.to_rfc3339(),
            what: "no window boundary (a day) falls in it".into(),
        });
    }
    let mut points_in_window = 0u64;
    let mut identities_in_window = BTreeSet::new();
    let rollup = history::rollup_daily(state, &days, &mut |arn, p| {
        if !cx.keeps_arn(arn, &p.account) {
            return Vec::new();
        }
        let cloud = cx.cloud_of(arn);
        vec![
            "all".to_string(),
            format!("cloud\0{}", cloud.as_str()),
            format!("account\0{}\0{}", cloud.as_str(), p.account),
        ]
    })?;
    history::scan_all(state, &mut |arn, t, p| {
        if t >= days[0] && t <= days[days.len() - 1] && cx.keeps_arn(arn, &p.account) {
            points_in_window += 1;
            identities_in_window.insert(arn.to_string());
        }
        true
    })?;
    if points_in_window == 0 && rollup.get("all").is_none_or(|v| v.iter().all(|d| d.identities == 0)) {
        return Err(BuildError::EmptyWindow {
            from: from.to_rfc3339(),
            to: to.to_rfc3339(),
            what: "no PCI point at or before any day of it".into(),
        });
    }
    let points = |figs: &[history::DayFigure]| -> Vec<Point> {
        figs.iter().map(|d| Point { x: day_label(d.day), y: f64::from(d.pci) }).collect()
    };
    let mut table = Table::new(
        "daily",
        "Daily PCI per scope (each identity's latest point carried forward; mean over acting identities)",
        &["day", "scope", "id", "pci", "band", "identities"],
    );
    let all = rollup.get("all").cloned().unwrap_or_default();
    r.figure("days", days.len());
    r.figure("from", day_label(days[0]));
    r.figure("to", day_label(days[days.len() - 1]));
    r.figure("points_in_window", points_in_window);
    r.figure("identities_with_points", identities_in_window.len());
    r.figure("pci_first", all.first().map_or(0, |d| d.pci));
    r.figure("pci_last", all.last().map_or(0, |d| d.pci));
    r.figure("accounts", rollup.keys().filter(|k| k.starts_with("account\0")).count());
    r.chart("pci_all", pci_chart("PCI, all identities in scope"), points(&all));
    for (k, figs) in &rollup {
        let (scope, id) = match k.split_once('\0') {
            None => ("all", String::new()),
            Some(("cloud", c)) => {
                r.chart(&format!("pci_cloud_{c}"), pci_chart(format!("PCI, {c}")), points(figs));
                ("cloud", c.to_string())
            }
            Some((_, rest)) => ("account", rest.replace('\0', ":")),
        };
        for d in figs {
            table.rows.push(vec![
                day_label(d.day).into(),
                scope.into(),
                id.clone().into(),
                d.pci.into(),
                band_text(PciBand::of(d.pci)).into(),
                d.identities.into(),
            ]);
        }
    }
    if let Some(i) = cx.identity {
        let series = history::identity_series(state, &i.arn, days[0], days[days.len() - 1])?;
        r.chart(
            "pci_identity",
            pci_chart(format!("PCI of {}", i.name)),
            series.iter().map(|(t, p)| Point { x: day_label(*t), y: f64::from(p.score) }).collect(),
        );
        r.tables.push(point_table(&series));
    }
    table.rows.sort_by(|a, b| a[0].text().cmp(&b[0].text()));
    r.tables.insert(0, table);
    r.notes.push(
        "Identity points are what the processor emitted when a daily window closed (new usage, new \
         entitlements, or the last activity leaving the lookback). On each day an identity counts with its \
         latest point at or before that day; an account's PCI is the rounded mean over its acting identities \
         (users, roles, root, service accounts), as accounts.json computes it; a cloud's and `all` are the \
         same mean over every acting identity in them."
            .into(),
    );
    Ok(r)
}

fn point_table(series: &[(EventTime, PciPoint)]) -> Table {
    let mut t = Table::new(
        "identity_points",
        "The identity's recorded PCI points",
        &["as_of", "pci", "band", "granted", "used", "unused_high_risk", "events_in_lookback", "status"],
    );
    for (at, p) in series {
        t.rows.push(vec![
            at.to_rfc3339().into(),
            p.score.into(),
            band_text(p.band()).into(),
            p.granted.into(),
            p.used.into(),
            p.unused_high_risk.into(),
            p.events_in_lookback.into(),
            status_text(&p.status).into(),
        ]);
    }
    t
}

// ---- permissions-analytics ------------------------------------------------------------------------------

/// An identity as one row of the analytics: from identities.jsonl, or from its history point at `--to`.
struct Row<'a> {
    arn: &'a str,
    account: &'a str,
    kind: IdentityKind,
    cloud: Cloud,
    pci: u8,
    granted: usize,
    used: usize,
    unused_high_risk: usize,
    status: Vec<StatusFlag>,
    last_activity: Option<EventTime>,
}

fn permissions_analytics(state: &dyn StateRead, cx: &Cx<'_>) -> Result<Report, BuildError> {
    let mut r = Report::new(Kind::PermissionsAnalytics, Kind::PermissionsAnalytics.title(), cx.scope());
    // A `--to` before analyze's as_of asks for the past: each identity's latest history point at or
    // before it (its flags and PCI then). Otherwise identities.jsonl, as of analyze's as_of.
    let past = cx.f.to.filter(|t| *t < cx.as_of);
    let mut from_history: BTreeMap<String, PciPoint> = BTreeMap::new();
    if let Some(to) = past {
        history::scan_all(state, &mut |arn, t, p| {
            if t <= to {
                from_history.insert(arn.to_string(), p);
            }
            true
        })?;
        if from_history.is_empty() {
            return Err(BuildError::EmptyWindow {
                from: "the beginning".into(),
                to: to.to_rfc3339(),
                what: "no PCI history point at or before --to".into(),
            });
        }
    }
    let rows: Vec<Row<'_>> = if past.is_some() {
        from_history
            .iter()
            .filter(|(arn, p)| cx.keeps_arn(arn, &p.account))
            .map(|(arn, p)| Row {
                arn,
                account: &p.account,
                kind: p.kind,
                cloud: cx.cloud_of(arn),
                pci: p.score,
                granted: p.granted,
                used: p.used,
                unused_high_risk: p.unused_high_risk,
                status: p.status.clone(),
                last_activity: p.last_activity,
            })
            .collect()
    } else {
        cx.res
            .identities
            .iter()
            .filter(|i| cx.keeps(i))
            .map(|i| {
                let counts = i.action_counts;
                Row {
                    arn: &i.arn,
                    account: &i.account,
                    kind: i.kind,
                    cloud: i.cloud,
                    pci: i.pci.score,
                    granted: counts.map_or(i.granted_actions.len(), |c| c.granted),
                    used: counts.map_or(i.used_actions.len(), |c| c.used),
                    unused_high_risk: i.unused_high_risk,
                    status: i.status.clone(),
                    last_activity: i.last_activity,
                }
            })
            .collect()
    };
    let has = |row: &Row<'_>, f: StatusFlag| row.status.contains(&f);
    let count = |f: StatusFlag| rows.iter().filter(|x| has(x, f)).count();
    r.figure("identities", rows.len());
    r.figure("super_identities", count(StatusFlag::SuperIdentity));
    r.figure("inactive", count(StatusFlag::Inactive));
    r.figure("over_provisioned", count(StatusFlag::OverProvisioned));
    r.figure("escalation_paths", count(StatusFlag::EscalationPath));
    r.figure("as_of", past.unwrap_or(cx.as_of).to_rfc3339());
    let mut bands = [0usize; 3];
    for x in rows.iter().filter(|x| history::acts(x.kind)) {
        bands[PciBand::of(x.pci) as usize] += 1;
    }
    r.figure("pci_high", bands[2]);
    // Access-key age (identities.jsonl lists the active keys unused in the lookback, with creation).
    let lookback = cx.res.accounts.as_ref().map_or(90, |a| a.lookback_days);
    let mut unused_keys = 0usize;
    let mut oldest_days = 0i64;
    for i in cx.res.identities.iter().filter(|i| cx.keeps(i)) {
        for k in &i.unused_access_keys {
            unused_keys += 1;
            if let Some(c) = k.created {
                oldest_days = oldest_days.max((cx.as_of.millis() - c.millis()).div_euclid(MS_PER_DAY));
            }
        }
    }
    r.figure("unused_access_keys", unused_keys);
    r.figure("oldest_unused_access_key_days", oldest_days);
    r.figure("lookback_days", i64::from(lookback));
    r.chart(
        "pci_bands",
        bar_chart("Acting identities by PCI band", "identities"),
        ["low", "medium", "high"].iter().zip(bands).map(|(b, n)| Point { x: (*b).into(), y: n as f64 }).collect(),
    );
    r.chart(
        "flags",
        bar_chart("Identities by status", "identities"),
        [
            ("super_identity", StatusFlag::SuperIdentity),
            ("over_provisioned", StatusFlag::OverProvisioned),
            ("inactive", StatusFlag::Inactive),
            ("escalation_path", StatusFlag::EscalationPath),
        ]
        .iter()
        .map(|(n, f)| Point { x: (*n).into(), y: count(*f) as f64 })
        .collect(),
    );
    let mut t = Table::new(
        "identities",
        "Identities with a status flag, highest PCI first",
        &[
            "identity",
            "account",
            "cloud",
            "kind",
            "pci",
            "granted",
            "used",
            "unused_high_risk",
            "status",
            "last_activity",
        ],
    );
    let mut flagged: Vec<&Row<'_>> = rows.iter().filter(|x| !x.status.is_empty()).collect();
    flagged.sort_by(|a, b| b.pci.cmp(&a.pci).then(a.arn.cmp(b.arn)));
    for x in flagged {
        t.rows.push(vec![
            Cell::Link { text: x.arn.to_string(), kind: Kind::Identity, id: x.arn.to_string() },
            x.account.into(),
            x.cloud.as_str().into(),
            x.kind.as_str().into(),
            x.pci.into(),
            x.granted.into(),
            x.used.into(),
            x.unused_high_risk.into(),
            status_text(&x.status).into(),
            time_text(x.last_activity).into(),
        ]);
    }
    r.tables.push(t);
    if past.is_some() {
        r.notes.push(
            "As of --to, from the PCI history: each identity's latest recorded point at or before it. \
             Access-key figures are analyze's (as of its last event)."
                .into(),
        );
    }
    Ok(r)
}

// ---- identity --------------------------------------------------------------------------------------------

/// The identity's events per UTC day (the usage counters), for days in `[from, to]`.
fn daily_events(
    state: &dyn StateRead,
    arn: &str,
    from: EventTime,
    to: EventTime,
) -> Result<BTreeMap<i64, u64>, StateError> {
    let mut prefix = keys::DAY_COUNTER.prefix.to_vec();
    prefix.extend_from_slice(arn.as_bytes());
    prefix.push(0);
    let plen = prefix.len();
    let mut out = BTreeMap::new();
    let mut err = None;
    state.scan_prefix(StateTable::Counters, &prefix, &mut |k, v| {
        let Some(day) = k.get(plen..).and_then(|b| <[u8; 8]>::try_from(b).ok()).map(i64::from_be_bytes) else {
            err = Some(keys::DAY_COUNTER.corrupt(k, "key does not end in an 8-byte day"));
            return false;
        };
        if day >= from.day() && day <= to.day() {
            match keys::DAY_COUNTER.decode_u64(k, v) {
                Ok(n) => {
                    out.insert(day, n);
                }
                Err(e) => {
                    err = Some(e);
                    return false;
                }
            }
        }
        true
    })?;
    err.map_or(Ok(out), Err)
}

/// Days `[from, to]` with their event counts, zero-filled.
fn day_points(counts: &BTreeMap<i64, u64>, from: EventTime, to: EventTime) -> Vec<Point> {
    (from.day()..=to.day())
        .map(|d| Point { x: day_label(EventTime(d * MS_PER_DAY)), y: counts.get(&d).copied().unwrap_or(0) as f64 })
        .collect()
}

fn alerts_of<'a>(cx: &'a Cx<'_>, arn: &'a str) -> impl Iterator<Item = &'a DetectionFinding> + 'a {
    cx.res.alerts.iter().filter(move |a| {
        a.actor.user.uid == arn
            && cx.f.from.is_none_or(|t| a.time >= t.millis())
            && cx.f.to.is_none_or(|t| a.time <= t.millis())
    })
}

fn alert_link(a: &DetectionFinding) -> Cell {
    Cell::Link { text: a.finding_info.uid.clone(), kind: Kind::Alert, id: a.finding_info.uid.clone() }
}

fn identity(state: &dyn StateRead, cx: &Cx<'_>) -> Result<Report, BuildError> {
    let i = cx.identity.ok_or(BuildError::NeedsIdentity("identity"))?;
    let mut r = Report::new(Kind::Identity, format!("Identity: {}", i.name), cx.scope());
    let counts = i.action_counts;
    let granted = counts.map_or(i.granted_actions.len(), |c| c.granted);
    let used = counts.map_or(i.used_actions.len(), |c| c.used);
    let unused = counts.map_or(i.unused_actions.len(), |c| c.unused);
    r.figure("arn", i.arn.as_str());
    r.figure("account", i.account.as_str());
    r.figure("cloud", i.cloud.as_str());
    r.figure("kind", i.kind.as_str());
    r.figure("pci", i.pci.score);
    r.figure("pci_band", band_text(i.pci.band));
    r.figure("granted", granted);
    r.figure("used", used);
    r.figure("unused", unused);
    r.figure("used_not_granted", i.used_not_granted.len());
    r.figure("unused_high_risk", i.unused_high_risk);
    r.figure("events_in_lookback", i.events_in_lookback);
    r.figure("active_days", i64::from(i.active_days));
    r.figure("last_activity", time_text(i.last_activity));
    r.figure("status", status_text(&i.status));
    let alerts: Vec<&DetectionFinding> = alerts_of(cx, &i.arn).collect();
    r.figure("alerts", alerts.len());

    let to = cx.f.to.unwrap_or(cx.as_of);
    let from = cx.f.from.unwrap_or(to.minus_days(90));
    let series = history::identity_series(state, &i.arn, from, to)?;
    r.chart(
        "pci_history",
        pci_chart("PCI history"),
        series.iter().map(|(t, p)| Point { x: day_label(*t), y: f64::from(p.score) }).collect(),
    );
    let events = daily_events(state, &i.arn, from, to)?;
    r.chart("daily_events", bar_chart("Events per day", "events"), day_points(&events, from, to));

    let mut actions = Table::new(
        "actions",
        format!(
            "Granted vs used actions ({:?} form: `service:*` stands for every action of a service)",
            i.actions_form
        ),
        &["action", "granted", "used", "conditional"],
    );
    let used_set: BTreeSet<&str> = i.used_actions.iter().map(String::as_str).collect();
    let cond: BTreeSet<&str> = i.conditional_actions.iter().map(String::as_str).collect();
    for a in &i.granted_actions {
        actions.rows.push(vec![
            a.as_str().into(),
            "yes".into(),
            if used_set.contains(a.as_str()) { "yes" } else { "no" }.into(),
            if cond.contains(a.as_str()) { "yes" } else { "no" }.into(),
        ]);
    }
    for a in &i.used_not_granted {
        actions.rows.push(vec![a.as_str().into(), "no".into(), "yes".into(), "no".into()]);
    }
    r.tables.push(actions);
    let mut recs = Table::new("recommendations", "Recommendations", &["recommendation"]);
    recs.rows.extend(i.recommendations.iter().map(|s| vec![Cell::from(s.as_str())]));
    r.tables.push(recs);
    r.tables.push(point_table(&series));
    r.tables.push(alert_table("alerts", "Alerts on this identity", &alerts, None));
    let mut keys_t = Table::new(
        "unused_access_keys",
        "Active access keys unused in the lookback",
        &["access_key_id", "created", "last_used"],
    );
    for k in &i.unused_access_keys {
        keys_t.rows.push(vec![
            k.access_key_id.as_str().into(),
            time_text(k.created).into(),
            time_text(k.last_used).into(),
        ]);
    }
    r.tables.push(keys_t);
    Ok(r)
}

fn alert_table(
    name: &str,
    caption: &str,
    alerts: &[&DetectionFinding],
    incident_of: Option<&DetectionFinding>,
) -> Table {
    let mut cols = vec!["alert", "time", "title", "severity", "analytic", "count"];
    if incident_of.is_some() {
        cols.push("same_incident");
    }
    let mut t = Table::new(name, caption, &cols);
    for a in alerts {
        let mut row = vec![
            alert_link(a),
            a.time_dt.to_rfc3339().into(),
            a.finding_info.title.as_str().into(),
            a.severity.as_str().into(),
            a.finding_info.analytic.uid.as_str().into(),
            a.count.into(),
        ];
        if let Some(of) = incident_of {
            row.push(if same_incident(a, of) { "yes" } else { "no" }.into());
        }
        t.rows.push(row);
    }
    t
}

/// Detection keeps one incident per (analytic, identity): repeats within its window count into it.
fn same_incident(a: &DetectionFinding, b: &DetectionFinding) -> bool {
    a.finding_info.analytic.uid == b.finding_info.analytic.uid && a.actor.user.uid == b.actor.user.uid
}

// ---- access-keys ------------------------------------------------------------------------------------------

fn access_keys(state: &dyn StateRead, cx: &Cx<'_>) -> Result<Report, BuildError> {
    let mut r = Report::new(Kind::AccessKeys, Kind::AccessKeys.title(), cx.scope());
    // Keys seen in use: the usage state, one scan (identity \0 key id → first/last use).
    let mut seen: BTreeMap<(String, String), (i64, i64)> = BTreeMap::new();
    let prefix = keys::USAGE_ACCESS_KEY.prefix;
    let mut err = None;
    state.scan_prefix(StateTable::Usage, prefix, &mut |k, v| {
        let rest = &k[prefix.len()..];
        let Some(sep) = rest.iter().position(|b| *b == 0) else {
            err = Some(keys::USAGE_ACCESS_KEY.corrupt(k, "no \\0 between identity and key id"));
            return false;
        };
        match keys::USAGE_ACCESS_KEY.decode_span(k, v) {
            Ok(span) => {
                let arn = String::from_utf8_lossy(&rest[..sep]).into_owned();
                let id = String::from_utf8_lossy(&rest[sep + 1..]).into_owned();
                seen.insert((arn, id), (span.first_ms, span.last_ms));
                true
            }
            Err(e) => {
                err = Some(e);
                false
            }
        }
    })?;
    if let Some(e) = err {
        return Err(e.into());
    }
    let lookback = cx.res.accounts.as_ref().map_or(90, |a| a.lookback_days);
    let lookback_start = cx.as_of.minus_days(lookback).millis();
    let mut t = Table::new(
        "access_keys",
        "Access keys: in use (seen in the logs) or active and unused in the lookback",
        &["identity", "account", "access_key_id", "status", "created", "first_used", "last_used", "age_days"],
    );
    let mut buckets = [0usize; 6];
    let bucket_names = ["0-30", "31-90", "91-180", "181-365", ">365", "unknown"];
    let (mut used_n, mut unused_n, mut over_90) = (0usize, 0usize, 0usize);
    let mut age = |created: Option<i64>| -> Cell {
        match created {
            Some(c) => {
                let d = (cx.as_of.millis() - c).div_euclid(MS_PER_DAY);
                let b = match d {
                    ..=30 => 0,
                    31..=90 => 1,
                    91..=180 => 2,
                    181..=365 => 3,
                    _ => 4,
                };
                buckets[b] += 1;
                if d > 90 {
                    over_90 += 1;
                }
                d.into()
            }
            None => {
                buckets[5] += 1;
                Cell::Text(String::new())
            }
        }
    };
    let mut listed: BTreeSet<(&str, &str)> = BTreeSet::new();
    for i in cx.res.identities.iter().filter(|i| cx.keeps(i)) {
        for k in &i.unused_access_keys {
            listed.insert((&i.arn, &k.access_key_id));
            unused_n += 1;
            let a = age(k.created.map(EventTime::millis));
            t.rows.push(vec![
                identity_link(i),
                i.account.as_str().into(),
                k.access_key_id.as_str().into(),
                "unused".into(),
                time_text(k.created).into(),
                "".into(),
                time_text(k.last_used).into(),
                a,
            ]);
        }
    }
    for ((arn, id), (first, last)) in &seen {
        let Some(i) = cx.by_arn.get(arn.as_str()) else { continue };
        if !cx.keeps(i) || listed.contains(&(arn.as_str(), id.as_str())) {
            continue;
        }
        let status = if *last >= lookback_start { "used" } else { "unused" };
        if status == "used" {
            used_n += 1;
        } else {
            unused_n += 1;
        }
        // Creation is not in the logs: the first use stands for it (a lower bound of the age).
        let a = age(Some(*first));
        t.rows.push(vec![
            identity_link(i),
            i.account.as_str().into(),
            id.as_str().into(),
            status.into(),
            "".into(),
            EventTime(*first).to_rfc3339().into(),
            EventTime(*last).to_rfc3339().into(),
            a,
        ]);
    }
    r.figure("access_keys", used_n + unused_n);
    r.figure("used", used_n);
    r.figure("unused", unused_n);
    r.figure("older_than_90_days", over_90);
    r.chart(
        "age_buckets",
        bar_chart("Access keys by age (days)", "keys"),
        bucket_names.iter().zip(buckets).map(|(n, c)| Point { x: (*n).into(), y: c as f64 }).collect(),
    );
    r.tables.push(t);
    r.notes.push(
        "Age is from the key's creation when the IAM snapshot gives it (unused keys), else from its first use \
         in the logs (a lower bound)."
            .into(),
    );
    Ok(r)
}

// ---- groups, roles-policies, cross-account ------------------------------------------------------------------

fn counts(i: &IdentityFinding) -> (usize, usize) {
    i.action_counts.map_or((i.granted_actions.len(), i.used_actions.len()), |c| (c.granted, c.used))
}

fn groups(cx: &Cx<'_>) -> Report {
    let mut r = Report::new(Kind::Groups, Kind::Groups.title(), cx.scope());
    let gs: Vec<&IdentityFinding> =
        cx.res.identities.iter().filter(|i| i.kind == IdentityKind::Group && cx.keeps(i)).collect();
    let mut t = Table::new(
        "groups",
        "Groups: granted vs used by their members (the union of members' usage)",
        &["group", "account", "cloud", "pci", "granted", "used", "unused", "status", "last_activity"],
    );
    let mut bands = [0usize; 3];
    for g in &gs {
        let (granted, used) = counts(g);
        bands[g.pci.band as usize] += 1;
        t.rows.push(vec![
            identity_link(g),
            g.account.as_str().into(),
            g.cloud.as_str().into(),
            g.pci.score.into(),
            granted.into(),
            used.into(),
            granted.saturating_sub(used).into(),
            status_text(&g.status).into(),
            time_text(g.last_activity).into(),
        ]);
    }
    r.figure("groups", gs.len());
    r.figure("unused_groups", gs.iter().filter(|g| counts(g).1 == 0).count());
    r.figure("over_provisioned", gs.iter().filter(|g| g.status.contains(&StatusFlag::OverProvisioned)).count());
    r.figure("super_groups", gs.iter().filter(|g| g.status.contains(&StatusFlag::SuperIdentity)).count());
    r.chart(
        "pci_bands",
        bar_chart("Groups by PCI band", "groups"),
        ["low", "medium", "high"].iter().zip(bands).map(|(b, n)| Point { x: (*b).into(), y: n as f64 }).collect(),
    );
    r.tables.push(t);
    r
}

fn roles_policies(cx: &Cx<'_>) -> Report {
    let mut r = Report::new(Kind::RolesPolicies, Kind::RolesPolicies.title(), cx.scope());
    // Who may assume each role from elsewhere (trust policies, resource_access.jsonl).
    let mut trusted: FxHashMap<&str, usize> = FxHashMap::default();
    for a in &cx.res.resource_access {
        if let Some(role) = a.policy.strip_prefix("trust:") {
            *trusted.entry(role).or_insert(0) += 1;
        }
    }
    let roles: Vec<&IdentityFinding> = cx
        .res
        .identities
        .iter()
        .filter(|i| matches!(i.kind, IdentityKind::Role | IdentityKind::ServiceAccount) && cx.keeps(i))
        .collect();
    let mut t = Table::new(
        "roles",
        "Roles: assumed (sessions seen) or not, used or not in the lookback",
        &[
            "role",
            "account",
            "cloud",
            "pci",
            "granted",
            "used",
            "assumed",
            "sessions",
            "used_in_lookback",
            "external_trust",
            "status",
            "recommendation",
        ],
    );
    let (mut used_n, mut assumed_n, mut trust_n) = (0, 0, 0);
    for i in &roles {
        let (granted, used) = counts(i);
        let in_use = i.events_in_lookback > 0;
        let assumed = !i.session_names.is_empty() || in_use;
        let ext = trusted.get(i.arn.as_str()).copied().unwrap_or(0);
        used_n += usize::from(in_use);
        assumed_n += usize::from(assumed);
        trust_n += usize::from(ext > 0);
        t.rows.push(vec![
            identity_link(i),
            i.account.as_str().into(),
            i.cloud.as_str().into(),
            i.pci.score.into(),
            granted.into(),
            used.into(),
            if assumed { "yes" } else { "no" }.into(),
            i.session_names.len().into(),
            if in_use { "yes" } else { "no" }.into(),
            ext.into(),
            status_text(&i.status).into(),
            i.recommendations.first().cloned().unwrap_or_default().into(),
        ]);
    }
    r.figure("roles", roles.len());
    r.figure("used", used_n);
    r.figure("unused", roles.len() - used_n);
    r.figure("assumed", assumed_n);
    r.figure("trusted_from_outside", trust_n);
    r.chart(
        "usage",
        bar_chart("Roles used vs unused in the lookback", "roles"),
        vec![
            Point { x: "used".into(), y: used_n as f64 },
            Point { x: "unused".into(), y: (roles.len() - used_n) as f64 },
        ],
    );
    r.tables.push(t);
    r.notes.push(
        "Policies as documents (managed policies attached or not) are not in analyze's results; this report \
         covers roles and workload identities, each with its granted vs used actions."
            .into(),
    );
    r
}

fn cross_account(cx: &Cx<'_>) -> Report {
    let mut r = Report::new(Kind::CrossAccount, Kind::CrossAccount.title(), cx.scope());
    let rows: Vec<_> =
        cx.res.resource_access.iter().filter(|a| cx.f.account.as_ref().is_none_or(|x| x == &a.account)).collect();
    let mut t = Table::new(
        "access",
        "Ways into resources from other accounts or from anyone",
        &["resource", "account", "access", "principal", "external", "actions", "conditioned", "policy"],
    );
    let mut by_access: BTreeMap<&str, usize> = BTreeMap::new();
    for a in &rows {
        *by_access.entry(a.access.as_str()).or_insert(0) += 1;
        t.rows.push(vec![
            a.resource.as_str().into(),
            a.account.as_str().into(),
            a.access.as_str().into(),
            a.principal.as_str().into(),
            if a.external { "yes" } else { "no" }.into(),
            a.actions.join(" ").into(),
            if a.condition.is_some() { "yes" } else { "no" }.into(),
            format!("{}#{}", a.policy, a.statement).into(),
        ]);
    }
    r.figure("entries", rows.len());
    r.figure("public", by_access.get("public").copied().unwrap_or(0));
    r.figure("cross_account", by_access.get("cross-account").copied().unwrap_or(0));
    r.figure("federated", by_access.get("federated").copied().unwrap_or(0));
    r.figure(
        "external_principals",
        rows.iter().filter(|a| a.external).map(|a| &a.principal).collect::<BTreeSet<_>>().len(),
    );
    r.figure("resources", rows.iter().map(|a| &a.resource).collect::<BTreeSet<_>>().len());
    r.figure("unconditioned", rows.iter().filter(|a| a.condition.is_none()).count());
    r.chart(
        "by_access",
        bar_chart("Entries by kind of access", "entries"),
        ["public", "cross-account", "federated"]
            .iter()
            .map(|k| Point { x: (*k).into(), y: by_access.get(k).copied().unwrap_or(0) as f64 })
            .collect(),
    );
    r.tables.push(t);
    r
}

// ---- alert -----------------------------------------------------------------------------------------------------

/// Days either side of an alert its timeline covers.
const ALERT_DAYS: u32 = 7;

fn alert(state: &dyn StateRead, cx: &Cx<'_>) -> Result<Report, BuildError> {
    let id = cx.f.alert.as_deref().ok_or(BuildError::NeedsAlert)?;
    let matching: Vec<&DetectionFinding> = cx.res.alerts.iter().filter(|a| a.finding_info.uid == id).collect();
    let matching = if matching.is_empty() {
        cx.res.alerts.iter().filter(|a| a.finding_info.uid.starts_with(id)).collect()
    } else {
        matching
    };
    // A repeat is written as another record with the same uid: the latest stands for the incident.
    let Some(a) = matching.iter().max_by_key(|a| (a.count, a.time)).copied() else {
        return Err(BuildError::UnknownAlert(id.to_string()));
    };
    if matching.iter().any(|m| m.finding_info.uid != a.finding_info.uid) {
        return Err(BuildError::UnknownAlert(format!("{id} (a prefix of several alerts)")));
    }
    let mut scope = cx.scope();
    scope.alert = Some(a.finding_info.uid.clone());
    scope.identity = Some(a.actor.user.uid.clone());
    let mut r = Report::new(Kind::Alert, format!("Alert: {}", a.finding_info.title), scope);
    let arn = a.actor.user.uid.as_str();
    let at = EventTime(a.time);
    let from = cx.f.from.unwrap_or(at.minus_days(ALERT_DAYS));
    let to = cx.f.to.unwrap_or(EventTime(a.time + i64::from(ALERT_DAYS) * MS_PER_DAY));
    let explanation = a.unmapped.get("explanation");
    r.figure("alert", a.finding_info.uid.as_str());
    r.figure("title", a.finding_info.title.as_str());
    r.figure("severity", a.severity.as_str());
    r.figure("analytic", a.finding_info.analytic.uid.as_str());
    r.figure("identity", arn);
    r.figure("account", a.cloud.account.uid.as_str());
    r.figure("time", at.to_rfc3339());
    r.figure("count", a.count);
    r.figure("triggering_events", a.finding_info.related_events.len());
    if let Some(p) = explanation.and_then(|e| e.get("identity_pci")).and_then(serde_json::Value::as_u64) {
        r.figure("identity_pci", p);
    }
    let related: Vec<&DetectionFinding> = cx
        .res
        .alerts
        .iter()
        .filter(|x| {
            x.actor.user.uid == arn
                && x.finding_info.uid != a.finding_info.uid
                && x.time >= from.millis()
                && x.time <= to.millis()
        })
        .collect();
    // One row per alert uid (the latest record of each).
    let mut latest: BTreeMap<&str, &DetectionFinding> = BTreeMap::new();
    for x in related {
        let e = latest.entry(x.finding_info.uid.as_str()).or_insert(x);
        if (x.count, x.time) > (e.count, e.time) {
            *e = x;
        }
    }
    let mut related: Vec<&DetectionFinding> = latest.into_values().collect();
    related.sort_by_key(|x| (x.time, x.finding_info.uid.clone()));
    r.figure("related_alerts", related.len());
    r.figure("same_incident_alerts", related.iter().filter(|x| same_incident(x, a)).count());
    r.figure("description", a.finding_info.desc.as_str());

    let events = daily_events(state, arn, from, to)?;
    r.chart(
        "daily_events",
        bar_chart("The identity's events per day around the alert", "events"),
        day_points(&events, from, to),
    );
    let series = history::identity_series(state, arn, from, to)?;
    r.chart(
        "pci_history",
        pci_chart("The identity's PCI around the alert"),
        series.iter().map(|(t, p)| Point { x: day_label(*t), y: f64::from(p.score) }).collect(),
    );

    // The timeline: triggering events, related alerts, PCI changes, in time order.
    let mut timeline = Table::new("timeline", "Timeline around the alert", &["time", "what", "detail", "link"]);
    let mut items: Vec<(i64, Vec<Cell>)> = Vec::new();
    for e in &a.finding_info.related_events {
        items.push((e.time, vec!["triggering event".into(), format!("{} ({})", e.kind, e.uid).into(), "".into()]));
    }
    items.push((a.time, vec!["this alert".into(), a.finding_info.title.as_str().into(), alert_link(a)]));
    for x in &related {
        items.push((
            x.time,
            vec!["related alert".into(), format!("{} [{}]", x.finding_info.title, x.severity).into(), alert_link(x)],
        ));
    }
    for (t, p) in &series {
        items.push((
            t.millis(),
            vec![
                "PCI update".into(),
                format!("PCI {} ({}), used {} of {}", p.score, band_text(p.band()), p.used, p.granted).into(),
                "".into(),
            ],
        ));
    }
    items.sort_by_key(|x| x.0);
    for (t, mut cells) in items {
        cells.insert(0, EventTime(t).to_rfc3339().into());
        timeline.rows.push(cells);
    }
    r.tables.push(timeline);
    let mut trig = Table::new("triggering_events", "Triggering events", &["event", "time", "api"]);
    for e in &a.finding_info.related_events {
        trig.rows.push(vec![e.uid.as_str().into(), EventTime(e.time).to_rfc3339().into(), e.kind.as_str().into()]);
    }
    r.tables.push(trig);
    let mut ev = Table::new("evidence", "Evidence, baselines and features the alert carries", &["field", "value"]);
    if let Some(e) = explanation {
        flatten("", e, &mut ev.rows);
    }
    for (k, v) in a.unmapped.iter().filter(|(k, _)| k.as_str() != "explanation") {
        flatten(k, v, &mut ev.rows);
    }
    r.tables.push(ev);
    r.tables.push(alert_table("related_alerts", "Alerts on the same identity in the window", &related, Some(a)));
    Ok(r)
}

/// `{"a": {"b": 1}}` → `a.b = 1`, arrays by index, bounded (evidence can be long).
fn flatten(path: &str, v: &serde_json::Value, out: &mut Vec<Vec<Cell>>) {
    if out.len() >= 500 {
        return;
    }
    let join = |k: &str| if path.is_empty() { k.to_string() } else { format!("{path}.{k}") };
    match v {
        serde_json::Value::Object(m) => m.iter().for_each(|(k, v)| flatten(&join(k), v, out)),
        serde_json::Value::Array(a) => a.iter().enumerate().for_each(|(i, v)| flatten(&join(&i.to_string()), v, out)),
        serde_json::Value::Null => {}
        serde_json::Value::String(s) => out.push(vec![path.into(), s.as_str().into()]),
        other => out.push(vec![path.into(), other.to_string().into()]),
    }
}
