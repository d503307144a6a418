//! The runs over an in-memory account: order, idempotence, resume after a stop at every call, drift,
//! rollback (also after a stop, also of a stopped rollback), accounts, permission sets, attach/detach.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use grantwatch_types::{
    AccessKeyState, Change, EventTime, IamCall, IdentityIamState, IdentityKind, IdentityPlan, JournalRecord,
    NamedDocument, PLAN_SCHEMA, PermissionSetState, PlanReason, PlanScope, RemediationPlan, ReplayProof, RunOutcome,
    StepOutcome, Subject,
};
use serde_json::{Value, json};

use crate::api::{ApiError, ApiErrorKind, CallOutput, Caller, IamApi, PolicyState};
use crate::journal::{Journal, StepStatus, steps};
use crate::{Outcome, RunOptions, apply, attach, rollback, state};

const ACCOUNT: &str = "111122223333";
const RO: &str = "arn:aws:iam::aws:policy/ReadOnlyAccess";
const KEEP: &str = "arn:aws:iam::111122223333:policy/grantwatch/alice-keep";
const KEEP_ROLE: &str = "arn:aws:iam::111122223333:policy/grantwatch/deploy-keep";

#[derive(Clone)]
struct FakePolicy {
    document: Value,
    versions: Vec<(String, bool)>,
}

/// An account in memory, answering like IAM (NoSuchEntity, EntityAlreadyExists, DeleteConflict).
#[derive(Clone)]
struct FakeIam {
    account: String,
    identities: HashMap<(IdentityKind, String), IdentityIamState>,
    policies: HashMap<String, FakePolicy>,
    permission_sets: HashMap<String, PermissionSetState>,
    provisioned: u32,
    /// Changing calls made, in order.
    calls: Vec<IamCall>,
    /// Make the change of this (1-based) call, then fail as if the answer were lost.
    stop_after: Option<usize>,
    /// GetCallerIdentity fails as it does without credentials.
    no_credentials: bool,
}

fn subject(kind: IdentityKind, name: &str) -> Subject {
    let k = match kind {
        IdentityKind::Role => "role",
        IdentityKind::Group => "group",
        _ => "user",
    };
    Subject { kind, name: name.into(), arn: format!("arn:aws:iam::{ACCOUNT}:{k}/{name}") }
}

fn not_found(what: &str) -> ApiError {
    ApiError::service("NoSuchEntity", format!("{what} not found"))
}

impl FakeIam {
    fn new() -> FakeIam {
        let mut identities = HashMap::new();
        identities.insert(
            (IdentityKind::User, "alice".to_string()),
            IdentityIamState {
                managed_policies: vec![RO.into()],
                inline_policies: vec![NamedDocument { name: "s3-all".into(), document: doc("s3:*") }],
                groups: vec!["devs".into()],
                access_keys: vec![
                    AccessKeyState { access_key_id: "AKIAALICE1".into(), status: "Active".into() },
                    AccessKeyState { access_key_id: "AKIAALICE2".into(), status: "Active".into() },
                ],
            },
        );
        identities.insert(
            (IdentityKind::Role, "deploy".to_string()),
            IdentityIamState {
                managed_policies: vec![RO.into()],
                inline_policies: vec![NamedDocument { name: "ec2".into(), document: doc("ec2:*") }],
                ..IdentityIamState::default()
            },
        );
        identities.insert(
            (IdentityKind::Role, "AWSReservedSSO_Dev_0123".to_string()),
            IdentityIamState { managed_policies: vec![RO.into()], ..IdentityIamState::default() },
        );
        let mut policies = HashMap::new();
        policies.insert(RO.to_string(), FakePolicy { document: doc("*:Get*"), versions: vec![("v1".into(), true)] });
        let mut permission_sets = HashMap::new();
        permission_sets.insert(
            "Dev".to_string(),
            PermissionSetState {
                instance_arn: "arn:aws:sso:::instance/ssoins-1".into(),
                permission_set_arn: "arn:aws:sso:::permissionSet/ssoins-1/ps-1".into(),
                inline_policy: Some(doc("s3:*")),
                managed_policies: vec![RO.into()],
            },
        );
        FakeIam {
            account: ACCOUNT.into(),
            identities,
            policies,
            permission_sets,
            provisioned: 0,
            calls: Vec::new(),
            stop_after: None,
            no_credentials: false,
        }
    }

