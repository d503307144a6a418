//! Where `analyze` writes: the report files, the summary table and the progress bar.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use grantwatch_runtime::file_run::AlertSink;
use grantwatch_state::{StateRead, Table, WriteBatch};
use grantwatch_types::{DetectionFinding, IdentityFinding};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::analyze::AnalyzeOutcome;

/// The files of one run's `--out` directory.
#[derive(Debug, Clone)]
pub struct Outputs {
    pub identities: PathBuf,
    pub accounts: PathBuf,
    pub ingest_report: PathBuf,
    /// `resource_access.jsonl`: public, cross-account and federated access by trust and resource policies.
    pub resource_access: PathBuf,
    /// `alerts.jsonl`, when detection ran.
    pub alerts: Option<PathBuf>,
    /// `humans.jsonl`: each human's identities in every cloud, granted vs used, one PCI.
    pub humans: PathBuf,
}

impl Outputs {
    pub fn new(dir: &Path) -> Self {
        Self {
            identities: dir.join("identities.jsonl"),
            accounts: dir.join("accounts.json"),
            ingest_report: dir.join("ingest_report.json"),
            resource_access: dir.join("resource_access.jsonl"),
            alerts: None,
            humans: dir.join("humans.jsonl"),
        }
    }

    pub fn identities_writer(&self) -> Result<JsonLinesWriter> {
        JsonLinesWriter::create(&self.identities)
    }

    /// Writes `value` as pretty JSON through a temporary file renamed into place: a reader never sees
    /// half a report, and a symlink planted at `path` is replaced, never written through.
    pub fn write_json<T: serde::Serialize>(&self, path: &Path, value: &T) -> Result<()> {
        let tmp = tmp_path(path);
        let mut w = BufWriter::new(create_fresh(&tmp)?);
        serde_json::to_writer_pretty(&mut w, value).with_context(|| format!("writing {}", tmp.display()))?;
        w.write_all(b"\n")?;
        w.flush().with_context(|| format!("writing {}", tmp.display()))?;
        drop(w);
        std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
    }
}

/// Creates the output directory (and its parents).
pub fn create_out_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating output dir {}", dir.display()))
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Creates `path` as a new regular file: whatever is there (a stale file, a symlink pointing
/// elsewhere) is removed first, and the create refuses to follow a link that appears meanwhile.
fn create_fresh(path: &Path) -> Result<File> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("replacing {}", path.display())),
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))
}

/// `alerts.jsonl`, appended as alerts are made, with exactly-once in effect across crashes: every
/// state commit records how many bytes of it are durable (after an fsync), and opening the file with
/// the same state cuts whatever a killed run wrote after its last commit. Those alerts are made again,
/// because the events behind them were not committed either.
pub struct AlertFile {
    path: PathBuf,
    key: Vec<u8>,
    w: BufWriter<File>,
    len: u64,
}

impl AlertFile {
    pub fn open(path: &Path, state: &dyn StateRead) -> Result<AlertFile> {
        let space = &grantwatch_state::keys::ALERTS_LENGTH;
        let key = space.key_str(&path.display().to_string());
        // A length that does not decode is corrupt state: treating it as absent would keep alerts a
        // killed run wrote after its last commit, and they would be written twice.
        let committed = match state.get(Table::Meta, &key)? {
            Some(v) => Some(space.decode_u64(&key, &v)?),
            None => None,
        };
        let regular = std::fs::symlink_metadata(path).map(|m| m.file_type().is_file()).unwrap_or(false);
        let (file, len) = match committed {
            Some(len) if regular && std::fs::metadata(path).map(|m| m.len() >= len).unwrap_or(false) => {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(path)
                    .with_context(|| format!("opening {}", path.display()))?;
                f.set_len(len).with_context(|| format!("truncating {}", path.display()))?;
                (f, len)
            }
            Some(len) => {
                tracing::warn!(
                    file = %path.display(),
                    committed_bytes = len,
                    "The alert file of this state is missing or shorter than committed: starting a new one."
                );
                (create_fresh(path)?, 0)
            }
            None => (create_fresh(path)?, 0),
        };
        let mut w = BufWriter::with_capacity(1 << 16, file);
        std::io::Seek::seek(&mut w, std::io::SeekFrom::Start(len))?;
        Ok(AlertFile { path: path.to_path_buf(), key, w, len })
    }

