//! AWS Organizations: service control policies (SCPs) and resource control policies (RCPs) as the
//! ceiling of what an account's identities are granted.
//!
//! **Input** (`analyze --organization FILE`, documented in `docs/organizations.md`): one JSON object
//! with the management account, the tree (roots, organizational units with their parent, accounts
//! with their parent) and the policies with their content and targets, as `aws organizations
//! list-roots`, `list-organizational-units-for-parent`, `list-accounts-for-parent`, `list-policies
//! --filter SERVICE_CONTROL_POLICY|RESOURCE_CONTROL_POLICY`, `describe-policy` and
//! `list-targets-for-policy` give them.
//!
//! **Rules** (AWS's SCP evaluation): an action is granted to an identity of account A only if, at
//! every level of the path root → OUs → A, some SCP attached there allows it, and no SCP on the path
//! denies it. RCPs only deny (their Allow is the implicit `RCPFullAWSAccess`); they apply to the
//! services they support, which their statements name. The management account is exempt from both,
//! and so are service-linked roles. A Deny under a condition or on some resources does not remove the
//! action: it is no longer granted on every resource without condition (`unscoped` loses it,
//! `conditional` gains it).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Deserialize;

use crate::catalog::Catalog;
use crate::iam::{PolicyDocument, parse_policy_document};
use crate::policy::{Ceiling, IdentityGrants, ceiling};

