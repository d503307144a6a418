//! The one way a step is run, shared by apply, rollback and attach/detach: begin (journaled and synced)
//! → call → outcome (journaled and synced); an earlier run's step whose outcome is unknown is re-checked
//! against IAM and completed, or found done; a step IAM already satisfies is journaled without a call.
//! In a dry run the same decisions are printed and nothing is called or written.

use std::collections::BTreeMap;
use std::io::Write;

use grantwatch_types::EventTime;
use grantwatch_types::{Drift, IamCall, IdentityIamState, JournalRecord, Prior, RunOutcome, StepOutcome};

use crate::api::{ApiError, IamApi};
use crate::journal::{Journal, StepRecord};
use crate::{Error, render, state};

/// How a run is driven.
pub struct RunOptions<'a> {
    /// Print the calls, make none, write nothing.
    pub dry_run: bool,
    /// `--account`: refuse unless the credentials are of this account.
    pub account: Option<String>,
    /// The run's name in its journal lines (unique per invocation, e.g. `apply-<ms>-<pid>`).
    pub run: String,
    /// The wall clock, read only to stamp journal lines.
    pub clock: &'a dyn Fn() -> EventTime,
    /// Test hook: abort the process right after this many changing calls returned, before their
    /// outcome is journaled (the worst moment for a crash).
    pub crash_after_calls: Option<u64>,
}

impl std::fmt::Debug for RunOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("dry_run", &self.dry_run)
            .field("account", &self.account)
            .field("run", &self.run)
            .field("crash_after_calls", &self.crash_after_calls)
            .finish_non_exhaustive()
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    /// The live state differs from what the plan or journal expects: no call was made.
    Refused,
    DryRun,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    pub outcome: Outcome,
    /// The caller's account (none: a dry run without credentials).
    pub account: Option<String>,
    /// Changing calls made (a dry run: that it would make).
    pub calls: u64,
    /// Steps found done (in the journal, or already so in IAM).
    pub already_done: u64,
    /// Why the run refused.
    pub drift: Vec<Drift>,
    /// Per other account: the identities (apply) or steps (rollback) left for a run with its credentials.
    pub other_accounts: BTreeMap<String, u64>,
    /// Rollback: per identity (or policy), what came back or went away.
    pub restored: BTreeMap<String, Vec<String>>,
}

impl RunSummary {
    pub(crate) fn new(outcome: Outcome, account: Option<String>) -> RunSummary {
        RunSummary {
            outcome,
            account,
            calls: 0,
            already_done: 0,
            drift: Vec::new(),
            other_accounts: BTreeMap::new(),
            restored: BTreeMap::new(),
        }
    }
}

/// A step to run: new, or an earlier run's whose outcome is unknown (`existing`).
pub(crate) struct Step<'c> {
    pub key: Option<String>,
    pub undoes: Option<String>,
    pub identity: Option<String>,
    pub call: &'c IamCall,
    pub existing: Option<&'c StepRecord>,
}

/// What running a step came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ran {
    /// A call was made (or, in a dry run, would be).
    Called,
    /// IAM already was as the step asks: no call.
    AlreadySo,
}

pub(crate) struct Exec<'a> {
    pub api: &'a mut dyn IamApi,
    pub journal: &'a mut Journal,
    pub opts: &'a RunOptions<'a>,
    pub out: &'a mut dyn Write,
    pub account: String,
    pub calls: u64,
    pub already: u64,
    steps_begun: u64,
}

