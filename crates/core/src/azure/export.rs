//! One Azure export file's bytes (JSON or JSON Lines, already decompressed) → typed documents.
//!
//! Recognized by content, not by name, one item at a time:
//!
//! | document | from | recognized by |
//! |---|---|---|
//! | role definitions | `az role definition list` (custom roles; built-ins are compiled in), ARM `roleDefinitions` list | `roleName` + `permissions` (top level or under `properties`), or `type: Microsoft.Authorization/roleDefinitions` |
//! | role assignments | `az role assignment list --all`, ARM list | `principalId` + `roleDefinitionId` (or `roleDefinitionName`), or `type: .../roleAssignments` |
//! | deny assignments | ARM `denyAssignments` list (`az rest`) | `permissions` + `principals`, or `type: .../denyAssignments` |
//! | users, groups, service principals | Microsoft Graph list responses (`{"@odata.context": "...#users", "value": [...]}`), `az ad ... list` | `@odata.type`, the list's `@odata.context`, else `userPrincipalName` / `servicePrincipalType`, `appId` / `members`, `securityEnabled`, `groupTypes` |
//! | management groups | `az account management-group show --expand --recurse` (ARM shape with `properties` too) | `children`, or an id under `/providers/Microsoft.Management/managementGroups/` |
//! | subscriptions | `az account list`, ARM subscription list | `tenantId` with `isDefault` / `cloudName` / `subscriptionId` / `state` |
//!
//! A file is one JSON value — an array of items, a list response (`{"value": [...]}`), a bundle object
//! holding the lists under `roleDefinitions`, `roleAssignments`, `denyAssignments`, `users`, `groups`,
//! `servicePrincipals`, `managementGroups`, `subscriptions`, or one item — or JSON Lines of those.
//! Nothing is kept as a JSON tree: each item is deserialized straight into its typed document.
//!
//! Errors: a file none of whose items is recognized is an [`ExportError`] naming what was expected (and
//! the keys it found, never values). Inside a recognized file an item that cannot be read (a role
//! assignment without `principalId`, a line that is not JSON) is skipped and counted, with the reason for
//! the first [`MAX_PROBLEMS`].

use grantwatch_types::EventTime;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

use super::lenient::{Flag, List, Str, StrList, lower, parse_time};

/// At most this many problem descriptions are kept per file (all are counted in `skipped`).
pub const MAX_PROBLEMS: usize = 50;

/// What an unrecognized file should have been; part of [`ExportError::Unrecognized`].
pub const EXPECTED: &str = "a JSON array or Graph/ARM list (`value`) of role definitions (roleName + permissions), \
role assignments (principalId + roleDefinitionId), deny assignments (permissions + principals), Graph users \
(userPrincipalName), groups (members), service principals (appId, servicePrincipalType), a management-group \
hierarchy (children), subscriptions (az account list: id + tenantId), or a bundle object with the keys \
roleDefinitions, roleAssignments, denyAssignments, users, groups, servicePrincipals, managementGroups, subscriptions";

/// Why a file is not an Azure export. The caller adds the file name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    #[error("empty file")]
    Empty,
    #[error("not JSON or JSON Lines: {0}")]
    Json(String),
    /// `at` says where (`item 0`, `line 3`, `top level`), `keys` which keys it had (sorted, at most 20).
    #[error("{at}: not a recognized Azure export (keys: {keys}); expected {EXPECTED}")]
    Unrecognized { at: String, keys: String },
}

/// The kinds of documents an export holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DocKind {
    RoleDefinitions,
    RoleAssignments,
    DenyAssignments,
    Users,
    Groups,
    ServicePrincipals,
    ManagementGroups,
    Subscriptions,
}

impl DocKind {
    const ALL: [DocKind; 8] = [
        DocKind::RoleDefinitions,
        DocKind::RoleAssignments,
        DocKind::DenyAssignments,
        DocKind::Users,
        DocKind::Groups,
        DocKind::ServicePrincipals,
        DocKind::ManagementGroups,
        DocKind::Subscriptions,
    ];

    /// The bundle key of this kind.
    pub fn key(self) -> &'static str {
        match self {
            DocKind::RoleDefinitions => "roleDefinitions",
            DocKind::RoleAssignments => "roleAssignments",
            DocKind::DenyAssignments => "denyAssignments",
            DocKind::Users => "users",
            DocKind::Groups => "groups",
            DocKind::ServicePrincipals => "servicePrincipals",
            DocKind::ManagementGroups => "managementGroups",
            DocKind::Subscriptions => "subscriptions",
        }
    }
}

