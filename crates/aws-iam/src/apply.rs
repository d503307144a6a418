//! `remediate apply`: a plan's changes, for the caller's account, in the plan's order, each journaled
//! before and after; refused whole when an identity's live state is not the one the plan (or, on a
//! re-run, the journal) expects.

use std::collections::BTreeMap;
use std::io::Write;

use grantwatch_types::IdentityKind;
use grantwatch_types::{
    Change, Drift, IamCall, IdentityIamState, IdentityPlan, JournalCommand, JournalRecord, PLAN_SCHEMA,
    RemediationPlan, RunOutcome, StepOutcome, Subject,
};

use crate::api::IamApi;
use crate::exec::{Exec, Outcome, RunOptions, RunSummary, Step};
use crate::journal::{Journal, StepRecord, StepStatus, steps};
use crate::{Error, render, state};

/// The journal key of an identity's `index`-th change.
pub fn step_key(identity_arn: &str, index: usize) -> String {
    format!("{identity_arn}#{index}")
}

/// The subject of a plan entry's calls. Only users, roles and groups have IAM calls.
pub fn subject_of(ip: &IdentityPlan) -> Result<Subject, Error> {
    match ip.kind {
        IdentityKind::User | IdentityKind::Role | IdentityKind::Group => {
            Ok(Subject { kind: ip.kind, name: ip.name.clone(), arn: ip.arn.clone() })
        }
        other => Err(Error::Refused(format!("{}: a {} has no IAM calls a plan can make", ip.arn, other.as_str()))),
    }
}

/// The call a plan change makes.
pub fn plan_call(subject: &Subject, change: &Change) -> IamCall {
    let subject = subject.clone();
    match change {
        Change::CreatePolicy { policy_name, path, policy_arn, document, description } => IamCall::CreatePolicy {
            policy_arn: policy_arn.clone(),
            policy_name: policy_name.clone(),
            path: path.clone(),
            description: description.clone(),
            document: document.clone(),
        },
        Change::AttachPolicy { policy_arn } => IamCall::AttachPolicy { subject, policy_arn: policy_arn.clone() },
        Change::DetachPolicy { policy_arn, .. } => IamCall::DetachPolicy { subject, policy_arn: policy_arn.clone() },
        Change::DeleteInlinePolicy { policy_name, .. } => {
            IamCall::DeleteInlinePolicy { subject, policy_name: policy_name.clone() }
        }
        Change::RemoveFromGroup { group, .. } => IamCall::RemoveUserFromGroup { subject, group: group.clone() },
        Change::DeactivateAccessKey { access_key_id, .. } => {
            IamCall::UpdateAccessKey { subject, access_key_id: access_key_id.clone(), status: "Inactive".into() }
        }
        Change::UpdatePermissionSet { permission_set_name, inline_policy, detach_managed, .. } => {
            IamCall::UpdatePermissionSet {
                permission_set_name: permission_set_name.clone(),
                inline_policy: Some(inline_policy.clone()),
                detach_managed: detach_managed.clone(),
                attach_managed: Vec::new(),
            }
        }
    }
}

