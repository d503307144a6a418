//! The privilege-escalation graph: its nodes are the users, roles and groups of the snapshots, an
//! edge is a way for one identity to act as another (assume a role; pass a role to new compute;
//! create another user's access key or login profile; rewrite a role's trust policy; run commands
//! on an instance holding a role) or, for a user, to gain a group's permissions by joining it.
//! Administrators are the identities that hold nearly everything or can raise their own permissions
//! without limit (write or attach their own policies, their groups' policies, a new version of a
//! policy attached to them, or create a role and give it any policy). Every identity gets a shortest
//! path to an administrator, and the actions it can reach through the graph. `docs/escalation.md`
//! lists the edges, the administrator rules, and how they compare with PMapper's.
//!
//! Each resource-specific check (`iam:PassRole` on this role, `iam:CreateAccessKey` on that user)
//! is a request-level decision of [`crate::access`], with its statements and conditions. The
//! actions that create something new (`lambda:CreateFunction`, `ec2:RunInstances`) are checked
//! against the identity's granted set (granted on some resource): the caller names what it
//! creates, so any resource it may create will do.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::access::{AccessModel, Decision, Grade, StatementRef, Subject};
use crate::catalog::{ActionSet, Catalog};
use crate::policy::IdentityGrants;
use grantwatch_types::IdentityKind;

/// What an edge does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EdgeKind {
    AssumeRole,
    CreateAccessKey,
    LoginProfile,
    UpdateTrustPolicy,
    PassRole,
    Ssm,
    AddToGroup,
}

impl EdgeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EdgeKind::AssumeRole => "assume-role",
            EdgeKind::CreateAccessKey => "create-access-key",
            EdgeKind::LoginProfile => "login-profile",
            EdgeKind::UpdateTrustPolicy => "update-trust-policy",
            EdgeKind::PassRole => "pass-role",
            EdgeKind::Ssm => "ssm",
            EdgeKind::AddToGroup => "add-to-group",
        }
    }
}

/// One edge: `from` can act as `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    pub from: u32,
    pub to: u32,
    pub kind: EdgeKind,
    pub actions: Vec<&'static str>,
    pub grade: Grade,
    pub statements: Vec<StatementRef>,
}

/// Why an identity is an administrator itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminReason {
    pub reason: String,
    pub grade: Grade,
    pub statements: Vec<StatementRef>,
}

/// A shortest path from an identity to an administrator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathToAdmin {
    /// Edge indices into [`EscalationGraph::edges`], first step first; empty for an administrator.
    pub edges: Vec<u32>,
    pub admin: u32,
    /// The weakest grade along the path, the administrator's own reason included.
    pub grade: Grade,
}

/// Roles a principal can pass to a service that will run code as them, and what it takes to start
/// that code. Each alternative is a set of actions that must all be granted (on some resource).
const PASS_ROLE_SERVICES: &[(&str, &[&[&str]])] = &[
    (
        "lambda.amazonaws.com",
        &[
            &["lambda:CreateFunction", "lambda:InvokeFunction"],
            &["lambda:CreateFunction", "lambda:CreateEventSourceMapping"],
        ],
    ),
    (
        "ec2.amazonaws.com",
        &[&["ec2:RunInstances"], &["autoscaling:CreateLaunchConfiguration", "autoscaling:CreateAutoScalingGroup"]],
    ),
    ("cloudformation.amazonaws.com", &[&["cloudformation:CreateStack"]]),
    (
        "codebuild.amazonaws.com",
        &[
            &["codebuild:CreateProject", "codebuild:StartBuild"],
            &["codebuild:CreateProject", "codebuild:StartBuildBatch"],
        ],
    ),
    (
        "sagemaker.amazonaws.com",
        &[&["sagemaker:CreateNotebookInstance"], &["sagemaker:CreateTrainingJob"], &["sagemaker:CreateProcessingJob"]],
    ),
    ("glue.amazonaws.com", &[&["glue:CreateDevEndpoint"], &["glue:CreateJob", "glue:StartJobRun"]]),
    ("ecs-tasks.amazonaws.com", &[&["ecs:RegisterTaskDefinition", "ecs:RunTask"]]),
    (
        "datapipeline.amazonaws.com",
        &[&["datapipeline:CreatePipeline", "datapipeline:PutPipelineDefinition", "datapipeline:ActivatePipeline"]],
    ),
];

