//! Effective permissions per identity, from an [`IamSnapshot`] and the action [`Catalog`].
//!
//! Rules (the acceptance rules of grantwatch; tests in `tests/policy_cases.rs` and `tests/policy_props.rs`):
//!
//! * **Contributing policies.** An identity's inline and attached managed policies; a user also gets the inline
//!   and attached managed policies of every group in its `GroupList` (same account). A group is reported as
//!   its own identity with its own policies. An attached AWS managed policy missing from the snapshot's
//!   `Policies` falls back to the vendored copy (`data/aws/managed-policies.jsonl.gz`, by ARN, then by name);
//!   a policy missing everywhere grants nothing and yields a warning.
//! * **Actions.** `Action` patterns are expanded with [`Catalog::expand`]; `NotAction` means every catalog
//!   action not matched by any of its patterns.
//! * **Resources.** Each `Resource` pattern is matched against the action's ARN templates
//!   ([`Catalog::resource_arns`]; see `arn_match` for the matcher). An Allow grants an action when some pattern
//!   could match some ARN of some template of the action; it is *unscoped* when every template is covered by
//!   one of the patterns. Actions whose only template is `*` (no resource type) need a pattern matching the
//!   string `*`. When an action lists `*` next to real templates, the `*` is ignored. Matching splits ARNs at
//!   their first five colons and ignores the partition; template variables match anything, except a variable
//!   that some template of the same service follows with `/` (`${BucketName}`), which never holds a `/`: so
//!   `arn:aws:s3:::b/*` grants `s3:GetObject` but not `s3:ListBucket`. Coverage is checked conservatively
//!   (a pattern with a policy variable such as `${aws:username}` never covers; coverage by a union of
//!   patterns that each cover only part of a template is not detected).
//!   `NotResource` (approximation): if no listed pattern intersects any template of the action it covers
//!   everything (unscoped); if the listed patterns cover every template it covers nothing; otherwise it is
//!   partial (granted, scoped; its patterns are reported prefixed with `!`).
//! * **Conditions.** An Allow with a non-empty `Condition` grants, but the action is *conditional* unless an
//!   unconditional Allow also grants it.
//! * **Deny.** Removes an action only when the Deny is unconditional and covers every template of the action
//!   (as above). Conditional or resource-scoped Denies remove nothing.
//! * **Permissions boundary** (users and roles, not groups). The boundary policy is evaluated with the same
//!   rules; effective grants = identity grants ∩ boundary grants, minus Denies of either. An action is
//!   conditional if it is conditional on either side and unscoped only if unscoped on both. Approximations:
//!   resource scopes are not intersected (identity on bucket A, boundary on bucket B still counts as granted);
//!   the reported patterns are the identity's, or the boundary's when the identity's grant is unscoped.
//!   A boundary policy found nowhere is ignored (with a warning) rather than granting nothing.
//! * **Roles.** `sso_role` = name starts with `AWSReservedSSO_`; `service_linked` = path starts with
//!   `/aws-service-role/`; `trusted_accounts` = accounts other than the role's own in the trust policy's
//!   Allow statements' `Principal.AWS` (account ids or ARNs), `*` for anyone.
//!
//! Cost: each distinct policy document (managed policies by ARN, inline ones by content) is evaluated once into
//! bitsets; identities then only union bitsets. Templates are tokenized once per [`Evaluator`].

mod arn_match;

use std::sync::Arc;

use fixedbitset::FixedBitSet;
use grantwatch_types::{Cloud, EventTime, IdentityKind};
use rustc_hash::FxHashMap;

use crate::catalog::{ActionId, ActionSet, Catalog};
use crate::iam::{
    AccessKey, Effect, IamSnapshot, InlinePolicy, PolicyDocument, Statement, is_aws_managed, parse_policy_document,
    principal_account,
};
use arn_match::{Pattern, Template};

const MANAGED_POLICIES_GZ: &[u8] = include_bytes!("../../../data/aws/managed-policies.jsonl.gz");

