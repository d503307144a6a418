//! Request-level authorization: may this principal perform this action on this resource, and which
//! statements say so; and the questions built on it: who can do something (directly or by assuming
//! roles), who can assume a role. [`crate::policy`] answers "which actions, on some resource" for
//! every identity at once, as bitsets; this module answers one request exactly, statement by
//! statement, so that it can show the statement and its condition. `docs/access.md` describes the
//! rules and the resource-policy input.
//!
//! One request meets up to five kinds of policy, each a *gate* graded [`Grade::No`], [`Grade::Conditional`]
//! (allowed only if a Condition holds) or [`Grade::Yes`]:
//!
//! * the identity's policies (its own and its groups'), and its permissions boundary, which must also allow;
//! * the resource's policy (a bucket policy, a key policy, a role's trust policy, ...), whose statements
//!   also name the principal: by its ARN (*named*), by its account (`123456789012` or `…:root`), or `*`;
//! * the Organizations SCPs above the principal's account (an Allow at every level) and the RCPs above
//!   the resource's account (Deny only, as AWS's `RCPFullAWSAccess` allows everything).
//!
//! Same account: the identity's policies or a resource policy naming the principal suffice, except for
//! role trust policies and KMS key policies, which must allow (naming the principal, or naming the
//! account and the identity's policies allowing too). Across accounts both sides must allow. An
//! unconditional explicit Deny anywhere denies; a conditional one makes the answer conditional.
//!
//! Approximations (documented in `docs/access.md`): conditions are not evaluated (kept and shown),
//! except `aws:CurrentTime` under the date operators when the request's time is given
//! ([`AccessModel::decide_in`], [`crate::condition`]);
//! `NotPrincipal` is not read; policy variables other than `${aws:username}` and
//! `${aws:PrincipalAccount}` match anything and make the match conditional; session policies and
//! VPC endpoint policies are not known.

use std::borrow::Cow;

use rustc_hash::FxHashMap;
use serde::Deserialize;

use crate::condition::Judgement;
pub use crate::condition::RequestContext;
use crate::glob::Glob;
use crate::iam::{
    Effect, IamSnapshot, PolicyDocument, Principal, Statement, account_principal, arn_account, is_account_id,
    parse_policy_document, principal_account,
};
use crate::org::Organization;
use crate::policy::Vendored;
use grantwatch_types::IdentityKind;

/// How far a gate (or a whole request) is allowed. Ordered: `No < Conditional < Yes`, so that
/// "both must allow" is `min` and "either suffices" is `max`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Grade {
    #[default]
    No,
    /// Allowed if some Condition holds (an Allow's), or unless one does (a conditional Deny's).
    Conditional,
    Yes,
}

/// A statement of a policy the model knows, by position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StatementRef {
    pub source: u32,
    pub index: u32,
}

/// What kind of policy a source is: it decides which gate its statements feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Identity,
    Boundary,
    Resource,
    Trust,
    Scp,
    Rcp,
}

/// A policy document with a name a person can find it by.
#[derive(Debug, Clone)]
pub struct PolicySource {
    /// A managed policy's ARN; `inline:<identity ARN>:<policy name>` for inline policies;
    /// `trust:<role ARN>`; `resource:<resource ARN>`; `scp:<index>` / `rcp:<index>`.
    pub label: String,
    pub kind: SourceKind,
    pub document: PolicyDocument,
}

/// A user, role or group of the snapshot.
#[derive(Debug, Clone)]
pub struct Subject {
    pub arn: String,
    pub account: String,
    pub name: String,
    pub kind: IdentityKind,
    /// Identity policies: its own, then its groups'.
    pub policies: Vec<u32>,
    /// Managed policies attached to it directly (ARNs), and inline policy names: what it could
    /// rewrite to raise itself.
    pub attached: Vec<String>,
    pub boundary: Option<u32>,
    /// Roles: the trust policy.
    pub trust: Option<u32>,
    /// Users: their groups, as subject indices.
    pub groups: Vec<u32>,
    pub service_linked: bool,
    /// Roles: held by an instance profile (an EC2 instance can run as it).
    pub instance_profile: bool,
    /// Same `policy_set` = same identity policies and boundary, and no policy variable in them: the
    /// identity side of any request is the same for both.
    pub policy_set: u32,
    pub uses_variables: bool,
}

/// A resource-based policy from the resource-policies input (`docs/access.md`).
#[derive(Debug, Clone, PartialEq)]
pub struct ResourcePolicy {
    pub arn: String,
    /// The account owning the resource (S3 ARNs carry none).
    pub account: String,
    pub document: PolicyDocument,
}

/// The SCP levels (root first) and the RCPs above an account, as sources.
type OrgSources = (Vec<Vec<u32>>, Vec<u32>);

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub grade: Grade,
    /// Allowed: the Allow statements that grant it (identity, boundary, resource or trust policies)
    /// and the conditional Denies that may take it away. Denied by an explicit Deny: that Deny.
    pub statements: Vec<StatementRef>,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.grade > Grade::No
    }
}

/// Errors of the resource-policies input.
#[derive(Debug, thiserror::Error)]
pub enum ResourcePolicyError {
    #[error("{file}: not a resource-policies file: {reason}")]
    Format { file: String, reason: String },
    #[error("{file}: ResourcePolicies[{index}] ({arn}): {reason}")]
    Entry { file: String, index: usize, arn: String, reason: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(rename = "ResourcePolicies")]
    resource_policies: Vec<RawEntry>,
}