    pub fn finish(mut self) -> Result<()> {
        self.w.flush().with_context(|| format!("writing {}", self.path.display()))
    }
}

impl AlertSink for AlertFile {
    fn write(&mut self, alerts: &[DetectionFinding]) -> std::io::Result<()> {
        for a in alerts {
            let mut line = serde_json::to_vec(a)?;
            line.push(b'\n');
            self.w.write_all(&line)?;
            self.len += line.len() as u64;
        }
        Ok(())
    }

    fn sync(&mut self, batch: &mut WriteBatch) -> std::io::Result<()> {
        self.w.flush()?;
        self.w.get_ref().sync_data()?;
        batch.put(Table::Meta, self.key.clone(), self.len.to_be_bytes().to_vec());
        Ok(())
    }
}

/// Writes one JSON object per line, through a temporary file renamed into place at the end, so a
/// reader never sees half a report.
pub struct JsonLinesWriter {
    tmp: PathBuf,
    path: PathBuf,
    w: BufWriter<File>,
}

impl JsonLinesWriter {
    pub fn create(path: &Path) -> Result<Self> {
        let tmp = tmp_path(path);
        let f = create_fresh(&tmp)?;
        Ok(Self { tmp, path: path.to_path_buf(), w: BufWriter::with_capacity(1 << 20, f) })
    }

    pub fn write<T: serde::Serialize>(&mut self, value: &T) -> Result<()> {
        serde_json::to_writer(&mut self.w, value).with_context(|| format!("writing {}", self.tmp.display()))?;
        self.w.write_all(b"\n").with_context(|| format!("writing {}", self.tmp.display()))
    }

    pub fn finish(mut self) -> Result<()> {
        self.w.flush().with_context(|| format!("writing {}", self.tmp.display()))?;
        std::fs::rename(&self.tmp, &self.path).with_context(|| format!("renaming to {}", self.path.display()))
    }
}

/// A byte-based progress bar on stderr; hidden when stderr is not a terminal or when asked.
pub fn progress_bar(enabled: bool, total_bytes: u64) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} reading CloudTrail {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}

/// Keeps the `n` findings with the highest PCI (ties: more unused high-risk actions, then ARN).
pub fn keep_top(top: &mut Vec<IdentityFinding>, f: IdentityFinding, n: usize) {
    let key =
        |f: &IdentityFinding| (std::cmp::Reverse(f.pci.score), std::cmp::Reverse(f.unused_high_risk), f.arn.clone());
    if top.len() == n && top.last().is_some_and(|last| key(&f) >= key(last)) {
        return;
    }
    // Only the summary needs these, not the full action lists: drop them to keep memory flat.
    let mut slim = f;
    slim.granted_actions = Vec::new();
    slim.used_actions = Vec::new();
    slim.unused_actions = Vec::new();
    slim.conditional_actions = Vec::new();
    let pos = top.partition_point(|x| key(x) < key(&slim));
    top.insert(pos, slim);
    top.truncate(n);
}

