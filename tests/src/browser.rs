//! Pages checked in a real headless Chromium: [`Browser::check`] runs `tests/browser/check.mjs`
//! (playwright-core driving Debian's `chromium`) over one [`Job`] and returns what the page showed as a
//! [`PageReport`]; [`assert_page_matches_json`] holds a report page to the JSON of the same report.
//! Conventions the pages follow (`data-figure`, `data-chart` + `.point`, `data-link`), where the
//! screenshots land and how to run it: `docs/browser-tests.md`.
//!
//! ```no_run
//! use grantwatch_e2e::browser::{assert_page_matches_json, Browser, Job};
//! let report = Browser::check(&Job::new("pci-history", "file:///tmp/out/pci-history.html")).unwrap();
//! let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string("/tmp/out/pci-history.json").unwrap()).unwrap();
//! assert_page_matches_json(&report, &json);
//! ```

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde::{Deserialize, Serialize};

use crate::stack::repo;

/// One step of a job, performed in order after the page has loaded. Selectors are CSS selectors.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Action {
    /// Clicks the first match; with `navigates`, waits until the page's URL changes and the new page
    /// has loaded (a link, a form submitted by a button).
    Click {
        click: String,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        navigates: bool,
    },
    /// Types `value` into a field (replacing its content; fires `input`).
    Fill { fill: String, value: String },
    /// Presses a key (`Enter`, `Tab`, …) in a field.
    Press { press: String, key: String },
    /// Selects the option whose value (or label) is `value` (fires `change`).
    Select { select: String, value: String },
    /// Ticks a checkbox or radio button.
    Check { check: String },
    /// Waits until a match is visible.
    WaitFor { wait_for: String },
    /// Waits until the URL contains this text and that page has loaded.
    WaitForUrl { wait_for_url: String },
}

/// What to load, what to do there and what to read beyond the conventional elements. Every job saves a
/// full-page screenshot, `<name>.png` in [`artifacts_dir`].
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    /// The screenshot's file name without `.png`: letters, digits, `.`, `_`, `-`.
    #[serde(skip)]
    pub name: String,
    /// `file://…` or `http://127.0.0.1:PORT/…` (the driver refuses anything else).
    pub url: String,
    pub actions: Vec<Action>,
    /// Selectors whose number of matches the report gives in [`PageReport::counts`].
    pub count: Vec<String>,
    /// Selectors whose matches' trimmed texts the report gives in [`PageReport::texts`].
    pub text: Vec<String>,
    /// The time limit of each step (launch, navigation, each action, reading, screenshot).
    pub step_timeout_ms: u64,
    /// Another Chromium for this job only (default: [`chromium`]).
    #[serde(skip)]
    pub chromium: Option<PathBuf>,
}

impl Job {
    pub fn new(name: &str, url: &str) -> Job {
        Job {
            name: name.into(),
            url: url.into(),
            actions: vec![],
            count: vec![],
            text: vec![],
            step_timeout_ms: 15_000,
            chromium: None,
        }
    }

    /// A job for a local file (made absolute, so the job does not depend on the working directory).
    pub fn file(name: &str, path: &Path) -> anyhow::Result<Job> {
        let path = path.canonicalize().with_context(|| format!("page {}", path.display()))?;
        Ok(Job::new(name, &file_url(&path)))
    }

    pub fn click(mut self, selector: &str) -> Job {
        self.actions.push(Action::Click { click: selector.into(), navigates: false });
        self
    }

    /// Clicks and waits for the page the click leads to.
    pub fn click_and_follow(mut self, selector: &str) -> Job {
        self.actions.push(Action::Click { click: selector.into(), navigates: true });
        self
    }

    pub fn fill(mut self, selector: &str, value: &str) -> Job {
        self.actions.push(Action::Fill { fill: selector.into(), value: value.into() });
        self
    }

    pub fn press(mut self, selector: &str, key: &str) -> Job {
        self.actions.push(Action::Press { press: selector.into(), key: key.into() });
        self
    }

