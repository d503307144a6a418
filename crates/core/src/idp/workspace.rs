//! Google Workspace and Cloud Identity: Directory API exports (users, groups, members) and Admin SDK
//! Reports activities.
//!
//! **Directory.** [`parse_export`] recognizes, by content:
//!
//! | shape | from |
//! |---|---|
//! | `{"users": [...]}` (`kind: admin#directory#users`), or an array / JSON Lines of users (`primaryEmail`) | `users.list` |
//! | `{"groups": [...]}` (`kind: admin#directory#groups`) | `groups.list` |
//! | `{"group": {group} \| "groupKey"\|"groupEmail"\|"groupId": "...", "members": [...]}` | `members.list`, wrapped with its group (the API's response alone does not say which group it lists) |
//! | `{"items": [...]}` (`kind: admin#reports#activities`), or an array / JSON Lines of activities | `activities.list` |
//!
//! A bare `{"kind": "admin#directory#members", "members": [...]}` is refused with an error that says
//! to wrap it: members without their group would link nobody.
//!
//! **Identity uids** are `workspace:{customerId}/users/{id}`; the Directory API's user `id` is the
//! Reports API's `actor.profileId`.
//!
//! **Activities.** Each (activity, `events[i]`) becomes one [`Event`] ([`normalize_activity`]): `uid`
//! = `{id.uniqueQualifier}:{i}`, `account_uid` = `id.customerId`, actor
//! `workspace:{customerId}/users/{profileId}` named by its email (an API key caller,
//! `callerType: KEY`, is a service `workspace:{customerId}/keys/{key}`; an actor with an email but no
//! profile id, e.g. a failed login of an unknown address, is external and keyed by the email),
//! `api.service` = `id.applicationName` (`admin`, `login`, `token`, ...), `api.operation` = the
//! event's `name` (`ASSIGN_ROLE`, `2sv_disable`, `login_failure`, ...), mapping `NoPermission`,
//! status `Failure` for failure events (`login_failure`, any `*_failure`, a `login_challenge` whose
//! `login_challenge_status` is `Challenge Failed`), resources = the parameters naming an address, a
//! role or a document, and `additional` = `{type, parameters}` (secret-looking parameters
//! redacted, bounded).

use std::collections::BTreeMap;

use grantwatch_types::{ActionMapping, Actor, Api, Cloud, Event, EventTime, IdentityKind, Status};
use serde_json::Value;

use super::{
    Document, EventError, ExportError, GLOBAL_REGION, RecordError, bool_at, bounded_detail, canonical_email, cut,
    read_document, shape_of, str_at, time_at,
};

/// The `account` and uid customer when a record names no customer id.
pub const DEFAULT_CUSTOMER: &str = "workspace";

/// A Workspace user (`users.list`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceUser {
    pub id: String,
    pub primary_email: String,
    /// Every other address: `emails[].address`, `aliases`, `nonEditableAliases`; canonical, sorted.
    pub other_emails: Vec<String>,
    pub full_name: Option<String>,
    pub suspended: bool,
    pub archived: bool,
    pub is_admin: bool,
    pub is_delegated_admin: bool,
    pub enrolled_2sv: Option<bool>,
    pub enforced_2sv: Option<bool>,
    /// `lastLoginTime`; the API's `1970-01-01T00:00:00.000Z` ("never") reads as `None`.
    pub last_login: Option<EventTime>,
    pub created: Option<EventTime>,
    pub customer_id: Option<String>,
}

impl WorkspaceUser {
    pub fn disabled(&self) -> bool {
        self.suspended || self.archived
    }

    /// `active`, `suspended` or `archived`.
    pub fn status(&self) -> &'static str {
        if self.archived {
            "archived"
        } else if self.suspended {
            "suspended"
        } else {
            "active"
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceGroup {
    pub id: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
}

impl WorkspaceGroup {
    /// The key members are filed under: the id, else the email.
    fn key(&self) -> Option<String> {
        self.id.clone().or_else(|| self.email.as_deref().and_then(canonical_email))
    }
}

/// A group member (`members.list`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: Option<String>,
    pub email: Option<String>,
    /// `OWNER`, `MANAGER`, `MEMBER`.
    pub role: Option<String>,
    /// `USER`, `GROUP`, `CUSTOMER`, `EXTERNAL`.
    pub kind: Option<String>,
}

/// What one Workspace export holds.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkspaceExport {
    Users(Vec<WorkspaceUser>),
    Groups(Vec<WorkspaceGroup>),
    Members {
        group: WorkspaceGroup,
        members: Vec<Member>,
    },
    /// Reports activities (read them with [`events_from_export`]); the count.
    Activities(usize),
}

