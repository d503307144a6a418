//! One GCP export file, recognized by its content, into a [`GcpInventory`].
//!
//! A file is one JSON document (an object, or an array of records) or JSON Lines (one record a line); list
//! responses of the REST APIs (`{"results": [...]}`, `{"policies": [...]}`, `{"roles": [...]}`,
//! `{"accounts": [...]}`, `{"keys": [...]}`, `{"groups": [...]}`) are unwrapped. Each record is recognized by
//! its keys, so one file may mix kinds (see [`EXPECTED`] and docs/gcp.md for the shapes):
//!
//! | record | recognized by |
//! |---|---|
//! | Cloud Asset Inventory `--content-type=iam-policy` | `iamPolicy` (+ `name`, `ancestors`) |
//! | `gcloud asset search-all-iam-policies` result, or a wrapped `get-iam-policy` | `policy` + `resource` |
//! | a bare `get-iam-policy` wrapped with its project | `bindings` + `projectId` (or `resource`, `folderId`, `organizationId`) |
//! | Cloud Asset Inventory `--content-type=resource` | `resource.data` + `assetType` (projects, folders, organizations; other assets are counted as ignored) |
//! | `gcloud projects list` / `folders list` | `projectId` + `projectNumber`; `name: folders/N` + `parent` |
//! | deny policy (`gcloud iam policies get --kind=denypolicies`) | `rules`, `name: policies/.../denypolicies/...` or `kind: DenyPolicy` |
//! | custom role (`gcloud iam roles list/describe`) | `includedPermissions`, or `name: .../roles/...` |
//! | service account key (`keys list`) | `keyType`, or `name: .../serviceAccounts/.../keys/...` |
//! | service account (`service-accounts list`) | `email` + `uniqueId` (or `name: .../serviceAccounts/...`) |
//! | group with members | `email` + `members` |
//!
//! A file none of whose records is recognized is an error naming what was expected. In a file with some
//! recognized records, a record that is not (or is malformed) is skipped and counted with its index, so one
//! odd line does not lose the rest. Records that are well-formed but carry nothing grantwatch uses (a bucket
//! in a resource export) are counted as ignored.

use grantwatch_types::EventTime;
use serde_json::{Map, Value};

/// What a record can be; the error for an unrecognized record lists these.
pub const EXPECTED: &str = "a Cloud Asset Inventory IAM policy ({name, iamPolicy}) or resource ({name, assetType, resource}), \
a search-all-iam-policies result ({resource, policy}), a get-iam-policy wrapped as {resource, policy} or {projectId, bindings}, \
a project ({projectId, projectNumber}), a folder ({name: folders/N, parent}), a deny policy ({name: policies/..., rules}), \
a custom role ({name, includedPermissions}), a service account ({email, uniqueId}), a service account key ({name, keyType}), \
or a group ({email, members})";

/// How many problem messages an inventory keeps (the count goes on).
pub const MAX_PROBLEMS: usize = 100;

/// Why a file could not be read as a GCP export. Record-level problems do not fail a file (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    #[error("{file}: not JSON or JSON Lines: {message}")]
    Json { file: String, message: String },
    #[error("{file}: record {index}: not a GCP export record ({found}); expected {EXPECTED}")]
    Unrecognized { file: String, index: usize, found: String },
    #[error("{file}: record {index}: {message}")]
    Record { file: String, index: usize, message: String },
    #[error("{file}: empty (no records)")]
    Empty { file: String },
}

/// An IAM condition (CEL), as the policy writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub title: Option<String>,
    pub expression: String,
}

/// One role binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// `roles/viewer`, `projects/p/roles/custom`, `organizations/1/roles/custom`.
    pub role: String,
    /// As the policy writes them (`user:a@x`, `allUsers`, ...).
    pub members: Vec<String>,
    pub condition: Option<Condition>,
}

/// One resource's allow policy and where the resource sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IamPolicyRecord {
    /// The full resource name (`//cloudresourcemanager.googleapis.com/projects/123`,
    /// `//storage.googleapis.com/projects/_/buckets/b`); `projects/p` inputs are written in full.
    pub resource: String,
    pub asset_type: Option<String>,
    /// The project the resource is in, when the record says (`projects/123` or `projects/my-id`).
    pub project: Option<String>,
    /// Hierarchy nodes above the resource (`projects/123`, `folders/45`, `organizations/6`), nearest first.
    pub ancestors: Vec<String>,
    pub bindings: Vec<Binding>,
    /// `file#index`, for warnings.
    pub origin: String,
}

