//! The service's moving parts around the ledger: installing a grant once it is approved, the
//! revocation scheduler, and the audit publisher's wake-ups.
//!
//! Order of a grant's life and why it is crash-safe:
//! 1. approve → `approved` (committed);
//! 2. pre-checks against AWS (the identity exists, a managed policy is not already attached);
//! 3. `activate` is committed *before* the install call, so from here the grant is in the expiry
//!    index: a crash between 3 and 4 leaves a grant that will be revoked (idempotently), never an
//!    installed grant nobody will revoke; on restart, active grants are installed again (idempotent)
//!    so a grant interrupted between 3 and 4 is not lost either;
//! 4. install; a failure is recorded (`install_failed`) and the scheduler removes whatever half got
//!    installed, then ends it `failed`.
//!
//! The scheduler looks at the expiry index at the earliest due time (or when woken: an activation, an
//! early revocation, the manual clock moving), claims each due grant with a lease, revokes it with a
//! bounded number in flight, and records the outcome; a failure is retried with backoff and raises an
//! alert after the configured number of failures.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use grantwatch_access_core::policy::grant_action;
use grantwatch_access_core::{AccessError, AccessLedger, Applied, Principal, RevokeOutcome, RevokeTicket};
use grantwatch_state::StateStore;
use grantwatch_types::{AccessRecord, AccessRequest, AccessState, EventTime};
use tokio::sync::{Notify, Semaphore, watch};

use crate::clock::Clock;
use crate::config::SchedulerConfig;
use crate::grants::Grants;

pub type Store = Arc<dyn StateStore>;

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    pub installed: AtomicU64,
    pub install_failures: AtomicU64,
    pub revoked: AtomicU64,
    pub revoke_failures: AtomicU64,
    /// Revocation attempts that failed at or past the alert threshold.
    pub revoke_alerts: AtomicU64,
    /// Sum and count of (revoked at − due at) for grants that expired on time, in ms.
    pub expiry_lag_ms_sum: AtomicU64,
    pub expiry_lag_count: AtomicU64,
    pub expiry_lag_ms_max: AtomicU64,
}

pub struct Engine {
    pub ledger: AccessLedger<Store>,
    pub clock: Arc<dyn Clock>,
    grants: Arc<dyn Grants>,
    /// This process's name in claims and logs.
    worker: String,
    scheduler: SchedulerConfig,
    call_timeout: Duration,
    /// Wakes the scheduler (a new deadline, an early revocation).
    pub schedule_changed: Notify,
    /// Wakes the audit publisher (something was committed).
    pub committed: Notify,
    pub metrics: Metrics,
    /// Grants whose installation call is in flight: the scheduler leaves them alone until it returns,
    /// so a removal can never overtake the installation it would undo (a grant shorter than a slow
    /// AWS call).
    installing: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("worker", &self.worker).finish_non_exhaustive()
    }
}

/// Why an operation failed, for the API to map to a status.
pub type OpError = AccessError;

impl Engine {
    pub fn new(
        ledger: AccessLedger<Store>,
        clock: Arc<dyn Clock>,
        grants: Arc<dyn Grants>,
        worker: String,
        scheduler: SchedulerConfig,
        call_timeout: Duration,
    ) -> Arc<Engine> {
        Arc::new(Engine {
            ledger,
            clock,
            grants,
            worker,
            scheduler,
            call_timeout,
            schedule_changed: Notify::new(),
            committed: Notify::new(),
            metrics: Metrics::default(),
            installing: std::sync::Mutex::new(std::collections::HashSet::new()),
        })
    }

    pub fn now(&self) -> EventTime {
        self.clock.now()
    }

    fn committed(&self, applied: Applied) -> Applied {
        self.committed.notify_one();
        applied
    }

    /// Stores a request; a low-risk request under an auto-approving rule is approved and installed at
    /// once.
    pub async fn submit(&self, request: AccessRequest) -> Result<AccessRecord, OpError> {
        let applied = self.committed(self.ledger.submit(request, self.now())?);
        self.after_approval(applied.record).await
    }

    pub async fn approve(&self, id: &str, by: &Principal, reason: &str) -> Result<AccessRecord, OpError> {
        let applied = self.committed(self.ledger.approve(id, by, self.now(), reason)?);
        self.after_approval(applied.record).await
    }

    pub fn deny(&self, id: &str, by: &Principal, reason: &str) -> Result<AccessRecord, OpError> {
        Ok(self.committed(self.ledger.deny(id, by, self.now(), reason)?).record)
    }

    pub fn cancel(&self, id: &str, by: &Principal, reason: &str) -> Result<AccessRecord, OpError> {
        Ok(self.committed(self.ledger.cancel(id, by, self.now(), reason)?).record)
    }

    pub fn revoke(&self, id: &str, by: &Principal, reason: &str) -> Result<AccessRecord, OpError> {
        let applied = self.committed(self.ledger.request_revoke(id, by, self.now(), reason)?);
        self.schedule_changed.notify_one();
        Ok(applied.record)
    }

