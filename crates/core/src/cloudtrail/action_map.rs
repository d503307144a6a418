//! CloudTrail `(eventSource, eventName)` to IAM action(s).
//!
//! Rules, first match wins (all case-insensitive):
//! 1. `exceptions.json` (renamed events, known API-version suffixes, calls needing several actions,
//!    `actions: []` = needs no permission), each entry with its reason.
//! 2. iamlive's permissionless SDK calls (`sdk-multi-action.json` `permissionless`) → [`ActionMapping::NoPermission`].
//! 3. iamlive's multi-action SDK calls (`multi_action_methods`, re-keyed by IAM prefix + method) → `Exception`.
//! 4. `prefix:eventName` in the catalog → `Direct`, where prefix = `cloudtrail_service_mappings[eventSource]`
//!    (fallback: the first DNS label of eventSource).
//! 5. eventName with a trailing API-version suffix `\d{8}(v\d+)?` stripped, rules 1–4 again → `Exception`
//!    (or `NoPermission`).
//! 6. Otherwise `Unmapped`.
//!
//! Every pair the rules can name (every catalog action under every mapped eventSource, every exception
//! and multi-action entry) is resolved once at construction into an `FxHashMap`; a lookup is one hash
//! probe on a lower-cased key built in a stack buffer. Other pairs (unknown sources, suffixed names) are
//! resolved on first sight and kept in a bounded cache.

use std::borrow::Cow;
use std::sync::{Arc, RwLock};

use grantwatch_types::ActionMapping;
use rustc_hash::{FxHashMap, FxHashSet};
use serde::Deserialize;

use crate::catalog::{ActionId, Catalog};

const EVENTSOURCE_MAP_JSON: &str = include_str!("../../../../data/aws/cloudtrail-eventsource-map.json");
const SDK_MULTI_JSON: &str = include_str!("../../../../data/aws/sdk-multi-action.json");
/// The exception table (see its `_comment`); public so tools and tests can read the reasons.
pub const EXCEPTIONS_JSON: &str = include_str!("exceptions.json");

/// Upper bound on pairs kept in the on-demand cache (protects against unbounded garbage input).
const MISS_CACHE_CAP: usize = 65_536;

/// What one API call maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub mapping: ActionMapping,
    /// Action names as the catalog spells them, sorted, deduplicated. Empty for `NoPermission`/`Unmapped`.
    pub actions: Vec<String>,
    /// The same actions as catalog ids (same order).
    pub ids: Vec<ActionId>,
}

