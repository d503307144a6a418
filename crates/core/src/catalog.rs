//! The AWS IAM action catalog: every action with its access level, the ARN templates of the resource
//! types it applies to, and risk tags. Compiled in from `data/aws/` (see its README for origin and license).
//!
//! Actions are numbered densely ([`ActionId`]) so that a set of granted actions is a bitset
//! ([`ActionSet`]): evaluating thousands of identities against 20,000 actions stays cheap.

use std::io::Read;

use fixedbitset::FixedBitSet;
use rustc_hash::FxHashMap;
use serde::Deserialize;

use crate::glob::Glob;

const CATALOG_GZ: &[u8] = include_bytes!("../../../data/aws/iam-catalog.json.gz");
const RISK_TAGS_JSON: &[u8] = include_bytes!("../../../data/aws/risk-tags.json");

/// Index of an action in its [`Catalog`].
pub type ActionId = u32;

/// An action's access level, as the AWS Service Authorization Reference classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, Deserialize)]
pub enum AccessLevel {
    List,
    Read,
    Tagging,
    Write,
    #[serde(rename = "Permissions management")]
    PermissionsManagement,
}

/// Risk tags from iam-dataset (`data/aws/risk-tags.json`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RiskTags {
    pub privilege_escalation: bool,
    pub credential_exposure: bool,
    pub data_access: bool,
    pub resource_exposure: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("embedded action catalog is unreadable: {0}")]
    Embedded(String),
}

#[derive(Debug)]
struct ActionInfo {
    /// `prefix:Name`, as the catalog spells it.
    name: String,
    prefix_len: usize,
    level: AccessLevel,
    /// ARN templates (`arn:${Partition}:s3:::${BucketName}/${ObjectName}`); `*` for "no resource type".
    arns: Vec<String>,
    tags: RiskTags,
}

/// The action catalog of one cloud.
#[derive(Debug)]
pub struct Catalog {
    actions: Vec<ActionInfo>,
    /// Lower-cased `prefix:name` to id.
    by_lower: FxHashMap<String, ActionId>,
    /// Lower-cased prefix to the contiguous id range of its actions (actions are sorted by prefix).
    prefixes: FxHashMap<String, std::ops::Range<ActionId>>,
    /// See [`Catalog::permissionless`].
    permissionless: ActionSet,
}

#[derive(Deserialize)]
struct RawAction {
    level: AccessLevel,
    arns: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawTags {
    #[serde(alias = "PrivEsc")]
    privesc: Vec<String>,
    credential_exposure: Vec<String>,
    data_access: Vec<String>,
    resource_exposure: Vec<String>,
}

impl Catalog {
    /// The AWS catalog compiled into this binary.
    pub fn aws() -> Result<Catalog, CatalogError> {
        let mut json = Vec::new();
        flate2::read::GzDecoder::new(CATALOG_GZ)
            .read_to_end(&mut json)
            .map_err(|e| CatalogError::Embedded(e.to_string()))?;
        let raw: std::collections::BTreeMap<String, std::collections::BTreeMap<String, RawAction>> =
            serde_json::from_slice(&json).map_err(|e| CatalogError::Embedded(e.to_string()))?;
        let tags: RawTags =
            serde_json::from_slice(RISK_TAGS_JSON).map_err(|e| CatalogError::Embedded(e.to_string()))?;
        let lower_set = |v: &[String]| v.iter().map(|s| s.to_ascii_lowercase()).collect::<rustc_hash::FxHashSet<_>>();
        let (pe, ce, da, re) = (
            lower_set(&tags.privesc),
            lower_set(&tags.credential_exposure),
            lower_set(&tags.data_access),
            lower_set(&tags.resource_exposure),
        );
        let mut catalog = Self::from_entries(raw.into_iter().flat_map(|(prefix, actions)| {
            let (pe, ce, da, re) = (&pe, &ce, &da, &re);
            actions.into_iter().map(move |(name, a)| {
                let full = format!("{prefix}:{name}");
                let lower = full.to_ascii_lowercase();
                let tags = RiskTags {
                    privilege_escalation: pe.contains(&lower),
                    credential_exposure: ce.contains(&lower),
                    data_access: da.contains(&lower),
                    resource_exposure: re.contains(&lower),
                };
                (prefix.clone(), name, a.level, a.arns, tags)
            })
        }));
        let free = crate::cloudtrail::permissionless_names().map_err(|e| CatalogError::Embedded(e.to_string()))?;
        let mut permissionless = catalog.empty_set();
        for (prefix, name) in free {
            if let Some(id) = catalog.lookup_parts(&prefix, &name) {
                permissionless.insert(id);
            }
        }
        catalog.permissionless = permissionless;
        Ok(catalog)
    }