/// One `permissions` block of a role definition or deny assignment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RolePermission {
    pub actions: Vec<String>,
    pub not_actions: Vec<String>,
    pub data_actions: Vec<String>,
    pub not_data_actions: Vec<String>,
    /// A condition on the block (some built-in roles constrain their `roleAssignments/write` this way).
    pub condition: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleDefinition {
    /// The role's GUID (`name`, the last segment of its id), lower-case.
    pub guid: String,
    /// `roleName` (`Owner`, `Storage Blob Data Reader`, ...).
    pub role_name: String,
    /// `roleType` is `CustomRole`.
    pub custom: bool,
    pub permissions: Vec<RolePermission>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleAssignment {
    /// The assignment's ARM id, when given.
    pub id: Option<String>,
    /// The principal's object id, lower-case.
    pub principal_id: String,
    /// `User`, `Group`, `ServicePrincipal`, `ForeignGroup`, ... as the export says.
    pub principal_type: Option<String>,
    /// `principalName` (az CLI adds it: the UPN or display name).
    pub principal_name: Option<String>,
    /// As written (`/subscriptions/{s}/providers/Microsoft.Authorization/roleDefinitions/{guid}`).
    pub role_definition_id: Option<String>,
    pub role_definition_name: Option<String>,
    /// The ARM scope, as written, without a trailing `/` (except the root scope `/`).
    pub scope: String,
    /// The ABAC condition, when set.
    pub condition: Option<String>,
}

/// A principal named by a deny assignment: `id` lower-case, `kind` its `type` (`User`, `Group`,
/// `ServicePrincipal`, `SystemDefined` for Everyone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalRef {
    pub id: String,
    pub kind: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenyAssignment {
    pub id: String,
    pub name: Option<String>,
    pub permissions: Vec<RolePermission>,
    pub principals: Vec<PrincipalRef>,
    pub exclude_principals: Vec<PrincipalRef>,
    pub scope: String,
    pub do_not_apply_to_child_scopes: bool,
    /// A condition on the deny assignment, when set.
    pub condition: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Object id, lower-case.
    pub id: String,
    pub user_principal_name: Option<String>,
    pub mail: Option<String>,
    pub other_mails: Vec<String>,
    pub display_name: Option<String>,
    pub account_enabled: Option<bool>,
    /// `Member` or `Guest`.
    pub user_type: Option<String>,
    pub created: Option<EventTime>,
    /// The latest of `signInActivity`'s interactive, non-interactive and successful sign-in times.
    pub last_sign_in: Option<EventTime>,
}

/// What a group member is, from its `@odata.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemberKind {
    User,
    Group,
    ServicePrincipal,
    /// Devices, org contacts, or no type given.
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Object id, lower-case.
    pub id: String,
    pub kind: MemberKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Object id, lower-case.
    pub id: String,
    pub display_name: Option<String>,
    pub created: Option<EventTime>,
    pub members: Vec<Member>,
    /// The export says the member list continues elsewhere (`members@odata.nextLink`), or it may have
    /// been cut (Graph's `$expand=members` returns at most 20).
    pub members_incomplete: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePrincipal {
    /// Object id, lower-case.
    pub id: String,
    pub app_id: Option<String>,
    pub display_name: Option<String>,
    /// `Application`, `ManagedIdentity`, `Legacy`, ...
    pub service_principal_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagementGroup {
    /// The group's name (last segment of its id), lower-case; the tenant root group's is the tenant id.
    pub name: String,
    pub display_name: Option<String>,
    /// The parent group's name, lower-case.
    pub parent: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Subscription id, lower-case.
    pub id: String,
    pub name: Option<String>,
    pub tenant_id: Option<String>,
    /// The management group holding it, lower-case (from the hierarchy export).
    pub parent: Option<String>,
}

/// The documents of one export file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AzureExport {
    pub role_definitions: Vec<RoleDefinition>,
    pub role_assignments: Vec<RoleAssignment>,
    pub deny_assignments: Vec<DenyAssignment>,
    pub users: Vec<User>,
    pub groups: Vec<Group>,
    pub service_principals: Vec<ServicePrincipal>,
    pub management_groups: Vec<ManagementGroup>,
    pub subscriptions: Vec<Subscription>,
    /// Items skipped because they could not be read.
    pub skipped: usize,
    /// Why (the first [`MAX_PROBLEMS`] skipped items), and notes on what may be missing (a Graph page
    /// that continues in another response, a member list that may be cut).
    pub problems: Vec<String>,
}

impl AzureExport {
    /// The kinds of documents this export holds, in [`DocKind`] order.
    pub fn kinds(&self) -> Vec<DocKind> {
        DocKind::ALL.into_iter().filter(|k| self.count(*k) > 0).collect()
    }

    /// How many documents of a kind it holds.
    pub fn count(&self, kind: DocKind) -> usize {
        match kind {
            DocKind::RoleDefinitions => self.role_definitions.len(),
            DocKind::RoleAssignments => self.role_assignments.len(),
            DocKind::DenyAssignments => self.deny_assignments.len(),
            DocKind::Users => self.users.len(),
            DocKind::Groups => self.groups.len(),
            DocKind::ServicePrincipals => self.service_principals.len(),
            DocKind::ManagementGroups => self.management_groups.len(),
            DocKind::Subscriptions => self.subscriptions.len(),
        }
    }

    fn problem(&mut self, text: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(text);
        }
    }

    fn skip(&mut self, at: &str, why: impl std::fmt::Display) {
        self.skipped += 1;
        self.problem(format!("{at}: skipped: {why}"));
    }
}

/// Parses one export file. See the module documentation for the shapes.
pub fn parse_export(bytes: &[u8]) -> Result<AzureExport, ExportError> {
    // `az` on Windows writes a byte-order mark.
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ExportError::Empty);
    }
    let mut out = AzureExport::default();
    match serde_json::from_slice::<&RawValue>(bytes) {
        Ok(top) => add_top(&mut out, top, "top level")?,
        Err(whole) => {
            // Several values: JSON Lines (or concatenated documents). A stream reads them all when every
            // one is well-formed; otherwise line by line, so one bad line costs one line.
            let stream: Result<Vec<&RawValue>, _> = serde_json::Deserializer::from_slice(bytes).into_iter().collect();
            // One value that is not an export costs that value; a file none of whose values is one is
            // an error (the first value's).
            let mut first_error = None;
            let mut each = |out: &mut AzureExport, v: &RawValue, at: &str| {
                if let Err(e) = add_top(out, v, at) {
                    match &e {
                        ExportError::Unrecognized { keys, .. } => {
                            out.skip(at, format_args!("not a recognized Azure export (keys: {keys})"))
                        }
                        other => out.skip(at, other),
                    }
                    first_error.get_or_insert(e);
                }
            };
            match stream {
                Ok(values) => {
                    for (i, v) in values.into_iter().enumerate() {
                        each(&mut out, v, &format!("value {i}"));
                    }
                }
                Err(_) => {
                    let mut any_json = false;
                    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
                        if line.iter().all(u8::is_ascii_whitespace) {
                            continue;
                        }
                        let at = format!("line {}", i + 1);
                        match serde_json::from_slice::<&RawValue>(line) {
                            Ok(v) => {
                                any_json = true;
                                each(&mut out, v, &at);
                            }
                            Err(e) => out.skip(&at, format_args!("not JSON: {e}")),
                        }
                    }
                    if !any_json {
                        return Err(ExportError::Json(whole.to_string()));
                    }
                }
            }
            if let Some(e) = first_error
                && out.kinds().is_empty()
            {
                return Err(e);
            }
        }
    }
    Ok(out)
}

#[derive(Deserialize)]
struct Top<'a> {
    #[serde(borrow, default)]
    value: Option<&'a RawValue>,
    #[serde(rename = "@odata.context", borrow, default)]
    context: Str<'a>,
    #[serde(rename = "@odata.nextLink", borrow, default)]
    odata_next: Str<'a>,
    #[serde(rename = "nextLink", borrow, default)]
    arm_next: Str<'a>,
    #[serde(rename = "roleDefinitions", borrow, default)]
    role_definitions: Option<&'a RawValue>,
    #[serde(rename = "roleAssignments", borrow, default)]
    role_assignments: Option<&'a RawValue>,
    #[serde(rename = "denyAssignments", borrow, default)]
    deny_assignments: Option<&'a RawValue>,
    #[serde(borrow, default)]
    users: Option<&'a RawValue>,
    #[serde(borrow, default)]
    groups: Option<&'a RawValue>,
    #[serde(rename = "servicePrincipals", borrow, default)]
    service_principals: Option<&'a RawValue>,
    #[serde(rename = "managementGroups", borrow, default)]
    management_groups: Option<&'a RawValue>,
    #[serde(borrow, default)]
    subscriptions: Option<&'a RawValue>,
}

