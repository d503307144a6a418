//! Parsing `aws iam get-account-authorization-details` and `aws iam list-access-keys` output.
//!
//! Pure: [`parse_iam_json`] takes the bytes of one file and returns an [`IamDocument`]; many documents
//! (one per account, plus access-key files) are folded into one [`IamSnapshot`] with [`IamSnapshot::merge`].
//! Policy evaluation lives in [`crate::policy`].
//!
//! Accepted shapes:
//! * Authorization details: a top-level object with any of `UserDetailList`, `GroupDetailList`,
//!   `RoleDetailList`, `Policies`. Policy documents may be percent-encoded JSON strings (as the CLI returns
//!   them), plain JSON strings, or JSON objects. `Statement` may be an object or an array;
//!   `Action`/`NotAction`/`Resource`/`NotResource` and `Principal.AWS` may be a string or an array.
//!   The account of each identity comes from its ARN (`arn:aws:iam::<account>:...`).
//! * Access keys: a top-level object with `AccessKeyMetadata: [{UserName, AccessKeyId, Status, CreateDate}]`.
//!   `list-access-keys` output names no account, so grantwatch accepts an optional top-level
//!   **`"Account": "123456789012"`** field (grantwatch's own extension, also accepted per key). Keys are attached
//!   to users by `UserName` within that account; without an account, by `UserName` across all accounts of the
//!   snapshot, and a name that exists in several accounts is ambiguous: the key is attached to none and a
//!   warning is recorded (see [`IamSnapshot::resolve_access_keys`]).
//!
//! Malformed input never panics: structural problems are an [`IamError`] naming the file and the JSON path
//! (`RoleDetailList[3].RolePolicyList[0].PolicyDocument`); recoverable oddities (a managed policy without a
//! default version, an unparseable date) become warnings.

use grantwatch_types::EventTime;
use rustc_hash::FxHashMap;
use serde_json::{Map, Value};

