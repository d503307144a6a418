//! Where a request's data comes from: the state, opened read-only for the request, and analyze's results,
//! cached until analyze renames new files into place.
//!
//! Opening RocksDB read-only takes no lock, but it replays the write-ahead log into a fresh memtable:
//! on the sample organization, whose whole state is an 11 MB WAL, that is most of a page's time
//! (`docs/benchmarks.md`, "Web view"). So the read-only handle is kept while the state directory's
//! files (CURRENT, MANIFEST, WALs, SSTs: names, sizes, mtimes; one directory listing per request) stay
//! as they were, and reopened as soon as a writer changes any of them: a handle never goes on reading a
//! state that has moved on, and never reads a file a compaction deleted after it was listed. A page
//! that fails on the state drops the handle too.
//! Reading `identities.jsonl` is slow as well (a second for 5,000 identities with their action lists),
//! so results are cached by each file's (size, mtime); analyze writes each through a temporary file
//! renamed into place, so a changed fingerprint always means a complete new file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use grantwatch_report::{Filters, Kind, Report, Results};
use grantwatch_state::StateError;
use grantwatch_state_rocks::RocksStore;
use grantwatch_types::DetectionFinding;
use rustc_hash::FxHashMap;

use super::{PageError, ServeOptions, build_error};

/// analyze's results, with the indexes the list pages use, read once per version of the files.
pub(super) struct Loaded {
    pub(super) results: Results,
    /// One alert per uid (a repeat is another record with the same uid: the latest stands for the
    /// incident, as the `alert` report takes it), newest first.
    pub(super) alerts: Vec<usize>,
    /// Distinct alerts per identity uid.
    pub(super) alerts_per_identity: FxHashMap<String, usize>,
    pub(super) clouds: BTreeSet<String>,
    pub(super) accounts: BTreeSet<String>,
    pub(super) analytics: BTreeSet<String>,
    pub(super) severities: BTreeSet<String>,
}

impl Loaded {
    fn new(results: Results) -> Loaded {
        let mut latest: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, a) in results.alerts.iter().enumerate() {
            let e = latest.entry(a.finding_info.uid.as_str()).or_insert(i);
            let cur = &results.alerts[*e];
            if (a.count, a.time) > (cur.count, cur.time) {
                *e = i;
            }
        }
        let mut alerts: Vec<usize> = latest.into_values().collect();
        alerts.sort_by(|a, b| {
            let (x, y) = (&results.alerts[*a], &results.alerts[*b]);
            y.time.cmp(&x.time).then_with(|| x.finding_info.uid.cmp(&y.finding_info.uid))
        });
        let mut alerts_per_identity: FxHashMap<String, usize> = FxHashMap::default();
        for i in &alerts {
            *alerts_per_identity.entry(results.alerts[*i].actor.user.uid.clone()).or_default() += 1;
        }
        let clouds = results.identities.iter().map(|i| i.cloud.as_str().to_string()).collect();
        let accounts = results.identities.iter().map(|i| i.account.clone()).collect();
        let analytics = results.alerts.iter().map(|a| a.finding_info.analytic.uid.clone()).collect();
        let severities = results.alerts.iter().map(|a| a.severity.clone()).collect();
        Loaded { results, alerts, alerts_per_identity, clouds, accounts, analytics, severities }
    }

    pub(super) fn alert(&self, i: usize) -> &DetectionFinding {
        &self.results.alerts[i]
    }
}

/// One request's view: the results, and the state when the page reads it.
pub(super) struct Snapshot {
    pub(super) loaded: Arc<Loaded>,
    pub(super) store: Option<Arc<RocksStore>>,
}

impl Snapshot {
    /// Builds a report as `grantwatch report` does.
    pub(super) fn build(&self, kind: Kind, filters: &Filters) -> Result<Report, PageError> {
        let store = self.store.as_ref().ok_or_else(|| PageError::internal("the state was not opened"))?;
        grantwatch_report::build(kind, store.as_ref(), &self.loaded.results, filters).map_err(build_error)
    }
}

type Fingerprint = (PathBuf, Vec<Option<(u64, SystemTime)>>);

/// The state directory's files as a writer leaves them (the info `LOG` aside: opening writes it).
type StatePrint = Vec<(std::ffi::OsString, u64, Option<SystemTime>)>;

pub(super) struct Source {
    opts: ServeOptions,
    cache: Mutex<Option<(Fingerprint, Arc<Loaded>)>>,
    state: Mutex<Option<(StatePrint, Arc<RocksStore>)>>,
}

/// A state error as a page: corruption is the operator's problem (500); anything else the engine says
/// (a missing file mid-compaction, an unreadable directory) is most likely passing (503).
pub(super) fn state_error(what: &str, e: &StateError) -> PageError {
    match e {
        StateError::Corrupt { .. } => PageError::internal(format!("{what}: {e}")),
        StateError::Engine(m) if m.contains("Corruption") => PageError::internal(format!("{what}: {e}")),
        StateError::Engine(_) => PageError::unavailable(format!("{what}: {e}")),
    }
}

