//! Permissions on demand as detection sees them: the grants the access service made, and what a
//! CloudTrail event is against them.
//!
//! The access service writes one [`AccessAuditEvent`] per transition of a request (its audit log and
//! the `grantwatch.access` topic). [`OnDemandGrants`] folds them into the grants that became active:
//! the identity, what it got (actions on resources, a managed policy, a permission set on an account),
//! who asked and who approved, and the window from activation until expiry, or until an early end. The
//! latest transition of a request (highest `seq`) wins, so duplicates and out-of-order delivery change
//! nothing; the fold is the same whatever order the records come in.
//!
//! Against it, an event is:
//! - a **use within** a grant's window of what the grant gave ([`OnDemandGrants::within`]): expected;
//! - a **use after** a grant ended (expired or revoked) of what the grant gave, within the post-expiry
//!   window ([`OnDemandGrants::after`]): the removal failed, or the identity keeps trying;
//! - an IAM or Identity Center change that **grants to an identity with on-demand grants** and is not
//!   the change grantwatch made for one of its requests ([`OnDemandGrants::outside_grant`]).
//!
//! Identities are matched as the normalizer names them: an IAM user or role by account and name
//! (case-insensitive, as IAM names are; the path is ignored), so a role's grant covers every session
//! of the role; an Identity Center user's permission set by the role IAM Identity Center provisions
//! for it in the account (`AWSReservedSSO_<name>_<hash>`), narrowed to the user when the record names
//! one (`userIdentity.onBehalfOf.userId`). Whether an action is one a grant gave: IAM wildcards of the
//! request's actions, on its resources when the event names resources as ARNs; a permission set gives
//! whatever its role does; an AWS managed policy what its vendored document allows
//! ([`PolicyContent`]); a customer managed policy is a document detection does not have, so a use
//! within its window is taken as covered and a use after it is not judged.
//!
//! Bounded: at most `max_grants` grants and as many identities are kept, and a grant is forgotten once
//! event time has passed its end by the post-expiry window (an identity once its last grant ended
//! longer ago than the lookback); past the cap, the grants that ended first go first. No clock, no IO.

use std::collections::{BTreeMap, BTreeSet};

use grantwatch_core::glob::Glob;
use grantwatch_types::{AccessAuditEvent, AccessState, ActionGrant, RequestedAccess, RequestedIdentity};
use grantwatch_types::{Event, EventTime, IdentityKind, Status};
use serde::{Deserialize, Serialize};

/// The name of the inline policy the access service installs for request `<id>` is this prefix and the
/// id (`grantwatch-access`'s `policy::inline_policy_name`; detection does not depend on that crate).
pub const INLINE_POLICY_PREFIX: &str = "grantwatch-access-";

/// A watermark beyond any real event time is the end of input (`grantwatch analyze` closes everything
/// with one): grants are not forgotten on it, the next run may need them.
const LATEST_REAL_MS: i64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z

/// Characters of the access summary an explanation quotes.
const SUMMARY_MAX: usize = 512;

/// The settings of the on-demand analytics (from `[detection]` in `grantwatch.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnDemandLimits {
    /// A use this long after a grant ended is still judged as a use of it.
    pub after_expiry_ms: i64,
    /// The change that installs a grant is expected this close to its activation (either side).
    pub install_ms: i64,
    /// An identity counts as having had on-demand grants this long after its last one ended.
    pub horizon_ms: i64,
    /// Grants (and identities) kept at most.
    pub max_grants: usize,
}

impl Default for OnDemandLimits {
    fn default() -> Self {
        OnDemandLimits {
            after_expiry_ms: 24 * 3_600_000,
            install_ms: 10 * 60_000,
            horizon_ms: 90 * 86_400_000,
            max_grants: 10_000,
        }
    }
}

/// A grant that became active, as the latest transition of its request describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnDemandGrant {
    pub request_id: String,
    /// The `seq` of the transition this is the state after.
    pub seq: u64,
    pub state: AccessState,
    pub identity: RequestedIdentity,
    pub account_id: String,
    pub access: RequestedAccess,
    pub requester: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    pub approvers: Vec<String>,
    pub activated_at: EventTime,
    pub expires_at: EventTime,
    /// Set once the grant was revoked and the request ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<EventTime>,
}

impl OnDemandGrant {
    /// The grant of `ev`'s request as `ev` leaves it; `None` before activation (nothing granted yet).
    pub fn of(ev: &AccessAuditEvent) -> Option<OnDemandGrant> {
        Some(OnDemandGrant {
            request_id: ev.transition.request_id.clone(),
            seq: ev.transition.seq,
            state: ev.transition.state,
            identity: ev.identity.clone(),
            account_id: ev.account_id.clone(),
            access: ev.access.clone(),
            requester: ev.requester.clone(),
            ticket: ev.ticket.clone(),
            approvers: ev.approvals.iter().map(|a| a.approver.clone()).collect(),
            activated_at: ev.activated_at?,
            expires_at: ev.expires_at?,
            ended_at: ev.ended_at,
        })
    }

    /// When the grant stopped giving access: its expiry (the policy's time condition says the same), or
    /// its early end. A late removal does not extend it: a use past the expiry is a use after it.
    pub fn end(&self) -> EventTime {
        match self.ended_at {
            Some(e) if e < self.expires_at => e,
            _ => self.expires_at,
        }
    }