fn first_byte(raw: &RawValue) -> Option<u8> {
    raw.get().bytes().find(|b| !b.is_ascii_whitespace())
}

/// Adds one top-level value (the whole file, or one line); an error when nothing in it is recognized.
fn add_top(out: &mut AzureExport, raw: &RawValue, at: &str) -> Result<(), ExportError> {
    match first_byte(raw) {
        Some(b'[') => add_list(out, raw, at, None, false),
        Some(b'{') => {
            let top: Top<'_> = serde_json::from_str(raw.get()).map_err(|e| ExportError::Json(format!("{at}: {e}")))?;
            if let Some(value) = top.value
                && first_byte(value) == Some(b'[')
            {
                if top.odata_next.get().is_some() || top.arm_next.get().is_some() {
                    out.problem(format!(
                        "{at}: the list continues on another page (nextLink): export every page (`az rest` pages, Graph `$top` + `@odata.nextLink`)"
                    ));
                }
                let hint = top.context.get().and_then(context_kind);
                return add_list(out, value, at, hint, false);
            }
            let bundle = [
                (DocKind::RoleDefinitions, top.role_definitions),
                (DocKind::RoleAssignments, top.role_assignments),
                (DocKind::DenyAssignments, top.deny_assignments),
                (DocKind::Users, top.users),
                (DocKind::Groups, top.groups),
                (DocKind::ServicePrincipals, top.service_principals),
                (DocKind::ManagementGroups, top.management_groups),
                (DocKind::Subscriptions, top.subscriptions),
            ];
            if bundle.iter().any(|(_, v)| v.is_some()) {
                for (kind, v) in bundle {
                    let Some(v) = v else { continue };
                    let at = format!("{at}: {}", kind.key());
                    match first_byte(v) {
                        Some(b'[') => add_list(out, v, &at, Some(kind), true)?,
                        // The hierarchy is one object (the root group); `null` is an empty list.
                        Some(b'{') => add_item(out, v, &at, Some(kind)),
                        Some(b'n') => {}
                        _ => out.skip(&at, "expected a list"),
                    }
                }
                return Ok(());
            }
            match classify(raw, None) {
                Some(kind) => {
                    add_item(out, raw, at, Some(kind));
                    Ok(())
                }
                None => Err(unrecognized(raw, at)),
            }
        }
        _ => Err(ExportError::Unrecognized { at: at.to_string(), keys: "(not an object or array)".to_string() }),
    }
}

/// A Graph list's `@odata.context` (`https://graph.microsoft.com/v1.0/$metadata#users(id,mail)`) → kind.
fn context_kind(context: &str) -> Option<DocKind> {
    let (_, entity) = context.rsplit_once('#')?;
    let entity = entity.to_ascii_lowercase();
    if entity.starts_with("users") {
        Some(DocKind::Users)
    } else if entity.starts_with("groups") {
        Some(DocKind::Groups)
    } else if entity.starts_with("serviceprincipals") {
        Some(DocKind::ServicePrincipals)
    } else {
        None
    }
}

/// Adds the items of a JSON array. `hint`: the kind the list holds, for certain when `forced` (a bundle
/// key), by default otherwise (a Graph context: items that say otherwise win); without it each item is
/// classified by its content.
fn add_list(
    out: &mut AzureExport,
    raw: &RawValue,
    at: &str,
    hint: Option<DocKind>,
    forced: bool,
) -> Result<(), ExportError> {
    let items: Vec<&RawValue> = serde_json::from_str(raw.get()).map_err(|e| ExportError::Json(format!("{at}: {e}")))?;
    if items.is_empty() {
        // An empty `az role assignment list` is `[]`: nothing to add, and nothing wrong.
        return Ok(());
    }
    let mut recognized = false;
    let mut first_unrecognized = None;
    for (i, item) in items.iter().enumerate() {
        let item_at = if at == "top level" { format!("item {i}") } else { format!("{at} item {i}") };
        let kind = if forced { hint } else { classify(item, hint) };
        match kind {
            Some(kind) => {
                recognized = true;
                add_item(out, item, &item_at, Some(kind));
            }
            None => {
                if first_unrecognized.is_none() {
                    first_unrecognized = Some(unrecognized(item, &item_at));
                }
                out.skip(&item_at, "not a recognized Azure export item");
            }
        }
    }
    match (recognized, first_unrecognized) {
        (false, Some(err)) => Err(err),
        _ => Ok(()),
    }
}

fn unrecognized(raw: &RawValue, at: &str) -> ExportError {
    let keys = match serde_json::from_str::<std::collections::BTreeMap<String, IgnoredAny>>(raw.get()) {
        Ok(map) if map.is_empty() => "none".to_string(),
        Ok(map) => {
            let mut keys: Vec<&str> = map.keys().map(String::as_str).take(20).collect();
            if map.len() > 20 {
                keys.push("...");
            }
            keys.join(", ")
        }
        Err(_) => "(not an object)".to_string(),
    };
    ExportError::Unrecognized { at: at.to_string(), keys }
}

/// Which keys an item has (presence only), to recognize it.
#[derive(Deserialize, Default)]
struct Probe<'a> {
    #[serde(rename = "@odata.type", borrow, default)]
    odata_type: Str<'a>,
    #[serde(rename = "type", borrow, default)]
    kind: Str<'a>,
    #[serde(borrow, default)]
    id: Str<'a>,
    #[serde(borrow, default)]
    properties: Option<&'a RawValue>,
    #[serde(rename = "roleName", default)]
    role_name: Option<IgnoredAny>,
    #[serde(default)]
    permissions: Option<IgnoredAny>,
    #[serde(rename = "principalId", default)]
    principal_id: Option<IgnoredAny>,
    #[serde(rename = "roleDefinitionId", default)]
    role_definition_id: Option<IgnoredAny>,
    #[serde(rename = "roleDefinitionName", default)]
    role_definition_name: Option<IgnoredAny>,
    #[serde(default)]
    principals: Option<IgnoredAny>,
    #[serde(rename = "userPrincipalName", default)]
    upn: Option<IgnoredAny>,
    #[serde(rename = "appId", default)]
    app_id: Option<IgnoredAny>,
    #[serde(rename = "servicePrincipalType", default)]
    sp_type: Option<IgnoredAny>,
    #[serde(default)]
    members: Option<IgnoredAny>,
    #[serde(rename = "securityEnabled", default)]
    security_enabled: Option<IgnoredAny>,
    #[serde(rename = "groupTypes", default)]
    group_types: Option<IgnoredAny>,
    #[serde(rename = "mailEnabled", default)]
    mail_enabled: Option<IgnoredAny>,
    #[serde(default)]
    children: Option<IgnoredAny>,
    #[serde(rename = "tenantId", default)]
    tenant_id: Option<IgnoredAny>,
    #[serde(rename = "isDefault", default)]
    is_default: Option<IgnoredAny>,
    #[serde(rename = "cloudName", default)]
    cloud_name: Option<IgnoredAny>,
    #[serde(rename = "subscriptionId", default)]
    subscription_id: Option<IgnoredAny>,
    #[serde(default)]
    state: Option<IgnoredAny>,
}