const RESULT_FILES: [&str; 4] = ["identities.jsonl", "alerts.jsonl", "accounts.json", "resource_access.jsonl"];

impl Source {
    pub(super) fn new(opts: ServeOptions) -> Source {
        Source { opts, cache: Mutex::new(None), state: Mutex::new(None) }
    }

    /// Opens the state read-only (always: it says where the results are) and the results (cached).
    /// `keep_state`: the page reads the state too, so the handle is kept for the request.
    pub(super) fn snapshot(&self, keep_state: bool) -> Result<Snapshot, PageError> {
        let store = self.open_state()?;
        let dir = match &self.opts.results {
            Some(d) => d.clone(),
            None => crate::report::recorded_results(store.as_ref())
                .map_err(|e| PageError::unavailable(format!("reading the results directory from the state: {e:#}")))?
                .ok_or_else(|| {
                    PageError::unavailable(format!(
                        "the state {} records no results directory yet (analyze writes it when a run ends): \
                         wait for analyze, or start serve with --results DIR",
                        self.opts.state.display()
                    ))
                })?,
        };
        let loaded = self.results(&dir)?;
        Ok(Snapshot { loaded, store: keep_state.then_some(store) })
    }

    /// Drops the kept handle (a page failed reading through it).
    pub(super) fn forget_state(&self) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn open_state(&self) -> Result<Arc<RocksStore>, PageError> {
        let print = state_print(&self.opts.state);
        if let Some(print) = &print {
            let kept = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((k, store)) = kept.as_ref()
                && k == print
            {
                return Ok(store.clone());
            }
        }
        let store = Arc::new(self.open_state_now()?);
        // Kept only if nothing changed while it opened: else the next request opens again.
        if let Some(print) = print
            && state_print(&self.opts.state).as_ref() == Some(&print)
        {
            *self.state.lock().unwrap_or_else(|p| p.into_inner()) = Some((print, store.clone()));
        } else {
            self.forget_state();
        }
        Ok(store)
    }

    fn open_state_now(&self) -> Result<RocksStore, PageError> {
        let state = &self.opts.state;
        if !state.is_dir() {
            return Err(PageError::unavailable(format!(
                "no state directory at {} (run `grantwatch analyze --state {0}` first)",
                state.display()
            )));
        }
        if !state.join(grantwatch_state_rocks::STATE_MARKER).exists() {
            return Err(PageError::unavailable(format!(
                "{} is not a grantwatch state directory (no {}): run `grantwatch analyze --state {0}`",
                state.display(),
                grantwatch_state_rocks::STATE_MARKER
            )));
        }
        // A writer compacting or flushing can delete a file between the read of its MANIFEST and the
        // open of the file: a second try a moment later sees the new MANIFEST.
        let mut last = None;
        for attempt in 0..3u32 {
            match RocksStore::open_read_only(state) {
                Ok(s) => return Ok(s),
                Err(e) => {
                    tracing::debug!(attempt, error = %e, "Opening the state read-only failed; retrying.");
                    last = Some(e);
                    std::thread::sleep(Duration::from_millis(20 * u64::from(attempt + 1)));
                }
            }
        }
        let e = last.unwrap_or_else(|| StateError::Engine("no attempt made".into()));
        Err(state_error(&format!("opening the state {} read-only", state.display()), &e))
    }

    fn results(&self, dir: &Path) -> Result<Arc<Loaded>, PageError> {
        let fp = fingerprint(dir);
        {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((k, v)) = cache.as_ref()
                && *k == fp
            {
                return Ok(v.clone());
            }
        }
        // Loaded outside the lock: a slow load does not hold up pages served from the cache. Two
        // requests may both load a new version; the second store wins, both are the same data.
        let results = Results::load(dir).map_err(|e| {
            PageError::unavailable(format!(
                "reading analyze's results in {} (override with --results): {e}",
                dir.display()
            ))
        })?;
        let loaded = Arc::new(Loaded::new(results));
        tracing::info!(dir = %dir.display(), identities = loaded.results.identities.len(), "Results read.");
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = Some((fp, loaded.clone()));
        Ok(loaded)
    }
}

fn state_print(dir: &Path) -> Option<StatePrint> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).ok()? {
        let e = e.ok()?;
        let name = e.file_name();
        if name.to_string_lossy().starts_with("LOG") {
            continue;
        }
        let m = e.metadata().ok()?;
        out.push((name, m.len(), m.modified().ok()));
    }
    out.sort();
    Some(out)
}

fn fingerprint(dir: &Path) -> Fingerprint {
    let files = RESULT_FILES
        .iter()
        .map(|f| std::fs::metadata(dir.join(f)).ok().and_then(|m| Some((m.len(), m.modified().ok()?))))
        .collect();
    (dir.to_path_buf(), files)
}
