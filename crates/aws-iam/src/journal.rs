//! The journal file (JSON Lines, append-only, one `fsync` per line) and what its lines say about each
//! step (pure).
//!
//! A line is written and synced before the call it announces is made, and its outcome after; so the
//! file always knows every call that may have been made. A process killed while writing can leave a
//! last line without its newline: that tail is not a record (it was never synced whole), and opening
//! for writing cuts it. Any other line that does not parse is corruption, an error, never skipped.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use grantwatch_types::EventTime;
use grantwatch_types::{IamCall, JOURNAL_SCHEMA, JournalEntry, JournalRecord, Prior, StepOutcome};

use crate::Error;

/// An open journal: the entries read, and the file to append to (none when read-only: dry runs).
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    entries: Vec<JournalEntry>,
    file: Option<File>,
}

impl Journal {
    /// Reads the journal at `path` (absent: empty). `writable` opens it for appending (creating it),
    /// after cutting a torn last line.
    pub fn open(path: &Path, writable: bool) -> Result<Journal, Error> {
        let err = |message: String| Error::Journal { path: path.to_path_buf(), message };
        let mut bytes = Vec::new();
        let existed = path.exists();
        if existed {
            File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)).map_err(|e| err(format!("reading: {e}")))?;
        }
        let (entries, good_len) = parse(&bytes).map_err(err)?;
        let file = if writable {
            let mut f = OpenOptions::new()
                .create(true)
                .read(true)
                .write(true)
                .truncate(false)
                .open(path)
                .map_err(|e| err(format!("opening for writing: {e}")))?;
            if good_len < bytes.len() {
                tracing::warn!(path = %path.display(), bytes = bytes.len() - good_len, "Cutting a torn last journal line.");
                f.set_len(good_len as u64).map_err(|e| err(format!("cutting the torn last line: {e}")))?;
            }
            f.seek(SeekFrom::End(0)).map_err(|e| err(e.to_string()))?;
            if !existed {
                // The new file's name must survive a crash too, not only its lines.
                f.sync_all().map_err(|e| err(e.to_string()))?;
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    let _ = File::open(dir).and_then(|d| d.sync_all());
                }
            }
            Some(f)
        } else {
            None
        };
        Ok(Journal { path: path.to_path_buf(), entries, file })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn entries(&self) -> &[JournalEntry] {
        &self.entries
    }

    pub fn is_writable(&self) -> bool {
        self.file.is_some()
    }

    /// Appends one line and syncs it to disk before returning. Read-only journals refuse.
    pub fn append(&mut self, run: &str, time: EventTime, record: JournalRecord) -> Result<(), Error> {
        let err = |message: String| Error::Journal { path: self.path.clone(), message };
        let seq = self.entries.last().map_or(1, |e| e.seq + 1);
        let entry = JournalEntry { schema: JOURNAL_SCHEMA.to_string(), seq, time, run: run.to_string(), record };
        let mut line = serde_json::to_vec(&entry).map_err(|e| err(e.to_string()))?;
        line.push(b'\n');
        let Some(file) = self.file.as_mut() else {
            return Err(err("opened read-only (a dry run writes nothing)".to_string()));
        };
        file.write_all(&line).map_err(|e| err(format!("writing: {e}")))?;
        file.sync_data().map_err(|e| err(format!("syncing: {e}")))?;
        self.entries.push(entry);
        Ok(())
    }
}

/// The entries of a journal's bytes and the length of the part made of whole lines.
fn parse(bytes: &[u8]) -> Result<(Vec<JournalEntry>, usize), String> {
    let mut entries: Vec<JournalEntry> = Vec::new();
    let mut pos = 0;
    let mut line_no = 0;
    while pos < bytes.len() {
        line_no += 1;
        let rest = bytes.get(pos..).unwrap_or_default();
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            // No newline: a line cut by a crash while it was written. Never synced whole: not a record.
            return Ok((entries, pos));
        };
        let line = rest.get(..nl).unwrap_or_default();
        pos += nl + 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let entry: JournalEntry =
            serde_json::from_slice(line).map_err(|e| format!("line {line_no}: not a journal entry: {e}"))?;
        if entry.schema != JOURNAL_SCHEMA {
            return Err(format!("line {line_no}: schema {:?}, expected {JOURNAL_SCHEMA:?}", entry.schema));
        }
        entries.push(entry);
    }
    Ok((entries, pos))
}

/// Where a step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepStatus {
    /// Begun, without an outcome: the call may or may not have been made.
    Pending,
    Done(StepOutcome),
    /// AWS refused the call: nothing changed.
    Failed,
}

/// A step as the journal tells it: its `Begun` line and what followed.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    pub step: String,
    pub seq: u64,
    pub key: Option<String>,
    pub undoes: Option<String>,
    pub account: String,
    pub identity: Option<String>,
    pub call: IamCall,
    pub prior: Prior,
    pub status: StepStatus,
    pub version_id: Option<String>,
    /// A rollback restored what it changed.
    pub undone: bool,
}

