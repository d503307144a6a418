//! Azure RBAC → one [`IdentityGrants`] per principal per subscription.
//!
//! Rules (tests below, fixtures in `testdata/`; `docs/azure.md` says the same for users):
//!
//! * **Identities.** One per (principal, subscription) where the principal holds an assignment that
//!   reaches the subscription, directly or through its groups; uid
//!   `azure:/subscriptions/{subscriptionId}/principals/{objectId}` ([`identity_uid`]), account = the
//!   subscription id. Kind: Entra users → `User`, groups → `Group`, service principals and managed
//!   identities → `ServiceAccount`; a principal missing from the directory exports takes the kind of its
//!   assignments' `principalType` (and a warning).
//! * **Reach.** An assignment at `/` reaches every known subscription; at a management group, the
//!   subscriptions below it in the hierarchy export (the tenant root group, whose name is the tenant id,
//!   reaches the tenant's subscriptions even without a hierarchy); at a subscription, that subscription;
//!   at a resource group or resource, its subscription, scoped.
//! * **Roles.** By GUID (last segment of `roleDefinitionId`): the exported role definitions first (custom
//!   roles, and built-ins when the export has them: newer than the embedded copy), then the embedded
//!   built-in roles; else by `roleDefinitionName`. A role's set is the union over its `permissions` blocks
//!   of `(actions − notActions) ∪ (dataActions − notDataActions)`, with Azure wildcards
//!   ([`Catalog::expand_azure`]). An unknown role grants nothing and is a warning. The catalog holds the
//!   operations built-in roles name: what a custom role names beyond it (and self-escalation operations
//!   it lacks, such as `roleDefinitions/write`, that a custom role's wildcard covers) is a warning too.
//! * **Groups.** A principal holds the assignments of every group it is a member of, transitively
//!   (nested groups, cycle-safe); a group identity holds its own and its parent groups' (what membership
//!   in it grants). `groups` lists the uids of the member's groups that are identities in the same
//!   subscription.
//! * **Scope.** Assignments at the subscription or above grant `unscoped`; below it, granted with the
//!   scope (the ARM id, compared case-insensitively) in `resource_patterns`.
//! * **Conditions.** An assignment with an ABAC `condition` (or a role block with one) makes conditional
//!   the actions its condition restricts: the ones named by `ActionMatches{'...'}`, or all of the role's
//!   when it names none. An action granted unconditionally by another assignment is not conditional.
//! * **Deny assignments** apply to the principals they name, directly or through a group, or to everyone
//!   (`00000000-0000-0000-0000-000000000000`), except the `excludePrincipals` (directly or through a
//!   group). At or above the subscription they remove their actions; at a resource group or resource
//!   they remove them from assignments at or below that scope, and an assignment above keeps them as
//!   granted but not unscoped, with `!{deny scope}` among the patterns. A deny with
//!   `doNotApplyToChildScopes` (it protects its scope only) or with a condition removes nothing and is a
//!   warning: when unsure, a permission is reported, never hidden.
//! * **Warnings** (unknown role, principal missing from the directory, a management group missing from
//!   the hierarchy, an unreadable scope) go into the affected identities' `warnings`; those that concern
//!   no identity into [`AzureEntitlements::warnings`]. Never silently dropped; bounded per identity.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::sync::Arc;

use grantwatch_types::{Cloud, IdentityKind};
use rustc_hash::{FxHashMap, FxHashSet};

use super::export::{
    AzureExport, DenyAssignment, Group, ManagementGroup, MemberKind, RoleAssignment, RoleDefinition, RolePermission,
    ServicePrincipal, Subscription, User, clean_scope, last_segment, parse_export,
};
use super::lenient::lower;
use crate::catalog::{ActionId, ActionSet, Catalog};
use crate::policy::IdentityGrants;

/// The principal id deny assignments use for everyone.
pub const EVERYONE: &str = "00000000-0000-0000-0000-000000000000";

/// At most this many warnings per identity (and in [`AzureEntitlements::warnings`]); the rest are counted
/// in a last line.
pub const MAX_WARNINGS: usize = 50;

/// The uid of a principal's identity in a subscription.
pub fn identity_uid(subscription: &str, object_id: &str) -> String {
    format!("azure:/subscriptions/{}/principals/{}", lower(subscription), lower(object_id))
}

#[derive(Debug, thiserror::Error)]
pub enum EntitlementsError {
    #[error("embedded Azure built-in roles are unreadable: {0}")]
    BuiltinRoles(String),
}

/// Azure RBAC and directory documents from many export files.
#[derive(Debug, Default)]
pub struct AzureInventory {
    role_definitions: BTreeMap<String, RoleDefinition>,
    role_assignments: Vec<RoleAssignment>,
    assignment_keys: FxHashSet<String>,
    deny_assignments: BTreeMap<String, DenyAssignment>,
    users: BTreeMap<String, User>,
    groups: BTreeMap<String, Group>,
    service_principals: BTreeMap<String, ServicePrincipal>,
    management_groups: BTreeMap<String, ManagementGroup>,
    subscriptions: BTreeMap<String, Subscription>,
}

impl AzureInventory {
    pub fn new() -> AzureInventory {
        AzureInventory::default()
    }

    /// Adds one file's documents. The same document in two files (overlapping exports, two pages) is
    /// kept once: later files win for single documents, group member lists are merged.
    pub fn add(&mut self, export: AzureExport) {
        for d in export.role_definitions {
            self.role_definitions.insert(d.guid.clone(), d);
        }
        for a in export.role_assignments {
            let key = match &a.id {
                Some(id) => lower(id),
                None => format!(
                    "{}|{}|{}|{}|{}",
                    a.principal_id,
                    a.role_definition_id.as_deref().map(last_segment).map(lower).unwrap_or_default(),
                    a.role_definition_name.as_deref().map(lower).unwrap_or_default(),
                    lower(&a.scope),
                    a.condition.as_deref().unwrap_or_default()
                ),
            };
            if self.assignment_keys.insert(key) {
                self.role_assignments.push(a);
            }
        }
        for d in export.deny_assignments {
            self.deny_assignments.insert(lower(&d.id), d);
        }
        for u in export.users {
            self.users.insert(u.id.clone(), u);
        }
        for g in export.groups {
            match self.groups.get_mut(&g.id) {
                Some(old) => {
                    let seen: FxHashSet<String> = old.members.iter().map(|m| m.id.clone()).collect();
                    old.members.extend(g.members.into_iter().filter(|m| !seen.contains(&m.id)));
                    old.display_name = g.display_name.or(old.display_name.take());
                    old.created = g.created.or(old.created);
                }
                None => {
                    self.groups.insert(g.id.clone(), g);
                }
            }
        }
        for s in export.service_principals {
            self.service_principals.insert(s.id.clone(), s);
        }
        for m in export.management_groups {
            match self.management_groups.get_mut(&m.name) {
                Some(old) => {
                    old.parent = m.parent.or(old.parent.take());
                    old.display_name = m.display_name.or(old.display_name.take());
                }
                None => {
                    self.management_groups.insert(m.name.clone(), m);
                }
            }
        }
        for s in export.subscriptions {
            match self.subscriptions.get_mut(&s.id) {
                Some(old) => {
                    old.name = s.name.or(old.name.take());
                    old.tenant_id = s.tenant_id.or(old.tenant_id.take());
                    old.parent = s.parent.or(old.parent.take());
                }
                None => {
                    self.subscriptions.insert(s.id.clone(), s);
                }
            }
        }
    }

    pub fn role_assignment_count(&self) -> usize {
        self.role_assignments.len()
    }

    pub fn is_empty(&self) -> bool {
        self.role_assignments.is_empty()
            && self.role_definitions.is_empty()
            && self.deny_assignments.is_empty()
            && self.users.is_empty()
            && self.groups.is_empty()
            && self.service_principals.is_empty()
            && self.management_groups.is_empty()
            && self.subscriptions.is_empty()
    }
}