/// The human-readable summary printed on stdout.
pub fn write_summary(w: &mut dyn Write, o: &AnalyzeOutcome) -> std::io::Result<()> {
    let r = &o.ingest;
    writeln!(
        w,
        "grantwatch analyze — as of {} (lookback {} days, {})",
        o.accounts.as_of, o.accounts.lookback_days, o.accounts.pci_version
    )?;
    writeln!(w)?;
    writeln!(
        w,
        "Ingest: {} files read ({} already in state, {} quarantined), {} records, {} events counted, {} duplicates, {} records quarantined",
        r.files_read,
        r.files_already_ingested,
        r.files_quarantined,
        r.records_read,
        r.events_counted,
        r.duplicates,
        r.records_quarantined
    )?;
    writeln!(
        w,
        "        {} events need no permission, {} unmapped events in {} distinct calls",
        r.no_permission_events,
        r.unmapped_events,
        r.unmapped_calls.len()
    )?;
    for u in r.unmapped_calls.iter().take(5) {
        writeln!(w, "          unmapped: {} {} ×{}", u.service, u.operation, u.count)?;
    }
    if r.first_event.is_none() {
        writeln!(
            w,
            "        No activity logs read: nothing counts as used, so every granted permission is reported unused\n        \
             and every identity inactive (as of --as-of, else the newest identity's creation date)."
        )?;
    }
    writeln!(w)?;
    // AWS account ids are 12 characters; Azure subscription ids 36.
    let account_width = o.accounts.accounts.iter().map(|a| a.account.len()).max().unwrap_or(7).clamp(7, 36);
    writeln!(
        w,
        "{:<5} {:<width$} {:>4} {:<6} {:>4} {:>4} {:>4} {:>10} {:>8} {:>9} {:>5} {:>12}",
        "CLOUD",
        "ACCOUNT",
        "PCI",
        "BAND",
        "LOW",
        "MED",
        "HIGH",
        "IDENTITIES",
        "INACTIVE",
        "OVERPROV",
        "SUPER",
        "UNUSED KEYS",
        width = account_width
    )?;
    for a in &o.accounts.accounts {
        writeln!(
            w,
            "{:<5} {:<width$} {:>4} {:<6} {:>4} {:>4} {:>4} {:>10} {:>8} {:>9} {:>5} {:>12}",
            a.cloud.as_str(),
            a.account,
            a.pci,
            format!("{:?}", a.pci_band).to_lowercase(),
            a.pci_distribution.low,
            a.pci_distribution.medium,
            a.pci_distribution.high,
            a.identities,
            a.inactive,
            a.over_provisioned,
            a.super_identities,
            a.unused_access_keys,
            width = account_width
        )?;
    }
    writeln!(w)?;
    writeln!(w, "Highest PCI ({} of {} identities):", o.top.len().min(10), o.identities)?;
    writeln!(w, "{:>4}  {:<62} {:>8} {:>9}  STATUS", "PCI", "IDENTITY", "HIGH-RISK", "LAST SEEN")?;
    for f in o.top.iter().take(10) {
        let status: Vec<String> = f.status.iter().map(|s| format!("{s:?}")).map(|s| snake(&s)).collect();
        let last = f.last_activity.map_or_else(|| "never".to_string(), |t| t.date_string());
        writeln!(
            w,
            "{:>4}  {:<62} {:>8} {:>10}  {}",
            f.pci.score,
            ellipsize(&f.arn, 62),
            f.unused_high_risk,
            last,
            status.join(",")
        )?;
    }
    let e = &o.escalation;
    writeln!(w)?;
    writeln!(
        w,
        "Escalation: {} administrators, {} more identities can become one ({} edges; paths in identities.jsonl); \
         {} public, cross-account or federated grants in {}",
        e.administrators,
        e.escalate,
        e.edges,
        o.resource_access,
        o.outputs.resource_access.display()
    )?;
    if o.humans.0 > 0 {
        writeln!(
            w,
            "Humans: {} linked across clouds and directories, {} with identities in two clouds or more, in {}",
            o.humans.0,
            o.humans.1,
            o.outputs.humans.display()
        )?;
    }
    if let (Some(d), Some(path)) = (&o.detection, &o.outputs.alerts) {
        writeln!(w)?;
        writeln!(
            w,
            "Detection: {} events in event-time order ({} late), {} alerts ({} more occurrences grouped into \
             their incidents), {} identity-hours scored by the model, {} PCI updates",
            d.events, d.late, d.counts.alerts, d.counts.repeats, d.counts.windows_scored, d.pci_updates
        )?;
        if r.access_events_read > 0 {
            writeln!(
                w,
                "Permissions on demand: {} access audit events read, {} calls made under an on-demand grant (expected)",
                r.access_events_read, d.counts.on_demand_uses
            )?;
        }
        writeln!(w, "Alerts (OCSF Detection Findings) in {}", path.display())?;
    }
    writeln!(w)?;
    writeln!(
        w,
        "Wrote {}, {}, {}",
        o.outputs.identities.display(),
        o.outputs.accounts.display(),
        o.outputs.ingest_report.display()
    )?;
    if let Some(q) = &r.quarantine_file {
        writeln!(w, "Quarantined input written to {q}")?;
    }
    Ok(())
}

fn snake(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

fn ellipsize(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_string();
    }
    let tail: String = s.chars().rev().take(n - 1).collect::<Vec<_>>().into_iter().rev().collect();
    format!("…{tail}")
}