/// A project's number and id (the asset export names projects by number, bindings and logs by id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectRecord {
    pub number: Option<String>,
    pub id: Option<String>,
}

/// A deny policy and where it is attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenyPolicy {
    pub name: String,
    /// `organizations/6`, `folders/45`, `projects/my-proj` (or the project number).
    pub attachment_point: String,
    pub rules: Vec<DenyRule>,
    pub origin: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenyRule {
    pub denied_principals: Vec<String>,
    pub exception_principals: Vec<String>,
    /// `storage.googleapis.com/buckets.delete`, `storage.googleapis.com/*`, or plain `storage.buckets.delete`.
    pub denied_permissions: Vec<String>,
    pub exception_permissions: Vec<String>,
    pub denial_condition: Option<Condition>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomRole {
    /// `projects/p/roles/x` or `organizations/6/roles/x` (`roles/x` replaces a predefined role's definition).
    pub name: String,
    pub permissions: Vec<String>,
    /// The record had `includedPermissions` (`gcloud iam roles list` prints roles without them).
    pub permissions_listed: bool,
    /// `deleted: true` (a deleted custom role still bound grants nothing).
    pub deleted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    pub email: String,
    pub unique_id: Option<String>,
    pub project_id: Option<String>,
    pub disabled: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// Created by a user: a long-lived credential someone holds.
    UserManaged,
    /// Held and rotated by Google.
    SystemManaged,
    Unknown,
}

/// A service account key's metadata (never key material: `keys list` prints none, and a `privateKeyData`
/// field is not read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccountKey {
    /// The key id (the last segment of its name; what audit logs' `serviceAccountKeyName` ends with).
    pub key_id: String,
    pub service_account: Option<String>,
    pub project: Option<String>,
    pub key_type: KeyType,
    pub valid_after: Option<EventTime>,
    pub valid_before: Option<EventTime>,
    pub disabled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Lowercased.
    pub email: String,
    /// Canonical member strings (`user:a@x`, `group:g@x`, `serviceAccount:s@p.iam.gserviceaccount.com`).
    pub members: Vec<String>,
}

/// Everything read from one or more export files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcpInventory {
    pub policies: Vec<IamPolicyRecord>,
    pub projects: Vec<ProjectRecord>,
    /// Hierarchy facts: a node (`projects/123`, `folders/45`) and nodes above it.
    pub hierarchy: Vec<(String, Vec<String>)>,
    pub deny_policies: Vec<DenyPolicy>,
    pub custom_roles: Vec<CustomRole>,
    pub service_accounts: Vec<ServiceAccount>,
    pub keys: Vec<ServiceAccountKey>,
    pub groups: Vec<Group>,
    /// Well-formed records of no use here (assets other than projects, folders, organizations).
    pub ignored: usize,
    /// Records skipped as unrecognized or malformed.
    pub skipped: usize,
    /// The first [`MAX_PROBLEMS`] skip reasons.
    pub problems: Vec<String>,
}

impl GcpInventory {
    /// Adds another file's inventory.
    pub fn extend(&mut self, other: GcpInventory) {
        self.policies.extend(other.policies);
        self.projects.extend(other.projects);
        self.hierarchy.extend(other.hierarchy);
        self.deny_policies.extend(other.deny_policies);
        self.custom_roles.extend(other.custom_roles);
        self.service_accounts.extend(other.service_accounts);
        self.keys.extend(other.keys);
        self.groups.extend(other.groups);
        self.ignored += other.ignored;
        self.skipped += other.skipped;
        for p in other.problems {
            self.problem(p);
        }
    }

    fn problem(&mut self, message: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(message);
        }
    }

    /// Whether nothing was read.
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
            && self.projects.is_empty()
            && self.hierarchy.is_empty()
            && self.deny_policies.is_empty()
            && self.custom_roles.is_empty()
            && self.service_accounts.is_empty()
            && self.keys.is_empty()
            && self.groups.is_empty()
    }
}