fn unrecognized(v: &Value) -> ExportError {
    ExportError::Unrecognized { provider: "Google Workspace", seen: shape_of(v) }
}

/// Reads one Workspace export; records that do not fit are skipped and returned with their index.
pub fn parse_export(bytes: &[u8]) -> Result<(WorkspaceExport, Vec<RecordError>), ExportError> {
    let mut skipped = Vec::new();
    let items: Vec<(u64, Value)> = match read_document(bytes)? {
        Document::Lines(values, errors) => {
            skipped = errors;
            values
        }
        Document::One(Value::Array(items)) => items.into_iter().enumerate().map(|(i, v)| (i as u64, v)).collect(),
        Document::One(v) => return parse_object(&v),
    };
    let export = match items.iter().find(|(_, v)| v.is_object()) {
        Some((_, first)) if is_activity(first) => WorkspaceExport::Activities(items.len()),
        Some((_, first)) if first.get("primaryEmail").is_some() => {
            WorkspaceExport::Users(read_list(items.iter().map(|(i, v)| (*i, v)), user, &mut skipped))
        }
        Some((_, first)) => return Err(unrecognized(first)),
        None if items.is_empty() => WorkspaceExport::Users(Vec::new()),
        None => return Err(unrecognized(&items[0].1)),
    };
    skipped.sort_by_key(|e| e.index);
    Ok((export, skipped))
}

fn read_list<'a, T>(
    items: impl Iterator<Item = (u64, &'a Value)>,
    read: fn(&Value) -> Result<T, String>,
    skipped: &mut Vec<RecordError>,
) -> Vec<T> {
    let mut out = Vec::new();
    for (index, v) in items {
        match read(v) {
            Ok(t) => out.push(t),
            Err(reason) => skipped.push(RecordError { index, reason }),
        }
    }
    out
}

fn parse_object(v: &Value) -> Result<(WorkspaceExport, Vec<RecordError>), ExportError> {
    let list = |key: &str| v.get(key).and_then(Value::as_array);
    let mut skipped = Vec::new();
    let export = if let Some(users) = list("users") {
        WorkspaceExport::Users(read_list(users.iter().enumerate().map(|(i, v)| (i as u64, v)), user, &mut skipped))
    } else if let Some(members) = list("members") {
        let group = match v.get("group") {
            Some(g) => group(g).map_err(|e| ExportError::Unrecognized {
                provider: "Google Workspace",
                seen: format!("\"group\": {e}"),
            })?,
            None => {
                let key = ["groupKey", "groupId", "groupEmail"].iter().find_map(|k| str_at(v, &[k]));
                match key {
                    Some(k) if k.contains('@') => WorkspaceGroup { id: None, email: Some(k.to_string()), name: None },
                    Some(k) => WorkspaceGroup { id: Some(k.to_string()), email: None, name: None },
                    None => {
                        return Err(ExportError::Unrecognized {
                            provider: "Google Workspace",
                            seen:
                                "a members list without its group: wrap it as {\"group\": {...}, \"members\": [...]} \
                                   or add \"groupKey\""
                                    .to_string(),
                        });
                    }
                }
            }
        };
        let members = read_list(members.iter().enumerate().map(|(i, v)| (i as u64, v)), member, &mut skipped);
        WorkspaceExport::Members { group, members }
    } else if let Some(groups) = list("groups") {
        WorkspaceExport::Groups(read_list(groups.iter().enumerate().map(|(i, v)| (i as u64, v)), group, &mut skipped))
    } else if let Some(items) = list("items") {
        WorkspaceExport::Activities(items.len())
    } else if str_at(v, &["kind"]) == Some("admin#reports#activities") {
        // An empty page: `items` is omitted.
        WorkspaceExport::Activities(0)
    } else if is_activity(v) {
        WorkspaceExport::Activities(1)
    } else if v.get("primaryEmail").is_some() {
        WorkspaceExport::Users(vec![
            user(v).map_err(|seen| ExportError::Unrecognized { provider: "Google Workspace", seen })?,
        ])
    } else {
        return Err(unrecognized(v));
    };
    // A list whose every record is bad is a broken export, not an empty one: say so.
    if !skipped.is_empty() && export_is_empty(&export) {
        return Err(ExportError::Unrecognized { provider: "Google Workspace", seen: skipped[0].to_string() });
    }
    Ok((export, skipped))
}

