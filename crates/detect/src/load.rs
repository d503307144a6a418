//! Reading the rules directory and the model directory: the only filesystem access of this crate,
//! shared by `grantwatch analyze`, `grantwatch eval` and `grantwatch-detector` so all three load
//! detection the same way.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use grantwatch_core::catalog::Catalog;

use crate::ml::{MODEL_FILE, MlError, ModelSet};
use crate::rules::{RulesConfig, RulesConfigError};
use crate::sigma::SigmaSet;
use crate::stage::Detection;

/// The per-analytic settings file inside the rules directory.
pub const RULES_CONFIG_FILE: &str = "grantwatch.toml";

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Config(#[from] RulesConfigError),
    #[error("{path}: {source}")]
    Model { path: PathBuf, source: MlError },
}

/// What was loaded, for the log and the run summary.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub sigma_rules: usize,
    /// Sigma files that did not load, with the reason (they are skipped, not fatal: one broken
    /// community rule must not stop detection).
    pub sigma_errors: Vec<String>,
    pub model: Option<String>,
}

/// Loads detection from `rules_dir` (Sigma `*.yml` at any depth, optional `grantwatch.toml`) and,
/// if given, the model in `models_dir` (refused if its feature version differs).
pub fn load_detection(
    catalog: Arc<Catalog>,
    rules_dir: &Path,
    models_dir: Option<&Path>,
) -> Result<(Detection, Loaded), LoadError> {
    let mut files = Vec::new();
    collect_yaml(rules_dir, &mut files)?;
    files.sort();
    let mut sources = Vec::with_capacity(files.len());
    for path in &files {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io { path: path.clone(), source })?;
        sources.push((path.display().to_string(), text));
    }
    let (sigma, errors) = SigmaSet::load(&sources);
    let config_path = rules_dir.join(RULES_CONFIG_FILE);
    let config = match std::fs::read_to_string(&config_path) {
        Ok(text) => RulesConfig::parse(&config_path.display().to_string(), &text, &|id| Detection::knows(&sigma, id))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => RulesConfig::default(),
        Err(source) => return Err(LoadError::Io { path: config_path, source }),
    };
    let model = match models_dir {
        Some(dir) => {
            let path = dir.join(MODEL_FILE);
            let text = std::fs::read_to_string(&path).map_err(|source| LoadError::Io { path: path.clone(), source })?;
            Some(ModelSet::from_json(&text).map_err(|source| LoadError::Model { path, source })?)
        }
        None => None,
    };
    let loaded = Loaded {
        sigma_rules: sigma.rules().len(),
        sigma_errors: errors.iter().map(|e| e.to_string()).collect(),
        model: model.as_ref().map(|m| {
            let man = m.manifest();
            format!(
                "{} identities, {} peer groups, feature version {}",
                man.identities, man.peer_groups, man.feature_version
            )
        }),
    };
    Ok((Detection { catalog, config, sigma, model }, loaded))
}

fn collect_yaml(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), LoadError> {
    let entries = std::fs::read_dir(dir).map_err(|source| LoadError::Io { path: dir.to_path_buf(), source })?;
    for entry in entries {
        let entry = entry.map_err(|source| LoadError::Io { path: dir.to_path_buf(), source })?;
        let path = entry.path();
        if path.is_dir() {
            collect_yaml(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "yml" || e == "yaml") {
            out.push(path);
        }
    }
    Ok(())
}
