//! `remediate rollback`: restores what a journal changed, newest first, journaling each undoing call
//! in the same file (so a stopped rollback resumes too).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;

use grantwatch_types::IdentityKind;
use grantwatch_types::{IamCall, IdentityIamState, JournalCommand, JournalRecord, StepOutcome, Subject};

use crate::api::IamApi;
use crate::exec::{Exec, Outcome, Ran, RunOptions, RunSummary, Step, prior_held};
use crate::journal::{Journal, StepRecord, StepStatus, steps};
use crate::{Error, state};

/// What undoing one journaled step takes.
#[derive(Debug, Clone, PartialEq)]
pub enum Undo {
    /// Nothing: the step changed nothing, or cannot be reversed (the reason).
    Nothing(&'static str),
    /// These calls, in order.
    Calls(Vec<IamCall>),
    /// A policy this journal created: detach it from whatever it is attached to, delete its
    /// non-default versions, then the policy (the lists are read at rollback time).
    DeleteCreatedPolicy(String),
}

/// The undo of a step that may have changed IAM (done, or begun with an unknown outcome: every undo is
/// idempotent, so restoring what was there is right either way).
pub fn undo_of(step: &StepRecord) -> Undo {
    if step.status == StepStatus::Done(StepOutcome::AlreadyInState) || prior_held(&step.prior, &step.call) {
        return Undo::Nothing("IAM already was so: not this journal's change");
    }
    let p = &step.prior;
    match &step.call {
        IamCall::CreatePolicy { policy_arn, .. } => Undo::DeleteCreatedPolicy(policy_arn.clone()),
        IamCall::AttachPolicy { subject, policy_arn } => {
            Undo::Calls(vec![IamCall::DetachPolicy { subject: subject.clone(), policy_arn: policy_arn.clone() }])
        }
        IamCall::DetachPolicy { subject, policy_arn } => {
            Undo::Calls(vec![IamCall::AttachPolicy { subject: subject.clone(), policy_arn: policy_arn.clone() }])
        }
        IamCall::DeleteInlinePolicy { subject, policy_name } => match &p.document {
            Some(d) => Undo::Calls(vec![IamCall::PutInlinePolicy {
                subject: subject.clone(),
                policy_name: policy_name.clone(),
                document: d.clone(),
            }]),
            None => Undo::Nothing("no prior document journaled"),
        },
        IamCall::PutInlinePolicy { subject, policy_name, .. } => match &p.document {
            Some(d) => Undo::Calls(vec![IamCall::PutInlinePolicy {
                subject: subject.clone(),
                policy_name: policy_name.clone(),
                document: d.clone(),
            }]),
            None => Undo::Calls(vec![IamCall::DeleteInlinePolicy {
                subject: subject.clone(),
                policy_name: policy_name.clone(),
            }]),
        },
        IamCall::RemoveUserFromGroup { subject, group } => {
            Undo::Calls(vec![IamCall::AddUserToGroup { subject: subject.clone(), group: group.clone() }])
        }
        IamCall::AddUserToGroup { subject, group } => {
            Undo::Calls(vec![IamCall::RemoveUserFromGroup { subject: subject.clone(), group: group.clone() }])
        }
        IamCall::UpdateAccessKey { subject, access_key_id, .. } => match &p.status {
            Some(s) => Undo::Calls(vec![IamCall::UpdateAccessKey {
                subject: subject.clone(),
                access_key_id: access_key_id.clone(),
                status: s.clone(),
            }]),
            None => Undo::Nothing("the key's prior status is not journaled"),
        },
        IamCall::UpdatePermissionSet { permission_set_name, detach_managed, attach_managed, .. } => {
            match &p.permission_set {
                Some(ps) => Undo::Calls(vec![IamCall::UpdatePermissionSet {
                    permission_set_name: permission_set_name.clone(),
                    inline_policy: ps.inline_policy.clone(),
                    // Back what it detached (and was there), away what it attached (and was not).
                    attach_managed: detach_managed
                        .iter()
                        .filter(|a| ps.managed_policies.contains(a))
                        .cloned()
                        .collect(),
                    detach_managed: attach_managed
                        .iter()
                        .filter(|a| !ps.managed_policies.contains(a))
                        .cloned()
                        .collect(),
                }]),
                None => Undo::Nothing("the permission set's prior state is not journaled"),
            }
        }
        IamCall::DeletePolicyVersion { .. } | IamCall::DeletePolicy { .. } => {
            Undo::Nothing("deletions of a rollback are not undone")
        }
    }
}

/// The steps a rollback of `account` undoes, newest first: every step that may have changed IAM and is
/// not undone yet (rollbacks' own calls excluded).
pub fn to_undo<'s>(records: &'s [StepRecord], account: &str) -> Vec<&'s StepRecord> {
    records
        .iter()
        .rev()
        .filter(|r| r.undoes.is_none() && !r.undone && r.may_have_changed() && r.account == account)
        .collect()
}