/// The values of an identity's email-like tags (`Tags: [{Key, Value}]`), lower-cased. Tags are
/// optional and free-form: anything that is not a `{Key, Value}` of strings is skipped.
fn email_tags(o: &Map<String, Value>) -> Vec<String> {
    let Some(Value::Array(tags)) = o.get("Tags") else { return Vec::new() };
    let mut out: Vec<String> = tags
        .iter()
        .filter_map(|t| {
            let key = t.get("Key")?.as_str()?;
            let value = t.get("Value")?.as_str()?.trim();
            (["email", "mail", "e-mail"].iter().any(|k| key.eq_ignore_ascii_case(k)) && value.contains('@'))
                .then(|| value.to_ascii_lowercase())
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// A structural problem in one input file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {path}: {message}")]
pub struct IamError {
    /// The source name given to [`parse_iam_json`].
    pub file: String,
    /// JSON path of the offending value, e.g. `RoleDetailList[3].RolePolicyList[0].PolicyDocument`.
    pub path: String,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Effect {
    Allow,
    Deny,
}

/// The `Principal` of a (trust) policy statement.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Principal {
    /// `"Principal": "*"` or `{"AWS": "*"}`.
    pub any: bool,
    /// `Principal.AWS`: account ids, ARNs or `*`.
    pub aws: Vec<String>,
    pub service: Vec<String>,
    pub federated: Vec<String>,
}

/// One statement of a policy document.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Statement {
    pub sid: Option<String>,
    pub effect: Effect,
    /// True for `NotAction` (then `actions` holds the NotAction patterns).
    pub not_action: bool,
    pub actions: Vec<String>,
    /// True for `NotResource` (then `resources` holds the NotResource patterns).
    pub not_resource: bool,
    pub resources: Vec<String>,
    /// The `Condition` block as compact JSON, when present and non-empty: kept to be shown
    /// (`sts:ExternalId`, `aws:SourceIp`, ...); the evaluators only ask whether there is one.
    pub condition: Option<String>,
    pub principal: Option<Principal>,
}

impl Statement {
    /// Whether the statement applies only under a condition.
    pub fn has_condition(&self) -> bool {
        self.condition.is_some()
    }
}

/// A parsed policy document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PolicyDocument {
    pub statements: Vec<Statement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlinePolicy {
    pub name: String,
    pub document: PolicyDocument,
}

/// A customer or AWS managed policy from `Policies`, with its default version's document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedPolicy {
    pub arn: String,
    pub name: String,
    pub default_version: Option<String>,
    /// The default version's document; `None` if the snapshot does not carry it.
    pub document: Option<PolicyDocument>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IamUser {
    pub arn: String,
    pub account: String,
    pub name: String,
    pub path: String,
    pub created: Option<EventTime>,
    pub inline: Vec<InlinePolicy>,
    /// ARNs of attached managed policies.
    pub attached: Vec<String>,
    /// Names of the groups the user belongs to (same account).
    pub groups: Vec<String>,
    /// ARN of the permissions boundary policy.
    pub boundary: Option<String>,
    /// Values of the user's `email` (or `Email`, `mail`) tags, lower-cased: how an IAM user is linked
    /// to the human behind it.
    pub emails: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IamRole {
    pub arn: String,
    pub account: String,
    pub name: String,
    pub path: String,
    pub created: Option<EventTime>,
    pub last_used: Option<EventTime>,
    pub inline: Vec<InlinePolicy>,
    pub attached: Vec<String>,
    pub boundary: Option<String>,
    pub trust_policy: Option<PolicyDocument>,
    /// ARNs of the instance profiles holding the role (`InstanceProfileList`): an EC2 instance can run
    /// as the role only through one.
    pub instance_profiles: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IamGroup {
    pub arn: String,
    pub account: String,
    pub name: String,
    pub path: String,
    pub created: Option<EventTime>,
    pub inline: Vec<InlinePolicy>,
    pub attached: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessKey {
    pub user_name: String,
    pub access_key_id: String,
    /// `Active` or `Inactive`, as AWS spells it.
    pub status: String,
    /// `status` is `Active` (case-insensitive).
    pub active: bool,
    pub created: Option<EventTime>,
    /// The account, when the file said (grantwatch's `Account` extension); resolved keys always carry it.
    pub account: Option<String>,
}

/// The content of one input file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IamDocument {
    pub source_name: String,
    pub users: Vec<IamUser>,
    pub roles: Vec<IamRole>,
    pub groups: Vec<IamGroup>,
    pub policies: Vec<ManagedPolicy>,
    pub access_keys: Vec<AccessKey>,
    pub warnings: Vec<String>,
}

/// All IAM data of all accounts given.
#[derive(Debug, Clone, Default)]
pub struct IamSnapshot {
    /// Account ids seen in identity ARNs, sorted.
    pub accounts: Vec<String>,
    pub users: Vec<IamUser>,
    pub roles: Vec<IamRole>,
    pub groups: Vec<IamGroup>,
    /// Managed policies by ARN. AWS managed policies (`arn:aws:iam::aws:policy/...`) appear in every account's
    /// file: the first one carrying a document is kept.
    pub policies: FxHashMap<String, ManagedPolicy>,
    /// Access keys from `list-access-keys` files, as given (see [`IamSnapshot::resolve_access_keys`]).
    pub access_keys: Vec<AccessKey>,
    pub warnings: Vec<String>,
}

impl IamSnapshot {
    pub fn new() -> IamSnapshot {
        IamSnapshot::default()
    }

    /// Folds one file into the snapshot. Identities already present (same ARN) are replaced by the newer file's.
    pub fn merge(&mut self, doc: IamDocument) {
        fn upsert<T>(list: &mut Vec<T>, item: T, arn: impl Fn(&T) -> &str) {
            if let Some(slot) = list.iter_mut().find(|x| arn(x) == arn(&item)) {
                *slot = item;
            } else {
                list.push(item);
            }
        }
        // Linear upsert would be quadratic for big snapshots: index existing ARNs first.
        let known: rustc_hash::FxHashSet<String> = self
            .users
            .iter()
            .map(|u| u.arn.clone())
            .chain(self.roles.iter().map(|r| r.arn.clone()))
            .chain(self.groups.iter().map(|g| g.arn.clone()))
            .collect();
        let mut accounts: rustc_hash::FxHashSet<String> = self.accounts.drain(..).collect();
        for u in doc.users {
            accounts.insert(u.account.clone());
            if known.contains(&u.arn) {
                upsert(&mut self.users, u, |x| &x.arn);
            } else {
                self.users.push(u);
            }
        }
        for r in doc.roles {
            accounts.insert(r.account.clone());
            if known.contains(&r.arn) {
                upsert(&mut self.roles, r, |x| &x.arn);
            } else {
                self.roles.push(r);
            }
        }
        for g in doc.groups {
            accounts.insert(g.account.clone());
            if known.contains(&g.arn) {
                upsert(&mut self.groups, g, |x| &x.arn);
            } else {
                self.groups.push(g);
            }
        }
        for p in doc.policies {
            match self.policies.get(&p.arn) {
                Some(old) if old.document.is_some() && is_aws_managed(&p.arn) => {}
                _ => {
                    self.policies.insert(p.arn.clone(), p);
                }
            }
        }
        self.access_keys.extend(doc.access_keys);
        self.warnings.extend(doc.warnings);
        let mut accounts: Vec<String> = accounts.into_iter().collect();
        accounts.sort();
        self.accounts = accounts;
    }

    /// Attaches the snapshot's access keys to users: returns, for each user index, its keys (with `account`
    /// filled in), plus warnings for keys that match no user or an ambiguous user name.
    pub fn resolve_access_keys(&self) -> (Vec<Vec<AccessKey>>, Vec<String>) {
        let mut by_name: FxHashMap<&str, Vec<usize>> = FxHashMap::default();
        for (i, u) in self.users.iter().enumerate() {
            by_name.entry(u.name.as_str()).or_default().push(i);
        }
        let mut out = vec![Vec::new(); self.users.len()];
        let mut warnings = Vec::new();
        for k in &self.access_keys {
            let candidates: Vec<usize> = by_name
                .get(k.user_name.as_str())
                .map(|v| {
                    v.iter()
                        .copied()
                        .filter(|&i| {
                            k.account.as_deref().is_none_or(|a| self.users.get(i).is_some_and(|u| u.account == a))
                        })
                        .collect()
                })
                .unwrap_or_default();
            match candidates.as_slice() {
                [i] => {
                    if let (Some(slot), Some(u)) = (out.get_mut(*i), self.users.get(*i)) {
                        let mut k = k.clone();
                        k.account = Some(u.account.clone());
                        slot.push(k);
                    }
                }
                [] => warnings.push(format!(
                    "access key {} of user {:?}{} matches no user of the snapshot",
                    k.access_key_id,
                    k.user_name,
                    k.account.as_deref().map(|a| format!(" (account {a})")).unwrap_or_default()
                )),
                _ => warnings.push(format!(
                    "access key {} of user {:?}: that user name exists in several accounts; add \"Account\" to the \
                     list-access-keys file",
                    k.access_key_id, k.user_name
                )),
            }
        }
        (out, warnings)
    }
}

/// True for `arn:aws:iam::aws:policy/...` (any partition).
pub fn is_aws_managed(arn: &str) -> bool {
    arn_account(arn) == Some("aws") && arn.contains(":policy/")
}

/// The account field of an ARN (`arn:partition:service:region:account:resource`).
pub fn arn_account(arn: &str) -> Option<&str> {
    let mut parts = arn.splitn(6, ':');
    if parts.next()? != "arn" {
        return None;
    }
    let account = parts.nth(3)?;
    parts.next()?;
    Some(account)
}

/// A 12-digit AWS account id.
pub fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// The account a `Principal.AWS` entry names as a whole (`123456789012` or
/// `arn:aws:iam::123456789012:root`): the account delegates to its own policies. `None` for a user or
/// role ARN, or `*`.
pub fn account_principal(entry: &str) -> Option<&str> {
    if is_account_id(entry) {
        Some(entry)
    } else if entry.ends_with(":root") {
        arn_account(entry)
    } else {
        None
    }
}

/// The account a `Principal.AWS` entry belongs to, whatever its form: an account id, the account's
/// root, or a user or role ARN. `None` for `*` and for what is none of these.
pub fn principal_account(entry: &str) -> Option<&str> {
    if is_account_id(entry) { Some(entry) } else { arn_account(entry).filter(|a| !a.is_empty()) }
}

struct Cx<'a> {
    file: &'a str,
}

impl Cx<'_> {
    fn err(&self, path: &str, message: impl Into<String>) -> IamError {
        IamError { file: self.file.to_string(), path: path.to_string(), message: message.into() }
    }

    fn array<'v>(&self, obj: &'v Map<String, Value>, key: &str, path: &str) -> Result<&'v [Value], IamError> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(&[]),
            Some(Value::Array(a)) => Ok(a.as_slice()),
            Some(_) => Err(self.err(&join(path, key), "expected an array")),
        }
    }

    fn string(&self, obj: &Map<String, Value>, key: &str, path: &str) -> Result<String, IamError> {
        match obj.get(key) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(self.err(&join(path, key), "expected a string")),
            None => Err(self.err(&join(path, key), "missing")),
        }
    }

    fn opt_string(&self, obj: &Map<String, Value>, key: &str, path: &str) -> Result<Option<String>, IamError> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.err(&join(path, key), "expected a string")),
        }
    }

    fn object<'v>(&self, v: &'v Value, path: &str) -> Result<&'v Map<String, Value>, IamError> {
        v.as_object().ok_or_else(|| self.err(path, "expected an object"))
    }

    fn time(&self, obj: &Map<String, Value>, key: &str, path: &str, warnings: &mut Vec<String>) -> Option<EventTime> {
        match obj.get(key) {
            Some(Value::String(s)) => {
                let t = EventTime::parse_rfc3339(s);
                if t.is_none() {
                    warnings.push(format!("{}: {}: not an RFC 3339 time: {s:?}", self.file, join(path, key)));
                }
                t
            }
            None | Some(Value::Null) => None,
            Some(_) => {
                warnings.push(format!("{}: {}: not a time string", self.file, join(path, key)));
                None
            }
        }
    }

    fn account_of(&self, arn: &str, path: &str) -> Result<String, IamError> {
        match arn_account(arn) {
            Some(a) if !a.is_empty() => Ok(a.to_string()),
            _ => Err(self.err(&join(path, "Arn"), format!("not an ARN with an account: {arn:?}"))),
        }
    }

    fn inline_policies(&self, obj: &Map<String, Value>, key: &str, path: &str) -> Result<Vec<InlinePolicy>, IamError> {
        let mut out = Vec::new();
        for (i, p) in self.array(obj, key, path)?.iter().enumerate() {
            let pp = format!("{}[{i}]", join(path, key));
            let o = self.object(p, &pp)?;
            let name = self.opt_string(o, "PolicyName", &pp)?.unwrap_or_default();
            let doc = o.get("PolicyDocument").ok_or_else(|| self.err(&join(&pp, "PolicyDocument"), "missing"))?;
            let document = parse_document(self, doc, &join(&pp, "PolicyDocument"), false)?;
            out.push(InlinePolicy { name, document });
        }
        Ok(out)
    }

    fn attached(&self, obj: &Map<String, Value>, path: &str) -> Result<Vec<String>, IamError> {
        let key = "AttachedManagedPolicies";
        let mut out = Vec::new();
        for (i, p) in self.array(obj, key, path)?.iter().enumerate() {
            let pp = format!("{}[{i}]", join(path, key));
            out.push(self.string(self.object(p, &pp)?, "PolicyArn", &pp)?);
        }
        Ok(out)
    }

    fn boundary(&self, obj: &Map<String, Value>, path: &str) -> Result<Option<String>, IamError> {
        match obj.get("PermissionsBoundary") {
            None | Some(Value::Null) => Ok(None),
            Some(v) => {
                let pp = join(path, "PermissionsBoundary");
                self.opt_string(self.object(v, &pp)?, "PermissionsBoundaryArn", &pp)
            }
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

/// Parses one file: authorization details, access keys, or both.
pub fn parse_iam_json(bytes: &[u8], source_name: &str) -> Result<IamDocument, IamError> {
    let cx = Cx { file: source_name };
    let root: Value = serde_json::from_slice(bytes).map_err(|e| cx.err("$", format!("not JSON: {e}")))?;
    let root = cx.object(&root, "$")?;
    let mut doc = IamDocument { source_name: source_name.to_string(), ..IamDocument::default() };
    let is_details =
        ["UserDetailList", "GroupDetailList", "RoleDetailList", "Policies"].iter().any(|k| root.contains_key(*k));
    let is_keys = root.contains_key("AccessKeyMetadata");
    if !is_details && !is_keys {
        return Err(cx.err(
            "$",
            "neither get-account-authorization-details (UserDetailList, RoleDetailList, GroupDetailList, Policies) \
             nor list-access-keys (AccessKeyMetadata) output",
        ));
    }
    let mut warnings = Vec::new();

    for (i, u) in cx.array(root, "UserDetailList", "")?.iter().enumerate() {
        let p = format!("UserDetailList[{i}]");
        let o = cx.object(u, &p)?;
        let arn = cx.string(o, "Arn", &p)?;
        let mut groups = Vec::new();
        for (j, g) in cx.array(o, "GroupList", &p)?.iter().enumerate() {
            match g {
                Value::String(s) => groups.push(s.clone()),
                _ => return Err(cx.err(&format!("{p}.GroupList[{j}]"), "expected a group name")),
            }
        }
        doc.users.push(IamUser {
            account: cx.account_of(&arn, &p)?,
            name: cx.string(o, "UserName", &p)?,
            path: cx.opt_string(o, "Path", &p)?.unwrap_or_else(|| "/".to_string()),
            created: cx.time(o, "CreateDate", &p, &mut warnings),
            inline: cx.inline_policies(o, "UserPolicyList", &p)?,
            attached: cx.attached(o, &p)?,
            groups,
            boundary: cx.boundary(o, &p)?,
            emails: email_tags(o),
            arn,
        });
    }

    for (i, g) in cx.array(root, "GroupDetailList", "")?.iter().enumerate() {
        let p = format!("GroupDetailList[{i}]");
        let o = cx.object(g, &p)?;
        let arn = cx.string(o, "Arn", &p)?;
        doc.groups.push(IamGroup {
            account: cx.account_of(&arn, &p)?,
            name: cx.string(o, "GroupName", &p)?,
            path: cx.opt_string(o, "Path", &p)?.unwrap_or_else(|| "/".to_string()),
            created: cx.time(o, "CreateDate", &p, &mut warnings),
            inline: cx.inline_policies(o, "GroupPolicyList", &p)?,
            attached: cx.attached(o, &p)?,
            arn,
        });
    }

    for (i, r) in cx.array(root, "RoleDetailList", "")?.iter().enumerate() {
        let p = format!("RoleDetailList[{i}]");
        let o = cx.object(r, &p)?;
        let arn = cx.string(o, "Arn", &p)?;
        let trust_policy = match o.get("AssumeRolePolicyDocument") {
            None | Some(Value::Null) => None,
            Some(v) => Some(parse_document(&cx, v, &join(&p, "AssumeRolePolicyDocument"), true)?),
        };
        let last_used = match o.get("RoleLastUsed") {
            Some(Value::Object(lu)) => cx.time(lu, "LastUsedDate", &join(&p, "RoleLastUsed"), &mut warnings),
            _ => None,
        };
        doc.roles.push(IamRole {
            account: cx.account_of(&arn, &p)?,
            name: cx.string(o, "RoleName", &p)?,
            path: cx.opt_string(o, "Path", &p)?.unwrap_or_else(|| "/".to_string()),
            created: cx.time(o, "CreateDate", &p, &mut warnings),
            last_used,
            inline: cx.inline_policies(o, "RolePolicyList", &p)?,
            attached: cx.attached(o, &p)?,
            boundary: cx.boundary(o, &p)?,
            trust_policy,
            instance_profiles: match o.get("InstanceProfileList") {
                Some(Value::Array(items)) => {
                    items.iter().filter_map(|ip| ip.get("Arn").and_then(Value::as_str).map(str::to_string)).collect()
                }
                _ => Vec::new(),
            },
            arn,
        });
    }

    for (i, pol) in cx.array(root, "Policies", "")?.iter().enumerate() {
        let p = format!("Policies[{i}]");
        let o = cx.object(pol, &p)?;
        let arn = cx.string(o, "Arn", &p)?;
        let default_version = cx.opt_string(o, "DefaultVersionId", &p)?;
        let versions = cx.array(o, "PolicyVersionList", &p)?;
        let mut chosen = None;
        for (j, v) in versions.iter().enumerate() {
            let vp = format!("{p}.PolicyVersionList[{j}]");
            let vo = cx.object(v, &vp)?;
            let is_default = matches!(vo.get("IsDefaultVersion"), Some(Value::Bool(true)))
                || (default_version.is_some() && cx.opt_string(vo, "VersionId", &vp)? == default_version);
            if is_default {
                chosen = Some((vo, vp));
                break;
            }
        }
        let document = match chosen {
            Some((vo, vp)) => match vo.get("Document") {
                Some(d) => Some(parse_document(&cx, d, &join(&vp, "Document"), false)?),
                None => {
                    warnings.push(format!("{source_name}: {vp}: default version has no Document"));
                    None
                }
            },
            None => {
                warnings.push(format!("{source_name}: {p}: managed policy {arn} has no default version document"));
                None
            }
        };
        doc.policies.push(ManagedPolicy {
            name: cx
                .opt_string(o, "PolicyName", &p)?
                .unwrap_or_else(|| arn.rsplit('/').next().unwrap_or("").to_string()),
            default_version,
            document,
            arn,
        });
    }

    let file_account = cx.opt_string(root, "Account", "")?;
    for (i, k) in cx.array(root, "AccessKeyMetadata", "")?.iter().enumerate() {
        let p = format!("AccessKeyMetadata[{i}]");
        let o = cx.object(k, &p)?;
        let status = cx.opt_string(o, "Status", &p)?.unwrap_or_else(|| "Active".to_string());
        doc.access_keys.push(AccessKey {
            user_name: cx.string(o, "UserName", &p)?,
            access_key_id: cx.string(o, "AccessKeyId", &p)?,
            active: status.eq_ignore_ascii_case("active"),
            status,
            created: cx.time(o, "CreateDate", &p, &mut warnings),
            account: cx.opt_string(o, "Account", &p)?.or_else(|| file_account.clone()),
        });
    }
    doc.warnings = warnings;
    Ok(doc)
}

/// Parses a policy document from a JSON value: an object, or a (possibly percent-encoded) JSON string.
/// `trust` documents (`AssumeRolePolicyDocument`) may omit `Resource`.
pub fn parse_policy_document(
    value: &Value,
    source_name: &str,
    path: &str,
    trust: bool,
) -> Result<PolicyDocument, IamError> {
    parse_document(&Cx { file: source_name }, value, path, trust)
}

fn parse_document(cx: &Cx<'_>, value: &Value, path: &str, trust: bool) -> Result<PolicyDocument, IamError> {
    let decoded;
    let obj = match value {
        Value::Object(o) => o,
        Value::String(s) => {
            decoded = decode_document_string(s)
                .ok_or_else(|| cx.err(path, "policy document string is not (URL-encoded) JSON"))?;
            cx.object(&decoded, path)?
        }
        _ => return Err(cx.err(path, "expected a policy document (object or URL-encoded JSON string)")),
    };
    let mut statements = Vec::new();
    match obj.get("Statement") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, s) in items.iter().enumerate() {
                statements.push(parse_statement(cx, s, &format!("{path}.Statement[{i}]"), trust)?);
            }
        }
        Some(s @ Value::Object(_)) => statements.push(parse_statement(cx, s, &join(path, "Statement"), trust)?),
        Some(_) => return Err(cx.err(&join(path, "Statement"), "expected an object or an array")),
    }
    Ok(PolicyDocument { statements })
}