#[derive(Deserialize)]
struct RawEntry {
    #[serde(rename = "Arn")]
    arn: String,
    #[serde(rename = "Account", default)]
    account: Option<String>,
    #[serde(rename = "Policy")]
    policy: serde_json::Value,
}

/// Parses a resource-policies file (`{"ResourcePolicies": [{"Arn", "Account"?, "Policy"}]}`; the
/// policy an object or the JSON string `get-*-policy` prints). `file` names it in errors.
pub fn parse_resource_policies(text: &str, file: &str) -> Result<Vec<ResourcePolicy>, ResourcePolicyError> {
    let raw: RawFile = serde_json::from_str(text)
        .map_err(|e| ResourcePolicyError::Format { file: file.to_string(), reason: e.to_string() })?;
    let mut out = Vec::with_capacity(raw.resource_policies.len());
    for (index, e) in raw.resource_policies.into_iter().enumerate() {
        let fail =
            |reason: String| ResourcePolicyError::Entry { file: file.to_string(), index, arn: e.arn.clone(), reason };
        if !e.arn.starts_with("arn:") {
            return Err(fail("Arn is not an ARN".to_string()));
        }
        let account = match (e.account.clone(), arn_account(&e.arn).filter(|a| !a.is_empty())) {
            (Some(a), _) => a,
            (None, Some(a)) => a.to_string(),
            (None, None) => return Err(fail("the ARN names no account: give \"Account\"".to_string())),
        };
        if !is_account_id(&account) {
            return Err(fail(format!("Account {account:?} is not a 12-digit account id")));
        }
        let document = parse_policy_document(&e.policy, file, &format!("ResourcePolicies[{index}].Policy"), true)
            .map_err(|err| fail(err.message))?;
        out.push(ResourcePolicy { arn: e.arn, account, document });
    }
    Ok(out)
}

/// Everything a request is evaluated against: the snapshot's identities and their policies, the
/// resource policies, the organization.
#[derive(Debug)]
pub struct AccessModel {
    pub subjects: Vec<Subject>,
    pub sources: Vec<PolicySource>,
    by_arn: FxHashMap<String, u32>,
    /// Resource ARN → (owning account, its policy source).
    resource_policies: FxHashMap<String, (String, u32)>,
    /// Account → the SCP levels and RCPs above it, as sources (`None`: nothing limits it).
    org_sources: FxHashMap<String, Option<OrgSources>>,
}