/// The keys of an ARM item's `properties` that tell its kind.
#[derive(Deserialize, Default)]
struct PropsProbe {
    #[serde(rename = "roleName", default)]
    role_name: Option<IgnoredAny>,
    #[serde(default)]
    permissions: Option<IgnoredAny>,
    #[serde(rename = "principalId", default)]
    principal_id: Option<IgnoredAny>,
    #[serde(rename = "roleDefinitionId", default)]
    role_definition_id: Option<IgnoredAny>,
    #[serde(default)]
    principals: Option<IgnoredAny>,
    #[serde(default)]
    children: Option<IgnoredAny>,
}

const MG_PREFIX: &str = "/providers/microsoft.management/managementgroups/";

fn classify(raw: &RawValue, hint: Option<DocKind>) -> Option<DocKind> {
    if first_byte(raw) != Some(b'{') {
        return None;
    }
    let p: Probe<'_> = serde_json::from_str(raw.get()).ok()?;
    let props: PropsProbe = p
        .properties
        .filter(|v| first_byte(v) == Some(b'{'))
        .and_then(|v| serde_json::from_str(v.get()).ok())
        .unwrap_or_default();
    let odata = p.odata_type.get().map(str::to_ascii_lowercase).unwrap_or_default();
    match odata.as_str() {
        "#microsoft.graph.user" => return Some(DocKind::Users),
        "#microsoft.graph.group" => return Some(DocKind::Groups),
        "#microsoft.graph.serviceprincipal" => return Some(DocKind::ServicePrincipals),
        _ => {}
    }
    let ty = p.kind.get().map(str::to_ascii_lowercase).unwrap_or_default();
    if ty.ends_with("microsoft.authorization/roledefinitions") {
        return Some(DocKind::RoleDefinitions);
    }
    if ty.ends_with("microsoft.authorization/roleassignments") {
        return Some(DocKind::RoleAssignments);
    }
    if ty.ends_with("microsoft.authorization/denyassignments") {
        return Some(DocKind::DenyAssignments);
    }
    let has = |a: bool, b: bool| a || b;
    if has(p.role_name.is_some(), props.role_name.is_some())
        && has(p.permissions.is_some(), props.permissions.is_some())
    {
        return Some(DocKind::RoleDefinitions);
    }
    if has(p.principal_id.is_some(), props.principal_id.is_some())
        && (has(p.role_definition_id.is_some(), props.role_definition_id.is_some()) || p.role_definition_name.is_some())
    {
        return Some(DocKind::RoleAssignments);
    }
    if has(p.permissions.is_some(), props.permissions.is_some())
        && has(p.principals.is_some(), props.principals.is_some())
    {
        return Some(DocKind::DenyAssignments);
    }
    let id = p.id.get().map(str::to_ascii_lowercase).unwrap_or_default();
    if p.children.is_some()
        || props.children.is_some()
        || ty.ends_with("microsoft.management/managementgroups")
        || id.starts_with(MG_PREFIX)
    {
        return Some(DocKind::ManagementGroups);
    }
    if let Some(hint) = hint {
        return Some(hint);
    }
    if p.upn.is_some() {
        return Some(DocKind::Users);
    }
    if p.sp_type.is_some() || p.app_id.is_some() {
        return Some(DocKind::ServicePrincipals);
    }
    if p.members.is_some() || p.security_enabled.is_some() || p.group_types.is_some() || p.mail_enabled.is_some() {
        return Some(DocKind::Groups);
    }
    if p.tenant_id.is_some()
        && (p.is_default.is_some()
            || p.cloud_name.is_some()
            || p.subscription_id.is_some()
            || p.state.is_some()
            || id.starts_with("/subscriptions/"))
    {
        return Some(DocKind::Subscriptions);
    }
    None
}

/// Adds one item of a known kind; an item that cannot be read is skipped with the reason.
fn add_item(out: &mut AzureExport, raw: &RawValue, at: &str, kind: Option<DocKind>) {
    let Some(kind) = kind.or_else(|| classify(raw, None)) else {
        out.skip(at, "not a recognized Azure export item");
        return;
    };
    let result = match kind {
        DocKind::RoleDefinitions => read_role_definition(raw).map(|d| out.role_definitions.push(d)),
        DocKind::RoleAssignments => read_role_assignment(raw).map(|d| out.role_assignments.push(d)),
        DocKind::DenyAssignments => read_deny_assignment(raw).map(|d| out.deny_assignments.push(d)),
        DocKind::Users => read_user(raw).map(|d| out.users.push(d)),
        DocKind::Groups => read_group(raw).map(|g| {
            if g.members_incomplete {
                out.problem(format!(
                    "{at}: group {} lists {} members and may have more (Graph's $expand=members returns at most 20; \
                     export /groups/{{id}}/members for every group)",
                    g.id,
                    g.members.len()
                ));
            }
            out.groups.push(g);
        }),
        DocKind::ServicePrincipals => read_service_principal(raw).map(|d| out.service_principals.push(d)),
        DocKind::ManagementGroups => read_hierarchy(raw, out),
        DocKind::Subscriptions => read_subscription(raw).map(|d| out.subscriptions.push(d)),
    };
    if let Err(why) = result {
        out.skip(at, format_args!("{}: {why}", describe(kind)));
    }
}

fn describe(kind: DocKind) -> &'static str {
    match kind {
        DocKind::RoleDefinitions => "role definition",
        DocKind::RoleAssignments => "role assignment",
        DocKind::DenyAssignments => "deny assignment",
        DocKind::Users => "user",
        DocKind::Groups => "group",
        DocKind::ServicePrincipals => "service principal",
        DocKind::ManagementGroups => "management group",
        DocKind::Subscriptions => "subscription",
    }
}

fn de<'a, T: Deserialize<'a>>(raw: &'a RawValue) -> Result<T, String> {
    if first_byte(raw) != Some(b'{') {
        return Err("not a JSON object".to_string());
    }
    serde_json::from_str(raw.get()).map_err(|e| e.to_string())
}

