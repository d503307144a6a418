//! The report model: what every renderer reads.

use std::collections::BTreeMap;

use serde::Serialize;

/// The report kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    PciHistory,
    PermissionsAnalytics,
    Identity,
    AccessKeys,
    Groups,
    RolesPolicies,
    CrossAccount,
    Alert,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::PciHistory,
        Kind::PermissionsAnalytics,
        Kind::Identity,
        Kind::AccessKeys,
        Kind::Groups,
        Kind::RolesPolicies,
        Kind::CrossAccount,
        Kind::Alert,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::PciHistory => "pci-history",
            Kind::PermissionsAnalytics => "permissions-analytics",
            Kind::Identity => "identity",
            Kind::AccessKeys => "access-keys",
            Kind::Groups => "groups",
            Kind::RolesPolicies => "roles-policies",
            Kind::CrossAccount => "cross-account",
            Kind::Alert => "alert",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn title(self) -> &'static str {
        match self {
            Kind::PciHistory => "PCI history",
            Kind::PermissionsAnalytics => "Permissions analytics",
            Kind::Identity => "Identity entitlements and usage",
            Kind::AccessKeys => "Access keys",
            Kind::Groups => "Groups",
            Kind::RolesPolicies => "Roles and policies",
            Kind::CrossAccount => "Cross-account access",
            Kind::Alert => "Alert investigation",
        }
    }
}

/// A key figure: a string or a number (integers stay integers, so JSON and HTML print them alike).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Figure {
    Int(i64),
    Num(f64),
    Text(String),
}

impl Figure {
    /// The figure as JSON prints it (strings without quotes): the text the HTML shows.
    pub fn display(&self) -> String {
        match self {
            Figure::Text(s) => s.clone(),
            other => serde_json::to_string(other).unwrap_or_default(),
        }
    }
}

impl From<usize> for Figure {
    fn from(v: usize) -> Self {
        Figure::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<u64> for Figure {
    fn from(v: u64) -> Self {
        Figure::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<u8> for Figure {
    fn from(v: u8) -> Self {
        Figure::Int(i64::from(v))
    }
}
impl From<i64> for Figure {
    fn from(v: i64) -> Self {
        Figure::Int(v)
    }
}
impl From<String> for Figure {
    fn from(v: String) -> Self {
        Figure::Text(v)
    }
}
impl From<&str> for Figure {
    fn from(v: &str) -> Self {
        Figure::Text(v.to_string())
    }
}

/// One point of a chart: a label on the x axis (a date, a band) and a value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    pub x: String,
    pub y: f64,
}

/// How a chart is drawn (the JSON carries only the points; see [`Report::chart_meta`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChartKind {
    Line,
    Bar,
}

/// A chart's presentation: title, axis label, kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Chart {
    pub title: String,
    pub y_label: String,
    pub kind: ChartKind,
    /// The y axis's top (100 for PCI); `None`: the data's maximum.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub y_max: Option<f64>,
}

/// A table cell.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Cell {
    Int(i64),
    Num(f64),
    Text(String),
    /// A link to another report: `kind` is the target report kind (`alert`, `identity`), `id` its
    /// subject (an alert uid, an identity ARN).
    Link {
        text: String,
        kind: Kind,
        id: String,
    },
}

impl Cell {
    pub fn text(&self) -> String {
        match self {
            Cell::Text(s) => s.clone(),
            Cell::Link { text, .. } => text.clone(),
            Cell::Int(i) => i.to_string(),
            Cell::Num(n) => serde_json::to_string(n).unwrap_or_default(),
        }
    }
}

impl From<&str> for Cell {
    fn from(v: &str) -> Self {
        Cell::Text(v.to_string())
    }
}
impl From<String> for Cell {
    fn from(v: String) -> Self {
        Cell::Text(v)
    }
}
impl From<usize> for Cell {
    fn from(v: usize) -> Self {
        Cell::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<u64> for Cell {
    fn from(v: u64) -> Self {
        Cell::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<u8> for Cell {
    fn from(v: u8) -> Self {
        Cell::Int(i64::from(v))
    }
}
impl From<i64> for Cell {
    fn from(v: i64) -> Self {
        Cell::Int(v)
    }
}

/// A table: the first of a report is its main table (the CSV).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Table {
    pub name: String,
    pub caption: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

impl Table {
    pub fn new(name: &str, caption: impl Into<String>, columns: &[&str]) -> Self {
        Table {
            name: name.to_string(),
            caption: caption.into(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: Vec::new(),
        }
    }
}

/// The filters a report was built with, echoed into it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Scope {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<grantwatch_types::EventTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<grantwatch_types::EventTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert: Option<String>,
}

/// One report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub kind: Kind,
    pub title: String,
    /// The end of the analyzed period (analyze's `as_of`): never the wall clock.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_of: Option<grantwatch_types::EventTime>,
    pub scope: Scope,
    pub figures: BTreeMap<String, Figure>,
    pub charts: BTreeMap<String, Vec<Point>>,
    pub chart_meta: BTreeMap<String, Chart>,
    pub tables: Vec<Table>,
    /// How the figures were derived, and what the data could not say.
    pub notes: Vec<String>,
}

impl Report {
    pub const SCHEMA: &'static str = "grantwatch.report.v1";

    pub fn new(kind: Kind, title: impl Into<String>, scope: Scope) -> Self {
        Report {
            schema: Self::SCHEMA,
            kind,
            title: title.into(),
            as_of: None,
            scope,
            figures: BTreeMap::new(),
            charts: BTreeMap::new(),
            chart_meta: BTreeMap::new(),
            tables: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn figure(&mut self, name: &str, v: impl Into<Figure>) {
        self.figures.insert(name.to_string(), v.into());
    }

    pub fn chart(&mut self, name: &str, meta: Chart, points: Vec<Point>) {
        self.chart_meta.insert(name.to_string(), meta);
        self.charts.insert(name.to_string(), points);
    }

    /// The file stem the CLI writes (`identity-<name>`, `alert-<uid>`): the kind, plus the subject made
    /// safe for a file name.
    pub fn file_stem(&self) -> String {
        let subject = self.scope.alert.as_deref().or(self.scope.identity.as_deref());
        match subject {
            Some(s) => {
                let safe: String = s
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '_' })
                    .collect();
                let safe: String = safe.chars().rev().take(80).collect::<Vec<_>>().into_iter().rev().collect();
                format!("{}-{safe}", self.kind.as_str())
            }
            None => self.kind.as_str().to_string(),
        }
    }
}