/// The escalation graph of a model.
#[derive(Debug, Clone)]
pub struct EscalationGraph {
    pub edges: Vec<Edge>,
    /// Per subject: why it is an administrator, if it is.
    pub admin: Vec<Option<AdminReason>>,
}

/// The grants of the model's subjects, by subject index (`None`: not evaluated, grants nothing).
pub fn grants_by_subject<'g>(model: &AccessModel, grants: &'g [IdentityGrants]) -> Vec<Option<&'g IdentityGrants>> {
    let by_arn: FxHashMap<&str, &IdentityGrants> = grants.iter().map(|g| (g.arn.as_str(), g)).collect();
    model.subjects.iter().map(|s| by_arn.get(s.arn.as_str()).copied()).collect()
}

impl EscalationGraph {
    /// Builds the graph. `grants` are the identities' evaluated grants ([`crate::policy::evaluate`],
    /// after the organization's ceiling); `super_share` the share of the catalog that makes an
    /// identity hold "nearly everything" ([`crate::findings::SUPER_IDENTITY_SHARE`]).
    pub fn build(
        model: &AccessModel,
        catalog: &Catalog,
        grants: &[IdentityGrants],
        super_share: f64,
    ) -> EscalationGraph {
        let by_subject = grants_by_subject(model, grants);
        let granted = |i: usize, action: &str| -> Grade {
            let (Some(Some(g)), Some(id)) = (by_subject.get(i), catalog.lookup(action)) else { return Grade::No };
            if !g.granted.contains(id) {
                Grade::No
            } else if g.conditional.contains(id) {
                Grade::Conditional
            } else {
                Grade::Yes
            }
        };
        let all_granted = |i: usize, actions: &[&str]| actions.iter().map(|a| granted(i, a)).min().unwrap_or(Grade::No);

        let admin: Vec<Option<AdminReason>> = (0..model.subjects.len())
            .map(|i| admin_reason(model, catalog, i, by_subject.get(i).copied().flatten(), super_share, &all_granted))
            .collect();

        let mut edges: Vec<Edge> = Vec::new();
        for e in model.assume_edges() {
            if admin.get(e.from as usize).is_some_and(Option::is_some) {
                continue;
            }
            edges.push(Edge {
                from: e.from,
                to: e.to,
                kind: EdgeKind::AssumeRole,
                actions: vec!["sts:AssumeRole"],
                grade: e.decision.grade,
                statements: e.decision.statements,
            });
        }

        // Targets by account, and the roles each service may assume.
        let mut users_of: FxHashMap<&str, Vec<u32>> = FxHashMap::default();
        let mut roles_of: FxHashMap<&str, Vec<u32>> = FxHashMap::default();
        let mut groups_of: FxHashMap<&str, Vec<u32>> = FxHashMap::default();
        for (i, s) in model.subjects.iter().enumerate() {
            let list = match s.kind {
                IdentityKind::User => &mut users_of,
                IdentityKind::Role => &mut roles_of,
                IdentityKind::Group => &mut groups_of,
                _ => continue,
            };
            list.entry(s.account.as_str()).or_default().push(i as u32);
        }
        // Instances run as the roles EC2 may assume: the targets of the `ssm` edges too.
        let service_roles: Vec<Vec<u32>> = PASS_ROLE_SERVICES
            .iter()
            .map(|(svc, _)| (0..model.subjects.len() as u32).filter(|&r| trusts_service(model, r, svc)).collect())
            .collect();
        let ec2_roles: &[u32] = PASS_ROLE_SERVICES
            .iter()
            .position(|(svc, _)| *svc == "ec2.amazonaws.com")
            .and_then(|i| service_roles.get(i))
            .map_or(&[], Vec::as_slice);

        for (pi, p) in model.subjects.iter().enumerate() {
            if p.kind == IdentityKind::Group || admin.get(pi).is_some_and(Option::is_some) {
                continue;
            }
            let from = pi as u32;
            let mut push =
                |to: u32, kind: EdgeKind, actions: Vec<&'static str>, decisions: &[&Decision], extra: Grade| {
                    let grade = decisions.iter().map(|d| d.grade).min().unwrap_or(Grade::Yes).min(extra);
                    if grade == Grade::No || to == from {
                        return;
                    }
                    let mut statements: Vec<StatementRef> =
                        decisions.iter().flat_map(|d| d.statements.iter().copied()).collect();
                    statements.sort_unstable();
                    statements.dedup();
                    edges.push(Edge { from, to, kind, actions, grade, statements });
                };
            let account = p.account.as_str();
            // Another user's credentials.
            if granted(pi, "iam:CreateAccessKey") > Grade::No {
                for &u in users_of.get(account).into_iter().flatten() {
                    let d = model.decide(from, "iam:CreateAccessKey", &model.subjects[u as usize].arn);
                    push(u, EdgeKind::CreateAccessKey, vec!["iam:CreateAccessKey"], &[&d], Grade::Yes);
                }
            }
            for action in ["iam:CreateLoginProfile", "iam:UpdateLoginProfile"] {
                if granted(pi, action) == Grade::No {
                    continue;
                }
                for &u in users_of.get(account).into_iter().flatten() {
                    let d = model.decide(from, action, &model.subjects[u as usize].arn);
                    push(u, EdgeKind::LoginProfile, vec![action], &[&d], Grade::Yes);
                }
            }
            // A role's trust policy, rewritten to name the caller (same account: enough to assume it).
            if granted(pi, "iam:UpdateAssumeRolePolicy") > Grade::No {
                for &r in roles_of.get(account).into_iter().flatten() {
                    if model.subjects[r as usize].service_linked {
                        continue; // AWS refuses to edit a service-linked role's trust policy
                    }
                    let d = model.decide(from, "iam:UpdateAssumeRolePolicy", &model.subjects[r as usize].arn);
                    push(r, EdgeKind::UpdateTrustPolicy, vec!["iam:UpdateAssumeRolePolicy"], &[&d], Grade::Yes);
                }
            }
            // Joining a group.
            if p.kind == IdentityKind::User && granted(pi, "iam:AddUserToGroup") > Grade::No {
                for &g in groups_of.get(account).into_iter().flatten() {
                    if p.groups.contains(&g) {
                        continue;
                    }
                    let d = model.decide(from, "iam:AddUserToGroup", &model.subjects[g as usize].arn);
                    push(g, EdgeKind::AddToGroup, vec!["iam:AddUserToGroup"], &[&d], Grade::Yes);
                }
            }
            // Passing a role to new compute.
            if granted(pi, "iam:PassRole") > Grade::No {
                for ((svc, alternatives), roles) in PASS_ROLE_SERVICES.iter().zip(&service_roles) {
                    let Some((start, start_grade)) = alternatives
                        .iter()
                        .map(|alt| (*alt, all_granted(pi, alt)))
                        .filter(|(_, g)| *g > Grade::No)
                        .max_by_key(|(_, g)| *g)
                    else {
                        continue;
                    };
                    for &r in roles {
                        let role = &model.subjects[r as usize];
                        if role.account != p.account || role.service_linked {
                            continue;
                        }
                        let mut profile = Grade::Yes;
                        if *svc == "ec2.amazonaws.com" && !role.instance_profile {
                            profile = all_granted(pi, &["iam:CreateInstanceProfile", "iam:AddRoleToInstanceProfile"]);
                        }
                        let d = model.decide(from, "iam:PassRole", &role.arn);
                        let mut actions = vec!["iam:PassRole"];
                        actions.extend_from_slice(start);
                        push(r, EdgeKind::PassRole, actions, &[&d], start_grade.min(profile));
                    }
                }
            }
            // Commands on an instance already running as a role.
            let ssm = granted(pi, "ssm:SendCommand").max(granted(pi, "ssm:StartSession"));
            if ssm > Grade::No {
                let action = if granted(pi, "ssm:SendCommand") >= granted(pi, "ssm:StartSession") {
                    "ssm:SendCommand"
                } else {
                    "ssm:StartSession"
                };
                for &r in ec2_roles {
                    let role = &model.subjects[r as usize];
                    if role.account != p.account || !role.instance_profile {
                        continue;
                    }
                    // The instance's agent needs the role to reach Systems Manager.
                    let agent = granted(r as usize, "ssmmessages:CreateControlChannel")
                        .max(granted(r as usize, "ssm:UpdateInstanceInformation"));
                    push(r, EdgeKind::Ssm, vec![action], &[], ssm.min(agent));
                }
            }
        }
        edges.sort_by_key(|e| (e.from, e.to, e.kind));
        EscalationGraph { edges, admin }
    }

    /// A shortest path to an administrator for every subject (`None`: none reachable). Of the shortest
    /// paths, one with the best grade (unconditional over conditional).
    pub fn paths_to_admin(&self) -> Vec<Option<PathToAdmin>> {
        let n = self.admin.len();
        let mut into: Vec<Vec<u32>> = vec![Vec::new(); n];
        for (i, e) in self.edges.iter().enumerate() {
            if let Some(v) = into.get_mut(e.to as usize) {
                v.push(i as u32);
            }
        }
        let mut best: Vec<Option<PathToAdmin>> = self
            .admin
            .iter()
            .enumerate()
            .map(|(i, a)| a.as_ref().map(|a| PathToAdmin { edges: Vec::new(), admin: i as u32, grade: a.grade }))
            .collect();
        let mut frontier: Vec<usize> = (0..n).filter(|&i| best[i].is_some()).collect();
        while !frontier.is_empty() {
            let mut next: Vec<(usize, PathToAdmin)> = Vec::new();
            for &t in &frontier {
                let Some(via) = best[t].as_ref() else { continue };
                for &ei in into.get(t).into_iter().flatten() {
                    let e = &self.edges[ei as usize];
                    let from = e.from as usize;
                    if best.get(from).is_none_or(Option::is_some) {
                        continue;
                    }
                    let mut edges = vec![ei];
                    edges.extend_from_slice(&via.edges);
                    next.push((from, PathToAdmin { edges, admin: via.admin, grade: via.grade.min(e.grade) }));
                }
            }
            next.sort_by(|(a, x), (b, y)| a.cmp(b).then(y.grade.cmp(&x.grade)).then(x.edges.cmp(&y.edges)));
            next.dedup_by_key(|(i, _)| *i);
            frontier = next.iter().map(|(i, _)| *i).collect();
            for (i, p) in next {
                best[i] = Some(p);
            }
        }
        best
    }

    /// Per subject, the actions it can reach through the graph and does not hold itself: the union of
    /// the grants of every identity reachable from it (an administrator's: the whole catalog).
    /// Strongly connected components are merged first, so each union is done once per component.
    pub fn reachable_actions(
        &self,
        model: &AccessModel,
        catalog: &Catalog,
        grants: &[IdentityGrants],
    ) -> Vec<ActionSet> {
        let n = self.admin.len();
        let by_subject = grants_by_subject(model, grants);
        let mut out_edges: Vec<Vec<u32>> = vec![Vec::new(); n];
        for e in &self.edges {
            if let Some(v) = out_edges.get_mut(e.from as usize) {
                v.push(e.to);
            }
        }
        let (comp, comps) = strongly_connected(&out_edges);
        // Components come out of Tarjan's algorithm in reverse topological order: successors first.
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); comps];
        for (v, &c) in comp.iter().enumerate() {
            members[c as usize].push(v);
        }
        let mut sets: Vec<ActionSet> = Vec::with_capacity(comps);
        for (c, vertices) in members.iter().enumerate() {
            let mut set = catalog.empty_set();
            let mut full = false;
            for &v in vertices {
                if self.admin.get(v).is_some_and(Option::is_some) {
                    full = true;
                }
                if let Some(Some(g)) = by_subject.get(v) {
                    set.union_with(&g.granted);
                }
                for &w in out_edges.get(v).into_iter().flatten() {
                    let wc = comp[w as usize] as usize;
                    if wc != c
                        && let Some(s) = sets.get(wc)
                    {
                        set.union_with(s);
                    }
                }
            }
            if full {
                set = catalog.full_set();
            }
            sets.push(set);
        }
        (0..n)
            .map(|v| {
                let mut s = sets[comp[v] as usize].clone();
                if let Some(Some(g)) = by_subject.get(v) {
                    s.difference_with(&g.granted);
                }
                s
            })
            .collect()
    }
}

