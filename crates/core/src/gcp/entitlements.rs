//! A [`GcpInventory`] to one [`IdentityGrants`] per (member, project), with the public exposures, the
//! service-account impersonation edges and the administrators.
//!
//! Rules (docs/gcp.md has the long form):
//!
//! * **Reach.** A binding reaches a project when it is on the project, on a folder or organization above it
//!   (`ancestors` of the asset export, `folders`/`organization` of search results, resource and project
//!   listings), or on a resource inside it (a bucket, dataset, service account...: the asset's project).
//! * **Identities.** Every member bound by a binding that reaches the project, and every member of a bound
//!   group (transitively, when the groups export lists them): uid `gcp:projects/{projectId}/{member}`,
//!   account = project id. Project numbers become ids through the project records; a number without one
//!   stays a number (with a warning). Service accounts with user-managed keys are identities of their home
//!   project even when bound nowhere, so their keys are tracked.
//! * **Permissions.** A role is a predefined role (the compiled-in `gcp_predefined_roles_jsonl`) or a custom
//!   role of the inventory (by its full name); permissions are looked up in the catalog, and custom-role
//!   permissions the catalog does not know are warnings. Bindings on the project or above grant unscoped;
//!   bindings on a resource grant scoped, with the resource's full name as the pattern; a binding with a
//!   `condition` grants conditionally (unless an unconditional binding grants the same).
//! * **Groups.** A member inherits its groups' bindings (nested groups too). `projectOwner:P` (and Editor,
//!   Viewer) members of bucket policies are expanded to the unconditional holders of that basic role on P.
//! * **Deny.** Unconditional deny rules attached at the project or above remove their denied permissions
//!   (minus exception permissions) from the principals they name (minus exception principals), everywhere in
//!   the project. Conditional deny rules are not applied (their conditions test request-time attributes —
//!   resource tags, request time, the resource's name — which an export does not have) and are warnings.
//! * **Public.** `allUsers` / `allAuthenticatedUsers` are no identity; each binding to them is a
//!   [`PublicExposure`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use grantwatch_types::{Cloud, IdentityKind};
use rustc_hash::{FxHashMap, FxHashSet};

use super::export::{GcpInventory, IamPolicyRecord, KeyType, is_container_node, node_of};
use super::member::{DenyPrincipal, MemberKind, is_service_account_email, parse_deny_principal, parse_member};
use crate::catalog::{ActionId, ActionSet, Catalog};
use crate::iam::AccessKey;
use crate::policy::IdentityGrants;

/// A binding that makes a resource reachable by anyone.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PublicExposure {
    /// The project the resource is in, when known (`None` for an organization or folder).
    pub project: Option<String>,
    /// The resource's full name.
    pub resource: String,
    pub role: String,
    /// `allUsers` or `allAuthenticatedUsers`.
    pub member: String,
    /// The binding carries a condition.
    pub conditional: bool,
}

/// What [`entitlements`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct GcpEntitlements {
    /// Sorted by (account, uid).
    pub identities: Vec<IdentityGrants>,
    pub public: Vec<PublicExposure>,
    /// Problems of the inventory as a whole (each once): unknown roles, unresolved projects, conditional deny rules.
    pub warnings: Vec<String>,
}

/// The permissions that let one principal act as a service account.
pub const IMPERSONATION_PERMISSIONS: &[&str] = &[
    "iam.serviceAccounts.actAs",
    "iam.serviceAccounts.getAccessToken",
    "iam.serviceAccounts.signBlob",
    "iam.serviceAccounts.signJwt",
    "iam.serviceAccounts.implicitDelegation",
    "iam.serviceAccounts.getOpenIdToken",
];

/// Permissions that let the holder rewrite the allow policy of the project (or a node above it): it can
/// grant itself any role.
pub const ADMIN_PERMISSIONS: &[&str] = &[
    "resourcemanager.organizations.setIamPolicy",
    "resourcemanager.folders.setIamPolicy",
    "resourcemanager.projects.setIamPolicy",
];

/// How many inventory warnings [`GcpEntitlements::warnings`] keeps (then a count of the rest).
pub const MAX_WARNINGS: usize = 1000;

