//! The access core, case by case: validation and risk, approvals, the grant's policy, and the
//! revocation scheduler over a store that is reopened as a restarted service would.

mod common;

use std::sync::Arc;

use common::*;
use grantwatch_access::validate::assess_risk;
use grantwatch_access::{AccessError, Principal, RevokeOutcome, ValidationError, verify_index};
use grantwatch_state::{MemStore, StateError, StateStore, Table, WriteBatch, keys};
use grantwatch_types::{
    AccessCommand, AccessState, EventTime, GrantAction, GrantPrincipal, RequestedAccess, RequestedIdentity,
    RevokeAction, RiskLevel,
};

fn p(name: &str) -> Principal {
    Principal::new(name)
}

#[test]
fn risk_follows_access_levels_self_escalation_and_wildcards() {
    let c = config();
    let risk = |a: RequestedAccess| assess_risk(&c, &CATALOG, &a).unwrap();
    let on_any = |action: &'static str| actions(&[(action, &["*"])]);
    assert_eq!(risk(on_any("s3:GetObject")), RiskLevel::Low);
    assert_eq!(risk(on_any("ec2:Describe*")), RiskLevel::Low);
    assert_eq!(risk(on_any("iam:List*")), RiskLevel::Low);
    assert_eq!(risk(on_any("s3:PutObject")), RiskLevel::Medium);
    // Permissions management, directly or through a wildcard.
    assert_eq!(risk(on_any("iam:PassRole")), RiskLevel::High);
    assert_eq!(risk(on_any("s3:*")), RiskLevel::High, "s3:* holds s3:PutBucketPolicy");
    assert_eq!(risk(on_any("*")), RiskLevel::High);
    assert_eq!(risk(on_any("iam:Attach*")), RiskLevel::High);
    // The AWS ones: permissions on demand grants AWS actions only.
    for a in grantwatch_core::findings::SELF_ESCALATION_ACTIONS.iter().filter(|a| a.contains(':')) {
        assert_eq!(risk(on_any(a)), RiskLevel::High, "{a}");
    }
    // Administrator-like managed policies and permission sets, built in and configured.
    let managed = |arn: &str| RequestedAccess::ManagedPolicy { policy_arn: arn.to_string() };
    assert_eq!(risk(managed("arn:aws:iam::aws:policy/AdministratorAccess")), RiskLevel::High);
    assert_eq!(risk(managed("arn:aws:iam::aws:policy/PowerUserAccess")), RiskLevel::High);
    assert_eq!(risk(managed("arn:aws:iam::aws:policy/IAMFullAccess")), RiskLevel::High);
    assert_eq!(risk(managed("arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess")), RiskLevel::Medium);
    assert_eq!(risk(managed("arn:aws:iam::aws:policy/job-function/ViewOnlyAccess")), RiskLevel::Low);
    let set = |name: &str| RequestedAccess::PermissionSet { name: name.to_string(), account_id: PROD.to_string() };
    assert_eq!(risk(set("OrgAdmin")), RiskLevel::High);
    assert_eq!(risk(set("Developer")), RiskLevel::Medium);
}