/// What [`apply`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EscalationSummary {
    pub edges: usize,
    pub administrators: usize,
    /// Identities that are not administrators but reach one.
    pub escalate: usize,
}

/// Builds the graph of `model` and writes, into each identity's grants, its path to an administrator
/// and the actions it can reach. `grants` must be those of `model`'s snapshot (by ARN).
pub fn apply(
    model: &AccessModel,
    catalog: &Catalog,
    grants: &mut [IdentityGrants],
    super_share: f64,
) -> EscalationSummary {
    let graph = EscalationGraph::build(model, catalog, grants, super_share);
    let paths = graph.paths_to_admin();
    let reachable = graph.reachable_actions(model, catalog, grants);
    let index: FxHashMap<String, usize> = model.subjects.iter().enumerate().map(|(i, s)| (s.arn.clone(), i)).collect();
    let mut summary = EscalationSummary { edges: graph.edges.len(), ..Default::default() };
    for g in grants.iter_mut() {
        let Some(&i) = index.get(&g.arn) else { continue };
        g.reachable = reachable.get(i).cloned().unwrap_or_else(|| catalog.empty_set());
        g.escalation = paths.get(i).and_then(Option::as_ref).map(|p| Arc::new(graph.describe(model, p)));
        match (&g.escalation, graph.admin.get(i)) {
            (Some(_), Some(Some(_))) => summary.administrators += 1,
            (Some(_), _) => summary.escalate += 1,
            _ => {}
        }
    }
    summary
}