impl<'a> Exec<'a> {
    pub(crate) fn new(
        api: &'a mut dyn IamApi,
        journal: &'a mut Journal,
        opts: &'a RunOptions<'a>,
        out: &'a mut dyn Write,
        account: String,
    ) -> Exec<'a> {
        Exec { api, journal, opts, out, account, calls: 0, already: 0, steps_begun: 0 }
    }

    /// Journals a line (nothing in a dry run).
    pub(crate) fn record(&mut self, record: JournalRecord) -> Result<(), Error> {
        if self.opts.dry_run {
            return Ok(());
        }
        let time = (self.opts.clock)();
        self.journal.append(&self.opts.run, time, record)
    }

    pub(crate) fn say(&mut self, line: &str) -> Result<(), Error> {
        writeln!(self.out, "{line}").map_err(Error::Output)
    }

    /// Journals the end of a failed run (best effort: the error being reported matters more).
    /// `result`, after journaling the run's failure if it is one.
    pub(crate) fn or_fail<T>(&mut self, result: Result<T, Error>) -> Result<T, Error> {
        if let Err(e) = &result {
            self.finish_failed(e);
        }
        result
    }

    /// Journals the run's successful end; returns (calls made, steps found already done).
    pub(crate) fn finish_completed(&mut self) -> Result<(u64, u64), Error> {
        self.record(JournalRecord::RunFinished {
            outcome: RunOutcome::Completed,
            calls: self.calls,
            already_done: self.already,
            error: None,
        })?;
        Ok((self.calls, self.already))
    }

    pub(crate) fn finish_failed(&mut self, error: &Error) {
        let record = JournalRecord::RunFinished {
            outcome: RunOutcome::Failed,
            calls: self.calls,
            already_done: self.already,
            error: Some(error.to_string()),
        };
        if let Err(e) = self.record(record) {
            tracing::warn!(error = %e, "Could not journal the end of the failed run.");
        }
    }

    fn begin(&mut self, step: &Step<'_>, prior: Prior) -> Result<String, Error> {
        self.steps_begun += 1;
        let id = format!("{}/{}", self.opts.run, self.steps_begun);
        self.record(JournalRecord::Begun {
            step: id.clone(),
            key: step.key.clone(),
            undoes: step.undoes.clone(),
            account: self.account.clone(),
            identity: step.identity.clone(),
            operation: step.call.operation().to_string(),
            call: step.call.clone(),
            prior,
        })?;
        Ok(id)
    }

    fn done(
        &mut self,
        step: &str,
        outcome: StepOutcome,
        out: crate::api::CallOutput,
        note: Option<String>,
    ) -> Result<(), Error> {
        self.record(JournalRecord::Done {
            step: step.to_string(),
            outcome,
            request_ids: out.request_ids,
            version_id: out.version_id,
            note,
        })
    }

    /// Whether IAM already is as `call` asks, and what the call would replace. `live` is the identity's
    /// state as the run knows it (for identity calls); policies and permission sets are read.
    pub(crate) fn read_target(
        &mut self,
        live: Option<&IdentityIamState>,
        call: &IamCall,
    ) -> Result<(bool, Prior), Error> {
        let what = |e: ApiError, w: String| Error::Api { what: w, error: e };
        match call {
            IamCall::CreatePolicy { policy_arn, document, .. } => {
                match self.api.policy(policy_arn).map_err(|e| what(e, format!("reading policy {policy_arn}")))? {
                    None => Ok((false, Prior { policy_exists: Some(false), ..Prior::default() })),
                    Some(p) if crate::state::same_document(&p.document, document) => Ok((
                        true,
                        Prior {
                            policy_exists: Some(true),
                            default_version_id: Some(p.default_version_id),
                            ..Prior::default()
                        },
                    )),
                    Some(p) => Err(Error::Refused(format!(
                        "policy {policy_arn} exists with another document (default version {}) than the plan's",
                        p.default_version_id
                    ))),
                }
            }
            IamCall::DeletePolicy { policy_arn } => {
                match self.api.policy(policy_arn).map_err(|e| what(e, format!("reading policy {policy_arn}")))? {
                    None => Ok((true, Prior { policy_exists: Some(false), ..Prior::default() })),
                    Some(p) => Ok((
                        false,
                        Prior {
                            policy_exists: Some(true),
                            default_version_id: Some(p.default_version_id),
                            ..Prior::default()
                        },
                    )),
                }
            }
            IamCall::DeletePolicyVersion { policy_arn, version_id } => {
                let p = self.api.policy(policy_arn).map_err(|e| what(e, format!("reading policy {policy_arn}")))?;
                let exists = p.as_ref().is_some_and(|p| p.versions.iter().any(|(v, _)| v == version_id));
                Ok((!exists, Prior { policy_exists: Some(p.is_some()), ..Prior::default() }))
            }
            IamCall::UpdatePermissionSet { permission_set_name, .. } => {
                let ps = self
                    .api
                    .permission_set(permission_set_name)
                    .map_err(|e| what(e, format!("reading permission set {permission_set_name}")))?;
                // Never "already so": the policies may match while the provisioning that carries them
                // to the accounts' roles did not happen (a crash between the two). Every call of the
                // sequence is idempotent, so it is made again.
                Ok((false, Prior { permission_set: Some(ps), ..Prior::default() }))
            }
            _ => {
                let live = live.cloned().unwrap_or_default();
                let holds = state::target_holds(&live, call).unwrap_or(false);
                Ok((holds, state::prior_of(&live, call)))
            }
        }
    }

    /// Runs one step (see the module's docs). `live` is the subject's state before it, for identity
    /// calls.
    pub(crate) fn run_step(&mut self, step: &Step<'_>, live: Option<&IdentityIamState>) -> Result<Ran, Error> {
        let line = render::call_line(step.call);
        let account = self.account.clone();
        let (holds, prior) = self.read_target(live, step.call)?;
        if let Some(existing) = step.existing {
            // Begun by a run that stopped before journaling the outcome.
            if holds {
                let outcome = if prior_held(&existing.prior, step.call) {
                    StepOutcome::AlreadyInState
                } else {
                    StepOutcome::Done
                };
                if self.opts.dry_run {
                    self.say(&format!("  done before the last run stopped (journal it): {account} {line}"))?;
                } else {
                    self.done(
                        &existing.step,
                        outcome,
                        crate::api::CallOutput { request_ids: Vec::new(), version_id: prior.default_version_id },
                        Some("found in effect: the earlier run made the call before it stopped".into()),
                    )?;
                    self.say(&format!("  completed (found in effect): {account} {line}"))?;
                }
                self.already += 1;
                return Ok(Ran::AlreadySo);
            }
            if self.opts.dry_run {
                self.say(&format!("  would call (again, begun by the run that stopped): {account} {line}"))?;
                self.calls += 1;
                return Ok(Ran::Called);
            }
            let id = existing.step.clone();
            let resumed_outcome =
                if prior_held(&existing.prior, step.call) { StepOutcome::AlreadyInState } else { StepOutcome::Done };
            self.make(&id, step.call, &line, Some(resumed_outcome))?;
            return Ok(Ran::Called);
        }
        if holds {
            if self.opts.dry_run {
                self.say(&format!("  no call, already so in IAM: {account} {line}"))?;
            } else {
                let id = self.begin(step, prior.clone())?;
                self.done(
                    &id,
                    StepOutcome::AlreadyInState,
                    crate::api::CallOutput { request_ids: Vec::new(), version_id: prior.default_version_id },
                    Some("already so in IAM: no call".into()),
                )?;
                self.say(&format!("  no call, already so in IAM: {account} {line}"))?;
            }
            self.already += 1;
            return Ok(Ran::AlreadySo);
        }
        if self.opts.dry_run {
            self.say(&format!("  would call: {account} {line}"))?;
            self.calls += 1;
            return Ok(Ran::Called);
        }
        let id = self.begin(step, prior)?;
        self.make(&id, step.call, &line, None)?;
        Ok(Ran::Called)
    }

    /// Makes the call of begun step `id` and journals its outcome. `resumed`: the step was begun by an
    /// earlier run, and this is the outcome a change found in effect gets.
    fn make(&mut self, id: &str, call: &IamCall, line: &str, resumed: Option<StepOutcome>) -> Result<(), Error> {
        let account = self.account.clone();
        match self.api.call(call) {
            Ok(out) => {
                self.count_call();
                let ids = out.request_ids.join(", ");
                self.done(id, StepOutcome::Done, out, None)?;
                self.say(&format!("  called: {account} {line} (request {ids})"))?;
                Ok(())
            }
            Err(e) if e.is_not_found() && is_removal(call) => {
                self.count_call();
                // Begun by this run: someone else removed it since the check, so it is not ours to undo.
                let outcome = resumed.unwrap_or(StepOutcome::AlreadyInState);
                let out = crate::api::CallOutput {
                    request_ids: e.request_id.clone().into_iter().collect(),
                    version_id: None,
                };
                self.done(
                    id,
                    outcome,
                    out,
                    Some(format!("{}: already absent", e.code.as_deref().unwrap_or("not found"))),
                )?;
                self.say(&format!("  already absent: {account} {line}"))?;
                Ok(())
            }
            Err(e) if e.is_already_exists() && matches!(call, IamCall::CreatePolicy { .. }) => {
                self.count_call();
                let IamCall::CreatePolicy { policy_arn, document, .. } = call else { return Ok(()) };
                let found = self
                    .api
                    .policy(policy_arn)
                    .map_err(|e| Error::Api { what: format!("reading policy {policy_arn}"), error: e })?;
                match found {
                    Some(p) if crate::state::same_document(&p.document, document) => {
                        let outcome = resumed.unwrap_or(StepOutcome::AlreadyInState);
                        let out = crate::api::CallOutput {
                            request_ids: e.request_id.clone().into_iter().collect(),
                            version_id: Some(p.default_version_id),
                        };
                        self.done(
                            id,
                            outcome,
                            out,
                            Some("EntityAlreadyExists: its default version has the plan's document".into()),
                        )?;
                        self.say(&format!("  exists with the plan's document: {account} {line}"))?;
                        Ok(())
                    }
                    _ => {
                        let message = format!("{policy_arn} exists with another document than the plan's");
                        self.record(JournalRecord::Failed {
                            step: id.to_string(),
                            code: e.code.clone(),
                            message: message.clone(),
                            request_ids: e.request_id.clone().into_iter().collect(),
                        })?;
                        Err(Error::Refused(message))
                    }
                }
            }
            Err(e) if e.outcome_unknown() => {
                // No outcome line: the next run finds the step begun and checks IAM.
                Err(Error::Api { what: format!("{line} (outcome unknown: run again to check and continue)"), error: e })
            }
            Err(e) => {
                self.record(JournalRecord::Failed {
                    step: id.to_string(),
                    code: e.code.clone(),
                    message: e.message.clone(),
                    request_ids: e.request_id.clone().into_iter().collect(),
                })?;
                Err(Error::Api { what: line.to_string(), error: e })
            }
        }
    }

    fn count_call(&mut self) {
        self.calls += 1;
        if self.opts.crash_after_calls == Some(self.calls) {
            // Test hook, as analyze's crash_after_flushes: the call is made, its outcome not journaled.
            tracing::error!(calls = self.calls, "Test hook: aborting after this many calls.");
            std::process::abort();
        }
    }
}

