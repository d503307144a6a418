//! Properties of the access core under random histories: the transition table never reaches an
//! illegal state; approvals reach the quorum only with enough distinct eligible approvers; and every
//! grant that became active is revoked exactly once however workers crash and the service restarts,
//! with the expiry index agreeing with the requests after every step.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use common::*;
use grantwatch_access::transition::INITIAL;
use grantwatch_access::{AccessError, Principal, RevokeOutcome, RevokeTicket, next, verify_index};
use grantwatch_state::MemStore;
use grantwatch_types::{AccessCommand, AccessState, EventTime, RequestedIdentity};
use proptest::prelude::*;

fn command() -> impl Strategy<Value = AccessCommand> {
    proptest::sample::select(AccessCommand::ALL.to_vec())
}

proptest! {
    #[test]
    fn random_commands_never_reach_an_illegal_state(commands in proptest::collection::vec(command(), 0..40)) {
        let mut state = INITIAL;
        let mut was_approved = false;
        let mut was_active = false;
        for c in commands {
            match next(state, c) {
                Ok(to) => {
                    prop_assert!(!state.is_terminal(), "{c} left terminal {state}");
                    prop_assert!(c != AccessCommand::Submit);
                    if to == AccessState::Approved { prop_assert_eq!(state, AccessState::Pending); }
                    if to == AccessState::Active { prop_assert!(was_approved); }
                    if matches!(to, AccessState::Expired | AccessState::Revoked) { prop_assert!(was_active); }
                    if to == AccessState::Pending { prop_assert_eq!(state, AccessState::Pending); }
                    was_approved |= to == AccessState::Approved;
                    was_active |= to == AccessState::Active;
                    state = to;
                }
                Err(e) => {
                    prop_assert_eq!((e.from, e.command), (state, c));
                }
            }
        }
    }

    #[test]
    fn approval_needs_the_quorum_of_distinct_eligible_approvers(
        high in any::<bool>(),
        approvers in proptest::collection::vec(0usize..6, 0..8),
    ) {
        // carol is the requester; the ARN is the identity; mallory approves nothing; "Alice" is alice.
        let pool = |i: usize| match i {
            0 => Principal::new("alice"),
            1 => Principal::new("bob"),
            2 => Principal::new("carol"),
            3 => Principal::new(format!("arn:aws:iam::{PROD}:user/dev/carol")),
            4 => Principal::new("mallory"),
            _ => Principal::with_groups("Alice", ["secops"]),
        };
        let l = ledger(Arc::new(MemStore::new()));
        let req = if high { admin_request("r", PROD) } else { write_request("r", PROD) };
        let needed = if high { 2 } else { 1 };
        l.submit(req, t(0)).unwrap();
        let mut distinct = BTreeSet::new();
        for (n, &i) in approvers.iter().enumerate() {
            let who = pool(i);
            let before = l.get("r").unwrap().unwrap().state;
            let result = l.approve("r", &who, t(n as i64 + 1), "");
            let eligible = matches!(i, 0 | 1 | 5);
            let person = who.name.to_ascii_lowercase();
            if before == AccessState::Pending && eligible && !distinct.contains(&person) {
                prop_assert!(result.is_ok(), "{result:?}");
                distinct.insert(person);
            } else {
                prop_assert!(result.is_err());
            }
            let state = l.get("r").unwrap().unwrap().state;
            prop_assert_eq!(state == AccessState::Approved, distinct.len() >= needed);
        }
    }
}

/// One step of a random history.
#[derive(Debug, Clone)]
enum Op {
    Submit {
        kind: u8,
    },
    Approve {
        req: usize,
        who: usize,
    },
    Deny {
        req: usize,
    },
    Cancel {
        req: usize,
    },
    /// Activate, then install (or fail to and report it).
    Activate {
        req: usize,
        install_ok: bool,
    },
    RequestRevoke {
        req: usize,
    },
    Advance {
        secs: i64,
    },
    /// A worker takes the first due grant and holds its ticket.
    Claim {
        worker: usize,
    },
    /// A worker holding a ticket performs the revocation at AWS (or fails to) and completes.
    Finish {
        held: usize,
        aws_ok: bool,
        crash_before_complete: bool,
    },
    /// The service dies: the ledger and every held ticket are gone; it is reopened on the same store.
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..3).prop_map(|kind| Op::Submit { kind }),
        6 => (0usize..8, 0usize..3).prop_map(|(req, who)| Op::Approve { req, who }),
        1 => (0usize..8).prop_map(|req| Op::Deny { req }),
        1 => (0usize..8).prop_map(|req| Op::Cancel { req }),
        6 => (0usize..8, prop::bool::weighted(0.8)).prop_map(|(req, install_ok)| Op::Activate { req, install_ok }),
        1 => (0usize..8).prop_map(|req| Op::RequestRevoke { req }),
        3 => (0i64..800).prop_map(|secs| Op::Advance { secs }),
        3 => (0usize..2).prop_map(|worker| Op::Claim { worker }),
        3 => (0usize..4, prop::bool::weighted(0.6), prop::bool::weighted(0.2))
            .prop_map(|(held, aws_ok, crash_before_complete)| Op::Finish { held, aws_ok, crash_before_complete }),
        1 => Just(Op::Crash),
    ]
}

