//! `iam attach|detach`: one managed policy on one user, role or group, journaled as a step like a plan's
//! (so `remediate rollback` reverses it).

use std::io::Write;

use grantwatch_types::IdentityKind;
use grantwatch_types::{IamCall, JournalCommand, JournalRecord, Subject};

use crate::api::IamApi;
use crate::exec::{Exec, Outcome, Ran, RunOptions, RunSummary, Step};
use crate::journal::{Journal, StepStatus, steps};
use crate::{Error, state};

/// A user, role or group ARN (`arn:aws:iam::123456789012:role/path/name`) as a call's subject, with
/// its account.
pub fn parse_identity_arn(arn: &str) -> Result<(Subject, String), Error> {
    let bad = || Error::Refused(format!("{arn:?} is not the ARN of an IAM user, role or group"));
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [prefix, _partition, service, _region, account, resource] = parts.as_slice() else { return Err(bad()) };
    if *prefix != "arn" || *service != "iam" || account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let (kind, rest) = resource.split_once('/').ok_or_else(bad)?;
    let kind = match kind {
        "user" => IdentityKind::User,
        "role" => IdentityKind::Role,
        "group" => IdentityKind::Group,
        _ => return Err(bad()),
    };
    let name = rest.rsplit('/').next().filter(|n| !n.is_empty()).ok_or_else(bad)?;
    Ok((Subject { kind, name: name.to_string(), arn: arn.to_string() }, (*account).to_string()))
}

/// A managed policy ARN (`arn:aws:iam::aws:policy/...` or of an account).
pub fn check_policy_arn(arn: &str) -> Result<(), Error> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    match parts.as_slice() {
        ["arn", _, "iam", "", _, resource] if resource.starts_with("policy/") => Ok(()),
        _ => Err(Error::Refused(format!("{arn:?} is not the ARN of an IAM managed policy"))),
    }
}

/// Attaches (`attach`) or detaches `policy_arn` on `identity_arn`.
pub fn attach(
    api: &mut dyn IamApi,
    journal: &mut Journal,
    identity_arn: &str,
    policy_arn: &str,
    attach: bool,
    opts: &RunOptions<'_>,
    out: &mut dyn Write,
) -> Result<RunSummary, Error> {
    let (subject, arn_account) = parse_identity_arn(identity_arn)?;
    check_policy_arn(policy_arn)?;
    let caller = api
        .caller()
        .map_err(|e| Error::Api { what: "STS GetCallerIdentity (who are the credentials?)".into(), error: e })?;
    crate::check_account(opts, &caller.account)?;
    if arn_account != caller.account {
        return Err(Error::Refused(format!(
            "{identity_arn} is in account {arn_account}, the credentials act in account {}",
            caller.account
        )));
    }
    let call = if attach {
        IamCall::AttachPolicy { subject: subject.clone(), policy_arn: policy_arn.to_string() }
    } else {
        IamCall::DetachPolicy { subject: subject.clone(), policy_arn: policy_arn.to_string() }
    };
    let mut live = api
        .live_state(&subject)
        .map_err(|e| Error::Api { what: format!("reading {identity_arn}'s IAM state"), error: e })?;
    state::normalize(&mut live);
    let records = steps(journal.entries());
    // The same call begun by a run that stopped: this run completes it.
    let existing = records.iter().rev().find(|r| {
        r.undoes.is_none()
            && !r.undone
            && r.status == StepStatus::Pending
            && r.call == call
            && r.account == caller.account
    });

    let mut summary =
        RunSummary::new(if opts.dry_run { Outcome::DryRun } else { Outcome::Completed }, Some(caller.account.clone()));
    let mut exec = Exec::new(api, journal, opts, out, caller.account.clone());
    if opts.dry_run {
        exec.say("Dry run: no change is made and the journal is not written. Run again with --yes.")?;
    }
    exec.say(&format!("Acting as {} in account {}.", caller.arn, caller.account))?;
    exec.record(JournalRecord::RunStarted {
        command: if attach { JournalCommand::Attach } else { JournalCommand::Detach },
        account: caller.account.clone(),
        plan: None,
        identities: 1,
        other_account_identities: 0,
    })?;
    let step = Step { key: None, undoes: None, identity: Some(identity_arn.to_string()), call: &call, existing };
    let ran = exec.run_step(&step, Some(&live));
    let ran = exec.or_fail(ran)?;
    (summary.calls, summary.already_done) = exec.finish_completed()?;
    if ran == Ran::AlreadySo {
        let what = if attach { "already attached" } else { "not attached" };
        exec.say(&format!("{policy_arn} is {what}: nothing to do."))?;
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_arns_parse() {
        let (s, a) = parse_identity_arn("arn:aws:iam::111122223333:role/service/deploy").unwrap();
        assert_eq!((s.kind, s.name.as_str(), a.as_str()), (IdentityKind::Role, "deploy", "111122223333"));
        let (s, _) = parse_identity_arn("arn:aws-cn:iam::111122223333:group/devs").unwrap();
        assert_eq!(s.kind, IdentityKind::Group);
        for bad in [
            "arn:aws:iam::111122223333:policy/x",
            "arn:aws:s3:::bucket",
            "arn:aws:iam::1111:user/x",
            "arn:aws:iam::111122223333:user/",
            "user/x",
        ] {
            assert!(parse_identity_arn(bad).is_err(), "{bad}");
        }
        assert!(check_policy_arn("arn:aws:iam::aws:policy/ReadOnlyAccess").is_ok());
        assert!(check_policy_arn("arn:aws:iam::111122223333:policy/gw/p").is_ok());
        assert!(check_policy_arn("arn:aws:iam::111122223333:role/r").is_err());
    }
}
