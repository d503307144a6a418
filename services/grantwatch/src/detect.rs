//! Detection over files for `train` and `eval`: the runtime's file runner on a scratch state, so the
//! pass always covers its whole input. `analyze` runs the very same runner (with usage findings and,
//! with `--state`, persistent state); training windows come from the same feature code that scores.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use grantwatch_core::cloudtrail::{ActionMap, Normalizer};
use grantwatch_core::policy::IdentityGrants;
use grantwatch_detect::stage::Detection;
use grantwatch_files::{Input, QuarantineWriter};
use grantwatch_runtime::file_run::{self, AlertSink, FileRunOptions, NoAlerts};
use grantwatch_runtime::pipeline::PipelineConfig;
use grantwatch_s3::S3Config;
use grantwatch_state_rocks::RocksStore;

use crate::analyze::PassOutcome;
use crate::output::AlertFile;

pub struct PassOptions<'a> {
    pub detection: Arc<Detection>,
    pub cloudtrail: &'a [Input],
    /// How to reach S3 for the `s3://` inputs.
    pub s3: S3Config,
    /// Entitlements, for PCI updates (empty: no permission analytics).
    pub grants: &'a [IdentityGrants],
    /// Keep every closed identity-hour window (for `grantwatch train`).
    pub collect_windows: bool,
    /// Where alerts go (JSON Lines), if anywhere.
    pub alerts_path: Option<&'a Path>,
}

/// Runs detection over `opts.cloudtrail` on a scratch state.
pub fn run_pass(opts: &PassOptions<'_>) -> Result<PassOutcome> {
    let catalog = opts.detection.catalog.clone();
    let normalizer = Normalizer::new(ActionMap::new(catalog.clone()).context("loading the CloudTrail action map")?);
    let scratch = tempfile::Builder::new().prefix("grantwatch-detect-").tempdir().context("creating a scratch dir")?;
    let store = RocksStore::open(&scratch.path().join("state")).context("opening the detection scratch state")?;
    // Bad records are reported by `analyze`; here they are only counted.
    let quarantine = QuarantineWriter::new(scratch.path().join("quarantine.jsonl"));
    let mut alert_file = match opts.alerts_path {
        Some(p) => Some(AlertFile::open(p, &store)?),
        None => None,
    };
    let sink: &mut dyn AlertSink = match &mut alert_file {
        Some(f) => f,
        None => &mut NoAlerts,
    };
    let run_opts = FileRunOptions {
        cloudtrail: opts.cloudtrail,
        s3: opts.s3.clone(),
        grants: opts.grants.iter().cloned().map(Arc::new).collect(),
        pipeline: PipelineConfig { collect_windows: opts.collect_windows, ..PipelineConfig::default() },
        skip_ingested: false,
        ..FileRunOptions::new(catalog, &normalizer, Some(opts.detection.clone()))
    };
    let mut outcome = file_run::run(&run_opts, &store, &quarantine, sink).context("reading CloudTrail")?;
    if let Some(f) = alert_file {
        f.finish()?;
    }
    PassOutcome::of(&mut outcome).context("detection did not run")
}