    fn state(&self, kind: IdentityKind, name: &str) -> &IdentityIamState {
        self.identities.get(&(kind, name.to_string())).unwrap()
    }

    fn ident(&mut self, s: &Subject) -> Result<&mut IdentityIamState, ApiError> {
        self.identities.get_mut(&(s.kind, s.name.clone())).ok_or_else(|| not_found(&s.name))
    }

    /// What a test compares: identities, policies (documents, versions) and permission sets.
    fn snapshot(&self) -> Value {
        let mut ids: Vec<(String, Value)> = self
            .identities
            .iter()
            .map(|((k, n), s)| (format!("{}/{n}", k.as_str()), serde_json::to_value(s).unwrap()))
            .collect();
        ids.sort_by(|a, b| a.0.cmp(&b.0));
        let mut pols: Vec<(String, Value)> = self
            .policies
            .iter()
            .map(|(a, p)| (a.clone(), json!({"document": p.document, "versions": p.versions})))
            .collect();
        pols.sort_by(|a, b| a.0.cmp(&b.0));
        let mut ps: Vec<(String, Value)> =
            self.permission_sets.iter().map(|(n, p)| (n.clone(), serde_json::to_value(p).unwrap())).collect();
        ps.sort_by(|a, b| a.0.cmp(&b.0));
        json!({"identities": ids, "policies": pols, "permission_sets": ps})
    }

    fn change(&mut self, call: &IamCall) -> Result<CallOutput, ApiError> {
        let policy_exists = |f: &FakeIam, arn: &str| f.policies.contains_key(arn);
        match call {
            IamCall::CreatePolicy { policy_arn, document, .. } => {
                if policy_exists(self, policy_arn) {
                    return Err(ApiError::service("EntityAlreadyExists", "exists"));
                }
                self.policies.insert(
                    policy_arn.clone(),
                    FakePolicy { document: document.clone(), versions: vec![("v1".into(), true)] },
                );
                return Ok(CallOutput { request_ids: vec!["req".into()], version_id: Some("v1".into()) });
            }
            IamCall::AttachPolicy { subject, policy_arn } => {
                if !policy_exists(self, policy_arn) {
                    return Err(not_found(policy_arn));
                }
                let s = self.ident(subject)?;
                if !s.managed_policies.contains(policy_arn) {
                    s.managed_policies.push(policy_arn.clone());
                }
            }
            IamCall::DetachPolicy { subject, policy_arn } => {
                let s = self.ident(subject)?;
                if !s.managed_policies.contains(policy_arn) {
                    return Err(not_found(policy_arn));
                }
                s.managed_policies.retain(|p| p != policy_arn);
            }
            IamCall::DeleteInlinePolicy { subject, policy_name } => {
                let s = self.ident(subject)?;
                if !s.inline_policies.iter().any(|p| &p.name == policy_name) {
                    return Err(not_found(policy_name));
                }
                s.inline_policies.retain(|p| &p.name != policy_name);
            }
            IamCall::PutInlinePolicy { subject, .. }
            | IamCall::AddUserToGroup { subject, .. }
            | IamCall::UpdateAccessKey { subject, .. } => {
                let s = self.ident(subject)?;
                if let IamCall::UpdateAccessKey { access_key_id, .. } = call
                    && !s.access_keys.iter().any(|k| &k.access_key_id == access_key_id)
                {
                    return Err(not_found(access_key_id));
                }
                state::apply_effect(s, call);
            }
            IamCall::RemoveUserFromGroup { subject, group } => {
                let s = self.ident(subject)?;
                if !s.groups.contains(group) {
                    return Err(not_found(group));
                }
                s.groups.retain(|g| g != group);
            }
            IamCall::DeletePolicyVersion { policy_arn, version_id } => {
                let p = self.policies.get_mut(policy_arn).ok_or_else(|| not_found(policy_arn))?;
                if !p.versions.iter().any(|(v, d)| v == version_id && !d) {
                    return Err(not_found(version_id));
                }
                p.versions.retain(|(v, _)| v != version_id);
            }
            IamCall::DeletePolicy { policy_arn } => {
                if !policy_exists(self, policy_arn) {
                    return Err(not_found(policy_arn));
                }
                if self.identities.values().any(|s| s.managed_policies.contains(policy_arn)) {
                    return Err(ApiError::service("DeleteConflict", "attached"));
                }
                if self.policies.get(policy_arn).is_some_and(|p| p.versions.len() > 1) {
                    return Err(ApiError::service("DeleteConflict", "versions"));
                }
                self.policies.remove(policy_arn);
            }
            IamCall::UpdatePermissionSet { permission_set_name, inline_policy, detach_managed, attach_managed } => {
                let ps = self
                    .permission_sets
                    .get_mut(permission_set_name)
                    .ok_or_else(|| ApiError::service("ResourceNotFoundException", "no such permission set"))?;
                ps.inline_policy.clone_from(inline_policy);
                ps.managed_policies.retain(|m| !detach_managed.contains(m));
                for a in attach_managed {
                    if !ps.managed_policies.contains(a) {
                        ps.managed_policies.push(a.clone());
                    }
                }
                ps.managed_policies.sort();
                self.provisioned += 1;
            }
        }
        for s in self.identities.values_mut() {
            state::normalize(s);
        }
        Ok(CallOutput { request_ids: vec!["req".into()], version_id: None })
    }
}

