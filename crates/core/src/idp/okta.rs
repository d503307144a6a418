//! Okta: directory exports (users, groups and members, app assignments, MFA factors) and System Log
//! events.
//!
//! **Directory.** [`parse_export`] recognizes, by content:
//!
//! | shape | from |
//! |---|---|
//! | array of users (`profile.login`) | `GET /api/v1/users` |
//! | array of groups (`profile.name`, `type`) | `GET /api/v1/groups` |
//! | `{"group": {group}, "members"\|"users": [users]}`, `{"groupId": "...", "members"\|"users": [...]}`, or a group with `_embedded.users` or `members` | `GET /api/v1/groups/{id}/users`, wrapped with its group (the API's response alone does not say which group it lists) |
//! | `{"app": {app}, "users": [app users]}` and/or `"groups": [app groups]` | `GET /api/v1/apps/{id}/users` / `.../groups`, wrapped with the app |
//! | array of app users (`scope`, `_links.app.href`) | `GET /api/v1/apps/{id}/users` alone: the app id comes from the links, the label is unknown |
//! | array of apps (`signOnMode`), each optionally with `_embedded.users` / `_embedded.groups` | `GET /api/v1/apps` |
//! | `{"user": {user} \| "userId": "...", "factors": [factors]}`, or a user with `_embedded.factors` | `GET /api/v1/users/{id}/factors`, wrapped with its user |
//! | array of System Log events (`eventType`, `uuid`) or their JSON Lines | `GET /api/v1/logs` |
//!
//! Records of an array that do not fit its shape are skipped and listed with their index.
//!
//! **The org.** Identity uids are `okta:{org}/users/{id}`, where `{org}` is the org's host
//! (`acme.okta.com`), taken from the export's `_links` (`self.href`). System Log events carry no
//! link, so [`normalize_event`] takes the org from the caller (the directory's [`OktaDirectory::org`],
//! or configuration); without one it is `okta`. User ids are unique across Okta orgs, so
//! [`crate::humans`] still matches `okta:okta/users/{id}` with the directory's user.
//!
//! **System Log.** Each event becomes one [`Event`] ([`normalize_event`]): `uid` = `uuid`, `time` =
//! `published`, `api.service` = `okta`, `api.operation` = `eventType`, no catalog actions (mapping
//! `NoPermission`: Okta's log is not an entitlement the catalog knows), resources = the targets'
//! `alternateId`s, and `additional` = `{outcome, target, displayMessage, severity, authenticationContext,
//! debugData}` redacted and bounded (least essential fields dropped first), so detection can read
//! e.g. `user.mfa.factor.deactivate`, `user.account.privilege.grant` and `group.user_membership.add`.

use std::collections::{BTreeMap, BTreeSet};

use grantwatch_types::{ActionMapping, Actor, Api, Cloud, Event, EventTime, IdentityKind, Status};
use serde_json::Value;

use super::{
    Document, EventError, ExportError, GLOBAL_REGION, RecordError, bounded_detail, canonical_email, cut, read_document,
    shape_of, str_at, time_at, url_host,
};

/// The `account` and uid org of events and users when no export names the org.
pub const DEFAULT_ORG: &str = "okta";

/// `api.service` of Okta events.
pub const SERVICE: &str = "okta";

/// The Okta app name of "AWS Account Federation", whose assignments carry AWS roles.
pub const AWS_APP_NAME: &str = "amazon_aws";

/// An Okta user (`GET /api/v1/users`). Credentials are never read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OktaUser {
    pub id: String,
    /// The org host from the user's `_links`, when present.
    pub org: Option<String>,
    /// `ACTIVE`, `STAGED`, `PROVISIONED`, `RECOVERY`, `PASSWORD_EXPIRED`, `LOCKED_OUT`, `SUSPENDED`,
    /// `DEPROVISIONED`.
    pub status: Option<String>,
    pub created: Option<EventTime>,
    pub last_login: Option<EventTime>,
    pub login: Option<String>,
    pub email: Option<String>,
    pub second_email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
}

impl OktaUser {
    /// The addresses this user is known by, canonical, primary first: `profile.email`, the login
    /// when it is an address, `secondEmail` (the only secondary one).
    pub fn emails(&self) -> (Vec<String>, Vec<String>) {
        let mut primary: Vec<String> = Vec::new();
        for e in [&self.email, &self.login].into_iter().flatten().filter_map(|e| canonical_email(e)) {
            if !primary.contains(&e) {
                primary.push(e);
            }
        }
        let secondary: Vec<String> = self
            .second_email
            .as_deref()
            .and_then(canonical_email)
            .filter(|e| !primary.contains(e))
            .into_iter()
            .collect();
        (primary, secondary)
    }

    /// Okta no longer lets the user sign in.
    pub fn disabled(&self) -> bool {
        matches!(self.status.as_deref(), Some("SUSPENDED" | "DEPROVISIONED"))
    }

    pub fn display_name(&self) -> Option<String> {
        match (&self.first_name, &self.last_name) {
            (Some(f), Some(l)) => Some(format!("{f} {l}")),
            (Some(n), None) | (None, Some(n)) => Some(n.clone()),
            (None, None) => None,
        }
    }
}