impl AccessModel {
    /// Builds the model. Managed policies missing from the snapshot fall back to the vendored AWS
    /// managed policies, as in [`crate::policy`]; missing everywhere, they allow nothing.
    pub fn new(snapshot: &IamSnapshot, resources: &[ResourcePolicy], org: Option<&Organization>) -> AccessModel {
        let mut b = Builder { sources: Vec::new(), managed: FxHashMap::default(), vendored: None, snapshot };
        let mut subjects = Vec::new();
        let mut group_ids: FxHashMap<(&str, &str), u32> = FxHashMap::default();
        let own = |b: &mut Builder<'_>, arn: &str, inline: &[crate::iam::InlinePolicy], attached: &[String]| {
            let mut ids = Vec::new();
            let mut names = Vec::new();
            for p in inline {
                ids.push(b.push(format!("inline:{arn}:{}", p.name), SourceKind::Identity, p.document.clone()));
                names.push(format!("inline:{}", p.name));
            }
            for a in attached {
                if let Some(i) = b.managed(a, SourceKind::Identity) {
                    ids.push(i);
                }
                names.push(a.clone());
            }
            (ids, names)
        };
        // What every subject starts as; users and roles then add what only they have.
        let base =
            |arn: &str, account: &str, name: &str, kind, (policies, attached): (Vec<u32>, Vec<String>)| Subject {
                arn: arn.to_string(),
                account: account.to_string(),
                name: name.to_string(),
                kind,
                policies,
                attached,
                boundary: None,
                trust: None,
                groups: Vec::new(),
                service_linked: false,
                instance_profile: false,
                policy_set: 0,
                uses_variables: false,
            };
        for g in &snapshot.groups {
            group_ids.insert((g.account.as_str(), g.name.as_str()), subjects.len() as u32);
            let own = own(&mut b, &g.arn, &g.inline, &g.attached);
            subjects.push(base(&g.arn, &g.account, &g.name, IdentityKind::Group, own));
        }
        for u in &snapshot.users {
            let mut s =
                base(&u.arn, &u.account, &u.name, IdentityKind::User, own(&mut b, &u.arn, &u.inline, &u.attached));
            for gname in &u.groups {
                if let Some(&gi) = group_ids.get(&(u.account.as_str(), gname.as_str())) {
                    s.groups.push(gi);
                    if let Some(g) = subjects.get(gi as usize) {
                        s.policies.extend(g.policies.iter().copied());
                    }
                }
            }
            s.boundary = u.boundary.as_deref().and_then(|a| b.managed(a, SourceKind::Boundary));
            subjects.push(s);
        }
        for r in &snapshot.roles {
            let mut s =
                base(&r.arn, &r.account, &r.name, IdentityKind::Role, own(&mut b, &r.arn, &r.inline, &r.attached));
            s.boundary = r.boundary.as_deref().and_then(|a| b.managed(a, SourceKind::Boundary));
            s.trust = r.trust_policy.clone().map(|d| b.push(format!("trust:{}", r.arn), SourceKind::Trust, d));
            s.service_linked = r.path.starts_with("/aws-service-role/");
            s.instance_profile = !r.instance_profiles.is_empty();
            subjects.push(s);
        }
        let mut sources = b.sources;
        let mut sets: FxHashMap<(Vec<u32>, Option<u32>), u32> = FxHashMap::default();
        for s in &mut subjects {
            s.policies.sort_unstable();
            s.policies.dedup();
            s.uses_variables = s
                .policies
                .iter()
                .chain(s.boundary.iter())
                .filter_map(|&i| sources.get(i as usize))
                .any(|src| src.document.statements.iter().any(|st| st.resources.iter().any(|r| r.contains("${"))));
            let next = sets.len() as u32;
            s.policy_set = *sets.entry((s.policies.clone(), s.boundary)).or_insert(next);
        }
        let by_arn = subjects.iter().enumerate().map(|(i, s)| (s.arn.clone(), i as u32)).collect();
        let mut resource_policies = FxHashMap::default();
        for s in &subjects {
            if let Some(t) = s.trust {
                resource_policies.insert(s.arn.clone(), (s.account.clone(), t));
            }
        }
        for r in resources {
            sources.push(PolicySource {
                label: format!("resource:{}", r.arn),
                kind: SourceKind::Resource,
                document: r.document.clone(),
            });
            resource_policies.insert(r.arn.clone(), (r.account.clone(), (sources.len() - 1) as u32));
        }
        let mut model = AccessModel { subjects, sources, by_arn, resource_policies, org_sources: FxHashMap::default() };
        if let Some(org) = org {
            let mut accounts: Vec<String> = model.subjects.iter().map(|s| s.account.clone()).collect();
            accounts.extend(model.resource_policies.values().map(|(a, _)| a.clone()));
            accounts.sort();
            accounts.dedup();
            for account in accounts {
                let entry = org.policies_above(&account).map(|p| {
                    let push = |kind: SourceKind, d: &PolicyDocument, sources: &mut Vec<PolicySource>| {
                        let label = format!(
                            "{}:{account}:{}",
                            if kind == SourceKind::Scp { "scp" } else { "rcp" },
                            sources.len()
                        );
                        sources.push(PolicySource { label, kind, document: d.clone() });
                        (sources.len() - 1) as u32
                    };
                    let levels = p
                        .scp_levels
                        .iter()
                        .map(|l| l.iter().map(|d| push(SourceKind::Scp, d, &mut model.sources)).collect())
                        .collect();
                    let rcps = p.rcps.iter().map(|d| push(SourceKind::Rcp, d, &mut model.sources)).collect();
                    (levels, rcps)
                });
                model.org_sources.insert(account, entry);
            }
        }
        model
    }

    pub fn subject(&self, arn: &str) -> Option<u32> {
        self.by_arn.get(arn).copied()
    }

    /// The policy and statement a reference points at.
    pub fn statement(&self, r: StatementRef) -> Option<(&PolicySource, &Statement)> {
        let src = self.sources.get(r.source as usize)?;
        Some((src, src.document.statements.get(r.index as usize)?))
    }

    /// The resource policy governing `action` on `resource`: its own, or for an S3 object its
    /// bucket's. A role's trust policy governs only the `sts:` actions on it (assuming it, tagging
    /// the session); `iam:` actions on a role have no resource policy.
    pub fn resource_policy(&self, action: &str, resource: &str) -> Option<(&str, u32)> {
        if let Some((a, s)) = self.resource_policies.get(resource) {
            let trust = self.sources.get(*s as usize).is_some_and(|p| p.kind == SourceKind::Trust);
            if trust && !action.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("sts:")) {
                return None;
            }
            return Some((a, *s));
        }
        let bucket = resource.strip_prefix("arn:aws:s3:::")?.split('/').next()?;
        self.resource_policies.get(&format!("arn:aws:s3:::{bucket}")).map(|(a, s)| (a.as_str(), *s))
    }

    /// May subject `who` perform `action` on `resource`? `action` is one IAM action (`s3:GetObject`),
    /// `resource` an ARN (or `*` for actions without a resource type).
    pub fn decide(&self, who: u32, action: &str, resource: &str) -> Decision {
        self.decide_in(who, action, resource, &RequestContext::UNKNOWN)
    }

    /// [`AccessModel::decide`] for a request made in `ctx`: a statement whose condition `ctx`
    /// judges true applies unconditionally, one it judges false does not apply, and the rest are
    /// conditional as without a context. With a request time, a time-locked Allow
    /// (`DateLessThan aws:CurrentTime`) grants before its expiry and nothing after it.
    pub fn decide_in(&self, who: u32, action: &str, resource: &str, ctx: &RequestContext) -> Decision {
        let Some(s) = self.subjects.get(who as usize) else {
            return Decision { grade: Grade::No, statements: Vec::new() };
        };
        let identity = self.identity_side_in(s, action, resource, ctx);
        self.finish_in(s, identity, action, resource, ctx)
    }

    /// The identity side alone (identity policies and boundary): a function of the subject's
    /// `policy_set` unless it `uses_variables`.
    pub fn identity_side(&self, s: &Subject, action: &str, resource: &str) -> IdentitySide {
        self.identity_side_in(s, action, resource, &RequestContext::UNKNOWN)
    }

    fn identity_side_in(&self, s: &Subject, action: &str, resource: &str, ctx: &RequestContext) -> IdentitySide {
        let mut scan = Scan::default();
        for &p in &s.policies {
            self.scan_source(p, action, resource, Some(s), None, ctx, &mut scan);
        }
        let mut boundary = None;
        if let Some(b) = s.boundary {
            let mut bs = Scan::default();
            self.scan_source(b, action, resource, Some(s), None, ctx, &mut bs);
            boundary = Some(bs);
        }
        IdentitySide { scan, boundary }
    }

    /// Combines a subject's identity side with the resource policy and the organization.
    pub fn finish(&self, s: &Subject, identity: IdentitySide, action: &str, resource: &str) -> Decision {
        self.finish_in(s, identity, action, resource, &RequestContext::UNKNOWN)
    }

    fn finish_in(
        &self,
        s: &Subject,
        identity: IdentitySide,
        action: &str,
        resource: &str,
        ctx: &RequestContext,
    ) -> Decision {
        let IdentitySide { scan: mut all, boundary } = identity;
        let mut id_grade = all.allow;
        if let Some(b) = boundary {
            id_grade = id_grade.min(b.allow);
            all.absorb(b, false);
        }

        // The resource side.
        let mut grade = id_grade;
        let mut resource_account = arn_account(resource).filter(|a| !a.is_empty()).map(str::to_string);
        match self.resource_policy(action, resource) {
            Some((account, src)) => {
                resource_account = Some(account.to_string());
                let mut rs = Scan::default();
                self.scan_source(src, action, resource, Some(s), Some(s), ctx, &mut rs);
                let required = self.sources.get(src as usize).is_some_and(|p| p.kind == SourceKind::Trust)
                    || resource.starts_with("arn:aws:kms:");
                grade = match (account == s.account, required) {
                    (true, false) => id_grade.max(rs.named),
                    (true, true) => rs.named.max(rs.account.min(id_grade)),
                    (false, _) => id_grade.min(rs.named.max(rs.account)),
                };
                all.absorb(rs, true);
            }
            // Another account's resource without a resource policy (an IAM user, a role without
            // trust in this account): nothing in that account lets this principal in.
            None if resource_account.as_deref().is_some_and(|a| a != s.account && a != "aws") => grade = Grade::No,
            None => {}
        }

        // The organization: SCPs above the principal, RCPs above the resource's account.
        if !s.service_linked
            && let Some(Some((levels, _))) = self.org_sources.get(&s.account)
        {
            for level in levels {
                let mut ls = Scan::default();
                for &p in level {
                    self.scan_source(p, action, resource, None, None, ctx, &mut ls);
                }
                grade = grade.min(ls.allow);
                all.absorb(ls, false);
            }
        }
        let rcp_account = resource_account.unwrap_or_else(|| s.account.clone());
        if let Some(Some((_, rcps))) = self.org_sources.get(&rcp_account) {
            let mut rs = Scan::default();
            for &p in rcps {
                self.scan_source(p, action, resource, None, Some(s), ctx, &mut rs);
            }
            all.absorb(rs, false);
        }

        // Denies anywhere.
        if let Some(d) = all.deny {
            return Decision { grade: Grade::No, statements: vec![d] };
        }
        if !all.conditional_denies.is_empty() {
            grade = grade.min(Grade::Conditional);
        }
        if grade == Grade::No {
            return Decision { grade, statements: Vec::new() };
        }
        let mut statements = all.allows;
        statements.extend(all.conditional_denies);
        statements.sort_unstable();
        statements.dedup();
        Decision { grade, statements }
    }

    /// Scans one policy for statements matching the request. `subject` substitutes policy variables;
    /// `principal`, when given, is matched against the statements' `Principal` (resource, trust and
    /// resource control policies). `ctx` judges the conditions it can.
    #[allow(clippy::too_many_arguments)]
    fn scan_source(
        &self,
        source: u32,
        action: &str,
        resource: &str,
        subject: Option<&Subject>,
        principal: Option<&Subject>,
        ctx: &RequestContext,
        scan: &mut Scan,
    ) {
        let Some(src) = self.sources.get(source as usize) else { return };
        let has_principal = matches!(src.kind, SourceKind::Resource | SourceKind::Trust);
        for (i, st) in src.document.statements.iter().enumerate() {
            if !action_matches(st, action) {
                continue;
            }
            let mut conditional = match st.condition.as_deref() {
                None => false,
                Some(c) => match ctx.judge(c) {
                    Judgement::Holds => false,
                    Judgement::Fails => continue,
                    Judgement::Unknown => true,
                },
            };
            if src.kind != SourceKind::Trust {
                match resource_matches(st, resource, subject) {
                    Match::No => continue,
                    Match::Maybe => conditional = true,
                    Match::Yes => {}
                }
            }
            let who = if has_principal {
                match principal.map(|p| principal_matches(st.principal.as_ref(), p)) {
                    Some(PrincipalMatch::None) | None => continue,
                    Some(m) => m,
                }
            } else {
                PrincipalMatch::Named
            };
            // An RCP's Deny applies to principals outside the organization only when its conditions say
            // so; like every conditional statement, it is shown but not evaluated.
            let r = StatementRef { source, index: i as u32 };
            let grade = if conditional { Grade::Conditional } else { Grade::Yes };
            match st.effect {
                Effect::Allow => {
                    scan.allows.push(r);
                    scan.allow = scan.allow.max(grade);
                    match who {
                        PrincipalMatch::Account => scan.account = scan.account.max(grade),
                        _ => scan.named = scan.named.max(grade),
                    }
                }
                Effect::Deny if conditional => scan.conditional_denies.push(r),
                Effect::Deny => {
                    scan.deny.get_or_insert(r);
                }
            }
        }
    }

    /// The principals a role's trust policy names, with the statement and its condition: who can
    /// assume it (subject to their own policies for accounts and the same-account rule above).
    pub fn trusted_principals(&self, role: u32) -> Vec<(String, StatementRef)> {
        let Some(t) = self.subjects.get(role as usize).and_then(|s| s.trust) else { return Vec::new() };
        let Some(src) = self.sources.get(t as usize) else { return Vec::new() };
        let mut out = Vec::new();
        for (i, st) in src.document.statements.iter().enumerate() {
            if st.effect != Effect::Allow {
                continue;
            }
            let r = StatementRef { source: t, index: i as u32 };
            if let Some(p) = &st.principal {
                if p.any {
                    out.push(("*".to_string(), r));
                }
                for name in p.aws.iter().filter(|a| *a != "*").chain(&p.service).chain(&p.federated) {
                    out.push((name.clone(), r));
                }
            }
        }
        out
    }
}