    pub fn select(mut self, selector: &str, value: &str) -> Job {
        self.actions.push(Action::Select { select: selector.into(), value: value.into() });
        self
    }

    pub fn check_box(mut self, selector: &str) -> Job {
        self.actions.push(Action::Check { check: selector.into() });
        self
    }

    pub fn wait_for(mut self, selector: &str) -> Job {
        self.actions.push(Action::WaitFor { wait_for: selector.into() });
        self
    }

    pub fn wait_for_url(mut self, contains: &str) -> Job {
        self.actions.push(Action::WaitForUrl { wait_for_url: contains.into() });
        self
    }

    pub fn count(mut self, selector: &str) -> Job {
        self.count.push(selector.into());
        self
    }

    pub fn text(mut self, selector: &str) -> Job {
        self.text.push(selector.into());
        self
    }
}

/// What the page showed after the job's actions (the driver's JSON, field for field).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageReport {
    /// The final URL (after any navigation).
    pub url: String,
    pub title: String,
    /// Console messages of type `error`, with their source location when known.
    pub console_errors: Vec<String>,
    /// Uncaught exceptions.
    pub page_errors: Vec<String>,
    /// Local requests that failed or were answered with HTTP 4xx/5xx: `URL: reason`.
    pub failed_requests: Vec<String>,
    /// Requests to anything but the loopback and `file:`/`data:`/`blob:` URLs. They are refused by the
    /// driver, never sent: a self-contained page makes none.
    pub external_requests: Vec<String>,
    /// Every `[data-figure]` element: its name → its text, whitespace collapsed and trimmed.
    pub figures: BTreeMap<String, String>,
    /// Every `svg[data-chart]`: its name → the number of its `.point` descendants.
    pub charts: BTreeMap<String, usize>,
    /// Every `a[data-link]`: its name → the (absolute) hrefs, in document order.
    pub links: BTreeMap<String, Vec<String>>,
    /// The job's `count` selectors → number of matches.
    pub counts: BTreeMap<String, usize>,
    /// The job's `text` selectors → the matches' texts, in document order.
    pub texts: BTreeMap<String, Vec<String>>,
    /// Figures or charts of one name that say different things on the same page.
    pub conflicts: Vec<String>,
    /// Where the screenshot is.
    pub screenshot: Option<PathBuf>,
}

impl PageReport {
    /// What is wrong with the page whatever it shows: console errors, uncaught exceptions, failed or
    /// non-local requests, conflicting figures.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        out.extend(self.console_errors.iter().map(|e| format!("console error: {e}")));
        out.extend(self.page_errors.iter().map(|e| format!("uncaught exception: {e}")));
        out.extend(self.failed_requests.iter().map(|e| format!("failed request: {e}")));
        out.extend(self.external_requests.iter().map(|e| format!("non-local request: {e}")));
        out.extend(self.conflicts.iter().map(|e| format!("conflicting {e}")));
        out
    }
}

/// Runs the driver.
pub struct Browser;

impl Browser {
    /// Loads `job.url` in a fresh headless Chromium, performs the actions, reads the page and saves the
    /// screenshot. An error means the check could not be made (Chromium missing or not starting, a step
    /// failing or timing out, a bad job), never that the page is wrong: that is in the report.
    pub fn check(job: &Job) -> anyhow::Result<PageReport> {
        Browser::run(std::slice::from_ref(job), false)?.pop().ok_or_else(|| anyhow!("the driver returned no report"))
    }