/// Parses one export file (already decompressed). `file` names it in errors and warnings.
pub fn parse_export(file: &str, bytes: &[u8]) -> Result<GcpInventory, ExportError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let records = split_records(file, bytes)?;
    if records.is_empty() {
        return Err(ExportError::Empty { file: file.to_string() });
    }
    let mut inv = GcpInventory::default();
    let mut recognized = 0usize;
    let mut first_error: Option<ExportError> = None;
    for (index, rec) in records {
        let rec = match rec {
            Ok(v) => v,
            Err(message) => {
                let e = ExportError::Record { file: file.to_string(), index, message };
                inv.skipped += 1;
                inv.problem(e.to_string());
                first_error.get_or_insert(e);
                continue;
            }
        };
        match read_record(&mut inv, &rec, &format!("{file}#{index}")) {
            Ok(()) => recognized += 1,
            Err(err) => {
                let e = match err {
                    RecordError::Unrecognized(found) => {
                        ExportError::Unrecognized { file: file.to_string(), index, found }
                    }
                    RecordError::Bad(message) => ExportError::Record { file: file.to_string(), index, message },
                };
                inv.skipped += 1;
                inv.problem(e.to_string());
                first_error.get_or_insert(e);
            }
        }
    }
    match (recognized, first_error) {
        (0, Some(e)) => Err(e),
        _ => Ok(inv),
    }
}

/// The file's records with their index: the elements of a top-level array or of a list response, the
/// object itself, or each line of JSON Lines (a line that does not parse is an `Err` at its index).
/// A file's records with their index; a record that did not parse is its error message.
type Records = Vec<(usize, Result<Value, String>)>;

fn split_records(file: &str, bytes: &[u8]) -> Result<Records, ExportError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        None => return Ok(Vec::new()),
        Some(b'[' | b'{') => {}
        Some(_) => {
            return Err(ExportError::Json {
                file: file.to_string(),
                message: "expected a JSON object, a JSON array or JSON Lines".to_string(),
            });
        }
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Array(items)) => Ok(items.into_iter().enumerate().map(|(i, v)| (i, Ok(v))).collect()),
        Ok(Value::Object(map)) => Ok(unwrap_list(map).into_iter().enumerate().map(|(i, v)| (i, Ok(v))).collect()),
        Ok(_) => {
            Err(ExportError::Json { file: file.to_string(), message: "expected a JSON object or array".to_string() })
        }
        Err(whole) => {
            if first == Some(&b'[') {
                return Err(ExportError::Json { file: file.to_string(), message: whole.to_string() });
            }
            // JSON Lines (a whole-document parse fails at the second line): each line on its own.
            let mut out = Vec::new();
            for (i, line) in
                bytes.split(|&b| b == b'\n').filter(|l| l.iter().any(|b| !b.is_ascii_whitespace())).enumerate()
            {
                out.push((i, serde_json::from_slice::<Value>(line).map_err(|e| format!("not JSON: {e}"))));
            }
            // A single pretty-printed object that is broken is one error, not a line per fragment.
            if out.iter().all(|(_, r)| r.is_err()) {
                return Err(ExportError::Json { file: file.to_string(), message: whole.to_string() });
            }
            Ok(out)
        }
    }
}

/// List responses (`{"results": [...], "nextPageToken": ...}`) become their elements; any other object is
/// one record.
fn unwrap_list(map: Map<String, Value>) -> Vec<Value> {
    const LISTS: &[&str] = &["results", "policies", "roles", "accounts", "keys", "groups", "assets", "projects"];
    // A record that has one of these keys beside its own fields (a group's `members`) is not a list.
    let is_list = map.keys().all(|k| LISTS.contains(&k.as_str()) || k == "nextPageToken" || k == "attachmentPoint")
        && map.keys().any(|k| LISTS.contains(&k.as_str()));
    if !is_list {
        return vec![Value::Object(map)];
    }
    let attachment = map.get("attachmentPoint").and_then(Value::as_str).map(str::to_string);
    let mut out = Vec::new();
    for (k, v) in map {
        if let Value::Array(items) = v {
            for mut item in items {
                // `{"attachmentPoint": ..., "policies": [...]}`: each deny policy learns where it is attached.
                if k == "policies"
                    && let (Some(a), Value::Object(m)) = (&attachment, &mut item)
                {
                    m.entry("attachmentPoint").or_insert_with(|| Value::String(a.clone()));
                }
                out.push(item);
            }
        }
    }
    out
}

enum RecordError {
    Unrecognized(String),
    Bad(String),
}

fn bad(msg: impl Into<String>) -> RecordError {
    RecordError::Bad(msg.into())
}

fn s<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    m.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// A string field that may also be a number (`projectNumber` is a string in JSON, a number in some tools).
fn s_or_num(m: &Map<String, Value>, key: &str) -> Option<String> {
    match m.get(key)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn flag(m: &Map<String, Value>, key: &str) -> bool {
    match m.get(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

fn strings(v: Option<&Value>, what: &str) -> Result<Vec<String>, RecordError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|x| x.as_str().map(str::to_string).ok_or_else(|| bad(format!("{what}: expected strings"))))
            .collect(),
        Some(_) => Err(bad(format!("{what}: expected an array of strings"))),
    }
}