impl IamApi for FakeIam {
    fn caller(&mut self) -> Result<Caller, ApiError> {
        if self.no_credentials {
            return Err(ApiError {
                kind: ApiErrorKind::NotSent,
                code: None,
                message: "no credentials in the chain".into(),
                request_id: None,
            });
        }
        Ok(Caller { account: self.account.clone(), arn: format!("arn:aws:iam::{}:user/admin", self.account) })
    }

    fn live_state(&mut self, s: &Subject) -> Result<IdentityIamState, ApiError> {
        self.ident(s).cloned()
    }

    fn policy(&mut self, arn: &str) -> Result<Option<PolicyState>, ApiError> {
        Ok(self.policies.get(arn).map(|p| PolicyState {
            default_version_id: p.versions.iter().find(|v| v.1).map(|v| v.0.clone()).unwrap_or_default(),
            document: p.document.clone(),
            versions: p.versions.clone(),
        }))
    }

    fn policy_entities(&mut self, arn: &str) -> Result<Vec<Subject>, ApiError> {
        let mut out: Vec<Subject> = self
            .identities
            .iter()
            .filter(|(_, s)| s.managed_policies.iter().any(|p| p == arn))
            .map(|((k, n), _)| subject(*k, n))
            .collect();
        out.sort_by(|a, b| a.arn.cmp(&b.arn));
        Ok(out)
    }

    fn permission_set(&mut self, name: &str) -> Result<PermissionSetState, ApiError> {
        self.permission_sets
            .get(name)
            .cloned()
            .ok_or_else(|| ApiError::service("ResourceNotFoundException", "no such permission set"))
    }

    fn call(&mut self, call: &IamCall) -> Result<CallOutput, ApiError> {
        let out = self.change(call)?;
        self.calls.push(call.clone());
        if self.stop_after == Some(self.calls.len()) {
            return Err(ApiError {
                kind: ApiErrorKind::Unknown,
                code: None,
                message: "connection reset".into(),
                request_id: None,
            });
        }
        Ok(out)
    }
}

fn doc(action: &str) -> Value {
    json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": action, "Resource": "*"}]})
}

fn identity(fake: &FakeIam, kind: IdentityKind, name: &str, changes: Vec<Change>) -> IdentityPlan {
    let s = subject(kind, name);
    IdentityPlan {
        arn: s.arn,
        account: ACCOUNT.into(),
        kind,
        name: name.into(),
        reason: PlanReason::OverProvisioned,
        last_activity: None,
        granted_before: 10,
        granted_after: 2,
        used: 2,
        pci_before: 80,
        pci_after: 0,
        before: fake.state(kind, name).clone(),
        changes,
        removed: Vec::new(),
        kept: Vec::new(),
        proposals: Vec::new(),
    }
}