impl EscalationGraph {
    /// A path in the report's terms.
    pub fn describe(&self, model: &AccessModel, p: &PathToAdmin) -> grantwatch_types::Escalation {
        let arn = |i: u32| model.subjects.get(i as usize).map(|s| s.arn.clone()).unwrap_or_default();
        let policies = |refs: &[StatementRef]| {
            let mut v: Vec<String> =
                refs.iter().filter_map(|r| model.sources.get(r.source as usize)).map(|s| s.label.clone()).collect();
            v.sort();
            v.dedup();
            v
        };
        let admin = self.admin.get(p.admin as usize).and_then(Option::as_ref);
        let path: Vec<grantwatch_types::EscalationStep> = p
            .edges
            .iter()
            .filter_map(|&e| self.edges.get(e as usize))
            .map(|e| grantwatch_types::EscalationStep {
                from: arn(e.from),
                to: arn(e.to),
                kind: e.kind.as_str().to_string(),
                actions: e.actions.iter().map(|a| a.to_string()).collect(),
                conditional: e.grade < Grade::Yes,
                policies: policies(&e.statements),
            })
            .collect();
        grantwatch_types::Escalation {
            admin: if path.is_empty() { admin.map(|a| a.reason.clone()) } else { None },
            path,
            administrator: arn(p.admin),
            administrator_reason: admin.map(|a| a.reason.clone()).unwrap_or_default(),
            conditional: p.grade < Grade::Yes,
        }
    }
}