/// Public and cross-account access granted by role trust policies and resource-based policies, one
/// entry per (statement, principal). Service principals are not listed (a service acting for the
/// account is the account's own use), nor the account's own identity providers.
pub fn resource_access(model: &AccessModel) -> Vec<grantwatch_types::ResourceAccess> {
    let known: std::collections::BTreeSet<&str> = model.subjects.iter().map(|s| s.account.as_str()).collect();
    let mut entries: Vec<(&String, &(String, u32))> = model.resource_policies.iter().collect();
    entries.sort();
    let mut out = Vec::new();
    for (arn, (owner, source)) in entries {
        let Some(src) = model.sources.get(*source as usize) else { continue };
        for (i, st) in src.document.statements.iter().enumerate() {
            let (Effect::Allow, Some(p)) = (st.effect, &st.principal) else { continue };
            let mut push = |access: &str, principal: &str, account: Option<&str>| {
                out.push(grantwatch_types::ResourceAccess {
                    resource: arn.clone(),
                    account: owner.clone(),
                    access: access.to_string(),
                    principal: principal.to_string(),
                    external: account.is_none_or(|a| !known.contains(a)),
                    actions: if st.not_action {
                        st.actions.iter().map(|a| format!("!{a}")).collect()
                    } else {
                        st.actions.clone()
                    },
                    condition: st.condition.as_deref().and_then(|c| serde_json::from_str(c).ok()),
                    policy: src.label.clone(),
                    statement: i as u32,
                });
            };
            if p.any {
                push("public", "*", None);
            }
            for a in p.aws.iter().filter(|a| *a != "*") {
                let account = principal_account(a);
                if account.is_some_and(|acc| acc != owner) {
                    push("cross-account", a, account);
                }
            }
            // An identity provider of another account (its own SAML or OIDC provider is how the
            // account's people and pipelines come in: that is not access from outside).
            for f in &p.federated {
                if let Some(account) = arn_account(f).filter(|a| !a.is_empty() && *a != owner) {
                    push("federated", f, Some(account));
                }
            }
        }
    }
    out
}