/// An ARM item's `properties`, when it is an object.
fn props<'a, T: Deserialize<'a> + Default>(raw: Option<&'a RawValue>) -> Result<T, String> {
    match raw {
        Some(v) if first_byte(v) == Some(b'{') => serde_json::from_str(v.get()).map_err(|e| format!("properties: {e}")),
        _ => Ok(T::default()),
    }
}

/// The last `/`-separated segment of an id (`.../roleDefinitions/{guid}` → `guid`).
pub(crate) fn last_segment(id: &str) -> &str {
    id.trim_end_matches('/').rsplit('/').next().unwrap_or(id)
}

/// An ARM scope as compared: trimmed, no trailing `/` (except the root `/`).
pub(crate) fn clean_scope(scope: &str) -> String {
    let s = scope.trim();
    let t = s.trim_end_matches('/');
    if t.is_empty() && s.starts_with('/') { "/".to_string() } else { t.to_string() }
}

/// The scope of an ARM extension resource from its id: `{scope}/providers/Microsoft.Authorization/{kind}/{guid}`.
fn scope_from_id(id: &str, kind: &str) -> Option<String> {
    let lower = id.to_ascii_lowercase();
    let marker = format!("/providers/microsoft.authorization/{kind}/");
    let at = lower.rfind(&marker)?;
    let scope = &id[..at];
    Some(if scope.is_empty() { "/".to_string() } else { clean_scope(scope) })
}

#[derive(Deserialize, Default)]
struct RawPerm<'a> {
    #[serde(default)]
    actions: StrList,
    #[serde(rename = "notActions", default)]
    not_actions: StrList,
    #[serde(rename = "dataActions", default)]
    data_actions: StrList,
    #[serde(rename = "notDataActions", default)]
    not_data_actions: StrList,
    #[serde(borrow, default)]
    condition: Str<'a>,
}

impl RawPerm<'_> {
    fn into_permission(self) -> RolePermission {
        RolePermission {
            actions: self.actions.0,
            not_actions: self.not_actions.0,
            data_actions: self.data_actions.0,
            not_data_actions: self.not_data_actions.0,
            condition: self.condition.owned(),
        }
    }
}

#[derive(Deserialize, Default)]
struct RawRoleDef<'a> {
    #[serde(borrow, default)]
    id: Str<'a>,
    #[serde(borrow, default)]
    name: Str<'a>,
    #[serde(rename = "roleName", borrow, default)]
    role_name: Str<'a>,
    #[serde(rename = "roleType", borrow, default)]
    role_type: Str<'a>,
    #[serde(borrow, default)]
    permissions: List<RawPerm<'a>>,
    #[serde(borrow, default)]
    properties: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
struct RawRoleDefProps<'a> {
    #[serde(rename = "roleName", borrow, default)]
    role_name: Str<'a>,
    /// ARM spells the role type `type` inside `properties`.
    #[serde(rename = "type", borrow, default)]
    role_type: Str<'a>,
    #[serde(borrow, default)]
    permissions: List<RawPerm<'a>>,
}

fn read_role_definition(raw: &RawValue) -> Result<RoleDefinition, String> {
    let r: RawRoleDef<'_> = de(raw)?;
    let p: RawRoleDefProps<'_> = props(r.properties)?;
    let guid = r.name.get().or(r.id.get().map(last_segment)).ok_or("no name (GUID) or id")?;
    let role_name = r.role_name.get().or(p.role_name.get()).ok_or("no roleName")?;
    let custom = r.role_type.get().or(p.role_type.get()).is_some_and(|t| t.eq_ignore_ascii_case("CustomRole"));
    let perms = if r.permissions.0.is_empty() { p.permissions.0 } else { r.permissions.0 };
    Ok(RoleDefinition {
        guid: lower(guid),
        role_name: role_name.to_string(),
        custom,
        permissions: perms.into_iter().map(RawPerm::into_permission).collect(),
    })
}

#[derive(Deserialize, Default)]
struct RawAssignment<'a> {
    #[serde(borrow, default)]
    id: Str<'a>,
    #[serde(rename = "principalId", borrow, default)]
    principal_id: Str<'a>,
    #[serde(rename = "principalType", borrow, default)]
    principal_type: Str<'a>,
    #[serde(rename = "principalName", borrow, default)]
    principal_name: Str<'a>,
    #[serde(rename = "roleDefinitionId", borrow, default)]
    role_definition_id: Str<'a>,
    #[serde(rename = "roleDefinitionName", borrow, default)]
    role_definition_name: Str<'a>,
    #[serde(borrow, default)]
    scope: Str<'a>,
    #[serde(borrow, default)]
    condition: Str<'a>,
    #[serde(borrow, default)]
    properties: Option<&'a RawValue>,
}

fn read_role_assignment(raw: &RawValue) -> Result<RoleAssignment, String> {
    let r: RawAssignment<'_> = de(raw)?;
    let p: RawAssignment<'_> = props(r.properties)?;
    let principal_id = r.principal_id.get().or(p.principal_id.get()).ok_or("no principalId")?;
    let role_definition_id = r.role_definition_id.owned().or(p.role_definition_id.owned());
    let role_definition_name = r.role_definition_name.owned().or(p.role_definition_name.owned());
    if role_definition_id.is_none() && role_definition_name.is_none() {
        return Err("no roleDefinitionId or roleDefinitionName".to_string());
    }
    let id = r.id.owned();
    let scope = r
        .scope
        .get()
        .or(p.scope.get())
        .map(clean_scope)
        .or_else(|| id.as_deref().and_then(|id| scope_from_id(id, "roleassignments")))
        .ok_or("no scope")?;
    Ok(RoleAssignment {
        id,
        principal_id: lower(principal_id),
        principal_type: r.principal_type.owned().or(p.principal_type.owned()),
        principal_name: r.principal_name.owned().or(p.principal_name.owned()),
        role_definition_id,
        role_definition_name,
        scope,
        condition: r.condition.owned().or(p.condition.owned()),
    })
}

#[derive(Deserialize, Default)]
struct RawPrincipal<'a> {
    #[serde(borrow, default)]
    id: Str<'a>,
    #[serde(rename = "type", borrow, default)]
    kind: Str<'a>,
}