fn read_record(inv: &mut GcpInventory, rec: &Value, origin: &str) -> Result<(), RecordError> {
    let Value::Object(m) = rec else {
        return Err(RecordError::Unrecognized(format!("a JSON {}", json_kind(rec))));
    };
    if let Some(policy) = m.get("iamPolicy") {
        return read_asset_policy(inv, m, policy, origin);
    }
    if let (Some(policy), Some(resource)) = (m.get("policy"), s(m, "resource")) {
        return read_wrapped_policy(inv, m, resource, policy, origin);
    }
    if m.contains_key("bindings") {
        return read_bare_policy(inv, m, origin);
    }
    if let Some(Value::Object(resource)) = m.get("resource")
        && resource.contains_key("data")
    {
        return read_asset_resource(inv, m, resource);
    }
    if m.contains_key("projectId") && m.contains_key("projectNumber") {
        read_project_listing(inv, m);
        return Ok(());
    }
    let name = s(m, "name").unwrap_or_default();
    if m.contains_key("rules") || name.contains("/denypolicies/") || s(m, "kind") == Some("DenyPolicy") {
        if !m.contains_key("rules") {
            return Err(bad(format!(
                "deny policy {name:?} without rules: `gcloud iam policies list` omits them; export each with \
                 `gcloud iam policies get ID --attachment-point=... --kind=denypolicies --format=json`"
            )));
        }
        return read_deny_policy(inv, m, origin);
    }
    if m.contains_key("includedPermissions")
        || (name.contains("roles/") && (m.contains_key("title") || m.contains_key("etag")))
    {
        return read_custom_role(inv, m);
    }
    if m.contains_key("keyType") || (name.contains("/serviceAccounts/") && name.contains("/keys/")) {
        return read_key(inv, m);
    }
    if s(m, "email").is_some() && m.contains_key("members") {
        return read_group(inv, m);
    }
    if s(m, "email").is_some() && (m.contains_key("uniqueId") || name.contains("/serviceAccounts/")) {
        read_service_account(inv, m);
        return Ok(());
    }
    if name.starts_with("folders/") && s(m, "parent").is_some() {
        inv.hierarchy.push((name.to_string(), vec![node_of(s(m, "parent").unwrap_or_default())]));
        return Ok(());
    }
    let mut keys: Vec<&str> = m.keys().map(String::as_str).take(8).collect();
    keys.sort_unstable();
    Err(RecordError::Unrecognized(if keys.is_empty() {
        "an empty object".to_string()
    } else {
        format!("keys: {}", keys.join(", "))
    }))
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `//cloudresourcemanager.googleapis.com/projects/123` → `projects/123`; `cloudresourcemanager.googleapis.com/folders/4`
/// → `folders/4`; `projects/123` unchanged. Other names are returned as given.
pub(crate) fn node_of(name: &str) -> String {
    let n = name.trim_start_matches("//");
    let n = n.strip_prefix("cloudresourcemanager.googleapis.com/").unwrap_or(n);
    n.to_string()
}

/// Whether a node names a hierarchy container (not a resource inside a project).
pub(crate) fn is_container_node(node: &str) -> bool {
    let mut parts = node.split('/');
    matches!(
        (parts.next(), parts.next(), parts.next()),
        (Some("projects" | "folders" | "organizations"), Some(id), None) if !id.is_empty()
    )
}

/// A hierarchy node written in full as a resource name.
fn full_name_of_node(node: &str) -> String {
    format!("//cloudresourcemanager.googleapis.com/{node}")
}

fn read_bindings(policy: &Value) -> Result<Vec<Binding>, RecordError> {
    let Value::Object(p) = policy else { return Err(bad("policy: expected an object")) };
    let Some(bindings) = p.get("bindings") else { return Ok(Vec::new()) };
    read_binding_list(bindings)
}

fn read_binding_list(bindings: &Value) -> Result<Vec<Binding>, RecordError> {
    let Value::Array(items) = bindings else { return Err(bad("bindings: expected an array")) };
    let mut out = Vec::with_capacity(items.len());
    for (i, b) in items.iter().enumerate() {
        let Value::Object(b) = b else { return Err(bad(format!("bindings[{i}]: expected an object"))) };
        let role = s(b, "role").ok_or_else(|| bad(format!("bindings[{i}]: missing role")))?;
        let members = strings(b.get("members"), &format!("bindings[{i}].members"))?;
        out.push(Binding { role: role.to_string(), members, condition: read_condition(b.get("condition")) });
    }
    Ok(out)
}

fn read_condition(v: Option<&Value>) -> Option<Condition> {
    let Value::Object(c) = v? else { return None };
    let expression = s(c, "expression")?;
    Some(Condition { title: s(c, "title").map(str::to_string), expression: expression.to_string() })
}

fn read_asset_policy(
    inv: &mut GcpInventory,
    m: &Map<String, Value>,
    policy: &Value,
    origin: &str,
) -> Result<(), RecordError> {
    let name = s(m, "name").ok_or_else(|| bad("iamPolicy record: missing name"))?;
    let bindings = read_bindings(policy)?;
    let mut ancestors = strings(m.get("ancestors"), "ancestors")?;
    let own = node_of(name);
    // CAI lists the asset itself first when it is a container (`projects/123` for the project's own policy).
    if ancestors.first().is_some_and(|a| *a == own) {
        ancestors.remove(0);
    }
    if let Some(first_and_rest) = hierarchy_fact(&own, &ancestors) {
        inv.hierarchy.push(first_and_rest);
    }
    let project = ancestors.iter().find(|a| a.starts_with("projects/")).cloned();
    inv.policies.push(IamPolicyRecord {
        resource: name.to_string(),
        asset_type: s(m, "assetType").map(str::to_string),
        project,
        ancestors,
        bindings,
        origin: origin.to_string(),
    });
    Ok(())
}

/// The hierarchy fact a record gives: the first container node (itself, else its nearest ancestor) and the
/// nodes above it.
fn hierarchy_fact(own: &str, ancestors: &[String]) -> Option<(String, Vec<String>)> {
    if is_container_node(own) {
        return (!ancestors.is_empty()).then(|| (own.to_string(), ancestors.to_vec()));
    }
    let (first, rest) = ancestors.split_first()?;
    (!rest.is_empty()).then(|| (first.clone(), rest.to_vec()))
}

fn read_wrapped_policy(
    inv: &mut GcpInventory,
    m: &Map<String, Value>,
    resource: &str,
    policy: &Value,
    origin: &str,
) -> Result<(), RecordError> {
    let bindings = read_bindings(policy)?;
    let resource = if resource.starts_with("//") { resource.to_string() } else { full_name_of_node(resource) };
    let own = node_of(&resource);
    // search-all-iam-policies: `project`, `folders`, `organization`.
    let mut ancestors: Vec<String> = Vec::new();
    let project = s(m, "project").map(str::to_string);
    if let Some(p) = &project
        && *p != own
    {
        ancestors.push(p.clone());
    }
    ancestors.extend(strings(m.get("folders"), "folders")?);
    if let Some(org) = s(m, "organization") {
        ancestors.push(org.to_string());
    }
    if let Some(fact) = hierarchy_fact(&own, &ancestors) {
        inv.hierarchy.push(fact);
    }
    let project = project.or_else(|| own.starts_with("projects/").then(|| own.clone()));
    inv.policies.push(IamPolicyRecord {
        resource,
        asset_type: s(m, "assetType").map(str::to_string),
        project,
        ancestors,
        bindings,
        origin: origin.to_string(),
    });
    Ok(())
}

fn read_bare_policy(inv: &mut GcpInventory, m: &Map<String, Value>, origin: &str) -> Result<(), RecordError> {
    let node = if let Some(p) = s(m, "projectId") {
        format!("projects/{p}")
    } else if let Some(f) = s_or_num(m, "folderId") {
        format!("folders/{f}")
    } else if let Some(o) = s_or_num(m, "organizationId") {
        format!("organizations/{o}")
    } else if let Some(r) = s(m, "resource") {
        node_of(r)
    } else {
        return Err(bad(
            "an IAM policy without its resource: wrap get-iam-policy output as {\"resource\": \"projects/P\", \"policy\": {...}} \
             or add \"projectId\"",
        ));
    };
    let bindings = read_binding_list(m.get("bindings").unwrap_or(&Value::Null))?;
    let resource = if node.starts_with("//") { node.clone() } else { full_name_of_node(&node) };
    let project = node.starts_with("projects/").then(|| node.clone());
    inv.policies.push(IamPolicyRecord {
        resource,
        asset_type: None,
        project,
        ancestors: Vec::new(),
        bindings,
        origin: origin.to_string(),
    });
    Ok(())
}

fn read_asset_resource(
    inv: &mut GcpInventory,
    m: &Map<String, Value>,
    resource: &Map<String, Value>,
) -> Result<(), RecordError> {
    let asset_type = s(m, "assetType").unwrap_or_default();
    let name = s(m, "name").unwrap_or_default();
    let data = match resource.get("data") {
        Some(Value::Object(d)) => d,
        _ => return Err(bad("resource.data: expected an object")),
    };
    let mut ancestors = strings(m.get("ancestors"), "ancestors")?;
    let own = node_of(name);
    if ancestors.first().is_some_and(|a| *a == own) {
        ancestors.remove(0);
    }
    // The direct parent, for exports without `ancestors`.
    if ancestors.is_empty() {
        if let Some(p) = s(resource, "parent") {
            ancestors.push(node_of(p));
        } else if let Some(Value::Object(p)) = data.get("parent")
            && let (Some(t), Some(id)) = (s(p, "type"), s_or_num(p, "id"))
        {
            ancestors.push(format!("{}s/{id}", t.trim_end_matches('s')));
        }
    }
    match asset_type {
        "cloudresourcemanager.googleapis.com/Project" => {
            let number = s_or_num(data, "projectNumber").or_else(|| own.strip_prefix("projects/").map(str::to_string));
            let id = s(data, "projectId").map(str::to_string);
            if number.is_none() && id.is_none() {
                return Err(bad("project asset: neither projectNumber nor projectId"));
            }
            let node = number
                .as_ref()
                .map_or_else(|| format!("projects/{}", id.as_deref().unwrap_or_default()), |n| format!("projects/{n}"));
            if !ancestors.is_empty() {
                inv.hierarchy.push((node, ancestors));
            }
            inv.projects.push(ProjectRecord { number, id });
        }
        "cloudresourcemanager.googleapis.com/Folder" | "cloudresourcemanager.googleapis.com/Organization" => {
            if is_container_node(&own) && !ancestors.is_empty() {
                inv.hierarchy.push((own, ancestors));
            }
        }
        _ => inv.ignored += 1,
    }
    Ok(())
}

fn read_project_listing(inv: &mut GcpInventory, m: &Map<String, Value>) {
    let number = s_or_num(m, "projectNumber");
    let id = s(m, "projectId").map(str::to_string);
    if let (Some(n), Some(Value::Object(p))) = (&number, m.get("parent"))
        && let (Some(t), Some(pid)) = (s(p, "type"), s_or_num(p, "id"))
    {
        inv.hierarchy.push((format!("projects/{n}"), vec![format!("{}s/{pid}", t.trim_end_matches('s'))]));
    }
    inv.projects.push(ProjectRecord { number, id });
}

fn read_deny_policy(inv: &mut GcpInventory, m: &Map<String, Value>, origin: &str) -> Result<(), RecordError> {
    let name = s(m, "name").unwrap_or_default();
    let attachment = match s(m, "attachmentPoint") {
        Some(a) => node_of(&percent_encoding::percent_decode_str(a).decode_utf8_lossy()),
        None => attachment_from_name(name).ok_or_else(|| {
            bad(format!("deny policy {name:?}: no attachment point (expected name policies/<encoded attachment point>/denypolicies/<id>)"))
        })?,
    };
    if !is_container_node(&attachment) {
        return Err(bad(format!(
            "deny policy {name:?}: attachment point {attachment:?} is not an organization, folder or project"
        )));
    }
    let Some(Value::Array(rules)) = m.get("rules") else { return Err(bad("deny policy: rules: expected an array")) };
    let mut out = Vec::with_capacity(rules.len());
    for (i, r) in rules.iter().enumerate() {
        let Some(Value::Object(d)) = r.get("denyRule") else { continue };
        let what = |k: &str| format!("rules[{i}].denyRule.{k}");
        out.push(DenyRule {
            denied_principals: strings(d.get("deniedPrincipals"), &what("deniedPrincipals"))?,
            exception_principals: strings(d.get("exceptionPrincipals"), &what("exceptionPrincipals"))?,
            denied_permissions: strings(d.get("deniedPermissions"), &what("deniedPermissions"))?,
            exception_permissions: strings(d.get("exceptionPermissions"), &what("exceptionPermissions"))?,
            denial_condition: read_condition(d.get("denialCondition")),
        });
    }
    inv.deny_policies.push(DenyPolicy {
        name: name.to_string(),
        attachment_point: attachment,
        rules: out,
        origin: origin.to_string(),
    });
    Ok(())
}

/// `policies/cloudresourcemanager.googleapis.com%2Fprojects%2Fmy-project/denypolicies/x` → `projects/my-project`.
fn attachment_from_name(name: &str) -> Option<String> {
    let rest = name.strip_prefix("policies/")?;
    let (encoded, _) = rest.split_once("/denypolicies/")?;
    let decoded = percent_encoding::percent_decode_str(encoded).decode_utf8_lossy();
    Some(node_of(&decoded))
}

fn read_custom_role(inv: &mut GcpInventory, m: &Map<String, Value>) -> Result<(), RecordError> {
    let name = s(m, "name").ok_or_else(|| bad("role: missing name"))?;
    let permissions = strings(m.get("includedPermissions"), "includedPermissions")?;
    inv.custom_roles.push(CustomRole {
        name: name.to_string(),
        permissions,
        permissions_listed: m.contains_key("includedPermissions"),
        deleted: flag(m, "deleted"),
    });
    Ok(())
}

fn read_service_account(inv: &mut GcpInventory, m: &Map<String, Value>) {
    let email = s(m, "email").unwrap_or_default().to_ascii_lowercase();
    let project_id = s(m, "projectId")
        .map(str::to_string)
        .or_else(|| {
            s(m, "name").and_then(|n| n.strip_prefix("projects/")).and_then(|r| r.split('/').next()).map(str::to_string)
        })
        .filter(|p| p != "-");
    inv.service_accounts.push(ServiceAccount {
        email,
        unique_id: s_or_num(m, "uniqueId"),
        project_id,
        disabled: flag(m, "disabled"),
    });
}

fn read_key(inv: &mut GcpInventory, m: &Map<String, Value>) -> Result<(), RecordError> {
    let name = s(m, "name").ok_or_else(|| bad("service account key: missing name"))?;
    // projects/P/serviceAccounts/EMAIL/keys/KEYID
    let key_id =
        name.rsplit('/').next().filter(|k| !k.is_empty()).ok_or_else(|| bad("service account key: empty name"))?;
    let (project, service_account) =
        match name.strip_prefix("projects/").and_then(|r| r.split_once("/serviceAccounts/")) {
            Some((p, rest)) => {
                (Some(p.to_string()).filter(|p| p != "-"), rest.split('/').next().map(str::to_ascii_lowercase))
            }
            None => (None, None),
        };
    let key_type = match s(m, "keyType") {
        Some("USER_MANAGED") => KeyType::UserManaged,
        Some("SYSTEM_MANAGED") => KeyType::SystemManaged,
        _ => KeyType::Unknown,
    };
    let time = |k: &str| s(m, k).and_then(EventTime::parse_rfc3339);
    inv.keys.push(ServiceAccountKey {
        key_id: key_id.to_string(),
        service_account,
        project,
        key_type,
        valid_after: time("validAfterTime"),
        valid_before: time("validBeforeTime"),
        disabled: flag(m, "disabled"),
    });
    Ok(())
}

fn read_group(inv: &mut GcpInventory, m: &Map<String, Value>) -> Result<(), RecordError> {
    let group = s(m, "email").unwrap_or_default().to_ascii_lowercase();
    let Some(Value::Array(items)) = m.get("members") else {
        return Err(bad(format!("group {group}: members: expected an array")));
    };
    let mut members = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let member = match item {
            // `user:a@x` as IAM writes members, or a bare email (a user unless it is a service account's).
            Value::String(x) if x.contains(':') => crate::gcp::member::parse_member(x).key,
            Value::String(x) => typed_member(x, None),
            // Admin SDK: {"email", "type": "USER|GROUP|CUSTOMER"}; Cloud Identity: {"preferredMemberKey": {"id"}, "type"}.
            Value::Object(o) => {
                let email = s(o, "email")
                    .or_else(|| o.get("preferredMemberKey").and_then(Value::as_object).and_then(|k| s(k, "id")))
                    .or_else(|| o.get("memberKey").and_then(Value::as_object).and_then(|k| s(k, "id")));
                match email {
                    Some(e) => typed_member(e, s(o, "type")),
                    None => return Err(bad(format!("group {group}: members[{i}]: no email"))),
                }
            }
            _ => return Err(bad(format!("group {group}: members[{i}]: expected a string or an object"))),
        };
        members.push(member);
    }
    inv.groups.push(Group { email: group, members });
    Ok(())
}