    /// Several jobs in one Chromium (one launch, each job on a fresh page), in order: faster than
    /// [`Browser::check`] each when a test looks at many pages. The jobs share one Chromium, step time
    /// limit and viewport. The first job that cannot be checked fails them all, named in the error.
    pub fn check_all(jobs: &[Job]) -> anyhow::Result<Vec<PageReport>> {
        if jobs.is_empty() {
            return Ok(vec![]);
        }
        if jobs.iter().any(|j| j.chromium != jobs[0].chromium || j.step_timeout_ms != jobs[0].step_timeout_ms) {
            bail!("the jobs of one check_all share one Chromium and step time limit");
        }
        let mut names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            bail!("two jobs named {:?} would write one screenshot", w[0]);
        }
        Browser::run(jobs, true)
    }

    fn run(jobs: &[Job], batch: bool) -> anyhow::Result<Vec<PageReport>> {
        let chromium = match &jobs[0].chromium {
            Some(path) => path.clone(),
            None => chromium()?,
        };
        let script = repo().join("tests/browser/check.mjs");
        if !repo().join("tests/browser/node_modules/playwright-core").is_dir() {
            bail!("playwright-core is not installed in tests/browser/node_modules: run scripts/setup-deps");
        }
        let dir = artifacts_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut input = Vec::new();
        for job in jobs {
            let valid = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
            if job.name.is_empty() || job.name.starts_with('.') || !job.name.chars().all(valid) {
                bail!("job name {:?}: use letters, digits, '.', '_' and '-' (it names the screenshot)", job.name);
            }
            let mut value = serde_json::to_value(job)?;
            value["screenshot"] = dir.join(format!("{}.png", job.name)).display().to_string().into();
            value["chromium"] = chromium.display().to_string().into();
            input.push(value);
        }
        let input = if batch { serde_json::Value::Array(input) } else { input.remove(0) };
        let what = if batch { format!("{} pages from {}", jobs.len(), jobs[0].url) } else { jobs[0].url.clone() };

        let node = std::env::var_os("GRANTWATCH_NODE").unwrap_or_else(|| "node".into());
        // The job goes on stdin: no shell, no quoting, no argument-length limit.
        let mut child = Command::new(&node)
            .arg(&script)
            .arg("-")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| {
                format!(
                    "running {} {} (is Node installed? scripts/setup-deps)",
                    node.to_string_lossy(),
                    script.display()
                )
            })?;
        let mut stdin = child.stdin.take().ok_or_else(|| anyhow!("no stdin"))?;
        stdin.write_all(input.to_string().as_bytes())?;
        drop(stdin);
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        // The driver limits each step itself; this only guards against a driver that hangs, so the
        // test fails instead of stalling CI.
        let steps: u64 = jobs.iter().map(|j| j.actions.len() as u64 + 4).sum::<u64>() + 1;
        let deadline =
            Instant::now() + Duration::from_millis(jobs[0].step_timeout_ms * steps) + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{} did not finish by its deadline for {what}; killed", script.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stdout = stdout.join().map_err(|_| anyhow!("stdout reader panicked"))?;
        let stderr = stderr.join().map_err(|_| anyhow!("stderr reader panicked"))?;
        if !status.success() {
            bail!("browser check of {what} failed ({status}): {}", String::from_utf8_lossy(&stderr).trim());
        }
        let unreadable =
            || format!("{} printed unreadable JSON: {}", script.display(), String::from_utf8_lossy(&stdout));
        if batch {
            let reports: Vec<PageReport> = serde_json::from_slice(&stdout).with_context(unreadable)?;
            if reports.len() != jobs.len() {
                bail!("{} returned {} reports for {} jobs", script.display(), reports.len(), jobs.len());
            }
            Ok(reports)
        } else {
            Ok(vec![serde_json::from_slice(&stdout).with_context(unreadable)?])
        }
    }
}

/// `file://` and the absolute path, percent-encoded where a URL needs it (spaces, `#`, `?`, non-ASCII).
pub fn file_url(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut url = String::from("file://");
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            url.push(char::from(b));
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
    url
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    })
}

/// `$GRANTWATCH_CHROMIUM`, else Debian's `/usr/bin/chromium`.
pub fn chromium() -> anyhow::Result<PathBuf> {
    let path =
        std::env::var_os("GRANTWATCH_CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    if !path.is_file() {
        bail!(
            "Chromium not found at {}: run scripts/setup-deps (Debian's chromium) or set GRANTWATCH_CHROMIUM",
            path.display()
        );
    }
    Ok(path)
}