/// An Okta group (`GET /api/v1/groups`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OktaGroup {
    pub id: String,
    pub name: Option<String>,
    /// `OKTA_GROUP`, `APP_GROUP`, `BUILT_IN`.
    pub kind: Option<String>,
}

/// An app (`GET /api/v1/apps`), without its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OktaApp {
    pub id: String,
    pub label: Option<String>,
    /// The app's catalog name (`amazon_aws`, `amazon_aws_sso`, `google`, ...).
    pub name: Option<String>,
    pub status: Option<String>,
}

/// To whom an app is assigned.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Assignee {
    User(String),
    Group(String),
}

/// One assignment of an app to a user or a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppAssignment {
    pub app_id: String,
    pub app_label: Option<String>,
    pub app_name: Option<String>,
    pub assignee: Assignee,
    /// The user's login in the app (`credentials.userName`), for user assignments.
    pub app_user_name: Option<String>,
    /// For AWS apps: the roles the assignment maps to (`profile.role`, `profile.samlRoles`).
    pub aws_roles: Vec<AwsRole>,
}

/// A role an AWS app assignment maps to, as written, with the role ARN and account when it names
/// them (`arn:aws:iam::123456789012:role/Name`, alone or in a `role,provider` pair).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsRole {
    pub raw: String,
    pub role_arn: Option<String>,
    pub account: Option<String>,
}

impl AwsRole {
    fn parse(raw: &str) -> AwsRole {
        let arn = raw
            .split(',')
            .map(str::trim)
            .find(|p| p.starts_with("arn:") && p.split(':').nth(5).is_some_and(|r| r.starts_with("role/")));
        let account = arn.and_then(|a| a.split(':').nth(4)).filter(|a| !a.is_empty());
        AwsRole { raw: raw.to_string(), role_arn: arn.map(str::to_string), account: account.map(str::to_string) }
    }
}

/// An enrolled MFA factor (`GET /api/v1/users/{id}/factors`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Factor {
    pub id: String,
    /// `push`, `token:software:totp`, `webauthn`, `sms`, ...
    pub factor_type: Option<String>,
    pub provider: Option<String>,
    /// `ACTIVE`, `PENDING_ACTIVATION`, `NOT_SETUP`, ...
    pub status: Option<String>,
}

/// What one Okta export holds.
#[derive(Debug, Clone, PartialEq)]
pub enum OktaExport {
    Users(Vec<OktaUser>),
    Groups(Vec<OktaGroup>),
    /// A group's members.
    GroupMembers {
        group: OktaGroup,
        members: Vec<OktaUser>,
    },
    /// Apps, and the assignments the export listed (from `_embedded`, or a wrapper's lists).
    Apps {
        apps: Vec<OktaApp>,
        assignments: Vec<AppAssignment>,
    },
    /// A user's factors.
    Factors {
        user_id: String,
        factors: Vec<Factor>,
    },
    /// System Log events (read them with [`events_from_export`] or [`normalize_event`]); the count.
    Log(usize),
}

/// Reads one Okta export; records that do not fit are skipped and returned with their index.
pub fn parse_export(bytes: &[u8]) -> Result<(OktaExport, Vec<RecordError>), ExportError> {
    match read_document(bytes)? {
        Document::Lines(values, errors) => {
            // JSON Lines are System Log events (the only Okta export written that way).
            match values.first() {
                Some((_, v)) if is_log_event(v) => Ok((OktaExport::Log(values.len()), errors)),
                Some((_, v)) => Err(unrecognized(v)),
                None => Err(ExportError::Empty),
            }
        }
        Document::One(v) => parse_value(&v),
    }
}

fn unrecognized(v: &Value) -> ExportError {
    ExportError::Unrecognized { provider: "Okta", seen: shape_of(v) }
}

fn parse_value(v: &Value) -> Result<(OktaExport, Vec<RecordError>), ExportError> {
    let mut skipped = Vec::new();
    match v {
        Value::Array(items) => {
            let Some(first) = items.iter().find(|i| kind_of(i).is_some()) else {
                return match items.is_empty() {
                    true => Ok((OktaExport::Users(Vec::new()), skipped)),
                    false => Err(unrecognized(v)),
                };
            };
            let kind = kind_of(first).unwrap_or(Kind::User);
            let mut users = Vec::new();
            let mut groups = Vec::new();
            let mut apps = Vec::new();
            let mut assignments = Vec::new();
            let mut events = 0;
            for (i, item) in items.iter().enumerate() {
                let index = i as u64;
                if kind_of(item) != Some(kind) {
                    skipped.push(RecordError { index, reason: format!("not {} ({})", kind.name(), shape_of(item)) });
                    continue;
                }
                let r = match kind {
                    Kind::User => user(item).map(|u| users.push(u)),
                    Kind::Group => group(item).map(|g| groups.push(g)),
                    Kind::App => app(item).map(|a| {
                        embedded_assignments(item, &a, &mut assignments, &mut skipped);
                        apps.push(a);
                    }),
                    Kind::AppUser => app_user(item, None).map(|a| assignments.push(a)),
                    Kind::Event => {
                        events += 1;
                        Ok(())
                    }
                };
                if let Err(reason) = r {
                    skipped.push(RecordError { index, reason });
                }
            }
            let export = match kind {
                Kind::User => OktaExport::Users(users),
                Kind::Group => OktaExport::Groups(groups),
                Kind::App | Kind::AppUser => OktaExport::Apps { apps, assignments },
                Kind::Event => OktaExport::Log(events),
            };
            Ok((export, skipped))
        }
        Value::Object(_) => parse_object(v, &mut skipped).map(|e| (e, skipped)),
        _ => Err(unrecognized(v)),
    }
}