fn export_is_empty(e: &WorkspaceExport) -> bool {
    match e {
        WorkspaceExport::Users(u) => u.is_empty(),
        WorkspaceExport::Groups(g) => g.is_empty(),
        WorkspaceExport::Members { members, .. } => members.is_empty(),
        WorkspaceExport::Activities(_) => false,
    }
}

/// An activity: `kind: admin#reports#activity`, or an `id.applicationName` with `events`.
pub fn is_activity(v: &Value) -> bool {
    str_at(v, &["kind"]) == Some("admin#reports#activity")
        || (str_at(v, &["id", "applicationName"]).is_some() && v.get("events").is_some())
}

/// The Directory API writes `1970-01-01T00:00:00.000Z` for a user who never signed in.
fn epoch_is_never(t: Option<EventTime>) -> Option<EventTime> {
    t.filter(|t| t.millis() > 0)
}

fn user(v: &Value) -> Result<WorkspaceUser, String> {
    if !v.is_object() {
        return Err(format!("a user is an object, not {}", shape_of(v)));
    }
    let id = str_at(v, &["id"]).ok_or("missing id")?;
    let primary = str_at(v, &["primaryEmail"]).ok_or("missing primaryEmail")?;
    let primary_email =
        canonical_email(primary).ok_or_else(|| format!("primaryEmail is not an address: {:?}", cut(primary)))?;
    let mut other: Vec<String> = Vec::new();
    for e in v.get("emails").and_then(Value::as_array).into_iter().flatten() {
        if let Some(a) = str_at(e, &["address"]).and_then(canonical_email) {
            other.push(a);
        }
    }
    for key in ["aliases", "nonEditableAliases"] {
        for a in v.get(key).and_then(Value::as_array).into_iter().flatten() {
            if let Some(a) = a.as_str().and_then(canonical_email) {
                other.push(a);
            }
        }
    }
    other.sort_unstable();
    other.dedup();
    other.retain(|e| *e != primary_email);
    Ok(WorkspaceUser {
        id: id.to_string(),
        primary_email,
        other_emails: other,
        full_name: str_at(v, &["name", "fullName"]).map(str::to_string),
        suspended: bool_at(v, &["suspended"]).unwrap_or(false),
        archived: bool_at(v, &["archived"]).unwrap_or(false),
        is_admin: bool_at(v, &["isAdmin"]).unwrap_or(false),
        is_delegated_admin: bool_at(v, &["isDelegatedAdmin"]).unwrap_or(false),
        enrolled_2sv: bool_at(v, &["isEnrolledIn2Sv"]),
        enforced_2sv: bool_at(v, &["isEnforcedIn2Sv"]),
        last_login: epoch_is_never(time_at(v, "lastLoginTime")?),
        created: time_at(v, "creationTime")?,
        customer_id: str_at(v, &["customerId"]).map(str::to_string),
    })
}

fn group(v: &Value) -> Result<WorkspaceGroup, String> {
    if !v.is_object() {
        return Err(format!("a group is an object, not {}", shape_of(v)));
    }
    let g = WorkspaceGroup {
        id: str_at(v, &["id"]).map(str::to_string),
        email: str_at(v, &["email"]).map(str::to_string),
        name: str_at(v, &["name"]).map(str::to_string),
    };
    if g.id.is_none() && g.email.is_none() {
        return Err("a group without id or email".to_string());
    }
    Ok(g)
}

fn member(v: &Value) -> Result<Member, String> {
    if !v.is_object() {
        return Err(format!("a member is an object, not {}", shape_of(v)));
    }
    let m = Member {
        id: str_at(v, &["id"]).map(str::to_string),
        email: str_at(v, &["email"]).map(str::to_string),
        role: str_at(v, &["role"]).map(str::to_string),
        kind: str_at(v, &["type"]).map(str::to_string),
    };
    if m.id.is_none() && m.email.is_none() {
        return Err("a member without id or email".to_string());
    }
    Ok(m)
}