/// One way to act as a role: `from` may assume `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssumeEdge {
    pub from: u32,
    pub to: u32,
    pub decision: Decision,
}

/// One answer of [`AccessModel::who_can`]: `subject` can do it itself (`chain` empty), or by assuming
/// the roles of `chain` in turn, the last of which can do it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhoCanAnswer {
    pub subject: u32,
    /// The roles assumed, in order, each with the decision allowing the previous identity to assume it.
    pub chain: Vec<(u32, Decision)>,
    /// The decision for the request itself, of the subject or of the chain's last role.
    pub decision: Decision,
    /// The weakest grade along the way: `Conditional` when any step holds only under a condition.
    pub grade: Grade,
}

impl AccessModel {
    /// Every principal (user or role) that may assume a role, with the decision saying why. Candidates
    /// come from the trust policies (naming the principal, its account, or anyone), so the cost is the
    /// number of such pairs; the identity side is computed once per distinct policy set and role.
    pub fn assume_edges(&self) -> Vec<AssumeEdge> {
        const ASSUME: &str = "sts:AssumeRole";
        let mut by_arn: FxHashMap<&str, Vec<u32>> = FxHashMap::default();
        let mut by_account: FxHashMap<&str, Vec<u32>> = FxHashMap::default();
        let mut anyone: Vec<u32> = Vec::new();
        for (ri, r) in self.subjects.iter().enumerate() {
            let Some(src) = r.trust.and_then(|t| self.sources.get(t as usize)) else { continue };
            for st in src.document.statements.iter().filter(|s| s.effect == Effect::Allow) {
                let Some(p) = &st.principal else { continue };
                if p.any {
                    anyone.push(ri as u32);
                }
                for a in &p.aws {
                    match account_principal(a) {
                        Some(acc) => by_account.entry(acc).or_default().push(ri as u32),
                        None => by_arn.entry(a.as_str()).or_default().push(ri as u32),
                    }
                }
            }
        }
        let mut identity_cache: FxHashMap<(u32, u32), IdentitySide> = FxHashMap::default();
        let mut may_assume_by_set: FxHashMap<u32, bool> = FxHashMap::default();
        let mut out = Vec::new();
        let mut candidates: Vec<u32> = Vec::new();
        for (pi, p) in self.subjects.iter().enumerate() {
            if p.kind == IdentityKind::Group {
                continue;
            }
            // Without an Allow naming sts:AssumeRole in its own policies, a principal can assume only
            // the roles whose trust policy names it or anyone (same account); most principals are such.
            let may_assume = *may_assume_by_set.entry(p.policy_set).or_insert_with(|| {
                p.policies.iter().filter_map(|&i| self.sources.get(i as usize)).any(|src| {
                    src.document.statements.iter().any(|st| st.effect == Effect::Allow && action_matches(st, ASSUME))
                })
            });
            candidates.clear();
            candidates.extend(by_arn.get(p.arn.as_str()).into_iter().flatten());
            candidates.extend(&anyone);
            if may_assume {
                candidates.extend(by_account.get(p.account.as_str()).into_iter().flatten());
            }
            candidates.sort_unstable();
            candidates.dedup();
            for &ri in &candidates {
                if ri as usize == pi {
                    continue;
                }
                let Some(r) = self.subjects.get(ri as usize) else { continue };
                let side = if p.uses_variables {
                    self.identity_side(p, ASSUME, &r.arn)
                } else {
                    identity_cache
                        .entry((p.policy_set, ri))
                        .or_insert_with(|| self.identity_side(p, ASSUME, &r.arn))
                        .clone()
                };
                let decision = self.finish(p, side, ASSUME, &r.arn);
                if decision.allowed() {
                    out.push(AssumeEdge { from: pi as u32, to: ri, decision });
                }
            }
        }
        out
    }