fn trusts_service(model: &AccessModel, role: u32, service: &str) -> bool {
    let Some(s) = model.subjects.get(role as usize) else { return false };
    let Some(src) = s.trust.and_then(|t| model.sources.get(t as usize)) else { return false };
    src.document.statements.iter().any(|st| {
        st.effect == crate::iam::Effect::Allow
            && !st.has_condition()
            && st.principal.as_ref().is_some_and(|p| p.service.iter().any(|x| x.eq_ignore_ascii_case(service)))
            && crate::access::action_matches(st, "sts:AssumeRole")
    })
}

/// Why subject `i` is an administrator, if it is.
fn admin_reason(
    model: &AccessModel,
    catalog: &Catalog,
    i: usize,
    grants: Option<&IdentityGrants>,
    super_share: f64,
    all_granted: &dyn Fn(usize, &[&str]) -> Grade,
) -> Option<AdminReason> {
    let s: &Subject = model.subjects.get(i)?;
    if let Some(g) = grants {
        let mut solid = g.unscoped.clone();
        solid.difference_with(&g.conditional);
        let size = catalog.cloud_len(g.cloud);
        if size > 0 && solid.len() as f64 >= super_share * size as f64 {
            return Some(AdminReason {
                reason: "holds nearly every action".to_string(),
                grade: Grade::Yes,
                statements: Vec::new(),
            });
        }
    }
    if s.kind == IdentityKind::Group {
        return None;
    }
    let who = i as u32;
    let mut best: Option<AdminReason> = None;
    let mut consider = |reason: String, d: Decision| {
        if d.grade > best.as_ref().map_or(Grade::No, |b| b.grade) {
            best = Some(AdminReason { reason, grade: d.grade, statements: d.statements });
        }
    };
    let own: &[&str] = match s.kind {
        IdentityKind::User => &["iam:PutUserPolicy", "iam:AttachUserPolicy"],
        _ => &["iam:PutRolePolicy", "iam:AttachRolePolicy"],
    };
    for action in own {
        consider(format!("{action} on itself"), model.decide(who, action, &s.arn));
    }
    let mut customer_policies: Vec<&str> =
        s.attached.iter().filter(|a| is_customer_managed(a)).map(String::as_str).collect();
    for &g in &s.groups {
        let Some(group) = model.subjects.get(g as usize) else { continue };
        for action in ["iam:PutGroupPolicy", "iam:AttachGroupPolicy"] {
            consider(format!("{action} on its group {}", group.name), model.decide(who, action, &group.arn));
        }
        customer_policies.extend(group.attached.iter().filter(|a| is_customer_managed(a)).map(String::as_str));
    }
    for p in customer_policies {
        consider(
            format!("iam:CreatePolicyVersion on {p}, attached to it"),
            model.decide(who, "iam:CreatePolicyVersion", p),
        );
    }
    // A new role naming the caller in its trust policy, given any policy, is the caller's.
    for attach in ["iam:AttachRolePolicy", "iam:PutRolePolicy"] {
        let g = all_granted(i, &["iam:CreateRole", attach]);
        if g > Grade::No {
            consider(format!("iam:CreateRole and {attach}"), Decision { grade: g, statements: Vec::new() });
        }
    }
    best
}