/// What [`evaluate`] found.
#[derive(Debug)]
pub struct AzureEntitlements {
    /// Sorted by uid.
    pub grants: Vec<IdentityGrants>,
    /// Problems that concern no identity (an assignment reaching no known subscription, subscriptions
    /// missing from the hierarchy).
    pub warnings: Vec<String>,
}

/// The embedded built-in role definitions (`data/azure/builtin-roles.json.gz`, `az role definition list`).
pub fn builtin_roles() -> Result<Vec<RoleDefinition>, EntitlementsError> {
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(crate::catalog::azure_builtin_roles_json())
        .read_to_end(&mut json)
        .map_err(|e| EntitlementsError::BuiltinRoles(e.to_string()))?;
    let parsed = parse_export(&json).map_err(|e| EntitlementsError::BuiltinRoles(e.to_string()))?;
    if parsed.role_definitions.is_empty() || parsed.skipped > 0 {
        return Err(EntitlementsError::BuiltinRoles(format!(
            "{} roles read, {} skipped",
            parsed.role_definitions.len(),
            parsed.skipped
        )));
    }
    Ok(parsed.role_definitions)
}

/// Where an ARM scope is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scope {
    Root,
    /// A management group, by lower-case name.
    Mg(String),
    /// A subscription, by lower-case id.
    Sub(String),
    /// A resource group or resource inside a subscription: (subscription, the scope as written).
    InSub(String, String),
    Unknown,
}

const MG_PREFIX: &str = "/providers/microsoft.management/managementgroups/";

fn classify_scope(scope: &str) -> Scope {
    let l = scope.to_ascii_lowercase();
    if l == "/" {
        return Scope::Root;
    }
    if let Some(rest) = l.strip_prefix(MG_PREFIX) {
        return if !rest.is_empty() && !rest.contains('/') { Scope::Mg(rest.to_string()) } else { Scope::Unknown };
    }
    if let Some(rest) = l.strip_prefix("/subscriptions/") {
        return match rest.split_once('/') {
            None if !rest.is_empty() => Scope::Sub(rest.to_string()),
            Some((sub, tail)) if !sub.is_empty() && !tail.is_empty() => {
                Scope::InSub(sub.to_string(), scope.to_string())
            }
            _ => Scope::Unknown,
        };
    }
    Scope::Unknown
}

/// `inner` is `outer` or below it (ARM ids, case-insensitively).
fn at_or_below(inner: &str, outer: &str) -> bool {
    inner.len() >= outer.len()
        && inner.as_bytes()[..outer.len()].eq_ignore_ascii_case(outer.as_bytes())
        && (inner.len() == outer.len() || inner.as_bytes()[outer.len()] == b'/')
}

/// How a scope covers one subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reach {
    /// The whole subscription (the scope is it or above it).
    Whole,
    /// Part of it: the scope as written.
    Inside(String),
}

/// The subscriptions, their places in the hierarchy, and the management groups known.
struct Hierarchy {
    /// Every known subscription (from the exports and from the scopes they name), sorted.
    subs: Vec<String>,
    /// Subscription → its ancestor management groups (lower-case names), nearest first.
    ancestors: FxHashMap<String, Vec<String>>,
    /// Subscription → tenant id.
    tenant: FxHashMap<String, String>,
    /// Management groups known (the hierarchy's, and the tenant ids: each tenant's root group).
    known_mgs: FxHashSet<String>,
    /// Tenant ids: the names of the tenants' root groups, which reach their subscriptions without a hierarchy.
    tenants: FxHashSet<String>,
}

impl Hierarchy {
    fn new(inv: &AzureInventory) -> Hierarchy {
        let mut subs: BTreeSet<String> = inv.subscriptions.keys().cloned().collect();
        let scopes =
            inv.role_assignments.iter().map(|a| &a.scope).chain(inv.deny_assignments.values().map(|d| &d.scope));
        for scope in scopes {
            if let Scope::Sub(s) | Scope::InSub(s, _) = classify_scope(scope) {
                subs.insert(s);
            }
        }
        let mut ancestors = FxHashMap::default();
        let mut tenant = FxHashMap::default();
        let mut known_mgs: FxHashSet<String> = inv.management_groups.keys().cloned().collect();
        let mut tenants = FxHashSet::default();
        for (id, s) in &inv.subscriptions {
            if let Some(t) = &s.tenant_id {
                tenant.insert(id.clone(), t.clone());
                known_mgs.insert(t.clone());
                tenants.insert(t.clone());
            }
            let mut chain = Vec::new();
            let mut next = s.parent.clone();
            // Bounded by the number of groups: a cyclic parent chain in a hand-made export ends.
            while let Some(mg) = next {
                if chain.contains(&mg) || chain.len() > inv.management_groups.len() {
                    break;
                }
                next = inv.management_groups.get(&mg).and_then(|m| m.parent.clone());
                chain.push(mg);
            }
            ancestors.insert(id.clone(), chain);
        }
        Hierarchy { subs: subs.into_iter().collect(), ancestors, tenant, known_mgs, tenants }
    }

    /// The subscriptions a scope reaches, and how.
    fn reach(&self, scope: &Scope) -> Vec<(String, Reach)> {
        match scope {
            Scope::Root => self.subs.iter().map(|s| (s.clone(), Reach::Whole)).collect(),
            Scope::Mg(mg) => self
                .subs
                .iter()
                .filter(|s| self.ancestors.get(*s).is_some_and(|a| a.contains(mg)) || self.tenant.get(*s) == Some(mg))
                .map(|s| (s.clone(), Reach::Whole))
                .collect(),
            Scope::Sub(s) => vec![(s.clone(), Reach::Whole)],
            Scope::InSub(s, scope) => vec![(s.clone(), Reach::Inside(scope.clone()))],
            Scope::Unknown => Vec::new(),
        }
    }
}

/// A role's actions, computed once and shared by its assignments.
struct RoleSets {
    all: Arc<ActionSet>,
    /// Restricted by a condition of one of the role's own blocks.
    conditional: Arc<ActionSet>,
    /// Operations a custom role names that the catalog does not know (it holds those that built-in roles
    /// name), and self-escalation operations missing from the catalog that its wildcards cover: granted,
    /// but not in the sets. At most [`MAX_UNCOUNTED`].
    uncounted: Vec<String>,
}

/// At most this many uncounted operations are named per role.
const MAX_UNCOUNTED: usize = 10;

struct Roles<'a> {
    by_guid: FxHashMap<String, &'a RoleDefinition>,
    by_name: FxHashMap<String, &'a RoleDefinition>,
    sets: FxHashMap<String, Arc<RoleSets>>,
}

impl<'a> Roles<'a> {
    fn new(builtin: &'a [RoleDefinition], exported: &'a BTreeMap<String, RoleDefinition>) -> Roles<'a> {
        let mut by_guid = FxHashMap::default();
        let mut by_name = FxHashMap::default();
        // Exported definitions win: a current `az role definition list` knows built-ins newer than ours.
        for d in builtin.iter().chain(exported.values()) {
            by_guid.insert(d.guid.clone(), d);
            by_name.insert(d.role_name.to_ascii_lowercase(), d);
        }
        Roles { by_guid, by_name, sets: FxHashMap::default() }
    }

    fn resolve(&self, a: &RoleAssignment) -> Option<&'a RoleDefinition> {
        let by_id = a.role_definition_id.as_deref().map(|id| lower(last_segment(id)));
        if let Some(d) = by_id.as_ref().and_then(|g| self.by_guid.get(g)) {
            return Some(d);
        }
        a.role_definition_name.as_deref().and_then(|n| self.by_name.get(&n.trim().to_ascii_lowercase())).copied()
    }

    fn sets(&mut self, role: &RoleDefinition, catalog: &Catalog) -> Arc<RoleSets> {
        if let Some(s) = self.sets.get(&role.guid) {
            return s.clone();
        }
        let mut all = catalog.empty_set();
        let mut conditional = catalog.empty_set();
        let mut uncounted = Vec::new();
        for block in &role.permissions {
            let set = permission_set(block, catalog);
            if let Some(cond) = &block.condition {
                conditional.union_with(&condition_actions(cond, &set, catalog));
            }
            all.union_with(&set);
            // Built-in roles make the catalog: only custom roles can name what it lacks.
            if role.custom {
                uncounted_operations(block, catalog, &mut uncounted);
            }
        }
        let s = Arc::new(RoleSets { all: Arc::new(all), conditional: Arc::new(conditional), uncounted });
        self.sets.insert(role.guid.clone(), s.clone());
        s
    }
}