#[derive(Debug, thiserror::Error)]
pub enum OrgError {
    #[error("{file}: not an organization file: {reason}")]
    Format { file: String, reason: String },
    #[error("{file}: policy {id}: {reason}")]
    Policy { file: String, id: String, reason: String },
    #[error("{file}: {what} {id} has parent {parent}, which is not in the file")]
    Parent { file: String, what: &'static str, id: String, parent: String },
    #[error("{file}: the tree has a cycle through {id}")]
    Cycle { file: String, id: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOrg {
    management_account: Option<String>,
    #[serde(default)]
    roots: Vec<RawNode>,
    #[serde(default)]
    organizational_units: Vec<RawNode>,
    #[serde(default)]
    accounts: Vec<RawNode>,
    #[serde(default)]
    policies: Vec<RawPolicy>,
}

#[derive(Deserialize)]
struct RawNode {
    id: String,
    #[serde(default)]
    parent: Option<String>,
}

#[derive(Deserialize)]
struct RawPolicy {
    id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(rename = "type")]
    kind: PolicyKind,
    /// The policy document, as a JSON object or as the JSON text `describe-policy` returns.
    content: serde_json::Value,
    targets: Vec<String>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum PolicyKind {
    ServiceControlPolicy,
    ResourceControlPolicy,
}

/// An organization's tree and policies.
#[derive(Debug)]
pub struct Organization {
    management_account: Option<String>,
    /// Node id → parent id (roots have none).
    parent: BTreeMap<String, Option<String>>,
    /// Node id → (kind, document) of the policies attached to it.
    attached: BTreeMap<String, Vec<(PolicyKind, PolicyDocument)>>,
    /// Ceilings evaluated so far, by (catalog size, account): each account's is evaluated once,
    /// however many snapshots, identities and window closes (a root user's, in the processor) ask.
    ceilings: Mutex<CeilingCache>,
}

/// [`Organization::policies_above`]'s answer.
#[derive(Debug, Clone)]
pub struct OrgPolicies<'a> {
    /// Root first: the SCPs attached at each level of the path to the account.
    pub scp_levels: Vec<Vec<&'a PolicyDocument>>,
    /// The RCPs attached anywhere on the path.
    pub rcps: Vec<&'a PolicyDocument>,
}

/// (catalog size, account) → the account's ceiling, `None` when nothing caps it.
type CeilingCache = BTreeMap<(usize, String), Option<Arc<Ceiling>>>;

impl Organization {
    /// Parses the file's text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Organization, OrgError> {
        let raw: RawOrg = serde_json::from_str(text)
            .map_err(|e| OrgError::Format { file: file.to_string(), reason: e.to_string() })?;
        let mut parent = BTreeMap::new();
        for r in &raw.roots {
            parent.insert(r.id.clone(), None);
        }
        for (what, nodes) in [("organizational unit", &raw.organizational_units), ("account", &raw.accounts)] {
            for n in nodes {
                parent.insert(n.id.clone(), n.parent.clone());
                if let Some(p) = &n.parent
                    && !raw.roots.iter().any(|r| &r.id == p)
                    && !raw.organizational_units.iter().any(|o| &o.id == p)
                {
                    return Err(OrgError::Parent { file: file.to_string(), what, id: n.id.clone(), parent: p.clone() });
                }
            }
        }
        let mut attached: BTreeMap<String, Vec<(PolicyKind, PolicyDocument)>> = BTreeMap::new();
        for p in raw.policies {
            let content = match p.content {
                serde_json::Value::String(text) => serde_json::from_str(&text).map_err(|e| OrgError::Policy {
                    file: file.to_string(),
                    id: p.id.clone(),
                    reason: e.to_string(),
                })?,
                v => v,
            };
            let name = p.name.as_deref().unwrap_or(&p.id);
            let doc = parse_policy_document(&content, file, name, false).map_err(|e| OrgError::Policy {
                file: file.to_string(),
                id: p.id.clone(),
                reason: e.to_string(),
            })?;
            for t in p.targets {
                attached.entry(t).or_default().push((p.kind, doc.clone()));
            }
        }
        let org = Organization {
            management_account: raw.management_account,
            parent,
            attached,
            ceilings: Mutex::new(BTreeMap::new()),
        };
        for id in org.parent.keys() {
            org.path(id).ok_or_else(|| OrgError::Cycle { file: file.to_string(), id: id.clone() })?;
        }
        Ok(org)
    }

    /// Root first, the account last; `None` on a cycle.
    fn path<'a>(&'a self, account: &'a str) -> Option<Vec<&'a str>> {
        let mut path = vec![];
        let mut at = Some(account);
        while let Some(id) = at {
            if path.len() > self.parent.len() {
                return None;
            }
            path.push(id);
            at = self.parent.get(id).and_then(|p| p.as_deref());
        }
        path.reverse();
        Some(path)
    }

    /// The ceiling of `account`, `None` when nothing limits it (the management account, an account
    /// the file does not place in the tree).
    pub fn ceiling_of(&self, catalog: &Catalog, account: &str) -> Option<Ceiling> {
        if self.management_account.as_deref() == Some(account) || !self.parent.contains_key(account) {
            return None;
        }
        let path = self.path(account)?;
        let mut levels = Vec::new();
        let mut denies = Vec::new();
        for node in path {
            let policies = self.attached.get(node).map(Vec::as_slice).unwrap_or_default();
            levels.push(
                policies.iter().filter(|(k, _)| *k == PolicyKind::ServiceControlPolicy).map(|(_, d)| d).collect(),
            );
            denies.extend(policies.iter().filter(|(k, _)| *k == PolicyKind::ResourceControlPolicy).map(|(_, d)| d));
        }
        Some(ceiling(catalog, &levels, &denies))
    }

    /// The Organizations policies a request from `account` meets, for request-level evaluation
    /// ([`crate::access`]): per level of the path, root first, the SCPs attached there (a request
    /// must be allowed at every level), and every RCP on the path. `None` when nothing limits the
    /// account (the management account, an account the file does not place in the tree).
    pub fn policies_above(&self, account: &str) -> Option<OrgPolicies<'_>> {
        if self.management_account.as_deref() == Some(account) || !self.parent.contains_key(account) {
            return None;
        }
        let mut out = OrgPolicies { scp_levels: Vec::new(), rcps: Vec::new() };
        for node in self.path(account)? {
            let policies = self.attached.get(node).map(Vec::as_slice).unwrap_or_default();
            out.scp_levels.push(
                policies.iter().filter(|(k, _)| *k == PolicyKind::ServiceControlPolicy).map(|(_, d)| d).collect(),
            );
            out.rcps.extend(policies.iter().filter(|(k, _)| *k == PolicyKind::ResourceControlPolicy).map(|(_, d)| d));
        }
        Some(out)
    }

