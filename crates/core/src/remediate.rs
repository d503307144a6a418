//! Right-sizing plans: what to take away from an identity, and the IAM changes that do it.
//!
//! An identity's permissions come from *sources*: its inline policies, its attached managed policies,
//! and (users) its groups. A source that grants nothing the identity left unused stays as it is. Every
//! other source is replaced: its Allow statements are cut down to the actions the identity used in the
//! lookback — keeping each statement's `Resource`, `NotResource` and `Condition` verbatim, so a used
//! action stays allowed on exactly the resources and under exactly the conditions it was — and its Deny
//! statements are carried over whole (dropping a Deny would widen access). The cut statements of all
//! replaced sources go into new customer-managed policies, created and attached before the sources are
//! detached, deleted or left (`docs/remediation.md`).
//!
//! Pure: the snapshot, the grants and the usage in; an [`IdentityPlan`] and the [`Edit`] that turns
//! the snapshot into its `after` state out. The runner replays the lookback against that `after`.

use rustc_hash::{FxHashMap, FxHashSet};

use grantwatch_types::{
    AccessKeyState, Change, EventTime, IdentityIamState, IdentityKind, IdentityPlan, NamedDocument, PlanReason,
    PlanScope, RemovedAction, StatusFlag,
};

use crate::catalog::{ActionSet, Catalog};
use crate::findings::{FindingsConfig, IdentityScore, identity_score, removable};
use crate::iam::{Effect, IamSnapshot, InlinePolicy, ManagedPolicy, PolicyDocument, Statement, document_json};
use crate::policy::{IdentityGrants, Vendored};
use crate::usage::IdentityUsage;

/// IAM's limit on a managed policy document, in characters without whitespace.
pub const MANAGED_POLICY_MAX_CHARS: usize = 6_144;
/// IAM's limit on managed policies attached to one user or role.
pub const MANAGED_POLICIES_PER_IDENTITY: usize = 10;
/// IAM Identity Center's limit on a permission set's inline policy.
pub const PERMISSION_SET_INLINE_MAX_CHARS: usize = 32_768;
/// The path of the policies plans create (so they are easy to list: `aws iam list-policies --path-prefix`).
pub const POLICY_PATH: &str = "/grantwatch/";

/// Which identities to plan for.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    pub scope: PlanScope,
    /// Only these identities (ARNs); empty: every identity the scope selects. A named identity is
    /// planned whatever its status.
    pub only: Vec<String>,
    /// Identities never planned: ARN patterns (`*` wildcards), e.g. `*:role/break-glass-*`.
    pub exclude: Vec<String>,
}

/// The context of a plan: the snapshot and the usage of IAM Identity Center roles, pooled per
/// permission set (one permission set is one policy for every account it is provisioned to, so it
/// keeps what any of its roles used).
pub struct PlanCx<'a> {
    pub catalog: &'a Catalog,
    pub cfg: &'a FindingsConfig,
    pub opts: &'a PlanOptions,
    snapshot: &'a IamSnapshot,
    users: FxHashMap<&'a str, usize>,
    roles: FxHashMap<&'a str, usize>,
    groups: FxHashMap<(&'a str, &'a str), usize>,
    vendored: std::sync::OnceLock<Vendored>,
    permission_set_usage: FxHashMap<String, ActionSet>,
}

/// What a plan does to the snapshot (for `after/`).
#[derive(Debug, Clone, Default)]
pub struct Edit {
    pub arn: String,
    pub detach: Vec<String>,
    pub delete_inline: Vec<String>,
    pub remove_groups: Vec<String>,
    pub deactivate_keys: Vec<String>,
    /// Created and attached.
    pub create: Vec<ManagedPolicy>,
    /// An IAM Identity Center role's new inline policy (`AwsSSOInlinePolicy`, as the service names it).
    pub sso_inline: Option<PolicyDocument>,
}