    fn contains(&self, t: i64) -> bool {
        self.activated_at.millis() <= t && t < self.end().millis()
    }

    /// `request r-1 (approved by bob, carol; 2026-01-05T10:00:00Z–2026-01-05T11:00:00Z)`.
    pub fn describe(&self) -> String {
        let approvers = if self.approvers.is_empty() { "no one".to_string() } else { self.approvers.join(", ") };
        format!(
            "on-demand request {} (approved by {approvers}; {}–{})",
            self.request_id,
            self.activated_at.to_rfc3339(),
            self.end().to_rfc3339()
        )
    }

    /// What an alert's explanation says of the grant (`explanation.on_demand`).
    pub fn note(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "request_id": self.request_id,
            "state": self.state,
            "requester": self.requester,
            "approved_by": self.approvers,
            "from": self.activated_at,
            "until": self.end(),
            "expires_at": self.expires_at,
            "access": self.summary(),
        });
        if let Some(t) = &self.ticket {
            v["ticket"] = t.clone().into();
        }
        if let Some(e) = self.ended_at {
            v["ended_at"] = serde_json::json!(e);
        }
        v
    }

    /// The access granted, in a line.
    pub fn summary(&self) -> String {
        let s = match &self.access {
            RequestedAccess::Actions { grants } => grants
                .iter()
                .map(|g| format!("{} on {}", g.action, g.resources.join(", ")))
                .collect::<Vec<_>>()
                .join("; "),
            RequestedAccess::ManagedPolicy { policy_arn } => format!("managed policy {policy_arn}"),
            RequestedAccess::PermissionSet { name, account_id } => {
                format!("permission set {name} on account {account_id}")
            }
        };
        grantwatch_types::cut_str(&s, SUMMARY_MAX).to_string()
    }
}

/// What is remembered of an identity that had on-demand grants, after its grants are forgotten.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnDemandIdentity {
    /// Activation of its first grant seen.
    pub first_ms: i64,
    /// End of its last grant.
    pub last_end_ms: i64,
}

/// What content a managed policy has, for the grants of one ([`RequestedAccess::ManagedPolicy`]).
pub trait PolicyContent {
    /// Whether the policy allows `action`; `None`: its document is unknown to detection.
    fn allows(&mut self, policy_arn: &str, action: &str) -> Option<bool>;
}

/// Knows no policy: every managed policy's content is unknown.
pub struct NoPolicies;

impl PolicyContent for NoPolicies {
    fn allows(&mut self, _: &str, _: &str) -> Option<bool> {
        None
    }
}

/// What one transition did to the fold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// A grant is new or newer.
    Changed,
    /// The fold already holds this transition or a later one of the request.
    Stale,
    /// The request has no active grant yet (pending, approved, denied, cancelled): nothing to keep.
    NotActive,
}

/// Counts of what the fold did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OnDemandCounts {
    pub changed: u64,
    pub stale: u64,
    pub not_active: u64,
    /// Grants forgotten because the cap was reached before their time.
    pub evicted: u64,
}

/// Changed grants (by request id) and identities (by key): the value to store, or `None` to delete.
pub type OnDemandChanges<'a> = (Vec<(String, Option<&'a OnDemandGrant>)>, Vec<(String, Option<OnDemandIdentity>)>);

/// A use of on-demand permissions: the grant, and the event's actions it gave.
#[derive(Debug, Clone, PartialEq)]
pub struct Use<'a> {
    pub grant: &'a OnDemandGrant,
    pub actions: Vec<String>,
    /// The grant gave every action of the event (or the whole identity).
    pub whole: bool,
}

/// A change that grants to an identity with on-demand grants and is not grantwatch's.
#[derive(Debug, Clone, PartialEq)]
pub struct Outside<'a> {
    /// The identity granted to, as the alert names it.
    pub target: String,
    /// What the change did.
    pub what: String,
    /// The identity's latest on-demand grant, if still remembered.
    pub grant: Option<&'a OnDemandGrant>,
}

/// The on-demand grants, with their changes since the stage last persisted them.
#[derive(Debug, Clone, Default)]
pub struct OnDemandGrants {
    limits: OnDemandLimits,
    grants: BTreeMap<String, OnDemandGrant>,
    /// (end + post-expiry window, request id): the order grants are forgotten in.
    by_end: BTreeSet<(i64, String)>,
    /// Request ids by the key events are matched with (`user:`, `role:`, `ps:`).
    by_match: BTreeMap<String, BTreeSet<String>>,
    /// Request ids by identity (`user:`, `role:`, `ic:`).
    by_who: BTreeMap<String, BTreeSet<String>>,
    identities: BTreeMap<String, OnDemandIdentity>,
    /// (last end + horizon, identity key).
    identities_by_end: BTreeSet<(i64, String)>,
    dirty_grants: BTreeSet<String>,
    dirty_identities: BTreeSet<String>,
    pub counts: OnDemandCounts,
}

impl OnDemandGrants {
    pub fn new(limits: OnDemandLimits) -> Self {
        OnDemandGrants { limits, ..Default::default() }
    }

    pub fn limits(&self) -> OnDemandLimits {
        self.limits
    }

    pub fn is_empty(&self) -> bool {
        self.grants.is_empty() && self.identities.is_empty()
    }

    pub fn len(&self) -> usize {
        self.grants.len()
    }