#[derive(Deserialize, Default)]
struct RawDeny<'a> {
    #[serde(borrow, default)]
    id: Str<'a>,
    #[serde(borrow, default)]
    name: Str<'a>,
    #[serde(rename = "denyAssignmentName", borrow, default)]
    deny_assignment_name: Str<'a>,
    #[serde(borrow, default)]
    permissions: Option<List<RawPerm<'a>>>,
    #[serde(borrow, default)]
    principals: Option<List<RawPrincipal<'a>>>,
    #[serde(rename = "excludePrincipals", borrow, default)]
    exclude_principals: List<RawPrincipal<'a>>,
    #[serde(borrow, default)]
    scope: Str<'a>,
    #[serde(rename = "doNotApplyToChildScopes", default)]
    do_not_apply_to_child_scopes: Flag,
    #[serde(borrow, default)]
    condition: Str<'a>,
    #[serde(borrow, default)]
    properties: Option<&'a RawValue>,
}

fn principal_refs(list: Vec<RawPrincipal<'_>>) -> Vec<PrincipalRef> {
    list.into_iter().filter_map(|p| Some(PrincipalRef { id: lower(p.id.get()?), kind: p.kind.owned() })).collect()
}

fn read_deny_assignment(raw: &RawValue) -> Result<DenyAssignment, String> {
    let r: RawDeny<'_> = de(raw)?;
    let p: RawDeny<'_> = props(r.properties)?;
    let id = r.id.owned().or(p.id.owned()).or(r.name.owned()).ok_or("no id")?;
    let scope = r
        .scope
        .get()
        .or(p.scope.get())
        .map(clean_scope)
        .or_else(|| scope_from_id(&id, "denyassignments"))
        .ok_or("no scope")?;
    let permissions = r.permissions.or(p.permissions).ok_or("no permissions")?.0;
    let principals = r.principals.or(p.principals).ok_or("no principals")?.0;
    let exclude = if r.exclude_principals.0.is_empty() { p.exclude_principals.0 } else { r.exclude_principals.0 };
    Ok(DenyAssignment {
        id,
        name: r.deny_assignment_name.owned().or(p.deny_assignment_name.owned()).or(r.name.owned()),
        permissions: permissions.into_iter().map(RawPerm::into_permission).collect(),
        principals: principal_refs(principals),
        exclude_principals: principal_refs(exclude),
        scope,
        do_not_apply_to_child_scopes: r
            .do_not_apply_to_child_scopes
            .0
            .or(p.do_not_apply_to_child_scopes.0)
            .unwrap_or(false),
        condition: r.condition.owned().or(p.condition.owned()),
    })
}

#[derive(Deserialize, Default)]
struct RawSignInActivity<'a> {
    #[serde(rename = "lastSignInDateTime", borrow, default)]
    last: Str<'a>,
    #[serde(rename = "lastNonInteractiveSignInDateTime", borrow, default)]
    last_non_interactive: Str<'a>,
    #[serde(rename = "lastSuccessfulSignInDateTime", borrow, default)]
    last_successful: Str<'a>,
}

#[derive(Deserialize)]
struct RawUser<'a> {
    #[serde(borrow, default)]
    id: Str<'a>,
    #[serde(rename = "userPrincipalName", borrow, default)]
    upn: Str<'a>,
    #[serde(borrow, default)]
    mail: Str<'a>,
    #[serde(rename = "otherMails", default)]
    other_mails: StrList,
    #[serde(rename = "displayName", borrow, default)]
    display_name: Str<'a>,
    #[serde(rename = "accountEnabled", default)]
    account_enabled: Flag,
    #[serde(rename = "userType", borrow, default)]
    user_type: Str<'a>,
    #[serde(rename = "createdDateTime", borrow, default)]
    created: Str<'a>,
    #[serde(rename = "signInActivity", borrow, default)]
    sign_in_activity: Option<&'a RawValue>,
}

fn read_user(raw: &RawValue) -> Result<User, String> {
    let u: RawUser<'_> = de(raw)?;
    let id = u.id.get().ok_or("no id")?;
    let activity: RawSignInActivity<'_> = props(u.sign_in_activity).unwrap_or_default();
    let last_sign_in = [activity.last.get(), activity.last_non_interactive.get(), activity.last_successful.get()]
        .into_iter()
        .flatten()
        .filter_map(parse_time)
        .max();
    Ok(User {
        id: lower(id),
        user_principal_name: u.upn.owned(),
        mail: u.mail.owned(),
        other_mails: u.other_mails.0,
        display_name: u.display_name.owned(),
        account_enabled: u.account_enabled.0,
        user_type: u.user_type.owned(),
        created: u.created.get().and_then(parse_time),
        last_sign_in,
    })
}

#[derive(Deserialize)]
struct RawMember<'a> {
    #[serde(rename = "@odata.type", borrow, default)]
    odata_type: Str<'a>,
    #[serde(borrow, default)]
    id: Str<'a>,
}

#[derive(Deserialize)]
struct RawGroup<'a> {
    #[serde(borrow, default)]
    id: Str<'a>,
    #[serde(rename = "displayName", borrow, default)]
    display_name: Str<'a>,
    #[serde(rename = "createdDateTime", borrow, default)]
    created: Str<'a>,
    #[serde(borrow, default)]
    members: Option<List<RawMember<'a>>>,
    #[serde(rename = "members@odata.nextLink", borrow, default)]
    members_next: Str<'a>,
}

/// Graph's `$expand=members` returns at most this many members.
const GRAPH_EXPAND_LIMIT: usize = 20;

fn read_group(raw: &RawValue) -> Result<Group, String> {
    let g: RawGroup<'_> = de(raw)?;
    let id = g.id.get().ok_or("no id")?;
    let listed = g.members.map(|m| m.0).unwrap_or_default();
    let members: Vec<Member> = listed
        .into_iter()
        .filter_map(|m| {
            let kind = match m.odata_type.get().map(str::to_ascii_lowercase).as_deref() {
                Some("#microsoft.graph.user") => MemberKind::User,
                Some("#microsoft.graph.group") => MemberKind::Group,
                Some("#microsoft.graph.serviceprincipal") => MemberKind::ServicePrincipal,
                _ => MemberKind::Other,
            };
            Some(Member { id: lower(m.id.get()?), kind })
        })
        .collect();
    Ok(Group {
        id: lower(id),
        display_name: g.display_name.owned(),
        created: g.created.get().and_then(parse_time),
        members_incomplete: g.members_next.get().is_some() || members.len() == GRAPH_EXPAND_LIMIT,
        members,
    })
}

#[derive(Deserialize)]
struct RawServicePrincipal<'a> {
    #[serde(borrow, default)]
    id: Str<'a>,
    #[serde(rename = "appId", borrow, default)]
    app_id: Str<'a>,
    #[serde(rename = "displayName", borrow, default)]
    display_name: Str<'a>,
    #[serde(rename = "servicePrincipalType", borrow, default)]
    sp_type: Str<'a>,
}