fn decode_document_string(s: &str) -> Option<Value> {
    if s.trim_start().starts_with('{')
        && let Ok(v) = serde_json::from_str::<Value>(s)
    {
        return Some(v);
    }
    let decoded = percent_encoding::percent_decode_str(s).decode_utf8().ok()?;
    serde_json::from_str::<Value>(&decoded).ok().or_else(|| {
        // Some exporters encode spaces as '+' (form encoding).
        let plus = s.replace('+', " ");
        let decoded = percent_encoding::percent_decode_str(&plus).decode_utf8().ok()?;
        serde_json::from_str::<Value>(&decoded).ok()
    })
}

fn string_or_array(cx: &Cx<'_>, v: &Value, path: &str) -> Result<Vec<String>, IamError> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, x)| match x {
                Value::String(s) => Ok(s.clone()),
                _ => Err(cx.err(&format!("{path}[{i}]"), "expected a string")),
            })
            .collect(),
        _ => Err(cx.err(path, "expected a string or an array of strings")),
    }
}

fn parse_statement(cx: &Cx<'_>, v: &Value, path: &str, trust: bool) -> Result<Statement, IamError> {
    let o = cx.object(v, path)?;
    let effect = match o.get("Effect") {
        Some(Value::String(s)) if s.eq_ignore_ascii_case("allow") => Effect::Allow,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("deny") => Effect::Deny,
        Some(_) => return Err(cx.err(&join(path, "Effect"), "expected \"Allow\" or \"Deny\"")),
        None => return Err(cx.err(&join(path, "Effect"), "missing")),
    };
    let (not_action, actions) = match (o.get("Action"), o.get("NotAction")) {
        (Some(a), None) => (false, string_or_array(cx, a, &join(path, "Action"))?),
        (None, Some(a)) => (true, string_or_array(cx, a, &join(path, "NotAction"))?),
        (Some(_), Some(_)) => return Err(cx.err(path, "both Action and NotAction")),
        (None, None) => return Err(cx.err(path, "neither Action nor NotAction")),
    };
    let (not_resource, resources) = match (o.get("Resource"), o.get("NotResource")) {
        (Some(r), None) => (false, string_or_array(cx, r, &join(path, "Resource"))?),
        (None, Some(r)) => (true, string_or_array(cx, r, &join(path, "NotResource"))?),
        (Some(_), Some(_)) => return Err(cx.err(path, "both Resource and NotResource")),
        (None, None) if trust => (false, Vec::new()),
        (None, None) => return Err(cx.err(path, "neither Resource nor NotResource")),
    };
    let condition = match o.get("Condition") {
        None | Some(Value::Null) => None,
        Some(Value::Object(c)) if c.is_empty() => None,
        Some(c @ Value::Object(_)) => Some(c.to_string()),
        Some(_) => return Err(cx.err(&join(path, "Condition"), "expected an object")),
    };
    let principal = match o.get("Principal") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s == "*" => Some(Principal { any: true, ..Principal::default() }),
        Some(Value::Object(p)) => {
            let pp = join(path, "Principal");
            let list = |key: &str| -> Result<Vec<String>, IamError> {
                p.get(key).map_or(Ok(Vec::new()), |v| string_or_array(cx, v, &join(&pp, key)))
            };
            let aws = list("AWS")?;
            Some(Principal {
                any: aws.iter().any(|a| a == "*"),
                aws,
                service: list("Service")?,
                federated: list("Federated")?,
            })
        }
        Some(_) => return Err(cx.err(&join(path, "Principal"), "expected \"*\" or an object")),
    };
    let sid = match o.get("Sid") {
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    };
    Ok(Statement { sid, effect, not_action, actions, not_resource, resources, condition, principal })
}