    pub fn grants(&self) -> impl Iterator<Item = &OnDemandGrant> {
        self.grants.values()
    }

    pub fn identities(&self) -> impl Iterator<Item = (&str, &OnDemandIdentity)> {
        self.identities.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Folds one audit event in: the request's latest transition wins.
    pub fn apply(&mut self, ev: &AccessAuditEvent) -> Applied {
        let t = &ev.transition;
        if self.grants.get(&t.request_id).is_some_and(|g| g.seq >= t.seq) {
            self.counts.stale += 1;
            return Applied::Stale;
        }
        let Some(grant) = OnDemandGrant::of(ev) else {
            self.counts.not_active += 1;
            return Applied::NotActive;
        };
        self.counts.changed += 1;
        self.insert(grant);
        Applied::Changed
    }

    /// Folds in a grant of another fold (a stage restoring state, a shard receiving the run's grants).
    pub fn merge_grant(&mut self, grant: &OnDemandGrant) {
        if self.grants.get(&grant.request_id).is_none_or(|g| g.seq < grant.seq) {
            self.insert(grant.clone());
        }
    }

    /// Folds in what another fold remembers of an identity.
    pub fn merge_identity(&mut self, key: &str, seen: OnDemandIdentity) {
        self.remember(key, seen.first_ms, seen.last_end_ms);
    }

    /// Folds in everything `other` holds.
    pub fn merge(&mut self, other: &OnDemandGrants) {
        for g in other.grants.values() {
            self.merge_grant(g);
        }
        for (k, seen) in &other.identities {
            self.merge_identity(k, *seen);
        }
    }

    fn insert(&mut self, grant: OnDemandGrant) {
        let id = grant.request_id.clone();
        if let Some(old) = self.grants.remove(&id) {
            self.unindex(&old);
        }
        let (Some(who), Some(matched)) = (who_key(&grant.identity), match_key(&grant)) else {
            // An identity no event can name (a malformed ARN): nothing to match it with.
            self.dirty_grants.insert(id);
            return;
        };
        let end = grant.end().millis();
        self.remember(&who, grant.activated_at.millis(), end);
        self.by_end.insert((end.saturating_add(self.limits.after_expiry_ms), id.clone()));
        self.by_match.entry(matched).or_default().insert(id.clone());
        self.by_who.entry(who).or_default().insert(id.clone());
        self.grants.insert(id.clone(), grant);
        self.dirty_grants.insert(id);
        while self.grants.len() > self.limits.max_grants.max(1) {
            let Some((_, first)) = self.by_end.first().cloned() else { break };
            self.remove(&first);
            self.counts.evicted += 1;
        }
    }

    fn unindex(&mut self, g: &OnDemandGrant) {
        let id = &g.request_id;
        self.by_end.remove(&(g.end().millis().saturating_add(self.limits.after_expiry_ms), id.clone()));
        for (map, key) in [(&mut self.by_match, match_key(g)), (&mut self.by_who, who_key(&g.identity))] {
            if let Some(k) = key
                && let Some(ids) = map.get_mut(&k)
            {
                ids.remove(id);
                if ids.is_empty() {
                    map.remove(&k);
                }
            }
        }
    }

    fn remove(&mut self, id: &str) {
        if let Some(g) = self.grants.remove(id) {
            self.unindex(&g);
            self.dirty_grants.insert(id.to_string());
        }
    }

    fn remember(&mut self, who: &str, first_ms: i64, last_end_ms: i64) {
        let horizon = self.limits.horizon_ms;
        let merged = match self.identities.get(who) {
            Some(old) => {
                let new = OnDemandIdentity {
                    first_ms: old.first_ms.min(first_ms),
                    last_end_ms: old.last_end_ms.max(last_end_ms),
                };
                if new == *old {
                    return;
                }
                self.identities_by_end.remove(&(old.last_end_ms.saturating_add(horizon), who.to_string()));
                new
            }
            None => OnDemandIdentity { first_ms, last_end_ms },
        };
        self.identities_by_end.insert((merged.last_end_ms.saturating_add(horizon), who.to_string()));
        self.identities.insert(who.to_string(), merged);
        self.dirty_identities.insert(who.to_string());
        while self.identities.len() > self.limits.max_grants.max(1) {
            let Some((_, first)) = self.identities_by_end.pop_first() else { break };
            self.identities.remove(&first);
            self.dirty_identities.insert(first);
        }
    }

    /// Forgets what event time `watermark_ms` has left behind: grants whose post-expiry window is over,
    /// identities whose last grant ended longer ago than the horizon.
    pub fn prune(&mut self, watermark_ms: i64) {
        if watermark_ms > LATEST_REAL_MS {
            return;
        }
        while let Some((due, id)) = self.by_end.first().cloned() {
            if due >= watermark_ms {
                break;
            }
            self.remove(&id);
        }
        while let Some((due, who)) = self.identities_by_end.first().cloned() {
            if due >= watermark_ms {
                break;
            }
            self.identities_by_end.pop_first();
            self.identities.remove(&who);
            self.dirty_identities.insert(who);
        }
    }

    /// Marks everything clean but what was dropped: the fold was just restored from state, which holds
    /// the rest already.
    pub fn restored(&mut self) {
        let (grants, identities) = (&self.grants, &self.identities);
        self.dirty_grants.retain(|id| !grants.contains_key(id));
        self.dirty_identities.retain(|k| !identities.contains_key(k));
    }

    /// Grants and identities changed since the last call: the value to store, or `None` to delete.
    pub fn take_changes(&mut self) -> OnDemandChanges<'_> {
        let grants = std::mem::take(&mut self.dirty_grants);
        let identities = std::mem::take(&mut self.dirty_identities);
        (
            grants.into_iter().map(|id| (id.clone(), self.grants.get(&id))).collect(),
            identities.into_iter().map(|k| (k.clone(), self.identities.get(&k).copied())).collect(),
        )
    }