fn read_service_principal(raw: &RawValue) -> Result<ServicePrincipal, String> {
    let s: RawServicePrincipal<'_> = de(raw)?;
    let id = s.id.get().ok_or("no id")?;
    Ok(ServicePrincipal {
        id: lower(id),
        app_id: s.app_id.get().map(lower),
        display_name: s.display_name.owned(),
        service_principal_type: s.sp_type.owned(),
    })
}

#[derive(Deserialize, Default)]
struct RawParent<'a> {
    #[serde(borrow, default)]
    id: Str<'a>,
    #[serde(borrow, default)]
    name: Str<'a>,
}

#[derive(Deserialize, Default)]
struct RawDetails<'a> {
    #[serde(borrow, default)]
    parent: Option<RawParent<'a>>,
}

/// A node of the management-group tree: a group (with children) or a subscription. `az` flattens
/// `properties` into the node; ARM keeps them under `properties`.
#[derive(Deserialize, Default)]
struct RawMgNode<'a> {
    #[serde(borrow, default)]
    id: Str<'a>,
    #[serde(borrow, default)]
    name: Str<'a>,
    #[serde(rename = "type", borrow, default)]
    kind: Str<'a>,
    #[serde(rename = "displayName", borrow, default)]
    display_name: Str<'a>,
    #[serde(rename = "tenantId", borrow, default)]
    tenant_id: Str<'a>,
    #[serde(borrow, default)]
    children: Option<List<RawMgNode<'a>>>,
    #[serde(borrow, default)]
    details: Option<RawDetails<'a>>,
    #[serde(borrow, default)]
    properties: Option<Box<RawMgNode<'a>>>,
}

fn read_hierarchy(raw: &RawValue, out: &mut AzureExport) -> Result<(), String> {
    let root: RawMgNode<'_> = de(raw)?;
    // Explicit stack: the tree is as deep as the input (serde bounds the nesting it parses).
    let mut stack: Vec<(RawMgNode<'_>, Option<String>)> = vec![(root, None)];
    let mut groups = 0usize;
    while let Some((mut node, parent)) = stack.pop() {
        let p = node.properties.take().map(|b| *b).unwrap_or_default();
        let id = node.id.get().map(str::to_string);
        let lower_id = id.as_deref().map(str::to_ascii_lowercase).unwrap_or_default();
        let ty = node.kind.get().map(str::to_ascii_lowercase).unwrap_or_default();
        let name = node.name.get().or(id.as_deref().map(last_segment)).map(lower);
        let is_sub = ty.ends_with("/subscriptions") || lower_id.starts_with("/subscriptions/");
        let Some(name) = name else {
            out.skip("management-group tree", "a node without name or id");
            continue;
        };
        let details_parent = |d: &Option<RawDetails<'_>>| {
            d.as_ref()
                .and_then(|d| d.parent.as_ref())
                .and_then(|p| p.name.get().or(p.id.get().map(last_segment)))
                .map(lower)
        };
        let parent = parent.or_else(|| details_parent(&node.details)).or_else(|| details_parent(&p.details));
        if is_sub {
            out.subscriptions.push(Subscription {
                id: name,
                name: node.display_name.owned().or(p.display_name.owned()),
                tenant_id: node.tenant_id.get().or(p.tenant_id.get()).map(lower),
                parent,
            });
            continue;
        }
        groups += 1;
        out.management_groups.push(ManagementGroup {
            name: name.clone(),
            display_name: node.display_name.owned().or(p.display_name.owned()),
            parent,
        });
        let children = node.children.or(p.children).map(|c| c.0).unwrap_or_default();
        for child in children {
            stack.push((child, Some(name.clone())));
        }
    }
    if groups == 0 && out.subscriptions.is_empty() {
        return Err("no management group in the tree".to_string());
    }
    Ok(())
}

#[derive(Deserialize)]
struct RawSubscription<'a> {
    #[serde(borrow, default)]
    id: Str<'a>,
    #[serde(rename = "subscriptionId", borrow, default)]
    subscription_id: Str<'a>,
    #[serde(borrow, default)]
    name: Str<'a>,
    #[serde(rename = "displayName", borrow, default)]
    display_name: Str<'a>,
    #[serde(rename = "tenantId", borrow, default)]
    tenant_id: Str<'a>,
    #[serde(rename = "homeTenantId", borrow, default)]
    home_tenant_id: Str<'a>,
}