/// The operations of a block that grant something the catalog cannot hold: literal names it does not
/// know, and the self-escalation operations it lacks that a wildcard covers (unless a `notActions`
/// pattern removes them).
fn uncounted_operations(block: &RolePermission, catalog: &Catalog, out: &mut Vec<String>) {
    let glob = crate::glob::Glob::CLOUD_ACTION;
    let lists = [(&block.actions, &block.not_actions, false), (&block.data_actions, &block.not_data_actions, true)];
    for (patterns, not, data) in lists {
        let removed = |name: &str| not.iter().any(|n| glob.matches(n, name));
        for p in patterns {
            let p = p.trim();
            let found: Vec<&str> = if p.contains('*') {
                SELF_ESCALATION
                    .iter()
                    .map(|(a, _)| *a)
                    .filter(|a| !data && catalog.lookup(a).is_none() && glob.matches(p, a))
                    .collect()
            } else if !p.is_empty() && catalog.expand_azure(p, data).is_empty() {
                vec![p]
            } else {
                Vec::new()
            };
            for name in found {
                if !removed(name) && out.len() < MAX_UNCOUNTED && !out.iter().any(|o| o.eq_ignore_ascii_case(name)) {
                    out.push(name.to_string());
                }
            }
        }
    }
}

/// `(actions − notActions) ∪ (dataActions − notDataActions)` of one permissions block.
pub fn permission_set(block: &RolePermission, catalog: &Catalog) -> ActionSet {
    let expand = |patterns: &[String], data: bool| {
        let mut s = catalog.empty_set();
        for p in patterns {
            s.union_with(&catalog.expand_azure(p, data));
        }
        s
    };
    let mut control = expand(&block.actions, false);
    control.difference_with(&expand(&block.not_actions, false));
    let mut data = expand(&block.data_actions, true);
    data.difference_with(&expand(&block.not_data_actions, true));
    control.union_with(&data);
    control
}

/// The actions of `set` an ABAC condition restricts: those its `ActionMatches{'...'}` clauses name, or
/// all of `set` when it names none (a condition we cannot read restricts everything, so nothing is
/// reported as granted without condition that may not be).
fn condition_actions(condition: &str, set: &ActionSet, catalog: &Catalog) -> ActionSet {
    let mut named = catalog.empty_set();
    let mut found = false;
    let lower_cond = condition.to_ascii_lowercase();
    let mut rest = lower_cond.as_str();
    let mut offset = 0;
    while let Some(at) = rest.find("actionmatches{") {
        let start = offset + at + "actionmatches{".len();
        let Some(len) = condition[start..].find('}') else { break };
        for name in condition[start..start + len].split(',') {
            let name = name.trim().trim_matches(|c| c == '\'' || c == '"').trim();
            if !name.is_empty() {
                found = true;
                named.union_with(&catalog.expand_azure(name, false));
                named.union_with(&catalog.expand_azure(name, true));
            }
        }
        offset = start + len;
        rest = &lower_cond[offset..];
    }
    if !found {
        return set.clone();
    }
    named.intersect_with(set);
    named
}

/// One assignment's part of an identity's grants in one subscription.
struct Contribution {
    set: Arc<ActionSet>,
    /// The part of `set` restricted by a condition.
    conditional: Arc<ActionSet>,
    /// `None`: the whole subscription; else the scope as written.
    scope: Option<String>,
    /// Actions a deny at a narrower scope removes there: (actions, `!{deny scope}`).
    carved: Vec<(ActionSet, String)>,
}

/// A deny assignment, prepared.
struct Deny<'a> {
    d: &'a DenyAssignment,
    set: ActionSet,
    /// The subscriptions its scope reaches, and how.
    reach: Vec<(String, Reach)>,
    principals: FxHashSet<&'a str>,
    excluded: FxHashSet<&'a str>,
}

/// The warnings of one identity, bounded.
#[derive(Default)]
struct Warnings {
    list: Vec<String>,
    more: usize,
}

impl Warnings {
    fn push(&mut self, w: String) {
        if self.list.contains(&w) {
            return;
        }
        if self.list.len() < MAX_WARNINGS {
            self.list.push(w);
        } else {
            self.more += 1;
        }
    }

    fn extend(&mut self, other: &Warnings) {
        for w in &other.list {
            self.push(w.clone());
        }
        self.more += other.more;
    }

    fn finish(mut self) -> Vec<String> {
        if self.more > 0 {
            self.list.push(format!("... and {} more warnings", self.more));
        }
        self.list
    }
}

fn describe_assignment(a: &RoleAssignment) -> String {
    let role =
        a.role_definition_name.as_deref().filter(|n| !n.is_empty()).or(a.role_definition_id.as_deref()).unwrap_or("?");
    match &a.id {
        Some(id) => format!("role assignment {id} ({role} at {})", a.scope),
        None => format!("role assignment of {role} at {} to {}", a.scope, a.principal_id),
    }
}

/// The directory: who is a member of which group, what each principal is.
struct Directory<'a> {
    inv: &'a AzureInventory,
    /// Member → the groups listing it directly.
    parents: FxHashMap<&'a str, Vec<&'a str>>,
}

impl<'a> Directory<'a> {
    fn new(inv: &'a AzureInventory) -> Directory<'a> {
        let mut parents: FxHashMap<&str, Vec<&str>> = FxHashMap::default();
        for g in inv.groups.values() {
            for m in &g.members {
                parents.entry(m.id.as_str()).or_default().push(g.id.as_str());
            }
        }
        Directory { inv, parents }
    }

    /// Every group `p` is a member of, transitively, without `p` itself; breadth first, so a cycle ends.
    fn ancestors(&self, p: &str) -> Vec<&'a str> {
        let mut seen: FxHashSet<&str> = FxHashSet::default();
        let mut out = Vec::new();
        let mut queue: std::collections::VecDeque<&str> = self.parents.get(p).into_iter().flatten().copied().collect();
        while let Some(g) = queue.pop_front() {
            if g == p || !seen.insert(g) {
                continue;
            }
            out.push(g);
            queue.extend(self.parents.get(g).into_iter().flatten().copied());
        }
        out.sort_unstable();
        out
    }

    /// Every member of `g`, transitively, without `g` itself.
    fn members(&self, g: &str) -> Vec<(&'a str, MemberKind)> {
        let mut seen: FxHashSet<&str> = FxHashSet::default();
        let mut out = Vec::new();
        let mut queue = vec![g];
        while let Some(next) = queue.pop() {
            let Some(group) = self.inv.groups.get(next) else { continue };
            for m in &group.members {
                if m.id == g || !seen.insert(m.id.as_str()) {
                    continue;
                }
                out.push((m.id.as_str(), m.kind));
                if m.kind == MemberKind::Group || self.inv.groups.contains_key(&m.id) {
                    queue.push(m.id.as_str());
                }
            }
        }
        out
    }
}