/// One identity's plan and its edit of the snapshot.
#[derive(Debug, Clone)]
pub struct Planned {
    pub plan: IdentityPlan,
    pub edit: Edit,
}

/// What [`PlanCx::plan`] decided for one identity.
#[derive(Debug, Clone)]
pub enum Outcome {
    Planned(Box<Planned>),
    /// In scope, left alone, and why.
    Skipped(String),
    /// Not selected by the scope (groups, identities the logs only name, active identities under
    /// `--scope inactive`, ...).
    OutOfScope,
}

/// The name IAM Identity Center gives the inline policy of the roles it provisions.
pub const SSO_INLINE_POLICY: &str = "AwsSSOInlinePolicy";

/// `AWSReservedSSO_<permission set>_<hex>` → the permission set's name.
pub fn permission_set_name(role_name: &str) -> Option<&str> {
    let rest = role_name.strip_prefix("AWSReservedSSO_")?;
    let (name, hex) = rest.rsplit_once('_')?;
    (!name.is_empty() && !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(name)
}

/// Where a permission comes from.
enum Source<'s> {
    Inline(&'s InlinePolicy),
    Managed(&'s str, Option<PolicyDocument>),
    Group(&'s str, Vec<PolicyDocument>),
}

impl<'a> PlanCx<'a> {
    pub fn new(
        catalog: &'a Catalog,
        cfg: &'a FindingsConfig,
        opts: &'a PlanOptions,
        snapshot: &'a IamSnapshot,
    ) -> Self {
        PlanCx {
            catalog,
            cfg,
            opts,
            snapshot,
            users: snapshot.users.iter().enumerate().map(|(i, u)| (u.arn.as_str(), i)).collect(),
            roles: snapshot.roles.iter().enumerate().map(|(i, r)| (r.arn.as_str(), i)).collect(),
            groups: snapshot
                .groups
                .iter()
                .enumerate()
                .map(|(i, g)| ((g.account.as_str(), g.name.as_str()), i))
                .collect(),
            vendored: std::sync::OnceLock::new(),
            permission_set_usage: FxHashMap::default(),
        }
    }

    /// Pools an IAM Identity Center role's usage into its permission set's (call for every identity
    /// before [`PlanCx::plan`]; others are ignored).
    pub fn note_usage(&mut self, grants: &IdentityGrants, usage: &IdentityUsage) {
        if !grants.sso_role {
            return;
        }
        let Some(ps) = permission_set_name(&grants.name) else { return };
        let used = identity_score(self.catalog, self.cfg, grants, usage).used;
        self.permission_set_usage.entry(ps.to_string()).or_insert_with(|| self.catalog.empty_set()).union_with(&used);
    }

    fn managed_document(&self, arn: &str) -> Option<PolicyDocument> {
        match self.snapshot.policies.get(arn).and_then(|p| p.document.clone()) {
            Some(d) => Some(d),
            None if crate::iam::is_aws_managed(arn) => self.vendored.get_or_init(Vendored::load).document(arn),
            None => None,
        }
    }

    /// The actions a statement allows (its `Action` patterns expanded, or the complement of its
    /// `NotAction`), whatever its resources.
    fn statement_actions(&self, s: &Statement) -> ActionSet {
        let mut set = self.catalog.empty_set();
        for a in &s.actions {
            set.union_with(&self.catalog.expand(a));
        }
        if s.not_action {
            let mut all = self.catalog.full_set();
            all.difference_with(&set);
            set = all;
        }
        set
    }

    /// Plans one identity.
    pub fn plan(&self, grants: &IdentityGrants, usage: &IdentityUsage) -> Outcome {
        let named = self.opts.only.iter().any(|a| a == &grants.arn);
        if !self.opts.only.is_empty() && !named {
            return Outcome::OutOfScope;
        }
        if let Some(p) = self.opts.exclude.iter().find(|p| crate::glob::Glob::STAR_ONLY.matches(p, &grants.arn)) {
            return Outcome::Skipped(format!("excluded by --exclude {p}"));
        }
        let (user, role) = match grants.kind {
            IdentityKind::User => match self.users.get(grants.arn.as_str()) {
                Some(&i) => (self.snapshot.users.get(i), None),
                None => return Outcome::OutOfScope,
            },
            IdentityKind::Role => match self.roles.get(grants.arn.as_str()) {
                Some(&i) => (None, self.snapshot.roles.get(i)),
                None => return Outcome::OutOfScope,
            },
            _ => return Outcome::OutOfScope,
        };
        let score = identity_score(self.catalog, self.cfg, grants, usage);
        let inactive = score.status.contains(&StatusFlag::Inactive);
        let over = score.status.contains(&StatusFlag::OverProvisioned);
        let selected = named
            || match self.opts.scope {
                PlanScope::Inactive => inactive,
                PlanScope::OverProvisioned => over,
                PlanScope::All => true,
            };
        if !selected {
            return Outcome::OutOfScope;
        }
        if grants.service_linked {
            return Outcome::Skipped("service-linked role: AWS manages its permissions".into());
        }
        let window_start = self.cfg.window_start();
        if inactive {
            if let Some(created) = grants.created.filter(|&c| c > window_start) {
                return Outcome::Skipped(format!(
                    "inactive, but created {} (within the {}-day lookback): too young to judge",
                    created.to_rfc3339(),
                    self.cfg.lookback_days
                ));
            }
            if let Some(last) = grants.last_used.filter(|&t| t >= window_start) {
                return Outcome::Skipped(format!(
                    "IAM says the role was last used {} (within the lookback), though the logs read show no \
                     activity: left alone until the logs cover it",
                    last.to_rfc3339()
                ));
            }
        }
        let ps_name = if grants.sso_role { permission_set_name(&grants.name) } else { None };
        if grants.sso_role && ps_name.is_none() {
            return Outcome::Skipped(format!("IAM Identity Center role with an unexpected name {:?}", grants.name));
        }

        // What stays: the actions used in the lookback (and, for a permission set, by any of its roles).
        let mut keep = if inactive { self.catalog.empty_set() } else { score.used.clone() };
        if let Some(pooled) = ps_name.and_then(|ps| self.permission_set_usage.get(ps)) {
            keep.union_with(pooled);
        }
        let mut keepable = keep.clone();
        keepable.union_with(self.catalog.permissionless());

        let (inline, attached, groups, account) = match (user, role) {
            (Some(u), _) => (&u.inline, &u.attached, u.groups.as_slice(), u.account.as_str()),
            (_, Some(r)) => (&r.inline, &r.attached, &[][..], r.account.as_str()),
            _ => return Outcome::OutOfScope,
        };
        let mut sources: Vec<Source<'_>> = Vec::new();
        sources.extend(inline.iter().map(Source::Inline));
        sources.extend(attached.iter().map(|arn| Source::Managed(arn, self.managed_document(arn))));
        for g in groups {
            let docs = match self.groups.get(&(account, g.as_str())).and_then(|&i| self.snapshot.groups.get(i)) {
                Some(group) => {
                    let mut docs: Vec<PolicyDocument> = group.inline.iter().map(|p| p.document.clone()).collect();
                    for arn in &group.attached {
                        match self.managed_document(arn) {
                            Some(d) => docs.push(d),
                            // A group policy grantwatch cannot read: never take the group away.
                            None => return Outcome::Skipped(format!("group {g}: policy {arn} is not in the snapshot")),
                        }
                    }
                    docs
                }
                None => continue,
            };
            sources.push(Source::Group(g, docs));
        }

        let mut changes_remove = Vec::new();
        let mut kept_notes = Vec::new();
        let mut cut = StatementSet::default();
        let mut detach = Vec::new();
        let mut delete_inline = Vec::new();
        let mut remove_groups = Vec::new();
        for source in &sources {
            let docs: Vec<&PolicyDocument> = match source {
                Source::Inline(p) => vec![&p.document],
                Source::Managed(_, Some(d)) => vec![d],
                Source::Managed(arn, None) => {
                    kept_notes.push(format!("managed policy {arn}: not in the snapshot, so never removed"));
                    continue;
                }
                Source::Group(_, docs) => docs.iter().collect(),
            };
            let mut allowed = self.catalog.empty_set();
            for d in &docs {
                for s in d.statements.iter().filter(|s| s.effect == Effect::Allow) {
                    allowed.union_with(&self.statement_actions(s));
                }
            }
            if allowed.is_subset(&keepable) {
                kept_notes.push(match source {
                    Source::Inline(p) => format!("inline policy {}: everything it grants was used", p.name),
                    Source::Managed(arn, _) => format!("managed policy {arn}: everything it grants was used"),
                    Source::Group(g, _) => format!("group {g}: everything it grants was used"),
                });
                continue;
            }
            for d in &docs {
                for s in &d.statements {
                    match s.effect {
                        Effect::Deny => cut.deny(s),
                        Effect::Allow => {
                            let mut actions = self.statement_actions(s);
                            let original = actions.clone();
                            actions.intersect_with(&keep);
                            cut.allow(s, actions, original);
                        }
                    }
                }
            }
            let why =
                |what: &str| format!("{what} grants actions unused in the {}-day lookback", self.cfg.lookback_days);
            match source {
                Source::Inline(p) => {
                    delete_inline.push(p.name.clone());
                    changes_remove.push(Change::DeleteInlinePolicy {
                        policy_name: p.name.clone(),
                        document: document_json(&p.document),
                        why: why("the inline policy"),
                    });
                }
                Source::Managed(arn, _) => {
                    detach.push(arn.to_string());
                    changes_remove.push(Change::DetachPolicy { policy_arn: arn.to_string(), why: why("the policy") });
                }
                Source::Group(g, _) => {
                    remove_groups.push(g.to_string());
                    changes_remove.push(Change::RemoveFromGroup { group: g.to_string(), why: why("the group") });
                }
            }
        }

        // Access keys not used in the lookback (and older than it).
        let mut deactivate_keys = Vec::new();
        let key_used: FxHashSet<&str> = usage
            .access_keys
            .iter()
            .filter(|(_, span)| span.last_ms >= window_start.millis())
            .map(|(k, _)| k.as_str())
            .collect();
        for k in grants.access_keys.iter().filter(|k| k.active) {
            if key_used.contains(k.access_key_id.as_str()) {
                continue;
            }
            if k.created.is_some_and(|c| c > window_start) {
                kept_notes.push(format!("access key {}: created within the lookback", k.access_key_id));
                continue;
            }
            deactivate_keys.push(k.access_key_id.clone());
            changes_remove.push(Change::DeactivateAccessKey {
                access_key_id: k.access_key_id.clone(),
                why: format!("not used in the {}-day lookback", self.cfg.lookback_days),
            });
        }
        if changes_remove.is_empty() {
            return Outcome::Skipped("nothing unused to remove".into());
        }

        // The new policies: the cut statements, as few and as small as IAM's limits allow.
        let documents = match cut.documents(self.catalog, ps_name.is_some()) {
            Ok(docs) => docs,
            Err(why) => return Outcome::Skipped(why),
        };
        let kept_attachments = attached.len() - detach.len();
        if ps_name.is_none() && kept_attachments + documents.len() > MANAGED_POLICIES_PER_IDENTITY {
            return Outcome::Skipped(format!(
                "the kept permissions need {} managed policies beside {kept_attachments} kept: over IAM's {} per identity",
                documents.len(),
                MANAGED_POLICIES_PER_IDENTITY
            ));
        }
        let mut changes = Vec::new();
        let mut edit =
            Edit { arn: grants.arn.clone(), detach, delete_inline, remove_groups, deactivate_keys, ..Edit::default() };
        if let Some(ps) = ps_name {
            let doc = documents.into_iter().next().unwrap_or_default();
            let detach_managed = std::mem::take(&mut edit.detach);
            edit.delete_inline.clear();
            changes.push(Change::UpdatePermissionSet {
                permission_set_name: ps.to_string(),
                inline_policy: document_json(&doc),
                detach_managed: detach_managed.clone(),
                why: format!(
                    "the permission set grants actions that none of its roles used in the {}-day lookback",
                    self.cfg.lookback_days
                ),
            });
            // IAM Identity Center rewrites the role's inline policy and attachments when it provisions.
            edit.delete_inline = inline.iter().map(|p| p.name.clone()).collect();
            edit.detach = detach_managed;
            edit.sso_inline = Some(doc);
            changes.extend(changes_remove.into_iter().filter(|c| matches!(c, Change::DeactivateAccessKey { .. })));
        } else {
            let n = documents.len();
            for (i, doc) in documents.into_iter().enumerate() {
                let name = policy_name(&grants.name, &document_json(&doc), i, n);
                let arn = format!("arn:aws:iam::{account}:policy{POLICY_PATH}{name}");
                changes.push(Change::CreatePolicy {
                    policy_name: name.clone(),
                    path: POLICY_PATH.to_string(),
                    policy_arn: arn.clone(),
                    document: document_json(&doc),
                    description: format!(
                        "grantwatch: what {} used in the {}-day lookback",
                        grants.name, self.cfg.lookback_days
                    ),
                });
                changes.push(Change::AttachPolicy { policy_arn: arn.clone() });
                edit.create.push(ManagedPolicy { arn, name, default_version: Some("v1".into()), document: Some(doc) });
            }
            changes.extend(changes_remove);
        }

        let mut proposals = Vec::new();
        if inactive {
            let seen = match usage.activity {
                Some(span) => format!("last seen {}", EventTime(span.last_ms).to_rfc3339()),
                None => "never seen in the logs read".to_string(),
            };
            proposals.push(format!(
                "delete {} {}: no activity in the {} days before {} ({seen}). grantwatch never deletes: once this \
                 plan is applied and a quarantine period passes without complaint, delete it by hand",
                grants.kind.as_str(),
                grants.name,
                self.cfg.lookback_days,
                self.cfg.as_of.to_rfc3339()
            ));
        }
        kept_notes.extend(grants.boundary.iter().map(|b| format!("permissions boundary {b}")));
        let plan = IdentityPlan {
            arn: grants.arn.clone(),
            account: grants.account.clone(),
            kind: grants.kind,
            name: grants.name.clone(),
            reason: if inactive {
                PlanReason::Inactive
            } else if over {
                PlanReason::OverProvisioned
            } else {
                PlanReason::UnusedPermissions
            },
            last_activity: usage.activity.map(|s| EventTime(s.last_ms)),
            granted_before: 0,
            granted_after: 0,
            used: score.used.len() as u64,
            pci_before: score.pci.score,
            pci_after: score.pci.score,
            before: iam_state(user, role, grants),
            changes,
            removed: Vec::new(),
            kept: kept_notes,
            proposals,
        };
        Outcome::Planned(Box::new(Planned { plan, edit }))
    }
}

/// What the snapshot says an identity has, as `apply` compares it with the live state.
fn iam_state(
    user: Option<&crate::iam::IamUser>,
    role: Option<&crate::iam::IamRole>,
    grants: &IdentityGrants,
) -> IdentityIamState {
    let (inline, attached, groups) = match (user, role) {
        (Some(u), _) => (&u.inline, &u.attached, u.groups.clone()),
        (_, Some(r)) => (&r.inline, &r.attached, Vec::new()),
        _ => return IdentityIamState::default(),
    };
    let mut managed_policies = attached.clone();
    managed_policies.sort();
    let mut inline_policies: Vec<NamedDocument> =
        inline.iter().map(|p| NamedDocument { name: p.name.clone(), document: document_json(&p.document) }).collect();
    inline_policies.sort_by(|a, b| a.name.cmp(&b.name));
    let mut groups = groups;
    groups.sort();
    let mut access_keys: Vec<AccessKeyState> = grants
        .access_keys
        .iter()
        .map(|k| AccessKeyState { access_key_id: k.access_key_id.clone(), status: k.status.clone() })
        .collect();
    access_keys.sort_by(|a, b| a.access_key_id.cmp(&b.access_key_id));
    IdentityIamState { managed_policies, inline_policies, groups, access_keys }
}

/// `grantwatch-<identity>-<hash>` (`-<i>` when the kept permissions need several policies), within
/// IAM's 128 characters: the hash of the document makes a re-plan's policy a new one, never a silent
/// overwrite of a policy someone may have edited.
fn policy_name(identity: &str, document: &serde_json::Value, i: usize, n: usize) -> String {
    let hash = xxhash_rust::xxh3::xxh3_64(document.to_string().as_bytes());
    let suffix = if n > 1 { format!("-{}", i + 1) } else { String::new() };
    let clean: String = identity
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "+=,.@-_".contains(*c))
        .take(128 - 11 - 17 - 3)
        .collect();
    format!("grantwatch-{clean}-{:08x}{suffix}", hash as u32)
}

/// The cut statements of the replaced sources: Allow statements merged by (resources, condition),
/// Deny statements carried whole.
#[derive(Default)]
struct StatementSet {
    allows: Vec<CutAllow>,
    by_key: FxHashMap<(bool, Vec<String>, Option<String>), usize>,
    denies: Vec<Statement>,
}

struct CutAllow {
    not_resource: bool,
    resources: Vec<String>,
    condition: Option<String>,
    kept: ActionSet,
    /// What the original statements allowed: generalizing never goes past it.
    original: ActionSet,
}

impl StatementSet {
    fn deny(&mut self, s: &Statement) {
        let mut s = s.clone();
        s.sid = None;
        if !self.denies.contains(&s) {
            self.denies.push(s);
        }
    }

    fn allow(&mut self, s: &Statement, kept: ActionSet, original: ActionSet) {
        if kept.is_empty() {
            return;
        }
        let mut resources = s.resources.clone();
        resources.sort();
        resources.dedup();
        let key = (s.not_resource, resources.clone(), s.condition.clone());
        match self.by_key.get(&key) {
            Some(&i) => {
                if let Some(c) = self.allows.get_mut(i) {
                    c.kept.union_with(&kept);
                    c.original.union_with(&original);
                }
            }
            None => {
                self.by_key.insert(key, self.allows.len());
                self.allows.push(CutAllow {
                    not_resource: s.not_resource,
                    resources,
                    condition: s.condition.clone(),
                    kept,
                    original,
                });
            }
        }
    }

    /// The statements as policy documents within IAM's size limits: exact action names first; then
    /// the catalog's exact compact names (`s3:Get*` when every `s3:Get` action is kept); then, where
    /// still too big, whole verbs and services that the original statement allowed anyway (access
    /// never grows past what the identity had); then split over several policies (one, for a permission
    /// set). Empty when nothing is kept.
    fn documents(&self, catalog: &Catalog, permission_set: bool) -> Result<Vec<PolicyDocument>, String> {
        if self.allows.is_empty() {
            return Ok(Vec::new());
        }
        let max = if permission_set { PERMISSION_SET_INLINE_MAX_CHARS } else { MANAGED_POLICY_MAX_CHARS };
        let render = |form: Form| -> Vec<Statement> {
            let mut out = Vec::new();
            for (i, c) in self.allows.iter().enumerate() {
                let actions = match form {
                    Form::Exact => c.kept.names(catalog),
                    Form::Compact => catalog.compact_names(&c.kept),
                    Form::Widened => catalog.compact_names(&widen(catalog, &c.kept, &c.original)),
                };
                out.push(Statement {
                    sid: Some(format!("Used{}", i + 1)),
                    effect: Effect::Allow,
                    not_action: false,
                    actions,
                    not_resource: c.not_resource,
                    resources: c.resources.clone(),
                    condition: c.condition.clone(),
                    principal: None,
                });
            }
            for (i, d) in self.denies.iter().enumerate() {
                let mut d = d.clone();
                d.sid = Some(format!("KeptDeny{}", i + 1));
                out.push(d);
            }
            out
        };
        let size = |statements: &[Statement]| -> usize {
            document_json(&PolicyDocument { statements: statements.to_vec() }).to_string().len()
        };
        let mut statements = Vec::new();
        for form in [Form::Exact, Form::Compact, Form::Widened] {
            statements = render(form);
            if size(&statements) <= max {
                return Ok(vec![PolicyDocument { statements }]);
            }
        }
        if permission_set {
            return Err(format!("the kept permissions do not fit in a permission set's {max}-character inline policy"));
        }
        // Several policies: Denies go into every one (a Deny applies whichever policy holds it, and
        // each policy must stand alone if a later plan detaches another).
        let denies: Vec<Statement> = statements.iter().filter(|s| s.effect == Effect::Deny).cloned().collect();
        // A statement too big for one policy is cut into statements of the same resources and
        // condition, each with part of its actions.
        let mut parts = Vec::new();
        for s in statements.into_iter().filter(|s| s.effect == Effect::Allow) {
            let mut alone = denies.clone();
            alone.push(s.clone());
            if size(&alone) <= max {
                parts.push(s);
                continue;
            }
            let mut part = Statement { actions: Vec::new(), ..s.clone() };
            for (n, a) in s.actions.iter().enumerate() {
                part.actions.push(a.clone());
                let mut probe = denies.clone();
                probe.push(part.clone());
                if size(&probe) > max && part.actions.len() > 1 {
                    let last = part.actions.pop().unwrap_or_default();
                    let mut full = Statement { actions: vec![last], ..s.clone() };
                    std::mem::swap(&mut full, &mut part);
                    full.sid = Some(format!("{}Part{n}", s.sid.as_deref().unwrap_or("Used")));
                    parts.push(full);
                }
            }
            parts.push(part);
        }
        let mut docs: Vec<Vec<Statement>> = Vec::new();
        for s in parts {
            let fits = docs.last().is_some_and(|d| {
                let mut probe = d.clone();
                probe.push(s.clone());
                size(&probe) <= max
            });
            if fits {
                if let Some(d) = docs.last_mut() {
                    d.push(s);
                }
            } else {
                let mut fresh = denies.clone();
                fresh.push(s);
                if size(&fresh) > max {
                    return Err(format!("one kept statement alone exceeds IAM's {max}-character policy limit"));
                }
                docs.push(fresh);
            }
        }
        Ok(docs.into_iter().map(|statements| PolicyDocument { statements }).collect())
    }
}

#[derive(Clone, Copy)]
enum Form {
    Exact,
    Compact,
    Widened,
}

/// `kept`, widened to whole verbs (`s3:Get*`) and then whole services (`s3:*`) wherever the original
/// statement allowed all of them anyway.
fn widen(catalog: &Catalog, kept: &ActionSet, original: &ActionSet) -> ActionSet {
    let mut out = kept.clone();
    let mut tried: FxHashSet<String> = FxHashSet::default();
    for id in kept.iter() {
        let name = catalog.name(id);
        let Some((prefix, local)) = name.split_once(':') else { continue };
        for pattern in [format!("{prefix}:*"), format!("{prefix}:{}*", leading_word(local))] {
            if !tried.insert(pattern.clone()) {
                continue;
            }
            let set = catalog.expand(&pattern);
            if set.is_subset(original) {
                out.union_with(&set);
                break;
            }
        }
    }
    out
}

/// The first word of a PascalCase action name (`Get` of `GetObject`).
fn leading_word(local: &str) -> &str {
    let end = local.char_indices().skip(1).find(|(_, c)| c.is_ascii_uppercase()).map_or(local.len(), |(i, _)| i);
    local.get(..end).unwrap_or(local)
}

/// Applies plans' edits to a copy of the snapshot: the `after` state.
pub fn apply_edits(snapshot: &IamSnapshot, edits: &[&Edit]) -> IamSnapshot {
    let mut after = snapshot.clone();
    let by_arn: FxHashMap<&str, &Edit> = edits.iter().map(|e| (e.arn.as_str(), *e)).collect();
    for u in &mut after.users {
        let Some(e) = by_arn.get(u.arn.as_str()) else { continue };
        u.attached.retain(|a| !e.detach.contains(a));
        u.inline.retain(|p| !e.delete_inline.contains(&p.name));
        u.groups.retain(|g| !e.remove_groups.contains(g));
        u.attached.extend(e.create.iter().map(|p| p.arn.clone()));
    }
    for r in &mut after.roles {
        let Some(e) = by_arn.get(r.arn.as_str()) else { continue };
        r.attached.retain(|a| !e.detach.contains(a));
        r.inline.retain(|p| !e.delete_inline.contains(&p.name));
        r.attached.extend(e.create.iter().map(|p| p.arn.clone()));
        if let Some(doc) = &e.sso_inline {
            r.inline.push(InlinePolicy { name: SSO_INLINE_POLICY.to_string(), document: doc.clone() });
        }
    }
    let user_account: FxHashMap<&str, &str> =
        snapshot.users.iter().map(|u| (u.arn.as_str(), u.account.as_str())).collect();
    for e in edits {
        for p in &e.create {
            after.policies.insert(p.arn.clone(), p.clone());
        }
        if e.deactivate_keys.is_empty() {
            continue;
        }
        let account = user_account.get(e.arn.as_str()).copied();
        for k in &mut after.access_keys {
            let same_account = k.account.as_deref().is_none_or(|a| Some(a) == account);
            if same_account && e.deactivate_keys.contains(&k.access_key_id) {
                k.status = "Inactive".to_string();
                k.active = false;
            }
        }
    }
    after
}

/// Fills what a plan can say only once the `after` snapshot is evaluated: granted counts, the PCI
/// after, the removed actions (each with its last use, if any) and the kept actions.
pub fn complete(
    catalog: &Catalog,
    cfg: &FindingsConfig,
    plan: &mut IdentityPlan,
    before: &IdentityGrants,
    after: &IdentityGrants,
    usage: &IdentityUsage,
) {
    let before_score: IdentityScore = identity_score(catalog, cfg, before, usage);
    let after_score = identity_score(catalog, cfg, after, usage);
    let (granted_before, granted_after) = (removable(catalog, &before.granted), removable(catalog, &after.granted));
    plan.granted_before = granted_before.len() as u64;
    plan.granted_after = granted_after.len() as u64;
    plan.pci_before = before_score.pci.score;
    plan.pci_after = after_score.pci.score;
    let mut removed = granted_before;
    removed.difference_with(&granted_after);
    let last: FxHashMap<&str, i64> = usage.actions.iter().map(|(a, s)| (a.as_str(), s.last_ms)).collect();
    plan.removed = removed
        .iter()
        .map(|id| {
            let action = catalog.name(id).to_string();
            let last_used = last.get(action.as_str()).map(|&ms| EventTime(ms));
            RemovedAction { action, last_used }
        })
        .collect();
    if !granted_after.is_empty() {
        plan.kept.insert(0, format!("actions: {}", catalog.compact_names(&granted_after).join(", ")));
    }
}

#[cfg(test)]
mod tests;
