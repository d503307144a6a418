//! The action catalog: every AWS IAM action with its access level, the ARN templates of the resource
//! types it applies to, and risk tags (compiled in from `data/aws/`); with [`Catalog::all_clouds`],
//! also every Azure operation and GCP permission the built-in and predefined roles name (`data/azure/`,
//! `data/gcp/`; see their READMEs for origin and license).
//!
//! Actions are numbered densely ([`ActionId`]) so that a set of granted actions is a bitset
//! ([`ActionSet`]): evaluating thousands of identities against 20,000 actions stays cheap. Each cloud
//! owns one contiguous id range, AWS first (so AWS ids are the same in both catalogs); an identity's
//! sets only ever hold actions of its own cloud. The AWS entry points ([`Catalog::expand`],
//! [`Catalog::full_set`]) mean AWS only: an AWS policy's `*` never grants an Azure operation.

use std::io::Read;
use std::sync::Arc;

use fixedbitset::FixedBitSet;
use rustc_hash::FxHashMap;
use serde::Deserialize;

use grantwatch_types::Cloud;

use crate::glob::Glob;

const CATALOG_GZ: &[u8] = include_bytes!("../../../data/aws/iam-catalog.json.gz");
const RISK_TAGS_JSON: &[u8] = include_bytes!("../../../data/aws/risk-tags.json");
const AZURE_BUILTIN_ROLES_GZ: &[u8] = include_bytes!("../../../data/azure/builtin-roles.json.gz");
const GCP_ROLES_GZ: &[u8] = include_bytes!("../../../data/gcp/roles.jsonl.gz");
const AZURE_EXTRA_OPERATIONS: &str = include_str!("../../../data/azure/extra-operations.txt");

/// The Azure built-in role definitions (`az role definition list`), gzip-compressed JSON.
pub fn azure_builtin_roles_json() -> &'static [u8] {
    AZURE_BUILTIN_ROLES_GZ
}

/// The GCP predefined roles (`gcloud iam roles describe`, one per line), gzip-compressed JSON Lines.
pub fn gcp_predefined_roles_jsonl() -> &'static [u8] {
    GCP_ROLES_GZ
}

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
    /// `prefix:Name` (AWS), `Microsoft.Provider/type/verb` (Azure), `service.resource.verb` (GCP), as
    /// the cloud spells it.
    name: String,
    /// The service prefix's length: AWS `s3`, Azure's provider namespace `Microsoft.Storage`, GCP's
    /// service `storage`.
    prefix_len: usize,
    cloud: Cloud,
    /// An Azure data action (granted by `dataActions`).
    data: bool,
    /// An Azure control-plane operation (granted by `actions`). A few operations are both: roles
    /// name them in `actions` and in `dataActions`.
    control: bool,
    level: AccessLevel,
    /// ARN templates (`arn:${Partition}:s3:::${BucketName}/${ObjectName}`); `*` for "no resource type".
    arns: Vec<String>,
    tags: RiskTags,
}