fn plan(identities: Vec<IdentityPlan>) -> RemediationPlan {
    RemediationPlan {
        schema: PLAN_SCHEMA.into(),
        generated_by: "test".into(),
        as_of: EventTime(0),
        lookback_days: 90,
        window_start: EventTime(0),
        scope: PlanScope::All,
        replay: ReplayProof::default(),
        accounts: Vec::new(),
        identities,
        skipped: Vec::new(),
    }
}

fn create(arn: &str, action: &str) -> Change {
    Change::CreatePolicy {
        policy_name: arn.rsplit('/').next().unwrap().into(),
        path: "/grantwatch/".into(),
        policy_arn: arn.into(),
        document: doc(action),
        description: "what it used".into(),
    }
}

/// alice: every kind of change; deploy: a role's; the SSO role: its permission set.
fn full_plan(fake: &FakeIam) -> RemediationPlan {
    let why = || "unused".to_string();
    plan(vec![
        identity(
            fake,
            IdentityKind::User,
            "alice",
            vec![
                create(KEEP, "s3:GetObject"),
                Change::AttachPolicy { policy_arn: KEEP.into() },
                Change::DetachPolicy { policy_arn: RO.into(), why: why() },
                Change::DeleteInlinePolicy { policy_name: "s3-all".into(), document: doc("s3:*"), why: why() },
                Change::RemoveFromGroup { group: "devs".into(), why: why() },
                Change::DeactivateAccessKey { access_key_id: "AKIAALICE2".into(), why: why() },
            ],
        ),
        identity(
            fake,
            IdentityKind::Role,
            "deploy",
            vec![
                create(KEEP_ROLE, "ec2:DescribeInstances"),
                Change::AttachPolicy { policy_arn: KEEP_ROLE.into() },
                Change::DetachPolicy { policy_arn: RO.into(), why: why() },
                Change::DeleteInlinePolicy { policy_name: "ec2".into(), document: doc("ec2:*"), why: why() },
            ],
        ),
        identity(
            fake,
            IdentityKind::Role,
            "AWSReservedSSO_Dev_0123",
            vec![Change::UpdatePermissionSet {
                permission_set_name: "Dev".into(),
                inline_policy: doc("s3:GetObject"),
                detach_managed: vec![RO.into()],
                why: why(),
            }],
        ),
    ])
}

const TOTAL_CALLS: usize = 11;

struct Run {
    dir: tempfile::TempDir,
    n: u32,
}

impl Run {
    fn new() -> Run {
        Run { dir: tempfile::tempdir().unwrap(), n: 0 }
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("journal.jsonl")
    }

    fn opts(&mut self, dry_run: bool) -> RunOptions<'static> {
        self.n += 1;
        RunOptions {
            dry_run,
            account: None,
            run: format!("run{}", self.n),
            clock: &|| EventTime(1_700_000_000_000),
            crash_after_calls: None,
        }
    }

    fn apply(&mut self, fake: &mut FakeIam, plan: &RemediationPlan) -> Result<crate::RunSummary, crate::Error> {
        let opts = self.opts(false);
        let mut j = Journal::open(&self.path(), true).unwrap();
        let mut out = Vec::new();
        let r = apply(fake, plan, "plan.json", &mut j, &opts, &mut out);
        println!("{}", String::from_utf8_lossy(&out));
        r
    }

    fn rollback(&mut self, fake: &mut FakeIam) -> Result<crate::RunSummary, crate::Error> {
        let opts = self.opts(false);
        let mut j = Journal::open(&self.path(), true).unwrap();
        let mut out = Vec::new();
        let r = rollback(fake, &mut j, &opts, &mut out);
        println!("{}", String::from_utf8_lossy(&out));
        r
    }

    fn journal(&self) -> Vec<grantwatch_types::JournalEntry> {
        Journal::open(&self.path(), false).unwrap().entries().to_vec()
    }
}

fn applied_state() -> Value {
    let mut fake = FakeIam::new();
    let plan = full_plan(&fake);
    Run::new().apply(&mut fake, &plan).unwrap();
    fake.snapshot()
}