    /// Everyone (users and roles) who can perform `action` on `resource`: directly, or by assuming a
    /// chain of roles (shortest chains, from `edges`, see [`AccessModel::assume_edges`]). Sorted by
    /// subject index.
    pub fn who_can(&self, action: &str, resource: &str, edges: &[AssumeEdge]) -> Vec<WhoCanAnswer> {
        let n = self.subjects.len();
        let mut into: Vec<Vec<&AssumeEdge>> = vec![Vec::new(); n];
        for e in edges {
            if let Some(v) = into.get_mut(e.to as usize) {
                v.push(e);
            }
        }
        let mut answer: Vec<Option<WhoCanAnswer>> = vec![None; n];
        let mut frontier = Vec::new();
        for (i, s) in self.subjects.iter().enumerate() {
            // A role assuming itself needs its trust policy to name it explicitly: that is an answer
            // about the trust policy, not a way to act as anyone new.
            if s.kind == IdentityKind::Group || (s.arn == resource && action.eq_ignore_ascii_case("sts:AssumeRole")) {
                continue;
            }
            let decision = self.decide(i as u32, action, resource);
            if decision.allowed() {
                let grade = decision.grade;
                answer[i] = Some(WhoCanAnswer { subject: i as u32, chain: Vec::new(), decision, grade });
                frontier.push(i);
            }
        }
        // Breadth first from those who can, backwards along the assume edges, one chain length at a
        // time: a principal's chain is a shortest one, and of those the one with the best grade
        // (unconditional over conditional), ties broken by the lowest role index for stable output.
        while !frontier.is_empty() {
            let mut next: Vec<(usize, WhoCanAnswer)> = Vec::new();
            for &r in &frontier {
                let Some(via) = answer[r].as_ref() else { continue };
                for e in into.get(r).into_iter().flatten() {
                    let from = e.from as usize;
                    if answer.get(from).is_none_or(Option::is_some) {
                        continue;
                    }
                    let grade = via.grade.min(e.decision.grade);
                    let mut chain = vec![(e.to, e.decision.clone())];
                    chain.extend(via.chain.iter().cloned());
                    next.push((from, WhoCanAnswer { subject: e.from, chain, decision: via.decision.clone(), grade }));
                }
            }
            next.sort_by(|(a, x), (b, y)| a.cmp(b).then(y.grade.cmp(&x.grade)).then(x.chain[0].0.cmp(&y.chain[0].0)));
            next.dedup_by_key(|(i, _)| *i);
            frontier = next.iter().map(|(i, _)| *i).collect();
            for (i, a) in next {
                answer[i] = Some(a);
            }
        }
        answer.into_iter().flatten().collect()
    }
}

/// The identity side of a request, before the resource policy and the organization.
#[derive(Debug, Clone, Default)]
pub struct IdentitySide {
    scan: Scan,
    boundary: Option<Scan>,
}

#[derive(Debug, Clone, Default)]
struct Scan {
    allow: Grade,
    /// For resource policies: allowed for the principal by name (or `*`), or by its account.
    named: Grade,
    account: Grade,
    allows: Vec<StatementRef>,
    deny: Option<StatementRef>,
    conditional_denies: Vec<StatementRef>,
}

impl Scan {
    /// Takes another scan's denies, and its allows when `allows` (they contributed to the answer).
    fn absorb(&mut self, other: Scan, allows: bool) {
        if self.deny.is_none() {
            self.deny = other.deny;
        }
        self.conditional_denies.extend(other.conditional_denies);
        if allows {
            self.allows.extend(other.allows);
        }
    }
}