/// The effective permissions of one identity.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentityGrants {
    /// The identity's uid: an AWS ARN, or the uid `docs/multi-cloud.md` gives other clouds' identities.
    pub arn: String,
    /// Its cloud: every action in its sets belongs to it.
    pub cloud: Cloud,
    pub account: String,
    pub kind: IdentityKind,
    pub name: String,
    /// Granted on at least one resource the action can apply to.
    pub granted: ActionSet,
    /// The subset of `granted` granted only by Allows carrying a Condition.
    pub conditional: ActionSet,
    /// The subset of `granted` granted on every resource the action can apply to.
    pub unscoped: ActionSet,
    /// For granted actions that are not unscoped: the `Resource` patterns granting them (`!`-prefixed for
    /// `NotResource`), sorted by action id. Pattern lists are shared (`Arc`) between actions and identities.
    pub resource_patterns: Vec<(ActionId, Arc<[String]>)>,
    /// For users: the groups they belong to.
    pub groups: Vec<String>,
    pub created: Option<EventTime>,
    /// Roles: `RoleLastUsed.LastUsedDate`.
    pub last_used: Option<EventTime>,
    pub service_linked: bool,
    pub sso_role: bool,
    /// Roles: other accounts trusted by the trust policy, `*` for anyone. Sorted.
    pub trusted_accounts: Vec<String>,
    /// Users: their access keys.
    pub access_keys: Vec<AccessKey>,
    pub boundary: Option<String>,
    /// Problems met while evaluating this identity (missing policies, unknown groups).
    pub warnings: Vec<String>,
    /// Actions it does not hold but can obtain through the escalation graph (acting as identities it
    /// can reach; the whole catalog when it reaches an administrator). Empty until
    /// [`crate::escalation::apply`] fills it.
    pub reachable: ActionSet,
    /// How it is, or can become, an administrator; set by [`crate::escalation::apply`].
    pub escalation: Option<Arc<grantwatch_types::Escalation>>,
    /// The human behind it, when linked (`crate::humans`).
    pub human: Option<String>,
    /// The addresses it is known by (Entra UPN and mail, a GCP member's email, an IAM user's `email`
    /// tag), lower-cased: what links it to a human.
    pub emails: Vec<String>,
}

impl IdentityGrants {
    /// An identity known only from elsewhere (e.g. the logs): nothing granted, no metadata.
    pub fn unknown(catalog: &Catalog, arn: &str, account: &str, kind: IdentityKind, name: &str) -> IdentityGrants {
        IdentityGrants {
            arn: arn.to_string(),
            cloud: Cloud::of_uid(arn),
            account: account.to_string(),
            kind,
            name: name.to_string(),
            granted: catalog.empty_set(),
            conditional: catalog.empty_set(),
            unscoped: catalog.empty_set(),
            resource_patterns: Vec::new(),
            groups: Vec::new(),
            created: None,
            last_used: None,
            service_linked: false,
            sso_role: false,
            trusted_accounts: Vec::new(),
            access_keys: Vec::new(),
            boundary: None,
            warnings: Vec::new(),
            reachable: catalog.empty_set(),
            escalation: None,
            human: None,
            emails: Vec::new(),
        }
    }
}

impl IdentityGrants {
    /// The record published on the entitlements topic.
    pub fn to_record(&self, catalog: &Catalog) -> grantwatch_types::EntitlementRecord {
        grantwatch_types::EntitlementRecord {
            arn: self.arn.clone(),
            cloud: self.cloud,
            human: self.human.clone(),
            emails: self.emails.clone(),
            account: self.account.clone(),
            kind: self.kind,
            name: self.name.clone(),
            granted: self.granted.names(catalog),
            conditional: self.conditional.names(catalog),
            unscoped: self.unscoped.names(catalog),
            groups: self.groups.clone(),
            access_keys: self
                .access_keys
                .iter()
                .map(|k| grantwatch_types::AccessKeyRecord {
                    access_key_id: k.access_key_id.clone(),
                    active: k.active,
                    created: k.created,
                })
                .collect(),
            as_of: None,
            reachable: if self.reachable.is_empty() { Vec::new() } else { catalog.compact_names(&self.reachable) },
            escalation: self.escalation.as_deref().cloned(),
        }
    }

    /// Back from a published record; action names the catalog does not know are dropped (the record
    /// may come from a newer catalog).
    pub fn from_record(catalog: &Catalog, r: &grantwatch_types::EntitlementRecord) -> IdentityGrants {
        let set = |names: &[String]| {
            let mut s = catalog.empty_set();
            for id in names.iter().filter_map(|n| catalog.lookup(n)) {
                s.insert(id);
            }
            s
        };
        let mut g = IdentityGrants::unknown(catalog, &r.arn, &r.account, r.kind, &r.name);
        g.cloud = r.cloud;
        g.human = r.human.clone();
        g.emails = r.emails.clone();
        g.granted = set(&r.granted);
        g.conditional = set(&r.conditional);
        g.unscoped = set(&r.unscoped);
        g.groups = r.groups.clone();
        for entry in &r.reachable {
            g.reachable.union_with(&catalog.expand_compact(entry));
        }
        g.escalation = r.escalation.clone().map(Arc::new);
        g.access_keys = r
            .access_keys
            .iter()
            .map(|k| crate::iam::AccessKey {
                user_name: r.name.clone(),
                access_key_id: k.access_key_id.clone(),
                status: if k.active { "Active" } else { "Inactive" }.to_string(),
                active: k.active,
                created: k.created,
                account: Some(r.account.clone()),
            })
            .collect();
        g
    }
}