/// Everything the Workspace exports of one customer say, accumulated export by export.
#[derive(Debug, Clone, Default)]
pub struct WorkspaceDirectory {
    customer_id: Option<String>,
    pub users: BTreeMap<String, WorkspaceUser>,
    /// Groups by id (else canonical email).
    pub groups: BTreeMap<String, WorkspaceGroup>,
    /// Group key → members.
    pub members: BTreeMap<String, Vec<Member>>,
}

impl WorkspaceDirectory {
    pub fn new() -> Self {
        Self::default()
    }

    /// The customer id: the first user's `customerId`, else [`DEFAULT_CUSTOMER`].
    pub fn customer_id(&self) -> &str {
        self.customer_id.as_deref().unwrap_or(DEFAULT_CUSTOMER)
    }

    pub fn add(&mut self, export: WorkspaceExport) {
        match export {
            WorkspaceExport::Users(users) => {
                for u in users {
                    if self.customer_id.is_none() {
                        self.customer_id = u.customer_id.clone();
                    }
                    self.users.insert(u.id.clone(), u);
                }
            }
            WorkspaceExport::Groups(groups) => {
                for g in groups {
                    if let Some(k) = g.key() {
                        self.groups.insert(k, g);
                    }
                }
            }
            WorkspaceExport::Members { group, members } => {
                if let Some(k) = group.key() {
                    self.members.insert(k.clone(), members);
                    if group.name.is_some() || !self.groups.contains_key(&k) {
                        self.groups.insert(k, group);
                    }
                }
            }
            WorkspaceExport::Activities(_) => {}
        }
    }

    /// Parses and adds one export; returns the records skipped.
    pub fn add_bytes(&mut self, bytes: &[u8]) -> Result<Vec<RecordError>, ExportError> {
        let (export, skipped) = parse_export(bytes)?;
        self.add(export);
        Ok(skipped)
    }

    /// `workspace:{customerId}/users/{id}`.
    pub fn user_uid(&self, user: &WorkspaceUser) -> String {
        format!("workspace:{}/users/{}", user.customer_id.as_deref().unwrap_or(self.customer_id()), user.id)
    }

    /// The keys of the groups a user is a direct member of (by id, else by address).
    pub fn groups_of<'a>(&'a self, user: &'a WorkspaceUser) -> impl Iterator<Item = &'a str> + 'a {
        self.members
            .iter()
            .filter(move |(_, ms)| {
                ms.iter().any(|m| {
                    m.id.as_deref() == Some(user.id.as_str())
                        || m.email.as_deref().and_then(canonical_email).as_deref() == Some(user.primary_email.as_str())
                })
            })
            .map(|(k, _)| k.as_str())
    }
}

/// Activities of one export as events, and the records that could not be read.
#[derive(Debug, Default)]
pub struct LogBatch {
    pub events: Vec<Event>,
    pub errors: Vec<RecordError>,
}

/// Reads an activities export (`{"items": [...]}`, an array of activities, or JSON Lines of them);
/// bad activities are skipped and listed with their index.
pub fn events_from_export(bytes: &[u8]) -> Result<LogBatch, ExportError> {
    let mut batch = LogBatch::default();
    let one = |index: u64, v: &Value, batch: &mut LogBatch| match normalize_activity_value(v) {
        Ok(es) => batch.events.extend(es),
        Err(e) => batch.errors.push(RecordError { index, reason: e.to_string() }),
    };
    match read_document(bytes)? {
        Document::One(Value::Array(items)) => items.iter().enumerate().for_each(|(i, v)| one(i as u64, v, &mut batch)),
        Document::One(v) => match v.get("items").and_then(Value::as_array) {
            Some(items) => items.iter().enumerate().for_each(|(i, v)| one(i as u64, v, &mut batch)),
            None if str_at(&v, &["kind"]) == Some("admin#reports#activities") => {}
            None if is_activity(&v) => one(0, &v, &mut batch),
            None => return Err(unrecognized(&v)),
        },
        Document::Lines(values, errors) => {
            batch.errors = errors;
            values.iter().for_each(|(i, v)| one(*i, v, &mut batch));
            batch.errors.sort_by_key(|e| e.index);
        }
    }
    Ok(batch)
}

/// Normalizes one activity (the JSON bytes of one `items[]` object) into one event per entry of its
/// `events`.
///
/// Required: `id.time` (RFC 3339), `id.uniqueQualifier`, `id.applicationName`, a non-empty `events`
/// whose entries each have a `name`, and an actor (`profileId`, `key` or `email`). Never panics.
pub fn normalize_activity(raw: &[u8]) -> Result<Vec<Event>, EventError> {
    if raw.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(EventError::Json("expected a JSON object".to_string()));
    }
    let v: Value = serde_json::from_slice(raw).map_err(|e| EventError::Json(e.to_string()))?;
    normalize_activity_value(&v)
}