    /// Changes not yet taken.
    pub fn pending(&self) -> usize {
        self.dirty_grants.len() + self.dirty_identities.len()
    }

    /// The grants whose identity `ev`'s actor is.
    fn candidates<'a>(&'a self, ev: &Event) -> Vec<&'a OnDemandGrant> {
        if self.grants.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for key in actor_match_keys(ev) {
            if let Some(ids) = self.by_match.get(&key) {
                out.extend(ids.iter().filter_map(|id| self.grants.get(id)));
            }
        }
        out
    }

    /// The grant `ev` uses within its window, if any: the one that gave most of its actions, then the
    /// latest activated.
    pub fn within<'a>(&'a self, ev: &Event, content: &mut dyn PolicyContent) -> Option<Use<'a>> {
        let t = ev.time.millis();
        let mut best: Option<Use<'a>> = None;
        for g in self.candidates(ev) {
            if !g.contains(t) {
                continue;
            }
            let Some(u) = covered(g, ev, content, true) else { continue };
            let better = best.as_ref().is_none_or(|b| {
                (u.whole, u.actions.len(), u.grant.activated_at) > (b.whole, b.actions.len(), b.grant.activated_at)
            });
            if better {
                best = Some(u);
            }
        }
        best
    }

    /// The grant whose permissions `ev` uses after it ended, within the post-expiry window, if any (the
    /// latest ended). The caller first asks [`Self::within`]: a use covered by a current grant is not one.
    pub fn after<'a>(&'a self, ev: &Event, content: &mut dyn PolicyContent) -> Option<Use<'a>> {
        let t = ev.time.millis();
        let mut best: Option<Use<'a>> = None;
        for g in self.candidates(ev) {
            let end = g.end().millis();
            if t < end || t >= end.saturating_add(self.limits.after_expiry_ms) {
                continue;
            }
            let Some(u) = covered(g, ev, content, false) else { continue };
            if best.as_ref().is_none_or(|b| u.grant.end() > b.grant.end()) {
                best = Some(u);
            }
        }
        best
    }

    /// Whether `ev` (with its parsed `request`) grants permissions to an identity that has (had)
    /// on-demand grants, other than by installing one of them: an inline policy not named for one of the
    /// identity's requests (or put outside that request's activation), a managed policy attached other
    /// than at the activation of the request that asked for it, a group membership (grantwatch never adds
    /// to groups), an account assignment to an Identity Center user other than at the activation of one
    /// of its permission-set requests on that account. Successful calls only.
    pub fn outside_grant<'a>(&'a self, ev: &Event, request: Option<&serde_json::Value>) -> Option<Outside<'a>> {
        if self.identities.is_empty() || ev.status != Status::Success {
            return None;
        }
        let change = GrantChange::of(ev, request?)?;
        let (who, t) = (&change.who, ev.time.millis());
        let known = self.identities.get(who)?;
        let install = self.limits.install_ms;
        if t < known.first_ms.saturating_sub(install) || t > known.last_end_ms.saturating_add(self.limits.horizon_ms) {
            return None;
        }
        let grants: Vec<&OnDemandGrant> =
            self.by_who.get(who).into_iter().flatten().filter_map(|id| self.grants.get(id)).collect();
        // The access service installs a grant right after recording its activation.
        let at_activation = |g: &OnDemandGrant| t.abs_diff(g.activated_at.millis()) <= install.unsigned_abs();
        if grants.iter().any(|g| change.installs(g) && at_activation(g)) {
            return None;
        }
        let latest = grants
            .into_iter()
            .filter(|g| g.activated_at.millis() <= t.saturating_add(install))
            .max_by_key(|g| (g.activated_at, g.request_id.clone()));
        Some(Outside { target: change.target, what: change.what, grant: latest })
    }
}

/// A successful call that grants permissions to an identity, as [`OnDemandGrants::outside_grant`] reads it.
struct GrantChange {
    /// The identity granted to (its key).
    who: String,
    target: String,
    what: String,
    /// How grantwatch would have made this change, if it can.
    ours: Ours,
}

enum Ours {
    /// The inline policy of request `id` (the name says which).
    InlinePolicy(Option<String>),
    /// The attachment of a managed policy a request asked for.
    ManagedPolicy(String),
    /// An account assignment on this account. The record names the permission set by ARN, a request by
    /// name: the account and the time tell grantwatch's assignment apart.
    Assignment(String),
    /// grantwatch never makes this change (group membership).
    Never,
}