impl StepRecord {
    /// Whether the step may have changed IAM (done by its call, or begun with an unknown outcome).
    pub fn may_have_changed(&self) -> bool {
        matches!(self.status, StepStatus::Pending | StepStatus::Done(StepOutcome::Done))
    }
}

/// Every step of the journal, in the order they were begun.
pub fn steps(entries: &[JournalEntry]) -> Vec<StepRecord> {
    let mut out: Vec<StepRecord> = Vec::new();
    let mut index = std::collections::HashMap::new();
    for e in entries {
        match &e.record {
            JournalRecord::Begun { step, key, undoes, account, identity, call, prior, .. } => {
                index.insert(step.clone(), out.len());
                out.push(StepRecord {
                    step: step.clone(),
                    seq: e.seq,
                    key: key.clone(),
                    undoes: undoes.clone(),
                    account: account.clone(),
                    identity: identity.clone(),
                    call: call.clone(),
                    prior: prior.clone(),
                    status: StepStatus::Pending,
                    version_id: None,
                    undone: false,
                });
            }
            JournalRecord::Done { step, outcome, version_id, .. } => {
                if let Some(s) = index.get(step).and_then(|&i| out.get_mut(i)) {
                    s.status = StepStatus::Done(*outcome);
                    s.version_id.clone_from(version_id);
                }
            }
            JournalRecord::Failed { step, .. } => {
                if let Some(s) = index.get(step).and_then(|&i| out.get_mut(i)) {
                    s.status = StepStatus::Failed;
                }
            }
            JournalRecord::Undone { step } => {
                if let Some(s) = index.get(step).and_then(|&i| out.get_mut(i)) {
                    s.undone = true;
                }
            }
            JournalRecord::RunStarted { .. } | JournalRecord::Refused { .. } | JournalRecord::RunFinished { .. } => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use grantwatch_types::IdentityKind;
    use grantwatch_types::Subject;

    fn call() -> IamCall {
        IamCall::DetachPolicy {
            subject: Subject {
                kind: IdentityKind::Role,
                name: "r".into(),
                arn: "arn:aws:iam::111122223333:role/r".into(),
            },
            policy_arn: "arn:aws:iam::aws:policy/ReadOnlyAccess".into(),
        }
    }

    fn begun(step: &str) -> JournalRecord {
        JournalRecord::Begun {
            step: step.into(),
            key: Some("k".into()),
            undoes: None,
            account: "111122223333".into(),
            identity: None,
            operation: "DetachRolePolicy".into(),
            call: call(),
            prior: Prior { attached: Some(true), ..Prior::default() },
        }
    }

    #[test]
    fn lines_are_appended_read_back_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        let mut j = Journal::open(&path, true).unwrap();
        j.append("r1", EventTime(1), begun("r1/1")).unwrap();
        j.append(
            "r1",
            EventTime(2),
            JournalRecord::Done {
                step: "r1/1".into(),
                outcome: StepOutcome::Done,
                request_ids: vec!["req".into()],
                version_id: None,
                note: None,
            },
        )
        .unwrap();
        j.append("r1", EventTime(3), begun("r1/2")).unwrap();
        drop(j);
        // A crash in the middle of writing a line.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"schema":"grantwatch.remediation-jour"#).unwrap();
        drop(f);

        let ro = Journal::open(&path, false).unwrap();
        assert_eq!(ro.entries().len(), 3);
        let s = steps(ro.entries());
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].status, StepStatus::Done(StepOutcome::Done));
        assert_eq!(s[1].status, StepStatus::Pending);
        assert!(s[1].may_have_changed());

        let mut rw = Journal::open(&path, true).unwrap();
        rw.append("r2", EventTime(4), JournalRecord::Undone { step: "r1/1".into() }).unwrap();
        let again = Journal::open(&path, false).unwrap();
        assert_eq!(again.entries().len(), 4);
        assert_eq!(again.entries()[3].seq, 4);
        assert!(steps(again.entries())[0].undone);
    }

    #[test]
    fn a_corrupt_line_in_the_middle_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        let mut j = Journal::open(&path, true).unwrap();
        j.append("r1", EventTime(1), begun("r1/1")).unwrap();
        drop(j);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"garbage\n").unwrap();
        drop(f);
        let e = Journal::open(&path, false).unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn read_only_journals_refuse_to_write_and_missing_ones_are_empty() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(&dir.path().join("none.jsonl"), false).unwrap();
        assert!(j.entries().is_empty());
        assert!(j.append("r", EventTime(0), JournalRecord::Undone { step: "x".into() }).is_err());
        assert!(!dir.path().join("none.jsonl").exists());
    }
}