#[test]
fn apply_makes_the_plan_in_order_a_rerun_makes_no_call_and_rollback_restores_everything() {
    let mut fake = FakeIam::new();
    let original = fake.snapshot();
    let plan = full_plan(&fake);
    let mut run = Run::new();

    let s = run.apply(&mut fake, &plan).unwrap();
    assert_eq!((s.outcome, s.calls, s.already_done), (Outcome::Completed, TOTAL_CALLS as u64, 0));
    // Additions before removals, per identity, as the plan orders them.
    let ops: Vec<&str> = fake.calls.iter().map(IamCall::operation).collect();
    assert_eq!(
        ops,
        [
            "CreatePolicy",
            "AttachUserPolicy",
            "DetachUserPolicy",
            "DeleteUserPolicy",
            "RemoveUserFromGroup",
            "UpdateAccessKey",
            "CreatePolicy",
            "AttachRolePolicy",
            "DetachRolePolicy",
            "DeleteRolePolicy",
            "PutInlinePolicyToPermissionSet"
        ]
    );
    let alice = fake.state(IdentityKind::User, "alice");
    assert_eq!(alice.managed_policies, vec![KEEP.to_string()]);
    assert!(alice.inline_policies.is_empty() && alice.groups.is_empty());
    assert_eq!(alice.access_keys[0].status, "Active");
    assert_eq!(alice.access_keys[1].status, "Inactive");
    assert_eq!(fake.permission_sets["Dev"].inline_policy, Some(doc("s3:GetObject")));
    assert!(fake.permission_sets["Dev"].managed_policies.is_empty());
    assert_eq!(fake.provisioned, 1);

    // Every step journaled begun then done; the deleted document and the detached attachment are there.
    let entries = run.journal();
    let st = steps(&entries);
    assert_eq!(st.len(), TOTAL_CALLS);
    assert!(st.iter().all(|s| s.status == StepStatus::Done(StepOutcome::Done)));
    let deleted = st.iter().find(|s| matches!(s.call, IamCall::DeleteInlinePolicy { .. })).unwrap();
    assert_eq!(deleted.prior.document, Some(doc("s3:*")));
    let created = st.iter().find(|s| matches!(s.call, IamCall::CreatePolicy { .. })).unwrap();
    assert_eq!(created.version_id.as_deref(), Some("v1"));
    assert_eq!(created.prior.policy_exists, Some(false));
    let ps = st.iter().find(|s| matches!(s.call, IamCall::UpdatePermissionSet { .. })).unwrap();
    assert_eq!(ps.prior.permission_set.as_ref().unwrap().inline_policy, Some(doc("s3:*")));

    // Again: nothing to do, and the journal says so.
    let before_rerun = fake.calls.len();
    let s = run.apply(&mut fake, &plan).unwrap();
    assert_eq!((s.calls, s.already_done), (0, TOTAL_CALLS as u64));
    assert_eq!(fake.calls.len(), before_rerun);
    let last = run.journal().last().unwrap().record.clone();
    assert_eq!(
        last,
        JournalRecord::RunFinished {
            outcome: RunOutcome::Completed,
            calls: 0,
            already_done: TOTAL_CALLS as u64,
            error: None
        }
    );

    let r = run.rollback(&mut fake).unwrap();
    assert_eq!(fake.snapshot(), original, "rollback restores every identity, policy and permission set");
    assert!(r.restored[&subject(IdentityKind::User, "alice").arn].contains(&format!("policy re-attached: {RO}")));
    assert!(r.restored[&subject(IdentityKind::User, "alice").arn].contains(&"back in group: devs".to_string()));
    assert!(r.restored[KEEP].contains(&"created policy deleted".to_string()));
    assert_eq!(fake.provisioned, 2, "the permission set is provisioned again");

    // A rolled-back journal is not applied again, and a second rollback has nothing left.
    assert!(run.apply(&mut fake, &plan).unwrap_err().to_string().contains("rollback undid"));
    let calls = fake.calls.len();
    let r = run.rollback(&mut fake).unwrap();
    assert_eq!((r.calls, fake.calls.len()), (0, calls));
}