/// The uid of `member` in `project_id`.
pub fn identity_uid(project_id: &str, member: &str) -> String {
    format!("gcp:projects/{project_id}/{member}")
}

/// The resource hierarchy: project numbers to ids, each node's ancestors.
struct Hierarchy {
    number_to_id: FxHashMap<String, String>,
    parents: FxHashMap<String, FxHashSet<String>>,
}

impl Hierarchy {
    fn new(inv: &GcpInventory) -> Hierarchy {
        let mut number_to_id = FxHashMap::default();
        for p in &inv.projects {
            if let (Some(n), Some(id)) = (&p.number, &p.id) {
                number_to_id.insert(n.clone(), id.clone());
            }
        }
        let mut h = Hierarchy { number_to_id, parents: FxHashMap::default() };
        let add_chain = |h: &mut Hierarchy, node: &str, above: &[String]| {
            // `above` is nearest first: each node has every later one above it.
            let mut chain = Vec::with_capacity(above.len() + 1);
            chain.push(h.canon(node));
            chain.extend(above.iter().map(|a| h.canon(a)));
            for i in 0..chain.len() {
                let (lower, higher) = chain.split_at(i + 1);
                h.parents.entry(lower[i].clone()).or_default().extend(higher.iter().cloned());
            }
        };
        for (node, above) in &inv.hierarchy {
            add_chain(&mut h, node, above);
        }
        for p in &inv.policies {
            if let Some((first, rest)) = p.ancestors.split_first()
                && !rest.is_empty()
            {
                add_chain(&mut h, first, rest);
            }
        }
        h
    }

    /// `projects/123` → `projects/my-id` when the number's id is known; other nodes unchanged.
    fn canon(&self, node: &str) -> String {
        let node = node_of(node);
        if let Some(n) = node.strip_prefix("projects/")
            && let Some(id) = self.number_to_id.get(n)
        {
            return format!("projects/{id}");
        }
        node
    }

    /// The node and every node above it.
    fn reach(&self, node: &str) -> FxHashSet<String> {
        let mut seen = FxHashSet::default();
        let mut queue = VecDeque::from([node.to_string()]);
        while let Some(n) = queue.pop_front() {
            if !seen.insert(n.clone()) {
                continue;
            }
            if let Some(ps) = self.parents.get(&n) {
                queue.extend(ps.iter().filter(|p| !seen.contains(*p)).cloned());
            }
        }
        seen
    }
}

/// Where a policy sits: on a container (organization, folder, project) or on a resource inside a project.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scope {
    Container(String),
    Resource { project: String },
    Unknown,
}

fn scope_of(p: &IamPolicyRecord, h: &Hierarchy) -> Scope {
    let own = node_of(&p.resource);
    if is_container_node(&own) {
        return Scope::Container(h.canon(&own));
    }
    let project = p
        .project
        .clone()
        .or_else(|| p.ancestors.iter().find(|a| a.starts_with("projects/")).cloned())
        .or_else(|| project_in_name(&p.resource).map(|x| format!("projects/{x}")));
    match project {
        Some(pr) => Scope::Resource { project: h.canon(&pr) },
        None => Scope::Unknown,
    }
}

/// `//bigquery.googleapis.com/projects/p/datasets/d` → `p` (`projects/_` of buckets names none).
fn project_in_name(name: &str) -> Option<&str> {
    let at = name.find("/projects/")?;
    let rest = &name[at + "/projects/".len()..];
    rest.split('/').next().filter(|p| !p.is_empty() && *p != "_" && *p != "-")
}

/// Roles to permission sets, resolved once each.
struct RoleBook<'c> {
    catalog: &'c Catalog,
    predefined: FxHashMap<String, Vec<String>>,
    custom: FxHashMap<String, CustomDef>,
    resolved: FxHashMap<String, Arc<ResolvedRole>>,
}

struct CustomDef {
    permissions: Vec<String>,
    listed: bool,
    deleted: bool,
}

#[derive(Debug)]
struct ResolvedRole {
    set: ActionSet,
    /// Problems an identity holding the role should know of (unknown role, unknown permissions).
    warnings: Vec<String>,
}