pub(crate) fn action_matches(st: &Statement, action: &str) -> bool {
    st.actions.iter().any(|p| Glob::IAM_ACTION.matches(p.trim(), action)) != st.not_action
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Match {
    No,
    /// Matches only if an unknown policy variable takes a fitting value.
    Maybe,
    Yes,
}

fn resource_matches(st: &Statement, resource: &str, subject: Option<&Subject>) -> Match {
    let mut best = Match::No;
    for p in &st.resources {
        let (pattern, unknown) = substitute(p, subject);
        if Glob::RESOURCE.matches(&pattern, resource) {
            best = if unknown { Match::Maybe } else { Match::Yes };
            if best == Match::Yes {
                break;
            }
        }
    }
    if st.not_resource {
        // Excluded when a listed pattern matches; an unknown variable leaves it open.
        return match best {
            Match::Yes => Match::No,
            Match::Maybe => Match::Maybe,
            Match::No => Match::Yes,
        };
    }
    best
}

/// Replaces policy variables in a resource pattern: the principal's name and account where known,
/// the escapes `${*}`, `${?}`, `${$}`; any other variable becomes `*` and the match is then
/// only possible (`true`).
fn substitute<'a>(pattern: &'a str, subject: Option<&Subject>) -> (Cow<'a, str>, bool) {
    if !pattern.contains("${") {
        return (Cow::Borrowed(pattern), false);
    }
    let mut out = String::with_capacity(pattern.len());
    let mut unknown = false;
    let mut rest = pattern;
    while let Some(start) = rest.find("${") {
        out.push_str(rest.get(..start).unwrap_or(""));
        let after = rest.get(start + 2..).unwrap_or("");
        let Some(end) = after.find('}') else {
            out.push_str(rest.get(start..).unwrap_or(""));
            rest = "";
            break;
        };
        let var = after.get(..end).unwrap_or("").trim();
        match (var.to_ascii_lowercase().as_str(), subject) {
            ("*", _) => out.push('\u{1}'),
            ("?", _) => out.push('\u{2}'),
            ("$", _) => out.push('$'),
            ("aws:username", Some(s)) if s.kind == IdentityKind::User => out.push_str(&s.name),
            ("aws:principalaccount", Some(s)) => out.push_str(&s.account),
            _ => {
                out.push('*');
                unknown = true;
            }
        }
        rest = after.get(end + 1..).unwrap_or("");
    }
    out.push_str(rest);
    // `${*}` and `${?}` are literal characters: a resource containing them is vanishingly rare, and
    // a byte that never occurs in an ARN keeps them from acting as wildcards.
    (Cow::Owned(out), unknown)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PrincipalMatch {
    None,
    /// By the principal's own ARN, or `*`.
    Named,
    /// By the principal's account (`123456789012`, `arn:aws:iam::123456789012:root`).
    Account,
}

fn principal_matches(p: Option<&Principal>, s: &Subject) -> PrincipalMatch {
    let Some(p) = p else { return PrincipalMatch::None };
    if p.any {
        return PrincipalMatch::Named;
    }
    let mut best = PrincipalMatch::None;
    for a in &p.aws {
        if *a == s.arn {
            return PrincipalMatch::Named;
        }
        if account_principal(a) == Some(s.account.as_str()) {
            best = PrincipalMatch::Account;
        }
    }
    best
}

struct Builder<'s> {
    sources: Vec<PolicySource>,
    managed: FxHashMap<String, Option<u32>>,
    vendored: Option<Vendored>,
    snapshot: &'s IamSnapshot,
}

