//! Findings: what each identity is granted against what it used, its PCI and status flags, the
//! per-account roll-up, and the recommendations an analyst acts on.
//!
//! Inputs are the evaluated grants ([`crate::policy::IdentityGrants`]) and the usage in state; the
//! as-of time is data (by default the latest event time), never the wall clock.

use std::collections::BTreeMap;

use grantwatch_state::StateRead;
use grantwatch_types::{
    AccountSummary, AccountsReport, ActionCounts, ActionsForm, BandCounts, Cloud, EventTime, IdentityFinding,
    IdentityKind, PciBand, StatusFlag, UnusedAccessKey,
};

use crate::catalog::{ActionSet, Catalog};
use crate::pci::{self, PCI_VERSION, PciInput};
use crate::policy::IdentityGrants;
use crate::usage::{IdentityUsage, identities_in_logs};

/// Knobs of the findings; defaults match the documentation.
#[derive(Debug, Clone)]
pub struct FindingsConfig {
    pub as_of: EventTime,
    pub lookback_days: u32,
    /// An active identity using less than this share of its granted actions is over-provisioned.
    pub over_provisioned_ratio: f64,
    /// Share of the catalog that, granted on every resource without condition, makes a super identity.
    pub super_identity_share: f64,
}

/// The default [`FindingsConfig::super_identity_share`]. AWS's PowerUserAccess (everything but IAM,
/// Organizations and Account: 98.7 % of the catalog's 20,455 actions) is above it, and so a super
/// identity: it reads, changes and deletes every resource of the account, even though it cannot
/// manage identities. Set 0.99 to keep it out (see `docs/pci.md`, status flags).
pub const SUPER_IDENTITY_SHARE: f64 = 0.95;

impl FindingsConfig {
    pub fn new(as_of: EventTime) -> Self {
        Self { as_of, lookback_days: 90, over_provisioned_ratio: 0.10, super_identity_share: SUPER_IDENTITY_SHARE }
    }
    pub fn window_start(&self) -> EventTime {
        self.as_of.minus_days(self.lookback_days)
    }
}

/// IAM actions that let an identity grant itself any permission: holding one of them on every resource
/// without condition makes an identity as powerful as an administrator.
pub const SELF_ESCALATION_ACTIONS: [&str; 14] = [
    "iam:AttachUserPolicy",
    "iam:PutUserPolicy",
    "iam:AttachRolePolicy",
    "iam:PutRolePolicy",
    "iam:AttachGroupPolicy",
    "iam:PutGroupPolicy",
    "iam:CreatePolicyVersion",
    // Azure: assign oneself any role, rewrite a role one holds, or take User Access Administrator at
    // the root.
    "Microsoft.Authorization/roleAssignments/write",
    "Microsoft.Authorization/roleDefinitions/write",
    "Microsoft.Authorization/elevateAccess/Action",
    // GCP: rewrite the IAM policy of the project or of any ancestor, or a custom role one holds.
    "resourcemanager.projects.setIamPolicy",
    "resourcemanager.folders.setIamPolicy",
    "resourcemanager.organizations.setIamPolicy",
    "iam.roles.update",
];

/// A super identity can do (nearly) everything, or can grant itself anything: it holds, on every resource
/// and without condition, at least `share` of the catalog, or one of [`SELF_ESCALATION_ACTIONS`].
pub fn is_super_identity(catalog: &Catalog, unconditional_unscoped: &ActionSet, share: f64) -> bool {
    if catalog.is_empty() {
        return false;
    }
    // The share is of the identity's own cloud: an Azure Owner holds every Azure operation, none of AWS's.
    let cloud = unconditional_unscoped.iter().next().map_or(Cloud::Aws, |id| catalog.cloud_of(id));
    let size = catalog.cloud_len(cloud);
    if size > 0 && unconditional_unscoped.len() as f64 >= share * size as f64 {
        return true;
    }
    SELF_ESCALATION_ACTIONS.iter().filter_map(|a| catalog.lookup(a)).any(|id| unconditional_unscoped.contains(id))
}