impl<'c> RoleBook<'c> {
    fn new(catalog: &'c Catalog, inv: &GcpInventory, warnings: &mut Vec<String>) -> RoleBook<'c> {
        let mut predefined = FxHashMap::default();
        match read_predefined_roles() {
            Ok(roles) => predefined = roles,
            Err(e) => warnings.push(format!("predefined GCP roles unreadable ({e}): only custom roles grant")),
        }
        // A role read twice (a `roles list` without permissions, then `describe`): the record listing
        // permissions wins, else the last one.
        let mut custom: FxHashMap<String, CustomDef> = FxHashMap::default();
        for r in &inv.custom_roles {
            let def =
                CustomDef { permissions: r.permissions.clone(), listed: r.permissions_listed, deleted: r.deleted };
            match custom.get(&r.name) {
                Some(old) if old.listed && !def.listed => {}
                _ => {
                    custom.insert(r.name.clone(), def);
                }
            }
        }
        RoleBook { catalog, predefined, custom, resolved: FxHashMap::default() }
    }

    fn resolve(&mut self, role: &str) -> Arc<ResolvedRole> {
        if let Some(r) = self.resolved.get(role) {
            return r.clone();
        }
        let mut set = self.catalog.empty_set();
        let mut warnings = Vec::new();
        // A custom role of the inventory wins: `roles/x` there is a newer definition of a predefined role.
        let perms = match (self.custom.get(role), self.predefined.get(role)) {
            (Some(c), _) if c.deleted => {
                warnings.push(format!("role {role} is deleted: grants nothing"));
                None
            }
            (Some(c), _) if !c.listed => {
                warnings.push(format!(
                    "custom role {role} was read without includedPermissions (`gcloud iam roles list` omits them; \
                     export `gcloud iam roles describe` per role): grants nothing"
                ));
                None
            }
            (Some(c), _) => Some((&c.permissions, true)),
            (None, Some(p)) => Some((p, false)),
            (None, None) => {
                warnings.push(format!(
                    "role {role} unknown (neither predefined nor in the custom roles read): grants nothing"
                ));
                None
            }
        };
        if let Some((perms, custom)) = perms {
            let mut unknown = Vec::new();
            for p in perms {
                match self.catalog.lookup(p).filter(|&id| self.catalog.cloud_of(id) == Cloud::Gcp) {
                    Some(id) => set.insert(id),
                    None => unknown.push(p.as_str()),
                }
            }
            if custom && !unknown.is_empty() {
                let shown: Vec<&str> = unknown.iter().take(10).copied().collect();
                warnings.push(format!(
                    "custom role {role}: {} permission(s) unknown to the catalog, not counted: {}{}",
                    unknown.len(),
                    shown.join(", "),
                    if unknown.len() > shown.len() { ", ..." } else { "" }
                ));
            }
        }
        let r = Arc::new(ResolvedRole { set, warnings });
        self.resolved.insert(role.to_string(), r.clone());
        r
    }
}

/// The compiled-in predefined roles: name → includedPermissions.
fn read_predefined_roles() -> Result<FxHashMap<String, Vec<String>>, String> {
    use std::io::Read;
    let mut text = String::new();
    flate2::read::GzDecoder::new(crate::catalog::gcp_predefined_roles_jsonl())
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Role {
        name: String,
        #[serde(default)]
        included_permissions: Vec<String>,
    }
    let mut out = FxHashMap::default();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let r: Role = serde_json::from_str(line).map_err(|e| format!("line {}: {e}", i + 1))?;
        out.insert(r.name, r.included_permissions);
    }
    Ok(out)
}

/// One binding's place: (policy index, binding index).
type BindingRef = (usize, usize);

/// Everything computed once per inventory.
struct Model<'a> {
    inv: &'a GcpInventory,
    hierarchy: Hierarchy,
    scopes: Vec<Scope>,
    /// Policies on each container node.
    on_container: FxHashMap<String, Vec<usize>>,
    /// Resource policies per project.
    in_project: FxHashMap<String, Vec<usize>>,
    /// Group (or `projectOwner:P` pseudo-group) key → its direct member keys.
    group_members: FxHashMap<String, Vec<String>>,
    /// Member key → the groups it is directly in.
    member_of: FxHashMap<String, Vec<String>>,
}