impl GrantChange {
    fn of(ev: &Event, req: &serde_json::Value) -> Option<GrantChange> {
        let s = |k: &str| req.get(k).and_then(|v| v.as_str());
        let account = &ev.account_uid;
        let iam = |kind: &str, name: &str, what: String, ours: Ours| GrantChange {
            who: iam_key(kind, account, name),
            target: format!("{kind}/{name} in account {account}"),
            what,
            ours,
        };
        match (ev.api.service.as_str(), ev.api.operation.as_str()) {
            ("iam.amazonaws.com", op @ ("PutUserPolicy" | "PutRolePolicy")) => {
                let (kind, name) =
                    if op == "PutUserPolicy" { ("user", s("userName")?) } else { ("role", s("roleName")?) };
                let policy = s("policyName").unwrap_or_default();
                let id = policy.strip_prefix(INLINE_POLICY_PREFIX).map(str::to_string);
                Some(iam(kind, name, format!("{op} of inline policy {policy}"), Ours::InlinePolicy(id)))
            }
            ("iam.amazonaws.com", op @ ("AttachUserPolicy" | "AttachRolePolicy")) => {
                let (kind, name) =
                    if op == "AttachUserPolicy" { ("user", s("userName")?) } else { ("role", s("roleName")?) };
                let arn = s("policyArn").unwrap_or_default();
                Some(iam(kind, name, format!("{op} of {arn}"), Ours::ManagedPolicy(arn.to_string())))
            }
            ("iam.amazonaws.com", "AddUserToGroup") => {
                let what = format!("AddUserToGroup {}", s("groupName").unwrap_or_default());
                Some(iam("user", s("userName")?, what, Ours::Never))
            }
            ("sso.amazonaws.com", "CreateAccountAssignment") if s("principalType") == Some("USER") => {
                let user = s("principalId")?;
                let target_account = s("targetId").unwrap_or_default();
                Some(GrantChange {
                    who: format!("ic:{user}"),
                    target: format!("Identity Center user {user}"),
                    what: format!(
                        "CreateAccountAssignment of {} on account {target_account}",
                        s("permissionSetArn").unwrap_or_default()
                    ),
                    ours: Ours::Assignment(target_account.to_string()),
                })
            }
            _ => None,
        }
    }

    /// Whether this change is how grantwatch installs grant `g` (the time aside).
    fn installs(&self, g: &OnDemandGrant) -> bool {
        match (&self.ours, &g.access) {
            (Ours::InlinePolicy(id), RequestedAccess::Actions { .. }) => id.as_deref() == Some(g.request_id.as_str()),
            (Ours::ManagedPolicy(arn), RequestedAccess::ManagedPolicy { policy_arn }) => arn == policy_arn,
            (Ours::Assignment(account), RequestedAccess::PermissionSet { account_id, .. }) => account == account_id,
            _ => false,
        }
    }
}

/// What of `ev` grant `g` gave: `None` if nothing. `lenient`: a managed policy whose document is
/// unknown counts as giving everything (for expected uses), else as unknown (no judgement).
fn covered<'a>(g: &'a OnDemandGrant, ev: &Event, content: &mut dyn PolicyContent, lenient: bool) -> Option<Use<'a>> {
    let all = |actions: &[String]| Some(Use { grant: g, actions: actions.to_vec(), whole: true });
    match &g.access {
        RequestedAccess::PermissionSet { .. } => {
            let RequestedIdentity::IdentityCenterUser { user_id } = &g.identity else { return None };
            // A session of the permission set's role that names another user is that user's.
            if ev.actor.on_behalf_of.as_deref().is_some_and(|u| u != user_id) {
                return None;
            }
            all(&ev.actions)
        }
        RequestedAccess::ManagedPolicy { policy_arn } => {
            let mut actions = Vec::new();
            for a in &ev.actions {
                match content.allows(policy_arn, a) {
                    Some(true) => actions.push(a.clone()),
                    Some(false) => {}
                    None if lenient => return (!ev.actions.is_empty()).then(|| all(&ev.actions)).flatten(),
                    None => return None,
                }
            }
            partial(g, ev, actions)
        }
        RequestedAccess::Actions { grants } => {
            let actions = ev.actions.iter().filter(|a| grants.iter().any(|s| statement_covers(s, a, ev))).cloned();
            partial(g, ev, actions.collect())
        }
    }
}

fn partial<'a>(g: &'a OnDemandGrant, ev: &Event, actions: Vec<String>) -> Option<Use<'a>> {
    if actions.is_empty() {
        return None;
    }
    let whole = actions.len() == ev.actions.len();
    Some(Use { grant: g, actions, whole })
}

/// Whether statement `s` allows action `a` of `ev`: the action matches, and so does one of the event's
/// resources when it names any as ARNs (the log does not always say what a call touched).
fn statement_covers(s: &ActionGrant, a: &str, ev: &Event) -> bool {
    if !Glob::IAM_ACTION.matches(&s.action, a) {
        return false;
    }
    if s.resources.iter().any(|r| r == "*") {
        return true;
    }
    let mut arns = ev.resources.iter().filter(|r| r.starts_with("arn:")).peekable();
    arns.peek().is_none() || arns.any(|r| s.resources.iter().any(|p| Glob::RESOURCE.matches(p, r)))
}

/// `arn:aws:iam::111122223333:role/path/Name` → (`111122223333`, `role`, `Name`).
fn iam_arn_parts(arn: &str) -> Option<(&str, &str, &str)> {
    let mut parts = arn.splitn(6, ':');
    let (_, _, service, _, account, resource) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if service != "iam" || account.is_empty() {
        return None;
    }
    let (kind, rest) = resource.split_once('/')?;
    let name = rest.rsplit('/').next().filter(|n| !n.is_empty())?;
    Some((account, kind, name))
}