/// A principal's kind, name and metadata, from the directory or its assignments.
struct Principal {
    kind: IdentityKind,
    name: String,
    emails: Vec<String>,
    created: Option<grantwatch_types::EventTime>,
    last_used: Option<grantwatch_types::EventTime>,
    in_directory: bool,
}

fn principal_info(
    inv: &AzureInventory,
    id: &str,
    member_kind: Option<MemberKind>,
    assignments: &[&RoleAssignment],
) -> Principal {
    if let Some(u) = inv.users.get(id) {
        let mut emails: Vec<String> = Vec::new();
        // A guest's UPN (`carol_fabrikam.com#EXT#@contoso.onmicrosoft.com`) is no one's address.
        let upn = u.user_principal_name.as_deref().filter(|u| !u.to_ascii_uppercase().contains("#EXT#"));
        for e in upn.into_iter().chain(u.mail.as_deref()).chain(u.other_mails.iter().map(String::as_str)) {
            let e = e.trim().to_ascii_lowercase();
            if e.contains('@') && !emails.contains(&e) {
                emails.push(e);
            }
        }
        return Principal {
            kind: IdentityKind::User,
            name: u.user_principal_name.clone().or(u.display_name.clone()).unwrap_or_else(|| id.to_string()),
            emails,
            created: u.created,
            last_used: u.last_sign_in,
            in_directory: true,
        };
    }
    if let Some(g) = inv.groups.get(id) {
        return Principal {
            kind: IdentityKind::Group,
            name: g.display_name.clone().unwrap_or_else(|| id.to_string()),
            emails: Vec::new(),
            created: g.created,
            last_used: None,
            in_directory: true,
        };
    }
    if let Some(s) = inv.service_principals.get(id) {
        return Principal {
            kind: IdentityKind::ServiceAccount,
            name: s.display_name.clone().unwrap_or_else(|| id.to_string()),
            emails: Vec::new(),
            created: None,
            last_used: None,
            in_directory: true,
        };
    }
    let from_type =
        assignments.iter().find_map(|a| a.principal_type.as_deref()).map(|t| match t.to_ascii_lowercase().as_str() {
            "user" => IdentityKind::User,
            "group" | "foreigngroup" => IdentityKind::Group,
            "serviceprincipal" | "msi" | "managedidentity" | "application" => IdentityKind::ServiceAccount,
            _ => IdentityKind::External,
        });
    let from_member = member_kind.map(|k| match k {
        MemberKind::User => IdentityKind::User,
        MemberKind::Group => IdentityKind::Group,
        MemberKind::ServicePrincipal => IdentityKind::ServiceAccount,
        MemberKind::Other => IdentityKind::External,
    });
    Principal {
        kind: from_type.or(from_member).unwrap_or(IdentityKind::External),
        name: assignments
            .iter()
            .find_map(|a| a.principal_name.as_deref().filter(|n| !n.is_empty()))
            .unwrap_or(id)
            .to_string(),
        emails: Vec::new(),
        created: None,
        last_used: None,
        in_directory: false,
    }
}

/// Effective Azure permissions: one [`IdentityGrants`] per principal per subscription it has an
/// assignment reaching (see the module documentation for the rules).
pub fn evaluate(inv: &AzureInventory, catalog: &Catalog) -> Result<AzureEntitlements, EntitlementsError> {
    let builtin = builtin_roles()?;
    Ok(evaluate_with_roles(inv, catalog, &builtin))
}

/// [`evaluate`] with the built-in role definitions given (tests, or a caller that loaded them once).
pub fn evaluate_with_roles(inv: &AzureInventory, catalog: &Catalog, builtin: &[RoleDefinition]) -> AzureEntitlements {
    let mut global = Warnings::default();
    let hierarchy = Hierarchy::new(inv);
    let dir = Directory::new(inv);
    let mut roles = Roles::new(builtin, &inv.role_definitions);

    // Assignments by principal, and each assignment's reach and sets, once.
    let mut by_principal: FxHashMap<&str, Vec<usize>> = FxHashMap::default();
    struct Prepared {
        reach: Vec<(String, Reach)>,
        set: Arc<ActionSet>,
        conditional: Arc<ActionSet>,
        /// Warnings for every identity holding it.
        warnings: Vec<String>,
    }
    let mut prepared = Vec::with_capacity(inv.role_assignments.len());
    let mut mg_assignments = false;
    let nothing = Arc::new(catalog.empty_set());
    for (i, a) in inv.role_assignments.iter().enumerate() {
        by_principal.entry(a.principal_id.as_str()).or_default().push(i);
        let scope = classify_scope(&a.scope);
        let mut warnings = Vec::new();
        match &scope {
            Scope::Mg(mg) if !hierarchy.known_mgs.contains(mg) => warnings.push(format!(
                "{}: management group {mg} is not in the hierarchy export, so the subscriptions it reaches are unknown \
                 (export `az account management-group show --name <root> --expand --recurse`)",
                describe_assignment(a)
            )),
            Scope::Mg(mg) if !hierarchy.tenants.contains(mg) => mg_assignments = true,
            Scope::Unknown => warnings.push(format!("{}: scope not understood; ignored", describe_assignment(a))),
            _ => {}
        }
        let reach = hierarchy.reach(&scope);
        if reach.is_empty() && warnings.is_empty() {
            global.push(format!("{}: reaches no known subscription", describe_assignment(a)));
        }
        let (set, conditional) = match roles.resolve(a) {
            Some(role) => {
                let rs = roles.sets(role, catalog);
                if !rs.uncounted.is_empty() {
                    warnings.push(format!(
                        "{}: role {} grants operations the catalog does not list, not counted: {}",
                        describe_assignment(a),
                        role.role_name,
                        rs.uncounted.join(", ")
                    ));
                }
                let conditional = match &a.condition {
                    Some(c) => {
                        let mut cond = (*rs.conditional).clone();
                        cond.union_with(&condition_actions(c, &rs.all, catalog));
                        Arc::new(cond)
                    }
                    None => rs.conditional.clone(),
                };
                (rs.all.clone(), conditional)
            }
            None => {
                warnings.push(format!(
                    "{}: unknown role definition {}; it grants nothing here (export custom roles with `az role definition list --custom-role-only`)",
                    describe_assignment(a),
                    a.role_definition_id.as_deref().or(a.role_definition_name.as_deref()).unwrap_or("?")
                ));
                (nothing.clone(), nothing.clone())
            }
        };
        prepared.push(Prepared { reach, set, conditional, warnings });
    }
    if mg_assignments {
        let unplaced: Vec<&str> = hierarchy
            .subs
            .iter()
            .filter(|s| hierarchy.ancestors.get(*s).is_none_or(Vec::is_empty))
            .map(String::as_str)
            .collect();
        if !unplaced.is_empty() {
            global.push(format!(
                "subscriptions not in the management-group hierarchy export ({}{}): assignments at management groups may reach them unseen",
                unplaced.iter().take(10).copied().collect::<Vec<_>>().join(", "),
                if unplaced.len() > 10 { format!(" and {} more", unplaced.len() - 10) } else { String::new() }
            ));
        }
    }

    let denies: Vec<Deny<'_>> = inv
        .deny_assignments
        .values()
        .map(|d| {
            let mut set = catalog.empty_set();
            for block in &d.permissions {
                set.union_with(&permission_set(block, catalog));
            }
            Deny {
                d,
                set,
                reach: hierarchy.reach(&classify_scope(&d.scope)),
                principals: d.principals.iter().map(|p| p.id.as_str()).collect(),
                excluded: d.exclude_principals.iter().map(|p| p.id.as_str()).collect(),
            }
        })
        .collect();

    // Principals: every assignee and every member (transitively) of an assignee group.
    let mut principals: BTreeMap<&str, Option<MemberKind>> = BTreeMap::new();
    for &assignee in by_principal.keys() {
        principals.entry(assignee).or_insert(None);
        for (m, kind) in dir.members(assignee) {
            // Devices and contacts cannot sign in to Azure Resource Manager.
            if kind == MemberKind::Other && !inv.users.contains_key(m) && !inv.service_principals.contains_key(m) {
                continue;
            }
            principals.entry(m).or_insert(Some(kind));
        }
    }

    struct Pending {
        principal: String,
        sub: String,
        grants: IdentityGrants,
        ancestors: Vec<String>,
    }
    let mut pending: Vec<Pending> = Vec::new();
    let mut pattern_lists: FxHashMap<Vec<String>, Arc<[String]>> = FxHashMap::default();
    for (&p, &member_kind) in &principals {
        let ancestors = dir.ancestors(p);
        let direct: Vec<&RoleAssignment> =
            by_principal.get(p).into_iter().flatten().map(|&i| &inv.role_assignments[i]).collect();
        let info = principal_info(inv, p, member_kind, &direct);
        let mut p_warnings = Warnings::default();
        if !info.in_directory {
            p_warnings.push(format!(
                "principal {p} is not in the directory exports (users, groups, servicePrincipals): kind from its assignments, no name, e-mail or group memberships"
            ));
        }
        for g in &ancestors {
            if inv.groups.get(*g).is_some_and(|g| g.members_incomplete) {
                p_warnings.push(format!("group {g}'s member list may be incomplete: other members may hold its roles"));
            }
        }
        // Warnings of the assignments held: when they reach no subscription, they still are reported.
        let mut a_warnings = Warnings::default();
        let mut per_sub: BTreeMap<&str, (Vec<Contribution>, Warnings)> = BTreeMap::new();
        let held = std::iter::once(p).chain(ancestors.iter().copied());
        for holder in held {
            for &i in by_principal.get(holder).into_iter().flatten() {
                let prep = &prepared[i];
                let via = if holder == p { String::new() } else { format!(" (via group {holder})") };
                for w in &prep.warnings {
                    a_warnings.push(format!("{w}{via}"));
                }
                for (sub, reach) in &prep.reach {
                    let entry = per_sub.entry(sub.as_str()).or_default();
                    entry.0.push(Contribution {
                        set: prep.set.clone(),
                        conditional: prep.conditional.clone(),
                        scope: match reach {
                            Reach::Whole => None,
                            Reach::Inside(s) => Some(clean_scope(s)),
                        },
                        carved: Vec::new(),
                    });
                }
            }
        }
        if per_sub.is_empty() {
            global.extend(&a_warnings);
            continue;
        }
        p_warnings.extend(&a_warnings);
        for (sub, (mut contributions, mut warnings)) in per_sub {
            apply_denies(&denies, p, &ancestors, sub, &mut contributions, &mut warnings);
            warnings.extend(&p_warnings);
            let mut g = IdentityGrants::unknown(catalog, &identity_uid(sub, p), sub, info.kind, &info.name);
            g.cloud = Cloud::Azure;
            g.emails = info.emails.clone();
            g.created = info.created;
            g.last_used = info.last_used;
            fill_sets(&mut g, &contributions, catalog, &mut pattern_lists);
            g.warnings = warnings.finish();
            pending.push(Pending {
                principal: p.to_string(),
                sub: sub.to_string(),
                grants: g,
                ancestors: ancestors.iter().map(|s| s.to_string()).collect(),
            });
        }
    }

    // `groups`: the member's groups that are identities in the same subscription.
    let present: FxHashSet<(String, String)> = pending.iter().map(|x| (x.principal.clone(), x.sub.clone())).collect();
    let mut grants: Vec<IdentityGrants> = pending
        .into_iter()
        .map(|mut x| {
            x.grants.groups = x
                .ancestors
                .iter()
                .filter(|g| present.contains(&((*g).clone(), x.sub.clone())))
                .map(|g| identity_uid(&x.sub, g))
                .collect();
            x.grants
        })
        .collect();
    grants.sort_by(|a, b| a.arn.cmp(&b.arn));
    AzureEntitlements { grants, warnings: global.finish() }
}