#[test]
fn a_stop_after_any_call_resumes_to_the_same_state_and_rolls_back_from_there() {
    let want = applied_state();
    for stop in 1..=TOTAL_CALLS {
        // Resume after the stop.
        let mut fake = FakeIam::new();
        let original = fake.snapshot();
        let plan = full_plan(&fake);
        let mut run = Run::new();
        fake.stop_after = Some(stop);
        let e = run.apply(&mut fake, &plan).unwrap_err();
        assert!(e.to_string().contains("outcome unknown"), "{e}");
        let pending = steps(&run.journal()).iter().filter(|s| s.status == StepStatus::Pending).count();
        assert_eq!(pending, 1, "stop {stop}: the step whose answer was lost stays begun");
        fake.stop_after = None;
        let s = run.apply(&mut fake, &plan).unwrap();
        assert_eq!(fake.snapshot(), want, "stop after call {stop}");
        // The interrupted step was found in effect (no second call), except the permission set's,
        // whose sequence is always made again; the ones after it made once each.
        let again = usize::from(stop == TOTAL_CALLS);
        assert_eq!(fake.calls.len(), TOTAL_CALLS + again, "stop {stop}");
        assert_eq!(s.already_done as usize, stop - 1 + (1 - again), "stop {stop}");
        assert!(steps(&run.journal()).iter().all(|s| matches!(s.status, StepStatus::Done(StepOutcome::Done))));
        run.rollback(&mut fake).unwrap();
        assert_eq!(fake.snapshot(), original, "stop {stop}: rollback after resume");

        // Roll back straight after the stop, without resuming.
        let mut fake = FakeIam::new();
        let mut run = Run::new();
        fake.stop_after = Some(stop);
        run.apply(&mut fake, &plan).unwrap_err();
        fake.stop_after = None;
        run.rollback(&mut fake).unwrap();
        assert_eq!(fake.snapshot(), original, "stop {stop}: rollback of the stopped run");
    }
}

#[test]
fn a_stopped_rollback_resumes() {
    let mut fake = FakeIam::new();
    let original = fake.snapshot();
    let plan = full_plan(&fake);
    let mut run = Run::new();
    run.apply(&mut fake, &plan).unwrap();
    let made = fake.calls.len();
    for stop in [2, 5, 9] {
        fake.stop_after = Some(fake.calls.len() + stop);
        if run.rollback(&mut fake).is_ok() {
            break;
        }
        fake.stop_after = None;
    }
    fake.stop_after = None;
    run.rollback(&mut fake).unwrap();
    assert_eq!(fake.snapshot(), original);
    assert!(fake.calls.len() > made);
    // Every begun undo call got its outcome (the reused step ids), and every step is undone.
    let st = steps(&run.journal());
    assert!(st.iter().filter(|s| s.undoes.is_none()).all(|s| s.undone));
}

#[test]
fn drift_refuses_before_any_call() {
    let mut fake = FakeIam::new();
    let plan = full_plan(&fake);
    fake.identities
        .get_mut(&(IdentityKind::Role, "deploy".to_string()))
        .unwrap()
        .managed_policies
        .push("arn:aws:iam::aws:policy/AdministratorAccess".into());
    fake.identities.get_mut(&(IdentityKind::User, "alice".to_string())).unwrap().inline_policies[0].document = doc("*");
    let mut run = Run::new();
    let s = run.apply(&mut fake, &plan).unwrap();
    assert_eq!(s.outcome, Outcome::Refused);
    assert!(fake.calls.is_empty());
    assert_eq!(s.drift.len(), 2, "{:?}", s.drift);
    assert!(
        s.drift.iter().any(|d| d.identity.ends_with("role/deploy") && d.difference.contains("AdministratorAccess"))
    );
    assert!(s.drift.iter().any(|d| d.identity.ends_with("user/alice") && d.difference.contains("s3-all")));
    assert!(run.journal().iter().any(|e| matches!(&e.record, JournalRecord::Refused { drift } if drift.len() == 2)));

    // A policy to create that exists with another document is drift too.
    let mut fake = FakeIam::new();
    let plan = full_plan(&fake);
    fake.policies.insert(KEEP.into(), FakePolicy { document: doc("*"), versions: vec![("v1".into(), true)] });
    let s = Run::new().apply(&mut fake, &plan).unwrap();
    assert_eq!(s.outcome, Outcome::Refused);
    assert!(s.drift[0].difference.contains("another document"));
    assert!(fake.calls.is_empty());
}