impl<'a> Model<'a> {
    fn new(inv: &'a GcpInventory, warnings: &mut Vec<String>) -> Model<'a> {
        let hierarchy = Hierarchy::new(inv);
        let scopes: Vec<Scope> = inv.policies.iter().map(|p| scope_of(p, &hierarchy)).collect();
        let mut on_container: FxHashMap<String, Vec<usize>> = FxHashMap::default();
        let mut in_project: FxHashMap<String, Vec<usize>> = FxHashMap::default();
        for (i, s) in scopes.iter().enumerate() {
            match s {
                Scope::Container(n) => on_container.entry(n.clone()).or_default().push(i),
                Scope::Resource { project } => in_project.entry(project.clone()).or_default().push(i),
                Scope::Unknown => warnings.push(format!(
                    "{}: IAM policy of {} has no project (no ancestors, project or projects/ in its name): not counted",
                    inv.policies[i].origin, inv.policies[i].resource
                )),
            }
        }
        let mut m = Model {
            inv,
            hierarchy,
            scopes,
            on_container,
            in_project,
            group_members: FxHashMap::default(),
            member_of: FxHashMap::default(),
        };
        for g in &inv.groups {
            let key = format!("group:{}", g.email);
            m.group_members.entry(key).or_default().extend(g.members.iter().cloned());
        }
        m.add_convenience_groups();
        for (g, members) in &m.group_members {
            for mem in members {
                m.member_of.entry(mem.clone()).or_default().push(g.clone());
            }
        }
        for v in m.member_of.values_mut() {
            v.sort_unstable();
            v.dedup();
        }
        m
    }

    /// `projectOwner:P` / `projectEditor:P` / `projectViewer:P` as groups of the unconditional holders of
    /// `roles/owner` / `editor` / `viewer` on P (bound on P or above).
    fn add_convenience_groups(&mut self) {
        let mut wanted: BTreeSet<String> = BTreeSet::new();
        for p in &self.inv.policies {
            for b in &p.bindings {
                for mem in &b.members {
                    let m = parse_member(mem);
                    if m.kind == MemberKind::Convenience {
                        wanted.insert(m.key);
                    }
                }
            }
        }
        for key in wanted {
            let Some((kind, project)) = key.split_once(':') else { continue };
            let role = match kind {
                "projectOwner" => "roles/owner",
                "projectEditor" => "roles/editor",
                _ => "roles/viewer",
            };
            let node = self.hierarchy.canon(&format!("projects/{project}"));
            let mut members = Vec::new();
            for n in self.hierarchy.reach(&node) {
                for &pi in self.on_container.get(&n).into_iter().flatten() {
                    for b in &self.inv.policies[pi].bindings {
                        if b.role == role && b.condition.is_none() {
                            members.extend(b.members.iter().map(|x| parse_member(x).key));
                        }
                    }
                }
            }
            self.group_members.insert(key, members);
        }
    }

    /// Every group `member` is in, transitively (cycles and depth bounded by the visited set). Sorted.
    fn groups_of(&self, member: &str) -> Vec<String> {
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let mut queue: VecDeque<&str> = VecDeque::from([member]);
        while let Some(m) = queue.pop_front() {
            for g in self.member_of.get(m).into_iter().flatten() {
                if g != member && seen.insert(g.clone()) {
                    queue.push_back(g);
                }
            }
        }
        seen.into_iter().collect()
    }

    /// Every member of group `g`, transitively (including nested groups' keys).
    fn members_of(&self, g: &str) -> Vec<String> {
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let mut queue: VecDeque<&str> = VecDeque::from([g]);
        while let Some(x) = queue.pop_front() {
            for m in self.group_members.get(x).into_iter().flatten() {
                if seen.insert(m.clone()) {
                    queue.push_back(m);
                }
            }
        }
        seen.into_iter().collect()
    }

    /// Every project the inventory names, canonical (`projects/{id}`, else `projects/{number}`). Sorted.
    fn projects(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let h = &self.hierarchy;
        for p in &self.inv.projects {
            if let Some(n) = p.id.as_ref().or(p.number.as_ref()) {
                out.insert(h.canon(&format!("projects/{n}")));
            }
        }
        for (node, _) in &self.inv.hierarchy {
            if node.starts_with("projects/") {
                out.insert(h.canon(node));
            }
        }
        for s in &self.scopes {
            match s {
                Scope::Container(n) if n.starts_with("projects/") => {
                    out.insert(n.clone());
                }
                Scope::Resource { project } => {
                    out.insert(project.clone());
                }
                _ => {}
            }
        }
        out
    }
}

/// Builds every identity's grants, the public exposures and the inventory's warnings. Never panics.
pub fn entitlements(inv: &GcpInventory, catalog: &Catalog) -> GcpEntitlements {
    let mut warnings: Vec<String> = Vec::new();
    let model = Model::new(inv, &mut warnings);
    let mut roles = RoleBook::new(catalog, inv, &mut warnings);
    let mut interned: FxHashMap<Vec<String>, Arc<[String]>> = FxHashMap::default();
    let mut identities = Vec::new();
    let mut unresolved_numbers = BTreeSet::new();

    // Deny rules, each parsed once.
    struct Rule {
        attachment: String,
        denied: Vec<DenyPrincipal>,
        except: Vec<DenyPrincipal>,
        set: ActionSet,
        conditional: bool,
        name: String,
    }
    let mut rules = Vec::new();
    for dp in &inv.deny_policies {
        for (i, r) in dp.rules.iter().enumerate() {
            let mut set = catalog.empty_set();
            for p in &r.denied_permissions {
                set.union_with(&catalog.expand_gcp(p));
            }
            for p in &r.exception_permissions {
                set.difference_with(&catalog.expand_gcp(p));
            }
            let denied: Vec<DenyPrincipal> = r.denied_principals.iter().map(|p| parse_deny_principal(p)).collect();
            for d in &denied {
                if let DenyPrincipal::Unresolvable(p) = d {
                    warnings.push(format!("deny policy {} rule {i}: principal {p} cannot be resolved from an export: not applied to anyone", dp.name));
                }
            }
            let name = format!("deny policy {} rule {i}", dp.name);
            if r.denial_condition.is_some() {
                warnings.push(format!(
                    "{name} has a denial condition: not applied (the condition tests request-time attributes an export does not have)"
                ));
            }
            rules.push(Rule {
                attachment: model.hierarchy.canon(&dp.attachment_point),
                denied,
                except: r.exception_principals.iter().map(|p| parse_deny_principal(p)).collect(),
                set,
                conditional: r.denial_condition.is_some(),
                name,
            });
        }
    }

    // Service accounts with user-managed keys: home project → emails, so they are identities there.
    let sa_home = service_account_homes(inv, &model.hierarchy);
    let mut keys_of: FxHashMap<String, Vec<AccessKey>> = FxHashMap::default();
    for k in inv.keys.iter().filter(|k| k.key_type == KeyType::UserManaged) {
        let Some(email) = &k.service_account else { continue };
        keys_of.entry(email.clone()).or_default().push(AccessKey {
            user_name: email.clone(),
            access_key_id: k.key_id.clone(),
            status: if k.disabled { "Inactive" } else { "Active" }.to_string(),
            active: !k.disabled,
            created: k.valid_after,
            account: None,
        });
    }

    let mut projects = model.projects();
    for email in keys_of.keys() {
        if let Some(home) = sa_home.get(email) {
            projects.insert(home.clone());
        }
    }
    for project in &projects {
        let pid = project.strip_prefix("projects/").unwrap_or(project);
        if pid.bytes().all(|b| b.is_ascii_digit()) {
            unresolved_numbers.insert(pid.to_string());
        }
        let reach = model.hierarchy.reach(project);
        // Bindings reaching the project, by member key.
        let mut by_member: BTreeMap<String, Vec<BindingRef>> = BTreeMap::new();
        // Members some binding names as `deleted:` (the canonical key drops the prefix).
        let mut deleted: FxHashSet<String> = FxHashSet::default();
        let mut policies: Vec<usize> = Vec::new();
        for n in &reach {
            policies.extend(model.on_container.get(n).into_iter().flatten().copied());
        }
        policies.extend(model.in_project.get(project).into_iter().flatten().copied());
        policies.sort_unstable();
        policies.dedup();
        for &pi in &policies {
            for (bi, b) in inv.policies[pi].bindings.iter().enumerate() {
                for mem in &b.members {
                    let m = parse_member(mem);
                    if m.deleted {
                        deleted.insert(m.key.clone());
                    }
                    if m.kind != MemberKind::Public {
                        by_member.entry(m.key).or_default().push((pi, bi));
                    }
                }
            }
        }
        // Identities: bound members and members of bound groups; pseudo-groups are no identities.
        let mut members: BTreeSet<String> = BTreeSet::new();
        for key in by_member.keys() {
            if parse_member(key).kind != MemberKind::Convenience {
                members.insert(key.clone());
            }
            if key.starts_with("group:") || parse_member(key).kind == MemberKind::Convenience {
                members.extend(
                    model.members_of(key).into_iter().filter(|m| parse_member(m).kind != MemberKind::Convenience),
                );
            }
        }
        for (email, home) in &sa_home {
            if home == project && keys_of.contains_key(email) {
                members.insert(format!("serviceAccount:{email}"));
            }
        }
        let rules_here: Vec<&Rule> = rules.iter().filter(|r| reach.contains(&r.attachment)).collect();
        for key in members {
            let member = parse_member(&key);
            if member.kind == MemberKind::Public {
                continue;
            }
            let groups = model.groups_of(&key);
            let mut g = IdentityGrants::unknown(
                catalog,
                &identity_uid(pid, &member.key),
                pid,
                member.kind.identity_kind(),
                member.display_name(),
            );
            g.cloud = Cloud::Gcp;
            g.emails = member.email().map(|e| vec![e.to_string()]).unwrap_or_default();
            g.groups = groups.iter().filter_map(|x| x.strip_prefix("group:")).map(str::to_string).collect();
            if deleted.contains(&member.key) {
                g.warnings.push(format!("{} is bound as a deleted principal (deleted:...?uid=)", member.key));
            }
            if member.kind == MemberKind::Unknown {
                g.warnings.push(format!("member {} of an unknown type", member.key));
            }
            let mut unconditional = catalog.empty_set();
            let mut scoped: BTreeMap<ActionId, BTreeSet<usize>> = BTreeMap::new();
            let mut refs: Vec<BindingRef> = Vec::new();
            for k in std::iter::once(&member.key).chain(groups.iter()) {
                refs.extend(by_member.get(k).into_iter().flatten().copied());
            }
            refs.sort_unstable();
            refs.dedup();
            for (pi, bi) in refs {
                let b = &inv.policies[pi].bindings[bi];
                let role = roles.resolve(&b.role);
                for w in &role.warnings {
                    if !g.warnings.contains(w) {
                        g.warnings.push(w.clone());
                    }
                }
                g.granted.union_with(&role.set);
                if b.condition.is_none() {
                    unconditional.union_with(&role.set);
                }
                match &model.scopes[pi] {
                    Scope::Container(_) => g.unscoped.union_with(&role.set),
                    _ => {
                        for id in role.set.iter() {
                            scoped.entry(id).or_default().insert(pi);
                        }
                    }
                }
            }
            // Deny rules at or above the project.
            for r in &rules_here {
                let named = r.denied.iter().any(|d| d.matches(&member.key, &groups));
                if !named || r.except.iter().any(|d| d.matches(&member.key, &groups)) {
                    continue;
                }
                if r.conditional {
                    g.warnings.push(format!("{} (conditional) names this principal: not applied", r.name));
                    continue;
                }
                g.granted.difference_with(&r.set);
                unconditional.difference_with(&r.set);
                g.unscoped.difference_with(&r.set);
            }
            g.conditional = g.granted.clone();
            g.conditional.difference_with(&unconditional);
            for (id, pis) in scoped {
                if !g.granted.contains(id) || g.unscoped.contains(id) {
                    continue;
                }
                let mut names: Vec<String> = pis.iter().map(|&pi| inv.policies[pi].resource.clone()).collect();
                names.sort_unstable();
                names.dedup();
                let shared = interned.entry(names).or_insert_with_key(|k| Arc::from(k.clone())).clone();
                g.resource_patterns.push((id, shared));
            }
            if member.kind == MemberKind::ServiceAccount
                && let Some(email) = member.email()
                && sa_home.get(email) == Some(project)
                && let Some(keys) = keys_of.get(email)
            {
                g.access_keys =
                    keys.iter().map(|k| AccessKey { account: Some(pid.to_string()), ..k.clone() }).collect();
            }
            identities.push(g);
        }
    }
    for n in unresolved_numbers {
        warnings.push(format!(
            "project number {n}: no project id known (add a Cloud Asset Inventory resource export or `gcloud projects list`); its identities use the number"
        ));
    }
    // Role problems, once each, for the inventory.
    let mut role_warnings: Vec<String> = roles.resolved.values().flat_map(|r| r.warnings.iter().cloned()).collect();
    role_warnings.sort_unstable();
    role_warnings.dedup();
    warnings.extend(role_warnings);

    if warnings.len() > MAX_WARNINGS {
        let more = warnings.len() - MAX_WARNINGS;
        warnings.truncate(MAX_WARNINGS);
        warnings.push(format!("... and {more} more warnings"));
    }
    let public = public_exposures(inv, &model);
    identities.sort_by(|a, b| (a.account.as_str(), a.arn.as_str()).cmp(&(b.account.as_str(), b.arn.as_str())));
    GcpEntitlements { identities, public, warnings }
}

fn public_exposures(inv: &GcpInventory, model: &Model<'_>) -> Vec<PublicExposure> {
    let mut out = Vec::new();
    for (pi, p) in inv.policies.iter().enumerate() {
        let project = match &model.scopes[pi] {
            Scope::Container(n) => n.strip_prefix("projects/").map(str::to_string),
            Scope::Resource { project } => project.strip_prefix("projects/").map(str::to_string),
            Scope::Unknown => None,
        };
        for b in &p.bindings {
            for mem in &b.members {
                if parse_member(mem).kind == MemberKind::Public {
                    out.push(PublicExposure {
                        project: project.clone(),
                        resource: p.resource.clone(),
                        role: b.role.clone(),
                        member: mem.trim().to_string(),
                        conditional: b.condition.is_some(),
                    });
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Service account email → its home project node (`projects/{id}`): the service-accounts list, the key's
/// name, else the email's domain (`sa@PROJECT.iam.gserviceaccount.com`).
fn service_account_homes(inv: &GcpInventory, h: &Hierarchy) -> FxHashMap<String, String> {
    let mut out = FxHashMap::default();
    for sa in &inv.service_accounts {
        if let Some(p) = &sa.project_id {
            out.insert(sa.email.clone(), h.canon(&format!("projects/{p}")));
        }
    }
    for k in &inv.keys {
        if let (Some(email), Some(p)) = (&k.service_account, &k.project) {
            out.entry(email.clone()).or_insert_with(|| h.canon(&format!("projects/{p}")));
        }
        if let Some(email) = &k.service_account
            && let Some(p) = project_of_sa_email(email)
        {
            out.entry(email.clone()).or_insert_with(|| h.canon(&format!("projects/{p}")));
        }
    }
    out
}

/// `sa@my-proj.iam.gserviceaccount.com` → `my-proj`. Google-managed and default accounts
/// (`123-compute@developer.gserviceaccount.com`) name no project id: `None`.
fn project_of_sa_email(email: &str) -> Option<&str> {
    let (_, domain) = email.split_once('@')?;
    domain.strip_suffix(".iam.gserviceaccount.com").filter(|p| !p.is_empty())
}

/// Who can act as which service account: `(from uid, to uid, permission)`, sorted.
///
/// A member holding one of [`IMPERSONATION_PERMISSIONS`] unscoped in a project (bound on the project or
/// above) reaches every service account of that project; holding it on a service account's own resource
/// (`//iam.googleapis.com/projects/p/serviceAccounts/{email or uniqueId}`) reaches that one. The edge goes to
/// every identity of the service account (one per project it holds roles in), or to its home-project uid when
/// it has none. Edges from a service account to itself are left out.
pub fn impersonation_edges(
    inv: &GcpInventory,
    grants: &[IdentityGrants],
    catalog: &Catalog,
) -> Vec<(String, String, String)> {
    let hierarchy = Hierarchy::new(inv);
    let homes = service_account_homes(inv, &hierarchy);
    let by_unique_id: FxHashMap<&str, &str> =
        inv.service_accounts.iter().filter_map(|s| s.unique_id.as_deref().map(|u| (u, s.email.as_str()))).collect();
    // Service account email → its identities' uids; project id → its service accounts.
    let mut sa_uids: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut sas_in: FxHashMap<String, BTreeSet<String>> = FxHashMap::default();
    for (email, home) in &homes {
        sas_in.entry(home.trim_start_matches("projects/").to_string()).or_default().insert(email.clone());
    }
    for g in grants.iter().filter(|g| g.kind == IdentityKind::ServiceAccount && is_service_account_email(&g.name)) {
        let email = g.name.to_ascii_lowercase();
        sa_uids.entry(email.clone()).or_default().push(g.arn.clone());
        let home = homes.get(&email).map(|h| h.trim_start_matches("projects/").to_string());
        if let Some(home) = home.or_else(|| project_of_sa_email(&email).map(str::to_string)) {
            sas_in.entry(home).or_default().insert(email);
        }
    }
    let targets_of = |email: &str| -> Vec<String> {
        match sa_uids.get(email) {
            Some(uids) => uids.clone(),
            None => {
                let home = homes
                    .get(email)
                    .map(|h| h.trim_start_matches("projects/").to_string())
                    .or_else(|| project_of_sa_email(email).map(str::to_string));
                home.map(|p| vec![identity_uid(&p, &format!("serviceAccount:{email}"))]).unwrap_or_default()
            }
        }
    };
    let mut out = BTreeSet::new();
    for perm in IMPERSONATION_PERMISSIONS {
        let Some(id) = catalog.lookup(perm) else { continue };
        for g in grants {
            if !g.granted.contains(id) {
                continue;
            }
            let own_email = (g.kind == IdentityKind::ServiceAccount).then(|| g.name.to_ascii_lowercase());
            let mut emails: BTreeSet<String> = BTreeSet::new();
            if g.unscoped.contains(id) {
                emails.extend(sas_in.get(&g.account).into_iter().flatten().cloned());
            }
            if let Ok(i) = g.resource_patterns.binary_search_by_key(&id, |(a, _)| *a) {
                for name in g.resource_patterns[i].1.iter() {
                    if let Some(sa) = service_account_in_name(name) {
                        let email = match by_unique_id.get(sa) {
                            Some(e) => (*e).to_string(),
                            None => sa.to_ascii_lowercase(),
                        };
                        emails.insert(email);
                    }
                }
            }
            for email in emails {
                if own_email.as_deref() == Some(email.as_str()) {
                    continue;
                }
                for to in targets_of(&email) {
                    if to != g.arn {
                        out.insert((g.arn.clone(), to, (*perm).to_string()));
                    }
                }
            }
        }
    }
    out.into_iter().collect()
}

/// `//iam.googleapis.com/projects/p/serviceAccounts/sa@p.iam.gserviceaccount.com` → the email (or unique id).
fn service_account_in_name(name: &str) -> Option<&str> {
    let rest = name.strip_prefix("//iam.googleapis.com/projects/")?;
    let (_, sa) = rest.split_once("/serviceAccounts/")?;
    let sa = sa.split('/').next()?;
    (!sa.is_empty()).then_some(sa)
}

/// Why the identity is an administrator of its project, if it is: it holds one of [`ADMIN_PERMISSIONS`]
/// unscoped (bound on the project or above — `roles/owner`, `roles/resourcemanager.projectIamAdmin`,
/// organization and folder admins), so it can grant itself any role.
pub fn is_admin(g: &IdentityGrants, catalog: &Catalog) -> Option<String> {
    for perm in ADMIN_PERMISSIONS {
        let Some(id) = catalog.lookup(perm) else { continue };
        if g.unscoped.contains(id) {
            let cond = if g.conditional.contains(id) { " (only under an IAM condition)" } else { "" };
            return Some(format!("holds {perm} on project {}{cond}: can grant itself any role", g.account));
        }
    }
    None
}

#[cfg(test)]
pub(crate) mod tests;