fn read_subscription(raw: &RawValue) -> Result<Subscription, String> {
    let s: RawSubscription<'_> = de(raw)?;
    let id = s.subscription_id.get().or(s.id.get().map(last_segment)).ok_or("no id")?;
    Ok(Subscription {
        id: lower(id),
        name: s.display_name.owned().or(s.name.owned()),
        tenant_id: s.tenant_id.get().or(s.home_tenant_id.get()).map(lower),
        parent: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> AzureExport {
        parse_export(s.as_bytes()).unwrap()
    }

    #[test]
    fn az_cli_lists_by_content() {
        let ra = parse(include_str!("testdata/role_assignments.json"));
        assert!(ra.role_assignments.len() >= 5, "{ra:?}");
        assert_eq!(ra.kinds(), [DocKind::RoleAssignments]);
        let a = &ra.role_assignments[0];
        assert_eq!(a.principal_id, "1a1a1a1a-0000-4000-8000-000000000001");
        assert_eq!(a.role_definition_name.as_deref(), Some("Owner"));
        assert_eq!(a.scope, "/subscriptions/11111111-1111-4111-8111-111111111111");
        let rd = parse(include_str!("testdata/custom_roles.json"));
        assert_eq!(rd.kinds(), [DocKind::RoleDefinitions]);
        assert!(rd.role_definitions[0].custom);
        assert_eq!(rd.role_definitions[0].guid, "c0ffee00-0000-4000-8000-00000000c001");
    }

    #[test]
    fn arm_and_graph_lists() {
        let deny = parse(include_str!("testdata/deny_assignments.json"));
        assert_eq!(deny.kinds(), [DocKind::DenyAssignments]);
        let d = &deny.deny_assignments[0];
        assert_eq!(d.scope, "/subscriptions/11111111-1111-4111-8111-111111111111");
        assert_eq!(d.principals[0].id, "00000000-0000-0000-0000-000000000000");
        assert_eq!(d.exclude_principals.len(), 1);
        let users = parse(include_str!("testdata/users.json"));
        assert_eq!(users.kinds(), [DocKind::Users]);
        let alice = &users.users[0];
        assert_eq!(alice.user_principal_name.as_deref(), Some("alice@contoso.com"));
        assert_eq!(alice.last_sign_in, parse_time("2024-05-03T10:00:00Z"));
        let groups = parse(include_str!("testdata/groups.json"));
        assert_eq!(groups.kinds(), [DocKind::Groups]);
        assert_eq!(groups.groups[0].members[0].kind, MemberKind::User);
        let sps = parse(include_str!("testdata/service_principals.json"));
        assert_eq!(sps.kinds(), [DocKind::ServicePrincipals]);
    }

    #[test]
    fn hierarchy_and_subscriptions() {
        let mg = parse(include_str!("testdata/management_groups.json"));
        assert_eq!(mg.kinds(), [DocKind::ManagementGroups, DocKind::Subscriptions]);
        let platform = mg.management_groups.iter().find(|g| g.name == "platform").unwrap();
        assert_eq!(platform.parent.as_deref(), Some("72f988bf-86f1-41af-91ab-2d7cd011db47"));
        let sub = mg.subscriptions.iter().find(|s| s.id == "22222222-2222-4222-8222-222222222222").unwrap();
        assert_eq!(sub.parent.as_deref(), Some("platform"));
        let subs = parse(include_str!("testdata/subscriptions.json"));
        assert_eq!(subs.kinds(), [DocKind::Subscriptions]);
        assert_eq!(subs.subscriptions[0].tenant_id.as_deref(), Some("72f988bf-86f1-41af-91ab-2d7cd011db47"));
    }

    #[test]
    fn bundle_and_json_lines() {
        let bundle = r#"{"roleAssignments":[{"principalId":"AAAA","roleDefinitionName":"Reader","scope":"/"}],
            "users":[{"id":"AAAA","userPrincipalName":"a@x.com"}],"managementGroups":null,"subscriptions":[{"id":"S1","tenantId":"T"}]}"#;
        let b = parse(bundle);
        assert_eq!(b.kinds(), [DocKind::RoleAssignments, DocKind::Users, DocKind::Subscriptions]);
        assert_eq!(b.users[0].id, "aaaa");
        let lines = "{\"principalId\":\"p1\",\"roleDefinitionId\":\"/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7\",\"scope\":\"/subscriptions/s/\"}\n\
                     not json\n\
                     {\"id\":\"u1\",\"userPrincipalName\":\"u@x.com\"}\n";
        let l = parse(lines);
        assert_eq!(l.role_assignments.len(), 1);
        assert_eq!(l.role_assignments[0].scope, "/subscriptions/s");
        assert_eq!(l.users.len(), 1);
        assert_eq!(l.skipped, 1);
        assert!(l.problems[0].starts_with("line 2: skipped: not JSON"), "{:?}", l.problems);
        // A line of something else costs that line; a file of nothing else is an error.
        let other = "{\"id\":\"u1\",\"userPrincipalName\":\"u@x.com\"}\n{\"eventName\":\"x\"}\n";
        let o = parse(other);
        assert_eq!((o.users.len(), o.skipped), (1, 1));
        assert_eq!(o.problems, ["value 1: skipped: not a recognized Azure export (keys: eventName)"]);
        let err = parse_export(b"{\"eventName\":\"x\"}\n{\"eventName\":\"y\"}\n").unwrap_err();
        assert!(err.to_string().starts_with("value 0: not a recognized Azure export (keys: eventName)"), "{err}");
    }

    #[test]
    fn bad_items_are_skipped_and_counted_unknown_files_are_errors() {
        let mixed = r#"[{"principalId":"p","roleDefinitionName":"Reader","scope":"/"},
                        {"principalId":"p2","roleDefinitionId":"/x"},
                        {"favourite":"colour"}]"#;
        let m = parse(mixed);
        assert_eq!(m.role_assignments.len(), 1);
        assert_eq!(m.skipped, 2);
        assert!(m.problems[0].contains("item 1") && m.problems[0].contains("no scope"), "{:?}", m.problems);
        assert!(m.problems[1].contains("item 2: skipped: not a recognized"), "{:?}", m.problems);

        let err = parse_export(br#"[{"favourite":"colour","password":"hunter2"}]"#).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("item 0: not a recognized Azure export (keys: favourite, password)"), "{text}");
        assert!(text.contains("role assignments (principalId + roleDefinitionId)"), "{text}");
        assert!(!text.contains("hunter2"), "values never shown: {text}");
        assert_eq!(parse_export(b"  \n").unwrap_err(), ExportError::Empty);
        assert!(matches!(parse_export(b"{\"value\": [").unwrap_err(), ExportError::Json(_)));
        assert!(matches!(parse_export(b"42").unwrap_err(), ExportError::Unrecognized { .. }));
        assert_eq!(parse("[]"), AzureExport::default());
    }

    #[test]
    fn cut_or_corrupted_files_never_panic() {
        for text in [
            include_str!("testdata/role_assignments.json"),
            include_str!("testdata/deny_assignments.json"),
            include_str!("testdata/groups.json"),
            include_str!("testdata/management_groups.json"),
        ] {
            let bytes = text.as_bytes();
            for cut in (0..bytes.len()).step_by(13) {
                let _ = parse_export(&bytes[..cut]);
                let mut flipped = bytes.to_vec();
                flipped[cut] = b"{}[],:\"0"[cut % 8];
                let _ = parse_export(&flipped);
            }
        }
    }

    #[test]
    fn arm_shapes_with_properties() {
        let ra = r#"{"value":[{"id":"/subscriptions/S/resourceGroups/rg/providers/Microsoft.Authorization/roleAssignments/g1",
            "type":"Microsoft.Authorization/roleAssignments","name":"g1",
            "properties":{"roleDefinitionId":"/subscriptions/S/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7",
            "principalId":"P","principalType":"ServicePrincipal"}}]}"#;
        let a = &parse(ra).role_assignments[0];
        assert_eq!(a.scope, "/subscriptions/S/resourceGroups/rg", "scope from the id when properties have none");
        assert_eq!(a.principal_type.as_deref(), Some("ServicePrincipal"));
        let rd = r#"{"value":[{"id":"/subscriptions/S/providers/Microsoft.Authorization/roleDefinitions/ABC","name":"ABC",
            "type":"Microsoft.Authorization/roleDefinitions","properties":{"roleName":"R","type":"CustomRole",
            "permissions":[{"actions":["Microsoft.Storage/*/read"],"notActions":[]}]}}]}"#;
        let d = &parse(rd).role_definitions[0];
        assert_eq!((d.guid.as_str(), d.custom, d.permissions[0].actions.len()), ("abc", true, 1));
    }
}