/// A policy document as IAM's JSON (`Version` 2012-10-17; lists always arrays; `Condition` as parsed):
/// what `parse_policy_document` reads back to the same [`PolicyDocument`].
pub fn document_json(doc: &PolicyDocument) -> Value {
    let statements: Vec<Value> = doc.statements.iter().map(statement_json).collect();
    serde_json::json!({ "Version": "2012-10-17", "Statement": statements })
}

/// One statement as IAM's JSON.
pub fn statement_json(s: &Statement) -> Value {
    let mut o = Map::new();
    if let Some(sid) = &s.sid {
        o.insert("Sid".into(), Value::String(sid.clone()));
    }
    o.insert("Effect".into(), Value::String(if s.effect == Effect::Allow { "Allow" } else { "Deny" }.into()));
    if let Some(p) = &s.principal {
        let principal = if p.any && p.aws.iter().all(|a| a == "*") && p.service.is_empty() && p.federated.is_empty() {
            Value::String("*".into())
        } else {
            let mut po = Map::new();
            for (key, list) in [("AWS", &p.aws), ("Service", &p.service), ("Federated", &p.federated)] {
                if !list.is_empty() {
                    po.insert(key.into(), Value::Array(list.iter().cloned().map(Value::String).collect()));
                }
            }
            Value::Object(po)
        };
        o.insert("Principal".into(), principal);
    }
    let strings = |l: &[String]| Value::Array(l.iter().cloned().map(Value::String).collect());
    o.insert(if s.not_action { "NotAction" } else { "Action" }.into(), strings(&s.actions));
    // Trust policies may have no resource at all.
    if !s.resources.is_empty() || s.not_resource {
        o.insert(if s.not_resource { "NotResource" } else { "Resource" }.into(), strings(&s.resources));
    }
    if let Some(c) = &s.condition
        && let Ok(v) = serde_json::from_str::<Value>(c)
    {
        o.insert("Condition".into(), v);
    }
    Value::Object(o)
}