fn is_customer_managed(arn: &str) -> bool {
    arn.starts_with("arn:") && arn.contains(":policy/") && !crate::iam::is_aws_managed(arn)
}

/// Tarjan's strongly connected components, iteratively (no recursion on deep graphs). Returns each
/// vertex's component and the number of components; components are numbered in reverse topological
/// order (a component's successors have lower numbers).
fn strongly_connected(out: &[Vec<u32>]) -> (Vec<u32>, usize) {
    let n = out.len();
    const UNSEEN: u32 = u32::MAX;
    let mut index = vec![UNSEEN; n];
    let mut low = vec![0u32; n];
    let mut on_stack = vec![false; n];
    let mut comp = vec![UNSEEN; n];
    let mut stack: Vec<u32> = Vec::new();
    let mut next_index = 0u32;
    let mut comps = 0u32;
    let mut call: Vec<(u32, usize)> = Vec::new();
    for root in 0..n as u32 {
        if index[root as usize] != UNSEEN {
            continue;
        }
        call.push((root, 0));
        while let Some(&mut (v, ref mut child)) = call.last_mut() {
            let vi = v as usize;
            if *child == 0 && index[vi] == UNSEEN {
                index[vi] = next_index;
                low[vi] = next_index;
                next_index += 1;
                stack.push(v);
                on_stack[vi] = true;
            }
            if let Some(&w) = out[vi].get(*child) {
                *child += 1;
                let wi = w as usize;
                if index[wi] == UNSEEN {
                    call.push((w, 0));
                } else if on_stack[wi] {
                    low[vi] = low[vi].min(index[wi]);
                }
                continue;
            }
            call.pop();
            if let Some(&(parent, _)) = call.last() {
                let pi = parent as usize;
                low[pi] = low[pi].min(low[vi]);
            }
            if low[vi] == index[vi] {
                while let Some(w) = stack.pop() {
                    on_stack[w as usize] = false;
                    comp[w as usize] = comps;
                    if w == v {
                        break;
                    }
                }
                comps += 1;
            }
        }
    }
    (comp, comps as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_come_successors_first() {
        // 0 -> 1 <-> 2 -> 3 ; 4 alone
        let out = vec![vec![1], vec![2], vec![1, 3], vec![], vec![]];
        let (comp, n) = strongly_connected(&out);
        assert_eq!(n, 4);
        assert_eq!(comp[1], comp[2]);
        assert!(comp[3] < comp[1] && comp[1] < comp[0]);
    }
}
