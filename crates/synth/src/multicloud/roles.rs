//! The reference role data, embedded: Azure built-in role definitions and GCP predefined roles. From
//! them, the concrete operation universes (what `Catalog::all_clouds()` numbers) and each role's
//! effective set, computed with this crate's own matcher ([`glob_match`]), never grantwatch-core's: the
//! truth is an oracle for core's expansion, not a copy of it.

use std::io::Read;

use rustc_hash::FxHashMap;
use serde::Deserialize;

use crate::SynthError;
use crate::util::glob_match;

/// `az role definition list` of the 928 built-in roles (iam-dataset, MIT; see `data/azure/`).
const AZURE_BUILTIN_GZ: &[u8] = include_bytes!("../../../../data/azure/builtin-roles.json.gz");
/// Operations no built-in role names concretely (only wildcards reach them), which the catalog adds
/// (see `data/azure/README.md`): the truth's universe is the catalog's.
const AZURE_EXTRA_OPERATIONS: &str = include_str!("../../../../data/azure/extra-operations.txt");
/// `gcloud iam roles describe` of the 2,461 predefined roles, one per line (iam-dataset, MIT; see `data/gcp/`).
const GCP_ROLES_GZ: &[u8] = include_bytes!("../../../../data/gcp/roles.jsonl.gz");

fn gunzip(name: &str, gz: &[u8]) -> Result<Vec<u8>, SynthError> {
    let mut out = Vec::with_capacity(gz.len() * 12);
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut out)
        .map_err(|e| SynthError::InvalidSpec(format!("embedded {name}: {e}")))?;
    Ok(out)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AzurePermission {
    #[serde(default)]
    pub(crate) actions: Vec<String>,
    #[serde(default)]
    pub(crate) not_actions: Vec<String>,
    #[serde(default)]
    pub(crate) data_actions: Vec<String>,
    #[serde(default)]
    pub(crate) not_data_actions: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AzureRoleDef {
    /// The role definition GUID.
    pub(crate) name: String,
    pub(crate) role_name: String,
    #[serde(default)]
    pub(crate) permissions: Vec<AzurePermission>,
}

/// A role's effective concrete set: indices into the universe, sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct OpSet {
    pub(crate) control: Vec<u32>,
    pub(crate) data: Vec<u32>,
}

pub(crate) struct AzureRoles {
    pub(crate) roles: Vec<AzureRoleDef>,
    /// Concrete control-plane operations, first spelling in file order (the file spells 101
    /// operations two ways, e.g. `.../Read` and `.../read`; Azure compares case-insensitively), then
    /// the extra operations.
    pub(crate) ops: Vec<String>,
    pub(crate) data_ops: Vec<String>,
    index: FxHashMap<String, u32>,
    data_index: FxHashMap<String, u32>,
}

fn is_concrete(s: &str) -> bool {
    !s.contains('*') && s.contains('/')
}

impl AzureRoles {
    pub(crate) fn load() -> Result<AzureRoles, SynthError> {
        let raw = gunzip("Azure built-in roles", AZURE_BUILTIN_GZ)?;
        let roles: Vec<AzureRoleDef> = serde_json::from_slice(&raw)?;
        let mut r = AzureRoles {
            roles,
            ops: Vec::new(),
            data_ops: Vec::new(),
            index: FxHashMap::default(),
            data_index: FxHashMap::default(),
        };
        for role in &r.roles {
            for p in &role.permissions {
                for a in p.actions.iter().chain(&p.not_actions) {
                    let a = a.trim();
                    if is_concrete(a) {
                        let k = a.to_ascii_lowercase();
                        if !r.index.contains_key(&k) {
                            r.index.insert(k, r.ops.len() as u32);
                            r.ops.push(a.to_string());
                        }
                    }
                }
                for a in p.data_actions.iter().chain(&p.not_data_actions) {
                    let a = a.trim();
                    if is_concrete(a) {
                        let k = a.to_ascii_lowercase();
                        if !r.data_index.contains_key(&k) {
                            r.data_index.insert(k, r.data_ops.len() as u32);
                            r.data_ops.push(a.to_string());
                        }
                    }
                }
            }
        }
        for op in AZURE_EXTRA_OPERATIONS.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let k = op.to_ascii_lowercase();
            if is_concrete(op) && !r.index.contains_key(&k) && !r.data_index.contains_key(&k) {
                r.index.insert(k, r.ops.len() as u32);
                r.ops.push(op.to_string());
            }
        }
        Ok(r)
    }

    pub(crate) fn builtin(&self, role_name: &str) -> Option<&AzureRoleDef> {
        self.roles.iter().find(|r| r.role_name == role_name)
    }

    /// The control-plane operation `op` (any case), if concrete in some built-in role.
    pub(crate) fn op(&self, op: &str) -> Option<u32> {
        self.index.get(&op.to_ascii_lowercase()).copied()
    }

    /// Azure semantics: each permission block grants what its `actions` match minus what its
    /// `notActions` match (likewise for data actions); a role grants the union of its blocks.
    pub(crate) fn effective(&self, perms: &[AzurePermission]) -> OpSet {
        fn side(universe: &[String], allow: &[String], deny: &[String], out: &mut Vec<u32>) {
            if allow.is_empty() {
                return;
            }
            for (i, op) in universe.iter().enumerate() {
                if allow.iter().any(|p| glob_match(p, op)) && !deny.iter().any(|p| glob_match(p, op)) {
                    out.push(i as u32);
                }
            }
        }
        let mut s = OpSet::default();
        for p in perms {
            side(&self.ops, &p.actions, &p.not_actions, &mut s.control);
            side(&self.data_ops, &p.data_actions, &p.not_data_actions, &mut s.data);
        }
        s.control.sort_unstable();
        s.control.dedup();
        s.data.sort_unstable();
        s.data.dedup();
        s
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GcpRoleLine {
    name: String,
    #[serde(default)]
    included_permissions: Vec<String>,
}

pub(crate) struct GcpRoles {
    /// Every permission of a predefined role, sorted.
    pub(crate) perms: Vec<String>,
    index: FxHashMap<String, u32>,
    roles: FxHashMap<String, Vec<u32>>,
}

impl GcpRoles {
    pub(crate) fn load() -> Result<GcpRoles, SynthError> {
        let raw = gunzip("GCP predefined roles", GCP_ROLES_GZ)?;
        let text = String::from_utf8_lossy(&raw);
        let mut lines = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let r: GcpRoleLine = serde_json::from_str(line)
                .map_err(|e| SynthError::InvalidSpec(format!("embedded GCP roles line {}: {e}", i + 1)))?;
            lines.push(r);
        }
        let mut perms: Vec<String> = lines.iter().flat_map(|r| r.included_permissions.iter().cloned()).collect();
        perms.sort();
        perms.dedup();
        let index: FxHashMap<String, u32> = perms.iter().enumerate().map(|(i, p)| (p.clone(), i as u32)).collect();
        let roles = lines
            .into_iter()
            .map(|r| {
                let mut ids: Vec<u32> = r.included_permissions.iter().filter_map(|p| index.get(p).copied()).collect();
                ids.sort_unstable();
                ids.dedup();
                (r.name, ids)
            })
            .collect();
        Ok(GcpRoles { perms, index, roles })
    }

    pub(crate) fn perm(&self, p: &str) -> Option<u32> {
        self.index.get(p).copied()
    }

    pub(crate) fn predefined(&self, name: &str) -> Option<&[u32]> {
        self.roles.get(name).map(Vec::as_slice)
    }
}