#[test]
fn invalid_requests_are_refused_with_the_field_that_is_wrong() {
    let l = ledger(Arc::new(MemStore::new()));
    let refuse = |r| match l.submit(r, t(0)) {
        Err(AccessError::Invalid(e)) => e,
        other => panic!("expected a validation error, got {other:?}"),
    };
    let with = |f: &dyn Fn(&mut grantwatch_types::AccessRequest)| {
        let mut r = read_request("r1", PROD);
        f(&mut r);
        r
    };
    assert_eq!(refuse(with(&|r| r.justification = "  ".into())), ValidationError::EmptyJustification);
    assert_eq!(
        refuse(with(&|r| r.justification = "x".repeat(1001))),
        ValidationError::JustificationTooLong { len: 1001, max: 1000 }
    );
    assert_eq!(refuse(with(&|r| r.duration_secs = 0)), ValidationError::ZeroDuration);
    let e = refuse(with(&|r| r.duration_secs = 3601));
    assert_eq!(e.to_string(), "the duration of 3601 seconds exceeds rule \"prod\"'s maximum of 3600 seconds");
    assert!(matches!(refuse(with(&|r| r.id = "a/b".into())), ValidationError::BadRequestId(_)));
    assert!(matches!(refuse(with(&|r| r.requester = "system".into())), ValidationError::BadRequester));
    assert!(matches!(refuse(with(&|r| r.ticket = Some(String::new()))), ValidationError::BadTicket));
    let e = refuse(with(&|r| r.access = actions(&[("s3:GetObjekt", &["*"])])));
    assert_eq!(e.to_string(), "unknown action \"s3:GetObjekt\": it is not in the AWS action catalog");
    let e = refuse(with(&|r| r.access = actions(&[("s3:Fly*", &["*"])])));
    assert_eq!(e, ValidationError::WildcardMatchesNothing("s3:Fly*".into()));
    assert!(matches!(
        refuse(with(&|r| r.access = actions(&[("GetObject", &["*"])]))),
        ValidationError::MalformedAction(_)
    ));
    assert!(matches!(
        refuse(with(&|r| r.access = actions(&[("s3:GetObject", &[])]))),
        ValidationError::NoResources { .. }
    ));
    let e = refuse(with(&|r| {
        r.access = actions(&[("dynamodb:GetItem", &["arn:aws:dynamodb:us-east-1:999999999999:table/t"])])
    }));
    assert_eq!(
        e.to_string(),
        "resource \"arn:aws:dynamodb:us-east-1:999999999999:table/t\" is in account \"999999999999\", not the target \
         account 111111111111"
    );
    let e = refuse(with(&|r| r.access = actions(&[("dynamodb:GetItem", &["arn:aws:dynamodb:us-east-1:*:table/t"])])));
    assert!(matches!(e, ValidationError::WrongAccount { .. }), "a wildcard account reaches every account: {e}");
    let e =
        refuse(with(&|r| r.identity = RequestedIdentity::IamUser { arn: "arn:aws:iam::999999999999:user/x".into() }));
    assert!(matches!(e, ValidationError::WrongAccount { what: "identity", .. }), "{e}");
    let e = refuse(with(&|r| r.identity = RequestedIdentity::IamRole { arn: format!("arn:aws:iam::{PROD}:user/x") }));
    assert!(matches!(e, ValidationError::BadArn { .. }), "{e}");
    assert!(matches!(
        refuse(with(&|r| r.identity = RequestedIdentity::IamUser { arn: "carol".into() })),
        ValidationError::BadArn { .. }
    ));
    let e = refuse(with(&|r| {
        r.access = RequestedAccess::PermissionSet { name: "Developer".into(), account_id: PROD.into() }
    }));
    assert_eq!(e.to_string(), "a permission set is granted to an IAM Identity Center user, not to IAM user");
    let e = refuse(with(&|r| {
        r.access = RequestedAccess::ManagedPolicy { policy_arn: "arn:aws:iam::999999999999:policy/P".into() }
    }));
    assert!(matches!(e, ValidationError::WrongAccount { what: "managed policy", .. }), "{e}");
    let e = refuse(with(&|r| {
        r.account_id = "333333333333".into();
        r.identity = RequestedIdentity::IamUser { arn: "arn:aws:iam::333333333333:user/x".into() };
    }));
    assert_eq!(e.to_string(), "no approval rule covers account 333333333333");
    // Nothing was stored by any refusal.
    assert!(l.get("r1").unwrap().is_none());
}

#[test]
fn self_approval_and_the_identitys_own_approval_are_refused() {
    let l = ledger(Arc::new(MemStore::new()));
    l.submit(write_request("r1", PROD), t(0)).unwrap();
    assert!(matches!(l.approve("r1", &p("carol"), t(1), ""), Err(AccessError::SelfApproval)));
    assert!(matches!(l.approve("r1", &p("CAROL"), t(1), ""), Err(AccessError::SelfApproval)));
    let identity = format!("arn:aws:iam::{PROD}:user/dev/carol");
    assert!(matches!(l.approve("r1", &p(&identity), t(1), ""), Err(AccessError::IdentityApproval)));
    assert!(matches!(l.approve("r1", &p("mallory"), t(1), ""), Err(AccessError::NotAnApprover { .. })));
    assert_eq!(l.get("r1").unwrap().unwrap().state, AccessState::Pending);
    // A group member approves; medium risk needs one.
    let done = l.approve("r1", &Principal::with_groups("dave", ["secops"]), t(2), "ok").unwrap();
    assert_eq!(done.record.state, AccessState::Approved);
    // Even a requester who is an approver may not approve their own request.
    let mut own = write_request("r2", PROD);
    own.requester = "alice".into();
    l.submit(own, t(0)).unwrap();
    assert!(matches!(l.approve("r2", &p("alice"), t(1), ""), Err(AccessError::SelfApproval)));
}