    pub fn abandon(&self, id: &str, by: &Principal, reason: &str) -> Result<AccessRecord, OpError> {
        let applied = self.committed(self.ledger.abandon(id, by, self.now(), reason)?);
        self.schedule_changed.notify_one();
        Ok(applied.record)
    }

    async fn after_approval(&self, record: AccessRecord) -> Result<AccessRecord, OpError> {
        if record.state != AccessState::Approved {
            return Ok(record);
        }
        self.install(&record.request.id).await
    }

    /// Steps 2–4 above for an approved request.
    pub async fn install(&self, id: &str) -> Result<AccessRecord, OpError> {
        let Some(record) = self.ledger.get(id)? else { return Err(AccessError::NotFound(id.to_string())) };
        // The pre-checks only need the grant's shape; its expiry is fixed at activation.
        let provisional = grant_action(&record.request, self.now())?;
        let refusal = match tokio::time::timeout(self.call_timeout, self.grants.precheck(&provisional)).await {
            Ok(Ok(None)) => None,
            Ok(Ok(Some(reason))) => Some(reason),
            Ok(Err(e)) => Some(format!("could not check the identity before installing: {e}")),
            Err(_) => Some("could not check the identity before installing: AWS did not answer in time".into()),
        };
        if let Some(reason) = refusal {
            self.metrics.install_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(request_id = id, %reason, "grant not installed");
            return Ok(self.committed(self.ledger.fail_before_install(id, self.now(), &reason)?).record);
        }
        self.set_installing(id, true);
        let activated = self.ledger.activate(id, self.now());
        let (applied, action) = match activated {
            Ok(a) => a,
            Err(e) => {
                self.set_installing(id, false);
                return Err(e);
            }
        };
        self.committed.notify_one();
        let installed = self.call(self.grants.install(&action)).await;
        let result = self.after_install(id, applied, installed);
        self.set_installing(id, false);
        self.schedule_changed.notify_one();
        result
    }

    fn set_installing(&self, id: &str, on: bool) {
        if let Ok(mut set) = self.installing.lock() {
            if on {
                set.insert(id.to_string());
            } else {
                set.remove(id);
            }
        }
    }

    fn is_installing(&self, id: &str) -> bool {
        self.installing.lock().is_ok_and(|set| set.contains(id))
    }

    fn after_install(
        &self,
        id: &str,
        applied: Applied,
        installed: Result<(), String>,
    ) -> Result<AccessRecord, OpError> {
        match installed {
            Ok(()) => {
                self.metrics.installed.fetch_add(1, Ordering::Relaxed);
                tracing::info!(request_id = id, expires_at = %applied.record.revoke.as_ref().map(|r| r.expires_at).unwrap_or_default(), "grant installed");
                Ok(applied.record)
            }
            Err(e) => {
                self.metrics.install_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(request_id = id, error = %e, "grant installation failed; removing what was installed");
                Ok(self.committed(self.ledger.install_failed(id, self.now(), &e)?).record)
            }
        }
    }

    async fn call<F: std::future::Future<Output = Result<(), String>>>(&self, f: F) -> Result<(), String> {
        match tokio::time::timeout(self.call_timeout, f).await {
            Ok(r) => r,
            Err(_) => Err(format!("AWS did not answer within {} s", self.call_timeout.as_secs())),
        }
    }

    /// What a restart does before serving: releases the claims of the process that died, installs
    /// again the active grants it may have been installing (idempotent), and installs the approved
    /// requests it had not started. Returns (claims released, grants re-installed, approved installed).
    pub async fn recover(&self) -> Result<(usize, usize, usize), OpError> {
        let released = self.ledger.release_interrupted_claims(self.now())?;
        let now = self.now();
        let (mut active, mut approved) = (Vec::new(), Vec::new());
        grantwatch_access_core::for_each_record(self.ledger.store(), &mut |r| {
            match r.state {
                AccessState::Active
                    if r.revoke.as_ref().is_some_and(|s| s.early_end.is_none() && s.expires_at > now) =>
                {
                    active.push(r.request.id)
                }
                AccessState::Approved => approved.push(r.request.id),
                _ => {}
            }
            true
        })?;
        let mut reinstalled = 0;
        for id in &active {
            let Some(record) = self.ledger.get(id)? else { continue };
            let Some(expires_at) = record.revoke.as_ref().map(|r| r.expires_at) else { continue };
            let action = grant_action(&record.request, expires_at)?;
            match self.call(self.grants.install(&action)).await {
                Ok(()) => reinstalled += 1,
                Err(e) => {
                    tracing::warn!(request_id = %id, error = %e, "re-installing an active grant failed; it stays scheduled for revocation")
                }
            }
        }
        for id in &approved {
            self.install(id).await?;
        }
        if !released.is_empty() || !approved.is_empty() {
            self.committed.notify_one();
            self.schedule_changed.notify_one();
        }
        Ok((released.len(), reinstalled, approved.len()))
    }