/// The numbers of an identity's finding, without the name lists: what a PCI update needs, cheaply.
#[derive(Debug, Clone)]
pub struct IdentityScore {
    /// Granted actions used in the lookback.
    pub used: ActionSet,
    /// Actions used in the lookback that the grants do not include (catalog spelling), sorted.
    pub used_not_granted: Vec<String>,
    pub pci: grantwatch_types::Pci,
    /// Any activity in the lookback.
    pub active: bool,
    pub events: u64,
    pub active_days: u32,
    pub status: Vec<StatusFlag>,
    pub unused_high_risk: usize,
}

/// Scores one identity: used vs granted in the lookback, PCI, status flags.
pub fn identity_score(
    catalog: &Catalog,
    cfg: &FindingsConfig,
    grants: &IdentityGrants,
    usage: &IdentityUsage,
) -> IdentityScore {
    let start = cfg.window_start();
    let in_window =
        |span: &grantwatch_state::SeenSpan| span.last_ms >= start.millis() && span.first_ms <= cfg.as_of.millis();
    let mut used = catalog.empty_set();
    let mut used_not_granted = Vec::new();
    for (name, span) in &usage.actions {
        if !in_window(span) {
            continue;
        }
        match catalog.lookup(name) {
            Some(id) if grants.granted.contains(id) => used.insert(id),
            // A group's usage is its members' usage: what they use beyond the group's grants comes
            // from their own policies and says nothing about the group.
            _ if grants.kind == IdentityKind::Group => {}
            _ => used_not_granted.push(name.clone()),
        }
    }
    used_not_granted.sort_by_key(|n| n.to_ascii_lowercase());
    // Actions that need no permission are granted by nothing and removable by nothing: they are
    // neither unused nor part of the creep.
    let granted = removable(catalog, &grants.granted);
    let mut unused = granted.clone();
    unused.difference_with(&used);

    let reachable = removable(catalog, &grants.reachable);
    let pci = pci::score(
        catalog,
        &PciInput {
            granted: &granted,
            unscoped: &grants.unscoped,
            conditional: &grants.conditional,
            used: &used,
            reachable: &reachable,
        },
    );
    let active = usage.activity.as_ref().is_some_and(in_window);
    let (events, active_days) = usage.events_between(start, cfg.as_of);

    let mut status = Vec::new();
    if !active && grants.kind != IdentityKind::Group {
        status.push(StatusFlag::Inactive);
    }
    let granted_n = granted.len();
    // Root holds everything by definition; "over-provisioned" would say nothing about it.
    if active
        && grants.kind != IdentityKind::Root
        && granted_n > 0
        && (used.len() as f64) < cfg.over_provisioned_ratio * granted_n as f64
    {
        status.push(StatusFlag::OverProvisioned);
    }
    let mut solid = grants.unscoped.clone();
    solid.difference_with(&grants.conditional);
    // An identity that is, or reaches without condition, an administrator is as powerful as one.
    let escalates = grants.escalation.as_ref().is_some_and(|e| !e.conditional);
    if grants.kind == IdentityKind::Root || escalates || is_super_identity(catalog, &solid, cfg.super_identity_share) {
        status.push(StatusFlag::SuperIdentity);
    }
    if grants.escalation.as_ref().is_some_and(|e| !e.path.is_empty()) {
        status.push(StatusFlag::EscalationPath);
    }
    let unused_high_risk = unused.iter().filter(|&id| catalog.is_high_risk(id)).count();
    IdentityScore { used, used_not_granted, pci, active, events, active_days, status, unused_high_risk }
}

/// The exact list of a [`ActionsForm::Compact`] one: each entry expanded against the catalog,
/// sorted as the catalog sorts.
pub fn expand_actions(catalog: &Catalog, list: &[String]) -> Vec<String> {
    let mut set = catalog.empty_set();
    for entry in list {
        set.union_with(&catalog.expand_compact(entry));
    }
    set.names(catalog)
}

/// `granted` without the actions that need no permission ([`Catalog::permissionless`]).
pub fn removable(catalog: &Catalog, granted: &ActionSet) -> ActionSet {
    let mut out = granted.clone();
    out.difference_with(catalog.permissionless());
    out
}