/// The identity (or policy) a call's effect belongs to, for the report.
fn owner(call: &IamCall, step: &StepRecord) -> String {
    match call {
        IamCall::CreatePolicy { policy_arn, .. }
        | IamCall::DeletePolicy { policy_arn }
        | IamCall::DeletePolicyVersion { policy_arn, .. } => policy_arn.clone(),
        _ => subject_of_call(call).map(|s| s.arn.clone()).or_else(|| step.identity.clone()).unwrap_or_default(),
    }
}

/// What came back (or went away), in words.
fn restored_line(call: &IamCall) -> String {
    match call {
        IamCall::AttachPolicy { policy_arn, .. } => format!("policy re-attached: {policy_arn}"),
        IamCall::PutInlinePolicy { policy_name, .. } => format!("inline policy restored: {policy_name}"),
        IamCall::AddUserToGroup { group, .. } => format!("back in group: {group}"),
        IamCall::UpdateAccessKey { access_key_id, status, .. } => format!("access key {access_key_id}: {status} again"),
        IamCall::UpdatePermissionSet { permission_set_name, attach_managed, .. } => format!(
            "permission set {permission_set_name}: prior inline policy restored, {} managed policy(ies) re-attached, re-provisioned",
            attach_managed.len()
        ),
        IamCall::DetachPolicy { policy_arn, .. } => format!("detached: {policy_arn}"),
        IamCall::DeleteInlinePolicy { policy_name, .. } => format!("inline policy removed: {policy_name}"),
        IamCall::RemoveUserFromGroup { group, .. } => format!("removed from group: {group}"),
        IamCall::DeletePolicyVersion { version_id, .. } => format!("version {version_id} deleted"),
        IamCall::DeletePolicy { .. } => "created policy deleted".to_string(),
        IamCall::CreatePolicy { .. } => "policy re-created".to_string(),
    }
}

fn subject_of_call(call: &IamCall) -> Option<&Subject> {
    match call {
        IamCall::AttachPolicy { subject, .. }
        | IamCall::DetachPolicy { subject, .. }
        | IamCall::DeleteInlinePolicy { subject, .. }
        | IamCall::PutInlinePolicy { subject, .. }
        | IamCall::RemoveUserFromGroup { subject, .. }
        | IamCall::AddUserToGroup { subject, .. }
        | IamCall::UpdateAccessKey { subject, .. } => Some(subject),
        _ => None,
    }
}

/// Undoes the journal's changes in the caller's account (see the module docs).
pub fn rollback(
    api: &mut dyn IamApi,
    journal: &mut Journal,
    opts: &RunOptions<'_>,
    out: &mut dyn Write,
) -> Result<RunSummary, Error> {
    let caller = api
        .caller()
        .map_err(|e| Error::Api { what: "STS GetCallerIdentity (who are the credentials?)".into(), error: e })?;
    crate::check_account(opts, &caller.account)?;
    let account = caller.account.clone();
    let records = steps(journal.entries());
    let undo = to_undo(&records, &account);
    let mut summary =
        RunSummary::new(if opts.dry_run { Outcome::DryRun } else { Outcome::Completed }, Some(account.clone()));
    for r in records.iter().filter(|r| r.undoes.is_none() && !r.undone && r.may_have_changed() && r.account != account)
    {
        *summary.other_accounts.entry(r.account.clone()).or_default() += 1;
    }
    // Undoing calls begun by a rollback that stopped: reused, so each gets its outcome.
    let pending_undos: Vec<&StepRecord> =
        records.iter().filter(|r| r.undoes.is_some() && r.status == StepStatus::Pending).collect();
    let identities: std::collections::BTreeSet<&str> = undo.iter().filter_map(|r| r.identity.as_deref()).collect();

    let mut exec = Exec::new(api, journal, opts, out, account.clone());
    if opts.dry_run {
        exec.say("Dry run: no change is made and the journal is not written. Run again with --yes to roll back.")?;
    }
    exec.say(&format!("Acting as {} in account {account}: {} step(s) to undo.", caller.arn, undo.len()))?;
    exec.record(JournalRecord::RunStarted {
        command: JournalCommand::Rollback,
        account: account.clone(),
        plan: None,
        identities: identities.len() as u64,
        other_account_identities: summary.other_accounts.values().sum(),
    })?;
    let result = run_undo(&mut exec, &undo, &pending_undos, &mut summary.restored);
    exec.or_fail(result)?;
    (summary.calls, summary.already_done) = exec.finish_completed()?;
    let verb = if opts.dry_run { "would come back" } else { "came back" };
    if summary.restored.is_empty() {
        exec.say("Nothing to restore.")?;
    } else {
        exec.say(&format!("What {verb}:"))?;
        for (who, lines) in &summary.restored {
            exec.say(&format!("  {who}:"))?;
            for l in lines {
                exec.say(&format!("    {l}"))?;
            }
        }
    }
    exec.say(&format!(
        "Account {account}: {} call(s) {}; {} already so.",
        summary.calls,
        if opts.dry_run { "would be made" } else { "made" },
        summary.already_done
    ))?;
    if !summary.other_accounts.is_empty() {
        let list: Vec<String> = summary.other_accounts.iter().map(|(a, n)| format!("{a} ({n} steps)")).collect();
        exec.say(&format!("Left for a rollback with those accounts' credentials: {}.", list.join(", ")))?;
    }
    Ok(summary)
}