/// What AWS holds, as the simulated service changes it: the ids whose grant is installed.
#[derive(Default)]
struct Aws {
    installed: BTreeSet<String>,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn every_active_grant_is_revoked_exactly_once_across_crashes(ops in proptest::collection::vec(op(), 10..80)) {
        let store = Arc::new(MemStore::new());
        let mut l = ledger(store.clone());
        let mut now = t(0);
        let mut ids: Vec<String> = Vec::new();
        let mut held: Vec<RevokeTicket> = Vec::new();
        let mut aws = Aws::default();
        let mut activated = BTreeSet::new();
        // Successful revocation completions per id: the exactly-once count.
        let mut completed: BTreeMap<String, u32> = BTreeMap::new();
        let approvers = [Principal::new("alice"), Principal::new("bob"), Principal::with_groups("dave", ["secops"])];
        let pick = |ids: &[String], i: usize| ids.get(i % ids.len().max(1)).cloned();

        for op in ops {
            match op {
                Op::Submit { kind } => {
                    let id = format!("r{}", ids.len());
                    let req = match kind { 0 => read_request(&id, PROD), 1 => write_request(&id, PROD), _ => admin_request(&id, PROD) };
                    l.submit(req, now).unwrap();
                    ids.push(id);
                }
                Op::Approve { req, who } => if let Some(id) = pick(&ids, req) {
                    let _ = l.approve(&id, &approvers[who], now, "");
                },
                Op::Deny { req } => if let Some(id) = pick(&ids, req) {
                    let _ = l.deny(&id, &approvers[0], now, "no");
                },
                Op::Cancel { req } => if let Some(id) = pick(&ids, req) {
                    let _ = l.cancel(&id, &Principal::new("carol"), now, "withdrawn");
                },
                Op::Activate { req, install_ok } => if let Some(id) = pick(&ids, req).filter(|id| l.activate(id, now).is_ok()) {
                    activated.insert(id.clone());
                    if install_ok {
                        aws.installed.insert(id);
                    } else {
                        l.install_failed(&id, now, "Throttling").unwrap();
                    }
                },
                Op::RequestRevoke { req } => if let Some(id) = pick(&ids, req) {
                    let _ = l.request_revoke(&id, &Principal::new("carol"), now, "done");
                },
                Op::Advance { secs } => now = EventTime(now.0 + secs * 1000),
                Op::Claim { worker } => {
                    let due = l.due(now).unwrap();
                    if let Some(g) = due.first() {
                        prop_assert!(g.due_at <= now);
                        held.push(l.claim(&g.request_id, now, &format!("w{worker}")).unwrap());
                    }
                }
                Op::Finish { held: i, aws_ok, crash_before_complete } => if !held.is_empty() {
                    let ticket = held.remove(i % held.len());
                    if aws_ok {
                        // Idempotent at AWS: removing what is already gone is success.
                        aws.installed.remove(&ticket.request_id);
                    }
                    if crash_before_complete {
                        // This worker dies: its lease will run out.
                        continue;
                    }
                    let outcome = if aws_ok { RevokeOutcome::Revoked } else { RevokeOutcome::Failed { error: "Throttling".into() } };
                    match l.complete(&ticket, outcome, now) {
                        Ok(a) => if aws_ok {
                            *completed.entry(ticket.request_id.clone()).or_default() += 1;
                            prop_assert!(a.record.state.is_terminal());
                        },
                        Err(AccessError::ClaimLost { .. }) => {}
                        Err(e) => prop_assert!(false, "complete: {e}"),
                    }
                }
                Op::Crash => {
                    drop(std::mem::take(&mut held));
                    drop(l);
                    l = ledger(store.clone());
                }
            }
            prop_assert_eq!(verify_index(&*store), Ok(()));
        }

        // Drain: time runs on (leases of dead workers run out), one worker revokes what is due.
        held.clear();
        for _ in 0..1000 {
            now = EventTime(now.0 + 200_000);
            let due = l.due(now).unwrap();
            let any_active = grantwatch_access::ledger::all_records(&*store)
                .unwrap()
                .iter()
                .any(|r| r.state == AccessState::Active);
            if !any_active { break; }
            for g in due {
                let ticket = l.claim(&g.request_id, now, "drain").unwrap();
                aws.installed.remove(&g.request_id);
                l.complete(&ticket, RevokeOutcome::Revoked, now).unwrap();
                *completed.entry(g.request_id).or_default() += 1;
            }
            prop_assert_eq!(verify_index(&*store), Ok(()));
        }
        prop_assert!(l.due(EventTime(i64::MAX / 2)).unwrap().is_empty());
        prop_assert!(aws.installed.is_empty(), "still installed: {:?}", aws.installed);
        for id in &ids {
            let r = l.get(id).unwrap().unwrap();
            let log = l.log(id).unwrap();
            let terminal = log.iter().filter(|t| t.state.is_terminal()).count();
            if activated.contains(id) {
                prop_assert!(matches!(r.state, AccessState::Expired | AccessState::Revoked | AccessState::Failed), "{id}: {}", r.state);
                prop_assert_eq!(terminal, 1, "{}", id);
                prop_assert_eq!(completed.get(id).copied(), Some(1), "{} revoked once", id);
            } else {
                prop_assert!(r.revoke.is_none());
                prop_assert!(!completed.contains_key(id));
                prop_assert!(terminal <= 1);
            }
            if r.risk == grantwatch_types::RiskLevel::High && r.approvals_required == 2 && activated.contains(id) {
                let people: BTreeSet<_> = r.approvals.iter().map(|a| a.approver.to_ascii_lowercase()).collect();
                prop_assert!(people.len() >= 2 && !people.contains("carol"));
            }
            if let RequestedIdentity::IamUser { .. } = r.request.identity {} else { prop_assert!(false) }
        }
    }
}