/// The result of evaluating a set of policies (no identity attached).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Grants {
    pub granted: ActionSet,
    pub conditional: ActionSet,
    pub unscoped: ActionSet,
    pub resource_patterns: Vec<(ActionId, Arc<[String]>)>,
}

/// [`evaluate_with_warnings`]'s result.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub identities: Vec<IdentityGrants>,
    /// Snapshot-level warnings: parse warnings, unmatched access keys. Per-identity ones are on the identity.
    pub warnings: Vec<String>,
}

/// Evaluates every user, role and group of the snapshot, sorted by ARN.
pub fn evaluate(snapshot: &IamSnapshot, catalog: &Catalog) -> Vec<IdentityGrants> {
    evaluate_with_warnings(snapshot, catalog).identities
}

/// [`evaluate`], also returning snapshot-level warnings.
pub fn evaluate_with_warnings(snapshot: &IamSnapshot, catalog: &Catalog) -> Evaluation {
    let mut ev = Evaluator::new(catalog);
    let (mut keys, mut warnings) = snapshot.resolve_access_keys();
    warnings.splice(0..0, snapshot.warnings.iter().cloned());
    let mut out = Vec::with_capacity(snapshot.users.len() + snapshot.roles.len() + snapshot.groups.len());

    let mut group_index: FxHashMap<(&str, &str), usize> = FxHashMap::default();
    for (i, g) in snapshot.groups.iter().enumerate() {
        group_index.insert((g.account.as_str(), g.name.as_str()), i);
    }

    for (i, u) in snapshot.users.iter().enumerate() {
        let mut w = Vec::new();
        let mut ids = ev.policy_ids(snapshot, &u.inline, &u.attached, &mut w);
        for gname in &u.groups {
            match group_index.get(&(u.account.as_str(), gname.as_str())).and_then(|&gi| snapshot.groups.get(gi)) {
                Some(g) => ids.extend(ev.policy_ids(snapshot, &g.inline, &g.attached, &mut w)),
                None => w.push(format!("{}: group {gname:?} is not in the snapshot", u.arn)),
            }
        }
        let boundary = u.boundary.as_deref().and_then(|b| ev.boundary_id(snapshot, b, &u.arn, &mut w));
        let g = ev.combine(&ids, boundary);
        out.push(IdentityGrants {
            cloud: Cloud::Aws,
            arn: u.arn.clone(),
            account: u.account.clone(),
            kind: IdentityKind::User,
            name: u.name.clone(),
            granted: g.granted,
            conditional: g.conditional,
            unscoped: g.unscoped,
            resource_patterns: g.resource_patterns,
            groups: u.groups.clone(),
            created: u.created,
            last_used: None,
            service_linked: false,
            sso_role: false,
            trusted_accounts: Vec::new(),
            access_keys: keys.get_mut(i).map(std::mem::take).unwrap_or_default(),
            boundary: u.boundary.clone(),
            warnings: w,
            reachable: catalog.empty_set(),
            escalation: None,
            human: None,
            emails: u.emails.clone(),
        });
    }

    for r in &snapshot.roles {
        let mut w = Vec::new();
        let ids = ev.policy_ids(snapshot, &r.inline, &r.attached, &mut w);
        let boundary = r.boundary.as_deref().and_then(|b| ev.boundary_id(snapshot, b, &r.arn, &mut w));
        let g = ev.combine(&ids, boundary);
        out.push(IdentityGrants {
            cloud: Cloud::Aws,
            arn: r.arn.clone(),
            account: r.account.clone(),
            kind: IdentityKind::Role,
            name: r.name.clone(),
            granted: g.granted,
            conditional: g.conditional,
            unscoped: g.unscoped,
            resource_patterns: g.resource_patterns,
            groups: Vec::new(),
            created: r.created,
            last_used: r.last_used,
            service_linked: r.path.starts_with("/aws-service-role/"),
            sso_role: r.name.starts_with("AWSReservedSSO_"),
            trusted_accounts: r.trust_policy.as_ref().map(|t| trusted_accounts(t, &r.account)).unwrap_or_default(),
            access_keys: Vec::new(),
            boundary: r.boundary.clone(),
            warnings: w,
            reachable: catalog.empty_set(),
            escalation: None,
            human: None,
            emails: Vec::new(),
        });
    }

    for gr in &snapshot.groups {
        let mut w = Vec::new();
        let ids = ev.policy_ids(snapshot, &gr.inline, &gr.attached, &mut w);
        let g = ev.combine(&ids, None);
        out.push(IdentityGrants {
            cloud: Cloud::Aws,
            arn: gr.arn.clone(),
            account: gr.account.clone(),
            kind: IdentityKind::Group,
            name: gr.name.clone(),
            granted: g.granted,
            conditional: g.conditional,
            unscoped: g.unscoped,
            resource_patterns: g.resource_patterns,
            groups: Vec::new(),
            created: gr.created,
            last_used: None,
            service_linked: false,
            sso_role: false,
            trusted_accounts: Vec::new(),
            access_keys: Vec::new(),
            boundary: None,
            warnings: w,
            reachable: catalog.empty_set(),
            escalation: None,
            human: None,
            emails: Vec::new(),
        });
    }
    out.sort_by(|a, b| a.arn.cmp(&b.arn));
    Evaluation { identities: out, warnings }
}

