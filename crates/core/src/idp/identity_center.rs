//! AWS IAM Identity Center: who (Identity Store users, through groups too) is assigned which
//! permission set in which account, and the IAM role each assignment materializes as.
//!
//! [`parse_export`] recognizes, by content, the AWS CLI's JSON output (one response per file, or
//! several as a JSON array or JSON Lines, as a loop over `describe-permission-set` writes them):
//!
//! | shape | command |
//! |---|---|
//! | `{"Users": [{UserId, UserName, DisplayName, Emails: [{Value, Primary}], IdentityStoreId}]}` | `aws identitystore list-users` |
//! | `{"Groups": [{GroupId, DisplayName, IdentityStoreId}]}` | `aws identitystore list-groups` |
//! | `{"GroupMemberships": [{GroupId, MemberId: {UserId}}]}` | `aws identitystore list-group-memberships` |
//! | `{"PermissionSets": ["arn:..."]}` | `aws sso-admin list-permission-sets` |
//! | `{"PermissionSet": {Name, PermissionSetArn, SessionDuration}}` | `aws sso-admin describe-permission-set` |
//! | `{"AccountAssignments": [{AccountId, PermissionSetArn, PrincipalType, PrincipalId}]}` | `aws sso-admin list-account-assignments` (and `...-for-principal`) |
//!
//! **The role of an assignment.** Identity Center creates, in each account a permission set is
//! assigned to, the role `arn:aws:iam::{account}:role/aws-reserved/sso.amazonaws.com/[{region}/]AWSReservedSSO_{PermissionSetName}_{suffix}`.
//! The 16-hex-digit suffix is in no Identity Center export, so [`SsoRoleMatcher`] matches the IAM
//! snapshot's roles by account and name: `AWSReservedSSO_`, the permission set's name, `_`, and a
//! suffix without `_` (permission set names may hold `_`, the suffix never does, so `Admin` does
//! not match the role of `Admin_Full`). A permission set's name comes from
//! `describe-permission-set`: without it, its assignments are listed but match no role.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{Document, ExportError, RecordError, bool_at, canonical_email, read_document, shape_of, str_at};

/// The uid store of users whose export names no `IdentityStoreId`.
pub const DEFAULT_STORE: &str = "identitycenter";

/// The name prefix of the roles Identity Center creates.
pub const SSO_ROLE_PREFIX: &str = "AWSReservedSSO_";

/// An Identity Store user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdcUser {
    pub user_id: String,
    pub user_name: String,
    pub display_name: Option<String>,
    /// Canonical addresses, the primary one(s) first.
    pub emails: Vec<String>,
    /// How many of `emails` are marked primary.
    pub primary_emails: usize,
    pub identity_store_id: Option<String>,
}

