//! analyze's results directory, read for a report: `identities.jsonl`, `alerts.jsonl`,
//! `accounts.json`, `resource_access.jsonl` (each optional but `identities.jsonl`).

use std::io::BufRead;
use std::path::{Path, PathBuf};

use grantwatch_types::{AccountsReport, DetectionFinding, IdentityFinding, ResourceAccess};

/// Why a results directory could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    #[error("reading {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} line {line}: not a valid record: {reason}")]
    Record { path: PathBuf, line: u64, reason: String },
    #[error("{path}: not valid JSON: {reason}")]
    Json { path: PathBuf, reason: String },
}

/// analyze's outputs.
#[derive(Debug, Default)]
pub struct Results {
    pub dir: PathBuf,
    pub identities: Vec<IdentityFinding>,
    pub alerts: Vec<DetectionFinding>,
    pub accounts: Option<AccountsReport>,
    pub resource_access: Vec<ResourceAccess>,
}

impl Results {
    /// Reads `dir`. `identities.jsonl` must exist; the others are read when present (no detection, no
    /// alerts file).
    pub fn load(dir: &Path) -> Result<Results, ResultsError> {
        let identities = read_lines(&dir.join("identities.jsonl"), true)?;
        let alerts = read_lines(&dir.join("alerts.jsonl"), false)?;
        let resource_access = read_lines(&dir.join("resource_access.jsonl"), false)?;
        let accounts_path = dir.join("accounts.json");
        let accounts = match std::fs::read(&accounts_path) {
            Ok(b) => Some(
                serde_json::from_slice(&b)
                    .map_err(|e| ResultsError::Json { path: accounts_path.clone(), reason: e.to_string() })?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => return Err(ResultsError::Io { path: accounts_path, source }),
        };
        Ok(Results { dir: dir.to_path_buf(), identities, alerts, accounts, resource_access })
    }
}

fn read_lines<T: serde::de::DeserializeOwned>(path: &Path, required: bool) -> Result<Vec<T>, ResultsError> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => return Ok(Vec::new()),
        Err(source) => return Err(ResultsError::Io { path: path.to_path_buf(), source }),
    };
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|source| ResultsError::Io { path: path.to_path_buf(), source })?;
        if line.trim().is_empty() {
            continue;
        }
        let rec = serde_json::from_str(&line).map_err(|e| ResultsError::Record {
            path: path.to_path_buf(),
            line: i as u64 + 1,
            reason: format!("{:?} error at column {}", e.classify(), e.column()),
        })?;
        out.push(rec);
    }
    Ok(out)
}
