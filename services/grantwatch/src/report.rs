//! `grantwatch report KIND --state DIR`: a forensic report from the state (PCI history, usage) and
//! analyze's results, written as HTML, CSV and JSON (`docs/reports.md`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use grantwatch_report::{Chrome, Filters, HtmlOptions, Kind, Report, Results};
use grantwatch_state::{StateRead, Table, keys};
use grantwatch_state_rocks::RocksStore;

/// The output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Html,
    Csv,
    Json,
}

impl Format {
    /// Parses `html,csv,json`.
    pub fn parse_list(s: &str) -> Result<Vec<Format>> {
        let mut out = Vec::new();
        for f in s.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            let f = match f {
                "html" => Format::Html,
                "csv" => Format::Csv,
                "json" => Format::Json,
                other => bail!("unknown format {other:?}: expected html, csv or json"),
            };
            if !out.contains(&f) {
                out.push(f);
            }
        }
        if out.is_empty() {
            bail!("--format names no format: expected a list of html, csv, json");
        }
        Ok(out)
    }
}

/// What to report.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    pub kind: Kind,
    pub state: PathBuf,
    /// analyze's `--out`; `None`: the directory the state records.
    pub results: Option<PathBuf>,
    pub filters: Filters,
    pub out: PathBuf,
    pub formats: Vec<Format>,
    pub page_size: usize,
}

/// What a report run wrote, and how long each part took.
#[derive(Debug)]
pub struct ReportOutcome {
    pub files: Vec<PathBuf>,
    pub load: Duration,
    pub build: Duration,
    pub render: Duration,
    pub report: Report,
}

/// The results directory analyze recorded in the state.
pub fn recorded_results(state: &dyn StateRead) -> Result<Option<PathBuf>> {
    Ok(state
        .get(Table::Meta, keys::RESULTS_DIR.prefix)
        .context("reading the results directory from state")?
        .map(|v| PathBuf::from(String::from_utf8_lossy(&v).into_owned())))
}

pub fn run(opts: &ReportOptions) -> Result<ReportOutcome> {
    let started = Instant::now();
    if !opts.state.join(grantwatch_state_rocks::STATE_MARKER).exists() {
        bail!(
            "{} is not a grantwatch state directory (run `grantwatch analyze --state {0}` first)",
            opts.state.display()
        );
    }
    // Read-only: no lock, so a report can be made while analyze or a service keeps the state current.
    let store = RocksStore::open_read_only(&opts.state)
        .with_context(|| format!("opening state dir {} (read-only)", opts.state.display()))?;
    let results_dir = match &opts.results {
        Some(d) => d.clone(),
        None => recorded_results(&store)?.with_context(|| {
            format!(
                "the state {} records no results directory: pass --results DIR (analyze's --out)",
                opts.state.display()
            )
        })?,
    };
    let results = Results::load(&results_dir)
        .with_context(|| format!("reading analyze's results in {} (override with --results)", results_dir.display()))?;
    let load = started.elapsed();
    let t = Instant::now();
    let report = grantwatch_report::build(opts.kind, &store, &results, &opts.filters)
        .with_context(|| format!("building the {} report", opts.kind.as_str()))?;
    let build = t.elapsed();
    let t = Instant::now();
    let files = write(&report, &opts.out, &opts.formats, opts.page_size)?;
    Ok(ReportOutcome { files, load, build, render: t.elapsed(), report })
}

/// Writes the report in each format into `out`, named by its kind (and subject).
pub fn write(report: &Report, out: &Path, formats: &[Format], page_size: usize) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let stem = report.file_stem();
    let mut files = Vec::new();
    for f in formats {
        let (ext, body) = match f {
            Format::Html => (
                "html",
                grantwatch_report::render_html(
                    report,
                    &HtmlOptions { chrome: Chrome::Page, page_size: page_size.max(1), ..HtmlOptions::default() },
                ),
            ),
            Format::Csv => ("csv", grantwatch_report::render_csv(report)),
            Format::Json => ("json", grantwatch_report::render_json(report)),
        };
        let path = out.join(format!("{stem}.{ext}"));
        std::fs::write(&path, body).with_context(|| format!("writing {}", path.display()))?;
        files.push(path);
    }
    Ok(files)
}