impl Builder<'_> {
    fn push(&mut self, label: String, kind: SourceKind, document: PolicyDocument) -> u32 {
        self.sources.push(PolicySource { label, kind, document });
        (self.sources.len() - 1) as u32
    }

    /// A managed policy by ARN, once; a boundary use is a separate source (another gate).
    fn managed(&mut self, arn: &str, kind: SourceKind) -> Option<u32> {
        let key = format!("{kind:?}:{arn}");
        if let Some(&id) = self.managed.get(&key) {
            return id;
        }
        let doc = match self.snapshot.policies.get(arn).and_then(|p| p.document.clone()) {
            Some(d) => Some(d),
            None if crate::iam::is_aws_managed(arn) => self.vendored.get_or_insert_with(Vendored::load).document(arn),
            None => None,
        };
        let id = doc.map(|d| self.push(arn.to_string(), kind, d));
        self.managed.insert(key, id);
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bad resource-policies file stops with an error naming the file, and for an entry its index
    /// and ARN.
    #[test]
    fn bad_resource_policy_files_are_named() {
        let err = |text: &str| parse_resource_policies(text, "rp.json").unwrap_err().to_string();
        assert!(err("[1]").starts_with("rp.json: not a resource-policies file"));
        assert!(err(r#"{"ResourcePolicies": [], "Extra": 1}"#).contains("unknown field"), "a misspelt key is refused");
        let e = err(r#"{"ResourcePolicies": [{"Arn": "arn:aws:s3:::b", "Policy": {"Statement": []}}]}"#);
        assert!(e.starts_with("rp.json: ResourcePolicies[0] (arn:aws:s3:::b): ") && e.contains("Account"), "{e}");
        let e =
            err(r#"{"ResourcePolicies": [{"Arn": "arn:aws:sqs:us-east-1:111122223333:q", "Policy": "{not json"}]}"#);
        assert!(e.contains("ResourcePolicies[0] (arn:aws:sqs:us-east-1:111122223333:q)"), "{e}");
        let e = err(r#"{"ResourcePolicies": [{"Arn": "arn:aws:s3:::b", "Account": "12", "Policy": {}}]}"#);
        assert!(e.contains("12-digit"), "{e}");
        let ok = parse_resource_policies(
            r#"{"ResourcePolicies": [{"Arn": "arn:aws:sqs:us-east-1:111122223333:q",
                "Policy": "{\"Statement\":[{\"Effect\":\"Allow\",\"Principal\":\"*\",\"Action\":\"sqs:*\",\"Resource\":\"*\"}]}"}]}"#,
            "rp.json",
        )
        .unwrap();
        assert_eq!((ok[0].account.as_str(), ok[0].document.statements.len()), ("111122223333", 1));
    }

    /// A request's time judges `aws:CurrentTime` locks: a time-locked Allow grants before its expiry
    /// and nothing after it, a time-locked Deny denies only within its window, and a condition that
    /// also names another key stays conditional while its time part holds. Without a time, all of
    /// them stay conditional, as `decide` always answered.
    #[test]
    fn a_request_time_judges_time_locks() {
        use crate::iam::{IamSnapshot, parse_iam_json};
        use grantwatch_types::EventTime;
        let lock = |op: &str, t: &str| serde_json::json!({op: {"aws:CurrentTime": t}});
        let allow = |action: &str, condition: serde_json::Value| serde_json::json!({"Effect": "Allow", "Action": action, "Resource": "*", "Condition": condition});
        let mut ip_and_lock = lock("DateLessThan", "2025-01-02T00:00:00Z");
        ip_and_lock["IpAddress"] = serde_json::json!({"aws:SourceIp": "10.0.0.0/8"});
        let statements = serde_json::json!([
            allow("s3:GetObject", lock("DateLessThan", "2025-01-02T00:00:00Z")),
            allow("sqs:SendMessage", ip_and_lock),
            {"Effect": "Allow", "Action": "ec2:DescribeInstances", "Resource": "*"},
            {"Effect": "Deny", "Action": "ec2:DescribeInstances", "Resource": "*",
             "Condition": {"DateGreaterThanEquals": {"aws:CurrentTime": "2025-01-03T00:00:00Z"}}},
        ]);
        let user = serde_json::json!({"UserName": "u", "Arn": "arn:aws:iam::111122223333:user/u", "Path": "/",
            "UserPolicyList": [{"PolicyName": "grantwatch-access-r1",
                "PolicyDocument": {"Version": "2012-10-17", "Statement": statements}}],
            "GroupList": [], "AttachedManagedPolicies": []});
        let details =
            serde_json::json!({"UserDetailList": [user], "RoleDetailList": [], "GroupDetailList": [], "Policies": []});
        let mut snapshot = IamSnapshot::default();
        snapshot.merge(parse_iam_json(details.to_string().as_bytes(), "u.json").unwrap());
        let model = AccessModel::new(&snapshot, &[], None);
        let u = model.subject("arn:aws:iam::111122223333:user/u").unwrap();
        let grade = |action: &str, ctx: &RequestContext| model.decide_in(u, action, "*", ctx).grade;
        let at = |t: &str| RequestContext::at(EventTime::parse_rfc3339(t).unwrap());
        let (before, expired, later) =
            (at("2025-01-01T12:00:00Z"), at("2025-01-02T00:00:00Z"), at("2025-01-04T00:00:00Z"));
        let unknown = RequestContext::UNKNOWN;
        for (action, want) in [
            ("s3:GetObject", [Grade::Conditional, Grade::Yes, Grade::No, Grade::No]),
            ("sqs:SendMessage", [Grade::Conditional, Grade::Conditional, Grade::No, Grade::No]),
            ("ec2:DescribeInstances", [Grade::Conditional, Grade::Yes, Grade::Yes, Grade::No]),
        ] {
            let got = [grade(action, &unknown), grade(action, &before), grade(action, &expired), grade(action, &later)];
            assert_eq!(got, want, "{action}");
            assert_eq!(model.decide(u, action, "*").grade, want[0], "decide is decide_in without a context");
        }
        // The statements that decide: the lock that grants; after it, none; the Deny that denies.
        assert_eq!(model.decide_in(u, "s3:GetObject", "*", &before).statements, [StatementRef { source: 0, index: 0 }]);
        assert!(model.decide_in(u, "s3:GetObject", "*", &expired).statements.is_empty());
        assert_eq!(
            model.decide_in(u, "ec2:DescribeInstances", "*", &later).statements,
            [StatementRef { source: 0, index: 3 }]
        );
    }

    #[test]
    fn principal_entries_name_accounts() {
        assert_eq!(account_principal("111122223333"), Some("111122223333"));
        assert_eq!(account_principal("arn:aws:iam::111122223333:root"), Some("111122223333"));
        assert_eq!(account_principal("arn:aws:iam::111122223333:role/r"), None);
        assert_eq!(principal_account("arn:aws:iam::111122223333:role/r"), Some("111122223333"));
        assert_eq!(principal_account("*"), None);
    }
}