/// The wrappers and embedded forms of one object.
fn parse_object(v: &Value, skipped: &mut Vec<RecordError>) -> Result<OktaExport, ExportError> {
    let list = |key: &str| v.get(key).and_then(Value::as_array);
    let embedded = |key: &str| v.get("_embedded").and_then(|e| e.get(key)).and_then(Value::as_array);
    let bad = |reason: String| ExportError::Unrecognized { provider: "Okta", seen: reason };

    // Group members: {"group": {...}} or {"groupId": ...} with members, or a group with them embedded.
    let members = list("members").or_else(|| list("users")).or_else(|| embedded("users"));
    let group_obj = match v.get("group") {
        Some(g) => Some(group(g).map_err(|e| bad(format!("\"group\": {e}")))?),
        None if kind_of(v) == Some(Kind::Group) => Some(group(v).map_err(bad)?),
        None => str_at(v, &["groupId"]).map(|id| OktaGroup { id: id.to_string(), name: None, kind: None }),
    };
    if let (Some(group), Some(members)) = (group_obj, members) {
        let members = read_list(members, Kind::User, user, skipped);
        return Ok(OktaExport::GroupMembers { group, members });
    }

    // Factors: {"user": {...}} or {"userId": ...} with factors, or a user with them embedded.
    let factors = list("factors").or_else(|| embedded("factors"));
    let user_id = match v.get("user") {
        Some(u) => Some(user(u).map_err(|e| bad(format!("\"user\": {e}")))?.id),
        None if kind_of(v) == Some(Kind::User) => Some(user(v).map_err(bad)?.id),
        None => str_at(v, &["userId"]).map(str::to_string),
    };
    if let (Some(user_id), Some(factors)) = (user_id, factors) {
        let mut out = Vec::new();
        for (i, f) in factors.iter().enumerate() {
            match factor(f) {
                Ok(f) => out.push(f),
                Err(reason) => skipped.push(RecordError { index: i as u64, reason }),
            }
        }
        return Ok(OktaExport::Factors { user_id, factors: out });
    }

    // App assignments: {"app": {...}, "users": [...], "groups": [...]}, or an app with them embedded.
    let app_value = match v.get("app") {
        Some(a) => Some(a),
        None if kind_of(v) == Some(Kind::App) => Some(v),
        None => None,
    };
    if let Some(app_value) = app_value {
        let a = app(app_value).map_err(|e| bad(format!("\"app\": {e}")))?;
        let mut assignments = Vec::new();
        embedded_assignments(app_value, &a, &mut assignments, skipped);
        if !std::ptr::eq(app_value, v) {
            embedded_assignments_in(v, &a, &mut assignments, skipped);
        }
        return Ok(OktaExport::Apps { apps: vec![a], assignments });
    }

    if is_log_event(v) {
        return Ok(OktaExport::Log(1));
    }
    Err(unrecognized(v))
}

fn read_list<T>(
    items: &[Value],
    kind: Kind,
    read: fn(&Value) -> Result<T, String>,
    skipped: &mut Vec<RecordError>,
) -> Vec<T> {
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let index = i as u64;
        if kind_of(item).is_some_and(|k| k != kind) {
            skipped.push(RecordError { index, reason: format!("not {} ({})", kind.name(), shape_of(item)) });
            continue;
        }
        match read(item) {
            Ok(t) => out.push(t),
            Err(reason) => skipped.push(RecordError { index, reason }),
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    User,
    Group,
    App,
    AppUser,
    Event,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::User => "a user",
            Kind::Group => "a group",
            Kind::App => "an app",
            Kind::AppUser => "an app user",
            Kind::Event => "a System Log event",
        }
    }
}

/// Which Okta object `v` is, by the fields only that object has.
fn kind_of(v: &Value) -> Option<Kind> {
    let o = v.as_object()?;
    if is_log_event(v) {
        Some(Kind::Event)
    } else if o.contains_key("signOnMode") || (o.contains_key("label") && o.contains_key("name")) {
        Some(Kind::App)
    } else if o.contains_key("scope")
        && (str_at(v, &["_links", "app", "href"]).is_some() || o.contains_key("credentials"))
    {
        Some(Kind::AppUser)
    } else if str_at(v, &["profile", "login"]).is_some() {
        Some(Kind::User)
    } else if str_at(v, &["profile", "name"]).is_some() && (o.contains_key("type") || o.contains_key("objectClass")) {
        Some(Kind::Group)
    } else {
        None
    }
}

/// A System Log event: `eventType` with `uuid` or `published`.
pub fn is_log_event(v: &Value) -> bool {
    v.get("eventType").is_some_and(Value::is_string) && (v.get("uuid").is_some() || v.get("published").is_some())
}

fn id_of(v: &Value) -> Result<String, String> {
    str_at(v, &["id"]).map(str::to_string).ok_or_else(|| "missing id".to_string())
}