/// Computes the finding of one identity, its action lists in [`ActionsForm::Exact`] form.
pub fn identity_finding(
    catalog: &Catalog,
    cfg: &FindingsConfig,
    grants: &IdentityGrants,
    usage: &IdentityUsage,
) -> IdentityFinding {
    identity_finding_as(catalog, cfg, grants, usage, ActionsForm::Exact)
}

/// Computes the finding of one identity, its action lists in the form asked for.
pub fn identity_finding_as(
    catalog: &Catalog,
    cfg: &FindingsConfig,
    grants: &IdentityGrants,
    usage: &IdentityUsage,
    form: ActionsForm,
) -> IdentityFinding {
    let names = |set: &ActionSet| match form {
        ActionsForm::Exact => set.names(catalog),
        ActionsForm::Compact => catalog.compact_names(set),
    };
    let start = cfg.window_start();
    let in_window =
        |span: &grantwatch_state::SeenSpan| span.last_ms >= start.millis() && span.first_ms <= cfg.as_of.millis();
    let IdentityScore {
        used,
        used_not_granted: used_names_not_granted,
        pci,
        active,
        events,
        active_days,
        status,
        unused_high_risk,
    } = identity_score(catalog, cfg, grants, usage);
    let granted = removable(catalog, &grants.granted);
    let mut unused = granted.clone();
    unused.difference_with(&used);
    let granted_n = granted.len();

    let unused_access_keys: Vec<UnusedAccessKey> = grants
        .access_keys
        .iter()
        .filter(|k| k.active)
        .filter_map(|k| {
            let last = usage.access_keys.iter().find(|(id, _)| *id == k.access_key_id).map(|(_, s)| *s);
            let used_recently = last.as_ref().is_some_and(in_window);
            (!used_recently).then(|| UnusedAccessKey {
                access_key_id: k.access_key_id.clone(),
                created: k.created,
                last_used: last.map(|s| EventTime(s.last_ms)),
            })
        })
        .collect();

    let mut sessions: Vec<String> =
        usage.sessions.iter().filter(|(_, s)| in_window(s)).map(|(n, _)| n.clone()).collect();
    sessions.sort();

    let mut recommendations = Vec::new();
    if status.contains(&StatusFlag::Inactive) && granted_n > 0 {
        recommendations
            .push(format!("Inactive for {} days: revoke its permissions or remove the identity.", cfg.lookback_days));
    }
    if status.contains(&StatusFlag::OverProvisioned) {
        recommendations.push(format!(
            "Over-provisioned: uses {} of {} granted actions; keep only the permissions it uses.",
            used.len(),
            granted_n
        ));
    } else if active && unused_high_risk > 0 {
        recommendations
            .push(format!("Remove {unused_high_risk} high-risk actions unused for {} days.", cfg.lookback_days));
    }
    if status.contains(&StatusFlag::SuperIdentity) {
        recommendations.push("Super identity: review who needs it and scope it down.".to_string());
    }
    if let Some(e) = grants.escalation.as_deref().filter(|e| !e.path.is_empty()) {
        let first = e.path.first().map(|s| format!("{} ({})", s.kind, s.actions.join(", "))).unwrap_or_default();
        recommendations.push(format!(
            "Can become an administrator in {} step(s), starting with {first}: remove that step.",
            e.path.len()
        ));
    }
    if !unused_access_keys.is_empty() {
        recommendations.push(format!(
            "Deactivate {} access key(s) unused for {} days.",
            unused_access_keys.len(),
            cfg.lookback_days
        ));
    }

    IdentityFinding {
        arn: grants.arn.clone(),
        account: grants.account.clone(),
        cloud: grants.cloud,
        human: grants.human.clone(),
        kind: grants.kind,
        name: grants.name.clone(),
        granted_actions: names(&grants.granted),
        conditional_actions: names(&grants.conditional),
        used_actions: names(&used),
        unused_actions: names(&unused),
        used_not_granted: used_names_not_granted,
        unused_high_risk,
        pci,
        status,
        last_activity: usage.activity.map(|s| EventTime(s.last_ms)),
        events_in_lookback: events,
        active_days,
        unused_access_keys,
        session_names: sessions,
        recommendations,
        actions_form: form,
        action_counts: Some(ActionCounts {
            granted: grants.granted.len(),
            conditional: grants.conditional.len(),
            used: used.len(),
            unused: unused.len(),
        }),
        escalation: grants.escalation.as_deref().cloned(),
    }
}

