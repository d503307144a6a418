//! `grantwatch train`: the detection pass over history, collecting identity-hour windows instead of
//! scoring them, then the models fitted on them and written with their manifest.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use grantwatch_detect::ml::{MANIFEST_FILE, MODEL_FILE, Manifest, TrainParams, train as fit};
use grantwatch_detect::stage::Detection;
use grantwatch_files::Input;
use grantwatch_s3::S3Config;
use grantwatch_types::EventTime;

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
    let pass = run_pass(&PassOptions {
        detection: detection.clone(),
        cloudtrail,
        s3: s3.clone(),
        grants: &[],
        collect_windows: true,
        alerts_path: None,
    })?;
    if pass.windows.is_empty() {
        bail!(
            "no events to learn from in {}",
            cloudtrail.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        );
    }
    let mut model = fit(&pass.windows, params).context("fitting the models")?;
    let inputs: Vec<String> = cloudtrail.iter().map(ToString::to_string).collect();
    model.set_created_from(format!("grantwatch train --cloudtrail {} ({} events)", inputs.join(" "), pass.events));
    let (manifest_json, model_json) = model.split_for_files()?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    // Model first, manifest last: a directory with a manifest has a complete model beside it.
    std::fs::write(out.join(MODEL_FILE), model_json).with_context(|| format!("writing {}", out.display()))?;
    std::fs::write(out.join(MANIFEST_FILE), manifest_json).with_context(|| format!("writing {}", out.display()))?;
    Ok(model.manifest().clone())
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
    writeln!(w, "Wrote {} and {}", out.join(MODEL_FILE).display(), out.join(MANIFEST_FILE).display())?;
    Ok(())
}