    /// Actions that need no permission (`sts:GetCallerIdentity`, `sts:GetSessionToken`, ...): the
    /// calls the CloudTrail mapping says are authorized by nothing, as catalog actions. A policy may
    /// grant them, but they are never unused (they cannot be removed: a Deny does not stop them) and
    /// never count in the PCI.
    pub fn permissionless(&self) -> &ActionSet {
        &self.permissionless
    }

    /// Builds a catalog from `(prefix, name, level, arn templates, tags)` entries (tests use small ones).
    pub fn from_entries(
        entries: impl IntoIterator<Item = (String, String, AccessLevel, Vec<String>, RiskTags)>,
    ) -> Catalog {
        let mut infos: Vec<ActionInfo> = entries
            .into_iter()
            .map(|(prefix, name, level, arns, tags)| ActionInfo {
                prefix_len: prefix.len(),
                name: format!("{prefix}:{name}"),
                level,
                arns: if arns.is_empty() { vec!["*".to_string()] } else { arns },
                tags,
            })
            .collect();
        infos.sort_by_key(|a| a.name.to_ascii_lowercase());
        infos.dedup_by(|a, b| a.name.eq_ignore_ascii_case(&b.name));
        let mut by_lower = FxHashMap::default();
        let mut prefixes: FxHashMap<String, std::ops::Range<ActionId>> = FxHashMap::default();
        for (i, a) in infos.iter().enumerate() {
            let id = i as ActionId;
            by_lower.insert(a.name.to_ascii_lowercase(), id);
            let p = a.name[..a.prefix_len].to_ascii_lowercase();
            prefixes.entry(p).and_modify(|r| r.end = id + 1).or_insert(id..id + 1);
        }
        let permissionless = ActionSet(FixedBitSet::with_capacity(infos.len()));
        Catalog { actions: infos, by_lower, prefixes, permissionless }
    }

