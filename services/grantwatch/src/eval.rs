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
    let catalog = grantwatch_core::catalog::Catalog::all_clouds_shared().context("loading the action catalog")?;
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

/// A labeled directory of real attack logs (Stratus Red Team's detonation logs, or any like it): each
/// file is one technique, named by the file (`aws.persistence.iam-backdoor-role.json`), and every
/// record in it belongs to that technique.
pub struct LabeledOptions {
    pub dir: PathBuf,
    pub rules: PathBuf,
    pub models: Option<PathBuf>,
}

/// What detection made of one technique's file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TechniqueResult {
    pub technique: String,
    pub file: String,
    pub events: u64,
    /// Alerts that name at least one of the file's records.
    pub alerts: usize,
    /// The analytics of those alerts, with their titles.
    pub analytics: Vec<(String, String)>,
    pub detected: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct LabeledReport {
    pub techniques: Vec<TechniqueResult>,
    pub detected: usize,
    pub total: usize,
}

impl std::fmt::Display for LabeledReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{:<58} {:>6} {:>6}  analytics", "technique", "events", "alerts")?;
        for t in &self.techniques {
            let mark = if t.detected { "" } else { "  MISSED" };
            let names: Vec<&str> = t.analytics.iter().map(|(id, _)| id.as_str()).collect();
            writeln!(f, "{:<58} {:>6} {:>6}  {}{mark}", t.technique, t.events, t.alerts, names.join(", "))?;
        }
        writeln!(f, "\ndetected: {} of {} techniques", self.detected, self.total)
    }
}

/// Replays each file of the labeled directory on its own (no IAM snapshot, no history: what a new user
/// who points grantwatch at an incident's logs gets) and tells which techniques raised an alert that
/// names their records.
pub fn run_labeled(opts: &LabeledOptions) -> Result<LabeledReport> {
    let catalog = grantwatch_core::catalog::Catalog::all_clouds_shared().context("loading the action catalog")?;
    let (detection, _) = grantwatch_detect::load::load_detection(catalog, &opts.rules, opts.models.as_deref())
        .with_context(|| format!("loading rules from {}", opts.rules.display()))?;
    let detection = Arc::new(detection);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&opts.dir)
        .with_context(|| format!("reading {}", opts.dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            p.is_file() && [".json", ".json.gz", ".jsonl"].iter().any(|ext| name.ends_with(ext))
        })
        .collect();
    files.sort();
    let scratch = tempfile::Builder::new().prefix("grantwatch-eval-").tempdir().context("creating a scratch dir")?;
    let mut techniques = Vec::with_capacity(files.len());
    for (i, file) in files.iter().enumerate() {
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let technique = ["json.gz", "jsonl", "json"]
            .iter()
            .find_map(|ext| name.strip_suffix(&format!(".{ext}")))
            .unwrap_or(&name)
            .to_string();
        let alerts_path = scratch.path().join(format!("alerts-{i}.jsonl"));
        let pass = run_pass(&PassOptions {
            detection: detection.clone(),
            cloudtrail: &[Input::Local(file.clone())],
            s3: S3Config::default(),
            grants: &[],
            collect_windows: false,
            alerts_path: Some(&alerts_path),
        })
        .with_context(|| format!("replaying {}", file.display()))?;
        let alerts: Vec<DetectionFinding> =
            read_alerts(&alerts_path)?.into_iter().filter(|a| !a.finding_info.related_events.is_empty()).collect();
        let mut analytics: Vec<(String, String)> =
            alerts.iter().map(|a| (a.finding_info.analytic.uid.clone(), a.finding_info.title.clone())).collect();
        analytics.sort();
        analytics.dedup();
        techniques.push(TechniqueResult {
            technique,
            file: name,
            events: pass.events,
            alerts: alerts.len(),
            detected: !alerts.is_empty(),
            analytics,
        });
    }
    let detected = techniques.iter().filter(|t| t.detected).count();
    Ok(LabeledReport { total: techniques.len(), detected, techniques })
}