impl IamSnapshot {
    /// The snapshot's identities and policies of `account`, in the shape of
    /// `aws iam get-account-authorization-details` (plus its access keys as `AccessKeyMetadata`, the
    /// shape of `list-access-keys`, which [`parse_iam_json`] reads from the same file). Managed policies
    /// are those of the account and the AWS managed policies its identities attach.
    pub fn authorization_details(&self, account: &str) -> Value {
        let time = |t: Option<EventTime>| t.map(|t| Value::String(t.to_rfc3339()));
        let inline = |list: &[InlinePolicy]| -> Value {
            Value::Array(
                list.iter()
                    .map(|p| serde_json::json!({ "PolicyName": p.name, "PolicyDocument": document_json(&p.document) }))
                    .collect(),
            )
        };
        let attached = |list: &[String]| -> Value {
            Value::Array(
                list.iter()
                    .map(|arn| {
                        let name = self
                            .policies
                            .get(arn)
                            .map_or_else(|| arn.rsplit('/').next().unwrap_or(arn).to_string(), |p| p.name.clone());
                        serde_json::json!({ "PolicyName": name, "PolicyArn": arn })
                    })
                    .collect(),
            )
        };
        let boundary = |b: &Option<String>, o: &mut Map<String, Value>| {
            if let Some(b) = b {
                o.insert(
                    "PermissionsBoundary".into(),
                    serde_json::json!({ "PermissionsBoundaryType": "Policy", "PermissionsBoundaryArn": b }),
                );
            }
        };
        let mut users = Vec::new();
        let mut used_policies: Vec<&str> = Vec::new();
        for u in self.users.iter().filter(|u| u.account == account) {
            let mut o = Map::new();
            o.insert("Path".into(), Value::String(u.path.clone()));
            o.insert("UserName".into(), Value::String(u.name.clone()));
            o.insert("Arn".into(), Value::String(u.arn.clone()));
            if let Some(t) = time(u.created) {
                o.insert("CreateDate".into(), t);
            }
            o.insert("UserPolicyList".into(), inline(&u.inline));
            o.insert("GroupList".into(), Value::Array(u.groups.iter().cloned().map(Value::String).collect()));
            o.insert("AttachedManagedPolicies".into(), attached(&u.attached));
            boundary(&u.boundary, &mut o);
            used_policies.extend(u.attached.iter().map(String::as_str));
            users.push(Value::Object(o));
        }
        let mut groups = Vec::new();
        for g in self.groups.iter().filter(|g| g.account == account) {
            let mut o = Map::new();
            o.insert("Path".into(), Value::String(g.path.clone()));
            o.insert("GroupName".into(), Value::String(g.name.clone()));
            o.insert("Arn".into(), Value::String(g.arn.clone()));
            if let Some(t) = time(g.created) {
                o.insert("CreateDate".into(), t);
            }
            o.insert("GroupPolicyList".into(), inline(&g.inline));
            o.insert("AttachedManagedPolicies".into(), attached(&g.attached));
            used_policies.extend(g.attached.iter().map(String::as_str));
            groups.push(Value::Object(o));
        }
        let mut roles = Vec::new();
        for r in self.roles.iter().filter(|r| r.account == account) {
            let mut o = Map::new();
            o.insert("Path".into(), Value::String(r.path.clone()));
            o.insert("RoleName".into(), Value::String(r.name.clone()));
            o.insert("Arn".into(), Value::String(r.arn.clone()));
            if let Some(t) = time(r.created) {
                o.insert("CreateDate".into(), t);
            }
            if let Some(t) = &r.trust_policy {
                o.insert("AssumeRolePolicyDocument".into(), document_json(t));
            }
            o.insert(
                "InstanceProfileList".into(),
                Value::Array(r.instance_profiles.iter().map(|a| serde_json::json!({ "Arn": a })).collect()),
            );
            o.insert("RolePolicyList".into(), inline(&r.inline));
            o.insert("AttachedManagedPolicies".into(), attached(&r.attached));
            boundary(&r.boundary, &mut o);
            if let Some(t) = time(r.last_used) {
                o.insert("RoleLastUsed".into(), serde_json::json!({ "LastUsedDate": t }));
            }
            used_policies.extend(r.attached.iter().map(String::as_str));
            roles.push(Value::Object(o));
        }
        let mut policies: Vec<&ManagedPolicy> = self
            .policies
            .values()
            .filter(|p| {
                arn_account(&p.arn) == Some(account)
                    || (is_aws_managed(&p.arn) && used_policies.contains(&p.arn.as_str()))
            })
            .collect();
        policies.sort_by(|a, b| a.arn.cmp(&b.arn));
        let policies: Vec<Value> = policies
            .into_iter()
            .map(|p| {
                let version = p.default_version.clone().unwrap_or_else(|| "v1".to_string());
                let versions = match &p.document {
                    Some(d) => serde_json::json!([{ "Document": document_json(d), "VersionId": version, "IsDefaultVersion": true }]),
                    None => serde_json::json!([]),
                };
                serde_json::json!({
                    "PolicyName": p.name,
                    "Arn": p.arn,
                    "DefaultVersionId": version,
                    "PolicyVersionList": versions,
                })
            })
            .collect();
        let keys: Vec<Value> = self
            .access_keys
            .iter()
            .filter(|k| {
                k.account.as_deref() == Some(account)
                    || (k.account.is_none() && self.users.iter().any(|u| u.account == account && u.name == k.user_name))
            })
            .map(|k| {
                let mut o = Map::new();
                o.insert("UserName".into(), Value::String(k.user_name.clone()));
                o.insert("AccessKeyId".into(), Value::String(k.access_key_id.clone()));
                o.insert("Status".into(), Value::String(k.status.clone()));
                if let Some(t) = time(k.created) {
                    o.insert("CreateDate".into(), t);
                }
                Value::Object(o)
            })
            .collect();
        serde_json::json!({
            "Account": account,
            "UserDetailList": users,
            "GroupDetailList": groups,
            "RoleDetailList": roles,
            "Policies": policies,
            "AccessKeyMetadata": keys,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arn_account_parses() {
        assert_eq!(arn_account("arn:aws:iam::123456789012:user/a"), Some("123456789012"));
        assert_eq!(arn_account("arn:aws:iam::aws:policy/ReadOnlyAccess"), Some("aws"));
        assert_eq!(arn_account("arn:aws:iam"), None);
        assert_eq!(arn_account("nope"), None);
        assert!(is_aws_managed("arn:aws:iam::aws:policy/service-role/X"));
        assert!(!is_aws_managed("arn:aws:iam::123456789012:policy/X"));
    }

    #[test]
    fn malformed_inputs_are_errors_with_paths() {
        let e = parse_iam_json(b"[1]", "f.json").unwrap_err();
        assert_eq!(e.path, "$");
        let e = parse_iam_json(
            br#"{"RoleDetailList":[{"RoleName":"r","Arn":"arn:aws:iam::111122223333:role/r","RolePolicyList":[{"PolicyName":"p","PolicyDocument":{"Statement":{"Effect":"Allow","Action":5,"Resource":"*"}}}]}]}"#,
            "f.json",
        )
        .unwrap_err();
        assert_eq!(e.path, "RoleDetailList[0].RolePolicyList[0].PolicyDocument.Statement.Action");
        assert!(e.to_string().starts_with("f.json: "));
        let e = parse_iam_json(br#"{"UserDetailList":[{"UserName":"u","Arn":"bad"}]}"#, "g").unwrap_err();
        assert_eq!(e.path, "UserDetailList[0].Arn");
    }

    #[test]
    fn encoded_documents_decode() {
        let enc = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%7B%22Effect%22%3A%22Allow%22%2C%22Action%22%3A%22s3%3AGetObject%22%2C%22Resource%22%3A%22*%22%7D%5D%7D";
        let d = parse_policy_document(&Value::String(enc.to_string()), "x", "p", false).unwrap();
        assert_eq!(d.statements.len(), 1);
        assert_eq!(d.statements[0].actions, vec!["s3:GetObject".to_string()]);
    }
}