#[test]
fn a_rerun_compares_against_the_state_the_journal_left() {
    let mut fake = FakeIam::new();
    let plan = full_plan(&fake);
    let mut run = Run::new();
    fake.stop_after = Some(3);
    run.apply(&mut fake, &plan).unwrap_err();
    fake.stop_after = None;
    // Someone re-attaches what the journal detached: the re-run refuses, naming it.
    fake.identities.get_mut(&(IdentityKind::User, "alice".to_string())).unwrap().managed_policies.push(RO.into());
    fake.identities.get_mut(&(IdentityKind::User, "alice".to_string())).unwrap().managed_policies.retain(|p| p != KEEP);
    let s = run.apply(&mut fake, &plan).unwrap();
    assert_eq!(s.outcome, Outcome::Refused);
    assert!(s.drift.iter().any(|d| d.difference.contains(KEEP) && d.difference.contains("journal")), "{:?}", s.drift);
}

#[test]
fn a_policy_that_exists_with_the_plans_document_is_used_and_left_by_rollback() {
    let mut fake = FakeIam::new();
    let plan = full_plan(&fake);
    fake.policies
        .insert(KEEP.into(), FakePolicy { document: doc("s3:GetObject"), versions: vec![("v3".into(), true)] });
    let mut run = Run::new();
    let s = run.apply(&mut fake, &plan).unwrap();
    assert_eq!(s.already_done, 1);
    assert!(!fake.calls.iter().any(|c| matches!(c, IamCall::CreatePolicy { policy_arn, .. } if policy_arn == KEEP)));
    run.rollback(&mut fake).unwrap();
    assert!(fake.policies.contains_key(KEEP), "not this journal's policy: kept");
    assert!(!fake.policies.contains_key(KEEP_ROLE), "this journal's policy: deleted");
}

#[test]
fn created_policies_lose_their_versions_and_attachments_before_deletion() {
    let mut fake = FakeIam::new();
    let plan = full_plan(&fake);
    let mut run = Run::new();
    run.apply(&mut fake, &plan).unwrap();
    // Someone added a version and attached the policy elsewhere.
    fake.policies.get_mut(KEEP).unwrap().versions = vec![("v1".into(), false), ("v2".into(), true)];
    fake.identities.get_mut(&(IdentityKind::Role, "deploy".to_string())).unwrap().managed_policies.push(KEEP.into());
    run.rollback(&mut fake).unwrap();
    assert!(!fake.policies.contains_key(KEEP));
    let ops: Vec<&str> = fake.calls.iter().map(IamCall::operation).collect();
    // alice's own attachment first (the undo of her step), then the policy's: what else holds it, its
    // other versions, itself.
    assert_eq!(ops[ops.len() - 4..], ["DetachUserPolicy", "DetachRolePolicy", "DeletePolicyVersion", "DeletePolicy"]);
}

#[test]
fn only_the_callers_account_is_touched_and_the_rest_is_counted() {
    let mut fake = FakeIam::new();
    let mut plan = full_plan(&fake);
    let mut other = plan.identities[1].clone();
    other.account = "444455556666".into();
    other.arn = "arn:aws:iam::444455556666:role/deploy".into();
    plan.identities.push(other);
    let mut run = Run::new();
    let s = run.apply(&mut fake, &plan).unwrap();
    assert_eq!(s.other_accounts.get("444455556666"), Some(&1));
    assert_eq!(fake.calls.len(), TOTAL_CALLS);

    let mut opts = run.opts(false);
    opts.account = Some("444455556666".into());
    let mut j = Journal::open(&run.path(), true).unwrap();
    let e = apply(&mut fake, &plan, "p", &mut j, &opts, &mut Vec::new()).unwrap_err();
    assert!(e.to_string().contains("--account 444455556666"), "{e}");
}