fn user(v: &Value) -> Result<OktaUser, String> {
    if !v.is_object() {
        return Err(format!("a user is an object, not {}", shape_of(v)));
    }
    let p = |k: &str| str_at(v, &["profile", k]).map(str::to_string);
    Ok(OktaUser {
        id: id_of(v)?,
        org: str_at(v, &["_links", "self", "href"]).and_then(url_host),
        status: str_at(v, &["status"]).map(str::to_string),
        created: time_at(v, "created")?,
        last_login: time_at(v, "lastLogin")?,
        login: p("login"),
        email: p("email"),
        second_email: p("secondEmail"),
        first_name: p("firstName"),
        last_name: p("lastName"),
    })
}

fn group(v: &Value) -> Result<OktaGroup, String> {
    if !v.is_object() {
        return Err(format!("a group is an object, not {}", shape_of(v)));
    }
    Ok(OktaGroup {
        id: id_of(v)?,
        name: str_at(v, &["profile", "name"]).map(str::to_string),
        kind: str_at(v, &["type"]).map(str::to_string),
    })
}

fn app(v: &Value) -> Result<OktaApp, String> {
    if !v.is_object() {
        return Err(format!("an app is an object, not {}", shape_of(v)));
    }
    Ok(OktaApp {
        id: id_of(v)?,
        label: str_at(v, &["label"]).map(str::to_string),
        name: str_at(v, &["name"]).map(str::to_string),
        status: str_at(v, &["status"]).map(str::to_string),
    })
}

fn factor(v: &Value) -> Result<Factor, String> {
    if !v.is_object() {
        return Err(format!("a factor is an object, not {}", shape_of(v)));
    }
    Ok(Factor {
        id: id_of(v)?,
        factor_type: str_at(v, &["factorType"]).map(str::to_string),
        provider: str_at(v, &["provider"]).map(str::to_string),
        status: str_at(v, &["status"]).map(str::to_string),
    })
}

/// The AWS roles an app user's or app group's profile maps to.
fn aws_roles(v: &Value) -> Vec<AwsRole> {
    let mut roles = Vec::new();
    if let Some(r) = str_at(v, &["profile", "role"]) {
        roles.push(AwsRole::parse(r));
    }
    if let Some(list) = v.get("profile").and_then(|p| p.get("samlRoles")).and_then(Value::as_array) {
        roles.extend(list.iter().filter_map(Value::as_str).filter(|s| !s.is_empty()).map(AwsRole::parse));
    }
    roles.dedup_by(|a, b| a.raw == b.raw);
    roles
}

/// An app user (`/api/v1/apps/{id}/users`); the app comes from the wrapper or the `_links.app.href`.
fn app_user(v: &Value, app: Option<&OktaApp>) -> Result<AppAssignment, String> {
    if !v.is_object() {
        return Err(format!("an app user is an object, not {}", shape_of(v)));
    }
    let app_id = match app {
        Some(a) => a.id.clone(),
        None => str_at(v, &["_links", "app", "href"])
            .and_then(|h| h.trim_end_matches('/').rsplit('/').next())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .ok_or("app user without its app (no wrapper, no _links.app.href)")?,
    };
    Ok(AppAssignment {
        app_id,
        app_label: app.and_then(|a| a.label.clone()),
        app_name: app.and_then(|a| a.name.clone()),
        assignee: Assignee::User(id_of(v)?),
        app_user_name: str_at(v, &["credentials", "userName"]).map(str::to_string),
        aws_roles: aws_roles(v),
    })
}

/// An app group (`/api/v1/apps/{id}/groups`): `id` is the group's.
fn app_group(v: &Value, app: &OktaApp) -> Result<AppAssignment, String> {
    if !v.is_object() {
        return Err(format!("an app group is an object, not {}", shape_of(v)));
    }
    Ok(AppAssignment {
        app_id: app.id.clone(),
        app_label: app.label.clone(),
        app_name: app.name.clone(),
        assignee: Assignee::Group(id_of(v)?),
        app_user_name: None,
        aws_roles: aws_roles(v),
    })
}

fn embedded_assignments(app_value: &Value, a: &OktaApp, out: &mut Vec<AppAssignment>, skipped: &mut Vec<RecordError>) {
    if let Some(e) = app_value.get("_embedded") {
        embedded_assignments_in(e, a, out, skipped);
    }
}

fn embedded_assignments_in(v: &Value, a: &OktaApp, out: &mut Vec<AppAssignment>, skipped: &mut Vec<RecordError>) {
    for (i, u) in v.get("users").and_then(Value::as_array).into_iter().flatten().enumerate() {
        match app_user(u, Some(a)) {
            Ok(x) => out.push(x),
            Err(reason) => skipped.push(RecordError { index: i as u64, reason: format!("users: {reason}") }),
        }
    }
    for (i, g) in v.get("groups").and_then(Value::as_array).into_iter().flatten().enumerate() {
        match app_group(g, a) {
            Ok(x) => out.push(x),
            Err(reason) => skipped.push(RecordError { index: i as u64, reason: format!("groups: {reason}") }),
        }
    }
}