impl Resolution {
    fn empty(mapping: ActionMapping) -> Resolution {
        Resolution { mapping, actions: Vec::new(), ids: Vec::new() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ActionMapError {
    #[error("embedded CloudTrail mapping data is unreadable ({file}): {msg}")]
    Embedded { file: &'static str, msg: String },
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
}

/// One entry of `exceptions.json`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExceptionEntry {
    pub event_source: String,
    pub event_name: String,
    pub actions: Vec<String>,
    pub reason: String,
}

#[derive(Deserialize)]
struct ExceptionsFile {
    exceptions: Vec<ExceptionEntry>,
}

#[derive(Deserialize)]
struct SdkFile {
    multi_action_methods: FxHashMap<String, Vec<String>>,
    permissionless: Vec<String>,
    sdk_service_mappings: FxHashMap<String, String>,
}

/// (IAM prefix, action name), lower-case, of the calls that need no permission: the exceptions
/// mapped to no action (their eventSource's prefix) and iamlive's permissionless SDK calls. Read
/// from the embedded data by [`Catalog::aws`], which keeps those that are catalog actions.
pub fn permissionless_names() -> Result<Vec<(String, String)>, ActionMapError> {
    let src_map: FxHashMap<String, String> = serde_json::from_str(EVENTSOURCE_MAP_JSON)
        .map_err(|e| ActionMapError::Embedded { file: "cloudtrail-eventsource-map.json", msg: e.to_string() })?;
    let sdk: SdkFile = serde_json::from_str(SDK_MULTI_JSON)
        .map_err(|e| ActionMapError::Embedded { file: "sdk-multi-action.json", msg: e.to_string() })?;
    let mut out = Vec::new();
    for e in exception_entries()?.into_iter().filter(|e| e.actions.is_empty()) {
        let src = e.event_source.to_ascii_lowercase();
        let prefix = match src_map.iter().find(|(k, _)| k.eq_ignore_ascii_case(&src)) {
            Some((_, p)) => p.to_ascii_lowercase(),
            None => src.split('.').next().unwrap_or_default().to_string(),
        };
        out.push((prefix, e.event_name.to_ascii_lowercase()));
    }
    for m in &sdk.permissionless {
        let Some((svc, name)) = m.split_once('.') else { continue };
        let prefix = sdk.sdk_service_mappings.get(svc).cloned().unwrap_or_else(|| svc.to_string());
        out.push((prefix.to_ascii_lowercase(), name.to_ascii_lowercase()));
    }
    Ok(out)
}

/// Parses the embedded exception table.
pub fn exception_entries() -> Result<Vec<ExceptionEntry>, ActionMapError> {
    serde_json::from_str::<ExceptionsFile>(EXCEPTIONS_JSON)
        .map(|f| f.exceptions)
        .map_err(|e| ActionMapError::Embedded { file: "exceptions.json", msg: e.to_string() })
}

/// The CloudTrail → IAM action mapping. Cheap to share (`&ActionMap` is `Sync`).
#[derive(Debug)]
pub struct ActionMap {
    catalog: Arc<Catalog>,
    /// Lower-case eventSource → IAM prefix (lower-case).
    prefixes: FxHashMap<String, String>,
    /// (lower-case eventSource, lower-case eventName) → catalog-spelled actions; `[]` = no permission.
    exceptions: FxHashMap<(String, String), Vec<String>>,
    /// (lower-case IAM prefix, lower-case method) → actions (from iamlive).
    multi: FxHashMap<(String, String), Vec<String>>,
    /// (lower-case IAM prefix, lower-case method) that need no permission (from iamlive).
    permissionless: FxHashSet<(String, String)>,
    /// Precomputed: `"eventsource\0eventname"` lower-case → resolution.
    resolved: FxHashMap<Box<str>, Resolution>,
    miss_cache: RwLock<FxHashMap<Box<str>, Resolution>>,
}

impl ActionMap {
    /// The mapping over the AWS catalog compiled into this binary.
    pub fn aws() -> Result<ActionMap, ActionMapError> {
        ActionMap::new(Arc::new(Catalog::aws()?))
    }

    /// Builds the mapping over `catalog` with the embedded eventSource map, iamlive data and exceptions.
    /// Listed actions that are not in `catalog` are dropped (a test checks the AWS catalog has them all).
    pub fn new(catalog: Arc<Catalog>) -> Result<ActionMap, ActionMapError> {
        let src_map: FxHashMap<String, String> = serde_json::from_str(EVENTSOURCE_MAP_JSON)
            .map_err(|e| ActionMapError::Embedded { file: "cloudtrail-eventsource-map.json", msg: e.to_string() })?;
        let sdk: SdkFile = serde_json::from_str(SDK_MULTI_JSON)
            .map_err(|e| ActionMapError::Embedded { file: "sdk-multi-action.json", msg: e.to_string() })?;
        let prefixes: FxHashMap<String, String> =
            src_map.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v.to_ascii_lowercase())).collect();

        let exceptions: FxHashMap<(String, String), Vec<String>> = exception_entries()?
            .into_iter()
            .map(|e| {
                let key = (e.event_source.to_ascii_lowercase(), e.event_name.to_ascii_lowercase());
                (key, e.actions)
            })
            .collect();

        let sdk_prefix = |svc: &str| -> Option<String> {
            let p = sdk.sdk_service_mappings.get(svc).cloned().unwrap_or_else(|| svc.to_ascii_lowercase());
            catalog.has_prefix(&p).then(|| p.to_ascii_lowercase())
        };
        let mut multi: FxHashMap<(String, String), Vec<String>> = FxHashMap::default();
        for (method, actions) in &sdk.multi_action_methods {
            let Some((svc, name)) = method.split_once('.') else { continue };
            let Some(prefix) = sdk_prefix(svc) else { continue };
            multi.entry((prefix, name.to_ascii_lowercase())).or_default().extend(actions.iter().cloned());
        }
        let permissionless = sdk
            .permissionless
            .iter()
            .filter_map(|m| {
                let (svc, name) = m.split_once('.')?;
                Some((sdk_prefix(svc)?, name.to_ascii_lowercase()))
            })
            .collect();

        let mut map = ActionMap {
            catalog,
            prefixes,
            exceptions,
            multi,
            permissionless,
            resolved: FxHashMap::default(),
            miss_cache: RwLock::new(FxHashMap::default()),
        };
        map.precompute();
        Ok(map)
    }

    fn precompute(&mut self) {
        // Inverse of the eventSource map: IAM prefix → eventSources.
        let mut sources_of: FxHashMap<&str, Vec<&str>> = FxHashMap::default();
        for (src, prefix) in &self.prefixes {
            sources_of.entry(prefix.as_str()).or_default().push(src.as_str());
        }
        let mut pairs: FxHashSet<(String, String)> = FxHashSet::default();
        for (prefix, sources) in &sources_of {
            let names = self.catalog.expand(&format!("{prefix}:*"));
            for id in names.iter() {
                let full = self.catalog.name(id);
                let Some((_, name)) = full.split_once(':') else { continue };
                for src in sources {
                    pairs.insert(((*src).to_string(), name.to_ascii_lowercase()));
                }
            }
        }
        for (prefix, name) in self.multi.keys().chain(self.permissionless.iter()) {
            for src in sources_of.get(prefix.as_str()).into_iter().flatten() {
                pairs.insert(((*src).to_string(), name.clone()));
            }
        }
        pairs.extend(self.exceptions.keys().cloned());
        let resolved: FxHashMap<Box<str>, Resolution> = pairs
            .into_iter()
            .map(|(src, name)| {
                let r = self.resolve(&src, &name);
                (format!("{src}\0{name}").into_boxed_str(), r)
            })
            .collect();
        self.resolved = resolved;
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The catalog, shared.
    pub fn catalog_arc(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// The IAM prefix of an eventSource (`s3.amazonaws.com` → `s3`), lower-case.
    pub fn prefix_of<'s>(&'s self, event_source: &'s str) -> Cow<'s, str> {
        if let Some(p) = self.prefixes.get(event_source) {
            return Cow::Borrowed(p.as_str());
        }
        let lower = event_source.to_ascii_lowercase();
        if let Some(p) = self.prefixes.get(&lower) {
            return Cow::Borrowed(p.as_str());
        }
        match lower.split_once('.') {
            Some((first, _)) => Cow::Owned(first.to_string()),
            None => Cow::Owned(lower),
        }
    }

    /// Maps one API call. A hash lookup for every known pair; unknown pairs are resolved and cached.
    pub fn map_event(&self, event_source: &str, event_name: &str) -> Cow<'_, Resolution> {
        let mut buf = [0u8; 192];
        let n = event_source.len() + 1 + event_name.len();
        let owned;
        let key: &str = if n <= buf.len() {
            let (a, rest) = buf.split_at_mut(event_source.len());
            a.copy_from_slice(event_source.as_bytes());
            let (sep, b) = rest.split_at_mut(1);
            sep.copy_from_slice(b"\0");
            if let Some(b) = b.get_mut(..event_name.len()) {
                b.copy_from_slice(event_name.as_bytes());
            }
            let used = buf.get_mut(..n).unwrap_or_default();
            used.make_ascii_lowercase();
            // Lower-casing ASCII bytes of valid UTF-8 keeps it valid UTF-8.
            match std::str::from_utf8(used) {
                Ok(s) => s,
                Err(_) => return Cow::Owned(Resolution::empty(ActionMapping::Unmapped)),
            }
        } else {
            owned = format!("{event_source}\0{event_name}").to_ascii_lowercase();
            &owned
        };
        if let Some(r) = self.resolved.get(key) {
            return Cow::Borrowed(r);
        }
        if let Ok(cache) = self.miss_cache.read()
            && let Some(r) = cache.get(key)
        {
            return Cow::Owned(r.clone());
        }
        let (src, name) = key.split_once('\0').unwrap_or((key, ""));
        let r = self.resolve(src, name);
        if let Ok(mut cache) = self.miss_cache.write()
            && cache.len() < MISS_CACHE_CAP
        {
            cache.insert(key.into(), r.clone());
        }
        Cow::Owned(r)
    }

    /// The full rule chain on lower-case inputs.
    fn resolve(&self, src: &str, name: &str) -> Resolution {
        let prefix = self.prefix_of(src).into_owned();
        if let Some(r) = self.resolve_exact(src, &prefix, name) {
            return r;
        }
        if let Some(stripped) = strip_version_suffix(name)
            && let Some(mut r) = self.resolve_exact(src, &prefix, stripped)
        {
            if r.mapping == ActionMapping::Direct {
                r.mapping = ActionMapping::Exception;
            }
            return r;
        }
        Resolution::empty(ActionMapping::Unmapped)
    }

    fn resolve_exact(&self, src: &str, prefix: &str, name: &str) -> Option<Resolution> {
        let key = (src.to_string(), name.to_string());
        if let Some(actions) = self.exceptions.get(&key) {
            if actions.is_empty() {
                return Some(Resolution::empty(ActionMapping::NoPermission));
            }
            return self.resolution_of(actions, ActionMapping::Exception);
        }
        let pkey = (prefix.to_string(), name.to_string());
        if self.permissionless.contains(&pkey) {
            return Some(Resolution::empty(ActionMapping::NoPermission));
        }
        if let Some(actions) = self.multi.get(&pkey)
            && let Some(r) = self.resolution_of(actions, ActionMapping::Exception)
        {
            return Some(r);
        }
        let id = self.catalog.lookup_parts(prefix, name)?;
        Some(Resolution {
            mapping: ActionMapping::Direct,
            actions: vec![self.catalog.name(id).to_string()],
            ids: vec![id],
        })
    }

    /// Catalog ids and spellings of `actions`, dropping unknown ones; `None` if none is known.
    fn resolution_of(&self, actions: &[String], mapping: ActionMapping) -> Option<Resolution> {
        let mut ids: Vec<ActionId> = actions.iter().filter_map(|a| self.catalog.lookup(a)).collect();
        ids.sort_by(|a, b| self.catalog.name(*a).cmp(self.catalog.name(*b)));
        ids.dedup();
        if ids.is_empty() {
            return None;
        }
        let actions = ids.iter().map(|&id| self.catalog.name(id).to_string()).collect();
        Some(Resolution { mapping, actions, ids })
    }

    /// Number of precomputed pairs.
    pub fn precomputed_len(&self) -> usize {
        self.resolved.len()
    }
}

/// `GetFunction20150331v2` → `GetFunction`; `None` when there is no `\d{8}(v\d+)?` suffix or nothing before it.
pub fn strip_version_suffix(name: &str) -> Option<&str> {
    let b = name.as_bytes();
    let mut end = b.len();
    // Optional `v\d+`.
    let digits_tail = b.iter().rev().take_while(|c| c.is_ascii_digit()).count();
    if digits_tail > 0
        && digits_tail < end
        && let Some(&c) = b.get(end - digits_tail - 1)
        && (c == b'v' || c == b'V')
    {
        let before = end - digits_tail - 1;
        let date_digits = b.get(..before).map_or(0, |p| p.iter().rev().take_while(|c| c.is_ascii_digit()).count());
        if date_digits == 8 {
            end = before;
        }
    }
    let date_digits = b.get(..end).map_or(0, |p| p.iter().rev().take_while(|c| c.is_ascii_digit()).count());
    if date_digits != 8 || end == 8 {
        return None;
    }
    name.get(..end - 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> ActionMap {
        ActionMap::aws().unwrap()
    }

    #[test]
    fn suffix_stripping() {
        assert_eq!(strip_version_suffix("GetFunction20150331v2"), Some("GetFunction"));
        assert_eq!(strip_version_suffix("CreateFunction20150331"), Some("CreateFunction"));
        assert_eq!(strip_version_suffix("ListTags20170331"), Some("ListTags"));
        assert_eq!(strip_version_suffix("GetObject"), None);
        assert_eq!(strip_version_suffix("Get2015033"), None);
        assert_eq!(strip_version_suffix("20150331"), None);
        assert_eq!(strip_version_suffix("Foo120150331"), None);
        assert_eq!(strip_version_suffix("v2"), None);
        assert_eq!(strip_version_suffix(""), None);
    }

    #[test]
    fn every_exception_action_is_in_the_catalog() {
        let catalog = Catalog::aws().unwrap();
        let entries = exception_entries().unwrap();
        assert!(entries.len() > 50);
        let mut missing = Vec::new();
        for e in &entries {
            assert!(!e.reason.trim().is_empty(), "{e:?} has no reason");
            for a in &e.actions {
                match catalog.lookup(a) {
                    Some(id) => assert_eq!(catalog.name(id), a, "spell {a} as the catalog does"),
                    None => missing.push(a.clone()),
                }
            }
        }
        assert!(missing.is_empty(), "not in the catalog: {missing:?}");
    }

    #[test]
    fn exception_table() {
        let m = map();
        let check = |src: &str, name: &str, mapping: ActionMapping, actions: &[&str]| {
            let r = m.map_event(src, name);
            assert_eq!(r.mapping, mapping, "{src} {name}: {r:?}");
            assert_eq!(r.actions, actions, "{src} {name}");
        };
        use ActionMapping::*;
        check("lambda.amazonaws.com", "GetFunction20150331v2", Exception, &["lambda:GetFunction"]);
        check("lambda.amazonaws.com", "GetAlias20150331", Exception, &["lambda:GetAlias"]);
        check("lambda.amazonaws.com", "DeleteAlias20150331v9", Exception, &["lambda:DeleteAlias"]);
        check("s3.amazonaws.com", "ListBuckets", Exception, &["s3:ListAllMyBuckets"]);
        check("s3.amazonaws.com", "HeadObject", Exception, &["s3:GetObject"]);
        check("S3.AMAZONAWS.COM", "headobject", Exception, &["s3:GetObject"]);
        check("s3.amazonaws.com", "GetBucketCors", Exception, &["s3:GetBucketCORS"]);
        check("s3.amazonaws.com", "GetObject", Direct, &["s3:GetObject"]);
        check("iam.amazonaws.com", "CreateUser", Direct, &["iam:CreateUser"]);
        check("monitoring.amazonaws.com", "PutMetricData", Direct, &["cloudwatch:PutMetricData"]);
        check("signin.amazonaws.com", "ConsoleLogin", NoPermission, &[]);
        check("sts.amazonaws.com", "GetCallerIdentity", NoPermission, &[]);
        // Seen unmapped in real and generated trails (issue 13).
        check("s3.amazonaws.com", "GetBucketAccelerate", Exception, &["s3:GetAccelerateConfiguration"]);
        check("s3.amazonaws.com", "GetStorageLensDashboardDataInternal", Exception, &["s3:GetStorageLensDashboard"]);
        check("signin.amazonaws.com", "GetSigninToken", NoPermission, &[]);
        check("signin.amazonaws.com", "ExternalIdPDirectoryLogin", NoPermission, &[]);
        check("billingconsole.amazonaws.com", "GetAlternateContact", Exception, &["account:GetAlternateContact"]);
        check("billingconsole.amazonaws.com", "GetContactInformation", Exception, &["account:GetContactInformation"]);
        check("sso.amazonaws.com", "CreateToken", NoPermission, &[]);
        check(
            "secretsmanager.amazonaws.com",
            "BatchGetSecretValue",
            Exception,
            &["secretsmanager:BatchGetSecretValue", "secretsmanager:GetSecretValue"],
        );
        let free: Vec<&str> = m.catalog().permissionless().iter().map(|id| m.catalog().name(id)).collect();
        for action in ["sts:GetCallerIdentity", "sts:GetSessionToken", "dynamodb:DescribeEndpoints"] {
            assert!(free.contains(&action), "{action} needs no permission: {free:?}");
        }
        assert!(!free.contains(&"sts:AssumeRole") && !free.contains(&"s3:GetObject"));
        check("s3.amazonaws.com", "NoSuchCall", Unmapped, &[]);
        check("nosuchservice.amazonaws.com", "DoThing", Unmapped, &[]);
        check("", "", Unmapped, &[]);
        // Fallback prefix: first label of an eventSource missing from the map.
        assert_eq!(m.prefix_of("foo.amazonaws.com"), "foo");
        let copy = m.map_event("s3.amazonaws.com", "CopyObject");
        assert_eq!(copy.mapping, Exception);
        assert!(copy.actions.len() >= 2 && copy.actions.contains(&"s3:GetObject".to_string()));
        assert!(copy.actions.contains(&"s3:PutObject".to_string()));
        // From iamlive's multi-action data.
        let cf = m.map_event("lambda.amazonaws.com", "CreateFunction");
        assert_eq!(cf.actions, ["iam:PassRole", "lambda:CreateFunction"]);
        assert_eq!(cf.mapping, Exception);
        assert_eq!(cf.ids.len(), 2);
    }

    #[test]
    fn long_and_odd_keys_do_not_panic() {
        let m = map();
        let long = "x".repeat(500);
        assert_eq!(m.map_event(&long, &long).mapping, ActionMapping::Unmapped);
        assert_eq!(m.map_event("s3.amazonaws.com", "GetÖbject").mapping, ActionMapping::Unmapped);
        assert!(m.precomputed_len() > 10_000);
    }
}