fn typed_member(email: &str, kind: Option<&str>) -> String {
    let email = email.to_ascii_lowercase();
    match kind.map(str::to_ascii_uppercase).as_deref() {
        Some("GROUP") => format!("group:{email}"),
        Some("SERVICE_ACCOUNT") => format!("serviceAccount:{email}"),
        _ if crate::gcp::member::is_service_account_email(&email) => format!("serviceAccount:{email}"),
        _ => format!("user:{email}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_shapes_name_what_was_expected() {
        let e = parse_export("x.json", br#"{"foo": 1, "bar": 2}"#).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with(
                "x.json: record 0: not a GCP export record (keys: bar, foo); expected a Cloud Asset Inventory"
            ),
            "{msg}"
        );
        assert!(matches!(parse_export("y", b"hello"), Err(ExportError::Json { .. })));
        assert!(matches!(parse_export("z", b"[1,"), Err(ExportError::Json { .. })));
        assert!(matches!(parse_export("e", b"  \n"), Err(ExportError::Empty { .. })));
        let bare = parse_export("b", br#"{"bindings": [], "etag": "x"}"#).unwrap_err().to_string();
        assert!(bare.contains("wrap get-iam-policy output"), "{bare}");
    }

    #[test]
    fn one_bad_line_is_skipped_and_counted() {
        let text = concat!(
            r#"{"name":"//cloudresourcemanager.googleapis.com/projects/1","assetType":"cloudresourcemanager.googleapis.com/Project","iamPolicy":{"bindings":[{"role":"roles/viewer","members":["user:a@x.com"]}]},"ancestors":["projects/1","organizations/9"]}"#,
            "\n{not json\n",
            r#"{"name":"//cloudresourcemanager.googleapis.com/projects/2","iamPolicy":{"bindings":[{"members":["user:a@x.com"]}]}}"#,
            "\n"
        );
        let inv = parse_export("cai.jsonl", text.as_bytes()).unwrap();
        assert_eq!(inv.policies.len(), 1);
        assert_eq!(inv.skipped, 2);
        assert!(inv.problems[0].starts_with("cai.jsonl: record 1: not JSON"), "{:?}", inv.problems);
        assert_eq!(inv.problems[1], "cai.jsonl: record 2: bindings[0]: missing role");
        assert_eq!(inv.hierarchy, vec![("projects/1".to_string(), vec!["organizations/9".to_string()])]);
    }

    #[test]
    fn deny_policy_listed_without_rules_says_how_to_export_them() {
        let text = r#"[{"name":"policies/cloudresourcemanager.googleapis.com%2Fprojects%2Fp/denypolicies/d1","kind":"DenyPolicy","uid":"u","etag":"e"}]"#;
        let e = parse_export("deny-list.json", text.as_bytes()).unwrap_err().to_string();
        assert!(e.starts_with("deny-list.json: record 0: deny policy") && e.contains("gcloud iam policies get"), "{e}");
    }

    #[test]
    fn deny_policy_attachment_from_its_name() {
        let text = r#"[{"name":"policies/cloudresourcemanager.googleapis.com%2Forganizations%2F6/denypolicies/no-delete","kind":"DenyPolicy",
            "rules":[{"denyRule":{"deniedPrincipals":["principalSet://goog/public:all"],"deniedPermissions":["storage.googleapis.com/buckets.delete"]}}]}]"#;
        let inv = parse_export("deny.json", text.as_bytes()).unwrap();
        assert_eq!(inv.deny_policies[0].attachment_point, "organizations/6");
        assert_eq!(inv.deny_policies[0].rules[0].denied_permissions, ["storage.googleapis.com/buckets.delete"]);
    }

    #[test]
    fn list_responses_are_unwrapped_but_groups_are_records() {
        let inv = parse_export("sa.json", br#"{"accounts":[{"email":"A@p.iam.gserviceaccount.com","uniqueId":"1","projectId":"p"}],"nextPageToken":""}"#).unwrap();
        assert_eq!(inv.service_accounts[0].email, "a@p.iam.gserviceaccount.com");
        let inv = parse_export("g.json", br#"{"groups":[{"email":"Ops@x.com","members":["alice@x.com",{"email":"sub@x.com","type":"GROUP"},"ci@p.iam.gserviceaccount.com"]}]}"#).unwrap();
        assert_eq!(
            inv.groups[0].members,
            ["user:alice@x.com", "group:sub@x.com", "serviceAccount:ci@p.iam.gserviceaccount.com"]
        );
    }
}