/// Evaluates standalone policy documents as if attached to one identity, with an optional boundary.
pub fn evaluate_policies(catalog: &Catalog, policies: &[&PolicyDocument], boundary: Option<&PolicyDocument>) -> Grants {
    let mut ev = Evaluator::new(catalog);
    let ids: Vec<usize> = policies.iter().map(|d| ev.eval_document(d)).collect();
    let b = boundary.map(|d| ev.eval_document(d));
    ev.combine(&ids, b)
}

/// The most an account's identities can be granted under the Organizations policies above it
/// ([`crate::org`]): `levels` lists, root first, the policies attached at each level of the path to
/// the account (SCPs); an action must be allowed at every level, and `denies` (every level's SCPs and
/// the RCPs) take it away.
#[derive(Debug, Clone, PartialEq)]
pub struct Ceiling {
    /// Allowed by an Allow at every level, on every resource.
    pub allowed: ActionSet,
    /// Denied on every resource without condition.
    pub denied: ActionSet,
    /// Denied only under a condition or on some resources: still granted, but no longer everywhere
    /// or unconditionally.
    pub partly_denied: ActionSet,
}

pub fn ceiling(catalog: &Catalog, levels: &[Vec<&PolicyDocument>], denies: &[&PolicyDocument]) -> Ceiling {
    let mut ev = Evaluator::new(catalog);
    let mut allowed = catalog.full_set().0;
    let mut denied = FixedBitSet::with_capacity(catalog.len());
    let mut partly = FixedBitSet::with_capacity(catalog.len());
    for level in levels {
        let mut here = FixedBitSet::with_capacity(catalog.len());
        for doc in level {
            let i = ev.eval_document(doc);
            let e = &ev.evals[i];
            here.union_with(&e.allow_full);
            denied.union_with(&e.deny_full);
            partly.union_with(&e.deny_partial);
            // An Allow on some resources or under a condition narrows, as a partial deny does.
            let mut narrow = e.allow_uncond.clone();
            narrow.union_with(&e.allow_cond);
            narrow.difference_with(&e.allow_full);
            partly.union_with(&narrow);
            here.union_with(&narrow);
        }
        allowed.intersect_with(&here);
    }
    for doc in denies {
        let i = ev.eval_document(doc);
        let e = &ev.evals[i];
        denied.union_with(&e.deny_full);
        partly.union_with(&e.deny_partial);
    }
    partly.difference_with(&denied);
    Ceiling { allowed: ActionSet(allowed), denied: ActionSet(denied), partly_denied: ActionSet(partly) }
}

