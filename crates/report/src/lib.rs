//! grantwatch's forensic reports (`docs/reports.md`).
//!
//! A report is built in two steps that never mix: a builder ([`build`]) reads the state (PCI history,
//! usage counters) and analyze's results ([`Results`]) into a [`Report`], a plain typed model; the
//! renderers ([`render`]) turn a model into JSON, CSV (its main table) or one self-contained HTML page
//! or fragment. Rendering is a pure function of the model, so a web view can serve the same pages.
//!
//! Every report has the same envelope (`schemas/report.v1.json`): a `kind`, `figures` (name → string or
//! number), `charts` (name → points) and `tables`. The HTML marks each figure with `data-figure`, each
//! chart with `data-chart` and one `.point` per point, so a browser test can compare page and JSON.

pub mod build;
pub mod model;
pub mod render;
pub mod results;

pub use build::{BuildError, Filters, build};
pub use model::{Cell, Chart, ChartKind, Figure, Kind, Point, Report, Table};
pub use render::{Chrome, HtmlOptions, render_csv, render_html, render_json};
pub use results::{Results, ResultsError};