/// Whether the state a step was begun in (`prior`) already was the one it asks for: then finding it in
/// effect says nothing about this journal having made it, and a rollback leaves it.
pub(crate) fn prior_held(prior: &Prior, call: &IamCall) -> bool {
    match call {
        IamCall::AttachPolicy { .. } => prior.attached == Some(true),
        IamCall::DetachPolicy { .. } => prior.attached == Some(false),
        IamCall::DeleteInlinePolicy { .. } => prior.document.is_none(),
        IamCall::PutInlinePolicy { document, .. } => prior.document.as_ref() == Some(document),
        IamCall::RemoveUserFromGroup { .. } => prior.member == Some(false),
        IamCall::AddUserToGroup { .. } => prior.member == Some(true),
        IamCall::UpdateAccessKey { status, .. } => prior.status.as_ref() == Some(status),
        IamCall::CreatePolicy { .. } => prior.policy_exists == Some(true),
        IamCall::DeletePolicy { .. } => prior.policy_exists == Some(false),
        IamCall::DeletePolicyVersion { .. } | IamCall::UpdatePermissionSet { .. } => false,
    }
}

/// Calls that take something away, for which "it is not there" means done.
pub(crate) fn is_removal(call: &IamCall) -> bool {
    match call {
        IamCall::DetachPolicy { .. }
        | IamCall::DeleteInlinePolicy { .. }
        | IamCall::RemoveUserFromGroup { .. }
        | IamCall::DeletePolicyVersion { .. }
        | IamCall::DeletePolicy { .. } => true,
        IamCall::UpdateAccessKey { status, .. } => status != "Active",
        _ => false,
    }
}