/// Everything the Okta exports of one org say, accumulated export by export (pages may come in
/// several files; a later record of the same id replaces the earlier one).
#[derive(Debug, Clone, Default)]
pub struct OktaDirectory {
    org: Option<String>,
    pub users: BTreeMap<String, OktaUser>,
    pub groups: BTreeMap<String, OktaGroup>,
    /// Group id → member user ids.
    pub members: BTreeMap<String, BTreeSet<String>>,
    pub apps: BTreeMap<String, OktaApp>,
    /// By (app id, assignee): a later export of the same assignment replaces it.
    pub assignments: BTreeMap<(String, Assignee), AppAssignment>,
    /// User id → factors, for the users whose factors were exported.
    pub factors: BTreeMap<String, Vec<Factor>>,
}

impl OktaDirectory {
    pub fn new() -> Self {
        Self::default()
    }

    /// A directory whose org host is known from configuration.
    pub fn with_org(org: &str) -> Self {
        Self { org: Some(org.to_ascii_lowercase()), ..Self::default() }
    }

    /// The org host: configured, else the first user's `_links` host, else [`DEFAULT_ORG`].
    pub fn org(&self) -> &str {
        self.org.as_deref().unwrap_or(DEFAULT_ORG)
    }

    /// Adds one export. System Log exports hold no directory data and change nothing.
    pub fn add(&mut self, export: OktaExport) {
        match export {
            OktaExport::Users(users) => users.into_iter().for_each(|u| self.add_user(u)),
            OktaExport::Groups(groups) => {
                for g in groups {
                    self.groups.insert(g.id.clone(), g);
                }
            }
            OktaExport::GroupMembers { group, members } => {
                let ids = self.members.entry(group.id.clone()).or_default();
                ids.extend(members.iter().map(|m| m.id.clone()));
                // A bare `groupId` wrapper says nothing of the group: keep a listed one's name.
                if group.name.is_some() || !self.groups.contains_key(&group.id) {
                    self.groups.insert(group.id.clone(), group);
                }
                members.into_iter().for_each(|u| self.add_user(u));
            }
            OktaExport::Apps { apps, assignments } => {
                for a in apps {
                    self.apps.insert(a.id.clone(), a);
                }
                for mut a in assignments {
                    if let Some(app) = self.apps.get(&a.app_id) {
                        a.app_label = a.app_label.or_else(|| app.label.clone());
                        a.app_name = a.app_name.or_else(|| app.name.clone());
                    }
                    self.assignments.insert((a.app_id.clone(), a.assignee.clone()), a);
                }
            }
            OktaExport::Factors { user_id, factors } => {
                self.factors.insert(user_id, factors);
            }
            OktaExport::Log(_) => {}
        }
    }

    /// Parses and adds one export; returns the records skipped.
    pub fn add_bytes(&mut self, bytes: &[u8]) -> Result<Vec<RecordError>, ExportError> {
        let (export, skipped) = parse_export(bytes)?;
        self.add(export);
        Ok(skipped)
    }

    fn add_user(&mut self, u: OktaUser) {
        if self.org.is_none() {
            self.org = u.org.clone();
        }
        // A member listing may carry less than the users export: never replace a richer record.
        match self.users.get(&u.id) {
            Some(old) if old.login.is_some() && u.login.is_none() => {}
            _ => {
                self.users.insert(u.id.clone(), u);
            }
        }
    }

    /// The uid of one of this org's users: `okta:{org}/users/{id}`.
    pub fn user_uid(&self, user: &OktaUser) -> String {
        format!("okta:{}/users/{}", user.org.as_deref().unwrap_or(self.org()), user.id)
    }

    /// Whether the user has a second factor: `Some(true)` with an `ACTIVE` factor, `Some(false)`
    /// when factors were exported and none is active, `None` when they were not exported.
    pub fn mfa_of(&self, user_id: &str) -> Option<bool> {
        self.factors.get(user_id).map(|fs| fs.iter().any(|f| f.status.as_deref() == Some("ACTIVE")))
    }

    /// The groups a user belongs to.
    pub fn groups_of<'a>(&'a self, user_id: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.members.iter().filter(move |(_, m)| m.contains(user_id)).map(|(g, _)| g.as_str())
    }

    /// The app assignments reaching a user, directly or through a group.
    pub fn assignments_of<'a>(&'a self, user_id: &'a str) -> impl Iterator<Item = &'a AppAssignment> + 'a {
        self.assignments.values().filter(move |a| match &a.assignee {
            Assignee::User(u) => u == user_id,
            Assignee::Group(g) => self.members.get(g).is_some_and(|m| m.contains(user_id)),
        })
    }
}

/// System Log events of one export, and the records that could not be read.
#[derive(Debug, Default)]
pub struct LogBatch {
    pub events: Vec<Event>,
    pub errors: Vec<RecordError>,
}

/// Reads a System Log export (a JSON array of events or JSON Lines) into events; bad records are
/// skipped and listed with their index.
pub fn events_from_export(bytes: &[u8], org: Option<&str>) -> Result<LogBatch, ExportError> {
    let mut batch = LogBatch::default();
    let one = |index: u64, v: &Value, batch: &mut LogBatch| match normalize_value(v, org) {
        Ok(e) => batch.events.push(e),
        Err(e) => batch.errors.push(RecordError { index, reason: e.to_string() }),
    };
    match read_document(bytes)? {
        Document::One(Value::Array(items)) => {
            for (i, v) in items.iter().enumerate() {
                one(i as u64, v, &mut batch);
            }
        }
        Document::One(v) if is_log_event(&v) => one(0, &v, &mut batch),
        Document::One(v) => return Err(unrecognized(&v)),
        Document::Lines(values, errors) => {
            batch.errors = errors;
            for (i, v) in &values {
                one(*i, v, &mut batch);
            }
            batch.errors.sort_by_key(|e| e.index);
        }
    }
    Ok(batch)
}