/// The action catalog: AWS, or AWS, Azure and GCP.
#[derive(Debug)]
pub struct Catalog {
    actions: Vec<ActionInfo>,
    /// Lower-cased name to id (names never collide across clouds: AWS's have `:`, Azure's `/`, GCP's
    /// neither).
    by_lower: FxHashMap<String, ActionId>,
    /// Lower-cased AWS prefix to the contiguous id range of its actions (actions are sorted by prefix).
    prefixes: FxHashMap<String, std::ops::Range<ActionId>>,
    /// Every cloud's service groups (AWS prefixes, Azure providers, GCP services), by first id.
    groups: Vec<std::ops::Range<ActionId>>,
    /// Each cloud's id range, indexed by [`Cloud::index`]; empty for a cloud the catalog lacks.
    clouds: [std::ops::Range<ActionId>; 5],
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
                cloud: Cloud::Aws,
                data: false,
                control: true,
            })
            .collect();
        infos.sort_by_key(|a| a.name.to_ascii_lowercase());
        infos.dedup_by(|a, b| a.name.eq_ignore_ascii_case(&b.name));
        let mut catalog = Catalog {
            actions: Vec::new(),
            by_lower: FxHashMap::default(),
            prefixes: FxHashMap::default(),
            groups: Vec::new(),
            clouds: std::array::from_fn(|_| 0..0),
            permissionless: ActionSet::default(),
        };
        catalog.append(Cloud::Aws, infos);
        catalog
    }

    /// Adds one cloud's actions (sorted by lower-cased name, deduplicated) after the ones already held.
    fn append(&mut self, cloud: Cloud, infos: Vec<ActionInfo>) {
        let start = self.actions.len() as ActionId;
        let mut last_prefix: Option<String> = None;
        for (i, a) in infos.iter().enumerate() {
            let id = start + i as ActionId;
            self.by_lower.insert(a.name.to_ascii_lowercase(), id);
            let p = a.name[..a.prefix_len].to_ascii_lowercase();
            match self.groups.last_mut() {
                Some(g) if last_prefix.as_deref() == Some(p.as_str()) => g.end = id + 1,
                _ => {
                    self.groups.push(id..id + 1);
                    last_prefix = Some(p.clone());
                }
            }
            if cloud == Cloud::Aws {
                self.prefixes.entry(p).and_modify(|r| r.end = id + 1).or_insert(id..id + 1);
            }
        }
        self.actions.extend(infos);
        let end = self.actions.len() as ActionId;
        self.clouds[cloud.index()] = start..end;
        let mut permissionless = std::mem::take(&mut self.permissionless);
        permissionless.0.grow(self.actions.len());
        self.permissionless = permissionless;
    }

    /// The AWS catalog followed by Azure's operations and GCP's permissions (module docs).
    pub fn all_clouds() -> Result<Catalog, CatalogError> {
        let mut catalog = Catalog::aws()?;
        catalog.append(Cloud::Azure, azure_actions()?);
        catalog.append(Cloud::Gcp, gcp_actions()?);
        Ok(catalog)
    }

    /// [`Catalog::all_clouds`], built once per process and shared: analysis, detection and the
    /// processor of one run then number actions alike and pay for the build (tens of megabytes of
    /// bitsets and name tables) once.
    pub fn all_clouds_shared() -> Result<Arc<Catalog>, CatalogError> {
        static SHARED: std::sync::OnceLock<Arc<Catalog>> = std::sync::OnceLock::new();
        if let Some(c) = SHARED.get() {
            return Ok(c.clone());
        }
        let built = Arc::new(Catalog::all_clouds()?);
        // A race between two first callers keeps one of the two; both are equal.
        Ok(SHARED.get_or_init(|| built).clone())
    }

    /// Which cloud an action belongs to.
    pub fn cloud_of(&self, id: ActionId) -> Cloud {
        self.actions.get(id as usize).map_or(Cloud::Aws, |a| a.cloud)
    }

    /// The id range of a cloud's actions (empty when the catalog does not hold that cloud).
    pub fn cloud_range(&self, cloud: Cloud) -> std::ops::Range<ActionId> {
        self.clouds[cloud.index()].clone()
    }

    /// How many actions the catalog holds for `cloud`.
    pub fn cloud_len(&self, cloud: Cloud) -> usize {
        self.cloud_range(cloud).len()
    }

    /// Every action of `cloud`.
    pub fn cloud_set(&self, cloud: Cloud) -> ActionSet {
        let mut s = self.empty_set();
        let r = self.cloud_range(cloud);
        s.0.insert_range(r.start as usize..r.end as usize);
        s
    }

    /// An Azure data action (`dataActions`): granted only by data-action patterns.
    pub fn is_data_action(&self, id: ActionId) -> bool {
        self.actions.get(id as usize).is_some_and(|a| a.data)
    }

    /// Whether an Azure operation is granted by `data_plane` patterns (`dataActions`) or by control
    /// ones (`actions`); a few operations are both.
    fn in_plane(&self, id: ActionId, data_plane: bool) -> bool {
        self.actions.get(id as usize).is_some_and(|a| if data_plane { a.data } else { a.control })
    }

    /// Azure's wildcard semantics: `*` matches any run of characters (including `/`), case-insensitively,
    /// over the control-plane operations (`data_plane` false: `actions`, `notActions`) or the data
    /// actions (`dataActions`, `notDataActions`).
    pub fn expand_azure(&self, pattern: &str, data_plane: bool) -> ActionSet {
        let mut out = self.empty_set();
        let pattern = pattern.trim();
        let range = self.cloud_range(Cloud::Azure);
        if !pattern.contains('*') {
            if let Some(id) = self.lookup(pattern).filter(|&id| range.contains(&id) && self.in_plane(id, data_plane)) {
                out.insert(id);
            }
            return out;
        }
        let lower = pattern.to_ascii_lowercase();
        // Patterns nearly always start with the provider namespace: narrow to its group when they do.
        let literal = lower.split('*').next().unwrap_or("");
        for id in range {
            let a = &self.actions[id as usize];
            if !self.in_plane(id, data_plane) || !starts_with_ignore_case(&a.name, literal) {
                continue;
            }
            if Glob::CLOUD_ACTION.matches(&lower, &a.name) {
                out.insert(id);
            }
        }
        out
    }

    /// GCP permissions matching a pattern: a permission (`storage.objects.get`), a prefix wildcard
    /// (`storage.*`, `storage.objects.*`), or a deny policy's form (`storage.googleapis.com/objects.get`,
    /// `storage.googleapis.com/*`).
    pub fn expand_gcp(&self, pattern: &str) -> ActionSet {
        let mut out = self.empty_set();
        let mut pattern = pattern.trim().to_ascii_lowercase();
        if let Some((host, rest)) = pattern.split_once('/') {
            let service = host.strip_suffix(".googleapis.com").unwrap_or(host);
            pattern = format!("{service}.{rest}");
        }
        let range = self.cloud_range(Cloud::Gcp);
        if !pattern.contains('*') {
            if let Some(id) = self.by_lower.get(&pattern).copied().filter(|id| range.contains(id)) {
                out.insert(id);
            }
            return out;
        }
        let literal = pattern.split('*').next().unwrap_or("");
        for id in range {
            let a = &self.actions[id as usize];
            if starts_with_ignore_case(&a.name, literal) && Glob::CLOUD_ACTION.matches(&pattern, &a.name) {
                out.insert(id);
            }
        }
        out
    }

    /// Expands an entry of [`Catalog::compact_names`], whichever cloud wrote it.
    pub fn expand_compact(&self, entry: &str) -> ActionSet {
        // A name first: some GCP permissions hold a `/` (`cloudvolumesgcp-api.netapp.com/...`).
        if !entry.contains('*')
            && let Some(id) = self.lookup(entry)
        {
            let mut s = self.empty_set();
            s.insert(id);
            return s;
        }
        if entry == "*" || entry.contains(':') {
            self.expand(entry)
        } else if entry.contains('/') {
            let mut s = self.expand_azure(entry, false);
            s.union_with(&self.expand_azure(entry, true));
            s
        } else {
            self.expand_gcp(entry)
        }
    }

    /// Every action of every cloud the catalog holds: the size of its sets.
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

    /// `set` in few entries that say it exactly: `*` for all of AWS, `prefix:*` for an AWS service
    /// prefix whose actions are all in it, `prefix:Verb*` for all of a prefix's actions that start
    /// with a verb (`Get`, `List`, `Describe`: the shape of read-only policies), `Microsoft.Storage/*`
    /// and `storage.*` for a whole Azure provider or GCP service, else the action's name. Each entry,
    /// expanded by [`Catalog::expand_compact`], holds only actions of `set`. Catalog order.
    pub fn compact_names(&self, set: &ActionSet) -> Vec<String> {
        let aws = self.cloud_range(Cloud::Aws);
        let whole_aws = !aws.is_empty() && count_in(set, &aws) == aws.len() && set.len() == aws.len();
        if whole_aws {
            return vec!["*".to_string()];
        }
        let mut out = Vec::new();
        for r in &self.groups {
            let held = count_in(set, r);
            if held == 0 {
                continue;
            }
            let first = &self.actions[r.start as usize];
            let prefix = &first.name[..first.prefix_len];
            if held == r.len() {
                out.push(match first.cloud {
                    Cloud::Azure => format!("{prefix}/*"),
                    Cloud::Gcp => format!("{prefix}.*"),
                    _ => format!("{prefix}:*"),
                });
                continue;
            }
            if first.cloud != Cloud::Aws {
                out.extend(r.clone().filter(|&id| set.contains(id)).map(|id| self.name(id).to_string()));
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

    /// Every AWS action: what an AWS policy's `*` grants.
    pub fn full_set(&self) -> ActionSet {
        self.cloud_set(Cloud::Aws)
    }

    /// The actions matching an IAM action pattern (`*`, `s3:*`, `s3:Get*`, `ec2:Describe?pcs`), case-insensitively.
    pub fn expand(&self, pattern: &str) -> ActionSet {
        let mut out = self.empty_set();
        let pattern = pattern.trim();
        if pattern == "*" {
            return self.full_set();
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

/// How many of `range`'s ids `set` holds (a set smaller than the catalog holds none past its end).
fn count_in(set: &ActionSet, range: &std::ops::Range<ActionId>) -> usize {
    let end = (range.end as usize).min(set.0.len());
    let start = (range.start as usize).min(end);
    set.0.count_ones(start..end)
}

#[derive(Deserialize)]
struct AzureRole {
    #[serde(default)]
    permissions: Vec<AzurePermissions>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AzurePermissions {
    #[serde(default)]
    actions: Vec<String>,
    #[serde(default)]
    not_actions: Vec<String>,
    #[serde(default)]
    data_actions: Vec<String>,
    #[serde(default)]
    not_data_actions: Vec<String>,
}

fn gunzip(bytes: &[u8]) -> Result<Vec<u8>, CatalogError> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).map_err(|e| CatalogError::Embedded(e.to_string()))?;
    Ok(out)
}

/// Every concrete operation the built-in roles name (wildcards are patterns, not operations), with
/// an access level and risk tags read from its shape (`.../read`, `.../write`, `.../action`).
fn azure_actions() -> Result<Vec<ActionInfo>, CatalogError> {
    let roles: Vec<AzureRole> =
        serde_json::from_slice(&gunzip(AZURE_BUILTIN_ROLES_GZ)?).map_err(|e| CatalogError::Embedded(e.to_string()))?;
    // Lower-cased name → (first spelling, named as a data action, named as a control operation).
    let mut ops: std::collections::BTreeMap<String, (String, bool, bool)> = std::collections::BTreeMap::new();
    for p in roles.iter().flat_map(|r| &r.permissions) {
        let control = p.actions.iter().chain(&p.not_actions).map(|a| (a, false));
        let data = p.data_actions.iter().chain(&p.not_data_actions).map(|a| (a, true));
        for (op, is_data) in control.chain(data) {
            let op = op.trim();
            if op.contains('*') || !op.contains('/') {
                continue;
            }
            // The same operation is spelled with different cases by different roles: keep the first.
            let e = ops.entry(op.to_ascii_lowercase()).or_insert_with(|| (op.to_string(), false, false));
            if is_data {
                e.1 = true;
            } else {
                e.2 = true;
            }
        }
    }
    // Operations only wildcards reach (writing role definitions, deleting diagnostic settings): without
    // them their Activity Log records would map to nothing.
    for op in AZURE_EXTRA_OPERATIONS.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        ops.entry(op.to_ascii_lowercase()).or_insert_with(|| (op.to_string(), false, true));
    }
    Ok(ops
        .into_values()
        .map(|(name, data, control)| {
            let (level, tags) = azure_level(&name.to_ascii_lowercase(), data && !control);
            ActionInfo {
                prefix_len: name.find('/').unwrap_or(name.len()),
                name,
                level,
                arns: vec!["*".to_string()],
                tags,
                cloud: Cloud::Azure,
                data,
                control,
            }
        })
        .collect())
}

/// Substrings of Azure operations that hand out secrets or keys.
const AZURE_CREDENTIAL_OPS: &[&str] = &[
    "listkeys",
    "listcredential",
    "regeneratekey",
    "listsecrets",
    "getsecret",
    "listaccountsas",
    "listservicesas",
    "generatecredentials",
    "publishxml",
    "listconnectionstrings",
    "listadmincredential",
    "listusercredential",
    "listclusteradmincredential",
    "listclusterusercredential",
    "/secrets/readmetadata",
    "getaccesstoken",
];

/// Azure operations that let an identity act with more than it holds.
const AZURE_ESCALATION_OPS: &[&str] = &[
    "microsoft.authorization/roleassignments/write",
    "microsoft.authorization/roledefinitions/write",
    "microsoft.authorization/elevateaccess/action",
    "microsoft.managedidentity/userassignedidentities/assign/action",
    "microsoft.compute/virtualmachines/runcommand/action",
    "microsoft.compute/virtualmachines/runcommands/write",
    "microsoft.automation/automationaccounts/runbooks/write",
    "microsoft.automation/automationaccounts/jobs/write",
    "microsoft.web/sites/config/write",
    "microsoft.resources/deployments/write",
];

fn azure_level(lower: &str, data: bool) -> (AccessLevel, RiskTags) {
    let verb = lower.rsplit('/').next().unwrap_or("");
    let credential = AZURE_CREDENTIAL_OPS.iter().any(|c| lower.contains(c));
    let escalation = AZURE_ESCALATION_OPS.contains(&lower);
    let level = if lower.starts_with("microsoft.authorization/") && matches!(verb, "write" | "delete" | "action") {
        AccessLevel::PermissionsManagement
    } else if lower.starts_with("microsoft.resources/tags/") {
        AccessLevel::Tagging
    } else if verb == "read" || credential {
        AccessLevel::Read
    } else {
        AccessLevel::Write
    };
    let exposure = lower.ends_with("/networksecuritygroups/securityrules/write")
        || lower.ends_with("/blobservices/containers/write")
        || lower.ends_with("/storageaccounts/write");
    let tags = RiskTags {
        privilege_escalation: escalation,
        credential_exposure: credential,
        data_access: data && level == AccessLevel::Read,
        resource_exposure: exposure,
    };
    (level, tags)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GcpRole {
    #[serde(default)]
    included_permissions: Vec<String>,
}

/// Every permission a predefined role includes, with an access level and risk tags read from its
/// verb (`service.resource.verb`).
fn gcp_actions() -> Result<Vec<ActionInfo>, CatalogError> {
    let text = gunzip(GCP_ROLES_GZ)?;
    let mut perms: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    for line in text.split(|&b| b == b'\n').filter(|l| !l.iter().all(u8::is_ascii_whitespace)) {
        let role: GcpRole = serde_json::from_slice(line).map_err(|e| CatalogError::Embedded(e.to_string()))?;
        for p in role.included_permissions {
            perms.entry(p.to_ascii_lowercase()).or_insert(p);
        }
    }
    Ok(perms
        .into_iter()
        .map(|(lower, name)| {
            let (level, tags) = gcp_level(&lower);
            ActionInfo {
                prefix_len: name.find('.').unwrap_or(name.len()),
                name,
                level,
                arns: vec!["*".to_string()],
                tags,
                cloud: Cloud::Gcp,
                data: false,
                control: true,
            }
        })
        .collect())
}

/// GCP permissions that let an identity act as a service account or grant itself more.
const GCP_ESCALATION: &[&str] = &[
    "iam.serviceaccounts.actas",
    "iam.serviceaccounts.getaccesstoken",
    "iam.serviceaccounts.signblob",
    "iam.serviceaccounts.signjwt",
    "iam.serviceaccounts.implicitdelegation",
    "iam.serviceaccounts.getopenidtoken",
    "iam.serviceaccountkeys.create",
    "iam.roles.create",
    "iam.roles.update",
    "deploymentmanager.deployments.create",
    "cloudfunctions.functions.create",
    "cloudfunctions.functions.update",
    "run.services.create",
    "compute.instances.setmetadata",
    "compute.projects.setcommoninstancemetadata",
];

fn gcp_level(lower: &str) -> (AccessLevel, RiskTags) {
    let verb = lower.rsplit('.').next().unwrap_or("");
    let resource = lower.rsplit('.').nth(1).unwrap_or("");
    let level = if verb == "setiampolicy" || lower.starts_with("iam.roles.") && verb != "get" && verb != "list" {
        AccessLevel::PermissionsManagement
    } else if matches!(resource, "tagbindings" | "tagkeys" | "tagvalues") || verb == "setlabels" || verb == "settags" {
        AccessLevel::Tagging
    } else if verb == "list" || verb.starts_with("search") {
        AccessLevel::List
    } else if verb.starts_with("get") || verb == "access" || verb == "read" || verb == "query" {
        AccessLevel::Read
    } else {
        AccessLevel::Write
    };
    let credential = lower == "secretmanager.versions.access"
        || lower == "iam.serviceaccountkeys.create"
        || lower == "iam.serviceaccounts.getaccesstoken"
        || lower == "storage.hmackeys.create"
        || lower == "apikeys.keys.getkeystring";
    let tags = RiskTags {
        privilege_escalation: verb == "setiampolicy" || GCP_ESCALATION.contains(&lower),
        credential_exposure: credential,
        data_access: matches!(
            lower,
            "storage.objects.get" | "bigquery.tables.getdata" | "secretmanager.versions.access"
        ) || verb == "getdata"
            || verb == "readrows",
        resource_exposure: verb == "setiampolicy",
    };
    (level, tags)
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

    #[test]
    fn all_clouds_keep_aws_ids_and_add_azure_and_gcp() {
        let aws = Catalog::aws().unwrap();
        let c = Catalog::all_clouds().unwrap();
        assert_eq!(c.cloud_range(Cloud::Aws), 0..aws.len() as ActionId);
        for name in ["s3:GetObject", "iam:PassRole", "sts:AssumeRole"] {
            assert_eq!(c.lookup(name), aws.lookup(name), "{name}");
        }
        assert!(c.cloud_len(Cloud::Azure) > 3_000, "{}", c.cloud_len(Cloud::Azure));
        assert!(c.cloud_len(Cloud::Gcp) > 13_000, "{}", c.cloud_len(Cloud::Gcp));
        assert_eq!(c.len(), aws.len() + c.cloud_len(Cloud::Azure) + c.cloud_len(Cloud::Gcp));
        assert_eq!(c.cloud_len(Cloud::Okta), 0);

        // An AWS `*` is AWS only; the permissionless set keeps its members.
        assert_eq!(c.expand("*").len(), aws.len());
        assert_eq!(c.full_set(), c.cloud_set(Cloud::Aws));
        assert_eq!(c.permissionless().len(), aws.permissionless().len());

        let rd = c.lookup("Microsoft.Authorization/roleDefinitions/write").unwrap();
        assert!(c.risk_tags(rd).privilege_escalation);
        assert!(
            c.expand_azure("Microsoft.Insights/*", false)
                .contains(c.lookup("Microsoft.Insights/diagnosticSettings/delete").unwrap())
        );
        let ra = c.lookup("microsoft.authorization/ROLEASSIGNMENTS/write").unwrap();
        assert_eq!(c.cloud_of(ra), Cloud::Azure);
        assert_eq!(c.name(ra), "Microsoft.Authorization/roleAssignments/write");
        assert_eq!(c.access_level(ra), AccessLevel::PermissionsManagement);
        assert!(c.risk_tags(ra).privilege_escalation && c.is_high_risk(ra));
        let keys = c.lookup("Microsoft.Storage/storageAccounts/listKeys/action").unwrap();
        assert!(c.risk_tags(keys).credential_exposure && c.is_high_risk(keys));
        let blob = c.lookup("Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read").unwrap();
        assert!(c.is_data_action(blob) && c.risk_tags(blob).data_access);
        assert!(!c.is_high_risk(c.lookup("Microsoft.Compute/virtualMachines/read").unwrap()));

        let set_policy = c.lookup("resourcemanager.projects.setIamPolicy").unwrap();
        assert_eq!(c.cloud_of(set_policy), Cloud::Gcp);
        assert_eq!(c.access_level(set_policy), AccessLevel::PermissionsManagement);
        let act_as = c.lookup("iam.serviceAccounts.actAs").unwrap();
        assert!(c.risk_tags(act_as).privilege_escalation);
        assert_eq!(c.access_level(c.lookup("storage.objects.list").unwrap()), AccessLevel::List);
        assert_eq!(c.access_level(c.lookup("storage.objects.get").unwrap()), AccessLevel::Read);
        assert_eq!(c.access_level(c.lookup("storage.objects.delete").unwrap()), AccessLevel::Write);
    }

    #[test]
    fn azure_and_gcp_wildcards_follow_their_clouds() {
        let c = Catalog::all_clouds().unwrap();
        let azure = c.cloud_range(Cloud::Azure);
        // Owner's `*` is every control-plane operation, no data action, nothing of another cloud.
        let all = c.expand_azure("*", false);
        assert!(all.iter().all(|id| azure.contains(&id)));
        let mut both = all.clone();
        both.union_with(&c.expand_azure("*", true));
        assert_eq!(both.len(), c.cloud_len(Cloud::Azure));
        // Named as a data action by one role and as an operation by others: both planes grant it.
        let export = c
            .lookup("Microsoft.ApiCenter/services/workspaces/apis/versions/definitions/exportSpecification/action")
            .unwrap();
        assert!(all.contains(export) && c.expand_azure("*", true).contains(export));
        // `*` matches across `/`, case-insensitively; Reader's `*/read` holds only reads.
        let reads = c.expand_azure("*/READ", false);
        assert!(reads.len() > 500 && reads.iter().all(|id| c.name(id).to_ascii_lowercase().ends_with("/read")));
        let storage = c.expand_azure("Microsoft.Storage/*", false);
        assert!(storage.iter().all(|id| c.prefix(id) == "Microsoft.Storage"));
        assert!(storage.contains(c.lookup("Microsoft.Storage/storageAccounts/listKeys/action").unwrap()));
        let blob = c.lookup("Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read").unwrap();
        assert!(!storage.contains(blob) && c.expand_azure("Microsoft.Storage/*", true).contains(blob));
        assert!(c.expand_azure("Microsoft.NoSuch/*", false).is_empty());

        let get = c.lookup("storage.objects.get").unwrap();
        assert_eq!(c.expand_gcp("storage.objects.get").iter().collect::<Vec<_>>(), vec![get]);
        assert!(c.expand_gcp("storage.googleapis.com/objects.get").contains(get));
        let storage = c.expand_gcp("storage.googleapis.com/*");
        assert!(storage.contains(get) && storage.iter().all(|id| c.name(id).starts_with("storage.")));
        assert_eq!(storage, c.expand_gcp("storage.*"));
        assert!(c.expand_gcp("s3:GetObject").is_empty());
    }

    #[test]
    fn compact_names_round_trip_in_every_cloud() {
        let c = Catalog::all_clouds().unwrap();
        // A whole provider is control and data operations both; its control operations alone are listed.
        let mut set = c.expand_azure("Microsoft.Storage/*", false);
        set.union_with(&c.expand_azure("Microsoft.Storage/*", true));
        set.union_with(&c.expand_azure("Microsoft.Network/virtualNetworks/*", false));
        set.insert(c.lookup("Microsoft.Compute/virtualMachines/read").unwrap());
        set.union_with(&c.expand_gcp("storage.*"));
        set.insert(c.lookup("iam.serviceAccounts.actAs").unwrap());
        set.union_with(&c.expand("s3:Get*"));
        let compact = c.compact_names(&set);
        assert!(compact.contains(&"Microsoft.Storage/*".to_string()), "{compact:?}");
        assert!(compact.contains(&"Microsoft.Network/virtualNetworks/read".to_string()), "{compact:?}");
        assert!(compact.contains(&"storage.*".to_string()) && compact.contains(&"s3:Get*".to_string()));
        let slashed = c.lookup("cloudvolumesgcp-api.netapp.com/activeDirectories.create").unwrap();
        assert_eq!(c.expand_compact(c.name(slashed)).iter().collect::<Vec<_>>(), vec![slashed]);
        let mut back = c.empty_set();
        for entry in &compact {
            back.union_with(&c.expand_compact(entry));
        }
        assert_eq!(back, set);
        // A whole Azure cloud is never written `*`, which means all of AWS.
        let azure = c.cloud_set(Cloud::Azure);
        assert!(!c.compact_names(&azure).contains(&"*".to_string()));
        assert_eq!(c.compact_names(&c.full_set()), ["*"]);
    }
}
