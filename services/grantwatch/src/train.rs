//! `grantwatch train`: the detection pass over history, collecting identity-hour windows instead of
//! scoring them, then the models fitted on them and written with their manifest.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use grantwatch_detect::ml::{
    MANIFEST_FILE, MODEL_FILE, Manifest, ROUTINE_MIN_IDENTITIES, ROUTINE_SHARE, RoutineAnalytic, TrainParams,
    TrainingWindow, train as fit,
};
use grantwatch_detect::stage::Detection;
use grantwatch_files::Input;
use grantwatch_s3::S3Config;
use grantwatch_types::{DetectionFinding, EventTime};

use crate::detect::{PassOptions, run_pass};

/// Trains on `cloudtrail` (local paths and `s3://` prefixes, S3 reached with `s3`) and writes
/// `manifest.json` and `model.json` into `out`.
pub fn train(
    detection: Arc<Detection>,
    cloudtrail: &[Input],
    s3: &S3Config,
    params: &TrainParams,
    out: &Path,
) -> Result<Manifest> {
    // The alerts of the training pass tell which analytics are routine in this organization.
    let scratch = tempfile::Builder::new().prefix("grantwatch-train-").tempdir().context("creating a scratch dir")?;
    let alerts_path = scratch.path().join("alerts.jsonl");
    let pass = run_pass(&PassOptions {
        detection: detection.clone(),
        cloudtrail,
        s3: s3.clone(),
        grants: &[],
        collect_windows: true,
        alerts_path: Some(&alerts_path),
    })?;
    if pass.windows.is_empty() {
        bail!(
            "no events to learn from in {}",
            cloudtrail.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        );
    }
    let mut model = fit(&pass.windows, params).context("fitting the models")?;
    model.set_routine(routine_analytics(&pass.windows, &alerts_path)?);
    let inputs: Vec<String> = cloudtrail.iter().map(ToString::to_string).collect();
    model.set_created_from(format!("grantwatch train --cloudtrail {} ({} events)", inputs.join(" "), pass.events));
    let (manifest_json, model_json) = model.split_for_files()?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    // Model first, manifest last: a directory with a manifest has a complete model beside it.
    std::fs::write(out.join(MODEL_FILE), model_json).with_context(|| format!("writing {}", out.display()))?;
    std::fs::write(out.join(MANIFEST_FILE), manifest_json).with_context(|| format!("writing {}", out.display()))?;
    Ok(model.manifest().clone())
}

/// The analytics that alerted on at least [`ROUTINE_SHARE`] of the identities active in training (and
/// on at least [`ROUTINE_MIN_IDENTITIES`]), read from the training pass's alerts, one line at a time.
fn routine_analytics(windows: &[TrainingWindow], alerts: &Path) -> Result<Vec<RoutineAnalytic>> {
    let active: BTreeSet<&str> = windows.iter().map(|w| w.identity.as_str()).collect();
    let mut alerted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let file = std::fs::File::open(alerts).with_context(|| format!("reading {}", alerts.display()))?;
    for (i, line) in std::io::BufRead::lines(std::io::BufReader::new(file)).enumerate() {
        let line = line.with_context(|| format!("reading {}", alerts.display()))?;
        let a: DetectionFinding =
            serde_json::from_str(&line).with_context(|| format!("{}: line {}", alerts.display(), i + 1))?;
        alerted.entry(a.finding_info.analytic.uid).or_default().insert(a.actor.user.uid);
    }
    Ok(alerted
        .into_iter()
        .filter(|(_, ids)| {
            ids.len() >= ROUTINE_MIN_IDENTITIES && ids.len() as f64 >= ROUTINE_SHARE * active.len() as f64
        })
        .map(|(analytic, ids)| RoutineAnalytic { analytic, identities: ids.len(), active: active.len() })
        .collect())
}

pub fn write_manifest_summary(w: &mut impl Write, m: &Manifest, out: &Path) -> Result<()> {
    let e = &m.evaluation;
    writeln!(
        w,
        "Trained on {} identity-hours of {} identities ({} .. {}): {} peer groups {:?}, {} identity baselines",
        m.windows,
        m.identities,
        EventTime(m.training_window.from_ms),
        EventTime(m.training_window.to_ms),
        m.peer_groups,
        m.group_sizes,
        m.identity_baselines
    )?;
    writeln!(
        w,
        "Threshold {:.2} (calibrated {:.2}); held-out tail: {} windows, {} identity-days, {} over threshold = {:.2} false alerts per 1,000 identity-days",
        m.threshold,
        e.calibrated_threshold,
        e.holdout_windows,
        e.holdout_identity_days,
        e.alerts_in_holdout,
        e.false_alerts_per_1000_identity_days
    )?;
    for r in &m.routine {
        writeln!(
            w,
            "Routine in this organization (reported as low): {} alerted on {} of {} identities in training",
            r.analytic, r.identities, r.active
        )?;
    }
    writeln!(w, "Wrote {} and {}", out.join(MODEL_FILE).display(), out.join(MANIFEST_FILE).display())?;
    Ok(())
}
