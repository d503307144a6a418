//! Requests, their transition logs and the expiry index over a [`StateStore`], and the revocation
//! scheduler.
//!
//! Three key spaces ([`keys::ACCESS_REQUEST`], [`keys::ACCESS_LOG`], [`keys::ACCESS_DUE`]):
//! * the request's [`AccessRecord`], by id;
//! * its log, one [`AccessTransition`] per key `(id, seq)`, only ever appended;
//! * the expiry index, one empty value per active grant at `(due time, id)`: a scan from the start
//!   up to "now" is the list of grants to revoke, in due order.
//!
//! Every operation reads the record, decides through [`next`], and writes the new record, its log
//! entries and the index change in one [`WriteBatch`]. The index entry is derived from the record by
//! one function ([`due_of`]) on both sides of every write, so the two cannot disagree: a grant is in
//! the index exactly while it is active, at its `revoke.due_at`.
//!
//! The revocation protocol: a due grant is claimed by a worker for a lease (its due time moves to the
//! lease's end, so it is due for no one else meanwhile); the worker performs the revocation, which is
//! idempotent at AWS, and completes with the claim's ticket. A completion whose claim is no longer
//! current is refused, so a grant is recorded revoked once. A worker that dies leaves the lease to run
//! out, and the grant is due again. A failure schedules a retry with capped exponential backoff.
//!
//! The ledger holds no state of its own beyond a lock that serializes its read-modify-write steps
//! within one process: dropping it and opening another on the same store is a restart.

use std::sync::{Arc, Mutex};

use grantwatch_core::catalog::Catalog;
use grantwatch_state::{StateError, StateRead, StateStore, Table, WriteBatch, keys};
use grantwatch_types::{
    AccessAuditEvent, AccessCommand, AccessRecord, AccessRequest, AccessState, AccessTransition, Approval, EarlyEnd,
    EventTime, GrantAction, RequestedIdentity, RevokeAction, RevokeClaim, RevokeSchedule, SYSTEM_ACTOR,
};

use crate::Principal;
use crate::config::{AccessConfig, ApprovalRule, RevocationConfig};
use crate::policy::{PlanError, grant_action, revoke_action};
use crate::transition::{INITIAL, TransitionError, next};
use crate::validate::{ValidationError, approvals_required, check_reason, is_principal_name, validate};

/// Longest error text kept from a failed revocation: a record stays small whatever AWS answered.
const MAX_ERROR_CHARS: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("no access request {0:?}")]
    NotFound(String),
    #[error("access request {0:?} already exists")]
    Duplicate(String),
    #[error("you requested this access, so you may not approve it")]
    SelfApproval,
    #[error("the identity that would receive this access may not approve it")]
    IdentityApproval,
    #[error("{principal:?} is not an approver under rule {rule:?}")]
    NotAnApprover { principal: String, rule: String },
    #[error("{0:?} has already approved this request; the next approval must come from someone else")]
    AlreadyApproved(String),
    #[error("{principal:?} may not {action} this request: only its requester or an approver of rule {rule:?} may")]
    NotAllowed { principal: String, action: &'static str, rule: String },
    #[error("approval rule {0:?}, which governs this request, is no longer configured")]
    RuleGone(String),
    #[error("grant {id:?} is already being revoked early")]
    AlreadyEnding { id: String },
    #[error("grant {id:?} is not due for revocation until {due_at}")]
    NotDue { id: String, due_at: EventTime },
    #[error("grant {id:?} is being revoked by {worker:?} (lease until {until})")]
    Claimed { id: String, worker: String, until: EventTime },
    #[error(
        "the claim of {worker:?} (attempt {attempt}) on grant {id:?} is no longer current: another worker took it, or it completed"
    )]
    ClaimLost { id: String, worker: String, attempt: u32 },
    #[error("a revocation worker must be named (1 to 256 characters, not \"system\")")]
    BadWorker,
    #[error("time out of range: {0}")]
    TimeOverflow(&'static str),
    #[error("could not encode {what}: {reason}")]
    Encode { what: &'static str, reason: String },
    #[error(transparent)]
    State(#[from] StateError),
}

/// A request after an operation, and the transitions the operation recorded (what the service
/// publishes on its audit topic).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub record: AccessRecord,
    pub transitions: Vec<AccessTransition>,
}

/// A grant whose revocation is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantToRevoke {
    pub request_id: String,
    pub due_at: EventTime,
    pub expires_at: EventTime,
    /// Attempts so far, failures among them, and whether a person must look.
    pub attempts: u32,
    pub failures: u32,
    pub alert: bool,
    pub early_end: Option<EarlyEnd>,
    pub action: RevokeAction,
}