/// An identity to report, with its usage.
pub type Subject<'g> = (&'g IdentityGrants, IdentityUsage);

/// The identities to report, sorted by ARN, each with its usage read from `state`: every identity of
/// the snapshot, plus identities the logs name that no snapshot holds (the root user, roles and users
/// deleted since): those are granted what grantwatch can know — everything for root, nothing
/// otherwise — and reported, not dropped. Callers from outside are not identities of the
/// organization and are left out: anonymous callers and whole accounts (`ANONYMOUS_PRINCIPAL`,
/// `AWSAccount`), and, when snapshots were given, principals of accounts no snapshot covers.
///
/// They are handed to `emit` in batches of at most `batch`, so a large organization is never held in
/// memory whole (an administrator's finding alone lists 20,000 actions), and [`identity_finding`],
/// which is pure, can run on every core over a batch.
pub fn for_each_subject_batch(
    catalog: &Catalog,
    grants: &[IdentityGrants],
    state: &dyn StateRead,
    batch: usize,
    emit: &mut dyn FnMut(&[Subject<'_>]),
) -> Result<(), grantwatch_state::StateError> {
    for_each_subject_batch_capped(catalog, grants, state, batch, &|_| {}, emit)
}

/// [`for_each_subject_batch`], with `cap` applied to the identities only the logs name (a member
/// account's root user is granted everything but what the Organizations policies above it take away:
/// [`crate::org::Organization::apply`]).
pub fn for_each_subject_batch_capped(
    catalog: &Catalog,
    grants: &[IdentityGrants],
    state: &dyn StateRead,
    batch: usize,
    cap: &dyn Fn(&mut IdentityGrants),
    emit: &mut dyn FnMut(&[Subject<'_>]),
) -> Result<(), grantwatch_state::StateError> {
    let known: rustc_hash::FxHashSet<&str> = grants.iter().map(|g| g.arn.as_str()).collect();
    let accounts: rustc_hash::FxHashSet<&str> = grants.iter().map(|g| g.account.as_str()).collect();
    let mut from_logs: Vec<IdentityGrants> = Vec::new();
    for (arn, meta) in identities_in_logs(state)? {
        // AWS services acting on their own behalf hold no entitlements of the customer's: their events
        // are counted in the ingest report, but they are not identities to right-size. Nor are callers
        // from outside the organization.
        let foreign = !accounts.is_empty() && !accounts.contains(meta.account.as_str());
        if known.contains(arn.as_str())
            || matches!(meta.kind, IdentityKind::Service | IdentityKind::External)
            || foreign
        {
            continue;
        }
        let mut g = IdentityGrants::unknown(catalog, &arn, &meta.account, meta.kind, &meta.name);
        if meta.kind == IdentityKind::Root {
            g.granted = catalog.full_set();
            g.unscoped = catalog.full_set();
        }
        cap(&mut g);
        from_logs.push(g);
    }
    let group_usage = group_usage(grants, state)?;
    let mut all: Vec<&IdentityGrants> = grants.iter().chain(from_logs.iter()).collect();
    all.sort_by(|a, b| a.arn.cmp(&b.arn));
    let mut subjects = Vec::with_capacity(batch.min(all.len()));
    for chunk in all.chunks(batch.max(1)) {
        subjects.clear();
        for g in chunk {
            let usage = if g.kind == IdentityKind::Group {
                group_usage.get(&(g.account.as_str(), g.name.as_str())).cloned().unwrap_or_default()
            } else {
                IdentityUsage::load(state, &g.arn, false)?
            };
            subjects.push((*g, usage));
        }
        emit(&subjects);
    }
    Ok(())
}

/// The members' activity span and per-action spans, merged.
type MemberUsage = (Option<grantwatch_state::SeenSpan>, BTreeMap<String, grantwatch_state::SeenSpan>);

/// A group acts only through its members: its usage is the union of its member users' usage, so a
/// group whose permissions no member uses shows them as unused.
fn group_usage<'g>(
    grants: &'g [IdentityGrants],
    state: &dyn StateRead,
) -> Result<rustc_hash::FxHashMap<(&'g str, &'g str), IdentityUsage>, grantwatch_state::StateError> {
    let mut merged: rustc_hash::FxHashMap<(&str, &str), MemberUsage> = rustc_hash::FxHashMap::default();
    for user in grants.iter().filter(|g| g.kind == IdentityKind::User && !g.groups.is_empty()) {
        let usage = IdentityUsage::load(state, &user.arn, false)?;
        for group in &user.groups {
            let (activity, actions) = merged.entry((user.account.as_str(), group.as_str())).or_default();
            if let Some(a) = usage.activity {
                *activity = Some(activity.map_or(a, |x| x.widen(a)));
            }
            for (name, span) in &usage.actions {
                actions.entry(name.clone()).and_modify(|s| *s = s.widen(*span)).or_insert(*span);
            }
        }
    }
    Ok(merged
        .into_iter()
        .map(|(k, (activity, actions))| {
            (k, IdentityUsage { activity, actions: actions.into_iter().collect(), ..IdentityUsage::default() })
        })
        .collect())
}

#[derive(Default)]
struct AccountAcc {
    identities: usize,
    cloud: Cloud,
    by_kind: BTreeMap<String, usize>,
    dist: BandCounts,
    pci_sum: u64,
    scored: u64,
    inactive: usize,
    over_provisioned: usize,
    super_identities: usize,
    unused_access_keys: usize,
    granted_actions: usize,
    unused_actions: usize,
}

/// Rolls findings up per account, one finding at a time.
#[derive(Default)]
pub struct AccountRollup {
    /// Keyed by (cloud, account): an AWS account, an Azure subscription, a GCP project.
    accounts: BTreeMap<(Cloud, String), AccountAcc>,
}

impl AccountRollup {
    pub fn add(&mut self, f: &IdentityFinding) {
        let a = self.accounts.entry((f.cloud, f.account.clone())).or_default();
        a.cloud = f.cloud;
        a.identities += 1;
        *a.by_kind.entry(f.kind.as_str().to_string()).or_insert(0) += 1;
        let flag = |x| usize::from(f.status.contains(&x));
        a.inactive += flag(StatusFlag::Inactive);
        a.over_provisioned += flag(StatusFlag::OverProvisioned);
        a.super_identities += flag(StatusFlag::SuperIdentity);
        a.unused_access_keys += f.unused_access_keys.len();
        // The lists may be compact: count the actions they stand for.
        let (granted, unused) = match f.action_counts {
            Some(c) => (c.granted, c.unused),
            None => (f.granted_actions.len(), f.unused_actions.len()),
        };
        a.granted_actions += granted;
        a.unused_actions += unused;
        // The account's PCI is the mean over identities that act: users, roles and root. Groups hold
        // permissions only through their members, who are scored themselves.
        if matches!(f.kind, IdentityKind::User | IdentityKind::Role | IdentityKind::Root | IdentityKind::ServiceAccount)
        {
            a.pci_sum += u64::from(f.pci.score);
            a.scored += 1;
            match f.pci.band {
                PciBand::Low => a.dist.low += 1,
                PciBand::Medium => a.dist.medium += 1,
                PciBand::High => a.dist.high += 1,
            }
        }
    }

    pub fn finish(self, cfg: &FindingsConfig) -> AccountsReport {
        let accounts = self
            .accounts
            .into_iter()
            .map(|((_, account), a)| {
                let pci = if a.scored > 0 { ((a.pci_sum as f64) / (a.scored as f64)).round() as u8 } else { 0 };
                AccountSummary {
                    account,
                    cloud: a.cloud,
                    pci,
                    pci_band: PciBand::of(pci),
                    pci_version: PCI_VERSION.to_string(),
                    pci_distribution: a.dist,
                    identities: a.identities,
                    by_kind: a.by_kind,
                    inactive: a.inactive,
                    over_provisioned: a.over_provisioned,
                    super_identities: a.super_identities,
                    unused_access_keys: a.unused_access_keys,
                    granted_actions: a.granted_actions,
                    unused_actions: a.unused_actions,
                }
            })
            .collect();
        AccountsReport {
            as_of: cfg.as_of,
            lookback_days: cfg.lookback_days,
            pci_version: PCI_VERSION.to_string(),
            accounts,
        }
    }
}

#[cfg(test)]
mod outside_caller_tests {
    use super::*;
    use crate::stage::{Cx, Stage};
    use crate::usage::UsageStage;
    use grantwatch_state::{MemStore, StateStore, WriteBatch};

    #[test]
    fn callers_from_outside_the_organization_are_not_identities() {
        let catalog = Catalog::aws().unwrap();
        let store = MemStore::new();
        let mut usage = UsageStage::new(&store).unwrap();
        let callers = [
            ("arn:aws:iam::111122223333:user/alice", IdentityKind::User, "111122223333"),
            ("arn:aws:iam::111122223333:role/deleted-since", IdentityKind::Role, "111122223333"),
            ("arn:aws:iam::ANONYMOUS_PRINCIPAL:root", IdentityKind::External, "ANONYMOUS_PRINCIPAL"),
            ("arn:aws:iam::999988887777:role/partner", IdentityKind::Role, "999988887777"),
        ];
        for (i, (arn, kind, account)) in callers.iter().enumerate() {
            let mut e = crate::testing::event(&format!("e{i}"), EventTime(1_700_000_000_000 + i as i64));
            e.actor.uid = arn.to_string();
            e.actor.kind = *kind;
            e.actor.account_uid = Some(account.to_string());
            usage.process(&e, &mut Cx { state: &store, out: &mut Vec::new() }).unwrap();
        }
        let mut batch = WriteBatch::new();
        usage.snapshot(&mut batch).unwrap();
        store.write(batch).unwrap();
        let reported = |grants: &[IdentityGrants]| {
            let mut arns = Vec::new();
            for_each_subject_batch(&catalog, grants, &store, 10, &mut |subjects| {
                arns.extend(subjects.iter().map(|(g, _)| g.arn.clone()));
            })
            .unwrap();
            arns
        };
        // A snapshot of account 111122223333: its identities, and the one the logs name that it no
        // longer holds; not the anonymous caller, not the partner's role.
        let alice = IdentityGrants::unknown(&catalog, callers[0].0, "111122223333", IdentityKind::User, "alice");
        assert_eq!(reported(&[alice]), [callers[1].0, callers[0].0]);
        // Without snapshots nothing says which accounts are the organization's: only the anonymous
        // caller is left out.
        assert_eq!(reported(&[]), [callers[1].0, callers[0].0, callers[3].0]);
    }

    /// `sts:*` grants `sts:GetCallerIdentity` and `sts:GetSessionToken`, which need no permission:
    /// an identity that calls them (they record no action used) must not see them as unused grants,
    /// nor carry them in its PCI.
    #[test]
    fn actions_that_need_no_permission_are_never_unused() {
        let catalog = Catalog::aws().unwrap();
        let arn = "arn:aws:iam::111122223333:user/ci";
        let mut grants = IdentityGrants::unknown(&catalog, arn, "111122223333", IdentityKind::User, "ci");
        grants.granted = catalog.expand("sts:*");
        grants.unscoped = grants.granted.clone();
        let as_of = EventTime(1_700_000_000_000);
        let span = grantwatch_state::SeenSpan { first_ms: as_of.millis() - 1000, last_ms: as_of.millis() - 1000 };
        let usage = IdentityUsage {
            activity: Some(span),
            actions: vec![("sts:AssumeRole".to_string(), span)],
            ..IdentityUsage::default()
        };
        let cfg = FindingsConfig::new(as_of);
        let f = identity_finding(&catalog, &cfg, &grants, &usage);
        for free in ["sts:GetCallerIdentity", "sts:GetSessionToken"] {
            assert!(f.granted_actions.iter().any(|a| a == free), "the policy does grant {free}");
            assert!(!f.unused_actions.iter().any(|a| a == free), "{free} listed unused");
        }
        assert!(f.unused_actions.iter().any(|a| a == "sts:GetAccessKeyInfo"), "a real permission stays unused");
        assert_eq!(f.used_actions, ["sts:AssumeRole"]);
        // The PCI is that of the same grant without them.
        let mut without = grants.clone();
        without.granted.difference_with(catalog.permissionless());
        without.unscoped = without.granted.clone();
        assert_eq!(f.pci, identity_finding(&catalog, &cfg, &without, &usage).pci);
        assert_eq!(f.granted_actions.len(), f.used_actions.len() + f.unused_actions.len() + 2);
    }

    /// PowerUserAccess (everything but IAM, Organizations and Account) is a super identity at the
    /// default share and not at 0.99.
    #[test]
    fn the_super_identity_share_decides_power_users() {
        let catalog = Catalog::aws().unwrap();
        let arn = "arn:aws:iam::111122223333:role/PowerUser";
        let mut grants = IdentityGrants::unknown(&catalog, arn, "111122223333", IdentityKind::Role, "PowerUser");
        let mut power = catalog.full_set();
        for prefix in ["iam", "organizations", "account"] {
            power.difference_with(&catalog.expand(&format!("{prefix}:*")));
        }
        let share = power.len() as f64 / catalog.len() as f64;
        assert!(share > 0.98 && share < 0.99, "{share}");
        grants.granted = power.clone();
        grants.unscoped = power;
        let usage = IdentityUsage::default();
        let mut cfg = FindingsConfig::new(EventTime(1_700_000_000_000));
        assert!(identity_score(&catalog, &cfg, &grants, &usage).status.contains(&StatusFlag::SuperIdentity));
        cfg.super_identity_share = 0.99;
        assert!(!identity_score(&catalog, &cfg, &grants, &usage).status.contains(&StatusFlag::SuperIdentity));
    }

    /// The compact form says the same lists in a handful of entries, and expands back to them.
    #[test]
    fn compact_action_lists_expand_to_the_exact_ones() {
        let catalog = Catalog::aws().unwrap();
        let arn = "arn:aws:iam::111122223333:role/Admin";
        let mut grants = IdentityGrants::unknown(&catalog, arn, "111122223333", IdentityKind::Role, "Admin");
        grants.granted = catalog.full_set();
        grants.unscoped = grants.granted.clone();
        grants.conditional = catalog.expand("s3:Get*");
        let as_of = EventTime(1_700_000_000_000);
        let span = grantwatch_state::SeenSpan { first_ms: as_of.millis() - 1000, last_ms: as_of.millis() - 1000 };
        let used = ["s3:GetObject", "ec2:DescribeInstances", "sts:AssumeRole"];
        let usage = IdentityUsage {
            activity: Some(span),
            actions: used.iter().map(|a| (a.to_string(), span)).collect(),
            ..IdentityUsage::default()
        };
        let cfg = FindingsConfig::new(as_of);
        let exact = identity_finding(&catalog, &cfg, &grants, &usage);
        let compact = identity_finding_as(&catalog, &cfg, &grants, &usage, ActionsForm::Compact);
        assert_eq!(compact.actions_form, ActionsForm::Compact);
        assert_eq!(compact.granted_actions, ["*"]);
        assert_eq!(compact.used_actions, ["ec2:DescribeInstances", "s3:GetObject", "sts:AssumeRole"]);
        // Unused: whole services but the three touched ones, and those three action by action.
        assert!(compact.unused_actions.iter().any(|a| a == "iam:*"));
        assert!(!compact.unused_actions.iter().any(|a| a == "s3:*" || a == "s3:GetObject"));
        assert!(compact.unused_actions.len() * 5 < exact.unused_actions.len(), "{}", compact.unused_actions.len());
        for (c, e) in [
            (&compact.granted_actions, &exact.granted_actions),
            (&compact.conditional_actions, &exact.conditional_actions),
            (&compact.used_actions, &exact.used_actions),
            (&compact.unused_actions, &exact.unused_actions),
        ] {
            assert_eq!(&expand_actions(&catalog, c), e);
        }
        let counts = exact.action_counts.unwrap();
        assert_eq!((counts.granted, counts.used), (catalog.len(), 3));
    }
}