fn iam_key(kind: &str, account: &str, name: &str) -> String {
    format!("{kind}:{account}:{}", name.to_ascii_lowercase())
}

/// The key of the identity a request names.
fn who_key(identity: &RequestedIdentity) -> Option<String> {
    match identity {
        RequestedIdentity::IamUser { arn } | RequestedIdentity::IamRole { arn } => {
            let (account, kind, name) = iam_arn_parts(arn)?;
            matches!(kind, "user" | "role").then(|| iam_key(kind, account, name))
        }
        RequestedIdentity::IdentityCenterUser { user_id } => (!user_id.is_empty()).then(|| format!("ic:{user_id}")),
    }
}

/// The key events using grant `g` are found by: the IAM identity's, or for a permission set the
/// account and the set's name (its role's name holds it).
fn match_key(g: &OnDemandGrant) -> Option<String> {
    match (&g.identity, &g.access) {
        (RequestedIdentity::IdentityCenterUser { .. }, RequestedAccess::PermissionSet { name, account_id }) => {
            Some(format!("ps:{account_id}:{}", name.to_ascii_lowercase()))
        }
        (RequestedIdentity::IdentityCenterUser { .. }, _) => None,
        (identity, _) => who_key(identity),
    }
}

/// The keys `ev`'s actor is found by.
fn actor_match_keys(ev: &Event) -> Vec<String> {
    let kind = match ev.actor.kind {
        IdentityKind::User => "user",
        IdentityKind::Role => "role",
        _ => return Vec::new(),
    };
    let Some((account, arn_kind, name)) = iam_arn_parts(&ev.actor.uid) else { return Vec::new() };
    if arn_kind != kind {
        return Vec::new();
    }
    let mut keys = vec![iam_key(kind, account, name)];
    // `AWSReservedSSO_<permission set>_<hash>`: permission set names may hold `_`, the hash does not.
    if kind == "role"
        && let Some(rest) = name.strip_prefix("AWSReservedSSO_")
        && let Some((set, _)) = rest.rsplit_once('_')
    {
        keys.push(format!("ps:{account}:{}", set.to_ascii_lowercase()));
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use grantwatch_core::testing::event;
    use grantwatch_types::RawJson;
    use grantwatch_types::{AccessCommand, AccessTransition, Approval, RiskLevel};

    const T0: i64 = 1_767_571_200_000; // 2026-01-05T00:00:00Z
    const MIN: i64 = 60_000;
    const HOUR: i64 = 60 * MIN;
    const BOB: &str = "arn:aws:iam::111122223333:role/ops/deployer";

    fn audit(
        id: &str,
        seq: u64,
        state: AccessState,
        access: RequestedAccess,
        identity: RequestedIdentity,
    ) -> AccessAuditEvent {
        let active = !matches!(state, AccessState::Pending | AccessState::Approved | AccessState::Denied);
        AccessAuditEvent {
            schema: grantwatch_types::ACCESS_EVENT_SCHEMA.into(),
            audit_seq: seq,
            transition: AccessTransition {
                request_id: id.into(),
                seq,
                at: EventTime(T0 + seq as i64),
                by: "carol".into(),
                command: AccessCommand::Activate,
                from: None,
                state,
                reason: "r".into(),
            },
            identity,
            account_id: "111122223333".into(),
            access,
            risk: RiskLevel::Medium,
            requester: "alice".into(),
            ticket: Some("CHG-1".into()),
            approvals: vec![Approval { approver: "carol".into(), at: EventTime(T0) }],
            activated_at: active.then_some(EventTime(T0)),
            expires_at: active.then_some(EventTime(T0 + HOUR)),
            ended_at: matches!(state, AccessState::Expired | AccessState::Revoked).then_some(EventTime(T0 + HOUR)),
            alert: false,
        }
    }

    fn actions(action: &str, resource: &str) -> RequestedAccess {
        RequestedAccess::Actions {
            grants: vec![ActionGrant { action: action.into(), resources: vec![resource.into()] }],
        }
    }

    fn role() -> RequestedIdentity {
        RequestedIdentity::IamRole { arn: BOB.into() }
    }

    fn use_by_role(at: i64, action: &str, resources: &[&str]) -> Event {
        let mut e = event("u", EventTime(at));
        e.actor.uid = BOB.into();
        e.actor.kind = IdentityKind::Role;
        e.actor.session_name = Some("bob@example.com".into());
        e.actions = vec![action.into()];
        e.resources = resources.iter().map(|r| r.to_string()).collect();
        e
    }

    fn fold(events: &[AccessAuditEvent]) -> OnDemandGrants {
        let mut m = OnDemandGrants::new(OnDemandLimits::default());
        for e in events {
            m.apply(e);
        }
        m
    }

    #[test]
    fn the_latest_transition_wins_whatever_the_order_and_the_duplicates() {
        let access = actions("s3:GetObject", "arn:aws:s3:::reports/*");
        let seq = [
            audit("r1", 0, AccessState::Pending, access.clone(), role()),
            audit("r1", 1, AccessState::Approved, access.clone(), role()),
            audit("r1", 2, AccessState::Active, access.clone(), role()),
            audit("r1", 3, AccessState::Expired, access.clone(), role()),
        ];
        let in_order = fold(&seq);
        let mut shuffled = vec![seq[3].clone(), seq[2].clone(), seq[3].clone(), seq[0].clone(), seq[1].clone()];
        shuffled.extend(seq.iter().cloned());
        let any_order = fold(&shuffled);
        let grants: Vec<_> = in_order.grants().cloned().collect();
        assert_eq!(grants, any_order.grants().cloned().collect::<Vec<_>>());
        assert_eq!(grants.len(), 1);
        assert_eq!((grants[0].seq, grants[0].state), (3, AccessState::Expired));
        assert_eq!(any_order.counts.stale, 8, "everything after the final transition");
        // Never active: nothing kept.
        assert!(fold(&seq[..2]).is_empty());
    }

    #[test]
    fn uses_within_after_and_outside_a_window_are_told_apart() {
        let m = fold(&[audit("r1", 2, AccessState::Active, actions("s3:Get*", "arn:aws:s3:::reports/*"), role())]);
        let obj = "arn:aws:s3:::reports/q1.csv";
        let inside = use_by_role(T0 + 10 * MIN, "s3:GetObject", &[obj]);
        let u = m.within(&inside, &mut NoPolicies).unwrap();
        assert!(u.whole && u.grant.request_id == "r1", "{u:?}");
        assert!(m.after(&inside, &mut NoPolicies).is_none());
        // Another bucket, another action, another role, before activation: not the grant's.
        assert!(
            m.within(&use_by_role(T0 + MIN, "s3:GetObject", &["arn:aws:s3:::payroll/x"]), &mut NoPolicies).is_none()
        );
        assert!(m.within(&use_by_role(T0 + MIN, "s3:PutObject", &[obj]), &mut NoPolicies).is_none());
        assert!(m.within(&use_by_role(T0 - MIN, "s3:GetObject", &[obj]), &mut NoPolicies).is_none());
        let mut other = use_by_role(T0 + MIN, "s3:GetObject", &[obj]);
        other.actor.uid = "arn:aws:iam::111122223333:role/other".into();
        assert!(m.within(&other, &mut NoPolicies).is_none());
        // The path and the case of the name do not matter; a session of the role is the role.
        let mut cased = use_by_role(T0 + MIN, "s3:GetObject", &[obj]);
        cased.actor.uid = "arn:aws:iam::111122223333:role/Deployer".into();
        assert!(m.within(&cased, &mut NoPolicies).is_some());
        // Right after expiry, and within the post-expiry window only.
        let late = use_by_role(T0 + HOUR + MIN, "s3:GetObject", &[obj]);
        assert!(m.within(&late, &mut NoPolicies).is_none());
        assert_eq!(m.after(&late, &mut NoPolicies).unwrap().grant.request_id, "r1");
        assert!(m.after(&use_by_role(T0 + 26 * HOUR, "s3:GetObject", &[obj]), &mut NoPolicies).is_none());
        // An early end ends the window there.
        let m = fold(&[audit("r1", 5, AccessState::Revoked, actions("s3:Get*", "*"), role())].map(|mut e| {
            e.ended_at = Some(EventTime(T0 + 20 * MIN));
            e
        }));
        assert!(m.within(&use_by_role(T0 + 10 * MIN, "s3:GetObject", &[obj]), &mut NoPolicies).is_some());
        assert!(m.after(&use_by_role(T0 + 30 * MIN, "s3:GetObject", &[obj]), &mut NoPolicies).is_some());
    }

    #[test]
    fn a_permission_set_covers_its_role_in_its_account_for_its_user() {
        let ic = RequestedIdentity::IdentityCenterUser { user_id: "u-123".into() };
        let ps = RequestedAccess::PermissionSet { name: "Data_Admin".into(), account_id: "111122223333".into() };
        let m = fold(&[audit("r9", 2, AccessState::Active, ps, ic)]);
        let mut e = use_by_role(T0 + MIN, "glue:DeleteTable", &[]);
        e.actor.uid =
            "arn:aws:iam::111122223333:role/aws-reserved/sso.amazonaws.com/eu-west-1/AWSReservedSSO_Data_Admin_0123456789abcdef".into();
        let u = m.within(&e, &mut NoPolicies).unwrap();
        assert!(u.whole);
        e.actor.on_behalf_of = Some("u-999".into());
        assert!(m.within(&e, &mut NoPolicies).is_none(), "another user's session of the same role");
        e.actor.on_behalf_of = Some("u-123".into());
        e.actor.uid = "arn:aws:iam::444455556666:role/AWSReservedSSO_Data_Admin_0123456789abcdef".into();
        assert!(m.within(&e, &mut NoPolicies).is_none(), "the set's role in another account");
    }

    fn change(at: i64, source: &str, op: &str, request: &str) -> Event {
        let mut e = event("c", EventTime(at));
        e.actor.uid = "arn:aws:iam::111122223333:user/mallory".into();
        e.api = grantwatch_types::Api { service: source.into(), operation: op.into() };
        e.request = RawJson::from_text(request);
        e
    }

    fn outside(m: &OnDemandGrants, e: &Event) -> Option<String> {
        let req = e.request.as_ref().and_then(RawJson::parse);
        m.outside_grant(e, req.as_ref()).map(|o| o.what)
    }

    #[test]
    fn grants_to_on_demand_identities_not_made_by_grantwatch_are_found() {
        let m = fold(&[
            audit("r1", 2, AccessState::Active, actions("s3:GetObject", "*"), role()),
            audit(
                "r2",
                2,
                AccessState::Active,
                RequestedAccess::ManagedPolicy { policy_arn: "arn:aws:iam::aws:policy/ReadOnlyAccess".into() },
                role(),
            ),
        ]);
        let iam = "iam.amazonaws.com";
        let own = r#"{"roleName":"deployer","policyName":"grantwatch-access-r1","policyDocument":"{}"}"#;
        assert_eq!(outside(&m, &change(T0 + 1000, iam, "PutRolePolicy", own)), None, "grantwatch's own");
        assert!(outside(&m, &change(T0 + 2 * HOUR, iam, "PutRolePolicy", own)).is_some(), "its name, long after");
        let other = r#"{"roleName":"deployer","policyName":"extra","policyDocument":"{}"}"#;
        assert_eq!(
            outside(&m, &change(T0 + MIN, iam, "PutRolePolicy", other)).unwrap(),
            "PutRolePolicy of inline policy extra"
        );
        let attach = r#"{"roleName":"deployer","policyArn":"arn:aws:iam::aws:policy/ReadOnlyAccess"}"#;
        assert_eq!(outside(&m, &change(T0 + 2000, iam, "AttachRolePolicy", attach)), None);
        let admin = r#"{"roleName":"Deployer","policyArn":"arn:aws:iam::aws:policy/AdministratorAccess"}"#;
        assert!(outside(&m, &change(T0 + 2000, iam, "AttachRolePolicy", admin)).is_some());
        // Another identity, a failed call, a time before any grant: none of this one's business.
        let bystander = r#"{"roleName":"bystander","policyName":"extra","policyDocument":"{}"}"#;
        assert_eq!(outside(&m, &change(T0 + MIN, iam, "PutRolePolicy", bystander)), None);
        let mut failed = change(T0 + MIN, iam, "PutRolePolicy", other);
        failed.status = Status::Failure;
        assert_eq!(outside(&m, &failed), None);
        assert_eq!(outside(&m, &change(T0 - HOUR, iam, "PutRolePolicy", other)), None);
        // Weeks after the last grant ended it is still an on-demand identity (within the horizon).
        assert!(outside(&m, &change(T0 + 30 * 24 * HOUR, iam, "PutRolePolicy", other)).is_some());
    }

    #[test]
    fn account_assignments_to_an_identity_center_user_outside_a_request_are_found() {
        let ic = RequestedIdentity::IdentityCenterUser { user_id: "u-123".into() };
        let ps = RequestedAccess::PermissionSet { name: "Admin".into(), account_id: "111122223333".into() };
        let m = fold(&[audit("r9", 2, AccessState::Active, ps, ic)]);
        let req = |account: &str| {
            format!(
                r#"{{"instanceArn":"arn:aws:sso:::instance/ssoins-1","targetId":"{account}","targetType":"AWS_ACCOUNT","permissionSetArn":"arn:aws:sso:::permissionSet/ssoins-1/ps-1","principalType":"USER","principalId":"u-123"}}"#
            )
        };
        let sso = "sso.amazonaws.com";
        assert_eq!(outside(&m, &change(T0 + 1000, sso, "CreateAccountAssignment", &req("111122223333"))), None);
        assert!(outside(&m, &change(T0 + 1000, sso, "CreateAccountAssignment", &req("444455556666"))).is_some());
        assert!(outside(&m, &change(T0 + 3 * HOUR, sso, "CreateAccountAssignment", &req("111122223333"))).is_some());
    }

    #[test]
    fn memory_is_bounded_and_event_time_forgets() {
        let limits = OnDemandLimits { max_grants: 3, ..OnDemandLimits::default() };
        let mut m = OnDemandGrants::new(limits);
        for i in 0..10i64 {
            let mut e = audit(&format!("r{i}"), 2, AccessState::Active, actions("s3:GetObject", "*"), role());
            e.expires_at = Some(EventTime(T0 + (i + 1) * HOUR));
            m.apply(&e);
        }
        assert_eq!(m.len(), 3);
        assert_eq!(m.counts.evicted, 7);
        let kept: Vec<&str> = m.grants().map(|g| g.request_id.as_str()).collect();
        assert_eq!(kept, ["r7", "r8", "r9"], "the ones that end last stay");
        // Event time past the end of r7 and r8 by the post-expiry window.
        m.prune(T0 + 9 * HOUR + 24 * HOUR + 1);
        assert_eq!(m.grants().map(|g| g.request_id.as_str()).collect::<Vec<_>>(), ["r9"]);
        // The end of input forgets nothing.
        m.prune(i64::MAX / 4);
        assert_eq!(m.len(), 1);
        // The identity is remembered after its grants are gone, until the horizon.
        m.prune(T0 + 11 * HOUR + 24 * HOUR);
        assert_eq!(m.len(), 0);
        assert_eq!(m.identities().count(), 1);
        m.prune(T0 + 10 * HOUR + 91 * 24 * HOUR);
        assert_eq!(m.identities().count(), 0);
        let (grants, identities) = m.take_changes();
        assert!(grants.iter().all(|(_, g)| g.is_none()) && identities.iter().all(|(_, i)| i.is_none()));
        assert_eq!(m.pending(), 0);
    }
}