/// A worker's claim on a grant: what to revoke, until when the claim holds, and the fencing token
/// (`worker`, `attempt`) its completion must present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokeTicket {
    pub request_id: String,
    pub worker: String,
    pub attempt: u32,
    pub lease_until: EventTime,
    pub action: RevokeAction,
}

/// What a revocation attempt reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeOutcome {
    /// The grant is gone (including "it was already gone").
    Revoked,
    /// The call failed; it is retried.
    Failed { error: String },
}

/// The ledger of access requests over one store.
#[derive(Debug)]
pub struct AccessLedger<S> {
    store: S,
    config: AccessConfig,
    catalog: Arc<Catalog>,
    /// Serializes read-modify-write steps: the store has atomic batches but no compare-and-swap, so two
    /// threads of one process must not both read a record before either writes it.
    writer: Mutex<()>,
    /// The next audit sequence number, read from the store on the first commit (always taken with
    /// `writer` held).
    audit_next: Mutex<Option<u64>>,
}

impl<S: StateStore> AccessLedger<S> {
    /// Opens the ledger over `store`. Nothing is cached: everything is read from the store, so a ledger
    /// opened after a crash continues where the last committed batch left off.
    pub fn open(store: S, config: AccessConfig, catalog: Arc<Catalog>) -> Self {
        Self { store, config, catalog, writer: Mutex::new(()), audit_next: Mutex::new(None) }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn config(&self) -> &AccessConfig {
        &self.config
    }

    /// The request `id`, if it exists.
    pub fn get(&self, id: &str) -> Result<Option<AccessRecord>, AccessError> {
        read_record(&self.store, id)
    }

    /// The transition log of `id`, oldest first.
    pub fn log(&self, id: &str) -> Result<Vec<AccessTransition>, AccessError> {
        read_log(&self.store, id)
    }

    /// Validates and stores a new request (pending), and approves it at once when it is low risk and
    /// its rule auto-approves low-risk requests.
    pub fn submit(&self, request: AccessRequest, now: EventTime) -> Result<Applied, AccessError> {
        let _w = self.lock()?;
        let (rule, risk) = validate(&self.config, &self.catalog, &request)?;
        if read_record(&self.store, &request.id)?.is_some() {
            return Err(AccessError::Duplicate(request.id));
        }
        let auto = rule.auto_approve_low_risk && risk == grantwatch_types::RiskLevel::Low;
        let auto_reason = format!("auto-approved: low risk (read-only) under rule {:?}", rule.name);
        let mut record = AccessRecord {
            state: INITIAL,
            risk,
            rule: rule.name.clone(),
            approvals_required: approvals_required(risk),
            approvals: Vec::new(),
            submitted_at: now,
            activated_at: None,
            revoke: None,
            ended_at: None,
            version: 1,
            request,
        };
        let mut log = vec![AccessTransition {
            request_id: record.request.id.clone(),
            seq: 0,
            at: now,
            by: record.request.requester.clone(),
            command: AccessCommand::Submit,
            from: None,
            state: INITIAL,
            reason: record.request.justification.clone(),
        }];
        if auto {
            step(&mut record, AccessCommand::Approve, SYSTEM_ACTOR, &auto_reason, now, &mut log)?;
        }
        self.commit(None, record, log)
    }

    /// One approval. The quorum is [`AccessRecord::approvals_required`] distinct approvers of the
    /// request's rule, never its requester nor the identity that receives the access.
    pub fn approve(
        &self,
        id: &str,
        approver: &Principal,
        now: EventTime,
        reason: &str,
    ) -> Result<Applied, AccessError> {
        let _w = self.lock()?;
        let before = self.load(id)?;
        // Refuse a request that is not pending first: its state is the more useful answer.
        next(before.state, AccessCommand::Approve)?;
        let rule = self.rule_of(&before)?;
        check_approver(&before, rule, approver)?;
        let mut record = before.clone();
        record.approvals.push(Approval { approver: approver.name.clone(), at: now });
        let command = if record.approvals.len() >= record.approvals_required as usize {
            AccessCommand::Approve
        } else {
            AccessCommand::AddApproval
        };
        let reason = if reason.trim().is_empty() { "approved" } else { reason };
        let mut log = Vec::new();
        step(&mut record, command, &approver.name, reason, now, &mut log)?;
        self.commit(Some(&before), record, log)
    }

    /// Denies a pending request; `by` must be an approver of its rule.
    pub fn deny(&self, id: &str, by: &Principal, now: EventTime, reason: &str) -> Result<Applied, AccessError> {
        let _w = self.lock()?;
        check_reason(&self.config, reason)?;
        let before = self.load(id)?;
        next(before.state, AccessCommand::Deny)?;
        let rule = self.rule_of(&before)?;
        if !rule.allows_approver(by) {
            return Err(AccessError::NotAnApprover { principal: by.name.clone(), rule: rule.name.clone() });
        }
        self.simple(before, AccessCommand::Deny, &by.name, reason, now)
    }

    /// Withdraws a request that is not yet active; `by` is its requester or an approver of its rule.
    pub fn cancel(&self, id: &str, by: &Principal, now: EventTime, reason: &str) -> Result<Applied, AccessError> {
        let _w = self.lock()?;
        check_reason(&self.config, reason)?;
        let before = self.load(id)?;
        next(before.state, AccessCommand::Cancel)?;
        self.check_requester_or_approver(&before, by, "cancel")?;
        self.simple(before, AccessCommand::Cancel, &by.name, reason, now)
    }

    /// Marks an approved request active and returns what to install. Call it *before* installing: from
    /// this write on the grant is in the expiry index, so a crash between here and the installation
    /// leaves a grant the scheduler will revoke (revocation is idempotent), never an installed grant
    /// nobody will revoke. The grant ends `duration_secs` after `now`.
    pub fn activate(&self, id: &str, now: EventTime) -> Result<(Applied, GrantAction), AccessError> {
        let _w = self.lock()?;
        let before = self.load(id)?;
        next(before.state, AccessCommand::Activate)?;
        let expires_at = add_secs(now, before.request.duration_secs, "grant expiry")?;
        let action = grant_action(&before.request, expires_at)?;
        // The revocation is derived from the request alone; checking it now means a grant that is
        // installed can always be revoked.
        revoke_action(&before.request)?;
        let mut record = before.clone();
        record.activated_at = Some(now);
        record.revoke = Some(RevokeSchedule {
            expires_at,
            due_at: expires_at,
            attempts: 0,
            failures: 0,
            claim: None,
            last_error: None,
            alert: false,
            early_end: None,
        });
        let mut log = Vec::new();
        let reason = format!("installing; expires at {expires_at}");
        step(&mut record, AccessCommand::Activate, SYSTEM_ACTOR, &reason, now, &mut log)?;
        Ok((self.commit(Some(&before), record, log)?, action))
    }

    /// The installation of an active grant failed (perhaps half done): revoke it now, then end it
    /// `failed`.
    pub fn install_failed(&self, id: &str, now: EventTime, error: &str) -> Result<Applied, AccessError> {
        let _w = self.lock()?;
        let before = self.load(id)?;
        next(before.state, AccessCommand::RequestRevoke)?;
        let error = bounded(error);
        let mut record = before.clone();
        end_early(&mut record, EarlyEnd::InstallFailed { error: error.clone() }, now);
        let mut log = Vec::new();
        let reason = format!("installation failed, revoking what may have been installed: {error}");
        step(&mut record, AccessCommand::RequestRevoke, SYSTEM_ACTOR, &reason, now, &mut log)?;
        self.commit(Some(&before), record, log)
    }

    /// An approved request that will not be installed (its identity is gone, the service refused it
    /// before any call): it ends `failed` with nothing to revoke.
    pub fn fail_before_install(&self, id: &str, now: EventTime, error: &str) -> Result<Applied, AccessError> {
        let _w = self.lock()?;
        let before = self.load(id)?;
        if before.state != AccessState::Approved {
            // `fail` is also legal on an active grant, but only through `abandon` or a completion:
            // failing an active grant here would drop it from the index while it may be installed.
            return Err(TransitionError { from: before.state, command: AccessCommand::Fail }.into());
        }
        let mut record = before.clone();
        record.ended_at = Some(now);
        self.simple_on(before, record, AccessCommand::Fail, SYSTEM_ACTOR, &bounded(error), now)
    }

    /// Takes an active grant back before its deadline; `by` is its requester or an approver of its rule.
    /// The grant becomes due now (unless a worker holds it, which will finish the job), and ends
    /// `revoked` once the revocation completes.
    pub fn request_revoke(
        &self,
        id: &str,
        by: &Principal,
        now: EventTime,
        reason: &str,
    ) -> Result<Applied, AccessError> {
        let _w = self.lock()?;
        check_reason(&self.config, reason)?;
        let before = self.load(id)?;
        next(before.state, AccessCommand::RequestRevoke)?;
        self.check_requester_or_approver(&before, by, "revoke")?;
        if before.revoke.as_ref().is_some_and(|r| r.early_end.is_some()) {
            return Err(AccessError::AlreadyEnding { id: id.to_string() });
        }
        let mut record = before.clone();
        end_early(&mut record, EarlyEnd::Revoked { by: by.name.clone(), reason: reason.to_string() }, now);
        let mut log = Vec::new();
        step(&mut record, AccessCommand::RequestRevoke, &by.name, reason, now, &mut log)?;
        self.commit(Some(&before), record, log)
    }

    /// An operator gives up on revoking an active grant (it was removed by hand, or its identity is
    /// gone): it ends `failed` and leaves the index. `by` must be an approver of its rule.
    pub fn abandon(&self, id: &str, by: &Principal, now: EventTime, reason: &str) -> Result<Applied, AccessError> {
        let _w = self.lock()?;
        check_reason(&self.config, reason)?;
        let before = self.load(id)?;
        if before.state != AccessState::Active {
            return Err(TransitionError { from: before.state, command: AccessCommand::Fail }.into());
        }
        let rule = self.rule_of(&before)?;
        if !rule.allows_approver(by) {
            return Err(AccessError::NotAnApprover { principal: by.name.clone(), rule: rule.name.clone() });
        }
        let mut record = before.clone();
        record.ended_at = Some(now);
        if let Some(r) = record.revoke.as_mut() {
            r.claim = None;
        }
        self.simple_on(before, record, AccessCommand::Fail, &by.name, reason, now)
    }

    /// The grants due for revocation at `now`, in due order.
    pub fn due(&self, now: EventTime) -> Result<Vec<GrantToRevoke>, AccessError> {
        due(&self.store, now)
    }

    /// [`due`], at most `limit` of them.
    pub fn due_limited(&self, now: EventTime, limit: usize) -> Result<Vec<GrantToRevoke>, AccessError> {
        due_limited(&self.store, now, limit)
    }

    /// Call once when a service opens the store, before its workers start: every claim still
    /// recorded belongs to a process that is gone (one process owns one store), so its attempt was
    /// interrupted. Each such grant is due now again, its log saying why; failures are not counted.
    /// Returns the grants released.
    pub fn release_interrupted_claims(&self, now: EventTime) -> Result<Vec<String>, AccessError> {
        let _w = self.lock()?;
        let mut claimed = Vec::new();
        let mut bad: Option<Vec<u8>> = None;
        self.store.scan_prefix(Table::Meta, keys::ACCESS_DUE.prefix, &mut |k, _| {
            match decode_due_key(k) {
                Some((_, id)) => claimed.push(id.to_string()),
                None => bad = Some(k.to_vec()),
            }
            bad.is_none()
        })?;
        if let Some(k) = bad {
            return Err(keys::ACCESS_DUE.corrupt(&k, "expected a sortable time and a UTF-8 request id").into());
        }
        let mut released = Vec::new();
        for id in claimed {
            let before = self.load(&id)?;
            let Some(claim) = before.revoke.as_ref().and_then(|r| r.claim.clone()) else { continue };
            let mut record = before.clone();
            let r = schedule_mut(&mut record)?;
            r.claim = None;
            r.due_at = now;
            let reason = format!(
                "revocation attempt {} by {} was interrupted (the service stopped); due again now",
                claim.attempt, claim.worker
            );
            let mut log = Vec::new();
            step(&mut record, AccessCommand::RevokeFailed, SYSTEM_ACTOR, &reason, now, &mut log)?;
            self.commit(Some(&before), record, log)?;
            released.push(id);
        }
        Ok(released)
    }

    /// Claims a due grant for `worker` until `now` + the lease. Refused if it is not due (or another
    /// worker's lease still runs) or not active.
    pub fn claim(&self, id: &str, now: EventTime, worker: &str) -> Result<RevokeTicket, AccessError> {
        if !is_principal_name(worker) {
            return Err(AccessError::BadWorker);
        }
        let _w = self.lock()?;
        let before = self.load(id)?;
        next(before.state, AccessCommand::Claim)?;
        let schedule = schedule_of(&before)?;
        if schedule.due_at > now {
            return Err(match &schedule.claim {
                Some(c) => AccessError::Claimed { id: id.to_string(), worker: c.worker.clone(), until: c.until },
                None => AccessError::NotDue { id: id.to_string(), due_at: schedule.due_at },
            });
        }
        let lease_until = add_secs(now, self.config.revocation.lease_secs, "lease end")?;
        let action = revoke_action(&before.request)?;
        let mut record = before.clone();
        let attempt;
        {
            let r = schedule_mut(&mut record)?;
            r.attempts = r.attempts.saturating_add(1);
            attempt = r.attempts;
            r.claim = Some(RevokeClaim { worker: worker.to_string(), attempt, until: lease_until });
            r.due_at = lease_until;
        }
        let mut log = Vec::new();
        let reason = format!("revocation attempt {attempt}, lease until {lease_until}");
        step(&mut record, AccessCommand::Claim, worker, &reason, now, &mut log)?;
        self.commit(Some(&before), record, log)?;
        Ok(RevokeTicket { request_id: id.to_string(), worker: worker.to_string(), attempt, lease_until, action })
    }

    /// Records the outcome of the attempt `ticket` names. Revoked: the grant ends `expired` (or
    /// `revoked` if taken back early, `failed` if its installation had failed) and leaves the index.
    /// Failed: it is due again after the backoff, and carries an alert after the configured number of
    /// failures. A ticket whose claim is no longer current is refused ([`AccessError::ClaimLost`]).
    pub fn complete(
        &self,
        ticket: &RevokeTicket,
        outcome: RevokeOutcome,
        now: EventTime,
    ) -> Result<Applied, AccessError> {
        let _w = self.lock()?;
        let id = ticket.request_id.as_str();
        let before = self.load(id)?;
        let current = before.state == AccessState::Active
            && before
                .revoke
                .as_ref()
                .and_then(|r| r.claim.as_ref())
                .is_some_and(|c| c.worker == ticket.worker && c.attempt == ticket.attempt);
        if !current {
            return Err(AccessError::ClaimLost {
                id: id.to_string(),
                worker: ticket.worker.clone(),
                attempt: ticket.attempt,
            });
        }
        let mut record = before.clone();
        let mut log = Vec::new();
        match outcome {
            RevokeOutcome::Revoked => {
                let r = schedule_mut(&mut record)?;
                r.claim = None;
                let (command, reason) = match &r.early_end {
                    None => (AccessCommand::Expire, format!("revoked; it expired at {}", r.expires_at)),
                    Some(EarlyEnd::Revoked { by, reason }) => {
                        (AccessCommand::Revoke, format!("revoked early at the request of {by}: {reason}"))
                    }
                    Some(EarlyEnd::InstallFailed { error }) => {
                        (AccessCommand::Fail, format!("cleaned up after a failed installation: {error}"))
                    }
                };
                record.ended_at = Some(now);
                step(&mut record, command, &ticket.worker, &reason, now, &mut log)?;
            }
            RevokeOutcome::Failed { error } => {
                let error = bounded(&error);
                let policy = &self.config.revocation;
                let r = schedule_mut(&mut record)?;
                r.claim = None;
                r.failures = r.failures.saturating_add(1);
                let retry_at = now
                    .0
                    .checked_add(retry_delay_ms(policy, r.failures))
                    .map(EventTime)
                    .ok_or(AccessError::TimeOverflow("retry time"))?;
                r.due_at = retry_at;
                r.alert = r.failures >= policy.alert_after_failures;
                r.last_error = Some(error.clone());
                let reason = format!("revocation failed (failure {}), retry at {retry_at}: {error}", r.failures);
                step(&mut record, AccessCommand::RevokeFailed, &ticket.worker, &reason, now, &mut log)?;
            }
        }
        self.commit(Some(&before), record, log)
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, ()>, AccessError> {
        self.writer.lock().map_err(|_| StateError::Engine("access ledger lock poisoned".into()).into())
    }

    fn load(&self, id: &str) -> Result<AccessRecord, AccessError> {
        read_record(&self.store, id)?.ok_or_else(|| AccessError::NotFound(id.to_string()))
    }

    fn rule_of(&self, record: &AccessRecord) -> Result<&ApprovalRule, AccessError> {
        self.config.rule_named(&record.rule).ok_or_else(|| AccessError::RuleGone(record.rule.clone()))
    }

    fn check_requester_or_approver(
        &self,
        record: &AccessRecord,
        by: &Principal,
        action: &'static str,
    ) -> Result<(), AccessError> {
        let rule = self.rule_of(record)?;
        if by.name == record.request.requester || rule.allows_approver(by) {
            return Ok(());
        }
        Err(AccessError::NotAllowed { principal: by.name.clone(), action, rule: rule.name.clone() })
    }

    fn simple(
        &self,
        before: AccessRecord,
        command: AccessCommand,
        by: &str,
        reason: &str,
        now: EventTime,
    ) -> Result<Applied, AccessError> {
        let mut record = before.clone();
        record.ended_at = Some(now);
        self.simple_on(before, record, command, by, reason, now)
    }

    fn simple_on(
        &self,
        before: AccessRecord,
        mut record: AccessRecord,
        command: AccessCommand,
        by: &str,
        reason: &str,
        now: EventTime,
    ) -> Result<Applied, AccessError> {
        let mut log = Vec::new();
        step(&mut record, command, by, reason, now, &mut log)?;
        self.commit(Some(&before), record, log)
    }

    /// Writes the record, its new log entries, their audit events (the outbox) and the index change
    /// in one batch.
    fn commit(
        &self,
        before: Option<&AccessRecord>,
        record: AccessRecord,
        transitions: Vec<AccessTransition>,
    ) -> Result<Applied, AccessError> {
        let id = record.request.id.as_str();
        let mut audit_next = self
            .audit_next
            .lock()
            .map_err(|_| StateError::Engine("access ledger audit counter lock poisoned".into()))?;
        let mut seq = match *audit_next {
            Some(n) => n,
            None => read_audit_next(&self.store)?,
        };
        let mut batch = WriteBatch::with_capacity(2 * transitions.len() + 4);
        batch.put(Table::Meta, keys::ACCESS_REQUEST.key_str(id), encode("access record", &record)?);
        for t in &transitions {
            batch.put(Table::Meta, log_key(id, t.seq), encode("access transition", t)?);
            let event = AccessAuditEvent::new(seq, &record, t.clone());
            batch.put(Table::Meta, keys::ACCESS_OUTBOX.key(&seq.to_be_bytes()), encode("access audit event", &event)?);
            seq += 1;
        }
        batch.put(Table::Meta, keys::ACCESS_AUDIT_NEXT.prefix.to_vec(), seq.to_be_bytes().to_vec());
        let (old_due, new_due) = (before.and_then(due_of), due_of(&record));
        if old_due != new_due {
            if let Some(t) = old_due {
                batch.delete(Table::Meta, due_key(t, id));
            }
            if let Some(t) = new_due {
                batch.put(Table::Meta, due_key(t, id), Vec::new());
            }
        }
        self.store.write(batch)?;
        *audit_next = Some(seq);
        Ok(Applied { record, transitions })
    }

    /// Up to `limit` audit events not yet acknowledged, oldest first: what the publisher writes to the
    /// audit log and the topic.
    pub fn outbox(&self, limit: usize) -> Result<Vec<AccessAuditEvent>, AccessError> {
        let mut out = Vec::new();
        let mut bad = None;
        self.store.scan_prefix(Table::Meta, keys::ACCESS_OUTBOX.prefix, &mut |k, v| {
            match serde_json::from_slice(v) {
                Ok(e) => out.push(e),
                Err(e) => {
                    bad = Some(keys::ACCESS_OUTBOX.corrupt(k, e.to_string()));
                    return false;
                }
            }
            out.len() < limit
        })?;
        match bad {
            Some(e) => Err(e.into()),
            None => Ok(out),
        }
    }

    /// Forgets the audit events up to `through` (inclusive): they are in the audit log and the topic.
    pub fn ack_outbox(&self, through: u64) -> Result<(), AccessError> {
        let mut batch = WriteBatch::default();
        self.store.scan_prefix(Table::Meta, keys::ACCESS_OUTBOX.prefix, &mut |k, _| {
            let seq = keys::ACCESS_OUTBOX.suffix_of(k).and_then(|s| s.try_into().ok()).map(u64::from_be_bytes);
            match seq {
                Some(s) if s <= through => {
                    batch.delete(Table::Meta, k.to_vec());
                    true
                }
                _ => false,
            }
        })?;
        if !batch.is_empty() {
            self.store.write(batch)?;
        }
        Ok(())
    }

    /// The earliest due time in the expiry index: when the scheduler next has work.
    pub fn next_due(&self) -> Result<Option<EventTime>, AccessError> {
        let mut first = None;
        self.store.scan_prefix(Table::Meta, keys::ACCESS_DUE.prefix, &mut |k, _| {
            first = decode_due_key(k).map(|(t, _)| t);
            false
        })?;
        Ok(first)
    }
}

fn read_audit_next(store: &(impl StateRead + ?Sized)) -> Result<u64, AccessError> {
    let key = keys::ACCESS_AUDIT_NEXT.prefix;
    match store.get(Table::Meta, key)? {
        Some(v) => Ok(keys::ACCESS_AUDIT_NEXT.decode_u64(key, &v)?),
        None => Ok(0),
    }
}

/// The approval checks beyond the state: an approver of the rule, not the requester, not the
/// identity itself, not twice.
fn check_approver(record: &AccessRecord, rule: &ApprovalRule, approver: &Principal) -> Result<(), AccessError> {
    // Case-insensitive: principal names that differ only in case must not let a requester approve
    // their own request.
    if approver.name.eq_ignore_ascii_case(&record.request.requester) {
        return Err(AccessError::SelfApproval);
    }
    let identity = match &record.request.identity {
        RequestedIdentity::IamUser { arn } | RequestedIdentity::IamRole { arn } => arn,
        RequestedIdentity::IdentityCenterUser { user_id } => user_id,
    };
    if approver.name.eq_ignore_ascii_case(identity) {
        return Err(AccessError::IdentityApproval);
    }
    if !rule.allows_approver(approver) {
        return Err(AccessError::NotAnApprover { principal: approver.name.clone(), rule: rule.name.clone() });
    }
    if record.approvals.iter().any(|a| a.approver.eq_ignore_ascii_case(&approver.name)) {
        return Err(AccessError::AlreadyApproved(approver.name.clone()));
    }
    Ok(())
}

/// Applies `command` to `record` through the transition table and appends its log entry.
fn step(
    record: &mut AccessRecord,
    command: AccessCommand,
    by: &str,
    reason: &str,
    now: EventTime,
    log: &mut Vec<AccessTransition>,
) -> Result<(), AccessError> {
    let to = next(record.state, command)?;
    log.push(AccessTransition {
        request_id: record.request.id.clone(),
        seq: record.version,
        at: now,
        by: by.to_string(),
        command,
        from: Some(record.state),
        state: to,
        reason: reason.to_string(),
    });
    record.state = to;
    record.version += 1;
    Ok(())
}

/// Marks an active grant to be revoked now (a worker holding it finishes the job instead).
fn end_early(record: &mut AccessRecord, end: EarlyEnd, now: EventTime) {
    if let Some(r) = record.revoke.as_mut() {
        r.early_end = Some(end);
        if r.claim.is_none() {
            r.due_at = r.due_at.min(now);
        }
    }
}

/// Where a record belongs in the expiry index: at its due time while active, nowhere otherwise.
pub fn due_of(record: &AccessRecord) -> Option<EventTime> {
    (record.state == AccessState::Active).then_some(record.revoke.as_ref().map(|r| r.due_at)).flatten()
}

/// The wait before the next attempt after `failures` failures: base × 2^(failures − 1), capped.
pub fn retry_delay_ms(policy: &RevocationConfig, failures: u32) -> i64 {
    let factor = 1u64.checked_shl(failures.saturating_sub(1)).unwrap_or(u64::MAX);
    let secs = policy.retry_base_secs.saturating_mul(factor).min(policy.retry_cap_secs);
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

fn add_secs(t: EventTime, secs: u64, what: &'static str) -> Result<EventTime, AccessError> {
    i64::try_from(secs)
        .ok()
        .and_then(|s| s.checked_mul(1000))
        .and_then(|ms| t.0.checked_add(ms))
        .map(EventTime)
        .ok_or(AccessError::TimeOverflow(what))
}

fn bounded(text: &str) -> String {
    match text.char_indices().nth(MAX_ERROR_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

fn schedule_of(record: &AccessRecord) -> Result<&RevokeSchedule, AccessError> {
    record.revoke.as_ref().ok_or_else(|| missing_schedule(&record.request.id))
}

fn schedule_mut(record: &mut AccessRecord) -> Result<&mut RevokeSchedule, AccessError> {
    let id = record.request.id.clone();
    record.revoke.as_mut().ok_or_else(|| missing_schedule(&id))
}

/// An active record always carries its schedule (activation writes both); one without is corrupt.
fn missing_schedule(id: &str) -> AccessError {
    keys::ACCESS_REQUEST.corrupt(&keys::ACCESS_REQUEST.key_str(id), "active grant without a revocation schedule").into()
}

fn encode<T: serde::Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, AccessError> {
    serde_json::to_vec(value).map_err(|e| AccessError::Encode { what, reason: e.to_string() })
}

fn log_prefix(id: &str) -> Vec<u8> {
    let mut k = keys::ACCESS_LOG.key_str(id);
    // Ids hold no `\0`, so this terminator keeps one id's log apart from a longer id's.
    k.push(0);
    k
}

fn log_key(id: &str, seq: u64) -> Vec<u8> {
    let mut k = log_prefix(id);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Big-endian with the sign bit flipped, so keys sort as times (negative ones first).
fn sortable_time(t: EventTime) -> [u8; 8] {
    ((t.0 as u64) ^ (1 << 63)).to_be_bytes()
}

fn due_key(t: EventTime, id: &str) -> Vec<u8> {
    let mut k = keys::ACCESS_DUE.key(&sortable_time(t));
    k.extend_from_slice(id.as_bytes());
    k
}

fn decode_due_key(key: &[u8]) -> Option<(EventTime, &str)> {
    let rest = keys::ACCESS_DUE.suffix_of(key)?;
    let (time, id) = rest.split_at_checked(8)?;
    let bits = u64::from_be_bytes(time.try_into().ok()?) ^ (1 << 63);
    Some((EventTime(bits as i64), std::str::from_utf8(id).ok()?))
}

fn read_record(store: &(impl StateRead + ?Sized), id: &str) -> Result<Option<AccessRecord>, AccessError> {
    let key = keys::ACCESS_REQUEST.key_str(id);
    let Some(bytes) = store.get(Table::Meta, &key)? else { return Ok(None) };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| keys::ACCESS_REQUEST.corrupt(&key, e.to_string()).into())
}

fn read_log(store: &(impl StateRead + ?Sized), id: &str) -> Result<Vec<AccessTransition>, AccessError> {
    let mut out = Vec::new();
    let mut bad = None;
    store.scan_prefix(Table::Meta, &log_prefix(id), &mut |k, v| match serde_json::from_slice(v) {
        Ok(t) => {
            out.push(t);
            true
        }
        Err(e) => {
            bad = Some(keys::ACCESS_LOG.corrupt(k, e.to_string()));
            false
        }
    })?;
    match bad {
        Some(e) => Err(e.into()),
        None => Ok(out),
    }
}

/// The grants due at or before `now`, in due order: a scan of the expiry index from its start that
/// stops at the first later entry. Grants that fell due while the service was down are simply the
/// oldest entries. A claimed grant is absent until its lease runs out; a completed one is absent
/// for good.
pub fn due(store: &(impl StateRead + ?Sized), now: EventTime) -> Result<Vec<GrantToRevoke>, AccessError> {
    due_limited(store, now, usize::MAX)
}

/// [`due`], at most `limit` of them (the earliest): a scheduler with a backlog reads one page at a
/// time.
pub fn due_limited(
    store: &(impl StateRead + ?Sized),
    now: EventTime,
    limit: usize,
) -> Result<Vec<GrantToRevoke>, AccessError> {
    let mut entries: Vec<(EventTime, String)> = Vec::new();
    let mut bad: Option<Vec<u8>> = None;
    store.scan_prefix(Table::Meta, keys::ACCESS_DUE.prefix, &mut |k, _| match decode_due_key(k) {
        Some((t, _)) if t > now => false,
        Some((t, id)) => {
            entries.push((t, id.to_string()));
            entries.len() < limit
        }
        None => {
            bad = Some(k.to_vec());
            false
        }
    })?;
    if let Some(k) = bad {
        return Err(keys::ACCESS_DUE.corrupt(&k, "expected a sortable time and a UTF-8 request id").into());
    }
    let mut out = Vec::with_capacity(entries.len());
    for (t, id) in entries {
        let disagree = |why: &str| -> AccessError { keys::ACCESS_DUE.corrupt(&due_key(t, &id), why).into() };
        let record = read_record(store, &id)?.ok_or_else(|| disagree("indexed request does not exist"))?;
        if due_of(&record) != Some(t) {
            return Err(disagree("indexed request is not active at this due time"));
        }
        let r = schedule_of(&record)?;
        out.push(GrantToRevoke {
            request_id: id,
            due_at: t,
            expires_at: r.expires_at,
            attempts: r.attempts,
            failures: r.failures,
            alert: r.alert,
            early_end: r.early_end.clone(),
            action: revoke_action(&record.request)?,
        });
    }
    Ok(out)
}

/// Calls `f` on every stored request, in id order, until it returns false; nothing is collected, so a
/// listing keeps only what it filters in.
pub fn for_each_record(
    store: &(impl StateRead + ?Sized),
    f: &mut dyn FnMut(AccessRecord) -> bool,
) -> Result<(), AccessError> {
    let mut bad = None;
    store.scan_prefix(Table::Meta, keys::ACCESS_REQUEST.prefix, &mut |k, v| match serde_json::from_slice(v) {
        Ok(r) => f(r),
        Err(e) => {
            bad = Some(keys::ACCESS_REQUEST.corrupt(k, e.to_string()));
            false
        }
    })?;
    match bad {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// Every stored request.
pub fn all_records(store: &(impl StateRead + ?Sized)) -> Result<Vec<AccessRecord>, AccessError> {
    let mut out = Vec::new();
    for_each_record(store, &mut |r| {
        out.push(r);
        true
    })?;
    Ok(out)
}

/// Checks that the expiry index holds exactly one entry per active grant, at its due time, and nothing
/// else; and that each request's log is contiguous and ends in its state. A service may run it on
/// start; the tests run it after every step.
pub fn verify_index(store: &(impl StateRead + ?Sized)) -> Result<(), String> {
    let records = all_records(store).map_err(|e| e.to_string())?;
    let mut expected: Vec<Vec<u8>> =
        records.iter().filter_map(|r| due_of(r).map(|t| due_key(t, &r.request.id))).collect();
    expected.sort();
    let mut found = Vec::new();
    store
        .scan_prefix(Table::Meta, keys::ACCESS_DUE.prefix, &mut |k, _| {
            found.push(k.to_vec());
            true
        })
        .map_err(|e| e.to_string())?;
    if expected != found {
        return Err(format!("expiry index has {} entries, the active grants need {}", found.len(), expected.len()));
    }
    for r in &records {
        let log = read_log(store, &r.request.id).map_err(|e| e.to_string())?;
        let contiguous = log.iter().enumerate().all(|(i, t)| t.seq == i as u64);
        if !contiguous || log.len() as u64 != r.version || log.last().map(|t| t.state) != Some(r.state) {
            return Err(format!("log of {:?} does not end in its state {}", r.request.id, r.state));
        }
        if r.state == AccessState::Active && r.revoke.is_none() {
            return Err(format!("{:?} is active without a schedule", r.request.id));
        }
    }
    Ok(())
}