#[test]
fn high_risk_needs_two_distinct_approvers() {
    let l = ledger(Arc::new(MemStore::new()));
    let r = l.submit(admin_request("r1", PROD), t(0)).unwrap().record;
    assert_eq!((r.risk, r.approvals_required), (RiskLevel::High, 2));
    let first = l.approve("r1", &p("alice"), t(1), "").unwrap();
    assert_eq!(first.record.state, AccessState::Pending);
    assert_eq!(first.transitions[0].command, AccessCommand::AddApproval);
    assert!(matches!(l.approve("r1", &p("alice"), t(2), ""), Err(AccessError::AlreadyApproved(_))));
    // The same person by another spelling, admitted through a group, is still the same approver.
    let alias = Principal::with_groups("Alice", ["secops"]);
    assert!(matches!(l.approve("r1", &alias, t(2), ""), Err(AccessError::AlreadyApproved(_))));
    assert_eq!(l.get("r1").unwrap().unwrap().state, AccessState::Pending);
    let second = l.approve("r1", &p("bob"), t(3), "").unwrap();
    assert_eq!(second.record.state, AccessState::Approved);
    assert!(matches!(l.approve("r1", &p("dave"), t(4), ""), Err(AccessError::Transition(_))));
}

#[test]
fn a_rule_that_cannot_reach_the_quorum_refuses_high_risk_requests() {
    let text = RULES.replace(r#"approvers = ["alice", "bob"]"#, r#"approvers = ["alice"]"#);
    let l = grantwatch_access::AccessLedger::open(
        Arc::new(MemStore::new()),
        grantwatch_access::AccessConfig::from_toml(&text).unwrap(),
        CATALOG.clone(),
    );
    let e = l.submit(admin_request("r1", SANDBOX), t(0)).unwrap_err();
    assert!(matches!(e, AccessError::Invalid(ValidationError::NotEnoughApprovers { needed: 2, .. })), "{e}");
}

#[test]
fn auto_approval_is_for_low_risk_only_and_only_where_configured() {
    let l = ledger(Arc::new(MemStore::new()));
    let a = l.submit(read_request("low-sandbox", SANDBOX), t(0)).unwrap();
    assert_eq!(a.record.state, AccessState::Approved);
    assert_eq!(
        a.transitions.iter().map(|t| (t.command, t.by.as_str())).collect::<Vec<_>>(),
        [(AccessCommand::Submit, "carol"), (AccessCommand::Approve, "system")]
    );
    assert_eq!(l.submit(write_request("medium-sandbox", SANDBOX), t(0)).unwrap().record.state, AccessState::Pending);
    assert_eq!(l.submit(read_request("low-prod", PROD), t(0)).unwrap().record.state, AccessState::Pending);
    assert!(matches!(l.submit(read_request("low-prod", PROD), t(0)), Err(AccessError::Duplicate(_))));
}

#[test]
fn the_grant_installs_exactly_the_request_with_a_time_lock() {
    let l = ledger(Arc::new(MemStore::new()));
    l.submit(write_request("r1", PROD), t(0)).unwrap();
    l.approve("r1", &p("bob"), t(10), "").unwrap();
    let (applied, action) = l.activate("r1", t(20)).unwrap();
    let schedule = applied.record.revoke.unwrap();
    assert_eq!(schedule.expires_at, t(620));
    let GrantAction::PutInlinePolicy { principal, policy_name, document } = action else { panic!("{action:?}") };
    assert_eq!(principal, GrantPrincipal::IamUser { name: "carol".into() });
    assert_eq!(policy_name, "grantwatch-access-r1");
    assert_eq!(
        document,
        r#"{"Version":"2012-10-17","Statement":[{"Sid":"GrantwatchAccess1","Effect":"Allow","Action":["s3:PutObject"],"Resource":["arn:aws:s3:::logs/*"],"Condition":{"DateLessThan":{"aws:CurrentTime":"2025-01-01T00:10:20Z"}}}]}"#
    );
    let due = l.due(t(620)).unwrap();
    assert_eq!(
        due[0].action,
        RevokeAction::DeleteInlinePolicy {
            principal: GrantPrincipal::IamUser { name: "carol".into() },
            policy_name: "grantwatch-access-r1".into()
        }
    );
}

/// A request through approval to an active grant at `t(20)` that expires at `t(620)`.
fn active(l: &grantwatch_access::AccessLedger<Arc<MemStore>>, id: &str) {
    l.submit(write_request(id, PROD), t(0)).expect("submit");
    l.approve(id, &p("bob"), t(10), "").expect("approve");
    l.activate(id, t(20)).expect("activate");
}

#[test]
fn a_grant_is_revoked_once_at_its_deadline_and_never_due_again() {
    let l = ledger(Arc::new(MemStore::new()));
    active(&l, "r1");
    assert!(l.due(t(619)).unwrap().is_empty());
    assert!(matches!(l.claim("r1", t(619), "w1"), Err(AccessError::NotDue { .. })));
    assert_eq!(l.due(t(620)).unwrap().len(), 1);
    let ticket = l.claim("r1", t(620), "w1").unwrap();
    assert_eq!(ticket.lease_until, t(680));
    // Claimed: due for no one else while the lease runs.
    assert!(l.due(t(650)).unwrap().is_empty());
    assert!(matches!(l.claim("r1", t(650), "w2"), Err(AccessError::Claimed { .. })));
    let done = l.complete(&ticket, RevokeOutcome::Revoked, t(630)).unwrap();
    assert_eq!(done.record.state, AccessState::Expired);
    assert!(l.due(t(1_000_000)).unwrap().is_empty());
    assert!(matches!(l.complete(&ticket, RevokeOutcome::Revoked, t(631)), Err(AccessError::ClaimLost { .. })));
    assert!(matches!(l.claim("r1", t(1_000_000), "w2"), Err(AccessError::Transition(_))));
    let log: Vec<_> = l.log("r1").unwrap().into_iter().map(|t| (t.command, t.state)).collect();
    assert_eq!(
        log,
        [
            (AccessCommand::Submit, AccessState::Pending),
            (AccessCommand::Approve, AccessState::Approved),
            (AccessCommand::Activate, AccessState::Active),
            (AccessCommand::Claim, AccessState::Active),
            (AccessCommand::Expire, AccessState::Expired),
        ]
    );
    verify_index(l.store()).unwrap();
}

#[test]
fn grants_that_fell_due_while_the_service_was_down_are_due_after_restart() {
    let store = Arc::new(MemStore::new());
    let l = ledger(store.clone());
    active(&l, "a");
    active(&l, "b");
    drop(l);
    // Down from t(100) to t(5000): both deadlines (t(620)) passed meanwhile.
    let l = ledger(store);
    let due: Vec<_> = l.due(t(5000)).unwrap().into_iter().map(|g| g.request_id).collect();
    assert_eq!(due, ["a", "b"]);
}

#[test]
fn a_crashed_workers_lease_runs_out_and_its_late_completion_is_refused() {
    let store = Arc::new(MemStore::new());
    let l = ledger(store.clone());
    active(&l, "r1");
    let stale = l.claim("r1", t(620), "w1").unwrap();
    drop(l); // w1's process dies with its claim.
    let l = ledger(store);
    assert!(l.due(t(679)).unwrap().is_empty());
    assert_eq!(l.due(t(680)).unwrap().len(), 1);
    let fresh = l.claim("r1", t(680), "w2").unwrap();
    assert_eq!(fresh.attempt, 2);
    assert!(matches!(l.complete(&stale, RevokeOutcome::Revoked, t(681)), Err(AccessError::ClaimLost { .. })));
    assert_eq!(l.complete(&fresh, RevokeOutcome::Revoked, t(682)).unwrap().record.state, AccessState::Expired);
}

#[test]
fn failed_revocations_back_off_exponentially_up_to_the_cap_and_then_alert() {
    let l = ledger(Arc::new(MemStore::new()));
    active(&l, "r1");
    let mut now = t(620);
    let mut waits = Vec::new();
    let mut alerts = Vec::new();
    for _ in 0..6 {
        let ticket = l.claim("r1", now, "w").unwrap();
        let r = l.complete(&ticket, RevokeOutcome::Failed { error: "Throttling".into() }, now).unwrap().record;
        let s = r.revoke.unwrap();
        waits.push((s.due_at.0 - now.0) / 1000);
        alerts.push(s.alert);
        assert!(l.due(EventTime(s.due_at.0 - 1)).unwrap().is_empty());
        now = s.due_at;
    }
    assert_eq!(waits, [10, 20, 40, 80, 100, 100]);
    assert_eq!(alerts, [false, false, true, true, true, true]);
    let g = &l.due(now).unwrap()[0];
    assert!(g.alert && g.failures == 6);
    let ticket = l.claim("r1", now, "w").unwrap();
    assert_eq!(l.complete(&ticket, RevokeOutcome::Revoked, now).unwrap().record.state, AccessState::Expired);
}

#[test]
fn early_revocation_ends_revoked_and_a_failed_installation_ends_failed() {
    let l = ledger(Arc::new(MemStore::new()));
    active(&l, "r1");
    assert!(matches!(l.request_revoke("r1", &p("mallory"), t(30), "x"), Err(AccessError::NotAllowed { .. })));
    assert!(matches!(l.request_revoke("r1", &p("carol"), t(30), " "), Err(AccessError::Invalid(_))));
    l.request_revoke("r1", &p("carol"), t(30), "done early").unwrap();
    assert!(matches!(l.request_revoke("r1", &p("bob"), t(31), "again"), Err(AccessError::AlreadyEnding { .. })));
    assert_eq!(l.due(t(30)).unwrap()[0].request_id, "r1");
    let ticket = l.claim("r1", t(30), "w").unwrap();
    assert_eq!(l.complete(&ticket, RevokeOutcome::Revoked, t(31)).unwrap().record.state, AccessState::Revoked);

    active(&l, "r2");
    l.install_failed("r2", t(21), "AccessDenied on iam:PutUserPolicy").unwrap();
    let ticket = l.claim("r2", t(21), "w").unwrap();
    assert_eq!(l.complete(&ticket, RevokeOutcome::Revoked, t(22)).unwrap().record.state, AccessState::Failed);

    active(&l, "r3");
    assert!(matches!(l.abandon("r3", &p("carol"), t(30), "gone"), Err(AccessError::NotAnApprover { .. })));
    assert_eq!(l.abandon("r3", &p("alice"), t(30), "user deleted").unwrap().record.state, AccessState::Failed);
    assert!(l.due(t(1_000_000)).unwrap().is_empty());

    l.submit(write_request("r4", PROD), t(0)).unwrap();
    l.approve("r4", &p("bob"), t(1), "").unwrap();
    assert_eq!(l.fail_before_install("r4", t(2), "NoSuchEntity").unwrap().record.state, AccessState::Failed);
    verify_index(l.store()).unwrap();
}

#[test]
fn cancel_and_deny_are_for_the_right_people_and_states() {
    let l = ledger(Arc::new(MemStore::new()));
    l.submit(write_request("r1", PROD), t(0)).unwrap();
    assert!(matches!(l.deny("r1", &p("carol"), t(1), "no"), Err(AccessError::NotAnApprover { .. })));
    assert!(matches!(l.cancel("r1", &p("mallory"), t(1), "no"), Err(AccessError::NotAllowed { .. })));
    assert_eq!(l.deny("r1", &p("alice"), t(1), "not justified").unwrap().record.state, AccessState::Denied);
    let e = l.cancel("r1", &p("carol"), t(2), "never mind").unwrap_err();
    assert_eq!(e.to_string(), "cannot cancel a request that is denied (it is final)");
    l.submit(write_request("r2", PROD), t(0)).unwrap();
    l.approve("r2", &p("bob"), t(1), "").unwrap();
    assert_eq!(l.cancel("r2", &p("carol"), t(2), "never mind").unwrap().record.state, AccessState::Cancelled);
    assert!(matches!(l.activate("r2", t(3)), Err(AccessError::Transition(_))));
    assert!(matches!(l.approve("nope", &p("bob"), t(3), ""), Err(AccessError::NotFound(_))));
}

#[test]
fn permission_sets_and_managed_policies_are_described_as_data() {
    let l = ledger(Arc::new(MemStore::new()));
    let mut r = write_request("ps", PROD);
    r.identity = RequestedIdentity::IdentityCenterUser { user_id: "90676-abcd".into() };
    r.access = RequestedAccess::PermissionSet { name: "Developer".into(), account_id: PROD.into() };
    l.submit(r, t(0)).unwrap();
    l.approve("ps", &p("bob"), t(1), "").unwrap();
    let (_, action) = l.activate("ps", t(2)).unwrap();
    assert_eq!(
        action,
        GrantAction::CreateAccountAssignment {
            account_id: PROD.into(),
            permission_set_name: "Developer".into(),
            user_id: "90676-abcd".into()
        }
    );
    let mut r = write_request("mp", PROD);
    r.identity = RequestedIdentity::IamRole { arn: format!("arn:aws:iam::{PROD}:role/ci/deployer") };
    r.access = RequestedAccess::ManagedPolicy { policy_arn: "arn:aws:iam::aws:policy/AdministratorAccess".into() };
    l.submit(r, t(0)).unwrap();
    l.approve("mp", &p("alice"), t(1), "").unwrap();
    l.approve("mp", &p("bob"), t(1), "").unwrap();
    let (_, action) = l.activate("mp", t(2)).unwrap();
    assert_eq!(
        action,
        GrantAction::AttachManagedPolicy {
            principal: GrantPrincipal::IamRole { name: "deployer".into() },
            policy_arn: "arn:aws:iam::aws:policy/AdministratorAccess".into()
        }
    );
}

#[test]
fn a_value_that_does_not_decode_is_reported_not_treated_as_absent() {
    let store = Arc::new(MemStore::new());
    let mut b = WriteBatch::new();
    b.put(Table::Meta, keys::ACCESS_REQUEST.key_str("r1"), b"{not json".to_vec());
    store.write(b).unwrap();
    let l = ledger(store);
    assert!(matches!(l.get("r1"), Err(AccessError::State(StateError::Corrupt { .. }))));
    assert!(matches!(l.submit(read_request("r1", PROD), t(0)), Err(AccessError::State(StateError::Corrupt { .. }))));
}

#[test]
fn every_transition_reaches_the_outbox_once_numbered_without_gaps_across_restarts() {
    let store = Arc::new(MemStore::new());
    let l = ledger(store.clone());
    active(&l, "a");
    let first = l.outbox(100).unwrap();
    let seqs: Vec<u64> = first.iter().map(|e| e.audit_seq).collect();
    assert_eq!(seqs, [0, 1, 2]);
    let last = first.last().unwrap();
    assert_eq!((last.transition.command, last.transition.state), (AccessCommand::Activate, AccessState::Active));
    assert_eq!(last.expires_at, Some(t(620)));
    assert_eq!(last.approvals.len(), 1);
    assert_eq!(l.outbox(2).unwrap().len(), 2, "the limit bounds a page");
    l.ack_outbox(1).unwrap();
    assert_eq!(l.outbox(100).unwrap().iter().map(|e| e.audit_seq).collect::<Vec<_>>(), [2]);
    drop(l);
    // A restarted ledger continues the numbering where the store left it.
    let l = ledger(store);
    active(&l, "b");
    let seqs: Vec<u64> = l.outbox(100).unwrap().iter().map(|e| e.audit_seq).collect();
    assert_eq!(seqs, [2, 3, 4, 5]);
    assert_eq!(l.next_due().unwrap(), Some(t(620)));
    l.ack_outbox(5).unwrap();
    assert!(l.outbox(100).unwrap().is_empty());
}

#[test]
fn a_restarted_service_releases_the_claims_of_the_process_that_died() {
    let store = Arc::new(MemStore::new());
    let l = ledger(store.clone());
    active(&l, "a");
    active(&l, "b");
    let _lost = l.claim("a", t(620), "old-worker").unwrap();
    drop(l);
    // Restarted at t(630): "a" is claimed until t(680) by a process that is gone.
    let l = ledger(store);
    assert_eq!(l.due_limited(t(630), 10).unwrap().len(), 1, "only b is due while a's stale lease runs");
    assert_eq!(l.release_interrupted_claims(t(630)).unwrap(), ["a"]);
    let due: Vec<_> = l.due(t(630)).unwrap().into_iter().map(|g| (g.request_id, g.failures)).collect();
    // In due order: b at its deadline, a from now; no failure counted for the interruption.
    assert_eq!(due, [("b".to_string(), 0), ("a".to_string(), 0)]);
    assert_eq!(l.due_limited(t(630), 1).unwrap().len(), 1, "a page holds at most the limit");
    let last = l.log("a").unwrap().pop().unwrap();
    assert_eq!(last.command, AccessCommand::RevokeFailed);
    assert!(last.reason.contains("interrupted"), "{}", last.reason);
    assert!(l.release_interrupted_claims(t(631)).unwrap().is_empty());
    verify_index(l.store()).unwrap();
}