/// Where screenshots go: `$GRANTWATCH_TEST_ARTIFACTS/browser/`, else `test-artifacts/browser/` in
/// Cargo's target directory (`$CARGO_TARGET_DIR`, else the workspace's `target/`).
pub fn artifacts_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("GRANTWATCH_TEST_ARTIFACTS") {
        return PathBuf::from(dir).join("browser");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo().join("target"), PathBuf::from);
    let target = if target.is_absolute() { target } else { repo().join(target) };
    target.join("test-artifacts/browser")
}

/// How the page differs from the JSON of the same report, plus its [`PageReport::problems`]. The JSON's
/// `figures` object (name → string, number, bool or null) must each equal the page's `data-figure` text:
/// strings as they are, numbers and bools as JSON prints them (`72.5`, `4`, `true`), null as empty text.
/// Its `charts` object (name → array) must each have as many items as the page's chart has `.point`s.
/// A JSON with neither has nothing to hold the page to, which is itself a mismatch.
pub fn page_mismatches(report: &PageReport, json: &serde_json::Value) -> Vec<String> {
    let mut out = report.problems();
    let figures = json.get("figures");
    let charts = json.get("charts");
    if figures.is_none() && charts.is_none() {
        out.push("the JSON has no \"figures\" or \"charts\" to compare the page with".into());
    }
    match figures {
        None => {}
        Some(serde_json::Value::Object(figures)) => {
            for (name, value) in figures {
                let expected = match value {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Null => String::new(),
                    serde_json::Value::Number(_) | serde_json::Value::Bool(_) => value.to_string(),
                    other => {
                        out.push(format!(
                            "figure {name:?}: the JSON holds {other}, not a string, number, bool or null"
                        ));
                        continue;
                    }
                };
                match report.figures.get(name) {
                    None => {
                        out.push(format!("figure {name:?} ({expected}) is not on the page (no [data-figure={name:?}])"))
                    }
                    Some(shown) if *shown != expected => {
                        out.push(format!("figure {name:?}: the page shows {shown:?}, the JSON says {expected:?}"))
                    }
                    Some(_) => {}
                }
            }
        }
        Some(other) => out.push(format!("the JSON's \"figures\" is not an object: {other}")),
    }
    match charts {
        None => {}
        Some(serde_json::Value::Object(charts)) => {
            for (name, value) in charts {
                let Some(items) = value.as_array() else {
                    out.push(format!("chart {name:?}: the JSON holds {value}, not an array"));
                    continue;
                };
                match report.charts.get(name) {
                    None => out.push(format!("chart {name:?} is not on the page (no svg[data-chart={name:?}])")),
                    Some(&points) if points != items.len() => out
                        .push(format!("chart {name:?}: the page draws {points} points, the JSON has {}", items.len())),
                    Some(_) => {}
                }
            }
        }
        Some(other) => out.push(format!("the JSON's \"charts\" is not an object: {other}")),
    }
    out
}

/// Panics, listing every mismatch and naming the screenshot, unless the page has no problems and
/// shows what the JSON says ([`page_mismatches`]).
#[track_caller]
pub fn assert_page_matches_json(report: &PageReport, json: &serde_json::Value) {
    let mismatches = page_mismatches(report, json);
    assert!(
        mismatches.is_empty(),
        "{} does not match its JSON:\n  {}\n(screenshot: {})",
        report.url,
        mismatches.join("\n  "),
        report.screenshot.as_ref().map_or("none".into(), |p| p.display().to_string())
    );
}

/// Panics, listing them, if the page has any [`PageReport::problems`] (for pages with no JSON twin,
/// such as `serve`'s).
#[track_caller]
pub fn assert_page_clean(report: &PageReport) {
    let problems = report.problems();
    assert!(
        problems.is_empty(),
        "{} has problems:\n  {}\n(screenshot: {})",
        report.url,
        problems.join("\n  "),
        report.screenshot.as_ref().map_or("none".into(), |p| p.display().to_string())
    );
}