fn run_undo(
    exec: &mut Exec<'_>,
    undo: &[&StepRecord],
    pending_undos: &[&StepRecord],
    restored: &mut BTreeMap<String, Vec<String>>,
) -> Result<(), Error> {
    // The identities' states as this run knows them (read once, then kept up to date).
    let mut live: HashMap<(IdentityKind, String), IdentityIamState> = HashMap::new();
    for step in undo {
        let calls = match undo_of(step) {
            Undo::Nothing(why) => {
                exec.say(&format!("{}: nothing to undo ({why})", step.step))?;
                Vec::new()
            }
            Undo::Calls(calls) => calls,
            Undo::DeleteCreatedPolicy(arn) => delete_policy_calls(exec, &arn)?,
        };
        for call in &calls {
            let subject = subject_of_call(call).cloned();
            if let Some(s) = &subject
                && !live.contains_key(&(s.kind, s.name.clone()))
            {
                let mut st = exec
                    .api
                    .live_state(s)
                    .map_err(|e| Error::Api { what: format!("reading {}'s IAM state", s.arn), error: e })?;
                state::normalize(&mut st);
                live.insert((s.kind, s.name.clone()), st);
            }
            let existing = pending_undos
                .iter()
                .find(|u| u.undoes.as_deref() == Some(step.step.as_str()) && &u.call == call)
                .copied();
            let identity = subject.as_ref().map(|s| s.arn.clone()).or_else(|| step.identity.clone());
            let st = Step { key: None, undoes: Some(step.step.clone()), identity, call, existing };
            let cur = subject.as_ref().and_then(|s| live.get(&(s.kind, s.name.clone())));
            let ran = exec.run_step(&st, cur)?;
            if let Some(s) = &subject
                && let Some(cur) = live.get_mut(&(s.kind, s.name.clone()))
            {
                state::apply_effect(cur, call);
            }
            if ran == Ran::Called {
                restored.entry(owner(call, step)).or_default().push(restored_line(call));
            }
        }
        exec.record(JournalRecord::Undone { step: step.step.clone() })?;
    }
    Ok(())
}

/// Detach from every entity, delete every non-default version, delete: read now, since others may
/// have attached the policy or added versions since.
fn delete_policy_calls(exec: &mut Exec<'_>, policy_arn: &str) -> Result<Vec<IamCall>, Error> {
    let Some(policy) = exec
        .api
        .policy(policy_arn)
        .map_err(|e| Error::Api { what: format!("reading policy {policy_arn}"), error: e })?
    else {
        exec.say(&format!("{policy_arn}: already deleted"))?;
        return Ok(Vec::new());
    };
    let entities = match exec.api.policy_entities(policy_arn) {
        Ok(e) => e,
        Err(e) if e.is_not_found() => Vec::new(),
        Err(e) => return Err(Error::Api { what: format!("listing what {policy_arn} is attached to"), error: e }),
    };
    let mut calls: Vec<IamCall> = entities
        .into_iter()
        .map(|subject| IamCall::DetachPolicy { subject, policy_arn: policy_arn.to_string() })
        .collect();
    for (version_id, is_default) in &policy.versions {
        if !is_default {
            calls.push(IamCall::DeletePolicyVersion {
                policy_arn: policy_arn.to_string(),
                version_id: version_id.clone(),
            });
        }
    }
    calls.push(IamCall::DeletePolicy { policy_arn: policy_arn.to_string() });
    Ok(calls)
}