impl IdcUser {
    /// `identitycenter:{IdentityStoreId}/users/{UserId}`.
    pub fn uid(&self) -> String {
        format!("identitycenter:{}/users/{}", self.identity_store_id.as_deref().unwrap_or(DEFAULT_STORE), self.user_id)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdcGroup {
    pub group_id: String,
    pub display_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionSet {
    pub arn: String,
    pub name: Option<String>,
    /// ISO 8601 duration (`PT8H`).
    pub session_duration: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Principal {
    User(String),
    Group(String),
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AccountAssignment {
    pub account_id: String,
    pub permission_set_arn: String,
    pub principal: Principal,
}

/// One response of the CLI.
#[derive(Debug, Clone, PartialEq)]
pub enum IdcExport {
    Users(Vec<IdcUser>),
    Groups(Vec<IdcGroup>),
    /// (group id, user id).
    Memberships(Vec<(String, String)>),
    PermissionSetArns(Vec<String>),
    PermissionSet(PermissionSet),
    Assignments(Vec<AccountAssignment>),
}

/// Reads one file of CLI output (one response, or several as an array or JSON Lines). Records that
/// do not fit are skipped with their index (`Users[3]` is index 3 of that response's list; with
/// several responses, `reason` names the response).
pub fn parse_export(bytes: &[u8]) -> Result<(Vec<IdcExport>, Vec<RecordError>), ExportError> {
    let mut skipped = Vec::new();
    let responses: Vec<(u64, Value)> = match read_document(bytes)? {
        Document::One(Value::Array(items)) => items.into_iter().enumerate().map(|(i, v)| (i as u64, v)).collect(),
        Document::One(v) => vec![(0, v)],
        Document::Lines(values, errors) => {
            skipped = errors;
            values
        }
    };
    let several = responses.len() > 1;
    let mut out = Vec::new();
    for (r, v) in &responses {
        let mut local = Vec::new();
        match response(v, &mut local) {
            Some(e) => out.push(e),
            None if several => skipped
                .push(RecordError { index: *r, reason: format!("not an Identity Center response: {}", shape_of(v)) }),
            None => return Err(ExportError::Unrecognized { provider: "IAM Identity Center", seen: shape_of(v) }),
        }
        for mut e in local {
            if several {
                e.reason = format!("response {r}: {}", e.reason);
            }
            skipped.push(e);
        }
    }
    Ok((out, skipped))
}

fn each<T>(
    list: &[Value],
    key: &str,
    read: impl Fn(&Value) -> Result<T, String>,
    skipped: &mut Vec<RecordError>,
) -> Vec<T> {
    let mut out = Vec::new();
    for (i, v) in list.iter().enumerate() {
        match read(v) {
            Ok(t) => out.push(t),
            Err(reason) => skipped.push(RecordError { index: i as u64, reason: format!("{key}[{i}]: {reason}") }),
        }
    }
    out
}

fn req<'a>(v: &'a Value, key: &'static str) -> Result<&'a str, String> {
    str_at(v, &[key]).ok_or_else(|| format!("missing {key}"))
}

fn response(v: &Value, skipped: &mut Vec<RecordError>) -> Option<IdcExport> {
    let list = |key: &str| v.get(key).and_then(Value::as_array);
    if let Some(users) = list("Users") {
        return Some(IdcExport::Users(each(users, "Users", user, skipped)));
    }
    if let Some(groups) = list("Groups") {
        let g = each(
            groups,
            "Groups",
            |g| {
                Ok(IdcGroup {
                    group_id: req(g, "GroupId")?.to_string(),
                    display_name: str_at(g, &["DisplayName"]).map(str::to_string),
                })
            },
            skipped,
        );
        return Some(IdcExport::Groups(g));
    }
    if let Some(ms) = list("GroupMemberships") {
        let m = each(
            ms,
            "GroupMemberships",
            |m| {
                let user = str_at(m, &["MemberId", "UserId"]).ok_or("missing MemberId.UserId")?;
                Ok((req(m, "GroupId")?.to_string(), user.to_string()))
            },
            skipped,
        );
        return Some(IdcExport::Memberships(m));
    }
    if let Some(arns) = list("PermissionSets") {
        let a = each(
            arns,
            "PermissionSets",
            |a| a.as_str().map(str::to_string).ok_or_else(|| "not an ARN string".to_string()),
            skipped,
        );
        return Some(IdcExport::PermissionSetArns(a));
    }
    if let Some(ps) = v.get("PermissionSet").filter(|p| p.is_object()) {
        return match req(ps, "PermissionSetArn") {
            Ok(arn) => Some(IdcExport::PermissionSet(PermissionSet {
                arn: arn.to_string(),
                name: str_at(ps, &["Name"]).map(str::to_string),
                session_duration: str_at(ps, &["SessionDuration"]).map(str::to_string),
            })),
            Err(reason) => {
                skipped.push(RecordError { index: 0, reason: format!("PermissionSet: {reason}") });
                Some(IdcExport::PermissionSetArns(Vec::new()))
            }
        };
    }
    if let Some(assignments) = list("AccountAssignments") {
        return Some(IdcExport::Assignments(each(assignments, "AccountAssignments", assignment, skipped)));
    }
    None
}

fn user(v: &Value) -> Result<IdcUser, String> {
    let user_id = req(v, "UserId")?.to_string();
    let user_name = req(v, "UserName")?.to_string();
    let mut primary = Vec::new();
    let mut other = Vec::new();
    for e in v.get("Emails").and_then(Value::as_array).into_iter().flatten() {
        let Some(addr) = str_at(e, &["Value"]).and_then(canonical_email) else { continue };
        if bool_at(e, &["Primary"]) == Some(true) { primary.push(addr) } else { other.push(addr) }
    }
    let primary_emails = primary.len();
    primary.extend(other);
    let mut seen = BTreeSet::new();
    primary.retain(|e| seen.insert(e.clone()));
    Ok(IdcUser {
        user_id,
        user_name,
        display_name: str_at(v, &["DisplayName"]).or_else(|| str_at(v, &["Name", "Formatted"])).map(str::to_string),
        emails: primary,
        primary_emails: primary_emails.min(seen.len()),
        identity_store_id: str_at(v, &["IdentityStoreId"]).map(str::to_string),
    })
}

fn assignment(v: &Value) -> Result<AccountAssignment, String> {
    let id = req(v, "PrincipalId")?.to_string();
    let principal = match req(v, "PrincipalType")? {
        "USER" => Principal::User(id),
        "GROUP" => Principal::Group(id),
        other => return Err(format!("PrincipalType {:?} is neither USER nor GROUP", super::cut(other))),
    };
    Ok(AccountAssignment {
        account_id: req(v, "AccountId")?.to_string(),
        permission_set_arn: req(v, "PermissionSetArn")?.to_string(),
        principal,
    })
}

/// An assignment as it reaches one user.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct UserAssignment {
    pub account: String,
    pub permission_set_arn: String,
    pub permission_set_name: Option<String>,
    /// The group the assignment reaches the user through; `None` when assigned directly.
    pub via_group: Option<String>,
}

/// Everything the Identity Center exports say, accumulated.
#[derive(Debug, Clone, Default)]
pub struct IdentityCenter {
    pub users: BTreeMap<String, IdcUser>,
    pub groups: BTreeMap<String, IdcGroup>,
    /// Group id → user ids.
    pub members: BTreeMap<String, BTreeSet<String>>,
    /// By ARN; `name` is `None` until `describe-permission-set` says it.
    pub permission_sets: BTreeMap<String, PermissionSet>,
    pub assignments: BTreeSet<AccountAssignment>,
}

impl IdentityCenter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, export: IdcExport) {
        match export {
            IdcExport::Users(us) => us.into_iter().for_each(|u| {
                self.users.insert(u.user_id.clone(), u);
            }),
            IdcExport::Groups(gs) => gs.into_iter().for_each(|g| {
                self.groups.insert(g.group_id.clone(), g);
            }),
            IdcExport::Memberships(ms) => {
                for (g, u) in ms {
                    self.members.entry(g).or_default().insert(u);
                }
            }
            IdcExport::PermissionSetArns(arns) => {
                for arn in arns {
                    self.permission_sets.entry(arn.clone()).or_insert(PermissionSet {
                        arn,
                        name: None,
                        session_duration: None,
                    });
                }
            }
            IdcExport::PermissionSet(ps) => {
                self.permission_sets.insert(ps.arn.clone(), ps);
            }
            IdcExport::Assignments(a) => self.assignments.extend(a),
        }
    }

    /// Parses and adds one file; returns the records skipped.
    pub fn add_bytes(&mut self, bytes: &[u8]) -> Result<Vec<RecordError>, ExportError> {
        let (exports, skipped) = parse_export(bytes)?;
        exports.into_iter().for_each(|e| self.add(e));
        Ok(skipped)
    }

    pub fn permission_set_name(&self, arn: &str) -> Option<&str> {
        self.permission_sets.get(arn).and_then(|p| p.name.as_deref())
    }

    /// The assignments reaching a user, directly and through their groups, sorted.
    pub fn assignments_of_user(&self, user_id: &str) -> Vec<UserAssignment> {
        let mut out: Vec<UserAssignment> = self
            .assignments
            .iter()
            .filter_map(|a| {
                let via_group = match &a.principal {
                    Principal::User(u) if u == user_id => None,
                    Principal::Group(g) if self.members.get(g).is_some_and(|m| m.contains(user_id)) => Some(g.clone()),
                    _ => return None,
                };
                Some(UserAssignment {
                    account: a.account_id.clone(),
                    permission_set_arn: a.permission_set_arn.clone(),
                    permission_set_name: self.permission_set_name(&a.permission_set_arn).map(str::to_string),
                    via_group,
                })
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Users with this `UserName` (case-insensitive; one per identity store at most).
    pub fn users_named<'a>(&'a self, user_name: &'a str) -> impl Iterator<Item = &'a IdcUser> + 'a {
        self.users.values().filter(move |u| u.user_name.eq_ignore_ascii_case(user_name))
    }

    /// Every (user id, role) pair, sorted: the roles of `matcher` each user's assignments
    /// materialize as. One pass over the assignments (a group's reaches each member).
    pub fn materialize(&self, matcher: &SsoRoleMatcher) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for a in &self.assignments {
            let Some(name) = self.permission_set_name(&a.permission_set_arn) else { continue };
            let roles = matcher.roles_for(&a.account_id, name);
            if roles.is_empty() {
                continue;
            }
            let users: Vec<&String> = match &a.principal {
                Principal::User(u) => vec![u],
                Principal::Group(g) => self.members.get(g).into_iter().flatten().collect(),
            };
            for u in users {
                out.extend(roles.iter().map(|r| (u.clone(), r.clone())));
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

/// An `AWSReservedSSO_*` role, read from its ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsoRole<'a> {
    pub account: &'a str,
    pub permission_set_name: &'a str,
    /// The region in the role's path, when present.
    pub region: Option<&'a str>,
    pub suffix: &'a str,
}

/// Reads an Identity Center role's ARN: `arn:aws:iam::{account}:role/aws-reserved/sso.amazonaws.com/[{region}/]AWSReservedSSO_{name}_{suffix}`.
/// The path is not required (some tools print the role without it); the name is.
pub fn parse_sso_role(arn: &str) -> Option<SsoRole<'_>> {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(_), Some("iam"), Some(_), Some(account), Some(resource)) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let path = resource.strip_prefix("role/")?;
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    let (ps, suffix) = parse_sso_role_name(name)?;
    let region = dir.strip_prefix("aws-reserved/sso.amazonaws.com/").filter(|r| !r.is_empty() && !r.contains('/'));
    (!account.is_empty()).then_some(SsoRole { account, permission_set_name: ps, region, suffix })
}

/// `AWSReservedSSO_{name}_{suffix}` → (name, suffix); the suffix holds no `_`.
pub fn parse_sso_role_name(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix(SSO_ROLE_PREFIX)?;
    let (ps, suffix) = rest.rsplit_once('_')?;
    (!ps.is_empty() && !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_alphanumeric())).then_some((ps, suffix))
}

/// The IAM roles of a snapshot that Identity Center permission sets materialize as, by (account,
/// permission set name).
#[derive(Debug, Clone, Default)]
pub struct SsoRoleMatcher {
    roles: BTreeMap<(String, String), Vec<String>>,
}

impl SsoRoleMatcher {
    /// From role ARNs; those that are not `AWSReservedSSO_*` roles are ignored.
    pub fn new<'a>(role_arns: impl IntoIterator<Item = &'a str>) -> Self {
        let mut m = Self::default();
        for arn in role_arns {
            if let Some(r) = parse_sso_role(arn) {
                m.insert(r.account, r.permission_set_name, arn);
            }
        }
        m
    }

    /// Adds a role known by account and name only (no ARN); the role's uid is then `role` as given.
    pub fn insert_name(&mut self, account: &str, role_name: &str) {
        if let Some((ps, _)) = parse_sso_role_name(role_name) {
            self.insert(account, ps, role_name);
        }
    }

    fn insert(&mut self, account: &str, ps: &str, role: &str) {
        // Permission set names are case-sensitive in Identity Center, and so is the role name.
        let v = self.roles.entry((account.to_string(), ps.to_string())).or_default();
        if !v.iter().any(|r| r == role) {
            v.push(role.to_string());
        }
    }

    /// The roles the permission set `name` materializes as in `account` (normally one).
    pub fn roles_for(&self, account: &str, permission_set_name: &str) -> &[String] {
        self.roles.get(&(account.to_string(), permission_set_name.to_string())).map_or(&[], Vec::as_slice)
    }

    /// Whether `role` (an ARN, or a name with `account`) is the role of that permission set there.
    pub fn matches(role: &str, account: &str, permission_set_name: &str) -> bool {
        match parse_sso_role(role) {
            Some(r) => r.account == account && r.permission_set_name == permission_set_name,
            None => parse_sso_role_name(role).is_some_and(|(ps, _)| ps == permission_set_name),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const USERS: &[u8] = include_bytes!("testdata/identity_center/list-users.json");
    const GROUPS: &[u8] = include_bytes!("testdata/identity_center/list-groups.json");
    const MEMBERSHIPS: &[u8] = include_bytes!("testdata/identity_center/list-group-memberships.json");
    const PS_LIST: &[u8] = include_bytes!("testdata/identity_center/list-permission-sets.json");
    const PS_DESCRIBE: &[u8] = include_bytes!("testdata/identity_center/describe-permission-set.jsonl");
    const ASSIGNMENTS: &[u8] = include_bytes!("testdata/identity_center/list-account-assignments.json");

    pub(crate) const ALICE: &str = "94482488-3041-7026-18f3-be45837cd0e4";
    pub(crate) const BOB: &str = "a4e8f4d8-5061-7087-d6bb-4ea6a4b2c3d1";
    pub(crate) const ADMIN_ROLE: &str = "arn:aws:iam::111122223333:role/aws-reserved/sso.amazonaws.com/eu-west-1/AWSReservedSSO_AdministratorAccess_0123456789abcdef";
    pub(crate) const ADMIN_FULL_ROLE: &str = "arn:aws:iam::111122223333:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_AdministratorAccess_Full_aaaabbbbccccdddd";
    pub(crate) const RO_ROLE: &str =
        "arn:aws:iam::444455556666:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_ReadOnly_fedcba9876543210";

    pub(crate) fn directory() -> IdentityCenter {
        let mut d = IdentityCenter::new();
        for bytes in [USERS, GROUPS, MEMBERSHIPS, PS_LIST, PS_DESCRIBE, ASSIGNMENTS] {
            d.add_bytes(bytes).unwrap();
        }
        d
    }

    pub(crate) fn roles() -> SsoRoleMatcher {
        SsoRoleMatcher::new([ADMIN_ROLE, ADMIN_FULL_ROLE, RO_ROLE, "arn:aws:iam::111122223333:role/Okta-Admin"])
    }

    #[test]
    fn exports_are_recognized_and_bad_records_named() {
        let (exports, skipped) = parse_export(USERS).unwrap();
        let [IdcExport::Users(users)] = exports.as_slice() else { panic!("{exports:?}") };
        assert_eq!(users.len(), 3);
        assert_eq!(skipped, [RecordError { index: 3, reason: "Users[3]: missing UserName".into() }]);
        assert_eq!(users[1].emails, ["bob@example.com"]);
        assert_eq!(users[1].uid(), format!("identitycenter:d-9067a1b2c3/users/{BOB}"));
        assert_eq!(users[2].primary_emails, 0);

        let (_, skipped) = parse_export(ASSIGNMENTS).unwrap();
        assert_eq!(skipped[0].index, 3);
        assert!(skipped[0].reason.contains("PrincipalType \"ROLE\""), "{}", skipped[0].reason);

        let (exports, _) = parse_export(PS_DESCRIBE).unwrap();
        assert_eq!(exports.len(), 3, "one describe-permission-set response per line");
        let e = parse_export(br#"{"Accounts": []}"#).unwrap_err();
        assert_eq!(e.to_string(), "not a recognized IAM Identity Center export: object with keys [Accounts]");
    }

    #[test]
    fn assignments_reach_users_directly_and_through_groups() {
        let d = directory();
        let alice = d.assignments_of_user(ALICE);
        let summary: Vec<(&str, Option<&str>, bool)> = alice
            .iter()
            .map(|a| (a.account.as_str(), a.permission_set_name.as_deref(), a.via_group.is_some()))
            .collect();
        assert_eq!(
            summary,
            [("111122223333", Some("AdministratorAccess"), true), ("444455556666", Some("ReadOnly"), false)]
        );
        let bob = d.assignments_of_user(BOB);
        assert_eq!(bob.len(), 1);
        assert_eq!(d.users_named("BOB").map(|u| u.user_id.as_str()).collect::<Vec<_>>(), [BOB]);
    }

    #[test]
    fn sso_roles_match_by_account_and_exact_permission_set_name() {
        let r = parse_sso_role(ADMIN_ROLE).unwrap();
        assert_eq!(
            r,
            SsoRole {
                account: "111122223333",
                permission_set_name: "AdministratorAccess",
                region: Some("eu-west-1"),
                suffix: "0123456789abcdef"
            }
        );
        assert_eq!(parse_sso_role(ADMIN_FULL_ROLE).unwrap().permission_set_name, "AdministratorAccess_Full");
        assert_eq!(parse_sso_role(RO_ROLE).unwrap().region, None);
        assert_eq!(parse_sso_role("arn:aws:iam::111122223333:role/Okta-Admin"), None);
        assert_eq!(parse_sso_role_name("AWSReservedSSO__abc"), None);
        assert_eq!(parse_sso_role_name("AWSReservedSSO_Admin"), None);

        let m = roles();
        assert_eq!(m.roles_for("111122223333", "AdministratorAccess"), [ADMIN_ROLE]);
        assert_eq!(m.roles_for("444455556666", "AdministratorAccess"), [] as [String; 0], "other account");
        assert!(SsoRoleMatcher::matches(ADMIN_ROLE, "111122223333", "AdministratorAccess"));
        assert!(!SsoRoleMatcher::matches(ADMIN_FULL_ROLE, "111122223333", "AdministratorAccess"));
        assert!(SsoRoleMatcher::matches("AWSReservedSSO_ReadOnly_0011", "444455556666", "ReadOnly"));

        let d = directory();
        let pairs = d.materialize(&m);
        assert_eq!(
            pairs,
            [
                (ALICE.to_string(), ADMIN_ROLE.to_string()),
                (ALICE.to_string(), RO_ROLE.to_string()),
                (BOB.to_string(), ADMIN_ROLE.to_string()),
                ("c4d8e4f8-1111-2222-3333-444455556666".to_string(), RO_ROLE.to_string()),
            ]
        );
    }
}