/// Accounts other than `own` trusted by a trust policy's Allow statements (`*` for anyone), sorted.
pub fn trusted_accounts(trust: &PolicyDocument, own: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in trust.statements.iter().filter(|s| s.effect == Effect::Allow) {
        let Some(p) = &s.principal else { continue };
        if p.any {
            out.push("*".to_string());
        }
        for a in &p.aws {
            let account = if a == "*" { Some("*") } else { principal_account(a) };
            if let Some(acc) = account.filter(|acc| *acc != own) {
                out.push(acc.to_string());
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// One policy document, evaluated.
#[derive(Debug)]
struct PolicyEval {
    allow_uncond: FixedBitSet,
    allow_cond: FixedBitSet,
    allow_full: FixedBitSet,
    deny_full: FixedBitSet,
    /// Denied only under a condition or on some resources.
    deny_partial: FixedBitSet,
    /// Per Allow statement: actions granted but not unscoped, with the statement's pattern list.
    scoped: Vec<(FixedBitSet, u32)>,
}

/// Per-catalog precomputation plus per-document caches. Reuse one for many identities.
#[derive(Debug)]
struct Evaluator<'c> {
    catalog: &'c Catalog,
    templates: Vec<Template>,
    /// Template ids of action `a`: `flat[start[a]..start[a + 1]]`; empty means "only `*`".
    start: Vec<u32>,
    flat: Vec<u32>,
    expansions: FxHashMap<String, FixedBitSet>,
    evals: Vec<PolicyEval>,
    by_arn: FxHashMap<String, Option<usize>>,
    by_content: FxHashMap<PolicyDocument, usize>,
    pattern_lists: Vec<Arc<[String]>>,
    pattern_ids: FxHashMap<Vec<String>, u32>,
    merged: FxHashMap<Vec<u32>, Arc<[String]>>,
    vendored: Option<Vendored>,
}

impl<'c> Evaluator<'c> {
    fn new(catalog: &'c Catalog) -> Evaluator<'c> {
        let segment_vars = arn_match::segment_variables(
            (0..catalog.len()).flat_map(|a| catalog.resource_arns(a as ActionId).iter().map(String::as_str)),
        );
        let is_segment = |service: &str, var: &[u8]| {
            // Looked up rarely (once per distinct template variable), so the allocation is fine.
            segment_vars.contains(&(service.to_string(), String::from_utf8_lossy(var).into_owned()))
        };
        let mut ids: FxHashMap<&str, u32> = FxHashMap::default();
        let mut templates = Vec::new();
        let mut start = Vec::with_capacity(catalog.len() + 1);
        let mut flat = Vec::new();
        for a in 0..catalog.len() {
            start.push(flat.len() as u32);
            for t in catalog.resource_arns(a as ActionId) {
                if t == "*" {
                    continue;
                }
                let id = *ids.entry(t.as_str()).or_insert_with(|| {
                    templates.push(Template::new(t, &is_segment));
                    (templates.len() - 1) as u32
                });
                flat.push(id);
            }
        }
        start.push(flat.len() as u32);
        Evaluator {
            catalog,
            templates,
            start,
            flat,
            expansions: FxHashMap::default(),
            evals: Vec::new(),
            by_arn: FxHashMap::default(),
            by_content: FxHashMap::default(),
            pattern_lists: Vec::new(),
            pattern_ids: FxHashMap::default(),
            merged: FxHashMap::default(),
            vendored: None,
        }
    }

    fn templates_of(&self, a: usize) -> &[u32] {
        let (s, e) = (self.start.get(a).copied().unwrap_or(0), self.start.get(a + 1).copied().unwrap_or(0));
        self.flat.get(s as usize..e as usize).unwrap_or(&[])
    }

    fn expand(&mut self, pattern: &str) -> &FixedBitSet {
        let key = pattern.trim().to_ascii_lowercase();
        let catalog = self.catalog;
        self.expansions.entry(key).or_insert_with_key(|k| catalog.expand(k).0)
    }

    fn intern_patterns(&mut self, list: Vec<String>) -> u32 {
        if let Some(&id) = self.pattern_ids.get(&list) {
            return id;
        }
        let id = self.pattern_lists.len() as u32;
        self.pattern_lists.push(Arc::from(list.clone()));
        self.pattern_ids.insert(list, id);
        id
    }

    /// Evaluates (once) a document and returns its index.
    fn eval_document(&mut self, doc: &PolicyDocument) -> usize {
        if let Some(&i) = self.by_content.get(doc) {
            return i;
        }
        let e = self.compute(doc);
        self.evals.push(e);
        let i = self.evals.len() - 1;
        self.by_content.insert(doc.clone(), i);
        i
    }

    fn compute(&mut self, doc: &PolicyDocument) -> PolicyEval {
        let n = self.catalog.len();
        let mut e = PolicyEval {
            allow_uncond: FixedBitSet::with_capacity(n),
            allow_cond: FixedBitSet::with_capacity(n),
            allow_full: FixedBitSet::with_capacity(n),
            deny_full: FixedBitSet::with_capacity(n),
            deny_partial: FixedBitSet::with_capacity(n),
            scoped: Vec::new(),
        };
        for s in &doc.statements {
            let actions = self.statement_actions(s);
            let (granted, full) = self.resource_filter(s, &actions);
            match s.effect {
                Effect::Allow => {
                    if s.has_condition() {
                        e.allow_cond.union_with(&granted);
                    } else {
                        e.allow_uncond.union_with(&granted);
                    }
                    e.allow_full.union_with(&full);
                    let mut scoped = granted;
                    scoped.difference_with(&full);
                    if !scoped.is_clear() {
                        let mut list: Vec<String> = s
                            .resources
                            .iter()
                            .map(|r| if s.not_resource { format!("!{r}") } else { r.clone() })
                            .collect();
                        list.sort();
                        list.dedup();
                        let id = self.intern_patterns(list);
                        e.scoped.push((scoped, id));
                    }
                }
                Effect::Deny => {
                    if s.has_condition() {
                        e.deny_partial.union_with(&granted);
                    } else {
                        e.deny_full.union_with(&full);
                        let mut partial = granted;
                        partial.difference_with(&full);
                        e.deny_partial.union_with(&partial);
                    }
                }
            }
        }
        e
    }

    fn statement_actions(&mut self, s: &Statement) -> FixedBitSet {
        let n = self.catalog.len();
        let mut set = FixedBitSet::with_capacity(n);
        for a in &s.actions {
            set.union_with(self.expand(a));
        }
        if s.not_action {
            set.toggle_range(..);
        }
        set
    }

    /// `(granted, unscoped)` subsets of `actions` for the statement's resources.
    fn resource_filter(&self, s: &Statement, actions: &FixedBitSet) -> (FixedBitSet, FixedBitSet) {
        let n = self.catalog.len();
        let patterns: Vec<Pattern> = s.resources.iter().map(|r| Pattern::new(r)).collect();
        let any_all = patterns.iter().any(|p| matches!(p, Pattern::All));
        if !s.not_resource && any_all {
            return (actions.clone(), actions.clone());
        }
        if s.not_resource && any_all {
            return (FixedBitSet::with_capacity(n), FixedBitSet::with_capacity(n));
        }
        if patterns.is_empty() {
            // `Resource: []` matches nothing; `NotResource: []` excludes nothing.
            return if s.not_resource {
                (actions.clone(), actions.clone())
            } else {
                (FixedBitSet::with_capacity(n), FixedBitSet::with_capacity(n))
            };
        }
        // Per template: bit 0 = computed, bit 1 = some pattern intersects, bit 2 = some pattern covers.
        let mut memo = vec![0u8; self.templates.len()];
        let star = patterns.iter().any(Pattern::matches_star);
        let mut granted = FixedBitSet::with_capacity(n);
        let mut full = FixedBitSet::with_capacity(n);
        for a in actions.ones() {
            let tids = self.templates_of(a);
            let (inter, cov) = if tids.is_empty() {
                (star, star)
            } else {
                let (mut any_inter, mut all_cov) = (false, true);
                for &t in tids {
                    let Some(m) = memo.get_mut(t as usize) else { continue };
                    if *m == 0 {
                        let (mut i, mut c) = (false, false);
                        if let Some(tmpl) = self.templates.get(t as usize) {
                            for p in &patterns {
                                let (pi, pc) = p.against(tmpl);
                                i |= pi;
                                c |= pc;
                                if c {
                                    break;
                                }
                            }
                        }
                        *m = 1 | (u8::from(i) << 1) | (u8::from(c) << 2);
                    }
                    any_inter |= *m & 2 != 0;
                    all_cov &= *m & 4 != 0;
                }
                (any_inter, all_cov)
            };
            if s.not_resource {
                // The listed patterns are excluded.
                if !inter {
                    granted.insert(a);
                    full.insert(a);
                } else if !cov {
                    granted.insert(a);
                }
            } else if inter {
                granted.insert(a);
                if cov {
                    full.insert(a);
                }
            }
        }
        (granted, full)
    }

    /// Evaluation indices of inline + attached policies; warnings for missing ones.
    fn policy_ids(
        &mut self,
        snapshot: &IamSnapshot,
        inline: &[InlinePolicy],
        attached: &[String],
        warnings: &mut Vec<String>,
    ) -> Vec<usize> {
        let mut out: Vec<usize> = inline.iter().map(|p| self.eval_document(&p.document)).collect();
        for arn in attached {
            match self.managed(snapshot, arn) {
                Some(i) => out.push(i),
                None => warnings
                    .push(format!("managed policy {arn} is not in the snapshot nor vendored: it grants nothing")),
            }
        }
        out
    }

    fn boundary_id(
        &mut self,
        snapshot: &IamSnapshot,
        arn: &str,
        who: &str,
        warnings: &mut Vec<String>,
    ) -> Option<usize> {
        let id = self.managed(snapshot, arn);
        if id.is_none() {
            warnings.push(format!("{who}: permissions boundary {arn} is not in the snapshot nor vendored: ignored"));
        }
        id
    }

    fn managed(&mut self, snapshot: &IamSnapshot, arn: &str) -> Option<usize> {
        if let Some(&id) = self.by_arn.get(arn) {
            return id;
        }
        let doc = match snapshot.policies.get(arn).and_then(|p| p.document.as_ref()) {
            Some(d) => Some(self.eval_document(d)),
            None if is_aws_managed(arn) => {
                let v = self.vendored.get_or_insert_with(Vendored::load);
                v.document(arn).map(|d| self.eval_document(&d))
            }
            None => None,
        };
        self.by_arn.insert(arn.to_string(), doc);
        doc
    }

    fn union(&self, ids: &[usize]) -> (FixedBitSet, FixedBitSet, FixedBitSet, FixedBitSet) {
        let n = self.catalog.len();
        let (mut any, mut uncond, mut full, mut deny) = (
            FixedBitSet::with_capacity(n),
            FixedBitSet::with_capacity(n),
            FixedBitSet::with_capacity(n),
            FixedBitSet::with_capacity(n),
        );
        for e in ids.iter().filter_map(|&i| self.evals.get(i)) {
            uncond.union_with(&e.allow_uncond);
            any.union_with(&e.allow_cond);
            full.union_with(&e.allow_full);
            deny.union_with(&e.deny_full);
        }
        any.union_with(&uncond);
        (any, uncond, full, deny)
    }

    fn combine(&mut self, ids: &[usize], boundary: Option<usize>) -> Grants {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let (mut granted, mut uncond, mut full, mut deny) = self.union(&ids);
        if let Some(b) = boundary {
            let (b_any, b_uncond, b_full, b_deny) = self.union(&[b]);
            granted.intersect_with(&b_any);
            uncond.intersect_with(&b_uncond);
            full.intersect_with(&b_full);
            deny.union_with(&b_deny);
        }
        granted.difference_with(&deny);
        let mut conditional = granted.clone();
        conditional.difference_with(&uncond);
        full.intersect_with(&granted);
        let mut scoped_target = granted.clone();
        scoped_target.difference_with(&full);

        let mut pairs: Vec<(u32, u32)> = Vec::new();
        if !scoped_target.is_clear() {
            let collect = |id: usize, pairs: &mut Vec<(u32, u32)>| {
                let Some(e) = self.evals.get(id) else { return };
                for (set, list) in &e.scoped {
                    let mut s = set.clone();
                    s.intersect_with(&scoped_target);
                    pairs.extend(s.ones().map(|a| (a as u32, *list)));
                }
            };
            for &id in &ids {
                collect(id, &mut pairs);
            }
            pairs.sort_unstable();
            pairs.dedup();
            if let Some(b) = boundary {
                let mut extra = Vec::new();
                collect(b, &mut extra);
                extra.retain(|(a, _)| pairs.binary_search_by_key(a, |p| p.0).is_err());
                pairs.extend(extra);
                pairs.sort_unstable();
                pairs.dedup();
            }
        }
        let mut resource_patterns = Vec::new();
        for chunk in pairs.chunk_by(|x, y| x.0 == y.0) {
            let Some(&(a, first)) = chunk.first() else { continue };
            let list = if chunk.len() == 1 {
                self.pattern_lists.get(first as usize).cloned()
            } else {
                let key: Vec<u32> = chunk.iter().map(|p| p.1).collect();
                let lists = &self.pattern_lists;
                Some(
                    self.merged
                        .entry(key)
                        .or_insert_with_key(|k| {
                            let mut all: Vec<String> = k
                                .iter()
                                .filter_map(|&l| lists.get(l as usize))
                                .flat_map(|l| l.iter().cloned())
                                .collect();
                            all.sort();
                            all.dedup();
                            Arc::from(all)
                        })
                        .clone(),
                )
            };
            if let Some(list) = list {
                resource_patterns.push((a, list));
            }
        }
        Grants {
            granted: ActionSet(granted),
            conditional: ActionSet(conditional),
            unscoped: ActionSet(full),
            resource_patterns,
        }
    }
}

/// Whether a policy can grant anything: `Some(false)` when every statement of its document denies
/// (a quarantine policy such as `AWSCompromisedKeyQuarantineV3`, or `AWSDenyAll`). The policy is
/// `document` (as a call carries it: an object or a URL-encoded JSON string) or, without one, the AWS
/// managed policy `arn` from the vendored copy. `None`: unknown (a customer policy not in the call).
pub fn policy_allows_anything(document: Option<&serde_json::Value>, arn: Option<&str>) -> Option<bool> {
    static VENDORED: std::sync::OnceLock<Vendored> = std::sync::OnceLock::new();
    let doc = match (document, arn) {
        (Some(d), _) => crate::iam::parse_policy_document(d, "request", "policyDocument", false).ok()?,
        (None, Some(arn)) if arn.starts_with("arn:aws:iam::aws:policy/") => {
            VENDORED.get_or_init(Vendored::load).document(arn)?
        }
        _ => return None,
    };
    Some(doc.statements.iter().any(|s| s.effect == Effect::Allow))
}

/// The vendored AWS managed policies, indexed by ARN and name; documents are parsed on demand.
#[derive(Debug)]
pub struct Vendored {
    text: String,
    by_arn: FxHashMap<String, (usize, usize)>,
    by_name: FxHashMap<String, (usize, usize)>,
}

impl Vendored {
    pub fn load() -> Vendored {
        use std::io::Read;
        let mut text = String::new();
        // The data is compiled in; if it were unreadable the fallback simply finds nothing.
        if flate2::read::GzDecoder::new(MANAGED_POLICIES_GZ).read_to_string(&mut text).is_err() {
            text.clear();
        }
        let mut by_arn = FxHashMap::default();
        let mut by_name = FxHashMap::default();
        let mut offset = 0usize;
        for line in text.split_inclusive('\n') {
            let range = (offset, offset + line.len());
            offset += line.len();
            let needle = "\"arn\":\"";
            let Some(pos) = line.find(needle) else { continue };
            let rest = line.get(pos + needle.len()..).unwrap_or("");
            let Some(end) = rest.find('"') else { continue };
            let arn = rest.get(..end).unwrap_or("");
            let name = arn.rsplit('/').next().unwrap_or(arn);
            by_name.entry(name.to_string()).or_insert(range);
            by_arn.insert(arn.to_string(), range);
        }
        Vendored { text, by_arn, by_name }
    }

    pub fn document(&self, arn: &str) -> Option<PolicyDocument> {
        let name = arn.rsplit('/').next().unwrap_or(arn);
        let &(s, e) = self.by_arn.get(arn).or_else(|| self.by_name.get(name))?;
        let line = self.text.get(s..e)?;
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        parse_policy_document(v.get("document")?, "managed-policies.jsonl.gz", arn, false).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_only_policies_grant_nothing() {
        let quarantine = Some("arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV3");
        assert_eq!(policy_allows_anything(None, quarantine), Some(false));
        assert_eq!(policy_allows_anything(None, Some("arn:aws:iam::aws:policy/AWSDenyAll")), Some(false));
        assert_eq!(policy_allows_anything(None, Some("arn:aws:iam::aws:policy/ReadOnlyAccess")), Some(true));
        assert_eq!(policy_allows_anything(None, Some("arn:aws:iam::123456789012:policy/mine")), None);
        let deny = serde_json::json!(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"*","Resource":"*"}]}"#
        );
        assert_eq!(policy_allows_anything(Some(&deny), None), Some(false));
        let allow = serde_json::json!({"Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]});
        assert_eq!(policy_allows_anything(Some(&allow), None), Some(true));
    }

    #[test]
    fn vendored_readonly_is_found() {
        let v = Vendored::load();
        let d = v.document("arn:aws:iam::aws:policy/ReadOnlyAccess").unwrap();
        assert!(!d.statements.is_empty());
        assert!(v.document("arn:aws:iam::aws:policy/NoSuchPolicyXyz").is_none());
    }
}