/// Normalizes one System Log event (the JSON bytes of one event object). `org` is the org host
/// (`acme.okta.com`), else [`DEFAULT_ORG`].
///
/// Required: `uuid`, `published` (RFC 3339), `eventType`, `actor.id`. Never panics.
pub fn normalize_event(raw: &[u8], org: Option<&str>) -> Result<Event, EventError> {
    if raw.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(EventError::Json("expected a JSON object".to_string()));
    }
    let v: Value = serde_json::from_slice(raw).map_err(|e| EventError::Json(e.to_string()))?;
    normalize_value(&v, org)
}

/// [`normalize_event`] over a parsed value.
pub fn normalize_value(v: &Value, org: Option<&str>) -> Result<Event, EventError> {
    if !v.is_object() {
        return Err(EventError::Json(format!("expected a JSON object, got {}", shape_of(v))));
    }
    let uid = str_at(v, &["uuid"]).ok_or(EventError::Missing("uuid"))?;
    let published = str_at(v, &["published"]).ok_or(EventError::Missing("published"))?;
    let event_type = str_at(v, &["eventType"]).ok_or(EventError::Missing("eventType"))?;
    let actor_v = v.get("actor").filter(|a| a.is_object()).ok_or(EventError::Missing("actor"))?;
    let actor_id = str_at(actor_v, &["id"]).ok_or(EventError::Missing("actor.id"))?;
    let time = EventTime::parse_rfc3339(published)
        .ok_or_else(|| EventError::BadTime { field: "published", value: cut(published).to_string() })?;
    let org = org.map(str::to_ascii_lowercase).unwrap_or_else(|| DEFAULT_ORG.to_string());

    let kind = match str_at(actor_v, &["type"]) {
        Some("User") => IdentityKind::User,
        // SystemPrincipal (Okta itself), PublicClientApp, AppInstance, Client: not a person.
        Some(_) => IdentityKind::Service,
        None => IdentityKind::External,
    };
    let actor = Actor {
        human: None,
        uid: format!("okta:{org}/users/{actor_id}"),
        kind,
        name: str_at(actor_v, &["alternateId"]).or(str_at(actor_v, &["displayName"])).map(str::to_string),
        account_uid: Some(org.clone()),
        session_name: None,
        principal_id: Some(actor_id.to_string()),
        access_key_id: None,
        invoked_by: None,
        mfa_authenticated: None,
        on_behalf_of: None,
    };

    let targets = v.get("target").and_then(Value::as_array);
    let mut resources: Vec<String> = targets
        .into_iter()
        .flatten()
        .filter_map(|t| str_at(t, &["alternateId"]).or(str_at(t, &["id"])))
        .map(str::to_string)
        .collect();
    resources.sort_unstable();
    resources.dedup();

    let result = str_at(v, &["outcome", "result"]);
    let failed = result.is_some_and(|r| r.eq_ignore_ascii_case("FAILURE") || r.eq_ignore_ascii_case("DENY"));
    let reason = str_at(v, &["outcome", "reason"]);
    let field = |k: &str| v.get(k).cloned().unwrap_or(Value::Null);
    let debug_data = v.get("debugContext").and_then(|d| d.get("debugData")).cloned().unwrap_or(Value::Null);

    Ok(Event {
        uid: uid.to_string(),
        time,
        cloud: Cloud::Okta,
        account_uid: org,
        region: GLOBAL_REGION.to_string(),
        actor,
        api: Api { service: SERVICE.to_string(), operation: event_type.to_string() },
        actions: Vec::new(),
        mapping: ActionMapping::NoPermission,
        resources,
        status: if failed { Status::Failure } else { Status::Success },
        status_code: if failed { result.map(str::to_string) } else { None },
        src_ip: str_at(v, &["client", "ipAddress"]).map(str::to_string),
        user_agent: str_at(v, &["client", "userAgent", "rawUserAgent"]).map(str::to_string),
        read_only: None,
        request: None,
        response: None,
        additional: bounded_detail(vec![
            ("outcome", field("outcome")),
            ("target", field("target")),
            ("displayMessage", field("displayMessage")),
            ("severity", field("severity")),
            (
                "geographicalContext",
                v.get("client").and_then(|c| c.get("geographicalContext")).cloned().unwrap_or(Value::Null),
            ),
            ("authenticationContext", field("authenticationContext")),
            ("debugData", debug_data),
        ]),
        error_message: if failed {
            reason.map(|r| grantwatch_types::cut_str(r, grantwatch_types::ERROR_MESSAGE_MAX).to_string())
        } else {
            None
        },
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const USERS: &[u8] = include_bytes!("testdata/okta/users.json");
    const GROUPS: &[u8] = include_bytes!("testdata/okta/groups.json");
    const MEMBERS: &[u8] = include_bytes!("testdata/okta/group_members.json");
    const APP: &[u8] = include_bytes!("testdata/okta/app_aws.json");
    const FACTORS_ALICE: &[u8] = include_bytes!("testdata/okta/factors_alice.json");
    const FACTORS_BOB: &[u8] = include_bytes!("testdata/okta/factors_bob.json");
    const LOG: &[u8] = include_bytes!("testdata/okta/system_log.json");
    const LOG_LINES: &[u8] = include_bytes!("testdata/okta/system_log.jsonl");

    const ALICE: &str = "00u1alice0000000000a";
    const BOB: &str = "00u2bob00000000000b";

    /// The fixture org: users, groups, members, the AWS app, factors.
    pub(crate) fn directory() -> OktaDirectory {
        let mut d = OktaDirectory::new();
        for bytes in [USERS, GROUPS, MEMBERS, APP, FACTORS_ALICE, FACTORS_BOB] {
            d.add_bytes(bytes).unwrap();
        }
        d
    }

    #[test]
    fn users_export_reads_every_good_user_and_names_the_bad_one() {
        let (export, skipped) = parse_export(USERS).unwrap();
        let OktaExport::Users(users) = export else { panic!("{export:?}") };
        assert_eq!(users.len(), 6);
        assert_eq!(skipped, [RecordError { index: 6, reason: "lastLogin not RFC 3339: \"last tuesday\"".into() }]);
        let alice = &users[0];
        assert_eq!(alice.org.as_deref(), Some("acme.okta.com"));
        assert_eq!(alice.emails(), (vec!["alice@example.com".to_string()], vec!["alice.doe@gmail.com".to_string()]));
        assert_eq!(alice.display_name().as_deref(), Some("Alice Doe"));
        assert_eq!(alice.last_login, EventTime::parse_rfc3339("2024-05-20T08:12:44Z"));
        assert!(users[2].disabled(), "DEPROVISIONED");
        assert_eq!(users[3].last_login, None, "lastLogin null: never signed in");
    }

    #[test]
    fn directory_joins_groups_members_apps_and_factors() {
        let d = directory();
        assert_eq!(d.org(), "acme.okta.com");
        assert_eq!(d.user_uid(&d.users[ALICE]), format!("okta:acme.okta.com/users/{ALICE}"));
        assert_eq!(d.groups["00g1admins000000000"].name.as_deref(), Some("AWS-Admins"));
        assert_eq!(d.groups_of(BOB).collect::<Vec<_>>(), ["00g1admins000000000"]);
        assert_eq!(d.mfa_of(ALICE), Some(true));
        assert_eq!(d.mfa_of(BOB), Some(false), "only a pending SMS factor");
        assert_eq!(d.mfa_of("00u4dave0000000000d"), None, "factors not exported");

        // Alice: her own assignment (an ARN pair) and the AWS-Admins group's.
        let a: Vec<&AppAssignment> = d.assignments_of(ALICE).collect();
        assert_eq!(a.len(), 2);
        assert!(
            a.iter().all(
                |x| x.app_label.as_deref() == Some("AWS Production") && x.app_name.as_deref() == Some(AWS_APP_NAME)
            )
        );
        let own = a.iter().find(|x| x.assignee == Assignee::User(ALICE.into())).unwrap();
        assert_eq!(own.aws_roles[0].role_arn.as_deref(), Some("arn:aws:iam::111122223333:role/Okta-Admin"));
        assert_eq!(own.aws_roles[0].account.as_deref(), Some("111122223333"));
        let via_group = a.iter().find(|x| matches!(x.assignee, Assignee::Group(_))).unwrap();
        assert_eq!(via_group.aws_roles[0].account.as_deref(), Some("444455556666"));
        // Bob's role is a bare name: no ARN, no account.
        let bob: Vec<&AppAssignment> =
            d.assignments_of(BOB).filter(|x| x.assignee == Assignee::User(BOB.into())).collect();
        assert_eq!(bob[0].aws_roles, [AwsRole { raw: "ReadOnly".into(), role_arn: None, account: None }]);
    }

    #[test]
    fn app_users_alone_take_the_app_from_their_links() {
        let raw = r#"[{"id":"00u1","scope":"USER","credentials":{"userName":"a@example.com"},
            "profile":{"samlRoles":["arn:aws:iam::123456789012:role/Dev"]},
            "_links":{"app":{"href":"https://acme.okta.com/api/v1/apps/0oaXYZ"}}},
            {"id":"00u2","scope":"USER","credentials":{}}]"#;
        let (export, skipped) = parse_export(raw.as_bytes()).unwrap();
        let OktaExport::Apps { assignments, .. } = export else { panic!() };
        assert_eq!(assignments.len(), 1);
        assert_eq!(assignments[0].app_id, "0oaXYZ");
        assert_eq!(skipped[0].index, 1);
        assert!(skipped[0].reason.contains("without its app"), "{}", skipped[0].reason);
    }

    #[test]
    fn unrecognized_and_broken_exports_say_what_they_saw() {
        let e = parse_export(br#"{"hello": 1, "world": 2}"#).unwrap_err();
        assert_eq!(e.to_string(), "not a recognized Okta export: object with keys [hello, world]");
        let e = parse_export(b"[{\"id\": 1}").unwrap_err();
        assert!(matches!(e, ExportError::Json(_)), "{e:?}");
        // A members listing wrapped with a group lacking an id is refused, naming the wrapper.
        let e = parse_export(br#"{"group": {"profile": {"name": "x"}}, "members": []}"#).unwrap_err();
        assert_eq!(e.to_string(), "not a recognized Okta export: \"group\": missing id");
    }

    #[test]
    fn system_log_events_normalize() {
        let batch = events_from_export(LOG, Some("acme.okta.com")).unwrap();
        assert!(batch.errors.is_empty(), "{:?}", batch.errors);
        assert_eq!(batch.events.len(), 7);
        let e = &batch.events[0];
        assert_eq!(e.uid, "a1b2c3d4-0001-11ef-9a1b-0123456789ab");
        assert_eq!(e.time, EventTime::parse_rfc3339("2024-05-20T08:15:02.123Z").unwrap());
        assert_eq!(e.cloud, Cloud::Okta);
        assert_eq!(e.account_uid, "acme.okta.com");
        assert_eq!(e.actor.uid, format!("okta:acme.okta.com/users/{ALICE}"));
        assert_eq!(e.actor.kind, IdentityKind::User);
        assert_eq!(e.actor.name.as_deref(), Some("alice@example.com"));
        assert_eq!((e.api.service.as_str(), e.api.operation.as_str()), ("okta", "user.mfa.factor.deactivate"));
        assert!(e.actions.is_empty());
        assert_eq!(e.mapping, ActionMapping::NoPermission);
        assert_eq!(e.status, Status::Success);
        assert_eq!(e.resources, ["bob@example.com", "unknown"]);
        assert_eq!(e.src_ip.as_deref(), Some("203.0.113.10"));
        assert!(e.user_agent.as_deref().unwrap().starts_with("Mozilla/5.0"));
        let extra = e.additional.as_ref().unwrap().parse().unwrap();
        assert_eq!(extra["outcome"]["result"], "SUCCESS");
        assert_eq!(extra["target"][0]["alternateId"], "bob@example.com");
        assert_eq!(extra["severity"], "WARN");

        let ops: Vec<&str> = batch.events.iter().map(|e| e.api.operation.as_str()).collect();
        assert_eq!(ops[1..4], ["user.account.privilege.grant", "group.user_membership.add", "policy.lifecycle.update"]);
        let grant = batch.events[1].additional.as_ref().unwrap().parse().unwrap();
        assert_eq!(grant["debugData"]["privilegeGranted"], "Super administrator");

        // A failed sign-in: status, code and reason; the debug data's secret is redacted.
        let fail = &batch.events[4];
        assert_eq!((fail.status, fail.status_code.as_deref()), (Status::Failure, Some("FAILURE")));
        assert_eq!(fail.error_message.as_deref(), Some("INVALID_CREDENTIALS"));
        let text = fail.additional.as_ref().unwrap().get().to_string();
        assert!(text.contains("<redacted>") && !text.contains("s3cr3t-value"), "{text}");
        // Okta itself acting: a service.
        assert_eq!(batch.events[5].actor.kind, IdentityKind::Service);
        // A policy DENY is a failure.
        assert_eq!(batch.events[6].status, Status::Failure);
    }

    #[test]
    fn system_log_lines_skip_bad_records_with_their_index() {
        let batch = events_from_export(LOG_LINES, None).unwrap();
        assert_eq!(batch.events.len(), 2);
        assert_eq!(batch.events[0].account_uid, DEFAULT_ORG);
        assert_eq!(batch.events[0].actor.uid, format!("okta:okta/users/{ALICE}"));
        let errors: Vec<(u64, &str)> = batch.errors.iter().map(|e| (e.index, e.reason.as_str())).collect();
        assert_eq!(errors[0], (1, "missing field actor"));
        assert_eq!(errors[1], (2, "published not RFC 3339: \"yesterday\""));
        assert_eq!(errors[2].0, 3);
        assert!(errors[2].1.starts_with("not JSON"), "{}", errors[2].1);
        assert_eq!(errors.len(), 3);
        let (export, _) = parse_export(LOG_LINES).unwrap();
        assert_eq!(export, OktaExport::Log(4));
    }

    #[test]
    fn malformed_single_events_are_errors_never_panics() {
        assert_eq!(normalize_event(b"[1,2]", None).unwrap_err(), EventError::Json("expected a JSON object".into()));
        assert!(matches!(normalize_event(b"{\"uuid\":", None), Err(EventError::Json(_))));
        assert_eq!(normalize_event(b"{}", None).unwrap_err(), EventError::Missing("uuid"));
        let no_actor_id = br#"{"uuid":"u","published":"2024-01-01T00:00:00Z","eventType":"x","actor":{"type":"User"}}"#;
        assert_eq!(normalize_event(no_actor_id, None).unwrap_err(), EventError::Missing("actor.id"));
        // Wrong types read as absent rather than failing the record.
        let odd = br#"{"uuid":"u","published":"2024-01-01T00:00:00Z","eventType":"x","actor":{"id":"00u1","type":7},
                       "target":"not a list","outcome":{"result":5},"client":{"ipAddress":["x"]}}"#;
        let e = normalize_event(odd, Some("ACME.okta.com")).unwrap();
        assert_eq!(e.actor.uid, "okta:acme.okta.com/users/00u1");
        assert_eq!((e.status, e.src_ip, e.resources.len()), (Status::Success, None, 0));
    }
}