    /// The revocation scheduler; returns when `stop` turns true (revocations in flight finish first).
    pub async fn run_scheduler(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let permits = Arc::new(Semaphore::new(self.scheduler.workers));
        let max_idle = Duration::from_millis(self.scheduler.max_idle_ms.max(1));
        loop {
            if *stop.borrow() {
                break;
            }
            let mut full_page = false;
            let mut waiting_on_install = false;
            match self.ledger.due_limited(self.now(), self.scheduler.page) {
                Ok(page) => {
                    full_page = page.len() >= self.scheduler.page;
                    for grant in page {
                        if self.is_installing(&grant.request_id) {
                            // Due, but its installation has not returned yet: after it.
                            waiting_on_install = true;
                            continue;
                        }
                        let Ok(permit) = permits.clone().acquire_owned().await else { break };
                        match self.ledger.claim(&grant.request_id, self.now(), &self.worker) {
                            Ok(ticket) => {
                                self.committed.notify_one();
                                let engine = self.clone();
                                tokio::spawn(async move {
                                    engine.revoke_one(ticket).await;
                                    drop(permit);
                                });
                            }
                            // Claimed meanwhile, ended, or not due any more: nothing to do.
                            Err(
                                AccessError::Claimed { .. }
                                | AccessError::NotDue { .. }
                                | AccessError::Transition(_)
                                | AccessError::NotFound(_),
                            ) => {}
                            Err(e) => {
                                tracing::error!(request_id = %grant.request_id, error = %e, "claiming a due grant failed")
                            }
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "reading the expiry index failed"),
            }
            if full_page && !waiting_on_install {
                continue;
            }
            let wait = match self.ledger.next_due() {
                // An installation in flight holds a due grant back: the end of the installation wakes
                // the scheduler.
                _ if waiting_on_install => max_idle,
                Ok(Some(t)) => Duration::from_millis(u64::try_from(t.0 - self.now().0).unwrap_or(0)).min(max_idle),
                Ok(None) => max_idle,
                Err(e) => {
                    tracing::error!(error = %e, "reading the expiry index failed");
                    max_idle
                }
            };
            if wait.is_zero() {
                tokio::task::yield_now().await;
                continue;
            }
            let clock_moved = async {
                match self.clock.moved() {
                    Some(n) => n.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.schedule_changed.notified() => {}
                _ = clock_moved => {}
                _ = stop.changed() => {}
            }
        }
        // Let the revocations in flight record their outcome.
        let _ = permits.acquire_many(self.scheduler.workers as u32).await;
    }

    async fn revoke_one(&self, ticket: RevokeTicket) {
        let id = ticket.request_id.clone();
        let outcome = match self.call(self.grants.revoke(&ticket.action)).await {
            Ok(()) => RevokeOutcome::Revoked,
            Err(error) => RevokeOutcome::Failed { error },
        };
        let failed = matches!(outcome, RevokeOutcome::Failed { .. });
        match self.ledger.complete(&ticket, outcome, self.now()) {
            Ok(applied) => {
                self.committed.notify_one();
                let r = &applied.record;
                if failed {
                    self.metrics.revoke_failures.fetch_add(1, Ordering::Relaxed);
                    let s = r.revoke.as_ref();
                    let (failures, alert) = (s.map_or(0, |s| s.failures), s.is_some_and(|s| s.alert));
                    let retry_at = s.map(|s| s.due_at).unwrap_or_default();
                    let error = s.and_then(|s| s.last_error.as_deref()).unwrap_or("");
                    if alert {
                        self.metrics.revoke_alerts.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(request_id = %id, failures, %retry_at, error, "ALERT: revoking this grant keeps failing; a person must look (the aws:CurrentTime condition still ends inline grants on time)");
                    } else {
                        tracing::warn!(request_id = %id, failures, %retry_at, error, "revocation failed; retrying");
                    }
                    self.schedule_changed.notify_one();
                } else {
                    self.metrics.revoked.fetch_add(1, Ordering::Relaxed);
                    if r.state == AccessState::Expired
                        && let (Some(s), Some(end)) = (r.revoke.as_ref(), r.ended_at)
                    {
                        {
                            let lag = u64::try_from(end.0 - s.expires_at.0).unwrap_or(0);
                            self.metrics.expiry_lag_ms_sum.fetch_add(lag, Ordering::Relaxed);
                            self.metrics.expiry_lag_count.fetch_add(1, Ordering::Relaxed);
                            self.metrics.expiry_lag_ms_max.fetch_max(lag, Ordering::Relaxed);
                        }
                    }
                    tracing::info!(request_id = %id, state = %r.state, "grant revoked");
                }
            }
            Err(e) => tracing::error!(request_id = %id, error = %e, "recording a revocation's outcome failed"),
        }
    }
}