    fn cached_ceiling(&self, catalog: &Catalog, account: &str) -> Option<Arc<Ceiling>> {
        let key = (catalog.len(), account.to_string());
        // A poisoned lock only means another thread panicked mid-insert: the map is still whole.
        if let Some(c) = self.ceilings.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return c.clone();
        }
        let c = self.ceiling_of(catalog, account).map(Arc::new);
        self.ceilings.lock().unwrap_or_else(|e| e.into_inner()).insert(key, c.clone());
        c
    }

    /// Limits every identity by its account's ceiling (service-linked roles excepted). Returns, per
    /// account limited, how many granted actions the policies took away in all.
    pub fn apply(&self, catalog: &Catalog, identities: &mut [IdentityGrants]) -> BTreeMap<String, usize> {
        let mut removed: BTreeMap<String, usize> = BTreeMap::new();
        for g in identities.iter_mut() {
            if g.service_linked {
                continue;
            }
            let Some(c) = self.cached_ceiling(catalog, &g.account) else { continue };
            let before = g.granted.len();
            let mut keep = c.allowed.clone();
            keep.difference_with(&c.denied);
            g.granted.intersect_with(&keep);
            g.unscoped.intersect_with(&keep);
            g.conditional.intersect_with(&keep);
            let mut partly = c.partly_denied.clone();
            partly.intersect_with(&g.granted);
            g.unscoped.difference_with(&partly);
            g.conditional.union_with(&partly);
            g.resource_patterns.retain(|(id, _)| g.granted.contains(*id));
            *removed.entry(g.account.clone()).or_default() += before - g.granted.len();
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use grantwatch_types::IdentityKind;

    fn admin(catalog: &Catalog, account: &str, name: &str) -> IdentityGrants {
        let arn = format!("arn:aws:iam::{account}:role/{name}");
        let mut g = IdentityGrants::unknown(catalog, &arn, account, IdentityKind::Role, name);
        g.granted = catalog.full_set();
        g.unscoped = catalog.full_set();
        g
    }

    const ORG: &str = r#"{
      "management_account": "111111111111",
      "roots": [{"id": "r-root"}],
      "organizational_units": [{"id": "ou-prod", "parent": "r-root"}],
      "accounts": [
        {"id": "111111111111", "parent": "r-root"},
        {"id": "222222222222", "parent": "ou-prod"},
        {"id": "333333333333", "parent": "r-root"}
      ],
      "policies": [
        {"id": "p-FullAWSAccess", "type": "SERVICE_CONTROL_POLICY", "targets": ["r-root", "ou-prod", "111111111111", "333333333333"],
         "content": "{\"Version\":\"2012-10-17\",\"Statement\":[{\"Effect\":\"Allow\",\"Action\":\"*\",\"Resource\":\"*\"}]}"},
        {"id": "p-deny-leave", "type": "SERVICE_CONTROL_POLICY", "targets": ["r-root"],
         "content": {"Version": "2012-10-17", "Statement": [
           {"Effect": "Deny", "Action": ["organizations:LeaveOrganization", "cloudtrail:StopLogging"], "Resource": "*"},
           {"Effect": "Deny", "Action": "ec2:RunInstances", "Resource": "*", "Condition": {"StringNotEquals": {"aws:RequestedRegion": "eu-west-1"}}}]}},
        {"id": "p-only-s3", "type": "SERVICE_CONTROL_POLICY", "targets": ["222222222222"],
         "content": {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:*", "ec2:*", "cloudtrail:*"], "Resource": "*"}]}},
        {"id": "p-rcp", "type": "RESOURCE_CONTROL_POLICY", "targets": ["ou-prod"],
         "content": {"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": "s3:DeleteBucket", "Resource": "*"}]}}
      ]
    }"#;

    #[test]
    fn scps_and_rcps_limit_the_accounts_below_them() {
        let catalog = Catalog::aws().unwrap();
        let org = Organization::parse(ORG, "org.json").unwrap();
        let mut ids = vec![
            admin(&catalog, "111111111111", "Mgmt"),
            admin(&catalog, "222222222222", "Prod"),
            admin(&catalog, "333333333333", "Sandbox"),
            admin(&catalog, "444444444444", "Elsewhere"),
        ];
        let mut slr = admin(&catalog, "222222222222", "AWSServiceRoleForX");
        slr.service_linked = true;
        ids.push(slr);
        let removed = org.apply(&catalog, &mut ids);
        let has = |g: &IdentityGrants, a: &str| g.granted.contains(catalog.lookup(a).unwrap());
        let unscoped = |g: &IdentityGrants, a: &str| g.unscoped.contains(catalog.lookup(a).unwrap());
        // The management account, an account outside the file, a service-linked role: untouched.
        for i in [0, 3, 4] {
            assert_eq!(ids[i].granted.len(), catalog.len(), "{}", ids[i].arn);
        }
        // Prod: only what every level allows (root: all; OU: all; account: s3, ec2, cloudtrail), less
        // the root's denies and the OU's RCP.
        let prod = &ids[1];
        assert!(has(prod, "s3:GetObject") && has(prod, "ec2:DescribeInstances"));
        assert!(!has(prod, "iam:CreateUser") && !has(prod, "organizations:LeaveOrganization"));
        assert!(!has(prod, "cloudtrail:StopLogging") && has(prod, "cloudtrail:LookupEvents"));
        assert!(!has(prod, "s3:DeleteBucket"), "the RCP denies it");
        // A conditional deny keeps the action, no longer unconditionally.
        assert!(has(prod, "ec2:RunInstances") && !unscoped(prod, "ec2:RunInstances"));
        assert!(prod.conditional.contains(catalog.lookup("ec2:RunInstances").unwrap()));
        // Sandbox: everything but the root's denies.
        let sandbox = &ids[2];
        assert!(has(sandbox, "iam:CreateUser") && !has(sandbox, "organizations:LeaveOrganization"));
        assert!(has(sandbox, "s3:DeleteBucket"));
        assert_eq!(removed.get("333333333333"), Some(&2));
        assert!(removed.get("222222222222").copied().unwrap_or(0) > 19_000);
        assert!(!removed.contains_key("111111111111"));
    }

    /// Without an Allow at a level (FullAWSAccess detached from the OU), nothing is granted below it.
    #[test]
    fn a_level_without_an_allow_grants_nothing() {
        let catalog = Catalog::aws().unwrap();
        let text = ORG.replace(r#""r-root", "ou-prod", "111111111111""#, r#""r-root", "111111111111""#);
        let org = Organization::parse(&text, "org.json").unwrap();
        let mut ids = vec![admin(&catalog, "222222222222", "Prod")];
        org.apply(&catalog, &mut ids);
        assert!(ids[0].granted.is_empty());
    }

    #[test]
    fn bad_files_are_named() {
        let err = Organization::parse("{\"roots\": 3}", "o.json").unwrap_err().to_string();
        assert!(err.starts_with("o.json: not an organization file"), "{err}");
        let orphan = r#"{"accounts": [{"id": "1", "parent": "ou-gone"}]}"#;
        let err = Organization::parse(orphan, "o.json").unwrap_err().to_string();
        assert!(err.contains("ou-gone"), "{err}");
        let bad_policy =
            r#"{"policies": [{"id": "p-1", "type": "SERVICE_CONTROL_POLICY", "targets": [], "content": "{not json"}]}"#;
        let err = Organization::parse(bad_policy, "o.json").unwrap_err().to_string();
        assert!(err.contains("p-1"), "{err}");
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        const PATTERNS: [&str; 8] =
            ["*", "s3:*", "s3:Get*", "iam:*", "ec2:RunInstances", "kms:Decrypt", "sts:*", "ec2:Describe*"];

        fn statement() -> impl Strategy<Value = serde_json::Value> {
            (any::<bool>(), prop::sample::subsequence(PATTERNS.to_vec(), 1..3), any::<bool>(), any::<bool>()).prop_map(
                |(allow, actions, conditional, scoped)| {
                    let mut s = serde_json::json!({
                        "Effect": if allow { "Allow" } else { "Deny" },
                        "Action": actions,
                        "Resource": if scoped { "arn:aws:s3:::logs/*" } else { "*" },
                    });
                    if conditional {
                        s["Condition"] = serde_json::json!({"Bool": {"aws:SecureTransport": "false"}});
                    }
                    s
                },
            )
        }

        fn org_file(root: &[serde_json::Value], account: &[serde_json::Value]) -> String {
            serde_json::json!({
                "roots": [{"id": "r-1"}],
                "accounts": [{"id": "222222222222", "parent": "r-1"}],
                "policies": [
                    {"id": "p-root", "type": "SERVICE_CONTROL_POLICY", "targets": ["r-1"],
                     "content": {"Version": "2012-10-17", "Statement": root}},
                    {"id": "p-acct", "type": "SERVICE_CONTROL_POLICY", "targets": ["222222222222"],
                     "content": {"Version": "2012-10-17", "Statement": account}}
                ]
            })
            .to_string()
        }

        fn granted_under(catalog: &Catalog, text: &str, start: &IdentityGrants) -> IdentityGrants {
            let org = Organization::parse(text, "prop.json").unwrap();
            let mut ids = vec![start.clone()];
            org.apply(catalog, &mut ids);
            ids.pop().unwrap()
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(32))]

            /// An SCP never grants, and adding a Deny anywhere never grows what is granted.
            #[test]
            fn scps_only_take_away(
                root in prop::collection::vec(statement(), 1..4),
                account in prop::collection::vec(statement(), 1..4),
                extra in prop::sample::select(PATTERNS.to_vec()),
                at_root in any::<bool>(),
                start in prop::sample::select(vec!["*", "s3:*", "ec2:*"]),
            ) {
                static CATALOG: std::sync::OnceLock<Catalog> = std::sync::OnceLock::new();
                let catalog = CATALOG.get_or_init(|| Catalog::aws().unwrap());
                let mut g = IdentityGrants::unknown(catalog, "arn:aws:iam::222222222222:role/R", "222222222222", IdentityKind::Role, "R");
                g.granted = catalog.expand(start);
                g.unscoped = g.granted.clone();
                let before = granted_under(catalog, &org_file(&root, &account), &g);
                let mut sub = before.granted.clone();
                sub.difference_with(&g.granted);
                prop_assert!(sub.is_empty(), "the SCPs granted something the identity did not hold");
                let deny = serde_json::json!({"Effect": "Deny", "Action": extra, "Resource": "*"});
                let (mut root2, mut account2) = (root.clone(), account.clone());
                if at_root { root2.push(deny) } else { account2.push(deny) }
                let after = granted_under(catalog, &org_file(&root2, &account2), &g);
                let mut grew = after.granted.clone();
                grew.difference_with(&before.granted);
                prop_assert!(grew.is_empty(), "a Deny grew the granted set");
                let mut grew = after.unscoped.clone();
                grew.difference_with(&before.unscoped);
                prop_assert!(grew.is_empty(), "a Deny grew the unscoped set");
                let denied = catalog.expand(extra);
                prop_assert!(denied.iter().all(|id| !after.granted.contains(id)));
            }
        }
    }
}