#[test]
fn plans_that_widen_after_narrowing_or_of_another_journal_are_refused() {
    let mut fake = FakeIam::new();
    let mut plan = full_plan(&fake);
    plan.identities[0].changes.swap(1, 2);
    let e = Run::new().apply(&mut fake, &plan).unwrap_err();
    assert!(e.to_string().contains("adds access after a removal"), "{e}");
    let mut plan = full_plan(&fake);
    plan.identities[0].changes.swap(0, 1);
    let e = Run::new().apply(&mut fake, &plan).unwrap_err();
    assert!(e.to_string().contains("before the plan creates it"), "{e}");
    assert!(fake.calls.is_empty());

    let plan = full_plan(&fake);
    let mut run = Run::new();
    fake.stop_after = Some(2);
    run.apply(&mut fake, &plan).unwrap_err();
    fake.stop_after = None;
    let mut other = full_plan(&FakeIam::new());
    other.identities[0].changes[1] = Change::AttachPolicy { policy_arn: RO.into() };
    other.identities[0].changes.remove(0);
    let e = run.apply(&mut fake, &other).unwrap_err();
    assert!(e.to_string().contains("another change than the plan's"), "{e}");
}

#[test]
fn a_dry_run_reads_but_neither_calls_nor_writes() {
    let mut fake = FakeIam::new();
    let plan = full_plan(&fake);
    let mut run = Run::new();
    let opts = run.opts(true);
    let mut j = Journal::open(&run.path(), false).unwrap();
    let mut out = Vec::new();
    let s = apply(&mut fake, &plan, "plan.json", &mut j, &opts, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!((s.outcome, s.calls), (Outcome::DryRun, TOTAL_CALLS as u64));
    assert!(fake.calls.is_empty());
    assert!(!run.path().exists());
    assert_eq!(text.matches("would call: 111122223333 ").count(), TOTAL_CALLS, "{text}");
    assert!(text.contains(
        "would call: 111122223333 DetachUserPolicy user/alice policy=arn:aws:iam::aws:policy/ReadOnlyAccess"
    ));
    assert!(!text.contains("s3:GetObject"), "documents are summarized: {text}");
}

#[test]
fn attach_and_detach_are_journaled_and_rolled_back() {
    let mut fake = FakeIam::new();
    let mut run = Run::new();
    let deploy = subject(IdentityKind::Role, "deploy").arn;
    let admin = "arn:aws:iam::aws:policy/AdministratorAccess";
    fake.policies.insert(admin.into(), FakePolicy { document: doc("*"), versions: vec![("v1".into(), true)] });
    let original_with_admin = fake.snapshot();
    for (policy, on) in [(admin, true), (RO, false), (admin, true)] {
        let opts = run.opts(false);
        let mut j = Journal::open(&run.path(), true).unwrap();
        attach(&mut fake, &mut j, &deploy, policy, on, &opts, &mut Vec::new()).unwrap();
    }
    assert_eq!(fake.calls.len(), 2, "the second attach finds it attached: no call");
    assert_eq!(fake.state(IdentityKind::Role, "deploy").managed_policies, vec![admin.to_string()]);
    let st = steps(&run.journal());
    assert_eq!(st[2].status, StepStatus::Done(StepOutcome::AlreadyInState));
    run.rollback(&mut fake).unwrap();
    assert_eq!(fake.snapshot(), original_with_admin);

    let opts = run.opts(false);
    let mut j = Journal::open(&run.path(), true).unwrap();
    let e =
        attach(&mut fake, &mut j, "arn:aws:iam::999999999999:role/x", RO, true, &opts, &mut Vec::new()).unwrap_err();
    assert!(e.to_string().contains("account 999999999999"), "{e}");
}

#[test]
fn a_dry_run_without_credentials_lists_every_call_unchecked_and_a_real_run_stops() {
    let mut fake = FakeIam::new();
    fake.no_credentials = true;
    let mut plan = full_plan(&fake);
    let mut other = plan.identities[1].clone();
    other.account = "444455556666".into();
    other.arn = "arn:aws:iam::444455556666:role/deploy".into();
    plan.identities.push(other);
    let mut run = Run::new();
    let opts = run.opts(true);
    let mut j = Journal::open(&run.path(), false).unwrap();
    let mut out = Vec::new();
    let s = apply(&mut fake, &plan, "plan.json", &mut j, &opts, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!((s.outcome, s.account, s.calls), (Outcome::DryRun, None, TOTAL_CALLS as u64 + 4));
    assert!(text.contains("not checked against IAM"), "{text}");
    assert!(text.contains("would call: 444455556666 DetachRolePolicy role/deploy"), "{text}");
    assert!(run.apply(&mut fake, &plan).unwrap_err().to_string().contains("GetCallerIdentity"));
    assert!(fake.calls.is_empty());
}