/// Refuses a plan that would widen access mid-way: per identity, every addition (create, attach)
/// comes before every removal, and a policy the plan creates is created before it is attached.
pub fn check_order(plan: &RemediationPlan) -> Result<(), Error> {
    if plan.schema != PLAN_SCHEMA {
        return Err(Error::Refused(format!("plan schema {:?}, expected {PLAN_SCHEMA:?}", plan.schema)));
    }
    let created: Vec<&str> = plan
        .identities
        .iter()
        .flat_map(|ip| ip.changes.iter())
        .filter_map(|c| match c {
            Change::CreatePolicy { policy_arn, .. } => Some(policy_arn.as_str()),
            _ => None,
        })
        .collect();
    let mut created_so_far: Vec<&str> = Vec::new();
    for ip in &plan.identities {
        let mut narrowed = false;
        for (i, c) in ip.changes.iter().enumerate() {
            if c.narrows() {
                narrowed = true;
            } else if narrowed {
                return Err(Error::Refused(format!(
                    "{}: change {i} ({}) adds access after a removal: additions must come first",
                    ip.arn,
                    c.operation(ip.kind)
                )));
            }
            match c {
                Change::CreatePolicy { policy_arn, .. } => created_so_far.push(policy_arn),
                Change::AttachPolicy { policy_arn }
                    if created.contains(&policy_arn.as_str()) && !created_so_far.contains(&policy_arn.as_str()) =>
                {
                    return Err(Error::Refused(format!(
                        "{}: change {i} attaches {policy_arn} before the plan creates it",
                        ip.arn
                    )));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// A plan change and where the journal says it stands.
struct Planned<'p> {
    key: String,
    call: IamCall,
    record: Option<&'p StepRecord>,
}

impl Planned<'_> {
    fn status(&self) -> Option<StepStatus> {
        self.record.map(|r| r.status).filter(|s| *s != StepStatus::Failed)
    }
}

/// The state an identity should have now: the plan's `before` with the effects of the journal's done
/// steps; and, when one step's outcome is unknown, the state with its effect too.
pub fn expected_states(
    before: &IdentityIamState,
    calls: &[(IamCall, Option<StepStatus>)],
) -> (IdentityIamState, Option<IdentityIamState>) {
    let mut expected = before.clone();
    state::normalize(&mut expected);
    let mut pending = Vec::new();
    for (call, status) in calls {
        match status {
            Some(StepStatus::Done(_)) => state::apply_effect(&mut expected, call),
            Some(StepStatus::Pending) => pending.push(call),
            Some(StepStatus::Failed) | None => {}
        }
    }
    if pending.is_empty() {
        return (expected, None);
    }
    let mut alt = expected.clone();
    for call in pending {
        state::apply_effect(&mut alt, call);
    }
    (expected, Some(alt))
}

/// Runs `plan` against the caller's account (see the module docs). `plan_name` is recorded in the
/// journal.
pub fn apply(
    api: &mut dyn IamApi,
    plan: &RemediationPlan,
    plan_name: &str,
    journal: &mut Journal,
    opts: &RunOptions<'_>,
    out: &mut dyn Write,
) -> Result<RunSummary, Error> {
    check_order(plan)?;
    let caller = match api.caller() {
        Ok(c) => c,
        Err(e) if opts.dry_run => return offline_dry_run(plan, &e, out),
        Err(e) => return Err(Error::Api { what: "STS GetCallerIdentity (who are the credentials?)".into(), error: e }),
    };
    crate::check_account(opts, &caller.account)?;
    let account = caller.account.clone();
    let w = |out: &mut dyn Write, s: String| writeln!(out, "{s}").map_err(Error::Output);
    if opts.dry_run {
        w(out, "Dry run: no change is made and the journal is not written. Run again with --yes to apply.".into())?;
    }
    w(out, format!("Acting as {} in account {account}.", caller.arn))?;

    let mut summary =
        RunSummary::new(if opts.dry_run { Outcome::DryRun } else { Outcome::Completed }, Some(account.clone()));
    for ip in plan.identities.iter().filter(|ip| ip.account != account) {
        *summary.other_accounts.entry(ip.account.clone()).or_default() += 1;
    }
    let mine: Vec<&IdentityPlan> = plan.identities.iter().filter(|ip| ip.account == account).collect();

    // Where each change stands in the journal.
    let records = steps(journal.entries());
    let mut planned: Vec<(Subject, Vec<Planned<'_>>)> = Vec::new();
    for ip in &mine {
        let subject = subject_of(ip)?;
        let mut list = Vec::new();
        for (i, change) in ip.changes.iter().enumerate() {
            let key = step_key(&ip.arn, i);
            let call = plan_call(&subject, change);
            let record = records.iter().rev().find(|r| r.key.as_deref() == Some(key.as_str()) && r.account == account);
            if let Some(r) = record {
                if r.undone || records.iter().any(|u| u.undoes.as_deref() == Some(r.step.as_str())) {
                    return Err(Error::Refused(format!(
                        "journal {}: a rollback undid this plan's changes; apply the plan again with a new journal",
                        journal.path().display()
                    )));
                }
                if r.call != call {
                    return Err(Error::Refused(format!(
                        "journal {}: step {} ({key}) records another change than the plan's: is it this plan's journal?",
                        journal.path().display(),
                        r.step
                    )));
                }
            }
            list.push(Planned { key, call, record });
        }
        planned.push((subject, list));
    }

    // The drift check: every identity as the plan (or the journal) expects it, before any call.
    let mut live_states: Vec<IdentityIamState> = Vec::new();
    for (ip, (subject, list)) in mine.iter().zip(&planned) {
        let live = match api.live_state(subject) {
            Ok(mut s) => {
                state::normalize(&mut s);
                s
            }
            Err(e) if e.is_not_found() => {
                summary.drift.push(Drift { identity: ip.arn.clone(), difference: "does not exist any more".into() });
                live_states.push(IdentityIamState::default());
                continue;
            }
            Err(e) => return Err(Error::Api { what: format!("reading {}'s IAM state", ip.arn), error: e }),
        };
        let started = list.iter().any(|p| p.status().is_some());
        // A permission set's role is rewritten by Identity Center's provisioning, not by these calls:
        // once its update has begun, the permission set is the state that counts (read at its step).
        let managed_by_sso = started && list.iter().any(|p| matches!(p.call, IamCall::UpdatePermissionSet { .. }));
        if !managed_by_sso {
            let calls: Vec<(IamCall, Option<StepStatus>)> = list.iter().map(|p| (p.call.clone(), p.status())).collect();
            let (expected, alt) = expected_states(&ip.before, &calls);
            let d = state::diff(&expected, &live);
            let alt_ok = alt.as_ref().is_some_and(|a| state::diff(a, &live).is_empty());
            if !d.is_empty() && !alt_ok {
                let against = if started { "the state this journal left" } else { "the plan's before" };
                for difference in d {
                    summary.drift.push(Drift {
                        identity: ip.arn.clone(),
                        difference: format!("{difference} (against {against})"),
                    });
                }
            }
        }
        for p in list.iter().filter(|p| p.status() != Some(StepStatus::Done(StepOutcome::Done))) {
            match &p.call {
                IamCall::CreatePolicy { policy_arn, document, .. } if p.status().is_none() => {
                    let found = api
                        .policy(policy_arn)
                        .map_err(|e| Error::Api { what: format!("reading policy {policy_arn}"), error: e })?;
                    if let Some(f) = found.filter(|f| !crate::state::same_document(&f.document, document)) {
                        summary.drift.push(Drift {
                            identity: ip.arn.clone(),
                            difference: format!(
                                "policy {policy_arn} already exists with another document (default version {})",
                                f.default_version_id
                            ),
                        });
                    }
                }
                IamCall::UpdatePermissionSet { permission_set_name, .. } => {
                    if let Err(e) = api.permission_set(permission_set_name) {
                        if !e.is_not_found() {
                            return Err(Error::Api {
                                what: format!("reading permission set {permission_set_name}"),
                                error: e,
                            });
                        }
                        summary.drift.push(Drift {
                            identity: ip.arn.clone(),
                            difference: format!("permission set {permission_set_name} not found: {e}"),
                        });
                    }
                }
                _ => {}
            }
        }
        live_states.push(live);
    }

    let mut exec = Exec::new(api, journal, opts, out, account.clone());
    if !summary.drift.is_empty() {
        exec.say(&format!(
            "Refused: {} difference(s) between IAM and what the plan expects; no call was made:",
            summary.drift.len()
        ))?;
        for d in &summary.drift {
            exec.say(&format!("  {}: {}", d.identity, d.difference))?;
        }
        exec.record(run_started(plan_name, &account, mine.len(), &summary))?;
        exec.record(JournalRecord::Refused { drift: summary.drift.clone() })?;
        exec.record(JournalRecord::RunFinished {
            outcome: RunOutcome::Refused,
            calls: 0,
            already_done: 0,
            error: None,
        })?;
        summary.outcome = Outcome::Refused;
        return Ok(summary);
    }

    exec.record(run_started(plan_name, &account, mine.len(), &summary))?;
    let result = run_steps(&mut exec, &mine, &planned, &mut live_states);
    exec.or_fail(result)?;
    (summary.calls, summary.already_done) = exec.finish_completed()?;
    let verb = if opts.dry_run { "would make" } else { "made" };
    exec.say(&format!(
        "Account {account}: {} identities, {verb} {} call(s); {} step(s) already done.",
        mine.len(),
        summary.calls,
        summary.already_done
    ))?;
    say_others(exec.out, &summary.other_accounts)?;
    Ok(summary)
}

fn run_steps(
    exec: &mut Exec<'_>,
    mine: &[&IdentityPlan],
    planned: &[(Subject, Vec<Planned<'_>>)],
    live_states: &mut [IdentityIamState],
) -> Result<(), Error> {
    for ((ip, (_, list)), live) in mine.iter().zip(planned).zip(live_states.iter_mut()) {
        exec.say(&format!("{} ({} change(s)):", ip.arn, list.len()))?;
        for p in list {
            if let Some(StepStatus::Done(_)) = p.status() {
                exec.already += 1;
                exec.say(&format!("  done earlier (journal): {}", render::call_line(&p.call)))?;
            } else {
                let existing = p.record.filter(|r| r.status == StepStatus::Pending);
                let step = Step {
                    key: Some(p.key.clone()),
                    undoes: None,
                    identity: Some(ip.arn.clone()),
                    call: &p.call,
                    existing,
                };
                exec.run_step(&step, Some(live))?;
            }
            state::apply_effect(live, &p.call);
        }
    }
    Ok(())
}

fn run_started(plan_name: &str, account: &str, identities: usize, summary: &RunSummary) -> JournalRecord {
    JournalRecord::RunStarted {
        command: JournalCommand::Apply,
        account: account.to_string(),
        plan: Some(plan_name.to_string()),
        identities: identities as u64,
        other_account_identities: summary.other_accounts.values().sum(),
    }
}

pub(crate) fn say_others(out: &mut dyn Write, others: &BTreeMap<String, u64>) -> Result<(), Error> {
    if !others.is_empty() {
        let list: Vec<String> = others.iter().map(|(a, n)| format!("{a} ({n})")).collect();
        writeln!(
            out,
            "Left for another run with those accounts' credentials: {} identities of account(s) {}.",
            others.values().sum::<u64>(),
            list.join(", ")
        )
        .map_err(Error::Output)?;
    }
    Ok(())
}

/// A dry run without credentials: every call of the plan, unchecked.
fn offline_dry_run(plan: &RemediationPlan, e: &crate::api::ApiError, out: &mut dyn Write) -> Result<RunSummary, Error> {
    let w = |out: &mut dyn Write, s: String| writeln!(out, "{s}").map_err(Error::Output);
    w(
        out,
        format!("Dry run without credentials ({e}): every call of the plan, not checked against IAM or the journal."),
    )?;
    let mut summary = RunSummary::new(Outcome::DryRun, None);
    for ip in &plan.identities {
        let subject = subject_of(ip)?;
        w(out, format!("{} ({} change(s)):", ip.arn, ip.changes.len()))?;
        for c in &ip.changes {
            w(out, format!("  would call: {} {}", ip.account, render::call_line(&plan_call(&subject, c))))?;
            summary.calls += 1;
        }
    }
    Ok(summary)
}