    pub fn len(&self) -> usize {
        self.actions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    /// Looks up `prefix:Name`, case-insensitively.
    pub fn lookup(&self, action: &str) -> Option<ActionId> {
        if let Some(&id) = self.by_lower.get(action) {
            return Some(id);
        }
        self.by_lower.get(&action.to_ascii_lowercase()).copied()
    }

    /// Looks up `prefix` + `:` + `name`, case-insensitively.
    pub fn lookup_parts(&self, prefix: &str, name: &str) -> Option<ActionId> {
        let mut key = String::with_capacity(prefix.len() + name.len() + 1);
        key.push_str(prefix);
        key.push(':');
        key.push_str(name);
        key.make_ascii_lowercase();
        self.by_lower.get(&key).copied()
    }

    pub fn has_prefix(&self, prefix: &str) -> bool {
        self.prefixes.contains_key(&prefix.to_ascii_lowercase())
    }

    /// The action's name as the catalog spells it, e.g. `s3:GetObject`.
    pub fn name(&self, id: ActionId) -> &str {
        self.actions.get(id as usize).map_or("", |a| a.name.as_str())
    }

    /// The action's service prefix, e.g. `s3`.
    pub fn prefix(&self, id: ActionId) -> &str {
        self.actions.get(id as usize).map_or("", |a| &a.name[..a.prefix_len])
    }

    pub fn access_level(&self, id: ActionId) -> AccessLevel {
        self.actions.get(id as usize).map_or(AccessLevel::Read, |a| a.level)
    }

    pub fn risk_tags(&self, id: ActionId) -> RiskTags {
        self.actions.get(id as usize).map_or_else(RiskTags::default, |a| a.tags)
    }

    /// High risk: can change resources or permissions (Write, Permissions management), or is tagged as
    /// privilege escalation or credential exposure.
    pub fn is_high_risk(&self, id: ActionId) -> bool {
        let t = self.risk_tags(id);
        matches!(self.access_level(id), AccessLevel::Write | AccessLevel::PermissionsManagement)
            || t.privilege_escalation
            || t.credential_exposure
    }

    /// ARN templates of the resource types the action applies to; `*` means "no resource type".
    pub fn resource_arns(&self, id: ActionId) -> &[String] {
        self.actions.get(id as usize).map_or(&[], |a| a.arns.as_slice())
    }

    /// `set` in few entries that say it exactly: `*` for the whole catalog, `prefix:*` for a service
    /// prefix whose actions are all in it, `prefix:Verb*` for all of a prefix's actions that start
    /// with a verb (`Get`, `List`, `Describe`: the shape of read-only policies), else the action's
    /// name. Each entry, expanded by [`Catalog::expand`], holds only actions of `set`. Catalog order.
    pub fn compact_names(&self, set: &ActionSet) -> Vec<String> {
        if set.len() == self.len() && !self.is_empty() {
            return vec!["*".to_string()];
        }
        let mut ranges: Vec<&std::ops::Range<ActionId>> = self.prefixes.values().collect();
        ranges.sort_by_key(|r| r.start);
        let mut out = Vec::new();
        for r in ranges {
            let held = r.clone().filter(|&id| set.contains(id)).count();
            if held == 0 {
                continue;
            }
            let first = &self.actions[r.start as usize];
            let prefix = &first.name[..first.prefix_len];
            if held == r.len() {
                out.push(format!("{prefix}:*"));
                continue;
            }
            let local = |id: ActionId| &self.actions[id as usize].name[first.prefix_len + 1..];
            let mut id = r.start;
            while id < r.end {
                if !set.contains(id) {
                    id += 1;
                    continue;
                }
                // Actions sharing a leading word are contiguous (names sorted case-insensitively,
                // and the catalog spells them in PascalCase), so a verb's group is a run of ids.
                let verb = leading_word(local(id));
                let end = (id..r.end).find(|&j| !starts_with_ignore_case(local(j), verb)).unwrap_or(r.end);
                let start = (r.start..id).rev().take_while(|&j| starts_with_ignore_case(local(j), verb)).count();
                let whole = start == 0 && end - id > 1 && (id..end).all(|j| set.contains(j));
                if whole {
                    out.push(format!("{prefix}:{verb}*"));
                    id = end;
                } else {
                    out.push(self.name(id).to_string());
                    id += 1;
                }
            }
        }
        out
    }

    /// An empty set sized for this catalog.
    pub fn empty_set(&self) -> ActionSet {
        ActionSet(FixedBitSet::with_capacity(self.len()))
    }

    /// Every action of the catalog.
    pub fn full_set(&self) -> ActionSet {
        let mut s = self.empty_set();
        s.0.insert_range(..);
        s
    }

    /// The actions matching an IAM action pattern (`*`, `s3:*`, `s3:Get*`, `ec2:Describe?pcs`), case-insensitively.
    pub fn expand(&self, pattern: &str) -> ActionSet {
        let mut out = self.empty_set();
        let pattern = pattern.trim();
        if pattern == "*" {
            out.0.insert_range(..);
            return out;
        }
        let lower = pattern.to_ascii_lowercase();
        let Some((prefix, name)) = lower.split_once(':') else {
            return out;
        };
        if !prefix.contains(['*', '?']) && !name.contains(['*', '?']) {
            if let Some(&id) = self.by_lower.get(&lower) {
                out.0.insert(id as usize);
            }
            return out;
        }
        let mut visit = |range: std::ops::Range<ActionId>| {
            for id in range {
                let a = &self.actions[id as usize];
                let action_name = &a.name[a.prefix_len + 1..];
                if Glob::IAM_ACTION.matches(name, action_name) {
                    out.0.insert(id as usize);
                }
            }
        };
        if prefix.contains(['*', '?']) {
            for (p, range) in &self.prefixes {
                if Glob::IAM_ACTION.matches(prefix, p) {
                    visit(range.clone());
                }
            }
        } else if let Some(range) = self.prefixes.get(prefix) {
            visit(range.clone());
        }
        out
    }
}

/// The first word of a PascalCase action name: `GetObject` → `Get`, `ListBuckets` → `List`.
fn leading_word(name: &str) -> &str {
    let end = name.char_indices().skip(1).find(|(_, c)| c.is_ascii_uppercase()).map_or(name.len(), |(i, _)| i);
    &name[..end]
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// A set of actions of one [`Catalog`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ActionSet(pub FixedBitSet);

impl ActionSet {
    pub fn insert(&mut self, id: ActionId) {
        self.0.grow(id as usize + 1);
        self.0.insert(id as usize);
    }
    pub fn contains(&self, id: ActionId) -> bool {
        self.0.contains(id as usize)
    }
    pub fn len(&self) -> usize {
        self.0.count_ones(..)
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_clear()
    }
    pub fn iter(&self) -> impl Iterator<Item = ActionId> + '_ {
        self.0.ones().map(|i| i as ActionId)
    }
    pub fn union_with(&mut self, other: &ActionSet) {
        self.0.union_with(&other.0);
    }
    pub fn intersect_with(&mut self, other: &ActionSet) {
        self.0.intersect_with(&other.0);
    }
    pub fn difference_with(&mut self, other: &ActionSet) {
        self.0.difference_with(&other.0);
    }
    pub fn is_subset(&self, other: &ActionSet) -> bool {
        self.0.is_subset(&other.0)
    }
    /// The actions' names, sorted as the catalog sorts them (by lower-cased name).
    pub fn names(&self, catalog: &Catalog) -> Vec<String> {
        self.iter().map(|id| catalog.name(id).to_string()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_catalog_loads_with_expected_shape() {
        let c = Catalog::aws().unwrap();
        assert!(c.len() > 20_000, "{}", c.len());
        let get = c.lookup("S3:getobject").unwrap();
        assert_eq!(c.name(get), "s3:GetObject");
        assert_eq!(c.access_level(get), AccessLevel::Read);
        assert!(c.resource_arns(get).iter().any(|a| a.contains("${BucketName}/${ObjectName}")));
        let pr = c.lookup("iam:PassRole").unwrap();
        assert_eq!(c.access_level(pr), AccessLevel::PermissionsManagement);
        assert!(c.risk_tags(pr).privilege_escalation);
        assert!(c.is_high_risk(c.lookup("iam:CreatePolicyVersion").unwrap()));
        assert!(!c.is_high_risk(c.lookup("s3:ListAllMyBuckets").unwrap()));
    }

    #[test]
    fn expansion_follows_iam_wildcards() {
        let c = Catalog::aws().unwrap();
        let all = c.expand("*");
        assert_eq!(all.len(), c.len());
        let s3 = c.expand("s3:*");
        assert!(s3.iter().all(|id| c.prefix(id) == "s3"));
        assert!(s3.len() > 100);
        let gets = c.expand("S3:Get*");
        assert!(gets.is_subset(&s3) && gets.contains(c.lookup("s3:GetObject").unwrap()));
        assert!(!gets.contains(c.lookup("s3:PutObject").unwrap()));
        let q = c.expand("s3:GetObjec?");
        assert!(q.contains(c.lookup("s3:GetObject").unwrap()) && q.len() == 1);
        assert!(c.expand("nosuchservice:*").is_empty());
        assert!(c.expand("not-an-action").is_empty());
        let star_prefix = c.expand("*:GetObject");
        assert!(star_prefix.contains(c.lookup("s3:GetObject").unwrap()));
    }
}