/// Names of events that report a failure (beyond any `*_failure`).
fn is_failure(name: &str, params: Option<&Vec<Value>>) -> bool {
    if name.ends_with("_failure") || name.ends_with("_FAILURE") {
        return true;
    }
    name == "login_challenge"
        && params.into_iter().flatten().any(|p| {
            str_at(p, &["name"]) == Some("login_challenge_status") && str_at(p, &["value"]) == Some("Challenge Failed")
        })
}

/// Parameters naming what an event touched: an address, a role, a document.
fn is_resource_param(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    n.ends_with("EMAIL") || n.ends_with("EMAIL_ADDRESS") || n == "ROLE_NAME" || n == "DOC_ID"
}

/// [`normalize_activity`] over a parsed value.
pub fn normalize_activity_value(v: &Value) -> Result<Vec<Event>, EventError> {
    if !v.is_object() {
        return Err(EventError::Json(format!("expected a JSON object, got {}", shape_of(v))));
    }
    let id = v.get("id").filter(|i| i.is_object()).ok_or(EventError::Missing("id"))?;
    let time_s = str_at(id, &["time"]).ok_or(EventError::Missing("id.time"))?;
    let qualifier = match id.get("uniqueQualifier") {
        // The API writes it as a string holding an int64; some exporters turn it into a number.
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(EventError::Missing("id.uniqueQualifier")),
    };
    let application = str_at(id, &["applicationName"]).ok_or(EventError::Missing("id.applicationName"))?;
    let time = EventTime::parse_rfc3339(time_s)
        .ok_or_else(|| EventError::BadTime { field: "id.time", value: cut(time_s).to_string() })?;
    let customer = str_at(id, &["customerId"]).unwrap_or(DEFAULT_CUSTOMER);
    let events =
        v.get("events").and_then(Value::as_array).filter(|e| !e.is_empty()).ok_or(EventError::Missing("events"))?;
    if events.iter().any(|e| str_at(e, &["name"]).is_none()) {
        return Err(EventError::Missing("events[].name"));
    }

    let a = v.get("actor").cloned().unwrap_or(Value::Null);
    let email = str_at(&a, &["email"]);
    let (uid, kind) = match (str_at(&a, &["profileId"]), str_at(&a, &["callerType"]), str_at(&a, &["key"])) {
        (Some(p), _, _) => (format!("workspace:{customer}/users/{p}"), IdentityKind::User),
        (None, Some("KEY"), Some(k)) | (None, None, Some(k)) => {
            (format!("workspace:{customer}/keys/{k}"), IdentityKind::Service)
        }
        _ => match email.and_then(canonical_email) {
            Some(e) => (format!("workspace:{customer}/users/{e}"), IdentityKind::External),
            None => return Err(EventError::Missing("actor.profileId")),
        },
    };
    let actor = Actor {
        human: None,
        uid,
        kind,
        name: email.or(str_at(&a, &["key"])).map(str::to_string),
        account_uid: Some(customer.to_string()),
        session_name: None,
        principal_id: str_at(&a, &["profileId"]).map(str::to_string),
        access_key_id: None,
        invoked_by: None,
        mfa_authenticated: None,
        on_behalf_of: None,
    };
    let src_ip = str_at(v, &["ipAddress"]).map(str::to_string);

    let mut out = Vec::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        let name = str_at(e, &["name"]).unwrap_or_default();
        let params = e.get("parameters").and_then(Value::as_array);
        let mut resources: Vec<String> = params
            .into_iter()
            .flatten()
            .filter(|p| str_at(p, &["name"]).is_some_and(is_resource_param))
            .filter_map(|p| str_at(p, &["value"]))
            .map(str::to_string)
            .collect();
        resources.sort_unstable();
        resources.dedup();
        let failed = is_failure(name, params);
        out.push(Event {
            uid: format!("{qualifier}:{i}"),
            time,
            cloud: Cloud::GoogleWorkspace,
            account_uid: customer.to_string(),
            region: GLOBAL_REGION.to_string(),
            actor: actor.clone(),
            api: Api { service: application.to_string(), operation: name.to_string() },
            actions: Vec::new(),
            mapping: ActionMapping::NoPermission,
            resources,
            status: if failed { Status::Failure } else { Status::Success },
            status_code: failed.then(|| name.to_string()),
            src_ip: src_ip.clone(),
            user_agent: None,
            read_only: None,
            request: None,
            response: None,
            additional: bounded_detail(vec![
                ("type", e.get("type").cloned().unwrap_or(Value::Null)),
                ("parameters", redacted_parameters(params)),
            ]),
            error_message: None,
        });
    }
    Ok(out)
}

