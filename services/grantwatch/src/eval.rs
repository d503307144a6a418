//! `grantwatch eval`: detection measured on a labeled scenario (`grantwatch scenario`).
//!
//! Trains the models on the scenario's attack-free history (unless models are given), runs the same
//! detection pass as `analyze` over history and detection days with the scenario's IAM snapshots,
//! writes the alerts, and scores them against the labels: precision, recall per technique, and false
//! alerts per 1,000 identities per day over the detection days.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use grantwatch_detect::ml::TrainParams;
use grantwatch_detect::stage::Detection;
use grantwatch_files::Input;
use grantwatch_s3::S3Config;
use grantwatch_synth::scenario::ScenarioSummary;
use grantwatch_synth::scenario::eval::{EvalReport, Labels, score};
use grantwatch_types::DetectionFinding;

use crate::analyze::{PassOutcome, load_grants};
use crate::detect::{PassOptions, run_pass};

pub struct EvalOptions {
    pub scenario: PathBuf,
    pub rules: PathBuf,
    /// Trained models to use; `None`: train on the scenario's history into `<scenario>/models`.
    pub models: Option<PathBuf>,
    pub train: TrainParams,
}

pub struct EvalOutcome {
    pub report: EvalReport,
    pub pass: PassOutcome,
    pub models: PathBuf,
    pub alerts: PathBuf,
    pub trained: Option<grantwatch_detect::ml::Manifest>,
}

pub fn run(opts: &EvalOptions) -> Result<EvalOutcome> {
    let dir = &opts.scenario;
    let summary = ScenarioSummary::load(&dir.join("scenario.json")).context("reading the scenario summary")?;
    let labels = Labels::load(&dir.join("labels.jsonl")).context("reading the scenario labels")?;
    let catalog = Arc::new(grantwatch_core::catalog::Catalog::aws().context("loading the AWS action catalog")?);
    let history = dir.join("history");
    let (models, trained) = match &opts.models {
        Some(m) => (m.clone(), None),
        None => {
            let out = dir.join("models");
            let (det, _) = grantwatch_detect::load::load_detection(catalog.clone(), &opts.rules, None)?;
            let inputs = [Input::Local(history.clone())];
            let manifest = crate::train::train(Arc::new(det), &inputs, &S3Config::default(), &opts.train, &out)?;
            (out, Some(manifest))
        }
    };
    let (detection, _) = grantwatch_detect::load::load_detection(catalog.clone(), &opts.rules, Some(&models))
        .with_context(|| format!("loading rules from {} and models from {}", opts.rules.display(), models.display()))?;
    let detection: Arc<Detection> = Arc::new(detection);
    let (grants, _) = load_grants(&[dir.join("iam")], &catalog)?;
    let alerts_path = dir.join("alerts.jsonl");
    let pass = run_pass(&PassOptions {
        detection,
        cloudtrail: &[Input::Local(history), Input::Local(dir.join("detect"))],
        s3: S3Config::default(),
        grants: &grants,
        collect_windows: false,
        alerts_path: Some(&alerts_path),
    })?;
    let alerts = read_alerts(&alerts_path)?;
    let report = score(&alerts, &labels, &summary);
    Ok(EvalOutcome { report, pass, models, alerts: alerts_path, trained })
}

fn read_alerts(path: &Path) -> Result<Vec<DetectionFinding>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("{}: line {}", path.display(), i + 1)))
        .collect()
}