/// Applies the deny assignments that name `p` (or one of its groups, or everyone) in subscription `sub`.
fn apply_denies(
    denies: &[Deny<'_>],
    p: &str,
    ancestors: &[&str],
    sub: &str,
    contributions: &mut [Contribution],
    warnings: &mut Warnings,
) {
    for deny in denies {
        let names = |set: &FxHashSet<&str>| set.contains(p) || ancestors.iter().any(|g| set.contains(g));
        if !(deny.principals.contains(EVERYONE) || names(&deny.principals)) || names(&deny.excluded) {
            continue;
        }
        let Some((_, reach)) = deny.reach.iter().find(|(s, _)| s == sub) else { continue };
        if deny.d.do_not_apply_to_child_scopes {
            warnings.push(format!(
                "deny assignment {} applies to its scope {} only (doNotApplyToChildScopes): not removed from the grants",
                deny.d.id, deny.d.scope
            ));
            continue;
        }
        if deny.d.condition.is_some() {
            // Whether it denies depends on the request: reporting the actions as granted is the side that
            // never hides a permission.
            warnings.push(format!("deny assignment {} has a condition: not removed from the grants", deny.d.id));
            continue;
        }
        for c in contributions.iter_mut() {
            match (reach, &c.scope) {
                (Reach::Whole, _) => Arc::make_mut(&mut c.set).difference_with(&deny.set),
                (Reach::Inside(d), Some(s)) if at_or_below(s, d) => {
                    Arc::make_mut(&mut c.set).difference_with(&deny.set)
                }
                (Reach::Inside(d), scope) if scope.as_deref().is_none_or(|s| at_or_below(d, s)) => {
                    let mut carved = deny.set.clone();
                    carved.intersect_with(&c.set);
                    if !carved.is_empty() {
                        c.carved.push((carved, format!("!{}", clean_scope(d))));
                    }
                }
                _ => {}
            }
        }
    }
}

/// granted, unscoped, conditional and resource patterns from an identity's contributions.
fn fill_sets(
    g: &mut IdentityGrants,
    contributions: &[Contribution],
    catalog: &Catalog,
    pattern_lists: &mut FxHashMap<Vec<String>, Arc<[String]>>,
) {
    let mut granted = catalog.empty_set();
    let mut unscoped = catalog.empty_set();
    let mut unconditional = catalog.empty_set();
    for c in contributions {
        granted.union_with(&c.set);
        let mut free = (*c.set).clone();
        free.difference_with(&c.conditional);
        unconditional.union_with(&free);
        if c.scope.is_none() {
            let mut whole = (*c.set).clone();
            for (carved, _) in &c.carved {
                whole.difference_with(carved);
            }
            unscoped.union_with(&whole);
        }
    }
    let mut conditional = granted.clone();
    conditional.difference_with(&unconditional);
    let mut scoped = granted.clone();
    scoped.difference_with(&unscoped);
    let mut patterns: Vec<(ActionId, Arc<[String]>)> = Vec::new();
    for a in scoped.iter() {
        let mut list: Vec<String> = Vec::new();
        for c in contributions.iter().filter(|c| c.set.contains(a)) {
            if let Some(s) = &c.scope {
                list.push(s.clone());
            }
            list.extend(c.carved.iter().filter(|(set, _)| set.contains(a)).map(|(_, d)| d.clone()));
        }
        list.sort_by_key(|s| s.to_ascii_lowercase());
        list.dedup_by(|x, y| x.eq_ignore_ascii_case(y));
        let shared = pattern_lists.entry(list).or_insert_with_key(|k| Arc::from(k.clone().into_boxed_slice())).clone();
        patterns.push((a, shared));
    }
    g.granted = granted;
    g.unscoped = unscoped;
    g.conditional = conditional;
    g.resource_patterns = patterns;
}

/// Why an Azure identity is an administrator of its subscription, if it is: it holds every Azure
/// control-plane operation at the subscription or above (Owner's `*`; an ABAC condition restricting only
/// `Microsoft.Authorization` operations — Owner with constrained delegation — still leaves it in control of
/// every resource), or it holds there without condition `Microsoft.Authorization/roleAssignments/write`
/// (it can assign itself any role, Owner included), `roleDefinitions/write` (it can rewrite a custom role
/// it holds) or `elevateAccess/Action`.
pub fn is_admin(g: &IdentityGrants, catalog: &Catalog) -> Option<String> {
    let control = catalog.expand_azure("*", false);
    if !control.is_empty() && control.is_subset(&g.unscoped) {
        let mut conditional = control.clone();
        conditional.intersect_with(&g.conditional);
        let outside_authorization =
            conditional.iter().any(|id| !catalog.name(id).to_ascii_lowercase().starts_with("microsoft.authorization/"));
        if !outside_authorization {
            return Some(format!(
                "holds every Azure control-plane operation (Owner-like `*`) at subscription {} or above",
                g.account
            ));
        }
    }
    SELF_ESCALATION.iter().find_map(|(action, what)| {
        let id = catalog.lookup(action)?;
        (g.unscoped.contains(id) && !g.conditional.contains(id))
            .then(|| format!("holds {action} at subscription {} or above without condition: {what}", g.account))
    })
}

/// Azure operations that let their holder grant itself anything (the Azure part of
/// `findings::SELF_ESCALATION_ACTIONS`), with what they allow.
const SELF_ESCALATION: [(&str, &str); 3] = [
    ("Microsoft.Authorization/roleAssignments/write", "can assign itself any role"),
    ("Microsoft.Authorization/roleDefinitions/write", "can add any operation to a custom role it holds"),
    ("Microsoft.Authorization/elevateAccess/Action", "can make itself User Access Administrator at the root scope"),
];

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use super::*;
    use crate::azure::export::parse_export;

    const S1: &str = "11111111-1111-4111-8111-111111111111";
    const S2: &str = "22222222-2222-4222-8222-222222222222";
    const S3: &str = "33333333-3333-4333-8333-333333333333";
    const ALICE: &str = "1a1a1a1a-0000-4000-8000-000000000001";
    const BOB: &str = "1a1a1a1a-0000-4000-8000-000000000002";
    const CAROL: &str = "1a1a1a1a-0000-4000-8000-000000000003";
    const DAVE: &str = "1a1a1a1a-0000-4000-8000-000000000004";
    const EVE: &str = "1a1a1a1a-0000-4000-8000-000000000005";
    const FRANK: &str = "1a1a1a1a-0000-4000-8000-000000000006";
    const GRACE: &str = "1a1a1a1a-0000-4000-8000-000000000007";
    const READERS: &str = "6b6b6b6b-0000-4000-8000-00000000b001";
    const OPS: &str = "6b6b6b6b-0000-4000-8000-00000000b002";
    const ONCALL: &str = "6b6b6b6b-0000-4000-8000-00000000b003";
    const MI: &str = "5e5e5e5e-0000-4000-8000-00000000e001";
    const BOT: &str = "5e5e5e5e-0000-4000-8000-00000000e002";
    const FOREIGN: &str = "7f7f7f7f-0000-4000-8000-00000000f001";

    fn catalog() -> &'static Catalog {
        static C: OnceLock<Catalog> = OnceLock::new();
        C.get_or_init(|| Catalog::all_clouds().unwrap())
    }

    fn builtin() -> &'static [RoleDefinition] {
        static B: OnceLock<Vec<RoleDefinition>> = OnceLock::new();
        B.get_or_init(|| builtin_roles().unwrap())
    }

    fn inventory(extra: &[&str]) -> AzureInventory {
        let mut inv = AzureInventory::new();
        for text in [
            include_str!("testdata/role_assignments.json"),
            include_str!("testdata/custom_roles.json"),
            include_str!("testdata/deny_assignments.json"),
            include_str!("testdata/users.json"),
            include_str!("testdata/groups.json"),
            include_str!("testdata/service_principals.json"),
            include_str!("testdata/management_groups.json"),
            include_str!("testdata/subscriptions.json"),
        ]
        .into_iter()
        .chain(extra.iter().copied())
        {
            inv.add(parse_export(text.as_bytes()).unwrap());
        }
        inv
    }

    fn fixture() -> &'static AzureEntitlements {
        static E: OnceLock<AzureEntitlements> = OnceLock::new();
        E.get_or_init(|| evaluate_with_roles(&inventory(&[]), catalog(), builtin()))
    }

    fn get<'a>(e: &'a AzureEntitlements, sub: &str, p: &str) -> &'a IdentityGrants {
        let uid = identity_uid(sub, p);
        e.grants.iter().find(|g| g.arn == uid).unwrap_or_else(|| panic!("no identity {uid}"))
    }

    fn has(e: &AzureEntitlements, sub: &str, p: &str) -> bool {
        e.grants.iter().any(|g| g.arn == identity_uid(sub, p))
    }

    fn id(name: &str) -> ActionId {
        catalog().lookup(name).unwrap_or_else(|| panic!("{name} not in the catalog"))
    }

    #[test]
    fn builtin_roles_are_embedded() {
        let roles = builtin();
        assert!(roles.len() > 900, "{}", roles.len());
        assert!(roles.iter().any(|r| r.guid == "8e3af657-a8ff-443c-a75c-2fe8c4bcb635" && r.role_name == "Owner"));
    }

    #[test]
    fn owner_at_subscription_is_admin() {
        let e = fixture();
        let alice = get(e, S1, ALICE);
        assert_eq!(alice.arn, format!("azure:/subscriptions/{S1}/principals/{ALICE}"));
        assert_eq!((alice.account.as_str(), alice.kind, alice.cloud), (S1, IdentityKind::User, Cloud::Azure));
        assert_eq!(alice.name, "alice@contoso.com");
        assert_eq!(alice.emails, ["alice@contoso.com", "alice.smith@contoso.com", "alice@gmail.example"]);
        assert_eq!(alice.created, crate::azure::lenient::parse_time("2021-03-04T08:00:00Z"));
        assert_eq!(alice.last_used, crate::azure::lenient::parse_time("2024-05-03T10:00:00Z"));
        let control = catalog().expand_azure("*", false);
        assert!(control.is_subset(&alice.unscoped), "Owner's * is every control-plane operation");
        assert!(alice.resource_patterns.is_empty() && alice.conditional.is_empty());
        // Owner grants no data actions.
        assert!(!alice.granted.contains(id("Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read")));
        let why = is_admin(alice, catalog()).unwrap();
        assert!(why.contains("Owner-like"), "{why}");
        // Alice is excluded from the deny assignment: she keeps storage account deletion.
        assert!(alice.unscoped.contains(id("Microsoft.Storage/storageAccounts/delete")));
        assert!(alice.warnings.is_empty(), "{:?}", alice.warnings);
        // Only where she has an assignment.
        assert!(!has(e, S2, ALICE) && !has(e, S3, ALICE));
    }

    #[test]
    fn reader_at_management_group_reaches_both_subscriptions_below_it() {
        let e = fixture();
        for sub in [S2, S3] {
            let g = get(e, sub, READERS);
            assert_eq!((g.kind, g.name.as_str()), (IdentityKind::Group, "Platform Readers"));
            assert!(g.unscoped.contains(id("Microsoft.Storage/storageAccounts/read")));
            assert!(!g.granted.contains(id("Microsoft.Storage/storageAccounts/write")));
            assert!(is_admin(g, catalog()).is_none());
        }
        assert!(!has(e, S1, READERS), "corp-prod is under another management group");
    }

    #[test]
    fn contributor_cannot_write_role_assignments() {
        let e = fixture();
        let bob = get(e, S1, BOB);
        assert!(bob.unscoped.contains(id("Microsoft.Compute/virtualMachines/write")));
        assert!(!bob.granted.contains(id("Microsoft.Authorization/roleAssignments/write")));
        assert!(!bob.granted.contains(id("Microsoft.Authorization/roleAssignments/delete")));
        assert!(bob.granted.contains(id("Microsoft.Authorization/roleAssignments/read")));
        assert!(is_admin(bob, catalog()).is_none());
        // Through Platform Readers he reads the platform subscriptions too.
        let bob2 = get(e, S2, BOB);
        assert!(bob2.unscoped.contains(id("Microsoft.Compute/virtualMachines/read")));
        assert!(!bob2.granted.contains(id("Microsoft.Compute/virtualMachines/write")));
        assert_eq!(bob2.groups, [identity_uid(S2, READERS)]);
        assert!(bob.groups.is_empty(), "the group has no identity in S1");
    }

    #[test]
    fn custom_role_is_its_actions_minus_its_not_actions() {
        let e = fixture();
        let dave = get(e, S1, DAVE);
        assert!(dave.unscoped.contains(id("Microsoft.Storage/storageAccounts/listKeys/action")));
        assert!(dave.unscoped.contains(id("Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read")));
        assert!(!dave.granted.contains(id("Microsoft.Storage/storageAccounts/blobServices/containers/blobs/delete")));
        assert!(!dave.granted.contains(id("Microsoft.Storage/storageAccounts/write")));
        let names = dave.granted.names(catalog());
        assert!(
            names.iter().all(|n| n.starts_with("Microsoft.Storage/") || n.starts_with("Microsoft.Resources/")),
            "{names:?}"
        );
        // An operation no built-in role names is not in the catalog: granted, said, not counted.
        assert!(
            dave.warnings.iter().any(|w| w.contains("not counted: Microsoft.Storage/storageAccounts/failover/action")),
            "{:?}",
            dave.warnings
        );
        // His other assignment is at a management group the hierarchy does not know.
        assert!(
            dave.warnings.iter().any(|w| w.contains("management group sandbox is not in the hierarchy")),
            "{:?}",
            dave.warnings
        );
    }

    #[test]
    fn nested_groups_pass_their_roles_down_through_a_cycle() {
        let e = fixture();
        for sub in [S2, S3] {
            let carol = get(e, sub, CAROL);
            assert!(carol.unscoped.contains(id("Microsoft.Storage/storageAccounts/read")));
            assert_eq!(carol.name, "carol_fabrikam.com#EXT#@contoso.onmicrosoft.com");
            assert_eq!(carol.emails, ["carol@fabrikam.com"], "a guest's #EXT# UPN is not an address");
            let mut expected = vec![identity_uid(sub, READERS), identity_uid(sub, OPS), identity_uid(sub, ONCALL)];
            expected.sort();
            let mut groups = carol.groups.clone();
            groups.sort();
            assert_eq!(groups, expected);
            // Ops and Ops On-Call hold Readers' role through membership (and each other's, in the cycle).
            assert_eq!(get(e, sub, OPS).granted, get(e, sub, READERS).granted);
            assert_eq!(get(e, sub, ONCALL).granted, get(e, sub, READERS).granted);
        }
        let bot = get(e, S2, BOT);
        assert_eq!((bot.kind, bot.name.as_str()), (IdentityKind::ServiceAccount, "deploy-bot"));
        assert!(bot.unscoped.contains(id("Microsoft.Storage/storageAccounts/read")));
    }

    #[test]
    fn resource_group_assignment_is_scoped() {
        let e = fixture();
        let eve = get(e, S1, EVE);
        let write = id("Microsoft.Compute/virtualMachines/write");
        assert!(eve.granted.contains(write) && !eve.unscoped.contains(write));
        assert!(eve.unscoped.is_empty());
        let (_, patterns) = eve.resource_patterns.iter().find(|(a, _)| *a == write).unwrap();
        assert_eq!(&patterns[..], [format!("/subscriptions/{S1}/resourceGroups/rg-app")]);
        assert_eq!(eve.resource_patterns.len(), eve.granted.len());
        assert!(is_admin(eve, catalog()).is_none());
    }

    #[test]
    fn deny_assignment_removes_for_everyone_but_the_excluded() {
        let e = fixture();
        let delete = id("Microsoft.Storage/storageAccounts/delete");
        let mi = get(e, S1, MI);
        assert_eq!((mi.kind, mi.name.as_str()), (IdentityKind::ServiceAccount, "id-web-prod"));
        assert!(mi.unscoped.contains(id("Microsoft.Storage/storageAccounts/write")));
        assert!(!mi.granted.contains(delete));
        assert!(!get(e, S1, BOB).granted.contains(delete));
        assert!(get(e, S1, ALICE).granted.contains(delete));
    }

    #[test]
    fn conditioned_assignment_makes_the_actions_it_names_conditional() {
        let e = fixture();
        let frank = get(e, S1, FRANK);
        let blobs = id("Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read");
        let containers = id("Microsoft.Storage/storageAccounts/blobServices/containers/read");
        assert!(frank.granted.contains(blobs) && frank.granted.contains(containers));
        assert_eq!(frank.conditional.iter().collect::<Vec<_>>(), [blobs]);
    }

    #[test]
    fn unknown_role_and_unknown_principal_are_warnings() {
        let e = fixture();
        let grace = get(e, S1, GRACE);
        assert!(grace.granted.is_empty());
        assert!(
            grace
                .warnings
                .iter()
                .any(|w| w.contains("unknown role definition") && w.contains("deadbeef-0000-4000-8000-00000000dead")),
            "{:?}",
            grace.warnings
        );
        let foreign = get(e, S1, FOREIGN);
        assert_eq!((foreign.kind, foreign.name.as_str()), (IdentityKind::Group, FOREIGN));
        assert!(foreign.warnings.iter().any(|w| w.contains("not in the directory exports")), "{:?}", foreign.warnings);
        assert!(foreign.unscoped.contains(id("Microsoft.Compute/virtualMachines/read")));
    }

    #[test]
    fn deny_below_the_subscription_carves_the_scope_out() {
        let extra = r#"{"roleAssignments":[
              {"principalId":"9a9a9a9a-0000-4000-8000-000000000001","principalType":"User","roleDefinitionName":"Contributor",
               "scope":"/subscriptions/11111111-1111-4111-8111-111111111111"},
              {"principalId":"9a9a9a9a-0000-4000-8000-000000000002","principalType":"User","roleDefinitionName":"Contributor",
               "scope":"/subscriptions/11111111-1111-4111-8111-111111111111/resourceGroups/RG-LOCKED/providers/Microsoft.Compute/virtualMachines/vm1"}],
            "denyAssignments":[{"id":"/subscriptions/11111111-1111-4111-8111-111111111111/resourceGroups/rg-locked/providers/Microsoft.Authorization/denyAssignments/d2",
               "properties":{"permissions":[{"actions":["Microsoft.Compute/virtualMachines/write"]}],
               "principals":[{"id":"9A9A9A9A-0000-4000-8000-000000000001","type":"User"},{"id":"9a9a9a9a-0000-4000-8000-000000000002","type":"User"}],
               "scope":"/subscriptions/11111111-1111-4111-8111-111111111111/resourceGroups/rg-locked"}}]}"#;
        let e = evaluate_with_roles(&inventory(&[extra]), catalog(), builtin());
        let write = id("Microsoft.Compute/virtualMachines/write");
        let wide = get(&e, S1, "9a9a9a9a-0000-4000-8000-000000000001");
        assert!(wide.granted.contains(write) && !wide.unscoped.contains(write));
        let (_, patterns) = wide.resource_patterns.iter().find(|(a, _)| *a == write).unwrap();
        assert_eq!(&patterns[..], [format!("!/subscriptions/{S1}/resourceGroups/rg-locked")]);
        assert!(wide.unscoped.contains(id("Microsoft.Compute/virtualMachines/delete")), "other actions untouched");
        let inside = get(&e, S1, "9a9a9a9a-0000-4000-8000-000000000002");
        assert!(!inside.granted.contains(write), "the deny covers the whole VM scope");
        assert!(inside.granted.contains(id("Microsoft.Compute/virtualMachines/delete")));
    }

    #[test]
    fn conditioned_and_scope_only_denies_remove_nothing_but_say_so() {
        let extra = r#"{"denyAssignments":[
            {"id":"/subscriptions/11111111-1111-4111-8111-111111111111/providers/Microsoft.Authorization/denyAssignments/d3",
             "properties":{"permissions":[{"actions":["Microsoft.Compute/*"]}],"principals":[{"id":"1a1a1a1a-0000-4000-8000-000000000002","type":"User"}],
             "scope":"/subscriptions/11111111-1111-4111-8111-111111111111","doNotApplyToChildScopes":true}},
            {"id":"/subscriptions/11111111-1111-4111-8111-111111111111/providers/Microsoft.Authorization/denyAssignments/d4",
             "properties":{"permissions":[{"actions":["Microsoft.Network/*"]}],"principals":[{"id":"6b6b6b6b-0000-4000-8000-00000000b001","type":"Group"}],
             "scope":"/","condition":"@Resource[Microsoft.Network/virtualNetworks:name] StringEquals 'hub'","conditionVersion":"2.0"}}]}"#;
        let e = evaluate_with_roles(&inventory(&[extra]), catalog(), builtin());
        let bob = get(&e, S1, BOB);
        assert!(bob.unscoped.contains(id("Microsoft.Compute/virtualMachines/write")));
        assert!(
            bob.unscoped.contains(id("Microsoft.Network/virtualNetworks/write")),
            "bob is in the group the deny names"
        );
        assert!(
            bob.warnings.iter().any(|w| w.contains("d3") && w.contains("doNotApplyToChildScopes")),
            "{:?}",
            bob.warnings
        );
        assert!(bob.warnings.iter().any(|w| w.contains("d4") && w.contains("condition")), "{:?}", bob.warnings);
        assert!(get(&e, S1, ALICE).warnings.is_empty(), "a deny that names someone else is no concern of alice's");
    }

    #[test]
    fn root_scope_and_tenant_root_group_reach_every_subscription() {
        let extra = r#"[{"principalId":"9b9b9b9b-0000-4000-8000-000000000001","roleDefinitionName":"Reader","scope":"/"},
            {"principalId":"9b9b9b9b-0000-4000-8000-000000000002","roleDefinitionName":"Reader",
             "scope":"/providers/Microsoft.Management/managementGroups/72F988BF-86F1-41AF-91AB-2D7CD011DB47"}]"#;
        let mut inv = AzureInventory::new();
        inv.add(parse_export(include_str!("testdata/subscriptions.json").as_bytes()).unwrap());
        inv.add(parse_export(extra.as_bytes()).unwrap());
        let e = evaluate_with_roles(&inv, catalog(), builtin());
        for p in ["9b9b9b9b-0000-4000-8000-000000000001", "9b9b9b9b-0000-4000-8000-000000000002"] {
            for sub in [S1, S2, S3] {
                assert!(get(&e, sub, p).unscoped.contains(id("Microsoft.Compute/virtualMachines/read")));
            }
        }
        assert!(e.warnings.is_empty(), "{:?}", e.warnings);
    }

    #[test]
    fn role_assignment_writers_are_admins_unless_a_condition_constrains_them() {
        let extra = r#"[{"principalId":"9c9c9c9c-0000-4000-8000-000000000001","roleDefinitionName":"User Access Administrator",
                "scope":"/subscriptions/11111111-1111-4111-8111-111111111111"},
            {"principalId":"9c9c9c9c-0000-4000-8000-000000000002","roleDefinitionName":"Key Vault Data Access Administrator",
                "scope":"/subscriptions/11111111-1111-4111-8111-111111111111"},
            {"principalId":"9c9c9c9c-0000-4000-8000-000000000003","roleDefinitionName":"User Access Administrator",
                "scope":"/subscriptions/11111111-1111-4111-8111-111111111111/resourceGroups/rg-app"},
            {"principalId":"9c9c9c9c-0000-4000-8000-000000000004","roleDefinitionName":"Role Author",
                "scope":"/subscriptions/11111111-1111-4111-8111-111111111111"},
            {"name":"c0ffee00-0000-4000-8000-00000000c002","roleName":"Role Author","roleType":"CustomRole",
                "permissions":[{"actions":["Microsoft.Authorization/roleDefinitions/*","*/read"]}]}]"#;
        let e = evaluate_with_roles(&inventory(&[extra]), catalog(), builtin());
        let uaa = get(&e, S1, "9c9c9c9c-0000-4000-8000-000000000001");
        assert!(is_admin(uaa, catalog()).unwrap().contains("roleAssignments/write"));
        let kv = get(&e, S1, "9c9c9c9c-0000-4000-8000-000000000002");
        let write = id("Microsoft.Authorization/roleAssignments/write");
        assert!(kv.unscoped.contains(write) && kv.conditional.contains(write));
        assert!(
            !kv.conditional.contains(id("Microsoft.Resources/subscriptions/read")),
            "only what the condition names"
        );
        assert!(is_admin(kv, catalog()).is_none());
        assert!(
            is_admin(get(&e, S1, "9c9c9c9c-0000-4000-8000-000000000003"), catalog()).is_none(),
            "scoped below the subscription"
        );
        // The catalog holds the operations built-in roles name; roleDefinitions/write is not one of them:
        // what a custom role grants beyond the catalog is said, not lost.
        let author = get(&e, S1, "9c9c9c9c-0000-4000-8000-000000000004");
        match catalog().lookup("Microsoft.Authorization/roleDefinitions/write") {
            Some(_) => assert!(is_admin(author, catalog()).unwrap().contains("custom role")),
            None => assert!(
                author
                    .warnings
                    .iter()
                    .any(|w| w.contains("not counted: Microsoft.Authorization/roleDefinitions/write")),
                "{:?}",
                author.warnings
            ),
        }
    }

    #[test]
    fn assignments_reaching_nothing_are_reported_once() {
        let mut inv = AzureInventory::new();
        inv.add(parse_export(include_str!("testdata/management_groups.json").as_bytes()).unwrap());
        let extra = r#"[{"principalId":"9d9d9d9d-0000-4000-8000-000000000001","roleDefinitionName":"Reader",
            "scope":"/providers/Microsoft.Management/managementGroups/Corp"},
            {"principalId":"9d9d9d9d-0000-4000-8000-000000000002","roleDefinitionName":"Reader","scope":"/providers/Microsoft.Management/managementGroups/empty-mg"}]"#;
        // The same file twice: assignments are kept once.
        inv.add(parse_export(extra.as_bytes()).unwrap());
        inv.add(parse_export(extra.as_bytes()).unwrap());
        assert_eq!(inv.role_assignment_count(), 2);
        let e = evaluate_with_roles(&inv, catalog(), builtin());
        assert_eq!(e.grants.len(), 1);
        assert_eq!(e.grants[0].arn, identity_uid(S1, "9d9d9d9d-0000-4000-8000-000000000001"));
        assert_eq!(e.warnings.len(), 1, "{:?}", e.warnings);
        assert!(e.warnings[0].contains("empty-mg is not in the hierarchy"), "{:?}", e.warnings);
    }
}