/// The parameters with the values of secret-looking names (by the CloudTrail redaction's rule)
/// replaced: Reports parameters are `{name, value}` pairs, so the key-based redaction alone would
/// not see them.
fn redacted_parameters(params: Option<&Vec<Value>>) -> Value {
    let Some(params) = params else { return Value::Null };
    let mut out = params.clone();
    for p in &mut out {
        let secret = str_at(p, &["name"]).is_some_and(crate::cloudtrail::redact::is_secret_key);
        if let (true, Some(obj)) = (secret, p.as_object_mut()) {
            for k in ["value", "multiValue", "intValue", "messageValue", "multiMessageValue"] {
                if let Some(val) = obj.get_mut(k) {
                    *val = Value::String(crate::cloudtrail::redact::REDACTED.to_string());
                }
            }
        }
    }
    Value::Array(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const USERS: &[u8] = include_bytes!("testdata/workspace/users.json");
    const GROUPS: &[u8] = include_bytes!("testdata/workspace/groups.json");
    const MEMBERS: &[u8] = include_bytes!("testdata/workspace/members.json");
    const MEMBERS_BARE: &[u8] = include_bytes!("testdata/workspace/members_bare.json");
    const ACTIVITIES: &[u8] = include_bytes!("testdata/workspace/activities.json");
    const ACTIVITY_LINES: &[u8] = include_bytes!("testdata/workspace/activities.jsonl");

    pub(crate) fn directory() -> WorkspaceDirectory {
        let mut d = WorkspaceDirectory::new();
        for bytes in [USERS, GROUPS, MEMBERS] {
            d.add_bytes(bytes).unwrap();
        }
        d
    }

    #[test]
    fn users_with_aliases_2sv_and_never_signed_in() {
        let (export, skipped) = parse_export(USERS).unwrap();
        let WorkspaceExport::Users(users) = export else { panic!("{export:?}") };
        assert_eq!(users.len(), 4);
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].index, 4);
        assert_eq!(skipped[0].reason, "primaryEmail is not an address: \"not-an-address\"");
        let alice = &users[0];
        assert_eq!(alice.primary_email, "alice@example.com", "lower-cased");
        assert_eq!(alice.other_emails, ["adoe@example.com", "alice@example.com.test-google-a.com"]);
        assert!(alice.is_admin);
        assert_eq!(alice.enrolled_2sv, Some(true));
        assert_eq!(users[1].enrolled_2sv, Some(false));
        let grace = &users[2];
        assert!(grace.disabled());
        assert_eq!(grace.status(), "suspended");
        assert_eq!(grace.last_login, None, "1970-01-01 means never");
        let d = directory();
        assert_eq!(d.customer_id(), "C03az79cb");
        assert_eq!(d.user_uid(&d.users["104857600000000000001"]), "workspace:C03az79cb/users/104857600000000000001");
        assert_eq!(d.groups_of(&d.users["104857600000000000002"]).collect::<Vec<_>>(), ["03x8tuzt1abcdef"]);
        assert_eq!(d.groups["03x8tuzt1abcdef"].name.as_deref(), Some("GCP Admins"));
    }

    #[test]
    fn members_without_their_group_are_refused_with_how_to_wrap() {
        let e = parse_export(MEMBERS_BARE).unwrap_err();
        assert!(e.to_string().contains("wrap it as {\"group\""), "{e}");
        let keyed = br#"{"groupKey": "eng@example.com", "members": [{"email": "a@example.com", "type": "USER"}]}"#;
        let (export, _) = parse_export(keyed).unwrap();
        let WorkspaceExport::Members { group, members } = export else { panic!() };
        assert_eq!(group.email.as_deref(), Some("eng@example.com"));
        assert_eq!(members.len(), 1);
        assert!(matches!(parse_export(br#"{"foo": []}"#), Err(ExportError::Unrecognized { .. })));
    }

    #[test]
    fn activities_become_one_event_per_entry() {
        let batch = events_from_export(ACTIVITIES).unwrap();
        // The last activity has no uniqueQualifier.
        assert_eq!(batch.errors, [RecordError { index: 4, reason: "missing field id.uniqueQualifier".into() }]);
        assert_eq!(batch.events.len(), 5);
        let role = &batch.events[0];
        assert_eq!(role.uid, "-8571234567890123456:0");
        assert_eq!(role.cloud, Cloud::GoogleWorkspace);
        assert_eq!(role.account_uid, "C03az79cb");
        assert_eq!(role.actor.uid, "workspace:C03az79cb/users/104857600000000000001");
        assert_eq!(role.actor.name.as_deref(), Some("alice@example.com"));
        assert_eq!(role.actor.kind, IdentityKind::User);
        assert_eq!((role.api.service.as_str(), role.api.operation.as_str()), ("admin", "ASSIGN_ROLE"));
        assert_eq!(role.mapping, ActionMapping::NoPermission);
        assert_eq!(role.resources, ["_SEED_ADMIN_ROLE", "bob@example.com"]);
        assert_eq!(role.status, Status::Success);
        let extra = role.additional.as_ref().unwrap().parse().unwrap();
        assert_eq!(extra["type"], "DELEGATED_ADMIN_SETTINGS");
        assert_eq!(extra["parameters"][0]["name"], "ROLE_ID");
        // The second entry of the same activity; a password parameter is redacted.
        let pw = &batch.events[1];
        assert_eq!(pw.uid, "-8571234567890123456:1");
        assert_eq!(pw.api.operation, "CHANGE_PASSWORD");
        let text = pw.additional.as_ref().unwrap().get();
        assert!(text.contains("<redacted>") && !text.contains("should-never-be-here"), "{text}");

        let twosv = &batch.events[2];
        assert_eq!((twosv.api.service.as_str(), twosv.api.operation.as_str()), ("login", "2sv_disable"));
        assert_eq!(twosv.status, Status::Success);
        assert_eq!(twosv.src_ip.as_deref(), Some("198.51.100.7"));
        let fail = &batch.events[3];
        assert_eq!((fail.status, fail.status_code.as_deref()), (Status::Failure, Some("login_failure")));
        let key = &batch.events[4];
        assert_eq!(key.actor.uid, "workspace:C03az79cb/keys/SYSTEM");
        assert_eq!(key.actor.kind, IdentityKind::Service);
        assert_eq!(key.api.service, "token");
    }

    #[test]
    fn activity_lines_skip_malformed_records_with_their_index() {
        let batch = events_from_export(ACTIVITY_LINES).unwrap();
        let errors: Vec<(u64, &str)> = batch.errors.iter().map(|e| (e.index, e.reason.as_str())).collect();
        assert_eq!(errors, [(1, "id.time not RFC 3339: \"not a time\""), (2, "missing field events")]);
        let ops: Vec<&str> = batch.events.iter().map(|e| e.api.operation.as_str()).collect();
        assert_eq!(ops, ["2sv_disable", "login_failure"]);
        assert_eq!(parse_export(ACTIVITY_LINES).unwrap().0, WorkspaceExport::Activities(4));
        assert_eq!(normalize_activity(b"\"x\"").unwrap_err(), EventError::Json("expected a JSON object".into()));
        let no_actor = br#"{"id":{"time":"2024-01-01T00:00:00Z","uniqueQualifier":"1","applicationName":"admin"},"events":[{"name":"X"}]}"#;
        assert_eq!(normalize_activity(no_actor).unwrap_err(), EventError::Missing("actor.profileId"));
        let unnamed = br#"{"id":{"time":"2024-01-01T00:00:00Z","uniqueQualifier":1,"applicationName":"admin"},"actor":{"profileId":"9"},"events":[{"type":"X"}]}"#;
        assert_eq!(normalize_activity(unnamed).unwrap_err(), EventError::Missing("events[].name"));
        // Without a customer id the account is the default, as the uid's customer is.
        let bare = br#"{"id":{"time":"2024-01-01T00:00:00Z","uniqueQualifier":7,"applicationName":"login"},"actor":{"profileId":"9"},"events":[{"name":"login_success"}]}"#;
        let e = normalize_activity(bare).unwrap();
        assert_eq!((e[0].uid.as_str(), e[0].account_uid.as_str()), ("7:0", DEFAULT_CUSTOMER));
    }
}
